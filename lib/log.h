/*
 * Logging shared by every process kind.
 *
 * Two flavours, as in OpenBSD's daemons: the plain ones append
 * strerror(errno) (log_warn), the ones ending in x do not (log_warnx).
 * Messages start with the subsystem or function that speaks.  Lines go to
 * the error log (stderr or a file given by log.error), prefixed with a UTC
 * timestamp, the level, the process role and its pid.
 */
#ifndef AGATE_LOG_H
#define AGATE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <sys/types.h>

enum log_level {
	LOG_LVL_ERROR,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG
};

extern enum log_level log_level;

/* Sets the role shown in each line ("supervisor", "worker 0"...). */
void	log_set_role(const char *role);
/*
 * Sends lines to path (NULL or "stderr" = standard error).  Returns 0, or
 * -1 with errno set and the previous destination kept.
 */
int	log_open(const char *path);
/* Reopens the current file (logrotate); a no-op for stderr. */
int	log_reopen(void);
int	log_fd(void);

/*
 * Where writing may block (a pipe or socket whose reader stalls), give a
 * descriptor that never does, without touching fd's own flags (they are
 * shared with other processes): a pipe is reopened through /proc/self/fd
 * as a new non-blocking open file; a socket is written with MSG_DONTWAIT.
 * Returns the descriptor to use (fd itself for files and terminals).
 */
int	log_nonblocking_fd(int fd, bool *is_socket);
/* write(2), or send(MSG_DONTWAIT) on a socket. */
ssize_t	log_write_nb(int fd, bool is_socket, const void *p, size_t n);
/* Makes the error log non-blocking (workers: a stalled reader of stderr
 * must not stall the event loop; lines are dropped and counted then). */
void	log_set_nonblocking(void);

void	log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_errorx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "s" unless n is 1: "%d worker%s", n, log_plural(n). */
static inline const char *
log_plural(long long n)
{
	return n == 1 ? "" : "s";
}

/*
 * Called by fatal() and fatalx() with the message (no timestamp or role)
 * just before the exit, or not at all with NULL: a worker tells its
 * supervisor why it gives up.  A forked child that cannot reach the
 * same place must set it back to NULL.
 */
void	log_set_fatal_hook(void (*hook)(const char *msg));
/* Logs at error level and exits with code. */
void	fatal(int code, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3), noreturn));
void	fatalx(int code, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3), noreturn));

#endif
