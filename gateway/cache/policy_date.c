/*
 * HTTP-dates (RFC 9110 section 5.6.7) for the cache policy: Date,
 * Expires, Last-Modified and If-Modified-Since in the IMF-fixdate that
 * everyone sends now and the two obsolete forms a recipient must still
 * read (RFC 850 and asctime), and IMF-fixdate written back.  Parsing is
 * strict about the layout, which is fixed byte by byte, and checks the
 * calendar itself (timegm() would take 31 Nov for 1 Dec); values are not
 * NUL-terminated, so nothing reads past len.
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "gateway/cache/policy.h"

/* 9999-12-31 23:59:59: the last second an IMF-fixdate can write. */
#define DATE_MAX		253402300799LL

static const char day_names[7][4] = {
	"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
};
static const char *const day_names_long[7] = {
	"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
	"Saturday"
};
static const char month_names[12][4] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
	"Nov", "Dec"
};

/* n digits at p as a number, or -1; a space stands for a leading 0 when
 * lead_space (asctime's " 6"). */
static int
digits(const char *p, size_t n, bool lead_space)
{
	int v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (i == 0 && lead_space && p[i] == ' ' && n > 1)
			continue;
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

static int
month_of(const char *p)
{
	int i;

	for (i = 0; i < 12; i++)
		if (memcmp(p, month_names[i], 3) == 0)
			return i;
	return -1;
}

static bool
is_day_name(const char *p, size_t len, bool lng)
{
	int i;

	for (i = 0; i < 7; i++)
		if (lng ? strlen(day_names_long[i]) == len &&
		    memcmp(p, day_names_long[i], len) == 0 :
		    len == 3 && memcmp(p, day_names[i], 3) == 0)
			return true;
	return false;
}

/* "HH:MM:SS" at p into tm; a leap second is allowed, as RFC 5322 does. */
static bool
time_of_day(const char *p, struct tm *tm)
{
	if (p[2] != ':' || p[5] != ':')
		return false;
	tm->tm_hour = digits(p, 2, false);
	tm->tm_min = digits(p + 3, 2, false);
	tm->tm_sec = digits(p + 6, 2, false);
	return tm->tm_hour >= 0 && tm->tm_hour <= 23 && tm->tm_min >= 0 &&
	    tm->tm_min <= 59 && tm->tm_sec >= 0 && tm->tm_sec <= 60;
}

/* tm (year, month, day and time set) as seconds, or -1 if no such day:
 * timegm() would turn 31 Feb into 3 Mar. */
static int64_t
date_seconds(struct tm *tm, int year)
{
	static const int mdays[12] = {
		31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
	};
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	time_t t;

	if (year < 0 || tm->tm_mon < 0 || tm->tm_mday < 1 ||
	    tm->tm_mday > mdays[tm->tm_mon] + (tm->tm_mon == 1 && leap))
		return -1;
	tm->tm_year = year - 1900;
	tm->tm_isdst = 0;
	if ((t = timegm(tm)) == (time_t)-1 && year >= 1970)
		return -1;
	/* A date before 1970 is just long past; -1 means "not a date". */
	return t < 0 ? 0 : (int64_t)t;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" */
static int64_t
imf_fixdate(const char *s)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (!is_day_name(s, 3, false) || memcmp(s + 3, ", ", 2) != 0 ||
	    s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
	    memcmp(s + 25, " GMT", 4) != 0 || !time_of_day(s + 17, &tm))
		return -1;
	tm.tm_mday = digits(s + 5, 2, false);
	tm.tm_mon = month_of(s + 8);
	return date_seconds(&tm, digits(s + 12, 4, false));
}

/*
 * "Sunday, 06-Nov-94 08:49:37 GMT".  RFC 9110 reads a two-digit year
 * that looks more than 50 years ahead as the past, which needs a clock;
 * this module has none, so 70-99 is 19xx and 00-69 20xx (POSIX's %y).
 * The two differ only for dates 45 to 50 years away from now.
 */
static int64_t
rfc850_date(const char *s, size_t len)
{
	const char *comma = memchr(s, ',', len), *d;
	struct tm tm;
	int yy;

	memset(&tm, 0, sizeof(tm));
	if (comma == NULL || (size_t)(s + len - comma) != 24 ||
	    !is_day_name(s, (size_t)(comma - s), true))
		return -1;
	d = comma + 2;
	if (comma[1] != ' ' || d[2] != '-' || d[6] != '-' || d[9] != ' ' ||
	    d[18] != ' ' || memcmp(d + 19, "GMT", 3) != 0 ||
	    !time_of_day(d + 10, &tm) || (yy = digits(d + 7, 2, false)) < 0)
		return -1;
	tm.tm_mday = digits(d, 2, false);
	tm.tm_mon = month_of(d + 3);
	return date_seconds(&tm, yy < 70 ? 2000 + yy : 1900 + yy);
}

/* "Sun Nov  6 08:49:37 1994" */
static int64_t
asctime_date(const char *s)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (!is_day_name(s, 3, false) || s[3] != ' ' || s[7] != ' ' ||
	    s[10] != ' ' || s[19] != ' ' || !time_of_day(s + 11, &tm))
		return -1;
	tm.tm_mday = digits(s + 8, 2, true);
	tm.tm_mon = month_of(s + 4);
	return date_seconds(&tm, digits(s + 20, 4, false));
}

int64_t
policy_http_date(const char *s, size_t len)
{
	if (s == NULL)
		return -1;
	while (len > 0 && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len == 29 && s[3] == ',')
		return imf_fixdate(s);
	if (len == 24 && s[3] == ' ')
		return asctime_date(s);
	if (len >= 30 && len <= 33)
		return rfc850_date(s, len);
	return -1;
}

static void
put_digits(char *out, int v, int n)
{
	while (n-- > 0) {
		out[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* By hand rather than strftime(): %a and %b follow the locale. */
void
policy_format_date(int64_t secs, char out[30])
{
	time_t t = (time_t)(secs < 0 ? 0 : secs > DATE_MAX ? DATE_MAX : secs);
	struct tm tm;

	gmtime_r(&t, &tm);
	memcpy(out, day_names[tm.tm_wday], 3);
	memcpy(out + 3, ", 00 ", 5);
	put_digits(out + 5, tm.tm_mday, 2);
	memcpy(out + 8, month_names[tm.tm_mon], 3);
	out[11] = ' ';
	put_digits(out + 12, tm.tm_year + 1900, 4);
	memcpy(out + 16, " 00:00:00 GMT", 14);	/* with the NUL */
	put_digits(out + 17, tm.tm_hour, 2);
	put_digits(out + 20, tm.tm_min, 2);
	put_digits(out + 23, tm.tm_sec, 2);
}
