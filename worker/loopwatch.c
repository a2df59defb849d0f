/*
 * How long each callback of the worker's loop takes.  One worker serves
 * thousands of connections from one thread: a callback that computes for
 * 200 ms holds every one of them up by 200 ms, and the lag histogram
 * only says that the loop was late, not who made it late.  This says who:
 * every libevent callback is bracketed by loopwatch_begin(kind) and
 * loopwatch_end(), and one that takes longer than log.slow_callback is
 * counted by kind in the worker's metrics stripe and logged.
 *
 * The clock is CLOCK_MONOTONIC_COARSE: read from the vDSO, no system
 * call, a few nanoseconds -- at the price of a resolution of one kernel
 * tick (1-4 ms; the config refuses a threshold below it).  Nothing on the
 * fast path allocates or logs.  Warnings are rate-limited to one line a
 * second: a storm of slow callbacks is what makes the loop slow, and a
 * line per callback would add to it.  Those held back are counted and
 * said by the next line (or by loopwatch_tick() once the second is up).
 */
#include <stdio.h>
#include <time.h>

#include "gateway/metrics/metrics.h"
#include "lib/log.h"
#include "worker/loopwatch.h"

#define NS_PER_MS	1000000ULL
#define LOG_EVERY_NS	(1000 * NS_PER_MS)

static const char *const kind_names[LW_COUNT] = {
	[LW_ACCEPT] = "accept",
	[LW_CLIENT_TLS] = "client_tls_handshake",
	[LW_CLIENT_HTTP1_READ] = "client_http1_read",
	[LW_CLIENT_HTTP1_WRITE] = "client_http1_write",
	[LW_CLIENT_H2_READ] = "client_h2_read",
	[LW_CLIENT_H2_WRITE] = "client_h2_write",
	[LW_CLIENT_FLUSH] = "client_flush",
	[LW_TUNNEL] = "tunnel",
	[LW_UPSTREAM_HTTP1_READ] = "upstream_http1_read",
	[LW_UPSTREAM_HTTP1_WRITE] = "upstream_http1_write",
	[LW_UPSTREAM_H2] = "upstream_h2",
	[LW_CURL_SOCKET] = "curl_socket",
	[LW_CURL_TIMER] = "curl_timer",
	[LW_UPSTREAM_TIMER] = "upstream_timer",
	[LW_OFFLOAD] = "offload",
	[LW_TIMER] = "timer",
	[LW_CACHE_WAIT] = "cache_wait",
	[LW_ADMIN] = "admin",
	[LW_SIGNAL] = "signal",
	[LW_OTHER] = "other",
};

static struct {
	uint64_t	 threshold_ns;	/* 0: off */
	int		 depth;		/* nested begin/end pairs */
	enum lw_kind	 kind;		/* of the outermost callback */
	uint64_t	 start_ns;
	uint64_t	 logged_ns;	/* last warning line; 0: none yet */
	uint64_t	 held;		/* slow ones not logged since */
	enum lw_kind	 held_kind;	/* the longest of those */
	uint64_t	 held_ns;
} lw;

const char *
loopwatch_kind_name(enum lw_kind k)
{
	return k < LW_COUNT ? kind_names[k] : "other";
}

static inline uint64_t
loopwatch_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void
loopwatch_init(uint64_t threshold_us)
{
	lw.threshold_ns = threshold_us * 1000;
	lw.depth = 0;
	lw.logged_ns = 0;
	lw.held = 0;
}

void
loopwatch_begin(enum lw_kind k)
{
	if (lw.depth++ > 0 || lw.threshold_ns == 0)
		return;
	lw.kind = k;
	lw.start_ns = loopwatch_now();
}

void
loopwatch_relabel(enum lw_kind k)
{
	if (lw.depth > 0)
		lw.kind = k;
}

static void
loopwatch_log_held(uint64_t now)
{
	log_warnx("worker: %llu more slow callback%s in the last %.1f s, not "
	    "logged one by one (the longest: %s, %llu ms)",
	    (unsigned long long)lw.held, log_plural((long long)lw.held),
	    (double)(now - lw.logged_ns) / 1e9,
	    loopwatch_kind_name(lw.held_kind),
	    (unsigned long long)(lw.held_ns / NS_PER_MS));
	lw.held = 0;
	lw.logged_ns = now;
}

/* Off the fast path: a callback took d ns, more than the threshold. */
static void __attribute__((noinline, cold))
loopwatch_slow(uint64_t now, uint64_t d)
{
	char more[96] = "";

	metrics_slow_callback(lw.kind);
	if (lw.logged_ns != 0 && now - lw.logged_ns < LOG_EVERY_NS) {
		if (lw.held++ == 0 || d > lw.held_ns) {
			lw.held_kind = lw.kind;
			lw.held_ns = d;
		}
		return;
	}
	if (lw.held > 0)
		snprintf(more, sizeof(more), "; %llu more since the last "
		    "warning, not logged one by one",
		    (unsigned long long)lw.held);
	log_warnx("worker: slow callback: %s took %llu ms (log.slow_callback "
	    "is %llu ms)%s", loopwatch_kind_name(lw.kind),
	    (unsigned long long)(d / NS_PER_MS),
	    (unsigned long long)(lw.threshold_ns / NS_PER_MS), more);
	lw.held = 0;
	lw.logged_ns = now;
}

void
loopwatch_end(void)
{
	uint64_t now;

	if (lw.depth == 0 || --lw.depth > 0 || lw.threshold_ns == 0)
		return;
	now = loopwatch_now();
	if (now - lw.start_ns >= lw.threshold_ns)
		loopwatch_slow(now, now - lw.start_ns);
}

void
loopwatch_tick(void)
{
	uint64_t now;

	if (lw.held == 0)
		return;
	now = loopwatch_now();
	if (now - lw.logged_ns >= LOG_EVERY_NS)
		loopwatch_log_held(now);
}
