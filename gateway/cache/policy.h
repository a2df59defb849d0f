/*
 * The rules of a shared HTTP cache (RFC 9111), as pure functions: what
 * may be stored, for how long it is fresh, how old a stored answer is,
 * whether a conditional request is answered 304.  No I/O, no clock of
 * its own (the caller passes now), no allocation: gateway/cache/cache.c
 * applies them, tests/unit/test_cache_policy.c checks them against the
 * RFC's examples.
 *
 * Times are milliseconds since the Unix epoch (now, stored_at) or
 * milliseconds of duration; HTTP's own are whole seconds.
 */
#ifndef AGATE_CACHE_POLICY_H
#define AGATE_CACHE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Cache-Control directives (RFC 9111 section 5.2); -1: absent.  A
 * directive given twice keeps its first value; a malformed delta-seconds
 * makes the directive absent (so a later one counts), except that a
 * malformed max-age counts as max-age=0: stale in a response, as section
 * 4.2.1 says, and "revalidate" in a request, the cautious reading (the
 * parser cannot tell which it reads).  Delta-seconds over 2^31 are 2^31
 * (1.2.2). */
struct cc {
	bool	 no_store;
	bool	 no_cache;		/* without field names */
	bool	 no_cache_fields;	/* no-cache="names" */
	bool	 private_;		/* without field names */
	bool	 private_fields;	/* private="names" */
	bool	 public_;
	bool	 must_revalidate;
	bool	 proxy_revalidate;
	bool	 only_if_cached;
	int64_t	 max_age;		/* seconds */
	int64_t	 s_maxage;
	int64_t	 max_stale;		/* request; INT64_MAX: any */
	int64_t	 min_fresh;		/* request */
	int64_t	 stale_while_revalidate;	/* RFC 5861 */
	int64_t	 stale_if_error;
};

/* Resets cc to "no directives". */
void	policy_cc_init(struct cc *);
/* Adds the directives of one Cache-Control field value (a list; call
 * once per field). */
void	policy_cc_parse(struct cc *, const char *value, size_t len);

/*
 * An HTTP-date (RFC 9110 section 5.6.7: IMF-fixdate, and the obsolete
 * RFC 850 and asctime forms) in seconds since the epoch, or -1 if it is
 * not one.  Case-sensitive, as the RFC says; a date before 1970 is 0.
 * RFC 850's two-digit years: 70-99 are 19xx, 00-69 20xx (the RFC reads
 * them against the clock, which this module does not have).
 */
int64_t	policy_http_date(const char *s, size_t len);
/* secs as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes and
 * a NUL) into out, which has room for 30; secs outside years 1970 to
 * 9999 are clamped to them. */
void	policy_format_date(int64_t secs, char out[30]);

/* What a request asks of the cache. */
enum policy_req {
	PR_LOOKUP,		/* may be answered from the cache */
	PR_REVALIDATE,		/* no-cache or max-age=0: go to the upstream,
				 * and store what it answers */
	PR_BYPASS		/* not a GET or HEAD, or no-store: neither
				 * answered from nor stored */
};

/* method, and the request's Cache-Control (and Pragma: no-cache, when
 * it has no Cache-Control) values joined with ", " (NULL: none). */
enum policy_req policy_request(const char *method, size_t method_len,
	    const char *cache_control, size_t cc_len, const char *pragma,
	    size_t pragma_len);

/* An upstream answer, as the cache sees it. */
struct policy_answer {
	int		 status;
	/* Its header fields: "Name: value\r\n" lines (names any case). */
	const char	*fields;
	size_t		 fields_len;
	bool		 req_authorization;	/* the request had one */
	int64_t		 request_time;		/* ms: the request went out */
	int64_t		 response_time;		/* ms: the answer came */
	uint64_t	 ttl_ms;		/* route's ttl: the heuristic
						 * when the answer says nothing */
};

struct policy_store {
	bool		 storable;
	const char	*why;		/* when not: a short reason
					 * ("no-store", "private",
					 * "set-cookie", "authorization",
					 * "status", "vary *", "no-cache",
					 * "expired", "malformed": a
					 * line of fields that is not
					 * one); NULL when storable */
	uint64_t	 lifetime_ms;	/* freshness lifetime (4.2.1) */
	uint64_t	 initial_age_ms;	/* corrected_initial_age (4.2.3) */
	int64_t		 swr_s;		/* the answer's stale-while-
					 * revalidate, or -1 */
	int64_t		 sie_s;		/* its stale-if-error, or -1 */
	bool		 no_stale;	/* must-revalidate, proxy-revalidate
					 * (or s-maxage): never served stale */
};

/*
 * Whether an answer may be stored by a shared cache, and its freshness.
 * Stored: status 200, 203, 204, 300, 301, 404 or 410; no no-store, no
 * private, no no-cache (with field names or without: a cache that keeps
 * whole answers cannot leave the named fields out), no Set-Cookie, no
 * "Vary: *"; with Authorization on the request only if public, s-maxage
 * or must-revalidate allows it (3.5).  Lifetime: s-maxage, else max-age,
 * else Expires - Date (Date absent: response_time; an Expires that is not
 * a date, such as "0", is in the past), else ttl_ms; 0 (or Expires in the
 * past) is not stored ("expired") unless stale_while_revalidate or
 * stale_if_error could still serve it: more than 0 seconds of either,
 * and no no_stale.  Every member is filled in, storable or not.
 */
void	policy_store(const struct policy_answer *, struct policy_store *);

/* How old a stored answer is now (4.2.3): its initial age plus the time
 * it has been stored. */
uint64_t policy_age_ms(uint64_t initial_age_ms, int64_t stored_at_ms,
	    int64_t now_ms);

/*
 * Whether a conditional GET/HEAD is answered 304 by a stored answer
 * whose ETag, Last-Modified and Date (NULL: none) are given:
 * If-None-Match (weak comparison, lists; "*" matches any stored answer,
 * with an ETag or without, RFC 9110 13.1.2) decides when present; else
 * If-Modified-Since (an HTTP-date no earlier than Last-Modified, or than
 * the stored Date when there is no Last-Modified).  Anything malformed
 * means no 304.
 */
bool	policy_not_modified(const char *if_none_match, size_t inm_len,
	    const char *if_modified_since, size_t ims_len,
	    const char *etag, size_t etag_len, const char *last_modified,
	    size_t lm_len, const char *date, size_t date_len);

/*
 * Calls fn for each field name of a Vary value (lower-cased into a
 * buffer of its own, at most 64 bytes; longer names make it fail), in
 * order; empty members are skipped.  Returns the count, or -1 for "*", a
 * name too long, a member that is not a field name, or more than max
 * names; fn is not called at all then.
 */
int	policy_vary_each(const char *value, size_t len, size_t max,
	    void (*fn)(void *arg, const char *name, size_t nlen), void *arg);

#endif
