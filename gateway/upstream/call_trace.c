/*
 * The trace context of upstream tries (see gateway/trace/): each try of
 * a call is a CLIENT span, child of the span of the call's request (the
 * request's SERVER span, or a cache fill's own span), and its request
 * carries a traceparent naming that span.  Every transport writes its
 * header fields through call_headers(), so no try goes out without it,
 * and never with the client's traceparent as well.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/trace/trace.h"
#include "gateway/upstream/call.h"

struct trace_filter {
	call_emit_fn	 emit;
	void		*arg;
};

/* The spec's fields, but the ones trace_emit() writes. */
static int
call_trace_filter(void *arg, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
	struct trace_filter *f = arg;

	if (trace_field(name, nlen))
		return 0;
	return f->emit(f->arg, name, nlen, value, vlen);
}

int
call_headers(const struct call *c, int k, call_emit_fn emit, void *arg,
    struct buf *scratch)
{
	const struct request *r = c->spec->req;
	struct trace_filter f = { emit, arg };

	if (r == NULL || !r->trace.on)
		return c->spec->headers(c, emit, arg, scratch);
	if (c->spec->headers(c, call_trace_filter, &f, scratch) == -1)
		return -1;
	return trace_emit(&r->trace, c->t[k].span_id, emit, arg);
}

/* Try slot k starts: its span id, and its start if it is recorded. */
void
call_trace_start(struct call *c, int k)
{
	const struct request *r = c->spec->req;
	struct call_try *t = &c->t[k];

	t->span_start_ns = 0;
	t->span_status = 0;
	t->span_error = NULL;
	t->span_nth = c->tries - 1;
	if (r == NULL || !r->trace.on)
		return;
	trace_new_span_id(t->span_id);
	if (trace_recording(&r->trace))
		t->span_start_ns = trace_now_ns();
}

/* Try slot k is over: its CLIENT span. */
void
call_trace_end(struct call *c, int k)
{
	const struct request *r = c->spec->req;
	struct call_try *t = &c->t[k];
	const struct server_cfg *srv;
	char code[16];
	int n;

	if (t->span_start_ns == 0 || r == NULL)
		return;
	srv = c->up->servers[t->server].cfg;	/* t->server: an address slot */
	if (!span_open(SPAN_CLIENT, r->trace.trace_id, t->span_id,
	    r->trace.span_id, t->span_start_ns, trace_now_ns(),
	    c->spec->method, c->spec->method_len)) {
		t->span_start_ns = 0;
		return;
	}
	t->span_start_ns = 0;
	span_str(SA_METHOD, c->spec->method, c->spec->method_len);
	span_str(SA_SERVER_ADDRESS, srv->host, strlen(srv->host));
	span_int(SA_SERVER_PORT, srv->port);
	span_str2(SA_URL_FULL, srv->url, strlen(srv->url), c->spec->target,
	    c->spec->target_len);
	if (t->span_status > 0)
		span_int(SA_STATUS, t->span_status);
	if (t->span_nth > 0)
		span_int(SA_RESEND_COUNT, t->span_nth);
	span_str(SA_UPSTREAM, c->up->cfg->name, strlen(c->up->cfg->name));
	if (t->span_error != NULL)
		span_str(SA_ERROR_TYPE, t->span_error, strlen(t->span_error));
	else if (t->span_status >= 500) {
		n = snprintf(code, sizeof(code), "%d", t->span_status);
		span_str(SA_ERROR_TYPE, code, (size_t)n);
	}
	span_close(t->span_error != NULL || t->span_status >= 500 ?
	    SPAN_ERROR : SPAN_UNSET);
}
