/*
 * The PROXY protocol (HAProxy's, versions 1 and 2) that a load balancer
 * puts before the first byte of a connection to say who the client is.
 * Pure functions: no I/O.
 */
#ifndef AGATE_PROXY_PROTO_H
#define AGATE_PROXY_PROTO_H

#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1_MAX	107
#define PROXY_V2_MAX	(16 + 1024)

/*
 * Parses a header at the start of buf.  Returns 1 and sets *used (the
 * source address replaces *peer unless the header is LOCAL/UNKNOWN), 0 if
 * more bytes are needed, -1 if buf does not start with a valid header.
 */
int	proxy_proto_parse(const char *buf, size_t len,
	    struct sockaddr_storage *peer, size_t *used);
/* The address as text, IPv4-mapped IPv6 shown as IPv4. */
void	proxy_proto_format(const struct sockaddr *, char *out, size_t len);

#endif
