/*
 * Fuzz target: the cache's RFC 9111 rules (gateway/cache/policy.c) on
 * what an upstream or a client could send.  The input is split at its
 * first two NUL bytes: an answer's header fields, a request's
 * If-None-Match and the rest as If-Modified-Since; every parser sees
 * its part, with the lengths explicit and nothing terminated.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cache/policy.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_vary(void *arg, const char *name, size_t nlen)
{
	size_t *n = arg;

	*n += nlen;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *z1, *z2;
	size_t fl, il, ml, seen = 0;
	struct policy_answer a = { 0 };
	struct policy_store st;
	struct cc cc;
	char *copy;
	int i;

	/* A heap copy: ASan sees a read one byte past the end. */
	if ((copy = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(copy, p, size);
	p = copy;
	z1 = memchr(p, '\0', size);
	fl = z1 ? (size_t)(z1 - p) : size;
	z2 = z1 ? memchr(z1 + 1, '\0', size - fl - 1) : NULL;
	il = z2 ? (size_t)(z2 - z1 - 1) : 0;
	ml = z2 ? size - fl - il - 2 : 0;

	policy_cc_init(&cc);
	policy_cc_parse(&cc, p, fl);
	(void)policy_http_date(p, fl);
	(void)policy_request(p, fl < 8 ? fl : 8, p, fl, p, fl);
	(void)policy_vary_each(p, fl, 8, fuzz_vary, &seen);
	for (i = 0; i < 3; i++) {
		a.status = i == 0 ? 200 : i == 1 ? 404 : 301;
		a.fields = p;
		a.fields_len = fl;
		a.req_authorization = i == 2;
		a.request_time = 1000000;
		a.response_time = 1000500;
		a.ttl_ms = 30000;
		policy_store(&a, &st);
	}
	if (z2 != NULL)
		(void)policy_not_modified(z1 + 1, il, z2 + 1, ml, p, fl, p, fl,
		    p, fl);
	free(copy);
	return 0;
}
