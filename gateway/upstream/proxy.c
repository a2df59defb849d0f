/*
 * Proxying: a route's request goes to its upstream as one call (call.h),
 * and the call's answer streams to the client.  This file is the call's
 * client-side sink: the head and body go out through the worker's
 * response calls (which may pass a gzip filter), backpressure pauses the
 * transfer, and an error becomes agate's JSON error answer or, once the
 * answer has begun, a cut response.
 *
 * While the call runs, the request points at it (r->gw, r->hooks): more
 * body, room to write, or the client leaving reach the call from here.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/upstream/call.h"
#include "lib/log.h"
#include "worker/worker.h"

/* One proxied request: its call and what the call sends. */
struct proxy {
	struct request		*req;
	struct call		*call;
	struct call_spec	 spec;
	struct buf		 target;
	bool			 switched;	/* the request went to a tunnel */
	struct proxy		*next_free;
};

#define PROXY_POOL_MAX	256

static struct proxy	*pool;
static size_t		 pooled;

static struct proxy *
proxy_get(void)
{
	struct proxy *p = pool;

	if (p != NULL) {
		pool = p->next_free;
		pooled--;
	} else if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	buf_reset(&p->target);
	p->call = NULL;
	p->switched = false;
	return p;
}

static void
proxy_put(struct proxy *p)
{
	if (pooled >= PROXY_POOL_MAX) {
		buf_free(&p->target);
		free(p);
		return;
	}
	buf_trim(&p->target, 4096);
	p->next_free = pool;
	pool = p;
	pooled++;
}

void
proxy_free(void)
{
	struct proxy *p;

	while ((p = pool) != NULL) {
		pool = p->next_free;
		buf_free(&p->target);
		free(p);
	}
	pooled = 0;
	call_free_all();
}

/* -- the request's hooks, for the call ------------------------------------ */

static void
proxy_body_ready(struct request *r)
{
	struct proxy *p = r->gw;

	call_body_ready(p->call);
}

static void
proxy_writable(struct request *r)
{
	struct proxy *p = r->gw;

	call_writable(p->call);
}

static void
proxy_abort(struct request *r)
{
	struct proxy *p = r->gw;

	r->gw = NULL;
	r->hooks = NULL;
	call_cancel(p->call);
	proxy_put(p);
}

static const struct req_hooks proxy_hooks = {
	proxy_body_ready, proxy_writable, proxy_abort
};

/* -- the sink ------------------------------------------------------------- */

static int
sink_head(void *arg, int status, const char *reason, size_t reason_len,
    const char *fields, size_t fields_len, int64_t content_length)
{
	struct proxy *p = arg;

	return req_start_response(p->req, status, reason, reason_len, fields,
	    fields_len, content_length);
}

static int
sink_body(void *arg, const char *data, size_t len)
{
	struct proxy *p = arg;

	return req_write_body(p->req, data, len);
}

static char *
sink_space(void *arg, size_t want, size_t *room)
{
	struct proxy *p = arg;

	return req_body_space(p->req, want, room);
}

static void
sink_commit(void *arg, size_t n)
{
	struct proxy *p = arg;

	req_body_commit(p->req, n);
}

static bool
sink_full(void *arg)
{
	struct proxy *p = arg;

	return req_output_full(p->req);
}

static void
sink_tried(void *arg, const char *url, int tries)
{
	struct proxy *p = arg;

	p->req->tries = tries;
	p->req->upstream = url;
}

static void
sink_done(void *arg, int status, const char *error, const char *extra)
{
	struct proxy *p = arg;
	struct request *r = p->req;
	bool switched = p->switched;

	proxy_put(p);
	if (switched)
		return;			/* the tunnel has the request */
	r->gw = NULL;
	r->hooks = NULL;
	if (error == NULL)
		req_end_response(r);
	else if (!r->resp_done)	/* a bad body was answered already */
		req_error(r, status, error, extra);
}

static int
sink_switched(void *arg, const char *fields, size_t fields_len, int fd,
    struct ssl_st *ssl, const char *early, size_t early_len)
{
	struct proxy *p = arg;
	struct request *r = p->req;

	/* The request is the tunnel's now, whatever happens to it. */
	p->switched = true;
	r->gw = NULL;
	r->hooks = NULL;
	return upgrade_switched(r, fields, fields_len, fd, ssl, early,
	    early_len);
}

static void
sink_trailers(void *arg, const char *fields, size_t len)
{
	struct proxy *p = arg;

	req_trailers(p->req, fields, len);
}

static const struct call_sink proxy_sink = {
	.head = sink_head,
	.body = sink_body,
	.space = sink_space,
	.commit = sink_commit,
	.full = sink_full,
	.tried = sink_tried,
	.done = sink_done,
	.switched = sink_switched,
	.trailers = sink_trailers,
};

/* The request's own header fields, as the upstream gets them. */
static int
proxy_headers(const struct call *c, call_emit_fn emit, void *arg,
    struct buf *scratch)
{
	return headers_upstream_request(c->spec->req, emit, arg, scratch);
}

/* A gRPC client's grpc-timeout caps the route's timeout (504, answered
 * as DEADLINE_EXCEEDED); sp->http2 says the request is gRPC. */
static void
proxy_grpc_deadline(struct request *r, struct call_spec *sp)
{
	uint64_t t, at;

	if (!sp->http2 || (t = headers_grpc_timeout_ms(r)) == 0)
		return;
	at = now_ms() - req_elapsed_ms(r) + t;
	if (sp->deadline == 0 || at < sp->deadline)
		sp->deadline = at;
}

/* Starts r's call; an upgrade is a handshake for a tunnel (upgrade.c). */
static void
proxy_begin(struct request *r, bool upgrade)
{
	const struct upstream_cfg *u = r->route->upstream;
	struct upstream_rt *up = upstream_rt(u);
	bool grpc = !upgrade && req_grpc(r);
	struct proxy *p;
	struct call *c;

	if ((p = proxy_get()) == NULL ||
	    proxy_target(r, &p->target) == -1) {
		if (p != NULL)
			proxy_put(p);
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	/* Keep the body for a retry to send again (and for libcurl, which
	 * resends on a reused connection found dead); over HTTP/2 for any
	 * method (gRPC's are POSTs): a stream the server refused, or never
	 * processed, is sent again. */
	if (req_has_body(r) && (((u->retry.attempts > 1 || up->any_curl) &&
	    retry_method(&u->retry, r->head.method, r->head.method_len)) ||
	    up->any_h2 || grpc) &&
	    req_body_keep(r, CALL_REPLAY_MAX) == -1) {
		proxy_put(p);
		req_error(r, 503, "out of memory", NULL);
		return;
	}
	p->req = r;
	p->spec = (struct call_spec){
		.req = r,
		.method = r->head.method,
		.method_len = r->head.method_len,
		.target = p->target.data,
		.target_len = p->target.len,
		.headers = proxy_headers,
		.client_body = true,
		.deadline = r->route->timeout_ms == 0 ? 0 :
		    now_ms() - req_elapsed_ms(r) + r->route->timeout_ms,
		.hedge_after_ms = upgrade ? 0 : r->route->hedge_after_ms,
	};
	/* Debian's libcurl 7.88.1 loses some answers of grpcio servers over
	 * h2: gRPC to https servers takes agate's own HTTP/2 client. */
	p->spec.http2 = grpc;
	proxy_grpc_deadline(r, &p->spec);
	if (upgrade) {
		p->spec.upgrade = true;
		p->spec.client_body = false;	/* refused if it had one */
		p->spec.headers = upgrade_headers;
		p->spec.check_switch = upgrade_check_switch;
	}
	r->gw = p;
	r->hooks = &proxy_hooks;
	/* NULL: over already, and p went with it (sink_done()). */
	if ((c = call_start(up, &p->spec, &proxy_sink, p)) != NULL)
		p->call = c;
}

void
proxy_start(struct request *r)
{
	proxy_begin(r, false);
}

void
proxy_start_upgrade(struct request *r)
{
	proxy_begin(r, true);
}

int
proxy_target(const struct request *r, struct buf *b)
{
	const char *path;
	size_t plen;
	int rc = 0;

	plen = router_upstream_path(r->route, r->head.path, r->head.path_len,
	    &path);
	rc |= buf_append(b, path, plen);
	if (r->head.query != NULL) {
		rc |= buf_append(b, "?", 1);
		rc |= buf_append(b, r->head.query, r->head.query_len);
	}
	return rc;
}
