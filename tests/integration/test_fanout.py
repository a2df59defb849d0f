"""Fan-out routes (gateway/fanout/fanout.c, docs/fanout.md): one client request,
several upstream calls at once, one answer -- as a client and the
upstreams see it.

Covered: the calls run concurrently; the four modes (all, partial, first,
stream) and the shape of their answers; cancelling the other calls (all,
first, the fan-out timeout, a client that leaves), seen by testup as
aborted responses; path templates and their percent-encoding; which
client headers reach the calls; the upstream policies a call goes
through (retries, a server marked down, an open breaker, the concurrency
limit); the client's body, sent to the calls made with the client's
method; how failures are answered and logged; and no fd leak in the
worker after all that.

Besides testup: ScriptedServer (copied from test_resilience.py, cut
down) answers a text/plain body of the test's choosing, and the
harness's RawUpstream sends a chunked answer with a trailer.
"""

import hashlib
import hmac
import json
import os
import socket
import threading
import time

from harness import (AGATE_TEST, AgateTest, RawUpstream, fd_targets,
                     free_port, main, pattern_bytes, wait_until)


# -- helpers ----------------------------------------------------------------

class ScriptedServer:
    """A threaded HTTP/1.1 upstream whose answers a test scripts.

    answer(i, req) -> (status, body bytes, {extra headers}); req is a dict
    with t (monotonic time the head arrived), method, target, headers
    (lower-case names).  Request bodies are not expected.
    """

    def __init__(self, answer):
        self.answer = answer
        self.lock = threading.Lock()
        self.requests = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,),
                             daemon=True).start()

    def _conn(self, c):
        try:
            c.settimeout(10)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    headers[k.strip().lower()] = v.strip()
                req = {"t": time.monotonic(), "method": method,
                       "target": target, "headers": headers}
                with self.lock:
                    i = len(self.requests)
                    self.requests.append(req)
                status, payload, extra = self.answer(i, req)
                out = "HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (
                    status, len(payload))
                out += "".join("%s: %s\r\n" % kv for kv in extra.items())
                c.sendall(out.encode() + b"\r\n" + payload)
        except (OSError, ValueError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def count(self):
        with self.lock:
            return len(self.requests)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def dead_url():
    """A loopback port with nothing listening: connections are refused."""
    return "http://127.0.0.1:%d" % free_port()


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


def headers_of(echo):
    """testup's echo=1 headers as {lower-case name: [values]}."""
    out = {}
    for k, v in echo["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class StreamReader:
    """Reads a chunked response off a raw socket as it arrives and
    timestamps each complete NDJSON line (seconds since the request)."""

    def __init__(self, port, target, headers=b"", timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port),
                                          timeout=timeout)
        self.t0 = time.monotonic()
        self.s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\n"
                       b"Host: x\r\n" + headers + b"\r\n")
        self.buf = b""
        self.head = None
        self.status = None
        self.lines = []             # (seconds, parsed json)
        self.ended = False

    def _recv(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed before the end of the body")
        self.buf += d

    def read_all(self):
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        self.status = int(self.head.split(" ", 2)[1])
        pending = b""
        while True:
            while b"\r\n" not in self.buf:
                self._recv()
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            while len(self.buf) < n + 2:
                self._recv()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            if n == 0:
                self.ended = True
                break
            pending += data
            now = time.monotonic() - self.t0
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                self.lines.append((now, json.loads(line)))
        self.trailing = pending
        return self

    def header(self, name):
        for l in self.head.split("\r\n")[1:]:
            k, _, v = l.partition(":")
            if k.strip().lower() == name.lower():
                return v.strip()
        return None

    def close(self):
        self.s.close()


def route(path, mode, calls, timeout="3s", **extra):
    fo = {"mode": mode, "timeout": timeout, "calls": calls}
    fo.update(extra)
    return {"path": path, "fanout": fo}


def call(upstream, path, method=None):
    c = {"upstream": upstream, "path": path}
    if method:
        c["method"] = method
    return c


class FanoutTest(AgateTest):

    def assert_agate_error(self, r, status, *contains):
        """An answer agate made itself (JSON error body)."""
        self.assertEqual(r.status, status, r.body)
        self.assertEqual(r.header("Content-Type"), "application/json")
        body = r.json()
        self.assertEqual(body["status"], status)
        self.assertNotIn("server", body)        # not an upstream's answer
        self.assertEqual(body["request_id"], r.header("X-Request-Id"))
        for c in contains:
            self.assertIn(c, body["error"])
        return body

    def make_ups(self, *names):
        return [self.upstream(n) for n in names]

    def ups_cfg(self, *ups, **extra):
        """One upstream (named like its testup) per server."""
        out = {}
        for u in ups:
            d = {"servers": [u.url]}
            d.update(extra)
            out[u.name] = d
        return out

    def stat(self, up, key):
        return up.stats()[key]

    def wait_aborted(self, up, n=1, timeout=1.5, what=None):
        return wait_until(lambda: self.stat(up, "aborted") >= n, timeout,
                          what=what or "testup %s to see %d abort(s)"
                          % (up.name, n))

    def log_lines(self, gw, *needles):
        return [l for l in gw.error_log().splitlines()
                if all(n in l for n in needles)]


# -- 1. concurrency ---------------------------------------------------------

class ConcurrencyTest(FanoutTest):

    def test_three_slow_calls_cost_the_slowest_not_their_sum(self):
        ups = self.make_ups("a", "b", "c")
        gw = self.agate(
            upstreams=self.ups_cfg(*ups),
            routes=[route("/d/{user}", "all", {
                u.name: call(u.name, "/users/{user}?delay=300")
                for u in ups})],
            workers=1)
        for i in range(2):
            r, t = timed(gw.get, "/d/7")
            self.assertEqual(r.status, 200, r.body)
            self.assertLess(t, 0.7, "calls of 300 ms each took %.3f s: "
                            "not run at once" % t)
            self.assertGreaterEqual(t, 0.29)
            self.assertEqual(r.header("Content-Type"), "application/json")
            body = r.json()
            self.assertEqual(list(body), ["a", "b", "c"])   # config order
            for u in ups:
                self.assertEqual(body[u.name], {
                    "server": u.name, "method": "GET", "path": "/users/7",
                    "query": "delay=300"})
        for u in ups:
            self.assertEqual(self.stat(u, "requests"), 2)


# -- 2. modes ---------------------------------------------------------------

class AllModeTest(FanoutTest):

    def gw(self, ups, calls, timeout="3s", **upextra):
        return self.agate(upstreams=self.ups_cfg(*ups, **upextra),
                          routes=[route("/all/{id}", "all", calls,
                                        timeout=timeout)],
                          workers=1)

    def test_failed_call_is_502_naming_it_and_cancels_the_slow_sibling(self):
        slow, bad = self.make_ups("slow", "bad")
        gw = self.gw([slow, bad], {
            "sib": call("slow", "/s/{id}?delay=2000"),
            "broken": call("bad", "/b/{id}?status=500")})
        r, t = timed(gw.get, "/all/1")
        body = self.assert_agate_error(r, 502, "broken",
                                       "upstream answered 500")
        self.assertNotIn("sib", body["error"])
        self.assertLess(t, 1.0, "the 502 waited for the slow sibling")
        # The sibling's connection was closed under it, long before its
        # 2 s answer.
        self.wait_aborted(slow, timeout=1.0)
        self.assertEqual(self.stat(bad, "aborted"), 0)
        self.assertEqual(self.stat(slow, "requests"), 1)

    def test_dead_upstream_is_502_naming_the_call(self):
        slow, = self.make_ups("slow")
        gw = self.agate(
            upstreams={"slow": {"servers": [slow.url]},
                       "gone": {"servers": [dead_url()]}},
            routes=[route("/all/{id}", "all", {
                "fine": call("slow", "/s?delay=2000"),
                "nobody": call("gone", "/n/{id}")})],
            workers=1)
        r, t = timed(gw.get, "/all/1")
        self.assert_agate_error(r, 502, "fan-out call nobody failed",
                                "connection failed")
        self.assertLess(t, 1.0)
        self.wait_aborted(slow, timeout=1.0)

    def test_a_call_failing_at_once_answers_at_once(self):
        # The first call's upstream has its breaker open: it fails before
        # any transfer starts, inside the loop that starts the calls.  The
        # answer is made right there; the calls after it are never made.
        # (Under ASan this is also where a freed fan-out was read.)
        brk, later = self.make_ups("brk", "later")
        gw = self.agate(
            upstreams={"brk": {"servers": [brk.url],
                               "circuit_breaker": {"failures": 2,
                                                   "open_for": "30s"}},
                       "later": {"servers": [later.url]}},
            routes=[route("/all", "all", {
                        "cut": call("brk", "/c"),
                        "next": call("later", "/n?delay=2000")}),
                    route("/one", "all", {"cut": call("brk", "/c")}),
                    {"path": "/direct/", "upstream": "brk"}],
            workers=1)
        for _ in range(2):
            self.assertEqual(gw.get("/direct/x?status=503").status, 503)
        wait_until(lambda: self.log_lines(gw, "circuit opened"),
                   what="the breaker to open")
        for path in ("/all", "/one", "/all", "/one"):
            r, t = timed(gw.raw, b"GET %s HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n" % path.encode())
            head, _, body = r.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 502 "), r)
            self.assertIn("fan-out call cut failed",
                          json.loads(body)["error"])
            self.assertLess(t, 1.0)
        self.assertEqual(self.stat(later, "requests"), 0)
        self.assertEqual(self.stat(brk, "requests"), 2)
        self.assertEqual(gw.get("/healthz").status, 200)

    def test_fanout_timeout_is_504_naming_the_call(self):
        fast, slow = self.make_ups("fast", "slow")
        gw = self.gw([fast, slow], {
            "quick": call("fast", "/q"),
            "late": call("slow", "/l?delay=3000")}, timeout="500ms")
        r, t = timed(gw.get, "/all/1")
        self.assert_agate_error(r, 504, "late", "timed out")
        self.assertGreaterEqual(t, 0.45)
        self.assertLess(t, 1.2)
        self.wait_aborted(slow, timeout=1.0)


class PartialModeTest(FanoutTest):

    def test_each_call_has_its_result_and_the_answer_comes_at_the_timeout(
            self):
        ok, bad, slow = self.make_ups("ok", "bad", "slow")
        text = ScriptedServer(lambda i, req: (
            200, b"plain text, not JSON", {"Content-Type": "text/plain"}))
        self.addCleanup(text.close)
        gw = self.agate(
            upstreams={"ok": {"servers": [ok.url]},
                       "bad": {"servers": [bad.url]},
                       "slow": {"servers": [slow.url]},
                       "text": {"servers": [text.url]},
                       "gone": {"servers": [dead_url()]}},
            routes=[route("/p/{id}", "partial", {
                "json": call("ok", "/j/{id}"),
                "text": call("text", "/t/{id}"),
                "empty": call("ok", "/e?size=0"),
                "bad": call("bad", "/b?status=404"),
                "dead": call("gone", "/d"),
                "slow": call("slow", "/s?delay=3000")},
                timeout="800ms")],
            workers=1)
        r, t = timed(gw.get, "/p/42")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertGreaterEqual(t, 0.75, "answered before the timeout")
        self.assertLess(t, 1.5, "answered well after the 800ms timeout")
        self.assertEqual(r.header("X-Fanout-Failed"), "3")
        body = r.json()
        self.assertEqual(list(body), ["json", "text", "empty", "bad", "dead",
                                      "slow"])
        self.assertEqual(body["json"], {"server": "ok", "method": "GET",
                                        "path": "/j/42", "query": ""})
        self.assertEqual(body["text"], "plain text, not JSON")
        self.assertIsNone(body["empty"])
        self.assertEqual(body["bad"]["status"], 404)
        self.assertIn("404", body["bad"]["error"])
        self.assertEqual(body["bad"]["body"]["server"], "bad")
        self.assertEqual(body["dead"]["status"], 502)
        self.assertTrue(body["dead"]["error"])
        self.assertNotIn("body", body["dead"])
        self.assertEqual(body["slow"]["status"], 504)
        self.assertIn("timed out", body["slow"]["error"])
        self.assertNotIn("body", body["slow"])
        self.assertEqual(text.requests[0]["target"], "/t/42")
        # The timed-out call's connection was closed at the timeout.
        self.wait_aborted(slow, timeout=1.0)

    def test_chunked_answer_with_a_trailer_is_a_normal_answer(self):
        # Trailers are legal HTTP/1.1 (RFC 9112 7.1.2); the body is whole.
        raw = RawUpstream(b"HTTP/1.1 200 OK\r\n"
                          b"Content-Type: application/json\r\n"
                          b"Transfer-Encoding: chunked\r\n"
                          b"Trailer: X-Checksum\r\n\r\n"
                          b"7\r\n{\"a\":1}\r\n0\r\n"
                          b"X-Checksum: abc\r\n\r\n")
        self.addCleanup(raw.close)
        gw = self.agate(upstreams={"r": {"servers": [raw.url]}},
                        routes=[route("/p", "partial", {
                            "t": call("r", "/t")})],
                        workers=1)
        r = gw.get("/p")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"t": {"a": 1}})
        self.assertEqual(r.header("X-Fanout-Failed"), "0")

    def test_all_succeeding_is_x_fanout_failed_0(self):
        a, b = self.make_ups("a", "b")
        gw = self.agate(upstreams=self.ups_cfg(a, b),
                        routes=[route("/p", "partial", {
                            "x": call("a", "/x?delay=100"),
                            "y": call("b", "/y")})],
                        workers=1)
        r, t = timed(gw.get, "/p")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("X-Fanout-Failed"), "0")
        self.assertEqual(r.json()["x"]["server"], "a")
        self.assertEqual(r.json()["y"]["server"], "b")
        self.assertLess(t, 1.0, "waited for the fan-out timeout (3 s) "
                        "although every call had answered")


    def test_big_answers_are_merged_in_the_offload_pool(self):
        big = {"items": [{"id": i, "name": "item %d" % i}
                         for i in range(3000)]}
        text = json.dumps(big).encode()
        srv = ScriptedServer(lambda i, req: (
            (200, b'{"small":true}', {}) if "/small" in req["target"] else
            (200, text, {}) if "/j" in req["target"] else
            (503, b"x" * 20000, {})))
        self.addCleanup(srv.close)
        gw = self.agate(upstreams={"s": {"servers": [srv.url]}},
                        routes=[route("/small", "partial", {
                                    "a": call("s", "/small"),
                                    "b": call("s", "/small")}),
                                route("/m", "partial", {
                                    "j": call("s", "/j"),
                                    "e": call("s", "/e")})],
                        workers=1, binary=AGATE_TEST)
        r = gw.get("/small")
        self.assertEqual(r.json(), {"a": {"small": True},
                                    "b": {"small": True}})
        st = gw.get("/_agate_test/helpers").json()["stats"]
        self.assertEqual(st["submitted"], 0)      # merged on the loop
        r = gw.get("/m")
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.header("X-Fanout-Failed"), "1")
        self.assertEqual(r.json(), {
            "j": big,
            "e": {"error": "upstream answered 503", "status": 503,
                  "body": "x" * 20000}})
        st = gw.get("/_agate_test/helpers").json()["stats"]
        self.assertEqual((st["submitted"], st["ok"]), (1, 1))


class FirstModeTest(FanoutTest):

    def test_first_2xx_wins_with_its_status_headers_and_body(self):
        win, slow, fail = self.make_ups("win", "slow", "fail")
        gw = self.agate(
            upstreams=self.ups_cfg(win, slow, fail),
            routes=[route("/f/{id}", "first", {
                "laggard": call("slow", "/l/{id}?delay=2000"),
                "failing": call("fail", "/x/{id}?status=500"),
                "winner": call("win",
                               "/w/{id}?delay=150&status=201"
                               "&header=X-Extra:from-winner")})],
            workers=1)
        r, t = timed(gw.get, "/f/9")
        self.assertEqual(r.status, 201, r.body)
        self.assertLess(t, 1.0)
        self.assertEqual(r.header("X-Fanout-Call"), "winner")
        self.assertEqual(r.header("X-Upstream"), "win")
        self.assertEqual(r.header("X-Extra"), "from-winner")
        self.assertEqual(r.json(), {"server": "win", "method": "GET",
                                    "path": "/w/9",
                                    "query": "delay=150&status=201"
                                             "&header=X-Extra:from-winner"})
        self.assertEqual(r.header("Content-Length"), str(len(r.body)))
        # The slower call was cancelled; the failed one had finished.
        self.wait_aborted(slow, timeout=1.0)
        self.assertEqual(self.stat(fail, "aborted"), 0)
        self.assertEqual(self.stat(fail, "requests"), 1)

    def test_a_chunked_winner_is_reframed_with_its_length(self):
        a, = self.make_ups("a")
        gw = self.agate(upstreams=self.ups_cfg(a),
                        routes=[route("/f", "first", {
                            "c": call("a", "/c?size=5000&chunked=1")})],
                        workers=1)
        r = gw.get("/f")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.body, pattern_bytes(5000))
        self.assertEqual(r.header("Content-Length"), "5000")
        self.assertIsNone(r.header("Transfer-Encoding"))
        self.assertEqual(r.header("Content-Type"), "text/plain")
        self.assertEqual(r.header("X-Fanout-Call"), "c")

    def test_no_call_succeeding_is_502_naming_each(self):
        a, = self.make_ups("a")
        gw = self.agate(
            upstreams={"a": {"servers": [a.url]},
                       "gone": {"servers": [dead_url()]}},
            routes=[route("/f", "first", {
                "five": call("a", "/x?status=500&delay=100"),
                "nobody": call("gone", "/y")})],
            workers=1)
        r = gw.get("/f")
        body = self.assert_agate_error(r, 502, "five", "nobody")
        self.assertNotIn("X-Fanout-Call", [k for k, _ in r.headers])
        self.assertNotIn("server", body)


class StreamModeTest(FanoutTest):

    def test_lines_come_in_completion_order_as_calls_finish(self):
        a, b, c = self.make_ups("a", "b", "c")
        gw = self.agate(
            upstreams=self.ups_cfg(a, b, c),
            routes=[route("/s/{id}", "stream", {
                "slowest": call("c", "/c/{id}?delay=700"),
                "fastest": call("a", "/a/{id}?delay=50"),
                "middle": call("b", "/b/{id}?delay=300")})],
            workers=1)
        sr = StreamReader(gw.port, "/s/5")
        try:
            sr.read_all()
        finally:
            sr.close()
        self.assertEqual(sr.status, 200)
        self.assertEqual(sr.header("Content-Type"), "application/x-ndjson")
        self.assertEqual(sr.header("Transfer-Encoding"), "chunked")
        self.assertTrue(sr.ended)
        self.assertEqual(sr.trailing, b"")
        self.assertEqual([l["call"] for _, l in sr.lines],
                         ["fastest", "middle", "slowest"])
        times = [t for t, _ in sr.lines]
        self.assertLess(times[0], 0.6, "the first line waited for the "
                        "slowest call: %r" % times)
        self.assertLess(times[1], 0.65, times)
        self.assertGreaterEqual(times[2], 0.65, times)
        self.assertLess(times[2], 1.5, times)
        for (_, l), up, p in zip(sr.lines, (a, b, c), ("a", "b", "c")):
            self.assertEqual(l["status"], 200)
            self.assertEqual(l["body"]["server"], up.name)
            self.assertEqual(l["body"]["path"], "/%s/5" % p)
            self.assertNotIn("error", l)

    def test_client_leaving_after_the_first_line_cancels_the_rest(self):
        a, b = self.make_ups("a", "b")
        gw = self.agate(
            upstreams=self.ups_cfg(a, b),
            routes=[route("/s", "stream", {
                "quick": call("a", "/q?delay=50"),
                "slow": call("b", "/s?delay=2000")}, timeout="5s")],
            workers=1)
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=3)
        s.sendall(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b'"call":"quick"' not in got:
            d = s.recv(65536)
            self.assertTrue(d, got)
            got += d
        s.close()
        self.wait_aborted(b, timeout=1.0)
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertEqual(self.stat(a, "aborted"), 0)
        self.assertEqual(gw.get("/healthz").status, 200)

    def test_failed_calls_have_their_own_lines(self):
        a, = self.make_ups("a")
        gw = self.agate(
            upstreams={"a": {"servers": [a.url]},
                       "gone": {"servers": [dead_url()]}},
            routes=[route("/s", "stream", {
                "late": call("a", "/l?delay=3000"),
                "bad": call("a", "/b?status=418&delay=100"),
                "nobody": call("gone", "/n")}, timeout="600ms")],
            workers=1)
        sr = StreamReader(gw.port, "/s")
        try:
            sr.read_all()
        finally:
            sr.close()
        self.assertEqual(sr.status, 200)
        lines = {l["call"]: l for _, l in sr.lines}
        self.assertEqual([l["call"] for _, l in sr.lines],
                         ["nobody", "bad", "late"])
        self.assertEqual(lines["nobody"]["status"], 502)
        self.assertTrue(lines["nobody"]["error"])
        self.assertNotIn("body", lines["nobody"])
        self.assertEqual(lines["bad"]["status"], 418)
        self.assertEqual(lines["bad"]["body"]["server"], "a")
        self.assertEqual(lines["late"]["status"], 504)
        self.assertIn("timed out", lines["late"]["error"])
        t_late = sr.lines[-1][0]
        self.assertGreaterEqual(t_late, 0.55)
        self.assertLess(t_late, 1.3)


# -- 3. templates -----------------------------------------------------------

class TemplateTest(FanoutTest):

    def gw(self, up):
        return self.agate(
            upstreams=self.ups_cfg(up),
            routes=[route("/t/{user}", "all", {
                "c": call(up.name, "/u/{user}/x?q={query.q}"
                          "&h={header.X-Tenant}&z=1")})],
            workers=1)

    def test_values_are_percent_encoded_and_keep_the_url_shape(self):
        up, = self.make_ups("u")
        gw = self.gw(up)
        cases = [
            # (client path param, q as sent, X-Tenant bytes,
            #  expected path param, expected q, expected h)
            ("plain", "v", b"t1", "plain", "v", "t1"),
            # (agate refuses %2F in a client path: a '/' can only come
            # from the query or a header.)
            ("a%20b%3Fd%26e%3Df%23g", "x%26y%3Dz+w%2Fv%3Fu",
             b"t/1?&k=v#f",
             "a%20b%3Fd%26e%3Df%23g", "x%26y%3Dz%20w%2Fv%3Fu",
             "t%2F1%3F%26k%3Dv%23f"),
            # UTF-8: e-acute, and a plus sign in the path (not a space)
            ("%C3%A9t%C3%A9+1", "caf%C3%A9", "h\u00e9".encode("utf-8"),
             "%C3%A9t%C3%A9%2B1", "caf%C3%A9",
             "h%C3%A9"),
        ]
        for param, q, tenant, e_param, e_q, e_h in cases:
            with self.subTest(param=param):
                raw = gw.raw(b"GET /t/" + param.encode() + b"?q=" +
                             q.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                             b"X-Tenant: " + tenant + b"\r\n"
                             b"Connection: close\r\n\r\n")
                head, _, body = raw.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 200 "), raw)
                got = json.loads(body)["c"]
                self.assertEqual(got["path"], "/u/%s/x" % e_param)
                self.assertEqual(got["query"],
                                 "q=%s&h=%s&z=1" % (e_q, e_h))
                # The shape: three segments, three query parameters.
                self.assertEqual(got["path"].count("/"), 3)
                self.assertEqual(len(got["query"].split("&")), 3)

    def test_missing_values_are_400_naming_them_and_no_call_is_made(self):
        up, = self.make_ups("u")
        gw = self.gw(up)
        r = gw.get("/t/x", headers={"X-Tenant": "t"})
        self.assert_agate_error(r, 400, "{query.q}", "call c")
        r = gw.get("/t/x?q=1")
        self.assert_agate_error(r, 400, "{header.X-Tenant}")
        r = gw.get("/t/x?qq=1&q2=3", headers={"X-Tenant": "t"})
        self.assert_agate_error(r, 400, "{query.q}")
        st = up.stats()
        self.assertEqual(st["requests"], 0)
        self.assertEqual(st["accepted"], 1)     # this /_stats one
        # And with both there, it works.
        r = gw.get("/t/x?q=1", headers={"X-Tenant": "t"})
        self.assertEqual(r.status, 200, r.body)


# -- 4. headers -------------------------------------------------------------

class HeaderTest(FanoutTest):

    def gw(self):
        a, b = self.make_ups("a", "b")
        gw = self.agate(
            upstreams=self.ups_cfg(a, b),
            routes=[route("/h", "all", {
                "one": call("a", "/one?echo=1"),
                "two": call("b", "/two?echo=1")},
                forward_headers=["X-Tenant", "Accept-Language"])],
            workers=1)
        return gw

    def test_who_calls_headers_reach_every_call_others_do_not(self):
        gw = self.gw()
        r = gw.get("/h", headers={
            "Authorization": "Bearer tok-123", "Cookie": "sid=abc; x=1",
            "X-Tenant": "acme", "Accept-Language": "fr",
            "X-Secret": "do-not-forward", "X-Other": "nope",
            "X-Request-Id": "client-id-42"})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("X-Request-Id"), "client-id-42")
        body = r.json()
        for name in ("one", "two"):
            h = headers_of(body[name])
            self.assertEqual(h.get("authorization"), ["Bearer tok-123"],
                             name)
            self.assertEqual(h.get("cookie"), ["sid=abc; x=1"], name)
            self.assertEqual(h.get("x-tenant"), ["acme"], name)
            self.assertEqual(h.get("accept-language"), ["fr"], name)
            self.assertNotIn("x-secret", h, name)
            self.assertNotIn("x-other", h, name)
            self.assertEqual(h.get("x-request-id"), ["client-id-42"], name)
            self.assertEqual(h.get("x-forwarded-for"), ["127.0.0.1"], name)

    def test_listing_an_always_forwarded_header_sends_it_once(self):
        a, = self.make_ups("a")
        gw = self.agate(
            upstreams=self.ups_cfg(a),
            routes=[route("/h", "all", {"one": call("a", "/one?echo=1")},
                          forward_headers=["authorization", "Cookie",
                                           "X-Tenant"])],
            workers=1)
        r = gw.get("/h", headers={"Authorization": "Bearer t",
                                  "Cookie": "sid=1", "X-Tenant": "acme"})
        self.assertEqual(r.status, 200, r.body)
        h = headers_of(r.json()["one"])
        self.assertEqual(h.get("x-tenant"), ["acme"])
        self.assertEqual(h.get("authorization"), ["Bearer t"],
                         "Authorization sent more than once")
        self.assertEqual(h.get("cookie"), ["sid=1"],
                         "Cookie sent more than once")

    def test_generated_request_id_is_the_same_for_all_calls(self):
        gw = self.gw()
        ids = set()
        for _ in range(2):
            r = gw.get("/h")
            self.assertEqual(r.status, 200, r.body)
            rid = r.header("X-Request-Id")
            self.assertTrue(rid)
            body = r.json()
            for name in ("one", "two"):
                h = headers_of(body[name])
                self.assertEqual(h.get("x-request-id"), [rid], name)
                self.assertNotIn("authorization", h)
                self.assertNotIn("cookie", h)
            ids.add(rid)
        self.assertEqual(len(ids), 2, "two requests, one id")


# -- 5. the client leaves ---------------------------------------------------

class DisconnectTest(FanoutTest):

    def test_client_disconnect_cancels_every_call_in_every_mode(self):
        a, b = self.make_ups("a", "b")
        calls = {"x": call("a", "/x?delay=2000"),
                 "y": call("b", "/y?delay=2000")}
        gw = self.agate(upstreams=self.ups_cfg(a, b),
                        routes=[route("/%s" % m, m, calls, timeout="5s")
                                for m in ("all", "partial", "first",
                                          "stream")],
                        workers=1)
        for n, mode in enumerate(("all", "partial", "first", "stream"), 1):
            with self.subTest(mode=mode):
                t0 = time.monotonic()
                s = socket.create_connection(("127.0.0.1", gw.port))
                s.sendall(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"
                          % mode.encode())
                wait_until(lambda: self.stat(a, "requests") >= n and
                           self.stat(b, "requests") >= n, timeout=1.0,
                           what="both calls upstream")
                time.sleep(max(0, t0 + 0.2 - time.monotonic()))
                s.close()
                for up in (a, b):
                    self.wait_aborted(up, n, timeout=1.0)
                self.assertLess(time.monotonic() - t0, 1.5)
                wait_until(lambda: a.stats()["open"] == 1 and
                           b.stats()["open"] == 1, timeout=1.0,
                           what="agate's connections to close")
        self.assertEqual(gw.get("/healthz").status, 200)


# -- 6. upstream policies ---------------------------------------------------

class PolicyTest(FanoutTest):

    def test_a_call_is_retried_on_the_other_server(self):
        up, = self.make_ups("u")
        gw = self.agate(
            upstreams={"r": {"servers": [dead_url(), up.url],
                             "retry": {"attempts": 2, "backoff": "10ms"}}},
            routes=[route("/p", "partial", {"c": call("r", "/c")})],
            workers=1)
        for i in range(6):
            r = gw.get("/p")
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.header("X-Fanout-Failed"), "0", r.body)
            self.assertEqual(r.json()["c"]["server"], "u")
        self.assertEqual(self.stat(up, "requests"), 6)
        # Round robin sent some first tries to the dead server.
        self.assertTrue(self.log_lines(gw, "retry: upstream r",
                                       "fan-out call c"), gw.error_log())

    def test_without_retry_the_dead_server_fails_the_call(self):
        # The counterpart of the test above: the retry is what saved it.
        up, = self.make_ups("u")
        gw = self.agate(
            upstreams={"r": {"servers": [dead_url(), up.url]}},
            routes=[route("/p", "partial", {"c": call("r", "/c")})],
            workers=1)
        failed = [gw.get("/p").header("X-Fanout-Failed") for _ in range(4)]
        self.assertIn("1", failed)

    def test_open_breaker_is_503_in_the_partial_result(self):
        up, ok = self.make_ups("u", "ok")
        gw = self.agate(
            upstreams={"b": {"servers": [up.url],
                             "circuit_breaker": {"failures": 2,
                                                 "open_for": "30s"}},
                       "ok": {"servers": [ok.url]}},
            routes=[route("/p", "partial", {"brk": call("b", "/c"),
                                            "fine": call("ok", "/f")}),
                    {"path": "/direct/", "upstream": "b"}],
            workers=1)
        for _ in range(2):
            self.assertEqual(gw.get("/direct/x?status=503").status, 503)
        wait_until(lambda: self.log_lines(gw, "circuit opened"),
                   what="the breaker to open")
        r = gw.get("/p")
        self.assertEqual(r.status, 200, r.body)
        body = r.json()
        self.assertEqual(body["brk"]["status"], 503, body)
        self.assertTrue(body["brk"]["error"])
        self.assertNotIn("body", body["brk"])
        self.assertEqual(body["fine"]["server"], "ok")
        self.assertEqual(r.header("X-Fanout-Failed"), "1")
        self.assertEqual(self.stat(up, "requests"), 2)  # not called

    def test_server_marked_down_is_503_in_the_partial_result(self):
        ok, = self.make_ups("ok")
        dead = dead_url()
        gw = self.agate(
            upstreams={"d": {"servers": [dead],
                             "health_check": {"path": "/healthz",
                                              "interval": "200ms",
                                              "timeout": "200ms",
                                              "healthy": 2,
                                              "unhealthy": 2}},
                       "ok": {"servers": [ok.url]}},
            routes=[route("/p", "partial", {"down": call("d", "/c"),
                                            "fine": call("ok", "/f")})],
            workers=1)
        wait_until(lambda: self.log_lines(gw, "is down", dead), timeout=5,
                   what="the server marked down")
        r, t = timed(gw.get, "/p")
        self.assertEqual(r.status, 200, r.body)
        body = r.json()
        self.assertEqual(body["down"]["status"], 503, body)
        self.assertEqual(body["fine"]["server"], "ok")
        self.assertLess(t, 1.0)

    def test_a_call_shares_the_concurrency_limit_with_proxied_requests(
            self):
        up, = self.make_ups("u")
        gw = self.agate(
            upstreams={"u": {"servers": [up.url], "max_concurrent": 1,
                             "max_queue": 0}},
            routes=[route("/p", "partial", {"c": call("u", "/c")}),
                    {"path": "/direct/", "upstream": "u"}],
            workers=1)
        holder = threading.Thread(target=gw.get,
                                  args=("/direct/x?delay=1000",))
        holder.start()
        try:
            wait_until(lambda: self.stat(up, "requests") == 1,
                       what="the proxied request upstream")
            r = gw.get("/p")
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["c"]["status"], 503, r.body)
            self.assertEqual(self.stat(up, "requests"), 1)
        finally:
            holder.join(10)
        r = gw.get("/p")
        self.assertEqual(r.json()["c"]["server"], "u", r.body)


    def test_a_queued_call_waits_for_the_slot_or_its_timeout(self):
        up, = self.make_ups("u")
        gw = self.agate(
            upstreams={"u": {"servers": [up.url], "max_concurrent": 1,
                             "max_queue": 1}},
            routes=[route("/p", "partial", {"c": call("u", "/c")},
                          timeout="2s"),
                    route("/short", "partial", {"c": call("u", "/c")},
                          timeout="300ms"),
                    {"path": "/direct/", "upstream": "u"}],
            workers=1)

        def hold(ms):
            t = threading.Thread(target=gw.get,
                                 args=("/direct/x?delay=%d" % ms,))
            t.start()
            return t
        # Queued behind a proxied request: answered when the slot frees.
        holder = hold(600)
        wait_until(lambda: self.stat(up, "requests") == 1,
                   what="the proxied request upstream")
        r, t = timed(gw.get, "/p")
        holder.join(10)
        self.assertEqual(r.json()["c"]["server"], "u", r.body)
        self.assertGreaterEqual(t, 0.4)
        self.assertLess(t, 1.5)
        # Queued past the fan-out timeout: 504, and its queue place is
        # given back (the next one queues rather than gets 503).
        holder = hold(1200)
        wait_until(lambda: self.stat(up, "requests") == 3,
                   what="the second proxied request upstream")
        r, t = timed(gw.get, "/short")
        self.assertEqual(r.json()["c"]["status"], 504, r.body)
        self.assertLess(t, 0.9)
        r = gw.get("/p")
        holder.join(10)
        self.assertEqual(r.json()["c"]["server"], "u", r.body)
        # Two proxied requests and two calls: the timed-out one never went.
        self.assertEqual(self.stat(up, "requests"), 4)


# -- 7. no fd leaks ---------------------------------------------------------

class LeakTest(FanoutTest):

    def test_no_fd_leaks_after_fanout_faults(self):
        a, b = self.make_ups("a", "b")
        calls_slow = {"x": call("a", "/x?delay=1500"),
                      "y": call("b", "/y?delay=1500")}
        gw = self.agate(
            upstreams={"a": {"servers": [a.url], "keepalive": 2},
                       "b": {"servers": [b.url], "keepalive": 2},
                       "gone": {"servers": [dead_url()], "keepalive": 2}},
            routes=[
                route("/all-fail", "all", {
                    "x": call("a", "/x?delay=1500"),
                    "y": call("b", "/y?status=500")}),
                route("/all-dead", "all", {
                    "x": call("a", "/x?delay=1500"),
                    "y": call("gone", "/y")}),
                route("/partial-timeout", "partial", {
                    "x": call("a", "/x?delay=1500"),
                    "y": call("b", "/y?abort=reset"),
                    "z": call("b", "/z?garbage=1")}, timeout="200ms"),
                route("/first", "first", {
                    "x": call("a", "/x?delay=1500"),
                    "y": call("b", "/y?delay=20")}),
                route("/stream", "stream", {
                    "x": call("a", "/x?abort=mid&size=100000"),
                    "y": call("b", "/y?delay=20")}),
                route("/tpl/{id}", "all", {
                    "x": call("a", "/x/{id}?q={query.q}")}),
                route("/leave-all", "all", calls_slow),
                route("/leave-stream", "stream", calls_slow),
                route("/ok", "all", {"x": call("a", "/x"),
                                     "y": call("b", "/y")})],
            workers=1)
        worker = gw.workers()[0]
        for _ in range(3):
            self.assertEqual(gw.get("/ok").status, 200)
        base = fd_targets(worker)
        for _ in range(3):
            self.assertEqual(gw.get("/all-fail").status, 502)
            self.assertEqual(gw.get("/all-dead").status, 502)
            self.assertEqual(gw.get("/partial-timeout").status, 200)
            self.assertEqual(gw.get("/first").status, 200)
            self.assertEqual(gw.get("/stream").status, 200)
            self.assertEqual(gw.get("/tpl/1").status, 400)
            for p in (b"/leave-all", b"/leave-stream"):
                s = socket.create_connection(("127.0.0.1", gw.port))
                s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p)
                time.sleep(0.15)
                s.close()
        # Everything cancelled has been closed: nothing open upstream but
        # pooled connections (and our own /_stats one).
        wait_until(lambda: a.stats()["open"] <= 3 and
                   b.stats()["open"] <= 3, timeout=3,
                   what="agate's upstream connections to close")
        time.sleep(0.3)
        after = fd_targets(worker)
        socks = [t for t in after if t.startswith("socket:")]
        others = sorted(t for t in after if not t.startswith("socket:"))
        self.assertEqual(others, sorted(t for t in base
                                        if not t.startswith("socket:")))
        base_socks = [t for t in base if t.startswith("socket:")]
        # At most `keepalive` pooled connections per upstream more.
        self.assertLessEqual(len(socks), len(base_socks) + 4,
                             (base, after))
        self.assertEqual(gw.get("/ok").status, 200)
        self.assertEqual(gw.workers(), [worker])


# -- 8. how failures are reported (issue 19) --------------------------------

class FailureReportTest(FanoutTest):

    def test_a_refused_call_is_logged_with_its_reason_and_its_name(self):
        dead = dead_url()
        gw = self.agate(upstreams={"gone": {"servers": [dead]}},
                        routes=[route("/p", "partial", {
                            "c": call("gone", "/c")})],
                        workers=1)
        r = gw.get("/p")
        self.assertEqual(r.json()["c"]["status"], 502, r.body)
        lines = wait_until(lambda: self.log_lines(gw, 'fan-out: call "c"'),
                           what="the failure logged")
        self.assertEqual(len(lines), 1, lines)
        line = lines[0]
        self.assertIn('fan-out: call "c": upstream gone server %s: '
                      'upstream connection failed (' % dead, line)
        # The reason is the connection's, not the call's name.
        self.assertRegex(line.lower(), r"\((.*: )?(connection refused|"
                         r"couldn't connect to server)\)$")
        self.assertNotIn("(c)", line)

    def test_all_mode_says_when_the_fanout_timeout_cut_a_call(self):
        fast, slow = self.make_ups("fast", "slow")
        gw = self.agate(
            upstreams=self.ups_cfg(fast, slow),
            routes=[route("/all", "all", {
                        "quick": call("fast", "/q"),
                        "late": call("slow", "/l?delay=3000")},
                        timeout="500ms"),
                    route("/partial", "partial", {
                        "late": call("slow", "/l?delay=3000")},
                        timeout="500ms")],
            workers=1)
        for _ in range(3):
            r = gw.get("/all")
            body = self.assert_agate_error(r, 504)
            self.assertEqual(body["error"], "fan-out call late failed: "
                             "timed out (fan-out timeout)")
            r = gw.get("/partial")
            self.assertEqual(r.json()["late"], {
                "error": "timed out (fan-out timeout)", "status": 504})
        lines = self.log_lines(gw, 'fan-out: call "late"')
        self.assertEqual(len(lines), 6, lines)
        for line in lines:
            self.assertIn('fan-out: call "late": upstream slow server %s: '
                          'timed out (fan-out timeout)' % slow.url, line)
        self.assertFalse(self.log_lines(gw, "upstream timed out"))

    def test_the_upstream_timeout_is_not_the_fanout_timeout(self):
        slow, = self.make_ups("slow")
        gw = self.agate(
            upstreams={"slow": {"servers": [slow.url], "timeout": "300ms"}},
            routes=[route("/all", "all", {
                "late": call("slow", "/l?delay=3000")}, timeout="2s")],
            workers=1)
        r, t = timed(gw.get, "/all")
        body = self.assert_agate_error(r, 504)
        self.assertEqual(body["error"],
                         "fan-out call late failed: upstream timed out")
        self.assertLess(t, 1.5)
        lines = wait_until(lambda: self.log_lines(gw, 'fan-out: call "late"'),
                           what="the failure logged")
        self.assertIn("upstream slow server %s: upstream timed out"
                      % slow.url, lines[0])


# -- 9. request bodies (issue 19) -------------------------------------------

def sha256(b):
    return hashlib.sha256(b).hexdigest()


def chunked(body, piece=7000):
    """body in chunks of `piece` bytes, then the last chunk."""
    out = b""
    for i in range(0, len(body), piece):
        part = body[i:i + piece]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def split_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), body


class BodyTest(FanoutTest):
    """The client's body goes to every call made with the client's method
    (a call without `method:` is), buffered once within max_body_size."""

    def body_gw(self, calls, **server):
        ups = self.make_ups(*sorted({c["upstream"] for c in calls.values()}))
        gw = self.agate(upstreams=self.ups_cfg(*ups),
                        routes=[route("/o/{id}", "all", calls)],
                        workers=1, **server)
        return gw, {u.name: u for u in ups}

    def assert_saw_body(self, seen, method, body, ctype):
        """seen: testup's echo=1 JSON of what one call received."""
        h = headers_of(seen)
        self.assertEqual(seen["method"], method, seen)
        self.assertEqual(seen["body_len"], len(body), seen)
        self.assertEqual(seen["body_sha256"], sha256(body), seen)
        self.assertEqual(h.get("content-length"), [str(len(body))], h)
        self.assertEqual(h.get("content-type"), [ctype] if ctype else None,
                         h)
        self.assertNotIn("transfer-encoding", h)
        self.assertNotIn("expect", h)

    def assert_saw_no_body(self, seen, method):
        h = headers_of(seen)
        self.assertEqual(seen["method"], method, seen)
        self.assertEqual(seen["body_len"], 0, seen)
        self.assertNotIn("content-type", h)
        self.assertNotIn("content-encoding", h)
        self.assertIn(h.get("content-length"), (None, ["0"]), h)
        self.assertNotIn("transfer-encoding", h)

    def test_a_json_body_reaches_each_call_exactly(self):
        gw, ups = self.body_gw({
            "one": call("a", "/one/{id}?echo=body"),
            "two": call("b", "/two?echo=body", method="POST"),
            "look": call("g", "/look/{id}?echo=1", method="GET")})
        payload = json.dumps({"name": "Ann", "tags": ["x", "y"], "n": 7,
                              "note": "caf\u00e9 " * 50}).encode()
        r = gw.request("POST", "/o/3", body=payload,
                       headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r.body)
        body = r.json()
        # echo=body: the calls answered with exactly what they received.
        self.assertEqual(body["one"], json.loads(payload))
        self.assertEqual(body["two"], json.loads(payload))
        for name in ("a", "b"):
            self.assert_saw_body(ups[name].last(), "POST", payload,
                                 "application/json")
        # `method: GET` names another method: no body.
        self.assert_saw_no_body(body["look"], "GET")
        for u in ups.values():
            self.assertEqual(self.stat(u, "requests"), 1)

    def test_a_body_without_a_content_type_gets_none_added(self):
        # libcurl gives a POSTFIELDS body a form type of its own unless
        # told not to: the call must carry what the client sent, no more.
        gw, ups = self.body_gw({"one": call("a", "/one?echo=1")})
        payload = b"raw bytes, no type"
        r = gw.request("POST", "/o/4", body=payload)
        self.assertEqual(r.status, 200, r.body)
        self.assert_saw_body(r.json()["one"], "POST", payload, None)

    def test_a_post_call_without_a_body_says_content_length_0(self):
        # A call that names a method with a body while the client sent
        # none: strict servers answer 411 without a length.
        gw, ups = self.body_gw({"p": call("a", "/p?echo=1",
                                          method="POST")})
        r = gw.get("/o/5")
        self.assertEqual(r.status, 200, r.body)
        seen = r.json()["p"]
        h = headers_of(seen)
        self.assertEqual(seen["method"], "POST", seen)
        self.assertEqual(h.get("content-length"), ["0"], h)
        self.assertNotIn("content-type", h)
        self.assertNotIn("transfer-encoding", h)

    def test_a_chunked_client_body_is_sent_with_its_length(self):
        gw, ups = self.body_gw({"one": call("a", "/one?echo=1"),
                                "two": call("b", "/two?echo=1")})
        payload = pattern_bytes(40000)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        try:
            s.sendall(b"PATCH /o/1 HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: text/plain\r\n"
                      b"Content-Encoding: identity\r\n"
                      b"Transfer-Encoding: chunked\r\n"
                      b"Connection: close\r\n\r\n")
            wire = chunked(payload)
            s.sendall(wire[:10000])
            time.sleep(0.2)         # the rest arrives later
            s.sendall(wire[10000:])
            raw = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                raw += d
        finally:
            s.close()
        status, head, body = split_response(raw)
        self.assertEqual(status, 200, raw[:500])
        body = json.loads(body)
        for name in ("one", "two"):
            self.assert_saw_body(body[name], "PATCH", payload, "text/plain")
            # It says what the bytes are, as Content-Type does.
            self.assertEqual(headers_of(body[name]).get("content-encoding"),
                             ["identity"])

    def test_a_body_over_max_body_size_is_413_and_no_call_is_made(self):
        gw, ups = self.body_gw({"one": call("a", "/one?echo=1"),
                                "two": call("b", "/two?echo=1")},
                               max_body_size="1k")
        # Chunked: found out while reading it.
        raw = gw.raw(b"POST /o/1 HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" +
                     chunked(b"x" * 3000, piece=500))
        self.assertEqual(split_response(raw)[0], 413, raw[:400])
        # Content-Length: found out from the head.
        r = gw.request("POST", "/o/1", body=b"y" * 1025)
        self.assertEqual(r.status, 413, r.body)
        for u in ups.values():
            self.assertEqual(self.stat(u, "requests"), 0)
        # At the limit, it goes.
        r = gw.request("POST", "/o/1", body=b"z" * 1024)
        self.assertEqual(r.status, 200, r.body)
        for name in ("one", "two"):
            self.assertEqual(r.json()[name]["body_len"], 1024)

    def test_calls_use_the_client_method_unless_they_name_their_own(self):
        gw, ups = self.body_gw({
            "same": call("a", "/s?echo=1"),
            "put": call("b", "/p?echo=1", method="PUT"),
            "get": call("c", "/g?echo=1", method="GET"),
            "del": call("d", "/d?echo=1", method="DELETE")})
        payload = b'{"v":1}'
        r = gw.request("PUT", "/o/1", body=payload,
                       headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r.body)
        body = r.json()
        self.assert_saw_body(body["same"], "PUT", payload, "application/json")
        self.assert_saw_body(body["put"], "PUT", payload, "application/json")
        self.assert_saw_no_body(body["get"], "GET")
        self.assert_saw_no_body(body["del"], "DELETE")
        # HEAD: the calls without a method are GETs (the answer is the
        # GET answer without its body).
        r = gw.request("HEAD", "/o/1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"")
        self.assertEqual(ups["a"].last()["method"], "GET")

    def test_a_body_that_no_call_takes_is_refused(self):
        gw, ups = self.body_gw({"get": call("a", "/g?echo=1", method="GET"),
                                "del": call("b", "/d", method="DELETE")})
        r = gw.request("POST", "/o/1", body=b'{"lost":true}')
        self.assert_agate_error(r, 400, "request body", "POST")
        for u in ups.values():
            self.assertEqual(self.stat(u, "requests"), 0)
        # Without a body there is nothing to lose.
        r = gw.request("POST", "/o/1", body=b"")
        self.assertEqual(r.status, 200, r.body)
        self.assert_saw_no_body(r.json()["get"], "GET")

    def test_a_verified_body_is_the_body_the_calls_get(self):
        # verify_signature reads the body first (and keeps it): the calls
        # get it whole, big enough to be hashed in the offload pool.
        secret = b"s3cret"
        with open(os.path.join(self.dir, "hook.secret"), "wb") as f:
            f.write(secret + b"\n")
        a, b = self.make_ups("a", "b")
        r = route("/hook", "all", {"one": call("a", "/one?echo=1"),
                                   "two": call("b", "/two?echo=1")})
        r["verify_signature"] = {"secret_file": "hook.secret"}
        gw = self.agate(upstreams=self.ups_cfg(a, b), routes=[r], workers=1)
        payload = os.urandom(50000)
        sig = "sha256=" + hmac.new(secret, payload, hashlib.sha256).hexdigest()
        resp = gw.request("POST", "/hook", body=payload, headers={
            "X-Hub-Signature-256": sig,
            "Content-Type": "application/octet-stream"})
        self.assertEqual(resp.status, 200, resp.body[:300])
        for name in ("one", "two"):
            self.assert_saw_body(resp.json()[name], "POST", payload,
                                 "application/octet-stream")

    def test_a_body_slower_than_the_fanout_timeout_is_408(self):
        # The fan-out timeout counts from the start, reading included.
        up, = self.make_ups("a")
        gw = self.agate(upstreams=self.ups_cfg(up),
                        routes=[route("/o", "all", {"one": call("a", "/x")},
                                      timeout="400ms")],
                        workers=1)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            t0 = time.monotonic()
            s.sendall(b"POST /o HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 100\r\n\r\n" + b"x" * 10)
            raw = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                raw += d
            t = time.monotonic() - t0
        finally:
            s.close()
        status, head, body = split_response(raw)
        self.assertEqual(status, 408, raw)
        self.assertIn("Connection: close", head)
        self.assertIn("too slowly", json.loads(body)["error"])
        self.assertGreaterEqual(t, 0.35)
        self.assertLess(t, 1.5)
        self.assertEqual(self.stat(up, "requests"), 0)

    def test_after_a_body_the_connection_serves_the_next_request(self):
        gw, ups = self.body_gw({"one": call("a", "/one?echo=1")})
        nxt = b"GET /o/2 HTTP/1.1\r\nHost: x\r\n\r\n"
        raw = gw.raw(b"POST /o/1 HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 10\r\n\r\n" + b"x" * 10 + nxt,
                     timeout=1)         # kept open: read until quiet
        self.assertEqual(raw.count(b"HTTP/1.1 200 OK"), 2, raw[:600])
        self.assertNotIn(b"Connection: close", raw)
        self.assertIn(b'"method":"POST"', raw)
        self.assertIn(b'"body_len":10,', raw)
        self.assertEqual(self.stat(ups["a"], "requests"), 2)


if __name__ == "__main__":
    main()
