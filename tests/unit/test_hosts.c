/*
 * The hosts(5) reader (gateway/upstream/hosts.c) that upstream names go
 * through before DNS, and the resolver: address syntax
 * (config_resolver_address in gateway/config/units.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "gateway/config/config.h"
#include "gateway/upstream/hosts.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

static const char hosts[] =
    "# The machine's names\n"
    "127.0.0.1\tlocalhost\n"
    "::1     localhost ip6-localhost ip6-loopback\n"
    "10.0.0.7 api.internal API2.internal   # two names, a comment\n"
    "10.0.0.8 api.internal\r\n"
    "10.0.0.7 api.internal\n"			/* a repeat: once */
    "fe80::1%eth0 zoned.internal\n"		/* zone: unusable */
    "bogus not.an.address\n"
    "10.0.0.9\n"				/* no names */
    "#10.0.0.10 commented.internal\n"
    "10.0.0.11 last.internal";			/* no final newline */

/* The addresses hosts_find() gives name, as text, joined by spaces. */
static void
find(const char *name, char *out, size_t outlen)
{
	struct sockaddr_storage sa[8];
	socklen_t len[8];
	char ip[INET6_ADDRSTRLEN];
	size_t n, i;

	n = hosts_find(hosts, sizeof(hosts) - 1, name, 8080, sa, len, 8);
	out[0] = '\0';
	for (i = 0; i < n; i++) {
		const void *a = sa[i].ss_family == AF_INET6 ?
		    (const void *)&((struct sockaddr_in6 *)&sa[i])->sin6_addr :
		    (const void *)&((struct sockaddr_in *)&sa[i])->sin_addr;

		assert_non_null(inet_ntop(sa[i].ss_family, a, ip, sizeof(ip)));
		assert_int_equal(ntohs(sa[i].ss_family == AF_INET6 ?
		    ((struct sockaddr_in6 *)&sa[i])->sin6_port :
		    ((struct sockaddr_in *)&sa[i])->sin_port), 8080);
		if (i > 0)
			strncat(out, " ", outlen - strlen(out) - 1);
		strncat(out, ip, outlen - strlen(out) - 1);
	}
}

static void
test_hosts_find(void **state)
{
	static const struct {
		const char	*name;
		const char	*want;
	} cases[] = {
		{ "localhost", "127.0.0.1 ::1" },
		{ "LocalHost", "127.0.0.1 ::1" },
		{ "ip6-loopback", "::1" },
		{ "api.internal", "10.0.0.7 10.0.0.8" },
		{ "api2.internal", "10.0.0.7" },
		{ "zoned.internal", "" },
		{ "not.an.address", "" },
		{ "commented.internal", "" },
		{ "last.internal", "10.0.0.11" },
		{ "api", "" },
		{ "10.0.0.9", "" },
	};
	char got[256];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(cases); i++) {
		find(cases[i].name, got, sizeof(got));
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("%s: got '%s', want '%s'", cases[i].name, got,
			    cases[i].want);
	}
}

static void
test_hosts_find_max(void **state)
{
	struct sockaddr_storage sa[1];
	socklen_t len[1];

	(void)state;
	assert_int_equal(hosts_find(hosts, sizeof(hosts) - 1, "localhost", 80,
	    sa, len, 1), 1);
	assert_int_equal(sa[0].ss_family, AF_INET);
	assert_int_equal(hosts_find("", 0, "localhost", 80, sa, len, 1), 0);
}

static void
test_resolver_address(void **state)
{
	static const struct {
		const char	*in;
		const char	*want;		/* NULL: refused */
	} cases[] = {
		{ "127.0.0.1:5353", "127.0.0.1:5353" },
		{ "10.0.0.2", "10.0.0.2:53" },
		{ "[::1]:5353", "[::1]:5353" },
		{ "[2001:db8::1]", "[2001:db8::1]:53" },
		{ "", NULL },
		{ "dns.example:53", NULL },	/* a name needs a resolver */
		{ "localhost:53", NULL },
		{ "127.0.0.1:", NULL },
		{ "127.0.0.1:0", NULL },
		{ "127.0.0.1:65536", NULL },
		{ "127.0.0.1:53x", NULL },
		{ "::1:53", NULL },		/* IPv6 needs brackets */
		{ "::1", NULL },
		{ "[::1", NULL },
		{ "[::1]x", NULL },
		{ "[1.2.3.4]:53", NULL },
		{ "256.1.1.1", NULL },
	};
	char out[80];
	size_t i;
	int rc;

	(void)state;
	for (i = 0; i < NELEM(cases); i++) {
		rc = config_resolver_address(cases[i].in, out, sizeof(out));
		if (cases[i].want == NULL) {
			if (rc != -1)
				fail_msg("'%s' taken as '%s'", cases[i].in, out);
		} else if (rc != 0 || strcmp(out, cases[i].want) != 0)
			fail_msg("'%s': got %d '%s', want '%s'", cases[i].in, rc,
			    rc == 0 ? out : "", cases[i].want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hosts_find),
		cmocka_unit_test(test_hosts_find_max),
		cmocka_unit_test(test_resolver_address),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
