/*
 * Fuzz target: the config loader.  Each input is written to a file in
 * /dev/shm and loaded as agate.yaml: any YAML, any keys, any values.  A
 * refusal must come with a "file:line:col: reason" message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config/config.h"
#include "lib/log.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	FILE *f;

	if (path[0] == '\0') {
		snprintf(path, sizeof(path), "/dev/shm/agate-fuzz-%ld.yaml",
		    (long)getpid());
		log_level = LOG_LVL_ERROR;
	}
	if ((f = fopen(path, "w")) == NULL)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	err[0] = '\0';
	cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL) {
		if (strncmp(err, path, strlen(path)) != 0 ||
		    err[strlen(path)] != ':')
			abort();	/* an error without its place */
	} else
		config_free(cfg);
	return 0;
}
