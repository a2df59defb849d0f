/*
 * Host names of upstream servers, looked up without blocking (libevent's
 * evdns), again and again: see dns.c.  Each worker looks up its own
 * names and hands the addresses to upstream.c's slots.
 */
#ifndef AGATE_DNS_H
#define AGATE_DNS_H

#include "gateway/config/config.h"

struct event_base;

/* Starts looking up every named server of cfg (upstream_init() first),
 * and runs the loop for their first answers, up to 1 s, before the
 * worker listens.  0, or -1 when out of memory. */
int	dns_init(struct event_base *, const struct config *);
void	dns_free(void);

#endif
