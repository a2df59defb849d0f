#!/usr/bin/env python3
"""agate's benchmark: agate against nginx and HAProxy, on loopback.

Starts an nginx upstream (one worker, small JSON answer and a 100 KiB
file), then agate, nginx as a reverse proxy and HAProxy with the same
number of workers (threads for HAProxy), all on free 127.0.0.1 ports.
For each scenario it runs wrk against the gateways in interleaved rounds
(agate, nginx, haproxy, agate, ...) and reports medians, and each
gateway's ratio to nginx taken within the same round.  A separate short
run under `strace -c` counts syscalls per request.  Scenario 6 opens
10,000 idle keep-alive connections and weighs them; scenario 7 is a
snapshot, during scenario 2, of how the connections spread over workers.

Everything runs from a temporary folder that is removed at the end; the
only files written elsewhere are the report and the chart (--out).
Every process it starts is stopped by PID.  Python 3 stdlib only.

    python3 tests/bench/run.py --agate ./agate --out docs [--quick]

See tests/bench/README.md.
"""

import argparse
import datetime
import errno
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
CLK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

# Exactly 100 bytes; no single quote (it sits in an nginx '...' string).
UPSTREAM_BODY = ('{"status":"ok","service":"bench-upstream",'
                 '"message":"a small JSON answer of about 100 bytes","n":10}')
BIG_SIZE = 100 * 1024
MAXCONN = 12000           # agate max_connections, HAProxy maxconn
UPSTREAM_KEEPALIVE = 64   # idle upstream connections kept per worker
WORKER_CONNECTIONS = 16384

TOOLS = [  # (command, Debian package)
    ("nginx", "nginx"), ("haproxy", "haproxy"), ("wrk", "wrk"),
    ("gnuplot", "gnuplot-nox"), ("strace", "strace"), ("ss", "iproute2"),
]

# The wrk scenarios.  7 is measured during 2's runs; 6 is not a wrk run.
SCENARIOS = {
    1: dict(short="GET 50c", title="small GET, keep-alive, 50 connections",
            conns=50, path="/"),
    2: dict(short="GET 1000c",
            title="small GET, keep-alive, 1000 connections",
            conns=1000, path="/"),
    3: dict(short="100 KiB", title="100 KiB response, 50 connections",
            conns=50, path="/100k.bin"),
    4: dict(short="POST 16 KiB", title="16 KiB POST, 50 connections",
            conns=50, path="/", script="post16k.lua"),
    5: dict(short="conn/req",
            title="new connection per request, 50 connections",
            conns=50, path="/", headers=["Connection: close"]),
}
IDLE_TITLE = "10,000 idle keep-alive connections"
SHARE_TITLE = "share of connections per worker (during scenario 2)"


class BenchError(Exception):
    pass


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# ---------------------------------------------------------------- /proc

def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def alive(pid):
    st = read_text("/proc/%d/stat" % pid)
    return bool(st) and st.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    st = read_text("/proc/%d/stat" % pid)
    if not st:
        return None
    f = st.rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def children(pid):
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tasks:
        text = read_text("/proc/%d/task/%s/children" % (pid, t))
        out.extend(int(p) for p in text.split())
    return [p for p in out if alive(p)]


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def status_kib(pid, key):
    m = re.search(r"^%s:\s+(\d+) kB" % key,
                  read_text("/proc/%d/status" % pid), re.M)
    return int(m.group(1)) if m else 0


def threads(pid):
    try:
        return len(os.listdir("/proc/%d/task" % pid))
    except OSError:
        return 0


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def system_busy_ticks():
    """Busy ticks of all CPUs (user nice system irq softirq steal)."""
    f = read_text("/proc/stat").splitlines()[0].split()[1:]
    v = [int(x) for x in f]
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


def children_cpu_ticks():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * CLK


# ---------------------------------------------------------------- setup

def find_tool(name):
    path = shutil.which(name)
    if path:
        return path
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def ensure_tools():
    missing = [pkg for cmd, pkg in TOOLS if not find_tool(cmd)]
    if not missing:
        return {cmd: find_tool(cmd) for cmd, _ in TOOLS}
    line = "apt-get install -y " + " ".join(missing)
    if os.geteuid() != 0:
        print("missing tools; as root, run:\n  " + line, file=sys.stderr)
        sys.exit(1)
    log("installing: " + line)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y"] + missing
    if subprocess.call(cmd, env=env) != 0:
        subprocess.call(["apt-get", "update"], env=env)
        if subprocess.call(cmd, env=env) != 0:
            print("could not install: " + " ".join(missing), file=sys.stderr)
            sys.exit(1)
    still = [cmd for cmd, _ in TOOLS if not find_tool(cmd)]
    if still:
        print("still missing after install: " + " ".join(still),
              file=sys.stderr)
        sys.exit(1)
    return {cmd: find_tool(cmd) for cmd, _ in TOOLS}


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(template, **values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError("%s: unfilled %s" % (template, ", ".join(left)))
    return text


def http_get(port, path="/", timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def parse_scalar(text):
    """--agate-upstream values: a YAML scalar if PyYAML is there, else
    JSON, else the string itself."""
    try:
        import yaml
        return yaml.safe_load(text)
    except ImportError:
        pass
    except Exception:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return {"true": True, "false": False}.get(text, text)


# ---------------------------------------------------------------- servers

class Server:
    """A server this script started, with its workers."""

    binary_name = ""
    stop_signal = signal.SIGTERM

    def __init__(self, name, tmp, port, workers):
        self.name = name
        self.tmp = tmp
        self.port = port
        self.nworkers = workers
        self.proc = None
        self.error = None          # why it is out of the benchmark
        self.known = set()         # every pid seen, for the final cleanup
        self.logpath = os.path.join(tmp, "%s.log" % name)

    def command(self):
        raise NotImplementedError

    def start(self):
        self.logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.tmp,
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.logf,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.known.add(self.proc.pid)
        self.wait_ready()

    def log_tail(self, n=6):
        lines = read_text(self.logpath).strip().splitlines()
        return " | ".join(lines[-n:])

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            try:
                if (http_get(self.port) == 200 and
                        self.units() >= self.nworkers):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError("not ready after %.0fs: %s" % (timeout,
                                                        self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def workers(self):
        """The processes that serve connections."""
        w = children(self.proc.pid) if self.running() else []
        self.known.update(w)
        return w

    def units(self):
        """Workers (processes, or threads for HAProxy) now running."""
        return len(self.workers())

    def all_pids(self):
        if not self.running():
            return []
        pids = [self.proc.pid] + descendants(self.proc.pid)
        self.known.update(pids)
        return pids

    def strace_targets(self):
        return self.workers()

    def stop(self):
        if self.proc is None:
            return
        self.all_pids()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(self.stop_signal)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # Workers that outlived their master: only ours (same binary).
        for pid in self.known - {self.proc.pid}:
            exe = read_text("/proc/%d/cmdline" % pid).split("\0")[0]
            if alive(pid) and os.path.basename(exe).startswith(
                    self.binary_name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.logf.close()


class NginxServer(Server):
    binary_name = "nginx"

    def __init__(self, name, tmp, port, workers, nginx, conf_text):
        Server.__init__(self, name, tmp, port, workers)
        self.nginx = nginx
        self.conf = os.path.join(tmp, "%s.conf" % name)
        with open(self.conf, "w") as f:
            f.write(conf_text)

    def command(self):
        return [self.nginx, "-p", self.tmp, "-c", self.conf,
                "-e", os.path.join(self.tmp, "%s.error.log" % self.name)]


class HAProxy(Server):
    binary_name = "haproxy"

    def __init__(self, name, tmp, port, workers, haproxy, conf_text):
        Server.__init__(self, name, tmp, port, workers)
        self.haproxy = haproxy
        self.conf = os.path.join(tmp, "haproxy.cfg")
        self.sock = os.path.join(tmp, "haproxy.sock")
        with open(self.conf, "w") as f:
            f.write(conf_text)

    def command(self):
        return [self.haproxy, "-db", "-f", self.conf]

    def workers(self):
        # One process; its threads are the workers.
        return [self.proc.pid] if self.running() else []

    def units(self):
        return threads(self.proc.pid) if self.running() else 0

    def thread_accepts(self):
        """Connections handed to each thread so far (show activity)."""
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            s.connect(self.sock)
            s.sendall(b"show activity\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            s.close()
        except OSError:
            return None
        m = re.search(rb"^accq_pushed:\s*\d+\s*\[([\d ]+)\]", data, re.M)
        return [int(x) for x in m.group(1).split()] if m else None


class Agate(Server):
    binary_name = "agate"
    stop_signal = signal.SIGINT      # fast stop

    def __init__(self, name, tmp, port, workers, binary, upstream_port,
                 extra):
        Server.__init__(self, name, tmp, port, workers)
        self.binary = binary
        self.conf = os.path.join(tmp, "agate.yaml")
        upstream = {"servers": ["http://127.0.0.1:%d" % upstream_port],
                    "keepalive": UPSTREAM_KEEPALIVE}
        for key, value in extra:
            node = upstream
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        self.upstream_cfg = upstream
        # JSON values are valid YAML flow scalars and mappings.
        text = (
            "# written by tests/bench/run.py\n"
            "server:\n"
            "  workers: %d\n"
            "  listen: [\"127.0.0.1:%d\"]\n"
            "  max_connections: %d\n"
            "log:\n"
            "  level: warn\n"
            "  access: off\n"
            "upstreams:\n"
            "  b: %s\n"
            "routes:\n"
            "  - path: /\n"
            "    upstream: b\n" % (workers, port, MAXCONN,
                                   json.dumps(upstream)))
        with open(self.conf, "w") as f:
            f.write(text)

    def command(self):
        return [self.binary, "-c", self.conf]

    def start(self):
        r = subprocess.run([self.binary, "-t", "-c", self.conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
        if r.returncode != 0:
            msg = " | ".join(r.stdout.strip().splitlines()[-3:])
            raise BenchError("config refused by agate -t: " +
                             msg.replace(self.tmp + "/", ""))
        Server.start(self)


# ---------------------------------------------------------------- wrk

def to_us(value, unit):
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7,
                           "h": 3.6e9}[unit]


def parse_wrk(text):
    r = {"requests": 0, "rps": 0.0, "p50_us": None, "p99_us": None,
         "non2xx": 0, "sock": {}, "ok": False}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        r["requests"] = int(m.group(1))
        r["ok"] = True
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s+%s(?:\.0+)?%%\s+([\d.]+)(us|ms|s|m|h)\b" % pct,
                      text, re.M)
        if m:
            r[key] = to_us(m.group(1), m.group(2))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", text)
    if m:
        r["sock"] = {k: int(v) for k, v in zip(
            ("connect", "read", "write", "timeout"), m.groups()) if int(v)}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


def run_wrk(ctx, port, spec, duration, midpoint=None):
    """Runs wrk; midpoint() is called halfway through.  Bounded in time."""
    cmd = [ctx.tools["wrk"], "-t", str(min(ctx.args.wrk_threads,
                                            spec["conns"])),
           "-c", str(spec["conns"]), "-d", "%gs" % duration,
           "--latency", "--timeout", "5s"]
    if spec.get("script"):
        cmd += ["-s", os.path.join(HERE, spec["script"])]
    for h in spec.get("headers", ()):
        cmd += ["-H", h]
    cmd.append("http://127.0.0.1:%d%s" % (port, spec["path"]))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    ctx.running.add(p)
    snap = None
    try:
        if midpoint:
            time.sleep(duration / 2.0)
            snap = midpoint()
        out, _ = p.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        out += "\n(wrk killed after %ds)" % (duration + 30)
    finally:
        ctx.running.discard(p)
    r = parse_wrk(out)
    r["raw"] = out
    r["rc"] = p.returncode
    r["snapshot"] = snap
    return r


def short(msg, n=90):
    msg = " ".join(msg.split())
    return msg if len(msg) <= n else msg[:n - 1] + "… (see notes)"


def error_text(r):
    parts = []
    if not r["ok"]:
        parts.append("wrk failed (rc %s)" % r["rc"])
    if r["non2xx"]:
        parts.append("non-2xx %d" % r["non2xx"])
    for k, v in r["sock"].items():
        parts.append("%s %d" % (k, v))
    return ", ".join(parts)


# ---------------------------------------------------------------- measure

def snapshot_shares(ctx, gw):
    """How many established connections on gw's port each worker holds."""
    if isinstance(gw, HAProxy):
        now = gw.thread_accepts()
        base = getattr(gw, "accq_base", None)
        if now is None or base is None or len(now) != len(base):
            return None
        return [a - b for a, b in zip(now, base)]
    workers = gw.workers()
    try:
        out = subprocess.run(
            [ctx.tools["ss"], "-tnpH", "state", "established",
             "( sport = :%d )" % gw.port], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, timeout=20).stdout
    except subprocess.TimeoutExpired:
        return None
    counts = dict.fromkeys(workers, 0)
    for line in out.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        for pid in pids & set(workers):
            counts[pid] += 1
    return [counts[w] for w in sorted(counts)]


def measure(ctx, gw, spec, duration, shares=False):
    """One measured wrk run against gw, with its CPU cost."""
    pids = set(gw.all_pids())
    before = {p: cpu_ticks(p) for p in pids}
    back_pids = ctx.backend.all_pids()
    back0 = sum(cpu_ticks(p) or 0 for p in back_pids)
    workers0 = set(gw.workers())
    busy0, kids0, wall0 = (system_busy_ticks(), children_cpu_ticks(),
                           time.monotonic())
    if shares and isinstance(gw, HAProxy):
        gw.accq_base = gw.thread_accepts()
    r = run_wrk(ctx, gw.port, spec, duration,
                midpoint=(lambda: snapshot_shares(ctx, gw))
                if shares else None)
    wall = time.monotonic() - wall0
    busy, kids = system_busy_ticks() - busy0, children_cpu_ticks() - kids0
    after = {p: cpu_ticks(p) for p in set(gw.all_pids()) | pids}
    used = sum((after[p] or 0) - (before.get(p) or 0)
               for p in after if after[p] is not None)
    back = sum(cpu_ticks(p) or 0 for p in back_pids) - back0
    r["cpu_ticks"] = used
    r["cpu_us_req"] = (used * 1e6 / CLK / r["requests"]
                       if r["requests"] else None)
    # CPU used by processes outside this benchmark: noise on a shared box.
    r["other_pct"] = max(0.0, 100.0 * (busy - used - back - kids)
                         / (wall * NCPU * CLK))
    notes = []
    if not gw.running():
        notes.append("exited (%s)" % gw.proc.returncode)
    elif set(gw.workers()) != workers0:
        notes.append("worker restarted")
    if any(after[p] is None for p in pids):
        notes.append("a process exited during the run")
    r["notes"] = notes
    if not error_text(r):
        del r["raw"]             # kept only to show what went wrong
    return r


def parse_strace(path):
    calls = {}
    for line in read_text(path).splitlines():
        t = line.split()
        if not t or not re.match(r"^[\d.]+$", t[0]):
            continue
        if len(t) >= 5 and t[-1] != "total":
            calls[t[-1]] = int(t[3])
    return calls, sum(calls.values())


def attached(text):
    """Threads strace reports attached ("Process N attached [with M
    threads]")."""
    n = 0
    for m in re.finditer(r"Process \d+ attached(?: with (\d+) threads)?",
                         text):
        n += int(m.group(1) or 1)
    return n


def strace_run(ctx, gw, spec, seconds):
    """A short wrk run with strace -c attached to every worker."""
    targets = gw.strace_targets()
    if not targets:
        return None
    out = os.path.join(ctx.tmp, "strace-%s.txt" % gw.name)
    err = os.path.join(ctx.tmp, "strace-%s.err" % gw.name)
    cmd = [ctx.tools["strace"], "-c", "-f", "-o", out]
    for p in targets:
        cmd += ["-p", str(p)]
    expect = sum(threads(p) for p in targets)
    with open(err, "w") as errf:
        st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf,
                              start_new_session=True)
    ctx.running.add(st)
    try:
        deadline = time.monotonic() + 5
        while (attached(read_text(err)) < expect and
               time.monotonic() < deadline and st.poll() is None):
            time.sleep(0.05)
        if st.poll() is not None:
            return {"error": "strace: " + read_text(err).strip()[-200:]}
        time.sleep(0.2)
        r = run_wrk(ctx, gw.port, spec, seconds)
    finally:
        if st.poll() is None:
            st.send_signal(signal.SIGINT)
            try:
                st.wait(15)
            except subprocess.TimeoutExpired:
                st.kill()
                st.wait(5)
        ctx.running.discard(st)
    calls, total = parse_strace(out)
    res = {"requests": r["requests"], "total": total, "errors": error_text(r)}
    if r["requests"]:
        res["per_req"] = total / r["requests"]
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
        res["top"] = [(k, v / r["requests"]) for k, v in top]
    return res


def workers_kib(gw, key):
    return sum(status_kib(p, key) for p in gw.workers())


# ---------------------------------------------------------------- idle

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def response_done(buf):
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return None
    status = head.split(b" ", 2)[1] if head.count(b" ") else b""
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if m:
        done = len(body) >= int(m.group(1))
    else:
        done = body.endswith(b"0\r\n\r\n")
    return status if done else None


def open_idle(port, n, timeout, window=400):
    """Opens n connections that each send one request, read the answer
    and stay open.  Returns (sockets, failures, non-200 answers)."""
    ep = select.epoll()
    pending = {}                  # fd -> [socket, sent, buffer]
    done, failed, bad, started = [], 0, 0, 0
    deadline = time.monotonic() + timeout

    def fail(fd):
        s = pending.pop(fd)[0]
        ep.unregister(fd)
        s.close()

    try:
        while (started < n or pending) and time.monotonic() < deadline:
            while started < n and len(pending) < window:
                started += 1
                s = socket.socket()
                s.setblocking(False)
                rc = s.connect_ex(("127.0.0.1", port))
                if rc not in (0, errno.EINPROGRESS):
                    s.close()
                    failed += 1
                    continue
                pending[s.fileno()] = [s, False, b""]
                ep.register(s.fileno(), select.EPOLLOUT)
            for fd, ev in ep.poll(0.2):
                st = pending.get(fd)
                if st is None:
                    continue
                s = st[0]
                try:
                    if not st[1]:
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            raise OSError("connect")
                        s.send(REQ)
                        st[1] = True
                        ep.modify(fd, select.EPOLLIN)
                        continue
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    st[2] += data
                except OSError:
                    fail(fd)
                    failed += 1
                    continue
                status = response_done(st[2])
                if status is not None:
                    ep.unregister(fd)
                    del pending[fd]
                    done.append(s)
                    if status != b"200":
                        bad += 1
        failed += len(pending) + (n - started)
        for fd in list(pending):
            fail(fd)
    finally:
        ep.close()
    return done, failed, bad


def idle_scenario(ctx, gw):
    n = ctx.args.idle_conns
    # A few requests first, so that one-time allocations are not counted.
    for _ in range(20):
        try:
            http_get(gw.port)
        except OSError:
            pass
    time.sleep(0.5)
    rss0 = workers_kib(gw, "VmRSS")
    t0 = time.monotonic()
    socks, failed, bad = open_idle(gw.port, n, timeout=60)
    took = time.monotonic() - t0
    time.sleep(1.0)
    rss1 = workers_kib(gw, "VmRSS")
    ok = len(socks)
    for s in socks:
        s.close()
    time.sleep(1.0)
    res = {"opened": ok, "failed": failed, "non200": bad, "seconds": took,
           "rss_before_kib": rss0, "rss_after_kib": rss1,
           "bytes_per_conn": (rss1 - rss0) * 1024.0 / ok if ok else None}
    return res


# ---------------------------------------------------------------- report

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec="%.0f", none="–"):
    return none if v is None else spec % v


def fmt_time(us):
    if us is None:
        return "–"
    return "%.0f µs" % us if us < 1000 else "%.2f ms" % (us / 1000)


def fmt_kib(kib):
    return "–" if kib is None else "%.1f MiB" % (kib / 1024.0)


def md_table(header, rows):
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in
                                        zip(r, widths)) + " |"
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def ratio_median(ctx, scn, gw, key):
    """Median over rounds of gw's value / nginx's value in that round."""
    ours = ctx.results[scn].get(gw.name, {}).get("runs", [])
    ref = ctx.results[scn].get("nginx", {}).get("runs", [])
    ratios = []
    for a, b in zip(ours, ref):
        if a and b and a.get(key) and b.get(key):
            ratios.append(a[key] / b[key])
    return med(ratios), ratios


def scenario_rows(ctx):
    rows = []
    for scn in ctx.wrk_scenarios:
        for gw in ctx.gateways:
            res = ctx.results[scn].get(gw.name)
            label = "%d %s" % (scn, SCENARIOS[scn]["short"])
            if not res or not res.get("runs"):
                why = short(gw.error or "not run")
                rows.append([label, gw.name, "FAILED: " + why] +
                            ["–"] * 7)
                continue
            runs = [r for r in res["runs"] if r]
            rps = med([r["rps"] for r in runs])
            ratio, _ = ratio_median(ctx, scn, gw, "rps")
            errs = [error_text(r) for r in runs if error_text(r)]
            notes = sorted({n for r in runs for n in r["notes"]})
            err = "; ".join(errs + notes) or "none"
            if gw.error:
                err = (err + "; " if err != "none" else "") + short(gw.error)
            st = res.get("strace") or {}
            rows.append([
                label, gw.name, fmt(rps),
                "1.00" if gw.name == "nginx" else fmt(ratio, "%.2f"),
                fmt_time(med([r["p50_us"] for r in runs])),
                fmt_time(med([r["p99_us"] for r in runs])),
                fmt(med([r["cpu_us_req"] for r in runs]), "%.1f"),
                fmt(st.get("per_req"), "%.1f"),
                fmt_kib(res.get("hwm_kib")), err])
    return rows


def idle_rows(ctx):
    rows = []
    ref = ctx.idle.get("nginx", {}).get("bytes_per_conn")
    for gw in ctx.gateways:
        r = ctx.idle.get(gw.name)
        if not r:
            rows.append([gw.name, "FAILED: " + short(gw.error or "not run")]
                        + ["–"] * 4)
            continue
        b = r["bytes_per_conn"]
        rows.append([
            gw.name, "%d (%d failed, %d non-200)" % (r["opened"], r["failed"],
                                                     r["non200"]),
            "%.1f → %.1f MiB" % (r["rss_before_kib"] / 1024.0,
                                 r["rss_after_kib"] / 1024.0),
            fmt(b), fmt(b / ref, "%.2f") if b and ref else "–",
            "%.1f s" % r["seconds"]])
    return rows


def share_rows(ctx):
    rows = []
    res2 = ctx.results.get(2, {})
    for gw in ctx.gateways:
        runs = [r for r in res2.get(gw.name, {}).get("runs", []) if r]
        per_round, lo, hi = [], 100.0, 0.0
        for r in runs:
            s = r.get("snapshot")
            if not s or not sum(s):
                per_round.append("?")
                continue
            pct = [100.0 * x / sum(s) for x in s]
            lo, hi = min(lo, min(pct)), max(hi, max(pct))
            per_round.append("/".join("%.0f" % p for p in pct) +
                             " (%d)" % sum(s))
        if not per_round:
            rows.append([gw.name, "FAILED: " + short(gw.error or "not run"),
                         "–", "–"])
            continue
        unit = "threads" if isinstance(gw, HAProxy) else "workers"
        verdict = "–"
        if hi > 0:
            verdict = "yes" if lo >= 40 and hi <= 60 else "no"
        rows.append([gw.name + " (%s)" % unit, "; ".join(per_round),
                     "%.1f–%.1f%%" % (lo, hi) if hi else "–", verdict])
    return rows


def syscall_rows(ctx):
    rows = []
    for scn in ctx.wrk_scenarios:
        for gw in ctx.gateways:
            st = (ctx.results[scn].get(gw.name) or {}).get("strace")
            label = "%d %s" % (scn, SCENARIOS[scn]["short"])
            if not st:
                continue
            if "error" in st:
                rows.append([label, gw.name, "–", st["error"], "–"])
                continue
            top = ", ".join("%s %.2f" % kv for kv in st.get("top", []))
            rows.append([label, gw.name, fmt(st.get("per_req"), "%.2f"),
                         top or "–", "%d%s" % (st["requests"],
                                               " (" + st["errors"] + ")"
                                               if st["errors"] else "")])
    return rows


def noise_line(ctx):
    vals = [r["other_pct"] for scn in ctx.results if scn in SCENARIOS
            for g in ctx.results[scn].values() for r in g.get("runs", [])
            if r]
    if not vals:
        return None
    return ("CPU used by processes outside the benchmark during the measured "
            "runs (of %d CPUs): median %.0f%%, max %.0f%%.%s" % (
                NCPU, statistics.median(vals), max(vals),
                " Other work was running on the machine: the numbers are "
                "noisier than usual." if max(vals) > 10 else ""))


def cmd_version(cmd, pattern, stderr=False):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(pattern, p.stdout)
    return m.group(1) if m else p.stdout.strip().splitlines()[0][:60] \
        if p.stdout.strip() else "?"


def lib_version(binary, soname, pcname):
    """Version of the library binary is linked with (dpkg), or pkg-config."""
    try:
        ldd = subprocess.run(["ldd", binary], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        ldd = ""
    m = re.search(r"(%s\S*) => (\S+)" % re.escape(soname), ldd)
    upstream = cmd_version(["pkg-config", "--modversion", pcname],
                           r"^(\S+)")
    if m:
        try:
            pkg = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(2))],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True,
                                 timeout=10).stdout.split(":")[0]
            ver = subprocess.run(["dpkg-query", "-W", "-f", "${Version}",
                                  pkg], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True,
                                 timeout=10).stdout.strip()
            if pkg and ver:
                return "%s (Debian %s %s)" % (upstream, pkg, ver)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return upstream


def binary_date(path):
    try:
        t = os.stat(path).st_mtime
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        return ""
    return ", binary built %s (sha256 %s)" % (
        time.strftime("%Y-%m-%d %H:%M", time.localtime(t)), digest)


def machine_info(ctx):
    cpu = re.search(r"^model name\s*:\s*(.+)$", read_text("/proc/cpuinfo"),
                    re.M)
    mem = re.search(r"MemTotal:\s+(\d+)",
                                         read_text("/proc/meminfo"))
    osr = re.search(r'^PRETTY_NAME="?([^"\n]+)', read_text("/etc/os-release"),
                    re.M)
    git = ""
    try:
        rev = subprocess.run(["git", "-C", TOP, "rev-parse", "--short",
                              "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", TOP, "status", "--porcelain",
                                "--untracked-files=no"],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True,
                               timeout=10).stdout.strip()
        if rev:
            git = ", source %s%s" % (rev, " with uncommitted changes"
                                     if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    t = ctx.tools
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "cores": NCPU,
        "mem": "%.0f GiB" % (int(mem.group(1)) / 1048576.0) if mem else "?",
        "kernel": platform.release(),
        "os": osr.group(1) if osr else platform.system(),
        "agate": cmd_version([ctx.args.agate, "-V"], r"agate (\S+)") + git
        + binary_date(ctx.args.agate),
        "nginx": cmd_version([t["nginx"], "-v"], r"nginx/(\S+)"),
        "haproxy": cmd_version([t["haproxy"], "-v"],
                               r"HAProxy version (\S+)"),
        "wrk": cmd_version([t["wrk"], "-v"], r"^wrk (\S+)"),
        "libcurl": lib_version(ctx.args.agate, "libcurl.so", "libcurl"),
        "libevent": lib_version(ctx.args.agate, "libevent", "libevent"),
        "nofile": ctx.nofile,
    }


def write_chart(ctx, png):
    """Two panels: throughput ratio (higher is better) and cost ratio
    (lower is better), each gateway against nginx = 1."""
    others = [g for g in ctx.gateways if g.name != "nginx"]
    if not others:
        return False
    top_rows, bottom_rows = [], []
    for scn in ctx.wrk_scenarios:
        lab = '"%d %s"' % (scn, SCENARIOS[scn]["short"])
        top_rows.append(lab + " " + " ".join(
            fmt(ratio_median(ctx, scn, g, "rps")[0], "%.3f", "NaN")
            for g in others))
        bottom_rows.append(lab + " " + " ".join(
            fmt(ratio_median(ctx, scn, g, "cpu_us_req")[0], "%.3f", "NaN")
            for g in others))
    if ctx.idle:
        ref = (ctx.idle.get("nginx") or {}).get("bytes_per_conn")
        vals = []
        for g in others:
            b = (ctx.idle.get(g.name) or {}).get("bytes_per_conn")
            vals.append(fmt(b / ref if b and ref else None, "%.3f", "NaN"))
        bottom_rows.append('"6 idle conn: bytes" ' + " ".join(vals))
    dat1 = os.path.join(ctx.tmp, "chart-top.dat")
    dat2 = os.path.join(ctx.tmp, "chart-bottom.dat")
    with open(dat1, "w") as f:
        f.write("\n".join(top_rows) + "\n")
    with open(dat2, "w") as f:
        f.write("\n".join(bottom_rows) + "\n")
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    n = len(others)

    def missing(rows):
        """A 'no data' mark where a gateway has no ratio."""
        out = []
        for x, row in enumerate(rows):
            vals = row.rsplit('" ', 1)[1].split()
            for i, v in enumerate(vals):
                if v == "NaN":
                    off = (i - (n - 1) / 2.0) * (0.8 / n)
                    out.append("set label 'no data' at first %.3f, graph 0.03"
                               " rotate by 90 left tc rgb '%s' font ',10'"
                               % (x + off, colors[i % len(colors)]))
        return "\n".join(out)

    def plot(dat):
        parts = []
        for i, g in enumerate(others):
            parts.append("'%s' using %d:xtic(1) title '%s' lc rgb '%s'"
                         % (dat, i + 2, g.name, colors[i % len(colors)]))
        for i, g in enumerate(others):
            off = (i - (n - 1) / 2.0) * (0.8 / n)
            parts.append("'%s' using ($0+%.3f):%d:(sprintf('%%.2f',$%d)) "
                         "with labels boxed offset 0,0.8 font ',10' notitle"
                         % (dat, off, i + 2, i + 2))
        parts.append("1 with lines dt 2 lw 2 lc rgb 'black' "
                     "title 'nginx = 1'")
        return "plot " + ", \\\n  ".join(parts) + "\n"

    script = [
        "set terminal pngcairo size 1100,900 font 'sans,11'",
        "set output '%s'" % png,
        "set multiplot layout 2,1 title \"%s\" font ',13'" % (
            "%s relative to nginx as a reverse proxy\\n"
            "{/*0.8 median of per-round ratios; %d workers each; "
            "%d x %g s; %s}" % (
                " and ".join(g.name for g in others),
                ctx.args.workers, ctx.args.rounds, ctx.args.duration,
                time.strftime("%Y-%m-%d"))),
        "set style textbox opaque noborder margins 1,1",
        "set style data histograms",
        "set style histogram clustered gap 1",
        "set style fill solid 0.85 border -1",
        "set boxwidth 0.9",
        "set grid ytics",
        "set key outside right top",
        "set yrange [0:*]",
        "set offsets 0,0,0.25,0",
        "set datafile missing 'NaN'",
        "set title 'Throughput: requests/s vs nginx (higher is better)'",
        "set ylabel 'ratio to nginx'",
        missing(top_rows),
        plot(dat1),
        "unset label",
        missing(bottom_rows),
        "set title 'Cost vs nginx (lower is better): CPU µs per request; "
        "6 = bytes per idle connection'",
        plot(dat2),
        "unset multiplot",
    ]
    gp = os.path.join(ctx.tmp, "chart.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run([ctx.tools["gnuplot"], gp], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stdout.strip()[-500:])
        return False
    return True


def report(ctx, wall):
    a = ctx.args
    info = ctx.info
    for gw in ctx.gateways:
        exe = ""
        if isinstance(gw, Agate) and gw.running():
            try:
                exe = os.readlink("/proc/%d/exe" % gw.proc.pid)
            except OSError:
                pass
        if exe.endswith(" (deleted)"):
            ctx.notes.append(
                "%s was rebuilt while this ran: the numbers are for the "
                "binary started at the beginning (the one described "
                "above)." % a.agate)
    main = md_table(["scenario", "gateway", "req/s", "× nginx", "p50", "p99",
                     "CPU µs/req", "syscalls/req", "peak RSS", "errors"],
                    scenario_rows(ctx))
    blocks = ["## Results\n", main + "\n"]
    legend = (
        "req/s, p50, p99 and CPU µs/req are medians over %d round(s) of %g s; "
        "× nginx is the median of the per-round ratios of req/s (nginx ran "
        "in the same round). CPU µs/req is utime+stime of all the gateway's "
        "processes over the run divided by the requests wrk counted. "
        "syscalls/req comes from a separate %g s run under `strace -c -f` "
        "on the workers. Peak RSS is VmHWM summed over the workers, reset "
        "at the start of each scenario. errors: wrk's non-2xx/3xx answers "
        "and socket errors, summed over the rounds."
        % (a.rounds, a.duration, a.strace_seconds))
    blocks.append(legend + "\n")
    if ctx.idle:
        blocks += ["## 6. %s\n" % IDLE_TITLE.replace("10,000",
                                                      "{:,}".format(
                                                          a.idle_conns)),
                   md_table(["gateway", "connections open", "workers' RSS",
                             "bytes/conn", "× nginx", "open time"],
                            idle_rows(ctx)) + "\n",
                   "Each connection sent one GET and read the answer, then "
                   "stayed idle. bytes/conn = increase of the workers' "
                   "summed VmRSS / connections open.\n"]
    if 2 in ctx.results:
        blocks += ["## 7. %s\n" % SHARE_TITLE,
                   md_table(["gateway", "share per worker, each round "
                             "(connections seen)", "range", "all within "
                             "40–60%"], share_rows(ctx)) + "\n",
                   "A snapshot halfway through each scenario-2 run: "
                   "established connections on the gateway's port per "
                   "worker pid (`ss -tnp`). HAProxy is one process, so its "
                   "threads' shares come from `show activity` (accq_pushed: "
                   "connections handed to each thread).\n"]
    srows = syscall_rows(ctx)
    if srows:
        blocks += ["## Syscalls per request (top 5)\n",
                   md_table(["scenario", "gateway", "syscalls/req",
                             "top 5 per request", "requests (strace run)"],
                            srows) + "\n"]
    notes = []
    for gw in ctx.gateways:
        if gw.error:
            notes.append("- %s: %s" % (gw.name, gw.error))
    for msg in ctx.notes:
        notes.append("- " + msg)
    noise = noise_line(ctx)
    if noise:
        notes.append("- " + noise)
    if notes:
        blocks += ["## Notes\n", "\n".join(notes) + "\n"]

    console = "\n".join(blocks)
    print("\n" + console)

    name = "benchmarks" if a.label == "agate" else "benchmarks-" + \
        re.sub(r"[^A-Za-z0-9_.-]", "_", a.label)
    os.makedirs(a.out, exist_ok=True)
    png = os.path.join(a.out, name + ".png")
    have_png = write_chart(ctx, png)
    now = datetime.datetime.now().astimezone()
    up = ", ".join("`%s: %s`" % (k, json.dumps(v)) for k, v in
                   ctx.agate_extra) or "none"
    head = [
        "# Benchmarks\n",
        "Generated by `tests/bench/run.py` on %s (%.0f s).\n" % (
            now.strftime("%Y-%m-%d %H:%M %Z"), wall),
        "- Machine: %s, %d CPUs, %s RAM; %s, kernel %s" % (
            info["cpu"], info["cores"], info["mem"], info["os"],
            info["kernel"]),
        "- Versions: agate %s; nginx %s; HAProxy %s; wrk %s; libcurl %s; "
        "libevent %s" % (info["agate"], info["nginx"], info["haproxy"],
                         info["wrk"], info["libcurl"], info["libevent"]),
        "- Setup: everything on 127.0.0.1; %d workers per gateway (HAProxy: "
        "%d threads); upstream: nginx, 1 worker, %d-byte JSON answer or a "
        "100 KiB file; wrk %d threads, timeout 5 s; fd limit %d; %s"
        % (a.workers, a.workers, len(UPSTREAM_BODY), a.wrk_threads,
           info["nofile"],
           "%d round(s) of %g s%s" % (a.rounds, a.duration,
                                       " (--quick: a smoke test, not a "
                                       "measurement)" if a.quick else "")),
        "- Idle upstream connections: agate `keepalive: %d` and nginx "
        "`keepalive %d` per worker, HAProxy `pool-max-conn %d` (whole "
        "process)" % (UPSTREAM_KEEPALIVE, UPSTREAM_KEEPALIVE,
                      UPSTREAM_KEEPALIVE * a.workers),
        "- agate (`%s`): extra upstream keys: %s" % (a.label, up),
        "- Command: `%s`\n" % " ".join(shlex.quote(x) for x in
                                        ctx.argv_for_report),
        "Scenarios: " + "; ".join("(%d) %s" % (k, v["title"])
                                  for k, v in SCENARIOS.items()) +
        "; (6) %s; (7) %s.\n" % (IDLE_TITLE, SHARE_TITLE),
    ]
    # Written by tests/bench/websocket.py (make bench-websocket).
    head.append("WebSocket tunnels (agate and nginx, `make "
                "bench-websocket`): "
                "[benchmarks-websocket.md](benchmarks-websocket.md).\n")
    # Written by tests/bench/http2.py (make bench-http2).
    head.append("HTTP/2 clients, TLS h2 and h2c (agate and nginx, `make "
                "bench-http2`): [benchmarks-http2.md](benchmarks-http2.md)."
                "\n")
    if have_png:
        head.append("![ratios to nginx](%s)\n" % os.path.basename(png))
    md = os.path.join(a.out, name + ".md")
    with open(md, "w") as f:
        f.write("\n".join(head) + "\n" + console)
    log("wrote %s%s" % (md, " and " + png if have_png else
                        " (no chart: gnuplot failed)"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "results": {
                str(k): v for k, v in ctx.results.items()},
                "idle": ctx.idle}, f, indent=1, default=str)


# ---------------------------------------------------------------- main

class Context:
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agate", default=os.path.join(TOP, "agate"),
                   help="the agate binary (default: %(default)s)")
    p.add_argument("--out", default=os.path.join(TOP, "docs"),
                   help="folder for benchmarks.md and benchmarks.png")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8,
                   help="seconds per measured wrk run")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 3 s")
    p.add_argument("--scenarios", default="1,2,3,4,5,6,7",
                   help="subset, e.g. 1,3,5 (7 runs with 2)")
    p.add_argument("--gateways", default="agate,nginx,haproxy",
                   help="subset of agate,nginx,haproxy")
    p.add_argument("--agate-upstream", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="extra key for agate's upstream (repeatable; "
                        "value is a YAML scalar; a.b=1 nests)")
    p.add_argument("--label", default="agate",
                   help="name of agate's column; other than 'agate', the "
                        "report is benchmarks-LABEL.md/.png")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--idle-conns", type=int, default=10000)
    p.add_argument("--strace-seconds", type=float, default=3)
    p.add_argument("--json", help="also write raw results to this file")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temporary folder (configs, logs)")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration = 1, 3
    try:
        a.scenario_set = {int(x) for x in a.scenarios.split(",") if x}
    except ValueError:
        p.error("--scenarios: comma-separated numbers 1-7")
    if not a.scenario_set <= set(range(1, 8)):
        p.error("--scenarios: numbers 1-7")
    a.gateway_list = [g for g in a.gateways.split(",") if g]
    if not set(a.gateway_list) <= {"agate", "nginx", "haproxy"}:
        p.error("--gateways: a subset of agate,nginx,haproxy")
    if a.rounds < 1 or a.duration <= 0 or a.workers < 1:
        p.error("--rounds, --duration and --workers must be positive")
    if a.label in ("nginx", "haproxy", "upstream") or \
            not re.match(r"^[A-Za-z0-9_.+-]+$", a.label):
        p.error("--label: letters, digits and _.+- only, not nginx/haproxy")
    a.agate = os.path.abspath(a.agate)
    a.out = os.path.abspath(a.out)
    return a


def start_servers(ctx):
    a, t, tmp = ctx.args, ctx.tools, ctx.tmp
    nofile = ctx.nofile
    up_port = free_port()
    ctx.backend = NginxServer(
        "upstream", tmp, up_port, 1, t["nginx"],
        fill("upstream.nginx.conf", DIR=tmp, PORT=up_port, NOFILE=nofile,
             CONNS=min(WORKER_CONNECTIONS, nofile - 100),
             BODY=UPSTREAM_BODY))
    ctx.servers.append(ctx.backend)
    ctx.backend.start()
    log("upstream nginx on :%d (pid %d)" % (up_port, ctx.backend.proc.pid))

    makers = {
        "agate": lambda port: Agate(a.label, tmp, port, a.workers, a.agate,
                                    up_port, ctx.agate_extra),
        "nginx": lambda port: NginxServer(
            "nginx", tmp, port, a.workers, t["nginx"],
            fill("proxy.nginx.conf", DIR=tmp, PORT=port, NOFILE=nofile,
                 WORKERS=a.workers, UPSTREAM_PORT=up_port,
                 KEEPALIVE=UPSTREAM_KEEPALIVE,
                 CONNS=min(WORKER_CONNECTIONS, nofile - 100))),
        "haproxy": lambda port: HAProxy(
            "haproxy", tmp, port, a.workers, t["haproxy"],
            fill("haproxy.cfg", DIR=tmp, PORT=port, WORKERS=a.workers,
                 UPSTREAM_PORT=up_port, MAXCONN=MAXCONN,
                 POOL=UPSTREAM_KEEPALIVE * a.workers)),
    }
    for g in ("agate", "nginx", "haproxy"):    # the order of each round
        if g not in a.gateway_list:
            continue
        gw = makers[g](free_port())
        ctx.gateways.append(gw)
        ctx.servers.append(gw)
        try:
            gw.start()
            log("%s on :%d (pid %d, workers %s)" % (
                gw.name, gw.port, gw.proc.pid, gw.workers()))
        except (BenchError, OSError, subprocess.TimeoutExpired) as e:
            gw.error = "did not start: %s" % e
            log("%s %s" % (gw.name, gw.error))


def ensure_running(ctx, gw):
    """A gateway whose master died is restarted once, and noted."""
    if gw.running() or gw.proc is None:
        return gw.running()
    if getattr(gw, "restarted", False):
        return False
    gw.restarted = True
    msg = "%s exited with %s; restarted once (log: %s)" % (
        gw.name, gw.proc.returncode, gw.log_tail(3))
    ctx.notes.append(msg)
    log(msg)
    try:
        gw.logf.close()
        gw.start()
        return True
    except (BenchError, OSError) as e:
        gw.error = "exited, and did not restart: %s" % e
        return False


def run_scenario(ctx, scn):
    a = ctx.args
    spec = SCENARIOS[scn]
    res = ctx.results.setdefault(scn, {})
    live = lambda: [g for g in ctx.gateways if not g.error and
                    ensure_running(ctx, g)]
    log("scenario %d: %s" % (scn, spec["title"]))
    warm = 0.5 if a.quick else 1.0
    for gw in live():
        run_wrk(ctx, gw.port, spec, warm)
        for p in gw.workers():
            reset_hwm(p)
        res[gw.name] = {"runs": []}
    for rnd in range(a.rounds):
        for gw in ctx.gateways:
            if gw.name not in res:
                continue
            if gw not in live():
                res[gw.name]["runs"].append(None)
                continue
            r = measure(ctx, gw, spec, a.duration, shares=(scn == 2))
            res[gw.name]["runs"].append(r)
            log("  round %d %-8s %9.0f req/s  p99 %-9s cpu %5s µs/req%s%s"
                % (rnd + 1, gw.name, r["rps"], fmt_time(r["p99_us"]),
                   fmt(r["cpu_us_req"], "%.1f"),
                   ("  ERRORS: " + error_text(r)) if error_text(r) else "",
                   ("  " + ", ".join(r["notes"])) if r["notes"] else ""))
    for gw in live():
        if gw.name in res:
            res[gw.name]["hwm_kib"] = workers_kib(gw, "VmHWM")
    for gw in live():
        if gw.name in res:
            st = strace_run(ctx, gw, spec, a.strace_seconds)
            res[gw.name]["strace"] = st
            if st and "per_req" in st:
                log("  strace   %-8s %.2f syscalls/req (%s)" % (
                    gw.name, st["per_req"], ", ".join(
                        "%s %.2f" % kv for kv in st["top"][:3])))


def run_idle(ctx):
    log("scenario 6: %d idle keep-alive connections" % ctx.args.idle_conns)
    for gw in ctx.gateways:
        if gw.error or not ensure_running(ctx, gw):
            continue
        r = idle_scenario(ctx, gw)
        ctx.idle[gw.name] = r
        log("  %-8s %d open (%d failed), %s bytes/conn" % (
            gw.name, r["opened"], r["failed"], fmt(r["bytes_per_conn"])))


def main(argv):
    a = parse_args(argv)
    if not os.access(a.agate, os.X_OK) and "agate" in a.gateway_list:
        print("no agate binary at %s (build it: make -j2 agate)" % a.agate,
              file=sys.stderr)
        return 1
    ctx = Context()
    ctx.args = a
    ctx.argv_for_report = ["tests/bench/run.py"] + argv
    ctx.tools = ensure_tools()
    ctx.nofile = raise_nofile()
    log("fd limit %d (hard %s)" % (ctx.nofile, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    if ctx.nofile < a.idle_conns + 1000 and 6 in a.scenario_set:
        log("warning: fd limit %d is low for %d idle connections" % (
            ctx.nofile, a.idle_conns))
    ctx.agate_extra = []
    for kv in a.agate_upstream:
        if "=" not in kv:
            print("--agate-upstream wants KEY=VALUE: %r" % kv,
                  file=sys.stderr)
            return 2
        k, v = kv.split("=", 1)
        ctx.agate_extra.append((k.strip(), parse_scalar(v)))
    ctx.tmp = tempfile.mkdtemp(prefix="agate-bench-")
    os.chmod(ctx.tmp, 0o755)     # nginx workers may run as nobody
    for d in ("www", "tmp"):
        os.mkdir(os.path.join(ctx.tmp, d))
    with open(os.path.join(ctx.tmp, "www", "100k.bin"), "wb") as f:
        f.write((b"0123456789abcdef" * (BIG_SIZE // 16 + 1))[:BIG_SIZE])
    ctx.servers, ctx.gateways, ctx.running = [], [], set()
    ctx.results, ctx.idle, ctx.notes = {}, {}, []
    ctx.wrk_scenarios = sorted(s for s in a.scenario_set | (
        {2} if 7 in a.scenario_set else set()) if s in SCENARIOS)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    t0 = time.monotonic()
    try:
        ctx.info = machine_info(ctx)    # before the binary can change
        start_servers(ctx)
        if "nginx" in a.gateway_list and ctx.gateways and \
                [g for g in ctx.gateways if g.name == "nginx"][0].error:
            ctx.notes.append("nginx did not start: no ratios")
        # 6 first: the gateways are fresh, their heaps not yet grown by load.
        if 6 in a.scenario_set:
            run_idle(ctx)
        for scn in ctx.wrk_scenarios:
            run_scenario(ctx, scn)
        wall = time.monotonic() - t0
        report(ctx, wall)
        log("done in %.0f s" % (time.monotonic() - t0))
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for p in list(ctx.running):
            if p.poll() is None:
                p.kill()
                p.wait(5)
        for s in reversed(ctx.servers):
            try:
                s.stop()
            except Exception as e:     # keep stopping the others
                log("stopping %s: %s" % (s.name, e))
        if a.keep_tmp:
            log("kept " + ctx.tmp)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
