/*
 * Path normalisation (see path.h).  One pass, in place: the write
 * position never passes the read position, because decoding shrinks and
 * dropping segments shrinks.  Each segment is decoded into the output
 * first, then kept, dropped (".") or used to pop the previous one ("..").
 */
#include <stdbool.h>
#include <string.h>

#include "lib/encode.h"
#include "worker/path.h"

static bool
unreserved(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	    c == '~';
}

/*
 * Copies one segment from p[*r] up to the next '/' to p[*w], decoding
 * what may be decoded.  Returns false (and sets *why) on a refused one.
 */
static bool
copy_segment(char *p, size_t len, size_t *r, size_t *w, const char **why)
{
	static const char hex[] = "0123456789ABCDEF";
	int hi, lo, v;

	while (*r < len && p[*r] != '/') {
		if (p[*r] == '#') {
			*why = "fragment in request target";
			return false;
		}
		if (p[*r] != '%') {
			p[(*w)++] = p[(*r)++];
			continue;
		}
		if (*r + 2 >= len ||
		    (hi = hex_value((unsigned char)p[*r + 1])) < 0 ||
		    (lo = hex_value((unsigned char)p[*r + 2])) < 0) {
			*why = "bad percent-encoding in path";
			return false;
		}
		v = hi * 16 + lo;
		if (v == '/' || v == 0) {
			*why = v ? "encoded slash in path" : "encoded NUL in path";
			return false;
		}
		*r += 3;
		if (unreserved(v))
			p[(*w)++] = (char)v;
		else {
			p[(*w)++] = '%';
			p[(*w)++] = hex[v >> 4];
			p[(*w)++] = hex[v & 15];
		}
	}
	return true;
}

/*
 * The output p[0..w) is always a normalised path without its trailing
 * slash ("" standing for "/"); dir records whether one belongs at the end.
 */
size_t
path_normalize(char *p, size_t len, const char **why)
{
	size_t r = 1, w = 0, seg, n;
	bool dir = true;

	if (len == 0 || p[0] != '/') {
		*why = "path must start with /";
		return 0;
	}
	for (;;) {
		seg = w + 1;
		p[w] = '/';		/* w < r: the '/' just read */
		w = seg;
		if (!copy_segment(p, len, &r, &w, why))
			return 0;
		n = w - seg;
		if (n == 0 || (n == 1 && p[seg] == '.')) {
			w = seg - 1;		/* "", ".": nothing */
			dir = true;
		} else if (n == 2 && p[seg] == '.' && p[seg + 1] == '.') {
			if (seg == 1) {
				*why = "path climbs above /";
				return 0;
			}
			/* "..": back to the '/' before the previous segment
			 * (p[0] is one, so this stops). */
			w = seg - 2;
			while (p[w] != '/')
				w--;
			dir = true;
		} else
			dir = false;
		if (r >= len)
			break;
		r++;			/* the '/' */
	}
	if (w == 0 || dir)
		p[w++] = '/';
	return w;
}
