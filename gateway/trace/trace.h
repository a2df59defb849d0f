/*
 * Distributed tracing: W3C Trace Context in and out, OpenTelemetry spans
 * out.
 *
 *   traceparent.c  the traceparent field: parse and format (pure)
 *   span.c         ids, the request's context, span records (compact,
 *                  appended to a bounded queue on the hot path)
 *   export.c       the queue, batched as OTLP/HTTP JSON and POSTed to
 *                  tracing.otlp through the worker's libcurl multi
 *
 * A request's context lives in its struct req_trace (worker/http.h), so
 * that the access log can print its trace id without knowing this
 * folder.  Spans are recorded only for sampled requests and only when
 * there is somewhere to send them (tracing.otlp).
 */
#ifndef AGATE_TRACE_H
#define AGATE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/config/config.h"
#include "gateway/trace/span.h"
#include "worker/http.h"

struct event_base;

/* -- traceparent.c ------------------------------------------------------ */

#define TRACEPARENT_LEN	55	/* version 00: 2+1+32+1+16+1+2 */
#define TRACE_SAMPLED	0x01

/*
 * Parses a traceparent value per W3C Trace Context level 1: lowercase hex
 * only, version not ff, ids not all zero; version 00 is exactly 55
 * characters, a later version may carry more after a '-' at 55.  Returns
 * 0 with the ids and flags, or -1 (the caller starts a new trace).
 */
int	traceparent_parse(const char *s, size_t n, uint8_t trace_id[16],
	    uint8_t parent_id[8], uint8_t *flags);
/* "00-<trace id>-<span id>-<flags>" into out (TRACEPARENT_LEN, no NUL). */
void	traceparent_format(char *out, const uint8_t trace_id[16],
	    const uint8_t span_id[8], uint8_t flags);
/* n bytes as 2n lowercase hex digits (no NUL). */
void	trace_hex(char *out, const uint8_t *p, size_t n);

/* -- span.c ------------------------------------------------------------- */

enum span_kind {
	SPAN_INTERNAL = 1,
	SPAN_SERVER = 2,
	SPAN_CLIENT = 3
};

/* Attribute keys a span may carry (span.c names them). */
enum span_attr {
	SA_METHOD,		/* http.request.method */
	SA_URL_PATH,		/* url.path */
	SA_URL_SCHEME,		/* url.scheme */
	SA_ROUTE,		/* http.route */
	SA_STATUS,		/* http.response.status_code (int) */
	SA_CLIENT,		/* client.address */
	SA_PROTO_VERSION,	/* network.protocol.version */
	SA_USER_AGENT,		/* user_agent.original */
	SA_SERVER_ADDRESS,	/* server.address */
	SA_SERVER_PORT,		/* server.port (int) */
	SA_URL_FULL,		/* url.full */
	SA_RESEND_COUNT,	/* http.request.resend_count (int) */
	SA_UPSTREAM,		/* agate.upstream */
	SA_ERROR_TYPE,		/* error.type */
	SA_REQUEST_ID,		/* agate.request_id */
	SA_JOB_KIND,		/* agate.job.kind */
	SA_JOB_OUTCOME,		/* agate.job.outcome */
	SA_FILL_OUTCOME,	/* agate.cache.fill */
	SA_COUNT
};

enum span_status {
	SPAN_UNSET = 0,
	SPAN_OK = 1,
	SPAN_ERROR = 2
};

/* Per worker: seeds the id generator, starts the exporter.  -1: no
 * memory. */
int	trace_init(struct event_base *, const struct config *);
/* The worker exits: one last flush, then everything let go. */
void	trace_shutdown(void);
/* Whether the config has a tracing: section. */
bool	trace_enabled(void);
/* CLOCK_REALTIME in ns. */
uint64_t trace_now_ns(void);
/* A new non-zero span id. */
void	trace_new_span_id(uint8_t id[8]);
/* A request arrives: its context from traceparent/tracestate, or a new
 * trace sampled at sample_ratio. */
void	trace_begin(struct request *);
/* A request ended: its server span, if sampled. */
void	trace_end(const struct request *);
/* Whether r's spans are recorded (sampled, and an exporter). */
bool	trace_recording(const struct req_trace *);
/* Whether an upstream request's field is one trace_emit() replaces
 * (traceparent, tracestate): the client's are never passed on as well. */
bool	trace_field(const char *name, size_t nlen);
/*
 * r's context for an upstream request: traceparent naming span_id (the
 * try's span) with r's flags, and r's tracestate if it had a valid
 * parent.  Returns 0, or what emit returned (-1).
 */
typedef int (*trace_emit_fn)(void *arg, const char *name, size_t nlen,
    const char *value, size_t vlen);
int	trace_emit(const struct req_trace *, const uint8_t span_id[8],
	    trace_emit_fn emit, void *arg);
/* An offload job done for r: an INTERNAL span "offload <kind>". */
void	trace_job(const struct req_trace *, const char *kind, int status,
	    const char *outcome, uint64_t start_ns);

/*
 * Records a span: span_open() (false: not recorded, the queue is full
 * and the span is counted dropped), the attributes, span_close().
 */
bool	span_open(enum span_kind, const uint8_t trace_id[16],
	    const uint8_t span_id[8], const uint8_t parent_id[8],
	    uint64_t start_ns, uint64_t end_ns, const char *name, size_t nlen);
void	span_str(enum span_attr, const char *v, size_t n);
/* The same for the concatenation of two strings. */
void	span_str2(enum span_attr, const char *v1, size_t n1,
	    const char *v2, size_t n2);
void	span_int(enum span_attr, int64_t v);
void	span_close(enum span_status);
/* The attribute's key and whether it is an integer. */
const char *span_attr_key(enum span_attr, bool *is_int);

/* -- export.c ----------------------------------------------------------- */

/* Room for n more bytes of span records: false (counted dropped) when
 * the queue is at its cap. */
struct buf *export_queue(void);
bool	export_room(size_t bytes);
/* A span was put on the queue. */
void	export_queued(void);
void	export_dropped(uint64_t n);
int	export_init(struct event_base *, const struct config *);
void	export_shutdown(void);

#endif
