/*
 * The client certificate an upstream's https servers are shown (mTLS:
 * the upstream's tls.cert and tls.key).  Read and checked once per config
 * load, in the supervisor; used from memory by every TLS client of a
 * worker (uptls.c, and libcurl through curlev_tls()), so what `agate -t`
 * and a reload checked is what is presented, until the next reload.
 */
#ifndef AGATE_UPCERT_H
#define AGATE_UPCERT_H

#include <stddef.h>

#include "gateway/config/config.h"

struct ssl_ctx_st;

/* Which of the two files an error is about. */
enum upcert_file {
	UPCERT_CERT,
	UPCERT_KEY
};

/*
 * Reads u's tls.cert and tls.key into memory from arena (the config's)
 * and checks that the chain loads, the key is not encrypted and matches
 * the certificate.  Returns 0, or -1 with a reason in err and the file
 * it is about in *which.
 */
int	upcert_load(struct upstream_cfg *u, struct arena *arena, char *err,
	    size_t errlen, enum upcert_file *which);
/*
 * Puts u's chain (the leaf first, then what follows it in the file) and
 * key, as read by upcert_load(), into a client context.  As upcert_load()
 * for the result.
 */
int	upcert_use(struct ssl_ctx_st *ctx, const struct upstream_cfg *u,
	    char *err, size_t errlen, enum upcert_file *which);

#endif
