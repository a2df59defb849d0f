/*
 * Writing responses: the status line and framing headers, chunked
 * encoding, agate's own JSON errors, and the output queue.  Nothing here
 * writes to the socket except conn_write_out(), which the flush pass and
 * the write event call; everything else appends and marks the connection
 * dirty, so all the pieces of a response leave in one write(2).  The one
 * exception is a large body handed over whole (a cache hit): it leaves
 * at once with what is queued before it, in one writev(2), rather than
 * be copied into the queue first (h1_write_through()).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "worker/conn.h"
#include "worker/tls.h"
#include "worker/tunnel.h"
#include "worker/worker.h"

/* Appends the decimal or hex form of v. */
static int
append_uint(struct buf *b, uint64_t v, int base)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[24];
	int i = (int)sizeof(tmp);

	do {
		tmp[--i] = digits[v % (uint64_t)base];
		v /= (uint64_t)base;
	} while (v != 0);
	return buf_append(b, tmp + i, sizeof(tmp) - (size_t)i);
}

/* "Date: ..." for agate's own responses, formatted once a second. */
static const char *
date_header(size_t *len)
{
	static char hdr[48];
	static size_t hlen;
	static time_t last;
	time_t now = time(NULL);
	struct tm tm;

	if (now != last) {
		gmtime_r(&now, &tm);
		hlen = strftime(hdr, sizeof(hdr),
		    "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
		last = now;
	}
	*len = hlen;
	return hdr;
}

int
conn_write_out(struct conn *c)
{
	ssize_t n;

	while (buf_pending(&c->out) > 0) {
		n = conn_send(c, buf_head(&c->out), buf_pending(&c->out));
		if (n > 0) {
			buf_consume(&c->out, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (c->tls_write_wants_read)
				return 1;	/* conn_read_cb() retries */
			if (conn_want_write(c) == -1) {
				conn_fail(c, "out of memory");
				return -1;
			}
			if (c->state == CS_ACTIVE &&
			    c->timer.list != &worker.t_send)
				tlist_add(&worker.t_send, &c->timer);
			return 1;
		}
		conn_fail(c, "write error");
		return -1;
	}
	if (c->write_armed) {
		event_del(c->ev_write);
		c->write_armed = false;
	}
	if (c->timer.list == &worker.t_send)
		tnode_del(&c->timer);
	return 0;
}

static bool
status_has_body(int status)
{
	return status >= 200 && status != 204 && status != 304;
}

int
req_start_response(struct request *r, int status, const char *reason,
    size_t reason_len, const char *hdrs, size_t hdrs_len,
    int64_t content_length)
{
	if (r->filter != NULL)
		return r->filter->start(r, status, reason, reason_len, hdrs,
		    hdrs_len, content_length);
	return req_raw_start_response(r, status, reason, reason_len, hdrs,
	    hdrs_len, content_length);
}

int
req_raw_start_response(struct request *r, int status, const char *reason,
    size_t reason_len, const char *hdrs, size_t hdrs_len,
    int64_t content_length)
{
	return r->carrier->start(r, status, reason, reason_len, hdrs,
	    hdrs_len, content_length);
}

/* -- the HTTP/1.1 carrier ------------------------------------------------ */

static int
h1_start(struct request *r, int status, const char *reason,
    size_t reason_len, const char *hdrs, size_t hdrs_len,
    int64_t content_length)
{
	struct conn *c = r->conn;
	struct buf *o = &c->out;
	bool head_method = http_token_eq(r->head.method, r->head.method_len,
	    "HEAD");
	int rc = 0;

	if (c->closing)
		return -1;
	r->status = status;
	r->resp_started = true;
	r->resp_nobody = head_method || !status_has_body(status);
	if (!r->resp_nobody && content_length < 0) {
		if (r->head.minor >= 1)
			r->resp_chunked = true;
		else
			r->resp_close = true;	/* HTTP/1.0: ends at close */
	}
	if (reason == NULL) {
		reason = http_reason(status);
		reason_len = strlen(reason);
	}
	/* One allocation for a sized body, not a chain of doublings. */
	if (!r->resp_nobody && content_length > 0)
		rc |= buf_reserve(o, hdrs_len + reason_len + 160 +
		    (content_length < OUT_HIGH ? (size_t)content_length :
		    OUT_HIGH));
	rc |= buf_append(o, "HTTP/1.1 ", 9);
	rc |= append_uint(o, (uint64_t)status, 10);
	rc |= buf_append(o, " ", 1);
	rc |= buf_append(o, reason, reason_len);
	rc |= buf_append(o, "\r\n", 2);
	rc |= buf_append(o, hdrs, hdrs_len);
	if (r->resp_extra_len > 0)
		rc |= buf_append(o, r->resp_extra, r->resp_extra_len);
	if (r->resp_chunked)
		rc |= buf_append(o, "Transfer-Encoding: chunked\r\n", 28);
	else if (content_length >= 0 && status != 204 &&
	    (status >= 200 || status == 101)) {
		rc |= buf_append(o, "Content-Length: ", 16);
		rc |= append_uint(o, (uint64_t)content_length, 10);
		rc |= buf_append(o, "\r\n", 2);
	}
	if (!conn_keepalive(c)) {
		r->resp_close = true;
		rc |= buf_append(o, "Connection: close\r\n", 19);
	} else if (r->head.minor == 0)
		rc |= buf_append(o, "Connection: keep-alive\r\n", 24);
	rc |= buf_append(o, "\r\n", 2);
	if (rc != 0) {
		conn_fail(c, "out of memory");
		return -1;
	}
	conn_mark_dirty(c);
	return 0;
}
/*
 * A large piece of body on a plain connection whose socket has room:
 * the queue (the head) and the piece go out in one writev(2); the
 * queue keeps only what the socket did not take.  Returns how much of
 * data was sent.
 */
#define WRITE_THROUGH_MIN	(32 * 1024)
#define WRITE_THROUGH_IOV	64

static size_t
h1_write_through(struct conn *c, const struct iovec *body, int nbody,
    size_t len)
{
	struct buf *o = &c->out;
	struct iovec iov[1 + WRITE_THROUGH_IOV];
	size_t queued = buf_pending(o);
	ssize_t n;

	if (c->ssl != NULL || c->write_armed || len < WRITE_THROUGH_MIN ||
	    nbody > WRITE_THROUGH_IOV)
		return 0;
	iov[0].iov_base = buf_head(o);
	iov[0].iov_len = queued;
	memcpy(iov + 1, body, (size_t)nbody * sizeof(*body));
	do
		n = writev(c->fd, iov + (queued == 0), nbody + (queued != 0));
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;		/* the flush pass sees to it */
	if ((size_t)n <= queued) {
		buf_consume(o, (size_t)n);
		return 0;
	}
	buf_consume(o, queued);
	return (size_t)n - queued;
}


static int
h1_write(struct request *r, const char *data, size_t len)
{
	struct conn *c = r->conn;
	struct buf *o = &c->out;
	int rc = 0;

	if (c->closing)
		return -1;
	if (len == 0 || r->resp_nobody)
		return 0;
	if (r->resp_chunked) {
		rc |= append_uint(o, len, 16);
		rc |= buf_append(o, "\r\n", 2);
	} else {
		struct iovec one = { (void *)data, len };
		size_t sent = h1_write_through(c, &one, 1, len);

		r->resp_bytes += sent;
		data += sent;
		len -= sent;
	}
	rc |= buf_append(o, data, len);
	if (r->resp_chunked)
		rc |= buf_append(o, "\r\n", 2);
	if (rc != 0) {
		conn_fail(c, "out of memory");
		return -1;
	}
	r->resp_bytes += len;
	if (buf_pending(o) >= OUT_HIGH)
		r->resp_paused = true;
	conn_mark_dirty(c);
	return 0;
}

static char *
h1_space(struct request *r, size_t want, size_t *got)
{
	struct conn *c = r->conn;

	if (c->closing || r->resp_chunked || r->resp_nobody ||
	    buf_reserve(&c->out, want) == -1)
		return NULL;
	*got = c->out.cap - c->out.len;
	return c->out.data + c->out.len;
}

static void
h1_commit(struct request *r, size_t n)
{
	struct conn *c = r->conn;

	if (n == 0)
		return;
	c->out.len += n;
	r->resp_bytes += n;
	if (buf_pending(&c->out) >= OUT_HIGH)
		r->resp_paused = true;
	conn_mark_dirty(c);
}

static void
h1_end(struct request *r)
{
	struct conn *c = r->conn;

	if (r->resp_chunked && !c->closing &&
	    buf_append(&c->out, "0\r\n\r\n", 5) != 0)
		conn_fail(c, "out of memory");
	conn_mark_dirty(c);
}

static void
h1_fail(struct request *r, const char *why)
{
	conn_fail(r->conn, why);
}

static bool
h1_full(const struct request *r)
{
	return buf_pending(&r->conn->out) >= OUT_HIGH;
}

static void
h1_cont(struct request *r)
{
	struct conn *c = r->conn;

	if (c->closing)
		return;
	if (buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0) {
		conn_fail(c, "out of memory");
		return;
	}
	conn_mark_dirty(c);
}

static int
h1_upgrade(struct request *r, const char *hdrs, size_t hdrs_len,
    const struct req_upgrade *u)
{
	return tunnel_open(r->conn, hdrs, hdrs_len, u);
}

const struct req_carrier h1_carrier = {
	.start = h1_start,
	.write = h1_write,
	.space = h1_space,
	.commit = h1_commit,
	.end = h1_end,
	.fail = h1_fail,
	.full = h1_full,
	.cont = h1_cont,
	.read = h1_read_body,
	.discard = request_discard_body,
	.upgrade = h1_upgrade,
	.protocol = "HTTP/1.1",
};

/* -- what every carrier shares ------------------------------------------- */

int
req_write_body(struct request *r, const char *data, size_t len)
{
	if (r->filter != NULL)
		return r->filter->write(r, data, len);
	return req_raw_write_body(r, data, len);
}

int
req_raw_write_body(struct request *r, const char *data, size_t len)
{
	return r->carrier->write(r, data, len);
}

int
req_write_body_iov(struct request *r, const struct iovec *iov, int n)
{
	size_t total = 0, sent = 0, k;
	int i;

	for (i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (r->filter == NULL && r->carrier == &h1_carrier &&
	    !r->resp_chunked && !r->resp_nobody && !r->conn->closing) {
		sent = h1_write_through(r->conn, iov, n, total);
		r->resp_bytes += sent;
		if (sent > 0)
			conn_mark_dirty(r->conn);
	}
	/* What the socket did not take is queued (copied). */
	for (i = 0; i < n; i++) {
		if (sent >= iov[i].iov_len) {
			sent -= iov[i].iov_len;
			continue;
		}
		k = iov[i].iov_len - sent;
		if (req_write_body(r, (const char *)iov[i].iov_base + sent,
		    k) == -1)
			return -1;
		sent = 0;
	}
	return 0;
}

char *
req_body_space(struct request *r, size_t want, size_t *got)
{
	if (r->filter != NULL)
		return NULL;
	return r->carrier->space(r, want, got);
}

void
req_body_commit(struct request *r, size_t n)
{
	r->carrier->commit(r, n);
}

void
req_end_response(struct request *r)
{
	if (r->filter != NULL)
		r->filter->end(r);
	else
		req_raw_end_response(r);
}

void
req_raw_end_response(struct request *r)
{
	r->carrier->end(r);
	r->resp_done = true;
	r->hooks = NULL;
}

void
req_fail(struct request *r, const char *why)
{
	r->hooks = NULL;
	r->resp_done = true;
	if (!r->resp_started)
		r->status = 502;
	r->carrier->fail(r, why);
}

bool
req_output_full(struct request *r)
{
	if (!r->carrier->full(r) &&
	    (r->filter == NULL || !r->filter->full(r)))
		return false;
	r->resp_paused = true;
	return true;
}

void
req_continue(struct request *r)
{
	if (!r->head.expect_continue || r->resp_started)
		return;
	r->head.expect_continue = false;
	r->carrier->cont(r);
}

void
req_body_unwanted(struct request *r)
{
	/* The connection cannot be reused unless the rest of the body is
	 * already here to skip: say so in the response. */
	if (!r->resp_started && !r->body_done && !r->carrier->discard(r))
		r->resp_close = true;
}

void
req_respond(struct request *r, int status, const char *content_type,
    const char *body, size_t len, const char *extra)
{
	struct buf h = { 0 };
	const char *date;
	size_t dlen;
	int rc = 0;

	req_body_unwanted(r);	/* a whole answer: the body goes unread */

	date = date_header(&dlen);
	rc |= buf_append(&h, date, dlen);
	rc |= buf_appendf(&h, "Content-Type: %s\r\nX-Request-Id: %.*s\r\n",
	    content_type, (int)r->id_len, r->id);
	if (extra != NULL)
		rc |= buf_append(&h, extra, strlen(extra));
	if (rc != 0 || req_start_response(r, status, NULL, 0, h.data, h.len,
	    (int64_t)len) == -1 || req_write_body(r, body, len) == -1) {
		buf_free(&h);
		req_fail(r, "cannot answer");
		return;
	}
	buf_free(&h);
	req_end_response(r);
}

int
req_trailers(struct request *r, const char *fields, size_t len)
{
	if (r->carrier->trailers == NULL || r->filter != NULL || len == 0)
		return 0;
	return r->carrier->trailers(r, fields, len);
}

bool
req_grpc(const struct request *r)
{
	const struct http_header *h = req_header(r, "content-type");

	return h != NULL && h->value_len >= 16 &&
	    strncasecmp(h->value, "application/grpc", 16) == 0;
}

/* The gRPC status for one of agate's own HTTP errors (CONFIG.md; the
 * rest as gRPC's own HTTP-to-gRPC table). */
static int
grpc_code(int status)
{
	switch (status) {
	case 401:
		return 16;		/* UNAUTHENTICATED */
	case 403:
		return 7;		/* PERMISSION_DENIED */
	case 404:
	case 405:
	case 501:
		return 12;		/* UNIMPLEMENTED */
	case 408:
	case 504:
		return 4;		/* DEADLINE_EXCEEDED */
	case 413:
	case 429:
	case 431:
		return 8;		/* RESOURCE_EXHAUSTED */
	case 502:
	case 503:
		return 14;		/* UNAVAILABLE */
	case 400:
	case 500:
		return 13;		/* INTERNAL */
	default:
		return 2;		/* UNKNOWN */
	}
}

/*
 * agate's own error for a gRPC client: HTTP 200 with grpc-status and
 * grpc-message and no body (a "Trailers-Only" answer: over HTTP/2 one
 * HEADERS frame that ends the stream).  The message is percent-encoded
 * as the gRPC protocol asks.
 */
static void
req_grpc_error(struct request *r, int status, const char *msg,
    const char *extra)
{
	static const char hex[] = "0123456789ABCDEF";
	struct buf h = { 0 };
	const unsigned char *p;
	int rc = 0;

	rc |= buf_appendf(&h, "grpc-status: %d\r\ngrpc-message: ",
	    grpc_code(status));
	for (p = (const unsigned char *)msg; *p != '\0'; p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%')
			rc |= buf_append(&h, (const char *)p, 1);
		else {
			char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };

			rc |= buf_append(&h, e, 3);
		}
	}
	rc |= buf_append(&h, "\r\n", 2);
	if (extra != NULL)	/* Retry-After, RateLimit-*: as for HTTP */
		rc |= buf_append(&h, extra, strlen(extra));
	rc |= buf_append(&h, "", 1);	/* the NUL req_respond() reads to */
	if (rc != 0) {
		buf_free(&h);
		req_fail(r, "out of memory");
		return;
	}
	req_respond(r, 200, "application/grpc", "", 0, h.data);
	buf_free(&h);
}

void
req_error(struct request *r, int status, const char *msg,
    const char *extra)
{
	struct buf b = { 0 };

	if (r->resp_started) {
		/* Too late for a status: the client sees a cut response. */
		req_fail(r, msg);
		return;
	}
	if (req_grpc(r)) {
		req_grpc_error(r, status, msg, extra);
		return;
	}
	req_body_unwanted(r);
	if (buf_append(&b, "{\"error\":\"", 10) != 0 ||
	    buf_append_json(&b, msg, strlen(msg)) != 0 ||
	    buf_appendf(&b, "\",\"status\":%d,\"request_id\":\"", status) != 0 ||
	    buf_append_json(&b, r->id, r->id_len) != 0 ||
	    buf_append(&b, "\"}\n", 3) != 0) {
		buf_free(&b);
		req_fail(r, "out of memory");
		return;
	}
	req_respond(r, status, "application/json", b.data, b.len, extra);
	buf_free(&b);
}

int
req_upgrade(struct request *r, const char *hdrs, size_t hdrs_len,
    const struct req_upgrade *u)
{
	if (r->carrier->upgrade == NULL) {
		if (u->ssl != NULL)
			tls_close(u->ssl, false);
		close(u->fd);
		return -1;
	}
	return r->carrier->upgrade(r, hdrs, hdrs_len, u);
}
