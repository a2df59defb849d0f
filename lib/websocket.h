/*
 * What agate needs of WebSocket (RFC 6455) to tunnel it: checking a
 * client's handshake key, computing the Sec-WebSocket-Accept an upstream
 * must answer with, following frame boundaries in a relayed byte stream
 * (so that a close frame is never put in the middle of someone else's
 * frame), and making that close frame.  agate never reads messages: the
 * tunnel moves bytes untouched, and the tracker only skips over payloads.
 */
#ifndef AGATE_WEBSOCKET_H
#define AGATE_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WS_ACCEPT_LEN	28	/* base64 of a SHA-1 */

/* 1001: the endpoint is going away (a stop, a reload's drain). */
#define WS_GOING_AWAY	1001

/* Sec-WebSocket-Key: base64 of 16 bytes (section 4.1, item 7). */
bool	ws_key_valid(const char *key, size_t len);
/* The Sec-WebSocket-Accept for key (section 4.2.2, item 5.4); out gets
 * WS_ACCEPT_LEN characters and a NUL.  0, or -1 if SHA-1 failed. */
int	ws_accept(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1]);

/*
 * Frame boundaries of one direction of a WebSocket stream.  Fed every
 * byte in order, it knows whether the stream stands between two frames.
 * Bytes that cannot be WebSocket framing (a reserved length) stop it:
 * broken streams are never at a boundary.
 */
struct ws_track {
	uint64_t	 left;		/* payload bytes of this frame to come */
	uint8_t		 hdr[14];	/* the header as it arrives */
	uint8_t		 hlen;
	bool		 closed;	/* a close frame has gone by */
	bool		 broken;
};

void	ws_track_feed(struct ws_track *, const uint8_t *p, size_t n);
/* Feeds p[0..n) up to the end of the frame under way (nothing if the
 * stream is between frames or broken); returns the bytes that took. */
size_t	ws_track_to_boundary(struct ws_track *, const uint8_t *p, size_t n);
/* Between two frames, so a frame of ours may be put here. */
bool	ws_track_boundary(const struct ws_track *);

#define WS_CLOSE_MAX	(2 + 4 + 2 + 10)	/* header, mask, code, reason */

/*
 * A close frame with code and the reason "going away" if it is 1001:
 * masked with mask (4 bytes) as a client's must be, or unmasked when
 * mask is NULL (a server's).  Returns its length (<= WS_CLOSE_MAX).
 */
size_t	ws_close_frame(uint8_t *out, uint16_t code, const uint8_t *mask);

#endif
