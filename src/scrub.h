/* Secrets out of outside text: whatever the API, curl or a proxy sends back may echo the
 * Authorization header, and that text ends up in log lines and reports. Pure (no libuv, no
 * curl, no allocation). */
#ifndef RDD_SCRUB_H
#define RDD_SCRUB_H

#include <stddef.h>

/* What stands where a secret was. */
#define SCRUB_MARKER "[redacted]"

/* Rewrites TEXT, a NUL-terminated string in a buffer of SIZE bytes, in place, with
 * SCRUB_MARKER instead of:
 *  - every occurrence of API_KEY (NULL or "": none), and a trailing start of it (4 bytes or
 *    more, at a word start): what is left of the key when the text was cut;
 *  - a token that looks like a Resend key: "re_" at a word start, then at least 8 of
 *    [A-Za-z0-9_-] with an upper-case letter or a digit among them (so "re_try" and
 *    "re_contacts_file" stay);
 *  - the credentials after "Bearer " and after "Authorization:" / "authorization=" (with or
 *    without a scheme word), case-insensitive, up to white space, a quote, a comma, a
 *    semicolon, an ampersand or a bracket; a plain word ("Bearer token") or an upper-case placeholder
 *    ("Bearer YOUR_API_KEY") is not a credential and stays.
 * A text whose length is SIZE - 1 is taken as cut where it ends: a token running into its end
 * is redacted whatever it looks like when it follows "re_", "Bearer " or "Authorization:".
 * The result never exceeds SIZE - 1 bytes: when the marker is longer than what it replaces,
 * the end of the text is cut. Scrubbing twice changes nothing more. TEXT NULL or SIZE 0: no-op.
 * Cost: O(length x key length) at worst, for texts of a few hundred bytes. */
void scrub_secrets(char *text, size_t size, const char *api_key);

#endif
