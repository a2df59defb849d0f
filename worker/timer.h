/*
 * Timeout lists.  Every connection in a given state waits the same
 * duration (idle_timeout, header_timeout...), so one FIFO list per
 * duration keeps its nodes in deadline order for free: arming is an
 * append, disarming an unlink, and one libevent timer per list watches
 * the head.  A connection carries one node, 32 bytes, instead of a
 * struct event of its own.
 */
#ifndef AGATE_TIMER_H
#define AGATE_TIMER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>

struct tlist;

struct tnode {
	TAILQ_ENTRY(tnode)	 link;
	uint64_t		 at;	/* monotonic ms */
	struct tlist		*list;	/* NULL: not armed */
};

struct tlist {
	TAILQ_HEAD(tnode_q_head, tnode) q;
	uint64_t		 ms;
	struct event		 ev;
	bool			 armed;
	void			(*fire)(struct tnode *);
};

uint64_t now_ms(void);
void	tlist_init(struct tlist *, struct event_base *, uint64_t ms,
	    void (*fire)(struct tnode *));
void	tlist_free(struct tlist *);
/* (Re)arms node to fire after the list's duration. */
void	tlist_add(struct tlist *, struct tnode *);
/* Arms node to fire at an absolute time no later than now + list->ms. */
void	tlist_add_at(struct tlist *, struct tnode *, uint64_t at);
void	tnode_del(struct tnode *);

#endif
