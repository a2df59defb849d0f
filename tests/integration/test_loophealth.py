"""Event-loop health: log.slow_callback, the per-worker numbers of /status
(in_flight, loop_lag_p99_ms, slow_callbacks) and `agate -s status`.

A slow callback on demand comes from the test build (agate-test): GET
/_agate_test/busy/MS spins MS ms on the worker's loop inside the callback
that read the request.  With one worker, a request to the admin listener
after it is served after that callback has ended, so what /metrics and
/status say then is settled: no waiting on timing.
"""

import datetime
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time

from harness import (AGATE, AGATE_TEST, SLOW, VALGRIND, AgateTest,
                     free_port, main, wait_until)

SLOW_LINE = re.compile(r"^(\S+) \[warn\] worker 0\[\d+\]: worker: slow "
                       r"callback: (\w+) took (\d+) ms \(log.slow_callback "
                       r"is (\d+) ms\)(.*)$", re.M)
HELD_LINE = re.compile(r"^(\S+) \[warn\] worker 0\[\d+\]: worker: (\d+) more "
                       r"slow callbacks? in the last ([\d.]+) s, not logged "
                       r"one by one \(the longest: (\w+), (\d+) ms\)$", re.M)


def stamp(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def run(*args, timeout=20):
    p = subprocess.run([AGATE] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class LoopHealthTest(AgateTest):

    def gateway(self, slow_callback=None, workers=1, admin=True,
                upstream=None):
        routes, ups = [], {}
        if upstream is not None:
            ups = {"up": {"servers": [upstream.url]}}
            routes = [{"path": "/api/", "upstream": "up"}]
        gw = self.agate(ups, routes, start=False, binary=AGATE_TEST,
                        workers=workers)
        if slow_callback is not None:
            gw.config["log"]["slow_callback"] = slow_callback
        if admin:
            self.admin_port = free_port()
            gw.config["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        gw.write_config(gw.config)
        gw.start()
        return gw

    def admin(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                       timeout=10 * SLOW)
        try:
            c.request("GET", path)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            return r.read().decode()
        finally:
            c.close()

    def status(self):
        return json.loads(self.admin("/status"))

    def slow_counter(self, pid, kind):
        m = re.search(r'^agate_event_loop_slow_callbacks_total\{worker="%d",'
                      r'kind="%s"\} (\d+)$' % (pid, kind),
                      self.admin("/metrics"), re.M)
        return int(m.group(1)) if m else 0

    def busy(self, gw, ms):
        r = gw.get("/_agate_test/busy/%d" % ms, timeout=20)
        self.assertEqual(r.status, 200, r)
        return r.json()["busy_ms"]

    # -- log.slow_callback ---------------------------------------------------

    def test_slow_callbacks_are_logged_once_a_second_and_counted(self):
        gw = self.gateway(slow_callback="200ms")
        pid = gw.workers()[0]
        c = gw.conn()
        for _ in range(3):           # three within a second, one connection
            c.request("GET", "/_agate_test/busy/250")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
        c.close()
        # The first one is logged, naming its kind; the next two are held
        # back, and said in one line once the second is up.
        held = wait_until(lambda: HELD_LINE.findall(gw.error_log()),
                          timeout=5, what="the held-back count")
        log = gw.error_log()
        lines = SLOW_LINE.findall(log)
        self.assertEqual(len(lines), 1, log)
        t0, kind, took, limit, more = lines[0]
        self.assertEqual((kind, limit, more), ("client_http1_read", "200",
                                               ""))
        self.assertGreaterEqual(int(took), 200)
        self.assertLess(int(took), 2000 * SLOW)
        self.assertEqual(len(held), 1, log)
        t1, n, _, kind, longest = held[0]
        self.assertEqual((n, kind), ("2", "client_http1_read"))
        self.assertGreaterEqual(int(longest), 200)
        self.assertGreaterEqual((stamp(t1) - stamp(t0)).total_seconds(), 1.0)
        # Counted, every one of them, by worker and kind.
        n = self.slow_counter(pid, "client_http1_read")
        if VALGRIND:
            self.assertGreaterEqual(n, 3)
        else:
            self.assertEqual(n, 3)
        w = [w for w in self.status()["workers"] if w["pid"] == pid][0]
        self.assertEqual(w["slow_callbacks"], n)
        # A second later, the next one is logged again, by itself.
        wait_until(lambda: (utcnow() - stamp(t1)).total_seconds() > 1.05,
                   timeout=5, what="a second")
        self.busy(gw, 250)
        self.assertEqual(self.slow_counter(pid, "client_http1_read"), n + 1)
        self.assertEqual(len(SLOW_LINE.findall(gw.error_log())), 2)

    def test_fast_callbacks_and_an_admin_scrape_are_not_slow(self):
        gw = self.gateway(slow_callback="200ms")
        pid = gw.workers()[0]
        self.assertGreaterEqual(self.busy(gw, 20), 20)
        self.assertEqual(self.slow_counter(pid, "client_http1_read"), 0)
        self.assertNotIn("slow callback", gw.error_log())
        self.assertEqual(self.status()["workers"][0]["slow_callbacks"], 0)

    def test_the_kind_follows_the_protocol(self):
        gw = self.gateway(slow_callback="200ms")
        pid = gw.workers()[0]
        r = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge",
             "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             "http://127.0.0.1:%d/_agate_test/busy/250" % gw.port],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(r.stdout, "2 200", r.stderr)
        self.assertEqual(self.slow_counter(pid, "client_h2_read"), 1)
        self.assertEqual(self.slow_counter(pid, "client_http1_read"), 0)
        m = SLOW_LINE.search(gw.error_log())
        self.assertEqual(m.group(2), "client_h2_read")

    def test_zero_turns_it_off(self):
        gw = self.gateway(slow_callback="0")
        pid = gw.workers()[0]
        self.busy(gw, 250)
        self.assertNotIn("agate_event_loop_slow_callbacks_total{",
                         self.admin("/metrics"))
        self.assertEqual(self.status()["workers"][0]["slow_callbacks"], 0)
        self.assertNotIn("slow callback", gw.error_log())
        # The lag timer still saw the loop stall.
        w = self.status()["workers"][0]
        self.assertEqual(w["pid"], pid)
        self.assertGreaterEqual(w["loop_lag_p99_ms"], 250)

    def test_default_is_100ms(self):
        gw = self.gateway()
        self.busy(gw, 150)
        wait_until(lambda: SLOW_LINE.search(gw.error_log()), timeout=5,
                   what="the warning")
        m = SLOW_LINE.search(gw.error_log())
        self.assertEqual(m.group(4), "100")

    def test_bad_values_are_refused_with_file_line_column(self):
        path = os.path.join(self.dir, "check.yaml")
        cases = [
            ("500us", "is below the resolution of the clock that measures "
             "it"),
            ("fast", "expected a duration like 100ms or 1s"),
            ("10", "expected a duration like 100ms or 1s"),
            ("-5ms", "expected a duration like 100ms or 1s"),
            ("2h", "at most 1h"),
            ("[1s]", "expected a duration"),
        ]
        for value, why in cases:
            with open(path, "w") as f:
                f.write("server:\n  listen: [\"127.0.0.1:1\"]\nlog:\n"
                        "  level: info\n  slow_callback: %s\n" % value)
            rc, _, err = run("-t", "-c", path)
            self.assertEqual(rc, 1, (value, err))
            self.assertTrue(err.startswith("agate: %s:5:18: slow_callback"
                                           % path), (value, err))
            self.assertIn(why, err, value)
            self.assertEqual(err.count("\n"), 1, err)
        for value in ("0", "250ms", "1s", "20000us"):
            with open(path, "w") as f:
                f.write("log:\n  slow_callback: %s\n" % value)
            rc, _, err = run("-t", "-c", path)
            self.assertEqual(rc, 0, (value, err))

    # -- /status ------------------------------------------------------------

    def wait_in_flight(self, pred, what):
        return wait_until(lambda: pred(sum(w["in_flight"] for w in
                                           self.status()["workers"])),
                          timeout=10, what=what)

    def test_status_counts_requests_in_flight_http1_and_http2(self):
        up = self.upstream()
        gw = self.gateway(workers=2, upstream=up)
        # The health checks of the start-up end once their answers are
        # written: a moment after the client has read them.
        self.wait_in_flight(lambda n: n == 0, "the health checks to end")
        workers = self.status()["workers"]
        self.assertEqual(sorted(w["pid"] for w in workers),
                         sorted(gw.workers()))
        for w in workers:
            self.assertIsInstance(w["loop_lag_p99_ms"], (int, float))
            self.assertEqual(w["slow_callbacks"], 0)
            for key in ("connections", "tunnels", "requests",
                        "loop_lag_mean_ms", "offload_queued",
                        "offload_running", "generation"):
                self.assertIn(key, w)
        # One HTTP/1.1 request and one HTTP/2 stream, both waiting on a
        # slow upstream: two in flight until they are answered.
        out = {}

        def h1():
            out["h1"] = gw.get("/api/a?delay=1500", timeout=20).status
        t = threading.Thread(target=h1)
        t.start()
        self.addCleanup(t.join, 30)
        curl = subprocess.Popen(
            ["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge",
             "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             "http://127.0.0.1:%d/api/b?delay=1500" % gw.port],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: curl.poll() is None and curl.kill())
        self.wait_in_flight(lambda n: n == 2, "two requests in flight")
        t.join(20 * SLOW)
        cout, cerr = curl.communicate(timeout=20 * SLOW)
        self.assertEqual(out.get("h1"), 200)
        self.assertEqual(cout, "2 200", cerr)
        self.wait_in_flight(lambda n: n == 0, "in_flight back to 0")

    def test_a_tunnel_is_not_a_request_in_flight(self):
        up = self.upstream()
        gw = self.agate({"up": {"servers": [up.url]}},
                        [{"path": "/ws/", "upstream": "up"}], start=False,
                        workers=2)
        self.admin_port = free_port()
        gw.config["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        gw.write_config(gw.config)
        gw.start()
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"GET /ws/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket"
                  b"\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            b = s.recv(4096)
            self.assertTrue(b, head)
            head += b
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)

        def totals():
            ws = self.status()["workers"]
            return (sum(w["tunnels"] for w in ws),
                    sum(w["in_flight"] for w in ws))
        wait_until(lambda: totals() == (1, 0), timeout=10,
                   what="one tunnel, no request in flight")
        s.close()
        wait_until(lambda: totals() == (0, 0), timeout=10,
                   what="no tunnel, no request in flight")

    def test_lag_p99_shows_a_stalled_loop(self):
        gw = self.gateway(slow_callback="0")
        self.busy(gw, 300)
        # Fewer than 100 samples so far: the p99 is the worst one, from
        # 200 to 300 ms late, in the 250 or 500 ms bucket.
        p99 = self.status()["workers"][0]["loop_lag_p99_ms"]
        self.assertIn(p99, (250, 500))

    # -- agate -s status ------------------------------------------------------

    def test_status_command_prints_every_worker(self):
        gw = self.gateway(workers=2, slow_callback="200ms")
        self.busy(gw, 250)
        # Counted as its callback ends, a moment after the client has the
        # answer; the admin listener may be the other worker.
        wait_until(lambda: sum(w["slow_callbacks"] for w in
                               self.status()["workers"]) == 1,
                   timeout=10, what="the slow callback to be counted")
        self.wait_in_flight(lambda n: n == 0, "the request to end")
        rc, out, err = run("-s", "status", "-c", gw.path)
        self.assertEqual((rc, err), (0, ""))
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^agate \d+\.\d+\.\d+, supervisor pid "
                         r"%d, up \d+ s, config generation 1, 2 workers$"
                         % gw.pid)
        self.assertEqual(lines[1].split(), [
            "worker", "gen", "connections", "in", "flight", "tunnels",
            "offload", "q/run", "lag", "p99", "ms", "slow", "callbacks"])
        rows = {int(l.split()[0]): l.split() for l in lines[2:]}
        self.assertEqual(sorted(rows), sorted(gw.workers()))
        slow = 0
        for pid, row in rows.items():
            self.assertEqual(len(row), 8, row)
            self.assertEqual(row[1], "1")
            self.assertEqual(row[3], "0")            # in flight
            self.assertEqual(row[5], "0/0")          # offload
            slow += int(row[7])
        self.assertEqual(slow, 1)

    def test_status_command_without_an_admin_listener(self):
        gw = self.gateway(admin=False)
        rc, out, err = run("-s", "status", "-c", gw.path)
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("has no admin.listen", err)
        self.assertEqual(err.count("\n"), 1, err)

    def test_status_command_when_agate_is_not_running(self):
        gw = self.gateway()
        gw.stop()
        rc, out, err = run("-s", "status", "-c", gw.path)
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("cannot get /status from the admin listener "
                      "127.0.0.1:%d" % self.admin_port, err)
        self.assertIn("(is agate running?)", err)
        self.assertEqual(err.count("\n"), 1, err)

    def test_status_command_gives_up_after_2s_on_a_silent_listener(self):
        # Something else holds the admin port and never answers.
        port = free_port()
        silent = socket.socket()
        silent.bind(("127.0.0.1", port))
        silent.listen(8)
        self.addCleanup(silent.close)
        path = os.path.join(self.dir, "silent.yaml")
        with open(path, "w") as f:
            f.write("admin:\n  listen: \"127.0.0.1:%d\"\n" % port)
        t = time.monotonic()
        rc, out, err = run("-s", "status", "-c", path)
        took = time.monotonic() - t
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("timed out (is agate running?)", err)
        self.assertLess(took, 10)


if __name__ == "__main__":
    main()
