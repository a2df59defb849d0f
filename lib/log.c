/*
 * Error log: one line per message, written with a single write(2) so lines
 * from several processes sharing the file or pipe never interleave (a line
 * is cut to fit PIPE_BUF).  The destination is opened by whoever calls
 * log_open(); workers inherit it and reopen it themselves on USR1.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"

enum log_level log_level = LOG_LVL_INFO;

static char	 log_role[32] = "agate";
static char	*log_path;		/* NULL: stderr */
static int	 log_dest = STDERR_FILENO;
static bool	 log_nb;		/* log_set_nonblocking() was called */
static bool	 log_sock;		/* log_dest is a socket */
static unsigned long log_dropped;	/* lines a stalled reader cost us */

static const char *const log_names[] = { "error", "warn", "info", "debug" };

int
log_nonblocking_fd(int fd, bool *is_socket)
{
	char path[32];
	struct stat st;
	int nfd;

	*is_socket = false;
	if (fstat(fd, &st) == -1)
		return fd;
	if (S_ISSOCK(st.st_mode)) {
		*is_socket = true;
		return fd;
	}
	if (!S_ISFIFO(st.st_mode))
		return fd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	nfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	return nfd == -1 ? fd : nfd;
}

ssize_t
log_write_nb(int fd, bool is_socket, const void *p, size_t n)
{
	if (is_socket)
		return send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	return write(fd, p, n);
}

void
log_set_nonblocking(void)
{
	int fd;

	if (log_nb)
		return;
	log_nb = true;
	fd = log_nonblocking_fd(log_dest, &log_sock);
	if (fd != log_dest && log_dest != STDERR_FILENO)
		close(log_dest);
	log_dest = fd;
}

void
log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role);
}

int
log_fd(void)
{
	return log_dest;
}

int
log_open(const char *path)
{
	int fd;

	if (path == NULL || strcmp(path, "stderr") == 0) {
		if (log_path == NULL)
			return 0;		/* stderr already */
		if (log_dest != STDERR_FILENO)
			close(log_dest);
		log_dest = STDERR_FILENO;
		log_sock = false;
		if (log_nb) {
			log_nb = false;
			log_set_nonblocking();
		}
		free(log_path);
		log_path = NULL;
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd == -1)
		return -1;
	if (log_dest != STDERR_FILENO)
		close(log_dest);
	log_dest = fd;
	log_sock = false;
	if (log_path != path) {
		char *copy = strdup(path);

		free(log_path);
		log_path = copy;
	}
	return 0;
}

int
log_reopen(void)
{
	if (log_path == NULL)
		return 0;
	return log_open(log_path);
}

static void
log_emit(enum log_level lvl, int with_errno, const char *fmt, va_list ap)
{
	char line[PIPE_BUF];
	struct timespec ts;
	struct tm tm;
	int saved = errno, n, m;

	if (lvl > log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s[%ld]: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_names[lvl],
	    log_role, (long)getpid());
	m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	n = (m < 0 || (size_t)(n + m) >= sizeof(line)) ?
	    (int)sizeof(line) - 2 : n + m;
	if (with_errno) {
		m = snprintf(line + n, sizeof(line) - n, ": %s",
		    strerror(saved));
		n = (m < 0 || (size_t)(n + m) >= sizeof(line) - 1) ?
		    (int)sizeof(line) - 2 : n + m;
	}
	line[n++] = '\n';
	if (log_dropped > 0) {
		char note[96];
		int m2 = snprintf(note, sizeof(note), "[warn] %lu log line%s "
		    "dropped while the error log's reader stalled\n",
		    log_dropped, log_dropped == 1 ? " was" : "s were");

		if (log_write_nb(log_dest, log_sock, note, (size_t)m2) == m2)
			log_dropped = 0;
	}
	if (log_write_nb(log_dest, log_sock, line, (size_t)n) != n)
		log_dropped++;		/* a stalled reader: never block */
	errno = saved;
}

#define LOG_FN(name, lvl, with_errno)			\
void							\
name(const char *fmt, ...)				\
{							\
	va_list ap;					\
							\
	va_start(ap, fmt);				\
	log_emit(lvl, with_errno, fmt, ap);		\
	va_end(ap);					\
}

LOG_FN(log_error, LOG_LVL_ERROR, 1)
LOG_FN(log_errorx, LOG_LVL_ERROR, 0)
LOG_FN(log_warn, LOG_LVL_WARN, 1)
LOG_FN(log_warnx, LOG_LVL_WARN, 0)
LOG_FN(log_info, LOG_LVL_INFO, 0)
LOG_FN(log_debug, LOG_LVL_DEBUG, 0)

static void	(*log_fatal_hook)(const char *);

void
log_set_fatal_hook(void (*hook)(const char *msg))
{
	log_fatal_hook = hook;
}

static void __attribute__((noreturn))
log_fatal(int code, bool with_errno, const char *fmt, va_list ap)
{
	int saved = errno;
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (with_errno) {
		n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));
	}
	log_errorx("%s", msg);
	if (log_fatal_hook != NULL)
		log_fatal_hook(msg);
	exit(code);
}

void
fatal(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_fatal(code, true, fmt, ap);
}

void
fatalx(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_fatal(code, false, fmt, ap);
}
