"""Upstream servers named by host names (gateway/upstream/dns.c): looked
up without blocking, again every `resolve` or sooner when the answer's
TTL says so, every address balanced over, addresses that leave the
answer drained, failed lookups keeping the last good addresses.

A tiny DNS server (Python stdlib, UDP on 127.0.0.1) answers agate, which
is pointed at it with `resolver:`, so no test touches the machine's
resolver.  The name's addresses are 127.0.0.1 and 127.0.0.2 (both
loopback on Linux), each with a testup on the same port that answers
with its own name, so a response says which address served it.
"""

import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request

from harness import (AGATE, SLOW, TESTUP, TRANSPORT, AgateTest, free_port,
                     main, wait_until)

NAME = "api.agate-test"


class DNSServer:
    """Answers A queries for its names with their addresses and TTL,
    AAAA with no record, other names with NXDOMAIN; or, per mode,
    SERVFAIL or nothing; after delay seconds.  Counts A queries per
    name."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.records = {}           # name -> ([address], ttl)
        self.mode = "answer"        # answer | servfail | silent
        self.delay = 0.0            # seconds before each answer
        self.queries = {}
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def set(self, name, addresses, ttl=300):
        with self.lock:
            self.records[name] = (list(addresses), ttl)

    def count(self, name):
        with self.lock:
            return self.queries.get(name, 0)

    def close(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()

    def _serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._reply(data)
            if reply is None:
                continue
            if self.delay:
                t = threading.Timer(self.delay, self._send, (reply, peer))
                t.daemon = True
                t.start()
            else:
                self._send(reply, peer)

    def _send(self, reply, peer):
        try:
            self.sock.sendto(reply, peer)
        except OSError:
            pass                    # closed meanwhile

    def _reply(self, q):
        if len(q) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        if qd != 1:
            return None
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        if i + 5 > len(q):
            return None
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        name = ".".join(labels).lower()     # evdns randomises the case
        with self.lock:
            if qtype == 1:
                self.queries[name] = self.queries.get(name, 0) + 1
            mode = self.mode
            rec = self.records.get(name)
        if mode == "silent":
            return None
        rd = flags & 0x0100
        answers = []
        if mode == "servfail":
            rcode = 2
        elif rec is None:
            rcode = 3
        else:
            rcode = 0
            if qtype == 1:
                addrs, ttl = rec
                for a in addrs:
                    answers.append(struct.pack("!HHHIH", 0xC00C, 1, 1, ttl,
                                               4) + socket.inet_aton(a))
        head = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 |
                           rcode, 1, len(answers), 0, 0)
        return head + question + b"".join(answers)


def free_port_both():
    """A port free on 127.0.0.1 and on 127.0.0.2."""
    for _ in range(50):
        p = free_port()
        try:
            s = socket.socket()
            s.bind(("127.0.0.2", p))
            s.close()
            return p
        except OSError:
            continue
    raise RuntimeError("no port free on both loopback addresses")


class DNSTest(AgateTest):

    def setUp(self):
        super().setUp()
        self.dns = DNSServer()
        self.port = free_port_both()
        self.testups = []
        self.admin_port = free_port()

    def tearDown(self):
        super().tearDown()
        for p, log in self.testups:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            p.stdout.close()
            log.close()
        self.dns.close()

    def serve_at(self, addr, name):
        log = open(os.path.join(self.dir, "testup-%s.log" % name), "w")
        p = subprocess.Popen([TESTUP, "-l", "%s:%d" % (addr, self.port),
                              "-n", name], stdout=subprocess.PIPE,
                             stderr=log, text=True)
        self.testups.append((p, log))
        line = p.stdout.readline()
        self.assertIn("listening on", line)

    def start(self, resolve="1s", workers=1, scheme="http", **upstream):
        up = {"servers": ["%s://%s:%d" % (scheme, NAME, self.port)],
              "resolve": resolve, "retry": {"attempts": 1}}
        up.update(upstream)
        gw = self.agate({"api": up}, [{"path": "/", "upstream": "api"}],
                        start=False, workers=workers)
        gw.config["resolver"] = "127.0.0.1:%d" % self.dns.port
        gw.config["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        gw.write_config(gw.config)
        gw.start()
        return gw

    def served_by(self, gw, path="/x"):
        r = gw.get(path)
        self.assertEqual(r.status, 200, r.body)
        return r.json()["server"]

    def metric(self, metric, **labels):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" %
                                    self.admin_port, timeout=5) as r:
            text = r.read().decode()
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        for line in text.splitlines():
            m = re.match(r"(\w+)\{(.*)\} (\d+)$", line)
            if m and m.group(1) == metric and \
                    ",".join(sorted(m.group(2).split(","))) == want:
                return int(m.group(3))
        return None

    def test_every_address_of_a_name_serves(self):
        self.serve_at("127.0.0.1", "one")
        self.serve_at("127.0.0.2", "two")
        self.dns.set(NAME, ["127.0.0.1", "127.0.0.2"])
        gw = self.start(resolve="30s")
        # A new worker waits for its first answers before it serves.
        seen = [self.served_by(gw) for _ in range(10)]
        # round_robin walks the addresses: each serves every other one.
        self.assertEqual(seen.count("one"), 5, seen)
        self.assertEqual(seen.count("two"), 5, seen)
        self.assertEqual(self.metric("agate_upstream_addresses",
                                     upstream="api", name=NAME), 2)

    def test_new_address_used_and_old_one_drained(self):
        self.serve_at("127.0.0.1", "one")
        self.serve_at("127.0.0.2", "two")
        # A long TTL: resolve (1s) decides when to look again.
        self.dns.set(NAME, ["127.0.0.1"], ttl=300)
        # Pools keep idle connections long, so that only draining can
        # close them; but libcurl closes its own only past their age.
        gw = self.start(resolve="1s", keepalive_timeout="1s" if
                        TRANSPORT == "curl" else "60s")
        wait_until(lambda: gw.get("/x").status == 200, 5 * SLOW,
                   what="the name to resolve")
        self.assertEqual(self.served_by(gw), "one")
        slow = {}

        def slow_request():
            c = http.client.HTTPConnection("127.0.0.1", gw.port,
                                           timeout=15 * SLOW)
            try:
                c.request("GET", "/slow?delay=3000")
                r = c.getresponse()
                slow["status"] = r.status
                slow["body"] = json.loads(r.read())
            finally:
                c.close()
        before = self.up_stats("127.0.0.1")["requests"]
        t = threading.Thread(target=slow_request)
        t.start()
        # The slow request is at 127.0.0.1 before the answer changes.
        wait_until(lambda: self.up_stats("127.0.0.1")["requests"] > before,
                   5 * SLOW, what="the slow request to reach 127.0.0.1")
        self.dns.set(NAME, ["127.0.0.2"], ttl=300)
        wait_until(lambda: self.served_by(gw) == "two", 5 * SLOW,
                   what="new requests to go to the new address")
        seen = [self.served_by(gw) for _ in range(6)]
        self.assertEqual(seen, ["two"] * 6)
        t.join(15 * SLOW)
        self.assertEqual(slow.get("status"), 200, slow)
        self.assertEqual(slow["body"]["server"], "one")
        # The slow one at least was in flight (a probe of the loop above
        # may have been too).
        self.assertRegex(gw.error_log(), r"address 127\.0\.0\.1 is gone; "
                         r"draining it \([1-9]\d* in flight\)")
        # No connection to the old address stays while traffic goes on:
        # the only one open at 127.0.0.1 is the one asking (at once for
        # agate's own client; libcurl's pool drops its idle ones after
        # keepalive_timeout, when it next looks at them).
        wait_until(lambda: self.served_by(gw) == "two" and
                   self.up_stats("127.0.0.1")["open"] == 1,
                   4 * SLOW, what="the drained connections to close")

    def up_stats(self, addr):
        conn = http.client.HTTPConnection(addr, self.port, timeout=5)
        try:
            conn.request("GET", "/_stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def test_failed_lookup_keeps_the_last_good_addresses(self):
        self.serve_at("127.0.0.1", "one")
        self.dns.set(NAME, ["127.0.0.1"], ttl=1)
        gw = self.start(resolve="1s")
        wait_until(lambda: gw.get("/x").status == 200, 5 * SLOW,
                   what="the name to resolve")
        self.dns.mode = "servfail"
        wait_until(lambda: (self.metric("agate_dns_lookups_total",
                                        upstream="api", name=NAME,
                                        result="failed") or 0) >= 2,
                   8 * SLOW, what="failed lookups to be counted")
        for _ in range(5):
            self.assertEqual(self.served_by(gw), "one")
        self.assertEqual(self.metric("agate_upstream_addresses",
                                     upstream="api", name=NAME), 1)
        self.assertGreaterEqual(self.metric("agate_dns_lookups_total",
                                            upstream="api", name=NAME,
                                            result="ok"), 1)
        self.assertRegex(gw.error_log(), r"cannot resolve %s \([^)]*\S; "
                         r"1 in a row\), keeping its 1 address" %
                         re.escape(NAME))
        # A server that stops answering: the lookup times out (2 s, sent
        # twice), with the same outcome.
        self.dns.mode = "silent"
        failed = self.metric("agate_dns_lookups_total", upstream="api",
                             name=NAME, result="failed")
        wait_until(lambda: self.metric("agate_dns_lookups_total",
                                       upstream="api", name=NAME,
                                       result="failed") > failed,
                   10 * SLOW, what="a timed-out lookup to be counted")
        self.assertEqual(self.served_by(gw), "one")

    def test_start_without_an_answer_serves_503_then_200(self):
        self.serve_at("127.0.0.1", "one")
        self.dns.mode = "servfail"
        gw = self.start(resolve="2s")
        r = gw.get("/x")
        self.assertEqual(r.status, 503)
        self.assertIn("no address for upstream api", r.json()["error"])
        wait_until(lambda: "upstream api: cannot resolve %s (" % NAME in
                   gw.error_log(), 5 * SLOW, what="the failure logged")
        self.assertIn("retrying", gw.error_log())
        self.dns.set(NAME, ["127.0.0.1"])
        self.dns.mode = "answer"
        # Retried within 2 s (the backoff stops at resolve), no reload.
        wait_until(lambda: gw.get("/x").status == 200, 6 * SLOW,
                   what="the upstream to serve once the name resolves")
        self.assertEqual(self.served_by(gw), "one")
        self.assertIn("resolves again", gw.error_log())

    def test_ttl_below_resolve_is_respected(self):
        self.serve_at("127.0.0.1", "one")
        self.dns.set(NAME, ["127.0.0.1"], ttl=1)
        gw = self.start(resolve="30s")
        wait_until(lambda: gw.get("/x").status == 200, 5 * SLOW,
                   what="the name to resolve")
        start = self.dns.count(NAME)
        t0 = time.monotonic()
        # With resolve alone there would be no second query for 27 s.
        wait_until(lambda: self.dns.count(NAME) >= start + 3, 6 * SLOW,
                   what="the name to be asked again after its TTL")
        # Not much sooner than the TTL either: 3 asks take >= ~1.8 s.
        self.assertGreater(time.monotonic() - t0, 1.6)

    def test_h2c_connections_to_a_drained_address_close(self):
        from test_h2upstream import H2Upstream
        h2 = H2Upstream()
        self.addCleanup(lambda: (h2.stop(), self.assertEqual(h2.errors, [])))
        self.dns.set(NAME, ["127.0.0.1"], ttl=300)
        self.port = h2.port
        gw = self.start(resolve="1s", scheme="h2c", transport="auto",
                        keepalive_timeout="60s")
        wait_until(lambda: gw.get("/echo/a").status == 200, 5 * SLOW,
                   what="the h2c server to answer by name")
        self.assertEqual(len(h2.open_conns()), 1)
        # The name moves: the idle HTTP/2 connection says GOAWAY, closes.
        self.dns.set(NAME, ["127.0.0.2"], ttl=300)
        wait_until(lambda: not h2.open_conns(), 5 * SLOW,
                   what="the idle h2c connection to close")
        with h2.lock:
            self.assertIn(7, [f["type"] for f in h2.frames])

    def test_reload_finds_the_addresses_before_serving(self):
        self.serve_at("127.0.0.1", "one")
        self.dns.set(NAME, ["127.0.0.1"])
        gw = self.start(resolve="30s", workers=2)
        statuses = []
        stop = threading.Event()

        def loop():
            while not stop.is_set() and len(statuses) < 5000:
                statuses.append(gw.get("/x").status)
        t = threading.Thread(target=loop)
        t.start()
        try:
            wait_until(lambda: len(statuses) >= 20, 5 * SLOW,
                       what="requests before the reload")
            old = set(gw.workers())
            # The new generation looks the name up again, on its own; a
            # slow answer must not cost requests (the old one serves
            # until the new has its addresses).
            self.dns.delay = 0.3
            gw.signal(signal.SIGHUP)
            wait_until(lambda: not old & set(gw.workers()) and
                       len(gw.workers()) == 2, 10 * SLOW,
                       what="a new generation of workers")
            n = len(statuses)
            wait_until(lambda: len(statuses) >= n + 20, 5 * SLOW,
                       what="requests after the reload")
        finally:
            stop.set()
            t.join(10)
        bad = [s for s in statuses if s != 200]
        self.assertEqual(bad, [], "%d of %d requests failed" % (
            len(bad), len(statuses)))

    def test_hosts_names_resolve_without_dns(self):
        # localhost is in /etc/hosts: no query for it, it serves at once.
        self.serve_at("127.0.0.1", "one")
        gw = self.agate({"api": {"servers": ["http://localhost:%d" %
                                             self.port]}},
                        [{"path": "/", "upstream": "api"}], start=False,
                        workers=1)
        gw.config["resolver"] = "127.0.0.1:%d" % self.dns.port
        gw.write_config(gw.config)
        gw.start()
        self.assertEqual(self.served_by(gw), "one")
        self.assertEqual(self.dns.count("localhost"), 0)


class ResolverConfigTest(AgateTest):

    def check(self, config):
        path = os.path.join(self.dir, "agate.yaml")
        with open(path, "w") as f:
            f.write(config)
        p = subprocess.run([AGATE, "-t", "-c", path], capture_output=True,
                           text=True, timeout=10)
        return p.returncode, p.stderr.strip(), path

    def test_bad_resolver_values(self):
        base = ("server:\n  listen: [\"127.0.0.1:1\"]\n"
                "upstreams:\n  u:\n    servers: [\"http://a.example:80\"]\n")
        for value, col in (("dns.example:53", 11), ("127.0.0.1:99999", 11),
                           ("127.0.0.1:53x", 11), ('"[::1"', 11),
                           ("[\"127.0.0.1\", \"::1:53\"]", 25)):
            rc, err, path = self.check("resolver: %s\n" % value + base)
            self.assertEqual(rc, 1, value)
            self.assertRegex(err, r"^agate: %s:1:%d: resolver: expected an "
                             r"IP address" % (re.escape(path), col), value)
        rc, err, path = self.check(base + "    resolve: 500ms\n")
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"%s:6:14: resolve: " % re.escape(path))

    def test_check_needs_no_dns(self):
        # A name nothing resolves, and a resolver nothing answers: -t only
        # reads the file.
        rc, err, _ = self.check(
            "resolver: [\"127.0.0.1:9\", \"[::1]:9\"]\n"
            "server:\n  listen: [\"127.0.0.1:1\"]\n"
            "upstreams:\n  u:\n    servers: [\"http://nowhere.invalid\"]\n"
            "    resolve: 5s\n")
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    main()
