/*
 * The libcurl transport: one try of a call (call.h) through the worker's
 * multi handle (https:// servers, and any upstream with transport: curl).
 * A struct proxy (from a free list) holds the easy
 * handle (reused, with its buffers), the upstream response head as it
 * arrives, and the pause state of each direction:
 *
 *   client body --req_read_body--> READFUNCTION --> upstream
 *     (or the call's own body, as POSTFIELDS)
 *   upstream --> WRITEFUNCTION --sink->body--> the call's sink
 *
 * A direction with nothing to move returns libcurl's PAUSE code and is
 * resumed by the call's body_ready/writable, so a slow client slows the
 * upstream transfer instead of growing memory.  The try ends only from
 * proxy_done() (never inside a libcurl callback).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gateway.h"
#include "gateway/upstream/curlev.h"
#include "gateway/upstream/call.h"
#include "gateway/upstream/upstream.h"
#include "lib/buf.h"
#include "lib/log.h"

#define PROXY_POOL_MAX		64
#define UPSTREAM_HEAD_MAX	(64 * 1024)

/* Why a libcurl callback stopped the transfer (its CURLcode cannot say). */
enum proxy_fail {
	PF_NONE,
	PF_BAD_HEAD,		/* the upstream's head is not to pass on */
	PF_UPGRADE,		/* 101: protocol switches are not proxied */
	PF_SINK,		/* the sink stopped it (client gone) */
	PF_RETRY		/* call_accept() wants another try */
};

struct proxy {
	struct curl_job		 job;		/* first: curlev's cookie */
	struct call		*call;
	int			 slot;		/* of the call's tries */
	struct request		*req;		/* the client's; NULL once let go */
	struct upstream_rt	*up;
	size_t			 server;
	CURL			*easy;
	struct curl_slist	*hdrs;
	struct buf		 url;
	struct buf		 rhead;		/* upstream header lines */
	struct buf		 chead;		/* filtered, for the client */
	struct buf		 trailers;	/* after the body (gRPC) */
	int			 status;
	const char		*reason;
	size_t			 reason_len;
	char			 reason_buf[64];
	bool			 in_head;	/* status line seen */
	bool			 head_done;
	enum proxy_fail		 fail;		/* why a callback said stop */
	bool			 read_paused;
	bool			 write_paused;
	bool			 has_accept;
	bool			 has_ctype;
	struct proxy		*next_free;
	char			 errbuf[CURL_ERROR_SIZE];
};

static struct proxy	*proxy_pool;
static size_t		 proxy_pooled;

static void	proxy_done(struct curl_job *, CURLcode);
static void	proxy_body_ready(void *);
static void	proxy_writable(void *);
static void	proxy_cancel(void *);
static bool	proxy_own_body(const struct proxy *);

static const struct call_try_ops proxy_ops = {
	proxy_body_ready, proxy_writable, proxy_cancel
};

/* -- pool -------------------------------------------------------------- */

static struct proxy *
proxy_get(void)
{
	struct proxy *p = proxy_pool;

	if (p != NULL) {
		proxy_pool = p->next_free;
		proxy_pooled--;
		curl_easy_reset(p->easy);
	} else {
		if ((p = calloc(1, sizeof(*p))) == NULL)
			return NULL;
		if ((p->easy = curl_easy_init()) == NULL) {
			free(p);
			return NULL;
		}
	}
	p->job.done = proxy_done;
	p->req = NULL;
	p->hdrs = NULL;
	buf_reset(&p->url);
	buf_reset(&p->rhead);
	buf_reset(&p->chead);
	buf_reset(&p->trailers);
	p->status = 0;
	p->reason = NULL;
	p->in_head = p->head_done = false;
	p->fail = PF_NONE;
	p->read_paused = p->write_paused = false;
	p->errbuf[0] = '\0';
	return p;
}

static void
proxy_put(struct proxy *p)
{
	curl_slist_free_all(p->hdrs);
	p->hdrs = NULL;
	p->up = NULL;
	if (proxy_pooled >= PROXY_POOL_MAX) {
		curl_easy_cleanup(p->easy);
		buf_free(&p->url);
		buf_free(&p->rhead);
		buf_free(&p->chead);
		buf_free(&p->trailers);
		free(p);
		return;
	}
	buf_trim(&p->trailers, 4096);
	buf_trim(&p->rhead, 8192);
	buf_trim(&p->chead, 8192);
	p->next_free = proxy_pool;
	proxy_pool = p;
	proxy_pooled++;
}

/* -- libcurl callbacks ---------------------------------------------- */

/* HTAB, SP, VCHAR, obs-text: anything else (a bare CR) makes it a 502. */
static bool
reason_ok(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c != '\t' && (c < ' ' || c == 0x7f))
			return false;
	}
	return true;
}

static void
proxy_status_line(struct proxy *p, const char *line, size_t len)
{
	const char *sp = memchr(line, ' ', len), *end = line + len;
	int status = 0, i;

	/* "HTTP/1.1 200 OK\r\n" */
	for (i = 1; sp != NULL && i <= 3 && sp + i < end; i++) {
		if (sp[i] < '0' || sp[i] > '9')
			break;
		status = status * 10 + (sp[i] - '0');
	}
	if (sp == NULL || i != 4 || status < 100) {
		p->fail = PF_BAD_HEAD;
		return;
	}
	p->status = status;
	p->reason = NULL;
	if (sp + 4 < end && sp[4] == ' ') {
		const char *r = sp + 5, *re = end;
		size_t n;

		while (re > r && (re[-1] == '\n' || re[-1] == '\r'))
			re--;
		n = (size_t)(re - r);
		if (!reason_ok(r, n)) {
			p->fail = PF_BAD_HEAD;	/* as the native parser: 502 */
			return;
		}
		if (n > 0 && n < sizeof(p->reason_buf)) {
			memcpy(p->reason_buf, r, n);
			p->reason = p->reason_buf;
			p->reason_len = n;
		}
	}
}

static int
proxy_head_end(struct proxy *p)
{
	struct request *r = p->req;
	int64_t clen;

	if (headers_upstream_response(p->rhead.data, p->rhead.len, r->id,
	    r->id_len, &p->chead, &clen) == -1) {
		p->fail = PF_BAD_HEAD;
		return -1;
	}
	if (!call_accept(p->call, p->slot, p->status)) {
		p->fail = PF_RETRY;	/* this answer is dropped */
		return -1;
	}
	if (call_head(p->call, p->status, p->reason, p->reason_len,
	    p->chead.data, p->chead.len, clen) == -1) {
		p->fail = PF_SINK;
		return -1;
	}
	return 0;
}

/*
 * A trailer field after the body (libcurl hands them to the header
 * callback): kept for the sink, which passes them on where the client's
 * protocol carries them (gRPC's grpc-status).  Framing and hop-by-hop
 * fields are not trailers anyone may send; they are dropped.
 */
static size_t
proxy_trailer(struct proxy *p, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);

	if (colon == NULL || colon == line)
		return len;		/* the blank line */
	if (headers_hop_by_hop(line, (size_t)(colon - line)) ||
	    http_token_eq(line, (size_t)(colon - line), "content-length"))
		return len;
	if (p->trailers.len + len > UPSTREAM_HEAD_MAX ||
	    buf_append(&p->trailers, line, len) != 0) {
		p->fail = PF_BAD_HEAD;
		return 0;
	}
	return len;
}

/*
 * The address left the DNS answer while this transfer ran: its
 * connection is not to go back to libcurl's pool.  (Idle ones there are
 * never taken again, CONNECT_TO keys them by the address, and close
 * after keepalive_timeout.)
 */
static void
proxy_drained(struct proxy *p)
{
	if (p->up->servers[p->server].state != ADDR_LIVE)
		curl_easy_setopt(p->easy, CURLOPT_FORBID_REUSE, 1L);
}

static size_t
proxy_header_cb(char *line, size_t size, size_t n, void *arg)
{
	struct proxy *p = arg;
	size_t len = size * n;

	if (p->req == NULL || p->fail != PF_NONE)
		return 0;
	if (p->head_done)
		return proxy_trailer(p, line, len);
	if (!p->in_head) {
		proxy_status_line(p, line, len);
		p->in_head = true;
		return p->fail != PF_NONE ? 0 : len;
	}
	if (len > 2 || (line[0] != '\r' && line[0] != '\n')) {
		if (p->rhead.len + len > UPSTREAM_HEAD_MAX ||
		    buf_append(&p->rhead, line, len) != 0) {
			p->fail = PF_BAD_HEAD;
			return 0;
		}
		return len;
	}
	/* The blank line.  An interim 1xx answer is dropped whole. */
	p->in_head = false;
	if (p->status == 101) {
		p->fail = PF_UPGRADE;
		return 0;
	}
	if (p->status < 200) {
		buf_reset(&p->rhead);
		return len;
	}
	p->head_done = true;
	proxy_drained(p);
	return proxy_head_end(p) == -1 ? 0 : len;
}

static size_t
proxy_write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct proxy *p = arg;
	size_t len = size * n;

	if (p->req == NULL || !p->head_done)
		return 0;
	proxy_drained(p);
	if (call_full(p->call)) {
		p->write_paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	if (call_body(p->call, data, len) == -1) {
		p->fail = PF_SINK;
		return 0;
	}
	return len;
}

static size_t
proxy_read_cb(char *dst, size_t size, size_t n, void *arg)
{
	struct proxy *p = arg;
	ssize_t got;

	if (p->req == NULL)
		return CURL_READFUNC_ABORT;
	got = req_read_body(p->req, dst, size * n);
	if (got >= 0)
		return (size_t)got;
	if (got == REQ_BODY_AGAIN) {
		p->read_paused = true;
		return CURL_READFUNC_PAUSE;
	}
	/* The body was bad or too big and the client has been answered. */
	p->req = NULL;
	return CURL_READFUNC_ABORT;
}

/*
 * libcurl rewinds the upload when it sends the request again (a reused
 * connection found dead).  Only back to the start, from the kept copy.
 */
static int
proxy_seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct proxy *p = arg;

	if (p->req == NULL || offset != 0 || origin != SEEK_SET ||
	    !req_body_rewind(p->req))
		return CURL_SEEKFUNC_CANTSEEK;
	return CURL_SEEKFUNC_OK;
}

/* -- worker hooks ------------------------------------------------------ */

static void
proxy_unpause(struct proxy *p)
{
	int mask = (p->read_paused ? CURLPAUSE_SEND : 0) |
	    (p->write_paused ? CURLPAUSE_RECV : 0);

	curl_easy_pause(p->easy, mask);
}

static void
proxy_body_ready(void *arg)
{
	struct proxy *p = arg;

	if (p->read_paused) {
		p->read_paused = false;
		proxy_unpause(p);
	}
}

static void
proxy_writable(void *arg)
{
	struct proxy *p = arg;

	if (p->write_paused) {
		p->write_paused = false;
		proxy_unpause(p);
	}
}

static void
proxy_cancel(void *arg)
{
	struct proxy *p = arg;
	struct call *c = p->call;
	int slot = p->slot;

	/* Removing a transfer mid-way makes libcurl close its connection,
	 * which is how the upstream learns the answer is not wanted. */
	curlev_remove(p->easy);
	p->req = NULL;
	proxy_put(p);
	call_try_end(c, slot, false);
}

/* -- finishing --------------------------------------------------------- */

/* Whether the transfer got as far as a connected socket. */
static bool
curl_connected(CURL *e)
{
	curl_off_t t = 0;
	long sent = 0;

	/* A reused connection has no connect time but has sent bytes. */
	curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &t);
	curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &sent);
	return t > 0 || sent > 0;
}

/* Maps a failed transfer to agate's answer and the retry condition. */
static int
proxy_error_status(struct proxy *p, CURLcode rc, const char **msg,
    enum try_fail *why)
{
	*why = TRY_INVALID;
	if (p->fail == PF_BAD_HEAD) {
		*msg = "upstream sent an invalid response head";
		return 502;
	}
	if (p->fail == PF_UPGRADE) {
		*msg = "upstream switched protocols, which is not proxied";
		return 502;
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		/* Waiting on the client's body: the client was too slow. */
		if (p->read_paused && p->call->spec->client_body &&
		    !p->req->body_done) {
			*why = TRY_CLIENT;
			*msg = "client sent the request body too slowly";
			return 408;
		}
		/* Before the connection was up: a connect failure. */
		*why = curl_connected(p->easy) ? TRY_TIMEOUT : TRY_CONNECT;
		*msg = *why == TRY_CONNECT ? "upstream connect timed out" :
		    "upstream timed out";
		return 504;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		*why = TRY_CONNECT;
		*msg = "upstream connection failed";
		return 502;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		*why = TRY_CONNECT;
		*msg = "upstream TLS handshake failed";
		return 502;
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_BAD_CONTENT_ENCODING:
		*msg = "upstream sent an invalid response";
		return 502;
	case CURLE_OUT_OF_MEMORY:
		*why = TRY_LOCAL;
		*msg = "out of memory";
		return 502;
	default:
		*why = TRY_RESET;
		*msg = "upstream closed the connection";
		return 502;
	}
}

static void
proxy_done(struct curl_job *job, CURLcode rc)
{
	struct proxy *p = (struct proxy *)job;
	struct request *r = p->req;
	struct call *c = p->call;
	int slot = p->slot;
	enum try_fail why;
	const char *msg;
	int status;

	curlev_remove(p->easy);
	if (r == NULL || p->fail == PF_SINK) {
		/* A bad client body (the client has had its answer), or the
		 * sink stopped the answer. */
		proxy_put(p);
		call_try_end(c, slot, false);
		return;
	}
	if (rc == CURLE_OK && p->head_done && p->fail == PF_NONE) {
		call_trailers(c, p->trailers.data, p->trailers.len);
		proxy_put(p);
		call_try_end(c, slot, true);
		return;
	}
	if (p->fail == PF_RETRY) {
		status = p->status;
		proxy_put(p);
		call_try_failed(c, slot, TRY_STATUS, status, "");
		return;
	}
	if (rc == CURLE_OK)
		rc = CURLE_WEIRD_SERVER_REPLY;	/* ended without a head */
	status = proxy_error_status(p, rc, &msg, &why);
	if (why != TRY_CLIENT)
		call_log_failure(c, slot, msg,
		    p->errbuf[0] ? p->errbuf : curl_easy_strerror(rc));
	proxy_put(p);
	/* The call decides: a retry, the error, or a cut response. */
	call_try_failed(c, slot, why, status, msg);
}

/* -- starting ---------------------------------------------------------- */

/* libcurl's header list: "Name: value", or "Name;" to send an empty one. */
static int
proxy_add_header(void *arg, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	struct proxy *p = arg;
	struct curl_slist *l;
	struct buf *line = &p->chead;

	buf_reset(line);
	if (buf_append(line, name, nlen) != 0 ||
	    (vlen == 0 ? buf_append(line, ";", 1) :
	    (buf_append(line, ": ", 2) | buf_append(line, value, vlen))) != 0 ||
	    buf_append(line, "", 1) != 0)
		return -1;
	if (name[0] == 'A' && nlen == 6 && strncasecmp(name, "accept", 6) == 0)
		p->has_accept = true;
	if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0)
		p->has_ctype = true;
	if ((l = curl_slist_append(p->hdrs, line->data)) == NULL)
		return -1;
	p->hdrs = l;
	return 0;
}

/*
 * The call's headers, and none of libcurl's own Accept or Expect, nor the
 * form Content-Type it gives a POSTFIELDS body (the call's own body)
 * that has none.
 */
static int
proxy_headers(struct proxy *p)
{
	struct curl_slist *l;

	p->has_accept = p->has_ctype = false;
	if (call_headers(p->call, p->slot, proxy_add_header, p,
	    &p->rhead) == -1)
		return -1;
	buf_reset(&p->rhead);
	buf_reset(&p->chead);
	if (!p->has_accept) {
		if ((l = curl_slist_append(p->hdrs, "Accept:")) == NULL)
			return -1;
		p->hdrs = l;
	}
	if (proxy_own_body(p) && !p->has_ctype) {
		if ((l = curl_slist_append(p->hdrs, "Content-Type:")) == NULL)
			return -1;
		p->hdrs = l;
	}
	if ((l = curl_slist_append(p->hdrs, "Expect:")) == NULL)
		return -1;
	p->hdrs = l;
	return 0;
}

static int
proxy_build_url(struct proxy *p, const struct server_cfg *srv)
{
	int rc = 0;

	rc |= buf_append(&p->url, srv->curl_url, strlen(srv->curl_url));
	rc |= buf_append(&p->url, p->call->spec->target,
	    p->call->spec->target_len);
	rc |= buf_append(&p->url, "", 1);	/* NUL for libcurl */
	return rc;
}

/*
 * Whether the call's own body goes as POSTFIELDS: when it has one, and
 * as an empty one (Content-Length: 0, as the native transport sends) for
 * a method other than GET and HEAD.
 */
static bool
proxy_own_body(const struct proxy *p)
{
	const struct call_spec *sp = p->call->spec;

	return !sp->client_body && (sp->has_body ||
	    (!http_token_eq(sp->method, sp->method_len, "GET") &&
	    !http_token_eq(sp->method, sp->method_len, "HEAD")));
}

/* The client's body, streamed: its length when it has one. */
static void
proxy_upload(struct proxy *p)
{
	CURL *e = p->easy;
	const struct request *r = p->req;

	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, proxy_read_cb);
	curl_easy_setopt(e, CURLOPT_READDATA, p);
	curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, proxy_seek_cb);
	curl_easy_setopt(e, CURLOPT_SEEKDATA, p);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
	    (curl_off_t)(r->body_chunked ? -1 : r->head.content_length));
}

/*
 * The upstream gets the call's method, exactly: libcurl's defaults (GET,
 * HEAD with NOBODY, PUT with UPLOAD, POST with POSTFIELDS) are only a
 * starting point, so any other is given by name.  HEAD never uploads (the
 * parser refuses a HEAD with a body).
 */
static void
proxy_set_method(struct proxy *p)
{
	CURL *e = p->easy;
	const struct call_spec *sp = p->call->spec;
	const struct request *r = p->req;
	char method[HTTP_MAX_METHOD + 1];
	bool body;

	memcpy(method, sp->method, sp->method_len);
	method[sp->method_len] = '\0';
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
		return;
	}
	if (sp->client_body) {
		body = req_has_body(r) || r->head.content_length == 0;
		if (body)
			proxy_upload(p);
	} else if ((body = proxy_own_body(p))) {
		/* Sent from the caller's copy, not copied again. */
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)sp->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, sp->body != NULL ?
		    sp->body : "");
	}
	/* Copied by libcurl; set after UPLOAD, which would imply PUT. */
	if (strcmp(method, "GET") != 0 || body)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
}

static int
proxy_setup(struct proxy *p, const struct upstream_cfg *u)
{
	CURL *e = p->easy;
	const struct server_rt *rt = &p->up->servers[p->server];
	const struct server_cfg *srv = rt->cfg;

	if (proxy_build_url(p, srv) != 0 || proxy_headers(p) != 0)
		return -1;
	curl_easy_setopt(e, CURLOPT_URL, p->url.data);
	curlev_upstream(e, u, srv);
	/* The address balancing picked, not one libcurl would look up. */
	curl_easy_setopt(e, CURLOPT_CONNECT_TO, rt->connect_to);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->hdrs);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, p->errbuf);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, proxy_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, p);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, proxy_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 65536L);
	/* 0: no timeout of its own (the caller's deadline cuts it). */
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)call_connect_ms(p->call));
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)call_try_ms(p->call));
	proxy_set_method(p);
	return 0;
}

void
curlproxy_start(struct call *c, int slot)
{
	const struct upstream_cfg *u = c->up->cfg;
	struct proxy *p;

	if ((p = proxy_get()) == NULL) {
		call_try_failed(c, slot, TRY_LOCAL, 503, "out of memory");
		return;
	}
	p->call = c;
	p->slot = slot;
	p->req = c->spec->req;
	p->up = c->up;
	p->server = c->t[slot].server;
	if (proxy_setup(p, u) == -1 || curlev_add(p->easy, &p->job) == -1) {
		p->req = NULL;
		proxy_put(p);
		call_try_failed(c, slot, TRY_LOCAL, 502, "cannot start the "
		    "upstream request");
		return;
	}
	call_try_attach(c, slot, &proxy_ops, p);
	if (p->call->spec->client_body)
		req_continue(p->req);
}

void
curlproxy_free(void)
{
	struct proxy *p;

	while ((p = proxy_pool) != NULL) {
		proxy_pool = p->next_free;
		curl_easy_cleanup(p->easy);
		buf_free(&p->url);
		buf_free(&p->rhead);
		buf_free(&p->chead);
		buf_free(&p->trailers);
		free(p);
	}
	proxy_pooled = 0;
}
