/*
 * Retry arithmetic: the wait before each retry and the retry budget.
 * Pure functions over plain structs (tests/unit/test_policy.c); proxy.c
 * decides when to retry and schedules the waits on the event loop.
 */
#ifndef AGATE_RETRY_H
#define AGATE_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/config/config.h"

/* Why a try failed: the retry conditions, and what the breaker counts. */
enum try_fail {
	TRY_CONNECT,	/* connect refused, timed out; TLS handshake failed */
	TRY_TIMEOUT,	/* no whole answer within the try's time */
	TRY_RESET,	/* the connection closed or reset before an answer */
	TRY_INVALID,	/* the answer was not HTTP agate passes on (502) */
	TRY_STATUS,	/* the server answered a status listed for retry */
	TRY_CLIENT,	/* the client's fault (slow or bad body): no retry */
	TRY_LOCAL	/* agate could not make the try (out of memory) */
};

/* Whether retry.conditions lists this failure (an invalid answer counts
 * as the 502 agate would make of it). */
bool	retry_condition(const struct retry_cfg *, enum try_fail, int status);
/* Whether retry.methods lists the method. */
bool	retry_method(const struct retry_cfg *, const char *method,
	    size_t len);
/* The names of the conditions, for logs. */
const char *retry_fail_name(enum try_fail);

/*
 * The wait before retry n (1 = the first retry): backoff doubled n-1
 * times, capped at max_backoff, then jittered into [d/2, d] by r (a
 * uniform random 32-bit number) so that clients that failed together do
 * not come back together ("equal jitter").
 */
uint64_t retry_backoff_ms(const struct retry_cfg *, int n, uint32_t r);

/*
 * The retry budget of one upstream in one worker: retries may add at
 * most `budget` (a share, 0.2 = 20%) on top of the first tries, counted
 * over a sliding window of about RETRY_WINDOW_MS; a few retries at once
 * (RETRY_BUDGET_MIN) are always allowed so that a quiet upstream can
 * still retry its rare failure.
 */
#define RETRY_WINDOW_MS		10000
#define RETRY_BUDGET_MIN	3

struct retry_budget {
	uint64_t	 since;		/* start of the current half */
	uint32_t	 tries[2];	/* first tries: current, previous */
	uint32_t	 retries[2];
	int		 active;	/* retries waiting or in flight */
};

void	retry_budget_try(struct retry_budget *, uint64_t now);
/* Whether one more retry fits; counts it if so (then retry_budget_done()
 * when it has ended). */
bool	retry_budget_take(struct retry_budget *, double budget, uint64_t now);
void	retry_budget_done(struct retry_budget *);

#endif
