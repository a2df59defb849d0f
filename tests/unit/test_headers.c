/*
 * gateway/headers.c: what crosses the gateway in each direction.  Towards
 * the upstream: the client's end-to-end fields, then X-Forwarded-*,
 * X-Request-Id (framing is each transport's own).  Towards the client:
 * the upstream's fields without hop-by-hop ones or framing, with its
 * Content-Length pulled out and agate's X-Request-Id.
 *
 * A request is built by hand: its head parsed from a literal, and a
 * minimal connection and listener behind it for req_peer()/req_tls().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "gateway/gateway.h"
#include "lib/buf.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/worker.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* -- headers_hop_by_hop ------------------------------------------------ */

static void
test_hop_by_hop(void **state)
{
	static const struct {
		const char	*name;
		bool		 hop;
	} cases[] = {
		{ "Connection", true },
		{ "connection", true },
		{ "Keep-Alive", true },
		{ "KEEP-ALIVE", true },
		{ "TE", true },
		{ "te", true },
		{ "Trailer", true },
		{ "Transfer-Encoding", true },
		{ "transfer-encoding", true },
		{ "Upgrade", true },
		{ "Proxy-Authorization", true },
		{ "Proxy-Authenticate", true },
		{ "Proxy-Connection", true },
		{ "proxy-foo", true },
		{ "Content-Length", false },
		{ "Host", false },
		{ "Trailers", false },
		{ "TEE", false },
		{ "T", false },
		{ "Upgrade-Insecure-Requests", false },
		{ "Proxy", false },
		{ "X-Proxy-Id", false },
		{ "Keep-Alives", false },
		{ "X-Connection", false },
		{ "Accept", false },
		{ "Cookie", false },
		{ "", false },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++)
		if (headers_hop_by_hop(cases[i].name, strlen(cases[i].name)) !=
		    cases[i].hop)
			fail_msg("headers_hop_by_hop(\"%s\") = %d; want %d",
			    cases[i].name, !cases[i].hop, cases[i].hop);
	/* Only len bytes count. */
	assert_true(headers_hop_by_hop("Connection-X", 10));
	assert_true(headers_hop_by_hop("TEX", 2));
	assert_false(headers_hop_by_hop("Connection", 9));
}

/* -- headers_upstream_request ------------------------------------------ */

struct fake {
	struct listen_cfg	 lcfg;
	struct listener		 lst;
	struct conn		 conn;
	struct request		 req;
};

/* trusted_proxies: 192.0.2.0/24 (the TEST-NET-1 peers below). */
static struct cidr trusted_net;
static struct config fake_cfg = {
	.server = { .trusted = &trusted_net, .ntrusted = 1 },
};

/* A request whose head is raw, from peer, on a plain or TLS listener. */
static struct fake *
fake_request(const char *raw, const char *peer, bool tls)
{
	struct fake *f = calloc(1, sizeof(*f));
	const char *why = NULL;
	int status = 0;

	assert_non_null(f);
	assert_int_equal(parse_cidr("192.0.2.0/24", &trusted_net), 0);
	worker.cfg = &fake_cfg;
	f->lcfg.tls_cert = tls ? "cert.pem" : NULL;
	f->lst.cfg = &f->lcfg;
	f->conn.lst = &f->lst;
	snprintf(f->conn.peer_str, sizeof(f->conn.peer_str), "%s", peer);
	if (inet_pton(AF_INET, peer, &f->conn.peer.sin.sin_addr) == 1)
		f->conn.peer.sa.sa_family = AF_INET;
	else if (inet_pton(AF_INET6, peer, &f->conn.peer.sin6.sin6_addr) == 1)
		f->conn.peer.sa.sa_family = AF_INET6;
	else
		fail_msg("peer %s is not an address", peer);
	f->req.conn = &f->conn;
	if (http_parse_head(raw, strlen(raw), &f->req.head, &status, &why) !=
	    HTTP_OK)
		fail_msg("test head refused: %d %s", status, why);
	f->req.id_len = (size_t)snprintf(f->req.id, sizeof(f->req.id),
	    "req-7f3a");
	return f;
}

struct lines {
	char	*line[128];
	size_t	 n;
	size_t	 fail_at;	/* emit returns -1 on this call (1-based) */
	size_t	 calls;
};

/* Collects each emitted field as "Name: value". */
static int
collect(void *arg, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	struct lines *l = arg;

	l->calls++;
	if (l->fail_at != 0 && l->calls == l->fail_at)
		return -1;
	assert_true(l->n < NELEM(l->line));
	l->line[l->n] = malloc(nlen + vlen + 3);
	assert_non_null(l->line[l->n]);
	memcpy(l->line[l->n], name, nlen);
	memcpy(l->line[l->n] + nlen, ": ", 2);
	memcpy(l->line[l->n] + nlen + 2, value, vlen);
	l->line[l->n][nlen + 2 + vlen] = '\0';
	assert_int_equal(strlen(l->line[l->n]), nlen + 2 + vlen);
	l->n++;
	return 0;
}

static void
lines_free(struct lines *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->line[i]);
	l->n = 0;
}

/* Runs headers_upstream_request on raw and compares every line. */
static void
expect_request(const char *raw, const char *peer, bool tls,
    const char *const *want, size_t nwant)
{
	struct fake *f = fake_request(raw, peer, tls);
	struct lines l = { .n = 0 };
	struct buf scratch = { 0 };
	size_t i;
	int rc;

	rc = headers_upstream_request(&f->req, collect, &l, &scratch);
	buf_free(&scratch);
	if (rc != 0 || l.n != nwant) {
		for (i = 0; i < l.n; i++)
			print_error("  got  %s\n", l.line[i]);
		for (i = 0; i < nwant; i++)
			print_error("  want %s\n", want[i]);
		lines_free(&l);
		free(f);
		fail_msg("rc %d, %zu lines; want 0, %zu lines", rc, l.n,
		    nwant);
	}
	for (i = 0; i < nwant; i++)
		if (strcmp(l.line[i], want[i]) != 0) {
			print_error("line %zu: \"%s\"; want \"%s\"\n", i,
			    l.line[i], want[i]);
			lines_free(&l);
			free(f);
			fail_msg("line %zu differs", i);
		}
	lines_free(&l);
	free(f);
}

static void
test_request_filtering(void **state)
{
	static const char raw[] =
	    "POST /x HTTP/1.1\r\n"
	    "Host: api.example\r\n"
	    "User-Agent: t/1\r\n"
	    "Accept: application/json\r\n"
	    "Connection: keep-alive, X-Secret\r\n"
	    "X-Secret: s\r\n"
	    "Keep-Alive: timeout=5\r\n"
	    "TE: trailers\r\n"
	    "Trailer: X-T\r\n"
	    "Upgrade: websocket\r\n"
	    "Proxy-Authorization: Basic eHg=\r\n"
	    "Proxy-Connection: keep-alive\r\n"
	    "Content-Length: 3\r\n"
	    "Expect: 100-continue\r\n"
	    "X-Forwarded-For: 203.0.113.1\r\n"
	    "X-Forwarded-Proto: https\r\n"
	    "X-Forwarded-Host: evil.example\r\n"
	    "X-Request-Id: client-chosen\r\n"
	    "X-Empty:\r\n"
	    "Cookie: a=1; b=2\r\n"
	    "Authorization: Bearer t\r\n"
	    "\r\n";
	static const char *const want[] = {
		"User-Agent: t/1",
		"Accept: application/json",
		"X-Empty: ",
		"Cookie: a=1; b=2",
		"Authorization: Bearer t",
		"X-Forwarded-For: 203.0.113.1, 192.0.2.7",
		"X-Forwarded-Proto: http",
		"X-Forwarded-Host: api.example",
		"X-Request-Id: req-7f3a",
	};

	expect_request(raw, "192.0.2.7", false, want, NELEM(want));
}

/* Only agate's own fields when the client sent none to pass on. */
static void
test_request_minimal(void **state)
{
	static const char *const want[] = {
		"X-Forwarded-For: 2001:db8::9",
		"X-Forwarded-Proto: http",
		"X-Request-Id: req-7f3a",
	};
	static const char *const want11[] = {
		"X-Forwarded-For: 10.0.0.1",
		"X-Forwarded-Proto: https",
		"X-Forwarded-Host: h:8443",
		"X-Request-Id: req-7f3a",
	};

	/* HTTP/1.0 without Host: no X-Forwarded-Host. */
	expect_request("GET / HTTP/1.0\r\n\r\n", "2001:db8::9", false, want,
	    NELEM(want));
	expect_request("GET / HTTP/1.1\r\nHost: h:8443\r\n\r\n", "10.0.0.1",
	    true, want11, NELEM(want11));
}

/* From a trusted proxy: every X-Forwarded-For, in order, then the peer. */
static void
test_request_xff_chain(void **state)
{
	static const char raw[] =
	    "GET / HTTP/1.1\r\n"
	    "X-Forwarded-For: 198.51.100.1, 198.51.100.2\r\n"
	    "Host: h\r\n"
	    "x-forwarded-for:\r\n"
	    "X-FORWARDED-FOR: 198.51.100.3\r\n"
	    "Accept: */*\r\n"
	    "\r\n";
	static const char *const want[] = {
		"Accept: */*",
		"X-Forwarded-For: 198.51.100.1, 198.51.100.2, 198.51.100.3, "
		    "192.0.2.7",
		"X-Forwarded-Proto: http",
		"X-Forwarded-Host: h",
		"X-Request-Id: req-7f3a",
	};

	expect_request(raw, "192.0.2.7", false, want, NELEM(want));
}

/*
 * From a peer that is not trusted, the client's X-Forwarded-For is
 * replaced by the peer: a spoofed address never reaches the leftmost
 * place, where backends look for the client.
 */
static void
test_request_xff_untrusted_replaced(void **state)
{
	static const char raw[] =
	    "GET / HTTP/1.1\r\n"
	    "X-Forwarded-For: 1.2.3.4\r\n"
	    "Host: h\r\n"
	    "X-Forwarded-For: 198.51.100.3\r\n"
	    "\r\n";
	static const char *const want[] = {
		"X-Forwarded-For: 203.0.113.50",
		"X-Forwarded-Proto: http",
		"X-Forwarded-Host: h",
		"X-Request-Id: req-7f3a",
	};

	expect_request(raw, "203.0.113.50", false, want, NELEM(want));
}

/*
 * Fields named by any Connection field go, in any case and list
 * spelling; so do the fields agate sets itself, in any case.
 */
static void
test_request_connection_named(void **state)
{
	static const char raw[] =
	    "GET / HTTP/1.1\r\n"
	    "Host: h\r\n"
	    "X-A: 1\r\n"
	    "Connection: x-a ,X-B\r\n"
	    "x-b: 2\r\n"
	    "Connection: X-C\r\n"
	    "X-C: 3\r\n"
	    "X-D: 4\r\n"
	    "Accept:\r\n"
	    "CONTENT-LENGTH: 0\r\n"
	    "x-request-id: mine\r\n"
	    "x-forwarded-proto: https\r\n"
	    "X-FORWARDED-HOST: evil\r\n"
	    "\r\n";
	static const char *const want[] = {
		"X-D: 4",
		"Accept: ",
		"X-Forwarded-For: 192.0.2.7",
		"X-Forwarded-Proto: http",
		"X-Forwarded-Host: h",
		"X-Request-Id: req-7f3a",
	};

	expect_request(raw, "192.0.2.7", false, want, NELEM(want));
}

/* An absolute-form target names the host. */
static void
test_request_absolute_form(void **state)
{
	static const char *const want[] = {
		"Accept: text/html",
		"X-Forwarded-For: 192.0.2.7",
		"X-Forwarded-Proto: http",
		"X-Forwarded-Host: example.com:8080",
		"X-Request-Id: req-7f3a",
	};

	expect_request("GET http://example.com:8080/p HTTP/1.1\r\n"
	    "Host: other\r\nAccept: text/html\r\n\r\n", "192.0.2.7", false,
	    want, NELEM(want));
}

/* A failing emit stops the walk and is reported. */
static void
test_request_emit_failure(void **state)
{
	struct fake *f = fake_request("GET / HTTP/1.1\r\nHost: h\r\n"
	    "X-A: 1\r\nX-B: 2\r\n\r\n", "192.0.2.7", false);
	struct buf scratch = { 0 };
	size_t k;

	/* X-A, X-B, X-Forwarded-For/-Proto/-Host, X-Request-Id */
	for (k = 1; k <= 6; k++) {
		struct lines l = { .n = 0, .fail_at = k };

		assert_int_equal(headers_upstream_request(&f->req, collect,
		    &l, &scratch), -1);
		assert_int_equal(l.calls, k);	/* nothing after the failure */
		lines_free(&l);
	}
	buf_free(&scratch);
	free(f);
}

/*
 * A field the parser accepted (a 12 KB cookie fits the default 16k
 * max_header_size) must reach the upstream whole, not fail the request.
 */
static void
test_request_long_field(void **state)
{
	size_t vlen = 12000, n;
	char *raw = malloc(vlen + 128), *want = malloc(vlen + 16);
	struct lines l = { .n = 0 };
	struct buf scratch = { 0 };
	struct fake *f;
	int rc;

	assert_non_null(raw);
	assert_non_null(want);
	n = (size_t)sprintf(raw, "GET / HTTP/1.1\r\nHost: h\r\nCookie: ");
	memset(raw + n, 'c', vlen);
	strcpy(raw + n + vlen, "\r\n\r\n");
	strcpy(want, "Cookie: ");
	memset(want + 8, 'c', vlen);
	want[8 + vlen] = '\0';
	f = fake_request(raw, "192.0.2.7", false);
	rc = headers_upstream_request(&f->req, collect, &l, &scratch);
	buf_free(&scratch);
	if (rc != 0 || l.n == 0 || strcmp(l.line[0], want) != 0) {
		size_t got = l.n ? strlen(l.line[0]) : 0;

		lines_free(&l);
		free(f);
		free(raw);
		free(want);
		fail_msg("a %zu-byte Cookie: rc %d, first line %zu bytes; "
		    "want 0 and the whole field (%zu bytes)", vlen, rc, got,
		    vlen + 8);
	}
	lines_free(&l);
	free(f);
	free(raw);
	free(want);
}

/* -- headers_upstream_response ----------------------------------------- */

struct resp_case {
	const char	*name;
	const char	*raw;
	size_t		 len;
	int		 rc;
	int64_t		 content_length;
	const char	*out;		/* when rc is 0; X-Request-Id added */
};

#define S(lit)		lit, sizeof(lit) - 1
#define RID		"X-Request-Id: req-7f3a\r\n"

static const struct resp_case resp_cases[] = {
	{ "hop-by-hop dropped, order kept", S(
	    "Content-Type: text/plain\r\n"
	    "Content-Length: 5\r\n"
	    "Connection: keep-alive, X-Hop\r\n"
	    "X-Hop: 1\r\n"
	    "Keep-Alive: timeout=5\r\n"
	    "X-Request-Id: upstream-id\r\n"
	    "X-A: a\r\n"
	    "TE: x\r\n"
	    "Trailer: X-T\r\n"
	    "Upgrade: h2c\r\n"
	    "Proxy-Authenticate: Basic\r\n"
	    "Proxy-Foo: 1\r\n"
	    "Set-Cookie: s=1\r\n"
	    "X-B: b\r\n"
	    "\r\n"), 0, 5,
	    "Content-Type: text/plain\r\nX-A: a\r\nSet-Cookie: s=1\r\n"
	    "X-B: b\r\n" RID },
	{ "no Content-Length", S("Content-Type: a/b\r\n\r\n"), 0, -1,
	    "Content-Type: a/b\r\n" RID },
	{ "empty head", S("\r\n"), 0, -1, RID },
	{ "nothing at all", S(""), 0, -1, RID },
	{ "Content-Length 0", S("Content-Length: 0\r\n\r\n"), 0, 0, RID },
	{ "big Content-Length", S("Content-Length: 1000000000000\r\n\r\n"),
	    0, 1000000000000LL, RID },
	{ "equal Content-Lengths", S("Content-Length: 7\r\n"
	    "content-length: 7\r\n\r\n"), 0, 7, RID },
	{ "conflicting Content-Lengths", S("Content-Length: 7\r\n"
	    "Content-Length: 8\r\n\r\n"), -1, 0, NULL },
	{ "Content-Length not a number", S("Content-Length: 7a\r\n\r\n"), -1,
	    0, NULL },
	{ "Content-Length negative", S("Content-Length: -1\r\n\r\n"), -1,
	    0, NULL },
	{ "Content-Length empty", S("Content-Length:\r\n\r\n"), -1, 0, NULL },
	{ "Content-Length overflow",
	    S("Content-Length: 99999999999999999999\r\n\r\n"), -1, 0, NULL },
	{ "chunked wins over Content-Length", S("Content-Length: 10\r\n"
	    "Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"), 0, -1,
	    "X-A: 1\r\n" RID },
	{ "chunked before Content-Length", S("Transfer-Encoding: chunked\r\n"
	    "Content-Length: 10\r\n\r\n"), 0, -1, RID },
	{ "bare LF lines", S("X-A: 1\nContent-Length: 2\nX-B: 2\n\n"), 0, 2,
	    "X-A: 1\r\nX-B: 2\r\n" RID },
	{ "value trimmed, tab kept inside", S("X-A: \t a\tb \t\r\n\r\n"), 0,
	    -1, "X-A: a\tb\r\n" RID },
	{ "empty value", S("X-E:\r\n\r\n"), 0, -1, "X-E: \r\n" RID },
	{ "no blank line at the end", S("X-A: 1\r\n"), 0, -1,
	    "X-A: 1\r\n" RID },
	{ "stops at the blank line", S("X-A: 1\r\n\r\nX-B: 2\r\n"), 0, -1,
	    "X-A: 1\r\n" RID },
	{ "any case of X-Request-Id", S("x-request-id: up\r\n"
	    "X-REQUEST-ID: up2\r\n\r\n"), 0, -1, RID },
	{ "Connection names in any case and spelling",
	    S("Connection: x-a ,X-B\tX-C\r\nX-A: 1\r\nx-b: 2\r\nX-C: 3\r\n"
	    "X-D: 4\r\n\r\n"), 0, -1, "X-D: 4\r\n" RID },
	{ "Connection naming a field before it",
	    S("X-A: 1\r\nConnection: X-A\r\n\r\n"), 0, -1, RID },
	{ "CR inside a value", S("X-A: a\rb\r\n\r\n"), -1, 0, NULL },
	{ "CR before CRLF", S("X-A: a\r\r\n\r\n"), -1, 0, NULL },
	{ "NUL inside a value", S("X-A: a\0b\r\n\r\n"), -1, 0, NULL },
	{ "control byte in a value", S("X-A: a\x01" "b\r\n\r\n"), -1, 0,
	    NULL },
	{ "DEL in a value", S("X-A: a\x7f\r\n\r\n"), -1, 0, NULL },
	{ "line without a colon", S("X-A\r\n\r\n"), -1, 0, NULL },
	{ "empty name", S(": v\r\n\r\n"), -1, 0, NULL },
	{ "space in a name", S("X A: v\r\n\r\n"), -1, 0, NULL },
	{ "folded line", S("X-A: a\r\n  b: c\r\n\r\n"), -1, 0, NULL },
	{ "last line without LF", S("X-A: 1\r\nX-B: 2"), -1, 0, NULL },
};

static void
test_response(void **state)
{
	size_t i, failed = 0;

	for (i = 0; i < NELEM(resp_cases); i++) {
		const struct resp_case *c = &resp_cases[i];
		struct buf out = { NULL, 0, 0, 0 };
		int64_t cl = 12345;
		int rc;

		rc = headers_upstream_response(c->raw, c->len, "req-7f3a", 8,
		    &out, &cl);
		if (rc != c->rc) {
			print_error("%s: rc %d; want %d\n", c->name, rc, c->rc);
			failed++;
		} else if (rc == 0 && (cl != c->content_length ||
		    buf_pending(&out) != strlen(c->out) ||
		    memcmp(buf_head(&out), c->out, strlen(c->out)) != 0)) {
			print_error("%s: length %lld, out\n%.*s\nwant length "
			    "%lld, out\n%s\n", c->name, (long long)cl,
			    (int)buf_pending(&out), buf_head(&out),
			    (long long)c->content_length, c->out);
			failed++;
		}
		buf_free(&out);
	}
	if (failed > 0)
		fail_msg("%zu of %zu cases failed", failed, NELEM(resp_cases));
}

/* The head is appended to what out already holds. */
static void
test_response_appends(void **state)
{
	static const char want[] = "HTTP/1.1 200 OK\r\nX-A: 1\r\n"
	    "X-Request-Id: abc\r\n";
	struct buf out = { NULL, 0, 0, 0 };
	int64_t cl;

	assert_int_equal(buf_append(&out, "HTTP/1.1 200 OK\r\n", 17), 0);
	assert_int_equal(headers_upstream_response(S("X-A: 1\r\n\r\n"),
	    "abc", 3, &out, &cl), 0);
	assert_int_equal(buf_pending(&out), sizeof(want) - 1);
	assert_memory_equal(buf_head(&out), want, sizeof(want) - 1);
	buf_free(&out);
}

/*
 * Connection may come as several fields (RFC 9110 section 5.3: they
 * combine into one list): what any of them names is hop-by-hop.
 */
static void
test_response_two_connection_fields(void **state)
{
	static const char raw[] =
	    "Connection: X-Internal\r\n"
	    "Connection: close\r\n"
	    "X-Internal: secret\r\n"
	    "X-Public: ok\r\n"
	    "\r\n";
	static const char want[] = "X-Public: ok\r\n" RID;
	struct buf out = { NULL, 0, 0, 0 };
	int64_t cl;
	bool same;

	assert_int_equal(headers_upstream_response(raw, sizeof(raw) - 1,
	    "req-7f3a", 8, &out, &cl), 0);
	same = buf_pending(&out) == sizeof(want) - 1 &&
	    memcmp(buf_head(&out), want, sizeof(want) - 1) == 0;
	if (!same)
		print_error("got:\n%.*s\nwant:\n%s\n", (int)buf_pending(&out),
		    buf_head(&out), want);
	buf_free(&out);
	assert_true(same);
}

/*
 * headers_next_field: every field of a raw head in order, name and
 * trimmed value, then 0 at the end or the blank line and -1 at a line
 * that is not a field (what the cache policy relies on to refuse a head
 * it cannot read to the end).
 */
static void
test_next_field(void **state)
{
	static const struct {
		const char	*raw;
		const char	*want;	/* "name=value|" per field */
		int		 last;	/* what ends the walk */
	} cases[] = {
		{ "", "", 0 },
		{ "\r\n", "", 0 },
		{ "A: 1\r\nb:2\r\n", "A=1|b=2|", 0 },
		{ "A: 1\r\nA:  2 \t\r\n\r\nC: 3\r\n", "A=1|A=2|", 0 },
		{ "A:\r\nB: x\n", "A=|B=x|", 0 },
		{ "A: 1\r\nno colon\r\nB: 2\r\n", "A=1|", -1 },
		{ "A: 1\r\nB: 2", "A=1|", -1 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		const char *raw = cases[i].raw, *n, *v;
		size_t len = strlen(raw), nl, vl, used = 0;
		char got[128];
		int rc;

		got[0] = '\0';
		while ((rc = headers_next_field(&raw, &len, &n, &nl, &v, &vl))
		    == 1)
			used += (size_t)snprintf(got + used, sizeof(got) - used,
			    "%.*s=%.*s|", (int)nl, n, (int)vl, v);
		if (strcmp(got, cases[i].want) != 0 || rc != cases[i].last)
			fail_msg("case %zu: got \"%s\" then %d; want \"%s\" "
			    "then %d", i, got, rc, cases[i].want,
			    cases[i].last);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hop_by_hop),
		cmocka_unit_test(test_request_filtering),
		cmocka_unit_test(test_request_minimal),
		cmocka_unit_test(test_request_xff_chain),
		cmocka_unit_test(test_request_xff_untrusted_replaced),
		cmocka_unit_test(test_request_connection_named),
		cmocka_unit_test(test_request_absolute_form),
		cmocka_unit_test(test_request_emit_failure),
		cmocka_unit_test(test_request_long_field),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_response_appends),
		cmocka_unit_test(test_response_two_connection_fields),
		cmocka_unit_test(test_next_field),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
