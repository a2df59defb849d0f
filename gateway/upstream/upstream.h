/*
 * Per-worker runtime state of upstreams: which address goes next, how
 * many requests each has in flight, and each address's pools of idle
 * keep-alive connections.  Upstreams are indexed like config->upstreams.
 *
 * Balancing is over addresses, not configured servers: a server named
 * by an IP address has one, a server named by a host name has as many as
 * its last DNS answer gave (dns.c), each in a slot of its own (struct
 * server_rt).  A slot keeps its index while requests or connections use
 * it, so a try names its address by index; an address that left the
 * answer is drained (no new requests) and its slot is free again once
 * nothing uses it.  Health and breaker state stay per configured server:
 * the slots of one server share them.
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
struct curl_slist;

/* Slots a server named by a host name has: addresses of one answer
 * beyond this many are left out, and draining ones count too. */
#define UPSTREAM_NAME_SLOTS	8

enum addr_state {
	ADDR_FREE,		/* no address */
	ADDR_LIVE,		/* in the last answer: takes requests */
	ADDR_DRAINING		/* left the answer: in-flight ones finish */
};

/* One address of a configured server. */
struct server_rt {
	const struct server_cfg	*cfg;
	size_t			 ci;		/* index in cfg->servers */
	struct shared_server	*sh;		/* breaker, health: per ci */
	enum addr_state		 state;
	int			 inflight;
	bool			 native;	/* agate's own client */
	bool			 h2;		/* h2c://: agate's HTTP/2 client */
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	/* libcurl: "host:port:ip:port", so that it connects to this
	 * address and never resolves (NULL for an IP-literal server). */
	struct curl_slist	*connect_to;
	char			 host_hdr[280];	/* Host: value */
	TAILQ_HEAD(upconn_q, upconn) idle;	/* newest last */
	TAILQ_HEAD(h2upconn_q, h2upconn) h2conns;	/* h2up: its connections */
};

struct upstream_rt {
	const struct upstream_cfg *cfg;
	struct server_rt	*servers;	/* slots */
	size_t			 nslots;
	size_t			*first;		/* server i: slots first[i]..
						 * first[i + 1] - 1 */
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
 * Picks a live address per the upstream's balance among those whose
 * server is up and whose breaker lets a request through, preferring
 * slots not in avoid (bit i: slot i, for i < 64).  Returns its slot, or
 * -1 when none is available.  *trial gets now if the request is the
 * breaker's trial, else 0.
 */
ssize_t	upstream_pick(struct upstream_rt *, uint64_t avoid, uint64_t now,
	    uint64_t *trial);
/* Whether slot i may take requests (live, health and breaker), now. */
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
/* Live addresses the upstream has, all servers. */
size_t	upstream_live(const struct upstream_rt *);
/*
 * dns.c: configured server ci of u now has these addresses (port
 * included).  New ones are used at once, those that left are drained.
 * Returns how many are live.
 */
size_t	upstream_set_addresses(struct upstream_rt *, size_t ci,
	    const struct sockaddr_storage *, const socklen_t *, size_t n);
/* Live addresses of server ci. */
size_t	upstream_live_of(const struct upstream_rt *, size_t ci);
/* Its live addresses of family (AF_INET, AF_INET6), up to max; how many. */
size_t	upstream_addresses_of(const struct upstream_rt *, size_t ci,
	    int family, struct sockaddr_storage *, socklen_t *, size_t max);
/* The next live address of server ci after *turn (health checks go
 * round them), or NULL if it has none. */
struct server_rt *upstream_next_address(struct upstream_rt *, size_t ci,
	    unsigned *turn);
/* Writes an address as text ("10.0.0.1", "::1") for logs and libcurl. */
void	upstream_addr_str(const struct sockaddr_storage *, char *,
	    size_t);

#endif
