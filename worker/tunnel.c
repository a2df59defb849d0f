/*
 * Tunnels (tunnel.h): after an upstream answered 101, the client's
 * connection and the upstream's are joined byte for byte until one side
 * closes, the tunnel has been idle both ways for tunnel_timeout, or a
 * drain runs out of time.
 *
 * Each direction reads into the worker's scratch buffer and writes at
 * once to the other socket; only what the other side does not take is
 * kept (the client's in its connection's output queue, the upstream's in
 * `to_up`), and while anything is kept the reading side waits.  So a slow
 * reader pauses the other end (the kernel's socket buffers are the
 * window), an idle tunnel holds no buffer at all, and a message costs one
 * read and one write.  Nothing is parsed but WebSocket frame headers,
 * counted past so that a close frame of ours (a drain, an idle cut) never
 * lands in the middle of someone else's frame.
 *
 * The request stays with its connection for the tunnel's life: its log
 * line is written when the tunnel closes, with bytes each way and the
 * duration.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "gateway/metrics/metrics.h"
#include "lib/log.h"
#include "lib/websocket.h"
#include "worker/conn.h"
#include "worker/loopwatch.h"
#include "worker/tls.h"
#include "worker/tunnel.h"
#include "worker/worker.h"

#define SCRATCH_SIZE	(64 * 1024)

struct tunnel {
	const struct tunnel_side *side;	/* the client's: a connection or
					 * an HTTP/2 stream */
	void		*sarg;		/* the side's (struct conn, stream) */
	struct request	*r;		/* logged when the tunnel closes */
	struct tnode	 timer;		/* tunnel_timeout, then the goodbye */
	TAILQ_ENTRY(tunnel) link;	/* every tunnel of the worker */
	int		 fd;		/* the upstream's */
	SSL		*ssl;		/* TLS on it (https servers) */
	bool		 read_wants_write;	/* TLS turned a wait */
	bool		 write_wants_read;	/* around */
	struct event	 rev;		/* persistent */
	struct event	 wev;		/* only while to_up holds bytes */
	bool		 reading;	/* rev is added */
	bool		 writing;	/* wev is added */
	bool		 up_eof;	/* the upstream closed: flush, end */
	bool		 client_eof;	/* the client closed: flush, end */
	bool		 bye;		/* saying goodbye: nothing relayed */
	bool		 finishing;	/* ... but the upstream's frame under
					 * way, before our close frame */
	bool		 websocket;
	enum m_tunnel_end end;		/* why it ends (the first reason) */
	bool		 ended;
	struct buf	 to_up;		/* client bytes the upstream has not
					 * taken */
	struct ws_track	 down;		/* upstream -> client */
	struct ws_track	 up;		/* client -> upstream */
	char		*head;		/* the request head, kept for the log */
};

static char	*scratch;
static int	 ntunnels;
static TAILQ_HEAD(, tunnel) tunnels = TAILQ_HEAD_INITIALIZER(tunnels);

static void	tunnel_up_read_cb(evutil_socket_t, short, void *);
static void	tunnel_bye_finish(struct tunnel *, size_t);
static void	tunnel_up_write_cb(evutil_socket_t, short, void *);

static const char *const end_why[] = {
	[MT_CLIENT_CLOSED] = "client closed",
	[MT_UPSTREAM_CLOSED] = "upstream closed",
	[MT_IDLE_TIMEOUT] = "tunnel timeout",
	[MT_DRAINED] = "drain timeout",
	[MT_ERROR] = "tunnel error",
};

/* -- ending ------------------------------------------------------------- */

/* Ends the tunnel for why (the first reason counts): the connection
 * closes in the flush pass, and tunnel_close() follows. */
static void
tunnel_end(struct tunnel *t, enum m_tunnel_end why)
{
	if (!t->ended) {
		t->ended = true;
		t->end = why;
	}
	t->side->end(t, why != MT_ERROR, end_why[why]);
}

static void
tunnel_up_reading(struct tunnel *t, bool on)
{
	if (on && !t->reading && event_add(&t->rev, NULL) == 0) {
		t->reading = true;
		/* Bytes OpenSSL decrypted already: epoll will not tell. */
		if (t->ssl != NULL && tls_pending(t->ssl))
			event_active(&t->rev, EV_READ, 0);
	} else if (!on && t->reading && event_del(&t->rev) == 0)
		t->reading = false;
}

static void
tunnel_up_writing(struct tunnel *t, bool on)
{
	if (on && !t->writing && event_add(&t->wev, NULL) == 0)
		t->writing = true;
	else if (!on && t->writing && event_del(&t->wev) == 0)
		t->writing = false;
}

/*
 * read(2) and write(2) on the upstream's socket, through TLS for an
 * https server: a count, 0 at the end, or -1 with errno (EAGAIN: the
 * events say when to try again).
 */
static ssize_t
tunnel_up_recv(struct tunnel *t, void *p, size_t n)
{
	int want = 0;
	ssize_t r;

	if (t->ssl == NULL)
		return read(t->fd, p, n);
	r = tls_read(t->ssl, p, n, &want);
	if (r > 0) {
		if (tls_pending(t->ssl))
			event_active(&t->rev, EV_READ, 0);
		return r;
	}
	if (r == TLS_CLOSED)
		return 0;
	if (r == TLS_AGAIN) {
		if (want == TLS_WANT_WRITE) {
			t->read_wants_write = true;
			tunnel_up_writing(t, true);
		}
		errno = EAGAIN;
		return -1;
	}
	errno = EPROTO;
	return -1;
}

static ssize_t
tunnel_up_send(struct tunnel *t, const void *p, size_t n)
{
	int want = 0;
	ssize_t r;

	if (t->ssl == NULL)
		return write(t->fd, p, n);
	r = tls_write(t->ssl, p, n, &want);
	if (r > 0)
		return r;
	if (r == TLS_AGAIN) {
		/* Wanting to read: the read callback flushes again (it is
		 * on even while the client is behind). */
		t->write_wants_read = want == TLS_WANT_READ;
		if (t->write_wants_read)
			tunnel_up_reading(t, true);
		errno = EAGAIN;
		return -1;
	}
	errno = r == TLS_CLOSED ? EPIPE : EPROTO;
	return -1;
}

/* No more from us to the upstream (after a close frame, or the
 * client's end). */
static void
tunnel_up_shut(struct tunnel *t)
{
	if (t->ssl != NULL)
		tls_notify(t->ssl);
	shutdown(t->fd, SHUT_WR);
}

/* Traffic either way: the idle clock starts again. */
static void
tunnel_active(struct tunnel *t)
{
	if (!t->bye)
		tlist_add(&worker.t_tunnel, &t->timer);
}

/* -- client -> upstream ----------------------------------------------------- */

/*
 * Writes what the upstream takes of to_up.  Returns 0 when all is out,
 * 1 when it waits for the socket, -1 when the tunnel ended.
 */
static int
tunnel_up_flush(struct tunnel *t)
{
	ssize_t n;

	while (buf_pending(&t->to_up) > 0) {
		n = tunnel_up_send(t, buf_head(&t->to_up),
		    buf_pending(&t->to_up));
		if (n > 0) {
			buf_consume(&t->to_up, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			tunnel_up_writing(t, !t->write_wants_read);
			return 1;
		}
		tunnel_end(t, MT_UPSTREAM_CLOSED);
		return -1;
	}
	if (!t->read_wants_write)
		tunnel_up_writing(t, false);
	buf_free(&t->to_up);		/* idle tunnels hold no buffer */
	return 0;
}

/* Bytes for the upstream: written now, the rest kept (and the client
 * paused) until the upstream takes them.  -1 when the tunnel ended. */
static int
tunnel_to_upstream(struct tunnel *t, const char *p, size_t n)
{
	ssize_t w = 0;

	if (buf_pending(&t->to_up) == 0) {
		do
			w = tunnel_up_send(t, p, n);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN) {
			tunnel_end(t, MT_UPSTREAM_CLOSED);
			return -1;
		}
		if (w < 0)
			w = 0;
		if ((size_t)w == n)
			return 0;
	}
	if (buf_append(&t->to_up, p + w, n - (size_t)w) == -1) {
		tunnel_end(t, MT_ERROR);
		return -1;
	}
	t->side->reading(t, false);
	tunnel_up_writing(t, !t->write_wants_read);
	return 0;
}

void
tunnel_client_readable(struct tunnel *t)
{
	ssize_t n;

	if (buf_pending(&t->to_up) > 0) {
		t->side->reading(t, false);	/* the upstream is behind */
		return;
	}
	n = t->side->recv(t, scratch, SCRATCH_SIZE);
	if (n > 0) {
		if (t->bye) {
			/* Dropped, until its answer to our close frame. */
			ws_track_feed(&t->up, (uint8_t *)scratch, (size_t)n);
			if (t->up.closed && !t->finishing)
				tunnel_end(t, t->end);
			return;
		}
		t->r->tunnel_bytes_in += (uint64_t)n;
		if (t->websocket)
			ws_track_feed(&t->up, (uint8_t *)scratch, (size_t)n);
		tunnel_active(t);
		tunnel_to_upstream(t, scratch, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (t->bye) {
		tunnel_end(t, t->end);
		return;
	}
	/* The client is done: what it sent before goes out first. */
	t->client_eof = true;
	t->side->reading(t, false);
	if (!t->ended) {
		t->ended = true;
		t->end = n == 0 ? MT_CLIENT_CLOSED : MT_ERROR;
	}
	if (buf_pending(&t->to_up) == 0)
		tunnel_end(t, t->end);
}

static void
tunnel_up_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tunnel *t = arg;

	if (t->read_wants_write) {
		t->read_wants_write = false;
		if (buf_pending(&t->to_up) == 0)
			tunnel_up_writing(t, false);
		tunnel_up_read_cb(fd, EV_READ, t);
		if (t->side->gone(t) || buf_pending(&t->to_up) == 0)
			return;
	}
	if (tunnel_up_flush(t) != 0)
		return;
	if (t->client_eof) {
		tunnel_end(t, t->end);
		return;
	}
	t->side->reading(t, true);
}

/* -- upstream -> client ----------------------------------------------------- */

/*
 * Bytes for the client: sent now, the rest queued on its connection (and
 * the upstream paused) until it drains.  -1 when the connection failed.
 */
static int
tunnel_to_client(struct tunnel *t, const char *p, size_t n)
{
	ssize_t w = 0;

	if (t->side->queued(t) == 0) {
		do
			w = t->side->send(t, p, n);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN) {
			if (!t->ended) {
				t->ended = true;
				t->end = MT_CLIENT_CLOSED;
			}
			t->side->end(t, false, "write error");
			return -1;
		}
		if (w < 0)
			w = 0;
		if ((size_t)w == n)
			return 0;
	}
	if (t->side->queue(t, p + w, n - (size_t)w) == -1) {
		tunnel_end(t, MT_ERROR);
		return -1;
	}
	tunnel_up_reading(t, false);
	/* The rest may go at once (TLS writes a record at a time, so a
	 * short write is no sign of a full socket): then reading goes on;
	 * else tunnel_client_drained() says when. */
	switch (t->side->flush(t)) {
	case -1:
		return -1;
	case 0:
		tunnel_client_drained(t);
		return 0;
	}
	return 0;
}

static void
tunnel_up_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tunnel *t = arg;
	ssize_t n;

	if (t->side->gone(t))
		return;
	if (t->write_wants_read) {
		t->write_wants_read = false;
		tunnel_up_write_cb(fd, EV_WRITE, t);
		if (t->side->gone(t))
			return;
	}
	if (t->side->queued(t) > 0) {
		tunnel_up_reading(t, false);	/* the client is behind */
		return;
	}
	n = tunnel_up_recv(t, scratch, SCRATCH_SIZE);
	if (n > 0 && t->finishing) {
		tunnel_bye_finish(t, (size_t)n);
		return;
	}
	if (n > 0) {
		if (t->bye)
			return;		/* after our close frame: dropped */
		t->r->resp_bytes += (uint64_t)n;
		if (t->websocket)
			ws_track_feed(&t->down, (uint8_t *)scratch, (size_t)n);
		tunnel_active(t);
		tunnel_to_client(t, scratch, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	tunnel_up_reading(t, false);
	if (t->bye) {
		if (t->finishing)
			tunnel_end(t, t->end);	/* no frame end now */
		return;
	}
	t->up_eof = true;
	if (!t->ended) {
		t->ended = true;
		t->end = n == 0 ? MT_UPSTREAM_CLOSED : MT_ERROR;
	}
	if (t->side->queued(t) == 0)
		tunnel_end(t, t->end);
}

/* The loop's entries (the two above call each other directly). */
static void
tunnel_up_read_ev(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_TUNNEL);
	tunnel_up_read_cb(fd, what, arg);
	loopwatch_end();
}

static void
tunnel_up_write_ev(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_TUNNEL);
	tunnel_up_write_cb(fd, what, arg);
	loopwatch_end();
}

void
tunnel_client_drained(struct tunnel *t)
{
	if (t->finishing) {
		tunnel_up_reading(t, true);
		return;
	}
	if (t->bye) {
		t->side->shut(t);	/* our close frame is out: no more */
		return;
	}
	if (t->up_eof) {
		tunnel_end(t, t->end);
		return;
	}
	tunnel_up_reading(t, true);
}

/* -- goodbyes ------------------------------------------------------------- */

/* Our close frame to the client, then up to TUNNEL_BYE_MS for its
 * answer. */
static void
tunnel_bye_client(struct tunnel *t)
{
	uint8_t frame[WS_CLOSE_MAX];
	size_t n;

	tunnel_up_reading(t, false);
	n = ws_close_frame(frame, WS_GOING_AWAY, NULL);
	if (t->side->queue(t, (char *)frame, n) == -1) {
		tunnel_end(t, MT_ERROR);
		return;
	}
	t->side->reading(t, true);
	if (t->side->flush(t) == 0)
		tunnel_client_drained(t);
}

/* n bytes came from the upstream while its last frame finishes: that
 * frame's rest goes to the client, then our close frame. */
static void
tunnel_bye_finish(struct tunnel *t, size_t n)
{
	size_t k = ws_track_to_boundary(&t->down, (uint8_t *)scratch, n);

	t->r->resp_bytes += k;
	if (k > 0 && tunnel_to_client(t, scratch, k) == -1)
		return;
	if (!ws_track_boundary(&t->down))
		return;
	t->finishing = false;
	tunnel_bye_client(t);
}

/*
 * Closes the tunnel as a server going away.  A WebSocket endpoint gets
 * a close frame 1001 between two frames of its stream: the upstream's
 * frame under way (if any) is let through first, then ours, then the
 * client has up to TUNNEL_BYE_MS to answer.  The upstream gets a masked
 * close frame if its stream stands between frames.  None is sent where
 * a close went that way already; other protocols just close.
 */
static void
tunnel_bye(struct tunnel *t, enum m_tunnel_end why)
{
	uint8_t frame[WS_CLOSE_MAX], mask[4];
	size_t n;

	if (!t->ended) {
		t->ended = true;
		t->end = why;
	}
	if (!t->websocket || t->side->gone(t) || t->down.closed ||
	    t->down.broken) {
		tunnel_end(t, why);
		return;
	}
	t->bye = true;
	tlist_add(&worker.t_tunnel_bye, &t->timer);
	if (ws_track_boundary(&t->up) && !t->up.closed &&
	    buf_pending(&t->to_up) == 0) {
		/* A client's frames are masked (RFC 6455 section 5.3). */
		if (RAND_bytes(mask, sizeof(mask)) != 1)
			memset(mask, 0x5a, sizeof(mask));
		n = ws_close_frame(frame, WS_GOING_AWAY, mask);
		(void)!tunnel_up_send(t, frame, n);	/* best effort */
	}
	tunnel_up_writing(t, false);
	tunnel_up_shut(t);
	if (!ws_track_boundary(&t->down)) {
		t->finishing = true;
		tunnel_up_reading(t, t->side->queued(t) == 0);
		return;
	}
	tunnel_bye_client(t);
}

void
tunnel_timeout(struct tunnel *t)
{
	if (t->bye) {
		tunnel_end(t, t->end);	/* no answer in time */
		return;
	}
	log_debug("tunnel %s: idle for tunnel_timeout; closing",
	    t->r->client);
	tunnel_bye(t, MT_IDLE_TIMEOUT);
}

int
tunnel_bye_all(void)
{
	struct tunnel *t, *next;
	int n = 0;

	for (t = TAILQ_FIRST(&tunnels); t != NULL; t = next) {
		next = TAILQ_NEXT(t, link);
		if (t->side->gone(t))
			continue;
		tunnel_bye(t, MT_DRAINED);
		if (!t->side->gone(t))
			n++;
	}
	return n;
}

/* A tunnel's timer: idle both ways, or a goodbye that took too long. */
void
tunnel_fire(struct tnode *node)
{
	struct tunnel *t = (struct tunnel *)((char *)node -
	    offsetof(struct tunnel, timer));

	tunnel_timeout(t);
}

/* -- opening and closing ---------------------------------------------------- */

static void
tunnel_count(int delta)
{
	ntunnels += delta;
	metrics_tunnels(ntunnels);
}

struct tunnel *
tunnel_new(const struct tunnel_side *side, void *sarg, struct request *r,
    const struct req_upgrade *u)
{
	struct tunnel *t;

	if ((scratch == NULL && (scratch = malloc(SCRATCH_SIZE)) == NULL) ||
	    (t = calloc(1, sizeof(*t))) == NULL) {
		if (u->ssl != NULL)
			tls_close(u->ssl, false);
		close(u->fd);
		return NULL;
	}
	t->side = side;
	t->sarg = sarg;
	t->r = r;
	t->fd = u->fd;
	t->ssl = u->ssl;
	t->websocket = u->websocket;
	event_assign(&t->rev, worker.base, t->fd, EV_READ | EV_PERSIST,
	    tunnel_up_read_ev, t);
	event_assign(&t->wev, worker.base, t->fd, EV_WRITE | EV_PERSIST,
	    tunnel_up_write_ev, t);
	r->resp_started = true;
	r->tunnel = true;
	/* From here it counts as a tunnel (tunnel_count), not as a request
	 * in flight; request_free() knows. */
	metrics_in_flight(-1);
	snprintf(r->tunnel_protocol, sizeof(r->tunnel_protocol), "%.*s",
	    (int)u->protocol_len, u->protocol);
	TAILQ_INSERT_TAIL(&tunnels, t, link);
	tlist_add(&worker.t_tunnel, &t->timer);
	tunnel_count(1);
	return t;
}

void *
tunnel_side_arg(const struct tunnel *t)
{
	return t->sarg;
}

struct buf *
tunnel_to_up(struct tunnel *t)
{
	return &t->to_up;
}

int
tunnel_start(struct tunnel *t, const char *early, size_t early_len)
{
	if (t->websocket) {
		ws_track_feed(&t->up, (uint8_t *)buf_head(&t->to_up),
		    buf_pending(&t->to_up));
		ws_track_feed(&t->down, (const uint8_t *)early, early_len);
	}
	t->r->resp_bytes += early_len;
	if (early_len > 0 && t->side->queue(t, early, early_len) == -1) {
		tunnel_end(t, MT_ERROR);
		return -1;
	}
	if (tunnel_up_flush(t) == -1)
		return -1;
	t->side->reading(t, buf_pending(&t->to_up) == 0);
	tunnel_up_reading(t, true);
	if (t->side->flush(t) == -1)
		return -1;
	return 0;
}

/* -- the client's side: an HTTP/1.1 connection --------------------------- */

static ssize_t
cs_recv(struct tunnel *t, void *p, size_t n)
{
	return conn_recv(t->sarg, p, n);
}

static ssize_t
cs_send(struct tunnel *t, const void *p, size_t n)
{
	return conn_send(t->sarg, p, n);
}

static int
cs_queue(struct tunnel *t, const void *p, size_t n)
{
	struct conn *c = t->sarg;

	return buf_append(&c->out, p, n);
}

static int
cs_flush(struct tunnel *t)
{
	struct conn *c = t->sarg;
	int rc = conn_write_out(c);

	if (rc == 0)
		buf_free(&c->out);	/* idle tunnels hold no buffer */
	else if (rc == 1 && c->tls_write_wants_read)
		conn_start_reading(c);	/* its read callback flushes */
	return rc;
}

static size_t
cs_queued(const struct tunnel *t)
{
	const struct conn *c = t->sarg;

	return buf_pending(&c->out);
}

static void
cs_reading(struct tunnel *t, bool on)
{
	if (on)
		conn_start_reading(t->sarg);
	else
		conn_stop_reading(t->sarg);
}

static void
cs_shut(struct tunnel *t)
{
	struct conn *c = t->sarg;

	if (c->ssl != NULL && c->tls_ready && !c->tls_notified) {
		tls_notify(c->ssl);
		c->tls_notified = true;
	}
	shutdown(c->fd, SHUT_WR);
}

static void
cs_end(struct tunnel *t, bool clean, const char *why)
{
	conn_fail(t->sarg, why);
}

static bool
cs_gone(const struct tunnel *t)
{
	const struct conn *c = t->sarg;

	return c->closing;
}

static const struct tunnel_side conn_side = {
	cs_recv, cs_send, cs_queue, cs_flush, cs_queued, cs_reading, cs_shut,
	cs_end, cs_gone,
};

int
tunnel_open(struct conn *c, const char *hdrs, size_t hdrs_len,
    const struct req_upgrade *u)
{
	struct request *r = c->req;
	struct buf *o = &c->out;
	struct tunnel *t;
	int rc = 0;

	if (c->closing) {
		if (u->ssl != NULL)
			tls_close(u->ssl, false);
		close(u->fd);
		return -1;
	}
	if ((t = tunnel_new(&conn_side, c, r, u)) == NULL) {
		conn_fail(c, "out of memory");
		return -1;
	}
	c->tun = t;
	r->status = 101;
	/* The client's unread bytes go first, and its head is kept for
	 * the log: its read buffer is given back. */
	if (conn_to_tunnel(c, &t->to_up, &t->head) == -1) {
		conn_fail(c, "out of memory");
		return -1;
	}
	rc |= buf_append(o, "HTTP/1.1 101 Switching Protocols\r\n", 34);
	rc |= buf_append(o, hdrs, hdrs_len);
	if (r->resp_extra_len > 0)
		rc |= buf_append(o, r->resp_extra, r->resp_extra_len);
	rc |= buf_append(o, "Connection: upgrade\r\n\r\n", 23);
	if (rc != 0) {
		tunnel_end(t, MT_ERROR);
		return -1;
	}
	return tunnel_start(t, u->early, u->early_len);
}

void
tunnel_close(struct tunnel *t)
{
	struct request *r = t->r;

	tunnel_up_reading(t, false);
	tunnel_up_writing(t, false);
	tnode_del(&t->timer);
	TAILQ_REMOVE(&tunnels, t, link);
	if (t->ssl != NULL)
		tls_close(t->ssl, !t->up_eof);
	t->ssl = NULL;
	close(t->fd);
	t->fd = -1;
	if (!t->ended)
		t->end = MT_ERROR;	/* closed from outside: worker exit */
	r->tunnel_close = m_tunnel_end_name(t->end);
	metrics_tunnel_closed(t->end, r->tunnel_bytes_in, r->resp_bytes);
	tunnel_count(-1);
}

void
tunnel_free(struct tunnel *t)
{
	buf_free(&t->to_up);
	free(t->head);
	free(t);
}
