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

struct conn;
struct request;
struct req_upgrade;
struct tunnel;

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
