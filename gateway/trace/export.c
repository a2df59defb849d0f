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
 * A batch (up to BATCH_SPANS spans, BATCH_BYTES of JSON) leaves every
 * EXPORT_MS, or as soon as BATCH_SPANS are queued.  Buffers keep their
 * storage between batches: with these caps a worker holds at most some
 * 12 MiB for tracing, whatever the collector does.
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
#include "worker/loopwatch.h"
#include "worker/timer.h"

#define QUEUE_SPANS		16384
#define QUEUE_BYTES		(4 * 1024 * 1024)
#define BATCH_SPANS		2048
#define BATCH_BYTES		(2 * 1024 * 1024)	/* of JSON, about */
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

/* -- JSON ----------------------------------------------------------------
 * Plain appends into a buffer reserved ahead, no printf: at 512 spans a
 * batch and a dozen values a span, formatting is most of an export's
 * cost on the loop.
 */

/* Each attribute's '{"key":"...","value":{"stringValue":"' (or
 * intValue), made once, in ATTR_OPEN_MAX bytes: copied whole (a fixed
 * size the compiler turns into two moves), then the length counted. */
#define ATTR_OPEN_MAX	64
static char		 attr_open[SA_COUNT][ATTR_OPEN_MAX];
static size_t		 attr_open_len[SA_COUNT];

/* Up to this many bytes a span may add beyond its strings (ids, times,
 * keys, quoting): buf_reserve() once per span. */
#define SPAN_JSON_SLACK	2048

static inline char *
put(char *o, const char *s, size_t n)
{
	memcpy(o, s, n);
	return o + n;
}

#define PUT(o, lit)	put((o), (lit), sizeof(lit) - 1)

/* Decimal, written from its last digit back, two digits at a time
 * (times are 19 digits long). */
static const char pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930"
    "31323334353637383940414243444546474849505152535455565758596061"
    "62636465666768697071727374757677787980818283848586878889909192"
    "93949596979899";

static char *
put_u64(char *o, uint64_t v)
{
	static const uint64_t pow10[20] = { 1ULL, 10ULL, 100ULL, 1000ULL,
	    10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
	    1000000000ULL, 10000000000ULL, 100000000000ULL,
	    1000000000000ULL, 10000000000000ULL, 100000000000000ULL,
	    1000000000000000ULL, 10000000000000000ULL,
	    100000000000000000ULL, 1000000000000000000ULL,
	    10000000000000000000ULL };
	size_t n = 20;
	char *t;

	/* Digits, counted from the top: a time takes two compares, the
	 * small numbers (kind, status) one or two here. */
	if (v < 1000)
		n = v < 10 ? 1 : v < 100 ? 2 : 3;
	while (n > 1 && v < pow10[n - 1])
		n--;
	t = o + n;
	while (v >= 100) {
		t -= 2;
		memcpy(t, pairs + 2 * (v % 100), 2);
		v /= 100;
	}
	if (v >= 10) {
		t -= 2;
		memcpy(t, pairs + 2 * v, 2);
	} else
		*--t = (char)('0' + v);
	return o + n;
}

/*
 * A time in ns: the seconds of a batch's spans are mostly the same, so
 * they are formatted once and copied; the nanoseconds are 9 digits.
 */
static char *
put_time(char *o, uint64_t v)
{
	static uint64_t last = UINT64_MAX;
	static char secs[20];
	static size_t nsecs;
	uint64_t sec = v / 1000000000, ns = v % 1000000000;
	int i;

	if (sec == 0)
		return put_u64(o, v);
	if (sec != last) {
		nsecs = (size_t)(put_u64(secs, sec) - secs);
		last = sec;
	}
	memcpy(o, secs, nsecs);
	o += nsecs;
	for (i = 7; i >= 1; i -= 2) {
		memcpy(o + i, pairs + 2 * (ns % 100), 2);
		ns /= 100;
	}
	o[0] = (char)('0' + ns);
	return o + 9;
}

static char *
put_hex(char *o, const uint8_t *id, size_t n)
{
	trace_hex(o, id, n);
	return o + 2 * n;
}

/* Bytes that go into a JSON string as they are. */
static uint8_t	json_plain[256];

static void
export_tables(void)
{
	int c;

	for (c = 0; c < 256; c++)
		json_plain[c] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

/* The length of a valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
	size_t k, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		k = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		k = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		k = 4;
	else
		return 0;
	if (k > n)
		return 0;
	for (i = 1; i < k; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return k;
}

/*
 * s[0..n) as JSON string contents; room for 6n bytes is the caller's.
 * Header values are bytes, not text: a byte that is not part of valid
 * UTF-8 becomes '?', or the collector would refuse the whole batch.
 */
static char *
put_json(char *o, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k;

	while (i < n) {
		unsigned char c = p[i];
		size_t run = i;

		/* Most values are plain ASCII: copy runs of it at once. */
		while (run < n && json_plain[p[run]])
			run++;
		if (run > i) {
			o = put(o, s + i, run - i);
			i = run;
			continue;
		}
		if (c == '"' || c == '\\') {
			*o++ = '\\';
			*o++ = (char)c;
			i++;
		} else if (c < 0x80) {
			o = PUT(o, "\\u00");
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
			i++;
		} else if ((k = utf8_len(p + i, n - i)) > 0) {
			o = put(o, s + i, k);
			i += k;
		} else {
			*o++ = '?';
			i++;
		}
	}
	return o;
}

static int
export_attr_keys(void)
{
	static const char s1[] = "{\"key\":\"", s2[] = "\",\"value\":{\"",
	    si[] = "intValue\":\"", ss[] = "stringValue\":\"";
	bool is_int;
	size_t i, n;
	char *o;

	for (i = 0; i < SA_COUNT; i++) {
		const char *key = span_attr_key((enum span_attr)i, &is_int);

		n = strlen(key) + sizeof(s1) + sizeof(s2) + sizeof(ss);
		if (n > ATTR_OPEN_MAX)
			return -1;	/* a key too long: a bug, seen at once */
		o = put(attr_open[i], s1, sizeof(s1) - 1);
		o = put(o, key, strlen(key));
		o = put(o, s2, sizeof(s2) - 1);
		o = is_int ? put(o, si, sizeof(si) - 1) :
		    put(o, ss, sizeof(ss) - 1);
		attr_open_len[i] = (size_t)(o - attr_open[i]);
	}
	return 0;
}

/* A record's attributes, p[0..n), as OTLP KeyValues, at o. */
static char *
put_attrs(char *o, const char *p, size_t n)
{
	size_t i = 0;
	uint16_t len;
	int64_t v;
	unsigned a;

	o = PUT(o, ",\"attributes\":[");
	while (i + 2 <= n && (a = (uint8_t)p[i]) < SA_COUNT) {
		if (i > 0)
			*o++ = ',';
		memcpy(o, attr_open[a], ATTR_OPEN_MAX);
		o += attr_open_len[a];
		if (p[i + 1] == 1 && i + 10 <= n) {
			memcpy(&v, p + i + 2, 8);
			if (v < 0) {
				*o++ = '-';
				o = put_u64(o, (uint64_t)0 - (uint64_t)v);
			} else
				o = put_u64(o, (uint64_t)v);
			i += 10;
		} else if (p[i + 1] == 0 && i + 4 <= n) {
			memcpy(&len, p + i + 2, 2);
			if (i + 4 + len > n)
				len = 0;
			o = put_json(o, p + i + 4, len);
			i += 4 + (size_t)len;
		} else
			break;
		o = PUT(o, "\"}}");
	}
	*o++ = ']';
	return o;
}

/* One record as an OTLP Span; false if there is no memory for it. */
static bool
json_span(struct buf *b, const char *p, const struct span_rec *h,
    bool first)
{
	static const uint8_t zero[8];
	uint16_t nlen;
	char *o;

	/* Strings at most 6x as JSON; the rest fits in the slack. */
	if (buf_reserve(b, 6 * (size_t)h->len + SPAN_JSON_SLACK) == -1)
		return false;
	o = b->data + b->len;
	memcpy(&nlen, p + sizeof(*h), 2);
	o = first ? PUT(o, "{\"name\":\"") : PUT(o, ",{\"name\":\"");
	o = put_json(o, p + sizeof(*h) + 2, nlen);
	o = PUT(o, "\",\"traceId\":\"");
	o = put_hex(o, h->trace_id, 16);
	o = PUT(o, "\",\"spanId\":\"");
	o = put_hex(o, h->span_id, 8);
	if (memcmp(h->parent_id, zero, 8) != 0) {
		o = PUT(o, "\",\"parentSpanId\":\"");
		o = put_hex(o, h->parent_id, 8);
	}
	o = PUT(o, "\",\"kind\":");
	o = put_u64(o, h->kind);
	o = PUT(o, ",\"startTimeUnixNano\":\"");
	o = put_time(o, h->start_ns);
	o = PUT(o, "\",\"endTimeUnixNano\":\"");
	o = put_time(o, h->end_ns);
	*o++ = '"';
	o = put_attrs(o, p + sizeof(*h) + 2 + nlen,
	    h->len - sizeof(*h) - 2 - nlen);
	/* Unset (0) is OTLP's default: said by leaving it out. */
	if (h->status != 0) {
		o = PUT(o, ",\"status\":{\"code\":");
		o = put_u64(o, h->status);
		*o++ = '}';
	}
	*o++ = '}';
	b->len = (size_t)(o - b->data);
	return true;
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
	while (x->nspans < BATCH_SPANS && x->body.len < BATCH_BYTES &&
	    queued > 0 &&
	    (left = buf_pending(&queue)) >= sizeof(h)) {
		p = buf_head(&queue);
		memcpy(&h, p, sizeof(h));
		if (h.len < sizeof(h) + 2 || h.len > left)
			break;		/* cannot be: span.c writes whole ones */
		if (!json_span(&x->body, p, &h, x->nspans == 0))
			break;
		buf_consume(&queue, h.len);
		queued--;
		x->nspans++;
	}
	buf_append(&x->body, "]}]}]}", 6);
	/* What is left goes to the front: the queue then cycles through the
	 * same few hundred KiB, which stay in the cache, instead of walking
	 * through all of its storage before it wraps. */
	if (queue.off > 0 && buf_pending(&queue) > 0) {
		memmove(queue.data, buf_head(&queue), buf_pending(&queue));
		queue.len = buf_pending(&queue);
		queue.off = 0;
	}
	/* Storage is kept (the queue is bounded): freeing and faulting in
	 * a few hundred KiB per batch cost more than the batch itself. */
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
	loopwatch_begin(LW_OTHER);	/* the batch's JSON is built here */
	export_flush();
	loopwatch_end();
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
	export_tables();
	if (export_attr_keys() == -1 || export_resource(cfg) == -1 ||
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
 * blocking POSTs for at most FINAL_TIMEOUT_MS in all (nothing else is
 * served any more), exports in flight are given up and counted.
 */
void
export_shutdown(void)
{
	struct export *x;
	int64_t deadline, left;
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
	deadline = (int64_t)now_ms() + FINAL_TIMEOUT_MS;
	while (queued > 0 && x->easy != NULL) {
		left = deadline - (int64_t)now_ms();
		export_build(x);
		/* Nothing taken (a record it cannot write), or no time
		 * left: what is still queued is dropped. */
		if (x->nspans == 0 || left <= 0) {
			metrics_tracing(0, x->nspans + queued, 0);
			break;
		}
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body.data);
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)x->body.len);
		curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)left);
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
