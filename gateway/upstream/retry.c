/*
 * Backoff schedule and retry budget (see retry.h).
 */
#include <string.h>

#include "gateway/upstream/retry.h"

static bool
status_listed(const struct retry_cfg *rc, int status)
{
	size_t i;

	for (i = 0; i < rc->nstatuses; i++)
		if (rc->statuses[i] == status)
			return true;
	return false;
}

bool
retry_condition(const struct retry_cfg *rc, enum try_fail why, int status)
{
	switch (why) {
	case TRY_CONNECT:
		return rc->on & RETRY_ON_CONNECT_FAILURE;
	case TRY_TIMEOUT:
		return rc->on & RETRY_ON_TIMEOUT;
	case TRY_RESET:
		return rc->on & RETRY_ON_RESET;
	case TRY_INVALID:
		return status_listed(rc, 502);	/* what agate would answer */
	case TRY_STATUS:
		return status_listed(rc, status);
	default:
		return false;
	}
}

bool
retry_method(const struct retry_cfg *rc, const char *method, size_t len)
{
	size_t i;

	for (i = 0; i < rc->nmethods; i++)
		if (strlen(rc->methods[i]) == len &&
		    strncmp(rc->methods[i], method, len) == 0)
			return true;
	return false;
}

const char *
retry_fail_name(enum try_fail why)
{
	static const char *const names[] = {
		"connect_failure", "timeout", "reset", "invalid answer",
		"status", "client", "local error"
	};

	return names[why];
}

uint64_t
retry_backoff_ms(const struct retry_cfg *c, int n, uint32_t r)
{
	uint64_t d = c->backoff_ms;
	int i;

	for (i = 1; i < n && d < c->max_backoff_ms; i++)
		d *= 2;
	if (d > c->max_backoff_ms)
		d = c->max_backoff_ms;
	/* d/2 plus a random share of the other half. */
	return d / 2 + (d - d / 2) * (uint64_t)r / UINT32_MAX;
}

/* Two halves of RETRY_WINDOW_MS: the current one and the one before. */
static void
budget_roll(struct retry_budget *b, uint64_t now)
{
	uint64_t half = RETRY_WINDOW_MS / 2;

	if (now - b->since < half)
		return;
	if (now - b->since < 2 * half) {
		b->tries[1] = b->tries[0];
		b->retries[1] = b->retries[0];
	} else
		b->tries[1] = b->retries[1] = 0;
	b->tries[0] = b->retries[0] = 0;
	b->since = now;
}

void
retry_budget_try(struct retry_budget *b, uint64_t now)
{
	budget_roll(b, now);
	b->tries[0]++;
}

bool
retry_budget_take(struct retry_budget *b, double budget, uint64_t now)
{
	double tries, retries;

	budget_roll(b, now);
	tries = (double)b->tries[0] + b->tries[1];
	retries = (double)b->retries[0] + b->retries[1];
	if (b->active >= RETRY_BUDGET_MIN && retries + 1 > budget * tries)
		return false;
	b->retries[0]++;
	b->active++;
	return true;
}

void
retry_budget_done(struct retry_budget *b)
{
	if (b->active > 0)
		b->active--;
}
