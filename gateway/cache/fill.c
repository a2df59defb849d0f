/*
 * The cache's fills (see cache.c): one upstream call per key for all
 * the workers of the machine, whose answer the store keeps.
 *
 * A fill's request is a copy of the first client's (its upstream
 * fields, kept in `hdrs`; no conditional or Range field: the store
 * wants whole answers), so that the client may go away and the fill
 * still completes for the requests waiting on its lock.  While the
 * client is there the answer streams to it as it comes; it is gathered
 * here up to max_entry and stored whole at the end.  A fill without a
 * client is a stale answer's refresh, in the background.  A fill that
 * fails, or an answer of 500, 502, 503 or 504, leaves the stale answer
 * in place for stale_if_error, and the client gets it.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/cache/fill.h"
#include "gateway/cache/policy.h"
#include "gateway/cache/store.h"
#include "gateway/gateway.h"
#include "gateway/trace/trace.h"
#include "gateway/upstream/call.h"
#include "lib/log.h"
#include "worker/timer.h"
#include "worker/worker.h"

/* A fill: one upstream call whose answer the store keeps. */
struct fill {
	struct request		 req;		/* the call's: a copy */
	struct request		*client;	/* NULL: gone, or a refresh */
	struct call_spec	 spec;
	struct call		*call;
	struct store_ticket	 ticket;
	struct buf		 key;
	struct buf		 target;
	struct buf		 hdrs;		/* the upstream request's fields:
						 * u16 n, name, u16 n, value */
	struct buf		 acc;		/* head fields, then body */
	struct buf		 stale;		/* for stale_if_error */
	struct buf		 tstate;	/* req's tracestate, a copy */
	struct store_hit	 stale_hit;
	size_t			 head_len;
	int			 status;
	bool			 storing;
	bool			 head_sent;	/* to the client */
	bool			 serve_stale;	/* a 5xx: the stale answer */
	struct policy_store	 ps;
	int64_t			 sent_at;	/* wall ms */
	int64_t			 came_at;
	const struct route_cfg	*route;
	struct fill		*next;		/* all fills of this worker */
};


static struct fill	*fills;		/* all of this worker's */

static void	client_writable(struct request *);
static void	client_abort(struct request *);

static const struct req_hooks fill_client_hooks = {
	.writable = client_writable,
	.abort = client_abort,
};


/* The client stays with the fill's answer no longer. */
static void
fill_detach_client(struct fill *f)
{
	if (f->client == NULL)
		return;
	f->client->gw = NULL;
	f->client->hooks = NULL;
	f->client = NULL;
}

/* The fill's own request fields, as the client's were. */
static int
fill_headers(const struct call *c, call_emit_fn emit, void *arg,
    struct buf *scratch)
{
	const struct fill *f = (const struct fill *)((const char *)c->spec -
	    offsetof(struct fill, spec));
	const unsigned char *p = (const unsigned char *)f->hdrs.data;
	const unsigned char *end = p + f->hdrs.len;
	size_t nl, vl;

	(void)scratch;
	while (p + 4 <= end) {
		nl = (size_t)p[0] << 8 | p[1];
		vl = (size_t)p[2 + nl] << 8 | p[3 + nl];
		if (emit(arg, (const char *)p + 2, nl, (const char *)p + 4 + nl,
		    vl) == -1)
			return -1;
		p += 4 + nl + vl;
	}
	return 0;
}

/* A field of the fill's request (for the Vary values it is stored
 * under). */
static const char *
fill_field(void *arg, const char *name, size_t nlen, size_t *vlen)
{
	const struct fill *f = arg;
	const unsigned char *p = (const unsigned char *)f->hdrs.data;
	const unsigned char *end = p + f->hdrs.len;
	size_t nl, vl;

	while (p + 4 <= end) {
		nl = (size_t)p[0] << 8 | p[1];
		vl = (size_t)p[2 + nl] << 8 | p[3 + nl];
		if (nl == nlen && strncasecmp((const char *)p + 2, name,
		    nlen) == 0) {
			*vlen = vl;
			return (const char *)p + 4 + nl;
		}
		p += 4 + nl + vl;
	}
	return NULL;
}

/* Keeps one of the client's upstream fields for the fill; validators
 * and ranges stay out (the store wants the whole answer). */
static int
fill_keep(void *arg, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	static const char *const drop[] = {
		"If-None-Match", "If-Modified-Since", "If-Match",
		"If-Unmodified-Since", "If-Range", "Range", "Cache-Control",
		"Pragma", NULL
	};
	struct buf *b = arg;
	unsigned char len[2];
	size_t i;

	for (i = 0; drop[i] != NULL; i++)
		if (http_token_eq(name, nlen, drop[i]))
			return 0;
	if (nlen > 0xffff || vlen > 0xffff)
		return -1;
	len[0] = (unsigned char)(nlen >> 8);
	len[1] = (unsigned char)nlen;
	if (buf_append(b, len, 2) == -1 || buf_append(b, name, nlen) == -1)
		return -1;
	len[0] = (unsigned char)(vlen >> 8);
	len[1] = (unsigned char)vlen;
	return buf_append(b, len, 2) | buf_append(b, value, vlen);
}

static void
fill_free(struct fill *f)
{
	struct fill **pp;

	for (pp = &fills; *pp != NULL; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	buf_free(&f->key);
	buf_free(&f->target);
	buf_free(&f->hdrs);
	buf_free(&f->acc);
	buf_free(&f->stale);
	buf_free(&f->tstate);
	free(f);
}

static bool
is_server_error(int status)
{
	return status == 500 || status == 502 || status == 503 ||
	    status == 504;
}

/* The answer's fields as stored: without Age (the cache says its own)
 * and X-Request-Id (each answer carries its request's). */
static int
fill_keep_head(struct buf *out, const char *fields, size_t len)
{
	const char *p = fields, *line, *name, *value;
	size_t left = len, nlen, vlen;
	int rc;

	buf_reset(out);
	for (;;) {
		line = p;
		if ((rc = headers_next_field(&p, &left, &name, &nlen, &value,
		    &vlen)) <= 0)
			return rc;
		if (http_token_eq(name, nlen, "Age") ||
		    http_token_eq(name, nlen, "X-Request-Id"))
			continue;
		if (buf_append(out, line, (size_t)(p - line)) == -1)
			return -1;
	}
}

static int
sink_head(void *arg, int status, const char *reason, size_t reason_len,
    const char *fields, size_t fields_len, int64_t clen)
{
	struct fill *f = arg;
	uint64_t max = worker.cfg->cache_max_entry;
	struct policy_answer a = {
		.status = status, .fields = fields, .fields_len = fields_len,
		.req_authorization = fill_field(f, "Authorization", 13,
		    &(size_t){ 0 }) != NULL,
		.request_time = f->sent_at, .ttl_ms = f->route->cache.ttl_ms,
	};
	f->status = status;
	f->came_at = a.response_time = cache_wall_ms();
	if (is_server_error(status) && f->stale_hit.status != 0 &&
	    f->client != NULL) {
		f->serve_stale = true;		/* stale_if_error */
		return -1;
	}
	policy_store(&a, &f->ps);
	/* Already stale, but the route serves it stale a while. */
	if (!f->ps.storable && f->ps.why != NULL &&
	    strcmp(f->ps.why, "expired") == 0 &&
	    !f->ps.no_stale && (f->route->cache.swr_ms > 0 ||
	    f->route->cache.sie_ms > 0))
		f->ps.storable = true;
	f->storing = f->ps.storable && (clen < 0 || (uint64_t)clen <= max) &&
	    fill_keep_head(&f->acc, fields, fields_len) == 0;
	if (!f->ps.storable)
		store_count(f->ps.why != NULL && strcmp(f->ps.why, "vary *") == 0 ?
		    SC_NS_VARY :
		    SC_NS_POLICY, 1);
	else if (!f->storing)
		store_count(SC_NS_TOO_BIG, 1);
	f->head_len = f->acc.len;
	if (f->client != NULL) {
		f->head_sent = true;
		if (req_start_response(f->client, status, reason, reason_len,
		    fields, fields_len, clen) == -1)
			fill_detach_client(f);
	}
	return f->storing || f->client != NULL ? 0 : -1;
}

static int
sink_body(void *arg, const char *data, size_t len)
{
	struct fill *f = arg;

	if (f->storing && f->acc.len - f->head_len + len >
	    worker.cfg->cache_max_entry) {
		f->storing = false;		/* too big: not stored */
		store_count(SC_NS_TOO_BIG, 1);
		buf_free(&f->acc);
	}
	if (f->storing && buf_append(&f->acc, data, len) == -1) {
		f->storing = false;
		buf_free(&f->acc);
	}
	if (f->client != NULL && req_write_body(f->client, data, len) == -1)
		fill_detach_client(f);
	return f->storing || f->client != NULL ? 0 : -1;
}

static bool
sink_full(void *arg)
{
	struct fill *f = arg;

	return f->client != NULL && req_output_full(f->client);
}

static void
sink_tried(void *arg, const char *url, int tries)
{
	struct fill *f = arg;

	if (f->client != NULL) {
		f->client->tries = tries;
		f->client->upstream = url;
	}
}

/* The answer is whole: into the store. */
static void
fill_store(struct fill *f)
{
	const struct route_cache_cfg *rc = &f->route->cache;
	struct store_req q = {
		.key = f->key.data, .key_len = f->key.len,
		.header = fill_field, .header_arg = f, .now_ms = cache_wall_ms(),
		.lock_timeout_ms = worker.cfg->cache_lock_timeout_ms,
	};
	struct store_put p = {
		.status = f->status,
		.head = f->acc.data, .head_len = f->head_len,
		.body = f->acc.data + f->head_len,
		.body_len = f->acc.len - f->head_len,
		.stored_at_ms = f->came_at,
		.asked_at_ms = f->sent_at,
		.lifetime_ms = f->ps.lifetime_ms,
		.initial_age_ms = f->ps.initial_age_ms,
		.swr_ms = f->ps.swr_s >= 0 ? (uint64_t)f->ps.swr_s * 1000 :
		    rc->swr_ms,
		.sie_ms = f->ps.sie_s >= 0 ? (uint64_t)f->ps.sie_s * 1000 :
		    rc->sie_ms,
	};

	p.vary = cache_stored_field(f->acc.data, f->head_len, "Vary", &p.vary_len);
	if (f->ps.no_stale)
		p.swr_ms = p.sie_ms = 0;
	if (store_fill(&q, &f->ticket, &p) == -1)
		log_debug("cache: %.*s not stored (no room, or its Vary)",
		    (int)f->target.len, f->target.data);
}

/*
 * A fill is a span of its own (INTERNAL), child of the request that
 * started it, a background refresh's too; its tries are its children.
 * The tracestate is copied: the client may go before the fill ends.
 */
static void
fill_trace(struct fill *f, const struct request *r)
{
	struct req_trace *t = &f->req.trace;

	*t = r->trace;
	if (!t->on)
		return;
	memcpy(t->parent_id, r->trace.span_id, sizeof(t->parent_id));
	trace_new_span_id(t->span_id);
	t->start_ns = t->record ? trace_now_ns() : 0;
	t->state = NULL;
	if (r->trace.state != NULL && buf_append(&f->tstate, r->trace.state,
	    r->trace.state_len) == 0) {
		t->state = f->tstate.data;
		t->state_len = f->tstate.len;
	}
}

static void
fill_trace_end(struct fill *f, const char *error)
{
	const struct req_trace *t = &f->req.trace;
	const char *outcome = error != NULL ? "failed" : f->storing ?
	    "stored" : "not stored";

	if (!trace_recording(t) || !span_open(SPAN_INTERNAL, t->trace_id,
	    t->span_id, t->parent_id, t->start_ns, trace_now_ns(),
	    "cache fill", 10))
		return;
	span_str(SA_URL_PATH, f->target.data, f->target.len);
	if (f->status > 0)
		span_int(SA_STATUS, f->status);
	span_str(SA_FILL_OUTCOME, outcome, strlen(outcome));
	if (error != NULL)
		span_str(SA_ERROR_TYPE, error, strlen(error));
	span_close(error != NULL ? SPAN_ERROR : SPAN_UNSET);
}

static void
sink_done(void *arg, int status, const char *error, const char *extra)
{
	struct fill *f = arg;
	struct request *r = f->client;

	fill_trace_end(f, error);
	if (error == NULL && f->storing)
		fill_store(f);
	else
		store_release(&f->ticket, error != NULL && (f->serve_stale ||
		    f->client != NULL || f->storing) ? cache_wall_ms() : 0);
	fill_detach_client(f);
	if (r != NULL) {
		if (error == NULL)
			req_end_response(r);
		else if (!f->head_sent && f->stale_hit.status != 0) {
			buf_reset(&cache_copy);
			buf_append(&cache_copy, f->stale.data, f->stale.len);
			store_count(SC_STALE, 1);
			cache_serve(r, &f->stale_hit, "STALE", NULL);
		} else if (!f->head_sent)
			req_error(r, status, error, extra);
		else
			req_fail(r, error);
	}
	fill_free(f);
	cache_wake();
}

static const struct call_sink fill_sink = {
	.head = sink_head,
	.body = sink_body,
	.full = sink_full,
	.tried = sink_tried,
	.done = sink_done,
};

/*
 * Starts a fill of r's key (t: its lock): for r (client), or, with
 * client NULL, a refresh in the background.  stale: the stored answer
 * for stale_if_error, in `copy`, or NULL.
 */
void
fill_start(struct request *r, struct request *client,
    const struct store_ticket *t, const struct store_hit *stale)
{
	const struct route_cfg *rt = r->route;
	struct fill *f;
	struct call *c;

	if ((f = calloc(1, sizeof(*f))) == NULL ||
	    cache_key(r, &f->key) == -1 || proxy_target(r, &f->target) == -1 ||
	    headers_upstream_request(r, fill_keep, &f->hdrs, &f->acc) == -1 ||
	    (stale != NULL && buf_append(&f->stale, cache_copy.data, cache_copy.len) ==
	    -1)) {
		if (f != NULL)
			fill_free(f);
		store_release(t, 0);
		if (client != NULL)
			req_error(client, 503, "out of memory", NULL);
		return;
	}
	buf_reset(&f->acc);
	f->ticket = *t;
	f->route = rt;
	if (stale != NULL)
		f->stale_hit = *stale;
	/* The call's request: the client's identity, none of its body. */
	memcpy(f->req.id, r->id, sizeof(r->id));
	f->req.id_len = r->id_len;
	f->req.head.method = "GET";
	f->req.head.method_len = 3;
	f->req.head.path = f->target.data;
	f->req.head.path_len = f->target.len;
	f->req.route = rt;
	f->req.start = r->start;
	fill_trace(f, r);
	f->spec = (struct call_spec){
		.req = &f->req,
		.method = "GET", .method_len = 3,
		.target = f->target.data, .target_len = f->target.len,
		.headers = fill_headers,
		.deadline = rt->timeout_ms == 0 ? 0 : now_ms() + rt->timeout_ms,
		.hedge_after_ms = rt->hedge_after_ms,
	};
	f->sent_at = cache_wall_ms();
	f->next = fills;
	fills = f;
	if (client != NULL) {
		f->client = client;
		client->gw = f;
		client->hooks = &fill_client_hooks;
	}
	if ((c = call_start(upstream_rt(rt->upstream), &f->spec, &fill_sink,
	    f)) != NULL)
		f->call = c;
}

static void
client_writable(struct request *r)
{
	struct fill *f = r->gw;

	if (f != NULL && f->call != NULL)
		call_writable(f->call);
}

/* The client is gone: the fill goes on for the others. */
static void
client_abort(struct request *r)
{
	struct fill *f = r->gw;

	if (f != NULL)
		fill_detach_client(f);
}

void
fill_cancel_all(void)
{
	struct fill *f;

	while ((f = fills) != NULL) {
		if (f->call != NULL)
			call_cancel(f->call);
		/* Its waiters, elsewhere, need not wait for lock_timeout. */
		store_release(&f->ticket, 0);
		fill_free(f);		/* unlinks it */
	}
}
