/*
 * systemd's readiness protocol (sd_notify(3)), written out rather than
 * linked from libsystemd: one datagram of "KEY=value" lines to the unix
 * socket named by $NOTIFY_SOCKET (a leading '@' means the abstract
 * namespace).  Without $NOTIFY_SOCKET every call does nothing, so agate
 * runs the same under systemd, another supervisor, or a terminal.
 *
 * Socket activation (sd_listen_fds(3)) is here too: $LISTEN_PID naming
 * this process and $LISTEN_FDS counting descriptors from 3.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/log.h"
#include "supervisor/supervisor.h"

#define SD_LISTEN_FDS_START	3

int
sd_notifyf(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	socklen_t salen;
	char msg[512];
	va_list ap;
	ssize_t n;
	int fd;

	if (path == NULL || path[0] == '\0')
		return 0;
	if ((path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sa.sun_path))
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	    strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL,
	    (struct sockaddr *)&sa, salen);
	if (n == -1)
		log_warn("supervisor: notify %s", path);
	close(fd);
	return n == -1 ? -1 : 1;
}

int
sd_listen_fds_take(int *fds, int max)
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	char *end;
	long p, n;
	int i;

	if (pid == NULL || nfds == NULL)
		return 0;
	p = strtol(pid, &end, 10);
	if (*end != '\0' || p != (long)getpid())
		return 0;		/* meant for another process */
	n = strtol(nfds, &end, 10);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (*end != '\0' || n < 0)
		return 0;
	if (n > max)
		n = max;
	for (i = 0; i < n; i++)
		fds[i] = SD_LISTEN_FDS_START + i;
	return (int)n;
}
