#!/usr/bin/env python3
"""agate's gRPC benchmark: unary calls through agate and through nginx.

Both gateways (2 workers each, cleartext HTTP/2 with prior knowledge)
stand in front of the same fake gRPC upstream, an nginx h2c server (one
worker) that reads the request and answers every call with the same
gRPC message and a `grpc-status: 0` trailer.  h2load sends one gRPC
message frame per request (`-c 50 -m 10`, content-type application/grpc,
te: trailers) to /echo.Echo/Say, in interleaved rounds (agate, nginx,
then nginx, agate, ...): calls/s that carry the answer (a gateway's
own gRPC error is a 200 too, with no DATA), p50/p99 (from h2load's
per-request log), the ratio to nginx in the same round, and the CPU µs
the gateway's workers spend per call (utime+stime from /proc/PID/stat,
read as h2load starts and ends its measured window).

Before measuring, and again after, it checks that the chain really is
gRPC: nghttp's frames (DATA, then a HEADERS frame with grpc-status 0
that ends the stream) and a python3-grpcio client (generic
unary_unary) that must get the payload and StatusCode.OK, also with
1, 2, 5 and 20 calls at a time, and against an answer that has a
Content-Length.  After the
rounds, a short run under `strace -c -f` counts syscalls per request,
and a short `perf record` of each gateway's workers shows where their
CPU goes.

Everything listens on 127.0.0.1, runs from a temporary folder removed at
the end, and every process it starts is stopped by PID.  Writes
docs/benchmarks-grpc.md (--out).

    make bench-grpc
    python3 tests/bench/grpc.py --quick --out /tmp/bench

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
import socket
import statistics
import struct
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
KEEPALIVE = 64            # idle upstream connections kept, per worker
PATH = "/echo.Echo/Say"
# The same upstream answer, but with a Content-Length (checks only).
WITH_LENGTH = "/with-length"
GATEWAY_ORDER = ("agate", "nginx")
REQ_PAYLOAD = b"a small unary gRPC request"
RESP_PAYLOAD = b"hello from the fake gRPC upstream"


def grpc_frame(payload):
    """One gRPC message: not compressed (0), 4-byte big-endian length."""
    return b"\0" + struct.pack(">I", len(payload)) + payload


# The fake gRPC upstream.  `return 200 "..."` cannot carry the frame (a
# nginx string cannot hold its NUL bytes), so the frame is a static
# file; the static module answers a POST to a file 405, so every path is
# a missing file whose 404 page is the frame, with status 200 (an
# error_page redirect turns the POST into a GET; log_not_found off keeps
# the misses out of the error log).  `mirror` with
# `mirror_request_body on` reads the whole request first, as a gRPC
# server does: an answer sent before the request's END_STREAM is
# followed by RST_STREAM(NO_ERROR), which nginx's grpc_pass takes for a
# frame on an unknown stream and fails the next call on that kept-alive
# connection.  `ssi on` removes the Content-Length (a gRPC server sends
# none; see WITH_LENGTH in the report for why it matters).
UPSTREAM_CONF = """\
# written by tests/bench/grpc.py: a fake gRPC upstream
worker_processes 1;
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
    client_body_temp_path @DIR@/tmp/up-body;
    proxy_temp_path @DIR@/tmp/up-proxy;
    fastcgi_temp_path @DIR@/tmp/up-fastcgi;
    uwsgi_temp_path @DIR@/tmp/up-uwsgi;
    scgi_temp_path @DIR@/tmp/up-scgi;

    server {
        listen 127.0.0.1:@PORT@ http2 backlog=4096;
        root @DIR@/www;
        types {}
        default_type application/grpc;
        etag off;
        log_not_found off;

        location / {
            mirror /read-body;
            mirror_request_body on;
            error_page 404 =200 /frame;
        }
        location @WITH_LENGTH@/ {
            mirror /read-body;
            mirror_request_body on;
            error_page 404 =200 /frame-with-length;
        }
        location = /read-body {
            internal;
            return 204;
        }
        location = /frame {
            internal;
            ssi on;
            ssi_types application/grpc;
            add_trailer grpc-status 0 always;
        }
        location = /frame-with-length {
            internal;
            alias @DIR@/www/frame;
            add_trailer grpc-status 0 always;
        }
    }

    # Connections accepted so far: how many the gateways opened.
    server {
        listen 127.0.0.1:@STATUS_PORT@;
        location = /status {
            stub_status;
        }
    }
}
"""

NGINX_CONF = """\
# written by tests/bench/grpc.py
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
    # h2load keeps its 50 connections for the whole run; nginx's default
    # (1000 requests, then GOAWAY) would count reconnections as errors.
    keepalive_requests 1000000;
    client_body_temp_path @DIR@/tmp/nginx-body;
    proxy_temp_path @DIR@/tmp/nginx-proxy;
    fastcgi_temp_path @DIR@/tmp/nginx-fastcgi;
    uwsgi_temp_path @DIR@/tmp/nginx-uwsgi;
    scgi_temp_path @DIR@/tmp/nginx-scgi;

    upstream g {
        server 127.0.0.1:@UPSTREAM_PORT@;
        keepalive @KEEPALIVE@;
    }

    server {
        listen 127.0.0.1:@PORT@ http2 backlog=4096;

        location / {
            grpc_pass grpc://g;
        }
    }
}
"""

AGATE_CONF = """\
# written by tests/bench/grpc.py
server:
  workers: @WORKERS@
  listen: ["127.0.0.1:@PORT@"]
  max_connections: @MAXCONN@
log:
  level: warn
  access: off
upstreams:
  g:
    servers: ["h2c://127.0.0.1:@UPSTREAM_PORT@"]
    keepalive: @KEEPALIVE@
routes:
  - path: /
    upstream: g
"""

# Run by --python (where Debian's python3-grpcio is): N calls, CONC at a
# time, on one channel; prints the outcome as JSON.
GRPC_CLIENT = r"""
import json, sys, grpc
port, path = sys.argv[1], sys.argv[2]
n, conc = int(sys.argv[3]), int(sys.argv[4])
req, want = bytes.fromhex(sys.argv[5]), bytes.fromhex(sys.argv[6])
out = {"calls": 0, "ok": 0, "bad_payload": 0, "codes": {}, "error": None}
ch = grpc.insecure_channel("127.0.0.1:%s" % port)
try:
    grpc.channel_ready_future(ch).result(timeout=5)
    call = ch.unary_unary(path)
    while out["calls"] < n:
        fs = [call.future(req, timeout=5)
              for _ in range(min(conc, n - out["calls"]))]
        for f in fs:
            out["calls"] += 1
            try:
                got = f.result()
                code = "OK"
            except grpc.RpcError as e:
                got, code = None, e.code().name
                out["error"] = out["error"] or "%s: %s" % (code, e.details())
            out["codes"][code] = out["codes"].get(code, 0) + 1
            if code == "OK":
                if got == want:
                    out["ok"] += 1
                else:
                    out["bad_payload"] += 1
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
finally:
    ch.close()
print(json.dumps(out))
"""


def fill(text, **values):
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError("unfilled %s" % ", ".join(left))
    return text


# ---------------------------------------------------------------- servers

H2_PREFACE = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
              b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")   # empty SETTINGS


def h2_ready(port, timeout=1.0):
    """Whether port speaks HTTP/2 with prior knowledge: the preface and
    an empty SETTINGS frame are answered by a SETTINGS frame."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(H2_PREFACE)
        buf = b""
        while len(buf) < 9:
            data = s.recv(4096)
            if not data:
                return False
            buf += data
        return buf[3] == 4


class ReadyH2:
    """Ready when the port answers an HTTP/2 preface and all the workers
    run."""

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            try:
                ok = h2_ready(self.port)
                last = "h2 preface: %s" % ("SETTINGS" if ok else "no")
                if ok and self.units() >= self.nworkers:
                    return
            except OSError as e:
                last = "h2 preface: %s" % e
            time.sleep(0.05)
        raise BenchError("not ready after %.0fs (%s): %s" % (
            timeout, last, self.log_tail()))


class Nginx(ReadyH2, bench.NginxServer):
    def error_log(self):
        return os.path.join(self.tmp, "%s.error.log" % self.name)


class AgateG(ReadyH2, bench.Server):
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


class Direct:
    """h2load straight to the upstream: the ceiling without a gateway."""
    name = "direct"
    error = None

    def __init__(self, upstream):
        self.port = upstream.port
        self.upstream = upstream

    def workers(self):
        return []

    def error_log(self):
        return self.upstream.error_log()


# ---------------------------------------------------------------- /proc

def ticks(pids):
    return sum(bench.cpu_ticks(p) or 0 for p in pids)


def upstream_accepts(ctx):
    """Connections the upstream has accepted so far (its stub_status),
    not counting the one that asks."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", ctx.status_port,
                                       timeout=2)
        c.request("GET", "/status")
        text = c.getresponse().read().decode()
        c.close()
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"^\s*(\d+) \d+ \d+\s*$", text, re.M)
    return int(m.group(1)) - 1 if m else None


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


# ---------------------------------------------------------------- h2load

class Load:
    """An h2load process whose stdout is read line by line with
    deadlines.  It is always bounded: killed (by PID) if it outlives
    `limit' s."""

    def __init__(self, ctx, args, limit):
        self.cmd = ctx.h2load_cmd + args
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
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
        exit status and all of its output."""
        try:
            self.proc.wait(max(0.1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self.lines.append("(h2load killed at its deadline)")
        rest = self.proc.stdout.read().decode("utf-8", "replace")
        self.lines += [l for l in (self.buf.decode("utf-8", "replace") +
                                   rest).splitlines() if l]
        self.proc.stdout.close()
        self.ctx.running.discard(self.proc)
        return self.proc.returncode, "\n".join(self.lines)


def ms(seconds):
    return "%dms" % round(seconds * 1000)


def load_args(ctx, port, duration, logfile=None, path=PATH):
    a = ctx.args
    args = ["-c", str(a.conns), "-m", str(a.streams), "-t",
            str(a.threads), "-D", ms(duration), "-d", ctx.reqfile,
            "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if logfile:
        args += ["--log-file", logfile]
    return args + ["http://127.0.0.1:%d%s" % (port, path)]


def parse_h2load(text):
    r = {}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    if m:
        r["h2load_rps"] = float(m.group(2))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, "
                  r"(\d+) succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", text)
    if m:
        for k, v in zip(("total", "started", "done", "succeeded", "failed",
                         "errored", "timeout"), m.groups()):
            r[k] = int(v)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, "
                  r"(\d+) 5xx", text)
    if m:
        r["s2xx"], r["s3xx"], r["s4xx"], r["s5xx"] = map(int, m.groups())
    # DATA bytes received: every good answer carries the one message, a
    # gateway's own gRPC error (HTTP 200, grpc-status in a HEADERS frame
    # alone) none, and h2load counts both as 2xx.  (h2load counts these
    # bytes during its --warm-up-time too, hence a separate warm-up run.)
    m = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers "
                  r".*?\((\d+)\) data", text)
    if m:
        r["data_bytes"] = int(m.group(3))
        r["messages"] = r["data_bytes"] // len(grpc_frame(RESP_PAYLOAD))
    return r


def parse_log(path):
    """h2load's per-request log: (latencies in µs of 200 answers, count
    of other statuses, -1 being a failed stream)."""
    lat, other = [], 0
    try:
        with open(path) as f:
            for line in f:
                t = line.split("\t")
                if len(t) < 3:
                    continue
                if t[1] == "200":
                    lat.append(int(t[2]))
                else:
                    other += 1
    except (OSError, ValueError):
        return None, None
    return lat, other


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1,
            max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def load_run(ctx, gw):
    """One measured h2load run against gw, with its CPU cost."""
    a = ctx.args
    workers = gw.workers()
    up = ctx.upstream.all_pids()
    log0 = log_size(gw.error_log())
    logfile = os.path.join(ctx.tmp, "h2load-%s.log" % gw.name)
    if os.path.exists(logfile):
        os.unlink(logfile)          # h2load appends
    warm = Load(ctx, load_args(ctx, gw.port, a.warmup), a.warmup + 40)
    warm.finish()
    ld = Load(ctx, load_args(ctx, gw.port, a.duration, logfile),
              a.duration + 40)
    res = {"notes": []}
    snaps = {}
    while True:
        line = ld.readline()
        if line is None:
            break
        key = ("start" if line.startswith("Main benchmark duration is "
                                          "started") else
               "end" if line.startswith("Main benchmark duration is over")
               else None)
        if key and key not in snaps:
            snaps[key] = (time.monotonic(), ticks(workers), ticks(up),
                          ticks([ld.proc.pid]), bench.system_busy_ticks(),
                          upstream_accepts(ctx))
    rc, out = ld.finish()
    res["rc"] = rc
    res.update(parse_h2load(out))
    lat, other = parse_log(logfile)
    if lat:
        lat.sort()
        res["p50_us"] = percentile(lat, 50)
        res["p99_us"] = percentile(lat, 99)
        res["log_200"] = len(lat)
    res["log_other"] = other
    if "done" not in res:
        res["notes"].append("h2load gave no result (exit %s): %s" % (
            rc, " | ".join(out.strip().splitlines()[-4:])[:300]))
        res["tail"] = out.strip().splitlines()[-12:]
    if len(snaps) == 2 and res.get("done"):
        (t0, g0, u0, l0, b0, o0), (t1, g1, u1, l1, b1, o1) = (
            snaps["start"], snaps["end"])
        wall = max(t1 - t0, 1e-6)
        n = res["done"]
        res["window_s"] = wall
        # Answers with the message, per second of the measured window.
        good = min(res.get("s2xx", 0), res["done"], res.get("messages", 0))
        res["rps"] = good / float(a.duration)
        res["cpu_us_req"] = ((g1 - g0) / CLK * 1e6 / n) if workers \
            else None
        res["gw_pct"] = 100.0 * (g1 - g0) / CLK / wall if workers else None
        res["up_pct"] = 100.0 * (u1 - u0) / CLK / wall
        res["load_pct"] = 100.0 * (l1 - l0) / CLK / wall
        ours = (g1 - g0) + (u1 - u0) + (l1 - l0)
        res["other_pct"] = max(0.0, 100.0 * ((b1 - b0) - ours) / CLK / wall)
        if o0 is not None and o1 is not None:
            # (the status request of o0 is counted in o1)
            res["opens_per_req"] = (o1 - o0 - 1) / float(n)
    elif res.get("done"):
        res["notes"].append("h2load's measured window was not seen")
    res["errors"] = error_counts(res)
    res["log"] = new_log_lines(gw.error_log(), log0)
    return res


def error_counts(r):
    errs = {}
    for k in ("failed", "errored", "timeout"):
        if r.get(k):
            errs[k] = r[k]
    non2xx = sum(r.get(k, 0) for k in ("s3xx", "s4xx", "s5xx"))
    if non2xx:
        errs["non-2xx"] = non2xx
    if r.get("done") is not None and r.get("s2xx") is not None:
        unknown = r["done"] - r.get("failed", 0) - r["s2xx"] - non2xx
        if unknown > 0:
            errs["done without a status"] = unknown
    if r.get("messages") is not None and r.get("s2xx"):
        # (2xx can be one more than done: headers in, stream not done.)
        empty = min(r["s2xx"], r["done"]) - r["messages"]
        if empty > 0:
            errs["2xx without the message (gRPC errors)"] = empty
    return errs


# ---------------------------------------------------------------- checks

def grpc_check(ctx, port, path, n, conc, count_conns=False):
    """n generic unary calls with python3-grpcio; JSON outcome, with the
    connections the upstream accepted meanwhile if count_conns."""
    if not ctx.grpcio:
        return {"error": "python3-grpcio is not there"}
    a0 = upstream_accepts(ctx) if count_conns else None
    cmd = [ctx.args.python, "-I", "-c", GRPC_CLIENT, str(port), path,
           str(n), str(conc), REQ_PAYLOAD.hex(), RESP_PAYLOAD.hex()]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           timeout=30 + n / 20.0)
    except subprocess.TimeoutExpired:
        return {"error": "the grpcio client did not finish in time"}
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
        a1 = upstream_accepts(ctx) if a0 is not None else None
        if a1 is not None:
            out["up_conns"] = a1 - a0 - 1   # (a0's own status request)
        return out
    except (ValueError, IndexError):
        return {"error": "grpcio client exit %d: %s" % (
            p.returncode, " | ".join(p.stderr.strip().splitlines()[-2:]))}


def grpc_text(r):
    if not r:
        return "–"
    if r.get("calls") is None:
        return "**failed**: %s" % r.get("error")
    text = "%d/%d OK" % (r["ok"], r["calls"])
    bad = {k: v for k, v in r["codes"].items() if k != "OK"}
    if bad:
        text += "; " + ", ".join("%s %d" % kv for kv in bad.items())
    if r.get("bad_payload"):
        text += "; wrong payload %d" % r["bad_payload"]
    if r["ok"] != r["calls"]:
        text = "**%s**" % text
        if r.get("error"):
            text += " (`%s`)" % r["error"][:120].replace("`", "'")
    return text


def nghttp_check(ctx, port, path, n):
    """n requests on one connection with nghttp -v: how many answers are
    HEADERS (200, application/grpc), DATA (the frame), then a HEADERS
    frame with grpc-status 0 that ends the stream."""
    if not ctx.nghttp:
        return {"error": "nghttp is not there"}
    cmd = [ctx.nghttp, "-v", "-n", "-m", str(n), "-d", ctx.reqfile,
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           "http://127.0.0.1:%d%s" % (port, path)]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
    except subprocess.TimeoutExpired:
        return {"error": "nghttp did not finish in 30 s"}
    text = p.stdout.decode("utf-8", "replace")
    streams = {}
    fields = {}
    for line in text.splitlines():
        m = re.search(r"recv \(stream_id=(\d+)\) ([^:]+|:[^:]+): (.*)$",
                      line)
        if m:
            fields.setdefault(int(m.group(1)), []).append(
                (m.group(2), m.group(3).strip()))
            continue
        m = re.search(r"recv (HEADERS|DATA) frame <length=(\d+), "
                      r"flags=0x([0-9a-f]+), stream_id=(\d+)>", line)
        if not m:
            continue
        kind, length, flags, sid = (m.group(1), int(m.group(2)),
                                    int(m.group(3), 16), int(m.group(4)))
        st = streams.setdefault(sid, {"head": None, "data": 0,
                                      "trailers": None, "end": None})
        end = bool(flags & 1)
        if kind == "DATA":
            st["data"] += length
            if end:
                st["end"] = "DATA"
        elif st["head"] is None:
            st["head"] = dict(fields.pop(sid, []))
            if end:
                st["end"] = "HEADERS (no body)"
        else:
            st["trailers"] = dict(fields.pop(sid, []))
            if end:
                st["end"] = "trailers"
    good, kinds = 0, {}
    want = len(grpc_frame(RESP_PAYLOAD))
    for st in streams.values():
        h, t = st["head"] or {}, st["trailers"] or {}
        ok = (h.get(":status") == "200" and
              h.get("content-type") == "application/grpc" and
              st["data"] == want and t.get("grpc-status") == "0" and
              st["end"] == "trailers")
        if ok:
            good += 1
        else:
            k = "status %s, %d data bytes, ended by %s, grpc-status %s" % (
                h.get(":status"), st["data"], st["end"],
                t.get("grpc-status", h.get("grpc-status", "absent")))
            kinds[k] = kinds.get(k, 0) + 1
    return {"asked": n, "streams": len(streams), "good": good,
            "bad": kinds, "rc": p.returncode}


def nghttp_text(r):
    if not r:
        return "–"
    if "good" not in r:
        return "**failed**: %s" % r.get("error")
    text = "%d/%d" % (r["good"], r["asked"])
    if r["good"] != r["asked"]:
        text = "**%s**" % text
        text += "; " + "; ".join("%d× %s" % (v, k) for k, v in
                                 r["bad"].items())
        if r["streams"] < r["asked"]:
            text += "; %d stream(s) unanswered" % (r["asked"] -
                                                   r["streams"])
    return text


PROBE_CONC = (1, 2, 5, 20)


def probe_text(r):
    if not r or r.get("calls") is None:
        return grpc_text(r)
    text = "%d/%d OK" % (r["ok"], r["calls"])
    if "up_conns" in r:
        text += ", %d upstream conns" % r["up_conns"]
    return text if r["ok"] == r["calls"] else "**%s**" % text


def run_checks(ctx, when):
    """The chain is gRPC: raw frames and a real client, per target."""
    a = ctx.args
    out = {}
    targets = [Direct(ctx.upstream)] + live(ctx)
    for t in targets:
        log0 = log_size(t.error_log())
        r = {"grpc": grpc_check(ctx, t.port, PATH, a.check_calls, 20)}
        if when == "before":
            r["nghttp"] = nghttp_check(ctx, t.port, PATH, 50)
            r["len_nghttp"] = nghttp_check(ctx, t.port, WITH_LENGTH + PATH,
                                           10)
            r["len_grpc"] = grpc_check(ctx, t.port, WITH_LENGTH + PATH,
                                       20, 5)
            r["probe"] = {c: grpc_check(ctx, t.port, PATH, a.probe_calls, c,
                                        count_conns=(t.name != "direct"))
                          for c in PROBE_CONC}
        r["log"] = new_log_lines(t.error_log(), log0)
        out[t.name] = r
        log("  %-6s %s: grpcio %s; nghttp %s; with a Content-Length: "
            "nghttp %s, grpcio %s" % (
                t.name, when, grpc_text(r["grpc"]),
                nghttp_text(r.get("nghttp")),
                nghttp_text(r.get("len_nghttp")),
                grpc_text(r.get("len_grpc"))))
        if "probe" in r:
            log("  %-6s calls at a time %s" % (t.name, "; ".join(
                "%d: %s" % (c, probe_text(r["probe"][c]))
                for c in PROBE_CONC)))
    return out


# ---------------------------------------------------------------- strace, perf

def strace_run(ctx, gw, seconds):
    """A short h2load run with strace -c attached to every worker."""
    strace = bench.find_tool("strace")
    targets = gw.workers()
    if not strace or not targets:
        return {"error": "strace is not there" if not strace else
                "no workers"}
    out = os.path.join(ctx.tmp, "strace-%s.txt" % gw.name)
    err = os.path.join(ctx.tmp, "strace-%s.err" % gw.name)
    cmd = [strace, "-c", "-f", "-o", out]
    for p in targets:
        cmd += ["-p", str(p)]
    expect = sum(bench.threads(p) for p in targets)
    with open(err, "w") as errf:
        st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf,
                              start_new_session=True)
    ctx.running.add(st)
    try:
        deadline = time.monotonic() + 5
        while (bench.attached(bench.read_text(err)) < expect and
               time.monotonic() < deadline and st.poll() is None):
            time.sleep(0.05)
        if st.poll() is not None:
            return {"error": "strace: " +
                    bench.read_text(err).strip()[-200:]}
        time.sleep(0.2)
        ld = Load(ctx, load_args(ctx, gw.port, seconds), seconds + 40)
        rc, text = ld.finish()
    finally:
        if st.poll() is None:
            st.send_signal(signal.SIGINT)
            try:
                st.wait(15)
            except subprocess.TimeoutExpired:
                st.kill()
                st.wait(5)
        ctx.running.discard(st)
    r = parse_h2load(text)
    calls, total = bench.parse_strace(out)
    res = {"requests": r.get("done", 0), "total": total,
           "errors": error_counts(r)}
    if res["requests"]:
        res["per_req"] = total / float(res["requests"])
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        res["top"] = [(k, v / float(res["requests"])) for k, v in top]
    return res


def perf_report(perf, data, sort, limit):
    try:
        p = subprocess.run([perf, "report", "-i", data, "--stdio",
                            "--no-children", "--sort", sort],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return []
    rows = []
    for line in p.stdout.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)),
                         " ".join(m.group(2).split())))
        if len(rows) >= limit:
            break
    return rows


def perf_run(ctx, gw, seconds):
    """perf record (no call graphs) of gw's workers during an h2load
    run: where their CPU goes, by shared object and by symbol."""
    perf = bench.find_tool("perf")
    workers = gw.workers()
    if not perf or not workers:
        return {"error": "perf is not there" if not perf else "no workers"}
    data = os.path.join(ctx.tmp, "perf-%s.data" % gw.name)
    ld = Load(ctx, load_args(ctx, gw.port, seconds + 1.5), seconds + 45)
    time.sleep(0.75)
    try:
        p = subprocess.run([perf, "record", "-F", "999", "-o", data, "-p",
                            ",".join(str(w) for w in workers), "--",
                            "sleep", "%g" % seconds],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=seconds + 30)
        perr = p.stdout if p.returncode != 0 else ""
    except subprocess.TimeoutExpired:
        perr = "perf record did not finish"
    ld.finish()
    if perr or not os.path.exists(data):
        return {"error": " | ".join(perr.strip().splitlines()[-2:])[:200]}
    return {"dso": perf_report(perf, data, "dso", 8),
            "sym": perf_report(perf, data, "dso,sym", 15)}


# ---------------------------------------------------------------- report

def fmt(v, spec="%.0f", none="–"):
    return none if v is None else spec % v


def runs_of(ctx, name):
    return [r for r in ctx.runs.get(name, []) if r and r.get("rps")]


def ratios(ctx, name):
    out = []
    for a, b in zip(ctx.runs.get(name, []), ctx.runs.get("nginx", [])):
        if a and b and a.get("rps") and b.get("rps"):
            out.append(a["rps"] / b["rps"])
    return out


def errors_text(runs):
    errs = {}
    for r in runs:
        if not r:
            continue
        for k, v in r.get("errors", {}).items():
            errs[k] = errs.get(k, 0) + v
        for n in r.get("notes", []):
            errs[n] = errs.get(n, 0) + 1
    return ", ".join("%s %d" % kv for kv in errs.items()) or "none"


def load_rows(ctx):
    rows = []
    for name in ctx.order + ["direct"]:
        allruns = ctx.runs.get(name, [])
        runs = runs_of(ctx, name)
        if not runs:
            gw = ctx.by_name.get(name)
            rows.append([name, "FAILED: %s" % (
                "see the notes" if gw and gw.error else
                errors_text(allruns)[:200])] + ["–"] * 8)
            continue
        rr = ratios(ctx, name)
        rows.append([
            "none (h2load → upstream)" if name == "direct" else name,
            fmt(bench.med([r["rps"] for r in runs])),
            "1.00" if name == "nginx" else "–" if name == "direct" else
            fmt(bench.med(rr), "%.2f"),
            bench.fmt_time(bench.med([r.get("p50_us") for r in runs])),
            bench.fmt_time(bench.med([r.get("p99_us") for r in runs])),
            fmt(bench.med([r.get("cpu_us_req") for r in runs]), "%.1f"),
            "%s / %s / %s" % tuple(
                fmt(bench.med([r.get(k) for r in runs]), "%.0f%%")
                for k in ("gw_pct", "up_pct", "load_pct")),
            fmt(bench.med([r.get("opens_per_req") for r in runs]), "%.2f"),
            ", ".join(fmt(r["rps"]) for r in runs),
            errors_text(allruns)])
    return rows


def check_rows(ctx):
    rows = []
    for name in ["direct"] + ctx.order:
        b = ctx.checks.get("before", {}).get(name)
        if not b:
            continue
        after = ctx.checks.get("after", {}).get(name, {})
        rows.append([
            "none (upstream)" if name == "direct" else name,
            nghttp_text(b.get("nghttp")), grpc_text(b.get("grpc")),
            grpc_text(after.get("grpc")) if after else "not run",
            nghttp_text(b.get("len_nghttp")), grpc_text(b.get("len_grpc"))])
    return rows


def probe_rows(ctx):
    rows = []
    for name in ["direct"] + ctx.order:
        b = ctx.checks.get("before", {}).get(name, {})
        if "probe" in b:
            rows.append(["none (upstream)" if name == "direct" else name] +
                        [probe_text(b["probe"][c]) for c in PROBE_CONC])
    return rows


def check_notes(ctx):
    """What the checks found wrong, in words (only what they show)."""
    out = []
    before = ctx.checks.get("before", {})
    for name in ctx.order:
        b = before.get(name, {})
        probe = b.get("probe", {})
        one = probe.get(1, {})
        bad = [c for c in PROBE_CONC[1:] if probe.get(c, {}).get("calls")
               and probe[c]["ok"] < probe[c]["calls"]]
        if one.get("calls") and one["ok"] == one["calls"] and bad:
            text = ("- %s fails gRPC calls only when they overlap: all %d "
                    "one at a time are OK, but %s fail (`%s`)." % (
                        name, one["calls"], ", ".join(
                            "%d of %d with %d at a time" % (
                                probe[c]["calls"] - probe[c]["ok"],
                                probe[c]["calls"], c) for c in bad),
                        b.get("grpc", {}).get("error") or
                        probe[bad[0]].get("error") or "?"))
            # About one upstream connection per good call (a stray one
            # allowed in 50), in every probe?
            near = all(probe[c].get("up_conns") is not None and
                       probe[c]["ok"] <= probe[c]["up_conns"] <=
                       probe[c]["ok"] + max(1, probe[c]["calls"] // 50)
                       for c in PROBE_CONC)
            if near:
                text += (
                    " The upstream accepted about one connection per "
                    "good call (%s): each good call had an upstream "
                    "connection of its own, and the calls that failed "
                    "shared one. With Debian's libcurl 7.88.1 the second "
                    "request on an h2c connection breaks (docs/http2.md); "
                    "agate forbids reusing a connection after its "
                    "request, but libcurl still multiplexes a concurrent "
                    "request onto it." % "; ".join(
                        ("%d at a time: %d for %d good calls" if i == 0
                         else "%d: %d for %d") % (
                             c, probe[c]["up_conns"], probe[c]["ok"])
                        for i, c in enumerate(PROBE_CONC)))
            out.append(text)
        if b.get("nghttp", {}).get("good") == 50 and \
                b.get("len_nghttp", {}).get("good") == 0:
            out.append(
                "- %s drops the grpc-status trailer when the upstream's "
                "answer has a Content-Length: nghttp sees the message's "
                "DATA end the stream, and grpcio fails the call (%s). The "
                "curl command line (same libcurl) loses that trailer "
                "most of the time too, so it looks like libcurl ending "
                "the transfer once Content-Length bytes are in; gRPC "
                "servers do not send a Content-Length, which is why the "
                "benchmark's upstream removes it." % (
                    name, grpc_text(b.get("len_grpc"))))
    return out


def syscall_rows(ctx):
    rows = []
    for name in ctx.order:
        s = ctx.strace.get(name)
        if not s:
            continue
        if "per_req" not in s:
            rows.append([name, "–", s.get("error", "no requests"), "–"])
            continue
        rows.append([name, "%.2f" % s["per_req"],
                     ", ".join("%s %.2f" % kv for kv in s["top"]),
                     "%d%s" % (s["requests"], (", errors: " + ", ".join(
                         "%s %d" % kv for kv in s["errors"].items()))
                               if s["errors"] else "")])
    return rows


def dso_name(name):
    """"[kernel.kallsyms]" -> "kernel", "libevent_core-2.1.so.7" ->
    "libevent_core"."""
    if name == "[kernel.kallsyms]":
        return "kernel"
    return re.sub(r"(-[\d.]+)?\.so[\d.]*$", "", name)


def perf_sym(text):
    """"libc.so.6 [.] _int_malloc" -> "`_int_malloc` (libc)"."""
    m = re.match(r"(\S+) \[(.)\] (.*)$", text)
    if not m:
        return "`%s`" % text.replace("`", "'")
    return "`%s` (%s)" % (m.group(3).replace("`", "'"),
                          dso_name(m.group(1)))


def perf_blocks(ctx):
    out = []
    for name in ctx.order:
        p = ctx.perf.get(name)
        if not p:
            continue
        if "error" in p:
            out.append("- %s: perf failed: %s" % (name, p["error"]))
            continue
        out.append("- **%s**, by shared object: %s" % (name, ", ".join(
            "%s %.1f%%" % (dso_name(so), pct) for pct, so in p["dso"])))
        out.append("  - top symbols: %s" % ", ".join(
            "%s %.1f%%" % (perf_sym(sym), pct) for pct, sym in p["sym"]))
    return out


def target_rows(ctx):
    rr = bench.med(ratios(ctx, "agate"))
    return [["gRPC unary calls/s, %d connections × %d streams"
             % (ctx.args.conns, ctx.args.streams), "≥ 1.00× nginx",
             fmt(rr, "%.2f×"), "–" if rr is None else
             ("yes" if rr >= 1.0 else "**no**")]]


def log_notes(ctx):
    out = []
    for name in ctx.order + ["direct"]:
        phases = [
            ("the checks before the rounds", ctx.checks.get(
                "before", {}).get(name, {}).get("log", [])),
            ("the h2load runs", [l for r in ctx.runs.get(name, []) if r
                                 for l in r.get("log", [])]),
            ("the checks after the rounds", ctx.checks.get(
                "after", {}).get(name, {}).get("log", []))]
        for when, lines in phases:
            if not lines:
                continue
            kinds = {}
            for l in lines:
                k = re.sub(r"\d+", "N", l)[:160]
                kinds.setdefault(k, [0, l])[0] += 1
            top = sorted(kinds.values(), key=lambda kv: -kv[0])[:6]
            out.append("- %s's error log: %d line(s) during %s; most "
                       "frequent:\n%s" % (
                           "the upstream" if name == "direct" else name,
                           len(lines), when, "\n".join(
                               "  - %d× `%s`" % (
                                   k, l[:300].replace("`", "'"))
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
    # -I: not this folder's grpc.py
    grpcio = bench.cmd_version([ctx.args.python, "-I", "-c",
                                "import grpc; print(grpc.__version__)"],
                               r"^(\d\S*)$")
    ctx.grpcio = bool(re.match(r"^\d", grpcio))
    agate = ctx.args.agate
    return {
        "cpu": cpu.group(1).strip() if cpu else "?",
        "mem": "%.0f GiB" % (int(mem.group(1)) / 1048576.0) if mem else "?",
        "os": osr.group(1) if osr else "?",
        "kernel": os.uname().release,
        "agate": bench.cmd_version([agate, "-V"], r"agate (\S+)") + git +
        bench.binary_date(agate),
        "libcurl": bench.lib_version(agate, "libcurl", "libcurl"),
        "libnghttp2": bench.lib_version(agate, "libnghttp2", "libnghttp2"),
        "libevent": bench.lib_version(agate, "libevent", "libevent"),
        "nginx": bench.cmd_version([ctx.nginx, "-v"], r"nginx/(\S+)"),
        "h2load": bench.cmd_version([ctx.h2load, "--version"],
                                    r"nghttp2/(\S+)"),
        "grpcio": grpcio if ctx.grpcio else "absent (%s)" % grpcio[:60],
    }


def report(ctx, wall):
    a = ctx.args
    info = ctx.info
    blocks = ["## Targets\n",
              bench.md_table(["target", "wanted", "agate", "met"],
                             target_rows(ctx)) + "\n"]
    blocks += ["## Unary calls, %d connections × %d streams\n"
               % (a.conns, a.streams),
               bench.md_table(["gateway", "calls/s", "× nginx", "p50",
                               "p99", "CPU µs/call",
                               "CPU gateway / upstream / h2load",
                               "upstream conns/call", "calls/s per round",
                               "errors"], load_rows(ctx)) + "\n",
               "Medians over %d round(s) of %g s, each after a %g s "
               "warm-up run (the same h2load command); the gateways "
               "alternate within the rounds (agate first in odd rounds, "
               "nginx first in even ones). calls/s counts the answers in "
               "the measured window that are 2xx and carry the message "
               "(h2load's DATA bytes / the message frame's size: a "
               "gateway's own gRPC error is a 200 with no DATA, which "
               "h2load counts as 2xx); × nginx is the median of the "
               "per-round ratios. p50/p99: h2load's per-request log "
               "(`--log-file`), from the request's start to the end of "
               "its answer, 200 answers only (a gateway's own gRPC errors are "
               "200s, so they are in). CPU µs/call: utime+stime of "
               "the gateway's workers during the measured window (read "
               "when h2load prints that its main duration starts and "
               "ends) / calls done. CPU gateway / upstream / h2load: share "
               "of one CPU each (the machine has %d, shared by all "
               "three). Upstream conns/call: connections the upstream "
               "accepted during the window (its `stub_status`) / calls: a "
               "gateway that keeps its upstream connections shows 0. "
               "errors: h2load's failed, errored and timed-out requests, "
               "its non-2xx "
               "answers, and the 2xx answers without the message. The "
               "last row is one run of h2load straight to the upstream, "
               "before the rounds: the upstream's ceiling.\n"
               % (a.rounds, a.duration, a.warmup, NCPU)]
    blocks += ["## Is it gRPC? Checks\n",
               bench.md_table(["target", "nghttp: 50 streams with DATA, "
                               "then grpc-status 0 ending the stream",
                               "grpcio, before the rounds",
                               "grpcio, after the rounds",
                               "with a Content-Length: nghttp",
                               "with a Content-Length: grpcio"],
                              check_rows(ctx)) + "\n",
               "nghttp sends %s's request %s times on one connection "
               "(`-m`) and must see, on each stream, HEADERS (200, "
               "content-type application/grpc), the %d-byte message in "
               "DATA, then a HEADERS frame with `grpc-status: 0` and "
               "END_STREAM. grpcio: %d generic `unary_unary('%s')` calls "
               "(20 at a time, 5 s deadline each, one channel) with "
               "python3-grpcio on `%s`; OK means StatusCode.OK and the "
               "upstream's payload. The last two columns ask the "
               "upstream's `%s/` location, the same answer with a "
               "Content-Length (10 nghttp streams, 20 grpcio calls); a "
               "gRPC server sends none, but HTTP/2 allows it.\n"
               % (PATH, 50, len(grpc_frame(RESP_PAYLOAD)), a.check_calls,
                  PATH, a.python, WITH_LENGTH)]
    prows = probe_rows(ctx)
    if prows:
        blocks += ["Calls that overlap, before the rounds: %d grpcio calls "
                   "per cell, N at a time on one channel, and the "
                   "connections the upstream accepted meanwhile (its "
                   "`stub_status`; not counted straight to the upstream, "
                   "where the client's own connection is one):\n"
                   % a.probe_calls,
                   bench.md_table(["target"] + ["%d at a time" % c
                                                for c in PROBE_CONC],
                                  prows) + "\n"]
    cn = check_notes(ctx)
    if cn:
        blocks += ["What the checks show:\n", "\n".join(cn) + "\n"]
    srows = syscall_rows(ctx)
    if srows:
        blocks += ["## Syscalls per call (strace -c -f on the workers)\n",
                   bench.md_table(["gateway", "syscalls/call",
                                   "top 6 per call", "calls (strace run)"],
                                  srows) + "\n",
                   "A separate %g s h2load run (same load) with `strace "
                   "-c -f` attached to the gateway's workers; strace "
                   "slows them down, so only the counts per call "
                   "matter.\n" % a.strace_seconds]
    pb = perf_blocks(ctx)
    if pb:
        blocks += ["## Where the workers' CPU goes (perf)\n",
                   "\n".join(pb) + "\n",
                   "`perf record -F 999` (no call graphs) of the "
                   "gateway's workers for %g s during a separate h2load "
                   "run (same load); self time, %% of the samples.\n"
                   % a.perf]
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
        "# gRPC benchmark\n",
        "Generated by `tests/bench/grpc.py` on %s (%.0f s).\n" % (
            now.strftime("%Y-%m-%d %H:%M %Z"), wall),
        "gRPC unary calls (`%s`, a %d-byte request message, a %d-byte "
        "answer message and a `grpc-status: 0` trailer) through agate "
        "and through nginx (`grpc_pass`), both over cleartext HTTP/2 "
        "(h2c, prior knowledge) on both sides, in front of the same fake "
        "gRPC upstream, driven by h2load.\n" % (
            PATH, len(REQ_PAYLOAD), len(RESP_PAYLOAD)),
        "- Machine: %s, %d CPUs, %s RAM; %s, kernel %s" % (
            info["cpu"], NCPU, info["mem"], info["os"], info["kernel"]),
        "- Versions: agate %s; libcurl %s; libnghttp2 %s; libevent %s; "
        "nginx %s; h2load %s; python3-grpcio %s" % (
            info["agate"], info["libcurl"], info["libnghttp2"],
            info["libevent"], info["nginx"], info["h2load"],
            info["grpcio"]),
        "- Setup: everything on 127.0.0.1; %d workers per gateway; the "
        "upstream: nginx, 1 worker, h2c; h2load: `-c %d -m %d -t %d`, "
        "`-d` one gRPC frame, `-H 'content-type: application/grpc' -H "
        "'te: trailers'`; fd limit %d" % (
            a.workers, a.conns, a.streams, a.threads, ctx.nofile),
        "- Command: `%s`%s\n" % (" ".join(shlex.quote(x) for x in
                                          ctx.argv_for_report),
                                 " (--quick: a smoke test, not a "
                                 "measurement)" if a.quick else ""),
        "agate's config:\n\n```yaml\n%s```\n" % ctx.conf_text["agate"],
        "nginx's config (the gateway):\n\n```nginx\n%s```\n"
        % ctx.conf_text["nginx"],
        "The fake gRPC upstream (`$TMP/www/frame` holds the answer's "
        "gRPC frame; why it is served this way is in "
        "`tests/bench/grpc.py`; `$TMP` is the temporary folder):\n\n"
        "```nginx\n%s```\n" % ctx.conf_text["upstream"],
    ]
    os.makedirs(a.out, exist_ok=True)
    md = os.path.join(a.out, "benchmarks-grpc.md")
    with open(md, "w") as f:
        f.write(("\n".join(head) + "\n" + console).replace(ctx.tmp,
                                                           "$TMP"))
    log("wrote %s" % md)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "runs": ctx.runs, "checks": ctx.checks,
                       "strace": ctx.strace, "perf": ctx.perf}, f,
                      indent=1, default=str)


# ---------------------------------------------------------------- main

class Context:
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agate", default=os.path.join(TOP, "agate"))
    p.add_argument("--python", default="/usr/bin/python3",
                   help="a python with grpcio, for the checks "
                        "(default: %(default)s)")
    p.add_argument("--out", default=os.path.join(TOP, "docs"),
                   help="folder for benchmarks-grpc.md")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6,
                   help="even: each gateway goes first as often")
    p.add_argument("--duration", type=float, default=8,
                   help="measured seconds per h2load run")
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--streams", type=int, default=10,
                   help="concurrent streams per connection (h2load -m)")
    p.add_argument("--threads", type=int, default=1,
                   help="h2load threads")
    p.add_argument("--check-calls", type=int, default=200,
                   help="grpcio calls per target, before and after")
    p.add_argument("--probe-calls", type=int, default=100,
                   help="grpcio calls per target and concurrency "
                        "(1, 2, 5, 20 at a time)")
    p.add_argument("--strace-seconds", type=float, default=3,
                   help="0: no strace run")
    p.add_argument("--perf", type=float, default=3,
                   help="seconds of perf record per gateway; 0: none")
    p.add_argument("--gateways", default="agate,nginx",
                   help="subset of agate,nginx")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 2 s, shorter checks")
    p.add_argument("--json", help="also write raw results to this file")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 2, 0.5
        a.check_calls = min(a.check_calls, 40)
        a.probe_calls = min(a.probe_calls, 20)
        a.strace_seconds = min(a.strace_seconds, 1.5)
        a.perf = min(a.perf, 1.5)
    a.gateway_list = [g for g in a.gateways.split(",") if g]
    if not a.gateway_list or not set(a.gateway_list) <= set(GATEWAY_ORDER):
        p.error("--gateways: a subset of agate,nginx")
    if a.rounds < 1 or a.duration <= 0 or a.conns < 1 or a.streams < 1 \
            or a.threads < 1 or a.warmup <= 0:
        p.error("--rounds, --duration, --warmup, --conns, --streams, "
                "--threads: positive")
    for k in ("agate", "out"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    return a


def start_servers(ctx):
    a, tmp = ctx.args, ctx.tmp
    conns = min(20000, ctx.nofile)
    port = bench.free_port()
    ctx.status_port = bench.free_port()
    ctx.conf_text["upstream"] = fill(UPSTREAM_CONF, DIR=tmp, PORT=port,
                                     NOFILE=conns, CONNS=conns,
                                     WITH_LENGTH=WITH_LENGTH,
                                     STATUS_PORT=ctx.status_port)
    ctx.upstream = Nginx("upstream", tmp, port, 1, ctx.nginx,
                         ctx.conf_text["upstream"])
    ctx.servers.append(ctx.upstream)
    ctx.upstream.start()
    log("upstream nginx (h2c) on :%d (pid %d)" % (ctx.upstream.port,
                                                  ctx.upstream.proc.pid))
    for name in GATEWAY_ORDER:
        if name not in a.gateway_list:
            continue
        port = bench.free_port()
        if name == "agate":
            ctx.conf_text["agate"] = fill(
                AGATE_CONF, WORKERS=a.workers, PORT=port, MAXCONN=MAXCONN,
                UPSTREAM_PORT=ctx.upstream.port, KEEPALIVE=KEEPALIVE)
            gw = AgateG(tmp, port, a.workers, a.agate,
                        ctx.conf_text["agate"])
        else:
            ctx.conf_text["nginx"] = fill(
                NGINX_CONF, DIR=tmp, PORT=port, WORKERS=a.workers,
                NOFILE=conns, CONNS=conns, KEEPALIVE=KEEPALIVE,
                UPSTREAM_PORT=ctx.upstream.port)
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
    return ("%9s calls/s  p50 %s  p99 %s  cpu %s µs/call  gw %s%%  "
            "conns/call %s  errors: %s" % (
                fmt(r.get("rps")), bench.fmt_time(r.get("p50_us")),
                bench.fmt_time(r.get("p99_us")),
                fmt(r.get("cpu_us_req"), "%.1f"), fmt(r.get("gw_pct")),
                fmt(r.get("opens_per_req"), "%.2f"), errors_text([r])))


def main(argv):
    a = parse_args(argv)
    ctx = Context()
    ctx.args = a
    ctx.argv_for_report = ["tests/bench/grpc.py"] + argv
    ctx.nginx = bench.find_tool("nginx")
    ctx.h2load = bench.find_tool("h2load")
    ctx.nghttp = bench.find_tool("nghttp")
    missing = [pkg for tool, pkg in ((ctx.nginx, "nginx"),
                                     (ctx.h2load, "nghttp2-client"))
               if not tool]
    if missing:
        print("missing tools; as root, run:\n  apt-get install -y " +
              " ".join(missing), file=sys.stderr)
        return 1
    if "agate" in a.gateway_list and not os.access(a.agate, os.X_OK):
        print("no agate binary at %s (make -j2 agate)" % a.agate,
              file=sys.stderr)
        return 1
    stdbuf = bench.find_tool("stdbuf")   # h2load's lines as they come
    ctx.h2load_cmd = ([stdbuf, "-oL"] if stdbuf else []) + [ctx.h2load]
    ctx.nofile = bench.raise_nofile()
    ctx.tmp = tempfile.mkdtemp(prefix="agate-grpcbench-")
    os.chmod(ctx.tmp, 0o755)     # nginx workers may run as nobody
    for d in ("tmp", "www"):
        os.mkdir(os.path.join(ctx.tmp, d))
    with open(os.path.join(ctx.tmp, "www", "frame"), "wb") as f:
        f.write(grpc_frame(RESP_PAYLOAD))
    os.chmod(os.path.join(ctx.tmp, "www"), 0o755)
    ctx.reqfile = os.path.join(ctx.tmp, "req.bin")
    with open(ctx.reqfile, "wb") as f:
        f.write(grpc_frame(REQ_PAYLOAD))
    ctx.servers, ctx.gateways, ctx.running = [], [], set()
    ctx.by_name, ctx.runs, ctx.checks, ctx.notes = {}, {}, {}, []
    ctx.strace, ctx.perf = {}, {}
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
        if not ctx.grpcio:
            ctx.notes.append("python3-grpcio not found with %s: no grpcio "
                             "checks" % a.python)
        if not ctx.nghttp:
            ctx.notes.append("nghttp not found: no frame checks")
        start_servers(ctx)
        log("checks before the rounds")
        ctx.checks["before"] = run_checks(ctx, "before")
        log("unary calls, %d conns x %d streams, %d round(s) of %g s" % (
            a.conns, a.streams, a.rounds, a.duration))
        r = load_run(ctx, Direct(ctx.upstream))
        ctx.runs["direct"] = [r]
        log("  upstream alone %s" % describe(r))
        for rnd in range(a.rounds):
            order = list(live(ctx))
            if rnd % 2:
                order.reverse()
            for gw in order:
                r = load_run(ctx, gw)
                ctx.runs.setdefault(gw.name, []).append(r)
                log("  round %d %-6s %s" % (rnd + 1, gw.name, describe(r)))
        log("checks after the rounds")
        ctx.checks["after"] = run_checks(ctx, "after")
        if a.strace_seconds > 0:
            for gw in live(ctx):
                s = strace_run(ctx, gw, a.strace_seconds)
                ctx.strace[gw.name] = s
                log("  strace %-6s %s syscalls/call (%s)" % (
                    gw.name, fmt(s.get("per_req"), "%.2f"), ", ".join(
                        "%s %.2f" % kv for kv in s.get("top", [])[:4])
                    or s.get("error", "")))
        if a.perf > 0:
            for gw in live(ctx):
                p = perf_run(ctx, gw, a.perf)
                ctx.perf[gw.name] = p
                log("  perf %-6s %s" % (gw.name, p.get("error") or
                                         ", ".join("%s %.0f%%" % (so, pct)
                                                   for pct, so in
                                                   p["dso"][:5])))
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
