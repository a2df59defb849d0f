/*
 * Active health checks.  One worker of a generation (worker 0; a new
 * worker 0 takes over after a crash) probes every server of each upstream
 * with a health_check section: GET health_check.path every interval,
 * through the worker's libcurl multi handle, never blocking its loop.  A
 * 2xx or 3xx answer within health_check.timeout is a success.  After
 * `unhealthy` failures in a row the server is marked down in the shared
 * segment, and every worker stops sending it requests; after `healthy`
 * successes in a row it is up again.  Both changes are logged.
 */
#ifndef AGATE_HEALTH_H
#define AGATE_HEALTH_H

#include <stdbool.h>

#include "gateway/config/config.h"

struct event_base;

/* Starts probing if prober is set (this worker probes).  0, or -1. */
int	health_init(struct event_base *, const struct config *, bool prober);
void	health_free(void);

#endif
