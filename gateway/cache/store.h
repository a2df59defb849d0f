/*
 * The cache's shared memory (ARCHITECTURE.md "Shared memory"): one
 * MAP_SHARED segment the supervisor makes before it forks the first
 * workers and keeps across reloads, so that every worker of the machine
 * reads and fills the same entries.
 *
 * Inside: a header (a robust process-shared mutex, counters), a hash
 * index of entries, an LRU list, and the data area cut into blocks that
 * an entry chains.  Every operation takes the mutex for a short copy
 * and nothing else: a fill gathers its answer in the worker's own
 * memory and stores it whole at the end, a hit is copied out whole.
 * A worker that dies holding the mutex leaves the next taker to wipe
 * the store (EOWNERDEAD): it is a cache, and it stays consistent.
 *
 * An entry is also the key's fill lock: the first miss takes it (its
 * pid and a ticket), the others wait on it (cache.c polls) until it is
 * filled, let go, older than lock_timeout, or its owner is dead.
 */
#ifndef AGATE_CACHE_STORE_H
#define AGATE_CACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/uio.h>

#include "lib/buf.h"

#define STORE_KEY_MAX	2048	/* a longer key is not cached */
#define STORE_VARY_MAX	8	/* a Vary of more names is not cached */

/* Reads a request header for Vary: its value, or NULL. */
typedef const char *(*store_header_fn)(void *arg, const char *name,
	    size_t nlen, size_t *vlen);

/* A request as the store sees it. */
struct store_req {
	const char	*key;
	size_t		 key_len;
	store_header_fn	 header;
	void		*header_arg;
	int64_t		 now_ms;	/* wall clock */
	uint64_t	 lock_timeout_ms;
	bool		 revalidate;	/* no-cache: do not answer from it */
	bool		 body_by_ref;	/* a large body of a HIT or STALE
					 * answer: by reference */
	int64_t		 stored_since_ms;	/* an answer stored since is
						 * served even if stale (the
						 * fill a request waited for);
						 * 0: none */
};

enum store_look {
	SL_HIT,			/* fresh: *out holds it */
	SL_STALE,		/* stale, within stale-while-revalidate (or
				 * stale-if-error after a failed fill) */
	SL_STALE_REFRESH,	/* the same, and the caller refreshes it:
				 * it holds the key's lock now */
	SL_FILL,		/* the caller fetches it: it holds the lock */
	SL_WAIT,		/* another fill is under way: wait */
	SL_NONE			/* no store (or no room to track a lock) */
};

/*
 * A large stored body left where it is (store_req.body_by_ref): read it
 * with store_body_iov(), then store_ref_intact() says whether what was
 * read is what was stored (a fill or an eviction may have reused its
 * blocks meanwhile: a seqlock on the entry).
 */
struct store_ref {
	uint32_t	 entry;
	uint32_t	 version;
	uint32_t	 first;		/* its first block */
	size_t		 off;		/* the body's offset in the data */
	size_t		 len;
};

/* Bodies this large are read in place when asked. */
#define STORE_REF_MIN	(16 * 1024)

/* What the store holds for a key, copied out. */
struct store_hit {
	int		 status;
	uint64_t	 age_ms;	/* RFC 9111 4.2.3, now */
	bool		 stale;
	/* Its header fields ("Name: value\r\n"...), then its body, in the
	 * caller's buf: data[0..head_len), data[head_len..head_len +
	 * body_len). */
	size_t		 head_len;
	size_t		 body_len;
	bool		 by_ref;	/* the body is in ref, not copied */
	struct store_ref ref;
};

/* A lock held, or waited on. */
struct store_ticket {
	uint32_t	 entry;
	uint32_t	 seq;		/* the lock's sequence number */
};

/* What a fill stores. */
struct store_put {
	int		 status;
	const char	*head;		/* fields, without X-Request-Id */
	size_t		 head_len;
	const char	*body;
	size_t		 body_len;
	const char	*vary;		/* the answer's Vary value, or NULL */
	size_t		 vary_len;
	int64_t		 stored_at_ms;	/* wall clock: the answer came */
	int64_t		 asked_at_ms;	/* and its request went out */
	uint64_t	 lifetime_ms;
	uint64_t	 initial_age_ms;
	uint64_t	 swr_ms;	/* stale-while-revalidate window */
	uint64_t	 sie_ms;	/* stale-if-error window */
};

struct store_stats {
	uint64_t	 hits, misses, stale, bypass;
	uint64_t	 evictions, fills_failed;
	uint64_t	 not_stored_policy, not_stored_too_big,
			 not_stored_vary;
	uint64_t	 entries, stored_bytes, capacity;
	int64_t		 waiters;
};

/* Makes the segment (the supervisor, before forking): 0, -1 (errno). */
int	store_init(size_t memory);
/* The segment's size (0: none). */
size_t	store_size(void);
/*
 * Looks up the key: copies a usable answer into out (HIT, STALE,
 * STALE_REFRESH), or takes the key's lock (FILL, STALE_REFRESH: t is
 * it), or says whom to wait for (WAIT: t).
 */
enum store_look store_lookup(const struct store_req *, struct buf *out,
	    struct store_hit *, struct store_ticket *t);
/* iovecs over bytes [from, ...) of a body by reference, at most max
 * of them: their count (0: none left, or the chain is gone), *bytes
 * their size.  Reads no lock: check store_ref_intact() after use. */
int	store_body_iov(const struct store_ref *, size_t from, struct iovec *,
	    int max, size_t *bytes);
bool	store_ref_intact(const struct store_ref *);
/* Whether a wait is over: the lock t is gone (filled, let go, timed
 * out or its owner dead). */
bool	store_wait_over(const struct store_ticket *, int64_t now_ms,
	    uint64_t lock_timeout_ms);
/* Stores an answer under the key (replacing what it held) and lets go
 * of t.  -1 if it cannot be stored (no room: too big). */
int	store_fill(const struct store_req *, const struct store_ticket *,
	    const struct store_put *);
/* Lets go of t without storing: the fill failed (its stale answer, if
 * any, is then served for stale-if-error). */
void	store_release(const struct store_ticket *, int64_t now_ms);
/* Removes the entry of exactly this key (an unsafe method went to its
 * URI). */
void	store_invalidate(const char *key, size_t len);
/* Removes every entry whose key's path starts with prefix; the count. */
size_t	store_purge(const char *prefix, size_t len);
/* Counters for /metrics; SC_WAITERS counts this worker's waiters, in
 * a slot of its own that a dead worker's successor takes over. */
void	store_count(int what, int64_t n);
void	store_stats(struct store_stats *);

enum {
	SC_HIT, SC_MISS, SC_STALE, SC_BYPASS, SC_WAITERS,
	/* Answers not stored, by why: */
	SC_NS_POLICY,		/* RFC 9111 forbids it (private, no-store...) */
	SC_NS_TOO_BIG,		/* over max_entry, or half the store */
	SC_NS_VARY,		/* Vary: * or too many names */
	SC_NKINDS
};

#endif
