/*
 * The streams of an HTTP/2 client connection, shared by h2.c (the
 * connection and libnghttp2's session) and h2_stream.c (a stream's
 * request: its head, its body, and h2_carrier, its answer).  Private to
 * those two files.
 */
#ifndef AGATE_H2_STREAM_H
#define AGATE_H2_STREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

#include "lib/buf.h"
#include "worker/http.h"

#define H2_OUT_HIGH	(128 * 1024)	/* a stream's unsent answer */
#define H2_OUT_LOW	(32 * 1024)
#define H2_READ_SIZE	(64 * 1024)
#define H2_CONN_WINDOW	(16 * 1024 * 1024)

struct h2stream;

struct h2conn {
	struct conn		*c;
	nghttp2_session		*s;
	TAILQ_HEAD(, h2stream)	 streams;
	int			 nstreams;
	int			 heading;	/* of them, headers not whole yet */
	int			 ntunnels;	/* of them, WebSocket tunnels */
	unsigned		 resets;	/* RST_STREAMs this second */
	time_t			 reset_sec;
	bool			 goaway;	/* draining: no new streams */
	bool			 refused;	/* a stream was refused: send the
					 * RST_STREAM before the next frame */
	/* Where the input stands (h2_frame_cut): the preface, then frames
	 * of a 9-byte header and its payload. */
	size_t			 preface_left;
	uint8_t			 fhdr[9];
	size_t			 fhlen;
	size_t			 fleft;
};

struct h2stream {
	struct h2conn		*h;
	int32_t			 id;
	struct request		*r;		/* once the headers are in */
	struct buf		 hdrs;		/* u16 len, name, u16 len, value */
	struct buf		 cookie;	/* Cookie fields joined */
	size_t			 hsize;		/* decoded size (RFC 9113 6.5.2) */
	size_t			 nfields;
	bool			 too_big;	/* over max_header_list_size */
	bool			 headed;	/* its headers were whole */
	struct buf		 in;		/* body bytes not yet read */
	bool			 in_eof;	/* END_STREAM received */
	struct buf		 out;		/* answer bytes not yet framed */
	bool			 out_eof;
	bool			 deferred;	/* the data source waits */
	bool			 answered;	/* HEADERS submitted */
	bool			 wake;		/* tell writable() after a send */
	struct buf		 trailers;	/* "Name: value\r\n" lines */
	/* An extended CONNECT (RFC 8441): a WebSocket over this stream. */
	bool			 xconnect;
	struct tunnel		*tun;		/* after the upstream's 101 */
	bool			 tun_reading;	/* the tunnel wants client bytes */
	bool			 tun_pull;	/* ... and some (or the end) came */
	bool			 tun_blocked;	/* `out` is over its high mark */
	bool			 tun_ended;
	TAILQ_ENTRY(h2stream)	 link;
};

extern const struct req_carrier h2_carrier;

/* Frames are waiting: the flush pass sends them. */
void	h2_kick(struct h2conn *);
/* Keeps one header field of st's block; 0, or -1 (memory). */
int	h2_field(struct h2stream *, const uint8_t *name, size_t nlen,
	    const uint8_t *value, size_t vlen);
/* The headers of st are complete: its request goes to the gateway (or
 * is answered here: 400, 405, 413, 431). */
void	h2_request(struct h2stream *, bool end_stream);
/* Body bytes (or their end) for the gateway. */
void	h2_body_ready(struct h2stream *);
/* Tunnels of the connection whose client bytes or room came. */
void	h2_tunnels_run(struct h2conn *);
/* The stream is closed: its request is logged (aborted first if the
 * gateway still has it) and everything freed. */
void	h2_stream_free(struct h2stream *);

#endif
