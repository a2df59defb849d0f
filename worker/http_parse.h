/*
 * HTTP/1.1 request parsing, in place: a parsed head is a set of pointers
 * into the connection's read buffer, nothing is copied.  Strict where
 * RFC 9112 lets a lenient parser be fooled into forwarding an ambiguous
 * message (framing, control bytes, line folding); lenient where it costs
 * nothing (a bare LF ends a line).  Pure code: no I/O, no allocation.
 */
#ifndef AGATE_HTTP_PARSE_H
#define AGATE_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>
#include <sys/types.h>

#define HTTP_MAX_HEADERS	100
#define HTTP_MAX_REQUEST_LINE	8192
#define HTTP_MAX_METHOD		32

struct http_header {
	const char	*name;
	const char	*value;
	uint32_t	 name_len;
	uint32_t	 value_len;
};

struct http_head {
	const char		*method;
	size_t			 method_len;
	const char		*target;	/* as received */
	size_t			 target_len;
	const char		*path;		/* origin-form path */
	size_t			 path_len;
	const char		*query;		/* after '?', or NULL */
	size_t			 query_len;
	int			 minor;		/* HTTP/1.minor */
	size_t			 nheaders;
	int64_t			 content_length;	/* -1: none */
	bool			 chunked;
	bool			 keepalive;
	bool			 expect_continue;
	const char		*host;
	size_t			 host_len;
	size_t			 head_len;	/* bytes up to the body */
	/* Last: everything above is reset with one memset up to here. */
	struct http_header	 headers[HTTP_MAX_HEADERS];
};

enum http_result {
	HTTP_OK,		/* complete */
	HTTP_AGAIN,		/* need more bytes */
	HTTP_ERROR		/* answer *status and close */
};

/*
 * Looks for the blank line ending a head in buf[0..len), starting at
 * *scan (updated, so a head arriving a byte at a time costs O(n) in all).
 * Returns the head length, or 0 if not there yet.
 */
size_t	http_head_end(const char *buf, size_t len, size_t *scan);
/*
 * Parses a complete head of head_len bytes (from http_head_end).  On
 * HTTP_ERROR sets *status (400, 414, 431, 501, 505, 417) and *why.
 */
enum http_result http_parse_head(const char *buf, size_t head_len,
	    struct http_head *h, int *status, const char **why);
/* Sizes a head still incomplete after len bytes: 0, or 414/431. */
int	http_head_too_big(const char *buf, size_t len, size_t max_head);

/* An upstream's response head, checked before anything passes it on. */
struct http_resp_head {
	int		 minor;
	int		 status;
	const char	*reason;
	size_t		 reason_len;
	const char	*fields;	/* header lines, each ending in (CR)LF */
	size_t		 fields_len;
	int64_t		 content_length;	/* -1: none */
	bool		 chunked;	/* final coding chunked */
	bool		 other_coding;	/* a coding we do not decode */
	bool		 keepalive;	/* the connection may be reused */
};

#define HTTP_MAX_RESPONSE_FIELDS 128

/*
 * Parses a complete response head of head_len bytes.  Returns false on
 * anything a gateway must not pass on: a bad status line, bad field
 * syntax or bytes, obs-fold, conflicting lengths, too many fields.
 */
bool	http_parse_response_head(const char *buf, size_t head_len,
	    struct http_resp_head *);

const struct http_header *http_find_header(const struct http_head *,
	    const char *name);
/*
 * Case-insensitive compare of a token with a literal.  Inline so that
 * strlen(lit) folds to a constant and most calls end at the length test
 * (it runs for every header of every request, often several times).
 */
static inline bool
http_token_eq(const char *a, size_t alen, const char *lit)
{
	return __builtin_strlen(lit) == alen &&
	    strncasecmp(a, lit, alen) == 0;
}
const char *http_reason(int status);

/* Chunked transfer-coding decoder (RFC 9112 section 7.1). */
struct http_chunked {
	int		state;
	uint64_t	remaining;	/* data bytes left in this chunk */
	unsigned	digits;
	bool		ext;		/* ';' seen on the size line */
	size_t		line;		/* bytes of the current size/trailer line */
	size_t		trailers;	/* bytes of trailer section so far */
};

enum http_chunk_result {
	CHUNK_DATA,		/* data, dlen: a span of body bytes */
	CHUNK_AGAIN,		/* input used up, need more */
	CHUNK_DONE,		/* last chunk and trailers consumed */
	CHUNK_ERROR
};

void	http_chunked_init(struct http_chunked *);
/*
 * Consumes framing from src[0..len) until a data span of at most max
 * bytes is available (it points into src), the input runs out or the body
 * ends.  *used counts the bytes of src consumed, data span included.
 */
enum http_chunk_result http_chunked_next(struct http_chunked *,
	    const char *src, size_t len, size_t max, size_t *used,
	    const char **data, size_t *dlen);

#endif
