/*
 * Fuzz target: agate's HTTP/2 upstream client (gateway/upstream/h2up.c
 * and h2upconn.c), fed what an h2c:// server could send.  A real worker
 * runs the real gateway on a config whose one route goes to an h2c://
 * server: a listening socket of this process.  Each input is one client
 * request (a GET, or a POST with a body, by the input's first byte) on
 * one end of a socketpair; once agate connects upstream, the rest of
 * the input is the server's side of that connection, after which the
 * server closes it and the client goes away.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/config/config.h"
#include "gateway/gateway.h"
#include "gateway/metrics/metrics.h"
#include "worker/conn.h"
#include "worker/worker.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct listener	lst;
static int		server_fd = -1;

/* The "upstream": a listening socket on a port the kernel picks. */
static int
fuzz_listen(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	server_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (server_fd == -1 ||
	    bind(server_fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    listen(server_fd, 16) == -1 ||
	    getsockname(server_fd, (struct sockaddr *)&sa, &len) == -1)
		return -1;
	return ntohs(sa.sin_port);
}

static int
fuzz_setup(void)
{
	char path[] = "/tmp/agate-fuzz-h2up-XXXXXX", err[512];
	struct config *cfg;
	FILE *f;
	int fd, port;

	if ((port = fuzz_listen()) == -1 ||
	    (fd = mkstemp(path)) == -1 || (f = fdopen(fd, "w")) == NULL)
		return -1;
	fprintf(f,
	    "server:\n"
	    "  listen: [\"127.0.0.1:1\"]\n"
	    "  max_body_size: 64k\n"
	    "log: {level: error, access: off}\n"
	    "upstreams:\n"
	    "  u:\n"
	    "    servers: [\"h2c://127.0.0.1:%d\"]\n"
	    "    keepalive: 0\n"
	    "    retry: {attempts: 1}\n"
	    "routes:\n"
	    "  - path: /\n"
	    "    upstream: u\n"
	    "    timeout: 5s\n", port);
	fclose(f);
	cfg = config_load(path, err, sizeof(err));
	unlink(path);
	if (cfg == NULL) {
		fprintf(stderr, "fuzz_h2up: %s\n", err);
		return -1;
	}
	if (metrics_init() == 0)
		metrics_assign(cfg);
	metrics_attach(metrics_stripe_take());
	worker.cfg = cfg;
	worker.app = &gateway_app;
	worker.rbuf_size = cfg->server.max_header_size + 4096;
	worker.accepting = true;	/* no listeners to resume */
	if ((worker.base = event_base_new()) == NULL)
		return -1;
	conn_init_worker();
	if (gateway_app.init(worker.base, cfg) == -1)
		return -1;
	lst.fd = -1;
	lst.cfg = &cfg->server.listen[0];
	return 0;
}

/* Runs the loop once, then throws away what reached either far end. */
static void
fuzz_turn(int client, int server)
{
	char sink[65536];

	event_base_loop(worker.base, EVLOOP_NONBLOCK);
	while (read(client, sink, sizeof(sink)) > 0)
		;
	while (server != -1 && read(server, sink, sizeof(sink)) > 0)
		;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char get[] = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
	static const char post[] = "POST /b HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5\r\nContent-Type: application/grpc\r\n\r\nhello";
	static int ready;
	struct sockaddr_storage ss = { .ss_family = AF_UNIX };
	const char *req;
	size_t off = 1;
	ssize_t n;
	int sv[2], s = -1, i;

	if (!ready) {
		if (fuzz_setup() == -1)
			abort();
		ready = 1;
	}
	/* What the last input left connecting (a stream sent again). */
	while ((s = accept4(server_fd, NULL, NULL, 0)) != -1)
		close(s);
	if (size == 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == -1)
		return 0;
	conn_accept(&lst, sv[0], (struct sockaddr *)&ss, sizeof(ss));
	req = data[0] & 1 ? post : get;
	if (write(sv[1], req, strlen(req)) < 0)
		goto out;
	for (i = 0; i < 20 && s == -1; i++) {
		fuzz_turn(sv[1], -1);
		s = accept4(server_fd, NULL, NULL, SOCK_NONBLOCK);
	}
	if (s == -1)
		goto out;
	for (i = 0; i < 16; i++) {
		if (off < size && (n = write(s, data + off, size - off)) > 0)
			off += (size_t)n;
		fuzz_turn(sv[1], s);
	}
	close(s);
	for (i = 0; i < 4; i++)
		fuzz_turn(sv[1], -1);
out:
	conn_close_all("fuzz");
	close(sv[1]);
	for (i = 0; i < 2; i++)
		event_base_loop(worker.base, EVLOOP_NONBLOCK);
	return 0;
}
