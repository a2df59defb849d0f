/*
 * Listening sockets.  The supervisor binds them and keeps them for its
 * whole life, across worker crashes and reloads: a reload reuses every
 * socket whose address is still configured (so no queued connection is
 * ever reset), binds what is new, and closes what no generation uses.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "supervisor/supervisor.h"

#define LISTEN_BACKLOG	4096	/* clamped by net.core.somaxconn */
#define MAX_SOCKETS	64

struct lsock {
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	int			 fd;
};

static struct lsock	socks[MAX_SOCKETS];
static size_t		nsocks;

static int
lsock_find(const struct sockaddr_storage *sa, socklen_t len)
{
	size_t i;

	for (i = 0; i < nsocks; i++)
		if (socks[i].salen == len && memcmp(&socks[i].sa, sa, len) == 0)
			return (int)i;
	return -1;
}

static int
lsock_bind(const struct listen_cfg *l, char *err, size_t errlen)
{
	int fd, one = 1;

	fd = socket(l->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1) {
		snprintf(err, errlen, "listen %s: socket: %s", l->address,
		    strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->sa, l->salen) == -1 ||
	    listen(fd, LISTEN_BACKLOG) == -1) {
		snprintf(err, errlen, "listen %s: %s", l->address,
		    strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int
listeners_acquire(const struct config *cfg, int *fds, char *err,
    size_t errlen)
{
	const struct server_sect *s = &cfg->server;
	size_t i, first_new = nsocks;
	int idx;

	for (i = 0; i < s->nlisten; i++) {
		const struct listen_cfg *l = &s->listen[i];

		if (l->tls_cert != NULL) {
			/* Never serve plain HTTP where TLS was asked for. */
			log_errorx("supervisor: listen %s: TLS termination is "
			    "not available in this build; not opening it",
			    l->address);
			fds[i] = -1;
			continue;
		}
		if ((idx = lsock_find(&l->sa, l->salen)) >= 0) {
			fds[i] = socks[idx].fd;
			continue;
		}
		if (nsocks == MAX_SOCKETS) {
			snprintf(err, errlen, "too many listening sockets");
			goto fail;
		}
		if ((fds[i] = lsock_bind(l, err, errlen)) == -1)
			goto fail;
		socks[nsocks].sa = l->sa;
		socks[nsocks].salen = l->salen;
		socks[nsocks].fd = fds[i];
		nsocks++;
		log_info("supervisor: listening on %s%s", l->address,
		    l->proxy_protocol ? " (PROXY protocol)" : "");
	}
	return 0;
fail:
	while (nsocks > first_new)
		close(socks[--nsocks].fd);
	return -1;
}

static bool
lsock_used(const struct lsock *ls, const struct config *const *keep,
    size_t n)
{
	size_t i, j;

	for (i = 0; i < n; i++)
		for (j = 0; j < keep[i]->server.nlisten; j++) {
			const struct listen_cfg *l = &keep[i]->server.listen[j];

			if (l->salen == ls->salen &&
			    memcmp(&l->sa, &ls->sa, l->salen) == 0)
				return true;
		}
	return false;
}

void
listeners_release(const struct config *const *keep, size_t n)
{
	size_t i = 0;

	while (i < nsocks) {
		if (lsock_used(&socks[i], keep, n)) {
			i++;
			continue;
		}
		close(socks[i].fd);
		socks[i] = socks[--nsocks];
	}
}

void
listeners_close_except(const int *fds, size_t n)
{
	size_t i, j;

	for (i = 0; i < nsocks; i++) {
		for (j = 0; j < n; j++)
			if (fds[j] == socks[i].fd)
				break;
		if (j == n)
			close(socks[i].fd);
	}
}

void
listeners_close_all(void)
{
	while (nsocks > 0)
		close(socks[--nsocks].fd);
}
