/*
 * `agate -s status`: asks the running agate how it is, from the shell.
 * The numbers live in the workers' shared segment and any worker serves
 * them on the admin listener as GET /status (gateway/metrics/metrics.c),
 * so the command reads the config for admin.listen, makes one blocking
 * HTTP/1.0 request with a 2 s deadline, and prints the JSON as a short
 * table: the supervisor, then one line per worker.
 *
 * Blocking is right here: this is a command-line tool, not the loop.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "gateway/config/config.h"
#include "supervisor/supervisor.h"

#define STATUS_DEADLINE_MS	2000
#define STATUS_MAX		(4 * 1024 * 1024)

static const char request[] = "GET /status HTTP/1.0\r\n"
    "Host: agate\r\nUser-Agent: agate -s status\r\n\r\n";

static int
statuscmd_ms_left(const struct timespec *start)
{
	struct timespec now;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (now.tv_sec - start->tv_sec) * 1000 +
	    (now.tv_nsec - start->tv_nsec) / 1000000;
	return ms >= STATUS_DEADLINE_MS ? 0 : (int)(STATUS_DEADLINE_MS - ms);
}

/* Waits for fd to be ready for ev until the deadline: 0, or -1 (errno). */
static int
statuscmd_wait(int fd, short ev, const struct timespec *start)
{
	struct pollfd p = { fd, ev, 0 };
	int left, n;

	do {
		if ((left = statuscmd_ms_left(start)) == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		n = poll(&p, 1, left);
	} while (n < 0 && errno == EINTR);
	if (n == 0)
		errno = ETIMEDOUT;
	return n > 0 ? 0 : -1;
}

static int
statuscmd_connect(const struct config *cfg, const struct timespec *start)
{
	socklen_t len = sizeof(int);
	int fd, err = 0;

	fd = socket(cfg->admin_sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (connect(fd, (const struct sockaddr *)&cfg->admin_sa,
	    cfg->admin_salen) == 0)
		return fd;
	if (errno == EINPROGRESS && statuscmd_wait(fd, POLLOUT, start) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0) {
		if (err == 0)
			return fd;
		errno = err;
	}
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

/* The whole answer (the server closes after an HTTP/1.0 request). */
static char *
statuscmd_fetch(const struct config *cfg, size_t *lenp)
{
	struct timespec start;
	size_t len = 0, cap = 65536, off = 0;
	char *b = NULL, *nb;
	ssize_t n;
	int fd, err;

	clock_gettime(CLOCK_MONOTONIC, &start);
	if ((fd = statuscmd_connect(cfg, &start)) == -1)
		return NULL;
	while (off < sizeof(request) - 1) {
		n = write(fd, request + off, sizeof(request) - 1 - off);
		if (n > 0)
			off += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EINTR) ||
		    statuscmd_wait(fd, POLLOUT, &start) == -1)
			goto fail;
	}
	if ((b = malloc(cap + 1)) == NULL)
		goto fail;
	for (;;) {
		if (len == cap) {
			if (cap >= STATUS_MAX || (nb = realloc(b, cap * 2 + 1))
			    == NULL) {
				errno = EMSGSIZE;
				goto fail;
			}
			b = nb;
			cap *= 2;
		}
		n = read(fd, b + len, cap - len);
		if (n > 0)
			len += (size_t)n;
		else if (n == 0)
			break;
		else if ((errno != EAGAIN && errno != EINTR) ||
		    statuscmd_wait(fd, POLLIN, &start) == -1)
			goto fail;
	}
	close(fd);
	b[len] = '\0';
	*lenp = len;
	return b;
fail:
	err = errno;
	free(b);
	close(fd);
	errno = err;
	return NULL;
}

/* A count from /status; -1 for what is missing or not a sane number. */
static json_int_t
num(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	double d;

	if (json_is_integer(v))
		return json_integer_value(v);
	if (!json_is_real(v))
		return -1;
	d = json_real_value(v);
	return d > -1e15 && d < 1e15 ? (json_int_t)d : -1;
}

static void
statuscmd_workers(FILE *out, const json_t *workers)
{
	const json_t *w;
	char off[48];
	size_t i;

	fprintf(out, "%8s %4s %11s %9s %7s %14s %10s %14s\n", "worker",
	    "gen", "connections", "in flight", "tunnels", "offload q/run",
	    "lag p99 ms", "slow callbacks");
	json_array_foreach(workers, i, w) {
		const json_t *p99 = json_object_get(w, "loop_lag_p99_ms");

		snprintf(off, sizeof(off), "%lld/%lld",
		    (long long)num(w, "offload_queued"),
		    (long long)num(w, "offload_running"));
		fprintf(out, "%8lld %4lld %11lld %9lld %7lld %14s %10g %14lld\n",
		    (long long)num(w, "pid"), (long long)num(w, "generation"),
		    (long long)num(w, "connections"),
		    (long long)num(w, "in_flight"), (long long)num(w, "tunnels"),
		    off, json_is_number(p99) ? json_number_value(p99) : -1.0,
		    (long long)num(w, "slow_callbacks"));
	}
}

int
statuscmd_print(const char *resp, size_t len, FILE *out, char *err,
    size_t errlen)
{
	const char *body;
	json_t *st, *workers, *ver;
	json_error_t jerr;
	int code;

	if (len < 12 || sscanf(resp, "HTTP/1.%*1[01] %3d", &code) != 1 ||
	    (body = memmem(resp, len, "\r\n\r\n", 4)) == NULL) {
		snprintf(err, errlen, "the admin listener did not answer HTTP");
		return -1;
	}
	if (code != 200) {
		snprintf(err, errlen, "the admin listener answered /status "
		    "with %d", code);
		return -1;
	}
	body += 4;
	st = json_loadb(body, len - (size_t)(body - resp), 0, &jerr);
	workers = json_object_get(st, "workers");
	ver = json_object_get(st, "version");
	if (!json_is_object(st) || !json_is_array(workers) ||
	    !json_is_string(ver)) {
		snprintf(err, errlen, "/status is not what agate sends%s%s",
		    st == NULL ? ": " : "", st == NULL ? jerr.text : "");
		json_decref(st);
		return -1;
	}
	fprintf(out, "agate %s, supervisor pid %lld, up %lld s, config "
	    "generation %lld, %zu worker%s\n", json_string_value(ver),
	    (long long)num(st, "pid"), (long long)num(st, "uptime_s"),
	    (long long)num(st, "generation"), json_array_size(workers),
	    json_array_size(workers) == 1 ? "" : "s");
	statuscmd_workers(out, workers);
	json_decref(st);
	return 0;
}

int
statuscmd_run(const char *path)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	size_t len;
	char *resp;
	int rc;

	if ((cfg = config_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "agate: %s\n", err);
		return 1;
	}
	if (!cfg->admin_enabled || cfg->admin_listen == NULL) {
		fprintf(stderr, "agate: %s has no admin.listen, so there is no "
		    "/status to ask; add one (e.g. admin: {listen: "
		    "\"127.0.0.1:9901\"}) and reload\n", path);
		config_free(cfg);
		return 1;
	}
	if ((resp = statuscmd_fetch(cfg, &len)) == NULL) {
		fprintf(stderr, "agate: cannot get /status from the admin "
		    "listener %s: %s (is agate running?)\n", cfg->admin_listen,
		    strerror(errno));
		config_free(cfg);
		return 1;
	}
	rc = statuscmd_print(resp, len, stdout, err, sizeof(err));
	if (rc == -1)
		fprintf(stderr, "agate: %s: %s\n", cfg->admin_listen, err);
	free(resp);
	config_free(cfg);
	return rc == -1 ? 1 : 0;
}
