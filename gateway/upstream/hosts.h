/*
 * Names in a hosts file (hosts(5)), looked up before DNS so that
 * localhost and the machine's own names work as getaddrinfo() made them
 * work: dns.c reads /etc/hosts and asks hosts_find() first.
 */
#ifndef AGATE_HOSTS_H
#define AGATE_HOSTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * The addresses that text (a hosts file's contents, len bytes, not
 * NUL-terminated) gives name, case-insensitively, each with port, in
 * file order and without repeats: up to max of them into sa and len.
 * Returns how many.
 */
size_t	hosts_find(const char *text, size_t len, const char *name,
	    uint16_t port, struct sockaddr_storage *sa, socklen_t *salen,
	    size_t max);

#endif
