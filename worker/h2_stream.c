/*
 * A stream of an HTTP/2 client connection as a request (h2_stream.h).
 *
 * Its header fields are kept as they came (length-prefixed in `hdrs`),
 * and once the block is whole, r->head points into them: pseudo-fields
 * become the method, path and Host, the rest the headers, Cookie fields
 * joined for HTTP/1.1 upstreams.  The request then goes to the gateway
 * as any other.
 *
 * h2_carrier is how the gateway answers on a stream: the answer's bytes
 * wait in the stream's `out` buffer and a data source hands them to the
 * session as DATA frames as the window allows (trailers, for gRPC, as
 * the final HEADERS frame); its body bytes wait in `in` until read, and
 * only then does the window open again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "lib/encode.h"
#include "lib/log.h"
#include "worker/conn.h"
#include "worker/h2_stream.h"
#include "worker/tls.h"
#include "worker/tunnel.h"
#include "worker/path.h"
#include "worker/worker.h"

static struct h2stream *
h2_stream_of(const struct request *r)
{
	return r->carrier_arg;
}

/* -- requests from streams ------------------------------------------------ */

int
h2_field(struct h2stream *st, const uint8_t *name, size_t nlen,
    const uint8_t *value, size_t vlen)
{
	uint16_t n16 = (uint16_t)nlen, v16 = (uint16_t)vlen;

	return buf_append(&st->hdrs, (char *)&n16, 2) |
	    buf_append(&st->hdrs, (const char *)name, nlen) |
	    buf_append(&st->hdrs, (char *)&v16, 2) |
	    buf_append(&st->hdrs, (const char *)value, vlen);
}

/* Splits :path into path and query, as the HTTP/1.1 parser does. */
static void
h2_target(struct http_head *hd, const char *v, size_t n)
{
	const char *q = memchr(v, '?', n);

	hd->target = v;
	hd->target_len = n;
	hd->path = v;
	hd->path_len = q != NULL ? (size_t)(q - v) : n;
	if (q != NULL) {
		hd->query = q + 1;
		hd->query_len = n - hd->path_len - 1;
	}
}

/* Content-Length: digits only; -1 if absent, -2 if malformed. */
static int64_t
h2_length(const char *v, size_t n)
{
	int64_t x = 0;
	size_t i;

	if (n == 0)
		return -2;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9' || x > (INT64_MAX - 9) / 10)
			return -2;
		x = x * 10 + (v[i] - '0');
	}
	return x;
}

/*
 * An HTTP/2 client may split Cookie into several fields; an HTTP/1.1
 * upstream must get one, joined with "; " (RFC 9113 section 8.2.3).
 */
static int
h2_join_cookies(struct h2stream *st, struct http_head *hd)
{
	size_t i, first = SIZE_MAX, k = 0;

	for (i = 0; i < hd->nheaders; i++)
		if (http_token_eq(hd->headers[i].name,
		    hd->headers[i].name_len, "cookie")) {
			if (first == SIZE_MAX)
				first = i;
			k++;
		}
	if (k < 2)
		return 0;
	for (i = first; i < hd->nheaders; i++) {
		const struct http_header *f = &hd->headers[i];

		if (!http_token_eq(f->name, f->name_len, "cookie"))
			continue;
		if ((st->cookie.len > 0 && buf_append(&st->cookie, "; ", 2)) ||
		    buf_append(&st->cookie, f->value, f->value_len))
			return -1;
	}
	hd->headers[first].value = st->cookie.data;
	hd->headers[first].value_len = (uint32_t)st->cookie.len;
	for (i = k = first + 1; i < hd->nheaders; i++)
		if (!http_token_eq(hd->headers[i].name,
		    hd->headers[i].name_len, "cookie"))
			hd->headers[k++] = hd->headers[i];
	hd->nheaders = k;
	return 0;
}

/*
 * An extended CONNECT with :protocol websocket (RFC 8441) becomes, for
 * the gateway and the upstream, the HTTP/1.1 handshake: Upgrade and
 * Connection, and a Sec-WebSocket-Key of agate's (upgrade.c checks the
 * upstream's accept against it).  The client's Sec-WebSocket-Version,
 * -Protocol and -Extensions are its own.  0, or -1 (memory).
 */
static int
h2_xconnect(struct h2stream *st)
{
	const char *p = st->hdrs.data, *end = p + st->hdrs.len;
	bool connect = false, ws = false;
	unsigned char raw[16];
	char key[25];

	while (end - p >= 4) {
		uint16_t nl, vl;
		const char *name, *value;

		memcpy(&nl, p, 2);
		name = p + 2;
		memcpy(&vl, name + nl, 2);
		value = name + nl + 2;
		p = value + vl;
		if (http_token_eq(name, nl, ":method") &&
		    http_token_eq(value, vl, "CONNECT"))
			connect = true;
		else if (http_token_eq(name, nl, ":protocol") &&
		    http_token_eq(value, vl, "websocket"))
			ws = true;
	}
	if (!connect || !ws)
		return 0;
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	base64_encode(raw, sizeof(raw), key);
	st->xconnect = true;
	return h2_field(st, (const uint8_t *)"upgrade", 7,
	    (const uint8_t *)"websocket", 9) | h2_field(st,
	    (const uint8_t *)"connection", 10, (const uint8_t *)"upgrade", 7) |
	    h2_field(st, (const uint8_t *)"sec-websocket-key", 17,
	    (const uint8_t *)key, 24);
}

/*
 * Builds r->head from the stream's fields: pseudo-fields to method,
 * target and host, the rest to headers[].  Returns 0, or a status to
 * answer with (400, 431) and *why.
 */
static int
h2_head(struct h2stream *st, struct request *r, const char **why)
{
	struct http_head *hd = &r->head;
	char *p = st->hdrs.data, *end = p + st->hdrs.len;
	const char *authority = NULL, *protocol = NULL;
	size_t alen = 0, plen = 0;

	hd->minor = 1;
	hd->keepalive = true;
	hd->content_length = -1;
	while (end - p >= 4) {
		uint16_t nl, vl;
		char *name, *value;

		memcpy(&nl, p, 2);
		name = p + 2;
		memcpy(&vl, name + nl, 2);
		value = name + nl + 2;
		p = value + vl;
		if (nl > 0 && name[0] == ':') {
			if (http_token_eq(name, nl, ":method")) {
				hd->method = value;
				hd->method_len = vl;
			} else if (http_token_eq(name, nl, ":path"))
				h2_target(hd, value, vl);
			else if (http_token_eq(name, nl, ":authority")) {
				authority = value;
				alen = vl;
			} else if (http_token_eq(name, nl, ":protocol")) {
				protocol = value;
				plen = vl;
			}
			continue;
		}
		if (hd->nheaders == HTTP_MAX_HEADERS) {
			*why = "too many header fields";
			return 431;
		}
		hd->headers[hd->nheaders].name = name;
		hd->headers[hd->nheaders].name_len = nl;
		hd->headers[hd->nheaders].value = value;
		hd->headers[hd->nheaders].value_len = vl;
		hd->nheaders++;
		if (http_token_eq(name, nl, "host") && authority == NULL) {
			hd->host = value;
			hd->host_len = vl;
		} else if (http_token_eq(name, nl, "content-length")) {
			int64_t v = h2_length(value, vl);

			if (v == -2 || (hd->content_length >= 0 &&
			    hd->content_length != v)) {
				*why = "bad Content-Length";
				return 400;
			}
			hd->content_length = v;
		} else if (http_token_eq(name, nl, "expect") &&
		    http_token_eq(value, vl, "100-continue"))
			hd->expect_continue = true;
	}
	if (authority != NULL) {
		hd->host = authority;
		hd->host_len = alen;
	}
	if (h2_join_cookies(st, hd) == -1) {
		*why = "out of memory";
		return 503;
	}
	if (protocol != NULL) {
		/* An extended CONNECT (RFC 8441): only WebSocket, which
		 * goes upstream as an HTTP/1.1 GET with Upgrade. */
		if (!http_token_eq(protocol, plen, "websocket")) {
			*why = "only the websocket protocol can be tunnelled "
			    "over HTTP/2";
			return 501;
		}
		hd->method = "GET";
		hd->method_len = 3;
	}
	if (hd->method == NULL || hd->path == NULL) {
		/* CONNECT (no :path) is not proxied. */
		*why = hd->method != NULL && http_token_eq(hd->method,
		    hd->method_len, "CONNECT") ? "CONNECT is not supported" :
		    "missing :method or :path";
		return hd->method != NULL ? 405 : 400;
	}
	if (st->too_big) {
		*why = "request headers too large";
		return 431;
	}
	return 0;
}

/* The path as the router and the upstream see it (conn.c does the
 * same for HTTP/1.1). */
static bool
h2_normalize(struct request *r, const char **why)
{
	struct http_head *hd = &r->head;
	size_t n;

	if (hd->path_len == 0 || hd->path[0] != '/') {
		if (hd->path_len == 1 && hd->path[0] == '*')
			return true;
		*why = "path must start with /";
		return false;
	}
	if (hd->path_len == 1)
		return true;
	if ((n = path_normalize((char *)hd->path, hd->path_len, why)) == 0)
		return false;
	hd->path_len = n;
	return true;
}

/* The headers of stream st are complete: its request goes to the
 * gateway (or is answered here). */
void
h2_request(struct h2stream *st, bool end_stream)
{
	const struct config *cfg = worker.cfg;
	struct request *r;
	const char *why = NULL;
	int status;

	st->h->heading--;
	st->headed = true;
	if ((r = request_new_on(st->h->c, &h2_carrier)) == NULL) {
		nghttp2_submit_rst_stream(st->h->s, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_INTERNAL_ERROR);
		return;
	}
	st->r = r;
	r->carrier_arg = st;
	st->in_eof = end_stream;
	if (h2_xconnect(st) == -1) {
		nghttp2_submit_rst_stream(st->h->s, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_INTERNAL_ERROR);
		return;
	}
	status = h2_head(st, r, &why);
	request_identify(r);
	if (status == 0 && !h2_normalize(r, &why))
		status = 400;
	if (status == 0 && cfg->server.max_body_size > 0 &&
	    r->head.content_length > (int64_t)cfg->server.max_body_size) {
		status = 413;
		why = "request body too large";
	}
	if (end_stream || r->head.content_length == 0 || st->xconnect)
		r->body_done = true;	/* a tunnel's bytes are not a body */
	else if (r->head.content_length > 0)
		r->body_left = r->head.content_length;
	else
		r->body_chunked = true;	/* a body of unknown length */
	if (status != 0) {
		r->rejected = true;
		if (r->head.method == NULL) {
			r->head.method = "-";
			r->head.method_len = 1;
		}
		if (r->head.path == NULL) {
			r->head.path = "-";
			r->head.path_len = 1;
		}
		log_debug("h2 %s: stream %d: %d: %s", st->h->c->peer_str,
		    st->id, status, why);
		req_error(r, status, why, NULL);
		return;
	}
	worker.app->handle(r);
}

/* -- the carrier -------------------------------------------------------------- */

static size_t h2_nva_lines(nghttp2_nv *, size_t, size_t, char *, size_t *,
	    const char *, size_t);

/*
 * Header lines (a, then b) as HTTP/2 fields after `reserve` entries the
 * caller fills: names in lower case, connection fields left out.  The
 * arrays are on the stack for the usual few fields and KiB, else on the
 * heap (no field is ever dropped): h2_fields_done() frees them.
 */
struct h2_fields {
	nghttp2_nv	*nva;
	char		*names;
	size_t		 n;
	nghttp2_nv	 nva_small[48];
	char		 names_small[2048];
};

static int
h2_fields(struct h2_fields *f, size_t reserve, const char *a, size_t alen,
    const char *b, size_t blen)
{
	size_t lines = reserve + 1, used = 0, i;

	for (i = 0; i < alen; i++)
		lines += a[i] == '\n';
	for (i = 0; i < blen; i++)
		lines += b[i] == '\n';
	f->nva = lines <= 48 ? f->nva_small : malloc(lines * sizeof(*f->nva));
	f->names = alen + blen < sizeof(f->names_small) ? f->names_small :
	    malloc(alen + blen + 1);
	if (f->nva == NULL || f->names == NULL)
		return -1;
	f->n = h2_nva_lines(f->nva, reserve, lines, f->names, &used, a, alen);
	f->n = h2_nva_lines(f->nva, f->n, lines, f->names, &used, b, blen);
	return 0;
}

static void
h2_fields_done(struct h2_fields *f)
{
	if (f->nva != NULL && f->nva != f->nva_small)
		free(f->nva);
	if (f->names != NULL && f->names != f->names_small)
		free(f->names);
}

/* The answer's last DATA is out: its trailers end the stream instead
 * (allowed from inside the data source, as nghttp2 documents). */
static void
h2_eof(nghttp2_session *s, struct h2stream *st, uint32_t *flags)
{
	struct h2_fields f;

	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (st->trailers.len == 0)
		return;
	if (h2_fields(&f, 0, st->trailers.data, st->trailers.len, NULL, 0) ==
	    0 && f.n > 0 && nghttp2_submit_trailer(s, st->id, f.nva, f.n) == 0)
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
	h2_fields_done(&f);
}

static ssize_t
h2_source(nghttp2_session *s, int32_t id, uint8_t *dst, size_t len,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct h2stream *st = src->ptr;
	size_t n = buf_pending(&st->out);

	if (n == 0) {
		if (st->out_eof) {
			h2_eof(s, st, flags);
			return 0;
		}
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (n > len)
		n = len;
	memcpy(dst, buf_head(&st->out), n);
	buf_consume(&st->out, n);
	if (buf_pending(&st->out) == 0) {
		buf_reset(&st->out);
		if (st->out_eof)
			h2_eof(s, st, flags);
	}
	if (st->r != NULL && st->r->resp_paused &&
	    buf_pending(&st->out) < H2_OUT_LOW)
		st->wake = true;	/* after the send: no calls in here */
	return (ssize_t)n;
}

/* More for a stream whose data source was waiting. */
static void
h2_resume(struct h2stream *st)
{
	if (st->deferred && st->answered) {
		st->deferred = false;
		nghttp2_session_resume_data(st->h->s, st->id);
	}
	h2_kick(st->h);
}

/*
 * Whether the answer is its HEADERS frame alone: no body by its method
 * or status, an empty one (Content-Length: 0), or a gRPC "Trailers-Only"
 * answer (grpc-status among the headers: the status ends the stream).
 */
static bool
h2_nobody(const struct request *r, int status, int64_t content_length,
    const char *hdrs, size_t len)
{
	if (http_token_eq(r->head.method, r->head.method_len, "HEAD") ||
	    status < 200 || status == 204 || status == 304 ||
	    content_length == 0)
		return true;
	return req_grpc(r) && memmem(hdrs, len, "grpc-status:", 12) != NULL;
}

/* Appends the lines of hdrs ("Name: value\r\n"...) to nva, names in
 * lower case (RFC 9113 section 8.2.1), connection fields left out. */
static size_t
h2_nva_lines(nghttp2_nv *nva, size_t n, size_t max, char *lower,
    size_t *lused, const char *hdrs, size_t len)
{
	const char *p = hdrs, *end = hdrs + len;

	while (p < end && n < max) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *colon, *v, *ve;
		size_t nl, i;

		if (eol == NULL)
			break;
		ve = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
		colon = memchr(p, ':', (size_t)(ve - p));
		if (colon == NULL || colon == p) {
			p = eol + 1;
			continue;
		}
		nl = (size_t)(colon - p);
		for (v = colon + 1; v < ve && (*v == ' ' || *v == '\t'); v++)
			;
		if (!(http_token_eq(p, nl, "connection") ||
		    http_token_eq(p, nl, "keep-alive") ||
		    http_token_eq(p, nl, "proxy-connection") ||
		    http_token_eq(p, nl, "transfer-encoding") ||
		    http_token_eq(p, nl, "upgrade"))) {
			for (i = 0; i < nl; i++) {
				char ch = p[i];

				lower[*lused + i] = ch >= 'A' && ch <= 'Z' ?
				    (char)(ch + 32) : ch;
			}
			nva[n].name = (uint8_t *)lower + *lused;
			nva[n].namelen = nl;
			nva[n].value = (uint8_t *)(uintptr_t)v;
			nva[n].valuelen = (size_t)(ve - v);
			nva[n].flags = NGHTTP2_NV_FLAG_NONE;
			*lused += nl;
			n++;
		}
		p = eol + 1;
	}
	return n;
}

static int
h2_start_resp(struct request *r, int status, const char *reason,
    size_t reason_len, const char *hdrs, size_t hdrs_len,
    int64_t content_length)
{
	struct h2stream *st = h2_stream_of(r);
	nghttp2_data_provider prd = { .source.ptr = st,
	    .read_callback = h2_source };
	char code[8], clen[24];
	struct h2_fields f;
	bool nobody;
	int rv;

	if (st == NULL || st->h->c->closing)
		return -1;
	r->status = status;
	r->resp_started = true;
	nobody = h2_nobody(r, status, content_length, hdrs, hdrs_len);
	r->resp_nobody = nobody;
	/* :status first, content-length last: room for both. */
	if (h2_fields(&f, 1, hdrs, hdrs_len, r->resp_extra,
	    r->resp_extra_len) == -1) {
		h2_fields_done(&f);
		return -1;
	}
	snprintf(code, sizeof(code), "%d", status);
	f.nva[0] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)code, 7,
	    strlen(code), NGHTTP2_NV_FLAG_NONE };
	if (content_length >= 0 && status >= 200 && status != 204 &&
	    status != 304) {
		snprintf(clen, sizeof(clen), "%lld", (long long)content_length);
		f.nva[f.n++] = (nghttp2_nv){ (uint8_t *)"content-length",
		    (uint8_t *)clen, 14, strlen(clen), NGHTTP2_NV_FLAG_NONE };
	}
	(void)reason;
	(void)reason_len;
	rv = nghttp2_submit_response(st->h->s, st->id, f.nva, f.n,
	    nobody ? NULL : &prd);
	h2_fields_done(&f);
	if (rv != 0)
		return -1;
	st->answered = true;
	if (nobody)
		st->out_eof = true;
	h2_kick(st->h);
	return 0;
}

static int
h2_write(struct request *r, const char *data, size_t len)
{
	struct h2stream *st = h2_stream_of(r);

	if (st == NULL || st->h->c->closing)
		return -1;
	if (len == 0 || r->resp_nobody)
		return 0;
	if (buf_append(&st->out, data, len) == -1) {
		nghttp2_submit_rst_stream(st->h->s, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_INTERNAL_ERROR);
		h2_kick(st->h);
		return -1;
	}
	r->resp_bytes += len;
	if (buf_pending(&st->out) >= H2_OUT_HIGH)
		r->resp_paused = true;
	h2_resume(st);
	return 0;
}

static char *
h2_space(struct request *r, size_t want, size_t *got)
{
	struct h2stream *st = h2_stream_of(r);

	if (st == NULL || st->h->c->closing || r->resp_nobody ||
	    buf_reserve(&st->out, want) == -1)
		return NULL;
	*got = st->out.cap - st->out.len;
	return st->out.data + st->out.len;
}

static void
h2_commit(struct request *r, size_t n)
{
	struct h2stream *st = h2_stream_of(r);

	if (st == NULL || n == 0)
		return;
	st->out.len += n;
	r->resp_bytes += n;
	if (buf_pending(&st->out) >= H2_OUT_HIGH)
		r->resp_paused = true;
	h2_resume(st);
}

static int
h2_trailers(struct request *r, const char *fields, size_t len)
{
	struct h2stream *st = h2_stream_of(r);

	if (st == NULL || st->h->c->closing)
		return -1;
	return buf_append(&st->trailers, fields, len);
}

static void
h2_end(struct request *r)
{
	struct h2stream *st = h2_stream_of(r);

	if (st == NULL)
		return;
	st->out_eof = true;
	h2_resume(st);
}

static void
h2_fail(struct request *r, const char *why)
{
	struct h2stream *st = h2_stream_of(r);

	if (st == NULL)
		return;
	log_debug("h2 %s: stream %d: %s", st->h->c->peer_str, st->id, why);
	nghttp2_submit_rst_stream(st->h->s, NGHTTP2_FLAG_NONE, st->id,
	    NGHTTP2_INTERNAL_ERROR);
	h2_kick(st->h);
}

static bool
h2_full(const struct request *r)
{
	const struct h2stream *st = r->carrier_arg;

	return st != NULL && buf_pending(&st->out) >= H2_OUT_HIGH;
}

static void
h2_cont(struct request *r)
{
	struct h2stream *st = h2_stream_of(r);
	nghttp2_nv nv = { (uint8_t *)":status", (uint8_t *)"100", 7, 3,
	    NGHTTP2_NV_FLAG_NONE };

	if (st == NULL || st->answered)
		return;
	nghttp2_submit_headers(st->h->s, NGHTTP2_FLAG_NONE, st->id, NULL,
	    &nv, 1, NULL);
	h2_kick(st->h);
}

static ssize_t
h2_read(struct request *r, char *dst, size_t n)
{
	struct h2stream *st = h2_stream_of(r);
	uint64_t max = worker.cfg->server.max_body_size;
	size_t k;

	if (r->body_done || st == NULL)
		return 0;
	k = buf_pending(&st->in);
	if (k == 0) {
		if (!st->in_eof)
			return REQ_BODY_AGAIN;
		r->body_done = true;
		return 0;
	}
	if (k > n)
		k = n;
	memcpy(dst, buf_head(&st->in), k);
	buf_consume(&st->in, k);
	if (buf_pending(&st->in) == 0)
		buf_free(&st->in);
	r->body_bytes += k;
	/* Taken: the client may send that much more. */
	nghttp2_session_consume(st->h->s, st->id, k);
	h2_kick(st->h);
	if (max > 0 && r->body_bytes > max) {
		r->body_done = true;
		req_error(r, 413, "request body too large", NULL);
		return REQ_BODY_ERROR;
	}
	return (ssize_t)k;
}

static bool
h2_discard(struct request *r)
{
	struct h2stream *st = h2_stream_of(r);

	if (r->body_done)
		return true;
	if (st == NULL || !st->in_eof)
		return false;	/* the rest is reset with the stream */
	nghttp2_session_consume(st->h->s, st->id, buf_pending(&st->in));
	buf_free(&st->in);
	r->body_done = true;
	return true;
}

/* -- WebSocket over HTTP/2: the stream as a tunnel's client side -------- */

static ssize_t
hs_recv(struct tunnel *t, void *p, size_t n)
{
	struct h2stream *st = tunnel_side_arg(t);
	size_t k = buf_pending(&st->in);

	if (k == 0) {
		if (st->in_eof)
			return 0;
		errno = EAGAIN;
		return -1;
	}
	if (k > n)
		k = n;
	memcpy(p, buf_head(&st->in), k);
	buf_consume(&st->in, k);
	if (buf_pending(&st->in) == 0)
		buf_free(&st->in);
	/* Taken: the client may send that much more. */
	nghttp2_session_consume(st->h->s, st->id, k);
	h2_kick(st->h);
	return (ssize_t)k;
}

/* Bytes for the client go to the stream's buffer, up to its high mark:
 * DATA frames as its window allows. */
static ssize_t
hs_send(struct tunnel *t, const void *p, size_t n)
{
	struct h2stream *st = tunnel_side_arg(t);
	size_t have = buf_pending(&st->out);

	if (have >= H2_OUT_HIGH) {
		errno = EAGAIN;
		return -1;
	}
	if (n > H2_OUT_HIGH - have)
		n = H2_OUT_HIGH - have;
	if (buf_append(&st->out, p, n) == -1) {
		errno = ENOMEM;
		return -1;
	}
	h2_resume(st);
	return (ssize_t)n;
}

static int
hs_queue(struct tunnel *t, const void *p, size_t n)
{
	struct h2stream *st = tunnel_side_arg(t);

	if (buf_append(&st->out, p, n) == -1)
		return -1;
	h2_resume(st);
	return 0;
}

static size_t
hs_queued(const struct tunnel *t)
{
	const struct h2stream *st = tunnel_side_arg(t);
	size_t have = buf_pending(&st->out);

	/* Below the high mark the stream's buffer is its window: the
	 * tunnel may go on sending. */
	return have >= H2_OUT_HIGH ? have : 0;
}

static int
hs_flush(struct tunnel *t)
{
	struct h2stream *st = tunnel_side_arg(t);

	if (st->tun_ended || st->h->c->closing)
		return -1;
	h2_resume(st);
	if (buf_pending(&st->out) < H2_OUT_HIGH)
		return 0;
	st->tun_blocked = true;		/* h2_tunnels_run says drained */
	return 1;
}

static void
hs_reading(struct tunnel *t, bool on)
{
	struct h2stream *st = tunnel_side_arg(t);

	st->tun_reading = on;
	if (on && (buf_pending(&st->in) > 0 || st->in_eof)) {
		st->tun_pull = true;
		h2_kick(st->h);
	}
}

static void
hs_shut(struct tunnel *t)
{
	struct h2stream *st = tunnel_side_arg(t);

	st->out_eof = true;		/* END_STREAM after what is kept */
	h2_resume(st);
}

static void
hs_end(struct tunnel *t, bool clean, const char *why)
{
	struct h2stream *st = tunnel_side_arg(t);

	if (st->tun_ended)
		return;
	st->tun_ended = true;
	if (clean) {
		st->out_eof = true;
		h2_resume(st);
		return;
	}
	log_debug("h2 %s: stream %d: tunnel: %s", st->h->c->peer_str, st->id,
	    why);
	nghttp2_submit_rst_stream(st->h->s, NGHTTP2_FLAG_NONE, st->id,
	    NGHTTP2_CANCEL);
	h2_kick(st->h);
}

static bool
hs_gone(const struct tunnel *t)
{
	const struct h2stream *st = tunnel_side_arg(t);

	return st->tun_ended || st->h->c->closing;
}

static const struct tunnel_side h2_side = {
	hs_recv, hs_send, hs_queue, hs_flush, hs_queued, hs_reading, hs_shut,
	hs_end, hs_gone,
};

/*
 * The upstream answered the handshake of an extended CONNECT with 101:
 * the client gets 200 (RFC 8441 section 5) with the upstream's fields
 * but its Sec-WebSocket-Accept (the key was agate's), and the stream
 * becomes the tunnel's client side.
 */
static int
h2_upgrade(struct request *r, const char *hdrs, size_t hdrs_len,
    const struct req_upgrade *u)
{
	struct h2stream *st = h2_stream_of(r);
	nghttp2_data_provider prd = { .source.ptr = st,
	    .read_callback = h2_source };
	struct buf keep = { 0 };
	const char *p = hdrs, *end = hdrs + hdrs_len, *eol;
	struct h2_fields f;
	struct tunnel *t;
	int rv;

	if (st == NULL || !st->xconnect || st->h->c->closing ||
	    (t = tunnel_new(&h2_side, st, r, u)) == NULL) {
		if (st == NULL || !st->xconnect || st->h->c->closing) {
			if (u->ssl != NULL)
				tls_close(u->ssl, false);
			close(u->fd);
		}
		if (st != NULL)
			h2_fail(r, "cannot start the tunnel");
		return -1;
	}
	st->tun = t;
	st->h->ntunnels++;
	r->status = 200;
	for (; p < end && (eol = memchr(p, '\n', (size_t)(end - p))) != NULL;
	    p = eol + 1) {
		size_t n = (size_t)(eol - p) + 1;

		if (n > 21 && strncasecmp(p, "sec-websocket-accept:", 21) == 0)
			continue;	/* it answered agate's key */
		if (buf_append(&keep, p, n) == -1)
			break;
	}
	if (h2_fields(&f, 1, keep.data, keep.len, r->resp_extra,
	    r->resp_extra_len) == -1) {
		h2_fields_done(&f);
		buf_free(&keep);
		hs_end(t, false, "out of memory");
		return -1;
	}
	f.nva[0] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)"200", 7, 3,
	    NGHTTP2_NV_FLAG_NONE };
	rv = nghttp2_submit_response(st->h->s, st->id, f.nva, f.n, &prd);
	h2_fields_done(&f);
	buf_free(&keep);
	if (rv != 0) {
		hs_end(t, false, "cannot answer");
		return -1;
	}
	st->answered = true;
	h2_kick(st->h);
	return tunnel_start(t, u->early, u->early_len);
}

void
h2_tunnels_run(struct h2conn *h)
{
	struct h2stream *st, *next;

	for (st = TAILQ_FIRST(&h->streams); st != NULL; st = next) {
		next = TAILQ_NEXT(st, link);
		if (st->tun == NULL || st->tun_ended)
			continue;
		if (st->tun_blocked && buf_pending(&st->out) < H2_OUT_LOW) {
			st->tun_blocked = false;
			tunnel_client_drained(st->tun);
		}
		if (st->tun_pull && st->tun_reading && !st->tun_ended) {
			st->tun_pull = false;
			tunnel_client_readable(st->tun);
		}
	}
}

const struct req_carrier h2_carrier = {
	.start = h2_start_resp,
	.write = h2_write,
	.space = h2_space,
	.commit = h2_commit,
	.end = h2_end,
	.fail = h2_fail,
	.full = h2_full,
	.cont = h2_cont,
	.read = h2_read,
	.discard = h2_discard,
	.upgrade = h2_upgrade,
	.trailers = h2_trailers,
	.protocol = "HTTP/2",
};

void
h2_body_ready(struct h2stream *st)
{
	struct request *r = st->r;

	if (r != NULL && !r->body_done && r->hooks != NULL &&
	    r->hooks->body_ready != NULL)
		r->hooks->body_ready(r);
}

/* -- streams ending --------------------------------------------------------- */

void
h2_stream_free(struct h2stream *st)
{
	struct h2conn *h = st->h;
	struct request *r = st->r;
	struct tunnel *t = st->tun;

	if (t != NULL) {
		/* A WebSocket tunnel's end: its upstream closes, and the log
		 * line says how it went. */
		st->tun_ended = true;
		tunnel_close(t);
		h->ntunnels--;
	}
	if (r != NULL) {
		bool done = r->resp_done || (st->out_eof &&
		    buf_pending(&st->out) == 0) || t != NULL;

		if (!done && r->hooks != NULL && r->hooks->abort != NULL)
			r->hooks->abort(r);
		r->hooks = NULL;
		if (!r->resp_started)
			r->status = 499;	/* the client reset it */
		r->carrier_arg = NULL;
		request_log(r);
		request_free(r);
	}
	/* Body bytes nobody read still hold the connection's window
	 * (WINDOW_UPDATE is ours to send): give them back. */
	if (buf_pending(&st->in) > 0)
		nghttp2_session_consume_connection(h->s, buf_pending(&st->in));
	if (!st->headed)
		h->heading--;
	TAILQ_REMOVE(&h->streams, st, link);
	h->nstreams--;
	buf_free(&st->hdrs);
	buf_free(&st->cookie);
	buf_free(&st->trailers);
	buf_free(&st->in);
	buf_free(&st->out);
	if (t != NULL)
		tunnel_free(t);
	free(st);
}
