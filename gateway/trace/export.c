/*
 * The span exporter: records queue up here (span.c appends them) and go
 * out in batches as OTLP/HTTP JSON, POSTed to tracing.otlp through the
 * worker's libcurl multi handle (curlev.c), so that a slow or dead
 * collector never holds the loop.
 *
 * Bounds: the queue holds at most QUEUE_SPANS spans and QUEUE_BYTES
 * bytes; a span beyond is dropped and counted, as is every span of an
 * export that fails (no retry: a collector that is down would only be
 * sent the same batch again while new spans pile up).  At most
 * EXPORTS_MAX exports are in flight, each cut after EXPORT_TIMEOUT_MS.
 * A batch leaves every EXPORT_MS, or as soon as BATCH_SPANS are queued.
 * The JSON is built here, at export time, so the request path only pays
 * for a few appends to the queue.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "gateway/metrics/metrics.h"
#include "gateway/trace/span.h"
#include "gateway/trace/trace.h"
#include "gateway/upstream/curlev.h"
#include "lib/buf.h"
#include "lib/log.h"

#define QUEUE_SPANS		8192
#define QUEUE_BYTES		(4 * 1024 * 1024)
#define BATCH_SPANS		512
#define EXPORT_MS		1000
#define EXPORTS_MAX		2
#define EXPORT_TIMEOUT_MS	5000
#define FINAL_TIMEOUT_MS	1000	/* the last flush at exit */

struct export {
	struct curl_job	 job;
	CURL		*easy;
	struct buf	 body;
	uint32_t	 nspans;
	bool		 busy;
};

static struct buf	 queue;
static uint32_t		 queued;	/* spans in queue */
static struct export	 exps[EXPORTS_MAX];
static struct curl_slist *ex_hdrs;
static struct event	 ex_timer;
static struct event	 ex_now;	/* a full batch is waiting */
static bool		 ex_ready;
static const char	*ex_url;
static struct buf	 ex_resource;	/* the JSON up to the spans */

struct buf *
export_queue(void)
{
	return &queue;
}

bool
export_room(size_t bytes)
{
	if (queued >= QUEUE_SPANS || buf_pending(&queue) + bytes >
	    QUEUE_BYTES) {
		export_dropped(1);
		return false;
	}
	return true;
}

void
export_dropped(uint64_t n)
{
	metrics_tracing(0, n, 0);
}

void
export_queued(void)
{
	queued++;
	/* From the loop, not here: this may be inside a libcurl callback,
	 * where no transfer may be added. */
	if (queued == BATCH_SPANS && ex_ready)
		event_active(&ex_now, EV_TIMEOUT, 0);
}

/* -- JSON ---------------------------------------------------------------- */

static void
json_id(struct buf *b, const char *key, const uint8_t *id, size_t n)
{
	char hex[32];

	trace_hex(hex, id, n);
	buf_append(b, ",\"", 2);
	buf_append(b, key, strlen(key));
	buf_append(b, "\":\"", 3);
	buf_append(b, hex, 2 * n);
	buf_append(b, "\"", 1);
}

/* A record's attributes, p[0..n), as OTLP KeyValues. */
static void
json_attrs(struct buf *b, const char *p, size_t n)
{
	size_t i = 0;
	bool first = true, is_int;
	uint16_t len;
	int64_t v;

	buf_append(b, ",\"attributes\":[", 15);
	while (i + 2 <= n && p[i] < SA_COUNT) {
		const char *key = span_attr_key((enum span_attr)p[i], &is_int);

		buf_appendf(b, "%s{\"key\":\"%s\",\"value\":{", first ? "" :
		    ",", key);
		first = false;
		if (p[i + 1] == 1 && i + 10 <= n) {
			memcpy(&v, p + i + 2, 8);
			buf_appendf(b, "\"intValue\":\"%" PRId64 "\"}}", v);
			i += 10;
		} else if (p[i + 1] == 0 && i + 4 <= n) {
			memcpy(&len, p + i + 2, 2);
			if (i + 4 + len > n)
				len = 0;
			buf_append(b, "\"stringValue\":\"", 15);
			buf_append_json(b, p + i + 4, len);
			buf_append(b, "\"}}", 3);
			i += 4 + (size_t)len;
		} else
			break;
	}
	buf_append(b, "]", 1);
}

/* One record as an OTLP Span. */
static void
json_span(struct buf *b, const char *p, const struct span_rec *h,
    bool first)
{
	static const uint8_t zero[8];
	uint16_t nlen;

	memcpy(&nlen, p + sizeof(*h), 2);
	buf_append(b, first ? "{" : ",{", first ? 1 : 2);
	buf_append(b, "\"name\":\"", 8);
	buf_append_json(b, p + sizeof(*h) + 2, nlen);
	buf_append(b, "\"", 1);
	json_id(b, "traceId", h->trace_id, 16);
	json_id(b, "spanId", h->span_id, 8);
	if (memcmp(h->parent_id, zero, 8) != 0)
		json_id(b, "parentSpanId", h->parent_id, 8);
	buf_appendf(b, ",\"kind\":%u,\"startTimeUnixNano\":\"%" PRIu64 "\","
	    "\"endTimeUnixNano\":\"%" PRIu64 "\"", h->kind, h->start_ns,
	    h->end_ns);
	json_attrs(b, p + sizeof(*h) + 2 + nlen,
	    h->len - sizeof(*h) - 2 - nlen);
	buf_appendf(b, ",\"status\":{\"code\":%u}}", h->status);
}

/* Up to BATCH_SPANS records off the queue into x->body. */
static void
export_build(struct export *x)
{
	struct span_rec h;
	const char *p;
	size_t left;

	buf_reset(&x->body);
	buf_append(&x->body, ex_resource.data, ex_resource.len);
	x->nspans = 0;
	while (x->nspans < BATCH_SPANS && queued > 0 &&
	    (left = buf_pending(&queue)) >= sizeof(h)) {
		p = buf_head(&queue);
		memcpy(&h, p, sizeof(h));
		if (h.len < sizeof(h) + 2 || h.len > left)
			break;		/* cannot be: span.c writes whole ones */
		json_span(&x->body, p, &h, x->nspans == 0);
		buf_consume(&queue, h.len);
		queued--;
		x->nspans++;
	}
	buf_append(&x->body, "]}]}]}", 6);
	if (queued == 0)
		buf_trim(&queue, 256 * 1024);
}

/* -- sending ------------------------------------------------------------- */

static size_t
export_discard(char *p, size_t size, size_t n, void *arg)
{
	return size * n;
}

static void
export_done(struct curl_job *job, CURLcode rc)
{
	struct export *x = (struct export *)(void *)job;
	long code = 0;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	curlev_remove(x->easy);
	x->busy = false;
	if (rc == CURLE_OK && code >= 200 && code < 300)
		metrics_tracing(x->nspans, 0, 0);
	else {
		static uint64_t last;
		uint64_t now = trace_now_ns() / 1000000000;

		metrics_tracing(0, x->nspans, 1);
		if (now != last)	/* at most one line a second */
			log_warnx("tracing: export to %s failed (%s): %u "
			    "span%s dropped", ex_url, rc != CURLE_OK ?
			    curl_easy_strerror(rc) : "bad status", x->nspans,
			    x->nspans == 1 ? "" : "s");
		last = now;
	}
	buf_trim(&x->body, 256 * 1024);
	if (queued >= BATCH_SPANS)
		event_active(&ex_now, EV_TIMEOUT, 0);
}

static CURL *
export_easy(struct export *x)
{
	CURL *e = curl_easy_init();

	if (e == NULL)
		return NULL;
	curl_easy_setopt(e, CURLOPT_URL, ex_url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, ex_hdrs);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)EXPORT_TIMEOUT_MS);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, export_discard);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	x->job.done = export_done;
	return e;
}

/* Sends what is queued, in as many batches as there are free slots. */
static void
export_flush(void)
{
	struct export *x;
	int i;

	for (i = 0; i < EXPORTS_MAX && queued > 0; i++) {
		x = &exps[i];
		if (x->busy)
			continue;
		if (x->easy == NULL && (x->easy = export_easy(x)) == NULL)
			return;
		export_build(x);
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body.data);
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)x->body.len);
		if (curlev_add(x->easy, &x->job) == -1) {
			metrics_tracing(0, x->nspans, 1);
			continue;
		}
		x->busy = true;
	}
}

static void
export_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	export_flush();
}

/* The JSON every batch starts with: the resource and the scope. */
static int
export_resource(const struct config *cfg)
{
	struct buf *b = &ex_resource;
	int rc = 0;
	static const char head[] = "{\"resourceSpans\":[{\"resource\":"
	    "{\"attributes\":[{\"key\":\"service.name\",\"value\":"
	    "{\"stringValue\":\"";
	const char *name = cfg->tracing_service_name != NULL ?
	    cfg->tracing_service_name : "agate";

	rc |= buf_append(b, head, sizeof(head) - 1);
	rc |= buf_append_json(b, name, strlen(name));
	rc |= buf_appendf(b, "\"}},{\"key\":\"service.version\",\"value\":"
	    "{\"stringValue\":\"%s\"}},{\"key\":\"telemetry.sdk.name\","
	    "\"value\":{\"stringValue\":\"agate\"}}]},\"scopeSpans\":[{"
	    "\"scope\":{\"name\":\"agate\",\"version\":\"%s\"},\"spans\":[",
	    PACKAGE_VERSION, PACKAGE_VERSION);
	return rc;
}

int
export_init(struct event_base *base, const struct config *cfg)
{
	struct timeval tv = { EXPORT_MS / 1000, (EXPORT_MS % 1000) * 1000 };
	struct curl_slist *l;

	ex_url = cfg->tracing_otlp;
	if (export_resource(cfg) == -1 ||
	    (l = curl_slist_append(NULL, "Content-Type: application/json")) ==
	    NULL)
		return -1;
	ex_hdrs = l;
	if ((l = curl_slist_append(ex_hdrs, "Expect:")) == NULL)
		return -1;
	ex_hdrs = l;
	event_assign(&ex_timer, base, -1, EV_PERSIST, export_timer_cb, NULL);
	event_assign(&ex_now, base, -1, 0, export_timer_cb, NULL);
	event_add(&ex_timer, &tv);
	ex_ready = true;
	return 0;
}

/*
 * The worker is exiting and its loop has stopped: what is queued gets
 * one blocking try of at most FINAL_TIMEOUT_MS (nothing else is served
 * any more), exports in flight are given up and counted.
 */
void
export_shutdown(void)
{
	struct export *x;
	int i;

	if (!ex_ready)
		return;
	for (i = 0; i < EXPORTS_MAX; i++) {
		x = &exps[i];
		if (x->busy) {
			curlev_remove(x->easy);
			metrics_tracing(0, x->nspans, 1);
			x->busy = false;
		}
	}
	x = &exps[0];
	if (queued > 0 && x->easy == NULL)
		x->easy = export_easy(x);
	while (queued > 0 && x->easy != NULL) {
		export_build(x);
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body.data);
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)x->body.len);
		curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS,
		    (long)FINAL_TIMEOUT_MS);
		if (curl_easy_perform(x->easy) == CURLE_OK)
			metrics_tracing(x->nspans, 0, 0);
		else {
			metrics_tracing(0, x->nspans + queued, 1);
			break;
		}
	}
	for (i = 0; i < EXPORTS_MAX; i++) {
		if (exps[i].easy != NULL)
			curl_easy_cleanup(exps[i].easy);
		buf_free(&exps[i].body);
		exps[i] = (struct export){ 0 };
	}
	event_del(&ex_timer);
	event_del(&ex_now);
	curl_slist_free_all(ex_hdrs);
	ex_hdrs = NULL;
	buf_free(&queue);
	buf_free(&ex_resource);
	queued = 0;
	ex_ready = false;
}
