/*
 * The supervisor: the process that owns the listening sockets and the
 * config, forks generations of workers, and turns signals into actions.
 * It never touches request traffic.
 */
#ifndef AGATE_SUPERVISOR_H
#define AGATE_SUPERVISOR_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "gateway/config/config.h"

/* Runs until stopped; returns the process exit code. */
/* argv: how this agate was started, for a binary upgrade (USR2). */
int	supervisor_run(const char *conf_path, struct config *cfg,
	    char **argv);

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
/* Takes over inherited listening sockets (systemd, USR2); from names
 * where they came from, for the log.  Returns how many it kept. */
int	listeners_adopt(const int *fds, size_t n, const char *from);
/* Every listening descriptor, for a binary upgrade. */
size_t	listeners_fds(int *out, size_t max);

/* -- sdnotify.c --------------------------------------------------------- */

/* sd_notify(3): a message to $NOTIFY_SOCKET, if set.  1 sent, 0 no
 * socket, -1 error. */
int	sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* sd_listen_fds(3): the descriptors systemd passed to this process (and
 * the LISTEN_* variables unset).  Returns how many. */
int	sd_listen_fds_take(int *fds, int max);

/* -- statuscmd.c ------------------------------------------------------- */

/* agate -s status: the exit code (1 with a reason on stderr). */
int	statuscmd_run(const char *conf_path);
/* An HTTP answer to GET /status (resp[len] is NUL) as a table on out.
 * 0, or -1 with a reason in err. */
int	statuscmd_print(const char *resp, size_t len, FILE *out, char *err,
	    size_t errlen);

/* -- pidfile.c --------------------------------------------------------- */

int	pidfile_write(const char *path);
void	pidfile_remove(const char *path);
/* The pid in path, or -1 (with a reason in err). */
pid_t	pidfile_read(const char *path, char *err, size_t errlen);
/* 0 if path may be written: it is missing, stale or ours; -1 (with a
 * reason in err) if it names another running process. */
int	pidfile_check(const char *path, char *err, size_t errlen);

#endif
