/*
 * The merged answer of a fan-out (modes all and partial): one JSON object
 * with a key per call.  A call's body goes in as parsed JSON when it is
 * JSON, else as a string; a failed call goes in as {"error", "status"}
 * (and "body", when the upstream answered).  Parsing big bodies is CPU
 * work, so this is a job kind (JOB_JSON_MERGE): fanout.c runs it on the
 * loop when the bodies are small and in the offload pool when they are
 * not.  The input is a flat list of entries (see fanout.h).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/fanout/fanout.h"
#include "offload/offload.h"

json_t *
fanout_merge_body(const char *p, size_t n)
{
	json_t *j;
	char *copy;
	size_t i;

	if (n == 0)
		return json_null();
	if ((j = json_loadb(p, n, JSON_DECODE_ANY, NULL)) != NULL)
		return j;
	if ((j = json_stringn(p, n)) != NULL)
		return j;
	/* Not UTF-8: carried with the offending bytes replaced. */
	if ((copy = malloc(n)) == NULL)
		return json_null();
	for (i = 0; i < n; i++)
		copy[i] = (unsigned char)p[i] < 0x80 ? p[i] : '?';
	j = json_stringn(copy, n);
	free(copy);
	return j != NULL ? j : json_null();
}

static json_t *
merge_value(uint32_t kind, uint32_t status, const char *text, size_t len)
{
	json_t *o;
	char msg[64];

	if (kind == MERGE_OK)
		return fanout_merge_body(text, len);
	o = json_object();
	if (kind == MERGE_ERROR) {
		json_object_set_new(o, "error", json_stringn(text, len));
		json_object_set_new(o, "status", json_integer(status));
		return o;
	}
	snprintf(msg, sizeof(msg), "upstream answered %u", status);
	json_object_set_new(o, "error", json_string(msg));
	json_object_set_new(o, "status", json_integer(status));
	json_object_set_new(o, "body", fanout_merge_body(text, len));
	return o;
}

static int
take_u32(const char **p, const char *end, uint32_t *v)
{
	if (end - *p < 4)
		return -1;
	memcpy(v, *p, 4);
	*p += 4;
	return 0;
}

int
fanout_merge_run(const char *in, size_t n, struct buf *out)
{
	const char *p = in, *end = in + n;
	json_t *o = json_object();
	char *text;
	int rc;

	if (o == NULL)
		return JOB_FAILED;
	while (p < end) {
		uint32_t nlen, kind, status, tlen;
		char name[256];

		if (take_u32(&p, end, &nlen) == -1 || nlen >= sizeof(name) ||
		    (size_t)(end - p) < nlen)
			goto bad;
		memcpy(name, p, nlen);
		name[nlen] = '\0';
		p += nlen;
		if (take_u32(&p, end, &kind) == -1 || kind > MERGE_STATUS ||
		    take_u32(&p, end, &status) == -1 ||
		    take_u32(&p, end, &tlen) == -1 || (size_t)(end - p) < tlen)
			goto bad;
		json_object_set_new(o, name, merge_value(kind, status, p,
		    tlen));
		p += tlen;
	}
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (text == NULL)
		return JOB_FAILED;
	rc = buf_append(out, text, strlen(text));
	free(text);
	return rc == 0 ? JOB_OK : JOB_FAILED;
bad:
	json_decref(o);
	return JOB_BAD_INPUT;
}

int
fanout_merge_add(struct buf *b, const char *name, uint32_t kind,
    uint32_t status, const char *text, size_t len)
{
	uint32_t nlen = (uint32_t)strlen(name), tlen = (uint32_t)len;
	int rc = 0;

	rc |= buf_append(b, &nlen, 4);
	rc |= buf_append(b, name, nlen);
	rc |= buf_append(b, &kind, 4);
	rc |= buf_append(b, &status, 4);
	rc |= buf_append(b, &tlen, 4);
	rc |= buf_append(b, text, len);
	return rc;
}

const struct job_kind_def fanout_jobs[] = {
	{ JOB_JSON_MERGE,	"json-merge",	fanout_merge_run },
	{ 0, NULL, NULL }
};
