"""Hostile clients (docs/security.md): the framing rules test_limits.py
does not already cover, each answered with its status and nothing
forwarded; encoded dots in paths; slowloris connections by the hundred
(headers a byte at a time) closed at header_timeout while a normal client
keeps its answers within a second; a body trickle closed at the body
timeout; and no descriptor left behind.
"""

import socket
import threading
import time

from harness import (AgateTest, fd_targets, main, parse_status, wait_until)


class FramingTest(AgateTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.gw = self.agate({"u": {"servers": [self.up.url]}},
                             [{"path": "/any/", "upstream": "u"}],
                             workers=1)

    def assert_untouched(self):
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_every_framing_rule(self):
        H = b"Host: x\r\n"
        cases = [
            # bare CR, NUL, other controls in the request line or headers
            (b"GET /any/\rx HTTP/1.1\r\n" + H + b"\r\n", 400),
            (b"GET /any/\x00x HTTP/1.1\r\n" + H + b"\r\n", 400),
            (b"GET /any/x HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
            (b"GET /any/x HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
            (b"GET /any/x HTTP/1.1\r\n" + H + b"X\x7f: a\r\n\r\n", 400),
            (b"G\x01T /any/x HTTP/1.1\r\n" + H + b"\r\n", 400),
            # transfer codings other than a final chunked
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
             b"\r\n\r\n0\r\n\r\n", 400),
            # empty list elements around chunked (issue 19)
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: ,chunked\r\nX: y\r\n\r\n0\r\n\r\n",
             400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked , \r\nX: y\r\n\r\n0\r\n\r\n",
             400),
            # bad chunk sizes and extensions
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n", 400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked\r\n\r\n2;a\x01b\r\nab\r\n0\r\n\r\n",
             400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 +
             b"\r\nab\r\n", 400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 400),
            # lengths
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Content-Length: 1, 2\r\n\r\nab", 400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Content-Length: -1\r\n\r\n", 400),
            (b"POST /any/x HTTP/1.1\r\n" + H +
             b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
            # line folding, whitespace before the colon
            (b"GET /any/x HTTP/1.1\r\n" + H + b"X: a\r\n\tb\r\n\r\n", 400),
            (b"GET /any/x HTTP/1.1\r\n" + H + b"X\t: a\r\n\r\n", 400),
            # a request line over the limit
            (b"GET /any/" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n",
             414),
        ]
        body_level = [c for c in cases if b"chunked\r\n\r\n" in c[0] and
                      b"Transfer-Encoding: chunked, gzip" not in c[0] and
                      b"chunked\r\nTransfer-Encoding" not in c[0]]
        head_level = [c for c in cases if c not in body_level]
        for req, status in head_level:
            raw = self.gw.raw(req, timeout=3)
            self.assertEqual(parse_status(raw), status, req[:80])
        # Refused on the head: no upstream saw anything.
        self.assertEqual(self.up.stats()["requests"], 0)
        for req, status in body_level:
            raw = self.gw.raw(req, timeout=3)
            self.assertEqual(parse_status(raw), status, req[:80])
        # Chunked bodies are checked as they stream: an upstream may have
        # seen the head, but every such request was cut before the bad
        # bytes (nothing ambiguous was forwarded).
        st = self.up.stats()
        self.assertEqual(st["requests"], st["aborted"], st)

    def test_encoded_dots_and_slashes(self):
        for path, want in ((b"/any/%2e%2e/any/x", 200),
                           (b"/any/%2E%2E/nowhere", 404),
                           (b"/any/%2E%2E/%2e%2e/etc", 400),
                           (b"/any/..%2fany/x", 400),
                           (b"/any/%2e%2e%2f..", 400),
                           (b"/%2e%2e/%2e%2e/any/x", 400)):
            raw = self.gw.raw(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n", timeout=3)
            self.assertEqual(parse_status(raw), want, path)
        # The one that was routed reached the upstream normalised.
        last = self.up.last()
        self.assertEqual(last["path"], "/any/x")


class SlowClientTest(AgateTest):
    def test_slowloris_does_not_delay_normal_clients(self):
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u"}],
                        header_timeout="2s", workers=2)
        def sockets(w):
            return sum(1 for t in fd_targets(w) if t.startswith("socket:"))
        for _ in range(6):              # upstream connections, pooled
            self.assertEqual(gw.get("/warm").status, 200)
        before = {w: sockets(w) for w in gw.workers()}
        n, stop = 400, threading.Event()
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.setblocking(False)
            socks.append(s)
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200

        def drip():
            i = 0
            while not stop.is_set() and i < len(head):
                for s in socks:
                    try:
                        s.send(head[i:i + 1])
                    except OSError:
                        pass
                i += 1
                time.sleep(0.1)
        t = threading.Thread(target=drip, daemon=True)
        t.start()
        worst = 0.0
        t_end = time.monotonic() + 4
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            r = gw.get("/ok", timeout=5)
            worst = max(worst, time.monotonic() - t0)
            self.assertEqual(r.status, 200)
            time.sleep(0.05)
        stop.set()
        t.join(5)
        self.assertLess(worst, 1.0)
        # Every slow connection was closed by agate at header_timeout
        # (with a 408, since part of a head had come).
        closed = 0
        for s in socks:
            s.setblocking(True)
            s.settimeout(2)
            try:
                data = s.recv(4096)
                closed += data == b"" or data.startswith(b"HTTP/1.1 408")
            except OSError:
                closed += 1
            s.close()
        self.assertEqual(closed, n)
        # Back to what they were: the upstream pool may hold a couple
        # more than before (the normal client's requests), never the 400.
        wait_until(lambda: all(sockets(w) <= before[w] + 2
                               for w in gw.workers()),
                   what="sockets back to what they were")

    def test_body_trickle_is_closed_at_the_body_timeout(self):
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u"}],
                        idle_timeout="1s", workers=1)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"\r\nabc")
        t0 = time.monotonic()
        s.settimeout(10)
        raw = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                raw += chunk
        except OSError:
            pass
        waited = time.monotonic() - t0
        s.close()
        self.assertGreater(waited, 0.8)
        self.assertLess(waited, 5)
        # 408 after idle_timeout, although the upstream timeout (5 s by
        # default) is longer: the client is told, not just hung up on.
        self.assertEqual(parse_status(raw), 408, raw)
        self.assertIn(b"request body not received in time", raw)
        self.assertIn("request body not received in time", gw.error_log())
        # A body that keeps coming, slowly but within the timeout, is fine.
        self.body_within_timeout(gw)

    def test_body_stall_ends_at_the_shorter_of_the_two_timeouts(self):
        # The upstream's `timeout` covers the whole try, sending the body
        # included: when it is shorter than idle_timeout, it ends a
        # stalled body first, also with 408 (docs/configuration.md).
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url], "timeout": "1500ms"}},
                        [{"path": "/", "upstream": "u"}],
                        idle_timeout="60s", workers=1)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"\r\nabc")
        t0 = time.monotonic()
        raw = s.recv(4096)
        waited = time.monotonic() - t0
        s.close()
        self.assertEqual(parse_status(raw), 408, raw)
        self.assertGreater(waited, 1.3)
        self.assertLess(waited, 4)

    def body_within_timeout(self, gw):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"POST /b?echo=1 HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 6\r\n\r\n")
        for ch in b"abcdef":
            time.sleep(0.4)
            s.sendall(bytes([ch]))
        self.assertEqual(parse_status(s.recv(4096)), 200)
        s.close()


if __name__ == "__main__":
    main()
