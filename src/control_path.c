#include "control_path.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTROL_PATH_BUF (CONTROL_PATH_MAX * 8)

/* The first directory of $RUNTIME_DIRECTORY (systemd joins several with ':'), or NULL. */
static bool control_path_runtime_dir(char *buf, size_t size)
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
static int control_path_in(const char *dir, char *buf)
{
	int n = snprintf(buf, CONTROL_PATH_BUF, "%s%s" CONTROL_PATH_NAME, dir,
			 dir[strlen(dir) - 1] == '/' ? "" : "/");

	return n < 0 || n >= CONTROL_PATH_MAX ? -ENAMETOOLONG : 0;
}

int control_path_daemon(const struct config *cfg, char buf[CONTROL_PATH_BUF])
{
	char dir[CONTROL_PATH_BUF];

	if (cfg->control.socket) {
		snprintf(buf, CONTROL_PATH_BUF, "%s", cfg->control.socket);
		return 0; /* config.c checked its length */
	}
	if (control_path_runtime_dir(dir, sizeof(dir)))
		return control_path_in(dir, buf);
	return control_path_in(cfg->state_dir, buf);
}

static size_t control_path_add(char bufs[][CONTROL_PATH_BUF], size_t n, const char *path)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(bufs[i], path) == 0)
			return n;
	}
	if (n < CONTROL_PATH_MAX_CANDIDATES && strlen(path) < CONTROL_PATH_MAX)
		snprintf(bufs[n++], CONTROL_PATH_BUF, "%s", path);
	return n;
}

size_t control_path_candidates(const struct config *cfg,
			      char bufs[CONTROL_PATH_MAX_CANDIDATES][CONTROL_PATH_BUF])
{
	char dir[CONTROL_PATH_BUF], path[CONTROL_PATH_BUF];
	size_t n = 0;

	if (cfg && cfg->control.socket)
		return control_path_add(bufs, 0, cfg->control.socket);
	if (control_path_runtime_dir(dir, sizeof(dir)) && control_path_in(dir, path) == 0)
		n = control_path_add(bufs, n, path);
	n = control_path_add(bufs, n, CONFIG_CONTROL_SOCKET_DEFAULT);
	if (cfg && control_path_in(cfg->state_dir, path) == 0)
		n = control_path_add(bufs, n, path);
	return n;
}
