#!/usr/bin/env python3
"""agate's HTTP/2 benchmark: HTTP/2 clients through agate and through nginx.

Both gateways (2 workers each) stand in front of the same HTTP/1.1
upstream (nginx, one worker, a 100-byte JSON answer: run.py's upstream),
with 64 idle upstream connections kept per worker, and are driven by
h2load (nghttp2), 100 connections with 10 streams each:

(a) TLS h2: small GETs over https, ALPN h2, to a self-signed ECDSA P-256
    certificate made at run time by the openssl CLI;
(b) h2c prior knowledge: small GETs over http://, the connection
    preface sent at once (no Upgrade).

Interleaved rounds (agate, nginx, then nginx, agate, ...): req/s,
p50/p99 latency (from h2load's --log-file), the ratio to nginx in the
same round, the CPU µs the gateway's workers spend per request
(utime+stime from /proc/PID/stat, read as h2load starts and ends its
measured window) and h2load's failed, errored and non-2xx requests.

Everything listens on 127.0.0.1, runs from a temporary folder removed at
the end, and every process it starts is stopped by PID.  Writes
docs/benchmarks-http2.md (--out); docs/benchmarks.md links to it.

    make bench-http2
    python3 tests/bench/http2.py --quick --out /tmp/bench

See tests/bench/README.md.
"""

import argparse
import datetime
import json
import math
import os
import re
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
sys.dont_write_bytecode = True       # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import run as bench                  # noqa: E402  (definitions only)

TOP = bench.TOP
CLK = bench.CLK
NCPU = bench.NCPU
log = bench.log
BenchError = bench.BenchError

MAXCONN = 12000           # agate max_connections
KEEPALIVE = 64            # idle upstream connections kept per worker
GATEWAY_ORDER = ("agate", "nginx")
TOOLS = [  # (command, Debian package)
    ("nginx", "nginx"), ("h2load", "nghttp2-client"),
    ("nghttp", "nghttp2-client"), ("openssl", "openssl"),
]

SCENARIOS = {
    "a": dict(short="(a) TLS h2", scheme="https", proto="h2",
              title="TLS h2 (ALPN h2, ECDSA P-256), small GET"),
    "b": dict(short="(b) h2c", scheme="http", proto="h2c",
              title="h2c prior knowledge, small GET"),
}

NGINX_CONF = """\
# written by tests/bench/http2.py
worker_processes @WORKERS@;
worker_rlimit_nofile @NOFILE@;
daemon off;
master_process on;
pid @DIR@/nginx.pid;
error_log @DIR@/nginx.error.log warn;

events {
    worker_connections @CONNS@;
}

http {
    access_log off;
    # nginx's default (1000) would close each client connection after
    # 1000 streams, and h2load does not reconnect in a timed run.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path @DIR@/tmp/nginx-body;
    proxy_temp_path @DIR@/tmp/nginx-proxy;
    fastcgi_temp_path @DIR@/tmp/nginx-fastcgi;
    uwsgi_temp_path @DIR@/tmp/nginx-uwsgi;
    scgi_temp_path @DIR@/tmp/nginx-scgi;
    ssl_certificate @DIR@/cert.pem;
    ssl_certificate_key @DIR@/key.pem;
    # nginx 1.22's default leaves out TLS 1.3; agate offers 1.2 and 1.3.
    ssl_protocols TLSv1.2 TLSv1.3;

    upstream b {
        server 127.0.0.1:@UPSTREAM_PORT@;
        keepalive @KEEPALIVE@;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:@TLS_PORT@ ssl http2 backlog=4096;
        listen 127.0.0.1:@H2C_PORT@ http2 backlog=4096;

        location / {
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""

AGATE_CONF = """\
# written by tests/bench/http2.py
server:
  workers: @WORKERS@
  listen:
    - {address: "127.0.0.1:@TLS_PORT@", tls: {cert: "@DIR@/cert.pem", key: "@DIR@/key.pem"}}
    - "127.0.0.1:@H2C_PORT@"
  max_connections: @MAXCONN@
log:
  level: warn
  access: off
upstreams:
  b:
    servers: ["http://127.0.0.1:@UPSTREAM_PORT@"]
    keepalive: @KEEPALIVE@
routes:
  - path: /
    upstream: b
"""


def fill(text, **values):
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_0-9]+@", text)
    if left:
        raise BenchError("unfilled %s" % ", ".join(left))
    return text


# ---------------------------------------------------------------- servers

def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class H2Ready:
    """Ready when every listener accepts a connection and all the
    workers run.  Whether it speaks HTTP/2 is checked afterwards
    (check_answers), so that a gateway that does not is reported, not
    fatal."""

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            if all(port_open(p) for p in self.ports.values()) and \
                    self.units() >= self.nworkers:
                return
            time.sleep(0.05)
        raise BenchError("not ready after %.0fs: %s" % (timeout,
                                                        self.log_tail()))


class Nginx(H2Ready, bench.NginxServer):
    def __init__(self, tmp, ports, workers, nginx, conf_text):
        bench.NginxServer.__init__(self, "nginx", tmp, ports["a"], workers,
                                   nginx, conf_text)
        self.ports = ports
        self.text = conf_text

    def error_log(self):
        return os.path.join(self.tmp, "nginx.error.log")


class Agate(H2Ready, bench.Server):
    binary_name = "agate"
    stop_signal = signal.SIGINT      # fast stop

    def __init__(self, tmp, ports, workers, binary, conf_text):
        bench.Server.__init__(self, "agate", tmp, ports["a"], workers)
        self.ports = ports
        self.binary = binary
        self.conf = os.path.join(tmp, "agate.yaml")
        self.text = conf_text
        with open(self.conf, "w") as f:
            f.write(conf_text)

    def command(self):
        return [self.binary, "-c", self.conf]

    def error_log(self):
        return self.logpath

    def start(self):
        r = subprocess.run([self.binary, "-t", "-c", self.conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
        if r.returncode != 0:
            msg = " | ".join(r.stdout.strip().splitlines()[-3:])
            raise BenchError("config refused by agate -t (exit %d): %s" % (
                r.returncode, msg.replace(self.tmp + "/", "")))
        bench.Server.start(self)


def url(gw, scn):
    return "%s://127.0.0.1:%d/" % (SCENARIOS[scn]["scheme"], gw.ports[scn])


# ---------------------------------------------------------------- /proc

def ticks(pids):
    return sum(bench.cpu_ticks(p) or 0 for p in pids)


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def new_log_lines(path, since):
    try:
        with open(path, "rb") as f:
            f.seek(since)
            data = f.read()
    except OSError:
        return []
    return [l for l in data.decode("utf-8", "replace").splitlines()
            if l.strip()]


# ---------------------------------------------------------------- checks

def check_answer(ctx, gw, scn):
    """One GET with nghttp (ALPN h2 over TLS, or the h2c preface at
    once): the status, the protocol and whether the body is the
    upstream's.  Returns (ok, text)."""
    cmd = [ctx.tools["nghttp"], "-v", "-t", "5", url(gw, scn)]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=15,
                           errors="replace")
        out = p.stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")
        out = out.decode("utf-8", "replace") if isinstance(out, bytes) \
            else out
        return False, "nghttp timed out: " + bench.short(out[-300:], 200)
    status = re.search(r"recv \(stream_id=\d+\) :status: (\d+)", out)
    proto = re.search(r"The negotiated protocol: (\S+)", out)
    body_ok = bench.UPSTREAM_BODY in out
    parts = []
    if proto:
        parts.append("ALPN " + proto.group(1))
    elif SCENARIOS[scn]["scheme"] == "https":
        parts.append("no ALPN protocol")
    parts.append("status %s" % (status.group(1) if status else "none"))
    parts.append("the upstream's %d-byte body" % len(bench.UPSTREAM_BODY)
                 if body_ok else "not the upstream's body")
    ok = bool(status) and status.group(1) == "200" and body_ok and (
        SCENARIOS[scn]["scheme"] == "http" or
        (proto and proto.group(1) == "h2"))
    if not ok:
        tail = [l.strip() for l in out.strip().splitlines()[-3:]]
        parts.append("nghttp exit %d: %s" % (p.returncode,
                                             " / ".join(tail)[:300]))
    return ok, ", ".join(parts)


# ---------------------------------------------------------------- h2load

class Load:
    """An h2load process whose stdout is read line by line with a
    deadline; killed (by PID) if it outlives `limit' s."""

    def __init__(self, ctx, cmd, limit):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        ctx.running.add(self.proc)
        self.ctx = ctx
        self.deadline = time.monotonic() + limit
        self.buf = b""
        self.lines = []
        self.killed = False

    def readline(self):
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            data = os.read(fd, 65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.decode("utf-8", "replace")
        self.lines.append(line)
        return line

    def finish(self):
        try:
            self.proc.wait(max(0.1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self.killed = True
        rest = self.proc.stdout.read().decode("utf-8", "replace")
        self.lines += [l for l in (self.buf.decode("utf-8", "replace") +
                                   rest).splitlines()]
        self.proc.stdout.close()
        self.ctx.running.discard(self.proc)
        return self.proc.returncode


def parse_h2load(text):
    r = {}
    m = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, "
                  r"(\d+) succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", text, re.M)
    if m:
        for k, v in zip(("total", "started", "done", "succeeded", "failed",
                         "errored", "timeout"), m.groups()):
            r[k] = int(v)
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, "
                  r"(\d+) 5xx", text, re.M)
    if m:
        for k, v in zip(("s2xx", "s3xx", "s4xx", "s5xx"), m.groups()):
            r[k] = int(v)
    for key, pat in (("tls", r"^TLS Protocol: (\S+)"),
                     ("cipher", r"^Cipher: (\S+)"),
                     ("alpn", r"^Application protocol: (\S+)")):
        m = re.search(pat, text, re.M)
        if m:
            r[key] = m.group(1)
    return r


def percentile(sorted_values, q):
    """Nearest rank."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1,
                   int(math.ceil(q * len(sorted_values))) - 1))
    return sorted_values[k]


def parse_log(path, t_start, t_end):
    """h2load's --log-file: start (µs since the epoch), status,
    duration (µs), one line per request of the measured window.
    Returns latency percentiles and the longest stretch of the window
    in which no request completed."""
    durations, ends = [], []
    try:
        with open(path) as f:
            for line in f:
                t = line.split("\t")
                try:
                    start, dur = int(t[0]), int(t[2])
                except (IndexError, ValueError):
                    continue
                durations.append(dur)
                ends.append(start + dur)
    except OSError:
        return {}
    if not durations:
        return {"logged": 0}
    durations.sort()
    ends.sort()
    gap = 0
    points = ([int(t_start * 1e6)] if t_start else []) + ends + \
        ([int(t_end * 1e6)] if t_end else [])
    for x, y in zip(points, points[1:]):
        gap = max(gap, y - x)
    return {"logged": len(durations),
            "p50_us": percentile(durations, 0.50),
            "p99_us": percentile(durations, 0.99),
            "max_us": durations[-1], "gap_us": gap}


def h2load_run(ctx, gw, scn, tag):
    """One measured h2load run against gw."""
    a = ctx.args
    workers = gw.workers()
    up = ctx.upstream.workers()
    log0 = log_size(gw.error_log())
    logfile = os.path.join(ctx.tmp, "h2load-%s-%s-%s.tsv" % (gw.name, scn,
                                                            tag))
    cmd = [ctx.tools["h2load"], "-c", str(a.conns), "-m", str(a.streams),
           "-t", str(min(a.h2load_threads, a.conns)),
           "-D", "%dms" % round(a.duration * 1000),
           "--warm-up-time", "%dms" % round(a.warmup * 1000),
           "--log-file", logfile]
    if SCENARIOS[scn]["scheme"] == "https":
        # ALPN h2 only (h2load 1.52 calls it --npn-list; it is used for
        # ALPN as well): no fallback to http/1.1.
        cmd.append("--npn-list=h2")
    cmd.append(url(gw, scn))
    ld = Load(ctx, cmd, a.warmup + a.duration + 30)
    snaps = {}
    while True:
        line = ld.readline()
        if line is None:
            break
        for key, pat in (("start", "Main benchmark duration is started"),
                         ("end", "Main benchmark duration is over")):
            if line.startswith(pat) and key not in snaps:
                snaps[key] = (time.monotonic(), time.time(), ticks(workers),
                              ticks(up), ticks([ld.proc.pid]),
                              bench.system_busy_ticks())
    rc = ld.finish()
    text = "\n".join(ld.lines)
    res = parse_h2load(text)
    res["rc"] = rc
    res["notes"] = []
    if ld.killed:
        res["notes"].append("h2load killed after %.0f s" % (
            a.warmup + a.duration + 30))
    if "succeeded" not in res:
        tail = [l for l in ld.lines if l.strip() and
                not l.startswith("progress")][-4:]
        res["notes"].append("h2load gave no result (exit %s): %s" % (
            rc, " / ".join(tail)[:300]))
        res["rps"] = None
    elif rc != 0:
        res["notes"].append("h2load exit %s" % rc)
    want = SCENARIOS[scn]["proto"]
    if res.get("alpn") and res["alpn"] != want:
        res["notes"].append("protocol %s, not %s" % (res["alpn"], want))
    t_start = snaps.get("start", (0, 0))[1]
    t_end = snaps.get("end", (0, 0))[1]
    res.update(parse_log(logfile, t_start, t_end))
    if not a.keep_tmp:
        try:
            os.unlink(logfile)
        except OSError:
            pass
    if len(snaps) == 2:
        (t0, _, g0, u0, l0, b0) = snaps["start"]
        (t1, _, g1, u1, l1, b1) = snaps["end"]
        wall = max(t1 - t0, 1e-6)
        n = res.get("succeeded") or 0
        res["cpu_us_req"] = ((g1 - g0) / CLK * 1e6 / n) if n and workers \
            else None
        res["gw_pct"] = 100.0 * (g1 - g0) / CLK / wall
        res["up_pct"] = 100.0 * (u1 - u0) / CLK / wall
        res["load_pct"] = 100.0 * (l1 - l0) / CLK / wall
        ours = (g1 - g0) + (u1 - u0) + (l1 - l0)
        res["other_pct"] = max(0.0, 100.0 * ((b1 - b0) - ours) / CLK / wall)
    if not gw.running():
        res["notes"].append("%s exited (%s)" % (gw.name, gw.proc.returncode))
    elif set(gw.workers()) != set(workers):
        res["notes"].append("worker restarted")
    res["log"] = new_log_lines(gw.error_log(), log0)
    return res


# ---------------------------------------------------------------- report

fmt = bench.fmt
fmt_time = bench.fmt_time


def cell(text, n):
    """Text for a markdown table cell: one line, no column separator."""
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= n else text[:n - 1] + "…"


def runs_of(ctx, scn, name):
    return [r for r in ctx.runs.get(scn, {}).get(name, [])
            if r and r.get("rps")]


def ratios(ctx, scn, name, key="rps"):
    out = []
    for a, b in zip(ctx.runs.get(scn, {}).get(name, []),
                    ctx.runs.get(scn, {}).get("nginx", [])):
        if a and b and a.get(key) and b.get(key):
            out.append(a[key] / b[key])
    return out


def errors_text(runs):
    errs = {}
    for r in runs:
        for k, label in (("failed", "failed"), ("errored", "errored"),
                         ("timeout", "timeout"), ("s3xx", "3xx"),
                         ("s4xx", "4xx"), ("s5xx", "5xx")):
            if r.get(k):
                errs[label] = errs.get(label, 0) + r[k]
        for n in r.get("notes", []):
            errs[n] = errs.get(n, 0) + 1
    return ", ".join("%s %d" % kv for kv in errs.items()) or "none"


def result_rows(ctx):
    rows = []
    for scn in ctx.scenarios:
        for name in ctx.order:
            label = SCENARIOS[scn]["short"]
            allruns = ctx.runs.get(scn, {}).get(name, [])
            runs = runs_of(ctx, scn, name)
            if not runs:
                why = ("the check failed (see Answers)"
                       if (name, scn) in ctx.failed else None) or (
                    "see the notes" if ctx.by_name.get(name) and
                    ctx.by_name[name].error else errors_text(allruns))
                rows.append([label, name, "FAILED: " + cell(why, 200)]
                            + ["–"] * 9)
                continue
            tls = sorted({"%s %s" % (r.get("tls"), r.get("cipher"))
                          for r in runs if r.get("tls")})
            proto = sorted({r.get("alpn", "?") for r in runs})
            rows.append([
                label, name,
                fmt(bench.med([r["rps"] for r in runs])),
                "1.00" if name == "nginx" else
                fmt(bench.med(ratios(ctx, scn, name)), "%.2f"),
                fmt_time(bench.med([r.get("p50_us") for r in runs])),
                fmt_time(bench.med([r.get("p99_us") for r in runs])),
                fmt(bench.med([r.get("cpu_us_req") for r in runs]), "%.1f"),
                "%s / %s / %s" % tuple(
                    fmt(bench.med([r.get(k) for r in runs]), "%.0f%%")
                    for k in ("gw_pct", "up_pct", "load_pct")),
                ", ".join(fmt(r["rps"]) for r in runs),
                "%s / %s" % (fmt_time(max(r.get("max_us") or 0
                                          for r in runs)),
                             fmt_time(max(r.get("gap_us") or 0
                                          for r in runs))),
                ", ".join(proto) + ("; " + ", ".join(tls) if tls else ""),
                cell(errors_text(allruns), 300)])
    return rows


def target_rows(ctx):
    rows = []
    for scn in ctx.scenarios:
        label = SCENARIOS[scn]["short"]
        rr = bench.med(ratios(ctx, scn, "agate"))
        rows.append(["%s req/s" % label, "≥ 1.00× nginx",
                     fmt(rr, "%.2f×"), "–" if rr is None else
                     ("yes" if rr >= 1.0 else "**no**")])
        pa = bench.med([r.get("p99_us") for r in runs_of(ctx, scn, "agate")])
        pn = bench.med([r.get("p99_us") for r in runs_of(ctx, scn, "nginx")])
        rows.append(["%s p99" % label, "≤ nginx's (%s)" % fmt_time(pn),
                     fmt_time(pa), "–" if pa is None or pn is None else
                     ("yes" if pa <= pn else "**no**")])
    return rows


def answer_rows(ctx):
    rows = []
    for scn in ctx.scenarios:
        for name in ctx.order:
            c = ctx.answers.get((name, scn))
            if c is None:
                continue
            rows.append([SCENARIOS[scn]["short"], name,
                         "yes" if c[0] else "**no**", cell(c[1], 400)])
    return rows


def log_notes(ctx):
    out = []
    for name in ctx.order:
        lines = [l for scn in ctx.scenarios
                 for r in ctx.runs.get(scn, {}).get(name, []) if r
                 for l in r.get("log", [])]
        if not lines:
            continue
        kinds = {}
        for l in lines:
            k = re.sub(r"\d+", "N", l)[:160]
            kinds.setdefault(k, [0, l])[0] += 1
        top = sorted(kinds.values(), key=lambda kv: -kv[0])[:6]
        out.append("- %s's error log: %d line(s) during the runs; most "
                   "frequent:\n%s" % (name, len(lines), "\n".join(
                       "  - %d× `%s`" % (k, l[:300].replace("`", "'"))
                       for k, l in top)))
    return out


def linked(binary, soname):
    """The file of soname binary is linked with, or None."""
    try:
        ldd = subprocess.run(["ldd", binary], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(%s\S*) => (\S+)" % re.escape(soname), ldd)
    return m.group(1) if m else None


def versions(ctx):
    cpu = re.search(r"^model name\s*:\s*(.+)$",
                    bench.read_text("/proc/cpuinfo"), re.M)
    mem = re.search(r"MemTotal:\s+(\d+)", bench.read_text("/proc/meminfo"))
    osr = re.search(r'^PRETTY_NAME="?([^"\n]+)',
                    bench.read_text("/etc/os-release"), re.M)
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
    nghttp2 = linked(ctx.args.agate, "libnghttp2")
    return {
        "cpu": cpu.group(1).strip() if cpu else "?",
        "mem": "%.0f GiB" % (int(mem.group(1)) / 1048576.0) if mem else "?",
        "os": osr.group(1) if osr else "?",
        "kernel": os.uname().release,
        "agate": bench.cmd_version([ctx.args.agate, "-V"], r"agate (\S+)")
        + git + bench.binary_date(ctx.args.agate),
        "libevent": bench.lib_version(ctx.args.agate, "libevent",
                                      "libevent"),
        "libssl": bench.lib_version(ctx.args.agate, "libssl", "openssl"),
        "libnghttp2": bench.lib_version(ctx.args.agate, "libnghttp2",
                                        "libnghttp2") if nghttp2 else
        "not linked",
        "nginx": bench.cmd_version([t["nginx"], "-v"], r"nginx/(\S+)"),
        "h2load": bench.cmd_version([t["h2load"], "--version"],
                                    r"nghttp2/(\S+)"),
        "openssl": bench.cmd_version([t["openssl"], "version"],
                                     r"^OpenSSL (\S+)"),
    }


def report(ctx, wall):
    a = ctx.args
    info = ctx.info
    blocks = ["## Targets\n",
              bench.md_table(["target", "wanted", "agate", "met"],
                             target_rows(ctx)) + "\n"]
    blocks += ["## Results: %d connections × %d streams, small GET\n"
               % (a.conns, a.streams),
               bench.md_table(["scenario", "gateway", "req/s", "× nginx",
                               "p50", "p99", "CPU µs/req",
                               "CPU gateway / upstream / h2load",
                               "req/s per round",
                               "max latency / longest gap",
                               "protocol; TLS", "errors"],
                              result_rows(ctx)) + "\n",
               "Medians over %d round(s) of %g s, each after a %g s "
               "warm-up in the same h2load run (connections and TLS "
               "handshakes happen in the warm-up); the gateways alternate "
               "within the rounds (agate first in odd rounds, nginx first "
               "in even ones). × nginx is the median of the per-round "
               "ratios of req/s. h2load: `-c %d -m %d -t %d`, `--npn-list="
               "h2` over TLS (ALPN h2 only: no fallback to HTTP/1.1), prior knowledge over http://. p50/p99 are "
               "the request times in h2load's `--log-file` (from sending "
               "the request to the end of its stream) of every request "
               "of the measured window. CPU µs/req: utime+stime "
               "of the gateway's workers during the measured window / "
               "requests that succeeded. CPU gateway / upstream / h2load: "
               "share of one CPU each (the machine has %d, shared by all "
               "three). max latency / longest gap: the slowest request "
               "over the rounds, and the longest stretch of a measured "
               "window in which no request completed (a stall shows "
               "there; tens of ms are the scheduler, with the gateway, "
               "the upstream and h2load on %d CPUs). errors: h2load's failed, errored and timed-out "
               "requests and 3xx/4xx/5xx answers, summed over the "
               "rounds.\n"
               % (a.rounds, a.duration, a.warmup, a.conns, a.streams,
                  min(a.h2load_threads, a.conns), NCPU, NCPU)]
    arows = answer_rows(ctx)
    if arows:
        blocks += ["## Answers\n",
                   bench.md_table(["scenario", "gateway", "ok", "GET / "
                                   "with nghttp"], arows) + "\n",
                   "Checked before the rounds: one GET through each "
                   "gateway with `nghttp -v`; a scenario whose check fails "
                   "is not measured for that gateway.\n"]
    notes = []
    for gw in ctx.gateways:
        if gw.error:
            notes.append("- %s: %s" % (gw.name, gw.error))
    others = [r["other_pct"] for scn in ctx.scenarios for n in ctx.order
              for r in runs_of(ctx, scn, n)
              if r.get("other_pct") is not None]
    if others:
        notes.append("- CPU used by processes outside the benchmark during "
                     "the measured windows: median %.0f%%, max %.0f%% of "
                     "one CPU." % (statistics.median(others), max(others)))
    notes += log_notes(ctx)
    for msg in ctx.notes:
        notes.append("- " + msg)
    notes.append("- gRPC through the gateways is not part of this "
                 "benchmark yet.")
    blocks += ["## Notes\n", "\n".join(notes) + "\n"]
    console = "\n".join(blocks)
    print("\n" + console)

    now = datetime.datetime.now().astimezone()
    head = [
        "# HTTP/2 benchmark\n",
        "Generated by `tests/bench/http2.py` on %s (%.0f s).\n" % (
            now.strftime("%Y-%m-%d %H:%M %Z"), wall),
        "HTTP/2 clients through agate and through nginx, in front of the "
        "same HTTP/1.1 upstream, driven by h2load: (a) TLS with ALPN h2; "
        "(b) h2c with prior knowledge.\n",
        "- Machine: %s, %d CPUs, %s RAM; %s, kernel %s" % (
            info["cpu"], NCPU, info["mem"], info["os"], info["kernel"]),
        "- Versions: agate %s; libevent %s; libssl %s; libnghttp2 (agate) "
        "%s; nginx %s; h2load (nghttp2) %s; openssl CLI %s" % (
            info["agate"], info["libevent"], info["libssl"],
            info["libnghttp2"], info["nginx"], info["h2load"],
            info["openssl"]),
        "- Setup: everything on 127.0.0.1; %d workers per gateway; "
        "upstream: nginx, 1 worker, HTTP/1.1, `return 200` with a %d-byte "
        "JSON body (run.py's `upstream.nginx.conf`); %d idle upstream "
        "connections kept per worker by both gateways; certificate: "
        "self-signed ECDSA P-256, made by `openssl req` at the start; fd "
        "limit %d" % (a.workers, len(bench.UPSTREAM_BODY), KEEPALIVE,
                      ctx.nofile),
        "- Command: `%s`%s\n" % (" ".join(shlex.quote(x) for x in
                                          ctx.argv_for_report),
                                 " (--quick: a smoke test, not a "
                                 "measurement)" if a.quick else ""),
    ]
    tail = ["## Configs\n",
            "agate's:\n\n```yaml\n%s```\n" % ctx.conf_text.get(
                "agate", "(agate not run)\n"),
            "nginx's:\n\n```nginx\n%s```\n" % ctx.conf_text.get(
                "nginx", "(nginx not run)\n")]
    tmpdir = ctx.tmp.rstrip("/") + "/"
    text = "\n".join(head) + "\n" + console + "\n" + "\n".join(tail)
    text = text.replace(tmpdir, "$TMP/")
    os.makedirs(a.out, exist_ok=True)
    md = os.path.join(a.out, "benchmarks-http2.md")
    with open(md, "w") as f:
        f.write(text)
    log("wrote %s" % md)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "runs": ctx.runs,
                       "answers": {"%s %s" % k: v for k, v in
                                   ctx.answers.items()}}, f,
                      indent=1, default=str)


# ---------------------------------------------------------------- main

class Context:
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agate", default=os.path.join(TOP, "agate"))
    p.add_argument("--out", default=os.path.join(TOP, "docs"),
                   help="folder for benchmarks-http2.md")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6,
                   help="even: each gateway goes first as often")
    p.add_argument("--duration", type=float, default=8,
                   help="measured seconds per h2load run")
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--streams", type=int, default=10,
                   help="concurrent streams per connection (h2load -m)")
    p.add_argument("--h2load-threads", type=int, default=2)
    p.add_argument("--scenarios", default="a,b", help="subset of a,b")
    p.add_argument("--gateways", default="agate,nginx",
                   help="subset of agate,nginx")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 2 s")
    p.add_argument("--json", help="also write raw results to this file")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temporary folder (configs, logs, "
                        "h2load's request logs)")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 2, 0.5
    a.gateway_list = [g for g in a.gateways.split(",") if g]
    if not a.gateway_list or not set(a.gateway_list) <= set(GATEWAY_ORDER):
        p.error("--gateways: a subset of agate,nginx")
    a.scenario_list = [s for s in a.scenarios.split(",") if s]
    if not a.scenario_list or not set(a.scenario_list) <= set(SCENARIOS):
        p.error("--scenarios: a subset of a,b")
    if a.rounds < 1 or a.duration <= 0 or a.warmup < 0 or a.conns < 1 \
            or a.streams < 1 or a.h2load_threads < 1 or a.workers < 1:
        p.error("--rounds, --duration, --conns, --streams, "
                "--h2load-threads, --workers: positive")
    for k in ("agate", "out"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    return a


def ensure_tools():
    found = {cmd: bench.find_tool(cmd) for cmd, _ in TOOLS}
    missing = sorted({pkg for cmd, pkg in TOOLS if not found[cmd]})
    if not missing:
        return found
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
    found = {cmd: bench.find_tool(cmd) for cmd, _ in TOOLS}
    if not all(found.values()):
        print("still missing after install: " + " ".join(
            c for c, p in found.items() if not p), file=sys.stderr)
        sys.exit(1)
    return found


def make_cert(ctx):
    r = subprocess.run(
        [ctx.tools["openssl"], "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", os.path.join(ctx.tmp, "key.pem"),
         "-out", os.path.join(ctx.tmp, "cert.pem"), "-days", "2",
         "-subj", "/CN=127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=30)
    if r.returncode != 0:
        raise BenchError("openssl req failed: " + r.stdout.strip()[-300:])


def start_servers(ctx):
    a, tmp = ctx.args, ctx.tmp
    up_port = bench.free_port()
    conns = min(bench.WORKER_CONNECTIONS, ctx.nofile - 100)
    ctx.upstream = bench.NginxServer(
        "upstream", tmp, up_port, 1, ctx.tools["nginx"],
        bench.fill("upstream.nginx.conf", DIR=tmp, PORT=up_port,
                   NOFILE=ctx.nofile, CONNS=conns,
                   BODY=bench.UPSTREAM_BODY))
    ctx.servers.append(ctx.upstream)
    ctx.upstream.start()
    log("upstream nginx on :%d (pid %d)" % (up_port, ctx.upstream.proc.pid))
    for name in ctx.order:
        ports = {"a": bench.free_port(), "b": bench.free_port()}
        while ports["b"] == ports["a"]:
            ports["b"] = bench.free_port()
        values = dict(DIR=tmp, WORKERS=a.workers, TLS_PORT=ports["a"],
                      H2C_PORT=ports["b"], UPSTREAM_PORT=up_port,
                      KEEPALIVE=KEEPALIVE)
        if name == "agate":
            text = fill(AGATE_CONF, MAXCONN=MAXCONN, **values)
            gw = Agate(tmp, ports, a.workers, a.agate, text)
        else:
            text = fill(NGINX_CONF, NOFILE=ctx.nofile, CONNS=conns,
                        **values)
            gw = Nginx(tmp, ports, a.workers, ctx.tools["nginx"], text)
        ctx.conf_text[name] = text
        ctx.gateways.append(gw)
        ctx.servers.append(gw)
        ctx.by_name[name] = gw
        try:
            gw.start()
            log("%s on :%d (TLS) and :%d (h2c) (pid %d, workers %s)" % (
                gw.name, ports["a"], ports["b"], gw.proc.pid,
                gw.workers()))
        except (BenchError, OSError, subprocess.TimeoutExpired) as e:
            gw.error = "did not start: %s" % e
            log("%s %s" % (gw.name, gw.error))


def live(ctx):
    return [g for g in ctx.gateways if not g.error and g.running()]


def main(argv):
    a = parse_args(argv)
    if "agate" in a.gateway_list and not os.access(a.agate, os.X_OK):
        print("no agate binary at %s (make -j2 agate)" % a.agate,
              file=sys.stderr)
        return 1
    ctx = Context()
    ctx.args = a
    ctx.argv_for_report = ["tests/bench/http2.py"] + argv
    ctx.tools = ensure_tools()
    ctx.nofile = bench.raise_nofile()
    ctx.tmp = tempfile.mkdtemp(prefix="agate-h2bench-")
    os.chmod(ctx.tmp, 0o755)     # nginx workers may run as nobody
    for d in ("www", "tmp"):
        os.mkdir(os.path.join(ctx.tmp, d))
    ctx.servers, ctx.gateways, ctx.running = [], [], set()
    ctx.by_name, ctx.runs, ctx.answers, ctx.failed = {}, {}, {}, {}
    ctx.notes, ctx.conf_text = [], {}
    ctx.order = [g for g in GATEWAY_ORDER if g in a.gateway_list]
    ctx.scenarios = [s for s in SCENARIOS if s in a.scenario_list]
    if "nginx" not in ctx.order:
        ctx.notes.append("nginx was not run: no ratios")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    t0 = time.monotonic()
    try:
        ctx.info = versions(ctx)
        make_cert(ctx)
        start_servers(ctx)
        for scn in ctx.scenarios:
            for gw in live(ctx):
                ok, text = check_answer(ctx, gw, scn)
                ctx.answers[(gw.name, scn)] = (ok, text)
                log("check %s %-6s %s: %s" % (SCENARIOS[scn]["short"],
                                              gw.name, "ok" if ok else
                                              "FAILED", text))
                if not ok:
                    ctx.failed[(gw.name, scn)] = "the check failed: " + text
        for scn in ctx.scenarios:
            log("%s: %s, %d round(s) of %g s" % (
                SCENARIOS[scn]["short"], SCENARIOS[scn]["title"], a.rounds,
                a.duration))
            ctx.runs[scn] = {}
            for rnd in range(a.rounds):
                order = [g for g in live(ctx)
                         if (g.name, scn) not in ctx.failed]
                if rnd % 2:
                    order.reverse()
                for gw in order:
                    r = h2load_run(ctx, gw, scn, rnd + 1)
                    ctx.runs[scn].setdefault(gw.name, []).append(r)
                    log("  round %d %-6s %9s req/s  p50 %s  p99 %s  max %s  "
                        "gap %s  cpu %s µs/req  gw %s%%  errors: %s" % (
                            rnd + 1, gw.name, fmt(r.get("rps")),
                            fmt_time(r.get("p50_us")),
                            fmt_time(r.get("p99_us")),
                            fmt_time(r.get("max_us")),
                            fmt_time(r.get("gap_us")),
                            fmt(r.get("cpu_us_req"), "%.1f"),
                            fmt(r.get("gw_pct")), errors_text([r])))
        for gw in ctx.gateways:
            if gw.proc is not None and not gw.running() and not gw.error:
                gw.error = "exited with %s during the run: %s" % (
                    gw.proc.returncode, gw.log_tail(3))
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
