/*
 * TLS termination (listeners with `tls:`), with OpenSSL.
 *
 * The contexts are made when the config is loaded, in the supervisor:
 * a certificate or key that does not load (or do not match) is a config
 * error, so a reload with a bad file keeps the old config, certificates
 * and all, serving.  Workers forked with that config use its contexts;
 * a reload's new generation gets new ones, so certificates change on HUP
 * without touching a connection the old generation still serves.
 *
 * Policy (Mozilla's "intermediate"): TLS 1.2 and 1.3 only, ECDHE with
 * AES-GCM or ChaCha20-Poly1305 for 1.2, no compression, no
 * renegotiation; ALPN offers h2 (unless the listener says `http2:
 * false`) and http/1.1.  Several certificates on one
 * listener are chosen by the client's SNI name (X509_check_host, so
 * wildcards work); the first is the default.
 *
 * The connection layer (conn.c) drives each SSL object on its
 * non-blocking socket through tls_handshake/tls_read/tls_write, which
 * map OpenSSL's WANT_READ/WANT_WRITE onto "try again when readable or
 * writable".
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "gateway/config/config.h"
#include "worker/tls.h"

#define CIPHERS_TLS12 \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct tls_set {
	SSL_CTX		**ctx;		/* one per certificate; [0] default */
	size_t		  n;
};

static const unsigned char alpn_h1[] = "\x08http/1.1";
static const unsigned char alpn_h2h1[] = "\x02h2\x08http/1.1";

/* ALPN: h2 (when the listener has http2) before http/1.1, whatever
 * order the client offers them in; else no ALPN (as nginx). */
static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	const unsigned char *ours = arg != NULL ? alpn_h2h1 : alpn_h1;
	size_t olen = arg != NULL ? sizeof(alpn_h2h1) - 1 :
	    sizeof(alpn_h1) - 1;
	unsigned char *sel;

	if (SSL_select_next_proto(&sel, outlen, ours, (unsigned)olen, in,
	    inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

bool
tls_alpn_h2(SSL *ssl)
{
	const unsigned char *p;
	unsigned int n;

	SSL_get0_alpn_selected(ssl, &p, &n);
	return n == 2 && memcmp(p, "h2", 2) == 0;
}

/* SNI: the first certificate whose names cover the asked-for host. */
static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
	const struct tls_set *set = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	size_t i;

	if (name == NULL || set->n < 2)
		return SSL_TLSEXT_ERR_OK;
	for (i = 0; i < set->n; i++) {
		X509 *x = SSL_CTX_get0_certificate(set->ctx[i]);

		if (x != NULL && X509_check_host(x, name, 0, 0, NULL) == 1) {
			if (i > 0)
				SSL_set_SSL_CTX(ssl, set->ctx[i]);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_OK;		/* the default one */
}

static void
ssl_error(char *err, size_t errlen, const char *what, const char *file)
{
	unsigned long e = ERR_get_error();
	char buf[256];

	ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s %s: %s", what, file, e ? buf :
	    "unknown error");
	ERR_clear_error();
}

static SSL_CTX *
ctx_new(const struct tls_pair *p, struct tls_set *set, bool http2,
    char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL) {
		ssl_error(err, errlen, "cannot make a TLS context for", p->cert);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	/* Most clients close without close_notify: an end, not an error
	 * (truncation cannot hurt a request with its own framing). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12) != 1) {
		ssl_error(err, errlen, "cannot set the ciphers for", p->cert);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, p->cert) != 1) {
		ssl_error(err, errlen, "cannot load the certificate", p->cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, p->key, SSL_FILETYPE_PEM) != 1) {
		ssl_error(err, errlen, "cannot load the key", p->key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_error(err, errlen, "the key does not match the certificate",
		    p->cert);
		goto fail;
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, http2 ? (void *)1 : NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, set);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int
tls_listener_load(struct listen_cfg *l, char *err, size_t errlen)
{
	struct tls_set *set;
	size_t i;

	if (l->ntls == 0)
		return 0;
	if ((set = calloc(1, sizeof(*set))) == NULL ||
	    (set->ctx = calloc(l->ntls, sizeof(*set->ctx))) == NULL) {
		free(set);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	l->tls_ctx = set;
	for (i = 0; i < l->ntls; i++) {
		if ((set->ctx[i] = ctx_new(&l->tls_pairs[i], set, l->http2,
		    err, errlen)) == NULL)
			return -1;		/* tls_listener_free() cleans */
		set->n++;
	}
	return 0;
}

void
tls_listener_free(struct listen_cfg *l)
{
	struct tls_set *set = l->tls_ctx;
	size_t i;

	if (set == NULL)
		return;
	for (i = 0; i < set->n; i++)
		SSL_CTX_free(set->ctx[i]);
	free(set->ctx);
	free(set);
	l->tls_ctx = NULL;
}

SSL *
tls_new(const struct listen_cfg *l, int fd)
{
	const struct tls_set *set = l->tls_ctx;
	SSL *ssl;

	if (set == NULL || (ssl = SSL_new(set->ctx[0])) == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

/* Maps an OpenSSL result onto ours. */
static int
tls_result(SSL *ssl, int rc, int *want)
{
	switch (SSL_get_error(ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		*want = TLS_WANT_READ;
		return TLS_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want = TLS_WANT_WRITE;
		return TLS_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_CLOSED;
	default:
		ERR_clear_error();
		return TLS_FAILED;
	}
}

/*
 * OpenSSL's error queue is per thread, and libcurl and the HMAC code use
 * the same library on this thread: an error they left would make
 * SSL_get_error() call a healthy connection broken.  So every call starts
 * from an empty queue.
 */
int
tls_handshake(SSL *ssl, int *want)
{
	int rc;

	ERR_clear_error();
	rc = SSL_do_handshake(ssl);

	if (rc == 1)
		return TLS_DONE;
	return tls_result(ssl, rc, want);
}

ssize_t
tls_read(SSL *ssl, void *p, size_t n, int *want)
{
	size_t got = 0;
	int rc;

	ERR_clear_error();
	rc = SSL_read_ex(ssl, p, n, &got);

	if (rc == 1)
		return (ssize_t)got;
	return tls_result(ssl, rc, want);
}

ssize_t
tls_write(SSL *ssl, const void *p, size_t n, int *want)
{
	size_t done = 0;
	int rc;

	ERR_clear_error();
	rc = SSL_write_ex(ssl, p, n, &done);

	if (rc == 1)
		return (ssize_t)done;
	return tls_result(ssl, rc, want);
}

bool
tls_pending(SSL *ssl)
{
	return SSL_has_pending(ssl) == 1;
}

void
tls_close(SSL *ssl, bool notify)
{
	ERR_clear_error();
	if (notify)
		SSL_shutdown(ssl);	/* one close_notify, never waited on */
	ERR_clear_error();
	SSL_free(ssl);
}

SSL *
tls_new_prefixed(const struct listen_cfg *l, int fd, const void *p,
    size_t n)
{
	SSL *ssl = tls_new(l, fd);
	BIO *mem;

	if (ssl == NULL || n == 0)
		return ssl;
	if ((mem = BIO_new(BIO_s_mem())) == NULL ||
	    BIO_write(mem, p, (int)n) != (int)n) {
		BIO_free(mem);
		SSL_free(ssl);
		return NULL;
	}
	SSL_set0_rbio(ssl, mem);	/* the write side stays the socket */
	return ssl;
}

bool
tls_prefix_done(SSL *ssl, int fd)
{
	BIO *r = SSL_get_rbio(ssl), *sock;

	if (r == NULL || BIO_method_type(r) != BIO_TYPE_MEM ||
	    BIO_ctrl_pending(r) > 0)
		return false;
	if ((sock = BIO_new_socket(fd, BIO_NOCLOSE)) == NULL)
		return false;
	SSL_set0_rbio(ssl, sock);
	return true;
}

void
tls_notify(SSL *ssl)
{
	ERR_clear_error();
	SSL_shutdown(ssl);
	ERR_clear_error();
}
