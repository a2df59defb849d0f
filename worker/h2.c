/*
 * HTTP/2 client connections (h2.h), on libnghttp2's session API: the
 * library does the framing, HPACK, flow-control accounting and the
 * protocol's checks; this file owns the connection and the session, and
 * h2_stream.c turns each stream into a request and its answer into
 * frames.
 *
 * Input is read into the worker's scratch buffer and fed to the session
 * (nghttp2_session_mem_recv) a frame at a time (h2_feed).  A stream
 * whose headers are complete becomes a request (h2_request) and goes to
 * the gateway exactly as an HTTP/1.1 request does.  Windows open only as
 * the gateway reads (no automatic WINDOW_UPDATE): a slow upstream holds
 * back its own stream, not the connection.
 *
 * Output: the flush pass (conn.c) asks the session for its frames
 * (nghttp2_session_mem_send) until the connection's output queue is
 * full, so all streams' frames leave in one write.
 *
 * Defences (docs/http2.md): max_concurrent_streams (REFUSED_STREAM, by
 * cb_begin_headers), max_header_list_size (431 on that stream),
 * max_resets_per_second (rapid reset, CVE-2023-44487: GOAWAY
 * ENHANCE_YOUR_CALM), and nghttp2's own limits on queued control frames
 * (SETTINGS and PING floods) and on CONTINUATION frames.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

#include "lib/log.h"
#include "worker/conn.h"
#include "worker/h2.h"
#include "worker/h2_stream.h"
#include "worker/worker.h"

static char	*scratch;

/* -- helpers -------------------------------------------------------------- */

int
h2_preface(const char *p, size_t n)
{
	size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;

	if (memcmp(p, H2_PREFACE, k) != 0)
		return -1;
	return n >= H2_PREFACE_LEN ? 1 : 0;
}

void
h2_kick(struct h2conn *h)
{
	conn_mark_dirty(h->c);
}

/* Whether some stream has answer bytes its window does not let out. */
static bool
h2_held(const struct h2conn *h)
{
	const struct h2stream *st;

	TAILQ_FOREACH(st, &h->streams, link)
		if (buf_pending(&st->out) > 0)
			return true;
	return false;
}

/*
 * The connection's one timer, as for HTTP/1.1: with no stream, the idle
 * timeout from the last byte read; with output waiting (the socket full,
 * or a stream's window shut), idle_timeout from the last byte sent, so
 * a client that stops reading or never opens a window cannot hold the
 * connection; else none (the streams wait on their upstreams, whose
 * timeouts apply).
 */
static void
h2_timer(struct h2conn *h, bool read, bool wrote)
{
	struct conn *c = h->c;
	struct tlist *want = NULL;

	if (h->heading > 0) {
		/* A header block under way: header_timeout from its start,
		 * however slowly its frames come. */
		want = &worker.t_header;
		read = false;
	} else if (buf_pending(&c->out) > 0 || h2_held(h)) {
		want = &worker.t_send;
		if (wrote)
			read = true;	/* progress: start again */
		else
			read = false;
	} else if (h->nstreams == 0)
		want = worker.phase == WP_DRAINING ? &worker.t_grace :
		    &worker.t_idle;
	if (want == NULL)
		tnode_del(&c->timer);
	else if (read || c->timer.list != want)
		tlist_add(want, &c->timer);
}

/* -- session callbacks ---------------------------------------------------- */

static int
cb_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2conn *h = arg;
	struct h2stream *st;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (h->nstreams >= worker.cfg->server.http2.max_concurrent_streams) {
		/* Beyond max_concurrent_streams: REFUSED_STREAM, a stream
		 * error (RFC 9113 5.1.2), so the client may retry it. */
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE,
		    f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
		h->refused = true;
		h2_kick(h);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->h = h;
	st->id = f->hd.stream_id;
	TAILQ_INSERT_TAIL(&h->streams, st, link);
	h->nstreams++;
	h->heading++;
	nghttp2_session_set_stream_user_data(s, st->id, st);
	h2_timer(h, false, false);
	return 0;
}

static int
cb_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags,
    void *arg)
{
	struct h2stream *st;
	size_t max = worker.cfg->server.http2.max_header_list_size;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    (st = nghttp2_session_get_stream_user_data(s,
	    f->hd.stream_id)) == NULL || st->r != NULL)
		return 0;		/* trailers: not kept */
	st->hsize += nlen + vlen + 32;
	if (st->hsize > max || nlen > UINT16_MAX || vlen > UINT16_MAX) {
		/* Answered 431 once the block ends; a block many times the
		 * limit (a CONTINUATION flood) ends the connection. */
		st->too_big = true;
		if (st->hsize > 4 * max)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		return 0;
	}
	if (h2_field(st, name, nlen, value, vlen) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->nfields++;
	return 0;
}

static int
cb_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
    size_t len, void *arg)
{
	struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);

	if (st != NULL && st->xconnect && !st->tun_ended) {
		/* A tunnel's bytes (maybe before its 200): kept until it
		 * reads them, the window open only as it does. */
		if (buf_append(&st->in, (const char *)data, len) == -1)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		st->tun_pull = true;
		return 0;
	}
	if (st == NULL || st->r == NULL || st->r->body_done ||
	    st->r->rejected || st->r->resp_done) {
		nghttp2_session_consume(s, id, len);	/* nobody reads it */
		return 0;
	}
	if (buf_append(&st->in, (const char *)data, len) == -1)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

/* Rapid reset (CVE-2023-44487): more resets a second than allowed
 * ends the connection. */
static int
h2_count_reset(struct h2conn *h)
{
	time_t now = time(NULL);

	if (now != h->reset_sec) {
		h->reset_sec = now;
		h->resets = 0;
	}
	if (++h->resets <= (unsigned)worker.cfg->server.http2.
	    max_resets_per_second)
		return 0;
	log_warnx("h2 %s: more than %d stream resets a second; closing the "
	    "connection (rapid reset)", h->c->peer_str,
	    worker.cfg->server.http2.max_resets_per_second);
	nghttp2_session_terminate_session(h->s, NGHTTP2_ENHANCE_YOUR_CALM);
	return 0;
}

static int
cb_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2conn *h = arg;
	struct h2stream *st;
	bool eos = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

	if (f->hd.type == NGHTTP2_RST_STREAM)
		return h2_count_reset(h);
	if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
		return 0;
	if ((st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id))
	    == NULL)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && st->r == NULL) {
		if (h->goaway) {
			nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE,
			    st->id, NGHTTP2_REFUSED_STREAM);
			return 0;
		}
		h2_request(st, eos);
		return 0;
	}
	if (eos)
		st->in_eof = true;
	if (st->xconnect)
		st->tun_pull = eos || st->tun_pull;
	else
		h2_body_ready(st);
	return 0;
}

static int
cb_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
	struct h2stream *st;

	/* Our answer is whole while the client still sends: stop it
	 * (RFC 9113 section 8.1). */
	if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    (st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id))
	    != NULL && !st->in_eof)
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_NO_ERROR);
	return 0;
}

static int
cb_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
	struct h2conn *h = arg;
	struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);

	if (st == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(s, id, NULL);
	h2_stream_free(st);
	h2_timer(h, false, false);
	return 0;
}

/* -- the connection ----------------------------------------------------------- */

/*
 * How many bytes of p[0..n) take the input to the end of the frame under
 * way (or of the preface), so that a feed can stop there; all n if the
 * frame goes on beyond them.
 */
static size_t
h2_frame_cut(struct h2conn *h, const uint8_t *p, size_t n)
{
	size_t used = 0, k;

	while (used < n) {
		if (h->preface_left > 0) {
			k = h->preface_left < n - used ? h->preface_left :
			    n - used;
			h->preface_left -= k;
			used += k;
			if (h->preface_left == 0)
				return used;
			continue;
		}
		if (h->fhlen < sizeof(h->fhdr)) {
			h->fhdr[h->fhlen++] = p[used++];
			if (h->fhlen < sizeof(h->fhdr))
				continue;
			h->fleft = (size_t)h->fhdr[0] << 16 |
			    (size_t)h->fhdr[1] << 8 | h->fhdr[2];
		} else {
			k = h->fleft < n - used ? h->fleft : n - used;
			h->fleft -= k;
			used += k;
		}
		if (h->fleft == 0) {
			h->fhlen = 0;
			return used;		/* a frame ends here */
		}
	}
	return used;
}

/* Frames from the session into the connection's output queue. */
static int
h2_produce(struct h2conn *h)
{
	struct conn *c = h->c;
	const uint8_t *data;
	ssize_t n;

	while (buf_pending(&c->out) < OUT_HIGH) {
		n = nghttp2_session_mem_send(h->s, &data);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		if (buf_append(&c->out, (const char *)data, (size_t)n) == -1)
			return -1;
	}
	return 0;
}

/* Input to the session, a frame at a time while streams are refused. */
static ssize_t
h2_feed(struct h2conn *h, const char *p, size_t n)
{
	ssize_t rv;
	size_t k;

	while (n > 0) {
		k = h2_frame_cut(h, (const uint8_t *)p, n);
		rv = nghttp2_session_mem_recv(h->s, (const uint8_t *)p, k);
		if (rv < 0)
			return rv;
		p += k;
		n -= k;
		if (h->refused) {
			h->refused = false;
			if (h2_produce(h) == -1)
				return NGHTTP2_ERR_NOMEM;
		}
	}
	return 0;
}

/* The peer broke the rules (or flooded us): a GOAWAY says so, if
 * nghttp2 has not queued one already, then the connection closes. */
static void
h2_broken(struct h2conn *h, ssize_t rv)
{
	struct conn *c = h->c;

	log_debug("h2 %s: %s", c->peer_str, nghttp2_strerror((int)rv));
	nghttp2_session_terminate_session(h->s, rv == NGHTTP2_ERR_FLOODED ?
	    NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
	h2_flush(c);
	conn_fail(c, "HTTP/2 protocol error");
}

static ssize_t
h2_send_unused(nghttp2_session *s, const uint8_t *d, size_t n, int fl,
    void *arg)
{
	return NGHTTP2_ERR_WOULDBLOCK;	/* mem_send only */
}

int
h2_start(struct conn *c, const char *early, size_t n)
{
	const struct http2_cfg *hc = &worker.cfg->server.http2;
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[4];
	struct h2conn *h;
	ssize_t rv;

	if ((scratch == NULL && (scratch = malloc(H2_READ_SIZE)) == NULL) ||
	    (h = calloc(1, sizeof(*h))) == NULL)
		return -1;
	h->c = c;
	h->preface_left = H2_PREFACE_LEN;
	TAILQ_INIT(&h->streams);
	if (nghttp2_session_callbacks_new(&cbs) != 0 ||
	    nghttp2_option_new(&opt) != 0)
		goto fail;
	nghttp2_session_callbacks_set_send_callback(cbs, h2_send_unused);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
	    cb_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
	    cb_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
	    cb_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs,
	    cb_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
	    cb_stream_close);
	/* Windows open as the gateway reads, not as bytes arrive. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
	if (nghttp2_session_server_new2(&h->s, cbs, h, opt) != 0)
		goto fail;
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	cbs = NULL;
	opt = NULL;
	/*
	 * libnghttp2 treats a stream beyond the limit it advertised as a
	 * connection error once the client has acknowledged it (RFC 9113
	 * section 5.1.2 wants a stream error), and a refused stream counts
	 * until its RST_STREAM has gone.  So it advertises one more;
	 * cb_begin_headers refuses every stream beyond the limit with
	 * REFUSED_STREAM, and input is fed a frame at a time so that each
	 * refusal is sent before the next HEADERS is read (h2_feed): never
	 * more than the limit run, and a client that goes over loses
	 * retryable streams, not the connection.
	 */
	iv[0] = (nghttp2_settings_entry){
	    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
	    (uint32_t)hc->max_concurrent_streams + 1 };
	iv[1] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
	    (uint32_t)hc->initial_window_size };
	iv[2] = (nghttp2_settings_entry){
	    NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
	    (uint32_t)hc->max_header_list_size };
	/* WebSocket over HTTP/2: the extended CONNECT (RFC 8441). */
	iv[3] = (nghttp2_settings_entry){
	    NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1 };
	if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, 4) != 0 ||
	    nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0,
	    H2_CONN_WINDOW) != 0)
		goto fail;
	c->h2 = h;
	conn_to_h2(c);
	h2_timer(h, true, false);
	if (n > 0 && (rv = h2_feed(h, early, n)) < 0) {
		h2_broken(h, rv);
		return 0;
	}
	h2_kick(h);
	return 0;
fail:
	if (cbs != NULL)
		nghttp2_session_callbacks_del(cbs);
	if (opt != NULL)
		nghttp2_option_del(opt);
	if (h->s != NULL)
		nghttp2_session_del(h->s);
	free(h);
	return -1;
}

void
h2_readable(struct conn *c)
{
	struct h2conn *h = c->h2;
	ssize_t n, rv;

	if (buf_pending(&c->out) >= OUT_HIGH) {
		conn_stop_reading(c);	/* it reads not what we send */
		return;
	}
	n = conn_recv(c, scratch, H2_READ_SIZE);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_fail(c, n == 0 ? "client closed" : "read error");
		return;
	}
	h2_timer(h, true, false);
	if ((rv = h2_feed(h, scratch, (size_t)n)) < 0) {
		h2_broken(h, rv);
		return;
	}
	h2_tunnels_run(h);
	h2_kick(h);
}

/* Streams whose producer paused: room again. */
static void
h2_wake(struct h2conn *h)
{
	struct h2stream *st, *next;

	for (st = TAILQ_FIRST(&h->streams); st != NULL; st = next) {
		struct request *r = st->r;

		next = TAILQ_NEXT(st, link);
		if (!st->wake)
			continue;
		st->wake = false;
		if (r != NULL && r->resp_paused &&
		    buf_pending(&st->out) < H2_OUT_LOW) {
			r->resp_paused = false;
			if (r->hooks != NULL && r->hooks->writable != NULL)
				r->hooks->writable(r);
		}
	}
}

void
h2_flush(struct conn *c)
{
	struct h2conn *h = c->h2;
	size_t queued;
	bool sent;
	int rc;

	if (h == NULL)
		return;
	if (h2_produce(h) == -1) {
		conn_fail(c, "HTTP/2 session error");
		return;
	}
	queued = buf_pending(&c->out);
	if ((rc = conn_write_out(c)) == -1)
		return;
	sent = buf_pending(&c->out) < queued;
	if (rc == 0 && buf_pending(&c->out) == 0)
		buf_free(&c->out);
	h2_wake(h);
	h2_tunnels_run(h);
	if (!c->reading && buf_pending(&c->out) < OUT_LOW)
		conn_start_reading(c);
	h2_timer(h, false, sent);
	if (!nghttp2_session_want_read(h->s) &&
	    !nghttp2_session_want_write(h->s) && buf_pending(&c->out) == 0)
		conn_fail(c, h->goaway ? "done" : "HTTP/2 session ended");
	else if (h->goaway && h->nstreams == 0 && buf_pending(&c->out) == 0)
		conn_fail(c, "done");
}

void
h2_timeout(struct conn *c)
{
	struct h2conn *h = c->h2;

	if (buf_pending(&c->out) > 0) {
		conn_fail(c, "send timeout");	/* the client reads not */
		return;
	}
	nghttp2_session_terminate_session(h->s, NGHTTP2_NO_ERROR);
	h2_flush(c);
	conn_fail(c, h->heading > 0 ? "header timeout" : "idle timeout");
}

void
h2_drain(struct conn *c)
{
	struct h2conn *h = c->h2;

	if (h == NULL || h->goaway)
		return;
	h->goaway = true;
	nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE,
	    nghttp2_session_get_last_proc_stream_id(h->s), NGHTTP2_NO_ERROR,
	    NULL, 0);
	h2_kick(h);
	h2_timer(h, false, false);
}

void
h2_close(struct conn *c)
{
	struct h2conn *h = c->h2;
	struct h2stream *st;

	if (h == NULL)
		return;
	while ((st = TAILQ_FIRST(&h->streams)) != NULL) {
		nghttp2_session_set_stream_user_data(h->s, st->id, NULL);
		h2_stream_free(st);
	}
	nghttp2_session_del(h->s);
	free(h);
	c->h2 = NULL;
}

bool
h2_has_tunnels(const struct conn *c)
{
	return c->h2 != NULL && c->h2->ntunnels > 0;
}
