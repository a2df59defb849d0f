/*
 * The table behind signame(): every signal Linux numbers below SIGRTMIN.
 * Real-time signals and unknown numbers get "signal N".
 */
#include <signal.h>
#include <stdio.h>

#include "lib/signame.h"

#define S(name)	[SIG##name] = "SIG" #name

static const char *const signames[] = {
	S(HUP), S(INT), S(QUIT), S(ILL), S(TRAP), S(ABRT), S(BUS), S(FPE),
	S(KILL), S(USR1), S(SEGV), S(USR2), S(PIPE), S(ALRM), S(TERM),
#ifdef SIGSTKFLT
	S(STKFLT),
#endif
	S(CHLD), S(CONT), S(STOP), S(TSTP), S(TTIN), S(TTOU), S(URG),
	S(XCPU), S(XFSZ), S(VTALRM), S(PROF), S(WINCH), S(IO),
#ifdef SIGPWR
	S(PWR),
#endif
	S(SYS),
};

#undef S

const char *
signame(int sig)
{
	static char other[24];

	if (sig > 0 && (size_t)sig < sizeof(signames) / sizeof(signames[0]) &&
	    signames[sig] != NULL)
		return signames[sig];
	snprintf(other, sizeof(other), "signal %d", sig);
	return other;
}
