"""Integration-test harness: real agate processes against real upstreams.

Each test starts the agate binary (AGATE_BIN) on a generated config in a
fresh temporary folder, with testup (TESTUP_BIN) upstreams on free loopback
ports, and talks to it over plain sockets or http.client.  Nothing here
fakes agate: what a test sees is what a client would see.

Configs are written as JSON, which is valid YAML (agate reads it with
libyaml); tests of the YAML syntax itself live in the unit tests.
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal as sigmod
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

AGATE = os.environ.get("AGATE_BIN", os.path.abspath("agate"))
# agate with test-only offload job kinds (tests/testbuild.c).
AGATE_TEST = os.environ.get("AGATE_TEST_BIN", os.path.abspath("agate-test"))
TESTUP = os.environ.get("TESTUP_BIN", os.path.abspath("tests/upstream/testup"))
# "native" or "curl": forced on every upstream (else each uses its default).
TRANSPORT = os.environ.get("AGATE_TEST_TRANSPORT", "")

# `make check-valgrind`: every agate runs under memcheck; its reports go
# to valgrind-PID.log in the test's folder and are checked at teardown.
VALGRIND = os.environ.get("AGATE_VALGRIND", "") not in ("", "0")
VALGRIND_CMD = ["valgrind", "--tool=memcheck", "--trace-children=no",
                "--child-silent-after-fork=no", "--leak-check=full",
                "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                "--num-callers=30", "--log-file=valgrind-%p.log"]
# Under valgrind everything is 20-50 times slower: waits grow with it.
SLOW = 8.0 if VALGRIND else 1.0
VALGRIND_BAD = re.compile(r"Invalid (read|write|free)|uninitialised|"
                          r"definitely lost: [1-9]|Mismatched free|"
                          r"ERROR SUMMARY: [1-9]")

# What a sanitizer or a crash leaves in a log: any of these fails the test.
BAD_LOG = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehavior|"
                     r"runtime error:|Segmentation fault|core dumped")

PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyz\n"


def pattern_bytes(n):
    """The body testup sends for size=n."""
    reps = PATTERN * (n // len(PATTERN) + 1)
    return reps[:n]


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    timeout *= SLOW
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_proc(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def rss_kib(pid):
    m = re.search(r"VmRSS:\s+(\d+) kB", read_proc("/proc/%d/status" % pid))
    return int(m.group(1)) if m else 0


def fd_targets(pid):
    """What each open fd of pid points at (socket:[..], pipe:[..], paths)."""
    out = []
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            out.append(os.readlink(os.path.join(d, name)))
        except OSError:
            pass
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    st = read_proc("/proc/%d/stat" % pid)
    return bool(st) and st.split(")")[-1].split()[0] != "Z"


class Testup:
    """A testup upstream on a free loopback port."""

    def __init__(self, workdir, name="up"):
        self.name = name
        self.log = open(os.path.join(workdir, "testup-%s.log" % name), "w+")
        self.proc = subprocess.Popen(
            [TESTUP, "-l", "127.0.0.1:0", "-n", name],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("testup did not start: %r" % line)
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d" % self.port

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def stats(self):
        return self.get("/_stats")

    def last(self):
        return self.get("/_last")

    def reset(self):
        return self.get("/_reset")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text


class RawUpstream:
    """A scripted upstream: answers every request with the given bytes.

    For what testup will not send: a hostile or broken server.  Records
    each request head it received in .heads.
    """

    def __init__(self, answer):
        self.answer = answer
        self.heads = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        with c:
            data = b""
            c.settimeout(5)
            try:
                while b"\r\n\r\n" not in data:
                    b = c.recv(65536)
                    if not b:
                        return
                    data += b
                self.heads.append(data.partition(b"\r\n\r\n")[0])
                c.sendall(self.answer)
            except OSError:
                pass

    def close(self):
        self.sock.close()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # list of (name, value)
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


class Agate:
    """An agate supervisor with its workers, on a generated config."""

    def __init__(self, workdir, config, name="agate.yaml", binary=None):
        self.binary = binary or AGATE
        self.dir = workdir
        self.path = os.path.join(workdir, name)
        self.write_config(config)
        self.access_path = os.path.join(workdir, "access.log")
        self.error_path = os.path.join(workdir, "error.log")
        self.proc = None

    @staticmethod
    def default_config(port, upstreams, routes, **server):
        srv = {"workers": 2, "listen": ["127.0.0.1:%d" % port],
               "pid_file": "agate.pid"}
        srv.update(server)
        return {"server": srv,
                "log": {"level": "info", "access": "access.log",
                        "error": "stderr"},
                "upstreams": upstreams, "routes": routes}

    def write_config(self, config):
        if not isinstance(config, str) and TRANSPORT:
            # CI runs the suite once per transport (docs/testing.md).
            config = json.loads(json.dumps(config))
            for up in config.get("upstreams", {}).values():
                up.setdefault("transport", TRANSPORT)
        text = config if isinstance(config, str) else json.dumps(config,
                                                                 indent=1)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.path)
        if not isinstance(config, str):
            self.config = config

    @property
    def port(self):
        listen = self.config["server"]["listen"][0]
        addr = listen if isinstance(listen, str) else listen["address"]
        return int(addr.rsplit(":", 1)[1])

    def start(self, wait=True, extra_args=()):
        self.err = open(self.error_path, "a+")
        prefix = VALGRIND_CMD if VALGRIND else []
        self.proc = subprocess.Popen(prefix + [self.binary, "-c", self.path] +
                                     list(extra_args),
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.err, cwd=self.dir)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10):
        timeout *= SLOW
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("agate exited with %s:\n%s" % (
                    self.proc.returncode, self.error_log()))
            try:
                return self.get("/healthz", timeout=1).status == 200 and \
                    len(self.workers()) >= self.config["server"].get(
                        "workers", 1)
            except OSError:
                return False
        wait_until(up, timeout, what="agate to answer its health check")

    @property
    def pid(self):
        return self.proc.pid

    def workers(self):
        text = read_proc("/proc/%d/task/%d/children" % (self.pid, self.pid))
        return [int(p) for p in text.split() if alive(int(p))]

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, sig=sigmod.SIGTERM, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        workers = self.workers()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for w in workers:
            if alive(w):
                os.kill(w, sigmod.SIGKILL)
        return rc

    def error_log(self):
        return read_proc(self.error_path)

    def access_log(self):
        lines = read_proc(self.access_path).splitlines()
        return [json.loads(l) for l in lines if l.strip()]

    # -- clients --

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        c = self.conn(timeout * SLOW)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw(self, data, timeout=5, read_until_close=True):
        """Sends bytes, returns every byte received until close/timeout."""
        s = socket.create_connection(("127.0.0.1", self.port),
                                     timeout=timeout)
        try:
            s.sendall(data)
            chunks = []
            while True:
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    break
                if not b:
                    break
                chunks.append(b)
                if not read_until_close:
                    break
            return b"".join(chunks)
        finally:
            s.close()


def parse_status(raw):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
    return int(m.group(1)) if m else None


class AgateTest(unittest.TestCase):
    """Base class: a temp dir, upstreams, and agate; cleaned up after."""

    maxDiff = None

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="agate-it-")
        self.ups = []
        self.agates = []

    def upstream(self, name="up"):
        u = Testup(self.dir, name)
        self.ups.append(u)
        return u

    def agate(self, upstreams=None, routes=None, config=None, start=True,
              binary=None, **server):
        if config is None:
            config = Agate.default_config(free_port(), upstreams or {},
                                          routes or [], **server)
        # A second agate of the same test gets its own config file and pid
        # file: agate refuses a pid file that names a running process.
        name = "agate.yaml"
        if self.agates:
            n = len(self.agates) + 1
            name = "agate-%d.yaml" % n
            srv = config.get("server", {}) if isinstance(config, dict) \
                else {}
            if srv.get("pid_file") == "agate.pid":
                srv["pid_file"] = "agate-%d.pid" % n
        a = Agate(self.dir, config, name=name, binary=binary)
        self.agates.append(a)
        if start:
            a.start()
        return a

    def tearDown(self):
        problems = []
        for a in self.agates:
            a.stop(sigmod.SIGINT)
            if getattr(a, "err", None):
                a.err.close()
            log = a.error_log()
            sys.stdout.write("--- agate error log (%s) ---\n%s" % (
                self.id(), log[-6000:]))
            if BAD_LOG.search(log):
                problems.append("agate error log shows a crash or "
                                "sanitizer report")
        if VALGRIND:
            for name in sorted(os.listdir(self.dir)):
                if not name.startswith("valgrind-"):
                    continue
                text = read_proc(os.path.join(self.dir, name))
                if VALGRIND_BAD.search(text):
                    sys.stdout.write("--- %s ---\n%s" % (name, text[-8000:]))
                    problems.append("valgrind reports in %s" % name)
        for u in self.ups:
            log = u.stop()
            if BAD_LOG.search(log):
                problems.append("testup %s crashed: %s" % (u.name, log[-2000:]))
        shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            self.fail("; ".join(problems))


def main():
    unittest.main(verbosity=2)
