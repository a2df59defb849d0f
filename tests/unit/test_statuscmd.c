/*
 * `agate -s status` turns the admin listener's answer into a table
 * (supervisor/statuscmd.c): what it prints for a real /status, and the
 * one-line reason it gives for anything else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/supervisor.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* statuscmd_print on text; the table (or "") in *out, the rc back. */
static int
print(const char *text, char **out, char *err, size_t errlen)
{
	size_t len;
	FILE *f = open_memstream(out, &len);
	int rc;

	assert_non_null(f);
	err[0] = '\0';
	rc = statuscmd_print(text, strlen(text), f, err, errlen);
	fclose(f);
	return rc;
}

static void
test_table(void **state)
{
	static const char answer[] = "HTTP/1.1 200 OK\r\n"
	    "Content-Type: application/json\r\n\r\n"
	    "{\"version\":\"1.2.3\",\"pid\":100,\"uptime_s\":42,"
	    "\"generation\":3,\"workers\":["
	    "{\"pid\":101,\"generation\":3,\"connections\":7,\"in_flight\":2,"
	    "\"tunnels\":1,\"offload_queued\":4,\"offload_running\":1,"
	    "\"loop_lag_p99_ms\":250,\"slow_callbacks\":9},"
	    "{\"pid\":102,\"generation\":2,\"connections\":0,\"in_flight\":0,"
	    "\"tunnels\":0,\"offload_queued\":0,\"offload_running\":0,"
	    "\"loop_lag_p99_ms\":1,\"slow_callbacks\":0}]}\n";
	static const char want[] =
	    "agate 1.2.3, supervisor pid 100, up 42 s, config generation 3, "
	    "2 workers\n"
	    "  worker  gen connections in flight tunnels  offload q/run "
	    "lag p99 ms slow callbacks\n"
	    "     101    3           7         2       1            4/1 "
	    "       250              9\n"
	    "     102    2           0         0       0            0/0 "
	    "         1              0\n";
	char err[256], *out = NULL;

	assert_int_equal(print(answer, &out, err, sizeof(err)), 0);
	assert_string_equal(out, want);
	free(out);
}

static void
test_refusals(void **state)
{
	static const struct {
		const char	*in;
		const char	*why;
	} cases[] = {
		{ "", "the admin listener did not answer HTTP" },
		{ "SSH-2.0-OpenSSH_9.2\r\n",
		    "the admin listener did not answer HTTP" },
		{ "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
		    "the admin listener did not answer HTTP" },
		{ "HTTP/1.1 404 Not Found\r\n\r\n{}",
		    "the admin listener answered /status with 404" },
		{ "HTTP/1.1 200 OK\r\n\r\n{\"version\":",
		    "/status is not what agate sends: " },
		{ "HTTP/1.1 200 OK\r\n\r\n{\"workers\":[]}",
		    "/status is not what agate sends" },
		{ "HTTP/1.1 200 OK\r\n\r\n[1, 2]",
		    "/status is not what agate sends" },
	};
	char err[256], *out;
	size_t i;

	for (i = 0; i < NELEM(cases); i++) {
		out = NULL;
		assert_int_equal(print(cases[i].in, &out, err, sizeof(err)),
		    -1);
		if (strncmp(err, cases[i].why, strlen(cases[i].why)) != 0)
			fail_msg("case %zu: got '%s', want '%s...'", i, err,
			    cases[i].why);
		assert_string_equal(out, "");
		free(out);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
