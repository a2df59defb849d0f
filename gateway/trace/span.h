/*
 * The record of one span on the exporter's queue (private to
 * gateway/trace/): this header, the name (u16 length, bytes), then each
 * attribute: u8 key (enum span_attr), u8 type (0 string: u16 length,
 * bytes; 1 integer: 8 bytes).  Records are packed, so a reader copies
 * the header out before using it.
 */
#ifndef AGATE_TRACE_SPAN_H
#define AGATE_TRACE_SPAN_H

#include <stdint.h>

/* Longer strings (a path, a user agent) are cut here. */
#define SPAN_STR_MAX	1024

struct span_rec {
	uint32_t	 len;		/* the whole record */
	uint8_t		 kind;		/* enum span_kind */
	uint8_t		 status;	/* enum span_status */
	uint8_t		 pad[2];
	uint8_t		 trace_id[16];
	uint8_t		 span_id[8];
	uint8_t		 parent_id[8];	/* zero: a root span */
	uint64_t	 start_ns;
	uint64_t	 end_ns;
};

#endif
