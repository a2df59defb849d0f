"""Proxying: methods, bodies, headers, keep-alive both ways, streaming."""

import hashlib
import os
import socket
import threading
import time

from harness import (AgateTest, main, pattern_bytes, parse_status, rss_kib,
                     wait_until)


class ProxyTest(AgateTest):

    def setUp(self):
        super().setUp()
        self.up = self.upstream("users")
        self.gw = self.agate(
            upstreams={"users": {"servers": [self.up.url], "keepalive": 8}},
            routes=[{"path": "/api/", "upstream": "users",
                     "strip_prefix": "/api"},
                    {"path": "/raw/", "upstream": "users"}],
            max_body_size="64m")

    def test_get_is_proxied_with_prefix_stripped_and_query_kept(self):
        r = self.gw.get("/api/users/42?fields=name&x=%20y")
        self.assertEqual(r.status, 200)
        body = r.json()
        self.assertEqual(body["server"], "users")
        self.assertEqual(body["method"], "GET")
        self.assertEqual(body["path"], "/users/42")
        self.assertEqual(body["query"], "fields=name&x=%20y")
        self.assertEqual(r.header("X-Upstream"), "users")

    def test_transport_in_use_is_logged(self):
        want = os.environ.get("AGATE_TEST_TRANSPORT") or "auto"
        counts = "(0 native, 0 native HTTP/2, 1 libcurl)" if want == "curl" else \
            "(1 native, 0 native HTTP/2, 0 libcurl)"
        self.assertIn("upstream users: 1 server, round_robin, transport "
                      "%s %s" % (want, counts), self.gw.error_log())

    def test_path_without_strip_prefix_is_unchanged(self):
        r = self.gw.get("/raw/a/b")
        self.assertEqual(r.json()["path"], "/raw/a/b")

    def test_request_headers_forwarded_and_hop_by_hop_dropped(self):
        r = self.gw.get("/api/h?echo=1", headers={
            "X-Custom": "v1", "Connection": "keep-alive, X-Secret",
            "X-Secret": "must-not-pass", "Keep-Alive": "timeout=5",
            "TE": "trailers", "Proxy-Authorization": "Basic eA==",
            "Upgrade": "websocket", "X-Forwarded-For": "203.0.113.9",
            "Host": "api.example"})
        self.assertEqual(r.status, 200)
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(seen["x-custom"], "v1")
        for dropped in ("x-secret", "keep-alive", "te",
                        "proxy-authorization", "upgrade"):
            self.assertNotIn(dropped, seen)
        self.assertNotIn("keep-alive", seen.get("connection", "").lower())
        # No trusted_proxies: the client's own value is replaced.
        self.assertEqual(seen["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(seen["x-forwarded-proto"], "http")
        self.assertEqual(seen["x-forwarded-host"], "api.example")
        self.assertEqual(seen["host"], "127.0.0.1:%d" % self.up.port)
        self.assertEqual(seen["x-request-id"], r.header("X-Request-Id"))
        self.assertRegex(r.header("X-Request-Id"), r"^[0-9a-f]{32}$")

    def test_client_request_id_is_kept_end_to_end(self):
        r = self.gw.get("/api/x?echo=1", headers={"X-Request-Id": "abc-123"})
        self.assertEqual(r.header("X-Request-Id"), "abc-123")
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(seen["x-request-id"], "abc-123")

    def test_response_hop_by_hop_headers_dropped(self):
        r = self.gw.get("/api/x?header=Keep-Alive:timeout%3D9"
                        "&header=X-Kept:yes&header=Connection:X-Gone"
                        "&header=X-Gone:no&header=X-Request-Id:upstream-id")
        self.assertEqual(r.header("X-Kept"), "yes")
        self.assertIsNone(r.header("Keep-Alive"))
        self.assertIsNone(r.header("X-Gone"))
        ids = [v for k, v in r.headers if k.lower() == "x-request-id"]
        self.assertEqual(len(ids), 1)
        self.assertNotEqual(ids[0], "upstream-id")

    def test_any_method_with_body(self):
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"):
            r = self.gw.request(method, "/api/m?echo=1", body=b"payload")
            self.assertEqual(r.status, 200, method)
            got = r.json()
            self.assertEqual(got["method"], method)
            self.assertEqual(got["body_len"], 7)

    def test_empty_post_sends_content_length_zero(self):
        r = self.gw.request("POST", "/api/p?echo=1", body=b"")
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(seen.get("content-length"), "0")

    def test_large_post_is_byte_exact(self):
        data = os.urandom(20 * 1024 * 1024)
        r = self.gw.request("POST", "/api/up?echo=1", body=data, timeout=60)
        self.assertEqual(r.status, 200)
        got = r.json()
        self.assertEqual(got["body_len"], len(data))
        self.assertEqual(got["body_sha256"], hashlib.sha256(data).hexdigest())

    def test_body_streams_both_ways_at_once(self):
        # The upstream echoes while it reads; a client that reads while it
        # sends (as curl does) gets every byte back through both pipes.
        data = os.urandom(20 * 1024 * 1024)
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=30)
        s.sendall(b"POST /api/up?echo=body HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(data))
        sender = threading.Thread(target=s.sendall, args=(data,))
        sender.start()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        received = [body]
        n = len(body)
        while n < len(data):
            b = s.recv(1 << 20)
            if not b:
                break
            received.append(b)
            n += len(b)
        sender.join(30)
        s.close()
        self.assertEqual(parse_status(head), 200)
        self.assertEqual(b"".join(received), data)

    def test_big_head_and_body_arrive_intact(self):
        # A head past the first (small) read buffer, and a body that makes
        # the buffer grow after the head was parsed: what the upstream and
        # the access log see must be exactly what was sent.
        big = "v" * 6000
        data = os.urandom(50000)
        r = self.gw.request("POST", "/api/grow/path?echo=1", body=data,
                            headers={"X-Big": big, "X-Request-Id": "grow-1",
                                     "X-After": "tail"})
        got = r.json()
        self.assertEqual(got["path"], "/grow/path")
        self.assertEqual(got["query"], "echo=1")
        seen = {k.lower(): v for k, v in got["headers"]}
        self.assertEqual(seen["x-big"], big)
        self.assertEqual(seen["x-after"], "tail")
        self.assertEqual(got["body_sha256"], hashlib.sha256(data).hexdigest())
        # A small head, then a body: the buffer grows after the parse and
        # the parsed head must move with it.
        r = self.gw.request("PUT", "/api/moved/head?echo=1", body=data,
                            headers={"X-Request-Id": "grow-2",
                                     "X-Small": "s"})
        got = r.json()
        self.assertEqual((got["method"], got["path"]), ("PUT", "/moved/head"))
        seen = {k.lower(): v for k, v in got["headers"]}
        self.assertEqual(seen["x-small"], "s")
        self.assertEqual(got["body_sha256"], hashlib.sha256(data).hexdigest())
        lines = wait_until(lambda: (lambda d: d if len(d) == 2 else None)(
            {l["request_id"]: l for l in self.gw.access_log()
             if l["request_id"] in ("grow-1", "grow-2")}),
            what="the access log lines")
        self.assertEqual((lines["grow-1"]["method"], lines["grow-1"]["path"]),
                         ("POST", "/api/grow/path"))
        self.assertEqual((lines["grow-2"]["method"], lines["grow-2"]["path"]),
                         ("PUT", "/api/moved/head"))

    def test_chunked_upload_is_byte_exact(self):
        data = os.urandom(3 * 1024 * 1024 + 17)

        def chunks():
            for i in range(0, len(data), 70000):
                yield data[i:i + 70000]
        # A generator body: http.client sends it chunked.
        r = self.gw.request("PUT", "/api/up?echo=1", body=chunks(),
                            timeout=60)
        self.assertEqual(r.status, 200)
        got = r.json()
        self.assertEqual(got["body_len"], len(data))
        self.assertEqual(got["body_sha256"], hashlib.sha256(data).hexdigest())
        seen = {k.lower(): v for k, v in got["headers"]}
        self.assertEqual(seen.get("transfer-encoding"), "chunked")

    def test_expect_100_continue(self):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        s.sendall(b"POST /api/e?echo=1 HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        first = s.recv(1024)
        self.assertTrue(first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"),
                        first)
        s.sendall(b"hello")
        rest = first[25:]
        while b'"body_len"' not in rest:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        s.close()
        self.assertIn(b"HTTP/1.1 200", rest)
        self.assertIn(b'"body_len":5', rest.replace(b" ", b""))

    def test_head_and_no_body_statuses(self):
        r = self.gw.request("HEAD", "/api/x?size=1000")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Length"), "1000")
        self.assertEqual(r.body, b"")
        r = self.gw.get("/api/x?status=204")
        self.assertEqual((r.status, r.body), (204, b""))
        r = self.gw.get("/api/x?status=418")
        self.assertEqual(r.status, 418)

    def test_chunked_upstream_response_reaches_client_intact(self):
        r = self.gw.get("/api/x?size=300000&chunked=1&chunk=7000")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Transfer-Encoding"), "chunked")
        self.assertEqual(r.body, pattern_bytes(300000))

    def test_http10_client_gets_close_delimited_body(self):
        raw = self.gw.raw(b"GET /api/x?size=5000&chunked=1 HTTP/1.0\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertEqual(parse_status(raw), 200)
        self.assertNotIn(b"chunked", head.lower())
        self.assertIn(b"connection: close", head.lower())
        self.assertEqual(body, pattern_bytes(5000))

    def test_keepalive_to_client_and_pooled_upstream_connections(self):
        self.up.reset()
        c = self.gw.conn()
        for i in range(50):
            c.request("GET", "/api/k%d" % i)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
        c.close()
        # 50 requests over one client connection: the worker reuses its
        # pooled upstream connection instead of opening one per request.
        self.assertLessEqual(self.up.stats()["accepted"], 2)

    def test_pipelined_requests_answered_in_order(self):
        reqs = b"".join(b"GET /api/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                        for i in range(5))
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        s.sendall(reqs)
        data = b""
        while data.count(b'"path"') < 5:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        paths = [int(p) for p in
                 __import__("re").findall(rb'"path":\s*"/p(\d)"', data)]
        self.assertEqual(paths, [0, 1, 2, 3, 4])

    def test_50mb_response_streams_without_worker_memory_growing(self):
        size = 50 * 1024 * 1024
        base = {w: rss_kib(w) for w in self.gw.workers()}
        peak = dict(base)
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=30)
        s.sendall(b"GET /api/big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        h = hashlib.sha256()
        got = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        head, _, body = head.partition(b"\r\n\r\n")
        h.update(body)
        got = len(body)
        slow_until = time.monotonic() + 1.0
        while got < size:
            b = s.recv(262144)
            if not b:
                break
            h.update(b)
            got += len(b)
            if time.monotonic() < slow_until:
                time.sleep(0.01)       # a slow reader first: backpressure
            for w in base:
                peak[w] = max(peak[w], rss_kib(w))
        s.close()
        self.assertEqual(got, size)
        self.assertEqual(h.digest(), hashlib.sha256(pattern_bytes(size))
                         .digest())
        for w in base:
            self.assertLess(peak[w] - base[w], 16 * 1024,
                            "worker %d grew from %d to %d KiB"
                            % (w, base[w], peak[w]))

    def test_access_log_line(self):
        r = self.gw.get("/api/logged?size=123",
                        headers={"X-Request-Id": "log-me"})
        self.assertEqual(r.status, 200)
        line = wait_until(lambda: [l for l in self.gw.access_log()
                                   if l["request_id"] == "log-me"],
                          what="the access log line")[0]
        self.assertRegex(line["time"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(line["client"], "127.0.0.1")
        self.assertEqual(line["method"], "GET")
        self.assertEqual(line["path"], "/api/logged")
        self.assertEqual(line["status"], 200)
        self.assertEqual(line["bytes"], 123)
        self.assertEqual(line["route"], "/api/")
        self.assertEqual(line["upstream"], self.up.url)
        self.assertEqual(line["tries"], 1)
        self.assertGreaterEqual(line["duration_ms"], 0)

    def test_concurrent_clients(self):
        errors = []

        def client(n):
            try:
                c = self.gw.conn()
                for i in range(20):
                    c.request("GET", "/api/c%d/%d?size=%d" % (n, i, 100 + i))
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 200 or body != pattern_bytes(100 + i):
                        errors.append((n, i, r.status))
                c.close()
            except Exception as e:      # noqa: BLE001 - report any failure
                errors.append((n, repr(e)))
        threads = [threading.Thread(target=client, args=(n,))
                   for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])


class TrustedProxyTest(AgateTest):

    def test_client_address_from_trusted_proxy_xff(self):
        up = self.upstream()
        gw = self.agate(upstreams={"u": {"servers": [up.url]}},
                        routes=[{"path": "/", "upstream": "u"}],
                        trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"])
        gw.get("/a", headers={"X-Forwarded-For": "198.51.100.7, 10.1.2.3",
                              "X-Request-Id": "xff-1"})
        gw.get("/b", headers={"X-Request-Id": "xff-2"})
        lines = wait_until(lambda: (lambda l: l if {"xff-1", "xff-2"} <=
            set(l) else None)({l["request_id"]: l for l in
                               gw.access_log()}),
            what="the access log lines of xff-1 and xff-2")
        self.assertEqual(lines["xff-1"]["client"], "198.51.100.7")
        self.assertEqual(lines["xff-2"]["client"], "127.0.0.1")
        # A trusted peer's X-Forwarded-For is extended, not replaced.
        r = gw.get("/c?echo=1", headers={"X-Forwarded-For": "198.51.100.7"})
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(seen["x-forwarded-for"], "198.51.100.7, 127.0.0.1")

    def test_untrusted_peer_xff_is_replaced(self):
        # trusted_proxies names others: 127.0.0.1 is not believed, so a
        # spoofed address must not reach the upstream (issue 19).
        up = self.upstream()
        gw = self.agate(upstreams={"u": {"servers": [up.url]}},
                        routes=[{"path": "/", "upstream": "u"}],
                        trusted_proxies=["10.0.0.0/8"])
        r = gw.get("/d?echo=1", headers={"X-Forwarded-For": "1.2.3.4",
                                         "X-Request-Id": "xff-3"})
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(seen["x-forwarded-for"], "127.0.0.1")
        line = wait_until(lambda: [l for l in gw.access_log()
                                   if l["request_id"] == "xff-3"],
                          what="the access log line")[0]
        self.assertEqual(line["client"], "127.0.0.1")


class ProxyProtocolTest(AgateTest):

    def test_proxy_protocol_v1_and_v2_set_the_client(self):
        up = self.upstream()
        port = __import__("harness").free_port()
        cfg = {"server": {"workers": 1, "listen": [
                   {"address": "127.0.0.1:%d" % port,
                    "proxy_protocol": True}]},
               "log": {"access": "access.log"},
               "upstreams": {"u": {"servers": [up.url]}},
               "routes": [{"path": "/", "upstream": "u"}]}
        gw = self.agate(config=cfg, start=False)
        gw.start(wait=False)
        v1 = (b"PROXY TCP4 192.0.2.10 192.0.2.1 5555 80\r\n"
              b"GET /v1?echo=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"\r\n")
        raw = wait_until(lambda: _try(lambda: gw.raw(v1)),
                         what="agate to answer")
        self.assertEqual(parse_status(raw), 200)
        self.assertIn(b"192.0.2.10", raw)       # in X-Forwarded-For
        v2 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
              + bytes([198, 51, 100, 5, 192, 0, 2, 1, 0x15, 0xb3, 0, 80])
              + b"GET /v2?echo=1 HTTP/1.1\r\nHost: x\r\n"
              b"Connection: close\r\n\r\n")
        raw = gw.raw(v2)
        self.assertEqual(parse_status(raw), 200)
        self.assertIn(b"198.51.100.5", raw)
        bad = gw.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(bad, b"")              # no header: dropped


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


if __name__ == "__main__":
    main()
