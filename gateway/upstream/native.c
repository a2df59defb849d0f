/*
 * The native transport: agate's own HTTP/1.1 client for plain-http
 * servers, speaking over pooled keep-alive connections (upconn.c) on the
 * worker's event loop, with the same parser rules as the client side.
 * It exists because libcurl cost most of a proxied request's CPU here
 * (docs/architecture.md): this path does one write and one read per
 * small exchange and nothing else.
 *
 * One struct native per try of a call (call.h).  The request (head, then
 * body as the client sends it, or the call's own body) is built in `out`
 * and written as the socket takes it;
 * while the whole request is under REPLAY_MAX it is kept, so that a
 * reused connection found dead before any response byte can be replaced
 * by a fresh one and the request sent again (the stale keep-alive race
 * every proxy meets).  The response is read into `in`, its head checked
 * and filtered, its body streamed to the call's sink; a sink that cannot
 * keep up (a slow client) pauses reading from the upstream.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/gateway.h"
#include "gateway/upstream/call.h"
#include "gateway/upstream/upconn.h"
#include "lib/log.h"
#include "worker/loopwatch.h"
#include "worker/worker.h"

/*
 * The response read buffer is borrowed for a read and given back as soon
 * as all it holds has been passed on (nearly always at once), so 500
 * exchanges in flight do not pin 500 of them.  64 KiB: one read takes a
 * head and a good piece of body; a head may be that large (nginx's
 * default proxy_buffer_size is 4-8k).
 */
#define IN_SIZE		(64 * 1024)
#define IN_POOL_MAX	16
#define DIRECT_MAX	(64 * 1024)	/* a sized body's read at a time */
#define FILL_CHUNK	(64 * 1024)	/* client body read at a time */
#define REPLAY_MAX	(64 * 1024)	/* a request this small can be resent */
#define POOL_MAX	64

enum resp_framing {
	RB_NONE,		/* HEAD, 1xx, 204, 304 */
	RB_LENGTH,		/* Content-Length */
	RB_CHUNKED,
	RB_CLOSE		/* until the server closes */
};

/* The request side of an exchange. */
enum native_send {
	NS_NEW,			/* no connection yet */
	NS_CONNECTING,		/* connect() under way */
	NS_SENDING,		/* writing out[wpos..len) as the socket takes it */
	NS_WAIT_CLIENT,		/* all there is went out; more body is coming */
	NS_SENT,		/* the whole request went out */
	NS_FAILED		/* the server stopped reading; its answer decides */
};

/* The response side. */
enum native_recv {
	NR_HEAD,		/* waiting for the (final) head */
	NR_BODY,		/* passing the body on */
	NR_PAUSED		/* the sink is full: not reading until writable */
};

struct native {
	struct call		*call;
	int			 slot;		/* of the call's tries */
	struct request		*req;		/* the client's; NULL once let go */
	struct upstream_rt	*up;
	size_t			 server;
	struct upconn		*uc;
	enum native_send	 send;
	enum native_recv	 recv;
	bool			 reused;	/* uc came from the pool */
	bool			 retried;	/* the stale-connection retry */
	uint64_t		 deadline;	/* this try, monotonic ms; 0: none */
	struct event		 timer;

	/* Sending: out[wpos..len) is still to go. */
	struct buf		 out;
	size_t			 wpos;
	bool			 replayable;	/* out still has all of it */
	bool			 chunked_up;	/* body framed chunked upstream */
	bool			 body_eof;	/* the client body is all in out */

	/* Receiving. */
	char			*in;
	size_t			 in_len;
	size_t			 scan;
	bool			 got_bytes;
	struct http_resp_head	 rh;
	enum resp_framing	 rb;
	int64_t			 rb_left;
	struct http_chunked	 chunk;
	struct buf		 chead;		/* filtered, for the client */
	struct native		*next_free;
};

static struct native	*pool;
static size_t		 pooled;
static char		*in_pool[IN_POOL_MAX];
static size_t		 in_pooled;

static void	native_ready(void *, short);
static void	native_timeout(evutil_socket_t, short, void *);
static void	native_body_ready(void *);
static void	native_writable(void *);
static void	native_cancel(void *);
static int	native_send(struct native *);

static const struct call_try_ops native_ops = {
	native_body_ready, native_writable, native_cancel
};

/* -- allocation -------------------------------------------------------- */

static bool
native_in_borrow(struct native *x)
{
	if (x->in != NULL)
		return true;
	x->in = in_pooled > 0 ? in_pool[--in_pooled] : malloc(IN_SIZE);
	return x->in != NULL;
}

/* Gives the read buffer back; only when it holds nothing (or at the end). */
static void
native_in_return(struct native *x)
{
	if (x->in == NULL)
		return;
	if (in_pooled < IN_POOL_MAX)
		in_pool[in_pooled++] = x->in;
	else
		free(x->in);
	x->in = NULL;
	x->in_len = 0;
}

static struct native *
native_get(void)
{
	struct native *x = pool;

	if (x != NULL) {
		pool = x->next_free;
		pooled--;
	} else if ((x = calloc(1, sizeof(*x))) == NULL)
		return NULL;
	x->in = NULL;
	x->uc = NULL;
	x->send = NS_NEW;
	x->recv = NR_HEAD;
	x->reused = x->retried = false;
	buf_reset(&x->out);
	buf_reset(&x->chead);
	x->wpos = 0;
	x->replayable = true;
	x->chunked_up = x->body_eof = false;
	x->in_len = x->scan = 0;
	x->got_bytes = false;
	x->rb = RB_NONE;
	/* x does not move: the timer is assigned once, re-armed per phase. */
	evtimer_assign(&x->timer, worker.base, native_timeout, x);
	return x;
}

/* Stops everything the exchange holds; the upstream connection is
 * pooled if keep is set, closed otherwise. */
static void
native_put(struct native *x, bool keep)
{
	evtimer_del(&x->timer);
	if (x->uc != NULL) {
		if (keep)
			upconn_put(x->uc);
		else
			upconn_close(x->uc);
		x->uc = NULL;
	}
	native_in_return(x);
	if (pooled >= POOL_MAX) {
		buf_free(&x->out);
		buf_free(&x->chead);
		free(x);
		return;
	}
	buf_trim(&x->out, 256 * 1024);
	buf_trim(&x->chead, 16 * 1024);
	x->next_free = pool;
	pool = x;
	pooled++;
}

/* -- state ------------------------------------------------------------- */

#define B(s)	(1u << (s))

static void
native_set_send(struct native *x, enum native_send to)
{
	static const unsigned legal[] = {
		[NS_NEW] = B(NS_CONNECTING) | B(NS_SENDING),
		[NS_CONNECTING] = B(NS_SENDING),
		/* ... and from any state once connected, the stale
		 * connection's resend starts again on a fresh one. */
		[NS_SENDING] = B(NS_WAIT_CLIENT) | B(NS_SENT) | B(NS_FAILED) |
		    B(NS_CONNECTING),
		[NS_WAIT_CLIENT] = B(NS_SENDING) | B(NS_CONNECTING),
		[NS_SENT] = B(NS_CONNECTING),
		[NS_FAILED] = B(NS_CONNECTING),
	};

	assert(legal[x->send] & B(to));
	x->send = to;
}

static void
native_set_recv(struct native *x, enum native_recv to)
{
	static const unsigned legal[] = {
		[NR_HEAD] = B(NR_BODY),
		[NR_BODY] = B(NR_PAUSED),
		[NR_PAUSED] = B(NR_BODY),
	};

	assert(legal[x->recv] & B(to));
	x->recv = to;
}

/* -- ending ------------------------------------------------------------ */

static void
native_detach(struct native *x)
{
	x->req = NULL;
}

static void
native_complete(struct native *x)
{
	struct call *c = x->call;
	int slot = x->slot;
	bool keep = x->rh.keepalive && x->rb != RB_CLOSE &&
	    x->send == NS_SENT && x->in_len == 0;

	native_detach(x);
	native_put(x, keep);
	call_try_end(c, slot, true);
}

/* The sink stopped the exchange, or the call cancelled it: let go. */
static void
native_drop(struct native *x)
{
	struct call *c = x->call;
	int slot = x->slot;

	native_detach(x);
	native_put(x, false);
	call_try_end(c, slot, false);
}

/*
 * The exchange failed; the upstream connection is closed.  The call
 * decides what the client sees: a retry, the error, or (once response
 * bytes went out) a cut response.
 */
static void
native_fail(struct native *x, enum try_fail why, int status, const char *msg,
    const char *detail)
{
	struct call *c = x->call;
	int slot = x->slot;

	if (x->req == NULL)
		return;			/* already let go (a bug if reached) */
	if (why != TRY_CLIENT)
		call_log_failure(c, slot, msg, detail);
	native_detach(x);
	native_put(x, false);
	call_try_failed(c, slot, why, status, msg);
}

/* -- the stale keep-alive connection ------------------------------------ */

/* Arms the timer for until (monotonic ms); 0: no timer. */
static void
native_arm(struct native *x, uint64_t until)
{
	uint64_t now = now_ms(), ms = until > now ? until - now : 0;
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	if (until == 0) {
		evtimer_del(&x->timer);
		return;
	}
	evtimer_add(&x->timer, &tv);
}

/*
 * Takes a connection (pooled, or a new one) and starts sending.  fresh
 * skips the pool: after a pooled one turned out dead.  Returns -1 only
 * when no connection could be had (errno set; x is still the caller's);
 * a failure once sending has begun is handled, and reported, inside.
 */
static int
native_connect(struct native *x, bool fresh)
{
	struct server_rt *srv = &x->up->servers[x->server];
	uint64_t ct = call_connect_ms(x->call), until;

	if (fresh)
		upconn_close_idle(srv);		/* its siblings are suspect */
	x->uc = upconn_get(x->up, srv, &x->reused);
	if (x->uc == NULL)
		return -1;
	upconn_own(x->uc, x, native_ready);
	upconn_want_read(x->uc, true);
	if (x->reused) {
		native_set_send(x, NS_SENDING);
		native_arm(x, x->deadline);
		native_send(x);		/* x may be gone after this */
		return 0;
	}
	native_set_send(x, NS_CONNECTING);
	until = ct > 0 ? now_ms() + ct : 0;
	if (x->deadline != 0 && (until == 0 || x->deadline < until))
		until = x->deadline;
	native_arm(x, until);
	return 0;
}

/*
 * The upstream closed or reset before answering.  On a reused connection
 * that is most likely the keep-alive race (it closed the idle connection
 * as we sent): send again once, on a fresh connection, if the request is
 * kept whole and its method may be repeated.
 */
static void
native_lost(struct native *x, const char *detail)
{
	if (x->reused && !x->retried && !x->got_bytes && x->replayable &&
	    call_method_retryable(x->call)) {
		log_debug("native: %s on a reused connection to %s; sending "
		    "again on a fresh one", detail,
		    x->up->servers[x->server].cfg->url);
		upconn_close(x->uc);
		x->uc = NULL;
		x->retried = true;
		x->wpos = 0;
		x->in_len = x->scan = 0;
		call_resent(x->call, x->slot);
		if (native_connect(x, true) == -1)
			native_fail(x, TRY_CONNECT, 502, "upstream connection "
			    "failed", strerror(errno));
		return;
	}
	native_fail(x, TRY_RESET, 502, "upstream closed the connection",
	    detail);
}

/* -- sending ----------------------------------------------------------- */

/* Appends what the client has sent of its body, framed for upstream.
 * Returns 1 if something (or the end) was added, 0 if none is here yet,
 * -1 if the body was bad (the client has been answered). */
static int
native_fill(struct native *x)
{
	struct buf *o = &x->out;
	char tmp[FILL_CHUNK];
	char *dst;
	ssize_t n;

	if (x->body_eof)
		return 0;
	if (buf_reserve(o, FILL_CHUNK + 32) == -1) {
		req_fail(x->req, "out of memory");
		return -1;
	}
	dst = x->chunked_up ? tmp : o->data + o->len;
	n = req_read_body(x->req, dst, FILL_CHUNK);
	if (n == REQ_BODY_AGAIN)
		return 0;
	if (n == REQ_BODY_ERROR)
		return -1;
	if (n == 0) {
		x->body_eof = true;
		if (x->chunked_up && buf_append(o, "0\r\n\r\n", 5) != 0)
			goto nomem;
		return 1;
	}
	if (!x->chunked_up) {
		o->len += (size_t)n;
		return 1;
	}
	if (buf_appendf(o, "%zx\r\n", (size_t)n) != 0 ||
	    buf_append(o, tmp, (size_t)n) != 0 || buf_append(o, "\r\n", 2) != 0)
		goto nomem;
	return 1;
nomem:
	req_fail(x->req, "out of memory");
	return -1;
}

/* Writes what is ready; 0 on progress or wait, -1 if x is gone. */
static int
native_send(struct native *x)
{
	struct buf *o = &x->out;
	ssize_t n;
	int rc;

	while (x->send == NS_SENDING) {
		if (x->wpos < o->len) {
			n = upconn_write(x->uc, o->data + x->wpos,
			    o->len - x->wpos);
			if (n > 0) {
				x->wpos += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN) {
				upconn_want_write(x->uc, true);
				return 0;
			}
			/* The server stopped reading.  If it has begun to
			 * answer, the answer decides; else it is lost. */
			native_set_send(x, NS_FAILED);
			upconn_want_write(x->uc, false);
			if (!x->got_bytes) {
				native_lost(x, strerror(errno));
				return -1;
			}
			return 0;
		}
		if (o->len >= REPLAY_MAX) {
			buf_reset(o);		/* too big to keep for a resend */
			x->wpos = 0;
			x->replayable = false;
		}
		if (x->body_eof) {
			native_set_send(x, NS_SENT);
			break;
		}
		if ((rc = native_fill(x)) == 0) {
			native_set_send(x, NS_WAIT_CLIENT);
			break;
		}
		if (rc < 0) {
			/* A bad body: the client has had its answer. */
			native_drop(x);
			return -1;
		}
	}
	upconn_want_write(x->uc, false);
	return 0;
}

/* -- receiving --------------------------------------------------------- */

/* Whether the sink wants the exchange paused. */
static bool
native_full(struct native *x)
{
	return call_full(x->call);
}

static void
native_consume(struct native *x, size_t n)
{
	if (n < x->in_len)
		memmove(x->in, x->in + n, x->in_len - n);
	x->in_len -= n;
	x->scan = 0;
}

static enum resp_framing
native_framing(struct native *x)
{
	const struct call_spec *sp = x->call->spec;
	int st = x->rh.status;

	if (http_token_eq(sp->method, sp->method_len, "HEAD") || st == 204 ||
	    st == 304)
		return RB_NONE;
	if (x->rh.chunked) {
		http_chunked_init(&x->chunk);
		return RB_CHUNKED;
	}
	if (x->rh.content_length >= 0) {
		x->rb_left = x->rh.content_length;
		return x->rb_left > 0 ? RB_LENGTH : RB_NONE;
	}
	return RB_CLOSE;
}

/*
 * An Upgrade's 101 is at in[0..end): once the caller's check passes,
 * the connection is the sink's (a tunnel), with whatever the server sent
 * after the head.  Returns -1: x is gone either way.
 */
static int
native_switch(struct native *x, size_t end)
{
	struct call *c = x->call;
	struct request *r = x->req;
	struct ssl_st *ssl;
	const char *why;
	int slot = x->slot, fd, rc;

	if (headers_upgrade_response(x->rh.fields, x->rh.fields_len, r->id,
	    r->id_len, &x->chead) == -1) {
		native_fail(x, TRY_INVALID, 502, "upstream sent an invalid "
		    "response head", "header fields");
		return -1;
	}
	if (c->spec->check_switch != NULL && (why = c->spec->check_switch(c,
	    x->rh.fields, x->rh.fields_len)) != NULL) {
		native_fail(x, TRY_INVALID, 502, why, "101");
		return -1;
	}
	if (!call_accept(c, slot, 101)) {
		native_detach(x);
		native_put(x, false);
		call_try_failed(c, slot, TRY_STATUS, 101, "");
		return -1;
	}
	fd = upconn_take_fd(x->uc, &ssl);
	x->uc = NULL;
	/* The sink copies the early bytes before `in` is given back. */
	rc = call_switched(c, x->chead.data, x->chead.len, fd, ssl,
	    x->in + end, x->in_len - end);
	native_detach(x);
	native_put(x, false);
	call_try_end(c, slot, rc == 0);
	return -1;
}

/* A complete head is at in[0..end): check it and start the response.
 * Returns 1 when the head was handled, -1 if x is gone. */
static int
native_head(struct native *x, size_t end)
{
	struct request *r = x->req;
	int64_t clen;

	if (!http_parse_response_head(x->in, end, &x->rh) ||
	    x->rh.other_coding) {
		native_fail(x, TRY_INVALID, 502, "upstream sent an invalid "
		    "response head", "bad status line, field or framing");
		return -1;
	}
	if (x->rh.status == 101) {
		if (x->call->spec->upgrade)
			return native_switch(x, end);
		native_fail(x, TRY_INVALID, 502, "upstream switched protocols, "
		    "which is not proxied", "101");
		return -1;
	}
	if (x->rh.status < 200) {
		native_consume(x, end);		/* 100, 103: dropped */
		return 1;
	}
	x->rb = native_framing(x);
	if (headers_upstream_response(x->rh.fields, x->rh.fields_len, r->id,
	    r->id_len, &x->chead, &clen) == -1) {
		native_fail(x, TRY_INVALID, 502, "upstream sent an invalid "
		    "response head", "header fields");
		return -1;
	}
	if (!call_accept(x->call, x->slot, x->rh.status)) {
		struct call *c = x->call;
		int status = x->rh.status, slot = x->slot;

		/* A retry follows: this answer is dropped with its
		 * connection. */
		native_detach(x);
		native_put(x, false);
		call_try_failed(c, slot, TRY_STATUS, status, "");
		return -1;
	}
	native_set_recv(x, NR_BODY);
	/* The reason phrase points into `in`: use it before the head is
	 * consumed (which moves the body bytes over it). */
	if (call_head(x->call, x->rh.status, x->rh.reason_len ?
	    x->rh.reason : NULL, x->rh.reason_len, x->chead.data,
	    x->chead.len, x->rb == RB_CHUNKED || x->rb == RB_CLOSE ? -1 :
	    x->rh.content_length) == -1) {
		native_drop(x);			/* the sink stopped it */
		return -1;
	}
	native_consume(x, end);
	return 1;
}

/* Passes body bytes on; 1 when the body is complete, 0 for more, -1 gone. */
static int
native_body(struct native *x)
{
	size_t used, dlen, n;
	const char *data;

	switch (x->rb) {
	case RB_NONE:
		return 1;
	case RB_LENGTH:
		n = (int64_t)x->in_len < x->rb_left ? x->in_len :
		    (size_t)x->rb_left;
		if (call_body(x->call, x->in, n) == -1)
			break;
		x->rb_left -= (int64_t)n;
		native_consume(x, n);
		return x->rb_left == 0;
	case RB_CLOSE:
		if (call_body(x->call, x->in, x->in_len) == -1)
			break;
		native_consume(x, x->in_len);
		return 0;
	case RB_CHUNKED:
		for (;;) {
			enum http_chunk_result rc = http_chunked_next(&x->chunk,
			    x->in, x->in_len, SIZE_MAX, &used, &data, &dlen);

			if (rc == CHUNK_DATA && call_body(x->call, data,
			    dlen) == -1)
				break;
			native_consume(x, used);
			if (rc == CHUNK_DONE)
				return 1;
			if (rc == CHUNK_ERROR) {
				native_fail(x, TRY_INVALID, 502, "upstream sent a "
				    "bad chunked body", "chunk framing");
				return -1;
			}
			if (rc == CHUNK_AGAIN)
				return 0;
		}
		break;
	}
	native_drop(x);				/* the sink stopped it */
	return -1;
}

/* Works through what has been read.  Returns -1 once x is gone. */
static int
native_parse(struct native *x)
{
	size_t end;
	int rc;

	while (x->recv == NR_HEAD) {
		if ((end = http_head_end(x->in, x->in_len, &x->scan)) == 0) {
			if (x->in_len < IN_SIZE)
				return 0;
			native_fail(x, TRY_INVALID, 502, "upstream sent an "
			    "invalid response head", "head too large");
			return -1;
		}
		if (native_head(x, end) == -1)
			return -1;
	}
	if ((rc = native_body(x)) == -1)
		return -1;
	if (rc == 1) {
		native_complete(x);
		return -1;
	}
	if (native_full(x)) {
		native_set_recv(x, NR_PAUSED);	/* writable() resumes */
		upconn_want_read(x->uc, false);
	}
	return 0;
}

static void
native_eof(struct native *x, const char *detail)
{
	if (x->recv == NR_HEAD) {
		if (x->got_bytes)
			native_fail(x, TRY_RESET, 502, "upstream sent an "
			    "incomplete response head", detail);
		else
			native_lost(x, detail);
		return;
	}
	if (x->rb == RB_CLOSE) {
		x->rh.keepalive = false;
		native_complete(x);
		return;
	}
	native_fail(x, TRY_RESET, 502, "upstream closed the connection "
	    "mid-response", detail);
}

/*
 * A Content-Length body with nothing left over in `in` is read straight
 * into the client's output queue: no copy.  Returns 1 if it read, 0 if
 * this path does not apply, -1 if x is gone.
 */
static int
native_recv_direct(struct native *x)
{
	size_t room, want;
	ssize_t n;
	char *dst;

	if (x->recv == NR_HEAD || x->rb != RB_LENGTH || x->in_len != 0)
		return 0;
	want = x->rb_left < DIRECT_MAX ? (size_t)x->rb_left : DIRECT_MAX;
	if ((dst = call_space(x->call, want, &room)) == NULL)
		return 0;
	if (room > want)
		room = want;
	n = upconn_read(x->uc, dst, room);
	if (n > 0) {
		call_commit(x->call, (size_t)n);
		x->rb_left -= n;
		if (x->rb_left == 0) {
			native_complete(x);
			return -1;
		}
		if (native_full(x)) {
			native_set_recv(x, NR_PAUSED);
			upconn_want_read(x->uc, false);
		}
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 1;
	native_eof(x, n == 0 ? "end of file" : strerror(errno));
	return -1;
}

static void
native_recv(struct native *x)
{
	ssize_t n;

	if (native_recv_direct(x) != 0)
		return;
	if (!native_in_borrow(x)) {
		native_fail(x, TRY_LOCAL, 502, "out of memory",
		    "response buffer");
		return;
	}
	if (x->in_len == IN_SIZE) {
		/* Unparsed bytes fill the buffer: only a huge head does, and
		 * native_parse() fails it. */
		native_parse(x);
		return;
	}
	n = upconn_read(x->uc, x->in + x->in_len, IN_SIZE - x->in_len);
	if (n > 0) {
		x->in_len += (size_t)n;
		x->got_bytes = true;
		if (native_parse(x) == 0 && x->in_len == 0)
			native_in_return(x);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	native_eof(x, n == 0 ? "end of file" : strerror(errno));
}

/* -- events ------------------------------------------------------------- */

static void
native_connected(struct native *x)
{
	const char *detail;
	int err = upconn_connect_error(x->uc, &detail);

	if (err != 0) {
		native_fail(x, TRY_CONNECT, 502, "upstream connection failed",
		    detail);
		return;
	}
	native_set_send(x, NS_SENDING);
	native_arm(x, x->deadline);
	native_send(x);
}

static void
native_ready(void *arg, short what)
{
	struct native *x = arg;

	if (x->send == NS_CONNECTING) {
		native_connected(x);
		return;
	}
	if ((what & EV_WRITE) && native_send(x) == -1)
		return;
	if (what & EV_READ)
		native_recv(x);
}

static void
native_timeout_run(evutil_socket_t fd, short what, void *arg)
{
	struct native *x = arg;

	if (x->send == NS_CONNECTING) {
		native_fail(x, TRY_CONNECT, 504, "upstream connect timed out",
		    "connect_timeout");
		return;
	}
	if (x->send == NS_WAIT_CLIENT && x->call->spec->client_body &&
	    !x->req->body_done && !x->got_bytes) {
		native_fail(x, TRY_CLIENT, 408, "client sent the request body "
		    "too slowly", "timeout");
		return;
	}
	native_fail(x, TRY_TIMEOUT, 504, "upstream timed out", "timeout");
}

static void
native_timeout(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_UPSTREAM_TIMER);
	native_timeout_run(fd, what, arg);
	loopwatch_end();
}

/* -- worker hooks ------------------------------------------------------- */

static void
native_body_ready(void *arg)
{
	struct native *x = arg;

	if (x->send != NS_WAIT_CLIENT)
		return;
	native_set_send(x, NS_SENDING);
	native_send(x);
}

static void
native_writable(void *arg)
{
	struct native *x = arg;

	if (x->recv != NR_PAUSED)
		return;
	native_set_recv(x, NR_BODY);
	upconn_want_read(x->uc, true);
	if (native_parse(x) == 0 && x->in_len == 0)
		native_in_return(x);
}

static void
native_cancel(void *arg)
{
	struct native *x = arg;

	/* Mid-exchange: the connection cannot be reused; closing it is how
	 * the upstream learns the answer is not wanted. */
	native_drop(x);
}

/* -- starting ----------------------------------------------------------- */

static int
native_add_header(void *arg, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
	struct buf *o = arg;

	return buf_append(o, name, nlen) | buf_append(o, ": ", 2) |
	    buf_append(o, value, vlen) | buf_append(o, "\r\n", 2);
}

/* The call's body, framed: the client's as it comes (native_fill()), or
 * the call's own, whole, after the head. */
static int
native_frame_body(struct native *x)
{
	const struct call_spec *sp = x->call->spec;
	struct request *r = sp->req;
	struct buf *o = &x->out;
	int rc = 0;

	if (!sp->client_body) {
		x->body_eof = true;
		/* A method that may carry a body says it has none: strict
		 * servers want a length (411) for a POST. */
		if (!sp->has_body && (http_token_eq(sp->method, sp->method_len,
		    "GET") || http_token_eq(sp->method, sp->method_len,
		    "HEAD")))
			return buf_append(o, "\r\n", 2);
		if (!sp->has_body)
			return buf_append(o, "Content-Length: 0\r\n\r\n", 21);
		rc |= buf_appendf(o, "Content-Length: %zu\r\n\r\n",
		    sp->body_len);
		return rc | buf_append(o, sp->body, sp->body_len);
	}
	if (r->body_chunked) {
		x->chunked_up = true;
		rc |= buf_append(o, "Transfer-Encoding: chunked\r\n", 28);
	} else if (r->head.content_length >= 0)
		rc |= buf_appendf(o, "Content-Length: %lld\r\n",
		    (long long)r->head.content_length);
	if (!req_has_body(r))
		x->body_eof = true;
	return rc | buf_append(o, "\r\n", 2);
}

/* The request head: the call's method and target, then its fields. */
static int
native_build(struct native *x)
{
	const struct call_spec *sp = x->call->spec;
	struct server_rt *srv = &x->up->servers[x->server];
	struct buf *o = &x->out;
	int rc = 0;

	rc |= buf_append(o, sp->method, sp->method_len);
	rc |= buf_append(o, " ", 1);
	rc |= buf_append(o, sp->target, sp->target_len);
	rc |= buf_append(o, " HTTP/1.1\r\nHost: ", 17);
	rc |= buf_append(o, srv->host_hdr, strlen(srv->host_hdr));
	rc |= buf_append(o, "\r\n", 2);
	if (rc != 0 || call_headers(x->call, x->slot, native_add_header, o,
	    &x->chead) == -1)
		return -1;
	buf_reset(&x->chead);
	return native_frame_body(x);
}

void
native_start(struct call *c, int slot)
{
	struct native *x;
	uint64_t t;

	if ((x = native_get()) == NULL) {
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
	call_try_attach(c, slot, &native_ops, x);
	if (native_build(x) == -1) {
		native_fail(x, TRY_LOCAL, 502, "cannot build the upstream "
		    "request", "out of memory");
		return;
	}
	if (x->call->spec->client_body) {
		req_continue(x->req);
		/* Whatever of the body is here already leaves with the
		 * head. */
		if (native_fill(x) < 0) {
			native_drop(x);
			return;
		}
	}
	if (native_connect(x, false) == -1)
		native_fail(x, TRY_CONNECT, 502, "upstream connection failed",
		    strerror(errno));
}

void
native_free(void)
{
	struct native *x;

	while ((x = pool) != NULL) {
		pool = x->next_free;
		buf_free(&x->out);
		buf_free(&x->chead);
		free(x);
	}
	pooled = 0;
	while (in_pooled > 0)
		free(in_pool[--in_pooled]);
}
