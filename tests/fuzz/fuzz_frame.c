/*
 * Fuzz target: the offload frame decoder and the payload parsers of the
 * job kinds, fed what a broken helper or worker could send.  Frames are
 * decoded back to back from the input, as the worker does from a pipe;
 * each payload is also given to the gzip, hmac and fan-out merge jobs
 * (crypt is left out: its cost is the input's to choose).
 */
#include <stdint.h>
#include <string.h>

#include "gateway/fanout/fanout.h"
#include "lib/buf.h"
#include "offload/frame.h"
#include "offload/offload.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	static const unsigned kinds[] = { JOB_GZIP, JOB_HMAC, JOB_JSON_MERGE };
	struct buf out = { 0 };
	struct frame f;
	size_t off = 0, used, k;

	offload_add_kinds(fanout_jobs);
	while (off < size) {
		enum frame_result rc = frame_decode(p + off, size - off, &f,
		    &used);

		if (rc != FRAME_OK)
			break;
		if (used != FRAME_HEADER + f.len || f.payload != p + off +
		    FRAME_HEADER)
			__builtin_trap();
		for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
			const struct job_kind_def *d = jobs_find(kinds[k]);

			buf_reset(&out);
			if (d != NULL && f.len < 65536)
				(void)d->run(f.payload, f.len, &out);
		}
		off += used;
	}
	buf_free(&out);
	return 0;
}
