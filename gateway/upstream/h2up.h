/*
 * agate's own HTTP/2 client, for h2c:// servers (RFC 9113 with prior
 * knowledge): the transport gRPC calls take.  Private to upstream/.
 *
 * Two halves meet here.  h2upconn.c owns the connections: one TCP
 * connection and one nghttp2 client session each, kept per server while
 * they have streams to carry (several calls share one, up to the
 * server's SETTINGS_MAX_CONCURRENT_STREAMS) and for keepalive_timeout
 * after, with their reads, writes and GOAWAY.  h2up.c is a call's try
 * as one stream on one of them: the request it sends, the answer it
 * hands to the call's sink, and its end.
 *
 * The session's callbacks are h2up.c's (they are all about streams);
 * each finds its try as the stream's user data, which is NULL once the
 * try has let go.  A try never writes to the socket itself: it asks its
 * connection to flush, which happens once the loop's current callbacks
 * are done, so that the session is never re-entered and the requests
 * of one pass leave together.
 */
#ifndef AGATE_H2UP_H
#define AGATE_H2UP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event_struct.h>
#include <nghttp2/nghttp2.h>

#include "gateway/upstream/retry.h"
#include "gateway/upstream/upstream.h"
#include "lib/buf.h"

struct h2up;

/* A connection's life. */
enum h2upconn_state {
	HC_CONNECTING,		/* connect() under way; frames wait in out */
	HC_SETTLING,		/* connected; tries wait for the server's
				 * SETTINGS (how many streams it takes) */
	HC_OPEN,		/* takes new streams */
	HC_CLOSING,		/* GOAWAY (either way) or draining: finishes
				 * its streams, then closes */
	HC_DEAD			/* closed; freed once out of callbacks */
};

struct h2upconn {
	enum h2upconn_state	 state;
	struct upconn		*uc;
	nghttp2_session		*s;
	struct upstream_rt	*up;
	struct server_rt	*srv;
	int			 nstreams;	/* open in the session */
	bool			 used;		/* a stream has ended on it */
	bool			 kicked;	/* a flush is due */
	uint32_t		 broken;	/* our GOAWAY's error code */
	int			 busy;		/* inside its callbacks */
	struct buf		 out;		/* frames the socket has not
						 * taken; out[wpos..len) */
	size_t			 wpos;
	struct event		 kick;		/* flush once the pass ends */
	struct event		 timer;		/* connect, then idle */
	TAILQ_HEAD(, h2up)	 tries;		/* attached to a stream */
	TAILQ_ENTRY(h2upconn)	 link;		/* its server's */
};

/*
 * A connection to srv other than avoid that can take one more stream:
 * one that is up or coming up and has room, or a new one (whose tries
 * are sent once the server's SETTINGS come, or fail within the
 * upstream's connect_timeout).  NULL with errno set when no socket can be made.
 */
struct h2upconn *h2upconn_get(struct upstream_rt *, struct server_rt *,
	    struct h2upconn *avoid);
/* How many streams hc may carry at once. */
int	h2upconn_room(struct h2upconn *);
/* The server's SETTINGS came: true if that opens hc (the waiting tries
 * are to be sent now). */
bool	h2upconn_settled(struct h2upconn *);
/* A stream was submitted on hc (one more to carry), and one closed. */
void	h2upconn_opened(struct h2upconn *);
void	h2upconn_closed(struct h2upconn *);
/* Frames are waiting: write them out once this pass of the loop ends. */
void	h2upconn_kick(struct h2upconn *);
/* The session found the server breaking HTTP/2 (our GOAWAY's code):
 * hc's tries fail as invalid answers, never sent again. */
void	h2upconn_broken(struct h2upconn *, uint32_t code);
/* The server sent GOAWAY: no new streams on hc. */
void	h2upconn_goaway(struct h2upconn *);
/* Every connection of srv, or of every server, closed now (their tries
 * fail); for a worker that stops. */
void	h2upconn_close_server(struct server_rt *);
/* srv's address left the DNS answer: no new streams on its connections;
 * idle ones close now, busy ones when their streams end. */
void	h2upconn_drain_server(struct server_rt *);

/* h2up.c: the session's callbacks, and what a try hears of its
 * connection. */
void	h2up_callbacks(nghttp2_session_callbacks *);
/* The try's connection closed before its stream ended, for the reason
 * a failed try would give (call.h); the try fails, or is sent again. */
void	h2up_conn_lost(struct h2up *, enum try_fail, int status,
	    const char *msg, const char *detail);

#endif
