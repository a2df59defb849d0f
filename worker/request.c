/*
 * Request objects: a free list of them (no malloc per request once warm),
 * their identity (request id, client address behind trusted proxies), the
 * request body as the gateway reads it, and the access-log entry written
 * when one ends.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "gateway/metrics/metrics.h"
#include "lib/log.h"
#include "worker/accesslog.h"
#include "worker/conn.h"
#include "worker/worker.h"

#define REQ_POOL_MAX	64

static struct request	*req_pool;
static size_t		 req_pooled;
static uint64_t		 rng[2];

/* xorshift128+: request ids need to be unique, not secret. */
static uint64_t
rng_next(void)
{
	uint64_t s1 = rng[0], s0 = rng[1];

	if ((rng[0] | rng[1]) == 0) {
		if (getrandom(rng, sizeof(rng), 0) != sizeof(rng) ||
		    (rng[0] | rng[1]) == 0) {
			rng[0] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL;
			rng[1] = (uint64_t)time(NULL) | 1;
		}
		s1 = rng[0];
		s0 = rng[1];
	}
	rng[0] = s0;
	s1 ^= s1 << 23;
	rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return rng[1] + s0;
}

/* An X-Request-Id we pass on: short, and safe in headers and logs. */
static bool
request_id_ok(const char *v, size_t n)
{
	size_t i;

	if (n == 0 || n > REQ_ID_MAX)
		return false;
	for (i = 0; i < n; i++) {
		char ch = v[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("-_.:+/=@", ch)))
			return false;
	}
	return true;
}

static void
request_make_id(struct request *r)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t a = rng_next(), b = rng_next();
	int i;

	for (i = 0; i < 16; i++) {
		r->id[i] = hex[(a >> (i * 4)) & 15];
		r->id[16 + i] = hex[(b >> (i * 4)) & 15];
	}
	r->id[32] = '\0';
	r->id_len = 32;
}

static bool
trusted(const struct sockaddr *sa)
{
	const struct server_sect *s = &worker.cfg->server;
	size_t i;

	for (i = 0; i < s->ntrusted; i++)
		if (cidr_match(&s->trusted[i], sa))
			return true;
	return false;
}

/* Parses one X-Forwarded-For element; false if it is not an address. */
static bool
xff_addr(const char *p, size_t n, struct sockaddr_storage *ss)
{
	char tmp[64];

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, tmp, &((struct sockaddr_in *)ss)->sin_addr)) {
		ss->ss_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, tmp,
	    &((struct sockaddr_in6 *)ss)->sin6_addr)) {
		ss->ss_family = AF_INET6;
		return true;
	}
	return false;
}

/*
 * The client is the peer, unless the peer is a trusted proxy: then walk
 * X-Forwarded-For from the right and take the first address that is not
 * itself trusted (what nginx's real_ip_recursive does).
 */
static void
request_client(struct request *r)
{
	struct conn *c = r->conn;
	struct sockaddr_storage ss;
	const char *best = NULL;
	size_t bestlen = 0, i;

	if (worker.cfg->server.ntrusted == 0 ||
	    !trusted(&c->peer.sa))
		return;
	for (i = r->head.nheaders; i-- > 0;) {
		const struct http_header *h = &r->head.headers[i];
		const char *v = h->value, *end = v + h->value_len, *p;

		if (!http_token_eq(h->name, h->name_len, "x-forwarded-for"))
			continue;
		while (end > v) {
			const char *s, *e;

			p = end;
			while (p > v && p[-1] != ',')
				p--;
			for (s = p; s < end && (*s == ' ' || *s == '\t'); s++)
				;
			for (e = end; e > s && (e[-1] == ' ' || e[-1] == '\t');
			    e--)
				;
			end = p > v ? p - 1 : v;
			if (e == s)
				continue;
			best = s;
			bestlen = (size_t)(e - s);
			if (!xff_addr(s, bestlen, &ss) ||
			    !trusted((struct sockaddr *)&ss))
				goto found;
		}
	}
	if (best == NULL)
		return;
found:
	if (bestlen >= sizeof(r->client))
		bestlen = sizeof(r->client) - 1;
	memcpy(r->client, best, bestlen);
	r->client[bestlen] = '\0';
}

struct request *
request_new(struct conn *c)
{
	struct request *r = request_new_on(c, &h1_carrier);

	if (r != NULL)
		c->req = r;
	return r;
}

struct request *
request_new_on(struct conn *c, const struct req_carrier *carrier)
{
	struct request *r = req_pool;

	if (r != NULL) {
		req_pool = r->next_free;
		req_pooled--;
	} else if ((r = malloc(sizeof(*r))) == NULL)
		return NULL;
	/* The head is filled by the parser; clear what precedes it. */
	memset(r, 0, offsetof(struct request, head));
	memset(&r->head, 0, offsetof(struct http_head, headers));
	r->head.content_length = -1;
	memset(&r->body_left, 0, offsetof(struct request, resp_extra) -
	    offsetof(struct request, body_left));
	r->carrier = carrier;
	r->conn = c;
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	if (!req_admin(r))		/* scrapes are not traffic */
		metrics_in_flight(1);
	request_make_id(r);
	_Static_assert(sizeof(r->client) == sizeof(c->peer_str),
	    "client and peer_str differ in size");
	memcpy(r->client, c->peer_str, sizeof(r->client));
	return r;
}

static void
rebase(const char **p, const char *old, size_t len, char *nb)
{
	uintptr_t a = (uintptr_t)*p, o = (uintptr_t)old;

	/* Pointers outside the buffer (the literal "/") stay. */
	if (*p != NULL && a >= o && a < o + len)
		*p = nb + (a - o);
}

void
request_rebase(struct request *r, const char *old, size_t len, char *nb)
{
	struct http_head *h = &r->head;
	size_t i;

	rebase(&h->method, old, len, nb);
	rebase(&h->target, old, len, nb);
	rebase(&h->path, old, len, nb);
	rebase(&h->query, old, len, nb);
	rebase(&h->host, old, len, nb);
	for (i = 0; i < h->nheaders; i++) {
		rebase(&h->headers[i].name, old, len, nb);
		rebase(&h->headers[i].value, old, len, nb);
	}
	for (i = 0; i < r->nparams; i++)
		rebase(&r->params[i].value, old, len, nb);
	rebase(&r->trace.state, old, len, nb);
}

/* Called once the head is parsed: adopt the client's ids. */
void
request_identify(struct request *r)
{
	const struct http_header *h = req_header(r, "x-request-id");

	if (h != NULL && request_id_ok(h->value, h->value_len)) {
		memcpy(r->id, h->value, h->value_len);
		r->id[h->value_len] = '\0';
		r->id_len = h->value_len;
	}
	request_client(r);
}

void
request_free(struct request *r)
{
	if (!req_admin(r) && !r->tunnel)	/* a tunnel said so already */
		metrics_in_flight(-1);
	if (r->filter_state != NULL && r->filter != NULL)
		r->filter->release(r);
	r->filter = NULL;
	r->filter_state = NULL;
	if (r->keep != NULL) {
		buf_free(r->keep);
		free(r->keep);
		r->keep = NULL;
	}
	if (r->up_extra != NULL) {
		buf_free(r->up_extra);
		free(r->up_extra);
		r->up_extra = NULL;
	}
	if (req_pooled >= REQ_POOL_MAX) {
		free(r);
		return;
	}
	r->next_free = req_pool;
	req_pool = r;
	req_pooled++;
}

void
request_log(struct request *r)
{
	if (req_admin(r))
		return;			/* scrapes are not traffic */
	metrics_request(r);
	if (worker.app != NULL && worker.app->done != NULL)
		worker.app->done(r);
	accesslog_write(r);
}

const struct http_header *
req_header(const struct request *r, const char *name)
{
	return http_find_header(&r->head, name);
}

const char *
req_peer(const struct request *r)
{
	return r->conn->peer_str;
}

bool
req_peer_trusted(const struct request *r)
{
	return worker.cfg->server.ntrusted > 0 && trusted(&r->conn->peer.sa);
}

bool
req_tls(const struct request *r)
{
	return r->conn->lst->cfg->tls_cert != NULL;
}

int
req_upstream_header(struct request *r, const char *name, const char *value)
{
	uint16_t nl = (uint16_t)strlen(name), vl = (uint16_t)strlen(value);
	int rc = 0;

	if (strlen(name) > 1024 || strlen(value) > 8192)
		return 0;			/* not worth a header */
	if (r->up_extra == NULL &&
	    (r->up_extra = calloc(1, sizeof(*r->up_extra))) == NULL)
		return -1;
	rc |= buf_append(r->up_extra, &nl, 2);
	rc |= buf_append(r->up_extra, name, nl);
	rc |= buf_append(r->up_extra, &vl, 2);
	rc |= buf_append(r->up_extra, value, vl);
	return rc;
}

bool
req_admin(const struct request *r)
{
	return r->conn->lst->cfg->admin;
}

uint64_t
req_elapsed_ms(const struct request *r)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)(now.tv_sec - r->start.tv_sec) * 1000 +
	    (uint64_t)((now.tv_nsec - r->start.tv_nsec) / 1000000);
}

bool
req_has_body(const struct request *r)
{
	return r->body_chunked || r->head.content_length > 0;
}

/* The gateway took bytes: reclaim space and read again if we had paused. */
static void
body_consumed(struct conn *c)
{
	if (c->body_off == c->rlen && !c->req->body_done)
		c->rlen = c->body_off = c->head_len;
	if (!c->reading && !c->closing && c->rlen < c->rcap &&
	    event_add(&c->ev_read, NULL) == 0)
		c->reading = true;
}

static ssize_t
body_too_large(struct request *r)
{
	log_info("request %.*s: body over max_body_size", (int)r->id_len,
	    r->id);
	r->body_done = true;	/* stop the reader; the connection closes */
	r->resp_close = true;
	req_error(r, 413, "request body too large", NULL);
	return REQ_BODY_ERROR;
}

static ssize_t
read_chunked(struct request *r, char *dst, size_t n)
{
	struct conn *c = r->conn;
	size_t copied = 0, used, dlen;
	const char *data;
	enum http_chunk_result rc;

	while (copied < n && c->body_off < c->rlen) {
		rc = http_chunked_next(&r->chunk, c->rbuf + c->body_off,
		    c->rlen - c->body_off, n - copied, &used, &data, &dlen);
		c->body_off += used;
		if (rc == CHUNK_DATA) {
			memcpy(dst + copied, data, dlen);
			copied += dlen;
		} else if (rc == CHUNK_DONE) {
			r->body_done = true;
			break;
		} else if (rc == CHUNK_ERROR) {
			r->body_done = true;
			r->resp_close = true;
			req_error(r, 400, "malformed chunked body", NULL);
			return REQ_BODY_ERROR;
		}
	}
	return (ssize_t)copied;
}

int
req_body_keep(struct request *r, size_t max)
{
	if (r->keep != NULL) {
		/* Kept already (a check read the body): keep on. */
		if (max > r->keep_max)
			r->keep_max = max;
		return 0;
	}
	if ((r->keep = calloc(1, sizeof(*r->keep))) == NULL)
		return -1;
	r->keep_max = max;
	/* Bytes handed over before now were not kept. */
	r->keep_lost = r->body_bytes > 0;
	return 0;
}

int
req_read_whole(struct request *r)
{
	char scratch[16384];
	ssize_t n;

	for (;;) {
		n = req_read_body(r, scratch, sizeof(scratch));
		if (n == REQ_BODY_AGAIN || n == REQ_BODY_ERROR)
			return (int)n;
		if (r->keep == NULL || r->keep_lost)
			return REQ_BODY_TOO_BIG;
		if (n == 0)
			return REQ_BODY_WHOLE;
	}
}

bool
req_body_replayable(const struct request *r)
{
	return r->body_bytes == 0 || (r->keep != NULL && !r->keep_lost);
}

bool
req_body_rewind(struct request *r)
{
	if (r->body_bytes == 0)
		return true;		/* nothing handed over yet */
	if (r->keep == NULL || r->keep_lost)
		return false;
	r->keep_pos = 0;
	return true;
}

/* Hands over kept bytes after a rewind; -1 when there are none. */
static ssize_t
read_kept(struct request *r, char *dst, size_t n)
{
	size_t k;

	if (r->keep == NULL || r->keep_pos >= r->keep->len)
		return -1;
	k = r->keep->len - r->keep_pos;
	if (k > n)
		k = n;
	memcpy(dst, r->keep->data + r->keep_pos, k);
	r->keep_pos += k;
	return (ssize_t)k;
}

static void
keep_bytes(struct request *r, const char *p, size_t n)
{
	if (r->keep == NULL || r->keep_lost || n == 0)
		return;
	if (r->keep->len + n > r->keep_max ||
	    buf_append(r->keep, p, n) != 0) {
		r->keep_lost = true;
		buf_free(r->keep);
		return;
	}
	r->keep_pos = r->keep->len;
}

ssize_t
req_read_body(struct request *r, char *dst, size_t n)
{
	ssize_t got;

	if (n > 0 && (got = read_kept(r, dst, n)) >= 0)
		return got;
	got = r->carrier->read(r, dst, n);
	if (got > 0)
		keep_bytes(r, dst, (size_t)got);
	return got;
}

ssize_t
h1_read_body(struct request *r, char *dst, size_t n)
{
	struct conn *c = r->conn;
	uint64_t max = worker.cfg->server.max_body_size;
	ssize_t got;

	if (r->body_done)
		return 0;
	if (r->body_chunked) {
		if ((got = read_chunked(r, dst, n)) < 0)
			return got;
	} else {
		size_t avail = c->rlen - c->body_off;

		if ((int64_t)avail > r->body_left)
			avail = (size_t)r->body_left;
		got = (ssize_t)(avail < n ? avail : n);
		memcpy(dst, c->rbuf + c->body_off, (size_t)got);
		c->body_off += (size_t)got;
		r->body_left -= got;
		if (r->body_left == 0)
			r->body_done = true;
	}
	r->body_bytes += (uint64_t)got;
	if (max > 0 && r->body_bytes > max)
		return body_too_large(r);
	body_consumed(c);
	if (got == 0 && !r->body_done)
		return REQ_BODY_AGAIN;
	return got;
}

bool
request_discard_body(struct request *r)
{
	struct conn *c = r->conn;
	size_t used, dlen;
	const char *data;

	if (r->body_done)
		return true;
	if (!r->body_chunked) {
		if ((int64_t)(c->rlen - c->body_off) < r->body_left)
			return false;
		c->body_off += (size_t)r->body_left;
		r->body_left = 0;
		r->body_done = true;
		return true;
	}
	while (c->body_off < c->rlen) {
		enum http_chunk_result rc = http_chunked_next(&r->chunk,
		    c->rbuf + c->body_off, c->rlen - c->body_off, SIZE_MAX,
		    &used, &data, &dlen);

		c->body_off += used;
		if (rc == CHUNK_DONE) {
			r->body_done = true;
			return true;
		}
		if (rc == CHUNK_ERROR)
			return false;
	}
	return false;
}
