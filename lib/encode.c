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
