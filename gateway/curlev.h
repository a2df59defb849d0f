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

struct curl_job {
	void	(*done)(struct curl_job *, CURLcode);
};

int	curlev_init(struct event_base *, long maxconnects);
void	curlev_free(void);
int	curlev_add(CURL *, struct curl_job *);
void	curlev_remove(CURL *);

#endif
