/*
 * Pooled upstream connections (see upconn.h).  Reuse is LIFO: the most
 * recently used connection goes first, so a pool larger than the load
 * needs lets its cold end time out.  Structs are kept on a free list.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/upstream/upconn.h"
#include "lib/log.h"
#include "worker/loopwatch.h"
#include "worker/tls.h"
#include "worker/worker.h"

#define UPCONN_FREE_MAX	64

static struct upconn	*free_list;
static size_t		 nfree;

static void	upconn_unpool(struct upconn *);

/* The TCP connect, then the TLS handshake, before the owner hears
 * EV_WRITE ("connected"): it sees a plain connection either way. */
static void
upconn_tls_step(struct upconn *uc)
{
	socklen_t len = sizeof(uc->error);
	int want = 0, rc;

	if (uc->ssl == NULL) {
		if (getsockopt(uc->fd, SOL_SOCKET, SO_ERROR, &uc->error,
		    &len) == -1)
			uc->error = errno;
		if (uc->error != 0)
			goto told;
		if ((uc->ssl = uptls_new(uc->up, uc->srv, uc->fd,
		    uc->h2)) == NULL) {
			uc->error = EPROTO;
			uc->error_detail = "cannot set up TLS";
			goto told;
		}
	}
	rc = tls_handshake(uc->ssl, &want);
	if (rc == TLS_AGAIN) {
		upconn_want_write(uc, want == TLS_WANT_WRITE);
		upconn_want_read(uc, true);
		return;
	}
	if (rc != TLS_DONE) {
		uc->error = EPROTO;
		uc->error_detail = uptls_failure(uc->ssl);
	} else if (uc->h2 && !uptls_is_h2(uc->ssl)) {
		uc->error = EPROTO;
		uc->error_detail = "the server did not choose h2 by ALPN";
	}
told:
	uc->tls_pending = false;
	uc->on_ready(uc->owner, EV_WRITE);
}

static void
upconn_ready(struct upconn *uc, short what)
{
	char b;

	if (uc->tls_pending && uc->owner != NULL) {
		upconn_tls_step(uc);
		return;
	}
	if (uc->owner != NULL) {
		/* TLS may read to write, or write to read. */
		if ((what & EV_WRITE) && uc->read_wants_write) {
			uc->read_wants_write = false;
			what |= EV_READ;
		}
		if ((what & EV_READ) && uc->write_wants_read) {
			uc->write_wants_read = false;
			what |= EV_WRITE;
		}
		uc->on_ready(uc->owner, what);
		return;
	}
	/* Idle: the server closed it, or sent what nobody asked for. */
	if (recv(uc->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
	    (errno == EAGAIN || errno == EINTR))
		return;
	upconn_close(uc);
}

static void
upconn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upconn *uc = arg;

	loopwatch_begin(uc->h2 ? LW_UPSTREAM_H2 : (what & EV_READ) ?
	    LW_UPSTREAM_HTTP1_READ : LW_UPSTREAM_HTTP1_WRITE);
	upconn_ready(uc, what);
	loopwatch_end();
}

static struct upconn *
upconn_alloc(void)
{
	struct upconn *uc = free_list;

	if (uc != NULL) {
		free_list = uc->next_free;
		nfree--;
		return uc;
	}
	return malloc(sizeof(*uc));
}

static struct upconn *
upconn_connect(struct upstream_rt *up, struct server_rt *srv)
{
	struct upconn *uc;
	int fd, one = 1;

	if (srv->state == ADDR_FREE) {
		errno = EHOSTUNREACH;
		return NULL;
	}
	fd = socket(srv->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&srv->sa, srv->salen) == -1 &&
	    errno != EINPROGRESS) {
		int saved = errno;

		close(fd);
		errno = saved;
		return NULL;
	}
	if ((uc = upconn_alloc()) == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	uc->fd = fd;
	uc->up = up;
	uc->srv = srv;
	uc->owner = NULL;
	uc->uses = 0;
	uc->idle_timer.list = NULL;
	uc->reading = uc->writing = false;
	uc->connecting = true;
	uc->ssl = NULL;
	uc->tls_pending = srv->cfg->https;
	uc->h2 = false;
	uc->read_wants_write = uc->write_wants_read = false;
	uc->error = 0;
	uc->error_detail = NULL;
	event_assign(&uc->rev, worker.base, fd, EV_READ | EV_PERSIST,
	    upconn_cb, uc);
	event_assign(&uc->wev, worker.base, fd, EV_WRITE | EV_PERSIST,
	    upconn_cb, uc);
	/* Connected when writable: the owner hears EV_WRITE. */
	upconn_want_write(uc, true);
	return uc;
}

struct upconn *
upconn_get(struct upstream_rt *up, struct server_rt *srv, bool *reused)
{
	struct upconn *uc = TAILQ_LAST(&srv->idle, upconn_q);

	if (uc == NULL) {
		*reused = false;
		return upconn_connect(up, srv);
	}
	upconn_unpool(uc);
	*reused = true;
	return uc;
}

struct upconn *
upconn_open(struct upstream_rt *up, struct server_rt *srv, bool h2)
{
	struct upconn *uc = upconn_connect(up, srv);

	if (uc != NULL)
		uc->h2 = h2;
	return uc;
}

void
upconn_own(struct upconn *uc, void *owner, void (*on_ready)(void *, short))
{
	uc->owner = owner;
	uc->on_ready = on_ready;
	uc->uses++;
}

int
upconn_connect_error(struct upconn *uc, const char **detail)
{
	int err = 0;
	socklen_t len = sizeof(err);

	uc->connecting = false;
	if (uc->error != 0)
		err = uc->error;
	else if (getsockopt(uc->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	*detail = uc->error_detail != NULL ? uc->error_detail : strerror(err);
	return err;
}

ssize_t
upconn_read(struct upconn *uc, void *p, size_t n)
{
	int want = 0;
	ssize_t r;

	if (uc->ssl == NULL)
		return read(uc->fd, p, n);
	r = tls_read(uc->ssl, p, n, &want);
	if (r > 0) {
		/* Decrypted bytes epoll cannot see: read again soon. */
		if (tls_pending(uc->ssl))
			event_active(&uc->rev, EV_READ, 0);
		return r;
	}
	if (r == TLS_CLOSED)
		return 0;
	if (r == TLS_AGAIN) {
		if (want == TLS_WANT_WRITE) {
			uc->read_wants_write = true;
			upconn_want_write(uc, true);
		}
		errno = EAGAIN;
		return -1;
	}
	errno = EPROTO;
	return -1;
}

ssize_t
upconn_write(struct upconn *uc, const void *p, size_t n)
{
	int want = 0;
	ssize_t r;

	if (uc->ssl == NULL)
		return write(uc->fd, p, n);
	r = tls_write(uc->ssl, p, n, &want);
	if (r > 0)
		return r;
	if (r == TLS_AGAIN) {
		/* Waiting to read: the read event is on already. */
		uc->write_wants_read = want == TLS_WANT_READ;
		errno = EAGAIN;
		return -1;
	}
	errno = r == TLS_CLOSED ? EPIPE : EPROTO;
	return -1;
}

void
upconn_want_write(struct upconn *uc, bool on)
{
	if (on && !uc->writing && event_add(&uc->wev, NULL) == 0)
		uc->writing = true;
	else if (!on && uc->writing && event_del(&uc->wev) == 0)
		uc->writing = false;
}

void
upconn_want_read(struct upconn *uc, bool on)
{
	if (on && !uc->reading && event_add(&uc->rev, NULL) == 0) {
		uc->reading = true;
		/* Bytes OpenSSL decrypted already: epoll will not tell. */
		if (uc->ssl != NULL && tls_pending(uc->ssl))
			event_active(&uc->rev, EV_READ, 0);
	} else if (!on && uc->reading && event_del(&uc->rev) == 0)
		uc->reading = false;
}

void
upconn_put(struct upconn *uc)
{
	struct upstream_rt *up = uc->up;

	/* A drained address (gone from DNS) keeps no idle connection. */
	if (up->cfg->keepalive == 0 || worker.phase == WP_DRAINING ||
	    uc->ssl != NULL || uc->srv->state != ADDR_LIVE) {
		upconn_close(uc);
		return;
	}
	uc->owner = NULL;
	upconn_want_write(uc, false);
	upconn_want_read(uc, true);	/* to hear the server close it */
	TAILQ_INSERT_TAIL(&uc->srv->idle, uc, link);
	tlist_add(up->nidle < up->cfg->keepalive ? &up->keepalive :
	    &up->excess, &uc->idle_timer);
	up->nidle++;
}

/* Events off, socket closed, struct back to the free list. */
static void
upconn_release(struct upconn *uc)
{
	upconn_want_read(uc, false);
	upconn_want_write(uc, false);
	if (uc->ssl != NULL)
		tls_close(uc->ssl, false);
	uc->ssl = NULL;
	if (uc->fd >= 0)
		close(uc->fd);
	if (nfree < UPCONN_FREE_MAX) {
		uc->next_free = free_list;
		free_list = uc;
		nfree++;
	} else
		free(uc);
}

/* Takes an idle connection out of its pool. */
static void
upconn_unpool(struct upconn *uc)
{
	TAILQ_REMOVE(&uc->srv->idle, uc, link);
	tnode_del(&uc->idle_timer);
	uc->up->nidle--;
}

void
upconn_close(struct upconn *uc)
{
	if (uc->owner == NULL)
		upconn_unpool(uc);
	upconn_release(uc);
}

int
upconn_take_fd(struct upconn *uc, struct ssl_st **ssl)
{
	int fd = uc->fd;

	if (uc->owner == NULL)
		upconn_unpool(uc);
	*ssl = uc->ssl;
	uc->ssl = NULL;
	uc->fd = -1;
	upconn_release(uc);
	return fd;
}

void
upconn_close_idle(struct server_rt *srv)
{
	struct upconn *uc;

	while ((uc = TAILQ_FIRST(&srv->idle)) != NULL)
		upconn_close(uc);
}

void
upconn_expire(struct tnode *n)
{
	struct upconn *uc = (struct upconn *)((char *)n -
	    offsetof(struct upconn, idle_timer));

	upconn_unpool(uc);
	upconn_release(uc);
}

void
upconn_expire_excess(struct tnode *n)
{
	struct upconn *uc = (struct upconn *)((char *)n -
	    offsetof(struct upconn, idle_timer));
	struct upstream_rt *up = uc->up;

	/* The burst is over.  Still needed to make up keepalive? Stay. */
	if (up->nidle <= up->cfg->keepalive) {
		tlist_add(&up->keepalive, &uc->idle_timer);
		return;
	}
	upconn_unpool(uc);
	upconn_release(uc);
}
