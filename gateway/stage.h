/*
 * Per-request stages: the policies a route may ask for (CORS, rate limit,
 * authentication, signatures, compression), each one row of a table run
 * in order, as nginx's phase handlers and h2o's handlers are.  After the
 * last stage the route's content handler (proxy or fan-out, chosen when
 * the config was loaded) takes the request.
 *
 * A stage's run() returns
 *   STAGE_NEXT  it passed (or had nothing to do): on to the next stage;
 *   STAGE_DONE  the request has its answer (refused, or a preflight);
 *   STAGE_WAIT  it waits (an offload job, Redis, the body) and owns
 *               r->gw and r->hooks meanwhile; it clears both and calls
 *               stage_resume() once, with NEXT or DONE, when it is over.
 *
 * Adding a policy: one file that defines a `const struct stage`, and its
 * row in the table of gateway/stage.c.  A policy never calls the next one
 * or the content handler by name.
 */
#ifndef AGATE_STAGE_H
#define AGATE_STAGE_H

#include <stdbool.h>

struct config;
struct event_base;
struct request;
struct route_cfg;

enum stage_result {
	STAGE_NEXT,
	STAGE_DONE,
	STAGE_WAIT
};

struct stage {
	const char	*name;
	/* Whether the route asks for this stage; NULL: every route. */
	bool		(*wanted)(const struct route_cfg *);
	/* Per-worker set-up once the loop exists, and its undoing (both
	 * optional).  init returns 0, or -1 to stop the worker. */
	int		(*init)(struct event_base *, const struct config *);
	void		(*fini)(void);
	enum stage_result (*run)(struct request *);
};

/* Runs r's stages from the first, then its content handler. */
void	stage_start(struct request *);
/* A stage that returned STAGE_WAIT is over: NEXT goes on, DONE stops. */
void	stage_resume(struct request *, enum stage_result);
int	stage_init_all(struct event_base *, const struct config *);
void	stage_fini_all(void);

#endif
