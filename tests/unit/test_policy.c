/*
 * The pure logic of the upstream policies, with the time passed in:
 *
 *   breaker_*()  the circuit breaker: `failures` in a row open it, it
 *                blocks for open_for, then lets exactly one trial through
 *                whose result closes or reopens it; a trial that never
 *                reports is given up after another open_for, a released
 *                one at once, and a stale trial's result changes nothing.
 *   limiter_*()  max slots, then a FIFO of at most max_queue waiters,
 *                then no; a freed slot goes straight to the first waiter.
 *   retry_*()    the backoff schedule ("equal jitter", capped) and the
 *                retry budget (a floor of RETRY_BUDGET_MIN concurrent
 *                retries, beyond it a share of the first tries over a
 *                rolling window).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <stdlib.h>
#include <stdio.h>

#include "gateway/config/config.h"
#include "gateway/policy/jwt.h"
#include "gateway/policy/ratelimit.h"
#include "gateway/upstream/breaker.h"
#include "gateway/upstream/limiter.h"
#include "gateway/upstream/retry.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* -- circuit breaker ---------------------------------------------------- */

#define FAILURES	3
#define OPEN_FOR	5000
#define T0		1000		/* never 0: 0 means "not a trial" */

static const struct breaker_cfg bcfg = {
	.enabled = true, .failures = FAILURES, .open_for_ms = OPEN_FOR
};

static void
breaker_zero(struct breaker *b)
{
	memset(b, 0, sizeof(*b));
}

static void
assert_state(const struct breaker *b, enum breaker_state st, uint64_t time)
{
	uint64_t t = 0;

	assert_int_equal(breaker_state(b, &t), st);
	assert_int_equal(t, time);
}

/* FAILURES failures in a row at now: the breaker opens until
 * now + OPEN_FOR. */
static void
open_breaker(struct breaker *b, uint64_t now)
{
	int i;

	for (i = 0; i < FAILURES - 1; i++)
		assert_int_equal(breaker_record(b, &bcfg, false, 0, now),
		    BREAKER_SAME);
	assert_int_equal(breaker_record(b, &bcfg, false, 0, now),
	    BREAKER_OPENED);
	assert_state(b, BREAKER_OPEN, now + OPEN_FOR);
}

/* Not configured: everything passes, nothing is counted. */
static void
test_breaker_disabled(void **state)
{
	struct breaker_cfg off = bcfg;
	struct breaker b;
	int i;

	off.enabled = false;
	breaker_zero(&b);
	for (i = 0; i < 10 * FAILURES; i++)
		assert_int_equal(breaker_record(&b, &off, false, 0, T0 + i),
		    BREAKER_SAME);
	assert_int_equal(breaker_state(&b, NULL), BREAKER_CLOSED);
	assert_int_equal(atomic_load(&b.fails), 0);
	assert_int_equal(breaker_enter(&b, &off, T0), BREAKER_PASS);
	assert_true(breaker_available(&b, &off, T0));

	/* Even a breaker whose word says open is ignored when disabled. */
	open_breaker(&b, T0);
	assert_int_equal(breaker_enter(&b, &off, T0 + 1), BREAKER_PASS);
	assert_true(breaker_available(&b, &off, T0 + 1));
	assert_int_equal(breaker_record(&b, &off, true, T0 + 1, T0 + 2),
	    BREAKER_SAME);
	assert_state(&b, BREAKER_OPEN, T0 + OPEN_FOR);
}

/* Exactly `failures` in a row open it, not one fewer. */
static void
test_breaker_opens_after_failures(void **state)
{
	struct breaker b;
	int i;

	breaker_zero(&b);
	assert_int_equal(breaker_enter(&b, &bcfg, T0), BREAKER_PASS);
	for (i = 0; i < FAILURES - 1; i++) {
		assert_int_equal(breaker_record(&b, &bcfg, false, 0, T0 + i),
		    BREAKER_SAME);
		assert_int_equal(breaker_state(&b, NULL), BREAKER_CLOSED);
		assert_int_equal(breaker_enter(&b, &bcfg, T0 + i),
		    BREAKER_PASS);
		assert_true(breaker_available(&b, &bcfg, T0 + i));
	}
	assert_int_equal(breaker_record(&b, &bcfg, false, 0, T0 + 10),
	    BREAKER_OPENED);
	assert_state(&b, BREAKER_OPEN, T0 + 10 + OPEN_FOR);

	/* failures: 1 opens on the first failure. */
	{
		struct breaker_cfg one = bcfg;

		one.failures = 1;
		breaker_zero(&b);
		assert_int_equal(breaker_record(&b, &one, false, 0, T0),
		    BREAKER_OPENED);
		assert_state(&b, BREAKER_OPEN, T0 + OPEN_FOR);
	}
}

/* A success in between starts the count again. */
static void
test_breaker_success_resets_count(void **state)
{
	struct breaker b;
	uint64_t now = T0;
	int round, i;

	breaker_zero(&b);
	for (round = 0; round < 3; round++) {
		for (i = 0; i < FAILURES - 1; i++)
			assert_int_equal(breaker_record(&b, &bcfg, false, 0,
			    now++), BREAKER_SAME);
		assert_int_equal(breaker_record(&b, &bcfg, true, 0, now++),
		    BREAKER_SAME);
		assert_int_equal(breaker_state(&b, NULL), BREAKER_CLOSED);
	}
	/* Now FAILURES in a row do open it. */
	open_breaker(&b, now);
}

/* Open: blocked until the word's time, then exactly one trial. */
static void
test_breaker_blocks_while_open(void **state)
{
	struct breaker b;
	uint64_t until = T0 + OPEN_FOR;
	uint64_t t;

	breaker_zero(&b);
	open_breaker(&b, T0);
	for (t = T0; t < until; t += OPEN_FOR / 10) {
		assert_int_equal(breaker_enter(&b, &bcfg, t), BREAKER_BLOCK);
		assert_false(breaker_available(&b, &bcfg, t));
	}
	assert_int_equal(breaker_enter(&b, &bcfg, until - 1), BREAKER_BLOCK);
	assert_false(breaker_available(&b, &bcfg, until - 1));
	/* Blocking took nothing. */
	assert_state(&b, BREAKER_OPEN, until);

	/* Due: available (without taking it), then one trial only. */
	assert_true(breaker_available(&b, &bcfg, until));
	assert_true(breaker_available(&b, &bcfg, until));
	assert_state(&b, BREAKER_OPEN, until);
	assert_int_equal(breaker_enter(&b, &bcfg, until), BREAKER_TRIAL);
	assert_state(&b, BREAKER_HALF_OPEN, until);
	assert_int_equal(breaker_enter(&b, &bcfg, until), BREAKER_BLOCK);
	assert_int_equal(breaker_enter(&b, &bcfg, until + 1), BREAKER_BLOCK);
	assert_false(breaker_available(&b, &bcfg, until + 1));
	assert_int_equal(breaker_enter(&b, &bcfg, until + OPEN_FOR - 1),
	    BREAKER_BLOCK);
	assert_state(&b, BREAKER_HALF_OPEN, until);
}

/* The trial succeeds: closed, and the count starts from zero even if
 * requests let through before it opened failed meanwhile. */
static void
test_breaker_trial_success(void **state)
{
	struct breaker b;
	uint64_t trial = T0 + OPEN_FOR, now;
	int i;

	breaker_zero(&b);
	open_breaker(&b, T0);
	/* Stragglers from before it opened fail while it is open ... */
	for (i = 0; i < 2 * FAILURES; i++)
		assert_int_equal(breaker_record(&b, &bcfg, false, 0, T0 + 1),
		    BREAKER_SAME);
	/* ... and they neither reopen it nor push the time out. */
	assert_state(&b, BREAKER_OPEN, T0 + OPEN_FOR);
	/* A straggler's success does not close it either. */
	assert_int_equal(breaker_record(&b, &bcfg, true, 0, T0 + 2),
	    BREAKER_SAME);
	assert_state(&b, BREAKER_OPEN, T0 + OPEN_FOR);

	assert_int_equal(breaker_enter(&b, &bcfg, trial), BREAKER_TRIAL);
	/* More stragglers while the trial is out: still half-open. */
	for (i = 0; i < 2 * FAILURES; i++)
		assert_int_equal(breaker_record(&b, &bcfg, false, 0,
		    trial + 1), BREAKER_SAME);
	assert_state(&b, BREAKER_HALF_OPEN, trial);
	assert_int_equal(breaker_enter(&b, &bcfg, trial + 2), BREAKER_BLOCK);

	now = trial + 100;
	assert_int_equal(breaker_record(&b, &bcfg, true, trial, now),
	    BREAKER_CLOSED_AGAIN);
	assert_int_equal(breaker_state(&b, NULL), BREAKER_CLOSED);
	assert_int_equal(breaker_enter(&b, &bcfg, now), BREAKER_PASS);
	assert_int_equal(breaker_enter(&b, &bcfg, now + 1), BREAKER_PASS);
	assert_true(breaker_available(&b, &bcfg, now + 1));
	/* Reporting the same trial twice changes nothing. */
	assert_int_equal(breaker_record(&b, &bcfg, false, trial, now + 2),
	    BREAKER_SAME);
	assert_int_equal(breaker_state(&b, NULL), BREAKER_CLOSED);

	/* A fresh count: FAILURES - 1 do not open it, one more does. */
	open_breaker(&b, now + 10);
}

/* The trial fails: open again for another open_for, then a new trial. */
static void
test_breaker_trial_failure(void **state)
{
	struct breaker b;
	uint64_t trial = T0 + OPEN_FOR, now = trial + 300, t2;

	breaker_zero(&b);
	open_breaker(&b, T0);
	assert_int_equal(breaker_enter(&b, &bcfg, trial), BREAKER_TRIAL);
	assert_int_equal(breaker_record(&b, &bcfg, false, trial, now),
	    BREAKER_REOPENED);
	assert_state(&b, BREAKER_OPEN, now + OPEN_FOR);
	assert_int_equal(breaker_enter(&b, &bcfg, now), BREAKER_BLOCK);
	assert_int_equal(breaker_enter(&b, &bcfg, now + OPEN_FOR - 1),
	    BREAKER_BLOCK);
	assert_false(breaker_available(&b, &bcfg, now + OPEN_FOR - 1));

	t2 = now + OPEN_FOR;
	assert_true(breaker_available(&b, &bcfg, t2));
	assert_int_equal(breaker_enter(&b, &bcfg, t2), BREAKER_TRIAL);
	assert_int_equal(breaker_enter(&b, &bcfg, t2), BREAKER_BLOCK);
	assert_int_equal(breaker_record(&b, &bcfg, true, t2, t2 + 1),
	    BREAKER_CLOSED_AGAIN);
	assert_int_equal(breaker_enter(&b, &bcfg, t2 + 1), BREAKER_PASS);
}

/* A trial that never reports is given up after another open_for. */
static void
test_breaker_trial_given_up(void **state)
{
	struct breaker b;
	uint64_t t1 = T0 + OPEN_FOR, t2 = t1 + OPEN_FOR;

	breaker_zero(&b);
	open_breaker(&b, T0);
	assert_int_equal(breaker_enter(&b, &bcfg, t1), BREAKER_TRIAL);
	assert_int_equal(breaker_enter(&b, &bcfg, t2 - 1), BREAKER_BLOCK);
	assert_false(breaker_available(&b, &bcfg, t2 - 1));
	assert_true(breaker_available(&b, &bcfg, t2));
	assert_int_equal(breaker_enter(&b, &bcfg, t2), BREAKER_TRIAL);
	assert_state(&b, BREAKER_HALF_OPEN, t2);
	assert_int_equal(breaker_enter(&b, &bcfg, t2), BREAKER_BLOCK);
	/* Given up again much later: the next request is the trial. */
	assert_int_equal(breaker_enter(&b, &bcfg, t2 + 10 * OPEN_FOR),
	    BREAKER_TRIAL);
	assert_state(&b, BREAKER_HALF_OPEN, t2 + 10 * OPEN_FOR);
}

/* A released trial (its client left) lets the next request be the trial
 * at once; a release for another trial does nothing. */
static void
test_breaker_release(void **state)
{
	struct breaker b;
	uint64_t t1 = T0 + OPEN_FOR, now = t1 + 10;

	breaker_zero(&b);
	open_breaker(&b, T0);
	assert_int_equal(breaker_enter(&b, &bcfg, t1), BREAKER_TRIAL);

	/* Not this trial's time: ignored. */
	breaker_release(&b, t1 - 1, now);
	assert_state(&b, BREAKER_HALF_OPEN, t1);
	assert_int_equal(breaker_enter(&b, &bcfg, now), BREAKER_BLOCK);

	breaker_release(&b, t1, now);
	assert_true(breaker_available(&b, &bcfg, now));
	assert_int_equal(breaker_enter(&b, &bcfg, now), BREAKER_TRIAL);
	assert_int_equal(breaker_enter(&b, &bcfg, now), BREAKER_BLOCK);
	assert_state(&b, BREAKER_HALF_OPEN, now);

	/* The released trial releasing again (or late) does nothing. */
	breaker_release(&b, t1, now + 1);
	assert_state(&b, BREAKER_HALF_OPEN, now);
	/* Nor does its late result. */
	assert_int_equal(breaker_record(&b, &bcfg, true, t1, now + 2),
	    BREAKER_SAME);
	assert_state(&b, BREAKER_HALF_OPEN, now);

	assert_int_equal(breaker_record(&b, &bcfg, false, now, now + 3),
	    BREAKER_REOPENED);
	assert_state(&b, BREAKER_OPEN, now + 3 + OPEN_FOR);
	/* Release on a closed or open breaker does nothing either. */
	breaker_release(&b, now, now + 4);
	assert_state(&b, BREAKER_OPEN, now + 3 + OPEN_FOR);
}

/* A trial given up and taken over: its late result changes nothing,
 * whatever state the breaker is in by then. */
static void
test_breaker_stale_trial(void **state)
{
	struct breaker b;
	uint64_t t1 = T0 + OPEN_FOR, t2 = t1 + OPEN_FOR, now;

	breaker_zero(&b);
	open_breaker(&b, T0);
	assert_int_equal(breaker_enter(&b, &bcfg, t1), BREAKER_TRIAL);
	assert_int_equal(breaker_enter(&b, &bcfg, t2), BREAKER_TRIAL);

	/* While the new trial is out. */
	assert_int_equal(breaker_record(&b, &bcfg, true, t1, t2 + 1),
	    BREAKER_SAME);
	assert_state(&b, BREAKER_HALF_OPEN, t2);
	assert_int_equal(breaker_record(&b, &bcfg, false, t1, t2 + 2),
	    BREAKER_SAME);
	assert_state(&b, BREAKER_HALF_OPEN, t2);
	assert_int_equal(breaker_enter(&b, &bcfg, t2 + 3), BREAKER_BLOCK);

	/* After the new trial reopened it. */
	now = t2 + 10;
	assert_int_equal(breaker_record(&b, &bcfg, false, t2, now),
	    BREAKER_REOPENED);
	assert_int_equal(breaker_record(&b, &bcfg, true, t1, now + 1),
	    BREAKER_SAME);
	assert_state(&b, BREAKER_OPEN, now + OPEN_FOR);

	/* After a third trial closed it. */
	now += OPEN_FOR;
	assert_int_equal(breaker_enter(&b, &bcfg, now), BREAKER_TRIAL);
	assert_int_equal(breaker_record(&b, &bcfg, true, now, now + 1),
	    BREAKER_CLOSED_AGAIN);
	assert_int_equal(breaker_record(&b, &bcfg, false, t1, now + 2),
	    BREAKER_SAME);
	assert_int_equal(breaker_record(&b, &bcfg, false, t2, now + 3),
	    BREAKER_SAME);
	assert_int_equal(breaker_state(&b, NULL), BREAKER_CLOSED);
	assert_int_equal(breaker_enter(&b, &bcfg, now + 4), BREAKER_PASS);
}

/*
 * A stale trial's late failure must not wipe out the failures counted
 * since the breaker closed: after FAILURES - 1 real failures, the stale
 * report and one more real failure, the breaker is open (whether the
 * stale failure counts as one or is ignored, FAILURES in a row have been
 * seen).
 */
static void
test_breaker_stale_trial_keeps_count(void **state)
{
	struct breaker b;
	uint64_t t1 = T0 + OPEN_FOR, t2 = t1 + OPEN_FOR, now = t2 + 100;
	int i;

	breaker_zero(&b);
	open_breaker(&b, T0);
	assert_int_equal(breaker_enter(&b, &bcfg, t1), BREAKER_TRIAL);
	assert_int_equal(breaker_enter(&b, &bcfg, t2), BREAKER_TRIAL);
	assert_int_equal(breaker_record(&b, &bcfg, true, t2, now),
	    BREAKER_CLOSED_AGAIN);

	for (i = 0; i < FAILURES - 1; i++)
		assert_int_equal(breaker_record(&b, &bcfg, false, 0, now + 1),
		    BREAKER_SAME);
	/* The trial given up at t2 finally fails. */
	assert_int_equal(breaker_record(&b, &bcfg, false, t1, now + 2),
	    BREAKER_SAME);
	breaker_record(&b, &bcfg, false, 0, now + 3);
	assert_int_equal(breaker_state(&b, NULL), BREAKER_OPEN);
}

/* Failures that keep coming while open report BREAKER_OPENED once. */
static void
test_breaker_opened_once(void **state)
{
	struct breaker b;
	int i, opened = 0;

	breaker_zero(&b);
	for (i = 0; i < 20 * FAILURES; i++) {
		enum breaker_change c = breaker_record(&b, &bcfg, false, 0,
		    T0 + (uint64_t)i);

		assert_true(c == BREAKER_SAME || c == BREAKER_OPENED);
		if (c == BREAKER_OPENED) {
			assert_int_equal(i, FAILURES - 1);
			opened++;
		}
	}
	assert_int_equal(opened, 1);
	/* The open time is that of the opening failure, not pushed out. */
	assert_state(&b, BREAKER_OPEN, T0 + FAILURES - 1 + OPEN_FOR);
}

/* -- concurrency limit -------------------------------------------------- */

static void
assert_counts(const struct limiter *l, int active, int nqueued)
{
	assert_int_equal(l->active, active);
	assert_int_equal(l->nqueued, nqueued);
}

/* max slots, then max_queue waiters, then no. */
static void
test_limiter_go_queue_full(void **state)
{
	struct limiter l;
	struct lim_waiter w[7];
	size_t i;

	limiter_init(&l, 2, 3);
	assert_counts(&l, 0, 0);
	assert_int_equal(limiter_acquire(&l, &w[0]), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &w[1]), LIM_GO);
	assert_counts(&l, 2, 0);
	assert_false(w[0].queued);
	for (i = 2; i < 5; i++) {
		assert_int_equal(limiter_acquire(&l, &w[i]), LIM_QUEUED);
		assert_true(w[i].queued);
	}
	assert_counts(&l, 2, 3);
	for (i = 5; i < 7; i++) {
		assert_int_equal(limiter_acquire(&l, &w[i]), LIM_FULL);
		assert_false(w[i].queued);
	}
	assert_counts(&l, 2, 3);
}

/* A freed slot goes to the first waiter; with none, the count drops. */
static void
test_limiter_release_fifo(void **state)
{
	struct limiter l;
	struct lim_waiter w[5], *got;
	size_t i;

	limiter_init(&l, 2, 3);
	for (i = 0; i < NELEM(w); i++)
		limiter_acquire(&l, &w[i]);
	assert_counts(&l, 2, 3);
	for (i = 2; i < 5; i++) {
		got = limiter_release(&l);
		assert_ptr_equal(got, &w[i]);
		assert_false(got->queued);
		assert_counts(&l, 2, (int)(4 - i));
	}
	assert_null(limiter_release(&l));
	assert_counts(&l, 1, 0);
	assert_null(limiter_release(&l));
	assert_counts(&l, 0, 0);
	/* All free again: max slots at once. */
	assert_int_equal(limiter_acquire(&l, &w[0]), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &w[1]), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &w[2]), LIM_QUEUED);
}

/* A waiter leaving from the middle keeps the others' order and frees
 * its place in the queue. */
static void
test_limiter_cancel_middle(void **state)
{
	struct limiter l;
	struct lim_waiter w[6];
	size_t i;

	limiter_init(&l, 1, 4);
	for (i = 0; i < 5; i++)
		assert_int_equal(limiter_acquire(&l, &w[i]),
		    i == 0 ? LIM_GO : LIM_QUEUED);
	assert_int_equal(limiter_acquire(&l, &w[5]), LIM_FULL);

	limiter_cancel(&l, &w[2]);
	assert_false(w[2].queued);
	assert_counts(&l, 1, 3);
	/* Its place is free for a newcomer, at the end. */
	assert_int_equal(limiter_acquire(&l, &w[5]), LIM_QUEUED);
	assert_counts(&l, 1, 4);

	limiter_cancel(&l, &w[4]);	/* and one from the end */
	assert_counts(&l, 1, 3);

	assert_ptr_equal(limiter_release(&l), &w[1]);
	assert_ptr_equal(limiter_release(&l), &w[3]);
	assert_ptr_equal(limiter_release(&l), &w[5]);
	assert_null(limiter_release(&l));
	assert_counts(&l, 0, 0);
}

/* Cancelling a waiter that is not queued does nothing. */
static void
test_limiter_cancel_not_queued(void **state)
{
	struct limiter l;
	struct lim_waiter w[4];

	limiter_init(&l, 1, 2);
	assert_int_equal(limiter_acquire(&l, &w[0]), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &w[1]), LIM_QUEUED);
	assert_int_equal(limiter_acquire(&l, &w[2]), LIM_QUEUED);
	assert_int_equal(limiter_acquire(&l, &w[3]), LIM_FULL);

	limiter_cancel(&l, &w[0]);	/* holds a slot */
	limiter_cancel(&l, &w[3]);	/* was turned away */
	assert_counts(&l, 1, 2);

	limiter_cancel(&l, &w[1]);
	limiter_cancel(&l, &w[1]);	/* twice */
	assert_counts(&l, 1, 1);

	assert_ptr_equal(limiter_release(&l), &w[2]);
	limiter_cancel(&l, &w[2]);	/* was handed the slot */
	assert_counts(&l, 1, 0);
	assert_null(limiter_release(&l));
	assert_counts(&l, 0, 0);
}

/* Newcomers never overtake the queue. */
static void
test_limiter_no_overtaking(void **state)
{
	struct limiter l;
	struct lim_waiter a, b, c, d;

	limiter_init(&l, 1, 5);
	assert_int_equal(limiter_acquire(&l, &a), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &b), LIM_QUEUED);
	/* The slot a gives back goes to b, not to whoever comes next. */
	assert_ptr_equal(limiter_release(&l), &b);
	assert_int_equal(limiter_acquire(&l, &c), LIM_QUEUED);
	assert_int_equal(limiter_acquire(&l, &d), LIM_QUEUED);
	assert_ptr_equal(limiter_release(&l), &c);
	assert_ptr_equal(limiter_release(&l), &d);
	assert_null(limiter_release(&l));
	assert_counts(&l, 0, 0);

	/*
	 * The rule itself: with anyone waiting, a newcomer queues even when
	 * the slot count is below max (release() hands slots over, so this
	 * state is made by hand).
	 */
	limiter_init(&l, 2, 5);
	assert_int_equal(limiter_acquire(&l, &a), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &b), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &c), LIM_QUEUED);
	l.active = 1;
	assert_int_equal(limiter_acquire(&l, &d), LIM_QUEUED);
	assert_counts(&l, 1, 2);
	assert_ptr_equal(limiter_release(&l), &c);
	assert_ptr_equal(limiter_release(&l), &d);
}

/* max_queue 0: no waiting at all. */
static void
test_limiter_no_queue(void **state)
{
	struct limiter l;
	struct lim_waiter w[3];

	limiter_init(&l, 2, 0);
	assert_int_equal(limiter_acquire(&l, &w[0]), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &w[1]), LIM_GO);
	assert_int_equal(limiter_acquire(&l, &w[2]), LIM_FULL);
	assert_false(w[2].queued);
	assert_counts(&l, 2, 0);
	assert_null(limiter_release(&l));
	assert_int_equal(limiter_acquire(&l, &w[2]), LIM_GO);
	assert_counts(&l, 2, 0);
}

/* -- retries: backoff --------------------------------------------------- */

static struct retry_cfg
backoff_cfg(uint64_t backoff, uint64_t max)
{
	struct retry_cfg c;

	memset(&c, 0, sizeof(c));
	c.attempts = 10;
	c.backoff_ms = backoff;
	c.max_backoff_ms = max;
	return c;
}

/* xorshift32: reproducible "random" r. */
static uint32_t
next_r(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* 25 ms doubled up to the 1 s cap; r picks within [d/2, d]. */
static void
test_backoff_schedule(void **state)
{
	static const uint64_t d[] = { 25, 50, 100, 200, 400, 800, 1000, 1000 };
	struct retry_cfg c = backoff_cfg(25, 1000);
	size_t i;
	int n;

	for (i = 0; i < NELEM(d); i++) {
		n = (int)i + 1;
		assert_int_equal(retry_backoff_ms(&c, n, UINT32_MAX), d[i]);
		assert_int_equal(retry_backoff_ms(&c, n, 0), d[i] / 2);
		/* r halfway: three quarters of d. */
		assert_in_range(retry_backoff_ms(&c, n, UINT32_MAX / 2),
		    d[i] / 2 + (d[i] - d[i] / 2) / 2 - 1,
		    d[i] / 2 + (d[i] - d[i] / 2) / 2 + 1);
	}
	/* Odd d: the lower bound rounds down, the top is d itself. */
	assert_int_equal(retry_backoff_ms(&c, 1, 0), 12);
	assert_int_equal(retry_backoff_ms(&c, 1, UINT32_MAX), 25);
}

/* Every r lands in [d/2, d], and a larger r never waits less. */
static void
test_backoff_bounds(void **state)
{
	struct retry_cfg c = backoff_cfg(25, 1000);
	uint32_t s = 0x9e3779b9, r, lo_r, hi_r;
	uint64_t d, v, lo, hi, seen_lo, seen_hi;
	int n, i;

	for (n = 1; n <= 10; n++) {
		d = 25;
		for (i = 1; i < n; i++)
			d = d * 2 > 1000 ? 1000 : d * 2;
		seen_lo = UINT64_MAX;
		seen_hi = 0;
		for (i = 0; i < 20000; i++) {
			r = next_r(&s);
			v = retry_backoff_ms(&c, n, r);
			assert_in_range(v, d / 2, d);
			if (v < seen_lo)
				seen_lo = v;
			if (v > seen_hi)
				seen_hi = v;
			/* Monotonic in r. */
			lo_r = r / 2;
			hi_r = r + (UINT32_MAX - r) / 2;
			lo = retry_backoff_ms(&c, n, lo_r);
			hi = retry_backoff_ms(&c, n, hi_r);
			assert_true(lo <= v && v <= hi);
		}
		/* The jitter spreads over the whole range. */
		assert_in_range(seen_lo, d / 2, d / 2 + 1 + d / 50);
		assert_in_range(seen_hi, d - 1 - d / 50, d);
	}
}

/* The cap holds however many retries, and no doubling overflows. */
static void
test_backoff_cap(void **state)
{
	struct retry_cfg c = backoff_cfg(300, 1000);
	struct retry_cfg same = backoff_cfg(700, 700);
	struct retry_cfg big = backoff_cfg(25, 600000);
	int n;

	assert_int_equal(retry_backoff_ms(&c, 1, UINT32_MAX), 300);
	assert_int_equal(retry_backoff_ms(&c, 2, UINT32_MAX), 600);
	assert_int_equal(retry_backoff_ms(&c, 3, UINT32_MAX), 1000);
	assert_int_equal(retry_backoff_ms(&c, 3, 0), 500);
	for (n = 3; n <= 200; n++) {
		assert_int_equal(retry_backoff_ms(&c, n, UINT32_MAX), 1000);
		assert_int_equal(retry_backoff_ms(&c, n, 0), 500);
		assert_int_equal(retry_backoff_ms(&same, n, UINT32_MAX), 700);
		assert_int_equal(retry_backoff_ms(&big, n, UINT32_MAX),
		    n >= 16 ? 600000 : (uint64_t)25 << (n - 1));
		assert_int_equal(retry_backoff_ms(&big, n, 0),
		    n >= 16 ? 300000 : ((uint64_t)25 << (n - 1)) / 2);
	}
	assert_int_equal(retry_backoff_ms(&same, 1, 0), 350);
}

/* backoff 0: retry at once, whatever n and r. */
static void
test_backoff_zero(void **state)
{
	struct retry_cfg c = backoff_cfg(0, 1000);
	struct retry_cfg z = backoff_cfg(0, 0);
	uint32_t s = 12345;
	int n, i;

	for (n = 1; n <= 10; n++) {
		assert_int_equal(retry_backoff_ms(&c, n, 0), 0);
		assert_int_equal(retry_backoff_ms(&c, n, UINT32_MAX), 0);
		assert_int_equal(retry_backoff_ms(&z, n, UINT32_MAX), 0);
		for (i = 0; i < 100; i++)
			assert_int_equal(retry_backoff_ms(&c, n, next_r(&s)),
			    0);
	}
}

/* -- retries: budget ---------------------------------------------------- */

#define TB	100000		/* ms; well away from the zeroed since */

static void
budget_zero(struct retry_budget *b)
{
	memset(b, 0, sizeof(*b));
}

static void
tries(struct retry_budget *b, int n, uint64_t now)
{
	while (n-- > 0)
		retry_budget_try(b, now);
}

/* How many retries are taken, without any ending, until one is refused. */
static int
take_all(struct retry_budget *b, double share, uint64_t now)
{
	int n = 0;

	while (retry_budget_take(b, share, now))
		if (++n > 100000)
			fail_msg("the budget never ran out");
	return n;
}

/* No first tries at all: RETRY_BUDGET_MIN at once, no more; each one
 * ended makes room for another. */
static void
test_budget_floor(void **state)
{
	struct retry_budget b;
	int i;

	budget_zero(&b);
	for (i = 0; i < RETRY_BUDGET_MIN; i++)
		assert_true(retry_budget_take(&b, 0.2, TB));
	assert_int_equal(b.active, RETRY_BUDGET_MIN);
	assert_false(retry_budget_take(&b, 0.2, TB));
	assert_false(retry_budget_take(&b, 0.2, TB + 1));
	assert_int_equal(b.active, RETRY_BUDGET_MIN);

	for (i = 0; i < 10; i++) {
		retry_budget_done(&b);
		assert_int_equal(b.active, RETRY_BUDGET_MIN - 1);
		assert_true(retry_budget_take(&b, 0.2, TB + 2));
		assert_false(retry_budget_take(&b, 0.2, TB + 2));
	}

	/* A share of 0 still leaves the floor. */
	budget_zero(&b);
	tries(&b, 1000, TB);
	assert_int_equal(take_all(&b, 0.0, TB), RETRY_BUDGET_MIN);

	/* done() with nothing active does not go negative. */
	budget_zero(&b);
	retry_budget_done(&b);
	assert_int_equal(b.active, 0);
	assert_int_equal(take_all(&b, 0.0, TB), RETRY_BUDGET_MIN);
}

/*
 * 100 first tries, share 0.2, nothing ends: take() refuses only once
 * active >= RETRY_BUDGET_MIN and retries + 1 > 0.2 * 100, so retries
 * 1..20 are allowed (the 3 of the floor count towards the 20: 17 more
 * after it) and the 21st is refused.
 */
static void
test_budget_share(void **state)
{
	struct retry_budget b;
	int i;

	budget_zero(&b);
	tries(&b, 100, TB);
	assert_int_equal(take_all(&b, 0.2, TB), 20);
	assert_int_equal(b.active, 20);
	assert_int_equal(b.retries[0] + b.retries[1], 20);

	/* Ending retries gives back the concurrency, not the share: while
	 * RETRY_BUDGET_MIN or more are still active, still no. */
	for (i = 0; i < 20 - RETRY_BUDGET_MIN; i++) {
		retry_budget_done(&b);
		assert_false(retry_budget_take(&b, 0.2, TB + 1));
	}
	assert_int_equal(b.active, RETRY_BUDGET_MIN);
	/* Below the floor: yes again, one at a time. */
	retry_budget_done(&b);
	assert_true(retry_budget_take(&b, 0.2, TB + 1));
	assert_false(retry_budget_take(&b, 0.2, TB + 1));

	/* More first tries make more room: 21 retries are counted, so 5
	 * more (0.2 * 105 = 21) are not enough for a 22nd, 10 more after
	 * them (0.2 * 115 = 23) allow two. */
	tries(&b, 5, TB + 2);
	assert_false(retry_budget_take(&b, 0.2, TB + 2));
	tries(&b, 10, TB + 2);
	assert_int_equal(take_all(&b, 0.2, TB + 2), 2);

	/* With retries ending as soon as they are taken, the floor keeps
	 * them going however small the share. */
	budget_zero(&b);
	tries(&b, 100, TB);
	for (i = 0; i < 1000; i++) {
		assert_true(retry_budget_take(&b, 0.2, TB));
		retry_budget_done(&b);
	}
	assert_int_equal(b.active, 0);

	/* 1000% share: 10 retries per first try. */
	budget_zero(&b);
	tries(&b, 7, TB);
	assert_int_equal(take_all(&b, 10.0, TB), 70);
}

/*
 * The window is two halves of RETRY_WINDOW_MS / 2, rolled by the calls:
 * counts made at the start of a half are still there RETRY_WINDOW_MS - 1
 * later and gone at RETRY_WINDOW_MS when nothing happened in between or
 * calls came all along; a roll just before that keeps them one more
 * half (so "about" the window: at most 1.5 of it).
 */
static void
test_budget_window(void **state)
{
	struct retry_budget b;
	int i;

	/* Quiet in between, remembered at window - 1 ... */
	budget_zero(&b);
	tries(&b, 100, TB);
	assert_int_equal(take_all(&b, 0.2, TB), 20);
	assert_false(retry_budget_take(&b, 0.2, TB + RETRY_WINDOW_MS - 1));
	assert_int_equal(b.tries[0] + b.tries[1], 100);
	assert_int_equal(b.retries[0] + b.retries[1], 20);

	/* ... forgotten at window. */
	budget_zero(&b);
	tries(&b, 100, TB);
	assert_int_equal(take_all(&b, 0.2, TB), 20);
	assert_false(retry_budget_take(&b, 0.2, TB + RETRY_WINDOW_MS));
	assert_int_equal(b.tries[0] + b.tries[1], 0);
	assert_int_equal(b.retries[0] + b.retries[1], 0);
	/* Only new first tries count now: 10 of them allow 2 retries. */
	tries(&b, 10, TB + RETRY_WINDOW_MS);
	assert_int_equal(take_all(&b, 0.2, TB + RETRY_WINDOW_MS), 2);

	/* The roll at window - 1 made TB's counts the previous half: they
	 * stay for one more half, and no longer. */
	budget_zero(&b);
	tries(&b, 100, TB);
	assert_int_equal(take_all(&b, 0.2, TB), 20);
	assert_false(retry_budget_take(&b, 0.2, TB + RETRY_WINDOW_MS - 1));
	assert_int_equal(b.tries[1], 100);
	assert_int_equal(b.retries[1], 20);
	assert_false(retry_budget_take(&b, 0.2,
	    TB + RETRY_WINDOW_MS - 1 + RETRY_WINDOW_MS / 2 - 1));
	assert_int_equal(b.tries[0] + b.tries[1], 100);
	/* Forgotten: no first tries and RETRY_BUDGET_MIN or more active. */
	assert_false(retry_budget_take(&b, 0.2,
	    TB + RETRY_WINDOW_MS - 1 + RETRY_WINDOW_MS / 2));
	assert_int_equal(b.tries[0] + b.tries[1], 0);
	assert_int_equal(b.retries[0] + b.retries[1], 0);

	/* Busy in between: first tries every half second. */
	budget_zero(&b);
	tries(&b, 100, TB);
	assert_int_equal(take_all(&b, 0.2, TB), 20);
	for (i = 1; i < RETRY_WINDOW_MS / 500; i++) {
		retry_budget_try(&b, TB + (uint64_t)i * 500);
		/* The first tries at TB still count. */
		assert_int_equal(b.tries[0] + b.tries[1], 100 + i);
	}
	/* 119 first tries, 20 retries: 0.2 * 119 = 23.8, three more. */
	assert_int_equal(take_all(&b, 0.2, TB + RETRY_WINDOW_MS - 1), 3);
	/* At TB + window the half that held TB's counts goes: the 10 first
	 * tries of the last half and this one remain, and the 3 retries
	 * taken at the end; 3 + 1 > 0.2 * 11, none. */
	retry_budget_try(&b, TB + RETRY_WINDOW_MS);
	assert_int_equal(b.tries[0] + b.tries[1], 11);
	assert_int_equal(b.retries[0] + b.retries[1], 3);
	assert_false(retry_budget_take(&b, 0.2, TB + RETRY_WINDOW_MS));
}

/* -- rate limit buckets ------------------------------------------------- */

#define SEC	1000000ULL

/* A new bucket is full: burst requests at once, then 429. */
static void
test_bucket_burst_then_refusal(void **state)
{
	struct rl_bucket b = { 0 };
	double left;
	uint64_t retry;
	int i;

	for (i = 0; i < 5; i++) {
		assert_true(ratelimit_take(&b, 10 * SEC, 5.0, 5, &left, &retry));
		assert_int_equal(retry, 0);
		assert_true(fabs(left - (4 - i)) < 1e-9);
	}
	assert_false(ratelimit_take(&b, 10 * SEC, 5.0, 5, &left, &retry));
	assert_int_equal(retry, 200);		/* one token at 5/s */
}

/* Tokens come back at rate, never beyond burst. */
static void
test_bucket_refill_and_cap(void **state)
{
	struct rl_bucket b = { 0 };
	double left;
	uint64_t retry;
	int i;

	for (i = 0; i < 5; i++)
		ratelimit_take(&b, SEC, 5.0, 5, &left, &retry);
	/* 0.4 s later: 2 tokens. */
	assert_true(ratelimit_take(&b, SEC + 400000, 5.0, 5, &left, &retry));
	assert_true(ratelimit_take(&b, SEC + 400000, 5.0, 5, &left, &retry));
	assert_false(ratelimit_take(&b, SEC + 400000, 5.0, 5, &left, &retry));
	/* An hour later: full, but only burst. */
	for (i = 0; i < 5; i++)
		assert_true(ratelimit_take(&b, 3600 * SEC, 5.0, 5, &left,
		    &retry));
	assert_false(ratelimit_take(&b, 3600 * SEC, 5.0, 5, &left, &retry));
}

/* A slow rate: Retry-After in whole waits, and a clock that does not
 * move (or moves back) refills nothing. */
static void
test_bucket_slow_rate_and_clock(void **state)
{
	struct rl_bucket b = { 0 };
	double left;
	uint64_t retry;

	assert_true(ratelimit_take(&b, 100 * SEC, 1.0 / 60, 1, &left, &retry));
	assert_false(ratelimit_take(&b, 100 * SEC, 1.0 / 60, 1, &left,
	    &retry));
	assert_int_equal(retry, 60000);
	assert_false(ratelimit_take(&b, 90 * SEC, 1.0 / 60, 1, &left, &retry));
	assert_false(ratelimit_take(&b, 130 * SEC, 1.0 / 60, 1, &left,
	    &retry));
	assert_int_equal(retry, 30000);
	assert_true(ratelimit_take(&b, 160 * SEC + 1000, 1.0 / 60, 1, &left,
	    &retry));
}

/* -- JWT ---------------------------------------------------------------- */

static void
b64u_enc(const unsigned char *in, size_t n, char *out)
{
	static const char a[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t i, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (i = 0; i < n; i++) {
		acc = acc << 8 | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = a[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[o++] = a[(acc << (6 - bits)) & 63];
	out[o] = '\0';
}

/* header.payload.HS256(key) */
static void
hs256_token(const char *hdr, const char *claims, const char *key,
    char *out)
{
	char h[512], c[1024], sig[64];
	unsigned char mac[32];
	unsigned int len = 0;

	b64u_enc((const unsigned char *)hdr, strlen(hdr), h);
	b64u_enc((const unsigned char *)claims, strlen(claims), c);
	sprintf(out, "%s.%s", h, c);
	HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)out,
	    strlen(out), mac, &len);
	b64u_enc(mac, len, sig);
	strcat(out, ".");
	strcat(out, sig);
}

static void
test_jwt_b64url(void **state)
{
	unsigned char out[16];

	assert_int_equal(jwt_b64url("aGk", 3, out, sizeof(out)), 2);
	assert_memory_equal(out, "hi", 2);
	assert_int_equal(jwt_b64url("_-8", 3, out, sizeof(out)), 2);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(jwt_b64url("a+b", 3, out, sizeof(out)), -1);
	assert_int_equal(jwt_b64url("a.b", 3, out, sizeof(out)), -1);
}

/* An HS256 key "secret" (b64url c2VjcmV0), issuer and audience set. */
static void
test_jwt_claims(void **state)
{
	char path[] = "/tmp/agate-jwks-XXXXXX", err[256], tok[2048];
	char claims[512];
	static char *aud[] = { "api" };
	struct jwt_cfg c = { .issuer = "iss1", .audiences = aud,
	    .naudiences = 1 };
	const time_t now = 1800000000;
	struct jwks *set;
	json_t *cl;
	FILE *f;
	int fd = mkstemp(path);
	static const struct {
		const char *hdr, *claims, *key, *why;
	} cases[] = {
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":\"api\","
		    "\"exp\":1800000100}", "secret", NULL },
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":\"api\","
		    "\"exp\":1799999900}", "secret", "token expired" },
		/* within the 60 s leeway */
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":\"api\","
		    "\"exp\":1799999970}", "secret", NULL },
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":\"api\","
		    "\"nbf\":1800000100}", "secret", "token not yet valid" },
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss2\",\"aud\":\"api\"}",
		    "secret", "wrong issuer" },
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":[\"x\","
		    "\"api\"]}", "secret", NULL },
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":\"x\"}",
		    "secret", "wrong audience" },
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":\"api\"}",
		    "other", "bad signature" },
		{ "{\"alg\":\"none\"}", "{\"iss\":\"iss1\",\"aud\":\"api\"}",
		    "secret", "unsupported alg" },
		{ "{\"alg\":\"RS256\"}", "{\"iss\":\"iss1\",\"aud\":\"api\"}",
		    "secret", "no key for this token" },
		{ "{\"alg\":\"HS256\"}", "{\"iss\":\"iss1\",\"aud\":\"api\","
		    "\"exp\":\"soon\"}", "secret", "token expired" },
	};
	size_t i;

	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", f);
	fclose(f);
	set = jwks_load(path, err, sizeof(err));
	unlink(path);
	assert_non_null(set);
	for (i = 0; i < NELEM(cases); i++) {
		const char *why;

		snprintf(claims, sizeof(claims), "%s", cases[i].claims);
		hs256_token(cases[i].hdr, claims, cases[i].key, tok);
		why = jwt_verify(&c, set, tok, strlen(tok), now, &cl);
		if ((why == NULL) != (cases[i].why == NULL) ||
		    (why != NULL && strcmp(why, cases[i].why) != 0))
			fail_msg("case %zu: got %s, want %s", i,
			    why ? why : "valid", cases[i].why ? cases[i].why :
			    "valid");
		json_decref(cl);
	}
	assert_string_equal(jwt_verify(&c, set, "a.b", 3, now, &cl),
	    "malformed token");
	jwks_free(set);
}

static void
test_jwks_refused(void **state)
{
	char path[] = "/tmp/agate-jwks-XXXXXX", err[256];
	static const char *const bad[] = {
		"{\"keys\":[]}", "{\"keys\":[{\"kty\":\"OKP\"}]}",
		"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!!\",\"e\":\"AQAB\"}]}",
		"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\","
		    "\"y\":\"AA\"}]}", "not json",
	};
	size_t i;

	for (i = 0; i < NELEM(bad); i++) {
		int fd = mkstemp(path);
		FILE *f = fdopen(fd, "w");

		fputs(bad[i], f);
		fclose(f);
		assert_null(jwks_load(path, err, sizeof(err)));
		assert_true(strncmp(err, path, strlen(path)) == 0);
		unlink(path);
		strcpy(path, "/tmp/agate-jwks-XXXXXX");
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_breaker_disabled),
		cmocka_unit_test(test_breaker_opens_after_failures),
		cmocka_unit_test(test_breaker_success_resets_count),
		cmocka_unit_test(test_breaker_blocks_while_open),
		cmocka_unit_test(test_breaker_trial_success),
		cmocka_unit_test(test_breaker_trial_failure),
		cmocka_unit_test(test_breaker_trial_given_up),
		cmocka_unit_test(test_breaker_release),
		cmocka_unit_test(test_breaker_stale_trial),
		cmocka_unit_test(test_breaker_stale_trial_keeps_count),
		cmocka_unit_test(test_breaker_opened_once),
		cmocka_unit_test(test_limiter_go_queue_full),
		cmocka_unit_test(test_limiter_release_fifo),
		cmocka_unit_test(test_limiter_cancel_middle),
		cmocka_unit_test(test_limiter_cancel_not_queued),
		cmocka_unit_test(test_limiter_no_overtaking),
		cmocka_unit_test(test_limiter_no_queue),
		cmocka_unit_test(test_backoff_schedule),
		cmocka_unit_test(test_backoff_bounds),
		cmocka_unit_test(test_backoff_cap),
		cmocka_unit_test(test_backoff_zero),
		cmocka_unit_test(test_budget_floor),
		cmocka_unit_test(test_budget_share),
		cmocka_unit_test(test_budget_window),
		cmocka_unit_test(test_bucket_burst_then_refusal),
		cmocka_unit_test(test_bucket_refill_and_cap),
		cmocka_unit_test(test_bucket_slow_rate_and_clock),
		cmocka_unit_test(test_jwt_b64url),
		cmocka_unit_test(test_jwt_claims),
		cmocka_unit_test(test_jwks_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
