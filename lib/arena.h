/*
 * A bump allocator for objects that live and die together (a parsed
 * config).  Memory is zeroed; nothing is freed until arena_free().
 */
#ifndef AGATE_ARENA_H
#define AGATE_ARENA_H

#include <stddef.h>

struct arena_chunk;

struct arena {
	struct arena_chunk	*chunks;
};

/* Returns zeroed memory, or NULL when out of memory. */
void	*arena_alloc(struct arena *, size_t size);
char	*arena_strndup(struct arena *, const char *s, size_t n);
char	*arena_strdup(struct arena *, const char *s);
void	 arena_free(struct arena *);

#endif
