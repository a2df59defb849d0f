/*
 * A worker process: one event loop serving client connections on the
 * listeners it inherited from the supervisor.  This header is the
 * worker's face to the supervisor (worker_main) and the shared state of
 * the worker's own modules.
 */
#ifndef AGATE_WORKER_H
#define AGATE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "gateway/config/config.h"
#include "worker/timer.h"

/* Bytes of the supervisor -> worker control channel. */
#define CTL_DRAIN	'D'	/* reload: finish in-flight, then exit */
#define CTL_STOP	'S'	/* TERM/QUIT: health 503, shutdown_delay, drain */
#define CTL_QUIT	'Q'	/* INT: exit now */
#define CTL_REOPEN	'O'	/* USR1: reopen log files */
/* worker -> supervisor */
#define CTL_READY	'R'
#define CTL_WHY		'W'	/* then why it gives up, up to a '\n' */
#define CTL_WHY_MAX	240	/* bytes of that text the supervisor keeps */

/* Exit codes the supervisor acts on. */
#define EXIT_CANNOT_START 2	/* config or privileges: do not respawn */

struct listener {
	int			 fd;
	const struct listen_cfg	*cfg;
	struct event		 ev;
	bool			 added;
};

enum worker_phase {
	WP_RUNNING,		/* serving */
	WP_STOPPING,		/* health answers 503; still serving */
	WP_DRAINING		/* not accepting; finishing in-flight work */
};

struct request;
struct job_kind_def;

/*
 * What a worker runs on its loop: the gateway hands it this table when
 * the supervisor forks the worker, so worker/ names nothing of gateway/
 * beyond its config and metrics (relayd's struct privsep_proc).
 */
struct worker_app {
	/* Offload job kinds it adds to the built-in ones, or NULL. */
	const struct job_kind_def *jobs;
	/* Once the loop exists; -1 stops the worker (exit 2). */
	int	(*init)(struct event_base *, const struct config *);
	/* Each parsed request (worker/http.h says what it may do). */
	void	(*handle)(struct request *);
	/* A request has ended and is about to be logged, or NULL. */
	void	(*done)(const struct request *);
	/* Every LAG_TICK_MS: publish its gauges. */
	void	(*tick)(void);
	/* The worker is exiting: let go of everything. */
	void	(*shutdown)(void);
};

struct worker {
	struct event_base	*base;
	const struct config	*cfg;
	const struct worker_app	*app;
	int			 index;
	unsigned		 generation;
	int			 ctl_fd;
	struct event		 ctl_ev;
	struct event		 stop_ev;	/* shutdown_delay, drain_timeout */
	enum worker_phase	 phase;
	bool			 health_down;	/* health path answers 503 */
	struct listener		*listeners;
	size_t			 nlisteners;
	bool			 accepting;
	int			 nconns;
	size_t			 rbuf_size;	/* per-connection read buffer */
	/* Timeout lists, one per duration a connection can wait. */
	struct tlist		 t_header;
	struct tlist		 t_idle;
	struct tlist		 t_send;
	struct tlist		 t_linger;
	struct tlist		 t_grace;
	struct tlist		 t_tunnel;	/* tunnel_timeout */
	struct tlist		 t_tunnel_bye;	/* a tunnel's goodbye */
};

extern struct worker worker;

/*
 * The sockets of one listen address: SO_REUSEPORT siblings, so the
 * kernel spreads connections across workers.  The worker in slot i of a
 * generation of n accepts on fds[j] for every j with j % n == i, so each
 * socket always has exactly one acceptor per generation.
 */
#define LISTEN_SOCKETS_MAX CONFIG_MAX_WORKERS

struct listen_group {
	int			 fds[LISTEN_SOCKETS_MAX];
	size_t			 nfds;		/* 0: not opened */
};

/*
 * Whether the worker in slot index (of nworkers) accepts on socket j of
 * a group of nfds: one socket per slot; or, when a group has fewer
 * sockets than workers (one from systemd, without SO_REUSEPORT), the
 * workers share them.
 */
static inline bool
listen_slot_takes(size_t nfds, int nworkers, int index, size_t j)
{
	if (nfds >= (size_t)nworkers)
		return (int)(j % (size_t)nworkers) == index;
	return j == (size_t)index % nfds;
}

struct worker_start {
	const struct config	*cfg;
	int			 index;
	int			 nworkers;	/* in its generation */
	unsigned		 generation;
	int			 ctl_fd;
	const struct listen_group *groups;	/* one per server.listen */
	int			 stripe;	/* metrics stripe, or -1 */
	const struct worker_app	*app;
};

/* Runs a worker in a freshly forked child; never returns. */
void	worker_main(const struct worker_start *) __attribute__((noreturn));
/* The test build's way to make a worker fail at start (tests/testbuild.c):
 * called once files are open and privileges dropped.  NULL in agate. */
extern void (*worker_start_hook)(const struct worker_start *);
/* A connection closed: accept again if max_connections had stopped it. */
void	worker_conn_closed(void);
/* Stops accepting and starts the drain (also on supervisor EOF). */
void	worker_drain(void);

#endif
