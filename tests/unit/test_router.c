/*
 * router_match() and router_upstream_path() over the routes of
 * tests/unit/data/router*.yaml: the first route in file order wins,
 * prefixes end in '/', {params} bind whole segments, a path matched only
 * by method-restricted routes is a 405 whose Allow is the union of their
 * methods, and strip_prefix removes whole leading segments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "gateway/config/config.h"
#include "gateway/gateway.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

static struct config *routes;	/* data/router.yaml */
static struct config *catchall;	/* data/router-catchall.yaml */

static struct config *
load(const char *path)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg = config_load(path, err, sizeof(err));

	if (cfg == NULL)
		print_error("%s\n", err);
	return cfg;
}

static int
group_setup(void **state)
{
	routes = load(TEST_DATA "/router.yaml");
	catchall = load(TEST_DATA "/router-catchall.yaml");
	return routes != NULL && catchall != NULL ? 0 : -1;
}

static int
group_teardown(void **state)
{
	config_free(routes);
	config_free(catchall);
	return 0;
}

static const char *
result_name(enum route_result r)
{
	switch (r) {
	case ROUTE_FOUND:
		return "found";
	case ROUTE_NOT_FOUND:
		return "not found";
	case ROUTE_BAD_METHOD:
		return "405";
	}
	return "?";
}

/* "name=value name=value", in binding order. */
static void
format_params(const struct route_match *m, char *buf, size_t size)
{
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < m->nparams && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s%s=%.*s",
		    i ? " " : "", m->params[i].name, (int)m->params[i].len,
		    m->params[i].value);
}

struct match_case {
	const char		*method;
	const char		*path;
	enum route_result	 want;
	int			 route;		/* index when found */
	const char		*params;	/* when found */
	const char		*allow;		/* when 405 */
};

static void
run_cases(const struct config *cfg, const struct match_case *cases,
    size_t ncases)
{
	size_t i, failed = 0;

	for (i = 0; i < ncases; i++) {
		const struct match_case *c = &cases[i];
		struct route_match m;
		enum route_result got;
		char params[256];
		int route;

		memset(&m, 0xa5, sizeof(m));
		got = router_match(cfg, c->path, strlen(c->path), c->method,
		    strlen(c->method), &m);
		route = m.route ? (int)(m.route - cfg->routes) : -1;
		format_params(&m, params, sizeof(params));
		if (got != c->want) {
			print_error("%s %s: %s (route %d); want %s\n",
			    c->method, c->path, result_name(got), route,
			    result_name(c->want));
			failed++;
			continue;
		}
		if (got == ROUTE_FOUND && (route != c->route ||
		    strcmp(params, c->params) != 0)) {
			print_error("%s %s: route %d [%s]; want route %d [%s]\n",
			    c->method, c->path, route, params, c->route,
			    c->params);
			failed++;
		}
		if (got != ROUTE_FOUND && (m.route != NULL || m.nparams != 0)) {
			print_error("%s %s: %s but route %d, %zu params\n",
			    c->method, c->path, result_name(got), route,
			    m.nparams);
			failed++;
		}
		if (got == ROUTE_BAD_METHOD && strcmp(m.allow, c->allow) != 0) {
			print_error("%s %s: Allow \"%s\"; want \"%s\"\n",
			    c->method, c->path, m.allow, c->allow);
			failed++;
		}
		if (got == ROUTE_NOT_FOUND && m.allow[0] != '\0') {
			print_error("%s %s: not found with Allow \"%s\"\n",
			    c->method, c->path, m.allow);
			failed++;
		}
	}
	if (failed > 0)
		fail_msg("%zu of %zu cases failed", failed, ncases);
}

#define FOUND(m, p, r, params)	{ m, p, ROUTE_FOUND, r, params, NULL }
#define NOT_FOUND(m, p)		{ m, p, ROUTE_NOT_FOUND, -1, NULL, NULL }
#define BAD_METHOD(m, p, allow)	{ m, p, ROUTE_BAD_METHOD, -1, NULL, allow }

static void
test_exact(void **state)
{
	static const struct match_case cases[] = {
		FOUND("GET", "/status", 0, ""),
		FOUND("HEAD", "/status", 0, ""),	/* GET admits HEAD */
		BAD_METHOD("POST", "/status", "GET, HEAD"),
		BAD_METHOD("get", "/status", "GET, HEAD"),	/* case-sensitive */
		NOT_FOUND("GET", "/status/"),		/* no trailing slash */
		NOT_FOUND("GET", "/statusx"),
		NOT_FOUND("GET", "/statu"),
		NOT_FOUND("GET", "/status/x"),
		NOT_FOUND("GET", "//status"),
		FOUND("DELETE", "/files", 6, ""),
		NOT_FOUND("DELETE", "/files/"),
		NOT_FOUND("GET", "/nope"),
		NOT_FOUND("GET", "/"),
		NOT_FOUND("OPTIONS", "*"),
		NOT_FOUND("GET", ""),
	};

	run_cases(routes, cases, NELEM(cases));
}

static void
test_prefix(void **state)
{
	static const struct match_case cases[] = {
		FOUND("GET", "/api/users/", 1, ""),
		FOUND("POST", "/api/users/", 1, ""),
		FOUND("HEAD", "/api/users/", 1, ""),
		FOUND("GET", "/api/users/42/x", 1, ""),
		FOUND("GET", "/api/users//", 1, ""),
		NOT_FOUND("GET", "/api/users"),
		NOT_FOUND("GET", "/api/usersx"),
		NOT_FOUND("GET", "/api/usersx/"),
		NOT_FOUND("GET", "/api/"),
		NOT_FOUND("GET", "/Api/users/"),
		FOUND("OPTIONS", "/api/v1/anything", 4, ""),
		FOUND("PATCH", "/api/v1/", 4, ""),
		NOT_FOUND("GET", "/api/v1"),
		NOT_FOUND("GET", "/api/v10/"),
	};

	run_cases(routes, cases, NELEM(cases));
}

static void
test_params(void **state)
{
	static const struct match_case cases[] = {
		FOUND("PUT", "/api/users/42", 2, "id=42"),
		FOUND("DELETE", "/api/users/a%20b", 2, "id=a%20b"),
		FOUND("PUT", "/api/users/42/orders/7", 3, "id=42 order=7"),
		FOUND("GET", "/orgs/acme/", 5, "org=acme"),
		FOUND("GET", "/orgs/acme/repos/1", 5, "org=acme"),
		NOT_FOUND("GET", "/orgs/acme"),
		NOT_FOUND("GET", "/orgs//x"),		/* empty parameter */
		NOT_FOUND("GET", "/orgs/"),
		FOUND("PATCH", "/items/9", 8, "id=9"),
		FOUND("POST", "/items/9", 7, "id=9"),
		NOT_FOUND("POST", "/items/"),
		NOT_FOUND("POST", "/items/9/"),
		NOT_FOUND("POST", "/items"),
	};

	run_cases(routes, cases, NELEM(cases));
}

/* Earlier routes win; later ones are reached only through method misses. */
static void
test_file_order(void **state)
{
	static const struct match_case cases[] = {
		/* 1 (prefix) shadows 2 for GET but not for PUT/DELETE. */
		FOUND("GET", "/api/users/42", 1, ""),
		FOUND("PUT", "/api/users/42", 2, "id=42"),
		/* 1 shadows 3 for GET; PUT falls through 1 and 2 to 3. */
		FOUND("GET", "/api/users/42/orders/7", 1, ""),
		FOUND("DELETE", "/api/users/42/orders/7", 3, "id=42 order=7"),
		/* POST /items/9 is 7's, though 8 lists POST too. */
		FOUND("POST", "/items/9", 7, "id=9"),
	};
	static const struct match_case all[] = {
		FOUND("POST", "/api/x", 0, ""),
		FOUND("GET", "/api/x", 1, ""),
		FOUND("HEAD", "/api/x", 1, ""),
		FOUND("GET", "/", 1, ""),
		FOUND("GET", "/anything/at/all", 1, ""),
		FOUND("GET", "/api", 1, ""),
		BAD_METHOD("PUT", "/api/x", "POST, GET, HEAD"),
		BAD_METHOD("DELETE", "/", "GET, HEAD"),
		NOT_FOUND("GET", "*"),
	};

	run_cases(routes, cases, NELEM(cases));
	run_cases(catchall, all, NELEM(all));
}

static void
test_method_not_allowed(void **state)
{
	static const struct match_case cases[] = {
		/* Union of 1 and 2, GET once. */
		BAD_METHOD("PATCH", "/api/users/42", "GET, HEAD, POST, PUT, DELETE"),
		/* Only 1 matches the path with a trailing slash. */
		BAD_METHOD("DELETE", "/api/users/42/", "GET, HEAD, POST"),
		/* 2 and 3 need a non-empty {id}. */
		BAD_METHOD("PUT", "/api/users//orders/7", "GET, HEAD, POST"),
		/* 7 and 8 share the path: POST once. */
		BAD_METHOD("GET", "/items/9", "POST, PATCH"),
		BAD_METHOD("HEAD", "/items/9", "POST, PATCH"),
		BAD_METHOD("POST", "/orgs/acme/x", "GET, HEAD"),
	};

	run_cases(routes, cases, NELEM(cases));
}

/* The path is path_len bytes: no NUL needed, a query is not looked at. */
static void
test_length_bounded(void **state)
{
	static const char buf[] = "/api/users/42?x=/y";
	struct route_match m;

	assert_int_equal(router_match(routes, "/status?q", 7, "GETX", 3, &m),
	    ROUTE_FOUND);
	assert_ptr_equal(m.route, &routes->routes[0]);
	assert_int_equal(router_match(routes, buf, 13, "PUT", 3, &m),
	    ROUTE_FOUND);
	assert_ptr_equal(m.route, &routes->routes[2]);
	assert_int_equal(m.nparams, 1);
	assert_string_equal(m.params[0].name, "id");
	/* The value points into the request path, not into a copy. */
	assert_ptr_equal(m.params[0].value, buf + 11);
	assert_int_equal(m.params[0].len, 2);
	/* "HEADX" cut to 4 bytes is HEAD. */
	assert_int_equal(router_match(routes, "/status", 7, "HEADX", 4, &m),
	    ROUTE_FOUND);
	assert_int_equal(router_match(routes, "/status", 7, "HEADX", 5, &m),
	    ROUTE_BAD_METHOD);
}

/* A match leaves no parameters of routes tried before it. */
static void
test_params_reset(void **state)
{
	struct route_match m;

	assert_int_equal(router_match(routes, "/api/users/42/orders/7", 22,
	    "PUT", 3, &m), ROUTE_FOUND);
	assert_int_equal(m.nparams, 2);
	assert_int_equal(router_match(routes, "/status", 7, "GET", 3, &m),
	    ROUTE_FOUND);
	assert_int_equal(m.nparams, 0);
	assert_int_equal(router_match(routes, "/api/users/42", 13, "GET", 3,
	    &m), ROUTE_FOUND);
	assert_ptr_equal(m.route, &routes->routes[1]);
	assert_int_equal(m.nparams, 0);
}

/* -- router_upstream_path ---------------------------------------------- */

static void
test_upstream_path(void **state)
{
	static const struct {
		int		 route;
		const char	*path;
		const char	*want;
	} cases[] = {
		/* strip_prefix /api */
		{ 1, "/api/users/42", "/users/42" },
		{ 1, "/api/users/", "/users/" },
		{ 1, "/api/", "/" },
		{ 1, "/api", "/" },
		{ 1, "/apix/users", "/apix/users" },	/* not a whole segment */
		{ 1, "/ap", "/ap" },
		{ 1, "/other/api", "/other/api" },
		{ 1, "/", "/" },
		/* strip_prefix /api/v1/: the trailing / is not stripped */
		{ 4, "/api/v1/things", "/things" },
		{ 4, "/api/v1/", "/" },
		{ 4, "/api/v1", "/" },
		{ 4, "/api/v10/x", "/api/v10/x" },
		/* strip_prefix /files on its own exact path */
		{ 6, "/files", "/" },
		{ 6, "/files/a.txt", "/a.txt" },
		/* no strip_prefix */
		{ 0, "/status", "/status" },
		{ 2, "/api/users/42", "/api/users/42" },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		const struct route_cfg *r = &routes->routes[cases[i].route];
		const char *out = NULL;
		size_t len = router_upstream_path(r, cases[i].path,
		    strlen(cases[i].path), &out);

		assert_non_null(out);
		if (len != strlen(cases[i].want) ||
		    memcmp(out, cases[i].want, len) != 0)
			fail_msg("route %d (strip_prefix %s), %s -> \"%.*s\"; "
			    "want \"%s\"", cases[i].route,
			    r->strip_prefix ? r->strip_prefix : "none",
			    cases[i].path, (int)len, out, cases[i].want);
		/* What is kept is the request's own bytes, not a copy. */
		if (strcmp(cases[i].want, "/") != 0 ||
		    strcmp(cases[i].path, "/") == 0)
			assert_true(out >= cases[i].path && out + len <=
			    cases[i].path + strlen(cases[i].path));
	}
}

/* Only path_len bytes count: a query after them stays out. */
static void
test_upstream_path_bounded(void **state)
{
	static const char buf[] = "/api/users?x=/api";
	const char *out;
	size_t len;

	len = router_upstream_path(&routes->routes[1], buf, 10, &out);
	assert_int_equal(len, 6);
	assert_memory_equal(out, "/users", 6);
	assert_ptr_equal(out, buf + 4);
	len = router_upstream_path(&routes->routes[6], "/filesystem", 6, &out);
	assert_int_equal(len, 1);
	assert_memory_equal(out, "/", 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_file_order),
		cmocka_unit_test(test_method_not_allowed),
		cmocka_unit_test(test_length_bounded),
		cmocka_unit_test(test_params_reset),
		cmocka_unit_test(test_upstream_path),
		cmocka_unit_test(test_upstream_path_bounded),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
