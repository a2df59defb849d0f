#!/usr/bin/env python3
"""agate's offload benchmark: does bcrypt stall the event loop?

Clients keep logging in to a basic-auth route whose htpasswd holds a
bcrypt hash of cost 12 (about 250 ms of CPU per check), with a wrong
password so that no check is ever cached.  Meanwhile other clients ask the
health path of the same workers, and we measure its latency.  Four
gateways on the same machine, in the same run, 2 workers each:

- agate, offload.processes: 1   (one helper per worker)
- agate, offload.processes: 2
- agate, offload.processes: 0   (the comparison switch: every job on the
                                 event loop, as a gateway without a pool)
- nginx, auth_basic with the same file (libcrypt on the worker: the
                                 known way to freeze nginx workers)

and agate once with no login load, for the baseline.  Reports health
p50/p99 and bcrypt verifications/s (the login rate: each is one check),
and writes docs/benchmarks-offload.md (--out).  Everything listens on
127.0.0.1, runs from a temporary folder removed at the end, and every
process it starts is stopped by PID.

    python3 tests/bench/offload.py --agate ./agate \\
        --testup tests/upstream/testup --out docs
"""

import argparse
import base64
import ctypes
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import run as bench                  # noqa: E402  (definitions only)

COST = 12
LOGIN_CONNS = 8
PROBERS = 4                  # health probes: threads, each every PROBE_GAP
PROBE_GAP = 0.005
TARGET_P99_MS = 5.0
AUTH_RIGHT = "Basic " + base64.b64encode(b"ann:the-password").decode()
AUTH_WRONG = "Basic " + base64.b64encode(b"ann:not-the-password").decode()


def log(msg):
    print("offload-bench: " + msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bcrypt_hash(password, cost):
    lc = ctypes.CDLL("libcrypt.so.1")
    lc.crypt_gensalt.restype = ctypes.c_char_p
    lc.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong,
                                 ctypes.c_char_p, ctypes.c_int]
    lc.crypt.restype = ctypes.c_char_p
    lc.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lc.crypt(password.encode(),
                    lc.crypt_gensalt(b"$2y$", cost, None, 0)).decode()


def wait_port(port, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_agate(args, tmp, up_port, processes):
    port = free_port()
    cfg = {"server": {"workers": 2, "listen": ["127.0.0.1:%d" % port],
                      "health_path": "/healthz"},
           "log": {"level": "warn", "access": "off"},
           "offload": {"processes": processes, "queue_limit": 4096,
                       "job_timeout": "60s"},
           "upstreams": {"u": {"servers": ["http://127.0.0.1:%d" %
                                           up_port]}},
           "routes": [{"path": "/login", "upstream": "u",
                       "auth": {"basic": "htpasswd"}}]}
    path = os.path.join(tmp, "agate-%d.yaml" % processes)
    with open(path, "w") as f:
        json.dump(cfg, f)
    p = subprocess.Popen([args.agate, "-c", path], cwd=tmp,
                         stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, "agate.log"), "a"))
    wait_port(port, p)
    time.sleep(0.5)                  # workers and helpers up
    return p, port


NGINX_CONF = """
worker_processes 2;
daemon off;
master_process on;
pid @DIR@/nginx.pid;
error_log @DIR@/nginx.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path @DIR@/body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    upstream u { server 127.0.0.1:@UP@; keepalive 32; }
    server {
        listen 127.0.0.1:@PORT@ reuseport;
        location = /healthz { return 200 '{"status":"ok"}'; }
        location /login {
            auth_basic "agate";
            auth_basic_user_file @DIR@/htpasswd;
            proxy_pass http://u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""


def start_nginx(args, tmp, up_port):
    port = free_port()
    conf = (NGINX_CONF.replace("@DIR@", tmp).replace("@UP@", str(up_port))
            .replace("@PORT@", str(port)))
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = subprocess.Popen([args.nginx, "-c", path, "-p", tmp],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    time.sleep(0.5)
    return p, port


def wrk(args, port, path, conns, seconds, headers=()):
    cmd = [args.wrk, "-t", str(min(2, conns)), "-c", str(conns),
           "-d", "%ds" % seconds, "--latency", "--timeout", "10s"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(p, seconds):
    try:
        out, _ = p.communicate(timeout=seconds + 40)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return bench.parse_wrk(out)


def status_of(port, path, auth=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers={"Authorization": auth} if auth
                  else {})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def probe(port, seconds):
    """Health probes as a load balancer makes them: a new connection each
    time (so both workers are asked), PROBERS at once, each every
    PROBE_GAP.  Returns the latencies in ms."""
    out = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def one():
        mine = []
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                ok = status_of(port, "/healthz") == 200
            except OSError:
                ok = False
            ms = (time.perf_counter() - t0) * 1e3
            mine.append(ms if ok else float("inf"))
            time.sleep(PROBE_GAP)
        with lock:
            out.extend(mine)
    ts = [threading.Thread(target=one) for _ in range(PROBERS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sorted(out)


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1,
                             int(len(sorted_values) * p / 100.0))]


def measure(args, port, login):
    """Health latency with (or without) the login load alongside."""
    got = (status_of(port, "/login", AUTH_RIGHT),
           status_of(port, "/login", AUTH_WRONG))
    if got != (200, 401):
        raise RuntimeError("basic auth does not work on port %d: the "
                           "right password got %d, a wrong one %d" %
                           ((port,) + got))
    lp = wrk(args, port, "/login", LOGIN_CONNS, args.seconds + 2,
             ["Authorization: " + AUTH_WRONG]) if login else None
    if lp:
        time.sleep(1.0)              # the helpers (or loops) are busy now
    lat = probe(port, args.seconds)
    lg = finish(lp, args.seconds + 2) if lp else None
    return {"health_p50_ms": pct(lat, 50), "health_p99_ms": pct(lat, 99),
            "health_max_ms": lat[-1] if lat else float("nan"),
            "probes": len(lat),
            "logins_per_s": lg["rps"] if lg else None,
            "login_not_401": (lg["requests"] - lg["non2xx"]) if lg else 0}


def cpu_name():
    text = bench.read_text("/proc/cpuinfo")
    m = re.search(r"model name\s*:\s*(.*)", text)
    return m.group(1).strip() if m else "unknown CPU"


def report(rows, args):
    lines = [
        "# Offload benchmark: bcrypt logins against the health path",
        "",
        "Generated by `make bench-offload` (tests/bench/offload.py) on %s, "
        "%s, %d CPUs." % (datetime.date.today().isoformat(), cpu_name(),
                          os.cpu_count()),
        "",
        "%d connections (wrk, closed loop) keep logging in with a wrong "
        "password against a bcrypt hash of cost %d, so no check is cached "
        "and every login is one bcrypt.  Meanwhile %d probes ask the "
        "health path of the same 2 workers as a load balancer would (a "
        "new connection each time, every %d ms each) for %d s; the "
        "latency is the probe's, connect to last byte." % (
            LOGIN_CONNS, COST, PROBERS, PROBE_GAP * 1000, args.seconds),
        "",
        "| gateway | health p50 ms | health p99 ms | health max ms | "
        "probes | bcrypt checks/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append("| %s | %.2f | %.2f | %.1f | %d | %s |" % (
            name, r["health_p50_ms"], r["health_p99_ms"], r["health_max_ms"],
            r["probes"], "%.1f" % r["logins_per_s"] if r["logins_per_s"]
            is not None else "-"))
    lines += ["", "Target: health p99 under %.0f ms with the pool." %
              TARGET_P99_MS, ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agate", required=True)
    ap.add_argument("--testup", required=True)
    ap.add_argument("--out", help="folder for benchmarks-offload.md")
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    args.agate = os.path.abspath(args.agate)
    args.testup = os.path.abspath(args.testup)
    args.wrk = bench.find_tool("wrk")
    args.nginx = bench.find_tool("nginx")
    if not args.wrk:
        sys.exit("offload-bench: wrk is missing (apt-get install wrk)")
    tmp = tempfile.mkdtemp(prefix="agate-offload-bench-")
    os.chmod(tmp, 0o755)             # nginx's workers run as nobody
    procs = []
    rows = []
    try:
        log("making a cost-%d bcrypt hash" % COST)
        with open(os.path.join(tmp, "htpasswd"), "w") as f:
            f.write("ann:%s\n" % bcrypt_hash("the-password", COST))
        up_port = free_port()
        up = subprocess.Popen([args.testup, "-l", "127.0.0.1:%d" % up_port],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(up)
        wait_port(up_port, up)
        runs = [("agate, no login load", "agate", 1, False),
                ("nginx, no login load", "nginx", 0, False),
                ("agate, 1 helper per worker", "agate", 1, True),
                ("agate, 2 helpers per worker", "agate", 2, True),
                ("agate, jobs on the loop (processes: 0)", "agate", 0,
                 True)]
        if args.nginx:
            runs.append(("nginx auth_basic (on the worker)", "nginx", 0,
                         True))
        for name, kind, processes, login in runs:
            log("measuring: " + name)
            if kind == "agate":
                p, port = start_agate(args, tmp, up_port, processes)
            else:
                p, port = start_nginx(args, tmp, up_port)
            try:
                r = measure(args, port, login)
            finally:
                stop(p)
            log("  health p50 %.2f ms, p99 %.2f ms, %s bcrypt/s" % (
                r["health_p50_ms"], r["health_p99_ms"],
                r["logins_per_s"]))
            rows.append((name, r))
        text = report(rows, args)
        print(text)
        if args.out:
            with open(os.path.join(args.out, "benchmarks-offload.md"),
                      "w") as f:
                f.write(text)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
