/*
 * Fuzz target: the HTTP/2 input path of a client connection (worker/h2.c
 * on libnghttp2), fed what a client could send after the connection
 * preface.  A real connection (conn_accept on one end of a socketpair)
 * takes the bytes; streams whose headers complete become requests for a
 * small gateway that reads the body, answers, or refuses, so the
 * carrier's calls run too; the flush pass writes the frames out, and the
 * connection is closed at the end of each input, every stream with it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/config/config.h"
#include "worker/conn.h"
#include "worker/h2.h"
#include "worker/worker.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Answers by the path's last character: body echoed, 404, or cut. */
static void
fuzz_handle(struct request *r)
{
	char body[4096];
	ssize_t n;
	char last = r->head.path_len > 0 ?
	    r->head.path[r->head.path_len - 1] : '/';

	switch (last) {
	case 'b':
		n = req_read_body(r, body, sizeof(body));
		if (n == REQ_BODY_ERROR)
			return;
		req_respond(r, 200, "text/plain", body, n > 0 ? (size_t)n : 0,
		    NULL);
		break;
	case 'x':
		if (req_start_response(r, 200, NULL, 0, "", 0, -1) == 0)
			req_write_body(r, "partial", 7);
		req_fail(r, "fuzz cut");
		break;
	default:
		req_error(r, 404, "no route matches this path", NULL);
		break;
	}
}

static int
fuzz_init(struct event_base *b, const struct config *c)
{
	return 0;
}

static void
fuzz_nothing(void)
{
}

static const struct worker_app fuzz_app = {
	.init = fuzz_init,
	.handle = fuzz_handle,
	.tick = fuzz_nothing,
	.shutdown = fuzz_nothing,
};

static struct listener lst;

static int
fuzz_setup(void)
{
	static const char yaml[] =
	    "server:\n"
	    "  listen: [\"127.0.0.1:1\"]\n"
	    "  max_body_size: 64k\n"
	    "  http2: {max_concurrent_streams: 8, max_header_list_size: 4k}\n"
	    "log: {level: error, access: off}\n";
	char path[] = "/tmp/agate-fuzz-h2-XXXXXX", err[512];
	struct config *cfg;
	FILE *f;
	int fd;

	if ((fd = mkstemp(path)) == -1 || (f = fdopen(fd, "w")) == NULL)
		return -1;
	fwrite(yaml, 1, sizeof(yaml) - 1, f);
	fclose(f);
	cfg = config_load(path, err, sizeof(err));
	unlink(path);
	if (cfg == NULL)
		return -1;
	worker.cfg = cfg;
	worker.app = &fuzz_app;
	worker.rbuf_size = cfg->server.max_header_size + 4096;
	worker.accepting = true;	/* no listeners to resume */
	if ((worker.base = event_base_new()) == NULL)
		return -1;
	conn_init_worker();
	lst.fd = -1;
	lst.cfg = &cfg->server.listen[0];
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct sockaddr_storage ss = { .ss_family = AF_UNIX };
	char sink[65536], *in;
	struct conn *c;
	int sv[2], i;

	if (!ready) {
		if (fuzz_setup() == -1)
			abort();
		ready = 1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == -1)
		return 0;
	conn_accept(&lst, sv[0], (struct sockaddr *)&ss, sizeof(ss));
	c = TAILQ_LAST(&conns, conn_list);
	if (c == NULL || c->fd != sv[0] ||
	    (in = malloc(H2_PREFACE_LEN + size)) == NULL) {
		close(sv[1]);
		conn_close_all("fuzz");
		return 0;
	}
	memcpy(in, H2_PREFACE, H2_PREFACE_LEN);
	memcpy(in + H2_PREFACE_LEN, data, size);
	if (h2_start(c, in, H2_PREFACE_LEN + size) == 0)
		for (i = 0; i < 4; i++) {
			event_base_loop(worker.base, EVLOOP_NONBLOCK);
			while (read(sv[1], sink, sizeof(sink)) > 0)
				;
		}
	free(in);
	conn_close_all("fuzz");
	close(sv[1]);
	return 0;
}
