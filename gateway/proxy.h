/*
 * Proxying a request to one server of its route's upstream.  The server
 * is picked here; the exchange is done by one of two transports: agate's
 * own HTTP/1.1 client (native.c: plain http://, pooled keep-alive
 * connections) or libcurl (curlproxy.c: https://, or transport: curl).
 * Both answer the client the same way: headers filtered both ways,
 * bodies streamed with backpressure, 502 for a failed upstream, 504 for a
 * slow one.
 */
#ifndef AGATE_PROXY_H
#define AGATE_PROXY_H

#include <stdint.h>

#include "gateway/config.h"
#include "gateway/upstream.h"
#include "lib/buf.h"
#include "worker/http.h"

/* Starts the exchange for r on r->route's upstream; answers r eventually. */
void	proxy_start(struct request *);
void	proxy_free(void);

/* What the transports share. */
/* Milliseconds this try may take: the upstream timeout, capped by what
 * is left of the route's timeout (1 if nothing is). */
uint64_t proxy_try_ms(const struct request *, const struct upstream_cfg *);
/* Appends the path an upstream receives (strip_prefix applied) and the
 * query.  Returns 0, or -1 when out of memory. */
int	proxy_target(const struct request *, struct buf *);
/* A warning about a failed upstream exchange, at most 10 a second. */
void	proxy_log_failure(const struct upstream_rt *, size_t server,
	    const char *what, const char *detail);

/* The transports. */
void	native_start(struct request *, struct upstream_rt *, size_t server);
void	native_free(void);
void	curlproxy_start(struct request *, struct upstream_rt *,
	    size_t server);
void	curlproxy_free(void);

#endif
