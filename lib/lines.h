/*
 * Line-oriented files of the config (htpasswd, API-key hashes): one
 * reader, so blank lines, # comments, CRLF and the errors of opening the
 * file are handled the same way in each.
 */
#ifndef AGATE_LINES_H
#define AGATE_LINES_H

#include <stddef.h>

/*
 * Called for each line that is not blank or a comment: line has its
 * leading blanks skipped (col is where it starts, from 1) and its end
 * (CR, LF, trailing blanks) cut.  Return 0 to go on, -1 to stop (with a
 * "path:line:col: reason" written to err).
 */
typedef int (*lines_fn)(void *arg, int lineno, int col, char *line);

/* Reads path line by line.  0, or -1 with err set (by us or by fn). */
int	lines_read(const char *path, lines_fn, void *arg, char *err,
	    size_t errlen);

#endif
