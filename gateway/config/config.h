/*
 * The parsed agate.yaml (see docs/configuration.md and CONFIG.md).
 *
 * config_load() parses a file into a fresh, immutable struct config: the
 * supervisor loads one at start and one per reload, workers inherit it
 * across fork and never parse.  Durations are held in milliseconds, sizes
 * in bytes.  All strings and arrays belong to the config and are released
 * by config_free().
 */
#ifndef AGATE_CONFIG_H
#define AGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lib/arena.h"

struct shared;

#define CONFIG_ERR_MAX	512
#define CONFIG_MAX_WORKERS 256

/* One source position, kept where later checks may need to point at it. */
struct config_pos {
	int	line;
	int	col;
};

/* One certificate of a TLS listener. */
struct tls_pair {
	char			*cert;		/* PEM chain */
	char			*key;
};

struct listen_cfg {
	char			*address;	/* as written */
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	bool			 proxy_protocol;
	char			*tls_cert;	/* NULL: plain; else the first */
	char			*tls_key;
	struct tls_pair		*tls_pairs;	/* all, in file order */
	size_t			 ntls;
	void			*tls_ctx;	/* worker/tls.c, made at load */
	struct config_pos	 tls_pos;
	bool			 admin;		/* the admin listener */
	bool			 http2;		/* h2 by ALPN; h2c beside h1 */
	struct config_pos	 pos;
};

/* server.http2: limits for HTTP/2 clients (RFC 9113). */
struct http2_cfg {
	int			 max_concurrent_streams;
	uint64_t		 initial_window_size;
	uint64_t		 max_header_list_size;
	int			 max_resets_per_second;
};

struct cidr {
	int		family;		/* AF_INET or AF_INET6 */
	uint8_t		addr[16];
	int		bits;
};

struct server_cfg {
	char		*url;		/* scheme://host:port, no trailing / */
	bool		 https;
	bool		 h2c;		/* h2c://: HTTP/2 with prior knowledge */
	char		*curl_url;	/* url as libcurl takes it (http://) */
	char		*host;
	uint16_t	 port;
	bool		 named;		/* host is a name: looked up (dns.c) */
	int		 mslot;		/* metrics slot (metrics.c) */
};

/* How a worker talks to an upstream's servers. */
enum transport {
	TRANSPORT_AUTO,		/* native for http://, libcurl for https:// */
	TRANSPORT_NATIVE,	/* agate's own HTTP/1.1 client (http:// only) */
	TRANSPORT_CURL		/* libcurl's multi interface */
};

enum balance {
	BALANCE_ROUND_ROBIN,
	BALANCE_LEAST_REQUEST,
	BALANCE_RANDOM
};

/* retry.conditions as bits; statuses are kept apart. */
#define RETRY_ON_CONNECT_FAILURE	0x01
#define RETRY_ON_TIMEOUT		0x02
#define RETRY_ON_RESET			0x04

struct retry_cfg {
	int		 attempts;
	uint64_t	 backoff_ms;
	uint64_t	 max_backoff_ms;
	unsigned	 on;			/* RETRY_ON_* */
	int		*statuses;		/* retry on these answers */
	size_t		 nstatuses;
	char		**methods;
	size_t		 nmethods;
	double		 budget;		/* share of first tries */
};

struct breaker_cfg {
	bool		 enabled;
	int		 failures;
	uint64_t	 open_for_ms;
};

struct health_check_cfg {
	bool		 enabled;
	char		*path;
	uint64_t	 interval_ms;
	uint64_t	 timeout_ms;
	int		 healthy;
	int		 unhealthy;
};

struct upstream_cfg {
	char			*name;
	struct server_cfg	*servers;
	size_t			 nservers;
	enum balance		 balance;
	enum transport		 transport;
	int			 keepalive;
	uint64_t		 keepalive_timeout_ms;
	uint64_t		 connect_timeout_ms;
	uint64_t		 timeout_ms;
	int			 max_concurrent;
	int			 max_queue;
	struct retry_cfg	 retry;
	struct breaker_cfg	 breaker;
	char			*tls_ca;	/* NULL: system store */
	bool			 tls_verify;
	/* mTLS (upcert.c): the client certificate chain and its key, as
	 * files and as the PEM text read from them at load; NULL: none. */
	char			*tls_cert;
	char			*tls_key;
	struct config_pos	 tls_cert_pos;
	struct config_pos	 tls_key_pos;
	char			*tls_cert_pem;
	size_t			 tls_cert_len;
	char			*tls_key_pem;
	size_t			 tls_key_len;
	struct health_check_cfg	 health;
	uint64_t		 resolve_ms;	/* named servers: lookup period */
	size_t			 slot;		/* first server's in shared */
	int			 mslot;		/* metrics slot (metrics.c) */
	struct config_pos	 pos;
};

enum rl_key { RL_KEY_CLIENT_IP, RL_KEY_HEADER };
enum rl_backend { RL_BACKEND_LOCAL, RL_BACKEND_REDIS };

struct rate_limit_cfg {
	bool		 enabled;
	double		 rate;			/* tokens per second */
	int		 burst;
	enum rl_key	 key;
	char		*key_header;
	enum rl_backend	 backend;
};

struct jwt_cfg {
	char		*keys;			/* JWKS file */
	char		*issuer;
	char		**audiences;
	size_t		 naudiences;
	char		**claims;		/* forward_claims: claim */
	char		**claim_headers;	/*   -> upstream header */
	size_t		 nclaims;
	struct jwks	*set;			/* read at load (jwt.c) */
};

struct auth_cfg {
	bool		 enabled;
	char		*basic;			/* htpasswd file */
	struct htpasswd	*basic_users;		/* read at load */
	bool		 jwt_enabled;
	struct jwt_cfg	 jwt;
	char		*api_keys_file;
	char		*api_keys_header;
	struct apikeys	*api_keys;		/* read at load */
};

struct cors_cfg {
	bool		 enabled;
	char		**origins;
	size_t		 norigins;
	char		**methods;
	size_t		 nmethods;
	char		**headers;
	size_t		 nheaders;
	uint64_t	 max_age_ms;
	bool		 credentials;
};

struct verify_sig_cfg {
	bool		 enabled;
	char		*header;
	char		*secret_file;
	char		*secret;		/* read at load */
	size_t		 secret_len;
};

enum fanout_mode {
	FANOUT_ALL,
	FANOUT_PARTIAL,
	FANOUT_FIRST,
	FANOUT_STREAM
};

struct fanout_call_cfg {
	char			*name;
	struct upstream_cfg	*upstream;
	char			*upstream_name;
	struct config_pos	 upstream_pos;
	char			*path;		/* template */
	struct config_pos	 path_pos;
	char			*method;	/* NULL: the client's */
};

struct fanout_cfg {
	enum fanout_mode	 mode;
	uint64_t		 timeout_ms;
	char			**forward_headers;	/* beyond the usual */
	size_t			 nforward_headers;
	struct fanout_call_cfg	*calls;
	size_t			 ncalls;
};

/* One segment of a route pattern: literal text or a {param}. */
struct route_seg {
	char		*text;			/* literal, or the param name */
	size_t		 len;
	bool		 param;
};

/* What answers a route once its stages pass (gateway/stage.c). */
enum route_content {
	CONTENT_PROXY,		/* upstream: */
	CONTENT_FANOUT,		/* fanout: */
	CONTENT_TUNNEL,		/* an Upgrade on a proxy route, per request */
	CONTENT_CACHE		/* upstream: with cache: */
};

/* A route's cache: (gateway/cache/). */
struct route_cache_cfg {
	bool			 enabled;
	uint64_t		 ttl_ms;	/* when the answer says nothing */
	uint64_t		 swr_ms;	/* stale_while_revalidate */
	uint64_t		 sie_ms;	/* stale_if_error */
};

struct route_cfg {
	char			*path;		/* as written */
	bool			 prefix;	/* ends in / */
	struct route_seg	*segs;
	size_t			 nsegs;
	char			**methods;	/* NULL: any */
	size_t			 nmethods;
	struct upstream_cfg	*upstream;	/* NULL for fanout */
	char			*upstream_name;
	struct config_pos	 upstream_pos;
	char			*strip_prefix;
	uint64_t		 timeout_ms;	/* 0: none */
	bool			 compress_gzip;
	uint64_t		 compress_min;
	uint64_t		 hedge_after_ms;	/* 0: off */
	bool			 websocket;	/* Upgrade requests tunnelled */
	struct rate_limit_cfg	 rate_limit;
	struct auth_cfg		 auth;
	struct cors_cfg		 cors;
	struct verify_sig_cfg	 verify_signature;
	bool			 has_fanout;
	struct fanout_cfg	 fanout;
	struct route_cache_cfg	 cache;
	enum route_content	 content;	/* chosen at load */
	int			 mslot;		/* metrics slot (metrics.c) */
	struct config_pos	 pos;
};

struct server_sect {
	int			 workers;	/* 0 = auto */
	struct listen_cfg	*listen;
	size_t			 nlisten;
	struct cidr		*trusted;
	size_t			 ntrusted;
	char			*pid_file;
	struct config_pos	 pid_file_pos;
	char			*user;
	struct config_pos	 user_pos;
	char			*health_path;
	uint64_t		 shutdown_delay_ms;
	uint64_t		 drain_timeout_ms;
	int			 max_connections;
	uint64_t		 header_timeout_ms;
	uint64_t		 idle_timeout_ms;
	uint64_t		 tunnel_timeout_ms;	/* idle both ways */
	uint64_t		 max_header_size;
	uint64_t		 max_body_size;	/* 0: unlimited */
	struct http2_cfg	 http2;
};

enum log_access_kind { ACCESS_STDOUT, ACCESS_OFF, ACCESS_FILE };

struct config {
	struct arena		 arena;		/* owns everything below */
	int			 refs;		/* supervisor: generations on it */
	char			*file;
	char			*dir;		/* relative paths resolve here */
	struct server_sect	 server;
	bool			 admin_enabled;
	char			*admin_listen;
	struct sockaddr_storage	 admin_sa;
	socklen_t		 admin_salen;
	int			 log_level;	/* enum log_level */
	char			*log_error;	/* NULL: stderr */
	struct config_pos	 log_error_pos;
	enum log_access_kind	 log_access;
	char			*log_access_file;
	struct config_pos	 log_access_pos;
	uint64_t		 log_slow_callback_us;	/* 0: off */
	bool			 redis_enabled;
	char			*redis_address;
	int			 redis_fail_open;	/* on_failure: allow */
	int			 offload_processes;
	int			 offload_queue_limit;
	uint64_t		 offload_job_timeout_ms;
	bool			 cache_enabled;	/* a cache: section */
	uint64_t		 cache_memory;
	uint64_t		 cache_max_entry;
	uint64_t		 cache_lock_timeout_ms;
	char			**resolvers;	/* "ip:port"; none: resolv.conf */
	size_t			 nresolvers;
	bool			 tracing_enabled;	/* a tracing: section */
	double			 tracing_sample_ratio;	/* without a parent */
	char			*tracing_otlp;	/* NULL: no export */
	char			*tracing_service_name;
	struct upstream_cfg	*upstreams;
	size_t			 nupstreams;
	struct route_cfg	*routes;
	size_t			 nroutes;
	struct shared		*shared;	/* gateway/config/shared.h */
};

/*
 * Parses and validates path.  Returns a config, or NULL with a one-line
 * "file:line:col: reason" in err ("file: strerror" when it cannot be
 * opened at all).
 */
struct config	*config_load(const char *path, char *err, size_t errlen);
void		 config_free(struct config *);
/* Workers to start: server.workers, or the online CPUs for auto. */
int		 config_workers(const struct config *);
struct upstream_cfg *config_upstream(const struct config *, const char *name);
/* Whether this server is reached with agate's own HTTP/1.1 client. */
bool		 config_server_native(const struct upstream_cfg *,
		    const struct server_cfg *);
/* Whether it is reached with agate's own HTTP/2 client (h2c://, unless
 * transport: curl). */
bool		 config_server_h2(const struct upstream_cfg *,
		    const struct server_cfg *);
/* Logs a warning for each key that can have no effect where it is
 * (tls.cert on an upstream without https:// servers). */
void		 config_warn_ineffective(const struct config *);
/*
 * What the config needs from this machine (gateway/config_env.c): the
 * user exists, the pid file's folder can be written, the log files can
 * be opened for append.  Returns 0, or -1 with "file:line:col: reason"
 * in err.  Not part of config_load(), so that `agate -s` still reaches
 * a running agate whose log folder went away.
 */
int		 config_env_check(const struct config *, char *err,
		    size_t errlen);

/* Value parsers shared by the loader and its tests (gateway/config/units.c). */
int	parse_duration_ms(const char *s, uint64_t *out);
int	parse_size(const char *s, uint64_t *out);
int	parse_address(const char *s, struct sockaddr_storage *sa,
	    socklen_t *salen);
int	parse_cidr(const char *s, struct cidr *out);
bool	cidr_match(const struct cidr *, const struct sockaddr *sa);
int	parse_rate(const char *s, double *per_second);
/* resolver: "IPv4[:port]" or "[IPv6][:port]" into "ip:port" (port 53
 * when absent); -1 if it is neither. */
int	config_resolver_address(const char *s, char *out, size_t outlen);

#endif
