/*
 * Server selection within an upstream, over the addresses of its servers
 * (see upstream.h).  round_robin walks the slots, least_request takes the
 * address with the fewest in flight in this worker (ties broken at
 * random, so workers do not all pile onto the first), random is random;
 * each skips slots that hold no live address, a walk over a few dozen
 * slots at most, with no allocation.  The state is per worker: a worker
 * never waits on another.  Also the slots' life: an IP-literal server's
 * one address, set at start, and the addresses dns.c finds for names.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <curl/curl.h>

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

static void	slot_reclaim(struct server_rt *);

static unsigned
rand_below(unsigned n)
{
	return n ? upstream_random() % n : 0;
}

/* A slot of server ci, empty; its Host as libcurl would send it (the
 * port unless default). */
static void
slot_init(struct upstream_rt *u, struct server_rt *s, size_t ci)
{
	const struct server_cfg *c = &u->cfg->servers[ci];

	s->cfg = c;
	s->ci = ci;
	s->sh = shared_server(ups_cfg, u->cfg, ci);
	s->state = ADDR_FREE;
	TAILQ_INIT(&s->idle);
	TAILQ_INIT(&s->h2conns);
	s->native = config_server_native(u->cfg, c);
	s->h2 = config_server_h2(u->cfg, c);
	if (c->port == (c->https ? 443 : 80))
		snprintf(s->host_hdr, sizeof(s->host_hdr), "%s", c->host);
	else
		snprintf(s->host_hdr, sizeof(s->host_hdr), "%s:%u", c->host,
		    c->port);
	if (s->h2)
		u->any_h2 = true;
	else if (!s->native)
		u->any_curl = true;
}

/*
 * The address of a server named by an IP address: no lookup, no wait
 * (AI_NUMERICHOST).  Names are dns.c's: their slots start free.
 */
static void
slot_literal(struct server_rt *s)
{
	const struct server_cfg *c = s->cfg;
	struct addrinfo hints, *res = NULL;
	char port[8], host[256];
	size_t hl = strlen(c->host);

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
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
		log_warnx("upstream: bad address %s", c->url);
		return;
	}
	memcpy(&s->sa, res->ai_addr, res->ai_addrlen);
	s->salen = res->ai_addrlen;
	s->state = ADDR_LIVE;
	freeaddrinfo(res);
}

static int
upstream_init_one(struct event_base *base, struct upstream_rt *u,
    const struct upstream_cfg *cfg)
{
	size_t i, j;

	u->cfg = cfg;
	if ((u->first = calloc(cfg->nservers + 1, sizeof(*u->first))) == NULL)
		return -1;
	for (i = 0; i < cfg->nservers; i++)
		u->first[i + 1] = u->first[i] + (cfg->servers[i].named ?
		    UPSTREAM_NAME_SLOTS : 1);
	u->nslots = u->first[cfg->nservers];
	if ((u->servers = calloc(u->nslots, sizeof(*u->servers))) == NULL)
		return -1;
	for (i = 0; i < cfg->nservers; i++)
		for (j = u->first[i]; j < u->first[i + 1]; j++) {
			slot_init(u, &u->servers[j], i);
			/* Upgrades go native in any case (TLS of their own
			 * for https): every address is a sockaddr. */
			if (!cfg->servers[i].named)
				slot_literal(&u->servers[j]);
		}
	tlist_init(&u->keepalive, base, cfg->keepalive_timeout_ms,
	    upconn_expire);
	tlist_init(&u->excess, base, cfg->keepalive_timeout_ms <
	    UPCONN_EXCESS_MS ? cfg->keepalive_timeout_ms : UPCONN_EXCESS_MS,
	    upconn_expire_excess);
	limiter_init(&u->limit, cfg->max_concurrent, cfg->max_queue);
	/* Workers start at different addresses. */
	u->rr = rand_below((unsigned)u->nslots);
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
		for (j = 0; ups[i].servers != NULL && j < ups[i].nslots; j++) {
			upconn_close_idle(&ups[i].servers[j]);
			h2upconn_close_server(&ups[i].servers[j]);
			curl_slist_free_all(ups[i].servers[j].connect_to);
		}
		tlist_free(&ups[i].keepalive);
		tlist_free(&ups[i].excess);
		uptls_free(&ups[i]);
		free(ups[i].servers);
		free(ups[i].first);
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

	if (s->state != ADDR_LIVE)
		return false;
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
	const char *url = up->servers[server].cfg->url;

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

	for (i = 0; i < u->nslots; i++)
		if (upstream_server_available(u, i, now))
			return true;
	return false;
}

static bool
pickable(const struct upstream_rt *u, size_t i, uint64_t avoid,
    uint64_t blocked, uint64_t now)
{
	size_t ci = u->servers[i].ci;

	if (i < 64 && (avoid & (UINT64_C(1) << i)))
		return false;
	if (ci < 64 && (blocked & (UINT64_C(1) << ci)))
		return false;
	return upstream_server_available(u, i, now);
}

/* One choice by the balance policy among pickable servers; -1: none. */
static ssize_t
pick_one(struct upstream_rt *u, uint64_t avoid, uint64_t blocked,
    uint64_t now)
{
	size_t n = u->nslots, i, k, ties = 0;
	ssize_t best = -1;

	switch (u->cfg->balance) {
	case BALANCE_RANDOM:
		for (i = 0; i < n; i++)
			if (pickable(u, i, avoid, blocked, now) &&
			    rand_below((unsigned)++ties) == 0)
				best = (ssize_t)i;	/* reservoir sampling */
		return best;
	case BALANCE_LEAST_REQUEST:
		for (i = 0; i < n; i++) {
			if (!pickable(u, i, avoid, blocked, now))
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
			if (pickable(u, i, avoid, blocked, now)) {
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
	size_t n = u->nslots, round;
	ssize_t i;

	*trial = 0;
	/* A breaker may turn its trial away between the look and the
	 * entry (another worker took it): look again without it. */
	for (round = 0; round <= n; round++) {
		if ((i = pick_one(u, avoid, blocked, now)) < 0 &&
		    (i = pick_one(u, 0, blocked, now)) < 0)
			return -1;
		switch (breaker_enter(&u->servers[i].sh->breaker,
		    &u->cfg->breaker, now)) {
		case BREAKER_TRIAL:
			*trial = now;
			/* FALLTHROUGH */
		case BREAKER_PASS:
			return i;
		case BREAKER_BLOCK:
			/* The breaker is the configured server's: none of
			 * its addresses now. */
			if (u->servers[i].ci >= 64)
				return -1;
			blocked |= UINT64_C(1) << u->servers[i].ci;
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
	slot_reclaim(&u->servers[server]);
}

size_t
upstream_live(const struct upstream_rt *u)
{
	size_t i, n = 0;

	for (i = 0; i < u->nslots; i++)
		n += u->servers[i].state == ADDR_LIVE;
	return n;
}

/* -- addresses that come and go (dns.c) ---------------------------------- */

void
upstream_addr_str(const struct sockaddr_storage *sa, char *out, size_t len)
{
	const void *a = sa->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if (inet_ntop(sa->ss_family, a, out, (socklen_t)len) == NULL)
		snprintf(out, len, "?");
}

/* A drained slot that nothing uses any more is free for a new address. */
static void
slot_reclaim(struct server_rt *s)
{
	if (s->state != ADDR_DRAINING || s->inflight > 0 ||
	    !TAILQ_EMPTY(&s->idle) || !TAILQ_EMPTY(&s->h2conns))
		return;
	s->state = ADDR_FREE;
	curl_slist_free_all(s->connect_to);
	s->connect_to = NULL;
}

/* No new requests; idle connections close, busy ones after their
 * requests (upconn_put, h2upconn_closed). */
static void
slot_drain(struct server_rt *s)
{
	s->state = ADDR_DRAINING;
	upconn_close_idle(s);
	h2upconn_drain_server(s);
	slot_reclaim(s);
}

/* Pins libcurl to the slot's address: CONNECT_TO keeps the URL's name
 * for Host, SNI and the certificate check, and keys libcurl's pooled
 * connections by the address too. */
static int
slot_pin(struct server_rt *s)
{
	char ip[INET6_ADDRSTRLEN], line[400];

	upstream_addr_str(&s->sa, ip, sizeof(ip));
	snprintf(line, sizeof(line), s->sa.ss_family == AF_INET6 ?
	    "%s:%u:[%s]:%u" : "%s:%u:%s:%u", s->cfg->host, s->cfg->port, ip,
	    s->cfg->port);
	curl_slist_free_all(s->connect_to);
	s->connect_to = curl_slist_append(NULL, line);
	return s->connect_to != NULL ? 0 : -1;
}

static bool
same_addr(const struct server_rt *s, const struct sockaddr_storage *sa,
    socklen_t len)
{
	return s->salen == len && memcmp(&s->sa, sa, len) == 0;
}

/* Gives sa a slot of server ci: its own if it drains, else a free one. */
static void
slot_take(struct upstream_rt *u, size_t ci, const struct sockaddr_storage *sa,
    socklen_t len)
{
	size_t i, end = u->first[ci + 1];
	struct server_rt *s, *free_slot = NULL;
	char ip[INET6_ADDRSTRLEN];

	for (i = u->first[ci]; i < end; i++) {
		s = &u->servers[i];
		if (s->state == ADDR_DRAINING && same_addr(s, sa, len)) {
			s->state = ADDR_LIVE;	/* back before it was gone */
			return;
		}
		if (s->state == ADDR_FREE && free_slot == NULL)
			free_slot = s;
	}
	upstream_addr_str(sa, ip, sizeof(ip));
	if (free_slot == NULL) {
		log_warnx("upstream %s: %s: no room for address %s (at most "
		    "%d live and draining); left out", u->cfg->name,
		    u->cfg->servers[ci].host, ip, UPSTREAM_NAME_SLOTS);
		return;
	}
	memcpy(&free_slot->sa, sa, len);
	free_slot->salen = len;
	if (slot_pin(free_slot) == -1) {
		log_warnx("upstream %s: %s: out of memory", u->cfg->name, ip);
		return;
	}
	free_slot->state = ADDR_LIVE;
	log_info("upstream %s: %s: new address %s", u->cfg->name,
	    u->cfg->servers[ci].host, ip);
}

size_t
upstream_set_addresses(struct upstream_rt *u, size_t ci,
    const struct sockaddr_storage *sa, const socklen_t *len, size_t n)
{
	size_t i, k, end = u->first[ci + 1], live = 0;
	char ip[INET6_ADDRSTRLEN];

	for (i = u->first[ci]; i < end; i++) {
		struct server_rt *s = &u->servers[i];

		slot_reclaim(s);
		if (s->state != ADDR_LIVE)
			continue;
		for (k = 0; k < n && !same_addr(s, &sa[k], len[k]); k++)
			;
		if (k < n)
			continue;
		upstream_addr_str(&s->sa, ip, sizeof(ip));
		log_info("upstream %s: %s: address %s is gone; draining it "
		    "(%d in flight)", u->cfg->name, s->cfg->host, ip,
		    s->inflight);
		slot_drain(s);
	}
	for (k = 0; k < n; k++) {
		for (i = u->first[ci]; i < end; i++)
			if (u->servers[i].state == ADDR_LIVE &&
			    same_addr(&u->servers[i], &sa[k], len[k]))
				break;
		if (i == end)
			slot_take(u, ci, &sa[k], len[k]);
	}
	for (i = u->first[ci]; i < end; i++)
		live += u->servers[i].state == ADDR_LIVE;
	return live;
}

size_t
upstream_live_of(const struct upstream_rt *u, size_t ci)
{
	size_t i, n = 0;

	for (i = u->first[ci]; i < u->first[ci + 1]; i++)
		n += u->servers[i].state == ADDR_LIVE;
	return n;
}

size_t
upstream_addresses_of(const struct upstream_rt *u, size_t ci, int family,
    struct sockaddr_storage *sa, socklen_t *len, size_t max)
{
	size_t i, n = 0;

	for (i = u->first[ci]; i < u->first[ci + 1] && n < max; i++) {
		const struct server_rt *s = &u->servers[i];

		if (s->state != ADDR_LIVE || s->sa.ss_family != family)
			continue;
		memcpy(&sa[n], &s->sa, s->salen);
		len[n++] = s->salen;
	}
	return n;
}

struct server_rt *
upstream_next_address(struct upstream_rt *u, size_t ci, unsigned *turn)
{
	size_t n = u->first[ci + 1] - u->first[ci], k, i;

	for (k = 1; k <= n; k++) {
		i = (*turn + k) % n;
		if (u->servers[u->first[ci] + i].state == ADDR_LIVE) {
			*turn = (unsigned)i;
			return &u->servers[u->first[ci] + i];
		}
	}
	return NULL;
}
