/*
 * The job kinds: kind -> function.  Each function is pure computation on
 * its payload (the layouts are in offload.h), so the same code runs in a
 * helper and inline on the loop.  A new kind is one function and one row,
 * here for the built-in ones, or in a table of its owner's that
 * offload_add_kinds() adds (fan-out's merge lives with fan-out).
 */
#include <crypt.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zlib.h>

#include "offload/offload.h"

static const struct job_kind_def *added[OFFLOAD_KIND_TABLES];

static uint32_t
get_u32(const char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/*
 * One piece of a gzip body.  Each piece gets a fresh deflate stream
 * primed with the 32 KiB before it (pigz's trick): the output
 * concatenates into one valid stream because every piece but the last
 * ends with a sync flush, and the dictionary keeps the ratio close to
 * compressing the body in one go.
 */
static int
job_gzip(const char *in, size_t n, struct buf *out)
{
	/* Reused: deflateInit2() allocates and clears ~270 KiB, which
	 * costs more than compressing a few KiB. */
	static z_stream z;
	static bool ready;
	uint32_t flags, dlen, crc;
	const char *data;
	size_t len, bound;
	int rc;

	if (n < 8)
		return JOB_BAD_INPUT;
	flags = get_u32(in);
	dlen = get_u32(in + 4);
	if (dlen > GZ_DICT_MAX || dlen > n - 8)
		return JOB_BAD_INPUT;
	data = in + 8 + dlen;
	len = n - 8 - dlen;
	if (!ready) {
		memset(&z, 0, sizeof(z));
		if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8,
		    Z_DEFAULT_STRATEGY) != Z_OK)
			return JOB_FAILED;
		ready = true;
	} else if (deflateReset(&z) != Z_OK)
		goto fail;
	if (dlen > 0 && deflateSetDictionary(&z, (const Bytef *)in + 8,
	    dlen) != Z_OK)
		goto fail;
	/* deflateBound() covers Z_FINISH; a sync flush adds a few bytes. */
	bound = deflateBound(&z, (uLong)len) + 16;
	if (buf_reserve(out, 4 + bound) == -1)
		return JOB_FAILED;
	crc = (uint32_t)crc32(0, (const Bytef *)data, (uInt)len);
	memcpy(out->data + out->len, &crc, 4);
	z.next_in = (Bytef *)data;
	z.avail_in = (uInt)len;
	z.next_out = (Bytef *)out->data + out->len + 4;
	z.avail_out = (uInt)bound;
	if (flags & GZ_FINAL)
		rc = deflate(&z, Z_FINISH) == Z_STREAM_END ? Z_OK : Z_BUF_ERROR;
	else
		rc = deflate(&z, Z_SYNC_FLUSH);
	if (rc != Z_OK || z.avail_in != 0)
		goto fail;
	out->len += 4 + (bound - z.avail_out);
	return JOB_OK;
fail:
	deflateEnd(&z);
	ready = false;
	return JOB_FAILED;
}

/*
 * crypt(3) through libxcrypt's crypt_rn: bcrypt, sha-crypt, yescrypt.
 * The state is big (32 KiB) and only one job runs at a time per process,
 * so it is static.
 */
static int
job_crypt(const char *in, size_t n, struct buf *out)
{
	static struct crypt_data cd;
	char hash[256], pass[1024];
	const char *nul = memchr(in, '\0', n), *res;
	size_t hlen, plen;
	bool ok;

	if (nul == NULL)
		return JOB_BAD_INPUT;
	hlen = (size_t)(nul - in);
	plen = n - hlen - 1;
	if (hlen == 0 || hlen >= sizeof(hash) || plen >= sizeof(pass))
		return JOB_BAD_INPUT;
	memcpy(hash, in, hlen);
	hash[hlen] = '\0';
	memcpy(pass, nul + 1, plen);
	pass[plen] = '\0';
	res = crypt_rn(pass, hash, &cd, sizeof(cd));
	OPENSSL_cleanse(pass, sizeof(pass));
	ok = res != NULL && res[0] != '*' && strlen(res) == hlen &&
	    CRYPTO_memcmp(res, hash, hlen) == 0;
	return buf_append(out, ok ? "1" : "0", 1) == 0 ? JOB_OK : JOB_FAILED;
}

static int
job_hmac(const char *in, size_t n, struct buf *out)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	uint32_t slen;

	if (n < 4)
		return JOB_BAD_INPUT;
	slen = get_u32(in);
	if (slen > n - 4)
		return JOB_BAD_INPUT;
	if (HMAC(EVP_sha256(), in + 4, (int)slen,
	    (const unsigned char *)in + 4 + slen, n - 4 - slen, mac,
	    &maclen) == NULL)
		return JOB_FAILED;
	return buf_append(out, mac, maclen) == 0 ? JOB_OK : JOB_FAILED;
}

static const struct job_kind_def kinds[] = {
	{ JOB_GZIP,	"gzip",		job_gzip },
	{ JOB_CRYPT,	"crypt",	job_crypt },
	{ JOB_HMAC,	"hmac",		job_hmac },
	{ 0, NULL, NULL }
};

const struct job_kind_def *
jobs_find(unsigned kind)
{
	const struct job_kind_def *k;
	size_t i;

	for (k = kinds; k->run != NULL; k++)
		if (k->kind == kind)
			return k;
	for (i = 0; i < OFFLOAD_KIND_TABLES && added[i] != NULL; i++)
		for (k = added[i]; k->run != NULL; k++)
			if (k->kind == kind)
				return k;
	return NULL;
}

int
offload_add_kinds(const struct job_kind_def *table)
{
	size_t i;

	for (i = 0; i < OFFLOAD_KIND_TABLES; i++) {
		if (added[i] == table)
			return 0;
		if (added[i] == NULL) {
			added[i] = table;
			return 0;
		}
	}
	return -1;
}
