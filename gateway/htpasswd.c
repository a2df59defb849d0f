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

#include "gateway/htpasswd.h"

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

struct htpasswd *
htpasswd_load(const char *path, struct arena *a, char *err, size_t errlen)
{
	struct htpasswd_user *users = NULL, *grown;
	struct htpasswd *t = NULL;
	size_t n = 0, cap = 0, len = 0, i;
	char *line = NULL;
	ssize_t got;
	int lineno = 0;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s:1:1: cannot read: %s", path,
		    strerror(errno));
		return NULL;
	}
	while ((got = getline(&line, &len, f)) != -1) {
		char *p = line;

		lineno++;
		while (got > 0 && (line[got - 1] == '\n' ||
		    line[got - 1] == '\r' || line[got - 1] == ' '))
			line[--got] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((grown = realloc(users, cap * sizeof(*users))) ==
			    NULL) {
				snprintf(err, errlen, "%s:%d:1: out of memory",
				    path, lineno);
				goto done;
			}
			users = grown;
		}
		if (parse_line(path, lineno, p, a, &users[n], err, errlen) ==
		    -1)
			goto done;
		n++;
	}
	if (n == 0) {
		snprintf(err, errlen, "%s:1:1: no users (lines of user:hash)",
		    path);
		goto done;
	}
	qsort(users, n, sizeof(*users), user_cmp);
	for (i = 1; i < n; i++)
		if (strcmp(users[i - 1].name, users[i].name) == 0) {
			snprintf(err, errlen, "%s:%d:1: user '%s' is listed "
			    "twice (also on line %d)", path, users[i].line,
			    users[i].name, users[i - 1].line);
			goto done;
		}
	if ((t = arena_alloc(a, sizeof(*t))) == NULL ||
	    (t->users = arena_alloc(a, n * sizeof(*users))) == NULL) {
		snprintf(err, errlen, "%s:1:1: out of memory", path);
		t = NULL;
		goto done;
	}
	memcpy(t->users, users, n * sizeof(*users));
	t->n = n;
done:
	free(users);
	free(line);
	fclose(f);
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
