/*
 * What the test build of agate (agate-test, `make check` only) adds to
 * the real one: job kinds that misbehave on purpose, and a handler for
 * paths under /_agate_test/ that submits them, so the integration tests
 * can make a helper hang or die on demand.  None of this is in `agate`.
 *
 *   GET /_agate_test/sleep/MS   a job that sleeps MS ms in a helper:
 *                               200 when done, or the job's error status
 *   GET /_agate_test/exit       a job whose helper exits mid-job (503)
 *   GET /_agate_test/helpers    {"pids":[...], "stats":{...}} of this worker
 *   GET /_agate_test/busy/MS    spins MS ms on the worker's loop, in the
 *                               callback that read the request, then
 *                               answers 200: a slow callback on demand
 *                               (log.slow_callback)
 *
 * And workers that fail at start, for the supervisor's side of that:
 * while a file named fail-worker-start is in the config's folder, each
 * worker that starts does what the file says -- "exit" (the exit code 2
 * of a worker that cannot start, with a logged reason), "abort" (killed
 * by SIGABRT) -- before it reports ready.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "gateway/gateway.h"
#include "lib/log.h"
#include "offload/offload.h"
#include "tests/testbuild.h"
#include "worker/worker.h"

#define PREFIX "/_agate_test/"

static int
job_sleep(const char *in, size_t n, struct buf *out)
{
	char tmp[16];
	long ms;

	if (n == 0 || n >= sizeof(tmp))
		return JOB_BAD_INPUT;
	memcpy(tmp, in, n);
	tmp[n] = '\0';
	ms = strtol(tmp, NULL, 10);
	usleep((useconds_t)ms * 1000);
	return buf_append(out, "slept", 5) == 0 ? JOB_OK : JOB_FAILED;
}

static int
job_exit(const char *in, size_t n, struct buf *out)
{
	_exit(7);
}

static const struct job_kind_def test_kinds[] = {
	{ JOB_TEST_SLEEP,	"test-sleep",	job_sleep },
	{ JOB_TEST_EXIT,	"test-exit",	job_exit },
	{ 0, NULL, NULL }
};

static void	test_abort(struct request *);

static const struct req_hooks test_hooks = { NULL, NULL, test_abort };

static void
test_abort(struct request *r)
{
	offload_cancel(r->gw);
	r->gw = NULL;
	r->hooks = NULL;
}

static void
test_done(void *arg, int status, const char *out, size_t len)
{
	struct request *r = arg;
	char body[64];

	r->gw = NULL;
	r->hooks = NULL;
	if (status != JOB_OK) {
		req_error(r, offload_http_status(status),
		    offload_status_str(status), NULL);
		return;
	}
	snprintf(body, sizeof(body), "{\"result\":\"%.*s\"}\n", (int)len, out);
	req_respond(r, 200, "application/json", body, strlen(body), NULL);
}

static void
test_submit(struct request *r, unsigned kind, const char *arg, size_t len)
{
	struct iovec iov = { (void *)arg, len };
	struct job *j;

	if ((j = offload_submit(kind, &iov, 1, test_done, r)) == NULL) {
		req_error(r, 503, "the offload queue is full", NULL);
		return;
	}
	r->gw = j;
	r->hooks = &test_hooks;
}

static void
test_helpers(struct request *r)
{
	const struct offload_stats *s = offload_stats();
	pid_t pids[64];
	char body[1024];
	int n = offload_helpers(pids, 64), i, off;

	off = snprintf(body, sizeof(body), "{\"worker\":%ld,\"pids\":[",
	    (long)getpid());
	for (i = 0; i < n && off < 900; i++)
		off += snprintf(body + off, sizeof(body) - (size_t)off,
		    "%s%ld", i ? "," : "", (long)pids[i]);
	snprintf(body + off, sizeof(body) - (size_t)off, "],\"stats\":{"
	    "\"submitted\":%llu,\"ok\":%llu,\"failed\":%llu,\"timeouts\":%llu,"
	    "\"lost\":%llu,\"rejected\":%llu,\"inline\":%llu,"
	    "\"restarts\":%llu,\"queued\":%u,\"running\":%u}}\n",
	    (unsigned long long)s->submitted, (unsigned long long)s->done_ok,
	    (unsigned long long)s->failed, (unsigned long long)s->timeouts,
	    (unsigned long long)s->lost, (unsigned long long)s->rejected,
	    (unsigned long long)s->inline_runs,
	    (unsigned long long)s->helper_restarts, s->queued, s->running);
	req_respond(r, 200, "application/json", body, strlen(body), NULL);
}

static void
test_busy(struct request *r, const char *arg, size_t len)
{
	struct timespec start, now;
	char tmp[16], body[64];
	long ms, spent;

	if (len == 0 || len >= sizeof(tmp)) {
		req_error(r, 400, "busy/MS: MS in milliseconds", NULL);
		return;
	}
	memcpy(tmp, arg, len);
	tmp[len] = '\0';
	if ((ms = strtol(tmp, NULL, 10)) < 0 || ms > 10000) {
		req_error(r, 400, "busy/MS: 0..10000", NULL);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		clock_gettime(CLOCK_MONOTONIC, &now);
		spent = (now.tv_sec - start.tv_sec) * 1000 +
		    (now.tv_nsec - start.tv_nsec) / 1000000;
	} while (spent < ms);
	snprintf(body, sizeof(body), "{\"busy_ms\":%ld}\n", spent);
	req_respond(r, 200, "application/json", body, strlen(body), NULL);
}

static bool
test_handler(struct request *r)
{
	const char *p = r->head.path;
	size_t n = r->head.path_len, plen = strlen(PREFIX);

	if (n < plen || memcmp(p, PREFIX, plen) != 0)
		return false;
	p += plen;
	n -= plen;
	if (n > 6 && memcmp(p, "sleep/", 6) == 0)
		test_submit(r, JOB_TEST_SLEEP, p + 6, n - 6);
	else if (n == 4 && memcmp(p, "exit", 4) == 0)
		test_submit(r, JOB_TEST_EXIT, "", 0);
	else if (n == 7 && memcmp(p, "helpers", 7) == 0)
		test_helpers(r);
	else if (n > 5 && memcmp(p, "busy/", 5) == 0)
		test_busy(r, p + 5, n - 5);
	else
		req_error(r, 404, "no such test path", NULL);
	return true;
}

static void
test_worker_start(const struct worker_start *ws)
{
	char path[4096], what[16] = "";
	FILE *f;

	snprintf(path, sizeof(path), "%s/fail-worker-start", ws->cfg->dir);
	if ((f = fopen(path, "r")) == NULL)
		return;
	if (fgets(what, sizeof(what), f) == NULL)
		what[0] = '\0';
	fclose(f);
	if (strncmp(what, "abort", 5) == 0) {
		setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });
		abort();
	}
	fatalx(EXIT_CANNOT_START, "worker: test: %s says so", path);
}

void
testbuild_install(void)
{
	offload_add_kinds(test_kinds);
	gateway_test_handler = test_handler;
	worker_start_hook = test_worker_start;
}
