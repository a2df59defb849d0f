#!/usr/bin/env python3
"""agate's cache benchmark: agate's shared-memory cache against nginx's
proxy_cache.

Both gateways (2 workers each) stand in front of the same upstream,
tests/upstream/testup (one process; its /_stats counts the requests it
answered), and cache its answers: agate with a `cache:` section and
routes with `cache: {ttl: ...}`, nginx with `proxy_cache_path` in the
temporary folder, `proxy_cache`, `proxy_cache_valid`, `proxy_cache_lock
on`, `proxy_cache_use_stale updating` and `proxy_cache_background_update
on`, keep-alive to the upstream.  Issue 17's benchmark:

(a) cache hits, a small JSON answer, wrk with 50 and 1000 connections;
(b) cache hits, a 100 KiB answer, 50 connections;
(c) the thundering herd: 1,000 requests at once, on connections opened
    and warmed beforehand, for a key that has just expired; counted:
    the requests the upstream got (testup's /_stats, after the
    background refresh had time to end), p50/p99/max latency of each
    request (a small epoll client in this script), and X-Cache.  Also,
    for the same herd: an expired key where no stale answer may be
    served, a cold key (never fetched), a fresh key (every answer a hit:
    the floor of the client and the gateway), and a cold key whose
    upstream answers slower than the ttl.

Before measuring, each gateway must answer both hit paths twice, the
second time from its cache (agate's X-Cache; nginx's
$upstream_cache_status in an X-Cache header), with the upstream's
bytes.  (a) and (b) run in interleaved rounds (agate first in odd
rounds, nginx first in even ones), each measured wrk run after its own
warm-up run: req/s, the ratio to nginx in the same round (the median of
those ratios is reported), p50/p99 (wrk --latency), CPU µs per request
of the gateway's workers (utime+stime from /proc/PID/stat over the
measured run), the CPU share of the gateway, the upstream and wrk, and
how much CPU the rest of the machine used (the noise of a shared box).
Then a short `perf record` of each gateway's workers during (a) and (b)
shows where their CPU goes; for agate, with call graphs, the inclusive
share of its cache path's functions.

Everything listens on 127.0.0.1, runs from a temporary folder removed at
the end, and every process it starts is stopped by PID.  Writes
docs/benchmarks-cache.md (--out).

    make bench-cache
    python3 tests/bench/cache.py --quick --out /tmp/bench

See tests/bench/README.md.
"""

import argparse
import datetime
import errno
import http.client
import importlib.util
import json
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


def sibling(name, filename):
    """Another benchmark script of this folder, as a module (definitions
    only; under its own name, so that grpc.py is not taken for grpcio)."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(HERE, filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gbench = sibling("bench_grpc", "grpc.py")             # perf, logs, percentiles
wsbench = sibling("bench_websocket", "websocket.py")  # the testup server

TOP = bench.TOP
CLK = bench.CLK
NCPU = bench.NCPU
log = bench.log
BenchError = bench.BenchError
fmt = bench.fmt
med = bench.med

MAXCONN = 12000           # agate max_connections (per worker)
KEEPALIVE = 64            # idle upstream connections kept, per worker
READY_PATH = "/healthz"   # agate's health path; a `return 200` in nginx
GATEWAY_ORDER = ("agate", "nginx")
BIG_SIZE = 100 * 1024
# testup answers a GET of any path with a small JSON summary of the
# request, and size=N with N bytes of text.
SMALL_PATH = "/hit/small.json"
BIG_PATH = "/hit/big.bin?size=%d" % BIG_SIZE

HIT_SCENARIOS = [
    dict(key="a50", short="(a) small, 50c",
         title="(a) cache hits, small JSON answer, 50 connections",
         path=SMALL_PATH, conns=50, target=1.5),
    dict(key="a1000", short="(a) small, 1000c",
         title="(a) cache hits, small JSON answer, 1000 connections",
         path=SMALL_PATH, conns=1000, target=1.5),
    dict(key="b", short="(b) 100 KiB, 50c",
         title="(b) cache hits, 100 KiB answer, 50 connections",
         path=BIG_PATH, conns=50, target=1.0),
]

# The herds.  {r}: the round (a new key per round).  expire: the key is
# fetched once, then the herd comes when it has expired.  delay: the
# upstream's answer time (testup's delay=), "herd" (--herd-delay) or
# "slow" (the ttl + 200 ms).
HERDS = [
    dict(key="c", short="(c) expired, stale ok",
         title="a key that has just expired, stale answers allowed "
               "(agate `stale_while_revalidate`, nginx "
               "`proxy_cache_use_stale updating` + "
               "`proxy_cache_background_update`): the issue's herd",
         path="/swr/herd-r{r}", expire=True, delay="herd", target=True),
    dict(key="c2", short="(c') expired, no stale",
         title="a key that has just expired, no stale answers "
               "(agate: no `stale_while_revalidate`; nginx: "
               "`proxy_cache_use_stale off`)",
         path="/exp/herd-r{r}", expire=True, delay="herd"),
    dict(key="c3", short="(c'') cold key",
         title="a cold key (never fetched): both gateways' locks",
         path="/exp/cold-r{r}", expire=False, delay="herd"),
    dict(key="c0", short="fresh key (floor)",
         title="a fresh key, every answer a hit: the floor of this client "
               "and of the gateway for 1,000 requests at once",
         path=SMALL_PATH, expire=False, delay=None),
    dict(key="c4", short="cold, upstream > ttl",
         title="a cold key whose upstream answers after more than the "
               "ttl (no stale answers)",
         path="/exp/slow-r{r}", expire=False, delay="slow", rounds=1),
]

AGATE_CONF = """\
# written by tests/bench/cache.py
server:
  workers: @WORKERS@
  listen: ["127.0.0.1:@PORT@"]
  max_connections: @MAXCONN@
log:
  level: warn
  access: off
cache:
  memory: 64m
  max_entry: 1m
  lock_timeout: 5s
upstreams:
  up:
    servers: ["http://127.0.0.1:@UPSTREAM_PORT@"]
    keepalive: @KEEPALIVE@
routes:
  - path: /hit/           # (a), (b): fresh for an hour
    upstream: up
    cache: { ttl: 1h }
  - path: /swr/           # (c): stale after the ttl, served while one
    upstream: up          #   refresh runs
    cache: { ttl: @TTL@s, stale_while_revalidate: 1h }
  - path: /exp/           # (c'), (c''): no stale answers
    upstream: up
    cache: { ttl: @TTL@s }
"""

NGINX_CONF = """\
# written by tests/bench/cache.py
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
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    # nginx's hits are files: sendfile, as Debian's nginx.conf has it.
    # tcp_nopush stays off (nginx's default): with it (Debian's), each
    # 100 KiB hit on loopback waited ~44 ms here (TCP_CORK), 23 req/s on
    # one connection instead of ~8,000.
    sendfile on;
    tcp_nopush off;
    client_body_temp_path @DIR@/tmp/nginx-body;
    proxy_temp_path @DIR@/tmp/nginx-proxy;
    fastcgi_temp_path @DIR@/tmp/nginx-fastcgi;
    uwsgi_temp_path @DIR@/tmp/nginx-uwsgi;
    scgi_temp_path @DIR@/tmp/nginx-scgi;

    proxy_cache_path @DIR@/nginx-cache levels=1:2 keys_zone=bench:16m
                     max_size=1g inactive=1h use_temp_path=off;

    upstream up {
        server 127.0.0.1:@UPSTREAM_PORT@;
        keepalive @KEEPALIVE@;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:@PORT@ backlog=4096;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache bench;
        proxy_cache_lock on;
        proxy_cache_lock_timeout 5s;
        proxy_cache_lock_age 5s;
        proxy_cache_use_stale updating;
        proxy_cache_background_update on;
        add_header X-Cache $upstream_cache_status always;

        location = @READY_PATH@ {
            return 200 "ok\\n";
        }
        location /hit/ {
            proxy_pass http://up;
            proxy_cache_valid 200 1h;
        }
        location /swr/ {
            proxy_pass http://up;
            proxy_cache_valid 200 @TTL@s;
        }
        location /exp/ {
            proxy_pass http://up;
            proxy_cache_valid 200 @TTL@s;
            proxy_cache_use_stale off;
        }
    }
}
"""

# The agate functions whose inclusive share perf shows for agate's hits.
CACHE_PATH_FUNCS = (
    "cache_lookup", "store_lookup", "hit_copy", "cache_serve",
    "h1_write", "buf_append", "conn_send", "__pthread_mutex_lock_full",
    "__x64_sys_futex", "http_parse_head", "__vfprintf_internal",
)


def fill(text, **values):
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError("unfilled %s" % ", ".join(left))
    return text


# ---------------------------------------------------------------- servers

class Ready:
    """Ready when READY_PATH answers 200 and all the workers run."""

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            try:
                st = bench.http_get(self.port, READY_PATH)
                last = "GET %s: %s" % (READY_PATH, st)
                if st == 200 and self.units() >= self.nworkers:
                    return
            except OSError as e:
                last = "GET %s: %s" % (READY_PATH, e)
            time.sleep(0.05)
        raise BenchError("not ready after %.0fs (%s): %s" % (
            timeout, last, self.log_tail()))


class Nginx(Ready, bench.NginxServer):
    def error_log(self):
        return os.path.join(self.tmp, "%s.error.log" % self.name)

    def workers(self):
        """The worker processes: not the cache manager, nor the cache
        loader (which exits a minute after the start)."""
        return [p for p in bench.NginxServer.workers(self)
                if "worker process" in bench.read_text(
                    "/proc/%d/cmdline" % p)]


class AgateC(Ready, bench.Server):
    binary_name = "agate"
    stop_signal = signal.SIGINT      # fast stop

    def __init__(self, tmp, port, workers, binary, conf_text):
        bench.Server.__init__(self, "agate", tmp, port, workers)
        self.binary = binary
        self.conf = os.path.join(tmp, "agate.yaml")
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


def upstream_requests(ctx):
    """Requests testup has answered so far (its /_ paths not counted)."""
    st = ctx.upstream.stats()
    return st.get("requests")


def ticks(pids):
    return sum(bench.cpu_ticks(p) or 0 for p in pids)


def own_ticks():
    """This process's CPU (the herd client), in clock ticks."""
    t = os.times()
    return (t.user + t.system) * CLK


# ---------------------------------------------------------------- checks

def get(port, path, timeout=10.0):
    """One GET on a new connection: (status, X-Cache, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, r.getheader("X-Cache") or "-", body
    finally:
        c.close()


def check_hits(ctx, gw):
    """Each hit path twice: the second answer must come from the cache,
    with the upstream's bytes.  Also warms the cache for the rounds."""
    out = {}
    for path in (SMALL_PATH, BIG_PATH):
        try:
            _, _, want = get(ctx.upstream.port, path)
            s1, x1, b1 = get(gw.port, path)
            s2, x2, b2 = get(gw.port, path)
        except (OSError, http.client.HTTPException) as e:
            out[path] = {"error": "%s: %s" % (type(e).__name__, e)}
            continue
        out[path] = {"first": "%d %s" % (s1, x1), "second": "%d %s" % (s2, x2),
                     "bytes": len(b2),
                     "same": b1 == b2 and len(b2) == len(want) and
                     (path != BIG_PATH or b2 == want),
                     "ok": s2 == 200 and x2 == "HIT"}
        # The small answer names the path it was asked; it must be the
        # upstream's answer to that path, whichever port asked.
        if path == SMALL_PATH:
            out[path]["same"] = b1 == b2 == want
    return out


def check_text(r):
    if not r:
        return "–"
    if "error" in r:
        return "**failed**: %s" % r["error"]
    text = "%s, then %s; %d bytes%s" % (
        r["first"], r["second"], r["bytes"],
        ", the upstream's" if r["same"] else ", **not the upstream's**")
    return text if r["ok"] and r["same"] else "**%s**" % text


# ---------------------------------------------------------------- hits (wrk)

def wrk_spec(scn):
    return {"conns": scn["conns"], "path": scn["path"]}


def hit_run(ctx, gw, scn):
    """A warm-up wrk run, then the measured one, with its CPU cost."""
    a = ctx.args
    spec = wrk_spec(scn)
    log0 = gbench.log_size(gw.error_log())
    bench.run_wrk(ctx, gw.port, spec, a.warmup)
    workers = gw.workers()
    up = ctx.upstream.all_pids()
    u0 = upstream_requests(ctx)
    g0, p0 = ticks(workers), ticks(up)
    b0, k0, t0 = (bench.system_busy_ticks(), bench.children_cpu_ticks(),
                  time.monotonic())
    r = bench.run_wrk(ctx, gw.port, spec, a.duration)
    wall = max(time.monotonic() - t0, 1e-6)
    g1, p1 = ticks(workers), ticks(up)
    b1, k1 = bench.system_busy_ticks(), bench.children_cpu_ticks()
    u1 = upstream_requests(ctx)
    gwt, upt, ldt = g1 - g0, p1 - p0, k1 - k0
    n = r["requests"]
    r["cpu_us_req"] = gwt / CLK * 1e6 / n if n else None
    r["gw_pct"] = 100.0 * gwt / CLK / wall
    r["up_pct"] = 100.0 * upt / CLK / wall
    r["load_pct"] = 100.0 * ldt / CLK / wall
    r["other_pct"] = max(0.0, 100.0 * ((b1 - b0) - gwt - upt - ldt) /
                         CLK / wall)
    r["upstream_requests"] = (u1 - u0 if u0 is not None and u1 is not None
                              else None)
    notes = []
    if not gw.running():
        notes.append("exited (%s)" % gw.proc.returncode)
    elif set(gw.workers()) != set(workers):
        notes.append("worker restarted")
    r["notes"] = notes
    r["log"] = gbench.new_log_lines(gw.error_log(), log0)
    if not bench.error_text(r):
        r.pop("raw", None)
    return r


# ---------------------------------------------------------------- herd

class Herd:
    """N keep-alive connections to one gateway, opened and warmed with
    one request each (so that accepting them is not in the herd), then
    one request on each, all at once.  One thread, epoll; bounded by
    deadlines."""

    def __init__(self, port, n, warm_path, timeout):
        self.port = port
        self.socks = []
        self.ep = select.epoll()
        self.error = None
        self.opened = 0
        deadline = time.monotonic() + timeout
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port), 5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
                self.socks.append(s)
                self.ep.register(s.fileno(), select.EPOLLIN)
                if time.monotonic() > deadline:
                    raise OSError("opening took longer than %gs" % timeout)
        except OSError as e:
            self.error = "opened %d of %d connections: %s" % (
                len(self.socks), n, e)
            return
        self.opened = len(self.socks)
        warm = self.fire(warm_path, max(1.0, deadline - time.monotonic()))
        bad = [r for r in warm if r[0] != "200"]
        if bad:
            self.error = "%d of %d warm-up answers not 200 (%s)" % (
                len(bad), n, bad[0][0])

    def request(self, path):
        return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (
            path, self.port)).encode()

    def fire(self, path, timeout):
        """One request on every connection; a list of (status, X-Cache,
        latency µs) with status "closed", "timeout" or "error" for the
        requests that got no answer."""
        req = self.request(path)
        fds = [s.fileno() for s in self.socks]
        state = {fd: [b"", None] for fd in fds}   # buffer, sent at
        out = []
        left = set(fds)
        deadline = time.monotonic() + timeout

        def drain(wait):
            for fd, _ in self.ep.poll(wait):
                if fd not in left:
                    continue
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                except OSError as e:
                    data = None
                    out.append(("error", errno.errorcode.get(e.errno, "?"),
                                None))
                    left.discard(fd)
                    continue
                now = time.monotonic()
                if not data:
                    out.append(("closed", "-", None))
                    left.discard(fd)
                    continue
                st = state[fd]
                st[0] += data
                status = bench.response_done(st[0])
                if status is None:
                    continue
                head = st[0].split(b"\r\n\r\n", 1)[0]
                m = re.search(rb"\r\nx-cache:[ \t]*([^\r]*)", head, re.I)
                out.append((status.decode("ascii", "replace"),
                            m.group(1).decode("ascii", "replace").strip()
                            if m else "-", (now - st[1]) * 1e6))
                st[0] = b""
                left.discard(fd)

        for i, fd in enumerate(fds):
            state[fd][1] = time.monotonic()
            try:
                os.write(fd, req)
            except OSError as e:
                out.append(("error", errno.errorcode.get(e.errno, "?"),
                            None))
                left.discard(fd)
            if i % 50 == 49:
                drain(0)        # answers are read as they come
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                out += [("timeout", "-", None)] * len(left)
                break
            drain(min(wait, 0.2))
        return out

    def close(self):
        for s in self.socks:
            try:
                self.ep.unregister(s.fileno())
            except (OSError, ValueError):
                pass
            s.close()
        self.ep.close()
        self.socks = []


def herd_delay(ctx, herd):
    if herd["delay"] == "herd":
        return ctx.args.herd_delay
    if herd["delay"] == "slow":
        return ctx.args.ttl * 1000 + 200
    return 0


def herd_path(ctx, herd, rnd):
    path = herd["path"].format(r=rnd + 1)
    d = herd_delay(ctx, herd)
    return path + ("?delay=%d" % d if d else "")


def summarize_herd(res):
    """Counts and latencies of one herd's answers."""
    lat = sorted(x[2] for x in res if x[2] is not None)
    kinds = {}
    for status, xc, _ in res:
        k = "%s %s" % (status, xc) if status.isdigit() else status
        kinds[k] = kinds.get(k, 0) + 1
    return {"answers": len(lat), "asked": len(res), "kinds": kinds,
            "p50_us": gbench.percentile(lat, 50),
            "p99_us": gbench.percentile(lat, 99),
            "max_us": lat[-1] if lat else None,
            "errors": sum(v for k, v in kinds.items()
                          if not k.startswith("200 "))}


def herd_round(ctx, herd, rnd, order):
    """One round of one herd: each gateway in order, on its own warmed
    connections; the expiring keys are fetched once first, then left to
    expire."""
    a = ctx.args
    path = herd_path(ctx, herd, rnd)
    delay = herd_delay(ctx, herd)
    clients, out = {}, {}
    try:
        for gw in order:
            clients[gw.name] = Herd(gw.port, a.herd_size, SMALL_PATH,
                                    timeout=30)
        if herd["expire"]:
            for gw in order:
                s, xc, _ = get(gw.port, path)
                out[gw.name] = {"fill": "%d %s" % (s, xc)}
            # nginx counts validity in whole seconds (valid_sec < now):
            # a 1 s entry may last until the second after next.
            time.sleep(a.ttl + 1.1)
        for gw in order:
            r = out.setdefault(gw.name, {})
            h = clients[gw.name]
            if h.error:
                r["error"] = h.error
                continue
            log0 = gbench.log_size(gw.error_log())
            workers = gw.workers()
            up = ctx.upstream.all_pids()
            u0 = upstream_requests(ctx)
            g0, p0, b0, m0, t0 = (ticks(workers), ticks(up),
                                  bench.system_busy_ticks(), own_ticks(),
                                  time.monotonic())
            res = h.fire(path, timeout=a.lock_timeout + 2 * delay / 1000.0
                         + 10)
            fired = time.monotonic() - t0
            # A background refresh (nginx's, agate's) ends after the herd.
            time.sleep(delay / 1000.0 + 0.3)
            u1 = upstream_requests(ctx)
            g1, p1, b1, m1 = (ticks(workers), ticks(up),
                              bench.system_busy_ticks(), own_ticks())
            wall = max(time.monotonic() - t0, 1e-6)
            r.update(summarize_herd(res))
            r["upstream"] = (u1 - u0 if u0 is not None and u1 is not None
                             else None)
            r["herd_s"] = fired
            r["gw_cpu_ms"] = (g1 - g0) * 1000.0 / CLK
            r["client_pct"] = 100.0 * (m1 - m0) / CLK / wall
            r["other_pct"] = max(0.0, 100.0 * ((b1 - b0) - (g1 - g0) -
                                               (p1 - p0) - (m1 - m0)) /
                                 CLK / wall)
            r["log"] = gbench.new_log_lines(gw.error_log(), log0)
            r["path"] = path
    finally:
        for h in clients.values():
            h.close()
    return out


# ---------------------------------------------------------------- perf

def perf_run(ctx, gw, scn, seconds, callgraph):
    """perf record of gw's workers during a wrk run of scn: self time by
    shared object and symbol; with callgraph (dwarf), also the inclusive
    share of CACHE_PATH_FUNCS."""
    perf = bench.find_tool("perf")
    workers = gw.workers()
    if not perf or not workers:
        return {"error": "perf is not there" if not perf else "no workers"}
    data = os.path.join(ctx.tmp, "perf-%s-%s.data" % (gw.name, scn["key"]))
    box = {}

    def record():
        cmd = [perf, "record", "-F", "999", "-o", data, "-p",
               ",".join(str(w) for w in workers)]
        if callgraph:
            cmd += ["--call-graph", "dwarf,16384"]
        try:
            p = subprocess.run(cmd + ["--", "sleep", "%g" % seconds],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               timeout=seconds + 30)
            box["err"] = p.stdout if p.returncode != 0 else ""
        except subprocess.TimeoutExpired:
            box["err"] = "perf record did not finish"

    # run_wrk calls record() at its half: the wrk run outlasts it.
    r = bench.run_wrk(ctx, gw.port, wrk_spec(scn), 2 * seconds + 1,
                      midpoint=record)
    if box.get("err") or not os.path.exists(data):
        return {"error": " | ".join(box.get("err", "no data").strip()
                                    .splitlines()[-2:])[:200]}
    res = {"rps": r.get("rps"), "callgraph": callgraph,
           "dso": gbench.perf_report(perf, data, "dso", 8),
           "sym": gbench.perf_report(perf, data, "dso,sym", 15)}
    if callgraph:
        res["incl"] = perf_inclusive(perf, data)
        copy = [sym for _, sym in res["sym"]
                if re.search(r"\[\.\] __mem(move|cpy)", sym)]
        if copy:
            name = copy[0].split("] ", 1)[1]
            res["copy"] = (name, perf_callers(perf, data, name))
    return res


def perf_callers(perf, data, sym):
    """Where sym's self time comes from: the share of all samples under
    each of CACHE_PATH_FUNCS in sym's caller graph."""
    try:
        p = subprocess.run([perf, "report", "-i", data, "--stdio",
                            "--no-children", "--sort", "sym", "-S", sym,
                            "-G"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return []
    # perf prints a percentage at each branch of the graph only; the
    # names below a branch, down to the next one, have its share.
    best, pct = {}, None
    for line in p.stdout.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"\s*([\d.]+)%\s+\[", line)
        if m:
            pct = float(m.group(1))
            continue
        m = re.search(r"--([\d.]+)%--([A-Za-z_]\w*)", line)
        if m:
            pct, name = float(m.group(1)), m.group(2)
        else:
            m = re.match(r"[\s|]*(?:---)?([A-Za-z_]\w*)", line)
            if not m or pct is None:
                continue
            name = m.group(1)
        if name in CACHE_PATH_FUNCS:
            best[name] = max(best.get(name, 0.0), pct)
    return sorted(((v, k) for k, v in best.items()), reverse=True)


def perf_inclusive(perf, data):
    """The inclusive (children) share of CACHE_PATH_FUNCS."""
    try:
        p = subprocess.run([perf, "report", "-i", data, "--stdio",
                            "--children", "--sort", "sym", "-g", "none"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return []
    best = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
        if m and m.group(4) in CACHE_PATH_FUNCS:
            # A function inlined in two places is listed twice: the
            # larger one is the share that counts.
            best[m.group(4)] = max(best.get(m.group(4), 0.0),
                                   float(m.group(1)))
    return sorted(((v, k) for k, v in best.items()), reverse=True)


# ---------------------------------------------------------------- report

def runs_of(ctx, key, name):
    return [r for r in ctx.hits.get(key, {}).get(name, []) if r and r["ok"]
            and r.get("rps")]


def ratios(ctx, key, name):
    out = []
    for x, y in zip(ctx.hits.get(key, {}).get(name, []),
                    ctx.hits.get(key, {}).get("nginx", [])):
        if x and y and x.get("rps") and y.get("rps"):
            out.append(x["rps"] / y["rps"])
    return out


def errors_text(runs):
    errs = {}
    for r in runs:
        if not r:
            continue
        for part in filter(None, bench.error_text(r).split(", ")):
            k, _, v = part.rpartition(" ")
            if v.isdigit():
                errs[k] = errs.get(k, 0) + int(v)
            else:
                errs[part] = errs.get(part, 0) + 1
        for n in r.get("notes", []):
            errs[n] = errs.get(n, 0) + 1
    return ", ".join("%s %d" % kv for kv in errs.items()) or "none"


def hit_rows(ctx):
    rows = []
    for scn in HIT_SCENARIOS:
        for name in ctx.order:
            allruns = ctx.hits.get(scn["key"], {}).get(name, [])
            runs = runs_of(ctx, scn["key"], name)
            if not runs:
                gw = ctx.by_name.get(name)
                rows.append([scn["short"], name, "FAILED: %s" % (
                    "see the notes" if gw and gw.error else
                    errors_text(allruns)[:200])] + ["–"] * 8)
                continue
            ups = [r.get("upstream_requests") for r in runs]
            rows.append([
                scn["short"], name,
                fmt(med([r["rps"] for r in runs])),
                "1.00" if name == "nginx" else
                fmt(med(ratios(ctx, scn["key"], name)), "%.2f"),
                bench.fmt_time(med([r.get("p50_us") for r in runs])),
                bench.fmt_time(med([r.get("p99_us") for r in runs])),
                fmt(med([r.get("cpu_us_req") for r in runs]), "%.1f"),
                "%s / %s / %s" % tuple(
                    fmt(med([r.get(k) for r in runs]), "%.0f%%")
                    for k in ("gw_pct", "up_pct", "load_pct")),
                "?" if None in ups else str(sum(ups)),
                ", ".join(fmt(r["rps"]) for r in runs),
                errors_text(allruns)])
    return rows


def herd_runs(ctx, key, name):
    return [r for r in ctx.herds.get(key, {}).get(name, [])
            if r and r.get("answers")]


def herd_ratio(ctx, key):
    out = []
    for x, y in zip(ctx.herds.get(key, {}).get("agate", []),
                    ctx.herds.get(key, {}).get("nginx", [])):
        if x and y and x.get("p99_us") and y.get("p99_us"):
            out.append(x["p99_us"] / y["p99_us"])
    return out


def kinds_text(runs):
    total = {}
    for r in runs:
        for k, v in r.get("kinds", {}).items():
            total[k] = total.get(k, 0) + v
    return ", ".join("%s %d" % kv for kv in sorted(
        total.items(), key=lambda kv: -kv[1]))


def herd_rows(ctx):
    rows = []
    for herd in HERDS:
        if herd["key"] not in ctx.herds:
            continue
        for name in ctx.order:
            allruns = ctx.herds.get(herd["key"], {}).get(name, [])
            runs = herd_runs(ctx, herd["key"], name)
            if not runs:
                why = "; ".join(r.get("error", "no answers")
                                for r in allruns if r) or "not run"
                rows.append([herd["short"], name, "FAILED: %s" % why[:200]]
                            + ["–"] * 8)
                continue
            ups = [r.get("upstream") for r in runs]
            rows.append([
                herd["short"], name,
                ", ".join("?" if u is None else str(u) for u in ups),
                kinds_text(runs),
                bench.fmt_time(med([r["p50_us"] for r in runs])),
                bench.fmt_time(med([r["p99_us"] for r in runs])),
                bench.fmt_time(max(r["max_us"] for r in runs)),
                "1.00" if name == "nginx" else
                fmt(med(herd_ratio(ctx, herd["key"])), "%.2f"),
                ", ".join(bench.fmt_time(r["p99_us"]) for r in runs),
                fmt(med([r.get("gw_cpu_ms") for r in runs]), "%.0f"),
                ", ".join(fmt(r.get("herd_s", 0) * 1000, "%.0f")
                          for r in runs)])
    return rows


def target_rows(ctx):
    rows = []
    for scn in HIT_SCENARIOS:
        rr = med(ratios(ctx, scn["key"], "agate"))
        rows.append(["%s req/s" % scn["title"].split(", ", 1)[0] + ", " +
                     scn["title"].split(", ", 1)[1],
                     "≥ %.2f× nginx" % scn["target"],
                     fmt(rr, "%.2f×"), "–" if rr is None else
                     ("yes" if rr >= scn["target"] else "**no**")])
    herd = HERDS[0]
    if herd["key"] not in ctx.herds:
        return rows
    runs = herd_runs(ctx, herd["key"], "agate")
    ups = [r.get("upstream") for r in runs]
    rows.append(["(c) herd of %d on a key that has just expired: upstream "
                 "requests" % ctx.args.herd_size, "exactly 1 per herd",
                 ", ".join("?" if u is None else str(u) for u in ups) or "–",
                 "–" if not runs else
                 ("yes" if all(u == 1 for u in ups) else "**no**")])
    hr = med(herd_ratio(ctx, herd["key"]))
    rows.append(["(c) herd of %d: p99" % ctx.args.herd_size,
                 "≤ nginx's (median of per-round ratios ≤ 1.00)",
                 "%s (%s vs %s)" % (
                     fmt(hr, "%.2f×"),
                     bench.fmt_time(med([r["p99_us"] for r in runs])),
                     bench.fmt_time(med([r["p99_us"] for r in herd_runs(
                         ctx, herd["key"], "nginx")]))),
                 "–" if hr is None else ("yes" if hr <= 1.0 else "**no**")])
    return rows


def check_rows(ctx):
    rows = []
    for name in ctx.order:
        c = ctx.checks.get(name)
        if c is None:
            continue
        rows.append([name, check_text(c.get(SMALL_PATH)),
                     check_text(c.get(BIG_PATH))])
    return rows


def perf_blocks(ctx):
    out = []
    for scn_key, pmap in sorted(ctx.perf.items()):
        title = [s["short"] for s in HIT_SCENARIOS if s["key"] == scn_key][0]
        for name in ctx.order:
            p = pmap.get(name)
            if not p:
                continue
            if "error" in p:
                out.append("- %s, %s: perf failed: %s" % (name, title,
                                                         p["error"]))
                continue
            out.append("- **%s**, %s (%s req/s under perf), by shared "
                       "object: %s" % (
                           name, title, fmt(p.get("rps")), ", ".join(
                               "%s %.1f%%" % (gbench.dso_name(so), pct)
                               for pct, so in p["dso"])))
            out.append("  - top symbols (self): %s" % ", ".join(
                "%s %.1f%%" % (gbench.perf_sym(sym), pct)
                for pct, sym in p["sym"]))
            if p.get("incl"):
                out.append("  - inclusive (with callees) in agate's hit "
                           "path: %s" % ", ".join(
                               "`%s` %.1f%%" % (f, pct)
                               for pct, f in p["incl"]))
            if p.get("copy") and p["copy"][1]:
                self_pct = [pct for pct, sym in p["sym"]
                            if sym.endswith("] " + p["copy"][0])]
                out.append("  - `%s` (%s self) by caller: %s" % (
                    p["copy"][0], fmt(self_pct[0] if self_pct else None,
                                      "%.1f%%"), ", ".join(
                        "`%s` %.1f%%" % (f, pct)
                        for pct, f in p["copy"][1])))
    return out


def herd_notes(ctx):
    """What the herds show, in words (only what the numbers say)."""
    out = []
    for herd in HERDS:
        for name in ctx.order:
            runs = herd_runs(ctx, herd["key"], name)
            ups = [r.get("upstream") for r in runs if r.get("upstream")
                   is not None]
            if not ups or max(ups) <= 1:
                continue
            misses = sum(v for r in runs for k, v in r["kinds"].items()
                         if k.endswith(" MISS") or k.endswith(" EXPIRED"))
            text = ("- %s, %s: %s upstream requests per herd of %d (%d "
                    "answers MISS or EXPIRED)." % (
                        name, herd["short"], ", ".join(map(str, ups)),
                        ctx.args.herd_size, misses))
            if name == "nginx" and herd["key"] == "c2":
                text += (" nginx's `proxy_cache_lock` only holds back "
                         "requests for a *new* cache element; for an "
                         "expired one, without `proxy_cache_use_stale "
                         "updating`, every request goes to the upstream.")
            if name == "agate" and herd["key"] == "c4":
                text += (" The upstream answered after %d ms, more than the "
                         "%d s ttl: agate stores the answer with its "
                         "corrected initial age (RFC 9111 4.2.3: the "
                         "response delay counts), so it is stale when "
                         "stored, and the waiters, finding no fresh "
                         "answer, each go to the upstream themselves. "
                         "nginx counts validity from when the answer came "
                         "and serves it to its waiters." % (
                             herd_delay(ctx, herd), ctx.args.ttl))
            out.append(text)
    return out


def log_notes(ctx):
    out = []
    for name in ctx.order:
        phases = [
            ("the hit runs", [l for s in ctx.hits.values()
                              for r in s.get(name, []) if r
                              for l in r.get("log", [])]),
            ("the herds", [l for h in ctx.herds.values()
                           for r in h.get(name, []) if r
                           for l in r.get("log", [])])]
        for when, lines in phases:
            if not lines:
                continue
            kinds = {}
            for l in lines:
                k = re.sub(r"\d+", "N", l)[:160]
                kinds.setdefault(k, [0, l])[0] += 1
            top = sorted(kinds.values(), key=lambda kv: -kv[0])[:6]
            out.append("- %s's error log: %d line(s) during %s; most "
                       "frequent:\n%s" % (name, len(lines), when, "\n".join(
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
    agate = ctx.args.agate
    return {
        "cpu": cpu.group(1).strip() if cpu else "?",
        "mem": "%.0f GiB" % (int(mem.group(1)) / 1048576.0) if mem else "?",
        "os": osr.group(1) if osr else "?",
        "kernel": os.uname().release,
        "agate": bench.cmd_version([agate, "-V"], r"agate (\S+)") + git +
        bench.binary_date(agate),
        "libevent": bench.lib_version(agate, "libevent", "libevent"),
        "nginx": bench.cmd_version([ctx.nginx, "-v"], r"nginx/(\S+)"),
        "wrk": bench.cmd_version([ctx.tools["wrk"], "-v"], r"^wrk (\S+)"),
        "python": sys.version.split()[0],
        "fs": fs_type(ctx.tmp),
    }


def fs_type(path):
    """The file system nginx's cache files are on (tmpfs or a disk)."""
    best, kind = "", "?"
    for line in bench.read_text("/proc/mounts").splitlines():
        t = line.split()
        if len(t) > 2 and path.startswith(t[1]) and len(t[1]) > len(best):
            best, kind = t[1], t[2]
    return "%s (%s)" % (kind, best)


def report(ctx, wall):
    a = ctx.args
    info = ctx.info
    blocks = ["## Targets\n",
              bench.md_table(["target", "wanted", "agate", "met"],
                             target_rows(ctx)) + "\n"]
    blocks += ["## Cache hits (a), (b)\n",
               bench.md_table(["scenario", "gateway", "req/s", "× nginx",
                               "p50", "p99", "CPU µs/req",
                               "CPU gateway / upstream / wrk",
                               "upstream requests", "req/s per round",
                               "errors"], hit_rows(ctx)) + "\n",
               "Medians over %d round(s) of %g s, each after its own %g s "
               "warm-up wrk run (same command); the gateways alternate "
               "within the rounds (agate first in odd rounds, nginx first "
               "in even ones). wrk: `-t %d -c N -d %gs --latency --timeout "
               "5s`; the small answer is testup's %d-byte JSON for `%s`, "
               "the big one `%s` (%d bytes). × nginx is the median of the "
               "per-round ratios. p50/p99: wrk's. CPU µs/req: "
               "utime+stime of the gateway's workers over the measured "
               "run / its requests. CPU gateway / upstream / wrk: share of "
               "one CPU each over the run (the machine has %d, shared by "
               "all). Upstream requests: what testup answered during the "
               "measured runs, all rounds: 0 means every request was a "
               "hit. errors: wrk's non-2xx answers and socket errors.\n"
               % (a.rounds, a.duration, a.warmup, a.wrk_threads, a.duration,
                  ctx.small_len, SMALL_PATH, BIG_PATH, BIG_SIZE, NCPU)]
    blocks += ["## Thundering herd (c)\n",
               bench.md_table(["herd", "gateway",
                               "upstream requests, per round",
                               "answers (status X-Cache), all rounds",
                               "p50", "p99", "max", "p99 × nginx",
                               "p99 per round", "gateway CPU ms per herd",
                               "herd ms, per round"],
                              herd_rows(ctx)) + "\n",
               "The herds:\n\n" + "\n".join(
                   "- %s: %s; `%s`" % (h["short"], h["title"],
                                       herd_path(ctx, h, 0).replace(
                                           "-r1", "-rN"))
                   for h in HERDS) + "\n",
               "Each herd: %d connections to the gateway, opened and "
               "each warmed with one request for `%s` (a hit) before, "
               "then one GET on every connection, sent in one loop "
               "(answers read as they come), from one Python epoll client "
               "in this script. Latency: from the write of a request to "
               "the end of its answer. The upstream (testup) answers "
               "after `delay=` ms (%d ms; the slow herd %d ms). Expiring "
               "keys (ttl %d s on both gateways) are fetched once, "
               "then the herd comes %.1f s later (nginx counts an entry's "
               "validity in whole seconds, so a 1 s entry can be served "
               "fresh until the second after next); cold keys are new "
               "each round. Upstream requests: testup's count from "
               "just before the herd to %.1f s after it ended (room for "
               "a background refresh). Medians over %d round(s) (the slow "
               "herd: 1), the gateways alternating; both gateways' "
               "connections are open at once. nginx's `X-Cache` is "
               "`$upstream_cache_status`: its waiters that were answered "
               "stale say UPDATING; agate's say STALE. p99 × nginx: the "
               "median of the per-round ratios. Gateway CPU: its "
               "workers' utime+stime from the first request to the end "
               "of the wait after the herd (10 ms ticks).\n"
               % (a.herd_size, SMALL_PATH, a.herd_delay,
                  a.ttl * 1000 + 200, a.ttl, a.ttl + 1.1,
                  a.herd_delay / 1000.0 + 0.3, a.herd_rounds)]
    hn = herd_notes(ctx)
    if hn:
        blocks += ["What the herds show:\n", "\n".join(hn) + "\n"]
    blocks += ["## Checks\n",
               bench.md_table(["gateway", "`%s` twice" % SMALL_PATH,
                               "`%s` twice" % BIG_PATH],
                              check_rows(ctx)) + "\n",
               "Before the rounds, each path is asked twice on new "
               "connections: the first answer fills the cache (MISS; "
               "unless an earlier check did), the second must be a HIT "
               "(agate's `X-Cache`, nginx's `$upstream_cache_status`) "
               "with the same bytes as the upstream's own answer.\n"]
    pb = perf_blocks(ctx)
    if pb:
        blocks += ["## Where the workers' CPU goes (perf)\n",
                   "\n".join(pb) + "\n",
                   "`perf record -F 999` of the gateway's workers for %g s "
                   "during a separate wrk run (same load); self time, %% of "
                   "the samples. For agate, with `--call-graph dwarf`: the "
                   "inclusive share of the functions of its hit path "
                   "(`hit_copy` copies a small answer, or a large one's "
                   "head, out of the shared segment under the store's "
                   "mutex; a large body is written from the segment "
                   "itself with writev(2), so its one copy is the "
                   "kernel's `_copy_from_iter`, where nginx splices the "
                   "file's pages into the socket without one).\n" % a.perf]
    notes = []
    for gw in ctx.gateways:
        if gw.error:
            notes.append("- %s: %s" % (gw.name, gw.error))
    others = [r["other_pct"] for s in ctx.hits.values()
              for runs in s.values() for r in runs
              if r and r.get("other_pct") is not None]
    hothers = [r["other_pct"] for h in ctx.herds.values()
               for runs in h.values() for r in runs
               if r and r.get("other_pct") is not None]
    if others:
        notes.append("- CPU used by processes outside the benchmark during "
                     "the measured wrk runs: median %.0f%%, max %.0f%% of "
                     "one CPU (the machine has %d)%s" % (
                         statistics.median(others), max(others), NCPU,
                         "; other work was running: the numbers are "
                         "noisier than usual." if max(others) > 20 else "."))
    if hothers:
        notes.append("- The same during the herds (the upstream and this "
                     "client not counted): median %.0f%%, max %.0f%% of one "
                     "CPU. Both include the kernel's softirq time, part of "
                     "which is this benchmark's own loopback traffic (not "
                     "charged to any process); a herd's window is short "
                     "(its requests, then %.1f s), so that part weighs "
                     "more there." % (statistics.median(hothers),
                                      max(hothers),
                                      a.herd_delay / 1000.0 + 0.3))
    notes += log_notes(ctx)
    for msg in ctx.notes:
        notes.append("- " + msg)
    if notes:
        blocks += ["## Notes\n", "\n".join(notes) + "\n"]
    console = "\n".join(blocks)
    print("\n" + console)

    now = datetime.datetime.now().astimezone()
    head = [
        "# Cache benchmark\n",
        "Generated by `tests/bench/cache.py` on %s (%.0f s).\n" % (
            now.strftime("%Y-%m-%d %H:%M %Z"), wall),
        "agate's shared-memory cache (`cache:`, docs/cache.md) against "
        "nginx's `proxy_cache` (files) with `proxy_cache_lock`, "
        "`proxy_cache_use_stale updating` and "
        "`proxy_cache_background_update`, %d workers each, in front of "
        "the same upstream (`tests/upstream/testup`): cache hits with wrk, "
        "and 1,000 requests at once for a key that has just expired "
        "(issue 17).\n" % a.workers,
        "- Machine: %s, %d CPUs, %s RAM; %s, kernel %s; nginx's cache "
        "files on %s" % (info["cpu"], NCPU, info["mem"], info["os"],
                         info["kernel"], info["fs"]),
        "- Versions: agate %s; libevent %s; nginx %s; wrk %s; Python %s "
        "(the herd client)" % (info["agate"], info["libevent"],
                               info["nginx"], info["wrk"], info["python"]),
        "- Setup: everything on 127.0.0.1; %d workers per gateway; the "
        "upstream: testup, one process; wrk `-t %d`; fd limit %d" % (
            a.workers, a.wrk_threads, ctx.nofile),
        "- Command: `%s`%s\n" % (" ".join(shlex.quote(x) for x in
                                          ctx.argv_for_report),
                                 " (--quick: a smoke test, not a "
                                 "measurement)" if a.quick else ""),
        "agate's config:\n\n```yaml\n%s```\n" % ctx.conf_text["agate"],
        "nginx's config (`$TMP` is the temporary folder; the cache "
        "files are in `$TMP/nginx-cache`):\n\n```nginx\n%s```\n"
        % ctx.conf_text["nginx"],
    ]
    os.makedirs(a.out, exist_ok=True)
    md = os.path.join(a.out, "benchmarks-cache.md")
    with open(md, "w") as f:
        f.write(("\n".join(head) + "\n" + console).replace(ctx.tmp,
                                                           "$TMP"))
    log("wrote %s" % md)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "hits": ctx.hits, "herds": ctx.herds,
                       "checks": ctx.checks, "perf": ctx.perf}, f,
                      indent=1, default=str)


# ---------------------------------------------------------------- main

class Context:
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agate", default=os.path.join(TOP, "agate"))
    p.add_argument("--testup",
                   default=os.path.join(TOP, "tests/upstream/testup"))
    p.add_argument("--out", default=os.path.join(TOP, "docs"),
                   help="folder for benchmarks-cache.md")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4,
                   help="hit rounds; even: each gateway goes first as "
                        "often")
    p.add_argument("--duration", type=float, default=3,
                   help="measured seconds per wrk run")
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--herd-rounds", type=int, default=6)
    p.add_argument("--herd-size", type=int, default=1000,
                   help="requests at once per herd")
    p.add_argument("--herd-delay", type=int, default=50,
                   help="the upstream's answer time in the herds, ms")
    p.add_argument("--ttl", type=int, default=1,
                   help="seconds, of the expiring keys")
    p.add_argument("--herds", default=",".join(h["key"] for h in HERDS),
                   help="subset of " + ",".join(h["key"] for h in HERDS))
    p.add_argument("--perf", type=float, default=2,
                   help="seconds of perf record per gateway and scenario "
                        "((a) 50c and (b)); 0: none")
    p.add_argument("--hits", default=",".join(s["key"] for s in HIT_SCENARIOS),
                   help="subset of " + ",".join(s["key"] for s in
                                                HIT_SCENARIOS))
    p.add_argument("--gateways", default="agate,nginx",
                   help="subset of agate,nginx")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 2 s, herds of 200")
    p.add_argument("--json", help="also write raw results to this file")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 2, 0.5
        a.herd_rounds = 1
        a.herd_size = min(a.herd_size, 200)
        a.perf = min(a.perf, 1)
    a.lock_timeout = 5
    a.gateway_list = [g for g in a.gateways.split(",") if g]
    if not a.gateway_list or not set(a.gateway_list) <= set(GATEWAY_ORDER):
        p.error("--gateways: a subset of agate,nginx")
    hits = [h for h in a.hits.split(",") if h]
    if not hits or not set(hits) <= {s["key"] for s in HIT_SCENARIOS}:
        p.error("--hits: a subset of " +
                ",".join(s["key"] for s in HIT_SCENARIOS))
    HIT_SCENARIOS[:] = [s for s in HIT_SCENARIOS if s["key"] in hits]
    a.herd_list = [h for h in a.herds.split(",") if h]
    if not set(a.herd_list) <= {h["key"] for h in HERDS}:
        p.error("--herds: a subset of " + ",".join(h["key"] for h in HERDS))
    if a.rounds < 1 or a.duration <= 0 or a.warmup <= 0 or \
            a.herd_rounds < 0 or a.herd_size < 1 or a.ttl < 1 or \
            a.herd_delay < 0 or a.wrk_threads < 1:
        p.error("--rounds, --duration, --warmup, --herd-size, --ttl, "
                "--wrk-threads: positive")
    for k in ("agate", "testup", "out"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    return a


def start_servers(ctx):
    a, tmp = ctx.args, ctx.tmp
    conns = min(20000, ctx.nofile)
    ctx.upstream = wsbench.Testup(tmp, bench.free_port(), a.testup)
    ctx.servers.append(ctx.upstream)
    ctx.upstream.start()
    log("upstream testup on :%d (pid %d)" % (ctx.upstream.port,
                                             ctx.upstream.proc.pid))
    for name in GATEWAY_ORDER:
        if name not in a.gateway_list:
            continue
        port = bench.free_port()
        if name == "agate":
            ctx.conf_text["agate"] = fill(
                AGATE_CONF, WORKERS=a.workers, PORT=port, MAXCONN=MAXCONN,
                UPSTREAM_PORT=ctx.upstream.port, KEEPALIVE=KEEPALIVE,
                TTL=a.ttl)
            gw = AgateC(tmp, port, a.workers, a.agate,
                        ctx.conf_text["agate"])
        else:
            ctx.conf_text["nginx"] = fill(
                NGINX_CONF, DIR=tmp, PORT=port, WORKERS=a.workers,
                NOFILE=conns, CONNS=conns, KEEPALIVE=KEEPALIVE,
                UPSTREAM_PORT=ctx.upstream.port, TTL=a.ttl,
                READY_PATH=READY_PATH)
            gw = Nginx("nginx", tmp, port, a.workers, ctx.nginx,
                       ctx.conf_text["nginx"])
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


def describe(r):
    return ("%9s req/s  p50 %s  p99 %s  cpu %s µs/req  gw %s%%  other %s%%"
            "  upstream %s  errors: %s" % (
                fmt(r.get("rps")), bench.fmt_time(r.get("p50_us")),
                bench.fmt_time(r.get("p99_us")),
                fmt(r.get("cpu_us_req"), "%.1f"), fmt(r.get("gw_pct")),
                fmt(r.get("other_pct")), fmt(r.get("upstream_requests")),
                errors_text([r])))


def describe_herd(r):
    if r.get("error"):
        return "FAILED: %s" % r["error"]
    return ("upstream %s  p50 %s  p99 %s  max %s  cpu %s ms  %s" % (
        fmt(r.get("upstream")), bench.fmt_time(r.get("p50_us")),
        bench.fmt_time(r.get("p99_us")), bench.fmt_time(r.get("max_us")),
        fmt(r.get("gw_cpu_ms")), ", ".join(
            "%s %d" % kv for kv in sorted(r["kinds"].items(),
                                          key=lambda kv: -kv[1]))))


def main(argv):
    a = parse_args(argv)
    ctx = Context()
    ctx.args = a
    ctx.argv_for_report = ["tests/bench/cache.py"] + argv
    ctx.nginx = bench.find_tool("nginx")
    ctx.tools = {"wrk": bench.find_tool("wrk")}
    missing = [pkg for tool, pkg in ((ctx.nginx, "nginx"),
                                     (ctx.tools["wrk"], "wrk")) if not tool]
    if missing:
        print("missing tools; as root, run:\n  apt-get install -y " +
              " ".join(missing), file=sys.stderr)
        return 1
    for what, path in (("agate", a.agate), ("testup", a.testup)):
        if not os.access(path, os.X_OK):
            print("no %s binary at %s (make -j2 agate "
                  "tests/upstream/testup)" % (what, path), file=sys.stderr)
            return 1
    ctx.nofile = bench.raise_nofile()
    need = 2 * a.herd_size + 2 * max(s["conns"] for s in HIT_SCENARIOS) + 200
    if ctx.nofile < need:
        print("the fd limit (%d) is below the %d this needs" % (
            ctx.nofile, need), file=sys.stderr)
        return 1
    ctx.tmp = tempfile.mkdtemp(prefix="agate-cachebench-")
    os.chmod(ctx.tmp, 0o755)     # nginx workers may run as nobody
    os.mkdir(os.path.join(ctx.tmp, "tmp"))
    ctx.servers, ctx.gateways, ctx.running = [], [], set()
    ctx.by_name, ctx.hits, ctx.herds, ctx.checks = {}, {}, {}, {}
    ctx.perf, ctx.notes = {}, []
    ctx.conf_text = {"agate": "(agate not run)\n",
                     "nginx": "(nginx not run)\n"}
    ctx.order = [g for g in GATEWAY_ORDER if g in a.gateway_list]
    if "nginx" not in ctx.order:
        ctx.notes.append("nginx not run: no ratios")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    t0 = time.monotonic()
    try:
        ctx.info = versions(ctx)
        start_servers(ctx)
        ctx.small_len = len(get(ctx.upstream.port, SMALL_PATH)[2])
        log("checks: each hit path twice")
        for gw in live(ctx):
            ctx.checks[gw.name] = c = check_hits(ctx, gw)
            log("  %-6s %s: %s; %s: %s" % (
                gw.name, SMALL_PATH, check_text(c[SMALL_PATH]), BIG_PATH,
                check_text(c[BIG_PATH])))
            if not all(v.get("ok") for v in c.values()):
                gw.error = "its hit checks failed (see Checks)"
        for scn in HIT_SCENARIOS:
            log("%s, %d round(s) of %g s" % (scn["title"], a.rounds,
                                             a.duration))
            for rnd in range(a.rounds):
                order = list(live(ctx))
                if rnd % 2:
                    order.reverse()
                for gw in order:
                    r = hit_run(ctx, gw, scn)
                    ctx.hits.setdefault(scn["key"], {}).setdefault(
                        gw.name, []).append(r)
                    log("  round %d %-6s %s" % (rnd + 1, gw.name,
                                                describe(r)))
        for herd in HERDS:
            if herd["key"] not in a.herd_list:
                continue
            n = min(herd.get("rounds", a.herd_rounds), a.herd_rounds)
            log("herd: %s, %d round(s) of %d requests" % (
                herd["short"], n, a.herd_size))
            for rnd in range(n):
                order = list(live(ctx))
                if rnd % 2:
                    order.reverse()
                try:
                    res = herd_round(ctx, herd, rnd, order)
                except (OSError, http.client.HTTPException) as e:
                    res = {gw.name: {"error": "%s: %s" % (
                        type(e).__name__, e)} for gw in order}
                for gw in order:
                    r = res.get(gw.name, {"error": "not run"})
                    ctx.herds.setdefault(herd["key"], {}).setdefault(
                        gw.name, []).append(r)
                    log("  round %d %-6s %s" % (rnd + 1, gw.name,
                                                describe_herd(r)))
        if a.perf > 0:
            for scn in [s for s in HIT_SCENARIOS if s["key"] in ("a50", "b")]:
                for gw in live(ctx):
                    p = perf_run(ctx, gw, scn, a.perf,
                                 callgraph=gw.name == "agate")
                    ctx.perf.setdefault(scn["key"], {})[gw.name] = p
                    log("  perf %-6s %s: %s" % (
                        gw.name, scn["short"], p.get("error") or
                        ", ".join("%s %.0f%%" % (gbench.dso_name(so), pct)
                                  for pct, so in p["dso"][:5])))
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
