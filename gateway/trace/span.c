/*
 * Span ids, a request's trace context and the span records.
 *
 * Ids come from xorshift128+ seeded from getrandom(2) in each worker
 * (after fork, so workers never share a sequence): they must be unique,
 * not secret, and the hot path cannot pay for a syscall per id.
 *
 * A span is recorded as a compact record appended to the exporter's
 * queue (a struct buf), not as JSON: a fixed header, the name, then
 * each attribute as a key number, a type and the value.  export.c turns
 * records into OTLP JSON when a batch goes out, off the request's path.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/trace/span.h"
#include "gateway/trace/trace.h"
#include "lib/buf.h"
#include "worker/worker.h"

static uint64_t		 rng[2];
static struct event_base *tr_base;	/* its cached time: span times */
static bool		 tr_on;		/* a tracing: section */
static bool		 tr_export;	/* and an otlp: to send spans to */
static uint64_t		 tr_threshold;	/* sample when rng < this */

/* The record being written: its start in the queue, or SIZE_MAX. */
static size_t		 rec_at = SIZE_MAX;

static const struct {
	const char	*key;
	bool		 is_int;
} attrs[SA_COUNT] = {
	[SA_METHOD] = { "http.request.method" },
	[SA_URL_PATH] = { "url.path" },
	[SA_URL_SCHEME] = { "url.scheme" },
	[SA_ROUTE] = { "http.route" },
	[SA_STATUS] = { "http.response.status_code", true },
	[SA_CLIENT] = { "client.address" },
	[SA_PROTO_VERSION] = { "network.protocol.version" },
	[SA_USER_AGENT] = { "user_agent.original" },
	[SA_SERVER_ADDRESS] = { "server.address" },
	[SA_SERVER_PORT] = { "server.port", true },
	[SA_URL_FULL] = { "url.full" },
	[SA_RESEND_COUNT] = { "http.request.resend_count", true },
	[SA_UPSTREAM] = { "agate.upstream" },
	[SA_ERROR_TYPE] = { "error.type" },
	[SA_REQUEST_ID] = { "agate.request_id" },
	[SA_JOB_KIND] = { "agate.job.kind" },
	[SA_JOB_OUTCOME] = { "agate.job.outcome" },
	[SA_FILL_OUTCOME] = { "agate.cache.fill" },
};

static uint64_t
rng_next(void)
{
	uint64_t s1 = rng[0], s0 = rng[1];

	rng[0] = s0;
	s1 ^= s1 << 23;
	rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return rng[1] + s0;
}

int
trace_init(struct event_base *base, const struct config *cfg)
{
	tr_base = base;
	tr_on = cfg->tracing_enabled;
	tr_export = tr_on && cfg->tracing_otlp != NULL;
	if (!tr_on)
		return 0;
	if (getrandom(rng, sizeof(rng), 0) != sizeof(rng) ||
	    (rng[0] | rng[1]) == 0) {
		rng[0] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL;
		rng[1] = (uint64_t)trace_now_ns() | 1;
	}
	/* The top 63 bits of a draw against ratio * 2^63: 1.0 always. */
	tr_threshold = cfg->tracing_sample_ratio >= 1.0 ? UINT64_MAX :
	    (uint64_t)(cfg->tracing_sample_ratio * 9223372036854775808.0);
	return tr_export ? export_init(base, cfg) : 0;
}

void
trace_shutdown(void)
{
	if (tr_export)
		export_shutdown();
	tr_on = tr_export = false;
	tr_base = NULL;
}

bool
trace_enabled(void)
{
	return tr_on;
}

/*
 * The loop's cached wall-clock time (taken once per loop pass, after
 * epoll returns), to the microsecond: a span's times are when the loop
 * saw its events, and four clock reads a request cost more than the
 * precision they would add.
 */
uint64_t
trace_now_ns(void)
{
	struct timespec ts;
	struct timeval tv;

	if (tr_base != NULL && event_base_gettimeofday_cached(tr_base,
	    &tv) == 0)
		return (uint64_t)tv.tv_sec * 1000000000 +
		    (uint64_t)tv.tv_usec * 1000;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

void
trace_new_span_id(uint8_t id[8])
{
	uint64_t v;

	while ((v = rng_next()) == 0)
		;
	memcpy(id, &v, 8);
}

static void
trace_new_id(uint8_t id[16])
{
	uint64_t a = rng_next(), b;

	while ((b = rng_next()) == 0)
		;
	memcpy(id, &a, 8);
	memcpy(id + 8, &b, 8);
}

/* One draw at sample_ratio. */
static bool
tr_sampled_draw(void)
{
	return tr_threshold == UINT64_MAX || (rng_next() >> 1) < tr_threshold;
}

/*
 * The request's traceparent and (first) tracestate fields, in one pass.
 * Two traceparent fields make none: the spec has no way to choose.
 */
static void
trace_fields(const struct request *r, const struct http_header **tp,
    const struct http_header **ts)
{
	const struct http_head *h = &r->head;
	size_t i, ntp = 0;

	*tp = *ts = NULL;
	for (i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];

		if (f->name_len == 11 &&
		    strncasecmp(f->name, "traceparent", 11) == 0) {
			*tp = f;
			ntp++;
		} else if (f->name_len == 10 && *ts == NULL &&
		    strncasecmp(f->name, "tracestate", 10) == 0)
			*ts = f;
	}
	if (ntp > 1)
		*tp = NULL;
}

void
trace_begin(struct request *r)
{
	struct req_trace *t = &r->trace;
	const struct http_header *tp, *ts;

	if (!tr_on)
		return;
	t->on = true;
	trace_fields(r, &tp, &ts);
	if (tp != NULL && traceparent_parse(tp->value, tp->value_len,
	    t->trace_id, t->parent_id, &t->flags) == 0) {
		/* A sampled parent decided (only that bit is ours to pass
		 * on: the others are reserved in level 1); one that did not
		 * sample is sampled at sample_ratio, like a request without
		 * a parent (CONFIG.md: "of requests that arrive without a
		 * sampled parent"), in the caller's trace. */
		t->flags &= TRACE_SAMPLED;
		if (t->flags == 0 && tr_sampled_draw())
			t->flags = TRACE_SAMPLED;
		if (ts != NULL && ts->value_len > 0) {
			t->state = ts->value;
			t->state_len = ts->value_len;
		}
	} else {
		trace_new_id(t->trace_id);
		memset(t->parent_id, 0, sizeof(t->parent_id));
		t->flags = tr_sampled_draw() ? TRACE_SAMPLED : 0;
	}
	trace_new_span_id(t->span_id);
	t->record = tr_export && (t->flags & TRACE_SAMPLED);
	if (t->record)
		t->start_ns = trace_now_ns();
}

bool
trace_recording(const struct req_trace *t)
{
	return t->record && tr_export;
}

bool
trace_field(const char *name, size_t nlen)
{
	return (nlen == 11 && strncasecmp(name, "traceparent", 11) == 0) ||
	    (nlen == 10 && strncasecmp(name, "tracestate", 10) == 0);
}

int
trace_emit(const struct req_trace *t, const uint8_t span_id[8],
    trace_emit_fn emit, void *arg)
{
	char tp[TRACEPARENT_LEN];

	traceparent_format(tp, t->trace_id, span_id, t->flags);
	if (emit(arg, "traceparent", 11, tp, sizeof(tp)) == -1)
		return -1;
	if (t->state != NULL &&
	    emit(arg, "tracestate", 10, t->state, t->state_len) == -1)
		return -1;
	return 0;
}

/* -- records ------------------------------------------------------------ */

const char *
span_attr_key(enum span_attr a, bool *is_int)
{
	*is_int = attrs[a].is_int;
	return attrs[a].key;
}

/* A record could not be finished (no memory): it is cut off the queue. */
static void
span_abort(struct buf *q)
{
	q->len = q->off + rec_at;
	rec_at = SIZE_MAX;
	export_dropped(1);
}

bool
span_open(enum span_kind kind, const uint8_t trace_id[16],
    const uint8_t span_id[8], const uint8_t parent_id[8], uint64_t start_ns,
    uint64_t end_ns, const char *name, size_t nlen)
{
	struct buf *q = export_queue();
	struct span_rec h;
	uint16_t n16;

	rec_at = SIZE_MAX;
	/* Tries cancelled while the worker exits end after the exporter. */
	if (!tr_export)
		return false;
	if (nlen > SPAN_STR_MAX)
		nlen = SPAN_STR_MAX;
	if (!export_room(sizeof(h) + 2 + nlen))
		return false;
	memset(&h, 0, sizeof(h));
	h.kind = (uint8_t)kind;
	memcpy(h.trace_id, trace_id, 16);
	memcpy(h.span_id, span_id, 8);
	memcpy(h.parent_id, parent_id, 8);
	h.start_ns = start_ns;
	h.end_ns = end_ns;
	n16 = (uint16_t)nlen;
	/* Relative to the pending bytes: an append may move them to 0. */
	rec_at = buf_pending(q);
	if (buf_append(q, &h, sizeof(h)) == -1 || buf_append(q, &n16, 2) == -1 ||
	    buf_append(q, name, nlen) == -1) {
		span_abort(q);
		return false;
	}
	return true;
}

void
span_str(enum span_attr a, const char *v, size_t n)
{
	span_str2(a, v, n, NULL, 0);
}

void
span_str2(enum span_attr a, const char *v1, size_t n1, const char *v2,
    size_t n2)
{
	struct buf *q = export_queue();
	uint8_t kt[2] = { (uint8_t)a, 0 };
	uint16_t n16;
	char *o;

	if (rec_at == SIZE_MAX || v1 == NULL)
		return;
	if (n1 > SPAN_STR_MAX)
		n1 = SPAN_STR_MAX;
	if (n2 > SPAN_STR_MAX - n1)
		n2 = SPAN_STR_MAX - n1;
	n16 = (uint16_t)(n1 + n2);
	/* Room checked here, then plain copies: this is the request's
	 * path, and the queue's buffer is nearly always big enough. */
	if (q->cap - q->len < 4 + n1 + n2 &&
	    buf_reserve(q, 4 + n1 + n2) == -1) {
		span_abort(q);
		return;
	}
	o = q->data + q->len;
	memcpy(o, kt, 2);
	memcpy(o + 2, &n16, 2);
	if (n1 > 0)
		memcpy(o + 4, v1, n1);
	if (n2 > 0)
		memcpy(o + 4 + n1, v2, n2);
	q->len += 4 + n1 + n2;
}

void
span_int(enum span_attr a, int64_t v)
{
	struct buf *q = export_queue();
	uint8_t kt[2] = { (uint8_t)a, 1 };
	char *o;

	if (rec_at == SIZE_MAX)
		return;
	if (q->cap - q->len < 10 && buf_reserve(q, 10) == -1) {
		span_abort(q);
		return;
	}
	o = q->data + q->len;
	memcpy(o, kt, 2);
	memcpy(o + 2, &v, 8);
	q->len += 10;
}

void
span_close(enum span_status st)
{
	struct buf *q = export_queue();
	char *h;
	uint32_t len;
	uint8_t s8 = (uint8_t)st;

	if (rec_at == SIZE_MAX)
		return;
	h = buf_head(q) + rec_at;
	len = (uint32_t)(buf_pending(q) - rec_at);
	memcpy(h + offsetof(struct span_rec, status), &s8, 1);
	memcpy(h + offsetof(struct span_rec, len), &len, 4);
	rec_at = SIZE_MAX;
	export_queued();
}

/* -- what the gateway records ------------------------------------------- */

/* The host of a Host field, without its port. */
static size_t
host_only(const char *h, size_t n)
{
	size_t i;

	if (n > 0 && h[0] == '[') {
		for (i = 0; i < n && h[i] != ']'; i++)
			;
		return i < n ? i + 1 : n;
	}
	for (i = 0; i < n && h[i] != ':'; i++)
		;
	return i;
}

/* The SERVER span of a request, from what its log line says too. */
void
trace_end(const struct request *r)
{
	const struct req_trace *t = &r->trace;
	const struct http_header *ua;
	const char *proto = r->carrier->protocol;
	char name[SPAN_STR_MAX];
	size_t nlen, mlen, plen;

	if (!trace_recording(t) || r->head.method == NULL)
		return;
	/* "METHOD route": what the spans of one route share. */
	mlen = r->head.method_len > 32 ? 32 : r->head.method_len;
	memcpy(name, r->head.method, mlen);
	nlen = mlen;
	if (r->route != NULL) {
		plen = strlen(r->route->path);
		if (plen > sizeof(name) - mlen - 1)
			plen = sizeof(name) - mlen - 1;
		name[nlen++] = ' ';
		memcpy(name + nlen, r->route->path, plen);
		nlen += plen;
	}
	if (!span_open(SPAN_SERVER, t->trace_id, t->span_id, t->parent_id,
	    t->start_ns, trace_now_ns(), name, nlen))
		return;
	span_str(SA_METHOD, r->head.method, r->head.method_len);
	span_str(SA_URL_PATH, r->head.path, r->head.path_len);
	span_str(SA_URL_SCHEME, req_tls(r) ? "https" : "http",
	    req_tls(r) ? 5 : 4);
	if (r->route != NULL)
		span_str(SA_ROUTE, r->route->path, strlen(r->route->path));
	span_int(SA_STATUS, r->status);
	span_str(SA_CLIENT, r->client, strlen(r->client));
	if (strncmp(proto, "HTTP/", 5) == 0)
		proto += 5;
	if (strcmp(proto, "1.1") == 0 && r->head.minor == 0)
		proto = "1.0";
	span_str(SA_PROTO_VERSION, proto, strlen(proto));
	if ((ua = req_header(r, "user-agent")) != NULL)
		span_str(SA_USER_AGENT, ua->value, ua->value_len);
	if (r->head.host != NULL)
		span_str(SA_SERVER_ADDRESS, r->head.host,
		    host_only(r->head.host, r->head.host_len));
	span_str(SA_REQUEST_ID, r->id, r->id_len);
	span_close(r->status >= 500 ? SPAN_ERROR : SPAN_UNSET);
}

void
trace_job(const struct req_trace *t, const char *kind, int status,
    const char *outcome, uint64_t start_ns)
{
	uint8_t id[8];
	char name[64];
	int n;

	if (!trace_recording(t))
		return;
	n = snprintf(name, sizeof(name), "offload %s", kind);
	trace_new_span_id(id);
	if (!span_open(SPAN_INTERNAL, t->trace_id, id, t->span_id, start_ns,
	    trace_now_ns(), name, n < 0 ? 0 : (size_t)n >= sizeof(name) ?
	    sizeof(name) - 1 : (size_t)n))
		return;
	span_str(SA_JOB_KIND, kind, strlen(kind));
	span_str(SA_JOB_OUTCOME, outcome, strlen(outcome));
	span_close(status == 0 ? SPAN_UNSET : SPAN_ERROR);
}
