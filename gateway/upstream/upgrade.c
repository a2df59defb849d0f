/*
 * Upgrade requests (WebSocket, RFC 6455; others by RFC 9110 section
 * 7.8) on a proxy route: the content handler that checks the handshake,
 * sends it to one upstream server as a call of its own (proxy.c with
 * call_spec.upgrade: no retry, no hedging), checks the server's 101, and
 * hands both connections to the worker's tunnel (req_upgrade()).
 *
 * A WebSocket handshake that could never succeed is refused here with
 * 400 and not forwarded: a missing or malformed Sec-WebSocket-Key, a
 * version other than 13, a method other than GET, a body.  A 101 whose
 * Sec-WebSocket-Accept does not answer the key is the upstream's fault:
 * 502.  Any other answer than 101 goes to the client as it is.
 */
#include <string.h>
#include <strings.h>

#include "gateway/gateway.h"
#include "gateway/upstream/call.h"
#include "lib/log.h"
#include "lib/websocket.h"

/* Whether the comma-separated list v[0..n) has token (any case). */
static bool
list_has(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);
	const char *p = v, *end = v + n;

	while (p < end) {
		const char *t;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		t = p;
		while (p < end && *p != ',' && *p != ' ' && *p != '\t' &&
		    *p != '/')
			p++;
		if ((size_t)(p - t) == tl && strncasecmp(t, token, tl) == 0)
			return true;
		while (p < end && *p != ',')
			p++;		/* a version: "websocket/13" */
	}
	return false;
}

static bool
upgrade_websocket(const struct request *r)
{
	const struct http_header *u = req_header(r, "upgrade");

	return u != NULL && list_has(u->value, u->value_len, "websocket");
}

bool
upgrade_wanted(const struct request *r)
{
	const struct http_header *u = req_header(r, "upgrade");

	/* An HTTP/1.0 request's Upgrade is ignored (RFC 9110 section
	 * 7.8), and one that Connection does not name is not meant.  h2c
	 * is agate's to speak, with prior knowledge only (as nginx): an
	 * Upgrade to it is served as HTTP/1.1. */
	return r->head.minor >= 1 && u != NULL &&
	    headers_connection_lists(&r->head, "upgrade") &&
	    !list_has(u->value, u->value_len, "h2c");
}

/* The single field called name, or NULL if there is none or several. */
static const struct http_header *
one_header(const struct request *r, const char *name)
{
	const struct http_header *f = NULL;
	size_t i;

	for (i = 0; i < r->head.nheaders; i++) {
		const struct http_header *h = &r->head.headers[i];

		if (!http_token_eq(h->name, h->name_len, name))
			continue;
		if (f != NULL)
			return NULL;
		f = h;
	}
	return f;
}

/* Why a WebSocket handshake cannot be passed on, or NULL. */
static const char *
upgrade_ws_refusal(const struct request *r, bool *version)
{
	const struct http_header *k = one_header(r, "sec-websocket-key");
	const struct http_header *v = one_header(r, "sec-websocket-version");

	*version = false;
	if (!http_token_eq(r->head.method, r->head.method_len, "GET"))
		return "a WebSocket handshake must be a GET";
	if (v == NULL || !http_token_eq(v->value, v->value_len, "13")) {
		*version = true;
		return "WebSocket version 13 is the one supported "
		    "(Sec-WebSocket-Version)";
	}
	if (k == NULL || !ws_key_valid(k->value, k->value_len))
		return "Sec-WebSocket-Key is missing or not 16 bytes in base64";
	return NULL;
}

void
upgrade_start(struct request *r)
{
	const char *why = NULL;
	bool version = false;

	if (!r->route->websocket)
		why = "Upgrade requests are not allowed on this route";
	else if (req_has_body(r))
		why = "an Upgrade request cannot carry a body";
	else if (upgrade_websocket(r))
		why = upgrade_ws_refusal(r, &version);
	if (why != NULL) {
		log_debug("upgrade %s: refused: %s", req_peer(r), why);
		req_error(r, 400, why, version ?
		    "Sec-WebSocket-Version: 13\r\n" : NULL);
		return;
	}
	proxy_start_upgrade(r);
}

/* The request's fields, then the two that ask the server to switch. */
int
upgrade_headers(const struct call *c, call_emit_fn emit, void *arg,
    struct buf *scratch)
{
	const struct request *r = c->spec->req;
	const struct http_header *u = req_header(r, "upgrade");

	if (headers_upstream_request(r, emit, arg, scratch) == -1)
		return -1;
	if (emit(arg, "Connection", 10, "upgrade", 7) == -1)
		return -1;
	return emit(arg, "Upgrade", 7, u->value, u->value_len);
}

const char *
upgrade_check_switch(const struct call *c, const char *fields, size_t len)
{
	const struct request *r = c->spec->req;
	const struct http_header *k;
	char want[WS_ACCEPT_LEN + 1];
	const char *v = NULL;
	size_t vlen = 0;

	if (headers_find_field(fields, len, "upgrade", &v, &vlen) == 0)
		return "upstream switched protocols without saying to which "
		    "(no Upgrade)";
	if (!upgrade_websocket(r))
		return NULL;
	if (!list_has(v, vlen, "websocket"))
		return "upstream switched to another protocol than websocket";
	k = one_header(r, "sec-websocket-key");
	if (ws_accept(k->value, k->value_len, want) == -1)
		return "cannot compute Sec-WebSocket-Accept";
	if (headers_find_field(fields, len, "sec-websocket-accept", &v,
	    &vlen) != 1 || vlen != WS_ACCEPT_LEN ||
	    memcmp(v, want, WS_ACCEPT_LEN) != 0)
		return "upstream's Sec-WebSocket-Accept does not match the key";
	return NULL;
}

int
upgrade_switched(struct request *r, const char *fields, size_t fields_len,
    int fd, struct ssl_st *ssl, const char *early, size_t early_len)
{
	const struct http_header *u = req_header(r, "upgrade");
	struct req_upgrade up = {
		.fd = fd,
		.ssl = ssl,
		.early = early,
		.early_len = early_len,
		.websocket = upgrade_websocket(r),
	};
	size_t n = 0;

	/* The log names the protocol: the first token asked for. */
	if (up.websocket) {
		up.protocol = "websocket";
		up.protocol_len = 9;
	} else {
		while (n < u->value_len && u->value[n] != ',' &&
		    u->value[n] != ' ')
			n++;
		up.protocol = u->value;
		up.protocol_len = n;
	}
	return req_upgrade(r, fields, fields_len, &up);
}
