/*
 * The config contract as data: one table per mapping of agate.yaml (the
 * keys of CONFIG.md plus agate's own additions), the handlers for values
 * with a syntax of their own (listeners, routes, upstream servers...), the
 * defaults, and the cross-reference checks that need the whole file
 * (a route's upstream exists, templates name real parameters...).
 */
#include <arpa/inet.h>
#include <math.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gateway/config/config_engine.h"
#include "lib/log.h"

#define MS(n)		((int64_t)(n))
#define SEC(n)		((int64_t)(n) * 1000)
#define HOUR		SEC(3600)
#define DAY		(24 * HOUR)
#define KIB(n)		((int64_t)(n) * 1024)
#define MIB(n)		((int64_t)(n) * 1024 * 1024)
#define GIB(n)		((int64_t)(n) * 1024 * 1024 * 1024)

static const char *const retry_default_methods[] = {
	"GET", "HEAD", "PUT", "DELETE", "OPTIONS"
};
static const int retry_default_statuses[] = { 502, 503, 504 };
static const char *const cors_default_methods[] = { "GET", "HEAD", "POST" };

/* -- item checks ------------------------------------------------------ */

static bool
is_tchar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~",
	    c) != NULL);
}

static int
check_method(struct cfg_ctx *ctx, yaml_node_t *node, const char *s)
{
	const char *p;

	for (p = s; *p != '\0'; p++)
		if (!is_tchar((unsigned char)*p))
			return cfg_error(ctx, node, "'%s' is not an HTTP method",
			    s);
	for (p = s; *p != '\0'; p++)
		if (*p >= 'a' && *p <= 'z')
			return cfg_error(ctx, node, "methods are case-sensitive; "
			    "write '%s' in capitals", s);
	return 0;
}

static int
check_header_name(struct cfg_ctx *ctx, yaml_node_t *node, const char *s)
{
	const char *p;

	for (p = s; *p != '\0'; p++)
		if (!is_tchar((unsigned char)*p))
			return cfg_error(ctx, node, "'%s' is not a header name",
			    s);
	return 0;
}

static int
check_origin(struct cfg_ctx *ctx, yaml_node_t *node, const char *s)
{
	if (strcmp(s, "*") == 0 || strncmp(s, "http://", 7) == 0 ||
	    strncmp(s, "https://", 8) == 0)
		return 0;
	return cfg_error(ctx, node, "origin '%s' must be \"*\" or start with "
	    "http:// or https://", s);
}

static int
check_abs_path(struct cfg_ctx *ctx, yaml_node_t *node, const char *s)
{
	const char *p;

	if (s[0] != '/')
		return cfg_error(ctx, node, "'%s' must start with /", s);
	for (p = s; *p != '\0'; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#')
			return cfg_error(ctx, node, "'%s' contains a character "
			    "not allowed in a path", s);
	return 0;
}

/* -- custom values ---------------------------------------------------- */

static int
val_workers(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "an integer or auto");
	char *end;
	long v;

	if (s == NULL)
		return -1;
	if (strcmp(s, "auto") == 0) {
		*(int *)field = 0;
		return 0;
	}
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < 1 || v > CONFIG_MAX_WORKERS)
		return cfg_error(ctx, val, "workers: expected auto or an integer "
		    "1..%d, got '%s'", CONFIG_MAX_WORKERS, s);
	*(int *)field = (int)v;
	return 0;
}

static int
val_address(struct cfg_ctx *ctx, yaml_node_t *val, const char *what,
    struct sockaddr_storage *sa, socklen_t *salen, char **text)
{
	const char *s = cfg_scalar(ctx, val, "an address");

	if (s == NULL)
		return -1;
	if (parse_address(s, sa, salen) == -1)
		return cfg_error(ctx, val, "%s: expected host:port (an IPv4 "
		    "address, *, localhost or [IPv6], and a port 1..65535), got "
		    "'%s'", what, s);
	*text = cfg_strdup(ctx, s);
	return 0;
}

static int
val_listen_address(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct listen_cfg *l = field;

	l->pos = cfg_pos(val);
	return val_address(ctx, val, "address", &l->sa, &l->salen,
	    &l->address);
}

static const struct cfg_key listen_tls_keys[] = {
	{ "cert", CT_FILE, offsetof(struct tls_pair, cert),
	    .flags = CK_REQUIRED },
	{ "key", CT_FILE, offsetof(struct tls_pair, key),
	    .flags = CK_REQUIRED },
	{ NULL }
};

/*
 * tls: {cert, key}, or a list of them: several certificates on one
 * listener, chosen by the name the client asks for (SNI); the first is
 * the default.
 */
static int
val_listen_tls(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct listen_cfg *l = field;
	yaml_node_item_t *it;
	size_t n, i;

	if (val->type == YAML_MAPPING_NODE) {
		l->tls_pairs = cfg_alloc(ctx, sizeof(*l->tls_pairs));
		l->ntls = 1;
		if (cfg_map(ctx, val, listen_tls_keys, l->tls_pairs, "tls") ==
		    -1)
			return -1;
	} else if (val->type == YAML_SEQUENCE_NODE) {
		n = (size_t)(val->data.sequence.items.top -
		    val->data.sequence.items.start);
		if (n == 0)
			return cfg_error(ctx, val, "tls: expected {cert, key} "
			    "or a list of them, got an empty list");
		l->tls_pairs = cfg_alloc(ctx, n * sizeof(*l->tls_pairs));
		l->ntls = n;
		for (i = 0, it = val->data.sequence.items.start; i < n;
		    i++, it++)
			if (cfg_map(ctx, cfg_node(ctx, *it), listen_tls_keys,
			    &l->tls_pairs[i], "tls") == -1)
				return -1;
	} else
		return cfg_error(ctx, val, "tls: expected {cert, key} or a "
		    "list of them");
	l->tls_cert = l->tls_pairs[0].cert;
	l->tls_key = l->tls_pairs[0].key;
	l->tls_pos = cfg_pos(val);
	return 0;
}

static const struct cfg_key listen_keys[] = {
	{ "address", CT_CUSTOM, 0, .aux = val_listen_address,
	    .flags = CK_REQUIRED },
	{ "tls", CT_CUSTOM, 0, .aux = val_listen_tls },
	{ "proxy_protocol", CT_BOOL,
	    offsetof(struct listen_cfg, proxy_protocol) },
	{ "http2", CT_BOOL, offsetof(struct listen_cfg, http2) },
	{ NULL }
};

static int
val_listen(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct server_sect *srv = field;
	size_t n = cfg_list_len(val), i;

	if (n == 0)
		return cfg_error(ctx, val, "listen: needs at least one address");
	srv->listen = cfg_alloc(ctx, n * sizeof(*srv->listen));
	srv->nlisten = n;
	for (i = 0; i < n; i++) {
		yaml_node_t *item = cfg_list_item(ctx, val, i);
		struct listen_cfg *l = &srv->listen[i];

		l->http2 = true;

		if (item->type == YAML_SCALAR_NODE) {
			if (val_listen_address(ctx, item, l) == -1)
				return -1;
		} else if (cfg_map(ctx, item, listen_keys, l, "listen") == -1)
			return -1;
	}
	return 0;
}

static int
val_trusted(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct server_sect *srv = field;
	size_t n = cfg_list_len(val), i;

	srv->trusted = cfg_alloc(ctx, n * sizeof(*srv->trusted));
	srv->ntrusted = n;
	for (i = 0; i < n; i++) {
		yaml_node_t *item = cfg_list_item(ctx, val, i);
		const char *s = cfg_scalar(ctx, item, "an address or CIDR");

		if (s == NULL)
			return -1;
		if (parse_cidr(s, &srv->trusted[i]) == -1)
			return cfg_error(ctx, item, "trusted_proxies: expected "
			    "an address or CIDR like 10.0.0.0/8, got '%s'", s);
	}
	return 0;
}

static int
val_health_path(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "a path");

	if (s == NULL)
		return -1;
	if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0) {
		*(char **)field = NULL;
		return 0;
	}
	if (check_abs_path(ctx, val, s) == -1)
		return -1;
	*(char **)field = cfg_strdup(ctx, s);
	return 0;
}

static const struct cfg_key http2_keys[] = {
	{ "max_concurrent_streams", CT_INT,
	    offsetof(struct http2_cfg, max_concurrent_streams), 1, 100000 },
	{ "initial_window_size", CT_SIZE,
	    offsetof(struct http2_cfg, initial_window_size), 1, INT32_MAX },
	{ "max_header_list_size", CT_SIZE,
	    offsetof(struct http2_cfg, max_header_list_size), KIB(1), MIB(1) },
	{ "max_resets_per_second", CT_INT,
	    offsetof(struct http2_cfg, max_resets_per_second), 1, 1000000 },
	{ NULL }
};

static const struct cfg_key server_keys[] = {
	{ "workers", CT_CUSTOM, offsetof(struct server_sect, workers),
	    .aux = val_workers },
	{ "listen", CT_CUSTOM, 0, .aux = val_listen },
	{ "trusted_proxies", CT_CUSTOM, 0, .aux = val_trusted },
	{ "pid_file", CT_PATH, offsetof(struct server_sect, pid_file),
	    .off2 = offsetof(struct server_sect, pid_file_pos),
	    .flags = CK_POS },
	{ "user", CT_STRING, offsetof(struct server_sect, user),
	    .off2 = offsetof(struct server_sect, user_pos), .flags = CK_POS },
	{ "health_path", CT_CUSTOM, offsetof(struct server_sect, health_path),
	    .aux = val_health_path },
	{ "shutdown_delay", CT_DURATION,
	    offsetof(struct server_sect, shutdown_delay_ms), 0, HOUR },
	{ "drain_timeout", CT_DURATION,
	    offsetof(struct server_sect, drain_timeout_ms), 0, DAY },
	{ "max_connections", CT_INT,
	    offsetof(struct server_sect, max_connections), 1, 1000000 },
	{ "header_timeout", CT_DURATION,
	    offsetof(struct server_sect, header_timeout_ms), MS(1), HOUR },
	{ "idle_timeout", CT_DURATION,
	    offsetof(struct server_sect, idle_timeout_ms), MS(1), DAY },
	{ "tunnel_timeout", CT_DURATION,
	    offsetof(struct server_sect, tunnel_timeout_ms), MS(1), 7 * DAY },
	{ "max_header_size", CT_SIZE,
	    offsetof(struct server_sect, max_header_size), KIB(1), MIB(1) },
	{ "max_body_size", CT_SIZE,
	    offsetof(struct server_sect, max_body_size), 0, INT64_MAX },
	{ "http2", CT_SECTION, offsetof(struct server_sect, http2),
	    .aux = http2_keys },
	{ NULL }
};

static int
val_admin_listen(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct config *cfg = field;

	return val_address(ctx, val, "listen", &cfg->admin_sa,
	    &cfg->admin_salen, &cfg->admin_listen);
}

static const struct cfg_key admin_keys[] = {
	{ "listen", CT_CUSTOM, 0, .aux = val_admin_listen,
	    .flags = CK_REQUIRED },
	{ NULL }
};

static const char *const log_levels[] = {
	"error", "warn", "info", "debug", NULL
};

static int
val_log_error(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "stderr or a path");

	if (s == NULL)
		return -1;
	if (*s == '\0')
		return cfg_error(ctx, val, "error: expected stderr or a path");
	*(char **)field = strcmp(s, "stderr") == 0 ? NULL : cfg_path(ctx, s);
	ctx->cfg->log_error_pos = cfg_pos(val);
	return 0;
}

static int
val_log_access(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct config *cfg = field;
	const char *s = cfg_scalar(ctx, val, "stdout, off or a path");

	if (s == NULL)
		return -1;
	if (*s == '\0')
		return cfg_error(ctx, val, "access: expected stdout, off or a "
		    "path");
	if (strcmp(s, "stdout") == 0)
		cfg->log_access = ACCESS_STDOUT;
	else if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0 ||
	    strcmp(s, "no") == 0)
		cfg->log_access = ACCESS_OFF;
	else {
		cfg->log_access = ACCESS_FILE;
		cfg->log_access_file = cfg_path(ctx, s);
		cfg->log_access_pos = cfg_pos(val);
	}
	return 0;
}

/*
 * log.slow_callback: a duration (or "500us"), 0 for off.  It is measured
 * with CLOCK_MONOTONIC_COARSE (worker/loopwatch.c), whose resolution is a
 * kernel tick: a threshold below it could not be told apart from 0.
 */
static int
val_slow_callback(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "a duration");
	struct timespec res;
	uint64_t us, ms, res_us;
	size_t n;
	char *end;

	if (s == NULL)
		return -1;
	n = strlen(s);
	if (n > 2 && strcmp(s + n - 2, "us") == 0 && s[0] >= '0' &&
	    s[0] <= '9') {
		us = strtoull(s, &end, 10);
		if (end != s + n - 2 || us > (uint64_t)HOUR * 1000)
			return cfg_error(ctx, val, "slow_callback: expected a "
			    "duration like 100ms or 1s, got '%s'", s);
	} else if (parse_duration_ms(s, &ms) == -1 || ms > (uint64_t)HOUR)
		return cfg_error(ctx, val, "slow_callback: expected a duration "
		    "like 100ms or 1s (0 for off, at most 1h), got '%s'", s);
	else
		us = ms * 1000;
	if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == -1)
		res.tv_sec = 0, res.tv_nsec = 1000000;
	res_us = (uint64_t)res.tv_sec * 1000000 + (uint64_t)res.tv_nsec / 1000;
	if (us != 0 && us < res_us)
		return cfg_error(ctx, val, "slow_callback: '%s' is below the "
		    "resolution of the clock that measures it (%llu us, "
		    "CLOCK_MONOTONIC_COARSE); use 0 to turn it off", s,
		    (unsigned long long)res_us);
	*(uint64_t *)field = us;
	return 0;
}

static const struct cfg_key log_keys[] = {
	{ "level", CT_ENUM, offsetof(struct config, log_level),
	    .aux = log_levels },
	{ "error", CT_CUSTOM, offsetof(struct config, log_error),
	    .aux = val_log_error },
	{ "access", CT_CUSTOM, 0, .aux = val_log_access },
	{ "slow_callback", CT_CUSTOM,
	    offsetof(struct config, log_slow_callback_us),
	    .aux = val_slow_callback },
	{ NULL }
};

static int
val_redis_address(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "host:port"), *colon;
	long port;
	char *end;

	if (s == NULL)
		return -1;
	colon = strrchr(s, ':');
	if (colon == NULL || colon == s ||
	    (port = strtol(colon + 1, &end, 10)) < 1 || port > 65535 ||
	    *end != '\0')
		return cfg_error(ctx, val, "address: expected host:port, got "
		    "'%s'", s);
	*(char **)field = cfg_strdup(ctx, s);
	return 0;
}

static const char *const redis_failure_modes[] = { "deny", "allow", NULL };

static const struct cfg_key redis_keys[] = {
	{ "address", CT_CUSTOM, offsetof(struct config, redis_address),
	    .aux = val_redis_address, .flags = CK_REQUIRED },
	{ "on_failure", CT_ENUM, offsetof(struct config, redis_fail_open),
	    .aux = redis_failure_modes },
	{ NULL }
};

static const struct cfg_key offload_keys[] = {
	{ "processes", CT_INT, offsetof(struct config, offload_processes),
	    0, 64 },
	{ "queue_limit", CT_INT, offsetof(struct config, offload_queue_limit),
	    1, 1000000 },
	{ "job_timeout", CT_DURATION,
	    offsetof(struct config, offload_job_timeout_ms), MS(1), HOUR },
	{ NULL }
};

static const struct cfg_key cache_keys[] = {
	{ "memory", CT_SIZE, offsetof(struct config, cache_memory), MIB(1),
	    GIB(64) },
	{ "max_entry", CT_SIZE, offsetof(struct config, cache_max_entry), 1,
	    GIB(1) },
	{ "lock_timeout", CT_DURATION,
	    offsetof(struct config, cache_lock_timeout_ms), MS(1), HOUR },
	{ NULL }
};

/* sample_ratio: a number 0..1 (0.1 = one request in ten). */
static int
val_sample_ratio(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "a number 0..1");
	char *end = NULL;
	double v = -1;

	if (s == NULL)
		return -1;
	if ((*s >= '0' && *s <= '9') || *s == '.')
		v = strtod(s, &end);
	if (end == NULL || *end != '\0' || !(v >= 0 && v <= 1))
		return cfg_error(ctx, val, "sample_ratio: expected a number "
		    "0..1 (e.g. 0.1), got '%s'", s);
	*(double *)field = v;
	return 0;
}

/* otlp: the collector's OTLP/HTTP traces URL. */
static int
val_otlp(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "an http:// or https:// URL");
	size_t skip;

	if (s == NULL)
		return -1;
	skip = strncmp(s, "http://", 7) == 0 ? 7 :
	    strncmp(s, "https://", 8) == 0 ? 8 : 0;
	if (skip == 0 || s[skip] == '\0' || s[skip] == '/' ||
	    strpbrk(s, " \t\r\n") != NULL)
		return cfg_error(ctx, val, "otlp: expected an http:// or "
		    "https:// URL (e.g. http://127.0.0.1:4318/v1/traces), got "
		    "'%s'", s);
	*(char **)field = cfg_strdup(ctx, s);
	return 0;
}

static const struct cfg_key tracing_keys[] = {
	{ "sample_ratio", CT_CUSTOM,
	    offsetof(struct config, tracing_sample_ratio),
	    .aux = val_sample_ratio },
	{ "otlp", CT_CUSTOM, offsetof(struct config, tracing_otlp),
	    .aux = val_otlp },
	{ "service_name", CT_STRING,
	    offsetof(struct config, tracing_service_name) },
	{ NULL }
};

/* -- upstreams -------------------------------------------------------- */

/* Whether host is an IPv4 address or a bracketed IPv6 one: never looked
 * up. */
static bool
host_is_literal(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;
	char buf[64];
	size_t n = strlen(host);

	if (host[0] == '[' && n >= 2 && n - 2 < sizeof(buf)) {
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
		return inet_pton(AF_INET6, buf, &a6) == 1;
	}
	return inet_pton(AF_INET, host, &a4) == 1;
}

/* A DNS name: letters, digits, '-', '_' and dots, labels 1..63 long. */
static int
check_host_name(const char *h)
{
	size_t label = 0, n = 0;

	for (; *h != '\0'; h++, n++) {
		if (*h == '.') {
			if (label == 0)
				return -1;
			label = 0;
			continue;
		}
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		    (*h >= '0' && *h <= '9') || *h == '-' || *h == '_') ||
		    ++label > 63)
			return -1;
	}
	return n > 0 && n <= 253 ? 0 : -1;
}

/* "http://host[:port]", "https://..." or "h2c://..." (HTTP/2 with prior
 * knowledge, agate's own client), with nothing after but "/". */
static int
val_server(struct cfg_ctx *ctx, yaml_node_t *item, struct server_cfg *srv)
{
	const char *s = cfg_scalar(ctx, item, "a server URL"), *h, *end, *p;
	size_t hlen, n;
	long port;
	char *e;

	if (s == NULL)
		return -1;
	if (strncmp(s, "http://", 7) == 0) {
		h = s + 7;
		srv->https = false;
	} else if (strncmp(s, "https://", 8) == 0) {
		h = s + 8;
		srv->https = true;
	} else if (strncmp(s, "h2c://", 6) == 0) {
		h = s + 6;
		srv->h2c = true;
	} else
		return cfg_error(ctx, item, "server '%s' must start with "
		    "http://, https:// or h2c://", s);
	end = h + strcspn(h, "/?#");
	if (*end != '\0' && strcmp(end, "/") != 0)
		return cfg_error(ctx, item, "server '%s': a server is "
		    "scheme://host:port; put paths in routes (strip_prefix) "
		    "instead", s);
	if (*h == '[') {
		if ((p = memchr(h, ']', (size_t)(end - h))) == NULL)
			return cfg_error(ctx, item, "server '%s': unclosed [",
			    s);
		p++;
	} else
		p = h + strcspn(h, ":/?#");
	hlen = (size_t)(p - h);
	if (hlen == 0)
		return cfg_error(ctx, item, "server '%s' has no host", s);
	port = srv->https ? 443 : 80;
	if (*p == ':') {
		port = strtol(p + 1, &e, 10);
		if (e != end || port < 1 || port > 65535)
			return cfg_error(ctx, item, "server '%s': bad port", s);
	} else if (p != end)
		return cfg_error(ctx, item, "server '%s': bad host", s);
	srv->host = cfg_alloc(ctx, hlen + 1);
	memcpy(srv->host, h, hlen);
	srv->port = (uint16_t)port;
	if ((srv->named = !host_is_literal(srv->host)) &&
	    check_host_name(srv->host) == -1)
		return cfg_error(ctx, item, "server '%s': bad host name", s);
	n = (size_t)(end - s) + 1;
	srv->url = cfg_alloc(ctx, n);
	memcpy(srv->url, s, n - 1);
	srv->curl_url = srv->url;
	if (srv->h2c) {
		srv->curl_url = cfg_alloc(ctx, n + 1);
		snprintf(srv->curl_url, n + 1, "http://%s", srv->url + 6);
	}
	return 0;
}

static int
val_servers(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct upstream_cfg *up = field;
	size_t n = cfg_list_len(val), i;

	if (n == 0)
		return cfg_error(ctx, val, "servers: needs at least one server");
	up->servers = cfg_alloc(ctx, n * sizeof(*up->servers));
	up->nservers = n;
	for (i = 0; i < n; i++)
		if (val_server(ctx, cfg_list_item(ctx, val, i),
		    &up->servers[i]) == -1)
			return -1;
	return 0;
}

static int
val_conditions(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct retry_cfg *r = field;
	size_t n = cfg_list_len(val), i;

	r->on = 0;
	r->statuses = cfg_alloc(ctx, n * sizeof(*r->statuses));
	r->nstatuses = 0;
	for (i = 0; i < n; i++) {
		yaml_node_t *item = cfg_list_item(ctx, val, i);
		const char *s = cfg_scalar(ctx, item, "a condition");
		char *end;
		long st;

		if (s == NULL)
			return -1;
		if (strcmp(s, "connect_failure") == 0)
			r->on |= RETRY_ON_CONNECT_FAILURE;
		else if (strcmp(s, "timeout") == 0)
			r->on |= RETRY_ON_TIMEOUT;
		else if (strcmp(s, "reset") == 0)
			r->on |= RETRY_ON_RESET;
		else if ((st = strtol(s, &end, 10)) >= 400 && st <= 599 &&
		    *end == '\0')
			r->statuses[r->nstatuses++] = (int)st;
		else
			return cfg_error(ctx, item, "conditions: expected "
			    "connect_failure, timeout, reset or a status "
			    "400..599, got '%s'", s);
	}
	return 0;
}

/*
 * budget: "20%", a share of the first tries; 0%..1000%.  The % is
 * required: a bare 20 (or 0.2, which would be 0.2%) is ambiguous.
 */
static int
val_budget(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	double *share = field, v = -1;
	const char *s = cfg_scalar(ctx, val, "a percentage");
	char *end = NULL;

	if (s == NULL)
		return -1;
	if (*s >= '0' && *s <= '9')
		v = strtod(s, &end);
	if (end == NULL || strcmp(end, "%") != 0 || !(v >= 0 && v <= 1000))
		return cfg_error(ctx, val, "budget: expected a percentage "
		    "0%%..1000%% (e.g. 20%%), got '%s'", s);
	*share = v / 100.0;
	return 0;
}

static const struct cfg_key retry_keys[] = {
	{ "attempts", CT_INT, offsetof(struct retry_cfg, attempts), 1, 10 },
	{ "backoff", CT_DURATION, offsetof(struct retry_cfg, backoff_ms),
	    0, SEC(60) },
	{ "max_backoff", CT_DURATION,
	    offsetof(struct retry_cfg, max_backoff_ms), 0, SEC(600) },
	{ "conditions", CT_CUSTOM, 0, .aux = val_conditions },
	{ "methods", CT_STRLIST, offsetof(struct retry_cfg, methods),
	    .aux = check_method, .off2 = offsetof(struct retry_cfg, nmethods) },
	{ "budget", CT_CUSTOM, offsetof(struct retry_cfg, budget),
	    .aux = val_budget },
	{ NULL }
};

static const struct cfg_key breaker_keys[] = {
	{ "failures", CT_INT, offsetof(struct breaker_cfg, failures),
	    1, 100000 },
	{ "open_for", CT_DURATION, offsetof(struct breaker_cfg, open_for_ms),
	    MS(1), DAY },
	{ NULL }
};

static const struct cfg_key upstream_tls_keys[] = {
	{ "ca", CT_FILE, offsetof(struct upstream_cfg, tls_ca) },
	{ "verify", CT_BOOL, offsetof(struct upstream_cfg, tls_verify) },
	{ "cert", CT_FILE, offsetof(struct upstream_cfg, tls_cert),
	    .off2 = offsetof(struct upstream_cfg, tls_cert_pos),
	    .flags = CK_POS },
	{ "key", CT_FILE, offsetof(struct upstream_cfg, tls_key),
	    .off2 = offsetof(struct upstream_cfg, tls_key_pos),
	    .flags = CK_POS },
	{ NULL }
};

static int
val_check_path(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "a path");

	if (s == NULL || check_abs_path(ctx, val, s) == -1)
		return -1;
	*(char **)field = cfg_strdup(ctx, s);
	return 0;
}

static const struct cfg_key health_check_keys[] = {
	{ "path", CT_CUSTOM, offsetof(struct health_check_cfg, path),
	    .aux = val_check_path },
	{ "interval", CT_DURATION,
	    offsetof(struct health_check_cfg, interval_ms), MS(10), HOUR },
	{ "timeout", CT_DURATION,
	    offsetof(struct health_check_cfg, timeout_ms), MS(1), HOUR },
	{ "healthy", CT_INT, offsetof(struct health_check_cfg, healthy),
	    1, 100 },
	{ "unhealthy", CT_INT, offsetof(struct health_check_cfg, unhealthy),
	    1, 100 },
	{ NULL }
};

static const char *const balance_names[] = {
	"round_robin", "least_request", "random", NULL
};

static const char *const transport_names[] = {
	"auto", "native", "curl", NULL
};

static const struct cfg_key upstream_keys[] = {
	{ "servers", CT_CUSTOM, 0, .aux = val_servers, .flags = CK_REQUIRED },
	{ "balance", CT_ENUM, offsetof(struct upstream_cfg, balance),
	    .aux = balance_names },
	{ "transport", CT_ENUM, offsetof(struct upstream_cfg, transport),
	    .aux = transport_names },
	{ "keepalive", CT_INT, offsetof(struct upstream_cfg, keepalive),
	    0, 100000 },
	{ "keepalive_timeout", CT_DURATION,
	    offsetof(struct upstream_cfg, keepalive_timeout_ms), MS(1), HOUR },
	{ "connect_timeout", CT_DURATION,
	    offsetof(struct upstream_cfg, connect_timeout_ms), MS(1), HOUR },
	{ "timeout", CT_DURATION, offsetof(struct upstream_cfg, timeout_ms),
	    MS(1), DAY },
	{ "max_concurrent", CT_INT,
	    offsetof(struct upstream_cfg, max_concurrent), 1, 1000000 },
	{ "max_queue", CT_INT, offsetof(struct upstream_cfg, max_queue),
	    0, 1000000 },
	{ "retry", CT_SECTION, offsetof(struct upstream_cfg, retry),
	    .aux = retry_keys },
	{ "circuit_breaker", CT_SECTION,
	    offsetof(struct upstream_cfg, breaker), .aux = breaker_keys,
	    .off2 = offsetof(struct upstream_cfg, breaker.enabled),
	    .flags = CK_ENABLE },
	{ "tls", CT_SECTION, 0, .aux = upstream_tls_keys },
	{ "health_check", CT_SECTION, offsetof(struct upstream_cfg, health),
	    .aux = health_check_keys,
	    .off2 = offsetof(struct upstream_cfg, health.enabled),
	    .flags = CK_ENABLE },
	{ "resolve", CT_DURATION, offsetof(struct upstream_cfg, resolve_ms),
	    SEC(1), DAY },
	{ NULL }
};

static void
upstream_defaults(struct upstream_cfg *up)
{
	up->balance = BALANCE_ROUND_ROBIN;
	up->keepalive = 32;
	up->keepalive_timeout_ms = 4000;
	up->connect_timeout_ms = 5000;
	up->timeout_ms = 30000;
	up->max_concurrent = 1024;
	up->max_queue = 1024;
	up->retry.attempts = 1;
	up->retry.backoff_ms = 25;
	up->retry.max_backoff_ms = 1000;
	up->retry.budget = 0.2;
	up->retry.on = RETRY_ON_CONNECT_FAILURE | RETRY_ON_TIMEOUT |
	    RETRY_ON_RESET;
	up->retry.statuses = (int *)retry_default_statuses;
	up->retry.nstatuses = sizeof(retry_default_statuses) /
	    sizeof(retry_default_statuses[0]);
	up->retry.methods = (char **)retry_default_methods;
	up->retry.nmethods = sizeof(retry_default_methods) /
	    sizeof(retry_default_methods[0]);
	up->breaker.failures = 5;
	up->breaker.open_for_ms = 10000;
	up->tls_verify = true;
	up->health.path = "/healthz";
	up->health.interval_ms = 5000;
	up->health.timeout_ms = 1000;
	up->health.healthy = 2;
	up->health.unhealthy = 3;
	up->resolve_ms = 30000;
}

static int
check_name(struct cfg_ctx *ctx, yaml_node_t *node, const char *what,
    const char *s)
{
	const char *p;

	if (*s == '\0')
		return cfg_error(ctx, node, "%s name is empty", what);
	for (p = s; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
		    *p == '.'))
			return cfg_error(ctx, node, "%s name '%s' may hold only "
			    "letters, digits, '_', '-' and '.'", what, s);
	return 0;
}

static int
val_upstreams(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct config *cfg = field;
	yaml_node_pair_t *pair;
	size_t n, i, j;

	if (val->type != YAML_MAPPING_NODE)
		return cfg_error(ctx, val, "upstreams: expected a mapping of "
		    "name: {servers: [...]}");
	n = (size_t)(val->data.mapping.pairs.top -
	    val->data.mapping.pairs.start);
	cfg->upstreams = cfg_alloc(ctx, n * sizeof(*cfg->upstreams));
	cfg->nupstreams = n;
	for (i = 0, pair = val->data.mapping.pairs.start; i < n; i++, pair++) {
		struct upstream_cfg *up = &cfg->upstreams[i];
		yaml_node_t *kn = cfg_node(ctx, pair->key);
		const char *name = cfg_scalar(ctx, kn, "an upstream name");

		if (name == NULL || check_name(ctx, kn, "upstream", name) == -1)
			return -1;
		for (j = 0; j < i; j++)
			if (strcmp(cfg->upstreams[j].name, name) == 0)
				return cfg_error(ctx, kn, "duplicate upstream "
				    "'%s'", name);
		up->name = cfg_strdup(ctx, name);
		up->pos = cfg_pos(kn);
		upstream_defaults(up);
		if (cfg_map(ctx, cfg_node(ctx, pair->value), upstream_keys, up,
		    up->name) == -1)
			return -1;
		for (j = 0; up->transport == TRANSPORT_NATIVE &&
		    j < up->nservers; j++)
			if (up->servers[j].https)
				return cfg_error(ctx, cfg_node(ctx, pair->value),
				    "%s: transport native speaks http:// and "
				    "h2c://; server %s needs auto or curl",
				    up->name, up->servers[j].url);
		if (up->retry.backoff_ms > up->retry.max_backoff_ms)
			return cfg_error(ctx, cfg_node(ctx, pair->value),
			    "%s: retry backoff is larger than max_backoff",
			    up->name);
	}
	return 0;
}

/* -- routes ----------------------------------------------------------- */

static bool
is_param_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_';
}

/*
 * "/api/users/" (prefix), "/users/{id}" (exact, binds id).  A {param}
 * is a whole segment; the pattern is split into segments once here so
 * the router only compares.
 */
static int
val_route_path(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct route_cfg *r = field;
	const char *s = cfg_scalar(ctx, val, "a path"), *p, *seg;
	size_t n = 0, i, len;

	if (s == NULL || check_abs_path(ctx, val, s) == -1)
		return -1;
	if (strchr(s, '?') != NULL)
		return cfg_error(ctx, val, "path '%s': a route path has no query",
		    s);
	r->path = cfg_strdup(ctx, s);
	r->prefix = s[strlen(s) - 1] == '/';
	for (p = s; *p != '\0'; p++)
		n += *p == '/';
	r->segs = cfg_alloc(ctx, n * sizeof(*r->segs));
	for (seg = s + 1; *seg != '\0'; seg += len + (seg[len] == '/')) {
		struct route_seg *rs = &r->segs[r->nsegs];

		len = strcspn(seg, "/");
		if (len == 0)
			return cfg_error(ctx, val, "path '%s' has an empty "
			    "segment (//)", s);
		rs->param = seg[0] == '{';
		if (rs->param) {
			if (seg[len - 1] != '}' || len < 3)
				return cfg_error(ctx, val, "path '%s': a {param} "
				    "must be a whole segment", s);
			for (i = 1; i < len - 1; i++)
				if (!is_param_char((unsigned char)seg[i]))
					return cfg_error(ctx, val, "path '%s': "
					    "bad parameter name", s);
			rs->text = cfg_alloc(ctx, len - 1);
			memcpy(rs->text, seg + 1, len - 2);
			rs->len = len - 2;
			for (i = 0; i < r->nsegs; i++)
				if (r->segs[i].param &&
				    strcmp(r->segs[i].text, rs->text) == 0)
					return cfg_error(ctx, val, "path '%s' "
					    "binds {%s} twice", s, rs->text);
		} else {
			if (memchr(seg, '{', len) || memchr(seg, '}', len))
				return cfg_error(ctx, val, "path '%s': a {param} "
				    "must be a whole segment", s);
			rs->text = cfg_alloc(ctx, len + 1);
			memcpy(rs->text, seg, len);
			rs->len = len;
		}
		r->nsegs++;
	}
	return 0;
}

static int
val_route_upstream(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct route_cfg *r = field;
	const char *s = cfg_scalar(ctx, val, "an upstream name");

	if (s == NULL)
		return -1;
	r->upstream_name = cfg_strdup(ctx, s);
	r->upstream_pos = cfg_pos(val);
	return 0;
}

static int
val_compress(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "gzip");

	if (s == NULL)
		return -1;
	if (strcmp(s, "gzip") == 0)
		*(bool *)field = true;
	else if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0)
		*(bool *)field = false;
	else
		return cfg_error(ctx, val, "compress: expected gzip or off, got "
		    "'%s'", s);
	return 0;
}

static int
val_rate(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "a rate");

	if (s == NULL)
		return -1;
	if (parse_rate(s, field) == -1)
		return cfg_error(ctx, val, "rate: expected a rate like 100/s, "
		    "600/m or 1000/h, got '%s'", s);
	return 0;
}

static int
val_rl_key(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct rate_limit_cfg *rl = field;
	const char *s = cfg_scalar(ctx, val, "client_ip or header:NAME");

	if (s == NULL)
		return -1;
	if (strcmp(s, "client_ip") == 0) {
		rl->key = RL_KEY_CLIENT_IP;
		return 0;
	}
	if (strncmp(s, "header:", 7) == 0 && s[7] != '\0') {
		if (check_header_name(ctx, val, s + 7) == -1)
			return -1;
		rl->key = RL_KEY_HEADER;
		rl->key_header = cfg_strdup(ctx, s + 7);
		return 0;
	}
	return cfg_error(ctx, val, "key: expected client_ip or header:NAME, "
	    "got '%s'", s);
}

static const char *const rl_backends[] = { "local", "redis", NULL };

static const struct cfg_key rate_limit_keys[] = {
	{ "rate", CT_CUSTOM, offsetof(struct rate_limit_cfg, rate),
	    .aux = val_rate, .flags = CK_REQUIRED },
	{ "burst", CT_INT, offsetof(struct rate_limit_cfg, burst), 1, 10000000 },
	{ "key", CT_CUSTOM, 0, .aux = val_rl_key },
	{ "backend", CT_ENUM, offsetof(struct rate_limit_cfg, backend),
	    .aux = rl_backends },
	{ NULL }
};

/* forward_claims: {claim: Header-Name, ...} */
static int
val_forward_claims(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct jwt_cfg *j = field;
	yaml_node_pair_t *p;
	size_t n, i = 0;

	if (val->type != YAML_MAPPING_NODE)
		return cfg_error(ctx, val, "forward_claims: expected a mapping "
		    "of claim: Header-Name");
	n = (size_t)(val->data.mapping.pairs.top -
	    val->data.mapping.pairs.start);
	j->claims = cfg_alloc(ctx, (n ? n : 1) * sizeof(char *));
	j->claim_headers = cfg_alloc(ctx, (n ? n : 1) * sizeof(char *));
	for (p = val->data.mapping.pairs.start;
	    p < val->data.mapping.pairs.top; p++, i++) {
		yaml_node_t *k = cfg_node(ctx, p->key), *v = cfg_node(ctx,
		    p->value);
		const char *ks = cfg_scalar(ctx, k, "a claim name"), *vs;
		const char *c;

		if (ks == NULL || (vs = cfg_scalar(ctx, v, "a header name")) ==
		    NULL)
			return -1;
		for (c = vs; *c != '\0'; c++)
			if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' &&
			    *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
				return cfg_error(ctx, v, "forward_claims: '%s' "
				    "is not a header name", vs);
		if (*vs == '\0')
			return cfg_error(ctx, v, "forward_claims: empty "
			    "header name");
		j->claims[i] = cfg_strdup(ctx, ks);
		j->claim_headers[i] = cfg_strdup(ctx, vs);
	}
	j->nclaims = n;
	return 0;
}

static const struct cfg_key jwt_keys[] = {
	{ "keys", CT_FILE, offsetof(struct jwt_cfg, keys),
	    .flags = CK_REQUIRED },
	{ "forward_claims", CT_CUSTOM, 0, .aux = val_forward_claims },
	{ "issuer", CT_STRING, offsetof(struct jwt_cfg, issuer) },
	/* A string or a list of strings, as CT_STRLIST takes both. */
	{ "audience", CT_STRLIST, offsetof(struct jwt_cfg, audiences),
	    .off2 = offsetof(struct jwt_cfg, naudiences) },
	{ NULL }
};

static const struct cfg_key api_keys_keys[] = {
	{ "file", CT_FILE, offsetof(struct auth_cfg, api_keys_file),
	    .flags = CK_REQUIRED },
	{ "header", CT_STRING, offsetof(struct auth_cfg, api_keys_header) },
	{ NULL }
};

static const struct cfg_key auth_keys[] = {
	{ "basic", CT_FILE, offsetof(struct auth_cfg, basic) },
	{ "jwt", CT_SECTION, offsetof(struct auth_cfg, jwt), .aux = jwt_keys,
	    .off2 = offsetof(struct auth_cfg, jwt_enabled),
	    .flags = CK_ENABLE },
	{ "api_keys", CT_SECTION, 0, .aux = api_keys_keys },
	{ NULL }
};

static const struct cfg_key cors_keys[] = {
	{ "origins", CT_STRLIST, offsetof(struct cors_cfg, origins),
	    .aux = check_origin, .off2 = offsetof(struct cors_cfg, norigins),
	    .flags = CK_REQUIRED },
	{ "methods", CT_STRLIST, offsetof(struct cors_cfg, methods),
	    .aux = check_method, .off2 = offsetof(struct cors_cfg, nmethods) },
	{ "headers", CT_STRLIST, offsetof(struct cors_cfg, headers),
	    .aux = check_header_name,
	    .off2 = offsetof(struct cors_cfg, nheaders) },
	{ "max_age", CT_DURATION, offsetof(struct cors_cfg, max_age_ms),
	    0, DAY },
	{ "credentials", CT_BOOL, offsetof(struct cors_cfg, credentials) },
	{ NULL }
};

static const struct cfg_key verify_sig_keys[] = {
	{ "header", CT_STRING, offsetof(struct verify_sig_cfg, header) },
	{ "secret_file", CT_FILE, offsetof(struct verify_sig_cfg, secret_file),
	    .flags = CK_REQUIRED },
	{ NULL }
};

static int
val_call_upstream(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct fanout_call_cfg *c = field;
	const char *s = cfg_scalar(ctx, val, "an upstream name");

	if (s == NULL)
		return -1;
	c->upstream_name = cfg_strdup(ctx, s);
	c->upstream_pos = cfg_pos(val);
	return 0;
}

static int
val_call_path(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct fanout_call_cfg *c = field;
	const char *s = cfg_scalar(ctx, val, "a path");

	if (s == NULL || check_abs_path(ctx, val, s) == -1)
		return -1;
	c->path = cfg_strdup(ctx, s);
	c->path_pos = cfg_pos(val);
	return 0;
}

static int
val_call_method(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	const char *s = cfg_scalar(ctx, val, "a method");

	if (s == NULL || check_method(ctx, val, s) == -1)
		return -1;
	*(char **)field = cfg_strdup(ctx, s);
	return 0;
}

static const struct cfg_key call_keys[] = {
	{ "upstream", CT_CUSTOM, 0, .aux = val_call_upstream,
	    .flags = CK_REQUIRED },
	{ "path", CT_CUSTOM, 0, .aux = val_call_path, .flags = CK_REQUIRED },
	{ "method", CT_CUSTOM, offsetof(struct fanout_call_cfg, method),
	    .aux = val_call_method },
	{ NULL }
};

static int
val_calls(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct fanout_cfg *f = field;
	yaml_node_pair_t *pair;
	size_t n, i, j;

	if (val->type != YAML_MAPPING_NODE)
		return cfg_error(ctx, val, "calls: expected a mapping of "
		    "name: {upstream, path}");
	n = (size_t)(val->data.mapping.pairs.top -
	    val->data.mapping.pairs.start);
	if (n == 0)
		return cfg_error(ctx, val, "calls: needs at least one call");
	f->calls = cfg_alloc(ctx, n * sizeof(*f->calls));
	f->ncalls = n;
	for (i = 0, pair = val->data.mapping.pairs.start; i < n; i++, pair++) {
		struct fanout_call_cfg *c = &f->calls[i];
		yaml_node_t *kn = cfg_node(ctx, pair->key);
		const char *name = cfg_scalar(ctx, kn, "a call name");

		if (name == NULL || check_name(ctx, kn, "call", name) == -1)
			return -1;
		for (j = 0; j < i; j++)
			if (strcmp(f->calls[j].name, name) == 0)
				return cfg_error(ctx, kn, "duplicate call '%s'",
				    name);
		c->name = cfg_strdup(ctx, name);
		c->method = NULL;	/* the client's, unless given */
		if (cfg_map(ctx, cfg_node(ctx, pair->value), call_keys, c,
		    c->name) == -1)
			return -1;
	}
	return 0;
}

static const char *const fanout_modes[] = {
	"all", "partial", "first", "stream", NULL
};

static const struct cfg_key fanout_keys[] = {
	{ "mode", CT_ENUM, offsetof(struct fanout_cfg, mode),
	    .aux = fanout_modes },
	{ "timeout", CT_DURATION, offsetof(struct fanout_cfg, timeout_ms),
	    MS(1), DAY },
	{ "calls", CT_CUSTOM, 0, .aux = val_calls, .flags = CK_REQUIRED },
	{ "forward_headers", CT_STRLIST,
	    offsetof(struct fanout_cfg, forward_headers),
	    .aux = check_header_name,
	    .off2 = offsetof(struct fanout_cfg, nforward_headers) },
	{ NULL }
};

static const struct cfg_key route_cache_keys[] = {
	{ "ttl", CT_DURATION, offsetof(struct route_cache_cfg, ttl_ms), 0,
	    DAY * 365 },
	{ "stale_while_revalidate", CT_DURATION,
	    offsetof(struct route_cache_cfg, swr_ms), 0, DAY * 365 },
	{ "stale_if_error", CT_DURATION,
	    offsetof(struct route_cache_cfg, sie_ms), 0, DAY * 365 },
	{ NULL }
};

static const struct cfg_key route_keys[] = {
	{ "path", CT_CUSTOM, 0, .aux = val_route_path, .flags = CK_REQUIRED },
	{ "methods", CT_STRLIST, offsetof(struct route_cfg, methods),
	    .aux = check_method, .off2 = offsetof(struct route_cfg, nmethods) },
	{ "upstream", CT_CUSTOM, 0, .aux = val_route_upstream },
	{ "strip_prefix", CT_CUSTOM, offsetof(struct route_cfg, strip_prefix),
	    .aux = val_check_path },
	{ "timeout", CT_DURATION, offsetof(struct route_cfg, timeout_ms),
	    MS(1), DAY },
	{ "compress", CT_CUSTOM, offsetof(struct route_cfg, compress_gzip),
	    .aux = val_compress },
	{ "compress_min", CT_SIZE, offsetof(struct route_cfg, compress_min),
	    0, GIB(1) },
	{ "hedge_after", CT_DURATION,
	    offsetof(struct route_cfg, hedge_after_ms), MS(1), HOUR },
	{ "websocket", CT_BOOL, offsetof(struct route_cfg, websocket) },
	{ "rate_limit", CT_SECTION, offsetof(struct route_cfg, rate_limit),
	    .aux = rate_limit_keys,
	    .off2 = offsetof(struct route_cfg, rate_limit.enabled),
	    .flags = CK_ENABLE },
	{ "auth", CT_SECTION, offsetof(struct route_cfg, auth),
	    .aux = auth_keys, .off2 = offsetof(struct route_cfg, auth.enabled),
	    .flags = CK_ENABLE },
	{ "cors", CT_SECTION, offsetof(struct route_cfg, cors),
	    .aux = cors_keys, .off2 = offsetof(struct route_cfg, cors.enabled),
	    .flags = CK_ENABLE },
	{ "verify_signature", CT_SECTION,
	    offsetof(struct route_cfg, verify_signature),
	    .aux = verify_sig_keys,
	    .off2 = offsetof(struct route_cfg, verify_signature.enabled),
	    .flags = CK_ENABLE },
	{ "fanout", CT_SECTION, offsetof(struct route_cfg, fanout),
	    .aux = fanout_keys, .off2 = offsetof(struct route_cfg, has_fanout),
	    .flags = CK_ENABLE },
	{ "cache", CT_SECTION, offsetof(struct route_cfg, cache),
	    .aux = route_cache_keys,
	    .off2 = offsetof(struct route_cfg, cache.enabled),
	    .flags = CK_ENABLE },
	{ NULL }
};

static void
route_defaults(struct route_cfg *r)
{
	r->compress_min = 1024;
	r->websocket = true;
	r->rate_limit.key = RL_KEY_CLIENT_IP;
	r->rate_limit.backend = RL_BACKEND_LOCAL;
	r->auth.api_keys_header = "X-Api-Key";
	r->cors.methods = (char **)cors_default_methods;
	r->cors.nmethods = sizeof(cors_default_methods) /
	    sizeof(cors_default_methods[0]);
	r->verify_signature.header = "X-Hub-Signature-256";
	r->fanout.mode = FANOUT_ALL;
	r->cache.ttl_ms = 60 * 1000;
}

static int
val_routes(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct config *cfg = field;
	yaml_node_item_t *it;
	size_t n, i;

	if (val->type != YAML_SEQUENCE_NODE)
		return cfg_error(ctx, val, "routes: expected a list of routes");
	n = (size_t)(val->data.sequence.items.top -
	    val->data.sequence.items.start);
	cfg->routes = cfg_alloc(ctx, n * sizeof(*cfg->routes));
	cfg->nroutes = n;
	for (i = 0, it = val->data.sequence.items.start; i < n; i++, it++) {
		struct route_cfg *r = &cfg->routes[i];
		yaml_node_t *node = cfg_node(ctx, *it);

		route_defaults(r);
		r->pos = cfg_pos(node);
		if (cfg_map(ctx, node, route_keys, r, "route") == -1)
			return -1;
	}
	return 0;
}

/*
 * resolver: the DNS servers to ask, "ip:port" or a list of them (an
 * IPv6 address in brackets; the port defaults to 53).  Addresses only: a
 * resolver named by a name would need a resolver.
 */
static int
val_resolver(struct cfg_ctx *ctx, yaml_node_t *val, void *field)
{
	struct config *cfg = ctx->cfg;
	size_t n = cfg_list_len(val), i;

	(void)field;
	if (n == 0)
		return cfg_error(ctx, val, "resolver: expected ip:port or a "
		    "list of them");
	cfg->resolvers = cfg_alloc(ctx, n * sizeof(*cfg->resolvers));
	cfg->nresolvers = n;
	for (i = 0; i < n; i++) {
		yaml_node_t *item = cfg_list_item(ctx, val, i);
		const char *s = cfg_scalar(ctx, item, "ip:port");
		char buf[80];

		if (s == NULL)
			return -1;
		if (config_resolver_address(s, buf, sizeof(buf)) == -1)
			return cfg_error(ctx, item, "resolver: expected an IP "
			    "address with an optional port (127.0.0.1:53, "
			    "[::1]:5353), got '%s'", s);
		cfg->resolvers[i] = cfg_strdup(ctx, buf);
	}
	return 0;
}

const struct cfg_key config_top_keys[] = {
	{ "server", CT_SECTION, offsetof(struct config, server),
	    .aux = server_keys },
	{ "admin", CT_SECTION, 0, .aux = admin_keys,
	    .off2 = offsetof(struct config, admin_enabled),
	    .flags = CK_ENABLE },
	{ "log", CT_SECTION, 0, .aux = log_keys },
	{ "redis", CT_SECTION, 0, .aux = redis_keys,
	    .off2 = offsetof(struct config, redis_enabled),
	    .flags = CK_ENABLE },
	{ "offload", CT_SECTION, 0, .aux = offload_keys },
	{ "cache", CT_SECTION, 0, .aux = cache_keys,
	    .off2 = offsetof(struct config, cache_enabled),
	    .flags = CK_ENABLE },
	{ "tracing", CT_SECTION, 0, .aux = tracing_keys,
	    .off2 = offsetof(struct config, tracing_enabled),
	    .flags = CK_ENABLE },
	{ "resolver", CT_CUSTOM, 0, .aux = val_resolver },
	{ "upstreams", CT_CUSTOM, 0, .aux = val_upstreams },
	{ "routes", CT_CUSTOM, 0, .aux = val_routes },
	{ NULL }
};
