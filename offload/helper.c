/*
 * The helper process: a plain blocking loop.  Read a frame, look its kind
 * up, run it, write the result with the same job id.  End of file on the
 * job pipe means the worker is gone: exit at once (no orphans).  Anything
 * that breaks the protocol is logged and ends the helper; the worker sees
 * the pipe close, fails that one job and starts a new helper.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "offload/frame.h"
#include "offload/offload.h"

/* 1: got n bytes; 0: end of file before any; -1: error or cut short. */
static int
read_full(int fd, char *p, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = read(fd, p + got, n - got);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		return r == 0 && got == 0 ? 0 : -1;
	}
	return 1;
}

static int
write_full(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		return -1;
	}
	return 0;
}

static void
helper_answer(int out, uint32_t id, uint16_t kind, int status,
    struct buf *res)
{
	unsigned char hdr[FRAME_HEADER];
	struct frame f;

	if (status == JOB_OK && res->len > FRAME_MAX)
		status = JOB_FAILED;
	if (status != JOB_OK)
		res->len = res->off = 0;
	f.len = (uint32_t)res->len;
	f.id = id;
	f.kind = kind;
	f.status = (uint16_t)status;
	frame_header(&f, hdr);
	if (write_full(out, (const char *)hdr, sizeof(hdr)) == -1 ||
	    write_full(out, res->data, res->len) == -1)
		_exit(0);		/* the worker is gone */
}

void
helper_main(int in, int out)
{
	unsigned char hdr[FRAME_HEADER];
	struct buf payload = { 0 }, res = { 0 };
	const struct job_kind_def *k;
	struct frame f;
	size_t used;
	int rc, status;

	for (;;) {
		if ((rc = read_full(in, (char *)hdr, sizeof(hdr))) != 1)
			_exit(rc == 0 ? 0 : 1);
		if (frame_decode((const char *)hdr, sizeof(hdr), &f, &used) ==
		    FRAME_TOO_BIG) {
			log_warnx("helper: a frame of %lu bytes is over the "
			    "limit; the stream is broken", (unsigned long)f.len);
			_exit(1);
		}
		buf_reset(&payload);
		if (buf_reserve(&payload, f.len + 1) == -1) {
			log_warnx("helper: out of memory for a %lu-byte job",
			    (unsigned long)f.len);
			_exit(1);
		}
		if (f.len > 0 && read_full(in, payload.data, f.len) != 1)
			_exit(1);
		buf_reset(&res);
		if ((k = jobs_find(f.kind)) == NULL) {
			log_warnx("helper: unknown job kind %u", f.kind);
			status = JOB_UNKNOWN_KIND;
		} else
			status = k->run(payload.data, f.len, &res);
		helper_answer(out, f.id, f.kind, status, &res);
		buf_reset(&res);
		/* Big jobs do not pin their memory in an idle helper. */
		buf_trim(&payload, 1024 * 1024);
		buf_trim(&res, 1024 * 1024);
	}
}
