/*
 * The rules of a shared HTTP cache (RFC 9111, with RFC 5861's
 * stale-while-revalidate and stale-if-error), read straight off header
 * values: Cache-Control and the lists like it, what a request asks of the
 * cache, whether an answer may be stored and for how long it is fresh,
 * how old it is, conditional requests, Vary.  HTTP-dates are
 * policy_date.c's.  Nothing here keeps state, reads the clock or
 * allocates: gateway/cache/cache.c owns the entries and the time, and
 * asks.
 *
 * Values come with their lengths and are not NUL-terminated (they point
 * into read buffers), so every scan stops at value + len.  Upstreams and
 * clients send all kinds of malformed values; where one is, the rule
 * taken is the cautious one (stale, not stored, no 304), as RFC 9111
 * section 4.2.1 advises for bad freshness information.
 */
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "gateway/cache/policy.h"
#include "gateway/gateway.h"		/* headers_next_field() */
#include "worker/http_parse.h"		/* http_token_eq() */

/* RFC 9111 section 1.2.2: a delta-seconds too big is 2^31. */
#define DELTA_MAX		2147483648LL
#define VARY_NAME_MAX		64

/* -- lists: Cache-Control, Pragma, Vary, Age --------------------------- */

/* One member of a list: token [ "=" ( token / quoted-string ) ]. */
struct member {
	const char	*name;
	size_t		 nlen;
	const char	*arg;		/* inside the quotes, if quoted */
	size_t		 alen;
	bool		 has_arg;
	bool		 bad;		/* an open quote, or bytes after it */
};

static bool
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 9110 section 5.6.2. */
static bool
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static const char *
skip_token(const char *p, const char *end)
{
	while (p < end && is_tchar((unsigned char)*p))
		p++;
	return p;
}

/* Past the quoted-string whose '"' is at p, or NULL if it never ends. */
static const char *
skip_quoted(const char *p, const char *end)
{
	for (p++; p < end; p++) {
		if (*p == '\\') {
			if (++p == end)
				return NULL;
		} else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

/* To the next comma that is not inside a quoted-string. */
static const char *
skip_member(const char *p, const char *end)
{
	while (p < end && *p != ',') {
		if (*p != '"')
			p++;
		else if ((p = skip_quoted(p, end)) == NULL)
			return end;
	}
	return p;
}

/* The argument after '=' at p, into m; returns where it ends. */
static const char *
member_arg(const char *p, const char *end, struct member *m)
{
	const char *q;

	m->has_arg = true;
	if (p == end || *p != '"') {
		m->arg = p;
		p = skip_token(p, end);
		m->alen = (size_t)(p - m->arg);
		return p;
	}
	m->arg = p + 1;
	if ((q = skip_quoted(p, end)) == NULL) {
		/* An open quote swallows the rest: a comma inside it does
		 * not start a directive that the sender never wrote. */
		m->alen = (size_t)(end - m->arg);
		m->bad = true;
		return end;
	}
	m->alen = (size_t)(q - 1 - m->arg);
	return q;
}

/*
 * The next member of the list at *pp; false when only commas and
 * whitespace are left.  A member that breaks the syntax is still
 * returned, marked bad, so that the caller can be cautious about it;
 * the next one starts after the next comma outside quotes.
 */
static bool
member_next(const char **pp, const char *end, struct member *m)
{
	const char *p = *pp;

	while (p < end && (is_ows(*p) || *p == ','))
		p++;
	*pp = p;
	if (p == end)
		return false;
	memset(m, 0, sizeof(*m));
	m->name = p;
	p = skip_token(p, end);
	m->nlen = (size_t)(p - m->name);
	while (p < end && is_ows(*p))
		p++;
	if (p < end && *p == '=') {
		for (p++; p < end && is_ows(*p); p++)
			;
		p = member_arg(p, end, m);
		while (p < end && is_ows(*p))
			p++;
	}
	if (m->nlen == 0 || (p < end && *p != ',')) {
		m->bad = true;
		p = skip_member(p, end);
	}
	*pp = p;
	return true;
}

/* delta-seconds (1.2.2): digits only, clamped to 2^31; -1 if not. */
static int64_t
delta_seconds(const char *s, size_t len)
{
	int64_t v = 0;
	size_t i;

	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v < DELTA_MAX)
			v = v * 10 + (s[i] - '0');
	}
	return v < DELTA_MAX ? v : DELTA_MAX;
}

/* -- Cache-Control ----------------------------------------------------- */

enum cc_kind {
	CC_FLAG,		/* an argument is ignored */
	CC_LISTED,		/* no-cache, private: an argument names fields */
	CC_DELTA,		/* malformed: absent */
	CC_MAX_AGE,		/* malformed: 0, stale (4.2.1) */
	CC_MAX_STALE		/* no argument: any staleness */
};

static const struct cc_directive {
	const char	*name;
	enum cc_kind	 kind;
	size_t		 off;		/* the bool or int64_t in struct cc */
	size_t		 off_fields;	/* CC_LISTED: with field names */
} cc_directives[] = {
	{ "no-store", CC_FLAG, offsetof(struct cc, no_store), 0 },
	{ "no-cache", CC_LISTED, offsetof(struct cc, no_cache),
	    offsetof(struct cc, no_cache_fields) },
	{ "private", CC_LISTED, offsetof(struct cc, private_),
	    offsetof(struct cc, private_fields) },
	{ "public", CC_FLAG, offsetof(struct cc, public_), 0 },
	{ "must-revalidate", CC_FLAG, offsetof(struct cc, must_revalidate),
	    0 },
	{ "proxy-revalidate", CC_FLAG,
	    offsetof(struct cc, proxy_revalidate), 0 },
	{ "only-if-cached", CC_FLAG, offsetof(struct cc, only_if_cached), 0 },
	{ "max-age", CC_MAX_AGE, offsetof(struct cc, max_age), 0 },
	{ "s-maxage", CC_DELTA, offsetof(struct cc, s_maxage), 0 },
	{ "max-stale", CC_MAX_STALE, offsetof(struct cc, max_stale), 0 },
	{ "min-fresh", CC_DELTA, offsetof(struct cc, min_fresh), 0 },
	{ "stale-while-revalidate", CC_DELTA,
	    offsetof(struct cc, stale_while_revalidate), 0 },
	{ "stale-if-error", CC_DELTA, offsetof(struct cc, stale_if_error), 0 },
};

void
policy_cc_init(struct cc *cc)
{
	memset(cc, 0, sizeof(*cc));
	cc->max_age = cc->s_maxage = cc->max_stale = cc->min_fresh = -1;
	cc->stale_while_revalidate = cc->stale_if_error = -1;
}

/*
 * The argument forms of RFC 9111 section 5.2: a recipient takes a token
 * or a quoted-string for any directive ("max-age=\"5\"" is 5).  The
 * first occurrence of a directive counts (4.2.1 allows either that or
 * "stale"); a malformed one does not count, but for max-age.
 */
static void
cc_delta(struct cc *cc, const struct cc_directive *d, const struct member *m)
{
	int64_t *v = (int64_t *)(void *)((char *)cc + d->off), s;

	if (*v != -1)
		return;
	if (d->kind == CC_MAX_STALE && !m->has_arg && !m->bad) {
		*v = INT64_MAX;
		return;
	}
	s = m->bad ? -1 : delta_seconds(m->arg, m->alen);
	if (s == -1 && d->kind == CC_MAX_AGE)
		s = 0;
	*v = s;
}

/*
 * A no-cache or private with an argument (or a broken one) is the
 * qualified form, kept apart from the plain one: policy_store() refuses
 * both, because what it stores is the whole answer, named fields
 * included; RFC 9111 5.2.2.4 and 5.2.2.7 note that most caches do the
 * same.
 */
static void
cc_apply(struct cc *cc, const struct member *m)
{
	const struct cc_directive *d;
	size_t i, off;

	for (i = 0; i < sizeof(cc_directives) / sizeof(*d); i++) {
		d = &cc_directives[i];
		if (!http_token_eq(m->name, m->nlen, d->name))
			continue;
		if (d->kind == CC_FLAG || d->kind == CC_LISTED) {
			off = d->kind == CC_LISTED && (m->has_arg || m->bad) ?
			    d->off_fields : d->off;
			*(bool *)(void *)((char *)cc + off) = true;
		} else
			cc_delta(cc, d, m);
		return;
	}
	/* Unknown directives are ignored (5.2.3). */
}

void
policy_cc_parse(struct cc *cc, const char *value, size_t len)
{
	const char *p = value;
	struct member m;

	if (value == NULL)
		return;
	while (member_next(&p, value + len, &m))
		cc_apply(cc, &m);
}

/* -- requests ---------------------------------------------------------- */

/* Pragma: no-cache, for HTTP/1.0 clients (RFC 9111 section 5.4). */
static bool
pragma_no_cache(const char *v, size_t len)
{
	const char *p = v, *end = v + len;
	struct member m;

	while (member_next(&p, end, &m))
		if (!m.has_arg && http_token_eq(m.name, m.nlen, "no-cache"))
			return true;
	return false;
}

/*
 * Methods are case-sensitive (RFC 9110 section 9.1): "get" is not GET.
 * A request's no-cache takes no field names; one given anyway is read as
 * no-cache all the same.
 */
enum policy_req
policy_request(const char *method, size_t method_len,
    const char *cache_control, size_t cc_len, const char *pragma,
    size_t pragma_len)
{
	struct cc cc;

	if (!(method_len == 3 && memcmp(method, "GET", 3) == 0) &&
	    !(method_len == 4 && memcmp(method, "HEAD", 4) == 0))
		return PR_BYPASS;
	policy_cc_init(&cc);
	if (cache_control != NULL)
		policy_cc_parse(&cc, cache_control, cc_len);
	else if (pragma != NULL && pragma_no_cache(pragma, pragma_len))
		cc.no_cache = true;
	if (cc.no_store)
		return PR_BYPASS;
	if (cc.no_cache || cc.no_cache_fields || cc.max_age == 0)
		return PR_REVALIDATE;
	return PR_LOOKUP;
}

/* -- answers ----------------------------------------------------------- */

/* What policy_store() reads from an answer's fields, in one pass. */
struct answer_fields {
	struct cc	 cc;		/* every Cache-Control field */
	bool		 set_cookie;
	bool		 vary_star;	/* in any Vary field */
	bool		 malformed;	/* a line that is not a field */
	const char	*date;		/* the first of each, or NULL */
	size_t		 date_len;
	const char	*expires;
	size_t		 expires_len;
	const char	*age;
	size_t		 age_len;
};

static bool
vary_star(const char *v, size_t len)
{
	const char *p = v, *end = v + len;
	struct member m;

	while (member_next(&p, end, &m))
		if (m.nlen == 1 && m.name[0] == '*')
			return true;
	return false;
}

/* A field given twice where one is expected: the first counts (4.2.1). */
static void
keep_first(const char **p, size_t *plen, const char *v, size_t vlen)
{
	if (*p == NULL) {
		*p = v;
		*plen = vlen;
	}
}

static void
answer_read(const struct policy_answer *a, struct answer_fields *f)
{
	const char *raw = a->fields, *n, *v;
	size_t len = a->fields_len, nl, vl;
	int rc;

	memset(f, 0, sizeof(*f));
	policy_cc_init(&f->cc);
	if (raw == NULL)
		return;
	while ((rc = headers_next_field(&raw, &len, &n, &nl, &v, &vl)) == 1) {
		if (http_token_eq(n, nl, "cache-control"))
			policy_cc_parse(&f->cc, v, vl);
		else if (http_token_eq(n, nl, "set-cookie"))
			f->set_cookie = true;
		else if (http_token_eq(n, nl, "vary"))
			f->vary_star |= vary_star(v, vl);
		else if (http_token_eq(n, nl, "date"))
			keep_first(&f->date, &f->date_len, v, vl);
		else if (http_token_eq(n, nl, "expires"))
			keep_first(&f->expires, &f->expires_len, v, vl);
		else if (http_token_eq(n, nl, "age"))
			keep_first(&f->age, &f->age_len, v, vl);
	}
	/* A no-store could hide past a line we cannot read. */
	f->malformed = rc == -1;
}

/* Freshness lifetime (4.2.1), in ms. */
static uint64_t
lifetime_ms(const struct answer_fields *f, const struct policy_answer *a)
{
	int64_t expires, date, from;

	if (f->cc.s_maxage >= 0)
		return (uint64_t)f->cc.s_maxage * 1000;
	if (f->cc.max_age >= 0)
		return (uint64_t)f->cc.max_age * 1000;
	if (f->expires == NULL)
		return a->ttl_ms;
	/* An Expires that is not a date ("0" is common) is the past (5.3). */
	if ((expires = policy_http_date(f->expires, f->expires_len)) == -1)
		return 0;
	date = policy_http_date(f->date, f->date_len);
	from = date != -1 ? date * 1000 : a->response_time;
	return expires * 1000 > from ? (uint64_t)(expires * 1000 - from) : 0;
}

/*
 * Age (5.1) is delta-seconds, "60, 70" meaning 60; anything else in it
 * is ignored, as is an Age that is not a number.
 */
static int64_t
age_seconds(const struct answer_fields *f)
{
	const char *p = f->age;
	struct member m;
	int64_t s;

	if (p == NULL || !member_next(&p, f->age + f->age_len, &m) ||
	    m.bad || m.has_arg || (s = delta_seconds(m.name, m.nlen)) == -1)
		return 0;
	return s;
}

/* corrected_initial_age (4.2.3), in ms. */
static uint64_t
initial_age_ms(const struct answer_fields *f, const struct policy_answer *a)
{
	int64_t date = policy_http_date(f->date, f->date_len);
	int64_t apparent = 0, delay = 0, corrected;

	/* No Date: the cache's own, response_time (RFC 9110 6.6.1). */
	if (date != -1 && a->response_time > date * 1000)
		apparent = a->response_time - date * 1000;
	if (a->response_time > a->request_time)
		delay = a->response_time - a->request_time;
	corrected = age_seconds(f) * 1000 + delay;
	return (uint64_t)(apparent > corrected ? apparent : corrected);
}

static bool
status_storable(int status)
{
	switch (status) {
	case 200: case 203: case 204: case 300: case 301: case 404: case 410:
		return true;
	default:
		return false;
	}
}

/* Why an answer whose freshness s holds may not be stored, or NULL. */
static const char *
refusal(const struct policy_answer *a, const struct answer_fields *f,
    const struct policy_store *s)
{
	const struct cc *cc = &f->cc;

	if (f->malformed)
		return "malformed";
	if (!status_storable(a->status))
		return "status";
	if (cc->no_store)
		return "no-store";
	if (cc->private_ || cc->private_fields)
		return "private";
	if (cc->no_cache || cc->no_cache_fields)
		return "no-cache";
	if (a->req_authorization && !cc->public_ && cc->s_maxage < 0 &&
	    !cc->must_revalidate)
		return "authorization";
	if (f->set_cookie)
		return "set-cookie";
	if (f->vary_star)
		return "vary *";
	/* Stale at once: worth keeping only for a stale window (4.2.4). */
	if (s->lifetime_ms == 0 &&
	    (s->no_stale || (s->swr_s <= 0 && s->sie_s <= 0)))
		return "expired";
	return NULL;
}

void
policy_store(const struct policy_answer *a, struct policy_store *s)
{
	struct answer_fields f;

	answer_read(a, &f);
	s->lifetime_ms = lifetime_ms(&f, a);
	s->initial_age_ms = initial_age_ms(&f, a);
	s->swr_s = f.cc.stale_while_revalidate;
	s->sie_s = f.cc.stale_if_error;
	/* s-maxage implies proxy-revalidate (5.2.2.10). */
	s->no_stale = f.cc.must_revalidate || f.cc.proxy_revalidate ||
	    f.cc.s_maxage >= 0;
	s->why = refusal(a, &f, s);
	s->storable = s->why == NULL;
}

uint64_t
policy_age_ms(uint64_t initial_age_ms, int64_t stored_at_ms, int64_t now_ms)
{
	uint64_t resident = 0;

	/* A clock stepped back does not make an answer younger. */
	if (now_ms > stored_at_ms)
		resident = (uint64_t)now_ms - (uint64_t)stored_at_ms;
	if (initial_age_ms > UINT64_MAX - resident)
		return UINT64_MAX;
	return initial_age_ms + resident;
}

/* -- conditional requests (RFC 9110 section 13.1) --------------------- */

/*
 * The entity-tag at *pp, W/ dropped (weak comparison, 8.8.3.2), quotes
 * kept; *pp moved past it.  etagc has no '"' and no escapes.
 */
static bool
etag_next(const char **pp, const char *end, const char **tag, size_t *tlen)
{
	const char *p = *pp, *q;

	if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
		p += 2;
	if (p == end || *p != '"' ||
	    (q = memchr(p + 1, '"', (size_t)(end - p - 1))) == NULL)
		return false;
	*tag = p;
	*tlen = (size_t)(q + 1 - p);
	*pp = q + 1;
	return true;
}

/* The stored ETag's opaque-tag; false if it is not one entity-tag. */
static bool
stored_etag(const char *etag, size_t len, const char **tag, size_t *tlen)
{
	const char *p = etag, *end = etag + len;

	if (etag == NULL)
		return false;
	while (p < end && is_ows(*p))
		p++;
	while (end > p && is_ows(end[-1]))
		end--;
	return etag_next(&p, end, tag, tlen) && p == end;
}

/* "*" alone, or a list of entity-tags, one of them the stored one. */
static bool
etag_listed(const char *list, size_t len, const char *etag, size_t elen)
{
	const char *p = list, *end = list + len, *t, *st = NULL;
	size_t tl, stl = 0;
	bool have = stored_etag(etag, elen, &st, &stl);

	while (p < end && is_ows(*p))
		p++;
	while (end > p && is_ows(end[-1]))
		end--;
	if (end - p == 1 && *p == '*')
		return true;
	for (;;) {
		while (p < end && (is_ows(*p) || *p == ','))
			p++;
		if (p == end)
			return false;
		if (!etag_next(&p, end, &t, &tl))
			return false;	/* nothing after garbage is trusted */
		if (have && tl == stl && memcmp(t, st, tl) == 0)
			return true;
		while (p < end && is_ows(*p))
			p++;
		if (p < end && *p != ',')
			return false;
	}
}

/*
 * An invalid Last-Modified is not replaced by Date: an unknown
 * modification time cannot vouch for the client's copy.
 */
bool
policy_not_modified(const char *if_none_match, size_t inm_len,
    const char *if_modified_since, size_t ims_len, const char *etag,
    size_t etag_len, const char *last_modified, size_t lm_len,
    const char *date, size_t date_len)
{
	int64_t since, modified;

	if (if_none_match != NULL)
		return etag_listed(if_none_match, inm_len, etag, etag_len);
	if ((since = policy_http_date(if_modified_since, ims_len)) == -1)
		return false;
	if (last_modified != NULL)
		modified = policy_http_date(last_modified, lm_len);
	else
		modified = policy_http_date(date, date_len);
	return modified != -1 && modified <= since;
}

/* -- Vary -------------------------------------------------------------- */

/* How many field names the value lists, or -1 (see policy.h). */
static int
vary_count(const char *value, size_t len, size_t max)
{
	const char *p = value, *end = value + len;
	struct member m;
	size_t n = 0;

	while (member_next(&p, end, &m)) {
		if (m.bad || m.has_arg || m.nlen > VARY_NAME_MAX ||
		    (m.nlen == 1 && m.name[0] == '*') || ++n > max ||
		    n > (size_t)INT_MAX)
			return -1;
	}
	return (int)n;
}

int
policy_vary_each(const char *value, size_t len, size_t max,
    void (*fn)(void *arg, const char *name, size_t nlen), void *arg)
{
	const char *p = value;
	char name[VARY_NAME_MAX];
	struct member m;
	size_t i;
	int n;

	if (value == NULL)
		return 0;
	/* Checked whole first, so that fn never sees part of a bad list. */
	if ((n = vary_count(value, len, max)) <= 0)
		return n;
	while (member_next(&p, value + len, &m)) {
		for (i = 0; i < m.nlen; i++)
			name[i] = m.name[i] >= 'A' && m.name[i] <= 'Z' ?
			    (char)(m.name[i] - 'A' + 'a') : m.name[i];
		fn(arg, name, m.nlen);
	}
	return n;
}
