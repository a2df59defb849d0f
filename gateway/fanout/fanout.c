/*
 * Fan-out routes: one client request, several upstream calls at once,
 * one answer (CONFIG.md "Fan-out modes"; docs/fanout.md).  The asyncio
 * recipe's gather(), done from config:
 *
 *   all      every call must answer 2xx; the first failure cancels the
 *            rest and the answer is 502 naming the call
 *   partial  wait for all until the fan-out timeout; 200 with one key per
 *            call (its JSON, its body as a string, or an error object)
 *   first    the first 2xx answer wins, headers and body; the rest are
 *            cancelled
 *   stream   chunked NDJSON, one line per call the moment it finishes
 *
 * Each call is one exchange, by agate's own HTTP/1.1 client on the
 * upstream's pooled connections for native (http://) servers, or one
 * libcurl transfer on the worker's multi handle otherwise; it goes
 * through its upstream's policies like a proxied request: the concurrency
 * limit (it queues with proxied requests), server choice (health,
 * breaker, balance), retries with backoff and budget, the breaker's
 * accounting.  A call's answer is collected in memory (at most
 * FANOUT_BODY_MAX).  Cancelling a call removes its transfer from the
 * multi handle, which closes its connection if it was mid-exchange.
 * Everything is released synchronously when the request is answered or
 * its client leaves.
 *
 * A call without a method of its own is made with the client's, and a
 * call made with the client's method carries the client's body.  So the
 * body is read in full before any call starts (the request layer keeps
 * it, within max_body_size) and each such call sends it from there; a
 * body that no call would carry is refused rather than dropped.  The
 * fan-out timeout counts from the start, reading the body included, and
 * it alone cuts a call at its deadline: a try's own timers are not armed
 * past it, so a call it cuts says so.
 */
#include <sys/uio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <jansson.h>

#include "gateway/fanout/fanout.h"
#include "gateway/gateway.h"
#include "gateway/metrics/metrics.h"
#include "gateway/upstream/curlev.h"
#include "gateway/upstream/limiter.h"
#include "gateway/upstream/proxy.h"
#include "gateway/upstream/retry.h"
#include "gateway/upstream/upconn.h"
#include "gateway/upstream/upstream.h"
#include "lib/buf.h"
#include "lib/encode.h"
#include "lib/log.h"
#include "offload/offload.h"
#include "worker/worker.h"

#define FANOUT_BODY_MAX	(8 * 1024 * 1024)
#define FANOUT_HEAD_MAX	(64 * 1024)

/* What a call cut by the fan-out's own timeout reports, in every mode. */
#define FANOUT_TIMED_OUT	"timed out (fan-out timeout)"

enum fc_state {
	FC_IDLE,		/* not started */
	FC_QUEUED,		/* waiting for a slot of its upstream */
	FC_RUNNING,		/* a transfer is out */
	FC_BACKOFF,		/* waiting to retry */
	FC_DONE
};

struct fanout;

struct fcall {
	struct curl_job			 job;	/* first: curlev's cookie */
	struct fanout			*fo;
	const struct fanout_call_cfg	*cfg;
	struct upstream_rt		*up;
	CURL				*easy;
	enum fc_state			 state;
	const char			*method;	/* its own or the client's */
	bool				 takes_body;	/* the client's body */
	struct buf			 target;	/* expanded path?query */
	struct buf			 url;
	struct buf			 head;		/* header lines */
	struct buf			 body;
	int				 status;	/* final answer */
	bool				 in_head;	/* status line seen */
	bool				 head_done;	/* the final head */
	bool				 too_big;
	const char			*error;		/* NULL: answered */
	/* Policies. */
	size_t				 server;
	int				 tries;
	uint64_t			 start_us;	/* this try's */
	uint64_t			 tried;
	uint64_t			 trial;
	bool				 recorded;
	bool				 in_flight;	/* counted in inflight */
	bool				 is_retry;
	bool				 has_slot;
	struct lim_waiter		 wait;
	struct event			 timer;	/* backoff, wake; native: timeout */
	char				 errbuf[CURL_ERROR_SIZE];
	/* The native exchange. */
	struct upconn			*uc;
	bool				 reused;
	bool				 connecting;
	bool				 stale_retried;
	bool				 got_bytes;
	bool				 send_failed;
	uint64_t			 try_deadline;
	struct buf			 out;	/* the request */
	size_t				 wpos;
	struct buf			 in;	/* unparsed response bytes */
	size_t				 scan;
	struct http_resp_head		 rh;
	int				 framing;	/* FN_*, -1: in the head */
	int64_t				 left;
	struct http_chunked		 chunk;
};

enum { FN_NONE, FN_LENGTH, FN_CHUNKED, FN_CLOSE };

struct fanout {
	struct request			*req;
	const struct fanout_cfg		*cfg;
	struct fcall			*calls;
	size_t				 ncalls;
	size_t				 ndone;
	size_t				 nfailed;
	struct curl_slist		*hdrs;		/* shared by the calls */
	struct buf			 hblock;	/* the same, for native */
	/* The calls that carry the body: the same headers, plus framing
	 * and the client's Content-Type. */
	struct curl_slist		*bhdrs;
	struct buf			 bhblock;	/* only what is added */
	const char			*body;		/* in r->keep */
	size_t				 body_len;
	char				 method[HTTP_MAX_METHOD + 1];
	uint64_t			 deadline;	/* monotonic ms */
	struct event			 timer;		/* the fan-out timeout */
	struct job			*merge;		/* merging in the pool */
	bool				 reading;	/* the client's body */
	bool				 streaming;
};

static void	fanout_abort(struct request *);
static void	fanout_nop(struct request *);
static void	fcall_start(struct fcall *);
static void	fcall_try(struct fcall *);
static void	fcall_finished(struct fcall *);
static void	fcall_try_ended(struct fcall *, enum try_fail, int,
		    const char *);
static void	fn_start(struct fcall *);
static void	fn_fail(struct fcall *, enum try_fail, int, const char *,
		    const char *);
static void	fanout_body_ready(struct request *);

static const struct req_hooks fanout_hooks = {
	fanout_body_ready, fanout_nop, fanout_abort
};

static void
fanout_nop(struct request *r)
{
	(void)r;
}

static void
arm(struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

/* -- templates ---------------------------------------------------------- */

/*
 * Appends s percent-decoded (if decode) and then percent-encoded: every
 * byte but the unreserved ones (RFC 3986) is encoded, so a value can
 * land in a path segment or a query value without changing its shape.
 */
static int
append_encoded(struct buf *b, const char *s, size_t n, bool decode,
    bool plus_space)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		unsigned char c = (unsigned char)s[i];
		char e[3];

		if (decode && c == '%' && i + 2 < n &&
		    hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
			c = (unsigned char)(hex_value(s[i + 1]) * 16 +
			    hex_value(s[i + 2]));
			i += 2;
		} else if (decode && plus_space && c == '+')
			c = ' ';
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~') {
			rc = buf_append(b, &c, 1);
			continue;
		}
		e[0] = '%';
		e[1] = hex[c >> 4];
		e[2] = hex[c & 15];
		rc = buf_append(b, e, 3);
	}
	return rc;
}

/* The value of NAME in the client's query string; NULL if absent. */
static const char *
query_value(const struct request *r, const char *name, size_t nlen,
    size_t *vlen)
{
	const char *q = r->head.query, *end, *p, *amp, *eq;

	if (q == NULL)
		return NULL;
	end = q + r->head.query_len;
	for (p = q; p < end; p = amp + 1) {
		if ((amp = memchr(p, '&', (size_t)(end - p))) == NULL)
			amp = end;
		eq = memchr(p, '=', (size_t)(amp - p));
		if ((size_t)((eq ? eq : amp) - p) == nlen &&
		    memcmp(p, name, nlen) == 0) {
			*vlen = eq ? (size_t)(amp - eq - 1) : 0;
			return eq ? eq + 1 : amp;
		}
		if (amp == end)
			break;
	}
	return NULL;
}

/*
 * Expands a call's path template into out.  Returns 0, -1 when out of
 * memory, or 1 with the missing value named in missing.
 */
static int
expand(const struct request *r, const char *tpl, struct buf *out,
    char *missing, size_t mlen)
{
	const char *p = tpl, *open, *close;
	size_t i;

	while ((open = strchr(p, '{')) != NULL &&
	    (close = strchr(open, '}')) != NULL) {
		const char *name = open + 1, *v = NULL;
		size_t nlen = (size_t)(close - name), vlen = 0;
		char hname[128];

		if (buf_append(out, p, (size_t)(open - p)) != 0)
			return -1;
		if (nlen > 6 && strncmp(name, "query.", 6) == 0) {
			v = query_value(r, name + 6, nlen - 6, &vlen);
			if (v != NULL && append_encoded(out, v, vlen, true,
			    true) != 0)
				return -1;
		} else if (nlen > 7 && strncmp(name, "header.", 7) == 0) {
			const struct http_header *h;

			snprintf(hname, sizeof(hname), "%.*s", (int)(nlen - 7),
			    name + 7);
			if ((h = req_header(r, hname)) != NULL) {
				v = h->value;
				if (append_encoded(out, h->value, h->value_len,
				    false, false) != 0)
					return -1;
			}
		} else {
			for (i = 0; i < r->nparams; i++)
				if (strlen(r->params[i].name) == nlen &&
				    memcmp(r->params[i].name, name, nlen) == 0)
					break;
			if (i < r->nparams) {
				v = r->params[i].value;
				if (append_encoded(out, v, r->params[i].len,
				    true, false) != 0)
					return -1;
			}
		}
		if (v == NULL) {
			snprintf(missing, mlen, "%.*s", (int)nlen, name);
			return 1;
		}
		p = close + 1;
	}
	return buf_append(out, p, strlen(p));
}

/* -- the answer ---------------------------------------------------------- */

static bool
call_ok(const struct fcall *c)
{
	return c->error == NULL && c->status >= 200 && c->status < 300;
}

static void
fcall_stop(struct fcall *c)
{
	struct lim_waiter *w;

	evtimer_del(&c->timer);
	if (c->uc != NULL) {
		upconn_close(c->uc);	/* mid-exchange: not reusable */
		c->uc = NULL;
	} else if (c->state == FC_RUNNING)
		curlev_remove(c->easy);
	if (c->wait.queued)
		limiter_cancel(&c->up->limit, &c->wait);
	if (c->in_flight) {
		upstream_end(c->up, c->server);
		c->in_flight = false;
	}
	if (c->trial != 0 && !c->recorded)
		breaker_release(&c->up->servers[c->server].sh->breaker,
		    c->trial, now_ms());
	c->trial = 0;
	if (c->is_retry) {
		retry_budget_done(&c->up->budget);
		c->is_retry = false;
	}
	if (c->has_slot) {
		c->has_slot = false;
		if ((w = limiter_release(&c->up->limit)) != NULL)
			w->wake(w);
	}
}

/* Lets go of everything; the request is answered or gone. */
static void
fanout_free(struct fanout *fo)
{
	size_t i;

	evtimer_del(&fo->timer);
	offload_cancel(fo->merge);
	for (i = 0; i < fo->ncalls; i++) {
		struct fcall *c = &fo->calls[i];

		fcall_stop(c);
		if (c->easy != NULL)
			curl_easy_cleanup(c->easy);
		buf_free(&c->target);
		buf_free(&c->url);
		buf_free(&c->head);
		buf_free(&c->body);
		buf_free(&c->out);
		buf_free(&c->in);
	}
	curl_slist_free_all(fo->hdrs);
	curl_slist_free_all(fo->bhdrs);
	buf_free(&fo->hblock);
	buf_free(&fo->bhblock);
	free(fo->calls);
	free(fo);
}

/* Hands the request back: the caller answers it right after. */
static struct request *
fanout_release(struct fanout *fo)
{
	struct request *r = fo->req;

	r->gw = NULL;
	r->hooks = NULL;
	fanout_free(fo);
	return r;
}

static void
merged_respond(struct request *r, size_t nfailed, int status,
    const char *text, size_t len)
{
	char extra[64];

	if (status != JOB_OK) {
		req_error(r, 500, "the fan-out answers could not be merged",
		    NULL);
		return;
	}
	snprintf(extra, sizeof(extra), "X-Fanout-Failed: %zu\r\n", nfailed);
	req_respond(r, 200, "application/json", text, len, extra);
}

static void
merged_done(void *arg, int status, const char *out, size_t len)
{
	struct fanout *fo = arg;
	size_t nfailed = fo->nfailed;

	fo->merge = NULL;
	merged_respond(fanout_release(fo), nfailed, status, out, len);
}

/*
 * The merged answer.  Parsing the bodies is the work: small ones are
 * merged here, big ones in the offload pool (on the loop after all if the
 * pool's queue is full: the answer is due either way).
 */
static void
answer_merged(struct fanout *fo)
{
	struct buf in = { 0 }, out = { 0 };
	size_t i, nfailed = fo->nfailed, bodies = 0;
	struct iovec iov;
	int rc = 0, st;

	for (i = 0; i < fo->ncalls; i++) {
		const struct fcall *c = &fo->calls[i];
		uint32_t kind = call_ok(c) ? MERGE_OK : c->error != NULL ?
		    MERGE_ERROR : MERGE_STATUS;
		const char *text = kind == MERGE_ERROR ? c->error :
		    c->body.data != NULL ? c->body.data : "";
		size_t len = kind == MERGE_ERROR ? strlen(c->error) :
		    c->body.len;

		bodies += len;
		rc |= fanout_merge_add(&in, c->cfg->name, kind,
		    (uint32_t)c->status, text, len);
	}
	iov.iov_base = in.data;
	iov.iov_len = in.len;
	if (rc == 0 && bodies > MERGE_INLINE_MAX) {
		evtimer_del(&fo->timer);
		fo->merge = offload_submit(JOB_JSON_MERGE, &iov, 1, merged_done,
		    fo);
		if (fo->merge != NULL) {
			buf_free(&in);
			return;
		}
	}
	st = rc == 0 ? offload_run_inline(JOB_JSON_MERGE, &iov, 1, &out) :
	    JOB_FAILED;
	buf_free(&in);
	merged_respond(fanout_release(fo), nfailed, st, out.data, out.len);
	buf_free(&out);
}

static void
answer_first(struct fanout *fo, struct fcall *c)
{
	struct buf hdrs = { 0 };
	struct request *r = fo->req;
	int64_t clen;
	int status = c->status;
	size_t n = c->body.len;
	char *body = c->body.data;

	/* The winner's end-to-end headers, framing recomputed. */
	if (headers_upstream_response(c->head.data ? c->head.data : "",
	    c->head.len, r->id, r->id_len, &hdrs, &clen) == -1 ||
	    buf_appendf(&hdrs, "X-Fanout-Call: %s\r\n", c->cfg->name) != 0) {
		buf_free(&hdrs);
		r = fanout_release(fo);
		req_error(r, 502, "the winning call's answer has invalid "
		    "header fields", NULL);
		return;
	}
	/* Keep the body past fanout_free(). */
	c->body.data = NULL;
	c->body.len = c->body.cap = 0;
	r = fanout_release(fo);
	if (req_start_response(r, status, NULL, 0, hdrs.data, hdrs.len,
	    (int64_t)n) == 0 && req_write_body(r, body, n) == 0)
		req_end_response(r);
	free(body);
	buf_free(&hdrs);
}

static void
stream_line(struct fanout *fo, struct fcall *c)
{
	json_t *o = json_object();
	char *text;

	json_object_set_new(o, "call", json_string(c->cfg->name));
	json_object_set_new(o, "status", json_integer(c->status));
	if (c->error != NULL && !call_ok(c))
		json_object_set_new(o, "error", json_string(c->error));
	else
		json_object_set_new(o, "body", fanout_merge_body(c->body.data,
		    c->body.len));
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (text == NULL)
		return;
	if (req_write_body(fo->req, text, strlen(text)) == 0)
		req_write_body(fo->req, "\n", 1);
	free(text);
}

/* A call has finished (answered, failed or cancelled by the timeout):
 * decide what the fan-out does.  fo may be gone after it. */
static void
fanout_progress(struct fanout *fo, struct fcall *c)
{
	struct request *r;
	char msg[300];
	size_t i;

	fo->ndone++;
	if (!call_ok(c))
		fo->nfailed++;
	switch (fo->cfg->mode) {
	case FANOUT_ALL:
		if (!call_ok(c)) {
			int st = c->error != NULL && c->status == 504 ? 504 :
			    502;

			if (c->error != NULL)
				snprintf(msg, sizeof(msg), "fan-out call %s "
				    "failed: %s", c->cfg->name, c->error);
			else
				snprintf(msg, sizeof(msg), "fan-out call %s "
				    "failed: upstream answered %d",
				    c->cfg->name, c->status);
			r = fanout_release(fo);	/* cancels the others */
			req_error(r, st, msg, NULL);
			return;
		}
		if (fo->ndone == fo->ncalls)
			answer_merged(fo);
		return;
	case FANOUT_PARTIAL:
		if (fo->ndone == fo->ncalls)
			answer_merged(fo);
		return;
	case FANOUT_FIRST:
		if (call_ok(c)) {
			answer_first(fo, c);
			return;
		}
		if (fo->ndone < fo->ncalls)
			return;
		snprintf(msg, sizeof(msg), "no fan-out call succeeded");
		for (i = 0; i < fo->ncalls; i++) {
			size_t used = strlen(msg);

			snprintf(msg + used, sizeof(msg) - used, "%s %s: %s%s",
			    i == 0 ? " (" : ";", fo->calls[i].cfg->name,
			    fo->calls[i].error ? fo->calls[i].error :
			    "non-2xx answer", i + 1 == fo->ncalls ? ")" : "");
		}
		r = fanout_release(fo);
		req_error(r, 502, msg, NULL);
		return;
	case FANOUT_STREAM:
		stream_line(fo, c);
		if (fo->ndone == fo->ncalls) {
			r = fanout_release(fo);
			req_end_response(r);
		}
		return;
	}
}

/* -- one call ------------------------------------------------------------ */

/* Why a try or a call failed, naming the call apart from the reason. */
static void
fcall_log(const struct fcall *c, bool at_server, const char *what,
    const char *detail)
{
	proxy_log_call_failure(c->cfg->name, c->up, at_server ?
	    (ssize_t)c->server : -1, what, detail);
}

static void
fcall_fail(struct fcall *c, int status, const char *error)
{
	c->status = status;
	c->error = error;
	fcall_finished(c);
}

static void
fcall_finished(struct fcall *c)
{
	fcall_stop(c);
	c->state = FC_DONE;
	fanout_progress(c->fo, c);
}

static size_t
fcall_header_cb(char *line, size_t size, size_t n, void *arg)
{
	struct fcall *c = arg;
	size_t len = size * n;
	const char *sp;

	if (c->head_done)
		return len;		/* trailers: not kept */
	if (!c->in_head) {
		/* "HTTP/1.1 200 OK" (or an interim 1xx, dropped below). */
		c->in_head = true;
		buf_reset(&c->head);
		sp = memchr(line, ' ', len);
		c->status = sp != NULL && sp + 4 <= line + len ?
		    atoi(sp + 1) : 0;
		return c->status >= 100 && c->status <= 999 ? len : 0;
	}
	if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
		c->in_head = false;	/* a 1xx ends here; the next begins */
		c->head_done = c->status >= 200;
		return len;
	}
	if (c->head.len + len > FANOUT_HEAD_MAX ||
	    buf_append(&c->head, line, len) != 0)
		return 0;
	return len;
}

static size_t
fcall_write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct fcall *c = arg;
	size_t len = size * n;

	if (c->body.len + len > FANOUT_BODY_MAX) {
		c->too_big = true;
		return 0;
	}
	return buf_append(&c->body, data, len) == 0 ? len : 0;
}

/* Time left before the fan-out's timeout; 0 when it has come. */
static uint64_t
fanout_left(const struct fanout *fo)
{
	uint64_t now = now_ms();

	return fo->deadline > now ? fo->deadline - now : 0;
}

static bool
fcall_retry(struct fcall *c, enum try_fail why, int status)
{
	const struct upstream_cfg *u = c->up->cfg;
	const struct retry_cfg *rc = &u->retry;
	uint64_t wait;

	if (c->tries >= rc->attempts || !retry_condition(rc, why, status) ||
	    !retry_method(rc, c->method, strlen(c->method)))
		return false;
	wait = retry_backoff_ms(rc, c->tries, upstream_random());
	if (fanout_left(c->fo) <= wait ||
	    !upstream_any_available(c->up, now_ms()) ||
	    !retry_budget_take(&c->up->budget, rc->budget, now_ms()))
		return false;
	log_info("retry: upstream %s: fan-out call %s: server %s: %s%s; try "
	    "%d of %d in %llu ms", u->name, c->cfg->name,
	    u->servers[c->server].url, retry_fail_name(why),
	    why == TRY_STATUS ? " (status)" : "", c->tries + 1, rc->attempts,
	    (unsigned long long)wait);
	c->is_retry = true;
	c->state = FC_BACKOFF;
	arm(&c->timer, wait);
	return true;
}

/* The try ended; the transfer is off the multi handle. */
static void
fcall_try_ended(struct fcall *c, enum try_fail why, int status,
    const char *error)
{
	bool failure = why != TRY_STATUS || status == 502 || status == 503 ||
	    status == 504;
	const struct upstream_cfg *u = c->up->cfg;

	if (why != TRY_CLIENT)
		metrics_try(u->mslot, u->servers[c->server].mslot,
		    proxy_outcome(why, status), proxy_mono_us() - c->start_us,
		    c->tries > 1);
	if (why != TRY_LOCAL && !c->recorded) {
		c->recorded = true;
		upstream_record(c->up, c->server, !failure, c->trial);
		c->trial = 0;
	}
	upstream_end(c->up, c->server);
	c->in_flight = false;
	if (c->is_retry) {
		retry_budget_done(&c->up->budget);
		c->is_retry = false;
	}
	c->state = FC_IDLE;
	if ((why != TRY_STATUS || status >= 400) && fcall_retry(c, why, status))
		return;
	if (why == TRY_STATUS) {
		c->status = status;
		c->error = NULL;
		fcall_finished(c);
	} else
		fcall_fail(c, why == TRY_TIMEOUT ||
		    (why == TRY_CONNECT && status == 504) ? 504 : 502, error);
}

static void
fcall_done(struct curl_job *job, CURLcode rc)
{
	struct fcall *c = (struct fcall *)job;
	enum try_fail why;
	const char *error;
	int status = 502;
	long sent = 0;

	curlev_remove(c->easy);
	c->state = FC_IDLE;
	if (rc == CURLE_OK && c->status >= 200 && !c->in_head) {
		fcall_try_ended(c, TRY_STATUS, c->status, NULL);
		return;
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		curl_easy_getinfo(c->easy, CURLINFO_REQUEST_SIZE, &sent);
		why = sent > 0 ? TRY_TIMEOUT : TRY_CONNECT;
		status = 504;
		error = "upstream timed out";
		break;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		why = TRY_CONNECT;
		error = "upstream connection failed";
		break;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		why = TRY_CONNECT;
		error = "upstream TLS handshake failed";
		break;
	case CURLE_WRITE_ERROR:
		why = c->too_big ? TRY_LOCAL : TRY_INVALID;
		error = c->too_big ? "upstream answer too large" :
		    "upstream sent an invalid response head";
		break;
	case CURLE_OK:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL:
		why = TRY_INVALID;
		error = "upstream sent an invalid response";
		break;
	default:
		why = TRY_RESET;
		error = "upstream closed the connection";
		break;
	}
	fcall_log(c, true, error, c->errbuf[0] ? c->errbuf :
	    curl_easy_strerror(rc));
	fcall_try_ended(c, why, status, error);
}

/*
 * The try's options.  Its timeouts are the upstream's, unless the
 * fan-out's deadline comes first: then none (0), and the fan-out's timer
 * cuts the call, saying it was the fan-out timeout.
 */
static void
fcall_setup(struct fcall *c)
{
	const struct upstream_cfg *u = c->up->cfg;
	const struct server_cfg *srv = &u->servers[c->server];
	uint64_t t = u->timeout_ms, ct = u->connect_timeout_ms;
	uint64_t left = fanout_left(c->fo);
	CURL *e = c->easy;

	curl_easy_reset(e);
	buf_reset(&c->url);
	buf_reset(&c->head);
	buf_reset(&c->body);
	c->in_head = false;
	c->head_done = false;
	c->too_big = false;
	c->status = 0;
	c->errbuf[0] = '\0';
	if (buf_append(&c->url, srv->url, strlen(srv->url)) != 0 ||
	    buf_append(&c->url, c->target.data, c->target.len) != 0 ||
	    buf_append(&c->url, "", 1) != 0)
		return;
	curl_easy_setopt(e, CURLOPT_URL, c->url.data);
	curlev_upstream(e, u, srv);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->takes_body ?
	    c->fo->bhdrs : c->fo->hdrs);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, fcall_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fcall_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(ct < left ? ct :
	    0));
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(t < left ? t : 0));
	if (c->takes_body) {
		/* Sent from the request's copy, not copied again; any method
		 * (POSTFIELDS alone would make it a POST). */
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)c->fo->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->fo->body != NULL ?
		    c->fo->body : "");
		if (strcmp(c->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
	} else if (strcmp(c->method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (strcmp(c->method, "GET") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
}

/* -- the native exchange -------------------------------------------------- */

/* The try failed: error is what the answer says, detail what the log
 * adds (as proxy.c's native transport words it). */
static void
fn_fail(struct fcall *c, enum try_fail why, int status, const char *error,
    const char *detail)
{
	fcall_log(c, true, error, detail);
	evtimer_del(&c->timer);
	if (c->uc != NULL) {
		upconn_close(c->uc);
		c->uc = NULL;
	}
	c->state = FC_IDLE;
	fcall_try_ended(c, why, status, error);
}

/* The try's request in bytes: its head, and the body if it carries it. */
static size_t
fn_request_len(const struct fcall *c)
{
	return c->out.len + (c->takes_body ? c->fo->body_len : 0);
}

/*
 * Arms the try's timer for until (monotonic ms), the upstream's connect
 * timeout or timeout.  Not when the fan-out's deadline comes first: its
 * own timer cuts the call then, and says it was the fan-out timeout.
 */
static void
fn_arm(struct fcall *c, uint64_t until)
{
	uint64_t now = now_ms();

	evtimer_del(&c->timer);
	if (until < c->fo->deadline)
		arm(&c->timer, until > now ? until - now : 0);
}

static void
fn_consume(struct fcall *c, size_t n)
{
	if (n < c->in.len)
		memmove(c->in.data, c->in.data + n, c->in.len - n);
	c->in.len -= n;
	c->scan = 0;
}

static int
fn_keep(struct fcall *c, const char *p, size_t n)
{
	if (c->body.len + n > FANOUT_BODY_MAX) {
		fn_fail(c, TRY_LOCAL, 502, "upstream answer too large",
		    "over 8 MiB");
		return -1;
	}
	if (buf_append(&c->body, p, n) != 0) {
		fn_fail(c, TRY_LOCAL, 502, "out of memory", "response buffer");
		return -1;
	}
	return 0;
}

/* The answer is whole: the connection goes back to the pool if it can. */
static void
fn_complete(struct fcall *c)
{
	bool keep = c->rh.keepalive && c->framing != FN_CLOSE &&
	    c->in.len == 0 && c->wpos == fn_request_len(c);

	evtimer_del(&c->timer);
	upconn_want_write(c->uc, false);
	if (keep)
		upconn_put(c->uc);
	else
		upconn_close(c->uc);
	c->uc = NULL;
	c->state = FC_IDLE;
	fcall_try_ended(c, TRY_STATUS, c->status, NULL);
}

/* Works through what has been read; -1 once the try has ended. */
static int
fn_parse(struct fcall *c)
{
	size_t end, used, dlen;
	const char *data;

	while (c->framing == -1) {
		if ((end = http_head_end(c->in.data, c->in.len,
		    &c->scan)) == 0) {
			if (c->in.len <= FANOUT_HEAD_MAX)
				return 0;
			fn_fail(c, TRY_INVALID, 502, "upstream sent an invalid "
			    "response head (too large)", "head over 64 KiB");
			return -1;
		}
		if (!http_parse_response_head(c->in.data, end, &c->rh) ||
		    c->rh.other_coding || c->rh.status == 101) {
			fn_fail(c, TRY_INVALID, 502, "upstream sent an invalid "
			    "response head", "bad status line, field or "
			    "framing");
			return -1;
		}
		if (c->rh.status < 200) {
			fn_consume(c, end);	/* 100, 103: dropped */
			continue;
		}
		c->status = c->rh.status;
		buf_reset(&c->head);
		if (buf_append(&c->head, c->rh.fields, c->rh.fields_len) != 0) {
			fn_fail(c, TRY_LOCAL, 502, "out of memory",
			    "response head");
			return -1;
		}
		if (strcmp(c->method, "HEAD") == 0 || c->status == 204 ||
		    c->status == 304)
			c->framing = FN_NONE;
		else if (c->rh.chunked) {
			http_chunked_init(&c->chunk);
			c->framing = FN_CHUNKED;
		} else if (c->rh.content_length >= 0) {
			c->left = c->rh.content_length;
			c->framing = FN_LENGTH;
		} else
			c->framing = FN_CLOSE;
		fn_consume(c, end);
	}
	switch (c->framing) {
	case FN_NONE:
		fn_complete(c);
		return -1;
	case FN_LENGTH:
		used = (int64_t)c->in.len < c->left ? c->in.len :
		    (size_t)c->left;
		if (fn_keep(c, c->in.data, used) == -1)
			return -1;
		fn_consume(c, used);
		c->left -= (int64_t)used;
		if (c->left == 0) {
			fn_complete(c);
			return -1;
		}
		return 0;
	case FN_CHUNKED:
		for (;;) {
			enum http_chunk_result rc = http_chunked_next(&c->chunk,
			    c->in.data, c->in.len, SIZE_MAX, &used, &data,
			    &dlen);

			if (rc == CHUNK_DATA && fn_keep(c, data, dlen) == -1)
				return -1;
			fn_consume(c, used);
			if (rc == CHUNK_DONE) {
				fn_complete(c);
				return -1;
			}
			if (rc == CHUNK_ERROR) {
				fn_fail(c, TRY_INVALID, 502, "upstream sent a bad "
				    "chunked body", "chunk framing");
				return -1;
			}
			if (rc == CHUNK_AGAIN)
				return 0;
		}
	default:		/* FN_CLOSE: until the server closes */
		if (fn_keep(c, c->in.data, c->in.len) == -1)
			return -1;
		fn_consume(c, c->in.len);
		return 0;
	}
}

static void	fn_connect(struct fcall *, bool fresh);

static void
fn_eof(struct fcall *c, const char *detail)
{
	if (c->framing == FN_CLOSE) {
		c->rh.keepalive = false;
		fn_complete(c);
		return;
	}
	if (c->framing == -1 && !c->got_bytes && c->reused &&
	    !c->stale_retried && retry_method(&c->up->cfg->retry,
	    c->method, strlen(c->method))) {
		/* The keep-alive race: send again on a fresh connection. */
		upconn_close(c->uc);
		c->uc = NULL;
		c->stale_retried = true;
		fn_connect(c, true);
		return;
	}
	fn_fail(c, TRY_RESET, 502, c->framing == -1 ?
	    "upstream closed the connection" :
	    "upstream closed the connection mid-response", detail);
}

static void
fn_recv(struct fcall *c)
{
	ssize_t n;

	for (;;) {
		if (buf_reserve(&c->in, 16384) != 0) {
			fn_fail(c, TRY_LOCAL, 502, "out of memory",
			    "response buffer");
			return;
		}
		n = read(c->uc->fd, c->in.data + c->in.len,
		    c->in.cap - c->in.len);
		if (n > 0) {
			c->in.len += (size_t)n;
			c->got_bytes = true;
			if (fn_parse(c) == -1)
				return;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		fn_eof(c, n == 0 ? "end of file" : strerror(errno));
		return;
	}
}

/* Writes what is left of the request: the head in c->out, then the
 * client's body from the request's copy (never copied per call).
 * Returns -1 once the try has ended. */
static int
fn_send(struct fcall *c)
{
	size_t total = fn_request_len(c), off;
	struct iovec iov[2];
	int niov;
	ssize_t n;

	if (c->send_failed)
		return 0;
	while (c->wpos < total) {
		niov = 0;
		if (c->wpos < c->out.len) {
			iov[niov].iov_base = c->out.data + c->wpos;
			iov[niov++].iov_len = c->out.len - c->wpos;
		}
		if (total > c->out.len) {
			off = c->wpos > c->out.len ? c->wpos - c->out.len : 0;
			iov[niov].iov_base = (char *)c->fo->body + off;
			iov[niov++].iov_len = c->fo->body_len - off;
		}
		n = writev(c->uc->fd, iov, niov);
		if (n > 0) {
			c->wpos += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			upconn_want_write(c->uc, true);
			return 0;
		}
		/* The server stopped reading.  If it has begun to answer,
		 * the answer decides; else the exchange is lost. */
		upconn_want_write(c->uc, false);
		c->send_failed = true;
		if (c->got_bytes)
			return 0;
		fn_eof(c, strerror(errno));
		return -1;
	}
	upconn_want_write(c->uc, false);
	return 0;
}

static void
fn_ready(void *arg, short what)
{
	struct fcall *c = arg;
	int err;

	if (c->connecting) {
		c->connecting = false;
		if ((err = upconn_connect_error(c->uc)) != 0) {
			fn_fail(c, TRY_CONNECT, 502, "upstream connection "
			    "failed", strerror(err));
			return;
		}
		fn_arm(c, c->try_deadline);
		fn_send(c);
		return;
	}
	if ((what & EV_WRITE) && fn_send(c) == -1)
		return;
	if (what & EV_READ)
		fn_recv(c);
}

static void
fn_connect(struct fcall *c, bool fresh)
{
	struct server_rt *srv = &c->up->servers[c->server];
	uint64_t now = now_ms(), ct = c->up->cfg->connect_timeout_ms;

	if (fresh)
		upconn_close_idle(srv);		/* its siblings are suspect */
	if ((c->uc = upconn_get(c->up, srv, &c->reused)) == NULL) {
		fn_fail(c, TRY_CONNECT, 502, "upstream connection failed",
		    strerror(errno));
		return;
	}
	upconn_own(c->uc, c, fn_ready);
	upconn_want_read(c->uc, true);
	c->wpos = 0;
	c->in.len = 0;
	c->scan = 0;
	c->got_bytes = false;
	c->send_failed = false;
	if (c->reused) {
		c->connecting = false;
		fn_arm(c, c->try_deadline);
		fn_send(c);
		return;
	}
	c->connecting = true;
	fn_arm(c, now + ct < c->try_deadline ? now + ct : c->try_deadline);
}

/* A try by agate's own client: the request, then the connection. */
static void
fn_start(struct fcall *c)
{
	struct server_rt *srv = &c->up->servers[c->server];
	const char *m = c->method;
	struct buf *o = &c->out;
	int rc = 0;

	buf_reset(o);
	buf_reset(&c->head);
	buf_reset(&c->body);
	rc |= buf_append(o, m, strlen(m));
	rc |= buf_append(o, " ", 1);
	rc |= buf_append(o, c->target.data, c->target.len);
	rc |= buf_append(o, " HTTP/1.1\r\nHost: ", 17);
	rc |= buf_append(o, srv->host_hdr, strlen(srv->host_hdr));
	rc |= buf_append(o, "\r\n", 2);
	rc |= buf_append(o, c->fo->hblock.data, c->fo->hblock.len);
	if (c->takes_body)
		rc |= buf_append(o, c->fo->bhblock.data, c->fo->bhblock.len);
	else if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0)
		rc |= buf_append(o, "Content-Length: 0\r\n", 19);
	rc |= buf_append(o, "\r\n", 2);
	c->status = 0;
	c->framing = -1;
	c->stale_retried = false;
	c->state = FC_RUNNING;
	c->try_deadline = now_ms() + c->up->cfg->timeout_ms;
	if (rc != 0) {
		fn_fail(c, TRY_LOCAL, 502, "out of memory", "request head");
		return;
	}
	fn_connect(c, false);
}

static void
fcall_try(struct fcall *c)
{
	ssize_t server;

	if ((server = upstream_pick(c->up, c->tried, now_ms(),
	    &c->trial)) < 0) {
		fcall_fail(c, 503, "no server available (all down or circuit "
		    "open)");
		return;
	}
	c->server = (size_t)server;
	if (server < 64)
		c->tried |= UINT64_C(1) << server;
	c->tries++;
	c->recorded = false;
	c->start_us = proxy_mono_us();
	upstream_begin(c->up, c->server);
	c->in_flight = true;
	if (c->up->servers[c->server].native) {
		fn_start(c);
		return;
	}
	fcall_setup(c);
	if (c->url.len == 0 || curlev_add(c->easy, &c->job) == -1) {
		fcall_try_ended(c, TRY_LOCAL, 502, "cannot start the call");
		return;
	}
	c->state = FC_RUNNING;
}

static void
fcall_timer(evutil_socket_t fd, short what, void *arg)
{
	struct fcall *c = arg;

	(void)fd;
	(void)what;
	if (c->state == FC_RUNNING && c->uc != NULL) {
		if (c->connecting)
			fn_fail(c, TRY_CONNECT, 504, "upstream connect timed "
			    "out", "connect_timeout");
		else
			fn_fail(c, TRY_TIMEOUT, 504, "upstream timed out",
			    "timeout");
		return;
	}
	fcall_try(c);		/* after a backoff, or a slot handed over */
}

static void
fcall_wake(struct lim_waiter *w)
{
	struct fcall *c = (struct fcall *)((char *)w -
	    offsetof(struct fcall, wait));

	c->has_slot = true;
	c->state = FC_BACKOFF;		/* starts from the loop */
	arm(&c->timer, 0);
}

static void
fcall_start(struct fcall *c)
{
	retry_budget_try(&c->up->budget, now_ms());
	if (!upstream_any_available(c->up, now_ms())) {
		fcall_fail(c, 503, "no server available (all down or circuit "
		    "open)");
		return;
	}
	c->wait.wake = fcall_wake;
	switch (limiter_acquire(&c->up->limit, &c->wait)) {
	case LIM_GO:
		c->has_slot = true;
		fcall_try(c);
		return;
	case LIM_QUEUED:
		c->state = FC_QUEUED;	/* the fan-out timeout bounds it */
		return;
	case LIM_FULL:
		fcall_fail(c, 503, "upstream at its concurrency limit and its "
		    "queue is full");
		return;
	}
}

/* -- the fan-out --------------------------------------------------------- */

static void
fanout_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct fanout *fo = arg;
	size_t i, n = fo->ncalls;

	(void)fd;
	(void)what;
	if (fo->reading) {
		/* No call has started: the client is what was slow. */
		struct request *r = fanout_release(fo);

		req_error(r, 408, "client sent the request body too slowly",
		    NULL);
		return;
	}
	/* Each unfinished call times out.  The one whose failure makes the
	 * answer (any, for all; the last, otherwise) ends the loop: fo is
	 * gone once the answer is made. */
	for (i = 0; i < n; i++) {
		struct fcall *c = &fo->calls[i];
		bool answers = fo->ncalls - fo->ndone == 1 ||
		    fo->cfg->mode == FANOUT_ALL;

		if (c->state == FC_DONE)
			continue;
		fcall_log(c, c->tries > 0, FANOUT_TIMED_OUT,
		    c->state == FC_QUEUED ? "waiting for a slot of the "
		    "upstream" : c->state == FC_BACKOFF && c->tries > 0 ?
		    "waiting to retry" : NULL);
		fcall_fail(c, 504, FANOUT_TIMED_OUT);
		if (answers)
			return;
	}
}

static void
fanout_abort(struct request *r)
{
	struct fanout *fo = r->gw;

	/* The client is gone: every call is cancelled. */
	r->gw = NULL;
	r->hooks = NULL;
	fanout_free(fo);
}

static int
add_header(struct fanout *fo, const char *name, const char *value,
    size_t vlen)
{
	struct curl_slist *l;
	char line[8192];

	if (snprintf(line, sizeof(line), "%s: %.*s", name, (int)vlen,
	    value) >= (int)sizeof(line))
		return 0;		/* too long to forward: left out */
	if ((l = curl_slist_append(fo->hdrs, line)) == NULL)
		return -1;
	fo->hdrs = l;
	if (buf_append(&fo->hblock, line, strlen(line)) != 0 ||
	    buf_append(&fo->hblock, "\r\n", 2) != 0)
		return -1;
	return 0;
}

/* Whether forward_headers[i] is sent anyway, or listed before i. */
static bool
forwarded_already(const struct fanout_cfg *cfg, size_t i)
{
	static const char *const own[] = {
		"Authorization", "Cookie", "X-Request-Id", "X-Forwarded-For",
		"Accept"
	};
	const char *name = cfg->forward_headers[i];
	size_t j;

	for (j = 0; j < sizeof(own) / sizeof(own[0]); j++)
		if (strcasecmp(name, own[j]) == 0)
			return true;
	for (j = 0; j < i; j++)
		if (strcasecmp(name, cfg->forward_headers[j]) == 0)
			return true;
	return false;
}

/*
 * The headers every call carries: those that say who calls
 * (Authorization, Cookie, and the route's forward_headers), one
 * X-Request-Id for all, the client's address; and none of libcurl's own
 * Accept.
 */
static int
fanout_headers(struct fanout *fo)
{
	static const char *const always[] = { "Authorization", "Cookie" };
	const struct request *r = fo->req;
	const struct http_header *h;
	struct curl_slist *l;
	size_t i;

	for (i = 0; i < 2; i++)
		if ((h = req_header(r, always[i])) != NULL &&
		    add_header(fo, always[i], h->value, h->value_len) == -1)
			return -1;
	for (i = 0; i < fo->cfg->nforward_headers; i++) {
		const char *name = fo->cfg->forward_headers[i];

		if (forwarded_already(fo->cfg, i))
			continue;
		if ((h = req_header(r, name)) != NULL &&
		    add_header(fo, name, h->value, h->value_len) == -1)
			return -1;
	}
	if (add_header(fo, "X-Request-Id", r->id, r->id_len) == -1 ||
	    add_header(fo, "X-Forwarded-For", r->client,
	    strlen(r->client)) == -1)
		return -1;
	if ((l = curl_slist_append(fo->hdrs, "Accept: application/json, "
	    "*/*")) == NULL || (fo->hdrs = l, buf_append(&fo->hblock,
	    "Accept: application/json, */*\r\n", 31) != 0))
		return -1;
	return 0;
}

/*
 * The headers of the calls that carry the body: the others', then the
 * client's Content-Type and Content-Encoding (they say what the bytes
 * are) and the body's length.  libcurl gets "Expect:" so that it never
 * waits for a 100 Continue, and "Content-Type:" when the client sent
 * none, so that it adds no form type of its own.
 */
static int
fanout_body_headers(struct fanout *fo)
{
	static const char *const describe[] = {
		"Content-Type", "Content-Encoding"
	};
	const struct http_header *h;
	struct curl_slist *l, *p;
	struct buf line = { 0 };
	size_t i;
	int rc = 0;

	for (p = fo->hdrs; p != NULL && rc == 0; p = p->next)
		if ((l = curl_slist_append(fo->bhdrs, p->data)) != NULL)
			fo->bhdrs = l;
		else
			rc = -1;
	for (i = 0; i < 2 && rc == 0; i++) {
		buf_reset(&line);
		if ((h = req_header(fo->req, describe[i])) != NULL)
			rc |= buf_appendf(&line, "%s: %.*s", describe[i],
			    (int)h->value_len, h->value);
		else if (i == 0)
			rc |= buf_appendf(&line, "%s:", describe[i]);
		else
			continue;
		if (rc == 0 && h != NULL)
			rc |= buf_appendf(&fo->bhblock, "%s\r\n", line.data);
		if (rc == 0 && (l = curl_slist_append(fo->bhdrs,
		    line.data)) != NULL)
			fo->bhdrs = l;
		else
			rc = -1;
	}
	buf_free(&line);
	if (rc != 0 || (l = curl_slist_append(fo->bhdrs, "Expect:")) == NULL)
		return -1;
	fo->bhdrs = l;
	return buf_appendf(&fo->bhblock, "Content-Length: %zu\r\n",
	    fo->body_len);
}

static int
fanout_stream_start(struct fanout *fo)
{
	static const char h[] = "Content-Type: application/x-ndjson\r\n"
	    "Cache-Control: no-store\r\n";

	fo->streaming = true;
	return req_start_response(fo->req, 200, NULL, 0, h, sizeof(h) - 1, -1);
}

/*
 * The body is whole, or there is none: the calls made with the client's
 * method carry it.  A body that none would carry is refused: answering
 * 200 without it would lose the client's data without a word.  Then
 * every call starts at once.
 */
static void
fanout_go(struct fanout *fo)
{
	struct request *r = fo->req;
	bool has_body = req_has_body(r);
	size_t i, n, takers = 0;
	char msg[160];

	fo->reading = false;
	if (has_body && r->keep != NULL) {
		fo->body = r->keep->data;
		fo->body_len = r->keep->len;
	}
	for (i = 0; i < fo->ncalls; i++) {
		struct fcall *c = &fo->calls[i];

		c->takes_body = has_body && strcmp(c->method, fo->method) == 0;
		takers += c->takes_body;
	}
	if (fo->body_len > 0 && takers == 0) {
		snprintf(msg, sizeof(msg), "no call of this fan-out route "
		    "takes a request body: each is made with a method other "
		    "than %s", fo->method);
		r = fanout_release(fo);
		req_error(r, 400, msg, NULL);
		return;
	}
	if (takers > 0 && fanout_body_headers(fo) == -1) {
		r = fanout_release(fo);
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	if (fo->cfg->mode == FANOUT_STREAM && fanout_stream_start(fo) == -1) {
		fanout_release(fo);
		return;
	}
	/* All at once.  A call that ends at once (no server) may answer
	 * the request and free fo: stop when that happens, before touching
	 * fo again. */
	for (i = 0, n = fo->ncalls; i < n; i++) {
		if (r->gw != fo)
			return;
		fcall_start(&fo->calls[i]);
	}
}

/* The most body a fan-out holds: max_body_size, or as much as a call's
 * answer when that is 0 (no limit), since it is held in memory. */
static size_t
fanout_body_max(void)
{
	uint64_t max = worker.cfg->server.max_body_size;

	return max != 0 ? (size_t)max : FANOUT_BODY_MAX;
}

/* Reads on until the body is whole; the request layer keeps it. */
static void
fanout_read_body(struct fanout *fo)
{
	struct request *r = fo->req;
	char scratch[16384];
	ssize_t n;

	for (;;) {
		n = req_read_body(r, scratch, sizeof(scratch));
		if (n == REQ_BODY_AGAIN)
			return;			/* body_ready() follows */
		if (n == REQ_BODY_ERROR) {
			fanout_release(fo);	/* answered: 413, or 400 */
			return;
		}
		if (r->keep == NULL || r->keep_lost) {
			log_info("request %.*s: fan-out body over %zu bytes",
			    (int)r->id_len, r->id, fanout_body_max());
			r = fanout_release(fo);
			req_error(r, 413, "request body too large", NULL);
			return;
		}
		if (n == 0) {
			fanout_go(fo);
			return;
		}
	}
}

static void
fanout_body_ready(struct request *r)
{
	struct fanout *fo = r->gw;

	if (fo->reading)
		fanout_read_body(fo);
}

void
fanout_start(struct request *r)
{
	const struct fanout_cfg *cfg = &r->route->fanout;
	const struct http_head *hd = &r->head;
	struct fanout *fo;
	char missing[128], msg[256];
	size_t i;
	int rc;

	if ((fo = calloc(1, sizeof(*fo))) == NULL ||
	    (fo->calls = calloc(cfg->ncalls, sizeof(*fo->calls))) == NULL) {
		free(fo);
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	fo->req = r;
	fo->cfg = cfg;
	fo->ncalls = cfg->ncalls;
	fo->deadline = now_ms() + cfg->timeout_ms;
	evtimer_assign(&fo->timer, worker.base, fanout_timeout, fo);
	/* The method of the calls without one: the client's, but GET for
	 * HEAD, whose answer is the GET answer without its body. */
	if (http_token_eq(hd->method, hd->method_len, "HEAD"))
		snprintf(fo->method, sizeof(fo->method), "GET");
	else
		snprintf(fo->method, sizeof(fo->method), "%.*s",
		    (int)hd->method_len, hd->method);
	for (i = 0; i < fo->ncalls; i++) {
		struct fcall *c = &fo->calls[i];

		c->job.done = fcall_done;
		c->fo = fo;
		c->cfg = &cfg->calls[i];
		c->method = c->cfg->method != NULL ? c->cfg->method :
		    fo->method;
		c->up = upstream_rt(c->cfg->upstream);
		evtimer_assign(&c->timer, worker.base, fcall_timer, c);
		rc = expand(r, c->cfg->path, &c->target, missing,
		    sizeof(missing));
		if (rc == 1) {
			snprintf(msg, sizeof(msg), "fan-out call %s needs "
			    "{%s}, which this request does not have",
			    c->cfg->name, missing);
			fanout_free(fo);
			req_error(r, 400, msg, NULL);
			return;
		}
		if (rc == -1 || (c->easy = curl_easy_init()) == NULL) {
			fanout_free(fo);
			req_error(r, 503, "out of memory", NULL);
			return;
		}
	}
	if (fanout_headers(fo) == -1) {
		fanout_free(fo);
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	if (hd->content_length > (int64_t)fanout_body_max()) {
		fanout_free(fo);
		req_error(r, 413, "request body too large", NULL);
		return;
	}
	if (req_has_body(r) && req_body_keep(r, fanout_body_max()) == -1) {
		fanout_free(fo);
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	r->gw = fo;
	r->hooks = &fanout_hooks;
	/* The fan-out timeout runs from here, reading the body included. */
	arm(&fo->timer, cfg->timeout_ms);
	if (!req_has_body(r)) {
		fanout_go(fo);
		return;
	}
	fo->reading = true;
	req_continue(r);
	fanout_read_body(fo);
}
