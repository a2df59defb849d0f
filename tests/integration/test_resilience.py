"""Upstream policies: balancing, concurrency limits and queues, retries,
deadlines, circuit breakers, health checks, stale pooled connections,
HTTPS upstreams and bad answers -- each as a client and the upstreams see
it.

Besides testup, some tests need an upstream that keeps state between
requests (fails the first try, then answers; closes idle connections;
speaks TLS): ScriptedServer below, a small threaded HTTP/1.1 server.
"""

import hashlib
import http.client
import json
import os
import re
import signal
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from harness import (AgateTest, RawUpstream, Response, Testup, TESTUP,
                     fd_targets, free_port, main, parse_status, read_proc,
                     wait_until)


# -- helpers ----------------------------------------------------------------

class ScriptedServer:
    """A threaded HTTP/1.1 upstream whose answers a test scripts.

    answer(i, req) -> (status, body bytes, {extra headers}); i counts the
    requests from 0 and req is the recorded request: a dict with t (monotonic
    time the head arrived), method, target, headers (lower-case names),
    body.  Connections are kept alive.  Options:
      delay       seconds to wait before answering;
      idle_close  close a kept-alive connection idle this long;
      one_per_conn  answer one request per connection, then close the
                  connection, without a word, when the next request on it
                  arrives (the race of a server closing an idle connection
                  just as the proxy reuses it, made deterministic);
      ssl_ctx     serve TLS with this server context.
    """

    def __init__(self, answer=None, delay=0.0, idle_close=None,
                 one_per_conn=False, ssl_ctx=None):
        self.answer = answer or self.default_answer
        self.delay = delay
        self.idle_close = idle_close
        self.one_per_conn = one_per_conn
        self.ssl_ctx = ssl_ctx
        self.lock = threading.Lock()
        self.requests = []
        self.accepted = 0
        self.dropped = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "%s://127.0.0.1:%d" % ("https" if ssl_ctx else "http",
                                           self.port)
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def default_answer(i, req):
        return 200, json.dumps({"server": "scripted", "n": i,
                                "target": req["target"]}).encode(), {}

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._conn, args=(c,),
                             daemon=True).start()

    def _recv_until(self, c, buf, pred):
        while not pred(buf):
            d = c.recv(65536)
            if not d:
                raise EOFError
            buf += d
        return buf

    def _conn(self, c):
        try:
            c.settimeout(5)
            if self.ssl_ctx is not None:
                c = self.ssl_ctx.wrap_socket(c, server_side=True)
            buf = b""
            served = 0
            while True:
                c.settimeout(self.idle_close if served and self.idle_close
                             else 10)
                buf = self._recv_until(c, buf, lambda b: b"\r\n\r\n" in b)
                c.settimeout(10)
                if self.one_per_conn and served:
                    with self.lock:
                        self.dropped += 1
                    return
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        buf = self._recv_until(c, buf,
                                               lambda b: b"\r\n" in b)
                        size_line, _, buf = buf.partition(b"\r\n")
                        n = int(size_line.split(b";")[0], 16)
                        buf = self._recv_until(c, buf,
                                               lambda b: len(b) >= n + 2)
                        body += buf[:n]
                        buf = buf[n + 2:]
                        if n == 0:
                            break
                else:
                    n = int(headers.get("content-length", "0"))
                    buf = self._recv_until(c, buf, lambda b: len(b) >= n)
                    body, buf = buf[:n], buf[n:]
                req = {"t": time.monotonic(), "method": method,
                       "target": target, "headers": headers, "body": body}
                with self.lock:
                    i = len(self.requests)
                    self.requests.append(req)
                if self.delay:
                    time.sleep(self.delay)
                status, payload, extra = self.answer(i, req)
                out = "HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (
                    status, len(payload))
                out += "".join("%s: %s\r\n" % kv for kv in extra.items())
                c.sendall(out.encode() + b"\r\n" + payload)
                served += 1
                if headers.get("connection", "").lower() == "close":
                    return
        except (OSError, EOFError, ValueError, ssl.SSLError):
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


class PortTestup(Testup):
    """A testup on a given port (to bring a stopped server back)."""

    def __init__(self, workdir, name, port):
        self.name = name
        self.log = open(os.path.join(workdir, "testup-%s-again.log" % name),
                        "w+")
        self.proc = subprocess.Popen(
            [TESTUP, "-l", "127.0.0.1:%d" % port, "-n", name],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if "listening on 127.0.0.1:%d" % port not in line:
            self.proc.kill()
            raise RuntimeError("testup did not start: %r" % line)
        self.port = port
        self.url = "http://127.0.0.1:%d" % port


def dead_url():
    """A loopback port with nothing listening: connections are refused."""
    return "http://127.0.0.1:%d" % free_port()


def socket_worker(gw, sock, timeout=2.0):
    """The pid of the agate worker that accepted this client socket."""
    lport = sock.getsockname()[1]

    def find():
        for line in read_proc("/proc/net/tcp").splitlines()[1:]:
            f = line.split()
            if (int(f[1].rsplit(":", 1)[1], 16) == gw.port and
                    int(f[2].rsplit(":", 1)[1], 16) == lport and
                    f[9] != "0"):
                target = "socket:[%s]" % f[9]
                for w in gw.workers():
                    if target in fd_targets(w):
                        return w
        return None
    return wait_until(find, timeout, what="the worker of a connection")


def request_on_worker(gw, pid, method, path, body=None, timeout=10):
    """Opens connections until one lands on worker pid; one request on it."""
    for _ in range(80):
        c = gw.conn(timeout)
        c.connect()
        if socket_worker(gw, c.sock) == pid:
            break
        c.close()
    else:
        raise AssertionError("no connection landed on worker %d" % pid)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        c.close()


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


def in_parallel(fns, timeout=30):
    """Runs the callables at once (after a barrier); their results in
    order (an exception is returned as its value)."""
    results = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        try:
            results[i] = fns[i]()
        except Exception as e:      # noqa: BLE001 - the test looks at it
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,))
               for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


class ResilienceTest(AgateTest):
    """Common checks; each test builds its own upstreams and agate."""

    def gateway(self, upstreams, routes=None, **server):
        return self.agate(upstreams=upstreams,
                          routes=routes or [{"path": "/", "upstream": "u"}],
                          **server)

    def assert_agate_error(self, r, status, contains=None):
        """An answer agate made itself (JSON error body)."""
        self.assertEqual(r.status, status, r.body)
        self.assertEqual(r.header("Content-Type"), "application/json")
        body = r.json()
        self.assertEqual(body["status"], status)
        self.assertTrue(body["error"])
        self.assertNotIn("server", body)        # not an upstream's answer
        self.assertEqual(body["request_id"], r.header("X-Request-Id"))
        if contains:
            self.assertIn(contains, body["error"])

    def assert_upstream_answer(self, r, status, up):
        """An answer passed through from testup `up`."""
        self.assertEqual(r.status, status, r.body)
        self.assertEqual(r.header("X-Upstream"), up.name)
        self.assertEqual(r.json()["server"], up.name)

    def log_lines(self, gw, *needles):
        return [l for l in gw.error_log().splitlines()
                if all(n in l for n in needles)]

    def wait_log(self, gw, *needles, timeout=10):
        return wait_until(lambda: self.log_lines(gw, *needles), timeout,
                          what="an error log line with %r" % (needles,))

    def requests_of(self, up):
        return up.stats()["requests"]


# -- 1. balancing -----------------------------------------------------------

class BalanceTest(ResilienceTest):

    def three(self):
        return [self.upstream("s%d" % i) for i in range(3)]

    def test_round_robin_is_exact_with_one_worker(self):
        ups = self.three()
        gw = self.gateway({"u": {"servers": [u.url for u in ups],
                                 "balance": "round_robin"}}, workers=1)
        order = []
        for i in range(30):
            r = gw.get("/rr%d" % i)
            self.assertEqual(r.status, 200)
            order.append(r.header("X-Upstream"))
        self.assertEqual([self.requests_of(u) for u in ups], [10, 10, 10])
        # It walks the list: each server comes back every third request.
        for i in range(3, 30):
            self.assertEqual(order[i], order[i - 3], order)
        self.assertEqual(len(set(order[:3])), 3, order)

    def test_round_robin_with_two_workers_is_even_within_one_per_worker(self):
        ups = self.three()
        gw = self.gateway({"u": {"servers": [u.url for u in ups]}},
                          workers=2)
        for i in range(30):
            self.assertEqual(gw.get("/rr%d" % i).status, 200)
        counts = [self.requests_of(u) for u in ups]
        self.assertEqual(sum(counts), 30)
        for n in counts:
            self.assertLessEqual(abs(n - 10), 2, counts)

    def test_least_request_avoids_the_busy_server(self):
        a, b = self.upstream("a"), self.upstream("b")
        gw = self.gateway({"u": {"servers": [a.url, b.url],
                                 "balance": "least_request"}}, workers=1)
        slow = threading.Thread(target=gw.get, args=("/lr?delay=1500",))
        slow.start()
        wait_until(lambda: self.requests_of(a) + self.requests_of(b) == 1,
                   what="the slow request upstream")
        busy, free = (a, b) if self.requests_of(a) == 1 else (b, a)
        # One request in flight on `busy`: every new one goes to `free`
        # (round robin would send half of them to `busy`).
        for i in range(10):
            self.assert_upstream_answer(gw.get("/lr%d" % i), 200, free)
        slow.join(10)
        self.assertEqual(self.requests_of(busy), 1)
        # Nothing in flight: ties are broken at random, so both get some.
        a.reset()
        b.reset()
        for i in range(30):
            self.assertEqual(gw.get("/tie%d" % i).status, 200)
        counts = [self.requests_of(a), self.requests_of(b)]
        self.assertEqual(sum(counts), 30)
        self.assertGreaterEqual(min(counts), 4, counts)

    def test_least_request_with_a_slow_server_under_concurrency(self):
        fast = self.upstream("fast")
        slow = ScriptedServer(delay=0.4)
        self.addCleanup(slow.close)
        gw = self.gateway({"u": {"servers": [fast.url, slow.url],
                                 "balance": "least_request"}}, workers=1)
        until = time.monotonic() + 1.5

        def client():
            bad = 0
            c = gw.conn()
            while time.monotonic() < until:
                c.request("GET", "/c")
                r = c.getresponse()
                r.read()
                bad += r.status != 200
            c.close()
            return bad
        self.assertEqual(in_parallel([client] * 4), [0, 0, 0, 0])
        n_fast, n_slow = self.requests_of(fast), slow.count()
        # Round robin would send every other request to the slow one;
        # here it gets one only when it has no more in flight than the
        # fast one (a handful in 1.5 s at 400 ms each).
        self.assertGreaterEqual(n_fast, 40, (n_fast, n_slow))
        self.assertLessEqual(n_slow * 5, n_fast, (n_fast, n_slow))

    def test_random_spreads_and_does_not_alternate(self):
        a, b = self.upstream("a"), self.upstream("b")
        gw = self.gateway({"u": {"servers": [a.url, b.url],
                                 "balance": "random"}}, workers=1)
        order = [gw.get("/r%d" % i).header("X-Upstream") for i in range(40)]
        self.assertEqual(set(order), {"a", "b"})
        self.assertGreaterEqual(min(order.count("a"), order.count("b")), 6,
                                order)
        # Strict alternation is what round robin does with one worker.
        self.assertTrue(any(order[i] == order[i + 1] for i in range(39)),
                        order)


# -- 2. max_concurrent and the queue ----------------------------------------

class ConcurrencyTest(ResilienceTest):

    def setUp(self):
        super().setUp()
        self.up = self.upstream("u")

    def limited(self, **kw):
        u = {"servers": [self.up.url], "max_concurrent": kw.pop("mc", 2),
             "max_queue": kw.pop("mq", 2)}
        return self.gateway({"u": u}, routes=kw.pop("routes", None),
                            workers=1)

    def test_full_queue_answers_503_at_once_and_queued_requests_wait(self):
        gw = self.limited(mc=2, mq=2)

        def one(i):
            return lambda: timed(gw.get, "/q%d?delay=1000" % i)
        results = in_parallel([one(i) for i in range(6)])
        for r in results:
            self.assertIsInstance(r, tuple, r)
        refused = [(r, t) for r, t in results if r.status == 503]
        served = [(r, t) for r, t in results if r.status == 200]
        self.assertEqual((len(refused), len(served)), (2, 4), results)
        for r, t in refused:
            self.assert_agate_error(r, 503)
            self.assertEqual(r.header("Retry-After"), "1")
            self.assertLess(t, 0.7, "the 503 was not at once")
        times = sorted(t for _, t in served)
        # Two ran at once; two waited for their slots.
        self.assertLess(times[1], 1.8, times)
        self.assertGreaterEqual(times[2], 1.8, times)
        self.assertLess(times[3], 6, times)
        st = self.up.stats()
        self.assertEqual(st["requests"], 4)
        # Two connections from agate at most, plus this /_stats one.
        self.assertLessEqual(st["max_open"], 3)

    def test_queue_wait_counts_against_the_route_timeout(self):
        gw = self.limited(mc=1, mq=4, routes=[
            {"path": "/tight/", "upstream": "u", "timeout": "500ms"},
            {"path": "/", "upstream": "u"}])
        holder = threading.Thread(target=gw.get, args=("/hold?delay=2000",))
        holder.start()
        wait_until(lambda: self.requests_of(self.up) == 1,
                   what="the first request upstream")
        r, t = timed(gw.get, "/tight/x")
        self.assert_agate_error(r, 504)
        self.assertGreaterEqual(t, 0.35)
        self.assertLess(t, 1.4, "it waited for the slot, not the deadline")
        holder.join(10)
        self.assertEqual(self.requests_of(self.up), 1)  # never went upstream
        self.assertEqual(gw.get("/after").status, 200)

    def test_queue_wait_is_bounded_by_the_upstream_timeout(self):
        # No route timeout: the upstream's timeout bounds the wait.  The
        # holder keeps its slot across retries for >= 1.5 s (backoffs of
        # [0.5, 1] s each), each try well within the 600 ms timeout.
        u = {"servers": [self.up.url], "max_concurrent": 1, "max_queue": 4,
             "timeout": "600ms",
             "retry": {"attempts": 4, "backoff": "1s", "max_backoff": "1s"}}
        gw = self.gateway({"u": u}, workers=1)
        holder = threading.Thread(target=gw.get, args=("/hold?status=503",))
        holder.start()
        wait_until(lambda: self.requests_of(self.up) == 1,
                   what="the first request upstream")
        r, t = timed(gw.get, "/q")
        self.assert_agate_error(r, 504)
        self.assertGreaterEqual(t, 0.4)
        self.assertLess(t, 1.4)
        holder.join(10)
        self.assertEqual(self.requests_of(self.up), 4)  # /q never went

    def test_queued_client_that_leaves_is_dropped_from_the_queue(self):
        gw = self.limited(mc=1, mq=1)
        holder = threading.Thread(target=gw.get, args=("/hold?delay=1500",))
        holder.start()
        wait_until(lambda: self.requests_of(self.up) == 1,
                   what="the first request upstream")
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)                 # queued
        s.close()
        time.sleep(0.3)
        # The queue has room again (max_queue 1): this one waits, not 503.
        r = gw.get("/next")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["path"], "/next")
        holder.join(10)
        time.sleep(0.2)
        self.assertEqual(self.requests_of(self.up), 2)  # /hold and /next
        line = wait_until(lambda: [l for l in gw.access_log()
                                   if l["path"] == "/gone"],
                          what="the access log line of /gone")[0]
        self.assertEqual(line["status"], 499)

    def test_slot_is_held_across_retries(self):
        u = {"servers": [self.up.url], "max_concurrent": 1, "max_queue": 0,
             "retry": {"attempts": 3, "backoff": "300ms",
                       "max_backoff": "300ms"}}
        gw = self.gateway({"u": u}, workers=1)
        t = threading.Thread(target=gw.get, args=("/f?status=503",))
        t.start()
        wait_until(lambda: self.requests_of(self.up) == 1,
                   what="the first try")
        time.sleep(0.05)                # now in the backoff wait
        self.assert_agate_error(gw.get("/other"), 503)
        t.join(10)
        self.assertEqual(self.requests_of(self.up), 3)
        self.assertEqual(gw.get("/free").status, 200)


# -- 3. retries -------------------------------------------------------------

class RetryTest(ResilienceTest):

    def setUp(self):
        super().setUp()
        self.up = self.upstream("u")

    def retrying(self, servers=None, workers=1, **retry):
        retry.setdefault("attempts", 3)
        retry.setdefault("backoff", "10ms")
        return self.gateway({"u": {"servers": servers or [self.up.url],
                                   "retry": retry}}, workers=workers)

    def test_retried_status_ends_with_the_upstreams_last_answer(self):
        gw = self.retrying()
        r = gw.get("/s?status=503", headers={"X-Request-Id": "r503"})
        self.assert_upstream_answer(r, 503, self.up)
        self.assertEqual(self.requests_of(self.up), 3)
        line = wait_until(lambda: [l for l in gw.access_log()
                                   if l["request_id"] == "r503"],
                          what="the access log line")[0]
        self.assertEqual((line["status"], line["tries"]), (503, 3))
        self.wait_log(gw, "retry: upstream u: GET /s:", "answered 503",
                      "try 3 of 3")

    def test_next_try_goes_to_another_server(self):
        gw = self.retrying(servers=[dead_url(), self.up.url], attempts=2,
                           workers=2)
        for i in range(20):
            r = gw.get("/d%d" % i, headers={"X-Request-Id": "d%d" % i})
            self.assert_upstream_answer(r, 200, self.up)
        self.assertEqual(self.requests_of(self.up), 20)
        lines = wait_until(lambda: (lambda l: l if len(l) == 20 else None)(
            [l for l in gw.access_log() if l["path"].startswith("/d")]),
            what="20 access log lines")
        self.assertTrue([l for l in lines if l["tries"] == 2], lines)
        for l in lines:
            self.assertEqual(l["upstream"], self.up.url)

    def test_post_is_not_retried(self):
        gw = self.retrying()
        r = gw.request("POST", "/p?status=503", body=b"x")
        self.assert_upstream_answer(r, 503, self.up)
        self.assertEqual(self.requests_of(self.up), 1)
        gw2 = self.retrying(servers=[dead_url()])
        self.assert_agate_error(gw2.request(
            "POST", "/p", body=b"x", headers={"X-Request-Id": "post-dead"}),
            502)
        line = wait_until(lambda: [l for l in gw2.access_log()
                                   if l["request_id"] == "post-dead"],
                          what="the access log line")
        self.assertEqual(line[0]["tries"], 1)

    def test_post_is_retried_when_listed(self):
        gw = self.retrying(methods=["GET", "POST"])
        r = gw.request("POST", "/p?status=503", body=b"x")
        self.assert_upstream_answer(r, 503, self.up)
        self.assertEqual(self.requests_of(self.up), 3)

    def test_put_body_is_sent_again_intact(self):
        def answer(i, req):
            if i == 0:
                return 503, b'{"try": 0}', {}
            return 200, json.dumps({
                "len": len(req["body"]),
                "sha": hashlib.sha256(req["body"]).hexdigest()}).encode(), {}
        flaky = ScriptedServer(answer)
        self.addCleanup(flaky.close)
        gw = self.retrying(servers=[flaky.url])
        data = os.urandom(300 * 1024)
        r = gw.request("PUT", "/put", body=data)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"len": len(data),
                                    "sha": hashlib.sha256(data).hexdigest()})
        self.assertEqual(flaky.count(), 2)
        for req in flaky.requests:
            self.assertEqual(req["method"], "PUT")
            self.assertEqual(req["body"], data)

    def test_put_body_reaches_the_second_server_intact(self):
        # The first server takes the whole body, then fails.
        bad = ScriptedServer(lambda i, req: (503, b"{}", {}))
        self.addCleanup(bad.close)
        gw = self.retrying(servers=[bad.url, self.up.url], attempts=2)
        data = os.urandom(100 * 1024)
        for i in range(4):
            r = gw.request("PUT", "/p%d?echo=1" % i, body=data)
            self.assertEqual(r.status, 200, r.body)
            got = r.json()
            self.assertEqual(got["server"], "u")
            self.assertEqual(got["body_len"], len(data))
            self.assertEqual(got["body_sha256"],
                             hashlib.sha256(data).hexdigest())
        self.assertEqual(self.requests_of(self.up), 4)
        # Round robin sends at least every other first try to `bad`, and
        # it got each whole body before it failed.
        self.assertGreaterEqual(bad.count(), 2)
        for req in bad.requests:
            self.assertEqual(req["body"], data)

    def test_backoff_spacing(self):
        always = ScriptedServer(lambda i, req: (503, b"{}", {}))
        self.addCleanup(always.close)
        gw = self.retrying(servers=[always.url], backoff="200ms",
                           max_backoff="1s")
        r, t = timed(gw.get, "/b")
        self.assertEqual(r.status, 503)
        times = [q["t"] for q in always.requests]
        self.assertEqual(len(times), 3)
        gaps = [times[1] - times[0], times[2] - times[1]]
        # Jitter puts them in [100, 200] ms, then [200, 400] ms.
        self.assertGreaterEqual(gaps[0], 0.095, gaps)
        self.assertGreaterEqual(gaps[1], 0.195, gaps)
        self.assertLess(gaps[0], 1.0, gaps)
        self.assertLess(gaps[1], 1.5, gaps)
        self.assertGreaterEqual(t, 0.3)
        self.assertLess(t, 3.0)

    def test_max_backoff_caps_the_wait(self):
        gw = self.retrying(attempts=6, backoff="100ms", max_backoff="100ms")
        r, t = timed(gw.get, "/cap?status=503")
        self.assertEqual(r.status, 503)
        self.assertEqual(self.requests_of(self.up), 6)
        # Capped: 5 waits of at most 100 ms.  Doubling would take >= 1.55 s.
        self.assertLess(t, 1.3)

    def test_status_not_in_conditions_is_not_retried(self):
        gw = self.retrying()
        self.assert_upstream_answer(gw.get("/s?status=500"), 500, self.up)
        self.assertEqual(self.requests_of(self.up), 1)

    def test_a_listed_status_is_retried(self):
        # conditions may list any status 400-599 (docs/configuration.md).
        gw = self.retrying(conditions=[500, 429])
        self.assert_upstream_answer(gw.get("/s?status=500"), 500, self.up)
        self.assertEqual(self.requests_of(self.up), 3)
        self.up.reset()
        self.assert_upstream_answer(gw.get("/s?status=429"), 429, self.up)
        self.assertEqual(self.requests_of(self.up), 3)

    def test_conditions_replace_the_defaults(self):
        gw = self.retrying(conditions=[500])
        # First, while agate has no pooled connection: a reset on a reused
        # one is sent again once whatever the conditions (the stale
        # keep-alive rule, docs/upstreams.md).
        self.assert_agate_error(gw.get("/s?abort=reset"), 502)
        self.assertEqual(self.requests_of(self.up), 1)
        self.up.reset()
        self.assert_upstream_answer(gw.get("/s?status=503"), 503, self.up)
        self.assertEqual(self.requests_of(self.up), 1)

    def test_resets_and_closes_before_the_answer_are_retried(self):
        gw = self.retrying()
        for fault in ("abort=reset", "abort=head"):
            self.up.reset()
            self.assert_agate_error(gw.get("/f?" + fault), 502)
            self.assertEqual(self.requests_of(self.up), 3, fault)

    def test_garbage_counts_as_502(self):
        gw = self.retrying()
        self.assert_agate_error(gw.get("/g?garbage=1"), 502)
        self.assertEqual(self.requests_of(self.up), 3)
        gw2 = self.retrying(conditions=["reset", 503])
        self.up.reset()
        self.assert_agate_error(gw2.get("/g?garbage=1"), 502)
        self.assertEqual(self.requests_of(self.up), 1)

    def test_timeouts_are_retried(self):
        gw = self.gateway({"u": {"servers": [self.up.url], "timeout": "300ms",
                                 "retry": {"attempts": 2,
                                           "backoff": "10ms"}}}, workers=1)
        r, t = timed(gw.get, "/t?delay=3000")
        self.assert_agate_error(r, 504)
        self.assertEqual(self.requests_of(self.up), 2)
        self.assertGreaterEqual(t, 0.55)
        self.assertLess(t, 2.5)

    def test_response_whose_head_went_out_is_never_retried(self):
        gw = self.retrying()
        for q in ("abort=mid&size=100000", "abort=mid&size=100000&chunked=1"):
            self.up.reset()
            (raw, t) = timed(gw.raw, b"GET /m?%s HTTP/1.1\r\nHost: x\r\n\r\n"
                             % q.encode(), timeout=5)
            self.assertLess(t, 4, "the client connection was not closed")
            self.assertEqual(parse_status(raw), 200, raw[:200])
            head, _, body = raw.partition(b"\r\n\r\n")
            if b"chunked" in q.encode():
                self.assertFalse(body.endswith(b"0\r\n\r\n"))
            else:
                self.assertIn(b"Content-Length: 100000", head)
                self.assertLess(len(body), 100000)
            self.assertEqual(self.requests_of(self.up), 1, q)

    def test_retry_budget_limits_retries_of_concurrent_failures(self):
        # Default budget (20%): with 10 first tries failing at once, only
        # the three retries always allowed go out.  A long backoff keeps
        # them all in flight together.
        gw = self.retrying(attempts=2, backoff="1s", max_backoff="1s")
        results = in_parallel([lambda: gw.get("/bud?status=503")] * 10)
        for r in results:
            self.assertIsInstance(r, Response, r)
            self.assertEqual(r.status, 503)
        n = self.requests_of(self.up)
        self.assertGreaterEqual(n, 13)
        self.assertLessEqual(n, 15, "retries past the budget: %d" % n)
        self.wait_log(gw, "retry budget spent")

    def test_large_budget_allows_every_retry(self):
        gw = self.retrying(attempts=2, backoff="1s", max_backoff="1s",
                           budget="1000%")
        results = in_parallel([lambda: gw.get("/bud?status=503")] * 10)
        self.assertEqual([r.status for r in results], [503] * 10)
        self.assertEqual(self.requests_of(self.up), 20)


# -- 4. stale pooled connections --------------------------------------------

class StaleConnectionTest(ResilienceTest):

    def test_server_that_closes_idle_connections_causes_no_502(self):
        srv = ScriptedServer(idle_close=0.15)
        self.addCleanup(srv.close)
        gw = self.gateway({"u": {"servers": [srv.url]}}, workers=1)
        for i in range(6):
            r = gw.get("/i%d" % i)
            self.assertEqual(r.status, 200, r.body)
            time.sleep(0.3)
        self.assertEqual(srv.count(), 6)
        self.assertGreaterEqual(srv.accepted, 2)

    def test_reused_connection_closed_under_the_request_is_sent_again(self):
        # Each connection answers once; a request sent on it again is met
        # with a close, as when the server's idle timer fires just then.
        srv = ScriptedServer(one_per_conn=True)
        self.addCleanup(srv.close)
        gw = self.gateway({"u": {"servers": [srv.url]}}, workers=1)
        for i in range(6):
            r = gw.get("/s%d" % i)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["target"], "/s%d" % i)
        self.assertEqual(srv.count(), 6)

    def test_keepalive_timeout_drops_idle_pooled_connections(self):
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url],
                                 "keepalive_timeout": "300ms"}}, workers=1)
        # Each /_stats is a connection of its own: count agate's apart.
        for i in range(3):
            self.assertEqual(gw.get("/k%d" % i).status, 200)
        first = up.stats()["accepted"]
        self.assertEqual(first - 1, 1)              # one, reused
        time.sleep(1.0)
        self.assertEqual(gw.get("/later").status, 200)
        self.assertEqual(up.stats()["accepted"] - first - 1, 1,
                         "a connection idle 1 s was reused although "
                         "keepalive_timeout is 300ms")


# -- 5. deadlines -----------------------------------------------------------

class DeadlineTest(ResilienceTest):

    def setUp(self):
        super().setUp()
        self.up = self.upstream("u")

    def test_route_timeout_bounds_all_tries_and_waits(self):
        gw = self.gateway(
            {"u": {"servers": [self.up.url], "timeout": "300ms",
                   "retry": {"attempts": 5, "backoff": "10ms"}}},
            routes=[{"path": "/", "upstream": "u", "timeout": "1s"}],
            workers=1)
        r, t = timed(gw.get, "/slow?delay=5000")
        self.assert_agate_error(r, 504)
        self.assertGreaterEqual(t, 0.8)
        self.assertLess(t, 3.0)
        n = self.requests_of(self.up)
        # 5 tries of 300 ms would need 1.5 s.
        self.assertGreaterEqual(n, 2)
        self.assertLessEqual(n, 4)

    def test_upstream_timeout_is_per_try(self):
        gw = self.gateway(
            {"u": {"servers": [self.up.url], "timeout": "300ms",
                   "retry": {"attempts": 3, "backoff": "10ms"}}},
            workers=1)
        r, t = timed(gw.get, "/slow?delay=5000")
        self.assert_agate_error(r, 504)
        self.assertEqual(self.requests_of(self.up), 3)
        self.assertGreaterEqual(t, 0.85)
        self.assertLess(t, 3.0)

    def test_no_retry_when_the_backoff_does_not_fit_the_deadline(self):
        gw = self.gateway(
            {"u": {"servers": [self.up.url],
                   "retry": {"attempts": 3, "backoff": "2s",
                             "max_backoff": "2s"}}},
            routes=[{"path": "/", "upstream": "u", "timeout": "800ms"}],
            workers=1)
        r, t = timed(gw.get, "/x?status=503")
        self.assert_upstream_answer(r, 503, self.up)
        self.assertEqual(self.requests_of(self.up), 1)
        self.assertLess(t, 0.8)


# -- 6. circuit breakers ----------------------------------------------------

class BreakerTest(ResilienceTest):

    def test_breaker_opens_for_all_workers_then_a_trial_closes_it(self):
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url],
                                 "circuit_breaker": {"failures": 3,
                                                     "open_for": "1s"}}},
                          workers=2)
        a, b = gw.workers()
        for _ in range(3):
            self.assert_upstream_answer(
                request_on_worker(gw, a, "GET", "/f?status=503"), 503, up)
        opened = time.monotonic()
        self.wait_log(gw, "circuit opened", up.url)
        # The other worker saw no failure, yet the server is off for it too.
        for pid in (b, a):
            r, t = timed(request_on_worker, gw, pid, "GET", "/x?delay=3000")
            self.assert_agate_error(r, 503, "no server of upstream u")
            self.assertEqual(r.header("Retry-After"), "1")
            self.assertLess(t, 1.0)
        self.assertEqual(self.requests_of(up), 3)
        # After open_for, one trial; its success closes the breaker.
        time.sleep(max(0, opened + 1.2 - time.monotonic()))
        self.assert_upstream_answer(request_on_worker(gw, b, "GET", "/t"),
                                    200, up)
        self.wait_log(gw, "circuit closed", up.url)
        for pid in (a, b, a, b):
            self.assertEqual(request_on_worker(gw, pid, "GET", "/ok").status,
                             200)
        self.assertEqual(self.requests_of(up), 8)

    def test_failed_trial_opens_it_again(self):
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url],
                                 "circuit_breaker": {"failures": 2,
                                                     "open_for": "500ms"}}},
                          workers=1)
        for _ in range(2):
            self.assertEqual(gw.get("/f?status=502").status, 502)
        self.assert_agate_error(gw.get("/x"), 503)
        time.sleep(0.7)
        # The trial fails: open again at once.
        self.assert_upstream_answer(gw.get("/f?status=504"), 504, up)
        self.wait_log(gw, "trial request failed")
        self.assert_agate_error(gw.get("/x"), 503)
        self.assertEqual(self.requests_of(up), 3)
        time.sleep(0.7)
        self.assert_upstream_answer(gw.get("/ok"), 200, up)
        self.assert_upstream_answer(gw.get("/ok"), 200, up)
        self.wait_log(gw, "circuit closed")

    def test_500_and_successes_do_not_open_it(self):
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url],
                                 "circuit_breaker": {"failures": 3,
                                                     "open_for": "10s"}}},
                          workers=1)
        for q in ("status=503", "status=503", "status=200", "status=503",
                  "status=503", "status=500", "status=503", "status=503"):
            self.assertNotEqual(gw.get("/f?" + q).json().get("server"), None)
        self.assertEqual(self.requests_of(up), 8)
        self.assertFalse(self.log_lines(gw, "circuit opened"))

    def test_open_breaker_steers_traffic_to_the_other_server(self):
        up = self.upstream("u")
        dead = dead_url()
        gw = self.gateway({"u": {"servers": [dead, up.url],
                                 "circuit_breaker": {"failures": 3,
                                                     "open_for": "10s"}}},
                          workers=2)
        statuses = [gw.get("/s%d" % i).status for i in range(30)]
        # Refused connections count; the third opens it, for both workers.
        self.assertEqual(statuses.count(502), 3, statuses)
        self.assertEqual(statuses.count(200), 27, statuses)
        self.assertEqual(self.requests_of(up), 27)
        self.wait_log(gw, "circuit opened", dead)


# -- 7. active health checks ------------------------------------------------

class HealthCheckTest(ResilienceTest):

    HC = {"path": "/healthz", "interval": "200ms", "timeout": "200ms",
          "healthy": 2, "unhealthy": 2}

    def test_down_server_is_skipped_and_comes_back(self):
        a, b = self.upstream("a"), self.upstream("b")
        gw = self.gateway({"u": {"servers": [a.url, b.url],
                                 "health_check": self.HC}}, workers=2)
        port = b.port
        b.stop()
        self.ups.remove(b)
        self.wait_log(gw, "is down", b.url, timeout=5)
        for i in range(10):
            self.assert_upstream_answer(gw.get("/d%d" % i), 200, a)
        b2 = PortTestup(self.dir, "b", port)
        self.ups.append(b2)
        self.wait_log(gw, "is up", b.url, timeout=5)
        seen = {gw.get("/u%d" % i).header("X-Upstream") for i in range(10)}
        self.assertEqual(seen, {"a", "b"})

    def test_only_one_worker_probes(self):
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url],
                                 "health_check": self.HC}}, workers=2)
        time.sleep(0.3)
        up.reset()
        time.sleep(2.0)
        n = self.requests_of(up)
        # ~10 probes in 2 s at 200 ms; two probing workers would make ~20.
        self.assertGreaterEqual(n, 4)
        self.assertLessEqual(n, 14)
        last = up.last()
        self.assertEqual((last["method"], last["path"]), ("GET", "/healthz"))
        ua = {k.lower(): v for k, v in last["headers"]}.get("user-agent")
        self.assertEqual(ua, "agate-health-check")
        self.assertEqual(len(self.log_lines(gw, "health: this worker checks")),
                         1)

    def test_failing_status_marks_down(self):
        # A 2xx or 3xx passes; a 503 fails.
        def answer(i, req):
            return (503 if req["target"] == "/healthz" else 200), b"{}", {}
        sick = ScriptedServer(answer)
        self.addCleanup(sick.close)
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [sick.url, up.url],
                                 "health_check": self.HC}}, workers=1)
        self.wait_log(gw, "is down", sick.url, timeout=5)
        n = sick.count()
        for i in range(6):
            self.assert_upstream_answer(gw.get("/x%d" % i), 200, up)
        # Only probes reached it since.
        self.assertEqual([q["target"] for q in sick.requests[n:]],
                         ["/healthz"] * (sick.count() - n))

    def test_all_servers_down_is_503_at_once(self):
        gw = self.gateway({"u": {"servers": [dead_url(), dead_url()],
                                 "connect_timeout": "3s",
                                 "health_check": self.HC}}, workers=2)
        wait_until(lambda: len(self.log_lines(gw, "is down")) == 2,
                   timeout=5, what="both servers marked down")
        for _ in range(4):
            r, t = timed(gw.get, "/x")
            self.assert_agate_error(r, 503, "no server of upstream u")
            self.assertEqual(r.header("Retry-After"), "1")
            self.assertLess(t, 1.0)


    def test_a_new_worker_0_takes_the_probing_over(self):
        a, b = self.upstream("a"), self.upstream("b")
        gw = self.gateway({"u": {"servers": [a.url, b.url],
                                 "health_check": self.HC}}, workers=2)
        first = self.wait_log(gw, "health: this worker checks")[0]
        pid = int(re.search(r"worker 0\[(\d+)\]", first).group(1))
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(self.log_lines(
            gw, "health: this worker checks")) == 2, timeout=10,
            what="a respawned worker 0 probing")
        second = self.log_lines(gw, "health: this worker checks")[1]
        npid = int(re.search(r"worker 0\[(\d+)\]", second).group(1))
        self.assertNotEqual(npid, pid)
        b.stop()
        self.ups.remove(b)
        down = self.wait_log(gw, "is down", b.url, timeout=5)
        self.assertIn("worker 0[%d]" % npid, down[0])
        for i in range(6):
            self.assert_upstream_answer(gw.get("/w%d" % i), 200, a)

    def test_reload_keeps_the_state_of_kept_servers(self):
        up = self.upstream("u")
        cfg = {"u": {"servers": [up.url],
                     "circuit_breaker": {"failures": 2, "open_for": "30s"}}}
        gw = self.gateway(cfg, workers=1)
        for _ in range(2):
            self.assertEqual(gw.get("/f?status=503").status, 503)
        self.wait_log(gw, "circuit opened")
        self.assert_agate_error(gw.get("/x"), 503, "no server of upstream")
        # A reload that changes the routes: the breaker stays open.
        config = json.loads(json.dumps(gw.config))
        config["routes"].insert(0, {"path": "/other", "upstream": "u"})
        before = gw.error_log().count("reloading")
        gw.write_config(config)
        gw.signal(signal.SIGHUP)
        wait_until(lambda: gw.error_log().count("reloading") > before,
                   timeout=10, what="the reload")
        wait_until(lambda: len(gw.workers()) == 1 and
                   gw.get("/other").status == 503, timeout=15,
                   what="the new generation serving")
        n = self.requests_of(up)
        self.assert_agate_error(gw.get("/x"), 503, "no server of upstream")
        self.assertEqual(self.requests_of(up), n)


# -- 8. HTTPS upstreams -----------------------------------------------------

class HttpsTest(ResilienceTest):

    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="agate-pki-")
        p = lambda n: os.path.join(cls.pki, n)      # noqa: E731
        with open(p("ext.cnf"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                    "basicConstraints=CA:FALSE\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes"]
        cmds = [
            ["openssl", "req", "-x509"] + ec + [
                "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2",
                "-subj", "/CN=agate test CA"],
            ["openssl", "req"] + ec + [
                "-keyout", p("srv.key"), "-out", p("srv.csr"),
                "-subj", "/CN=localhost"],
            ["openssl", "x509", "-req", "-in", p("srv.csr"), "-CA",
             p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial",
             "-out", p("srv.pem"), "-days", "2", "-extfile", p("ext.cnf")],
        ]
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True, timeout=30)
        cls.ca = p("ca.pem")
        cls.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cls.ctx.load_cert_chain(p("srv.pem"), p("srv.key"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def tls_gateway(self, tls):
        self.srv = ScriptedServer(
            lambda i, req: (200, json.dumps({"tls": True,
                                             "target": req["target"]})
                            .encode(), {"Content-Type": "application/json"}),
            ssl_ctx=self.ctx)
        self.addCleanup(self.srv.close)
        u = {"servers": ["https://localhost:%d" % self.srv.port],
             # native speaks plain HTTP only: keep auto (libcurl here)
             # even when the suite forces a transport.
             "transport": "auto"}
        if tls is not None:
            u["tls"] = tls
        return self.gateway({"u": u}, workers=1)

    def test_https_with_the_ca(self):
        gw = self.tls_gateway({"ca": self.ca})
        for i in range(3):
            r = gw.get("/sec%d?q=1" % i)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json(), {"tls": True,
                                        "target": "/sec%d?q=1" % i})
        self.assertEqual(self.srv.accepted, 1)      # kept alive
        self.assertFalse(self.log_lines(gw, "tls.verify is false"))

    def test_https_without_the_ca_is_502(self):
        gw = self.tls_gateway(None)
        self.assert_agate_error(gw.get("/sec"), 502)
        self.assertEqual(self.srv.count(), 0)

    def test_https_with_verify_off_works_and_warns(self):
        gw = self.tls_gateway({"verify": False})
        r = gw.get("/sec")
        self.assertEqual((r.status, r.json()["tls"]), (200, True))
        self.wait_log(gw, "upstream u: tls.verify is false")


    def test_http2_when_the_server_offers_it(self):
        # nginx with TLS and http2: libcurl negotiates h2 through ALPN,
        # and a POST body and the answer still pass whole.
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            self.fail("nginx is needed for this test (the README's "
                      "set-up installs it)")
        d = tempfile.mkdtemp(prefix="agate-h2-")
        self.addCleanup(shutil.rmtree, d, True)
        port = free_port()
        p = lambda n: os.path.join(self.pki, n)      # noqa: E731
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""daemon off; master_process off; worker_processes 1;
pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %(d)s/body; proxy_temp_path %(d)s/proxy;
  fastcgi_temp_path %(d)s/fcgi; uwsgi_temp_path %(d)s/uwsgi;
  scgi_temp_path %(d)s/scgi;
  server {
    listen 127.0.0.1:%(port)d ssl http2;
    ssl_certificate %(cert)s; ssl_certificate_key %(key)s;
    location / {
      default_type application/json;
      return 200 '{"protocol":"$server_protocol","method":"$request_method","length":"$content_length"}';
    }
  }
}
""" % {"d": d, "port": port, "cert": p("srv.pem"), "key": p("srv.key")})
        proc = subprocess.Popen([nginx, "-c", conf, "-p", d],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

        def stop():
            proc.terminate()
            proc.wait(10)
        self.addCleanup(stop)
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port))
                   == 0, timeout=10, what="nginx listening")
        gw = self.gateway({"u": {"servers": ["https://localhost:%d" % port],
                                 "transport": "auto",
                                 "tls": {"ca": self.ca}}}, workers=1)
        r = gw.get("/h2")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["protocol"], "HTTP/2.0")
        r = gw.request("POST", "/h2", body=b"x" * 5000)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"protocol": "HTTP/2.0",
                                    "method": "POST", "length": "5000"})


# -- 9. bad upstream answers ------------------------------------------------

class BadAnswerTest(ResilienceTest):

    def test_garbage_is_502(self):
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url]}}, workers=1)
        self.assert_agate_error(gw.get("/g?garbage=1"), 502)
        self.assertEqual(gw.get("/fine").status, 200)

    def test_body_cut_short_is_never_a_complete_response(self):
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url]}}, workers=1)
        for q in ("abort=mid&size=200000",
                  "abort=mid&size=200000&chunked=1"):
            c = gw.conn(timeout=5)
            c.request("GET", "/m?" + q)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            with self.assertRaises(http.client.IncompleteRead, msg=q):
                r.read()
            c.close()
        self.assertEqual(gw.get("/fine").status, 200)

    def test_oversized_upstream_head_is_502(self):
        raw = RawUpstream(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 70 * 1024 +
                          b"\r\nContent-Length: 2\r\n\r\nok")
        self.addCleanup(raw.close)
        gw = self.gateway({"u": {"servers": [raw.url]}}, workers=1)
        r, t = timed(gw.get, "/big")
        self.assert_agate_error(r, 502)
        self.assertNotIn(b"hhhh", r.body)
        self.assertLess(t, 3)
        self.assertEqual(len(raw.heads), 1)

    def test_large_but_allowed_upstream_header_passes(self):
        raw = RawUpstream(b"HTTP/1.1 200 OK\r\nX-Large: " + b"l" * 30000 +
                          b"\r\nContent-Length: 2\r\n\r\nok")
        self.addCleanup(raw.close)
        gw = self.gateway({"u": {"servers": [raw.url]}}, workers=1)
        r = gw.get("/big")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assertEqual(r.header("X-Large"), "l" * 30000)


# -- 10. no fd leaks --------------------------------------------------------

class SlowServer:
    """Answers each request after `delay` seconds, unless the proxy
    closes the connection first; records when that happened."""

    def __init__(self, delay):
        self.delay = delay
        self.lock = threading.Lock()
        self.requests = []          # (method, time the head arrived)
        self.closed_early = []      # times the proxy gave up on us
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        with c:
            buf = b""
            try:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                with self.lock:
                    self.requests.append((buf.split(b" ", 1)[0],
                                          time.monotonic()))
                c.settimeout(self.delay)
                try:
                    if c.recv(65536) == b"":
                        with self.lock:
                            self.closed_early.append(time.monotonic())
                        return
                except socket.timeout:
                    pass
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
                          b"X-Upstream: slow\r\nConnection: close\r\n"
                          b"\r\nslow")
            except OSError:
                pass

    def close(self):
        self.sock.close()


class HedgeTest(ResilienceTest):

    def hedged(self, slow, fast):
        return self.gateway({"u": {"servers": [slow.url, fast.url]}},
                            routes=[{"path": "/", "upstream": "u",
                                     "hedge_after": "200ms"}], workers=1)

    def test_second_try_after_hedge_after_and_the_faster_wins(self):
        slow = SlowServer(1.5)
        self.addCleanup(slow.close)
        fast = self.upstream("fast")
        gw = self.hedged(slow, fast)
        hedged = 0
        # Round robin: a hedge's pick moves the position on, so once a
        # first try has gone to the slow server, every next one does.
        for i in range(4):
            r, t = timed(gw.get, "/h%d" % i)
            self.assert_upstream_answer(r, 200, fast)
            if t >= 0.15:
                hedged += 1
                self.assertLess(t, 1.0)     # not the slow answer
        self.assertGreaterEqual(hedged, 3)
        self.assertEqual(len(slow.requests), hedged)
        self.assertEqual(self.requests_of(fast), 4)
        # The access log names the server that answered, and both tries
        # of a hedged request.
        lines = wait_until(lambda: (lambda l: l if len(l) >= 4 else None)(
            [l for l in gw.access_log() if l["path"] != "/healthz"]),
            what="four access log lines")
        self.assertEqual({l.get("upstream") for l in lines}, {fast.url},
                         lines)
        self.assertEqual(sorted(l["tries"] for l in lines),
                         [1] * (4 - hedged) + [2] * hedged)
        # The losers were cancelled: their connections closed well
        # before the slow server would have answered.
        wait_until(lambda: len(slow.closed_early) == hedged, timeout=3,
                   what="the slow tries cancelled")
        for (_, started), closed in zip(slow.requests, slow.closed_early):
            self.assertLess(closed - started, 1.2)
        self.wait_log(gw, "hedge: upstream u", "also trying")

    def test_a_listed_answer_wins_when_no_retry_could_follow(self):
        # attempts: 1 (the default): the hedged try's 503 is the answer,
        # passed on as the upstream gave it, not dropped in favour of a
        # slow first try.
        slow = SlowServer(1.5)
        self.addCleanup(slow.close)
        fast = self.upstream("fast")
        gw = self.hedged(slow, fast)
        for i in range(3):
            r, t = timed(gw.get, "/l%d?status=503" % i)
            self.assertEqual(r.status, 503)
            self.assertEqual(r.header("X-Upstream"), "fast")
            self.assertLess(t, 1.0)

    def test_no_hedge_before_hedge_after(self):
        fast = self.upstream("fast")
        other = self.upstream("other")
        gw = self.hedged(other, fast)
        for i in range(4):
            self.assertEqual(gw.get("/q%d?delay=50" % i).status, 200)
        # Answers in 50 ms never trigger a second try.
        self.assertEqual(self.requests_of(fast) + self.requests_of(other), 4)
        self.assertFalse(self.log_lines(gw, "hedge:"))

    def test_post_is_not_hedged(self):
        slow = SlowServer(0.8)
        self.addCleanup(slow.close)
        fast = self.upstream("fast")
        gw = self.hedged(slow, fast)
        answers = [gw.request("POST", "/p%d" % i, body=b"x") for i in range(2)]
        self.assertEqual(sorted(a.header("X-Upstream") for a in answers),
                         ["fast", "slow"])
        self.assertEqual(self.requests_of(fast), 1)
        self.assertEqual(len(slow.requests), 1)
        self.assertFalse(self.log_lines(gw, "hedge:"))


class ReviewRegressionTest(ResilienceTest):
    """Bugs a code review found in the policy layer, kept found."""

    def test_a_body_error_when_the_free_list_of_calls_is_full(self):
        # The worker keeps up to 256 call states for reuse and frees the
        # rest.  A body error found from body_ready() ended the call and
        # then read it: freed, when other calls had filled the list
        # meanwhile (the sanitizer build of CI sees the read).
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url], "max_concurrent": 400}},
                          workers=1, max_body_size="10k")
        worker = gw.workers()[0]
        # A chunked POST whose call waits for the rest of its body...
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
        time.sleep(0.3)
        # ... while 300 others come and go: more than the list keeps.
        results = []

        def one(i):
            results.append(gw.get("/slow%d?delay=200" % i,
                                  timeout=30).status)
        threads = [threading.Thread(target=one, args=(i,))
                   for i in range(300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(results.count(200), 300)
        # Then the body passes max_body_size.
        s.sendall(b"%x\r\n" % 20000 + b"y" * 20000 + b"\r\n0\r\n\r\n")
        s.settimeout(10)
        raw = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        except OSError:
            pass
        s.close()
        self.assertEqual(parse_status(raw), 413, raw[:200])
        self.assertEqual(gw.get("/after").status, 200)
        self.assertEqual(gw.workers(), [worker])

    def test_body_error_after_a_pooled_send_does_not_crash_the_worker(self):
        # A body error found while the native transport was still sending
        # on a reused connection once made native_start() report a try
        # that had already ended: a double free and a SIGSEGV.
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url], "keepalive": 8}},
                          workers=1, max_header_size="256k",
                          max_body_size="100k")
        self.assertEqual(gw.get("/warm").status, 200)   # fills the pool
        worker = gw.workers()[0]
        body = b"x" * 150000
        req = (b"POST /p HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" +
               b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        self.assertEqual(parse_status(gw.raw(req)), 413)
        self.assertEqual(gw.get("/after").status, 200)
        self.assertEqual(gw.workers(), [worker])
        self.assertNotIn("signal", gw.error_log())

    def test_reason_phrase_survives_a_body_in_the_same_read(self):
        # The native transport once consumed the upstream head before
        # copying its reason phrase, which then pointed at body bytes.
        up = self.upstream("u")
        gw = self.gateway({"u": {"servers": [up.url]}}, workers=1)
        for q in ("chunked=1&size=10", "size=10", "size=300000&chunk=7000",
                  "chunked=1&size=300000&chunk=7000"):
            raw = gw.raw(b"GET /r?" + q.encode() +
                         b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            self.assertEqual(lines[0], b"HTTP/1.1 200 OK", q)
            self.assertIn(b"X-Upstream: u", lines, q)

    def test_a_retry_the_budget_refuses_leaves_the_body_alone(self):
        # The upstream answers 503 before it has read the body.  With the
        # budget spent there is no retry, and the body still being sent
        # must go on from where it was, not start again from its copy.
        got = {}
        lock = threading.Lock()

        def handle(c):
            buf = b""
            with c:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                target = head.split(b"\r\n")[0].split()[1]
                if target.startswith(b"/hang"):
                    with lock:
                        n = got.setdefault(target, 0)
                        got[target] = n + 1
                    if n == 0:
                        c.sendall(b"HTTP/1.1 503 X\r\n"
                                  b"Content-Length: 0\r\n\r\n")
                    time.sleep(8)       # the retry hangs
                    return
                c.sendall(b"HTTP/1.1 503 X\r\nContent-Length: 5\r\n\r\nab")
                while len(buf) < 2000:
                    d = c.recv(65536)
                    if not d:
                        break
                    buf += d
                with lock:
                    got["body"] = buf[:2000]
                    got["extra"] = buf[2000:]
                c.sendall(b"cde")
                time.sleep(0.3)

        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        self.addCleanup(srv.close)

        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=handle, args=(c,),
                                 daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()
        url = "http://127.0.0.1:%d" % srv.getsockname()[1]
        # native: it goes on sending a body after an early answer (libcurl
        # stops sending and closes), which is where the copy could leak.
        gw = self.gateway({"u": {"servers": [url], "timeout": "10s",
                                 "transport": "native",
                                 "retry": {"attempts": 3, "backoff": "1ms",
                                           "max_backoff": "2ms",
                                           "budget": "0%"}}}, workers=1)
        hangs = []
        for i in range(3):      # three retries in flight: the budget floor
            s = socket.create_connection(("127.0.0.1", gw.port))
            self.addCleanup(s.close)
            s.sendall(b"GET /hang%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            hangs.append(s)
        wait_until(lambda: len(self.log_lines(gw, "retry: upstream u")) == 3,
                   timeout=5, what="three retries in flight")
        c = socket.create_connection(("127.0.0.1", gw.port))
        self.addCleanup(c.close)
        c.sendall(b"PUT /put HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 2000\r\n\r\n" + b"A" * 1000)
        time.sleep(0.5)
        c.sendall(b"B" * 1000)
        wait_until(lambda: "body" in got, timeout=5, what="the body upstream")
        self.assertEqual(got["body"], b"A" * 1000 + b"B" * 1000)
        self.assertEqual(got["extra"], b"")
        self.wait_log(gw, "retry budget spent")


class LeakTest(ResilienceTest):

    def test_no_fd_leaks_after_policy_faults(self):
        up = self.upstream("u")
        gw = self.gateway(
            {"u": {"servers": [up.url], "keepalive": 2, "timeout": "300ms",
                   "max_concurrent": 2, "max_queue": 1,
                   "retry": {"attempts": 3, "backoff": "10ms"}},
             "mixed": {"servers": [dead_url(), up.url], "keepalive": 2,
                       "retry": {"attempts": 2, "backoff": "10ms"},
                       "circuit_breaker": {"failures": 2,
                                           "open_for": "200ms"}}},
            routes=[{"path": "/m/", "upstream": "mixed"},
                    {"path": "/", "upstream": "u"}],
            workers=1)
        worker = gw.workers()[0]
        for _ in range(3):
            gw.get("/warm")
        base = fd_targets(worker)
        for _ in range(3):
            for path in ("/s?status=503", "/r?abort=reset", "/h?abort=head",
                         "/g?garbage=1", "/t?delay=1000",
                         "/m/x", "/m/y", "/m/z?status=503"):
                gw.raw(b"GET %s HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n" % path.encode())
            gw.raw(b"GET /mid?abort=mid&size=100000 HTTP/1.1\r\n"
                   b"Host: x\r\n\r\n")
            # Queue overflow and a queued client that leaves.
            in_parallel([lambda: gw.get("/q?delay=300")] * 4)
            hold = [threading.Thread(target=gw.get, args=("/q?delay=250",))
                    for _ in range(2)]
            for t in hold:
                t.start()
            gw.raw(b"GET /left HTTP/1.1\r\nHost: x\r\n\r\n", timeout=0.1)
            for t in hold:
                t.join(10)
        time.sleep(0.5)
        after = fd_targets(worker)
        socks = [t for t in after if t.startswith("socket:")]
        others = sorted(t for t in after if not t.startswith("socket:"))
        self.assertEqual(others, sorted(t for t in base
                                        if not t.startswith("socket:")))
        base_socks = [t for t in base if t.startswith("socket:")]
        # At most `keepalive` pooled connections per upstream more.
        self.assertLessEqual(len(socks), len(base_socks) + 4, after)
        self.assertEqual(gw.get("/ok").status, 200)
        self.assertEqual(gw.get("/m/ok").status, 200)


if __name__ == "__main__":
    main()
