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

void	log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_errorx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs at error level and exits with code. */
void	fatal(int code, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3), noreturn));
void	fatalx(int code, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3), noreturn));

#endif
