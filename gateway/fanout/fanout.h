/*
 * Fan-out routes (`fanout:` in a route): several upstream calls at once
 * for one client request, answered per the route's mode.  See fanout.c
 * and docs/fanout.md.
 */
#ifndef AGATE_FANOUT_H
#define AGATE_FANOUT_H

#include <stdint.h>

#include <jansson.h>

#include "lib/buf.h"
#include "offload/offload.h"
#include "worker/http.h"

/* Starts the calls of r->route's fan-out; answers r eventually. */
void	fanout_start(struct request *);

/* -- fanout_merge.c: the merged answer (a job kind, JOB_JSON_MERGE) ---- */

/* Bodies up to this many bytes in all are merged on the loop. */
#define MERGE_INLINE_MAX	(16 * 1024)

enum merge_kind {
	MERGE_OK,		/* text: the call's body */
	MERGE_ERROR,		/* text: why the call failed; no answer */
	MERGE_STATUS		/* the call answered a non-2xx status; text:
				   its body */
};

/* Appends one call's entry to a merge job's payload. */
int	fanout_merge_add(struct buf *, const char *name, uint32_t kind,
	    uint32_t status, const char *text, size_t len);
/* A body as JSON: parsed if it is JSON, else a string (a new ref). */
json_t	*fanout_merge_body(const char *p, size_t n);
/* The job: entries in, the merged JSON object's text out. */
int	fanout_merge_run(const char *in, size_t n, struct buf *out);
/* Fan-out's job kinds, for offload_add_kinds() (the worker adds them). */
extern const struct job_kind_def fanout_jobs[];

#endif
