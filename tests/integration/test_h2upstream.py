"""agate's own HTTP/2 upstream client (h2up.c, h2upconn.c) against an
h2c:// server: python3-h2 on plain sockets, scripted per test.

Covered: a request's HEADERS as the server sees them (pseudo-fields,
lower-case names, no connection-specific fields, X-Forwarded-For) and
the answer passed back; many HTTP/1.1 clients' requests multiplexed as
streams on few shared connections; a server that allows one stream at a
time; request bodies of 5 MiB (Content-Length) and chunked, streamed; a
20 MiB answer to a client that stops reading (flow control: the worker
does not buffer it, and other streams on the same connection go on);
response trailers to an HTTP/2 client; REFUSED_STREAM (sent once more,
on another connection); GOAWAY (in-flight streams finish, new ones go
to a new connection); a stream reset before and in the middle of its
answer; a server that is down or closes its connection abruptly, then
no fds left behind once keepalive_timeout has passed; the route timeout
and a client that goes away both resetting the upstream stream (CANCEL).
And what the review of h2up.c found: a reused connection that dies
after the server took a request sends a GET again, never a POST; a
refused gRPC POST is sent again with its whole body; a server that
takes no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0) gets one
connection, not a storm; a connection error of the server's is an
invalid answer, not sent again; a connection whose SETTINGS never come
gives up after connect_timeout, whoever opened it; no RST_STREAM answers
the server's; a fan-out's calls waiting on a one-stream connection all
go in turn (the worker lives); a short deadline fails only its own call.

The server (H2Upstream) runs in this process, one thread per
connection; it records what it saw: its connections, the streams on
each, their request fields and bodies, the resets it received.  It
enforces its own SETTINGS_MAX_CONCURRENT_STREAMS as nghttp2 and
grpc-go servers do (RST_STREAM REFUSED_STREAM beyond it) and notes any
stream beyond it that came after agate acknowledged the setting.
"""

import os
import sys

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    import hyperframe.frame
except ImportError:
    # `make check` runs configure's python3, which may lack Debian's
    # python3-h2; the system python has it.  Never a skip: if neither
    # has it, the import error fails the file.
    if (os.path.realpath(sys.executable) !=
            os.path.realpath("/usr/bin/python3") and
            os.path.exists("/usr/bin/python3") and
            not os.environ.get("AGATE_H2UP_REEXEC")):
        os.environ["AGATE_H2UP_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import hashlib
import http.client
import json
import resource
import select
import socket
import threading
import time
import traceback
import urllib.parse

from harness import (SLOW, VALGRIND, AgateTest, Response, fd_targets,
                     free_port, main, parse_status, pattern_bytes, rss_kib,
                     wait_until)

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0, 1, 2
REFUSED_STREAM, CANCEL = 7, 8
MCS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
# Connection-specific header fields (RFC 9113 8.2.2): never in HTTP/2.
CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection",
                       "transfer-encoding", "upgrade"}
MIB = 1024 * 1024

_BIG = []


def big_pattern(n):
    """pattern_bytes(n) as a memoryview of one shared buffer."""
    if not _BIG or len(_BIG[0]) < n:
        _BIG[:] = [pattern_bytes(max(n, 20 * MIB))]
    return memoryview(_BIG[0])[:n]


class Stream:
    def __init__(self, sid, headers, conn_index):
        self.sid = sid
        self.conn = conn_index
        self.headers = headers
        h = dict(headers)
        self.method = h.get(":method")
        self.full_path = h.get(":path", "")
        u = urllib.parse.urlsplit(self.full_path)
        self.path = u.path
        self.query = dict(urllib.parse.parse_qsl(u.query))
        self.length = 0
        self.sha = hashlib.sha256()
        self.ended = False          # the request is whole
        self.ignored = False        # refused, or above our GOAWAY
        self.steps = None
        self.i = 0
        self.off = 0
        self.wake = None
        self.done = False           # our answer ended (or reset)
        self.record = None
        self.refuse = None          # refused once the request is whole


class H2Upstream:
    """An h2c server on a free loopback port (see the top of the file).

    max_streams: the SETTINGS_MAX_CONCURRENT_STREAMS it advertises and
    enforces; refuse_first: the very first stream it gets (on its first
    connection) is refused; refuse_conns: every stream on these connections (by index)
    is refused; goaway_after: GOAWAY once a connection has answered this
    many streams (last-stream-id: the highest it received, or with
    goaway_last="answered" the stream just answered; streams above it
    are ignored), on every connection or those in goaway_conns, then
    close when the streams up to it are done.  refuse_at="end": those
    refusals come once the request is whole (its body read), not at its
    HEADERS.  settings_delay: seconds each connection waits before its
    SETTINGS; silent_conns: connections (by index) that never send a
    byte (accepted, read, never answered).  Every frame agate sends is
    noted in frames (type, stream, RST_STREAM's or GOAWAY's code).

    What a request path asks for (first segment):
      /echo/...      JSON: method, path, fields, body length and sha256
      /big/...?size=N            N pattern bytes, Content-Length
      /trailers/...?size=N       N bytes, then trailers x-checksum
      /never/...                 no answer at all
      /resetmid/...?size=N&after=M   head, M bytes, RST_STREAM
      /resethead/...             RST_STREAM(INTERNAL_ERROR) at once
      /closemid/...?size=N&after=M   head, M bytes, connection closed
      /closehead/...             connection closed at once
      /trickle/...?size=N&chunk=C&every=MS   C bytes every MS ms
      /protoerr/...  WINDOW_UPDATE of 0 on stream 0 (a connection
                     error: PROTOCOL_ERROR), no answer
    and ?delay=MS first delays the answer; ?closeconn=N closes the
    connection once the request is whole if it came on connection N
    (the server processed it, then died), else answers as the path says.
    """

    def __init__(self, max_streams=100, refuse_first=False, refuse_conns=(),
                 goaway_after=0, goaway_last="max", goaway_conns=None,
                 refuse_at="headers", settings_delay=0.0, silent_conns=()):
        self.max_streams = max_streams
        self.refuse_at = refuse_at
        self.settings_delay = settings_delay
        self.silent_conns = set(silent_conns)
        self.refuse_first = refuse_first
        self.refuse_conns = set(refuse_conns)
        self.goaway_after = goaway_after
        self.goaway_last = goaway_last
        self.goaway_conns = goaway_conns
        self.lock = threading.Lock()
        self.conns = []         # one dict per accepted connection
        self.requests = []      # one dict per stream received
        self.resets = []        # RST_STREAMs received: dicts
        self.refused = []       # streams we refused: dicts
        self.violations = []    # streams beyond the limit after the ACK
        self.errors = []        # exceptions in the server's threads
        self.sent = {}          # full path -> DATA bytes sent
        self.frames = []        # frames agate sent: dicts
        self.stopping = False
        self.threads = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "h2c://127.0.0.1:%d" % self.port
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    # -- what the tests read --

    def seen(self, path_prefix):
        with self.lock:
            return [r for r in self.requests
                    if r["path"].startswith(path_prefix)]

    def resets_of(self, path_prefix):
        with self.lock:
            return [r for r in self.resets
                    if r["path"].startswith(path_prefix)]

    def frames_of(self, conn, sid=None, ftype=None):
        """The frames agate sent on connection conn (index)."""
        with self.lock:
            return [f for f in self.frames if f["conn"] == conn and
                    (sid is None or f["sid"] == sid) and
                    (ftype is None or f["type"] == ftype)]

    def open_conns(self):
        with self.lock:
            return [c for c in self.conns if not c["closed"]]

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        for t in self.threads:
            t.join(3)

    # -- the server --

    def _accept(self):
        while not self.stopping:
            try:
                r, _, _ = select.select([self.sock], [], [], 0.05)
                if not r:
                    continue
                s, _ = self.sock.accept()
            except (OSError, ValueError):
                return
            with self.lock:
                rec = {"index": len(self.conns), "streams": [],
                       "answered": 0, "peak": 0, "acked": False,
                       "closed": False, "goaway_last": None,
                       "client_goaway": None, "t": time.monotonic()}
                self.conns.append(rec)
            t = threading.Thread(target=self._serve, args=(s, rec),
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, sock, rec):
        try:
            self._serve2(sock, rec)
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self.lock:
                rec["closed"] = True
                rec["t_closed"] = time.monotonic()

    def _silent(self, sock, rec):
        # TCP accepted, then not a byte: no SETTINGS, ever.
        with self.lock:
            rec["silent"] = True
        while not self.stopping:
            r, _, _ = select.select([sock], [], [], 0.05)
            if r:
                try:
                    if not sock.recv(65536):
                        return
                except OSError:
                    return

    def _sniff(self, rec, sn, data):
        """Notes the frames in data (agate's bytes, in order)."""
        sn["buf"] += data
        buf = sn["buf"]
        if not sn["preface"]:
            if len(buf) < 24:
                return
            del buf[:24]
            sn["preface"] = True
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                return
            ftype, sid = buf[3], int.from_bytes(buf[5:9], "big") & 0x7fffffff
            code = None
            if ftype == 3 and n >= 4:                   # RST_STREAM
                code = int.from_bytes(buf[9:13], "big")
            elif ftype == 7 and n >= 8:                 # GOAWAY
                code = int.from_bytes(buf[13:17], "big")
            with self.lock:
                self.frames.append({"conn": rec["index"], "type": ftype,
                                    "flags": buf[4], "sid": sid,
                                    "code": code, "t": time.monotonic()})
            del buf[:9 + n]

    def _serve2(self, sock, rec):
        if rec["index"] in self.silent_conns:
            return self._silent(sock, rec)
        if self.settings_delay:
            time.sleep(self.settings_delay)
        sn = {"buf": bytearray(), "preface": False}
        cfg = h2.config.H2Configuration(client_side=False,
                                        header_encoding="utf-8",
                                        validate_inbound_headers=False,
                                        normalize_inbound_headers=False)
        conn = h2.connection.H2Connection(config=cfg)
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={MCS: self.max_streams})
        conn.initiate_connection()
        # The limit is ours to enforce (REFUSED_STREAM), not h2's
        # (a connection error): h2 is told of no limit.
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={MCS: 2 ** 31 - 1})
        streams = {}
        state = {"goaway_at": None, "abort": False, "raw": [],
                 "raw_sent": False}

        def flush():
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            while state["raw"]:
                sock.sendall(state["raw"].pop(0))
            if state["goaway_at"] is not None and not state.get("gsent"):
                f = hyperframe.frame.GoAwayFrame(
                    0, last_stream_id=state["goaway_at"],
                    error_code=NO_ERROR)
                sock.sendall(f.serialize())
                state["gsent"] = True

        flush()
        while not self.stopping:
            now = time.monotonic()
            timeout = 0.05
            for st in streams.values():
                if st.wake is not None:
                    timeout = min(timeout, max(0.0, st.wake - now))
            r, _, _ = select.select([sock], [], [], timeout)
            if r:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self._sniff(rec, sn, data)
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self.errors.append("conn %d: agate broke HTTP/2: %r"
                                       % (rec["index"], e))
                    flush()
                    return
                for ev in events:
                    self._event(conn, rec, streams, state, ev)
            if self._progress(conn, rec, streams, state, flush) == "close":
                flush()
                sock.shutdown(socket.SHUT_RDWR)
                return
            try:
                flush()
            except OSError:
                if state["raw_sent"]:
                    return      # agate closed the connection we broke
                raise
            last = state["goaway_at"]
            if last is not None and not any(
                    not st.done and not st.ignored and st.sid <= last
                    for st in streams.values()):
                # GOAWAY said, its streams answered: close, gracefully.
                sock.shutdown(socket.SHUT_WR)
                end = time.monotonic() + 2
                sock.settimeout(0.1)
                while time.monotonic() < end and not self.stopping:
                    try:
                        if not sock.recv(65536):
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                return

    def _event(self, conn, rec, streams, state, ev):
        if isinstance(ev, h2.events.RequestReceived):
            st = Stream(ev.stream_id, ev.headers, rec["index"])
            streams[st.sid] = st
            st.record = {"conn": rec["index"], "sid": st.sid,
                         "method": st.method, "path": st.full_path,
                         "headers": list(ev.headers), "len": None,
                         "sha256": None, "answered": False,
                         "refused": False}
            with self.lock:
                self.requests.append(st.record)
                rec["streams"].append(st.sid)
            active = sum(1 for s in streams.values()
                         if not s.ignored and not s.done and s is not st)
            why = None
            if state["goaway_at"] is not None and \
                    st.sid > state["goaway_at"]:
                st.ignored = True       # the GOAWAY told agate already
                st.record["ignored"] = True
                return
            if (self.refuse_first and rec["index"] == 0 and
                    len(rec["streams"]) == 1):
                why = "first"
            elif rec["index"] in self.refuse_conns:
                why = "connection"
            elif active >= self.max_streams:
                why = "limit"
                if rec["acked"]:
                    self.violations.append(
                        "conn %d stream %d: %d streams open, limit %d, "
                        "after the SETTINGS ACK" % (rec["index"], st.sid,
                                                    active + 1,
                                                    self.max_streams))
            if why and why != "limit" and self.refuse_at == "end":
                st.refuse = why         # once the request is whole
            elif why:
                self._refuse(conn, rec, st, why)
                return
            with self.lock:
                rec["peak"] = max(rec["peak"], active + 1)
        elif isinstance(ev, h2.events.DataReceived):
            st = streams.get(ev.stream_id)
            if st is not None:
                st.length += len(ev.data)
                st.sha.update(ev.data)
            if ev.flow_controlled_length:
                try:
                    conn.acknowledge_received_data(ev.flow_controlled_length,
                                                   ev.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
        elif isinstance(ev, h2.events.StreamEnded):
            st = streams.get(ev.stream_id)
            if st is None:
                return
            st.ended = True
            st.record["len"] = st.length
            st.record["sha256"] = st.sha.hexdigest()
            if st.refuse:
                self._refuse(conn, rec, st, st.refuse)
            if not st.ignored:
                st.steps = self._plan(st, rec)
        elif isinstance(ev, h2.events.StreamReset):
            st = streams.pop(ev.stream_id, None)
            with self.lock:
                self.resets.append({
                    "conn": rec["index"], "sid": ev.stream_id,
                    "code": int(ev.error_code),
                    "path": st.full_path if st else "",
                    "answered": bool(st and st.done),
                    "t": time.monotonic()})
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            with self.lock:
                rec["acked"] = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            with self.lock:
                rec["client_goaway"] = int(ev.error_code)

    def _refuse(self, conn, rec, st, why):
        st.ignored = True
        st.record["refused"] = True
        conn.reset_stream(st.sid, error_code=REFUSED_STREAM)
        with self.lock:
            self.refused.append({"conn": rec["index"], "sid": st.sid,
                                 "why": why, "path": st.full_path})

    def _plan(self, st, rec):
        q = st.query
        kind = st.path.split("/")[1] if st.path.count("/") >= 1 else ""
        size = int(q.get("size", 0))
        steps = []
        if q.get("closeconn") == str(rec["index"]):
            return [("close",)]
        if int(q.get("delay", 0)):
            steps.append(("sleep", int(q["delay"]) / 1000.0))
        if kind == "echo":
            body = json.dumps({
                "method": st.method, "path": st.full_path,
                "headers": st.headers, "len": st.length,
                "sha256": st.sha.hexdigest(), "conn": rec["index"],
                "sid": st.sid}).encode()
            steps += [("headers", [(":status", "200"),
                                   ("content-type", "application/json"),
                                   ("content-length", str(len(body))),
                                   ("x-upstream-thing", "there")], False),
                      ("data", body, True)]
        elif kind == "big":
            steps += [("headers", [(":status", "200"),
                                   ("content-length", str(size))], False),
                      ("data", big_pattern(size), True)]
        elif kind == "trailers":
            data = big_pattern(size)
            steps += [("headers", [(":status", "200"),
                                   ("content-type", "application/grpc")],
                       False),
                      ("data", data, False),
                      ("trailers", [("x-checksum",
                                     hashlib.sha256(data).hexdigest()),
                                    ("grpc-status", "0")])]
        elif kind == "never":
            steps += [("sleep", 3600)]
        elif kind in ("resetmid", "closemid"):
            steps += [("headers", [(":status", "200"),
                                   ("content-length", str(size))], False),
                      ("data", big_pattern(int(q["after"])), False),
                      ("sleep", 0.1),
                      ("reset",) if kind == "resetmid" else ("close",)]
        elif kind == "resethead":
            steps += [("reset",)]
        elif kind == "closehead":
            steps += [("close",)]
        elif kind == "protoerr":
            # WINDOW_UPDATE, stream 0, increment 0 (RFC 9113 6.9).
            steps += [("raw", b"\x00\x00\x04\x08\x00\x00\x00\x00\x00"
                              b"\x00\x00\x00\x00"), ("sleep", 3600)]
        elif kind == "trickle":
            chunk, every = int(q["chunk"]), int(q["every"]) / 1000.0
            steps.append(("headers", [(":status", "200"),
                                      ("content-length", str(size))], False))
            data = big_pattern(size)
            for off in range(0, size, chunk):
                steps += [("data", data[off:off + chunk],
                           off + chunk >= size), ("sleep", every)]
        else:
            steps += [("headers", [(":status", "404"),
                                   ("content-length", "0")], True)]
        return steps

    def _answered(self, conn, rec, st, streams, state):
        st.done = True
        st.record["answered"] = True
        with self.lock:
            rec["answered"] += 1
        if self.goaway_after and rec["answered"] == self.goaway_after and \
                state["goaway_at"] is None and (
                    self.goaway_conns is None or
                    rec["index"] in self.goaway_conns):
            state["goaway_at"] = st.sid if self.goaway_last == "answered" \
                else max(streams)
            with self.lock:
                rec["goaway_last"] = state["goaway_at"]

    def _progress(self, conn, rec, streams, state, flush):
        now = time.monotonic()
        for st in list(streams.values()):
            if st.ignored or st.done or not st.ended or st.steps is None:
                continue
            while st.i < len(st.steps):
                step = st.steps[st.i]
                what = step[0]
                if what == "sleep":
                    if st.wake is None:
                        st.wake = now + step[1]
                    if now < st.wake:
                        break
                    st.wake = None
                elif what == "headers":
                    conn.send_headers(st.sid, step[1], end_stream=step[2])
                    if step[2]:
                        self._answered(conn, rec, st, streams, state)
                elif what == "data":
                    data, end = step[1], step[2]
                    while st.off < len(data):
                        n = min(conn.local_flow_control_window(st.sid),
                                conn.max_outbound_frame_size,
                                len(data) - st.off)
                        if n <= 0:
                            break
                        last = st.off + n == len(data)
                        conn.send_data(st.sid, bytes(data[st.off:st.off + n]),
                                       end_stream=end and last)
                        st.off += n
                        with self.lock:
                            self.sent[st.full_path] = \
                                self.sent.get(st.full_path, 0) + n
                        if st.off % (256 * 1024) < n:
                            flush()
                    if len(data) == 0 and end:
                        conn.send_data(st.sid, b"", end_stream=True)
                    if st.off < len(data):
                        break           # no window: later
                    st.off = 0
                    if end:
                        self._answered(conn, rec, st, streams, state)
                elif what == "trailers":
                    conn.send_headers(st.sid, step[1], end_stream=True)
                    self._answered(conn, rec, st, streams, state)
                elif what == "reset":
                    conn.reset_stream(st.sid, error_code=INTERNAL_ERROR)
                    st.done = True
                elif what == "close":
                    return "close"
                elif what == "raw":
                    state["raw"].append(step[1])
                    state["raw_sent"] = True
                st.i += 1
        return None


def h2_get(port, path, headers=(), timeout=10):
    """One GET over h2c with prior knowledge (python3-h2): the response
    fields, the body, the trailers and the order the events came in."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                         (":authority", "127.0.0.1:%d" % port),
                         (":path", path)] + list(headers), end_stream=True)
    s.sendall(c.data_to_send())
    head, body, trailers, order = None, bytearray(), None, []
    try:
        while True:
            data = s.recv(65536)
            if not data:
                raise AssertionError("agate closed the connection")
            for ev in c.receive_data(data):
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    head = ev.headers
                    order.append("head")
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length,
                                                sid)
                    if not order or order[-1] != "data":
                        order.append("data")
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = ev.headers
                    order.append("trailers")
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError("stream reset: %r" % ev)
                elif isinstance(ev, h2.events.StreamEnded):
                    order.append("end")
                    return head, bytes(body), trailers, order
            out = c.data_to_send()
            if out:
                s.sendall(out)
    finally:
        s.close()


class H2UpstreamTest(AgateTest):

    def server(self, **kw):
        up = H2Upstream(**kw)
        self.addCleanup(self.check_server, up)
        return up

    def check_server(self, up):
        up.stop()
        self.assertEqual(up.errors, [], "the h2c server's threads failed")

    def gateway(self, up, workers=2, routes=None, **opts):
        u = {"servers": [up.url], "transport": "auto",
             "keepalive_timeout": "1s", "timeout": "10s"}
        u.update(opts)
        return self.agate({"u": u},
                          (routes or []) + [{"path": "/", "upstream": "u"}],
                          workers=workers)

    def assert_error(self, r, status):
        self.assertEqual(r.status, status, r.body)
        body = r.json()
        self.assertEqual(body["status"], status)
        self.assertTrue(body["error"])
        self.assertEqual(body["request_id"], r.header("X-Request-Id"))
        self.assertEqual(r.header("Content-Type"), "application/json")

    def echo(self, r, path):
        self.assertEqual(r.status, 200, r.body[:300])
        e = r.json()
        self.assertEqual(e["path"], path)
        return e

    def parallel(self, n, fn):
        """fn(i) in n threads; their results (an exception fails)."""
        out = [None] * n
        errs = []

        def run(i):
            try:
                out[i] = fn(i)
            except Exception as e:          # noqa: BLE001 - reported
                errs.append("thread %d: %r" % (i, e))
        ts = [threading.Thread(target=run, args=(i,), daemon=True)
              for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30 * SLOW)
        self.assertFalse([t for t in ts if t.is_alive()], "threads hung")
        self.assertEqual(errs, [])
        return out

    def worker_fds(self, gw):
        return {w: sorted(fd_targets(w)) for w in gw.workers()}

    def steady_fds(self, gw):
        """The workers' fds once they stay the same for 0.2 s."""
        def steady():
            a = self.worker_fds(gw)
            time.sleep(0.2)
            return a if a == self.worker_fds(gw) else None
        return wait_until(steady, what="steady worker fds")

    def fanout(self, path, calls, timeout="5s", method=None):
        c = {}
        for name, p in calls.items():
            c[name] = {"upstream": "u", "path": p}
            if method:
                c[name]["method"] = method
        return {"path": path, "fanout": {"mode": "all", "timeout": timeout,
                                         "calls": c}}

    # 1
    def test_request_fields_and_answer(self):
        up = self.server()
        gw = self.gateway(up, workers=1)
        r = gw.get("/echo/a?x=1&y=two", headers={
            "X-Custom-Thing": "hello", "Accept": "text/plain",
            "Connection": "keep-alive, X-Hop", "X-Hop": "gone",
            "Keep-Alive": "timeout=5", "Upgrade": "h2c",
            "Proxy-Connection": "keep-alive", "TE": "gzip"})
        e = self.echo(r, "/echo/a?x=1&y=two")
        self.assertEqual(r.header("x-upstream-thing"), "there")
        self.assertEqual(r.header("Content-Type"), "application/json")
        rid = r.header("X-Request-Id")
        self.assertTrue(rid)
        fields = [tuple(f) for f in e["headers"]]
        names = [n for n, _ in fields]
        d = dict(fields)
        self.assertEqual(d[":method"], "GET")
        self.assertEqual(d[":scheme"], "http")
        self.assertEqual(d[":authority"], "127.0.0.1:%d" % up.port)
        self.assertEqual(d[":path"], "/echo/a?x=1&y=two")
        # Pseudo-fields first (RFC 9113 8.3), each once.
        pseudo = [n for n in names if n.startswith(":")]
        self.assertEqual(sorted(pseudo), sorted(set(pseudo)))
        self.assertEqual(names[:len(pseudo)], pseudo)
        self.assertEqual([n for n in names if n != n.lower()], [])
        self.assertEqual([n for n in names if n in CONNECTION_SPECIFIC],
                         [], fields)
        self.assertNotIn("x-hop", names)        # named by Connection
        self.assertNotIn("te", names)           # only "trailers" may be
        self.assertNotIn("host", names)         # it is :authority
        self.assertEqual(d.get("x-custom-thing"), "hello")
        self.assertEqual(d.get("accept"), "text/plain")
        self.assertEqual(d.get("x-forwarded-for"), "127.0.0.1")
        self.assertEqual(d.get("x-request-id"), rid)
        self.assertEqual(len(up.seen("/echo/")), 1)

    # 2
    def test_many_clients_share_few_connections(self):
        up = self.server()
        gw = self.gateway(up, workers=2)
        self.assertEqual(len(gw.workers()), 2)

        def client(t):
            c = gw.conn(10 * SLOW)
            try:
                for i in range(10):
                    path = "/echo/t%d-%d?delay=20" % (t, i)
                    c.request("GET", path, headers={"X-N": "%d.%d" % (t, i)})
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 200:
                        raise AssertionError("%s: %d %r" % (path, r.status,
                                                            body[:200]))
                    e = json.loads(body)
                    if e["path"] != path or \
                            dict(map(tuple, e["headers"]))["x-n"] != \
                            "%d.%d" % (t, i):
                        raise AssertionError("%s got %s's answer" % (
                            path, e["path"]))
            finally:
                c.close()
        self.parallel(20, client)
        seen = up.seen("/echo/")
        self.assertEqual(len(seen), 200)
        self.assertEqual(len({r["path"] for r in seen}), 200)
        # At most two connections per worker: streams shared them.
        self.assertLessEqual(len(up.conns), 2 * 2, up.conns)
        self.assertGreater(max(c["peak"] for c in up.conns), 1,
                           "no two streams were ever open at once")
        self.assertEqual(up.refused, [])
        # Idle for keepalive_timeout (1s): agate says GOAWAY and closes.
        t_last = time.monotonic()
        wait_until(lambda: not up.open_conns(), timeout=5,
                   what="idle upstream connections to close")
        for rec in up.conns:
            self.assertEqual(rec["client_goaway"], NO_ERROR, rec)
            self.assertGreater(rec["t_closed"] - t_last, 0.5, rec)

    # 3
    def test_server_allows_one_stream_at_a_time(self):
        up = self.server(max_streams=1)
        gw = self.gateway(up, workers=2)
        together = threading.Barrier(10)

        def one(i):
            path = "/echo/one-%d?delay=100" % i
            c = gw.conn(15 * SLOW)
            try:
                c.connect()
                together.wait(10)       # all ten at once
                c.request("GET", path)
                r = c.getresponse()
                return Response(r.status, r.getheaders(), r.read()), path
            finally:
                c.close()
        res = self.parallel(10, one)
        trail = ["conn %d stream %d %s%s" % (
            r["conn"], r["sid"], r["path"],
            " refused" if r["refused"] else
            " answered" if r["answered"] else "") for r in up.requests]
        self.assertEqual(["%s: %d %s" % (p, r.status, r.body[:80])
                          for r, p in res if r.status != 200], [],
                         "the server saw:\n" + "\n".join(trail))
        for r, path in res:
            self.echo(r, path)
        self.assertEqual(up.violations, [])
        answered = [r for r in up.seen("/echo/") if r["answered"]]
        self.assertEqual(sorted(r["path"] for r in answered),
                         sorted("/echo/one-%d?delay=100" % i
                                for i in range(10)))
        self.assertTrue(all(c["peak"] <= 1 for c in up.conns), up.conns)

    # 4
    def test_request_bodies_arrive_whole(self):
        up = self.server()
        gw = self.gateway(up, workers=1)
        body = os.urandom(5 * MIB)
        r = gw.request("POST", "/echo/cl", body=body,
                       headers={"Content-Type": "application/octet-stream"},
                       timeout=30)
        e = self.echo(r, "/echo/cl")
        self.assertEqual((e["len"], e["sha256"]),
                         (len(body), hashlib.sha256(body).hexdigest()))
        d = dict(map(tuple, e["headers"]))
        self.assertEqual(d.get("content-length"), str(len(body)))
        self.assertEqual(d[":method"], "POST")

        # Chunked, arriving in pieces with pauses: it streams.
        pieces = [os.urandom(n) for n in
                  [1] + [65536 + 7] * 20 + [100000, 3]]
        whole = b"".join(pieces)

        def gen():
            for k, p in enumerate(pieces):
                if k % 5 == 0:
                    time.sleep(0.03)
                yield p
        c = gw.conn(30 * SLOW)
        try:
            c.request("POST", "/echo/chunked", body=gen(),
                      headers={"Transfer-Encoding": "chunked"},
                      encode_chunked=True)
            resp = c.getresponse()
            rb = resp.read()
        finally:
            c.close()
        self.assertEqual(resp.status, 200, rb[:300])
        e = json.loads(rb)
        self.assertEqual((e["len"], e["sha256"]),
                         (len(whole), hashlib.sha256(whole).hexdigest()))
        names = [n for n, _ in e["headers"]]
        self.assertNotIn("transfer-encoding", names)

    # 5
    def test_big_answer_to_a_slow_client_is_not_buffered(self):
        up = self.server()
        gw = self.gateway(up, workers=1)
        worker = gw.workers()[0]
        self.echo(gw.get("/echo/warm"), "/echo/warm")
        size = 20 * MIB
        expect = hashlib.sha256(big_pattern(size)).hexdigest()
        base = rss_kib(worker)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(10 * SLOW)
        s.connect(("127.0.0.1", gw.port))
        path = "/big/x?size=%d" % size
        try:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            got = b""
            while b"\r\n\r\n" not in got:
                b = s.recv(4096)
                self.assertTrue(b, "closed before the head")
                got += b
            head, _, rest = got.partition(b"\r\n\r\n")
            self.assertEqual(parse_status(head + b"\r\n"), 200, head)
            self.assertIn(b"content-length: %d" % size, head.lower())
            # Stop reading for 2 s: the worker must not take it all in.
            peak = base
            t_end = time.monotonic() + 2.0
            while time.monotonic() < t_end:
                peak = max(peak, rss_kib(worker))
                time.sleep(0.02)
            sent_stalled = up.sent.get(path, 0)
            # Another stream on the same connection is not stalled.
            t0 = time.monotonic()
            r = gw.get("/echo/during", timeout=5)
            took = time.monotonic() - t0
            self.echo(r, "/echo/during")
            for _ in range(20):
                peak = max(peak, rss_kib(worker))
                time.sleep(0.01)
            # Now read it all.
            h = hashlib.sha256(rest)
            n = len(rest)
            while n < size:
                b = s.recv(262144)
                self.assertTrue(b, "closed after %d of %d bytes" % (n, size))
                h.update(b)
                n += len(b)
        finally:
            s.close()
        self.assertEqual(n, size)
        self.assertEqual(h.hexdigest(), expect)
        grew = (peak - base) / 1024.0
        sys.stdout.write("slow client: worker RSS %d kB -> peak %d kB "
                         "(+%.1f MiB); server had sent %.1f MiB of 20 while "
                         "the client stalled; /echo/during took %.3f s\n" % (
                             base, peak, grew, sent_stalled / MIB, took))
        self.assertLess(grew, 8, "the worker buffered the answer")
        # The server was held back by flow control, not just the worker.
        self.assertLess(sent_stalled, 12 * MIB)
        self.assertLess(took, 1.0 * SLOW)
        during = up.seen("/echo/during")[0]
        big = up.seen("/big/")[0]
        self.assertEqual(during["conn"], big["conn"],
                         "the other stream did not share the connection")

    # 6
    def test_trailers_reach_an_http2_client(self):
        up = self.server()
        gw = self.gateway(up, workers=1)
        for size in (0, 100, 300000):
            head, body, trailers, order = h2_get(
                gw.port, "/trailers/t?size=%d" % size,
                headers=[("content-type", "application/grpc"),
                         ("te", "trailers")])
            self.assertEqual(dict(head)[":status"], "200")
            self.assertEqual(len(body), size)
            self.assertEqual(body, bytes(big_pattern(size)))
            self.assertIsNotNone(trailers, "no trailers (size %d)" % size)
            t = dict(trailers)
            self.assertEqual(t.get("x-checksum"),
                             hashlib.sha256(body).hexdigest())
            self.assertEqual(t.get("grpc-status"), "0")
            self.assertEqual(order[-2:], ["trailers", "end"], order)
            self.assertNotIn("trailers", order[:-2])

    # 7
    def test_refused_stream_is_sent_again(self):
        up = self.server(refuse_first=True)
        gw = self.gateway(up, workers=1)
        r = gw.get("/echo/r1")
        self.echo(r, "/echo/r1")
        seen = up.seen("/echo/r1")
        self.assertEqual(len(seen), 2, seen)
        self.assertTrue(seen[0]["refused"])
        self.assertTrue(seen[1]["answered"])
        self.assertEqual(len(up.refused), 1)
        # Sent again on another connection (h2up.c), as curl does.
        self.assertNotEqual(seen[0]["conn"], seen[1]["conn"], seen)
        # Only the first stream was refused: the next request is sent
        # once.
        self.echo(gw.get("/echo/r2"), "/echo/r2")
        self.assertEqual(len(up.seen("/echo/r2")), 1)

    # 7b
    def test_refused_stream_goes_to_another_connection(self):
        # Every stream on the first connection is refused (a server that
        # sheds load there): the stream is sent once more "on another
        # connection" (h2up.c), where it is answered.
        up = self.server(refuse_conns={0})
        gw = self.gateway(up, workers=1)
        r = gw.get("/echo/other")
        seen = up.seen("/echo/other")
        self.assertEqual([s["conn"] for s in seen][:1], [0], seen)
        self.assertEqual(r.status, 200, (r.body[:300], seen))
        self.assertEqual(len(seen), 2, seen)
        self.assertNotEqual(seen[1]["conn"], seen[0]["conn"], seen)

    # 8
    def test_goaway_moves_new_streams_to_a_new_connection(self):
        up = self.server(goaway_after=3)
        gw = self.gateway(up, workers=1)
        c = gw.conn(10 * SLOW)
        try:
            for i in range(10):
                path = "/echo/g%d" % i
                c.request("GET", path)
                r = c.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, (path, body[:300]))
                self.assertEqual(json.loads(body)["path"], path)
        finally:
            c.close()
        self.assertGreaterEqual(len(up.conns), 2)
        for rec in up.conns:
            self.assertLessEqual(rec["answered"], 3, rec)
        self.assertEqual(len([r for r in up.seen("/echo/g")
                              if r["answered"]]), 10)
        # The connections that said GOAWAY were closed.
        wait_until(lambda: all(rec["closed"] for rec in up.conns
                               if rec["goaway_last"] is not None),
                   timeout=5, what="GOAWAY connections to close")

    # 8b
    def test_goaway_lets_in_flight_streams_finish(self):
        up = self.server(goaway_after=3)
        gw = self.gateway(up, workers=1)
        self.echo(gw.get("/echo/first"), "/echo/first")
        wait_until(lambda: len(up.conns) == 1 and up.conns[0]["acked"],
                   what="the first connection to be set up")

        def one(i):
            # Staggered delays: three end first, the GOAWAY follows
            # while the others are still being answered.
            path = "/echo/f%d?delay=%d" % (i, 150 + 40 * i)
            return gw.get(path, timeout=15), path
        for r, path in self.parallel(8, one):
            self.echo(r, path)
        first = up.conns[0]
        self.assertIsNotNone(first["goaway_last"])
        late = [r for r in up.seen("/echo/f") if r["conn"] == 0 and
                r["answered"] and r["sid"] <= first["goaway_last"]]
        self.assertGreater(first["answered"], 3,
                           "no stream finished after the GOAWAY")
        self.assertTrue(late)
        # The next request opens a new connection.
        self.echo(gw.get("/echo/after"), "/echo/after")
        self.assertNotEqual(up.seen("/echo/after")[0]["conn"], 0)

    # 8c
    def test_streams_above_goaway_last_stream_id_are_sent_again(self):
        # The server answers its second stream, then GOAWAY with that
        # stream as the last one: the streams agate sent after it were
        # never seen; they are sent again on a new connection.
        up = self.server(goaway_after=2, goaway_last="answered",
                         goaway_conns={0})
        gw = self.gateway(up, workers=1)
        self.echo(gw.get("/echo/warm"), "/echo/warm")
        wait_until(lambda: up.conns[0]["acked"], what="SETTINGS ACK")
        res = [None] * 5

        def one(i):
            path = "/echo/a%d?delay=%d" % (i, 100 if i == 0 else 300)
            res[i] = (gw.get(path, timeout=15), path)
        ts = []
        for i in range(5):
            t = threading.Thread(target=one, args=(i,), daemon=True)
            t.start()
            ts.append(t)
            if i == 0:
                wait_until(lambda: up.seen("/echo/a0"), what="a0 sent")
        for t in ts:
            t.join(20 * SLOW)
        for i in range(5):
            self.assertIsNotNone(res[i], "a%d hung" % i)
            self.echo(*res[i])
        first = up.conns[0]
        self.assertEqual(first["goaway_last"],
                         up.seen("/echo/a0")[0]["sid"])
        above = [r for r in up.seen("/echo/a") if r["conn"] == 0 and
                 r["sid"] > first["goaway_last"]]
        self.assertTrue(above, "no stream was above the GOAWAY's last id")
        for r in above:
            again = [x for x in up.seen(r["path"]) if x["answered"]]
            self.assertEqual(len(again), 1, r)
            self.assertNotEqual(again[0]["conn"], 0)

    # 9
    def test_stream_reset_cuts_only_that_answer(self):
        up = self.server()
        gw = self.gateway(up, workers=1)
        self.echo(gw.get("/echo/before"), "/echo/before")
        raw = gw.raw(b"GET /resetmid/x?size=100000&after=30000 HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n", timeout=5 * SLOW)
        self.assertEqual(parse_status(raw), 200, raw[:300])
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertIn(b"content-length: 100000", head.lower())
        self.assertLess(len(body), 100000)
        self.assertGreaterEqual(len(body), 1)
        self.assert_error(gw.get("/resethead/x"), 502)
        self.echo(gw.get("/echo/after"), "/echo/after")
        # Stream errors, not connection errors: one connection all along.
        self.assertEqual(len(up.conns), 1, up.conns)

    # 10
    def test_faults_then_no_fds_left(self):
        up = self.server()
        dead = free_port()
        u = {"servers": [up.url], "transport": "auto",
             "keepalive_timeout": "1s", "timeout": "10s"}
        gw = self.agate({"u": u, "dead": {
            "servers": ["h2c://127.0.0.1:%d" % dead], "transport": "auto",
            "keepalive_timeout": "1s", "connect_timeout": "1s"}},
            [{"path": "/dead/", "upstream": "dead"},
             {"path": "/", "upstream": "u"}], workers=2)
        # The start: once the health check's connections are gone.
        def steady():
            a = self.worker_fds(gw)
            time.sleep(0.2)
            return a if a == self.worker_fds(gw) else None
        base = wait_until(steady, what="steady worker fds")
        self.assertEqual(len(base), 2)
        for _ in range(3):
            self.assert_error(gw.get("/dead/x"), 502)
        ok = cut = 0
        for i in range(12):
            if i % 3 == 1:
                raw = gw.raw(b"GET /closemid/%d?size=200000&after=20000 "
                             b"HTTP/1.1\r\nHost: x\r\n\r\n" % i,
                             timeout=5 * SLOW)
                self.assertEqual(parse_status(raw), 200, raw[:200])
                self.assertLess(len(raw.partition(b"\r\n\r\n")[2]), 200000)
                cut += 1
            elif i % 3 == 2:
                self.assert_error(gw.get("/closehead/%d" % i), 502)
            else:
                self.echo(gw.get("/echo/ok%d" % i), "/echo/ok%d" % i)
                ok += 1
        # Concurrent: a fault on a shared connection, then good ones.
        def one(i):
            path = "/echo/c%d?delay=50" % i
            return gw.get(path, timeout=15), path
        for r, path in self.parallel(10, one):
            self.echo(r, path)
        self.assertEqual((ok, cut), (4, 4))

        def settled():
            now = self.worker_fds(gw)
            return now == base and not up.open_conns()
        try:
            wait_until(settled, timeout=6,
                       what="worker fds back to their start")
        except AssertionError:
            self.assertEqual(self.worker_fds(gw), base)
            raise

    # 11
    def test_route_timeout_is_504_and_resets_the_stream(self):
        up = self.server()
        gw = self.gateway(up, workers=1, routes=[
            {"path": "/never/", "upstream": "u", "timeout": "500ms"}])
        t0 = time.monotonic()
        r = gw.get("/never/x")
        took = time.monotonic() - t0
        self.assert_error(r, 504)
        self.assertGreater(took, 0.4)
        self.assertLess(took, 1.5 * SLOW)
        self.assertEqual(len(up.seen("/never/")), 1)
        resets = wait_until(lambda: up.resets_of("/never/"), timeout=3,
                            what="the server to see the stream reset")
        self.assertEqual(resets[0]["code"], CANCEL, resets)
        self.echo(gw.get("/echo/next"), "/echo/next")

    # 12
    def test_client_gone_resets_the_stream(self):
        up = self.server()
        gw = self.gateway(up, workers=1)
        path = "/trickle/x?size=1000000&chunk=2000&every=50"
        s = socket.create_connection(("127.0.0.1", gw.port),
                                     timeout=5 * SLOW)
        try:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            got = b""
            while b"\r\n\r\n" not in got or len(got) < 3000:
                b = s.recv(4096)
                self.assertTrue(b)
                got += b
            self.assertEqual(parse_status(got), 200)
        finally:
            s.close()
        t0 = time.monotonic()
        resets = wait_until(lambda: up.resets_of("/trickle/"), timeout=3,
                            what="the server to see the stream reset")
        self.assertLess(resets[0]["t"] - t0, 2.0 * SLOW)
        self.assertEqual(resets[0]["code"], CANCEL, resets)
        self.assertLess(up.sent.get(path, 0), 1000000)
        self.echo(gw.get("/echo/next"), "/echo/next")

    # 13
    def test_dead_reused_connection_resends_a_get_never_a_post(self):
        # The server takes the request whole, then its connection dies
        # before any answer (a crash, a restart).  The connection had
        # served a stream before, so it may just have gone stale; but a
        # POST may have run: it is not sent again, the client gets 502.
        # A GET may be repeated: it is sent again on a new connection.
        up = self.server()
        gw = self.gateway(up, workers=1, routes=[self.fanout(
            "/fo", {"c": "/echo/fo?closeconn=2"}, method="POST")])
        body = os.urandom(3000)
        # Each case on connection i: a GET makes it up and used, then
        # the request it dies before answering.  /fo: a fan-out's POST
        # call (with the client's body), on a client's POST.
        cases = [("POST", "/echo/p0?closeconn=0", None, "/echo/p0"),
                 ("POST", "/echo/p1?closeconn=1", body, "/echo/p1"),
                 ("POST", "/fo", b"amount=1", "/echo/fo"),
                 ("GET", "/echo/g3?closeconn=3", None, "/echo/g3")]
        got, answers = [], []
        for i, (method, target, b, path) in enumerate(cases):
            self.echo(gw.get("/echo/w%d" % i), "/echo/w%d" % i)
            self.assertEqual(up.seen("/echo/w%d" % i)[0]["conn"], i)
            r = gw.request(method, target, body=b, headers={
                "Content-Type": "application/octet-stream"})
            answers.append(r)
            got.append((target, r.status, [(x["conn"], x["method"], x["len"])
                                           for x in up.seen(path)]))
        # (what was asked, its status, what the server saw: on which
        # connection, the method, the body's length)
        self.assertEqual(got, [
            ("/echo/p0?closeconn=0", 502, [(0, "POST", 0)]),
            ("/echo/p1?closeconn=1", 502, [(1, "POST", len(body))]),
            ("/fo", 502, [(2, "POST", 8)]),
            ("/echo/g3?closeconn=3", 200, [(3, "GET", 0), (4, "GET", 0)])])
        for r in answers[:3]:
            self.assert_error(r, 502)
        self.echo(answers[3], "/echo/g3?closeconn=3")
        self.assertEqual(len(up.conns), 5)

    # 14
    def test_refused_grpc_post_is_sent_again_with_its_body(self):
        # REFUSED_STREAM says the server did not process the stream: a
        # gRPC call (a POST) is sent again, body and all, whatever
        # retry.methods says.  The server refuses it once it has read
        # the whole body.
        up = self.server(refuse_first=True, refuse_at="end")
        gw = self.gateway(up, workers=1)
        msg = os.urandom(300000)
        body = b"\x00" + len(msg).to_bytes(4, "big") + msg
        sha = hashlib.sha256(body).hexdigest()
        r = gw.request("POST", "/echo/pkg.Svc/Call", body=body, headers={
            "Content-Type": "application/grpc", "TE": "trailers"})
        self.assertIsNone(r.header("grpc-status"), r.headers)
        e = self.echo(r, "/echo/pkg.Svc/Call")
        self.assertEqual((e["len"], e["sha256"]), (len(body), sha))
        seen = up.seen("/echo/pkg.Svc/Call")
        self.assertEqual([(x["refused"], x["answered"]) for x in seen],
                         [(True, False), (False, True)], seen)
        for x in seen:
            self.assertEqual((x["method"], x["len"], x["sha256"]),
                             ("POST", len(body), sha))
        self.assertNotEqual(seen[0]["conn"], seen[1]["conn"])

    # 15
    def test_server_taking_no_streams_gets_one_connection(self):
        # SETTINGS_MAX_CONCURRENT_STREAMS 0 (a server that takes no
        # streams for now): the request waits for room on the one
        # connection until its timeout (1s); no connection storm, no
        # stream sent, nothing left behind.
        up = self.server(max_streams=0)
        gw = self.gateway(up, workers=1, timeout="1s")
        base = self.steady_fds(gw)
        t0 = time.monotonic()
        r = gw.get("/echo/none")
        took = time.monotonic() - t0
        self.assert_error(r, 504)
        self.assertGreater(took, 0.8)
        self.assertLess(took, 2.0 * SLOW)
        self.assertEqual(len(up.conns), 1, "%d connections for one request"
                         % len(up.conns))
        self.assertTrue(up.conns[0]["acked"])
        self.assertEqual(up.requests, [])
        # Idle for keepalive_timeout (1s): closed, the fds as they were.
        wait_until(lambda: not up.open_conns() and
                   self.worker_fds(gw) == base, timeout=5,
                   what="worker fds back to their start")

    # 16
    def test_connection_error_is_an_invalid_answer_not_a_resend(self):
        # WINDOW_UPDATE of 0 on stream 0 answering a request: the server
        # broke HTTP/2 (a connection error).  The client gets 502 saying
        # so, the request is not sent again, and the log says who broke
        # it; on a new connection and on a reused one alike.
        up = self.server()
        gw = self.gateway(up, workers=1)
        r = gw.get("/protoerr/fresh")
        self.assert_error(r, 502)
        self.assertIn("invalid response", r.json()["error"])
        self.echo(gw.get("/echo/warm"), "/echo/warm")
        r = gw.get("/protoerr/reused")
        self.assert_error(r, 502)
        self.assertIn("invalid response", r.json()["error"])
        fresh = up.seen("/protoerr/fresh")
        reused = up.seen("/protoerr/reused")
        self.assertEqual(len(fresh), 1, fresh)
        self.assertEqual(len(reused), 1, reused)
        self.assertEqual(reused[0]["conn"], up.seen("/echo/warm")[0]["conn"])
        # agate told the server why (GOAWAY PROTOCOL_ERROR) and closed.
        for x in fresh + reused:
            wait_until(lambda: up.conns[x["conn"]]["closed"], timeout=3,
                       what="the broken connection to be closed")
            self.assertEqual(
                [f["code"] for f in up.frames_of(x["conn"], ftype=7)],
                [PROTOCOL_ERROR])
        # Each failed call is logged (rate-limited), with the code.
        wait_until(lambda: gw.error_log().count(
            "upstream sent an invalid response (PROTOCOL_ERROR)") >= 2,
            timeout=3, what="the invalid answers in the log")
        self.echo(gw.get("/echo/after"), "/echo/after")
        self.assertEqual(len(up.conns), 3)

    # 17
    def test_server_that_never_says_settings(self):
        # The first connection is accepted but never sends SETTINGS.  A
        # fan-out call with a deadline shorter than connect_timeout
        # opens it; the connection still gives up after connect_timeout
        # (1s): a request waiting on it gets 504 "upstream connect timed
        # out" then, and the next one is served by a new connection.
        up = self.server(silent_conns={0})
        gw = self.gateway(up, workers=1, connect_timeout="1s", timeout="5s",
                          routes=[self.fanout("/fo", {"a": "/echo/fa"},
                                              timeout="300ms")])
        t0 = time.monotonic()
        self.assertEqual(gw.get("/fo").status, 504)
        r = gw.get("/echo/s0")
        took = time.monotonic() - t0
        self.assert_error(r, 504)
        self.assertEqual(r.json()["error"], "upstream connect timed out")
        self.assertGreater(took, 0.8)
        self.assertLess(took, 2.0 * SLOW)
        t1 = time.monotonic()
        self.echo(gw.get("/echo/s1"), "/echo/s1")
        self.assertLess(time.monotonic() - t1, 1.0 * SLOW)
        self.assertEqual(up.seen("/echo/s1")[0]["conn"], 1)
        self.assertTrue(up.conns[0].get("silent"))
        wait_until(lambda: up.conns[0]["closed"], timeout=3,
                   what="the silent connection to be closed")
        self.assertEqual(len(up.conns), 2)

    # 18
    def test_no_rst_stream_answers_the_servers_own(self):
        # RFC 9113 5.4.2: a RST_STREAM is never answered with one.  The
        # server refuses a stream (REFUSED_STREAM), then resets another
        # (INTERNAL_ERROR); agate sends no RST_STREAM on either.
        up = self.server(refuse_first=True)
        gw = self.gateway(up, workers=1)
        self.echo(gw.get("/echo/r"), "/echo/r")
        self.assert_error(gw.get("/resethead/x"), 502)
        self.echo(gw.get("/echo/after"), "/echo/after")
        time.sleep(0.3)
        streams = [up.seen("/echo/r")[0], up.seen("/resethead/")[0]]
        self.assertTrue(streams[0]["refused"])
        for x in streams:       # the frames are seen
            self.assertEqual(len(up.frames_of(x["conn"], x["sid"], 1)), 1)
        # The RST_STREAMs agate sent on those streams (their codes).
        self.assertEqual(
            {x["path"]: [f["code"] for f in
                         up.frames_of(x["conn"], x["sid"], 3)]
             for x in streams},
            {"/echo/r": [], "/resethead/x": []},
            "RST_STREAM answered with RST_STREAM")

    # 19
    def test_fanout_to_a_one_stream_server_on_one_connection(self):
        # Three calls of a fan-out to one server that takes one stream
        # at a time and is slow with its SETTINGS: all three wait on the
        # one connection and go in turn once the SETTINGS come.  The
        # worker is left room for that one connection only (its fd
        # limit), so a call that went looking for another connection
        # fails at once; the other calls live on, and the worker too.
        up = self.server(max_streams=1, settings_delay=0.2)
        gw = self.gateway(up, workers=1, routes=[self.fanout(
            "/fo", {n: "/echo/%s?delay=30" % n for n in "abc"})])
        worker = gw.workers()[0]
        self.steady_fds(gw)     # the health checks' connections gone
        if not VALGRIND:    # valgrind keeps fds of its own at the top
            fds = {int(n) for n in os.listdir("/proc/%d/fd" % worker)}
            free = [n for n in range(max(fds) + 3) if n not in fds]
            # The client's connection and one upstream connection.
            limit = free[1] + 1
            hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)[1]
            resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, hard))
        try:
            r = gw.get("/fo")
        except (http.client.HTTPException, OSError) as e:
            time.sleep(0.3)     # the supervisor's word on its worker
            self.fail("no answer (%r): %s" % (e, [
                ln for ln in gw.error_log().splitlines()
                if "worker 0 " in ln and "supervisor" in ln]))
        self.assertEqual(r.status, 200, r.body[:300])
        body = r.json()
        self.assertEqual(sorted(body), ["a", "b", "c"])
        for n in "abc":
            self.assertEqual(body[n]["path"], "/echo/%s?delay=30" % n)
        self.assertEqual(gw.workers(), [worker])
        self.assertEqual(len(up.conns), 1)
        self.assertEqual(up.violations, [])
        self.assertEqual(up.refused, [])

    # 20
    def test_short_deadline_does_not_fail_its_connection(self):
        # A call with 100 ms left opens the connection; the server takes
        # 300 ms to say SETTINGS.  The short call's 504 is its own: a
        # longer call waiting on the same connection is answered.
        up = self.server(settings_delay=0.3)
        gw = self.gateway(up, workers=1, connect_timeout="2s", routes=[
            {"path": "/echo/short", "upstream": "u", "timeout": "100ms"}])
        res = {}

        def go(path):
            t = time.monotonic()
            r = gw.get(path)
            res[path] = (r, time.monotonic() - t)
        short = threading.Thread(target=go, args=("/echo/short",),
                                 daemon=True)
        short.start()
        time.sleep(0.02)
        go("/echo/long")
        short.join(10 * SLOW)
        r, took = res["/echo/short"]
        self.assert_error(r, 504)
        self.assertEqual(r.json()["error"], "upstream connect timed out")
        self.assertLess(took, 0.6 * SLOW)
        r, took = res["/echo/long"]
        self.echo(r, "/echo/long")
        self.assertLess(took, 1.0 * SLOW)
        self.assertEqual(len(up.conns), 1)


if __name__ == "__main__":
    main()
