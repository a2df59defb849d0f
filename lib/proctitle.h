/*
 * Process titles, as nginx sets them: `ps` and /proc/PID/cmdline show
 * "agate: supervisor ...", "agate: worker 0 (generation 3)", "agate:
 * helper 0 of worker 0" instead of the same command line three times.
 */
#ifndef AGATE_PROCTITLE_H
#define AGATE_PROCTITLE_H

/*
 * Call first thing in main().  Moves the environment strings out of the
 * way, so that argv's strings and theirs form one area a title can be
 * written over, and returns a copy of argv for the program to use
 * (getopt, the command line of a binary upgrade): the original strings
 * are overwritten by the first proctitle_set().  On failure titles are
 * off and argv itself comes back.
 */
char	**proctitle_init(int argc, char **argv);
/*
 * Sets the title (cut to the area's size) and the 15-byte name the
 * kernel keeps (comm: top, ps -C, pgrep).  comm NULL leaves that alone.
 */
void	proctitle_set(const char *comm, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* The command line proctitle_init() saw, joined by spaces ("" before). */
const char *proctitle_cmdline(void);

#endif
