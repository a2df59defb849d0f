"""WebSocket tunnels (Upgrade): the handshake through the route's
policies, refusals, bytes relayed unchanged both ways, TLS listeners,
tunnel_timeout, reload and stop, max_connections, access log, metrics,
many tunnels with worker memory per tunnel, and faults without fd leaks.

The upstream is a real WebSocket server written with python3-websockets
(10.x, Debian's package, which only /usr/bin/python3 has): this very file
run with --ws-upstream, in a subprocess each test starts and stops by
PID.  It prints one JSON line per event (connect, request, open, close)
so tests can assert what the upstream saw.  Scripted raw-socket
upstreams stand in for servers that misbehave, and raw-socket clients
for byte-exact checks.
"""

import os
import sys

try:
    import websockets
    import websockets.exceptions
except ImportError:
    # `make check` runs configure's python3, which may lack the Debian
    # package; the system python has it.  Never a skip: if neither has
    # it, the import error fails the file.
    if (os.path.realpath(sys.executable) !=
            os.path.realpath("/usr/bin/python3") and
            os.path.exists("/usr/bin/python3") and
            not os.environ.get("AGATE_WS_REEXEC")):
        os.environ["AGATE_WS_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import asyncio
import base64
import hashlib
import itertools
import json
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request

from harness import (SLOW, AgateTest, RawUpstream, alive, fd_targets,
                     free_port, main, parse_status, rss_kib, wait_until)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def accept_for(key):
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def xor_mask(data, key):
    n = len(data)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^
            int.from_bytes(k, "little")).to_bytes(n, "little")


def ws_frame(opcode, payload, fin=True, mask=True):
    """One frame; a client's frames are masked (RFC 6455 5.3)."""
    b0 = (0x80 if fin else 0) | opcode
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + xor_mask(payload, key)


def parse_frame(buf):
    """(fin, opcode, payload, length consumed), or None for a part."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    n, off = b1 & 0x7f, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, off = struct.unpack_from("!H", buf, 2)[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, off = struct.unpack_from("!Q", buf, 2)[0], 10
    key = None
    if b1 & 0x80:
        if len(buf) < off + 4:
            return None
        key, off = bytes(buf[off:off + 4]), off + 4
    if len(buf) < off + n:
        return None
    payload = bytes(buf[off:off + n])
    if key:
        payload = xor_mask(payload, key)
    return bool(b0 & 0x80), b0 & 0x0f, payload, off + n


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def handshake_head(path, port, key=None, extra=(), version="13",
                   method="GET", proto="HTTP/1.1", connection="Upgrade",
                   upgrade="websocket"):
    lines = ["%s %s %s" % (method, path, proto), "Host: 127.0.0.1:%d" % port,
             "Connection: " + connection, "Upgrade: " + upgrade]
    if key is not False:
        lines.append("Sec-WebSocket-Key: %s" % (key or new_key()))
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    lines += ["%s: %s" % h for h in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def header(head, name):
    """A header's value in a raw head (bytes), or None."""
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*(.*?)"
                  rb"[ \t]*\r?$", head)
    return m.group(1).decode() if m else None


class RawWs:
    """A WebSocket client on a plain socket: byte-exact frames."""

    def __init__(self, port, path, extra=(), timeout=5, **head):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout * SLOW)
        self.key = new_key()
        self.sock.sendall(handshake_head(path, port, self.key, extra, **head))
        buf = b""
        while b"\r\n\r\n" not in buf:
            b = self.sock.recv(65536)
            if not b:
                break
            buf += b
        self.head, _, rest = buf.partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        self.status = parse_status(self.head)

    def accept_ok(self):
        return header(self.head, "Sec-WebSocket-Accept") == accept_for(
            self.key)

    def send(self, opcode, payload, fin=True):
        data = ws_frame(opcode, payload, fin)
        self.sock.sendall(data)
        return len(data)

    def recv(self):
        """(fin, opcode, payload), or None when the connection closed."""
        while True:
            f = parse_frame(self.buf)
            if f:
                del self.buf[:f[3]]
                return f[:3]
            try:
                b = self.sock.recv(1 << 18)
            except ConnectionResetError:
                return None
            if not b:
                return None
            self.buf += b

    def at_eof(self, timeout=3):
        """True once the peer closed (all that came before is dropped)."""
        self.sock.settimeout(timeout * SLOW)
        try:
            while True:
                b = self.sock.recv(65536)
                if not b:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self, reset=False):
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
        self.sock.close()


# -- the WebSocket upstream (a subprocess running this file) ----------------

def ws_upstream_main():
    """A websockets server whose behaviour depends on the last path
    segment; prints `listening 127.0.0.1:PORT`, then one JSON event per
    line."""
    import http
    import logging
    from urllib.parse import parse_qs, urlsplit
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ids = itertools.count(1)

    def emit(**ev):
        ev["t"] = time.monotonic()
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()

    class Proto(websockets.WebSocketServerProtocol):
        def connection_made(self, transport):
            emit(ev="connect")
            super().connection_made(transport)

    async def process_request(path, headers):
        emit(ev="request", path=path,
             headers=[[k, v] for k, v in headers.raw_items()])
        if urlsplit(path).path.endswith("/reject403"):
            return (http.HTTPStatus.FORBIDDEN,
                    [("Content-Type", "text/plain"), ("X-Up", "ws")],
                    b"no entry\n")
        return None

    async def echo(ws, q):
        async for m in ws:
            await ws.send(m)

    async def early(ws, q):
        await ws.send("early-1")
        await ws.send("early-2")
        await ws.send(b"early-3")
        await echo(ws, q)

    async def fragments(ws, q):
        await ws.send(["ab", "cd", "ef"])
        await echo(ws, q)

    async def close4001(ws, q):
        await ws.recv()
        await ws.close(4001, "server bye")

    async def drop(ws, q):
        await ws.recv()
        ws.transport.close()        # FIN, no close frame

    async def pingme(ws, q):
        waiter = await ws.ping(b"from-upstream")
        await asyncio.wait_for(waiter, 5)
        await ws.send("got pong")
        await echo(ws, q)

    async def ticks(ws, q):
        interval = float(q.get("interval", ["0.3"])[0])
        for _ in range(1000):
            await ws.send("tick")
            await asyncio.sleep(interval)

    async def sink(ws, q):
        await asyncio.sleep(float(q.get("wait", ["0"])[0]))
        total = 0
        async for m in ws:
            if m == "end":
                await ws.send(str(total))
            else:
                total += len(m)

    async def flood(ws, q):
        chunk = b"\x5a" * (1 << 20)
        for _ in range(int(q["mb"][0])):
            await ws.send(chunk)
        await ws.send("done")
        await echo(ws, q)

    async def hold(ws, q):
        await ws.wait_closed()

    modes = {"echo": echo, "early": early, "fragments": fragments,
             "close4001": close4001, "drop": drop, "pingme": pingme,
             "ticks": ticks, "sink": sink, "flood": flood, "hold": hold}

    async def handler(ws):
        cid = next(ids)
        url = urlsplit(ws.path)
        emit(ev="open", id=cid, path=ws.path,
             headers=[[k, v] for k, v in ws.request_headers.raw_items()],
             subprotocol=ws.subprotocol,
             extensions=[e.name for e in ws.extensions])
        try:
            await modes.get(url.path.rsplit("/", 1)[-1], echo)(
                ws, parse_qs(url.query))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            try:
                await asyncio.wait_for(ws.wait_closed(), 10)
            except asyncio.TimeoutError:
                pass
            emit(ev="close", id=cid, path=ws.path, code=ws.close_code,
                 reason=ws.close_reason)

    async def run():
        tls = None
        if sys.argv[2:3]:       # --ws-upstream CERT KEY: wss
            import ssl
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(sys.argv[2], sys.argv[3])
        server = await websockets.serve(
            handler, "127.0.0.1", 0, create_protocol=Proto,
            process_request=process_request,
            subprotocols=["chat.v1", "chat.v2"], ping_interval=None,
            max_size=None, max_queue=2, close_timeout=2, backlog=4096,
            ssl=tls)
        port = server.sockets[0].getsockname()[1]

        def parent_gone():
            if not os.read(0, 4096):
                os._exit(0)     # the test ended without stopping us
        asyncio.get_running_loop().add_reader(0, parent_gone)
        sys.stdout.write("listening 127.0.0.1:%d\n" % port)
        sys.stdout.flush()
        await asyncio.Future()

    asyncio.run(run())


class WsUpstream:
    """The websockets upstream in a subprocess, with the events it
    printed."""

    def __init__(self, workdir, name="ws", tls=None):
        self.name = name
        self.log = open(os.path.join(workdir, "wsup-%s.log" % name), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--ws-upstream"] +
            list(tls or ()),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True)
        self.events = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.port = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(15) or not self.port:
            self.stop()
            raise RuntimeError("websockets upstream did not start")
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http",
                                           self.port)

    def _read(self):
        for line in self.proc.stdout:
            if self.port is None:
                m = re.match(r"listening 127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    self.ready.set()
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ev)
        self.ready.set()

    def seen(self, kind, path=None):
        """Events of a kind, for paths starting with path."""
        with self.lock:
            return [e for e in self.events if e["ev"] == kind and
                    (path is None or e.get("path", "").startswith(path))]

    def wait(self, kind, path=None, n=1, timeout=5):
        return wait_until(lambda: (lambda l: l if len(l) >= n else None)(
            self.seen(kind, path)), timeout=timeout,
            what="%d %s event(s) for %s at the upstream" % (n, kind, path))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        if text:
            sys.stdout.write("--- websockets upstream %s stderr ---\n%s"
                             % (self.name, text[-3000:]))
        return text


class EarlyUpstream:
    """A raw WebSocket server that writes its 101 and two frames in one
    send, then echoes frames (answering a close with a close)."""

    def __init__(self):
        self.heads = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        for _ in range(100):
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        with c:
            c.settimeout(10)
            try:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    b = c.recv(65536)
                    if not b:
                        return
                    buf += b
                head, _, rest = buf.partition(b"\r\n\r\n")
                self.heads.append(head)
                key = header(head, "Sec-WebSocket-Key") or ""
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\n"
                          b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " +
                          accept_for(key).encode() + b"\r\n\r\n" +
                          ws_frame(TEXT, b"early-1", mask=False) +
                          ws_frame(BINARY, b"early-2", mask=False))
                buf = bytearray(rest)
                for _ in range(10000):
                    f = parse_frame(buf)
                    if not f:
                        b = c.recv(65536)
                        if not b:
                            return
                        buf += b
                        continue
                    del buf[:f[3]]
                    fin, op, payload = f[:3]
                    c.sendall(ws_frame(op, payload, fin, mask=False))
                    if op == CLOSE:
                        return
            except OSError:
                pass

    def close(self):
        self.sock.close()


def run(coro, timeout=20):
    """Runs a test's coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


async def connect(port, path, scheme="ws", **kw):
    for k, v in (("compression", None), ("ping_interval", None),
                 ("max_size", None), ("open_timeout", 5 * SLOW),
                 ("close_timeout", 3 * SLOW)):
        kw.setdefault(k, v)
    return await websockets.connect("%s://127.0.0.1:%d%s" % (scheme, port,
                                                               path), **kw)


async def closed_within(ws, seconds):
    """Waits for the connection to close; the time it took."""
    t0 = time.monotonic()
    await asyncio.wait_for(ws.wait_closed(), seconds * SLOW)
    return time.monotonic() - t0


def ws_headers(key=None, version="13"):
    h = {"Connection": "Upgrade", "Upgrade": "websocket",
         "Sec-WebSocket-Key": key or new_key()}
    if version is not None:
        h["Sec-WebSocket-Version"] = version
    return h


class WsTest(AgateTest):
    """A websockets upstream on /ws/ and an agate in front of it."""

    workers = 1

    def setUp(self):
        super().setUp()
        self.ws = self.ws_upstream()

    def ws_upstream(self, name="ws", tls=None):
        u = WsUpstream(self.dir, name, tls)
        self.addCleanup(u.stop)
        return u

    def gateway(self, routes=None, upstreams=None, **server):
        server.setdefault("workers", self.workers)
        ups = {"ws": {"servers": [self.ws.url]}}
        ups.update(upstreams or {})
        return self.agate(ups, routes or [{"path": "/ws/", "upstream": "ws"}],
                          **server)

    def log_lines(self, gw, request_id, n=1):
        return wait_until(lambda: (lambda l: l if len(l) >= n else None)(
            [l for l in gw.access_log() if l.get("request_id") ==
             request_id]), what="%d access log line(s) for %s"
            % (n, request_id))

    def assert_refused(self, r, status=400):
        self.assertEqual(r.status, status, r.body)
        body = r.json()
        self.assertEqual(body["status"], status)
        self.assertTrue(body["error"])
        self.assertEqual(body["request_id"], r.header("X-Request-Id"))
        self.assertEqual(r.header("Content-Type"), "application/json")


class EchoTest(WsTest):
    """After the 101, bytes pass unchanged both ways."""

    def setUp(self):
        super().setUp()
        self.gw = self.gateway()

    def test_text_binary_big_and_fragmented_messages_echo(self):
        async def t():
            ws = await connect(self.gw.port, "/ws/echo")
            await ws.send("hello, tunnel")
            self.assertEqual(await ws.recv(), "hello, tunnel")
            data = bytes(range(256)) * 3
            await ws.send(data)
            self.assertEqual(await ws.recv(), data)
            big = os.urandom(1 << 20)           # 1 MiB in one frame
            await ws.send(big)
            self.assertEqual(await ws.recv(), big)
            await ws.send(["frag", "men", "ted"])  # three frames
            self.assertEqual(await ws.recv(), "fragmented")
            await ws.send([b"\x00\x01", b"\x02"])
            self.assertEqual(await ws.recv(), b"\x00\x01\x02")
            for i in range(50):                 # many small, in order
                await ws.send("m%d" % i)
            self.assertEqual([await ws.recv() for _ in range(50)],
                             ["m%d" % i for i in range(50)])
            await ws.close()
        run(t())
        opened = self.ws.wait("open", "/ws/echo")[0]
        seen = {k.lower(): v for k, v in opened["headers"]}
        self.assertEqual(seen["upgrade"].lower(), "websocket")
        self.assertIn("upgrade", seen["connection"].lower())
        self.assertEqual(seen["sec-websocket-version"], "13")
        self.assertEqual(self.ws.wait("close", "/ws/echo")[0]["code"], 1000)

    def test_fragments_from_the_upstream_arrive_as_sent(self):
        c = RawWs(self.gw.port, "/ws/fragments")
        self.assertEqual(c.status, 101, c.head)
        self.assertTrue(c.accept_ok(), c.head)
        # websockets ends a fragmented message with an empty final frame.
        got = [c.recv() for _ in range(4)]
        self.assertEqual(got, [(False, TEXT, b"ab"), (False, CONT, b"cd"),
                               (False, CONT, b"ef"), (True, CONT, b"")])
        # And three from the client are one message at the upstream.
        c.send(TEXT, b"x", fin=False)
        c.send(CONT, b"y", fin=False)
        c.send(CONT, b"z")
        self.assertEqual(c.recv(), (True, TEXT, b"xyz"))
        c.send(CLOSE, close_payload(1000))
        self.assertEqual(c.recv(), (True, CLOSE, close_payload(1000)))
        c.close()

    def test_connection_and_upgrade_are_token_lists_any_case(self):
        # Firefox says "Connection: keep-alive, Upgrade"; tokens are
        # case-insensitive (RFC 6455 4.2.1, RFC 9110 7.6.1).
        for conn, upg in (("keep-alive, Upgrade", "websocket"),
                          ("UPGRADE", "WebSocket")):
            c = RawWs(self.gw.port, "/ws/echo?tokens=1", connection=conn,
                      upgrade=upg)
            self.assertEqual(c.status, 101, (conn, upg, c.head))
            self.assertTrue(c.accept_ok(), c.head)
            c.send(TEXT, b"tok")
            self.assertEqual(c.recv(), (True, TEXT, b"tok"))
            c.close()

    def test_ping_and_pong_both_ways(self):
        async def t():
            ws = await connect(self.gw.port, "/ws/pingme")
            # The upstream pinged us; websockets answered; it says so.
            self.assertEqual(await asyncio.wait_for(ws.recv(), 5 * SLOW),
                             "got pong")
            waiter = await ws.ping(b"from-client")
            await asyncio.wait_for(waiter, 3 * SLOW)   # upstream's pong
            await ws.close()
        run(t())

    def test_raw_ping_gets_the_upstreams_pong_payload(self):
        c = RawWs(self.gw.port, "/ws/echo")
        self.assertEqual(c.status, 101, c.head)
        c.send(PING, b"are you there")
        self.assertEqual(c.recv(), (True, PONG, b"are you there"))
        c.close()

    def test_close_codes_pass_both_ways(self):
        async def t():
            ws = await connect(self.gw.port, "/ws/echo?who=client")
            await ws.send("x")
            await ws.recv()
            await ws.close(4000, "bye")
            self.assertEqual(ws.close_code, 4000)   # the upstream's echo
            ws = await connect(self.gw.port, "/ws/close4001")
            await ws.send("please close")
            await closed_within(ws, 3)
            self.assertEqual((ws.close_code, ws.close_reason),
                             (4001, "server bye"))
        run(t())
        ev = self.ws.wait("close", "/ws/echo?who=client")[0]
        self.assertEqual((ev["code"], ev["reason"]), (4000, "bye"))

    def test_early_frames_from_the_upstream_right_after_the_101(self):
        async def t():
            ws = await connect(self.gw.port, "/ws/early")
            got = [await asyncio.wait_for(ws.recv(), 3 * SLOW)
                   for _ in range(3)]
            self.assertEqual(got, ["early-1", "early-2", b"early-3"])
            await ws.send("after")
            self.assertEqual(await ws.recv(), "after")
            await ws.close()
        run(t())

    def test_subprotocol_negotiated_end_to_end(self):
        async def t():
            ws = await connect(self.gw.port, "/ws/echo?sub=1",
                               subprotocols=["chat.v3", "chat.v1"])
            self.assertEqual(ws.subprotocol, "chat.v1")
            await ws.send("s")
            self.assertEqual(await ws.recv(), "s")
            await ws.close()
        run(t())
        ev = self.ws.wait("open", "/ws/echo?sub=1")[0]
        self.assertEqual(ev["subprotocol"], "chat.v1")
        seen = {k.lower(): v for k, v in ev["headers"]}
        self.assertEqual(seen["sec-websocket-protocol"], "chat.v3, chat.v1")

    def test_permessage_deflate_negotiated_end_to_end(self):
        text = "compress me, please; " * 10000     # 210 kB, compressible

        async def t():
            ws = await connect(self.gw.port, "/ws/echo?deflate=1",
                               compression="deflate",
                               extra_headers={"X-Request-Id": "ws-deflate"})
            self.assertEqual([e.name for e in ws.extensions],
                             ["permessage-deflate"])
            await ws.send(text)
            self.assertEqual(await ws.recv(), text)
            await ws.close()
        run(t())
        ev = self.ws.wait("open", "/ws/echo?deflate=1")[0]
        self.assertEqual(ev["extensions"], ["permessage-deflate"])
        seen = {k.lower(): v for k, v in ev["headers"]}
        self.assertTrue(seen["sec-websocket-extensions"].startswith(
            "permessage-deflate"), seen)
        # Compressed bytes went through untouched: far fewer than the text.
        line = self.log_lines(self.gw, "ws-deflate")[0]
        self.assertLess(line["bytes_received"], 20000, line)
        self.assertLess(line["bytes"], 20000, line)
        self.assertGreater(line["bytes_received"], 0, line)

    def test_backpressure_both_ways_keeps_worker_memory_flat(self):
        worker = self.gw.workers()[0]
        base = rss_kib(worker)
        peak = base
        mb = 64
        # To the client: the upstream sends 64 MiB; we do not read for 1 s.
        c = RawWs(self.gw.port, "/ws/flood?mb=%d" % mb, timeout=30)
        self.assertEqual(c.status, 101, c.head)
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            peak = max(peak, rss_kib(worker))
            time.sleep(0.02)
        total = 0
        for _ in range(mb + 10):
            f = c.recv()
            self.assertIsNotNone(f, "closed after %d bytes" % total)
            if f[1] == TEXT:
                self.assertEqual(f[2], b"done")
                break
            self.assertEqual(f[2], b"\x5a" * (1 << 20))
            total += len(f[2])
            peak = max(peak, rss_kib(worker))
        self.assertEqual(total, mb << 20)
        c.close()
        # To the upstream: it does not read for 1 s while we send 64 MiB.
        c = RawWs(self.gw.port, "/ws/sink?wait=1", timeout=30)
        self.assertEqual(c.status, 101, c.head)
        sent = [0]
        chunk = os.urandom(1 << 20)

        def send_all():
            for _ in range(mb):
                c.send(BINARY, chunk)
                sent[0] += len(chunk)
        sender = threading.Thread(target=send_all)
        sender.start()
        t_end = time.monotonic() + 0.8
        while time.monotonic() < t_end:
            peak = max(peak, rss_kib(worker))
            time.sleep(0.02)
        stalled_at = sent[0]
        while sender.is_alive():
            peak = max(peak, rss_kib(worker))
            sender.join(0.02)
        c.send(TEXT, b"end")
        self.assertEqual(c.recv(), (True, TEXT, str(mb << 20).encode()))
        c.close()
        sys.stdout.write("backpressure: %d MiB sent while the upstream "
                         "did not read; worker RSS %d -> peak %d KiB\n"
                         % (stalled_at >> 20, base, peak))
        # The sender was held back while nobody read (flow control), and
        # the worker did not buffer the difference.
        self.assertLess(stalled_at, (mb - 16) << 20,
                        "the client sent %d bytes while the upstream did "
                        "not read" % stalled_at)
        self.assertLess(peak - base, 16 * 1024,
                        "worker grew from %d to %d KiB" % (base, peak))


class HandshakeTest(WsTest):
    """What the handshake passes through, and what it refuses."""

    def test_refusals_are_400_and_never_reach_the_upstream(self):
        gw = self.gateway(routes=[
            {"path": "/ws/", "upstream": "ws"},
            {"path": "/nows/", "upstream": "ws", "websocket": False}])
        cases = [
            ("websocket: false", "GET", "/nows/echo", ws_headers(), None),
            ("no key", "GET", "/ws/echo",
             {k: v for k, v in ws_headers().items()
              if k != "Sec-WebSocket-Key"}, None),
            ("key not base64", "GET", "/ws/echo",
             ws_headers("!!!!not-base64!!!!!!!==="), None),
            ("key of 15 bytes", "GET", "/ws/echo",
             ws_headers(base64.b64encode(b"x" * 15).decode()), None),
            ("key of 17 bytes", "GET", "/ws/echo",
             ws_headers(base64.b64encode(b"x" * 17).decode()), None),
            ("empty key", "GET", "/ws/echo", ws_headers(" "), None),
            ("with a body", "GET", "/ws/echo", ws_headers(), b"hello"),
            ("POST", "POST", "/ws/echo", ws_headers(), None),
        ]
        for what, method, path, headers, body in cases:
            r = gw.request(method, path, body=body, headers=headers)
            self.assert_refused(r, 400)
        for version in ("12", "8", "14", None):
            r = gw.request("GET", "/ws/echo",
                           headers=ws_headers(version=version))
            self.assert_refused(r, 400)
            self.assertEqual(r.header("Sec-WebSocket-Version"), "13",
                             "version %r" % version)
        # A body sent chunked is a body too.
        raw = gw.raw(handshake_head("/ws/echo", gw.port, extra=[
            ("Transfer-Encoding", "chunked")]) + b"5\r\nhello\r\n0\r\n\r\n",
            timeout=2, read_until_close=False)
        self.assertEqual(parse_status(raw), 400, raw)
        time.sleep(0.2)
        self.assertEqual(self.ws.seen("connect"), [])
        # The same route takes a good handshake (the control).
        c = RawWs(gw.port, "/ws/echo")
        self.assertEqual(c.status, 101, c.head)
        c.close()
        self.assertEqual(len(self.ws.wait("connect")), 1)
        # websocket: false leaves plain requests on that route alone.
        r = gw.get("/nows/plain")
        self.assertEqual(r.status, 426)     # websockets: Upgrade Required

    def test_upstream_101_with_a_wrong_accept_is_502(self):
        bad = RawUpstream(b"HTTP/1.1 101 Switching Protocols\r\n"
                          b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: "
                          b"dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        self.addCleanup(bad.close)
        gw = self.gateway(routes=[{"path": "/bad/", "upstream": "bad"}],
                          upstreams={"bad": {"servers": [bad.url]}})
        r = gw.request("GET", "/bad/x", headers=ws_headers())
        self.assert_refused(r, 502)
        self.assertEqual(len(bad.heads), 1)
        head = bad.heads[0]
        self.assertEqual(header(head, "Upgrade").lower(), "websocket")
        self.assertIn("upgrade", header(head, "Connection").lower())
        self.assertIsNotNone(header(head, "Sec-WebSocket-Key"))

    def test_non_101_answers_pass_through(self):
        plain = RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: 9\r\n\r\nplain ok\n")
        self.addCleanup(plain.close)
        gw = self.gateway(routes=[{"path": "/ws/", "upstream": "ws"},
                                  {"path": "/plain/", "upstream": "plain"}],
                          upstreams={"plain": {"servers": [plain.url]}})
        r = gw.request("GET", "/ws/reject403", headers=ws_headers())
        self.assertEqual((r.status, r.body), (403, b"no entry\n"))
        self.assertEqual(r.header("X-Up"), "ws")
        r = gw.request("GET", "/plain/x", headers=ws_headers())
        self.assertEqual((r.status, r.body), (200, b"plain ok\n"))
        self.assertEqual(len(plain.heads), 1)
        # The client can go on with plain requests after the refusal.
        self.assertEqual(gw.get("/ws/plain").status, 426)

    def test_refused_connection_is_one_502_and_no_retry(self):
        dead = "http://127.0.0.1:%d" % free_port()
        answer503 = RawUpstream(b"HTTP/1.1 503 Service Unavailable\r\n"
                                b"Content-Length: 4\r\n\r\nbusy")
        self.addCleanup(answer503.close)
        retry = {"attempts": 3, "backoff": "10ms",
                 "conditions": ["connect_failure", "reset", 502, 503]}
        gw = self.gateway(
            routes=[{"path": "/dead/", "upstream": "dead"},
                    {"path": "/busy/", "upstream": "busy"}],
            upstreams={"dead": {"servers": [dead], "retry": retry},
                       "busy": {"servers": [answer503.url],
                                "retry": retry}})
        t0 = time.monotonic()
        r = gw.request("GET", "/dead/x", headers=dict(
            ws_headers(), **{"X-Request-Id": "ws-dead"}))
        self.assert_refused(r, 502)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(self.log_lines(gw, "ws-dead")[0]["tries"], 1)
        r = gw.request("GET", "/busy/x", headers=ws_headers())
        self.assertEqual((r.status, r.body), (503, b"busy"))
        time.sleep(0.3)
        self.assertEqual(len(answer503.heads), 1)
        self.assertNotIn("retry: upstream", gw.error_log())

    def test_http10_upgrade_is_a_normal_request(self):
        up = self.upstream("t")
        gw = self.gateway(routes=[{"path": "/t/", "upstream": "t"}],
                          upstreams={"t": {"servers": [up.url]}})
        raw = gw.raw(handshake_head("/t/x?echo=1", gw.port, proto="HTTP/1.0"))
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertEqual(parse_status(raw), 200, raw[:300])
        seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertNotIn("upgrade", seen)
        self.assertNotIn("upgrade", seen.get("connection", "").lower())

    def test_handshake_goes_through_auth_and_rate_limit(self):
        with open(os.path.join(self.dir, "api-keys"), "w") as f:
            f.write(hashlib.sha256(b"k-alice").hexdigest() + " alice\n")
        gw = self.gateway(routes=[
            {"path": "/ws/auth/", "upstream": "ws",
             "auth": {"api_keys": {"file": "api-keys", "header": "X-Key"}}},
            {"path": "/ws/rl/", "upstream": "ws",
             "rate_limit": {"rate": "1/m", "burst": 1}}])
        r = gw.request("GET", "/ws/auth/echo", headers=ws_headers())
        self.assertEqual(r.status, 401, r.body)
        r = gw.request("GET", "/ws/auth/echo", headers=dict(
            ws_headers(), **{"X-Key": "k-wrong"}))
        self.assertEqual(r.status, 401, r.body)
        time.sleep(0.2)
        self.assertEqual(self.ws.seen("connect"), [])

        async def t():
            ws = await connect(gw.port, "/ws/auth/echo",
                               extra_headers={"X-Key": "k-alice"})
            await ws.send("authorised")
            self.assertEqual(await ws.recv(), "authorised")
            await ws.close()
            ws = await connect(gw.port, "/ws/rl/echo")
            await ws.send("first")
            self.assertEqual(await ws.recv(), "first")
            await ws.close()
        run(t())
        r = gw.request("GET", "/ws/rl/echo", headers=ws_headers())
        self.assertEqual(r.status, 429, r.body)
        time.sleep(0.2)
        self.assertEqual(len(self.ws.seen("connect")), 2)

    def test_wss_through_a_tls_listener(self):
        from test_tls import client_ctx, make_cert
        make_cert(self.dir, "a", "a.test", ["a.test"])
        tls_port = free_port()
        gw = self.gateway(start=False)
        gw.config["server"]["listen"].append(
            {"address": "127.0.0.1:%d" % tls_port,
             "tls": {"cert": "a.pem", "key": "a.key"}})
        gw.write_config(gw.config)
        gw.start()
        big = os.urandom(1 << 20)

        async def t():
            ws = await connect(tls_port, "/ws/echo?tls=1", scheme="wss",
                               ssl=client_ctx(), server_hostname="a.test")
            await ws.send("over tls")
            self.assertEqual(await ws.recv(), "over tls")
            # Echoes bigger than a TLS record and than a 64 KiB read,
            # one after another.
            for data in (os.urandom(40000), os.urandom(40000), big):
                await ws.send(data)
                try:
                    got = await asyncio.wait_for(ws.recv(), 5 * SLOW)
                except asyncio.TimeoutError:
                    self.fail("over TLS, the echo of a %d-byte message did "
                              "not come back within 5 s" % len(data))
                self.assertEqual(got, data)
            await ws.close(4000, "bye")
        run(t())
        ev = self.ws.wait("close", "/ws/echo?tls=1")[0]
        self.assertEqual((ev["code"], ev["reason"]), (4000, "bye"))
        seen = {k.lower(): v for k, v in
                self.ws.wait("open", "/ws/echo?tls=1")[0]["headers"]}
        self.assertEqual(seen.get("x-forwarded-proto"), "https")


class TlsUpstreamTest(WsTest):
    """https:// servers: agate speaks TLS to them itself for the handshake
    and the tunnel, verified as the upstream's tls: says."""

    def setUp(self):
        super().setUp()
        from test_tls import make_cert
        # The certificate names the address agate dials, and localhost.
        crt, key = os.path.join(self.dir, "up.pem"), os.path.join(
            self.dir, "up.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", crt, "-days", "2", "-subj",
                        "/CN=up.test", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        make_cert(self.dir, "other", "other.test", ["other.test"])
        self.wss = self.ws_upstream("wss", tls=(crt, key))

    def test_tunnel_to_an_https_server_verified_by_its_ca(self):
        gw = self.gateway(
            routes=[{"path": "/ws/", "upstream": "wss"}],
            upstreams={"wss": {"servers": [self.wss.url],
                               "tls": {"ca": "up.pem", "verify": True}}})
        big = os.urandom(300000)

        async def t():
            ws = await connect(gw.port, "/ws/echo?up=tls",
                               subprotocols=["chat.v2"])
            self.assertEqual(ws.subprotocol, "chat.v2")
            for data in ("over tls upstream", os.urandom(70000), big):
                await ws.send(data)
                got = await asyncio.wait_for(ws.recv(), 5 * SLOW)
                self.assertEqual(got, data)
            await ws.close(4000, "bye")
        run(t())
        ev = self.wss.wait("close", "/ws/echo?up=tls")[0]
        self.assertEqual((ev["code"], ev["reason"]), (4000, "bye"))
        line = [l for l in wait_until(lambda: [
            l for l in gw.access_log() if l.get("status") == 101])][0]
        self.assertEqual(line["upstream"], self.wss.url)
        self.assertEqual(line["protocol"], "websocket")

    def test_an_unverified_server_certificate_is_a_502(self):
        # The server's certificate is not signed by the CA agate trusts.
        gw = self.gateway(
            routes=[{"path": "/ws/", "upstream": "wss"}],
            upstreams={"wss": {"servers": [self.wss.url],
                               "tls": {"ca": "other.pem", "verify": True}}})
        c = RawWs(gw.port, "/ws/echo?up=bad-ca")
        self.addCleanup(c.close)
        self.assertEqual(c.status, 502, c.head)
        self.assertEqual(self.wss.seen("open", "/ws/echo?up=bad-ca"), [])
        wait_until(lambda: "certificate verify failed" in gw.error_log()
                   or "self-signed certificate" in gw.error_log() or
                   "unable to get local issuer" in gw.error_log(),
                   what="the verification failure in agate's log")


class EarlyFramesTest(WsTest):

    def test_frames_in_the_same_segment_as_the_101(self):
        early = EarlyUpstream()
        self.addCleanup(early.close)
        gw = self.gateway(routes=[{"path": "/e/", "upstream": "e"}],
                          upstreams={"e": {"servers": [early.url]}})

        async def t():
            ws = await connect(gw.port, "/e/x")
            got = [await asyncio.wait_for(ws.recv(), 3 * SLOW)
                   for _ in range(2)]
            self.assertEqual(got, ["early-1", b"early-2"])
            await ws.send("echo me")
            self.assertEqual(await ws.recv(), "echo me")
            await ws.close(4000, "bye")
            self.assertEqual(ws.close_code, 4000)
        run(t())


class TunnelTimeoutTest(WsTest):

    def test_idle_tunnel_closed_busy_ones_kept(self):
        gw = self.gateway(tunnel_timeout="1s")

        async def t():
            idle = await connect(gw.port, "/ws/hold?idle=1", extra_headers={
                "X-Request-Id": "ws-idle"})
            echo = await connect(gw.port, "/ws/echo?busy=1")
            ticks = await connect(gw.port, "/ws/ticks?interval=0.3")
            sink = await connect(gw.port, "/ws/sink?quiet=1")
            idle_closed = asyncio.ensure_future(closed_within(idle, 5))
            end = time.monotonic() + 2.4
            n = 0
            while time.monotonic() < end:
                await echo.send("ping %d" % n)
                self.assertEqual(await asyncio.wait_for(echo.recv(), 2),
                                 "ping %d" % n)
                await sink.send("data %d" % n)
                n += 1
                await asyncio.sleep(0.3)
            # Traffic both ways, or each way alone, kept three tunnels
            # open past twice the timeout.
            for ws in (echo, ticks, sink):
                self.assertTrue(ws.open, ws.path)
            await echo.send("still")
            self.assertEqual(await asyncio.wait_for(echo.recv(), 2), "still")
            await sink.send("end")
            self.assertEqual(await asyncio.wait_for(sink.recv(), 2),
                             str(sum(len("data %d" % i) for i in range(n))))
            self.assertEqual(await asyncio.wait_for(ticks.recv(), 2), "tick")
            self.assertTrue(idle_closed.done())
            took = await idle_closed
            self.assertEqual(idle.close_code, 1001)
            for ws in (echo, ticks, sink):
                await ws.close()
            return took
        took = run(t())
        self.assertGreater(took, 0.8)
        self.assertLess(took, 2.5)
        line = self.log_lines(gw, "ws-idle")[0]
        self.assertEqual(line["tunnel_close"], "idle_timeout")
        self.assertGreaterEqual(line["duration_ms"], 900)
        self.assertLess(line["duration_ms"], 2500)
        self.ws.wait("close", "/ws/hold?idle=1")
        self.assertEqual(len(self.ws.seen("close", "/ws/hold")), 1)

    def test_idle_close_time(self):
        gw = self.gateway(tunnel_timeout="1s")

        async def t():
            ws = await connect(gw.port, "/ws/echo?t=1")
            await ws.send("last traffic")
            await ws.recv()
            took = await closed_within(ws, 5)
            self.assertEqual(ws.close_code, 1001)
            return took
        took = run(t())
        self.assertGreater(took, 0.8)
        self.assertLess(took, 2.5)
        ev = self.ws.wait("close", "/ws/echo?t=1", timeout=3)[0]
        self.assertIsNotNone(ev["code"])


class LifecycleTest(WsTest):
    """Reload keeps tunnels; stop drains them with 1001."""

    def test_reload_keeps_open_tunnels_on_the_old_worker(self):
        gw = self.gateway(drain_timeout="10s")
        old = gw.workers()

        async def t():
            ws = await connect(gw.port, "/ws/echo?reload=1")
            await ws.send("before")
            self.assertEqual(await ws.recv(), "before")
            cfg = json.loads(json.dumps(gw.config))
            cfg["routes"].append({"path": "/ws2/", "upstream": "ws"})
            gw.write_config(cfg)
            gw.signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(
                    lambda: gw.get("/ws2/x").status == 426,
                    what="the new route"))
            self.assertTrue(all(alive(p) for p in old))   # kept for us
            for i in range(5):
                await ws.send("after %d" % i)
                self.assertEqual(await ws.recv(), "after %d" % i)
            new = await connect(gw.port, "/ws2/echo")
            await new.send("new")
            self.assertEqual(await new.recv(), "new")
            await ws.close()
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(
                    lambda: not any(alive(p) for p in old), timeout=5,
                    what="the old worker to leave once its tunnel closed"))
            await new.send("still")
            self.assertEqual(await new.recv(), "still")
            await new.close()
        run(t())
        self.assertEqual(self.ws.wait("close", "/ws/echo?reload=1")[0]
                         ["code"], 1000)

    def test_reload_closes_tunnels_at_drain_timeout(self):
        gw = self.gateway(drain_timeout="1s")
        old = gw.workers()

        async def t():
            ws = await connect(gw.port, "/ws/hold?reload=2", extra_headers={
                "X-Request-Id": "ws-reload-drained"})
            gw.signal(signal.SIGHUP)
            took = await closed_within(ws, 5)
            self.assertEqual(ws.close_code, 1001)
            return took
        took = run(t())
        self.assertGreater(took, 0.7)
        self.assertLess(took, 3.0)
        wait_until(lambda: not any(alive(p) for p in old),
                   what="the old worker to exit")
        line = self.log_lines(gw, "ws-reload-drained")[0]
        self.assertEqual(line["tunnel_close"], "drained")

    def test_stop_sends_1001_at_drain_timeout_and_exits_zero(self):
        gw = self.gateway(drain_timeout="1s")

        async def t():
            ws = await connect(gw.port, "/ws/echo?stop=1", extra_headers={
                "X-Request-Id": "ws-stop"})
            await ws.send("x")
            await ws.recv()
            t0 = time.monotonic()
            gw.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            await ws.send("while draining")     # still served
            self.assertEqual(await asyncio.wait_for(ws.recv(), 2),
                             "while draining")
            await asyncio.wait_for(ws.wait_closed(), 5 * SLOW)
            self.assertEqual(ws.close_code, 1001)
            return time.monotonic() - t0
        took = run(t())
        self.assertGreater(took, 0.8)
        self.assertLess(took, 3.0)
        ev = self.ws.wait("close", "/ws/echo?stop=1", timeout=3)[0]
        self.assertIsNotNone(ev["code"])
        self.assertEqual(gw.proc.wait(10), 0)
        line = self.log_lines(gw, "ws-stop")[0]
        self.assertEqual(line["tunnel_close"], "drained")

    def test_max_connections_counts_tunnels(self):
        gw = self.gateway(max_connections=2)

        async def t():
            a = await connect(gw.port, "/ws/echo?mc=a")
            b = await connect(gw.port, "/ws/echo?mc=b")
            await a.send("a")
            self.assertEqual(await a.recv(), "a")
            third = socket.create_connection(("127.0.0.1", gw.port),
                                             timeout=0.7)
            third.sendall(handshake_head("/ws/echo?mc=c", gw.port))
            with self.assertRaises(socket.timeout):
                third.recv(100)
            await b.close()
            third.settimeout(5 * SLOW)
            self.assertEqual(parse_status(third.recv(65536)), 101)
            third.close()
            await a.close()
        run(t())
        wait_until(lambda: "max_connections (2) reached" in gw.error_log(),
                   what="the log line")


class AccountingTest(WsTest):
    """Access log lines and metrics for tunnels."""

    workers = 2

    def setUp(self):
        super().setUp()
        self.admin_port = free_port()
        self.gw = self.gateway(start=False)
        self.gw.config["admin"] = {"listen": "127.0.0.1:%d" %
                                   self.admin_port}
        self.gw.write_config(self.gw.config)
        self.gw.start()

    def metrics(self):
        from test_metrics import parse_metrics
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" %
                                    self.admin_port, timeout=10) as r:
            return parse_metrics(r.read().decode())

    def total(self, name, **labels):
        """Sum of name's samples that carry labels (over other labels)."""
        m = self.metrics()[0]
        return sum(v for (n, ls), v in m.items() if n == name and
                   set(labels.items()) <= set(ls))

    def test_log_lines_and_metrics(self):
        holders = [RawWs(self.gw.port, "/ws/hold?n=%d" % i,
                         extra=[("X-Request-Id", "ws-hold-%d" % i)])
                   for i in range(3)]
        for h in holders:
            self.assertEqual(h.status, 101, h.head)
        wait_until(lambda: self.total("agate_tunnels_open") == 3,
                   what="3 open tunnels in agate_tunnels_open")
        m, types = self.metrics()
        self.assertEqual(types.get("agate_tunnels_open"), "gauge")
        workers = {dict(ls).get("worker") for (n, ls) in m
                   if n == "agate_tunnels_open"}
        self.assertTrue(workers <= {str(p) for p in self.gw.workers()},
                        workers)
        # Echo: 11 bytes in (2 + 4 mask + 5), 7 out; then the client
        # vanishes (FIN, no close frame).
        echo = RawWs(self.gw.port, "/ws/echo?acct=1",
                     extra=[("X-Request-Id", "ws-acct-echo")])
        self.assertEqual(echo.status, 101)
        self.assertEqual(echo.send(TEXT, b"hello"), 11)
        self.assertEqual(echo.recv(), (True, TEXT, b"hello"))
        time.sleep(0.2)
        echo.close()
        # The upstream closes its side without a close frame after 10
        # bytes (2 + 4 + 4).
        drop = RawWs(self.gw.port, "/ws/drop?acct=2",
                     extra=[("X-Request-Id", "ws-acct-drop")])
        self.assertEqual(drop.status, 101)
        self.assertEqual(drop.send(TEXT, b"bye?"), 10)
        self.assertTrue(drop.at_eof(3), "the client side stayed open")
        drop.close()
        for h in holders:
            h.close()
        lines = {rid: self.log_lines(self.gw, rid)
                 for rid in ["ws-acct-echo", "ws-acct-drop"] +
                 ["ws-hold-%d" % i for i in range(3)]}
        for rid, ls in lines.items():
            self.assertEqual(len(ls), 1, ls)
            line = ls[0]
            self.assertEqual((line["protocol"], line["status"],
                              line["method"], line["route"]),
                             ("websocket", 101, "GET", "/ws/"), line)
            self.assertEqual(line["upstream"], self.ws.url, line)
        e = lines["ws-acct-echo"][0]
        self.assertEqual((e["path"], e["bytes"], e["bytes_received"],
                          e["tunnel_close"]),
                         ("/ws/echo", 7, 11, "client_closed"), e)
        self.assertGreaterEqual(e["duration_ms"], 150)
        d = lines["ws-acct-drop"][0]
        self.assertEqual((d["bytes"], d["bytes_received"],
                          d["tunnel_close"]), (0, 10, "upstream_closed"), d)
        for i in range(3):
            h = lines["ws-hold-%d" % i][0]
            self.assertEqual((h["bytes"], h["bytes_received"],
                              h["tunnel_close"]), (0, 0, "client_closed"), h)
        # Counted when logged: poll.
        wait_until(lambda: self.total("agate_tunnels_total",
                                      outcome="client_closed") == 4,
                   what="4 client_closed tunnels counted")
        wait_until(lambda: self.total("agate_tunnels_total",
                                      outcome="upstream_closed") == 1,
                   what="1 upstream_closed tunnel counted")
        wait_until(lambda: self.total("agate_tunnels_open") == 0,
                   what="no open tunnels")
        m, types = self.metrics()
        self.assertEqual(types.get("agate_tunnels_total"), "counter")
        self.assertEqual(types.get("agate_tunnel_bytes_total"), "counter")
        self.assertEqual(self.total("agate_tunnels_total"), 5)
        self.assertEqual(self.total("agate_tunnel_bytes_total",
                                    direction="to_upstream"), 21)
        self.assertEqual(self.total("agate_tunnel_bytes_total",
                                    direction="to_client"), 7)
        # A plain request's line says HTTP/1.1.
        r = self.gw.get("/ws/plain", headers={"X-Request-Id": "ws-plain"})
        self.assertEqual(r.status, 426)
        line = self.log_lines(self.gw, "ws-plain")[0]
        self.assertEqual((line["protocol"], line["status"]),
                         ("HTTP/1.1", 426))
        self.assertNotIn("tunnel_close", line)


class ManyTunnelsTest(WsTest):

    workers = 2
    N = 1000

    def test_1000_concurrent_tunnels_echo_with_bounded_memory(self):
        gw = self.gateway()
        workers = gw.workers()
        self.assertEqual(len(workers), 2)

        async def open_many(n, tag, sem):
            async def one(i):
                async with sem:
                    ws = await connect(gw.port, "/ws/echo?%s=%d" % (tag, i),
                                       open_timeout=20 * SLOW)
                    await ws.send("%s-%d" % (tag, i))
                    got = await asyncio.wait_for(ws.recv(), 20 * SLOW)
                    return ws, got == "%s-%d" % (tag, i)
            return await asyncio.gather(*[one(i) for i in range(n)],
                                        return_exceptions=True)

        async def t():
            sem = asyncio.Semaphore(100)
            warm = await open_many(50, "warm", sem)
            self.assertEqual([r for r in warm if isinstance(r, Exception)],
                             [])
            await asyncio.gather(*[ws.close() for ws, _ in warm])
            await asyncio.sleep(0.3)
            base = {w: rss_kib(w) for w in workers}
            t0 = time.monotonic()
            res = await open_many(self.N, "m", sem)
            opened = time.monotonic() - t0
            errors = [r for r in res if isinstance(r, Exception)]
            conns = [r[0] for r in res if not isinstance(r, Exception)]
            self.assertEqual(errors[:3], [])
            self.assertEqual(sum(1 for r in res if r[1]), self.N)
            # All open at once: each echoes again.
            async def again(i, ws):
                await ws.send(b"again-%d" % i)
                return await asyncio.wait_for(ws.recv(), 20 * SLOW) == \
                    b"again-%d" % i
            ok = await asyncio.gather(*[again(i, ws)
                                        for i, ws in enumerate(conns)])
            self.assertEqual(sum(ok), self.N)
            grown = {w: rss_kib(w) - base[w] for w in workers}
            per = sum(grown.values()) / self.N
            sys.stdout.write("%d tunnels opened in %.2fs; worker RSS growth "
                             "%s KiB: %.1f KiB per tunnel\n"
                             % (self.N, opened, grown, per))
            t0 = time.monotonic()
            await asyncio.gather(*[ws.close() for ws in conns])
            sys.stdout.write("closed in %.2fs\n" % (time.monotonic() - t0))
            return per
        per = run(t(), timeout=60)
        self.assertLess(per, 24.0, "%.1f KiB per tunnel" % per)
        self.ws.wait("close", "/ws/echo?m=", n=self.N, timeout=20)


class TunnelFaultTest(WsTest):

    def fds(self, worker):
        t = fd_targets(worker)
        return (sorted(x for x in t if not x.startswith("socket:")),
                sum(1 for x in t if x.startswith("socket:")))

    def settled_base(self, gw, worker):
        async def warm():
            ws = await connect(gw.port, "/ws/echo?warm=1")
            await ws.send("w")
            await ws.recv()
            await ws.close()
        run(warm())
        self.ws.wait("close", "/ws/echo?warm=1")
        time.sleep(0.3)
        return self.fds(worker)

    def test_upstream_killed_mid_tunnel(self):
        victim = self.ws_upstream("victim")
        gw = self.gateway(routes=[{"path": "/ws/", "upstream": "ws"},
                                  {"path": "/v/", "upstream": "victim"}],
                          upstreams={"victim": {"servers": [victim.url]}})
        worker = gw.workers()[0]
        base = self.settled_base(gw, worker)

        async def t():
            conns = []
            for i in range(5):
                ws = await connect(gw.port, "/v/echo?k=%d" % i, extra_headers={
                    "X-Request-Id": "ws-killed-%d" % i})
                await ws.send("hi")
                self.assertEqual(await ws.recv(), "hi")
                conns.append(ws)
            self.assertGreaterEqual(self.fds(worker)[1], base[1] + 10)
            victim.kill()
            t0 = time.monotonic()
            await asyncio.gather(*[asyncio.wait_for(ws.wait_closed(),
                                                    3 * SLOW)
                                   for ws in conns])
            took = time.monotonic() - t0
            for ws in conns:
                self.assertIsNotNone(ws.close_code)
            return took
        took = run(t())
        self.assertLess(took, 2.0)
        wait_until(lambda: self.fds(worker) == base, timeout=3,
                   what="the worker's fds back to %r (now %r)"
                   % (base, self.fds(worker)))
        for i in range(5):
            line = self.log_lines(gw, "ws-killed-%d" % i)[0]
            self.assertIn(line["tunnel_close"], ("upstream_closed", "error"),
                          line)
        self.assertTrue(alive(worker))

        async def after():
            ws = await connect(gw.port, "/ws/echo?after=1")
            await ws.send("fine")
            self.assertEqual(await ws.recv(), "fine")
            await ws.close()
        run(after())

    def test_client_vanishing_closes_the_upstream_side(self):
        gw = self.gateway()
        worker = gw.workers()[0]
        base = self.settled_base(gw, worker)
        clients = []
        for i, reset in enumerate((False, True, False, True)):
            c = RawWs(gw.port, "/ws/echo?gone=%d" % i, extra=[
                ("X-Request-Id", "ws-gone-%d" % i)])
            self.assertEqual(c.status, 101, c.head)
            c.send(TEXT, b"x")
            self.assertEqual(c.recv(), (True, TEXT, b"x"))
            clients.append((c, reset))
        self.ws.wait("open", "/ws/echo?gone=", n=4)
        t0 = time.monotonic()
        for c, reset in clients:
            c.close(reset=reset)
        self.ws.wait("close", "/ws/echo?gone=", n=4, timeout=3)
        self.assertLess(time.monotonic() - t0, 2.0)
        wait_until(lambda: self.fds(worker) == base, timeout=3,
                   what="the worker's fds back to %r (now %r)"
                   % (base, self.fds(worker)))
        for i, (c, reset) in enumerate(clients):
            line = self.log_lines(gw, "ws-gone-%d" % i)[0]
            self.assertIn(line["tunnel_close"],
                          ("client_closed", "error") if reset
                          else ("client_closed",), line)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ws-upstream"]:
        ws_upstream_main()
    else:
        main()
