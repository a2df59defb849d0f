#!/usr/bin/env python3
"""What tracing costs: `make bench` scenario 1 (small GET, keep-alive, 50
connections, through agate to one nginx upstream) against agate without
tracing and agate with `tracing: {sample_ratio: 1.0, otlp: ...}`
exporting every request's spans to a collector.

The collector is a second nginx that takes the OTLP/HTTP POSTs, reads
and discards their bodies and answers 200 (`return` discards a request
body): C, so that the collector's own CPU does not take the cores the
two agates compete for more than a real collector elsewhere would.  It
logs each POST's size; agate's /metrics (admin listener) says how many
spans were exported and how many dropped.

Rounds alternate the two agates (plain, traced, traced, plain, ...); the
report gives each round's requests/s, CPU us per request and the ratio
traced / plain, and the median ratio.  Every process it starts is
stopped by PID; everything runs in a temporary folder.

    python3 tests/bench/tracing.py --agate ./agate --out docs [--quick]
"""

import argparse
import datetime
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench                  # noqa: E402  (definitions only)

COLLECTOR_CONF = """# written by tests/bench/tracing.py
worker_processes 1;
worker_rlimit_nofile 4096;
daemon off;
master_process on;
pid @DIR@/collector.pid;
error_log @DIR@/collector.error.log warn;
events { worker_connections 1024; }
http {
    log_format otlp '$request_method $status $content_length';
    access_log @DIR@/collector.access.log otlp buffer=64k flush=1s;
    keepalive_requests 1000000;
    client_body_buffer_size 1m;
    client_max_body_size 64m;
    client_body_temp_path @DIR@/tmp/collector-body;
    proxy_temp_path @DIR@/tmp/collector-proxy;
    fastcgi_temp_path @DIR@/tmp/collector-fastcgi;
    uwsgi_temp_path @DIR@/tmp/collector-uwsgi;
    scgi_temp_path @DIR@/tmp/collector-scgi;
    server {
        listen 127.0.0.1:@PORT@ backlog=1024;
        location = /v1/traces {
            default_type application/json;
            return 200 '{}';
        }
    }
}
"""


class Collector(bench.NginxServer):
    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise bench.BenchError("collector exited: " +
                                       self.log_tail())
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=2)
                c.request("POST", "/v1/traces", body=b"{}")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise bench.BenchError("collector not ready")

    def received(self):
        """POSTs and bytes logged so far."""
        n = size = 0
        path = os.path.join(self.tmp, "collector.access.log")
        for line in bench.read_text(path).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "POST" and parts[1] == "200":
                n += 1
                size += int(parts[2])
        return n, size


class Agate(bench.Agate):
    def __init__(self, name, tmp, port, workers, binary, upstream_port,
                 tracing=None):
        bench.Agate.__init__(self, name, tmp, port, workers, binary,
                             upstream_port, [])
        self.conf = os.path.join(tmp, "%s.yaml" % name)
        self.admin = None
        with open(os.path.join(tmp, "agate.yaml")) as f:
            text = f.read()
        if tracing:
            self.admin = bench.free_port()
            text += ("tracing:\n  sample_ratio: 1.0\n  otlp: \"%s\"\n"
                     "admin:\n  listen: \"127.0.0.1:%d\"\n"
                     % (tracing, self.admin))
        with open(self.conf, "w") as f:
            f.write(text)

    def counters(self):
        if self.admin is None:
            return {}
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        return {k: int(v) for k, v in re.findall(
            r"^agate_tracing_(\w+)_total (\d+)$", text, re.M)}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agate", default=os.path.join(bench.TOP, "agate"))
    p.add_argument("--out", default=os.path.join(bench.TOP, "docs"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds (each runs both agates once)")
    p.add_argument("--duration", type=float, default=8,
                   help="seconds per measured wrk run")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 rounds of 2 s")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration = 2, 2
    a.agate = os.path.abspath(a.agate)
    a.out = os.path.abspath(a.out)
    return a


def run_rounds(ctx, plain, traced):
    spec = bench.SCENARIOS[1]
    rows = []
    for i in range(ctx.args.rounds):
        order = (plain, traced) if i % 2 == 0 else (traced, plain)
        got = {}
        for gw in order:
            r = bench.measure(ctx, gw, spec, ctx.args.duration)
            err = bench.error_text(r)
            if err:
                raise bench.BenchError("%s: %s" % (gw.name, err))
            got[gw.name] = r
        p, t = got[plain.name], got[traced.name]
        rows.append((i + 1, order[0].name, p, t, t["rps"] / p["rps"]))
        bench.log("round %d: plain %.0f req/s, traced %.0f req/s: %.3fx" %
                  (i + 1, p["rps"], t["rps"], t["rps"] / p["rps"]))
    return rows


def report(ctx, rows, counters, received, wall):
    a = ctx.args
    ratios = [r[4] for r in rows]
    med = statistics.median(ratios)
    med_p = statistics.median(r[2]["rps"] for r in rows)
    med_t = statistics.median(r[3]["rps"] for r in rows)
    cpu_p = statistics.median(r[2]["cpu_us_req"] for r in rows)
    cpu_t = statistics.median(r[3]["cpu_us_req"] for r in rows)
    posts, size = received
    exported = counters.get("spans_exported", 0)
    lines = [
        "# Benchmark: the cost of tracing",
        "",
        "Written by `make bench-tracing` (tests/bench/tracing.py) on %s, "
        "%d min." % (datetime.datetime.now(datetime.timezone.utc)
                     .strftime("%Y-%m-%d %H:%M UTC"), round(wall / 60)),
        "",
        "`make bench` scenario 1 (small GET, keep-alive, %d connections, "
        "%d wrk threads, %d agate workers, one nginx upstream worker) "
        "against agate without `tracing:` and agate with `tracing: "
        "{sample_ratio: 1.0, otlp: ...}`: every request sampled, its "
        "server span and its upstream try's client span exported as "
        "OTLP/HTTP JSON to a collector (a second nginx that reads and "
        "discards each POST). %d rounds of %g s, the two agates "
        "alternating; ratio = traced / plain within a round."
        % (bench.SCENARIOS[1]["conns"], a.wrk_threads, a.workers, a.rounds,
           a.duration),
        "",
        "**Median ratio: %.3fx** (target: at least 0.9x; nginx-otel "
        "reports 10-15%% overhead)." % med,
        "",
        "| round | first | plain req/s | traced req/s | plain CPU us/req "
        "| traced CPU us/req | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, first, p, t, ratio in rows:
        lines.append("| %d | %s | %.0f | %.0f | %.1f | %.1f | %.3f |" % (
            n, first, p["rps"], t["rps"], p["cpu_us_req"], t["cpu_us_req"],
            ratio))
    lines += [
        "| median | | %.0f | %.0f | %.1f | %.1f | %.3f |" % (
            med_p, med_t, cpu_p, cpu_t, med),
        "",
        "Collector: %d POSTs, %.1f MB received; agate counted %d spans "
        "exported, %d dropped, %d failed exports (a drop means the queue "
        "was full or an export failed: see docs/observability.md)."
        % (posts, size / 1e6, exported, counters.get("spans_dropped", 0),
           counters.get("exports_failed", 0)),
        "",
        "CPU us/req counts the agate processes only (the collector's CPU "
        "is not in it). On a machine shared with other work, rounds "
        "vary; the ratio within a round is what to compare.",
        "",
    ]
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "benchmarks-tracing.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    bench.log("wrote %s: median %.3fx" % (path, med))


def main(argv):
    a = parse_args(argv)
    t0 = time.monotonic()
    ctx = bench.Context()
    ctx.args = a
    nginx, wrk = bench.find_tool("nginx"), bench.find_tool("wrk")
    if not nginx or not wrk or not os.access(a.agate, os.X_OK):
        print("needs nginx, wrk and an agate binary", file=sys.stderr)
        return 1
    ctx.tools = {"wrk": wrk, "nginx": nginx}
    ctx.nofile = bench.raise_nofile()
    ctx.running = set()
    ctx.tmp = tmp = tempfile.mkdtemp(prefix="agate-bench-tracing-")
    os.chmod(tmp, 0o755)
    os.mkdir(os.path.join(tmp, "tmp"))
    servers = []
    try:
        up_port = bench.free_port()
        ctx.backend = bench.NginxServer(
            "upstream", tmp, up_port, 1, nginx,
            bench.fill("upstream.nginx.conf", DIR=tmp, PORT=up_port,
                       NOFILE=ctx.nofile, CONNS=4096,
                       BODY=bench.UPSTREAM_BODY))
        servers.append(ctx.backend)
        ctx.backend.start()
        col_port = bench.free_port()
        col = Collector("collector", tmp, col_port, 1, nginx,
                        COLLECTOR_CONF.replace("@DIR@", tmp)
                        .replace("@PORT@", str(col_port)))
        servers.append(col)
        col.start()
        plain = Agate("plain", tmp, bench.free_port(), a.workers, a.agate,
                      up_port)
        traced = Agate("traced", tmp, bench.free_port(), a.workers,
                       a.agate, up_port,
                       tracing="http://127.0.0.1:%d/v1/traces" % col_port)
        for gw in (plain, traced):
            servers.append(gw)
            gw.start()
        rows = run_rounds(ctx, plain, traced)
        time.sleep(2)            # the last batch, and nginx's log flush
        counters = traced.counters()
        received = col.received()
        report(ctx, rows, counters, received, time.monotonic() - t0)
        return 0
    except bench.BenchError as e:
        print("bench-tracing: %s" % e, file=sys.stderr)
        return 1
    finally:
        for s in reversed(servers):
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
