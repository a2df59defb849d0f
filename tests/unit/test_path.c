/*
 * Path normalisation (worker/path.c): what agate routes on is what the
 * upstream receives, so every case here is one a client could use to
 * reach a route it should not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "worker/path.h"

struct path_case {
	const char	*in;
	const char	*out;		/* NULL: refused */
	const char	*why;		/* for refusals */
};

static const struct path_case cases[] = {
	{ "/", "/", NULL },
	{ "/a", "/a", NULL },
	{ "/a/", "/a/", NULL },
	{ "/a//b", "/a/b", NULL },
	{ "//a", "/a", NULL },
	{ "///", "/", NULL },
	{ "/a/./b", "/a/b", NULL },
	{ "/a/.", "/a/", NULL },
	{ "/.", "/", NULL },
	{ "/./", "/", NULL },
	{ "/a/..", "/", NULL },
	{ "/a/b/../c", "/a/c", NULL },
	{ "/a/b/..", "/a/", NULL },
	{ "/a/b/c/../../d/./e/", "/a/d/e/", NULL },
	{ "/api/users/../../secret", "/secret", NULL },
	{ "/a/%2E%2e/b", "/b", NULL },		/* encoded dots are dots */
	{ "/a/.%2e/b", "/b", NULL },
	{ "/%41%62c", "/Abc", NULL },		/* unreserved: decoded */
	{ "/%7euser", "/~user", NULL },
	{ "/sp%20ace", "/sp%20ace", NULL },	/* reserved: kept */
	{ "/q%3a%3A", "/q%3A%3A", NULL },	/* hex case normalised */
	{ "/a/.../b", "/a/.../b", NULL },	/* not dot-segments */
	{ "/a/..b", "/a/..b", NULL },
	{ "/..", NULL, "path climbs above /" },
	{ "/a/../..", NULL, "path climbs above /" },
	{ "/%2e%2e/x", NULL, "path climbs above /" },
	{ "/a%2fb", NULL, "encoded slash in path" },
	{ "/a%2Fb", NULL, "encoded slash in path" },
	{ "/a%00", NULL, "encoded NUL in path" },
	{ "/a%zz", NULL, "bad percent-encoding in path" },
	{ "/a%2", NULL, "bad percent-encoding in path" },
	{ "/a%", NULL, "bad percent-encoding in path" },
	{ "/a#b", NULL, "fragment in request target" },
	{ "a/b", NULL, "path must start with /" },
};

static void
test_cases(void **state)
{
	size_t i, n;
	char buf[128];
	const char *why;
	int bad = 0;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct path_case *c = &cases[i];

		n = strlen(c->in);
		memcpy(buf, c->in, n);
		why = NULL;
		n = path_normalize(buf, n, &why);
		if (c->out == NULL) {
			if (n != 0 || why == NULL || strcmp(why, c->why) != 0) {
				printf("%s: want refusal '%s', got '%.*s' (%s)\n",
				    c->in, c->why, (int)n, buf, why ? why : "-");
				bad++;
			}
		} else if (n != strlen(c->out) || memcmp(buf, c->out, n) != 0) {
			printf("%s: want '%s', got '%.*s'\n", c->in, c->out,
			    (int)n, buf);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

/* In place: a path never grows, and bytes past the result are untouched. */
static void
test_never_writes_past_the_input(void **state)
{
	char buf[32];

	(void)state;
	memset(buf, 'Z', sizeof(buf));
	memcpy(buf, "/a/./b/", 7);
	assert_int_equal(path_normalize(buf, 7, &(const char *){ NULL }), 5);
	assert_memory_equal(buf, "/a/b/", 5);
	assert_int_equal(buf[7], 'Z');
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_never_writes_past_the_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
