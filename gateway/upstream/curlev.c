/*
 * libcurl's multi_socket API on libevent.  libcurl says which sockets it
 * wants watched and for what; each gets one persistent event, changed only
 * when what libcurl wants changes.  libcurl's timer becomes one libevent
 * timer; per curl's rules the timer callback only arms it, never calls
 * back into libcurl.  After every socket_action the finished transfers
 * are collected and their jobs told.
 */
#include <stdlib.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "gateway/config/config.h"
#include "gateway/upstream/curlev.h"
#include "lib/log.h"
#include "worker/loopwatch.h"

struct csock {
	struct event	 ev;
	short		 flags;		/* what ev watches; 0: not added */
	struct csock	*next_free;
};

static CURLM		*multi;
static struct event_base *cv_base;
static struct event	 cv_timer;
static struct csock	*csock_pool;

static void
curlev_check_done(void)
{
	struct curl_job *job;
	CURLMsg *msg;
	CURLcode rc;
	int left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg is gone once the handle is removed: copy first. */
		rc = msg->data.result;
		job = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &job);
		if (job == NULL) {
			log_warnx("curlev: a finished transfer has no job");
			curlev_remove(msg->easy_handle);
			continue;
		}
		job->done(job, rc);
	}
}

static void
curlev_event_cb(evutil_socket_t fd, short what, void *arg)
{
	int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
	    ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running;

	loopwatch_begin(LW_CURL_SOCKET);
	curl_multi_socket_action(multi, fd, action, &running);
	curlev_check_done();
	loopwatch_end();
}

static void
curlev_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	int running;

	loopwatch_begin(LW_CURL_TIMER);
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	curlev_check_done();
	loopwatch_end();
}

static int
curlev_timer_fn(CURLM *m, long ms, void *userp)
{
	struct timeval tv;

	if (ms < 0) {
		evtimer_del(&cv_timer);
		return 0;
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(&cv_timer, &tv);
	return 0;
}

static int
curlev_socket_fn(CURL *e, curl_socket_t s, int what, void *userp,
    void *sockp)
{
	struct csock *cs = sockp;
	short want;

	if (what == CURL_POLL_REMOVE) {
		if (cs != NULL) {
			if (cs->flags)
				event_del(&cs->ev);
			cs->next_free = csock_pool;
			csock_pool = cs;
			curl_multi_assign(multi, s, NULL);
		}
		return 0;
	}
	if (cs == NULL) {
		if ((cs = csock_pool) != NULL)
			csock_pool = cs->next_free;
		else if ((cs = malloc(sizeof(*cs))) == NULL)
			return -1;
		cs->flags = 0;
		curl_multi_assign(multi, s, cs);
	}
	want = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
	    ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
	if (cs->flags != want) {
		if (cs->flags)
			event_del(&cs->ev);
		event_assign(&cs->ev, cv_base, s, want, curlev_event_cb, cs);
		event_add(&cs->ev, NULL);
		cs->flags = want;
	}
	return 0;
}

int
curlev_init(struct event_base *base, long maxconnects)
{
	cv_base = base;
	if ((multi = curl_multi_init()) == NULL)
		return -1;
	evtimer_assign(&cv_timer, base, curlev_timer_cb, NULL);
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, curlev_socket_fn);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, curlev_timer_fn);
	/*
	 * The default cache is 4 x the handles in use, so a dip in load
	 * closed thousands of pooled connections a second: size it from
	 * the upstreams' keepalive settings instead.
	 */
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, maxconnects);
	return 0;
}

void
curlev_free(void)
{
	struct csock *cs;

	if (multi != NULL)
		curl_multi_cleanup(multi);
	multi = NULL;
	evtimer_del(&cv_timer);
	while ((cs = csock_pool) != NULL) {
		csock_pool = cs->next_free;
		free(cs);
	}
}

int
curlev_add(CURL *e, struct curl_job *job)
{
	curl_easy_setopt(e, CURLOPT_PRIVATE, job);
	return curl_multi_add_handle(multi, e) == CURLM_OK ? 0 : -1;
}

void
curlev_remove(CURL *e)
{
	curl_multi_remove_handle(multi, e);
}

void
curlev_tls(CURL *e, const struct upstream_cfg *u,
    const struct server_cfg *srv)
{
	if (!srv->https)
		return;
	if (u->tls_ca != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, u->tls_ca);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, u->tls_verify ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, u->tls_verify ? 2L : 0L);
	if (u->tls_cert_pem != NULL) {
		/* The PEM text read at load (upcert.c), not the files: what
		 * the config checked is what is sent.  NOCOPY: the config
		 * outlives every transfer of the worker. */
		struct curl_blob cert = { u->tls_cert_pem, u->tls_cert_len,
		    CURL_BLOB_NOCOPY };
		struct curl_blob key = { u->tls_key_pem, u->tls_key_len,
		    CURL_BLOB_NOCOPY };

		curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cert);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &key);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
}

void
curlev_upstream(CURL *e, const struct upstream_cfg *u,
    const struct server_cfg *srv)
{
	/* Only the configured servers: never http_proxy & co from the
	 * environment. */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	/* HTTP/2 to https servers that offer it through ALPN (and several
	 * requests on one connection), and to h2c:// ones with prior
	 * knowledge; HTTP/1.1 otherwise. */
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, srv->h2c ?
	    CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE : srv->https ?
	    CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1);
	/* Debian 12's libcurl (7.88.1) breaks the second request on an
	 * h2c prior-knowledge connection, after the first or beside it
	 * ("Error in the HTTP2 framing layer"; the curl command line does
	 * the same against nginx): each h2c request gets a connection of
	 * its own, never shared, never kept. */
	if (srv->h2c) {
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	}
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	/* libcurl counts idle time in whole seconds and drops a connection
	 * idle for more than MAXAGE + 1 of them: this keeps its limit at or
	 * under keepalive_timeout (1 s at least). */
	curl_easy_setopt(e, CURLOPT_MAXAGE_CONN,
	    (long)(u->keepalive_timeout_ms >= 2000 ?
	    u->keepalive_timeout_ms / 1000 - 1 : 0));
	curlev_tls(e, u, srv);
}
