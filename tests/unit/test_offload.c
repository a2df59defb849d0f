/*
 * The offload pool's pure parts and its real pipes:
 *
 *   frame_*()      headers round-trip; a frame fed in any split decodes
 *                  only when whole, several in one buffer come out in
 *                  order with their own ids, an oversize one is refused.
 *   jobs (kinds)   gzip pieces (with dictionaries) concatenate into one
 *                  deflate stream that zlib inflates back; crypt accepts
 *                  the right password only; HMAC matches RFC 4231.
 *   offload_*()    a real pool (two helpers, forked here) with its event
 *                  loop: many jobs in flight, each answer reaches the
 *                  job that asked, a cancelled one never calls back, the
 *                  queue limit refuses, and nothing is left running.
 *   compress_accepts_gzip(), signature_parse(), htpasswd_load(): table
 *                  driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <crypt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <zlib.h>

#include "gateway/config/config.h"
#include "gateway/gateway.h"
#include "gateway/policy/compress.h"
#include "gateway/policy/htpasswd.h"
#include "gateway/policy/signature.h"
#include "offload/frame.h"
#include "offload/offload.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* -- frames -------------------------------------------------------------- */

static size_t
put_frame(char *out, uint32_t id, uint16_t kind, uint16_t status,
    const char *payload, uint32_t len)
{
	struct frame f = { len, id, kind, status, NULL };

	frame_header(&f, (unsigned char *)out);
	memcpy(out + FRAME_HEADER, payload, len);
	return FRAME_HEADER + len;
}

static void
test_frame_round_trip(void **state)
{
	char buf[64];
	struct frame f;
	size_t used, n = put_frame(buf, 0xdeadbeef, JOB_HMAC, JOB_LOST,
	    "hello", 5);

	assert_int_equal(frame_decode(buf, n, &f, &used), FRAME_OK);
	assert_int_equal(used, n);
	assert_int_equal(f.id, 0xdeadbeef);
	assert_int_equal(f.kind, JOB_HMAC);
	assert_int_equal(f.status, JOB_LOST);
	assert_int_equal(f.len, 5);
	assert_memory_equal(f.payload, "hello", 5);
}

/* Every prefix of a frame is "more"; only the whole of it decodes. */
static void
test_frame_split_reads(void **state)
{
	char buf[256], payload[100];
	struct frame f;
	size_t used, n, i;

	for (i = 0; i < sizeof(payload); i++)
		payload[i] = (char)i;
	n = put_frame(buf, 7, JOB_GZIP, 0, payload, sizeof(payload));
	for (i = 0; i < n; i++) {
		assert_int_equal(frame_decode(buf, i, &f, &used), FRAME_MORE);
		assert_int_equal(used, 0);
	}
	assert_int_equal(frame_decode(buf, n, &f, &used), FRAME_OK);
	assert_memory_equal(f.payload, payload, sizeof(payload));
}

/* Back to back, as one read may bring them: in order, ids intact. */
static void
test_frame_several_in_one_buffer(void **state)
{
	char buf[512];
	size_t n = 0, off = 0, used;
	struct frame f;
	uint32_t id;

	for (id = 1; id <= 5; id++)
		n += put_frame(buf + n, id * 11, JOB_CRYPT, 0, "abcde", id);
	for (id = 1; id <= 5; id++) {
		assert_int_equal(frame_decode(buf + off, n - off, &f, &used),
		    FRAME_OK);
		assert_int_equal(f.id, id * 11);
		assert_int_equal(f.len, id);
		off += used;
	}
	assert_int_equal(off, n);
	assert_int_equal(frame_decode(buf + off, 0, &f, &used), FRAME_MORE);
}

static void
test_frame_oversize_refused(void **state)
{
	struct frame big = { FRAME_MAX + 1, 1, JOB_GZIP, 0, NULL };
	struct frame max = { FRAME_MAX, 2, JOB_GZIP, 0, NULL };
	unsigned char h[FRAME_HEADER];
	struct frame f;
	size_t used;

	frame_header(&big, h);
	assert_int_equal(frame_decode((char *)h, sizeof(h), &f, &used),
	    FRAME_TOO_BIG);
	/* The limit itself is allowed (and needs its payload). */
	frame_header(&max, h);
	assert_int_equal(frame_decode((char *)h, sizeof(h), &f, &used),
	    FRAME_MORE);
}

/* -- job kinds ----------------------------------------------------------- */

static int
run(unsigned kind, const void *a, size_t alen, const void *b, size_t blen,
    const void *c, size_t clen, struct buf *out)
{
	struct iovec iov[3] = { { (void *)a, alen }, { (void *)b, blen },
	    { (void *)c, clen } };

	return offload_run_inline(kind, iov, 3, out);
}

/* Pieces of 40000 bytes, each primed with the 32 KiB before it. */
static void
test_gzip_pieces_form_one_stream(void **state)
{
	size_t total = 150000, piece = 40000, off, dlen;
	unsigned char *src = malloc(total), *back = malloc(total);
	struct buf stream = { 0 }, out = { 0 };
	uint32_t crc = 0, pcrc, hdr[2];
	z_stream z;

	for (off = 0; off < total; off++)
		src[off] = (unsigned char)("abcdefghij"[(off * 7) % 10] +
		    (off / 1000) % 3);
	for (off = 0; off < total; off += piece) {
		size_t n = total - off < piece ? total - off : piece;

		dlen = off < GZ_DICT_MAX ? off : GZ_DICT_MAX;
		hdr[0] = off + n == total ? GZ_FINAL : 0;
		hdr[1] = (uint32_t)dlen;
		buf_reset(&out);
		assert_int_equal(run(JOB_GZIP, hdr, sizeof(hdr),
		    src + off - dlen, dlen, src + off, n, &out), JOB_OK);
		memcpy(&pcrc, out.data, 4);
		assert_int_equal(pcrc, crc32(0, src + off, (uInt)n));
		crc = (uint32_t)crc32_combine(crc, pcrc, (z_off_t)n);
		buf_append(&stream, out.data + 4, out.len - 4);
	}
	assert_int_equal(crc, crc32(0, src, (uInt)total));
	assert_true(stream.len < total / 4);
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, -15), Z_OK);
	z.next_in = (Bytef *)stream.data;
	z.avail_in = (uInt)stream.len;
	z.next_out = back;
	z.avail_out = (uInt)total;
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.total_out, total);
	assert_int_equal(z.avail_in, 0);
	inflateEnd(&z);
	assert_memory_equal(back, src, total);
	buf_free(&stream);
	buf_free(&out);
	free(src);
	free(back);
}

static void
test_gzip_refuses_bad_payloads(void **state)
{
	struct buf out = { 0 };
	uint32_t hdr[2] = { 0, 40000 };	/* dictionary over the limit */

	assert_int_equal(run(JOB_GZIP, hdr, 4, NULL, 0, NULL, 0, &out),
	    JOB_BAD_INPUT);
	assert_int_equal(run(JOB_GZIP, hdr, 8, "x", 1, NULL, 0, &out),
	    JOB_BAD_INPUT);
	buf_free(&out);
}

static void
test_crypt_right_password_only(void **state)
{
	static const char *const prefixes[] = { "$2b$", "$5$", "$6$", "$y$" };
	struct buf out = { 0 };
	char hash[256];
	size_t i;

	for (i = 0; i < NELEM(prefixes); i++) {
		const char *set = crypt_gensalt(prefixes[i],
		    prefixes[i][1] == '2' ? 4 : 0, NULL, 0);

		assert_non_null(set);
		snprintf(hash, sizeof(hash), "%s", crypt("open sesame", set));
		assert_non_null(htpasswd_hash_kind(hash));
		buf_reset(&out);
		assert_int_equal(run(JOB_CRYPT, hash, strlen(hash) + 1,
		    "open sesame", 11, NULL, 0, &out), JOB_OK);
		assert_memory_equal(out.data, "1", 1);
		buf_reset(&out);
		assert_int_equal(run(JOB_CRYPT, hash, strlen(hash) + 1,
		    "open sesam", 10, NULL, 0, &out), JOB_OK);
		assert_memory_equal(out.data, "0", 1);
	}
	/* No NUL between hash and password: refused, not guessed at. */
	assert_int_equal(run(JOB_CRYPT, "abc", 3, NULL, 0, NULL, 0, &out),
	    JOB_BAD_INPUT);
	buf_free(&out);
}

/* RFC 4231, test case 2. */
static void
test_hmac_rfc4231(void **state)
{
	static const unsigned char want[32] = {
		0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04,
		0x24, 0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08,
		0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec,
		0x38, 0x43 };
	const char *data = "what do ya want for nothing?";
	uint32_t klen = 4;
	struct buf out = { 0 };

	assert_int_equal(run(JOB_HMAC, &klen, 4, "Jefe", 4, data,
	    strlen(data), &out), JOB_OK);
	assert_int_equal(out.len, 32);
	assert_memory_equal(out.data, want, 32);
	buf_reset(&out);
	klen = 99;				/* longer than the payload */
	assert_int_equal(run(JOB_HMAC, &klen, 4, "Jefe", 4, NULL, 0, &out),
	    JOB_BAD_INPUT);
	buf_free(&out);
}

/* -- a real pool ---------------------------------------------------------- */

#define NJOBS	40

struct answer {
	int		 calls;
	int		 status;
	unsigned char	 mac[32];
};

static struct answer answers[NJOBS];
static int pending;
static struct event_base *loop;

static void
pool_done(void *arg, int status, const char *out, size_t len)
{
	struct answer *a = arg;

	a->calls++;
	a->status = status;
	if (status == JOB_OK && len == 32)
		memcpy(a->mac, out, 32);
	if (--pending == 0)
		event_base_loopbreak(loop);
}

static void
test_pool_answers_reach_their_jobs(void **state)
{
	struct config cfg = { 0 };
	struct job *jobs[NJOBS];
	char data[NJOBS][32];
	uint32_t klen = 3;
	int i, cancelled = 7;

	cfg.offload_processes = 2;
	cfg.offload_queue_limit = NJOBS - 2 - 2;	/* see below */
	cfg.offload_job_timeout_ms = 10000;
	assert_int_equal(offload_init(&cfg), 0);
	loop = event_base_new();
	assert_int_equal(offload_start(loop), 0);
	memset(answers, 0, sizeof(answers));
	pending = 0;
	for (i = 0; i < NJOBS; i++) {
		struct iovec iov[3] = { { &klen, 4 }, { "key", 3 },
		    { data[i], 0 } };

		iov[2].iov_len = (size_t)snprintf(data[i], sizeof(data[i]),
		    "job number %d", i);
		jobs[i] = offload_submit(JOB_HMAC, iov, 3, pool_done,
		    &answers[i]);
		/* Two run at once, the rest wait: the last two are over
		 * the queue limit. */
		if (i >= NJOBS - 2) {
			assert_null(jobs[i]);
			continue;
		}
		assert_non_null(jobs[i]);
		pending++;
	}
	offload_cancel(jobs[cancelled]);	/* queued: never runs */
	pending--;
	assert_int_equal(offload_stats()->rejected, 2);
	event_base_dispatch(loop);
	for (i = 0; i < NJOBS - 2; i++) {
		struct buf want = { 0 };
		struct iovec iov[3] = { { &klen, 4 }, { "key", 3 },
		    { data[i], strlen(data[i]) } };

		if (i == cancelled) {
			assert_int_equal(answers[i].calls, 0);
			continue;
		}
		assert_int_equal(answers[i].calls, 1);
		assert_int_equal(answers[i].status, JOB_OK);
		assert_int_equal(offload_run_inline(JOB_HMAC, iov, 3, &want),
		    JOB_OK);
		assert_memory_equal(answers[i].mac, want.data, 32);
		buf_free(&want);
	}
	assert_int_equal(offload_stats()->done_ok, NJOBS - 3);
	offload_free();
	event_base_free(loop);
	/* Both helpers are reaped: no child is left. */
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
}

/* -- parsing -------------------------------------------------------------- */

static void
test_accept_encoding(void **state)
{
	static const struct { const char *v; bool gzip; } cases[] = {
		{ "gzip", true }, { "GZip", true }, { "x-gzip", true },
		{ "deflate, gzip;q=0.5", true }, { "br;q=1.0, gzip ;q=0.8",
		    true }, { "*", true }, { "*;q=0.1", true },
		{ "", false }, { "identity", false }, { "br, deflate", false },
		{ "gzip;q=0", false }, { "gzip; q=0.000", false },
		{ "*;q=0", false }, { "gzip;q=0, *", false },
		{ "gzipx", false }, { "xgzip", false },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++)
		if (compress_accepts_gzip(cases[i].v, strlen(cases[i].v)) !=
		    cases[i].gzip)
			fail_msg("Accept-Encoding: %s", cases[i].v);
}

static void
test_signature_parse(void **state)
{
	unsigned char mac[32];
	char v[80];

	snprintf(v, sizeof(v), "sha256=%s", "00ff00ff00ff00ff00ff00ff00ff00ff"
	    "0123456789abcdefABCDEF0123456789");
	assert_true(signature_parse(v, strlen(v), mac));
	assert_int_equal(mac[1], 0xff);
	assert_int_equal(mac[31], 0x89);
	assert_int_equal(mac[24], 0xab);
	assert_false(signature_parse(v, strlen(v) - 1, mac));
	v[7] = 'g';
	assert_false(signature_parse(v, strlen(v), mac));
	assert_false(signature_parse("sha1=abc", 8, mac));
	assert_false(signature_parse("", 0, mac));
}

static void
test_htpasswd_load(void **state)
{
	static const struct { const char *text, *err; } cases[] = {
		{ "ann:secret\n", "x:1:5: user 'ann': plain-text" },
		{ "# c\n\nbob:$apr1$ab$cd\n", "x:3:5: user 'bob': Apache MD5" },
		{ "carl:{SHA}abc=\n", "x:1:6: user 'carl': {SHA}" },
		{ "dora:$2y$05$short\n", "x:1:6: user 'dora': unsupported or "
		    "malformed" },
		{ "nocolon\n", "x:1:1: expected user:hash" },
		{ "# nothing\n", "x:1:1: no users" },
	};
	char path[] = "/tmp/agate-htpasswd-XXXXXX", err[512], want[64];
	const struct htpasswd_user *u;
	struct arena a = { 0 };
	struct htpasswd *t;
	const char *good;
	size_t i;
	FILE *f;
	int fd;

	for (i = 0; i < NELEM(cases); i++) {
		fd = mkstemp(path);
		assert_true(fd >= 0);
		f = fdopen(fd, "w");
		fputs(cases[i].text, f);
		fclose(f);
		assert_null(htpasswd_load(path, &a, err, sizeof(err)));
		snprintf(want, sizeof(want), "%s%s", path, cases[i].err + 1);
		if (strncmp(err, want, strlen(want)) != 0)
			fail_msg("got '%s', want '%s...'", err, want);
		unlink(path);
		strcpy(path, "/tmp/agate-htpasswd-XXXXXX");
	}
	good = crypt("pw", crypt_gensalt("$6$", 0, NULL, 0));
	fd = mkstemp(path);
	f = fdopen(fd, "w");
	fprintf(f, "zed:%s\nann:%s:comment\nbo:%s\n", good, good, good);
	fclose(f);
	t = htpasswd_load(path, &a, err, sizeof(err));
	unlink(path);
	assert_non_null(t);
	assert_int_equal(t->n, 3);
	assert_non_null(u = htpasswd_find(t, "ann", 3));
	assert_string_equal(u->hash, good);
	assert_non_null(htpasswd_find(t, "bo", 2));
	assert_null(htpasswd_find(t, "b", 1));
	assert_null(htpasswd_find(t, "bob", 3));
	assert_non_null(htpasswd_find(t, "zed", 3));
	arena_free(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_round_trip),
		cmocka_unit_test(test_frame_split_reads),
		cmocka_unit_test(test_frame_several_in_one_buffer),
		cmocka_unit_test(test_frame_oversize_refused),
		cmocka_unit_test(test_gzip_pieces_form_one_stream),
		cmocka_unit_test(test_gzip_refuses_bad_payloads),
		cmocka_unit_test(test_crypt_right_password_only),
		cmocka_unit_test(test_hmac_rfc4231),
		cmocka_unit_test(test_pool_answers_reach_their_jobs),
		cmocka_unit_test(test_accept_encoding),
		cmocka_unit_test(test_signature_parse),
		cmocka_unit_test(test_htpasswd_load),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
