/*
 * Rate limits shared by many agate instances (`rate_limit.backend:
 * redis`, with the top-level `redis: {address, on_failure}`).
 *
 * Each worker keeps one asynchronous hiredis connection on its own event
 * loop (hiredis' libevent adapter).  A limited request sends one EVAL of
 * BUCKET_LUA: the same token bucket as the local backend, done
 * atomically inside Redis, on Redis's clock, so every instance draws from
 * one budget.  The request waits without holding the loop.
 *
 * When Redis cannot answer (not connected, an error, no reply within
 * REPLY_MS), `on_failure` decides: `allow` lets the request through,
 * `deny` answers 503.  Either way it is logged (at most a line a second)
 * and counted, and the connection is retried with a backoff from 100 ms
 * to 5 s.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "gateway/config/config.h"
#include "gateway/metrics/metrics.h"
#include "gateway/policy/ratelimit.h"
#include "gateway/stage.h"
#include "lib/log.h"
#include "worker/http.h"
#include "worker/loopwatch.h"
#include "worker/timer.h"
#include "worker/worker.h"

#define REPLY_MS	250
#define BACKOFF_MIN_MS	100
#define BACKOFF_MAX_MS	5000

/* KEYS[1]: the bucket; ARGV: rate per second, burst.  Returns {allowed,
 * retry after ms, tokens left}.  Redis's TIME is the one clock. */
static const char BUCKET_LUA[] =
"local rate = tonumber(ARGV[1]) local burst = tonumber(ARGV[2]) "
"local t = redis.call('TIME') "
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
"local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts') "
"local tokens = tonumber(b[1]) local ts = tonumber(b[2]) "
"if tokens == nil or ts == nil then tokens = burst ts = now end "
"if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) "
"ts = now end "
"local ok = 0 local retry = 0 "
"if tokens >= 1 then tokens = tokens - 1 ok = 1 "
"else retry = math.ceil((1 - tokens) * 1000 / rate) end "
"redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts)) "
"redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000) "
"return {ok, retry, math.floor(tokens)}";

static struct {
	struct event_base	*base;
	redisAsyncContext	*ac;
	bool			 connected;
	char			 host[256];
	int			 port;
	struct event		 retry_ev;
	uint64_t		 backoff_ms;
	bool			 fail_open;
	bool			 started;
	uint64_t		 last_log;
} rd;

struct rl_wait {
	struct request		*req;
	struct event		 timer;
	bool			 done;		/* answered, gone or timed out */
	bool			 in_redis;	/* a reply will come */
};

static void	rd_connect(void);
static void	wait_abort(struct request *);

static const struct req_hooks wait_hooks = { NULL, NULL, wait_abort };

static void
rd_warn(const char *what, const char *detail)
{
	uint64_t now = now_ms();

	metrics_redis_failure();
	if (now - rd.last_log < 1000)
		return;
	rd.last_log = now;
	log_warnx("redis %s:%d: %s%s%s; rate limits %s", rd.host, rd.port,
	    what, detail ? ": " : "", detail ? detail : "",
	    rd.fail_open ? "let requests through (on_failure: allow)" :
	    "refuse requests (on_failure: deny)");
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_OTHER);
	rd_connect();
	loopwatch_end();
}

static void
rd_schedule(void)
{
	struct timeval tv;

	rd.backoff_ms = rd.backoff_ms ? rd.backoff_ms * 2 : BACKOFF_MIN_MS;
	if (rd.backoff_ms > BACKOFF_MAX_MS)
		rd.backoff_ms = BACKOFF_MAX_MS;
	tv.tv_sec = (time_t)(rd.backoff_ms / 1000);
	tv.tv_usec = (suseconds_t)(rd.backoff_ms % 1000) * 1000;
	evtimer_add(&rd.retry_ev, &tv);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	if (status != REDIS_OK) {
		rd_warn("cannot connect", ac->errstr);
		rd.ac = NULL;			/* hiredis frees it */
		rd.connected = false;
		rd_schedule();
		return;
	}
	rd.connected = true;
	rd.backoff_ms = 0;
	log_info("redis %s:%d: connected", rd.host, rd.port);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	rd.ac = NULL;
	rd.connected = false;
	if (!rd.started)
		return;				/* we closed it */
	rd_warn("connection lost", status != REDIS_OK ? ac->errstr : NULL);
	rd_schedule();
}

static void
rd_connect(void)
{
	if (rd.ac != NULL || !rd.started)
		return;
	if ((rd.ac = redisAsyncConnect(rd.host, rd.port)) == NULL ||
	    rd.ac->err) {
		rd_warn("cannot connect", rd.ac ? rd.ac->errstr : "no memory");
		if (rd.ac != NULL)
			redisAsyncFree(rd.ac);
		rd.ac = NULL;
		rd_schedule();
		return;
	}
	redisLibeventAttach(rd.ac, rd.base);
	redisAsyncSetConnectCallback(rd.ac, on_connect);
	redisAsyncSetDisconnectCallback(rd.ac, on_disconnect);
}

int
rlredis_init(struct event_base *base, const struct config *cfg)
{
	const char *colon;
	size_t i;
	bool used = false;

	for (i = 0; i < cfg->nroutes; i++)
		used |= cfg->routes[i].rate_limit.enabled &&
		    cfg->routes[i].rate_limit.backend == RL_BACKEND_REDIS;
	if (!used || !cfg->redis_enabled)
		return 0;
	memset(&rd, 0, sizeof(rd));
	rd.base = base;
	rd.fail_open = cfg->redis_fail_open != 0;
	colon = strrchr(cfg->redis_address, ':');
	snprintf(rd.host, sizeof(rd.host), "%.*s", colon ? (int)(colon -
	    cfg->redis_address) : (int)strlen(cfg->redis_address),
	    cfg->redis_address);
	if (rd.host[0] == '[') {			/* [::1]:6379 */
		memmove(rd.host, rd.host + 1, strlen(rd.host));
		rd.host[strcspn(rd.host, "]")] = '\0';
	}
	rd.port = colon ? atoi(colon + 1) : 6379;
	evtimer_assign(&rd.retry_ev, base, retry_cb, NULL);
	rd.started = true;
	rd_connect();
	return 0;
}

void
rlredis_free(void)
{
	if (!rd.started)
		return;
	rd.started = false;
	evtimer_del(&rd.retry_ev);
	if (rd.ac != NULL)
		redisAsyncFree(rd.ac);	/* pending callbacks get NULL */
	rd.ac = NULL;
}

/* Redis could not decide: on_failure does.  True to go on. */
static bool
rd_failure(struct request *r)
{
	if (rd.fail_open)
		return true;
	req_error(r, 503, "the rate limit backend is unavailable",
	    "Retry-After: 1\r\n");
	return false;
}

static void
wait_release(struct rl_wait *w)
{
	struct request *r = w->req;

	evtimer_del(&w->timer);
	w->done = true;
	r->gw = NULL;
	r->hooks = NULL;
	if (!w->in_redis)
		free(w);
}

static void
wait_abort(struct request *r)
{
	wait_release(r->gw);
}

static void
wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct rl_wait *w = arg;
	struct request *r = w->req;

	loopwatch_begin(LW_OTHER);
	rd_warn("no answer in time", NULL);
	wait_release(w);
	if (rd_failure(r))
		stage_resume(r, STAGE_NEXT);
	loopwatch_end();
}

static void
reply_cb(redisAsyncContext *ac, void *reply, void *arg)
{
	struct rl_wait *w = arg;
	redisReply *rep = reply;
	struct request *r = w->req;
	long long ok, retry;

	w->in_redis = false;
	if (w->done) {
		free(w);
		return;
	}
	wait_release(w);
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY ||
	    rep->elements != 3 || rep->element[0]->type !=
	    REDIS_REPLY_INTEGER || rep->element[1]->type !=
	    REDIS_REPLY_INTEGER) {
		rd_warn("bad reply", rep != NULL && rep->type ==
		    REDIS_REPLY_ERROR ? rep->str : NULL);
		if (rd_failure(r))
			stage_resume(r, STAGE_NEXT);
		return;
	}
	ok = rep->element[0]->integer;
	retry = rep->element[1]->integer;
	if (ok) {
		if (rep->element[2]->type == REDIS_REPLY_INTEGER)
			ratelimit_headers(r,
			    (double)rep->element[2]->integer);
		stage_resume(r, STAGE_NEXT);
	}
	else
		ratelimit_refuse(r, retry > 0 ? (uint64_t)retry : 1);
}

enum stage_result
rlredis_request(struct request *r, const char *key, size_t klen)
{
	const struct rate_limit_cfg *rl = &r->route->rate_limit;
	struct rl_wait *w;
	struct timeval tv = { 0, REPLY_MS * 1000 };
	char rate[32], burst[16], bucket[1400];
	int blen;

	if (!rd.connected || rd.ac == NULL) {
		rd_warn("not connected", NULL);
		return rd_failure(r) ? STAGE_NEXT : STAGE_DONE;
	}
	blen = snprintf(bucket, sizeof(bucket), "agate:rl:%s:%.*s",
	    r->route->path, (int)(klen < 1024 ? klen : 1024), key);
	snprintf(rate, sizeof(rate), "%.6f", rl->rate);
	snprintf(burst, sizeof(burst), "%d", rl->burst);
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return rd_failure(r) ? STAGE_NEXT : STAGE_DONE;
	w->req = r;
	if (redisAsyncCommand(rd.ac, reply_cb, w, "EVAL %s 1 %b %s %s",
	    BUCKET_LUA, bucket, (size_t)blen, rate, burst) != REDIS_OK) {
		free(w);
		rd_warn("cannot send", NULL);
		return rd_failure(r) ? STAGE_NEXT : STAGE_DONE;
	}
	w->in_redis = true;
	evtimer_assign(&w->timer, worker.base, wait_timeout, w);
	evtimer_add(&w->timer, &tv);
	r->gw = w;
	r->hooks = &wait_hooks;
	return STAGE_WAIT;
}
