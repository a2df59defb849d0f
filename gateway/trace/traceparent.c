/*
 * The traceparent field of W3C Trace Context (level 1): parsing what a
 * client sends and formatting what agate sends on.  Pure functions, so
 * the unit test and the fuzzer reach them alone.
 *
 *   version "-" trace-id "-" parent-id "-" trace-flags
 *   00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
 *
 * Anything the spec calls invalid makes the caller start a new trace:
 * upper case, version ff, an all-zero id, a wrong length or separator.
 * A version above 00 is read as 00 (the spec's forward compatibility):
 * the first 55 characters, and then either the end or a '-'.
 */
#include <string.h>

#include "gateway/trace/trace.h"

/* Every byte's two lowercase hex digits: ids are formatted for each
 * upstream try. */
static const char hexpairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* A lowercase hex digit's value, or -1 (upper case is invalid here). */
static int
lohex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* 2n lowercase hex digits into n bytes; -1 on any other character, or
 * if every byte is zero and nonzero is asked for. */
static int
lohex_decode(const char *s, uint8_t *out, size_t n, bool nonzero)
{
	uint8_t any = 0;
	size_t i;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if ((hi = lohex((unsigned char)s[2 * i])) < 0 ||
		    (lo = lohex((unsigned char)s[2 * i + 1])) < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
		any |= out[i];
	}
	return nonzero && any == 0 ? -1 : 0;
}

int
traceparent_parse(const char *s, size_t n, uint8_t trace_id[16],
    uint8_t parent_id[8], uint8_t *flags)
{
	uint8_t version;

	if (n < TRACEPARENT_LEN || lohex_decode(s, &version, 1, false) == -1 ||
	    version == 0xff)
		return -1;
	if (version == 0 ? n != TRACEPARENT_LEN :
	    n > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-')
		return -1;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return -1;
	if (lohex_decode(s + 3, trace_id, 16, true) == -1 ||
	    lohex_decode(s + 36, parent_id, 8, true) == -1 ||
	    lohex_decode(s + 53, flags, 1, false) == -1)
		return -1;
	return 0;
}

void
trace_hex(char *out, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		memcpy(out + 2 * i, hexpairs + 2 * p[i], 2);
}

void
traceparent_format(char *out, const uint8_t trace_id[16],
    const uint8_t span_id[8], uint8_t flags)
{
	out[0] = '0';
	out[1] = '0';
	out[2] = '-';
	trace_hex(out + 3, trace_id, 16);
	out[35] = '-';
	trace_hex(out + 36, span_id, 8);
	out[52] = '-';
	trace_hex(out + 53, &flags, 1);
}
