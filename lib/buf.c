/*
 * Growable byte buffer.  Growth doubles; consumed bytes are reclaimed by
 * moving the pending tail to the front only when room is needed, so a
 * buffer drained in order never copies.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

int
buf_reserve(struct buf *b, size_t n)
{
	size_t pending = b->len - b->off, cap;
	char *p;

	if (b->cap - b->len >= n)
		return 0;
	if (b->off > 0 && b->cap - pending >= n) {
		memmove(b->data, b->data + b->off, pending);
		b->off = 0;
		b->len = pending;
		return 0;
	}
	cap = b->cap ? b->cap : 256;
	while (cap - pending < n) {
		if (cap > ((size_t)-1) / 2)
			return -1;
		cap *= 2;
	}
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, pending);
		b->off = 0;
		b->len = pending;
	}
	if ((p = realloc(b->data, cap)) == NULL)
		return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

int
buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (buf_reserve(b, n) == -1)
		return -1;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int
buf_appendf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (buf_reserve(b, 128) == -1)
		return -1;
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= b->cap - b->len) {
		if (buf_reserve(b, (size_t)n + 1) == -1)
			return -1;
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

int
buf_append_json(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	/* Worst case every byte becomes \u00XX. */
	if (buf_reserve(b, n * 6) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char *o = b->data + b->len;

		if (c == '"' || c == '\\') {
			o[0] = '\\';
			o[1] = (char)c;
			b->len += 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(o, "\\u00", 4);
			o[4] = hex[c >> 4];
			o[5] = hex[c & 15];
			b->len += 6;
		} else {
			o[0] = (char)c;
			b->len++;
		}
	}
	return 0;
}

void
buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

void
buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}

void
buf_trim(struct buf *b, size_t keep)
{
	if (b->cap > keep && b->off == b->len) {
		free(b->data);
		b->data = NULL;
		b->cap = b->off = b->len = 0;
	}
}

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->cap = b->off = b->len = 0;
}
