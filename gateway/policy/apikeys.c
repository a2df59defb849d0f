/*
 * API keys (route `auth.api_keys: {file, header}`).  The file holds one
 * SHA-256 of a key per line, in hex (`printf %s KEY | sha256sum`), with
 * an optional name after it and # comments; agate never sees the keys
 * themselves at rest.  It is read when the config is loaded, so a reload
 * re-reads it and a bad line keeps the old config.  A request's key is
 * hashed and compared with every entry in constant time (no early exit:
 * the time does not tell how far a guess got or where it matched).
 * The route's stage is auth_apikeys.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "gateway/config/config.h"
#include "gateway/policy/apikeys.h"
#include "lib/encode.h"
#include "lib/lines.h"

struct reading {
	const char		*path;
	unsigned char		(*hash)[32];
	size_t			 n, cap;
	char			*err;
	size_t			 errlen;
};

static int
read_key(void *arg, int lineno, int col, char *p)
{
	struct reading *rd = arg;
	unsigned char (*grown)[32];

	if (rd->n == rd->cap) {
		rd->cap = rd->cap ? rd->cap * 2 : 16;
		if ((grown = realloc(rd->hash, rd->cap * sizeof(*grown))) ==
		    NULL) {
			snprintf(rd->err, rd->errlen, "%s:%d:1: out of memory",
			    rd->path, lineno);
			return -1;
		}
		rd->hash = grown;
	}
	if (strnlen(p, 64) < 64 || hex_decode(p, rd->hash[rd->n], 32) == -1 ||
	    (p[64] != '\0' && !isspace((unsigned char)p[64]))) {
		snprintf(rd->err, rd->errlen, "%s:%d:%d: expected the SHA-256 "
		    "of a key as 64 hex digits (printf %%s KEY | sha256sum), "
		    "not the key itself", rd->path, lineno, col);
		return -1;
	}
	rd->n++;
	return 0;
}

struct apikeys *
apikeys_load(const char *path, struct arena *a, char *err, size_t errlen)
{
	struct reading rd = { path, NULL, 0, 0, err, errlen };
	struct apikeys *k = NULL;

	if (lines_read(path, read_key, &rd, err, errlen) == -1)
		goto done;
	if (rd.n == 0) {
		snprintf(err, errlen, "%s:1:1: no keys (lines of 64 hex digits)",
		    path);
		goto done;
	}
	if ((k = arena_alloc(a, sizeof(*k))) == NULL ||
	    (k->hash = arena_alloc(a, rd.n * sizeof(*rd.hash))) == NULL) {
		snprintf(err, errlen, "%s:1:1: out of memory", path);
		k = NULL;
		goto done;
	}
	memcpy(k->hash, rd.hash, rd.n * sizeof(*rd.hash));
	k->n = rd.n;
done:
	free(rd.hash);
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
