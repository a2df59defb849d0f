/*
 * Client certificates for upstreams (see upcert.h).
 *
 * The files are read whole at config load and kept as PEM text in the
 * config: workers inherit them across fork, agate's own TLS client turns
 * them into its per-upstream context (upcert_use) and libcurl takes them
 * as blobs.  Neither reads the files again, so a certificate renewed on
 * disk is used from the next reload on (as nginx's proxy_ssl_certificate),
 * and one broken on disk breaks nothing until a reload, which then fails
 * and keeps the old config serving.
 *
 * An encrypted key is refused rather than asked about: OpenSSL's default
 * would prompt on the terminal, and a daemon has nobody to answer.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "gateway/upstream/upcert.h"

/* Far above any real chain or key: a guard against the wrong file. */
#define UPCERT_MAX	(1024 * 1024)

/* The passphrase callback: none is given; note that one was wanted. */
static int
upcert_no_pass(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	if (arg != NULL)
		*(int *)arg = 1;
	return -1;
}

/* OpenSSL's last reason, or dflt when it left none. */
static const char *
upcert_reason(char *buf, size_t len, const char *dflt)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "%s", dflt);
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static int
upcert_read(const char *path, struct arena *arena, char **pem, size_t *len,
    char *err, size_t errlen)
{
	struct stat st;
	FILE *f;
	char *p;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "cannot read %s: %s", path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st) == -1 || st.st_size > UPCERT_MAX) {
		snprintf(err, errlen, "%s: larger than %d bytes; a PEM file "
		    "is expected", path, UPCERT_MAX);
		goto fail;
	}
	if ((p = arena_alloc(arena, (size_t)st.st_size + 1)) == NULL) {
		snprintf(err, errlen, "out of memory reading %s", path);
		goto fail;
	}
	*len = fread(p, 1, (size_t)st.st_size, f);
	if (ferror(f)) {
		snprintf(err, errlen, "cannot read %s", path);
		goto fail;
	}
	fclose(f);
	*pem = p;
	return 0;
fail:
	fclose(f);
	return -1;
}

/* The leaf, then every certificate after it: the chain to send. */
static int
upcert_chain(SSL_CTX *ctx, const struct upstream_cfg *u, char *err,
    size_t errlen)
{
	BIO *b = BIO_new_mem_buf(u->tls_cert_pem, (int)u->tls_cert_len);
	char why[256];
	unsigned long e;
	X509 *x;

	ERR_clear_error();
	if (b == NULL ||
	    (x = PEM_read_bio_X509_AUX(b, NULL, upcert_no_pass, NULL)) == NULL) {
		snprintf(err, errlen, "no PEM certificate in %s (%s)",
		    u->tls_cert, upcert_reason(why, sizeof(why), "empty"));
		BIO_free(b);
		return -1;
	}
	if (SSL_CTX_use_certificate(ctx, x) != 1) {
		X509_free(x);
		BIO_free(b);
		snprintf(err, errlen, "cannot use the certificate in %s: %s",
		    u->tls_cert, upcert_reason(why, sizeof(why), "refused"));
		return -1;
	}
	X509_free(x);
	SSL_CTX_clear_chain_certs(ctx);
	while ((x = PEM_read_bio_X509(b, NULL, upcert_no_pass, NULL)) != NULL)
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			break;
		}
	BIO_free(b);
	/* Running out of certificates is the end; anything else is not. */
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
		ERR_clear_error();
		return 0;
	}
	snprintf(err, errlen, "a bad certificate after the first in %s: %s",
	    u->tls_cert, upcert_reason(why, sizeof(why), "refused"));
	return -1;
}

int
upcert_use(SSL_CTX *ctx, const struct upstream_cfg *u, char *err,
    size_t errlen, enum upcert_file *which)
{
	EVP_PKEY *k = NULL;
	char why[256];
	int asked = 0;
	BIO *b;

	*which = UPCERT_CERT;
	if (upcert_chain(ctx, u, err, errlen) == -1)
		return -1;
	*which = UPCERT_KEY;
	if ((b = BIO_new_mem_buf(u->tls_key_pem, (int)u->tls_key_len)) != NULL)
		k = PEM_read_bio_PrivateKey(b, NULL, upcert_no_pass, &asked);
	BIO_free(b);
	if (k == NULL) {
		if (asked)
			snprintf(err, errlen, "the key in %s is encrypted; "
			    "agate takes unencrypted keys only (openssl pkey "
			    "-in %s -out NEW.key)", u->tls_key, u->tls_key);
		else
			snprintf(err, errlen, "no PEM private key in %s (%s)",
			    u->tls_key, upcert_reason(why, sizeof(why),
			    "empty"));
		ERR_clear_error();
		return -1;
	}
	/* Checked first: with a key of another type than the certificate,
	 * SSL_CTX_use_PrivateKey() would take it without a word. */
	if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), k) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, k) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		EVP_PKEY_free(k);
		ERR_clear_error();
		snprintf(err, errlen, "the key in %s does not match the "
		    "certificate in %s", u->tls_key, u->tls_cert);
		return -1;
	}
	EVP_PKEY_free(k);
	return 0;
}

int
upcert_load(struct upstream_cfg *u, struct arena *arena, char *err,
    size_t errlen, enum upcert_file *which)
{
	SSL_CTX *ctx;
	int rc;

	*which = UPCERT_CERT;
	if (upcert_read(u->tls_cert, arena, &u->tls_cert_pem,
	    &u->tls_cert_len, err, errlen) == -1)
		return -1;
	*which = UPCERT_KEY;
	if (upcert_read(u->tls_key, arena, &u->tls_key_pem,
	    &u->tls_key_len, err, errlen) == -1)
		return -1;
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "cannot make a TLS context");
		ERR_clear_error();
		return -1;
	}
	rc = upcert_use(ctx, u, err, errlen, which);
	SSL_CTX_free(ctx);
	return rc;
}
