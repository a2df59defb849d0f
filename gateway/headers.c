/*
 * Which headers cross the gateway, in each direction.  Hop-by-hop fields
 * (RFC 9110 section 7.6.1: Connection and what it names, Keep-Alive, TE,
 * Trailer, Transfer-Encoding, Upgrade, Proxy-*) stop here; framing is
 * agate's to set on each side; the X-Forwarded-* family tells the upstream
 * who really called.
 */
#include <string.h>
#include <strings.h>

#include "gateway/gateway.h"
#include "worker/http.h"

bool
headers_hop_by_hop(const char *n, size_t len)
{
	return http_token_eq(n, len, "connection") ||
	    http_token_eq(n, len, "keep-alive") ||
	    http_token_eq(n, len, "te") ||
	    http_token_eq(n, len, "trailer") ||
	    http_token_eq(n, len, "transfer-encoding") ||
	    http_token_eq(n, len, "upgrade") ||
	    (len >= 6 && strncasecmp(n, "proxy-", 6) == 0);
}

/* Whether name is one of the tokens of a Connection value. */
static bool
listed_in(const char *name, size_t len, const char *conn, size_t clen)
{
	const char *p = conn, *end = conn + clen;

	while (p < end) {
		const char *t;
		size_t tl;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		t = p;
		while (p < end && *p != ',' && *p != ' ' && *p != '\t')
			p++;
		tl = (size_t)(p - t);
		if (tl == len && strncasecmp(t, name, len) == 0)
			return true;
	}
	return false;
}

static bool
named_by_connection(const struct http_head *h, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];

		if (http_token_eq(f->name, f->name_len, "connection") &&
		    listed_in(name, len, f->value, f->value_len))
			return true;
	}
	return false;
}

/* Headers agate sets itself towards the upstream. */
static bool
replaced_upstream(const char *n, size_t len)
{
	return http_token_eq(n, len, "host") ||
	    http_token_eq(n, len, "content-length") ||
	    http_token_eq(n, len, "expect") ||
	    http_token_eq(n, len, "x-forwarded-for") ||
	    http_token_eq(n, len, "x-forwarded-proto") ||
	    http_token_eq(n, len, "x-forwarded-host") ||
	    http_token_eq(n, len, "x-request-id");
}

/*
 * X-Forwarded-For: what a trusted proxy sent, then the peer we saw.  An
 * untrusted peer's own value is dropped: backends read the leftmost
 * address as the client, and anyone can write one.
 */
static int
emit_xff(const struct request *r, header_emit_fn emit, void *arg,
    struct buf *v)
{
	const char *peer = req_peer(r);
	size_t i;
	int rc = 0;

	buf_reset(v);
	for (i = 0; req_peer_trusted(r) && i < r->head.nheaders; i++) {
		const struct http_header *f = &r->head.headers[i];

		if (!http_token_eq(f->name, f->name_len, "x-forwarded-for") ||
		    f->value_len == 0)
			continue;
		rc |= buf_append(v, f->value, f->value_len);
		rc |= buf_append(v, ", ", 2);
	}
	rc |= buf_append(v, peer, strlen(peer));
	if (rc != 0)
		return -1;
	return emit(arg, "X-Forwarded-For", 15, v->data, v->len);
}

/* Fields agate adds (verified claims): the client's own are dropped. */
static bool
added_by_agate(const struct request *r, const char *name, size_t len)
{
	const struct jwt_cfg *j;
	size_t i;

	if (r->route == NULL || !r->route->auth.jwt_enabled)
		return false;
	j = &r->route->auth.jwt;
	for (i = 0; i < j->nclaims; i++)
		if (strlen(j->claim_headers[i]) == len &&
		    strncasecmp(j->claim_headers[i], name, len) == 0)
			return true;
	return false;
}

static int
emit_added(const struct request *r, header_emit_fn emit, void *arg)
{
	const char *p, *end;
	uint16_t nl, vl;

	if (r->up_extra == NULL)
		return 0;
	p = buf_head(r->up_extra);
	end = p + buf_pending(r->up_extra);
	while (end - p >= 4) {
		memcpy(&nl, p, 2);
		if ((size_t)(end - p) < 4u + nl)
			break;
		memcpy(&vl, p + 2 + nl, 2);
		if ((size_t)(end - p) < 4u + nl + vl)
			break;
		if (emit(arg, p + 2, nl, p + 4 + nl, vl) == -1)
			return -1;
		p += 4 + nl + vl;
	}
	return 0;
}

int
headers_upstream_request(const struct request *r, header_emit_fn emit,
    void *arg, struct buf *scratch)
{
	const struct http_head *h = &r->head;
	size_t i;

	for (i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];

		if (headers_hop_by_hop(f->name, f->name_len) ||
		    replaced_upstream(f->name, f->name_len) ||
		    named_by_connection(h, f->name, f->name_len) ||
		    added_by_agate(r, f->name, f->name_len))
			continue;
		if (emit(arg, f->name, f->name_len, f->value, f->value_len)
		    == -1)
			return -1;
	}
	if (emit_added(r, emit, arg) == -1)
		return -1;
	/* gRPC servers want to be told that trailers are read (RFC 9113
	 * 8.2.2 allows this one TE value over HTTP/2). */
	if (req_grpc(r) && emit(arg, "TE", 2, "trailers", 8) == -1)
		return -1;
	if (emit_xff(r, emit, arg, scratch) == -1 ||
	    emit(arg, "X-Forwarded-Proto", 17, req_tls(r) ? "https" : "http",
	    req_tls(r) ? 5 : 4) == -1)
		return -1;
	if (h->host_len > 0 && emit(arg, "X-Forwarded-Host", 16, h->host,
	    h->host_len) == -1)
		return -1;
	return emit(arg, "X-Request-Id", 12, r->id, r->id_len);
}

struct resp_line {
	const char	*name;
	size_t		 nlen;
	const char	*value;
	size_t		 vlen;
};

/* Splits "Name: value" off raw; returns bytes used, 0 at the end, -1 bad. */
static long
next_line(const char *raw, size_t len, struct resp_line *l)
{
	const char *eol = memchr(raw, '\n', len), *colon, *v, *ve;
	size_t n;

	if (len == 0)
		return 0;
	if (eol == NULL)
		return -1;
	n = (size_t)(eol - raw) + 1;
	ve = eol;
	if (ve > raw && ve[-1] == '\r')
		ve--;
	if (ve == raw)
		return 0;			/* the blank line */
	if ((colon = memchr(raw, ':', (size_t)(ve - raw))) == NULL ||
	    colon == raw)
		return -1;
	l->name = raw;
	l->nlen = (size_t)(colon - raw);
	for (v = colon + 1; v < ve && (*v == ' ' || *v == '\t'); v++)
		;
	while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
		ve--;
	l->value = v;
	l->vlen = (size_t)(ve - v);
	return (long)n;
}

static bool
value_ok(const char *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c != '\t' && (c < ' ' || c == 0x7f))
			return false;
	}
	return true;
}

static bool
name_ok(const char *n, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)n[i] <= ' ' || n[i] == 0x7f || n[i] == ':')
			return false;
	return true;
}

#define RESP_MAX_FIELDS		128	/* as HAProxy's tune.http.maxhdr */
#define RESP_MAX_CONN_TOKENS	32

struct conn_tokens {
	struct {
		const char	*p;
		size_t		 n;
	}		 t[RESP_MAX_CONN_TOKENS];
	size_t		 n;
};

/*
 * One pass over a response head: counts its fields and collects the
 * tokens of every Connection field.  Fails on too many of either, so a
 * hostile upstream cannot make filtering cost more than linear time.
 */
static int
response_scan(const char *raw, size_t len, struct conn_tokens *ct)
{
	struct resp_line l;
	size_t fields = 0;
	long n;

	ct->n = 0;
	while ((n = next_line(raw, len, &l)) > 0) {
		raw += n;
		len -= (size_t)n;
		if (++fields > RESP_MAX_FIELDS)
			return -1;
		if (!http_token_eq(l.name, l.nlen, "connection"))
			continue;
		const char *p = l.value, *end = l.value + l.vlen;

		while (p < end) {
			const char *t;

			while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
				p++;
			t = p;
			while (p < end && *p != ',' && *p != ' ' && *p != '\t')
				p++;
			if (p == t)
				continue;
			if (ct->n == RESP_MAX_CONN_TOKENS)
				return -1;
			ct->t[ct->n].p = t;
			ct->t[ct->n].n = (size_t)(p - t);
			ct->n++;
		}
	}
	return n < 0 ? -1 : 0;
}

static bool
conn_token_names(const struct conn_tokens *ct, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < ct->n; i++)
		if (ct->t[i].n == len && strncasecmp(ct->t[i].p, name, len) == 0)
			return true;
	return false;
}

int
headers_upstream_response(const char *raw, size_t len, const char *id,
    size_t id_len, struct buf *out, int64_t *content_length)
{
	struct conn_tokens ct;
	struct resp_line l;
	bool chunked = false;
	long n;
	int rc = 0;

	*content_length = -1;
	if (response_scan(raw, len, &ct) == -1)
		return -1;
	while ((n = next_line(raw, len, &l)) > 0) {
		raw += n;
		len -= (size_t)n;
		if (!name_ok(l.name, l.nlen) || !value_ok(l.value, l.vlen))
			return -1;
		if (http_token_eq(l.name, l.nlen, "content-length")) {
			int64_t v = 0;
			size_t i;

			for (i = 0; i < l.vlen; i++) {
				if (l.value[i] < '0' || l.value[i] > '9' ||
				    v > (INT64_MAX - 9) / 10)
					return -1;
				v = v * 10 + (l.value[i] - '0');
			}
			if (l.vlen == 0 || (*content_length != -1 &&
			    *content_length != v))
				return -1;
			*content_length = v;
			continue;
		}
		chunked |= http_token_eq(l.name, l.nlen, "transfer-encoding");
		if (headers_hop_by_hop(l.name, l.nlen) ||
		    http_token_eq(l.name, l.nlen, "x-request-id") ||
		    conn_token_names(&ct, l.name, l.nlen))
			continue;
		rc |= buf_append(out, l.name, l.nlen);
		rc |= buf_append(out, ": ", 2);
		rc |= buf_append(out, l.value, l.vlen);
		rc |= buf_append(out, "\r\n", 2);
	}
	if (n < 0)
		return -1;
	/* Both framings: the chunked one wins (RFC 9112 section 6.3). */
	if (chunked)
		*content_length = -1;
	rc |= buf_append(out, "X-Request-Id: ", 14);
	rc |= buf_append(out, id, id_len);
	rc |= buf_append(out, "\r\n", 2);
	return rc == 0 ? 0 : -1;
}

int
headers_upgrade_response(const char *raw, size_t len, const char *id,
    size_t id_len, struct buf *out)
{
	struct resp_line l;
	int64_t clen;
	long n;
	int rc = 0;

	if (headers_upstream_response(raw, len, id, id_len, out, &clen) == -1)
		return -1;
	while ((n = next_line(raw, len, &l)) > 0) {
		raw += n;
		len -= (size_t)n;
		if (!http_token_eq(l.name, l.nlen, "upgrade"))
			continue;
		rc |= buf_append(out, "Upgrade: ", 9);
		rc |= buf_append(out, l.value, l.vlen);
		rc |= buf_append(out, "\r\n", 2);
	}
	return rc == 0 ? 0 : -1;
}

bool
headers_connection_lists(const struct http_head *h, const char *token)
{
	return named_by_connection(h, token, strlen(token));
}

size_t
headers_find_field(const char *raw, size_t len, const char *name,
    const char **value, size_t *vlen)
{
	struct resp_line l;
	size_t found = 0;
	long n;

	while ((n = next_line(raw, len, &l)) > 0) {
		raw += n;
		len -= (size_t)n;
		if (!http_token_eq(l.name, l.nlen, name))
			continue;
		if (found++ == 0) {
			*value = l.value;
			*vlen = l.vlen;
		}
	}
	return found;
}

int
headers_next_field(const char **raw, size_t *len, const char **name,
    size_t *nlen, const char **value, size_t *vlen)
{
	struct resp_line l;
	long n;

	if ((n = next_line(*raw, *len, &l)) <= 0)
		return (int)n;
	*raw += n;
	*len -= (size_t)n;
	*name = l.name;
	*nlen = l.nlen;
	*value = l.value;
	*vlen = l.vlen;
	return 1;
}

uint64_t
headers_grpc_timeout_ms(const struct request *r)
{
	const struct http_header *h = req_header(r, "grpc-timeout");
	uint64_t v = 0, ms;
	size_t i;

	/* 1 to 8 digits and a unit: H, M, S, m, u or n (gRPC over HTTP/2). */
	if (h == NULL || h->value_len < 2 || h->value_len > 9)
		return 0;
	for (i = 0; i + 1 < h->value_len; i++) {
		if (h->value[i] < '0' || h->value[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(h->value[i] - '0');
	}
	switch (h->value[h->value_len - 1]) {
	case 'H':
		ms = v * 3600000;
		break;
	case 'M':
		ms = v * 60000;
		break;
	case 'S':
		ms = v * 1000;
		break;
	case 'm':
		ms = v;
		break;
	case 'u':
		ms = v / 1000;
		break;
	case 'n':
		ms = v / 1000000;
		break;
	default:
		return 0;
	}
	return ms > 0 ? ms : 1;		/* a deadline under 1 ms: 1 ms */
}
