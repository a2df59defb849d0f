/*
 * Proxying a request to its route's upstream, with the upstream's
 * policies: the concurrency limit and its queue, server choice (skipping
 * servers that are down or whose breaker is open), retries with backoff
 * within a budget, and the route's deadline across all of it.
 *
 * A struct call is one proxied request from admission to its answer.
 * Each try is handed to one of two transports: agate's own HTTP/1.1
 * client (native.c: plain http://, pooled keep-alive connections) or
 * libcurl (curlproxy.c: https://, or transport: curl), in one of the
 * call's two try slots (two only when hedging: hedge_after).  A transport
 * reports back exactly once per try, naming its slot:
 *
 *   call_accept()      the server answered with a status; false means
 *                      "do not pass it on": let go, then call_try_failed()
 *   call_try_failed()  the exchange failed; the call retries, answers
 *                      with the error, cuts a started response, or (a
 *                      hedged try that lost) does nothing
 *   call_end()         the client has its answer (or is gone), or the
 *                      call cancelled this try
 *
 * and before either of the last two it lets go of its connection, and of
 * the request's r->gw and r->hooks if they point at it.  Only the try
 * call_accept() said yes to touches the response.
 */
#ifndef AGATE_PROXY_H
#define AGATE_PROXY_H

#include <stdint.h>

#include <event2/event_struct.h>

#include "gateway/config/config.h"
#include "gateway/metrics/metrics.h"
#include "gateway/upstream/limiter.h"
#include "gateway/upstream/retry.h"
#include "gateway/upstream/upstream.h"
#include "lib/buf.h"
#include "worker/http.h"


/* A request body up to this size is kept for a retry to send again. */
#define CALL_REPLAY_MAX	(1024 * 1024)

struct call_try {
	size_t			 server;
	uint64_t		 trial;		/* breaker trial since, or 0 */
	bool			 in_try;	/* a transport has it */
	bool			 recorded;	/* its result is counted */
	bool			 measured;	/* its outcome is in metrics */
	bool			 retry;		/* not the call's first try */
	uint64_t		 start_us;	/* monotonic */
	/* The transport's r->gw and r->hooks, kept while two tries are
	 * out (the request then points at the call). */
	void			*gw;
	const struct req_hooks	*hooks;
};

struct call {
	struct request		*req;
	struct upstream_rt	*up;
	struct call_try		 t[2];
	int			 cur;		/* the try slot that counts */
	int			 cancelling;	/* slot being cancelled, or -1 */
	bool			 hedging;	/* two tries out, none chosen */
	bool			 won;		/* one of two was chosen */
	int			 tries;
	uint64_t		 tried;		/* servers tried (bits < 64) */
	uint64_t		 backoff_ms;	/* before the retry decided */
	bool			 retry_next;	/* call_accept() chose a retry */
	bool			 is_retry;	/* holds a retry budget share */
	bool			 has_slot;
	struct lim_waiter	 wait;
	struct event		 timer;		/* queue wait, backoff */
	struct event		 hedge;		/* hedge_after; the loser's end */
	struct call		*next_free;
};

/* Starts proxying r on r->route's upstream; answers r eventually. */
void	proxy_start(struct request *);
void	proxy_free(void);

bool	call_accept(struct call *, int slot, int status);
void	call_try_failed(struct call *, int slot, enum try_fail, int status,
	    const char *msg);
void	call_end(struct call *, int slot);

/* What a failed (or answered, TRY_STATUS) try counts as in metrics. */
enum m_outcome proxy_outcome(enum try_fail, int status);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t proxy_mono_us(void);

/* What the transports share. */
/* Milliseconds this try may take: the upstream timeout, capped by what
 * is left of the route's timeout (1 if nothing is). */
uint64_t proxy_try_ms(const struct request *, const struct upstream_cfg *);
/* Appends the path an upstream receives (strip_prefix applied) and the
 * query.  Returns 0, or -1 when out of memory. */
int	proxy_target(const struct request *, struct buf *);
/* Whether retry.methods lists the request's method. */
bool	proxy_method_retryable(const struct request *,
	    const struct upstream_cfg *);
/* A warning about a failed upstream exchange, at most 10 a second. */
void	proxy_log_failure(const struct upstream_rt *, size_t server,
	    const char *what, const char *detail);
/* The same for a fan-out call: its name, then where and why.  server is
 * -1 when none was chosen; detail may be NULL. */
void	proxy_log_call_failure(const char *call, const struct upstream_rt *,
	    ssize_t server, const char *what, const char *detail);

/* The transports. */
void	native_start(struct call *, int slot);
void	native_free(void);
void	curlproxy_start(struct call *, int slot);
void	curlproxy_free(void);

#endif
