/*
 * Basic auth (route `auth.basic: htpasswd`).  The password hashes are
 * slow on purpose (bcrypt at cost 12 is ~250 ms of CPU), so checking one
 * on the event loop would stall every other client of the worker, which
 * is how nginx's auth_basic freezes workers.  Here the check is a
 * JOB_CRYPT in the offload pool, and the request waits without holding
 * the loop.
 *
 * A cache of recent successes keeps a busy client from costing a hash per
 * request: the key is an HMAC, under a per-worker random key, of the user,
 * the password and the stored hash, so the cache never holds a password,
 * a changed password in the file misses, and a user removed from the file
 * is refused before the cache is asked.  Entries last CACHE_TTL_MS;
 * failures are never cached.  An unknown user costs the same hash as a
 * known one (against another user's hash), so timing does not tell
 * which users exist.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "gateway/config/config.h"
#include "gateway/policy/htpasswd.h"
#include "gateway/stage.h"
#include "gateway/trace/trace.h"
#include "lib/encode.h"
#include "lib/log.h"
#include "offload/offload.h"
#include "worker/http.h"
#include "worker/timer.h"

#define CACHE_SLOTS	4096
#define CACHE_TTL_MS	30000
#define CRED_MAX	1024		/* decoded user:password */

#define WWW_AUTH "WWW-Authenticate: Basic realm=\"agate\", charset=\"UTF-8\"\r\n"

struct cache_slot {
	unsigned char	 mac[32];
	uint64_t	 expires;	/* now_ms(); 0: empty */
};

static struct cache_slot cache[CACHE_SLOTS];
static unsigned char cache_key[32];
static bool cache_keyed;

struct basic_wait {
	struct request	*req;
	struct job	*job;
	unsigned char	 mac[32];
	bool		 known;		/* the user is in the file */
	uint64_t	 start_ns;	/* its job's span, or 0 */
};

static void	basic_abort(struct request *);

static const struct req_hooks basic_hooks = { NULL, NULL, basic_abort };

static void
cache_mac(const char *user, size_t ulen, const char *pass, size_t plen,
    const char *hash, unsigned char mac[32])
{
	unsigned char msg[CRED_MAX + 300];
	size_t hlen = strlen(hash), n = 0;
	unsigned int len = 32;

	memcpy(msg + n, user, ulen);
	n += ulen;
	msg[n++] = '\0';
	memcpy(msg + n, pass, plen);
	n += plen;
	msg[n++] = '\0';
	if (hlen > 255)
		hlen = 255;
	memcpy(msg + n, hash, hlen);
	n += hlen;
	HMAC(EVP_sha256(), cache_key, sizeof(cache_key), msg, n, mac, &len);
	OPENSSL_cleanse(msg, sizeof(msg));
}

static struct cache_slot *
cache_slot(const unsigned char mac[32])
{
	uint32_t i;

	memcpy(&i, mac, sizeof(i));
	return &cache[i % CACHE_SLOTS];
}

static bool
cache_hit(const unsigned char mac[32])
{
	struct cache_slot *s = cache_slot(mac);

	if (!cache_keyed)
		return false;
	return s->expires > now_ms() && CRYPTO_memcmp(s->mac, mac, 32) == 0;
}

static void
cache_put(const unsigned char mac[32])
{
	struct cache_slot *s = cache_slot(mac);

	if (!cache_keyed)
		return;
	memcpy(s->mac, mac, 32);
	s->expires = now_ms() + CACHE_TTL_MS;
}

/* Each worker draws its own key after fork: no two share a cache key. */
static int
basic_init(struct event_base *base, const struct config *cfg)
{
	memset(cache, 0, sizeof(cache));
	cache_keyed = getrandom(cache_key, sizeof(cache_key), 0) ==
	    (ssize_t)sizeof(cache_key);
	if (!cache_keyed)
		log_warnx("auth: no random bytes for the cache key; every "
		    "basic auth request is checked in full");
	(void)base;
	(void)cfg;
	return 0;
}

static void
basic_refuse(struct request *r, const char *msg)
{
	req_error(r, 401, msg, WWW_AUTH);
}

static void
basic_free(struct basic_wait *w)
{
	offload_cancel(w->job);
	free(w);
}

static void
basic_abort(struct request *r)
{
	basic_free(r->gw);
	r->gw = NULL;
	r->hooks = NULL;
}

static void
basic_done(void *arg, int status, const char *out, size_t len)
{
	struct basic_wait *w = arg;
	struct request *r = w->req;
	bool ok = status == JOB_OK && len == 1 && out[0] == '1' && w->known;

	w->job = NULL;
	r->gw = NULL;
	r->hooks = NULL;
	trace_job(&r->trace, "crypt", status, offload_status_str(status),
	    w->start_ns);
	if (ok)
		cache_put(w->mac);
	free(w);
	if (status != JOB_OK) {
		log_warnx("auth: a password check failed: %s",
		    offload_status_str(status));
		req_error(r, offload_http_status(status),
		    "the password check could not be done", NULL);
		return;
	}
	if (!ok) {
		basic_refuse(r, "invalid credentials");
		return;
	}
	stage_resume(r, STAGE_NEXT);
}

/* The Authorization header's user and password, decoded into cred. */
static bool
basic_credentials(const struct request *r, unsigned char *cred,
    size_t *len, size_t *colon)
{
	const struct http_header *h = req_header(r, "authorization");
	const char *v, *end;
	unsigned char *c;
	ssize_t n;

	if (h == NULL || h->value_len < 6 ||
	    strncasecmp(h->value, "basic ", 6) != 0)
		return false;
	v = h->value + 6;
	end = h->value + h->value_len;
	while (v < end && *v == ' ')
		v++;
	while (end > v && end[-1] == ' ')
		end--;
	if ((n = base64_decode(v, (size_t)(end - v), cred, CRED_MAX,
	    BASE64_STD)) <= 0 ||
	    memchr(cred, '\0', (size_t)n) != NULL ||
	    (c = memchr(cred, ':', (size_t)n)) == NULL || c == cred)
		return false;
	*len = (size_t)n;
	*colon = (size_t)(c - cred);
	return true;
}

static enum stage_result
basic_run(struct request *r)
{
	const struct htpasswd *t = r->route->auth.basic_users;
	const struct htpasswd_user *u;
	unsigned char cred[CRED_MAX];
	size_t len, colon, plen;
	const char *hash;
	struct basic_wait *w;
	struct iovec iov[3];

	if (!basic_credentials(r, cred, &len, &colon)) {
		basic_refuse(r, "authentication required");
		return STAGE_DONE;
	}
	plen = len - colon - 1;
	u = htpasswd_find(t, (const char *)cred, colon);
	hash = u != NULL ? u->hash : t->users[0].hash;
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		OPENSSL_cleanse(cred, sizeof(cred));
		req_error(r, 503, "out of memory", NULL);
		return STAGE_DONE;
	}
	w->req = r;
	w->known = u != NULL;
	cache_mac((const char *)cred, colon, (const char *)cred + colon + 1,
	    plen, hash, w->mac);
	if (w->known && cache_hit(w->mac)) {
		OPENSSL_cleanse(cred, sizeof(cred));
		free(w);
		return STAGE_NEXT;
	}
	iov[0] = (struct iovec){ (void *)hash, strlen(hash) + 1 };
	iov[1] = (struct iovec){ cred + colon + 1, plen };
	w->start_ns = trace_recording(&r->trace) ? trace_now_ns() : 0;
	w->job = offload_submit(JOB_CRYPT, iov, 2, basic_done, w);
	OPENSSL_cleanse(cred, sizeof(cred));
	if (w->job == NULL) {
		free(w);
		req_error(r, 503, "too many password checks waiting", NULL);
		return STAGE_DONE;
	}
	r->gw = w;
	r->hooks = &basic_hooks;
	return STAGE_WAIT;
}

static bool
basic_wanted(const struct route_cfg *rt)
{
	return rt->auth.basic_users != NULL;
}

const struct stage basic_stage = {
	.name = "basic_auth", .wanted = basic_wanted, .init = basic_init,
	.run = basic_run,
};
