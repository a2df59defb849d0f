/*
 * The shared segment of one config generation (ARCHITECTURE.md, "Shared
 * memory"): one MAP_SHARED mapping made when the config is loaded, so
 * that the workers forked with that config see the same bytes.  It holds
 * what must be one truth across workers: each upstream server's circuit
 * breaker and health state.  A reload makes a new segment for the new
 * generation and carries the states of servers it keeps over.
 */
#ifndef AGATE_SHARED_H
#define AGATE_SHARED_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/config/config.h"
#include "gateway/upstream/breaker.h"

#define SHARED_MAGIC	0x61676174u	/* "agat" */
#define SHARED_VERSION	1

struct shared_server {
	struct breaker		 breaker;
	_Atomic uint32_t	 down;		/* health checks failed */
	char			 pad[64 - sizeof(struct breaker) -
				    sizeof(uint32_t)];
};

struct shared {
	uint32_t		 magic;
	uint32_t		 version;
	size_t			 size;
	size_t			 nservers;
	struct shared_server	 servers[];
};

/* Makes cfg's segment and numbers its servers.  0, or -1 (errno set). */
int	shared_create(struct config *);
void	shared_destroy(struct config *);
/* The shared state of server i of upstream u. */
struct shared_server *shared_server(const struct config *,
	    const struct upstream_cfg *, size_t i);
/* Copies the states of servers that to also has (same upstream name and
 * server URL) from from's segment: a reload forgets nothing it keeps. */
void	shared_inherit(struct config *to, const struct config *from);

#endif
