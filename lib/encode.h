/*
 * Small encodings several folders parse: hex digits (percent-escapes,
 * chunk sizes, hex signatures and key hashes) and base64 (basic auth,
 * base64url for JWTs, WebSocket keys).
 */
#ifndef AGATE_ENCODE_H
#define AGATE_ENCODE_H

#include <stddef.h>
#include <sys/types.h>

/* A hex digit's value, or -1.  Inline: chunk sizes and paths use it. */
static inline int
hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* 2n hex digits into n bytes; -1 if one is not a hex digit. */
int	hex_decode(const char *in, unsigned char *out, size_t n);

enum base64_kind {
	BASE64_STD,	/* RFC 4648 section 4: +/ and '=' padding, required */
	BASE64_URL	/* RFC 4648 section 5: -_, padding optional (JWS) */
};

/* Decodes in[0..n) into out (at most max bytes).  Returns the length,
 * or -1 if the input is not of that kind or does not fit. */
ssize_t	base64_decode(const char *in, size_t n, unsigned char *out,
	    size_t max, enum base64_kind);
/* Encodes in[0..n) as BASE64_STD into out, which gets 4 * ((n + 2) / 3)
 * characters and a NUL. */
void	base64_encode(const unsigned char *in, size_t n, char *out);

#endif
