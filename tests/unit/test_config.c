/*
 * config_load() on real files: the example of CONFIG.md, the defaults of
 * a minimal file, the other spellings values may take, and the errors a
 * user sees for each way a file can be wrong -- "file:line:col: reason",
 * with the line and column of the offending node.
 *
 * Files are written at test time into a private temp dir, next to empty
 * stand-ins for the certificates and secrets the config refers to (only
 * their readability is checked at load).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "gateway/config/config.h"
#include "lib/log.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* The realpath of the test's private dir, and buffers for paths in it. */
static char tmpdir[256];
#define PBUF	512

/* -- helpers ----------------------------------------------------------- */

static void
write_file(const char *name, const char *text)
{
	char path[PBUF];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	if ((f = fopen(path, "w")) == NULL)
		fail_msg("cannot create %s: %s", path, strerror(errno));
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void
make_dir(const char *name)
{
	char path[PBUF];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	if (mkdir(path, 0755) == -1)
		fail_msg("cannot mkdir %s: %s", path, strerror(errno));
}

/* "<tmpdir>/<name>", in a static buffer of its own per call site. */
static const char *
in_dir(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", tmpdir, name);
	return buf;
}

/* Writes text as name in the temp dir and loads it. */
static struct config *
load_text(const char *name, const char *text, char *err, size_t errlen)
{
	char path[PBUF];

	write_file(name, text);
	err[0] = '\0';
	return config_load(in_dir(path, sizeof(path), name), err, errlen);
}

/* Loads text that must be valid; fails the test with the error if not. */
static struct config *
load_ok(const char *text)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg = load_text("ok.yaml", text, err, sizeof(err));

	if (cfg == NULL)
		fail_msg("config_load failed: %s", err);
	return cfg;
}

static char *
read_whole(const char *path)
{
	FILE *f = fopen(path, "r");
	char *text;
	long n;

	if (f == NULL)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return text;
}

static uint16_t
sa_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void
assert_sa(const struct sockaddr_storage *ss, socklen_t len, int family,
    const char *ip, uint16_t port)
{
	char got[INET6_ADDRSTRLEN];
	const void *a = family == AF_INET ?
	    (const void *)&((const struct sockaddr_in *)ss)->sin_addr :
	    (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;

	assert_int_equal(ss->ss_family, family);
	assert_int_equal(len, family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6));
	assert_non_null(inet_ntop(family, a, got, sizeof(got)));
	assert_string_equal(got, ip);
	assert_int_equal(sa_port(ss), port);
}

static void
assert_strings(char **got, size_t ngot, const char *const *want,
    size_t nwant)
{
	size_t i;

	assert_int_equal(ngot, nwant);
	for (i = 0; i < nwant; i++)
		assert_string_equal(got[i], want[i]);
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* A self-signed P-256 certificate and its key: TLS listeners load
 * theirs when the config is loaded. */
static int
make_test_cert(const char *crt, const char *key)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f;
	int rc = -1;

	if (pk == NULL || x == NULL)
		goto done;
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
	    MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	if (X509_sign(x, pk, EVP_sha256()) == 0)
		goto done;
	if ((f = fopen(crt, "w")) == NULL)
		goto done;
	PEM_write_X509(f, x);
	fclose(f);
	if ((f = fopen(key, "w")) == NULL)
		goto done;
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	rc = 0;
done:
	X509_free(x);
	EVP_PKEY_free(pk);
	return rc;
}

/* A key set outside the test folder, for the absolute-path case. */
#define ABS_JWKS	"/tmp/agate-unit-test-jwks.json"
#define JWKS		"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}"

static int
group_setup(void **state)
{
	static const char *const files[] = {
		"etc/tls/cert.pem", "etc/tls/key.pem", "etc/tls/ca.pem",
		"etc/htpasswd", "etc/jwks.json", "etc/api-keys",
		"etc/webhook.secret",
	};
	char tmpl[] = "/tmp/agate-test-config-XXXXXX", real[PATH_MAX];
	char p1[PATH_MAX], p2[PATH_MAX];
	FILE *f;
	size_t i;

	if (mkdtemp(tmpl) == NULL || realpath(tmpl, real) == NULL ||
	    strlen(real) >= sizeof(tmpdir))
		return -1;
	strcpy(tmpdir, real);
	make_dir("etc");
	make_dir("etc/tls");
	for (i = 0; i < NELEM(files); i++)
		write_file(files[i], "");
	/* These are read at load, so they need real contents. */
	write_file("etc/jwks.json", JWKS);
	write_file("etc/api-keys", "# sha256 of \"key\"\n"
	    "2c70e12b7a0646f92279f427c7b38e7334d8e5389cff167a1dc30e73f826b683\n");
	if ((f = fopen(ABS_JWKS, "w")) == NULL)
		return -1;
	fputs(JWKS, f);
	fclose(f);
	if (make_test_cert(in_dir(p1, sizeof(p1), "etc/tls/cert.pem"),
	    in_dir(p2, sizeof(p2), "etc/tls/key.pem")) == -1 ||
	    make_test_cert(in_dir(p1, sizeof(p1), "etc/tls/client.pem"),
	    in_dir(p2, sizeof(p2), "etc/tls/client.key")) == -1)
		return -1;
	write_file("etc/htpasswd", "ann:$6$Nts/4p.CG8wYZg8c$b157qzFo9xLrUE5TIi"
	    ".6J19xgFbYOCyzxhL6rhjBeKJrpsovxYuBZJoME5rGUMlaWUe2S72EfNa4KyRgVg"
	    "ELF1\n");
	write_file("etc/webhook.secret", "not-a-real-secret\n");
	return 0;
}

static int
group_teardown(void **state)
{
	if (tmpdir[0] != '\0')
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	unlink(ABS_JWKS);
	return 0;
}

/* -- the example of CONFIG.md ------------------------------------------ */

static void
test_full_example(void **state)
{
	static const char *const retry_methods[] = {
		"GET", "HEAD", "PUT", "DELETE", "OPTIONS"
	};
	static const char *const get_post[] = { "GET", "POST" };
	static const char *const authz[] = { "Authorization" };
	static const char *const app_origin[] = { "https://app.example" };
	static const char *const api[] = { "api" };
	char err[CONFIG_ERR_MAX], p[PBUF];
	char *text = read_whole(TEST_DATA "/config-full.yaml");
	const struct upstream_cfg *users, *orders, *recs;
	const struct route_cfg *r;
	const struct listen_cfg *l;
	struct config *cfg;

	cfg = load_text("agate.yaml", text, err, sizeof(err));
	free(text);
	if (cfg == NULL)
		fail_msg("the CONFIG.md example does not load: %s", err);

	assert_string_equal(cfg->file, in_dir(p, sizeof(p), "agate.yaml"));
	assert_string_equal(cfg->dir, tmpdir);

	/* server */
	assert_int_equal(cfg->server.workers, 0);	/* auto */
	assert_true(config_workers(cfg) >= 1);
	assert_true(config_workers(cfg) <= CONFIG_MAX_WORKERS);
	/* The two listen entries, then the admin listener as a third. */
	assert_int_equal(cfg->server.nlisten, 3);
	assert_true(cfg->server.listen[2].admin);
	assert_string_equal(cfg->server.listen[2].address, cfg->admin_listen);
	assert_false(cfg->server.listen[0].admin);
	l = &cfg->server.listen[0];
	assert_string_equal(l->address, "0.0.0.0:8080");
	assert_sa(&l->sa, l->salen, AF_INET, "0.0.0.0", 8080);
	assert_null(l->tls_cert);
	assert_null(l->tls_key);
	assert_false(l->proxy_protocol);
	assert_int_equal(l->pos.line, 7);
	assert_int_equal(l->pos.col, 7);
	l = &cfg->server.listen[1];
	assert_string_equal(l->address, "0.0.0.0:8443");
	assert_sa(&l->sa, l->salen, AF_INET, "0.0.0.0", 8443);
	assert_string_equal(l->tls_cert, in_dir(p, sizeof(p),
	    "etc/tls/cert.pem"));
	assert_string_equal(l->tls_key, in_dir(p, sizeof(p),
	    "etc/tls/key.pem"));
	assert_true(l->proxy_protocol);
	assert_int_equal(l->pos.line, 8);
	assert_int_equal(l->pos.col, 16);
	assert_int_equal(cfg->server.ntrusted, 1);
	assert_int_equal(cfg->server.trusted[0].family, AF_INET);
	assert_int_equal(cfg->server.trusted[0].bits, 8);
	assert_int_equal(cfg->server.trusted[0].addr[0], 10);
	assert_string_equal(cfg->server.pid_file, in_dir(p, sizeof(p),
	    "agate.pid"));
	assert_string_equal(cfg->server.user, "nobody");
	assert_string_equal(cfg->server.health_path, "/healthz");
	assert_int_equal(cfg->server.shutdown_delay_ms, 0);
	assert_int_equal(cfg->server.drain_timeout_ms, 30000);
	assert_int_equal(cfg->server.max_connections, 10000);
	assert_int_equal(cfg->server.header_timeout_ms, 10000);
	assert_int_equal(cfg->server.idle_timeout_ms, 60000);
	assert_int_equal(cfg->server.max_header_size, 16384);
	assert_int_equal(cfg->server.max_body_size, 10485760);

	/* admin, log, redis, offload */
	assert_true(cfg->admin_enabled);
	assert_string_equal(cfg->admin_listen, "127.0.0.1:9901");
	assert_sa(&cfg->admin_sa, cfg->admin_salen, AF_INET, "127.0.0.1",
	    9901);
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_null(cfg->log_error);
	assert_int_equal(cfg->log_access, ACCESS_STDOUT);
	assert_true(cfg->redis_enabled);
	assert_string_equal(cfg->redis_address, "127.0.0.1:6379");
	assert_true(cfg->redis_fail_open);
	assert_int_equal(cfg->offload_processes, 1);
	assert_int_equal(cfg->offload_queue_limit, 1024);
	assert_int_equal(cfg->offload_job_timeout_ms, 5000);

	/* upstreams, in file order */
	assert_int_equal(cfg->nupstreams, 3);
	users = &cfg->upstreams[0];
	orders = &cfg->upstreams[1];
	recs = &cfg->upstreams[2];
	assert_ptr_equal(config_upstream(cfg, "users"), users);
	assert_ptr_equal(config_upstream(cfg, "orders"), orders);
	assert_ptr_equal(config_upstream(cfg, "recs"), recs);
	assert_null(config_upstream(cfg, "user"));

	assert_string_equal(users->name, "users");
	assert_int_equal(users->pos.line, 41);
	assert_int_equal(users->pos.col, 3);
	assert_int_equal(users->nservers, 2);
	assert_string_equal(users->servers[0].url, "http://127.0.0.1:9001");
	assert_string_equal(users->servers[0].host, "127.0.0.1");
	assert_int_equal(users->servers[0].port, 9001);
	assert_false(users->servers[0].https);
	assert_string_equal(users->servers[1].url, "http://127.0.0.1:9002");
	assert_int_equal(users->servers[1].port, 9002);
	assert_int_equal(users->balance, BALANCE_ROUND_ROBIN);
	assert_int_equal(users->keepalive, 64);
	assert_int_equal(users->connect_timeout_ms, 1000);
	assert_int_equal(users->timeout_ms, 5000);
	assert_int_equal(users->max_concurrent, 256);
	assert_int_equal(users->max_queue, 512);
	assert_int_equal(users->retry.attempts, 3);
	assert_int_equal(users->retry.backoff_ms, 25);
	assert_int_equal(users->retry.max_backoff_ms, 1000);
	assert_int_equal(users->retry.on, RETRY_ON_CONNECT_FAILURE |
	    RETRY_ON_TIMEOUT | RETRY_ON_RESET);
	assert_int_equal(users->retry.nstatuses, 3);
	assert_int_equal(users->retry.statuses[0], 502);
	assert_int_equal(users->retry.statuses[1], 503);
	assert_int_equal(users->retry.statuses[2], 504);
	assert_strings(users->retry.methods, users->retry.nmethods,
	    retry_methods, NELEM(retry_methods));
	assert_true(users->breaker.enabled);
	assert_int_equal(users->breaker.failures, 5);
	assert_int_equal(users->breaker.open_for_ms, 10000);
	assert_string_equal(users->tls_ca, in_dir(p, sizeof(p),
	    "etc/tls/ca.pem"));
	assert_true(users->tls_verify);
	assert_string_equal(users->tls_cert, in_dir(p, sizeof(p),
	    "etc/tls/client.pem"));
	assert_string_equal(users->tls_key, in_dir(p, sizeof(p),
	    "etc/tls/client.key"));
	/* Read at load: what is presented is what was checked. */
	assert_non_null(strstr(users->tls_cert_pem, "BEGIN CERTIFICATE"));
	assert_non_null(strstr(users->tls_key_pem, "PRIVATE KEY"));
	assert_int_equal(users->tls_cert_len, strlen(users->tls_cert_pem));
	assert_true(users->health.enabled);
	assert_int_equal(users->resolve_ms, 30000);
	assert_string_equal(users->health.path, "/healthz");
	assert_int_equal(users->health.interval_ms, 5000);
	assert_int_equal(users->health.timeout_ms, 1000);
	assert_int_equal(users->health.healthy, 2);
	assert_int_equal(users->health.unhealthy, 3);

	/* A single server as a scalar; its trailing / is dropped. */
	assert_int_equal(orders->nservers, 1);
	assert_string_equal(orders->servers[0].url, "http://127.0.0.1:9003");
	assert_int_equal(orders->servers[0].port, 9003);
	assert_false(orders->breaker.enabled);
	assert_false(orders->health.enabled);

	assert_int_equal(recs->nservers, 2);
	assert_string_equal(recs->servers[0].url, "https://[::1]:9443");
	assert_string_equal(recs->servers[0].host, "[::1]");
	assert_int_equal(recs->servers[0].port, 9443);
	assert_true(recs->servers[0].https);
	assert_string_equal(recs->servers[1].url, "https://recs.internal");
	assert_string_equal(recs->servers[1].host, "recs.internal");
	assert_int_equal(recs->servers[1].port, 443);
	assert_int_equal(recs->balance, BALANCE_LEAST_REQUEST);

	/* routes, in file order */
	assert_int_equal(cfg->nroutes, 2);
	r = &cfg->routes[0];
	assert_string_equal(r->path, "/api/users/");
	assert_true(r->prefix);
	assert_int_equal(r->nsegs, 2);
	assert_string_equal(r->segs[0].text, "api");
	assert_false(r->segs[0].param);
	assert_string_equal(r->segs[1].text, "users");
	assert_int_equal(r->segs[1].len, 5);
	assert_int_equal(r->pos.line, 74);
	assert_int_equal(r->pos.col, 5);
	assert_strings(r->methods, r->nmethods, get_post, NELEM(get_post));
	assert_ptr_equal(r->upstream, users);
	assert_string_equal(r->upstream_name, "users");
	assert_string_equal(r->strip_prefix, "/api");
	assert_int_equal(r->timeout_ms, 2000);
	assert_true(r->compress_gzip);
	assert_int_equal(r->compress_min, 1024);
	assert_int_equal(r->hedge_after_ms, 50);
	assert_true(r->rate_limit.enabled);
	assert_true(r->rate_limit.rate == 100.0);
	assert_int_equal(r->rate_limit.burst, 50);
	assert_int_equal(r->rate_limit.key, RL_KEY_CLIENT_IP);
	assert_int_equal(r->rate_limit.backend, RL_BACKEND_LOCAL);
	assert_true(r->auth.enabled);
	assert_string_equal(r->auth.basic, in_dir(p, sizeof(p),
	    "etc/htpasswd"));
	assert_true(r->auth.jwt_enabled);
	assert_string_equal(r->auth.jwt.keys, in_dir(p, sizeof(p),
	    "etc/jwks.json"));
	assert_string_equal(r->auth.jwt.issuer, "https://id.example");
	assert_strings(r->auth.jwt.audiences, r->auth.jwt.naudiences, api,
	    NELEM(api));
	assert_string_equal(r->auth.api_keys_file, in_dir(p, sizeof(p),
	    "etc/api-keys"));
	assert_string_equal(r->auth.api_keys_header, "X-Api-Key");
	assert_true(r->cors.enabled);
	assert_strings(r->cors.origins, r->cors.norigins, app_origin,
	    NELEM(app_origin));
	assert_strings(r->cors.methods, r->cors.nmethods, get_post,
	    NELEM(get_post));
	assert_strings(r->cors.headers, r->cors.nheaders, authz,
	    NELEM(authz));
	assert_int_equal(r->cors.max_age_ms, 600000);
	assert_true(r->cors.credentials);
	assert_true(r->verify_signature.enabled);
	assert_string_equal(r->verify_signature.header, "X-Hub-Signature-256");
	assert_string_equal(r->verify_signature.secret_file,
	    in_dir(p, sizeof(p), "etc/webhook.secret"));
	assert_false(r->has_fanout);

	r = &cfg->routes[1];
	assert_string_equal(r->path, "/api/dashboard/{user}");
	assert_false(r->prefix);
	assert_int_equal(r->nsegs, 3);
	assert_string_equal(r->segs[1].text, "dashboard");
	assert_false(r->segs[1].param);
	assert_true(r->segs[2].param);
	assert_string_equal(r->segs[2].text, "user");
	assert_int_equal(r->segs[2].len, 4);
	assert_null(r->methods);
	assert_null(r->upstream);
	assert_null(r->upstream_name);
	assert_true(r->has_fanout);
	assert_int_equal(r->fanout.mode, FANOUT_PARTIAL);
	assert_int_equal(r->fanout.timeout_ms, 1000);
	assert_int_equal(r->fanout.ncalls, 3);
	assert_string_equal(r->fanout.calls[0].name, "profile");
	assert_ptr_equal(r->fanout.calls[0].upstream, users);
	assert_string_equal(r->fanout.calls[0].path, "/users/{user}");
	assert_null(r->fanout.calls[0].method);	/* the client's */
	assert_string_equal(r->fanout.calls[1].name, "orders");
	assert_ptr_equal(r->fanout.calls[1].upstream, orders);
	assert_string_equal(r->fanout.calls[1].path, "/orders?user={user}");
	assert_string_equal(r->fanout.calls[2].name, "recs");
	assert_ptr_equal(r->fanout.calls[2].upstream, recs);
	assert_string_equal(r->fanout.calls[2].method, "GET");
	assert_false(r->rate_limit.enabled);
	assert_false(r->auth.enabled);

	config_free(cfg);
}

/* -- defaults ---------------------------------------------------------- */

static void
test_minimal_defaults(void **state)
{
	static const char *const retry_methods[] = {
		"GET", "HEAD", "PUT", "DELETE", "OPTIONS"
	};
	static const char *const cors_methods[] = { "GET", "HEAD", "POST" };
	struct config *cfg = load_ok(
	    "upstreams:\n"
	    "  app:\n"
	    "    servers: [\"http://127.0.0.1:9001\"]\n"
	    "routes:\n"
	    "  - path: /\n"
	    "    upstream: app\n");
	const struct upstream_cfg *u;
	const struct route_cfg *r;

	/* server: every key absent */
	assert_int_equal(cfg->server.workers, 0);
	assert_int_equal(cfg->server.nlisten, 1);
	assert_string_equal(cfg->server.listen[0].address, "0.0.0.0:8080");
	assert_sa(&cfg->server.listen[0].sa, cfg->server.listen[0].salen,
	    AF_INET, "0.0.0.0", 8080);
	assert_null(cfg->server.listen[0].tls_cert);
	assert_false(cfg->server.listen[0].proxy_protocol);
	assert_int_equal(cfg->server.ntrusted, 0);
	assert_null(cfg->server.pid_file);
	assert_null(cfg->server.user);
	assert_string_equal(cfg->server.health_path, "/healthz");
	assert_int_equal(cfg->server.shutdown_delay_ms, 0);
	assert_int_equal(cfg->server.drain_timeout_ms, 30000);
	assert_int_equal(cfg->server.max_connections, 10000);
	assert_int_equal(cfg->server.header_timeout_ms, 10000);
	assert_int_equal(cfg->server.idle_timeout_ms, 60000);
	assert_int_equal(cfg->server.tunnel_timeout_ms, 3600 * 1000);
	assert_true(cfg->server.listen[0].http2);
	assert_int_equal(cfg->server.http2.max_concurrent_streams, 128);
	assert_int_equal(cfg->server.http2.initial_window_size, 65536);
	assert_int_equal(cfg->server.http2.max_header_list_size, 32768);
	assert_int_equal(cfg->server.http2.max_resets_per_second, 200);
	assert_int_equal(cfg->server.max_header_size, 16 * 1024);
	assert_int_equal(cfg->server.max_body_size, 10 * 1024 * 1024);
	assert_false(cfg->admin_enabled);
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_null(cfg->log_error);
	assert_int_equal(cfg->log_access, ACCESS_STDOUT);
	assert_null(cfg->log_access_file);
	assert_int_equal(cfg->log_slow_callback_us, 100000);
	assert_false(cfg->redis_enabled);
	assert_true(cfg->redis_fail_open);
	assert_int_equal(cfg->offload_processes, 1);
	assert_int_equal(cfg->offload_queue_limit, 1024);
	assert_int_equal(cfg->offload_job_timeout_ms, 5000);

	/* upstream_defaults() */
	assert_int_equal(cfg->nupstreams, 1);
	u = &cfg->upstreams[0];
	assert_string_equal(u->name, "app");
	assert_int_equal(u->balance, BALANCE_ROUND_ROBIN);
	assert_int_equal(u->keepalive, 32);
	assert_int_equal(u->keepalive_timeout_ms, 4000);
	assert_int_equal(u->connect_timeout_ms, 5000);
	assert_int_equal(u->timeout_ms, 30000);
	assert_int_equal(u->max_concurrent, 1024);
	assert_int_equal(u->max_queue, 1024);
	assert_int_equal(u->retry.attempts, 1);
	assert_int_equal(u->retry.backoff_ms, 25);
	assert_int_equal(u->retry.max_backoff_ms, 1000);
	assert_int_equal(u->retry.on, RETRY_ON_CONNECT_FAILURE |
	    RETRY_ON_TIMEOUT | RETRY_ON_RESET);
	assert_int_equal(u->retry.nstatuses, 3);
	assert_int_equal(u->retry.statuses[0], 502);
	assert_int_equal(u->retry.statuses[2], 504);
	assert_strings(u->retry.methods, u->retry.nmethods, retry_methods,
	    NELEM(retry_methods));
	assert_false(u->breaker.enabled);
	assert_int_equal(u->breaker.failures, 5);
	assert_int_equal(u->breaker.open_for_ms, 10000);
	assert_null(u->tls_ca);
	assert_true(u->tls_verify);
	assert_false(u->health.enabled);
	assert_string_equal(u->health.path, "/healthz");
	assert_int_equal(u->health.interval_ms, 5000);
	assert_int_equal(u->health.timeout_ms, 1000);
	assert_int_equal(u->health.healthy, 2);
	assert_int_equal(u->health.unhealthy, 3);

	/* route_defaults() */
	assert_int_equal(cfg->nroutes, 1);
	r = &cfg->routes[0];
	assert_string_equal(r->path, "/");
	assert_true(r->prefix);
	assert_int_equal(r->nsegs, 0);
	assert_null(r->methods);
	assert_ptr_equal(r->upstream, u);
	assert_null(r->strip_prefix);
	assert_int_equal(r->timeout_ms, 0);
	assert_false(r->compress_gzip);
	assert_int_equal(r->compress_min, 1024);
	assert_int_equal(r->hedge_after_ms, 0);
	assert_true(r->websocket);
	assert_false(r->rate_limit.enabled);
	assert_false(r->auth.enabled);
	assert_false(r->auth.jwt_enabled);
	assert_false(r->cors.enabled);
	assert_strings(r->cors.methods, r->cors.nmethods, cors_methods,
	    NELEM(cors_methods));
	assert_false(r->verify_signature.enabled);
	assert_false(r->has_fanout);
	config_free(cfg);
}

/* Sections present but (nearly) empty keep their defaults too. */
static void
test_section_defaults(void **state)
{
	struct config *cfg = load_ok(
	    "server: {}\n"
	    "log: {}\n"
	    "offload: {}\n"
	    "upstreams:\n"
	    "  app:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    retry: {attempts: 2}\n"
	    "    circuit_breaker: {}\n"
	    "    health_check: {}\n"
	    "routes:\n"
	    "  - path: /a\n"
	    "    upstream: app\n"
	    "    rate_limit: {rate: 100/s}\n"
	    "    cors: {origins: \"*\"}\n"
	    "    verify_signature: {secret_file: etc/webhook.secret}\n"
	    "  - path: /b/{x}\n"
	    "    fanout:\n"
	    "      calls: {one: {upstream: app, path: \"/{x}\"}}\n");
	const struct upstream_cfg *u = &cfg->upstreams[0];
	const struct route_cfg *r = &cfg->routes[0];

	assert_int_equal(cfg->server.max_connections, 10000);
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_int_equal(cfg->offload_queue_limit, 1024);
	assert_int_equal(u->retry.attempts, 2);
	assert_int_equal(u->retry.nstatuses, 3);	/* still the default */
	assert_int_equal(u->retry.nmethods, 5);
	assert_true(u->breaker.enabled);
	assert_int_equal(u->breaker.failures, 5);
	assert_int_equal(u->breaker.open_for_ms, 10000);
	assert_true(u->health.enabled);
	assert_string_equal(u->health.path, "/healthz");
	assert_int_equal(u->health.interval_ms, 5000);

	assert_true(r->rate_limit.enabled);
	assert_int_equal(r->rate_limit.burst, 100);	/* = the rate */
	assert_int_equal(r->rate_limit.key, RL_KEY_CLIENT_IP);
	assert_int_equal(r->rate_limit.backend, RL_BACKEND_LOCAL);
	assert_true(r->cors.enabled);
	assert_int_equal(r->cors.norigins, 1);
	assert_string_equal(r->cors.origins[0], "*");
	assert_int_equal(r->cors.nmethods, 3);
	assert_false(r->cors.credentials);
	assert_true(r->verify_signature.enabled);
	assert_string_equal(r->verify_signature.header, "X-Hub-Signature-256");

	r = &cfg->routes[1];
	assert_true(r->has_fanout);
	assert_int_equal(r->fanout.mode, FANOUT_ALL);
	assert_int_equal(r->fanout.timeout_ms, 10000);
	assert_int_equal(r->fanout.ncalls, 1);
	assert_null(r->fanout.calls[0].method);	/* the client's */
	config_free(cfg);
}

/* -- other spellings of values ------------------------------------------ */

static void
test_other_values(void **state)
{
	static const char *const two[] = { "a", "b" };
	static const char *const get[] = { "GET" };
	char p[PBUF];
	struct config *cfg = load_ok(
	    "server:\n"
	    "  workers: 4\n"
	    "  listen:\n"
	    "    - \"[::1]:8080\"\n"
	    "    - \":9000\"\n"
	    "    - address: localhost:9001\n"
	    "      proxy_protocol: yes\n"
	    "      http2: false\n"
	    "  trusted_proxies: [\"192.0.2.7\", \"2001:db8::/32\"]\n"
	    "  pid_file: /run/agate.pid\n"
	    "  health_path: off\n"
	    "  max_body_size: 0\n"
	    "  max_header_size: 1m\n"
	    "  shutdown_delay: 1m30s\n"
	    "  tunnel_timeout: 90s\n"
	    "  http2:\n"
	    "    max_concurrent_streams: 64\n"
	    "    initial_window_size: 1m\n"
	    "    max_header_list_size: 16k\n"
	    "    max_resets_per_second: 50\n"
	    "log:\n"
	    "  level: debug\n"
	    "  error: logs/error.log\n"
	    "  access: off\n"
	    "redis:\n"
	    "  address: redis.internal:6379\n"
	    "  on_failure: deny\n"
	    "upstreams:\n"
	    "  app:\n"
	    "    servers: [\"https://app.internal\", \"http://10.0.0.1\"]\n"
	    "    balance: random\n"
	    "    retry:\n"
	    "      attempts: 2\n"
	    "      conditions: [timeout, 429]\n"
	    "      methods: GET\n"
	    "    tls: {verify: false}\n"
	    "routes:\n"
	    "  - path: /v1/{tenant}/items/{id}\n"
	    "    upstream: app\n"
	    "    methods: [DELETE, PATCH]\n"
	    "    compress: off\n"
	    "    rate_limit: {rate: 600/m, key: \"header:X-Api-Key\", "
	    "backend: redis}\n"
	    "    auth:\n"
	    "      jwt: {keys: " ABS_JWKS ", audience: [a, b]}\n"
	    "  - path: /slow\n"
	    "    upstream: app\n"
	    "    websocket: false\n"
	    "    rate_limit: {rate: 30/min}\n"
	    "  - path: /dash/{u}\n"
	    "    timeout: 3s\n"
	    "    fanout:\n"
	    "      mode: stream\n"
	    "      calls:\n"
	    "        a: {upstream: app, path: \"/a/{u}?q={query.q}\", "
	    "method: POST}\n"
	    "        b: {upstream: app, path: \"/b/{header.X-User}\"}\n");
	const struct upstream_cfg *u = &cfg->upstreams[0];
	const struct route_cfg *r;

	assert_int_equal(cfg->server.workers, 4);
	assert_int_equal(config_workers(cfg), 4);
	assert_int_equal(cfg->server.nlisten, 3);
	assert_sa(&cfg->server.listen[0].sa, cfg->server.listen[0].salen,
	    AF_INET6, "::1", 8080);
	assert_sa(&cfg->server.listen[1].sa, cfg->server.listen[1].salen,
	    AF_INET, "0.0.0.0", 9000);
	assert_string_equal(cfg->server.listen[2].address, "localhost:9001");
	assert_sa(&cfg->server.listen[2].sa, cfg->server.listen[2].salen,
	    AF_INET, "127.0.0.1", 9001);
	assert_true(cfg->server.listen[2].proxy_protocol);
	assert_true(cfg->server.listen[0].http2);
	assert_false(cfg->server.listen[2].http2);
	assert_int_equal(cfg->server.http2.max_concurrent_streams, 64);
	assert_int_equal(cfg->server.http2.initial_window_size, 1048576);
	assert_int_equal(cfg->server.http2.max_header_list_size, 16384);
	assert_int_equal(cfg->server.http2.max_resets_per_second, 50);
	assert_null(cfg->server.listen[2].tls_cert);
	assert_int_equal(cfg->server.ntrusted, 2);
	assert_int_equal(cfg->server.trusted[0].bits, 32);
	assert_int_equal(cfg->server.trusted[1].family, AF_INET6);
	assert_int_equal(cfg->server.trusted[1].bits, 32);
	assert_string_equal(cfg->server.pid_file, "/run/agate.pid");
	assert_null(cfg->server.health_path);
	assert_int_equal(cfg->server.max_body_size, 0);
	assert_int_equal(cfg->server.max_header_size, 1048576);
	assert_int_equal(cfg->server.shutdown_delay_ms, 90000);
	assert_int_equal(cfg->server.tunnel_timeout_ms, 90000);
	assert_true(cfg->routes[0].websocket);
	assert_false(cfg->routes[1].websocket);
	assert_int_equal(cfg->log_level, LOG_LVL_DEBUG);
	assert_string_equal(cfg->log_error, in_dir(p, sizeof(p),
	    "logs/error.log"));
	assert_int_equal(cfg->log_access, ACCESS_OFF);
	assert_true(cfg->redis_enabled);
	assert_string_equal(cfg->redis_address, "redis.internal:6379");
	assert_false(cfg->redis_fail_open);

	assert_string_equal(u->servers[0].host, "app.internal");
	assert_int_equal(u->servers[0].port, 443);
	assert_true(u->servers[0].https);
	assert_string_equal(u->servers[1].url, "http://10.0.0.1");
	assert_int_equal(u->servers[1].port, 80);
	assert_int_equal(u->balance, BALANCE_RANDOM);
	assert_int_equal(u->retry.on, RETRY_ON_TIMEOUT);
	assert_int_equal(u->retry.nstatuses, 1);
	assert_int_equal(u->retry.statuses[0], 429);
	assert_strings(u->retry.methods, u->retry.nmethods, get, NELEM(get));
	assert_false(u->tls_verify);
	assert_null(u->tls_ca);

	r = &cfg->routes[0];
	assert_false(r->prefix);
	assert_int_equal(r->nsegs, 4);
	assert_true(r->segs[1].param);
	assert_string_equal(r->segs[1].text, "tenant");
	assert_false(r->segs[2].param);
	assert_true(r->segs[3].param);
	assert_string_equal(r->segs[3].text, "id");
	assert_false(r->compress_gzip);
	assert_true(r->rate_limit.rate == 10.0);
	assert_int_equal(r->rate_limit.burst, 10);	/* ceil(rate) */
	assert_int_equal(r->rate_limit.key, RL_KEY_HEADER);
	assert_string_equal(r->rate_limit.key_header, "X-Api-Key");
	assert_int_equal(r->rate_limit.backend, RL_BACKEND_REDIS);
	assert_true(r->auth.enabled);
	assert_true(r->auth.jwt_enabled);
	assert_string_equal(r->auth.jwt.keys, ABS_JWKS);	/* absolute */
	assert_null(r->auth.jwt.issuer);
	assert_strings(r->auth.jwt.audiences, r->auth.jwt.naudiences, two,
	    NELEM(two));
	assert_null(r->auth.basic);
	assert_null(r->auth.api_keys_file);

	r = &cfg->routes[1];
	assert_true(r->rate_limit.rate == 0.5);
	assert_int_equal(r->rate_limit.burst, 1);	/* never below 1 */

	r = &cfg->routes[2];
	assert_int_equal(r->fanout.mode, FANOUT_STREAM);
	assert_int_equal(r->fanout.timeout_ms, 3000);	/* the route's */
	assert_string_equal(r->fanout.calls[0].method, "POST");
	assert_string_equal(r->fanout.calls[1].path, "/b/{header.X-User}");
	config_free(cfg);
}

static void
test_log_access_file(void **state)
{
	char p[PBUF];
	struct config *cfg = load_ok(
	    "log:\n"
	    "  error: /var/log/agate.err\n"
	    "  access: logs/access.log\n");

	assert_string_equal(cfg->log_error, "/var/log/agate.err");
	assert_int_equal(cfg->log_access, ACCESS_FILE);
	assert_string_equal(cfg->log_access_file, in_dir(p, sizeof(p),
	    "logs/access.log"));
	assert_int_equal(cfg->nroutes, 0);
	assert_int_equal(cfg->nupstreams, 0);
	config_free(cfg);

	cfg = load_ok("log: {access: false}\n");
	assert_int_equal(cfg->log_access, ACCESS_OFF);
	config_free(cfg);
}

/*
 * Relative paths resolve against the folder of the config file, not the
 * working directory, even when the file itself is named relatively.
 */
/* log.slow_callback: microseconds, 0 off, nothing below the clock's
 * resolution (CLOCK_MONOTONIC_COARSE, worker/loopwatch.c). */
static void
test_slow_callback(void **state)
{
	static const struct {
		const char	*in;
		uint64_t	 us;
	} ok[] = {
		{ "0", 0 }, { "100ms", 100000 }, { "1s", 1000000 },
		{ "1h", 3600000000ULL }, { "20000us", 20000 },
	};
	static const struct {
		const char	*in;
		const char	*why;
	} bad[] = {
		{ "500us", "2:18: slow_callback: '500us' is below the "
		    "resolution of the clock that measures it (" },
		{ "fast", "2:18: slow_callback: expected a duration like 100ms "
		    "or 1s (0 for off, at most 1h), got 'fast'" },
		{ "2h", "2:18: slow_callback: expected a duration like 100ms "
		    "or 1s (0 for off, at most 1h), got '2h'" },
		{ "12xus", "2:18: slow_callback: expected a duration like 100ms "
		    "or 1s, got '12xus'" },
		{ "[1s]", "2:18: slow_callback: expected a duration, got a "
		    "list" },
	};
	char text[128], err[CONFIG_ERR_MAX], path[PBUF], want[PBUF + 256];
	struct config *cfg;
	size_t i;

	for (i = 0; i < NELEM(ok); i++) {
		snprintf(text, sizeof(text), "log:\n  slow_callback: %s\n",
		    ok[i].in);
		cfg = load_ok(text);
		assert_int_equal(cfg->log_slow_callback_us, ok[i].us);
		config_free(cfg);
	}
	in_dir(path, sizeof(path), "bad.yaml");
	for (i = 0; i < NELEM(bad); i++) {
		snprintf(text, sizeof(text), "log:\n  slow_callback: %s\n",
		    bad[i].in);
		cfg = load_text("bad.yaml", text, err, sizeof(err));
		assert_null(cfg);
		snprintf(want, sizeof(want), "%s:%s", path, bad[i].why);
		if (strncmp(err, want, strlen(want)) != 0)
			fail_msg("slow_callback: %s:\n    got  %s\n    want %s",
			    bad[i].in, err, want);
	}
}

static void
test_relative_paths(void **state)
{
	char cwd[PATH_MAX], err[CONFIG_ERR_MAX], p[PBUF], rel[PBUF];
	const char *base = strrchr(tmpdir, '/') + 1;
	struct config *cfg;

	write_file("rel.yaml",
	    "server:\n"
	    "  pid_file: run/agate.pid\n"
	    "  listen:\n"
	    "    - address: \"127.0.0.1:8443\"\n"
	    "      tls: {cert: etc/tls/cert.pem, key: ./etc/tls/key.pem}\n");
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(p, sizeof(p), "%.*s", (int)(base - tmpdir - 1), tmpdir);
	assert_int_equal(chdir(p[0] ? p : "/"), 0);
	snprintf(rel, sizeof(rel), "%s/rel.yaml", base);
	cfg = config_load(rel, err, sizeof(err));
	assert_int_equal(chdir(cwd), 0);
	if (cfg == NULL)
		fail_msg("config_load(%s) failed: %s", rel, err);

	assert_string_equal(cfg->file, rel);		/* as given */
	assert_string_equal(cfg->dir, tmpdir);		/* absolute */
	assert_string_equal(cfg->server.pid_file, in_dir(p, sizeof(p),
	    "run/agate.pid"));
	assert_string_equal(cfg->server.listen[0].tls_cert,
	    in_dir(p, sizeof(p), "etc/tls/cert.pem"));
	assert_string_equal(cfg->server.listen[0].tls_key,
	    in_dir(p, sizeof(p), "./etc/tls/key.pem"));
	config_free(cfg);
}

/* -- errors ------------------------------------------------------------ */

struct err_case {
	const char	*name;
	const char	*yaml;
	const char	*want;	/* after "<file>:"; "{dir}" is the temp dir */
};

#define UP_A	"upstreams:\n  a: {servers: \"http://127.0.0.1:9001\"}\n"

static const struct err_case err_cases[] = {
	/* unknown keys */
	{ "unknown key, near a known one",
	    "server:\n"
	    "  workers: 2\n"
	    "  wrokers: 2\n",
	    "3:3: unknown key 'wrokers' in server (did you mean 'workers'?)" },
	{ "unknown top-level key, near a known one",
	    "upstream:\n"
	    "  a: {servers: \"http://127.0.0.1:9001\"}\n",
	    "1:1: unknown key 'upstream' in the file (did you mean "
	    "'upstreams'?)" },
	{ "unknown key in an upstream",
	    "upstreams:\n"
	    "  users:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    conect_timeout: 1s\n",
	    "4:5: unknown key 'conect_timeout' in users (did you mean "
	    "'connect_timeout'?)" },
	{ "unknown key, nothing near",
	    "server:\n"
	    "  workers: 2\n"
	    "frobnicate: true\n",
	    "3:1: unknown key 'frobnicate' in the file (expected one of: "
	    "server, admin, log, redis, offload, cache, tracing, resolver, upstreams, "
	    "routes)" },
	/* DNS */
	{ "resolver named by a name",
	    "resolver: dns.example:53\n",
	    "1:11: resolver: expected an IP address with an optional port "
	    "(127.0.0.1:53, [::1]:5353), got 'dns.example:53'" },
	{ "resolver list with a bad port",
	    "resolver: [\"10.0.0.1\", \"[::1]:0\"]\n",
	    "1:24: resolver: expected an IP address with an optional port "
	    "(127.0.0.1:53, [::1]:5353), got '[::1]:0'" },
	{ "resolve below a second",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://api.example:9001\n"
	    "    resolve: 200ms\n",
	    "4:14: resolve: '200ms' is out of range (1000ms..86400000ms)" },
	{ "server with a bad host name",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://api..example:9001\n",
	    "3:14: server 'http://api..example:9001': bad host name" },
	{ "unknown key in a flow mapping, nothing near",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    circuit_breaker: {failures: 3, cooldown: 5s}\n",
	    "4:36: unknown key 'cooldown' in circuit_breaker (expected one "
	    "of: failures, open_for)" },

	{ "unknown key in a route, nothing near",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    backend_timeout: 1s\n",
	    "6:5: unknown key 'backend_timeout' in route (expected one of: "
	    "path, methods, upstream, strip_prefix, timeout, compress, "
	    "compress_min, hedge_after, websocket, rate_limit, auth, cors, "
	    "verify_signature, fanout, cache)" },

	/* duplicate keys */
	{ "duplicate key",
	    "server:\n"
	    "  workers: 2\n"
	    "  max_connections: 5\n"
	    "  workers: 3\n",
	    "4:3: duplicate key 'workers' in server" },
	{ "duplicate top-level section",
	    "log: {level: info}\n"
	    "log: {level: debug}\n",
	    "2:1: duplicate key 'log' in the file" },

	/* wrong types */
	{ "mapping where a value is expected",
	    "server:\n"
	    "  max_connections: {a: 1}\n",
	    "2:20: max_connections: expected an integer, got a mapping" },
	{ "list where a duration is expected",
	    "server:\n"
	    "  idle_timeout: [10s]\n",
	    "2:17: idle_timeout: expected a duration, got a list" },
	{ "list where a mapping is expected",
	    "server:\n"
	    "  - workers: 2\n",
	    "2:3: server: expected a mapping, got a list" },
	{ "value where a mapping is expected",
	    "log: info\n",
	    "1:6: log: expected a mapping, got a value" },
	{ "route that is a list",
	    UP_A
	    "routes:\n"
	    "  - [path, /x]\n",
	    "4:5: route: expected a mapping, got a list" },
	{ "routes that is a mapping",
	    UP_A
	    "routes:\n"
	    "  path: /x\n",
	    "4:3: routes: expected a list of routes" },
	{ "listen item that is a list",
	    "server:\n"
	    "  listen: [[\"0.0.0.0:80\"]]\n",
	    "2:12: listen: expected a mapping, got a list" },
	{ "trusted_proxies that is a mapping",
	    "server:\n"
	    "  trusted_proxies: {a: 1}\n",
	    "2:20: trusted_proxies: expected an address or CIDR, got a "
	    "mapping" },
	{ "methods that is a mapping",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    methods: {GET: true}\n",
	    "6:14: methods: expected a list, got a mapping" },
	{ "websocket not a boolean",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [\"http://127.0.0.1:1\"]\n"
	    "routes:\n"
	    "  - path: /ws/\n"
	    "    upstream: a\n"
	    "    websocket: sometimes\n",
	    "7:16: websocket: expected true or false, got 'sometimes'" },
	{ "http2 window over 2^31-1",
	    "server:\n"
	    "  http2: {initial_window_size: 4g}\n",
	    "2:32: initial_window_size: '4g' is out of range "
	    "(1..2147483647 bytes)" },
	{ "tunnel_timeout of zero",
	    "server:\n"
	    "  tunnel_timeout: 0s\n",
	    "2:19: tunnel_timeout: '0s' is out of range (1ms..604800000ms)" },
	{ "retry budget without %",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [\"http://127.0.0.1:1\"]\n"
	    "    retry: {budget: 20}\n",
	    "4:21: budget: expected a percentage 0%..1000% (e.g. 20%), "
	    "got '20'" },
	{ "tracing sample_ratio above 1",
	    "tracing:\n"
	    "  sample_ratio: 1.5\n",
	    "2:17: sample_ratio: expected a number 0..1 (e.g. 0.1), "
	    "got '1.5'" },
	{ "tracing sample_ratio not a number",
	    "tracing: {sample_ratio: 10%}\n",
	    "1:25: sample_ratio: expected a number 0..1 (e.g. 0.1), "
	    "got '10%'" },
	{ "tracing otlp not a URL",
	    "tracing:\n"
	    "  otlp: 127.0.0.1:4318\n",
	    "2:9: otlp: expected an http:// or https:// URL (e.g. "
	    "http://127.0.0.1:4318/v1/traces), got '127.0.0.1:4318'" },
	{ "tracing otlp without a host",
	    "tracing:\n"
	    "  otlp: http:///v1/traces\n",
	    "2:9: otlp: expected an http:// or https:// URL (e.g. "
	    "http://127.0.0.1:4318/v1/traces), got 'http:///v1/traces'" },
	{ "retry budget out of range",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [\"http://127.0.0.1:1\"]\n"
	    "    retry: {budget: 1001%}\n",
	    "4:21: budget: expected a percentage 0%..1000% (e.g. 20%), "
	    "got '1001%'" },
	{ "retry budget not a number",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [\"http://127.0.0.1:1\"]\n"
	    "    retry: {budget: nan%}\n",
	    "4:21: budget: expected a percentage 0%..1000% (e.g. 20%), "
	    "got 'nan%'" },
	{ "bool that is not one",
	    "server:\n"
	    "  listen:\n"
	    "    - address: \"0.0.0.0:80\"\n"
	    "      proxy_protocol: maybe\n",
	    "4:23: proxy_protocol: expected true or false, got 'maybe'" },
	{ "integer that is not one",
	    "offload:\n"
	    "  processes: two\n",
	    "2:14: processes: expected an integer, got 'two'" },

	/* ranges */
	{ "integer below its range",
	    "server:\n"
	    "  max_connections: 0\n",
	    "2:20: max_connections: 0 is out of range (1..1000000)" },
	{ "integer above its range",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    retry: {attempts: 11}\n",
	    "4:23: attempts: 11 is out of range (1..10)" },
	{ "workers out of range",
	    "server:\n"
	    "  workers: 257\n",
	    "2:12: workers: expected auto or an integer 1..256, got '257'" },
	{ "duration out of range",
	    "server:\n"
	    "  header_timeout: 2h\n",
	    "2:19: header_timeout: '2h' is out of range (1ms..3600000ms)" },
	{ "zero duration where one is needed",
	    "server:\n"
	    "  idle_timeout: 0\n",
	    "2:17: idle_timeout: '0' is out of range (1ms..86400000ms)" },
	{ "size out of range",
	    "server:\n"
	    "  max_header_size: 512\n",
	    "2:20: max_header_size: '512' is out of range (1024..1048576 "
	    "bytes)" },
	{ "retry backoff above max_backoff",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    retry: {backoff: 2s, max_backoff: 1s}\n",
	    "3:5: a: retry backoff is larger than max_backoff" },

	/* value syntax */
	{ "duration without a unit",
	    "server:\n"
	    "  idle_timeout: 10\n",
	    "2:17: idle_timeout: expected a duration like 250ms, 10s or 2m, "
	    "got '10'" },
	{ "size with a bad unit",
	    "server:\n"
	    "  max_body_size: 10q\n",
	    "2:18: max_body_size: expected a size like 512, 16k or 10m, "
	    "got '10q'" },
	{ "bad enum",
	    "log:\n"
	    "  level: verbose\n",
	    "2:10: level: expected error | warn | info | debug, got "
	    "'verbose'" },
	{ "bad enum in an upstream",
	    "upstreams:\n"
	    "  users:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    balance: fastest\n",
	    "4:14: balance: expected round_robin | least_request | random, "
	    "got 'fastest'" },
	{ "bad listen address",
	    "server:\n"
	    "  listen: [\"example.com:80\"]\n",
	    "2:12: address: expected host:port (an IPv4 address, *, "
	    "localhost or [IPv6], and a port 1..65535), got "
	    "'example.com:80'" },
	{ "listen port out of range",
	    "server:\n"
	    "  listen:\n"
	    "    - 0.0.0.0:65536\n",
	    "3:7: address: expected host:port (an IPv4 address, *, "
	    "localhost or [IPv6], and a port 1..65535), got "
	    "'0.0.0.0:65536'" },
	{ "bad trusted proxy",
	    "server:\n"
	    "  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n",
	    "2:33: trusted_proxies: expected an address or CIDR like "
	    "10.0.0.0/8, got '10.0.0.0/33'" },
	{ "server without a scheme",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [\"127.0.0.1:9001\"]\n",
	    "3:15: server '127.0.0.1:9001' must start with http://, "
	    "https:// or h2c://" },
	{ "transport native to an https server",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [\"h2c://127.0.0.1:9002\", \"https://127.0.0.1:9001\"]\n"
	    "    transport: native\n",
	    "3:5: a: transport native speaks http:// and h2c://; server "
	    "https://127.0.0.1:9001 needs auto or curl" },
	{ "server with a path",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://127.0.0.1:9001/api\n",
	    "3:14: server 'http://127.0.0.1:9001/api': a server is "
	    "scheme://host:port; put paths in routes (strip_prefix) instead" },
	{ "server with a bad port",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [http://127.0.0.1:9001, \"http://h:0\"]\n",
	    "3:38: server 'http://h:0': bad port" },
	{ "bad rate",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    rate_limit: {rate: 10/d}\n",
	    "6:24: rate: expected a rate like 100/s, 600/m or 1000/h, got "
	    "'10/d'" },
	{ "bad retry condition",
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    retry:\n"
	    "      conditions: [timeout, 200]\n",
	    "5:29: conditions: expected connect_failure, timeout, reset or a "
	    "status 400..599, got '200'" },

	/* required keys */
	{ "upstream without servers",
	    "upstreams:\n"
	    "  users:\n"
	    "    balance: random\n",
	    "3:5: users: missing required key 'servers'" },
	{ "admin without listen",
	    "admin: {}\n",
	    "1:8: admin: missing required key 'listen'" },
	{ "route without path",
	    UP_A
	    "routes:\n"
	    "  - upstream: a\n",
	    "4:5: route: missing required key 'path'" },
	{ "tls without key",
	    "server:\n"
	    "  listen:\n"
	    "    - address: \"0.0.0.0:443\"\n"
	    "      tls: {cert: etc/tls/cert.pem}\n",
	    "4:12: tls: missing required key 'key'" },

	/* routes and their cross-references */
	{ "route naming an unknown upstream",
	    "upstreams:\n"
	    "  users: {servers: \"http://127.0.0.1:9001\"}\n"
	    "  orders: {servers: \"http://127.0.0.1:9002\"}\n"
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: user\n",
	    "6:15: unknown upstream 'user' (defined: users, orders)" },
	{ "route naming an upstream when there are none",
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: app\n",
	    "3:15: unknown upstream 'app' (defined: none)" },
	{ "route with neither upstream nor fanout",
	    UP_A
	    "routes:\n"
	    "  - path: /ok\n"
	    "    upstream: a\n"
	    "  - path: /x\n"
	    "    methods: [GET]\n",
	    "6:5: route /x needs upstream: or fanout:" },
	{ "route with both upstream and fanout",
	    UP_A
	    "routes:\n"
	    "  - path: /x/{id}\n"
	    "    upstream: a\n"
	    "    fanout:\n"
	    "      calls:\n"
	    "        one: {upstream: a, path: /y}\n",
	    "5:15: route /x/{id}: upstream: and fanout: exclude each other" },
	{ "strip_prefix not a prefix of the path",
	    UP_A
	    "routes:\n"
	    "  - path: /api/users/\n"
	    "    upstream: a\n"
	    "    strip_prefix: /v1\n",
	    "4:5: strip_prefix '/v1' is not a leading part of path "
	    "'/api/users/'" },
	{ "strip_prefix reaching into a {param}",
	    UP_A
	    "routes:\n"
	    "  - path: /users/{id}\n"
	    "    upstream: a\n"
	    "    strip_prefix: /users/x\n",
	    "4:5: strip_prefix '/users/x' is not a leading part of path "
	    "'/users/{id}'" },
	{ "{param} glued to text before",
	    UP_A
	    "routes:\n"
	    "  - path: /users/id{id}\n"
	    "    upstream: a\n",
	    "4:11: path '/users/id{id}': a {param} must be a whole segment" },
	{ "{param} glued to text after",
	    UP_A
	    "routes:\n"
	    "  - path: /users/{id}.json\n"
	    "    upstream: a\n",
	    "4:11: path '/users/{id}.json': a {param} must be a whole "
	    "segment" },
	{ "{param} bound twice",
	    UP_A
	    "routes:\n"
	    "  - path: /a/{id}/b/{id}\n"
	    "    upstream: a\n",
	    "4:11: path '/a/{id}/b/{id}' binds {id} twice" },
	{ "empty path segment",
	    UP_A
	    "routes:\n"
	    "  - path: /a//b\n"
	    "    upstream: a\n",
	    "4:11: path '/a//b' has an empty segment (//)" },
	{ "path not starting with /",
	    UP_A
	    "routes:\n"
	    "  - path: api/users\n"
	    "    upstream: a\n",
	    "4:11: 'api/users' must start with /" },
	{ "path with a query",
	    UP_A
	    "routes:\n"
	    "  - path: /search?q=1\n"
	    "    upstream: a\n",
	    "4:11: path '/search?q=1': a route path has no query" },
	{ "duplicate upstream",
	    "upstreams:\n"
	    "  a: {servers: \"http://127.0.0.1:9001\"}\n"
	    "  b: {servers: \"http://127.0.0.1:9002\"}\n"
	    "  a: {servers: \"http://127.0.0.1:9003\"}\n",
	    "4:3: duplicate upstream 'a'" },
	{ "fanout template naming an unknown parameter",
	    "upstreams:\n"
	    "  users: {servers: \"http://127.0.0.1:9001\"}\n"
	    "routes:\n"
	    "  - path: /dash/{user}\n"
	    "    fanout:\n"
	    "      calls:\n"
	    "        profile: {upstream: users, path: \"/users/{uid}\"}\n",
	    "7:42: call profile: {uid} is not a parameter of route "
	    "/dash/{user} (nor query.NAME or header.NAME)" },
	{ "fanout call naming an unknown upstream",
	    "upstreams:\n"
	    "  users: {servers: \"http://127.0.0.1:9001\"}\n"
	    "routes:\n"
	    "  - path: /dash/{user}\n"
	    "    fanout:\n"
	    "      calls:\n"
	    "        profile: {upstream: users, path: \"/users/{user}\"}\n"
	    "        orders: {upstream: order, path: \"/orders\"}\n",
	    "8:28: unknown upstream 'order' (defined: users)" },
	{ "fanout without calls",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    fanout: {mode: all}\n",
	    "5:13: fanout: missing required key 'calls'" },
	{ "fanout with a bad mode",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    fanout: {mode: race, calls: {a: {upstream: a, path: /}}}\n",
	    "5:20: mode: expected all | partial | first | stream, got "
	    "'race'" },
	{ "hedge_after on a fanout route",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    hedge_after: 50ms\n"
	    "    fanout: {calls: {a: {upstream: a, path: /}}}\n",
	    "4:5: route /x: hedge_after applies to upstream routes, not "
	    "fan-out" },
	{ "lowercase method",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    methods: [GET, post]\n",
	    "6:20: methods are case-sensitive; write 'post' in capitals" },
	{ "method that is not a token",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    methods: [\"GET POST\"]\n",
	    "6:15: 'GET POST' is not an HTTP method" },
	{ "cors credentials with origin *",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    cors: {origins: [\"https://a.example\", \"*\"], "
	    "credentials: true}\n",
	    "4:5: route /x: cors credentials cannot be used with origin \"*\" "
	    "(browsers refuse it)" },
	{ "cors origin without a scheme",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    cors: {origins: [app.example]}\n",
	    "6:22: origin 'app.example' must be \"*\" or start with http:// "
	    "or https://" },
	{ "redis rate limit without a redis section",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    rate_limit: {rate: 10/s, backend: redis}\n",
	    "4:5: route /x: rate_limit backend redis needs a top-level "
	    "redis: section" },
	{ "rate limit key that is neither",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    rate_limit: {rate: 10/s, key: cookie}\n",
	    "6:35: key: expected client_ip or header:NAME, got 'cookie'" },

	/* listeners */
	{ "the same listen address twice",
	    "server:\n"
	    "  listen:\n"
	    "    - \"0.0.0.0:8080\"\n"
	    "    - \"127.0.0.1:8081\"\n"
	    "    - address: \"*:8080\"\n",
	    "5:16: listen: *:8080 is listed twice" },
	{ "listen address that is the admin one",
	    "server:\n"
	    "  listen: [\"127.0.0.1:9901\"]\n"
	    "admin:\n"
	    "  listen: localhost:9901\n",
	    "2:12: listen: 127.0.0.1:9901 is also the admin address" },
	{ "empty listen list",
	    "server:\n"
	    "  listen: []\n",
	    "2:11: listen: needs at least one address" },

	/* files */
	{ "tls cert that does not exist",
	    "server:\n"
	    "  listen:\n"
	    "    - address: \"0.0.0.0:8443\"\n"
	    "      tls: {cert: nope.pem, key: etc/tls/key.pem}\n",
	    "4:19: cannot read {dir}/nope.pem: No such file or directory" },
	{ "htpasswd that does not exist, absolute",
	    UP_A
	    "routes:\n"
	    "  - path: /x\n"
	    "    upstream: a\n"
	    "    auth:\n"
	    "      basic: /nonexistent/agate/htpasswd\n",
	    "7:14: cannot read /nonexistent/agate/htpasswd: No such file or "
	    "directory" },
	{ "empty string",
	    "server:\n"
	    "  user: \"\"\n",
	    "2:9: user: expected a non-empty string" },

	/* the file as a whole */
	{ "empty file", "",
	    "1:1: the file is empty; expected a mapping with server:, "
	    "upstreams: and routes:" },
	{ "file of comments only", "# nothing here\n\n# still nothing\n",
	    "1:1: the file is empty; expected a mapping with server:, "
	    "upstreams: and routes:" },
	{ "file that is a list", "- server\n- routes\n",
	    "1:1: the file: expected a mapping, got a list" },
	{ "YAML syntax error: unclosed flow sequence",
	    "server:\n"
	    "  listen: [\"0.0.0.0:80\"\n"
	    "log: {}\n",
	    "3:1: YAML syntax error: did not find expected ',' or ']' "
	    "while parsing a flow sequence" },
	{ "YAML syntax error: bad indentation",
	    "server:\n"
	    "  workers: 2\n"
	    " max_connections: 5\n",
	    "3:2: YAML syntax error: did not find expected key while "
	    "parsing a block mapping" },
	{ "YAML syntax error: tab indentation",
	    "server:\n"
	    "\tworkers: 2\n",
	    "2:1: YAML syntax error: found character that cannot start any "
	    "token while scanning for the next token" },
};

/* want with "{dir}" replaced by the temp dir, after "<file>:". */
static void
expected_error(char *buf, size_t size, const char *file, const char *want)
{
	const char *mark = strstr(want, "{dir}");

	if (mark == NULL)
		snprintf(buf, size, "%s:%s", file, want);
	else
		snprintf(buf, size, "%s:%.*s%s%s", file, (int)(mark - want),
		    want, tmpdir, mark + 5);
}

static void
test_errors(void **state)
{
	char err[CONFIG_ERR_MAX], want[CONFIG_ERR_MAX + PATH_MAX];
	char path[PBUF];
	size_t i, failed = 0;

	in_dir(path, sizeof(path), "bad.yaml");
	for (i = 0; i < NELEM(err_cases); i++) {
		const struct err_case *c = &err_cases[i];
		struct config *cfg = load_text("bad.yaml", c->yaml, err,
		    sizeof(err));

		expected_error(want, sizeof(want), path, c->want);
		if (cfg != NULL) {
			print_error("case \"%s\": loaded; want\n    %s\n",
			    c->name, want);
			config_free(cfg);
			failed++;
		} else if (strcmp(err, want) != 0) {
			print_error("case \"%s\":\n    got  %s\n    want %s\n",
			    c->name, err, want);
			failed++;
		}
	}
	if (failed > 0)
		fail_msg("%zu of %zu error cases failed", failed,
		    NELEM(err_cases));
}

static void
test_error_no_file(void **state)
{
	char err[CONFIG_ERR_MAX], path[PBUF], want[PATH_MAX + 64];

	in_dir(path, sizeof(path), "missing.yaml");
	assert_null(config_load(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(err, want);
}

/*
 * CT_FILE promises "a readable file now": a directory is not one, yet
 * fopen(dir, "r") succeeds on Linux, so the check has to look further.
 */
static void
test_error_file_is_directory(void **state)
{
	char err[CONFIG_ERR_MAX], prefix[PATH_MAX + 16];
	struct config *cfg = load_text("dir.yaml",
	    "server:\n"
	    "  listen:\n"
	    "    - address: \"0.0.0.0:8443\"\n"
	    "      tls: {cert: etc/tls, key: etc/tls/key.pem}\n",
	    err, sizeof(err));

	if (cfg != NULL) {
		config_free(cfg);
		fail_msg("a directory was accepted as the tls cert file");
	}
	snprintf(prefix, sizeof(prefix), "%s/dir.yaml:4:19: ", tmpdir);
	assert_memory_equal(err, prefix, strlen(prefix));
	assert_non_null(strstr(err, "etc/tls"));
}

/*
 * strip_prefix "/ap" is a leading part of "/api/users/" as a string, but
 * not as a path: the router only strips whole segments, so this one
 * would be accepted and then silently never applied.
 */
static void
test_error_strip_prefix_mid_segment(void **state)
{
	char err[CONFIG_ERR_MAX], prefix[PBUF + 16];
	struct config *cfg = load_text("strip.yaml",
	    UP_A
	    "routes:\n"
	    "  - path: /api/users/\n"
	    "    upstream: a\n"
	    "    strip_prefix: /ap\n",
	    err, sizeof(err));

	if (cfg != NULL) {
		config_free(cfg);
		fail_msg("strip_prefix /ap accepted for path /api/users/");
	}
	snprintf(prefix, sizeof(prefix), "%s/strip.yaml:", tmpdir);
	assert_memory_equal(err, prefix, strlen(prefix));
	assert_non_null(strstr(err, "strip_prefix"));
}

/* An error message is cut to the buffer it is given, never overrun. */
static void
test_error_small_buffer(void **state)
{
	char err[24];
	struct config *cfg;

	memset(err, 'x', sizeof(err));
	cfg = load_text("small.yaml", "frobnicate: 1\n", err, 16);
	assert_null(cfg);
	assert_true(memchr(err, '\0', 16) != NULL);
	assert_int_equal(err[16], 'x');
	assert_int_equal(err[23], 'x');
}

/*
 * "A single value counts as a list of one" (configuration.md), for every
 * list key alike: listen (short and long form), trusted_proxies,
 * servers, methods, retry conditions.
 */
static void
test_single_values_are_lists(void **state)
{
	struct config *cfg;
	const struct upstream_cfg *up;

	(void)state;
	cfg = load_ok(
	    "server:\n"
	    "  listen: \"127.0.0.1:8080\"\n"
	    "  trusted_proxies: 10.0.0.0/8\n"
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: http://127.0.0.1:9001\n"
	    "    retry: {conditions: timeout}\n"
	    "routes:\n"
	    "  - {path: /x, upstream: a, methods: GET}\n");
	assert_int_equal(cfg->server.nlisten, 1);
	assert_string_equal(cfg->server.listen[0].address, "127.0.0.1:8080");
	assert_int_equal(cfg->server.ntrusted, 1);
	assert_int_equal(cfg->server.trusted[0].bits, 8);
	up = &cfg->upstreams[0];
	assert_int_equal(up->nservers, 1);
	assert_int_equal(up->retry.on, RETRY_ON_TIMEOUT);
	assert_int_equal(up->retry.nstatuses, 0);
	assert_int_equal(cfg->routes[0].nmethods, 1);
	assert_string_equal(cfg->routes[0].methods[0], "GET");
	config_free(cfg);

	cfg = load_ok(
	    "server:\n"
	    "  listen: {address: \"127.0.0.1:8081\", proxy_protocol: true}\n");
	assert_int_equal(cfg->server.nlisten, 1);
	assert_true(cfg->server.listen[0].proxy_protocol);
	config_free(cfg);
}

/* resolver: and resolve:, and which servers are looked up. */
static void
test_dns_keys(void **state)
{
	struct config *cfg;
	const struct upstream_cfg *up;

	(void)state;
	cfg = load_ok(
	    "resolver: [\"127.0.0.1:5353\", \"10.0.0.53\", \"[::1]:53\"]\n"
	    "upstreams:\n"
	    "  a:\n"
	    "    servers: [\"http://api.internal:9001\", \"http://10.0.0.1\",\n"
	    "              \"https://[::1]:8443\", \"h2c://localhost:50051\"]\n"
	    "    resolve: 5s\n"
	    "  b:\n"
	    "    servers: http://10.0.0.2:9001\n");
	assert_int_equal(cfg->nresolvers, 3);
	assert_string_equal(cfg->resolvers[0], "127.0.0.1:5353");
	assert_string_equal(cfg->resolvers[1], "10.0.0.53:53");
	assert_string_equal(cfg->resolvers[2], "[::1]:53");
	up = &cfg->upstreams[0];
	assert_int_equal(up->resolve_ms, 5000);
	assert_true(up->servers[0].named);
	assert_false(up->servers[1].named);
	assert_false(up->servers[2].named);
	assert_true(up->servers[3].named);
	assert_int_equal(cfg->upstreams[1].resolve_ms, 30000);
	config_free(cfg);

	cfg = load_ok("resolver: 127.0.0.1:53\n");
	assert_int_equal(cfg->nresolvers, 1);
	config_free(cfg);
	cfg = load_ok("server:\n  workers: 1\n");
	assert_int_equal(cfg->nresolvers, 0);
	config_free(cfg);
}

/*
 * The bundled config (make run) has a demo login: it listens on the
 * loopback only, so trying agate never opens it to the network.
 */
static void
test_bundled_config_is_local(void **state)
{
	char err[512], *unit, *line;
	struct config *cfg;
	size_t i;

	(void)state;
	cfg = config_load(TEST_DATA "/../../../etc/agate.yaml", err,
	    sizeof(err));
	if (cfg == NULL)
		fail_msg("etc/agate.yaml: %s", err);
	assert_true(cfg->server.nlisten > 0);
	for (i = 0; i < cfg->server.nlisten; i++) {
		const struct sockaddr_storage *ss = &cfg->server.listen[i].sa;
		const struct sockaddr_in *sin = (const void *)ss;
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		if (ss->ss_family == AF_INET &&
		    (ntohl(sin->sin_addr.s_addr) >> 24) == 127)
			continue;
		if (ss->ss_family == AF_INET6 &&
		    IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			continue;
		fail_msg("etc/agate.yaml listens on %s, not the loopback",
		    cfg->server.listen[i].address);
	}
	config_free(cfg);
	/* The socket unit binds what the config would. */
	unit = read_whole(TEST_DATA "/../../../etc/agate.socket");
	line = strstr(unit, "\nListenStream=");
	assert_non_null(line);
	assert_true(strncmp(line, "\nListenStream=127.0.0.1:", 24) == 0);
	assert_null(strstr(line + 1, "\nListenStream="));
	free(unit);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_example),
		cmocka_unit_test(test_minimal_defaults),
		cmocka_unit_test(test_section_defaults),
		cmocka_unit_test(test_other_values),
		cmocka_unit_test(test_log_access_file),
		cmocka_unit_test(test_slow_callback),
		cmocka_unit_test(test_relative_paths),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_error_no_file),
		cmocka_unit_test(test_single_values_are_lists),
		cmocka_unit_test(test_dns_keys),
		cmocka_unit_test(test_bundled_config_is_local),
		cmocka_unit_test(test_error_file_is_directory),
		cmocka_unit_test(test_error_strip_prefix_mid_segment),
		cmocka_unit_test(test_error_small_buffer),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
