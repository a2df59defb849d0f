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
/* The route's limit for r: true to go on, false once answered 429. */
bool	ratelimit_request(struct request *);

#endif
