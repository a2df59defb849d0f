/*
 * The pid file: written atomically (temp file + rename) once the
 * listeners are bound, removed at exit if it still names us, read by
 * `agate -s`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "supervisor/supervisor.h"

int
pidfile_write(const char *path)
{
	char tmp[4096], line[32];
	int fd, n;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644))
	    == -1)
		return -1;
	n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	if (write(fd, line, (size_t)n) != n || close(fd) == -1) {
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) == -1) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

pid_t
pidfile_read(const char *path, char *err, size_t errlen)
{
	char line[32], *end;
	ssize_t n;
	long pid;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "cannot open pid file %s: %s", path,
		    strerror(errno));
		return -1;
	}
	n = read(fd, line, sizeof(line) - 1);
	close(fd);
	if (n <= 0) {
		snprintf(err, errlen, "pid file %s is empty", path);
		return -1;
	}
	line[n] = '\0';
	pid = strtol(line, &end, 10);
	if (pid <= 1 || (*end != '\n' && *end != '\0')) {
		snprintf(err, errlen, "pid file %s holds no pid", path);
		return -1;
	}
	return (pid_t)pid;
}

void
pidfile_remove(const char *path)
{
	char err[16];

	if (pidfile_read(path, err, sizeof(err)) == getpid())
		unlink(path);
}
