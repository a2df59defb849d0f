/*
 * The PROXY protocol header a load balancer sends first (HAProxy's
 * doc/proxy-protocol.txt): v1 text lines, v2 binary headers with TLVs,
 * what counts as "need more bytes" and what fails the connection, and how
 * a peer address is shown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "worker/proxy_proto.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

static const char v2sig[12] = "\r\n\r\n\0\r\nQUIT\n";

/* A peer that parsing must leave alone (LOCAL, UNKNOWN, failures). */
static void
sentinel(struct sockaddr_storage *ss)
{
	memset(ss, 0xee, sizeof(*ss));
}

static bool
is_sentinel(const struct sockaddr_storage *ss)
{
	const unsigned char *p = (const unsigned char *)ss;
	size_t i;

	for (i = 0; i < sizeof(*ss); i++)
		if (p[i] != 0xee)
			return false;
	return true;
}

/* The peer as "addr port", through proxy_proto_format. */
static void
peer_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	char addr[INET6_ADDRSTRLEN];
	uint16_t port = ss->ss_family == AF_INET ?
	    ((const struct sockaddr_in *)ss)->sin_port :
	    ((const struct sockaddr_in6 *)ss)->sin6_port;

	proxy_proto_format((const struct sockaddr *)ss, addr, sizeof(addr));
	snprintf(buf, size, "%s %u", addr, ntohs(port));
}

/* -- v1 ---------------------------------------------------------------- */

static void
test_v1_valid(void **state)
{
	static const struct {
		const char	*line;
		int		 family;
		const char	*peer;		/* "addr port" */
	} cases[] = {
		{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", AF_INET,
		    "192.0.2.1 56324" },
		{ "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
		    AF_INET, "255.255.255.255 65535" },
		{ "PROXY TCP4 10.0.0.1 10.0.0.2 0 80\r\n", AF_INET,
		    "10.0.0.1 0" },
		{ "PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n", AF_INET6,
		    "2001:db8::1 4000" },
		{ "PROXY TCP6 ::ffff:192.0.2.9 ::1 1234 8443\r\n", AF_INET6,
		    "192.0.2.9 1234" },
		{ "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		    AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535" },
	};
	static const char follow[] = "GET / HTTP/1.1\r\n";
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		char buf[256], got[128];
		struct sockaddr_storage peer;
		size_t n = strlen(cases[i].line), used = 0;
		int rc;

		/* The request that follows is not the header's. */
		snprintf(buf, sizeof(buf), "%s%s", cases[i].line, follow);
		sentinel(&peer);
		rc = proxy_proto_parse(buf, strlen(buf), &peer, &used);
		if (rc != 1)
			fail_msg("%s: rc %d", cases[i].line, rc);
		assert_int_equal(used, n);
		assert_int_equal(peer.ss_family, cases[i].family);
		peer_text(&peer, got, sizeof(got));
		if (strcmp(got, cases[i].peer) != 0)
			fail_msg("%s: peer %s; want %s", cases[i].line, got,
			    cases[i].peer);
	}
}

static void
test_v1_unknown(void **state)
{
	static const char *const lines[] = {
		"PROXY UNKNOWN\r\n",
		"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
		"PROXY UNKNOWN 192.0.2.1 198.51.100.2 1 2\r\n",
	};
	size_t i;

	for (i = 0; i < NELEM(lines); i++) {
		struct sockaddr_storage peer;
		size_t used = 0;

		sentinel(&peer);
		assert_int_equal(proxy_proto_parse(lines[i], strlen(lines[i]),
		    &peer, &used), 1);
		assert_int_equal(used, strlen(lines[i]));
		assert_true(is_sentinel(&peer));	/* keep the socket's */
	}
}

/* The longest line the spec allows (107 bytes with CRLF) is accepted. */
static void
test_v1_longest(void **state)
{
	char line[PROXY_V1_MAX + 8];
	struct sockaddr_storage peer;
	size_t used = 0;

	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + PROXY_V1_MAX - 2, "\r\n", 2);
	assert_int_equal(proxy_proto_parse(line, PROXY_V1_MAX, &peer, &used),
	    1);
	assert_int_equal(used, PROXY_V1_MAX);
	/* One byte more is too long, whether the rest has come or not. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + PROXY_V1_MAX - 1, "\r\n", 2);
	assert_int_equal(proxy_proto_parse(line, PROXY_V1_MAX - 1, &peer,
	    &used), 0);
	assert_int_equal(proxy_proto_parse(line, PROXY_V1_MAX, &peer, &used),
	    -1);
	assert_int_equal(proxy_proto_parse(line, PROXY_V1_MAX + 1, &peer,
	    &used), -1);
}

/* Every proper prefix of a valid header asks for more. */
static void
test_v1_partial(void **state)
{
	static const char *const lines[] = {
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n",
		"PROXY UNKNOWN\r\n",
	};
	size_t i, k;

	for (i = 0; i < NELEM(lines); i++) {
		for (k = 0; k < strlen(lines[i]); k++) {
			struct sockaddr_storage peer;
			size_t used = 777;
			int rc;

			sentinel(&peer);
			rc = proxy_proto_parse(lines[i], k, &peer, &used);
			if (rc != 0)
				fail_msg("first %zu bytes of %s: rc %d", k,
				    lines[i], rc);
			assert_true(is_sentinel(&peer));
		}
	}
}

static void
test_v1_invalid(void **state)
{
	static const char *const lines[] = {
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 65536\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 0443 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 44x 443\r\n",
		"PROXY TCP4 256.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY TCP4 192.0.2 198.51.100.2 56324 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100 56324 443\r\n",
		"PROXY TCP4 2001:db8::1 2001:db8::2 4000 443\r\n",
		"PROXY TCP6 192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY TCP6 2001:db8::g 2001:db8::2 4000 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",  /* no CR */
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n",
		"PROXY TCP5 192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY tcp4 192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY \r\n",
		"PROXY\r\n",
		"proxy TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
		"GET / HTTP/1.1\r\n",
		"\r\nGET / HTTP/1.1\r\n",	/* not the v2 signature */
		"X",
	};
	size_t i;

	for (i = 0; i < NELEM(lines); i++) {
		struct sockaddr_storage peer;
		size_t used = 0;
		int rc;

		rc = proxy_proto_parse(lines[i], strlen(lines[i]), &peer,
		    &used);
		if (rc != -1)
			fail_msg("\"%s\": rc %d; want -1", lines[i], rc);
	}
}

static void
test_v1_too_long(void **state)
{
	char line[300];
	struct sockaddr_storage peer;
	size_t used = 0;

	memset(line, '1', sizeof(line));
	memcpy(line, "PROXY TCP4 ", 11);
	memcpy(line + 250, "\r\n", 2);
	assert_int_equal(proxy_proto_parse(line, sizeof(line), &peer, &used),
	    -1);
	/* Without a line end in sight, 107 bytes are enough to know. */
	assert_int_equal(proxy_proto_parse(line, PROXY_V1_MAX - 1, &peer,
	    &used), 0);
	assert_int_equal(proxy_proto_parse(line, PROXY_V1_MAX, &peer, &used),
	    -1);
}

/* -- v2 ---------------------------------------------------------------- */

struct v2 {
	unsigned char	b[PROXY_V2_MAX + 64];
	size_t		len;
};

/* Signature, ver_cmd, fam, the body length, then body bytes. */
static void
v2_start(struct v2 *h, uint8_t ver_cmd, uint8_t fam)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->b, v2sig, 12);
	h->b[12] = ver_cmd;
	h->b[13] = fam;
	h->len = 16;
}

static void
v2_add(struct v2 *h, const void *p, size_t n)
{
	size_t body;

	assert_true(h->len + n <= sizeof(h->b));
	memcpy(h->b + h->len, p, n);
	h->len += n;
	body = h->len - 16;
	h->b[14] = (unsigned char)(body >> 8);
	h->b[15] = (unsigned char)body;
}

static void
v2_tcp4(struct v2 *h, const char *src, const char *dst, uint16_t sport,
    uint16_t dport)
{
	struct in_addr a;
	uint16_t p;

	v2_start(h, 0x21, 0x11);
	assert_int_equal(inet_pton(AF_INET, src, &a), 1);
	v2_add(h, &a, 4);
	assert_int_equal(inet_pton(AF_INET, dst, &a), 1);
	v2_add(h, &a, 4);
	p = htons(sport);
	v2_add(h, &p, 2);
	p = htons(dport);
	v2_add(h, &p, 2);
}

static void
v2_tcp6(struct v2 *h, const char *src, const char *dst, uint16_t sport,
    uint16_t dport)
{
	struct in6_addr a;
	uint16_t p;

	v2_start(h, 0x21, 0x21);
	assert_int_equal(inet_pton(AF_INET6, src, &a), 1);
	v2_add(h, &a, 16);
	assert_int_equal(inet_pton(AF_INET6, dst, &a), 1);
	v2_add(h, &a, 16);
	p = htons(sport);
	v2_add(h, &p, 2);
	p = htons(dport);
	v2_add(h, &p, 2);
}

/* PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY, and a NOOP with padding. */
static void
v2_tlvs(struct v2 *h)
{
	static const unsigned char tlvs[] = {
		0x01, 0x00, 0x02, 'h', '2',
		0x02, 0x00, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c',
		'o', 'm',
		0x04, 0x00, 0x03, 0, 0, 0,
	};

	v2_add(h, tlvs, sizeof(tlvs));
}

static void
expect_v2_peer(const struct v2 *h, const char *want, int family)
{
	unsigned char buf[sizeof(h->b) + 16];
	struct sockaddr_storage peer;
	size_t used = 0;
	char got[128];

	/* Bytes of the client's first request follow the header. */
	memcpy(buf, h->b, h->len);
	memcpy(buf + h->len, "GET / HTTP/1.1\r\n", 16);
	sentinel(&peer);
	assert_int_equal(proxy_proto_parse((const char *)buf, h->len + 16,
	    &peer, &used), 1);
	assert_int_equal(used, h->len);
	assert_int_equal(peer.ss_family, family);
	peer_text(&peer, got, sizeof(got));
	assert_string_equal(got, want);
}

static void
test_v2_tcp4(void **state)
{
	struct v2 h;

	v2_tcp4(&h, "192.0.2.1", "198.51.100.2", 56324, 443);
	assert_int_equal(h.len, 28);
	expect_v2_peer(&h, "192.0.2.1 56324", AF_INET);
	v2_tlvs(&h);
	expect_v2_peer(&h, "192.0.2.1 56324", AF_INET);
	/* UDP over IPv4 carries the same addresses. */
	v2_tcp4(&h, "203.0.113.7", "198.51.100.2", 53, 53);
	h.b[13] = 0x12;
	expect_v2_peer(&h, "203.0.113.7 53", AF_INET);
}

static void
test_v2_tcp6(void **state)
{
	struct v2 h;

	v2_tcp6(&h, "2001:db8::1", "2001:db8::2", 4000, 443);
	assert_int_equal(h.len, 52);
	expect_v2_peer(&h, "2001:db8::1 4000", AF_INET6);
	v2_tlvs(&h);
	expect_v2_peer(&h, "2001:db8::1 4000", AF_INET6);
	v2_tcp6(&h, "::ffff:192.0.2.33", "::1", 1, 2);
	expect_v2_peer(&h, "192.0.2.33 1", AF_INET6);
}

/* LOCAL (a health check of the balancer) keeps the peer. */
static void
test_v2_local(void **state)
{
	struct sockaddr_storage peer;
	struct v2 h;
	size_t used;

	v2_start(&h, 0x20, 0x00);
	sentinel(&peer);
	assert_int_equal(proxy_proto_parse((const char *)h.b, h.len, &peer,
	    &used), 1);
	assert_int_equal(used, 16);
	assert_true(is_sentinel(&peer));

	/* LOCAL with addresses: they are not the client's, ignore them. */
	v2_tcp4(&h, "192.0.2.1", "198.51.100.2", 56324, 443);
	h.b[12] = 0x20;
	sentinel(&peer);
	assert_int_equal(proxy_proto_parse((const char *)h.b, h.len, &peer,
	    &used), 1);
	assert_int_equal(used, 28);
	assert_true(is_sentinel(&peer));
}

/*
 * PROXY with the UNSPEC family (and some TLVs to skip): the sender does
 * not know the client, so the socket's own peer must stay.
 */
static void
test_v2_unspec(void **state)
{
	struct sockaddr_storage peer;
	struct v2 h;
	size_t used;

	v2_start(&h, 0x21, 0x00);
	v2_tlvs(&h);
	sentinel(&peer);
	assert_int_equal(proxy_proto_parse((const char *)h.b, h.len, &peer,
	    &used), 1);
	assert_int_equal(used, h.len);
	assert_true(is_sentinel(&peer));
}

static void
test_v2_partial(void **state)
{
	struct v2 hs[3];
	size_t i, k;

	v2_tcp4(&hs[0], "192.0.2.1", "198.51.100.2", 56324, 443);
	v2_tcp6(&hs[1], "2001:db8::1", "2001:db8::2", 4000, 443);
	v2_tlvs(&hs[1]);
	v2_start(&hs[2], 0x20, 0x00);
	for (i = 0; i < NELEM(hs); i++) {
		for (k = 0; k < hs[i].len; k++) {
			struct sockaddr_storage peer;
			size_t used = 777;
			int rc;

			sentinel(&peer);
			rc = proxy_proto_parse((const char *)hs[i].b, k, &peer,
			    &used);
			if (rc != 0)
				fail_msg("header %zu, first %zu of %zu bytes: "
				    "rc %d", i, k, hs[i].len, rc);
			assert_true(is_sentinel(&peer));
		}
	}
}

static void
test_v2_invalid(void **state)
{
	static const struct {
		const char	*name;
		uint8_t		 ver_cmd;
		uint8_t		 fam;
		size_t		 body;		/* body bytes to send */
	} cases[] = {
		{ "version 1", 0x11, 0x11, 12 },
		{ "version 3", 0x31, 0x11, 12 },
		{ "version 0", 0x01, 0x11, 12 },
		{ "command 2", 0x22, 0x11, 12 },
		{ "command 15", 0x2f, 0x11, 12 },
		{ "TCP4 body too short", 0x21, 0x11, 11 },
		{ "TCP6 body too short", 0x21, 0x21, 35 },
		{ "TCP6 body of a TCP4", 0x21, 0x21, 12 },
		{ "unknown family", 0x21, 0x41, 12 },
		{ "unknown protocol", 0x21, 0x13, 12 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		unsigned char zeros[64] = { 0 };
		struct sockaddr_storage peer;
		size_t used = 0;
		struct v2 h;
		int rc;

		v2_start(&h, cases[i].ver_cmd, cases[i].fam);
		v2_add(&h, zeros, cases[i].body);
		rc = proxy_proto_parse((const char *)h.b, h.len, &peer, &used);
		if (rc != -1)
			fail_msg("%s: rc %d; want -1", cases[i].name, rc);
	}
}

/* A body over 1024 bytes is refused at once, not waited for. */
static void
test_v2_length_limit(void **state)
{
	unsigned char pad[PROXY_V2_MAX];
	struct sockaddr_storage peer;
	size_t used = 0;
	struct v2 h;

	memset(pad, 0, sizeof(pad));
	v2_tcp4(&h, "192.0.2.1", "198.51.100.2", 1, 2);
	v2_add(&h, pad, PROXY_V2_MAX - 16 - 12);
	assert_int_equal(h.len, PROXY_V2_MAX);
	assert_int_equal(proxy_proto_parse((const char *)h.b, h.len, &peer,
	    &used), 1);
	assert_int_equal(used, PROXY_V2_MAX);

	v2_tcp4(&h, "192.0.2.1", "198.51.100.2", 1, 2);
	h.b[14] = (PROXY_V2_MAX - 16 + 1) >> 8;
	h.b[15] = (PROXY_V2_MAX - 16 + 1) & 0xff;
	assert_int_equal(proxy_proto_parse((const char *)h.b, 16, &peer,
	    &used), -1);
	h.b[14] = h.b[15] = 0xff;
	assert_int_equal(proxy_proto_parse((const char *)h.b, 16, &peer,
	    &used), -1);
}

/* Near misses of the v2 signature are not PROXY at all. */
static void
test_v2_bad_signature(void **state)
{
	struct sockaddr_storage peer;
	size_t used = 0;
	struct v2 h;

	v2_tcp4(&h, "192.0.2.1", "198.51.100.2", 1, 2);
	h.b[11] = 'X';
	assert_int_equal(proxy_proto_parse((const char *)h.b, h.len, &peer,
	    &used), -1);
	v2_tcp4(&h, "192.0.2.1", "198.51.100.2", 1, 2);
	h.b[4] = 1;
	assert_int_equal(proxy_proto_parse((const char *)h.b, 5, &peer,
	    &used), -1);
}

/* -- proxy_proto_format ------------------------------------------------ */

static void
test_format(void **state)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
	char out[INET6_ADDRSTRLEN];

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &sin->sin_addr);
	proxy_proto_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_equal(out, "192.0.2.1");

	memset(&ss, 0, sizeof(ss));
	sin6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::1", &sin6->sin6_addr);
	proxy_proto_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_equal(out, "2001:db8::1");

	inet_pton(AF_INET6, "::ffff:10.1.2.3", &sin6->sin6_addr);
	proxy_proto_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_equal(out, "10.1.2.3");

	inet_pton(AF_INET6, "::1", &sin6->sin6_addr);
	proxy_proto_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_equal(out, "::1");

	/* IPv4-compatible (not mapped) stays IPv6. */
	inet_pton(AF_INET6, "::10.1.2.3", &sin6->sin6_addr);
	proxy_proto_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_not_equal(out, "10.1.2.3");
	assert_memory_equal(out, "::", 2);

	memset(&ss, 0, sizeof(ss));
	sun->sun_family = AF_UNIX;
	proxy_proto_format((struct sockaddr *)&ss, out, sizeof(out));
	assert_string_equal(out, "unix");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_valid),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_longest),
		cmocka_unit_test(test_v1_partial),
		cmocka_unit_test(test_v1_invalid),
		cmocka_unit_test(test_v1_too_long),
		cmocka_unit_test(test_v2_tcp4),
		cmocka_unit_test(test_v2_tcp6),
		cmocka_unit_test(test_v2_local),
		cmocka_unit_test(test_v2_unspec),
		cmocka_unit_test(test_v2_partial),
		cmocka_unit_test(test_v2_invalid),
		cmocka_unit_test(test_v2_length_limit),
		cmocka_unit_test(test_v2_bad_signature),
		cmocka_unit_test(test_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
