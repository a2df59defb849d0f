/*
 * offload_cost: where doing a job on the loop stops being cheaper than
 * sending it to the pool.  For each input size it measures, for gzip
 * pieces and for HMAC-SHA256:
 *
 *   inline  CPU time of the job run on the calling thread (what the event
 *           loop would spend);
 *   pool    CPU time the calling process spends per job sent to a helper
 *           and answered (framing, copying, two pipe writes and reads, the
 *           loop's wakeups) -- the helper's own CPU is not counted, since
 *           it is not the loop's -- and the wall time of the round trip.
 *
 * Jobs go one at a time, so the figures are per job, not per batch.  Run
 * by `make bench-offload`; the results are in docs/offload.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <event2/event.h>

#include "gateway/config/config.h"
#include "offload/offload.h"

static double
cpu_self(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double
wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct event_base *loop;
static struct iovec job_iov[3];
static unsigned job_kind;
static int left;

static void
one_done(void *arg, int status, const char *out, size_t len)
{
	if (status != JOB_OK) {
		fprintf(stderr, "job failed: %s\n", offload_status_str(status));
		exit(1);
	}
	if (--left == 0) {
		event_base_loopbreak(loop);
		return;
	}
	if (offload_submit(job_kind, job_iov, 3, one_done, NULL) == NULL)
		exit(1);
}

static void
measure(const char *name, unsigned kind, size_t size, const char *data,
    int reps)
{
	static uint32_t gz[2] = { 0, 0 }, klen = 16;
	struct buf out = { 0 };
	double c0, w0, inl, pool_cpu, pool_wall;
	int i;

	job_kind = kind;
	if (kind == JOB_GZIP) {
		job_iov[0] = (struct iovec){ gz, sizeof(gz) };
		job_iov[1] = (struct iovec){ NULL, 0 };
	} else {
		job_iov[0] = (struct iovec){ &klen, 4 };
		job_iov[1] = (struct iovec){ "0123456789abcdef", 16 };
	}
	job_iov[2] = (struct iovec){ (void *)data, size };
	c0 = cpu_self();
	for (i = 0; i < reps; i++) {
		buf_reset(&out);
		offload_run_inline(kind, job_iov, 3, &out);
	}
	inl = (cpu_self() - c0) / reps;
	left = reps;
	c0 = cpu_self();
	w0 = wall();
	if (offload_submit(kind, job_iov, 3, one_done, NULL) == NULL)
		exit(1);
	event_base_dispatch(loop);
	pool_cpu = (cpu_self() - c0) / reps;
	pool_wall = (wall() - w0) / reps;
	printf("| %-5s | %6zu | %8.1f | %8.1f | %8.1f | %s |\n", name, size,
	    inl * 1e6, pool_cpu * 1e6, pool_wall * 1e6,
	    inl > pool_cpu ? "pool" : "inline");
	buf_free(&out);
}

int
main(int argc, char **argv)
{
	static const size_t sizes[] = { 1024, 2048, 4096, 8192, 16384,
	    32768, 65536, 262144 };
	struct config cfg = { 0 };
	size_t max = 262144, i;
	char *text = malloc(max);
	int reps = argc > 1 ? atoi(argv[1]) : 2000;

	/* JSON-like text: what gateways compress. */
	for (i = 0; i < max; i++)
		text[i] = "{\"id\": 1234, \"name\": \"item\", \"tags\": "
		    "[\"a\", \"b\"], \"price\": 12.50},\n"[i % 61] +
		    (char)((i / 61) % 7 == 3 && (i % 61) == 8);
	cfg.offload_processes = 1;
	cfg.offload_queue_limit = 16;
	cfg.offload_job_timeout_ms = 60000;
	if (offload_init(&cfg) == -1 || (loop = event_base_new()) == NULL ||
	    offload_start(loop) == -1) {
		fprintf(stderr, "cannot start the pool\n");
		return 1;
	}
	printf("| job   |  bytes | inline µs | pool: loop CPU µs | "
	    "pool: wall µs | cheaper |\n");
	printf("|-------|-------:|---------:|---------:|---------:|---|\n");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		measure("gzip", JOB_GZIP, sizes[i], text, sizes[i] > 65536 ?
		    reps / 8 : reps);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		measure("hmac", JOB_HMAC, sizes[i], text, reps);
	offload_free();
	event_base_free(loop);
	free(text);
	return 0;
}
