/*
 * Process control, nginx-style but smaller.  Workers come in generations:
 * one generation per config.  A reload parses the file into a new config
 * (an error leaves everything as it was), starts a new generation on the
 * same listening sockets, and only once all its workers report ready
 * tells the previous one to drain.  A worker of the serving generation
 * that dies is respawned at once, or with exponential backoff if it keeps
 * dying right after start; one that exits with EXIT_CANNOT_START is not
 * respawned at all.
 *
 * The loop is poll(2) over a signalfd (signals are blocked, so no handler
 * runs at an awkward moment) and the control sockets of the workers, with
 * the nearest deadline as its timeout.  sup_signals[] is the whole signal
 * contract in one table.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway/cache/store.h"
#include "gateway/config/shared.h"
#include "gateway/gateway.h"
#include "gateway/metrics/metrics.h"
#include "gateway/policy/ratelimit.h"
#include "lib/log.h"
#include "lib/proctitle.h"
#include "lib/signame.h"
#include "supervisor/supervisor.h"
#include "worker/timer.h"
#include "worker/worker.h"

#define SLOTS			CONFIG_MAX_WORKERS
#define READY_TIMEOUT_MS	10000
#define QUICK_DEATH_MS		1000	/* dying sooner is a crash at start */
#define RESPAWN_FIRST_MS	100
#define RESPAWN_MAX_MS		30000
#define FAST_STOP_MS		5000

struct slot {
	pid_t		 pid;		/* 0: empty */
	int		 ctl;		/* our end of its socketpair, or -1 */
	bool		 ready;
	bool		 retired;	/* told to leave: its exit is expected */
	bool		 failed;	/* exited EXIT_CANNOT_START */
	uint64_t	 started;
	int		 quick_deaths;
	uint64_t	 respawn_at;	/* 0: none pending */
	int		 stripe;	/* metrics stripe of its worker, or -1 */
	char		 why[CTL_WHY_MAX + 1];	/* its last words (CTL_WHY) */
	size_t		 why_len;
	bool		 why_open;	/* reading them, up to a '\n' */
};

enum gen_state {
	GEN_STARTING,	/* a reload's workers, not all ready yet */
	GEN_ACTIVE,	/* the serving generation */
	GEN_DRAINING	/* told to finish and go */
};

struct gen {
	unsigned	 id;
	enum gen_state	 state;
	bool		 is_reload;	/* a HUP's (counted in metrics) */
	struct config	*cfg;		/* shared, counted in cfg->refs */
	struct listen_group *groups;	/* per cfg listen entry */
	struct slot	 slots[SLOTS];
	int		 wanted;	/* workers it should have */
	uint64_t	 ready_deadline;
	uint64_t	 kill_at;	/* draining: SIGKILL what is left then */
	struct gen	*next;
};

static struct {
	const char	*conf_path;
	struct gen	*gens;		/* newest first */
	unsigned	 next_id;
	int		 sigfd;
	bool		 stopping;
	bool		 fast;
	uint64_t	 kill_at;	/* backstop while stopping */
	int		 exit_code;
	char		*pid_file;	/* the one we wrote */
	char		*pid_file_live;	/* its name before an upgrade */
	char	       **argv;		/* for a binary upgrade */
	char		 exe[PATH_MAX];
	pid_t		 upgrade_pid;	/* the new agate of a USR2 */
	pid_t		 upgraded_from;	/* the agate that started this one */
	bool		 ready_sent;	/* READY=1 told to systemd */
	bool		 reloading;	/* RELOADING=1 told, READY=1 due */
} sup;

static void	sup_reload(void);
static void	sup_graceful(void);
static void	sup_fast(void);
static void	sup_reopen(void);
static void	sup_upgrade(void);
static void	sup_more(void);
static void	sup_fewer(void);
static void	sup_reap(void);
static void	describe_exit(int, char *, size_t);
static void	slot_read_ctl(struct slot *);
static bool	gen_all_ready(const struct gen *);
static void	upgrade_failed(int);
static void	sup_notify_ready(const char *);
static void	sup_notify_stopping(const char *);

#define MAX_INHERIT	1024

static const struct {
	int		 sig;
	void		(*action)(void);
	const char	*what;
} sup_signals[] = {
	{ SIGHUP,	sup_reload,	"reload the config" },
	{ SIGTERM,	sup_graceful,	"graceful stop" },
	{ SIGQUIT,	sup_graceful,	"graceful stop" },
	{ SIGINT,	sup_fast,	"fast stop" },
	{ SIGUSR1,	sup_reopen,	"reopen log files" },
	{ SIGUSR2,	sup_upgrade,	"binary upgrade" },
	{ SIGTTIN,	sup_more,	"one worker more" },
	{ SIGTTOU,	sup_fewer,	"one worker fewer" },
	{ SIGCHLD,	sup_reap,	"reap workers" },
};

#define NSIGNALS (sizeof(sup_signals) / sizeof(sup_signals[0]))

/* -- generations ------------------------------------------------------- */

static struct gen *
gen_active(void)
{
	struct gen *g;

	for (g = sup.gens; g != NULL; g = g->next)
		if (g->state == GEN_ACTIVE)
			return g;
	return NULL;
}

static struct gen *
gen_new(struct config *cfg, struct listen_group *groups, int wanted,
    enum gen_state state)
{
	struct gen *g = calloc(1, sizeof(*g));
	int i;

	if (g == NULL)
		return NULL;
	g->id = ++sup.next_id;
	g->state = state;
	g->cfg = cfg;
	cfg->refs++;
	g->groups = groups;
	g->wanted = wanted;
	for (i = 0; i < SLOTS; i++)
		g->slots[i].ctl = -1;
	g->next = sup.gens;
	sup.gens = g;
	return g;
}

static int
gen_live(const struct gen *g)
{
	int i, n = 0;

	for (i = 0; i < SLOTS; i++)
		n += g->slots[i].pid != 0;
	return n;
}

static void
gen_free(struct gen *g)
{
	struct gen **pp;
	int i;

	for (pp = &sup.gens; *pp != NULL; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	for (i = 0; i < SLOTS; i++)
		if (g->slots[i].ctl >= 0)
			close(g->slots[i].ctl);
	if (--g->cfg->refs == 0)
		config_free(g->cfg);
	free(g->groups);
	free(g);
}

/* Closes listeners that no remaining generation is configured for. */
static void
sup_release_listeners(void)
{
	const struct config *keep[8];
	struct gen *g;
	size_t n = 0;

	for (g = sup.gens; g != NULL && n < 8; g = g->next)
		if (g->state != GEN_DRAINING)
			keep[n++] = g->cfg;
	listeners_release(keep, n);
}

/* -- workers ----------------------------------------------------------- */

static void
slot_send(struct slot *s, char cmd)
{
	if (s->pid == 0)
		return;
	if (s->ctl < 0 || write(s->ctl, &cmd, 1) != 1)
		kill(s->pid, cmd == CTL_QUIT ? SIGKILL : SIGTERM);
}

static void
gen_send(struct gen *g, char cmd)
{
	int i;

	for (i = 0; i < SLOTS; i++) {
		if (g->slots[i].pid == 0)
			continue;
		if (cmd != CTL_REOPEN)
			g->slots[i].retired = true;
		slot_send(&g->slots[i], cmd);
	}
	if (cmd != CTL_REOPEN)
		for (i = 0; i < SLOTS; i++)
			g->slots[i].respawn_at = 0;
}

/* In the child: keep only the control socket and this slot's sockets. */
static void
child_close_fds(struct gen *mine, int slot)
{
	int keep[LISTEN_SOCKETS_MAX * 8];
	size_t n = 0, l, j;
	struct gen *g;
	int i;

	close(sup.sigfd);
	for (g = sup.gens; g != NULL; g = g->next)
		for (i = 0; i < SLOTS; i++)
			if (g->slots[i].ctl >= 0)
				close(g->slots[i].ctl);
	for (l = 0; l < mine->cfg->server.nlisten; l++)
		for (j = 0; j < mine->groups[l].nfds; j++)
			if (listen_slot_takes(mine->groups[l].nfds,
			    mine->wanted, slot, j) &&
			    n < sizeof(keep) / sizeof(keep[0]))
				keep[n++] = mine->groups[l].fds[j];
	listeners_close_except(keep, n);
}

static int
slot_spawn(struct gen *g, int i)
{
	struct slot *s = &g->slots[i];
	struct worker_start ws;
	int sv[2], stripe;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		log_warn("supervisor: socketpair");
		return -1;
	}
	stripe = metrics_stripe_take();
	if ((pid = fork()) == -1) {
		log_warn("supervisor: fork");
		metrics_stripe_release(stripe);
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		child_close_fds(g, i);
		ws.cfg = g->cfg;
		ws.index = i;
		ws.nworkers = g->wanted;
		ws.generation = g->id;
		ws.ctl_fd = sv[1];
		ws.groups = g->groups;
		ws.stripe = stripe;
		ws.app = &gateway_app;
		worker_main(&ws);
	}
	close(sv[1]);
	metrics_stripe_own(stripe, pid, g->id, i);
	s->stripe = stripe;
	s->pid = pid;
	s->ctl = sv[0];
	s->ready = false;
	s->retired = false;
	s->started = now_ms();
	s->respawn_at = 0;
	s->why[0] = '\0';
	s->why_len = 0;
	s->why_open = false;
	log_debug("supervisor: worker %d of generation %u is pid %ld", i,
	    g->id, (long)pid);
	return 0;
}

static void
gen_spawn_all(struct gen *g)
{
	int i;

	for (i = 0; i < g->wanted; i++)
		if (slot_spawn(g, i) == -1)
			g->slots[i].respawn_at = now_ms() + RESPAWN_FIRST_MS;
}

/* What a signal that ended a child most likely means, for the log. */
static const char *
signal_meaning(int sig)
{
	switch (sig) {
	case SIGSEGV:
	case SIGBUS:
	case SIGILL:
	case SIGFPE:
		return ": a crash";
	case SIGABRT:
		return ": an abort, a failed check in agate or a library";
	case SIGKILL:
		return ": killed from outside (kill -9, the OOM killer, or "
		    "agate's own stop deadline)";
	case SIGTERM:
	case SIGINT:
	case SIGQUIT:
		return ": told to stop from outside";
	default:
		return "";
	}
}

/* "exited with code 2 (cannot start)", "was killed by SIGSEGV (signal
 * 11: a crash)": the status and what it means, for the log. */
static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with code %d%s",
		    WEXITSTATUS(status), WEXITSTATUS(status) ==
		    EXIT_CANNOT_START ? " (cannot start: config or "
		    "privileges)" : "");
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by %s (signal %d%s%s)",
		    signame(WTERMSIG(status)), WTERMSIG(status),
		    signal_meaning(WTERMSIG(status)),
		    WCOREDUMP(status) ? ", core dumped" : "");
	else
		snprintf(buf, len, "ended with status %d", status);
}

/* describe_exit(), and the reason the worker gave, if it gave one. */
static void
slot_describe_exit(const struct slot *s, int status, char *buf, size_t len)
{
	size_t n;

	describe_exit(status, buf, len);
	n = strlen(buf);
	if (s->why[0] != '\0' && n < len)
		snprintf(buf + n, len - n, ": %s", s->why);
}

/* An active worker died on its own: respawn, backing off if it loops. */
static void
slot_crashed(struct gen *g, int i, int status, const char *how)
{
	struct slot *s = &g->slots[i];
	uint64_t lived = now_ms() - s->started, delay;

	if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_CANNOT_START) {
		s->failed = true;
		log_errorx("supervisor: worker %d %s; not respawning it", i,
		    how);
		return;
	}
	s->quick_deaths = lived < QUICK_DEATH_MS ? s->quick_deaths + 1 : 0;
	delay = 0;
	if (s->quick_deaths > 0) {
		delay = (uint64_t)RESPAWN_FIRST_MS << (s->quick_deaths < 10 ?
		    s->quick_deaths - 1 : 9);
		if (delay > RESPAWN_MAX_MS)
			delay = RESPAWN_MAX_MS;
		log_warnx("supervisor: worker %d %s %llums after start; "
		    "respawning in %llums", i, how,
		    (unsigned long long)lived, (unsigned long long)delay);
	} else
		log_warnx("supervisor: worker %d %s; respawning", i, how);
	s->respawn_at = now_ms() + delay;
}

/* Tells a generation to go: drain (D) or quit (Q), with a kill backstop. */
static void
gen_retire(struct gen *g, char cmd)
{
	uint64_t grace = cmd == CTL_QUIT ? FAST_STOP_MS :
	    g->cfg->server.drain_timeout_ms + FAST_STOP_MS;

	g->state = GEN_DRAINING;
	g->kill_at = now_ms() + grace;
	gen_send(g, cmd);
}

/*
 * A reload that will not happen.  Listeners only it had bound are
 * closed, unless a newer reload is about to take them (release false).
 */
static void
gen_abort(struct gen *g, const char *why, bool release)
{
	log_errorx("supervisor: reload failed: generation %u %s; still "
	    "serving the previous config", g->id, why);
	gen_retire(g, CTL_QUIT);
	if (g->is_reload)
		metrics_reload(false);
	/* Replaced by a newer reload: that one tells systemd. */
	if (sup.reloading && strcmp(why, "was replaced by a newer one") != 0)
		sup_notify_ready("reload failed");
	if (release)
		sup_release_listeners();
}

static bool
gen_all_failed(const struct gen *g)
{
	int i, failed = 0;

	for (i = 0; i < SLOTS; i++) {
		if (g->slots[i].pid != 0 || g->slots[i].respawn_at != 0)
			return false;
		failed += g->slots[i].failed;
	}
	return failed > 0;
}

static void
child_exited(pid_t pid, int status)
{
	char how[512];
	struct gen *g;
	int i;

	if (pid == sup.upgrade_pid) {
		upgrade_failed(status);
		return;
	}
	for (g = sup.gens; g != NULL; g = g->next)
		for (i = 0; i < SLOTS; i++)
			if (g->slots[i].pid == pid)
				goto found;
	return;
found:
	if (g->slots[i].ctl >= 0) {
		slot_read_ctl(&g->slots[i]);	/* what it said last */
		if (g->slots[i].ctl >= 0)
			close(g->slots[i].ctl);
		g->slots[i].ctl = -1;
	}
	g->slots[i].pid = 0;
	metrics_stripe_release(g->slots[i].stripe);
	g->slots[i].stripe = -1;
	slot_describe_exit(&g->slots[i], status, how, sizeof(how));
	if (g->slots[i].retired || sup.stopping) {
		log_debug("supervisor: worker %d of generation %u %s", i,
		    g->id, how);
	} else if (g->state == GEN_STARTING) {
		char why[sizeof(how) + 64];

		snprintf(why, sizeof(why), "lost worker %d before it was "
		    "ready: it %s", i, how);
		gen_abort(g, why, true);
	} else {
		slot_crashed(g, i, status, how);
		if (gen_all_failed(g)) {
			log_errorx("supervisor: no worker can start; stopping");
			sup.exit_code = EXIT_CANNOT_START;
			sup_fast();
		}
	}
	if (g->state == GEN_DRAINING && gen_live(g) == 0) {
		log_info("supervisor: generation %u has finished", g->id);
		gen_free(g);
	}
}

static void
sup_reap(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		child_exited(pid, status);
}

/* -- reload ------------------------------------------------------------ */

static void
sup_apply_logging(const struct config *cfg)
{
	log_level = (enum log_level)cfg->log_level;
	if (log_open(cfg->log_error) == -1)
		log_warn("supervisor: cannot open error log %s",
		    cfg->log_error);
}

/* Writes the pid file the config names (and drops one it no longer does). */
static void
sup_pid_file(const struct config *cfg)
{
	const char *want = cfg->server.pid_file;

	/* During a binary upgrade the names belong to the two agates: a
	 * changed pid_file waits until the upgrade is over. */
	if (sup.upgrade_pid > 0)
		return;
	if (sup.pid_file != NULL && want != NULL &&
	    strcmp(sup.pid_file, want) == 0)
		return;
	if (sup.pid_file != NULL) {
		pidfile_remove(sup.pid_file);
		free(sup.pid_file);
		sup.pid_file = NULL;
	}
	if (want == NULL)
		return;
	if (pidfile_write(want) == -1) {
		log_warn("supervisor: cannot write pid file %s", want);
		return;
	}
	sup.pid_file = strdup(want);
}

/* All workers of a reload are up: they serve, the previous ones drain. */
static void
gen_promote(struct gen *g)
{
	struct gen *o;

	for (o = sup.gens; o != NULL; o = o->next) {
		if (o == g)
			continue;
		if (o->state == GEN_ACTIVE) {
			gen_retire(o, CTL_DRAIN);
		} else if (o->state == GEN_DRAINING && gen_live(o) > 0) {
			/* At most two generations: the oldest goes now. */
			log_info("supervisor: generation %u is still draining; "
			    "closing it", o->id);
			gen_retire(o, CTL_QUIT);
		}
	}
	g->state = GEN_ACTIVE;
	sup_apply_logging(g->cfg);
	sup_pid_file(g->cfg);
	sup_release_listeners();
	log_info("supervisor: reload done: generation %u serves with %d "
	    "worker%s", g->id, g->wanted, log_plural(g->wanted));
	if (g->is_reload)
		metrics_reload(true);
	if (sup.reloading)
		sup_notify_ready("reloaded");
}

/*
 * The cache's shared memory is made once, before the first workers that
 * need it, and kept across reloads (its entries with it): a reload that
 * changes cache.memory keeps the size until agate restarts or upgrades
 * (USR2), and says so.
 */
static void
sup_cache(const struct config *cfg)
{
	static uint64_t made;

	if (!cfg->cache_enabled)
		return;
	if (store_size() == 0) {
		if (store_init(cfg->cache_memory) == -1) {
			log_warn("supervisor: cache: cannot map %llu bytes of "
			    "shared memory; caching routes are not cached",
			    (unsigned long long)cfg->cache_memory);
			return;
		}
		made = cfg->cache_memory;
		log_info("supervisor: cache: %llu MiB of shared memory",
		    (unsigned long long)(made >> 20));
		return;
	}
	if (cfg->cache_memory != made)
		log_warnx("supervisor: cache.memory changed: the cache keeps "
		    "its %llu MiB (and its entries) until agate restarts or "
		    "is upgraded (USR2)", (unsigned long long)(made >> 20));
}

/* One line per upstream: how it will be reached. */
static void
sup_log_upstreams(const struct config *cfg)
{
	static const char *const transports[] = { "auto", "native", "curl" };
	static const char *const balances[] = {
		"round_robin", "least_request", "random"
	};
	size_t i, j, native, h2;

	for (i = 0; i < cfg->nupstreams; i++) {
		const struct upstream_cfg *u = &cfg->upstreams[i];

		for (j = native = h2 = 0; j < u->nservers; j++) {
			native += config_server_native(u, &u->servers[j]);
			h2 += config_server_h2(u, &u->servers[j]);
		}
		log_info("supervisor: upstream %s: %zu server%s, %s, transport "
		    "%s (%zu native, %zu native HTTP/2, %zu libcurl)", u->name,
		    u->nservers, log_plural((long long)u->nservers),
		    balances[u->balance], transports[u->transport], native, h2,
		    u->nservers - native - h2);
		for (j = 0; j < u->nservers; j++)
			if (u->servers[j].https && !u->tls_verify) {
				log_warnx("supervisor: upstream %s: tls.verify "
				    "is false: the certificates of its https "
				    "servers are NOT checked", u->name);
				break;
			}
	}
}

/*
 * Binds what cfg needs for `wanted` workers and makes a generation on it
 * (not spawned yet).  On failure says why and leaves everything as it
 * was; the caller still owns cfg then.
 */
static struct gen *
sup_generation(struct config *cfg, int wanted, enum gen_state state,
    const char *what)
{
	struct listen_group *groups;
	char err[CONFIG_ERR_MAX];
	struct gen *g;

	groups = calloc(cfg->server.nlisten, sizeof(*groups));
	if (groups == NULL || listeners_acquire(cfg, (size_t)wanted, groups,
	    err, sizeof(err)) == -1) {
		log_errorx("supervisor: %s failed: %s; still serving the "
		    "previous config", what, groups ? err : "out of memory");
		free(groups);
		return NULL;
	}
	if ((g = gen_new(cfg, groups, wanted, state)) == NULL) {
		log_errorx("supervisor: %s failed: out of memory", what);
		free(groups);
		sup_release_listeners();
	}
	return g;
}

/* A reload's or a rescale's generation: it serves once all are ready.
 * Returns 0, or -1 if it could not be started. */
static int
sup_start_generation(struct config *cfg, int wanted, const char *what)
{
	struct gen *g;

	for (g = sup.gens; g != NULL; g = g->next)
		if (g->state == GEN_STARTING)
			gen_abort(g, "was replaced by a newer one", false);
	if ((g = sup_generation(cfg, wanted, GEN_STARTING, what)) == NULL) {
		if (cfg->refs == 0)
			config_free(cfg);
		return -1;
	}
	g->ready_deadline = now_ms() + READY_TIMEOUT_MS;
	gen_spawn_all(g);
	return 0;
}

/*
 * What a reloaded config needs beyond being valid: what `agate -t` checks
 * on the machine (user, pid file folder, log files), and a pid file it
 * names anew must not belong to another running process.
 */
static int
sup_check_reload(const struct config *cfg, char *err, size_t errlen)
{
	const char *want = cfg->server.pid_file;

	if (config_env_check(cfg, err, errlen) == -1)
		return -1;
	if (want != NULL && sup.upgrade_pid <= 0 && (sup.pid_file == NULL ||
	    strcmp(sup.pid_file, want) != 0) &&
	    pidfile_check(want, err, errlen) == -1)
		return -1;
	return 0;
}

static void
sup_reload(void)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	struct gen *g;

	if (sup.stopping)
		return;
	log_info("supervisor: reloading %s", sup.conf_path);
	sd_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
	    (unsigned long long)now_ms() * 1000);
	sup.reloading = true;
	if ((cfg = config_load(sup.conf_path, err, sizeof(err))) == NULL ||
	    sup_check_reload(cfg, err, sizeof(err)) == -1) {
		log_errorx("supervisor: reload failed: %s; still serving the "
		    "previous config", err);
		config_free(cfg);
		metrics_reload(false);
		sup_notify_ready("reload failed (bad config)");
		return;
	}
	metrics_assign(cfg);
	sup_cache(cfg);
	if ((g = gen_active()) != NULL)
		shared_inherit(cfg, g->cfg);
	config_warn_ineffective(cfg);
	sup_log_upstreams(cfg);
	if (sup_start_generation(cfg, config_workers(cfg), "reload") == 0) {
		for (g = sup.gens; g != NULL; g = g->next)
			if (g->state == GEN_STARTING)
				g->is_reload = true;
		return;
	}
	metrics_reload(false);
	sup_notify_ready("reload failed");
}

static bool
gen_all_ready(const struct gen *g)
{
	int i;

	for (i = 0; i < g->wanted; i++)
		if (g->slots[i].pid == 0 || !g->slots[i].ready)
			return false;
	return true;
}

static void
gen_check_ready(struct gen *g)
{
	if (gen_all_ready(g))
		gen_promote(g);
	else if (now_ms() >= g->ready_deadline)
		gen_abort(g, "did not get ready in time", true);
}

/* -- other signals ----------------------------------------------------- */

static uint64_t
stop_budget_ms(void)
{
	uint64_t most = 0, t;
	struct gen *g;

	for (g = sup.gens; g != NULL; g = g->next) {
		t = g->cfg->server.shutdown_delay_ms +
		    g->cfg->server.drain_timeout_ms;
		if (t > most)
			most = t;
	}
	return most + FAST_STOP_MS;
}

static void
sup_graceful(void)
{
	struct gen *g;

	if (sup.stopping) {
		log_info("supervisor: second stop signal: stopping now");
		sup_fast();
		return;
	}
	log_info("supervisor: graceful stop");
	sup_notify_stopping("draining");
	sup.stopping = true;
	sup.kill_at = now_ms() + stop_budget_ms();
	for (g = sup.gens; g != NULL; g = g->next)
		gen_send(g, CTL_STOP);
}

static void
sup_fast(void)
{
	struct gen *g;

	if (sup.fast)
		return;
	log_info("supervisor: fast stop");
	sup_notify_stopping("stopping");
	sup.stopping = sup.fast = true;
	sup.kill_at = now_ms() + FAST_STOP_MS;
	for (g = sup.gens; g != NULL; g = g->next)
		gen_send(g, CTL_QUIT);
}

static void
sup_reopen(void)
{
	struct gen *g;

	if (log_reopen() == -1)
		log_warn("supervisor: reopen error log");
	for (g = sup.gens; g != NULL; g = g->next)
		gen_send(g, CTL_REOPEN);
}

/*
 * USR2, nginx's binary upgrade: start the agate binary found at the path
 * this one was started from (a new version, once installed), handing it
 * every listening socket through AGATE_LISTEN_FDS.  Both serve side by
 * side; QUIT (or TERM) to this one finishes the switch, and if the new
 * one fails to start this one simply goes on.  The pid file moves to
 * PIDFILE.oldbin meanwhile, so that `agate -s` reaches the new one.
 */
static void
sup_upgrade(void)
{
	char *list, oldbin[PATH_MAX];
	int fds[MAX_INHERIT];
	size_t n, i, off = 0, cap;
	sigset_t none;
	pid_t pid;

	if (sup.stopping)
		return;
	if (sup.upgrade_pid > 0) {
		log_warnx("supervisor: SIGUSR2: the new agate (pid %ld) is "
		    "already running; SIGQUIT this one (pid %ld) to finish",
		    (long)sup.upgrade_pid, (long)getpid());
		return;
	}
	n = listeners_fds(fds, MAX_INHERIT);
	cap = n * 12 + 1;
	if ((list = malloc(cap)) == NULL) {
		log_warn("supervisor: USR2");
		return;
	}
	list[0] = '\0';
	for (i = 0; i < n; i++)
		off += (size_t)snprintf(list + off, cap - off, "%s%d",
		    i ? "," : "", fds[i]);
	if (sup.pid_file != NULL) {
		snprintf(oldbin, sizeof(oldbin), "%s.oldbin", sup.pid_file);
		if (rename(sup.pid_file, oldbin) == -1) {
			log_warn("supervisor: USR2: cannot rename %s",
			    sup.pid_file);
			free(list);
			return;
		}
	}
	if ((pid = fork()) == -1) {
		log_warn("supervisor: USR2: fork");
		if (sup.pid_file != NULL)
			rename(oldbin, sup.pid_file);
		free(list);
		return;
	}
	if (pid == 0) {
		for (i = 0; i < n; i++)
			fcntl(fds[i], F_SETFD, 0);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setenv("AGATE_LISTEN_FDS", list, 1);
		execv(sup.exe, sup.argv);
		fprintf(stderr, "agate: USR2: cannot run %s: %s\n", sup.exe,
		    strerror(errno));
		_exit(EXIT_CANNOT_START);
	}
	free(list);
	sup.upgrade_pid = pid;
	if (sup.pid_file != NULL) {
		sup.pid_file_live = sup.pid_file;
		sup.pid_file = strdup(oldbin);
	}
	log_info("supervisor: SIGUSR2: started %s as pid %ld with %zu "
	    "listening socket%s; send SIGQUIT to this agate (pid %ld%s%s) to "
	    "finish the upgrade", sup.exe, (long)pid, n,
	    log_plural((long long)n), (long)getpid(),
	    sup.pid_file ? ", now in " : "", sup.pid_file ? sup.pid_file : "");
}

/*
 * A stop is the service stopping only if no other agate of this
 * upgrade goes on: the old one finishing an upgrade, or the new one
 * rolled back, hands systemd's main-process role to the other instead.
 */
static void
sup_notify_stopping(const char *what)
{
	if (sup.upgrade_pid > 0 && kill(sup.upgrade_pid, 0) == 0) {
		sd_notifyf("MAINPID=%ld\nSTATUS=upgraded; this agate (pid "
		    "%ld) %s", (long)sup.upgrade_pid, (long)getpid(), what);
		return;
	}
	if (sup.upgraded_from > 1 && kill(sup.upgraded_from, 0) == 0) {
		sd_notifyf("MAINPID=%ld\nSTATUS=upgrade rolled back",
		    (long)sup.upgraded_from);
		return;
	}
	sd_notifyf("STOPPING=1\nSTATUS=%s", what);
}

/* The new agate of a USR2 exited: the upgrade failed, we serve on. */
static void
upgrade_failed(int status)
{
	char how[256];

	describe_exit(status, how, sizeof(how));
	log_errorx("supervisor: binary upgrade failed: the new agate (pid "
	    "%ld) %s; still serving", (long)sup.upgrade_pid, how);
	sup.upgrade_pid = 0;
	sd_notifyf("MAINPID=%ld\nSTATUS=upgrade failed; serving",
	    (long)getpid());
	if (sup.pid_file_live != NULL) {
		if (rename(sup.pid_file, sup.pid_file_live) == -1)
			log_warn("supervisor: cannot rename %s back",
			    sup.pid_file);
		free(sup.pid_file);
		sup.pid_file = sup.pid_file_live;
		sup.pid_file_live = NULL;
	}
}

/* Sockets systemd or an upgrading agate handed over. */
static void
sup_inherit(void)
{
	int fds[MAX_INHERIT], n;
	const char *e = getenv("AGATE_LISTEN_FDS");
	char *end;

	if ((n = sd_listen_fds_take(fds, MAX_INHERIT)) > 0)
		listeners_adopt(fds, (size_t)n, "systemd");
	if (e == NULL)
		return;
	for (n = 0; *e != '\0' && n < MAX_INHERIT; ) {
		long fd = strtol(e, &end, 10);

		if (end == e || fd < 3)
			break;
		fds[n++] = (int)fd;
		e = *end == ',' ? end + 1 : end;
	}
	unsetenv("AGATE_LISTEN_FDS");
	sup.upgraded_from = getppid();
	listeners_adopt(fds, (size_t)n, "the agate that started this one");
}

/* Tells systemd (if it is watching) that we serve. */
static void
sup_notify_ready(const char *what)
{
	struct gen *g = gen_active();
	char mainpid[32] = "";

	/* While a new agate of ours runs, it is systemd's main process. */
	if (sup.upgrade_pid <= 0)
		snprintf(mainpid, sizeof(mainpid), "MAINPID=%ld\n",
		    (long)getpid());
	sd_notifyf("READY=1\n%sSTATUS=%s; %d worker%s, generation %u",
	    mainpid, what, g ? g->wanted : 0, log_plural(g ? g->wanted : 0),
	    g ? g->id : 0);
	sup.ready_sent = true;
	sup.reloading = false;
}

/*
 * TTIN/TTOU: the same config on one worker more or fewer, as a new
 * generation (the old one drains), so that every listening socket keeps
 * exactly one acceptor (listeners.c).
 */
static void
sup_scale(int delta)
{
	struct gen *g = gen_active();
	int n;

	if (g == NULL || sup.stopping)
		return;
	n = g->wanted + delta;
	if (n < 1 || n > SLOTS) {
		log_info("supervisor: %s: staying at %d worker%s",
		    signame(delta > 0 ? SIGTTIN : SIGTTOU), g->wanted,
		    log_plural(g->wanted));
		return;
	}
	log_info("supervisor: %s: starting %d worker%s to replace %d",
	    signame(delta > 0 ? SIGTTIN : SIGTTOU), n, log_plural(n),
	    g->wanted);
	sup_start_generation(g->cfg, n, delta > 0 ? "SIGTTIN" : "SIGTTOU");
}

static void
sup_more(void)
{
	sup_scale(1);
}

static void
sup_fewer(void)
{
	sup_scale(-1);
}

/* -- the loop ---------------------------------------------------------- */

static void
sup_signal(void)
{
	struct signalfd_siginfo si;
	size_t i;

	while (read(sup.sigfd, &si, sizeof(si)) == sizeof(si)) {
		for (i = 0; i < NSIGNALS; i++)
			if ((int)si.ssi_signo == sup_signals[i].sig)
				break;
		if (i == NSIGNALS)
			continue;
		if (sup_signals[i].sig != SIGCHLD)
			log_info("supervisor: %s: %s",
			    signame(sup_signals[i].sig), sup_signals[i].what);
		sup_signals[i].action();
	}
}

/* One byte from a worker: a message kind, or its CTL_WHY text. */
static void
slot_ctl_byte(struct slot *s, char c)
{
	if (s->why_open) {
		if (c == '\n')
			s->why_open = false;
		else if (s->why_len < sizeof(s->why) - 1) {
			s->why[s->why_len++] = c;
			s->why[s->why_len] = '\0';
		}
		return;
	}
	switch (c) {
	case CTL_READY:
		s->ready = true;
		break;
	case CTL_WHY:
		s->why_open = true;
		s->why_len = 0;
		s->why[0] = '\0';
		break;
	default:
		log_warnx("supervisor: worker pid %ld sent an unknown control "
		    "byte 0x%02x", (long)s->pid, (unsigned char)c);
		break;
	}
}

/* Reads what the worker sent, until nothing is left; EOF closes. */
static void
slot_read_ctl(struct slot *s)
{
	char buf[256];
	ssize_t n, i;

	for (;;) {
		n = recv(s->ctl, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close(s->ctl);
			s->ctl = -1;
			return;
		}
		for (i = 0; i < n; i++)
			slot_ctl_byte(s, buf[i]);
	}
}

/* A draining generation overstayed (a stuck worker): kill what is left. */
static void
gen_kill(struct gen *g)
{
	int i;

	log_warnx("supervisor: generation %u did not finish draining in "
	    "time; killing its workers", g->id);
	for (i = 0; i < SLOTS; i++)
		if (g->slots[i].pid != 0)
			kill(g->slots[i].pid, SIGKILL);
	g->kill_at = now_ms() + 1000;
}

/* Due respawns and deadlines; returns ms until the next one, or -1. */
static int
sup_timers(void)
{
	uint64_t now = now_ms(), next = UINT64_MAX;
	struct gen *g, *gnext;
	int i;

	for (g = sup.gens; g != NULL; g = gnext) {
		gnext = g->next;
		for (i = 0; i < SLOTS; i++) {
			struct slot *s = &g->slots[i];

			if (s->respawn_at == 0)
				continue;
			if (s->respawn_at <= now) {
				s->respawn_at = 0;
				if (slot_spawn(g, i) == -1)
					s->respawn_at = now + RESPAWN_MAX_MS;
			} else if (s->respawn_at < next)
				next = s->respawn_at;
		}
		if (g->state == GEN_STARTING) {
			gen_check_ready(g);
			if (g->state == GEN_STARTING && g->ready_deadline < next)
				next = g->ready_deadline;
		}
		if (g->state == GEN_DRAINING && gen_live(g) > 0) {
			if (g->kill_at <= now)
				gen_kill(g);
			else if (g->kill_at < next)
				next = g->kill_at;
		}
	}
	if (sup.stopping && sup.kill_at <= now) {
		log_warnx("supervisor: workers did not stop in time; killing");
		for (g = sup.gens; g != NULL; g = g->next)
			for (i = 0; i < SLOTS; i++)
				if (g->slots[i].pid != 0)
					kill(g->slots[i].pid, SIGKILL);
		sup.kill_at = now + 1000;
	}
	if (sup.stopping && sup.kill_at < next)
		next = sup.kill_at;
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)(next - now + 1);
}

static bool
sup_children_left(void)
{
	struct gen *g;

	for (g = sup.gens; g != NULL; g = g->next)
		if (gen_live(g) > 0)
			return true;
	return false;
}

static void
sup_poll(void)
{
	struct pollfd pfd[1 + SLOTS * 3];
	struct slot *who[1 + SLOTS * 3];
	struct gen *g;
	int n = 1, i, timeout;

	timeout = sup_timers();
	pfd[0].fd = sup.sigfd;
	pfd[0].events = POLLIN;
	for (g = sup.gens; g != NULL; g = g->next)
		for (i = 0; i < SLOTS && n < (int)(sizeof(pfd) /
		    sizeof(pfd[0])); i++)
			if (g->slots[i].ctl >= 0) {
				pfd[n].fd = g->slots[i].ctl;
				pfd[n].events = POLLIN;
				who[n++] = &g->slots[i];
			}
	if (poll(pfd, (nfds_t)n, timeout) <= 0)
		return;
	/* Worker messages first: a slot may be freed by the signals. */
	for (i = 1; i < n; i++)
		if (pfd[i].revents != 0 && who[i]->ctl == pfd[i].fd)
			slot_read_ctl(who[i]);
	if (pfd[0].revents & POLLIN)
		sup_signal();
	if (!sup.ready_sent && !sup.stopping && (g = gen_active()) != NULL &&
	    gen_all_ready(g))
		sup_notify_ready("serving");
}

static int
sup_block_signals(void)
{
	sigset_t set;
	size_t i;

	sigemptyset(&set);
	for (i = 0; i < NSIGNALS; i++)
		sigaddset(&set, sup_signals[i].sig);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	sup.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	return sup.sigfd;
}

/* Where this binary lives (for USR2), even if it was replaced since. */
static void
sup_find_exe(char **argv)
{
	ssize_t n = readlink("/proc/self/exe", sup.exe, sizeof(sup.exe) - 1);
	char *del;

	if (n <= 0) {
		snprintf(sup.exe, sizeof(sup.exe), "%s", argv[0]);
		return;
	}
	sup.exe[n] = '\0';
	if ((del = strstr(sup.exe, " (deleted)")) != NULL &&
	    del[10] == '\0')
		*del = '\0';
}

/*
 * Start-up failed (exit 1).  By now the error log may be log.error's
 * file; whoever started agate reads its stderr, so it goes there too,
 * as `agate: reason` like every other start-up error.
 */
static void __attribute__((noreturn))
sup_start_failed(const struct config *cfg, const char *err)
{
	if (cfg->log_error != NULL)
		fprintf(stderr, "agate: %s\n", err);
	fatalx(1, "supervisor: %s", err);
}

int
supervisor_run(const char *conf_path, struct config *cfg, char **argv)
{
	const struct config *keep[1] = { cfg };
	struct listen_group *groups;
	char err[CONFIG_ERR_MAX];
	struct gen *g;

	sup.conf_path = conf_path;
	sup.argv = argv;
	sup_find_exe(argv);
	/* As nginx's "master process": the command line tells two agates
	 * apart.  comm stays the binary's name (ps -C agate). */
	proctitle_set(NULL, "agate: supervisor %s", proctitle_cmdline());
	log_set_role("supervisor");
	log_set_nonblocking();
	if (sup_block_signals() == -1)
		fatal(1, "supervisor: signalfd");
	sup_apply_logging(cfg);
	if (metrics_init() == 0)
		metrics_assign(cfg);
	ratelimit_init();
	sup_cache(cfg);
	if ((groups = calloc(cfg->server.nlisten, sizeof(*groups))) == NULL)
		fatalx(1, "supervisor: out of memory");
	if (cfg->server.pid_file != NULL &&
	    pidfile_check(cfg->server.pid_file, err, sizeof(err)) == -1)
		sup_start_failed(cfg, err);
	sup_inherit();
	if (listeners_acquire(cfg, (size_t)config_workers(cfg), groups, err,
	    sizeof(err)) == -1)
		sup_start_failed(cfg, err);
	listeners_release(keep, 1);	/* inherited, no longer configured */
	if (cfg->server.pid_file != NULL &&
	    pidfile_write(cfg->server.pid_file) == -1) {
		snprintf(err, sizeof(err), "cannot write pid file %s: %s",
		    cfg->server.pid_file, strerror(errno));
		sup_start_failed(cfg, err);
	}
	if (cfg->server.pid_file != NULL)
		sup.pid_file = strdup(cfg->server.pid_file);
	config_warn_ineffective(cfg);
	sup_log_upstreams(cfg);
	if ((g = gen_new(cfg, groups, config_workers(cfg), GEN_ACTIVE)) ==
	    NULL)
		fatalx(1, "supervisor: out of memory");
	log_info("supervisor: agate %s starting %d worker%s (config %s)",
	    PACKAGE_VERSION, g->wanted, log_plural(g->wanted), conf_path);
	gen_spawn_all(g);
	while (!sup.stopping || sup_children_left())
		sup_poll();
	if (sup.pid_file != NULL) {
		pidfile_remove(sup.pid_file);
		free(sup.pid_file);
	}
	log_info("supervisor: stopped");
	while (sup.gens != NULL)
		gen_free(sup.gens);
	listeners_close_all();
	close(sup.sigfd);
	return sup.exit_code;
}
