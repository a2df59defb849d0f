"""HTTP/2 for agate's clients (libnghttp2): h2 over TLS (ALPN) and h2c with
prior knowledge beside HTTP/1.1 on the same port, as real HTTP/2 clients
see it.

Covered: the listener's `http2` key (ALPN h2 then http/1.1; `false`
offers http/1.1 only and takes a preface for a bad HTTP/1.1 request),
`Upgrade: h2c` served as plain HTTP/1.1, the SETTINGS agate advertises,
every request-level feature over streams (routing, 404/405, agate's JSON
errors, bodies of 5 MB both ways with flow control, max_body_size, rate
limits, auth, CORS, gzip, fan-out, X-Request-Id, X-Forwarded-*, the
health path, one access log line per stream, metrics), 50 concurrent
streams, lower-case response headers without connection-specific ones, a
stalled stream not stalling the others, and the defences:
max_concurrent_streams (REFUSED_STREAM), rapid reset (GOAWAY
ENHANCE_YOUR_CALM, CVE-2023-44487), oversize header lists and
CONTINUATION floods, SETTINGS and PING floods, window stalls, with the
worker's RSS sampled; idle_timeout and header_timeout; reload and stop
(GOAWAY, in-flight streams finish); and no fd leaks after faults.

Clients: python3-h2 (4.x, Debian's package, which only /usr/bin/python3
has) driven over a raw socket (H2Client), and frames written by hand
(RawH2) for what a well-behaved library will not send.  python3-h2 turns
a GOAWAY into a closed connection and refuses the frames a graceful
shutdown still sends, so H2Client splits the input into frames itself,
records GOAWAY frames and feeds h2 the others.  curl (--http2-prior-
knowledge, --http2 over TLS) is the real-client check.
"""

import os
import sys

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    import hpack
except ImportError:
    # `make check` runs configure's python3, which may lack the Debian
    # package; the system python has it.  Never a skip: if neither has
    # it, the import error fails the file.
    if (os.path.realpath(sys.executable) !=
            os.path.realpath("/usr/bin/python3") and
            os.path.exists("/usr/bin/python3") and
            not os.environ.get("AGATE_H2_REEXEC")):
        os.environ["AGATE_H2_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import collections
import gzip
import hashlib
import http.client
import json
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

from harness import (SLOW, AgateTest, alive, fd_targets, free_port, main,
                     pattern_bytes, read_proc, rss_kib, wait_until)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, \
    GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0, 1, 2
REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 7, 8, 11
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, \
    S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = \
    range(1, 7)
# Connection-specific header fields (RFC 9113 8.2.2): never in HTTP/2.
CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection",
                       "transfer-encoding", "upgrade"}


def frame(ftype, flags, sid, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
            (sid & 0x7fffffff).to_bytes(4, "big") + payload)


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack("!HI", k, v) for k, v in pairs))


def split_frames(buf):
    """Complete frames at the head of buf (a bytearray, consumed):
    [(type, flags, stream id, payload, raw bytes)]."""
    out = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + n:
            break
        raw = bytes(buf[:9 + n])
        del buf[:9 + n]
        out.append((raw[3], raw[4], int.from_bytes(raw[5:9], "big") &
                    0x7fffffff, raw[9:], raw))
    return out


def goaway_of(payload):
    return (int.from_bytes(payload[4:8], "big"),
            int.from_bytes(payload[:4], "big") & 0x7fffffff, payload[8:])


def server_socket_inode(server_port, client_port):
    """The inode of agate's side of our connection (from /proc/net/tcp)."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in read_proc(path).splitlines()[1:]:
            f = line.split()
            if (int(f[1].rsplit(":", 1)[1], 16) == server_port and
                    int(f[2].rsplit(":", 1)[1], 16) == client_port and
                    f[9] != "0"):
                return f[9]
    return None


def holder(pids, inode):
    """Which of pids holds socket inode open (None: none does)."""
    for p in pids:
        if "socket:[%s]" % inode in fd_targets(p):
            return p
    return None


class RssSampler(threading.Thread):
    """Samples a worker's RSS every 10 ms until stopped: the peak."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.base = rss_kib(pid)
        self.peak = self.base
        self.halt = threading.Event()
        self.start()

    def run(self):
        while not self.halt.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)

    def stop(self):
        self.halt.set()
        self.join(5)
        self.peak = max(self.peak, rss_kib(self.pid))
        return self.peak - self.base


class Stream:
    """What one stream received."""

    def __init__(self, sid):
        self.sid = sid
        self.headers = []           # (name, value), pseudo-headers first
        self.trailers = []
        self.body = bytearray()
        self.ended = False
        self.reset = None           # RST_STREAM error code
        self.t_end = None

    @property
    def status(self):
        v = self.header(":status")
        return int(v) if v is not None else None

    @property
    def done(self):
        return self.ended or self.reset is not None

    def header(self, name):
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def json(self):
        return json.loads(bytes(self.body))

    def __repr__(self):
        return "<stream %d status %s ended %s reset %s body %r>" % (
            self.sid, self.status, self.ended, self.reset,
            bytes(self.body[:200]))


def tls_ctx(alpn=("h2", "http/1.1")):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class H2Client:
    """An HTTP/2 client connection (python3-h2 over a raw socket).

    Every stream's data is acknowledged as it arrives (WINDOW_UPDATE),
    except on streams put in .stalled; window is our
    SETTINGS_INITIAL_WINDOW_SIZE, conn_window the connection's window.
    """

    def __init__(self, port, tls=False, timeout=10, window=1 << 20,
                 conn_window=1 << 24, alpn=("h2", "http/1.1")):
        raw = socket.create_connection(("127.0.0.1", port),
                                       timeout=timeout * SLOW)
        self.port = port
        self.local_port = raw.getsockname()[1]
        self.alpn = None
        self.sock = raw
        if tls:
            self.sock = tls_ctx(alpn).wrap_socket(raw,
                                                  server_hostname="a.test")
            self.alpn = self.sock.selected_alpn_protocol()
        self.scheme = "https" if tls else "http"
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8",
            validate_inbound_headers=False, normalize_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={
                S_INITIAL_WINDOW_SIZE: window, S_ENABLE_PUSH: 0,
                S_MAX_HEADER_LIST_SIZE: 1 << 20})
        self.streams = {}
        self.pending = {}               # stream id -> body left to send
        self.stalled = set()
        self.unacked = collections.Counter()
        self.inbuf = bytearray()
        self.goaways = []               # (code, last stream id, debug, t)
        self.server_settings = {}
        self.settings_frames = 0
        self.errors = []                # h2 protocol errors: agate's fault
        self.closed = False
        self.t_closed = None
        self.h2.initiate_connection()
        if conn_window > 65535:
            self.h2.increment_flow_control_window(conn_window - 65535)
        self.flush()

    # -- sending --

    def flush(self):
        data = self.h2.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self._closed()

    def send_request(self, method, path, headers=(), body=None,
                     end_stream=True, authority=None):
        """Opens a stream; body (bytes) is sent as the windows allow."""
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", self.scheme),
                (":authority", authority or "127.0.0.1:%d" % self.port),
                (":path", path)] + list(headers)
        self.streams[sid] = Stream(sid)
        self.h2.send_headers(sid, hdrs,
                             end_stream=end_stream and body is None)
        if body is not None:
            self.pending[sid] = [memoryview(body), end_stream]
        self._send_pending()
        self.flush()
        return sid

    def _send_pending(self):
        for sid in list(self.pending):
            mv, end = self.pending[sid]
            try:
                while len(mv):
                    n = min(self.h2.local_flow_control_window(sid),
                            self.h2.max_outbound_frame_size, len(mv))
                    if n <= 0:
                        break
                    self.h2.send_data(sid, mv[:n].tobytes())
                    mv = mv[n:]
                if not len(mv) and end:
                    self.h2.end_stream(sid)
            except h2.exceptions.ProtocolError:
                # The stream was closed (answered early, reset).
                del self.pending[sid]
                continue
            if len(mv):
                self.pending[sid][0] = mv
            else:
                del self.pending[sid]
            # Never let more than a window's worth wait in our buffer.
            self.flush()

    def reset(self, sid, code=CANCEL):
        self.h2.reset_stream(sid, code)
        self.pending.pop(sid, None)
        self.flush()

    def unstall(self, sid):
        self.stalled.discard(sid)
        n = self.unacked.pop(sid, 0)
        if n:
            self.h2.increment_flow_control_window(n, stream_id=sid)
        self.flush()

    # -- receiving --

    def _closed(self):
        if not self.closed:
            self.closed = True
            self.t_closed = time.monotonic()

    def pump(self, timeout=0.1):
        """Sends what may go, then reads once (up to timeout)."""
        self._send_pending()
        self.flush()
        if self.closed:
            return
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except OSError:
            self._closed()
            return
        if not data:
            self._closed()
            return
        self.inbuf += data
        for ftype, flags, sid, payload, raw in split_frames(self.inbuf):
            if ftype == GOAWAY:
                self.goaways.append(goaway_of(payload) +
                                    (time.monotonic(),))
                continue
            if ftype == SETTINGS and not flags & ACK:
                self.settings_frames += 1
            try:
                events = self.h2.receive_data(raw)
            except h2.exceptions.ProtocolError as e:
                self.errors.append(repr(e))
                continue
            for ev in events:
                self._event(ev)
        self.flush()

    def _event(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, (h2.events.ResponseReceived,)):
            st.headers = list(ev.headers)
        elif isinstance(ev, h2.events.TrailersReceived):
            st.trailers = list(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            if st is not None:
                st.body += ev.data
            n = ev.flow_controlled_length
            if ev.stream_id in self.stalled:
                self.unacked[ev.stream_id] += n
                if n:
                    self.h2.increment_flow_control_window(n)
            elif n:
                try:
                    self.h2.acknowledge_received_data(n, ev.stream_id)
                except h2.exceptions.StreamClosedError:
                    self.h2.increment_flow_control_window(n)
        elif isinstance(ev, h2.events.StreamEnded):
            if st is not None:
                st.ended, st.t_end = True, time.monotonic()
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None and not st.ended:
                st.reset, st.t_end = ev.error_code, time.monotonic()
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, ch in ev.changed_settings.items():
                self.server_settings[int(code)] = ch.new_value

    def run_until(self, pred, timeout=10.0):
        """Pumps until pred() is true (returns True), the connection
        closes or timeout passes (returns False)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            if pred():
                return True
            now = time.monotonic()
            if self.closed or now >= deadline:
                return bool(pred())
            self.pump(min(0.2, deadline - now))

    def wait(self, sids, timeout=10.0):
        """Waits until every stream of sids is done; returns them."""
        single = isinstance(sids, int)
        sids = [sids] if single else list(sids)
        self.run_until(lambda: all(self.streams[s].done for s in sids),
                       timeout)
        got = [self.streams[s] for s in sids]
        return got[0] if single else got

    def request(self, method, path, headers=(), body=None, timeout=10.0,
                **kw):
        t0 = time.monotonic()
        s = self.wait(self.send_request(method, path, headers, body, **kw),
                      timeout)
        assert s.done, "no answer to %s %s after %.1fs: %r (connection " \
            "closed %s, GOAWAY %s, h2 errors %s)" % (
                method, path, time.monotonic() - t0, s, self.closed,
                self.goaways, self.errors)
        return s

    def get(self, path, headers=(), **kw):
        return self.request("GET", path, headers, **kw)

    def wait_closed(self, timeout=5.0):
        """Reads (dropping data) until agate closes; True if it did."""
        self.run_until(lambda: False, timeout)
        return self.closed

    def close(self, reset=False):
        if reset:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        self._closed()


class RawH2:
    """Frames written by hand: what h2 (the library) will not send."""

    def __init__(self, port, timeout=5, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout * SLOW)
        s.connect(("127.0.0.1", port))
        self.sock = s
        self.port = port
        self.local_port = s.getsockname()[1]
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.inbuf = bytearray()
        self.block = {}                 # stream id -> header block so far
        self.status = {}                # stream id -> :status
        self.ended = set()
        self.resets = {}                # stream id -> error code
        self.data = collections.Counter()
        self.goaways = []
        self.server_settings = {}
        self.settings_acked = 0
        self.closed = False
        self.stuck = False              # a send timed out: agate not reading
        self.errors = []

    def send(self, data):
        """False once agate has closed (or reset) the connection, or has
        stopped reading (.stuck)."""
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except socket.timeout:
            self.stuck = True
            return False
        except OSError:
            self.closed = True
            return False

    def start(self, settings=((S_ENABLE_PUSH, 0),
                              (S_INITIAL_WINDOW_SIZE, 1 << 20))):
        return self.send(PREFACE + settings_frame(settings) +
                         frame(WINDOW_UPDATE, 0, 0,
                               struct.pack("!I", (1 << 24) - 65535)))

    def head(self, path, method="GET", extra=()):
        """One encoded header block (the encoder's state advances)."""
        return self.enc.encode([(":method", method), (":scheme", "http"),
                                (":authority", "127.0.0.1:%d" % self.port),
                                (":path", path)] + list(extra))

    def request(self, sid, path, method="GET", extra=()):
        return self.send(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                               self.head(path, method, extra)))

    def read(self, timeout=0.2, until=None):
        """Reads and handles frames until until() is true, the connection
        closes, or nothing comes for timeout."""
        deadline = time.monotonic() + 30 * SLOW
        while not self.closed and not (until and until()) and \
                time.monotonic() < deadline:
            self.sock.settimeout(timeout * SLOW)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self.inbuf += data
            for ftype, flags, sid, payload, _ in split_frames(self.inbuf):
                self._frame(ftype, flags, sid, payload)

    def _frame(self, ftype, flags, sid, payload):
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acked += 1
            else:
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack_from("!HI", payload, i)
                    self.server_settings[k] = v
                self.send(settings_frame(ack=True))
        elif ftype == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            self.goaways.append(goaway_of(payload))
        elif ftype == RST_STREAM:
            self.resets[sid] = int.from_bytes(payload[:4], "big")
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                pad = payload[0] if flags & 0x8 else 0
                off = (1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
                payload = payload[off:len(payload) - pad]
            self.block[sid] = self.block.get(sid, b"") + payload
            if flags & END_HEADERS:
                try:
                    hdrs = self.dec.decode(self.block.pop(sid), raw=False)
                except Exception as e:      # noqa: BLE001 - agate's fault
                    self.errors.append(repr(e))
                    hdrs = []
                for k, v in hdrs:
                    if k == ":status" and sid not in self.status:
                        self.status[sid] = int(v)
            if ftype == HEADERS and flags & END_STREAM:
                self.ended.add(sid)
        elif ftype == DATA:
            self.data[sid] += len(payload)
            if payload:
                self.send(frame(WINDOW_UPDATE, 0, 0,
                                struct.pack("!I", len(payload))) +
                          frame(WINDOW_UPDATE, 0, sid,
                                struct.pack("!I", len(payload))))
            if flags & END_STREAM:
                self.ended.add(sid)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def curl(*args, timeout=15):
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout)] +
                          list(args), capture_output=True,
                          timeout=timeout + 5)


def seen_headers(echo):
    """testup's echo of the request headers, names lower-cased."""
    out = collections.defaultdict(list)
    for k, v in echo["headers"]:
        out[k.lower()].append(v)
    return out


class H2Test(AgateTest):
    """A gateway with the usual routes; clients; readings of the worker."""

    def gateway(self, http2=None, listen_http2=None, tls=False,
                tls_http2=None, routes=(), upstream=None, admin=False,
                workers=1, start=True, **server):
        if not hasattr(self, "up"):
            self.up = self.upstream("up")
        ups = {"u": {"servers": [self.up.url], "keepalive": 2}}
        ups.update(upstream or {})
        rts = [{"path": "/api/", "upstream": "u", "strip_prefix": "/api"},
               {"path": "/get/", "upstream": "u", "methods": ["GET"]}]
        rts += list(routes)
        server.setdefault("max_body_size", "16m")
        gw = self.agate(ups, rts, start=False, workers=workers, **server)
        srv = gw.config["server"]
        if http2 is not None:
            srv["http2"] = http2
        if listen_http2 is not None:
            srv["listen"] = [{"address": srv["listen"][0],
                              "http2": listen_http2}]
        if tls:
            from test_tls import make_cert
            make_cert(self.dir, "a", "a.test", ["a.test"])
            self.tls_port = free_port()
            entry = {"address": "127.0.0.1:%d" % self.tls_port,
                     "tls": {"cert": "a.pem", "key": "a.key"}}
            if tls_http2 is not None:
                entry["http2"] = tls_http2
            srv["listen"] = [srv["listen"][0], entry]
        if admin:
            self.admin_port = free_port()
            gw.config["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        gw.write_config(gw.config)
        if start:
            gw.start()
        self.gw = gw
        return gw

    def client(self, **kw):
        c = H2Client(self.gw.port, **kw)
        self.addCleanup(c.close)
        return c

    def raw(self, **kw):
        c = RawH2(self.gw.port, **kw)
        self.addCleanup(c.close)
        return c

    def metrics(self):
        from test_metrics import parse_metrics
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" %
                                    self.admin_port, timeout=10) as r:
            return parse_metrics(r.read().decode())[0]

    def counted(self, name, **labels):
        return sum(v for (n, ls), v in self.metrics().items()
                   if n == name and set(labels.items()) <= set(ls))

    def log_lines(self, rid, n=1, timeout=5):
        return wait_until(lambda: (lambda ls: ls if len(ls) >= n else None)(
            [l for l in self.gw.access_log() if l.get("request_id") == rid]),
            timeout, what="%d access log line(s) for %s" % (n, rid))

    def assert_agate_error(self, s, status):
        """An answer agate made itself: its JSON error body."""
        self.assertEqual(s.status, status, s)
        self.assertTrue(s.ended, s)
        body = s.json()
        self.assertEqual(body["status"], status)
        self.assertEqual(body["request_id"], s.header("x-request-id"))
        self.assertNotIn("server", body)        # not the upstream's
        self.assertTrue(s.header("content-type").startswith(
            "application/json"), s.headers)
        return body

    def assert_usable(self, c, what="the connection"):
        s = c.get("/api/still-usable?size=10")
        self.assertEqual((s.status, bytes(s.body)), (200, b"0123456789"),
                         "%s no longer serves: %r" % (what, s))

    def fds(self, worker):
        t = fd_targets(worker)
        return (sorted(x for x in t if not x.startswith("socket:")),
                sum(1 for x in t if x.startswith("socket:")))


# -- 1. prior knowledge, the same port, settings, headers --------------------

class H2ProxyTest(H2Test):

    def setUp(self):
        super().setUp()
        self.gateway(admin=True)

    def test_unread_bodies_give_the_connection_window_back(self):
        # Bodies of requests agate answers without reading them (404)
        # hold the connection's window until agate says so: 400 of
        # 60 kB are 24 MB, over its 16 MiB window.  The connection must
        # still carry a body after them.
        c = self.client()
        body = b"x" * 60000
        for i in range(400):
            s = c.request("POST", "/nowhere/%d" % i, body=body, timeout=5)
            self.assertEqual(s.status, 404, (i, s))
        s = c.request("POST", "/api/after?echo=body", body=body, timeout=5)
        self.assertEqual((s.status, s.body), (200, body))

    def test_many_large_response_headers_all_arrive(self):
        # 30 headers of 200 bytes (6 kB) and a Set-Cookie after them.
        q = "&".join("header=X-Big-%d:%s" % (i, "v" * 200)
                     for i in range(30)) + "&header=Set-Cookie:sid%3D1"
        s = self.client().get("/api/h?" + q)
        self.assertEqual(s.status, 200)
        for i in range(30):
            self.assertEqual(s.header("x-big-%d" % i), "v" * 200, i)
        self.assertEqual(s.header("set-cookie"), "sid=1")

    def test_prior_knowledge_beside_http1_on_the_same_port(self):
        self.assertEqual(self.gw.get("/api/h1?echo=1").json()["version"],
                         "HTTP/1.1")
        c = self.client()
        s = c.get("/api/users/42?fields=name&x=%20y",
                  headers=[("x-request-id", "h2-first")])
        self.assertEqual(c.errors, [])
        self.assertEqual(s.status, 200, s)
        body = s.json()
        self.assertEqual((body["server"], body["method"], body["path"],
                          body["query"]),
                         ("up", "GET", "/users/42", "fields=name&x=%20y"))
        # What agate advertises: max_concurrent_streams 128 (+1: with
        # libnghttp2 a stream beyond the advertised limit would cost the
        # connection, so agate refuses beyond 128 itself; docs/http2.md),
        # a 64k window (65,535 if it does not say: the default).
        self.assertEqual(c.server_settings.get(S_MAX_CONCURRENT_STREAMS),
                         128 + 1, c.server_settings)
        self.assertIn(c.server_settings.get(S_INITIAL_WINDOW_SIZE, 65535),
                      (65535, 65536), c.server_settings)
        # Both protocols on one connection each, side by side.
        self.assertEqual(self.gw.get("/api/h1again").status, 200)
        self.assertEqual(c.get("/api/again").status, 200)
        line = self.log_lines("h2-first")[0]
        self.assertEqual((line["protocol"], line["method"], line["path"],
                          line["status"], line["route"]),
                         ("HTTP/2", "GET", "/api/users/42", 200, "/api/"))
        self.assertEqual(c.goaways, [])

    def test_curl_prior_knowledge_and_upgrade_h2c_is_http1(self):
        url = "http://127.0.0.1:%d/api/curl?echo=1" % self.gw.port
        r = curl("--http2-prior-knowledge", "-o", "-", "-w",
                 "\n%{http_version} %{http_code}", url)
        self.assertEqual(r.returncode, 0, r.stderr)
        body, _, tail = r.stdout.rpartition(b"\n")
        self.assertEqual(tail, b"2 200")
        self.assertEqual(json.loads(body)["path"], "/curl")
        # curl --http2 on http:// asks for Upgrade: h2c: answered over
        # HTTP/1.1 (no 101, no switch).
        r = curl("--http2", "-o", "-", "-w", "\n%{http_version} "
                 "%{http_code}", url)
        self.assertEqual(r.returncode, 0, r.stderr)
        body, _, tail = r.stdout.rpartition(b"\n")
        self.assertEqual(tail, b"1.1 200")

    def test_upgrade_h2c_is_served_as_plain_http1(self):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        self.addCleanup(s.close)
        s.sendall(b"GET /api/up?echo=1 HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                  b"X-Request-Id: h2c-upgrade\r\n\r\n")
        r = http.client.HTTPResponse(s)
        r.begin()
        echo = json.loads(r.read())
        self.assertEqual((r.status, r.version), (200, 11))
        self.assertIsNone(r.getheader("Upgrade"))
        seen = seen_headers(echo)
        # Not tunnelled: the upstream got a plain request.
        self.assertNotIn("upgrade", seen)
        self.assertNotIn("http2-settings", seen)
        # The connection stays HTTP/1.1.
        s.sendall(b"GET /api/second HTTP/1.1\r\nHost: x\r\n\r\n")
        r = http.client.HTTPResponse(s)
        r.begin()
        r.read()
        self.assertEqual((r.status, r.version), (200, 11))
        line = self.log_lines("h2c-upgrade")[0]
        self.assertEqual((line["protocol"], line["status"]),
                         ("HTTP/1.1", 200))
        self.assertNotIn("tunnel_close", line)

    def test_response_headers_lower_case_without_connection_specific(self):
        c = self.client()
        for path in ("/api/x?size=1000&chunked=1&chunk=100"
                     "&header=X-Kept:yes&header=Keep-Alive:timeout%3D9"
                     "&header=Connection:X-Gone&header=X-Gone:no"
                     "&header=Upgrade:foo&header=Proxy-Connection:close",
                     "/nowhere", "/get/x?size=5"):
            s = c.request("GET" if path != "/get/x?size=5" else "POST",
                          path)
            self.assertTrue(s.ended, s)
            names = [k for k, _ in s.headers]
            self.assertEqual(names[0], ":status", s.headers)
            for k in names:
                self.assertEqual(k, k.lower(), s.headers)
                self.assertNotIn(k, CONNECTION_SPECIFIC, s.headers)
            self.assertRegex(s.header("x-request-id"), r"^[0-9a-f]{32}$")
        s = c.get("/api/x?size=1000&chunked=1&header=X-Kept:yes"
                  "&header=Connection:X-Gone&header=X-Gone:no")
        self.assertEqual(s.header("x-kept"), "yes")
        self.assertIsNone(s.header("x-gone"))
        self.assertEqual(bytes(s.body), pattern_bytes(1000))
        self.assertEqual(c.errors, [])

    def test_request_headers_reach_the_upstream_as_http1(self):
        c = self.client()
        s = c.get("/api/h?echo=1", authority="api.example", headers=[
            ("x-custom", "v1"), ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.9"), ("cookie", "a=1"),
            ("cookie", "b=2"), ("user-agent", "h2-test")])
        self.assertEqual(s.status, 200, s)
        echo = s.json()
        self.assertEqual((echo["version"], echo["method"]),
                         ("HTTP/1.1", "GET"))
        seen = seen_headers(echo)
        self.assertEqual(seen["x-custom"], ["v1"])
        self.assertEqual(seen["user-agent"], ["h2-test"])
        self.assertEqual(seen["host"], ["127.0.0.1:%d" % self.up.port])
        self.assertEqual(seen["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(seen["x-forwarded-proto"], ["http"])
        self.assertEqual(seen["x-forwarded-host"], ["api.example"])
        self.assertEqual(seen["x-request-id"], [s.header("x-request-id")])
        self.assertNotIn("te", seen)
        self.assertFalse([k for k in seen if k.startswith(":")], seen)
        # A client's request id is kept end to end.
        s = c.get("/api/r?echo=1", headers=[("x-request-id", "abc-123")])
        self.assertEqual(s.header("x-request-id"), "abc-123")
        self.assertEqual(seen_headers(s.json())["x-request-id"], ["abc-123"])
        # Cookies split over fields are one header for HTTP/1.1
        # (RFC 9113 8.2.3; nginx joins them so).
        self.assertEqual(seen["cookie"], ["a=1; b=2"])

    def test_routing_errors_health_head_and_204(self):
        c = self.client()
        self.assert_agate_error(c.get("/nowhere"), 404)
        s = c.request("POST", "/get/x", body=b"data")
        self.assert_agate_error(s, 405)
        self.assertEqual(s.header("allow"), "GET, HEAD")
        self.assertEqual(self.up.stats()["requests"], 0)
        s = c.get("/healthz")
        self.assertEqual((s.status, s.json()), (200, {"status": "ok"}))
        s = c.request("HEAD", "/api/x?size=1000")
        self.assertEqual((s.status, s.header("content-length"),
                          bytes(s.body)), (200, "1000", b""))
        s = c.get("/api/x?status=204")
        self.assertEqual((s.status, bytes(s.body)), (204, b""))
        s = c.get("/api/x?status=418")
        self.assertEqual(s.status, 418)
        self.assertEqual(c.errors, [])

    def test_5mb_bodies_both_ways_at_once_on_one_connection(self):
        c = self.client()
        n = 5 * 1000 * 1000
        up1, up2, both = os.urandom(n), os.urandom(3 * 1024 * 1024 + 17), \
            os.urandom(n)
        t0 = time.monotonic()
        sids = [
            c.send_request("POST", "/api/up?echo=1", body=up1,
                           headers=[("content-length", str(n))]),
            # No content-length: the length is where END_STREAM is.
            c.send_request("PUT", "/api/up2?echo=1", body=up2),
            c.send_request("GET", "/api/big?size=%d" % n),
            # The upstream echoes while it reads: both ways at once.
            c.send_request("POST", "/api/both?echo=body", body=both,
                           headers=[("content-length", str(n))]),
        ]
        got = c.wait(sids, timeout=40)
        took = time.monotonic() - t0
        self.assertEqual(c.errors, [])
        for s in got:
            self.assertTrue(s.ended, s)
            self.assertEqual(s.status, 200, s)
        e1, e2 = got[0].json(), got[1].json()
        self.assertEqual((e1["body_len"], e1["body_sha256"]),
                         (n, hashlib.sha256(up1).hexdigest()))
        self.assertEqual((e2["body_len"], e2["body_sha256"]),
                         (len(up2), hashlib.sha256(up2).hexdigest()))
        self.assertEqual(hashlib.sha256(got[2].body).digest(),
                         hashlib.sha256(pattern_bytes(n)).digest())
        self.assertEqual(len(got[3].body), n)
        self.assertTrue(bytes(got[3].body) == both, "echo differs")
        sys.stdout.write("4 streams, 23 MB both ways: %.2fs\n" % took)

    def test_50_concurrent_streams_logged_and_counted(self):
        c = self.client()
        t0 = time.monotonic()
        sids = [c.send_request("GET", "/api/c/%d?delay=100&size=%d"
                               % (i, 100 + i),
                               headers=[("x-request-id", "h2-c-%d" % i)])
                for i in range(50)]
        got = c.wait(sids, timeout=10)
        took = time.monotonic() - t0
        self.assertEqual(c.errors, [])
        for i, s in enumerate(got):
            self.assertEqual((s.status, bytes(s.body)),
                             (200, pattern_bytes(100 + i)), s)
            self.assertEqual(s.header("x-request-id"), "h2-c-%d" % i)
        # One after the other would take 5 s.
        self.assertLess(took, 2.0, "50 streams of 100 ms took %.2fs" % took)
        self.assertEqual(self.up.stats()["requests"], 50)
        for i in range(50):
            lines = self.log_lines("h2-c-%d" % i)
            self.assertEqual(len(lines), 1, lines)
            line = lines[0]
            self.assertEqual((line["protocol"], line["method"], line["path"],
                              line["status"], line["bytes"], line["tries"]),
                             ("HTTP/2", "GET", "/api/c/%d" % i, 200, 100 + i,
                              1), line)
        wait_until(lambda: self.counted("agate_requests_total",
                                        route="/api/", code="200") == 50,
                   what="50 requests in agate_requests_total")

    def test_a_stalled_stream_does_not_stall_the_others(self):
        # Our streams' windows are 65,535; the connection's is large.
        c = self.client(window=65535)
        big = 3 * 1000 * 1000
        a = c.send_request("GET", "/api/stalled?size=%d" % big)
        c.stalled.add(a)
        sa = c.streams[a]
        c.run_until(lambda: len(sa.body) >= 65535, 5)
        self.assertEqual(len(sa.body), 65535, sa)
        c.run_until(lambda: False, 0.3)
        self.assertEqual(len(sa.body), 65535, "agate overran the window")
        # Other streams on the connection go on.
        t0 = time.monotonic()
        post = os.urandom(300000)
        others = [c.send_request("GET", "/api/o1?size=200000"),
                  c.send_request("POST", "/api/o2?echo=1", body=post),
                  c.send_request("GET", "/api/o3?delay=50")]
        got = c.wait(others, timeout=5)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual([s.status for s in got], [200, 200, 200], got)
        self.assertEqual(bytes(got[0].body), pattern_bytes(200000))
        self.assertEqual(got[1].json()["body_sha256"],
                         hashlib.sha256(post).hexdigest())
        self.assertFalse(sa.done)
        # Once read, the stalled one finishes, every byte in order.
        c.unstall(a)
        c.wait(a, timeout=20)
        self.assertEqual(c.errors, [])
        self.assertTrue(sa.ended, sa)
        self.assertEqual(hashlib.sha256(sa.body).digest(),
                         hashlib.sha256(pattern_bytes(big)).digest())


# -- 2. policies and agate's own answers --------------------------------------

class H2PolicyTest(H2Test):

    def setUp(self):
        super().setUp()
        with open(os.path.join(self.dir, "api-keys"), "w") as f:
            f.write(hashlib.sha256(b"k-alice").hexdigest() + " alice\n")
        self.gateway(max_body_size="1k", routes=[
            {"path": "/rl/", "upstream": "u",
             "rate_limit": {"rate": "1/m", "burst": 2}},
            {"path": "/key/", "upstream": "u",
             "auth": {"api_keys": {"file": "api-keys"}}},
            {"path": "/cors/", "upstream": "u", "methods": ["GET", "PUT"],
             "cors": {"origins": ["https://app.example"],
                      "methods": ["GET", "PUT"], "max_age": "10m"}},
            {"path": "/gz/", "upstream": "u", "compress": "gzip"},
            {"path": "/fan", "fanout": {"mode": "all", "timeout": "3s",
                                        "calls": {
                                            "a": {"upstream": "u",
                                                  "path": "/a"},
                                            "b": {"upstream": "u",
                                                  "path": "/b"}}}}])

    def test_body_over_max_body_size_is_413_and_never_forwarded(self):
        c = self.client()
        s = c.request("POST", "/api/x", body=b"x" * 2000,
                      headers=[("content-length", "2000")])
        self.assert_agate_error(s, 413)
        self.assertEqual(self.up.stats()["requests"], 0)
        # No content-length: found out while the DATA frames come.  As
        # with a chunked HTTP/1.1 body, the upstream may have had the
        # head; it never gets the whole request.
        sid = c.send_request("POST", "/api/y", body=b"y" * 4000)
        s = c.wait(sid)
        self.assert_agate_error(s, 413)
        wait_until(lambda: self.up.stats()["aborted"] ==
                   self.up.stats()["requests"], what="the upstream's "
                   "request (if any) cut: %r" % self.up.stats())
        s = c.request("POST", "/api/z?echo=1", body=b"z" * 1024)
        self.assertEqual(s.json()["body_len"], 1024)
        self.assertEqual(c.goaways, [])

    def test_rate_limit_429_and_api_key_401(self):
        c = self.client()
        codes = [c.get("/rl/x").status for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])
        s = c.get("/rl/x")
        self.assert_agate_error(s, 429)
        self.assertGreaterEqual(int(s.header("retry-after")), 1)
        self.assertEqual(s.header("ratelimit-remaining"), "0")
        s = c.get("/key/x")
        self.assert_agate_error(s, 401)
        self.assertIn("ApiKey", s.header("www-authenticate"))
        self.assertEqual(c.get("/key/x", headers=[
            ("x-api-key", "k-alice")]).status, 200)
        self.assertEqual(self.up.stats()["requests"], 3)

    def test_cors_preflight_and_actual_request(self):
        c = self.client()
        s = c.request("OPTIONS", "/cors/x", headers=[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT")])
        self.assertEqual(s.status, 204, s)
        self.assertEqual(s.header("access-control-allow-origin"),
                         "https://app.example")
        self.assertIn("PUT", s.header("access-control-allow-methods"))
        self.assertEqual(s.header("access-control-max-age"), "600")
        s = c.request("OPTIONS", "/cors/x", headers=[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT")])
        self.assertEqual(s.status, 403)
        s = c.get("/cors/x", headers=[("origin", "https://app.example")])
        self.assertEqual(s.header("access-control-allow-origin"),
                         "https://app.example")
        self.assertIn("origin", s.header("vary").lower())
        self.assertEqual(self.up.stats()["requests"], 1)

    def test_gzip_whole_and_streamed(self):
        c = self.client()
        for size in (50000, 300000, 1500000):
            s = c.get("/gz/x?size=%d" % size,
                      headers=[("accept-encoding", "gzip, deflate")])
            self.assertEqual(s.status, 200, s)
            self.assertEqual(s.header("content-encoding"), "gzip")
            self.assertEqual(s.header("vary"), "Accept-Encoding")
            self.assertEqual(gzip.decompress(bytes(s.body)),
                             pattern_bytes(size))
            self.assertLess(len(s.body), size // 3)
        s = c.get("/gz/x?size=5000")
        self.assertIsNone(s.header("content-encoding"))
        self.assertEqual(bytes(s.body), pattern_bytes(5000))
        self.assertEqual(c.errors, [])

    def test_fanout_route(self):
        c = self.client()
        s = c.get("/fan")
        self.assertEqual(s.status, 200, s)
        body = s.json()
        self.assertEqual((body["a"]["path"], body["b"]["path"]), ("/a", "/b"))
        self.assertEqual(s.header("x-fanout-failed"), "0")


# -- 3. TLS and the listener's http2 key -------------------------------------

class H2ListenerTest(H2Test):

    def test_tls_alpn_h2_then_http1_and_forwarded_proto_https(self):
        self.gateway(tls=True)
        c = H2Client(self.tls_port, tls=True)
        self.addCleanup(c.close)
        self.assertEqual(c.alpn, "h2")
        s = c.get("/api/t?echo=1")
        self.assertEqual(s.status, 200, s)
        seen = seen_headers(s.json())
        self.assertEqual(seen["x-forwarded-proto"], ["https"])
        body = os.urandom(1500000)
        got = c.wait([c.send_request("POST", "/api/e?echo=body", body=body),
                      c.send_request("GET", "/api/b?size=2000000")], 20)
        self.assertEqual(bytes(got[0].body), body)
        self.assertEqual(bytes(got[1].body), pattern_bytes(2000000))
        self.assertEqual(c.errors, [])
        # A client offering http/1.1 only gets it.
        raw = socket.create_connection(("127.0.0.1", self.tls_port),
                                       timeout=5)
        t = tls_ctx(("http/1.1",)).wrap_socket(raw)
        self.addCleanup(t.close)
        self.assertEqual(t.selected_alpn_protocol(), "http/1.1")
        t.sendall(b"GET /api/one HTTP/1.1\r\nHost: x\r\n\r\n")
        r = http.client.HTTPResponse(t)
        r.begin()
        self.assertEqual(r.status, 200)
        r = curl("--http2", "-k", "-o", "/dev/null", "-w", "%{http_version}",
                 "https://127.0.0.1:%d/api/curl" % self.tls_port)
        self.assertEqual((r.returncode, r.stdout), (0, b"2"), r.stderr)

    def test_http2_false_offers_http1_only_and_a_preface_is_bad(self):
        self.gateway(tls=True, listen_http2=False, tls_http2=False)
        raw = socket.create_connection(("127.0.0.1", self.tls_port),
                                       timeout=5)
        t = tls_ctx().wrap_socket(raw)
        self.addCleanup(t.close)
        self.assertEqual(t.selected_alpn_protocol(), "http/1.1")
        t.sendall(b"GET /api/one HTTP/1.1\r\nHost: x\r\n\r\n")
        r = http.client.HTTPResponse(t)
        r.begin()
        self.assertEqual(r.status, 200)
        # A client that offers h2 only: no ALPN, HTTP/1.1 still.
        try:
            raw = socket.create_connection(("127.0.0.1", self.tls_port),
                                           timeout=5)
            t = tls_ctx(("h2",)).wrap_socket(raw)
            self.addCleanup(t.close)
            self.assertIsNone(t.selected_alpn_protocol())
        except ssl.SSLError:
            pass                    # refusing the handshake is fine too
        r = curl("--http2", "-k", "-o", "/dev/null", "-w", "%{http_version}",
                 "https://127.0.0.1:%d/api/curl" % self.tls_port)
        self.assertEqual((r.returncode, r.stdout), (0, b"1.1"), r.stderr)
        # The plain listener: a preface is a bad HTTP/1.1 request.
        before = self.up.stats()["requests"]
        got = self.gw.raw(PREFACE + settings_frame())
        self.assertTrue(got == b"" or got.startswith(b"HTTP/1.1 400 "),
                        got[:200])
        self.assertEqual(self.up.stats()["requests"], before)
        self.assertEqual(self.gw.get("/api/h1").status, 200)


# -- 4. limits and defences ---------------------------------------------------

class H2DefenceTest(H2Test):

    def open_many(self, c, n, path, first=1):
        return b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                              c.head(path + "&n=%d" % sid))
                        for sid in range(first, first + 2 * n, 2))

    def test_streams_over_the_limit_in_the_first_flight_are_refused(self):
        self.gateway(http2={"max_concurrent_streams": 8})
        c = self.raw()
        # Preface, SETTINGS and 12 requests in one write, before agate's
        # SETTINGS arrive (a client that starts with many requests).
        c.send(PREFACE + settings_frame([(S_INITIAL_WINDOW_SIZE,
                                          1 << 20)]) +
               self.open_many(c, 12, "/api/f?delay=800"))
        sids = list(range(1, 25, 2))
        c.read(2, until=lambda: all(s in c.ended or s in c.resets
                                    for s in sids))
        self.assertEqual(c.server_settings.get(S_MAX_CONCURRENT_STREAMS),
                         8 + 1)     # the limit + 1: see docs/http2.md
        self.assertEqual([g for g in c.goaways if g[0] != NO_ERROR], [])
        self.assertFalse(c.closed)
        answered = [s for s in sids if c.status.get(s) == 200 and
                    s in c.ended]
        refused = {s: c.resets.get(s) for s in sids if s not in answered}
        self.assertEqual(len(answered), 8, (c.status, c.resets))
        self.assertEqual(set(refused.values()), {REFUSED_STREAM}, refused)
        self.assertEqual(self.up.stats()["requests"], 8)
        c.request(25, "/api/after?x=1")
        c.read(2, until=lambda: 25 in c.ended)
        self.assertEqual(c.status.get(25), 200)

    def test_streams_over_the_acknowledged_limit_are_refused(self):
        self.gateway(http2={"max_concurrent_streams": 8})
        c = self.raw()
        c.start()
        c.read(2, until=lambda: c.settings_acked and c.server_settings)
        self.assertEqual(c.server_settings.get(S_MAX_CONCURRENT_STREAMS),
                         8 + 1)     # the limit + 1: see docs/http2.md
        c.read(0.2)
        c.send(self.open_many(c, 12, "/api/f?delay=800"))
        sids = list(range(1, 25, 2))
        c.read(2, until=lambda: all(s in c.ended or s in c.resets
                                    for s in sids))
        self.assertEqual(c.goaways, [], "GOAWAY instead of REFUSED_STREAM")
        answered = [s for s in sids if c.status.get(s) == 200]
        refused = {s: c.resets.get(s) for s in sids if s not in answered}
        self.assertEqual(len(answered), 8, (c.status, c.resets))
        self.assertEqual(set(refused.values()), {REFUSED_STREAM}, refused)
        c.request(25, "/api/after?x=1")
        c.read(2, until=lambda: 25 in c.ended)
        self.assertEqual(c.status.get(25), 200)

    def test_header_list_over_the_limit_is_431_and_the_connection_lives(self):
        self.gateway()
        c = self.client()
        # 10 KiB of headers: fine.
        small = [("x-small-%d" % i, "s" * 2000) for i in range(5)]
        self.assertEqual(c.get("/api/small", headers=small).status, 200)
        # 36 KB (over the default 32k): split by h2 over HEADERS and
        # CONTINUATION frames of 16 KiB.
        big = [("x-big-%d" % i, "b" * 6000) for i in range(6)]
        s = c.get("/api/big", headers=big)
        self.assertTrue(s.status == 431 or s.reset is not None, s)
        if s.status == 431:
            self.assert_agate_error(s, 431)
        self.assertEqual(c.goaways, [])
        self.assertFalse(c.closed)
        self.assert_usable(c)
        self.assertEqual(self.up.stats()["requests"], 2)
        self.assertEqual(c.errors, [])

    def test_max_header_list_size_is_configurable(self):
        self.gateway(http2={"max_header_list_size": "8k"})
        c = self.client()
        self.assertEqual(c.get("/api/ok", headers=[
            ("x-h", "h" * 5000)]).status, 200)
        s = c.get("/api/over", headers=[("x-h%d" % i, "h" * 3000)
                                        for i in range(4)])
        self.assertTrue(s.status == 431 or s.reset is not None, s)
        self.assert_usable(c)
        self.assertEqual(self.up.stats()["requests"], 2)

    def flood_field(self):
        """One header field of 1 KB, never indexed: the same bytes can be
        sent any number of times."""
        return hpack.Encoder().encode(
            [hpack.NeverIndexedHeaderTuple("x-flood", "f" * 1000)],
            huffman=False)

    def test_header_list_over_the_limit_in_many_continuations(self):
        self.gateway()
        field = self.flood_field()
        # 40 KB of headers in 40 CONTINUATION frames, then the end.
        c = self.raw()
        c.start()
        c.read(1, until=lambda: c.server_settings)
        c.send(frame(HEADERS, END_STREAM, 1, c.head("/api/cont")) +
               b"".join(frame(CONTINUATION, 0, 1, field) for _ in range(40))
               + frame(CONTINUATION, END_HEADERS, 1, b""))
        c.read(2, until=lambda: 1 in c.ended or 1 in c.resets or c.closed)
        c.read(0.3)
        got = "status %s, RST_STREAM %s, GOAWAY %s, closed %s" % (
            c.status.get(1), c.resets.get(1), c.goaways, c.closed)
        self.assertNotEqual(c.status.get(1), 200, got)
        if c.closed:
            self.assertTrue(c.goaways and c.goaways[0][0] != NO_ERROR,
                            "closed without a GOAWAY: " + got)
        else:
            self.assertTrue(c.status.get(1) == 431 or 1 in c.resets, got)
        self.assertEqual(self.up.stats()["requests"], 0)
        self.assert_usable(self.client(), "a new connection")

    def test_continuation_flood_is_cut_with_memory_bounded(self):
        gw = self.gateway()
        worker = gw.workers()[0]
        field = self.flood_field()
        # A HEADERS frame followed by CONTINUATION frames that never end:
        # up to 16 MB of them.
        rss = RssSampler(worker)
        c = self.raw()
        c.start()
        c.read(1, until=lambda: c.server_settings)
        inode = wait_until(lambda: server_socket_inode(gw.port,
                                                       c.local_port),
                           what="agate's side of the connection")
        c.sock.settimeout(2 * SLOW)
        c.send(frame(HEADERS, 0, 1, c.head("/api/flood")))
        batch = frame(CONTINUATION, 0, 1, field) * 256       # 256 KB
        sent = 0
        t0 = time.monotonic()
        while sent < 16 << 20 and time.monotonic() - t0 < 8 * SLOW and \
                c.send(batch):
            sent += len(batch)
        c.send(frame(CONTINUATION, END_HEADERS | END_STREAM, 1, b""))
        c.stuck = False
        c.read(2, until=lambda: c.status.get(1) or 1 in c.resets)

        def taken():
            return (c.status.get(1) == 431 or 1 in c.resets or
                    holder([worker], inode) is None)
        wait_until(taken, 5, what="agate to refuse the header block or "
                   "close the connection (%d KB sent)" % (sent >> 10))
        grown = rss.stop()
        sys.stdout.write("CONTINUATION flood: %d KB sent, worker RSS +%d "
                         "KiB; closed %s, goaway %s, status %s, reset %s\n"
                         % (sent >> 10, grown, c.closed, c.goaways,
                            c.status.get(1), c.resets.get(1)))
        self.assertNotEqual(c.status.get(1), 200)
        self.assertLess(grown, 8 * 1024, "worker RSS grew %d KiB" % grown)
        self.assertTrue(alive(worker))
        self.assertEqual(self.up.stats()["requests"], 0)
        self.assert_usable(self.client(), "a new connection")

    def flood(self, one, n, idle="2s"):
        """Sends n copies of one frame without reading; returns what the
        worker's RSS did and whether agate closed the connection."""
        gw = self.gateway(idle_timeout=idle)
        worker = gw.workers()[0]
        self.assert_usable(self.client(), "a first connection")
        c = self.raw(rcvbuf=4096)
        c.start()
        inode = wait_until(lambda: server_socket_inode(gw.port,
                                                       c.local_port),
                           what="agate's side of the connection")
        self.assertEqual(holder([worker], inode), worker)
        rss = RssSampler(worker)
        c.sock.settimeout(0.5 * SLOW)
        batch = one * 20000
        sent = 0
        t0 = time.monotonic()
        how = "all sent"
        while sent < n and time.monotonic() - t0 < 8 * SLOW:
            try:
                c.sock.sendall(batch)
            except socket.timeout:
                how = "agate stopped reading"
                break
            except OSError as e:
                how = "closed while sending (%s)" % e.__class__.__name__
                break
            sent += 20000
        # agate's side is gone from the worker once it closed it; our
        # side is not read (it would take the ACKs).
        closed = wait_until(lambda: holder([worker], inode) is None or None,
                            timeout=8, what="agate to close the flooding "
                            "connection (%s, %d frames)" % (how, sent))
        grown = rss.stop()
        sys.stdout.write("%d frames of %d bytes in %.2fs (%s), worker RSS "
                         "+%d KiB\n" % (sent, len(one),
                                        time.monotonic() - t0, how, grown))
        self.assertTrue(closed)
        self.assertTrue(alive(worker))
        self.assertLess(grown, 8 * 1024, "worker RSS grew %d KiB" % grown)
        self.assert_usable(self.client(), "a new connection")
        return sent

    def test_settings_flood_is_closed_with_memory_bounded(self):
        self.flood(settings_frame([(S_ENABLE_PUSH, 0)]), 2000000)

    def test_ping_flood_is_closed_with_memory_bounded(self):
        self.flood(frame(PING, 0, 0, b"12345678"), 1500000)

    def test_rapid_reset_gets_goaway_enhance_your_calm(self):
        gw = self.gateway()
        worker = gw.workers()[0]
        self.assert_usable(self.client(), "a first connection")
        time.sleep(0.3)
        base = self.fds(worker)
        # Resetting now and then (20 in a second) is no attack.
        c = self.raw()
        c.start()
        c.read(1, until=lambda: c.server_settings)
        for i in range(20):
            sid = 1 + 2 * i
            c.request(sid, "/api/calm?delay=1000&i=%d" % i)
            c.send(frame(RST_STREAM, 0, sid, struct.pack("!I", CANCEL)))
            c.read(0.05)
        self.assertEqual(c.goaways, [])
        self.assertFalse(c.closed)
        c.request(41, "/api/after-calm?x=1")
        c.read(2, until=lambda: 41 in c.ended)
        self.assertEqual(c.status.get(41), 200)
        c.close()
        # Open and reset as fast as we can: 4000 streams, in batches.
        c = self.raw()
        c.start()
        c.read(1, until=lambda: c.server_settings)
        sid = 1
        t0 = time.monotonic()
        while sid < 8000 and not c.goaways and not c.closed and \
                time.monotonic() - t0 < 5 * SLOW:
            batch = b""
            for _ in range(50):
                batch += frame(HEADERS, END_HEADERS | END_STREAM, sid,
                               c.head("/api/rr?delay=2000")) + \
                    frame(RST_STREAM, 0, sid, struct.pack("!I", CANCEL))
                sid += 2
            if not c.send(batch):
                break
            c.read(0.005)
        took = time.monotonic() - t0
        c.read(3, until=lambda: c.closed)
        sys.stdout.write("rapid reset: %d streams in %.2fs; goaway %s, "
                         "closed %s\n" % (sid // 2, took, c.goaways,
                                          c.closed))
        self.assertTrue(c.goaways, "no GOAWAY after %d resets in %.2fs"
                        % (sid // 2, took))
        self.assertEqual(c.goaways[-1][0], ENHANCE_YOUR_CALM, c.goaways)
        self.assertTrue(c.closed, "GOAWAY but the connection stays open")
        # agate serves on: other connections, the same worker.
        self.assertTrue(alive(worker))
        self.assert_usable(self.client(), "a new connection")
        self.assertEqual(self.gw.get("/api/h1").status, 200)
        wait_until(lambda: self.fds(worker)[0] == base[0] and
                   self.fds(worker)[1] <= base[1] + 2, timeout=5,
                   what="the worker's fds back to %r (now %r)"
                   % (base, self.fds(worker)))


# -- 5. timeouts -----------------------------------------------------------

class H2TimeoutTest(H2Test):

    def setUp(self):
        super().setUp()
        self.gateway(idle_timeout="1s", header_timeout="600ms")

    def test_idle_connection_gets_goaway_then_close(self):
        c = self.client()
        self.assertEqual(c.get("/api/x").status, 200)
        t0 = time.monotonic()
        self.assertTrue(c.wait_closed(4), "still open after 4 s")
        took = c.t_closed - t0
        self.assertTrue(c.goaways, "closed without a GOAWAY")
        self.assertEqual(c.goaways[0][0], NO_ERROR, c.goaways)
        self.assertGreater(took, 0.7)
        self.assertLess(took, 2.5)
        self.assertEqual(c.errors, [])

    def test_an_open_stream_is_not_idle(self):
        c = self.client()
        t0 = time.monotonic()
        s = c.get("/api/slow?delay=1600&size=100")
        self.assertEqual((s.status, bytes(s.body)),
                         (200, pattern_bytes(100)), s)
        self.assertGreater(time.monotonic() - t0, 1.5)
        self.assertEqual(c.goaways, [])
        # A slow upload whose pieces come within idle_timeout, too.
        sid = c.send_request("POST", "/api/up?echo=1", end_stream=False)
        for _ in range(3):
            c.run_until(lambda: False, 0.6)
            c.h2.send_data(sid, b"p" * 100)
            c.flush()
        c.h2.end_stream(sid)
        c.flush()
        s = c.wait(sid)
        self.assertEqual((s.status, s.json()["body_len"]), (200, 300), s)
        self.assertTrue(c.wait_closed(3))

    def test_a_header_block_that_never_ends_is_closed(self):
        # HEADERS without END_HEADERS, and no CONTINUATION ever: the
        # stream exists, its request does not; header_timeout ends it.
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        self.addCleanup(s.close)
        enc = hpack.Encoder()
        block = enc.encode([(":method", "GET"), (":scheme", "http"),
                            (":authority", "x"), (":path", "/api/x")])
        t0 = time.monotonic()
        s.sendall(PREFACE + settings_frame() +
                  frame(HEADERS, END_STREAM, 1, block))
        got = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except socket.timeout:
            self.fail("a never-ending header block: still open after 5 s")
        except ConnectionResetError:
            pass
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertIn(GOAWAY, [f[0] for f in split_frames(bytearray(got))])

    def test_no_preface_or_no_request_is_closed_at_header_timeout(self):
        for what, data in (("nothing", b""), ("half a preface", PREFACE[:10]),
                           ("a preface and SETTINGS, no request",
                            PREFACE + settings_frame())):
            s = socket.create_connection(("127.0.0.1", self.gw.port),
                                         timeout=5)
            self.addCleanup(s.close)
            t0 = time.monotonic()
            if data:
                s.sendall(data)
            got = b""
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
            except socket.timeout:
                self.fail("%s: still open after 5 s" % what)
            except ConnectionResetError:
                pass
            took = time.monotonic() - t0
            self.assertLess(took, 2.0, what)
            self.assertGreater(took, 0.4, what)

    def test_a_client_that_stops_reading_is_closed(self):
        # It takes nothing off the socket: agate's writes stop.
        worker = self.gw.workers()[0]
        c = self.raw(rcvbuf=4096)
        c.start(settings=((S_ENABLE_PUSH, 0),
                          (S_INITIAL_WINDOW_SIZE, (1 << 31) - 1)))
        c.send(frame(WINDOW_UPDATE, 0, 0,
                     struct.pack("!I", (1 << 31) - 1 - (1 << 24))))
        c.request(1, "/api/big?size=40000000")
        inode = wait_until(lambda: server_socket_inode(self.gw.port,
                                                       c.local_port),
                           what="agate's side of the connection")
        t0 = time.monotonic()
        wait_until(lambda: holder([worker], inode) is None, timeout=5,
                   what="agate to close a client that does not read")
        self.assertGreater(time.monotonic() - t0, 0.5)

    def test_a_client_whose_window_stays_shut_is_closed(self):
        # It reads every byte but never opens the stream's window
        # (no WINDOW_UPDATE): the stream cannot move.
        c = self.client(window=65535)
        sid = c.send_request("GET", "/api/big?size=5000000")
        c.stalled.add(sid)
        st = c.streams[sid]
        c.run_until(lambda: len(st.body) >= 65535, 5)
        t0 = time.monotonic()
        self.assertTrue(c.wait_closed(5), "a stalled client kept open")
        took = c.t_closed - t0
        self.assertLess(took, 3.0)
        self.assertGreater(took, 0.5)
        self.assertFalse(st.ended)
        self.assertEqual(len(st.body), 65535)


# -- 6. reload and stop -------------------------------------------------------

class H2ReloadStopTest(H2Test):

    def setUp(self):
        super().setUp()
        self.gateway(drain_timeout="10s")

    def in_flight(self):
        c = self.client()
        self.assertEqual(c.get("/api/warm").status, 200)
        inode = server_socket_inode(self.gw.port, c.local_port)
        owner = holder(self.gw.workers(), inode)
        self.assertIsNotNone(owner)
        sid = c.send_request("GET", "/api/slow?delay=1000&size=300000")
        wait_until(lambda: self.up.stats()["requests"] >= 2,
                   what="the slow request at the upstream")
        return c, sid, owner

    def assert_drained(self, c, sid):
        s = c.wait(sid, timeout=8)
        self.assertEqual(c.errors, [])
        self.assertTrue(c.goaways, "no GOAWAY on the old connection")
        self.assertGreaterEqual(c.goaways[-1][1], sid, c.goaways)
        self.assertEqual([g for g in c.goaways if g[0] != NO_ERROR], [])
        self.assertTrue(s.ended, s)
        self.assertEqual((s.status, bytes(s.body)),
                         (200, pattern_bytes(300000)))
        self.assertLess(c.goaways[0][3], s.t_end,
                        "the GOAWAY came only after the stream")
        self.assertTrue(c.wait_closed(5), "the old connection stays open")

    def test_reload_sends_goaway_and_in_flight_streams_finish(self):
        c, sid, owner = self.in_flight()
        old = set(self.gw.workers())
        self.gw.signal(signal.SIGHUP)
        self.assert_drained(c, sid)
        # New connections go to the new workers.
        n = self.client()
        self.assertEqual(n.get("/api/new").status, 200)
        inode = server_socket_inode(self.gw.port, n.local_port)
        self.assertNotIn(holder(self.gw.workers(), inode), old | {None})
        wait_until(lambda: not alive(owner), what="the old worker to exit")

    def test_term_sends_goaway_lets_streams_finish_and_exits_zero(self):
        c, sid, owner = self.in_flight()
        self.gw.signal(signal.SIGTERM)
        self.assert_drained(c, sid)
        self.assertEqual(self.gw.proc.wait(10), 0)
        self.assertFalse(alive(owner))


# -- 7. faults: no fd leaks ---------------------------------------------------

class H2FaultTest(H2Test):

    def test_vanishing_clients_and_upstream_resets_leak_no_fds(self):
        gw = self.gateway()
        worker = gw.workers()[0]
        self.assert_usable(self.client(), "a first connection")
        self.assertEqual(gw.get("/api/h1").status, 200)
        time.sleep(0.3)
        base = self.fds(worker)
        # 1. Gone (RST) half-way through reading a 20 MB answer.
        c1 = H2Client(gw.port)
        s1 = c1.send_request("GET", "/api/huge?size=20000000")
        c1.run_until(lambda: len(c1.streams[s1].body) > 200000, 5)
        c1.close(reset=True)
        # 2. Gone (FIN) while the upstream takes its time.
        r0 = self.up.stats()["requests"]
        c2 = H2Client(gw.port)
        c2.send_request("GET", "/api/slow?delay=3000",
                        headers=[("x-request-id", "h2-gone")])
        wait_until(lambda: self.up.stats()["requests"] > r0,
                   what="the slow request at the upstream")
        time.sleep(0.1)
        c2.close()
        # 3. Gone half-way through a 5 MB upload.
        c3 = H2Client(gw.port)
        s3 = c3.send_request("POST", "/api/up?echo=1", body=os.urandom(
            5000000), headers=[("content-length", "5000000")])
        c3.run_until(lambda: len(c3.pending.get(s3, [b""])[0]) < 4000000,
                     5)
        c3.close(reset=True)
        # 4. A stream cancelled mid-answer: the connection goes on.
        c4 = self.client()
        s4 = c4.send_request("GET", "/api/huge?size=20000000")
        c4.run_until(lambda: len(c4.streams[s4].body) > 200000, 5)
        c4.reset(s4)
        self.assert_usable(c4, "the connection with a cancelled stream")
        # 5. The upstream closes half-way: that stream is reset, never
        # ended short; the other stream and the connection go on.
        ok = c4.send_request("GET", "/api/ok?delay=300&size=1000")
        cut = c4.send_request("GET", "/api/cut?abort=mid&size=1000000")
        got = c4.wait([ok, cut], 5)
        self.assertEqual((got[0].status, bytes(got[0].body)),
                         (200, pattern_bytes(1000)))
        self.assertIsNotNone(got[1].reset, got[1])
        self.assertFalse(got[1].ended)
        self.assertEqual(c4.errors, [])
        self.assert_usable(c4, "the connection after an upstream cut")
        c4.close()
        wait_until(lambda: self.fds(worker)[0] == base[0] and
                   self.fds(worker)[1] <= base[1] + 2, timeout=5,
                   what="the worker's fds back to %r (now %r)"
                   % (base, self.fds(worker)))
        wait_until(lambda: self.up.stats()["open"] <= 2, timeout=5,
                   what="agate to close its upstream connections")
        self.assertTrue(alive(worker))
        line = self.log_lines("h2-gone")[0]
        self.assertEqual((line["protocol"], line["status"]), ("HTTP/2", 499))


# -- 8. WebSocket over HTTP/2 (RFC 8441) ----------------------------------


def ws_frame(opcode, payload):
    """A client's (masked) WebSocket frame, payload under 126 bytes."""
    mask = os.urandom(4)
    return (bytes([0x80 | opcode, 0x80 | len(payload)]) + mask +
            bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


class H2WebSocketTest(H2Test):
    """An extended CONNECT with :protocol websocket is a WebSocket tunnel
    over one stream: HTTP/1.1 Upgrade to the upstream (testup's echo on
    /ws/), 200 to the client, frames in DATA both ways."""

    def setUp(self):
        super().setUp()
        self.gateway(drain_timeout="1s")

    def connect(self, extra=(("sec-websocket-version", "13"),),
                protocol="websocket"):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        self.addCleanup(s.close)
        c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        c.initiate_connection()
        s.sendall(c.data_to_send())
        self.events = []

        pending = bytearray()
        self.goaways = []

        def pump(until, timeout=5):
            t0 = time.monotonic()
            while not until() and time.monotonic() - t0 < timeout:
                data = s.recv(65536)
                if not data:
                    break
                # python3-h2 ends the connection on a GOAWAY; a drain's
                # GOAWAY lets the stream go on, so it is noted here and
                # not fed to h2 (the server preface comes first, whole).
                pending.extend(data)
                if self.settings_seen:
                    keep = b""
                    for f in split_frames(pending):
                        if f[0] == GOAWAY:
                            self.goaways.append(f[3])
                        else:
                            keep += f[4]
                    data = keep
                else:
                    data = bytes(pending)
                    pending.clear()
                for ev in c.receive_data(data):
                    self.events.append(ev)
                    if isinstance(ev, h2.events.DataReceived):
                        c.acknowledge_received_data(
                            ev.flow_controlled_length, ev.stream_id)
                s.sendall(c.data_to_send())
        self.settings_seen = False
        pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged)
                         for e in self.events))
        self.settings_seen = True
        self.settings = dict(c.remote_settings)
        c.send_headers(1, [(":method", "CONNECT"), (":protocol", protocol),
                           (":scheme", "http"), (":path", "/api/ws/echo"),
                           (":authority", "x")] + list(extra))
        s.sendall(c.data_to_send())
        pump(lambda: any(isinstance(e, (h2.events.ResponseReceived,
                                        h2.events.StreamReset))
                         for e in self.events))
        status = [dict(e.headers).get(":status") for e in self.events
                  if isinstance(e, h2.events.ResponseReceived)]
        return c, s, pump, status[0] if status else None

    def data(self):
        return b"".join(e.data for e in self.events
                        if isinstance(e, h2.events.DataReceived))

    def test_a_websocket_over_a_stream_echoes_and_closes(self):
        c, s, pump, status = self.connect()
        self.assertEqual(self.settings.get(8), 1)   # ENABLE_CONNECT_PROTOCOL
        self.assertEqual(status, "200")
        c.send_data(1, ws_frame(1, b"hello over h2"))
        s.sendall(c.data_to_send())
        pump(lambda: len(self.data()) >= 15)
        self.assertEqual(self.data()[:15], b"\x81\x0dhello over h2")
        # A second message, then a close: echoed, then END_STREAM.
        c.send_data(1, ws_frame(2, b"\x00\x01\x02"))
        c.send_data(1, ws_frame(8, struct.pack("!H", 1000)))
        s.sendall(c.data_to_send())
        pump(lambda: any(isinstance(e, h2.events.StreamEnded)
                         for e in self.events))
        self.assertEqual(self.data()[15:],
                         b"\x82\x03\x00\x01\x02\x88\x02\x03\xe8")
        line = wait_until(lambda: [l for l in self.gw.access_log()
                                   if l.get("protocol") == "websocket"])[0]
        # Frames of 2+13, 2+3 and 2+2 bytes down; 6+13, 6+3, 6+2 up.
        self.assertEqual((line["status"], line["bytes"],
                          line["bytes_received"]), (200, 24, 36))
        self.assertIn(line["tunnel_close"], ("upstream_closed",
                                             "client_closed"))

    def test_other_protocols_and_bad_versions_are_refused(self):
        _, _, _, status = self.connect(protocol="chat")
        self.assertEqual(status, "501")
        _, _, _, status = self.connect(extra=(("sec-websocket-version",
                                               "8"),))
        self.assertEqual(status, "400")
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_stop_sends_1001_over_the_stream(self):
        c, s, pump, status = self.connect()
        self.assertEqual(status, "200")
        self.gw.signal(signal.SIGTERM)
        pump(lambda: b"\x88" in self.data(), timeout=6)
        got = self.data()
        self.assertIn(b"\x88\x0c\x03\xe9going away", got)
        self.assertTrue(self.goaways)       # the drain's, first
        self.assertEqual(self.gw.proc.wait(10), 0)


if __name__ == "__main__":
    main()
