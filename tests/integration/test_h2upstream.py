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
import json
import select
import socket
import threading
import time
import traceback
import urllib.parse

from harness import (SLOW, AgateTest, Response, fd_targets, free_port,
                     main, parse_status, pattern_bytes, rss_kib, wait_until)

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


class H2Upstream:
    """An h2c server on a free loopback port (see the top of the file).

    max_streams: the SETTINGS_MAX_CONCURRENT_STREAMS it advertises and
    enforces; refuse_first: the very first stream it gets (on its first
    connection) is refused; refuse_conns: every stream on these connections (by index)
    is refused; goaway_after: GOAWAY once a connection has answered this
    many streams (last-stream-id: the highest it received, or with
    goaway_last="answered" the stream just answered; streams above it
    are ignored), on every connection or those in goaway_conns, then
    close when the streams up to it are done.

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
    and ?delay=MS first delays the answer.
    """

    def __init__(self, max_streams=100, refuse_first=False, refuse_conns=(),
                 goaway_after=0, goaway_last="max", goaway_conns=None):
        self.max_streams = max_streams
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

    def _serve2(self, sock, rec):
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
        state = {"goaway_at": None, "abort": False}

        def flush():
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
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
            flush()
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
            if why:
                st.ignored = True
                st.record["refused"] = True
                conn.reset_stream(st.sid, error_code=REFUSED_STREAM)
                with self.lock:
                    self.refused.append({"conn": rec["index"],
                                         "sid": st.sid, "why": why,
                                         "path": st.full_path})
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

    def _plan(self, st, rec):
        q = st.query
        kind = st.path.split("/")[1] if st.path.count("/") >= 1 else ""
        size = int(q.get("size", 0))
        steps = []
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


if __name__ == "__main__":
    main()
