/*
 * The circuit breaker's state machine (see breaker.h).
 */
#include "gateway/upstream/breaker.h"

#define WORD(t, s)	(((uint64_t)(t) << 2) | (uint64_t)(s))
#define W_STATE(w)	((enum breaker_state)((w) & 3))
#define W_TIME(w)	((w) >> 2)

enum breaker_state
breaker_state(const struct breaker *b, uint64_t *time)
{
	uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);

	if (time != NULL)
		*time = W_TIME(w);
	return W_STATE(w);
}

/* Whether word w lets a trial start at now. */
static bool
trial_due(uint64_t w, const struct breaker_cfg *cfg, uint64_t now)
{
	switch (W_STATE(w)) {
	case BREAKER_OPEN:
		return now >= W_TIME(w);
	case BREAKER_HALF_OPEN:
		/* A trial that never reported is given up. */
		return now >= W_TIME(w) + cfg->open_for_ms;
	default:
		return false;
	}
}

bool
breaker_available(const struct breaker *b, const struct breaker_cfg *cfg,
    uint64_t now)
{
	uint64_t w;

	if (!cfg->enabled)
		return true;
	w = atomic_load_explicit(&b->word, memory_order_acquire);
	return W_STATE(w) == BREAKER_CLOSED || trial_due(w, cfg, now);
}

enum breaker_verdict
breaker_enter(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now)
{
	uint64_t w;

	if (!cfg->enabled)
		return BREAKER_PASS;
	w = atomic_load_explicit(&b->word, memory_order_acquire);
	for (;;) {
		if (W_STATE(w) == BREAKER_CLOSED)
			return BREAKER_PASS;
		if (!trial_due(w, cfg, now))
			return BREAKER_BLOCK;
		/* Exactly one caller wins the trial. */
		if (atomic_compare_exchange_weak_explicit(&b->word, &w,
		    WORD(now, BREAKER_HALF_OPEN), memory_order_acq_rel,
		    memory_order_acquire))
			return BREAKER_TRIAL;
	}
}

enum breaker_change
breaker_record(struct breaker *b, const struct breaker_cfg *cfg, bool ok,
    uint64_t trial, uint64_t now)
{
	uint64_t w, open = WORD(now + cfg->open_for_ms, BREAKER_OPEN);
	uint32_t n;

	if (!cfg->enabled)
		return BREAKER_SAME;
	if (trial != 0) {
		w = WORD(trial, BREAKER_HALF_OPEN);
		/* Only the trial's own half-open state is ours to change
		 * (a trial given up may have been taken over). */
		if (!atomic_compare_exchange_strong_explicit(&b->word, &w,
		    ok ? WORD(0, BREAKER_CLOSED) : open, memory_order_acq_rel,
		    memory_order_acquire))
			return BREAKER_SAME;
		atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
		return ok ? BREAKER_CLOSED_AGAIN : BREAKER_REOPENED;
	}
	if (ok) {
		/* A load first: the line stays shared while all is well. */
		if (atomic_load_explicit(&b->fails, memory_order_relaxed) != 0)
			atomic_store_explicit(&b->fails, 0,
			    memory_order_relaxed);
		return BREAKER_SAME;
	}
	n = atomic_fetch_add_explicit(&b->fails, 1, memory_order_acq_rel) + 1;
	if (n < (uint32_t)cfg->failures)
		return BREAKER_SAME;
	w = WORD(0, BREAKER_CLOSED);
	if (!atomic_compare_exchange_strong_explicit(&b->word, &w, open,
	    memory_order_acq_rel, memory_order_acquire))
		return BREAKER_SAME;	/* already open */
	atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
	return BREAKER_OPENED;
}

void
breaker_release(struct breaker *b, uint64_t trial, uint64_t now)
{
	uint64_t w = WORD(trial, BREAKER_HALF_OPEN);

	atomic_compare_exchange_strong_explicit(&b->word, &w,
	    WORD(now, BREAKER_OPEN), memory_order_acq_rel,
	    memory_order_acquire);
}
