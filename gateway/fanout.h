/*
 * Fan-out routes (`fanout:` in a route): several upstream calls at once
 * for one client request, answered per the route's mode.  See fanout.c
 * and docs/fanout.md.
 */
#ifndef AGATE_FANOUT_H
#define AGATE_FANOUT_H

#include "worker/http.h"

/* Starts the calls of r->route's fan-out; answers r eventually. */
void	fanout_start(struct request *);

#endif
