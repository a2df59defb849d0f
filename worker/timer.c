/*
 * Timeout lists (see timer.h).  The list timer is armed lazily: it may
 * fire early for a node that was since re-armed, in which case it just
 * re-arms for the new head.
 */
#include <time.h>

#include "worker/loopwatch.h"
#include "worker/timer.h"

uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
tlist_arm(struct tlist *l, uint64_t now)
{
	struct tnode *head = TAILQ_FIRST(&l->q);
	struct timeval tv;
	uint64_t wait;

	if (head == NULL) {
		if (l->armed)
			event_del(&l->ev);
		l->armed = false;
		return;
	}
	/* COARSE time ticks every few ms: a little slack avoids spinning. */
	wait = head->at > now ? head->at - now + 5 : 1;
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
	event_add(&l->ev, &tv);
	l->armed = true;
}

static void
tlist_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tlist *l = arg;
	uint64_t now = now_ms();
	struct tnode *n;

	loopwatch_begin(LW_TIMER);
	l->armed = false;
	while ((n = TAILQ_FIRST(&l->q)) != NULL && n->at <= now) {
		TAILQ_REMOVE(&l->q, n, link);
		n->list = NULL;
		l->fire(n);
	}
	if (!l->armed)
		tlist_arm(l, now);
	loopwatch_end();
}

void
tlist_init(struct tlist *l, struct event_base *base, uint64_t ms,
    void (*fire)(struct tnode *))
{
	TAILQ_INIT(&l->q);
	l->ms = ms;
	l->fire = fire;
	l->armed = false;
	evtimer_assign(&l->ev, base, tlist_cb, l);
}

void
tlist_free(struct tlist *l)
{
	struct tnode *n;

	while ((n = TAILQ_FIRST(&l->q)) != NULL) {
		TAILQ_REMOVE(&l->q, n, link);
		n->list = NULL;
	}
	if (l->armed)
		event_del(&l->ev);
	l->armed = false;
}

void
tnode_del(struct tnode *n)
{
	if (n->list == NULL)
		return;
	TAILQ_REMOVE(&n->list->q, n, link);
	n->list = NULL;
}

void
tlist_add_at(struct tlist *l, struct tnode *n, uint64_t at)
{
	struct tnode *tail;

	tnode_del(n);
	n->at = at;
	n->list = l;
	/* Keep deadline order: an earlier deadline walks back (rare). */
	tail = TAILQ_LAST(&l->q, tnode_q_head);
	while (tail != NULL && tail->at > at)
		tail = TAILQ_PREV(tail, tnode_q_head, link);
	if (tail == NULL)
		TAILQ_INSERT_HEAD(&l->q, n, link);
	else
		TAILQ_INSERT_AFTER(&l->q, tail, n, link);
	if (!l->armed || TAILQ_FIRST(&l->q) == n)
		tlist_arm(l, now_ms());
}

void
tlist_add(struct tlist *l, struct tnode *n)
{
	tlist_add_at(l, n, now_ms() + l->ms);
}
