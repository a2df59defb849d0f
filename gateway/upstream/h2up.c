/*
 * A call's try over HTTP/2 (see h2up.h): one stream on one of its
 * server's connections (h2upconn.c).
 *
 * The request goes out as HEADERS (the call's method and target as
 * pseudo-fields, its fields with lower-case names, hop-by-hop ones
 * dropped) and DATA: the client's body as it arrives (the session asks
 * for it; none buffered yet defers the stream until body_ready()), or
 * the call's own.  The answer's head is checked and filtered like any
 * upstream's, then handed to the sink; its DATA follows as it comes, and
 * the window is given back only as the sink takes it, so a slow client
 * stalls its own stream, not the connection; trailers (gRPC's
 * grpc-status) reach the sink before the end.
 *
 * A stream the server refused (REFUSED_STREAM, or above a GOAWAY's
 * last stream id: it never saw it), and one whose reused connection
 * died before any answer, is sent once more on another connection when
 * its request can be repeated; anything else is the call's to retry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/upstream/call.h"
#include "gateway/upstream/h2up.h"
#include "lib/log.h"
#include "worker/loopwatch.h"
#include "worker/timer.h"
#include "worker/worker.h"

#define HEAD_MAX	(64 * 1024)	/* an answer's head, and trailers */
#define POOL_MAX	64

struct h2up {
	struct call		*call;
	int			 slot;		/* of the call's tries */
	struct request		*req;
	struct upstream_rt	*up;
	size_t			 server;
	struct h2upconn		*hc;		/* NULL once let go */
	int32_t			 id;
	bool			 sent;		/* its HEADERS went out */
	bool			 reused;	/* hc had ended a stream before */
	bool			 resent;
	bool			 got_bytes;	/* any of an answer */
	bool			 got_head;	/* the final head, accepted */
	bool			 body_eof;	/* the request's end went out */
	bool			 deferred;	/* waiting for the client's body */
	bool			 paused;	/* the sink is full */
	bool			 body_bad;	/* the client has been answered */
	const char		*invalid;	/* why the answer is not one */
	size_t			 unconsumed;	/* window not given back */
	size_t			 body_off;	/* of the call's own body */
	int			 status;
	uint64_t		 deadline;	/* monotonic ms, or 0 */
	struct event		 timer;
	struct buf		 head;		/* "name: value\r\n"... */
	struct buf		 chead;		/* filtered, for the sink */
	struct buf		 trailers;
	TAILQ_ENTRY(h2up)	 link;		/* its connection's */
	struct h2up		*next_free;
};

/* A request's fields, lower-cased, and the name/value list that points
 * into them: made and copied by nghttp2 at submit, so one per worker. */
struct h2up_field {
	size_t	name, nlen, value, vlen;
};

static struct buf	 nv_text;
static struct h2up_field *nv_fields;
static nghttp2_nv	*nv_list;
static size_t		 nv_n, nv_cap;

static struct h2up	*pool;
static size_t		 pooled;

static void	h2up_timeout(evutil_socket_t, short, void *);
static void	h2up_body_ready(void *);
static void	h2up_writable(void *);
static void	h2up_cancel(void *);

static const struct call_try_ops h2up_ops = {
	h2up_body_ready, h2up_writable, h2up_cancel
};

/* -- allocation -------------------------------------------------------- */

static struct h2up *
h2up_get(void)
{
	struct h2up *x = pool;

	if (x != NULL) {
		pool = x->next_free;
		pooled--;
	} else if ((x = calloc(1, sizeof(*x))) == NULL)
		return NULL;
	x->hc = NULL;
	x->id = 0;
	x->sent = x->reused = x->resent = false;
	x->got_bytes = x->got_head = x->body_eof = false;
	x->deferred = x->paused = x->body_bad = false;
	x->invalid = NULL;
	x->unconsumed = x->body_off = 0;
	x->status = 0;
	buf_reset(&x->head);
	buf_reset(&x->chead);
	buf_reset(&x->trailers);
	evtimer_assign(&x->timer, worker.base, h2up_timeout, x);
	return x;
}

static void
h2up_put(struct h2up *x)
{
	evtimer_del(&x->timer);
	if (pooled >= POOL_MAX) {
		buf_free(&x->head);
		buf_free(&x->chead);
		buf_free(&x->trailers);
		free(x);
		return;
	}
	buf_trim(&x->head, 16 * 1024);
	buf_trim(&x->chead, 16 * 1024);
	buf_trim(&x->trailers, 4 * 1024);
	x->next_free = pool;
	pool = x;
	pooled++;
}

/* -- letting go ---------------------------------------------------------- */

/* Gives n bytes of window back: the stream's and the connection's, or
 * only the connection's once the stream is closed. */
static void
h2up_give_back(nghttp2_session *s, int32_t id, size_t n)
{
	if (n > 0 && nghttp2_session_consume(s, id, n) != 0)
		nghttp2_session_consume_connection(s, n);
}

/*
 * Leaves the connection: no callback of its session reaches x again.
 * A stream still open is reset (CANCEL), or, if its HEADERS have not
 * gone out yet, never sent (the before-send callback drops it).
 */
static void
h2up_detach(struct h2up *x, bool reset)
{
	struct h2upconn *hc = x->hc;

	evtimer_del(&x->timer);
	if (hc == NULL)
		return;
	x->hc = NULL;
	TAILQ_REMOVE(&hc->tries, x, link);
	if (hc->state != HC_DEAD && x->id > 0) {
		nghttp2_session_set_stream_user_data(hc->s, x->id, NULL);
		if (reset && x->sent)
			nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE,
			    x->id, NGHTTP2_CANCEL);
		h2up_give_back(hc->s, x->id, x->unconsumed);
		h2upconn_kick(hc);
	}
	h2upconn_closed(hc);
}

/* The answer is whole: its trailers, then the end. */
static void
h2up_complete(struct h2up *x)
{
	struct call *c = x->call;
	int slot = x->slot;

	call_trailers(c, x->trailers.data, x->trailers.len);
	x->hc->used = true;
	/* The server may answer before the whole body is sent: then the
	 * rest is not wanted. */
	h2up_detach(x, !x->body_eof);
	h2up_put(x);
	call_try_end(c, slot, true);
}

/* The sink stopped the exchange, or the call cancelled it. */
static void
h2up_drop(struct h2up *x)
{
	struct call *c = x->call;
	int slot = x->slot;

	h2up_detach(x, true);
	h2up_put(x);
	call_try_end(c, slot, false);
}

static void
h2up_fail(struct h2up *x, enum try_fail why, int status, const char *msg,
    const char *detail)
{
	struct call *c = x->call;
	int slot = x->slot;

	if (why != TRY_CLIENT)
		call_log_failure(c, slot, msg, detail);
	h2up_detach(x, true);
	h2up_put(x);
	call_try_failed(c, slot, why, status, msg);
}

/* -- sending --------------------------------------------------------------- */

static int
h2up_field_add(const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	struct h2up_field *f;
	size_t i;

	if (nv_n == nv_cap) {
		size_t cap = nv_cap ? nv_cap * 2 : 32;
		void *a = realloc(nv_fields, cap * sizeof(*nv_fields));

		if (a == NULL)
			return -1;
		nv_fields = a;
		if ((a = realloc(nv_list, cap * sizeof(*nv_list))) == NULL)
			return -1;
		nv_list = a;
		nv_cap = cap;
	}
	f = &nv_fields[nv_n];
	f->name = nv_text.len;
	f->nlen = nlen;
	if (buf_reserve(&nv_text, nlen + vlen) == -1)
		return -1;
	for (i = 0; i < nlen; i++) {
		char ch = name[i];

		nv_text.data[nv_text.len++] = ch >= 'A' && ch <= 'Z' ?
		    (char)(ch + 32) : ch;
	}
	f->value = nv_text.len;
	f->vlen = vlen;
	if (buf_append(&nv_text, value, vlen) == -1)
		return -1;
	nv_n++;
	return 0;
}

/* One of the call's header fields: HTTP/2 carries no connection-specific
 * ones (RFC 9113 8.2.2), and Host is :authority. */
static int
h2up_emit(void *arg, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	(void)arg;
	if (http_token_eq(name, nlen, "te"))
		return http_token_eq(value, vlen, "trailers") ?
		    h2up_field_add(name, nlen, value, vlen) : 0;
	if (headers_hop_by_hop(name, nlen) || http_token_eq(name, nlen,
	    "host") || http_token_eq(name, nlen, "content-length"))
		return 0;
	return h2up_field_add(name, nlen, value, vlen);
}

/* The request's HEADERS into nv_list[0..nv_n). */
static int
h2up_build(struct h2up *x)
{
	const struct call_spec *sp = x->call->spec;
	struct server_rt *srv = &x->up->servers[x->server];
	struct request *r = sp->req;
	char len[24];
	size_t i;
	int rc = 0;

	nv_n = 0;
	buf_reset(&nv_text);
	rc |= h2up_field_add(":method", 7, sp->method, sp->method_len);
	rc |= srv->cfg->https ? h2up_field_add(":scheme", 7, "https", 5) :
	    h2up_field_add(":scheme", 7, "http", 4);
	rc |= h2up_field_add(":authority", 10, srv->host_hdr,
	    strlen(srv->host_hdr));
	rc |= h2up_field_add(":path", 5, sp->target, sp->target_len);
	if (rc != 0 || call_headers(x->call, x->slot, h2up_emit, NULL,
	    &x->chead) == -1)
		return -1;
	buf_reset(&x->chead);
	if (sp->client_body && req_has_body(r) && !r->body_chunked &&
	    r->head.content_length >= 0)
		snprintf(len, sizeof(len), "%lld",
		    (long long)r->head.content_length);
	else if (!sp->client_body && sp->has_body)
		snprintf(len, sizeof(len), "%zu", sp->body_len);
	else
		len[0] = '\0';
	if (len[0] != '\0' && h2up_field_add("content-length", 14, len,
	    strlen(len)) == -1)
		return -1;
	for (i = 0; i < nv_n; i++) {
		nv_list[i] = (nghttp2_nv){
			(uint8_t *)nv_text.data + nv_fields[i].name,
			(uint8_t *)nv_text.data + nv_fields[i].value,
			nv_fields[i].nlen, nv_fields[i].vlen,
			NGHTTP2_NV_FLAG_NONE
		};
	}
	return 0;
}

/* The request body, as the session asks for it. */
static ssize_t
h2up_read_body(nghttp2_session *s, int32_t id, uint8_t *dst, size_t len,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct h2up *x = nghttp2_session_get_stream_user_data(s, id);
	const struct call_spec *sp;
	ssize_t n;

	(void)src;
	(void)arg;
	if (x == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	sp = x->call->spec;
	if (!sp->client_body) {
		n = (ssize_t)(sp->body_len - x->body_off < len ?
		    sp->body_len - x->body_off : len);
		memcpy(dst, sp->body + x->body_off, (size_t)n);
		x->body_off += (size_t)n;
		if (x->body_off == sp->body_len) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			x->body_eof = true;
		}
		return n;
	}
	n = req_read_body(x->req, (char *)dst, len);
	if (n > 0)
		return n;
	if (n == 0) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		x->body_eof = true;
		return 0;
	}
	if (n == REQ_BODY_AGAIN) {
		x->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	/* Bad or too big: the client has been answered; the stream is
	 * reset and its close ends the try. */
	x->body_bad = true;
	return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static void
h2up_arm(struct h2up *x)
{
	uint64_t now = now_ms(), ms;
	struct timeval tv;

	if (x->deadline == 0)
		return;
	ms = x->deadline > now ? x->deadline - now : 0;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(&x->timer, &tv);
}

/*
 * Sends x's request on its connection, which is open.  -1 when the
 * session cannot take it (errno: EAGAIN when the connection has used up
 * its stream ids).
 */
static int
h2up_send(struct h2up *x)
{
	const struct call_spec *sp = x->call->spec;
	nghttp2_data_provider body = { .read_callback = h2up_read_body };
	bool has_body = sp->client_body ? req_has_body(sp->req) :
	    sp->has_body && sp->body_len > 0;
	struct h2upconn *hc = x->hc;
	int32_t id;

	if (h2up_build(x) == -1) {
		errno = ENOMEM;
		return -1;
	}
	id = nghttp2_submit_request(hc->s, NULL, nv_list, nv_n,
	    has_body ? &body : NULL, x);
	if (id < 0) {
		errno = id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? EAGAIN :
		    ENOMEM;
		return -1;
	}
	x->id = id;
	x->body_eof = !has_body;
	x->reused = hc->used;
	h2upconn_kick(hc);
	return 0;
}

/* Takes x off its connection before its request was sent. */
static void
h2up_unplace(struct h2up *x)
{
	struct h2upconn *hc = x->hc;

	TAILQ_REMOVE(&hc->tries, x, link);
	x->hc = NULL;
	h2upconn_closed(hc);
}

/*
 * Puts x on a connection to its server other than avoid: sent at once on
 * an open one, else when the new one has the server's SETTINGS.  -1
 * (errno set) when no connection can be had.
 */
static int
h2up_place(struct h2up *x, struct h2upconn *avoid)
{
	struct server_rt *srv = &x->up->servers[x->server];
	struct h2upconn *hc;

	for (;;) {
		hc = h2upconn_get(x->up, srv, avoid);
		if (hc == NULL)
			return -1;
		x->hc = hc;
		TAILQ_INSERT_TAIL(&hc->tries, x, link);
		h2upconn_opened(hc);
		if (hc->state != HC_OPEN || h2up_send(x) == 0)
			return 0;
		h2up_unplace(x);
		if (errno != EAGAIN)
			return -1;
		h2upconn_goaway(hc);	/* its ids are used up: a new one */
	}
}

/*
 * hc has the server's SETTINGS (usable), or a GOAWAY before them: the
 * tries waiting on it are sent (the session holds those beyond the
 * server's max_concurrent_streams until streams end), or go elsewhere.
 * A try that fails runs its call's sink, which may cancel or start
 * others: the walk starts over after each.
 */
static void
h2up_conn_open(struct h2upconn *hc, bool usable)
{
	struct h2up *x;

again:
	TAILQ_FOREACH(x, &hc->tries, link) {
		if (x->id != 0 || (usable && h2up_send(x) == 0))
			continue;
		h2up_unplace(x);
		if (h2up_place(x, hc) == -1)
			h2up_fail(x, TRY_CONNECT, 502, "upstream connection "
			    "failed", strerror(errno));
		goto again;
	}
}

/*
 * Sends x's request again on another connection than the one it was
 * on, if it can be: once, with the whole body, and, unless the server
 * said it never processed it (unprocessed: REFUSED_STREAM, above a
 * GOAWAY's last stream id) or it never left, only if its method may be
 * repeated.  False: it cannot, and x is as it was.
 */
static bool
h2up_resend(struct h2up *x, bool unprocessed)
{
	const struct call_spec *sp = x->call->spec;
	struct h2upconn *avoid = x->hc;

	if (x->resent || x->got_bytes || (sp->client_body &&
	    req_has_body(x->req) && !req_body_rewind(x->req)) ||
	    (!unprocessed && x->sent && !call_method_retryable(x->call)))
		return false;
	log_debug("h2up: %s did not take the request; sending it again",
	    x->up->servers[x->server].cfg->url);
	h2up_detach(x, true);
	x->resent = true;
	x->id = 0;
	x->sent = x->deferred = x->paused = false;
	x->unconsumed = x->body_off = 0;
	call_resent(x->call, x->slot);
	if (h2up_place(x, avoid) == -1)
		h2up_fail(x, TRY_CONNECT, 502, "upstream connection failed",
		    strerror(errno));
	else
		h2up_arm(x);
	return true;
}

void
h2up_conn_lost(struct h2up *x, enum try_fail why, int status,
    const char *msg, const char *detail)
{
	if (why == TRY_RESET && x->reused && h2up_resend(x, false))
		return;
	h2up_fail(x, why, status, msg, detail);
}

/* -- receiving --------------------------------------------------------------- */

static struct h2up *
h2up_of(nghttp2_session *s, int32_t id)
{
	return id > 0 ? nghttp2_session_get_stream_user_data(s, id) : NULL;
}

/* The final head is in: check it and hand it on.  -1 once x is gone. */
static int
h2up_head(struct h2up *x)
{
	struct call *c = x->call;
	struct request *r = x->req;
	int64_t clen;
	int slot = x->slot, status = x->status;

	if (status >= 100 && status < 200 && status != 101) {
		buf_reset(&x->head);	/* 100, 103: dropped */
		x->status = 0;
		return 0;
	}
	if (status < 200 || status > 999 || headers_upstream_response(
	    x->head.len ? x->head.data : "", x->head.len, r->id, r->id_len,
	    &x->chead, &clen) == -1) {
		h2up_fail(x, TRY_INVALID, 502, "upstream sent an invalid "
		    "response head", "status or header fields");
		return -1;
	}
	if (!call_accept(c, slot, status)) {
		h2up_detach(x, true);
		h2up_put(x);
		call_try_failed(c, slot, TRY_STATUS, status, "");
		return -1;
	}
	x->got_head = true;
	if (call_head(c, status, NULL, 0, x->chead.data, x->chead.len,
	    clen) == -1) {
		h2up_drop(x);
		return -1;
	}
	return 0;
}

static int
cb_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2up *x = h2up_of(s, f->hd.stream_id);

	(void)arg;
	if (x != NULL)
		x->got_bytes = true;
	return 0;
}

static int
cb_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n,
    size_t nlen, const uint8_t *v, size_t vlen, uint8_t flags, void *arg)
{
	struct h2up *x = h2up_of(s, f->hd.stream_id);
	const char *name = (const char *)n;
	struct buf *b;

	(void)flags;
	(void)arg;
	if (x == NULL || f->hd.type != NGHTTP2_HEADERS || x->invalid != NULL)
		return 0;
	if (!x->got_head && nlen == 7 && memcmp(name, ":status", 7) == 0) {
		x->status = vlen == 3 ? atoi((const char *)v) : 0;
		return 0;
	}
	if (nlen > 0 && name[0] == ':')
		return 0;		/* nghttp2 checked them */
	if (x->got_head) {
		/* Trailers: framing and hop-by-hop fields are not. */
		if (headers_hop_by_hop(name, nlen) || http_token_eq(name, nlen,
		    "content-length"))
			return 0;
		b = &x->trailers;
	} else
		b = &x->head;
	if (b->len + nlen + vlen + 4 > HEAD_MAX || buf_append(b, name,
	    nlen) == -1 || buf_append(b, ": ", 2) == -1 || buf_append(b, v,
	    vlen) == -1 || buf_append(b, "\r\n", 2) == -1) {
		x->invalid = "head too large";
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return 0;
}

static int
cb_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2upconn *hc = arg;
	struct h2up *x;

	if (f->hd.type == NGHTTP2_GOAWAY) {
		/* Before its SETTINGS: nothing was sent, all goes elsewhere. */
		bool settling = hc->state == HC_SETTLING;

		h2upconn_goaway(hc);
		if (settling)
			h2up_conn_open(hc, false);
		return 0;
	}
	if (f->hd.type == NGHTTP2_SETTINGS &&
	    !(f->hd.flags & NGHTTP2_FLAG_ACK) && h2upconn_settled(hc)) {
		h2up_conn_open(hc, true);
		return 0;
	}
	if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
	    (x = h2up_of(s, f->hd.stream_id)) == NULL)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && !x->got_head &&
	    h2up_head(x) == -1)
		return 0;
	if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && x->got_head)
		h2up_complete(x);
	return 0;
}

static int
cb_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
    size_t len, void *arg)
{
	struct h2up *x = h2up_of(s, id);

	(void)flags;
	(void)arg;
	if (x == NULL || !x->got_head) {
		h2up_give_back(s, id, len);
		return 0;
	}
	if (call_body(x->call, (const char *)data, len) == -1) {
		h2up_give_back(s, id, len);
		h2up_drop(x);
		return 0;
	}
	if (x->paused || call_full(x->call)) {
		x->paused = true;	/* writable() gives it back */
		x->unconsumed += len;
	} else
		nghttp2_session_consume(s, id, len);
	return 0;
}

static int
cb_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
	struct h2up *x = h2up_of(s, id);

	(void)arg;
	if (x == NULL)
		return 0;
	x->sent = false;		/* closed: no RST_STREAM of ours */
	if (x->body_bad)
		h2up_drop(x);
	else if (x->invalid != NULL)
		h2up_fail(x, TRY_INVALID, 502, "upstream sent an invalid "
		    "response", x->invalid);
	else if (code == NGHTTP2_REFUSED_STREAM && !x->got_head &&
	    h2up_resend(x, true))
		;
	else
		h2up_fail(x, TRY_RESET, 502, x->got_head ? "upstream reset "
		    "the stream mid-response" : "upstream reset the stream",
		    nghttp2_http2_strerror(code));
	return 0;
}

static int
cb_before_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	(void)arg;
	/* A request whose try let go before it left: not sent at all. */
	if (f->hd.type == NGHTTP2_HEADERS &&
	    f->headers.cat == NGHTTP2_HCAT_REQUEST &&
	    h2up_of(s, f->hd.stream_id) == NULL)
		return NGHTTP2_ERR_CANCEL;
	return 0;
}

static int
cb_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2up *x = h2up_of(s, f->hd.stream_id);

	/* Our GOAWAY with an error: the server broke HTTP/2. */
	if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != 0)
		h2upconn_broken(arg, f->goaway.error_code);
	if (x == NULL)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS)
		x->sent = true;
	/* A reset from the session itself: the answer broke the rules. */
	else if (f->hd.type == NGHTTP2_RST_STREAM && x->invalid == NULL)
		x->invalid = "malformed HTTP/2 response";
	return 0;
}

static int
cb_not_send(nghttp2_session *s, const nghttp2_frame *f, int err, void *arg)
{
	struct h2up *x = h2up_of(s, f->hd.stream_id);

	(void)arg;
	(void)err;
	/* A request the session could not send (a GOAWAY came first):
	 * the server never saw it. */
	if (x != NULL && f->hd.type == NGHTTP2_HEADERS && !h2up_resend(x,
	    true))
		h2up_fail(x, TRY_RESET, 502, "upstream refused the stream",
		    nghttp2_strerror(err));
	return 0;
}

void
h2up_callbacks(nghttp2_session_callbacks *cb)
{
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
	    cb_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, cb_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb,
	    cb_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cb_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb,
	    cb_stream_close);
	nghttp2_session_callbacks_set_before_frame_send_callback(cb,
	    cb_before_send);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb,
	    cb_frame_send);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cb,
	    cb_not_send);
}

/* -- the call's hooks -------------------------------------------------- */

static void
h2up_timeout_run(evutil_socket_t fd, short what, void *arg)
{
	struct h2up *x = arg;

	(void)fd;
	(void)what;
	if (x->deferred && x->call->spec->client_body &&
	    !x->req->body_done && !x->got_bytes) {
		h2up_fail(x, TRY_CLIENT, 408, "client sent the request body "
		    "too slowly", "timeout");
		return;
	}
	/* Still waiting for its connection: as native.c says it. */
	if (x->id == 0 && x->hc != NULL && x->hc->state < HC_OPEN) {
		h2up_fail(x, TRY_CONNECT, 504, "upstream connect timed out",
		    "timeout");
		return;
	}
	h2up_fail(x, TRY_TIMEOUT, 504, "upstream timed out", "timeout");
}

static void
h2up_timeout(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_UPSTREAM_TIMER);
	h2up_timeout_run(fd, what, arg);
	loopwatch_end();
}

static void
h2up_body_ready(void *arg)
{
	struct h2up *x = arg;

	if (!x->deferred || x->hc == NULL)
		return;
	x->deferred = false;
	nghttp2_session_resume_data(x->hc->s, x->id);
	h2upconn_kick(x->hc);
}

static void
h2up_writable(void *arg)
{
	struct h2up *x = arg;

	if (!x->paused || x->hc == NULL)
		return;
	x->paused = false;
	h2up_give_back(x->hc->s, x->id, x->unconsumed);
	x->unconsumed = 0;
	h2upconn_kick(x->hc);
}

static void
h2up_cancel(void *arg)
{
	h2up_drop(arg);
}

void
h2up_start(struct call *c, int slot)
{
	struct h2up *x;
	uint64_t t;

	if ((x = h2up_get()) == NULL) {
		call_try_failed(c, slot, TRY_LOCAL, 503, "out of memory");
		return;
	}
	x->call = c;
	x->slot = slot;
	x->req = c->spec->req;
	x->up = c->up;
	x->server = c->t[slot].server;
	t = call_try_ms(c);
	x->deadline = t > 0 ? now_ms() + t : 0;
	call_try_attach(c, slot, &h2up_ops, x);
	if (c->spec->client_body)
		req_continue(x->req);
	if (h2up_place(x, NULL) == -1)
		h2up_fail(x, TRY_CONNECT, 502, "upstream connection failed",
		    strerror(errno));
	else
		h2up_arm(x);
}

void
h2up_free(void)
{
	struct h2up *x;

	while ((x = pool) != NULL) {
		pool = x->next_free;
		buf_free(&x->head);
		buf_free(&x->chead);
		buf_free(&x->trailers);
		free(x);
	}
	pooled = 0;
	buf_free(&nv_text);
	free(nv_fields);
	free(nv_list);
	nv_fields = NULL;
	nv_list = NULL;
	nv_n = nv_cap = 0;
}
