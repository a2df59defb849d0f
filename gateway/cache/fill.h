/*
 * What the cache's handler (cache.c) and its fills (fill.c) share;
 * private to gateway/cache/.
 */
#ifndef AGATE_CACHE_FILL_H
#define AGATE_CACHE_FILL_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/cache/store.h"
#include "lib/buf.h"
#include "worker/http.h"

struct cache_fields;

/* The worker's copy of a stored answer (store_lookup()'s out). */
extern struct buf cache_copy;

/* The wall clock in ms: what the store's times are in. */
int64_t	cache_wall_ms(void);
/* A field of a stored head ("Name: value\r\n"...), or NULL. */
const char *cache_stored_field(const char *head, size_t len,
	    const char *name, size_t *vlen);
/* r's key: path?query, a newline, the host.  0, or -1 (no memory). */
int	cache_key(const struct request *, struct buf *);
/* Answers r from a stored answer in cache_copy (X-Cache: label); f:
 * r's fields, or NULL to look them up. */
void	cache_serve(struct request *, const struct store_hit *,
	    const char *label, const struct cache_fields *f);
/* Wakes this worker's waiters at once: a fill here has ended. */
void	cache_wake(void);

/*
 * Starts a fill of r's key (t: its lock) for client, or, with client
 * NULL, a refresh in the background.  stale: the stored answer in
 * cache_copy, for stale_if_error, or NULL.
 */
void	fill_start(struct request *r, struct request *client,
	    const struct store_ticket *t, const struct store_hit *stale);
/* The worker is exiting: every fill cancelled, its lock let go. */
void	fill_cancel_all(void);

#endif
