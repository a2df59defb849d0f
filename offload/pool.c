/*
 * The worker's side of the offload pool (see offload.h for the design).
 *
 * A job is copied once, into its own frame buffer, when it is submitted;
 * it waits in a FIFO until a helper is idle, and is then written to that
 * helper straight from its buffer (non-blocking; EV_WRITE finishes what a
 * full pipe refused).  Results are read into the helper's input buffer,
 * decoded as frames arrive in whatever pieces, and matched against the
 * one job the helper runs.  One timeout list (every job waits the same
 * job_timeout) watches both the queue and the running jobs.
 *
 * A helper is lost when its result pipe closes, a write to it fails, it
 * breaks the protocol or it is killed for running past job_timeout: its
 * job fails, its pipes close, SIGCHLD reaps it, and a new one is forked
 * (at once, or with a growing delay if helpers keep dying young).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "gateway/config/config.h"
#include "gateway/metrics/metrics.h"
#include "lib/log.h"
#include "lib/proctitle.h"
#include "lib/signame.h"
#include "offload/frame.h"
#include "offload/offload.h"
#include "worker/loopwatch.h"
#include "worker/timer.h"
#include "worker/worker.h"

#define HELPERS_MAX	64
#define HELPER_NICE	10		/* below the workers */
#define PIPE_SIZE	(1024 * 1024)
#define RESPAWN_MIN_MS	100
#define RESPAWN_MAX_MS	10000
#define YOUNG_MS	1000		/* died sooner: back off */

enum job_state {
	JS_QUEUED,		/* waiting for an idle helper */
	JS_RUNNING,		/* written (or being written) to a helper */
	JS_DONE,		/* inline result waiting for delivery */
	JS_FINISHING		/* inside its done() call */
};

struct helper;

struct job {
	TAILQ_ENTRY(job)	 link;		/* queue or inline list */
	enum job_state		 state;
	uint32_t		 id;
	uint16_t		 kind;
	struct buf		 frame;		/* header + payload */
	offload_done_fn		 done;		/* NULL: cancelled */
	void			*arg;
	struct tnode		 timer;
	struct helper		*helper;	/* JS_RUNNING */
	int			 status;	/* JS_DONE */
};

TAILQ_HEAD(job_q, job);

struct helper {
	int			 slot;
	pid_t			 pid;		/* 0: none */
	int			 to_fd;		/* jobs go out here */
	int			 from_fd;	/* results come back here */
	struct event		 rev;
	struct event		 wev;
	struct event		 respawn_ev;
	bool			 events;	/* rev/wev assigned */
	struct buf		 in;
	struct job		*job;		/* running, or NULL: idle */
	uint64_t		 started_ms;
	uint64_t		 backoff_ms;
	bool			 reaped;	/* SIGCHLD saw it exit */
};

static struct pool {
	struct event_base	*base;
	int			 nhelpers;
	struct helper		 helpers[HELPERS_MAX];
	struct job_q		 queue;
	uint32_t		 queued;
	uint32_t		 queue_limit;
	uint64_t		 job_timeout_ms;
	struct tlist		 t_job;
	struct job_q		 inline_done;	/* processes: 0 */
	struct event		 inline_ev;
	struct event		*sigchld_ev;
	uint32_t		 next_id;
	int			 delivering;	/* inside a done() call */
	bool			 in_submit;	/* inside offload_submit() */
	struct offload_stats	 stats;
	bool			 started;
} pool;

static void	helper_lost(struct helper *, int status, const char *why);
static void	pool_dispatch(void);
static void	helper_read_cb(evutil_socket_t, short, void *);
static void	helper_write_cb(evutil_socket_t, short, void *);

/* -- forking a helper ----------------------------------------------------- */

/* Closes every descriptor but those in keep (sorted, ascending). */
static void
close_all_but(const int *keep, size_t n)
{
	unsigned int from = 3;
	size_t i;

	struct rlimit rl;
	int fd, max;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > 1048576)
		rl.rlim_cur = 1048576;
	max = (int)rl.rlim_cur;
	for (i = 0; i < n; i++) {
		if (keep[i] < (int)from)
			continue;
		if ((unsigned int)keep[i] > from &&
		    close_range(from, (unsigned int)keep[i] - 1, 0) == -1)
			for (fd = (int)from; fd < keep[i]; fd++)
				close(fd);	/* kernels before 5.9 */
		from = (unsigned int)keep[i] + 1;
	}
	if (close_range(from, ~0U, 0) == -1)
		for (fd = (int)from; fd < max; fd++)
			close(fd);
}

static int
int_cmp(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* In the child: shed the worker's state and serve jobs. */
static void __attribute__((noreturn))
helper_child(struct helper *h, int in, int out, pid_t parent)
{
	static const int ignored[] = { SIGINT, SIGQUIT, SIGHUP, SIGUSR1,
	    SIGUSR2, SIGTTIN, SIGTTOU };
	int keep[3] = { in, out, log_fd() };
	char role[32];
	sigset_t none;
	int sig;

	/* Not the worker's control socket: a helper has none. */
	log_set_fatal_hook(NULL);
	/* The worker's handlers write to its libevent's signal pipe. */
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
		signal(ignored[i], SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Client sockets, listeners, the epoll fd: none are ours. */
	qsort(keep, 3, sizeof(int), int_cmp);
	close_all_but(keep, 3);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);		/* the worker died while we forked */
	proctitle_set("agate-helper", "agate: helper %d of worker %d", h->slot,
	    worker.index);
	snprintf(role, sizeof(role), "helper %d.%d", worker.index, h->slot);
	log_set_role(role);
	errno = 0;
	if (nice(HELPER_NICE) == -1 && errno != 0)
		log_warn("helper: nice");
	helper_main(in, out);
}

static int
helper_spawn(struct helper *h)
{
	int jobs[2], results[2];
	pid_t pid, parent = getpid();

	if (pipe2(jobs, O_CLOEXEC) == -1)
		return -1;
	if (pipe2(results, O_CLOEXEC) == -1) {
		close(jobs[0]);
		close(jobs[1]);
		return -1;
	}
	/* Fewer wakeups for big bodies; best effort. */
	fcntl(jobs[1], F_SETPIPE_SZ, PIPE_SIZE);
	fcntl(results[1], F_SETPIPE_SZ, PIPE_SIZE);
	if ((pid = fork()) == -1) {
		close(jobs[0]);
		close(jobs[1]);
		close(results[0]);
		close(results[1]);
		return -1;
	}
	if (pid == 0)
		helper_child(h, jobs[0], results[1], parent);
	close(jobs[0]);
	close(results[1]);
	h->pid = pid;
	h->reaped = false;
	h->to_fd = jobs[1];
	h->from_fd = results[0];
	h->started_ms = now_ms();
	fcntl(h->to_fd, F_SETFL, O_NONBLOCK);
	fcntl(h->from_fd, F_SETFL, O_NONBLOCK);
	return 0;
}

static int
helper_watch(struct helper *h)
{
	event_assign(&h->rev, pool.base, h->from_fd, EV_READ | EV_PERSIST,
	    helper_read_cb, h);
	event_assign(&h->wev, pool.base, h->to_fd, EV_WRITE, helper_write_cb,
	    h);
	h->events = true;
	return event_add(&h->rev, NULL);
}

static void
respawn_cb_run(evutil_socket_t fd, short what, void *arg)
{
	struct helper *h = arg;

	if (h->pid != 0)
		return;
	if (helper_spawn(h) == -1 || helper_watch(h) == -1) {
		log_warn("offload: cannot start helper %d", h->slot);
		if (h->pid > 0) {		/* forked, but not watched */
			kill(h->pid, SIGKILL);
			close(h->to_fd);
			close(h->from_fd);
			h->to_fd = h->from_fd = -1;
		}
		h->backoff_ms = RESPAWN_MAX_MS;
		h->pid = 0;
		event_add(&h->respawn_ev, &(struct timeval){ RESPAWN_MAX_MS /
		    1000, 0 });
		return;
	}
	pool.stats.helper_restarts++;
	log_info("offload: helper %d restarted (pid %ld)", h->slot,
	    (long)h->pid);
	pool_dispatch();
}

static void
respawn_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_OFFLOAD);
	respawn_cb_run(fd, what, arg);
	loopwatch_end();
}

/* A helper is gone: start another, soon or after a backoff. */
static void
helper_schedule_respawn(struct helper *h)
{
	uint64_t lived = now_ms() - h->started_ms, wait = 0;
	struct timeval tv;

	if (lived < YOUNG_MS) {
		h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 :
		    RESPAWN_MIN_MS;
		if (h->backoff_ms > RESPAWN_MAX_MS)
			h->backoff_ms = RESPAWN_MAX_MS;
		wait = h->backoff_ms;
		log_warnx("offload: helper %d died %llu ms after it started; "
		    "next one in %llu ms", h->slot, (unsigned long long)lived,
		    (unsigned long long)wait);
	} else
		h->backoff_ms = 0;
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
	event_add(&h->respawn_ev, &tv);
}

/* -- finishing jobs ------------------------------------------------------- */

static void
job_free(struct job *j)
{
	tnode_del(&j->timer);
	buf_free(&j->frame);
	free(j);
}

static void
job_count(unsigned kind, int status)
{
	metrics_offload_job(kind, status);
	switch (status) {
	case JOB_OK:
		pool.stats.done_ok++;
		break;
	case JOB_TIMEOUT:
		pool.stats.timeouts++;
		break;
	case JOB_LOST:
	case JOB_STOPPED:
		pool.stats.lost++;
		break;
	default:
		pool.stats.failed++;
	}
}

/*
 * Delivers an outcome and frees the job.  Jobs that done() submits are
 * only queued until it returns: out may point into a helper's buffer,
 * which must not change under the caller.
 */
static void
job_finish(struct job *j, int status, const char *out, size_t len)
{
	offload_done_fn done = j->done;
	void *arg = j->arg;

	tnode_del(&j->timer);
	if (pool.in_submit && done != NULL) {
		/* A helper lost inside offload_submit(): done() must come
		 * from the loop, after the caller has its handle. */
		j->state = JS_DONE;
		j->status = status;
		buf_reset(&j->frame);
		TAILQ_INSERT_TAIL(&pool.inline_done, j, link);
		event_active(&pool.inline_ev, EV_TIMEOUT, 0);
		return;
	}
	job_count(j->kind, status);
	if (done == NULL) {
		job_free(j);
		return;
	}
	/* out may be the job's own buffer (inline mode): free it after. */
	j->state = JS_FINISHING;
	pool.delivering++;
	done(arg, status, out, len);
	job_free(j);
	if (--pool.delivering == 0)
		pool_dispatch();
}

/* -- the helper's pipes ---------------------------------------------------- */

/* Writes what the running job still has to send. */
static void
helper_flush(struct helper *h)
{
	struct job *j = h->job;
	ssize_t n;

	while (j != NULL && buf_pending(&j->frame) > 0) {
		n = write(h->to_fd, buf_head(&j->frame),
		    buf_pending(&j->frame));
		if (n > 0) {
			buf_consume(&j->frame, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			event_add(&h->wev, NULL);
			return;
		}
		if (j->frame.off == 0) {
			/* Not a byte of it went: it waits for another. */
			h->job = NULL;
			pool.stats.running--;
			j->state = JS_QUEUED;
			j->helper = NULL;
			TAILQ_INSERT_HEAD(&pool.queue, j, link);
			pool.queued++;
		}
		helper_lost(h, JOB_LOST, "its job pipe is closed");
		return;
	}
}

static void
helper_write_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_OFFLOAD);
	helper_flush(arg);
	loopwatch_end();
}

/* One result frame from h.  Returns -1 once h is lost. */
static int
helper_result(struct helper *h, const struct frame *f)
{
	struct job *j = h->job;

	if (j == NULL || f->id != j->id || f->kind != j->kind ||
	    f->status == JOB_TIMEOUT || f->status > JOB_STOPPED) {
		log_warnx("offload: helper %d (pid %ld) answered job %u "
		    "(kind %u, status %u) while running %u: killed", h->slot,
		    (long)h->pid, f->id, f->kind, f->status,
		    j != NULL ? j->id : 0);
		helper_lost(h, JOB_LOST, "protocol error");
		return -1;
	}
	h->job = NULL;
	pool.stats.running--;
	if (f->status == JOB_UNKNOWN_KIND)
		log_warnx("offload: helper %d does not know job kind %u",
		    h->slot, f->kind);
	job_finish(j, f->status, f->payload, f->len);
	return 0;
}

static void
helper_read_cb_run(evutil_socket_t fd, short what, void *arg)
{
	struct helper *h = arg;
	struct frame f;
	size_t used;
	ssize_t n;

	if (buf_reserve(&h->in, 64 * 1024) == -1) {
		helper_lost(h, JOB_FAILED, "out of memory");
		return;
	}
	n = read(fd, h->in.data + h->in.len, h->in.cap - h->in.len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		helper_lost(h, JOB_LOST, n == 0 ? "it exited" :
		    strerror(errno));
		return;
	}
	h->in.len += (size_t)n;
	for (;;) {
		switch (frame_decode(buf_head(&h->in), buf_pending(&h->in), &f,
		    &used)) {
		case FRAME_MORE:
			/* A big result: make room for all of it at once. */
			if (buf_pending(&h->in) >= FRAME_HEADER &&
			    buf_reserve(&h->in, FRAME_HEADER + f.len -
			    buf_pending(&h->in)) == -1)
				helper_lost(h, JOB_FAILED, "out of memory");
			return;
		case FRAME_TOO_BIG:
			helper_lost(h, JOB_LOST, "it sent an oversize frame");
			return;
		case FRAME_OK:
			if (helper_result(h, &f) == -1 || h->from_fd != fd)
				return;		/* lost on the way */
			buf_consume(&h->in, used);
			break;
		}
	}
}

static void
helper_read_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_OFFLOAD);
	helper_read_cb_run(fd, what, arg);
	loopwatch_end();
}

/*
 * Ends a helper: its job fails with status, its pipes close, and a new
 * helper is scheduled.  SIGCHLD reaps the process.
 */
static void
helper_lost(struct helper *h, int status, const char *why)
{
	struct job *j = h->job;

	log_warnx("offload: helper %d (pid %ld) lost: %s%s", h->slot,
	    (long)h->pid, why, j != NULL ? "; its job fails" : "");
	if (h->pid > 0 && !h->reaped)
		kill(h->pid, SIGKILL);	/* it may be alive but broken */
	if (h->events) {
		event_del(&h->rev);
		event_del(&h->wev);
		h->events = false;
	}
	close(h->to_fd);
	close(h->from_fd);
	h->to_fd = h->from_fd = -1;
	h->pid = 0;
	buf_free(&h->in);
	h->job = NULL;
	if (pool.started)
		helper_schedule_respawn(h);
	if (j != NULL) {
		pool.stats.running--;
		job_finish(j, status, NULL, 0);
	}
	pool_dispatch();
}

static void
sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
	int st;
	pid_t pid;

	loopwatch_begin(LW_OFFLOAD);
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (int i = 0; i < pool.nhelpers; i++)
			if (pool.helpers[i].pid == pid)
				pool.helpers[i].reaped = true;
		if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
			log_warnx("offload: helper pid %ld was killed by %s",
			    (long)pid, signame(WTERMSIG(st)));
		else if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
			log_warnx("offload: helper pid %ld exited with %d",
			    (long)pid, WEXITSTATUS(st));
	}
	loopwatch_end();
}

/* -- dispatch ------------------------------------------------------------- */

static struct helper *
pool_idle_helper(void)
{
	int i;

	for (i = 0; i < pool.nhelpers; i++)
		if (pool.helpers[i].pid > 0 && pool.helpers[i].job == NULL)
			return &pool.helpers[i];
	return NULL;
}

static void
pool_dispatch(void)
{
	struct helper *h;
	struct job *j;

	if (pool.delivering > 0 || (pool.base != NULL && !pool.started))
		return;			/* job_finish() comes back; or exiting */
	while ((j = TAILQ_FIRST(&pool.queue)) != NULL &&
	    (h = pool_idle_helper()) != NULL) {
		TAILQ_REMOVE(&pool.queue, j, link);
		pool.queued--;
		pool.stats.running++;
		j->state = JS_RUNNING;
		j->helper = h;
		h->job = j;
		tlist_add(&pool.t_job, &j->timer);	/* now its run */
		helper_flush(h);
	}
	pool.stats.queued = pool.queued;
	metrics_offload_queue(pool.queued, pool.stats.running);
}

static void
job_timeout_cb(struct tnode *n)
{
	struct job *j = (struct job *)((char *)n - offsetof(struct job,
	    timer));
	struct helper *h = j->helper;

	if (j->state == JS_QUEUED) {
		TAILQ_REMOVE(&pool.queue, j, link);
		pool.queued--;
		pool.stats.queued = pool.queued;
		log_warnx("offload: a %s job waited past job_timeout for a "
		    "helper", jobs_find(j->kind) ? jobs_find(j->kind)->name :
		    "?");
		job_finish(j, JOB_TIMEOUT, NULL, 0);
		return;
	}
	if (j->state == JS_RUNNING && h != NULL && h->job == j)
		helper_lost(h, JOB_TIMEOUT, "its job ran past job_timeout, "
		    "so it was killed");
}

/* -- inline mode (processes: 0) ------------------------------------------- */

static void
inline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct job *j;

	loopwatch_begin(LW_OFFLOAD);
	while ((j = TAILQ_FIRST(&pool.inline_done)) != NULL) {
		TAILQ_REMOVE(&pool.inline_done, j, link);
		job_finish(j, j->status, j->frame.data, j->frame.len);
	}
	loopwatch_end();
}

/* -- the API -------------------------------------------------------------- */

int
offload_run_inline(unsigned kind, const struct iovec *iov, int niov,
    struct buf *out)
{
	const struct job_kind_def *k = jobs_find(kind);
	struct buf in = { 0 };
	int i, st;

	if (k == NULL)
		return JOB_UNKNOWN_KIND;
	pool.stats.inline_runs++;
	if (niov == 1)
		return k->run(iov[0].iov_base, iov[0].iov_len, out);
	for (i = 0; i < niov; i++)
		if (buf_append(&in, iov[i].iov_base, iov[i].iov_len) == -1) {
			buf_free(&in);
			return JOB_FAILED;
		}
	st = k->run(in.data, in.len, out);
	buf_free(&in);
	return st;
}

struct job *
offload_submit(unsigned kind, const struct iovec *iov, int niov,
    offload_done_fn done, void *arg)
{
	unsigned char hdr[FRAME_HEADER];
	struct frame f = { 0 };
	struct job *j;
	size_t len = 0;
	int i, rc = 0;

	for (i = 0; i < niov; i++)
		len += iov[i].iov_len;
	if (len > FRAME_MAX || (pool.nhelpers > 0 &&
	    pool.queued >= pool.queue_limit)) {
		pool.stats.rejected++;
		return NULL;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		pool.stats.rejected++;
		return NULL;
	}
	j->kind = (uint16_t)kind;
	j->id = ++pool.next_id;
	j->done = done;
	j->arg = arg;
	pool.stats.submitted++;
	if (pool.nhelpers == 0) {
		/* The comparison mode: the work blocks the loop, here. */
		j->state = JS_DONE;
		j->status = offload_run_inline(kind, iov, niov, &j->frame);
		TAILQ_INSERT_TAIL(&pool.inline_done, j, link);
		event_active(&pool.inline_ev, EV_TIMEOUT, 0);
		return j;
	}
	f.len = (uint32_t)len;
	f.id = j->id;
	f.kind = j->kind;
	frame_header(&f, hdr);
	rc |= buf_reserve(&j->frame, FRAME_HEADER + len);
	rc |= buf_append(&j->frame, hdr, sizeof(hdr));
	for (i = 0; i < niov; i++)
		rc |= buf_append(&j->frame, iov[i].iov_base, iov[i].iov_len);
	if (rc != 0) {
		pool.stats.rejected++;
		job_free(j);
		return NULL;
	}
	j->state = JS_QUEUED;
	TAILQ_INSERT_TAIL(&pool.queue, j, link);
	pool.queued++;
	tlist_add(&pool.t_job, &j->timer);	/* its wait */
	pool.in_submit = true;
	pool_dispatch();
	pool.in_submit = false;
	return j;
}

void
offload_cancel(struct job *j)
{
	if (j == NULL)
		return;
	switch (j->state) {
	case JS_QUEUED:
		TAILQ_REMOVE(&pool.queue, j, link);
		pool.queued--;
		pool.stats.queued = pool.queued;
		job_free(j);
		break;
	case JS_RUNNING:
		/* Its helper is busy with it either way: let it finish
		 * (or time out) and drop the answer. */
		j->done = NULL;
		break;
	case JS_DONE:
		TAILQ_REMOVE(&pool.inline_done, j, link);
		job_free(j);
		break;
	case JS_FINISHING:
		break;			/* job_finish() frees it */
	}
}

int
offload_http_status(int status)
{
	switch (status) {
	case JOB_TIMEOUT:
		return 504;
	case JOB_LOST:
	case JOB_STOPPED:
		return 503;
	default:
		return 500;
	}
}

const char *
offload_status_str(int status)
{
	static const char *const names[] = { "ok", "bad input", "failed",
	    "unknown kind", "timed out", "helper died", "worker stopping" };

	if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[status];
}

const struct offload_stats *
offload_stats(void)
{
	return &pool.stats;
}

int
offload_helpers(pid_t *pids, int max)
{
	int i, n = 0;

	for (i = 0; i < pool.nhelpers && n < max; i++)
		if (pool.helpers[i].pid > 0)
			pids[n++] = pool.helpers[i].pid;
	return n;
}

int
offload_init(const struct config *cfg)
{
	int i;

	memset(&pool, 0, sizeof(pool));
	TAILQ_INIT(&pool.queue);
	TAILQ_INIT(&pool.inline_done);
	pool.nhelpers = cfg->offload_processes;
	if (pool.nhelpers > HELPERS_MAX)
		pool.nhelpers = HELPERS_MAX;
	pool.queue_limit = (uint32_t)cfg->offload_queue_limit;
	pool.job_timeout_ms = cfg->offload_job_timeout_ms;
	for (i = 0; i < pool.nhelpers; i++) {
		struct helper *h = &pool.helpers[i];

		h->slot = i;
		h->to_fd = h->from_fd = -1;
		if (helper_spawn(h) == -1) {
			log_warn("offload: cannot start helper %d", i);
			return -1;
		}
	}
	return 0;
}

int
offload_start(struct event_base *base)
{
	int i;

	pool.base = base;
	tlist_init(&pool.t_job, base, pool.job_timeout_ms, job_timeout_cb);
	event_assign(&pool.inline_ev, base, -1, 0, inline_cb, NULL);
	if ((pool.sigchld_ev = evsignal_new(base, SIGCHLD, sigchld_cb,
	    NULL)) == NULL || evsignal_add(pool.sigchld_ev, NULL) == -1)
		return -1;
	for (i = 0; i < pool.nhelpers; i++) {
		struct helper *h = &pool.helpers[i];

		evtimer_assign(&h->respawn_ev, base, respawn_cb, h);
		if (helper_watch(h) == -1)
			return -1;
	}
	pool.started = true;
	/* Helpers that died before the loop existed (SIGCHLD was not
	 * watched yet). */
	sigchld_cb(SIGCHLD, 0, NULL);
	return 0;
}

void
offload_free(void)
{
	struct job *j;
	int i;

	if (pool.base == NULL)
		return;
	pool.started = false;		/* no respawns from here on */
	while ((j = TAILQ_FIRST(&pool.queue)) != NULL) {
		TAILQ_REMOVE(&pool.queue, j, link);
		pool.queued--;
		job_finish(j, JOB_STOPPED, NULL, 0);
	}
	inline_cb(-1, 0, NULL);
	for (i = 0; i < pool.nhelpers; i++) {
		struct helper *h = &pool.helpers[i];
		pid_t pid = h->pid;

		evtimer_del(&h->respawn_ev);
		if (pid <= 0)
			continue;
		if (h->job != NULL) {
			h->job->done = NULL;
			if (!h->reaped)
				kill(pid, SIGKILL);	/* mid-job: no wait */
		}
		if (h->events) {
			event_del(&h->rev);
			event_del(&h->wev);
			h->events = false;
		}
		close(h->to_fd);		/* an idle helper exits */
		close(h->from_fd);
		if (h->job != NULL) {
			job_free(h->job);
			h->job = NULL;
		}
		buf_free(&h->in);
		h->pid = 0;
		waitpid(pid, NULL, 0);
	}
	tlist_free(&pool.t_job);
	event_del(&pool.inline_ev);
	if (pool.sigchld_ev != NULL)
		event_free(pool.sigchld_ev);
	pool.sigchld_ev = NULL;
	pool.base = NULL;
}
