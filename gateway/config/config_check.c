/*
 * What config_load() does around the key tables: the defaults a file
 * starts from, and the checks that need the whole file (names that refer
 * to other sections, listeners that collide, templates that name
 * parameters).  Positions recorded while parsing let these errors point
 * at the offending line too.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "gateway/config/config_engine.h"
#include "gateway/policy/apikeys.h"
#include "gateway/policy/htpasswd.h"
#include "gateway/policy/jwt.h"
#include "gateway/upstream/upcert.h"
#include "lib/log.h"
#include "worker/tls.h"

void
config_defaults(struct config *cfg)
{
	struct server_sect *s = &cfg->server;

	s->workers = 0;
	s->health_path = "/healthz";
	s->shutdown_delay_ms = 0;
	s->drain_timeout_ms = 30000;
	s->max_connections = 10000;
	s->header_timeout_ms = 10000;
	s->idle_timeout_ms = 60000;
	s->tunnel_timeout_ms = 3600 * 1000;
	s->http2.max_concurrent_streams = 128;
	s->http2.initial_window_size = 65536;
	s->http2.max_header_list_size = 32 * 1024;
	s->http2.max_resets_per_second = 200;
	s->max_header_size = 16 * 1024;
	s->max_body_size = 10 * 1024 * 1024;
	cfg->log_level = LOG_LVL_INFO;
	cfg->log_access = ACCESS_STDOUT;
	cfg->log_slow_callback_us = 100000;
	cfg->redis_fail_open = 1;
	cfg->offload_processes = 1;
	cfg->offload_queue_limit = 1024;
	cfg->offload_job_timeout_ms = 5000;
	cfg->cache_memory = 256 * 1024 * 1024;
	cfg->cache_max_entry = 1024 * 1024;
	cfg->cache_lock_timeout_ms = 5000;
	cfg->tracing_sample_ratio = 1.0;
}

static int
check_error(struct cfg_ctx *ctx, struct config_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
check_error(struct cfg_ctx *ctx, struct config_pos pos, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(ctx->err, ctx->errlen, "%s:%d:%d: ", ctx->file, pos.line,
	    pos.col);
	if (n < 0 || (size_t)n >= ctx->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ctx->err + n, ctx->errlen - n, fmt, ap);
	va_end(ap);
	return -1;
}

static bool
same_address(const struct sockaddr_storage *a, socklen_t alen,
    const struct sockaddr_storage *b, socklen_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

static int
check_listeners(struct cfg_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	struct server_sect *s = &cfg->server;
	size_t i, j;

	if (s->nlisten == 0) {
		/* No listen: the port the examples and the docs use. */
		s->listen = cfg_alloc(ctx, sizeof(*s->listen));
		s->nlisten = 1;
		s->listen->address = cfg_strdup(ctx, "0.0.0.0:8080");
		s->listen->http2 = true;
		parse_address(s->listen->address, &s->listen->sa,
		    &s->listen->salen);
	}
	for (i = 0; i < s->nlisten; i++) {
		for (j = 0; j < i; j++)
			if (same_address(&s->listen[i].sa, s->listen[i].salen,
			    &s->listen[j].sa, s->listen[j].salen))
				return check_error(ctx, s->listen[i].pos,
				    "listen: %s is listed twice",
				    s->listen[i].address);
		if (cfg->admin_enabled && same_address(&s->listen[i].sa,
		    s->listen[i].salen, &cfg->admin_sa, cfg->admin_salen))
			return check_error(ctx, s->listen[i].pos, "listen: %s "
			    "is also the admin address", s->listen[i].address);
	}
	if (cfg->admin_enabled) {
		/* The admin listener is one more listener: bound, kept across
		 * reloads and accepted on like the others, and its requests
		 * go to gateway/metrics/admin.c. */
		struct listen_cfg *l = cfg_alloc(ctx, (s->nlisten + 1) *
		    sizeof(*l));

		memcpy(l, s->listen, s->nlisten * sizeof(*l));
		memset(&l[s->nlisten], 0, sizeof(*l));
		l[s->nlisten].address = cfg->admin_listen;
		l[s->nlisten].sa = cfg->admin_sa;
		l[s->nlisten].salen = cfg->admin_salen;
		l[s->nlisten].admin = true;
		s->listen = l;
		s->nlisten++;
	}
	for (i = 0; i < s->nlisten; i++) {
		char err[512];

		if (s->listen[i].ntls > 0 &&
		    tls_listener_load(&s->listen[i], err, sizeof(err)) == -1)
			return check_error(ctx, s->listen[i].tls_pos, "listen "
			    "%s: tls: %s", s->listen[i].address, err);
	}
	return 0;
}

static const char *
upstream_names(const struct config *cfg, char *buf, size_t len)
{
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < cfg->nupstreams && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "",
		    cfg->upstreams[i].name);
	return cfg->nupstreams ? buf : "none";
}

static int
resolve_upstream(struct cfg_ctx *ctx, const char *name, struct config_pos pos,
    struct upstream_cfg **out)
{
	char names[200];

	if ((*out = config_upstream(ctx->cfg, name)) != NULL)
		return 0;
	return check_error(ctx, pos, "unknown upstream '%s' (defined: %s)",
	    name, upstream_names(ctx->cfg, names, sizeof(names)));
}

static bool
route_has_param(const struct route_cfg *r, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < r->nsegs; i++)
		if (r->segs[i].param && r->segs[i].len == len &&
		    memcmp(r->segs[i].text, name, len) == 0)
			return true;
	return false;
}

/* {param} of the route, {query.NAME} or {header.NAME}. */
static int
check_template(struct cfg_ctx *ctx, const struct route_cfg *r,
    const struct fanout_call_cfg *c)
{
	const char *p = c->path, *end;

	while ((p = strchr(p, '{')) != NULL) {
		size_t len;

		if ((end = strchr(p, '}')) == NULL)
			return check_error(ctx, c->path_pos, "path '%s' of "
			    "call %s: unclosed {", c->path, c->name);
		len = (size_t)(end - p - 1);
		if ((len > 6 && strncmp(p + 1, "query.", 6) == 0) ||
		    (len > 7 && strncmp(p + 1, "header.", 7) == 0)) {
			p = end + 1;
			continue;
		}
		if (!route_has_param(r, p + 1, len))
			return check_error(ctx, c->path_pos, "call %s: {%.*s} "
			    "is not a parameter of route %s (nor query.NAME "
			    "or header.NAME)", c->name, (int)len, p + 1,
			    r->path);
		p = end + 1;
	}
	return 0;
}

/* strip_prefix must be a leading part of the route's literal path. */
static int
check_strip_prefix(struct cfg_ctx *ctx, const struct route_cfg *r)
{
	size_t n = strlen(r->strip_prefix), lit = strcspn(r->path, "{");

	if (n > lit || strncmp(r->path, r->strip_prefix, n) != 0)
		return check_error(ctx, r->pos, "strip_prefix '%s' is not a "
		    "leading part of path '%s'", r->strip_prefix, r->path);
	/* Whole segments only: "/ap" off "/api/x" would leave "i/x". */
	if (r->strip_prefix[n - 1] != '/' && r->path[n] != '/' &&
	    r->path[n] != '\0')
		return check_error(ctx, r->pos, "strip_prefix '%s' ends inside "
		    "a segment of path '%s'; strip whole segments", r->strip_prefix,
		    r->path);
	return 0;
}

/* Reads a route's htpasswd file and webhook secret into the config. */
static int
check_route_files(struct cfg_ctx *ctx, struct route_cfg *r)
{
	char err[512];
	FILE *f;
	size_t n;
	char *p;

	if (r->auth.enabled && r->auth.basic != NULL &&
	    (r->auth.basic_users = htpasswd_load(r->auth.basic,
	    &ctx->cfg->arena, err, sizeof(err))) == NULL)
		return check_error(ctx, r->pos, "route %s: auth.basic: %s",
		    r->path, err);
	if (r->auth.jwt_enabled && (r->auth.jwt.set = jwks_load(
	    r->auth.jwt.keys, err, sizeof(err))) == NULL)
		return check_error(ctx, r->pos, "route %s: auth.jwt: %s",
		    r->path, err);
	if (r->auth.enabled && r->auth.api_keys_file != NULL &&
	    (r->auth.api_keys = apikeys_load(r->auth.api_keys_file,
	    &ctx->cfg->arena, err, sizeof(err))) == NULL)
		return check_error(ctx, r->pos, "route %s: auth.api_keys: %s",
		    r->path, err);
	if (!r->verify_signature.enabled)
		return 0;
	if (r->verify_signature.secret_file == NULL)
		return check_error(ctx, r->pos, "route %s: verify_signature "
		    "needs secret_file", r->path);
	p = cfg_alloc(ctx, 4096);
	if ((f = fopen(r->verify_signature.secret_file, "r")) == NULL)
		return check_error(ctx, r->pos, "route %s: cannot read %s: %s",
		    r->path, r->verify_signature.secret_file, strerror(errno));
	n = fread(p, 1, 4096, f);
	fclose(f);
	if (n == 4096)
		return check_error(ctx, r->pos, "route %s: %s: a secret of "
		    "4 KiB or more; expected one line", r->path,
		    r->verify_signature.secret_file);
	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' ||
	    p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (n == 0)
		return check_error(ctx, r->pos, "route %s: %s: the secret is "
		    "empty", r->path, r->verify_signature.secret_file);
	r->verify_signature.secret = p;
	r->verify_signature.secret_len = n;
	return 0;
}

/*
 * tls.cert and tls.key: both or neither, files that load and match; read
 * into the config here.  Checked even when the upstream has no https://
 * server to show them to (config_warn_ineffective() says so), so that
 * a bad pair never waits for the day one is added.
 */
static int
check_upstream_tls(struct cfg_ctx *ctx, struct upstream_cfg *u)
{
	enum upcert_file which;
	char err[512];

	if (u->tls_cert == NULL && u->tls_key == NULL)
		return 0;
	if (u->tls_key == NULL)
		return check_error(ctx, u->tls_cert_pos, "upstream %s: "
		    "tls.cert needs tls.key (the certificate's private key)",
		    u->name);
	if (u->tls_cert == NULL)
		return check_error(ctx, u->tls_key_pos, "upstream %s: "
		    "tls.key needs tls.cert (the certificate it goes with)",
		    u->name);
	if (upcert_load(u, &ctx->cfg->arena, err, sizeof(err), &which) == -1)
		return check_error(ctx, which == UPCERT_CERT ?
		    u->tls_cert_pos : u->tls_key_pos, "upstream %s: tls.%s: "
		    "%s", u->name, which == UPCERT_CERT ? "cert" : "key", err);
	return 0;
}

static int
check_route(struct cfg_ctx *ctx, struct route_cfg *r)
{
	size_t i;

	if (r->upstream_name == NULL && !r->has_fanout)
		return check_error(ctx, r->pos, "route %s needs upstream: or "
		    "fanout:", r->path);
	if (r->upstream_name != NULL && r->has_fanout)
		return check_error(ctx, r->upstream_pos, "route %s: upstream: "
		    "and fanout: exclude each other", r->path);
	r->content = r->has_fanout ? CONTENT_FANOUT : CONTENT_PROXY;
	if (r->cache.enabled && r->has_fanout)
		return check_error(ctx, r->pos, "route %s: cache applies to "
		    "upstream routes, not fan-out", r->path);
	if (r->cache.enabled && !ctx->cfg->cache_enabled)
		return check_error(ctx, r->pos, "route %s: cache needs a "
		    "top-level cache: section (its memory)", r->path);
	if (r->cache.enabled)
		r->content = CONTENT_CACHE;
	if (r->upstream_name != NULL && resolve_upstream(ctx,
	    r->upstream_name, r->upstream_pos, &r->upstream) == -1)
		return -1;
	if (r->strip_prefix != NULL && check_strip_prefix(ctx, r) == -1)
		return -1;
	if (check_route_files(ctx, r) == -1)
		return -1;
	if (r->hedge_after_ms && r->has_fanout)
		return check_error(ctx, r->pos, "route %s: hedge_after applies "
		    "to upstream routes, not fan-out", r->path);
	if (r->rate_limit.enabled) {
		if (r->rate_limit.backend == RL_BACKEND_REDIS &&
		    !ctx->cfg->redis_enabled)
			return check_error(ctx, r->pos, "route %s: rate_limit "
			    "backend redis needs a top-level redis: section",
			    r->path);
		if (r->rate_limit.burst == 0)
			r->rate_limit.burst = r->rate_limit.rate < 1 ? 1 :
			    (int)ceil(r->rate_limit.rate);
	}
	if (r->cors.enabled && r->cors.credentials)
		for (i = 0; i < r->cors.norigins; i++)
			if (strcmp(r->cors.origins[i], "*") == 0)
				return check_error(ctx, r->pos, "route %s: cors "
				    "credentials cannot be used with origin "
				    "\"*\" (browsers refuse it)", r->path);
	if (r->has_fanout && r->fanout.timeout_ms == 0)
		r->fanout.timeout_ms = r->timeout_ms ? r->timeout_ms : 10000;
	for (i = 0; r->has_fanout && i < r->fanout.ncalls; i++) {
		struct fanout_call_cfg *c = &r->fanout.calls[i];

		if (resolve_upstream(ctx, c->upstream_name, c->upstream_pos,
		    &c->upstream) == -1 || check_template(ctx, r, c) == -1)
			return -1;
	}
	return 0;
}

int
config_finish(struct cfg_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	size_t i;

	if (check_listeners(ctx) == -1)
		return -1;
	for (i = 0; i < cfg->nupstreams; i++)
		if (check_upstream_tls(ctx, &cfg->upstreams[i]) == -1)
			return -1;
	for (i = 0; i < cfg->nroutes; i++)
		if (check_route(ctx, &cfg->routes[i]) == -1)
			return -1;
	return 0;
}

/*
 * A client certificate on an upstream without https:// servers is never
 * sent.  Loaded all the same (nginx takes proxy_ssl_certificate beside an
 * http:// proxy_pass too, and CONFIG.md's example has one), but said.
 */
static void
config_warn_upstream_tls(const struct config *cfg)
{
	size_t i, j;

	for (i = 0; i < cfg->nupstreams; i++) {
		const struct upstream_cfg *u = &cfg->upstreams[i];

		for (j = 0; j < u->nservers && !u->servers[j].https; j++)
			;
		if (u->tls_cert != NULL && j == u->nservers)
			log_warnx("config: upstream %s: tls.cert and tls.key "
			    "have no effect: it has no https:// server to "
			    "show the certificate to", u->name);
	}
}

/*
 * Keys that validate but can have no effect where they are: said at
 * every start and reload, rather than let a config look like it does
 * something it does not.
 */
void
config_warn_ineffective(const struct config *cfg)
{
	config_warn_upstream_tls(cfg);
}
