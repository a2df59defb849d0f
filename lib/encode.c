/*
 * Hex and base64 decoding (see encode.h).  Strict: a byte outside the
 * alphabet, misplaced padding or an output that does not fit is an
 * error, never skipped.
 */
#include <stdint.h>
#include <string.h>

#include "lib/encode.h"

int
hex_decode(const char *in, unsigned char *out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int hi = hex_value((unsigned char)in[2 * i]), lo;

		if (hi < 0 || (lo = hex_value((unsigned char)in[2 * i + 1])) < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

static int
b64_value(int c, enum base64_kind kind)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (kind == BASE64_URL ? '-' : '+'))
		return 62;
	if (c == (kind == BASE64_URL ? '_' : '/'))
		return 63;
	return -1;
}

ssize_t
base64_decode(const char *in, size_t n, unsigned char *out, size_t max,
    enum base64_kind kind)
{
	size_t i, o = 0, data = n;
	uint32_t acc = 0;
	int bits = 0, v;

	/* Padding: '=' only at the end, at most two of them. */
	while (data > 0 && in[data - 1] == '=' && n - data < 2)
		data--;
	if (kind == BASE64_STD && n % 4 != 0)
		return -1;
	for (i = 0; i < data; i++) {
		if ((v = b64_value((unsigned char)in[i], kind)) < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == max)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	return (ssize_t)o;
}

void
base64_encode(const unsigned char *in, size_t n, char *out)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		    in[i + 2];

		out[o++] = abc[v >> 18];
		out[o++] = abc[(v >> 12) & 63];
		out[o++] = abc[(v >> 6) & 63];
		out[o++] = abc[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16 |
		    (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);

		out[o++] = abc[v >> 18];
		out[o++] = abc[(v >> 12) & 63];
		out[o++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
}
