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
#include "worker/loopwatch.h"
#include "worker/worker.h"

#define BATCH_BYTES	(32 * 1024)
#define BATCH_MS	100
#define PENDING_MAX	(1024 * 1024)	/* then lines are dropped, counted */

static int		 al_fd = -1;
static bool		 al_own;	/* we opened it: close it */
static bool		 al_pipe;
static bool		 al_sock;	/* write with MSG_DONTWAIT */
static struct buf	 al_buf;
static struct event	*al_timer;
static unsigned long	 al_dropped;

static int
al_open_target(void)
{
	const struct config *cfg = worker.cfg;
	struct stat st;
	int fd;

	if (cfg->log_access == ACCESS_OFF)
		return -1;
	if (cfg->log_access == ACCESS_STDOUT) {
		/* A stalled reader of stdout must not stall this loop. */
		fd = log_nonblocking_fd(STDOUT_FILENO, &al_sock);
		al_own = fd != STDOUT_FILENO;
	} else {
		al_sock = false;
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
	loopwatch_begin(LW_OTHER);
	accesslog_flush();
	loopwatch_end();
}

int
accesslog_open(void)
{
	int fd = al_open_target();

	if (fd == -2)
		return -1;
	al_fd = fd;
	return 0;
}

int
accesslog_start(struct event_base *base)
{
	if (al_timer == NULL)
		al_timer = evtimer_new(base, al_timer_cb, NULL);
	return al_timer == NULL ? -1 : 0;
}

int
accesslog_reopen(void)
{
	bool was_own = al_own;
	int fd, old = al_fd;

	accesslog_flush();
	/* The new file first: if it cannot be opened (a worker that gave
	 * up root, a folder it cannot write), lines keep going to the old. */
	if ((fd = al_open_target()) == -2) {
		al_own = was_own;
		return -1;
	}
	if (was_own && old >= 0 && old != fd)
		close(old);
	al_fd = fd;
	return 0;
}

/* Writes what the descriptor takes now; returns bytes written. */
static size_t
al_write_some(const char *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = log_write_nb(al_fd, al_sock, p + done, n - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;		/* full (or gone): try again later */
		done += (size_t)w;
	}
	return done;
}

static void
al_arm(void)
{
	struct timeval tv = { 0, BATCH_MS * 1000 };

	if (!evtimer_pending(al_timer, NULL))
		evtimer_add(al_timer, &tv);
}

void
accesslog_flush(void)
{
	const char *p = buf_head(&al_buf);
	size_t n = buf_pending(&al_buf), cut, w;

	if (n == 0 || al_fd < 0) {
		buf_reset(&al_buf);
		return;
	}
	while (n > 0) {
		cut = n;
		/* Into a pipe, whole lines up to PIPE_BUF: atomic, so lines
		 * of different workers never interleave. */
		if (al_pipe && cut > PIPE_BUF) {
			cut = PIPE_BUF;
			while (cut > 0 && p[cut - 1] != '\n')
				cut--;
			if (cut == 0)
				cut = PIPE_BUF;
		}
		w = al_write_some(p, cut);
		buf_consume(&al_buf, w);
		p += w;
		n -= w;
		if (w < cut)
			break;
	}
	if (buf_pending(&al_buf) > 0)
		al_arm();		/* the reader is slow: retry */
	else
		buf_trim(&al_buf, 256 * 1024);
	if (al_dropped > 0 && buf_pending(&al_buf) == 0) {
		log_warnx("access log: %lu line%s dropped while its reader "
		    "stalled", al_dropped, log_plural((long long)al_dropped));
		al_dropped = 0;
	}
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

/* The trace id as 32 lowercase hex digits. */
static void
al_trace_id(struct buf *b, const uint8_t id[16])
{
	static const char hex[] = "0123456789abcdef";
	char s[13 + 32 + 1] = ",\"trace_id\":\"";
	int i;

	for (i = 0; i < 16; i++) {
		s[13 + 2 * i] = hex[id[i] >> 4];
		s[13 + 2 * i + 1] = hex[id[i] & 15];
	}
	s[45] = '"';
	buf_append(b, s, sizeof(s));
}

void
accesslog_write(const struct request *r)
{
	struct buf *b = &al_buf;
	struct timespec now;
	double ms;

	if (al_fd < 0)
		return;
	if (buf_pending(b) >= PENDING_MAX) {
		al_dropped++;
		return;
	}
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
	buf_appendf(b, ",\"tries\":%d", r->tries);
	if (r->trace.on)
		al_trace_id(b, r->trace.trace_id);
	if (r->cache != NULL)
		al_str(b, "cache", r->cache, strlen(r->cache));
	if (r->tunnel) {
		al_str(b, "protocol", r->tunnel_protocol,
		    strlen(r->tunnel_protocol));
		buf_appendf(b, ",\"bytes_received\":%llu",
		    (unsigned long long)r->tunnel_bytes_in);
		if (r->tunnel_close != NULL)
			al_str(b, "tunnel_close", r->tunnel_close,
			    strlen(r->tunnel_close));
	} else {
		/* An HTTP/1.0 client's request says so. */
		const char *proto = r->carrier == &h1_carrier &&
		    r->head.method != NULL && r->head.minor == 0 ? "HTTP/1.0" :
		    r->carrier->protocol;

		al_str(b, "protocol", proto, strlen(proto));
	}
	buf_append(b, "}\n", 2);
	if (buf_pending(b) >= BATCH_BYTES)
		accesslog_flush();
	else
		al_arm();
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
