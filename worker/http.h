/*
 * One client request, as the gateway sees it, and the calls that answer
 * it.  The worker's connection layer owns every struct request: it makes
 * one when a head has been parsed, hands it to gateway_handle(), and frees
 * it once the response has been written (or the client has gone).
 *
 * Rules for the gateway:
 * - Answer exactly once: req_error()/req_respond(), or req_start_response()
 *   then req_write_body()* then req_end_response() (or req_fail() if the
 *   response cannot be completed).  After the last of these the request is
 *   no longer yours: set req->hooks to NULL first.
 * - None of these calls closes or frees anything on the spot; a failed
 *   connection is torn down after the current event callback returns, and
 *   hooks->abort() is how the gateway learns of it.
 * - While the gateway owns a request it sets hooks; abort() must release
 *   everything it holds for the request, synchronously.
 *
 * A request is not its connection: what carries it (an HTTP/1.1
 * connection now, an HTTP/2 stream later) is reached through its
 * struct req_carrier, and nothing above worker/ knows which.
 */
#ifndef AGATE_HTTP_H
#define AGATE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "lib/buf.h"
#include "worker/http_parse.h"

struct conn;
struct request;
struct req_upgrade;
struct route_cfg;
struct ssl_st;

/*
 * A body filter (gzip): sees the response the gateway produces before it
 * is framed, and sends its own version through the req_raw_*() calls.
 * Installed by the gateway before the response starts; it may remove
 * itself (r->filter = NULL) in start() and let the response pass.  Once
 * the producer has ended, the filter owns the request until it calls
 * req_raw_end_response(): it sets hooks of its own for that time.
 */
struct req_filter {
	int	(*start)(struct request *, int status, const char *reason,
		    size_t reason_len, const char *hdrs, size_t hdrs_len,
		    int64_t content_length);
	int	(*write)(struct request *, const char *data, size_t len);
	void	(*end)(struct request *);
	/* True while the producer should pause. */
	bool	(*full)(struct request *);
	/* The request is being freed: let go of everything. */
	void	(*release)(struct request *);
};

/*
 * What carries one request on the wire: the HTTP/1.1 connection
 * (h1_carrier, worker/response.c) or, later, one HTTP/2 stream.  The
 * req_*() calls below keep the state every carrier shares (resp_*,
 * body_*, the kept body, the filter) and ask the carrier for the rest.
 */
struct req_carrier {
	/* The head, framed for the wire (hdrs: end-to-end lines). */
	int	(*start)(struct request *, int status, const char *reason,
		    size_t reason_len, const char *hdrs, size_t hdrs_len,
		    int64_t content_length);
	int	(*write)(struct request *, const char *data, size_t len);
	/* Zero copy: room at the end of the output, then what was put. */
	char	*(*space)(struct request *, size_t want, size_t *got);
	void	(*commit)(struct request *, size_t n);
	void	(*end)(struct request *);
	/* The response cannot be finished: cut it (close, or reset). */
	void	(*fail)(struct request *, const char *why);
	/* Output above its high-water mark. */
	bool	(*full)(const struct request *);
	/* "100 Continue", or what stands for it. */
	void	(*cont)(struct request *);
	/* Body bytes as they arrive: as req_read_body(), without the kept
	 * copy. */
	ssize_t	(*read)(struct request *, char *dst, size_t n);
	/* Skips the rest of the body if it is all here; false if not. */
	bool	(*discard)(struct request *);
	/* Answers 101 and joins the client to an upstream (req_upgrade()). */
	int	(*upgrade)(struct request *, const char *hdrs, size_t hdrs_len,
		    const struct req_upgrade *);
	/* Trailer fields ("Name: value\r\n"...) to send after the body,
	 * before end(); NULL: the carrier drops them (HTTP/1.1). */
	int	(*trailers)(struct request *, const char *fields, size_t len);
	/* For the access log: "HTTP/1.1". */
	const char *protocol;
};

struct req_hooks {
	/* More request body can be read (or its end has come). */
	void	(*body_ready)(struct request *);
	/* Output has drained: a producer that paused may go on. */
	void	(*writable)(struct request *);
	/* The client is gone or timed out: stop and let go of req now. */
	void	(*abort)(struct request *);
};

#define REQ_MAX_PARAMS	8
#define REQ_ID_MAX	64

/*
 * A request's W3C trace context (gateway/trace/ fills it; the access log
 * prints its trace id).  on is false when tracing is off.
 */
struct req_trace {
	uint8_t		 trace_id[16];
	uint8_t		 span_id[8];	/* agate's span for the request */
	uint8_t		 parent_id[8];	/* the client's span; zero: none */
	uint8_t		 flags;		/* bit 0: sampled */
	bool		 on;
	bool		 record;	/* sampled, and spans are exported */
	const char	*state;		/* tracestate to pass on, or NULL */
	size_t		 state_len;
	uint64_t	 start_ns;	/* CLOCK_REALTIME */
};

struct route_param {
	const char	*name;
	const char	*value;
	size_t		 len;
};

struct request {
	const struct req_carrier *carrier;
	void			*carrier_arg;	/* the carrier's (an h2 stream) */
	/* The connection it came on (peer, TLS, listener); for HTTP/1.1
	 * also its carrier. */
	struct conn		*conn;
	struct http_head	 head;

	/* Request body: what the gateway has read of it so far. */
	int64_t			 body_left;	/* Content-Length bytes to go */
	bool			 body_chunked;
	bool			 body_done;	/* all of it handed over */
	uint64_t		 body_bytes;
	struct http_chunked	 chunk;
	/* A copy of the body as read, so that it can be sent again (a
	 * retry); see req_body_keep(). */
	struct buf		*keep;
	size_t			 keep_pos;	/* next byte to hand over */
	size_t			 keep_max;
	bool			 keep_lost;	/* outgrew keep_max */

	/* Response. */
	int			 status;
	bool			 resp_started;
	bool			 resp_done;
	bool			 resp_chunked;
	bool			 resp_nobody;
	bool			 resp_close;	/* close after it */
	bool			 resp_paused;	/* producer waits for writable */
	bool			 rejected;	/* refused before it was parsed */
	uint64_t		 resp_bytes;	/* body bytes sent */

	/* Gateway state. */
	const struct route_cfg	*route;
	void			*gw;
	const struct req_hooks	*hooks;
	const struct req_filter	*filter;
	void			*filter_state;
	uint8_t			 gw_stage;	/* next stage (gateway/stage.c) */
	/* Header lines every answer to this request gets (CORS, rate
	 * limits): resp_extra[0..resp_extra_len), at the end of the struct
	 * so that request_new() clears only the length. */
	size_t			 resp_extra_len;
	/* Header fields agate adds to the upstream request (verified JWT
	 * claims): entries of u16 name length, name, u16 value length,
	 * value.  NULL: none. */
	struct buf		*up_extra;
	struct route_param	 params[REQ_MAX_PARAMS];
	size_t			 nparams;
	const char		*upstream;	/* server URL of the last try */
	int			 tries;
	const char		*cache;		/* X-Cache, for the log */
	struct req_trace	 trace;

	/* A tunnel after a 101 (worker/tunnel.c), for the log line. */
	bool			 tunnel;
	char			 tunnel_protocol[16];	/* "websocket" */
	const char		*tunnel_close;	/* why it closed */
	uint64_t		 tunnel_bytes_in;	/* from the client */

	/* Identity, for headers and the access log. */
	char			 id[REQ_ID_MAX + 1];
	size_t			 id_len;
	char			 client[48];	/* after PROXY / trusted XFF */
	struct timespec		 start;
	struct request		*next_free;
	char			 resp_extra[320];	/* not cleared */
};

/* -- answering --------------------------------------------------------- */

/*
 * agate's own error: {"error": msg, "status": N, "request_id": id}.
 * extra: more header lines ("Name: value\r\n"...) or NULL.
 */
void	req_error(struct request *, int status, const char *msg,
	    const char *extra);
/* A whole small response at once. */
void	req_respond(struct request *, int status, const char *content_type,
	    const char *body, size_t len, const char *extra);
/*
 * Starts a response: hdrs holds end-to-end header lines, each ending in
 * CRLF (no framing or Connection headers: those are added here).
 * content_length is -1 when unknown (chunked, or close-delimited for an
 * HTTP/1.0 client).  Returns 0, or -1 if the client is gone.
 */
int	req_start_response(struct request *, int status, const char *reason,
	    size_t reason_len, const char *hdrs, size_t hdrs_len,
	    int64_t content_length);
/* Queues body bytes.  Returns 0, or -1 if the client is gone. */
int	req_write_body(struct request *, const char *data, size_t len);
/* The same from iov[0..n): on a plain HTTP/1.1 connection with room,
 * large pieces leave at once in one writev(2) with what is queued,
 * copied nowhere; the rest is queued.  The caller may reuse the memory
 * when it returns. */
struct iovec;
int	req_write_body_iov(struct request *, const struct iovec *, int n);
/*
 * Zero-copy body: room for up to want bytes at the end of the output
 * queue, for a producer to read() into; then req_body_commit() what it
 * put there.  NULL when the body is framed chunked (bytes cannot go out
 * as they are) or the client is gone.
 */
char	*req_body_space(struct request *, size_t want, size_t *got);
void	req_body_commit(struct request *, size_t n);
void	req_end_response(struct request *);
/* The same, below any body filter (for the filter itself). */
int	req_raw_start_response(struct request *, int status,
	    const char *reason, size_t reason_len, const char *hdrs,
	    size_t hdrs_len, int64_t content_length);
int	req_raw_write_body(struct request *, const char *data, size_t len);
void	req_raw_end_response(struct request *);
/* The response cannot be finished: close the connection. */
void	req_fail(struct request *, const char *why);
/* Output is above its high-water mark: stop producing until writable(). */
bool	req_output_full(struct request *);
/* The request body will not be read: a response made now says
 * "Connection: close" unless the rest of the body is here to skip. */
void	req_body_unwanted(struct request *);
/* Sends "100 Continue" if the client asked for it and it is not sent. */
void	req_continue(struct request *);
/* Trailer fields for the answer, before req_end_response(): passed on
 * where the client's protocol carries them (HTTP/2; gRPC needs them),
 * dropped elsewhere.  0, or -1 if the client is gone. */
int	req_trailers(struct request *, const char *fields, size_t len);
/* Whether the request is gRPC (content-type application/grpc...): its
 * errors are answered the gRPC way (req_error()). */
bool	req_grpc(const struct request *);

/* -- upgrading --------------------------------------------------------- */

/* An upstream connection that answered 101 Switching Protocols. */
struct req_upgrade {
	int		 fd;		/* its socket, non-blocking */
	struct ssl_st	*ssl;		/* TLS on it (https), or NULL */
	const char	*early;		/* bytes it sent after the 101 head */
	size_t		 early_len;
	const char	*protocol;	/* the Upgrade token ("websocket") */
	size_t		 protocol_len;
	bool		 websocket;	/* RFC 6455: close frames at the end */
};

/*
 * Answers 101 with hdrs (end-to-end lines, the Upgrade field among them;
 * Connection is added) and joins the client to u->fd byte for byte until
 * either side closes, the tunnel is idle both ways for tunnel_timeout, or
 * a drain runs out.  From here the request is the tunnel's (set hooks to
 * NULL first): it is logged when the tunnel closes.  u->fd (and u->ssl)
 * are taken in every case.  0, or -1 if the client is gone.
 */
int	req_upgrade(struct request *, const char *hdrs, size_t hdrs_len,
	    const struct req_upgrade *);

/* -- reading ----------------------------------------------------------- */

/*
 * Copies up to n body bytes into dst.  Returns the count, 0 at the end of
 * the body, REQ_BODY_AGAIN when none is buffered now (body_ready() will
 * follow), or REQ_BODY_ERROR (bad chunking or too large: the request has
 * been answered or failed; the caller must stop).
 */
#define REQ_BODY_AGAIN	(-1)
#define REQ_BODY_ERROR	(-2)
ssize_t	req_read_body(struct request *, char *dst, size_t n);
/* True when the request carries a body (even an empty chunked one). */
bool	req_has_body(const struct request *);
/*
 * From now on, keep a copy of the body bytes req_read_body() hands over,
 * up to max bytes, so that req_body_rewind() can hand them over again.
 * Returns 0, or -1 when out of memory.
 */
int	req_body_keep(struct request *, size_t max);
/*
 * Makes the next req_read_body() start again from the first body byte.
 * False when that cannot be done: bytes were handed over that were not
 * kept (the body outgrew its copy, or nobody asked to keep it).
 */
bool	req_body_rewind(struct request *);
/* Whether req_body_rewind() would succeed now (changes nothing). */
bool	req_body_replayable(const struct request *);
/*
 * Reads on until the whole body is in the kept copy (req_body_keep()
 * first), for a check over the whole body: REQ_BODY_WHOLE when it is,
 * REQ_BODY_AGAIN while more is to come (body_ready() follows),
 * REQ_BODY_ERROR when the request has been answered (framing,
 * max_body_size), REQ_BODY_TOO_BIG when it outgrew the copy (not
 * answered: the caller says why).
 */
#define REQ_BODY_WHOLE		0
#define REQ_BODY_TOO_BIG	(-3)
int	req_read_whole(struct request *);

/* -- looking ----------------------------------------------------------- */

const struct http_header *req_header(const struct request *, const char *);
/* The socket peer (the load balancer, or the client itself). */
const char *req_peer(const struct request *);
/* Whether the peer is in trusted_proxies (its X-Forwarded-For counts). */
bool req_peer_trusted(const struct request *);
bool	req_tls(const struct request *);
/* Adds a header field to the upstream request (0, or -1 out of memory). */
int	req_upstream_header(struct request *, const char *name,
	    const char *value);
/* Whether it came in on the admin listener. */
bool	req_admin(const struct request *);
/* Milliseconds since the head was parsed. */
uint64_t req_elapsed_ms(const struct request *);

#endif
