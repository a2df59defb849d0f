/*
 * Event-loop health (loopwatch.c): how long each callback the worker's
 * loop runs takes, by kind.  A callback longer than log.slow_callback is
 * counted (agate_event_loop_slow_callbacks_total) and logged, at most one
 * line a second.
 *
 * Every callback libevent calls in a worker starts with
 * loopwatch_begin(kind) and ends with loopwatch_end(); a callback that
 * calls another one directly nests (only the outermost pair measures).
 * Both cost two coarse clock reads (vDSO, no system call) and no
 * allocation: they may sit on every request's path.
 */
#ifndef AGATE_LOOPWATCH_H
#define AGATE_LOOPWATCH_H

#include <stdint.h>

enum lw_kind {
	LW_ACCEPT,		/* accepting client connections */
	LW_CLIENT_TLS,		/* a client's TLS handshake */
	LW_CLIENT_HTTP1_READ,	/* a client connection, HTTP/1.1 (TLS or */
	LW_CLIENT_HTTP1_WRITE,	/*   not): reading, and the request work */
	LW_CLIENT_H2_READ,	/* the same for an HTTP/2 connection */
	LW_CLIENT_H2_WRITE,
	LW_CLIENT_FLUSH,	/* the end-of-pass flush of answers */
	LW_TUNNEL,		/* WebSocket and other upgraded tunnels */
	LW_UPSTREAM_HTTP1_READ,	/* agate's own HTTP/1.1 upstream client */
	LW_UPSTREAM_HTTP1_WRITE,
	LW_UPSTREAM_H2,		/* agate's own HTTP/2 upstream client */
	LW_CURL_SOCKET,		/* libcurl's sockets (https upstreams) */
	LW_CURL_TIMER,		/* libcurl's timer */
	LW_UPSTREAM_TIMER,	/* call timeouts, retry backoff, hedging */
	LW_OFFLOAD,		/* offload helpers' pipes and respawns */
	LW_TIMER,		/* timer lists: idle, keep-alive, linger... */
	LW_CACHE_WAIT,		/* requests waiting on a cache fill */
	LW_ADMIN,		/* the admin listener's pages */
	LW_SIGNAL,		/* signals and the supervisor's orders */
	LW_OTHER,		/* health probes, log flush, rate limits... */
	LW_COUNT
};

/* "client_http1_read"... as in the metric's kind label. */
const char	*loopwatch_kind_name(enum lw_kind);

/* In a worker, before its loop runs: threshold_us 0 turns it off. */
void	loopwatch_init(uint64_t threshold_us);
void	loopwatch_begin(enum lw_kind);
void	loopwatch_end(void);
/* The callback being measured is in fact of this kind (e.g. a request
 * read on a client connection turns out to be for the admin page). */
void	loopwatch_relabel(enum lw_kind);
/* Once in a while (the lag timer): says how many warnings were held
 * back, once the second since the last one has passed. */
void	loopwatch_tick(void);

#endif
