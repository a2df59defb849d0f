/*
 * The API-key stage (route `auth.api_keys: {file, header}`): the key in
 * the configured header must match one of the file's hashes
 * (apikeys_match(), apikeys.c), else 401 with `WWW-Authenticate: ApiKey`.
 */
#include <stdio.h>

#include "gateway/config/config.h"
#include "gateway/policy/apikeys.h"
#include "gateway/stage.h"
#include "worker/http.h"

static enum stage_result
apikeys_run(struct request *r)
{
	const struct auth_cfg *a = &r->route->auth;
	const struct http_header *h = req_header(r, a->api_keys_header);
	char extra[160];

	snprintf(extra, sizeof(extra), "WWW-Authenticate: ApiKey "
	    "header=\"%s\"\r\n", a->api_keys_header);
	if (h == NULL || h->value_len == 0) {
		req_error(r, 401, "API key required", extra);
		return STAGE_DONE;
	}
	if (!apikeys_match(a->api_keys, h->value, h->value_len)) {
		req_error(r, 401, "invalid API key", extra);
		return STAGE_DONE;
	}
	return STAGE_NEXT;
}

static bool
apikeys_wanted(const struct route_cfg *rt)
{
	return rt->auth.api_keys != NULL;
}

const struct stage apikeys_stage = {
	.name = "api_keys", .wanted = apikeys_wanted, .run = apikeys_run,
};
