"""Client-side limits and agate's own answers: 4xx with JSON bodies."""

import json
import socket
import time

from harness import AgateTest, main, parse_status, wait_until


def json_body(raw):
    return json.loads(raw.partition(b"\r\n\r\n")[2])


class LimitTest(AgateTest):

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.gw = self.agate(
            upstreams={"u": {"servers": [self.up.url]}},
            routes=[{"path": "/get/", "upstream": "u", "methods": ["GET"]},
                    {"path": "/get/", "upstream": "u", "methods": ["PUT"]},
                    {"path": "/any/", "upstream": "u"},
                    {"path": "/users/{id}", "upstream": "u"}],
            workers=1, max_body_size="1k", max_header_size="2k",
            header_timeout="600ms", idle_timeout="800ms",
            max_connections=4)
        self.up.reset()

    def assert_error(self, r, status):
        self.assertEqual(r.status, status, r.body)
        body = r.json()
        self.assertEqual(body["status"], status)
        self.assertEqual(body["request_id"], r.header("X-Request-Id"))

    def assert_upstream_untouched(self):
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_health(self):
        r = self.gw.get("/healthz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}))

    def test_no_route_is_404(self):
        self.assert_error(self.gw.get("/nowhere"), 404)
        self.assert_error(self.gw.get("/get"), 404)      # prefix needs the /
        self.assert_error(self.gw.get("/users/1/x"), 404)
        self.assert_upstream_untouched()

    def test_param_route_matches_one_segment(self):
        self.assertEqual(self.gw.get("/users/42").json()["path"], "/users/42")

    def test_wrong_method_is_405_with_allow(self):
        r = self.gw.request("POST", "/get/x", body=b"")
        self.assert_error(r, 405)
        self.assertEqual(r.header("Allow"), "GET, HEAD, PUT")
        self.assertEqual(self.gw.request("PUT", "/get/x", body=b"").status,
                         200)
        self.assertEqual(self.gw.request("HEAD", "/get/x").status, 200)

    def test_body_over_max_body_size_is_413(self):
        self.assert_error(self.gw.request("POST", "/any/x", body=b"x" * 2000),
                          413)
        self.assert_upstream_untouched()

    def test_chunked_body_over_max_body_size_is_413(self):
        raw = self.gw.raw(b"POST /any/x HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n"
                          + b"400\r\n" + b"y" * 1024 + b"\r\n"
                          + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n")
        self.assertEqual(parse_status(raw), 413)
        self.assertEqual(json_body(raw)["status"], 413)

    def test_body_at_the_limit_passes(self):
        r = self.gw.request("POST", "/any/x?echo=1", body=b"z" * 1024)
        self.assertEqual(r.json()["body_len"], 1024)

    def test_headers_over_max_header_size_are_431(self):
        r = self.gw.get("/any/x", headers={"X-Big": "b" * 3000})
        self.assert_error(r, 431)
        self.assert_upstream_untouched()

    def test_long_request_line_is_414(self):
        raw = self.gw.raw(b"GET /any/" + b"a" * 9000 + b" HTTP/1.1\r\n"
                          b"Host: x\r\n\r\n")
        self.assertEqual(parse_status(raw), 414)

    def test_malformed_requests_are_400_and_never_forwarded(self):
        cases = [
            b"GET /any/x HTTP/1.1\r\n\r\n",                       # no Host
            b"GET /any/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST /any/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /any/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Content-Length: 4\r\n\r\nabcd",
            b"GET /any/x HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            b"GET /any/x HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /any/x HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            b"GET  /any/x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /any/x HTTX/1.1\r\nHost: x\r\n\r\n",
        ]
        for raw_req in cases:
            raw = self.gw.raw(raw_req)
            self.assertEqual(parse_status(raw), 400, raw_req)
            self.assertIn(b"connection: close", raw.lower(), raw_req)
            self.assertEqual(json_body(raw)["status"], 400)
        self.assert_upstream_untouched()

    def test_other_framing_answers(self):
        raw = self.gw.raw(b"POST /any/x HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: gzip, chunked\r\n\r\n")
        self.assertEqual(parse_status(raw), 501)
        raw = self.gw.raw(b"GET /any/x HTTP/2.0\r\nHost: x\r\n\r\n")
        self.assertEqual(parse_status(raw), 505)
        raw = self.gw.raw(b"GET /any/x HTTP/1.1\r\nHost: x\r\n"
                          b"Expect: something\r\n\r\n")
        self.assertEqual(parse_status(raw), 417)
        self.assert_upstream_untouched()

    def test_slow_head_gets_408(self):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        t0 = time.monotonic()
        s.sendall(b"GET /any/x HTTP/1.1\r\n")
        for _ in range(3):
            time.sleep(0.15)
            s.sendall(b"X-Slow: 1\r\n")     # trickling does not reset it
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        self.assertEqual(parse_status(data), 408)
        self.assertLess(time.monotonic() - t0, 3)

    def test_silent_connection_is_closed_at_header_timeout(self):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        t0 = time.monotonic()
        self.assertEqual(s.recv(100), b"")
        self.assertLess(time.monotonic() - t0, 3)
        s.close()

    def test_idle_keepalive_connection_is_closed(self):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        s.sendall(b"GET /any/x HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        self.assertEqual(parse_status(first), 200)
        t0 = time.monotonic()
        rest = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            rest += b
        self.assertEqual(rest, b"")
        self.assertGreater(time.monotonic() - t0, 0.5)
        s.close()

    def test_max_connections_is_enforced(self):
        held = []
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", self.gw.port),
                                         timeout=5)
            s.sendall(b"GET /any/x HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(parse_status(s.recv(65536)), 200)
            held.append(s)
        extra = socket.create_connection(("127.0.0.1", self.gw.port),
                                         timeout=0.5)
        extra.sendall(b"GET /any/x HTTP/1.1\r\nHost: x\r\n\r\n")
        with self.assertRaises(socket.timeout):
            extra.recv(100)
        held.pop().close()
        extra.settimeout(5)
        self.assertEqual(parse_status(extra.recv(65536)), 200)
        wait_until(lambda: "max_connections (4) reached" in
                   self.gw.error_log(), what="the log line")
        for s in held + [extra]:
            s.close()


class PathTest(AgateTest):
    """Routing and the upstream see the same, normalised path."""

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.gw = self.agate(
            upstreams={"u": {"servers": [self.up.url]}},
            routes=[{"path": "/ro/", "upstream": "u", "methods": ["GET"]},
                    {"path": "/any/", "upstream": "u"},
                    {"path": "/api/users/", "upstream": "u",
                     "strip_prefix": "/api"}])

    def test_dot_segments_cannot_escape_a_route(self):
        for path in ("/any/../ro/admin", "/any/%2e%2e/ro/admin",
                     "/any/.%2E/ro/admin", "/any/./../ro/admin"):
            r = self.gw.request("POST", path, body=b"x")
            self.assertEqual(r.status, 405, path)     # /ro/ is GET only

    def test_upstream_gets_the_normalised_path(self):
        r = self.gw.get("/any//a/./b/../c/%7Ex?q=%2e%2e")
        self.assertEqual(r.json()["path"], "/any/a/c/~x")
        self.assertEqual(r.json()["query"], "q=%2e%2e")

    def test_strip_prefix_cannot_be_climbed_out_of(self):
        r = self.gw.get("/api/users/../../secret")
        self.assertEqual(r.status, 404)               # it is /secret
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_refused_paths(self):
        for path in (b"/any/a%2fb", b"/..", b"/any/../../x", b"/any/%zz",
                     b"/any/a%00"):
            raw = self.gw.raw(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
            self.assertEqual(parse_status(raw), 400, path)
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_head_is_forwarded_as_head(self):
        self.gw.request("HEAD", "/any/h")
        self.assertEqual(self.up.last()["method"], "HEAD")
        raw = self.gw.raw(b"HEAD /ro/x HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 5\r\n\r\nhello")
        self.assertEqual(parse_status(raw), 400)

    def test_long_and_custom_methods(self):
        m = "PURGE-" + "X" * 20
        r = self.gw.request(m, "/any/m", body=b"data")
        self.assertEqual(self.up.last()["method"], m)
        self.assertEqual(r.status, 200)
        raw = self.gw.raw(b"X" * 40 + b" /any/m HTTP/1.1\r\nHost: x\r\n"
                          b"\r\n")
        self.assertEqual(parse_status(raw), 501)


class HealthPathTest(AgateTest):

    def test_custom_and_disabled_health_path(self):
        up = self.upstream()
        gw = self.agate(upstreams={"u": {"servers": [up.url]}},
                        routes=[{"path": "/", "upstream": "u"}],
                        health_path="/ready")
        self.assertEqual(gw.get("/ready").json(), {"status": "ok"})
        self.assertEqual(gw.get("/healthz").json()["server"], "up")


if __name__ == "__main__":
    main()
