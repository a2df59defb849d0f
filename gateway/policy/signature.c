/*
 * Webhook signatures (route `verify_signature`): the sender signs the
 * body with a shared secret, HMAC-SHA256, and sends "sha256=<hex>" in a
 * header (GitHub's X-Hub-Signature-256 convention).  agate reads the
 * whole body (kept, to be sent on afterwards), computes the HMAC (on the
 * loop up to INLINE_MAX, in the offload pool above), compares in constant
 * time and only then lets the request through, body rewound.  A missing,
 * malformed or wrong signature is a 401, and nothing reaches the
 * upstream.  Bodies above the pool's frame size (16 MiB) cannot be
 * verified and get a 413.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "gateway/config/config.h"
#include "gateway/policy/signature.h"
#include "gateway/stage.h"
#include "gateway/trace/trace.h"
#include "lib/encode.h"
#include "lib/log.h"
#include "offload/frame.h"
#include "offload/offload.h"
#include "worker/http.h"
#include "worker/worker.h"

#define INLINE_MAX	SIGNATURE_INLINE_MAX
#define MAC_LEN		32

struct sig_wait {
	struct request	*req;
	struct job	*job;
	unsigned char	 want[MAC_LEN];	/* from the header */
	uint64_t	 start_ns;	/* its job's span, or 0 */
};

static void	sig_body_ready(struct request *);
static void	sig_abort(struct request *);

static const struct req_hooks sig_hooks = { sig_body_ready, NULL, sig_abort };

/* "sha256=<64 hex digits>" into mac. */
bool
signature_parse(const char *v, size_t len, unsigned char mac[MAC_LEN])
{
	size_t i;

	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	if (len != 7 + 2 * MAC_LEN || strncasecmp(v, "sha256=", 7) != 0)
		return false;
	v += 7;
	for (i = 0; i < MAC_LEN; i++) {
		int hi = hex_value(v[2 * i]), lo = hex_value(v[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		mac[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

static size_t
sig_limit(const struct request *r)
{
	uint64_t max = FRAME_MAX - 4 - r->route->verify_signature.secret_len;
	uint64_t cfg = worker.cfg->server.max_body_size;

	return (size_t)(cfg != 0 && cfg < max ? cfg : max);
}

static void
sig_free(struct sig_wait *w)
{
	offload_cancel(w->job);
	free(w);
}

static void
sig_abort(struct request *r)
{
	sig_free(r->gw);
	r->gw = NULL;
	r->hooks = NULL;
}

/* Lets go of the request: r->gw and hooks are cleared. */
static void
sig_detach(struct sig_wait *w)
{
	struct request *r = w->req;

	r->gw = NULL;
	r->hooks = NULL;
	w->job = NULL;
	sig_free(w);
}

static void
sig_verdict(struct sig_wait *w, int status, const char *mac, size_t len)
{
	struct request *r = w->req;
	bool ok = status == JOB_OK && len == MAC_LEN &&
	    CRYPTO_memcmp(mac, w->want, MAC_LEN) == 0;

	sig_detach(w);
	if (status != JOB_OK) {
		log_warnx("signature: the HMAC could not be computed: %s",
		    offload_status_str(status));
		req_error(r, offload_http_status(status), "the signature "
		    "could not be checked", NULL);
		return;
	}
	if (!ok) {
		req_error(r, 401, "the signature does not match the body",
		    NULL);
		return;
	}
	if (!req_body_rewind(r)) {
		req_error(r, 500, "the verified body was not kept", NULL);
		return;
	}
	stage_resume(r, STAGE_NEXT);
}

static void
sig_job_done(void *arg, int status, const char *out, size_t len)
{
	struct sig_wait *w = arg;

	w->job = NULL;
	trace_job(&w->req->trace, "hmac", status, offload_status_str(status),
	    w->start_ns);
	sig_verdict(w, status, out, len);
}

/* The whole body is here: compute its HMAC. */
static void
sig_compute(struct sig_wait *w)
{
	struct request *r = w->req;
	const struct verify_sig_cfg *vs = &r->route->verify_signature;
	uint32_t slen = (uint32_t)vs->secret_len;
	const char *body = r->keep != NULL ? r->keep->data : "";
	size_t blen = r->keep != NULL ? r->keep->len : 0;
	struct iovec iov[3];
	struct buf out = { 0 };
	int st;

	iov[0] = (struct iovec){ &slen, 4 };
	iov[1] = (struct iovec){ vs->secret, vs->secret_len };
	iov[2] = (struct iovec){ (void *)body, blen };
	if (blen > INLINE_MAX) {
		w->start_ns = trace_recording(&r->trace) ? trace_now_ns() : 0;
		if ((w->job = offload_submit(JOB_HMAC, iov, 3, sig_job_done,
		    w)) != NULL)
			return;
		sig_detach(w);
		req_error(r, 503, "too many signature checks waiting", NULL);
		return;
	}
	st = offload_run_inline(JOB_HMAC, iov, 3, &out);
	sig_verdict(w, st, out.data, out.len);
	buf_free(&out);
}

/* Reads on until the body is complete (kept by the request layer). */
static void
sig_read(struct sig_wait *w)
{
	struct request *r = w->req;

	switch (req_read_whole(r)) {
	case REQ_BODY_AGAIN:
		return;			/* body_ready() follows */
	case REQ_BODY_ERROR:
		sig_detach(w);		/* already answered */
		return;
	case REQ_BODY_TOO_BIG:
		sig_detach(w);
		req_error(r, 413, "the body is too large to verify its "
		    "signature", NULL);
		return;
	default:
		sig_compute(w);
	}
}

static void
sig_body_ready(struct request *r)
{
	sig_read(r->gw);
}

static enum stage_result
signature_run(struct request *r)
{
	const struct verify_sig_cfg *vs = &r->route->verify_signature;
	const struct http_header *h = req_header(r, vs->header);
	struct sig_wait *w;
	char msg[160];

	if (h == NULL) {
		snprintf(msg, sizeof(msg), "missing signature header %s",
		    vs->header);
		req_error(r, 401, msg, NULL);
		return STAGE_DONE;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		req_error(r, 503, "out of memory", NULL);
		return STAGE_DONE;
	}
	w->req = r;
	if (!signature_parse(h->value, h->value_len, w->want)) {
		free(w);
		snprintf(msg, sizeof(msg), "%s: expected sha256=<64 hex "
		    "digits>", vs->header);
		req_error(r, 401, msg, NULL);
		return STAGE_DONE;
	}
	if (r->head.content_length > (int64_t)sig_limit(r) ||
	    req_body_keep(r, sig_limit(r)) == -1) {
		free(w);
		req_error(r, 413, "the body is too large to verify its "
		    "signature", NULL);
		return STAGE_DONE;
	}
	r->gw = w;
	r->hooks = &sig_hooks;
	req_continue(r);
	sig_read(w);
	return STAGE_WAIT;
}

static bool
signature_wanted(const struct route_cfg *rt)
{
	return rt->verify_signature.enabled;
}

const struct stage signature_stage = {
	.name = "verify_signature", .wanted = signature_wanted,
	.run = signature_run,
};
