/*
 * The cache's content handler (CONFIG.md "Cache"; docs/cache.md): a
 * route with cache: answers GET and HEAD from the shared store
 * (store.c) when it can, and otherwise makes one upstream call per key
 * for every worker of the machine, whose answer it stores.
 *
 * A request's path through it:
 * - not cacheable (policy_request: a method other than GET/HEAD,
 *   no-store, a Range, a body, a key too long): proxied as it is
 *   (X-Cache: BYPASS);
 * - a fresh stored answer: served from a copy (HIT), or 304 for a
 *   conditional request whose validators match;
 * - a stale one within stale-while-revalidate: served (STALE), and the
 *   first such request of all workers starts a refresh in the
 *   background;
 * - none: the first request fills it (MISS), the others wait for that
 *   fill (store_wait_over(), polled every WAIT_POLL_MS, and at once when
 *   the fill is in this worker) up to lock_timeout, then are answered
 *   from the store, or, if the fill failed or was not storable, go to
 *   the upstream themselves.
 *
 * A fill is a call of its own (fill.c), which completes for the waiters
 * even if its client goes away.  Large stored bodies are sent from the
 * shared memory in place (cache_send_ref()).  The admin listener's purge
 * and the metrics are at the end.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "gateway/cache/cache.h"
#include "gateway/cache/fill.h"
#include "gateway/cache/policy.h"
#include "gateway/cache/store.h"
#include "gateway/gateway.h"
#include "gateway/upstream/call.h"
#include "lib/log.h"
#include "worker/loopwatch.h"
#include "worker/timer.h"
#include "worker/worker.h"

#define WAIT_POLL_MS	1

/* A request waiting for another's fill. */
struct waiter {
	struct request		*r;
	struct store_ticket	 t;
	uint64_t		 since;		/* monotonic ms */
	int64_t			 wall_since;	/* the same, wall clock */
	struct waiter		*next;
};

static struct waiter	*waiters;
static struct event	 poll_ev;
static bool		 poll_ready;
struct buf		 cache_copy;	/* a hit, copied out */

static void	cache_lookup(struct request *, int64_t waited_since);
static void	waiter_abort(struct request *);

static const struct req_hooks waiter_hooks = {
	.abort = waiter_abort,
};


/* -- small things ------------------------------------------------------ */

int64_t
cache_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* X-Cache on every answer of the route: the last word wins. */
void
cache_label(struct request *r, const char *what)
{
	char *p = r->resp_extra, *end = r->resp_extra + r->resp_extra_len;
	char *nl;
	size_t n;

	r->cache = what;
	/* An earlier word goes, the lines after it stay. */
	for (; p < end; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			break;
		if ((size_t)(end - p) > 9 && strncmp(p, "X-Cache: ", 9) == 0) {
			memmove(p, nl + 1, (size_t)(end - nl - 1));
			r->resp_extra_len -= (size_t)(nl + 1 - p);
			break;
		}
	}
	n = strlen(what);
	if (r->resp_extra_len + 9 + n + 2 > sizeof(r->resp_extra))
		return;				/* no room: none */
	p = r->resp_extra + r->resp_extra_len;
	memcpy(p, "X-Cache: ", 9);
	memcpy(p + 9, what, n);
	memcpy(p + 9 + n, "\r\n", 2);
	r->resp_extra_len += 9 + n + 2;
}

/* Not GET, HEAD, OPTIONS or TRACE (RFC 9110 9.2.1). */
static bool
is_unsafe(const struct request *r)
{
	static const char *const safe[] = { "GET", "HEAD", "OPTIONS",
	    "TRACE", NULL };
	size_t i;

	for (i = 0; safe[i] != NULL; i++)
		if (http_token_eq(r->head.method, r->head.method_len, safe[i]))
			return false;
	return true;
}

static bool
is_head(const struct request *r)
{
	return http_token_eq(r->head.method, r->head.method_len, "HEAD");
}

/* The key: path?query, a newline, the host (purges match the path):
 * Host for HTTP/1.1, :authority for HTTP/2, both in head.host. */
int
cache_key(const struct request *r, struct buf *k)
{
	int rc = 0;

	buf_reset(k);
	rc |= buf_append(k, r->head.path, r->head.path_len);
	if (r->head.query != NULL) {
		rc |= buf_append(k, "?", 1);
		rc |= buf_append(k, r->head.query, r->head.query_len);
	}
	rc |= buf_append(k, "\n", 1);
	if (r->head.host != NULL)
		rc |= buf_append(k, r->head.host, r->head.host_len);
	return rc;
}

static const char *
req_field(void *arg, const char *name, size_t nlen, size_t *vlen)
{
	const struct request *r = arg;
	const struct http_head *h = &r->head;
	size_t i;

	for (i = 0; i < h->nheaders; i++)
		if (h->headers[i].name_len == nlen &&
		    strncasecmp(h->headers[i].name, name, nlen) == 0) {
			*vlen = h->headers[i].value_len;
			return h->headers[i].value;
		}
	return NULL;
}

static void
store_req_of(struct store_req *q, const struct request *r,
    const struct buf *key, bool revalidate)
{
	q->key = key->data;
	q->key_len = key->len;
	q->header = req_field;
	q->header_arg = (void *)r;
	q->now_ms = cache_wall_ms();
	q->lock_timeout_ms = worker.cfg->cache_lock_timeout_ms;
	q->revalidate = revalidate;
}

/* -- answering from the store ------------------------------------------ */

/* A stored field's value, or NULL. */
const char *
cache_stored_field(const char *head, size_t len, const char *name, size_t *vlen)
{
	const char *v;

	if (headers_find_field(head, len, name, &v, vlen) == 0)
		return NULL;
	return v;
}

/* The request fields the cache reads, found in one pass. */
struct cache_fields {
	const struct http_header *cc, *pragma, *range, *inm, *ims;
};

static void
cache_fields(const struct request *r, struct cache_fields *f)
{
	const struct http_header *h = r->head.headers, *end;

	memset(f, 0, sizeof(*f));
	for (end = h + r->head.nheaders; h < end; h++) {
		const struct http_header **to = NULL;

		switch (h->name_len) {
		case 5:
			to = strncasecmp(h->name, "Range", 5) == 0 ?
			    &f->range : NULL;
			break;
		case 6:
			to = strncasecmp(h->name, "Pragma", 6) == 0 ?
			    &f->pragma : NULL;
			break;
		case 13:
			to = strncasecmp(h->name, "Cache-Control", 13) == 0 ?
			    &f->cc : strncasecmp(h->name, "If-None-Match",
			    13) == 0 ? &f->inm : NULL;
			break;
		case 17:
			to = strncasecmp(h->name, "If-Modified-Since", 17) ==
			    0 ? &f->ims : NULL;
			break;
		}
		if (to != NULL && *to == NULL)
			*to = h;
	}
}

/* Whether a conditional request is answered 304 by the stored head. */
static bool
cache_not_modified(const struct cache_fields *f, const char *head,
    size_t len)
{
	const struct http_header *inm = f->inm, *ims = f->ims;
	const char *etag, *lm, *date;
	size_t el = 0, ll = 0, dl = 0;

	if (inm == NULL && ims == NULL)
		return false;
	etag = cache_stored_field(head, len, "ETag", &el);
	lm = cache_stored_field(head, len, "Last-Modified", &ll);
	date = cache_stored_field(head, len, "Date", &dl);
	return policy_not_modified(inm ? inm->value : NULL,
	    inm ? inm->value_len : 0, ims ? ims->value : NULL,
	    ims ? ims->value_len : 0, etag, el, lm, ll, date, dl);
}

/* The fields a 304 keeps (RFC 9110 15.4.5). */
static void
cache_304_fields(const char *head, size_t len, struct buf *out)
{
	static const char *const keep[] = {
		"ETag", "Cache-Control", "Expires", "Vary", "Date",
		"Last-Modified", "Content-Location", NULL
	};
	const char *v;
	size_t vl, i;

	for (i = 0; keep[i] != NULL; i++)
		if ((v = cache_stored_field(head, len, keep[i], &vl)) != NULL) {
			buf_append(out, keep[i], strlen(keep[i]));
			buf_append(out, ": ", 2);
			buf_append(out, v, vl);
			buf_append(out, "\r\n", 2);
		}
}

/*
 * A large stored body, sent from where it is stored: straight to the
 * socket when it takes it, else copied into the output (one copy
 * either way, as few as a file cache's sendfile).  Should a fill or an
 * eviction have reused its blocks meanwhile, what was sent may be torn:
 * the connection is cut rather than the answer end as if whole.
 */
static void
cache_send_ref(struct request *r, const struct store_ref *ref)
{
	struct iovec iov[64];
	size_t from = 0, bytes;
	int n;

	while (from < ref->len) {
		if ((n = store_body_iov(ref, from, iov, 64, &bytes)) == 0)
			break;
		if (req_write_body_iov(r, iov, n) == -1)
			return;
		from += bytes;
	}
	if (from < ref->len || !store_ref_intact(ref)) {
		log_info("cache: a stored answer changed while it was sent; "
		    "the connection is cut");
		req_fail(r, "cache entry changed while sent");
		return;
	}
	req_end_response(r);
}

/* "Age: N\r\nX-Request-Id: ID\r\n", without printf. */
static void
cache_own_fields(struct buf *h, const struct request *r, uint64_t age_ms)
{
	char num[24];
	uint64_t v = age_ms / 1000;
	int i = (int)sizeof(num);

	do
		num[--i] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	buf_append(h, "Age: ", 5);
	buf_append(h, num + i, sizeof(num) - (size_t)i);
	buf_append(h, "\r\nX-Request-Id: ", 16);
	buf_append(h, r->id, r->id_len);
	buf_append(h, "\r\n", 2);
}

/* Answers r from a stored answer copied into `copy` (its body maybe
 * only referenced); f: r's fields, or NULL to look them up. */
void
cache_serve(struct request *r, const struct store_hit *hit,
    const char *label, const struct cache_fields *f)
{
	static struct buf h;
	const char *head = cache_copy.data, *body = cache_copy.data + hit->head_len;
	struct cache_fields mine;

	if (f == NULL) {
		cache_fields(r, &mine);
		f = &mine;
	}
	cache_label(r, label);
	buf_reset(&h);
	r->gw = NULL;
	r->hooks = NULL;
	if ((f->inm != NULL || f->ims != NULL) &&
	    cache_not_modified(f, head, hit->head_len)) {
		cache_304_fields(head, hit->head_len, &h);
		cache_own_fields(&h, r, hit->age_ms);
		if (req_start_response(r, 304, NULL, 0, h.data, h.len, -1) == 0)
			req_end_response(r);
		return;
	}
	buf_append(&h, head, hit->head_len);
	cache_own_fields(&h, r, hit->age_ms);
	if (req_start_response(r, hit->status, NULL, 0, h.data, h.len,
	    (int64_t)hit->body_len) == -1)
		return;
	if (hit->by_ref && !r->resp_nobody) {
		cache_send_ref(r, &hit->ref);
		return;
	}
	if (hit->body_len > 0 && !r->resp_nobody &&
	    req_write_body(r, body, hit->body_len) == -1)
		return;
	req_end_response(r);
}

/* Not cached: proxied as the route says. */
static void
cache_bypass(struct request *r)
{
	store_count(SC_BYPASS, 1);
	cache_label(r, "BYPASS");
	proxy_start(r);
}

void
cache_wake(void)
{
	if (waiters != NULL && poll_ready)
		event_active(&poll_ev, 0, 0);
}

/* -- waiting -------------------------------------------------------------- */

static void
waiter_unlink(struct waiter *w)
{
	struct waiter **pp;

	for (pp = &waiters; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	store_count(SC_WAITERS, -1);
}

static void
waiter_abort(struct request *r)
{
	struct waiter *w = r->gw;

	waiter_unlink(w);
	r->gw = NULL;
	r->hooks = NULL;
	free(w);
}

static void
poll_arm(void)
{
	struct timeval tv = { 0, WAIT_POLL_MS * 1000 };

	if (waiters != NULL && poll_ready && !evtimer_pending(&poll_ev, NULL))
		evtimer_add(&poll_ev, &tv);
}

static void
poll_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = now_ms(), lt = worker.cfg->cache_lock_timeout_ms;
	int64_t wall = cache_wall_ms();
	struct waiter *w, *next, *ready = NULL;
	int64_t ws;
	/* A herd waits on one lock: ask the store once per lock. */
	struct store_ticket last = { 0, 0 };
	bool last_over = false;

	(void)fd;
	(void)what;
	(void)arg;
	loopwatch_begin(LW_CACHE_WAIT);
	for (w = waiters; w != NULL; w = next) {
		next = w->next;
		if (w->t.entry != last.entry || w->t.seq != last.seq) {
			last = w->t;
			last_over = store_wait_over(&w->t, wall, lt);
		}
		if (now - w->since < lt && !last_over)
			continue;
		waiter_unlink(w);
		w->next = ready;
		ready = w;
	}
	while ((w = ready) != NULL) {
		struct request *r = w->r;
		bool timed_out = now - w->since >= lt;

		ready = w->next;
		ws = w->wall_since;
		free(w);
		r->gw = NULL;
		r->hooks = NULL;
		if (timed_out) {
			/* lock_timeout: to the upstream itself. */
			store_count(SC_MISS, 1);
			cache_label(r, "MISS");
			proxy_start(r);
		} else
			cache_lookup(r, ws);
	}
	poll_arm();
	loopwatch_end();
}

static void
waiter_add(struct request *r, const struct store_ticket *t, uint64_t since)
{
	struct waiter *w;

	if ((w = calloc(1, sizeof(*w))) == NULL) {
		cache_bypass(r);
		return;
	}
	w->r = r;
	w->t = *t;
	w->since = since;
	w->wall_since = cache_wall_ms();
	w->next = waiters;
	waiters = w;
	r->gw = w;
	r->hooks = &waiter_hooks;
	store_count(SC_WAITERS, 1);
	poll_arm();
}

/* -- the handler -------------------------------------------------------- */

/* waited_since: when r began to wait for a fill (wall ms), or 0. */
static void
cache_lookup(struct request *r, int64_t waited_since)
{
	bool waited = waited_since != 0;
	static struct buf key;
	struct store_ticket t;
	struct store_hit hit;
	struct store_req q;
	enum store_look rc;
	struct cache_fields fl;
	enum policy_req pr;

	cache_fields(r, &fl);
	pr = policy_request(r->head.method, r->head.method_len,
	    fl.cc ? fl.cc->value : NULL, fl.cc ? fl.cc->value_len : 0,
	    fl.pragma ? fl.pragma->value : NULL,
	    fl.pragma ? fl.pragma->value_len : 0);

	if (pr == PR_BYPASS || req_has_body(r) || fl.range != NULL ||
	    cache_key(r, &key) == -1 || key.len > STORE_KEY_MAX) {
		/* An unsafe method changes what the URI answers (RFC 9111
		 * 4.4): what is stored for it goes. */
		if (pr == PR_BYPASS && is_unsafe(r) && cache_key(r, &key) == 0 &&
		    key.len <= STORE_KEY_MAX)
			store_invalidate(key.data, key.len);
		cache_bypass(r);
		return;
	}
	store_req_of(&q, r, &key, pr == PR_REVALIDATE);
	q.body_by_ref = true;
	/* What the fill it waited for stored is its answer, fresh or not
	 * (an upstream slower than the ttl stores answers stale). */
	q.stored_since_ms = waited_since;
	rc = store_lookup(&q, &cache_copy, &hit, &t);
	switch (rc) {
	case SL_HIT:
		store_count(SC_HIT, 1);
		cache_serve(r, &hit, "HIT", &fl);
		return;
	case SL_STALE_REFRESH:
		fill_start(r, NULL, &t, NULL);
		/* FALLTHROUGH */
	case SL_STALE:
		store_count(SC_STALE, 1);
		cache_serve(r, &hit, "STALE", &fl);
		return;
	case SL_WAIT:
		waiter_add(r, &t, now_ms());
		return;
	case SL_FILL:
		if (waited || is_head(r)) {
			/* A fill failed, or HEAD (not filled): each goes to
			 * the upstream itself. */
			store_release(&t, 0);
			store_count(SC_MISS, 1);
			cache_label(r, "MISS");
			proxy_start(r);
			return;
		}
		store_count(SC_MISS, 1);
		cache_label(r, "MISS");
		fill_start(r, r, &t, hit.status != 0 ? &hit : NULL);
		return;
	case SL_NONE:
		break;
	}
	cache_bypass(r);
}

void
cache_start(struct request *r)
{
	if (!poll_ready) {
		evtimer_assign(&poll_ev, worker.base, poll_cb, NULL);
		poll_ready = true;
	}
	cache_lookup(r, 0);
}

void
cache_free(void)
{
	struct waiter *w;

	while ((w = waiters) != NULL) {
		waiters = w->next;
		free(w);
	}
	fill_cancel_all();
	if (poll_ready)
		evtimer_del(&poll_ev);
	poll_ready = false;
	buf_free(&cache_copy);
}

/* -- admin ------------------------------------------------------------- */

/* Decodes %XX in s[0..n) in place; the new length, or -1 if bad. */
static ssize_t
pct_decode(char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const char *hi, *lo;
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		if (s[i] != '%') {
			s[o++] = s[i];
			continue;
		}
		if (i + 2 >= n || s[i + 1] == '\0' || s[i + 2] == '\0' ||
		    (hi = strchr(hex, tolower((unsigned char)s[i + 1]))) ==
		    NULL || (lo = strchr(hex, tolower((unsigned char)s[i + 2])))
		    == NULL)
			return -1;
		s[o++] = (char)((hi - hex) << 4 | (lo - hex));
		i += 2;
	}
	return (ssize_t)o;
}

void
cache_purge(struct request *r)
{
	char prefix[STORE_KEY_MAX + 1], body[96];
	const char *q = r->head.query;
	size_t ql = r->head.query_len, n;
	ssize_t len;
	int bl;

	if (q == NULL || ql < 7 || memcmp(q, "prefix=", 7) != 0 ||
	    ql - 7 > STORE_KEY_MAX || memchr(q + 7, '&', ql - 7) != NULL) {
		req_error(r, 400, "DELETE /cache needs ?prefix=/path/ (one "
		    "path prefix)", NULL);
		return;
	}
	memcpy(prefix, q + 7, ql - 7);
	if ((len = pct_decode(prefix, ql - 7)) <= 0 || prefix[0] != '/') {
		req_error(r, 400, "prefix must be a path starting with /",
		    NULL);
		return;
	}
	n = store_purge(prefix, (size_t)len);
	log_info("cache: purged %zu entr%s under %.*s", n, n == 1 ? "y" : "ies",
	    (int)len, prefix);
	bl = snprintf(body, sizeof(body), "{\"purged\":%zu}\n", n);
	req_respond(r, 200, "application/json", body, (size_t)bl,
	    "Cache-Control: no-store\r\n");
}

void
cache_metrics(struct buf *b)
{
	struct store_stats st;

	if (store_size() == 0)
		return;
	store_stats(&st);
	buf_appendf(b,
	    "# HELP agate_cache_requests_total Requests on caching routes, "
	    "by X-Cache.\n"
	    "# TYPE agate_cache_requests_total counter\n"
	    "agate_cache_requests_total{result=\"hit\"} %llu\n"
	    "agate_cache_requests_total{result=\"miss\"} %llu\n"
	    "agate_cache_requests_total{result=\"stale\"} %llu\n"
	    "agate_cache_requests_total{result=\"bypass\"} %llu\n"
	    "# HELP agate_cache_stored_bytes Bytes the stored answers use.\n"
	    "# TYPE agate_cache_stored_bytes gauge\n"
	    "agate_cache_stored_bytes %llu\n"
	    "# HELP agate_cache_capacity_bytes Room for answers.\n"
	    "# TYPE agate_cache_capacity_bytes gauge\n"
	    "agate_cache_capacity_bytes %llu\n"
	    "# HELP agate_cache_entries Stored answers.\n"
	    "# TYPE agate_cache_entries gauge\n"
	    "agate_cache_entries %llu\n"
	    "# HELP agate_cache_evictions_total Answers dropped for room.\n"
	    "# TYPE agate_cache_evictions_total counter\n"
	    "agate_cache_evictions_total %llu\n"
	    "# HELP agate_cache_fills_failed_total Upstream fetches that "
	    "failed.\n"
	    "# TYPE agate_cache_fills_failed_total counter\n"
	    "agate_cache_fills_failed_total %llu\n"
	    "# HELP agate_cache_not_stored_total Answers not stored, by "
	    "why.\n"
	    "# TYPE agate_cache_not_stored_total counter\n"
	    "agate_cache_not_stored_total{reason=\"policy\"} %llu\n"
	    "agate_cache_not_stored_total{reason=\"too_big\"} %llu\n"
	    "agate_cache_not_stored_total{reason=\"vary\"} %llu\n"
	    "# HELP agate_cache_waiters Requests waiting for another's fill.\n"
	    "# TYPE agate_cache_waiters gauge\n"
	    "agate_cache_waiters %lld\n",
	    (unsigned long long)st.hits, (unsigned long long)st.misses,
	    (unsigned long long)st.stale, (unsigned long long)st.bypass,
	    (unsigned long long)st.stored_bytes,
	    (unsigned long long)st.capacity, (unsigned long long)st.entries,
	    (unsigned long long)st.evictions,
	    (unsigned long long)st.fills_failed,
	    (unsigned long long)st.not_stored_policy,
	    (unsigned long long)st.not_stored_too_big,
	    (unsigned long long)st.not_stored_vary, (long long)st.waiters);
}
