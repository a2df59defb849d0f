/*
 * Route matching: the first route, in file order, whose path pattern and
 * method list match.  Patterns were split into segments at load time, so
 * matching walks the request path once per candidate with no allocation.
 * A path that matches some route but none of its methods is a 405 whose
 * Allow lists the methods of every route that matched the path.
 */
#include <string.h>

#include "gateway/gateway.h"
#include "lib/buf.h"

static bool
route_path_match(const struct route_cfg *r, const char *path, size_t len,
    struct route_match *m)
{
	size_t pos = 1, i, end = 1;

	if (len == 0 || path[0] != '/')
		return false;
	m->nparams = 0;
	for (i = 0; i < r->nsegs; i++) {
		const struct route_seg *s = &r->segs[i];
		const char *slash;
		size_t seglen;

		if (pos > len)
			return false;
		slash = memchr(path + pos, '/', len - pos);
		end = slash ? (size_t)(slash - path) : len;
		seglen = end - pos;
		if (s->param) {
			if (seglen == 0 || m->nparams == REQ_MAX_PARAMS)
				return false;
			m->params[m->nparams].name = s->text;
			m->params[m->nparams].value = path + pos;
			m->params[m->nparams].len = seglen;
			m->nparams++;
		} else if (seglen != s->len || memcmp(path + pos, s->text,
		    seglen) != 0)
			return false;
		pos = end + 1;
	}
	if (r->prefix)
		return r->nsegs == 0 || (end < len && path[end] == '/');
	return r->nsegs == 0 ? len == 1 : end == len;
}

static bool
route_method_match(const struct route_cfg *r, const char *m, size_t mlen)
{
	size_t i;

	if (r->methods == NULL)
		return true;
	for (i = 0; i < r->nmethods; i++) {
		const char *rm = r->methods[i];

		if (strlen(rm) == mlen && memcmp(rm, m, mlen) == 0)
			return true;
		/* GET admits HEAD, as everywhere on the web. */
		if (mlen == 4 && memcmp(m, "HEAD", 4) == 0 &&
		    strcmp(rm, "GET") == 0)
			return true;
	}
	return false;
}

static void
allow_one(char *allow, size_t size, const char *meth)
{
	size_t ml = strlen(meth), n = strlen(allow);
	const char *p = allow;

	while ((p = strstr(p, meth)) != NULL) {
		if ((p == allow || p[-1] == ' ') &&
		    (p[ml] == ',' || p[ml] == '\0'))
			return;			/* listed already */
		p += ml;
	}
	if (n + ml + 3 >= size)
		return;
	if (n > 0) {
		memcpy(allow + n, ", ", 2);
		n += 2;
	}
	memcpy(allow + n, meth, ml + 1);
}

/* Adds a route's methods to an Allow list; GET brings HEAD along. */
static void
allow_add(char *allow, size_t size, const struct route_cfg *r)
{
	size_t i;

	for (i = 0; i < r->nmethods; i++) {
		allow_one(allow, size, r->methods[i]);
		if (strcmp(r->methods[i], "GET") == 0)
			allow_one(allow, size, "HEAD");
	}
}

enum route_result
router_match(const struct config *cfg, const char *path, size_t len,
    const char *method, size_t mlen, struct route_match *m)
{
	bool path_matched = false;
	size_t i;

	m->route = NULL;
	m->allow[0] = '\0';
	for (i = 0; i < cfg->nroutes; i++) {
		const struct route_cfg *r = &cfg->routes[i];

		if (!route_path_match(r, path, len, m))
			continue;
		if (route_method_match(r, method, mlen)) {
			m->route = r;
			return ROUTE_FOUND;
		}
		path_matched = true;
		allow_add(m->allow, sizeof(m->allow), r);
	}
	m->nparams = 0;
	return path_matched ? ROUTE_BAD_METHOD : ROUTE_NOT_FOUND;
}

size_t
router_upstream_path(const struct route_cfg *r, const char *path, size_t len,
    const char **out)
{
	size_t n;

	*out = path;
	if (r->strip_prefix == NULL)
		return len;
	n = strlen(r->strip_prefix);
	/* "/api" off "/api/users" leaves "/users"; off "/api" it leaves "/". */
	if (n > 0 && r->strip_prefix[n - 1] == '/')
		n--;
	if (n > len || memcmp(path, r->strip_prefix, n) != 0)
		return len;
	if (n == len) {
		*out = "/";
		return 1;
	}
	if (path[n] != '/')
		return len;
	*out = path + n;
	return len - n;
}
