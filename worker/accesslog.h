/*
 * The access log: one JSON object per request (CONFIG.md "Access log
 * line"), batched in memory and written in whole lines.
 */
#ifndef AGATE_ACCESSLOG_H
#define AGATE_ACCESSLOG_H

struct request;
struct event_base;

/* Opens per the config (stdout, off, or a file); -1 on failure. */
int	accesslog_open(struct event_base *);
int	accesslog_reopen(void);
void	accesslog_write(const struct request *);
void	accesslog_flush(void);
void	accesslog_close(void);

#endif
