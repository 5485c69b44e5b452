#include "control_client.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fsops.h"
#include "text.h"

#define CTL_TIMEOUT_S 10
#define CTL_MAX_ANSWER (16u * 1024 * 1024)

static const char *const commands[] = {"status", "reload", "retry", "pause", "resume", NULL};

bool control_client_is_command(const char *name)
{
	for (size_t i = 0; commands[i]; i++) {
		if (strcmp(commands[i], name) == 0)
			return true;
	}
	return false;
}

struct ctl_buf {
	char *data;
	size_t len;
};

static size_t ctl_write_cb(char *ptr, size_t size, size_t n, void *userdata)
{
	struct ctl_buf *b = userdata;
	size_t add = size * n;
	char *p;

	if (b->len + add > CTL_MAX_ANSWER)
		return 0;
	p = realloc(b->data, b->len + add + 1);
	if (!p)
		return 0;
	memcpy(p + b->len, ptr, add);
	b->data = p;
	b->len += add;
	p[b->len] = '\0';
	return add;
}

/* Whether anything answers on SOCK: 0, or the errno connect gave (ENOENT: no socket file). */
static int ctl_probe(const char *sock)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r = 0;

	/* stat first: it tells "no socket" from "no permission" before connect says
	 * ECONNREFUSED or EACCES for both. */
	if (stat(sock, &st) < 0)
		return errno;
	if (strlen(sock) >= sizeof(sa.sun_path))
		return ENAMETOOLONG;
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	if (connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0)
		r = errno;
	close(fd);
	return r;
}

/* "no socket at A; nothing answers on B" for the places tried, into BUF. */
static void ctl_tried(char *buf, size_t size, const struct control_target *t, const int *errs)
{
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < t->n_sockets && n + 1 < size; i++) {
		char q[512];
		int k;

		text_escape(q, sizeof(q), t->sockets[i]);
		if (errs[i] == ENOENT)
			k = snprintf(buf + n, size - n, "%sno socket at %s", i ? "; " : "", q);
		else if (errs[i] == ECONNREFUSED)
			k = snprintf(buf + n, size - n, "%snothing answers on %s", i ? "; " : "", q);
		else
			k = snprintf(buf + n, size - n, "%s%s: %s", i ? "; " : "", q,
				     strerror(errs[i]));
		if (k < 0)
			break;
		n += (size_t)k < size - n ? (size_t)k : size - n - 1;
	}
}

/* Nothing answered on any place: "not running" only when no process holds the folders either
 * (their processing directories' locks, seen in /proc/locks). Says it; the exit status. */
static int ctl_unreachable(const struct control_target *t, const int *errs)
{
	char tried[2048], q[512], why[256] = "";
	const struct config *cfg = t->cfg;

	for (size_t i = 0; i < t->n_sockets; i++) {
		/* A socket there that we may not use: that is the answer. */
		if (errs[i] == EACCES || errs[i] == EPERM) {
			text_escape(q, sizeof(q), t->sockets[i]);
			fprintf(stderr, "cannot connect to %s: %s\n", q, strerror(errs[i]));
			return CTL_EXIT_UNREACHABLE;
		}
	}
	ctl_tried(tried, sizeof(tried), t, errs);
	for (size_t i = 0; cfg && i < cfg->n_folders; i++) {
		long pid = 0;
		int r;

		if (!cfg->folders[i].inbox || !cfg->folders[i].name)
			continue; /* a configuration with errors (reload) */
		r = fsops_lock_holder(cfg->folders[i].inbox, &pid);

		if (r == -EWOULDBLOCK) {
			fprintf(stderr,
				"resend-dropd is running (pid %ld serves folder '%s') but does not "
				"answer on a control socket (%s): a --once run has none, and a daemon "
				"run by hand without state_dir's directory or with control.socket "
				"elsewhere listens elsewhere\n",
				pid, cfg->folders[i].name, tried);
			return CTL_EXIT_UNREACHABLE;
		}
		if (r < 0 && !why[0])
			snprintf(why, sizeof(why), "folder '%s': %s", cfg->folders[i].name,
				 strerror(-r));
	}
	if (why[0])
		fprintf(stderr,
			"resend-dropd does not answer (%s), and whether a daemon serves the folders "
			"cannot be told (%s)\n",
			tried, why);
	else
		fprintf(stderr, "resend-dropd is not running (%s)\n", tried);
	return CTL_EXIT_UNREACHABLE;
}

/* The first place where something answers, in *RET; else says why and returns the exit
 * status. */
static int ctl_find(const struct control_target *t, const char **ret)
{
	int errs[CTL_MAX_SOCKETS];

	for (size_t i = 0; i < t->n_sockets && i < CTL_MAX_SOCKETS; i++) {
		errs[i] = ctl_probe(t->sockets[i]);
		if (errs[i] == 0) {
			*ret = t->sockets[i];
			return 0;
		}
	}
	return ctl_unreachable(t, errs);
}

/* One request to SOCK; 0 with the status and the body, or the exit status (said here). */
static int ctl_request(const char *sock, bool post, const char *path, long timeout_s,
		       long *ret_code, char **ret_body)
{
	struct ctl_buf b = {0};
	char url[2048];
	CURL *h;
	CURLcode cr;

	snprintf(url, sizeof(url), "http://localhost%s", path);
	h = curl_easy_init();
	if (!h) {
		fprintf(stderr, "resend-dropd: cannot initialise libcurl\n");
		return CTL_EXIT_UNREACHABLE;
	}
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ctl_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (post)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	cr = curl_easy_perform(h);
	if (cr == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, ret_code);
	curl_easy_cleanup(h);
	if (cr != CURLE_OK) {
		char q[512];
		text_escape(q, sizeof(q), sock);
		fprintf(stderr, "resend-dropd: no answer on %s: %s\n", q, curl_easy_strerror(cr));
		free(b.data);
		return CTL_EXIT_UNREACHABLE;
	}
	*ret_body = b.data ? b.data : strdup("");
	return 0;
}

/* A refusal from the daemon: its {"error": ...}. */
static int ctl_refused(long code, const char *body)
{
	cJSON *o = cJSON_Parse(body);
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");

	fprintf(stderr, "resend-dropd: %s\n",
		cJSON_IsString(e) ? e->valuestring : "the daemon refused the command");
	cJSON_Delete(o);
	return code >= 500 ? CTL_EXIT_UNREACHABLE : CTL_EXIT_REFUSED;
}

static void ctl_duration(char *buf, size_t size, double s)
{
	unsigned long long t = (unsigned long long)s;

	if (t < 60)
		snprintf(buf, size, "%llus", t);
	else if (t < 3600)
		snprintf(buf, size, "%llum%02llus", t / 60, t % 60);
	else if (t < 86400)
		snprintf(buf, size, "%lluh%02llum", t / 3600, t / 60 % 60);
	else
		snprintf(buf, size, "%llud%02lluh", t / 86400, t / 3600 % 24);
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The ledger's line, and the fleet's hosts when there is a fleet. */
static void ctl_status_ledger(const cJSON *root)
{
	const cJSON *ledger = cJSON_GetObjectItemCaseSensitive(root, "ledger");
	const cJSON *fleet = cJSON_GetObjectItemCaseSensitive(root, "fleet");
	const cJSON *hosts = cJSON_GetObjectItemCaseSensitive(fleet, "hosts"), *h;
	char text[1024];

	if (str(ledger, "backend")) {
		printf("ledger: %s", str(ledger, "backend"));
		if (str(ledger, "error")) {
			text_escape(text, sizeof(text), str(ledger, "error"));
			printf(", CANNOT BE WRITTEN (no file is taken): %s", text);
		}
		printf("\n");
	}
	if (!cJSON_IsObject(fleet))
		return;
	text_escape(text, sizeof(text), str(fleet, "host_id") ?: "?");
	printf("fleet: this host is '%s'%s\n", text,
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(fleet, "claiming"))
		       ? ""
		       : " (NOT CLAIMING: its lease is not renewed)");
	printf("  %-24s  %-8s  %9s  %9s  %s\n", "HOST", "ALIVE", "HEARTBEAT", "IN FLIGHT",
	       "STATE");
	cJSON_ArrayForEach(h, hosts)
	{
		char age[32];

		text_escape(text, sizeof(text), str(h, "host_id") ?: "?");
		snprintf(age, sizeof(age), "%.0f s ago", num(h, "heartbeat_age_s"));
		printf("  %-24s  %-8s  %9s  %9.0f  %s", text,
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "alive")) ? "yes" : "NO", age,
		       num(h, "in_flight"), str(h, "state") ?: "?");
		if (str(h, "taken_over_by"))
			printf(", taken over by %s", str(h, "taken_over_by"));
		printf("\n");
	}
}

/* The notifications' receivers, when there are any: their queues in the outbox. */
static void ctl_status_notifications(const cJSON *root)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "notifications"), *n;
	char name[256], age[32];

	if (cJSON_GetArraySize(list) == 0)
		return;
	printf("\n%-24s  %7s  %6s  %9s  %6s  %7s\n", "RECEIVER", "PENDING", "OLDEST", "DELIVERED",
	       "FAILED", "DROPPED");
	cJSON_ArrayForEach(n, list)
	{
		text_escape(name, sizeof(name), str(n, "receiver") ?: "?");
		snprintf(age, sizeof(age), "-");
		if (num(n, "pending") > 0)
			ctl_duration(age, sizeof(age), num(n, "oldest_pending_s"));
		printf("%-24s  %7.0f  %6s  %9.0f  %6.0f  %7.0f\n", name, num(n, "pending"), age,
		       num(n, "delivered"), num(n, "failed_attempts"), num(n, "dropped"));
	}
}

static int ctl_status_print(const char *body)
{
	static const char *const cols[] = {"waiting", "processing", "uploading", "retrying",
					   "following", "done",	      "failed"};
	cJSON *root = cJSON_Parse(body);
	const cJSON *api = cJSON_GetObjectItemCaseSensitive(root, "api");
	const cJSON *rl = cJSON_GetObjectItemCaseSensitive(api, "rate_limit");
	const cJSON *folders = cJSON_GetObjectItemCaseSensitive(root, "folders"), *f;
	char up[32], name[256];
	int width = 6;

	if (!cJSON_IsObject(root) || !cJSON_IsArray(folders)) {
		fprintf(stderr, "resend-dropd: the daemon's status cannot be read\n");
		cJSON_Delete(root);
		return CTL_EXIT_UNREACHABLE;
	}
	ctl_duration(up, sizeof(up), num(root, "uptime_s"));
	printf("resend-dropd %s (pid %.0f), %s, up %s\n", str(root, "version") ?: "?",
	       num(root, "pid"), str(root, "state") ?: "?", up);
	printf("uploads: %.0f of %.0f in flight; rate limit: %g requests/s", num(api, "uploads_in_flight"),
	       num(api, "max_in_flight"), num(rl, "requests_per_second"));
	if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(rl, "team_limit")))
		printf(" (%g%% of the team's %g)", 100 * num(rl, "share"), num(rl, "team_limit"));
	else
		printf(" (the team's limit not announced yet)");
	if (str(rl, "blocked_until"))
		printf(", blocked by the server until %s", str(rl, "blocked_until"));
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(api, "paused")))
		printf("; ALL UPLOADS PAUSED: %s, until %s", str(api, "paused_reason") ?: "?",
		       str(api, "paused_until") ?: "?");
	printf("\n");
	ctl_status_ledger(root);
	printf("\n");
	cJSON_ArrayForEach(f, folders)
	{
		int n = (int)text_escape(name, sizeof(name), str(f, "name") ?: "?");
		if (n > width)
			width = n;
	}
	printf("%-*s", width, "FOLDER");
	for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
		char upper[16];
		for (size_t k = 0; k <= strlen(cols[i]); k++)
			upper[k] = (char)(cols[i][k] >= 'a' && cols[i][k] <= 'z' ? cols[i][k] - 32
										  : cols[i][k]);
		printf("  %*s", (int)strlen(cols[i]) < 6 ? 6 : (int)strlen(cols[i]), upper);
	}
	printf("  %6s  %s\n", "OLDEST", "STATE");
	cJSON_ArrayForEach(f, folders)
	{
		const cJSON *oldest = cJSON_GetObjectItemCaseSensitive(f, "oldest_waiting_s");
		char age[32] = "-";
		bool paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "paused"));

		text_escape(name, sizeof(name), str(f, "name") ?: "?");
		printf("%-*s", width, name);
		for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
			printf("  %*.0f", (int)strlen(cols[i]) < 6 ? 6 : (int)strlen(cols[i]),
			       num(f, cols[i]));
		if (cJSON_IsNumber(oldest))
			ctl_duration(age, sizeof(age), oldest->valuedouble);
		const cJSON *avail = cJSON_GetObjectItemCaseSensitive(f, "available");

		printf("  %6s  %s", age, cJSON_IsFalse(avail) ? "unavailable"
					 : paused		 ? "paused"
								 : "running");
		if (paused) {
			printf(" (%s", str(f, "paused_reason") ?: "?");
			if (str(f, "paused_until"))
				printf(", until %s", str(f, "paused_until"));
			printf(")");
		}
		printf("\n");
	}
	cJSON_ArrayForEach(f, folders)
	{
		if (str(f, "last_error")) {
			char err[1024];
			text_escape(name, sizeof(name), str(f, "name") ?: "?");
			text_escape(err, sizeof(err), str(f, "last_error"));
			printf("%s: last error: %s\n", name, err);
		}
	}
	ctl_status_notifications(root);
	cJSON_Delete(root);
	return 0;
}

static int ctl_usage(const char *cmd)
{
	if (strcmp(cmd, "retry") == 0)
		fprintf(stderr, "Usage: resend-dropd [-c FILE] retry FOLDER FILE\n");
	else if (strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0)
		fprintf(stderr, "Usage: resend-dropd [-c FILE] %s\n", cmd);
	else
		fprintf(stderr, "Usage: resend-dropd [-c FILE] %s [FOLDER]\n", cmd);
	return CTL_EXIT_REFUSED;
}

/* reload: the daemon answers once the new configuration is in force, or with every reason it
 * was refused (the running configuration stays). */
static int ctl_reload_print(long code, const char *body)
{
	cJSON *o = cJSON_Parse(body);
	const cJSON *errors = cJSON_GetObjectItemCaseSensitive(o, "errors"), *e;
	int r = 0;

	if (code == 200) {
		printf("%s\n", str(o, "message") ?: "reloaded");
	} else {
		cJSON_ArrayForEach(e, errors)
		{
			if (cJSON_IsString(e))
				fprintf(stderr, "%s\n", e->valuestring);
		}
		fprintf(stderr, "resend-dropd: %s\n",
			str(o, "error") ?: "the daemon refused the reload");
		r = code >= 500 ? CTL_EXIT_UNREACHABLE : CTL_EXIT_REFUSED;
	}
	cJSON_Delete(o);
	return r;
}

static int ctl_command(const struct control_target *t, int argc, char **argv)
{
	const char *cmd = argv[0], *sock = NULL;
	char path[4096], *body = NULL, *ef = NULL, *en = NULL;
	long code = 0;
	int r;

	if ((strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0) && argc != 1)
		return ctl_usage(cmd);
	if (strcmp(cmd, "retry") == 0 ? argc != 3 : argc > 2)
		return ctl_usage(cmd);
	r = ctl_find(t, &sock);
	if (r != 0)
		return r;
	if (strcmp(cmd, "status") == 0) {
		r = ctl_request(sock, false, "/status", CTL_TIMEOUT_S, &code, &body);
		if (r == 0)
			r = code == 200 ? ctl_status_print(body) : ctl_refused(code, body);
		free(body);
		return r;
	}
	if (strcmp(cmd, "reload") == 0) {
		/* Uploads in flight finish first (shutdown_timeout_s): wait that long, and more. */
		r = ctl_request(sock, true, "/reload", t->reload_timeout_s, &code, &body);
		if (r == 0)
			r = ctl_reload_print(code, body);
		free(body);
		return r;
	}
	if (argc > 1)
		ef = curl_easy_escape(NULL, argv[1], 0);
	if (argc > 2)
		en = curl_easy_escape(NULL, argv[2], 0);
	if ((argc > 1 && !ef) || (argc > 2 && !en)) {
		curl_free(ef);
		curl_free(en);
		fprintf(stderr, "resend-dropd: out of memory\n");
		return CTL_EXIT_UNREACHABLE;
	}
	snprintf(path, sizeof(path), "/%s%s%s%s%s", cmd, ef ? "?folder=" : "", ef ? ef : "",
		 en ? "&file=" : "", en ? en : "");
	curl_free(ef);
	curl_free(en);
	r = ctl_request(sock, true, path, CTL_TIMEOUT_S, &code, &body);
	if (r != 0)
		return r;
	if (code != 200) {
		r = ctl_refused(code, body);
		free(body);
		return r;
	}
	cJSON *o = cJSON_Parse(body);
	if (strcmp(cmd, "retry") == 0) {
		const char *kept = str(o, "old_report");
		char qf[256], qn[1024], qk[1024];
		text_escape(qf, sizeof(qf), argv[1]);
		text_escape(qn, sizeof(qn), argv[2]);
		text_escape(qk, sizeof(qk), kept ? kept : "");
		printf("%s: '%s' is back in the inbox%s%s%s\n", qf, qn,
		       kept ? "; its old report is now '" : "", kept ? qk : "", kept ? "'" : "");
	} else {
		const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, cmd[0] == 'p' ? "paused"
										      : "resumed"),
			    *item;
		printf("%s:", cmd[0] == 'p' ? "paused" : "resumed");
		cJSON_ArrayForEach(item, list)
		{
			char q[256];
			text_escape(q, sizeof(q), cJSON_IsString(item) ? item->valuestring : "?");
			printf(" %s", q);
		}
		printf("\n");
	}
	cJSON_Delete(o);
	free(body);
	return 0;
}

int control_client_run(const struct control_target *t, int argc, char **argv)
{
	int r;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "resend-dropd: cannot initialise libcurl\n");
		return CTL_EXIT_UNREACHABLE;
	}
	r = ctl_command(t, argc, argv);
	curl_global_cleanup();
	return r;
}
