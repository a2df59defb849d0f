/*
 * Tunnels: a client connection joined byte for byte to an upstream
 * connection after a 101 Switching Protocols (WebSocket and other
 * Upgrades).  Private to worker/: the gateway starts one with
 * req_upgrade() (worker/http.h), and conn.c hands a tunnel's client-side
 * events here.
 */
#ifndef AGATE_TUNNEL_H
#define AGATE_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct buf;
struct conn;
struct request;
struct req_upgrade;
struct tnode;
struct tunnel;

/*
 * The client's side of a tunnel: its HTTP/1.1 connection (tunnel.c) or
 * an HTTP/2 stream after an extended CONNECT (RFC 8441, h2_stream.c).
 * The tunnel calls these; the side calls tunnel_client_readable() when
 * client bytes wait and tunnel_client_drained() when what it kept has
 * gone out.
 */
struct tunnel_side {
	/* As read(2): a count, 0 at the client's end, -1 with errno
	 * (EAGAIN: none now). */
	ssize_t	(*recv)(struct tunnel *, void *, size_t);
	/* As write(2): what the client takes now. */
	ssize_t	(*send)(struct tunnel *, const void *, size_t);
	/* Keeps what send() did not take, to go after it; 0 or -1. */
	int	(*queue)(struct tunnel *, const void *, size_t);
	/* Sends what is kept: 0 all out, 1 waiting, -1 gone. */
	int	(*flush)(struct tunnel *);
	size_t	(*queued)(const struct tunnel *);
	/* Whether client bytes are wanted now. */
	void	(*reading)(struct tunnel *, bool on);
	/* No more to the client once what is kept is out (a goodbye). */
	void	(*shut)(struct tunnel *);
	/* Closes the client's side (clean: a FIN or END_STREAM, else a
	 * reset); tunnel_close() follows when it is closed. */
	void	(*end)(struct tunnel *, bool clean, const char *why);
	bool	(*gone)(const struct tunnel *);
};

/*
 * A tunnel for request r from side's client (sarg: its connection or
 * stream) to the upstream u (fd and ssl are taken in every case).  NULL
 * when out of memory.  The side then answers its client and calls
 * tunnel_start() with what the upstream sent after its 101.
 */
struct tunnel *tunnel_new(const struct tunnel_side *, void *sarg,
	    struct request *, const struct req_upgrade *);
int	tunnel_start(struct tunnel *, const char *early, size_t early_len);
void	*tunnel_side_arg(const struct tunnel *);
/* Client bytes for the upstream that came before the tunnel did. */
struct buf *tunnel_to_up(struct tunnel *);
/* The timer lists' callback (worker.t_tunnel, worker.t_tunnel_bye). */
void	tunnel_fire(struct tnode *);

/* The h1 carrier's upgrade: answers 101 on c and joins it to u->fd. */
int	tunnel_open(struct conn *, const char *hdrs, size_t hdrs_len,
	    const struct req_upgrade *);
/* The client's socket is readable. */
void	tunnel_client_readable(struct tunnel *);
/* The client has taken all output queued for it. */
void	tunnel_client_drained(struct tunnel *);
/* The client's timer fired: idle both ways, or a goodbye took too long. */
void	tunnel_timeout(struct tunnel *);
/* The connection is closing: the upstream side closes, the outcome is
 * noted for the log line and metrics (before the request is logged). */
void	tunnel_close(struct tunnel *);
/* After the log line: frees what is left. */
void	tunnel_free(struct tunnel *);
/*
 * drain_timeout has passed: each tunnel says goodbye (a WebSocket close
 * frame 1001 both ways) and closes within TUNNEL_BYE_MS.  Returns how
 * many tunnels are saying goodbye.
 */
int	tunnel_bye_all(void);

#define TUNNEL_BYE_MS	2000

#endif
