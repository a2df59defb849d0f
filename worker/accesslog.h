/*
 * The access log: one JSON object per request (CONFIG.md "Access log
 * line"), batched in memory and written in whole lines.
 */
#ifndef AGATE_ACCESSLOG_H
#define AGATE_ACCESSLOG_H

struct request;
struct event_base;

/* Opens per the config (stdout, off, or a file); -1 on failure. */
/* Opens the access log (before the worker gives up root). */
int	accesslog_open(void);
/* Starts its batching timer, once the loop exists. */
int	accesslog_start(struct event_base *);
int	accesslog_reopen(void);
void	accesslog_write(const struct request *);
void	accesslog_flush(void);
void	accesslog_close(void);

#endif
