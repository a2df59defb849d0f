/*
 * The stage table and the loop over it (the contract is in stage.h).
 * The order is the order of docs/policies.md: CORS answers preflights
 * before anything can refuse them; the rate limit counts before the
 * costly checks; the cheap authentications before the offloaded ones;
 * compression last, as it only installs a filter on the answer.
 */
#include <stddef.h>

#include "gateway/cache/cache.h"
#include "gateway/config/config.h"
#include "gateway/fanout/fanout.h"
#include "gateway/stage.h"
#include "gateway/upstream/call.h"
#include "worker/http.h"

extern const struct stage cors_stage;
extern const struct stage ratelimit_stage;
extern const struct stage basic_stage;
extern const struct stage jwt_stage;
extern const struct stage apikeys_stage;
extern const struct stage signature_stage;
extern const struct stage compress_stage;

static const struct stage *const stages[] = {
	&cors_stage,		/* cors: preflights answered here */
	&ratelimit_stage,	/* rate_limit (local or Redis) */
	&basic_stage,		/* auth.basic, offloaded */
	&jwt_stage,		/* auth.jwt */
	&apikeys_stage,		/* auth.api_keys */
	&signature_stage,	/* verify_signature, offloaded */
	&compress_stage,	/* compress: gzip filter */
};
#define NSTAGES	(sizeof(stages) / sizeof(stages[0]))

/* The content handlers, by route_cfg.content. */
static void (*const content[])(struct request *) = {
	[CONTENT_PROXY] = proxy_start,
	[CONTENT_FANOUT] = fanout_start,
	[CONTENT_TUNNEL] = upgrade_start,
	[CONTENT_CACHE] = cache_start,
};

/* The route's handler; an Upgrade on a proxy route is tunnelled (a
 * fan-out ignores it, as RFC 9110 lets a server do). */
static enum route_content
stage_content(const struct request *r)
{
	if ((r->route->content == CONTENT_PROXY ||
	    r->route->content == CONTENT_CACHE) && upgrade_wanted(r))
		return CONTENT_TUNNEL;
	return r->route->content;
}

static void
stage_run(struct request *r)
{
	while (r->gw_stage < NSTAGES) {
		const struct stage *s = stages[r->gw_stage++];

		if (s->wanted != NULL && !s->wanted(r->route))
			continue;
		if (s->run(r) != STAGE_NEXT)
			return;		/* answered, or waiting */
	}
	content[stage_content(r)](r);
}

void
stage_start(struct request *r)
{
	r->gw_stage = 0;
	/* Every answer of a caching route says X-Cache, a stage's too;
	 * the cache says what it did once it runs. */
	if (r->route->content == CONTENT_CACHE)
		cache_label(r, "BYPASS");
	stage_run(r);
}

void
stage_resume(struct request *r, enum stage_result res)
{
	if (res == STAGE_NEXT)
		stage_run(r);
}

int
stage_init_all(struct event_base *base, const struct config *cfg)
{
	size_t i;

	for (i = 0; i < NSTAGES; i++)
		if (stages[i]->init != NULL && stages[i]->init(base, cfg) == -1)
			return -1;
	return 0;
}

void
stage_fini_all(void)
{
	size_t i;

	for (i = NSTAGES; i-- > 0;)
		if (stages[i]->fini != NULL)
			stages[i]->fini();
}
