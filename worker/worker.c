/*
 * The worker process.  Forked by the supervisor with the config and the
 * listening sockets already in hand; it builds its event loop (after the
 * fork, as libevent requires), drops privileges, tells the supervisor it
 * is ready, and serves until told otherwise over its control socket:
 *
 *   D  drain (reload): stop accepting, finish what is in flight, exit
 *   S  stop (TERM/QUIT): health answers 503 for shutdown_delay, then drain
 *   Q  quit (INT): close everything and exit now
 *   O  reopen log files (USR1)
 *
 * End of file on the control socket means the supervisor is gone: the
 * worker exits at once rather than serve unsupervised.
 */
#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/metrics/metrics.h"
#include "lib/log.h"
#include "lib/proctitle.h"
#include "offload/offload.h"
#include "worker/accesslog.h"
#include "worker/conn.h"
#include "worker/loopwatch.h"
#include "worker/tunnel.h"
#include "worker/worker.h"

#define ACCEPT_BATCH	64

struct worker worker;

static struct event	*sig_evs[4];
static struct event	 accept_retry_ev;
static int		 exit_code;

static void
worker_stop_loop(int code)
{
	exit_code = code;
	event_base_loopbreak(worker.base);
}

/* -- accepting --------------------------------------------------------- */

static void
worker_accept_pause(void)
{
	size_t i;

	if (!worker.accepting)
		return;
	for (i = 0; i < worker.nlisteners; i++)
		if (worker.listeners[i].added) {
			event_del(&worker.listeners[i].ev);
			worker.listeners[i].added = false;
		}
	worker.accepting = false;
}

static void
worker_accept_resume(void)
{
	size_t i;

	if (worker.accepting || worker.phase == WP_DRAINING)
		return;
	for (i = 0; i < worker.nlisteners; i++)
		if (!worker.listeners[i].added && worker.listeners[i].fd >= 0 &&
		    event_add(&worker.listeners[i].ev, NULL) == 0)
			worker.listeners[i].added = true;
	worker.accepting = true;
}

static void
accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_ACCEPT);
	worker_accept_resume();
	loopwatch_end();
}

static void
accept_batch(int fd, struct listener *l)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int i, cfd;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		if (worker.nconns >= worker.cfg->server.max_connections) {
			log_warnx("worker: max_connections (%d) reached; not "
			    "accepting until some close",
			    worker.cfg->server.max_connections);
			worker_accept_pause();
			return;
		}
		sslen = sizeof(ss);
		cfd = accept4(fd, (struct sockaddr *)&ss, &sslen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0) {
			conn_accept(l, cfd, (struct sockaddr *)&ss, sslen);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		    errno == ENOMEM) {
			struct timeval tv = { 0, 100000 };

			log_warn("worker: accept");
			worker_accept_pause();
			evtimer_add(&accept_retry_ev, &tv);
		}
		return;		/* EAGAIN: another worker took it */
	}
}

static void
accept_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_ACCEPT);
	accept_batch(fd, arg);
	loopwatch_end();
}

void
worker_conn_closed(void)
{
	if (worker.phase == WP_DRAINING) {
		if (worker.nconns == 0)
			worker_stop_loop(0);
		return;
	}
	if (!worker.accepting &&
	    worker.nconns < worker.cfg->server.max_connections &&
	    !evtimer_pending(&accept_retry_ev, NULL))
		worker_accept_resume();
}

/* -- stopping ---------------------------------------------------------- */

static void
bye_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_TIMER);
	worker_stop_loop(0);
	loopwatch_end();
}

/*
 * drain_timeout has passed: connections still open are closed, except
 * that tunnels first say goodbye (WebSocket clients get a close frame
 * 1001, "going away") and get up to TUNNEL_BYE_MS to close their side.
 */
static void
drain_timeout(void)
{
	struct timeval tv = { TUNNEL_BYE_MS / 1000,
	    (TUNNEL_BYE_MS % 1000) * 1000 };

	log_info("worker: drain_timeout reached; closing %d connection%s",
	    worker.nconns, log_plural(worker.nconns));
	if (tunnel_bye_all() == 0) {
		worker_stop_loop(0);
		return;
	}
	conn_close_all_but_tunnels("drain timeout");
	if (worker.nconns == 0) {
		worker_stop_loop(0);
		return;
	}
	evtimer_del(&worker.stop_ev);
	evtimer_assign(&worker.stop_ev, worker.base, bye_timeout_cb, NULL);
	evtimer_add(&worker.stop_ev, &tv);
}

static void
drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_TIMER);
	drain_timeout();
	loopwatch_end();
}

static void
close_listeners_cb(evutil_socket_t fd, short what, void *arg)
{
	size_t i;

	loopwatch_begin(LW_TIMER);
	for (i = 0; i < worker.nlisteners; i++) {
		if (worker.listeners[i].fd >= 0)
			close(worker.listeners[i].fd);
		worker.listeners[i].fd = -1;
	}
	loopwatch_end();
}

void
worker_drain(void)
{
	uint64_t ms = worker.cfg->server.drain_timeout_ms;
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	if (worker.phase == WP_DRAINING)
		return;
	worker_accept_pause();
	worker.phase = WP_DRAINING;
	/*
	 * Close our copies of the listeners (the supervisor and the next
	 * generation keep the sockets, so nothing queued is lost) -- but
	 * only after the loop has applied the event_del above: with the
	 * epoll changelist it is deferred, and a closed fd cannot be taken
	 * out of epoll any more, so the listener would keep waking us.
	 */
	event_base_once(worker.base, -1, EV_TIMEOUT, close_listeners_cb, NULL,
	    &(struct timeval){ 0, 0 });
	evtimer_del(&accept_retry_ev);
	conn_drain_all();
	log_info("worker: draining %d connection%s (up to %llums)",
	    worker.nconns, log_plural(worker.nconns), (unsigned long long)ms);
	if (worker.nconns == 0) {
		worker_stop_loop(0);
		return;
	}
	evtimer_del(&worker.stop_ev);
	evtimer_assign(&worker.stop_ev, worker.base, drain_timeout_cb, NULL);
	evtimer_add(&worker.stop_ev, &tv);
}

static void
shutdown_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_TIMER);
	worker_drain();
	loopwatch_end();
}

/* TERM/QUIT: fail the health check first, keep serving, then drain. */
static void
worker_stop(void)
{
	uint64_t ms = worker.cfg->server.shutdown_delay_ms;
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	worker.health_down = true;
	if (worker.phase != WP_RUNNING)
		return;
	if (ms == 0) {
		worker_drain();
		return;
	}
	worker.phase = WP_STOPPING;
	evtimer_assign(&worker.stop_ev, worker.base, shutdown_delay_cb, NULL);
	evtimer_add(&worker.stop_ev, &tv);
}

static void
worker_reopen(void)
{
	if (log_reopen() == -1)
		log_warn("worker: reopen error log");
	if (accesslog_reopen() == -1)
		log_warnx("worker: cannot reopen the access log; still "
		    "writing to the old file");
}

static void
ctl_read(int fd)
{
	char cmd[16];
	ssize_t n, i;

	n = read(fd, cmd, sizeof(cmd));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		log_warnx("worker: supervisor is gone; exiting");
		worker_stop_loop(0);
		return;
	}
	for (i = 0; i < n; i++) {
		switch (cmd[i]) {
		case CTL_DRAIN:
			worker_drain();
			break;
		case CTL_STOP:
			worker_stop();
			break;
		case CTL_QUIT:
			worker_stop_loop(0);
			break;
		case CTL_REOPEN:
			worker_reopen();
			break;
		default:
			log_warnx("worker: unknown control byte 0x%02x",
			    (unsigned char)cmd[i]);
		}
	}
}

static void
ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_SIGNAL);
	ctl_read(fd);
	loopwatch_end();
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	loopwatch_begin(LW_SIGNAL);
	if (sig == SIGINT)
		worker_stop_loop(0);
	else
		worker_stop();
	loopwatch_end();
}

/* -- start ------------------------------------------------------------- */

static void
worker_signals(void)
{
	static const int handled[] = { SIGTERM, SIGQUIT, SIGINT };
	static const int ignored[] = { SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN,
	    SIGTTOU, SIGPIPE };
	sigset_t all;
	size_t i;

	for (i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
		signal(ignored[i], SIG_IGN);
	for (i = 0; i < sizeof(handled) / sizeof(handled[0]); i++) {
		sig_evs[i] = evsignal_new(worker.base, handled[i], signal_cb,
		    NULL);
		if (sig_evs[i] != NULL)
			evsignal_add(sig_evs[i], NULL);
	}
	/* The supervisor blocks signals for its signalfd; we want them. */
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
}

static void
worker_drop_privileges(const char *user)
{
	struct passwd *pw;

	if (user == NULL)
		return;
	if (getuid() != 0) {
		log_warnx("worker: 'user: %s' needs agate started as root; "
		    "staying uid %ld", user, (long)getuid());
		return;
	}
	if ((pw = getpwnam(user)) == NULL)
		fatalx(EXIT_CANNOT_START, "worker: no such user '%s'", user);
	if (setgroups(0, NULL) == -1 || setgid(pw->pw_gid) == -1 ||
	    setuid(pw->pw_uid) == -1)
		fatal(EXIT_CANNOT_START, "worker: cannot become %s", user);
}

static void
worker_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)worker.cfg->server.max_connections * 2 + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < want) {
		rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (worker.index == 0)
		log_info("worker: file descriptor limit %llu",
		    (unsigned long long)rl.rlim_cur);
	if (rl.rlim_cur < (rlim_t)worker.cfg->server.max_connections + 64)
		log_warnx("worker: the file descriptor limit (%llu) is below "
		    "max_connections (%d)", (unsigned long long)rl.rlim_cur,
		    worker.cfg->server.max_connections);
}

/* The sockets of this worker's slot, from every listen address. */
static int
worker_listen(const struct worker_start *ws)
{
	const struct server_sect *s = &worker.cfg->server;
	size_t i, j, n = 0;

	for (i = 0; i < s->nlisten; i++)
		n += ws->groups[i].nfds;
	worker.listeners = calloc(n ? n : 1, sizeof(*worker.listeners));
	if (worker.listeners == NULL)
		return -1;
	for (i = 0; i < s->nlisten; i++)
		for (j = 0; j < ws->groups[i].nfds; j++) {
			struct listener *l;

			if (!listen_slot_takes(ws->groups[i].nfds,
			    ws->nworkers, ws->index, j))
				continue;
			l = &worker.listeners[worker.nlisteners++];
			l->fd = ws->groups[i].fds[j];
			l->cfg = &s->listen[i];
			event_assign(&l->ev, worker.base, l->fd,
			    EV_READ | EV_PERSIST, accept_cb, l);
		}
	worker.accepting = false;
	worker_accept_resume();
	return 0;
}

static struct event_base *
worker_base(void)
{
	struct event_config *ec = event_config_new();
	struct event_base *base;

	if (ec == NULL)
		return NULL;
	/* Folds a delete and re-add of an fd within one loop pass into
	 * nothing: fewer epoll_ctl calls per request. */
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
	base = event_base_new_with_config(ec);
	event_config_free(ec);
	return base;
}

/* -- event-loop lag ------------------------------------------------------ */

#define LAG_TICK_MS	100

static struct event lag_ev;
static struct timespec lag_last;

/*
 * A timer that should fire every LAG_TICK_MS: how late it is, is how
 * long the loop was busy with something else (metrics: the event-loop
 * lag histogram).  It also publishes this worker's gauges.
 */
static void
lag_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timespec now;
	int64_t late_us;

	loopwatch_begin(LW_TIMER);
	clock_gettime(CLOCK_MONOTONIC, &now);
	late_us = (now.tv_sec - lag_last.tv_sec) * 1000000 +
	    (now.tv_nsec - lag_last.tv_nsec) / 1000 - LAG_TICK_MS * 1000;
	lag_last = now;
	metrics_lag(late_us > 0 ? (uint64_t)late_us : 0);
	loopwatch_tick();
	worker.app->tick();
	loopwatch_end();
}

static void
lag_start(void)
{
	struct timeval tv = { 0, LAG_TICK_MS * 1000 };

	clock_gettime(CLOCK_MONOTONIC, &lag_last);
	event_assign(&lag_ev, worker.base, -1, EV_PERSIST, lag_cb, NULL);
	event_add(&lag_ev, &tv);
}

static void
worker_cleanup(void)
{
	size_t i;

	conn_close_all("worker exiting");
	offload_free();
	worker.app->shutdown();
	accesslog_close();
	for (i = 0; i < sizeof(sig_evs) / sizeof(sig_evs[0]); i++)
		if (sig_evs[i] != NULL)
			event_free(sig_evs[i]);
	for (i = 0; i < worker.nlisteners; i++) {
		if (worker.listeners[i].added)
			event_del(&worker.listeners[i].ev);
		if (worker.listeners[i].fd >= 0)
			close(worker.listeners[i].fd);
	}
	free(worker.listeners);
	event_del(&worker.ctl_ev);
	evtimer_del(&worker.stop_ev);
	evtimer_del(&accept_retry_ev);
	event_del(&lag_ev);
	tlist_free(&worker.t_header);
	tlist_free(&worker.t_idle);
	tlist_free(&worker.t_send);
	tlist_free(&worker.t_linger);
	tlist_free(&worker.t_grace);
	event_base_free(worker.base);
	close(worker.ctl_fd);
}

void (*worker_start_hook)(const struct worker_start *);

/*
 * fatal() in a worker: tell the supervisor why, so that a reload whose
 * worker never got ready can say it (the error log alone may be a file
 * the operator is not reading).  One line on the control socket.
 */
static void
worker_tell_why(const char *msg)
{
	char line[CTL_WHY_MAX + 2];
	size_t n, i;

	line[0] = CTL_WHY;
	n = strlen(msg);
	if (n > CTL_WHY_MAX)
		n = CTL_WHY_MAX;
	memcpy(line + 1, msg, n);
	for (i = 1; i <= n; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[n + 1] = '\n';
	if (write(worker.ctl_fd, line, n + 2) == -1)
		return;		/* the supervisor is gone: nobody to tell */
}

void
worker_main(const struct worker_start *ws)
{
	char role[32];

	snprintf(role, sizeof(role), "worker %d", ws->index);
	log_set_role(role);
	proctitle_set("agate-worker", "agate: worker %d (generation %u)",
	    ws->index, ws->generation);
	log_set_nonblocking();
	memset(&worker, 0, sizeof(worker));
	worker.cfg = ws->cfg;
	worker.app = ws->app;
	worker.index = ws->index;
	worker.generation = ws->generation;
	worker.ctl_fd = ws->ctl_fd;
	log_set_fatal_hook(worker_tell_why);
	worker.rbuf_size = ws->cfg->server.max_header_size + 4096;
	metrics_attach(ws->stripe);
	loopwatch_init(ws->cfg->log_slow_callback_us);
	/* Files are opened as the user agate started as (root, often),
	 * then the worker gives that up, as nginx's workers do. */
	if (accesslog_open() == -1)
		fatalx(EXIT_CANNOT_START, "worker: cannot open the access log");
	worker_drop_privileges(ws->cfg->server.user);
	if (worker_start_hook != NULL)
		worker_start_hook(ws);
	worker_fd_limit();
	/*
	 * Output queues of large responses come and go with their requests.
	 * glibc's defaults would hand the top of the heap back with brk(2)
	 * after each and ask for it again with the next (0.6 brk per 100 KiB
	 * response here), and blocks from 128 KiB up are mmap'd and unmapped
	 * each time.  Keep up to 4 MiB of freed heap, and serve blocks up to
	 * 1 MiB from it.  (Setting one disables glibc's dynamic tuning, so
	 * both are set.)
	 */
	mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
	/* Helpers are forked before the loop exists: they inherit no
	 * event state (only descriptors, which they close).  They know
	 * the app's job kinds from here on. */
	if (worker.app->jobs != NULL && offload_add_kinds(worker.app->jobs)
	    == -1)
		fatalx(EXIT_CANNOT_START, "worker: too many job kind tables");
	if (offload_init(worker.cfg) == -1)
		fatalx(EXIT_CANNOT_START, "worker: cannot start the offload "
		    "helpers");
	if ((worker.base = worker_base()) == NULL)
		fatalx(EXIT_CANNOT_START, "worker: cannot create event loop");
	worker_signals();
	evtimer_assign(&worker.stop_ev, worker.base, drain_timeout_cb, NULL);
	evtimer_assign(&accept_retry_ev, worker.base, accept_retry_cb, NULL);
	conn_init_worker();
	if (offload_start(worker.base) == -1)
		fatalx(EXIT_CANNOT_START, "worker: cannot watch the offload "
		    "helpers");
	if (accesslog_start(worker.base) == -1)
		fatalx(EXIT_CANNOT_START, "worker: out of memory");
	if (worker.app->init(worker.base, worker.cfg) == -1)
		fatalx(EXIT_CANNOT_START, "worker: gateway setup failed");
	if (worker_listen(ws) == -1)
		fatalx(EXIT_CANNOT_START, "worker: out of memory");
	lag_start();
	event_assign(&worker.ctl_ev, worker.base, worker.ctl_fd,
	    EV_READ | EV_PERSIST, ctl_cb, NULL);
	event_add(&worker.ctl_ev, NULL);
	if (write(worker.ctl_fd, (char[]){ CTL_READY }, 1) != 1)
		fatal(EXIT_CANNOT_START, "worker: cannot reach the supervisor");
	log_debug("worker: serving (generation %u)", worker.generation);
	event_base_dispatch(worker.base);
	worker_cleanup();
	exit(exit_code);
}
