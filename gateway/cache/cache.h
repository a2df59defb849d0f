/*
 * The HTTP cache: a content handler for routes with cache: (cache.c),
 * on a store in shared memory for all workers (store.c), by RFC 9111's
 * rules (policy.c).  docs/cache.md says what it does.
 */
#ifndef AGATE_CACHE_H
#define AGATE_CACHE_H

#include <stddef.h>

#include "lib/buf.h"
#include "worker/http.h"

/* X-Cache: what (HIT, MISS, STALE, BYPASS) on r's answer, whoever
 * makes it, and in its log line. */
void	cache_label(struct request *, const char *what);
/* The content handler of a route with cache:. */
void	cache_start(struct request *);
/* The worker is exiting: fills are cancelled, waiters forgotten. */
void	cache_free(void);
/* The admin listener's DELETE /cache?prefix=...: the answer. */
void	cache_purge(struct request *);
/* Its metrics, in Prometheus text. */
void	cache_metrics(struct buf *);

#endif
