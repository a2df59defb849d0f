/*
 * The traceparent field (gateway/trace/traceparent.c), per W3C Trace
 * Context level 1: what is kept, and each form that must start a new
 * trace instead.  A table, then the round trip through the formatter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/trace/trace.h"

#define TID	"4bf92f3577b34da6a3ce929d0e0e4736"
#define PID	"00f067aa0ba902b7"

struct tp_case {
	const char	*in;
	bool		 ok;
	uint8_t		 flags;
	const char	*what;
};

static const struct tp_case cases[] = {
	/* The spec's examples. */
	{ "00-" TID "-" PID "-01", true, 1, "sampled" },
	{ "00-" TID "-" PID "-00", true, 0, "not sampled" },
	{ "00-" TID "-" PID "-09", true, 9, "other flag bits kept in parse" },
	/* A later version: read as 00, more may follow a '-'. */
	{ "01-" TID "-" PID "-01", true, 1, "version 01" },
	{ "cc-" TID "-" PID "-01-what-the-future-holds", true, 1,
	    "version cc with more" },
	{ "fe-" TID "-" PID "-01-", true, 1, "version fe, empty more" },
	/* Invalid. */
	{ "ff-" TID "-" PID "-01", false, 0, "version ff" },
	{ "00-00000000000000000000000000000000-" PID "-01", false, 0,
	    "all-zero trace id" },
	{ "00-" TID "-0000000000000000-01", false, 0, "all-zero parent id" },
	{ "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", false, 0,
	    "upper-case trace id" },
	{ "00-" TID "-00F067AA0BA902B7-01", false, 0, "upper-case parent id" },
	{ "0A-" TID "-" PID "-01", false, 0, "upper-case version" },
	{ "00-" TID "-" PID "-0A", false, 0, "upper-case flags" },
	{ "00-" TID "-" PID "-01-", false, 0, "version 00 with more" },
	{ "00-" TID "-" PID "-011", false, 0, "version 00, 56 chars" },
	{ "00-" TID "-" PID "-0", false, 0, "short flags" },
	{ "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "-01", false, 0,
	    "31-digit trace id" },
	{ "00-" TID "-00f067aa0ba902b-01", false, 0, "15-digit parent id" },
	{ "00-" TID "-" PID "-01x", false, 0, "junk after" },
	{ "01-" TID "-" PID "-01x", false, 0, "later version, no '-'" },
	{ "00_" TID "-" PID "-01", false, 0, "wrong separator 1" },
	{ "00-" TID "_" PID "-01", false, 0, "wrong separator 2" },
	{ "00-" TID "-" PID "_01", false, 0, "wrong separator 3" },
	{ "00-" "4bf92f3577b34da6a3ce929d0e0e473g" "-" PID "-01", false, 0,
	    "not hex" },
	{ "00-" TID "-" PID "-0g", false, 0, "flags not hex" },
	{ " 00-" TID "-" PID "-01", false, 0, "leading space" },
	{ "", false, 0, "empty" },
	{ "00", false, 0, "version only" },
};

static void
test_cases(void **state)
{
	uint8_t tid[16], pid[8], flags;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tp_case *c = &cases[i];
		int rc = traceparent_parse(c->in, strlen(c->in), tid, pid,
		    &flags);

		if ((rc == 0) != c->ok)
			fail_msg("%s: '%s' %s", c->what, c->in, c->ok ?
			    "refused" : "accepted");
		if (c->ok) {
			char hex[33];

			assert_int_equal(flags, c->flags);
			trace_hex(hex, tid, 16);
			assert_memory_equal(hex, TID, 32);
			trace_hex(hex, pid, 8);
			assert_memory_equal(hex, PID, 16);
		}
	}
}

static void
test_format_round_trip(void **state)
{
	static const char want[] = "00-" TID "-b7ad6b7169203331-01";
	uint8_t tid[16], pid[8], span[8], flags;
	char out[TRACEPARENT_LEN + 1];

	(void)state;
	assert_int_equal(traceparent_parse("00-" TID "-" PID "-01",
	    TRACEPARENT_LEN, tid, pid, &flags), 0);
	assert_int_equal(traceparent_parse("00-" TID "-b7ad6b7169203331-00",
	    TRACEPARENT_LEN, tid, span, &flags), 0);
	memset(out, 'Z', sizeof(out));
	traceparent_format(out, tid, span, 1);
	assert_memory_equal(out, want, TRACEPARENT_LEN);
	assert_int_equal(out[TRACEPARENT_LEN], 'Z');	/* no NUL written */
	assert_int_equal(traceparent_parse(out, TRACEPARENT_LEN, tid, pid,
	    &flags), 0);
	assert_int_equal(flags, 1);
}

/* The length is the caller's: bytes past it are never read. */
static void
test_reads_only_its_length(void **state)
{
	static const char s[] = "00-" TID "-" PID "-01-tail";
	uint8_t tid[16], pid[8], flags;

	(void)state;
	assert_int_equal(traceparent_parse(s, TRACEPARENT_LEN, tid, pid,
	    &flags), 0);
	assert_int_equal(traceparent_parse(s, TRACEPARENT_LEN - 1, tid, pid,
	    &flags), -1);
	assert_int_equal(traceparent_parse(s, sizeof(s) - 1, tid, pid,
	    &flags), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_format_round_trip),
		cmocka_unit_test(test_reads_only_its_length),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
