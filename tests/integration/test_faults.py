"""Upstream faults: each costs only the requests that touched it."""

import os
import signal
import socket
import time

import subprocess

from harness import (AGATE, Agate, AgateTest, RawUpstream, fd_targets,
                     free_port, main, parse_status, wait_until)


class FaultTest(AgateTest):

    def setUp(self):
        super().setUp()
        self.up = self.upstream("flaky")
        self.dead_port = free_port()
        self.gw = self.agate(
            upstreams={
                "flaky": {"servers": [self.up.url], "timeout": "700ms",
                          "keepalive": 2},
                "dead": {"servers": ["http://127.0.0.1:%d" % self.dead_port]},
            },
            routes=[{"path": "/f/", "upstream": "flaky"},
                    {"path": "/slowroute/", "upstream": "flaky",
                     "timeout": "300ms"},
                    {"path": "/dead/", "upstream": "dead"}],
            workers=1)

    def assert_error(self, r, status):
        self.assertEqual(r.status, status, r.body)
        body = r.json()
        self.assertEqual(body["status"], status)
        self.assertTrue(body["error"])
        self.assertEqual(body["request_id"], r.header("X-Request-Id"))
        self.assertEqual(r.header("Content-Type"), "application/json")

    def test_connection_refused_is_502(self):
        self.assert_error(self.gw.get("/dead/x"), 502)

    def test_garbage_is_502(self):
        self.assert_error(self.gw.get("/f/x?garbage=1"), 502)

    def test_close_before_answer_is_502(self):
        self.assert_error(self.gw.get("/f/x?abort=head"), 502)
        self.assert_error(self.gw.get("/f/x?abort=reset"), 502)

    def test_header_with_cr_is_502(self):
        self.assert_error(self.gw.get("/f/x?header=X-Bad:a%0Db"), 502)

    def test_close_mid_body_cuts_the_client_response(self):
        raw = self.gw.raw(b"GET /f/x?abort=mid&size=100000 HTTP/1.1\r\n"
                          b"Host: x\r\n\r\n")
        self.assertEqual(parse_status(raw), 200)
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 100000", head)
        self.assertLess(len(body), 100000)

    def test_upstream_timeout_is_504(self):
        t0 = time.monotonic()
        self.assert_error(self.gw.get("/f/x?delay=3000"), 504)
        self.assertLess(time.monotonic() - t0, 2.5)

    def test_route_timeout_is_504(self):
        t0 = time.monotonic()
        self.assert_error(self.gw.get("/slowroute/x?delay=600"), 504)
        self.assertLess(time.monotonic() - t0, 0.6)

    def test_connect_timeout_is_504(self):
        # A listener that never accepts and has a full backlog drops SYNs.
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(0)
        port = blocker.getsockname()[1]
        fillers = []
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.2)
        cfg = dict(self.gw.config)
        cfg["upstreams"] = dict(cfg["upstreams"], blackhole={
            "servers": ["http://127.0.0.1:%d" % port],
            "connect_timeout": "300ms"})
        cfg["routes"] = cfg["routes"] + [{"path": "/bh/",
                                          "upstream": "blackhole"}]
        old = set(self.gw.workers())
        self.gw.write_config(cfg)
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: self.gw.get("/bh/x").status != 404,
                   what="the reload")
        t0 = time.monotonic()
        self.assert_error(self.gw.get("/bh/x"), 504)
        self.assertLess(time.monotonic() - t0, 2)
        for f in fillers:
            f.close()
        blocker.close()
        self.assertTrue(old)

    def test_client_disconnect_aborts_the_upstream_transfer(self):
        self.up.reset()
        s = socket.create_connection(("127.0.0.1", self.gw.port))
        s.sendall(b"GET /f/x?delay=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: self.up.stats()["requests"] >= 1,
                   what="the request at the upstream")
        t0 = time.monotonic()
        s.close()
        wait_until(lambda: self.up.stats()["aborted"] >= 1, timeout=3,
                   what="the upstream to see the abort")
        self.assertLess(time.monotonic() - t0, 2)
        line = wait_until(lambda: [l for l in self.gw.access_log()
                                   if l["path"] == "/f/x"],
                          what="the access log line")[0]
        self.assertEqual(line["status"], 499)

    def test_slow_drip_client_disconnect_aborts(self):
        self.up.reset()
        s = socket.create_connection(("127.0.0.1", self.gw.port))
        s.sendall(b"GET /f/x?size=100000&chunk=100&interval=50 HTTP/1.1\r\n"
                  b"Host: x\r\n\r\n")
        s.recv(100)
        s.close()
        wait_until(lambda: self.up.stats()["aborted"] >= 1, timeout=3,
                   what="the upstream to see the abort")

    def test_no_fd_leaks_after_faults(self):
        worker = self.gw.workers()[0]
        for _ in range(3):
            self.gw.get("/f/warm")
        base = fd_targets(worker)
        for _ in range(5):
            for path in ("/dead/x", "/f/x?garbage=1", "/f/x?abort=head",
                         "/f/x?abort=mid&size=50000", "/f/x?delay=2000"):
                self.gw.raw(b"GET %s HTTP/1.1\r\nHost: x\r\n"
                            b"Connection: close\r\n\r\n" % path.encode())
            self.gw.raw(b"GET /f/x?delay=3000 HTTP/1.1\r\nHost: x\r\n\r\n",
                        timeout=0.2)
            self.gw.raw(b"GARBAGE\r\n\r\n")
        time.sleep(0.5)
        after = fd_targets(worker)
        sockets = [t for t in after if t.startswith("socket:")]
        others = sorted(t for t in after if not t.startswith("socket:"))
        self.assertEqual(others, sorted(t for t in base
                                        if not t.startswith("socket:")))
        # Listener + control socket + at most `keepalive` pooled upstreams.
        self.assertLessEqual(len(sockets), 2 + 2 + 1, after)
        self.assertEqual(self.gw.get("/f/ok").status, 200)

    def test_upstream_coming_back_is_used_again(self):
        self.assert_error(self.gw.get("/dead/x"), 502)
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.dead_port))
        srv.listen(8)
        try:
            import threading

            def serve():
                c, _ = srv.accept()
                c.recv(65536)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                c.close()
            t = threading.Thread(target=serve, daemon=True)
            t.start()
            r = self.gw.get("/dead/x")
            self.assertEqual((r.status, r.body), (200, b"ok"))
        finally:
            srv.close()


class HostileUpstreamTest(AgateTest):
    """What a broken or hostile upstream sends must not reach the client
    as-is, nor stall the worker."""

    def gateway_to(self, answer):
        self.raw_up = RawUpstream(answer)
        self.addCleanup(self.raw_up.close)
        return self.agate(upstreams={"h": {"servers": [self.raw_up.url]}},
                          routes=[{"path": "/", "upstream": "h"}], workers=1)

    def test_header_flood_is_refused_quickly(self):
        # 10000 fields in 40 KB: under the 64 KiB head limit, so only a
        # field cap keeps the filtering from going quadratic.
        gw = self.gateway_to(b"HTTP/1.1 200 OK\r\n" + b"a:\r\n" * 10000 +
                             b"Content-Length: 2\r\n\r\nok")
        t0 = time.monotonic()
        r = gw.get("/x")
        self.assertEqual(r.status, 502)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(gw.get("/healthz").status, 200)

    def test_cr_in_reason_phrase_is_not_passed_on(self):
        gw = self.gateway_to(b"HTTP/1.1 200 OK\rX-Injected: yes\r\n"
                             b"Content-Length: 2\r\n\r\nok")
        raw = gw.raw(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close"
                     b"\r\n\r\n")
        # A bare CR makes the head invalid (RFC 9112 section 2.2).
        self.assertEqual(parse_status(raw), 502, raw)
        self.assertNotIn(b"X-Injected", raw)

    def test_switching_protocols_is_502(self):
        gw = self.gateway_to(b"HTTP/1.1 101 Switching Protocols\r\n"
                             b"Upgrade: websocket\r\nConnection: Upgrade"
                             b"\r\n\r\n")
        r = gw.get("/x")
        self.assertEqual(r.status, 502)
        self.assertIn("switched protocols", r.json()["error"])

    def test_environment_proxy_is_ignored(self):
        up = self.upstream()
        cfg = Agate.default_config(free_port(), {"u": {"servers": [up.url]}},
                                   [{"path": "/", "upstream": "u"}])
        gw = self.agate(config=cfg, start=False)
        os.environ["http_proxy"] = "http://127.0.0.1:9"
        try:
            gw.start()
        finally:
            del os.environ["http_proxy"]
        r = gw.get("/via")
        self.assertEqual((r.status, r.json()["server"]), (200, "up"))


class StalledLogTest(AgateTest):

    def test_a_stalled_access_log_reader_does_not_stall_requests(self):
        up = self.upstream()
        cfg = Agate.default_config(free_port(), {"u": {"servers": [up.url]}},
                                   [{"path": "/", "upstream": "u"}],
                                   workers=1)
        cfg["log"]["access"] = "stdout"
        gw = self.agate(config=cfg, start=False)
        rfd, wfd = os.pipe()            # nobody reads rfd for a while
        self.addCleanup(os.close, rfd)
        gw.err = open(gw.error_path, "a+")
        gw.proc = subprocess.Popen([AGATE, "-c", gw.path], stdout=wfd,
                                   stderr=gw.err, cwd=gw.dir)
        os.close(wfd)
        gw.wait_ready()
        c = gw.conn(timeout=5)
        for i in range(3000):           # ~700 KB of log into a 64 KB pipe
            c.request("GET", "/r%d" % i)
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()
        data = b""
        os.set_blocking(rfd, False)
        wait_until(lambda: _drain(rfd), what="access log lines")
        self.assertEqual(gw.get("/healthz").status, 200)


def _drain(fd):
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


if __name__ == "__main__":
    main()
