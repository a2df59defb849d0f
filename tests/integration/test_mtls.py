"""Upstream mTLS: tls.cert and tls.key show a client certificate to https
servers, through libcurl (plain requests, health checks) and agate's own
TLS client (Upgrade tunnels, gRPC over TLS); read at load, again on
reload."""

import os
import sys

try:
    import grpc
except ImportError:
    # python3-grpcio is Debian's, under /usr/bin/python3 only.
    if (os.path.realpath(sys.executable) !=
            os.path.realpath("/usr/bin/python3") and
            os.path.exists("/usr/bin/python3") and
            not os.environ.get("AGATE_GRPC_REEXEC")):
        os.environ["AGATE_GRPC_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import base64
import hashlib
import http.server
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading

from harness import AGATE, AgateTest, SLOW, main, parse_status, wait_until

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   capture_output=True, timeout=30)


def make_pki(d):
    """ca (root) -> int (intermediate) -> agate-a; ca -> agate-b; ca ->
    the server (127.0.0.1, localhost); other-ca -> agate-x.  a.pem holds
    agate-a and the intermediate: the server trusts the root only, so
    agate-a is accepted only when the whole chain is sent."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out",
                ca + ".pem", "-days", "2", "-subj", "/CN=" + ca,
                "-addext", "basicConstraints=critical,CA:true",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    exts = {
        "ca.ext": "basicConstraints=critical,CA:true\n"
                  "keyUsage=critical,keyCertSign,cRLSign\n",
        "server.ext": "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                      "extendedKeyUsage=serverAuth\n",
        "client.ext": "extendedKeyUsage=clientAuth\n",
    }
    for name, text in exts.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    for name, cn, ca, ext in (("int", "agate-int", "ca", "ca.ext"),
                              ("server", "mtls.test", "ca", "server.ext"),
                              ("a-leaf", "agate-a", "int", "client.ext"),
                              ("b", "agate-b", "ca", "client.ext"),
                              ("x", "agate-x", "other-ca", "client.ext")):
        key = name.replace("-leaf", "") + ".key"
        openssl("req", "-new", *ec, "-keyout", key, "-out", name + ".csr",
                "-subj", "/CN=" + cn, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem",
                "-CAkey", ca + ".key", "-CAcreateserial", "-days", "2",
                "-extfile", ext, "-out", name + ".pem", cwd=d)
    with open(os.path.join(d, "a.pem"), "w") as out:
        for part in ("a-leaf.pem", "int.pem"):
            with open(os.path.join(d, part)) as f:
                out.write(f.read())
    openssl("pkey", "-in", "a.key", "-aes256", "-passout", "pass:secret",
            "-out", "enc.key", cwd=d)


class MtlsServer(http.server.ThreadingHTTPServer):
    """An https server that wants a client certificate from the CA, and
    answers with the certificate's CN; keeps connections alive."""

    daemon_threads = True

    def __init__(self, pki):
        super().__init__(("127.0.0.1", 0), MtlsHandler)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(os.path.join(pki, "server.pem"),
                                 os.path.join(pki, "server.key"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
        self.lock = threading.Lock()
        self.seen = []          # (CN, path) of every request answered
        self.refused = 0        # handshakes that failed
        self.accepted = 0       # and that passed
        self.thread = threading.Thread(target=self.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = "https://127.0.0.1:%d" % self.server_address[1]

    def finish_request(self, request, client_address):
        request.settimeout(10)
        try:
            s = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.refused += 1
            return
        with self.lock:
            self.accepted += 1
        try:
            self.RequestHandlerClass(s, client_address, self)
        finally:
            s.close()

    def handle_error(self, request, client_address):
        pass                    # agate closing a kept connection: no news

    def note(self, cn, path):
        with self.lock:
            self.seen.append((cn, path))

    def cns(self, path):
        with self.lock:
            return [cn for cn, p in self.seen if p.startswith(path)]

    def close(self):
        self.shutdown()
        self.server_close()


class MtlsHandler(http.server.BaseHTTPRequestHandler):

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        cert = self.connection.getpeercert()
        cn = dict(x[0] for x in cert["subject"])["commonName"]
        self.server.note(cn, self.path)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            accept = base64.b64encode(hashlib.sha1(
                (self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()
            ).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.send_header("X-Client-CN", cn)
            self.end_headers()
            self.close_connection = True
            return
        body = ("cn=%s\n" % cn).encode()
        self.send_response(200)
        self.send_header("X-Client-CN", cn)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def upgrade(port, path):
    """An Upgrade: websocket request through agate; (status, head)."""
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "\r\n" % (path, port, key)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    finally:
        s.close()
    head = buf.partition(b"\r\n\r\n")[0].decode("latin-1")
    return parse_status(buf), head


class MtlsTest(AgateTest):

    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="agate-mtls-")
        make_pki(cls.pki)
        cls.srv = MtlsServer(cls.pki)

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()
        shutil.rmtree(cls.pki, ignore_errors=True)

    def setUp(self):
        super().setUp()
        for name in os.listdir(self.pki):
            shutil.copy(os.path.join(self.pki, name), self.dir)

    def upcfg(self, cert=None, key=None, **extra):
        tls = {"ca": "ca.pem", "verify": True}
        if cert:
            tls.update(cert=cert, key=key)
        # https:// servers: auto (libcurl) unless said, whatever
        # AGATE_TEST_TRANSPORT asks (native refuses https://).
        up = {"servers": [self.srv.url], "tls": tls, "transport": "auto"}
        up.update(extra)
        return up

    def test_the_certificate_chain_on_every_transport(self):
        gw = self.agate(
            upstreams={"c": self.upcfg("a.pem", "a.key", transport="curl"),
                       "d": self.upcfg("a.pem", "a.key", transport="auto")},
            routes=[{"path": "/curl/", "upstream": "c"},
                    {"path": "/auto/", "upstream": "d"}])
        for path in ("/curl/x", "/auto/x"):
            r = gw.get(path)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("X-Client-CN"), "agate-a")
            self.assertEqual(r.body, b"cn=agate-a\n")
        # An Upgrade goes through agate's own TLS client (uptls.c).
        status, head = upgrade(gw.port, "/auto/ws")
        self.assertEqual(status, 101, head)
        self.assertIn("X-Client-CN: agate-a", head)
        self.assertEqual(self.srv.cns("/curl/x"), ["agate-a"])
        self.assertEqual(self.srv.cns("/auto/ws"), ["agate-a"])

    def test_no_certificate_or_another_cas_is_a_502(self):
        gw = self.agate(
            upstreams={"none": self.upcfg(transport="curl"),
                       "other": self.upcfg("x.pem", "x.key")},
            routes=[{"path": "/none/", "upstream": "none"},
                    {"path": "/other/", "upstream": "other"}])
        refused = self.srv.refused
        for path in ("/none/x", "/other/x"):
            self.assertEqual(gw.get(path).status, 502, path)
        status, head = upgrade(gw.port, "/none/ws")
        self.assertEqual(status, 502, head)
        status, head = upgrade(gw.port, "/other/ws")
        self.assertEqual(status, 502, head)
        self.assertEqual(self.srv.cns("/none/"), [])
        self.assertEqual(self.srv.cns("/other/"), [])
        # The server refused 4 handshakes (its thread may count the last
        # one a moment after agate has answered).
        wait_until(lambda: self.srv.refused - refused >= 4,
                   what="the refused handshakes")

    def test_a_connection_made_with_a_certificate_is_not_lent(self):
        # Two upstreams on the same server, one worker: the pooled
        # connection that showed agate-a serves only the upstream that
        # has agate-a, never the one without a certificate or with b.
        gw = self.agate(
            upstreams={"a": self.upcfg("a.pem", "a.key"),
                       "b": self.upcfg("b.pem", "b.key"),
                       "none": self.upcfg()},
            routes=[{"path": "/a/", "upstream": "a"},
                    {"path": "/b/", "upstream": "b"},
                    {"path": "/none/", "upstream": "none"}],
            workers=1)
        accepted = self.srv.accepted
        for _ in range(3):
            self.assertEqual(gw.get("/a/x").header("X-Client-CN"), "agate-a")
            self.assertEqual(gw.get("/none/x").status, 502)
            self.assertEqual(gw.get("/b/x").header("X-Client-CN"), "agate-b")
        self.assertEqual(self.srv.cns("/none/"), [])
        # Connections were kept and reused (else this proves nothing).
        self.assertLess(self.srv.accepted - accepted, 6)

    def test_health_checks_show_the_certificate(self):
        check = {"path": "/healthz", "interval": "50ms", "timeout": "2s",
                 "healthy": 1, "unhealthy": 2}
        gw = self.agate(
            upstreams={"with": self.upcfg("b.pem", "b.key", health_check=check),
                       "without": self.upcfg(health_check=check)},
            routes=[{"path": "/with/", "upstream": "with"},
                    {"path": "/without/", "upstream": "without"}])
        wait_until(lambda: "server %s is down" % self.srv.url in
                   gw.error_log(), timeout=10 * SLOW,
                   what="the server without a certificate marked down")
        wait_until(lambda: len(self.srv.cns("/healthz")) >= 4,
                   what="health checks with the certificate")
        self.assertEqual(set(self.srv.cns("/healthz")), {"agate-b"})
        log = gw.error_log()
        self.assertIn("upstream without server %s is down" % self.srv.url,
                      log)
        self.assertNotIn("upstream with server %s is down" % self.srv.url,
                         log)
        self.assertEqual(gw.get("/with/x").status, 200)
        self.assertEqual(gw.get("/without/x").status, 503)

    def test_reload_reads_the_files_again(self):
        def use(name):
            for ext in ("pem", "key"):
                shutil.copy(os.path.join(self.dir, "%s.%s" % (name, ext)),
                            os.path.join(self.dir, "client." + ext))
        use("a")
        gw = self.agate(
            upstreams={"s": self.upcfg("client.pem", "client.key")},
            routes=[{"path": "/", "upstream": "s"}])
        self.assertEqual(gw.get("/one").header("X-Client-CN"), "agate-a")
        # Renewed on disk: used from the next reload on, not before.
        use("b")
        self.assertEqual(gw.get("/two").header("X-Client-CN"), "agate-a")
        workers = set(gw.workers())
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "reload done" in gw.error_log(),
                   what="the reload")
        wait_until(lambda: not workers & set(gw.workers()),
                   what="the old workers to go")
        r = gw.get("/three")
        self.assertEqual((r.status, r.header("X-Client-CN")),
                         (200, "agate-b"))
        # A key that does not match: the reload fails, b serves on.
        shutil.copy(os.path.join(self.dir, "a.key"),
                    os.path.join(self.dir, "client.key"))
        workers = set(gw.workers())
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in gw.error_log(),
                   what="the reload to fail")
        self.assertRegex(
            gw.error_log(), r"reload failed: \S+/agate\.yaml:\d+:\d+: "
            r"upstream s: tls\.key: the key in \S+/client\.key does not "
            r"match the certificate in \S+/client\.pem; still serving the "
            r"previous config")
        r = gw.get("/four")
        self.assertEqual((r.status, r.header("X-Client-CN")),
                         (200, "agate-b"))
        self.assertEqual(set(gw.workers()), workers)


GRPC_SERVER = r'''
import sys
from concurrent import futures
import grpc

def read(name):
    with open(sys.argv[1] + "/" + name, "rb") as f:
        return f.read()

def am(req, ctx):
    return b"cn=" + ctx.auth_context()["x509_common_name"][0]

s = grpc.server(futures.ThreadPoolExecutor(4))
for service in ("mtls.Who", "mtls.Nobody"):
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        service, {"Am": grpc.unary_unary_rpc_method_handler(am)}),))
creds = grpc.ssl_server_credentials(
    [(read("server.key"), read("server.pem"))],
    root_certificates=read("ca.pem"), require_client_auth=True)
port = s.add_secure_port("127.0.0.1:0", creds)
s.start()
sys.stdout.write("listening %d\n" % port)
sys.stdout.flush()
sys.stdin.read()                     # until the test goes away
s.stop(0)
'''


class MtlsGrpcTest(AgateTest):
    """gRPC over TLS: agate's own HTTP/2 client (ALPN h2) shows the
    certificate to a grpcio server that requires one."""

    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="agate-mtls-")
        make_pki(cls.pki)
        cls.proc = subprocess.Popen([sys.executable, "-c", GRPC_SERVER,
                                     cls.pki], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
        first = cls.proc.stdout.readline()
        if not first.startswith("listening "):
            cls.tearDownClass()
            raise RuntimeError("grpc upstream did not start: %r" % first)
        cls.url = "https://127.0.0.1:%d" % int(first.split()[1])

    @classmethod
    def tearDownClass(cls):
        cls.proc.stdin.close()
        try:
            cls.proc.wait(5)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            cls.proc.wait(5)
        shutil.rmtree(cls.pki, ignore_errors=True)

    def test_a_grpc_call_shows_the_certificate(self):
        for name in os.listdir(self.pki):
            shutil.copy(os.path.join(self.pki, name), self.dir)
        gw = self.agate(
            {"who": {"servers": [self.url], "transport": "auto",
                     "tls": {"ca": "ca.pem", "cert": "a.pem",
                             "key": "a.key"}},
             "nobody": {"servers": [self.url], "transport": "auto",
                        "tls": {"ca": "ca.pem"}}},
            [{"path": "/mtls.Who/", "upstream": "who"},
             {"path": "/mtls.Nobody/", "upstream": "nobody"}])
        ch = grpc.insecure_channel("127.0.0.1:%d" % gw.port)
        self.addCleanup(ch.close)
        for _ in range(3):
            self.assertEqual(ch.unary_unary("/mtls.Who/Am")(
                b"", timeout=5 * SLOW), b"cn=agate-a")
        with self.assertRaises(grpc.RpcError) as e:
            ch.unary_unary("/mtls.Nobody/Am")(b"", timeout=5 * SLOW)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)


class MtlsCheckTest(AgateTest):
    """agate -t: what is wrong with tls.cert and tls.key, where."""

    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="agate-mtls-")
        make_pki(cls.pki)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def check(self, tls, server="https://127.0.0.1:1"):
        """agate -t on a config whose tls: lines start at line 5, each
        key's value at column 12 + len(key)."""
        lines = ["upstreams:", "  s:", "    servers: [\"%s\"]" % server,
                 "    tls:"]
        lines += ["      %s: %s" % kv for kv in tls]
        lines += ["routes:", "  - path: /", "    upstream: s", ""]
        path = os.path.join(self.pki, "agate.yaml")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        p = subprocess.run([AGATE, "-t", "-c", path], capture_output=True,
                           text=True, timeout=20)
        return p.returncode, p.stderr.strip(), path

    def test_a_good_pair_checks(self):
        rc, err, _ = self.check([("ca", "ca.pem"), ("cert", "a.pem"),
                                 ("key", "a.key")])
        self.assertEqual(rc, 0, err)

    def test_errors_name_file_line_column(self):
        d = self.pki
        cases = [
            ([("cert", "a.pem")], 5, 13,
             "upstream s: tls.cert needs tls.key (the certificate's "
             "private key)"),
            ([("ca", "ca.pem"), ("key", "a.key")], 6, 12,
             "upstream s: tls.key needs tls.cert (the certificate it goes "
             "with)"),
            ([("cert", "a.pem"), ("key", "b.key")], 6, 12,
             "upstream s: tls.key: the key in %s/b.key does not match the "
             "certificate in %s/a.pem" % (d, d)),
            ([("cert", "a.pem"), ("key", "enc.key")], 6, 12,
             "upstream s: tls.key: the key in {0}/enc.key is encrypted; "
             "agate takes unencrypted keys only (openssl pkey -in "
             "{0}/enc.key -out NEW.key)".format(d)),
            ([("cert", "missing.pem"), ("key", "a.key")], 5, 13,
             "cannot read %s/missing.pem: No such file or directory" % d),
            ([("cert", "a.pem"), ("key", "missing.key")], 6, 12,
             "cannot read %s/missing.key: No such file or directory" % d),
            ([("cert", "client.ext"), ("key", "a.key")], 5, 13,
             "upstream s: tls.cert: no PEM certificate in %s/client.ext ("
             % d),
            ([("cert", "a.pem"), ("key", "a.pem")], 6, 12,
             "upstream s: tls.key: no PEM private key in %s/a.pem (" % d),
        ]
        for tls, line, col, reason in cases:
            rc, err, path = self.check(tls)
            self.assertEqual(rc, 1, (tls, err))
            self.assertTrue(err.startswith("agate: %s:%d:%d: %s" % (
                path, line, col, reason)), (tls, err))

    def test_a_certificate_for_plain_servers_only_is_said_useless(self):
        # Loaded (CONFIG.md's example has one beside http:// servers), and
        # checked all the same, but never sent: the log says so.
        rc, err, path = self.check([("cert", "a.pem"), ("key", "b.key")],
                                   server="http://127.0.0.1:1")
        self.assertEqual(rc, 1, err)
        self.assertIn("%s:6:12: upstream s: tls.key: the key in" % path, err)
        up = self.upstream()
        gw = self.agate(
            upstreams={"s": {"servers": [up.url],
                             "tls": {"cert": os.path.join(self.pki, "a.pem"),
                                     "key": os.path.join(self.pki,
                                                         "a.key")}}},
            routes=[{"path": "/", "upstream": "s"}])
        self.assertEqual(gw.get("/x").status, 200)
        self.assertIn("config: upstream s: tls.cert and tls.key have no "
                      "effect: it has no https:// server to show the "
                      "certificate to", gw.error_log())

if __name__ == "__main__":
    main()
