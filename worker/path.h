/*
 * Request path normalisation, done before routing so that what agate
 * routes on is exactly what the upstream receives (RFC 3986 section 6):
 * percent-encoded unreserved characters are decoded, other escapes get
 * upper-case hex, "." and ".." segments are resolved, empty segments
 * ("//") are collapsed.  Refused: an encoded slash or NUL, a bad escape,
 * a path that climbs above "/", a fragment.  Pure code.
 */
#ifndef AGATE_PATH_H
#define AGATE_PATH_H

#include <stddef.h>

/*
 * Normalises path[0..len) in place (the result is never longer).
 * Returns the new length, or 0 with *why set when the path is refused.
 */
size_t	path_normalize(char *path, size_t len, const char **why);

#endif
