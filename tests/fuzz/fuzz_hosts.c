/*
 * Fuzz target: the hosts(5) reader.  The input's first line is the name
 * asked for, the rest the file.  Besides not crashing: every address
 * found parses back to a family agate dials, carries the port asked
 * for, and none is listed twice.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/upstream/hosts.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage sa[8];
	socklen_t len[8];
	const char *text = (const char *)data, *nl;
	char name[256];
	size_t nlen, n, i, k;

	nl = memchr(text, '\n', size);
	nlen = nl != NULL ? (size_t)(nl - text) : size;
	if (nlen >= sizeof(name))
		nlen = sizeof(name) - 1;
	memcpy(name, text, nlen);
	name[nlen] = '\0';
	n = hosts_find(text, size, name, 8080, sa, len, 8);
	if (n > 8)
		abort();
	for (i = 0; i < n; i++) {
		if (sa[i].ss_family == AF_INET) {
			if (len[i] != sizeof(struct sockaddr_in) ||
			    ((struct sockaddr_in *)&sa[i])->sin_port !=
			    htons(8080))
				abort();
		} else if (sa[i].ss_family != AF_INET6 ||
		    len[i] != sizeof(struct sockaddr_in6) ||
		    ((struct sockaddr_in6 *)&sa[i])->sin6_port != htons(8080))
			abort();
		for (k = 0; k < i; k++)
			if (len[k] == len[i] &&
			    memcmp(&sa[k], &sa[i], len[i]) == 0)
				abort();
	}
	return 0;
}
