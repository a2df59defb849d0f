/*
 * The scalar syntaxes of agate.yaml (gateway/config/units.c): durations, sizes,
 * listen addresses, CIDR blocks and rates.  Each parser must take the
 * whole string or fail; a value that half-parses is a silent outage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <string.h>

#include "gateway/config/config.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* -- durations --------------------------------------------------------- */

static void
test_duration_valid(void **state)
{
	static const struct {
		const char	*in;
		uint64_t	 ms;
	} cases[] = {
		{ "0", 0 },
		{ "0s", 0 },
		{ "1ms", 1 },
		{ "250ms", 250 },
		{ "10s", 10000 },
		{ "2m", 120000 },
		{ "1h", 3600000 },
		{ "1d", 86400000 },
		{ "1m30s", 90000 },
		{ "1h1m1s1ms", 3661001 },
		{ "90s", 90000 },
		{ "1s500ms", 1500 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		uint64_t v = 12345;
		int rc = parse_duration_ms(cases[i].in, &v);

		if (rc != 0 || v != cases[i].ms)
			fail_msg("parse_duration_ms(\"%s\") = %d, %" PRIu64
			    "; want 0, %" PRIu64, cases[i].in, rc, v,
			    cases[i].ms);
	}
}

static void
test_duration_invalid(void **state)
{
	static const char *const cases[] = {
		"10",			/* a number needs a unit */
		"00",
		"",
		"5x",
		"-1s",
		"s",
		"1.5s",
		"10 s",
		" 10s",
		"10s ",
		"10S",			/* units are lowercase */
		"1min",
		"10s5",			/* trailing number without unit */
		"10ss",
		"99999999999999999999ms",	/* digits overflow */
		"18446744073709552s",		/* overflow in the multiply */
		"5124095576031h",
		"5124095576030h5124095576030h",	/* overflow in the sum */
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		uint64_t v = 777;
		int rc = parse_duration_ms(cases[i], &v);

		if (rc != -1)
			fail_msg("parse_duration_ms(\"%s\") = %d (%" PRIu64
			    "); want -1", cases[i], rc, v);
		if (v != 777)
			fail_msg("parse_duration_ms(\"%s\") wrote %" PRIu64
			    " on failure", cases[i], v);
	}
}

static void
test_duration_largest(void **state)
{
	uint64_t v;

	/* The largest whole number of hours that fits in 64 bits of ms. */
	assert_int_equal(parse_duration_ms("5124095576030h", &v), 0);
	assert_true(v == 18446744073708000000ULL);
	assert_int_equal(parse_duration_ms("1844674407370955160ms", &v), 0);
	assert_true(v == 1844674407370955160ULL);
}

/* -- sizes ------------------------------------------------------------- */

static void
test_size_valid(void **state)
{
	static const struct {
		const char	*in;
		uint64_t	 bytes;
	} cases[] = {
		{ "0", 0 },
		{ "512", 512 },
		{ "16k", 16384 },
		{ "16K", 16384 },
		{ "16kb", 16384 },
		{ "16KB", 16384 },
		{ "10m", 10485760 },
		{ "10M", 10485760 },
		{ "10mb", 10485760 },
		{ "1g", 1073741824 },
		{ "4G", 4294967296ULL },
		{ "17179869183g", 17179869183ULL * 1073741824ULL },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		uint64_t v = 12345;
		int rc = parse_size(cases[i].in, &v);

		if (rc != 0 || v != cases[i].bytes)
			fail_msg("parse_size(\"%s\") = %d, %" PRIu64
			    "; want 0, %" PRIu64, cases[i].in, rc, v,
			    cases[i].bytes);
	}
}

static void
test_size_invalid(void **state)
{
	static const char *const cases[] = {
		"",
		"k",
		"16x",
		"16kx",
		"16kbb",
		"16b",
		"-1",
		"1.5k",
		"16 k",
		" 16k",
		"16t",
		"17179869184g",			/* 2^64 bytes */
		"99999999999999999999",
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		uint64_t v = 777;
		int rc = parse_size(cases[i], &v);

		if (rc != -1)
			fail_msg("parse_size(\"%s\") = %d (%" PRIu64
			    "); want -1", cases[i], rc, v);
	}
}

/* -- addresses --------------------------------------------------------- */

static void
test_address_v4(void **state)
{
	static const struct {
		const char	*in;
		const char	*ip;
		uint16_t	 port;
	} cases[] = {
		{ "0.0.0.0:8080", "0.0.0.0", 8080 },
		{ "127.0.0.1:9901", "127.0.0.1", 9901 },
		{ "192.0.2.10:1", "192.0.2.10", 1 },
		{ "*:80", "0.0.0.0", 80 },
		{ ":80", "0.0.0.0", 80 },
		{ "localhost:65535", "127.0.0.1", 65535 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		struct sockaddr_storage ss;
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		socklen_t len = 0;
		char ip[INET_ADDRSTRLEN];

		if (parse_address(cases[i].in, &ss, &len) != 0)
			fail_msg("parse_address(\"%s\") failed", cases[i].in);
		assert_int_equal(sin->sin_family, AF_INET);
		assert_int_equal(len, sizeof(struct sockaddr_in));
		assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, ip,
		    sizeof(ip)));
		if (strcmp(ip, cases[i].ip) != 0 ||
		    ntohs(sin->sin_port) != cases[i].port)
			fail_msg("parse_address(\"%s\") = %s port %u; want %s "
			    "port %u", cases[i].in, ip, ntohs(sin->sin_port),
			    cases[i].ip, cases[i].port);
	}
}

static void
test_address_v6(void **state)
{
	static const struct {
		const char	*in;
		const char	*ip;
		uint16_t	 port;
	} cases[] = {
		{ "[::1]:8080", "::1", 8080 },
		{ "[::]:443", "::", 443 },
		{ "[2001:db8::5]:9000", "2001:db8::5", 9000 },
		{ "[::ffff:10.1.2.3]:80", "::ffff:10.1.2.3", 80 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		struct sockaddr_storage ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		struct in6_addr want;
		socklen_t len = 0;

		if (parse_address(cases[i].in, &ss, &len) != 0)
			fail_msg("parse_address(\"%s\") failed", cases[i].in);
		assert_int_equal(sin6->sin6_family, AF_INET6);
		assert_int_equal(len, sizeof(struct sockaddr_in6));
		assert_int_equal(inet_pton(AF_INET6, cases[i].ip, &want), 1);
		assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
		assert_int_equal(ntohs(sin6->sin6_port), cases[i].port);
	}
}

static void
test_address_invalid(void **state)
{
	static const char *const cases[] = {
		"",
		"8080",			/* no host:port separator */
		"127.0.0.1",
		"127.0.0.1:",
		"127.0.0.1:0",
		"127.0.0.1:65536",
		"127.0.0.1:99999999999999999999",
		"127.0.0.1:-1",
		"127.0.0.1:80x",
		"127.0.0.1: 80",
		"256.0.0.1:80",
		"10.0.0:80",
		"example.com:80",	/* names are not resolved */
		"::1:8080",		/* IPv6 needs brackets */
		"[::1]",
		"[::1]8080",
		"[::1:8080",		/* unclosed bracket */
		"[::1]:",
		"[::1]:0",
		"[::1]:65536",
		"[1.2.3.4]:80",
		"[zz::1]:80",
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;

		if (parse_address(cases[i], &ss, &len) != -1)
			fail_msg("parse_address(\"%s\") accepted", cases[i]);
	}
}

/* -- CIDR -------------------------------------------------------------- */

static struct sockaddr_storage
v4(const char *ip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage
v6(const char *ip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin6->sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	return ss;
}

static void
test_cidr_parse(void **state)
{
	static const struct {
		const char	*in;
		int		 family;
		int		 bits;
		const char	*addr;
	} cases[] = {
		{ "10.0.0.0/8", AF_INET, 8, "10.0.0.0" },
		{ "192.0.2.7", AF_INET, 32, "192.0.2.7" },
		{ "192.0.2.7/32", AF_INET, 32, "192.0.2.7" },
		{ "0.0.0.0/0", AF_INET, 0, "0.0.0.0" },
		{ "172.16.0.0/12", AF_INET, 12, "172.16.0.0" },
		{ "2001:db8::/32", AF_INET6, 32, "2001:db8::" },
		{ "::1", AF_INET6, 128, "::1" },
		{ "::/0", AF_INET6, 0, "::" },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		struct cidr c;
		uint8_t want[16] = { 0 };

		if (parse_cidr(cases[i].in, &c) != 0)
			fail_msg("parse_cidr(\"%s\") failed", cases[i].in);
		assert_int_equal(c.family, cases[i].family);
		assert_int_equal(c.bits, cases[i].bits);
		assert_int_equal(inet_pton(cases[i].family, cases[i].addr,
		    want), 1);
		assert_memory_equal(c.addr, want,
		    cases[i].family == AF_INET ? 4 : 16);
	}
}

static void
test_cidr_parse_invalid(void **state)
{
	static const char *const cases[] = {
		"",
		"10.0.0.0/",
		"10.0.0.0/33",
		"10.0.0.0/-1",
		"10.0.0.0/8x",
		"10.0.0.0/ 8",
		"10.0.0/8",
		"10.0.0.0.0/8",
		"2001:db8::/129",
		"localhost/32",
		"/8",
		"10.0.0.0/8/8",
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		struct cidr c;

		if (parse_cidr(cases[i], &c) != -1)
			fail_msg("parse_cidr(\"%s\") accepted", cases[i]);
	}
}

static void
test_cidr_match(void **state)
{
	static const struct {
		const char	*cidr;
		int		 family;	/* of the client address */
		const char	*ip;
		bool		 match;
	} cases[] = {
		{ "10.0.0.0/8", AF_INET, "10.1.2.3", true },
		{ "10.0.0.0/8", AF_INET, "10.255.255.255", true },
		{ "10.0.0.0/8", AF_INET, "11.0.0.0", false },
		{ "10.0.0.0/8", AF_INET, "9.255.255.255", false },
		{ "172.16.0.0/12", AF_INET, "172.31.255.1", true },
		{ "172.16.0.0/12", AF_INET, "172.32.0.1", false },
		{ "192.0.2.7/32", AF_INET, "192.0.2.7", true },
		{ "192.0.2.7/32", AF_INET, "192.0.2.6", false },
		{ "192.0.2.7", AF_INET, "192.0.2.8", false },
		{ "0.0.0.0/0", AF_INET, "203.0.113.9", true },
		/* An IPv4 client on a dual-stack socket. */
		{ "10.0.0.0/8", AF_INET6, "::ffff:10.9.8.7", true },
		{ "10.0.0.0/8", AF_INET6, "::ffff:11.9.8.7", false },
		{ "192.0.2.7/32", AF_INET6, "::ffff:192.0.2.7", true },
		{ "0.0.0.0/0", AF_INET6, "::ffff:1.2.3.4", true },
		/* An IPv6 address that is not v4-mapped never matches v4. */
		{ "0.0.0.0/0", AF_INET6, "2001:db8::1", false },
		{ "10.0.0.0/8", AF_INET6, "::a09:807", false },
		{ "10.0.0.0/8", AF_INET6, "::ff00:a09:807", false },
		{ "2001:db8::/32", AF_INET6, "2001:db8:1234::1", true },
		{ "2001:db8::/32", AF_INET6, "2001:db9::1", false },
		{ "2001:db8::/33", AF_INET6, "2001:db8:7fff::1", true },
		{ "2001:db8::/33", AF_INET6, "2001:db8:8000::1", false },
		{ "::1", AF_INET6, "::1", true },
		{ "::1", AF_INET6, "::2", false },
		{ "::/0", AF_INET6, "fe80::1", true },
		/* Families do not mix. */
		{ "::/0", AF_INET, "1.2.3.4", false },
		{ "2001:db8::/32", AF_INET, "32.1.13.184", false },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		struct sockaddr_storage ss;
		struct cidr c;
		bool got;

		assert_int_equal(parse_cidr(cases[i].cidr, &c), 0);
		ss = cases[i].family == AF_INET ? v4(cases[i].ip) :
		    v6(cases[i].ip);
		got = cidr_match(&c, (struct sockaddr *)&ss);
		if (got != cases[i].match)
			fail_msg("cidr_match(%s, %s) = %d; want %d",
			    cases[i].cidr, cases[i].ip, got, cases[i].match);
	}
}

static void
test_cidr_match_other_family(void **state)
{
	struct sockaddr_storage ss;
	struct cidr c;

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	assert_int_equal(parse_cidr("0.0.0.0/0", &c), 0);
	assert_false(cidr_match(&c, (struct sockaddr *)&ss));
	assert_int_equal(parse_cidr("::/0", &c), 0);
	assert_false(cidr_match(&c, (struct sockaddr *)&ss));
}

/* -- rates ------------------------------------------------------------- */

static void
test_rate_valid(void **state)
{
	static const struct {
		const char	*in;
		double		 per_second;
	} cases[] = {
		{ "100/s", 100 },
		{ "5r/s", 5 },
		{ "1/sec", 1 },
		{ "7/second", 7 },
		{ "600/m", 10 },
		{ "30/min", 0.5 },
		{ "120r/minute", 2 },
		{ "1000/h", 1000.0 / 3600 },
		{ "3600/hour", 1 },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		double v = -1;
		int rc = parse_rate(cases[i].in, &v);
		double d = v - cases[i].per_second;

		if (rc != 0 || d > 1e-9 || d < -1e-9)
			fail_msg("parse_rate(\"%s\") = %d, %g; want 0, %g",
			    cases[i].in, rc, v, cases[i].per_second);
	}
}

static void
test_rate_invalid(void **state)
{
	static const char *const cases[] = {
		"",
		"100",
		"100/",
		"/s",
		"0/s",			/* a rate of nothing */
		"-1/s",
		"1.5/s",
		"100/d",
		"100/S",
		"100 /s",
		"100/s ",
		"100r",
		"100rs",
		"100x/s",
		"100//s",
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		double v = -1;

		if (parse_rate(cases[i], &v) != -1)
			fail_msg("parse_rate(\"%s\") accepted (%g)", cases[i],
			    v);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration_valid),
		cmocka_unit_test(test_duration_invalid),
		cmocka_unit_test(test_duration_largest),
		cmocka_unit_test(test_size_valid),
		cmocka_unit_test(test_size_invalid),
		cmocka_unit_test(test_address_v4),
		cmocka_unit_test(test_address_v6),
		cmocka_unit_test(test_address_invalid),
		cmocka_unit_test(test_cidr_parse),
		cmocka_unit_test(test_cidr_parse_invalid),
		cmocka_unit_test(test_cidr_match),
		cmocka_unit_test(test_cidr_match_other_family),
		cmocka_unit_test(test_rate_valid),
		cmocka_unit_test(test_rate_invalid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
