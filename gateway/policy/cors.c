/*
 * CORS (route `cors: {origins, methods, headers, max_age, credentials}`).
 *
 * A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
 * answered here and never forwarded: 204 with the Access-Control-Allow-*
 * fields when the origin, the method and every requested header are
 * allowed, else 403 with none of them (the browser then refuses the real
 * request).  Any other request from an allowed origin gets
 * Access-Control-Allow-Origin (and -Credentials) on its answer, whoever
 * makes it; a request from another origin is served without them, so the
 * browser keeps the answer from the page.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gateway/config/config.h"
#include "gateway/stage.h"
#include "worker/http.h"

static bool
list_has(char **list, size_t n, const char *v, size_t len, bool nocase)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (strcmp(list[i], "*") == 0)
			return true;
		if (strlen(list[i]) == len && (nocase ?
		    strncasecmp(list[i], v, len) : strncmp(list[i], v, len)) ==
		    0)
			return true;
	}
	return false;
}

/* Every name in a comma-separated Access-Control-Request-Headers. */
static bool
headers_allowed(const struct cors_cfg *c, const char *v, size_t len)
{
	const char *p = v, *end = v + len;

	while (p < end) {
		const char *tok;
		size_t n;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		tok = p;
		while (p < end && *p != ',')
			p++;
		n = (size_t)(p - tok);
		while (n > 0 && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
			n--;
		if (n > 0 && !list_has(c->headers, c->nheaders, tok, n, true))
			return false;
	}
	return true;
}

static void
join(char *out, size_t size, char **list, size_t n)
{
	size_t i, off = 0;

	out[0] = '\0';
	for (i = 0; i < n && off < size; i++)
		off += (size_t)snprintf(out + off, size - off, "%s%s",
		    i ? ", " : "", list[i]);
}

/* Access-Control-Allow-Origin (and -Credentials) for an allowed origin. */
static size_t
allow_origin(const struct cors_cfg *c, const struct http_header *o,
    char *out, size_t size)
{
	bool star = !c->credentials &&
	    list_has(c->origins, c->norigins, "*", 1, false) &&
	    c->norigins == 1;

	if (star)
		return (size_t)snprintf(out, size,
		    "Access-Control-Allow-Origin: *\r\n");
	return (size_t)snprintf(out, size, "Access-Control-Allow-Origin: "
	    "%.*s\r\n%sVary: Origin\r\n", (int)o->value_len, o->value,
	    c->credentials ? "Access-Control-Allow-Credentials: true\r\n" :
	    "");
}

static void
preflight(struct request *r, const struct cors_cfg *c,
    const struct http_header *origin, const struct http_header *method)
{
	const struct http_header *h =
	    req_header(r, "access-control-request-headers");
	char hdrs[1536], methods[512], allowed[512];
	size_t off;

	if (!list_has(c->origins, c->norigins, origin->value,
	    origin->value_len, true) ||
	    !list_has(c->methods, c->nmethods, method->value,
	    method->value_len, false) ||
	    (h != NULL && !headers_allowed(c, h->value, h->value_len))) {
		req_error(r, 403, "CORS preflight refused: origin, method or "
		    "headers not allowed", "Vary: Origin, "
		    "Access-Control-Request-Method, "
		    "Access-Control-Request-Headers\r\n");
		return;
	}
	off = allow_origin(c, origin, hdrs, sizeof(hdrs));
	join(methods, sizeof(methods), c->methods, c->nmethods);
	off += (size_t)snprintf(hdrs + off, sizeof(hdrs) - off,
	    "Access-Control-Allow-Methods: %s\r\n", methods);
	if (h != NULL && h->value_len > 0) {
		/* "*" in the list allows any: name the ones asked for. */
		if (list_has(c->headers, c->nheaders, "*", 1, false))
			snprintf(allowed, sizeof(allowed), "%.*s",
			    (int)h->value_len, h->value);
		else
			join(allowed, sizeof(allowed), c->headers,
			    c->nheaders);
		off += (size_t)snprintf(hdrs + off, sizeof(hdrs) - off,
		    "Access-Control-Allow-Headers: %s\r\n", allowed);
	}
	if (c->max_age_ms > 0)
		off += (size_t)snprintf(hdrs + off, sizeof(hdrs) - off,
		    "Access-Control-Max-Age: %llu\r\n",
		    (unsigned long long)(c->max_age_ms / 1000));
	snprintf(hdrs + off, sizeof(hdrs) - off, "Vary: "
	    "Access-Control-Request-Method, Access-Control-Request-Headers\r\n"
	    "Cache-Control: no-store\r\n");
	req_body_unwanted(r);
	if (req_start_response(r, 204, NULL, 0, hdrs, strlen(hdrs), 0) == 0)
		req_end_response(r);
}

static bool
cors_wanted(const struct route_cfg *rt)
{
	return rt->cors.enabled;
}

static enum stage_result
cors_run(struct request *r)
{
	const struct cors_cfg *c = &r->route->cors;
	const struct http_header *origin = req_header(r, "origin"), *m;

	if (origin == NULL)
		return STAGE_NEXT;		/* not a cross-origin call */
	if (http_token_eq(r->head.method, r->head.method_len, "OPTIONS") &&
	    (m = req_header(r, "access-control-request-method")) != NULL) {
		preflight(r, c, origin, m);
		return STAGE_DONE;
	}
	if (list_has(c->origins, c->norigins, origin->value,
	    origin->value_len, true)) {
		size_t had = r->resp_extra_len, n = allow_origin(c, origin,
		    r->resp_extra + had, sizeof(r->resp_extra) - had);

		/* Cut: better none. */
		r->resp_extra_len = had + n < sizeof(r->resp_extra) ? had + n :
		    had;
	}
	return STAGE_NEXT;
}

const struct stage cors_stage = {
	.name = "cors", .wanted = cors_wanted, .run = cors_run,
};
