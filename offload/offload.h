/*
 * The offload pool: CPU-bound work (gzip, password hashes, HMACs) done by
 * helper processes so that a worker's event loop never stalls on it.
 *
 * Each worker forks offload.processes helpers before its event loop
 * exists (offload_init) and feeds them over one pipe each way with the
 * frames of frame.h.  A helper runs one job at a time in a plain blocking
 * loop; jobs wait in the worker's queue (at most queue_limit) until a
 * helper is free, so "least busy" is simply "idle" and a helper that dies
 * takes only its one job with it.  job_timeout bounds a job's wait in the
 * queue and, separately, its run: a helper stuck past it is killed and
 * respawned.  A helper exits when its worker's pipe closes.
 *
 * Job kinds are rows of a table (jobs.c): a kind is one function and one
 * line.  The same functions run inline on the loop where IPC would cost
 * more than the work, and for every job when processes is 0 (a switch for
 * benchmarks, not for production).
 */
#ifndef AGATE_OFFLOAD_H
#define AGATE_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "lib/buf.h"

struct config;
struct event_base;

enum job_kind {
	JOB_GZIP = 1,		/* raw deflate of one piece of a body */
	JOB_CRYPT,		/* a password against a crypt(3) hash */
	JOB_HMAC,		/* HMAC-SHA256 of a body */
	JOB_JSON_MERGE,		/* a fan-out's merged answer (fanout.h) */
	JOB_TEST_SLEEP = 100,	/* test build only: sleep N ms */
	JOB_TEST_EXIT		/* test build only: the helper dies */
};

enum job_status {
	JOB_OK = 0,
	JOB_BAD_INPUT,		/* the function refused its payload */
	JOB_FAILED,		/* it could not do the work (memory...) */
	JOB_UNKNOWN_KIND,	/* no such kind in the helper: a bug */
	/* Made by the worker, never sent by a helper. */
	JOB_TIMEOUT,		/* past job_timeout, queued or running */
	JOB_LOST,		/* its helper died */
	JOB_STOPPED		/* the worker is exiting */
};

/*
 * A job function: reads in[0..n) and appends its result to out.  Returns
 * an enum job_status.  Runs in a helper, or inline on the loop.
 */
typedef int (*job_fn)(const char *in, size_t n, struct buf *out);

struct job_kind_def {
	unsigned	 kind;
	const char	*name;
	job_fn		 run;
};

/* The row for kind, or NULL. */
const struct job_kind_def *jobs_find(unsigned kind);
/*
 * Adds a table of job kinds (ended by a row whose run is NULL) beside the
 * built-in ones: fan-out's merge, the test build's kinds.  Before the
 * helpers are forked, so that they know them.  Returns 0, or -1 when
 * OFFLOAD_KIND_TABLES tables are in already.
 */
#define OFFLOAD_KIND_TABLES	4
int	offload_add_kinds(const struct job_kind_def *);

/* -- gzip pieces (JOB_GZIP) ----------------------------------------------
 * Payload: u32 flags, u32 dictionary length, the dictionary (up to 32 KiB
 * of the bytes before this piece), the piece.  Result: u32 CRC-32 of the
 * piece, then raw deflate data that ends on a byte boundary (or with the
 * final block, under GZ_FINAL), so pieces concatenate into one stream.
 */
#define GZ_FINAL	0x1
#define GZ_DICT_MAX	(32 * 1024)

/* -- crypt (JOB_CRYPT) ---------------------------------------------------
 * Payload: the stored hash, NUL, the password.  Result: "1" if the
 * password matches, "0" if not. */

/* -- hmac (JOB_HMAC) -----------------------------------------------------
 * Payload: u32 secret length, the secret, the data.  Result: the 32-byte
 * HMAC-SHA256. */

/* -- the pool (worker side) --------------------------------------------- */

/*
 * Called with the outcome of a job: status is an enum job_status, and
 * out[0..len) the result (valid during the call only).  Not called for a
 * cancelled job.
 */
typedef void (*offload_done_fn)(void *arg, int status, const char *out,
    size_t len);

struct job;

/* Forks the helpers.  Call before the event loop exists.  -1: failed. */
int	offload_init(const struct config *);
/* Starts watching the helpers on the worker's loop. */
int	offload_start(struct event_base *);
/*
 * Queues a job whose payload is the concatenation of iov (copied).
 * Returns a handle for offload_cancel(), or NULL when the queue is full
 * (queue_limit) or memory runs out: answer 503.  done() always comes
 * later, from the loop, never from inside this call.
 */
struct job *offload_submit(unsigned kind, const struct iovec *iov, int niov,
	    offload_done_fn done, void *arg);
/* Forgets a job: a queued one is dropped, a running one's result ignored. */
void	offload_cancel(struct job *);
/* Runs a job now, on the caller's stack.  Returns its status. */
int	offload_run_inline(unsigned kind, const struct iovec *iov, int niov,
	    struct buf *out);
/* The HTTP status for a job that did not succeed. */
int	offload_http_status(int status);
const char *offload_status_str(int status);
/* Closes the pipes and reaps the helpers (worker exit). */
void	offload_free(void);

struct offload_stats {
	uint64_t	 submitted;
	uint64_t	 done_ok;
	uint64_t	 failed;	/* bad input, failure, unknown kind */
	uint64_t	 timeouts;
	uint64_t	 lost;
	uint64_t	 rejected;	/* queue full */
	uint64_t	 inline_runs;
	uint64_t	 helper_restarts;
	uint32_t	 queued;	/* now */
	uint32_t	 running;	/* now */
};
const struct offload_stats *offload_stats(void);
/* Helpers alive now, and each one's pid (for logs and tests). */
int	offload_helpers(pid_t *pids, int max);

/* -- the helper side (helper.c) ----------------------------------------- */

/* Serves jobs from in, answers on out, until in closes.  Never returns. */
void	helper_main(int in, int out) __attribute__((noreturn));

#endif
