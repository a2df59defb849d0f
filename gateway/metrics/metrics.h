/*
 * Metrics in shared memory (see metrics.c).  The supervisor maps one
 * segment at start, names routes, upstreams and servers into its slots at
 * every config load, and gives each worker it forks a stripe of its own.
 * Workers only ever write their own stripe, with plain stores; whoever
 * answers /metrics sums the stripes.
 */
#ifndef AGATE_METRICS_H
#define AGATE_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/buf.h"

struct config;
struct request;

/* Outcomes of one upstream try (agate_upstream_requests_total). */
enum m_outcome {
	MO_2XX, MO_3XX, MO_4XX, MO_5XX,
	MO_CONNECT_FAILURE, MO_TIMEOUT, MO_RESET, MO_INVALID, MO_OTHER,
	MO_COUNT
};

/* How a tunnel ended (agate_tunnels_total). */
enum m_tunnel_end {
	MT_CLIENT_CLOSED, MT_UPSTREAM_CLOSED, MT_IDLE_TIMEOUT, MT_DRAINED,
	MT_ERROR,
	MT_COUNT
};

/* "client_closed"... as in the metric and the access log. */
const char *m_tunnel_end_name(enum m_tunnel_end);

/* -- the supervisor ------------------------------------------------------ */

/* Maps the segment.  0, or -1 (metrics are then off). */
int	metrics_init(void);
/* Gives cfg's routes, upstreams and servers their slots (by name). */
void	metrics_assign(struct config *);
/* A stripe for a worker about to be forked, or -1 if none is free. */
int	metrics_stripe_take(void);
/* The worker in stripe i is pid (generation gen, slot index). */
void	metrics_stripe_own(int i, pid_t pid, unsigned gen, int index);
/* The worker of stripe i is gone: its gauges go, its counters stay. */
void	metrics_stripe_release(int i);
void	metrics_reload(bool ok);

/* -- a worker ------------------------------------------------------------ */

/* From now on this process writes stripe i (-1: nowhere). */
void	metrics_attach(int i);
void	metrics_request(const struct request *);
/* One upstream try: server is the server's slot; us its time to the
 * answer (or the failure); retry if it was not the first try. */
void	metrics_try(int upstream, int server, enum m_outcome, uint64_t us,
	    bool retry);
/* A lookup of a named server (server slot) ended; live: its addresses
 * in this worker now. */
void	metrics_dns(int server, bool ok, unsigned live);
void	metrics_connections(int n);
/* Tunnels open in this worker now. */
void	metrics_tunnels(int n);
/* A tunnel closed, with the bytes it carried each way. */
void	metrics_tunnel_closed(enum m_tunnel_end, uint64_t to_upstream,
	    uint64_t to_client);
/* A sample of event-loop lag. */
void	metrics_lag(uint64_t us);
/* A callback of this kind (enum lw_kind, worker/loopwatch.h) took
 * longer than log.slow_callback. */
void	metrics_slow_callback(unsigned kind);
/* A request began (+1) or ended (-1) in this worker. */
void	metrics_in_flight(int delta);
void	metrics_upstream_queue(int upstream, uint32_t waiting,
	    uint32_t in_flight);
void	metrics_offload_job(unsigned kind, int status);
/* Redis (rate limits) could not answer. */
void	metrics_redis_failure(void);
/* Tracing spans exported, dropped, and exports that failed. */
void	metrics_tracing(uint64_t exported, uint64_t dropped, uint64_t failed);
/* A request of route slot refused by its rate limit. */
void	metrics_rate_limited(int route);
void	metrics_offload_queue(uint32_t queued, uint32_t running);

/* -- reading (the admin listener) ----------------------------------------- */

void	metrics_prometheus(struct buf *, const struct config *);
void	metrics_status_json(struct buf *, const struct config *);

#endif
