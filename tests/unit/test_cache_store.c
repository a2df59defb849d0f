/*
 * gateway/cache/store.c, the cache's shared memory, through its API only
 * (store.h):
 *
 *   body by reference      a large body read in place, any offset, any
 *                          number of pieces; replaced: still read whole
 *                          until its blocks are freed, then not intact
 *   fill, wait, hit        a miss takes the key's lock (SL_FILL), the next
 *                          one waits (SL_WAIT), the fill makes HITs whose
 *                          bytes and status are the stored ones
 *   freshness              lifetime, age (stored_at, initial_age), the
 *                          stale-while-revalidate window (one refresh),
 *                          stale-if-error after a failed fill, the stale
 *                          copy handed to a fill
 *   revalidate             no-cache fills even a fresh entry
 *   Vary                   the request's values select; too many names
 *   LRU and eviction       least recently used first, never a locked
 *                          entry, nothing over half the store, the stats
 *   purge                  by key prefix, the count
 *   dead and late locks    a lock whose owner died, lock_timeout
 *   processes              4 forked children hammering shared keys, then
 *                          the invariants; children SIGKILLed mid-work
 *
 * Not covered: a process dying while it holds the store's mutex
 * (EOWNERDEAD).  The mutex is private to store.c and an operation holds
 * it for microseconds, so it cannot be staged deterministically; the
 * SIGKILL test may land inside it by chance, and then only checks that
 * the store is consistent afterwards.
 *
 * store.c maps one segment per process, once (store_init() does not remap):
 * the group setup makes a 1 MiB store that every test reuses, each under
 * a key prefix of its own, starting from an empty store (purge "/").
 * Times are given to the store by its callers, so every test uses its own
 * clock from T; only the multi-process tests use the wall clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway/cache/store.h"
#include "lib/buf.h"
#include "lib/log.h"

#define MEMORY		(1024 * 1024)
#define T		1700000000000LL	/* a wall clock in ms */
#define LT		5000		/* lock_timeout_ms */

/* Learnt in the group setup: the store's block (stored_bytes counts
 * whole blocks) and how many there are. */
static uint64_t	blk, nblocks;
static struct buf out;

/* -- requests ---------------------------------------------------------- */

/* A request's header fields, for Vary. */
struct hdrs {
	int		 n;
	const char	*name[12];
	const char	*value[12];
};

static const char *
hdr_fn(void *arg, const char *name, size_t nlen, size_t *vlen)
{
	const struct hdrs *h = arg;
	int i;

	if (h == NULL)
		return NULL;
	for (i = 0; i < h->n; i++)
		if (strlen(h->name[i]) == nlen &&
		    strncasecmp(h->name[i], name, nlen) == 0) {
			*vlen = strlen(h->value[i]);
			return h->value[i];
		}
	return NULL;
}

static struct store_req
req(const char *key, int64_t now, const struct hdrs *h)
{
	struct store_req q = {
		.key = key, .key_len = strlen(key), .header = hdr_fn,
		.header_arg = (void *)h, .now_ms = now, .lock_timeout_ms = LT,
	};

	return q;
}

static struct store_put
put(int status, const char *head, const char *body, size_t blen,
    int64_t at, uint64_t lifetime)
{
	struct store_put p = {
		.status = status, .head = head, .head_len = strlen(head),
		.body = body, .body_len = blen, .stored_at_ms = at,
		.lifetime_ms = lifetime,
	};

	return p;
}

/*
 * Every lock the test process takes is noted, and let go after each test
 * (store_release() of a lock no longer held does nothing): a test that
 * fails half-way leaves none behind to skew the next ones.
 */
static struct store_ticket	held[4096];
static size_t			nheld;

static enum store_look
lookq(const struct store_req *q, struct store_hit *hit,
    struct store_ticket *t)
{
	enum store_look rc;

	memset(hit, 0x5a, sizeof(*hit));	/* nothing left from before */
	rc = store_lookup(q, &out, hit, t);
	if ((rc == SL_FILL || rc == SL_STALE_REFRESH) &&
	    nheld < sizeof(held) / sizeof(held[0]))
		held[nheld++] = *t;
	return rc;
}

static enum store_look
look(const char *key, int64_t now, const struct hdrs *h,
    struct store_hit *hit, struct store_ticket *t)
{
	struct store_req q = req(key, now, h);

	return lookq(&q, hit, t);
}

/* Asserts a lookup's result, with its key in the message. */
#define LOOK(want, key, now, h, hit, t) do {				\
	enum store_look rc_ = look((key), (now), (h), (hit), (t));	\
	if (rc_ != (want))						\
		fail_msg("lookup %s at T%+" PRId64 ": %s, not %s",	\
		    (key), (int64_t)(now) - T, look_name(rc_),		\
		    look_name(want));					\
} while (0)

static const char *
look_name(enum store_look rc)
{
	switch (rc) {
	case SL_HIT:		return "HIT";
	case SL_STALE:		return "STALE";
	case SL_STALE_REFRESH:	return "STALE_REFRESH";
	case SL_FILL:		return "FILL";
	case SL_WAIT:		return "WAIT";
	case SL_NONE:		return "NONE";
	}
	return "?";
}

/* The copy in `out` is head then body. */
static void
assert_copy(const struct store_hit *hit, int status, const char *head,
    const char *body, size_t blen)
{
	assert_int_equal(hit->status, status);
	assert_int_equal(hit->head_len, strlen(head));
	assert_int_equal(hit->body_len, blen);
	assert_int_equal(out.len - out.off, strlen(head) + blen);
	assert_memory_equal(out.data + out.off, head, strlen(head));
	if (blen > 0)
		assert_memory_equal(out.data + out.off + strlen(head), body,
		    blen);
}

/* Takes the key's lock and stores body under it. */
static void
fill_full(const char *key, const struct hdrs *h, const struct store_put *p)
{
	struct store_req q = req(key, p->stored_at_ms, h);
	struct store_hit hit;
	struct store_ticket t;

	LOOK(SL_FILL, key, p->stored_at_ms, h, &hit, &t);
	assert_int_equal(store_fill(&q, &t, p), 0);
}

static void
fill_simple(const char *key, int64_t at, uint64_t lifetime, size_t blen)
{
	static char body[64 * 1024];
	struct store_put p;

	memset(body, 'b', blen);
	p = put(200, "", body, blen, at, lifetime);
	fill_full(key, NULL, &p);
}

/* Whether the key has an answer now: a missing one is looked up (its lock
 * taken) and let go again. */
static bool
present(const char *key, int64_t now)
{
	struct store_hit hit;
	struct store_ticket t;
	enum store_look rc = look(key, now, NULL, &hit, &t);

	if (rc == SL_FILL || rc == SL_STALE_REFRESH)
		store_release(&t, 0);
	return rc == SL_HIT || rc == SL_STALE || rc == SL_STALE_REFRESH;
}

static struct store_stats
stats(void)
{
	struct store_stats st;

	store_stats(&st);
	return st;
}

static int
group_setup(void **state)
{
	struct store_stats st;
	size_t size;

	(void)state;
	if (store_init(MEMORY) != 0 || (size = store_size()) == 0)
		return -1;
	/* Made once: a second call keeps the segment. */
	if (store_init(4 * MEMORY) != 0 || store_size() != size)
		return -1;
	store_stats(&st);
	if (st.capacity == 0 || st.capacity > MEMORY || st.entries != 0 ||
	    st.stored_bytes != 0)
		return -1;
	fill_simple("/setup\nh", T, 1000, 1);
	store_stats(&st);
	blk = st.stored_bytes;
	if (st.entries != 1 || blk == 0 || st.capacity % blk != 0 ||
	    store_purge("/", 1) != 1)
		return -1;
	nblocks = st.capacity / blk;
	return nblocks >= 64 ? 0 : -1;
}

static int
group_teardown(void **state)
{
	(void)state;
	buf_free(&out);
	return 0;
}

/* Every test starts from an empty store. */
static int
empty(void **state)
{
	struct store_stats st;

	(void)state;
	while (nheld > 0)
		store_release(&held[--nheld], 0);
	store_purge("/", 1);
	store_stats(&st);
	return st.entries == 0 && st.stored_bytes == 0 ? 0 : -1;
}

/* -- fill, wait, hit --------------------------------------------------- */

static void
test_fill_wait_hit(void **state)
{
	static const char key[] = "/f/a?x=1\nexample.com";
	static const char head[] = "Content-Type: text/plain\r\n"
	    "ETag: \"v1\"\r\n";
	static const char body[] = "hello\0world\r\n\xff";
	struct store_req q = req(key, T, NULL);
	struct store_put p = put(203, head, body, sizeof(body), T, 60000);
	struct store_hit hit;
	struct store_ticket t, w;
	struct store_stats st;

	(void)state;
	LOOK(SL_FILL, key, T, NULL, &hit, &t);
	assert_int_not_equal(t.entry, 0);
	assert_int_equal(hit.status, 0);	/* nothing stale to hand out */
	/* The same key waits on that lock, the same ticket. */
	LOOK(SL_WAIT, key, T + 1, NULL, &hit, &w);
	assert_int_equal(w.entry, t.entry);
	assert_int_equal(w.seq, t.seq);
	assert_false(store_wait_over(&w, T + 1, LT));
	/* Another host is another key. */
	assert_false(present("/f/a?x=1\nexample.org", T + 1));
	assert_false(present("/f/a?x=2\nexample.com", T + 1));
	LOOK(SL_WAIT, key, T + 2, NULL, &hit, &w);

	assert_int_equal(store_fill(&q, &t, &p), 0);
	assert_true(store_wait_over(&w, T + 3, LT));
	LOOK(SL_HIT, key, T + 1500, NULL, &hit, &w);
	assert_copy(&hit, 203, head, body, sizeof(body));
	assert_false(hit.stale);
	assert_int_equal(hit.age_ms, 1500);
	/* Copied out whole: the copy is the caller's. */
	LOOK(SL_HIT, key, T + 1600, NULL, &hit, &w);
	assert_copy(&hit, 203, head, body, sizeof(body));
	st = stats();
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.stored_bytes, blk);
}

static void
test_sizes(void **state)
{
	static char body[5 * 2048 + 7], head[3000], key[64];
	static const size_t blens[] = { 0, 1, 2047, 2048, 2049, 4096,
	    sizeof(body) };
	struct store_hit hit;
	struct store_ticket t;
	struct store_put p;
	size_t i, j, hl;
	uint64_t want_bytes = 0;

	(void)state;
	for (i = 0; i < sizeof(body); i++)
		body[i] = (char)(i * 7 + i / 251);
	for (i = 0; i < sizeof(blens) / sizeof(blens[0]); i++) {
		/* Heads of several sizes too, crossing blocks. */
		hl = (i * 977) % sizeof(head);
		for (j = 0; j < hl; j++)
			head[j] = (char)('a' + (i + j) % 26);
		head[hl] = '\0';
		snprintf(key, sizeof(key), "/s/%zu\nh", i);
		p = put(200 + (int)i, head, body + i, blens[i] - (i > 0 &&
		    blens[i] == sizeof(body) ? i : 0), T, 60000);
		fill_full(key, NULL, &p);
		want_bytes += (strlen(key) + hl + p.body_len + blk - 1) / blk
		    * blk;
	}
	for (i = 0; i < sizeof(blens) / sizeof(blens[0]); i++) {
		hl = (i * 977) % sizeof(head);
		for (j = 0; j < hl; j++)
			head[j] = (char)('a' + (i + j) % 26);
		head[hl] = '\0';
		snprintf(key, sizeof(key), "/s/%zu\nh", i);
		LOOK(SL_HIT, key, T + 1, NULL, &hit, &t);
		assert_copy(&hit, 200 + (int)i, head, body + i, blens[i] -
		    (i > 0 && blens[i] == sizeof(body) ? i : 0));
	}
	assert_int_equal(stats().entries, sizeof(blens) / sizeof(blens[0]));
	assert_int_equal(stats().stored_bytes, want_bytes);
}

/*
 * A large body asked for by reference (store_req.body_by_ref): its head
 * is copied out, its body read in place with store_body_iov() from any
 * offset and in any number of pieces, byte for byte the stored one; once
 * the key's answer is replaced, the old reference says it is no longer
 * intact.
 */
static void
test_body_by_ref(void **state)
{
	static const char key[] = "/r/big\nh";
	static const char head[] = "Content-Type: application/octet-stream\r\n";
	static char body[STORE_REF_MIN * 2 + 777], got[sizeof(body)];
	static const size_t froms[] = { 0, 1, 2047, 2048, 5000,
	    sizeof(body) - 1 };
	struct store_req q = req(key, T + 1, NULL);
	struct store_hit hit;
	struct store_ticket t;
	struct store_put p;
	struct iovec iov[3];
	size_t i, from, at, bytes, k;
	int n, j;

	(void)state;
	for (i = 0; i < sizeof(body); i++)
		body[i] = (char)(i * 13 + i / 509);
	p = put(200, head, body, sizeof(body), T, 60000);
	fill_full(key, NULL, &p);
	q.body_by_ref = true;
	buf_reset(&out);
	assert_int_equal(store_lookup(&q, &out, &hit, &t), SL_HIT);
	assert_true(hit.by_ref);
	assert_int_equal(hit.head_len, strlen(head));
	assert_int_equal(hit.body_len, sizeof(body));
	assert_int_equal(hit.ref.len, sizeof(body));
	assert_memory_equal(out.data + out.off, head, strlen(head));
	for (i = 0; i < sizeof(froms) / sizeof(froms[0]); i++) {
		/* Three iovecs at a time: the caller's loop, as cache.c's. */
		for (from = at = froms[i]; at < sizeof(body); at += bytes) {
			n = store_body_iov(&hit.ref, at, iov, 3, &bytes);
			assert_in_range(n, 1, 3);
			for (j = 0, k = 0; j < n; j++) {
				assert_true(iov[j].iov_len > 0);
				memcpy(got + at + k, iov[j].iov_base,
				    iov[j].iov_len);
				k += iov[j].iov_len;
			}
			assert_int_equal(k, bytes);
		}
		assert_int_equal(at, sizeof(body));
		assert_int_equal(store_body_iov(&hit.ref, at, iov, 3,
		    &bytes), 0);
		assert_memory_equal(got + from, body + from,
		    sizeof(body) - from);
	}
	assert_true(store_ref_intact(&hit.ref));
	/* A small body is copied whatever the request asks. */
	fill_simple("/r/small\nh", T, 60000, 100);
	buf_reset(&out);
	q = req("/r/small\nh", T + 1, NULL);
	q.body_by_ref = true;
	assert_int_equal(store_lookup(&q, &out, &hit, &t), SL_HIT);
	assert_false(hit.by_ref);
	/* Replaced: a reader of the old answer still reads it whole (its
	 * blocks are retired, not reused, for a while); once they are
	 * freed, the reference says so. */
	q = req(key, T + 2, NULL);
	q.body_by_ref = true;
	buf_reset(&out);
	assert_int_equal(store_lookup(&q, &out, &hit, &t), SL_HIT);
	q.revalidate = true;
	assert_int_equal(store_lookup(&q, &out, &(struct store_hit){0}, &t),
	    SL_FILL);
	memset(got, 'x', sizeof(got));
	p = put(200, head, got, sizeof(got), T + 3, 60000);
	assert_int_equal(store_fill(&q, &t, &p), 0);
	for (at = 0; at < sizeof(body); at += bytes) {
		n = store_body_iov(&hit.ref, at, iov, 3, &bytes);
		assert_in_range(n, 1, 3);
		for (j = 0, k = 0; j < n; k += iov[j].iov_len, j++)
			assert_memory_equal(iov[j].iov_base, body + at + k,
			    iov[j].iov_len);
	}
	assert_true(store_ref_intact(&hit.ref));
	usleep(300 * 1000);		/* past the retired chains' time */
	fill_simple("/r/next\nh", T + 4, 60000, 100);	/* reclaims */
	assert_false(store_ref_intact(&hit.ref));
}

/* A second fill of the key replaces its answer. */
static void
test_replace(void **state)
{
	static const char key[] = "/r\nh";
	struct store_put p1 = put(200, "A: 1\r\n", "one", 3, T, 1000);
	struct store_put p2 = put(404, "B: 2\r\n", "two!", 4, T + 2000, 1000);
	struct store_hit hit;
	struct store_ticket t;

	(void)state;
	fill_full(key, NULL, &p1);
	LOOK(SL_HIT, key, T + 10, NULL, &hit, &t);
	assert_copy(&hit, 200, "A: 1\r\n", "one", 3);
	fill_full(key, NULL, &p2);		/* T + 2000: stale, a FILL */
	LOOK(SL_HIT, key, T + 2010, NULL, &hit, &t);
	assert_copy(&hit, 404, "B: 2\r\n", "two!", 4);
	assert_int_equal(stats().entries, 1);
}

/* -- freshness ----------------------------------------------------------- */

static void
test_freshness(void **state)
{
	static const char key[] = "/fr\nh";
	struct store_put p = put(200, "X: y\r\n", "body", 4, T, 10000);
	struct store_hit hit;
	struct store_ticket t, t2;
	struct store_stats st0 = stats();

	(void)state;
	p.initial_age_ms = 2000;	/* 2 s old when it came */
	p.swr_ms = 5000;		/* stale until age 15 s: refreshed */
	p.sie_ms = 20000;		/* until age 30 s after an error */
	fill_full(key, NULL, &p);

	LOOK(SL_HIT, key, T, NULL, &hit, &t);
	assert_int_equal(hit.age_ms, 2000);
	LOOK(SL_HIT, key, T + 7999, NULL, &hit, &t);
	assert_int_equal(hit.age_ms, 9999);
	assert_false(hit.stale);

	/* Age 10 s: stale; the first refreshes it, holding the lock. */
	LOOK(SL_STALE_REFRESH, key, T + 8000, NULL, &hit, &t);
	assert_true(hit.stale);
	assert_int_equal(hit.age_ms, 10000);
	assert_copy(&hit, 200, "X: y\r\n", "body", 4);
	assert_int_not_equal(t.entry, 0);
	/* The next ones are served stale without a refresh of their own. */
	LOOK(SL_STALE, key, T + 8001, NULL, &hit, &t2);
	assert_true(hit.stale);
	assert_copy(&hit, 200, "X: y\r\n", "body", 4);
	LOOK(SL_STALE, key, T + 12999, NULL, &hit, &t2);
	assert_false(store_wait_over(&t, T + 9000, LT));

	/* The refresh failed. */
	store_release(&t, T + 9000);
	assert_true(store_wait_over(&t, T + 9000, LT));
	assert_int_equal(stats().fills_failed, st0.fills_failed + 1);
	/* Still within stale-while-revalidate: another refresh. */
	LOOK(SL_STALE_REFRESH, key, T + 9500, NULL, &hit, &t);
	store_release(&t, 0);
	LOOK(SL_STALE_REFRESH, key, T + 12999, NULL, &hit, &t);
	assert_int_equal(hit.age_ms, 14999);
	store_release(&t, 0);

	/* Age 15 s: past swr, no recent failure: a fill, handed the stale
	 * copy for stale-if-error. */
	LOOK(SL_FILL, key, T + 13000, NULL, &hit, &t);
	assert_true(hit.stale);
	assert_int_equal(hit.age_ms, 15000);
	assert_copy(&hit, 200, "X: y\r\n", "body", 4);
	/* Others wait for that fill. */
	LOOK(SL_WAIT, key, T + 13001, NULL, &hit, &t2);
	assert_int_equal(t2.seq, t.seq);
	/* It fails: stale-if-error for a second, without a lock. */
	store_release(&t, T + 13100);
	assert_true(store_wait_over(&t2, T + 13100, LT));
	LOOK(SL_STALE, key, T + 13200, NULL, &hit, &t2);
	assert_true(hit.stale);
	assert_copy(&hit, 200, "X: y\r\n", "body", 4);
	LOOK(SL_STALE, key, T + 13300, NULL, &hit, &t2);
	LOOK(SL_STALE, key, T + 14099, NULL, &hit, &t2);
	/* A second later, a fill again, still handed the copy. */
	LOOK(SL_FILL, key, T + 14100, NULL, &hit, &t);
	assert_int_equal(hit.status, 200);
	store_release(&t, 0);
	LOOK(SL_FILL, key, T + 19999, NULL, &hit, &t);	/* age 21999 */
	assert_int_equal(hit.status, 200);
	store_release(&t, 0);
	/* Age 30 s: past every window, nothing to hand out. */
	LOOK(SL_FILL, key, T + 28000, NULL, &hit, &t);
	assert_int_equal(hit.status, 0);
	store_release(&t, T + 28000);
	LOOK(SL_FILL, key, T + 28001, NULL, &hit, &t);	/* no STALE now */
	assert_int_equal(hit.status, 0);
	store_release(&t, 0);
	/* A failed fill kept the answer (for stale-if-error) all along. */
	assert_int_equal(stats().entries, 1);
}

static void
test_freshness_edges(void **state)
{
	struct store_put p = put(200, "", "b", 1, T, 1000);
	struct store_hit hit;
	struct store_ticket t, t2;

	(void)state;
	/* No windows: stale is a fill, the others wait for it. */
	fill_full("/fe/a\nh", NULL, &p);
	LOOK(SL_HIT, "/fe/a\nh", T + 999, NULL, &hit, &t);
	LOOK(SL_FILL, "/fe/a\nh", T + 1000, NULL, &hit, &t);
	assert_int_equal(hit.status, 0);
	LOOK(SL_WAIT, "/fe/a\nh", T + 1001, NULL, &hit, &t2);
	/* A failed fill without stale-if-error serves nothing stale. */
	store_release(&t, T + 1002);
	LOOK(SL_FILL, "/fe/a\nh", T + 1003, NULL, &hit, &t);
	assert_int_equal(hit.status, 0);
	store_release(&t, 0);

	/* As old as its lifetime when it came: never fresh. */
	p.stored_at_ms = T + 5000;
	p.initial_age_ms = 1000;
	fill_full("/fe/b\nh", NULL, &p);
	LOOK(SL_FILL, "/fe/b\nh", T + 5000, NULL, &hit, &t);
	store_release(&t, 0);

	/* Stored "later" than now (another worker's clock): age is its
	 * initial age, not negative. */
	p.stored_at_ms = T + 10000;
	p.initial_age_ms = 300;
	fill_full("/fe/c\nh", NULL, &p);
	LOOK(SL_HIT, "/fe/c\nh", T + 9000, NULL, &hit, &t);
	assert_int_equal(hit.age_ms, 300);

	/* stale-if-error longer than swr, and a failure within swr. */
	p = put(200, "", "c", 1, T + 20000, 1000);
	p.swr_ms = 1000;
	p.sie_ms = 5000;
	fill_full("/fe/d\nh", NULL, &p);
	LOOK(SL_STALE_REFRESH, "/fe/d\nh", T + 21500, NULL, &hit, &t);
	store_release(&t, T + 21600);
	/* Past swr, within sie, failed 500 ms ago: STALE, no lock. */
	LOOK(SL_STALE, "/fe/d\nh", T + 22100, NULL, &hit, &t);
	assert_copy(&hit, 200, "", "c", 1);
	LOOK(SL_STALE, "/fe/d\nh", T + 22101, NULL, &hit, &t);
}

/* -- revalidate ------------------------------------------------------------ */

static void
test_revalidate(void **state)
{
	static const char key[] = "/rv\nh";
	struct store_put p = put(200, "", "old", 3, T, 60000);
	struct store_req q;
	struct store_hit hit;
	struct store_ticket t, t2;

	(void)state;
	p.swr_ms = 60000;
	fill_full(key, NULL, &p);
	q = req(key, T + 10, NULL);
	q.revalidate = true;
	assert_int_equal(lookq(&q, &hit, &t), SL_FILL);
	/* Meanwhile the fresh copy still serves the others. */
	LOOK(SL_HIT, key, T + 11, NULL, &hit, &t2);
	assert_copy(&hit, 200, "", "old", 3);
	/* Another no-cache request waits for that fill. */
	q.now_ms = T + 12;
	assert_int_equal(lookq(&q, &hit, &t2), SL_WAIT);
	assert_int_equal(t2.seq, t.seq);
	p = put(200, "", "new!", 4, T + 20, 60000);
	p.swr_ms = 60000;
	q.now_ms = T + 20;
	assert_int_equal(store_fill(&q, &t, &p), 0);
	LOOK(SL_HIT, key, T + 30, NULL, &hit, &t2);
	assert_copy(&hit, 200, "", "new!", 4);

	/* Stale within swr: no-cache does not take a STALE answer. */
	q.now_ms = T + 70000;
	assert_int_equal(lookq(&q, &hit, &t), SL_FILL);
	LOOK(SL_STALE, key, T + 70001, NULL, &hit, &t2);
	store_release(&t, 0);
}

/* -- Vary ------------------------------------------------------------------ */

static void
test_vary(void **state)
{
	static const char key[] = "/v\nh";
	struct hdrs gzip = { 1, { "Accept-Encoding" }, { "gzip" } };
	struct hdrs gzip_uc = { 1, { "ACCEPT-ENCODING" }, { "gzip" } };
	struct hdrs br = { 1, { "Accept-Encoding" }, { "br" } };
	struct hdrs gzip2 = { 1, { "Accept-Encoding" }, { "gzip, br" } };
	struct hdrs none = { 0 };
	struct store_put p = put(200, "Vary: Accept-Encoding\r\n", "zipped",
	    6, T, 60000);
	struct store_req q;
	struct store_hit hit;
	struct store_ticket t;

	(void)state;
	p.vary = "Accept-Encoding";
	p.vary_len = strlen(p.vary);
	fill_full(key, &gzip, &p);
	LOOK(SL_HIT, key, T + 1, &gzip, &hit, &t);
	assert_copy(&hit, 200, "Vary: Accept-Encoding\r\n", "zipped", 6);
	LOOK(SL_HIT, key, T + 1, &gzip_uc, &hit, &t);
	/* Another value, or none: not this answer. */
	LOOK(SL_FILL, key, T + 2, &br, &hit, &t);
	assert_int_equal(hit.status, 0);
	store_release(&t, 0);
	LOOK(SL_FILL, key, T + 2, &gzip2, &hit, &t);
	store_release(&t, 0);
	LOOK(SL_FILL, key, T + 2, &none, &hit, &t);
	store_release(&t, 0);
	LOOK(SL_FILL, key, T + 2, NULL, &hit, &t);
	store_release(&t, 0);
	/* Let go without storing: the gzip answer is still there. */
	LOOK(SL_HIT, key, T + 3, &gzip, &hit, &t);

	/* Made for a request without the field: only those match. */
	p.body = "plain";
	p.body_len = 5;
	fill_full("/v/none\nh", &none, &p);
	LOOK(SL_HIT, "/v/none\nh", T + 1, &none, &hit, &t);
	assert_copy(&hit, 200, "Vary: Accept-Encoding\r\n", "plain", 5);
	LOOK(SL_FILL, "/v/none\nh", T + 1, &gzip, &hit, &t);
	store_release(&t, 0);

	/* Two names: both must match; the order of the request's fields
	 * does not matter. */
	{
		struct hdrs a = { 2, { "Accept-Language", "Accept-Encoding" },
		    { "fr", "gzip" } };
		struct hdrs b = { 2, { "Accept-Encoding", "Accept-Language" },
		    { "gzip", "fr" } };
		struct hdrs c = { 2, { "Accept-Encoding", "Accept-Language" },
		    { "gzip", "de" } };

		p.vary = "accept-encoding , Accept-Language";
		p.vary_len = strlen(p.vary);
		fill_full("/v/two\nh", &a, &p);
		LOOK(SL_HIT, "/v/two\nh", T + 1, &b, &hit, &t);
		LOOK(SL_FILL, "/v/two\nh", T + 1, &c, &hit, &t);
		store_release(&t, 0);
		LOOK(SL_FILL, "/v/two\nh", T + 1, &gzip, &hit, &t);
		store_release(&t, 0);
	}

	/* Vary of another value replaces the entry (one answer a key). */
	q = req(key, T + 5, &br);
	assert_int_equal(lookq(&q, &hit, &t), SL_FILL);
	p = put(200, "", "brotli", 6, T + 5, 60000);
	p.vary = "Accept-Encoding";
	p.vary_len = strlen(p.vary);
	assert_int_equal(store_fill(&q, &t, &p), 0);
	LOOK(SL_HIT, key, T + 6, &br, &hit, &t);
	assert_copy(&hit, 200, "", "brotli", 6);
}

static void
test_vary_too_many(void **state)
{
	static const char key[] = "/vm\nh";
	struct hdrs h = { 9, { "a", "b", "c", "d", "e", "f", "g", "h", "i" },
	    { "1", "2", "3", "4", "5", "6", "7", "8", "9" } };
	struct hdrs h2 = { 9, { "a", "b", "c", "d", "e", "f", "g", "h", "i" },
	    { "1", "2", "3", "4", "5", "6", "7", "8", "x" } };
	struct hdrs h3 = { 9, { "a", "b", "c", "d", "e", "f", "g", "h", "i" },
	    { "1", "2", "3", "4", "5", "6", "7", "x", "9" } };
	struct store_put p = put(200, "", "v", 1, T, 60000);
	struct store_req q = req(key, T, &h);
	struct store_hit hit;
	struct store_ticket t, w;
	char big[STORE_KEY_MAX + 100];
	struct hdrs hb = { 1, { "x-big" }, { big } };

	(void)state;
	assert_int_equal(STORE_VARY_MAX, 8);
	p.vary = "a, b, c, d, e, f, g, h, i";	/* 9 names */
	p.vary_len = strlen(p.vary);
	LOOK(SL_FILL, key, T, &h, &hit, &t);
	LOOK(SL_WAIT, key, T, &h, &hit, &w);
	assert_int_equal(store_fill(&q, &t, &p), -1);
	/* Let go: the waiter is done, the next one fills. */
	assert_true(store_wait_over(&w, T + 1, LT));
	LOOK(SL_FILL, key, T + 1, &h, &hit, &t);
	assert_int_equal(hit.status, 0);
	assert_int_equal(stats().entries, 0);

	/* "*" cannot be stored either. */
	p.vary = "*";
	p.vary_len = 1;
	assert_int_equal(store_fill(&q, &t, &p), -1);
	LOOK(SL_FILL, key, T + 2, &h, &hit, &t);

	/* Eight is fine; the eighth name counts. */
	p.vary = "a, b, c, d, e, f, g, h";
	p.vary_len = strlen(p.vary);
	q.now_ms = p.stored_at_ms = T + 2;
	assert_int_equal(store_fill(&q, &t, &p), 0);
	LOOK(SL_HIT, key, T + 3, &h, &hit, &t);
	LOOK(SL_HIT, key, T + 3, &h2, &hit, &t);	/* i is not in it */
	LOOK(SL_FILL, key, T + 3, &h3, &hit, &t);
	store_release(&t, 0);

	/* Values too long to keep: not stored, let go. */
	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	q = req("/vm/big\nh", T, &hb);
	p.vary = "X-Big";
	p.vary_len = 5;
	LOOK(SL_FILL, "/vm/big\nh", T, &hb, &hit, &t);
	assert_int_equal(store_fill(&q, &t, &p), -1);
	LOOK(SL_FILL, "/vm/big\nh", T, &hb, &hit, &t);
	store_release(&t, 0);
}

/* -- LRU and eviction ------------------------------------------------------ */

static void
lkey(char *buf, size_t n, const char *dir, uint64_t i)
{
	snprintf(buf, n, "/%s/%05" PRIu64 "\nh", dir, i);
}

/* nblocks one-block entries fill every entry and every block. */
static void
fill_store(const char *dir, int64_t at, uint64_t lifetime, uint64_t swr)
{
	char key[64];
	uint64_t i;
	struct store_put p = put(200, "", "0123456789", 10, at, lifetime);

	p.swr_ms = swr;
	for (i = 0; i < nblocks; i++) {
		lkey(key, sizeof(key), dir, i);
		fill_full(key, NULL, &p);
	}
}

static void
test_lru(void **state)
{
	struct store_stats st0, st;
	struct store_hit hit;
	struct store_ticket t;
	struct store_put p;
	struct store_req q;
	char key[64];
	uint64_t i;
	static char body[6 * 2048];

	(void)state;
	st0 = stats();
	fill_store("l", T, 600000, 0);
	st = stats();
	assert_int_equal(st.entries, nblocks);
	assert_int_equal(st.stored_bytes, nblocks * blk);
	assert_int_equal(st.stored_bytes, st.capacity);
	assert_int_equal(st.evictions, st0.evictions);

	/* The oldest, used again, outlives the next ones. */
	lkey(key, sizeof(key), "l", 0);
	LOOK(SL_HIT, key, T + 1, NULL, &hit, &t);
	lkey(key, sizeof(key), "l", nblocks);		/* a new one */
	LOOK(SL_FILL, key, T + 2, NULL, &hit, &t);	/* a slot for it */
	assert_int_equal(stats().evictions, st0.evictions + 1);
	p = put(200, "", "x", 1, T + 2, 600000);
	q = req(key, T + 2, NULL);
	assert_int_equal(store_fill(&q, &t, &p), 0);
	st = stats();
	assert_int_equal(st.evictions, st0.evictions + 1);
	assert_int_equal(st.entries, nblocks);
	lkey(key, sizeof(key), "l", 0);
	LOOK(SL_HIT, key, T + 3, NULL, &hit, &t);
	lkey(key, sizeof(key), "l", 2);
	LOOK(SL_HIT, key, T + 3, NULL, &hit, &t);
	assert_int_equal(stats().evictions, st0.evictions + 1);
	lkey(key, sizeof(key), "l", 1);			/* the evicted one */
	LOOK(SL_FILL, key, T + 4, NULL, &hit, &t);	/* evicts 3 */
	store_release(&t, 0);
	assert_int_equal(stats().evictions, st0.evictions + 2);
	assert_int_equal(stats().entries, nblocks - 1);

	/* Use 0, 101, 2, 103, 4..9 again (1 and 3 are gone), then a
	 * 5-block entry: its slot is free, its blocks are the free one
	 * plus 4 evicted from the tail: 10..13. */
	for (i = 0; i < 10; i++) {
		lkey(key, sizeof(key), "l", i == 1 || i == 3 ? 100 + i : i);
		LOOK(SL_HIT, key, T + 5, NULL, &hit, &t);
	}
	memset(body, 'B', sizeof(body));
	p = put(200, "", body, 5 * blk - strlen("/l/big\nh"), T + 6, 600000);
	fill_full("/l/big\nh", NULL, &p);
	st = stats();
	assert_int_equal(st.evictions, st0.evictions + 6);
	assert_int_equal(st.entries, nblocks - 1 - 4 + 1);
	assert_int_equal(st.stored_bytes, st.capacity);
	for (i = 0; i < 10; i++) {
		lkey(key, sizeof(key), "l", i == 1 || i == 3 ? 100 + i : i);
		if (!present(key, T + 7))
			fail_msg("%s was evicted, used recently", key);
	}
	for (i = 10; i < 14; i++) {
		lkey(key, sizeof(key), "l", i);
		if (present(key, T + 7))
			fail_msg("%s survived, the least recently used", key);
	}
	lkey(key, sizeof(key), "l", 14);
	assert_true(present(key, T + 7));
	assert_true(present("/l/big\nh", T + 7));
	/* Probing missing keys took free slots only. */
	assert_int_equal(stats().evictions, st0.evictions + 6);
}

static void
test_too_big(void **state)
{
	static const char key[] = "/tb\nh";
	static char body[300 * 2048];
	struct store_stats st0;
	struct store_hit hit;
	struct store_ticket t, w;
	struct store_req q = req(key, T, NULL);
	struct store_put p;
	char k[64];
	uint64_t i;
	size_t fit = (nblocks / 2) * blk - strlen(key) - strlen("H: 1\r\n");

	(void)state;
	assert_true(fit + 2 * blk < sizeof(body));
	/* A third of the store in small entries. */
	for (i = 0; i < nblocks / 3; i++) {
		lkey(k, sizeof(k), "tb", i);
		fill_simple(k, T, 600000, 10);
	}
	st0 = stats();
	memset(body, 'Z', sizeof(body));
	/* One byte over half the store: refused, nothing evicted, let go. */
	p = put(200, "H: 1\r\n", body, fit + 1, T, 600000);
	LOOK(SL_FILL, key, T, NULL, &hit, &t);
	LOOK(SL_WAIT, key, T, NULL, &hit, &w);
	assert_int_equal(store_fill(&q, &t, &p), -1);
	assert_true(store_wait_over(&w, T, LT));
	assert_int_equal(stats().evictions, st0.evictions);
	assert_int_equal(stats().entries, st0.entries);
	assert_int_equal(stats().stored_bytes, st0.stored_bytes);
	/* Half exactly: stored, evicting what it needs. */
	p.body_len = fit;
	LOOK(SL_FILL, key, T, NULL, &hit, &t);
	assert_int_equal(store_fill(&q, &t, &p), 0);
	LOOK(SL_HIT, key, T + 1, NULL, &hit, &t);
	assert_copy(&hit, 200, "H: 1\r\n", body, fit);
	assert_int_equal(stats().stored_bytes, st0.stored_bytes +
	    (nblocks / 2) * blk);
	/* A far bigger one replaces nothing: the old answer goes, though
	 * ("replacing what it held"), and the key is free again. */
	p.body_len = sizeof(body);
	p.stored_at_ms = T + 700000;
	q.now_ms = T + 700000;
	LOOK(SL_FILL, key, T + 700000, NULL, &hit, &t);
	assert_int_equal(store_fill(&q, &t, &p), -1);
	LOOK(SL_FILL, key, T + 700000, NULL, &hit, &t);
	store_release(&t, 0);
}

static void
test_locked_not_evicted(void **state)
{
	static struct store_ticket *tk;
	struct store_stats st0, st;
	struct store_req q;
	struct store_hit hit;
	struct store_ticket t, w;
	struct store_put p;
	char key[64];
	uint64_t i;

	(void)state;
	tk = calloc(nblocks, sizeof(*tk));
	assert_non_null(tk);
	/* Every slot and block taken, every entry refreshing (locked). */
	fill_store("ln", T, 1000, 600000);
	for (i = 0; i < nblocks; i++) {
		lkey(key, sizeof(key), "ln", i);
		LOOK(SL_STALE_REFRESH, key, T + 2000, NULL, &hit, &tk[i]);
	}
	st0 = stats();
	/* No room even to track a new key's lock. */
	LOOK(SL_NONE, "/ln/new\nh", T + 2001, NULL, &hit, &t);
	assert_int_equal(stats().evictions, st0.evictions);
	assert_int_equal(stats().entries, nblocks);
	/* One let go: that one goes. */
	store_release(&tk[5], 0);
	LOOK(SL_FILL, "/ln/new\nh", T + 2002, NULL, &hit, &t);
	assert_int_equal(stats().evictions, st0.evictions + 1);
	p = put(200, "", "n", 1, T + 2002, 600000);
	q = req("/ln/new\nh", T + 2002, NULL);
	assert_int_equal(store_fill(&q, &t, &p), 0);
	/* Another let go; a 3-block answer finds 1 block there, 1 in the
	 * unlocked new entry, and no more: refused. */
	store_release(&tk[6], 0);
	p.body = calloc(1, 3 * blk);
	assert_non_null(p.body);
	p.body_len = 3 * blk - 100;
	LOOK(SL_FILL, "/ln/big\nh", T + 2003, NULL, &hit, &t);
	q = req("/ln/big\nh", T + 2003, NULL);
	assert_int_equal(store_fill(&q, &t, &p), -1);
	free((void *)p.body);
	/* Every locked entry is still there. */
	for (i = 0; i < nblocks; i++) {
		if (i == 5 || i == 6)
			continue;
		lkey(key, sizeof(key), "ln", i);
		LOOK(SL_STALE, key, T + 2004, NULL, &hit, &w);
		assert_copy(&hit, 200, "", "0123456789", 10);
	}
	/* The locked ones, and the new one unless the refused fill evicted
	 * it on its way (store.h does not say whether it may). */
	st = stats();
	assert_true(st.entries == nblocks - 2 || st.entries == nblocks - 1);
	assert_int_equal(st.stored_bytes, st.entries * blk);
	assert_int_equal(present("/ln/new\nh", T + 2005),
	    st.entries == nblocks - 1);
	for (i = 0; i < nblocks; i++)
		if (i != 5 && i != 6)
			store_release(&tk[i], 0);
	free(tk);
}

/* A fill under way (no answer yet) is not evicted under pressure: its
 * waiters keep waiting for it. */
static void
test_pending_not_evicted(void **state)
{
	static const char key[] = "/pe\nh";
	struct store_hit hit;
	struct store_ticket t, w;
	struct store_put p = put(200, "", "done", 4, T + 5, 600000);
	struct store_req q = req(key, T + 5, NULL);

	(void)state;
	LOOK(SL_FILL, key, T, NULL, &hit, &t);
	LOOK(SL_WAIT, key, T, NULL, &hit, &w);
	fill_store("pe1", T + 1, 600000, 0);
	fill_store("pe2", T + 2, 600000, 0);
	assert_false(store_wait_over(&w, T + 3, LT));
	LOOK(SL_WAIT, key, T + 4, NULL, &hit, &w);
	assert_int_equal(w.seq, t.seq);
	assert_int_equal(store_fill(&q, &t, &p), 0);
	assert_true(store_wait_over(&w, T + 5, LT));
	LOOK(SL_HIT, key, T + 6, NULL, &hit, &w);
	assert_copy(&hit, 200, "", "done", 4);
}

/* -- purge ----------------------------------------------------------------- */

static void
test_purge(void **state)
{
	static const char *const keys[] = {
		"/a/x?1\nh", "/a/y\nh", "/a/\nh", "/ab\nh", "/b/a\nh",
		"/a\nh2", "/\nh",
	};
	struct store_hit hit;
	struct store_ticket t, tr, w;
	struct store_put p;
	struct store_req q;
	size_t i;

	(void)state;
	for (i = 0; i < 7; i++)
		fill_simple(keys[i], T, 1000, 100);
	assert_int_equal(store_purge("/a/", 3), 3);
	assert_int_equal(stats().entries, 4);
	assert_false(present("/a/x?1\nh", T + 1));
	assert_false(present("/a/y\nh", T + 1));
	assert_false(present("/a/\nh", T + 1));
	assert_true(present("/ab\nh", T + 1));
	assert_true(present("/b/a\nh", T + 1));
	assert_true(present("/a\nh2", T + 1));
	assert_true(present("/\nh", T + 1));
	assert_int_equal(store_purge("/zzz", 4), 0);
	assert_int_equal(store_purge("/a/", 3), 0);
	/* Not NUL-terminated: only len bytes count. */
	assert_int_equal(store_purge("/abXYZ", 3), 1);	/* "/ab" */
	assert_true(present("/a\nh2", T + 1));
	assert_int_equal(store_purge("/a", 2), 1);
	assert_int_equal(stats().entries, 2);
	assert_int_equal(store_purge("/", 1), 2);
	assert_int_equal(stats().entries, 0);
	assert_int_equal(stats().stored_bytes, 0);

	/* An entry being refreshed is purged (counted) but its lock stays:
	 * waiters wait for the refresh, which stores anew. */
	p = put(200, "", "one", 3, T, 1000);
	p.swr_ms = 10000;
	fill_full("/p/r\nh", NULL, &p);
	LOOK(SL_STALE_REFRESH, "/p/r\nh", T + 1500, NULL, &hit, &tr);
	/* A fill under way with nothing stored is not an entry yet. */
	LOOK(SL_FILL, "/p/f\nh", T + 1500, NULL, &hit, &t);
	assert_int_equal(store_purge("/p/", 3), 1);
	assert_int_equal(stats().entries, 0);
	LOOK(SL_WAIT, "/p/r\nh", T + 1501, NULL, &hit, &w);
	assert_int_equal(w.seq, tr.seq);
	assert_false(store_wait_over(&w, T + 1502, LT));
	p = put(200, "", "two", 3, T + 1503, 1000);
	q = req("/p/r\nh", T + 1503, NULL);
	assert_int_equal(store_fill(&q, &tr, &p), 0);
	assert_true(store_wait_over(&w, T + 1503, LT));
	LOOK(SL_HIT, "/p/r\nh", T + 1504, NULL, &hit, &w);
	assert_copy(&hit, 200, "", "two", 3);
	/* A refresh that fails after its entry was purged leaves nothing. */
	p.swr_ms = 10000;
	fill_full("/p/s\nh", NULL, &p);
	LOOK(SL_STALE_REFRESH, "/p/s\nh", T + 2600, NULL, &hit, &tr);
	assert_int_equal(store_purge("/p/s", 4), 1);
	store_release(&tr, T + 2601);
	LOOK(SL_FILL, "/p/s\nh", T + 2602, NULL, &hit, &tr);
	assert_int_equal(hit.status, 0);
	store_release(&tr, 0);
	store_release(&t, 0);
	assert_int_equal(stats().entries, 1);
}

/* -- dead and late locks --------------------------------------------------- */

/* Forks a child that looks key up at now, sends its answer and ticket
 * down a pipe, then exits at once (hold false) or when the parent closes
 * its end of ctl (hold true).  Returns its pid. */
struct child_look {
	int			rc;
	struct store_ticket	t;
};

static pid_t
child_lookup(const char *key, int64_t now, bool hold, int *ctl,
    struct child_look *cl)
{
	int res[2], c[2];
	pid_t pid;
	char x;

	assert_int_equal(pipe(res), 0);
	assert_int_equal(pipe(c), 0);
	if ((pid = fork()) == 0) {
		struct store_req q = req(key, now, NULL);
		struct store_hit hit;

		close(res[0]);
		close(c[1]);
		cl->rc = store_lookup(&q, &out, &hit, &cl->t);
		if (write(res[1], cl, sizeof(*cl)) != sizeof(*cl))
			_exit(1);
		if (hold)
			(void)read(c[0], &x, 1);
		_exit(0);
	}
	assert_true(pid > 0);
	close(res[1]);
	close(c[0]);
	assert_int_equal(read(res[0], cl, sizeof(*cl)), sizeof(*cl));
	close(res[0]);
	*ctl = c[1];
	return pid;
}

static void
reap(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_dead_owner(void **state)
{
	struct child_look cl;
	struct store_hit hit;
	struct store_ticket t, w;
	struct store_put p;
	struct store_req q;
	pid_t pid;
	int ctl;

	(void)state;
	/* A child takes the lock and dies without filling. */
	pid = child_lookup("/d/a\nh", T, false, &ctl, &cl);
	assert_int_equal(cl.rc, SL_FILL);
	close(ctl);
	reap(pid);
	assert_true(store_wait_over(&cl.t, T + 1, LT));
	LOOK(SL_FILL, "/d/a\nh", T + 1, NULL, &hit, &t);
	assert_int_not_equal(t.seq, cl.t.seq);
	assert_true(store_wait_over(&cl.t, T + 1, LT));
	p = put(200, "", "mine", 4, T + 2, 600000);
	q = req("/d/a\nh", T + 2, NULL);
	assert_int_equal(store_fill(&q, &t, &p), 0);
	LOOK(SL_HIT, "/d/a\nh", T + 3, NULL, &hit, &t);

	/* While it lives, it is waited for; once dead, no more. */
	pid = child_lookup("/d/b\nh", T, true, &ctl, &cl);
	assert_int_equal(cl.rc, SL_FILL);
	LOOK(SL_WAIT, "/d/b\nh", T + 1, NULL, &hit, &w);
	assert_int_equal(w.entry, cl.t.entry);
	assert_int_equal(w.seq, cl.t.seq);
	assert_false(store_wait_over(&w, T + 2, LT));
	close(ctl);
	reap(pid);
	assert_true(store_wait_over(&w, T + 3, LT));
	LOOK(SL_FILL, "/d/b\nh", T + 3, NULL, &hit, &t);
	store_release(&t, 0);

	/* A refresh whose owner died: the next one refreshes. */
	p = put(200, "", "old", 3, T, 1000);
	p.swr_ms = 600000;
	fill_full("/d/c\nh", NULL, &p);
	pid = child_lookup("/d/c\nh", T + 2000, false, &ctl, &cl);
	assert_int_equal(cl.rc, SL_STALE_REFRESH);
	close(ctl);
	reap(pid);
	LOOK(SL_STALE_REFRESH, "/d/c\nh", T + 2001, NULL, &hit, &t);
	assert_copy(&hit, 200, "", "old", 3);
	store_release(&t, 0);
}

static void
test_lock_timeout(void **state)
{
	struct child_look cl;
	struct store_hit hit;
	struct store_ticket t, t2, w;
	pid_t pid;
	int ctl;

	(void)state;
	LOOK(SL_FILL, "/lt/a\nh", T, NULL, &hit, &t);
	/* lock_timeout is "older than": at 5000 ms it still holds. */
	LOOK(SL_WAIT, "/lt/a\nh", T + LT, NULL, &hit, &w);
	assert_false(store_wait_over(&w, T + LT, LT));
	assert_true(store_wait_over(&w, T + LT + 1, LT));
	/* Then the next one takes it over, a new lock. */
	LOOK(SL_FILL, "/lt/a\nh", T + LT + 1, NULL, &hit, &t2);
	assert_int_equal(t2.entry, t.entry);
	assert_int_not_equal(t2.seq, t.seq);
	assert_true(store_wait_over(&t, T + LT + 2, LT));
	assert_false(store_wait_over(&t2, T + LT + 2, LT));
	/* A shorter timeout of the caller's own. */
	assert_true(store_wait_over(&t2, T + LT + 2, 0));
	store_release(&t2, 0);

	/* A live owner too: its lock expires. */
	pid = child_lookup("/lt/b\nh", T, true, &ctl, &cl);
	assert_int_equal(cl.rc, SL_FILL);
	LOOK(SL_WAIT, "/lt/b\nh", T + 10, NULL, &hit, &w);
	assert_false(store_wait_over(&w, T + 10, LT));
	assert_true(store_wait_over(&w, T + LT + 1, LT));
	LOOK(SL_FILL, "/lt/b\nh", T + LT + 1, NULL, &hit, &t);
	close(ctl);
	reap(pid);
	store_release(&t, 0);
}

/*
 * A lock whose owner is dead is not held (store.h: "the lock t is gone
 * (... or its owner dead)"), so it must not pin its entry against
 * eviction: a worker that dies mid-fill would otherwise take that entry's
 * slot, and its blocks, out of the store for good, unless someone asks
 * for that very key again.
 */
static char	 pinned_keys[5][32];

static int
pinned_teardown(void **state)
{
	struct store_ticket t;
	struct store_hit hit;
	enum store_look rc;
	int i;

	(void)state;
	for (i = 0; i < 5; i++)
		if (pinned_keys[i][0] != '\0') {
			rc = look(pinned_keys[i], T + 600000, NULL, &hit, &t);
			if (rc == SL_FILL || rc == SL_STALE_REFRESH)
				store_release(&t, 0);
		}
	store_purge("/", 1);
	return 0;
}

static void
test_dead_lock_not_pinned(void **state)
{
	struct child_look cl;
	struct store_put p = put(200, "", "pinned?", 7, T, 1000);
	struct store_stats st;
	static char big4[3 * 2048 + 100];
	char key[64];
	pid_t pid;
	int ctl, i;

	(void)state;
	/* A dead refresh of an answer: the least recently used. */
	strcpy(pinned_keys[0], "/dp/refresh\nh");
	p.swr_ms = 600000;
	fill_full(pinned_keys[0], NULL, &p);
	pid = child_lookup(pinned_keys[0], T + 2000, false, &ctl, &cl);
	assert_int_equal(cl.rc, SL_STALE_REFRESH);
	close(ctl);
	reap(pid);
	/* Three dead fills of new keys. */
	for (i = 1; i < 4; i++) {
		snprintf(pinned_keys[i], sizeof(pinned_keys[i]),
		    "/dp/fill%d\nh", i);
		pid = child_lookup(pinned_keys[i], T + 2000, false, &ctl, &cl);
		assert_int_equal(cl.rc, SL_FILL);
		close(ctl);
		reap(pid);
	}
	/* A store's worth of new answers: every slot and block is ours
	 * (store_evict_one(): slots run out first). */
	fill_store("dpn", T + 3000, 600000, 0);
	st = stats();
	assert_int_equal(st.entries, nblocks);
	assert_int_equal(st.stored_bytes, st.capacity);

	/* Blocks run out first (store_room()): a dead refresh of a 4-block
	 * answer, then two-block answers for all but one block. */
	store_purge("/", 1);
	strcpy(pinned_keys[4], "/dp/big\nh");
	p.body = big4;
	p.body_len = sizeof(big4);
	fill_full(pinned_keys[4], NULL, &p);
	pid = child_lookup(pinned_keys[4], T + 2000, false, &ctl, &cl);
	assert_int_equal(cl.rc, SL_STALE_REFRESH);
	close(ctl);
	reap(pid);
	p = put(200, "", big4, 3000, T + 3000, 600000);
	for (i = 0; i < (int)nblocks / 2; i++) {
		lkey(key, sizeof(key), "dpm", (uint64_t)i);
		fill_full(key, NULL, &p);
	}
	st = stats();
	assert_int_equal(st.entries, nblocks / 2);
	assert_int_equal(st.stored_bytes, nblocks / 2 * 2 * blk);
	assert_false(present(pinned_keys[4], T + 3001));
}

/* -- processes ------------------------------------------------------------- */

#define NKEYS		256
#define NCHILD		4
#define OPS		20000
#define MAXBODY		60000	/* bodies are shorter */
#define MAXBLOCKS	31	/* a key, a head and MAXBODY: blocks */

/* What the children did, shared. */
struct tally {
	_Atomic uint64_t	 hit, stale, fill, fill_ok, fill_no, wait,
				 none, purged, released, bad;
	char			 why[NCHILD][160];
};

static struct tally	*tally;

static int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void
ckey(char *buf, size_t n, int k)
{
	snprintf(buf, n, "/c/k%03d?q=%d\nexample.org", k, k * 7);
}

/* Every fourth key varies on X-Variant. */
static bool
cvary(int k)
{
	return k % 4 == 0;
}

static const char *const variants[] = { "alpha", "beta" };

/* The answer of key k, variant v, version ver: its body is a function
 * of the three and its length, all written in its head. */
static void
make_answer(struct buf *b, size_t *head_len, int k, int v, uint32_t ver,
    size_t len)
{
	uint64_t s = ((uint64_t)k << 40) ^ ((uint64_t)v << 32) ^ ver ^
	    0x9e3779b97f4a7c15ull;
	size_t i;

	buf_reset(b);
	buf_appendf(b, "X-Key: %d\r\nX-Var: %d\r\nX-Ver: %" PRIu32 "\r\n"
	    "X-Len: %zu\r\n%s", k, v, ver, len, cvary(k) ?
	    "Vary: X-Variant\r\n" : "");
	*head_len = b->len;
	buf_reserve(b, len);
	for (i = 0; i < len; i++)
		b->data[b->len + i] = (char)(rnd(&s) >> 24);
	b->len += len;
}

static int
status_of(uint32_t ver)
{
	return 200 + (int)(ver % 5);
}

/* Whether a copied answer is one that was stored for key k, variant v:
 * NULL, or what is wrong. */
static const char *
check_answer(const struct store_hit *hit, const struct buf *got, int k,
    int v)
{
	static struct buf want;
	static char why[128];
	int gk, gv;
	uint32_t ver;
	size_t len, hl;

	if (got->len - got->off != hit->head_len + hit->body_len)
		return "copy length";
	if (sscanf(got->data + got->off, "X-Key: %d\r\nX-Var: %d\r\n"
	    "X-Ver: %" SCNu32 "\r\nX-Len: %zu\r\n", &gk, &gv, &ver, &len) !=
	    4)
		return "head";
	if (gk != k) {
		snprintf(why, sizeof(why), "key %d's answer for key %d", gk,
		    k);
		return why;
	}
	if (cvary(k) && gv != v) {
		snprintf(why, sizeof(why), "key %d: variant %d for %d", k, gv,
		    v);
		return why;
	}
	make_answer(&want, &hl, gk, gv, ver, len);
	if (hit->head_len != hl || hit->body_len != len)
		return "head or body length";
	if (memcmp(got->data + got->off, want.data, want.len) != 0)
		return "bytes";
	if (hit->status != status_of(ver))
		return "status";
	return NULL;
}

struct pending {
	bool			 used;
	int			 k, v;
	struct store_ticket	 t;
};

static void
child_bad(int id, const char *what, int k)
{
	snprintf(tally->why[id], sizeof(tally->why[id]), "child %d key %d: "
	    "%s", id, k, what);
	tally->bad++;
}

/* One child's work: ops lookups of random keys, fills (some held over a
 * few turns), failed and let-go fills, purges.  Exits nonzero on a wrong
 * answer.  ops 0: until killed. */
static void
child_work(int id, int ops, uint64_t seed)
{
	struct pending pend[3] = { { 0 } };
	struct buf ans = { 0 }, got = { 0 };
	struct hdrs h = { 1, { "X-Variant" }, { NULL } };
	struct store_hit hit;
	struct store_ticket t;
	struct store_put p;
	struct store_req q;
	uint64_t s = seed * 2654435761u + 1;
	uint32_t ver = (uint32_t)id << 24;
	const char *why;
	char key[64];
	size_t hl, len;
	int n, k, v, r, j;

	for (n = 0; ops == 0 || n < ops; n++) {
		r = (int)(rnd(&s) % 1000);
		if (r < 4) {		/* purge a tenth of the keys, or all */
			char pre[16];

			snprintf(pre, sizeof(pre), "/c/k%d", (int)(rnd(&s) %
			    10));
			tally->purged += store_purge(pre, r == 0 ? 3 :
			    strlen(pre));
			continue;
		}
		/* Finish a fill held over from before, now and then. */
		for (j = 0; j < 3; j++)
			if (pend[j].used && rnd(&s) % 4 == 0)
				break;
		if (j < 3) {
			k = pend[j].k;
			v = pend[j].v;
			t = pend[j].t;
			pend[j].used = false;
			ckey(key, sizeof(key), k);
			h.value[0] = variants[v];
			q = req(key, wall_ms(), &h);
			q.lock_timeout_ms = 50;
			goto fill;
		}
		k = (int)(rnd(&s) % NKEYS);
		v = (int)(rnd(&s) % 2);
		ckey(key, sizeof(key), k);
		h.value[0] = variants[v];
		q = req(key, wall_ms(), &h);
		q.lock_timeout_ms = 50;
		q.revalidate = rnd(&s) % 50 == 0;
		switch (store_lookup(&q, &got, &hit, &t)) {
		case SL_HIT:
			tally->hit++;
			if ((why = check_answer(&hit, &got, k, v)) != NULL)
				goto bad;
			continue;
		case SL_STALE:
			tally->stale++;
			if ((why = check_answer(&hit, &got, k, v)) != NULL)
				goto bad;
			continue;
		case SL_WAIT:
			tally->wait++;
			(void)store_wait_over(&t, wall_ms(), 50);
			continue;
		case SL_NONE:
			tally->none++;
			continue;
		case SL_STALE_REFRESH:
			tally->stale++;
			if ((why = check_answer(&hit, &got, k, v)) != NULL)
				goto bad;
			break;
		case SL_FILL:
			tally->fill++;
			if (hit.status != 0 &&
			    (why = check_answer(&hit, &got, k, v)) != NULL)
				goto bad;
			break;
		}
		/* Ours to fill: now, later, or not at all. */
		r = (int)(rnd(&s) % 100);
		if (r < 15) {
			for (j = 0; j < 3 && pend[j].used; j++)
				;
			if (j < 3) {
				pend[j] = (struct pending){ true, k, v, t };
				continue;
			}
		}
		if (r >= 15 && r < 30) {
			store_release(&t, r < 22 ? q.now_ms : 0);
			tally->released++;
			continue;
		}
fill:
		r = (int)(rnd(&s) % 100);
		len = r < 60 ? rnd(&s) % 3000 : r < 95 ? rnd(&s) % 12000 :
		    rnd(&s) % MAXBODY;
		ver++;
		make_answer(&ans, &hl, k, v, ver, len);
		p = put(status_of(ver), "", ans.data + hl, len, q.now_ms,
		    rnd(&s) % 20);
		p.head = ans.data;
		p.head_len = hl;
		p.initial_age_ms = rnd(&s) % 3;
		p.swr_ms = rnd(&s) % 20;
		p.sie_ms = rnd(&s) % 40;
		if (cvary(k)) {
			p.vary = "X-Variant";
			p.vary_len = 9;
		}
		if (store_fill(&q, &t, &p) == 0)
			tally->fill_ok++;
		else
			tally->fill_no++;
		continue;
bad:
		child_bad(id, why, k);
		_exit(2);
	}
	for (j = 0; j < 3; j++)
		if (pend[j].used)
			store_release(&pend[j].t, 0);
	_exit(0);
}

/* Every key, every variant: a usable answer is the right one, and no
 * lock is left behind (the children are gone).  The keys with an answer
 * (for either variant) counted. */
static uint64_t
check_all(void)
{
	struct hdrs h = { 1, { "X-Variant" }, { NULL } };
	struct store_hit hit;
	struct store_ticket t;
	enum store_look rc;
	struct store_req q;
	const char *why;
	uint64_t n = 0;
	char key[64];
	int k, v;
	bool any;

	for (k = 0; k < NKEYS; k++) {
		any = false;
		for (v = 0; v < 2; v++) {
			ckey(key, sizeof(key), k);
			h.value[0] = variants[v];
			q = req(key, wall_ms(), &h);
			q.lock_timeout_ms = 600000;
			rc = lookq(&q, &hit, &t);
			if (rc == SL_WAIT || rc == SL_NONE)
				fail_msg("%s variant %d: %s after every "
				    "process is gone", key, v, look_name(rc));
			if (rc != SL_FILL || hit.status != 0) {
				if ((why = check_answer(&hit, &out, k, v)) !=
				    NULL)
					fail_msg("%s variant %d: %s", key, v,
					    why);
				any = true;
			}
			if (rc == SL_FILL || rc == SL_STALE_REFRESH)
				store_release(&t, 0);
		}
		n += any;
	}
	return n;
}

static void
check_stats(void)
{
	struct store_stats st = stats();

	assert_true(st.capacity == nblocks * blk);
	assert_true(st.entries <= nblocks);
	assert_true(st.stored_bytes <= st.capacity);
	assert_true(st.stored_bytes >= st.entries * blk);
	assert_int_equal(st.stored_bytes % blk, 0);
	assert_true(st.stored_bytes <= st.entries * MAXBLOCKS * blk);
	/* One entry a key at most. */
	assert_true(st.entries <= NKEYS);
}

static void
test_processes(void **state)
{
	struct store_stats st0, st;
	pid_t pids[NCHILD];
	int i, status;
	uint64_t usable, purged;

	(void)state;
	tally = mmap(NULL, sizeof(*tally), PROT_READ | PROT_WRITE, MAP_SHARED |
	    MAP_ANONYMOUS, -1, 0);
	assert_true(tally != MAP_FAILED);
	memset(tally, 0, sizeof(*tally));
	st0 = stats();
	for (i = 0; i < NCHILD; i++) {
		if ((pids[i] = fork()) == 0)
			child_work(i, OPS, (uint64_t)i + 1);
		assert_true(pids[i] > 0);
	}
	for (i = 0; i < NCHILD; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("child %d: status %#x: %s", i, status,
			    tally->why[i]);
	}
	assert_int_equal(tally->bad, 0);
	/* It did what it is for. */
	assert_true(tally->hit > 1000);
	assert_true(tally->stale > 100);
	assert_true(tally->fill_ok > 1000);
	assert_true(tally->wait > 0);
	assert_true(tally->purged > 0);
	st = stats();
	assert_true(st.evictions > st0.evictions);
	check_stats();
	usable = check_all();
	check_stats();
	assert_true(usable <= stats().entries);
	/* The books balance: purging all removes what was counted, and
	 * leaves nothing counted. */
	usable = stats().entries;
	purged = store_purge("/", 1);
	assert_int_equal(purged, usable);
	st = stats();
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.stored_bytes, 0);
	print_message("processes: %" PRIu64 " HIT, %" PRIu64
	    " STALE(_REFRESH), %" PRIu64 " FILL; %" PRIu64
	    " fills stored, %" PRIu64 " refused; %" PRIu64 " waits, %" PRIu64
	    " purged, %" PRIu64 " evictions, %" PRIu64 " none\n",
	    (uint64_t)tally->hit, (uint64_t)tally->stale,
	    (uint64_t)tally->fill, (uint64_t)tally->fill_ok,
	    (uint64_t)tally->fill_no, (uint64_t)tally->wait,
	    (uint64_t)tally->purged, st.evictions - st0.evictions,
	    (uint64_t)tally->none);
	munmap(tally, sizeof(*tally));
}

/* Children SIGKILLed at random points, some holding fill locks (and
 * perhaps, by chance, the store's mutex): afterwards every key is usable
 * (no lock of the dead is waited for) and every answer right. */
static void
test_processes_killed(void **state)
{
	pid_t pids[NCHILD];
	int round, i, status, fd;
	uint64_t seed = 1, wipes = 0, n;
	char logpath[] = "/tmp/test_cache_store.XXXXXX", line[512];
	FILE *fp;

	(void)state;
	/* The store's warnings (a death in its mutex) go to a file, counted
	 * at the end. */
	assert_true((fd = mkstemp(logpath)) != -1);
	close(fd);
	assert_int_equal(log_open(logpath), 0);
	tally = mmap(NULL, sizeof(*tally), PROT_READ | PROT_WRITE, MAP_SHARED |
	    MAP_ANONYMOUS, -1, 0);
	assert_true(tally != MAP_FAILED);
	memset(tally, 0, sizeof(*tally));
	for (round = 0; round < 20; round++) {
		for (i = 0; i < NCHILD; i++) {
			if ((pids[i] = fork()) == 0)
				child_work(i, 0, seed + (uint64_t)i);
			assert_true(pids[i] > 0);
		}
		seed += NCHILD;
		usleep(2000 + (useconds_t)(rnd(&seed) % 20000));
		for (i = 0; i < NCHILD; i++) {
			kill(pids[i], SIGKILL);
			assert_int_equal(waitpid(pids[i], &status, 0),
			    pids[i]);
			if (WIFEXITED(status))
				fail_msg("round %d child %d: exit %d: %s",
				    round, i, WEXITSTATUS(status),
				    tally->why[i]);
		}
		assert_int_equal(tally->bad, 0);
		check_stats();
		(void)check_all();
		check_stats();
	}
	assert_true(tally->fill_ok > 0);
	n = stats().entries;
	assert_int_equal(store_purge("/", 1), n);
	assert_int_equal(stats().entries, 0);
	assert_int_equal(stats().stored_bytes, 0);
	munmap(tally, sizeof(*tally));
	log_open(NULL);
	assert_non_null(fp = fopen(logpath, "r"));
	while (fgets(line, sizeof(line), fp) != NULL)
		wipes += strstr(line, "died holding the cache lock") != NULL;
	fclose(fp);
	unlink(logpath);
	print_message("killed: %" PRIu64 " recoveries of the store's mutex "
	    "from a dead owner (by chance)\n", wipes);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_fill_wait_hit, empty),
		cmocka_unit_test_setup(test_sizes, empty),
		cmocka_unit_test_setup(test_body_by_ref, empty),
		cmocka_unit_test_setup(test_replace, empty),
		cmocka_unit_test_setup(test_freshness, empty),
		cmocka_unit_test_setup(test_freshness_edges, empty),
		cmocka_unit_test_setup(test_revalidate, empty),
		cmocka_unit_test_setup(test_vary, empty),
		cmocka_unit_test_setup(test_vary_too_many, empty),
		cmocka_unit_test_setup(test_lru, empty),
		cmocka_unit_test_setup(test_too_big, empty),
		cmocka_unit_test_setup(test_locked_not_evicted, empty),
		cmocka_unit_test_setup(test_pending_not_evicted, empty),
		cmocka_unit_test_setup(test_purge, empty),
		cmocka_unit_test_setup(test_dead_owner, empty),
		cmocka_unit_test_setup(test_lock_timeout, empty),
		cmocka_unit_test_setup_teardown(test_dead_lock_not_pinned,
		    empty, pinned_teardown),
		cmocka_unit_test_setup(test_processes, empty),
		cmocka_unit_test_setup(test_processes_killed, empty),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
