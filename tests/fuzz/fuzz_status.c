/*
 * Fuzz target: `agate -s status` reading the admin listener's answer
 * (supervisor/statuscmd.c).  Whatever comes back from the socket -- a
 * different server on that port, a cut answer, JSON of another shape --
 * must give a table or a one-line reason, never a crash.  A reason must
 * be set whenever it refuses.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/supervisor.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	char err[256] = "", *p;

	if (devnull == NULL && (devnull = fopen("/dev/null", "w")) == NULL)
		abort();
	if ((p = malloc(size + 1)) == NULL)
		return 0;
	memcpy(p, data, size);
	p[size] = '\0';
	if (statuscmd_print(p, size, devnull, err, sizeof(err)) == -1 &&
	    err[0] == '\0')
		abort();
	free(p);
	return 0;
}
