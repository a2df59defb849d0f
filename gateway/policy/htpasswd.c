/*
 * htpasswd files for basic auth: read at config load (so a HUP re-reads
 * them, and a bad file keeps the old config serving), checked line by
 * line, kept sorted by user for lookups.  Only slow, salted hashes are
 * accepted: bcrypt ($2a$ $2b$ $2y$), sha-crypt ($5$ $6$) and yescrypt
 * ($y$).  Plain text, Apache's $apr1$ MD5, {SHA} and DES are refused with
 * the line that has them.
 */
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/policy/htpasswd.h"
#include "lib/lines.h"

#define HTPASSWD_MAX	(64 * 1024 * 1024)

struct hash_kind {
	const char	*prefix;
	const char	*name;
	size_t		 digest;	/* chars after the last '$' */
};

static const struct hash_kind kinds[] = {
	{ "$2y$", "bcrypt", 53 },	/* 22 of salt, then 31 of hash */
	{ "$2b$", "bcrypt", 53 },
	{ "$2a$", "bcrypt", 53 },
	{ "$5$", "sha256-crypt", 43 },
	{ "$6$", "sha512-crypt", 86 },
	{ "$y$", "yescrypt", 43 },
	{ NULL, NULL, 0 }
};

const char *
htpasswd_hash_kind(const char *hash)
{
	const struct hash_kind *k;
	const char *last;
	int st;

	for (k = kinds; k->prefix != NULL; k++)
		if (strncmp(hash, k->prefix, strlen(k->prefix)) == 0)
			break;
	if (k->prefix == NULL || (last = strrchr(hash, '$')) == NULL ||
	    strlen(last + 1) != k->digest)
		return NULL;
	st = crypt_checksalt(hash);
	if (st == CRYPT_SALT_INVALID || st == CRYPT_SALT_METHOD_DISABLED)
		return NULL;
	return k->name;
}

static int
user_cmp(const void *a, const void *b)
{
	const struct htpasswd_user *x = a, *y = b;

	return strcmp(x->name, y->name);
}

/* Parses one non-comment line.  Returns 0, or -1 with err set. */
static int
parse_line(const char *path, int lineno, char *line, struct arena *a,
    struct htpasswd_user *u, char *err, size_t errlen)
{
	char *colon = strchr(line, ':'), *hash, *end;

	if (colon == NULL || colon == line) {
		snprintf(err, errlen, "%s:%d:1: expected user:hash", path,
		    lineno);
		return -1;
	}
	*colon = '\0';
	hash = colon + 1;
	/* Apache allows a trailing ":comment"; a hash has no ':'. */
	if ((end = strchr(hash, ':')) != NULL)
		*end = '\0';
	if (htpasswd_hash_kind(hash) == NULL) {
		snprintf(err, errlen, "%s:%d:%d: user '%s': %s; use bcrypt "
		    "($2y$, htpasswd -B), sha-crypt ($5$, $6$) or yescrypt "
		    "($y$)", path, lineno, (int)(hash - line) + 1, line,
		    *hash == '\0' ? "no password hash" :
		    strncmp(hash, "$apr1$", 6) == 0 ? "Apache MD5 ($apr1$) is "
		    "too weak" : strncmp(hash, "{SHA}", 5) == 0 ? "{SHA} is "
		    "unsalted and too weak" : hash[0] == '$' ?
		    "unsupported or malformed hash" :
		    "plain-text or DES passwords are not accepted");
		return -1;
	}
	u->name = arena_strdup(a, line);
	u->hash = arena_strdup(a, hash);
	u->line = lineno;
	if (u->name == NULL || u->hash == NULL) {
		snprintf(err, errlen, "%s:%d:1: out of memory", path, lineno);
		return -1;
	}
	return 0;
}

struct reading {
	const char		*path;
	struct arena		*arena;
	struct htpasswd_user	*users;
	size_t			 n, cap;
	char			*err;
	size_t			 errlen;
};

static int
read_user(void *arg, int lineno, int col, char *line)
{
	struct reading *rd = arg;
	struct htpasswd_user *grown;

	if (rd->n == rd->cap) {
		rd->cap = rd->cap ? rd->cap * 2 : 16;
		if ((grown = realloc(rd->users, rd->cap * sizeof(*grown))) ==
		    NULL) {
			snprintf(rd->err, rd->errlen, "%s:%d:1: out of memory",
			    rd->path, lineno);
			return -1;
		}
		rd->users = grown;
	}
	if (parse_line(rd->path, lineno, line, rd->arena, &rd->users[rd->n],
	    rd->err, rd->errlen) == -1)
		return -1;
	rd->n++;
	return 0;
}

struct htpasswd *
htpasswd_load(const char *path, struct arena *a, char *err, size_t errlen)
{
	struct reading rd = { path, a, NULL, 0, 0, err, errlen };
	struct htpasswd *t = NULL;
	size_t i;

	if (lines_read(path, read_user, &rd, err, errlen) == -1)
		goto done;
	if (rd.n == 0) {
		snprintf(err, errlen, "%s:1:1: no users (lines of user:hash)",
		    path);
		goto done;
	}
	qsort(rd.users, rd.n, sizeof(*rd.users), user_cmp);
	for (i = 1; i < rd.n; i++)
		if (strcmp(rd.users[i - 1].name, rd.users[i].name) == 0) {
			snprintf(err, errlen, "%s:%d:1: user '%s' is listed "
			    "twice (also on line %d)", path, rd.users[i].line,
			    rd.users[i].name, rd.users[i - 1].line);
			goto done;
		}
	if ((t = arena_alloc(a, sizeof(*t))) == NULL ||
	    (t->users = arena_alloc(a, rd.n * sizeof(*rd.users))) == NULL) {
		snprintf(err, errlen, "%s:1:1: out of memory", path);
		t = NULL;
		goto done;
	}
	memcpy(t->users, rd.users, rd.n * sizeof(*rd.users));
	t->n = rd.n;
done:
	free(rd.users);
	return t;
}

const struct htpasswd_user *
htpasswd_find(const struct htpasswd *t, const char *user, size_t len)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const char *name = t->users[mid].name;
		int c = strncmp(name, user, len);

		if (c == 0 && name[len] != '\0')
			c = 1;
		if (c == 0)
			return &t->users[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}
