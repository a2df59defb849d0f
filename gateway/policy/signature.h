/*
 * Webhook signatures (route `verify_signature`): an HMAC-SHA256 of the
 * body, checked on the loop for small bodies and offloaded beyond.
 */
#ifndef AGATE_SIGNATURE_H
#define AGATE_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>

/* Bodies up to this size are verified on the loop (docs/offload.md). */
#define SIGNATURE_INLINE_MAX	(16 * 1024)

/* "sha256=<64 hex>" into mac; false if it is not that. */
bool	signature_parse(const char *v, size_t len, unsigned char mac[32]);

#endif
