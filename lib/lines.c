/*
 * Reading the line-oriented files of the config (see lines.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/lines.h"

int
lines_read(const char *path, lines_fn fn, void *arg, char *err,
    size_t errlen)
{
	char *line = NULL, *p;
	size_t len = 0;
	ssize_t got;
	int lineno = 0, rc = 0;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s:1:1: cannot read: %s", path,
		    strerror(errno));
		return -1;
	}
	while (rc == 0 && (got = getline(&line, &len, f)) != -1) {
		lineno++;
		while (got > 0 && (line[got - 1] == '\n' ||
		    line[got - 1] == '\r' || line[got - 1] == ' ' ||
		    line[got - 1] == '\t'))
			line[--got] = '\0';
		for (p = line; *p == ' ' || *p == '\t'; p++)
			;
		if (*p == '\0' || *p == '#')
			continue;
		rc = fn(arg, lineno, (int)(p - line) + 1, p);
	}
	free(line);
	fclose(f);
	return rc;
}
