"""Operating agate with signals: reload, stop, reopen, scale, crashes."""

import http.client
import json
import os
import re
import signal
import socket
import threading
import time

from harness import (AGATE_TEST, AgateTest, alive, free_port, main, read_proc,
                     wait_until)


class Looper(threading.Thread):
    """A client hammering agate over keep-alive, counting every failure."""

    def __init__(self, gw, path):
        super().__init__(daemon=True)
        self.gw, self.path = gw, path
        self.ok = 0
        self.failures = []
        self.stop_flag = threading.Event()

    def run(self):
        c = None
        while not self.stop_flag.is_set():
            try:
                if c is None:
                    c = self.gw.conn(timeout=10)
                c.request("GET", self.path)
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    self.failures.append("status %d" % r.status)
                else:
                    self.ok += 1
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    c = None
            except Exception as e:      # noqa: BLE001 - a failure is data
                self.failures.append(repr(e))
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()

    def finish(self):
        self.stop_flag.set()
        self.join(30)


class SignalTest(AgateTest):

    def setUp(self):
        super().setUp()
        self.up = self.upstream("one")
        self.gw = self.agate(
            upstreams={"one": {"servers": [self.up.url]}},
            routes=[{"path": "/one/", "upstream": "one"}],
            drain_timeout="10s")

    def with_route(self, path, upstream="one"):
        cfg = json.loads(json.dumps(self.gw.config))
        cfg["routes"].append({"path": path, "upstream": upstream})
        return cfg

    def test_reload_with_new_route_under_load_loses_nothing(self):
        two = self.upstream("two")
        self.assertEqual(self.gw.get("/two/x").status, 404)
        loopers = [Looper(self.gw, "/one/x") for _ in range(4)]
        for l in loopers:
            l.start()
        time.sleep(0.3)
        cfg = self.with_route("/two/", "two")
        cfg["upstreams"]["two"] = {"servers": [two.url]}
        self.gw.write_config(cfg)
        old = set(self.gw.workers())
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: self.gw.get("/two/x").status == 200,
                   what="the new route")
        self.assertEqual(self.gw.get("/two/x").json()["server"], "two")
        wait_until(lambda: not any(alive(p) for p in old),
                   what="the old workers to exit")
        time.sleep(0.3)
        for l in loopers:
            l.finish()
        self.assertEqual([f for l in loopers for f in l.failures], [])
        self.assertGreater(sum(l.ok for l in loopers), 50)

    def test_many_reloads_in_a_row_under_load(self):
        # 20 HUPs: new routes, changed and added upstreams, broken files.
        two = self.upstream("two")
        loopers = [Looper(self.gw, "/one/x") for _ in range(3)]
        for l in loopers:
            l.start()
        for i in range(20):
            cfg = self.with_route("/extra%d/" % i)
            if i % 4 == 1:
                cfg["upstreams"]["one"]["servers"].append(two.url)
                cfg["upstreams"]["one"]["retry"] = {"attempts": 2}
            if i % 4 == 3:
                cfg["upstreams"]["two"] = {"servers": [two.url]}
                cfg["routes"].append({"path": "/two/", "upstream": "two"})
            self.gw.write_config(cfg if i % 5 != 2 else "server: [broken")
            self.gw.signal(signal.SIGHUP)
            time.sleep(0.25)
        time.sleep(1)
        for l in loopers:
            l.finish()
        self.assertEqual([f for l in loopers for f in l.failures], [])
        # Never more than two generations at once: ours plus one draining.
        wait_until(lambda: len(self.gw.workers()) <= 4,
                   what="at most two generations")

    def test_two_quick_reloads_that_add_a_listener(self):
        # The second HUP lands while the first reload's workers are still
        # starting: the new listener must survive into the final config.
        for attempt in range(3):
            port2 = free_port()
            cfg = json.loads(json.dumps(self.gw.config))
            cfg["server"]["listen"] = [cfg["server"]["listen"][0],
                                       "127.0.0.1:%d" % port2]
            self.gw.write_config(cfg)
            before = self.gw.error_log().count("reloading")
            self.gw.signal(signal.SIGHUP)
            wait_until(lambda: self.gw.error_log().count("reloading") > before,
                       interval=0.0005, what="the first reload")
            self.gw.signal(signal.SIGHUP)
            wait_until(lambda: self.gw.error_log().count("reload done") >=
                       attempt + 1, what="a reload to finish")
            time.sleep(0.3)

            def answers():
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port2,
                                                   timeout=2)
                    c.request("GET", "/one/x")
                    return c.getresponse().status == 200
                except OSError:
                    return False
            wait_until(answers, timeout=5, what="the added listener")

    def test_broken_reload_keeps_old_config_serving(self):
        before = set(self.gw.workers())
        self.gw.write_config("server:\n  workers: 2\n  listen: [\"127.0.0.1:%d\"]"
                             "\n  bogus_key: 1\n" % self.gw.port)
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: "bogus_key" in self.gw.error_log(),
                   what="the reload error")
        log = self.gw.error_log()
        self.assertRegex(log, r"agate\.yaml:4:3: unknown key 'bogus_key' in "
                              r"server")
        self.assertIn("still serving the previous config", log)
        self.assertEqual(self.gw.get("/one/x").status, 200)
        self.assertEqual(set(self.gw.workers()), before)

    def test_reload_refuses_what_start_would_fail_on(self):
        # Valid YAML, but the workers could not start on it (agate -t and
        # start-up check the same): refused, the old config serves on.
        before = set(self.gw.workers())
        good = json.dumps(self.gw.config)
        missing = os.path.join(self.dir, "missing")
        cases = [
            (("server", "user"), "nosuchuser-agate",
             "user: no such user 'nosuchuser-agate'"),
            (("server", "pid_file"), "missing/agate.pid",
             "pid_file: cannot write %s/agate.pid: folder %s does not "
             "exist" % (missing, missing)),
            (("log", "access"), "missing/access.log",
             "log.access: cannot create %s/access.log: folder %s does not "
             "exist" % (missing, missing)),
            (("log", "error"), "missing/error.log",
             "log.error: cannot create %s/error.log: folder %s does not "
             "exist" % (missing, missing)),
        ]
        for n, ((section, key), value, reason) in enumerate(cases, 1):
            cfg = json.loads(good)
            cfg[section][key] = value
            self.gw.write_config(cfg)
            self.gw.signal(signal.SIGHUP)
            wait_until(lambda: self.gw.error_log().count("reload failed")
                       >= n, what="reload %d to fail" % n)
            self.assertRegex(self.gw.error_log(), r"reload failed: \S+/"
                             r"agate\.yaml:\d+:\d+: %s; still serving the "
                             r"previous config" % re.escape(reason))
            self.assertEqual(self.gw.get("/one/x").status, 200)
            self.assertEqual(set(self.gw.workers()), before)
        self.assertFalse(os.path.exists(missing))
        self.assertNotIn("lost a worker", self.gw.error_log())

    def test_term_lets_a_slow_request_finish_then_exits_zero(self):
        result = {}

        def slow():
            result["r"] = self.gw.get("/one/slow?delay=1500", timeout=20)
        t = threading.Thread(target=slow)
        t.start()
        wait_until(lambda: self.up.stats()["requests"] >= 1,
                   what="the slow request to reach the upstream")
        self.gw.signal(signal.SIGTERM)
        t.join(20)
        self.assertEqual(result["r"].status, 200)
        self.assertEqual(self.gw.proc.wait(20), 0)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "agate.pid")))

    def test_shutdown_delay_fails_health_but_keeps_serving(self):
        self.gw.stop(signal.SIGINT)
        cfg = json.loads(json.dumps(self.gw.config))
        cfg["server"]["shutdown_delay"] = "1500ms"
        self.gw.write_config(cfg)
        self.gw.start()
        c = self.gw.conn()
        self.gw.signal(signal.SIGTERM)
        time.sleep(0.3)
        c.request("GET", "/healthz")
        r = c.getresponse()
        self.assertEqual(r.status, 503)
        self.assertEqual(json.loads(r.read())["status"], "draining")
        self.assertEqual(self.gw.get("/one/x").status, 200)
        c.close()
        self.assertEqual(self.gw.proc.wait(20), 0)

    def test_int_is_a_fast_stop(self):
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", self.gw.port))
        s.sendall(b"GET /one/x?delay=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: self.up.stats()["requests"] >= 1,
                   what="the request to reach the upstream")
        workers = self.gw.workers()
        self.gw.signal(signal.SIGINT)
        self.assertEqual(self.gw.proc.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertFalse(any(alive(w) for w in workers))
        s.close()

    def test_kill_9_worker_is_respawned_and_service_continues(self):
        victim = self.gw.workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(self.gw.workers()) == 2 and
                   victim not in self.gw.workers(), timeout=3,
                   what="a new worker")
        for _ in range(20):
            self.assertEqual(self.gw.get("/one/x").status, 200)
        self.assertIn("was killed by SIGKILL (signal 9: killed from outside",
                      self.gw.error_log())

    def test_workers_exit_when_the_supervisor_dies(self):
        workers = self.gw.workers()
        self.gw.signal(signal.SIGKILL)
        self.gw.proc.wait(5)
        wait_until(lambda: not any(alive(w) for w in workers), timeout=5,
                   what="orphaned workers to exit")

    def test_usr1_reopens_the_access_log(self):
        self.gw.get("/one/before", headers={"X-Request-Id": "before"})
        wait_until(lambda: self.gw.access_log(), what="a first log line")
        os.rename(self.gw.access_path, self.gw.access_path + ".1")
        self.gw.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(self.gw.access_path),
                   what="a new access log")
        self.gw.get("/one/after", headers={"X-Request-Id": "after"})
        wait_until(lambda: [l for l in self.gw.access_log()
                            if l["request_id"] == "after"],
                   what="the line in the new file")
        self.assertIn("before", read_proc(self.gw.access_path + ".1"))

    def scaled_to(self, n):
        """Waits for a rescale to n workers to finish: promoted, and the
        previous generation gone."""
        words = "serves with %d worker%s\n" % (n, "" if n == 1 else "s")
        wait_until(lambda: words in
                   self.gw.error_log().split("reload done")[-1],
                   what="a generation of %d" % n)
        wait_until(lambda: len(self.gw.workers()) == n,
                   what="%d workers" % n)

    def test_ttin_and_ttou_scale_workers(self):
        self.gw.signal(signal.SIGTTIN)
        self.scaled_to(3)
        # One at a time: pending signals of one kind merge into one.
        self.gw.signal(signal.SIGTTOU)
        self.scaled_to(2)
        self.gw.signal(signal.SIGTTOU)
        self.scaled_to(1)
        self.gw.signal(signal.SIGTTOU)      # not below one
        time.sleep(0.3)
        log = self.gw.error_log()
        self.assertIn("SIGTTOU: staying at 1 worker\n", log)
        # Signals by name, not strsignal's "Stopped (tty input)".
        self.assertIn("supervisor: SIGTTIN: one worker more", log)
        self.assertIn("supervisor: SIGTTOU: one worker fewer", log)
        self.assertIn("SIGTTIN: starting 3 workers to replace 2", log)
        self.assertIn("SIGTTOU: starting 1 worker to replace 2", log)
        self.assertIn("generation 4 serves with 1 worker\n", log)
        self.assertNotIn("Stopped (tty", log)
        for _ in range(10):
            self.assertEqual(self.gw.get("/one/x").status, 200)

    def test_scaling_under_load_loses_nothing(self):
        loopers = [Looper(self.gw, "/one/x") for _ in range(3)]
        for l in loopers:
            l.start()
        self.gw.signal(signal.SIGTTIN)
        self.scaled_to(3)
        self.gw.signal(signal.SIGTTOU)
        self.scaled_to(2)
        time.sleep(0.3)
        for l in loopers:
            l.finish()
        self.assertEqual([f for l in loopers for f in l.failures], [])

    def test_reload_through_the_cli(self):
        self.gw.write_config(self.with_route("/cli/"))
        rc = __import__("subprocess").call(
            [__import__("harness").AGATE, "-s", "reload", "-c", self.gw.path])
        self.assertEqual(rc, 0)
        wait_until(lambda: self.gw.get("/cli/x").status == 200,
                   what="the reloaded route")


class CrashLoopTest(AgateTest):

    def test_worker_dying_at_start_is_respawned_with_backoff(self):
        gw = self.agate(routes=[], workers=1)
        time.sleep(1.1)                 # it has lived: respawned at once
        seen = set()
        appeared = []
        victim = gw.workers()[0]
        for _ in range(5):
            seen.add(victim)
            os.kill(victim, signal.SIGKILL)
            t0 = time.monotonic()
            victim = wait_until(lambda: next((w for w in gw.workers()
                                              if w not in seen), None),
                                timeout=10, interval=0.005,
                                what="a respawned worker")
            appeared.append(time.monotonic() - t0)
        # First death after a long life: at once.  Then each death within
        # a second of start doubles the wait: 100, 200, 400, 800 ms.
        self.assertLess(appeared[0], 0.5)
        for expect, got in zip((0.1, 0.2, 0.4, 0.8), appeared[1:]):
            self.assertGreaterEqual(got, expect * 0.9, appeared)
            self.assertLess(got, expect + 1.0, appeared)
        log = gw.error_log()
        for ms in (100, 200, 400, 800):
            self.assertIn("respawning in %dms" % ms, log)
        self.assertEqual(gw.get("/healthz").status, 200)

    def test_worker_that_cannot_start_stops_agate_with_code_2(self):
        # What the config check cannot see (tests/testbuild.c): workers
        # that exit 2 at start.
        with open(os.path.join(self.dir, "fail-worker-start"), "w") as f:
            f.write("exit\n")
        gw = self.agate(routes=[], start=False, binary=AGATE_TEST)
        gw.start(wait=False)
        self.assertEqual(gw.proc.wait(15), 2)
        # The supervisor repeats the worker's reason with its status.
        self.assertRegex(gw.error_log(), r"supervisor: worker 0 exited with "
                         r"code 2 \(cannot start: config or privileges\): "
                         r"worker: test: \S+/fail-worker-start says so; not "
                         r"respawning it")
        self.assertIn("no worker can start", gw.error_log())

    def test_a_reload_whose_worker_dies_says_why(self):
        gw = self.agate(routes=[], binary=AGATE_TEST)
        trigger = os.path.join(self.dir, "fail-worker-start")
        cases = [
            ("exit", r"exited with code 2 \(cannot start: config or "
                     r"privileges\): worker: test: %s says so"
                     % re.escape(trigger)),
            ("abort", r"was killed by SIGABRT \(signal 6: an abort"),
        ]
        for n, (what, how) in enumerate(cases, 1):
            with open(trigger, "w") as f:
                f.write(what + "\n")
            gw.signal(signal.SIGHUP)
            wait_until(lambda: gw.error_log().count("reload failed") >= n,
                       what="reload %d to fail" % n)
            self.assertRegex(gw.error_log(), r"reload failed: generation "
                             r"\d+ lost worker \d before it was ready: it "
                             r"%s[^\n]*; still serving the previous config"
                             % how)
            self.assertEqual(gw.get("/healthz").status, 200)
        os.unlink(trigger)


if __name__ == "__main__":
    main()
