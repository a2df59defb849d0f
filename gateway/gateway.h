/*
 * The gateway: what happens to one parsed request.  The worker calls
 * gateway_init() once its event loop exists and gateway_handle() for each
 * request; everything else in gateway/ hangs off these.
 */
#ifndef AGATE_GATEWAY_H
#define AGATE_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/config/config.h"
#include "lib/buf.h"
#include "worker/http.h"

struct event_base;

struct worker_app;

/* What the supervisor hands each worker: init, handle, tick, shutdown,
 * and the offload job kinds of the gateway (worker/worker.h). */
extern const struct worker_app gateway_app;

int	gateway_init(struct event_base *, const struct config *);
void	gateway_handle(struct request *);
void	gateway_shutdown(void);
/* Every LAG_TICK_MS: publish this worker's gauges to the metrics. */
void	gateway_tick(void);
/* Test builds: a handler for paths under /_agate_test/, or NULL. */
extern bool (*gateway_test_handler)(struct request *);

/* -- admin.c: /metrics, /status and / on the admin listener ------------ */

void	admin_handle(struct request *);

/* -- router.c ---------------------------------------------------------- */

enum route_result {
	ROUTE_FOUND,
	ROUTE_NOT_FOUND,
	ROUTE_BAD_METHOD	/* path matched, method did not: 405 */
};

struct route_match {
	const struct route_cfg	*route;
	struct route_param	 params[REQ_MAX_PARAMS];
	size_t			 nparams;
	char			 allow[256];	/* Allow: for a 405 */
};

/* First route in file order whose path and method match. */
enum route_result router_match(const struct config *, const char *path,
	    size_t path_len, const char *method, size_t method_len,
	    struct route_match *);
/* The path an upstream receives: strip_prefix removed, never empty. */
size_t	router_upstream_path(const struct route_cfg *, const char *path,
	    size_t len, const char **out);

/* -- headers.c --------------------------------------------------------- */

/* Receives one header field for the upstream request. */
typedef int (*header_emit_fn)(void *arg, const char *name, size_t nlen,
    const char *value, size_t vlen);

/*
 * The request headers an upstream receives: the client's end-to-end
 * headers, then X-Forwarded-For/-Proto/-Host and X-Request-Id.  Framing
 * (Host, Content-Length, Transfer-Encoding, Expect) is the transport's.
 * scratch is working space the caller owns (it grows as needed).
 */
int	headers_upstream_request(const struct request *, header_emit_fn,
	    void *arg, struct buf *scratch);
/*
 * Filters an upstream response head (header lines, each ending in CRLF
 * or LF, no status line) into out, for the client: hop-by-hop fields and
 * framing dropped, X-Request-Id replaced by id.  *content_length gets the
 * upstream's Content-Length or -1.  Returns 0, or -1 if the head is not
 * something to pass on (bad bytes in a value, conflicting lengths).
 */
int	headers_upstream_response(const char *raw, size_t len,
	    const char *id, size_t id_len, struct buf *out,
	    int64_t *content_length);
/* True for hop-by-hop fields (RFC 9110 section 7.6.1). */
bool	headers_hop_by_hop(const char *name, size_t len);
/* A gRPC request's grpc-timeout in ms (at least 1), or 0: none or
 * malformed. */
uint64_t headers_grpc_timeout_ms(const struct request *);
/* Whether a Connection field of h lists token (any case). */
bool	headers_connection_lists(const struct http_head *, const char *token);
/* How many fields of a raw head are called name; the first's value. */
size_t	headers_find_field(const char *raw, size_t len, const char *name,
	    const char **value, size_t *vlen);
/*
 * Steps through a raw head one field at a time, for a caller that wants
 * several fields or every field of a name in one pass: the field's name
 * and trimmed value, *raw and *len moved past its line.  Returns 1, 0 at
 * the end or the blank line, -1 at a line that is not a field (no colon,
 * no LF).
 */
int	headers_next_field(const char **raw, size_t *len, const char **name,
	    size_t *nlen, const char **value, size_t *vlen);
/* The same as headers_upstream_response() for a 101: the Upgrade field
 * is kept. */
int	headers_upgrade_response(const char *raw, size_t len, const char *id,
	    size_t id_len, struct buf *out);

#endif
