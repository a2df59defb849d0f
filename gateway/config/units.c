/*
 * Scalar value syntax of agate.yaml: durations, sizes, addresses, CIDR
 * blocks and rates.  Each parser accepts the whole string or fails with
 * -1; the loader turns a failure into a file:line:col message.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/config/config.h"

/* Reads decimal digits; fails on none or on overflow. */
static int
units_digits(const char **sp, uint64_t *out)
{
	const char *s = *sp;
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*sp = s;
	*out = v;
	return 0;
}

/*
 * "250ms", "10s", "2m", "1h", and sums like "1m30s".  A bare "0" is
 * allowed; any other number needs a unit, because "10" could mean seconds
 * (nginx) or milliseconds and a wrong guess is a silent outage.
 */
int
parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct { const char *u; uint64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
		{ "d", 86400000 },
	};
	uint64_t total = 0, v;
	size_t i;

	if (strcmp(s, "0") == 0) {
		*out = 0;
		return 0;
	}
	if (*s == '\0')
		return -1;
	while (*s != '\0') {
		if (units_digits(&s, &v) == -1)
			return -1;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t n = strlen(units[i].u);

			if (strncmp(s, units[i].u, n) == 0 &&
			    !isalpha((unsigned char)s[n]))
				break;
		}
		if (i == sizeof(units) / sizeof(units[0]))
			return -1;
		if (v > (UINT64_MAX - total) / units[i].ms)
			return -1;
		total += v * units[i].ms;
		s += strlen(units[i].u);
	}
	*out = total;
	return 0;
}

/* "512", "16k", "10m", "1g" (binary multiples, as nginx). */
int
parse_size(const char *s, uint64_t *out)
{
	uint64_t v, mul = 1;

	if (units_digits(&s, &v) == -1)
		return -1;
	switch (*s) {
	case '\0':
		break;
	case 'k': case 'K':
		mul = 1024;
		break;
	case 'm': case 'M':
		mul = 1024 * 1024;
		break;
	case 'g': case 'G':
		mul = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*s != '\0' && s[1] != '\0' &&
	    !((s[1] == 'b' || s[1] == 'B') && s[2] == '\0'))
		return -1;
	if (v > UINT64_MAX / mul)
		return -1;
	*out = v * mul;
	return 0;
}

static int
units_port(const char *s, uint16_t *port)
{
	uint64_t v;

	if (units_digits(&s, &v) == -1 || *s != '\0' || v == 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/*
 * "host:port" with host an IPv4 literal, "*" or "" (any), "localhost", or
 * "[IPv6]".  Names are not resolved: a listener's address must not depend
 * on DNS at reload time.
 */
int
parse_address(const char *s, struct sockaddr_storage *ss, socklen_t *salen)
{
	char host[64];
	const char *colon;
	uint16_t port;
	size_t hlen;

	memset(ss, 0, sizeof(*ss));
	if (*s == '[') {
		const char *end = strchr(s, ']');
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (end == NULL || end[1] != ':' ||
		    (hlen = (size_t)(end - s - 1)) >= sizeof(host))
			return -1;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (units_port(end + 2, &port) == -1 ||
		    inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*salen = sizeof(*sin6);
		return 0;
	}
	if ((colon = strrchr(s, ':')) == NULL ||
	    (hlen = (size_t)(colon - s)) >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (units_port(colon + 1, &port) == -1)
		return -1;

	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	*salen = sizeof(*sin);
	if (hlen == 0 || strcmp(host, "*") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (strcmp(host, "localhost") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return -1;
	return 0;
}

int
parse_cidr(const char *s, struct cidr *out)
{
	char addr[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	uint64_t bits;
	int maxbits;

	if (alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		maxbits = 128;
	} else
		return -1;
	bits = (uint64_t)maxbits;
	if (slash != NULL) {
		const char *p = slash + 1;

		if (units_digits(&p, &bits) == -1 || *p != '\0' ||
		    bits > (uint64_t)maxbits)
			return -1;
	}
	out->bits = (int)bits;
	return 0;
}

static bool
cidr_bits_match(const uint8_t *a, const uint8_t *net, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, net, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ net[full]) & (0xff << (8 - rest))) == 0;
}

bool
cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
	static const uint8_t v4mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		return c->family == AF_INET && cidr_bits_match(
		    (const uint8_t *)&sin->sin_addr, c->addr, c->bits);
	}
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)sa)->
		    sin6_addr.s6_addr;

		if (c->family == AF_INET6)
			return cidr_bits_match(a, c->addr, c->bits);
		/* An IPv4 client seen on a dual-stack socket. */
		return memcmp(a, v4mapped, 12) == 0 &&
		    cidr_bits_match(a + 12, c->addr, c->bits);
	}
	return false;
}

/* "100/s", "600/m", "1000/h" (also r/s, /sec, /min, /hour). */
int
parse_rate(const char *s, double *per_second)
{
	uint64_t n;
	double div;

	if (units_digits(&s, &n) == -1 || n == 0)
		return -1;
	if (*s == 'r')
		s++;
	if (*s++ != '/')
		return -1;
	if (strcmp(s, "s") == 0 || strcmp(s, "sec") == 0 ||
	    strcmp(s, "second") == 0)
		div = 1;
	else if (strcmp(s, "m") == 0 || strcmp(s, "min") == 0 ||
	    strcmp(s, "minute") == 0)
		div = 60;
	else if (strcmp(s, "h") == 0 || strcmp(s, "hour") == 0)
		div = 3600;
	else
		return -1;
	*per_second = (double)n / div;
	return 0;
}

/*
 * A DNS server: "IPv4[:port]" or "[IPv6][:port]" (port 53 when absent),
 * written to out as "ip:port" with IPv6 in brackets (evdns's form).
 */
int
config_resolver_address(const char *s, char *out, size_t outlen)
{
	struct in6_addr a6;
	struct in_addr a4;
	char host[64];
	const char *rest;
	uint16_t port = 53;
	size_t hlen;
	int n;

	if (*s == '[') {
		const char *end = strchr(s, ']');

		if (end == NULL || (hlen = (size_t)(end - s - 1)) >=
		    sizeof(host))
			return -1;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, &a6) != 1)
			return -1;
		rest = end + 1;
	} else {
		hlen = strcspn(s, ":");
		if (hlen >= sizeof(host))
			return -1;
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET, host, &a4) != 1)
			return -1;
		rest = s + hlen;
	}
	if (*rest == ':' && units_port(rest + 1, &port) == -1)
		return -1;
	if (*rest != ':' && *rest != '\0')
		return -1;
	n = snprintf(out, outlen, s[0] == '[' ? "[%s]:%u" : "%s:%u", host,
	    (unsigned)port);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}
