/*
 * An upstream's concurrency limit in one worker: at most max requests at
 * once (max_concurrent, the asyncio.Semaphore), then a FIFO of at most
 * max_queue waiting ones; beyond both, no.  A request holds its slot
 * across all its tries and the waits between them.  Pure bookkeeping:
 * the caller starts a waiter that limiter_release() hands a slot to, and
 * times waiters out (tests/unit/test_policy.c).
 */
#ifndef AGATE_LIMITER_H
#define AGATE_LIMITER_H

#include <stdbool.h>
#include <sys/queue.h>

struct lim_waiter {
	TAILQ_ENTRY(lim_waiter)	 entry;
	bool			 queued;
	/* Its owner's: called by whoever released the slot it now holds. */
	void			(*wake)(struct lim_waiter *);
};

struct limiter {
	int			 active;	/* slots held */
	int			 max;
	int			 nqueued;
	int			 max_queue;
	TAILQ_HEAD(, lim_waiter) queue;
};

enum lim_result {
	LIM_GO,			/* w holds a slot */
	LIM_QUEUED,		/* w waits; limiter_release() will pick it */
	LIM_FULL		/* no slot and no room to wait: 503 */
};

void	limiter_init(struct limiter *, int max, int max_queue);
enum lim_result limiter_acquire(struct limiter *, struct lim_waiter *);
/* Gives a slot back.  Returns the waiter that now holds it (first in,
 * first out), or NULL when nobody waits. */
struct lim_waiter *limiter_release(struct limiter *);
/* A waiter leaves the queue without a slot (timeout, client gone). */
void	limiter_cancel(struct limiter *, struct lim_waiter *);

#endif
