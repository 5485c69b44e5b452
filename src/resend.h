/* The Resend contact-import API as data: request fields, response parsing, error classes.
 * No curl and no libuv here: the HTTP transport lives in http.c, the calls in resend_client.c. */
#ifndef RDD_RESEND_H
#define RDD_RESEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The multipart text fields for one folder, in the order the official SDK sends them after the
 * file part: column_map, on_conflict, segments, topics. Object/array values are compact JSON
 * (cJSON_PrintUnformatted). A field that is absent for the folder is NULL and not sent;
 * on_conflict is always set. column_map key order: email, first_name, last_name, unsubscribed,
 * properties (each {"column","type"}), as the SDK does. */
struct resend_fields {
	char *column_map;
	const char *on_conflict; /* static string */
	char *segments;          /* [{"id":"..."}] */
	char *topics;            /* [{"id":"...","subscription":"opt_in"}] */
};

int resend_fields_build(const struct config_folder *folder, struct resend_fields *ret);
void resend_fields_free(struct resend_fields *f);

/* The hash of what decides what an import of a file does in Resend: the folder's column_map,
 * segments, topics and on_conflict, and nothing else (not the folder's name or directories,
 * not csv, invalid_rows or any other setting). The ledger keeps it beside each file's sha256:
 * the same content imported with other settings is not a duplicate. OUT receives 64
 * lowercase hex digits and a NUL. The canonical text it is the SHA-256 of is described in
 * resend.c; changing that text changes every hash, so that every earlier import stops
 * counting as a duplicate (files would be imported once more). */
void resend_settings_hash(const struct config_folder *f, char out[65]);

/* A file name safe for the Content-Disposition filename: the base name with '"', '\\', CR, LF
 * and other control characters replaced by '_'; never empty ("upload.csv" then). malloc'd. */
char *resend_sanitize_filename(const char *name);

/* "rdd-" + first 32 hex of sha256(folder name + '\n' + file sha256 hex), 36 chars. BUF >= 37. */
void resend_idempotency_key(char buf[37], const char *folder, const char *sha256_hex);

/* A file split into N_PARTS uploads: part PART (from 0) carries the name
 * "x.part-2-of-7.csv" (the sanitized name when N_PARTS < 2; malloc'd, NULL when out of memory)
 * and an Idempotency-Key of its own (the file's when N_PARTS < 2). */
char *resend_part_filename(const char *name, size_t part, size_t n_parts);
void resend_part_key(char buf[37], const char *folder, const char *sha256_hex, size_t part,
		     size_t n_parts);

/* What to do after an answer (or a transport failure: http_status 0). */
enum resend_class {
	RESEND_OK,        /* 2xx */
	RESEND_RETRY,     /* 408, 409 concurrent_idempotent_requests, 5xx, transport: an attempt */
	/* 429 rate_limit_exceeded (or a 429 without a Resend name, from something in between):
	 * the team's limit, not the request's fault. A wait until the time the answer names,
	 * never an attempt. */
	RESEND_RATE_LIMITED,
	RESEND_QUOTA,     /* 429 daily_quota_exceeded / monthly_quota_exceeded: back off for hours */
	RESEND_AUTH,      /* bad or missing API key: pause every upload */
	RESEND_PERMANENT, /* any other 4xx: fail the file */
};

struct resend_error {
	long status;        /* HTTP status, 0 for a transport error */
	char name[64];      /* Resend's error name, or "" */
	char message[512];  /* Resend's message, or an excerpt of a non-JSON body (escaped) */
};

/* Classifies an HTTP answer; fills ERR (when not NULL) for anything but RESEND_OK, with what
 * looks like a key or a bearer token in its name and message redacted (scrub.h; the configured
 * key, which this module does not know, is the caller's to scrub).
 * Auth: 401 (any name), 403 with name invalid_api_key or restricted_api_key, and 400/403 whose
 * message says the API key is invalid. */
enum resend_class resend_classify(long status, const char *body, size_t len,
				  struct resend_error *err);

/* {"object":"contact_import","id":"<uuid>"} -> id. -EBADMSG when no id string is present. */
int resend_parse_created(const char *body, size_t len, char ret_id[64]);

enum resend_import_state {
	RESEND_IMPORT_QUEUED,
	RESEND_IMPORT_IN_PROGRESS,
	RESEND_IMPORT_COMPLETED,
	RESEND_IMPORT_FAILED,
	RESEND_IMPORT_UNKNOWN, /* a status this version does not know: keep polling */
};

struct resend_import {
	enum resend_import_state state;
	char status[32]; /* as received */
	bool has_counts;
	int64_t total, created, updated, skipped, failed; /* -1 when missing */
	char created_at[40], completed_at[40]; /* as received, "" when absent/null */
};

/* Parses GET /contacts/imports/{id} leniently (unknown fields ignored, counts optional).
 * -EBADMSG when the body is not a JSON object with a status string. */
int resend_parse_import(const char *body, size_t len, struct resend_import *ret);
const char *resend_import_state_name(enum resend_import_state s);

/* GET /contacts/imports: a page of imports, newest first. */
struct resend_listed_import {
	char id[64];
	struct resend_import import;
};
struct resend_import_list {
	struct resend_listed_import *items; /* owned (resend_import_list_clear) */
	size_t n;
	bool has_more;
};
/* Parses a page leniently: items without an id or a status are left out. -EBADMSG when the
 * body has no "data" array; -ENOMEM. */
int resend_parse_import_list(const char *body, size_t len, struct resend_import_list *ret);
void resend_import_list_clear(struct resend_import_list *l);

/* A timestamp as Resend writes it ("2026-05-15T18:32:37.823Z" or "2026-05-15 18:32:37.823+00")
 * in wall-clock milliseconds; -1 when it is neither. */
int64_t resend_time_ms(const char *s);

#endif
