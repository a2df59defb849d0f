/*
 * API keys, kept as SHA-256 hashes (see apikeys.c).
 */
#ifndef AGATE_APIKEYS_H
#define AGATE_APIKEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/arena.h"

struct request;

struct apikeys {
	unsigned char	(*hash)[32];
	size_t		  n;
};

/* Reads path into arena; NULL with "path:line:col: reason" in err. */
struct apikeys	*apikeys_load(const char *path, struct arena *, char *err,
		    size_t errlen);
/* Whether key hashes to one of the entries (constant time). */
bool		 apikeys_match(const struct apikeys *, const char *key,
		    size_t len);

#endif
