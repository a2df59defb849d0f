/*
 * API keys (route `auth.api_keys: {file, header}`).  The file holds one
 * SHA-256 of a key per line, in hex (`printf %s KEY | sha256sum`), with
 * an optional name after it and # comments; agate never sees the keys
 * themselves at rest.  It is read when the config is loaded, so a reload
 * re-reads it and a bad line keeps the old config.  A request's key is
 * hashed and compared with every entry in constant time (no early exit:
 * the time does not tell how far a guess got or where it matched).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "gateway/apikeys.h"
#include "lib/encode.h"
#include "gateway/gateway.h"

struct apikeys *
apikeys_load(const char *path, struct arena *a, char *err, size_t errlen)
{
	struct apikeys *k = NULL;
	unsigned char (*h)[32] = NULL, (*grown)[32];
	size_t n = 0, cap = 0, len = 0;
	char *line = NULL;
	int lineno = 0;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s:1:1: cannot read: %s", path,
		    strerror(errno));
		return NULL;
	}
	while (getline(&line, &len, f) != -1) {
		char *p = line;

		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((grown = realloc(h, cap * sizeof(*h))) == NULL) {
				snprintf(err, errlen, "%s:%d:1: out of memory",
				    path, lineno);
				goto done;
			}
			h = grown;
		}
		if (strnlen(p, 64) < 64 || hex_decode(p, h[n], 32) == -1 ||
		    (p[64] != '\0' && !isspace((unsigned char)p[64]))) {
			snprintf(err, errlen, "%s:%d:%d: expected the SHA-256 of "
			    "a key as 64 hex digits (printf %%s KEY | sha256sum), "
			    "not the key itself", path, lineno,
			    (int)(p - line) + 1);
			goto done;
		}
		n++;
	}
	if (n == 0) {
		snprintf(err, errlen, "%s:1:1: no keys (lines of 64 hex digits)",
		    path);
		goto done;
	}
	if ((k = arena_alloc(a, sizeof(*k))) == NULL ||
	    (k->hash = arena_alloc(a, n * sizeof(*h))) == NULL) {
		snprintf(err, errlen, "%s:1:1: out of memory", path);
		k = NULL;
		goto done;
	}
	memcpy(k->hash, h, n * sizeof(*h));
	k->n = n;
done:
	free(h);
	free(line);
	fclose(f);
	return k;
}

bool
apikeys_match(const struct apikeys *k, const char *key, size_t len)
{
	unsigned char d[32];
	int hit = 0;
	size_t i;

	SHA256((const unsigned char *)key, len, d);
	for (i = 0; i < k->n; i++)
		hit |= CRYPTO_memcmp(k->hash[i], d, 32) == 0;
	return hit != 0;
}

bool
apikeys_request(struct request *r)
{
	const struct auth_cfg *a = &r->route->auth;
	const struct http_header *h = req_header(r, a->api_keys_header);
	char extra[160];

	snprintf(extra, sizeof(extra), "WWW-Authenticate: ApiKey "
	    "header=\"%s\"\r\n", a->api_keys_header);
	if (h == NULL || h->value_len == 0) {
		req_error(r, 401, "API key required", extra);
		return false;
	}
	if (!apikeys_match(a->api_keys, h->value, h->value_len)) {
		req_error(r, 401, "invalid API key", extra);
		return false;
	}
	return true;
}
