/*
 * Process titles by rewriting argv in place: the technique of nginx's
 * ngx_setproctitle.c and BSD setproctitle(3).  The kernel shows a
 * process's command line from the memory where execve() put argv's
 * strings, followed there by the environment's.  Copying the environment
 * elsewhere frees the whole run of bytes for a title; the kernel reads a
 * title that outgrew argv's part on into the environment's (Linux 4.18+
 * and older alike: /proc/PID/cmdline follows a non-NUL last argv byte).
 *
 * Children inherit the area across fork() and set their own title in it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "lib/proctitle.h"

extern char **environ;

static char	*pt_area;	/* argv[0]'s string, and the run after it */
static size_t	 pt_size;	/* 0: titles are off */
static char	*pt_cmdline;	/* the command line as it was, for titles */
/* The program's copy of argv lives as long as the program; kept here
 * (and "used", or the compiler drops a variable nobody reads) so that
 * leak checkers see it as reachable. */
static char    **pt_argv __attribute__((used));

/* The end of the run of strings that starts at list[0]'s. */
static char *
pt_run_end(char **list, char *end)
{
	size_t i;

	for (i = 0; list[i] != NULL; i++)
		if (list[i] == end)
			end = list[i] + strlen(list[i]) + 1;
	return end;
}

static char **
pt_copy_argv(int argc, char **argv)
{
	char **copy = calloc((size_t)argc + 1, sizeof(*copy));
	size_t len = 0;
	int i;

	if (copy == NULL)
		return NULL;
	for (i = 0; i < argc; i++) {
		if ((copy[i] = strdup(argv[i])) == NULL)
			return NULL;	/* at start-up: not worth unwinding */
		len += strlen(argv[i]) + 1;
	}
	pt_argv = copy;
	if ((pt_cmdline = malloc(len + 1)) == NULL)
		return NULL;
	pt_cmdline[0] = '\0';
	for (i = 0; i < argc; i++) {
		if (i > 0)
			strcat(pt_cmdline, " ");
		strcat(pt_cmdline, argv[i]);
	}
	return copy;
}

/* The environment's strings, copied into one block of their own. */
static int
pt_move_environ(void)
{
	size_t i, len = 0;
	char *p;

	for (i = 0; environ[i] != NULL; i++)
		len += strlen(environ[i]) + 1;
	if ((p = malloc(len ? len : 1)) == NULL)
		return -1;
	for (i = 0; environ[i] != NULL; i++) {
		size_t n = strlen(environ[i]) + 1;

		memcpy(p, environ[i], n);
		environ[i] = p;
		p += n;
	}
	return 0;
}

char **
proctitle_init(int argc, char **argv)
{
	char **copy, *end;

	if (argc < 1 || argv[0] == NULL)
		return argv;
	if ((copy = pt_copy_argv(argc, argv)) == NULL)
		return argv;
	end = pt_run_end(argv, argv[0]);
	end = pt_run_end(environ, end);
	if (pt_move_environ() == -1)
		return copy;
	/* glibc's names for the program point into argv[0]: keep them. */
	program_invocation_name = copy[0];
	if ((program_invocation_short_name = strrchr(copy[0], '/')) != NULL)
		program_invocation_short_name++;
	else
		program_invocation_short_name = copy[0];
	pt_area = argv[0];
	pt_size = (size_t)(end - argv[0]);
	argv[1] = NULL;		/* for anyone who still walks the old argv */
	return copy;
}

void
proctitle_set(const char *comm, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (comm != NULL)
		prctl(PR_SET_NAME, comm, 0, 0, 0);
	if (pt_size < 2)
		return;
	va_start(ap, fmt);
	n = vsnprintf(pt_area, pt_size, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n < pt_size)
		memset(pt_area + n, '\0', pt_size - (size_t)n);
}

const char *
proctitle_cmdline(void)
{
	return pt_cmdline != NULL ? pt_cmdline : "";
}
