"""Rate limits through Redis (gateway/policy/rlredis.c): one budget for two agate
instances, `on_failure` (allow, deny) while Redis is away, and the
reconnection once it is back.  redis-server (Debian's) is started by the
test on a free loopback port, without persistence.
"""

import os
import shutil
import socket
import subprocess
import time

from harness import Agate, AgateTest, free_port, main, wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, workdir, port):
        self.port = port
        self.log = open(os.path.join(workdir, "redis-%d.log" % port), "a")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save",
             "", "--appendonly", "no", "--dir", workdir],
            stdout=self.log, stderr=self.log)
        wait_until(self.ping, what="redis-server")

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


class RedisLimitTest(AgateTest):
    def start_pair(self, on_failure="allow"):
        self.redis_port = free_port()
        self.redis = RedisServer(self.dir, self.redis_port)
        self.addCleanup(lambda: self.redis.stop())
        up = self.upstream()
        gws = []
        for name in ("a", "b"):
            d = os.path.join(self.dir, name)
            os.makedirs(d, exist_ok=True)
            cfg = Agate.default_config(
                free_port(), {"u": {"servers": [up.url]}},
                [{"path": "/", "upstream": "u",
                  "rate_limit": {"rate": "5/s", "burst": 5,
                                 "backend": "redis"}}], workers=2)
            cfg["redis"] = {"address": "127.0.0.1:%d" % self.redis_port,
                            "on_failure": on_failure}
            gw = Agate(d, cfg)
            self.agates.append(gw)
            gw.start()
            gws.append(gw)
        self.up = up
        # Each worker connects at start: wait until a request is limited
        # through Redis rather than let through by on_failure.
        return gws

    def test_two_instances_share_one_budget(self):
        a, b = self.start_pair()
        time.sleep(0.5)                 # workers connect to Redis
        t0 = time.monotonic()
        first = b.get("/x")
        got = [first.status] + [(a if i % 2 else b).get("/x").status
                                for i in range(1, 30)]
        took = time.monotonic() - t0
        self.assertEqual(first.status, 200)
        self.assertEqual(first.header("RateLimit-Limit"), "5")
        self.assertEqual(first.header("RateLimit-Remaining"), "4")
        ok = got.count(200)
        self.assertEqual(ok + got.count(429), 30, got)
        # One budget: the burst plus what 5/s refilled, not twice that.
        self.assertGreaterEqual(ok, 5)
        self.assertLessEqual(ok, 5 + int(took * 5) + 1)
        r = a.get("/x")
        if r.status == 429:
            self.assertGreaterEqual(int(r.header("Retry-After")), 1)
            self.assertEqual(r.header("RateLimit-Limit"), "5")

    def test_on_failure_allow_then_reconnect(self):
        a, b = self.start_pair("allow")
        time.sleep(0.5)
        self.redis.stop()
        codes = [a.get("/x").status for _ in range(20)]
        self.assertEqual(codes, [200] * 20)
        self.assertIn("let requests through", a.error_log())
        # Back: the limit applies again once the workers reconnect.
        self.redis = RedisServer(self.dir, self.redis_port)
        wait_until(lambda: [a.get("/x").status for _ in range(8)].count(
            429) > 0, timeout=20, what="the limit to apply again")
        self.assertIn("connected", a.error_log())

    def test_on_failure_deny(self):
        a, b = self.start_pair("deny")
        time.sleep(0.5)
        self.redis.stop()
        r = a.get("/x")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("Retry-After"), "1")
        self.assertIn("refuse requests", a.error_log())


if __name__ == "__main__":
    main()
