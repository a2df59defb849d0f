/*
 * Request dispatch: the health path first (before any route, so a load
 * balancer can always ask), then the router, then the route's handler.
 * Also brings up and tears down the gateway's per-worker state.
 */
#include <string.h>

#include <curl/curl.h>

#include "gateway/fanout/fanout.h"
#include "gateway/cache/cache.h"
#include "gateway/gateway.h"
#include "gateway/metrics/metrics.h"
#include "gateway/stage.h"
#include "gateway/trace/trace.h"
#include "gateway/upstream/curlev.h"
#include "gateway/upstream/dns.h"
#include "gateway/upstream/health.h"
#include "gateway/upstream/call.h"
#include "gateway/upstream/upstream.h"
#include "lib/log.h"
#include "worker/worker.h"

bool (*gateway_test_handler)(struct request *);

int
gateway_init(struct event_base *base, const struct config *cfg)
{
	long keep = 0;
	size_t i;

	for (i = 0; i < cfg->nupstreams; i++)
		keep += cfg->upstreams[i].keepalive;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_warnx("gateway: libcurl failed to initialise");
		return -1;
	}
	if (stage_init_all(base, cfg) == -1)
		return -1;
	/* libcurl's cache counts connections in use too: room for bursts
	 * of 4 x keepalive in flight (fan-out calls, https upstreams)
	 * without closing each connection as its transfer ends; idle ones
	 * still go after keepalive_timeout (CURLOPT_MAXAGE_CONN). */
	if (curlev_init(base, keep > 0 ? 4 * keep : 4) == -1 ||
	    upstream_init(base, cfg) == -1 || dns_init(base, cfg) == -1 ||
	    health_init(base, cfg, worker.index == 0) == -1 ||
	    trace_init(base, cfg) == -1) {
		log_warnx("gateway: out of memory");
		return -1;
	}
	return 0;
}

/* Publishes the gauges only this worker knows (its upstream queues). */
void
gateway_tick(void)
{
	const struct config *cfg = worker.cfg;
	size_t i;

	for (i = 0; i < cfg->nupstreams; i++) {
		const struct upstream_rt *u = upstream_rt(&cfg->upstreams[i]);

		if (u != NULL)
			metrics_upstream_queue(cfg->upstreams[i].mslot,
			    (uint32_t)u->limit.nqueued,
			    (uint32_t)u->limit.active);
	}
}

void
gateway_shutdown(void)
{
	cache_free();
	proxy_free();
	stage_fini_all();
	health_free();
	trace_shutdown();	/* its last flush, before libcurl goes */
	dns_free();
	curlev_free();
	upstream_free();
	curl_global_cleanup();
}

static void
health_respond(struct request *r)
{
	static const char ok[] = "{\"status\":\"ok\"}\n";
	static const char down[] = "{\"status\":\"draining\"}\n";

	if (worker.health_down)
		req_respond(r, 503, "application/json", down, sizeof(down) - 1,
		    "Cache-Control: no-store\r\n");
	else
		req_respond(r, 200, "application/json", ok, sizeof(ok) - 1,
		    "Cache-Control: no-store\r\n");
}

static bool
is_health_path(const struct request *r, const char *hp)
{
	size_t n;

	if (hp == NULL)
		return false;
	n = strlen(hp);
	return r->head.path_len == n && memcmp(r->head.path, hp, n) == 0;
}

/*
 * A CORS preflight asks on behalf of another method, which the route may
 * list while OPTIONS is not: the route that would take that method
 * answers it, if it has cors: (its CORS stage does).
 */
static bool
preflight_route(struct request *r, struct route_match *m)
{
	const struct http_header *acrm;
	struct route_match m2;

	if (!http_token_eq(r->head.method, r->head.method_len, "OPTIONS") ||
	    req_header(r, "origin") == NULL ||
	    (acrm = req_header(r, "access-control-request-method")) == NULL)
		return false;
	if (router_match(worker.cfg, r->head.path, r->head.path_len,
	    acrm->value, acrm->value_len, &m2) != ROUTE_FOUND ||
	    !m2.route->cors.enabled)
		return false;
	*m = m2;
	return true;
}

void
gateway_handle(struct request *r)
{
	const struct config *cfg = worker.cfg;
	struct route_match m;
	char allow[300];

	if (req_admin(r)) {
		admin_handle(r);
		return;
	}
	trace_begin(r);
	if (is_health_path(r, cfg->server.health_path)) {
		health_respond(r);
		return;
	}
	if (gateway_test_handler != NULL && gateway_test_handler(r))
		return;
	/* A preflight goes to the route of the method it asks for, even when
	 * a later route would take OPTIONS itself. */
	if (preflight_route(r, &m))
		goto found;
	switch (router_match(cfg, r->head.path, r->head.path_len,
	    r->head.method, r->head.method_len, &m)) {
	case ROUTE_NOT_FOUND:
		req_error(r, 404, "no route matches this path", NULL);
		return;
	case ROUTE_BAD_METHOD:
		snprintf(allow, sizeof(allow), "Allow: %s\r\n", m.allow);
		req_error(r, 405, "method not allowed on this route", allow);
		return;
	case ROUTE_FOUND:
		break;
	}
found:
	r->route = m.route;
	memcpy(r->params, m.params, m.nparams * sizeof(m.params[0]));
	r->nparams = m.nparams;
	stage_start(r);
}

const struct worker_app gateway_app = {
	.jobs = fanout_jobs,
	.init = gateway_init,
	.handle = gateway_handle,
	.done = trace_end,
	.tick = gateway_tick,
	.shutdown = gateway_shutdown,
};
