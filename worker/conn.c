/*
 * Client connections.  Each one is a small state machine (conn.h) driven
 * by one persistent read event, a write event armed only while the socket
 * is full, and one node on a timeout list.  Input is read into one buffer
 * per busy connection (idle ones hold none), parsed in place, and handed
 * to the gateway; output is queued and written once per loop pass by the
 * flush pass, so a response costs one write(2) however many pieces the
 * gateway produced it in.  Teardown is deferred to that pass as well, so
 * no caller ever has a connection vanish under it.
 */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/metrics/metrics.h"
#include "lib/log.h"
#include "worker/conn.h"
#include "worker/h2.h"
#include "worker/loopwatch.h"
#include "worker/path.h"
#include "worker/proxy_proto.h"
#include "worker/tls.h"
#include "worker/tunnel.h"
#include "worker/worker.h"

#define SMALL_POOL_MAX	128	/* 512 KiB kept at most */
#define LARGE_POOL_MAX	8
#define LINGER_MS	2000
#define DRAIN_GRACE_MS	1000

struct conn_list conns = TAILQ_HEAD_INITIALIZER(conns);

static struct conn	*dirty_list;
static struct event	 flush_ev;
static char		*small_pool[SMALL_POOL_MAX];
static size_t		 small_pooled;
static char		*large_pool[LARGE_POOL_MAX];
static size_t		 large_pooled;

static void	conn_process(struct conn *);
static bool	conn_tls_after_proxy(struct conn *);
static void	conn_read_cb(evutil_socket_t, short, void *);
static void	conn_write_cb(evutil_socket_t, short, void *);

/* -- buffers ---------------------------------------------------------- */

static char *
pool_take(char **pool, size_t *n, size_t size)
{
	return *n > 0 ? pool[--*n] : malloc(size);
}

static void
pool_give(char **pool, size_t *n, size_t max, char *b)
{
	if (*n < max)
		pool[(*n)++] = b;
	else
		free(b);
}

/*
 * A buffer for n bytes just read into the worker's scratch buffer: small
 * when they fit (most heads), full size otherwise (a head with its body).
 */
static bool
rbuf_get(struct conn *c, size_t n)
{
	if (n <= RBUF_SMALL) {
		c->rbuf = pool_take(small_pool, &small_pooled, RBUF_SMALL);
		c->rcap = RBUF_SMALL;
	} else {
		c->rbuf = pool_take(large_pool, &large_pooled,
		    worker.rbuf_size);
		c->rcap = worker.rbuf_size;
	}
	return c->rbuf != NULL;
}

static void
rbuf_put(struct conn *c)
{
	if (c->rbuf == NULL)
		return;
	if (c->rcap == RBUF_SMALL)
		pool_give(small_pool, &small_pooled, SMALL_POOL_MAX, c->rbuf);
	else
		pool_give(large_pool, &large_pooled, LARGE_POOL_MAX, c->rbuf);
	c->rbuf = NULL;
	c->rcap = 0;
	c->rlen = c->scan = c->head_len = c->body_off = 0;
}

/* Small to full size; a parsed head is moved along.  0, or -1 (memory). */
static int
rbuf_grow(struct conn *c)
{
	char *nb;

	if (c->rcap >= worker.rbuf_size)
		return 0;
	nb = pool_take(large_pool, &large_pooled, worker.rbuf_size);
	if (nb == NULL)
		return -1;
	memcpy(nb, c->rbuf, c->rlen);
	if (c->req != NULL)
		request_rebase(c->req, c->rbuf, c->rlen, nb);
	/* Cleared, so a pointer left behind reads nothing plausible. */
	memset(c->rbuf, 0, c->rlen);
	pool_give(small_pool, &small_pooled, SMALL_POOL_MAX, c->rbuf);
	c->rbuf = nb;
	c->rcap = worker.rbuf_size;
	return 0;
}

/* -- state ------------------------------------------------------------ */

#define B(s)	(1u << (s))

static void
conn_set_state(struct conn *c, enum conn_state to)
{
	static const unsigned legal[] = {
		[CS_NEW] = B(CS_PROXY) | B(CS_HEAD),
		[CS_PROXY] = B(CS_HEAD) | B(CS_CLOSED),
		[CS_IDLE] = B(CS_HEAD) | B(CS_CLOSED),
		[CS_HEAD] = B(CS_ACTIVE) | B(CS_H2) | B(CS_CLOSED),
		[CS_ACTIVE] = B(CS_IDLE) | B(CS_HEAD) | B(CS_LINGER) |
		    B(CS_TUNNEL) | B(CS_CLOSED),
		[CS_LINGER] = B(CS_CLOSED),
		[CS_TUNNEL] = B(CS_CLOSED),
		[CS_H2] = B(CS_CLOSED),
		[CS_CLOSED] = 0,
	};

	enum conn_state from = c->state;

	assert(legal[from] & B(to));
	c->state = to;
	switch (to) {
	case CS_PROXY:
		/* The header timeout runs from accept, as nginx's does. */
		tlist_add(&worker.t_header, &c->timer);
		break;
	case CS_IDLE:
		tlist_add(worker.phase == WP_DRAINING ? &worker.t_grace :
		    &worker.t_idle, &c->timer);
		break;
	case CS_HEAD:
		/* After a PROXY header the same header timeout runs on. */
		if (from != CS_PROXY)
			tlist_add(&worker.t_header, &c->timer);
		break;
	case CS_LINGER:
		tlist_add(&worker.t_linger, &c->timer);
		break;
	case CS_ACTIVE:
		/* The body timeout: idle_timeout between two reads of a
		 * body (nginx's client_body_timeout), so a trickle cannot
		 * hold a request, its upstream call and its memory. */
		tlist_add(&worker.t_send, &c->timer);
		break;
	default:
		tnode_del(&c->timer);
		break;
	}
}

void
conn_start_reading(struct conn *c)
{
	if (!c->reading && event_add(&c->ev_read, NULL) == 0)
		c->reading = true;
	/* Bytes OpenSSL decrypted already: epoll will not tell. */
	if (c->ssl != NULL && c->tls_ready && tls_pending(c->ssl))
		event_active(&c->ev_read, EV_READ, 0);
}

void
conn_stop_reading(struct conn *c)
{
	if (c->reading && event_del(&c->ev_read) == 0)
		c->reading = false;
}

/* -- socket I/O, plain or TLS ------------------------------------------ */

/* Whether a close ends the exchange cleanly (close_notify is then due):
 * not a cut response, a timeout mid-request or an error. */
static bool
conn_clean_end(const struct conn *c)
{
	static const char *const clean[] = { "done", "client closed",
	    "idle timeout", "lingering close done", "worker exiting",
	    "upstream closed", "tunnel timeout", "drain timeout", NULL };
	size_t i;

	if (c->close_why == NULL)
		return true;
	for (i = 0; clean[i] != NULL; i++)
		if (strcmp(c->close_why, clean[i]) == 0)
			return true;
	return false;
}

/*
 * read(2) and write(2), or their TLS versions: the same results (a count,
 * 0 at the end, -1 with errno EAGAIN to wait), so the rest of the layer
 * does not care.  OpenSSL may hold decrypted bytes epoll cannot see: the
 * read event is made active again while it does.
 */
ssize_t
conn_recv(struct conn *c, void *p, size_t n)
{
	ssize_t r;
	int want = 0;

	if (c->ssl == NULL)
		return read(c->fd, p, n);
	for (;;) {
		r = tls_read(c->ssl, p, n, &want);
		if (r > 0) {
			if (tls_pending(c->ssl))
				event_active(&c->ev_read, EV_READ, 0);
			return r;
		}
		if (r == TLS_AGAIN && want == TLS_WANT_READ &&
		    tls_prefix_done(c->ssl, c->fd))
			continue;
		break;
	}
	if (r == TLS_CLOSED)
		return 0;
	if (r == TLS_AGAIN) {
		if (want == TLS_WANT_WRITE) {
			/* conn_write_cb() retries the read. */
			c->tls_read_wants_write = true;
			if (conn_want_write(c) == -1) {
				errno = ENOMEM;
				return -1;
			}
		}
		errno = EAGAIN;
		return -1;
	}
	c->tls_broken = true;
	errno = EPROTO;
	return -1;
}

ssize_t
conn_send(struct conn *c, const void *p, size_t n)
{
	ssize_t r;
	int want = 0;

	if (c->ssl == NULL)
		return write(c->fd, p, n);
	if (!c->tls_ready) {
		errno = EAGAIN;		/* the handshake goes first */
		return -1;
	}
	r = tls_write(c->ssl, p, n, &want);
	if (r > 0)
		return r;
	if (r == TLS_AGAIN) {
		/* Wanting to read: conn_read_cb() flushes again, and the
		 * write event stays off (the socket is writable: it would
		 * spin). */
		c->tls_write_wants_read = want == TLS_WANT_READ;
		errno = EAGAIN;
		return -1;
	}
	if (r != TLS_CLOSED)
		c->tls_broken = true;
	errno = r == TLS_CLOSED ? EPIPE : EPROTO;
	return -1;
}

/* Moves the TLS handshake on; conn_process() runs once it is done. */
static void
conn_tls_handshake(struct conn *c)
{
	int want = 0, rc;

	for (;;) {
		rc = tls_handshake(c->ssl, &want);
		if (rc == TLS_AGAIN && want == TLS_WANT_READ &&
		    tls_prefix_done(c->ssl, c->fd))
			continue;
		break;
	}
	if (rc == TLS_DONE) {
		c->tls_ready = true;
		if (c->lst->cfg->http2 && tls_alpn_h2(c->ssl) &&
		    h2_start(c, NULL, 0) == -1) {
			conn_fail(c, "out of memory");
			return;
		}
		if (c->write_armed && buf_pending(&c->out) == 0) {
			event_del(c->ev_write);
			c->write_armed = false;
		}
		/* The request may be in OpenSSL's buffers or the socket. */
		event_active(&c->ev_read, EV_READ, 0);
		return;
	}
	if (rc == TLS_AGAIN) {
		if (want == TLS_WANT_WRITE) {
			if (conn_want_write(c) == -1)
				conn_fail(c, "out of memory");
		} else if (c->write_armed && buf_pending(&c->out) == 0) {
			/* Waiting to read: a writable socket must not spin. */
			event_del(c->ev_write);
			c->write_armed = false;
		}
		return;
	}
	c->tls_broken = true;
	log_debug("conn %s: TLS handshake failed", c->peer_str);
	conn_fail(c, "TLS handshake failed");
}

/* -- accept and close -------------------------------------------------- */

void
conn_accept(struct listener *lst, int fd, const struct sockaddr *sa,
    socklen_t salen)
{
	struct conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_warnx("conn: out of memory, dropping a connection");
		close(fd);
		return;
	}
	c->fd = fd;
	c->lst = lst;
	memcpy(&c->peer, sa, salen < sizeof(c->peer) ? salen :
	    sizeof(c->peer));
	proxy_proto_format(sa, c->peer_str, sizeof(c->peer_str));
	/* TLS starts once the PROXY header (if any) has come in plain. */
	if (lst->cfg->ntls > 0 && !lst->cfg->proxy_protocol &&
	    (c->ssl = tls_new(lst->cfg, fd)) == NULL) {
		log_warnx("conn: cannot start TLS; dropping a connection");
		close(fd);
		free(c);
		return;
	}
	event_assign(&c->ev_read, worker.base, fd, EV_READ | EV_PERSIST,
	    conn_read_cb, c);
	conn_start_reading(c);
	conn_set_state(c, lst->cfg->proxy_protocol ? CS_PROXY : CS_HEAD);
	TAILQ_INSERT_TAIL(&conns, c, link);
	worker.nconns++;
	metrics_connections(worker.nconns);
}

static void
conn_close_now(struct conn *c)
{
	struct request *r = c->req;

	if (c->state == CS_CLOSED)
		return;
	if (c->dirty) {
		/* Closed outside the flush pass (drain timeout): unlink. */
		struct conn **pp = &dirty_list;

		while (*pp != NULL && *pp != c)
			pp = &(*pp)->dirty_next;
		if (*pp == c)
			*pp = c->dirty_next;
		c->dirty = false;
	}
	conn_set_state(c, CS_CLOSED);
	c->closing = true;
	if (c->tun != NULL)
		tunnel_close(c->tun);
	h2_close(c);
	if (r != NULL) {
		if (r->hooks != NULL && r->hooks->abort != NULL &&
		    !r->resp_done)
			r->hooks->abort(r);
		r->hooks = NULL;
		if (!r->resp_started)
			r->status = 499;	/* nginx's "client closed" */
		request_log(r);
		request_free(r);
		c->req = NULL;
	}
	log_debug("conn %s: closed: %s", c->peer_str,
	    c->close_why ? c->close_why : "done");
	if (c->reading)
		event_del(&c->ev_read);
	if (c->ev_write != NULL)
		event_free(c->ev_write);	/* deletes it too */
	tnode_del(&c->timer);
	if (c->ssl != NULL)
		tls_close(c->ssl, c->tls_ready && !c->tls_notified &&
		    !c->tls_broken && conn_clean_end(c));
	close(c->fd);
	if (c->tun != NULL)
		tunnel_free(c->tun);
	rbuf_put(c);
	buf_free(&c->out);
	TAILQ_REMOVE(&conns, c, link);
	free(c);
	worker.nconns--;
	metrics_connections(worker.nconns);
	worker_conn_closed();
}

/*
 * Small responses leave in one write and never block, so the write
 * event is made only the first time a socket is full: 128 bytes an idle
 * connection does not carry.
 */
int
conn_want_write(struct conn *c)
{
	if (c->write_armed)
		return 0;
	if (c->ev_write == NULL && (c->ev_write = event_new(worker.base,
	    c->fd, EV_WRITE | EV_PERSIST, conn_write_cb, c)) == NULL)
		return -1;
	if (event_add(c->ev_write, NULL) == -1)
		return -1;
	c->write_armed = true;
	return 0;
}

void
conn_mark_dirty(struct conn *c)
{
	if (c->dirty || c->state == CS_CLOSED)
		return;
	c->dirty = true;
	c->dirty_next = dirty_list;
	dirty_list = c;
	/* Runs after every callback already queued in this loop pass. */
	event_active(&flush_ev, EV_TIMEOUT, 0);
}

void
conn_fail(struct conn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	c->close_why = why;
	conn_mark_dirty(c);
}

bool
conn_keepalive(const struct conn *c)
{
	return worker.phase != WP_DRAINING && !c->closing &&
	    c->req != NULL && c->req->head.keepalive && !c->req->resp_close;
}

/* -- finishing a request ----------------------------------------------- */

/* After a last response: close, lingering if the client may still talk. */
static void
conn_close_after(struct conn *c, bool client_asked)
{
	if (client_asked && c->rlen == c->body_off) {
		conn_fail(c, "done");
		return;
	}
	if (c->ssl != NULL && c->tls_ready && !c->tls_notified) {
		tls_notify(c->ssl);
		c->tls_notified = true;
	}
	shutdown(c->fd, SHUT_WR);
	conn_set_state(c, CS_LINGER);
	conn_start_reading(c);
}

/*
 * TCP_NODELAY, set only once a connection may send a small write right
 * after another: when it is kept alive, or when a response streams in
 * pieces.  A response that leaves in one write never needs it, so a
 * connection per request saves the syscall (nginx's tcp_nodelay rule).
 */
static void
conn_nodelay(struct conn *c)
{
	int one = 1;

	if (c->nodelay)
		return;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->nodelay = true;
}

/* The response is written and its request complete: next one, or close. */
static void
conn_finish(struct conn *c)
{
	struct request *r = c->req;
	/* Only a parsed request can ask to close; after a refusal the
	 * client may still be sending, so the close lingers. */
	bool keep, client_asked = !r->rejected && !r->head.keepalive;
	size_t next;

	/*
	 * Keep what the response promised: a drain that began after its
	 * head went out must not close a connection the client was told it
	 * could reuse (it would race the client's next request).  In a
	 * drain the idle connection closes after a short grace instead, and
	 * the next response on it says "Connection: close".
	 */
	keep = !r->resp_close && !c->closing && (r->body_done ||
	    request_discard_body(r));
	r->hooks = NULL;
	request_log(r);
	request_free(r);
	c->req = NULL;
	c->nrequests++;
	/* Not while streaming: freeing and regrowing per write would churn
	 * malloc (and mmap, at these sizes). */
	buf_trim(&c->out, 64 * 1024);
	if (!keep) {
		conn_close_after(c, client_asked);
		return;
	}
	/* Kept alive: the next response may follow with no read between. */
	conn_nodelay(c);
	next = c->body_off;
	if (next < c->rlen)
		memmove(c->rbuf, c->rbuf + next, c->rlen - next);
	c->rlen -= next;
	c->scan = c->head_len = c->body_off = 0;
	if (c->rlen == 0) {
		/* Idle connections hold no buffers at all. */
		rbuf_put(c);
		if (buf_pending(&c->out) == 0)
			buf_free(&c->out);
		conn_set_state(c, CS_IDLE);
	} else
		conn_set_state(c, CS_HEAD);
	conn_start_reading(c);
}

/* Output written (or blocked): finish, or let a paused producer go on. */
static void
conn_flush(struct conn *c)
{
	struct request *r;
	int rc;

	if (c->state == CS_TUNNEL) {
		if (conn_write_out(c) == 0) {
			buf_free(&c->out);	/* idle tunnels hold none */
			tunnel_client_drained(c->tun);
		}
		return;
	}
	if (c->state == CS_H2) {
		h2_flush(c);
		return;
	}
	if (c->req != NULL && !c->req->resp_done)
		conn_nodelay(c);	/* streaming: pieces follow */
	if ((rc = conn_write_out(c)) == -1)
		return;
	if ((r = c->req) == NULL)
		return;
	if (rc == 0 && r->resp_done && c->state == CS_ACTIVE) {
		conn_finish(c);
		conn_process(c);
		return;
	}
	if (r->resp_paused && buf_pending(&c->out) < OUT_LOW) {
		r->resp_paused = false;
		if (r->hooks != NULL && r->hooks->writable != NULL)
			r->hooks->writable(r);
	}
}

/* One best-effort write before a close; the socket never blocks us. */
static void
conn_send_remains(struct conn *c)
{
	ssize_t n = conn_send(c, buf_head(&c->out), buf_pending(&c->out));

	if (n > 0)
		buf_consume(&c->out, (size_t)n);
}

static void
conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *list = dirty_list, *c;

	loopwatch_begin(LW_CLIENT_FLUSH);
	dirty_list = NULL;
	while ((c = list) != NULL) {
		list = c->dirty_next;
		c->dirty = false;
		if (c->closing) {
			/* A cut response still gets what was ready of it. */
			if (buf_pending(&c->out) > 0)
				conn_send_remains(c);
			conn_close_now(c);
		}
		else
			conn_flush(c);
	}
	loopwatch_end();
}

/* -- reading ----------------------------------------------------------- */

/* A request line and headers are complete (or hopeless). */
static void
conn_reject(struct conn *c, int status, const char *why)
{
	struct request *r = c->req ? c->req : request_new(c);

	if (r == NULL) {
		conn_fail(c, "out of memory");
		return;
	}
	log_debug("conn %s: %d: %s", c->peer_str, status, why);
	c->head_len = c->body_off = c->rlen;
	r->resp_close = true;
	r->rejected = true;
	conn_set_state(c, CS_ACTIVE);
	req_error(r, status, why, NULL);
}

static void
conn_skip_blank_lines(struct conn *c)
{
	size_t n = 0;

	while (n < c->rlen && (c->rbuf[n] == '\r' || c->rbuf[n] == '\n'))
		n++;
	if (n == 0)
		return;
	memmove(c->rbuf, c->rbuf + n, c->rlen - n);
	c->rlen -= n;
	c->scan = 0;
}

/*
 * Routing and the upstream must see the same path: normalise it in place
 * (the head is ours), or refuse the request.
 */
static bool
conn_normalize_path(struct conn *c, struct request *r)
{
	struct http_head *h = &r->head;
	const char *why;
	size_t n;

	if (h->path[0] != '/' || (h->path_len == 1))
		return true;		/* "*", or "/" (maybe a literal) */
	if ((n = path_normalize((char *)h->path, h->path_len, &why)) == 0) {
		conn_reject(c, 400, why);
		return false;
	}
	h->path_len = n;
	return true;
}

static bool
conn_head(struct conn *c)
{
	const struct config *cfg = worker.cfg;
	struct request *r;
	const char *why;
	size_t end;
	int status;

	conn_skip_blank_lines(c);
	if (c->ssl == NULL && c->nrequests == 0 && c->rlen > 0 &&
	    c->rbuf[0] == 'P') {
		switch (h2_preface(c->rbuf, c->rlen)) {
		case 0:
			return false;		/* a preface, coming */
		case 1:
			if (!c->lst->cfg->http2) {
				conn_reject(c, 400, "HTTP/2 is off on this "
				    "listener (http2: false)");
				return true;
			}
			/* h2c with prior knowledge (RFC 9113 3.3). */
			if (h2_start(c, c->rbuf, c->rlen) == -1)
				conn_fail(c, "out of memory");
			rbuf_put(c);
			return false;
		}
	}
	end = http_head_end(c->rbuf, c->rlen, &c->scan);
	if (end == 0) {
		status = http_head_too_big(c->rbuf, c->rlen,
		    cfg->server.max_header_size);
		if (status == 0)
			return false;
		conn_reject(c, status, status == 414 ? "request line too long" :
		    "request headers too large");
		return true;
	}
	/* A whole head can still have a request line over the limit. */
	if (end > HTTP_MAX_REQUEST_LINE && memchr(c->rbuf, '\n',
	    HTTP_MAX_REQUEST_LINE) == NULL) {
		conn_reject(c, 414, "request line too long");
		return true;
	}
	if ((r = request_new(c)) == NULL) {
		conn_fail(c, "out of memory");
		return false;
	}
	if (end > cfg->server.max_header_size) {
		conn_reject(c, 431, "request headers too large");
		return true;
	}
	if (http_parse_head(c->rbuf, end, &r->head, &status, &why) !=
	    HTTP_OK) {
		conn_reject(c, status, why);
		return true;
	}
	c->head_len = c->body_off = end;
	request_identify(r);
	if (!conn_normalize_path(c, r))
		return true;
	if (r->head.chunked) {
		r->body_chunked = true;
		http_chunked_init(&r->chunk);
	} else if (r->head.content_length > 0)
		r->body_left = r->head.content_length;
	else
		r->body_done = true;
	if (cfg->server.max_body_size > 0 && r->head.content_length >
	    (int64_t)cfg->server.max_body_size) {
		conn_reject(c, 413, "request body too large");
		return true;
	}
	/* A body bigger than the room left: read it in full-size pieces. */
	if ((r->body_chunked || r->head.content_length >
	    (int64_t)(c->rcap - c->rlen)) && rbuf_grow(c) == -1) {
		conn_fail(c, "out of memory");
		return false;
	}
	conn_set_state(c, CS_ACTIVE);
	worker.app->handle(r);
	return true;
}

static bool
conn_proxy_header(struct conn *c)
{
	struct sockaddr_storage ss;
	size_t used;
	int rc;

	memcpy(&ss, &c->peer, sizeof(c->peer));	/* kept for LOCAL */
	rc = proxy_proto_parse(c->rbuf, c->rlen, &ss, &used);
	if (rc == 0)
		return false;
	if (rc < 0) {
		log_info("conn %s: bad PROXY protocol header", c->peer_str);
		conn_fail(c, "bad PROXY header");
		return false;
	}
	memcpy(&c->peer, &ss, sizeof(c->peer));
	proxy_proto_format(&c->peer.sa, c->peer_str, sizeof(c->peer_str));
	memmove(c->rbuf, c->rbuf + used, c->rlen - used);
	c->rlen -= used;
	conn_set_state(c, CS_HEAD);	/* the header timeout runs on */
	if (c->lst->cfg->ntls > 0)
		return conn_tls_after_proxy(c);
	return true;
}

static void
conn_process(struct conn *c)
{
	if (c->in_process)
		return;
	c->in_process = true;
	while (!c->closing) {
		if (c->state == CS_PROXY) {
			if (!conn_proxy_header(c))
				break;
		} else if (c->state == CS_IDLE) {
			if (c->rlen == 0)
				break;
			conn_set_state(c, CS_HEAD);
		} else if (c->state == CS_HEAD) {
			if (!conn_head(c))
				break;
		} else if (c->state == CS_ACTIVE && c->req->resp_done &&
		    buf_pending(&c->out) == 0) {
			conn_finish(c);
		} else
			break;
	}
	c->in_process = false;
}

/* Moves unread body bytes down over consumed ones to make room. */
static void
conn_compact_body(struct conn *c)
{
	size_t unread = c->rlen - c->body_off;

	if (c->body_off == c->head_len)
		return;
	memmove(c->rbuf + c->head_len, c->rbuf + c->body_off, unread);
	c->rlen = c->head_len + unread;
	c->body_off = c->head_len;
}

/* TLS after a PROXY header: OpenSSL takes what followed the header. */
static bool
conn_tls_after_proxy(struct conn *c)
{
	c->ssl = tls_new_prefixed(c->lst->cfg, c->fd, c->rbuf, c->rlen);
	c->rlen = 0;
	if (c->ssl == NULL) {
		conn_fail(c, "cannot start TLS");
		return false;
	}
	conn_tls_handshake(c);
	return false;		/* the request comes after the handshake */
}

static void
conn_linger_read(struct conn *c)
{
	char sink[4096];
	ssize_t n;

	n = read(c->fd, sink, sizeof(sink));
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		conn_fail(c, "lingering close done");
}

/* What arrived on a connection: to the body's reader, or to the parser. */
static void
conn_input(struct conn *c, size_t n)
{
	struct request *r = c->req;

	c->rlen += n;
	if (c->state == CS_ACTIVE) {
		if (!r->body_done && r->hooks != NULL &&
		    r->hooks->body_ready != NULL)
			r->hooks->body_ready(r);
		return;
	}
	conn_process(c);
}

/*
 * The first read of a request, with no buffer held: into the worker's
 * scratch buffer, then copied into one of the right size.  One read takes
 * a head and its body (a small buffer would split a 16 KiB POST into two
 * reads and two upstream writes), yet an idle or small request pins only
 * 4 KiB.
 */
static void
conn_read_fresh(struct conn *c)
{
	static char *scratch;
	ssize_t n;

	if (scratch == NULL && (scratch = malloc(worker.rbuf_size)) == NULL) {
		conn_fail(c, "out of memory");
		return;
	}
	n = conn_recv(c, scratch, worker.rbuf_size);
	if (n > 0) {
		if (!rbuf_get(c, (size_t)n)) {
			conn_fail(c, "out of memory");
			return;
		}
		memcpy(c->rbuf, scratch, (size_t)n);
		conn_input(c, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	conn_fail(c, n == 0 ? "client closed" : "read error");
}

static void
conn_on_read(struct conn *c)
{
	size_t space;
	ssize_t n;

	if (c->closing)
		return;
	if (c->state == CS_LINGER) {
		conn_linger_read(c);
		return;
	}
	if (c->ssl != NULL && !c->tls_ready) {
		conn_tls_handshake(c);
		return;
	}
	if (c->tls_write_wants_read) {
		c->tls_write_wants_read = false;
		conn_flush(c);
		if (c->closing)
			return;
	}
	if (c->state == CS_TUNNEL) {
		tunnel_client_readable(c->tun);
		return;
	}
	if (c->state == CS_H2) {
		h2_readable(c);
		return;
	}
	if (c->rbuf == NULL) {
		conn_read_fresh(c);
		return;
	}
	if ((space = c->rcap - c->rlen) == 0 && (c->state == CS_HEAD ||
	    (c->state == CS_ACTIVE && c->req != NULL && !c->req->body_done))) {
		/* A big head, or a body: the full-size buffer. */
		if (rbuf_grow(c) == -1) {
			conn_fail(c, "out of memory");
			return;
		}
		if (c->state == CS_ACTIVE && c->rlen == c->rcap)
			conn_compact_body(c);
		space = c->rcap - c->rlen;
	}
	if (space == 0) {
		/* Backpressure: the gateway has not taken what we hold. */
		conn_stop_reading(c);
		return;
	}
	n = conn_recv(c, c->rbuf + c->rlen, space);
	if (n > 0) {
		if (c->state == CS_ACTIVE && c->timer.list == &worker.t_send)
			tlist_add(&worker.t_send, &c->timer);	/* progress */
		conn_input(c, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		if (c->rlen == 0 && c->state == CS_IDLE)
			rbuf_put(c);
		return;
	}
	conn_fail(c, n == 0 ? "client closed" : "read error");
}

static void
conn_on_write(struct conn *c)
{
	if (c->closing)
		return;
	if (c->ssl != NULL && !c->tls_ready) {
		conn_tls_handshake(c);
		return;
	}
	conn_flush(c);
	if (c->tls_read_wants_write && !c->closing) {
		c->tls_read_wants_write = false;
		conn_on_read(c);
	}
}

/* What the loop is doing for this connection, for loopwatch. */
static enum lw_kind
conn_lw_kind(const struct conn *c, bool write)
{
	if (c->ssl != NULL && !c->tls_ready)
		return LW_CLIENT_TLS;
	switch (c->state) {
	case CS_TUNNEL:
		return LW_TUNNEL;
	case CS_H2:
		return write ? LW_CLIENT_H2_WRITE : LW_CLIENT_H2_READ;
	default:
		return write ? LW_CLIENT_HTTP1_WRITE : LW_CLIENT_HTTP1_READ;
	}
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(conn_lw_kind(arg, false));
	conn_on_read(arg);
	loopwatch_end();
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(conn_lw_kind(arg, true));
	conn_on_write(arg);
	loopwatch_end();
}

/* -- timeouts and drain ------------------------------------------------ */

/*
 * The client stopped sending its body for idle_timeout.  If nothing of
 * the answer has gone out, the gateway lets go (its upstream try is cut)
 * and the client gets 408, as from nginx's client_body_timeout; else the
 * connection just closes.
 */
static void
conn_body_timeout(struct conn *c)
{
	struct request *r = c->req;

	if (r->resp_started) {
		conn_fail(c, "body timeout");
		return;
	}
	if (r->hooks != NULL && r->hooks->abort != NULL)
		r->hooks->abort(r);
	r->hooks = NULL;
	r->body_done = true;		/* nothing more is read */
	r->resp_close = true;
	req_error(r, 408, "request body not received in time", NULL);
}

static void
conn_timeout(struct tnode *n)
{
	struct conn *c = (struct conn *)((char *)n -
	    offsetof(struct conn, timer));

	switch (c->state) {
	case CS_PROXY:
	case CS_HEAD:
		if (c->rlen > 0 && c->state == CS_HEAD) {
			conn_reject(c, 408, "request head not received in "
			    "time");
			return;
		}
		conn_fail(c, "header timeout");
		break;
	case CS_IDLE:
		conn_fail(c, "idle timeout");
		break;
	case CS_H2:
		h2_timeout(c);
		break;
	case CS_ACTIVE:
		if (buf_pending(&c->out) > 0) {
			conn_fail(c, "send timeout");	/* the client reads not */
			break;
		}
		if (c->req == NULL || c->req->body_done)
			break;		/* waiting on the upstream: its timeout */
		if (c->rlen > c->body_off) {
			/* Body bytes wait for us, not for the client. */
			tlist_add(&worker.t_send, &c->timer);
			break;
		}
		log_info("conn %s: request body not received in time; closing",
		    c->peer_str);
		conn_body_timeout(c);
		break;
	default:
		conn_fail(c, "linger timeout");
		break;
	}
}

void
conn_init_worker(void)
{
	const struct server_sect *s = &worker.cfg->server;
	uint64_t grace = s->idle_timeout_ms < DRAIN_GRACE_MS ?
	    s->idle_timeout_ms : DRAIN_GRACE_MS;

	event_assign(&flush_ev, worker.base, -1, 0, conn_flush_cb, NULL);
	tlist_init(&worker.t_header, worker.base, s->header_timeout_ms,
	    conn_timeout);
	tlist_init(&worker.t_idle, worker.base, s->idle_timeout_ms,
	    conn_timeout);
	tlist_init(&worker.t_send, worker.base, s->idle_timeout_ms,
	    conn_timeout);
	tlist_init(&worker.t_linger, worker.base, LINGER_MS, conn_timeout);
	tlist_init(&worker.t_grace, worker.base, grace, conn_timeout);
	/* A tunnel has a timer of its own (its client may be a stream). */
	tlist_init(&worker.t_tunnel, worker.base, s->tunnel_timeout_ms,
	    tunnel_fire);
	tlist_init(&worker.t_tunnel_bye, worker.base, TUNNEL_BYE_MS,
	    tunnel_fire);
}

void
conn_drain_all(void)
{
	struct conn *c;

	TAILQ_FOREACH(c, &conns, link)
		if (c->state == CS_IDLE && !c->closing)
			tlist_add(&worker.t_grace, &c->timer);
		else if (c->state == CS_H2 && !c->closing)
			h2_drain(c);	/* GOAWAY; streams finish */
}

void
conn_close_all(const char *why)
{
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		c->close_why = why;
		conn_close_now(c);
	}
}

void
conn_close_all_but_tunnels(const char *why)
{
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		if ((c->state == CS_TUNNEL || h2_has_tunnels(c)) &&
		    !c->closing)
			continue;
		c->close_why = why;
		conn_close_now(c);
	}
}

int
conn_to_tunnel(struct conn *c, struct buf *early, char **head)
{
	char *h;

	if (c->rlen > c->body_off && buf_append(early, c->rbuf + c->body_off,
	    c->rlen - c->body_off) == -1)
		return -1;
	if ((h = malloc(c->head_len > 0 ? c->head_len : 1)) == NULL)
		return -1;
	memcpy(h, c->rbuf, c->head_len);
	request_rebase(c->req, c->rbuf, c->head_len, h);
	*head = h;
	rbuf_put(c);
	conn_set_state(c, CS_TUNNEL);
	/* Messages are small and each is a write: no Nagle delay. */
	conn_nodelay(c);
	return 0;
}

void
conn_to_h2(struct conn *c)
{
	conn_set_state(c, CS_H2);
	/* The rest of this read (the first streams, often in the same
	 * packet as the preface) is HTTP/2's. */
	loopwatch_relabel(LW_CLIENT_H2_READ);
	/* Streams answer in pieces: no Nagle delay between them. */
	conn_nodelay(c);
}
