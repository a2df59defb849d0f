/*
 * What a config needs from the machine it runs on, checked the way
 * `nginx -t` does: the user the workers switch to exists, the pid file
 * can be written, the log files can be opened for append.  A file that is
 * valid YAML but fails one of these would otherwise pass `agate -t` and
 * then stop agate at start (or a reload's workers, with exit 2) -- so
 * `agate -t`, start-up and every reload run these checks, and report
 * them like any config error, at the key's position.
 *
 * Nothing is left behind: an existing file is opened for append and
 * closed; a missing one is not created, its folder is checked instead.
 * The checks run as whoever runs agate (root under systemd), which is
 * also who opens the files: workers give up root only after that.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/config/config.h"

static int
env_error(const struct config *cfg, struct config_pos pos, char *err,
    size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int
env_error(const struct config *cfg, struct config_pos pos, char *err,
    size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(err, errlen, "%s:%d:%d: ", cfg->file, pos.line, pos.col);
	if (n < 0 || (size_t)n >= errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Whether files can be made in path's folder: 0, or -1 with the folder
 * in dir and why not in why ("folder DIR WHY" reads as a sentence).
 */
static int
env_folder(const char *path, char *dir, size_t dirlen, char *why,
    size_t whylen)
{
	char copy[PATH_MAX];
	struct stat st;

	snprintf(copy, sizeof(copy), "%s", path);
	snprintf(dir, dirlen, "%s", dirname(copy));
	if (stat(dir, &st) == -1) {
		snprintf(why, whylen, errno == ENOENT ? "does not exist" :
		    "cannot be reached (%s)", strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(why, whylen, "is not a folder");
		return -1;
	}
	/* EROFS too: under systemd's ProtectSystem, /etc and /usr. */
	if (access(dir, W_OK | X_OK) == -1) {
		snprintf(why, whylen, "cannot be written (%s)",
		    strerror(errno));
		return -1;
	}
	return 0;
}

static int
env_user(const struct config *cfg, char *err, size_t errlen)
{
	const struct server_sect *s = &cfg->server;

	errno = 0;
	if (s->user == NULL || getpwnam(s->user) != NULL)
		return 0;
	if (errno != 0 && errno != ENOENT && errno != ESRCH)
		return env_error(cfg, s->user_pos, err, errlen, "user: cannot "
		    "look up '%s': %s", s->user, strerror(errno));
	return env_error(cfg, s->user_pos, err, errlen, "user: no such user "
	    "'%s'", s->user);
}

/* The pid file is written as PATH.tmp, then renamed: the folder counts. */
static int
env_pid_file(const struct config *cfg, char *err, size_t errlen)
{
	const struct server_sect *s = &cfg->server;
	char dir[PATH_MAX], why[128];

	if (s->pid_file == NULL ||
	    env_folder(s->pid_file, dir, sizeof(dir), why, sizeof(why)) == 0)
		return 0;
	return env_error(cfg, s->pid_file_pos, err, errlen, "pid_file: cannot "
	    "write %s: folder %s %s", s->pid_file, dir, why);
}

/* A log file as agate opens it: O_APPEND, created when missing. */
static int
env_log(const struct config *cfg, const char *key, const char *path,
    struct config_pos pos, char *err, size_t errlen)
{
	char dir[PATH_MAX], why[128];
	struct stat st;
	int fd;

	if (stat(path, &st) == -1) {
		if (errno != ENOENT)
			return env_error(cfg, pos, err, errlen, "%s: cannot "
			    "open %s: %s", key, path, strerror(errno));
		if (env_folder(path, dir, sizeof(dir), why, sizeof(why)) == -1)
			return env_error(cfg, pos, err, errlen, "%s: cannot "
			    "create %s: folder %s %s", key, path, dir, why);
		return 0;
	}
	if (S_ISDIR(st.st_mode))
		return env_error(cfg, pos, err, errlen, "%s: %s is a folder",
		    key, path);
	/* A FIFO without a reader would block or fail here; agate opens
	 * it once someone reads, so only regular files are tried. */
	if (!S_ISREG(st.st_mode))
		return 0;
	if ((fd = open(path, O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC))
	    == -1)
		return env_error(cfg, pos, err, errlen, "%s: cannot open %s "
		    "for append: %s", key, path, strerror(errno));
	close(fd);
	return 0;
}

int
config_env_check(const struct config *cfg, char *err, size_t errlen)
{
	if (env_user(cfg, err, errlen) == -1 ||
	    env_pid_file(cfg, err, errlen) == -1)
		return -1;
	if (cfg->log_error != NULL && env_log(cfg, "log.error",
	    cfg->log_error, cfg->log_error_pos, err, errlen) == -1)
		return -1;
	if (cfg->log_access == ACCESS_FILE && env_log(cfg, "log.access",
	    cfg->log_access_file, cfg->log_access_pos, err, errlen) == -1)
		return -1;
	return 0;
}
