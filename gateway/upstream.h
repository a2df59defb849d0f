/*
 * Per-worker runtime state of upstreams: which server goes next, how
 * many requests each has in flight, and (native transport) each server's
 * resolved address and pool of idle keep-alive connections.  Indexed like
 * config->upstreams.
 */
#ifndef AGATE_UPSTREAM_H
#define AGATE_UPSTREAM_H

#include <stdbool.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "gateway/config.h"
#include "worker/timer.h"

struct upconn;

struct server_rt {
	const struct server_cfg	*cfg;
	int			 inflight;
	bool			 native;	/* agate's own client */
	bool			 resolved;
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	char			 host_hdr[280];	/* Host: value */
	TAILQ_HEAD(upconn_q, upconn) idle;	/* newest last */
};

struct upstream_rt {
	const struct upstream_cfg *cfg;
	struct server_rt	*servers;
	unsigned		 rr;		/* next for round_robin */
	int			 nidle;		/* pooled, all servers */
	struct tlist		 keepalive;	/* idle connections' timeouts */
	struct tlist		 excess;	/* beyond keepalive: a short grace */
};

int	upstream_init(struct event_base *, const struct config *);
void	upstream_free(void);
struct upstream_rt *upstream_rt(const struct upstream_cfg *);
/* Picks a server per the upstream's balance; returns its index. */
size_t	upstream_pick(struct upstream_rt *);
void	upstream_begin(struct upstream_rt *, size_t server);
void	upstream_end(struct upstream_rt *, size_t server);

#endif
