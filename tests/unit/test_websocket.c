/*
 * WebSocket pieces of the tunnel (lib/websocket.c): the handshake key
 * and its answer (RFC 6455 section 1.3's example), the frame tracker that
 * decides where a close frame of agate's may go, and that frame itself.
 * The tracker's cases are fed whole, a byte at a time and split at every
 * point, since the network splits streams anywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lib/encode.h"
#include "lib/websocket.h"

static void
test_accept_rfc_example(void **state)
{
	char out[WS_ACCEPT_LEN + 1];

	(void)state;
	assert_int_equal(ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, out), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void
test_key_valid(void **state)
{
	static const struct {
		const char	*key;
		bool		 ok;
	} cases[] = {
		{ "dGhlIHNhbXBsZSBub25jZQ==", true },
		{ "AAAAAAAAAAAAAAAAAAAAAA==", true },
		{ "dGhlIHNhbXBsZSBub25jZQ=", false },	/* short */
		{ "dGhlIHNhbXBsZSBub25jZQ===", false },
		{ "dGhlIHNhbXBsZSBub25jZSE=", false },	/* 17 bytes */
		{ "dGhlIHNhbXBsZSBub25j", false },	/* 15 bytes */
		{ "dGhlIHNhbXBsZSBub25jZ*==", false },	/* not base64 */
		{ "dGhlIHNhbXBsZSBub25jZQ-_", false },	/* base64url */
		{ "", false },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (ws_key_valid(cases[i].key, strlen(cases[i].key)) !=
		    cases[i].ok)
			fail_msg("ws_key_valid(\"%s\") != %d", cases[i].key,
			    cases[i].ok);
}

static void
test_base64_encode(void **state)
{
	static const char *const in[] = { "", "f", "fo", "foo", "foob",
	    "fooba", "foobar" };
	static const char *const out[] = { "", "Zg==", "Zm8=", "Zm9v",
	    "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };	/* RFC 4648 section 10 */
	char b[16];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		base64_encode((const unsigned char *)in[i], strlen(in[i]), b);
		assert_string_equal(b, out[i]);
	}
}

/* A stream and where its frames end: boundary after byte i, as 0/1. */
struct track_case {
	const char	*name;
	uint8_t		 bytes[64];
	size_t		 len;
	bool		 closed;	/* a close frame went by */
	bool		 broken;
};

static const struct track_case tcases[] = {
	{ "RFC 6455 5.7: unmasked \"Hello\"",
	    { 0x81, 0x05, 'H', 'e', 'l', 'l', 'o' }, 7, false, false },
	{ "masked \"Hello\"",
	    { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51,
	    0x58 }, 11, false, false },
	{ "fragments: \"Hel\", \"lo\"",
	    { 0x01, 0x03, 'H', 'e', 'l', 0x80, 0x02, 'l', 'o' }, 9, false,
	    false },
	{ "unmasked ping, then a close",
	    { 0x89, 0x05, 'H', 'e', 'l', 'l', 'o', 0x88, 0x02, 0x03, 0xe8 },
	    11, true, false },
	{ "empty frame", { 0x82, 0x00 }, 2, false, false },
	{ "16-bit length 3",
	    { 0x82, 0x7e, 0x00, 0x03, 1, 2, 3 }, 7, false, false },
	{ "64-bit length 2, masked",
	    { 0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 2, 9, 9, 9, 9, 1, 2 }, 16,
	    false, false },
	{ "64-bit length with the top bit set",
	    { 0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1 }, 10, false, true },
};

static void
check_track(const struct track_case *c, size_t split)
{
	struct ws_track t = { 0 };

	ws_track_feed(&t, c->bytes, split);
	ws_track_feed(&t, c->bytes + split, c->len - split);
	if (ws_track_boundary(&t) == c->broken || t.closed != c->closed ||
	    t.broken != c->broken)
		fail_msg("%s (split at %zu): boundary %d closed %d broken %d",
		    c->name, split, ws_track_boundary(&t), t.closed,
		    t.broken);
}

static void
test_track(void **state)
{
	size_t i, k;

	(void)state;
	for (i = 0; i < sizeof(tcases) / sizeof(tcases[0]); i++)
		for (k = 0; k <= tcases[i].len; k++)
			check_track(&tcases[i], k);
}

static void
test_track_mid_frame(void **state)
{
	/* 300-byte payload: a 16-bit length, and no boundary until its
	 * last byte. */
	uint8_t head[4] = { 0x82, 0x7e, 0x01, 0x2c }, body[300];
	struct ws_track t = { 0 };
	size_t i;

	(void)state;
	memset(body, 'x', sizeof(body));
	ws_track_feed(&t, head, 1);
	assert_false(ws_track_boundary(&t));
	ws_track_feed(&t, head + 1, 3);
	for (i = 0; i < sizeof(body); i++) {
		assert_false(ws_track_boundary(&t));
		ws_track_feed(&t, body + i, 1);
	}
	assert_true(ws_track_boundary(&t));
	assert_false(t.closed);
}

static void
test_track_to_boundary(void **state)
{
	/* A frame of 3 payload bytes, then the header of the next. */
	static const uint8_t s[] = { 0x82, 0x03, 'a', 'b', 'c', 0x81, 0x05 };
	struct ws_track t = { 0 };
	size_t k;

	(void)state;
	assert_int_equal(ws_track_to_boundary(&t, s, sizeof(s)), 0);
	ws_track_feed(&t, s, 3);		/* header and 'a' */
	assert_false(ws_track_boundary(&t));
	k = ws_track_to_boundary(&t, s + 3, sizeof(s) - 3);
	assert_int_equal(k, 2);			/* "bc", not the next frame */
	assert_true(ws_track_boundary(&t));
	/* Mid-header: the rest of the header, of a 0-byte payload. */
	memset(&t, 0, sizeof(t));
	ws_track_feed(&t, (const uint8_t *)"\x89", 1);
	k = ws_track_to_boundary(&t, (const uint8_t *)"\x00\x81\x01x", 4);
	assert_int_equal(k, 1);
	assert_true(ws_track_boundary(&t));
}

static void
test_close_frame(void **state)
{
	static const uint8_t plain[] = { 0x88, 0x0c, 0x03, 0xe9, 'g', 'o',
	    'i', 'n', 'g', ' ', 'a', 'w', 'a', 'y' };
	uint8_t out[WS_CLOSE_MAX], mask[4] = { 1, 2, 3, 4 };
	struct ws_track t = { 0 };
	size_t n, i;

	(void)state;
	n = ws_close_frame(out, WS_GOING_AWAY, NULL);
	assert_int_equal(n, sizeof(plain));
	assert_memory_equal(out, plain, n);
	ws_track_feed(&t, out, n);
	assert_true(ws_track_boundary(&t));
	assert_true(t.closed);

	n = ws_close_frame(out, WS_GOING_AWAY, mask);
	assert_int_equal(n, sizeof(plain) + 4);
	assert_int_equal(out[1], 0x80 | 12);
	assert_memory_equal(out + 2, mask, 4);
	for (i = 0; i < 12; i++)
		assert_int_equal(out[6 + i] ^ mask[i % 4], plain[2 + i]);

	n = ws_close_frame(out, 1000, NULL);
	assert_int_equal(n, 4);
	assert_int_equal(out[2] << 8 | out[3], 1000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_rfc_example),
		cmocka_unit_test(test_key_valid),
		cmocka_unit_test(test_base64_encode),
		cmocka_unit_test(test_track),
		cmocka_unit_test(test_track_mid_frame),
		cmocka_unit_test(test_track_to_boundary),
		cmocka_unit_test(test_close_frame),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
