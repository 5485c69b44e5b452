#include "controlpath.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTROLPATH_BUF (CONTROLPATH_MAX * 8)

/* The first directory of $RUNTIME_DIRECTORY (systemd joins several with ':'), or NULL. */
static bool controlpath_runtime_dir(char *buf, size_t size)
{
	const char *dirs = getenv("RUNTIME_DIRECTORY");
	size_t len;

	if (!dirs || dirs[0] != '/')
		return false;
	len = strcspn(dirs, ":");
	if (len >= size)
		return false;
	memcpy(buf, dirs, len);
	buf[len] = '\0';
	return true;
}

/* DIR + "/control.sock" into BUF: 0, or -ENAMETOOLONG when it is no socket address. */
static int controlpath_in(const char *dir, char *buf)
{
	int n = snprintf(buf, CONTROLPATH_BUF, "%s%s" CONTROLPATH_NAME, dir,
			 dir[strlen(dir) - 1] == '/' ? "" : "/");

	return n < 0 || n >= CONTROLPATH_MAX ? -ENAMETOOLONG : 0;
}

int controlpath_daemon(const struct config *cfg, char buf[CONTROLPATH_BUF])
{
	char dir[CONTROLPATH_BUF];

	if (cfg->control.socket) {
		snprintf(buf, CONTROLPATH_BUF, "%s", cfg->control.socket);
		return 0; /* config.c checked its length */
	}
	if (controlpath_runtime_dir(dir, sizeof(dir)))
		return controlpath_in(dir, buf);
	return controlpath_in(cfg->state_dir, buf);
}

static size_t controlpath_add(char bufs[][CONTROLPATH_BUF], size_t n, const char *path)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(bufs[i], path) == 0)
			return n;
	}
	if (n < CONTROLPATH_MAX_CANDIDATES && strlen(path) < CONTROLPATH_MAX)
		snprintf(bufs[n++], CONTROLPATH_BUF, "%s", path);
	return n;
}

size_t controlpath_candidates(const struct config *cfg,
			      char bufs[CONTROLPATH_MAX_CANDIDATES][CONTROLPATH_BUF])
{
	char dir[CONTROLPATH_BUF], path[CONTROLPATH_BUF];
	size_t n = 0;

	if (cfg && cfg->control.socket)
		return controlpath_add(bufs, 0, cfg->control.socket);
	if (controlpath_runtime_dir(dir, sizeof(dir)) && controlpath_in(dir, path) == 0)
		n = controlpath_add(bufs, n, path);
	n = controlpath_add(bufs, n, CONFIG_CONTROL_SOCKET_DEFAULT);
	if (cfg && controlpath_in(cfg->state_dir, path) == 0)
		n = controlpath_add(bufs, n, path);
	return n;
}
