"""TLS termination (worker/tls.c): listeners with `tls:`, as clients with
Python's ssl module see them.  Certificates are made at test time with
the openssl CLI.

Covered: TLS 1.2 and 1.3 handshakes (1.2 with an ECDHE AEAD suite), TLS
1.0 and 1.1 refused, ALPN (http/1.1 chosen, h2-only clients still
served over HTTP/1.1), several certificates chosen by SNI (wildcards,
unknown names get the first), X-Forwarded-Proto, big bodies both ways,
PROXY protocol before TLS, certificates swapped on HUP while an old
connection keeps working, a bad certificate at reload keeping the old
one, and a key that does not match refused at load.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess

from harness import (AGATE, AgateTest, free_port, main, pattern_bytes,
                     wait_until)


def make_cert(d, name, cn, sans, kind="ec"):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    alg = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
           if kind == "ec" else ["-newkey", "rsa:2048"])
    subprocess.run(["openssl", "req", "-x509"] + alg +
                   ["-nodes", "-keyout", key, "-out", crt, "-days", "2",
                    "-subj", "/CN=" + cn, "-addext",
                    "subjectAltName=" + ",".join("DNS:" + s for s in sans)],
                   check=True, capture_output=True)
    return crt, key


def client_ctx(minv=ssl.TLSVersion.TLSv1_2, maxv=ssl.TLSVersion.TLSv1_3,
               alpn=("http/1.1",)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = minv
    ctx.maximum_version = maxv
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def fingerprint(sock):
    return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()


def cert_fingerprint(path):
    der = ssl.PEM_cert_to_DER_cert(open(path).read())
    return hashlib.sha256(der).hexdigest()


class TLSTest(AgateTest):
    def setUp(self):
        super().setUp()
        self.a = make_cert(self.dir, "a", "a.test", ["a.test", "*.a.test"])
        self.b = make_cert(self.dir, "b", "b.test", ["b.test"], "rsa")
        self.up = self.upstream()

    def tls_agate(self, proxy_protocol=False, http2=None, **server):
        self.port = free_port()
        listen = {"address": "127.0.0.1:%d" % self.port,
                  "tls": [{"cert": "a.pem", "key": "a.key"},
                          {"cert": "b.pem", "key": "b.key"}]}
        if proxy_protocol:
            listen["proxy_protocol"] = True
        if http2 is not None:
            listen["http2"] = http2
        gw = self.agate({"u": {"servers": [self.up.url]}},
                        [{"path": "/", "upstream": "u"}], start=False,
                        **server)
        plain = gw.config["server"]["listen"][0]
        gw.config["server"]["listen"] = [plain, listen]
        gw.write_config(gw.config)
        gw.start()
        return gw

    def connect(self, ctx=None, sni=None):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return (ctx or client_ctx()).wrap_socket(raw, server_hostname=sni)

    def get(self, s, path="/x", headers=b""):
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" +
                  headers + b"\r\n")
        r = http.client.HTTPResponse(s)
        r.begin()
        return r.status, r.read()

    def test_versions_ciphers_and_alpn(self):
        self.tls_agate()
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            s = self.connect(client_ctx(v, v))
            self.assertEqual(s.version(), {ssl.TLSVersion.TLSv1_2:
                                           "TLSv1.2",
                                           ssl.TLSVersion.TLSv1_3:
                                           "TLSv1.3"}[v])
            if v == ssl.TLSVersion.TLSv1_2:
                self.assertRegex(s.cipher()[0],
                                 r"^ECDHE-(ECDSA|RSA)-(AES\d+-GCM|CHACHA20)")
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
            status, body = self.get(s, "/x")
            self.assertEqual(status, 200)
            s.close()
        # h2 first, whatever order the client offers (HTTP/2 is
        # test_http2.py's).
        for alpn in (("h2", "http/1.1"), ("http/1.1", "h2"), ("h2",)):
            s = self.connect(client_ctx(alpn=alpn))
            self.assertEqual(s.selected_alpn_protocol(), "h2", alpn)
            s.close()

    def test_http2_false_offers_http11_only(self):
        self.tls_agate(http2=False)
        s = self.connect(client_ctx(alpn=("h2", "http/1.1")))
        self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        s.close()
        # A client that only offers h2 gets HTTP/1.1, no ALPN.
        s = self.connect(client_ctx(alpn=("h2",)))
        self.assertIsNone(s.selected_alpn_protocol())
        self.assertEqual(self.get(s)[0], 200)
        s.close()

    def test_tls_1_0_and_1_1_are_refused(self):
        self.tls_agate()
        for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx = client_ctx(v, v)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                self.connect(ctx)
        # The same client allowed 1.2 gets in: it was the version.
        ctx = client_ctx(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        s = self.connect(ctx)
        self.assertEqual(s.version(), "TLSv1.2")
        s.close()

    def test_sni_picks_the_certificate(self):
        self.tls_agate()
        fa, fb = cert_fingerprint(self.a[0]), cert_fingerprint(self.b[0])
        for sni, want in (("a.test", fa), ("b.test", fb),
                          ("api.a.test", fa), ("other.test", fa),
                          (None, fa)):
            s = self.connect(sni=sni)
            self.assertEqual(fingerprint(s), want, sni)
            self.assertEqual(self.get(s)[0], 200)
            s.close()

    def test_bodies_both_ways_and_forwarded_proto(self):
        self.tls_agate()
        s = self.connect()
        body = os.urandom(700000)
        s.sendall(b"POST /e?echo=1 HTTP/1.1\r\nHost: t\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        r = http.client.HTTPResponse(s)
        r.begin()
        seen = json.loads(r.read())
        self.assertEqual(seen["body_sha256"], hashlib.sha256(body).hexdigest())
        self.assertIn(["X-Forwarded-Proto", "https"], seen["headers"])
        # Keep-alive, then a 3 MB answer.
        status, got = self.get(s, "/big?size=3000000")
        self.assertEqual(status, 200)
        self.assertEqual(got, pattern_bytes(3000000))
        s.close()

    def test_pipelined_requests_and_a_slow_big_upload(self):
        # Many requests in one TLS write: OpenSSL holds what agate has not
        # read yet, where epoll cannot see it.
        self.tls_agate()
        s = self.connect()
        n = 40
        s.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i
                           for i in range(n)))
        for i in range(n):
            r = http.client.HTTPResponse(s)
            r.begin()
            r.read()
            self.assertEqual(r.status, 200)
        # An upload bigger than the read buffer to an upstream that
        # reads slowly: reading stops and starts again many times.
        body = os.urandom(3 * 1024 * 1024)
        s.sendall(b"POST /e?echo=1&delay=200 HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        s.sendall(body)
        r = http.client.HTTPResponse(s)
        r.begin()
        self.assertEqual(json.loads(r.read())["body_sha256"],
                         hashlib.sha256(body).hexdigest())
        s.close()

    def test_proxy_protocol_before_tls(self):
        self.tls_agate(proxy_protocol=True)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        raw.sendall(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n")
        s = client_ctx().wrap_socket(raw, server_hostname="b.test")
        self.assertEqual(fingerprint(s), cert_fingerprint(self.b[0]))
        status, body = self.get(s, "/p?echo=1")
        self.assertEqual(status, 200)
        self.assertIn(["X-Forwarded-For", "203.0.113.7"],
                      json.loads(body)["headers"])
        s.close()

    def test_certificates_swap_on_hup_and_a_bad_one_keeps_the_old(self):
        gw = self.tls_agate(drain_timeout="10s")
        old_fp = cert_fingerprint(self.a[0])
        held = self.connect(sni="a.test")
        self.assertEqual(fingerprint(held), old_fp)
        self.assertEqual(self.get(held)[0], 200)
        make_cert(self.dir, "a", "a.test", ["a.test", "*.a.test"])
        new_fp = cert_fingerprint(self.a[0])
        self.assertNotEqual(new_fp, old_fp)
        gw.signal(signal.SIGHUP)

        def new_cert():
            s = self.connect(sni="a.test")
            fp = fingerprint(s)
            s.close()
            return fp == new_fp
        wait_until(new_cert, what="the new certificate")
        # The connection made before the reload is answered still.
        status, _ = self.get(held)
        self.assertEqual(status, 200)
        held.close()
        # A broken certificate file: the reload fails, the last good
        # certificate stays.
        with open(self.a[0], "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n")
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "cannot load the certificate" in gw.error_log(),
                   what="the reload error")
        self.assertRegex(gw.error_log(), r"agate\.yaml:\d+:\d+: listen "
                         r"127\.0\.0\.1:\d+: tls: cannot load the "
                         r"certificate .*a\.pem")
        s = self.connect(sni="a.test")
        self.assertEqual(fingerprint(s), new_fp)
        self.assertEqual(self.get(s)[0], 200)
        s.close()

    def test_key_that_does_not_match_is_refused_at_load(self):
        gw = self.agate({"u": {"servers": [self.up.url]}},
                        [{"path": "/", "upstream": "u"}], start=False)
        gw.config["server"]["listen"] = [{"address": "127.0.0.1:%d" %
                                          free_port(),
                                          "tls": {"cert": "a.pem",
                                                  "key": "b.key"}}]
        gw.write_config(gw.config)
        r = subprocess.run([AGATE, "-t", "-c", gw.path], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"agate\.yaml:\d+:\d+: listen "
                         r"127\.0\.0\.1:\d+: tls: ")


if __name__ == "__main__":
    main()
