/*
 * config_load(): reads agate.yaml with libyaml's document API (every node
 * keeps its line and column), walks it with the key tables of
 * config_schema.c into a fresh arena-allocated struct config, then runs the
 * cross-reference checks.  The first problem ends the load with one line,
 * "file:line:col: reason", and nothing of the half-built config survives;
 * the caller keeps whatever config it had (nginx's rule: parse a new one,
 * validate, then swap).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "gateway/config/config_engine.h"
#include "gateway/config/shared.h"
#include "gateway/policy/jwt.h"
#include "worker/tls.h"

struct config_pos
cfg_pos(const yaml_node_t *node)
{
	struct config_pos p = { (int)node->start_mark.line + 1,
	    (int)node->start_mark.column + 1 };

	return p;
}

int
cfg_error(struct cfg_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(ctx->err, ctx->errlen, "%s:%zu:%zu: ", ctx->file,
	    node ? node->start_mark.line + 1 : 1,
	    node ? node->start_mark.column + 1 : 1);
	if (n < 0 || (size_t)n >= ctx->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ctx->err + n, ctx->errlen - n, fmt, ap);
	va_end(ap);
	return -1;
}

yaml_node_t *
cfg_node(struct cfg_ctx *ctx, int index)
{
	return yaml_document_get_node(ctx->doc, index);
}

size_t
cfg_list_len(const yaml_node_t *val)
{
	if (val->type != YAML_SEQUENCE_NODE)
		return 1;
	return (size_t)(val->data.sequence.items.top -
	    val->data.sequence.items.start);
}

yaml_node_t *
cfg_list_item(struct cfg_ctx *ctx, yaml_node_t *val, size_t i)
{
	if (val->type != YAML_SEQUENCE_NODE)
		return val;
	return cfg_node(ctx, val->data.sequence.items.start[i]);
}

void *
cfg_alloc(struct cfg_ctx *ctx, size_t size)
{
	void *p = arena_alloc(&ctx->cfg->arena, size ? size : 1);

	if (p == NULL) {
		fprintf(stderr, "agate: out of memory loading config\n");
		abort();
	}
	return p;
}

char *
cfg_strdup(struct cfg_ctx *ctx, const char *s)
{
	size_t n = strlen(s);
	char *p = cfg_alloc(ctx, n + 1);

	memcpy(p, s, n + 1);
	return p;
}

static const char *
cfg_kind(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a value";
	}
}

const char *
cfg_scalar(struct cfg_ctx *ctx, yaml_node_t *node, const char *expected)
{
	if (node->type != YAML_SCALAR_NODE) {
		if (ctx->key != NULL)
			cfg_error(ctx, node, "%s: expected %s, got %s", ctx->key,
			    expected, cfg_kind(node));
		else
			cfg_error(ctx, node, "expected %s, got %s", expected,
			    cfg_kind(node));
		return NULL;
	}
	return (const char *)node->data.scalar.value;
}

char *
cfg_path(struct cfg_ctx *ctx, const char *s)
{
	size_t n;
	char *p;

	if (s[0] == '/')
		return cfg_strdup(ctx, s);
	n = strlen(ctx->cfg->dir) + 1 + strlen(s) + 1;
	p = cfg_alloc(ctx, n);
	snprintf(p, n, "%s/%s", ctx->cfg->dir, s);
	return p;
}

int
cfg_readable(struct cfg_ctx *ctx, yaml_node_t *node, const char *path)
{
	struct stat st;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return cfg_error(ctx, node, "cannot read %s: %s", path,
		    strerror(errno));
	if (fstat(fileno(f), &st) == -1 || !S_ISREG(st.st_mode)) {
		fclose(f);
		return cfg_error(ctx, node, "%s is not a regular file", path);
	}
	fclose(f);
	return 0;
}

/* Levenshtein distance, capped: enough to suggest a misspelt key. */
static size_t
cfg_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t row[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		size_t diag = row[0], tmp;

		row[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t best = diag + (tolower((unsigned char)a[i - 1])
			    != tolower((unsigned char)b[j - 1]));

			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			tmp = row[j];
			row[j] = best;
			diag = tmp;
		}
	}
	return row[lb];
}

static int
cfg_unknown(struct cfg_ctx *ctx, yaml_node_t *node, const struct cfg_key *keys,
    const char *name, const char *what)
{
	const struct cfg_key *k, *best = NULL;
	size_t bestd = 3, d;
	char list[256];
	size_t n = 0;

	list[0] = '\0';
	for (k = keys; k->name != NULL; k++) {
		if ((d = cfg_distance(name, k->name)) < bestd) {
			bestd = d;
			best = k;
		}
		if (n < sizeof(list))
			n += (size_t)snprintf(list + n, sizeof(list) - n,
			    "%s%s", n ? ", " : "", k->name);
	}
	if (best != NULL)
		return cfg_error(ctx, node,
		    "unknown key '%s' in %s (did you mean '%s'?)", name, what,
		    best->name);
	return cfg_error(ctx, node, "unknown key '%s' in %s (expected one of: %s)",
	    name, what, list);
}

static int
cfg_int(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    int *out)
{
	const char *s = cfg_scalar(ctx, val, "an integer");
	char *end;
	long long v;

	if (s == NULL)
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0)
		return cfg_error(ctx, val, "%s: expected an integer, got '%s'",
		    k->name, s);
	if (v < k->min || v > k->max)
		return cfg_error(ctx, val, "%s: %lld is out of range (%lld..%lld)",
		    k->name, v, (long long)k->min, (long long)k->max);
	*out = (int)v;
	return 0;
}

static int
cfg_bool(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", NULL };
	static const char *const no[] = { "false", "no", "off", NULL };
	const char *s = cfg_scalar(ctx, val, "true or false");
	int i;

	if (s == NULL)
		return -1;
	for (i = 0; yes[i] != NULL; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return cfg_error(ctx, val, "%s: expected true or false, got '%s'",
	    k->name, s);
}

static int
cfg_unit(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    uint64_t *out)
{
	bool duration = k->type == CT_DURATION;
	const char *s = cfg_scalar(ctx, val,
	    duration ? "a duration" : "a size");
	uint64_t v;
	int rc;

	if (s == NULL)
		return -1;
	rc = duration ? parse_duration_ms(s, &v) : parse_size(s, &v);
	if (rc == -1)
		return cfg_error(ctx, val, duration ?
		    "%s: expected a duration like 250ms, 10s or 2m, got '%s'" :
		    "%s: expected a size like 512, 16k or 10m, got '%s'",
		    k->name, s);
	if ((int64_t)v < k->min || v > (uint64_t)k->max)
		return cfg_error(ctx, val, duration ?
		    "%s: '%s' is out of range (%lldms..%lldms)" :
		    "%s: '%s' is out of range (%lld..%lld bytes)",
		    k->name, s, (long long)k->min, (long long)k->max);
	*out = v;
	return 0;
}

static int
cfg_enum(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    int *out)
{
	const char *const *names = k->aux;
	const char *s = cfg_scalar(ctx, val, "a name");
	char list[160];
	size_t n = 0;
	int i;

	if (s == NULL)
		return -1;
	list[0] = '\0';
	for (i = 0; names[i] != NULL; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = i;
			return 0;
		}
		if (n < sizeof(list))
			n += (size_t)snprintf(list + n, sizeof(list) - n,
			    "%s%s", i ? " | " : "", names[i]);
	}
	return cfg_error(ctx, val, "%s: expected %s, got '%s'", k->name, list,
	    s);
}

static int
cfg_string(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    char **out)
{
	const char *s = cfg_scalar(ctx, val, "a string");

	if (s == NULL)
		return -1;
	if (*s == '\0')
		return cfg_error(ctx, val, "%s: expected a non-empty string",
		    k->name);
	if (k->type == CT_STRING) {
		*out = cfg_strdup(ctx, s);
		return 0;
	}
	*out = cfg_path(ctx, s);
	if (k->type == CT_FILE)
		return cfg_readable(ctx, val, *out);
	return 0;
}

/* A list of strings; a single scalar counts as a list of one. */
static int
cfg_strlist(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    void *base)
{
	cfg_item_fn check = (cfg_item_fn)k->aux;
	yaml_node_t *item;
	size_t n, i = 0;
	char **list;

	if (val->type == YAML_MAPPING_NODE)
		return cfg_error(ctx, val, "%s: expected a list, got a mapping",
		    k->name);
	n = cfg_list_len(val);
	list = cfg_alloc(ctx, (n + 1) * sizeof(*list));
	for (i = 0; i < n; i++) {
		const char *s;

		item = cfg_list_item(ctx, val, i);
		if ((s = cfg_scalar(ctx, item, "a string")) == NULL)
			return -1;
		if (*s == '\0')
			return cfg_error(ctx, item, "%s: empty list item",
			    k->name);
		if (check != NULL && check(ctx, item, s) == -1)
			return -1;
		list[i] = cfg_strdup(ctx, s);
	}
	*(char ***)((char *)base + k->off) = list;
	*(size_t *)((char *)base + k->off2) = n;
	return 0;
}

static int
cfg_value_typed(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    void *base)
{
	void *field = (char *)base + k->off;

	switch (k->type) {
	case CT_INT:
		return cfg_int(ctx, val, k, field);
	case CT_BOOL:
		return cfg_bool(ctx, val, k, field);
	case CT_DURATION:
	case CT_SIZE:
		return cfg_unit(ctx, val, k, field);
	case CT_STRING:
	case CT_PATH:
	case CT_FILE:
		if (k->flags & CK_POS)
			*(struct config_pos *)((char *)base + k->off2) =
			    cfg_pos(val);
		return cfg_string(ctx, val, k, field);
	case CT_ENUM:
		return cfg_enum(ctx, val, k, field);
	case CT_STRLIST:
		return cfg_strlist(ctx, val, k, base);
	case CT_SECTION:
		if (k->flags & CK_ENABLE)
			*(bool *)((char *)base + k->off2) = true;
		return cfg_map(ctx, val, k->aux, field, k->name);
	case CT_CUSTOM:
		return ((cfg_fn)k->aux)(ctx, val, field);
	}
	return cfg_error(ctx, val, "%s: internal error: bad key type", k->name);
}

static int
cfg_value(struct cfg_ctx *ctx, yaml_node_t *val, const struct cfg_key *k,
    void *base)
{
	const char *outer = ctx->key;
	int rc;

	ctx->key = k->name;
	rc = cfg_value_typed(ctx, val, k, base);
	ctx->key = outer;
	return rc;
}

int
cfg_map(struct cfg_ctx *ctx, yaml_node_t *node, const struct cfg_key *keys,
    void *base, const char *what)
{
	yaml_node_pair_t *pair;
	const struct cfg_key *k;
	uint64_t seen = 0;
	size_t i;

	if (node->type != YAML_MAPPING_NODE)
		return cfg_error(ctx, node, "%s: expected a mapping, got %s",
		    what, cfg_kind(node));
	for (pair = node->data.mapping.pairs.start;
	    pair < node->data.mapping.pairs.top; pair++) {
		yaml_node_t *kn = cfg_node(ctx, pair->key);
		yaml_node_t *vn = cfg_node(ctx, pair->value);
		const char *outer = ctx->key, *name;

		ctx->key = NULL;
		name = cfg_scalar(ctx, kn, "a key name");
		ctx->key = outer;

		if (name == NULL)
			return -1;
		for (k = keys; k->name != NULL; k++)
			if (strcmp(k->name, name) == 0)
				break;
		if (k->name == NULL)
			return cfg_unknown(ctx, kn, keys, name, what);
		i = (size_t)(k - keys);
		if (seen & ((uint64_t)1 << i))
			return cfg_error(ctx, kn, "duplicate key '%s' in %s",
			    name, what);
		seen |= (uint64_t)1 << i;
		if (cfg_value(ctx, vn, k, base) == -1)
			return -1;
	}
	for (k = keys, i = 0; k->name != NULL; k++, i++)
		if ((k->flags & CK_REQUIRED) && !(seen & ((uint64_t)1 << i)))
			return cfg_error(ctx, node,
			    "%s: missing required key '%s'", what, k->name);
	return 0;
}

/* The folder of path, absolute, so relative paths survive a chdir. */
static char *
config_dir(struct config *cfg, const char *path)
{
	char buf[PATH_MAX], *slash;

	if (realpath(path, buf) == NULL)
		return NULL;
	if ((slash = strrchr(buf, '/')) == NULL)
		return NULL;
	if (slash == buf)
		slash++;
	*slash = '\0';
	return arena_strdup(&cfg->arena, buf);
}

static int
config_parse(struct cfg_ctx *ctx, FILE *f)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	int rc = -1;

	if (!yaml_parser_initialize(&parser))
		return cfg_error(ctx, NULL, "out of memory");
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(ctx->err, ctx->errlen, "%s:%zu:%zu: YAML syntax error: %s%s%s",
		    ctx->file, parser.problem_mark.line + 1,
		    parser.problem_mark.column + 1,
		    parser.problem ? parser.problem : "malformed",
		    parser.context ? " " : "",
		    parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return -1;
	}
	ctx->doc = &doc;
	if ((root = yaml_document_get_root_node(&doc)) == NULL)
		cfg_error(ctx, NULL, "the file is empty; expected a mapping "
		    "with server:, upstreams: and routes:");
	else if (cfg_map(ctx, root, config_top_keys, ctx->cfg, "the file")
	    == 0 && config_finish(ctx) == 0)
		rc = 0;
	ctx->doc = NULL;
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

struct config *
config_load(const char *path, char *err, size_t errlen)
{
	struct cfg_ctx ctx = { path, NULL, NULL, err, errlen, NULL };
	struct config *cfg;
	FILE *f;

	if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
		snprintf(err, errlen, "%s:1:1: out of memory", path);
		return NULL;
	}
	ctx.cfg = cfg;
	if ((f = fopen(path, "r")) == NULL) {
		/* Not a position in the file: there is no file. */
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(cfg);
		return NULL;
	}
	cfg->file = arena_strdup(&cfg->arena, path);
	cfg->dir = config_dir(cfg, path);
	if (cfg->file == NULL || cfg->dir == NULL) {
		snprintf(err, errlen, "%s:1:1: cannot resolve its folder: %s",
		    path, strerror(errno));
		fclose(f);
		config_free(cfg);
		return NULL;
	}
	config_defaults(cfg);
	if (config_parse(&ctx, f) == -1) {
		fclose(f);
		config_free(cfg);
		return NULL;
	}
	fclose(f);
	if (shared_create(cfg) == -1) {
		snprintf(err, errlen, "%s:1:1: cannot map the shared segment: "
		    "%s", path, strerror(errno));
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->server.nlisten; i++)
		tls_listener_free(&cfg->server.listen[i]);
	for (i = 0; i < cfg->nroutes; i++)
		jwks_free(cfg->routes[i].auth.jwt.set);
	/* No private key left behind in memory given back to malloc. */
	for (i = 0; i < cfg->nupstreams; i++)
		if (cfg->upstreams[i].tls_key_pem != NULL)
			OPENSSL_cleanse(cfg->upstreams[i].tls_key_pem,
			    cfg->upstreams[i].tls_key_len);
	shared_destroy(cfg);
	arena_free(&cfg->arena);
	free(cfg);
}

int
config_workers(const struct config *cfg)
{
	long n;

	if (cfg->server.workers > 0)
		return cfg->server.workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	return n > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (int)n;
}

struct upstream_cfg *
config_upstream(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nupstreams; i++)
		if (strcmp(cfg->upstreams[i].name, name) == 0)
			return &cfg->upstreams[i];
	return NULL;
}

bool
config_server_h2(const struct upstream_cfg *u, const struct server_cfg *s)
{
	return s->h2c && u->transport != TRANSPORT_CURL;
}

bool
config_server_native(const struct upstream_cfg *u, const struct server_cfg *s)
{
	if (s->h2c)
		return false;		/* HTTP/2: see config_server_h2() */
	return u->transport == TRANSPORT_NATIVE ||
	    (u->transport == TRANSPORT_AUTO && !s->https);
}
