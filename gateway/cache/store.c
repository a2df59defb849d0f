/*
 * The cache's shared memory (see store.h).
 *
 * Layout: struct store_hdr, then the buckets (entry numbers, 0: none),
 * the entries, each block's next-block number, and the blocks.  Entry
 * and block numbers start at 1, so that 0 is "none" everywhere.  An
 * entry's bytes are, along its chain of blocks: its key, its Vary part
 * (the names and the request's values it was made for, "name\0value\0"
 * pairs), its header fields, its body.
 *
 * The LRU list runs from the most recently used (head) to the least
 * (tail); making room evicts from the tail, skipping entries whose lock
 * is held (a fill or a refresh under way).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gateway/cache/policy.h"
#include "gateway/cache/store.h"
#include "lib/log.h"

#define STORE_MAGIC	0x63616368u	/* "cach" */
#define BLOCK		2048
#define FAILED_STALE_MS	1000	/* after a failed fill, serve stale */
#define WAIT_SLOTS	256	/* workers counting their waiters */
#define RETIRE_MAX	64	/* replaced chains waiting to be freed */
#define RETIRE_MS	250

struct retired {
	uint32_t	 first, nblocks;
	int64_t		 at;		/* store_now() */
};

struct entry {
	uint64_t	 hash;
	uint32_t	 hnext;		/* bucket chain */
	uint32_t	 prev, next;	/* LRU */
	uint32_t	 first;		/* block chain; 0: no answer yet */
	uint32_t	 nblocks;
	uint32_t	 key_len, vary_len, head_len, body_len;
	uint8_t		 nvary;
	uint8_t		 used;		/* in the index */
	uint16_t	 status;
	pid_t		 lock_pid;	/* 0: unlocked */
	uint32_t	 lock_seq;
	int64_t		 lock_since;	/* wall ms */
	int64_t		 failed_at;	/* last failed fill, wall ms */
	int64_t		 stored_at;
	int64_t		 asked_at;	/* its request went out */
	uint64_t	 lifetime_ms, initial_age_ms, swr_ms, sie_ms;
};

struct store_hdr {
	uint32_t		 magic;
	uint32_t		 nbuckets;	/* a power of two */
	uint32_t		 nentries, nblocks;
	size_t			 size;
	pthread_mutex_t		 lock;
	uint32_t		 free_entry, free_block, nfree_blocks;
	uint32_t		 lru_head, lru_tail;
	struct retired		 retired[RETIRE_MAX];	/* a ring */
	uint32_t		 retired_head, nretired;
	uint32_t		 seq;
	uint64_t		 entries, stored_bytes;
	_Atomic uint64_t	 hits, misses, stale, bypass, evictions;
	_Atomic uint64_t	 fills_failed;
	_Atomic uint64_t	 not_stored[3];	/* SC_NS_* */
	struct {
		_Atomic pid_t	 pid;
		_Atomic int64_t	 n;
	}			 waiting[WAIT_SLOTS];
	size_t			 off_buckets, off_entries, off_next, off_gen;
	size_t			 off_blocks;
};

static struct store_hdr	*sh;

#define BUCKETS()	((uint32_t *)((char *)sh + sh->off_buckets))
#define ENT(i)		(&((struct entry *)((char *)sh + sh->off_entries))[(i) - 1])
#define NEXTB(i)	(((uint32_t *)((char *)sh + sh->off_next))[(i) - 1])
#define BGEN(i)		(((_Atomic uint32_t *)((char *)sh + sh->off_gen))[(i) - 1])
#define BLK(i)		((char *)sh + sh->off_blocks + (size_t)((i) - 1) * BLOCK)

/* -- the segment ---------------------------------------------------------- */

static void
entry_clear(struct entry *e)
{
	memset(e, 0, sizeof(*e));
}

/* A coarse clock for retired chains (see chain_retire()). */
static int64_t
store_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Gives a chain's blocks back; its first block's generation moves on
 * first, so that a reader of the chain (store_ref) sees it went. */
static void
chain_free(uint32_t b, uint32_t nblocks)
{
	uint32_t n;

	if (b == 0)
		return;
	atomic_fetch_add(&BGEN(b), 1);
	while (b != 0) {
		n = NEXTB(b);
		NEXTB(b) = sh->free_block;
		sh->free_block = b;
		b = n;
	}
	sh->nfree_blocks += nblocks;
}

/* Frees retired chains older than RETIRE_MS (all of them: force). */
static void
chain_reclaim(bool force)
{
	int64_t now = store_now();

	while (sh->nretired > 0) {
		struct retired *r = &sh->retired[sh->retired_head];

		if (!force && now - r->at < RETIRE_MS)
			break;
		chain_free(r->first, r->nblocks);
		sh->retired_head = (sh->retired_head + 1) % RETIRE_MAX;
		sh->nretired--;
	}
}

/*
 * A replaced or purged answer's chain is not freed at once: a worker may
 * be sending it in place this very moment (cache.c reads large bodies
 * without the mutex).  It waits RETIRE_MS, much longer than a send,
 * as nginx's readers keep a cache file's old inode.
 */
static void
chain_retire(uint32_t first, uint32_t nblocks)
{
	struct retired *r;

	if (sh->nretired == RETIRE_MAX) {
		r = &sh->retired[sh->retired_head];
		chain_free(r->first, r->nblocks);
		sh->retired_head = (sh->retired_head + 1) % RETIRE_MAX;
		sh->nretired--;
	}
	r = &sh->retired[(sh->retired_head + sh->nretired) % RETIRE_MAX];
	r->first = first;
	r->nblocks = nblocks;
	r->at = store_now();
	sh->nretired++;
}

/* Every entry and block free, the index empty. */
static void
store_wipe(void)
{
	uint32_t i;

	memset(BUCKETS(), 0, sh->nbuckets * sizeof(uint32_t));
	for (i = 1; i <= sh->nentries; i++)
		entry_clear(ENT(i));
	for (i = 1; i <= sh->nentries; i++)
		ENT(i)->hnext = i < sh->nentries ? i + 1 : 0;
	for (i = 1; i <= sh->nblocks; i++)
		NEXTB(i) = i < sh->nblocks ? i + 1 : 0;
	for (i = 1; i <= sh->nblocks; i++)
		atomic_fetch_add(&BGEN(i), 1);	/* readers in flight */
	sh->nretired = sh->retired_head = 0;
	sh->free_entry = 1;
	sh->free_block = 1;
	sh->nfree_blocks = sh->nblocks;
	sh->lru_head = sh->lru_tail = 0;
	sh->entries = sh->stored_bytes = 0;
}

int
store_init(size_t memory)
{
	pthread_mutexattr_t ma;
	size_t nblocks = memory / (BLOCK + sizeof(struct entry) + 8), nb = 1;
	size_t off;
	void *p;

	if (sh != NULL)
		return 0;
	if (nblocks < 16)
		nblocks = 16;
	while (nb < nblocks)
		nb <<= 1;
	off = (sizeof(struct store_hdr) + 63) & ~(size_t)63;
	p = mmap(NULL, off + nb * 4 + nblocks * (sizeof(struct entry) + 8 +
	    BLOCK) + 128, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	    -1, 0);
	if (p == MAP_FAILED)
		return -1;
	sh = p;
	sh->size = off + nb * 4 + nblocks * (sizeof(struct entry) + 8 +
	    BLOCK) + 128;
	sh->nbuckets = (uint32_t)nb;
	sh->nentries = sh->nblocks = (uint32_t)nblocks;
	sh->off_buckets = off;
	sh->off_entries = (off + nb * 4 + 63) & ~(size_t)63;
	sh->off_next = sh->off_entries + nblocks * sizeof(struct entry);
	sh->off_gen = sh->off_next + nblocks * 4;
	sh->off_blocks = (sh->off_gen + nblocks * 4 + 63) & ~(size_t)63;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&sh->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	store_wipe();
	sh->magic = STORE_MAGIC;
	return 0;
}

size_t
store_size(void)
{
	return sh != NULL ? sh->size : 0;
}

static void
store_lock(void)
{
	if (pthread_mutex_lock(&sh->lock) == EOWNERDEAD) {
		/* A worker died in here: what it was changing is unknown. */
		log_warnx("cache: a worker died holding the cache lock; the "
		    "cache is emptied");
		store_wipe();
		pthread_mutex_consistent(&sh->lock);
	}
}

static void
store_unlock(void)
{
	pthread_mutex_unlock(&sh->lock);
}

/* -- entries ---------------------------------------------------------------- */

static uint64_t
store_hash(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;	/* FNV-1a */

	while (n-- > 0)
		h = (h ^ (unsigned char)*p++) * 1099511628211ull;
	return h;
}

static void
lru_unlink(uint32_t i)
{
	struct entry *e = ENT(i);

	if (e->prev)
		ENT(e->prev)->next = e->next;
	else
		sh->lru_head = e->next;
	if (e->next)
		ENT(e->next)->prev = e->prev;
	else
		sh->lru_tail = e->prev;
	e->prev = e->next = 0;
}

static void
lru_front(uint32_t i)
{
	struct entry *e = ENT(i);

	if (sh->lru_head == i)
		return;
	if (e->prev || e->next || sh->lru_tail == i)
		lru_unlink(i);
	e->next = sh->lru_head;
	e->prev = 0;
	if (sh->lru_head)
		ENT(sh->lru_head)->prev = i;
	sh->lru_head = i;
	if (!sh->lru_tail)
		sh->lru_tail = i;
}

/* Gives an entry's blocks back (it keeps its place in the index). */
static void
entry_empty(struct entry *e, bool retire)
{
	if (e->first != 0) {
		sh->stored_bytes -= (uint64_t)e->nblocks * BLOCK;
		sh->entries--;
		if (retire)
			chain_retire(e->first, e->nblocks);
		else
			chain_free(e->first, e->nblocks);
	}
	e->first = 0;
	e->nblocks = 0;
}

/* Takes entry i out of the index and frees it. */
static void
entry_free(uint32_t i, bool retire)
{
	struct entry *e = ENT(i);
	uint32_t *b = &BUCKETS()[e->hash & (sh->nbuckets - 1)];

	entry_empty(e, retire);
	while (*b != 0 && *b != i)
		b = &ENT(*b)->hnext;
	if (*b == i)
		*b = e->hnext;
	lru_unlink(i);
	entry_clear(e);
	e->hnext = sh->free_entry;
	sh->free_entry = i;
}

/* Reads n bytes at offset off of entry e's data into dst. */
static void
entry_read(const struct entry *e, size_t off, char *dst, size_t n)
{
	uint32_t b = e->first;
	size_t k;

	while (b != 0 && off >= BLOCK) {
		b = NEXTB(b);
		off -= BLOCK;
	}
	while (b != 0 && n > 0) {
		k = BLOCK - off < n ? BLOCK - off : n;
		memcpy(dst, BLK(b) + off, k);
		dst += k;
		n -= k;
		off = 0;
		b = NEXTB(b);
	}
}

/* Whether entry e's data at off equals p[0..n). */
static bool
entry_equal(const struct entry *e, size_t off, const char *p, size_t n)
{
	char tmp[256];
	size_t k;

	while (n > 0) {
		k = n < sizeof(tmp) ? n : sizeof(tmp);
		entry_read(e, off, tmp, k);
		if (memcmp(tmp, p, k) != 0)
			return false;
		off += k;
		p += k;
		n -= k;
	}
	return true;
}

static uint32_t
entry_find(const char *key, size_t len, uint64_t h)
{
	uint32_t i = BUCKETS()[h & (sh->nbuckets - 1)];

	for (; i != 0; i = ENT(i)->hnext) {
		struct entry *e = ENT(i);

		if (e->hash != h || e->key_len != len)
			continue;
		/* An entry without an answer yet (a fill's lock) has its
		 * hash only: collisions of 64 bits are not worth a copy. */
		if (e->first == 0 || entry_equal(e, 0, key, len))
			return i;
	}
	return 0;
}

static uint32_t
entry_new(uint64_t h, size_t key_len)
{
	uint32_t i = sh->free_entry, *b;
	struct entry *e;

	if (i == 0)
		return 0;
	e = ENT(i);
	sh->free_entry = e->hnext;
	entry_clear(e);
	e->hash = h;
	e->key_len = (uint32_t)key_len;
	e->used = 1;
	b = &BUCKETS()[h & (sh->nbuckets - 1)];
	e->hnext = *b;
	*b = i;
	lru_front(i);
	return i;
}

/* Whether entry e's lock is held: by a live process, for no longer
 * than timeout. */
static bool
lock_alive(const struct entry *e, int64_t now, uint64_t timeout)
{
	if (e->lock_pid == 0)
		return false;
	if (now - e->lock_since > (int64_t)timeout)
		return false;
	return e->lock_pid == getpid() || kill(e->lock_pid, 0) == 0 ||
	    errno != ESRCH;
}

/* Frees the least recently used entries (not keep, and no lock held on
 * them at q's time: a lock whose owner died or timed out pins nothing)
 * until want blocks are free.  False if that cannot be done. */
static bool
store_room(uint32_t want, uint32_t keep, const struct store_req *q)
{
	uint32_t i = sh->lru_tail, prev;

	/* Retired chains go before any live answer does. */
	chain_reclaim(sh->nfree_blocks < want);
	while (sh->nfree_blocks < want && i != 0) {
		prev = ENT(i)->prev;
		if (i != keep && !lock_alive(ENT(i), q->now_ms,
		    q->lock_timeout_ms)) {
			entry_free(i, false);
			atomic_fetch_add(&sh->evictions, 1);
		}
		i = prev;
	}
	return sh->nfree_blocks >= want;
}

/* Appends p[0..n) to the chain being written: *b is its last block,
 * *off the bytes used in it. */
static void
chain_write(uint32_t *b, size_t *off, const char *p, size_t n)
{
	size_t k;

	while (n > 0) {
		if (*off == BLOCK) {
			*b = NEXTB(*b);
			*off = 0;
		}
		k = BLOCK - *off < n ? BLOCK - *off : n;
		memcpy(BLK(*b) + *off, p, k);
		*off += k;
		p += k;
		n -= k;
	}
}

/* -- Vary -------------------------------------------------------------- */

struct vary_build {
	char		 buf[STORE_KEY_MAX];
	size_t		 len;
	int		 n;
	bool		 over;
	store_header_fn	 header;
	void		*arg;
};

static void
vary_add(void *arg, const char *name, size_t nlen)
{
	struct vary_build *v = arg;
	size_t vlen = 0;
	const char *val = v->header(v->arg, name, nlen, &vlen);

	if (val == NULL)
		vlen = 0;
	if (v->len + nlen + vlen + 2 > sizeof(v->buf)) {
		v->over = true;
		return;
	}
	memcpy(v->buf + v->len, name, nlen);
	v->buf[v->len + nlen] = '\0';
	v->len += nlen + 1;
	if (vlen > 0)
		memcpy(v->buf + v->len, val, vlen);
	v->buf[v->len + vlen] = '\0';
	v->len += vlen + 1;
	v->n++;
}

/* Whether the request's values of the stored entry's Vary names are
 * those it was stored for. */
static bool
vary_matches(const struct entry *e, const struct store_req *q)
{
	char names[STORE_KEY_MAX];
	size_t off = 0, vlen, nlen;
	const char *name, *val, *want;

	if (e->nvary == 0)
		return true;
	entry_read(e, e->key_len, names, e->vary_len);
	while (off < e->vary_len) {
		name = names + off;
		nlen = strlen(name);
		want = name + nlen + 1;
		off += nlen + 1 + strlen(want) + 1;
		val = q->header(q->header_arg, name, nlen, &vlen);
		if (val == NULL)
			vlen = 0;
		/* No memcmp() of val NULL, even for 0 bytes. */
		if (vlen != strlen(want) || (vlen > 0 &&
		    memcmp(val, want, vlen) != 0))
			return false;
	}
	return true;
}

/* -- the operations --------------------------------------------------------- */

/* How old entry e's answer is at now (RFC 9111 4.2.3). */
static uint64_t
entry_age(const struct entry *e, int64_t now)
{
	return e->initial_age_ms + (uint64_t)(now > e->stored_at ?
	    now - e->stored_at : 0);
}

/* Frees the least recently used entry that no fill holds (at q's time,
 * as in store_room()). */
static void
store_evict_one(const struct store_req *q)
{
	uint32_t i;

	for (i = sh->lru_tail; i != 0; i = ENT(i)->prev)
		if (!lock_alive(ENT(i), q->now_ms, q->lock_timeout_ms)) {
			entry_free(i, false);
			atomic_fetch_add(&sh->evictions, 1);
			return;
		}
}

static void
lock_take(struct entry *e, int64_t now, struct store_ticket *t,
    uint32_t i)
{
	e->lock_pid = getpid();
	e->lock_since = now;
	e->lock_seq = ++sh->seq;
	t->entry = i;
	t->seq = e->lock_seq;
}

static void
hit_copy(const struct entry *e, struct buf *out, struct store_hit *hit,
    uint64_t age, bool by_ref)
{
	size_t n = e->head_len + e->body_len;

	hit->by_ref = by_ref && e->body_len >= STORE_REF_MIN;
	if (hit->by_ref) {
		hit->ref.entry = (uint32_t)(e - ENT(1)) + 1;
		hit->ref.version = atomic_load(&BGEN(e->first));
		hit->ref.first = e->first;
		hit->ref.off = e->key_len + e->vary_len + e->head_len;
		hit->ref.len = e->body_len;
		n = e->head_len;		/* the body stays */
	}
	buf_reset(out);
	if (buf_reserve(out, n) == -1) {
		hit->head_len = hit->body_len = 0;
		return;
	}
	entry_read(e, e->key_len + e->vary_len, out->data, n);
	out->len = n;
	hit->status = e->status;
	hit->age_ms = age;
	hit->head_len = e->head_len;
	hit->body_len = e->body_len;
}

enum store_look
store_lookup(const struct store_req *q, struct buf *out,
    struct store_hit *hit, struct store_ticket *t)
{
	uint64_t h = store_hash(q->key, q->key_len), age;
	enum store_look rc;
	struct entry *e;
	bool locked, fresh, usable;
	uint32_t i;

	if (sh == NULL)
		return SL_NONE;
	store_lock();
	hit->status = 0;
	if ((i = entry_find(q->key, q->key_len, h)) == 0) {
		if (sh->free_entry == 0)
			store_evict_one(q);
		if ((i = entry_new(h, q->key_len)) == 0) {
			store_unlock();
			return SL_NONE;
		}
		lock_take(ENT(i), q->now_ms, t, i);
		store_unlock();
		return SL_FILL;
	}
	e = ENT(i);
	locked = lock_alive(e, q->now_ms, q->lock_timeout_ms);
	usable = e->first != 0 && vary_matches(e, q);
	age = entry_age(e, q->now_ms);
	fresh = usable && !q->revalidate && (age < e->lifetime_ms ||
	    (q->stored_since_ms != 0 && e->stored_at >= q->stored_since_ms));
	if (fresh) {
		hit_copy(e, out, hit, age, q->body_by_ref);
		hit->stale = false;
		lru_front(i);
		store_unlock();
		return SL_HIT;
	}
	/* Stale, or none: serve stale while refreshing, within its
	 * windows; else one fetch for all, the others waiting. */
	if (usable && !q->revalidate && (age < e->lifetime_ms + e->swr_ms ||
	    (age < e->lifetime_ms + e->sie_ms &&
	    q->now_ms - e->failed_at < FAILED_STALE_MS))) {
		hit_copy(e, out, hit, age, q->body_by_ref);
		hit->stale = true;
		lru_front(i);
		rc = SL_STALE;
		if (!locked && age < e->lifetime_ms + e->swr_ms) {
			lock_take(e, q->now_ms, t, i);
			rc = SL_STALE_REFRESH;
		}
		store_unlock();
		return rc;
	}
	if (locked) {
		t->entry = i;
		t->seq = e->lock_seq;
		store_unlock();
		return SL_WAIT;
	}
	/* The stale answer, for stale-if-error should the fill fail. */
	if (usable && age < e->lifetime_ms + e->sie_ms) {
		hit_copy(e, out, hit, age, false);
		hit->stale = true;
	}
	lock_take(e, q->now_ms, t, i);
	store_unlock();
	return SL_FILL;
}

int
store_body_iov(const struct store_ref *r, size_t from, struct iovec *iov,
    int max, size_t *bytes)
{
	size_t off = r->off + from, left, k;
	uint32_t b = r->first, hops = 0;
	int n = 0;

	*bytes = 0;
	if (sh == NULL || from >= r->len)
		return 0;
	left = r->len - from;
	/* The chain may be rewritten under us: every block number is
	 * checked, and the walk bounded; a torn read is caught later. */
	while (off >= BLOCK && b >= 1 && b <= sh->nblocks &&
	    hops++ < sh->nblocks) {
		b = NEXTB(b);
		off -= BLOCK;
	}
	while (left > 0 && n < max && b >= 1 && b <= sh->nblocks &&
	    hops++ < sh->nblocks) {
		k = BLOCK - off < left ? BLOCK - off : left;
		if (n > 0 && (char *)iov[n - 1].iov_base +
		    iov[n - 1].iov_len == BLK(b) + off)
			iov[n - 1].iov_len += k;	/* the next block
							 * follows on */
		else {
			iov[n].iov_base = BLK(b) + off;
			iov[n].iov_len = k;
			n++;
		}
		*bytes += k;
		left -= k;
		off = 0;
		b = NEXTB(b);
	}
	return n;
}

bool
store_ref_intact(const struct store_ref *r)
{
	if (sh == NULL || r->entry == 0 || r->entry > sh->nentries)
		return false;
	atomic_thread_fence(memory_order_acquire);
	return r->first >= 1 && r->first <= sh->nblocks &&
	    atomic_load(&BGEN(r->first)) == r->version;
}

bool
store_wait_over(const struct store_ticket *t, int64_t now_ms,
    uint64_t lock_timeout_ms)
{
	const struct entry *e;
	bool over;

	if (sh == NULL || t->entry == 0 || t->entry > sh->nentries)
		return true;
	store_lock();
	e = ENT(t->entry);
	over = e->lock_seq != t->seq || !lock_alive(e, now_ms,
	    lock_timeout_ms);
	store_unlock();
	return over;
}

/* Whether t still holds entry i's lock. */
static bool
ticket_holds(const struct store_ticket *t)
{
	const struct entry *e = ENT(t->entry);

	return t->entry != 0 && t->entry <= sh->nentries && e->used &&
	    e->lock_pid == getpid() && e->lock_seq == t->seq;
}

/* Writes p's answer into entry i, which has no blocks: -1 if no room. */
static int
entry_store(uint32_t i, const struct store_req *q,
    const struct store_put *p, const struct vary_build *v)
{
	struct entry *e = ENT(i);
	size_t total = q->key_len + v->len + p->head_len + p->body_len, off;
	uint32_t need = (uint32_t)((total + BLOCK - 1) / BLOCK), b, k;

	if (need == 0)
		need = 1;
	if (need > sh->nblocks / 2 || !store_room(need, i, q))
		return -1;
	e->first = b = sh->free_block;
	for (k = 1; k < need; k++)
		b = NEXTB(b);
	sh->free_block = NEXTB(b);
	NEXTB(b) = 0;
	sh->nfree_blocks -= need;
	e->nblocks = need;
	b = e->first;
	off = 0;
	chain_write(&b, &off, q->key, q->key_len);
	chain_write(&b, &off, v->buf, v->len);
	chain_write(&b, &off, p->head, p->head_len);
	chain_write(&b, &off, p->body, p->body_len);
	e->vary_len = (uint32_t)v->len;
	e->nvary = (uint8_t)v->n;
	e->head_len = (uint32_t)p->head_len;
	e->body_len = (uint32_t)p->body_len;
	e->status = (uint16_t)p->status;
	e->stored_at = p->stored_at_ms;
	e->asked_at = p->asked_at_ms;
	e->lifetime_ms = p->lifetime_ms;
	e->initial_age_ms = p->initial_age_ms;
	e->swr_ms = p->swr_ms;
	e->sie_ms = p->sie_ms;
	e->failed_at = 0;
	sh->entries++;
	sh->stored_bytes += (uint64_t)need * BLOCK;
	return 0;
}

int
store_fill(const struct store_req *q, const struct store_ticket *t,
    const struct store_put *p)
{
	static struct vary_build v;
	uint64_t h = store_hash(q->key, q->key_len);
	struct entry *e;
	uint32_t i;
	bool held;
	int rc = -1;

	if (sh == NULL)
		return -1;
	v.len = 0;
	v.n = 0;
	v.over = false;
	v.header = q->header;
	v.arg = q->header_arg;
	if (p->vary != NULL && (policy_vary_each(p->vary, p->vary_len,
	    STORE_VARY_MAX, vary_add, &v) < 0 || v.over)) {
		store_release(t, 0);
		atomic_fetch_add(&sh->not_stored[SC_NS_VARY - SC_NS_POLICY], 1);
		return -1;
	}
	store_lock();
	if ((held = ticket_holds(t)))
		i = t->entry;
	else if ((i = entry_find(q->key, q->key_len, h)) != 0) {
		/* Our lock timed out and another took the key: its answer
		 * (stored or coming) was asked for after ours, unless it
		 * was stored before we asked. */
		e = ENT(i);
		if (lock_alive(e, q->now_ms, q->lock_timeout_ms) ||
		    (e->first != 0 && e->asked_at >= p->asked_at_ms)) {
			store_unlock();
			return -1;
		}
	} else {
		if (sh->free_entry == 0)
			store_evict_one(q);
		i = entry_new(h, q->key_len);
	}
	if (i != 0) {
		entry_empty(ENT(i), true);
		ENT(i)->key_len = (uint32_t)q->key_len;
		rc = entry_store(i, q, p, &v);
		if (held)
			ENT(i)->lock_pid = 0;
		if (rc == -1) {
			entry_free(i, false);
			atomic_fetch_add(&sh->not_stored[SC_NS_TOO_BIG -
			    SC_NS_POLICY], 1);
		}
		else
			lru_front(i);
	}
	store_unlock();
	return rc;
}

void
store_release(const struct store_ticket *t, int64_t now_ms)
{
	struct entry *e;

	if (sh == NULL)
		return;
	store_lock();
	if (ticket_holds(t)) {
		e = ENT(t->entry);
		e->lock_pid = 0;
		if (e->first == 0)
			entry_free(t->entry, false);
		else if (now_ms != 0)
			e->failed_at = now_ms;
	}
	store_unlock();
	if (now_ms != 0)
		atomic_fetch_add(&sh->fills_failed, 1);
}

void
store_invalidate(const char *key, size_t len)
{
	uint32_t i;

	if (sh == NULL)
		return;
	store_lock();
	if ((i = entry_find(key, len, store_hash(key, len))) != 0) {
		if (ENT(i)->lock_pid != 0)
			entry_empty(ENT(i), true);	/* its fill stores anew */
		else
			entry_free(i, true);
	}
	store_unlock();
}

size_t
store_purge(const char *prefix, size_t len)
{
	size_t n = 0;
	uint32_t i;

	if (sh == NULL)
		return 0;
	store_lock();
	for (i = 1; i <= sh->nentries; i++) {
		struct entry *e = ENT(i);

		if (!e->used || e->first == 0 || e->key_len < len ||
		    !entry_equal(e, 0, prefix, len))
			continue;
		if (e->lock_pid != 0) {
			entry_empty(e, true);		/* its fill stores anew */
			n++;
			continue;
		}
		entry_free(i, true);
		n++;
	}
	store_unlock();
	return n;
}

/* This worker's waiter count: a slot of its own, taken from a dead
 * worker's if need be (so that its count does not outlive it). */
static void
store_waiting(int64_t n)
{
	static int mine = -1;
	pid_t me = getpid(), p;
	int i;

	if (mine >= 0 && atomic_load(&sh->waiting[mine].pid) != me)
		mine = -1;
	for (i = 0; mine < 0 && i < WAIT_SLOTS; i++) {
		p = atomic_load(&sh->waiting[i].pid);
		if (p == me || ((p == 0 || (kill(p, 0) == -1 &&
		    errno == ESRCH)) && atomic_compare_exchange_strong(
		    &sh->waiting[i].pid, &p, me))) {
			if (p != me)
				atomic_store(&sh->waiting[i].n, 0);
			mine = i;
		}
	}
	if (mine >= 0)
		atomic_fetch_add(&sh->waiting[mine].n, n);
}

void
store_count(int what, int64_t n)
{
	if (sh == NULL)
		return;
	switch (what) {
	case SC_HIT:
		atomic_fetch_add(&sh->hits, (uint64_t)n);
		break;
	case SC_MISS:
		atomic_fetch_add(&sh->misses, (uint64_t)n);
		break;
	case SC_STALE:
		atomic_fetch_add(&sh->stale, (uint64_t)n);
		break;
	case SC_BYPASS:
		atomic_fetch_add(&sh->bypass, (uint64_t)n);
		break;
	case SC_WAITERS:
		store_waiting(n);
		break;
	case SC_NS_POLICY:
	case SC_NS_TOO_BIG:
	case SC_NS_VARY:
		atomic_fetch_add(&sh->not_stored[what - SC_NS_POLICY],
		    (uint64_t)n);
		break;
	}
}

void
store_stats(struct store_stats *st)
{
	int i;

	memset(st, 0, sizeof(*st));
	if (sh == NULL)
		return;
	st->hits = atomic_load(&sh->hits);
	st->misses = atomic_load(&sh->misses);
	st->stale = atomic_load(&sh->stale);
	st->bypass = atomic_load(&sh->bypass);
	st->evictions = atomic_load(&sh->evictions);
	st->fills_failed = atomic_load(&sh->fills_failed);
	st->not_stored_policy = atomic_load(&sh->not_stored[0]);
	st->not_stored_too_big = atomic_load(&sh->not_stored[1]);
	st->not_stored_vary = atomic_load(&sh->not_stored[2]);
	for (i = 0; i < WAIT_SLOTS; i++) {
		pid_t p = atomic_load(&sh->waiting[i].pid);

		if (p != 0 && (kill(p, 0) == 0 || errno != ESRCH))
			st->waiters += atomic_load(&sh->waiting[i].n);
	}
	store_lock();
	st->entries = sh->entries;
	st->stored_bytes = sh->stored_bytes;
	st->capacity = (uint64_t)sh->nblocks * BLOCK;
	store_unlock();
}
