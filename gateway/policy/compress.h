/*
 * gzip responses (route `compress: gzip`); see compress.c.
 */
#ifndef AGATE_COMPRESS_H
#define AGATE_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct request;

/*
 * Pieces up to this many bytes are compressed on the loop, not in the
 * pool (docs/offload.md: where a round trip costs the loop more).
 */
#define COMPRESS_INLINE_MAX	(2 * 1024)

/* Installs the filter if the route compresses and the client takes gzip. */
/* Does an Accept-Encoding value allow gzip? */
bool	compress_accepts_gzip(const char *value, size_t len);
/* Would this response be compressed?  hdrs: "Name: value\r\n" lines. */
bool	compress_want(const struct request *, int status, const char *hdrs,
	    size_t hdrs_len, int64_t content_length);

#endif
