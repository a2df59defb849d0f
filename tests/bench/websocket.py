#!/usr/bin/env python3
"""agate's WebSocket benchmark: tunnels through agate and through nginx.

Both gateways (2 workers each) stand in front of the same upstream, the
WebSocket echo of tests/upstream/testup (one process), and are driven by
tests/bench/wsload (one process, epoll):

(a) echo round trips: 100 tunnels, each sending a 32-byte masked text
    frame and waiting for its echo, again and again; in interleaved
    rounds (agate, nginx, then nginx, agate, ...): round trips/s, p50/p99
    latency, the ratio to nginx in the same round, and the CPU µs the
    gateway's workers spend per round trip (utime+stime from
    /proc/PID/stat, read as wsload opens and closes its measured window);
(b) 10,000 idle tunnels: the increase of the workers' summed RSS (and
    Pss) once they are open and idle, per tunnel; run first, on fresh
    processes, one gateway after the other.

Everything listens on 127.0.0.1, runs from a temporary folder removed at
the end, and every process it starts is stopped by PID.  Writes
docs/benchmarks-websocket.md (--out); docs/benchmarks.md links to it.

    make bench-websocket
    python3 tests/bench/websocket.py --quick --out /tmp/bench

See tests/bench/README.md.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import select
import shlex
import shutil
import signal
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

MAXCONN = 12000           # agate max_connections (per worker)
PATH = "/ws/echo"
READY_PATH = "/ws/ready"  # a plain GET, answered 200 by testup
GATEWAY_ORDER = ("agate", "nginx")

NGINX_CONF = """\
# written by tests/bench/websocket.py
worker_processes @WORKERS@;
worker_rlimit_nofile @NOFILE@;
daemon off;
master_process on;
pid @DIR@/nginx.pid;
error_log @DIR@/nginx.error.log warn;

events {
    worker_connections @NOFILE@;
}

http {
    access_log off;
    client_body_temp_path @DIR@/tmp/nginx-body;
    proxy_temp_path @DIR@/tmp/nginx-proxy;
    fastcgi_temp_path @DIR@/tmp/nginx-fastcgi;
    uwsgi_temp_path @DIR@/tmp/nginx-uwsgi;
    scgi_temp_path @DIR@/tmp/nginx-scgi;

    upstream echo {
        server 127.0.0.1:@UPSTREAM_PORT@;
    }

    server {
        listen 127.0.0.1:@PORT@ backlog=4096;

        location /ws/ {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }
    }
}
"""

AGATE_CONF = """\
# written by tests/bench/websocket.py
server:
  workers: @WORKERS@
  listen: ["127.0.0.1:@PORT@"]
  max_connections: @MAXCONN@
  tunnel_timeout: 1h
log:
  level: warn
  access: off
upstreams:
  echo:
    servers: ["http://127.0.0.1:@UPSTREAM_PORT@"]
routes:
  - path: /ws/
    upstream: echo
"""


def fill(text, **values):
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError("unfilled %s" % ", ".join(left))
    return text


# ---------------------------------------------------------------- servers

class ReadyWS:
    """Ready when GET /ws/ready is answered 200 (by testup, through the
    gateway) and all the workers run."""

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            try:
                st = bench.http_get(self.port, READY_PATH)
                last = "GET %s: %d" % (READY_PATH, st)
                if st == 200 and self.units() >= self.nworkers:
                    return
            except OSError as e:
                last = "GET %s: %s" % (READY_PATH, e)
            time.sleep(0.05)
        raise BenchError("not ready after %.0fs (%s): %s" % (
            timeout, last, self.log_tail()))


class Nginx(ReadyWS, bench.NginxServer):
    def error_log(self):
        return os.path.join(self.tmp, "%s.error.log" % self.name)


class AgateWS(ReadyWS, bench.Server):
    binary_name = "agate"
    stop_signal = signal.SIGINT      # fast stop

    def __init__(self, tmp, port, workers, binary, conf_text):
        bench.Server.__init__(self, "agate", tmp, port, workers)
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


class Direct:
    """wsload straight to the upstream: the ceiling without a gateway."""
    name = "direct"
    error = None

    def __init__(self, upstream):
        self.port = upstream.port
        self.upstream = upstream

    def workers(self):
        return []

    def error_log(self):
        return self.upstream.logpath


class Testup(bench.Server):
    """The echo upstream: one process, no workers."""
    binary_name = "testup"

    def __init__(self, tmp, port, binary):
        bench.Server.__init__(self, "testup", tmp, port, 1)
        self.binary = binary

    def command(self):
        return [self.binary, "-l", "127.0.0.1:%d" % self.port, "-n", "echo"]

    def workers(self):
        return [self.proc.pid] if self.running() else []

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("testup exited: %s" % self.log_tail())
            if self.stats():
                return
            time.sleep(0.05)
        raise BenchError("testup not ready: %s" % self.log_tail())

    def stats(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port,
                                           timeout=2)
            c.request("GET", "/_stats")
            st = json.loads(c.getresponse().read())
            c.close()
        except (OSError, ValueError):
            return {}
        st["open"] -= 1            # not this connection
        return st


# ---------------------------------------------------------------- /proc

def pss_kib(pid):
    m = re.search(r"^Pss:\s+(\d+) kB",
                  bench.read_text("/proc/%d/smaps_rollup" % pid), re.M)
    return int(m.group(1)) if m else 0


def fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


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


# ---------------------------------------------------------------- wsload

class Load:
    """A wsload process whose stdout is read line by line with deadlines.
    It is always bounded: killed (by PID) if it outlives `limit' s."""

    def __init__(self, ctx, args, limit, stdin=subprocess.DEVNULL):
        self.cmd = [ctx.args.wsload] + args
        self.proc = subprocess.Popen(self.cmd, stdin=stdin,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        ctx.running.add(self.proc)
        self.ctx = ctx
        self.deadline = time.monotonic() + limit
        self.buf = b""
        self.lines = []

    def readline(self, timeout=None):
        end = self.deadline if timeout is None else min(
            self.deadline, time.monotonic() + timeout)
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            data = os.read(fd, 4096)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.decode("utf-8", "replace")
        self.lines.append(line)
        return line

    def finish(self):
        """Waits for the exit (killing it at the deadline); returns the
        exit status and stderr."""
        try:
            self.proc.wait(max(0.1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        err = self.proc.stderr.read().decode("utf-8", "replace")
        rest = self.proc.stdout.read().decode("utf-8", "replace")
        self.lines += [l for l in (self.buf.decode() + rest).splitlines()
                       if l]
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.ctx.running.discard(self.proc)
        return self.proc.returncode, err.strip()


def parse_kv(line):
    out = {}
    for tok in line.split()[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v) if "." in v else int(v)
            except ValueError:
                out[k] = v
    return out


def url(gw):
    return "ws://127.0.0.1:%d%s" % (gw.port, PATH)


def rtt_run(ctx, gw):
    """One measured wsload rtt run against gw."""
    a = ctx.args
    workers = gw.workers()
    up = ctx.upstream.workers()
    log0 = log_size(gw.error_log())
    limit = a.warmup + a.duration + 30 + 10
    ld = Load(ctx, ["rtt", "-c", str(a.conns), "-s", str(a.size),
                    "-d", str(a.duration), "-w", str(a.warmup),
                    "-T", "20", url(gw)], limit)
    res = {"notes": []}
    snaps = {}
    while True:
        line = ld.readline()
        if line is None:
            break
        if line.startswith("open "):
            res["open_line"] = line
        elif line in ("measure start", "measure end"):
            snaps[line] = (time.monotonic(), ticks(workers), ticks(up),
                           ticks([ld.proc.pid]), bench.system_busy_ticks())
        elif line.startswith("rtt "):
            res.update(parse_kv(line))
            break
    rc, err = ld.finish()
    res["rc"] = rc
    if err:
        res["stderr"] = err.splitlines()[-5:]
    if "round_trips" not in res:
        res["notes"].append("wsload gave no result (exit %s): %s" % (
            rc, " | ".join(res.get("stderr", []))[:300]))
        res["rps"] = None
    if len(snaps) == 2:
        (t0, g0, u0, l0, b0), (t1, g1, u1, l1, b1) = (
            snaps["measure start"], snaps["measure end"])
        wall = max(t1 - t0, 1e-6)
        n = res.get("round_trips") or 0
        res["cpu_us_rt"] = ((g1 - g0) / CLK * 1e6 / n) if n and workers \
            else None
        res["gw_pct"] = 100.0 * (g1 - g0) / CLK / wall if workers else None
        res["up_pct"] = 100.0 * (u1 - u0) / CLK / wall
        res["load_pct"] = 100.0 * (l1 - l0) / CLK / wall
        ours = (g1 - g0) + (u1 - u0) + (l1 - l0)
        res["other_pct"] = max(0.0, 100.0 * ((b1 - b0) - ours) / CLK / wall)
    res["log"] = new_log_lines(gw.error_log(), log0)
    return res


def idle_run(ctx, gw):
    """Opens a.idle_conns idle tunnels through gw and weighs them."""
    a = ctx.args
    n = a.idle_conns
    # A few tunnels first, so one-time allocations are not counted.
    warm = Load(ctx, ["hold", "-c", "20", "-t", "0.5", url(gw)], 30)
    warm.finish()
    time.sleep(0.5)
    workers = gw.workers()
    log0 = log_size(gw.error_log())
    r = {"conns": n, "workers": len(workers),
         "rss0": sum(bench.status_kib(p, "VmRSS") for p in workers),
         "pss0": sum(pss_kib(p) for p in workers),
         "fds0": sum(fds(p) for p in workers),
         "up_open0": ctx.upstream.stats().get("open")}
    t0 = time.monotonic()
    ld = Load(ctx, ["hold", "-c", str(n), "-b", "500", "-T", "90",
                    "-t", "300", url(gw)], 400, stdin=subprocess.PIPE)
    line = ld.readline(timeout=120) or ""
    r["open_seconds"] = time.monotonic() - t0
    m = re.match(r"open (\d+) failed (\d+)", line)
    r["opened"], r["failed"] = (int(m.group(1)), int(m.group(2))) if m \
        else (0, n)
    time.sleep(a.settle)
    r["rss1"] = sum(bench.status_kib(p, "VmRSS") for p in workers)
    r["pss1"] = sum(pss_kib(p) for p in workers)
    r["fds1"] = sum(fds(p) for p in workers)
    r["fds_split"] = [fds(p) for p in workers]
    r["up_open1"] = ctx.upstream.stats().get("open")
    ok = r["opened"]
    r["bytes_rss"] = (r["rss1"] - r["rss0"]) * 1024.0 / ok if ok else None
    r["bytes_pss"] = (r["pss1"] - r["pss0"]) * 1024.0 / ok if ok else None
    ld.proc.stdin.close()          # wsload closes them all
    r["closed_line"] = ld.readline(timeout=30) or ""
    rc, err = ld.finish()
    r["rc"] = rc
    r["stderr"] = err.splitlines()[-5:] if err else []
    time.sleep(1.0)
    r["rss2"] = sum(bench.status_kib(p, "VmRSS") for p in workers)
    r["fds2"] = sum(fds(p) for p in workers)
    r["up_open2"] = ctx.upstream.stats().get("open")
    r["log"] = new_log_lines(gw.error_log(), log0)
    return r


# ---------------------------------------------------------------- report

def fmt(v, spec="%.0f", none="–"):
    return none if v is None else spec % v


def runs_of(ctx, name):
    return [r for r in ctx.rtt.get(name, []) if r and r.get("rps")]


def ratios(ctx, name):
    out = []
    for a, b in zip(ctx.rtt.get(name, []), ctx.rtt.get("nginx", [])):
        if a and b and a.get("rps") and b.get("rps"):
            out.append(a["rps"] / b["rps"])
    return out


def errors_text(runs):
    errs = {}
    for r in runs:
        for k, v in r.items():
            if k in ("connect", "handshake", "bad_echo", "dropped",
                     "timeout", "protocol") and v:
                errs[k] = errs.get(k, 0) + v
        if r.get("no_eof"):
            errs["close not followed by FIN"] = errs.get(
                "close not followed by FIN", 0) + r["no_eof"]
        for n in r.get("notes", []):
            errs[n] = errs.get(n, 0) + 1
    return ", ".join("%s %d" % kv for kv in errs.items()) or "none"


def rtt_rows(ctx):
    rows = []
    for name in ctx.order + ["direct"]:
        allruns = ctx.rtt.get(name, [])
        runs = runs_of(ctx, name)
        if not runs:
            gw = ctx.by_name.get(name)
            rows.append([name, "FAILED: %s" % (
                "see the notes" if gw and gw.error else
                errors_text(allruns)[:200])] + ["–"] * 7)
            continue
        rr = ratios(ctx, name)
        rows.append([
            "none (wsload → upstream)" if name == "direct" else name,
            fmt(bench.med([r["rps"] for r in runs])),
            "1.00" if name == "nginx" else "–" if name == "direct" else
            fmt(bench.med(rr), "%.2f"),
            "%d µs" % bench.med([r["p50_us"] for r in runs]),
            "%d µs" % bench.med([r["p99_us"] for r in runs]),
            fmt(bench.med([r.get("cpu_us_rt") for r in runs]), "%.1f"),
            "%s / %s / %s" % tuple(
                fmt(bench.med([r.get(k) for r in runs]), "%.0f%%")
                for k in ("gw_pct", "up_pct", "load_pct")),
            ", ".join(fmt(r["rps"]) for r in runs),
            errors_text(allruns)])
    return rows


def idle_rows(ctx):
    rows = []
    ref = ctx.idle.get("nginx", {}).get("bytes_rss")
    for name in ctx.order:
        r = ctx.idle.get(name)
        if not r:
            gw = ctx.by_name.get(name)
            rows.append([name, "FAILED: %s" % (
                "see the notes" if gw and gw.error else "not run")]
                        + ["–"] * 7)
            continue
        ratio = (r["bytes_rss"] / ref) if ref and r["bytes_rss"] else None
        rows.append([
            name, "%d (%d failed)" % (r["opened"], r["failed"]),
            "%.1f → %.1f MiB" % (r["rss0"] / 1024.0, r["rss1"] / 1024.0),
            fmt(r["bytes_rss"]),
            "1.00" if name == "nginx" else fmt(ratio, "%.2f"),
            fmt(r["bytes_pss"]),
            "%.1f s" % r["open_seconds"],
            "%s → %s fds (%s), upstream %s open" % (
                r["fds0"], r["fds1"],
                " + ".join(str(x) for x in r["fds_split"]),
                r["up_open1"]),
            "RSS %.1f MiB, %s fds, upstream %s open; %s" % (
                r["rss2"] / 1024.0, r["fds2"], r["up_open2"],
                r["closed_line"] or "no answer from wsload")])
    return rows


def target_rows(ctx):
    rows = []
    rr = bench.med(ratios(ctx, "agate"))
    rows.append(["echo round trips/s, 100 tunnels", "≥ 1.00× nginx",
                 fmt(rr, "%.2f×"), "–" if rr is None else
                 ("yes" if rr >= 1.0 else "**no**")])
    a = ctx.idle.get("agate", {}).get("bytes_rss")
    n = ctx.idle.get("nginx", {}).get("bytes_rss")
    rows.append(["bytes per idle tunnel (RSS), %s tunnels" %
                 "{:,}".format(ctx.args.idle_conns),
                 "≤ nginx's (%s)" % fmt(n), fmt(a),
                 "–" if a is None or n is None else
                 ("yes" if a <= n else "**no**")])
    return rows


def log_notes(ctx):
    out = []
    for name in ctx.order:
        lines = [l for r in ctx.rtt.get(name, []) if r
                 for l in r.get("log", [])]
        lines += ctx.idle.get(name, {}).get("log", [])
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
    info = {
        "cpu": cpu.group(1).strip() if cpu else "?",
        "mem": "%.0f GiB" % (int(mem.group(1)) / 1048576.0) if mem else "?",
        "os": osr.group(1) if osr else "?",
        "kernel": os.uname().release,
        "agate": bench.cmd_version([ctx.args.agate, "-V"], r"agate (\S+)")
        + git + bench.binary_date(ctx.args.agate),
        "libevent": bench.lib_version(ctx.args.agate, "libevent",
                                      "libevent"),
        "nginx": bench.cmd_version([ctx.nginx, "-v"], r"nginx/(\S+)")
        if ctx.nginx else "absent",
    }
    return info


def report(ctx, wall):
    a = ctx.args
    info = ctx.info
    blocks = ["## Targets\n",
              bench.md_table(["target", "wanted", "agate", "met"],
                             target_rows(ctx)) + "\n"]
    blocks += ["## (a) Echo round trips, %d tunnels, %d-byte messages\n"
               % (a.conns, a.size),
               bench.md_table(["gateway", "round trips/s", "× nginx", "p50",
                               "p99", "CPU µs/round trip",
                               "CPU gateway / upstream / wsload",
                               "round trips/s per round", "errors"],
                              rtt_rows(ctx)) + "\n",
               "Medians over %d round(s) of %g s, after a %g s warm-up in "
               "each run; the gateways alternate within the rounds (agate "
               "first in odd rounds, nginx first in even ones). × nginx is "
               "the median of the per-round ratios. A round trip is one "
               "masked 32-byte text frame from wsload to the gateway, to "
               "the upstream and back; each tunnel has one in flight. "
               "Latency is wsload's, from the write of the frame to the "
               "read of its echo. CPU µs/round trip: utime+stime of the "
               "gateway's workers during the measured window / round "
               "trips. CPU gateway / upstream / wsload: share of one CPU "
               "each (the machine has %d, shared by all three). The last "
               "row is one run of wsload straight to the upstream, before "
               "the rounds: the ceiling without a gateway.\n"
               % (a.rounds, a.duration, a.warmup, NCPU)]
    blocks += ["## (b) %s idle tunnels\n" % "{:,}".format(a.idle_conns),
               bench.md_table(["gateway", "tunnels open", "workers' RSS",
                               "bytes/tunnel (RSS)", "× nginx",
                               "bytes/tunnel (Pss)", "open time",
                               "while open", "after closing"],
                              idle_rows(ctx)) + "\n",
               "Each tunnel did the handshake through the gateway to the "
               "upstream and then stayed idle. bytes/tunnel = increase of "
               "the workers' summed VmRSS (Pss from smaps_rollup) between "
               "before the tunnels and %g s after the last was open, / "
               "tunnels open. Run first, on fresh gateways, after 20 "
               "warm-up tunnels. \"while open\": the workers' fds before "
               "and while open (per worker) and the upstream's open "
               "connections; \"after "
               "closing\": the same 1 s after wsload closed every tunnel "
               "with a close frame (and its own count: answered by a "
               "close frame, and how many of those the gateway did not "
               "follow by closing the connection).\n" % a.settle]
    notes = []
    for gw in ctx.gateways:
        if gw.error:
            notes.append("- %s: %s" % (gw.name, gw.error))
    others = [r["other_pct"] for n in ctx.order for r in runs_of(ctx, n)
              if r.get("other_pct") is not None]
    if others:
        notes.append("- CPU used by processes outside the benchmark during "
                     "the measured windows: median %.0f%%, max %.0f%% of "
                     "one CPU." % (statistics.median(others), max(others)))
    notes += log_notes(ctx)
    for msg in ctx.notes:
        notes.append("- " + msg)
    if notes:
        blocks += ["## Notes\n", "\n".join(notes) + "\n"]
    console = "\n".join(blocks)
    print("\n" + console)

    now = datetime.datetime.now().astimezone()
    head = [
        "# WebSocket benchmark\n",
        "Generated by `tests/bench/websocket.py` on %s (%.0f s).\n" % (
            now.strftime("%Y-%m-%d %H:%M %Z"), wall),
        "WebSocket tunnels through agate and through nginx, in front of "
        "the same upstream: the WebSocket echo of "
        "`tests/upstream/testup`, driven by `tests/bench/wsload`.\n",
        "- Machine: %s, %d CPUs, %s RAM; %s, kernel %s" % (
            info["cpu"], NCPU, info["mem"], info["os"], info["kernel"]),
        "- Versions: agate %s; libevent %s; nginx %s" % (
            info["agate"], info["libevent"], info["nginx"]),
        "- Setup: everything on 127.0.0.1; %d workers per gateway; "
        "upstream: testup, one process (libevent); wsload: one process "
        "(epoll); fd limit %d; nginx `worker_rlimit_nofile %d`, "
        "`worker_connections %d`, `proxy_http_version 1.1`, `Upgrade "
        "$http_upgrade`, `Connection \"upgrade\"`, `proxy_read_timeout "
        "1h`, access_log off" % (a.workers, ctx.nofile, ctx.nofile,
                                  ctx.nofile),
        "- Command: `%s`%s\n" % (" ".join(shlex.quote(x) for x in
                                          ctx.argv_for_report),
                                 " (--quick: a smoke test, not a "
                                 "measurement)" if a.quick else ""),
        "agate's config:\n\n```yaml\n%s```\n" % ctx.agate_text,
    ]
    os.makedirs(a.out, exist_ok=True)
    md = os.path.join(a.out, "benchmarks-websocket.md")
    with open(md, "w") as f:
        f.write("\n".join(head) + "\n" + console)
    log("wrote %s" % md)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "rtt": ctx.rtt, "idle": ctx.idle}, f,
                      indent=1, default=str)


# ---------------------------------------------------------------- main

class Context:
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agate", default=os.path.join(TOP, "agate"))
    p.add_argument("--testup",
                   default=os.path.join(TOP, "tests/upstream/testup"))
    p.add_argument("--wsload", default=os.path.join(TOP, "tests/bench/wsload"))
    p.add_argument("--out", default=os.path.join(TOP, "docs"),
                   help="folder for benchmarks-websocket.md")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6,
                   help="even: each gateway goes first as often")
    p.add_argument("--duration", type=float, default=8,
                   help="measured seconds per round trip run")
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--idle-conns", type=int, default=10000)
    p.add_argument("--settle", type=float, default=2,
                   help="seconds idle before weighing the tunnels")
    p.add_argument("--gateways", default="agate,nginx",
                   help="subset of agate,nginx")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 2 s, 1000 idle tunnels")
    p.add_argument("--json", help="also write raw results to this file")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 2, 0.5
        a.idle_conns, a.settle = min(a.idle_conns, 1000), 1
    a.gateway_list = [g for g in a.gateways.split(",") if g]
    if not a.gateway_list or not set(a.gateway_list) <= set(GATEWAY_ORDER):
        p.error("--gateways: a subset of agate,nginx")
    if a.rounds < 1 or a.duration <= 0 or a.conns < 1 or a.idle_conns < 1:
        p.error("--rounds, --duration, --conns, --idle-conns: positive")
    for k in ("agate", "testup", "wsload", "out"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    return a


def start_servers(ctx):
    a, tmp = ctx.args, ctx.tmp
    ctx.upstream = Testup(tmp, bench.free_port(), a.testup)
    ctx.servers.append(ctx.upstream)
    ctx.upstream.start()
    log("upstream testup on :%d (pid %d)" % (ctx.upstream.port,
                                            ctx.upstream.proc.pid))
    for name in GATEWAY_ORDER:
        if name not in a.gateway_list:
            continue
        port = bench.free_port()
        if name == "agate":
            ctx.agate_text = fill(AGATE_CONF, WORKERS=a.workers, PORT=port,
                                  MAXCONN=MAXCONN,
                                  UPSTREAM_PORT=ctx.upstream.port)
            gw = AgateWS(tmp, port, a.workers, a.agate, ctx.agate_text)
        else:
            if not ctx.nginx:
                ctx.notes.append("nginx is not installed: no ratios")
                continue
            gw = Nginx("nginx", tmp, port, a.workers, ctx.nginx,
                       fill(NGINX_CONF, DIR=tmp, PORT=port,
                            WORKERS=a.workers, NOFILE=min(20000, ctx.nofile),
                            UPSTREAM_PORT=ctx.upstream.port))
        ctx.gateways.append(gw)
        ctx.servers.append(gw)
        ctx.by_name[name] = gw
        try:
            gw.start()
            log("%s on :%d (pid %d, workers %s)" % (
                gw.name, gw.port, gw.proc.pid, gw.workers()))
        except (BenchError, OSError, subprocess.TimeoutExpired) as e:
            gw.error = "did not start: %s" % e
            log("%s %s" % (gw.name, gw.error))


def live(ctx):
    return [g for g in ctx.gateways if not g.error and g.running()]


def main(argv):
    a = parse_args(argv)
    for what, path in (("wsload", a.wsload), ("testup", a.testup)):
        if not os.access(path, os.X_OK):
            print("no %s at %s (make tests/bench/wsload "
                  "tests/upstream/testup)" % (what, path), file=sys.stderr)
            return 1
    if "agate" in a.gateway_list and not os.access(a.agate, os.X_OK):
        print("no agate binary at %s (make -j2 agate)" % a.agate,
              file=sys.stderr)
        return 1
    ctx = Context()
    ctx.args = a
    ctx.argv_for_report = ["tests/bench/websocket.py"] + argv
    ctx.nginx = bench.find_tool("nginx")
    ctx.nofile = bench.raise_nofile()
    need = a.idle_conns * 2 + 100
    if ctx.nofile < min(20000, need):
        log("warning: fd limit %d is low for %d tunnels" % (
            ctx.nofile, a.idle_conns))
    ctx.tmp = tempfile.mkdtemp(prefix="agate-wsbench-")
    os.chmod(ctx.tmp, 0o755)     # nginx workers may run as nobody
    os.mkdir(os.path.join(ctx.tmp, "tmp"))
    ctx.servers, ctx.gateways, ctx.running = [], [], set()
    ctx.by_name, ctx.rtt, ctx.idle, ctx.notes = {}, {}, {}, []
    ctx.agate_text = "(agate not run)\n"
    ctx.order = [g for g in GATEWAY_ORDER if g in a.gateway_list]

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    t0 = time.monotonic()
    try:
        ctx.info = versions(ctx)
        start_servers(ctx)
        # (b) first: the gateways are fresh, their heaps not yet grown.
        log("(b) %d idle tunnels" % a.idle_conns)
        for gw in live(ctx):
            r = idle_run(ctx, gw)
            ctx.idle[gw.name] = r
            log("  %-6s %d open (%d failed) in %.1f s, %s bytes/tunnel "
                "(Pss %s); after close: %s" % (
                    gw.name, r["opened"], r["failed"], r["open_seconds"],
                    fmt(r["bytes_rss"]), fmt(r["bytes_pss"]),
                    r["closed_line"]))
        log("(a) echo round trips, %d tunnels, %d round(s) of %g s" % (
            a.conns, a.rounds, a.duration))
        if ctx.upstream.running():
            r = rtt_run(ctx, Direct(ctx.upstream))
            ctx.rtt["direct"] = [r]
            log("  upstream alone  %9s rt/s  p50 %s µs  p99 %s µs" % (
                fmt(r.get("rps")), r.get("p50_us", "–"),
                r.get("p99_us", "–")))
        for rnd in range(a.rounds):
            order = list(live(ctx))
            if rnd % 2:
                order.reverse()
            for gw in order:
                r = rtt_run(ctx, gw)
                ctx.rtt.setdefault(gw.name, []).append(r)
                log("  round %d %-6s %9s rt/s  p50 %s µs  p99 %s µs  "
                    "cpu %s µs/rt  gw %s%%  errors: %s" % (
                        rnd + 1, gw.name, fmt(r.get("rps")),
                        r.get("p50_us", "–"), r.get("p99_us", "–"),
                        fmt(r.get("cpu_us_rt"), "%.1f"),
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
