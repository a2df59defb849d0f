/*
 * Server choice and transport dispatch, and the pieces both transports
 * share (see proxy.h).
 */
#include <string.h>
#include <time.h>

#include "gateway/gateway.h"
#include "gateway/proxy.h"
#include "lib/log.h"

void
proxy_start(struct request *r)
{
	const struct upstream_cfg *u = r->route->upstream;
	struct upstream_rt *up = upstream_rt(u);
	size_t server = upstream_pick(up);

	upstream_begin(up, server);
	r->tries = 1;
	r->upstream = u->servers[server].url;
	if (up->servers[server].native)
		native_start(r, up, server);
	else
		curlproxy_start(r, up, server);
}

void
proxy_free(void)
{
	native_free();
	curlproxy_free();
}

uint64_t
proxy_try_ms(const struct request *r, const struct upstream_cfg *u)
{
	uint64_t t = u->timeout_ms, spent, left;

	if (r->route->timeout_ms == 0)
		return t;
	spent = req_elapsed_ms(r);
	if (spent >= r->route->timeout_ms)
		return 1;
	left = r->route->timeout_ms - spent;
	return left < t ? left : t;
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

void
proxy_log_failure(const struct upstream_rt *up, size_t server,
    const char *what, const char *detail)
{
	static uint64_t window, count;
	uint64_t sec = (uint64_t)time(NULL);

	/* A dead upstream under load must not flood the log. */
	if (sec != window) {
		if (count > 10)
			log_warnx("proxy: %llu more upstream failures not logged",
			    (unsigned long long)(count - 10));
		window = sec;
		count = 0;
	}
	if (++count > 10)
		return;
	log_warnx("proxy: upstream %s server %s: %s (%s)", up->cfg->name,
	    up->cfg->servers[server].url, what, detail);
}
