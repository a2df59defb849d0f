"""The shared HTTP cache (issue 17; CONFIG.md "Cache"): what a client sees
(X-Cache, Age, bodies, 304s, latency), what the upstream sees (how many
requests, with which fields), the access log's "cache" field, the
agate_cache_* metrics and DELETE /cache on the admin listener.

Covered: MISS then HIT; 50 cold requests over 2 workers coalesced into
one upstream request; freshness (s-maxage > max-age > Expires - Date >
the route's ttl); what is never stored (no-store, private, Set-Cookie,
Vary: *, too many Vary names, 500/302, bigger than max_entry,
Authorization unless the answer allows it); Vary variants; 304 from a
stored entry; HEAD; request no-cache / max-age=0 / Pragma / no-store,
Range, bodies and POST; stale-while-revalidate with one background
refresh; stale-if-error for a 503, a timeout and a stopped upstream;
LRU eviction; lock_timeout; a fill whose client left; a fill that failed;
purges; a reload keeping the entries; a worker killed in the middle of a
fill; keys over 2048 bytes; HTTP/2 clients; config errors; fds back after
faults.  Also some of RFC 9111 that a user of a shared cache relies on:
Age replaced, not repeated (section 4); unsafe methods invalidating
(section 4.4); hosts never sharing an answer; X-Request-Id on every
answer.

testup answers the same body for the same URL and has no state between
requests, so the upstream here is Origin: a small threaded HTTP/1.1
server whose answer to each request a test scripts (and which may block
in it), which numbers its answers and records every request it received.
"""

import email.utils
import gzip
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time

from harness import (AGATE, SLOW, AgateTest, Response, alive, fd_targets,
                     free_port, main, read_proc, wait_until)


# -- the upstream ------------------------------------------------------------

REASONS = {200: "OK", 203: "Non-Authoritative Information", 204: "No Content",
           206: "Partial Content", 302: "Found", 304: "Not Modified",
           404: "Not Found", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


class Cut:
    """A body cut short: `sent` bytes of a declared Content-Length
    `total`, then the connection closes."""

    def __init__(self, sent, total):
        self.sent = sent
        self.total = total


class Origin:
    """A threaded HTTP/1.1 upstream whose answers a test scripts.

    answer(req) -> (status, [(name, value)...], body bytes or Cut); it
    runs in the connection's own thread, so it may sleep or wait on an
    Event.  req: i (numbers every request from 0), k (numbers the
    requests for its target from 0), t (monotonic time its head came),
    method, target, path, headers (lower-case names; the first of each),
    body.  A "Transfer-Encoding: chunked" answer is sent chunked; else
    Content-Length is added.  HEAD gets the head only.  Connections are
    kept alive.
    """

    def __init__(self, answer=None):
        self.answer = answer or (lambda req: ok(req))
        self.lock = threading.Lock()
        self.requests = []
        self.done = []            # targets whose answer was sent whole
        self.conns = set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.stopped:
                    c.close()
                    return
                self.conns.add(c)
            threading.Thread(target=self._conn, args=(c,),
                             daemon=True).start()

    @staticmethod
    def _recv_until(c, buf, pred):
        while not pred(buf):
            d = c.recv(65536)
            if not d:
                raise EOFError
            buf += d
        return buf

    def _conn(self, c):
        buf = b""
        try:
            c.settimeout(30)
            while True:
                buf = self._recv_until(c, buf, lambda b: b"\r\n\r\n" in b)
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    headers.setdefault(k.strip().lower(), v.strip())
                n = int(headers.get("content-length", "0"))
                buf = self._recv_until(c, buf, lambda b: len(b) >= n)
                body, buf = buf[:n], buf[n:]
                with self.lock:
                    req = {"i": len(self.requests),
                           "k": sum(1 for r in self.requests
                                    if r["target"] == target),
                           "t": time.monotonic(), "method": method,
                           "target": target,
                           "path": target.split("?", 1)[0],
                           "headers": headers, "body": body}
                    self.requests.append(req)
                status, fields, payload = self.answer(req)
                self._send(c, method, status, list(fields), payload)
                with self.lock:
                    self.done.append(target)
                if isinstance(payload, Cut) or \
                        headers.get("connection", "").lower() == "close":
                    return
        except (OSError, EOFError, ValueError):
            pass
        finally:
            with self.lock:
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    @staticmethod
    def _send(c, method, status, fields, payload):
        names = {k.lower() for k, _ in fields}
        chunked = "transfer-encoding" in names
        nobody = method == "HEAD" or status in (204, 304)
        out = "HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "X"))
        if not chunked and status not in (204, 304) and \
                "content-length" not in names:
            out += "Content-Length: %d\r\n" % (
                payload.total if isinstance(payload, Cut) else len(payload))
        out += "".join("%s: %s\r\n" % kv for kv in fields) + "\r\n"
        data = out.encode("latin-1")
        if not nobody:
            if isinstance(payload, Cut):
                data += b"x" * payload.sent
            elif chunked:
                half = len(payload) // 2
                for part in (payload[:half], payload[half:]):
                    if part:
                        data += b"%x\r\n%s\r\n" % (len(part), part)
                data += b"0\r\n\r\n"
            else:
                data += payload
        c.sendall(data)

    def count(self, target=None):
        with self.lock:
            return sum(1 for r in self.requests
                       if target is None or r["target"] == target)

    def seen(self, target):
        with self.lock:
            return [r for r in self.requests if r["target"] == target]

    def answered(self, target):
        with self.lock:
            return self.done.count(target)

    def stop(self):
        """Down: nothing listens any more, open connections are closed."""
        with self.lock:
            self.stopped = True
            conns = list(self.conns)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def numbered(req, extra=None):
    """A body that tells answers apart: which request made it."""
    d = {"n": req["i"], "k": req["k"], "method": req["method"],
         "target": req["target"]}
    d.update(extra or {})
    return json.dumps(d).encode()


def ok(req, cc="max-age=60", status=200, fields=()):
    f = [("Cache-Control", cc)] if cc else []
    return status, f + list(fields), numbered(req)


# -- clients ---------------------------------------------------------------

def request(port, method, path, headers=(), body=None, timeout=10,
            conn=None):
    """One request with exactly these fields (http.client adds Host unless
    one is given, and no Accept-Encoding)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port,
                                           timeout=timeout * SLOW)
    try:
        names = {k.lower() for k, _ in headers}
        c.putrequest(method, path, skip_host="host" in names,
                     skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        if conn is None:
            c.close()


def raw_exchange(port, data, timeout=5):
    """Sends bytes, returns every byte until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def head_fields(raw):
    """(status, [(name, value)...], rest) of a raw HTTP/1.1 answer."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = []
    for l in lines[1:]:
        k, _, v = l.partition(":")
        fields.append((k.strip(), v.strip()))
    return status, fields, rest


def all_of(fields, name):
    return [v for k, v in fields if k.lower() == name.lower()]


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t0


def in_parallel(fns, timeout=30):
    """Runs the callables at once (after a barrier); their results in order
    (an exception is returned as its value)."""
    results = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        try:
            results[i] = fns[i]()
        except Exception as e:      # noqa: BLE001 - the test looks at it
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,), daemon=True)
               for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def worker_of(gw, sock, timeout=2.0):
    """The pid of the agate worker that accepted this client socket."""
    lport = sock.getsockname()[1]
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        for line in read_proc("/proc/net/tcp").splitlines()[1:]:
            f = line.split()
            if (int(f[1].rsplit(":", 1)[1], 16) == gw.port and
                    int(f[2].rsplit(":", 1)[1], 16) == lport and
                    f[9] != "0"):
                target = "socket:[%s]" % f[9]
                for w in gw.workers():
                    if target in fd_targets(w):
                        return w
        time.sleep(0.01)
    return None


def conns_on_workers(gw, each, timeout=10):
    """{worker pid: [each connected HTTPConnections it accepted]}."""
    pids = gw.workers()
    by = {p: [] for p in pids}
    for _ in range(each * len(pids) * 10 + 40):
        if all(len(v) >= each for v in by.values()):
            break
        c = http.client.HTTPConnection("127.0.0.1", gw.port,
                                       timeout=timeout * SLOW)
        c.connect()
        w = worker_of(gw, c.sock)
        if w in by and len(by[w]) < each:
            by[w].append(c)
        else:
            c.close()
    if not all(len(v) >= each for v in by.values()):
        raise AssertionError("connections did not reach every worker: %r"
                             % {p: len(v) for p, v in by.items()})
    return by


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def http_date(secs):
    return email.utils.formatdate(secs, usegmt=True)


def curl_h2(port, path, headers=()):
    """An HTTP/2 (prior knowledge) GET with curl: (status, {name: value},
    body)."""
    args = ["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
            "-i"]
    for k, v in headers:
        args += ["-H", "%s: %s" % (k, v)]
    p = subprocess.run(args + ["http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, timeout=20)
    if p.returncode != 0:
        raise AssertionError("curl failed: %r" % p.stderr)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/2 "):
        raise AssertionError("not an HTTP/2 answer: %r" % lines[0])
    fields = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        fields[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), fields, body


# -- the tests -------------------------------------------------------------

class CacheTest(AgateTest):

    def gateway(self, origin=None, route_cache=None, cache=None, routes=None,
                upstreams=None, workers=2, start=True, **server):
        """agate with one caching route "/" to origin (or the given routes),
        a top-level cache section and an admin listener."""
        ups = upstreams or {"o": {"servers": [origin.url], "keepalive": 4}}
        if routes is None:
            routes = [{"path": "/", "upstream": "o",
                       "cache": route_cache if route_cache is not None
                       else {"ttl": "30s"}}]
        gw = self.agate(ups, routes, start=False, workers=workers, **server)
        c = {"memory": "8m", "max_entry": "1m", "lock_timeout": "5s"}
        c.update(cache or {})
        gw.config["cache"] = c
        self.admin_port = free_port()
        gw.config["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        gw.write_config(gw.config)
        if start:
            gw.start()
        return gw

    def origin(self, answer=None):
        o = Origin(answer)
        self.addCleanup(o.stop)
        return o

    def get(self, gw, path, headers=(), **kw):
        return request(gw.port, "GET", path, headers, **kw)

    def admin(self, method, path):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                       timeout=10)
        try:
            c.request(method, path)
            r = c.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def metrics(self):
        r = self.admin("GET", "/metrics")
        self.assertEqual(r.status, 200)
        return parse_metrics(r.body.decode())

    def cache_counts(self):
        m = self.metrics()
        return {w: m.get('agate_cache_requests_total{result="%s"}' % w)
                for w in ("hit", "miss", "stale", "bypass")}

    def assertXCache(self, r, want, msg=None):
        self.assertEqual(r.header("X-Cache"), want,
                         msg or "%r %r" % (r, r.headers))

    def assert_not_agate_error(self, r):
        """The answer came from the upstream, not from agate itself."""
        try:
            body = r.json()
        except ValueError:
            self.fail("not JSON: %r" % r)
        self.assertIn("n", body, "agate made this answer up: %r" % r)
        self.assertNotIn("error", body)

    # 1 ------------------------------------------------------------------

    def test_miss_then_hit_log_and_metrics(self):
        o = self.origin()
        gw = self.gateway(o)
        def rid(i):
            return [("X-Request-Id", "one-%d" % i)]
        r1 = self.get(gw, "/one", rid(1))
        self.assertEqual(r1.status, 200)
        self.assertXCache(r1, "MISS")
        r2 = self.get(gw, "/one", rid(2))
        self.assertEqual(r2.status, 200)
        self.assertXCache(r2, "HIT")
        self.assertEqual(r2.body, r1.body)
        self.assertRegex(r2.header("Age") or "", r"^\d+$", r2.headers)
        self.assertLessEqual(int(r2.header("Age")), 1)
        self.assertEqual(r2.header("Content-Type"), None)   # none given
        self.assertEqual(o.count("/one"), 1)
        # The same from a raw socket: one Content-Length, one Age, one
        # X-Cache, and the body it announces.
        raw = raw_exchange(gw.port, b"GET /one HTTP/1.1\r\nHost: 127.0.0.1:%d"
                           b"\r\nX-Request-Id: one-3\r\nConnection: close"
                           b"\r\n\r\n" % gw.port)
        status, fields, rest = head_fields(raw)
        self.assertEqual(status, 200)
        self.assertEqual(all_of(fields, "X-Cache"), ["HIT"], fields)
        self.assertEqual(len(all_of(fields, "Age")), 1, fields)
        self.assertEqual(all_of(fields, "Content-Length"),
                         [str(len(r1.body))], fields)
        self.assertEqual(rest, r1.body)
        self.assertEqual(o.count("/one"), 1)
        # A query is part of the key.
        self.assertXCache(self.get(gw, "/one?x=1", rid(4)), "MISS")
        self.assertXCache(self.get(gw, "/one?x=1", rid(5)), "HIT")
        self.assertEqual(o.count(), 2)
        # The access log says the same (two workers write it: the lines
        # are put in order by their request ids).
        lines = wait_until(
            lambda: (lambda ls: ls if len(ls) == 5 else None)(
                [l for l in gw.access_log() if l["path"] == "/one"]),
            what="five access log lines")
        lines.sort(key=lambda l: l["request_id"])
        self.assertEqual([l["request_id"] for l in lines],
                         ["one-%d" % i for i in range(1, 6)])
        self.assertEqual([l["cache"] for l in lines],
                         ["MISS", "HIT", "HIT", "MISS", "HIT"])
        self.assertTrue(all(l["status"] == 200 for l in lines))
        # And the metrics, exact over both workers.
        m = self.metrics()
        self.assertEqual(self.cache_counts(),
                         {"hit": 3, "miss": 2, "stale": 0, "bypass": 0})
        self.assertEqual(m["agate_cache_entries"], 2)
        self.assertGreaterEqual(m["agate_cache_stored_bytes"],
                                2 * len(r1.body))
        cap = m["agate_cache_capacity_bytes"]
        self.assertTrue(4 << 20 <= cap <= 8 << 20, cap)
        self.assertEqual(m["agate_cache_evictions_total"], 0)
        self.assertEqual(m["agate_cache_fills_failed_total"], 0)
        self.assertEqual(m["agate_cache_waiters"], 0)

    def test_route_without_cache_has_no_x_cache(self):
        o = self.origin()
        gw = self.gateway(routes=[
            {"path": "/c/", "upstream": "o", "cache": {"ttl": "30s"}},
            {"path": "/p/", "upstream": "o"}],
            upstreams={"o": {"servers": [o.url]}})
        r = self.get(gw, "/p/x")
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("X-Cache"))
        self.assertEqual(self.get(gw, "/p/x").body, numbered(
            {"i": 1, "k": 1, "method": "GET", "target": "/p/x"}))
        line = wait_until(lambda: [l for l in gw.access_log()
                                   if l["path"] == "/p/x"],
                          what="the log line")[0]
        self.assertNotIn("cache", line)

    def test_hit_carries_its_own_request_id(self):
        # Every answer of agate carries X-Request-Id (test_proxy.py); a
        # HIT's is its own request's, the one in its access log line.
        o = self.origin()
        gw = self.gateway(o)
        r1 = self.get(gw, "/id", [("X-Request-Id", "first-one")])
        self.assertEqual(r1.header("X-Request-Id"), "first-one")
        r2 = self.get(gw, "/id", [("X-Request-Id", "second-one")])
        self.assertXCache(r2, "HIT")
        self.assertEqual(r2.header("X-Request-Id"), "second-one",
                         r2.headers)
        r3 = self.get(gw, "/id")
        self.assertXCache(r3, "HIT")
        self.assertRegex(r3.header("X-Request-Id") or "", r"^[0-9a-f]{32}$",
                         r3.headers)
        lines = wait_until(
            lambda: (lambda ls: ls if len(ls) == 3 else None)(
                [l for l in gw.access_log() if l["path"] == "/id"]),
            what="three log lines")
        # (Two workers write the log: its lines are not in time order.)
        self.assertEqual(sorted(l["request_id"] for l in lines),
                         sorted(["first-one", "second-one",
                                 r3.header("X-Request-Id")]))

    def test_upstream_age_is_replaced_not_repeated(self):
        # RFC 9111 section 4: a stored answer used without validation
        # carries one Age, the stored answer's current age, replacing any.
        o = self.origin(lambda req: ok(req, cc="max-age=600",
                                       fields=[("Age", "100")]))
        gw = self.gateway(o)
        self.assertXCache(self.get(gw, "/aged"), "MISS")
        raw = raw_exchange(gw.port, b"GET /aged HTTP/1.1\r\nHost: 127.0.0.1"
                           b":%d\r\nConnection: close\r\n\r\n" % gw.port)
        status, fields, _ = head_fields(raw)
        self.assertEqual(all_of(fields, "X-Cache"), ["HIT"])
        ages = all_of(fields, "Age")
        self.assertEqual(len(ages), 1, fields)
        self.assertIn(int(ages[0]), (100, 101), fields)

    # 2 ------------------------------------------------------------------

    def test_50_concurrent_cold_requests_make_one_upstream_request(self):
        delay = 0.5

        def answer(req):
            time.sleep(delay)
            return ok(req)
        o = self.origin(answer)
        gw = self.gateway(o, workers=2)
        by = conns_on_workers(gw, 25)
        conns = [c for cs in by.values() for c in cs]
        self.assertEqual(len(conns), 50)

        def one(c):
            def run():
                t0 = time.monotonic()
                r = request(gw.port, "GET", "/cold", conn=c)
                return r, time.monotonic() - t0
            return run
        results = in_parallel([one(c) for c in conns])
        for c in conns:
            c.close()
        bad = [r for r in results if isinstance(r, Exception)]
        self.assertEqual(bad, [])
        self.assertEqual(o.count("/cold"), 1)
        self.assertEqual([r.status for r, _ in results], [200] * 50)
        self.assertEqual(len({r.body for r, _ in results}), 1)
        words = sorted(r.header("X-Cache") for r, _ in results)
        self.assertEqual(words, ["HIT"] * 49 + ["MISS"])
        lat = sorted(t for _, t in results)
        p99 = lat[math.ceil(0.99 * len(lat)) - 1]
        self.assertLess(p99, (delay + 0.1) * SLOW, lat)
        self.assertGreaterEqual(lat[0], delay * 0.9)    # they did wait
        self.assertEqual(self.cache_counts(),
                         {"hit": 49, "miss": 1, "stale": 0, "bypass": 0})
        self.assertEqual(self.metrics()["agate_cache_waiters"], 0)

    # 3 ------------------------------------------------------------------

    def test_freshness_precedence_and_expiry(self):
        past = "Thu, 01 Jan 1970 00:00:00 GMT"

        def answer(req):
            now = time.time()
            f = {"/ma": [("Cache-Control", "max-age=2")],
                 "/sm": [("Cache-Control", "max-age=1, s-maxage=3")],
                 "/ex": [("Date", http_date(now)),
                         ("Expires", http_date(now + 3))],
                 "/maex": [("Cache-Control", "max-age=3"),
                           ("Expires", past)],
                 "/ttl": []}[req["path"]]
            return 200, f, numbered(req)
        o = self.origin(answer)
        gw = self.gateway(o, {"ttl": "1s"})
        paths = ["/ma", "/sm", "/ex", "/maex", "/ttl"]
        t0 = time.monotonic()
        for p in paths:
            self.assertXCache(self.get(gw, p), "MISS", p)

        def check(at, want):
            delay = t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            got = {}
            for p in want:
                r = self.get(gw, p)
                self.assertEqual(r.status, 200)
                got[p] = r.header("X-Cache")
            self.assertEqual(got, want, "at %.1fs" % at)

        check(0.3, dict.fromkeys(paths, "HIT"))
        # 1.5 s: the route's ttl (1 s) is over, the rest are fresh: each
        # of the others overrides the ttl, s-maxage (3) overrides max-age
        # (1), max-age (3) overrides an Expires in the past.
        check(1.5, {"/ma": "HIT", "/sm": "HIT", "/ex": "HIT", "/maex": "HIT",
                    "/ttl": "MISS"})
        r = self.get(gw, "/ma")
        self.assertIn(int(r.header("Age")), (1, 2), r.headers)
        # 2.4 s: max-age=2 is over (its refill is fresh again).
        # (/ttl was filled again at 1.5 s: fresh until 2.5 s.  /ex is not
        # asked: Date has whole seconds, so its age started at 0 to 1 s.)
        check(2.4, {"/ma": "MISS", "/sm": "HIT", "/maex": "HIT",
                    "/ttl": "HIT"})
        # 3.4 s: s-maxage=3, Expires (Date + 3), max-age=3 are over.
        check(3.4, {"/ma": "HIT", "/sm": "MISS", "/ex": "MISS",
                    "/maex": "MISS", "/ttl": "MISS"})
        counts = {p: o.count(p) for p in paths}
        self.assertEqual(counts, {"/ma": 2, "/sm": 2, "/ex": 2, "/maex": 2,
                                  "/ttl": 3})

    # 4 ------------------------------------------------------------------

    def test_what_is_not_stored(self):
        big = b"b" * 2000

        def answer(req):
            p = req["path"]
            cc = [("Cache-Control", "max-age=60")]
            if p == "/no-store":
                return 200, [("Cache-Control", "no-store")], numbered(req)
            if p == "/private":
                return 200, [("Cache-Control", "private, max-age=60")], \
                    numbered(req)
            if p == "/no-cache":
                return 200, [("Cache-Control", "no-cache, max-age=60")], \
                    numbered(req)
            if p == "/cookie":
                return 200, cc + [("Set-Cookie", "s=1")], numbered(req)
            if p == "/vary-star":
                return 200, cc + [("Vary", "*")], numbered(req)
            if p == "/vary-9":
                return 200, cc + [("Vary", "a, b, c, d, e, f, g, h, i")], \
                    numbered(req)
            if p == "/vary-8":
                return 200, cc + [("Vary", "a, b, c, d, e, f, g, h")], \
                    numbered(req)
            if p == "/500":
                return 500, cc, numbered(req)
            if p == "/302":
                return 302, cc + [("Location", "/elsewhere")], numbered(req)
            if p == "/404":
                return 404, cc, numbered(req)
            if p == "/big":
                return 200, cc, big
            if p == "/big-chunked":
                return 200, cc + [("Transfer-Encoding", "chunked")], big
            if p == "/small":
                return 200, cc, b"s" * 900
            if p == "/auth-public":
                return 200, [("Cache-Control", "public, max-age=60")], \
                    numbered(req)
            if p == "/auth-smaxage":
                return 200, [("Cache-Control", "s-maxage=60")], numbered(req)
            if p == "/auth-mr":
                return 200, [("Cache-Control", "must-revalidate, "
                              "max-age=60")], numbered(req)
            return 200, cc, numbered(req)       # /auth
        o = self.origin(answer)
        gw = self.gateway(o, cache={"max_entry": "1k"})
        never = {"/no-store": 200, "/private": 200, "/no-cache": 200,
                 "/cookie": 200, "/vary-star": 200, "/vary-9": 200,
                 "/500": 500, "/302": 302, "/big": 200, "/big-chunked": 200}
        for p, status in never.items():
            for i in range(3):
                r = self.get(gw, p)
                self.assertEqual(r.status, status, p)
                self.assertXCache(r, "MISS", "%s #%d: %r" % (p, i, r.headers))
            self.assertEqual(o.count(p), 3, p)
        self.assertEqual(self.get(gw, "/big").body, big)
        self.assertEqual(self.get(gw, "/big-chunked").body, big)
        # Controls: stored.
        for p in ("/vary-8", "/404", "/small"):
            self.assertXCache(self.get(gw, p), "MISS", p)
            r = self.get(gw, p)
            self.assertXCache(r, "HIT", p)
            self.assertEqual(o.count(p), 1, p)
        self.assertEqual(self.get(gw, "/404").status, 404)
        self.assertEqual(self.get(gw, "/small").body, b"s" * 900)
        # Authorization: not stored unless the answer allows it.
        auth = [("Authorization", "Bearer secret")]
        for i in range(2):
            r = self.get(gw, "/auth", auth)
            self.assertXCache(r, "MISS", "/auth #%d" % i)
        # (This one, without Authorization, is stored.)
        self.assertXCache(self.get(gw, "/auth"), "MISS")
        self.assertEqual(o.count("/auth"), 3)
        for p in ("/auth-public", "/auth-smaxage", "/auth-mr"):
            self.assertXCache(self.get(gw, p, auth), "MISS", p)
            self.assertXCache(self.get(gw, p, auth), "HIT", p)
            self.assertEqual(o.count(p), 1, p)
        m = self.metrics()
        self.assertEqual(m["agate_cache_entries"], 7)
        # Each answer passed on unstored is counted, with why: RFC 9111
        # (no-store, private, no-cache, Set-Cookie: 4 x 3; 500 and 302:
        # 2 x 3; Authorization: 2), Vary (* and 9 names: 2 x 3), size
        # (the two big ones: 2 x 4).
        self.assertEqual(m['agate_cache_not_stored_total{reason="policy"}'],
                         20)
        self.assertEqual(m['agate_cache_not_stored_total{reason="vary"}'], 6)
        self.assertEqual(
            m['agate_cache_not_stored_total{reason="too_big"}'], 8)

    # 5 ------------------------------------------------------------------

    def test_vary_variants_never_cross(self):
        def answer(req):
            f = [("Cache-Control", "max-age=60"),
                 ("Vary", "Accept-Encoding")]
            text = b"plain text from answer %d" % req["i"]
            if "gzip" in req["headers"].get("accept-encoding", ""):
                return 200, f + [("Content-Encoding", "gzip")], \
                    gzip.compress(text)
            return 200, f, text
        o = self.origin(answer)
        gw = self.gateway(o)
        gz = [("Accept-Encoding", "gzip")]
        ident = [("Accept-Encoding", "identity")]

        def is_gzip(r):
            return r.header("Content-Encoding") == "gzip" and \
                gzip.decompress(r.body).startswith(b"plain text")

        def is_plain(r):
            return r.header("Content-Encoding") is None and \
                r.body.startswith(b"plain text")
        r = self.get(gw, "/v", gz)
        self.assertXCache(r, "MISS")
        self.assertTrue(is_gzip(r))
        r = self.get(gw, "/v", gz)
        self.assertXCache(r, "HIT")
        self.assertTrue(is_gzip(r))
        # Other values of the Vary field: never the gzip variant.
        for h in ((), ident, [("Accept-Encoding", "br")]):
            r = self.get(gw, "/v", h)
            self.assertEqual(r.status, 200)
            self.assertTrue(is_plain(r), (h, r, r.headers))
            self.assertXCache(r, "MISS", h)
        r = self.get(gw, "/v", [("Accept-Encoding", "br")])
        self.assertXCache(r, "HIT")     # the variant last stored
        self.assertTrue(is_plain(r))
        # Alternating: each client gets its own encoding, every time.
        for i in range(4):
            r = self.get(gw, "/v", gz)
            self.assertTrue(is_gzip(r), (i, r.headers))
            r = self.get(gw, "/v", ident)
            self.assertTrue(is_plain(r), (i, r.headers))
        # The upstream saw each request's own Accept-Encoding.
        for req in o.seen("/v"):
            self.assertNotIn("if-none-match", req["headers"])

    # 6 ------------------------------------------------------------------

    def test_conditional_requests_answered_304_from_the_store(self):
        lm = "Wed, 21 Oct 2015 07:28:00 GMT"
        o = self.origin(lambda req: ok(req, fields=[
            ("ETag", '"v1"'), ("Last-Modified", lm)]))
        gw = self.gateway(o)
        # The miss itself is conditional: the fill asks for the whole
        # answer (the store wants it), without the client's validators.
        r = self.get(gw, "/c", [("If-None-Match", '"v1"'),
                                ("If-Modified-Since", lm)])
        self.assertIn(r.status, (200, 304))
        self.assertXCache(r, "MISS")
        body = self.get(gw, "/c").body
        cases = [
            ([("If-None-Match", '"v1"')], 304),
            ([("If-None-Match", 'W/"v1"')], 304),
            ([("If-None-Match", '"x", "v1"')], 304),
            ([("If-None-Match", "*")], 304),
            ([("If-None-Match", '"other"')], 200),
            ([("If-Modified-Since", lm)], 304),
            ([("If-Modified-Since", "Thu, 22 Oct 2015 07:28:00 GMT")], 304),
            ([("If-Modified-Since", "Tue, 20 Oct 2015 07:28:00 GMT")], 200),
            ([("If-Modified-Since", "garbage")], 200),
            # If-None-Match decides when both are there.
            ([("If-None-Match", '"other"'), ("If-Modified-Since", lm)], 200),
        ]
        for headers, want in cases:
            r = self.get(gw, "/c", headers)
            self.assertEqual(r.status, want, headers)
            self.assertXCache(r, "HIT", headers)
            if want == 304:
                self.assertEqual(r.body, b"", headers)
                self.assertEqual(r.header("ETag"), '"v1"', r.headers)
                self.assertIsNotNone(r.header("Age"), r.headers)
            else:
                self.assertEqual(r.body, body, headers)
        self.assertEqual(o.count("/c"), 1)
        seen = o.seen("/c")[0]["headers"]
        for name in ("if-none-match", "if-modified-since", "if-match",
                     "if-unmodified-since", "if-range"):
            self.assertNotIn(name, seen)
        # A HEAD is answered 304 the same way.
        r = request(gw.port, "HEAD", "/c", [("If-None-Match", '"v1"')])
        self.assertEqual(r.status, 304)

    # 7 ------------------------------------------------------------------

    def test_head_from_a_get_entry_and_a_head_miss_proxied(self):
        def answer(req):
            return 200, [("Cache-Control", "max-age=60"),
                         ("Content-Type", "text/plain")], b"h" * 1234
        o = self.origin(answer)
        gw = self.gateway(o)
        r = self.get(gw, "/h")
        self.assertXCache(r, "MISS")
        self.assertEqual(len(r.body), 1234)
        raw = raw_exchange(gw.port, b"HEAD /h HTTP/1.1\r\nHost: 127.0.0.1:%d"
                           b"\r\nConnection: close\r\n\r\n" % gw.port)
        status, fields, rest = head_fields(raw)
        self.assertEqual(status, 200)
        self.assertEqual(all_of(fields, "X-Cache"), ["HIT"], fields)
        self.assertEqual(all_of(fields, "Content-Length"), ["1234"], fields)
        self.assertEqual(all_of(fields, "Content-Type"), ["text/plain"])
        self.assertEqual(rest, b"")                  # no body
        self.assertEqual(o.count("/h"), 1)
        # A HEAD miss goes upstream as HEAD and is not stored.
        r = request(gw.port, "HEAD", "/h2")
        self.assertEqual(r.status, 200)
        self.assertXCache(r, "MISS")
        self.assertEqual(r.header("Content-Length"), "1234")
        self.assertEqual([q["method"] for q in o.seen("/h2")], ["HEAD"])
        r = self.get(gw, "/h2")
        self.assertXCache(r, "MISS")
        self.assertEqual(len(r.body), 1234)
        self.assertEqual([q["method"] for q in o.seen("/h2")],
                         ["HEAD", "GET"])
        r = request(gw.port, "HEAD", "/h2")
        self.assertXCache(r, "HIT")
        self.assertEqual(r.header("Content-Length"), "1234")
        self.assertEqual(o.count("/h2"), 2)
        # Keep-alive after a HEAD hit: the next answer is not eaten.
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        try:
            for _ in range(3):
                self.assertXCache(request(gw.port, "HEAD", "/h", conn=c),
                                  "HIT")
                r = request(gw.port, "GET", "/h", conn=c)
                self.assertEqual(len(r.body), 1234)
        finally:
            c.close()

    # 8 ------------------------------------------------------------------

    def test_request_directives_range_and_bodies(self):
        o = self.origin()
        gw = self.gateway(o, max_body_size="1m")

        def n(r):
            return r.json()["n"]
        r = self.get(gw, "/r")
        self.assertXCache(r, "MISS")
        self.assertEqual(n(self.get(gw, "/r")), 0)
        # no-cache, max-age=0 and Pragma: no-cache go upstream and refresh.
        for i, h in enumerate(([("Cache-Control", "no-cache")],
                               [("Cache-Control", "max-age=0")],
                               [("Pragma", "no-cache")]), 1):
            r = self.get(gw, "/r", h)
            self.assertXCache(r, "MISS", h)
            self.assertEqual(n(r), i, h)
            r = self.get(gw, "/r")
            self.assertXCache(r, "HIT", h)
            self.assertEqual(n(r), i, h)          # refreshed
        self.assertEqual(o.count("/r"), 4)
        # no-store: upstream, and the entry is neither used nor replaced.
        r = self.get(gw, "/r", [("Cache-Control", "no-store")])
        self.assertXCache(r, "BYPASS")
        self.assertEqual(n(r), 4)
        # Range: bypassed, and the upstream sees the Range.
        r = self.get(gw, "/r", [("Range", "bytes=0-3")])
        self.assertXCache(r, "BYPASS")
        self.assertEqual(o.seen("/r")[-1]["headers"].get("range"),
                         "bytes=0-3")
        # A GET with a body: bypassed, the body goes up.
        r = request(gw.port, "GET", "/r", body=b"abc")
        self.assertXCache(r, "BYPASS")
        self.assertEqual(o.seen("/r")[-1]["body"], b"abc")
        # None of the bypasses touched the entry.
        r = self.get(gw, "/r")
        self.assertXCache(r, "HIT")
        self.assertEqual(n(r), 3)
        # A POST: bypassed, its body goes up (what it does to the entry:
        # test_unsafe_methods_invalidate).
        r = request(gw.port, "POST", "/r", body=b"post-body")
        self.assertXCache(r, "BYPASS")
        self.assertEqual(o.seen("/r")[-1]["method"], "POST")
        self.assertEqual(o.seen("/r")[-1]["body"], b"post-body")
        self.assertEqual(o.count("/r"), 8)
        self.assertEqual(self.cache_counts()["bypass"], 4)

    def test_unsafe_methods_invalidate(self):
        # RFC 9111 section 4.4: a non-error answer to an unsafe method
        # invalidates the target URI's stored answers.
        o = self.origin()
        gw = self.gateway(o, max_body_size="1m")
        for method in ("POST", "PUT", "DELETE"):
            path = "/inv-%s" % method.lower()
            self.assertXCache(self.get(gw, path), "MISS")
            self.assertXCache(self.get(gw, path), "HIT")
            r = request(gw.port, method, path, body=b"x")
            self.assertEqual(r.status, 200)
            r = self.get(gw, path)
            self.assertXCache(r, "MISS", "GET after %s" % method)
            self.assertEqual(r.json()["method"], "GET")

    # 9 ------------------------------------------------------------------

    def test_stale_while_revalidate_one_background_refresh(self):
        def answer(req):
            if req["path"] == "/mr":
                return ok(req, cc="max-age=1, must-revalidate")
            if req["path"] == "/smax":
                return ok(req, cc="s-maxage=1")
            if req["k"] == 0:
                return 200, [("Cache-Control", "max-age=1")], b"version 0"
            time.sleep(1.5)
            return 200, [("Cache-Control", "max-age=30")], b"version 1"
        o = self.origin(answer)
        gw = self.gateway(o, {"ttl": "30s", "stale_while_revalidate": "10s"})
        by = conns_on_workers(gw, 10)
        conns = [c for cs in by.values() for c in cs]
        r = self.get(gw, "/swr")
        self.assertXCache(r, "MISS")
        self.assertEqual(r.body, b"version 0")
        self.assertXCache(self.get(gw, "/swr"), "HIT")
        for p in ("/mr", "/smax"):
            self.assertXCache(self.get(gw, p), "MISS")
        time.sleep(1.3)
        # must-revalidate (and s-maxage, which implies it): never stale.
        for p in ("/mr", "/smax"):
            self.assertXCache(self.get(gw, p), "MISS", p)
            self.assertEqual(o.count(p), 2, p)

        def one(c):
            return lambda: timed(request, gw.port, "GET", "/swr", conn=c)
        results = in_parallel([one(c) for c in conns])
        for c in conns:
            c.close()
        self.assertEqual([r for r in results if isinstance(r, Exception)],
                         [])
        for r, t in results:
            self.assertEqual(r.status, 200)
            self.assertXCache(r, "STALE")
            self.assertEqual(r.body, b"version 0")
            self.assertGreaterEqual(int(r.header("Age")), 1)
            self.assertLess(t, 0.5 * SLOW, "a stale answer waited")
        # While the refresh runs: still stale, still one refresh.
        r, t = timed(self.get, gw, "/swr")
        self.assertXCache(r, "STALE")
        self.assertEqual(o.count("/swr"), 2)
        wait_until(lambda: o.answered("/swr") == 2, what="the refresh")
        time.sleep(0.1)
        r = self.get(gw, "/swr")
        self.assertXCache(r, "HIT")
        self.assertEqual(r.body, b"version 1")
        self.assertEqual(o.count("/swr"), 2)
        c = self.cache_counts()
        self.assertEqual(c["stale"], 21)

    # 10 -----------------------------------------------------------------

    def test_stale_if_error(self):
        state = {"fail": False}

        def answer(req):
            if state["fail"] and req["path"].startswith("/et/"):
                time.sleep(1.0)         # past the upstream's timeout
            if state["fail"]:
                return 503, [], numbered(req)
            return 200, [("Cache-Control", "max-age=1")], \
                b"old answer " + req["target"].encode()
        a = self.origin(answer)                 # answers 503 later
        b = self.origin(answer)                 # stopped later
        sie = {"ttl": "30s", "stale_if_error": "30s"}
        plain = {"ttl": "30s"}
        gw = self.gateway(
            upstreams={"a": {"servers": [a.url]}, "b": {"servers": [b.url]},
                       "t": {"servers": [a.url], "timeout": "400ms"}},
            routes=[{"path": "/e/", "upstream": "a", "cache": sie},
                    {"path": "/et/", "upstream": "t", "cache": sie},
                    {"path": "/d/", "upstream": "b", "cache": sie},
                    {"path": "/ne/", "upstream": "a", "cache": plain},
                    {"path": "/nd/", "upstream": "b", "cache": plain}])
        for p in ("/e/x", "/et/x", "/d/x", "/ne/x", "/nd/x"):
            self.assertXCache(self.get(gw, p), "MISS")
            self.assertXCache(self.get(gw, p), "HIT")
        time.sleep(1.3)
        state["fail"] = True
        b.stop()
        # A 503, a timeout, a refused connection: the stale answer.
        for p, up in (("/e/x", a), ("/et/x", a), ("/d/x", b)):
            before = up.count()
            r = self.get(gw, p)
            self.assertEqual(r.status, 200, (p, r))
            self.assertXCache(r, "STALE", p)
            self.assertEqual(r.body, b"old answer " + p.encode())
            self.assertGreaterEqual(int(r.header("Age")), 1)
            if up is a:
                self.assertEqual(up.count(), before + 1)
            # For a second after a failed fill: stale without a retry.
            r = self.get(gw, p)
            self.assertXCache(r, "STALE", p)
            self.assertEqual(r.body, b"old answer " + p.encode())
            if up is a:
                self.assertEqual(up.count(), before + 1)
        # Without stale_if_error: the error.
        r = self.get(gw, "/ne/x")
        self.assertEqual(r.status, 503)
        self.assertXCache(r, "MISS")
        self.assertIn(b'"n"', r.body)           # the upstream's answer
        r = self.get(gw, "/nd/x")
        self.assertEqual(r.status, 502)
        self.assertXCache(r, "MISS")
        # After that second, the upstream is tried again; still stale.
        time.sleep(1.1)
        before = a.count()
        r = self.get(gw, "/e/x")
        self.assertXCache(r, "STALE")
        self.assertEqual(r.status, 200)
        self.assertEqual(a.count(), before + 1)
        self.assertGreaterEqual(
            self.metrics()["agate_cache_fills_failed_total"], 4)

    def test_lru_eviction_keeps_recent_entries_intact(self):
        # 1 MiB holds about 19 answers of 50 kB: 30 of them evict the
        # least recently used; what stays is served byte for byte.
        def body(path):
            return (path.encode() + b":") * (50000 // (len(path) + 1))
        o = self.origin(lambda req: (200, [("Cache-Control", "max-age=60")],
                                     body(req["path"])))
        gw = self.gateway(o, cache={"memory": "1m"})
        self.assertXCache(self.get(gw, "/hot"), "MISS")
        for i in range(30):
            p = "/e%d" % i
            r = self.get(gw, p)
            self.assertXCache(r, "MISS", p)
            self.assertEqual(r.body, body(p))
            r = self.get(gw, "/hot")            # used all along
            self.assertXCache(r, "HIT", "after %s" % p)
            self.assertEqual(r.body, body("/hot"))
        m = self.metrics()
        self.assertGreater(m["agate_cache_evictions_total"], 0)
        self.assertLessEqual(m["agate_cache_stored_bytes"],
                             m["agate_cache_capacity_bytes"])
        self.assertLess(m["agate_cache_entries"], 31)
        self.assertEqual(m["agate_cache_entries"] +
                         m["agate_cache_evictions_total"], 31)
        for i in range(25, 30):                  # the most recent: kept
            p = "/e%d" % i
            r = self.get(gw, p)
            self.assertXCache(r, "HIT", p)
            self.assertEqual(r.body, body(p), p)
        r = self.get(gw, "/e0")                  # the oldest: gone
        self.assertXCache(r, "MISS")
        self.assertEqual(r.body, body("/e0"))
        self.assertEqual(o.count("/hot"), 1)

    def test_route_ttl_zero_with_stale_while_revalidate(self):
        # ttl 0: stale at once; the route's stale_while_revalidate (10 s)
        # still serves it while one refresh runs, as it does for answers
        # whose own max-age is over.
        o = self.origin(lambda req: (200, [], numbered(req)))
        gw = self.gateway(o, {"ttl": "0s", "stale_while_revalidate": "10s"})
        r0 = self.get(gw, "/z")
        self.assertXCache(r0, "MISS")
        r = self.get(gw, "/z")
        self.assertXCache(r, "STALE")
        self.assertEqual(r.body, r0.body)

    def test_late_fill_does_not_replace_a_newer_answer(self):
        # A fill past lock_timeout (asked at 0 s, answered at 3 s) must not
        # put back an answer older than the one a later fill stored at
        # 1.3 s: clients would see the content go back in time.
        def answer(req):
            if req["k"] == 0:
                time.sleep(3.0)
            return ok(req)
        o = self.origin(answer)
        gw = self.gateway(o, cache={"lock_timeout": "1s"})
        t = threading.Thread(target=self.get, args=(gw, "/late"), daemon=True)
        t.start()
        wait_until(lambda: o.count("/late") == 1, what="the first fill")
        time.sleep(1.2)
        r = self.get(gw, "/late")
        self.assertXCache(r, "MISS")
        self.assertEqual(r.json()["k"], 1)
        self.assertEqual(self.get(gw, "/late").json()["k"], 1)
        t.join(10)
        r = self.get(gw, "/late")
        self.assertXCache(r, "HIT")
        self.assertEqual(r.json()["k"], 1, "an older answer came back")

    def test_config_errors(self):
        def check(cfg, needle):
            path = os.path.join(self.dir, "bad.yaml")
            with open(path, "w") as f:
                f.write(cfg)
            p = subprocess.run([AGATE, "-t", "-c", path], capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(p.returncode, 1, (cfg, p.stderr))
            self.assertRegex(p.stderr, r"bad\.yaml:\d+:\d+: ")
            self.assertIn(needle, p.stderr)
        head = ('server:\n  listen: ["127.0.0.1:1"]\n'
                'upstreams:\n  u:\n    servers: ["http://127.0.0.1:2"]\n')
        route = 'routes:\n  - path: /\n    upstream: u\n'
        check(head + route + "    cache: { ttl: 30s }\n",
              "top-level cache")
        top = "cache: { memory: 8m }\n"
        check(head + top + route + "    cache: { tll: 30s }\n", "tll")
        check(head + top + route + "    cache: { ttl: soon }\n", "ttl")
        check(head + "cache: { memory: 8m, lock_timeout: 0s }\n" + route +
              "    cache: { ttl: 30s }\n", "lock_timeout")
        check(head + top + "routes:\n  - path: /f/\n    fanout:\n"
              "      mode: all\n      calls:\n"
              "        a: { upstream: u, path: /a }\n"
              "    cache: { ttl: 30s }\n", "fan-out")
        ok_cfg = head + top + route + "    cache: { ttl: 30s }\n"
        path = os.path.join(self.dir, "good.yaml")
        with open(path, "w") as f:
            f.write(ok_cfg)
        p = subprocess.run([AGATE, "-t", "-c", path], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)

    # 11 -----------------------------------------------------------------

    def test_lock_timeout_sends_waiters_upstream(self):
        def answer(req):
            if req["k"] == 0:
                time.sleep(3.0)
            return ok(req)
        o = self.origin(answer)
        gw = self.gateway(o, cache={"lock_timeout": "1s"})
        filler = {}
        t = threading.Thread(target=lambda: filler.setdefault(
            "r", timed(self.get, gw, "/lt")))
        t.start()
        wait_until(lambda: o.count("/lt") == 1, what="the fill upstream")
        results = in_parallel([lambda: timed(self.get, gw, "/lt")] * 6)
        self.assertEqual([r for r in results if isinstance(r, Exception)],
                         [])
        for r, dt in results:
            self.assertEqual(r.status, 200)
            self.assertXCache(r, "MISS")
            self.assertGreater(r.json()["k"], 0)       # their own requests
            self.assertGreater(dt, 0.6, "did not wait for the fill")
            self.assertLess(dt, 1.6 * SLOW, "waited past lock_timeout")
        self.assertEqual(o.count("/lt"), 7)
        t.join(10)
        r, dt = filler["r"]
        self.assertEqual(r.status, 200)
        self.assertXCache(r, "MISS")
        self.assertEqual(r.json()["k"], 0)
        self.assertGreater(dt, 2.9)
        r = self.get(gw, "/lt")
        self.assertXCache(r, "HIT")
        self.assertEqual(r.json()["k"], 0)
        self.assertEqual(o.count("/lt"), 7)

    # 12 -----------------------------------------------------------------

    def test_fill_completes_after_its_client_leaves(self):
        def answer(req):
            if req["k"] == 0:
                time.sleep(1.5)
            return ok(req)
        o = self.origin(answer)
        gw = self.gateway(o)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(b"GET /gone HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                  % gw.port)
        wait_until(lambda: o.count("/gone") == 1, what="the fill upstream")
        s.close()
        time.sleep(0.2)
        results = in_parallel([lambda: timed(self.get, gw, "/gone")] * 4)
        self.assertEqual([r for r in results if isinstance(r, Exception)],
                         [])
        for r, dt in results:
            self.assertEqual(r.status, 200)
            self.assertXCache(r, "HIT")
            self.assertEqual(r.json()["k"], 0)
            self.assertLess(dt, 2.0 * SLOW)
        self.assertEqual(o.count("/gone"), 1)
        self.assertEqual(o.answered("/gone"), 1)
        r = self.get(gw, "/gone")
        self.assertXCache(r, "HIT")
        self.assertEqual(o.count("/gone"), 1)

    # 13 -----------------------------------------------------------------

    def test_failed_fill_sends_waiters_to_the_upstream(self):
        def answer(req):
            if req["k"] == 0:
                time.sleep(0.8)
            if req["path"] == "/f500":
                return 500, [("Cache-Control", "max-age=60")], numbered(req)
            return 200, [("Cache-Control", "no-store")], numbered(req)
        o = self.origin(answer)
        gw = self.gateway(o)
        for path, status in (("/f500", 500), ("/fns", 200)):
            filler = {}
            t = threading.Thread(target=lambda: filler.setdefault(
                "r", self.get(gw, path)))
            t.start()
            wait_until(lambda: o.count(path) == 1, what="the fill")
            results = in_parallel([lambda: self.get(gw, path)] * 5)
            t.join(10)
            self.assertEqual([r for r in results
                              if isinstance(r, Exception)], [])
            for r in results + [filler["r"]]:
                self.assertEqual(r.status, status, (path, r))
                self.assert_not_agate_error(r)
                self.assertXCache(r, "MISS", path)
            # Each its own answer: 6 upstream requests, 6 bodies.
            self.assertEqual(o.count(path), 6, path)
            self.assertEqual(len({r.body for r in results + [filler["r"]]}),
                             6, path)

    # 14 -----------------------------------------------------------------

    def test_purge_by_prefix(self):
        o = self.origin()
        gw = self.gateway(o)
        paths = ["/a/1", "/a/2", "/a/3?q=1", "/ab", "/b/1"]
        for p in paths:
            self.assertXCache(self.get(gw, p), "MISS")
            self.assertXCache(self.get(gw, p), "HIT")
        self.assertEqual(self.metrics()["agate_cache_entries"], 5)
        r = self.admin("DELETE", "/cache?prefix=/a/")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"purged": 3})
        for p in ("/a/1", "/a/2", "/a/3?q=1"):
            self.assertXCache(self.get(gw, p), "MISS", p)
        for p in ("/ab", "/b/1"):
            self.assertXCache(self.get(gw, p), "HIT", p)
        # Percent-encoded, and nothing under it.
        r = self.admin("DELETE", "/cache?prefix=%2Fb%2F")
        self.assertEqual(r.json(), {"purged": 1})
        self.assertXCache(self.get(gw, "/b/1"), "MISS")
        r = self.admin("DELETE", "/cache?prefix=/nothing/")
        self.assertEqual(r.json(), {"purged": 0})
        # Other methods: 405 with Allow.
        for method in ("GET", "POST", "PUT"):
            r = self.admin(method, "/cache?prefix=/a/")
            self.assertEqual(r.status, 405, method)
            self.assertIn("DELETE", r.header("Allow") or "")
        # Missing or bad prefixes: 400, and nothing purged.
        for q in ("/cache", "/cache?prefix=", "/cache?prefix=a/",
                  "/cache?path=/a/", "/cache?prefix=%zz",
                  "/cache?prefix=/a/&prefix=/b/"):
            r = self.admin("DELETE", q)
            self.assertEqual(r.status, 400, q)
            self.assertEqual(r.json()["status"], 400)
        self.assertXCache(self.get(gw, "/ab"), "HIT")
        # The whole cache.
        r = self.admin("DELETE", "/cache?prefix=/")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.metrics()["agate_cache_entries"], 0)
        self.assertXCache(self.get(gw, "/ab"), "MISS")

    # 15 -----------------------------------------------------------------

    def test_reload_keeps_the_entries(self):
        o = self.origin()
        gw = self.gateway(o)
        for p in ("/k1", "/k2"):
            self.assertXCache(self.get(gw, p), "MISS")
            self.assertXCache(self.get(gw, p), "HIT")
        before = self.cache_counts()
        old = set(gw.workers())
        cfg = json.loads(json.dumps(gw.config))
        cfg["routes"].insert(0, {"path": "/other/", "upstream": "o"})
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        wait_until(lambda: not any(alive(p) for p in old) and
                   len(gw.workers()) == 2, what="the new workers")
        new = set(gw.workers())
        self.assertFalse(new & old)
        self.assertEqual(self.get(gw, "/other/x").status, 200)  # new config
        by = conns_on_workers(gw, 2)
        for pid, conns in by.items():
            for c in conns:
                for p in ("/k1", "/k2"):
                    r = request(gw.port, "GET", p, conn=c)
                    self.assertXCache(r, "HIT", "worker %d %s" % (pid, p))
                c.close()
        self.assertEqual(o.count("/k1"), 1)
        self.assertEqual(o.count("/k2"), 1)
        after = self.cache_counts()
        self.assertEqual(after["hit"], before["hit"] + 8)   # kept, and on

    # 16 -----------------------------------------------------------------

    def test_worker_killed_while_filling(self):
        def answer(req):
            if req["path"] == "/kill" and req["k"] == 0:
                time.sleep(4.0)
            else:
                time.sleep(0.3)
            return ok(req)
        o = self.origin(answer)
        lock_timeout, upstream_delay = 5.0, 0.3
        gw = self.gateway(o, cache={"lock_timeout": "5s"})
        by = conns_on_workers(gw, 3)
        w1, w2 = sorted(by)
        filler = by[w1][0]
        def fill():
            try:        # its worker is killed under it
                self.get(gw, "/kill", conn=filler)
            except OSError:
                pass
        t = threading.Thread(target=fill, daemon=True)
        t.start()
        wait_until(lambda: o.count("/kill") == 1, what="the fill upstream")
        out = []

        def waiter(c):
            try:
                r = request(gw.port, "GET", "/kill", conn=c)
                out.append((r, time.monotonic()))
            except Exception as e:      # noqa: BLE001
                out.append((e, time.monotonic()))
        ws = [threading.Thread(target=waiter, args=(c,)) for c in by[w2]]
        t_start = time.monotonic()
        for th in ws:
            th.start()
        wait_until(lambda: self.metrics()["agate_cache_waiters"] == 3,
                   what="three waiters")
        t_kill = time.monotonic()
        os.kill(w1, signal.SIGKILL)
        for th in ws:
            th.join(15)
        self.assertEqual(len(out), 3)
        for r, t_done in out:
            self.assertIsInstance(r, Response)
            self.assertEqual(r.status, 200)
            self.assert_not_agate_error(r)
            self.assertLess(t_done - t_start,
                            (lock_timeout + upstream_delay) * SLOW)
            # They noticed the dead owner; lock_timeout did not free them.
            self.assertLess(t_done - t_kill, 2.5 * SLOW,
                            "waiters recovered only at lock_timeout")
        for cs in by.values():
            for c in cs:
                c.close()
        wait_until(lambda: len(gw.workers()) == 2 and
                   w1 not in gw.workers(), what="a new worker")
        # The cache still works, in every worker.
        for p in ("/after", "/kill"):
            self.assertXCache(self.get(gw, p), "MISS", p)
        by = conns_on_workers(gw, 2)
        for cs in by.values():
            for c in cs:
                for p in ("/after", "/kill"):
                    self.assertXCache(request(gw.port, "GET", p, conn=c),
                                      "HIT", p)
                c.close()
        self.assertEqual(o.count("/after"), 1)
        self.assertEqual(self.metrics()["agate_cache_waiters"], 0)

    def test_waiters_gauge_after_a_worker_with_waiters_dies(self):
        # agate_cache_waiters counts requests waiting now: a worker that
        # dies takes its waiters with it.
        def answer(req):
            time.sleep(2.0 if req["k"] == 0 else 0.1)
            return ok(req)
        o = self.origin(answer)
        gw = self.gateway(o, cache={"lock_timeout": "5s"})
        by = conns_on_workers(gw, 2)
        for cs in by.values():
            for c in cs:
                self.addCleanup(c.close)
        w1, w2 = sorted(by)

        def get(c):
            try:        # those of w1 lose their worker
                self.get(gw, "/g", conn=c)
            except OSError:
                pass
        threading.Thread(target=get, args=(by[w2][0],), daemon=True).start()
        wait_until(lambda: o.count("/g") == 1, what="the fill")
        for c in by[w1]:
            threading.Thread(target=get, args=(c,), daemon=True).start()
        wait_until(lambda: self.metrics()["agate_cache_waiters"] == 2,
                   what="two waiters")
        os.kill(w1, signal.SIGKILL)
        wait_until(lambda: len(gw.workers()) == 2 and
                   w1 not in gw.workers(), what="a new worker")
        wait_until(lambda: o.answered("/g") >= 1, what="the fill's answer")
        time.sleep(0.3)
        self.assertEqual(self.metrics()["agate_cache_waiters"], 0)

    # 17 -----------------------------------------------------------------

    def test_long_keys_bypass(self):
        o = self.origin()
        gw = self.gateway(o)
        host = "127.0.0.1:%d" % gw.port
        long_path = "/" + "k" * 2100
        for _ in range(2):
            r = self.get(gw, long_path)
            self.assertEqual(r.status, 200)
            self.assertXCache(r, "BYPASS")
        self.assertEqual(o.count(long_path), 2)
        # Just under: path, "?", query, newline and host make 2048 bytes.
        q = "q=" + "x" * (2048 - len("/short?\n") - len(host) - 2)
        fits = "/short?" + q
        self.assertXCache(self.get(gw, fits), "MISS")
        self.assertXCache(self.get(gw, fits), "HIT")
        over = fits + "x"
        self.assertXCache(self.get(gw, over), "BYPASS")
        self.assertXCache(self.get(gw, over), "BYPASS")

    def test_http2_clients_get_hits(self):
        o = self.origin()
        gw = self.gateway(o)
        status, f, body = curl_h2(gw.port, "/h2", [("X-Request-Id", "h2-1")])
        self.assertEqual(status, 200)
        self.assertEqual(f.get("x-cache"), "MISS", f)
        status, f, body2 = curl_h2(gw.port, "/h2",
                                   [("X-Request-Id", "h2-2")])
        self.assertEqual(status, 200)
        self.assertEqual(f.get("x-cache"), "HIT", f)
        self.assertIn("age", f)
        self.assertEqual(body2, body)
        self.assertEqual(o.count("/h2"), 1)
        lines = wait_until(
            lambda: (lambda ls: ls if len(ls) == 2 else None)(
                [l for l in gw.access_log() if l["path"] == "/h2"]),
            what="two log lines")
        lines.sort(key=lambda l: l["request_id"])
        self.assertEqual([(l["protocol"], l["cache"]) for l in lines],
                         [("HTTP/2", "MISS"), ("HTTP/2", "HIT")])

    def test_http2_hosts_never_share_an_answer(self):
        # The key is the target URI: over HTTP/2 its host is :authority.
        o = self.origin()
        gw = self.gateway(o)
        _, f, body_a = curl_h2(gw.port, "/auth2", [("Host", "a.example")])
        self.assertEqual(f.get("x-cache"), "MISS", f)
        _, f, body_b = curl_h2(gw.port, "/auth2", [("Host", "b.example")])
        self.assertEqual(f.get("x-cache"), "MISS",
                         "b.example got a.example's answer: %r" % f)
        self.assertNotEqual(body_a, body_b)
        self.assertEqual(o.count("/auth2"), 2)
        _, f, body = curl_h2(gw.port, "/auth2", [("Host", "a.example")])
        self.assertEqual(body, body_a)

    def test_http2_and_http1_share_one_uri(self):
        # An HTTP/1.1 fill serves an HTTP/2 client of the same URI (Host
        # and :authority name the same host), and the other way round.
        o = self.origin()
        gw = self.gateway(o)
        self.assertXCache(self.get(gw, "/auth1",
                                   [("Host", "a.example")]), "MISS")
        _, f, _ = curl_h2(gw.port, "/auth1", [("Host", "a.example")])
        self.assertEqual(f.get("x-cache"), "HIT", f)
        _, f, _ = curl_h2(gw.port, "/auth3", [("Host", "a.example")])
        self.assertEqual(f.get("x-cache"), "MISS", f)
        self.assertXCache(self.get(gw, "/auth3",
                                   [("Host", "a.example")]), "HIT")
        self.assertEqual(o.count(), 2)

    def test_http1_hosts_never_share_an_answer(self):
        o = self.origin()
        gw = self.gateway(o)
        ra = self.get(gw, "/host", [("Host", "a.example")])
        rb = self.get(gw, "/host", [("Host", "b.example")])
        self.assertXCache(ra, "MISS")
        self.assertXCache(rb, "MISS")
        self.assertNotEqual(ra.body, rb.body)
        self.assertEqual(self.get(gw, "/host", [("Host", "a.example")]).body,
                         ra.body)

    # 18 -----------------------------------------------------------------

    def test_no_fd_leaks_after_faults(self):
        def answer(req):
            p = req["path"]
            if p == "/slow":
                time.sleep(0.6)
            if p == "/cut":
                return 200, [("Cache-Control", "max-age=60")], \
                    Cut(1000, 50000)
            if p == "/sie" and req["k"] > 0:
                return 503, [], numbered(req)
            if p == "/sie":
                return 200, [("Cache-Control", "max-age=1")], numbered(req)
            return ok(req)
        o = self.origin(answer)
        dead = "http://127.0.0.1:%d" % free_port()
        gw = self.gateway(
            upstreams={"o": {"servers": [o.url], "keepalive": 2},
                       "dead": {"servers": [dead], "keepalive": 2}},
            routes=[{"path": "/dead/", "upstream": "dead",
                     "cache": {"ttl": "30s"}},
                    {"path": "/", "upstream": "o",
                     "cache": {"ttl": "30s", "stale_if_error": "30s"}}],
            cache={"lock_timeout": "300ms"})
        by = conns_on_workers(gw, 1)
        for cs in by.values():
            for c in cs:
                for _ in range(3):
                    request(gw.port, "GET", "/warm", conn=c)
                c.close()
        time.sleep(0.3)
        workers = gw.workers()
        base = {w: fd_targets(w) for w in workers}
        hostline = b"Host: 127.0.0.1:%d\r\n" % gw.port
        for i in range(3):
            # A fill whose client leaves; its waiters, some of which leave
            # too; waiters past lock_timeout.
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(b"GET /slow?%d HTTP/1.1\r\n%s\r\n" % (i, hostline))
            wait_until(lambda: o.count("/slow?%d" % i) == 1, what="fill")
            s.close()
            for _ in range(2):
                raw_exchange(gw.port, b"GET /slow?%d HTTP/1.1\r\n%s\r\n"
                             % (i, hostline), timeout=0.1)
            in_parallel([lambda: self.get(gw, "/slow?%d" % i)] * 3)
            # A body cut short, an upstream that refuses, stale-if-error.
            raw_exchange(gw.port, b"GET /cut?%d HTTP/1.1\r\n%sConnection: "
                         b"close\r\n\r\n" % (i, hostline), timeout=2)
            self.assertEqual(self.get(gw, "/dead/x%d" % i).status, 502)
            self.get(gw, "/sie")
            # Bypasses, and a client gone before a HIT is written.
            self.get(gw, "/warm", [("Cache-Control", "no-store")])
            raw_exchange(gw.port, b"GET /warm HTTP/1.1\r\n%s\r\n" % hostline,
                         timeout=0.05)
        time.sleep(1.0)
        self.assertEqual(gw.workers(), workers)
        for w in workers:
            after = fd_targets(w)
            socks = [t for t in after if t.startswith("socket:")]
            others = sorted(t for t in after if not t.startswith("socket:"))
            self.assertEqual(others, sorted(t for t in base[w]
                                            if not t.startswith("socket:")))
            base_socks = [t for t in base[w] if t.startswith("socket:")]
            # At most `keepalive` more pooled connections per upstream.
            self.assertLessEqual(len(socks), len(base_socks) + 4,
                                 (w, after))
        self.assertEqual(self.metrics()["agate_cache_waiters"], 0)
        self.assertXCache(self.get(gw, "/fresh"), "MISS")
        self.assertXCache(self.get(gw, "/fresh"), "HIT")


if __name__ == "__main__":
    main()
