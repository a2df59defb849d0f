/*
 * HTTP/2 client connections (RFC 9113) with libnghttp2: a connection
 * that negotiated h2 by ALPN, or sent the h2c preface on a plain
 * listener, carries one request per stream.  Each stream's request goes
 * to the gateway like an HTTP/1.1 one; its carrier is h2_carrier.
 * Private to worker/: conn.c hands the connection's events here.
 */
#ifndef AGATE_H2_H
#define AGATE_H2_H

#include <stdbool.h>
#include <stddef.h>

struct conn;

/* The client connection preface (RFC 9113 section 3.4). */
#define H2_PREFACE	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN	24

/* 1: p[0..n) is the whole preface (and maybe more); 0: a prefix of it,
 * wait for more; -1: not HTTP/2. */
int	h2_preface(const char *p, size_t n);
/* The connection speaks HTTP/2 from now on; early holds bytes already
 * read (the preface first, for h2c).  0, or -1 (out of memory). */
int	h2_start(struct conn *, const char *early, size_t n);
/* The socket is readable. */
void	h2_readable(struct conn *);
/* Output may go on (the flush pass, the socket writable). */
void	h2_flush(struct conn *);
/* The connection's timer fired. */
void	h2_timeout(struct conn *);
/* Reload or stop: GOAWAY; in-flight streams finish, then it closes. */
void	h2_drain(struct conn *);
/* Whether some stream of c is a WebSocket tunnel (a drain's goodbye). */
bool	h2_has_tunnels(const struct conn *);
/* The connection is closing: every stream's request ends now. */
void	h2_close(struct conn *);

#endif
