#!/usr/bin/env python3
"""agate's fan-out benchmark: one request, three upstream calls.

A route that calls three upstreams at once and answers their combined
JSON, done three ways on the same machine in the same run:

- agate: a `fanout: {mode: all}` route over three upstreams;
- nginx with its lua module: `ngx.location.capture_multi` of three
  internal locations that proxy_pass to the upstreams (keepalive);
- Python: aiohttp + uvloop, `asyncio.gather` of three GETs on one
  ClientSession, two processes (reuse_port).

The upstream is nginx + lua answering every call after `ngx.sleep(0.02)`
(20 ms); its capacity is measured alone first.  Two loads, each run in
interleaved rounds (agate, nginx+lua, aiohttp, agate, ...):

1. a fixed offered rate (default 1000 req/s): wrk paced by a Lua
   `delay()` that hands out send slots at a fixed interval per thread
   (Debian has no wrk2); p50/p99 from `wrk --latency`;
2. 200 connections, closed loop: requests/s, p50, p99.

Everything listens on 127.0.0.1, runs from a temporary folder removed at
the end, and every process it starts is stopped by PID.  Writes
docs/benchmarks-fanout.md (--out).

    python3 tests/bench/fanout.py --agate ./agate --out docs

See tests/bench/README.md.
"""

import argparse
import datetime
import http.client
import json
import os
import re
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

UPSTREAM_WAIT = 0.020        # seconds each upstream call waits
CALLS = ("a", "b", "c")
KEEPALIVE = 64      # idle upstream connections, per worker and upstream
FANOUT_TIMEOUT = "2s"
MAXCONN = 12000
WORKER_CONNECTIONS = 16384
UPSTREAM_BODY = '{"ok":true}'
MODULE_DIR = "/usr/lib/nginx/modules"
GATEWAY_NAMES = ("agate", "nginx+lua", "aiohttp")
TARGETS = {"p50_ms": 21.0, "p99_ms": 25.0, "x_nginx": 1.0, "x_aiohttp": 3.0}

# ---------------------------------------------------------------- configs

MODULES = "@MODULES@"

UPSTREAM_CONF = MODULES + """
# The upstream: every call answers after ngx.sleep(@WAIT@) (a timer, no
# CPU while waiting).  / answers at once, for the readiness check.
worker_processes @WORKERS@;
worker_rlimit_nofile @NOFILE@;
daemon off;
master_process on;
pid @DIR@/upstream.pid;
error_log @DIR@/upstream.error.log warn;

events {
    worker_connections @CONNS@;
}

http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path @DIR@/tmp/upstream-body;
    proxy_temp_path @DIR@/tmp/upstream-proxy;
    fastcgi_temp_path @DIR@/tmp/upstream-fastcgi;
    uwsgi_temp_path @DIR@/tmp/upstream-uwsgi;
    scgi_temp_path @DIR@/tmp/upstream-scgi;

    server {
        listen 127.0.0.1:@PORT@ backlog=8192 reuseport;
        default_type application/json;

        location = / {
            return 200 '@BODY@';
        }

        location / {
            content_by_lua_block {
                ngx.sleep(@WAIT@)
                ngx.print('@BODY@')
            }
        }
    }
}
"""

NGINX_LUA_CONF = MODULES + """
# The same fan-out done by nginx: three subrequests at once
# (ngx.location.capture_multi) to internal locations that proxy to the
# three upstreams with keepalive, bodies combined into one JSON object.
worker_processes @WORKERS@;
worker_rlimit_nofile @NOFILE@;
daemon off;
master_process on;
pid @DIR@/nginx-lua.pid;
error_log @DIR@/nginx+lua.error.log warn;

events {
    worker_connections @CONNS@;
}

http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path @DIR@/tmp/nginx-body;
    proxy_temp_path @DIR@/tmp/nginx-proxy;
    fastcgi_temp_path @DIR@/tmp/nginx-fastcgi;
    uwsgi_temp_path @DIR@/tmp/nginx-uwsgi;
    scgi_temp_path @DIR@/tmp/nginx-scgi;

    upstream ua {
        server 127.0.0.1:@UPSTREAM_PORT@;
        keepalive @KEEPALIVE@;
        keepalive_requests 1000000;
    }
    upstream ub {
        server 127.0.0.1:@UPSTREAM_PORT@;
        keepalive @KEEPALIVE@;
        keepalive_requests 1000000;
    }
    upstream uc {
        server 127.0.0.1:@UPSTREAM_PORT@;
        keepalive @KEEPALIVE@;
        keepalive_requests 1000000;
    }

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_connect_timeout @TIMEOUT@;
    proxy_read_timeout @TIMEOUT@;
    proxy_send_timeout @TIMEOUT@;

    server {
        listen 127.0.0.1:@PORT@ backlog=4096;

        location ~ ^/fan/([^/]+)$ {
            default_type application/json;
            content_by_lua_block {
                local id = ngx.var[1]
                local ra, rb, rc = ngx.location.capture_multi({
                    { "/_call/a/" .. id }, { "/_call/b/" .. id },
                    { "/_call/c/" .. id } })
                local names = { "a", "b", "c" }
                for i, r in ipairs({ ra, rb, rc }) do
                    if r.status < 200 or r.status > 299 or r.truncated then
                        ngx.status = 502
                        ngx.print('{"error":"fan-out call ', names[i],
                                  ' failed","status":502}')
                        return
                    end
                end
                ngx.print('{"a":', ra.body, ',"b":', rb.body, ',"c":',
                          rc.body, '}')
            }
        }

        location /_call/a/ {
            internal;
            proxy_pass http://ua/a/;
        }
        location /_call/b/ {
            internal;
            proxy_pass http://ub/b/;
        }
        location /_call/c/ {
            internal;
            proxy_pass http://uc/c/;
        }
    }
}
"""

AIOHTTP_SERVER = r'''
"""The same fan-out in Python: aiohttp + uvloop, asyncio.gather of three
GETs on one ClientSession; N processes share the port (SO_REUSEPORT).
Written by tests/bench/fanout.py."""
import asyncio
import os
import signal
import sys

PORT, UPSTREAM, PROCS, TIMEOUT = (int(sys.argv[1]), sys.argv[2],
                                  int(sys.argv[3]), float(sys.argv[4]))


def serve():
    import uvloop
    from aiohttp import web, ClientSession, ClientTimeout, TCPConnector

    async def get(session, path):
        async with session.get(UPSTREAM + path) as r:
            body = await r.read()
            if r.status < 200 or r.status > 299:
                raise RuntimeError("%s answered %d" % (path, r.status))
            return body

    async def fan(request):
        i = request.match_info["id"]
        s = request.app["session"]
        try:
            a, b, c = await asyncio.gather(
                get(s, "/a/" + i), get(s, "/b/" + i), get(s, "/c/" + i))
        except Exception as e:
            return web.json_response({"error": str(e), "status": 502},
                                     status=502)
        return web.Response(body=b'{"a":' + a + b',"b":' + b + b',"c":' +
                            c + b'}', content_type="application/json")

    async def on_startup(app):
        app["session"] = ClientSession(
            connector=TCPConnector(limit=4096, keepalive_timeout=30),
            timeout=ClientTimeout(total=TIMEOUT))

    async def on_cleanup(app):
        await app["session"].close()

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.router.add_get("/fan/{id}", fan)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    web.run_app(app, host="127.0.0.1", port=PORT, reuse_port=True,
                backlog=4096, access_log=None, print=None)


def main():
    kids = []
    for _ in range(PROCS):
        pid = os.fork()
        if pid == 0:
            try:
                serve()
            finally:
                os._exit(0)
        kids.append(pid)

    def stop(signum, frame):
        for p in kids:
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in kids:
        while True:
            try:
                os.waitpid(p, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue


main()
'''

# wrk paced to a fixed rate: each thread's Lua state hands out send slots
# @INTERVAL@ ms apart; a connection that has just got its answer waits for
# the next free slot (delay() is called before every request, the first
# one too).  wrk's latency runs from the write of a request to the end of
# its answer, so the wait is not counted.  Slots that pass while every
# connection is busy are lost (the achieved rate then drops, and shows it).
PACE_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } fanout_timespec;
int clock_gettime(int clk_id, fanout_timespec *tp);
]]
local ts = ffi.new("fanout_timespec")
local CLOCK_MONOTONIC = 1
local interval = @INTERVAL@
local next_slot = nil

local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function delay()
    local now = now_ms()
    if next_slot == nil or next_slot < now then
        next_slot = now
    end
    local slot = next_slot
    next_slot = slot + interval
    return math.floor(slot - now + 0.5)
end
"""


def fill(text, **values):
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError("unfilled %s" % ", ".join(sorted(set(left))))
    return text


# ---------------------------------------------------------------- setup

def python_for_aiohttp():
    """Debian's python3-aiohttp/uvloop install for /usr/bin/python3."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) \
        else sys.executable


def has_module(py, name):
    return subprocess.call([py, "-c", "import " + name],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) == 0


def lua_module():
    p = os.path.join(MODULE_DIR, "ngx_http_lua_module.so")
    return p if os.path.exists(p) else None


def missing_packages(py):
    out = []
    if not bench.find_tool("nginx"):
        out.append("nginx")
    if not lua_module():
        out.append("libnginx-mod-http-lua")
    if not has_module(py, "aiohttp"):
        out.append("python3-aiohttp")
    if not has_module(py, "uvloop"):
        out.append("python3-uvloop")
    if not bench.find_tool("wrk"):
        out.append("wrk")
    return out


def ensure_packages(py):
    missing = missing_packages(py)
    if not missing:
        return []
    line = "apt-get install -y " + " ".join(missing)
    if os.geteuid() != 0:
        print("missing packages; as root, run:\n  apt-get update && " + line,
              file=sys.stderr)
        sys.exit(1)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("installing: apt-get update && " + line)
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y"] +
                missing):
        try:
            rc = subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL,
                                 timeout=300)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            log("%s: %s" % (" ".join(cmd[:2]), rc))
    still = missing_packages(py)
    if still:
        print("still missing after install: " + " ".join(still),
              file=sys.stderr)
        sys.exit(1)
    return missing


def load_modules():
    """load_module lines, by absolute path (nginx runs with -p TMP), for
    the lua module and NDK, which it needs loaded first."""
    lines = []
    for name in ("ndk_http_module.so", "ngx_http_lua_module.so"):
        p = os.path.join(MODULE_DIR, name)
        if os.path.exists(p):
            lines.append("load_module %s;" % p)
    return "\n".join(lines)


# ---------------------------------------------------------------- servers

class ReadyPath:
    """wait_ready on a chosen path: a gateway is ready when a whole
    fan-out answers 200 and all its workers run."""

    ready_path = "/"

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            try:
                st = bench.http_get(self.port, self.ready_path)
                last = "GET %s: %d" % (self.ready_path, st)
                if st == 200 and self.units() >= self.nworkers:
                    return
            except OSError as e:
                last = "GET %s: %s" % (self.ready_path, e)
            time.sleep(0.05)
        raise BenchError("not ready after %.0fs (%s): %s" % (
            timeout, last, self.log_tail()))


class Nginx(ReadyPath, bench.NginxServer):
    def error_log(self):
        return os.path.join(self.tmp, "%s.error.log" % self.name)


class AgateFan(ReadyPath, bench.Server):
    binary_name = "agate"
    stop_signal = signal.SIGINT      # fast stop

    def __init__(self, tmp, port, workers, binary, upstream_port,
                 keepalive):
        bench.Server.__init__(self, "agate", tmp, port, workers)
        self.binary = binary
        self.conf = os.path.join(tmp, "agate.yaml")
        up = json.dumps({"servers": ["http://127.0.0.1:%d" % upstream_port],
                         "keepalive": keepalive})
        calls = "".join(
            '        %s: {upstream: %s, path: "/%s/{id}"}\n' % (c, c, c)
            for c in CALLS)
        self.text = (
            "# written by tests/bench/fanout.py\n"
            "server:\n"
            "  workers: %d\n"
            "  listen: [\"127.0.0.1:%d\"]\n"
            "  max_connections: %d\n"
            "log: {access: \"off\", level: warn}\n"
            "upstreams:\n%s"
            "routes:\n"
            "  - path: /fan/{id}\n"
            "    fanout:\n"
            "      mode: all\n"
            "      timeout: %s\n"
            "      calls:\n%s" % (
                workers, port, MAXCONN,
                "".join("  %s: %s\n" % (c, up) for c in CALLS),
                FANOUT_TIMEOUT, calls))
        with open(self.conf, "w") as f:
            f.write(self.text)

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


class Aiohttp(ReadyPath, bench.Server):
    binary_name = "python3"

    def __init__(self, tmp, port, workers, python, upstream_port):
        bench.Server.__init__(self, "aiohttp", tmp, port, workers)
        self.python = python
        self.script = os.path.join(tmp, "fanout_aiohttp.py")
        self.upstream = "http://127.0.0.1:%d" % upstream_port
        with open(self.script, "w") as f:
            f.write(AIOHTTP_SERVER)

    def command(self):
        return [self.python, self.script, str(self.port), self.upstream,
                str(self.nworkers), str(float(FANOUT_TIMEOUT.rstrip("s")))]

    def error_log(self):
        return self.logpath


# ---------------------------------------------------------------- measure

def run_wrk(ctx, port, path, conns, threads, duration, script=None):
    spec = {"conns": conns, "path": path}
    if script:
        spec["script"] = script          # absolute: os.path.join keeps it
    saved = ctx.args.wrk_threads
    ctx.args.wrk_threads = threads
    try:
        return bench.run_wrk(ctx, port, spec, duration)
    finally:
        ctx.args.wrk_threads = saved


def tcp_active_opens():
    """Connections this machine has opened (connect()) so far: all
    processes, so wrk's and any other work's count too."""
    lines = [l.split() for l in bench.read_text("/proc/net/snmp").splitlines()
             if l.startswith("Tcp:")]
    try:
        return int(lines[1][lines[0].index("ActiveOpens")])
    except (IndexError, ValueError):
        return None


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


def measure(ctx, gw, load, duration):
    """One wrk run against gw with the CPU used by gw, the upstream, wrk
    and everything else, and the lines gw's error log gained."""
    pids = set(gw.all_pids())
    up_pids = set(ctx.upstream.all_pids())
    before = {p: bench.cpu_ticks(p) for p in pids | up_pids}
    log0 = log_size(gw.error_log())
    opens0 = tcp_active_opens()
    busy0, kids0, wall0 = (bench.system_busy_ticks(),
                           bench.children_cpu_ticks(), time.monotonic())
    r = run_wrk(ctx, gw.port, "/fan/42", load["conns"], load["threads"],
                duration, load.get("script"))
    wall = time.monotonic() - wall0
    opens = tcp_active_opens()
    r["opens_req"] = ((opens - opens0) / r["requests"] if r["requests"]
                      and opens is not None and opens0 is not None
                      else None)
    busy, kids = (bench.system_busy_ticks() - busy0,
                  bench.children_cpu_ticks() - kids0)

    def used(group):
        t = 0
        for p in set(group):
            a, b = bench.cpu_ticks(p), before.get(p)
            if a is not None:
                t += a - (b or 0)
        return t
    gw_t = used(set(gw.all_pids()) | pids)
    up_t = used(set(ctx.upstream.all_pids()) | up_pids)
    cap = wall * CLK
    r["cpu_us_req"] = gw_t * 1e6 / CLK / r["requests"] if r["requests"] \
        else None
    r["gw_pct"] = 100.0 * gw_t / cap
    r["up_pct"] = 100.0 * up_t / cap
    r["wrk_pct"] = 100.0 * kids / cap
    r["other_pct"] = max(0.0, 100.0 * (busy - gw_t - up_t - kids) / cap)
    r["idle_pct"] = max(0.0, 100.0 * NCPU - 100.0 * busy / cap)
    r["log"] = new_log_lines(gw.error_log(), log0)
    notes = []
    if not gw.running():
        notes.append("exited (%s)" % gw.proc.returncode)
    if any(bench.cpu_ticks(p) is None for p in pids):
        notes.append("a process exited during the run")
    r["notes"] = notes
    if not bench.error_text(r):
        r.pop("raw", None)
    return r


def check_answer(gw):
    """The answer of a fan-out through gw: status, headers and body."""
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    try:
        t0 = time.monotonic()
        c.request("GET", "/fan/42")
        r = c.getresponse()
        body = r.read()
        ms = (time.monotonic() - t0) * 1000
        return r.status, body.decode("utf-8", "replace"), ms
    finally:
        c.close()


def upstream_check(ctx):
    """The upstream alone: at the concurrency the gateways give it (3
    calls per client connection), and at 3 times that, to see how far
    it goes."""
    a = ctx.args
    out = []
    for conns in sorted({a.conns, a.conns * len(CALLS),
                         a.conns * len(CALLS) * 3}):
        r = run_wrk(ctx, ctx.upstream.port, "/a/42", conns, 2,
                    a.upstream_check)
        r["conns"] = conns
        r["ideal"] = conns / UPSTREAM_WAIT
        out.append(r)
        log("  upstream alone, %d connections: %.0f req/s (ideal %.0f), "
            "p50 %s, p99 %s%s" % (conns, r["rps"], r["ideal"],
                                   bench.fmt_time(r["p50_us"]),
                                   bench.fmt_time(r["p99_us"]),
                                   ("  ERRORS: " + bench.error_text(r))
                                   if bench.error_text(r) else ""))
    return out


# ---------------------------------------------------------------- report

def ms(us):
    return None if us is None else us / 1000.0


def fmt_ms(us):
    return "–" if us is None else "%.2f ms" % (us / 1000.0)


def runs_of(ctx, load, name):
    return [r for r in ctx.results[load].get(name, []) if r]


def ratio_list(ctx, load, name, ref, key="rps"):
    out = []
    for x, y in zip(ctx.results[load].get(name, []),
                    ctx.results[load].get(ref, [])):
        out.append(x[key] / y[key] if x and y and x.get(key) and
                   y.get(key) else None)
    return out


def errors_of(runs):
    errs = [bench.error_text(r) for r in runs if bench.error_text(r)]
    notes = sorted({n for r in runs for n in r["notes"]})
    return "; ".join(errs + notes) or "none"


def load_rows(ctx, load):
    rows = []
    for name in GATEWAY_NAMES:
        gw = ctx.by_name.get(name)
        runs = runs_of(ctx, load, name)
        if not runs:
            rows.append([name, "FAILED: " + bench.short(
                (gw.error if gw else None) or "not run")] + ["–"] * 10)
            continue
        per = ", ".join("%.0f" % r["rps"] for r in runs)
        rows.append([
            name, bench.fmt(bench.med([r["rps"] for r in runs])), per,
            fmt_ms(bench.med([r["p50_us"] for r in runs])),
            fmt_ms(bench.med([r["p99_us"] for r in runs])),
            ", ".join("%s/%s" % (bench.fmt(ms(r["p50_us"]), "%.1f"),
                                 bench.fmt(ms(r["p99_us"]), "%.1f"))
                      for r in runs),
            bench.fmt(bench.med([r["cpu_us_req"] for r in runs]), "%.0f"),
            "%s / %s / %s" % tuple(
                bench.fmt(bench.med([r[k] for r in runs]), "%.0f%%")
                for k in ("gw_pct", "up_pct", "wrk_pct")),
            bench.fmt(bench.med([r["rps"] for r in runs]) * len(CALLS)),
            bench.fmt(bench.med([r["opens_req"] for r in runs]), "%.2f"),
            errors_of(runs)])
    return rows


LOAD_HEADER = ["gateway", "req/s", "req/s per round", "p50", "p99",
               "p50/p99 ms per round", "CPU µs/req", "CPU gw / upstream / "
               "wrk", "upstream calls/s", "new TCP conns/req", "errors"]


def ratio_rows(ctx, load):
    rows = []
    for ref in ("nginx+lua", "aiohttp"):
        rl = ratio_list(ctx, load, "agate", ref)
        rows.append(["agate / " + ref,
                     ", ".join(bench.fmt(x, "%.2f") for x in rl) or "–",
                     bench.fmt(bench.med(rl), "%.2f")])
    return rows


def target_rows(ctx):
    rows = []
    rate = runs_of(ctx, "rate", "agate")
    p50 = bench.med([r["p50_us"] for r in rate])
    p99 = bench.med([r["p99_us"] for r in rate])

    def verdict(ok, v):
        return "–" if v is None else ("yes" if ok else "**no**")
    rows.append(["p50 at ~%d req/s offered" % ctx.args.rate,
                 "≤ %.0f ms" % TARGETS["p50_ms"], fmt_ms(p50),
                 verdict(p50 is not None and ms(p50) <= TARGETS["p50_ms"],
                         p50)])
    rows.append(["p99 at ~%d req/s offered" % ctx.args.rate,
                 "≤ %.0f ms" % TARGETS["p99_ms"], fmt_ms(p99),
                 verdict(p99 is not None and ms(p99) <= TARGETS["p99_ms"],
                         p99)])
    for ref, key in (("nginx+lua", "x_nginx"), ("aiohttp", "x_aiohttp")):
        rl = ratio_list(ctx, "conns", "agate", ref)
        m = bench.med(rl)
        rows.append(["req/s at %d connections vs %s" % (ctx.args.conns, ref),
                     "≥ %.1f×" % TARGETS[key],
                     bench.fmt(m, "%.2f×") + (" (rounds: %s)" % ", ".join(
                         bench.fmt(x, "%.2f") for x in rl) if rl else ""),
                     verdict(m is not None and m >= TARGETS[key], m)])
    return rows


def upstream_rows(ctx):
    rows = []
    for r in ctx.upcheck:
        rows.append(["%d" % r["conns"], "%.0f" % r["rps"],
                     "%.0f" % r["ideal"], "%.0f%%" % (100 * r["rps"] /
                                                      r["ideal"]),
                     fmt_ms(r["p50_us"]), fmt_ms(r["p99_us"]),
                     bench.error_text(r) or "none"])
    return rows


def log_notes(ctx):
    """Lines the gateways' error logs gained during the measured runs."""
    out = []
    for name in GATEWAY_NAMES:
        lines = []
        for load in ("rate", "conns"):
            for r in runs_of(ctx, load, name):
                lines += r.get("log", [])
        gw = ctx.by_name.get(name)
        if gw:
            lines += getattr(gw, "startup_log", [])
        if not lines:
            continue
        kinds = {}
        for l in lines:
            k = re.sub(r"\d+", "N", l)[:160]
            kinds.setdefault(k, [0, l])[0] += 1
        top = sorted(kinds.values(), key=lambda kv: -kv[0])[:6]
        out.append("- %s's error log: %d line(s) during the runs; most "
                   "frequent:\n%s" % (name, len(lines), "\n".join(
                       "  - %d× `%s`" % (n, l[:300].replace("`", "'"))
                       for n, l in top)))
    return out


def headroom_note(ctx):
    if not ctx.upcheck:
        return None
    big = max(ctx.upcheck, key=lambda r: r["rps"])
    need = [bench.med([r["rps"] for r in runs_of(ctx, "conns", n)])
            for n in GATEWAY_NAMES]
    need = [x * len(CALLS) for x in need if x]
    if not need:
        return None
    m = max(need)
    return ("Upstream headroom: alone, it answered %.0f req/s at %d "
            "connections (%.0f%% of the %.0f that %d connections waiting "
            "20 ms allow, p50 %s); the busiest gateway at %d connections "
            "asked it for %.0f calls/s, %.0f%% of that. %s At %d client "
            "connections, no gateway can pass %d / 20 ms = %.0f req/s." % (
                big["rps"], big["conns"], 100 * big["rps"] / big["ideal"],
                big["ideal"], big["conns"], fmt_ms(big["p50_us"]),
                ctx.args.conns, m, 100 * m / big["rps"] if big["rps"] else 0,
                "The upstream is fast enough not to be the limit."
                if big["rps"] >= 1.5 * m else
                "**The upstream is close to its limit: it may cap the "
                "gateways' numbers at %d connections.**" % ctx.args.conns,
                ctx.args.conns, ctx.args.conns,
                ctx.args.conns / UPSTREAM_WAIT))


def cpu_note(ctx):
    vals = [r for load in ("rate", "conns") for n in GATEWAY_NAMES
            for r in runs_of(ctx, load, n)]
    if not vals:
        return None
    idle = []
    for n in GATEWAY_NAMES:
        runs = runs_of(ctx, "conns", n)
        if runs:
            idle.append("%s %.0f%%" % (n, bench.med(
                [r["idle_pct"] for r in runs])))
    return ("This machine has %d CPUs (%d%% in all, 100%% = one CPU), "
            "shared by the gateway, the upstream and wrk: where they are "
            "busy, CPU a gateway spends is CPU the upstream and wrk do not "
            "get. CPU left idle in the %d-connection runs (median): %s. "
            "CPU used by processes outside the benchmark during the runs: "
            "median %.0f%%, max %.0f%%." % (
                NCPU, 100 * NCPU, ctx.args.conns, ", ".join(idle) or "–",
                statistics.median([r["other_pct"] for r in vals]),
                max(r["other_pct"] for r in vals)))


def versions(ctx):
    def dpkg(pkg):
        try:
            return subprocess.run(["dpkg-query", "-W", "-f", "${Version}",
                                   pkg], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True,
                                  timeout=10).stdout.strip() or "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"
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
    luajit = dpkg("libluajit2-5.1-2")
    if luajit == "?":
        luajit = dpkg("libluajit-5.1-2")
    py = ctx.python
    pyver = subprocess.run([py, "-c", "import sys, aiohttp, uvloop; print("
                            "sys.version.split()[0], aiohttp.__version__, "
                            "uvloop.__version__)"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True,
                           timeout=20).stdout.split() or ["?"] * 3
    return {
        "cpu": cpu.group(1).strip() if cpu else "?",
        "mem": "%.0f GiB" % (int(mem.group(1)) / 1048576.0) if mem else "?",
        "os": osr.group(1) if osr else "?",
        "kernel": os.uname().release,
        "agate": bench.cmd_version([ctx.args.agate, "-V"], r"agate (\S+)")
        + git + bench.binary_date(ctx.args.agate),
        "libcurl": bench.lib_version(ctx.args.agate, "libcurl.so",
                                     "libcurl"),
        "nginx": bench.cmd_version([ctx.nginx, "-v"], r"nginx/(\S+)"),
        "lua": dpkg("libnginx-mod-http-lua"),
        "luajit": luajit,
        "python": pyver[0] if len(pyver) > 0 else "?",
        "aiohttp": pyver[1] if len(pyver) > 1 else "?",
        "uvloop": pyver[2] if len(pyver) > 2 else "?",
        "wrk": bench.cmd_version([ctx.wrk, "-v"], r"^wrk (\S+)"),
    }


def report(ctx, wall):
    a = ctx.args
    info = ctx.info
    blocks = []
    blocks += ["## Targets\n",
               bench.md_table(["target", "wanted", "agate", "met"],
                              target_rows(ctx)) + "\n"]
    ceiling = a.conns / UPSTREAM_WAIT
    refs = []
    for ref in ("nginx+lua", "aiohttp"):
        m = bench.med([r["rps"] for r in runs_of(ctx, "conns", ref)])
        if m:
            refs.append("%.2f× %s's %.0f" % (ceiling / m, ref, m))
    if refs:
        blocks.append("With %d connections and %.0f ms per call, no gateway "
                      "can pass %.0f req/s: that ceiling is %s req/s here.\n"
                      % (a.conns, UPSTREAM_WAIT * 1000, ceiling,
                         " and ".join(refs)))
    blocks += ["## 1. Fixed offered rate: ~%d req/s, %d connections\n"
               % (a.rate, a.rate_conns),
               bench.md_table(LOAD_HEADER, load_rows(ctx, "rate")) + "\n"]
    blocks += ["## 2. %d connections, closed loop\n" % a.conns,
               bench.md_table(LOAD_HEADER, load_rows(ctx, "conns")) + "\n",
               bench.md_table(["ratio of req/s", "per round", "median"],
                              ratio_rows(ctx, "conns")) + "\n"]
    blocks += ["## Upstream alone\n",
               bench.md_table(["connections", "req/s", "ideal (conns / "
                               "20 ms)", "of ideal", "p50", "p99",
                               "errors"], upstream_rows(ctx)) + "\n"]
    legend = (
        "Medians over %d round(s) of %g s each, the three gateways "
        "interleaved within each round (agate, nginx+lua, aiohttp), after "
        "a %g s warm-up each. Load 1 is wrk paced by a Lua `delay()` that "
        "hands out send slots at a fixed interval (%g ms per wrk thread, "
        "%d threads): an approximation of wrk2's constant rate, closed "
        "loop once every connection is busy (then the achieved req/s "
        "falls below the offered rate and shows it). Latency is wrk's, "
        "from the write of the request to the end of the answer. CPU "
        "µs/req: utime+stime of all the gateway's processes / requests. "
        "CPU gw / upstream / wrk: share of one CPU each used during the "
        "run (the machine has %d). upstream calls/s = 3 × req/s. new TCP "
        "conns/req: connections opened on the machine during the run "
        "(ActiveOpens in /proc/net/snmp: wrk's, the gateway's to the "
        "upstream, and any other process's) / requests; 3 would be a new "
        "upstream connection for every call. errors: "
        "wrk's non-2xx/3xx answers and socket errors, summed over the "
        "rounds." % (a.rounds, a.duration, a.warmup,
                     1000.0 * 2 / a.rate, 2, NCPU))
    blocks.append(legend + "\n")
    notes = []
    for gw in ctx.servers:
        if gw.error:
            notes.append("- %s: %s" % (gw.name, gw.error))
    for name, (st, body, t) in ctx.answers.items():
        notes.append("- %s answers `GET /fan/42` with %d in %.1f ms: `%s`"
                     % (name, st, t, body.strip()[:200]))
    h = headroom_note(ctx)
    if h:
        notes.append("- " + h)
    c = cpu_note(ctx)
    if c:
        notes.append("- " + c)
    notes += log_notes(ctx)
    for msg in ctx.notes:
        notes.append("- " + msg)
    if notes:
        blocks += ["## Notes\n", "\n".join(notes) + "\n"]
    console = "\n".join(blocks)
    print("\n" + console)

    now = datetime.datetime.now().astimezone()
    head = [
        "# Fan-out benchmark\n",
        "Generated by `tests/bench/fanout.py` on %s (%.0f s).\n" % (
            now.strftime("%Y-%m-%d %H:%M %Z"), wall),
        "One request → three upstream calls at once, each answered after "
        "20 ms → one combined JSON answer, done by agate (`fanout: {mode: "
        "all}`), by nginx with its lua module "
        "(`ngx.location.capture_multi`) and by Python "
        "(`asyncio.gather` on aiohttp + uvloop).\n",
        "- Machine: %s, %d CPUs, %s RAM; %s, kernel %s" % (
            info["cpu"], NCPU, info["mem"], info["os"], info["kernel"]),
        "- Versions: agate %s; libcurl %s; nginx %s with "
        "libnginx-mod-http-lua %s (LuaJIT %s); Python %s, aiohttp %s, "
        "uvloop %s; wrk %s" % (
            info["agate"], info["libcurl"], info["nginx"], info["lua"],
            info["luajit"], info["python"], info["aiohttp"], info["uvloop"],
            info["wrk"]),
        "- Setup: everything on 127.0.0.1; %d workers (processes) per "
        "gateway; upstream: nginx + lua, %d workers, one port, paths "
        "/a/ /b/ /c/, `ngx.sleep(0.02)` then `%s`; idle upstream "
        "connections: agate `keepalive: %d` for each of its 3 upstreams, "
        "nginx `keepalive %d` in each of 3 upstream blocks (per worker), "
        "aiohttp one `TCPConnector(limit=4096)` per process; fan-out "
        "timeout %s; wrk 2 threads, timeout 5 s; fd limit %d" % (
            a.workers, a.upstream_workers, UPSTREAM_BODY, a.keepalive,
            a.keepalive, FANOUT_TIMEOUT, ctx.nofile),
        "- Command: `%s`%s\n" % (" ".join(shlex.quote(x) for x in
                                          ctx.argv_for_report),
                                 " (--quick: a smoke test, not a "
                                 "measurement)" if a.quick else ""),
        "agate's config:\n\n```yaml\n%s```\n" % ctx.agate_text.replace(
            ctx.tmp + "/", ""),
    ]
    os.makedirs(a.out, exist_ok=True)
    md = os.path.join(a.out, "benchmarks-fanout.md")
    with open(md, "w") as f:
        f.write("\n".join(head) + "\n" + console)
    log("wrote %s" % md)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "upstream": ctx.upcheck,
                       "results": ctx.results}, f, indent=1, default=str)


# ---------------------------------------------------------------- main

class Context:
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agate", default=os.path.join(TOP, "agate"))
    p.add_argument("--out", default=os.path.join(TOP, "docs"),
                   help="folder for benchmarks-fanout.md")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--upstream-workers", type=int, default=2)
    p.add_argument("--keepalive", type=int, default=KEEPALIVE,
                   help="idle upstream connections per worker and upstream, "
                        "agate and nginx (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8,
                   help="seconds per measured wrk run")
    p.add_argument("--warmup", type=float, default=2,
                   help="seconds of warm-up per gateway and load")
    p.add_argument("--rate", type=int, default=1000,
                   help="offered req/s for load 1")
    p.add_argument("--rate-conns", type=int, default=50,
                   help="connections for load 1")
    p.add_argument("--conns", type=int, default=200,
                   help="connections for load 2")
    p.add_argument("--upstream-check", type=float, default=3,
                   help="seconds per run of wrk against the upstream alone")
    p.add_argument("--budget", type=float, default=330,
                   help="seconds: runs that would end past it are skipped")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 3 s")
    p.add_argument("--json", help="also write raw results to this file")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup, a.upstream_check = 1, 3, 1, 2
    if min(a.rounds, a.workers, a.upstream_workers, a.rate, a.rate_conns,
           a.conns, a.keepalive) < 1 or a.duration <= 0:
        p.error("counts and durations must be positive")
    a.agate = os.path.abspath(a.agate)
    a.out = os.path.abspath(a.out)
    a.wrk_threads = 2
    return a


def start(ctx, srv):
    ctx.servers.append(srv)
    try:
        srv.start()
        log("%s on :%d (pid %d, workers %s)" % (
            srv.name, srv.port, srv.proc.pid, srv.workers()))
        return True
    except (BenchError, OSError, subprocess.TimeoutExpired) as e:
        srv.error = "did not start: %s" % e
        log("%s %s" % (srv.name, srv.error))
        return False


def start_servers(ctx):
    a, tmp = ctx.args, ctx.tmp
    conns = min(WORKER_CONNECTIONS, ctx.nofile - 100)
    mods = load_modules()
    up_port = bench.free_port()
    ctx.upstream = Nginx(
        "upstream", tmp, up_port, a.upstream_workers, ctx.nginx,
        fill(UPSTREAM_CONF, MODULES=mods, DIR=tmp, PORT=up_port,
             WORKERS=a.upstream_workers, NOFILE=ctx.nofile, CONNS=conns,
             BODY=UPSTREAM_BODY, WAIT="%g" % UPSTREAM_WAIT))
    if not start(ctx, ctx.upstream):
        raise BenchError("the upstream did not start: " +
                         ctx.upstream.error)
    ag = AgateFan(tmp, bench.free_port(), a.workers, a.agate, up_port,
                  a.keepalive)
    ctx.agate_text = ag.text
    port = bench.free_port()
    ngx = Nginx("nginx+lua", tmp, port, a.workers, ctx.nginx,
                fill(NGINX_LUA_CONF, MODULES=mods, DIR=tmp, PORT=port,
                     WORKERS=a.workers, NOFILE=ctx.nofile, CONNS=conns,
                     UPSTREAM_PORT=up_port, KEEPALIVE=a.keepalive,
                     TIMEOUT=FANOUT_TIMEOUT))
    aio = Aiohttp(tmp, bench.free_port(), a.workers, ctx.python, up_port)
    for gw in (ag, ngx, aio):
        gw.ready_path = "/fan/1"
        ctx.by_name[gw.name] = gw
        if start(ctx, gw):
            ctx.gateways.append(gw)
            gw.startup_log = new_log_lines(gw.error_log(), 0)
            st, body, t = check_answer(gw)
            ctx.answers[gw.name] = (st, body, t)
            log("  GET /fan/42 -> %d in %.1f ms: %s" % (st, t,
                                                       body.strip()[:160]))
            if st != 200:
                gw.error = "GET /fan/42 answered %d: %s" % (st, body[:200])
                ctx.gateways.remove(gw)


def run_load(ctx, key, load, title):
    a = ctx.args
    res = ctx.results.setdefault(key, {})
    log("%s" % title)
    for gw in list(ctx.gateways):
        run_wrk(ctx, gw.port, "/fan/42", load["conns"], load["threads"],
                a.warmup, load.get("script"))
        res[gw.name] = []
    for rnd in range(a.rounds):
        for gw in ctx.gateways:
            if time.monotonic() + a.duration + 5 > ctx.deadline:
                msg = ("time budget (%g s) reached: %s round %d of %s "
                       "skipped" % (a.budget, key, rnd + 1, gw.name))
                ctx.notes.append(msg)
                log(msg)
                res[gw.name].append(None)
                continue
            if not gw.running():
                res[gw.name].append(None)
                continue
            r = measure(ctx, gw, load, a.duration)
            res[gw.name].append(r)
            log("  round %d %-9s %7.0f req/s  p50 %-9s p99 %-9s "
                "cpu gw/up/wrk %3.0f/%3.0f/%3.0f%%  conns/req %s%s%s" % (
                    rnd + 1, gw.name, r["rps"], fmt_ms(r["p50_us"]),
                    fmt_ms(r["p99_us"]), r["gw_pct"], r["up_pct"],
                    r["wrk_pct"], bench.fmt(r["opens_req"], "%.2f"),
                    ("  ERRORS: " + bench.error_text(r))
                    if bench.error_text(r) else "",
                    ("  log +%d lines" % len(r["log"])) if r["log"]
                    else ""))


def main(argv):
    a = parse_args(argv)
    if not os.access(a.agate, os.X_OK):
        print("no agate binary at %s (build it: make -j2 agate)" % a.agate,
              file=sys.stderr)
        return 1
    t0 = time.monotonic()
    ctx = Context()
    ctx.args = a
    ctx.argv_for_report = ["tests/bench/fanout.py"] + argv
    ctx.python = python_for_aiohttp()
    installed = ensure_packages(ctx.python)
    ctx.nginx, ctx.wrk = bench.find_tool("nginx"), bench.find_tool("wrk")
    ctx.tools = {"wrk": ctx.wrk}          # for run.run_wrk
    ctx.nofile = bench.raise_nofile()
    ctx.deadline = t0 + a.budget
    ctx.tmp = tempfile.mkdtemp(prefix="agate-fanout-")
    os.chmod(ctx.tmp, 0o755)     # nginx workers may run as nobody
    os.mkdir(os.path.join(ctx.tmp, "tmp"))
    ctx.servers, ctx.gateways, ctx.running = [], [], set()
    ctx.by_name, ctx.answers, ctx.results, ctx.notes = {}, {}, {}, []
    ctx.upcheck = []
    if installed:
        ctx.notes.append("installed first: " + " ".join(installed))
    interval = 1000.0 * 2 / a.rate            # ms per slot, per wrk thread
    pace = os.path.join(ctx.tmp, "pace.lua")
    with open(pace, "w") as f:
        f.write(fill(PACE_LUA, INTERVAL="%.6f" % interval))
    rate_load = {"conns": a.rate_conns, "threads": 2, "script": pace}
    conn_load = {"conns": a.conns, "threads": 2}

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        ctx.info = versions(ctx)
        start_servers(ctx)
        if not ctx.gateways:
            raise BenchError("no gateway started")
        log("upstream check")
        ctx.upcheck = upstream_check(ctx)
        run_load(ctx, "rate", rate_load,
                 "load 1: ~%d req/s offered, %d connections" % (
                     a.rate, a.rate_conns))
        run_load(ctx, "conns", conn_load,
                 "load 2: %d connections, closed loop" % a.conns)
        for gw in ctx.servers:
            if gw.proc is not None and not gw.running():
                ctx.notes.append("%s exited with %s: %s" % (
                    gw.name, gw.proc.returncode, gw.log_tail(3)))
        up_log = new_log_lines(os.path.join(ctx.tmp, "upstream.error.log"),
                               0)
        if up_log:
            ctx.notes.append("the upstream's error log has %d line(s); "
                             "last: `%s`" % (len(up_log), up_log[-1][:300]))
        report(ctx, time.monotonic() - t0)
        log("done in %.0f s" % (time.monotonic() - t0))
        return 0
    except BenchError as e:
        log("failed: %s" % e)
        return 1
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
                if s.proc is not None:
                    s.stop()
            except Exception as e:     # keep stopping the others
                log("stopping %s: %s" % (s.name, e))
        if a.keep_tmp:
            log("kept " + ctx.tmp)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
