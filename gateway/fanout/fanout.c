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
 * Each call is one upstream call (gateway/upstream/call.h), the same a
 * proxied request makes: its upstream's limit and queue, server choice,
 * retries with backoff and budget, the breaker, both transports.  Its
 * sink here collects the answer in memory (at most FANOUT_BODY_MAX).
 * Cancelling a call closes its connection if it was mid-exchange.
 * Everything is released synchronously when the request is answered or
 * its client leaves.
 *
 * A call without a method of its own is made with the client's, and a
 * call made with the client's method carries the client's body.  So the
 * body is read in full before any call starts (the request layer keeps
 * it, within max_body_size) and each such call sends it from there; a
 * body that no call would carry is refused rather than dropped.  The
 * fan-out timeout counts from the start, reading the body included, and
 * it alone cuts a call at its deadline (the calls' own timeouts are not
 * armed past it), so a call it cuts says so.
 */
#include <sys/uio.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <jansson.h>

#include "gateway/fanout/fanout.h"
#include "gateway/gateway.h"
#include "gateway/trace/trace.h"
#include "gateway/upstream/call.h"
#include "gateway/upstream/upstream.h"
#include "lib/buf.h"
#include "lib/encode.h"
#include "lib/log.h"
#include "offload/offload.h"
#include "worker/loopwatch.h"
#include "worker/worker.h"

#define FANOUT_BODY_MAX	(8 * 1024 * 1024)

/* What a call cut by the fan-out's own timeout reports, in every mode. */
#define FANOUT_TIMED_OUT	"timed out (fan-out timeout)"

enum fc_state {
	FC_IDLE,		/* not started */
	FC_RUNNING,		/* its call is out */
	FC_DONE
};

struct fanout;

struct fcall {
	struct fanout			*fo;
	const struct fanout_call_cfg	*cfg;
	struct upstream_rt		*up;
	struct call			*call;		/* while it runs */
	struct call_spec		 spec;
	enum fc_state			 state;
	const char			*method;	/* its own or the client's */
	bool				 takes_body;	/* the client's body */
	struct buf			 target;	/* expanded path?query */
	struct buf			 head;		/* the answer's fields */
	struct buf			 body;
	int				 status;	/* final answer */
	bool				 too_big;
	const char			*error;		/* NULL: answered */
	char				 why[160];	/* error's text */
};

struct fanout {
	struct request			*req;
	const struct fanout_cfg		*cfg;
	struct fcall			*calls;
	size_t				 ncalls;
	size_t				 ndone;
	size_t				 nfailed;
	const char			*body;		/* in r->keep */
	size_t				 body_len;
	char				 method[HTTP_MAX_METHOD + 1];
	uint64_t			 deadline;	/* monotonic ms */
	struct event			 timer;		/* the fan-out timeout */
	struct job			*merge;		/* merging in the pool */
	uint64_t			 merge_ns;	/* its span's start, or 0 */
	bool				 reading;	/* the client's body */
	bool				 streaming;
};

static void	fanout_abort(struct request *);
static void	fanout_nop(struct request *);
static void	fanout_progress(struct fanout *, struct fcall *);
static void	fanout_body_ready(struct request *);
static void	fcall_over(struct fcall *, int, const char *);
static int	fcall_headers(const struct call *, call_emit_fn, void *,
		    struct buf *);

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

/* Cancels the call if it is still out (no sink callback follows). */
static void
fcall_stop(struct fcall *c)
{
	if (c->call != NULL) {
		call_cancel(c->call);
		c->call = NULL;
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
		buf_free(&c->target);
		buf_free(&c->head);
		buf_free(&c->body);
	}
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
	trace_job(&fo->req->trace, "json_merge", status,
	    offload_status_str(status), fo->merge_ns);
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
		fo->merge_ns = trace_recording(&fo->req->trace) ?
		    trace_now_ns() : 0;
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
	int status = c->status;
	size_t n = c->body.len;
	char *body = c->body.data;

	/* The winner's end-to-end headers (the call filtered them), its
	 * framing recomputed. */
	if (buf_append(&hdrs, c->head.data != NULL ? c->head.data : "",
	    c->head.len) != 0 ||
	    buf_appendf(&hdrs, "X-Fanout-Call: %s\r\n", c->cfg->name) != 0) {
		buf_free(&hdrs);
		r = fanout_release(fo);
		req_error(r, 503, "out of memory", NULL);
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

/* The call is over: answered (error NULL) or failed. */
static void
fcall_over(struct fcall *c, int status, const char *error)
{
	if (error != NULL) {
		snprintf(c->why, sizeof(c->why), "%s", error);
		c->error = c->why;
		c->status = status;
	}
	c->state = FC_DONE;
	fanout_progress(c->fo, c);
}

static int
fcall_head(void *arg, int status, const char *reason, size_t reason_len,
    const char *fields, size_t len, int64_t content_length)
{
	struct fcall *c = arg;

	(void)reason;
	(void)reason_len;
	(void)content_length;
	c->status = status;
	buf_reset(&c->head);
	return buf_append(&c->head, fields, len);
}

static int
fcall_body(void *arg, const char *data, size_t len)
{
	struct fcall *c = arg;

	if (c->body.len + len > FANOUT_BODY_MAX) {
		c->too_big = true;
		return -1;
	}
	return buf_append(&c->body, data, len);
}

static void
fcall_done(void *arg, int status, const char *error, const char *extra)
{
	struct fcall *c = arg;

	(void)extra;
	c->call = NULL;
	if (c->too_big) {
		buf_reset(&c->body);
		fcall_over(c, 502, "upstream answer too large");
		return;
	}
	fcall_over(c, status, error);
}

static const struct call_sink fcall_sink = {
	.head = fcall_head,
	.body = fcall_body,
	.done = fcall_done,
};

static void
fcall_start(struct fcall *c)
{
	struct fanout *fo = c->fo;
	struct call *call;

	c->spec = (struct call_spec){
		.req = fo->req,
		.name = c->cfg->name,
		.method = c->method,
		.method_len = strlen(c->method),
		.target = c->target.data,
		.target_len = c->target.len,
		.headers = fcall_headers,
		.has_body = c->takes_body,
		.body = c->takes_body ? fo->body : NULL,
		.body_len = c->takes_body ? fo->body_len : 0,
		.deadline = fo->deadline,
		.owner_deadline = true,
	};
	c->state = FC_RUNNING;
	/* NULL: over already (done() ran, and may have freed fo). */
	if ((call = call_start(c->up, &c->spec, &fcall_sink, c)) != NULL)
		c->call = call;
}

/* -- the fan-out --------------------------------------------------------- */

static void
fanout_timeout_run(evutil_socket_t fd, short what, void *arg)
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
		if (c->call != NULL)
			call_log_cut(c->call, FANOUT_TIMED_OUT);
		fcall_stop(c);
		fcall_over(c, 504, FANOUT_TIMED_OUT);
		if (answers)
			return;
	}
}

static void
fanout_timeout(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_UPSTREAM_TIMER);
	fanout_timeout_run(fd, what, arg);
	loopwatch_end();
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

/* One of the client's fields, if it sent it (and it is not too long). */
static int
emit_client(const struct request *r, const char *name, call_emit_fn emit,
    void *arg)
{
	const struct http_header *h = req_header(r, name);

	if (h == NULL || h->value_len > 8000)
		return 0;		/* absent, or too long to forward */
	return emit(arg, name, strlen(name), h->value, h->value_len);
}

/*
 * The headers of a call: those that say who calls (Authorization,
 * Cookie, and the route's forward_headers), one X-Request-Id for all,
 * the client's address, Accept; and for a call that carries the body,
 * the client's Content-Type and Content-Encoding (they say what the
 * bytes are).
 */
static int
fcall_headers(const struct call *call, call_emit_fn emit, void *arg,
    struct buf *scratch)
{
	static const char accept[] = "application/json, */*";
	const struct fcall *c = call->sink_arg;
	const struct fanout_cfg *cfg = c->fo->cfg;
	const struct request *r = c->fo->req;
	size_t i;
	int rc = 0;

	(void)scratch;
	rc |= emit_client(r, "Authorization", emit, arg);
	rc |= emit_client(r, "Cookie", emit, arg);
	for (i = 0; i < cfg->nforward_headers; i++)
		if (!forwarded_already(cfg, i))
			rc |= emit_client(r, cfg->forward_headers[i], emit,
			    arg);
	rc |= emit(arg, "X-Request-Id", 12, r->id, r->id_len);
	rc |= emit(arg, "X-Forwarded-For", 15, r->client, strlen(r->client));
	rc |= emit(arg, "Accept", 6, accept, sizeof(accept) - 1);
	if (c->takes_body) {
		rc |= emit_client(r, "Content-Type", emit, arg);
		rc |= emit_client(r, "Content-Encoding", emit, arg);
	}
	return rc != 0 ? -1 : 0;
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

	switch (req_read_whole(r)) {
	case REQ_BODY_AGAIN:
		return;			/* body_ready() follows */
	case REQ_BODY_ERROR:
		fanout_release(fo);	/* answered: 413, or 400 */
		return;
	case REQ_BODY_TOO_BIG:
		log_info("request %.*s: fan-out body over %zu bytes",
		    (int)r->id_len, r->id, fanout_body_max());
		r = fanout_release(fo);
		req_error(r, 413, "request body too large", NULL);
		return;
	default:
		fanout_go(fo);
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

		c->fo = fo;
		c->cfg = &cfg->calls[i];
		c->method = c->cfg->method != NULL ? c->cfg->method :
		    fo->method;
		c->up = upstream_rt(c->cfg->upstream);
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
		if (rc == -1) {
			fanout_free(fo);
			req_error(r, 503, "out of memory", NULL);
			return;
		}
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
