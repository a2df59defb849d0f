/*
 * Metrics: counters, gauges and histograms in one MAP_SHARED segment that
 * the supervisor maps once, before it forks anything, so every worker of
 * every generation (and the admin listener in any of them) sees the same
 * bytes.
 *
 * DESIGN
 * - Stripes.  Each worker writes only its own stripe, with relaxed atomic
 *   loads and stores (plain moves on x86-64): no contention, no locked
 *   instruction per request.  The supervisor hands stripes out at fork
 *   and takes them back when a worker exits; the gauges of a returned
 *   stripe are cleared, its counters stay, and the next worker to get it
 *   adds on.  So a sum over stripes never goes backwards: not across a
 *   crash, a reload or a rescale.
 * - Names.  Routes (by path), upstreams and servers (by upstream and URL)
 *   get slots by name when a config is loaded, by the supervisor only,
 *   before the generation's workers are forked.  A name keeps its slot
 *   for the life of the process, so a reload that keeps a route keeps its
 *   counters; slots of names that went away are simply not shown.
 * - Readers sum the stripes up to the high-water mark; values may be a
 *   request or two apart from each other, as with any scrape.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "gateway/config/config.h"
#include "gateway/config/shared.h"
#include "gateway/metrics/metrics.h"
#include "gateway/upstream/breaker.h"
#include "lib/log.h"
#include "offload/offload.h"
#include "worker/http.h"
#include "worker/loopwatch.h"
#include "worker/worker.h"

#define M_STRIPES	(3 * 256)	/* 3 generations of CONFIG_MAX_WORKERS */
#define M_ROUTES	128
#define M_UPSTREAMS	64
#define M_SERVERS	256
#define M_CODES		16		/* distinct status codes per route */
#define M_KINDS		8
#define M_STATUSES	7		/* enum job_status */
#define NAME_MAX_LEN	120
#define SLOT_UNROUTED	0	/* 404, 405, refused before routing */
#define SLOT_HEALTH	1	/* server.health_path */

/* Request and upstream durations, seconds (Prometheus' defaults plus a
 * finer start: a gateway's answers are often under 5 ms). */
static const double dur_le[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define DUR_BUCKETS	(sizeof(dur_le) / sizeof(dur_le[0]) + 1)
/* Event-loop lag, seconds. */
static const double lag_le[] = { 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1 };
#define LAG_BUCKETS	(sizeof(lag_le) / sizeof(lag_le[0]) + 1)

typedef _Atomic uint64_t counter;

/* Appends a string literal. */
#define LIT(b, s)	buf_append((b), (s), sizeof(s) - 1)

struct m_hist {
	counter		 b[DUR_BUCKETS];
	counter		 sum_us;
};

struct m_route {
	_Atomic uint32_t code[M_CODES];	/* 0: free */
	counter		 code_n[M_CODES];
	counter		 other[6];	/* codes beyond M_CODES, by class */
	counter		 limited;	/* refused by rate_limit */
	struct m_hist	 dur;
};

struct m_upstream {
	counter		 retries;
	struct m_hist	 dur;
	_Atomic uint32_t waiting;	/* gauges */
	_Atomic uint32_t in_flight;
};

struct m_server {
	counter		 outcome[MO_COUNT];
	counter		 dns[2];		/* lookups: ok, failed */
	_Atomic uint32_t addresses;		/* gauge: live, this worker */
};

struct m_stripe {
	_Atomic int32_t	 pid;		/* 0: free */
	_Atomic uint32_t generation;
	_Atomic int32_t	 index;
	_Atomic uint32_t connections;
	_Atomic uint32_t tunnels;
	counter		 tunnels_ended[MT_COUNT];
	counter		 tunnel_bytes[2];	/* to the upstream, client */
	counter		 lag[LAG_BUCKETS];
	counter		 lag_sum_us;
	counter		 slow[LW_COUNT];	/* callbacks over log.slow_callback */
	_Atomic int32_t	 in_flight;	/* requests begun, not ended */
	counter		 requests;
	counter		 redis_failures;
	counter		 tracing[3];	/* exported, dropped, failed */
	counter		 jobs[M_KINDS][M_STATUSES];
	_Atomic uint32_t off_queued;
	_Atomic uint32_t off_running;
	struct m_route	 routes[M_ROUTES];
	struct m_upstream upstreams[M_UPSTREAMS];
	struct m_server	 servers[M_SERVERS];
};

struct m_names {
	char		 route[M_ROUTES][NAME_MAX_LEN];
	char		 upstream[M_UPSTREAMS][NAME_MAX_LEN];
	char		 server[M_SERVERS][NAME_MAX_LEN];
	int		 server_up[M_SERVERS];
	int		 nroutes, nupstreams, nservers;
};

struct m_segment {
	counter		 reloads_ok;
	counter		 reloads_failed;
	_Atomic int32_t	 hwm;		/* stripes ever used */
	uint64_t	 started;	/* CLOCK_REALTIME seconds */
	struct m_names	 names;
	struct m_stripe	 stripes[M_STRIPES];
};

static struct m_segment *seg;
static struct m_stripe *me;

/* -- writing ------------------------------------------------------------- */

static inline void
inc(counter *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed)
	    + n, memory_order_relaxed);
}

static inline uint64_t
get(const counter *c)
{
	return atomic_load_explicit((counter *)c, memory_order_relaxed);
}

static void
hist_add(struct m_hist *h, uint64_t us)
{
	double s = (double)us / 1e6;
	size_t i;

	for (i = 0; i < DUR_BUCKETS - 1 && s > dur_le[i]; i++)
		;
	inc(&h->b[i], 1);
	inc(&h->sum_us, us);
}

int
metrics_init(void)
{
	void *p = mmap(NULL, sizeof(*seg), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_warn("metrics: cannot map %zu bytes", sizeof(*seg));
		return -1;
	}
	seg = p;
	seg->started = (uint64_t)time(NULL);
	/* Slots 0 and 1: requests no route took. */
	snprintf(seg->names.route[SLOT_UNROUTED], NAME_MAX_LEN, "(none)");
	snprintf(seg->names.route[SLOT_HEALTH], NAME_MAX_LEN, "(health)");
	seg->names.nroutes = 2;
	return 0;
}

/* The slot of name in a table of n (adding it), or -1 if full. */
static int
name_slot(char (*tab)[NAME_MAX_LEN], int *n, int max, const char *name,
    const int *also, int also_want)
{
	int i;

	for (i = 0; i < *n; i++)
		if ((also == NULL || also[i] == also_want) &&
		    strncmp(tab[i], name, NAME_MAX_LEN - 1) == 0)
			return i;
	if (*n == max)
		return -1;
	snprintf(tab[*n], NAME_MAX_LEN, "%s", name);
	return (*n)++;
}

void
metrics_assign(struct config *cfg)
{
	struct m_names *nm;
	size_t i, j;

	for (i = 0; i < cfg->nroutes; i++)
		cfg->routes[i].mslot = -1;
	for (i = 0; i < cfg->nupstreams; i++) {
		cfg->upstreams[i].mslot = -1;
		for (j = 0; j < cfg->upstreams[i].nservers; j++)
			cfg->upstreams[i].servers[j].mslot = -1;
	}
	if (seg == NULL)
		return;
	nm = &seg->names;
	for (i = 0; i < cfg->nroutes; i++)
		cfg->routes[i].mslot = name_slot(nm->route, &nm->nroutes,
		    M_ROUTES, cfg->routes[i].path, NULL, 0);
	for (i = 0; i < cfg->nupstreams; i++) {
		struct upstream_cfg *u = &cfg->upstreams[i];

		u->mslot = name_slot(nm->upstream, &nm->nupstreams,
		    M_UPSTREAMS, u->name, NULL, 0);
		for (j = 0; u->mslot >= 0 && j < u->nservers; j++) {
			int k = name_slot(nm->server, &nm->nservers,
			    M_SERVERS, u->servers[j].url, nm->server_up,
			    u->mslot);

			if (k >= 0)
				nm->server_up[k] = u->mslot;
			u->servers[j].mslot = k;
		}
	}
}

int
metrics_stripe_take(void)
{
	int i;

	if (seg == NULL)
		return -1;
	for (i = 0; i < M_STRIPES; i++)
		if (atomic_load(&seg->stripes[i].pid) == 0) {
			/* Taken until metrics_stripe_own() names the pid. */
			atomic_store(&seg->stripes[i].pid, -1);
			if (i + 1 > atomic_load(&seg->hwm))
				atomic_store(&seg->hwm, i + 1);
			return i;
		}
	return -1;
}

void
metrics_stripe_own(int i, pid_t pid, unsigned gen, int index)
{
	if (seg == NULL || i < 0)
		return;
	atomic_store(&seg->stripes[i].generation, gen);
	atomic_store(&seg->stripes[i].index, index);
	atomic_store(&seg->stripes[i].pid, (int32_t)pid);
}

void
metrics_stripe_release(int i)
{
	struct m_stripe *s;
	int j;

	if (seg == NULL || i < 0)
		return;
	s = &seg->stripes[i];
	/* Per-worker numbers go with the worker; the counters that sum
	 * into routes, upstreams and jobs stay. */
	memset(s->lag, 0, sizeof(s->lag));
	atomic_store(&s->lag_sum_us, 0);
	memset(s->slow, 0, sizeof(s->slow));
	atomic_store(&s->in_flight, 0);
	atomic_store(&s->requests, 0);
	atomic_store(&s->connections, 0);
	atomic_store(&s->tunnels, 0);
	atomic_store(&s->off_queued, 0);
	atomic_store(&s->off_running, 0);
	for (j = 0; j < M_UPSTREAMS; j++) {
		atomic_store(&s->upstreams[j].waiting, 0);
		atomic_store(&s->upstreams[j].in_flight, 0);
	}
	for (j = 0; j < M_SERVERS; j++)
		atomic_store(&s->servers[j].addresses, 0);
	atomic_store(&s->pid, 0);
}

void
metrics_reload(bool ok)
{
	if (seg != NULL)
		inc(ok ? &seg->reloads_ok : &seg->reloads_failed, 1);
}

void
metrics_attach(int i)
{
	me = seg != NULL && i >= 0 && i < M_STRIPES ? &seg->stripes[i] : NULL;
}

void
metrics_request(const struct request *r)
{
	struct m_route *m;
	struct timespec now;
	uint64_t us;
	uint32_t code = (uint32_t)r->status;
	int slot = r->route != NULL ? r->route->mslot : SLOT_UNROUTED, i;
	const char *hp;

	if (me == NULL)
		return;
	hp = worker.cfg->server.health_path;
	inc(&me->requests, 1);
	if (r->route == NULL && hp != NULL && r->head.path != NULL &&
	    strlen(hp) == r->head.path_len &&
	    memcmp(hp, r->head.path, r->head.path_len) == 0)
		slot = SLOT_HEALTH;
	if (slot < 0)
		return;
	m = &me->routes[slot];
	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (uint64_t)(now.tv_sec - r->start.tv_sec) * 1000000 +
	    (uint64_t)((now.tv_nsec - r->start.tv_nsec) / 1000);
	hist_add(&m->dur, us);
	for (i = 0; i < M_CODES; i++) {
		uint32_t c = atomic_load_explicit(&m->code[i],
		    memory_order_relaxed);

		if (c == code) {
			inc(&m->code_n[i], 1);
			return;
		}
		if (c == 0) {
			inc(&m->code_n[i], 1);
			atomic_store_explicit(&m->code[i], code,
			    memory_order_release);
			return;
		}
	}
	inc(&m->other[code / 100 <= 5 ? code / 100 : 0], 1);
}

void
metrics_try(int upstream, int server, enum m_outcome o, uint64_t us,
    bool retry)
{
	if (me == NULL || upstream < 0)
		return;
	if (retry)
		inc(&me->upstreams[upstream].retries, 1);
	hist_add(&me->upstreams[upstream].dur, us);
	if (server >= 0)
		inc(&me->servers[server].outcome[o], 1);
}

void
metrics_dns(int server, bool ok, unsigned live)
{
	if (me == NULL || server < 0)
		return;
	inc(&me->servers[server].dns[ok ? 0 : 1], 1);
	atomic_store_explicit(&me->servers[server].addresses, live,
	    memory_order_relaxed);
}

void
metrics_redis_failure(void)
{
	if (me != NULL)
		inc(&me->redis_failures, 1);
}

void
metrics_tracing(uint64_t exported, uint64_t dropped, uint64_t failed)
{
	if (me == NULL)
		return;
	if (exported > 0)
		inc(&me->tracing[0], exported);
	if (dropped > 0)
		inc(&me->tracing[1], dropped);
	if (failed > 0)
		inc(&me->tracing[2], failed);
}

void
metrics_rate_limited(int route)
{
	if (me != NULL && route >= 0 && route < M_ROUTES)
		inc(&me->routes[route].limited, 1);
}

void
metrics_connections(int n)
{
	if (me != NULL)
		atomic_store_explicit(&me->connections, (uint32_t)n,
		    memory_order_relaxed);
}

static const char *const tunnel_end_names[MT_COUNT] = {
	[MT_CLIENT_CLOSED] = "client_closed",
	[MT_UPSTREAM_CLOSED] = "upstream_closed",
	[MT_IDLE_TIMEOUT] = "idle_timeout",
	[MT_DRAINED] = "drained",
	[MT_ERROR] = "error",
};

const char *
m_tunnel_end_name(enum m_tunnel_end e)
{
	return e < MT_COUNT ? tunnel_end_names[e] : "error";
}

void
metrics_tunnels(int n)
{
	if (me != NULL)
		atomic_store_explicit(&me->tunnels, (uint32_t)n,
		    memory_order_relaxed);
}

void
metrics_tunnel_closed(enum m_tunnel_end e, uint64_t to_upstream,
    uint64_t to_client)
{
	if (me == NULL || e >= MT_COUNT)
		return;
	inc(&me->tunnels_ended[e], 1);
	inc(&me->tunnel_bytes[0], to_upstream);
	inc(&me->tunnel_bytes[1], to_client);
}

void
metrics_lag(uint64_t us)
{
	double s = (double)us / 1e6;
	size_t i;

	if (me == NULL)
		return;
	for (i = 0; i < LAG_BUCKETS - 1 && s > lag_le[i]; i++)
		;
	inc(&me->lag[i], 1);
	inc(&me->lag_sum_us, us);
}

void
metrics_slow_callback(unsigned kind)
{
	if (me != NULL && kind < LW_COUNT)
		inc(&me->slow[kind], 1);
}

/* Only this worker writes it: a relaxed load and store, no lock. */
void
metrics_in_flight(int delta)
{
	if (me != NULL)
		atomic_store_explicit(&me->in_flight, atomic_load_explicit(
		    &me->in_flight, memory_order_relaxed) + delta,
		    memory_order_relaxed);
}

void
metrics_upstream_queue(int upstream, uint32_t waiting, uint32_t in_flight)
{
	if (me == NULL || upstream < 0)
		return;
	atomic_store_explicit(&me->upstreams[upstream].waiting, waiting,
	    memory_order_relaxed);
	atomic_store_explicit(&me->upstreams[upstream].in_flight, in_flight,
	    memory_order_relaxed);
}

void
metrics_offload_job(unsigned kind, int status)
{
	if (me == NULL || kind >= M_KINDS || status < 0 ||
	    status >= M_STATUSES)
		return;
	inc(&me->jobs[kind][status], 1);
}

void
metrics_offload_queue(uint32_t queued, uint32_t running)
{
	if (me == NULL)
		return;
	atomic_store_explicit(&me->off_queued, queued, memory_order_relaxed);
	atomic_store_explicit(&me->off_running, running, memory_order_relaxed);
}

/* -- reading ------------------------------------------------------------- */

static int
hwm(void)
{
	int n = atomic_load(&seg->hwm);

	return n < M_STRIPES ? n : M_STRIPES;
}

/* Label values: backslash, quote and newline escaped. */
static void
put_label(struct buf *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			LIT(b, "\\");
		if (*v == '\n') {
			LIT(b, "\\n");
			continue;
		}
		buf_append(b, v, 1);
	}
}

static void
help(struct buf *b, const char *name, const char *type, const char *text)
{
	buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static const char *const outcome_names[MO_COUNT] = { "2xx", "3xx", "4xx",
    "5xx", "connect_failure", "timeout", "reset", "invalid", "other" };

static const char *const job_kind_names[M_KINDS] = { "", "gzip", "crypt",
    "hmac", "json_merge", "", "", "" };

static const char *const job_outcome_names[M_STATUSES] = { "ok",
    "bad_input", "failed", "unknown_kind", "timeout", "helper_lost",
    "stopped" };

/* Sums a histogram over live and dead stripes. */
static void
hist_sum(struct m_hist *out, const struct m_hist *(*pick)(int, const void *),
    const void *arg)
{
	int i;
	size_t k;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < hwm(); i++) {
		const struct m_hist *h = pick(i, arg);

		for (k = 0; k < DUR_BUCKETS; k++)
			inc(&out->b[k], get(&h->b[k]));
		inc(&out->sum_us, get(&h->sum_us));
	}
}

static void
hist_print(struct buf *b, const char *name, const char *label,
    const char *value, const struct m_hist *h)
{
	uint64_t cum = 0;
	size_t k;

	for (k = 0; k < DUR_BUCKETS; k++) {
		cum += get(&h->b[k]);
		buf_appendf(b, "%s_bucket{%s=\"", name, label);
		put_label(b, value);
		if (k < DUR_BUCKETS - 1)
			buf_appendf(b, "\",le=\"%g\"} %llu\n", dur_le[k],
			    (unsigned long long)cum);
		else
			buf_appendf(b, "\",le=\"+Inf\"} %llu\n",
			    (unsigned long long)cum);
	}
	buf_appendf(b, "%s_sum{%s=\"", name, label);
	put_label(b, value);
	buf_appendf(b, "\"} %.6f\n%s_count{%s=\"", (double)get(&h->sum_us) /
	    1e6, name, label);
	put_label(b, value);
	buf_appendf(b, "\"} %llu\n", (unsigned long long)cum);
}

static const struct m_hist *
pick_route(int i, const void *arg)
{
	return &seg->stripes[i].routes[*(const int *)arg].dur;
}

static const struct m_hist *
pick_upstream(int i, const void *arg)
{
	return &seg->stripes[i].upstreams[*(const int *)arg].dur;
}

/* Per code totals of route slot rs, into n[0..600). */
static void
route_codes(int rs, uint64_t *n)
{
	int i, k;

	memset(n, 0, 600 * sizeof(*n));
	for (i = 0; i < hwm(); i++) {
		const struct m_route *m = &seg->stripes[i].routes[rs];

		for (k = 0; k < M_CODES; k++) {
			uint32_t c = atomic_load_explicit(
			    (_Atomic uint32_t *)&m->code[k],
			    memory_order_acquire);

			if (c == 0)
				break;
			if (c < 600)
				n[c] += get(&m->code_n[k]);
		}
	}
}

static uint64_t
route_other(int rs, int cls)
{
	uint64_t n = 0;
	int i;

	for (i = 0; i < hwm(); i++)
		n += get(&seg->stripes[i].routes[rs].other[cls]);
	return n;
}

/* The route slots to show: the two specials, then cfg's routes. */
static size_t
shown_routes(const struct config *cfg, int *slots, const char **labels,
    size_t max)
{
	size_t n = 0, r;

	slots[n] = SLOT_UNROUTED;
	labels[n++] = seg->names.route[SLOT_UNROUTED];
	slots[n] = SLOT_HEALTH;
	labels[n++] = seg->names.route[SLOT_HEALTH];
	for (r = 0; r < cfg->nroutes && n < max; r++) {
		size_t k;

		if (cfg->routes[r].mslot < 0)
			continue;
		/* Routes with the same path share a slot: once. */
		for (k = 2; k < n && slots[k] != cfg->routes[r].mslot; k++)
			;
		if (k < n)
			continue;
		slots[n] = cfg->routes[r].mslot;
		labels[n++] = cfg->routes[r].path;
	}
	return n;
}

static void
prom_requests(struct buf *b, const struct config *cfg)
{
	const char *labels[M_ROUTES + 2];
	int slots[M_ROUTES + 2];
	size_t r, nr = shown_routes(cfg, slots, labels, M_ROUTES + 2);
	uint64_t n[600];
	struct m_hist h;
	int c;

	help(b, "agate_requests_total", "counter", "Requests answered, by "
	    "route (its path; \"(none)\" when no route took it, "
	    "\"(health)\" for the health path) and status code.");
	for (r = 0; r < nr; r++) {
		route_codes(slots[r], n);
		for (c = 100; c < 600; c++) {
			if (n[c] == 0)
				continue;
			LIT(b, "agate_requests_total{route=\"");
			put_label(b, labels[r]);
			buf_appendf(b, "\",code=\"%d\"} %llu\n", c,
			    (unsigned long long)n[c]);
		}
		for (c = 1; c <= 5; c++) {
			uint64_t o = route_other(slots[r], c);

			if (o == 0)
				continue;
			LIT(b, "agate_requests_total{route=\"");
			put_label(b, labels[r]);
			buf_appendf(b, "\",code=\"%dxx\"} %llu\n", c,
			    (unsigned long long)o);
		}
	}
	help(b, "agate_rate_limited_total", "counter", "Requests refused "
	    "(429) by the route's rate limit.");
	for (r = 2; r < nr; r++) {
		uint64_t lim = 0;
		int i;

		for (i = 0; i < hwm(); i++)
			lim += get(&seg->stripes[i].routes[slots[r]].limited);
		LIT(b, "agate_rate_limited_total{route=\"");
		put_label(b, labels[r]);
		buf_appendf(b, "\"} %llu\n", (unsigned long long)lim);
	}
	help(b, "agate_request_duration_seconds", "histogram", "Time from "
	    "the request head to the end of the answer, by route.");
	for (r = 2; r < nr; r++) {
		hist_sum(&h, pick_route, &slots[r]);
		hist_print(b, "agate_request_duration_seconds", "route",
		    labels[r], &h);
	}
}

/* Whether server s of upstream u is listed earlier with the same URL. */
static bool
server_repeated(const struct upstream_cfg *u, size_t s)
{
	size_t k;

	for (k = 0; k < s; k++)
		if (strcmp(u->servers[k].url, u->servers[s].url) == 0)
			return true;
	return false;
}

static void
prom_upstreams(struct buf *b, const struct config *cfg)
{
	struct m_hist h;
	size_t u, s;
	int i, o;

	help(b, "agate_upstream_requests_total", "counter", "Upstream tries "
	    "by upstream, server and outcome (the answer's status class, or "
	    "how the try failed).");
	for (u = 0; u < cfg->nupstreams; u++)
		for (s = 0; s < cfg->upstreams[u].nservers; s++) {
			int ss = cfg->upstreams[u].servers[s].mslot;

			if (ss < 0 || server_repeated(&cfg->upstreams[u], s))
				continue;
			for (o = 0; o < MO_COUNT; o++) {
				uint64_t n = 0;

				for (i = 0; i < hwm(); i++)
					n += get(&seg->stripes[i].servers[ss]
					    .outcome[o]);
				LIT(b, "agate_upstream_requests_total"
				    "{upstream=\"");
				put_label(b, cfg->upstreams[u].name);
				LIT(b, "\",server=\"");
				put_label(b, cfg->upstreams[u].servers[s].url);
				buf_appendf(b, "\",outcome=\"%s\"} %llu\n",
				    outcome_names[o], (unsigned long long)n);
			}
		}
	help(b, "agate_upstream_retries_total", "counter", "Tries that were "
	    "retries, by upstream.");
	for (u = 0; u < cfg->nupstreams; u++) {
		int us = cfg->upstreams[u].mslot;
		uint64_t n = 0;

		if (us < 0)
			continue;
		for (i = 0; i < hwm(); i++)
			n += get(&seg->stripes[i].upstreams[us].retries);
		LIT(b, "agate_upstream_retries_total{upstream=\"");
		put_label(b, cfg->upstreams[u].name);
		buf_appendf(b, "\"} %llu\n", (unsigned long long)n);
	}
	help(b, "agate_upstream_duration_seconds", "histogram", "Time from "
	    "the start of a try to the upstream's answer head (or the "
	    "failure), by upstream.");
	for (u = 0; u < cfg->nupstreams; u++) {
		int us = cfg->upstreams[u].mslot;

		if (us < 0)
			continue;
		hist_sum(&h, pick_upstream, &us);
		hist_print(b, "agate_upstream_duration_seconds", "upstream",
		    cfg->upstreams[u].name, &h);
	}
}

/* Gauges of the servers in cfg's generation: breaker and health. */
static void
prom_servers(struct buf *b, const struct config *cfg)
{
	static const char *const names[] = { "agate_upstream_breaker_open",
	    "agate_upstream_healthy" };
	static const char *const helps[] = { "1 while the server's circuit "
	    "breaker is open or half-open.", "1 while active health checks "
	    "(if any) count the server up." };
	size_t u, s;
	int g;

	for (g = 0; g < 2; g++) {
		help(b, names[g], "gauge", helps[g]);
		for (u = 0; u < cfg->nupstreams; u++)
			for (s = 0; s < cfg->upstreams[u].nservers; s++) {
				const struct upstream_cfg *up =
				    &cfg->upstreams[u];
				struct shared_server *sh =
				    shared_server(cfg, up, s);
				int v;

				if (sh == NULL || server_repeated(up, s))
					continue;
				v = g == 0 ? breaker_state(&sh->breaker,
				    NULL) != BREAKER_CLOSED :
				    atomic_load(&sh->down) == 0;
				buf_appendf(b, "%s{upstream=\"", names[g]);
				put_label(b, up->name);
				LIT(b, "\",server=\"");
				put_label(b, up->servers[s].url);
				buf_appendf(b, "\"} %d\n", v);
			}
	}
}

static void
prom_upstream_gauges(struct buf *b, const struct config *cfg)
{
	size_t u;
	int i, k;

	for (k = 0; k < 2; k++) {
		help(b, k ? "agate_upstream_in_flight" :
		    "agate_upstream_queue_depth", "gauge", k ? "Requests in "
		    "flight to the upstream, all workers." : "Requests waiting "
		    "for a max_concurrent slot, all workers.");
		for (u = 0; u < cfg->nupstreams; u++) {
			int us = cfg->upstreams[u].mslot;
			uint64_t n = 0;

			if (us < 0)
				continue;
			for (i = 0; i < hwm(); i++) {
				const struct m_upstream *m =
				    &seg->stripes[i].upstreams[us];

				if (atomic_load(&seg->stripes[i].pid) <= 0)
					continue;
				n += atomic_load(k ? &m->in_flight :
				    &m->waiting);
			}
			buf_appendf(b, "%s{upstream=\"", k ?
			    "agate_upstream_in_flight" :
			    "agate_upstream_queue_depth");
			put_label(b, cfg->upstreams[u].name);
			buf_appendf(b, "\"} %llu\n", (unsigned long long)n);
		}
	}
}

/* Tunnels after a 101 (WebSocket): open now, ended, bytes carried. */
static void
prom_tunnels(struct buf *b)
{
	static const char *const dir[2] = { "to_upstream", "to_client" };
	uint64_t ended[MT_COUNT] = { 0 }, bytes[2] = { 0 };
	int i, k;

	help(b, "agate_tunnels_open", "gauge", "Open tunnels (WebSocket and "
	    "other Upgrades), by worker (its pid).");
	for (i = 0; i < hwm(); i++) {
		struct m_stripe *s = &seg->stripes[i];
		int pid = atomic_load(&s->pid);

		for (k = 0; k < MT_COUNT; k++)
			ended[k] += get(&s->tunnels_ended[k]);
		bytes[0] += get(&s->tunnel_bytes[0]);
		bytes[1] += get(&s->tunnel_bytes[1]);
		if (pid > 0)
			buf_appendf(b, "agate_tunnels_open{worker=\"%d\"} %u\n",
			    pid, atomic_load(&s->tunnels));
	}
	help(b, "agate_tunnels_total", "counter", "Tunnels closed, by how "
	    "they ended.");
	for (k = 0; k < MT_COUNT; k++)
		buf_appendf(b, "agate_tunnels_total{outcome=\"%s\"} %llu\n",
		    tunnel_end_names[k], (unsigned long long)ended[k]);
	help(b, "agate_tunnel_bytes_total", "counter", "Bytes carried by "
	    "closed tunnels, by direction.");
	for (k = 0; k < 2; k++)
		buf_appendf(b, "agate_tunnel_bytes_total{direction=\"%s\"} "
		    "%llu\n", dir[k], (unsigned long long)bytes[k]);
}

/* Only the kinds that happened: most workers never see one. */
static void
prom_slow_callbacks(struct buf *b)
{
	int i, k;

	help(b, "agate_event_loop_slow_callbacks_total", "counter", "Loop "
	    "callbacks that took longer than log.slow_callback, by worker "
	    "(its pid) and kind.");
	for (i = 0; i < hwm(); i++) {
		struct m_stripe *s = &seg->stripes[i];
		int pid = atomic_load(&s->pid);

		for (k = 0; pid > 0 && k < LW_COUNT; k++)
			if (get(&s->slow[k]) > 0)
				buf_appendf(b, "agate_event_loop_slow_callbacks_"
				    "total{worker=\"%d\",kind=\"%s\"} %llu\n",
				    pid, loopwatch_kind_name(k),
				    (unsigned long long)get(&s->slow[k]));
	}
}

static void
prom_workers(struct buf *b)
{
	int i;
	size_t k;

	help(b, "agate_connections", "gauge", "Open client connections, by "
	    "worker (its pid).");
	for (i = 0; i < hwm(); i++) {
		struct m_stripe *s = &seg->stripes[i];
		int pid = atomic_load(&s->pid);

		if (pid > 0)
			buf_appendf(b, "agate_connections{worker=\"%d\"} %u\n",
			    pid, atomic_load(&s->connections));
	}
	prom_tunnels(b);
	help(b, "agate_event_loop_lag_seconds", "histogram", "How late a "
	    "100 ms timer fires on each worker's loop, by worker (its pid).");
	for (i = 0; i < hwm(); i++) {
		struct m_stripe *s = &seg->stripes[i];
		int pid = atomic_load(&s->pid);
		uint64_t cum = 0;

		if (pid <= 0)
			continue;
		for (k = 0; k < LAG_BUCKETS; k++) {
			cum += get(&s->lag[k]);
			if (k < LAG_BUCKETS - 1)
				buf_appendf(b, "agate_event_loop_lag_seconds_"
				    "bucket{worker=\"%d\",le=\"%g\"} %llu\n",
				    pid, lag_le[k], (unsigned long long)cum);
			else
				buf_appendf(b, "agate_event_loop_lag_seconds_"
				    "bucket{worker=\"%d\",le=\"+Inf\"} %llu\n",
				    pid, (unsigned long long)cum);
		}
		buf_appendf(b, "agate_event_loop_lag_seconds_sum{worker=\"%d\"}"
		    " %.6f\nagate_event_loop_lag_seconds_count{worker=\"%d\"} "
		    "%llu\n", pid, (double)get(&s->lag_sum_us) / 1e6, pid,
		    (unsigned long long)cum);
	}
	prom_slow_callbacks(b);
}

static void
prom_offload(struct buf *b)
{
	uint64_t q = 0, run = 0;
	int i, k, st;

	help(b, "agate_offload_jobs_total", "counter", "Offload jobs by kind "
	    "and outcome (inline runs not counted).");
	for (k = 1; k < M_KINDS; k++) {
		if (job_kind_names[k][0] == '\0')
			continue;
		for (st = 0; st < M_STATUSES; st++) {
			uint64_t n = 0;

			for (i = 0; i < hwm(); i++)
				n += get(&seg->stripes[i].jobs[k][st]);
			buf_appendf(b, "agate_offload_jobs_total{kind=\"%s\","
			    "outcome=\"%s\"} %llu\n", job_kind_names[k],
			    job_outcome_names[st], (unsigned long long)n);
		}
	}
	for (i = 0; i < hwm(); i++)
		if (atomic_load(&seg->stripes[i].pid) > 0) {
			q += atomic_load(&seg->stripes[i].off_queued);
			run += atomic_load(&seg->stripes[i].off_running);
		}
	help(b, "agate_offload_queue_depth", "gauge", "Offload jobs waiting "
	    "for a helper, all workers.");
	buf_appendf(b, "agate_offload_queue_depth %llu\n",
	    (unsigned long long)q);
	help(b, "agate_offload_running", "gauge", "Offload jobs running in "
	    "helpers, all workers.");
	buf_appendf(b, "agate_offload_running %llu\n",
	    (unsigned long long)run);
}

static int
live_workers(void)
{
	int i, n = 0;

	for (i = 0; i < hwm(); i++)
		n += atomic_load(&seg->stripes[i].pid) > 0;
	return n;
}

/* Lookups of named servers (a sum), and their addresses: the most any
 * running worker has (each looks up on its own). */
static void
prom_dns(struct buf *b, const struct config *cfg)
{
	static const char *const result[] = { "ok", "failed" };
	size_t u, s;
	int i, k;

	for (k = 0; k < 3; k++) {
		if (k == 0)
			help(b, "agate_dns_lookups_total", "counter", "Lookups "
			    "of upstream server names, by result (failed: "
			    "the last good addresses were kept).");
		else if (k == 2)
			help(b, "agate_upstream_addresses", "gauge", "Addresses "
			    "a server name has now (the most of any worker).");
		for (u = 0; u < cfg->nupstreams; u++)
			for (s = 0; s < cfg->upstreams[u].nservers; s++) {
				const struct upstream_cfg *up =
				    &cfg->upstreams[u];
				int ss = up->servers[s].mslot;
				uint64_t n = 0;

				if (ss < 0 || !up->servers[s].named ||
				    server_repeated(up, s))
					continue;
				for (i = 0; i < hwm(); i++) {
					const struct m_server *m =
					    &seg->stripes[i].servers[ss];
					uint64_t v;

					if (k < 2) {
						n += get(&m->dns[k]);
						continue;
					}
					v = atomic_load(&m->addresses);
					if (atomic_load(&seg->stripes[i].pid) >
					    0 && v > n)
						n = v;
				}
				buf_appendf(b, "%s{upstream=\"", k < 2 ?
				    "agate_dns_lookups_total" :
				    "agate_upstream_addresses");
				put_label(b, up->name);
				LIT(b, "\",name=\"");
				put_label(b, up->servers[s].host);
				if (k < 2)
					buf_appendf(b, "\",result=\"%s",
					    result[k]);
				buf_appendf(b, "\"} %llu\n",
				    (unsigned long long)n);
			}
	}
}

static void
prom_tracing(struct buf *b)
{
	static const char *const names[3][2] = {
		{ "agate_tracing_spans_exported_total",
		    "Spans the collector accepted." },
		{ "agate_tracing_spans_dropped_total", "Spans dropped: the "
		    "queue was full or their export failed." },
		{ "agate_tracing_exports_failed_total", "Span exports that "
		    "failed (collector down, slow or refusing)." },
	};
	uint64_t n;
	int i, k;

	for (k = 0; k < 3; k++) {
		for (n = 0, i = 0; i < hwm(); i++)
			n += get(&seg->stripes[i].tracing[k]);
		help(b, names[k][0], "counter", names[k][1]);
		buf_appendf(b, "%s %llu\n", names[k][0], (unsigned long long)n);
	}
}

void
metrics_prometheus(struct buf *b, const struct config *cfg)
{
	if (seg == NULL) {
		buf_appendf(b, "# metrics are off (no shared segment)\n");
		return;
	}
	prom_requests(b, cfg);
	prom_upstreams(b, cfg);
	prom_servers(b, cfg);
	prom_dns(b, cfg);
	prom_upstream_gauges(b, cfg);
	prom_workers(b);
	prom_offload(b);
	help(b, "agate_config_reloads_total", "counter", "Reloads (HUP), by "
	    "result.");
	buf_appendf(b, "agate_config_reloads_total{result=\"ok\"} %llu\n"
	    "agate_config_reloads_total{result=\"failed\"} %llu\n",
	    (unsigned long long)get(&seg->reloads_ok),
	    (unsigned long long)get(&seg->reloads_failed));
	{
		uint64_t n = 0;
		int i;

		for (i = 0; i < hwm(); i++)
			n += get(&seg->stripes[i].redis_failures);
		help(b, "agate_redis_failures_total", "counter", "Rate-limit "
		    "checks Redis could not answer (on_failure decided).");
		buf_appendf(b, "agate_redis_failures_total %llu\n",
		    (unsigned long long)n);
	}
	prom_tracing(b);
	help(b, "agate_workers", "gauge", "Worker processes alive, all "
	    "generations.");
	buf_appendf(b, "agate_workers %d\n", live_workers());
	help(b, "agate_start_time_seconds", "gauge", "When agate started, "
	    "Unix time.");
	buf_appendf(b, "agate_start_time_seconds %llu\n",
	    (unsigned long long)seg->started);
}

/* -- /status ------------------------------------------------------------- */

static void
json_str(struct buf *b, const char *s)
{
	LIT(b, "\"");
	buf_append_json(b, s, strlen(s));
	LIT(b, "\"");
}

static void
status_routes(struct buf *b, const struct config *cfg)
{
	uint64_t n[600];
	size_t r;
	int c;

	LIT(b, "\"routes\":[");
	for (r = 0; r < cfg->nroutes; r++) {
		const struct route_cfg *rt = &cfg->routes[r];
		uint64_t cls[6] = { 0 }, total = 0;
		struct m_hist h;
		int rs = rt->mslot;

		if (rs >= 0) {
			route_codes(rs, n);
			for (c = 100; c < 600; c++)
				cls[c / 100] += n[c];
			for (c = 1; c <= 5; c++)
				cls[c] += route_other(rs, c);
			hist_sum(&h, pick_route, &rs);
		} else
			memset(&h, 0, sizeof(h));
		for (c = 1; c <= 5; c++)
			total += cls[c];
		buf_appendf(b, "%s{\"path\":", r ? "," : "");
		json_str(b, rt->path);
		buf_appendf(b, ",\"target\":");
		json_str(b, rt->has_fanout ? "fan-out" : rt->upstream_name);
		buf_appendf(b, ",\"requests\":%llu,\"1xx\":%llu,\"2xx\":%llu,"
		    "\"3xx\":%llu,\"4xx\":%llu,\"5xx\":%llu,"
		    "\"mean_ms\":%.3f}", (unsigned long long)total,
		    (unsigned long long)cls[1], (unsigned long long)cls[2],
		    (unsigned long long)cls[3], (unsigned long long)cls[4],
		    (unsigned long long)cls[5], total ? (double)get(&h.sum_us) /
		    1e3 / (double)total : 0.0);
	}
	LIT(b, "]");
}

static void
status_upstreams(struct buf *b, const struct config *cfg)
{
	size_t u, s;
	int i, o;

	LIT(b, ",\"upstreams\":[");
	for (u = 0; u < cfg->nupstreams; u++) {
		const struct upstream_cfg *up = &cfg->upstreams[u];
		uint64_t retries = 0, waiting = 0, flight = 0;

		for (i = 0; up->mslot >= 0 && i < hwm(); i++) {
			const struct m_upstream *m =
			    &seg->stripes[i].upstreams[up->mslot];

			retries += get(&m->retries);
			if (atomic_load(&seg->stripes[i].pid) > 0) {
				waiting += atomic_load(&m->waiting);
				flight += atomic_load(&m->in_flight);
			}
		}
		buf_appendf(b, "%s{\"name\":", u ? "," : "");
		json_str(b, up->name);
		buf_appendf(b, ",\"retries\":%llu,\"queue_depth\":%llu,"
		    "\"in_flight\":%llu,\"servers\":[",
		    (unsigned long long)retries, (unsigned long long)waiting,
		    (unsigned long long)flight);
		for (s = 0; s < up->nservers; s++) {
			struct shared_server *sh = shared_server(cfg, up, s);
			int ss = up->servers[s].mslot;

			buf_appendf(b, "%s{\"url\":", s ? "," : "");
			json_str(b, up->servers[s].url);
			buf_appendf(b, ",\"breaker\":\"%s\",\"healthy\":%s",
			    sh == NULL ? "closed" :
			    breaker_state(&sh->breaker, NULL) == BREAKER_OPEN ?
			    "open" : breaker_state(&sh->breaker, NULL) ==
			    BREAKER_HALF_OPEN ? "half_open" : "closed",
			    sh != NULL && atomic_load(&sh->down) ? "false" :
			    "true");
			for (o = 0; o < MO_COUNT; o++) {
				uint64_t n = 0;

				for (i = 0; ss >= 0 && i < hwm(); i++)
					n += get(&seg->stripes[i].servers[ss]
					    .outcome[o]);
				buf_appendf(b, ",\"%s\":%llu", outcome_names[o],
				    (unsigned long long)n);
			}
			LIT(b, "}");
		}
		LIT(b, "]}");
	}
	LIT(b, "]");
}

/*
 * The 99th percentile of a worker's lag since it started, from the
 * histogram: the upper bound of the bucket that holds it (so an upper
 * estimate, in the buckets' steps; the last bound if it is beyond).
 */
static double
lag_p99_ms(const struct m_stripe *s)
{
	uint64_t n = 0, cum = 0, want;
	size_t k;

	for (k = 0; k < LAG_BUCKETS; k++)
		n += get(&s->lag[k]);
	if (n == 0)
		return 0.0;
	want = n - n / 100;		/* samples at or below the p99 */
	for (k = 0; k < LAG_BUCKETS - 1; k++) {
		cum += get(&s->lag[k]);
		if (cum >= want)
			return lag_le[k] * 1e3;
	}
	return lag_le[LAG_BUCKETS - 2] * 1e3;
}

static void
status_workers(struct buf *b)
{
	int i, n = 0;

	LIT(b, ",\"workers\":[");
	for (i = 0; i < hwm(); i++) {
		struct m_stripe *s = &seg->stripes[i];
		int pid = atomic_load(&s->pid), flight;
		uint64_t samples = 0, slow = 0;
		size_t k;

		if (pid <= 0)
			continue;
		for (k = 0; k < LAG_BUCKETS; k++)
			samples += get(&s->lag[k]);
		for (k = 0; k < LW_COUNT; k++)
			slow += get(&s->slow[k]);
		flight = atomic_load(&s->in_flight);
		buf_appendf(b, "%s{\"pid\":%d,\"generation\":%u,\"index\":%d,"
		    "\"connections\":%u,\"tunnels\":%u,\"requests\":%llu,"
		    "\"in_flight\":%d,\"loop_lag_mean_ms\":%.3f,"
		    "\"loop_lag_p99_ms\":%g,\"slow_callbacks\":%llu,"
		    "\"offload_queued\":%u,\"offload_running\":%u}",
		    n++ ? "," : "", pid, atomic_load(&s->generation),
		    atomic_load(&s->index), atomic_load(&s->connections),
		    atomic_load(&s->tunnels),
		    (unsigned long long)get(&s->requests),
		    flight > 0 ? flight : 0, samples ?
		    (double)get(&s->lag_sum_us) / 1e3 / (double)samples : 0.0,
		    lag_p99_ms(s), (unsigned long long)slow,
		    atomic_load(&s->off_queued), atomic_load(&s->off_running));
	}
	LIT(b, "]");
}

static void
status_offload(struct buf *b)
{
	int i, k, st;

	LIT(b, ",\"offload\":{");
	for (k = 1; k < M_KINDS; k++) {
		if (job_kind_names[k][0] == '\0')
			continue;
		buf_appendf(b, "%s\"%s\":{", k > 1 ? "," : "",
		    job_kind_names[k]);
		for (st = 0; st < M_STATUSES; st++) {
			uint64_t n = 0;

			for (i = 0; i < hwm(); i++)
				n += get(&seg->stripes[i].jobs[k][st]);
			buf_appendf(b, "%s\"%s\":%llu", st ? "," : "",
			    job_outcome_names[st], (unsigned long long)n);
		}
		LIT(b, "}");
	}
	LIT(b, "}");
}

void
metrics_status_json(struct buf *b, const struct config *cfg)
{
	if (seg == NULL) {
		buf_appendf(b, "{\"error\":\"metrics are off\"}\n");
		return;
	}
	buf_appendf(b, "{\"version\":\"%s\",\"pid\":%ld,\"started\":%llu,"
	    "\"uptime_s\":%llu,\"generation\":%u,\"reloads\":{\"ok\":%llu,"
	    "\"failed\":%llu},", PACKAGE_VERSION, (long)getppid(),
	    (unsigned long long)seg->started,
	    (unsigned long long)((uint64_t)time(NULL) - seg->started),
	    worker.generation, (unsigned long long)get(&seg->reloads_ok),
	    (unsigned long long)get(&seg->reloads_failed));
	status_routes(b, cfg);
	status_upstreams(b, cfg);
	status_workers(b);
	status_offload(b);
	LIT(b, "}\n");
}
