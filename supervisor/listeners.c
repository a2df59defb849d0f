/*
 * Listening sockets.  Each configured address gets a group of
 * SO_REUSEPORT sockets, one per worker slot, so the kernel spreads new
 * connections evenly across workers (one shared socket let whichever
 * worker woke first take them: a 27/73 split was measured here).
 *
 * On Linux, closing a reuseport socket resets the connections queued on
 * it.  So the supervisor keeps every socket of an address open for as
 * long as the address is configured -- across crashes, reloads and
 * scaling -- and only adds sockets when a generation has more workers
 * than ever before.  Workers assign the sockets among themselves by slot
 * (worker.h), so every socket always has an acceptor.
 *
 * SO_REUSEPORT would also let another process of the same user bind an
 * address we listen on -- or let us join one it listens on -- and the
 * kernel would split the connections between two configs without a word.
 * So before binding an address that is new to this supervisor, a probe
 * socket with SO_REUSEADDR but without SO_REUSEPORT binds it: that fails
 * with EADDRINUSE if anyone listens there.  Addresses we already hold
 * (our own groups, sockets inherited from systemd or from the agate we
 * upgrade) are not probed, so adding sockets to them keeps working.
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
#include "worker/worker.h"

#define LISTEN_BACKLOG	4096	/* clamped by net.core.somaxconn */
#define MAX_ADDRESSES	64

struct lgroup {
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	struct listen_group	 g;
	bool			 fixed;	/* inherited, not SO_REUSEPORT: the
					   workers share it, none is added */
};

static struct lgroup	groups[MAX_ADDRESSES];
static size_t		ngroups;

static struct lgroup *
lgroup_find(const struct sockaddr_storage *sa, socklen_t len)
{
	size_t i;

	for (i = 0; i < ngroups; i++)
		if (groups[i].salen == len &&
		    memcmp(&groups[i].sa, sa, len) == 0)
			return &groups[i];
	return NULL;
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
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
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

/*
 * Whether this address overlaps one of ours (same port and family, one
 * of them the wildcard): the kernel counts that as a conflict too, but it
 * is our own listener, so the probe cannot tell anything there.
 */
static bool
lgroup_overlaps(const struct sockaddr_storage *sa)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)sa;
	size_t i;

	for (i = 0; i < ngroups; i++) {
		const struct sockaddr_storage *g = &groups[i].sa;
		const struct sockaddr_in *g4 = (const struct sockaddr_in *)g;
		const struct sockaddr_in6 *g6 = (const struct sockaddr_in6 *)g;

		if (g->ss_family != sa->ss_family)
			continue;
		if (sa->ss_family == AF_INET && g4->sin_port == a4->sin_port &&
		    (g4->sin_addr.s_addr == htonl(INADDR_ANY) ||
		    a4->sin_addr.s_addr == htonl(INADDR_ANY)))
			return true;
		if (sa->ss_family == AF_INET6 &&
		    g6->sin6_port == a6->sin6_port &&
		    (IN6_IS_ADDR_UNSPECIFIED(&g6->sin6_addr) ||
		    IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr)))
			return true;
	}
	return false;
}

/*
 * Fails if another process listens on l's address, SO_REUSEPORT or not
 * (see the top of this file).  Between this probe and the bind someone
 * could still start listening; closing that window would need the first
 * socket bound without SO_REUSEPORT, and then no second one could join.
 */
static int
lsock_probe(const struct listen_cfg *l, char *err, size_t errlen)
{
	int fd, one = 1, rc = 0;

	if (lgroup_overlaps(&l->sa))
		return 0;
	fd = socket(l->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "listen %s: socket: %s", l->address,
		    strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->sa, l->salen) == -1) {
		if (errno == EADDRINUSE)
			snprintf(err, errlen, "listen %s: address already in "
			    "use by another process", l->address);
		else
			snprintf(err, errlen, "listen %s: %s", l->address,
			    strerror(errno));
		rc = -1;
	}
	close(fd);
	return rc;
}

/* Remembers what a call added, to take it back if a later step fails. */
struct undo {
	struct lgroup	*grp;
	size_t		 from;		/* its nfds before */
};

static void
listeners_undo(struct undo *u, size_t n, size_t first_new_group)
{
	while (n-- > 0)
		while (u[n].grp->g.nfds > u[n].from)
			close(u[n].grp->g.fds[--u[n].grp->g.nfds]);
	ngroups = first_new_group;
}

int
listeners_acquire(const struct config *cfg, size_t nsockets,
    struct listen_group *out, char *err, size_t errlen)
{
	const struct server_sect *s = &cfg->server;
	struct undo undo[MAX_ADDRESSES];
	size_t i, nundo = 0, first_new = ngroups;
	struct lgroup *grp;
	int fd;

	if (nsockets > LISTEN_SOCKETS_MAX)
		nsockets = LISTEN_SOCKETS_MAX;
	for (i = 0; i < s->nlisten; i++) {
		const struct listen_cfg *l = &s->listen[i];

		out[i].nfds = 0;
		if ((grp = lgroup_find(&l->sa, l->salen)) == NULL) {
			if (ngroups == MAX_ADDRESSES) {
				snprintf(err, errlen, "too many listen "
				    "addresses");
				goto fail;
			}
			if (lsock_probe(l, err, errlen) == -1)
				goto fail;
			grp = &groups[ngroups++];
			memset(grp, 0, sizeof(*grp));	/* a reused slot too */
			grp->sa = l->sa;
			grp->salen = l->salen;
		}
		undo[nundo].grp = grp;
		undo[nundo++].from = grp->g.nfds;
		while (!grp->fixed && grp->g.nfds < nsockets) {
			if ((fd = lsock_bind(l, err, errlen)) == -1)
				goto fail;
			grp->g.fds[grp->g.nfds++] = fd;
		}
		out[i] = grp->g;
	}
	/* Only now: a later address that fails undoes the earlier ones. */
	for (i = 0; i < s->nlisten; i++) {
		const struct listen_cfg *l = &s->listen[i];

		grp = lgroup_find(&l->sa, l->salen);
		if (grp >= &groups[first_new])
			log_info("supervisor: listening on %s%s%s%s",
			    l->address, l->ntls ? " (TLS)" : "",
			    l->proxy_protocol ? " (PROXY protocol)" : "",
			    l->admin ? " (admin)" : "");
	}
	return 0;
fail:
	listeners_undo(undo, nundo, first_new);
	return -1;
}

static bool
lgroup_used(const struct lgroup *grp, const struct config *const *keep,
    size_t n)
{
	size_t i, j;

	for (i = 0; i < n; i++)
		for (j = 0; j < keep[i]->server.nlisten; j++) {
			const struct listen_cfg *l = &keep[i]->server.listen[j];

			if (l->salen == grp->salen &&
			    memcmp(&l->sa, &grp->sa, l->salen) == 0)
				return true;
		}
	return false;
}

void
listeners_release(const struct config *const *keep, size_t n)
{
	size_t i = 0;

	while (i < ngroups) {
		if (lgroup_used(&groups[i], keep, n)) {
			i++;
			continue;
		}
		while (groups[i].g.nfds > 0)
			close(groups[i].g.fds[--groups[i].g.nfds]);
		groups[i] = groups[--ngroups];
	}
}

void
listeners_close_except(const int *keep, size_t n)
{
	size_t i, j, k;

	for (i = 0; i < ngroups; i++)
		for (j = 0; j < groups[i].g.nfds; j++) {
			for (k = 0; k < n; k++)
				if (keep[k] == groups[i].g.fds[j])
					break;
			if (k == n)
				close(groups[i].g.fds[j]);
		}
}

/*
 * Takes over listening sockets opened by someone else: systemd (socket
 * activation) or the agate this one upgrades (USR2).  Each is grouped by
 * its address.  Returns how many were taken; the others are closed.
 */
int
listeners_adopt(const int *fds, size_t n, const char *from)
{
	struct sockaddr_storage sa;
	struct lgroup *grp;
	socklen_t salen, len;
	int i, taken = 0, yes, rp;

	for (i = 0; i < (int)n; i++) {
		int fd = fds[i];

		salen = sizeof(sa);
		len = sizeof(yes);
		if (getsockname(fd, (struct sockaddr *)&sa, &salen) == -1 ||
		    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &yes, &len) ==
		    -1 || !yes || (sa.ss_family != AF_INET &&
		    sa.ss_family != AF_INET6)) {
			log_warnx("supervisor: descriptor %d from %s is not a "
			    "listening TCP socket; closed", fd, from);
			close(fd);
			continue;
		}
		len = sizeof(rp);
		if (getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &rp, &len) == -1)
			rp = 0;
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		if ((grp = lgroup_find(&sa, salen)) == NULL) {
			if (ngroups == MAX_ADDRESSES) {
				close(fd);
				continue;
			}
			grp = &groups[ngroups++];
			memset(grp, 0, sizeof(*grp));
			memcpy(&grp->sa, &sa, salen);
			grp->salen = salen;
		}
		if (grp->g.nfds == LISTEN_SOCKETS_MAX) {
			close(fd);
			continue;
		}
		if (!rp)
			grp->fixed = true;
		grp->g.fds[grp->g.nfds++] = fd;
		taken++;
	}
	if (taken > 0)
		log_info("supervisor: took over %d listening socket%s from %s",
		    taken, log_plural(taken), from);
	return taken;
}

size_t
listeners_fds(int *out, size_t max)
{
	size_t i, j, n = 0;

	for (i = 0; i < ngroups; i++)
		for (j = 0; j < groups[i].g.nfds && n < max; j++)
			out[n++] = groups[i].g.fds[j];
	return n;
}

void
listeners_close_all(void)
{
	while (ngroups > 0) {
		struct lgroup *grp = &groups[--ngroups];

		while (grp->g.nfds > 0)
			close(grp->g.fds[--grp->g.nfds]);
	}
}
