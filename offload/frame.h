/*
 * The frames between a worker and its offload helpers: a fixed 12-byte
 * header (payload length, job id, job kind, status) then the payload.
 * Both ends are on one machine, so fields are in host byte order.  A
 * payload above FRAME_MAX is refused by both sides: the sender never makes
 * one, and a reader that sees one treats the stream as broken.
 *
 * Pure functions, no I/O: the worker feeds them what non-blocking reads
 * bring (any split), the helper what its blocking reads bring.
 */
#ifndef AGATE_FRAME_H
#define AGATE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER	12
#define FRAME_MAX	(16u * 1024 * 1024)	/* payload bytes */

struct frame {
	uint32_t	 len;		/* payload bytes */
	uint32_t	 id;		/* job id, echoed by the helper */
	uint16_t	 kind;		/* enum job_kind */
	uint16_t	 status;	/* enum job_status (results) */
	const char	*payload;	/* into the decoded buffer */
};

enum frame_result {
	FRAME_OK,		/* one whole frame decoded */
	FRAME_MORE,		/* not all here yet: read more */
	FRAME_TOO_BIG		/* header announces more than FRAME_MAX */
};

/* Writes the header for f (len, id, kind, status) into out. */
void	frame_header(const struct frame *f, unsigned char out[FRAME_HEADER]);
/*
 * Decodes the frame at the start of p[0..n).  FRAME_OK fills f (payload
 * points into p) and sets *used to the bytes it spans; FRAME_MORE leaves
 * *used at 0.
 */
enum frame_result frame_decode(const char *p, size_t n, struct frame *f,
	    size_t *used);

#endif
