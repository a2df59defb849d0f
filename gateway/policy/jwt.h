/*
 * JWT bearer tokens (see jwt.c).
 */
#ifndef AGATE_JWT_H
#define AGATE_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>

struct jwks;
struct jwt_cfg;
struct request;

/* Clock skew allowed on exp and nbf, in seconds. */
#define JWT_LEEWAY	60

/* Reads a JWKS file; NULL with "file:line:col: reason" in err. */
struct jwks	*jwks_load(const char *path, char *err, size_t errlen);
void		 jwks_free(struct jwks *);
/* base64url (padding optional) into out; the length, or -1. */
ssize_t		 jwt_b64url(const char *in, size_t n, unsigned char *out,
		    size_t max);
/*
 * Checks tok against the keys and c's claims at time now.  NULL when it
 * is good (*claims gets the claims, a new reference), else why not.
 */
const char	*jwt_verify(const struct jwt_cfg *c, const struct jwks *,
		    const char *tok, size_t len, time_t now, json_t **claims);

#endif
