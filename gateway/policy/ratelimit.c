/*
 * Rate limits (route `rate_limit: {rate, burst, key}`, backend local):
 * token buckets that all workers of the machine share, so a limit is one
 * budget however the kernel spreads connections.
 *
 * DESIGN
 * - One MAP_SHARED table, mapped by the supervisor at start and
 *   inherited by every worker of every generation (a reload keeps the
 *   buckets of routes it keeps: the key hashes the route's path).
 * - Open addressing on a 64-bit hash of (route path, key); a lookup
 *   probes PROBE slots.  A slot is taken under its own spinlock, held for
 *   the few instructions of the bucket arithmetic: no syscall, no
 *   allocation, never across a wait.
 * - Bounded: when the probed slots are all taken, the least recently
 *   used of them is given to the new key, so idle keys are evicted first
 *   and a flood of keys cannot grow memory.
 * - The arithmetic is ratelimit_take() (pure, unit-tested): a bucket of
 *   `burst` tokens refilled at `rate` per second; a request takes one.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "gateway/config/config.h"
#include "gateway/metrics/metrics.h"
#include "gateway/policy/ratelimit.h"
#include "gateway/stage.h"
#include "lib/log.h"
#include "worker/http.h"

#define RL_SLOTS	65536		/* power of two; 2.5 MiB */
#define PROBE		8

struct rl_slot {
	_Atomic uint32_t	 lock;
	uint32_t		 pad;
	uint64_t		 key;		/* 0: free */
	struct rl_bucket	 b;
};

static struct rl_slot *table;

int
ratelimit_init(void)
{
	void *p = mmap(NULL, RL_SLOTS * sizeof(struct rl_slot),
	    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_warn("ratelimit: cannot map the bucket table");
		return -1;
	}
	table = p;
	return 0;
}

bool
ratelimit_take(struct rl_bucket *b, uint64_t now_us, double rate, int burst,
    double *remaining, uint64_t *retry_ms)
{
	double tokens;

	/* Workers read the clock at different moments: time never runs
	 * back for a bucket. */
	if (now_us < b->last_us)
		now_us = b->last_us;
	if (b->last_us == 0) {
		tokens = burst;			/* a new bucket is full */
	} else {
		double dt = now_us > b->last_us ?
		    (double)(now_us - b->last_us) / 1e6 : 0.0;

		tokens = b->tokens + dt * rate;
		if (tokens > burst)
			tokens = burst;
	}
	b->last_us = now_us;
	if (tokens >= 1.0) {
		b->tokens = tokens - 1.0;
		*remaining = b->tokens;
		*retry_ms = 0;
		return true;
	}
	b->tokens = tokens;
	*remaining = tokens;
	*retry_ms = (uint64_t)ceil((1.0 - tokens) / rate * 1000.0);
	return false;
}

/* FNV-1a, then a final mix: never 0 (0 marks a free slot). */
static uint64_t
rl_hash(const char *a, size_t alen, const char *b, size_t blen)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < alen; i++)
		h = (h ^ (unsigned char)a[i]) * 1099511628211ULL;
	h = (h ^ 0xff) * 1099511628211ULL;
	for (i = 0; i < blen; i++)
		h = (h ^ (unsigned char)b[i]) * 1099511628211ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h != 0 ? h : 1;
}

/*
 * Held for a few instructions.  A worker killed inside them (kill -9)
 * would leave it taken: after a million spins (milliseconds) the lock
 * is taken over rather than waited on forever.
 */
static void
slot_lock(struct rl_slot *s)
{
	unsigned long spins = 0;

	while (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire))
		if (++spins > 1000000UL) {
			log_warnx("ratelimit: a bucket lock was held too long; "
			    "taking it over");
			return;
		}
}

static void
slot_unlock(struct rl_slot *s)
{
	atomic_store_explicit(&s->lock, 0, memory_order_release);
}

static uint64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

bool
ratelimit_check(const char *route, const char *key, size_t klen,
    double rate, int burst, double *remaining, uint64_t *retry_ms)
{
	uint64_t h = rl_hash(route, strlen(route), key, klen), now = mono_us();
	struct rl_slot *s, *victim = NULL;
	size_t i, idx;
	bool ok;

	if (table == NULL) {
		*remaining = burst;
		*retry_ms = 0;
		return true;		/* no table: no limit (logged once) */
	}
	for (i = 0; i < PROBE; i++) {
		idx = (h + i) & (RL_SLOTS - 1);
		s = &table[idx];
		slot_lock(s);
		if (s->key == h) {
			ok = ratelimit_take(&s->b, now, rate, burst, remaining,
			    retry_ms);
			slot_unlock(s);
			return ok;
		}
		if (s->key == 0) {
			s->key = h;
			memset(&s->b, 0, sizeof(s->b));
			ok = ratelimit_take(&s->b, now, rate, burst, remaining,
			    retry_ms);
			slot_unlock(s);
			return ok;
		}
		if (victim == NULL || s->b.last_us < victim->b.last_us)
			victim = s;
		slot_unlock(s);
	}
	/* All taken: the least recently used of them goes. */
	slot_lock(victim);
	victim->key = h;
	memset(&victim->b, 0, sizeof(victim->b));
	ok = ratelimit_take(&victim->b, now, rate, burst, remaining, retry_ms);
	slot_unlock(victim);
	return ok;
}

/* The key of a request: its client address, or a header's value (the
 * address when the header is missing). */
static const char *
rl_key(const struct request *r, const struct rate_limit_cfg *rl,
    size_t *len)
{
	const struct http_header *h;

	if (rl->key == RL_KEY_HEADER &&
	    (h = req_header(r, rl->key_header)) != NULL) {
		*len = h->value_len;
		return h->value;
	}
	*len = strlen(r->client);
	return r->client;
}

void
ratelimit_headers(struct request *r, double remaining)
{
	const struct rate_limit_cfg *rl = &r->route->rate_limit;
	size_t off = r->resp_extra_len;
	double full = rl->rate > 0 ? (rl->burst - remaining) / rl->rate : 0;
	int n;

	if (remaining < 0)
		remaining = 0;
	n = snprintf(r->resp_extra + off, sizeof(r->resp_extra) - off,
	    "RateLimit-Limit: %d\r\nRateLimit-Remaining: %llu\r\n"
	    "RateLimit-Reset: %llu\r\n", rl->burst,
	    (unsigned long long)remaining,
	    (unsigned long long)ceil(full > 0 ? full : 0));
	if (n > 0 && (size_t)n < sizeof(r->resp_extra) - off)
		r->resp_extra_len += (size_t)n;
	else
		r->resp_extra[off] = '\0';	/* no room: none */
}

void
ratelimit_refuse(struct request *r, uint64_t retry_ms)
{
	const struct rate_limit_cfg *rl = &r->route->rate_limit;
	char extra[256];

	snprintf(extra, sizeof(extra), "Retry-After: %llu\r\n"
	    "RateLimit-Limit: %d\r\nRateLimit-Remaining: 0\r\n"
	    "RateLimit-Reset: %llu\r\nRateLimit-Policy: %d;w=%g\r\n",
	    (unsigned long long)((retry_ms + 999) / 1000), rl->burst,
	    (unsigned long long)((retry_ms + 999) / 1000), rl->burst,
	    rl->rate > 0 ? rl->burst / rl->rate : 0.0);
	metrics_rate_limited(r->route->mslot);
	req_error(r, 429, "rate limit exceeded", extra);
}

static enum stage_result
ratelimit_run(struct request *r)
{
	const struct rate_limit_cfg *rl = &r->route->rate_limit;
	double remaining;
	uint64_t retry_ms;
	const char *key;
	size_t klen;

	key = rl_key(r, rl, &klen);
	if (rl->backend == RL_BACKEND_REDIS)
		return rlredis_request(r, key, klen);
	if (ratelimit_check(r->route->path, key, klen, rl->rate, rl->burst,
	    &remaining, &retry_ms)) {
		ratelimit_headers(r, remaining);
		return STAGE_NEXT;
	}
	ratelimit_refuse(r, retry_ms);
	return STAGE_DONE;
}

static bool
ratelimit_wanted(const struct route_cfg *rt)
{
	return rt->rate_limit.enabled;
}

const struct stage ratelimit_stage = {
	.name = "rate_limit", .wanted = ratelimit_wanted,
	.init = rlredis_init, .fini = rlredis_free, .run = ratelimit_run,
};
