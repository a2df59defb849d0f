/*
 * The upstream call: one request to an upstream through its policies,
 * whoever asked for it.  Proxying (proxy.c) makes one call per client
 * request and streams its answer to the client; a fan-out (fanout/)
 * makes several and collects theirs.  Both get the same admission
 * (max_concurrent and its FIFO queue, or 503), server choice (health,
 * breaker, balance), retries with backoff within the budget and the
 * deadline, hedging, the stale-connection resend and the metrics.
 *
 * The caller describes what to send (struct call_spec) and where the
 * answer goes (struct call_sink), then:
 *
 *   call_start()        admits the call and starts its first try
 *   call_body_ready()   more of the client's body can be read
 *   call_writable()     the sink has room again (after full())
 *   call_cancel()       the caller gives up (client gone, fan-out done)
 *
 * The call reports to the sink: head() once, for the answer it took
 * (an answer it retries is never seen), body() for each piece, then
 * done() exactly once unless the caller cancelled.  done(NULL) means the
 * answer ended whole; done(status, error) that there is no answer (before
 * head()) or that it was cut (after).  After done() the call is gone.
 * head() or body() returning -1 ends the call too: the sink stopped it,
 * and done() follows with the error the transport saw (or 502).
 *
 * Each try is handed to one of three transports: agate's own HTTP/1.1
 * client (native.c: plain http://, pooled keep-alive connections), its
 * own HTTP/2 client (h2up.c: h2c://, streams on shared connections) or
 * libcurl (curlproxy.c: https://, or transport: curl), in one of the
 * call's two try slots (two only when hedging).  A transport reports back
 * exactly once per try, naming its slot:
 *
 *   call_accept()      the server answered with a status; false means
 *                      "do not pass it on": let go, then call_try_failed()
 *   call_try_failed()  the exchange failed; the call retries, reports
 *                      the error, or (a hedged try that lost) nothing
 *   call_try_end()     the answer is whole (ok), or the sink or the call
 *                      stopped this try (!ok)
 *
 * and before either of the last two it lets go of its connection.  Only
 * the try that call_accept() said yes to talks to the sink.
 */
#ifndef AGATE_CALL_H
#define AGATE_CALL_H

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

struct call;

/* Receives one header field for the upstream request. */
typedef int (*call_emit_fn)(void *arg, const char *name, size_t nlen,
    const char *value, size_t vlen);

/* What to send.  Everything it points at outlives the call. */
struct call_spec {
	/* The client request: its id, and its body when client_body. */
	struct request	*req;
	/* For the logs: NULL for a proxied request, else a fan-out call's
	 * name. */
	const char	*name;
	const char	*method;
	size_t		 method_len;
	/* path?query as the upstream gets it. */
	const char	*target;
	size_t		 target_len;
	/* The request's header fields (no framing, no Host). */
	int		(*headers)(const struct call *, call_emit_fn, void *arg,
			    struct buf *scratch);
	/* The body: the client's, streamed as it arrives; else body (NULL
	 * and has_body false: none; has_body: Content-Length even if 0). */
	bool		 client_body;
	bool		 has_body;
	const char	*body;
	size_t		 body_len;
	/* Monotonic ms after which no try may run, or 0.  With
	 * owner_deadline the caller's own timer cuts the call there (its
	 * tries arm no timeout past it); else a try that reaches it is an
	 * upstream timeout, as for a route's timeout. */
	uint64_t	 deadline;
	bool		 owner_deadline;
	uint64_t	 hedge_after_ms;	/* 0: no hedging */
	/*
	 * An Upgrade (WebSocket) handshake: one try, never retried or
	 * hedged, on a connection of its own.  A 101 answer is checked by
	 * check_switch (NULL: fine; else why it is not, and the try fails
	 * as an invalid answer), then handed to the sink's switched().
	 */
	bool		 upgrade;
	const char	*(*check_switch)(const struct call *,
			    const char *fields, size_t fields_len);
	/* The call needs HTTP/2 (gRPC): to an https server it goes through
	 * agate's own HTTP/2 client (TLS, ALPN h2), unless transport: curl. */
	bool		 http2;
};

/*
 * Where the answer goes (see the top of this file); arg is the caller's
 * (call_start's sink_arg).  fields are the answer's header lines as a
 * client may see them: hop-by-hop fields and framing dropped, the
 * request's X-Request-Id; content_length is -1 when unknown.
 */
struct call_sink {
	int	(*head)(void *arg, int status, const char *reason,
		    size_t reason_len, const char *fields, size_t fields_len,
		    int64_t content_length);
	int	(*body)(void *arg, const char *data, size_t len);
	/* Optional: room to read body bytes into without a copy. */
	char	*(*space)(void *arg, size_t want, size_t *room);
	void	(*commit)(void *arg, size_t n);
	/* Optional: true while the sink wants the transfer paused. */
	bool	(*full)(void *arg);
	/* Optional: the server that now counts (a try started or was sent
	 * again there, or it won a hedge) and the tries so far. */
	void	(*tried)(void *arg, const char *server_url, int tries);
	/* The call is over and gone (see above); extra_headers go with an
	 * error answer (Retry-After) or are NULL. */
	void	(*done)(void *arg, int status, const char *error,
		    const char *extra_headers);
	/*
	 * Upgrade calls: the server switched protocols (101).  fields as
	 * for head(), with its Upgrade field; fd is its connection, now the
	 * sink's in every case (with ssl, its TLS state, for an https
	 * server; else NULL), and early what it sent after the head.
	 * Returns 0, or -1 if the client is gone.  done(NULL) follows.
	 */
	int	(*switched)(void *arg, const char *fields, size_t fields_len,
		    int fd, struct ssl_st *ssl, const char *early,
		    size_t early_len);
	/* Optional: the answer's trailer fields ("Name: value\r\n"...),
	 * after its body and before done(NULL). */
	void	(*trailers)(void *arg, const char *fields, size_t len);
};

/* What a transport's try answers to while it runs. */
struct call_try_ops {
	void	(*body_ready)(void *);
	void	(*writable)(void *);
	void	(*cancel)(void *);	/* let go, then call_try_end(!ok) */
};

struct call_try {
	size_t			 server;
	uint64_t		 trial;		/* breaker trial since, or 0 */
	bool			 in_try;	/* a transport has it */
	bool			 recorded;	/* its result is counted */
	bool			 measured;	/* its outcome is in metrics */
	bool			 retry;		/* not the call's first try */
	uint64_t		 start_us;	/* monotonic */
	/* Its client span (gateway/trace/): the id it sends as the
	 * traceparent's parent, and what it ended with. */
	uint8_t			 span_id[8];
	uint64_t		 span_start_ns;	/* 0: not recorded */
	int			 span_nth;	/* 0: the first try */
	int			 span_status;	/* the answer's, or 0 */
	const char		*span_error;	/* error.type, or NULL */
	const struct call_try_ops *ops;		/* the transport's */
	void			*arg;
};

struct call {
	const struct call_spec	*spec;
	const struct call_sink	*sink;
	void			*sink_arg;	/* the caller's */
	struct upstream_rt	*up;
	struct call_try		 t[2];
	int			 cur;		/* the try slot that counts */
	int			 cancelling;	/* slot being cancelled, or -1 */
	bool			 hedging;	/* two tries out, none chosen */
	bool			 won;		/* one of two was chosen */
	bool			 head_sent;	/* the sink has a head */
	bool			*over;		/* call_start()'s: it is done */
	int			 tries;
	int			 resends;	/* stale-connection resends */
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

/*
 * Starts a call on up.  Returns it, or NULL when it is over already
 * (done() has been called: refused, or no server).  spec must outlive
 * the call.
 */
struct call *call_start(struct upstream_rt *up, const struct call_spec *,
	    const struct call_sink *, void *sink_arg);
void	call_body_ready(struct call *);
void	call_writable(struct call *);
/* Ends the call now; no sink callback follows. */
void	call_cancel(struct call *);
void	call_free_all(void);


/* -- for the transports ------------------------------------------------ */

/* The sink of the try that call_accept() took, as the transports see it. */
static inline int
call_head(struct call *c, int status, const char *reason, size_t reason_len,
    const char *fields, size_t fields_len, int64_t content_length)
{
	return c->sink->head(c->sink_arg, status, reason, reason_len, fields,
	    fields_len, content_length);
}

static inline int
call_body(struct call *c, const char *data, size_t len)
{
	return c->sink->body(c->sink_arg, data, len);
}

/* Room to read body bytes into, or NULL (then call_body()). */
static inline char *
call_space(struct call *c, size_t want, size_t *room)
{
	return c->sink->space != NULL ? c->sink->space(c->sink_arg, want,
	    room) : NULL;
}

static inline void
call_commit(struct call *c, size_t n)
{
	c->sink->commit(c->sink_arg, n);
}

/* The sink takes the upgraded connection (call_sink.switched). */
static inline int
call_switched(struct call *c, const char *fields, size_t fields_len, int fd,
    struct ssl_st *ssl, const char *early, size_t early_len)
{
	return c->sink->switched(c->sink_arg, fields, fields_len, fd, ssl,
	    early, early_len);
}

/* The answer's trailers, if the sink takes them. */
static inline void
call_trailers(struct call *c, const char *fields, size_t len)
{
	if (c->sink->trailers != NULL && len > 0)
		c->sink->trailers(c->sink_arg, fields, len);
}

/* Whether the sink wants the transfer paused. */
static inline bool
call_full(const struct call *c)
{
	return c->sink->full != NULL && c->sink->full(c->sink_arg);
}

/* The header fields of try slot's request (its spec's headers() with
 * the trace context of the try). */
int	call_headers(const struct call *, int slot, call_emit_fn, void *arg,
	    struct buf *scratch);
void	call_try_attach(struct call *, int slot, const struct call_try_ops *,
	    void *arg);
bool	call_accept(struct call *, int slot, int status);
void	call_try_failed(struct call *, int slot, enum try_fail, int status,
	    const char *msg);
void	call_try_end(struct call *, int slot, bool ok);
/* A try sent again on a fresh connection (the stale keep-alive race). */
void	call_resent(struct call *, int slot);
/* Milliseconds the try may take, or 0: no timeout (the caller's deadline
 * cuts it). */
uint64_t call_try_ms(const struct call *);
/* The same for connecting (connect_timeout). */
uint64_t call_connect_ms(const struct call *);
/* Whether retry.methods lists the call's method. */
bool	call_method_retryable(const struct call *);
/* The caller cut the call (its own deadline): logged with the server of
 * the try out, or what the call was waiting for. */
void	call_log_cut(const struct call *, const char *what);
/* A warning about a failed upstream exchange, at most 10 a second. */
void	call_log_failure(const struct call *, int slot, const char *what,
	    const char *detail);
/* What a failed (or answered, TRY_STATUS) try counts as in metrics. */
enum m_outcome call_outcome(enum try_fail, int status);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t call_mono_us(void);

/* call_trace.c: a try's client span starts, ends. */
void	call_trace_start(struct call *, int slot);
void	call_trace_end(struct call *, int slot);

/* The transports. */
void	native_start(struct call *, int slot);
void	native_free(void);
void	curlproxy_start(struct call *, int slot);
void	curlproxy_free(void);
void	h2up_start(struct call *, int slot);
void	h2up_free(void);

/* -- proxy.c: a route's request to its upstream, answered to the client */

void	proxy_start(struct request *);
/* The same for an Upgrade request that tunnel.c has checked. */
void	proxy_start_upgrade(struct request *);
void	proxy_free(void);
/* The path an upstream receives (strip_prefix applied) and the query. */
int	proxy_target(const struct request *, struct buf *);

/* -- upgrade.c: Upgrade (WebSocket) requests, tunnelled ---------------- */

/* Whether r asks to switch protocols (HTTP/1.1, Connection: upgrade). */
bool	upgrade_wanted(const struct request *);
/* The content handler: checks the handshake, then proxies it. */
void	upgrade_start(struct request *);
/* For the call: its header fields, its check of the 101, its tunnel. */
int	upgrade_headers(const struct call *, call_emit_fn, void *,
	    struct buf *);
const char *upgrade_check_switch(const struct call *, const char *fields,
	    size_t len);
int	upgrade_switched(struct request *, const char *fields,
	    size_t fields_len, int fd, struct ssl_st *ssl, const char *early,
	    size_t early_len);

#endif
