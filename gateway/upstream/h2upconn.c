/*
 * Connections of agate's HTTP/2 upstream client (see h2up.h): one TCP
 * connection (upconn.c makes it) and one nghttp2 client session each,
 * listed per server.  A new try takes the first connection that is up
 * or coming up and has room for a stream: the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS, at most STREAMS_MAX of ours; a burst
 * of calls to a cold server shares one connection instead of opening
 * one each.  A connection with no tries waits keepalive_timeout for the
 * next, then says GOAWAY and closes; a GOAWAY from the server, or a
 * worker that drains, lets it finish its tries and close.
 *
 * Flow control is the tries' business (they give window back as their
 * sinks take the bytes); the connection reads what comes, feeds the
 * session, and writes what the session makes, keeping at most OUT_HIGH
 * unwritten so that a server that stops reading stops the session from
 * producing instead of growing a buffer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/upstream/call.h"
#include "gateway/upstream/h2up.h"
#include "gateway/upstream/upconn.h"
#include "lib/log.h"
#include "worker/loopwatch.h"
#include "worker/timer.h"
#include "worker/worker.h"

#define STREAMS_MAX	100		/* per connection, at most */
#define STREAM_WINDOW	(256 * 1024)	/* what one stream may have unread */
#define CONN_WINDOW	(32 * 1024 * 1024)	/* all of them: > 100 x 256k */
#define HEAD_LIST_MAX	(64 * 1024)	/* an answer's header fields */
#define OUT_HIGH	(64 * 1024)
#define READ_SIZE	(64 * 1024)

static char	rbuf[READ_SIZE];	/* one read at a time per worker */

static void	h2upconn_ready(void *, short);
static void	h2upconn_flush(struct h2upconn *);

/* -- life and death ------------------------------------------------------ */

static void
h2upconn_arm(struct h2upconn *hc, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	if (ms == 0)
		evtimer_del(&hc->timer);
	else
		evtimer_add(&hc->timer, &tv);
}

static void
h2upconn_free(struct h2upconn *hc)
{
	if (hc->s != NULL)
		nghttp2_session_del(hc->s);
	buf_free(&hc->out);
	free(hc);
}

/*
 * Closes hc: its tries hear why (see h2up_conn_lost()), the socket
 * closes, and hc is freed once no callback of its is under way.
 */
static void
h2upconn_close(struct h2upconn *hc, enum try_fail why, int status,
    const char *msg, const char *detail)
{
	struct h2up *x;

	if (hc->state == HC_DEAD)
		return;
	hc->state = HC_DEAD;
	TAILQ_REMOVE(&hc->srv->h2conns, hc, link);
	evtimer_del(&hc->timer);
	event_del(&hc->kick);
	/* Each lets go (leaves the list), failing or sent again. */
	while ((x = TAILQ_FIRST(&hc->tries)) != NULL)
		h2up_conn_lost(x, why, status, msg, detail);
	if (hc->uc != NULL)
		upconn_close(hc->uc);
	hc->uc = NULL;
	if (hc->busy == 0)
		h2upconn_free(hc);
}

/* Whatever the tries are told, in the log once per connection. */
static void
h2upconn_lost(struct h2upconn *hc, const char *msg, const char *detail)
{
	log_debug("h2up: connection to %s: %s (%s)", hc->srv->cfg->url, msg,
	    detail);
	h2upconn_close(hc, TRY_RESET, 502, msg, detail);
}

static void
h2upconn_timer_cb_run(evutil_socket_t fd, short what, void *arg)
{
	struct h2upconn *hc = arg;

	(void)fd;
	(void)what;
	if (hc->state == HC_CONNECTING || hc->state == HC_SETTLING) {
		h2upconn_close(hc, TRY_CONNECT, 504, "upstream connect timed "
		    "out", hc->state == HC_CONNECTING ? "connect_timeout" :
		    "no HTTP/2 SETTINGS from the server");
		return;
	}
	/* Idle for keepalive_timeout: goodbye. */
	nghttp2_session_terminate_session(hc->s, NGHTTP2_NO_ERROR);
	hc->state = HC_CLOSING;
	h2upconn_flush(hc);
}

static void
h2upconn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	loopwatch_begin(LW_UPSTREAM_H2);
	h2upconn_timer_cb_run(fd, what, arg);
	loopwatch_end();
}

static void
h2upconn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2upconn *hc = arg;

	(void)fd;
	(void)what;
	loopwatch_begin(LW_UPSTREAM_H2);
	h2upconn_flush(hc);
	loopwatch_end();
}

static struct h2upconn *
h2upconn_new(struct upstream_rt *up, struct server_rt *srv,
    uint64_t connect_ms)
{
	static const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HEAD_LIST_MAX },
	};
	nghttp2_session_callbacks *cb = NULL;
	nghttp2_option *opt = NULL;
	struct h2upconn *hc;

	if ((hc = calloc(1, sizeof(*hc))) == NULL)
		goto fail;
	TAILQ_INIT(&hc->tries);
	if (nghttp2_session_callbacks_new(&cb) != 0 ||
	    nghttp2_option_new(&opt) != 0)
		goto fail;
	h2up_callbacks(cb);
	/* The tries give window back as their sinks take the bytes. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	if (nghttp2_session_client_new2(&hc->s, cb, hc, opt) != 0 ||
	    nghttp2_submit_settings(hc->s, NGHTTP2_FLAG_NONE, iv,
	    sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(hc->s, NGHTTP2_FLAG_NONE, 0,
	    CONN_WINDOW) != 0)
		goto fail;
	if ((hc->uc = upconn_open(up, srv, true)) == NULL)
		goto fail_errno;
	hc->up = up;
	hc->srv = srv;
	hc->state = HC_CONNECTING;
	upconn_own(hc->uc, hc, h2upconn_ready);
	upconn_want_read(hc->uc, true);
	event_assign(&hc->kick, worker.base, -1, 0, h2upconn_kick_cb, hc);
	evtimer_assign(&hc->timer, worker.base, h2upconn_timer_cb, hc);
	h2upconn_arm(hc, connect_ms);
	TAILQ_INSERT_TAIL(&srv->h2conns, hc, link);
	goto done;
fail:
	errno = ENOMEM;
fail_errno:
	if (hc != NULL) {
		int saved = errno;

		h2upconn_free(hc);
		errno = saved;
		hc = NULL;
	}
done:
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	return hc;
}

int
h2upconn_room(struct h2upconn *hc)
{
	uint32_t peer = nghttp2_session_get_remote_settings(hc->s,
	    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

	return peer < STREAMS_MAX ? (int)peer : STREAMS_MAX;
}

struct h2upconn *
h2upconn_get(struct upstream_rt *up, struct server_rt *srv,
    struct h2upconn *avoid)
{
	struct h2upconn *hc;

	TAILQ_FOREACH(hc, &srv->h2conns, link) {
		if (hc == avoid || hc->state > HC_OPEN ||
		    hc->nstreams >= (hc->state == HC_OPEN ? h2upconn_room(hc) :
		    STREAMS_MAX) || !nghttp2_session_check_request_allowed(hc->s))
			continue;
		if (hc->state == HC_OPEN && hc->nstreams == 0)
			h2upconn_arm(hc, 0);	/* no longer idle */
		return hc;
	}
	return h2upconn_new(up, srv, up->cfg->connect_timeout_ms);
}

bool
h2upconn_settled(struct h2upconn *hc)
{
	if (hc->state != HC_SETTLING)
		return false;
	hc->state = HC_OPEN;
	h2upconn_arm(hc, 0);
	if (hc->nstreams == 0) {	/* its tries went elsewhere */
		hc->nstreams++;
		h2upconn_closed(hc);
	}
	return true;
}

void
h2upconn_opened(struct h2upconn *hc)
{
	hc->nstreams++;
}

void
h2upconn_closed(struct h2upconn *hc)
{
	hc->nstreams--;
	if (hc->nstreams > 0 || hc->state != HC_OPEN)
		return;
	if (hc->up->cfg->keepalive == 0 || worker.phase == WP_DRAINING ||
	    hc->srv->state != ADDR_LIVE) {
		nghttp2_session_terminate_session(hc->s, NGHTTP2_NO_ERROR);
		hc->state = HC_CLOSING;
		h2upconn_kick(hc);	/* closes once the GOAWAY is out */
		return;
	}
	h2upconn_arm(hc, hc->up->cfg->keepalive_timeout_ms);
}

void
h2upconn_broken(struct h2upconn *hc, uint32_t code)
{
	if (hc->broken == 0)
		hc->broken = code;
}

void
h2upconn_goaway(struct h2upconn *hc)
{
	if (hc->state == HC_OPEN || hc->state == HC_SETTLING) {
		h2upconn_arm(hc, 0);
		hc->state = HC_CLOSING;
	}
	h2upconn_kick(hc);
}

void
h2upconn_kick(struct h2upconn *hc)
{
	if (hc->state == HC_DEAD || hc->kicked)
		return;
	hc->kicked = true;
	event_active(&hc->kick, 0, 0);
}

void
h2upconn_close_server(struct server_rt *srv)
{
	struct h2upconn *hc;

	/* The worker is going: no call is left to tell. */
	while ((hc = TAILQ_FIRST(&srv->h2conns)) != NULL) {
		TAILQ_INIT(&hc->tries);
		h2upconn_close(hc, TRY_LOCAL, 502, "worker exiting", "");
	}
}

void
h2upconn_drain_server(struct server_rt *srv)
{
	struct h2upconn *hc;

	/* Idle ones say GOAWAY and close now; busy ones take no new stream
	 * and close once theirs are done (h2upconn_flush).  Both close on
	 * the kick, later: the list stays as it is while we walk it. */
	TAILQ_FOREACH(hc, &srv->h2conns, link) {
		if (hc->state == HC_OPEN && hc->nstreams == 0) {
			nghttp2_session_terminate_session(hc->s,
			    NGHTTP2_NO_ERROR);
			hc->state = HC_CLOSING;
			h2upconn_kick(hc);
		} else
			h2upconn_goaway(hc);
	}
}

/* -- input and output ---------------------------------------------------- */

/*
 * Writes what the session has, as the socket takes it; closes hc when
 * the session is over, or when it is closing and its tries are done.
 */
static void
h2upconn_flush(struct h2upconn *hc)
{
	const uint8_t *data;
	ssize_t n;

	hc->kicked = false;
	if (hc->state == HC_DEAD)
		return;
	for (;;) {
		while (buf_pending(&hc->out) < OUT_HIGH) {
			hc->busy++;
			n = nghttp2_session_mem_send(hc->s, &data);
			hc->busy--;
			if (n < 0 || (n > 0 && buf_append(&hc->out, data,
			    (size_t)n) == -1)) {
				h2upconn_close(hc, TRY_LOCAL, 502, "HTTP/2 "
				    "session failed", n < 0 ?
				    nghttp2_strerror((int)n) : "out of memory");
				return;
			}
			if (n == 0)
				break;
		}
		if (hc->state == HC_CONNECTING || buf_pending(&hc->out) == 0)
			break;
		n = upconn_write(hc->uc, buf_head(&hc->out),
		    buf_pending(&hc->out));
		if (n > 0) {
			buf_consume(&hc->out, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			upconn_want_write(hc->uc, true);
			return;
		}
		h2upconn_lost(hc, "upstream closed the connection",
		    strerror(errno));
		return;
	}
	if (hc->state == HC_CONNECTING)
		return;
	upconn_want_write(hc->uc, false);
	buf_trim(&hc->out, 16 * 1024);
	if (hc->broken != 0) {
		/* Its tries' failures are logged (at most 10 a second). */
		log_debug("h2up: %s broke HTTP/2: %s", hc->srv->cfg->url,
		    nghttp2_http2_strerror(hc->broken));
		h2upconn_close(hc, TRY_INVALID, 502, "upstream sent an invalid "
		    "response", nghttp2_http2_strerror(hc->broken));
	} else if (!nghttp2_session_want_read(hc->s) &&
	    !nghttp2_session_want_write(hc->s))
		h2upconn_lost(hc, "upstream closed the connection",
		    "HTTP/2 session over");
	else if (hc->state == HC_CLOSING && hc->nstreams == 0)
		h2upconn_close(hc, TRY_RESET, 502, "upstream closed the "
		    "connection", "GOAWAY");
}

static void
h2upconn_read(struct h2upconn *hc)
{
	ssize_t n, rv;

	n = upconn_read(hc->uc, rbuf, sizeof(rbuf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		h2upconn_lost(hc, "upstream closed the connection", n == 0 ?
		    "end of file" : strerror(errno));
		return;
	}
	hc->busy++;
	rv = nghttp2_session_mem_recv(hc->s, (const uint8_t *)rbuf,
	    (size_t)n);
	hc->busy--;
	if (hc->state == HC_DEAD)
		return;
	if (rv < 0) {
		log_debug("h2up: %s broke HTTP/2: %s", hc->srv->cfg->url,
		    nghttp2_strerror((int)rv));
		/* Say why, if the socket takes it, then close. */
		nghttp2_session_terminate_session(hc->s, rv ==
		    NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM :
		    NGHTTP2_PROTOCOL_ERROR);
		h2upconn_flush(hc);
		h2upconn_close(hc, TRY_INVALID, 502, "upstream sent an invalid "
		    "response", nghttp2_strerror((int)rv));
		return;
	}
	h2upconn_flush(hc);
}

static void
h2upconn_connected(struct h2upconn *hc)
{
	const char *detail;

	if (upconn_connect_error(hc->uc, &detail) != 0) {
		h2upconn_close(hc, TRY_CONNECT, 502, "upstream connection "
		    "failed", detail);
		return;
	}
	/* The connect timeout runs on until the server's SETTINGS come. */
	hc->state = HC_SETTLING;
	h2upconn_flush(hc);
}

static void
h2upconn_ready(void *arg, short what)
{
	struct h2upconn *hc = arg;

	hc->busy++;
	if (hc->state == HC_CONNECTING)
		h2upconn_connected(hc);
	else {
		if (what & EV_WRITE)
			h2upconn_flush(hc);
		if ((what & EV_READ) && hc->state != HC_DEAD)
			h2upconn_read(hc);
	}
	hc->busy--;
	if (hc->state == HC_DEAD && hc->busy == 0)
		h2upconn_free(hc);
}
