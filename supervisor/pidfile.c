/*
 * The pid file: written atomically (temp file + rename) once the
 * listeners are bound, removed at exit if it still names us, read by
 * `agate -s`.  A pid file that names a running process belongs to
 * someone else (another agate on the same config, most likely): taking
 * it over would leave that one unreachable by `agate -s`, so start-up
 * and reload refuse (pidfile_check).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

int
pidfile_check(const char *path, char *err, size_t errlen)
{
	char why[256];
	pid_t pid;

	/* Missing, empty or garbage: nobody to disturb, it is rewritten. */
	if ((pid = pidfile_read(path, why, sizeof(why))) == -1)
		return 0;
	/* Our own pid: a container restarted with the same pid (1). */
	if (pid == getpid())
		return 0;
	if (kill(pid, 0) == -1 && errno == ESRCH)
		return 0;		/* stale: its agate is gone */
	snprintf(err, errlen, "pid file %s names pid %ld, which is running "
	    "(another agate on this config?); stop it, or remove the file "
	    "if that process is not agate", path, (long)pid);
	return -1;
}

void
pidfile_remove(const char *path)
{
	char err[16];

	if (pidfile_read(path, err, sizeof(err)) == getpid())
		unlink(path);
}
