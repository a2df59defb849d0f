/*
 * HTTP/2 client connections (h2.h), on libnghttp2's session API: the
 * library does the framing, HPACK, flow-control accounting and the
 * protocol's checks; this file turns streams into requests and requests'
 * answers into frames.
 *
 * Input is read into the worker's scratch buffer and fed to the session
 * (nghttp2_session_mem_recv).  A stream whose headers are complete
 * becomes a struct request (carrier: h2_carrier) and goes to the gateway
 * exactly as an HTTP/1.1 request does.  Its body waits in the stream's
 * `in` buffer until the gateway reads it, and only then is the window
 * opened again (no automatic WINDOW_UPDATE): a slow upstream holds back
 * its own stream, not the connection.
 *
 * Output: the gateway's answer goes into the stream's `out` buffer; a
 * data source hands it to the session as DATA frames as the stream's
 * window allows.  The flush pass (conn.c) asks the session for its
 * frames (nghttp2_session_mem_send) until the connection's output queue
 * is full, so all streams' frames leave in one write.  A stream whose
 * buffer is above H2_OUT_HIGH pauses its producer.
 *
 * Defences (docs/http2.md): max_concurrent_streams (RST_STREAM
 * REFUSED_STREAM by nghttp2), max_header_list_size (431 on that stream),
 * max_resets_per_second (rapid reset, CVE-2023-44487: GOAWAY
 * ENHANCE_YOUR_CALM), and nghttp2's own limits on queued control frames
 * (SETTINGS and PING floods) and on CONTINUATION frames.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

#include "gateway/metrics/metrics.h"
#include "lib/log.h"
#include "worker/conn.h"
#include "worker/h2.h"
#include "worker/path.h"
#include "worker/worker.h"

#define H2_OUT_HIGH	(128 * 1024)	/* a stream's unsent answer */
#define H2_OUT_LOW	(32 * 1024)
#define H2_READ_SIZE	(64 * 1024)
#define H2_CONN_WINDOW	(16 * 1024 * 1024)

struct h2stream;

struct h2conn {
	struct conn		*c;
	nghttp2_session		*s;
	TAILQ_HEAD(, h2stream)	 streams;
	int			 nstreams;
	unsigned		 resets;	/* RST_STREAMs this second */
	time_t			 reset_sec;
	bool			 goaway;	/* draining: no new streams */
	bool			 refused;	/* a stream was refused: send the
					 * RST_STREAM before the next frame */
	/* Where the input stands (h2_frame_cut): the preface, then frames
	 * of a 9-byte header and its payload. */
	size_t			 preface_left;
	uint8_t			 fhdr[9];
	size_t			 fhlen;
	size_t			 fleft;
};

struct h2stream {
	struct h2conn		*h;
	int32_t			 id;
	struct request		*r;		/* once the headers are in */
	struct buf		 hdrs;		/* u16 len, name, u16 len, value */
	struct buf		 cookie;	/* Cookie fields joined */
	size_t			 hsize;		/* decoded size (RFC 9113 6.5.2) */
	size_t			 nfields;
	bool			 too_big;	/* over max_header_list_size */
	struct buf		 in;		/* body bytes not yet read */
	bool			 in_eof;	/* END_STREAM received */
	struct buf		 out;		/* answer bytes not yet framed */
	bool			 out_eof;
	bool			 deferred;	/* the data source waits */
	bool			 answered;	/* HEADERS submitted */
	bool			 wake;		/* tell writable() after a send */
	struct buf		 trailers;	/* "Name: value\r\n" lines */
	TAILQ_ENTRY(h2stream)	 link;
};

static char	*scratch;

static void	h2_stream_free(struct h2stream *);

const struct req_carrier h2_carrier;

/* -- helpers -------------------------------------------------------------- */

int
h2_preface(const char *p, size_t n)
{
	size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;

	if (memcmp(p, H2_PREFACE, k) != 0)
		return -1;
	return n >= H2_PREFACE_LEN ? 1 : 0;
}

static struct h2stream *
h2_stream_of(const struct request *r)
{
	return r->carrier_arg;
}

/* Frames are waiting: the flush pass sends them. */
static void
h2_kick(struct h2conn *h)
{
	conn_mark_dirty(h->c);
}

/* Whether some stream has answer bytes its window does not let out. */
static bool
h2_held(const struct h2conn *h)
{
	const struct h2stream *st;

	TAILQ_FOREACH(st, &h->streams, link)
		if (buf_pending(&st->out) > 0)
			return true;
	return false;
}

/*
 * The connection's one timer, as for HTTP/1.1: with no stream, the idle
 * timeout from the last byte read; with output waiting (the socket full,
 * or a stream's window shut), idle_timeout from the last byte sent, so
 * a client that stops reading or never opens a window cannot hold the
 * connection; else none (the streams wait on their upstreams, whose
 * timeouts apply).
 */
static void
h2_timer(struct h2conn *h, bool read, bool wrote)
{
	struct conn *c = h->c;
	struct tlist *want = NULL;

	if (buf_pending(&c->out) > 0 || h2_held(h)) {
		want = &worker.t_send;
		if (wrote)
			read = true;	/* progress: start again */
		else
			read = false;
	} else if (h->nstreams == 0)
		want = worker.phase == WP_DRAINING ? &worker.t_grace :
		    &worker.t_idle;
	if (want == NULL)
		tnode_del(&c->timer);
	else if (read || c->timer.list != want)
		tlist_add(want, &c->timer);
}

/* -- requests from streams ------------------------------------------------ */

static int
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
 * Builds r->head from the stream's fields: pseudo-fields to method,
 * target and host, the rest to headers[].  Returns 0, or a status to
 * answer with (400, 431) and *why.
 */
static int
h2_head(struct h2stream *st, struct request *r, const char **why)
{
	struct http_head *hd = &r->head;
	char *p = st->hdrs.data, *end = p + st->hdrs.len;
	const char *authority = NULL;
	size_t alen = 0;

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
static void
h2_request(struct h2stream *st, bool end_stream)
{
	const struct config *cfg = worker.cfg;
	struct request *r;
	const char *why = NULL;
	int status;

	if ((r = request_new_on(st->h->c, &h2_carrier)) == NULL) {
		nghttp2_submit_rst_stream(st->h->s, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_INTERNAL_ERROR);
		return;
	}
	st->r = r;
	r->carrier_arg = st;
	st->in_eof = end_stream;
	status = h2_head(st, r, &why);
	request_identify(r);
	if (status == 0 && !h2_normalize(r, &why))
		status = 400;
	if (status == 0 && cfg->server.max_body_size > 0 &&
	    r->head.content_length > (int64_t)cfg->server.max_body_size) {
		status = 413;
		why = "request body too large";
	}
	if (end_stream || r->head.content_length == 0)
		r->body_done = true;
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

/* The answer's last DATA is out: its trailers end the stream instead
 * (allowed from inside the data source, as nghttp2 documents). */
static void
h2_eof(nghttp2_session *s, struct h2stream *st, uint32_t *flags)
{
	nghttp2_nv nva[64];
	char lower[4096];
	size_t n, lused = 0, len = st->trailers.len;

	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (len == 0)
		return;
	if (len > sizeof(lower))
		len = sizeof(lower);	/* names fit in lower */
	n = h2_nva_lines(nva, 0, 64, lower, &lused, st->trailers.data, len);
	if (n > 0 && nghttp2_submit_trailer(s, st->id, nva, n) == 0)
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
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

#define H2_MAX_NV	(HTTP_MAX_RESPONSE_FIELDS + 32)

static int
h2_start_resp(struct request *r, int status, const char *reason,
    size_t reason_len, const char *hdrs, size_t hdrs_len,
    int64_t content_length)
{
	struct h2stream *st = h2_stream_of(r);
	nghttp2_nv nva[H2_MAX_NV];
	nghttp2_data_provider prd = { .source.ptr = st,
	    .read_callback = h2_source };
	char code[8], clen[24], lower[8192];
	size_t n = 0, lused = 0;
	bool nobody;
	int rv;

	if (st == NULL || st->h->c->closing)
		return -1;
	r->status = status;
	r->resp_started = true;
	nobody = h2_nobody(r, status, content_length, hdrs, hdrs_len);
	r->resp_nobody = nobody;
	snprintf(code, sizeof(code), "%d", status);
	nva[n++] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)code, 7,
	    strlen(code), NGHTTP2_NV_FLAG_NONE };
	if (hdrs_len > sizeof(lower) / 2)
		hdrs_len = sizeof(lower) / 2;	/* names fit in lower */
	n = h2_nva_lines(nva, n, H2_MAX_NV - 2, lower, &lused, hdrs,
	    hdrs_len);
	if (r->resp_extra_len > 0)
		n = h2_nva_lines(nva, n, H2_MAX_NV - 1, lower, &lused,
		    r->resp_extra, r->resp_extra_len);
	if (content_length >= 0 && status >= 200 && status != 204 &&
	    status != 304) {
		snprintf(clen, sizeof(clen), "%lld", (long long)content_length);
		nva[n++] = (nghttp2_nv){ (uint8_t *)"content-length",
		    (uint8_t *)clen, 14, strlen(clen), NGHTTP2_NV_FLAG_NONE };
	}
	(void)reason;
	(void)reason_len;
	rv = nghttp2_submit_response(st->h->s, st->id, nva, n,
	    nobody ? NULL : &prd);
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
	.upgrade = NULL,
	.trailers = h2_trailers,
	.protocol = "HTTP/2",
};

/* -- session callbacks ---------------------------------------------------- */

static int
cb_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2conn *h = arg;
	struct h2stream *st;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (h->nstreams >= worker.cfg->server.http2.max_concurrent_streams) {
		/* Beyond max_concurrent_streams: REFUSED_STREAM, a stream
		 * error (RFC 9113 5.1.2), so the client may retry it. */
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE,
		    f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
		h->refused = true;
		h2_kick(h);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->h = h;
	st->id = f->hd.stream_id;
	TAILQ_INSERT_TAIL(&h->streams, st, link);
	h->nstreams++;
	nghttp2_session_set_stream_user_data(s, st->id, st);
	h2_timer(h, false, false);
	return 0;
}

static int
cb_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags,
    void *arg)
{
	struct h2stream *st;
	size_t max = worker.cfg->server.http2.max_header_list_size;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    (st = nghttp2_session_get_stream_user_data(s,
	    f->hd.stream_id)) == NULL || st->r != NULL)
		return 0;		/* trailers: not kept */
	st->hsize += nlen + vlen + 32;
	if (st->hsize > max || nlen > UINT16_MAX || vlen > UINT16_MAX) {
		/* Answered 431 once the block ends; a block many times the
		 * limit (a CONTINUATION flood) ends the connection. */
		st->too_big = true;
		if (st->hsize > 4 * max)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		return 0;
	}
	if (h2_field(st, name, nlen, value, vlen) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->nfields++;
	return 0;
}

static int
cb_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
    size_t len, void *arg)
{
	struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);

	if (st == NULL || st->r == NULL || st->r->body_done) {
		nghttp2_session_consume(s, id, len);	/* nobody reads it */
		return 0;
	}
	if (buf_append(&st->in, (const char *)data, len) == -1)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

/* Body bytes (or their end) for the gateway. */
static void
h2_body_ready(struct h2stream *st)
{
	struct request *r = st->r;

	if (r != NULL && !r->body_done && r->hooks != NULL &&
	    r->hooks->body_ready != NULL)
		r->hooks->body_ready(r);
}

/* Rapid reset (CVE-2023-44487): more resets a second than allowed
 * ends the connection. */
static int
h2_count_reset(struct h2conn *h)
{
	time_t now = time(NULL);

	if (now != h->reset_sec) {
		h->reset_sec = now;
		h->resets = 0;
	}
	if (++h->resets <= (unsigned)worker.cfg->server.http2.
	    max_resets_per_second)
		return 0;
	log_warnx("h2 %s: more than %d stream resets a second; closing the "
	    "connection (rapid reset)", h->c->peer_str,
	    worker.cfg->server.http2.max_resets_per_second);
	nghttp2_session_terminate_session(h->s, NGHTTP2_ENHANCE_YOUR_CALM);
	return 0;
}

static int
cb_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2conn *h = arg;
	struct h2stream *st;
	bool eos = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

	if (f->hd.type == NGHTTP2_RST_STREAM)
		return h2_count_reset(h);
	if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
		return 0;
	if ((st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id))
	    == NULL)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && st->r == NULL) {
		if (h->goaway) {
			nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE,
			    st->id, NGHTTP2_REFUSED_STREAM);
			return 0;
		}
		h2_request(st, eos);
		return 0;
	}
	if (eos)
		st->in_eof = true;
	h2_body_ready(st);
	return 0;
}

static int
cb_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2stream *st;

	/* Our answer is whole while the client still sends: stop it
	 * (RFC 9113 section 8.1). */
	if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    (st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id))
	    != NULL && !st->in_eof)
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_NO_ERROR);
	return 0;
}

static int
cb_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
	struct h2conn *h = arg;
	struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);

	if (st == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(s, id, NULL);
	h2_stream_free(st);
	h2_timer(h, false, false);
	return 0;
}

/* -- streams ending --------------------------------------------------------- */

static void
h2_stream_free(struct h2stream *st)
{
	struct h2conn *h = st->h;
	struct request *r = st->r;

	if (r != NULL) {
		bool done = r->resp_done || (st->out_eof &&
		    buf_pending(&st->out) == 0);

		if (!done && r->hooks != NULL && r->hooks->abort != NULL)
			r->hooks->abort(r);
		r->hooks = NULL;
		if (!r->resp_started)
			r->status = 499;	/* the client reset it */
		r->carrier_arg = NULL;
		request_log(r);
		request_free(r);
	}
	TAILQ_REMOVE(&h->streams, st, link);
	h->nstreams--;
	buf_free(&st->hdrs);
	buf_free(&st->cookie);
	buf_free(&st->trailers);
	buf_free(&st->in);
	buf_free(&st->out);
	free(st);
}

/* -- the connection ----------------------------------------------------------- */

/*
 * How many bytes of p[0..n) take the input to the end of the frame under
 * way (or of the preface), so that a feed can stop there; all n if the
 * frame goes on beyond them.
 */
static size_t
h2_frame_cut(struct h2conn *h, const uint8_t *p, size_t n)
{
	size_t used = 0, k;

	while (used < n) {
		if (h->preface_left > 0) {
			k = h->preface_left < n - used ? h->preface_left :
			    n - used;
			h->preface_left -= k;
			used += k;
			if (h->preface_left == 0)
				return used;
			continue;
		}
		if (h->fhlen < sizeof(h->fhdr)) {
			h->fhdr[h->fhlen++] = p[used++];
			if (h->fhlen < sizeof(h->fhdr))
				continue;
			h->fleft = (size_t)h->fhdr[0] << 16 |
			    (size_t)h->fhdr[1] << 8 | h->fhdr[2];
		} else {
			k = h->fleft < n - used ? h->fleft : n - used;
			h->fleft -= k;
			used += k;
		}
		if (h->fleft == 0) {
			h->fhlen = 0;
			return used;		/* a frame ends here */
		}
	}
	return used;
}

/* Frames from the session into the connection's output queue. */
static int
h2_produce(struct h2conn *h)
{
	struct conn *c = h->c;
	const uint8_t *data;
	ssize_t n;

	while (buf_pending(&c->out) < OUT_HIGH) {
		n = nghttp2_session_mem_send(h->s, &data);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		if (buf_append(&c->out, (const char *)data, (size_t)n) == -1)
			return -1;
	}
	return 0;
}

/* Input to the session, a frame at a time while streams are refused. */
static ssize_t
h2_feed(struct h2conn *h, const char *p, size_t n)
{
	ssize_t rv;
	size_t k;

	while (n > 0) {
		k = h2_frame_cut(h, (const uint8_t *)p, n);
		rv = nghttp2_session_mem_recv(h->s, (const uint8_t *)p, k);
		if (rv < 0)
			return rv;
		p += k;
		n -= k;
		if (h->refused) {
			h->refused = false;
			if (h2_produce(h) == -1)
				return NGHTTP2_ERR_NOMEM;
		}
	}
	return 0;
}

static ssize_t
h2_send_unused(nghttp2_session *s, const uint8_t *d, size_t n, int fl,
    void *arg)
{
	return NGHTTP2_ERR_WOULDBLOCK;	/* mem_send only */
}

int
h2_start(struct conn *c, const char *early, size_t n)
{
	const struct http2_cfg *hc = &worker.cfg->server.http2;
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[3];
	struct h2conn *h;

	if ((scratch == NULL && (scratch = malloc(H2_READ_SIZE)) == NULL) ||
	    (h = calloc(1, sizeof(*h))) == NULL)
		return -1;
	h->c = c;
	h->preface_left = H2_PREFACE_LEN;
	TAILQ_INIT(&h->streams);
	if (nghttp2_session_callbacks_new(&cbs) != 0 ||
	    nghttp2_option_new(&opt) != 0)
		goto fail;
	nghttp2_session_callbacks_set_send_callback(cbs, h2_send_unused);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
	    cb_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
	    cb_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
	    cb_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs,
	    cb_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
	    cb_stream_close);
	/* Windows open as the gateway reads, not as bytes arrive. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
	if (nghttp2_session_server_new2(&h->s, cbs, h, opt) != 0)
		goto fail;
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	cbs = NULL;
	opt = NULL;
	/*
	 * libnghttp2 treats a stream beyond the limit it advertised as a
	 * connection error once the client has acknowledged it (RFC 9113
	 * section 5.1.2 wants a stream error), and a refused stream counts
	 * until its RST_STREAM has gone.  So it advertises one more;
	 * cb_begin_headers refuses every stream beyond the limit with
	 * REFUSED_STREAM, and input is fed a frame at a time so that each
	 * refusal is sent before the next HEADERS is read (h2_feed): never
	 * more than the limit run, and a client that goes over loses
	 * retryable streams, not the connection.
	 */
	iv[0] = (nghttp2_settings_entry){
	    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
	    (uint32_t)hc->max_concurrent_streams + 1 };
	iv[1] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
	    (uint32_t)hc->initial_window_size };
	iv[2] = (nghttp2_settings_entry){
	    NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
	    (uint32_t)hc->max_header_list_size };
	if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, 3) != 0 ||
	    nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0,
	    H2_CONN_WINDOW) != 0)
		goto fail;
	c->h2 = h;
	conn_to_h2(c);
	h2_timer(h, true, false);
	if (n > 0 && h2_feed(h, early, n) < 0) {
		conn_fail(c, "HTTP/2 protocol error");
		return 0;
	}
	h2_kick(h);
	return 0;
fail:
	if (cbs != NULL)
		nghttp2_session_callbacks_del(cbs);
	if (opt != NULL)
		nghttp2_option_del(opt);
	if (h->s != NULL)
		nghttp2_session_del(h->s);
	free(h);
	return -1;
}

void
h2_readable(struct conn *c)
{
	struct h2conn *h = c->h2;
	ssize_t n, rv;

	if (buf_pending(&c->out) >= OUT_HIGH) {
		conn_stop_reading(c);	/* it reads not what we send */
		return;
	}
	n = conn_recv(c, scratch, H2_READ_SIZE);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_fail(c, n == 0 ? "client closed" : "read error");
		return;
	}
	h2_timer(h, true, false);
	if ((rv = h2_feed(h, scratch, (size_t)n)) < 0) {
		log_debug("h2 %s: %s", c->peer_str, nghttp2_strerror((int)rv));
		/* The peer broke the rules (or flooded us): a GOAWAY says
		 * so, if nghttp2 has not queued one already. */
		nghttp2_session_terminate_session(h->s, rv == NGHTTP2_ERR_FLOODED
		    ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
		h2_flush(c);
		conn_fail(c, "HTTP/2 protocol error");
		return;
	}
	h2_kick(h);
}

/* Streams whose producer paused: room again. */
static void
h2_wake(struct h2conn *h)
{
	struct h2stream *st, *next;

	for (st = TAILQ_FIRST(&h->streams); st != NULL; st = next) {
		struct request *r = st->r;

		next = TAILQ_NEXT(st, link);
		if (!st->wake)
			continue;
		st->wake = false;
		if (r != NULL && r->resp_paused &&
		    buf_pending(&st->out) < H2_OUT_LOW) {
			r->resp_paused = false;
			if (r->hooks != NULL && r->hooks->writable != NULL)
				r->hooks->writable(r);
		}
	}
}

void
h2_flush(struct conn *c)
{
	struct h2conn *h = c->h2;
	size_t queued;
	bool sent;
	int rc;

	if (h == NULL)
		return;
	if (h2_produce(h) == -1) {
		conn_fail(c, "HTTP/2 session error");
		return;
	}
	queued = buf_pending(&c->out);
	if ((rc = conn_write_out(c)) == -1)
		return;
	sent = buf_pending(&c->out) < queued;
	if (rc == 0 && buf_pending(&c->out) == 0)
		buf_free(&c->out);
	h2_wake(h);
	if (!c->reading && buf_pending(&c->out) < OUT_LOW)
		conn_start_reading(c);
	h2_timer(h, false, sent);
	if (!nghttp2_session_want_read(h->s) &&
	    !nghttp2_session_want_write(h->s) && buf_pending(&c->out) == 0)
		conn_fail(c, h->goaway ? "done" : "HTTP/2 session ended");
	else if (h->goaway && h->nstreams == 0 && buf_pending(&c->out) == 0)
		conn_fail(c, "done");
}

void
h2_timeout(struct conn *c)
{
	struct h2conn *h = c->h2;

	if (buf_pending(&c->out) > 0) {
		conn_fail(c, "send timeout");	/* the client reads not */
		return;
	}
	nghttp2_session_terminate_session(h->s, NGHTTP2_NO_ERROR);
	h2_flush(c);
	conn_fail(c, "idle timeout");
}

void
h2_drain(struct conn *c)
{
	struct h2conn *h = c->h2;

	if (h == NULL || h->goaway)
		return;
	h->goaway = true;
	nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE,
	    nghttp2_session_get_last_proc_stream_id(h->s), NGHTTP2_NO_ERROR,
	    NULL, 0);
	h2_kick(h);
	h2_timer(h, false, false);
}

void
h2_close(struct conn *c)
{
	struct h2conn *h = c->h2;
	struct h2stream *st;

	if (h == NULL)
		return;
	while ((st = TAILQ_FIRST(&h->streams)) != NULL) {
		nghttp2_session_set_stream_user_data(h->s, st->id, NULL);
		h2_stream_free(st);
	}
	nghttp2_session_del(h->s);
	free(h);
	c->h2 = NULL;
}
