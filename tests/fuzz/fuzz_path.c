/*
 * Fuzz target: path normalisation.  Besides not crashing, the result
 * must hold what routing relies on: never longer than the input, always
 * starting with '/', no "//", no "." or ".." segment left.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/path.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = malloc(size + 1);
	const char *why = NULL;
	size_t n, i;

	if (p == NULL)
		return 0;
	memcpy(p, data, size);
	p[size] = '\0';
	n = path_normalize(p, size, &why);
	if (n > 0) {
		if (n > size || p[0] != '/')
			abort();
		for (i = 0; i + 1 < n; i++)
			if (p[i] == '/' && p[i + 1] == '/')
				abort();
		for (i = 0; i < n; i++) {
			size_t seg = i + 1;

			if (p[i] != '/')
				continue;
			if ((seg + 1 == n || (seg + 1 < n && p[seg + 1] == '/'))
			    && seg < n && p[seg] == '.')
				abort();	/* a "." segment */
			if (seg + 1 < n && p[seg] == '.' && p[seg + 1] == '.' &&
			    (seg + 2 == n || p[seg + 2] == '/'))
				abort();	/* a ".." segment */
		}
	} else if (why == NULL)
		abort();
	free(p);
	return 0;
}
