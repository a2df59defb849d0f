/*
 * The shared segment (see shared.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "gateway/config/shared.h"

_Static_assert(sizeof(struct shared_server) == 64,
    "one shared server per cache line");

int
shared_create(struct config *cfg)
{
	size_t n = 0, i, size;
	struct shared *sh;

	for (i = 0; i < cfg->nupstreams; i++) {
		cfg->upstreams[i].slot = n;
		n += cfg->upstreams[i].nservers;
	}
	size = sizeof(*sh) + n * sizeof(sh->servers[0]);
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	    -1, 0);
	if (sh == MAP_FAILED)
		return -1;
	/* Fresh anonymous pages are zero: every breaker closed, every
	 * server up. */
	sh->magic = SHARED_MAGIC;
	sh->version = SHARED_VERSION;
	sh->size = size;
	sh->nservers = n;
	cfg->shared = sh;
	return 0;
}

void
shared_destroy(struct config *cfg)
{
	if (cfg->shared != NULL)
		munmap(cfg->shared, cfg->shared->size);
	cfg->shared = NULL;
}

struct shared_server *
shared_server(const struct config *cfg, const struct upstream_cfg *u,
    size_t i)
{
	return &cfg->shared->servers[u->slot + i];
}

void
shared_inherit(struct config *to, const struct config *from)
{
	size_t i, j, k;

	if (to->shared == NULL || from->shared == NULL)
		return;
	for (i = 0; i < to->nupstreams; i++) {
		struct upstream_cfg *u = &to->upstreams[i];
		const struct upstream_cfg *o = config_upstream(from, u->name);

		for (j = 0; o != NULL && j < u->nservers; j++)
			for (k = 0; k < o->nservers; k++) {
				struct shared_server *d, *s;

				if (strcmp(u->servers[j].url,
				    o->servers[k].url) != 0)
					continue;
				d = shared_server(to, u, j);
				s = shared_server(from, o, k);
				atomic_store(&d->breaker.word,
				    atomic_load(&s->breaker.word));
				atomic_store(&d->breaker.fails,
				    atomic_load(&s->breaker.fails));
				/* Health is re-learnt when checks change. */
				if (u->health.enabled && o->health.enabled)
					atomic_store(&d->down,
					    atomic_load(&s->down));
				break;
			}
	}
}
