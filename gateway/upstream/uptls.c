/*
 * TLS to https:// servers on connections agate drives itself: the
 * handshake of an Upgrade (WebSocket) call and the tunnel after it, and
 * the HTTP/2 connections of gRPC calls (h2upconn.c).  (Other https
 * requests go through libcurl, which has its own.)
 *
 * One client context per upstream, made on first use in the worker: TLS
 * 1.2 and 1.3, ALPN http/1.1 only (an Upgrade is an HTTP/1.1 exchange, so
 * a server that prefers h2 must not choose it) or, for an HTTP/2
 * connection, h2 only; and, with tls.verify,
 * the server's certificate checked against tls.ca (or the system's
 * store) and against the server's host name or address, as libcurl
 * checks it for the same upstream; with tls.cert and tls.key, the client
 * certificate chain (upcert.c) for servers that ask for one.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "gateway/upstream/upcert.h"
#include "gateway/upstream/upconn.h"
#include "lib/log.h"

static const unsigned char alpn_h1[] = "\x08http/1.1";
static const unsigned char alpn_h2[] = "\x02h2";

static SSL_CTX *
uptls_ctx(struct upstream_rt *up)
{
	const struct upstream_cfg *u = up->cfg;
	enum upcert_file which;
	char err[512];
	SSL_CTX *ctx;

	if (up->tls_ctx != NULL)
		return up->tls_ctx;
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_alpn_protos(ctx, alpn_h1, sizeof(alpn_h1) - 1) != 0)
		goto fail;
	if (u->tls_verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if ((u->tls_ca != NULL ? SSL_CTX_load_verify_locations(ctx,
		    u->tls_ca, NULL) : SSL_CTX_set_default_verify_paths(ctx))
		    != 1) {
			log_warnx("upstream %s: cannot load the CA certificates "
			    "%s", u->name, u->tls_ca ? u->tls_ca : "(system)");
			goto fail;
		}
	}
	/* Checked at load: this fails only when memory does. */
	if (u->tls_cert_pem != NULL &&
	    upcert_use(ctx, u, err, sizeof(err), &which) == -1) {
		log_warnx("upstream %s: client certificate: %s", u->name, err);
		goto fail;
	}
	up->tls_ctx = ctx;
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

SSL *
uptls_new(struct upstream_rt *up, const struct server_rt *srv, int fd,
    bool h2)
{
	const char *h = srv->cfg->host;
	size_t hl = strlen(h);
	unsigned char addr[16];
	SSL_CTX *ctx = uptls_ctx(up);
	char host[256];
	SSL *ssl;
	bool ip;

	/* "[::1]" in a URL is the address ::1. */
	if (h[0] == '[' && hl >= 2)
		snprintf(host, sizeof(host), "%.*s", (int)(hl - 2), h + 1);
	else
		snprintf(host, sizeof(host), "%s", h);
	if (ctx == NULL || (ssl = SSL_new(ctx)) == NULL)
		return NULL;
	ip = inet_pton(AF_INET, host, addr) == 1 ||
	    inet_pton(AF_INET6, host, addr) == 1;
	if (SSL_set_fd(ssl, fd) != 1 ||
	    (h2 && SSL_set_alpn_protos(ssl, alpn_h2, sizeof(alpn_h2) - 1) != 0) ||
	    (!ip && SSL_set_tlsext_host_name(ssl, host) != 1) ||
	    (up->cfg->tls_verify && (ip ?
	    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) :
	    SSL_set1_host(ssl, host)) != 1)) {
		ERR_clear_error();
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}

bool
uptls_is_h2(SSL *ssl)
{
	const unsigned char *p;
	unsigned int n;

	SSL_get0_alpn_selected(ssl, &p, &n);
	return n == 2 && memcmp(p, "h2", 2) == 0;
}

const char *
uptls_failure(SSL *ssl)
{
	long v = SSL_get_verify_result(ssl);

	if (v != X509_V_OK)
		return X509_verify_cert_error_string(v);
	return "TLS handshake failed";
}

void
uptls_free(struct upstream_rt *up)
{
	SSL_CTX_free(up->tls_ctx);
	up->tls_ctx = NULL;
}
