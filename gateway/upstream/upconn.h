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
	/* https (Upgrade calls only): TLS on fd, never pooled. */
	struct ssl_st		*ssl;
	bool			 tls_pending;	/* handshake still to do */
	bool			 h2;		/* ALPN h2 (else http/1.1) */
	bool			 read_wants_write;	/* TLS turned a wait */
	bool			 write_wants_read;	/* around */
	int			 error;		/* connect or handshake */
	const char		*error_detail;
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
/* A new connection to srv, never pooled: for an owner that keeps it
 * (an HTTP/2 connection: h2 set, an https server must choose h2 by
 * ALPN).  As upconn_get() otherwise. */
struct upconn *upconn_open(struct upstream_rt *, struct server_rt *,
	    bool h2);
void	upconn_own(struct upconn *, void *owner,
	    void (*on_ready)(void *, short));
/* Whether a connect (and TLS handshake) finished well, after the owner
 * saw EV_WRITE: 0, or an errno, with words for the log in *detail. */
int	upconn_connect_error(struct upconn *, const char **detail);
/* read(2) and write(2), through TLS where it is on: a count, 0 at the
 * end, or -1 with errno (EAGAIN: the owner hears when to retry). */
ssize_t	upconn_read(struct upconn *, void *, size_t);
ssize_t	upconn_write(struct upconn *, const void *, size_t);
void	upconn_want_write(struct upconn *, bool);
void	upconn_want_read(struct upconn *, bool);
/* Back to the pool, or closed if the pool is full. */
void	upconn_put(struct upconn *);
void	upconn_close(struct upconn *);
/* Lets go of uc but not of its socket, which is returned with its TLS
 * state, if any, in *ssl (a 101: the tunnel's now). */
int	upconn_take_fd(struct upconn *, struct ssl_st **ssl);

/* uptls.c: TLS to https servers for connections agate drives itself. */
struct ssl_st *uptls_new(struct upstream_rt *, const struct server_rt *,
	    int fd, bool h2);
/* Whether the server chose h2 by ALPN. */
bool	uptls_is_h2(struct ssl_st *);
/* Why a handshake failed, for the log. */
const char *uptls_failure(struct ssl_st *);
void	uptls_free(struct upstream_rt *);
void	upconn_close_idle(struct server_rt *);
/* The keepalive list's timer: an idle connection timed out. */
void	upconn_expire(struct tnode *);
/* The excess list's: closed unless the pool is back under keepalive. */
void	upconn_expire_excess(struct tnode *);

#endif
