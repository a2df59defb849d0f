/*
 * wsload - a WebSocket load generator for tests/bench/websocket.py.
 *
 * One process, one thread, epoll, non-blocking sockets; nothing is
 * allocated once the connections are open.  Two modes:
 *
 *   wsload rtt  [-c CONNS] [-d SECS] [-w SECS] [-s BYTES] [-T SECS] URL
 *	Opens CONNS WebSocket connections, then each one sends a masked text
 *	frame of BYTES (default 32) and waits for its echo, again and again.
 *	The first -w seconds (default 1) are a warm-up; the next -d (default
 *	5) are measured.  Prints "measure start" and "measure end" as the
 *	measured window opens and closes (so a caller can read CPU counters
 *	at those moments), then waits up to 2 s for the echoes still in
 *	flight, closes every connection with a close frame and prints one
 *	line: round trips, round trips/s, p50/p99/max latency in µs, errors.
 *
 *   wsload hold [-c CONNS] [-t SECS] [-b BATCH] [-T SECS] URL
 *	Opens CONNS connections, at most BATCH (default 500) handshakes in
 *	flight, prints "open N failed F" when all are settled, keeps them
 *	idle until stdin is closed or -t seconds (default 600) pass, then
 *	closes them all with a close frame and prints "closed ...".  A
 *	connection the server drops while idle counts as an error.
 *
 * -T bounds the time to open the connections (default 60 s); the close is
 * bounded by 5 s.  URL is ws://HOST:PORT/PATH (IPv4 or a name).  Every
 * handshake must answer 101 with the right Sec-WebSocket-Accept, and every
 * echo must be the frame sent, unmasked.  The exit status is 0 when there
 * were no errors, 1 otherwise, 2 for bad usage.  Built by `make bench-
 * websocket` (an EXTRA program, like offload_cost); links libcrypto for
 * SHA-1 and base64.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define IN_SIZE		2048	/* a 101 head, or a few echoed frames */
#define OUT_SIZE	2048	/* the handshake, or one frame */
#define MAX_MSG		1024	/* -s limit: one echo fits IN_SIZE */
#define MAX_PATH	1024
#define HIST_US		1000000	/* 1 µs buckets up to 1 s, then overflow */
#define DRAIN_NS	(2 * NS)
#define CLOSE_NS	(5 * NS)
#define NS		1000000000LL
#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum mode { RTT, HOLD };
enum cstate { C_FREE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DONE };
enum err {
	E_CONNECT, E_HANDSHAKE, E_ECHO, E_CLOSED, E_TIMEOUT, E_PROTOCOL,
	E_COUNT
};
static const char *const err_names[E_COUNT] = {
	"connect", "handshake", "bad_echo", "dropped", "timeout", "protocol"
};

struct conn {
	int fd;
	enum cstate state;
	int waiting;			/* rtt: an echo is due */
	int want_out;			/* EPOLLOUT is armed */
	int got_close;			/* the server's close frame came */
	uint32_t seq;
	int64_t sent_ns;
	char accept[32];
	size_t inlen, outoff, outlen;
	unsigned char in[IN_SIZE];
	unsigned char out[OUT_SIZE];
};

static struct {
	enum mode mode;
	int conns, batch, size;
	double duration, warmup, hold, open_timeout;
	char host[256], port[16], path[MAX_PATH];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int ep;
	struct conn *c;
	int started, inflight, open, failed, closing;
	uint64_t errors[E_COUNT];
	int err_printed;
	int no_eof;			/* closes answered, TCP left open */
	/* rtt */
	int sending, measuring;
	int64_t t_start, t_end;
	uint64_t rt_total, rt_measured, hist_over;
	uint32_t *hist;
	uint64_t rng;
} g;

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static uint64_t
rnd(void)
{
	/* xorshift64*: masks and keys need not be secret here. */
	g.rng ^= g.rng >> 12;
	g.rng ^= g.rng << 25;
	g.rng ^= g.rng >> 27;
	return g.rng * 0x2545F4914F6CDD1DULL;
}

static void
error(struct conn *c, enum err e, const char *what)
{
	g.errors[e]++;
	if (g.err_printed++ < 10)
		fprintf(stderr, "wsload: conn %ld: %s: %s\n",
		    c ? (long)(c - g.c) : -1L, err_names[e], what);
}

static uint64_t
errors_total(void)
{
	uint64_t n = 0;
	int i;

	for (i = 0; i < E_COUNT; i++)
		n += g.errors[i];
	return n;
}

static void
print_errors(FILE *f)
{
	int i;

	fprintf(f, "errors=%" PRIu64, errors_total());
	for (i = 0; i < E_COUNT; i++)
		if (g.errors[i])
			fprintf(f, " %s=%" PRIu64, err_names[i], g.errors[i]);
}

/* ---- connections ---- */

static void
conn_end(struct conn *c)
{
	if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
		g.inflight--;
	else if (c->state == C_OPEN)
		g.open--;
	else if (c->state == C_CLOSING)
		g.closing--;
	if (c->fd >= 0)
		close(c->fd);		/* also removes it from the epoll set */
	c->fd = -1;
	c->state = C_DONE;
}

static void
fail(struct conn *c, enum err e, const char *what)
{
	if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
		g.failed++;
	error(c, e, what);
	conn_end(c);
}

static int
arm(struct conn *c, int out)
{
	struct epoll_event ev;

	if (c->want_out == out)
		return 0;
	ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
	ev.data.ptr = c;
	c->want_out = out;
	return epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is pending; 0, or -1 when the connection failed. */
static int
flush_out(struct conn *c)
{
	ssize_t n;

	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return arm(c, 1);
		if (n <= 0) {
			fail(c, E_CLOSED, strerror(errno));
			return -1;
		}
		c->outoff += (size_t)n;
	}
	c->outoff = c->outlen = 0;
	return arm(c, 0);
}

/* Queues bytes behind what is pending and writes; -1 when it failed. */
static int
conn_send(struct conn *c, const void *p, size_t n)
{
	if (c->outlen + n > OUT_SIZE) {
		fail(c, E_PROTOCOL, "output buffer full");
		return -1;
	}
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
	if (c->want_out)
		return 0;		/* EPOLLOUT will write it */
	return flush_out(c);
}

/* One masked client frame. */
static int
send_frame(struct conn *c, unsigned b0, const unsigned char *p, size_t n)
{
	unsigned char f[4 + 4 + MAX_MSG];
	size_t h = 2, i;
	uint32_t m = (uint32_t)rnd();

	f[0] = (unsigned char)b0;
	if (n < 126)
		f[1] = 0x80 | (unsigned char)n;
	else {
		f[1] = 0x80 | 126;
		f[2] = (unsigned char)(n >> 8);
		f[3] = (unsigned char)n;
		h = 4;
	}
	memcpy(f + h, &m, 4);
	for (i = 0; i < n; i++)
		f[h + 4 + i] = p[i] ^ f[h + (i & 3)];
	return conn_send(c, f, h + 4 + n);
}

static void
message(struct conn *c, unsigned char *p)
{
	int k = snprintf((char *)p, (size_t)g.size + 1, "%08x %08x ",
	    (unsigned)(c - g.c), c->seq);
	int i;

	for (i = k; i < g.size; i++)
		p[i] = (unsigned char)('a' + (c->seq + (unsigned)i) % 26);
}

static int
send_message(struct conn *c)
{
	unsigned char p[MAX_MSG + 32];

	message(c, p);
	c->waiting = 1;
	c->sent_ns = now_ns();
	return send_frame(c, 0x81, p, (size_t)g.size);
}

static int
send_close(struct conn *c)
{
	static const unsigned char code[2] = { 1000 >> 8, 1000 & 0xff };

	g.open--;
	g.closing++;
	c->state = C_CLOSING;
	return send_frame(c, 0x88, code, 2);
}

static void
start_conn(struct conn *c)
{
	struct epoll_event ev;
	int one = 1;

	g.started++;
	g.inflight++;
	c->state = C_CONNECTING;
	c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		fail(c, E_CONNECT, strerror(errno));
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&g.addr, g.addrlen) < 0 &&
	    errno != EINPROGRESS) {
		fail(c, E_CONNECT, strerror(errno));
		return;
	}
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.ptr = c;
	c->want_out = 1;
	if (epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		fail(c, E_CONNECT, strerror(errno));
}

static void
send_handshake(struct conn *c)
{
	unsigned char raw[16], md[EVP_MAX_MD_SIZE];
	char key[32], buf[64], req[OUT_SIZE];
	unsigned int mdlen = 0;
	uint64_t a = rnd(), b = rnd();
	int err = 0, n;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
		fail(c, E_CONNECT, strerror(err ? err : errno));
		return;
	}
	memcpy(raw, &a, 8);
	memcpy(raw + 8, &b, 8);
	EVP_EncodeBlock((unsigned char *)key, raw, 16);
	n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
	EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
	EVP_EncodeBlock((unsigned char *)c->accept, md, (int)mdlen);
	n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%s\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
	    g.path, g.host, g.port, key);
	c->state = C_HANDSHAKE;
	if (n < 0 || (size_t)n >= sizeof(req)) {
		fail(c, E_HANDSHAKE, "request too long");
		return;
	}
	conn_send(c, req, (size_t)n);
}

/* The 101 head, once whole; 1 when the connection is open. */
static int
read_101(struct conn *c)
{
	char *end, *h, *v, *e;
	size_t head;
	int ok = 0;

	c->in[c->inlen < IN_SIZE ? c->inlen : IN_SIZE - 1] = '\0';
	if ((end = memmem(c->in, c->inlen, "\r\n\r\n", 4)) == NULL) {
		if (c->inlen >= IN_SIZE - 1)
			fail(c, E_HANDSHAKE, "response head too long");
		return 0;
	}
	head = (size_t)(end - (char *)c->in) + 4;
	*end = '\0';
	if (strncmp((char *)c->in, "HTTP/1.1 101 ", 13) != 0) {
		h = strchr((char *)c->in, '\r');
		if (h != NULL)
			*h = '\0';
		fail(c, E_HANDSHAKE, (char *)c->in);
		return 0;
	}
	for (h = strstr((char *)c->in, "\r\n"); h != NULL;
	    h = strstr(h + 2, "\r\n")) {
		if (strncasecmp(h + 2, "Sec-WebSocket-Accept:", 21) != 0)
			continue;
		v = h + 23;
		v += strspn(v, " \t");
		e = v + strcspn(v, "\r \t");
		ok = (size_t)(e - v) == strlen(c->accept) &&
		    memcmp(v, c->accept, (size_t)(e - v)) == 0;
		break;
	}
	if (!ok) {
		fail(c, E_HANDSHAKE, "wrong or no Sec-WebSocket-Accept");
		return 0;
	}
	memmove(c->in, c->in + head, c->inlen - head);
	c->inlen -= head;
	c->state = C_OPEN;
	g.inflight--;
	g.open++;
	return 1;
}

static void
record(int64_t ns)
{
	uint64_t us = (uint64_t)(ns / 1000);

	if (us < HIST_US)
		g.hist[us]++;
	else
		g.hist_over++;
	g.rt_measured++;
}

/* A whole data frame from the server. */
static int
on_data(struct conn *c, const unsigned char *p, size_t n, int64_t t)
{
	unsigned char want[MAX_MSG + 32];

	if (g.mode != RTT || !c->waiting) {
		fail(c, E_PROTOCOL, "unexpected data frame");
		return -1;
	}
	message(c, want);
	if (n != (size_t)g.size || memcmp(p, want, n) != 0) {
		fail(c, E_ECHO, "echo differs from the message sent");
		return -1;
	}
	c->waiting = 0;
	c->seq++;
	g.rt_total++;
	if (g.measuring && t >= g.t_start && t < g.t_end)
		record(t - c->sent_ns);
	if (g.sending && c->state == C_OPEN)
		return send_message(c);
	return 0;
}

/* Frames in the input; -1 when the connection ended. */
static int
read_frames(struct conn *c, int64_t t)
{
	unsigned char *p = c->in;
	size_t left = c->inlen, h, k;
	uint64_t len;
	int op, i;

	while (left >= 2) {
		op = p[0] & 0x0f;
		if ((p[0] & 0xf0) != 0x80 || (p[1] & 0x80)) {
			fail(c, E_PROTOCOL, "fragmented, reserved or masked "
			    "frame from the server");
			return -1;
		}
		len = p[1] & 0x7f;
		h = len == 126 ? 4 : len == 127 ? 10 : 2;
		if (left < h)
			break;
		if (len == 126)
			len = (uint64_t)p[2] << 8 | p[3];
		else if (len == 127)
			for (len = 0, i = 0; i < 8; i++)
				len = len << 8 | p[2 + i];
		if (len > IN_SIZE - 1 - h) {
			fail(c, E_PROTOCOL, "frame too large");
			return -1;
		}
		if (left < h + len)
			break;
		k = h + (size_t)len;
		if (op == 0x8) {
			c->got_close = 1;
			if (c->state != C_CLOSING) {
				fail(c, E_CLOSED, "close frame from the server");
				return -1;
			}
		} else if (op == 0x9) {
			if (send_frame(c, 0x8a, p + h, (size_t)len) < 0)
				return -1;
		} else if (op == 0x1 || op == 0x2) {
			if (c->state == C_CLOSING)
				;	/* an echo overtaken by our close */
			else if (on_data(c, p + h, (size_t)len, t) < 0)
				return -1;
		} else if (op != 0xa) {
			fail(c, E_PROTOCOL, "unknown opcode");
			return -1;
		}
		p += k;
		left -= k;
	}
	memmove(c->in, p, left);
	c->inlen = left;
	return 0;
}

static void
on_readable(struct conn *c, int64_t t)
{
	ssize_t n;

	for (;;) {
		n = recv(c->fd, c->in + c->inlen, IN_SIZE - 1 - c->inlen, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n == 0 && c->state == C_CLOSING) {
			if (!c->got_close)
				error(c, E_PROTOCOL, "closed without a close "
				    "frame");
			conn_end(c);
			return;
		}
		if (n <= 0) {
			fail(c, c->state == C_CONNECTING ? E_CONNECT :
			    c->state == C_HANDSHAKE ? E_HANDSHAKE : E_CLOSED,
			    n == 0 ? "closed by the server" : strerror(errno));
			return;
		}
		c->inlen += (size_t)n;
		if (c->state == C_HANDSHAKE && !read_101(c))
			return;
		if (read_frames(c, t) < 0)
			return;
		if ((size_t)n < IN_SIZE / 2)
			return;		/* most likely all there was */
	}
}

static void
on_event(struct conn *c, uint32_t ev, int64_t t)
{
	if (c->state == C_CONNECTING) {
		if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			send_handshake(c);
		return;
	}
	if ((ev & EPOLLOUT) && flush_out(c) < 0)
		return;
	if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
		on_readable(c, t);
}

/* Waits up to `ms' and handles what came; returns the time after. */
static int64_t
poll_once(int ms, int stdin_watched, int *stdin_eof)
{
	struct epoll_event evs[256];
	char buf[256];
	int64_t t;
	int i, n;

	n = epoll_wait(g.ep, evs, 256, ms);
	t = now_ns();
	for (i = 0; i < n; i++) {
		if (evs[i].data.ptr == NULL) {
			if (!stdin_watched ||
			    read(0, buf, sizeof(buf)) <= 0) {
				*stdin_eof = 1;
				epoll_ctl(g.ep, EPOLL_CTL_DEL, 0, NULL);
			}
			continue;
		}
		on_event(evs[i].data.ptr, evs[i].events, t);
	}
	return t;
}

static int
ms_until(int64_t deadline, int64_t t, int cap)
{
	int64_t ms = (deadline - t + 999999) / 1000000;

	return ms < 0 ? 0 : ms > cap ? cap : (int)ms;
}

/* Opens every connection, BATCH handshakes at a time, within -T. */
static void
open_all(void)
{
	int64_t t = now_ns(), deadline = t + (int64_t)(g.open_timeout * NS);
	int next = 0, i, dummy = 0;

	while ((next < g.conns || g.inflight > 0) && t < deadline) {
		while (next < g.conns && g.inflight < g.batch)
			start_conn(&g.c[next++]);
		t = poll_once(ms_until(deadline, t, 100), 0, &dummy);
	}
	for (i = 0; i < g.conns; i++)
		if (g.c[i].state == C_CONNECTING ||
		    g.c[i].state == C_HANDSHAKE)
			fail(&g.c[i], E_TIMEOUT, "not open within -T");
	g.failed += g.conns - next;
	printf("open %d failed %d\n", g.open, g.failed);
}

/* A close frame on every open connection; waits for the server's. */
static int
close_all(void)
{
	int64_t t = now_ns(), deadline = t + CLOSE_NS;
	int i, dummy = 0, clean = 0, n = 0;

	for (i = 0; i < g.conns; i++)
		if (g.c[i].state == C_OPEN) {
			n++;
			send_close(&g.c[i]);
		}
	while (g.closing > 0 && t < deadline)
		t = poll_once(ms_until(deadline, t, 100), 0, &dummy);
	for (i = 0; i < g.conns; i++) {
		if (g.c[i].got_close)
			clean++;
		if (g.c[i].state != C_CLOSING)
			continue;
		if (g.c[i].got_close) {
			g.no_eof++;	/* the server SHOULD close first */
			conn_end(&g.c[i]);
		} else
			fail(&g.c[i], E_TIMEOUT, "no close within 5 s");
	}
	return clean;
}

static int
run_rtt(void)
{
	int64_t t, drain;
	double secs;
	uint64_t seen = 0, p50 = 0, p99 = 0, max = 0, need50, need99;
	int i, dummy = 0, clean;

	open_all();
	fflush(stdout);
	g.sending = 1;
	for (i = 0; i < g.conns; i++)
		if (g.c[i].state == C_OPEN)
			send_message(&g.c[i]);
	t = now_ns();
	g.t_start = t + (int64_t)(g.warmup * NS);
	g.t_end = g.t_start + (int64_t)(g.duration * NS);
	g.measuring = 1;
	while (t < g.t_start && g.open > 0)
		t = poll_once(ms_until(g.t_start, t, 100), 0, &dummy);
	printf("measure start\n");
	fflush(stdout);
	while (t < g.t_end && g.open > 0)
		t = poll_once(ms_until(g.t_end, t, 100), 0, &dummy);
	printf("measure end\n");
	fflush(stdout);
	g.sending = 0;
	drain = t + DRAIN_NS;
	for (;;) {
		int busy = 0;

		for (i = 0; i < g.conns && !busy; i++)
			busy = g.c[i].state == C_OPEN && g.c[i].waiting;
		if (!busy || t >= drain)
			break;
		t = poll_once(ms_until(drain, t, 100), 0, &dummy);
	}
	for (i = 0; i < g.conns; i++)
		if (g.c[i].state == C_OPEN && g.c[i].waiting)
			error(&g.c[i], E_TIMEOUT, "no echo within 2 s of the end");
	clean = close_all();
	need50 = (g.rt_measured + 1) / 2;
	need99 = g.rt_measured - g.rt_measured / 100;
	for (i = 0; i < HIST_US && seen < g.rt_measured; i++) {
		if (g.hist[i] == 0)
			continue;
		seen += g.hist[i];
		if (!p50 && seen >= need50)
			p50 = (uint64_t)i + 1;
		if (!p99 && seen >= need99)
			p99 = (uint64_t)i + 1;
		max = (uint64_t)i + 1;
	}
	if (g.hist_over) {
		max = HIST_US;
		if (!p99)
			p99 = HIST_US;
		if (!p50)
			p50 = HIST_US;
	}
	secs = (double)(g.t_end - g.t_start) / NS;
	printf("rtt conns=%d size=%d seconds=%.3f round_trips=%" PRIu64
	    " rps=%.1f p50_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64
	    " closed_clean=%d no_eof=%d ", g.conns, g.size, secs,
	    g.rt_measured, (double)g.rt_measured / secs, p50, p99, max, clean,
	    g.no_eof);
	print_errors(stdout);
	printf("\n");
	return errors_total() ? 1 : 0;
}

static int
run_hold(void)
{
	struct epoll_event ev;
	int64_t t, deadline;
	int stdin_eof = 0, watched, clean, was;

	open_all();
	fflush(stdout);
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	watched = epoll_ctl(g.ep, EPOLL_CTL_ADD, 0, &ev) == 0;
	t = now_ns();
	deadline = t + (int64_t)(g.hold * NS);
	while (!stdin_eof && t < deadline)
		t = poll_once(ms_until(deadline, t, 1000), watched,
		    &stdin_eof);
	was = g.open;
	clean = close_all();
	printf("closed %d clean %d no_eof %d ", was, clean, g.no_eof);
	print_errors(stdout);
	printf("\n");
	return errors_total() ? 1 : 0;
}

/* ---- setup ---- */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: wsload rtt  [-c CONNS] [-d SECS] [-w SECS] [-s BYTES] "
	    "[-T SECS] ws://HOST:PORT/PATH\n"
	    "       wsload hold [-c CONNS] [-t SECS] [-b BATCH] [-T SECS] "
	    "ws://HOST:PORT/PATH\n");
	exit(2);
}

static double
positive(const char *s, double max)
{
	char *e;
	double v = strtod(s, &e);

	if (e == s || *e != '\0' || !(v >= 0) || v > max)
		usage();
	return v;
}

static void
parse_url(const char *url)
{
	struct addrinfo hints, *res;
	const char *p, *slash, *colon;

	if (strncmp(url, "ws://", 5) != 0)
		usage();
	p = url + 5;
	slash = strchr(p, '/');
	if (slash == NULL)
		slash = p + strlen(p);
	colon = memchr(p, ':', (size_t)(slash - p));
	if (colon == NULL || colon == p ||
	    (size_t)(colon - p) >= sizeof(g.host) ||
	    (size_t)(slash - colon - 1) >= sizeof(g.port) ||
	    strlen(slash) >= sizeof(g.path))
		usage();
	memcpy(g.host, p, (size_t)(colon - p));
	memcpy(g.port, colon + 1, (size_t)(slash - colon - 1));
	snprintf(g.path, sizeof(g.path), "%s", *slash ? slash : "/");
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(g.host, g.port, &hints, &res) != 0) {
		fprintf(stderr, "wsload: cannot resolve %s:%s\n", g.host,
		    g.port);
		exit(2);
	}
	memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
	g.addrlen = res->ai_addrlen;
	freeaddrinfo(res);
}

int
main(int argc, char **argv)
{
	struct rlimit rl;
	int ch, i;

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "rtt") == 0)
		g.mode = RTT;
	else if (strcmp(argv[1], "hold") == 0)
		g.mode = HOLD;
	else
		usage();
	g.conns = 100;
	g.batch = 500;
	g.size = 32;
	g.duration = 5;
	g.warmup = 1;
	g.hold = 600;
	g.open_timeout = 60;
	optind = 2;
	while ((ch = getopt(argc, argv, "b:c:d:s:t:T:w:")) != -1) {
		switch (ch) {
		case 'b': g.batch = (int)positive(optarg, 100000); break;
		case 'c': g.conns = (int)positive(optarg, 1000000); break;
		case 'd': g.duration = positive(optarg, 3600); break;
		case 's': g.size = (int)positive(optarg, MAX_MSG); break;
		case 't': g.hold = positive(optarg, 86400); break;
		case 'T': g.open_timeout = positive(optarg, 3600); break;
		case 'w': g.warmup = positive(optarg, 3600); break;
		default: usage();
		}
	}
	if (optind != argc - 1 || g.conns < 1 || g.batch < 1 ||
	    g.size < 18 || (g.mode == RTT && g.duration <= 0))
		usage();		/* 18: the id and sequence number */
	parse_url(argv[optind]);
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur < (rlim_t)g.conns + 16) {
		fprintf(stderr, "wsload: fd limit %llu is too low for %d "
		    "connections\n", (unsigned long long)rl.rlim_cur, g.conns);
		return 2;
	}
	if (getrandom(&g.rng, sizeof(g.rng), 0) != sizeof(g.rng) || !g.rng)
		g.rng = (uint64_t)now_ns() | 1;
	g.c = calloc((size_t)g.conns, sizeof(*g.c));
	g.hist = g.mode == RTT ? calloc(HIST_US, sizeof(*g.hist)) : NULL;
	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (g.c == NULL || (g.mode == RTT && g.hist == NULL) || g.ep < 0) {
		fprintf(stderr, "wsload: out of memory\n");
		return 2;
	}
	for (i = 0; i < g.conns; i++)
		g.c[i].fd = -1;
	return g.mode == RTT ? run_rtt() : run_hold();
}
