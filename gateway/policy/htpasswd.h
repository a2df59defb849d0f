/*
 * htpasswd files for basic auth (see htpasswd.c).
 */
#ifndef AGATE_HTPASSWD_H
#define AGATE_HTPASSWD_H

#include <stddef.h>

#include "lib/arena.h"

struct htpasswd_user {
	const char	*name;
	const char	*hash;		/* crypt(3) string */
	int		 line;
};

struct htpasswd {
	struct htpasswd_user	*users;	/* sorted by name */
	size_t			 n;
};

/*
 * Reads and checks path; the table lives in arena.  NULL with
 * "path:line:col: reason" in err when a line is malformed or its hash is
 * not one agate accepts.
 */
struct htpasswd	*htpasswd_load(const char *path, struct arena *,
		    char *err, size_t errlen);
const struct htpasswd_user *htpasswd_find(const struct htpasswd *,
		    const char *user, size_t len);
/* "bcrypt", "sha512-crypt"... for an accepted hash, or NULL. */
const char	*htpasswd_hash_kind(const char *hash);

#endif
