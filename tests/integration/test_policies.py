"""API policies on routes (docs/policies.md): rate limits shared by the
workers (local backend), API keys kept as SHA-256 hashes, and CORS --
as clients, browsers' preflights and the upstream see them.
"""

import hashlib
import json
import os
import subprocess
import time
import urllib.request

from harness import AGATE, AgateTest, free_port, main


def fresh(gw, path, headers=None, method="GET"):
    """One request on its own connection (spread over the workers)."""
    return gw.request(method, path, headers=headers or {})


class RateLimitTest(AgateTest):
    def test_one_budget_across_two_workers(self):
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u",
                          "rate_limit": {"rate": "5/s", "burst": 5}}],
                        workers=2, start=False)
        self.admin = free_port()
        gw.config["admin"] = {"listen": "127.0.0.1:%d" % self.admin}
        gw.write_config(gw.config)
        gw.start()
        t0 = time.monotonic()
        got = [fresh(gw, "/x") for _ in range(30)]
        took = time.monotonic() - t0
        ok = [r for r in got if r.status == 200]
        limited = [r for r in got if r.status == 429]
        # Answers let through say what is left of the budget.
        self.assertEqual(ok[0].header("RateLimit-Limit"), "5")
        self.assertEqual(ok[0].header("RateLimit-Remaining"), "4")
        self.assertIsNotNone(ok[0].header("RateLimit-Reset"))
        self.assertEqual(len(ok) + len(limited), 30)
        # The burst, plus what refilled (5/s) while the 30 went by.
        self.assertGreaterEqual(len(ok), 5)
        self.assertLessEqual(len(ok), 5 + int(took * 5) + 1)
        self.assertEqual(up.stats()["requests"], len(ok))
        r = limited[0]
        self.assertGreaterEqual(int(r.header("Retry-After")), 1)
        self.assertEqual(r.header("RateLimit-Limit"), "5")
        self.assertEqual(r.header("RateLimit-Remaining"), "0")
        self.assertEqual(r.json()["status"], 429)
        # Both workers served: the budget was one, not one per worker.
        st = json.loads(urllib.request.urlopen(
            "http://127.0.0.1:%d/status" % self.admin, timeout=10).read())
        self.assertEqual(len(st["workers"]), 2)
        self.assertTrue(all(w["requests"] > 0 for w in st["workers"]), st)
        m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" %
                                   self.admin, timeout=10).read().decode()
        self.assertIn('agate_rate_limited_total{route="/"} %d' %
                      len(limited), m)
        time.sleep(1.3)                 # refill: 5/s, a second and more
        self.assertEqual(fresh(gw, "/y").status, 200)

    def test_keyed_by_a_header_each_key_its_own_budget(self):
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u",
                          "rate_limit": {"rate": "1/m", "burst": 2,
                                         "key": "header:X-Api-Key"}}],
                        workers=2)
        for key in ("alice", "bob"):
            codes = [fresh(gw, "/", {"X-Api-Key": key}).status
                     for _ in range(4)]
            self.assertEqual(codes, [200, 200, 429, 429], key)
        r = fresh(gw, "/", {"X-Api-Key": "alice"})
        self.assertGreaterEqual(int(r.header("Retry-After")), 20)


class ApiKeyTest(AgateTest):
    def write_keys(self, lines):
        with open(os.path.join(self.dir, "api-keys"), "w") as f:
            f.write("# sha256 of each key\n" + "\n".join(lines) + "\n")

    def test_right_wrong_missing(self):
        self.write_keys([hashlib.sha256(b"k-alice").hexdigest() + " alice",
                         hashlib.sha256(b"k-bob").hexdigest()])
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u",
                          "auth": {"api_keys": {"file": "api-keys",
                                                "header": "X-Key"}}}])
        self.assertEqual(fresh(gw, "/", {"X-Key": "k-alice"}).status, 200)
        self.assertEqual(fresh(gw, "/", {"X-Key": "k-bob"}).status, 200)
        for h in ({"X-Key": "k-carol"}, {}, {"X-Key": ""},
                  {"X-Api-Key": "k-alice"},
                  {"X-Key": hashlib.sha256(b"k-alice").hexdigest()}):
            r = fresh(gw, "/", h)
            self.assertEqual(r.status, 401, h)
            self.assertIn("ApiKey", r.header("WWW-Authenticate"))
        self.assertEqual(up.stats()["requests"], 2)

    def test_plain_keys_in_the_file_are_refused_at_load(self):
        self.write_keys([hashlib.sha256(b"x").hexdigest(), "my-secret-key"])
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u",
                          "auth": {"api_keys": {"file": "api-keys"}}}],
                        start=False)
        r = subprocess.run([AGATE, "-t", "-c", gw.path], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"api-keys:3:1: expected the SHA-256")


class CorsTest(AgateTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.gw = self.agate(
            {"u": {"servers": [self.up.url]}},
            [{"path": "/api/", "upstream": "u",
              "methods": ["GET", "PUT", "POST"],
              "cors": {"origins": ["https://app.example"],
                       "methods": ["GET", "PUT"],
                       "headers": ["Content-Type", "X-Token"],
                       "max_age": "10m", "credentials": True}}])

    def preflight(self, origin, method, headers=None):
        h = {"Origin": origin, "Access-Control-Request-Method": method}
        if headers:
            h["Access-Control-Request-Headers"] = headers
        return self.gw.request("OPTIONS", "/api/x", headers=h)

    def test_preflight_allowed_is_answered_here(self):
        r = self.preflight("https://app.example", "PUT",
                           "content-type, x-token")
        self.assertEqual(r.status, 204)
        self.assertEqual(r.header("Access-Control-Allow-Origin"),
                         "https://app.example")
        self.assertEqual(r.header("Access-Control-Allow-Credentials"),
                         "true")
        self.assertIn("PUT", r.header("Access-Control-Allow-Methods"))
        self.assertIn("X-Token", r.header("Access-Control-Allow-Headers"))
        self.assertEqual(r.header("Access-Control-Max-Age"), "600")
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_preflight_refused(self):
        for origin, method, headers, status in (
                ("https://evil.example", "PUT", None, 403),
                ("https://app.example", "POST", None, 403),  # not in cors
                ("https://app.example", "GET", "x-other", 403),
                ("https://app.example", "DELETE", None, 405)):  # no route
            r = self.preflight(origin, method, headers)
            self.assertEqual(r.status, status, (origin, method, headers))
            self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_preflight_not_taken_by_a_later_catch_all(self):
        # Issue 19: /cors/ (GET, PUT, cors) then a catch-all that takes
        # OPTIONS itself: the preflight for PUT is /cors/'s to answer.
        up = self.upstream()
        gw = self.agate(
            {"u": {"servers": [up.url]}},
            [{"path": "/cors/", "upstream": "u", "methods": ["GET", "PUT"],
              "cors": {"origins": ["https://app.example"],
                       "methods": ["GET", "PUT"]}},
             {"path": "/", "upstream": "u"}])
        h = {"Origin": "https://app.example",
             "Access-Control-Request-Method": "PUT"}
        r = gw.request("OPTIONS", "/cors/x", headers=h)
        self.assertEqual(r.status, 204)
        self.assertEqual(r.header("Access-Control-Allow-Origin"),
                         "https://app.example")
        self.assertIn("PUT", r.header("Access-Control-Allow-Methods"))
        self.assertEqual(up.stats()["requests"], 0)
        # A plain OPTIONS, and a preflight for a method only the
        # catch-all takes, are the catch-all's (proxied).
        r = gw.request("OPTIONS", "/cors/x")
        self.assertEqual(r.status, 200)
        h["Access-Control-Request-Method"] = "DELETE"
        r = gw.request("OPTIONS", "/cors/x", headers=h)
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        self.assertEqual(up.stats()["requests"], 2)

    def test_actual_requests_get_headers_for_allowed_origins_only(self):
        r = self.gw.get("/api/x", headers={"Origin": "https://app.example"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Access-Control-Allow-Origin"),
                         "https://app.example")
        self.assertIn("Origin", r.header("Vary"))
        r = self.gw.get("/api/x", headers={"Origin": "https://evil.example"})
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        r = self.gw.get("/api/x")
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        # agate's own answers carry them too (a browser can read a 502).
        r = self.gw.get("/api/x?status=503",
                        headers={"Origin": "https://app.example"})
        self.assertEqual(r.header("Access-Control-Allow-Origin"),
                         "https://app.example")


if __name__ == "__main__":
    main()
