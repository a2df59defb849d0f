/*
 * The supervisor: the process that owns the listening sockets and the
 * config, forks generations of workers, and turns signals into actions.
 * It never touches request traffic.
 */
#ifndef AGATE_SUPERVISOR_H
#define AGATE_SUPERVISOR_H

#include <stdbool.h>
#include <sys/types.h>

#include "gateway/config.h"

/* Runs until stopped; returns the process exit code. */
int	supervisor_run(const char *conf_path, struct config *cfg);

/* -- listeners.c ------------------------------------------------------- */

/*
 * Fills fds (one per cfg->server.listen) with listening sockets, reusing
 * the supervisor's open ones by address and binding the rest.  Returns 0,
 * or -1 with a reason in err (nothing new stays bound).
 */
int	listeners_acquire(const struct config *, int *fds, char *err,
	    size_t errlen);
/* Closes sockets that no config in keep[0..n) uses any more. */
void	listeners_release(const struct config *const *keep, size_t n);
/* True if fd is a listening socket of ours not in cfg (child cleanup). */
void	listeners_close_except(const int *fds, size_t n);
void	listeners_close_all(void);

/* -- pidfile.c --------------------------------------------------------- */

int	pidfile_write(const char *path);
void	pidfile_remove(const char *path);
/* The pid in path, or -1 (with a reason in err). */
pid_t	pidfile_read(const char *path, char *err, size_t errlen);

#endif
