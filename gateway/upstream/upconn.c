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
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/upstream/upconn.h"
#include "lib/log.h"
#include "worker/worker.h"

#define UPCONN_FREE_MAX	64

static struct upconn	*free_list;
static size_t		 nfree;

static void	upconn_unpool(struct upconn *);

static void
upconn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upconn *uc = arg;
	char b;

	if (uc->owner != NULL) {
		uc->on_ready(uc->owner, what);
		return;
	}
	/* Idle: the server closed it, or sent what nobody asked for. */
	if (recv(uc->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
	    (errno == EAGAIN || errno == EINTR))
		return;
	upconn_close(uc);
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

	if (!srv->resolved) {
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

void
upconn_own(struct upconn *uc, void *owner, void (*on_ready)(void *, short))
{
	uc->owner = owner;
	uc->on_ready = on_ready;
	uc->uses++;
}

int
upconn_connect_error(struct upconn *uc)
{
	int err = 0;
	socklen_t len = sizeof(err);

	uc->connecting = false;
	if (getsockopt(uc->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		return errno;
	return err;
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
	if (on && !uc->reading && event_add(&uc->rev, NULL) == 0)
		uc->reading = true;
	else if (!on && uc->reading && event_del(&uc->rev) == 0)
		uc->reading = false;
}

void
upconn_put(struct upconn *uc)
{
	struct upstream_rt *up = uc->up;

	if (up->cfg->keepalive == 0 || worker.phase == WP_DRAINING) {
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
upconn_take_fd(struct upconn *uc)
{
	int fd = uc->fd;

	if (uc->owner == NULL)
		upconn_unpool(uc);
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
