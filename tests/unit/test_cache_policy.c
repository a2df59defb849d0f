/*
 * gateway/cache/policy.c and policy_date.c: the rules of a shared cache,
 * checked table by table against RFC 9111 (and RFC 9110's dates and
 * conditionals, RFC 5861's stale windows):
 *
 *   policy_http_date()     the three forms of RFC 9110 5.6.7, and what is
 *                          not a date; policy_format_date() back again
 *   policy_cc_parse()      directives, arguments, duplicates, garbage
 *   policy_request()       GET/HEAD, no-store, no-cache, max-age=0, Pragma
 *   policy_store()         every storability rule, the lifetime's order of
 *                          precedence, corrected_initial_age, stale windows
 *   policy_age_ms()        initial age plus time resident
 *   policy_not_modified()  If-None-Match (weak, lists, "*"), then
 *                          If-Modified-Since against Last-Modified or Date
 *   policy_vary_each()     names, lower-cased; "*", too long, too many
 *
 * Values are never NUL-terminated in agate, so every input here is
 * copied to the very end of a page whose next page is unmapped: a read
 * one byte too far is a SIGSEGV, and the test fails without any sanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gateway/cache/policy.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* RFC 9110 section 5.6.7's example: Sun, 06 Nov 1994 08:49:37 GMT. */
#define T0		784111777LL
#define T0_MS		(T0 * 1000)
#define T0_DATE		"Sun, 06 Nov 1994 08:49:37 GMT"

/* -- fenced buffers ---------------------------------------------------- */

#define FENCES		5

static char	*fence_map;
static size_t	 fence_page;

static int
fences_setup(void **state)
{
	size_t i;

	fence_page = (size_t)sysconf(_SC_PAGESIZE);
	fence_map = mmap(NULL, FENCES * 2 * fence_page,
	    PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fence_map == MAP_FAILED)
		return -1;
	for (i = 0; i < FENCES; i++)
		if (mprotect(fence_map + (2 * i + 1) * fence_page, fence_page,
		    PROT_NONE) == -1)
			return -1;
	return 0;
}

static int
fences_teardown(void **state)
{
	munmap(fence_map, FENCES * 2 * fence_page);
	return 0;
}

/* s[0..len) copied so that its last byte is the last readable one. */
static const char *
fenced_n(int slot, const char *s, size_t len)
{
	char *p;

	if (s == NULL)
		return NULL;
	assert_true(slot < FENCES && len <= fence_page);
	p = fence_map + (2 * (size_t)slot + 1) * fence_page - len;
	memcpy(p, s, len);
	return p;
}

static const char *
fenced(int slot, const char *s)
{
	return fenced_n(slot, s, s == NULL ? 0 : strlen(s));
}

static size_t
len_of(const char *s)
{
	return s == NULL ? 0 : strlen(s);
}

/* -- HTTP-dates -------------------------------------------------------- */

static void
test_http_date(void **state)
{
	static const struct {
		const char	*in;
		int64_t		 want;
	} cases[] = {
		/* RFC 9110 5.6.7: one instant in its three forms. */
		{ "Sun, 06 Nov 1994 08:49:37 GMT", T0 },
		{ "Sunday, 06-Nov-94 08:49:37 GMT", T0 },
		{ "Sun Nov  6 08:49:37 1994", T0 },
		/* IMF-fixdate */
		{ " \tSun, 06 Nov 1994 08:49:37 GMT \t", T0 },
		{ "Mon, 06 Nov 1994 08:49:37 GMT", T0 },	/* name unchecked */
		{ "Wed, 30 Nov 1994 00:00:00 GMT", 786153600 },
		{ "Tue, 29 Feb 2000 00:00:00 GMT", 951782400 },
		{ "Thu, 29 Feb 2024 12:00:00 GMT", 1709208000 },
		{ "Tue, 19 Jan 2038 03:14:08 GMT", 2147483648LL },
		{ "Fri, 31 Dec 9999 23:59:59 GMT", 253402300799LL },
		{ "Sun, 06 Nov 1994 08:49:60 GMT", T0 + 23 },	/* leap s */
		{ "Thu, 01 Jan 1970 00:00:00 GMT", 0 },
		{ "Wed, 31 Dec 1969 23:59:59 GMT", 0 },		/* not -1 */
		{ "Mon, 01 Jan 1900 00:00:00 GMT", 0 },
		{ "Sun, 06 Nov 1994 08:49:37 gmt", -1 },
		{ "sun, 06 Nov 1994 08:49:37 GMT", -1 },
		{ "Sun, 06 nov 1994 08:49:37 GMT", -1 },
		{ "Sun, 06 Nov 1994 08:49:37 UTC", -1 },
		{ "Sun, 06 Nov 1994 08:49:37 +0000", -1 },
		{ "Xyz, 06 Nov 1994 08:49:37 GMT", -1 },
		{ "Sun, 6 Nov 1994 08:49:37 GMT", -1 },
		{ "Sun,  6 Nov 1994 08:49:37 GMT", -1 },
		{ "Sun, 00 Nov 1994 08:49:37 GMT", -1 },
		{ "Thu, 31 Nov 1994 08:49:37 GMT", -1 },
		{ "Thu, 29 Feb 1900 00:00:00 GMT", -1 },
		{ "Wed, 29 Feb 2023 00:00:00 GMT", -1 },
		{ "Sun, 06 Nov 1994 24:00:00 GMT", -1 },
		{ "Sun, 06 Nov 1994 08:60:00 GMT", -1 },
		{ "Sun, 06 Nov 1994 08:49:61 GMT", -1 },
		{ "Sun, 06 Nov 1994 08-49-37 GMT", -1 },
		{ "Sun, 06 Nov 19x4 08:49:37 GMT", -1 },
		{ "Sun, 06 Nov -994 08:49:37 GMT", -1 },
		{ "Sun, 06 Nov 1994 08:49:37 GMT; length=12", -1 },
		{ "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
		    -1 },
		/* RFC 850: two-digit years, 70-99 are 19xx, 00-69 20xx */
		{ "Sunday, 06-Nov-05 08:49:37 GMT", 1131266977 },
		{ "Wednesday, 06-Nov-69 08:49:37 GMT", 3150953377LL },
		{ "Thursday, 01-Jan-70 00:00:00 GMT", 0 },
		{ "Friday, 31-Dec-99 23:59:59 GMT", 946684799 },
		{ "Wednesday, 09-Nov-94 08:49:37 GMT", 784370977 },
		{ "Sun, 06-Nov-94 08:49:37 GMT", -1 },
		{ "Funday, 06-Nov-94 08:49:37 GMT", -1 },
		{ "Sunday, 06-Nov-94 08:49:37 UTC", -1 },
		{ "Sunday, 06-Nov-1994 08:49:37 GMT", -1 },
		{ "Sunday, 06 Nov 94 08:49:37 GMT", -1 },
		{ "Sunday,06-Nov-94 08:49:37 GMT", -1 },
		{ "Sunday, 31-Nov-94 08:49:37 GMT", -1 },
		{ "Sunday, 06-Nov-9x 08:49:37 GMT", -1 },
		/* asctime */
		{ "Sun Nov 06 08:49:37 1994", T0 },
		{ "Wed Nov 16 08:49:37 1994", 784975777 },
		{ "Sun Nov 6 08:49:37 1994", -1 },
		{ "Sun Nov  6 08:49:37 94", -1 },
		{ "Sun Nov  6 08:49:37 1994 GMT", -1 },
		{ "Sun nov  6 08:49:37 1994", -1 },
		{ "Sun Nov    08:49:37 1994", -1 },
		/* not dates at all */
		{ "", -1 },
		{ " ", -1 },
		{ "0", -1 },
		{ "-1", -1 },
		{ "784111777", -1 },
		{ "tomorrow", -1 },
		{ "\"Sun, 06 Nov 1994 08:49:37 GMT\"", -1 },
		{ "Sun, 06 Nov 1994 08:49:37 GM\xff", -1 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		int64_t got = policy_http_date(fenced(0, cases[i].in),
		    strlen(cases[i].in));

		if (got != cases[i].want)
			fail_msg("policy_http_date(\"%s\") = %" PRId64
			    "; want %" PRId64, cases[i].in, got,
			    cases[i].want);
	}
	assert_int_equal(policy_http_date(NULL, 0), -1);
}

static void
test_format_date(void **state)
{
	static const struct {
		int64_t		 secs;
		const char	*want;
	} cases[] = {
		{ T0, T0_DATE },
		{ 0, "Thu, 01 Jan 1970 00:00:00 GMT" },
		{ -5, "Thu, 01 Jan 1970 00:00:00 GMT" },
		{ 951782400, "Tue, 29 Feb 2000 00:00:00 GMT" },
		{ 2147483648LL, "Tue, 19 Jan 2038 03:14:08 GMT" },
		{ 253402300799LL, "Fri, 31 Dec 9999 23:59:59 GMT" },
		{ INT64_MAX, "Fri, 31 Dec 9999 23:59:59 GMT" },
	};
	char out[30];
	int64_t t;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		memset(out, 'x', sizeof(out));
		policy_format_date(cases[i].secs, out);
		if (memchr(out, '\0', sizeof(out)) == NULL ||
		    strcmp(out, cases[i].want) != 0)
			fail_msg("policy_format_date(%" PRId64 ") = \"%.30s\"; "
			    "want \"%s\"", cases[i].secs, out, cases[i].want);
	}
	/* Back and forth, every 10 days or so at an odd hour. */
	for (t = 0; t < 4102444800LL; t += 863999) {
		policy_format_date(t, out);
		if (policy_http_date(out, strlen(out)) != t)
			fail_msg("%" PRId64 " -> \"%s\" -> %" PRId64, t, out,
			    policy_http_date(out, strlen(out)));
	}
}

/* -- Cache-Control ----------------------------------------------------- */

static void
describe_delta(char *out, size_t size, const char *name, int64_t v)
{
	size_t n = strlen(out);

	if (v == INT64_MAX)
		snprintf(out + n, size - n, " %s=any", name);
	else if (v != -1)
		snprintf(out + n, size - n, " %s=%" PRId64, name, v);
}

/* A struct cc as its directives, in struct order, " " before each. */
static void
describe_cc(const struct cc *cc, char *out, size_t size)
{
	snprintf(out, size, "%s%s%s%s%s%s%s%s%s",
	    cc->no_store ? " no-store" : "",
	    cc->no_cache ? " no-cache" : "",
	    cc->no_cache_fields ? " no-cache=fields" : "",
	    cc->private_ ? " private" : "",
	    cc->private_fields ? " private=fields" : "",
	    cc->public_ ? " public" : "",
	    cc->must_revalidate ? " must-revalidate" : "",
	    cc->proxy_revalidate ? " proxy-revalidate" : "",
	    cc->only_if_cached ? " only-if-cached" : "");
	describe_delta(out, size, "max-age", cc->max_age);
	describe_delta(out, size, "s-maxage", cc->s_maxage);
	describe_delta(out, size, "max-stale", cc->max_stale);
	describe_delta(out, size, "min-fresh", cc->min_fresh);
	describe_delta(out, size, "swr", cc->stale_while_revalidate);
	describe_delta(out, size, "sie", cc->stale_if_error);
}

static void
test_cc_parse(void **state)
{
	static const struct {
		const char	*in;
		const char	*want;
	} cases[] = {
		{ "", "" },
		{ " , ,, ", "" },
		{ "no-store", " no-store" },
		{ "NO-STORE", " no-store" },
		{ "\tNo-Store ,", " no-store" },
		{ "no-cache", " no-cache" },
		{ "no-cache=\"Set-Cookie\"", " no-cache=fields" },
		{ "no-cache=Set-Cookie", " no-cache=fields" },
		{ "no-cache=\"Set-Cookie, X-A\", max-age=5",
		    " no-cache=fields max-age=5" },
		{ "private", " private" },
		{ "private=\"X-A, X-B\", max-age=5", " private=fields max-age=5" },
		{ "private, private=\"X-A\"", " private private=fields" },
		{ "public", " public" },
		{ "must-revalidate", " must-revalidate" },
		{ "proxy-revalidate", " proxy-revalidate" },
		{ "only-if-cached", " only-if-cached" },
		{ "public=yes", " public" },
		{ "max-age=60", " max-age=60" },
		{ "max-age=\"60\"", " max-age=60" },
		{ "max-age=0", " max-age=0" },
		{ "max-age=007", " max-age=7" },
		{ "max-age = 60", " max-age=60" },
		{ "max-age=2147483647", " max-age=2147483647" },
		{ "max-age=2147483648", " max-age=2147483648" },
		{ "max-age=2147483649", " max-age=2147483648" },
		{ "max-age=99999999999999999999999999", " max-age=2147483648" },
		/* A malformed max-age is max-age=0 (4.2.1). */
		{ "max-age", " max-age=0" },
		{ "max-age=", " max-age=0" },
		{ "max-age=\"\"", " max-age=0" },
		{ "max-age=abc", " max-age=0" },
		{ "max-age=-1", " max-age=0" },
		{ "max-age=+5", " max-age=0" },
		{ "max-age=5.5", " max-age=0" },
		{ "max-age=5 junk", " max-age=0" },
		{ "max-age=5;x", " max-age=0" },
		{ "max-age=\"5", " max-age=0" },
		{ "max-age=\"5\"x", " max-age=0" },
		/* The first of a directive counts. */
		{ "max-age=60, max-age=30", " max-age=60" },
		{ "max-age=x, max-age=30", " max-age=0" },
		{ "max-age=30, max-age=x", " max-age=30" },
		/* Other delta-seconds: malformed is absent. */
		{ "s-maxage=10", " s-maxage=10" },
		{ "s-maxage=abc", "" },
		{ "s-maxage", "" },
		{ "s-maxage=abc, s-maxage=5", " s-maxage=5" },
		{ "max-stale", " max-stale=any" },
		{ "max-stale=10", " max-stale=10" },
		{ "max-stale=x", "" },
		{ "min-fresh=5", " min-fresh=5" },
		{ "min-fresh=-5", "" },
		{ "stale-while-revalidate=30, stale-if-error=600",
		    " swr=30 sie=600" },
		{ "STALE-IF-ERROR=\"1\"", " sie=1" },
		/* Quoted commas are not separators. */
		{ "community=\"a, no-store\", max-age=1", " max-age=1" },
		{ "x=\"a\\\", no-store\", public", " public" },
		/* An open quote runs to the end. */
		{ "private=\"a, no-store", " private=fields" },
		{ "x=\"\\", "" },
		{ "x=\"a\\\"", "" },
		/* Garbage, unknown directives, missing commas. */
		{ "foo=bar, max-age=3", " max-age=3" },
		{ "max-agex=3, xmax-age=4", "" },
		{ "\"no-store\", public", " public" },
		{ "\"a, no-store\", public", " public" },
		{ "x y=\"a, no-store\", public", " public" },
		{ "=5, public", " public" },
		{ "no-store junk", " no-store" },
		{ "no-cache junk", " no-cache=fields" },
		{ "public no-store", " public" },
		{ "max-age=60;no-store", " max-age=0" },
		{ "\x01\x02\xff, no-store", " no-store" },
		{ ";;;=,\"\",==", "" },
		{ "no-store,no-cache,private,public,must-revalidate,"
		    "proxy-revalidate,only-if-cached,max-age=1,s-maxage=2,"
		    "max-stale=3,min-fresh=4,stale-while-revalidate=5,"
		    "stale-if-error=6", " no-store no-cache private public "
		    "must-revalidate proxy-revalidate only-if-cached max-age=1 "
		    "s-maxage=2 max-stale=3 min-fresh=4 swr=5 sie=6" },
	};
	char got[512];
	struct cc cc;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		policy_cc_init(&cc);
		policy_cc_parse(&cc, fenced(0, cases[i].in),
		    strlen(cases[i].in));
		describe_cc(&cc, got, sizeof(got));
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("Cache-Control: %s\n got \"%s\"\nwant \"%s\"",
			    cases[i].in, got, cases[i].want);
	}
}

/* Several fields add up; the first max-age still counts; NULL is none. */
static void
test_cc_fields_add_up(void **state)
{
	char got[512];
	struct cc cc;

	policy_cc_init(&cc);
	policy_cc_parse(&cc, fenced(0, "max-age=60"), 10);
	policy_cc_parse(&cc, fenced(0, "no-cache, max-age=5"), 19);
	policy_cc_parse(&cc, NULL, 0);
	describe_cc(&cc, got, sizeof(got));
	assert_string_equal(got, " no-cache max-age=60");
	/* Only len bytes count: "max-age=60" cut after the 6. */
	policy_cc_init(&cc);
	policy_cc_parse(&cc, fenced(0, "max-age=6"), 9);
	assert_int_equal(cc.max_age, 6);
	policy_cc_init(&cc);
	policy_cc_parse(&cc, "max-age=60", 9);
	assert_int_equal(cc.max_age, 6);
}

/* -- requests ---------------------------------------------------------- */

static const char *
req_name(enum policy_req r)
{
	return r == PR_LOOKUP ? "LOOKUP" : r == PR_REVALIDATE ? "REVALIDATE" :
	    r == PR_BYPASS ? "BYPASS" : "?";
}

static void
test_request(void **state)
{
	static const struct {
		const char	*method;
		const char	*cc;		/* NULL: no Cache-Control */
		const char	*pragma;	/* NULL: no Pragma */
		enum policy_req	 want;
	} cases[] = {
		{ "GET", NULL, NULL, PR_LOOKUP },
		{ "HEAD", NULL, NULL, PR_LOOKUP },
		{ "POST", NULL, NULL, PR_BYPASS },
		{ "PUT", NULL, NULL, PR_BYPASS },
		{ "DELETE", NULL, NULL, PR_BYPASS },
		{ "OPTIONS", NULL, NULL, PR_BYPASS },
		{ "PATCH", NULL, NULL, PR_BYPASS },
		{ "get", NULL, NULL, PR_BYPASS },
		{ "Head", NULL, NULL, PR_BYPASS },
		{ "GETS", NULL, NULL, PR_BYPASS },
		{ "GE", NULL, NULL, PR_BYPASS },
		{ "", NULL, NULL, PR_BYPASS },
		{ "POST", "max-age=60", NULL, PR_BYPASS },
		{ "GET", "no-store", NULL, PR_BYPASS },
		{ "HEAD", "No-Store", NULL, PR_BYPASS },
		{ "GET", "no-cache, no-store", NULL, PR_BYPASS },
		{ "GET", "no-cache", NULL, PR_REVALIDATE },
		{ "GET", "max-age=0", NULL, PR_REVALIDATE },
		{ "GET", "max-age=\"0\"", NULL, PR_REVALIDATE },
		{ "GET", "max-age=00", NULL, PR_REVALIDATE },
		{ "GET", "max-age=abc", NULL, PR_REVALIDATE },
		{ "GET", "no-cache=\"x\"", NULL, PR_REVALIDATE },
		{ "GET", "max-age=1", NULL, PR_LOOKUP },
		{ "GET", "max-age=60, no-cache", NULL, PR_REVALIDATE },
		{ "GET", "max-stale", NULL, PR_LOOKUP },
		{ "GET", "min-fresh=10", NULL, PR_LOOKUP },
		{ "GET", "only-if-cached", NULL, PR_LOOKUP },
		{ "GET", "private, public", NULL, PR_LOOKUP },
		{ "GET", "garbage\"", NULL, PR_LOOKUP },
		{ "GET", "x=\"no-store\"", NULL, PR_LOOKUP },
		/* Pragma counts only without Cache-Control (5.4). */
		{ "GET", NULL, "no-cache", PR_REVALIDATE },
		{ "GET", NULL, "NO-CACHE", PR_REVALIDATE },
		{ "GET", NULL, "x, no-cache", PR_REVALIDATE },
		{ "GET", NULL, "no-cachex", PR_LOOKUP },
		{ "GET", NULL, "x=\"no-cache\"", PR_LOOKUP },
		{ "GET", NULL, "no-cache=1", PR_LOOKUP },
		{ "GET", NULL, "", PR_LOOKUP },
		{ "GET", "max-age=60", "no-cache", PR_LOOKUP },
		{ "GET", "", "no-cache", PR_LOOKUP },
		{ "POST", NULL, "no-cache", PR_BYPASS },
	};
	enum policy_req got;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		got = policy_request(fenced(0, cases[i].method),
		    strlen(cases[i].method), fenced(1, cases[i].cc),
		    len_of(cases[i].cc), fenced(2, cases[i].pragma),
		    len_of(cases[i].pragma));
		if (got != cases[i].want)
			fail_msg("%s, Cache-Control: %s, Pragma: %s: %s; "
			    "want %s", cases[i].method,
			    cases[i].cc ? cases[i].cc : "(none)",
			    cases[i].pragma ? cases[i].pragma : "(none)",
			    req_name(got), req_name(cases[i].want));
	}
}

/* -- storing ----------------------------------------------------------- */

#define TTL		60000	/* the route's heuristic lifetime */

static void
store(int status, const char *fields, bool auth, uint64_t ttl,
    int64_t request_time, int64_t response_time, struct policy_store *s)
{
	struct policy_answer a = {
		.status = status,
		.fields = fenced(3, fields),
		.fields_len = len_of(fields),
		.req_authorization = auth,
		.request_time = request_time,
		.response_time = response_time,
		.ttl_ms = ttl,
	};

	memset(s, 0x5a, sizeof(*s));	/* every member must be written */
	policy_store(&a, s);
}

static void
test_store_rules(void **state)
{
	static const struct {
		int		 status;
		const char	*fields;
		bool		 auth;
		const char	*why;		/* NULL: storable */
	} cases[] = {
		{ 200, "", false, NULL },
		{ 200, "Content-Type: text/plain\r\n", false, NULL },
		{ 203, "", false, NULL },
		{ 204, "", false, NULL },
		{ 300, "", false, NULL },
		{ 301, "", false, NULL },
		{ 404, "", false, NULL },
		{ 410, "", false, NULL },
		{ 100, "", false, "status" },
		{ 201, "", false, "status" },
		{ 202, "", false, "status" },
		{ 206, "", false, "status" },
		{ 302, "", false, "status" },
		{ 303, "", false, "status" },
		{ 304, "", false, "status" },
		{ 307, "", false, "status" },
		{ 308, "", false, "status" },
		{ 400, "", false, "status" },
		{ 403, "", false, "status" },
		{ 405, "", false, "status" },
		{ 500, "", false, "status" },
		{ 502, "", false, "status" },
		{ 503, "", false, "status" },
		{ 0, "", false, "status" },
		{ 500, "Cache-Control: public, max-age=60\r\n", false, "status" },
		{ 200, "Cache-Control: no-store\r\n", false, "no-store" },
		{ 200, "cache-control: NO-STORE\r\n", false, "no-store" },
		{ 200, "Cache-Control: public, no-store\r\n", false,
		    "no-store" },
		{ 200, "Cache-Control: max-age=60\r\nCache-Control: no-store"
		    "\r\n", false, "no-store" },
		{ 200, "Cache-Control: x=\"no-store\", max-age=60\r\n", false,
		    NULL },
		{ 200, "Cache-Control: private\r\n", false, "private" },
		{ 200, "Cache-Control: public, private\r\n", false, "private" },
		{ 200, "Cache-Control: private=\"Set-Cookie\"\r\n", false,
		    "private" },
		{ 200, "Cache-Control: no-cache\r\n", false, "no-cache" },
		{ 200, "Cache-Control: no-cache=\"X-A\", max-age=60\r\n", false,
		    "no-cache" },
		{ 200, "Set-Cookie: a=b\r\n", false, "set-cookie" },
		{ 200, "set-cookie: a=b\r\nCache-Control: public\r\n", false,
		    "set-cookie" },
		{ 200, "X-Set-Cookie: a=b\r\n", false, NULL },
		{ 200, "Vary: *\r\n", false, "vary *" },
		{ 200, "Vary: Accept, *\r\n", false, "vary *" },
		{ 200, "Vary: Accept\r\nvary:  * \r\n", false, "vary *" },
		{ 200, "Vary: *\r\nVary: Accept\r\n", false, "vary *" },
		{ 200, "Vary: Accept-Encoding\r\n", false, NULL },
		{ 200, "Vary: a*b\r\n", false, NULL },
		{ 200, "X-Vary: *\r\n", false, NULL },
		/* Authorization (3.5) */
		{ 200, "", true, "authorization" },
		{ 200, "Cache-Control: max-age=60\r\n", true, "authorization" },
		{ 200, "Cache-Control: proxy-revalidate\r\n", true,
		    "authorization" },
		{ 200, "Cache-Control: s-maxage=abc\r\n", true,
		    "authorization" },
		{ 200, "Cache-Control: public\r\n", true, NULL },
		{ 200, "Cache-Control: s-maxage=60\r\n", true, NULL },
		{ 200, "Cache-Control: must-revalidate\r\n", true, NULL },
		{ 200, "Cache-Control: public, private\r\n", true, "private" },
		/* Stale at once: kept only for a stale window. */
		{ 200, "Cache-Control: max-age=0\r\n", false, "expired" },
		{ 200, "Cache-Control: max-age=abc\r\n", false, "expired" },
		{ 200, "Cache-Control: max-age=0, stale-while-revalidate=30\r\n",
		    false, NULL },
		{ 200, "Cache-Control: max-age=0, stale-if-error=60\r\n", false,
		    NULL },
		{ 200, "Cache-Control: max-age=0, stale-while-revalidate=0\r\n",
		    false, "expired" },
		{ 200, "Cache-Control: max-age=0, must-revalidate, "
		    "stale-if-error=60\r\n", false, "expired" },
		{ 200, "Cache-Control: max-age=0, proxy-revalidate, "
		    "stale-while-revalidate=60\r\n", false, "expired" },
		{ 200, "Cache-Control: s-maxage=0, stale-while-revalidate=30\r\n",
		    false, "expired" },
		{ 200, "Expires: 0\r\n", false, "expired" },
		{ 200, "Expires: 0\r\nCache-Control: stale-if-error=5\r\n", false,
		    NULL },
		{ 200, "Date: " T0_DATE "\r\nExpires: Sun, 06 Nov 1994 08:49:36 "
		    "GMT\r\n", false, "expired" },
		{ 200, "Date: " T0_DATE "\r\nExpires: " T0_DATE "\r\n", false,
		    "expired" },
		{ 200, "Pragma: no-cache\r\n", false, NULL },
		/* A head we cannot read to the end is not stored. */
		{ 200, "X-A: 1\r\nnot a field\r\nCache-Control: no-store\r\n",
		    false, "malformed" },
		{ 200, "Cache-Control: no-store", false, "malformed" },
		{ 200, "X-A: 1\r\n\r\nCache-Control: no-store\r\n", false, NULL },
	};
	struct policy_store s;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		store(cases[i].status, cases[i].fields, cases[i].auth, TTL,
		    T0_MS, T0_MS, &s);
		if (s.storable != (cases[i].why == NULL) ||
		    (s.why == NULL) != (cases[i].why == NULL) ||
		    (s.why != NULL && strcmp(s.why, cases[i].why) != 0))
			fail_msg("%d %s%s\n got storable %d why %s; want %s",
			    cases[i].status, cases[i].fields,
			    cases[i].auth ? " (Authorization)" : "",
			    s.storable, s.why ? s.why : "NULL",
			    cases[i].why ? cases[i].why : "storable");
	}
	/* No fields at all. */
	store(200, NULL, false, TTL, T0_MS, T0_MS, &s);
	assert_true(s.storable);
	assert_int_equal(s.lifetime_ms, TTL);
	/* No information and no heuristic: stale at once. */
	store(200, "", false, 0, T0_MS, T0_MS, &s);
	assert_string_equal(s.why, "expired");
}

/* s-maxage, then max-age, then Expires - Date, then the route's ttl. */
static void
test_store_lifetime(void **state)
{
	static const struct {
		const char	*fields;
		int64_t		 response_time;
		uint64_t	 want;		/* lifetime_ms */
	} cases[] = {
		{ "", T0_MS, TTL },
		{ "Cache-Control: max-age=20\r\n", T0_MS, 20000 },
		{ "Cache-Control: s-maxage=10, max-age=20\r\n", T0_MS, 10000 },
		{ "Cache-Control: max-age=20, s-maxage=10\r\n", T0_MS, 10000 },
		{ "Cache-Control: max-age=20\r\nCache-Control: s-maxage=10\r\n",
		    T0_MS, 10000 },
		{ "Cache-Control: s-maxage=abc, max-age=20\r\n", T0_MS, 20000 },
		{ "Cache-Control: max-age=0, s-maxage=30\r\n", T0_MS, 30000 },
		{ "Date: " T0_DATE "\r\nExpires: Sun, 06 Nov 1994 08:50:07 GMT"
		    "\r\nCache-Control: max-age=20\r\n", T0_MS, 20000 },
		{ "Date: " T0_DATE "\r\nExpires: Sun, 06 Nov 1994 08:50:07 GMT"
		    "\r\nCache-Control: s-maxage=5\r\n", T0_MS, 5000 },
		/* A malformed max-age is stale, whatever Expires says. */
		{ "Date: " T0_DATE "\r\nExpires: Sun, 06 Nov 1994 08:50:07 GMT"
		    "\r\nCache-Control: max-age=abc\r\n", T0_MS, 0 },
		{ "Cache-Control: max-age=99999999999\r\n", T0_MS,
		    2147483648000ULL },
		/* Expires - Date */
		{ "Date: " T0_DATE "\r\nExpires: Sun, 06 Nov 1994 08:50:07 GMT"
		    "\r\n", T0_MS, 30000 },
		{ "Expires: Sun, 06 Nov 1994 08:50:07 GMT\r\nDate: " T0_DATE
		    "\r\n", T0_MS + 999999, 30000 },
		{ "Date: " T0_DATE "\r\nExpires: Sunday, 06-Nov-94 08:50:07 GMT"
		    "\r\n", T0_MS, 30000 },
		{ "Date: " T0_DATE "\r\nExpires: Sun Nov  6 08:50:07 1994\r\n",
		    T0_MS, 30000 },
		/* Date absent or not a date: response_time instead. */
		{ "Expires: Sun, 06 Nov 1994 08:50:07 GMT\r\n", T0_MS + 5000,
		    25000 },
		{ "Expires: Sun, 06 Nov 1994 08:50:07 GMT\r\n", T0_MS + 5500,
		    24500 },
		{ "Date: yesterday\r\nExpires: Sun, 06 Nov 1994 08:50:07 GMT\r\n",
		    T0_MS + 5000, 25000 },
		{ "Expires: Sun, 06 Nov 1994 08:50:07 GMT\r\n", T0_MS + 31000,
		    0 },
		/* Expires in the past, or not a date: already expired (5.3). */
		{ "Date: " T0_DATE "\r\nExpires: Sun, 06 Nov 1994 08:49:00 GMT"
		    "\r\n", T0_MS, 0 },
		{ "Expires: 0\r\n", T0_MS, 0 },
		{ "Expires: -1\r\n", T0_MS, 0 },
		{ "Expires: \r\n", T0_MS, 0 },
		{ "Expires: never\r\nCache-Control: max-age=7\r\n", T0_MS, 7000 },
		/* Two Expires or two Date fields: the first counts. */
		{ "Date: " T0_DATE "\r\nExpires: Sun, 06 Nov 1994 08:50:07 GMT"
		    "\r\nExpires: Sun, 06 Nov 1994 09:49:37 GMT\r\n", T0_MS,
		    30000 },
		{ "Date: " T0_DATE "\r\nDate: Sun, 06 Nov 1994 08:50:00 GMT\r\n"
		    "Expires: Sun, 06 Nov 1994 08:50:07 GMT\r\n", T0_MS, 30000 },
		/* Unrelated fields change nothing. */
		{ "Pragma: no-cache\r\nLast-Modified: " T0_DATE "\r\n", T0_MS,
		    TTL },
	};
	struct policy_store s;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		store(200, cases[i].fields, false, TTL, cases[i].response_time,
		    cases[i].response_time, &s);
		if (s.lifetime_ms != cases[i].want)
			fail_msg("%s\n(response_time T0%+" PRId64 " ms) lifetime "
			    "%" PRIu64 " ms; want %" PRIu64, cases[i].fields,
			    cases[i].response_time - T0_MS, s.lifetime_ms,
			    cases[i].want);
	}
}

/*
 * corrected_initial_age (4.2.3): the larger of apparent_age
 * (response_time - Date, not below 0) and Age + response_delay
 * (response_time - request_time).
 */
static void
test_store_initial_age(void **state)
{
	static const struct {
		const char	*fields;
		int64_t		 request_time;	/* ms after T0 */
		int64_t		 response_time;
		uint64_t	 want;
	} cases[] = {
		{ "Date: " T0_DATE "\r\n", 0, 0, 0 },
		{ "", 0, 0, 0 },
		{ "", -300, 0, 300 },
		{ "Date: " T0_DATE "\r\n", 0, 500, 500 },
		{ "Age: 60\r\n", -2000, 0, 62000 },
		{ "Age: 60\r\nDate: " T0_DATE "\r\n", -2000, 0, 62000 },
		{ "Date: " T0_DATE "\r\n", 100000, 100000, 100000 },
		{ "Date: " T0_DATE "\r\nAge: 30\r\n", 99000, 100000, 100000 },
		{ "Date: " T0_DATE "\r\nAge: 30\r\n", 9000, 10000, 31000 },
		/* A Date ahead of us: apparent_age 0. */
		{ "Date: Sun, 06 Nov 1994 08:51:17 GMT\r\nAge: 5\r\n", -1000, 0,
		    6000 },
		{ "Date: Sun, 06 Nov 1994 08:51:17 GMT\r\n", 0, 0, 0 },
		{ "Date: garbage\r\n", -10, 0, 10 },
		/* Age: the first member, the first field, numbers only. */
		{ "Age: 60, 70\r\n", 0, 0, 60000 },
		{ "Age: 5\r\nAge: 9\r\n", 0, 0, 5000 },
		{ "Age: \"60\"\r\n", 0, 0, 0 },
		{ "Age: abc\r\n", -10, 0, 10 },
		{ "Age: -5\r\n", 0, 0, 0 },
		{ "Age: 5s\r\n", 0, 0, 0 },
		{ "Age: 5 s\r\n", 0, 0, 0 },
		{ "Age: 5=6\r\n", 0, 0, 0 },
		{ "Age:\r\n", 0, 0, 0 },
		{ "Age: 99999999999\r\n", 0, 0, 2147483648000ULL },
		/* A response before its request: no delay. */
		{ "Age: 1\r\n", 500, 0, 1000 },
	};
	struct policy_store s;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		store(200, cases[i].fields, false, TTL,
		    T0_MS + cases[i].request_time,
		    T0_MS + cases[i].response_time, &s);
		if (s.initial_age_ms != cases[i].want)
			fail_msg("%s\n(request T0%+" PRId64 ", response T0%+"
			    PRId64 " ms) initial age %" PRIu64 " ms; want %"
			    PRIu64, cases[i].fields, cases[i].request_time,
			    cases[i].response_time, s.initial_age_ms,
			    cases[i].want);
	}
}

static void
test_store_stale(void **state)
{
	static const struct {
		const char	*fields;
		int64_t		 swr;
		int64_t		 sie;
		bool		 no_stale;
	} cases[] = {
		{ "", -1, -1, false },
		{ "Cache-Control: max-age=5\r\n", -1, -1, false },
		{ "Cache-Control: stale-while-revalidate=30\r\n", 30, -1, false },
		{ "Cache-Control: stale-if-error=600\r\n", -1, 600, false },
		{ "Cache-Control: max-age=5, stale-while-revalidate=1, "
		    "stale-if-error=2\r\n", 1, 2, false },
		{ "Cache-Control: stale-if-error=x\r\n", -1, -1, false },
		{ "Cache-Control: must-revalidate\r\n", -1, -1, true },
		{ "Cache-Control: proxy-revalidate\r\n", -1, -1, true },
		{ "Cache-Control: s-maxage=5\r\n", -1, -1, true },
		{ "Cache-Control: s-maxage=0\r\n", -1, -1, true },
		{ "Cache-Control: s-maxage=x\r\n", -1, -1, false },
	};
	struct policy_store s;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		store(200, cases[i].fields, false, TTL, T0_MS, T0_MS, &s);
		if (s.swr_s != cases[i].swr || s.sie_s != cases[i].sie ||
		    s.no_stale != cases[i].no_stale)
			fail_msg("%s\n got swr %" PRId64 " sie %" PRId64
			    " no_stale %d; want %" PRId64 " %" PRId64 " %d",
			    cases[i].fields, s.swr_s, s.sie_s, s.no_stale,
			    cases[i].swr, cases[i].sie, cases[i].no_stale);
	}
}

/* Not storable still says how fresh and how old (the cache counts it). */
static void
test_store_refused_filled(void **state)
{
	struct policy_store s;

	store(200, "Cache-Control: no-store, max-age=30, "
	    "stale-if-error=9\r\nAge: 4\r\n", false, TTL, T0_MS, T0_MS, &s);
	assert_false(s.storable);
	assert_string_equal(s.why, "no-store");
	assert_int_equal(s.lifetime_ms, 30000);
	assert_int_equal(s.initial_age_ms, 4000);
	assert_int_equal(s.sie_s, 9);
	assert_int_equal(s.swr_s, -1);
	assert_false(s.no_stale);
}

/* -- age --------------------------------------------------------------- */

static void
test_age(void **state)
{
	static const struct {
		uint64_t	 initial;
		int64_t		 stored_at;
		int64_t		 now;
		uint64_t	 want;
	} cases[] = {
		{ 0, 1000, 1000, 0 },
		{ 0, 1000, 1001, 1 },
		{ 5000, 1000, 3000, 7000 },
		{ 5000, T0_MS, T0_MS + 60000, 65000 },
		{ 5000, 3000, 1000, 5000 },		/* clock stepped back */
		{ 0, -1000, 1000, 2000 },
		{ 7, INT64_MIN, INT64_MAX, UINT64_MAX },
		{ UINT64_MAX - 1, 0, 10, UINT64_MAX },
		{ UINT64_MAX, 0, 0, UINT64_MAX },
	};
	size_t i;
	uint64_t got;

	for (i = 0; i < NELEM(cases); i++) {
		got = policy_age_ms(cases[i].initial, cases[i].stored_at,
		    cases[i].now);
		if (got != cases[i].want)
			fail_msg("policy_age_ms(%" PRIu64 ", %" PRId64 ", %"
			    PRId64 ") = %" PRIu64 "; want %" PRIu64,
			    cases[i].initial, cases[i].stored_at, cases[i].now,
			    got, cases[i].want);
	}
}

/* -- conditional requests ---------------------------------------------- */

#define LM		"Sun, 06 Nov 1994 08:49:37 GMT"
#define LM_BEFORE	"Sun, 06 Nov 1994 08:49:36 GMT"
#define LM_AFTER	"Sun, 06 Nov 1994 08:49:38 GMT"

static void
test_not_modified(void **state)
{
	static const struct {
		const char	*inm;		/* If-None-Match */
		const char	*ims;		/* If-Modified-Since */
		const char	*etag;		/* stored */
		const char	*lm;		/* stored Last-Modified */
		const char	*date;		/* stored Date */
		bool		 want;		/* 304 */
	} cases[] = {
		{ NULL, NULL, "\"a\"", LM, LM, false },
		{ NULL, NULL, NULL, NULL, NULL, false },
		/* Strong and weak tags compare weakly (RFC 9110 8.8.3.2). */
		{ "\"abc\"", NULL, "\"abc\"", NULL, NULL, true },
		{ "\"abc\"", NULL, "\"abd\"", NULL, NULL, false },
		{ "\"abc\"", NULL, "\"ABC\"", NULL, NULL, false },
		{ "W/\"abc\"", NULL, "\"abc\"", NULL, NULL, true },
		{ "\"abc\"", NULL, "W/\"abc\"", NULL, NULL, true },
		{ "W/\"abc\"", NULL, "W/\"abc\"", NULL, NULL, true },
		{ "w/\"abc\"", NULL, "\"abc\"", NULL, NULL, false },
		{ "\"\"", NULL, "\"\"", NULL, NULL, true },
		{ "\"\"", NULL, "\"a\"", NULL, NULL, false },
		{ " \"abc\" ", NULL, " \"abc\"\t", NULL, NULL, true },
		/* Lists */
		{ "\"x\", \"abc\"", NULL, "\"abc\"", NULL, NULL, true },
		{ "\"x\",\"y\" , W/\"abc\"", NULL, "\"abc\"", NULL, NULL, true },
		{ ", ,\"abc\",,", NULL, "\"abc\"", NULL, NULL, true },
		{ "\"x\", \"y\"", NULL, "\"abc\"", NULL, NULL, false },
		{ "\"a,b\"", NULL, "\"a,b\"", NULL, NULL, true },
		{ "\"a\", \"b\"", NULL, "\"a,b\"", NULL, NULL, false },
		{ "\"x\" \"abc\"", NULL, "\"abc\"", NULL, NULL, false },
		{ "\"x\", abc, \"abc\"", NULL, "\"abc\"", NULL, NULL, false },
		/* "*": any stored answer (13.1.2) */
		{ "*", NULL, "\"abc\"", NULL, NULL, true },
		{ " * ", NULL, "W/\"abc\"", NULL, NULL, true },
		{ "*", NULL, NULL, NULL, NULL, true },
		{ "\"x\", *", NULL, "\"abc\"", NULL, NULL, false },
		{ "**", NULL, "\"abc\"", NULL, NULL, false },
		/* Malformed tags match nothing. */
		{ "abc", NULL, "abc", NULL, NULL, false },
		{ "\"abc\"", NULL, "abc", NULL, NULL, false },
		{ "\"abc\"", NULL, "\"abc\" junk", NULL, NULL, false },
		{ "\"abc\"", NULL, "\"abc", NULL, NULL, false },
		{ "\"abc", NULL, "\"abc\"", NULL, NULL, false },
		{ "W/", NULL, "\"abc\"", NULL, NULL, false },
		{ "\"abc\"", NULL, NULL, LM, LM, false },
		{ "", NULL, "\"abc\"", NULL, NULL, false },
		/* If-None-Match decides; If-Modified-Since is not looked at. */
		{ "\"x\"", LM_AFTER, "\"abc\"", LM, LM, false },
		{ "\"abc\"", LM_BEFORE, "\"abc\"", LM, LM, true },
		{ "", LM_AFTER, "\"abc\"", LM, LM, false },
		/* If-Modified-Since against Last-Modified */
		{ NULL, LM, NULL, LM, NULL, true },
		{ NULL, LM_AFTER, NULL, LM, NULL, true },
		{ NULL, LM_BEFORE, NULL, LM, NULL, false },
		{ NULL, "Sunday, 06-Nov-94 08:49:37 GMT", NULL, LM, NULL, true },
		{ NULL, "Sun Nov  6 08:49:37 1994", NULL, LM, NULL, true },
		{ NULL, LM, NULL, "Sun Nov  6 08:49:37 1994", NULL, true },
		{ NULL, LM "; length=12", NULL, LM, NULL, false },
		{ NULL, "yesterday", NULL, LM, NULL, false },
		{ NULL, "", NULL, LM, NULL, false },
		{ NULL, LM_AFTER, "\"abc\"", LM, NULL, true },
		/* Last-Modified decides over Date; Date when there is none. */
		{ NULL, LM, NULL, LM_AFTER, LM, false },
		{ NULL, LM, NULL, NULL, LM, true },
		{ NULL, LM, NULL, NULL, LM_AFTER, false },
		{ NULL, LM_AFTER, NULL, NULL, LM, true },
		{ NULL, LM, NULL, "garbage", LM, false },
		{ NULL, LM, NULL, NULL, "garbage", false },
		{ NULL, LM, NULL, NULL, NULL, false },
	};
	size_t i;
	bool got;

	for (i = 0; i < NELEM(cases); i++) {
		got = policy_not_modified(fenced(0, cases[i].inm),
		    len_of(cases[i].inm), fenced(1, cases[i].ims),
		    len_of(cases[i].ims), fenced(2, cases[i].etag),
		    len_of(cases[i].etag), fenced(3, cases[i].lm),
		    len_of(cases[i].lm), fenced(4, cases[i].date),
		    len_of(cases[i].date));
		if (got != cases[i].want)
			fail_msg("If-None-Match: %s, If-Modified-Since: %s; "
			    "ETag: %s, Last-Modified: %s, Date: %s: %s; want "
			    "%s", cases[i].inm ? cases[i].inm : "(none)",
			    cases[i].ims ? cases[i].ims : "(none)",
			    cases[i].etag ? cases[i].etag : "(none)",
			    cases[i].lm ? cases[i].lm : "(none)",
			    cases[i].date ? cases[i].date : "(none)",
			    got ? "304" : "no 304", cases[i].want ? "304" :
			    "no 304");
	}
}

/* -- Vary -------------------------------------------------------------- */

struct names {
	char	 s[512];
	size_t	 len;
};

static void
collect(void *arg, const char *name, size_t nlen)
{
	struct names *n = arg;

	assert_in_range(nlen, 1, 64);
	n->len += (size_t)snprintf(n->s + n->len, sizeof(n->s) - n->len,
	    "%s%.*s", n->len > 0 ? "|" : "", (int)nlen, name);
}

/* A field name of 64 bytes, the longest policy_vary_each() takes. */
#define NAME64	"abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ-" \
		"0123456789"

static void
test_vary(void **state)
{
	static const struct {
		const char	*in;
		size_t		 max;
		int		 want;
		const char	*names;
	} cases[] = {
		{ "", 8, 0, "" },
		{ " ", 8, 0, "" },
		{ ",, ,\t,", 8, 0, "" },
		{ "Accept", 8, 1, "accept" },
		{ "Accept-Encoding, User-Agent", 8, 2,
		    "accept-encoding|user-agent" },
		{ "  accept ,, ,USER-agent\t", 8, 2, "accept|user-agent" },
		{ "ACCEPT,accept", 8, 2, "accept|accept" },
		{ "a*b", 8, 1, "a*b" },
		{ "*", 8, -1, "" },
		{ " * ", 8, -1, "" },
		{ "Accept, *", 8, -1, "" },
		{ "*, Accept", 8, -1, "" },
		{ "a,b,c", 3, 3, "a|b|c" },
		{ "a,b,c", 2, -1, "" },
		{ "a", 0, -1, "" },
		{ "", 0, 0, "" },
		{ ", ,", 0, 0, "" },
		{ NAME64, 8, 1, "abcdefghijklmnopqrstuvwxyz-"
		    "abcdefghijklmnopqrstuvwxyz-0123456789" },
		{ NAME64 "x", 8, -1, "" },
		{ "Accept, " NAME64 "x", 8, -1, "" },
		{ "Accept Encoding", 8, -1, "" },
		{ "a=b", 8, -1, "" },
		{ "\"accept\"", 8, -1, "" },
		{ "accept;q=1", 8, -1, "" },
		{ "accept, \"", 8, -1, "" },
		{ "accept\xff", 8, -1, "" },
	};
	struct names n;
	size_t i;
	int got;

	for (i = 0; i < NELEM(cases); i++) {
		memset(&n, 0, sizeof(n));
		got = policy_vary_each(fenced(0, cases[i].in),
		    strlen(cases[i].in), cases[i].max, collect, &n);
		if (got != cases[i].want || strcmp(n.s, cases[i].names) != 0)
			fail_msg("Vary: %s (max %zu): %d \"%s\"; want %d \"%s\"",
			    cases[i].in, cases[i].max, got, n.s, cases[i].want,
			    cases[i].names);
	}
	memset(&n, 0, sizeof(n));
	assert_int_equal(policy_vary_each(NULL, 0, 8, collect, &n), 0);
}

/* -- bounds ------------------------------------------------------------ */

static void
ignore(void *arg, const char *name, size_t nlen)
{
}

/* Every function on s[0..len), fenced, five ways round. */
static void
all_on(const char *s, size_t len)
{
	struct policy_answer a = { .status = 200, .ttl_ms = TTL };
	struct policy_store st;
	struct cc cc;
	const char *p;
	char fields[600];
	int n;

	p = fenced_n(0, s, len);
	policy_cc_init(&cc);
	policy_cc_parse(&cc, p, len);
	(void)policy_http_date(p, len);
	(void)policy_request(p, len, p, len, p, len);
	(void)policy_request("GET", 3, NULL, 0, p, len);
	(void)policy_vary_each(p, len, 4, ignore, NULL);
	(void)policy_not_modified(p, len, NULL, 0, p, len, NULL, 0, NULL, 0);
	(void)policy_not_modified(NULL, 0, p, len, NULL, 0, p, len, p, len);
	(void)policy_not_modified(NULL, 0, p, len, NULL, 0, NULL, 0, p, len);
	a.fields = p;
	a.fields_len = len;
	policy_store(&a, &st);
	n = snprintf(fields, sizeof(fields), "Cache-Control: %.*s\r\n"
	    "Vary: %.*s\r\nAge: %.*s\r\nExpires: %.*s\r\n", (int)len, s,
	    (int)len, s, (int)len, s, (int)len, s);
	if (n > 0 && (size_t)n < sizeof(fields)) {
		a.fields = fenced_n(1, fields, (size_t)n);
		a.fields_len = (size_t)n;
		policy_store(&a, &st);
	}
}

/*
 * Nothing reads past the length it is given: every prefix of tricky
 * values (cut inside a quote, after a backslash, inside a date, after
 * "W/"), then pseudo-random strings of the bytes the parsers care
 * about.  A read past the end hits the unmapped page.
 */
static void
test_bounds(void **state)
{
	static const char *const tricky[] = {
		"max-age=60, private=\"a, \\\"b\\\\\", no-cache=\"x\"",
		"x=\"\\",
		T0_DATE, "Sunday, 06-Nov-94 08:49:37 GMT",
		"Wednesday, 09-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"W/\"abc\", \"def\", *", "Accept-Encoding, " NAME64 ", *",
		"Cache-Control: no-store\r\nVary: *\r\n", "Age: 60, 70",
	};
	static const char alphabet[] = "\"\\,= \t;W/*0123456789:-aAgeGMTSun"
	    "\r\nxmax-age";
	char buf[48];
	uint32_t seed = 12345;
	size_t i, j, len;

	for (i = 0; i < NELEM(tricky); i++)
		for (len = 0; len <= strlen(tricky[i]); len++)
			all_on(tricky[i], len);
	for (i = 0; i < 20000; i++) {
		seed = seed * 1103515245 + 12345;
		len = (seed >> 16) % sizeof(buf);
		for (j = 0; j < len; j++) {
			seed = seed * 1103515245 + 12345;
			buf[j] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		all_on(buf, len);
	}
	/* A cut date or tag is not the whole one. */
	assert_int_equal(policy_http_date(fenced_n(0, T0_DATE, 28), 28), -1);
	assert_int_equal(policy_http_date(T0_DATE "X", 29), T0);
	assert_false(policy_not_modified(fenced_n(0, "\"abc\"", 4), 4, NULL,
	    0, "\"abc\"", 5, NULL, 0, NULL, 0));
	assert_true(policy_not_modified("\"abc\"x", 5, NULL, 0,
	    fenced_n(1, "\"abc\"", 5), 5, NULL, 0, NULL, 0));
	assert_int_equal(policy_vary_each(fenced_n(0, "*", 0), 0, 1, ignore,
	    NULL), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http_date),
		cmocka_unit_test(test_format_date),
		cmocka_unit_test(test_cc_parse),
		cmocka_unit_test(test_cc_fields_add_up),
		cmocka_unit_test(test_request),
		cmocka_unit_test(test_store_rules),
		cmocka_unit_test(test_store_lifetime),
		cmocka_unit_test(test_store_initial_age),
		cmocka_unit_test(test_store_stale),
		cmocka_unit_test(test_store_refused_filled),
		cmocka_unit_test(test_age),
		cmocka_unit_test(test_not_modified),
		cmocka_unit_test(test_vary),
		cmocka_unit_test(test_bounds),
	};

	return cmocka_run_group_tests(tests, fences_setup, fences_teardown);
}
