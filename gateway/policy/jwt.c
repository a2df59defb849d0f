/*
 * JWT bearer tokens: the keys and the check of one token (the route's
 * stage, `auth.jwt`, is auth_jwt.c).
 *
 * Keys come from a JWKS file, read when the config is loaded (so a reload
 * re-reads it and a bad file keeps the old config): "oct" keys for HS256,
 * "RSA" for RS256, "EC" on P-256 for ES256.  A token is accepted when:
 * - its alg is one of those three ("none" and anything else refused);
 * - a key of the matching type (and kid, when the token names one)
 *   verifies its signature: the key's type decides the algorithm, so an
 *   RSA public key is never taken as an HMAC secret (alg confusion);
 * - exp and nbf hold, with JWT_LEEWAY seconds of clock skew;
 * - iss and aud match when the route configures them.
 * This file is pure code: the config loader reads keys with it, and the
 * fuzzers and unit tests call it without a worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>

#include "gateway/config/config.h"
#include "gateway/policy/jwt.h"
#include "lib/encode.h"

#define TOKEN_MAX	8192

enum jwk_type { JWK_OCT, JWK_RSA, JWK_EC };

struct jwk {
	enum jwk_type	 type;
	char		 kid[128];
	EVP_PKEY	*pkey;		/* RSA, EC */
	unsigned char	*secret;	/* oct */
	size_t		 slen;
};

struct jwks {
	struct jwk	*keys;
	size_t		 n;
};

ssize_t
jwt_b64url(const char *in, size_t n, unsigned char *out, size_t max)
{
	return base64_decode(in, n, out, max, BASE64_URL);
}

/* A JWK member, base64url-decoded into a new buffer. */
static unsigned char *
jwk_bytes(json_t *k, const char *name, size_t *len)
{
	const char *s = json_string_value(json_object_get(k, name));
	unsigned char *b;
	ssize_t n;

	if (s == NULL || (b = malloc(strlen(s) + 1)) == NULL)
		return NULL;
	if ((n = jwt_b64url(s, strlen(s), b, strlen(s) + 1)) <= 0) {
		free(b);
		return NULL;
	}
	*len = (size_t)n;
	return b;
}

static EVP_PKEY *
jwk_rsa(json_t *k)
{
	size_t nl, el;
	unsigned char *n = jwk_bytes(k, "n", &nl), *e = jwk_bytes(k, "e", &el);
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL;
	BIGNUM *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;

	if (bld == NULL || bn == NULL || be == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	free(n);
	free(e);
	return pkey;
}

static EVP_PKEY *
jwk_ec(json_t *k)
{
	const char *crv = json_string_value(json_object_get(k, "crv"));
	size_t xl, yl;
	unsigned char *x, *y, pub[65];
	OSSL_PARAM params[3];
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;

	if (crv == NULL || strcmp(crv, "P-256") != 0)
		return NULL;
	x = jwk_bytes(k, "x", &xl);
	y = jwk_bytes(k, "y", &yl);
	if (x != NULL && y != NULL && xl == 32 && yl == 32) {
		pub[0] = 0x04;			/* uncompressed point */
		memcpy(pub + 1, x, 32);
		memcpy(pub + 33, y, 32);
		params[0] = OSSL_PARAM_construct_utf8_string(
		    OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0);
		params[1] = OSSL_PARAM_construct_octet_string(
		    OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub));
		params[2] = OSSL_PARAM_construct_end();
		if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) ==
		    NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
		    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY,
		    params) <= 0)
			pkey = NULL;
	}
	EVP_PKEY_CTX_free(ctx);
	free(x);
	free(y);
	return pkey;
}

struct jwks *
jwks_load(const char *path, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je), *arr, *k;
	struct jwks *set = NULL;
	size_t i;

	if (root == NULL) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, je.line,
		    je.column > 0 ? je.column : 1, je.text);
		return NULL;
	}
	arr = json_object_get(root, "keys");
	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		snprintf(err, errlen, "%s:1:1: expected {\"keys\": [JWK, ...]} "
		    "with at least one key", path);
		goto done;
	}
	if ((set = calloc(1, sizeof(*set))) == NULL ||
	    (set->keys = calloc(json_array_size(arr), sizeof(*set->keys))) ==
	    NULL) {
		free(set);
		set = NULL;
		snprintf(err, errlen, "%s:1:1: out of memory", path);
		goto done;
	}
	json_array_foreach(arr, i, k) {
		struct jwk *j = &set->keys[set->n];
		const char *kty = json_string_value(json_object_get(k, "kty"));
		const char *kid = json_string_value(json_object_get(k, "kid"));

		if (kid != NULL)
			snprintf(j->kid, sizeof(j->kid), "%s", kid);
		if (kty != NULL && strcmp(kty, "oct") == 0) {
			j->type = JWK_OCT;
			j->secret = jwk_bytes(k, "k", &j->slen);
		} else if (kty != NULL && strcmp(kty, "RSA") == 0) {
			j->type = JWK_RSA;
			j->pkey = jwk_rsa(k);
		} else if (kty != NULL && strcmp(kty, "EC") == 0) {
			j->type = JWK_EC;
			j->pkey = jwk_ec(k);
		} else {
			snprintf(err, errlen, "%s:1:1: key %zu: kty must be oct, "
			    "RSA or EC (P-256)", path, i + 1);
			jwks_free(set);
			set = NULL;
			goto done;
		}
		if (j->secret == NULL && j->pkey == NULL) {
			snprintf(err, errlen, "%s:1:1: key %zu (%s%s%s): its "
			    "members do not make a %s key", path, i + 1, kty,
			    kid ? " " : "", kid ? kid : "", kty);
			jwks_free(set);
			set = NULL;
			goto done;
		}
		set->n++;
	}
done:
	json_decref(root);
	return set;
}

void
jwks_free(struct jwks *set)
{
	size_t i;

	if (set == NULL)
		return;
	for (i = 0; i < set->n; i++) {
		EVP_PKEY_free(set->keys[i].pkey);
		if (set->keys[i].secret != NULL)
			OPENSSL_cleanse(set->keys[i].secret, set->keys[i].slen);
		free(set->keys[i].secret);
	}
	free(set->keys);
	free(set);
}

/* ES256 signatures are r||s; OpenSSL verifies DER. */
static bool
es256_der(const unsigned char *sig, size_t len, unsigned char **der,
    int *dlen)
{
	ECDSA_SIG *s;
	BIGNUM *r, *ss;

	if (len != 64 || (s = ECDSA_SIG_new()) == NULL)
		return false;
	r = BN_bin2bn(sig, 32, NULL);
	ss = BN_bin2bn(sig + 32, 32, NULL);
	if (r == NULL || ss == NULL || !ECDSA_SIG_set0(s, r, ss)) {
		BN_free(r);
		BN_free(ss);
		ECDSA_SIG_free(s);
		return false;
	}
	*der = NULL;
	*dlen = i2d_ECDSA_SIG(s, der);
	ECDSA_SIG_free(s);
	return *dlen > 0;
}

static bool
verify_with(const struct jwk *k, const char *input, size_t ilen,
    const unsigned char *sig, size_t slen)
{
	unsigned char mac[32], *der = NULL;
	unsigned int maclen = 0;
	EVP_MD_CTX *md;
	int dlen = 0;
	bool ok;

	if (k->type == JWK_OCT) {
		if (HMAC(EVP_sha256(), k->secret, (int)k->slen,
		    (const unsigned char *)input, ilen, mac, &maclen) == NULL)
			return false;
		return slen == 32 && maclen == 32 &&
		    CRYPTO_memcmp(mac, sig, 32) == 0;
	}
	if (k->type == JWK_EC) {
		if (!es256_der(sig, slen, &der, &dlen))
			return false;
		sig = der;
		slen = (size_t)dlen;
	}
	if ((md = EVP_MD_CTX_new()) == NULL) {
		OPENSSL_free(der);
		return false;
	}
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1
	    && EVP_DigestVerify(md, sig, slen, (const unsigned char *)input,
	    ilen) == 1;
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	return ok;
}

/* JSON of a token part. */
static json_t *
part_json(const char *p, size_t n)
{
	unsigned char buf[TOKEN_MAX];
	ssize_t len = jwt_b64url(p, n, buf, sizeof(buf));

	if (len <= 0)
		return NULL;
	return json_loadb((const char *)buf, (size_t)len, 0, NULL);
}

static bool
aud_ok(const struct jwt_cfg *c, json_t *aud)
{
	size_t i, j;
	json_t *v;

	if (c->naudiences == 0)
		return true;
	for (i = 0; i < c->naudiences; i++) {
		if (json_is_string(aud) &&
		    strcmp(json_string_value(aud), c->audiences[i]) == 0)
			return true;
		if (json_is_array(aud))
			json_array_foreach(aud, j, v)
				if (json_is_string(v) && strcmp(
				    json_string_value(v), c->audiences[i]) == 0)
					return true;
	}
	return false;
}

const char *
jwt_verify(const struct jwt_cfg *c, const struct jwks *set, const char *tok,
    size_t len, time_t now, json_t **claims_out)
{
	const char *d1, *d2, *alg, *kid;
	unsigned char sig[1024];
	json_t *hdr = NULL, *claims = NULL, *v;
	enum jwk_type want;
	const char *why = NULL;
	ssize_t slen;
	size_t i;
	bool tried = false, good = false;

	*claims_out = NULL;
	if (len > TOKEN_MAX || (d1 = memchr(tok, '.', len)) == NULL ||
	    (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok))) == NULL ||
	    memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)) != NULL)
		return "malformed token";
	if ((hdr = part_json(tok, (size_t)(d1 - tok))) == NULL ||
	    (claims = part_json(d1 + 1, (size_t)(d2 - d1 - 1))) == NULL ||
	    !json_is_object(claims)) {
		why = "malformed token";
		goto done;
	}
	alg = json_string_value(json_object_get(hdr, "alg"));
	kid = json_string_value(json_object_get(hdr, "kid"));
	if (alg == NULL || (strcmp(alg, "HS256") != 0 &&
	    strcmp(alg, "RS256") != 0 && strcmp(alg, "ES256") != 0)) {
		why = "unsupported alg";
		goto done;
	}
	want = alg[0] == 'H' ? JWK_OCT : alg[0] == 'R' ? JWK_RSA : JWK_EC;
	slen = jwt_b64url(d2 + 1, len - (size_t)(d2 + 1 - tok), sig,
	    sizeof(sig));
	if (slen <= 0) {
		why = "malformed signature";
		goto done;
	}
	for (i = 0; i < set->n && !good; i++) {
		const struct jwk *k = &set->keys[i];

		if (k->type != want || (kid != NULL && k->kid[0] != '\0' &&
		    strcmp(kid, k->kid) != 0))
			continue;
		tried = true;
		good = verify_with(k, tok, (size_t)(d2 - tok), sig,
		    (size_t)slen);
	}
	if (!good) {
		why = tried ? "bad signature" : "no key for this token";
		goto done;
	}
	if ((v = json_object_get(claims, "exp")) != NULL &&
	    (!json_is_number(v) || json_number_value(v) + JWT_LEEWAY <
	    (double)now)) {
		why = "token expired";
		goto done;
	}
	if ((v = json_object_get(claims, "nbf")) != NULL &&
	    (!json_is_number(v) || json_number_value(v) - JWT_LEEWAY >
	    (double)now)) {
		why = "token not yet valid";
		goto done;
	}
	if (c->issuer != NULL && ((v = json_object_get(claims, "iss")) ==
	    NULL || !json_is_string(v) || strcmp(json_string_value(v),
	    c->issuer) != 0)) {
		why = "wrong issuer";
		goto done;
	}
	if (!aud_ok(c, json_object_get(claims, "aud"))) {
		why = "wrong audience";
		goto done;
	}
	*claims_out = claims;
	claims = NULL;
done:
	json_decref(hdr);
	json_decref(claims);
	return why;
}
