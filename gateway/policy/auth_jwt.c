/*
 * The JWT stage (route `auth.jwt: {keys, issuer, audience,
 * forward_claims}`): a request needs `Authorization: Bearer <token>` whose
 * token jwt_verify() (jwt.c) accepts, else 401 with `WWW-Authenticate:
 * Bearer ... error="invalid_token"`.  Verified claims named in
 * forward_claims go to the upstream as headers; the same headers from the
 * client are dropped, so they cannot be forged.
 *
 * A client sends the same token with request after request: a small
 * per-worker cache of verified tokens (the whole token compared, its exp
 * kept) skips the decoding, the JSON and the signature for the next ones.
 * Entries belong to one route's settings, and a worker's settings never
 * change (a reload brings new workers), so a hit needs no other check
 * than exp.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "gateway/config/config.h"
#include "gateway/policy/jwt.h"
#include "gateway/stage.h"
#include "worker/http.h"

#define CACHE_SLOTS	512
#define CACHE_TOKEN_MAX	2048

struct jwt_cached {
	const struct jwt_cfg	*cfg;
	uint64_t		 hash;
	char			*tok;		/* NULL: empty */
	size_t			 len;
	double			 exp;		/* 0: none */
	char			**names;	/* forwarded claims, rendered */
	char			**values;
	size_t			 n;
};

static struct jwt_cached cache[CACHE_SLOTS];

static uint64_t
tok_hash(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	while (n-- > 0)
		h = (h ^ (unsigned char)*p++) * 1099511628211ULL;
	return h;
}

static void
cache_clear(struct jwt_cached *e)
{
	size_t i;

	for (i = 0; i < e->n; i++) {
		free(e->names[i]);
		free(e->values[i]);
	}
	free(e->names);
	free(e->values);
	free(e->tok);
	memset(e, 0, sizeof(*e));
}

static struct jwt_cached *
cache_find(const struct jwt_cfg *c, const char *tok, size_t len, time_t now)
{
	uint64_t h = tok_hash(tok, len);
	struct jwt_cached *e = &cache[h % CACHE_SLOTS];

	if (e->tok == NULL || e->cfg != c || e->hash != h || e->len != len ||
	    memcmp(e->tok, tok, len) != 0)
		return NULL;
	if (e->exp != 0 && e->exp + JWT_LEEWAY < (double)now) {
		cache_clear(e);			/* expired since */
		return NULL;
	}
	return e;
}

/* Adds a forwarded claim to r, and to the cache entry (if any). */
static int
forward(struct request *r, struct jwt_cached *e, const char *name,
    const char *value)
{
	if (e != NULL) {
		char **nn = realloc(e->names, (e->n + 1) * sizeof(char *));
		char **vv = nn ? realloc(e->values, (e->n + 1) *
		    sizeof(char *)) : NULL;

		if (nn != NULL)
			e->names = nn;
		if (vv != NULL) {
			e->values = vv;
			e->names[e->n] = strdup(name);
			e->values[e->n] = strdup(value);
			if (e->names[e->n] != NULL && e->values[e->n] != NULL)
				e->n++;
		}
	}
	return req_upstream_header(r, name, value);
}

static enum stage_result
jwt_run(struct request *r)
{
	const struct jwt_cfg *c = &r->route->auth.jwt;
	const struct http_header *h = req_header(r, "authorization");
	const char *tok, *why;
	struct jwt_cached *e = NULL;
	char extra[256];
	json_t *claims, *exp;
	size_t len, i;
	time_t now;

	if (h == NULL || h->value_len < 7 ||
	    strncasecmp(h->value, "bearer ", 7) != 0) {
		req_error(r, 401, "bearer token required", "WWW-Authenticate: "
		    "Bearer realm=\"agate\"\r\n");
		return STAGE_DONE;
	}
	tok = h->value + 7;
	len = h->value_len - 7;
	while (len > 0 && *tok == ' ') {
		tok++;
		len--;
	}
	now = time(NULL);
	if ((e = cache_find(c, tok, len, now)) != NULL) {
		for (i = 0; i < e->n; i++)
			if (req_upstream_header(r, e->names[i], e->values[i]) ==
			    -1) {
				req_error(r, 500, "out of memory", NULL);
				return STAGE_DONE;
			}
		return STAGE_NEXT;
	}
	why = jwt_verify(c, c->set, tok, len, now, &claims);
	if (why != NULL) {
		snprintf(extra, sizeof(extra), "WWW-Authenticate: Bearer "
		    "realm=\"agate\", error=\"invalid_token\", "
		    "error_description=\"%s\"\r\n", why);
		req_error(r, 401, why, extra);
		return STAGE_DONE;
	}
	if (len <= CACHE_TOKEN_MAX) {
		e = &cache[tok_hash(tok, len) % CACHE_SLOTS];
		cache_clear(e);
		if ((e->tok = malloc(len)) != NULL) {
			memcpy(e->tok, tok, len);
			e->len = len;
			e->hash = tok_hash(tok, len);
			e->cfg = c;
			exp = json_object_get(claims, "exp");
			e->exp = json_is_number(exp) ? json_number_value(exp) : 0;
		} else
			e = NULL;
	}
	for (i = 0; i < c->nclaims; i++) {
		json_t *v = json_object_get(claims, c->claims[i]);
		char num[32];
		const char *s = NULL;

		if (json_is_string(v))
			s = json_string_value(v);
		else if (json_is_integer(v)) {
			snprintf(num, sizeof(num), "%lld",
			    (long long)json_integer_value(v));
			s = num;
		} else if (json_is_boolean(v))
			s = json_is_true(v) ? "true" : "false";
		if (s != NULL && strpbrk(s, "\r\n") == NULL &&
		    forward(r, e, c->claim_headers[i], s) == -1) {
			json_decref(claims);
			req_error(r, 500, "out of memory", NULL);
			return STAGE_DONE;
		}
	}
	json_decref(claims);
	return STAGE_NEXT;
}

static bool
jwt_wanted(const struct route_cfg *rt)
{
	return rt->auth.jwt_enabled;
}

const struct stage jwt_stage = {
	.name = "jwt", .wanted = jwt_wanted, .run = jwt_run,
};
