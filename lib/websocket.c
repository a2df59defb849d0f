/*
 * RFC 6455 pieces for the tunnel (see websocket.h).  The frame tracker
 * reads the 2 to 14 header bytes of each frame and then only counts the
 * payload down, so following a stream costs a few instructions per frame
 * whatever its size.
 */
#include <string.h>

#include <openssl/evp.h>

#include "lib/encode.h"
#include "lib/websocket.h"

/* Section 1.3: the GUID every handshake hashes with the key. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool
ws_key_valid(const char *key, size_t len)
{
	unsigned char raw[18];

	/* 16 bytes are 24 base64 characters, the last two "==". */
	return len == 24 && base64_decode(key, len, raw, sizeof(raw),
	    BASE64_STD) == 16;
}

int
ws_accept(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	int ok;

	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return -1;
	ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, key, len) == 1 &&
	    EVP_DigestUpdate(ctx, ws_guid, sizeof(ws_guid) - 1) == 1 &&
	    EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -1;
	base64_encode(md, 20, out);
	return 0;
}

/* How many header bytes a frame whose first two are h[0..2) has. */
static size_t
ws_header_len(const uint8_t *h)
{
	size_t n = 2;
	uint8_t len7 = h[1] & 0x7f;

	if (len7 == 126)
		n += 2;
	else if (len7 == 127)
		n += 8;
	if (h[1] & 0x80)
		n += 4;			/* the masking key */
	return n;
}

/* The header in t->hdr is whole: the payload follows. */
static void
ws_header_done(struct ws_track *t)
{
	uint8_t len7 = t->hdr[1] & 0x7f;
	uint64_t len = len7;
	size_t i;

	if (len7 == 126)
		len = (uint64_t)t->hdr[2] << 8 | t->hdr[3];
	else if (len7 == 127) {
		len = 0;
		for (i = 0; i < 8; i++)
			len = len << 8 | t->hdr[2 + i];
		if (len >> 63) {		/* the top bit must be 0 */
			t->broken = true;
			return;
		}
	}
	if ((t->hdr[0] & 0x0f) == 0x8)
		t->closed = true;
	t->left = len;
	t->hlen = 0;
}

void
ws_track_feed(struct ws_track *t, const uint8_t *p, size_t n)
{
	while (n > 0 && !t->broken) {
		size_t want, take;

		if (t->left > 0) {
			take = t->left < n ? (size_t)t->left : n;
			t->left -= take;
			p += take;
			n -= take;
			continue;
		}
		want = t->hlen < 2 ? 2 : ws_header_len(t->hdr);
		take = want - t->hlen < n ? want - t->hlen : n;
		memcpy(t->hdr + t->hlen, p, take);
		t->hlen += (uint8_t)take;
		p += take;
		n -= take;
		if (t->hlen == 2 && ws_header_len(t->hdr) > 2)
			continue;	/* the extended length, the mask */
		if (t->hlen == ws_header_len(t->hdr))
			ws_header_done(t);
	}
}

size_t
ws_track_to_boundary(struct ws_track *t, const uint8_t *p, size_t n)
{
	size_t used = 0, step;

	while (used < n && !ws_track_boundary(t) && !t->broken) {
		/* A payload in one go; a header (14 bytes at most) a byte at
		 * a time, so the feed stops right where the frame ends. */
		step = t->left > 0 ? (t->left < n - used ? (size_t)t->left :
		    n - used) : 1;
		ws_track_feed(t, p + used, step);
		used += step;
	}
	return used;
}

bool
ws_track_boundary(const struct ws_track *t)
{
	return !t->broken && t->left == 0 && t->hlen == 0;
}

size_t
ws_close_frame(uint8_t *out, uint16_t code, const uint8_t *mask)
{
	static const char going[] = "going away";
	uint8_t payload[2 + sizeof(going)];
	size_t plen = 2, n = 0, i;

	payload[0] = (uint8_t)(code >> 8);
	payload[1] = (uint8_t)code;
	if (code == WS_GOING_AWAY) {
		memcpy(payload + 2, going, sizeof(going) - 1);
		plen += sizeof(going) - 1;
	}
	out[n++] = 0x88;			/* FIN, close */
	out[n++] = (uint8_t)((mask != NULL ? 0x80 : 0) | plen);
	if (mask != NULL) {
		memcpy(out + n, mask, 4);
		n += 4;
	}
	for (i = 0; i < plen; i++)
		out[n++] = mask != NULL ? payload[i] ^ mask[i % 4] : payload[i];
	return n;
}
