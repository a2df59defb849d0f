/*
 * PROXY protocol v1 (one text line) and v2 (a binary header), as
 * specified in HAProxy's doc/proxy-protocol.txt.  Only the source address
 * is used; TLVs are skipped.  Anything malformed fails the connection:
 * a listener configured for PROXY trusts nothing else.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/proxy_proto.h"

static const char v2sig[12] = "\r\n\r\n\0\r\nQUIT\n";

void
proxy_proto_format(const struct sockaddr *sa, char *out, size_t len)
{
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
		    out, (socklen_t)len);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)len);
		else
			inet_ntop(AF_INET6, a, out, (socklen_t)len);
	} else
		snprintf(out, len, "unix");
}

static int
v1_port(const char *s, uint16_t *port)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s < '0' || *s > '9' || *end != '\0' || v < 0 || v > 65535 ||
	    (s[0] == '0' && s[1] != '\0'))
		return -1;
	*port = htons((uint16_t)v);
	return 0;
}

/* "PROXY TCP4 src dst sport dport\r\n" */
static int
parse_v1(const char *buf, size_t len, struct sockaddr_storage *peer,
    size_t *used)
{
	char line[PROXY_V1_MAX + 1], *f[6], *save = NULL;
	const char *eol;
	size_t n;
	int i;

	if ((eol = memchr(buf, '\n', len < PROXY_V1_MAX ? len :
	    PROXY_V1_MAX)) == NULL)
		return len >= PROXY_V1_MAX ? -1 : 0;
	n = (size_t)(eol - buf);
	if (n == 0 || buf[n - 1] != '\r')
		return -1;
	memcpy(line, buf, n - 1);
	line[n - 1] = '\0';
	*used = n + 1;
	for (i = 0; i < 6; i++)
		if ((f[i] = strtok_r(i ? NULL : line, " ", &save)) == NULL)
			break;
	if (i >= 2 && strcmp(f[1], "UNKNOWN") == 0)
		return 1;
	if (i != 6 || strtok_r(NULL, " ", &save) != NULL)
		return -1;
	memset(peer, 0, sizeof(*peer));
	if (strcmp(f[1], "TCP4") == 0) {
		struct sockaddr_in *sin = (struct sockaddr_in *)peer;
		struct in_addr dst;
		uint16_t dport;

		if (inet_pton(AF_INET, f[2], &sin->sin_addr) != 1 ||
		    inet_pton(AF_INET, f[3], &dst) != 1 ||
		    v1_port(f[4], &sin->sin_port) == -1 ||
		    v1_port(f[5], &dport) == -1)
			return -1;
		sin->sin_family = AF_INET;
		return 1;
	}
	if (strcmp(f[1], "TCP6") == 0) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)peer;
		struct in6_addr dst;
		uint16_t dport;

		if (inet_pton(AF_INET6, f[2], &sin6->sin6_addr) != 1 ||
		    inet_pton(AF_INET6, f[3], &dst) != 1 ||
		    v1_port(f[4], &sin6->sin6_port) == -1 ||
		    v1_port(f[5], &dport) == -1)
			return -1;
		sin6->sin6_family = AF_INET6;
		return 1;
	}
	return -1;
}

static int
parse_v2(const unsigned char *b, size_t len, struct sockaddr_storage *peer,
    size_t *used)
{
	size_t body;

	if (len < 16)
		return 0;
	if ((b[12] >> 4) != 2 || (b[12] & 15) > 1)
		return -1;
	body = (size_t)b[14] << 8 | b[15];
	if (body > PROXY_V2_MAX - 16)
		return -1;
	if (len < 16 + body)
		return 0;
	*used = 16 + body;
	if ((b[12] & 15) == 0)		/* LOCAL: a health check of the LB */
		return 1;
	switch (b[13]) {
	case 0x11:			/* TCP over IPv4 */
	case 0x12: {
		struct sockaddr_in *sin = (struct sockaddr_in *)peer;

		if (body < 12)
			return -1;
		memset(peer, 0, sizeof(*peer));
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, b + 16, 4);
		memcpy(&sin->sin_port, b + 24, 2);
		return 1;
	}
	case 0x21:			/* TCP over IPv6 */
	case 0x22: {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)peer;

		if (body < 36)
			return -1;
		memset(peer, 0, sizeof(*peer));
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, b + 16, 16);
		memcpy(&sin6->sin6_port, b + 48, 2);
		return 1;
	}
	case 0x00:			/* UNSPEC: keep the socket's address */
		return 1;
	default:
		return -1;
	}
}

int
proxy_proto_parse(const char *buf, size_t len, struct sockaddr_storage *peer,
    size_t *used)
{
	size_t n = len < 12 ? len : 12;

	if (len == 0)
		return 0;
	if (memcmp(buf, v2sig, n) == 0)
		return n < 12 ? 0 : parse_v2((const unsigned char *)buf, len,
		    peer, used);
	n = len < 6 ? len : 6;
	if (memcmp(buf, "PROXY ", n) == 0)
		return n < 6 ? 0 : parse_v1(buf, len, peer, used);
	return -1;
}
