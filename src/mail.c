#include "mail.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "text.h"

#define MAIL_SUBJECT_MAX 200
#define MAIL_WIDTH 72

/* A paragraph (printf FMT), wrapped at MAIL_WIDTH between words, and a blank line after. */
static void para(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void para(FILE *f, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	for (const char *p = text; *p;) {
		size_t len = strlen(p), cut = len;

		if (len > MAIL_WIDTH) {
			cut = MAIL_WIDTH;
			while (cut > 0 && p[cut] != ' ')
				cut--;
			if (cut == 0) /* one word longer than a line: it stays whole */
				cut = strcspn(p, " ");
		}
		fprintf(f, "%.*s\n", (int)cut, p);
		p += cut;
		while (*p == ' ')
			p++;
	}
	fputc('\n', f);
	free(text);
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static bool has_num(const cJSON *o, const char *key)
{
	return cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* "KEY: VALUE" when VALUE is there. */
static void line(FILE *f, const char *key, const char *value)
{
	if (value && value[0])
		fprintf(f, "%-10s %s\n", key, value);
}

/* The subject, one line: what a file or folder name holds that is not printable is escaped. */
static void subject(char *buf, size_t size, const char *host, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void subject(char *buf, size_t size, const char *host, const char *fmt, ...)
{
	char raw[MAIL_SUBJECT_MAX * 2];
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	n = (size_t)vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	if (host && n < sizeof(raw))
		snprintf(raw + n, sizeof(raw) - n, " (%s)", host);
	/* What is left to escape is the host's and the counts': names come escaped. */
	for (char *p = raw; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	n = strlen(raw);
	if (n >= size)
		n = size - 1; /* a subject is one line of a mail client: cut */
	memcpy(buf, raw, n);
	buf[n] = '\0';
}

static void file_event(FILE *f, const char *type, const cJSON *d, const char *host, char *subj,
		       size_t subj_size)
{
	char folder_esc[256], file_esc[1024];
	const char *folder = folder_esc, *file = file_esc;
	const cJSON *rows = cJSON_GetObjectItemCaseSensitive(d, "rows");
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(d, "error");
	const cJSON *imp = cJSON_GetObjectItemCaseSensitive(d, "import");
	const cJSON *counts = cJSON_GetObjectItemCaseSensitive(imp, "counts");
	char buf[256];

	/* A name may hold a line break or worse: one line each, as in the subject. */
	text_escape(folder_esc, sizeof(folder_esc), str(d, "folder") ? str(d, "folder") : "");
	text_escape(file_esc, sizeof(file_esc), str(d, "file") ? str(d, "file") : "");
	if (strcmp(type, "file.failed") == 0) {
		subject(subj, subj_size, host, "resend-dropd: %s failed in %s", file, folder);
		para(f, "The file '%s' of folder '%s' was not imported. It is in the folder's "
			"failed directory, with a report beside it; once the cause is fixed, "
			"`resend-dropd retry %s %s` takes it again.",
		     file, folder, folder, file);
	} else if (strcmp(type, "rows.rejected") == 0) {
		subject(subj, subj_size, host, "resend-dropd: %.0f rows of %s were rejected (%s)",
			num(rows, "rejected"), file, folder);
		para(f, "The file '%s' of folder '%s' was imported without %.0f of its rows; "
			"they are listed, with the reason for each, in the rejects file beside its "
			"report in the folder's done directory.",
		     file, folder, num(rows, "rejected"));
	} else {
		subject(subj, subj_size, host, "resend-dropd: %s %s in %s", file,
			str(d, "outcome") ? str(d, "outcome") : "done", folder);
		para(f, "The file '%s' of folder '%s' is done.", file, folder);
	}
	line(f, "Folder:", folder);
	line(f, "File:", file);
	line(f, "Outcome:", str(d, "outcome"));
	if (cJSON_IsObject(err)) {
		line(f, "Stage:", str(err, "stage"));
		line(f, "Error:", str(err, "message"));
	}
	if (cJSON_IsObject(rows) && has_num(rows, "read")) {
		snprintf(buf, sizeof(buf), "%.0f read, %.0f uploaded, %.0f rejected",
			 num(rows, "read"), num(rows, "uploaded"), num(rows, "rejected"));
		line(f, "Rows:", buf);
	}
	line(f, "Import:", str(d, "import_id"));
	if (cJSON_IsObject(imp)) {
		line(f, "Status:", str(imp, "status"));
		if (cJSON_IsObject(counts)) {
			snprintf(buf, sizeof(buf),
				 "%.0f created, %.0f updated, %.0f skipped, %.0f failed of %.0f",
				 num(counts, "created"), num(counts, "updated"),
				 num(counts, "skipped"), num(counts, "failed"),
				 num(counts, "total"));
			line(f, "Contacts:", buf);
		}
	}
	line(f, "Received:", str(d, "claimed_at"));
	line(f, "Finished:", str(d, "finished_at"));
	line(f, "SHA-256:", str(d, "sha256"));
}

static void daemon_event(FILE *f, const char *type, const cJSON *d, const char *host,
			 char *subj, size_t subj_size)
{
	const char *folder = str(d, "folder"), *message = str(d, "message");
	static const struct {
		const char *type, *what;
	} what[] = {
		{"folder.stuck", "a folder cannot be served"},
		{"api_key.refused", "the API key was refused"},
		{"intake.paused", "no new file is taken"},
		{"intake.resumed", "files are taken again"},
	};
	const char *w = type;

	for (size_t i = 0; i < sizeof(what) / sizeof(what[0]); i++)
		if (strcmp(what[i].type, type) == 0)
			w = what[i].what;
	if (folder)
		subject(subj, subj_size, host, "resend-dropd: %s: %s", folder, w);
	else
		subject(subj, subj_size, host, "resend-dropd: %s", w);
	para(f, "%s%s%s.", folder ? folder : "", folder ? ": " : "", message ? message : w);
	line(f, "Folder:", folder);
}

static void digest(FILE *f, const cJSON *d, const char *host, char *subj, size_t subj_size)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "totals");
	const cJSON *folders = cJSON_GetObjectItemCaseSensitive(d, "folders");
	const cJSON *failures = cJSON_GetObjectItemCaseSensitive(d, "failures");
	const cJSON *o;

	subject(subj, subj_size, host,
		"resend-dropd daily digest: %.0f imported, %.0f failed, %.0f skipped",
		num(t, "imported"), num(t, "failed"), num(t, "skipped"));
	para(f, "The files that finished from %s to %s.", str(d, "from") ? str(d, "from") : "?",
	     str(d, "until") ? str(d, "until") : "?");
	if (cJSON_GetArraySize(folders) == 0) {
		fprintf(f, "No file finished, and none is in hand.\n");
	} else {
		fprintf(f, "%-24s %8s %8s %8s %8s %8s %10s %10s\n", "folder", "files", "imported",
			"skipped", "failed", "in hand", "created", "updated");
		cJSON_ArrayForEach(o, folders)
		{
			char name[100];

			text_escape(name, sizeof(name), str(o, "folder") ? str(o, "folder") : "");
			fprintf(f, "%-24s %8.0f %8.0f %8.0f %8.0f %8.0f %10.0f %10.0f\n", name,
				num(o, "files"), num(o, "imported"), num(o, "skipped"),
				num(o, "failed"), num(o, "in_hand"), num(o, "created"),
				num(o, "updated"));
		}
		fprintf(f, "%-24s %8.0f %8.0f %8.0f %8.0f %8.0f %10.0f %10.0f\n", "all",
			num(t, "files"), num(t, "imported"), num(t, "skipped"), num(t, "failed"),
			num(t, "in_hand"), num(t, "created"), num(t, "updated"));
	}
	if (cJSON_GetArraySize(failures) > 0) {
		fprintf(f, "\nFailed (newest first; each is in its folder's failed directory with "
			   "its report):\n");
		cJSON_ArrayForEach(o, failures)
		{
			fprintf(f, "- %s %s/%s: %s\n", str(o, "finished_at") ? str(o, "finished_at") : "",
				str(o, "folder") ? str(o, "folder") : "",
				str(o, "file") ? str(o, "file") : "",
				str(o, "error") ? str(o, "error") : "");
		}
		if (num(d, "failures_not_listed") > 0)
			fprintf(f, "- and %.0f more\n", num(d, "failures_not_listed"));
	}
}

int mail_compose(const struct config_email *m, const char *payload, const char *msg_id,
		 char **ret)
{
	cJSON *ev = cJSON_Parse(payload), *d, *body = NULL, *to, *tags, *tag;
	const char *type;
	char subj[MAIL_SUBJECT_MAX + 1], *text = NULL;
	size_t text_len = 0;
	FILE *f;
	int r = -ENOMEM;

	*ret = NULL;
	type = str(ev, "type");
	d = cJSON_GetObjectItemCaseSensitive(ev, "data");
	if (!type || !cJSON_IsObject(d)) {
		cJSON_Delete(ev);
		return -EBADMSG;
	}
	f = open_memstream(&text, &text_len);
	if (!f)
		goto out;
	const char *host = str(d, "host");
	if (strcmp(type, DIGEST_EVENT_TYPE) == 0)
		digest(f, d, host, subj, sizeof(subj));
	else if (strncmp(type, "file.", 5) == 0 || strcmp(type, "rows.rejected") == 0)
		file_event(f, type, d, host, subj, sizeof(subj));
	else
		daemon_event(f, type, d, host, subj, sizeof(subj));
	fprintf(f, "\n-- \nresend-dropd %s, event %s (%s) at %s\n", RDD_VERSION, msg_id, type,
		str(ev, "timestamp") ? str(ev, "timestamp") : "?");
	if (fclose(f) != 0)
		goto out;
	body = cJSON_CreateObject();
	if (!body)
		goto out;
	cJSON_AddStringToObject(body, "from", m->from);
	to = cJSON_AddArrayToObject(body, "to");
	for (size_t i = 0; to && i < m->n_to; i++)
		cJSON_AddItemToArray(to, cJSON_CreateString(m->to[i]));
	text_json_add_string(body, "subject", subj); /* a cut may split a character */
	/* A file's name may be any bytes: the text is made valid UTF-8 as JSON needs. */
	text_json_add_string(body, "text", text);
	/* Tags let the team tell these e-mails apart in Resend's logs and webhooks. */
	tags = cJSON_AddArrayToObject(body, "tags");
	tag = cJSON_CreateObject();
	if (tags && tag) {
		cJSON_AddStringToObject(tag, "name", "resend_dropd_event");
		char value[32];
		size_t k = 0;
		for (const char *p = type; *p && k < sizeof(value) - 1; p++)
			value[k++] = *p == '.' ? '_' : *p;
		value[k] = '\0';
		cJSON_AddStringToObject(tag, "value", value);
		cJSON_AddItemToArray(tags, tag);
		tag = NULL;
	}
	cJSON_Delete(tag);
	*ret = cJSON_PrintUnformatted(body);
	r = *ret ? 0 : -ENOMEM;
out:
	free(text);
	cJSON_Delete(body);
	cJSON_Delete(ev);
	return r;
}
