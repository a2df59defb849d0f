/*
 * The table-driven YAML walker behind config_load() (nginx's
 * ngx_command_t idea): each mapping of agate.yaml is described by a table
 * of keys with a type, bounds and the offset of the field it fills, so
 * every key is parsed, range-checked and reported the same way.  Private
 * to gateway/config*.c.
 */
#ifndef AGATE_CONFIG_ENGINE_H
#define AGATE_CONFIG_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "gateway/config/config.h"

struct cfg_ctx {
	const char	*file;
	yaml_document_t	*doc;
	struct config	*cfg;
	char		*err;
	size_t		 errlen;
	const char	*key;		/* being parsed, for messages */
};

enum cfg_type {
	CT_INT,		/* int, min..max */
	CT_BOOL,	/* bool */
	CT_DURATION,	/* uint64_t ms, min..max */
	CT_SIZE,	/* uint64_t bytes, min..max */
	CT_STRING,	/* char *, non-empty */
	CT_PATH,	/* char *, resolved against the config's folder */
	CT_FILE,	/* CT_PATH that must be a readable file now */
	CT_ENUM,	/* int index into aux (NULL-terminated names) */
	CT_STRLIST,	/* char ** at off, size_t count at off2; aux: item check */
	CT_SECTION,	/* mapping filled by table aux at base + off */
	CT_CUSTOM	/* aux is a cfg_fn given base + off */
};

#define CK_REQUIRED	0x01
#define CK_ENABLE	0x02	/* CT_SECTION: set bool at off2 when present */
#define CK_POS		0x04	/* CT_STRING, CT_PATH: the value's position
				   goes to the struct config_pos at off2 */

struct cfg_key {
	const char	*name;
	enum cfg_type	 type;
	size_t		 off;
	int64_t		 min;
	int64_t		 max;
	const void	*aux;
	size_t		 off2;
	unsigned	 flags;
};

/* A custom value handler; field is base + off of its key. */
typedef int (*cfg_fn)(struct cfg_ctx *, yaml_node_t *val, void *field);
/* A list item check for CT_STRLIST. */
typedef int (*cfg_item_fn)(struct cfg_ctx *, yaml_node_t *item,
    const char *s);

/* Formats "file:line:col: reason" for node into ctx->err; returns -1. */
int	 cfg_error(struct cfg_ctx *, const yaml_node_t *node,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Fills base from mapping node per keys; what names it in messages. */
int	 cfg_map(struct cfg_ctx *, yaml_node_t *node,
	    const struct cfg_key *keys, void *base, const char *what);
yaml_node_t *cfg_node(struct cfg_ctx *, int index);
/*
 * A list value: the items of a sequence, or a single value (scalar or
 * mapping) counted as a list of one, the same for every list key.
 */
size_t	 cfg_list_len(const yaml_node_t *val);
yaml_node_t *cfg_list_item(struct cfg_ctx *, yaml_node_t *val, size_t i);
/* The scalar's text, or NULL (with an error set) for another node kind. */
const char *cfg_scalar(struct cfg_ctx *, yaml_node_t *node,
	    const char *expected);
/* Resolves a path against the config's folder, into the arena. */
char	*cfg_path(struct cfg_ctx *, const char *s);
int	 cfg_readable(struct cfg_ctx *, yaml_node_t *node, const char *path);
char	*cfg_strdup(struct cfg_ctx *, const char *s);
void	*cfg_alloc(struct cfg_ctx *, size_t size);
struct config_pos cfg_pos(const yaml_node_t *node);

/* The tables and cross-reference checks (gateway/config/config_schema.c). */
extern const struct cfg_key config_top_keys[];
void	config_defaults(struct config *);
int	config_finish(struct cfg_ctx *);

#endif
