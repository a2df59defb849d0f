/*
 * Fuzz target: the traceparent parser.  Besides not crashing or reading
 * past its length, what it accepts must hold what agate relies on when
 * it sends the context on: ids not all zero, and formatting the ids back
 * gives the input's first 55 characters with version 00.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/trace/trace.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t zero[16];
	uint8_t tid[16], pid[8], flags;
	char out[TRACEPARENT_LEN];
	char *p = malloc(size ? size : 1);

	if (p == NULL)
		return 0;
	memcpy(p, data, size);
	if (traceparent_parse(p, size, tid, pid, &flags) == 0) {
		if (size < TRACEPARENT_LEN || memcmp(tid, zero, 16) == 0 ||
		    memcmp(pid, zero, 8) == 0)
			abort();
		traceparent_format(out, tid, pid, flags);
		if (memcmp(out + 2, p + 2, TRACEPARENT_LEN - 2) != 0)
			abort();
		if (p[0] == 'f' && p[1] == 'f')
			abort();
	}
	free(p);
	return 0;
}
