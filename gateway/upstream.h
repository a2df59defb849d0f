/*
 * Per-worker runtime state of upstreams: which server goes next, how
 * many requests each has in flight.  Indexed like config->upstreams.
 */
#ifndef AGATE_UPSTREAM_H
#define AGATE_UPSTREAM_H

#include "gateway/config.h"

struct server_rt {
	int		inflight;
};

struct upstream_rt {
	const struct upstream_cfg *cfg;
	struct server_rt	*servers;
	unsigned		 rr;		/* next for round_robin */
};

int	upstream_init(const struct config *);
void	upstream_free(void);
struct upstream_rt *upstream_rt(const struct upstream_cfg *);
/* Picks a server per the upstream's balance; returns its index. */
size_t	upstream_pick(struct upstream_rt *);
void	upstream_begin(struct upstream_rt *, size_t server);
void	upstream_end(struct upstream_rt *, size_t server);

#endif
