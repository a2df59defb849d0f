/*
 * hosts(5): one address per line, then its names, separated by blanks;
 * "#" starts a comment.  Lines that do not parse are skipped, as the C
 * library does; an address with a zone ("fe80::1%eth0") too, since a
 * zone cannot be carried in the answer.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "gateway/upstream/hosts.h"

#define HOSTS_FIELD_MAX	256

/* The next blank-separated field of [*p, end) into out; 0 at the end of
 * the line. */
static size_t
hosts_field(const char **p, const char *end, char *out)
{
	const char *s = *p;
	size_t n = 0;

	while (s < end && (*s == ' ' || *s == '\t' || *s == '\r'))
		s++;
	while (s < end && *s != ' ' && *s != '\t' && *s != '\r') {
		if (n < HOSTS_FIELD_MAX - 1)
			out[n] = *s;
		n++;
		s++;
	}
	*p = s;
	if (n >= HOSTS_FIELD_MAX)
		n = HOSTS_FIELD_MAX - 1;	/* too long: matches no name */
	out[n] = '\0';
	return n;
}

/* Whether the line [p, end) lists name. */
static int
hosts_names(const char *p, const char *end, const char *name)
{
	char f[HOSTS_FIELD_MAX];

	while (hosts_field(&p, end, f) > 0)
		if (strcasecmp(f, name) == 0)
			return 1;
	return 0;
}

/* The line's address into *sa; -1 if it has none agate can use. */
static int
hosts_addr(const char **p, const char *end, uint16_t port,
    struct sockaddr_storage *sa, socklen_t *salen)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;
	char f[HOSTS_FIELD_MAX];

	if (hosts_field(p, end, f) == 0)
		return -1;
	memset(sa, 0, sizeof(*sa));
	if (inet_pton(AF_INET, f, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*salen = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, f, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*salen = sizeof(*sin6);
		return 0;
	}
	return -1;
}

size_t
hosts_find(const char *text, size_t len, const char *name, uint16_t port,
    struct sockaddr_storage *sa, socklen_t *salen, size_t max)
{
	const char *p = text, *end = text + len, *eol, *hash;
	size_t n = 0, k;

	for (; p < end && n < max; p = eol + 1) {
		const char *q = p;

		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		if ((hash = memchr(p, '#', (size_t)(eol - p))) == NULL)
			hash = eol;
		if (hosts_addr(&q, hash, port, &sa[n], &salen[n]) == -1 ||
		    !hosts_names(q, hash, name))
			continue;
		for (k = 0; k < n && (salen[k] != salen[n] ||
		    memcmp(&sa[k], &sa[n], salen[n]) != 0); k++)
			;
		if (k == n)
			n++;
	}
	return n;
}
