/*
 * gzip responses (route `compress: gzip`): a body filter (worker/http.h)
 * between whatever produces a response and the client.
 *
 * Its stage installs it when the route asks and the client's
 * Accept-Encoding allows gzip; nothing is allocated until a response
 * turns out to qualify (compress_want()).  Then:
 * - a body whose Content-Length is known and at most PIECE is gathered
 *   whole, compressed in one job, and sent with a Content-Length;
 * - anything else streams: the head goes at once (chunked), and the body
 *   is compressed in PIECE-sized pieces, one job at a time, each primed
 *   with the 32 KiB before it so the pieces form one deflate stream
 *   (offload.h).  The filter holds at most two pieces of input; beyond
 *   that the producer is paused, as for a slow client.  A stream that
 *   goes quiet (server-sent lines, a slow upstream) is not held back for
 *   a whole piece: what is waiting goes out as a short piece once no
 *   more has come for FLUSH_MS, as nginx's gzip flushes what an
 *   unbuffered upstream sends.
 * Pieces up to INLINE_MAX are compressed on the loop: below that size a
 * round trip through the pool costs the loop about as much as the work
 * (docs/offload.md has the measurement).  A piece the pool cannot take
 * (queue full, helper lost or late) is compressed on the loop too, or,
 * before anything was sent, the response goes out uncompressed: gzip is
 * an optimisation and never costs a response.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "gateway/config/config.h"
#include "gateway/policy/compress.h"
#include "gateway/stage.h"
#include "lib/log.h"
#include "offload/offload.h"
#include "worker/http.h"
#include "worker/loopwatch.h"
#include "worker/worker.h"

#define PIECE		(64 * 1024)
#define FLUSH_MS	10
#define INLINE_MAX	COMPRESS_INLINE_MAX
#define GZIP_HEAD_LEN	10
#define GZIP_TRAILER	8

struct gz {
	struct request		*req;
	struct buf		 in;		/* input not yet compressed */
	struct buf		 dict;		/* the 32 KiB before `in` */
	struct buf		 out;		/* whole mode: the result */
	struct buf		 head;		/* headers for the gzip answer */
	struct buf		 orig;		/* whole mode: headers as given */
	struct job		*job;		/* piece in flight */
	size_t			 piece;		/* its input bytes */
	uint32_t		 crc;
	uint64_t		 total;
	int			 status;	/* whole mode: the held head */
	struct event		 flush_ev;	/* a quiet stream's short piece */
	bool			 flush_armed;
	bool			 whole;
	bool			 ended;		/* the producer is done */
	bool			 final;		/* last piece in flight */
};

static int	gz_start(struct request *, int, const char *, size_t,
		    const char *, size_t, int64_t);
static int	gz_write(struct request *, const char *, size_t);
static void	gz_end(struct request *);
static bool	gz_full(struct request *);
static void	gz_release(struct request *);
static void	gz_abort(struct request *);
static void	gz_next(struct gz *, bool flush);

static const struct req_filter gz_filter = {
	gz_start, gz_write, gz_end, gz_full, gz_release
};

/* Ours once the producer has ended: release() does the cleanup. */
static const struct req_hooks gz_hooks = { NULL, NULL, gz_abort };

static const unsigned char gzip_head[GZIP_HEAD_LEN] = {
	0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3	/* deflate, no mtime, Unix */
};

/* -- deciding ------------------------------------------------------------- */

/* Does an Accept-Encoding value allow gzip (RFC 9110 section 12.5.3)? */
bool
compress_accepts_gzip(const char *v, size_t len)
{
	bool gzip_seen = false, star = false, gzip_ok = false;
	const char *end = v + len, *p = v;

	while (p < end) {
		const char *tok, *q;
		size_t tlen;
		double qv = 1.0;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		tok = p;
		while (p < end && *p != ',' && *p != ';' && *p != ' ' &&
		    *p != '\t')
			p++;
		tlen = (size_t)(p - tok);
		/* Parameters: only q matters. */
		while (p < end && *p != ',') {
			if (*p == ';') {
				q = p + 1;
				while (q < end && (*q == ' ' || *q == '\t'))
					q++;
				if (end - q >= 2 && (q[0] == 'q' ||
				    q[0] == 'Q') && q[1] == '=')
					qv = strtod(q + 2, NULL);
			}
			p++;
		}
		if (tlen == 0)
			continue;
		if ((tlen == 4 && strncasecmp(tok, "gzip", 4) == 0) ||
		    (tlen == 6 && strncasecmp(tok, "x-gzip", 6) == 0)) {
			gzip_seen = true;
			gzip_ok = qv > 0;
		} else if (tlen == 1 && *tok == '*')
			star = qv > 0;
	}
	return gzip_seen ? gzip_ok : star;
}

/* Types worth compressing (Envoy's default list, and all of text/). */
static bool
compressible_type(const char *v, size_t len)
{
	static const char *const types[] = { "application/json",
	    "application/javascript", "application/x-javascript",
	    "application/ecmascript", "application/xml",
	    "application/xhtml+xml", "application/rss+xml",
	    "application/atom+xml", "application/x-ndjson",
	    "application/graphql-response+json", "image/svg+xml", NULL };
	size_t n, i;
	const char *semi = memchr(v, ';', len);

	n = semi != NULL ? (size_t)(semi - v) : len;
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	/* Server-sent events: clients expect them as they are. */
	if (n == 17 && strncasecmp(v, "text/event-stream", 17) == 0)
		return false;
	if (n > 5 && strncasecmp(v, "text/", 5) == 0)
		return true;
	if (n > 5 && (strncasecmp(v + n - 5, "+json", 5) == 0 ||
	    strncasecmp(v + n - 4, "+xml", 4) == 0))
		return true;
	for (i = 0; types[i] != NULL; i++)
		if (strlen(types[i]) == n && strncasecmp(v, types[i], n) == 0)
			return true;
	return false;
}

/* The value of header name in a block of "Name: value\r\n" lines. */
static bool
find_field(const char *h, size_t len, const char *name, const char **val,
    size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *p = h, *end = h + len, *eol, *v;

	for (; p < end; p = eol + 1) {
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		if ((size_t)(eol - p) > nlen && p[nlen] == ':' &&
		    strncasecmp(p, name, nlen) == 0) {
			v = p + nlen + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*val = v;
			*vlen = (size_t)(eol - v);
			while (*vlen > 0 && (v[*vlen - 1] == '\r' ||
			    v[*vlen - 1] == ' '))
				(*vlen)--;
			return true;
		}
	}
	return false;
}

static bool
contains_ci(const char *v, size_t len, const char *needle)
{
	size_t n = strlen(needle), i;

	for (i = 0; i + n <= len; i++)
		if (strncasecmp(v + i, needle, n) == 0)
			return true;
	return false;
}

bool
compress_want(const struct request *r, int status, const char *hdrs,
    size_t hlen, int64_t clen)
{
	const char *v;
	size_t vl;

	if (status < 200 || status == 204 || status == 206 || status == 304)
		return false;
	if (http_token_eq(r->head.method, r->head.method_len, "HEAD"))
		return false;
	if (clen >= 0 && (uint64_t)clen < r->route->compress_min)
		return false;
	if (find_field(hdrs, hlen, "content-encoding", &v, &vl) ||
	    find_field(hdrs, hlen, "content-range", &v, &vl))
		return false;
	if (find_field(hdrs, hlen, "cache-control", &v, &vl) &&
	    contains_ci(v, vl, "no-transform"))
		return false;
	return find_field(hdrs, hlen, "content-type", &v, &vl) &&
	    compressible_type(v, vl);
}

/*
 * The headers of the gzip answer: Content-Encoding added, Vary extended,
 * a strong ETag made weak (the bytes differ now), Accept-Ranges dropped
 * (ranges would count compressed bytes).
 */
static int
gz_headers(struct buf *out, const char *h, size_t len)
{
	const char *p = h, *end = h + len, *eol;
	bool vary = false;
	int rc = 0;

	for (; p < end; p = eol + 1) {
		size_t n;

		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end - 1;
		n = (size_t)(eol + 1 - p);
		if (n > 14 && strncasecmp(p, "accept-ranges:", 14) == 0)
			continue;
		if (n > 5 && strncasecmp(p, "etag:", 5) == 0) {
			const char *v = p + 5;

			while (v < eol && *v == ' ')
				v++;
			if (*v == '"') {
				rc |= buf_append(out, "ETag: W/", 8);
				rc |= buf_append(out, v, (size_t)(eol + 1 - v));
				continue;
			}
		}
		if (n > 5 && strncasecmp(p, "vary:", 5) == 0) {
			vary = true;
			if (!contains_ci(p, n, "accept-encoding") &&
			    !memchr(p + 5, '*', n - 5)) {
				size_t vlen = n;

				while (vlen > 0 && (p[vlen - 1] == '\n' ||
				    p[vlen - 1] == '\r'))
					vlen--;
				rc |= buf_append(out, p, vlen);
				rc |= buf_append(out, ", Accept-Encoding\r\n",
				    19);
				continue;
			}
		}
		rc |= buf_append(out, p, n);
	}
	if (!vary)
		rc |= buf_append(out, "Vary: Accept-Encoding\r\n", 23);
	rc |= buf_append(out, "Content-Encoding: gzip\r\n", 24);
	return rc;
}

/* Installs the gzip filter when the client takes gzip; never refuses. */
static enum stage_result
compress_run(struct request *r)
{
	const struct http_header *ae = req_header(r, "accept-encoding");

	if (ae != NULL && compress_accepts_gzip(ae->value, ae->value_len))
		r->filter = &gz_filter;
	return STAGE_NEXT;
}

static bool
compress_wanted(const struct route_cfg *rt)
{
	return rt->compress_gzip;
}

const struct stage compress_stage = {
	.name = "compress", .wanted = compress_wanted, .run = compress_run,
};

/* -- the filter ------------------------------------------------------------ */

static void
gz_free(struct gz *z)
{
	if (z->flush_armed)
		evtimer_del(&z->flush_ev);
	offload_cancel(z->job);
	buf_free(&z->in);
	buf_free(&z->dict);
	buf_free(&z->out);
	buf_free(&z->head);
	buf_free(&z->orig);
	free(z);
}

static void
gz_release(struct request *r)
{
	gz_free(r->filter_state);
	r->filter_state = NULL;
}

static void
gz_abort(struct request *r)
{
}

/* Ends the response, and the filter with it. */
static void
gz_finish(struct gz *z, bool ok)
{
	struct request *r = z->req;

	gz_free(z);
	r->filter_state = NULL;
	r->filter = NULL;
	if (ok)
		req_raw_end_response(r);
	else
		req_fail(r, "compression failed");
}

/* Nothing more came for FLUSH_MS: send what waits as a short piece. */
static void
gz_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gz *z = arg;

	loopwatch_begin(LW_TIMER);
	z->flush_armed = false;
	gz_next(z, true);
	loopwatch_end();
}

/* More may come, or not: make sure what waits goes out either way. */
static void
gz_arm_flush(struct gz *z)
{
	struct timeval tv = { 0, FLUSH_MS * 1000 };

	if (z->flush_armed || z->whole || z->ended || z->job != NULL ||
	    buf_pending(&z->in) == 0)
		return;
	z->flush_armed = evtimer_add(&z->flush_ev, &tv) == 0;
}

static int
gz_start(struct request *r, int status, const char *reason,
    size_t reason_len, const char *hdrs, size_t hdrs_len, int64_t clen)
{
	struct gz *z;

	if (!compress_want(r, status, hdrs, hdrs_len, clen) ||
	    (z = calloc(1, sizeof(*z))) == NULL) {
		r->filter = NULL;
		return req_raw_start_response(r, status, reason, reason_len,
		    hdrs, hdrs_len, clen);
	}
	z->req = r;
	r->filter_state = z;
	evtimer_assign(&z->flush_ev, worker.base, gz_flush_cb, z);
	if (gz_headers(&z->head, hdrs, hdrs_len) != 0)
		goto fail;
	if (clen >= 0 && clen <= PIECE) {
		/* Held until the body is compressed: it gets a length.  The
		 * reason phrase is dropped (an upstream's custom phrase is
		 * not worth a copy). */
		z->whole = true;
		z->status = status;
		if (buf_append(&z->orig, hdrs, hdrs_len) != 0 ||
		    buf_reserve(&z->in, (size_t)clen) != 0)
			goto fail;
		r->status = status;
		r->resp_started = true;
		return 0;
	}
	if (req_raw_start_response(r, status, reason, reason_len,
	    z->head.data, z->head.len, -1) == -1)
		return -1;
	return req_raw_write_body(r, (const char *)gzip_head, GZIP_HEAD_LEN);
fail:
	gz_release(r);
	r->filter = NULL;
	return req_raw_start_response(r, status, reason, reason_len, hdrs,
	    hdrs_len, clen);
}

static bool
gz_full(struct request *r)
{
	struct gz *z = r->filter_state;

	return z != NULL && !z->whole && buf_pending(&z->in) >= 2 * PIECE;
}

static int
gz_write(struct request *r, const char *data, size_t len)
{
	struct gz *z = r->filter_state;

	if (z == NULL)
		return req_raw_write_body(r, data, len);
	if (buf_append(&z->in, data, len) != 0)
		return -1;
	if (!z->whole && z->job == NULL && buf_pending(&z->in) >= PIECE)
		gz_next(z, false);
	if (r->filter_state != z)
		return -1;
	gz_arm_flush(z);
	return 0;
}

static void
gz_end(struct request *r)
{
	struct gz *z = r->filter_state;

	if (z == NULL) {
		r->filter = NULL;
		req_raw_end_response(r);
		return;
	}
	z->ended = true;
	r->hooks = &gz_hooks;
	if (z->flush_armed) {
		evtimer_del(&z->flush_ev);
		z->flush_armed = false;
	}
	if (z->job == NULL)
		gz_next(z, false);
}

/* Whole mode, the pool failed: the original, uncompressed. */
static void
gz_send_plain(struct gz *z)
{
	struct request *r = z->req;

	if (req_raw_start_response(r, z->status, NULL, 0, z->orig.data,
	    z->orig.len, (int64_t)buf_pending(&z->in)) == -1 ||
	    req_raw_write_body(r, buf_head(&z->in), buf_pending(&z->in)) == -1) {
		gz_finish(z, false);
		return;
	}
	gz_finish(z, true);
}

static void
gz_whole_done(struct gz *z, const char *out, size_t len)
{
	struct request *r = z->req;
	unsigned char trailer[GZIP_TRAILER];
	uint32_t crc, size = (uint32_t)buf_pending(&z->in);
	int rc = 0;

	memcpy(&crc, out, 4);
	trailer[0] = crc & 0xff;
	trailer[1] = (crc >> 8) & 0xff;
	trailer[2] = (crc >> 16) & 0xff;
	trailer[3] = crc >> 24;
	trailer[4] = size & 0xff;
	trailer[5] = (size >> 8) & 0xff;
	trailer[6] = (size >> 16) & 0xff;
	trailer[7] = size >> 24;
	rc |= req_raw_start_response(r, z->status, NULL, 0, z->head.data,
	    z->head.len, (int64_t)(GZIP_HEAD_LEN + len - 4 + GZIP_TRAILER));
	if (rc == 0)
		rc |= req_raw_write_body(r, (const char *)gzip_head,
		    GZIP_HEAD_LEN);
	if (rc == 0)
		rc |= req_raw_write_body(r, out + 4, len - 4);
	if (rc == 0)
		rc |= req_raw_write_body(r, (const char *)trailer,
		    GZIP_TRAILER);
	gz_finish(z, rc == 0);
}

/* Keeps the last 32 KiB of what has been compressed, for the next piece. */
static int
gz_slide(struct gz *z, const char *p, size_t n)
{
	size_t keep;

	if (n >= GZ_DICT_MAX) {
		buf_reset(&z->dict);
		return buf_append(&z->dict, p + n - GZ_DICT_MAX, GZ_DICT_MAX);
	}
	keep = buf_pending(&z->dict) + n > GZ_DICT_MAX ?
	    GZ_DICT_MAX - n : buf_pending(&z->dict);
	buf_consume(&z->dict, buf_pending(&z->dict) - keep);
	return buf_append(&z->dict, p, n);
}

/*
 * A piece is compressed (out: CRC-32, then deflate bytes).  async: we are
 * in a job's callback, not inside a producer's call.
 */
static void
gz_piece_done(struct gz *z, const char *out, size_t len, bool async)
{
	struct request *r = z->req;
	bool final = z->final;
	uint32_t crc;
	int rc = 0;

	if (z->whole) {
		gz_whole_done(z, out, len);
		return;
	}
	memcpy(&crc, out, 4);
	z->crc = (uint32_t)crc32_combine(z->crc, crc, (z_off_t)z->piece);
	z->total += z->piece;
	rc |= gz_slide(z, buf_head(&z->in), z->piece);
	buf_consume(&z->in, z->piece);
	z->piece = 0;
	if (len > 4)
		rc |= req_raw_write_body(r, out + 4, len - 4);
	if (rc == 0 && final) {
		unsigned char t[GZIP_TRAILER];
		uint32_t size = (uint32_t)z->total;

		for (int i = 0; i < 4; i++) {
			t[i] = (unsigned char)(z->crc >> (8 * i));
			t[4 + i] = (unsigned char)(size >> (8 * i));
		}
		rc |= req_raw_write_body(r, (const char *)t, GZIP_TRAILER);
	}
	if (rc != 0 || final) {
		gz_finish(z, rc == 0);
		return;
	}
	gz_next(z, false);
	if (r->filter_state == z)
		gz_arm_flush(z);
	/* Room again: a producer that paused on us may go on. */
	if (async && r->filter_state == z && r->resp_paused && !z->ended &&
	    !gz_full(r) && !req_output_full(r)) {
		r->resp_paused = false;
		if (r->hooks != NULL && r->hooks->writable != NULL)
			r->hooks->writable(r);
	}
}

static void
gz_piece_result(struct gz *z, int status, const char *out, size_t len,
    bool async)
{
	struct buf res = { 0 };
	struct iovec iov[4];
	uint32_t hdr[2];

	if (status == JOB_OK && len >= 4) {
		gz_piece_done(z, out, len, async);
		return;
	}
	if (z->whole) {
		log_debug("compress: the pool could not take a body (%s); "
		    "sent uncompressed", offload_status_str(status));
		gz_send_plain(z);
		return;
	}
	/* Streaming: the head is out, so this piece is done here. */
	hdr[0] = z->final ? GZ_FINAL : 0;
	hdr[1] = (uint32_t)buf_pending(&z->dict);
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ buf_head(&z->dict), buf_pending(&z->dict) };
	iov[2] = (struct iovec){ buf_head(&z->in), z->piece };
	if (offload_run_inline(JOB_GZIP, iov, 3, &res) != JOB_OK) {
		buf_free(&res);
		gz_finish(z, false);
		return;
	}
	gz_piece_done(z, res.data, res.len, async);
	buf_free(&res);
}

static void
gz_job_done(void *arg, int status, const char *out, size_t len)
{
	struct gz *z = arg;

	z->job = NULL;
	gz_piece_result(z, status, out, len, true);
}

/*
 * Starts the next piece if there is one to start: a full one, the last
 * one, or (flush) whatever waits.
 */
static void
gz_next(struct gz *z, bool flush)
{
	size_t avail = buf_pending(&z->in);
	struct iovec iov[3];
	uint32_t hdr[2];
	struct buf res = { 0 };
	int st;

	if (z->job != NULL || z->final)
		return;
	if (!z->ended && (z->whole || (avail < PIECE && !(flush &&
	    avail > 0))))
		return;
	z->final = z->whole || (z->ended && avail <= PIECE);
	z->piece = z->final || avail < PIECE ? avail : PIECE;
	hdr[0] = z->final ? GZ_FINAL : 0;
	hdr[1] = (uint32_t)buf_pending(&z->dict);
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ buf_head(&z->dict), buf_pending(&z->dict) };
	iov[2] = (struct iovec){ buf_head(&z->in), z->piece };
	if (z->piece > INLINE_MAX) {
		z->job = offload_submit(JOB_GZIP, iov, 3, gz_job_done, z);
		if (z->job != NULL)
			return;
	}
	st = offload_run_inline(JOB_GZIP, iov, 3, &res);
	gz_piece_result(z, st, res.data, res.len, false);
	buf_free(&res);
}
