"""Distributed tracing (gateway/trace/, docs/observability.md "Tracing"):
W3C Trace Context in and out, OpenTelemetry spans out -- as a client, the
upstreams and a collector see them.

Covered: a valid traceparent is kept (same trace id, agate's own span as
the upstream's parent, the client's span as the server span's parent)
and tracestate passed on; each invalid form starts a new trace; sampling
(a sampled parent is followed; a parent with flags 00 and a request
without a parent are drawn for at sample_ratio: at 0 nothing is
exported and 00 forwarded, at 1 the unsampled parent's trace is
sampled); one client
span per try with its retry number; one per fan-out call; spans of an
offload job and of a cache fill; service.name and the HTTP attributes;
trace_id in the access log; a collector that is down (requests stay
fast, the dropped counter rises); config errors.

The collector is an http.server on loopback that keeps every POSTed
OTLP/JSON body.  Tests that check that something was *not* exported send
a sampled request after it and wait for that one: one worker exports in
order, so once the later span is there, the earlier would be too.
"""

import base64
import hashlib
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time

from harness import AGATE, AgateTest, free_port, main, wait_until
# agate's HTTP/2 upstream client is checked against test_h2upstream's
# h2c server (python3-h2: importing it moves this file to the system
# python if the one running it lacks h2).
from test_h2upstream import H2Upstream

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = "00-%s-%s-01" % (TRACE, PARENT)
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Collector:
    """An OTLP/HTTP JSON collector that keeps what it is sent."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bodies = []
        col = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with col.lock:
                    col.bodies.append((self.path,
                                       self.headers.get("Content-Type"),
                                       body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/v1/traces" % self.port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def payloads(self):
        with self.lock:
            return [json.loads(b) for _, _, b in self.bodies]

    def spans(self):
        """Every span received, with its resource attributes and its own
        attributes as plain dicts."""
        out = []
        for p in self.payloads():
            for rs in p["resourceSpans"]:
                res = attrs(rs["resource"]["attributes"])
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        s = dict(s)
                        s["attrs"] = attrs(s.get("attributes", []))
                        s["resource"] = res
                        s["scope"] = ss["scope"]
                        out.append(s)
        return out

    def trace(self, trace_id):
        return [s for s in self.spans() if s["traceId"] == trace_id]


def attrs(kvs):
    d = {}
    for kv in kvs:
        v = kv["value"]
        d[kv["key"]] = int(v["intValue"]) if "intValue" in v \
            else v["stringValue"]
    return d


def fwd(headers):
    """The traceparent/tracestate fields an upstream request carried."""
    tp = [v for k, v in headers if k.lower() == "traceparent"]
    ts = [v for k, v in headers if k.lower() == "tracestate"]
    return tp, ts


class TracingTest(AgateTest):

    def setUp(self):
        super().setUp()
        self.col = Collector()
        self.addCleanup(self.col.close)

    def gw(self, routes=None, tracing=None, ups=None, admin=False,
           workers=1, **kw):
        self.up = self.upstream()
        ups = ups or {"u": {"servers": [self.up.url]}}
        routes = routes or [{"path": "/", "upstream": "u"}]
        a = self.agate(ups, routes, start=False, workers=workers)
        tr = {"sample_ratio": 1.0, "otlp": self.col.url,
              "service_name": "edge-test"}
        tr.update(tracing or {})
        a.config["tracing"] = {k: v for k, v in tr.items() if v is not None}
        if admin:
            self.admin_port = free_port()
            a.config["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        a.config.update(kw)
        a.write_config(a.config)
        a.start()
        return a

    def last_fwd(self):
        return fwd(self.up.last()["headers"])

    def wait_trace(self, trace_id, n=2, what="spans"):
        return wait_until(lambda: len(self.col.trace(trace_id)) >= n and
                          self.col.trace(trace_id), 10, what=what)

    def metric(self, name):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                       timeout=5)
        try:
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
        finally:
            c.close()
        m = re.search(r"^%s (\d+)$" % name, text, re.M)
        return int(m.group(1)) if m else None

    # -- trace context ------------------------------------------------------

    def test_valid_traceparent_is_kept_and_spans_link_up(self):
        a = self.gw()
        r = a.get("/x/y?q=1", headers={"traceparent": VALID,
                                       "tracestate": "congo=t61rcWkgMzE",
                                       "User-Agent": "trace-test/1"})
        self.assertEqual(r.status, 200)
        tp, ts = self.last_fwd()
        self.assertEqual(len(tp), 1, tp)
        m = TP_RE.match(tp[0])
        self.assertIsNotNone(m, tp)
        self.assertEqual(m.group(1), TRACE)
        self.assertNotEqual(m.group(2), PARENT)
        self.assertEqual(m.group(3), "01")
        self.assertEqual(ts, ["congo=t61rcWkgMzE"])
        spans = self.wait_trace(TRACE)
        server = [s for s in spans if s["kind"] == 2]
        client = [s for s in spans if s["kind"] == 3]
        self.assertEqual((len(server), len(client)), (1, 1), spans)
        server, client = server[0], client[0]
        self.assertEqual(server["parentSpanId"], PARENT)
        self.assertNotEqual(server["spanId"], PARENT)
        # The upstream's parent is the client span agate exported.
        self.assertEqual(client["spanId"], m.group(2))
        self.assertEqual(client["parentSpanId"], server["spanId"])
        self.assertEqual(server["name"], "GET /")
        sa = server["attrs"]
        self.assertEqual(sa["http.request.method"], "GET")
        self.assertEqual(sa["url.path"], "/x/y")
        self.assertEqual(sa["url.scheme"], "http")
        self.assertEqual(sa["http.route"], "/")
        self.assertEqual(sa["http.response.status_code"], 200)
        self.assertEqual(sa["client.address"], "127.0.0.1")
        self.assertEqual(sa["network.protocol.version"], "1.1")
        self.assertEqual(sa["user_agent.original"], "trace-test/1")
        self.assertEqual(sa["server.address"], "127.0.0.1")
        self.assertEqual(sa["agate.request_id"], r.header("X-Request-Id"))
        ca = client["attrs"]
        self.assertEqual(ca["server.address"], "127.0.0.1")
        self.assertEqual(ca["server.port"], self.up.port)
        self.assertEqual(ca["url.full"], self.up.url + "/x/y?q=1")
        self.assertEqual(ca["http.response.status_code"], 200)
        self.assertEqual(ca["agate.upstream"], "u")
        self.assertNotIn("http.request.resend_count", ca)
        self.assertNotIn("error.type", ca)
        for s in (server, client):
            self.assertEqual(s["resource"]["service.name"], "edge-test")
            self.assertIn("service.version", s["resource"])
            self.assertEqual(s["scope"]["name"], "agate")
            self.assertLessEqual(int(s["startTimeUnixNano"]),
                                 int(s["endTimeUnixNano"]))
            self.assertGreater(int(s["startTimeUnixNano"]),
                               (time.time() - 60) * 1e9)
        self.assertLessEqual(int(server["startTimeUnixNano"]),
                             int(client["startTimeUnixNano"]))
        self.assertEqual(self.col.bodies[0][0], "/v1/traces")
        self.assertEqual(self.col.bodies[0][1], "application/json")
        # The log line names the trace.
        line = wait_until(lambda: [l for l in a.access_log()
                                   if l.get("path") == "/x/y"],
                          what="the access log line")[0]
        self.assertEqual(line["trace_id"], TRACE)

    def test_each_invalid_traceparent_starts_a_new_trace(self):
        a = self.gw()
        bad = {
            "version ff": "ff-%s-%s-01" % (TRACE, PARENT),
            "zero trace id": "00-%s-%s-01" % ("0" * 32, PARENT),
            "zero parent id": "00-%s-%s-01" % (TRACE, "0" * 16),
            "upper case": "00-%s-%s-01" % (TRACE.upper(), PARENT),
            "too short": "00-%s-%s-01" % (TRACE[:-1], PARENT),
            "too long for 00": VALID + "-00",
            "wrong separator": "00_%s-%s-01" % (TRACE, PARENT),
            "not hex flags": "00-%s-%s-0x" % (TRACE, PARENT),
            "later version, junk after": "01-%s-%s-01x" % (TRACE, PARENT),
            "empty": "",
        }
        seen = set()
        for why, value in bad.items():
            r = a.get("/", headers={"traceparent": value,
                                    "tracestate": "k=v"})
            self.assertEqual(r.status, 200, why)
            tp, ts = self.last_fwd()
            self.assertEqual(len(tp), 1, (why, tp))
            m = TP_RE.match(tp[0])
            self.assertIsNotNone(m, (why, tp))
            self.assertNotEqual(m.group(1), TRACE, why)
            self.assertNotEqual(m.group(1), "0" * 32, why)
            self.assertNotIn(m.group(1), seen, why)
            seen.add(m.group(1))
            self.assertEqual(m.group(3), "01", why)   # sample_ratio 1.0
            self.assertEqual(ts, [], why)   # no valid parent: no state
            spans = self.wait_trace(m.group(1), what="spans of " + why)
            server = [s for s in spans if s["kind"] == 2][0]
            self.assertNotIn("parentSpanId", server, why)
        # A later version is read as 00 when what follows is "-...".
        r = a.get("/", headers={"traceparent": "cc-%s-%s-01-what-ever"
                                % (TRACE, PARENT)})
        self.assertEqual(TP_RE.match(self.last_fwd()[0][0]).group(1), TRACE)
        # Two traceparent fields: neither is followed.
        r = a.raw(("GET / HTTP/1.1\r\nHost: t\r\ntraceparent: %s\r\n"
                   "traceparent: %s\r\nConnection: close\r\n\r\n"
                   % (VALID, VALID)).encode())
        self.assertTrue(r.startswith(b"HTTP/1.1 200 "), r[:100])
        tp = self.last_fwd()[0]
        self.assertEqual(len(tp), 1, tp)
        self.assertNotEqual(TP_RE.match(tp[0]).group(1), TRACE)
        # Without any traceparent: a new trace too.
        a.get("/")
        m = TP_RE.match(self.last_fwd()[0][0])
        self.assertNotIn(m.group(1), seen | {TRACE})

    def test_unsampled_parent_at_ratio_0_exports_nothing_forwards_00(self):
        a = self.gw(tracing={"sample_ratio": 0})
        quiet = "11111111111111111111111111111111"
        r = a.get("/", headers={"traceparent": "00-%s-%s-00" % (quiet,
                                                               PARENT)})
        self.assertEqual(r.status, 200)
        tp, _ = self.last_fwd()
        m = TP_RE.match(tp[0])
        self.assertEqual((m.group(1), m.group(3)), (quiet, "00"))
        self.assertNotEqual(m.group(2), PARENT)
        a.get("/", headers={"traceparent": VALID})
        self.wait_trace(TRACE)
        self.assertEqual(self.col.trace(quiet), [])
        wait_until(lambda: quiet in [l.get("trace_id")
                                     for l in a.access_log()],
                   what="the unsampled request's trace_id in the log")

    def test_unsampled_parent_is_sampled_at_sample_ratio(self):
        # CONFIG.md: sample_ratio is "of requests that arrive without a
        # sampled parent": a parent that did not sample is drawn for,
        # and a sampled answer stays in the caller's trace.
        a = self.gw()                       # sample_ratio 1.0
        loud = "22222222222222222222222222222222"
        r = a.get("/", headers={"traceparent": "00-%s-%s-00" % (loud,
                                                               PARENT)})
        self.assertEqual(r.status, 200)
        m = TP_RE.match(self.last_fwd()[0][0])
        self.assertEqual((m.group(1), m.group(3)), (loud, "01"))
        spans = self.wait_trace(loud)
        server = [s for s in spans if s["kind"] == 2]
        self.assertEqual(len(server), 1, spans)
        self.assertEqual(server[0]["parentSpanId"], PARENT)

    def test_sample_ratio_0_exports_no_request_without_parent(self):
        a = self.gw(tracing={"sample_ratio": 0})
        ids = []
        for _ in range(20):
            self.assertEqual(a.get("/").status, 200)
            m = TP_RE.match(self.last_fwd()[0][0])
            self.assertEqual(m.group(3), "00")
            ids.append(m.group(1))
        self.assertEqual(len(set(ids)), 20)
        # A sampled parent is still followed.
        a.get("/", headers={"traceparent": VALID})
        self.wait_trace(TRACE)
        got = {s["traceId"] for s in self.col.spans()}
        self.assertEqual(got, {TRACE})

    def test_without_otlp_context_still_flows_and_is_logged(self):
        a = self.gw(tracing={"otlp": None})
        a.get("/", headers={"traceparent": VALID})
        m = TP_RE.match(self.last_fwd()[0][0])
        self.assertEqual(m.group(1), TRACE)
        line = wait_until(lambda: [l for l in a.access_log()
                                   if l["path"] == "/"],
                          what="the request's log line")[-1]
        self.assertEqual(line["trace_id"], TRACE)
        self.assertEqual(self.col.bodies, [])

    def test_no_tracing_section_passes_headers_untouched(self):
        self.up = self.upstream()
        a = self.agate({"u": {"servers": [self.up.url]}},
                       [{"path": "/", "upstream": "u"}], workers=1)
        a.get("/", headers={"traceparent": "junk", "tracestate": "a=b"})
        self.assertEqual(self.last_fwd(), (["junk"], ["a=b"]))
        line = wait_until(lambda: [l for l in a.access_log()
                                   if l["path"] == "/"],
                          what="the request's log line")[-1]
        self.assertNotIn("trace_id", line)

    # -- spans of tries, calls, jobs, fills ----------------------------------

    def test_retries_give_one_client_span_per_try(self):
        self.up = self.upstream()
        a = self.agate({"u": {"servers": [self.up.url],
                              "retry": {"attempts": 3, "backoff": "1ms"}}},
                       [{"path": "/", "upstream": "u"}], start=False,
                       workers=1)
        a.config["tracing"] = {"otlp": self.col.url}
        a.write_config(a.config)
        a.start()
        r = a.get("/?status=503", headers={"traceparent": VALID})
        self.assertEqual(r.status, 503)
        spans = self.wait_trace(TRACE, 4)
        server = [s for s in spans if s["kind"] == 2][0]
        tries = sorted((s for s in spans if s["kind"] == 3),
                       key=lambda s: int(s["startTimeUnixNano"]))
        self.assertEqual(len(tries), 3, spans)
        self.assertEqual([s["attrs"].get("http.request.resend_count", 0)
                          for s in tries], [0, 1, 2])
        for s in tries:
            self.assertEqual(s["parentSpanId"], server["spanId"])
            self.assertEqual(s["attrs"]["http.response.status_code"], 503)
            self.assertEqual(s["status"]["code"], 2)
        self.assertEqual(len({s["spanId"] for s in tries}), 3)
        self.assertEqual(server["status"]["code"], 2)
        self.assertEqual(server["resource"]["service.name"], "agate")
        # The last try's span is the parent the upstream saw last.
        self.assertEqual(TP_RE.match(self.last_fwd()[0][0]).group(2),
                         tries[-1]["spanId"])

    def test_h2c_upstream_gets_the_context_too(self):
        up = H2Upstream()
        self.addCleanup(up.stop)
        a = self.agate({"u": {"servers": [up.url]}},
                       [{"path": "/", "upstream": "u"}], start=False,
                       workers=1)
        a.config["tracing"] = {"otlp": self.col.url}
        a.write_config(a.config)
        a.start()
        r = a.get("/echo", headers={"traceparent": VALID,
                                    "tracestate": "h2=1"})
        self.assertEqual(r.status, 200, r.body)
        tp, ts = fwd([tuple(h) for h in r.json()["headers"]])
        self.assertEqual(len(tp), 1, tp)
        m = TP_RE.match(tp[0])
        self.assertEqual(m.group(1), TRACE)
        self.assertEqual(ts, ["h2=1"])
        spans = self.wait_trace(TRACE)
        client = [s for s in spans if s["kind"] == 3][0]
        self.assertEqual(client["spanId"], m.group(2))
        self.assertEqual(client["attrs"]["url.full"], up.url + "/echo")

    def test_websocket_handshake_carries_the_context(self):
        heads = []
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        self.addCleanup(srv.close)

        def serve():
            c, _ = srv.accept()
            with c:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head = buf.split(b"\r\n\r\n")[0].decode("latin-1")
                heads.append(head)
                key = re.search(r"(?im)^sec-websocket-key:\s*(\S+)",
                                head).group(1)
                acc = base64.b64encode(hashlib.sha1(
                    (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                    .encode()).digest()).decode()
                c.sendall(("HTTP/1.1 101 Switching Protocols\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %s\r\n\r\n" % acc)
                          .encode())
                c.recv(1)       # until agate closes the tunnel

        threading.Thread(target=serve, daemon=True).start()
        a = self.agate({"w": {"servers": ["http://127.0.0.1:%d" %
                                          srv.getsockname()[1]]}},
                       [{"path": "/ws/", "upstream": "w"}], start=False,
                       workers=1)
        a.config["tracing"] = {"otlp": self.col.url}
        a.write_config(a.config)
        a.start()
        s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
        with s:
            s.sendall(("GET /ws/x HTTP/1.1\r\nHost: t\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "traceparent: %s\r\ntracestate: ws=1\r\n\r\n"
                       % VALID).encode())
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 101 "))
        self.assertEqual(len(heads), 1)
        tp = re.findall(r"(?im)^traceparent:\s*(\S+)", heads[0])
        self.assertEqual(len(tp), 1, heads[0])
        m = TP_RE.match(tp[0])
        self.assertEqual(m.group(1), TRACE)
        self.assertNotEqual(m.group(2), PARENT)
        self.assertEqual(re.findall(r"(?im)^tracestate:\s*(\S+)",
                                    heads[0]), ["ws=1"])
        spans = self.wait_trace(TRACE)
        client = [s for s in spans if s["kind"] == 3][0]
        self.assertEqual(client["spanId"], m.group(2))
        self.assertEqual(client["attrs"]["http.response.status_code"], 101)

    def test_connect_failure_span_has_error_type(self):
        dead = "http://127.0.0.1:%d" % free_port()
        a = self.gw(ups={"u": {"servers": [dead],
                               "retry": {"attempts": 1}}})
        r = a.get("/", headers={"traceparent": VALID})
        self.assertEqual(r.status, 502)
        spans = self.wait_trace(TRACE)
        client = [s for s in spans if s["kind"] == 3][0]
        self.assertEqual(client["attrs"]["error.type"], "connect_failure")
        self.assertEqual(client["status"]["code"], 2)

    def test_fanout_calls_are_child_spans(self):
        self.up = self.upstream()
        up2 = self.upstream("b")
        a = self.agate({"u": {"servers": [self.up.url]},
                        "v": {"servers": [up2.url]}},
                       [{"path": "/f", "fanout": {
                           "mode": "all", "timeout": "3s",
                           "calls": {"one": {"upstream": "u",
                                             "path": "/one"},
                                     "two": {"upstream": "v",
                                             "path": "/two"}}}}],
                       start=False, workers=1)
        a.config["tracing"] = {"otlp": self.col.url}
        a.write_config(a.config)
        a.start()
        r = a.get("/f", headers={"traceparent": VALID,
                                 "tracestate": "x=1"})
        self.assertEqual(r.status, 200, r.body)
        spans = self.wait_trace(TRACE, 3)
        server = [s for s in spans if s["kind"] == 2][0]
        calls = {s["attrs"]["agate.upstream"]: s for s in spans
                 if s["kind"] == 3}
        self.assertEqual(set(calls), {"u", "v"})
        for name, u in (("u", self.up), ("v", up2)):
            tp, ts = fwd(u.last()["headers"])
            m = TP_RE.match(tp[0])
            self.assertEqual(m.group(1), TRACE)
            self.assertEqual(m.group(2), calls[name]["spanId"])
            self.assertEqual(calls[name]["parentSpanId"], server["spanId"])
            self.assertEqual(ts, ["x=1"])
        self.assertEqual(calls["u"]["attrs"]["url.full"],
                         self.up.url + "/one")

    def test_offload_job_span(self):
        from test_offload import basic, make_hash
        self.up = self.upstream()
        with open(os.path.join(self.dir, "htpasswd"), "w") as f:
            f.write("ann:%s\n" % make_hash("pw", "$6$"))
        a = self.agate({"u": {"servers": [self.up.url]}},
                       [{"path": "/", "upstream": "u",
                         "auth": {"basic": "htpasswd"}}],
                       start=False, workers=1)
        a.config["tracing"] = {"otlp": self.col.url}
        a.config["offload"] = {"processes": 1}
        a.write_config(a.config)
        a.start()
        h = basic("ann", "pw")
        h["traceparent"] = VALID
        self.assertEqual(a.get("/", headers=h).status, 200)
        spans = self.wait_trace(TRACE, 3)
        server = [s for s in spans if s["kind"] == 2][0]
        job = [s for s in spans if s["kind"] == 1]
        self.assertEqual(len(job), 1, spans)
        self.assertEqual(job[0]["name"], "offload crypt")
        self.assertEqual(job[0]["parentSpanId"], server["spanId"])
        self.assertEqual(job[0]["attrs"]["agate.job.kind"], "crypt")
        self.assertEqual(job[0]["attrs"]["agate.job.outcome"], "ok")

    def test_cache_fill_span(self):
        self.up = self.upstream()
        a = self.agate({"u": {"servers": [self.up.url]}},
                       [{"path": "/", "upstream": "u",
                         "cache": {"ttl": "30s"}}],
                       start=False, workers=1)
        a.config["tracing"] = {"otlp": self.col.url}
        a.config["cache"] = {"memory": "8m"}
        a.write_config(a.config)
        a.start()
        self.assertEqual(a.get("/c?size=10",
                               headers={"traceparent": VALID}).status, 200)
        spans = self.wait_trace(TRACE, 3)
        server = [s for s in spans if s["kind"] == 2][0]
        fill = [s for s in spans if s["kind"] == 1]
        self.assertEqual(len(fill), 1, spans)
        self.assertEqual(fill[0]["name"], "cache fill")
        self.assertEqual(fill[0]["parentSpanId"], server["spanId"])
        self.assertEqual(fill[0]["attrs"]["agate.cache.fill"], "stored")
        client = [s for s in spans if s["kind"] == 3][0]
        self.assertEqual(client["parentSpanId"], fill[0]["spanId"])
        tp = TP_RE.match(self.last_fwd()[0][0])
        self.assertEqual(tp.group(2), client["spanId"])

    # -- the exporter ---------------------------------------------------------

    def test_collector_down_drops_and_counts_without_slowing_requests(self):
        dead = "http://127.0.0.1:%d/v1/traces" % free_port()
        a = self.gw(tracing={"otlp": dead}, admin=True)
        t0 = time.monotonic()
        for _ in range(50):
            self.assertEqual(a.get("/").status, 200)
        self.assertLess(time.monotonic() - t0, 5)
        wait_until(lambda: (self.metric("agate_tracing_spans_dropped_total")
                            or 0) >= 100, 10, what="dropped spans counted")
        self.assertGreaterEqual(
            self.metric("agate_tracing_exports_failed_total"), 1)
        self.assertEqual(self.metric("agate_tracing_spans_exported_total"), 0)

    def test_collector_that_never_answers_costs_spans_not_latency(self):
        # Takes the POSTs' connections and reads nothing: each export
        # waits for its 5 s timeout, and two are the most in flight.
        mute = socket.socket()
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        self.addCleanup(mute.close)
        url = "http://127.0.0.1:%d/v1/traces" % mute.getsockname()[1]
        a = self.gw(tracing={"otlp": url}, admin=True)
        c = a.conn()
        t0 = time.monotonic()
        for _ in range(300):
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()
        self.assertLess(time.monotonic() - t0, 5)
        wait_until(lambda: (self.metric("agate_tracing_exports_failed_total")
                            or 0) >= 1, 10, what="an export timed out")
        self.assertGreaterEqual(
            self.metric("agate_tracing_spans_dropped_total"), 1)
        self.assertEqual(self.metric("agate_tracing_spans_exported_total"), 0)

    def test_exported_counter_and_last_flush_at_stop(self):
        a = self.gw(admin=True)
        for _ in range(5):
            a.get("/")
        # The health checks of the start are requests too (a server span
        # each): the counter says what the collector got.
        wait_until(lambda: len(self.col.spans()) >= 10 and
                   self.metric("agate_tracing_spans_exported_total") ==
                   len(self.col.spans()), 10, what="spans exported, counted")
        self.assertEqual(self.metric("agate_tracing_spans_dropped_total"), 0)
        # Spans still queued when the worker stops go out in its last
        # flush (the batch timer is 1 s: stop at once after the request).
        a.get("/", headers={"traceparent": VALID})
        a.stop(timeout=10)
        self.assertEqual(len(self.col.trace(TRACE)), 2)

    # -- config ---------------------------------------------------------------

    def test_bad_tracing_config_is_refused_with_its_place(self):
        cases = [
            ("sample_ratio: 1.5", "sample_ratio: expected a number 0..1"),
            ("sample_ratio: -0.1", "sample_ratio: expected a number 0..1"),
            ("sample_ratio: lots", "sample_ratio: expected a number 0..1"),
            ("otlp: ftp://x/v1/traces", "otlp: expected an http:// or "
             "https:// URL"),
            ("otlp: \"http://\"", "otlp: expected an http:// or https://"),
            ("service_name: \"\"", "service_name"),
            ("colour: blue", "colour"),
        ]
        for line, want in cases:
            path = os.path.join(self.dir, "bad.yaml")
            with open(path, "w") as f:
                f.write("server:\n  listen: [\"127.0.0.1:1\"]\n"
                        "tracing:\n  %s\n" % line)
            p = subprocess.run([AGATE, "-t", "-c", path],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 1, line)
            self.assertRegex(p.stderr, r"%s:4:\d+: .*%s" % (
                re.escape(path), re.escape(want)), line)
        with open(path, "w") as f:
            f.write("tracing:\n  sample_ratio: 0.25\n  otlp: "
                    "https://otel.example:4318/v1/traces\n"
                    "  service_name: edge\n")
        p = subprocess.run([AGATE, "-t", "-c", path], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    main()
