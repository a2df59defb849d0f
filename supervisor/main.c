/*
 * agate's command line: run in the foreground (-c FILE), test a config
 * (-t), signal a running agate through its pid file or ask it how it is
 * through its admin listener (-s), print the
 * version (-V, --version) or the usage (-h, --help).  A usage error
 * exits 1, like an invalid config: both mean "nothing was done".
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef AGATE_TEST_BUILD
#include "tests/testbuild.h"
#endif
#include "gateway/config/config.h"
#include "lib/log.h"
#include "lib/proctitle.h"
#include "supervisor/supervisor.h"

#ifndef AGATE_CONF_PATH
#define AGATE_CONF_PATH "/etc/agate/agate.yaml"
#endif

static const struct {
	const char	*name;
	int		 sig;
} commands[] = {
	{ "reload", SIGHUP },
	{ "stop", SIGTERM },
	{ "quit", SIGQUIT },
	{ "reopen", SIGUSR1 },
};

static const struct option long_options[] = {
	{ "help",	no_argument,	NULL,	'h' },
	{ "version",	no_argument,	NULL,	'V' },
	{ NULL,		0,		NULL,	0 }
};

static void __attribute__((noreturn))
usage(int code)
{
	fprintf(code ? stderr : stdout,
	    "usage: agate [-c FILE] [-t | -s reload|stop|quit|reopen|status]\n"
	    "       agate -V | --version\n"
	    "       agate -h | --help\n"
	    "  -c FILE  config file (default %s)\n"
	    "  -t       check the config and exit 0 if it is valid, 1 if not\n"
	    "  -s CMD   signal the running agate named by the config's "
	    "pid_file;\n"
	    "           -s status prints its workers' numbers from the "
	    "config's\n"
	    "           admin.listen (GET /status)\n"
	    "  -V       print the version\n"
	    "  -h       print this help\n", AGATE_CONF_PATH);
	exit(code);
}

static int
send_command(const char *path, const char *cmd)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	size_t i;
	pid_t pid;

	if (strcmp(cmd, "status") == 0)
		return statuscmd_run(path);
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(cmd, commands[i].name) == 0)
			break;
	if (i == sizeof(commands) / sizeof(commands[0])) {
		fprintf(stderr, "agate: unknown command '%s' (expected reload, "
		    "stop, quit, reopen or status)\n", cmd);
		return 1;
	}
	if ((cfg = config_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "agate: %s\n", err);
		return 1;
	}
	if (cfg->server.pid_file == NULL) {
		fprintf(stderr, "agate: %s sets no server.pid_file, so there is "
		    "no way to find the running agate\n", path);
		config_free(cfg);
		return 1;
	}
	pid = pidfile_read(cfg->server.pid_file, err, sizeof(err));
	config_free(cfg);
	if (pid == -1) {
		fprintf(stderr, "agate: %s\n", err);
		return 1;
	}
	if (kill(pid, commands[i].sig) == -1) {
		fprintf(stderr, "agate: cannot signal pid %ld: %s\n", (long)pid,
		    strerror(errno));
		return 1;
	}
	return 0;
}

int
main(int argc, char *argv[])
{
	const char *path = AGATE_CONF_PATH, *cmd = NULL;
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	bool test = false;
	int ch;

	/* From here on argv is a copy: the original is the title's room. */
	argv = proctitle_init(argc, argv);
#ifdef AGATE_TEST_BUILD
	testbuild_install();
#endif
	while ((ch = getopt_long(argc, argv, "c:hs:tV", long_options,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 's':
			cmd = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'V':
			printf("agate %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(0);
		default:
			usage(1);
		}
	}
	if (optind != argc)
		usage(1);
	/* -s would signal the running agate and leave the check undone:
	 * whoever asked for both expects a check first, so say no. */
	if (test && cmd != NULL) {
		fprintf(stderr, "agate: -t and -s cannot be used together: "
		    "check the config with -t first, then signal with -s\n");
		return 1;
	}
	if (cmd != NULL)
		return send_command(path, cmd);
	if ((cfg = config_load(path, err, sizeof(err))) == NULL ||
	    config_env_check(cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "agate: %s\n", err);
		config_free(cfg);
		return 1;
	}
	if (test) {
		fprintf(stderr, "agate: %s: the configuration is valid\n", path);
		config_free(cfg);
		return 0;
	}
	return supervisor_run(path, cfg, argv);
}
