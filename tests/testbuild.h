/* The test build's additions (tests/testbuild.c). */
#ifndef AGATE_TESTBUILD_H
#define AGATE_TESTBUILD_H

void	testbuild_install(void);

#endif
