/*
 * Access log.  Lines are formatted into a batch buffer and written when
 * it passes 32 KiB or 100 ms after the first line of a batch, so a busy
 * worker pays one write(2) per few hundred requests.  Into a pipe (stdout
 * under a supervisor like systemd or docker) a write is cut at a line
 * boundary below PIPE_BUF, which keeps lines of different workers from
 * interleaving; files are opened O_APPEND, where whole writes never mix.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "worker/accesslog.h"
#include "worker/conn.h"
#include "worker/worker.h"

#define BATCH_BYTES	(32 * 1024)
#define BATCH_MS	100

static int		 al_fd = -1;
static bool		 al_own;	/* we opened it (a file) */
static bool		 al_pipe;
static struct buf	 al_buf;
static struct event	*al_timer;

static int
al_open_target(void)
{
	const struct config *cfg = worker.cfg;
	struct stat st;
	int fd;

	if (cfg->log_access == ACCESS_OFF)
		return -1;
	if (cfg->log_access == ACCESS_STDOUT) {
		fd = STDOUT_FILENO;
		al_own = false;
	} else {
		fd = open(cfg->log_access_file,
		    O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (fd == -1) {
			log_warn("access log: open %s", cfg->log_access_file);
			return -2;
		}
		al_own = true;
	}
	al_pipe = fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) ||
	    S_ISSOCK(st.st_mode));
	return fd;
}

static void
al_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	accesslog_flush();
}

int
accesslog_open(struct event_base *base)
{
	int fd = al_open_target();

	if (fd == -2)
		return -1;
	al_fd = fd;
	if (al_timer == NULL)
		al_timer = evtimer_new(base, al_timer_cb, NULL);
	return al_timer == NULL ? -1 : 0;
}

int
accesslog_reopen(void)
{
	int fd;

	accesslog_flush();
	if ((fd = al_open_target()) == -2)
		return -1;
	if (al_fd > STDERR_FILENO && al_fd != fd)
		close(al_fd);
	al_fd = fd;
	return 0;
}

static void
al_write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(al_fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			/* A full pipe or disk must not stall the loop. */
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

void
accesslog_flush(void)
{
	const char *p = buf_head(&al_buf);
	size_t n = buf_pending(&al_buf);

	if (n == 0 || al_fd < 0) {
		buf_reset(&al_buf);
		return;
	}
	while (n > 0) {
		size_t cut = n;

		if (al_pipe && cut > PIPE_BUF) {
			cut = PIPE_BUF;
			while (cut > 0 && p[cut - 1] != '\n')
				cut--;
			if (cut == 0)
				cut = PIPE_BUF;
		}
		al_write_all(p, cut);
		p += cut;
		n -= cut;
	}
	buf_reset(&al_buf);
	buf_trim(&al_buf, 256 * 1024);
}

/* RFC 3339 UTC with milliseconds; the seconds part is cached. */
static void
al_time(struct buf *b)
{
	static char sec[32];
	static time_t last = -1;
	struct timespec ts;
	struct tm tm;
	char ms[8];

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last) {
		gmtime_r(&ts.tv_sec, &tm);
		strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm);
		last = ts.tv_sec;
	}
	snprintf(ms, sizeof(ms), ".%03dZ", (int)(ts.tv_nsec / 1000000));
	buf_append(b, sec, strlen(sec));
	buf_append(b, ms, 5);
}

static void
al_str(struct buf *b, const char *key, const char *v, size_t n)
{
	buf_appendf(b, ",\"%s\":\"", key);
	buf_append_json(b, v, n);
	buf_append(b, "\"", 1);
}

void
accesslog_write(const struct request *r)
{
	struct buf *b = &al_buf;
	struct timespec now;
	double ms;

	if (al_fd < 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (double)(now.tv_sec - r->start.tv_sec) * 1e3 +
	    (double)(now.tv_nsec - r->start.tv_nsec) / 1e6;
	buf_append(b, "{\"time\":\"", 9);
	al_time(b);
	buf_append(b, "\"", 1);
	al_str(b, "request_id", r->id, r->id_len);
	al_str(b, "client", r->client, strlen(r->client));
	al_str(b, "method", r->head.method, r->head.method_len);
	al_str(b, "path", r->head.path, r->head.path_len);
	buf_appendf(b, ",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%.3f",
	    r->status, (unsigned long long)r->resp_bytes, ms);
	if (r->route != NULL)
		al_str(b, "route", r->route->path, strlen(r->route->path));
	if (r->upstream != NULL)
		al_str(b, "upstream", r->upstream, strlen(r->upstream));
	buf_appendf(b, ",\"tries\":%d}\n", r->tries);
	if (buf_pending(b) >= BATCH_BYTES)
		accesslog_flush();
	else if (!evtimer_pending(al_timer, NULL)) {
		struct timeval tv = { 0, BATCH_MS * 1000 };

		evtimer_add(al_timer, &tv);
	}
}

void
accesslog_close(void)
{
	accesslog_flush();
	if (al_timer != NULL)
		evtimer_del(al_timer);
	if (al_own && al_fd >= 0)
		close(al_fd);
	al_fd = -1;
	buf_free(&al_buf);
}
