/*
 * The request-head parser and the chunked decoder.  Both walk bytes once
 * and point into the caller's buffer.  Every rule that decides where a
 * message ends (Content-Length, Transfer-Encoding, line endings) is
 * applied strictly, because a gateway that reads a message differently
 * from the server behind it is how requests get smuggled.
 */
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "lib/encode.h"
#include "worker/http_parse.h"

/* RFC 9110 tchar, as a table: the hot loop of the parser. */
static const unsigned char tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
	['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
	['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
	['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
	['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
	['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

/* A field-value byte: HTAB, SP, VCHAR or obs-text; never CTL or DEL. */
static inline bool
is_vbyte(unsigned char c)
{
	return c == '\t' || (c >= ' ' && c != 0x7f);
}

size_t
http_head_end(const char *buf, size_t len, size_t *scan)
{
	size_t i;

	for (i = *scan; i < len; i++) {
		const char *nl = memchr(buf + i, '\n', len - i);

		if (nl == NULL)
			break;
		i = (size_t)(nl - buf);
		if (i + 1 >= len || (buf[i + 1] == '\r' && i + 2 >= len)) {
			*scan = i;
			return 0;
		}
		if (buf[i + 1] == '\n')
			return i + 2;
		if (buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return i + 3;
	}
	*scan = len;
	return 0;
}

int
http_head_too_big(const char *buf, size_t len, size_t max_head)
{
	size_t line = len < HTTP_MAX_REQUEST_LINE ? len : HTTP_MAX_REQUEST_LINE;

	if (len >= HTTP_MAX_REQUEST_LINE && memchr(buf, '\n', line) == NULL)
		return 414;
	if (len >= max_head)
		return memchr(buf, '\n', len) == NULL ? 414 : 431;
	return 0;
}

const struct http_header *
http_find_header(const struct http_head *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->nheaders; i++)
		if (http_token_eq(h->headers[i].name, h->headers[i].name_len,
		    name))
			return &h->headers[i];
	return NULL;
}

/* Consumes CRLF or LF at *p; a bare CR or anything else fails. */
static bool
eat_eol(const char **p, const char *end)
{
	if (*p < end && **p == '\n') {
		(*p)++;
		return true;
	}
	if (end - *p >= 2 && (*p)[0] == '\r' && (*p)[1] == '\n') {
		*p += 2;
		return true;
	}
	return false;
}

static enum http_result
fail(int *status, const char **why, int code, const char *msg)
{
	*status = code;
	*why = msg;
	return HTTP_ERROR;
}

/* origin-form, absolute-form (a proxy's), or "*" for OPTIONS. */
static enum http_result
parse_target(struct http_head *h, int *status, const char **why)
{
	const char *t = h->target, *end = t + h->target_len, *q;

	if (t[0] != '/') {
		if (h->target_len == 1 && t[0] == '*' &&
		    http_token_eq(h->method, h->method_len, "OPTIONS")) {
			h->path = t;
			h->path_len = 1;
			return HTTP_OK;
		}
		if (h->target_len > 7 && (strncasecmp(t, "http://", 7) == 0 ||
		    (h->target_len > 8 && strncasecmp(t, "https://", 8) == 0))) {
			const char *auth = t + (t[4] == ':' ? 7 : 8), *ae = auth;

			while (ae < end && *ae != '/' && *ae != '?')
				ae++;
			h->host = auth;
			h->host_len = (size_t)(ae - auth);
			if (ae == end || *ae == '?') {
				/* "http://host?q": the path is "/". */
				h->path = "/";
				h->path_len = 1;
				if (ae < end) {
					h->query = ae + 1;
					h->query_len = (size_t)(end - ae - 1);
				}
				return HTTP_OK;
			}
			t = ae;
		} else
			return fail(status, why, 400, "bad request target");
	}
	h->path = t;
	if ((q = memchr(t, '?', (size_t)(end - t))) != NULL) {
		h->path_len = (size_t)(q - t);
		h->query = q + 1;
		h->query_len = (size_t)(end - q - 1);
	} else
		h->path_len = (size_t)(end - t);
	return HTTP_OK;
}

static enum http_result
parse_request_line(const char **pp, const char *end, struct http_head *h,
    int *status, const char **why)
{
	const char *p = *pp;

	h->method = p;
	while (p < end && tchar[(unsigned char)*p])
		p++;
	h->method_len = (size_t)(p - h->method);
	if (h->method_len == 0 || p >= end || *p != ' ')
		return fail(status, why, 400, "malformed request line");
	if (h->method_len > HTTP_MAX_METHOD)
		return fail(status, why, 501, "method not implemented");
	h->target = ++p;
	while (p < end && (unsigned char)*p > ' ' && *p != 0x7f)
		p++;
	h->target_len = (size_t)(p - h->target);
	if (h->target_len == 0 || p >= end || *p != ' ')
		return fail(status, why, 400, "malformed request line");
	p++;
	if (end - p < 8 || memcmp(p, "HTTP/", 5) != 0 ||
	    p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' || p[7] > '9')
		return fail(status, why, 400, "malformed HTTP version");
	if (p[5] != '1')
		return fail(status, why, 505, "HTTP version not supported");
	h->minor = p[7] - '0';
	p += 8;
	if (!eat_eol(&p, end))
		return fail(status, why, 400, "malformed request line");
	*pp = p;
	return parse_target(h, status, why);
}

static enum http_result
parse_fields(const char *p, const char *end, struct http_head *h,
    int *status, const char **why)
{
	for (;;) {
		struct http_header *f;
		const char *v, *ve;

		if (eat_eol(&p, end))
			return HTTP_OK;
		if (p >= end)
			return fail(status, why, 400, "truncated head");
		if (*p == ' ' || *p == '\t')
			return fail(status, why, 400, "obsolete line folding");
		if (h->nheaders == HTTP_MAX_HEADERS)
			return fail(status, why, 431, "too many header fields");
		f = &h->headers[h->nheaders];
		f->name = p;
		while (p < end && tchar[(unsigned char)*p])
			p++;
		f->name_len = (uint32_t)(p - f->name);
		if (p < end && f->name_len > 0 && (*p == ' ' || *p == '\t'))
			return fail(status, why, 400, "whitespace before colon");
		if (p >= end || *p != ':' || f->name_len == 0)
			return fail(status, why, 400, "malformed header");
		p++;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		v = p;
		while (p < end && is_vbyte((unsigned char)*p))
			p++;
		ve = p;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		if (!eat_eol(&p, end))
			return fail(status, why, 400,
			    "control character in header");
		f->value = v;
		f->value_len = (uint32_t)(ve - v);
		h->nheaders++;
	}
}

/* "12", or a list of equal values "12, 12" (RFC 9110 section 8.6). */
static bool
parse_content_length(const char *v, size_t n, int64_t *out)
{
	const char *p = v, *end = v + n;
	int64_t seen = -1;

	while (p < end) {
		int64_t val = 0;
		const char *start = p;

		while (p < end && *p >= '0' && *p <= '9') {
			if (val > (INT64_MAX - 9) / 10)
				return false;
			val = val * 10 + (*p++ - '0');
		}
		if (p == start || (seen != -1 && seen != val))
			return false;
		seen = val;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p < end && *p++ != ',')
			return false;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
	}
	if (seen == -1 || (*out != -1 && *out != seen))
		return false;
	*out = seen;
	return true;
}

/* Calls fn for each comma-separated token of a list field value. */
static int
each_token(const char *v, size_t n, int (*fn)(const char *, size_t, void *),
    void *arg)
{
	const char *p = v, *end = v + n;

	while (p < end) {
		const char *t;
		size_t len;
		int rc;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		t = p;
		while (p < end && *p != ',')
			p++;
		len = (size_t)(p - t);
		while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
			len--;
		if (len > 0 && (rc = fn(t, len, arg)) != 0)
			return rc;
	}
	return 0;
}

struct te_state {
	int	codings;
	bool	last_chunked;
	bool	chunked_seen;
};

static int
te_token(const char *t, size_t len, void *arg)
{
	struct te_state *te = arg;
	bool chunked = http_token_eq(t, len, "chunked");

	if (chunked && te->chunked_seen)
		return 400;
	te->chunked_seen |= chunked;
	te->last_chunked = chunked;
	te->codings++;
	return 0;
}

static int
conn_token(const char *t, size_t len, void *arg)
{
	struct http_head *h = arg;

	if (http_token_eq(t, len, "close"))
		h->keepalive = false;
	else if (http_token_eq(t, len, "keep-alive") && h->minor == 0)
		h->keepalive = true;
	return 0;
}

/*
 * Whether every element of a list value holds a token: no empty element
 * (",chunked", "chunked,", "a,,b").  RFC 9112 lets a recipient skip empty
 * elements, but two parsers that skip differently are a desync; a request
 * framing header is read strictly.
 */
static bool
list_strict(const char *v, size_t n)
{
	const char *p = v, *end = v + n;

	for (;;) {
		bool empty = true;

		for (; p < end && *p != ','; p++)
			if (*p != ' ' && *p != '\t')
				empty = false;
		if (empty)
			return false;
		if (p == end)
			return true;
		p++;
	}
}

static enum http_result
check_framing(struct http_head *h, int *status, const char **why)
{
	struct te_state te = { 0, false, false };
	int hosts = 0, rc;
	size_t i;

	h->content_length = -1;
	h->keepalive = h->minor >= 1;
	for (i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];

		if (http_token_eq(f->name, f->name_len, "content-length")) {
			if (!parse_content_length(f->value, f->value_len,
			    &h->content_length))
				return fail(status, why, 400,
				    "invalid Content-Length");
		} else if (http_token_eq(f->name, f->name_len,
		    "transfer-encoding")) {
			if (!list_strict(f->value, f->value_len))
				return fail(status, why, 400,
				    "invalid Transfer-Encoding");
			if ((rc = each_token(f->value, f->value_len, te_token,
			    &te)) != 0)
				return fail(status, why, rc,
				    "invalid Transfer-Encoding");
		} else if (http_token_eq(f->name, f->name_len, "host")) {
			if (hosts++ == 0 && h->host == NULL) {
				h->host = f->value;
				h->host_len = f->value_len;
			}
		} else if (http_token_eq(f->name, f->name_len, "connection"))
			each_token(f->value, f->value_len, conn_token, h);
		else if (http_token_eq(f->name, f->name_len, "expect")) {
			if (!http_token_eq(f->value, f->value_len,
			    "100-continue"))
				return fail(status, why, 417,
				    "unsupported expectation");
			h->expect_continue = h->minor >= 1;
		}
	}
	if (http_token_eq(h->method, h->method_len, "HEAD") &&
	    (te.codings > 0 || h->content_length > 0))
		return fail(status, why, 400, "a HEAD request cannot have a body");
	if (hosts > 1 || (hosts == 0 && h->minor >= 1))
		return fail(status, why, 400, hosts ? "more than one Host" :
		    "missing Host header");
	if (te.codings > 0) {
		if (h->content_length != -1)
			return fail(status, why, 400,
			    "both Content-Length and Transfer-Encoding");
		if (h->minor == 0 || !te.last_chunked)
			return fail(status, why, 400,
			    "Transfer-Encoding must end in chunked");
		if (te.codings > 1)
			return fail(status, why, 501,
			    "transfer coding not implemented");
		h->chunked = true;
	}
	return HTTP_OK;
}

enum http_result
http_parse_head(const char *buf, size_t head_len, struct http_head *h,
    int *status, const char **why)
{
	const char *p = buf, *end = buf + head_len;
	enum http_result rc;

	/* Every field, so a head refused half-way has no stale ones. */
	memset(h, 0, offsetof(struct http_head, headers));
	h->content_length = -1;
	h->head_len = head_len;
	if ((rc = parse_request_line(&p, end, h, status, why)) != HTTP_OK)
		return rc;
	if ((rc = parse_fields(p, end, h, status, why)) != HTTP_OK)
		return rc;
	return check_framing(h, status, why);
}

/* -- responses (from upstreams) ----------------------------------------- */

static bool
resp_status_line(const char **pp, const char *end, struct http_resp_head *r)
{
	const char *p = *pp, *reason;

	/* "HTTP/1.1 200 OK": the reason may be empty, the space may not. */
	if (end - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' ||
	    p[7] > '9' || p[8] != ' ' || p[9] < '1' || p[9] > '5' ||
	    p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
		return false;
	r->minor = p[7] - '0';
	r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	p += 12;
	if (p < end && *p == ' ')
		p++;
	reason = p;
	while (p < end && is_vbyte((unsigned char)*p))
		p++;
	r->reason = reason;
	r->reason_len = (size_t)(p - reason);
	if (!eat_eol(&p, end))
		return false;
	*pp = p;
	return true;
}

static int
resp_conn_token(const char *t, size_t len, void *arg)
{
	struct http_resp_head *r = arg;

	if (http_token_eq(t, len, "close"))
		r->keepalive = false;
	else if (http_token_eq(t, len, "keep-alive") && r->minor == 0)
		r->keepalive = true;
	return 0;
}

/* One "name: value" line, framing fields acted on. */
static bool
resp_field(const char **pp, const char *end, struct http_resp_head *r,
    struct te_state *te)
{
	const char *p = *pp, *name = p, *v, *ve;
	size_t nlen;

	while (p < end && tchar[(unsigned char)*p])
		p++;
	nlen = (size_t)(p - name);
	if (nlen == 0 || p >= end || *p != ':')
		return false;
	for (p++; p < end && (*p == ' ' || *p == '\t'); p++)
		;
	for (v = p; p < end && is_vbyte((unsigned char)*p); p++)
		;
	for (ve = p; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
		;
	if (!eat_eol(&p, end))
		return false;
	if (http_token_eq(name, nlen, "content-length")) {
		if (!parse_content_length(v, (size_t)(ve - v),
		    &r->content_length))
			return false;
	} else if (http_token_eq(name, nlen, "transfer-encoding")) {
		if (each_token(v, (size_t)(ve - v), te_token, te) != 0)
			return false;
	} else if (http_token_eq(name, nlen, "connection"))
		each_token(v, (size_t)(ve - v), resp_conn_token, r);
	*pp = p;
	return true;
}

bool
http_parse_response_head(const char *buf, size_t head_len,
    struct http_resp_head *r)
{
	const char *p = buf, *end = buf + head_len;
	struct te_state te = { 0, false, false };
	size_t fields = 0;

	memset(r, 0, sizeof(*r));
	r->content_length = -1;
	if (!resp_status_line(&p, end, r))
		return false;
	r->keepalive = r->minor >= 1;
	r->fields = p;
	while (!eat_eol(&p, end)) {
		if (p >= end || *p == ' ' || *p == '\t' ||
		    ++fields > HTTP_MAX_RESPONSE_FIELDS ||
		    !resp_field(&p, end, r, &te))
			return false;
	}
	r->fields_len = (size_t)(p - r->fields);
	if (te.codings > 0) {
		/* RFC 9112 6.3: Transfer-Encoding overrides Content-Length,
		 * and such a connection must not be reused. */
		if (r->content_length != -1)
			r->keepalive = false;
		r->content_length = -1;
		r->chunked = te.last_chunked;
		r->other_coding = !te.last_chunked || te.codings > 1;
	}
	return true;
}

const char *
http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return status < 200 ? "Informational" : status < 300 ? "OK" :
	    status < 400 ? "Redirection" : status < 500 ? "Client Error" :
	    "Server Error";
	}
}

/* -- chunked transfer coding ------------------------------------------ */

enum {
	CH_SIZE,		/* hex digits of the chunk size */
	CH_EXT,			/* BWS and extensions up to the line end */
	CH_SIZE_LF,		/* CR seen after the size line */
	CH_DATA,
	CH_DATA_END,		/* CRLF after the data */
	CH_DATA_LF,
	CH_TRAILER_START,	/* start of a trailer line or the blank end */
	CH_TRAILER,
	CH_TRAILER_LF,
	CH_LAST_LF,		/* CR of the final blank line seen */
	CH_DONE
};

#define CHUNK_LINE_MAX	4096
#define CHUNK_TRAILERS_MAX 16384
#define CHUNK_DIGITS_MAX 15	/* < 2^60: no overflow, no absurd sizes */

void
http_chunked_init(struct http_chunked *c)
{
	memset(c, 0, sizeof(*c));
	c->state = CH_SIZE;
}

/* One framing byte; returns CHUNK_AGAIN to go on, or the end/error. */
static enum http_chunk_result
chunk_byte(struct http_chunked *c, unsigned char b)
{
	int v;

	switch (c->state) {
	case CH_SIZE:
		if ((v = hex_value(b)) >= 0) {
			if (++c->digits > CHUNK_DIGITS_MAX)
				return CHUNK_ERROR;
			c->remaining = c->remaining * 16 + (uint64_t)v;
			return CHUNK_AGAIN;
		}
		if (c->digits == 0)
			return CHUNK_ERROR;
		c->state = CH_EXT;
		/* FALLTHROUGH */
	case CH_EXT:
		if (++c->line > CHUNK_LINE_MAX)
			return CHUNK_ERROR;
		if (b == '\n')
			break;
		if (b == '\r')
			c->state = CH_SIZE_LF;
		else if (b != '\t' && (b < ' ' || b == 0x7f))
			return CHUNK_ERROR;
		else if (!c->ext && b == ';')
			c->ext = true;
		else if (!c->ext && b != ' ' && b != '\t')
			return CHUNK_ERROR;
		return CHUNK_AGAIN;
	case CH_SIZE_LF:
		if (b != '\n')
			return CHUNK_ERROR;
		break;
	case CH_DATA_END:
		if (b == '\r') {
			c->state = CH_DATA_LF;
			return CHUNK_AGAIN;
		}
		/* FALLTHROUGH */
	case CH_DATA_LF:
		if (b != '\n')
			return CHUNK_ERROR;
		c->state = CH_SIZE;
		c->digits = 0;
		c->line = 0;
		c->ext = false;
		c->remaining = 0;
		return CHUNK_AGAIN;
	case CH_TRAILER_START:
		if (b == '\n')
			return c->state = CH_DONE, CHUNK_DONE;
		if (b == '\r')
			return c->state = CH_LAST_LF, CHUNK_AGAIN;
		c->state = CH_TRAILER;
		/* FALLTHROUGH */
	case CH_TRAILER:
		if (++c->trailers > CHUNK_TRAILERS_MAX)
			return CHUNK_ERROR;
		if (b == '\n')
			c->state = CH_TRAILER_START;
		else if (b == '\r')
			c->state = CH_TRAILER_LF;
		else if (b != '\t' && (b < ' ' || b == 0x7f))
			return CHUNK_ERROR;
		return CHUNK_AGAIN;
	case CH_TRAILER_LF:
		if (b != '\n')
			return CHUNK_ERROR;
		c->state = CH_TRAILER_START;
		return CHUNK_AGAIN;
	case CH_LAST_LF:
		if (b != '\n')
			return CHUNK_ERROR;
		c->state = CH_DONE;
		return CHUNK_DONE;
	default:
		return CHUNK_ERROR;
	}
	/* The size line ended. */
	c->state = c->remaining == 0 ? CH_TRAILER_START : CH_DATA;
	return CHUNK_AGAIN;
}

enum http_chunk_result
http_chunked_next(struct http_chunked *c, const char *src, size_t len,
    size_t max, size_t *used, const char **data, size_t *dlen)
{
	size_t i = 0;
	enum http_chunk_result rc;

	*dlen = 0;
	if (c->state == CH_DONE) {
		*used = 0;
		return CHUNK_DONE;
	}
	while (i < len) {
		if (c->state == CH_DATA) {
			size_t n = len - i;

			if ((uint64_t)n > c->remaining)
				n = (size_t)c->remaining;
			if (n > max)
				n = max;
			if (n == 0)
				break;
			*data = src + i;
			*dlen = n;
			c->remaining -= n;
			if (c->remaining == 0)
				c->state = CH_DATA_END;
			*used = i + n;
			return CHUNK_DATA;
		}
		rc = chunk_byte(c, (unsigned char)src[i++]);
		if (rc != CHUNK_AGAIN) {
			*used = i;
			return rc;
		}
	}
	*used = i;
	return CHUNK_AGAIN;
}
