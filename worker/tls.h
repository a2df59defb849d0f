/*
 * TLS termination for listeners with `tls:` (see tls.c).
 */
#ifndef AGATE_TLS_H
#define AGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

struct listen_cfg;

/* Results of tls_handshake/tls_read/tls_write (reads/writes: or > 0). */
#define TLS_DONE	1	/* handshake complete */
#define TLS_CLOSED	0	/* the peer sent close_notify */
#define TLS_AGAIN	(-1)	/* retry when *want says */
#define TLS_FAILED	(-2)	/* broken: close the connection */

#define TLS_WANT_READ	1
#define TLS_WANT_WRITE	2

/* Makes l's contexts from its certificates (at config load).  -1 with a
 * reason in err when a file does not load. */
int	tls_listener_load(struct listen_cfg *, char *err, size_t errlen);
void	tls_listener_free(struct listen_cfg *);
/* A server-side SSL on an accepted socket, or NULL. */
SSL	*tls_new(const struct listen_cfg *, int fd);
int	tls_handshake(SSL *, int *want);
ssize_t	tls_read(SSL *, void *, size_t, int *want);
ssize_t	tls_write(SSL *, const void *, size_t, int *want);
/* Whether the handshake chose h2 by ALPN. */
bool	tls_alpn_h2(SSL *);
/* Decrypted bytes (or records) wait inside OpenSSL: epoll will not say. */
bool	tls_pending(SSL *);
/*
 * The same for a socket whose first bytes were read already (a PROXY
 * protocol header came first): OpenSSL reads p[0..n) before the socket.
 */
SSL	*tls_new_prefixed(const struct listen_cfg *, int fd, const void *p,
	    size_t n);
/* Once those bytes are used up, OpenSSL reads the socket: true if that
 * switch happened now (retry the call that wanted to read). */
bool	tls_prefix_done(SSL *, int fd);
/* Sends close_notify (a clean end), once. */
void	tls_notify(SSL *);
/* Frees ssl; notify: send close_notify first (a clean close). */
void	tls_close(SSL *, bool notify);

#endif
