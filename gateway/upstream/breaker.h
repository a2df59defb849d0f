/*
 * A circuit breaker for one upstream server, shared by every worker of a
 * generation (it lives in the shared segment, gateway/config/shared.h).
 *
 *   closed --(failures in a row)--> open --(open_for)--> half-open
 *   half-open --(the trial succeeds)--> closed
 *   half-open --(the trial fails)--> open again
 *
 * While open no request goes to the server.  Once open_for has passed,
 * exactly one request (across all workers) is let through as the trial;
 * a trial that never reports (its worker died, its client left) is given
 * up after another open_for and the next request becomes the trial.
 *
 * The state and its time sit in one 64-bit word changed only by
 * compare-and-swap, so workers agree without a lock.  Times are
 * CLOCK_MONOTONIC milliseconds, which all processes share.  Pure logic:
 * the caller passes the time in (tests/unit/test_policy.c).
 */
#ifndef AGATE_BREAKER_H
#define AGATE_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "gateway/config/config.h"

enum breaker_state {
	BREAKER_CLOSED,
	BREAKER_OPEN,		/* until the word's time */
	BREAKER_HALF_OPEN	/* a trial is out since the word's time */
};

struct breaker {
	_Atomic uint64_t	word;	/* time << 2 | state */
	_Atomic uint32_t	fails;	/* consecutive, while closed */
};

enum breaker_verdict {
	BREAKER_PASS,		/* closed: go ahead */
	BREAKER_TRIAL,		/* go ahead as the trial (already taken) */
	BREAKER_BLOCK		/* skip this server */
};

/* What a result did to the breaker, for the log. */
enum breaker_change {
	BREAKER_SAME,
	BREAKER_OPENED,
	BREAKER_REOPENED,	/* the trial failed */
	BREAKER_CLOSED_AGAIN	/* the trial succeeded */
};

enum breaker_state breaker_state(const struct breaker *, uint64_t *time);
/* Whether a request may go to the server now; takes the trial when it
 * is due.  Always BREAKER_PASS when the breaker is not configured. */
enum breaker_verdict breaker_enter(struct breaker *, const struct breaker_cfg *,
	    uint64_t now);
/* Whether breaker_enter() could let a request through now, without
 * taking anything. */
bool	breaker_available(const struct breaker *, const struct breaker_cfg *,
	    uint64_t now);
/* The result of a request let through.  trial: 0, or for the trial the
 * time it was let through (the now of its breaker_enter(), never 0). */
enum breaker_change breaker_record(struct breaker *, const struct breaker_cfg *,
	    bool ok, uint64_t trial, uint64_t now);
/* The trial let through at time trial ended without a result (its client
 * left): the next request may be the trial at once. */
void	breaker_release(struct breaker *, uint64_t trial, uint64_t now);

#endif
