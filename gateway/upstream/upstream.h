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
#include <sys/types.h>

#include "gateway/config/config.h"
#include "gateway/config/shared.h"
#include "gateway/upstream/limiter.h"
#include "gateway/upstream/retry.h"
#include "worker/timer.h"

struct upconn;
struct h2upconn;

struct server_rt {
	const struct server_cfg	*cfg;
	struct shared_server	*sh;		/* breaker, health */
	int			 inflight;
	bool			 native;	/* agate's own client */
	bool			 h2;		/* h2c://: agate's HTTP/2 client */
	bool			 resolved;
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	char			 host_hdr[280];	/* Host: value */
	TAILQ_HEAD(upconn_q, upconn) idle;	/* newest last */
	TAILQ_HEAD(h2upconn_q, h2upconn) h2conns;	/* h2up: its connections */
};

struct upstream_rt {
	const struct upstream_cfg *cfg;
	struct server_rt	*servers;
	unsigned		 rr;		/* next for round_robin */
	int			 nidle;		/* pooled, all servers */
	struct tlist		 keepalive;	/* idle connections' timeouts */
	struct tlist		 excess;	/* beyond keepalive: a short grace */
	bool			 any_curl;	/* a server uses libcurl */
	bool			 any_h2;	/* a server is h2c:// */
	struct limiter		 limit;		/* max_concurrent, max_queue */
	struct retry_budget	 budget;
	struct ssl_ctx_st	*tls_ctx;	/* uptls.c, made on first use */
};

int	upstream_init(struct event_base *, const struct config *);
void	upstream_free(void);
struct upstream_rt *upstream_rt(const struct upstream_cfg *);
/*
 * Picks a server per the upstream's balance among those that are up and
 * whose breaker lets a request through, preferring servers not in avoid
 * (bit i: server i, for i < 64).  Returns its index, or -1 when no server
 * is available.  *trial gets now if the request is the breaker's trial,
 * else 0.
 */
ssize_t	upstream_pick(struct upstream_rt *, uint64_t avoid, uint64_t now,
	    uint64_t *trial);
/* Whether server i may take requests (health and breaker), now. */
bool	upstream_server_available(const struct upstream_rt *, size_t i,
	    uint64_t now);
/* A request's result for server's breaker (trial: see breaker.h);
 * logs what it changed. */
void	upstream_record(struct upstream_rt *, size_t server, bool ok,
	    uint64_t trial);
/* Whether any server may take requests now. */
bool	upstream_any_available(const struct upstream_rt *, uint64_t now);
/* A uniform random 32-bit number (not for secrets). */
uint32_t upstream_random(void);
void	upstream_begin(struct upstream_rt *, size_t server);
void	upstream_end(struct upstream_rt *, size_t server);

#endif
