/*
 * worker/http_parse.c: where a head ends, what a head says, which heads
 * are refused and with which status, and the chunked decoder fed in every
 * way the network may cut a body.  The framing rules are the ones that
 * stop request smuggling, so each refusal is asserted with its status.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/http_parse.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))
/* A literal with its length, so it may hold NUL bytes. */
#define S(lit)		lit, sizeof(lit) - 1

/* -- http_head_end ----------------------------------------------------- */

static void
test_head_end(void **state)
{
	static const struct {
		const char	*buf;
		size_t		 len;
		size_t		 want;
	} cases[] = {
		{ S("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 27 },
		{ S("GET / HTTP/1.1\r\nHost: h\r\n\r\nBODY"), 27 },
		{ S("GET / HTTP/1.1\nHost: h\n\n"), 24 },
		{ S("GET / HTTP/1.1\nHost: h\n\nGET / HTTP/1.1\n"), 24 },
		{ S("GET / HTTP/1.1\r\nHost: h\r\n\nX"), 26 },
		{ S("GET / HTTP/1.1\nHost: h\n\r\nX"), 25 },
		{ S("GET / HTTP/1.0\r\n\r\n"), 18 },
		/* not there yet */
		{ S(""), 0 },
		{ S("GET / HTTP/1.1\r\nHost: h\r\n"), 0 },
		{ S("GET / HTTP/1.1\r\nHost: h\r\n\r"), 0 },
		{ S("GET / HTTP/1.1\r\nHost: h\n"), 0 },
		{ S("GET / HTTP/1.1\r\nHost: h\r\n\rX\r\n"), 0 },
		{ S("GET / HTTP/1.1\r\n\r"), 0 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		size_t scan = 0, got;

		got = http_head_end(cases[i].buf, cases[i].len, &scan);
		if (got != cases[i].want)
			fail_msg("case %zu: http_head_end = %zu; want %zu", i,
			    got, cases[i].want);
		assert_true(scan <= cases[i].len);
	}
}

/* A head arriving a byte at a time is found exactly when it is whole. */
static void
test_head_end_bytewise(void **state)
{
	static const char *const heads[] = {
		"GET / HTTP/1.1\r\nHost: h\r\n\r\nBODY",
		"GET / HTTP/1.1\nHost: h\nX-A: 1\n\nBODY",
		"GET / HTTP/1.1\r\nHost: h\r\n\nBODY",
		"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nBODY",
	};
	size_t i;

	for (i = 0; i < NELEM(heads); i++) {
		const char *buf = heads[i];
		size_t total = strstr(buf, "BODY") - buf;
		size_t scan = 0, prev = 0, k, got = 0;

		for (k = 0; k <= strlen(buf); k++) {
			size_t fresh = 0;

			got = http_head_end(buf, k, &scan);
			/* Same answer as a scan from the start. */
			assert_int_equal(got, http_head_end(buf, k, &fresh));
			if (got != 0)
				break;
			assert_true(scan <= k);
			assert_true(scan >= prev);	/* never goes back */
			prev = scan;
		}
		if (got != total || k != total)
			fail_msg("head %zu: found %zu at %zu bytes; want %zu",
			    i, got, k, total);
	}
}

/* -- http_head_too_big ------------------------------------------------- */

static void
test_head_too_big(void **state)
{
	size_t n = 20000;
	char *buf = malloc(n);

	assert_non_null(buf);
	memset(buf, 'a', n);
	memcpy(buf, "GET /", 5);
	/* A request line that never ends. */
	assert_int_equal(http_head_too_big(buf, 100, 16384), 0);
	assert_int_equal(http_head_too_big(buf, HTTP_MAX_REQUEST_LINE - 1,
	    16384), 0);
	assert_int_equal(http_head_too_big(buf, HTTP_MAX_REQUEST_LINE, 16384),
	    414);
	assert_int_equal(http_head_too_big(buf, 12000, 16384), 414);
	/* Under max_head but no line end within max_head either. */
	assert_int_equal(http_head_too_big(buf, 4096, 4096), 414);
	/* A short request line, then too many header bytes. */
	buf[20] = '\n';
	assert_int_equal(http_head_too_big(buf, HTTP_MAX_REQUEST_LINE, 16384),
	    0);
	assert_int_equal(http_head_too_big(buf, 16383, 16384), 0);
	assert_int_equal(http_head_too_big(buf, 16384, 16384), 431);
	assert_int_equal(http_head_too_big(buf, 1024, 1024), 431);
	/* The line end must come within the request-line limit. */
	buf[20] = 'a';
	buf[HTTP_MAX_REQUEST_LINE + 10] = '\n';
	assert_int_equal(http_head_too_big(buf, 16384, 16384), 414);
	assert_int_equal(http_head_too_big(buf, 9000, 16384), 414);
	free(buf);
}

/* -- http_parse_head: valid heads -------------------------------------- */

struct head_case {
	const char	*name;
	const char	*raw;
	size_t		 len;
	const char	*method;
	const char	*target;
	const char	*path;
	const char	*query;		/* NULL: none */
	int		 minor;
	size_t		 nheaders;
	const char	*host;		/* NULL: none */
	int64_t		 content_length;
	bool		 chunked;
	bool		 keepalive;
	bool		 expect_continue;
};

static const struct head_case head_cases[] = {
	{ "minimal 1.1", S("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
	    "GET", "/", "/", NULL, 1, 1, "example.com", -1, false, true,
	    false },
	{ "path and query",
	    S("GET /a/b?x=1&y=/2 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"),
	    "GET", "/a/b?x=1&y=/2", "/a/b", "x=1&y=/2", 1, 2, "h", -1, false,
	    true, false },
	{ "empty query", S("GET /? HTTP/1.1\r\nHost: h\r\n\r\n"),
	    "GET", "/?", "/", "", 1, 1, "h", -1, false, true, false },
	{ "content-length", S("POST /up HTTP/1.1\r\nHost: h\r\n"
	    "Content-Length: 42\r\n\r\n"),
	    "POST", "/up", "/up", NULL, 1, 2, "h", 42, false, true, false },
	{ "content-length 0", S("POST /up HTTP/1.1\r\nHost: h\r\n"
	    "Content-Length: 0\r\n\r\n"),
	    "POST", "/up", "/up", NULL, 1, 2, "h", 0, false, true, false },
	{ "content-length list of equal values",
	    S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7,7\r\n\r\n"),
	    "POST", "/", "/", NULL, 1, 2, "h", 7, false, true, false },
	{ "two equal content-lengths",
	    S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n"
	    "content-length: 7\r\n\r\n"),
	    "POST", "/", "/", NULL, 1, 3, "h", 7, false, true, false },
	{ "chunked", S("POST / HTTP/1.1\r\nHost: h\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"),
	    "POST", "/", "/", NULL, 1, 2, "h", -1, true, true, false },
	{ "chunked, any case", S("POST / HTTP/1.1\r\nHost: h\r\n"
	    "transfer-encoding: Chunked\r\n\r\n"),
	    "POST", "/", "/", NULL, 1, 2, "h", -1, true, true, false },
	{ "chunked, spaces around", S("POST / HTTP/1.1\r\nHost: h\r\n"
	    "Transfer-Encoding: \t chunked \r\n\r\n"),
	    "POST", "/", "/", NULL, 1, 2, "h", -1, true, true, false },
	{ "1.0 without host", S("GET /old HTTP/1.0\r\n\r\n"),
	    "GET", "/old", "/old", NULL, 0, 0, NULL, -1, false, false, false },
	{ "1.0 keep-alive", S("GET / HTTP/1.0\r\n"
	    "Connection: Keep-Alive\r\n\r\n"),
	    "GET", "/", "/", NULL, 0, 1, NULL, -1, false, true, false },
	{ "1.1 close", S("GET / HTTP/1.1\r\nHost: h\r\n"
	    "Connection: Upgrade, close\r\n\r\n"),
	    "GET", "/", "/", NULL, 1, 2, "h", -1, false, false, false },
	{ "1.1 keep-alive is the default", S("GET / HTTP/1.1\r\nHost: h\r\n"
	    "Connection: keep-alive\r\n\r\n"),
	    "GET", "/", "/", NULL, 1, 2, "h", -1, false, true, false },
	{ "expect 100-continue", S("PUT /f HTTP/1.1\r\nHost: h\r\n"
	    "Content-Length: 3\r\nExpect: 100-Continue\r\n\r\n"),
	    "PUT", "/f", "/f", NULL, 1, 3, "h", 3, false, true, true },
	{ "expect in 1.0 is ignored", S("PUT /f HTTP/1.0\r\n"
	    "Content-Length: 3\r\nExpect: 100-continue\r\n\r\n"),
	    "PUT", "/f", "/f", NULL, 0, 2, NULL, 3, false, false, false },
	{ "absolute-form", S("GET http://example.com/p?q=1 HTTP/1.1\r\n"
	    "Host: other\r\n\r\n"),
	    "GET", "http://example.com/p?q=1", "/p", "q=1", 1, 1,
	    "example.com", -1, false, true, false },
	{ "absolute-form without a path", S("GET http://example.com "
	    "HTTP/1.1\r\nHost: example.com\r\n\r\n"),
	    "GET", "http://example.com", "/", NULL, 1, 1, "example.com", -1,
	    false, true, false },
	{ "absolute-form https, any case", S("GET HTTPS://Example.com:8443/x "
	    "HTTP/1.1\r\nHost: h\r\n\r\n"),
	    "GET", "HTTPS://Example.com:8443/x", "/x", NULL, 1, 1,
	    "Example.com:8443", -1, false, true, false },
	{ "OPTIONS *", S("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"),
	    "OPTIONS", "*", "*", NULL, 1, 1, "h", -1, false, true, false },
	{ "bare LF line ends", S("GET /lf HTTP/1.1\nHost: h\nX-A: 1\n\n"),
	    "GET", "/lf", "/lf", NULL, 1, 2, "h", -1, false, true, false },
	{ "lowercase method is a token", S("get / HTTP/1.1\r\nHost: h\r\n\r\n"),
	    "get", "/", "/", NULL, 1, 1, "h", -1, false, true, false },
	{ "method with token symbols", S("M-SEARCH /d HTTP/1.1\r\n"
	    "Host: h\r\n\r\n"),
	    "M-SEARCH", "/d", "/d", NULL, 1, 1, "h", -1, false, true, false },
	{ "HTTP/1.2 is read as 1.x", S("GET / HTTP/1.2\r\nHost: h\r\n\r\n"),
	    "GET", "/", "/", NULL, 2, 1, "h", -1, false, true, false },
	{ "empty host", S("GET / HTTP/1.1\r\nHost:\r\n\r\n"),
	    "GET", "/", "/", NULL, 1, 1, "", -1, false, true, false },
	{ "host with port and spaces", S("GET / HTTP/1.1\r\n"
	    "Host: \t h:8080 \t\r\n\r\n"),
	    "GET", "/", "/", NULL, 1, 1, "h:8080", -1, false, true, false },
};

static void
check_str(const char *name, const char *field, const char *got,
    size_t got_len, const char *want)
{
	if (want == NULL && got == NULL)
		return;
	if (want == NULL || got == NULL)
		fail_msg("%s: %s is %s; want %s", name, field,
		    got ? "set" : "NULL", want ? want : "NULL");
	if (got_len != strlen(want) || memcmp(got, want, got_len) != 0)
		fail_msg("%s: %s is \"%.*s\"; want \"%s\"", name, field,
		    (int)got_len, got, want);
}

static void
test_parse_valid(void **state)
{
	static struct http_head h;
	size_t i;

	for (i = 0; i < NELEM(head_cases); i++) {
		const struct head_case *c = &head_cases[i];
		const char *why = NULL;
		size_t scan = 0;
		int status = 0;

		if (http_head_end(c->raw, c->len, &scan) != c->len)
			fail_msg("%s: http_head_end does not end at %zu",
			    c->name, c->len);
		memset(&h, 0x5a, sizeof(h));
		if (http_parse_head(c->raw, c->len, &h, &status, &why) !=
		    HTTP_OK)
			fail_msg("%s: refused with %d (%s)", c->name, status,
			    why ? why : "?");
		check_str(c->name, "method", h.method, h.method_len,
		    c->method);
		check_str(c->name, "target", h.target, h.target_len,
		    c->target);
		check_str(c->name, "path", h.path, h.path_len, c->path);
		check_str(c->name, "query", h.query, h.query_len, c->query);
		check_str(c->name, "host", h.host, h.host_len, c->host);
		if (h.minor != c->minor || h.nheaders != c->nheaders ||
		    h.content_length != c->content_length ||
		    h.chunked != c->chunked || h.keepalive != c->keepalive ||
		    h.expect_continue != c->expect_continue ||
		    h.head_len != c->len)
			fail_msg("%s: minor %d headers %zu length %lld chunked "
			    "%d keepalive %d expect %d head_len %zu; want %d %zu "
			    "%lld %d %d %d %zu", c->name, h.minor, h.nheaders,
			    (long long)h.content_length, h.chunked,
			    h.keepalive, h.expect_continue, h.head_len,
			    c->minor, c->nheaders,
			    (long long)c->content_length, c->chunked,
			    c->keepalive, c->expect_continue, c->len);
	}
}

/*
 * RFC 3986: the authority ends at the first '/', '?' or '#'.  With no
 * path, "http://example.com?x=1" has the authority "example.com", the
 * path "/" (RFC 9112 section 3.2.2) and the query "x=1".
 */
static void
test_parse_absolute_query(void **state)
{
	static const char raw[] = "GET http://example.com?x=1 HTTP/1.1\r\n"
	    "Host: example.com\r\n\r\n";
	static struct http_head h;
	const char *why = NULL;
	int status = 0;

	assert_int_equal(http_parse_head(raw, sizeof(raw) - 1, &h, &status,
	    &why), HTTP_OK);
	check_str("absolute-form with a query", "host", h.host, h.host_len,
	    "example.com");
	check_str("absolute-form with a query", "path", h.path, h.path_len,
	    "/");
	check_str("absolute-form with a query", "query", h.query, h.query_len,
	    "x=1");
}

/* Names and values point into the buffer, trimmed of surrounding blanks. */
static void
test_parse_fields(void **state)
{
	static const char raw[] =
	    "GET / HTTP/1.1\r\n"
	    "Host: h\r\n"
	    "X-Trim:  \t spaced out \t \r\n"
	    "X-Empty:\r\n"
	    "X-Blank:   \r\n"
	    "X-Colons: a:b: c\r\n"
	    "X-Obs-Text: caf\xc3\xa9\r\n"
	    "x-case: Mixed\r\n"
	    "\r\n";
	static const struct {
		const char	*name;
		const char	*value;
	} want[] = {
		{ "Host", "h" },
		{ "X-Trim", "spaced out" },
		{ "X-Empty", "" },
		{ "X-Blank", "" },
		{ "X-Colons", "a:b: c" },
		{ "X-Obs-Text", "caf\xc3\xa9" },
		{ "x-case", "Mixed" },
	};
	static struct http_head h;
	const struct http_header *f;
	const char *why;
	int status;
	size_t i;

	assert_int_equal(http_parse_head(raw, sizeof(raw) - 1, &h, &status,
	    &why), HTTP_OK);
	assert_int_equal(h.nheaders, NELEM(want));
	for (i = 0; i < NELEM(want); i++) {
		check_str(want[i].name, "name", h.headers[i].name,
		    h.headers[i].name_len, want[i].name);
		check_str(want[i].name, "value", h.headers[i].value,
		    h.headers[i].value_len, want[i].value);
		assert_true(h.headers[i].name >= raw &&
		    h.headers[i].name < raw + sizeof(raw));
	}
	f = http_find_header(&h, "X-CASE");
	assert_ptr_equal(f, &h.headers[6]);
	assert_null(http_find_header(&h, "X-Missing"));
	assert_null(http_find_header(&h, "X-Tri"));
	assert_true(http_token_eq("Content-Length", 14, "content-length"));
	assert_false(http_token_eq("Content-Lengthy", 15, "content-length"));
	assert_false(http_token_eq("Content-Lengt", 13, "content-length"));
}

/* A head with room for exactly HTTP_MAX_HEADERS fields, or one more. */
static char *
many_headers(size_t n, size_t *len)
{
	size_t cap = 64 + n * 32, off = 0, i;
	char *buf = malloc(cap);

	assert_non_null(buf);
	off += (size_t)snprintf(buf + off, cap - off,
	    "GET / HTTP/1.1\r\nHost: h\r\n");
	for (i = 1; i < n; i++)
		off += (size_t)snprintf(buf + off, cap - off, "X-H%zu: %zu\r\n",
		    i, i);
	off += (size_t)snprintf(buf + off, cap - off, "\r\n");
	*len = off;
	return buf;
}

static void
test_parse_header_count(void **state)
{
	static struct http_head h;
	const char *why = NULL;
	int status = 0;
	size_t len;
	char *buf;

	buf = many_headers(HTTP_MAX_HEADERS, &len);
	assert_int_equal(http_parse_head(buf, len, &h, &status, &why),
	    HTTP_OK);
	assert_int_equal(h.nheaders, HTTP_MAX_HEADERS);
	free(buf);

	buf = many_headers(HTTP_MAX_HEADERS + 1, &len);
	assert_int_equal(http_parse_head(buf, len, &h, &status, &why),
	    HTTP_ERROR);
	assert_int_equal(status, 431);
	assert_string_equal(why, "too many header fields");
	free(buf);
}

/* -- http_parse_head: refusals ----------------------------------------- */

#define HOST	"Host: h\r\n"

static const struct {
	const char	*name;
	const char	*raw;
	size_t		 len;
	int		 status;
	const char	*why;
} bad_heads[] = {
	/* framing */
	{ "CL and TE", S("POST / HTTP/1.1\r\n" HOST "Content-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"),
	    400, "both Content-Length and Transfer-Encoding" },
	{ "TE and CL", S("POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: "
	    "chunked\r\nContent-Length: 5\r\n\r\n"),
	    400, "both Content-Length and Transfer-Encoding" },
	{ "differing CLs", S("POST / HTTP/1.1\r\n" HOST "Content-Length: 5\r\n"
	    "Content-Length: 6\r\n\r\n"), 400, "invalid Content-Length" },
	{ "differing CL list", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length: 5, 6\r\n\r\n"), 400, "invalid Content-Length" },
	{ "CL not a number", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length: five\r\n\r\n"), 400, "invalid Content-Length" },
	{ "CL negative", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length: -1\r\n\r\n"), 400, "invalid Content-Length" },
	{ "CL with a sign", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length: +5\r\n\r\n"), 400, "invalid Content-Length" },
	{ "CL empty", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length:\r\n\r\n"), 400, "invalid Content-Length" },
	{ "CL two numbers", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length: 5 5\r\n\r\n"), 400, "invalid Content-Length" },
	{ "CL hex", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length: 0x10\r\n\r\n"), 400, "invalid Content-Length" },
	{ "CL overflow", S("POST / HTTP/1.1\r\n" HOST
	    "Content-Length: 99999999999999999999\r\n\r\n"),
	    400, "invalid Content-Length" },
	{ "TE not ending in chunked", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: chunked, gzip\r\n\r\n"),
	    400, "Transfer-Encoding must end in chunked" },
	{ "TE gzip alone", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: gzip\r\n\r\n"),
	    400, "Transfer-Encoding must end in chunked" },
	{ "TE chunked twice", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: chunked, chunked\r\n\r\n"),
	    400, "invalid Transfer-Encoding" },
	{ "TE gzip, chunked", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: gzip, chunked\r\n\r\n"),
	    501, "transfer coding not implemented" },
	{ "TE over two fields", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
	    501, "transfer coding not implemented" },
	/* empty list elements: a framing header is read strictly */
	{ "TE ,chunked", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: ,chunked\r\n\r\n"),
	    400, "invalid Transfer-Encoding" },
	{ "TE chunked,", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: chunked,\r\n\r\n"),
	    400, "invalid Transfer-Encoding" },
	{ "TE , chunked with spaces", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding:  , chunked\r\n\r\n"),
	    400, "invalid Transfer-Encoding" },
	{ "TE gzip,,chunked", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: gzip,,chunked\r\n\r\n"),
	    400, "invalid Transfer-Encoding" },
	{ "TE empty", S("POST / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: \r\n\r\n"),
	    400, "invalid Transfer-Encoding" },
	{ "TE in HTTP/1.0", S("POST / HTTP/1.0\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"),
	    400, "Transfer-Encoding must end in chunked" },

	/* field syntax */
	{ "obs-fold", S("GET / HTTP/1.1\r\n" HOST "X-A: a\r\n b\r\n\r\n"),
	    400, "obsolete line folding" },
	{ "obs-fold with a tab", S("GET / HTTP/1.1\r\n" HOST
	    "X-A: a\r\n\tb\r\n\r\n"), 400, "obsolete line folding" },
	{ "space before colon", S("GET / HTTP/1.1\r\nHost : h\r\n\r\n"),
	    400, "whitespace before colon" },
	{ "tab before colon", S("GET / HTTP/1.1\r\n" HOST
	    "Content-Length\t: 0\r\n\r\n"), 400, "whitespace before colon" },
	{ "no colon", S("GET / HTTP/1.1\r\n" HOST "X-A\r\n\r\n"),
	    400, "malformed header" },
	{ "empty name", S("GET / HTTP/1.1\r\n" HOST ": v\r\n\r\n"),
	    400, "malformed header" },
	{ "separator in name", S("GET / HTTP/1.1\r\n" HOST
	    "X(A): v\r\n\r\n"), 400, "malformed header" },
	{ "NUL in a value", S("GET / HTTP/1.1\r\n" HOST
	    "X-A: a\0b\r\n\r\n"), 400, "control character in header" },
	{ "bare CR in a value", S("GET / HTTP/1.1\r\n" HOST
	    "X-A: a\rb\r\n\r\n"), 400, "control character in header" },
	{ "CR CR LF", S("GET / HTTP/1.1\r\n" HOST "X-A: a\r\r\n\r\n"),
	    400, "control character in header" },
	{ "DEL in a value", S("GET / HTTP/1.1\r\n" HOST
	    "X-A: a\x7f\r\n\r\n"), 400, "control character in header" },
	{ "ESC in a value", S("GET / HTTP/1.1\r\n" HOST
	    "X-A: \x1b[0m\r\n\r\n"), 400, "control character in header" },
	{ "no blank line", S("GET / HTTP/1.1\r\n" HOST),
	    400, "truncated head" },

	/* Host */
	{ "missing Host in 1.1", S("GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"),
	    400, "missing Host header" },
	{ "two Hosts", S("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
	    400, "more than one Host" },
	{ "two equal Hosts", S("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
	    400, "more than one Host" },

	/* request line */
	{ "HTTP/2.0", S("GET / HTTP/2.0\r\n" HOST "\r\n"),
	    505, "HTTP version not supported" },
	/* A HEAD with a body could be turned into an upload upstream. */
	{ "HEAD with Content-Length", S("HEAD / HTTP/1.1\r\n" HOST
	    "Content-Length: 5\r\n\r\n"), 400,
	    "a HEAD request cannot have a body" },
	{ "HEAD chunked", S("HEAD / HTTP/1.1\r\n" HOST
	    "Transfer-Encoding: chunked\r\n\r\n"), 400,
	    "a HEAD request cannot have a body" },
	/* 33 characters: a method agate will not carry. */
	{ "method too long", S("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG / HTTP/1.1\r\n"
	    HOST "\r\n"), 501, "method not implemented" },
	{ "HTTP/0.9", S("GET / HTTP/0.9\r\n" HOST "\r\n"),
	    505, "HTTP version not supported" },
	{ "version letters", S("GET / HTTP/1.x\r\n" HOST "\r\n"),
	    400, "malformed HTTP version" },
	{ "version lowercase", S("GET / http/1.1\r\n" HOST "\r\n"),
	    400, "malformed HTTP version" },
	{ "version without dot", S("GET / HTTP/11\r\n" HOST "\r\n"),
	    400, "malformed HTTP version" },
	{ "version with extra digit", S("GET / HTTP/1.10\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "space after version", S("GET / HTTP/1.1 \r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "no version", S("GET /\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "two spaces", S("GET  / HTTP/1.1\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "no method", S(" / HTTP/1.1\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "method with a separator", S("GE(T / HTTP/1.1\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "tab as separator", S("GET\t/ HTTP/1.1\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "NUL in target", S("GET /a\0b HTTP/1.1\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "blank line first", S("\r\nGET / HTTP/1.1\r\n" HOST "\r\n"),
	    400, "malformed request line" },
	{ "target not a path", S("GET example.com HTTP/1.1\r\n" HOST "\r\n"),
	    400, "bad request target" },
	{ "* for GET", S("GET * HTTP/1.1\r\n" HOST "\r\n"),
	    400, "bad request target" },
	{ "* for M-SEARCH", S("M-SEARCH * HTTP/1.1\r\n" HOST "\r\n"),
	    400, "bad request target" },
	{ "bare scheme", S("GET http:// HTTP/1.1\r\n" HOST "\r\n"),
	    400, "bad request target" },

	/* Expect */
	{ "Expect other than 100-continue", S("PUT / HTTP/1.1\r\n" HOST
	    "Expect: 200-ok\r\n\r\n"), 417, "unsupported expectation" },
	{ "Expect with a parameter", S("PUT / HTTP/1.1\r\n" HOST
	    "Expect: 100-continue; x=1\r\n\r\n"),
	    417, "unsupported expectation" },
};

static void
test_parse_errors(void **state)
{
	static struct http_head h;
	size_t i, failed = 0;

	for (i = 0; i < NELEM(bad_heads); i++) {
		const char *why = NULL;
		int status = 0;
		enum http_result rc;

		rc = http_parse_head(bad_heads[i].raw, bad_heads[i].len, &h,
		    &status, &why);
		if (rc != HTTP_ERROR) {
			print_error("%s: accepted (%d)\n", bad_heads[i].name,
			    rc);
			failed++;
		} else if (status != bad_heads[i].status ||
		    why == NULL || strcmp(why, bad_heads[i].why) != 0) {
			print_error("%s: %d \"%s\"; want %d \"%s\"\n",
			    bad_heads[i].name, status, why ? why : "(null)",
			    bad_heads[i].status, bad_heads[i].why);
			failed++;
		}
	}
	if (failed > 0)
		fail_msg("%zu of %zu refusals failed", failed, NELEM(bad_heads));
}

static void
test_reason(void **state)
{
	assert_string_equal(http_reason(200), "OK");
	assert_string_equal(http_reason(404), "Not Found");
	assert_string_equal(http_reason(414), "URI Too Long");
	assert_string_equal(http_reason(417), "Expectation Failed");
	assert_string_equal(http_reason(431),
	    "Request Header Fields Too Large");
	assert_string_equal(http_reason(505), "HTTP Version Not Supported");
	assert_string_equal(http_reason(299), "OK");
	assert_string_equal(http_reason(418), "Client Error");
	assert_string_equal(http_reason(599), "Server Error");
}

/* -- chunked ----------------------------------------------------------- */

struct dechunk {
	enum http_chunk_result	 rc;		/* DONE, ERROR, or AGAIN at EOF */
	char			 data[8192];
	size_t			 dlen;
	size_t			 consumed;
	size_t			 max_span;	/* largest data span seen */
	bool			 overflow;
};

/*
 * Feeds src to a fresh decoder in pieces: piece(i) gives the size of the
 * i-th arrival.  Bytes a call leaves unconsumed are offered again with
 * the next arrival, as a connection's read buffer does.
 */
static void
dechunk(const char *src, size_t len, size_t max,
    size_t (*piece)(size_t i, void *arg), void *arg, struct dechunk *out)
{
	struct http_chunked c;
	size_t avail = 0, pos = 0, i = 0, calls = 0;

	memset(out, 0, sizeof(*out));
	http_chunked_init(&c);
	for (;;) {
		const char *data = NULL;
		size_t used = 12345, dlen = 12345;
		enum http_chunk_result rc;

		if (pos == avail) {
			size_t n;

			if (avail == len) {
				out->rc = CHUNK_AGAIN;
				break;
			}
			n = piece(i++, arg);
			avail = avail + n > len ? len : avail + n;
		}
		rc = http_chunked_next(&c, src + pos, avail - pos, max, &used,
		    &data, &dlen);
		assert_true(used <= avail - pos);
		assert_true(++calls < 100000);
		pos += used;
		if (rc == CHUNK_DATA) {
			assert_true(dlen > 0 && dlen <= max);
			/* The span is the last dlen bytes consumed. */
			assert_ptr_equal(data + dlen, src + pos);
			if (out->dlen + dlen > sizeof(out->data)) {
				out->overflow = true;
				out->rc = CHUNK_ERROR;
				break;
			}
			memcpy(out->data + out->dlen, data, dlen);
			out->dlen += dlen;
			if (dlen > out->max_span)
				out->max_span = dlen;
			continue;
		}
		assert_int_equal(dlen, 0);
		if (rc == CHUNK_AGAIN) {
			/* Framing is consumed as it comes: nothing left over. */
			assert_int_equal(pos, avail);
			continue;
		}
		out->rc = rc;
		break;
	}
	out->consumed = pos;
}

static size_t
piece_all(size_t i, void *arg)
{
	return SIZE_MAX / 2;
}

static size_t
piece_one(size_t i, void *arg)
{
	return 1;
}

/* The first piece is *arg bytes, the second everything else. */
static size_t
piece_split(size_t i, void *arg)
{
	return i == 0 ? *(size_t *)arg : SIZE_MAX / 2;
}

/* Pieces of 1..17 bytes from a small LCG seeded by *arg. */
static size_t
piece_random(size_t i, void *arg)
{
	uint32_t *seed = arg;

	*seed = *seed * 1103515245u + 12345u;
	return 1 + (*seed >> 16) % 17;
}

struct chunk_case {
	const char	*name;
	const char	*body;		/* chunked framing; may be followed */
	size_t		 len;		/*   by bytes of a next request */
	const char	*data;		/* decoded */
	size_t		 dlen;
	size_t		 framed;	/* bytes up to the end of the body */
};

#define CHUNKS(name, body, data, extra) \
	{ name, body extra, sizeof(body extra) - 1, data, sizeof(data) - 1, \
	    sizeof(body) - 1 }

static const struct chunk_case chunk_cases[] = {
	CHUNKS("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", ""),
	CHUNKS("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	    "hello world", ""),
	CHUNKS("hex sizes", "A\r\n0123456789\r\na\r\nabcdefghij\r\n"
	    "1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
	    "0123456789abcdefghij0123456789abcdef0123456789abcde", ""),
	CHUNKS("leading zeros, 15 digits",
	    "000000000000005\r\nhello\r\n000\r\n\r\n", "hello", ""),
	CHUNKS("extensions", "5;name=value\r\nhello\r\n"
	    "3 ; a=\"b c\";d\r\nxyz\r\n0;last\r\n\r\n", "helloxyz", ""),
	CHUNKS("BWS before CRLF", "5 \t\r\nhello\r\n0\r\n\r\n", "hello", ""),
	CHUNKS("trailers", "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n"
	    "Y: two words\r\n\r\n", "hello", ""),
	CHUNKS("bare LF", "5\nhello\n0\nX: 1\n\n", "hello", ""),
	CHUNKS("CRLF in data", "4\r\n\r\n\r\n\r\n2\r\n0\n\r\n0\r\n\r\n",
	    "\r\n\r\n0\n", ""),
	CHUNKS("framing-like data", "b\r\n0\r\n\r\nGET / \r\n0\r\n\r\n",
	    "0\r\n\r\nGET / ", ""),
	CHUNKS("empty body", "0\r\n\r\n", "", ""),
	CHUNKS("next request follows", "3\r\nabc\r\n0\r\n\r\n", "abc",
	    "GET / HTTP/1.1\r\n"),
	CHUNKS("bytes after trailers", "1\r\nz\r\n0\r\nT: 1\r\n\r\n", "z",
	    "0\r\n\r\n"),
};

static void
expect_body(const struct chunk_case *c, const struct dechunk *d,
    const char *how)
{
	if (d->rc != CHUNK_DONE || d->dlen != c->dlen ||
	    memcmp(d->data, c->data, c->dlen) != 0 ||
	    d->consumed != c->framed)
		fail_msg("%s, %s: rc %d, %zu bytes \"%.*s\", consumed %zu; "
		    "want DONE, %zu bytes, consumed %zu", c->name, how, d->rc,
		    d->dlen, (int)d->dlen, d->data, d->consumed, c->dlen,
		    c->framed);
}

static void
test_chunked_whole(void **state)
{
	static struct dechunk d;
	size_t i;

	for (i = 0; i < NELEM(chunk_cases); i++) {
		const struct chunk_case *c = &chunk_cases[i];

		dechunk(c->body, c->len, SIZE_MAX, piece_all, NULL, &d);
		expect_body(c, &d, "at once");
	}
}

static void
test_chunked_bytewise(void **state)
{
	static struct dechunk d;
	size_t i;

	for (i = 0; i < NELEM(chunk_cases); i++) {
		const struct chunk_case *c = &chunk_cases[i];

		dechunk(c->body, c->len, SIZE_MAX, piece_one, NULL, &d);
		expect_body(c, &d, "byte by byte");
	}
}

/* Cut in two at every possible boundary. */
static void
test_chunked_every_split(void **state)
{
	static struct dechunk d;
	char how[64];
	size_t i, k;

	for (i = 0; i < NELEM(chunk_cases); i++) {
		const struct chunk_case *c = &chunk_cases[i];

		for (k = 0; k <= c->len; k++) {
			dechunk(c->body, c->len, SIZE_MAX, piece_split, &k,
			    &d);
			snprintf(how, sizeof(how), "split at %zu", k);
			expect_body(c, &d, how);
		}
	}
}

static void
test_chunked_random_pieces(void **state)
{
	static struct dechunk d;
	char how[64];
	uint32_t seed, s;
	size_t i;

	for (i = 0; i < NELEM(chunk_cases); i++) {
		for (s = 1; s <= 50; s++) {
			seed = s;
			dechunk(chunk_cases[i].body, chunk_cases[i].len,
			    SIZE_MAX, piece_random, &seed, &d);
			snprintf(how, sizeof(how), "random pieces, seed %u", s);
			expect_body(&chunk_cases[i], &d, how);
		}
	}
}

/* max bounds every data span, whatever the arrivals. */
static void
test_chunked_max(void **state)
{
	static const size_t maxes[] = { 1, 2, 3, 7, 64 };
	static struct dechunk d;
	char how[64];
	uint32_t seed;
	size_t i, m;

	for (i = 0; i < NELEM(chunk_cases); i++) {
		for (m = 0; m < NELEM(maxes); m++) {
			dechunk(chunk_cases[i].body, chunk_cases[i].len,
			    maxes[m], piece_all, NULL, &d);
			snprintf(how, sizeof(how), "max %zu", maxes[m]);
			expect_body(&chunk_cases[i], &d, how);
			assert_true(d.max_span <= maxes[m]);
			seed = (uint32_t)(i * 31 + m);
			dechunk(chunk_cases[i].body, chunk_cases[i].len,
			    maxes[m], piece_random, &seed, &d);
			expect_body(&chunk_cases[i], &d, how);
			assert_true(d.max_span <= maxes[m]);
		}
	}
}

/* A 4 KiB chunk comes out in spans as large as the input allows. */
static void
test_chunked_large(void **state)
{
	static char body[5000];
	static struct dechunk d;
	size_t n = 0, i;

	n += (size_t)snprintf(body, sizeof(body), "1000\r\n");
	for (i = 0; i < 4096; i++)
		body[n++] = (char)('a' + i % 26);
	memcpy(body + n, "\r\n0\r\n\r\n", 7);
	n += 7;
	dechunk(body, n, SIZE_MAX, piece_all, NULL, &d);
	assert_int_equal(d.rc, CHUNK_DONE);
	assert_int_equal(d.dlen, 4096);
	assert_int_equal(d.max_span, 4096);	/* one span, no copying */
	assert_memory_equal(d.data, body + 6, 4096);
	assert_int_equal(d.consumed, n);
	dechunk(body, n, 1000, piece_all, NULL, &d);
	assert_int_equal(d.rc, CHUNK_DONE);
	assert_int_equal(d.dlen, 4096);
	assert_int_equal(d.max_span, 1000);
}

/* After the end, the decoder stays done and consumes nothing. */
static void
test_chunked_done_stays_done(void **state)
{
	static const char body[] = "0\r\n\r\nGET";
	struct http_chunked c;
	const char *data;
	size_t used, dlen;

	http_chunked_init(&c);
	assert_int_equal(http_chunked_next(&c, body, sizeof(body) - 1, 100,
	    &used, &data, &dlen), CHUNK_DONE);
	assert_int_equal(used, 5);
	assert_int_equal(http_chunked_next(&c, body + 5, 3, 100, &used, &data,
	    &dlen), CHUNK_DONE);
	assert_int_equal(used, 0);
	assert_int_equal(dlen, 0);
}

static const struct {
	const char	*name;
	const char	*body;
	size_t		 len;
} bad_chunks[] = {
	{ "bad hex", S("Z\r\nhello\r\n0\r\n\r\n") },
	{ "no size", S("\r\nhello\r\n0\r\n\r\n") },
	{ "bad hex in a later chunk",
	    S("5\r\nhello\r\ng\r\nworld\r\n0\r\n\r\n") },
	{ "negative size", S("-5\r\nhello\r\n0\r\n\r\n") },
	{ "0x prefix", S("0x5\r\nhello\r\n0\r\n\r\n") },
	{ "missing CRLF after data", S("5\r\nhelloX\r\n0\r\n\r\n") },
	{ "data longer than the size", S("5\r\nhello!\r\n0\r\n\r\n") },
	{ "size line right after data", S("5\r\nhello0\r\n\r\n") },
	{ "16 hex digits", S("0000000000000005\r\nhello\r\n0\r\n\r\n") },
	{ "size near 2^64", S("ffffffffffffffff\r\n") },
	{ "bare CR after size", S("5\rhello\r\n0\r\n\r\n") },
	{ "bare CR after data", S("5\r\nhello\r0\r\n\r\n") },
	{ "bare CR in the last line", S("5\r\nhello\r\n0\r\n\rX") },
	{ "bare CR in a trailer", S("0\r\nX: a\rb\r\n\r\n") },
	{ "CR CR after data", S("5\r\nhello\r\r\n0\r\n\r\n") },
	{ "control char in extension", S("5;a\x01" "b\r\nhello\r\n0\r\n\r\n") },
	{ "NUL in extension", S("5;a\0\r\nhello\r\n0\r\n\r\n") },
	{ "DEL in extension", S("5;\x7f\r\nhello\r\n0\r\n\r\n") },
	{ "NUL in a trailer", S("0\r\nX: \0\r\n\r\n") },
	{ "junk after size", S("5 x\r\nhello\r\n0\r\n\r\n") },
	{ "letter after size", S("5g\r\nhello\r\n0\r\n\r\n") },
	{ "two sizes", S("5 5\r\nhello\r\n0\r\n\r\n") },
	{ "comma after size", S("5,\r\nhello\r\n0\r\n\r\n") },
};

static void
test_chunked_errors(void **state)
{
	static struct dechunk d;
	size_t i;

	for (i = 0; i < NELEM(bad_chunks); i++) {
		dechunk(bad_chunks[i].body, bad_chunks[i].len, SIZE_MAX,
		    piece_all, NULL, &d);
		if (d.rc != CHUNK_ERROR)
			fail_msg("%s, at once: rc %d; want ERROR",
			    bad_chunks[i].name, d.rc);
		dechunk(bad_chunks[i].body, bad_chunks[i].len, SIZE_MAX,
		    piece_one, NULL, &d);
		if (d.rc != CHUNK_ERROR)
			fail_msg("%s, byte by byte: rc %d; want ERROR",
			    bad_chunks[i].name, d.rc);
		dechunk(bad_chunks[i].body, bad_chunks[i].len, 2,
		    piece_one, NULL, &d);
		if (d.rc != CHUNK_ERROR)
			fail_msg("%s, max 2: rc %d; want ERROR",
			    bad_chunks[i].name, d.rc);
	}
}

/* Size lines and trailer sections are bounded. */
static void
test_chunked_limits(void **state)
{
	static char body[40000];
	static struct dechunk d;
	size_t n;

	/* A 5000-byte extension. */
	n = (size_t)snprintf(body, sizeof(body), "5;x=");
	memset(body + n, 'e', 5000);
	n += 5000;
	n += (size_t)snprintf(body + n, sizeof(body) - n,
	    "\r\nhello\r\n0\r\n\r\n");
	dechunk(body, n, SIZE_MAX, piece_all, NULL, &d);
	assert_int_equal(d.rc, CHUNK_ERROR);

	/* 20000 bytes of trailers. */
	n = (size_t)snprintf(body, sizeof(body), "0\r\n");
	while (n < 20000)
		n += (size_t)snprintf(body + n, sizeof(body) - n,
		    "X-Trailer: 0123456789\r\n");
	n += (size_t)snprintf(body + n, sizeof(body) - n, "\r\n");
	dechunk(body, n, SIZE_MAX, piece_all, NULL, &d);
	assert_int_equal(d.rc, CHUNK_ERROR);

	/* A 1000-byte extension and 8000 bytes of trailers are fine. */
	n = (size_t)snprintf(body, sizeof(body), "5;x=");
	memset(body + n, 'e', 1000);
	n += 1000;
	n += (size_t)snprintf(body + n, sizeof(body) - n,
	    "\r\nhello\r\n0\r\n");
	while (n < 9000)
		n += (size_t)snprintf(body + n, sizeof(body) - n,
		    "X-Trailer: 0123456789\r\n");
	n += (size_t)snprintf(body + n, sizeof(body) - n, "\r\n");
	dechunk(body, n, SIZE_MAX, piece_all, NULL, &d);
	assert_int_equal(d.rc, CHUNK_DONE);
	assert_int_equal(d.dlen, 5);
	assert_int_equal(d.consumed, n);
}

/* A body cut short is not done, however it is cut. */
static void
test_chunked_incomplete(void **state)
{
	static const char body[] = "5\r\nhello\r\n0\r\nX: 1\r\n\r\n";
	static struct dechunk d;
	size_t k;

	for (k = 0; k < sizeof(body) - 1; k++) {
		dechunk(body, k, SIZE_MAX, piece_all, NULL, &d);
		if (d.rc != CHUNK_AGAIN || d.consumed != k)
			fail_msg("first %zu bytes: rc %d consumed %zu; want "
			    "AGAIN, all", k, d.rc, d.consumed);
		assert_true(d.dlen <= 5);
		assert_memory_equal(d.data, "hello", d.dlen);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_head_end),
		cmocka_unit_test(test_head_end_bytewise),
		cmocka_unit_test(test_head_too_big),
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_absolute_query),
		cmocka_unit_test(test_parse_fields),
		cmocka_unit_test(test_parse_header_count),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_reason),
		cmocka_unit_test(test_chunked_whole),
		cmocka_unit_test(test_chunked_bytewise),
		cmocka_unit_test(test_chunked_every_split),
		cmocka_unit_test(test_chunked_random_pieces),
		cmocka_unit_test(test_chunked_max),
		cmocka_unit_test(test_chunked_large),
		cmocka_unit_test(test_chunked_done_stays_done),
		cmocka_unit_test(test_chunked_errors),
		cmocka_unit_test(test_chunked_limits),
		cmocka_unit_test(test_chunked_incomplete),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
