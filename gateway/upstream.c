/*
 * Server selection within an upstream.  round_robin walks the list,
 * least_request takes the fewest in flight in this worker (ties broken at
 * random, so workers do not all pile onto the first server), random is
 * random.  The state is per worker: a worker never waits on another.
 */
#include <stdlib.h>
#include <sys/random.h>

#include "gateway/upstream.h"

static struct upstream_rt	*ups;
static size_t			 nups;
static const struct config	*ups_cfg;

static unsigned
rand_below(unsigned n)
{
	static unsigned state;

	if (state == 0 && getrandom(&state, sizeof(state), 0) !=
	    sizeof(state))
		state = 2463534242u;
	/* xorshift32 */
	state ^= state << 13;
	state ^= state >> 17;
	state ^= state << 5;
	return n ? state % n : 0;
}

int
upstream_init(const struct config *cfg)
{
	size_t i;

	ups_cfg = cfg;
	nups = cfg->nupstreams;
	if ((ups = calloc(nups ? nups : 1, sizeof(*ups))) == NULL)
		return -1;
	for (i = 0; i < nups; i++) {
		ups[i].cfg = &cfg->upstreams[i];
		ups[i].servers = calloc(cfg->upstreams[i].nservers,
		    sizeof(*ups[i].servers));
		if (ups[i].servers == NULL)
			return -1;
		/* Workers start at different servers. */
		ups[i].rr = rand_below((unsigned)cfg->upstreams[i].nservers);
	}
	return 0;
}

void
upstream_free(void)
{
	size_t i;

	for (i = 0; i < nups; i++)
		free(ups[i].servers);
	free(ups);
	ups = NULL;
	nups = 0;
}

struct upstream_rt *
upstream_rt(const struct upstream_cfg *u)
{
	return &ups[u - ups_cfg->upstreams];
}

size_t
upstream_pick(struct upstream_rt *u)
{
	size_t n = u->cfg->nservers, i, best = 0, ties = 0;

	switch (u->cfg->balance) {
	case BALANCE_RANDOM:
		return rand_below((unsigned)n);
	case BALANCE_LEAST_REQUEST:
		for (i = 0; i < n; i++) {
			if (i == 0 || u->servers[i].inflight <
			    u->servers[best].inflight) {
				best = i;
				ties = 1;
			} else if (u->servers[i].inflight ==
			    u->servers[best].inflight &&
			    rand_below((unsigned)++ties) == 0)
				best = i;	/* reservoir pick among ties */
		}
		return best;
	case BALANCE_ROUND_ROBIN:
	default:
		return u->rr++ % n;
	}
}

void
upstream_begin(struct upstream_rt *u, size_t server)
{
	u->servers[server].inflight++;
}

void
upstream_end(struct upstream_rt *u, size_t server)
{
	u->servers[server].inflight--;
}
