/*
 * The concurrency limit and its wait queue (see limiter.h).
 */
#include <stddef.h>

#include "gateway/upstream/limiter.h"

void
limiter_init(struct limiter *l, int max, int max_queue)
{
	l->active = 0;
	l->max = max;
	l->nqueued = 0;
	l->max_queue = max_queue;
	TAILQ_INIT(&l->queue);
}

enum lim_result
limiter_acquire(struct limiter *l, struct lim_waiter *w)
{
	w->queued = false;
	/* Newcomers never overtake the queue. */
	if (l->active < l->max && l->nqueued == 0) {
		l->active++;
		return LIM_GO;
	}
	if (l->nqueued >= l->max_queue)
		return LIM_FULL;
	TAILQ_INSERT_TAIL(&l->queue, w, entry);
	w->queued = true;
	l->nqueued++;
	return LIM_QUEUED;
}

struct lim_waiter *
limiter_release(struct limiter *l)
{
	struct lim_waiter *w = TAILQ_FIRST(&l->queue);

	if (w == NULL) {
		l->active--;
		return NULL;
	}
	/* The slot passes straight to the first waiter. */
	TAILQ_REMOVE(&l->queue, w, entry);
	w->queued = false;
	l->nqueued--;
	return w;
}

void
limiter_cancel(struct limiter *l, struct lim_waiter *w)
{
	if (!w->queued)
		return;
	TAILQ_REMOVE(&l->queue, w, entry);
	w->queued = false;
	l->nqueued--;
}
