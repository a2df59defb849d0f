/*
 * The call: one proxied request through its upstream's policies (see
 * proxy.h), and the pieces both transports share.
 *
 *   proxy_start -> admission (limiter: go, queue, or 503)
 *     -> try: pick a server (up, breaker lets it) -> transport
 *          -> call_accept / call_try_failed / call_end
 *     -> retry?  (conditions, methods, attempts, budget, deadline,
 *                 body replayable) -> backoff timer -> try again
 *     -> call_finish: slot to the next waiter
 *
 * Nothing here blocks: the queue wait and the backoff are timers on the
 * worker's loop, and a client that leaves at any point cancels them.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "gateway/gateway.h"
#include "gateway/metrics/metrics.h"
#include "gateway/upstream/proxy.h"
#include "gateway/upstream/retry.h"
#include "lib/log.h"
#include "worker/worker.h"

#define CALL_POOL_MAX	256

static struct call	*call_pool;
static size_t		 call_pooled;

static void	call_try(struct call *);
static void	call_finish(struct call *);
static void	call_wake(struct lim_waiter *);
static void	call_hedge_cb(evutil_socket_t, short, void *);
static void	call_transport(struct call *, int slot);
static void	call_body_ready(struct request *);
static void	call_writable(struct request *);
static void	call_abort(struct request *);

/* While the call itself holds the request (queued, backing off). */
static const struct req_hooks call_hooks = {
	call_body_ready, call_writable, call_abort
};

/* -- logging ------------------------------------------------------------ */

/* At most 10 lines a second per kind, so a dead upstream under load
 * cannot flood the log; what is dropped is counted. */
struct log_window {
	uint64_t	 sec;
	uint64_t	 count;
};

/* Proxied requests and fan-out calls fail for the same reasons: one
 * budget for both. */
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

void
proxy_log_failure(const struct upstream_rt *up, size_t server,
    const char *what, const char *detail)
{
	if (log_allowed(&failure_window, "upstream failures"))
		log_warnx("proxy: upstream %s server %s: %s (%s)",
		    up->cfg->name, up->cfg->servers[server].url, what, detail);
}

void
proxy_log_call_failure(const char *call, const struct upstream_rt *up,
    ssize_t server, const char *what, const char *detail)
{
	char where[600];

	if (!log_allowed(&failure_window, "upstream failures"))
		return;
	/* A call cut while it waited (for a slot) has no server. */
	if (server >= 0)
		snprintf(where, sizeof(where), "upstream %s server %s",
		    up->cfg->name, up->cfg->servers[server].url);
	else
		snprintf(where, sizeof(where), "upstream %s", up->cfg->name);
	log_warnx("fan-out: call \"%s\": %s: %s%s%s%s", call, where, what,
	    detail != NULL ? " (" : "", detail != NULL ? detail : "",
	    detail != NULL ? ")" : "");
}

/* -- the pool ----------------------------------------------------------- */

static void
call_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;

	(void)fd;
	(void)what;
	if (c->wait.queued) {
		/* The deadline came while it waited for a slot. */
		struct request *r = c->req;

		limiter_cancel(&c->up->limit, &c->wait);
		r->gw = NULL;
		r->hooks = NULL;
		call_finish(c);
		req_error(r, 504, "timed out waiting for a free slot of the "
		    "upstream (max_concurrent)", NULL);
		return;
	}
	call_try(c);
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
proxy_free(void)
{
	struct call *c;

	native_free();
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

/* Milliseconds left of the route's timeout; UINT64_MAX without one. */
static uint64_t
call_left_ms(const struct call *c)
{
	uint64_t t = c->req->route->timeout_ms, spent;

	if (t == 0)
		return UINT64_MAX;
	spent = req_elapsed_ms(c->req);
	return spent >= t ? 0 : t - spent;
}

uint64_t
proxy_try_ms(const struct request *r, const struct upstream_cfg *u)
{
	uint64_t t = u->timeout_ms, spent, left;

	if (r->route->timeout_ms == 0)
		return t;
	spent = req_elapsed_ms(r);
	if (spent >= r->route->timeout_ms)
		return 1;
	left = r->route->timeout_ms - spent;
	return left < t ? left : t;
}

/* -- the breaker's view of a try ----------------------------------------- */

static bool
failure_status(int status)
{
	return status == 502 || status == 503 || status == 504;
}

uint64_t
proxy_mono_us(void)
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
	metrics_try(u->mslot, u->servers[t->server].mslot, o,
	    proxy_mono_us() - t->start_us, t->retry);
}

static enum m_outcome
status_outcome(int status)
{
	return status < 300 ? MO_2XX : status < 400 ? MO_3XX :
	    status < 500 ? MO_4XX : MO_5XX;
}

enum m_outcome
proxy_outcome(enum try_fail why, int status)
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
	t->in_try = false;
	t->gw = NULL;
	t->hooks = NULL;
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
 * Ends the try in slot k through its transport's abort hook (the
 * transport lets go and calls call_end(), which sees `cancelling`).
 * Never from inside a libcurl callback.
 */
static void
call_cancel(struct call *c, int k)
{
	struct request *r = c->req;
	struct call_try *t = &c->t[k];
	void *gw = r->gw;
	const struct req_hooks *hooks = r->hooks;

	if (!t->in_try || t->hooks == NULL)
		return;
	c->cancelling = k;
	r->gw = t->gw;
	r->hooks = t->hooks;
	t->hooks->abort(r);
	c->cancelling = -1;
	call_slot_done(c, k);
	r->gw = gw;
	r->hooks = hooks;
}

/* -- retries ------------------------------------------------------------ */

bool
proxy_method_retryable(const struct request *r, const struct upstream_cfg *u)
{
	return retry_method(&u->retry, r->head.method, r->head.method_len);
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
	struct request *r = c->req;
	static struct log_window w;
	uint64_t wait;

	if (c->tries >= rc->attempts || r->resp_started ||
	    !retry_condition(rc, why, status) ||
	    !proxy_method_retryable(r, u))
		return false;
	wait = retry_backoff_ms(rc, c->tries, upstream_random());
	/* No time left for the wait and a try: the failure stands. */
	if (call_left_ms(c) <= wait)
		return false;
	if (!req_body_replayable(r)) {
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
	const struct request *r = c->req;

	if (!log_allowed(&w, "retries"))
		return;
	if (why == TRY_STATUS)
		log_info("retry: upstream %s: %.*s %.*s: server %s answered "
		    "%d; try %d of %d in %llu ms", u->name,
		    (int)r->head.method_len, r->head.method,
		    (int)r->head.path_len, r->head.path,
		    u->servers[c->t[c->cur].server].url, status, c->tries + 1,
		    u->retry.attempts, (unsigned long long)c->backoff_ms);
	else
		log_info("retry: upstream %s: %.*s %.*s: server %s: %s; try "
		    "%d of %d in %llu ms", u->name, (int)r->head.method_len,
		    r->head.method, (int)r->head.path_len, r->head.path,
		    u->servers[c->t[c->cur].server].url, retry_fail_name(why),
		    c->tries + 1,
		    u->retry.attempts, (unsigned long long)c->backoff_ms);
}

/* -- the transports' reports --------------------------------------------- */

/* The other try of two is still out (and nothing has been chosen). */
static bool
call_other_live(const struct call *c, int k)
{
	return !c->won && c->t[1 - k].in_try;
}

/* Of two tries, k ended without an answer: the other goes on alone. */
static void
call_drop_slot(struct call *c, int k)
{
	struct request *r = c->req;
	int o = 1 - k;

	call_slot_done(c, k);
	c->hedging = false;
	c->cur = o;
	if (r->gw == c || r->gw == NULL) {
		r->gw = c->t[o].gw;
		r->hooks = c->t[o].hooks;
	}
	r->upstream = c->up->cfg->servers[c->t[o].server].url;
}

bool
call_accept(struct call *c, int k, int status)
{
	const struct retry_cfg *rc = &c->up->cfg->retry;
	struct request *r = c->req;

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
		r->gw = c->t[k].gw;
		r->hooks = c->t[k].hooks;
		r->upstream = c->up->cfg->servers[c->t[k].server].url;
		/* The loser is cancelled from the loop: this may be inside
		 * a libcurl callback, where a transfer cannot be removed. */
		evtimer_del(&c->hedge);
		call_arm_ev(&c->hedge, 0);
		call_breaker(c, k, !failure_status(status));
		return true;
	}
	c->cur = k;
	/* Any status listed in retry.conditions (call_decide checks). */
	if (status >= 400 && call_decide(c, TRY_STATUS, status)) {
		c->retry_next = true;
		return false;
	}
	call_breaker(c, k, !failure_status(status));
	return true;
}

void
call_try_failed(struct call *c, int k, enum try_fail why, int status,
    const char *msg)
{
	struct request *r = c->req;
	char answered[64];
	bool again;

	if (why != TRY_CLIENT)
		call_measure(c, k, proxy_outcome(why, status));
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
		call_drop_slot(c, k);	/* the other try goes on */
		return;
	}
	evtimer_del(&c->hedge);
	if (r->resp_started) {
		/* The client has part of the answer: it sees it cut. */
		call_try_done(c, k);
		call_finish(c);
		req_fail(r, msg);
		return;
	}
	/* Counts the server's in-flight and releases the budget share of
	 * the try that ended; call_decide() takes a new one. */
	call_try_done(c, k);
	c->cur = k;
	again = c->retry_next || call_decide(c, why, status);
	c->retry_next = false;
	if (!again) {
		call_finish(c);
		req_error(r, status, msg, NULL);
		return;
	}
	c->is_retry = true;
	call_log_retry(c, why, status);
	r->gw = c;
	r->hooks = &call_hooks;
	call_arm(c, c->backoff_ms);
}

void
call_end(struct call *c, int k)
{
	if (c->cancelling == k) {
		call_slot_done(c, k);	/* call_cancel() goes on */
		return;
	}
	if (c->retry_next) {
		/* A retry was chosen but the transport ended the call. */
		retry_budget_done(&c->up->budget);
		c->retry_next = false;
	}
	call_try_done(c, k);
	call_finish(c);
}

/* -- the call's own hooks ------------------------------------------------ */

static void
call_body_ready(struct request *r)
{
	(void)r;	/* read when the next try starts */
}

static void
call_writable(struct request *r)
{
	(void)r;
}

static void
call_abort(struct request *r)
{
	struct call *c = r->gw;

	r->gw = NULL;
	r->hooks = NULL;
	limiter_cancel(&c->up->limit, &c->wait);
	call_finish(c);		/* cancels tries still out (hedging) */
}

/* -- trying ------------------------------------------------------------- */

static void
no_server(struct request *r, const struct upstream_cfg *u)
{
	static struct log_window w;
	char msg[200];

	if (log_allowed(&w, "requests refused for want of a server"))
		log_info("proxy: upstream %s: no server available (all down "
		    "or circuit open); answering 503", u->name);
	snprintf(msg, sizeof(msg), "no server of upstream %s is available "
	    "(all down or circuit open)", u->name);
	req_error(r, 503, msg, "Retry-After: 1\r\n");
}

static void
call_try(struct call *c)
{
	struct request *r = c->req;
	struct upstream_rt *up = c->up;
	const struct upstream_cfg *u = up->cfg;
	ssize_t server;

	r->gw = NULL;
	r->hooks = NULL;
	/* A retry sends the body from its first byte (call_decide made sure
	 * it was kept whole). */
	if (c->tries > 0 && !req_body_rewind(r)) {
		call_finish(c);
		req_error(r, 502, "the request body cannot be sent again", NULL);
		return;
	}
	if ((server = upstream_pick(up, c->tried, now_ms(),
	    &c->t[0].trial)) < 0) {
		call_finish(c);
		no_server(r, u);
		return;
	}
	c->won = c->hedging = false;
	c->cur = 0;
	c->t[0].server = (size_t)server;
	/* The first try may be hedged (not its retries). */
	if (c->tries == 0 && r->route->hedge_after_ms > 0 &&
	    !req_has_body(r) && proxy_method_retryable(r, u) &&
	    u->nservers > 1)
		call_arm_ev(&c->hedge, r->route->hedge_after_ms);
	call_transport(c, 0);
}

/* Starts the try in slot k on its server. */
static void
call_transport(struct call *c, int k)
{
	struct request *r = c->req;
	struct upstream_rt *up = c->up;
	struct call_try *t = &c->t[k];

	if (t->server < 64)
		c->tried |= UINT64_C(1) << t->server;
	c->tries++;
	t->in_try = true;
	t->recorded = false;
	t->measured = false;
	t->retry = c->tries > 1 && !(k == 1 && c->hedging);
	t->start_us = proxy_mono_us();
	t->gw = NULL;
	t->hooks = NULL;
	upstream_begin(up, t->server);
	r->tries = c->tries;
	r->upstream = up->cfg->servers[t->server].url;
	if (up->servers[t->server].native)
		native_start(c, k);
	else
		curlproxy_start(c, k);
}

/*
 * hedge_after has passed and the first try has not answered: a second
 * try goes to another server, and the first of the two to answer wins.
 * Once one has won, the same event cancels the other from the loop.
 */
static void
call_hedge_cb(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;
	struct request *r = c->req;
	const struct upstream_cfg *u = c->up->cfg;
	uint64_t trial = 0;
	ssize_t server;
	static struct log_window w;

	(void)fd;
	(void)what;
	if (c->won) {
		call_cancel(c, 1 - c->cur);	/* the loser */
		return;
	}
	/* Only the first try is hedged, once. */
	if (!c->t[0].in_try || c->t[1].in_try || r->resp_started ||
	    c->tries != 1)
		return;
	if ((server = upstream_pick(c->up, c->tried, now_ms(), &trial)) < 0)
		return;
	if (server < 64 && (c->tried & (UINT64_C(1) << server))) {
		/* Only servers tried already: no hedge. */
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
		    u->servers[c->t[0].server].url,
		    (unsigned long long)r->route->hedge_after_ms,
		    u->servers[server].url);
	/* The first try's hooks, kept while both are out. */
	c->t[0].gw = r->gw;
	c->t[0].hooks = r->hooks;
	c->t[1].server = (size_t)server;
	c->t[1].trial = trial;
	c->hedging = true;
	r->gw = NULL;
	r->hooks = NULL;
	call_transport(c, 1);
	if (c->hedging && c->t[1].in_try) {
		/* Both out: the request points at the call until one wins. */
		c->t[1].gw = r->gw;
		c->t[1].hooks = r->hooks;
		r->gw = c;
		r->hooks = &call_hooks;
	}
}

/* The call is over: its slot goes to the first waiter, if any. */
static void
call_finish(struct call *c)
{
	struct lim_waiter *w;
	int k;

	/* A try still out is the hedged one that lost, or (client gone)
	 * either of two. */
	for (k = 0; k < 2; k++)
		call_cancel(c, k);
	call_try_done(c, 0);
	call_try_done(c, 1);
	if (c->has_slot && (w = limiter_release(&c->up->limit)) != NULL)
		w->wake(w);
	c->has_slot = false;
	call_put(c);
}

/* The slot is ours now (a proxied call or a fan-out call gave it up). */
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

void
proxy_start(struct request *r)
{
	const struct upstream_cfg *u = r->route->upstream;
	struct upstream_rt *up = upstream_rt(u);
	struct call *c;
	uint64_t wait;
	char msg[200];

	if ((c = call_get()) == NULL) {
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	c->req = r;
	c->up = up;
	if (!upstream_any_available(up, now_ms())) {
		/* Not worth a place in the queue. */
		call_put(c);
		no_server(r, u);
		return;
	}
	retry_budget_try(&up->budget, now_ms());
	/* Keep the body for a retry to send again (and for libcurl, which
	 * resends on a reused connection found dead). */
	if ((u->retry.attempts > 1 || up->any_curl) && req_has_body(r) &&
	    proxy_method_retryable(r, u) &&
	    req_body_keep(r, CALL_REPLAY_MAX) == -1) {
		call_put(c);
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	c->wait.wake = call_wake;
	switch (limiter_acquire(&up->limit, &c->wait)) {
	case LIM_GO:
		c->has_slot = true;
		call_try(c);
		return;
	case LIM_QUEUED:
		/* Waits no longer than the route's timeout (the wait counts
		 * against it) or, without one, one try's timeout. */
		if ((wait = call_left_ms(c)) == UINT64_MAX)
			wait = u->timeout_ms;
		r->gw = c;
		r->hooks = &call_hooks;
		call_arm(c, wait);
		return;
	case LIM_FULL:
		call_put(c);
		snprintf(msg, sizeof(msg), "upstream %s is at its concurrency "
		    "limit and its queue is full", u->name);
		req_error(r, 503, msg, "Retry-After: 1\r\n");
		return;
	}
}

/* -- shared by the transports ------------------------------------------- */

int
proxy_target(const struct request *r, struct buf *b)
{
	const char *path;
	size_t plen;
	int rc = 0;

	plen = router_upstream_path(r->route, r->head.path, r->head.path_len,
	    &path);
	rc |= buf_append(b, path, plen);
	if (r->head.query != NULL) {
		rc |= buf_append(b, "?", 1);
		rc |= buf_append(b, r->head.query, r->head.query_len);
	}
	return rc;
}
