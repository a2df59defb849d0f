/*
 * Client connections: the state machine that reads request heads and
 * bodies, writes responses and decides keep-alive.  Private to worker/;
 * the gateway sees requests through worker/http.h.
 */
#ifndef AGATE_CONN_H
#define AGATE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "lib/buf.h"
#include "worker/http.h"
#include "worker/timer.h"

struct listener;

/*
 * Legal moves (conn_set_state checks them):
 *   PROXY -> HEAD | CLOSED
 *   IDLE -> HEAD | CLOSED
 *   HEAD -> ACTIVE | H2 | CLOSED
 *   ACTIVE -> IDLE | HEAD | LINGER | TUNNEL | CLOSED
 *   LINGER -> CLOSED
 *   TUNNEL -> CLOSED
 *   H2 -> CLOSED
 */
enum conn_state {
	CS_NEW,		/* accepted; nothing read yet */
	CS_PROXY,	/* waiting for the PROXY protocol header */
	CS_IDLE,	/* keep-alive, nothing of a next request yet */
	CS_HEAD,	/* reading a request head */
	CS_ACTIVE,	/* a request is being served */
	CS_LINGER,	/* last response sent, write side shut; draining input */
	CS_TUNNEL,	/* joined to an upstream after a 101 (tunnel.c) */
	CS_H2,		/* speaks HTTP/2: a request per stream (h2.c) */
	CS_CLOSED
};

/* A TCP peer: what a connection needs of sockaddr_storage. */
union sockaddr_any {
	struct sockaddr		sa;
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;
};

/* Output beyond this pauses the producer; below LOW it resumes. */
#define OUT_HIGH	(256 * 1024)
#define OUT_LOW		(64 * 1024)

struct conn {
	int			 fd;
	enum conn_state		 state;
	struct event		 ev_read;	/* persistent, added once */
	struct event		*ev_write;	/* made on the first blocked write */
	struct tnode		 timer;
	bool			 reading;	/* ev_read is added */
	bool			 write_armed;
	bool			 dirty;		/* on the flush list */
	bool			 in_process;
	bool			 closing;
	bool			 nodelay;	/* TCP_NODELAY is set */
	bool			 tls_ready;	/* handshake done */
	bool			 tls_notified;	/* close_notify sent */
	bool			 tls_broken;	/* a TLS error: no close_notify */
	bool			 tls_read_wants_write;
	bool			 tls_write_wants_read;
	struct ssl_st		*ssl;		/* TLS listeners: OpenSSL's */
	const char		*close_why;
	/* Input: [0, head_len) head, [body_off, rlen) unread body bytes. */
	char			*rbuf;
	size_t			 rcap;		/* RBUF_SMALL or the full size */
	size_t			 rlen;
	size_t			 scan;		/* http_head_end progress */
	size_t			 head_len;
	size_t			 body_off;
	struct buf		 out;
	struct request		*req;
	struct tunnel		*tun;		/* CS_TUNNEL */
	struct h2conn		*h2;		/* CS_H2 */
	struct listener		*lst;
	union sockaddr_any	 peer;		/* 28 bytes, not 128 */
	char			 peer_str[48];
	unsigned		 nrequests;
	struct conn		*dirty_next;
	TAILQ_ENTRY(conn)	 link;		/* worker's list of all */
};

TAILQ_HEAD(conn_list, conn);
extern struct conn_list conns;

void	conn_accept(struct listener *, int fd, const struct sockaddr *,
	    socklen_t);
void	conn_init_worker(void);
/* read(2)/write(2) on the client socket, through TLS where it is on. */
ssize_t	conn_recv(struct conn *, void *, size_t);
ssize_t	conn_send(struct conn *, const void *, size_t);
/* Queues c for the flush pass after the current callbacks. */
void	conn_mark_dirty(struct conn *);
/* Waits for the socket to take more output; -1 if out of memory. */
int	conn_want_write(struct conn *);
/* Tears c down after the current callbacks (never on the spot). */
void	conn_fail(struct conn *, const char *why);
/* Drain: idle connections close after a grace, others at their end. */
void	conn_drain_all(void);
void	conn_close_all(const char *why);
/* Whether c may keep its connection after the current response. */
bool	conn_keepalive(const struct conn *);
void	conn_start_reading(struct conn *);
void	conn_stop_reading(struct conn *);
/*
 * The connection carries a tunnel from now on: the client's unread
 * bytes are appended to early, the request head is copied to *head (the
 * request points there; the caller frees it after the log line), and
 * the read buffer is given back.  0, or -1 (memory).
 */
int	conn_to_tunnel(struct conn *, struct buf *early, char **head);
/* The connection speaks HTTP/2 from now (h2.c). */
void	conn_to_h2(struct conn *);
/* drain_timeout: closes every connection but the tunnels saying bye. */
void	conn_close_all_but_tunnels(const char *why);

/*
 * Read buffers start small (most request heads are well under 1 KiB) and
 * grow to worker.rbuf_size (max_header_size + 4 KiB) when a head does not
 * fit or a body is coming: a burst of connections then pins 4 KiB each,
 * not 20.
 */
#define RBUF_SMALL	4096

/* request.c */
/* The head points into the read buffer: moved when the buffer grows. */
void	request_rebase(struct request *, const char *old, size_t len,
	    char *new_buf);
struct request *request_new(struct conn *);
/* The same for a request that its connection does not own alone (an
 * HTTP/2 stream's): c->req stays. */
struct request *request_new_on(struct conn *, const struct req_carrier *);
/* After the head is parsed: X-Request-Id and the client address. */
void	request_identify(struct request *);
void	request_free(struct request *);
void	request_log(struct request *);
/* Skips the rest of the body if it is all buffered already. */
bool	request_discard_body(struct request *);
/* The body bytes buffered on the connection (h1_carrier's read). */
ssize_t	h1_read_body(struct request *, char *dst, size_t n);

/* response.c: the HTTP/1.1 connection as a request's carrier. */
extern const struct req_carrier h1_carrier;

/* response.c: writes the output queue; 0 when empty, 1 blocked, -1 gone. */
int	conn_write_out(struct conn *);

#endif
