/*
 * The call: one request to an upstream through its policies (see
 * call.h), for a proxied request or a fan-out call alike.
 *
 *   call_start -> admission (limiter: go, queue, or 503)
 *     -> try: pick a server (up, breaker lets it) -> transport
 *          -> call_accept / call_try_failed / call_try_end
 *     -> retry?  (conditions, methods, attempts, budget, deadline,
 *                 body replayable) -> backoff timer -> try again
 *     -> call_finish: slot to the next waiter; the sink's done()
 *
 * Nothing here blocks: the queue wait and the backoff are timers on the
 * worker's loop, and a caller that gives up cancels them.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "gateway/metrics/metrics.h"
#include "gateway/upstream/call.h"
#include "gateway/upstream/retry.h"
#include "lib/log.h"
#include "worker/loopwatch.h"
#include "worker/worker.h"

#define CALL_POOL_MAX	256

static struct call	*call_pool;
static size_t		 call_pooled;

static void	call_try(struct call *);
static void	call_finish(struct call *, int status, const char *error,
		    const char *extra);
static void	call_release(struct call *);
static void	call_wake(struct lim_waiter *);
static void	call_hedge_cb(evutil_socket_t, short, void *);
static void	call_transport(struct call *, int slot);
static void	call_tell_server(struct call *, int slot);

/* -- logging ------------------------------------------------------------ */

/* At most 10 lines a second per kind, so a dead upstream under load
 * cannot flood the log; what is dropped is counted. */
struct log_window {
	uint64_t	 sec;
	uint64_t	 count;
};

static struct log_window failure_window;

static bool
log_allowed(struct log_window *w, const char *what)
{
	uint64_t sec = (uint64_t)time(NULL);

	if (sec != w->sec) {
		if (w->count > 10)
			log_warnx("proxy: %llu more %s not logged",
			    (unsigned long long)(w->count - 10), what);
		w->sec = sec;
		w->count = 0;
	}
	return ++w->count <= 10;
}

/* A failure of the call, or of one of its tries (slot >= 0): the server
 * is named when there was one; a fan-out call by its name. */
static void
call_log(const struct call *c, int slot, const char *what,
    const char *detail)
{
	const struct upstream_cfg *u = c->up->cfg;
	char where[600];

	if (!log_allowed(&failure_window, "upstream failures"))
		return;
	if (slot >= 0)
		snprintf(where, sizeof(where), "upstream %s server %s",
		    u->name, c->up->servers[c->t[slot].server].cfg->url);
	else
		snprintf(where, sizeof(where), "upstream %s", u->name);
	if (c->spec->name != NULL)
		log_warnx("fan-out: call \"%s\": %s: %s%s%s%s", c->spec->name,
		    where, what, detail != NULL ? " (" : "",
		    detail != NULL ? detail : "", detail != NULL ? ")" : "");
	else
		log_warnx("proxy: %s: %s%s%s%s", where, what,
		    detail != NULL ? " (" : "", detail != NULL ? detail : "",
		    detail != NULL ? ")" : "");
}

void
call_log_failure(const struct call *c, int slot, const char *what,
    const char *detail)
{
	call_log(c, slot, what, detail);
}

void
call_log_cut(const struct call *c, const char *what)
{
	int k = c->t[c->cur].in_try ? c->cur : -1;

	call_log(c, k, what, c->wait.queued ? "waiting for a slot of the "
	    "upstream" : k < 0 && c->tries > 0 ? "waiting to retry" : NULL);
}

/* -- the pool ----------------------------------------------------------- */

static void
call_timer_cb_run(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;

	(void)fd;
	(void)what;
	if (c->wait.queued) {
		/* The deadline came while it waited for a slot. */
		limiter_cancel(&c->up->limit, &c->wait);
		call_finish(c, 504, "timed out waiting for a free slot of the "
		    "upstream (max_concurrent)", NULL);
		return;
	}
	call_try(c);
}

static void
call_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_UPSTREAM_TIMER);
	call_timer_cb_run(fd, what, arg);
	loopwatch_end();
}

static struct call *
call_get(void)
{
	struct call *c = call_pool;

	if (c != NULL) {
		call_pool = c->next_free;
		call_pooled--;
	} else if ((c = malloc(sizeof(*c))) == NULL)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->cancelling = -1;
	evtimer_assign(&c->timer, worker.base, call_timer_cb, c);
	evtimer_assign(&c->hedge, worker.base, call_hedge_cb, c);
	return c;
}

static void
call_put(struct call *c)
{
	evtimer_del(&c->timer);
	evtimer_del(&c->hedge);
	if (call_pooled >= CALL_POOL_MAX) {
		free(c);
		return;
	}
	c->next_free = call_pool;
	call_pool = c;
	call_pooled++;
}

void
call_free_all(void)
{
	struct call *c;

	native_free();
	h2up_free();
	curlproxy_free();
	while ((c = call_pool) != NULL) {
		call_pool = c->next_free;
		free(c);
	}
	call_pooled = 0;
}

/* -- time --------------------------------------------------------------- */

static void
call_arm_ev(struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

static void
call_arm(struct call *c, uint64_t ms)
{
	call_arm_ev(&c->timer, ms);
}

/* Milliseconds left before the call's deadline; UINT64_MAX without one. */
static uint64_t
call_left_ms(const struct call *c)
{
	uint64_t now = now_ms();

	if (c->spec->deadline == 0)
		return UINT64_MAX;
	return c->spec->deadline > now ? c->spec->deadline - now : 0;
}

/* A timeout of t ms for a try, within the call's deadline (see
 * call_try_ms()). */
static uint64_t
call_bound_ms(const struct call *c, uint64_t t)
{
	uint64_t left = call_left_ms(c);

	if (left == UINT64_MAX || t < left)
		return t;
	if (c->spec->owner_deadline)
		return 0;		/* the caller's timer cuts it */
	return left > 0 ? left : 1;
}

uint64_t
call_try_ms(const struct call *c)
{
	return call_bound_ms(c, c->up->cfg->timeout_ms);
}

uint64_t
call_connect_ms(const struct call *c)
{
	return call_bound_ms(c, c->up->cfg->connect_timeout_ms);
}

/* -- the breaker's view of a try ----------------------------------------- */

static bool
failure_status(int status)
{
	return status == 502 || status == 503 || status == 504;
}

uint64_t
call_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Try k's outcome, once, into the shared metrics. */
static void
call_measure(struct call *c, int k, enum m_outcome o)
{
	struct call_try *t = &c->t[k];
	const struct upstream_cfg *u = c->up->cfg;

	if (t->measured)
		return;
	t->measured = true;
	metrics_try(u->mslot, c->up->servers[t->server].cfg->mslot, o,
	    call_mono_us() - t->start_us, t->retry);
}

static enum m_outcome
status_outcome(int status)
{
	return status < 300 ? MO_2XX : status < 400 ? MO_3XX :
	    status < 500 ? MO_4XX : MO_5XX;
}

enum m_outcome
call_outcome(enum try_fail why, int status)
{
	switch (why) {
	case TRY_CONNECT:
		return MO_CONNECT_FAILURE;
	case TRY_TIMEOUT:
		return MO_TIMEOUT;
	case TRY_RESET:
		return MO_RESET;
	case TRY_INVALID:
		return MO_INVALID;
	case TRY_STATUS:
		return status_outcome(status);
	default:
		return MO_OTHER;
	}
}

static void
call_breaker(struct call *c, int k, bool ok)
{
	struct call_try *t = &c->t[k];
	uint64_t trial = t->trial;

	t->recorded = true;
	t->trial = 0;
	upstream_record(c->up, t->server, ok, trial);
}

/* Try slot k is over: its server has one request fewer, an unreported
 * breaker trial is handed back. */
static void
call_slot_done(struct call *c, int k)
{
	struct call_try *t = &c->t[k];

	if (!t->in_try)
		return;
	if (t->span_status == 0 && t->span_error == NULL)
		t->span_error = "cancelled";
	call_trace_end(c, k);
	t->in_try = false;
	t->ops = NULL;
	t->arg = NULL;
	upstream_end(c->up, t->server);
	if (t->trial != 0 && !t->recorded)
		breaker_release(&c->up->servers[t->server].sh->breaker,
		    t->trial, now_ms());
	t->trial = 0;
}

/* The tries (or the wait for one) are over: a retry gives its budget
 * share back. */
static void
call_try_done(struct call *c, int k)
{
	call_slot_done(c, k);
	if (c->is_retry && !c->t[0].in_try && !c->t[1].in_try) {
		retry_budget_done(&c->up->budget);
		c->is_retry = false;
	}
}

/*
 * Ends the try in slot k through its transport (which lets go and calls
 * call_try_end(), which sees `cancelling`).  Never from inside a libcurl
 * callback.
 */
static void
call_cancel_try(struct call *c, int k)
{
	struct call_try *t = &c->t[k];

	if (!t->in_try || t->ops == NULL)
		return;
	c->cancelling = k;
	t->ops->cancel(t->arg);
	c->cancelling = -1;
	call_slot_done(c, k);
}

/* -- retries ------------------------------------------------------------ */

bool
call_method_retryable(const struct call *c)
{
	return retry_method(&c->up->cfg->retry, c->spec->method,
	    c->spec->method_len);
}

static bool
call_body_replayable(const struct call *c)
{
	return !c->spec->client_body || req_body_replayable(c->spec->req);
}

/*
 * Whether the call tries again after this failure.  Yes commits: the
 * backoff is chosen and a share of the retry budget taken (the caller
 * sets is_retry once the failed try is done).
 */
static bool
call_decide(struct call *c, enum try_fail why, int status)
{
	const struct upstream_cfg *u = c->up->cfg;
	const struct retry_cfg *rc = &u->retry;
	static struct log_window w;
	uint64_t wait;

	if (c->spec->upgrade || c->tries >= rc->attempts || c->head_sent ||
	    !retry_condition(rc, why, status) || !call_method_retryable(c))
		return false;
	wait = retry_backoff_ms(rc, c->tries, upstream_random());
	/* No time left for the wait and a try: the failure stands. */
	if (call_left_ms(c) <= wait)
		return false;
	if (!call_body_replayable(c)) {
		log_debug("proxy: upstream %s: not retrying: the request body "
		    "was larger than the %d bytes kept", u->name,
		    CALL_REPLAY_MAX);
		return false;
	}
	/* No server to try (this failure may just have opened the last
	 * breaker): the failure stands, rather than a 503 later. */
	if (!upstream_any_available(c->up, now_ms()))
		return false;
	if (!retry_budget_take(&c->up->budget, rc->budget, now_ms())) {
		if (log_allowed(&w, "retries refused by the budget"))
			log_info("retry: upstream %s: retry budget spent "
			    "(%.0f%% of first tries); not retrying", u->name,
			    rc->budget * 100);
		return false;
	}
	c->backoff_ms = wait;
	return true;
}

static void
call_log_retry(const struct call *c, enum try_fail why, int status)
{
	static struct log_window w;
	const struct upstream_cfg *u = c->up->cfg;
	const struct request *r = c->spec->req;
	char what[300], reason[64];

	if (!log_allowed(&w, "retries"))
		return;
	if (c->spec->name != NULL)
		snprintf(what, sizeof(what), "fan-out call %s", c->spec->name);
	else
		snprintf(what, sizeof(what), "%.*s %.*s",
		    (int)r->head.method_len, r->head.method,
		    (int)r->head.path_len, r->head.path);
	if (why == TRY_STATUS)
		snprintf(reason, sizeof(reason), "answered %d", status);
	else
		snprintf(reason, sizeof(reason), "%s", retry_fail_name(why));
	log_info("retry: upstream %s: %s: server %s %s; try %d of %d in "
	    "%llu ms", u->name, what, c->up->servers[c->t[c->cur].server].cfg->url,
	    reason, c->tries + 1, u->retry.attempts,
	    (unsigned long long)c->backoff_ms);
}

/* -- the transports' reports --------------------------------------------- */

/* The other try of two is still out (and nothing has been chosen). */
static bool
call_other_live(const struct call *c, int k)
{
	return !c->won && c->t[1 - k].in_try;
}

void
call_try_attach(struct call *c, int k, const struct call_try_ops *ops,
    void *arg)
{
	c->t[k].ops = ops;
	c->t[k].arg = arg;
}

bool
call_accept(struct call *c, int k, int status)
{
	const struct retry_cfg *rc = &c->up->cfg->retry;

	c->t[k].span_status = status;
	call_measure(c, k, status_outcome(status));
	if (c->won && k != c->cur)
		return false;		/* the hedged try that lost */
	if (call_other_live(c, k)) {
		/* Two tries out: an answer worth a retry does not win while
		 * a retry could still follow (the other try stands for it);
		 * on the last allowed try it is the answer. */
		if (status >= 400 && retry_condition(rc, TRY_STATUS, status) &&
		    c->tries < rc->attempts)
			return false;
		c->won = true;
		c->hedging = false;
		c->cur = k;
		call_tell_server(c, k);
		/* The loser is cancelled from the loop: this may be inside
		 * a libcurl callback, where a transfer cannot be removed. */
		evtimer_del(&c->hedge);
		call_arm_ev(&c->hedge, 0);
		call_breaker(c, k, !failure_status(status));
		c->head_sent = true;
		return true;
	}
	c->cur = k;
	/* Any status listed in retry.conditions (call_decide checks). */
	if (status >= 400 && call_decide(c, TRY_STATUS, status)) {
		c->retry_next = true;
		return false;
	}
	call_breaker(c, k, !failure_status(status));
	c->head_sent = true;
	return true;
}

void
call_try_failed(struct call *c, int k, enum try_fail why, int status,
    const char *msg)
{
	char answered[64];
	bool again;

	if (why != TRY_CLIENT)
		call_measure(c, k, call_outcome(why, status));
	if (why == TRY_STATUS)
		c->t[k].span_status = status;
	else
		c->t[k].span_error = retry_fail_name(why);
	if (why == TRY_STATUS && (msg == NULL || *msg == '\0')) {
		snprintf(answered, sizeof(answered), "upstream answered %d",
		    status);
		msg = answered;
	}
	/* A listed 500 or 429 is retried, but only 502-504 say the server
	 * itself is failing. */
	if (why != TRY_CLIENT && why != TRY_LOCAL && !c->t[k].recorded)
		call_breaker(c, k, why == TRY_STATUS &&
		    !failure_status(status));
	if (c->won && k != c->cur) {
		call_slot_done(c, k);	/* the loser: nothing to say */
		return;
	}
	if (call_other_live(c, k)) {
		/* Of two tries, this one ended without an answer: the other
		 * goes on alone. */
		call_slot_done(c, k);
		c->hedging = false;
		c->cur = 1 - k;
		call_tell_server(c, c->cur);
		return;
	}
	evtimer_del(&c->hedge);
	/* Counts the server's in-flight and releases the budget share of
	 * the try that ended; call_decide() takes a new one. */
	call_try_done(c, k);
	c->cur = k;
	if (c->head_sent) {
		/* The sink has part of the answer: it is cut. */
		call_finish(c, status, msg, NULL);
		return;
	}
	again = c->retry_next || call_decide(c, why, status);
	c->retry_next = false;
	if (!again) {
		call_finish(c, status, msg, NULL);
		return;
	}
	c->is_retry = true;
	call_log_retry(c, why, status);
	call_arm(c, c->backoff_ms);
}

void
call_try_end(struct call *c, int k, bool ok)
{
	if (c->cancelling == k) {
		call_slot_done(c, k);	/* call_cancel_try() goes on */
		return;
	}
	if (c->retry_next) {
		/* A retry was chosen but the transport ended the call. */
		retry_budget_done(&c->up->budget);
		c->retry_next = false;
	}
	call_try_done(c, k);
	if (ok)
		call_finish(c, 0, NULL, NULL);
	else
		call_finish(c, 502, "the answer could not be passed on", NULL);
}

/* Tells the sink which server counts now, and the tries so far. */
static void
call_tell_server(struct call *c, int k)
{
	if (c->sink->tried != NULL)
		c->sink->tried(c->sink_arg,
		    c->up->servers[c->t[k].server].cfg->url,
		    c->tries + c->resends);
}

void
call_resent(struct call *c, int k)
{
	c->resends++;
	call_tell_server(c, k);
}

/* -- the caller's side --------------------------------------------------- */

void
call_body_ready(struct call *c)
{
	struct call_try *t = &c->t[c->cur];

	/* A queued call or one backing off reads when its try starts.  Only
	 * the current try reads the body (a call with a body is never
	 * hedged), and the call may be over when it returns. */
	if (t->in_try && t->ops != NULL && t->ops->body_ready != NULL)
		t->ops->body_ready(t->arg);
}

void
call_writable(struct call *c)
{
	struct call_try *t = &c->t[c->cur];

	if (t->in_try && t->ops != NULL && t->ops->writable != NULL)
		t->ops->writable(t->arg);
}

void
call_cancel(struct call *c)
{
	limiter_cancel(&c->up->limit, &c->wait);
	call_release(c);	/* cancels tries still out */
}

/* -- trying ------------------------------------------------------------- */

static void
no_server(struct call *c)
{
	static struct log_window w;
	const struct upstream_cfg *u = c->up->cfg;
	char msg[200];

	/* Its names do not resolve (yet): dns.c logs why and retries. */
	if (upstream_live(c->up) == 0) {
		snprintf(msg, sizeof(msg), "no address for upstream %s: its "
		    "server names do not resolve (yet)", u->name);
		call_finish(c, 503, msg, "Retry-After: 1\r\n");
		return;
	}
	if (log_allowed(&w, "requests refused for want of a server"))
		log_info("proxy: upstream %s: no server available (all down "
		    "or circuit open); answering 503", u->name);
	snprintf(msg, sizeof(msg), "no server of upstream %s is available "
	    "(all down or circuit open)", u->name);
	call_finish(c, 503, msg, "Retry-After: 1\r\n");
}

static bool
call_has_body(const struct call *c)
{
	const struct call_spec *s = c->spec;

	return s->client_body ? req_has_body(s->req) : s->has_body;
}

static void
call_try(struct call *c)
{
	struct upstream_rt *up = c->up;
	ssize_t server;

	/* A retry sends the body from its first byte (call_decide made sure
	 * it was kept whole). */
	if (c->tries > 0 && c->spec->client_body &&
	    !req_body_rewind(c->spec->req)) {
		call_finish(c, 502, "the request body cannot be sent again",
		    NULL);
		return;
	}
	if ((server = upstream_pick(up, c->tried, now_ms(),
	    &c->t[0].trial)) < 0) {
		no_server(c);
		return;
	}
	c->won = c->hedging = false;
	c->cur = 0;
	c->t[0].server = (size_t)server;
	/* The first try may be hedged (not its retries). */
	if (c->tries == 0 && c->spec->hedge_after_ms > 0 && !call_has_body(c) &&
	    call_method_retryable(c) && up->nslots > 1)
		call_arm_ev(&c->hedge, c->spec->hedge_after_ms);
	call_transport(c, 0);
}

/* Starts the try in slot k on its server. */
static void
call_transport(struct call *c, int k)
{
	struct upstream_rt *up = c->up;
	struct call_try *t = &c->t[k];

	if (t->server < 64)
		c->tried |= UINT64_C(1) << t->server;
	c->tries++;
	t->in_try = true;
	t->recorded = false;
	t->measured = false;
	t->retry = c->tries > 1 && !(k == 1 && c->hedging);
	t->start_us = call_mono_us();
	call_trace_start(c, k);
	t->ops = NULL;
	t->arg = NULL;
	upstream_begin(up, t->server);
	call_tell_server(c, k);
	/* An Upgrade needs the connection itself once it switches: agate's
	 * own client gives it up (with TLS of its own for https); libcurl's
	 * does not. */
	if (up->servers[t->server].native || c->spec->upgrade)
		native_start(c, k);
	else if (up->servers[t->server].h2 || (c->spec->http2 &&
	    up->cfg->transport != TRANSPORT_CURL &&
	    up->servers[t->server].cfg->https))
		h2up_start(c, k);
	else
		curlproxy_start(c, k);
}

/*
 * hedge_after has passed and the first try has not answered: a second
 * try goes to another server, and the first of the two to answer wins.
 * Once one has won, the same event cancels the other from the loop.
 */
static void
call_hedge_cb_run(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;
	const struct request *r = c->spec->req;
	const struct upstream_cfg *u = c->up->cfg;
	uint64_t trial = 0;
	ssize_t server;
	static struct log_window w;

	(void)fd;
	(void)what;
	if (c->won) {
		call_cancel_try(c, 1 - c->cur);	/* the loser */
		return;
	}
	/* Only the first try is hedged, once. */
	if (!c->t[0].in_try || c->t[1].in_try || c->head_sent ||
	    c->tries != 1)
		return;
	if ((server = upstream_pick(c->up, c->tried, now_ms(), &trial)) < 0)
		return;
	if ((size_t)server == c->t[0].server ||
	    (server < 64 && (c->tried & (UINT64_C(1) << server)))) {
		/* Only servers tried already: no hedge.  (The mask holds
		 * the first 64 address slots; the first try's is checked
		 * whatever its number.) */
		if (trial != 0)
			breaker_release(&c->up->servers[server].sh->breaker,
			    trial, now_ms());
		return;
	}
	if (log_allowed(&w, "hedged requests"))
		log_info("hedge: upstream %s: %.*s %.*s: no answer from %s "
		    "after %llu ms; also trying %s", u->name,
		    (int)r->head.method_len, r->head.method,
		    (int)r->head.path_len, r->head.path,
		    c->up->servers[c->t[0].server].cfg->url,
		    (unsigned long long)c->spec->hedge_after_ms,
		    c->up->servers[server].cfg->url);
	c->t[1].server = (size_t)server;
	c->t[1].trial = trial;
	c->hedging = true;
	call_transport(c, 1);
}

static void
call_hedge_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_UPSTREAM_TIMER);
	call_hedge_cb_run(fd, what, arg);
	loopwatch_end();
}

/* Lets go of everything the call holds; its slot goes to the first
 * waiter, if any. */
static void
call_release(struct call *c)
{
	struct lim_waiter *w;
	int k;

	/* A try still out is the hedged one that lost, or (cancelled)
	 * either of two. */
	for (k = 0; k < 2; k++)
		call_cancel_try(c, k);
	call_try_done(c, 0);
	call_try_done(c, 1);
	if (c->has_slot && (w = limiter_release(&c->up->limit)) != NULL)
		w->wake(w);
	c->has_slot = false;
	call_put(c);
}

/* The call is over: everything is let go, then the sink is told. */
static void
call_finish(struct call *c, int status, const char *error, const char *extra)
{
	const struct call_sink *sink = c->sink;
	void *arg = c->sink_arg;
	char msg[300];

	if (error != NULL) {
		/* error may live in a transport, which is let go below. */
		snprintf(msg, sizeof(msg), "%s", error);
		error = msg;
	}
	if (c->over != NULL)
		*c->over = true;	/* call_start() returns NULL */
	call_release(c);
	sink->done(arg, status, error, extra);
}

/* The slot is ours now (another call gave it up). */
static void
call_wake(struct lim_waiter *w)
{
	struct call *c = (struct call *)((char *)w -
	    offsetof(struct call, wait));

	/* Started from the loop, not from inside the other's answer. */
	c->has_slot = true;
	evtimer_del(&c->timer);
	call_arm(c, 0);
}

struct call *
call_start(struct upstream_rt *up, const struct call_spec *spec,
    const struct call_sink *sink, void *sink_arg)
{
	const struct upstream_cfg *u = up->cfg;
	struct call *c;
	uint64_t wait;
	bool over = false;
	char msg[200];

	if ((c = call_get()) == NULL) {
		sink->done(sink_arg, 503, "out of memory", NULL);
		return NULL;
	}
	c->spec = spec;
	c->sink = sink;
	c->sink_arg = sink_arg;
	c->up = up;
	c->over = &over;
	if (!upstream_any_available(up, now_ms())) {
		no_server(c);		/* not worth a place in the queue */
		return NULL;
	}
	retry_budget_try(&up->budget, now_ms());
	c->wait.wake = call_wake;
	switch (limiter_acquire(&up->limit, &c->wait)) {
	case LIM_GO:
		c->has_slot = true;
		call_try(c);
		break;
	case LIM_QUEUED:
		/* Waits no longer than the deadline (the wait counts against
		 * it) or, without one, one try's timeout; a caller with its
		 * own deadline cuts the wait itself. */
		if ((wait = call_left_ms(c)) == UINT64_MAX)
			wait = u->timeout_ms;
		if (!spec->owner_deadline)
			call_arm(c, wait);
		break;
	case LIM_FULL:
		snprintf(msg, sizeof(msg), "upstream %s is at its concurrency "
		    "limit and its queue is full", u->name);
		call_finish(c, 503, msg, "Retry-After: 1\r\n");
		return NULL;
	}
	if (over)
		return NULL;
	c->over = NULL;
	return c;
}
