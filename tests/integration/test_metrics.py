"""The admin listener (gateway/metrics/admin.c, gateway/metrics/metrics.c): /metrics in
Prometheus text, /status as JSON and the status page, summed over every
worker through shared memory.

Counters are asserted exactly, with traffic spread over 2 workers (new
connection per request; both workers are checked to have served some);
they never go backwards across a reload, a worker crash or a rescale, for
routes and upstreams whose names stayed.  Gauges (connections, queue
depths, offload) and the per-worker lag histograms are checked for shape
and movement.
"""

import json
import os
import re
import signal
import socket
import time
import urllib.request

from harness import AgateTest, free_port, main, wait_until

SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} and the set of TYPE lines."""
    out, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"',
                                      m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out, types


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class AdminTest(AgateTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream("one")
        self.admin_port = free_port()
        self.gw = self.agate(
            upstreams={"one": {"servers": [self.up.url]}},
            routes=[{"path": "/one/", "upstream": "one"}],
            start=False)
        self.gw.config["admin"] = {"listen": "127.0.0.1:%d" %
                                   self.admin_port}
        self.gw.write_config(self.gw.config)
        self.gw.start()

    def admin(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" %
                                    (self.admin_port, path),
                                    timeout=10) as r:
            return r.status, r.headers, r.read()

    def metrics(self):
        status, headers, body = self.admin("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        return parse_metrics(body.decode())

    def status(self):
        return json.loads(self.admin("/status")[2])

    def spread(self, path, n):
        """n requests, each on a new connection (the kernel spreads them
        over the workers)."""
        for _ in range(n):
            self.gw.get(path)

    def served_by_both(self):
        ws = self.status()["workers"]
        self.assertEqual(len(ws), 2)
        return all(w["requests"] > 0 for w in ws)

    def test_counters_are_exact_sums_over_two_workers(self):
        self.spread("/one/a", 36)
        self.spread("/one/b?status=503", 4)
        self.spread("/nowhere", 3)
        self.spread("/healthz", 2)
        wait_until(self.served_by_both, what="both workers to serve")
        for labels, n in (({"route": "/one/", "code": "200"}, 36),
                          ({"route": "/one/", "code": "503"}, 4),
                          ({"route": "(none)", "code": "404"}, 3)):
            self.counted(("agate_requests_total",
                          frozenset(labels.items())), n)
        m, types = self.metrics()
        self.assertEqual(val(m, "agate_requests_total", route="/one/",
                             code="200"), 36)
        self.assertEqual(val(m, "agate_requests_total", route="/one/",
                             code="503"), 4)
        self.assertEqual(val(m, "agate_requests_total", route="(none)",
                             code="404"), 3)
        self.assertGreaterEqual(val(m, "agate_requests_total",
                                    route="(health)", code="200"), 2)
        srv = {"upstream": "one", "server": self.up.url}
        self.assertEqual(val(m, "agate_upstream_requests_total",
                             outcome="2xx", **srv), 36)
        self.assertEqual(val(m, "agate_upstream_requests_total",
                             outcome="5xx", **srv), 4)
        self.assertEqual(val(m, "agate_request_duration_seconds_count",
                             route="/one/"), 40)
        self.assertEqual(val(m, "agate_request_duration_seconds_bucket",
                             route="/one/", le="+Inf"), 40)
        self.assertEqual(val(m, "agate_upstream_duration_seconds_count",
                             upstream="one"), 40)
        self.assertEqual(types["agate_requests_total"], "counter")
        self.assertEqual(types["agate_request_duration_seconds"],
                         "histogram")
        self.assertEqual(types["agate_event_loop_lag_seconds"],
                         "histogram")
        self.assertEqual(val(m, "agate_workers"), 2)
        # The same numbers in /status.
        st = self.status()
        route = [r for r in st["routes"] if r["path"] == "/one/"][0]
        self.assertEqual((route["requests"], route["2xx"], route["5xx"]),
                         (40, 36, 4))
        self.assertEqual(sorted(w["pid"] for w in st["workers"]),
                         sorted(self.gw.workers()))
        self.assertEqual(st["pid"], self.gw.pid)
        # Scrapes are not traffic.
        m2, _ = self.metrics()
        self.assertEqual(val(m2, "agate_requests_total", route="/one/",
                             code="200"), 36)

    def test_buckets_are_cumulative_and_lag_is_sampled_per_worker(self):
        self.spread("/one/a?delay=30", 3)
        self.spread("/one/a", 3)
        # A request is counted as it is logged, just after its answer
        # left: the scrape may reach the other worker first.
        m = wait_until(lambda: (lambda m: m if val(
            m, "agate_request_duration_seconds_count", route="/one/") == 6
            else None)(self.metrics()[0]), what="six requests counted")
        les = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
               "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
        counts = [val(m, "agate_request_duration_seconds_bucket",
                      route="/one/", le=le) for le in les]
        self.assertEqual(counts, sorted(counts))
        self.assertEqual(counts[-1], 6)
        self.assertLessEqual(val(m, "agate_request_duration_seconds_bucket",
                                 route="/one/", le="0.025"), 3)
        self.assertGreater(val(m, "agate_request_duration_seconds_sum",
                               route="/one/"), 0.09)
        time.sleep(0.5)
        for pid in self.gw.workers():
            n1 = val(m, "agate_event_loop_lag_seconds_count",
                     worker=str(pid))
            m2, _ = self.metrics()
            n2 = val(m2, "agate_event_loop_lag_seconds_count",
                     worker=str(pid))
            self.assertGreater(n2, n1)

    def test_counters_never_go_backwards(self):
        self.spread("/one/a", 20)
        key = ("agate_requests_total",
               frozenset({"route": "/one/", "code": "200"}.items()))
        before = self.counted(key, 20)
        self.assertEqual(before[key], 20)
        # A reload that keeps /one/ and adds a route.
        cfg = json.loads(json.dumps(self.gw.config))
        cfg["routes"].append({"path": "/two/", "upstream": "one"})
        old = set(self.gw.workers())
        self.gw.write_config(cfg)
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: self.gw.get("/two/x").status == 200,
                   what="the new route")
        wait_until(lambda: not old & set(self.gw.workers()),
                   what="the old generation to leave")
        self.spread("/one/a", 5)
        m = self.counted(key, 25)
        self.assertEqual(val(m, "agate_config_reloads_total",
                             result="ok"), 1)
        # A broken file counts as failed and changes nothing else.
        self.gw.write_config("routes: [")
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: val(self.metrics()[0],
                               "agate_config_reloads_total",
                               result="failed") == 1,
                   what="the failed reload to count")
        # A worker killed: its counts stay.
        os.kill(self.gw.workers()[0], signal.SIGKILL)
        wait_until(lambda: len(self.gw.workers()) == 2 and
                   self.gw.get("/healthz").status == 200,
                   what="the respawned worker")
        self.spread("/one/a", 5)
        m = self.counted(key, 30)
        self.assertEqual(val(m, "agate_upstream_requests_total",
                             upstream="one", server=self.up.url,
                             outcome="2xx"), 31)  # + one /two/x

    def counted(self, key, n):
        """The metrics once key reads n.  A request is counted as it is
        logged, just after its answer went out: a scrape right after the
        answer may come first."""
        def check():
            m = self.metrics()[0]
            return m if m.get(key) == n else None
        try:
            return wait_until(check, timeout=5, what="%r == %d" % (key, n))
        except AssertionError:
            self.assertEqual(self.metrics()[0].get(key), n)

    def test_gauges_connections_and_breakers(self):
        socks = [socket.create_connection(("127.0.0.1", self.gw.port))
                 for _ in range(6)]
        try:
            wait_until(lambda: sum(v for (n, _), v in self.metrics()[0]
                                   .items() if n == "agate_connections")
                       >= 6, what="6 open connections")
        finally:
            for s in socks:
                s.close()
        # The scrape's own connection is the one left.
        wait_until(lambda: sum(v for (n, _), v in self.metrics()[0]
                               .items() if n == "agate_connections") == 1,
                   what="the connections to close")
        m, _ = self.metrics()
        self.assertEqual(val(m, "agate_upstream_breaker_open",
                             upstream="one", server=self.up.url), 0)
        self.assertEqual(val(m, "agate_upstream_healthy", upstream="one",
                             server=self.up.url), 1)
        self.assertEqual(val(m, "agate_upstream_queue_depth",
                             upstream="one"), 0)

    def test_admin_answers_get_only_and_names_its_paths(self):
        status, headers, body = self.admin("/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        page = body.decode()
        self.assertIn("fetch('/status'", page)
        # Self-contained: no external scripts, styles or images.
        self.assertIsNone(re.search(r'(src|href)="(https?:)?//', page))
        for path, code in (("/nope", 404),):
            try:
                self.admin(path)
                self.fail("expected %d" % code)
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, code)
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" %
                                     self.admin_port, method="POST",
                                     data=b"x")
        try:
            urllib.request.urlopen(req, timeout=10)
            self.fail("POST accepted")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 405)
        # The admin port is not the traffic port, nor the other way.
        self.assertEqual(self.gw.get("/metrics").status, 404)


class UpstreamMetricsTest(AgateTest):
    def test_retries_failures_breakers_and_offload_jobs(self):
        up = self.upstream("live")
        dead = "http://127.0.0.1:%d" % free_port()
        admin_port = free_port()
        with open(os.path.join(self.dir, "htpasswd"), "w") as f:
            f.write("ann:$6$Nts/4p.CG8wYZg8c$b157qzFo9xLrUE5TIi.6J19xgFbYOCy"
                    "zxhL6rhjBeKJrpsovxYuBZJoME5rGUMlaWUe2S72EfNa4KyRgVgEL"
                    "F1\n")                      # password: test
        gw = self.agate(
            upstreams={"pair": {"servers": [dead, up.url],
                                "balance": "round_robin",
                                "retry": {"attempts": 2, "backoff": "1ms"},
                                "circuit_breaker": {"failures": 2,
                                                    "open_for": "60s"}}},
            routes=[{"path": "/p/", "upstream": "pair"},
                    {"path": "/auth/", "upstream": "pair",
                     "auth": {"basic": "htpasswd"}}],
            start=False, workers=1)
        gw.config["admin"] = {"listen": "127.0.0.1:%d" % admin_port}
        gw.write_config(gw.config)
        gw.start()
        for _ in range(6):
            self.assertEqual(gw.get("/p/x").status, 200)
        import base64
        auth = {"Authorization": "Basic " +
                base64.b64encode(b"ann:test").decode()}
        self.assertEqual(gw.get("/auth/x", headers=auth).status, 200)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" %
                                    admin_port, timeout=10) as r:
            m, _ = parse_metrics(r.read().decode())
        failed = val(m, "agate_upstream_requests_total", upstream="pair",
                     server=dead, outcome="connect_failure")
        self.assertEqual(failed, 2)           # then the breaker opened
        self.assertEqual(val(m, "agate_upstream_retries_total",
                             upstream="pair"), 2)
        self.assertEqual(val(m, "agate_upstream_breaker_open",
                             upstream="pair", server=dead), 1)
        self.assertEqual(val(m, "agate_upstream_breaker_open",
                             upstream="pair", server=up.url), 0)
        self.assertEqual(val(m, "agate_offload_jobs_total", kind="crypt",
                             outcome="ok"), 1)
        self.assertEqual(val(m, "agate_offload_queue_depth"), 0)


class FanoutMetricsTest(AgateTest):
    def test_fanout_calls_count_as_upstream_tries(self):
        a, b = self.upstream("a"), self.upstream("b")
        admin_port = free_port()
        gw = self.agate({"a": {"servers": [a.url]},
                         "b": {"servers": [b.url]}},
                        [{"path": "/f", "fanout": {"mode": "partial",
                                                   "calls": {
                            "x": {"upstream": "a", "path": "/x"},
                            "y": {"upstream": "b",
                                  "path": "/y?status=500"}}}}],
                        start=False)
        gw.config["admin"] = {"listen": "127.0.0.1:%d" % admin_port}
        gw.write_config(gw.config)
        gw.start()
        for _ in range(3):
            self.assertEqual(gw.get("/f").status, 200)

        def scrape():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" %
                                        admin_port, timeout=10) as r:
                return parse_metrics(r.read().decode())[0]
        # A worker counts a request once its answer is written: the
        # client can have the third answer, and the admin listener
        # (maybe in the other worker) answer, a moment before.
        m = wait_until(lambda: (lambda m: m if val(
            m, "agate_requests_total", route="/f", code="200") == 3 else
            None)(scrape()), what="3 requests counted")
        self.assertEqual(val(m, "agate_upstream_requests_total",
                             upstream="a", server=a.url, outcome="2xx"), 3)
        self.assertEqual(val(m, "agate_upstream_requests_total",
                             upstream="b", server=b.url, outcome="5xx"), 3)
        self.assertEqual(val(m, "agate_requests_total", route="/f",
                             code="200"), 3)


if __name__ == "__main__":
    main()
