/*
 * Active health checks (see health.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "gateway/config/shared.h"
#include "gateway/upstream/curlev.h"
#include "gateway/upstream/health.h"
#include "gateway/upstream/upstream.h"
#include "lib/log.h"
#include "worker/loopwatch.h"

struct probe {
	struct curl_job			 job;	/* first: curlev's cookie */
	const struct upstream_cfg	*up;
	size_t				 server;
	struct shared_server		*sh;
	CURL				*easy;
	bool				 busy;
	int				 ok_run;	/* successes in a row */
	int				 fail_run;
	struct event			 timer;
	struct curl_slist		*pin;	/* CONNECT_TO: the address */
	unsigned			 turn;	/* the name's last address */
	char				 url[512];
	char				 errbuf[CURL_ERROR_SIZE];
};

static struct probe	*probes;
static size_t		 nprobes;

static size_t
probe_discard(char *data, size_t size, size_t n, void *arg)
{
	(void)data;
	(void)arg;
	return size * n;
}

static void
probe_arm(struct probe *p, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(&p->timer, &tv);
}

static void
probe_result(struct probe *p, bool ok, const char *why)
{
	const struct health_check_cfg *h = &p->up->health;
	const char *url = p->up->servers[p->server].url;
	bool down = atomic_load(&p->sh->down) != 0;

	if (ok) {
		p->fail_run = 0;
		if (p->ok_run < h->healthy)
			p->ok_run++;
		if (down && p->ok_run >= h->healthy) {
			atomic_store(&p->sh->down, 0);
			log_info("health: upstream %s server %s is up after %d "
			    "good check%s in a row", p->up->name, url,
			    p->ok_run, log_plural(p->ok_run));
		}
		return;
	}
	p->ok_run = 0;
	if (p->fail_run < h->unhealthy)
		p->fail_run++;
	log_debug("health: upstream %s server %s: check failed: %s",
	    p->up->name, url, why);
	if (!down && p->fail_run >= h->unhealthy) {
		atomic_store(&p->sh->down, 1);
		log_warnx("health: upstream %s server %s is down after %d "
		    "failed check%s in a row (last: %s); no requests go to it",
		    p->up->name, url, p->fail_run, log_plural(p->fail_run),
		    why);
	}
}

static void
probe_done(struct curl_job *job, CURLcode rc)
{
	struct probe *p = (struct probe *)job;
	long status = 0;
	char why[CURL_ERROR_SIZE + 32];

	curlev_remove(p->easy);
	p->busy = false;
	curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK)
		snprintf(why, sizeof(why), "%s", p->errbuf[0] ? p->errbuf :
		    curl_easy_strerror(rc));
	else
		snprintf(why, sizeof(why), "status %ld", status);
	probe_result(p, rc == CURLE_OK && status >= 200 && status < 400, why);
}

/*
 * A named server's probe goes to its addresses in turn, one per round,
 * pinned like any request (libcurl never resolves); its result counts
 * for the server, as health is per configured server.  The pin is the
 * probe's own copy: a drained address's slot may be reused meanwhile.
 */
static int
probe_pin(struct probe *p)
{
	struct server_rt *s;

	curl_slist_free_all(p->pin);
	p->pin = NULL;
	if (!p->up->servers[p->server].named)
		return 0;
	s = upstream_next_address(upstream_rt(p->up), p->server, &p->turn);
	if (s == NULL || s->connect_to == NULL)
		return -1;
	p->pin = curl_slist_append(NULL, s->connect_to->data);
	return p->pin != NULL ? 0 : -1;
}

static void
probe_start(struct probe *p)
{
	const struct upstream_cfg *u = p->up;
	CURL *e = p->easy;
	uint64_t ct = u->connect_timeout_ms < u->health.timeout_ms ?
	    u->connect_timeout_ms : u->health.timeout_ms;

	curl_easy_reset(e);
	p->errbuf[0] = '\0';
	/* A name without addresses takes no request either: nothing to
	 * check, nothing counted, until it resolves. */
	if (probe_pin(p) == -1)
		return;
	curl_easy_setopt(e, CURLOPT_CONNECT_TO, p->pin);
	curl_easy_setopt(e, CURLOPT_URL, p->url);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "agate-health-check");
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, p->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, probe_discard);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)u->health.timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)ct);
	/* A probe of its own: it neither takes nor leaves a pooled
	 * connection, and a server that stopped accepting is seen. */
	curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	curlev_tls(e, u, &u->servers[p->server]);
	if (curlev_add(e, &p->job) == -1) {
		probe_result(p, false, "cannot start the check");
		return;
	}
	p->busy = true;
}

static void
probe_timer(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;

	(void)fd;
	(void)what;
	loopwatch_begin(LW_OTHER);
	probe_arm(p, p->up->health.interval_ms);
	if (!p->busy)		/* a check never overlaps the one before */
		probe_start(p);
	loopwatch_end();
}

int
health_init(struct event_base *base, const struct config *cfg, bool prober)
{
	size_t i, j, n = 0;

	if (!prober)
		return 0;
	for (i = 0; i < cfg->nupstreams; i++)
		if (cfg->upstreams[i].health.enabled)
			n += cfg->upstreams[i].nservers;
	if (n == 0)
		return 0;
	if ((probes = calloc(n, sizeof(*probes))) == NULL)
		return -1;
	for (i = 0; i < cfg->nupstreams; i++) {
		const struct upstream_cfg *u = &cfg->upstreams[i];

		if (!u->health.enabled)
			continue;
		for (j = 0; j < u->nservers; j++) {
			struct probe *p = &probes[nprobes];

			p->job.done = probe_done;
			p->up = u;
			p->server = j;
			p->sh = shared_server(cfg, u, j);
			snprintf(p->url, sizeof(p->url), "%s%s",
			    u->servers[j].curl_url, u->health.path);
			if ((p->easy = curl_easy_init()) == NULL)
				return -1;
			nprobes++;
			evtimer_assign(&p->timer, base, probe_timer, p);
			/* The first round at once, spread over 100 ms. */
			probe_arm(p, (uint64_t)(j * 100 / u->nservers));
		}
	}
	log_info("health: this worker checks %zu server%s", nprobes,
	    log_plural((long long)nprobes));
	return 0;
}

void
health_free(void)
{
	size_t i;

	for (i = 0; i < nprobes; i++) {
		evtimer_del(&probes[i].timer);
		if (probes[i].busy)
			curlev_remove(probes[i].easy);
		curl_easy_cleanup(probes[i].easy);
		curl_slist_free_all(probes[i].pin);
	}
	free(probes);
	probes = NULL;
	nprobes = 0;
}
