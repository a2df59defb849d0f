/*
 * Frame header encoding and decoding (see frame.h).  memcpy rather than
 * casts: a header may start at any byte of a read buffer.
 */
#include <string.h>

#include "offload/frame.h"

void
frame_header(const struct frame *f, unsigned char out[FRAME_HEADER])
{
	memcpy(out, &f->len, 4);
	memcpy(out + 4, &f->id, 4);
	memcpy(out + 8, &f->kind, 2);
	memcpy(out + 10, &f->status, 2);
}

enum frame_result
frame_decode(const char *p, size_t n, struct frame *f, size_t *used)
{
	*used = 0;
	if (n < FRAME_HEADER)
		return FRAME_MORE;
	memcpy(&f->len, p, 4);
	memcpy(&f->id, p + 4, 4);
	memcpy(&f->kind, p + 8, 2);
	memcpy(&f->status, p + 10, 2);
	if (f->len > FRAME_MAX)
		return FRAME_TOO_BIG;
	if (n - FRAME_HEADER < f->len)
		return FRAME_MORE;
	f->payload = p + FRAME_HEADER;
	*used = FRAME_HEADER + (size_t)f->len;
	return FRAME_OK;
}
