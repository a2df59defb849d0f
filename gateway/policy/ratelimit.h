/*
 * Rate limits shared by all workers (see ratelimit.c).
 */
#ifndef AGATE_RATELIMIT_H
#define AGATE_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct request;

struct rl_bucket {
	double		 tokens;
	uint64_t	 last_us;	/* monotonic; 0: new (full) */
};

/* Maps the shared table (the supervisor, once, before any fork). */
int	ratelimit_init(void);
/*
 * The token-bucket step: refill b for the time since its last use (at
 * most burst tokens), then take one.  True if there was one; else
 * *retry_ms is how long until there is.
 */
bool	ratelimit_take(struct rl_bucket *, uint64_t now_us, double rate,
	    int burst, double *remaining, uint64_t *retry_ms);
/* The same on the shared bucket of (route, key). */
bool	ratelimit_check(const char *route, const char *key, size_t klen,
	    double rate, int burst, double *remaining, uint64_t *retry_ms);
/* RateLimit-Limit/-Remaining/-Reset on the answer of a request let
 * through (after any CORS fields). */
void	ratelimit_headers(struct request *, double remaining);
/* The 429, with Retry-After and the RateLimit-* fields. */
void	ratelimit_refuse(struct request *, uint64_t retry_ms);

/* -- rlredis.c: the Redis backend, one connection per worker ---------- */

struct config;
struct event_base;
enum stage_result;

int	rlredis_init(struct event_base *, const struct config *);
void	rlredis_free(void);
/*
 * The limit of a route with backend redis, as a stage: NEXT, DONE once
 * answered (429, or 503 when Redis is down and on_failure is deny), or
 * WAIT while Redis is asked (stage_resume() follows).
 */
enum stage_result rlredis_request(struct request *, const char *key,
	    size_t klen);

#endif
