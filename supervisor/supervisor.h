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

struct listen_group;

/*
 * Fills groups (one per cfg->server.listen) with at least nsockets
 * listening sockets each, reusing the supervisor's open ones by address
 * and binding the rest.  Returns 0, or -1 with a reason in err (nothing
 * new stays bound).
 */
int	listeners_acquire(const struct config *, size_t nsockets,
	    struct listen_group *groups, char *err, size_t errlen);
/* Closes the sockets of addresses no config in keep[0..n) has. */
void	listeners_release(const struct config *const *keep, size_t n);
/* In a worker: closes every listening socket but those in keep[0..n). */
void	listeners_close_except(const int *keep, size_t n);
void	listeners_close_all(void);

/* -- pidfile.c --------------------------------------------------------- */

int	pidfile_write(const char *path);
void	pidfile_remove(const char *path);
/* The pid in path, or -1 (with a reason in err). */
pid_t	pidfile_read(const char *path, char *err, size_t errlen);

#endif
