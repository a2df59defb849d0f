/*
 * Signal names for logs: "SIGTTIN", not strsignal()'s "Stopped (tty
 * input)", which reads as if agate had stopped.  Operators send signals
 * by name (kill -TTIN), so the log names them the same way.
 */
#ifndef AGATE_SIGNAME_H
#define AGATE_SIGNAME_H

/* "SIGHUP", ..., or "signal N" for one without a name here (a static
 * buffer then: use the result before the next call). */
const char	*signame(int sig);

#endif
