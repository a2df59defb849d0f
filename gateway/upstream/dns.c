/*
 * DNS for upstream servers named by a host name.
 *
 * DESIGN
 * - libevent's evdns, not c-ares: it runs on the worker's event_base as
 *   it is (c-ares needs socket glue to libevent), it is in libevent_extra
 *   that agate links already, and evdns_base_resolve_ipv4/ipv6 give the
 *   answer's TTL (evdns_getaddrinfo does not, and c-ares' would need its
 *   own parsing of replies).  It never blocks the loop.  It does not read
 *   /etc/hosts for these calls: hosts.c does, first, so that localhost
 *   and the machine's names resolve as getaddrinfo() made them.
 * - Each worker looks up its own names, as nginx's workers do: no
 *   message between processes, and a worker's view changes with its own
 *   answers.  The lookups of workers and names are spread by jitter.
 * - A new worker waits for its first answers (up to 1 s) before it takes
 *   connections, as Envoy warms its clusters, so that a reload does not
 *   answer 503 for want of an address; past that it serves, and a name
 *   without an answer is a name that does not resolve (yet).
 * - One lookup of a name is an A and an AAAA query; every address of
 *   both becomes a slot of the server (upstream_set_addresses()).  The
 *   next lookup comes after min(resolve, the smallest TTL), at least 1 s,
 *   +-10%.  A failed lookup (timeout, SERVFAIL, NXDOMAIN, no address)
 *   keeps the addresses it had, is counted and logged (the first of a
 *   run, then once a minute), and is tried again sooner: 1 s, doubling up
 *   to resolve.  A family whose query failed while the other's answered
 *   keeps its addresses too: an AAAA that times out does not take away
 *   the A records.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>

#include "gateway/metrics/metrics.h"
#include "gateway/upstream/dns.h"
#include "gateway/upstream/hosts.h"
#include "gateway/upstream/upstream.h"
#include "lib/log.h"
#include "worker/loopwatch.h"

#define DNS_HOSTS	"/etc/hosts"
#define DNS_HOSTS_MAX	(256 * 1024)
#define DNS_MIN_MS	1000
#define DNS_LOG_EVERY	60		/* s between logs of a failing run */
#define DNS_WARM_MS	1000		/* a new worker waits for answers */

/* One named server of one upstream. */
struct dns_name {
	struct upstream_rt	*up;
	size_t			 ci;		/* its index in the upstream */
	const struct server_cfg	*srv;
	struct event		 timer;
	struct evdns_request	*req[2];	/* A, AAAA under way */
	int			 err[2];	/* their DNS_ERR_* */
	uint32_t		 ttl;		/* smallest seen, s */
	struct sockaddr_storage	 sa[UPSTREAM_NAME_SLOTS];
	socklen_t		 salen[UPSTREAM_NAME_SLOTS];
	size_t			 n;
	uint64_t		 backoff_ms;	/* next wait after a failure */
	bool			 answered;	/* its first lookup is over */
	unsigned		 fails;		/* in a row */
	time_t			 logged;	/* last failure logged */
};

static struct evdns_base	*dns_base;
static struct dns_name		*names;
static size_t			 nnames;
static size_t			 nwaiting;	/* first lookups under way */

static void	dns_lookup(struct dns_name *);

/* ms +-10%, so that workers and names do not go in step. */
static void
dns_arm(struct dns_name *d, uint64_t ms)
{
	uint32_t r;
	struct timeval tv;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)(uintptr_t)d ^ (uint32_t)time(NULL);
	ms = ms - ms / 10 + (ms / 5 ? r % (ms / 5 + 1) : 0);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(&d->timer, &tv);
}

static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	loopwatch_begin(LW_OTHER);
	dns_lookup(arg);
	loopwatch_end();
}

static void
dns_answered(struct dns_name *d)
{
	if (!d->answered) {
		d->answered = true;
		nwaiting--;
	}
}

/* The addresses of a lookup are in: they replace the server's. */
static void
dns_ok(struct dns_name *d, const char *how)
{
	const struct upstream_cfg *u = d->up->cfg;
	uint64_t next = u->resolve_ms;
	size_t live;

	live = upstream_set_addresses(d->up, d->ci, d->sa, d->salen, d->n);
	metrics_dns(d->srv->mslot, true, (unsigned)live);
	dns_answered(d);
	if (d->fails > 0)
		log_info("upstream %s: %s resolves again (%zu address%s, %s) "
		    "after %u failed lookup%s", u->name, d->srv->host, live,
		    live == 1 ? "" : "es", how, d->fails,
		    log_plural(d->fails));
	d->fails = 0;
	d->backoff_ms = DNS_MIN_MS;
	if (d->ttl != UINT32_MAX && (uint64_t)d->ttl * 1000 < next)
		next = (uint64_t)d->ttl * 1000;
	dns_arm(d, next < DNS_MIN_MS ? DNS_MIN_MS : next);
}

static void
dns_failed(struct dns_name *d, const char *why)
{
	const struct upstream_cfg *u = d->up->cfg;
	time_t now = time(NULL);
	size_t live = upstream_live_of(d->up, d->ci);

	metrics_dns(d->srv->mslot, false, (unsigned)live);
	dns_answered(d);
	if (d->fails++ == 0 || now - d->logged >= DNS_LOG_EVERY) {
		d->logged = now;
		if (live == 0)
			log_warnx("upstream %s: cannot resolve %s (%s), "
			    "retrying in %llu ms", u->name, d->srv->host, why,
			    (unsigned long long)d->backoff_ms);
		else
			log_warnx("upstream %s: cannot resolve %s (%s; %u in "
			    "a row), keeping its %zu address%s, retrying",
			    u->name, d->srv->host, why, d->fails, live,
			    live == 1 ? "" : "es");
	}
	dns_arm(d, d->backoff_ms);
	d->backoff_ms *= 2;
	if (d->backoff_ms > u->resolve_ms)
		d->backoff_ms = u->resolve_ms;
}

/* An answer with no record of its type is no failure of the lookup. */
static bool
dns_empty(int err)
{
	return err == DNS_ERR_NONE || err == DNS_ERR_NODATA ||
	    err == DNS_ERR_NOTEXIST;
}

/*
 * Both queries are in.  A family whose query failed keeps the server's
 * current addresses of that family; the lookup fails when neither gave
 * an address and one of them failed, or both said there is none.
 */
static void
dns_done(struct dns_name *d)
{
	static const int fam[2] = { AF_INET, AF_INET6 };
	size_t got = d->n;
	int k;

	if (got == 0) {
		k = dns_empty(d->err[0]) ? 1 : 0;
		if (!dns_empty(d->err[k]))
			dns_failed(d, evdns_err_to_string(d->err[k]));
		else if (d->err[0] == DNS_ERR_NOTEXIST ||
		    d->err[1] == DNS_ERR_NOTEXIST)
			dns_failed(d, "no such name");
		else
			dns_failed(d, "no address in the answer");
		return;
	}
	for (k = 0; k < 2; k++)
		if (!dns_empty(d->err[k]))
			d->n += upstream_addresses_of(d->up, d->ci, fam[k],
			    d->sa + d->n, d->salen + d->n,
			    UPSTREAM_NAME_SLOTS - d->n);
	dns_ok(d, "DNS");
}

static void
dns_answer(int result, char type, int count, int ttl, void *addresses,
    void *arg, int k)
{
	struct dns_name *d = arg;
	int i;

	/* Our own cancel (dns_lookup() could not send both): d has moved
	 * on already. */
	if (result == DNS_ERR_CANCEL || result == DNS_ERR_SHUTDOWN)
		return;
	d->req[k] = NULL;
	d->err[k] = result;
	if (result == DNS_ERR_NONE && count > 0 && ttl >= 0 &&
	    (uint32_t)ttl < d->ttl)
		d->ttl = (uint32_t)ttl;
	for (i = 0; result == DNS_ERR_NONE && i < count &&
	    d->n < UPSTREAM_NAME_SLOTS; i++) {
		struct sockaddr_storage *sa = &d->sa[d->n];

		memset(sa, 0, sizeof(*sa));
		if (type == DNS_IPv4_A) {
			struct sockaddr_in *sin = (struct sockaddr_in *)sa;

			sin->sin_family = AF_INET;
			sin->sin_port = htons(d->srv->port);
			memcpy(&sin->sin_addr, (char *)addresses + 4 * i, 4);
			d->salen[d->n++] = sizeof(*sin);
		} else if (type == DNS_IPv6_AAAA) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(d->srv->port);
			memcpy(&sin6->sin6_addr, (char *)addresses + 16 * i,
			    16);
			d->salen[d->n++] = sizeof(*sin6);
		}
	}
	if (d->req[1 - k] == NULL)
		dns_done(d);
}

static void
dns_answer_a(int result, char type, int count, int ttl, void *addresses,
    void *arg)
{
	dns_answer(result, type, count, ttl, addresses, arg, 0);
}

static void
dns_answer_aaaa(int result, char type, int count, int ttl, void *addresses,
    void *arg)
{
	dns_answer(result, type, count, ttl, addresses, arg, 1);
}

/* Reads the hosts file, or NULL (none, unreadable: DNS decides). */
static char *
dns_read_hosts(size_t *len)
{
	char *text;
	ssize_t n;
	int fd;

	if ((fd = open(DNS_HOSTS, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	if ((text = malloc(DNS_HOSTS_MAX)) == NULL) {
		close(fd);
		return NULL;
	}
	*len = 0;
	while (*len < DNS_HOSTS_MAX && ((n = read(fd, text + *len,
	    DNS_HOSTS_MAX - *len)) > 0 || (n == -1 && errno == EINTR)))
		if (n > 0)
			*len += (size_t)n;
	close(fd);
	return text;
}

/*
 * The worker's resolver: the config's resolver list, else the
 * nameservers (and search list) of /etc/resolv.conf.  A query waits 2 s
 * and is sent twice, so that a silent server costs a lookup 4 s, not
 * the 5 s x 3 of the defaults.  It keeps no event armed while idle.
 */
static int
dns_base_new(struct event_base *base, const struct config *cfg)
{
	size_t i;

	dns_base = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE |
	    (cfg->nresolvers == 0 ? EVDNS_BASE_INITIALIZE_NAMESERVERS : 0));
	if (dns_base == NULL)
		return -1;
	for (i = 0; i < cfg->nresolvers; i++)
		if (evdns_base_nameserver_ip_add(dns_base,
		    cfg->resolvers[i]) != 0)
			log_warnx("dns: cannot use resolver %s",
			    cfg->resolvers[i]);
	if (evdns_base_count_nameservers(dns_base) == 0)
		log_warnx("dns: no nameserver to ask; only %s will answer",
		    DNS_HOSTS);
	evdns_base_set_option(dns_base, "timeout:", "2");
	evdns_base_set_option(dns_base, "attempts:", "2");
	return 0;
}

/* /etc/hosts first (a local file of a few lines: read, not waited on),
 * then A and AAAA queries to the nameservers. */
static void
dns_lookup(struct dns_name *d)
{
	size_t len = 0;
	char *hosts = dns_read_hosts(&len);

	d->n = 0;
	d->ttl = UINT32_MAX;
	if (hosts != NULL) {
		d->n = hosts_find(hosts, len, d->srv->host, d->srv->port, d->sa,
		    d->salen, UPSTREAM_NAME_SLOTS);
		free(hosts);
		if (d->n > 0) {
			dns_ok(d, DNS_HOSTS);
			return;
		}
	}
	/* evdns would hold the queries until a nameserver comes: never. */
	if (evdns_base_count_nameservers(dns_base) == 0) {
		dns_failed(d, "not in " DNS_HOSTS ", and no nameserver");
		return;
	}
	d->err[0] = d->err[1] = DNS_ERR_NONE;
	/* Both are asked before either can answer (answers come from the
	 * loop), so neither callback sees the other still unset. */
	d->req[0] = evdns_base_resolve_ipv4(dns_base, d->srv->host, 0,
	    dns_answer_a, d);
	d->req[1] = evdns_base_resolve_ipv6(dns_base, d->srv->host, 0,
	    dns_answer_aaaa, d);
	if (d->req[0] == NULL || d->req[1] == NULL) {
		if (d->req[0] != NULL)
			evdns_cancel_request(dns_base, d->req[0]);
		if (d->req[1] != NULL)
			evdns_cancel_request(dns_base, d->req[1]);
		d->req[0] = d->req[1] = NULL;
		dns_failed(d, "cannot send the query");
	}
}

static void
dns_warm_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

/*
 * A new worker (start, reload, respawn) runs its loop for the first
 * answers, up to DNS_WARM_MS, before it takes connections, as Envoy
 * warms its clusters: otherwise the first requests of a new generation
 * would find no address and get 503.  A name still unanswered then is
 * served as one that does not resolve.  A stop asked for meanwhile
 * (loopbreak/loopexit, which the next loop would forget) is asked again.
 */
static void
dns_warm(struct event_base *base)
{
	static const struct timeval zero = { 0, 0 };
	struct timeval tv = { DNS_WARM_MS / 1000, (DNS_WARM_MS % 1000) * 1000 };
	struct event *t;
	bool over = false;

	if (nwaiting == 0 || (t = evtimer_new(base, dns_warm_cb, &over)) ==
	    NULL)
		return;
	evtimer_add(t, &tv);
	while (nwaiting > 0 && !over && !event_base_got_break(base) &&
	    !event_base_got_exit(base))
		if (event_base_loop(base, EVLOOP_ONCE) == -1)
			break;
	if (event_base_got_break(base) || event_base_got_exit(base))
		event_base_loopexit(base, &zero);
	event_free(t);
	if (nwaiting > 0)
		log_info("dns: %zu name%s not answered within %d ms; serving "
		    "(their upstreams answer 503 until they resolve)",
		    nwaiting, log_plural((long long)nwaiting), DNS_WARM_MS);
}

int
dns_init(struct event_base *base, const struct config *cfg)
{
	size_t i, j, n = 0;

	for (i = 0; i < cfg->nupstreams; i++)
		for (j = 0; j < cfg->upstreams[i].nservers; j++)
			n += cfg->upstreams[i].servers[j].named;
	if (n == 0)
		return 0;
	if ((names = calloc(n, sizeof(*names))) == NULL ||
	    dns_base_new(base, cfg) == -1)
		return -1;
	for (i = 0; i < cfg->nupstreams; i++)
		for (j = 0; j < cfg->upstreams[i].nservers; j++) {
			struct dns_name *d = &names[nnames];

			if (!cfg->upstreams[i].servers[j].named)
				continue;
			nnames++;
			d->up = upstream_rt(&cfg->upstreams[i]);
			d->ci = j;
			d->srv = &cfg->upstreams[i].servers[j];
			d->backoff_ms = DNS_MIN_MS;
			evtimer_assign(&d->timer, base, dns_timer_cb, d);
			nwaiting++;
			dns_lookup(d);
		}
	dns_warm(base);
	return 0;
}

void
dns_free(void)
{
	size_t i;

	for (i = 0; i < nnames; i++)
		evtimer_del(&names[i].timer);
	/* 0: requests under way go without a callback. */
	if (dns_base != NULL)
		evdns_base_free(dns_base, 0);
	dns_base = NULL;
	free(names);
	names = NULL;
	nnames = nwaiting = 0;
}
