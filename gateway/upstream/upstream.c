/*
 * Server selection within an upstream.  round_robin walks the list,
 * least_request takes the fewest in flight in this worker (ties broken at
 * random, so workers do not all pile onto the first server), random is
 * random.  The state is per worker: a worker never waits on another.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "gateway/upstream/h2up.h"
#include "gateway/upstream/upconn.h"
#include "gateway/upstream/upstream.h"
#include "lib/log.h"

static struct upstream_rt	*ups;
static size_t			 nups;
static const struct config	*ups_cfg;

uint32_t
upstream_random(void)
{
	static uint32_t state;

	if (state == 0 && getrandom(&state, sizeof(state), 0) !=
	    sizeof(state))
		state = 2463534242u;
	if (state == 0)
		state = 2463534242u;
	/* xorshift32 */
	state ^= state << 13;
	state ^= state >> 17;
	state ^= state << 5;
	return state;
}

static unsigned
rand_below(unsigned n)
{
	return n ? upstream_random() % n : 0;
}

/*
 * A server's address for agate's own client (native requests, and
 * Upgrades to any server), resolved once per config load as nginx does
 * (libcurl resolves per request instead).  A name that does not
 * resolve leaves the server unusable (its requests get 502), logged.
 */
static void
server_resolve(struct server_rt *s)
{
	const struct server_cfg *c = s->cfg;
	struct addrinfo hints, *res = NULL;
	char port[8], host[256];
	size_t hl = strlen(c->host);
	int rc;

	/* "[::1]" in a URL is "::1" to getaddrinfo. */
	if (c->host[0] == '[' && hl >= 2 && hl - 2 < sizeof(host)) {
		memcpy(host, c->host + 1, hl - 2);
		host[hl - 2] = '\0';
	} else
		snprintf(host, sizeof(host), "%s", c->host);
	snprintf(port, sizeof(port), "%u", c->port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0 || res == NULL) {
		log_warnx("upstream: cannot resolve %s: %s", c->url,
		    gai_strerror(rc));
		return;
	}
	memcpy(&s->sa, res->ai_addr, res->ai_addrlen);
	s->salen = res->ai_addrlen;
	s->resolved = true;
	freeaddrinfo(res);
}

static int
upstream_init_one(struct event_base *base, struct upstream_rt *u,
    const struct upstream_cfg *cfg)
{
	size_t i;

	u->cfg = cfg;
	if ((u->servers = calloc(cfg->nservers, sizeof(*u->servers))) == NULL)
		return -1;
	for (i = 0; i < cfg->nservers; i++) {
		struct server_rt *s = &u->servers[i];

		s->cfg = &cfg->servers[i];
		s->sh = shared_server(ups_cfg, cfg, i);
		TAILQ_INIT(&s->idle);
		TAILQ_INIT(&s->h2conns);
		s->native = config_server_native(cfg, s->cfg);
		s->h2 = config_server_h2(cfg, s->cfg);
		/* Host as libcurl would send it: the port unless default. */
		if (s->cfg->port == (s->cfg->https ? 443 : 80))
			snprintf(s->host_hdr, sizeof(s->host_hdr), "%s",
			    s->cfg->host);
		else
			snprintf(s->host_hdr, sizeof(s->host_hdr), "%s:%u",
			    s->cfg->host, s->cfg->port);
		/* Upgrades go native in any case (TLS of their own for
		 * https): every server has its address. */
		server_resolve(s);
		if (s->h2)
			u->any_h2 = true;
		else if (!s->native)
			u->any_curl = true;
	}
	tlist_init(&u->keepalive, base, cfg->keepalive_timeout_ms,
	    upconn_expire);
	tlist_init(&u->excess, base, cfg->keepalive_timeout_ms <
	    UPCONN_EXCESS_MS ? cfg->keepalive_timeout_ms : UPCONN_EXCESS_MS,
	    upconn_expire_excess);
	limiter_init(&u->limit, cfg->max_concurrent, cfg->max_queue);
	/* Workers start at different servers. */
	u->rr = rand_below((unsigned)cfg->nservers);
	return 0;
}

int
upstream_init(struct event_base *base, const struct config *cfg)
{
	size_t i;

	ups_cfg = cfg;
	nups = cfg->nupstreams;
	if ((ups = calloc(nups ? nups : 1, sizeof(*ups))) == NULL)
		return -1;
	for (i = 0; i < nups; i++)
		if (upstream_init_one(base, &ups[i], &cfg->upstreams[i]) == -1)
			return -1;
	return 0;
}

void
upstream_free(void)
{
	size_t i, j;

	for (i = 0; i < nups; i++) {
		for (j = 0; ups[i].servers != NULL && j < ups[i].cfg->nservers;
		    j++)
		{
			upconn_close_idle(&ups[i].servers[j]);
			h2upconn_close_server(&ups[i].servers[j]);
		}
		tlist_free(&ups[i].keepalive);
		tlist_free(&ups[i].excess);
		uptls_free(&ups[i]);
		free(ups[i].servers);
	}
	free(ups);
	ups = NULL;
	nups = 0;
}

struct upstream_rt *
upstream_rt(const struct upstream_cfg *u)
{
	return &ups[u - ups_cfg->upstreams];
}

bool
upstream_server_available(const struct upstream_rt *u, size_t i,
    uint64_t now)
{
	const struct server_rt *s = &u->servers[i];

	if (u->cfg->health.enabled &&
	    atomic_load_explicit(&s->sh->down, memory_order_relaxed))
		return false;
	return breaker_available(&s->sh->breaker, &u->cfg->breaker, now);
}

void
upstream_record(struct upstream_rt *up, size_t server, bool ok,
    uint64_t trial)
{
	const struct upstream_cfg *u = up->cfg;
	const char *url = u->servers[server].url;

	switch (breaker_record(&up->servers[server].sh->breaker, &u->breaker,
	    ok, trial, now_ms())) {
	case BREAKER_OPENED:
		log_warnx("breaker: upstream %s server %s: circuit opened "
		    "after %d failure%s in a row; no requests to it for %llu "
		    "ms", u->name, url, u->breaker.failures,
		    log_plural(u->breaker.failures),
		    (unsigned long long)u->breaker.open_for_ms);
		break;
	case BREAKER_REOPENED:
		log_warnx("breaker: upstream %s server %s: the trial request "
		    "failed; circuit open again for %llu ms", u->name, url,
		    (unsigned long long)u->breaker.open_for_ms);
		break;
	case BREAKER_CLOSED_AGAIN:
		log_info("breaker: upstream %s server %s: the trial request "
		    "succeeded; circuit closed", u->name, url);
		break;
	case BREAKER_SAME:
		break;
	}
}

bool
upstream_any_available(const struct upstream_rt *u, uint64_t now)
{
	size_t i;

	for (i = 0; i < u->cfg->nservers; i++)
		if (upstream_server_available(u, i, now))
			return true;
	return false;
}

static bool
pickable(const struct upstream_rt *u, size_t i, uint64_t avoid, uint64_t now)
{
	if (i < 64 && (avoid & (UINT64_C(1) << i)))
		return false;
	return upstream_server_available(u, i, now);
}

/* One choice by the balance policy among pickable servers; -1: none. */
static ssize_t
pick_one(struct upstream_rt *u, uint64_t avoid, uint64_t now)
{
	size_t n = u->cfg->nservers, i, k, ties = 0;
	ssize_t best = -1;

	switch (u->cfg->balance) {
	case BALANCE_RANDOM:
		for (i = 0; i < n; i++)
			if (pickable(u, i, avoid, now) &&
			    rand_below((unsigned)++ties) == 0)
				best = (ssize_t)i;	/* reservoir sampling */
		return best;
	case BALANCE_LEAST_REQUEST:
		for (i = 0; i < n; i++) {
			if (!pickable(u, i, avoid, now))
				continue;
			if (best < 0 || u->servers[i].inflight <
			    u->servers[best].inflight) {
				best = (ssize_t)i;
				ties = 1;
			} else if (u->servers[i].inflight ==
			    u->servers[best].inflight &&
			    rand_below((unsigned)++ties) == 0)
				best = (ssize_t)i;	/* random among ties */
		}
		return best;
	case BALANCE_ROUND_ROBIN:
	default:
		for (k = 0; k < n; k++) {
			i = (u->rr + k) % n;
			if (pickable(u, i, avoid, now)) {
				u->rr = (unsigned)(i + 1);
				return (ssize_t)i;
			}
		}
		return -1;
	}
}

ssize_t
upstream_pick(struct upstream_rt *u, uint64_t avoid, uint64_t now,
    uint64_t *trial)
{
	uint64_t blocked = 0;
	size_t n = u->cfg->nservers, round;
	ssize_t i;

	*trial = 0;
	/* A breaker may turn its trial away between the look and the
	 * entry (another worker took it): look again without it. */
	for (round = 0; round <= n; round++) {
		if ((i = pick_one(u, avoid | blocked, now)) < 0 &&
		    (i = pick_one(u, blocked, now)) < 0)
			return -1;
		switch (breaker_enter(&u->servers[i].sh->breaker,
		    &u->cfg->breaker, now)) {
		case BREAKER_TRIAL:
			*trial = now;
			/* FALLTHROUGH */
		case BREAKER_PASS:
			return i;
		case BREAKER_BLOCK:
			if (i >= 64)
				return -1;
			blocked |= UINT64_C(1) << i;
			break;
		}
	}
	return -1;
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
