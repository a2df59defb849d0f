/*
 * One libcurl multi handle per worker, driven by the worker's libevent
 * loop through CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION (the shape
 * of curl's hiperfifo.c example).  Transfers are jobs: whoever adds an
 * easy handle gives a struct curl_job whose done() runs once the transfer
 * ends, and done() must curlev_remove() the handle.
 */
#ifndef AGATE_CURLEV_H
#define AGATE_CURLEV_H

#include <curl/curl.h>

struct event_base;
struct server_cfg;
struct upstream_cfg;

struct curl_job {
	void	(*done)(struct curl_job *, CURLcode);
};

int	curlev_init(struct event_base *, long maxconnects);
void	curlev_free(void);
int	curlev_add(CURL *, struct curl_job *);
void	curlev_remove(CURL *);
/* Certificate checks for an https server, per the upstream's tls, and
 * the client certificate when it has one. */
void	curlev_tls(CURL *, const struct upstream_cfg *,
	    const struct server_cfg *);
/*
 * What every transfer to an upstream server sets: no proxy from the
 * environment, HTTP/2 over TLS when offered, the path as it is, no
 * signals, TCP_NODELAY, the pooled connection's age, and curlev_tls().
 */
void	curlev_upstream(CURL *, const struct upstream_cfg *,
	    const struct server_cfg *);

#endif
