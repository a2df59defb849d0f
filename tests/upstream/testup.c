/*
 * testup - a fault-injecting HTTP/1.1 upstream for agate's tests.
 *
 * agate's integration tests need an upstream that misbehaves on demand:
 * slow to answer, slow to send, gone half-way through a body, resetting,
 * speaking garbage, injecting headers.  They also need to see afterwards
 * what agate forwarded and how many responses the proxy gave up on.  Real
 * servers make that hard to arrange and harder to observe, so this one does
 * only that.  The behaviour of a response is chosen by query parameters on
 * any path (status, delay, size, chunked, interval, chunk, abort, garbage,
 * echo, header, conn, see set_param()); GET /_stats, /_reset and /_last
 * report what happened.  It is one libevent loop with one bufferevent per
 * connection, and bodies in both directions are streamed with backpressure
 * so that memory stays small whatever their size.
 *
 * It is also a WebSocket echo server (RFC 6455), the upstream of `make run`
 * and of tests/bench/websocket.py: a GET on a path under /ws/ with
 * "Upgrade: websocket", "Connection: upgrade", a Sec-WebSocket-Key and
 * "Sec-WebSocket-Version: 13" gets 101 (the first Sec-WebSocket-Protocol
 * offered, if any, is accepted; header= still applies); then every data
 * frame is sent back as it comes, unmasked, with its opcode and FIN (so a
 * fragmented message is echoed frame by frame), a ping gets a pong, and a
 * close gets a close with the same code, after which the connection is
 * closed.  A bad frame is answered with close 1002.  Frames are unmasked in
 * the input buffer and moved to the output: nothing is allocated per
 * message.  The fd limit is raised to the hard limit for 10,000+ tunnels.
 *
 * Build: cc -std=c11 testup.c $(pkg-config --cflags --libs libevent_core
 * libcrypto); the body digest uses OpenSSL's EVP SHA-256, the WebSocket
 * accept key EVP SHA-1 and base64.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <openssl/evp.h>

#define DEFAULT_LISTEN	"127.0.0.1:9001"
#define BACKLOG		1024
#define MAX_HEAD	(64 * 1024)	/* request line and headers */
#define MAX_HEADERS	256
#define MAX_CHUNK_LINE	4096		/* chunk size line or trailer line */
#define IN_LIMIT	(256 * 1024)	/* bounds input queued behind a response */
#define OUT_HIGH	(256 * 1024)	/* stop queueing body bytes above this */
#define OUT_LOW		(128 * 1024)	/* and resume when drained to this */
#define PIECE		(64 * 1024)	/* body piece when chunk= is not given */
#define DRIP_PIECE	1024		/* the same with interval= */
#define MAX_PIECE	(16 * 1024 * 1024)
#define MAX_SIZE	((uint64_t)1 << 50)
#define MAX_MS		(3600 * 1000)
#define LINGER_MS	1000
#define GARBAGE		"this is not http\r\n\r\n"

static const char pattern_chars[] = "0123456789abcdefghijklmnopqrstuvwxyz\n";
#define PATTERN_LEN	37

enum state {
	ST_HEAD,	/* reading a request head */
	ST_BODY,	/* reading (and hashing) a request body */
	ST_DELAY,	/* waiting delay= before the response head */
	ST_ECHO,	/* echo=body: reading the body and sending it back */
	ST_SEND,	/* queueing a response body */
	ST_DRIP,	/* waiting interval= between two pieces */
	ST_FLUSH,	/* all queued, waiting for it to be written */
	ST_LINGER,	/* output shut, draining input until the peer closes */
	ST_WS,		/* a WebSocket after 101: echoing frames */
};

enum body { BODY_NONE, BODY_LENGTH, BODY_CHUNKED };
enum chunk_state { CH_SIZE, CH_DATA_END, CH_TRAILER };
enum abort_mode { ABORT_NONE, ABORT_HEAD, ABORT_MID, ABORT_RESET };
enum echo_mode { ECHO_NONE, ECHO_JSON, ECHO_BODY };
enum special { SP_NONE, SP_STATS, SP_RESET, SP_LAST };
enum framing { FR_NONE, FR_LENGTH, FR_CHUNKED, FR_CLOSE };
enum source { SRC_NONE, SRC_FIXED, SRC_PATTERN };

struct params {
	int status;
	unsigned delay, interval;
	uint64_t size;
	size_t chunk;
	int has_size, chunked, garbage, close, own_ctype;
	enum abort_mode abort;
	enum echo_mode echo;
	struct evbuffer *headers;	/* "Name: value\r\n" lines from header= */
	const char *error;		/* why the query is refused */
};

struct header {
	char *name;			/* the whole line, cut at the colon */
	char *value;
};

struct request {
	char *line;			/* request line, cut in place */
	char *method, *target, *version;
	const char *query;
	size_t path_len, head_bytes;
	struct header *hdrs;
	size_t nhdrs;
	int minor, head, keep, expect, stream, chunked_upload;
	int counted;			/* in /_stats: not one of the /_ paths */
	int done;			/* answered, or cut short on purpose */
	enum special special;
	enum body body;
	enum chunk_state cstate;
	uint64_t length, remaining, body_len;
	char sha_hex[65];
	struct params p;
};

struct response {
	enum source src;
	struct evbuffer *fixed;		/* the body, for SRC_FIXED */
	enum framing framing;
	uint64_t sent, end;		/* end is below the length for abort=mid */
	size_t piece;
	int mid;
};

/* Where a WebSocket connection is in its input. */
struct ws {
	uint64_t remaining;		/* payload of the data frame in transit */
	unsigned char mask[4];
	unsigned moff;			/* payload bytes unmasked, mod 4 */
	int in_frame;			/* its head is out, its payload follows */
	int fragmented;			/* a message with FIN 0 is unfinished */
	int paused;			/* output full: reading stopped */
};

struct conn {
	struct conn *prev, *next;
	struct bufferevent *bev;
	struct event *timer;
	EVP_MD_CTX *sha;
	enum state state;
	int peer_eof;			/* peer half-closed while we flushed */
	const char *close_reason;	/* close once the output is written */
	char peer[64];
	struct request req;
	struct response resp;
	struct ws ws;
};

static struct {
	struct event_base *base;
	const char *name;
	int verbose;
	struct conn *conns;
	uint64_t accepted, requests, aborted, open, max_open;
	char *last;			/* echo=1 JSON of the last request */
	size_t last_len;
} srv;

static char pattern[PIECE + PATTERN_LEN];

static int conn_process(struct conn *);
static int respond(struct conn *);
static int start_echo(struct conn *);
static int ws_wanted(struct request *);
static int ws_handshake(struct conn *);
static int ws_process(struct conn *);

/* ---- small helpers ---- */

static void
pattern_init(void)
{
	size_t i;

	for (i = 0; i < sizeof(pattern); i++)
		pattern[i] = pattern_chars[i % PATTERN_LEN];
}

/* The pattern is static, so the body is queued by reference, never copied. */
static void
pattern_add(struct evbuffer *out, uint64_t off, size_t n)
{
	size_t k;

	while (n > 0) {
		k = n < PIECE ? n : PIECE;
		evbuffer_add_reference(out, pattern + off % PATTERN_LEN, k,
		    NULL, NULL);
		off += k;
		n -= k;
	}
}

/*
 * Bytes that are not printable ASCII come out as \u00XX (read as Latin-1)
 * so the JSON stays valid whatever the client sent.
 */
static void
json_str(struct evbuffer *b, const char *s, size_t n)
{
	size_t i, run = 0;
	unsigned char ch;

	evbuffer_add(b, "\"", 1);
	for (i = 0; i < n; i++) {
		ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
			run++;
			continue;
		}
		evbuffer_add(b, s + i - run, run);
		run = 0;
		if (ch == '"' || ch == '\\')
			evbuffer_add_printf(b, "\\%c", ch);
		else
			evbuffer_add_printf(b, "\\u%04x", ch);
	}
	evbuffer_add(b, s + n - run, run);
	evbuffer_add(b, "\"", 1);
}

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * Percent-decoding only: '+' stays '+', so header values such as base64
 * survive.  A '%' not followed by two hex digits is kept as it is.
 */
static size_t
url_decode(char *dst, const char *src, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (src[i] == '%' && i + 2 < len &&
		    hexval(src[i + 1]) >= 0 && hexval(src[i + 2]) >= 0) {
			dst[n++] = (char)(hexval(src[i + 1]) * 16 +
			    hexval(src[i + 2]));
			i += 2;
		} else
			dst[n++] = src[i];
	}
	return n;
}

static int
number(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 19)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return v >= min && v <= max;
}

static int
is_token(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (!(*s >= '0' && *s <= '9') && !(*s >= 'a' && *s <= 'z') &&
		    !(*s >= 'A' && *s <= 'Z') && strchr(extra, *s) == NULL)
			return 0;
	return 1;
}

static const char *
reason(int status)
{
	static const struct { int code; const char *text; } t[] = {
		{ 101, "Switching Protocols" }, { 200, "OK" }, { 201, "Created" }, { 202, "Accepted" },
		{ 204, "No Content" }, { 206, "Partial Content" },
		{ 301, "Moved Permanently" }, { 302, "Found" },
		{ 303, "See Other" }, { 304, "Not Modified" },
		{ 307, "Temporary Redirect" }, { 308, "Permanent Redirect" },
		{ 400, "Bad Request" }, { 401, "Unauthorized" },
		{ 403, "Forbidden" }, { 404, "Not Found" },
		{ 405, "Method Not Allowed" }, { 408, "Request Timeout" },
		{ 413, "Content Too Large" }, { 418, "I'm a teapot" },
		{ 426, "Upgrade Required" },
		{ 429, "Too Many Requests" },
		{ 431, "Request Header Fields Too Large" },
		{ 500, "Internal Server Error" }, { 501, "Not Implemented" },
		{ 502, "Bad Gateway" }, { 503, "Service Unavailable" },
		{ 504, "Gateway Timeout" }, { 505, "HTTP Version Not Supported" },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i].code == status)
			return t[i].text;
	return "Unknown";
}

static void
arm_timer(struct conn *c, unsigned ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(c->timer, &tv);
}

/* Once the peer has half-closed, reading again would only report EOF again. */
static void
enable_read(struct conn *c)
{
	if (!c->peer_eof)
		bufferevent_enable(c->bev, EV_READ);
}

static void
log_request(struct conn *c, int status, const char *fault)
{
	struct request *r = &c->req;

	if (!srv.verbose)
		return;
	fprintf(stderr, "testup %s: %s \"%s %s %s\" %d%s%s\n", srv.name,
	    c->peer, r->method ? r->method : "-", r->target ? r->target : "-",
	    r->version ? r->version : "-", status, fault ? " " : "",
	    fault ? fault : "");
}

/* ---- connection life ---- */

static void
request_reset(struct conn *c)
{
	struct request *r = &c->req;
	size_t i;

	for (i = 0; i < r->nhdrs; i++)
		free(r->hdrs[i].name);
	free(r->hdrs);
	free(r->line);
	if (r->p.headers != NULL)
		evbuffer_free(r->p.headers);
	if (c->resp.fixed != NULL)
		evbuffer_free(c->resp.fixed);
	memset(r, 0, sizeof(*r));
	memset(&c->resp, 0, sizeof(c->resp));
	r->p.status = 200;
}

/*
 * The one way a connection ends.  A counted request whose response was
 * neither completed nor deliberately cut short was abandoned by the peer.
 */
static void
conn_close(struct conn *c, const char *why)
{
	if (c->req.counted && !c->req.done)
		srv.aborted++;
	if (srv.verbose > 1)
		fprintf(stderr, "testup %s: %s closed: %s\n", srv.name,
		    c->peer, why);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv.conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	srv.open--;
	request_reset(c);
	bufferevent_free(c->bev);
	if (c->timer != NULL)
		event_free(c->timer);
	EVP_MD_CTX_free(c->sha);
	free(c);
}

/*
 * Closing with unread input makes the kernel send a RST, which can destroy
 * the response still in flight to the peer; so shut our side and read
 * until the peer closes (or LINGER_MS passes) when there is any.
 */
static int
linger(struct conn *c, const char *why)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	int avail = 0;

	if (c->peer_eof || (evbuffer_get_length(in) == 0 &&
	    (ioctl(fd, FIONREAD, &avail) < 0 || avail == 0))) {
		conn_close(c, why);
		return -1;
	}
	shutdown(fd, SHUT_WR);
	evbuffer_drain(in, evbuffer_get_length(in));
	c->close_reason = why;
	c->state = ST_LINGER;
	bufferevent_enable(c->bev, EV_READ);
	arm_timer(c, LINGER_MS);
	return 0;
}

static int
reset(struct conn *c)
{
	struct linger lg = { 1, 0 };

	c->req.done = 1;
	setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg,
	    sizeof(lg));
	conn_close(c, "abort=reset");
	return -1;
}

/* Everything queued is written: next request, or close. */
static int
flushed(struct conn *c)
{
	c->req.done = 1;
	if (c->close_reason != NULL)
		return linger(c, c->close_reason);
	request_reset(c);
	c->state = ST_HEAD;
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	enable_read(c);
	return conn_process(c);
}

static int
close_after_flush(struct conn *c, const char *why)
{
	c->close_reason = why;
	c->state = ST_FLUSH;
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		return flushed(c);
	return 0;
}

static int
finish_response(struct conn *c)
{
	return close_after_flush(c, c->req.keep ? NULL : "not keep-alive");
}

/* ---- request head ---- */

static int
parse_request_line(struct request *r)
{
	char *sp1, *sp2, *q;

	if ((sp1 = strchr(r->line, ' ')) == NULL ||
	    (sp2 = strchr(sp1 + 1, ' ')) == NULL || strchr(sp2 + 1, ' '))
		return 400;
	*sp1 = *sp2 = '\0';
	r->method = r->line;
	r->target = sp1 + 1;
	r->version = sp2 + 1;
	if (!is_token(r->method) || *r->target == '\0')
		return 400;
	for (q = r->target; *q != '\0'; q++)
		if ((unsigned char)*q < 0x21 || *q == 0x7f)
			return 400;
	if (strcmp(r->version, "HTTP/1.1") == 0)
		r->minor = 1;
	else if (strcmp(r->version, "HTTP/1.0") != 0)
		return strncmp(r->version, "HTTP/", 5) == 0 ? 505 : 400;
	r->head = strcmp(r->method, "HEAD") == 0;
	q = strchr(r->target, '?');
	r->path_len = q ? (size_t)(q - r->target) : strlen(r->target);
	r->query = q ? q + 1 : "";
	return 0;
}

/* Takes the line; it is freed with the request even when refused. */
static int
add_header(struct request *r, char *line)
{
	struct header *h;
	char *colon, *v, *e;

	if (r->nhdrs == MAX_HEADERS) {
		free(line);
		return 431;
	}
	if ((r->nhdrs & (r->nhdrs - 1)) == 0) {
		h = realloc(r->hdrs, (r->nhdrs ? r->nhdrs * 2 : 8) * sizeof(*h));
		if (h == NULL) {
			free(line);
			return 500;
		}
		r->hdrs = h;
	}
	h = &r->hdrs[r->nhdrs++];
	h->name = line;
	h->value = "";
	if ((colon = strchr(line, ':')) == NULL)
		return 400;
	*colon = '\0';
	/* Also refuses obs-fold and whitespace before the colon. */
	if (!is_token(line))
		return 400;
	for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
		;
	for (e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t'); e--)
		;
	*e = '\0';
	h->value = v;
	for (; *v != '\0'; v++)
		if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
			return 400;
	return 0;
}

/* Returns 1 for a whole head, 0 to wait for more, or a status to refuse. */
static int
read_head(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct request *r = &c->req;
	char *line;
	size_t len;
	int rc;

	for (;;) {
		line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL)
			return evbuffer_get_length(in) > MAX_HEAD - r->head_bytes ?
			    431 : 0;
		r->head_bytes += len + 2;
		if (r->head_bytes > MAX_HEAD || strlen(line) != len) {
			free(line);
			return r->head_bytes > MAX_HEAD ? 431 : 400;
		}
		if (r->line == NULL) {
			if (len == 0) {		/* CRLF between requests */
				free(line);
				continue;
			}
			r->line = line;
			if ((rc = parse_request_line(r)) != 0)
				return rc;
		} else if (len == 0) {
			free(line);
			return 1;
		} else if ((rc = add_header(r, line)) != 0)
			return rc;
	}
}

static int
has_token(const char *list, const char *token)
{
	size_t n = strlen(token);
	const char *s = list;

	while (*s != '\0') {
		s += strspn(s, " \t,");
		if (strncasecmp(s, token, n) == 0 &&
		    (s[n] == '\0' || strchr(" \t,", s[n]) != NULL))
			return 1;
		s += strcspn(s, ",");
	}
	return 0;
}

/* Framing and connection handling from the headers, or a status to refuse. */
static int
scan_headers(struct request *r)
{
	int cl = 0, te = 0, closing = 0, keep = 0;
	uint64_t n;
	size_t i;
	const char *name, *v;

	for (i = 0; i < r->nhdrs; i++) {
		name = r->hdrs[i].name;
		v = r->hdrs[i].value;
		if (strcasecmp(name, "Content-Length") == 0) {
			if (!number(v, strlen(v), 0, (uint64_t)1 << 62, &n) ||
			    (cl && n != r->length))
				return 400;
			r->length = n;
			cl = 1;
		} else if (strcasecmp(name, "Transfer-Encoding") == 0) {
			if (te)
				return 400;
			if (strcasecmp(v, "chunked") != 0)
				return 501;
			te = 1;
		} else if (strcasecmp(name, "Connection") == 0) {
			closing |= has_token(v, "close");
			keep |= has_token(v, "keep-alive");
		} else if (strcasecmp(name, "Expect") == 0)
			r->expect = strcasecmp(v, "100-continue") == 0;
	}
	r->keep = !closing && (r->minor == 1 || keep);
	if (te) {
		r->body = BODY_CHUNKED;
		r->chunked_upload = 1;
		r->length = 0;
		r->keep &= !cl;		/* both: a smuggling attempt, don't reuse */
	} else if (cl && r->length > 0) {
		r->body = BODY_LENGTH;
		r->remaining = r->length;
	}
	return 0;
}

/* ---- query parameters ---- */

static void
add_resp_header(struct params *p, const char *val, size_t len)
{
	const char *colon = memchr(val, ':', len);
	size_t nlen;

	if (colon == NULL || colon == val) {
		p->error = "bad header (want Name:Value)";
		return;
	}
	if (p->headers == NULL && (p->headers = evbuffer_new()) == NULL) {
		p->error = "out of memory";
		return;
	}
	nlen = (size_t)(colon - val);
	if (nlen == 12 && strncasecmp(val, "Content-Type", 12) == 0)
		p->own_ctype = 1;
	for (colon++; colon < val + len && (*colon == ' ' || *colon == '\t');)
		colon++;
	/* Written as decoded, CR and LF included: tests inject them. */
	evbuffer_add(p->headers, val, nlen);
	evbuffer_add(p->headers, ": ", 2);
	evbuffer_add(p->headers, colon, (size_t)(val + len - colon));
	evbuffer_add(p->headers, "\r\n", 2);
}

static int
pick(const char *val, const char *a, const char *b, const char *c3)
{
	if (strcmp(val, a) == 0)
		return 1;
	if (b != NULL && strcmp(val, b) == 0)
		return 2;
	if (c3 != NULL && strcmp(val, c3) == 0)
		return 3;
	return 0;
}

/*
 * status=200..599  delay=MS  size=N  chunked=0|1  chunk=N  interval=MS
 * abort=head|mid|reset  garbage=0|1  echo=0|1|body  header=Name:Value
 * conn=close.  Anything else is ignored; a bad value refuses the request
 * with 400 (the connection stays usable).  chunk= is the piece size and,
 * with chunked=1, the HTTP chunk size; interval= alone drips DRIP_PIECE.
 */
static void
set_param(struct params *p, const char *key, const char *val, size_t len)
{
	uint64_t n = 0;
	int k;

	if (strcmp(key, "status") == 0) {
		if (!number(val, len, 200, 599, &n))
			p->error = "bad status (200-599)";
		p->status = (int)n;
	} else if (strcmp(key, "delay") == 0) {
		if (!number(val, len, 0, MAX_MS, &n))
			p->error = "bad delay (milliseconds)";
		p->delay = (unsigned)n;
	} else if (strcmp(key, "interval") == 0) {
		if (!number(val, len, 0, MAX_MS, &n))
			p->error = "bad interval (milliseconds)";
		p->interval = (unsigned)n;
	} else if (strcmp(key, "size") == 0) {
		if (!number(val, len, 0, MAX_SIZE, &n))
			p->error = "bad size";
		p->size = n;
		p->has_size = 1;
	} else if (strcmp(key, "chunk") == 0) {
		if (!number(val, len, 1, MAX_PIECE, &n))
			p->error = "bad chunk (1-16777216)";
		p->chunk = (size_t)n;
	} else if (strcmp(key, "chunked") == 0) {
		if ((k = pick(val, "0", "1", NULL)) == 0)
			p->error = "bad chunked (0 or 1)";
		p->chunked = k == 2;
	} else if (strcmp(key, "garbage") == 0) {
		if ((k = pick(val, "0", "1", NULL)) == 0)
			p->error = "bad garbage (0 or 1)";
		p->garbage = k == 2;
	} else if (strcmp(key, "abort") == 0) {
		if ((k = pick(val, "head", "mid", "reset")) == 0)
			p->error = "bad abort (head, mid or reset)";
		p->abort = (enum abort_mode)k;
	} else if (strcmp(key, "echo") == 0) {
		if ((k = pick(val, "0", "1", "body")) == 0)
			p->error = "bad echo (0, 1 or body)";
		p->echo = k == 2 ? ECHO_JSON : k == 3 ? ECHO_BODY : ECHO_NONE;
	} else if (strcmp(key, "conn") == 0) {
		if (!pick(val, "close", NULL, NULL))
			p->error = "bad conn (close)";
		p->close = 1;
	} else if (strcmp(key, "header") == 0)
		add_resp_header(p, val, len);
}

static void
parse_params(struct request *r)
{
	const char *s = r->query, *end, *eq;
	char key[16], *val;
	size_t klen, vlen;

	for (; *s != '\0' && r->p.error == NULL; s = *end ? end + 1 : end) {
		end = s + strcspn(s, "&");
		if ((eq = memchr(s, '=', (size_t)(end - s))) == NULL)
			eq = end;
		if ((size_t)(eq - s) >= sizeof(key))
			continue;		/* longer than any we know */
		klen = url_decode(key, s, (size_t)(eq - s));
		key[klen] = '\0';
		vlen = eq < end ? (size_t)(end - eq - 1) : 0;
		if ((val = malloc(vlen + 1)) == NULL) {
			r->p.error = "out of memory";
			break;
		}
		vlen = url_decode(val, eq + (eq < end), vlen);
		val[vlen] = '\0';
		if (strlen(key) == klen)
			set_param(&r->p, key, val, vlen);
		free(val);
	}
}

static enum special
special_path(struct request *r)
{
	static const char *const paths[] = { NULL, "/_stats", "/_reset",
	    "/_last" };
	int i;

	for (i = SP_STATS; i <= SP_LAST; i++)
		if (r->path_len == strlen(paths[i]) &&
		    strncmp(r->target, paths[i], r->path_len) == 0)
			return (enum special)i;
	return SP_NONE;
}

/* ---- responses ---- */

static int
has_body(struct conn *c, int status)
{
	return !c->req.head && status != 204 && status != 304;
}

static void
send_head(struct conn *c, int status, const char *ctype, uint64_t length)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct request *r = &c->req;
	enum framing f = c->resp.framing;

	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nX-Upstream: %s\r\n",
	    status, reason(status), srv.name);
	if (!r->p.own_ctype)
		evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
	if (f == FR_LENGTH)
		evbuffer_add_printf(out, "Content-Length: %" PRIu64 "\r\n",
		    length);
	else if (f == FR_CHUNKED)
		evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\n");
	if (!r->keep)
		evbuffer_add_printf(out, "Connection: close\r\n");
	else if (r->minor == 0)
		evbuffer_add_printf(out, "Connection: keep-alive\r\n");
	if (r->p.headers != NULL)
		evbuffer_add_buffer(out, r->p.headers);
	evbuffer_add(out, "\r\n", 2);
}

/* HTTP/1.0 has no chunked coding: such a body ends with the connection. */
static void
choose_framing(struct conn *c, int status, int chunked)
{
	struct request *r = &c->req;
	enum framing f;

	if (status == 204 || status == 304)
		f = FR_NONE;
	else if (!chunked)
		f = FR_LENGTH;
	else
		f = r->minor == 1 ? FR_CHUNKED : FR_CLOSE;
	c->resp.framing = f;
	r->keep = r->keep && !r->p.close && f != FR_CLOSE;
}

/* Queues body pieces until the output is full or a drip pause is due. */
static int
send_more(struct conn *c)
{
	struct response *s = &c->resp;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t n;

	while (s->sent < s->end) {
		if (evbuffer_get_length(out) >= OUT_HIGH)
			return 0;		/* write_cb calls again */
		n = s->end - s->sent < s->piece ? (size_t)(s->end - s->sent) :
		    s->piece;
		if (s->framing == FR_CHUNKED)
			evbuffer_add_printf(out, "%zx\r\n", n);
		if (s->src == SRC_FIXED)
			evbuffer_remove_buffer(s->fixed, out, n);
		else
			pattern_add(out, s->sent, n);
		if (s->framing == FR_CHUNKED)
			evbuffer_add(out, "\r\n", 2);
		s->sent += n;
		if (c->req.p.interval > 0 && s->sent < s->end) {
			c->state = ST_DRIP;
			arm_timer(c, c->req.p.interval);
			return 0;
		}
	}
	if (s->mid) {
		c->req.done = 1;
		return close_after_flush(c, "abort=mid");
	}
	if (s->framing == FR_CHUNKED && has_body(c, c->req.p.status))
		evbuffer_add(out, "0\r\n\r\n", 5);
	return finish_response(c);
}

static int
send_body(struct conn *c, int status, const char *ctype, enum source src,
    uint64_t length)
{
	struct response *s = &c->resp;
	struct params *p = &c->req.p;

	p->status = status;
	s->src = src;
	choose_framing(c, status, p->chunked);
	send_head(c, status, ctype, length);
	s->end = has_body(c, status) && src != SRC_NONE ? length : 0;
	s->mid = p->abort == ABORT_MID;
	if (s->mid)
		s->end /= 2;
	s->piece = p->chunk ? p->chunk : p->interval ? DRIP_PIECE : PIECE;
	c->state = ST_SEND;
	bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
	return send_more(c);
}

static int
send_fixed(struct conn *c, int status, struct evbuffer *b)
{
	if (b == NULL) {
		c->req.done = 1;
		conn_close(c, "out of memory");
		return -1;
	}
	c->resp.fixed = b;
	return send_body(c, status, "application/json", SRC_FIXED,
	    evbuffer_get_length(b));
}

/*
 * A plain JSON error; whatever else the query asked for is dropped.  `hdr',
 * when not NULL, is one more header line ("Name: value\r\n").
 */
static int
refuse_with(struct conn *c, int status, const char *why, const char *hdr)
{
	struct params *p = &c->req.p;
	struct evbuffer *b = evbuffer_new();

	if (p->headers != NULL)
		evbuffer_free(p->headers);
	memset(p, 0, sizeof(*p));
	if (hdr != NULL && (p->headers = evbuffer_new()) != NULL)
		evbuffer_add(p->headers, hdr, strlen(hdr));
	if (status >= 500 || status == 431 || c->req.line == NULL)
		c->req.keep = 0;
	log_request(c, status, why);
	if (b != NULL) {
		evbuffer_add_printf(b, "{\"server\": ");
		json_str(b, srv.name, strlen(srv.name));
		evbuffer_add_printf(b, ", \"error\": ");
		json_str(b, why, strlen(why));
		evbuffer_add_printf(b, "}\n");
	}
	return send_fixed(c, status, b);
}

static int
refuse(struct conn *c, int status, const char *why)
{
	return refuse_with(c, status, why, NULL);
}

static void
summary_json(struct conn *c, struct evbuffer *b)
{
	struct request *r = &c->req;

	evbuffer_add_printf(b, "{\"server\": ");
	json_str(b, srv.name, strlen(srv.name));
	evbuffer_add_printf(b, ", \"method\": ");
	json_str(b, r->method, strlen(r->method));
	evbuffer_add_printf(b, ", \"path\": ");
	json_str(b, r->target, r->path_len);
	evbuffer_add_printf(b, ", \"query\": ");
	json_str(b, r->query, strlen(r->query));
}

static struct evbuffer *
echo_json(struct conn *c)
{
	struct request *r = &c->req;
	struct evbuffer *b = evbuffer_new();
	size_t i;

	if (b == NULL)
		return NULL;
	summary_json(c, b);
	evbuffer_add_printf(b, ", \"version\": ");
	json_str(b, r->version, strlen(r->version));
	evbuffer_add_printf(b, ", \"headers\": [");
	for (i = 0; i < r->nhdrs; i++) {
		evbuffer_add_printf(b, "%s[", i ? ", " : "");
		json_str(b, r->hdrs[i].name, strlen(r->hdrs[i].name));
		evbuffer_add(b, ", ", 2);
		json_str(b, r->hdrs[i].value, strlen(r->hdrs[i].value));
		evbuffer_add(b, "]", 1);
	}
	evbuffer_add_printf(b, "], \"body_len\": %" PRIu64
	    ", \"body_sha256\": \"%s\"}\n", r->body_len, r->sha_hex);
	return b;
}

static void
remember_last(struct conn *c)
{
	struct evbuffer *b = echo_json(c);
	char *s;
	size_t len;

	if (b == NULL)
		return;
	len = evbuffer_get_length(b);
	if ((s = malloc(len)) != NULL) {
		evbuffer_remove(b, s, len);
		free(srv.last);
		srv.last = s;
		srv.last_len = len;
	}
	evbuffer_free(b);
}

static int
answer_special(struct conn *c)
{
	struct evbuffer *b = evbuffer_new();

	log_request(c, 200, NULL);
	if (b == NULL)
		return send_fixed(c, 200, NULL);
	switch (c->req.special) {
	case SP_RESET:
		srv.accepted = srv.requests = srv.aborted = 0;
		srv.max_open = srv.open;
		evbuffer_add_printf(b, "{\"ok\": true}\n");
		break;
	case SP_STATS:
		evbuffer_add_printf(b, "{\"accepted\": %" PRIu64
		    ", \"requests\": %" PRIu64 ", \"aborted\": %" PRIu64
		    ", \"open\": %" PRIu64 ", \"max_open\": %" PRIu64 "}\n",
		    srv.accepted, srv.requests, srv.aborted, srv.open,
		    srv.max_open);
		break;
	default:
		if (srv.last != NULL)
			evbuffer_add(b, srv.last, srv.last_len);
		else
			evbuffer_add_printf(b, "{}\n");
		break;
	}
	return send_fixed(c, 200, b);
}

/* The request is read (and delay= waited): answer as the query says. */
static int
respond(struct conn *c)
{
	struct request *r = &c->req;
	struct params *p = &r->p;
	struct evbuffer *b;

	if (r->special)
		return answer_special(c);
	if (p->error != NULL)
		return refuse(c, 400, p->error);
	if (p->abort == ABORT_RESET || p->abort == ABORT_HEAD || p->garbage) {
		log_request(c, 0, p->abort == ABORT_RESET ? "abort=reset" :
		    p->abort == ABORT_HEAD ? "abort=head" : "garbage=1");
		if (p->abort == ABORT_RESET)
			return reset(c);
		r->done = 1;
		if (p->abort == ABORT_HEAD)
			return close_after_flush(c, "abort=head");
		bufferevent_write(c->bev, GARBAGE, strlen(GARBAGE));
		return close_after_flush(c, "garbage=1");
	}
	log_request(c, p->status, p->abort == ABORT_MID ? "abort=mid" : NULL);
	if (p->echo == ECHO_JSON)
		return send_fixed(c, p->status, echo_json(c));
	if (p->echo == ECHO_BODY) {
		/* Only bodiless answers get here; the others stream. */
		p->chunked = r->chunked_upload;
		return send_body(c, p->status, "application/octet-stream",
		    SRC_NONE, r->body_len);
	}
	if (p->has_size)
		return send_body(c, p->status, "text/plain", SRC_PATTERN,
		    p->size);
	if ((b = evbuffer_new()) != NULL) {
		summary_json(c, b);
		evbuffer_add_printf(b, "}\n");
	}
	return send_fixed(c, p->status, b);
}

/* ---- request bodies ---- */

/* Hashes what the first few chains hold; returns how much that was. */
static size_t
hash_input(struct conn *c, struct evbuffer *in, size_t n)
{
	struct evbuffer_iovec v[16];
	size_t done = 0, k;
	int i, m;

	m = evbuffer_peek(in, (ev_ssize_t)n, NULL, v, 16);
	for (i = 0; i < m && i < 16 && done < n; i++) {
		k = v[i].iov_len < n - done ? v[i].iov_len : n - done;
		EVP_DigestUpdate(c->sha, v[i].iov_base, k);
		done += k;
	}
	return done;
}

static int
echo_piece(struct conn *c, struct evbuffer *in, size_t n)
{
	struct response *s = &c->resp;
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (s->framing == FR_CHUNKED)
		evbuffer_add_printf(out, "%zx\r\n", n);
	evbuffer_remove_buffer(in, out, n);
	if (s->framing == FR_CHUNKED)
		evbuffer_add(out, "\r\n", 2);
	s->sent += n;
	if (s->mid && s->sent >= s->end) {
		c->req.done = 1;
		bufferevent_disable(c->bev, EV_READ);
		return close_after_flush(c, "abort=mid");
	}
	return 1;
}

/* Returns 1 after consuming body bytes, 0 to wait, -1 when closed. */
static int
body_data(struct conn *c)
{
	struct request *r = &c->req;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t n = evbuffer_get_length(in);

	if (n > r->remaining)
		n = (size_t)r->remaining;
	if (c->state == ST_ECHO) {
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) >=
		    OUT_HIGH) {
			bufferevent_disable(c->bev, EV_READ);
			return 0;		/* write_cb resumes */
		}
		if (c->resp.mid && r->body == BODY_LENGTH &&
		    n > c->resp.end - c->resp.sent)
			n = (size_t)(c->resp.end - c->resp.sent);
	}
	if (n == 0)
		return 0;
	n = hash_input(c, in, n);
	r->remaining -= n;
	r->body_len += n;
	if (r->remaining == 0 && r->body == BODY_LENGTH)
		r->body = BODY_NONE;
	if (c->state == ST_ECHO)
		return echo_piece(c, in, n);
	evbuffer_drain(in, n);
	return 1;
}

/* Chunk size lines, the CRLF after data, trailers: 1, 0 to wait, -1 bad. */
static int
chunk_line(struct conn *c)
{
	struct request *r = &c->req;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	char *line, *e;
	size_t len, digits;
	int ok = 1;

	if ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) == NULL)
		return evbuffer_get_length(in) > MAX_CHUNK_LINE ? -1 : 0;
	if (len > MAX_CHUNK_LINE)
		ok = 0;
	else if (r->cstate == CH_SIZE) {
		digits = strspn(line, "0123456789abcdefABCDEF");
		e = line + digits + strspn(line + digits, " \t");
		ok = digits > 0 && digits <= 15 && (*e == '\0' || *e == ';');
		r->remaining = ok ? strtoull(line, NULL, 16) : 0;
		r->cstate = r->remaining ? CH_DATA_END : CH_TRAILER;
	} else if (r->cstate == CH_DATA_END) {
		ok = len == 0;
		r->cstate = CH_SIZE;
	} else if (len == 0)
		r->body = BODY_NONE;		/* end of trailers */
	free(line);
	return ok ? 1 : -1;
}

/* Returns 1 when the whole body is in, 0 to wait, -1 when closed. */
static int
read_body(struct conn *c)
{
	struct request *r = &c->req;
	int rc;

	while (r->body != BODY_NONE) {
		if (r->remaining > 0)
			rc = body_data(c);
		else if ((rc = chunk_line(c)) < 0) {
			r->keep = 0;
			if (c->state == ST_BODY)
				return refuse(c, 400, "bad chunked body");
			r->done = 1;
			conn_close(c, "bad chunked body");
			return -1;
		}
		if (rc <= 0)
			return rc;
	}
	return 1;
}

static int
body_done(struct conn *c)
{
	struct request *r = &c->req;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int i, n = 0;

	EVP_DigestFinal_ex(c->sha, md, &n);
	for (i = 0; i < n && i < 32; i++)
		snprintf(r->sha_hex + 2 * i, 3, "%02x", md[i]);
	if (r->counted)
		remember_last(c);
	if (c->state == ST_ECHO) {
		if (c->resp.framing == FR_CHUNKED)
			bufferevent_write(c->bev, "0\r\n\r\n", 5);
		return finish_response(c);
	}
	if (r->p.delay > 0) {
		c->state = ST_DELAY;
		arm_timer(c, r->p.delay);
		return 0;
	}
	return respond(c);
}

/*
 * echo=body sends the body back while reading it, so the head goes first;
 * faults other than abort=mid and bodiless answers read it all instead.
 */
static int
start_request(struct conn *c)
{
	struct request *r = &c->req;
	struct params *p = &r->p;
	int rc;

	if ((rc = scan_headers(r)) != 0) {
		r->keep = 0;
		return refuse(c, rc, "bad request headers");
	}
	if ((r->special = special_path(r)) == SP_NONE) {
		r->counted = 1;
		srv.requests++;
		parse_params(r);
		if (ws_wanted(r))
			return ws_handshake(c);
	}
	EVP_DigestInit_ex(c->sha, EVP_sha256(), NULL);
	if (r->expect && r->minor == 1 && r->body != BODY_NONE)
		bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	r->stream = !r->special && p->echo == ECHO_BODY && p->error == NULL &&
	    !p->garbage && (p->abort == ABORT_NONE || p->abort == ABORT_MID) &&
	    has_body(c, p->status);
	if (!r->stream)
		c->state = ST_BODY;
	else if (p->delay > 0) {
		c->state = ST_DELAY;
		arm_timer(c, p->delay);
	} else
		return start_echo(c);
	return 0;
}

static int
start_echo(struct conn *c)
{
	struct request *r = &c->req;
	struct response *s = &c->resp;

	log_request(c, r->p.status, r->p.abort == ABORT_MID ? "abort=mid" :
	    NULL);
	choose_framing(c, r->p.status, r->body == BODY_CHUNKED);
	send_head(c, r->p.status, "application/octet-stream", r->length);
	s->mid = r->p.abort == ABORT_MID;
	/* Without a length, "about half" is whatever arrived first. */
	s->end = r->body == BODY_CHUNKED ? 1 : r->length / 2;
	c->state = ST_ECHO;
	bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
	if (s->mid && s->end == 0) {
		r->done = 1;
		return close_after_flush(c, "abort=mid");
	}
	return conn_process(c);
}

/* ---- WebSocket echo (RFC 6455) ---- */

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN	24		/* base64 of 16 bytes */
#define WS_MAX_CONTROL	125
#define WS_MAX_HEAD	14		/* 2 + 8 length + 4 mask */
#define WS_PROTOCOL_ERROR 1002

enum {
	WS_CONT = 0x0, WS_TEXT = 0x1, WS_BINARY = 0x2,
	WS_CLOSE = 0x8, WS_PING = 0x9, WS_PONG = 0xa,
};

static const char *
find_header(struct request *r, const char *name, int *count)
{
	const char *v = NULL;
	size_t i;

	*count = 0;
	for (i = 0; i < r->nhdrs; i++)
		if (strcasecmp(r->hdrs[i].name, name) == 0 && (*count)++ == 0)
			v = r->hdrs[i].value;
	return v;
}

/* A GET under /ws/ asking for "Upgrade: websocket" is a handshake. */
static int
ws_wanted(struct request *r)
{
	const char *v;
	size_t i;

	if (r->path_len < 4 || strncmp(r->target, "/ws/", 4) != 0)
		return 0;
	for (i = 0; i < r->nhdrs; i++) {
		v = r->hdrs[i].value;
		if (strcasecmp(r->hdrs[i].name, "Upgrade") == 0 &&
		    has_token(v, "websocket"))
			return 1;
	}
	return 0;
}

/* 22 base64 characters and "==": 16 bytes once decoded. */
static int
ws_key_ok(const char *key)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	if (key == NULL || strlen(key) != WS_KEY_LEN ||
	    strcmp(key + WS_KEY_LEN - 2, "==") != 0)
		return 0;
	for (i = 0; i < WS_KEY_LEN - 2; i++)
		if (strchr(b64, key[i]) == NULL)
			return 0;
	return 1;
}

/* The first subprotocol offered: its length, 0 if none or not a token. */
static size_t
ws_first_protocol(const char *v, const char **start)
{
	size_t n;

	if (v == NULL)
		return 0;
	v += strspn(v, " \t,");
	n = strcspn(v, " \t,");
	*start = v;
	for (size_t i = 0; i < n; i++)
		if (strchr("()<>@;:\\\"/[]?={}", v[i]) != NULL ||
		    (unsigned char)v[i] <= 0x20 || v[i] == 0x7f)
			return 0;
	return n;
}

static int
ws_handshake(struct conn *c)
{
	struct request *r = &c->req;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *key, *version, *conn, *proto = NULL;
	char buf[WS_KEY_LEN + sizeof(WS_GUID)], accept[4 * 21 / 3 + 4];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t plen;
	int nkey, nversion, nconn, nproto;

	key = find_header(r, "Sec-WebSocket-Key", &nkey);
	version = find_header(r, "Sec-WebSocket-Version", &nversion);
	conn = find_header(r, "Connection", &nconn);
	plen = ws_first_protocol(find_header(r, "Sec-WebSocket-Protocol",
	    &nproto), &proto);
	r->keep = 0;		/* whatever happens, no next HTTP request */
	if (strcmp(r->method, "GET") != 0 || r->minor != 1 ||
	    r->body != BODY_NONE)
		return refuse(c, 400, "websocket: not a bodiless HTTP/1.1 GET");
	if (conn == NULL || nconn != 1 || !has_token(conn, "upgrade"))
		return refuse(c, 400, "websocket: no Connection: upgrade");
	if (nkey != 1 || !ws_key_ok(key))
		return refuse(c, 400, "websocket: bad Sec-WebSocket-Key");
	if (nversion != 1 || strcmp(version, "13") != 0)
		return refuse_with(c, 426, "websocket: version 13 only",
		    "Sec-WebSocket-Version: 13\r\n");
	if (r->p.error != NULL)
		return refuse(c, 400, r->p.error);

	memcpy(buf, key, WS_KEY_LEN);
	memcpy(buf + WS_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
	if (!EVP_Digest(buf, WS_KEY_LEN + sizeof(WS_GUID) - 1, md, &mdlen,
	    EVP_sha1(), NULL) || mdlen != 20) {
		r->done = 1;
		conn_close(c, "websocket: SHA-1 failed");
		return -1;
	}
	EVP_EncodeBlock((unsigned char *)accept, md, (int)mdlen);
	evbuffer_add_printf(out, "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Accept: %s\r\n", accept);
	if (plen > 0)
		evbuffer_add_printf(out, "Sec-WebSocket-Protocol: %.*s\r\n",
		    (int)plen, proto);
	evbuffer_add_printf(out, "X-Upstream: %s\r\n", srv.name);
	if (r->p.headers != NULL)
		evbuffer_add_buffer(out, r->p.headers);
	evbuffer_add(out, "\r\n", 2);
	log_request(c, 101, "websocket");
	r->done = 1;
	request_reset(c);
	memset(&c->ws, 0, sizeof(c->ws));
	c->state = ST_WS;
	bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
	return conn_process(c);		/* frames sent with the handshake */
}

static void
ws_frame_head(struct evbuffer *out, unsigned b0, uint64_t len)
{
	unsigned char h[10];
	size_t n = 2;
	int i;

	h[0] = (unsigned char)b0;
	if (len <= WS_MAX_CONTROL)
		h[1] = (unsigned char)len;
	else if (len <= 0xffff) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		n = 4;
	} else {
		h[1] = 127;
		for (i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
		n = 10;
	}
	evbuffer_add(out, h, n);
}

/* Our close frame, then the end of the connection once it is written. */
static int
ws_close(struct conn *c, int code, const char *why)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	unsigned char b[2];

	ws_frame_head(out, 0x80 | WS_CLOSE, code ? 2 : 0);
	if (code) {
		b[0] = (unsigned char)(code >> 8);
		b[1] = (unsigned char)code;
		evbuffer_add(out, b, 2);
	}
	c->req.done = 1;
	bufferevent_disable(c->bev, EV_READ);
	return close_after_flush(c, why);
}

/*
 * Unmasks, in the input buffer, up to n bytes at its start (as many as the
 * first chains hold); returns how many.
 */
static size_t
ws_unmask(struct ws *w, struct evbuffer *in, size_t n)
{
	struct evbuffer_iovec v[8];
	unsigned char *p;
	size_t done = 0, k, j;
	unsigned moff = w->moff;
	int i, m;

	m = evbuffer_peek(in, (ev_ssize_t)n, NULL, v, 8);
	for (i = 0; i < m && i < 8 && done < n; i++) {
		p = v[i].iov_base;
		k = v[i].iov_len < n - done ? v[i].iov_len : n - done;
		for (j = 0; j < k; j++)
			p[j] ^= w->mask[(moff + j) & 3];
		moff = (unsigned)((moff + k) & 3);
		done += k;
	}
	w->moff = moff;
	return done;
}

/* A whole control frame (its head drained) is at the start of the input. */
static int
ws_control(struct conn *c, int op, size_t len)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	unsigned char p[WS_MAX_CONTROL];
	size_t j;

	evbuffer_remove(in, p, len);
	for (j = 0; j < len; j++)
		p[j] ^= c->ws.mask[j & 3];
	if (op == WS_PING) {
		ws_frame_head(out, 0x80 | WS_PONG, len);
		evbuffer_add(out, p, len);
	} else if (op == WS_CLOSE) {
		if (len == 1)
			return ws_close(c, WS_PROTOCOL_ERROR,
			    "websocket: close frame of 1 byte");
		return ws_close(c, len ? p[0] << 8 | p[1] : 0,
		    "websocket: closed by peer");
	}
	return 0;				/* a pong: nothing to do */
}

/* Echoes the frames in the input; 0 to wait for more, -1 when closed. */
static int
ws_process(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct ws *w = &c->ws;
	unsigned char h[WS_MAX_HEAD];
	size_t have, hlen, n;
	uint64_t len;
	int fin, op, i;

	for (;;) {
		if (evbuffer_get_length(out) >= OUT_HIGH) {
			w->paused = 1;
			bufferevent_disable(c->bev, EV_READ);
			return 0;		/* write_cb resumes at OUT_LOW */
		}
		if (w->in_frame) {
			n = evbuffer_get_length(in);
			if (n > w->remaining)
				n = (size_t)w->remaining;
			if (n == 0)
				return 0;
			n = ws_unmask(w, in, n);
			evbuffer_remove_buffer(in, out, n);
			if ((w->remaining -= n) == 0)
				w->in_frame = 0;
			continue;
		}
		have = (size_t)evbuffer_copyout(in, h, sizeof(h));
		if (have < 2)
			return 0;
		fin = h[0] & 0x80;
		op = h[0] & 0x0f;
		if (h[0] & 0x70)
			return ws_close(c, WS_PROTOCOL_ERROR,
			    "websocket: reserved bits set");
		if (!(h[1] & 0x80))
			return ws_close(c, WS_PROTOCOL_ERROR,
			    "websocket: unmasked client frame");
		len = h[1] & 0x7f;
		hlen = len == 126 ? 4 : len == 127 ? 10 : 2;
		if (have < hlen + 4)
			return 0;
		if (len == 126)
			len = (uint64_t)h[2] << 8 | h[3];
		else if (len == 127)
			for (len = 0, i = 0; i < 8; i++)
				len = len << 8 | h[2 + i];
		if (len >> 63)
			return ws_close(c, WS_PROTOCOL_ERROR,
			    "websocket: frame length");
		memcpy(w->mask, h + hlen, 4);
		hlen += 4;
		if (op >= WS_CLOSE) {
			if (op > WS_PONG || !fin || len > WS_MAX_CONTROL)
				return ws_close(c, WS_PROTOCOL_ERROR,
				    "websocket: bad control frame");
			if (evbuffer_get_length(in) < hlen + len)
				return 0;
			evbuffer_drain(in, hlen);
			if (ws_control(c, op, (size_t)len) < 0)
				return -1;	/* closed and freed */
			if (c->state != ST_WS)
				return 0;	/* our close is being written */
			continue;
		}
		if (op > WS_BINARY || (op == WS_CONT) != w->fragmented)
			return ws_close(c, WS_PROTOCOL_ERROR, op > WS_BINARY ?
			    "websocket: unknown opcode" :
			    "websocket: bad fragmentation");
		w->fragmented = !fin;
		evbuffer_drain(in, hlen);
		ws_frame_head(out, (unsigned)(fin | op), len);
		w->remaining = len;
		w->moff = 0;
		w->in_frame = len > 0;
	}
}

/* ---- driving a connection ---- */

/* Moves the connection on with the input there is; -1 when it closed. */
static int
conn_process(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	int rc;

	for (;;) {
		switch (c->state) {
		case ST_HEAD:
			if ((rc = read_head(c)) == 0 && c->peer_eof) {
				conn_close(c, "peer closed");
				return -1;
			}
			if (rc == 0)
				return 0;
			if (rc > 1)
				return refuse(c, rc, "bad request head");
			if (start_request(c) < 0)
				return -1;
			break;
		case ST_BODY:
		case ST_ECHO:
			if ((rc = read_body(c)) < 0)
				return -1;
			if (rc == 0)
				return 0;
			if (body_done(c) < 0)
				return -1;
			break;
		case ST_LINGER:
			evbuffer_drain(in, evbuffer_get_length(in));
			return 0;
		case ST_WS:
			return ws_process(c);
		default:
			return 0;
		}
	}
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	conn_process(arg);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	switch (c->state) {
	case ST_ECHO:
		enable_read(c);
		conn_process(c);
		break;
	case ST_SEND:
		send_more(c);
		break;
	case ST_FLUSH:
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			flushed(c);
		break;
	case ST_WS:
		if (c->ws.paused) {
			c->ws.paused = 0;
			enable_read(c);
			conn_process(c);
		}
		break;
	default:
		break;
	}
}

/*
 * EOF while a response is pending means the client gave up on it; after
 * everything is queued it may only be a half-close, so finish writing
 * and answer the requests already buffered before closing.
 */
static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (c->state == ST_FLUSH && !(what & BEV_EVENT_ERROR)) {
		c->peer_eof = 1;
		return;
	}
	if (c->state == ST_LINGER)
		conn_close(c, c->close_reason);
	else if (what & BEV_EVENT_ERROR)
		conn_close(c, evutil_socket_error_to_string(
		    EVUTIL_SOCKET_ERROR()));
	else
		conn_close(c, c->state == ST_WS ? "peer closed the websocket" :
		    c->state == ST_HEAD && c->req.line == NULL ?
		    "peer closed" : "peer closed mid-request");
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	switch (c->state) {
	case ST_DELAY:
		if (c->req.stream)
			start_echo(c);
		else
			respond(c);
		break;
	case ST_DRIP:
		c->state = ST_SEND;
		send_more(c);
		break;
	case ST_LINGER:
		conn_close(c, c->close_reason);
		break;
	default:
		break;
	}
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct conn *c;
	char host[48];
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->bev = bufferevent_socket_new(srv.base, fd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	c->timer = evtimer_new(srv.base, timer_cb, c);
	c->sha = EVP_MD_CTX_new();
	if (getnameinfo(sa, (socklen_t)salen, host, sizeof(host), NULL, 0,
	    NI_NUMERICHOST) != 0)
		strcpy(host, "?");
	snprintf(c->peer, sizeof(c->peer), sa->sa_family == AF_INET6 ?
	    "[%s]:%d" : "%s:%d", host, ntohs(sa->sa_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)sa)->sin6_port :
	    ((struct sockaddr_in *)sa)->sin_port));
	if ((c->next = srv.conns) != NULL)
		c->next->prev = c;
	srv.conns = c;
	srv.accepted++;
	if (++srv.open > srv.max_open)
		srv.max_open = srv.open;
	request_reset(c);
	if (c->timer == NULL || c->sha == NULL) {
		conn_close(c, "out of memory");
		return;
	}
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, IN_LIMIT);
	bufferevent_set_max_single_read(c->bev, 64 * 1024);
	bufferevent_set_max_single_write(c->bev, OUT_HIGH);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- listeners and main ---- */

static void
reenable_cb(evutil_socket_t fd, short what, void *arg)
{
	evconnlistener_enable(arg);
}

/* Out of fds, say: pause accepting rather than spin on a readable socket. */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct timeval tv = { 0, 100 * 1000 };

	fprintf(stderr, "testup %s: accept: %s\n", srv.name,
	    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	evconnlistener_disable(l);
	event_base_once(srv.base, -1, EV_TIMEOUT, reenable_cb, l, &tv);
}

static evutil_socket_t
bind_one(const struct addrinfo *ai)
{
	evutil_socket_t fd;
	int one = 1;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
	    listen(fd, BACKLOG) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* HOST:PORT or [V6]:PORT; appends the bound address to `bound'. */
static struct evconnlistener *
listen_on(const char *spec, char *bound, size_t size)
{
	struct addrinfo hints, *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], port[16], *colon;
	evutil_socket_t fd = -1;
	struct evconnlistener *l;
	uint64_t n;

	if (spec[0] == '[')
		snprintf(host, sizeof(host), "%s", spec + 1);
	else
		snprintf(host, sizeof(host), "%s", spec);
	colon = strrchr(host, ':');
	if (colon == NULL || colon == host || strlen(colon + 1) >= sizeof(port) ||
	    !number(colon + 1, strlen(colon + 1), 0, 65535, &n) ||
	    (spec[0] == '[' && colon[-1] != ']')) {
		fprintf(stderr, "testup: bad listen address %s\n", spec);
		return NULL;
	}
	snprintf(port, sizeof(port), "%s", colon + 1);
	colon[spec[0] == '[' ? -1 : 0] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0) {
		fprintf(stderr, "testup: cannot resolve %s\n", spec);
		return NULL;
	}
	for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
		fd = bind_one(ai);
	freeaddrinfo(res);
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port,
	    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		fprintf(stderr, "testup: cannot listen on %s: %s\n", spec,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	snprintf(bound + strlen(bound), size - strlen(bound),
	    ss.ss_family == AF_INET6 ? " [%s]:%s" : " %s:%s", host, port);
	l = evconnlistener_new(srv.base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (l == NULL)
		close(fd);
	else
		evconnlistener_set_error_cb(l, accept_error_cb);
	return l;
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(srv.base);
}

static void
usage(void)
{
	fprintf(stderr, "usage: testup [-l HOST:PORT]... [-n NAME] [-v]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct evconnlistener **ls;
	struct event *sigs[2];
	const char **specs;
	char bound[4096] = "";
	struct rlimit rl;
	int ch, i, n = 0, ok = 1;

	srv.name = "testup";
	if ((specs = calloc((size_t)argc + 1, sizeof(*specs))) == NULL ||
	    (ls = calloc((size_t)argc + 1, sizeof(*ls))) == NULL)
		return 1;
	while ((ch = getopt(argc, argv, "l:n:v")) != -1) {
		if (ch == 'l')
			specs[n++] = optarg;
		else if (ch == 'n')
			srv.name = optarg;
		else if (ch == 'v')
			srv.verbose++;
		else
			usage();
	}
	if (optind != argc)
		usage();
	if (n == 0)
		specs[n++] = DEFAULT_LISTEN;
	signal(SIGPIPE, SIG_IGN);
	/* 10,000 WebSocket tunnels and more: as many fds as allowed. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	pattern_init();
	if ((srv.base = event_base_new()) == NULL)
		return 1;
	for (i = 0; i < n && ok; i++)
		ok = (ls[i] = listen_on(specs[i], bound, sizeof(bound))) != NULL;
	sigs[0] = evsignal_new(srv.base, SIGTERM, signal_cb, NULL);
	sigs[1] = evsignal_new(srv.base, SIGINT, signal_cb, NULL);
	for (i = 0; i < 2 && ok; i++)
		ok = sigs[i] != NULL && evsignal_add(sigs[i], NULL) == 0;
	if (ok) {
		printf("testup %s listening on%s\n", srv.name, bound);
		fflush(stdout);
		event_base_dispatch(srv.base);
	}
	while (srv.conns != NULL)
		conn_close(srv.conns, "shutting down");
	for (i = 0; i < n; i++)
		if (ls[i] != NULL)
			evconnlistener_free(ls[i]);
	for (i = 0; i < 2; i++)
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	event_base_free(srv.base);
	libevent_global_shutdown();
	free(srv.last);
	free(specs);
	free(ls);
	return ok ? 0 : 1;
}
