/*
 * Proxying one request to an upstream through libcurl: headers filtered
 * both ways, bodies streamed both ways with backpressure, errors mapped to
 * agate's JSON answers (502 failed, 504 timed out).
 */
#ifndef AGATE_PROXY_H
#define AGATE_PROXY_H

#include "gateway/config.h"
#include "worker/http.h"

int	proxy_init(const struct config *);
void	proxy_free(void);
/* Starts the exchange for r on r->route's upstream; answers r eventually. */
void	proxy_start(struct request *);

#endif
