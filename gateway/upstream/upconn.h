/*
 * Upstream connections of the native transport: one TCP connection to a
 * server, owned by one exchange while busy and kept in its server's idle
 * pool between requests (up to the upstream's keepalive count, for its
 * keepalive_timeout).  An idle connection keeps its read event armed, so
 * an upstream closing it is noticed at once instead of on reuse.
 */
#ifndef AGATE_UPCONN_H
#define AGATE_UPCONN_H

#include <stdbool.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "gateway/upstream/upstream.h"
#include "worker/timer.h"

struct upconn {
	int			 fd;
	struct event		 rev;		/* EV_READ, persistent */
	struct event		 wev;		/* EV_WRITE, only when needed */
	bool			 reading;
	bool			 writing;
	bool			 connecting;
	struct upstream_rt	*up;
	struct server_rt	*srv;
	struct tnode		 idle_timer;
	unsigned		 uses;		/* requests it has carried */
	/* The exchange that owns it, told of readiness; NULL while idle. */
	void			*owner;
	void			(*on_ready)(void *owner, short what);
	TAILQ_ENTRY(upconn)	 link;		/* server's idle list */
	struct upconn		*next_free;
};

/*
 * Idle connections beyond the upstream's keepalive count are not closed
 * on the spot: under a burst (more requests in flight than keepalive),
 * closing them as their responses finish and opening new ones a moment
 * later as the next requests come was most of the cost.  They wait this
 * long for a taker, then close.
 */
#define UPCONN_EXCESS_MS	250

/*
 * An idle pooled connection (*reused true), or a new one being connected
 * (*reused false; the owner hears EV_WRITE once the connect completes).
 * NULL with errno set when no socket can be made.
 */
struct upconn *upconn_get(struct upstream_rt *, struct server_rt *,
	    bool *reused);
void	upconn_own(struct upconn *, void *owner,
	    void (*on_ready)(void *, short));
/* Whether a connect finished well (after the owner saw EV_WRITE). */
int	upconn_connect_error(struct upconn *);
void	upconn_want_write(struct upconn *, bool);
void	upconn_want_read(struct upconn *, bool);
/* Back to the pool, or closed if the pool is full. */
void	upconn_put(struct upconn *);
void	upconn_close(struct upconn *);
/* Lets go of uc but not of its socket, which is returned (a 101). */
int	upconn_take_fd(struct upconn *);
void	upconn_close_idle(struct server_rt *);
/* The keepalive list's timer: an idle connection timed out. */
void	upconn_expire(struct tnode *);
/* The excess list's: closed unless the pool is back under keepalive. */
void	upconn_expire_excess(struct tnode *);

#endif
