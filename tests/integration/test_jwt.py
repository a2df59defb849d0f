"""JWT bearer tokens on a route (gateway/policy/jwt.c, docs/policies.md): a
JWKS with an oct (HS256), an RSA (RS256) and an EC P-256 (ES256) key made
at test time with the openssl CLI; tokens signed here (HMAC in Python,
RSA and ECDSA through openssl).

The valid tokens pass and their claims reach the upstream as headers
(a forged copy from the client is dropped).  Every other case is a 401
with a Bearer challenge and nothing forwarded: expired, not yet valid,
bad signature, wrong audience, wrong issuer, alg none, and an HS256
token made with the RSA public key as its secret (alg confusion).  The
JWKS is re-read on HUP.
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time

from harness import AgateTest, main, wait_until


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def run(*args, data=None):
    return subprocess.run(args, input=data, capture_output=True,
                          check=True).stdout


def der_to_raw(der):
    """An ECDSA DER signature as JWS's r||s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(32, b"\x00")
        i += 2 + n
    return out


class Keys:
    def __init__(self, d):
        self.d = d
        self.secret = os.urandom(32)
        self.rsa = os.path.join(d, "rsa.pem")
        self.ec = os.path.join(d, "ec.pem")
        run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
            "rsa_keygen_bits:2048", "-out", self.rsa)
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-out", self.ec)
        self.rsa_pub = run("openssl", "pkey", "-in", self.rsa, "-pubout")
        mod = run("openssl", "rsa", "-in", self.rsa, "-noout", "-modulus")
        self.n = bytes.fromhex(mod.decode().strip().split("=")[1])
        ecpub = run("openssl", "pkey", "-in", self.ec, "-pubout",
                    "-outform", "DER")
        point = ecpub[-65:]
        assert point[0] == 4
        self.x, self.y = point[1:33], point[33:]

    def jwks(self, with_oct=True):
        keys = [{"kty": "RSA", "kid": "r1", "n": b64u(self.n),
                 "e": b64u(b"\x01\x00\x01")},
                {"kty": "EC", "kid": "e1", "crv": "P-256",
                 "x": b64u(self.x), "y": b64u(self.y)}]
        if with_oct:
            keys.insert(0, {"kty": "oct", "kid": "h1",
                            "k": b64u(self.secret)})
        return {"keys": keys}

    def token(self, claims, alg="HS256", kid=None, secret=None):
        hdr = {"alg": alg, "typ": "JWT"}
        if kid:
            hdr["kid"] = kid
        signing = (b64u(json.dumps(hdr).encode()) + "." +
                   b64u(json.dumps(claims).encode())).encode()
        if alg == "HS256":
            sig = hmac.new(secret or self.secret, signing,
                           hashlib.sha256).digest()
        elif alg == "RS256":
            sig = run("openssl", "dgst", "-sha256", "-sign", self.rsa,
                      data=signing)
        elif alg == "ES256":
            sig = der_to_raw(run("openssl", "dgst", "-sha256", "-sign",
                                 self.ec, data=signing))
        else:
            sig = b""
        return signing.decode() + "." + b64u(sig)


class JwtTest(AgateTest):
    def setUp(self):
        super().setUp()
        self.k = Keys(self.dir)
        self.write_jwks(self.k.jwks())
        self.up = self.upstream()
        self.gw = self.agate(
            {"u": {"servers": [self.up.url]}},
            [{"path": "/", "upstream": "u",
              "auth": {"jwt": {"keys": "jwks.json",
                               "issuer": "https://id.example",
                               "audience": "api",
                               "forward_claims": {"sub": "X-User-Id",
                                                  "scope": "X-Scope"}}}}])

    def write_jwks(self, doc):
        with open(os.path.join(self.dir, "jwks.json.tmp"), "w") as f:
            json.dump(doc, f)
        os.rename(os.path.join(self.dir, "jwks.json.tmp"),
                  os.path.join(self.dir, "jwks.json"))

    def claims(self, **over):
        now = int(time.time())
        c = {"sub": "user-7", "scope": "read", "iss": "https://id.example",
             "aud": "api", "iat": now, "exp": now + 300}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def call(self, token, extra=None):
        h = {"Authorization": "Bearer " + token}
        h.update(extra or {})
        return self.gw.get("/r?echo=1", headers=h)

    def test_valid_tokens_pass_with_their_claims_forwarded(self):
        for alg, kid in (("HS256", "h1"), ("RS256", "r1"), ("ES256", "e1"),
                         ("RS256", None)):
            r = self.call(self.k.token(self.claims(), alg, kid),
                          {"X-User-Id": "forged"})
            self.assertEqual(r.status, 200, (alg, r.body[:200]))
            seen = dict((k.lower(), v) for k, v in r.json()["headers"])
            self.assertEqual(seen["x-user-id"], "user-7")
            self.assertEqual(seen["x-scope"], "read")
        # The audience may be a list that contains ours.
        r = self.call(self.k.token(self.claims(aud=["other", "api"])))
        self.assertEqual(r.status, 200)

    def test_every_bad_token_is_401(self):
        now = int(time.time())
        pem_secret = self.k.rsa_pub
        cases = {
            "expired": self.k.token(self.claims(exp=now - 3600)),
            "not yet valid": self.k.token(self.claims(nbf=now + 3600)),
            "bad signature": self.k.token(self.claims(),
                                          secret=b"another secret"),
            "wrong audience": self.k.token(self.claims(aud="billing")),
            "wrong issuer": self.k.token(self.claims(iss="https://evil")),
            "alg none": self.k.token(self.claims(), alg="none"),
            "alg confusion": self.k.token(self.claims(), "HS256", "r1",
                                          secret=pem_secret),
            "tampered": self.k.token(self.claims())[:-3] + "AAA",
            "garbage": "not.a.jwt",
            "two parts": "abc.def",
        }
        for name, tok in cases.items():
            r = self.call(tok)
            self.assertEqual(r.status, 401, name)
            self.assertIn('error="invalid_token"',
                          r.header("WWW-Authenticate"), name)
        r = self.gw.get("/r")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.header("WWW-Authenticate"), 'Bearer realm="agate"')
        self.assertEqual(self.up.stats()["requests"], 0)

    def test_the_key_set_is_reread_on_hup(self):
        tok = self.k.token(self.claims(), "HS256", "h1")
        self.assertEqual(self.call(tok).status, 200)
        self.write_jwks(self.k.jwks(with_oct=False))   # HS256 key retired
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: self.call(tok).status == 401,
                   what="the retired key to stop working")
        self.assertEqual(self.call(self.k.token(self.claims(),
                                                "ES256")).status, 200)
        # A broken key set keeps the previous one.
        with open(os.path.join(self.dir, "jwks.json"), "w") as f:
            f.write("{not json")
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: "auth.jwt" in self.gw.error_log(),
                   what="the reload error")
        self.assertEqual(self.call(self.k.token(self.claims(),
                                                "RS256")).status, 200)


if __name__ == "__main__":
    main()
