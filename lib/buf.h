/*
 * A growable byte buffer with a read offset: bytes [off, len) are pending.
 * Used for output queues, access-log batches and header assembly.  All
 * functions return 0, or -1 when memory runs out (the buffer is unchanged).
 */
#ifndef AGATE_BUF_H
#define AGATE_BUF_H

#include <stddef.h>

struct buf {
	char	*data;
	size_t	 off;		/* first pending byte */
	size_t	 len;		/* end of pending bytes */
	size_t	 cap;
};

static inline size_t
buf_pending(const struct buf *b)
{
	return b->len - b->off;
}

static inline char *
buf_head(const struct buf *b)
{
	return b->data + b->off;
}

/* Makes room for n more bytes after len; may move pending bytes to 0. */
int	buf_reserve(struct buf *b, size_t n);
int	buf_append(struct buf *b, const void *p, size_t n);
int	buf_appendf(struct buf *b, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* Appends s as JSON string contents (no quotes), escaping what JSON needs. */
int	buf_append_json(struct buf *b, const char *s, size_t n);
/* Drops n pending bytes; an emptied buffer rewinds to 0. */
void	buf_consume(struct buf *b, size_t n);
void	buf_reset(struct buf *b);
/* Frees storage above keep bytes (keeps small buffers for reuse). */
void	buf_trim(struct buf *b, size_t keep);
void	buf_free(struct buf *b);

#endif
