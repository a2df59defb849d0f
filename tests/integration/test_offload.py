"""The offload pool (offload/, docs/offload.md) and the three jobs on it:
gzip responses, basic auth, webhook signatures -- as clients, upstreams
and the process table see them.

The pool: helpers forked per worker, at a lower priority, holding none of
the worker's sockets; none outlives its worker (kill -9, stop); a helper
stuck past job_timeout is killed and replaced (504); one that dies fails
only its own job (503); the queue limit gives 503 at once; a client that
leaves drops its queued job; no descriptor leaks after all that.  The
failure cases use agate-test (AGATE_TEST_BIN), agate built with job kinds
that hang or die on demand (tests/testbuild.c).

gzip: round trips against zlib for each path (inline, whole in the pool,
streamed, chunked from upstream), the thresholds (compress_min, the inline
limit), what must not be compressed, the headers.  Basic auth: right,
wrong, missing for bcrypt, sha-crypt and yescrypt hashes made at test time
with libcrypt; refused hash formats at load; the file re-read on HUP; the
cache.  Signatures: right, wrong, missing, malformed, big bodies through
the pool, chunked bodies.
"""

import base64
import ctypes
import gzip
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import zlib

from harness import (AGATE, AGATE_TEST, VALGRIND, AgateTest, Response,
                     alive, fd_targets, main, pattern_bytes, read_proc,
                     wait_until)

_libcrypt = ctypes.CDLL("libcrypt.so.1")
_libcrypt.crypt_gensalt.restype = ctypes.c_char_p
_libcrypt.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong,
                                    ctypes.c_char_p, ctypes.c_int]
_libcrypt.crypt.restype = ctypes.c_char_p
_libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]


def make_hash(password, prefix, cost=0):
    """A crypt(3) hash from the system's libcrypt, with a fresh salt."""
    setting = _libcrypt.crypt_gensalt(prefix.encode(), cost, None, 0)
    assert setting, "libcrypt cannot make %s salts" % prefix
    return _libcrypt.crypt(password.encode(), setting).decode()


def basic(user, password):
    token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return {"Authorization": "Basic " + token}


def helpers_of(pid):
    """Child pids of a worker that are offload helpers."""
    text = read_proc("/proc/%d/task/%d/children" % (pid, pid))
    return [int(p) for p in text.split()
            if read_proc("/proc/%s/comm" % p).strip() == "agate-helper"]


def proc_nice(pid):
    stat = read_proc("/proc/%d/stat" % pid)
    return int(stat.rsplit(")", 1)[1].split()[16])


def pipe_count(pid):
    return sum(1 for t in fd_targets(pid) if t.startswith("pipe:"))


class Load:
    """Threads sending one request each in a loop; bounded in count and
    time; records every status."""

    def __init__(self, agate, path, headers=None, threads=4, seconds=3.0,
                 max_requests=2000):
        self.statuses = []
        self.lock = threading.Lock()
        self.stop_at = time.monotonic() + seconds
        self.left = max_requests
        self.threads = [threading.Thread(target=self.run,
                                         args=(agate, path, headers or {}))
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, agate, path, headers):
        while time.monotonic() < self.stop_at:
            with self.lock:
                if self.left == 0:
                    return
                self.left -= 1
            try:
                status = agate.get(path, headers=headers, timeout=15).status
            except OSError as e:
                status = "error: %s" % e
            with self.lock:
                self.statuses.append(status)

    def join(self):
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), "a client hung"
        return self.statuses


class PoolTest(AgateTest):
    def one_worker(self, binary=AGATE_TEST, **offload):
        up = self.upstream()
        off = {"processes": 1, "queue_limit": 16, "job_timeout": "5s"}
        off.update(offload)
        a = self.agate({"u": {"servers": [up.url]}},
                       [{"path": "/", "upstream": "u"}], start=False,
                       binary=binary, workers=1)
        a.config["offload"] = off
        a.write_config(a.config)
        a.start()
        return a

    def stats(self, a):
        return a.get("/_agate_test/helpers").json()

    def test_helpers_are_forked_low_priority_and_hold_no_sockets(self):
        up = self.upstream()
        a = self.agate({"u": {"servers": [up.url]}},
                       [{"path": "/", "upstream": "u"}], start=False)
        a.config["offload"] = {"processes": 2}
        a.write_config(a.config)
        a.start()
        workers = a.workers()
        self.assertEqual(len(workers), 2)
        for w in workers:
            hs = wait_until(lambda: len(helpers_of(w)) == 2 and
                            helpers_of(w), what="two helpers")
            for h in hs:
                self.assertGreater(proc_nice(h), proc_nice(w))
                targets = fd_targets(h)
                self.assertFalse([t for t in targets
                                  if t.startswith("socket:")],
                                 "a helper holds a socket: %r" % targets)
                # its two pipe ends, stdio, the error log (valgrind
                # keeps files and pipes of its own in every process)
                if not VALGRIND:
                    self.assertLessEqual(len(targets), 6, targets)

    def test_no_helper_survives_its_worker(self):
        up = self.upstream()
        a = self.agate({"u": {"servers": [up.url]}},
                       [{"path": "/", "upstream": "u"}], start=False)
        a.config["offload"] = {"processes": 2}
        a.write_config(a.config)
        a.start()
        victim = a.workers()[0]
        hs = wait_until(lambda: len(helpers_of(victim)) == 2 and
                        helpers_of(victim), what="helpers")
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not any(alive(h) for h in hs), timeout=5,
                   what="the dead worker's helpers to exit")
        # The replacement worker has helpers of its own.
        wait_until(lambda: len(a.workers()) == 2 and victim not in
                   a.workers(), what="a new worker")
        new = [w for w in a.workers() if w != victim]
        for w in new:
            wait_until(lambda: len(helpers_of(w)) == 2, what="new helpers")
        every = [h for w in a.workers() for h in helpers_of(w)]
        self.assertEqual(a.stop(), 0)
        wait_until(lambda: not any(alive(h) for h in every), timeout=5,
                   what="helpers to exit with agate")

    def test_stuck_helper_is_killed_at_job_timeout(self):
        a = self.one_worker(job_timeout="500ms")
        w = a.workers()[0]
        before = wait_until(lambda: helpers_of(w), what="a helper")
        base_pipes = pipe_count(w)
        t0 = time.monotonic()
        r = a.get("/_agate_test/sleep/20000")
        self.assertEqual(r.status, 504, r.body)
        self.assertLess(time.monotonic() - t0, 10)
        wait_until(lambda: helpers_of(w) and helpers_of(w) != before,
                   what="a new helper")
        self.assertFalse(any(alive(h) for h in before))
        self.assertEqual(a.get("/_agate_test/sleep/10").status, 200)
        st = self.stats(a)["stats"]
        self.assertEqual(st["timeouts"], 1)
        self.assertEqual(st["restarts"], 1)
        self.assertEqual(pipe_count(w), base_pipes)
        self.assertIn("ran past job_timeout", a.error_log())

    def test_a_dying_helper_fails_only_its_own_job(self):
        a = self.one_worker(processes=2)
        w = a.workers()[0]
        wait_until(lambda: len(helpers_of(w)) == 2, what="helpers")
        base_pipes = pipe_count(w)
        results = {}

        def slow():
            results["slow"] = a.get("/_agate_test/sleep/1500").status
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        r = a.get("/_agate_test/exit")
        self.assertEqual(r.status, 503, r.body)
        t.join(10)
        self.assertEqual(results.get("slow"), 200)
        wait_until(lambda: len(helpers_of(w)) == 2, what="a new helper")
        self.assertEqual(a.get("/_agate_test/sleep/1").status, 200)
        st = self.stats(a)["stats"]
        self.assertEqual(st["lost"], 1)
        self.assertEqual(pipe_count(w), base_pipes)

    def test_queue_overflow_is_503_at_once(self):
        a = self.one_worker(queue_limit=2)
        results = []
        lock = threading.Lock()

        def call(ms):
            s = a.get("/_agate_test/sleep/%d" % ms).status
            with lock:
                results.append(s)
        ts = [threading.Thread(target=call, args=(ms,))
              for ms in (1500, 100, 100)]
        for t in ts:
            t.start()
            time.sleep(0.15)
        t0 = time.monotonic()
        r = a.get("/_agate_test/sleep/100")
        self.assertEqual(r.status, 503, r.body)
        self.assertLess(time.monotonic() - t0, 1.0)
        for t in ts:
            t.join(10)
        self.assertEqual(sorted(results), [200, 200, 200])
        self.assertEqual(self.stats(a)["stats"]["rejected"], 1)

    def test_a_client_that_leaves_drops_its_queued_job(self):
        a = self.one_worker()
        done = []
        t = threading.Thread(target=lambda: done.append(
            a.get("/_agate_test/sleep/1000").status))
        t.start()
        time.sleep(0.2)
        s = socket.create_connection(("127.0.0.1", a.port))
        s.sendall(b"GET /_agate_test/sleep/1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        s.close()
        t.join(10)
        self.assertEqual(done, [200])
        st = wait_until(lambda: (lambda s: s["queued"] == 0 and
                                 s["running"] == 0 and s)(
            self.stats(a)["stats"]), what="an idle pool")
        # Only the first job ran: the second left the queue unrun.
        self.assertEqual(st["submitted"], 2)
        self.assertEqual(st["ok"], 1)

    def test_helper_killed_under_load(self):
        up = self.upstream()
        with open(os.path.join(self.dir, "htpasswd"), "w") as f:
            f.write("ann:%s\n" % make_hash("pw", "$2b$", 8))
        a = self.agate({"u": {"servers": [up.url]}},
                       [{"path": "/", "upstream": "u",
                         "auth": {"basic": "htpasswd"}}],
                       start=False, workers=1)
        a.config["offload"] = {"processes": 2}
        a.write_config(a.config)
        a.start()
        w = a.workers()[0]
        hs = wait_until(lambda: len(helpers_of(w)) == 2 and helpers_of(w),
                        what="helpers")
        base_pipes = pipe_count(w)
        # Wrong passwords are never cached: every request is a bcrypt.
        load = Load(a, "/", basic("ann", "wrong"), threads=4, seconds=3)
        time.sleep(1.0)
        os.kill(hs[0], signal.SIGKILL)
        statuses = load.join()
        self.assertGreater(len(statuses), 10)
        bad = [s for s in statuses if s not in (401, 503)]
        self.assertEqual(bad, [])
        self.assertLessEqual(statuses.count(503), 1)
        # After the kill, the pool is whole again and answers.
        wait_until(lambda: len(helpers_of(w)) == 2 and
                   hs[0] not in helpers_of(w), what="a respawned helper")
        self.assertEqual(a.get("/", headers=basic("ann", "pw")).status, 200)
        self.assertEqual(statuses[-5:], [401] * 5)
        self.assertEqual(pipe_count(w), base_pipes)


def gunzip(body):
    return gzip.decompress(body)


class GzipTest(AgateTest):
    def gz_agate(self, binary=AGATE, processes=1, **route):
        self.up = self.upstream()
        r = {"path": "/", "upstream": "u", "compress": "gzip"}
        r.update(route)
        a = self.agate({"u": {"servers": [self.up.url]}}, [r], start=False,
                       binary=binary, workers=1)
        a.config["offload"] = {"processes": processes}
        a.write_config(a.config)
        a.start()
        return a

    def get_gz(self, a, path, ae="gzip, deflate", method="GET"):
        return a.request(method, path, headers={"Accept-Encoding": ae})

    def test_round_trips_on_every_path(self):
        a = self.gz_agate(binary=AGATE_TEST)
        cases = [
            # size, chunked upstream, framing we expect
            (2000, False, "length"),        # whole, on the loop
            (50000, False, "length"),       # whole, in the pool
            (300000, False, "chunked"),     # streamed in pieces
            (300000, True, "chunked"),      # chunked from upstream
            (1500000, False, "chunked"),
            (5000, True, "chunked"),        # small but of unknown size
        ]
        for size, chunked, framing in cases:
            path = "/x?size=%d%s" % (size, "&chunked=1" if chunked else "")
            r = self.get_gz(a, path)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("Content-Encoding"), "gzip", path)
            self.assertEqual(r.header("Vary"), "Accept-Encoding")
            if framing == "length":
                self.assertEqual(int(r.header("Content-Length")),
                                 len(r.body))
            else:
                self.assertIsNone(r.header("Content-Length"))
            self.assertEqual(gunzip(r.body), pattern_bytes(size), path)
            self.assertLess(len(r.body), size // 3)
        st = a.get("/_agate_test/helpers").json()["stats"]
        # 2000 inline; the others in the pool (several pieces each).
        self.assertGreaterEqual(st["inline"], 1)
        self.assertGreaterEqual(st["ok"], 1 + 5 + 5 + 23)

    def test_thresholds(self):
        a = self.gz_agate(binary=AGATE_TEST, compress_min="1k")
        self.assertIsNone(self.get_gz(a, "/?size=1023").header(
            "Content-Encoding"))
        r = self.get_gz(a, "/?size=1024")
        self.assertEqual(r.header("Content-Encoding"), "gzip")
        self.assertEqual(gunzip(r.body), pattern_bytes(1024))
        # Up to 2 KiB is compressed on the loop, above in the pool.
        st0 = a.get("/_agate_test/helpers").json()["stats"]
        self.get_gz(a, "/?size=2048")
        st1 = a.get("/_agate_test/helpers").json()["stats"]
        self.assertEqual(st1["inline"] - st0["inline"], 1)
        self.assertEqual(st1["submitted"], st0["submitted"])
        r = self.get_gz(a, "/?size=2049")
        self.assertEqual(gunzip(r.body), pattern_bytes(2049))
        st2 = a.get("/_agate_test/helpers").json()["stats"]
        self.assertEqual(st2["submitted"] - st1["submitted"], 1)
        self.assertEqual(st2["inline"], st1["inline"])

    def test_what_is_not_compressed(self):
        a = self.gz_agate()
        big = "/?size=20000"
        for ae in (None, "identity", "gzip;q=0", "br", "deflate"):
            h = {"Accept-Encoding": ae} if ae else {}
            r = a.get(big, headers=h)
            self.assertIsNone(r.header("Content-Encoding"), ae)
            self.assertEqual(r.body, pattern_bytes(20000))
        for ae in ("GZIP", "br;q=1, gzip;q=0.5", "*", "x-gzip"):
            r = self.get_gz(a, big, ae=ae)
            self.assertEqual(r.header("Content-Encoding"), "gzip", ae)
        not_these = [
            "&header=Content-Type:application/octet-stream",
            "&header=Content-Type:image/png",
            "&header=Content-Type:text/event-stream",
            "&header=Content-Encoding:br",
            "&header=Cache-Control:no-transform",
            "&status=204",
            "&status=206&header=Content-Range:bytes=0-9/20000",
        ]
        for q in not_these:
            r = self.get_gz(a, big + q)
            self.assertNotEqual(r.header("Content-Encoding"), "gzip", q)
            if "204" not in q:
                self.assertEqual(r.body, pattern_bytes(20000), q)
        r = self.get_gz(a, big, method="HEAD")
        self.assertIsNone(r.header("Content-Encoding"))
        # JSON (agate's own 404 is too small) and text/html are.
        r = self.get_gz(a, big + "&header=Content-Type:application/json")
        self.assertEqual(r.header("Content-Encoding"), "gzip")

    def test_headers_of_a_compressed_answer(self):
        a = self.gz_agate()
        r = self.get_gz(a, "/?size=20000&header=Vary:Origin"
                        "&header=ETag:%22v1%22&header=Accept-Ranges:bytes")
        self.assertEqual(r.header("Content-Encoding"), "gzip")
        self.assertEqual(r.header("Vary"), "Origin, Accept-Encoding")
        self.assertEqual(r.header("ETag"), 'W/"v1"')
        self.assertIsNone(r.header("Accept-Ranges"))

    def test_a_slow_stream_is_not_held_back(self):
        # 6 pieces of 1000 bytes, 300 ms apart: each must reach the client
        # compressed soon after it left the upstream, not at the end.
        a = self.gz_agate()
        c = a.conn()
        c.request("GET", "/?size=6000&chunked=1&chunk=1000&interval=300",
                  headers={"Accept-Encoding": "gzip"})
        r = c.getresponse()
        self.assertEqual(r.getheader("Content-Encoding"), "gzip")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        t0 = time.monotonic()
        got, first = b"", None
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            got += d.decompress(chunk)
            if got and first is None:
                first = time.monotonic() - t0
        total = time.monotonic() - t0
        c.close()
        self.assertEqual(got + d.flush(), pattern_bytes(6000))
        self.assertGreater(total, 1.2)
        self.assertLess(first, total - 0.8)

    def test_http10_client_gets_a_close_delimited_stream(self):
        a = self.gz_agate()
        raw = a.raw(b"GET /?size=200000 HTTP/1.0\r\n"
                    b"Accept-Encoding: gzip\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Encoding: gzip", head)
        self.assertNotIn(b"chunked", head)
        self.assertEqual(gunzip(body), pattern_bytes(200000))

    def test_inline_mode_processes_0(self):
        a = self.gz_agate(processes=0)
        for size in (3000, 60000, 400000):
            r = self.get_gz(a, "/?size=%d" % size)
            self.assertEqual(gunzip(r.body), pattern_bytes(size))
        w = a.workers()[0]
        self.assertEqual(helpers_of(w), [])

    def test_keepalive_connection_serves_many_compressed_answers(self):
        a = self.gz_agate()
        c = a.conn()
        for size in (100000, 3000, 70000, 300000, 2000):
            c.request("GET", "/?size=%d" % size,
                      headers={"Accept-Encoding": "gzip"})
            r = c.getresponse()
            self.assertEqual(gunzip(r.read()), pattern_bytes(size))
        c.close()


class BasicAuthTest(AgateTest):
    KINDS = [("bcrypt", "$2y$", 5), ("bcrypt-b", "$2b$", 5),
             ("sha256", "$5$", 0), ("sha512", "$6$", 0),
             ("yescrypt", "$y$", 0)]

    def write_htpasswd(self, users, name="htpasswd"):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write("# users\n\n")
            for user, h in users:
                f.write("%s:%s\n" % (user, h))

    def auth_agate(self, binary=AGATE, workers=1):
        self.up = self.upstream()
        return self.agate({"u": {"servers": [self.up.url]}},
                          [{"path": "/", "upstream": "u",
                            "auth": {"basic": "htpasswd"}}],
                          binary=binary, workers=workers)

    def test_each_hash_kind_right_wrong_missing(self):
        self.write_htpasswd([(k, make_hash("pw-" + k, p, c))
                             for k, p, c in self.KINDS])
        a = self.auth_agate()
        for kind, _, _ in self.KINDS:
            r = a.get("/?kind=" + kind, headers=basic(kind, "pw-" + kind))
            self.assertEqual(r.status, 200, kind)
            r = a.get("/", headers=basic(kind, "pw-x"))
            self.assertEqual(r.status, 401, kind)
            self.assertEqual(r.header("WWW-Authenticate"),
                             'Basic realm="agate", charset="UTF-8"')
        refusals = [
            {},
            {"Authorization": "Bearer abc"},
            {"Authorization": "Basic !!!notbase64"},
            {"Authorization": "Basic " + base64.b64encode(b"nocolon")
             .decode()},
            basic("nobody", "pw-bcrypt"),
            basic("bcrypt", ""),
        ]
        for h in refusals:
            r = a.get("/", headers=h)
            self.assertEqual(r.status, 401, h)
            self.assertIn("WWW-Authenticate", dict(r.headers))
        # Only the five right ones reached the upstream.
        self.assertEqual(self.up.stats()["requests"], len(self.KINDS))

    def test_refused_hash_formats_at_load(self):
        bad = [("plain", "secret", "plain-text"),
               ("apr", "$apr1$abcdefgh$0123456789abcdefghijkl", "$apr1$"),
               ("sha", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}"),
               ("cut", "$2y$05$tooshort", "malformed")]
        self.up = self.upstream()
        for user, h, why in bad:
            self.write_htpasswd([("ok", make_hash("x", "$6$")), (user, h)])
            a = self.agate({"u": {"servers": [self.up.url]}},
                           [{"path": "/", "upstream": "u",
                             "auth": {"basic": "htpasswd"}}], start=False)
            p = subprocess.run([AGATE, "-t", "-c", a.path],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertRegex(p.stderr, r"htpasswd:4:%d: user '%s'" %
                             (len(user) + 2, user))
            self.assertIn(why, p.stderr)

    def test_file_is_reread_on_hup_and_a_bad_one_keeps_the_old(self):
        self.write_htpasswd([("ann", make_hash("old", "$6$"))])
        a = self.auth_agate()
        self.assertEqual(a.get("/", headers=basic("ann", "old")).status, 200)
        self.write_htpasswd([("ann", make_hash("new", "$6$"))])
        a.signal(signal.SIGHUP)
        wait_until(lambda: a.get("/", headers=basic("ann", "new")).status
                   == 200, what="the new password")
        # The cached success of the old password does not outlive it.
        self.assertEqual(a.get("/", headers=basic("ann", "old")).status, 401)
        self.write_htpasswd([("ann", "plaintext")])
        a.signal(signal.SIGHUP)
        wait_until(lambda: "plain-text" in a.error_log(),
                   what="the reload error")
        self.assertEqual(a.get("/", headers=basic("ann", "new")).status, 200)

    def test_successes_are_cached_failures_are_not(self):
        self.write_htpasswd([("ann", make_hash("pw", "$2b$", 6))])
        a = self.auth_agate(binary=AGATE_TEST)
        c = a.conn()
        for _ in range(10):
            c.request("GET", "/", headers=basic("ann", "pw"))
            self.assertEqual(c.getresponse().read() is not None, True)
        for _ in range(5):
            c.request("GET", "/", headers=basic("ann", "bad"))
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 401)
        c.close()
        st = a.get("/_agate_test/helpers").json()["stats"]
        self.assertEqual(st["submitted"], 1 + 5)


class SignatureTest(AgateTest):
    SECRET = b"It's a Secret to Everybody"

    def sig_agate(self, **server):
        self.up = self.upstream()
        with open(os.path.join(self.dir, "webhook.secret"), "wb") as f:
            f.write(self.SECRET + b"\n")
        return self.agate({"u": {"servers": [self.up.url]}},
                          [{"path": "/hook", "upstream": "u",
                            "verify_signature": {
                                "header": "X-Hub-Signature-256",
                                "secret_file": "webhook.secret"}}],
                          workers=1, **server)

    def sign(self, body, secret=None):
        mac = hmac.new(secret or self.SECRET, body, hashlib.sha256)
        return "sha256=" + mac.hexdigest()

    def post(self, a, body, sig, chunked=False):
        h = {"X-Hub-Signature-256": sig} if sig is not None else {}
        if not chunked:
            return a.request("POST", "/hook?echo=1", body=body, headers=h,
                             timeout=20)
        c = a.conn(20)
        try:
            c.request("POST", "/hook?echo=1", headers=h, encode_chunked=True,
                      body=iter([body[i:i + 7000] for i in
                                 range(0, len(body), 7000)]))
            r = c.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def test_right_signature_passes_with_the_body_intact(self):
        a = self.sig_agate()
        for body in (b"", b'{"zen":"Keep it logically awesome."}',
                     os.urandom(20000), os.urandom(600000)):
            r = self.post(a, body, self.sign(body))
            self.assertEqual(r.status, 200, r.body[:200])
            seen = r.json()
            self.assertEqual(seen["body_len"], len(body))
            self.assertEqual(seen["body_sha256"],
                             hashlib.sha256(body).hexdigest())
        body = os.urandom(100000)
        r = self.post(a, body, self.sign(body), chunked=True)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["body_sha256"],
                         hashlib.sha256(body).hexdigest())
        self.assertEqual(self.up.stats()["requests"], 5)

    def test_wrong_missing_malformed_are_401_and_reach_nobody(self):
        a = self.sig_agate()
        body = b'{"action":"opened"}'
        big = os.urandom(300000)
        cases = [
            (body, self.sign(body, b"another secret")),
            (body, self.sign(body + b" ")),
            (big, self.sign(big[:-1])),        # checked in the pool
            (body, None),
            (body, "sha1=" + hashlib.sha1(body).hexdigest()),
            (body, self.sign(body)[:-2]),
            (body, "sha256=" + "zz" * 32),
        ]
        for b, sig in cases:
            r = self.post(a, b, sig)
            self.assertEqual(r.status, 401, (sig, r.body))
        self.assertEqual(self.up.stats()["requests"], 0)
        # Upper-case hex is the same signature.
        r = self.post(a, body, self.sign(body).upper().replace("SHA256",
                                                               "sha256"))
        self.assertEqual(r.status, 200)

    def test_body_over_the_limit_is_413(self):
        a = self.sig_agate(max_body_size="64k")
        body = os.urandom(70000)
        r = self.post(a, body, self.sign(body))
        self.assertEqual(r.status, 413)
        self.assertEqual(self.up.stats()["requests"], 0)


if __name__ == "__main__":
    main()
