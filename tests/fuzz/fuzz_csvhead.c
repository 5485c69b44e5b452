/* libFuzzer harness for the CSV header check: csvhead_parse() on the first bytes of a file,
 * csvhead_read() on the same bytes in a memfd, then csvhead_check() against column maps.
 *
 * Input: byte 0 chooses how the rest is presented, then the rest is the start of a CSV file:
 *   bits 0-2  1:    the first bytes of a longer file (not COMPLETE): the rest is repeated up to
 *                   CSVHEAD_MAX_BYTES + 1 + k bytes, as csvhead.h requires for that case
 *             2:    the whole file, repeated up to CSVHEAD_MAX_BYTES - 1 + k bytes (the cap)
 *             else: the whole file (COMPLETE), as it is (most inputs: 64 KiB ones are slow)
 *   bits 3-4  k (0..3)
 *   bits 5-7  the size of the error buffer, from none at all to 1024 bytes
 * The data is in a buffer of exactly its length, so a read past its end is caught.
 *
 * What is checked is what csvhead.h promises: the return value is one of those documented, a
 * failure writes nothing to *ret and explains itself in one non-empty line, a complete file of at
 * most CSVHEAD_MAX_BYTES is never "too long", csvhead_read() on a descriptor agrees with
 * csvhead_parse() on the same bytes, and csvhead_check() accepts exactly the headers that have
 * every column it asks for. */
#include "csvhead.h"

#include "fuzz.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const size_t errsizes[8] = {0, 1, 2, 4, 5, 16, 128, 1024};

static int memfd = -1;

/* The column map of config/resend-dropd.yaml's "newsletter" folder, less what a header has to
 * show, and the other shapes a map takes. */
static struct config_property props[] = {
	{"plan", "Plan", CONFIG_PROP_STRING},
	{"seats", "Seats", CONFIG_PROP_NUMBER},
};
static const struct config_column_map map_full = {
	.present = true,
	.email = "Email",
	.first_name = "First Name",
	.last_name = "Last Name",
	.unsubscribed = "Unsubscribed",
	.properties = props,
	.n_properties = 2,
};
static const struct config_column_map map_email_only = {.present = true, .email = "E-mail"};
/* present without email: Resend then looks for "email" */
static const struct config_column_map map_no_email = {.present = true,
						       .first_name = "first_name",
						       .properties = props,
						       .n_properties = 1};
static const struct config_column_map no_map = {.present = false};

static bool has(const struct csvhead *h, const char *name)
{
	for (size_t i = 0; i < h->n_fields; i++)
		if (strcmp(h->fields[i], name) == 0)
			return true;
	return false;
}

/* Whether H has every column MAP asks for: the reference for csvhead_check(). */
static bool ref_complete(const struct csvhead *h, const struct config_column_map *map)
{
	if (!map->present)
		return has(h, "email");
	if (!has(h, map->email ? map->email : "email"))
		return false;
	if ((map->first_name && !has(h, map->first_name)) ||
	    (map->last_name && !has(h, map->last_name)) ||
	    (map->unsubscribed && !has(h, map->unsubscribed)))
		return false;
	for (size_t i = 0; i < map->n_properties; i++)
		if (!has(h, map->properties[i].column))
			return false;
	return true;
}

static void check_errbuf(int r, const char *errbuf, size_t errsz)
{
	if (!errbuf)
		return;
	FUZZ_CHECK(fuzz_one_line(errbuf, errsz));
	if (r < 0 && errsz > 1)
		FUZZ_CHECK(errbuf[0]);
}

static void check_one_map(const struct csvhead *h, const struct config_column_map *map,
			  char *errbuf, size_t errsz)
{
	char big[1024];
	int r = csvhead_check(h, map, errbuf, errsz);

	FUZZ_CHECK(r == 0 || r == -ENOENT);
	FUZZ_CHECK((r == 0) == ref_complete(h, map));
	if (r == 0)
		return;
	check_errbuf(r, errbuf, errsz);
	if (errbuf && errsz == sizeof(big))
		memcpy(big, errbuf, sizeof(big));
	else
		FUZZ_CHECK(csvhead_check(h, map, big, sizeof(big)) == r);
	FUZZ_CHECK(fuzz_one_line(big, sizeof(big)));
	FUZZ_CHECK(strncmp(big, "CSV header lacks column", 23) == 0);
}

static void check_maps(const struct csvhead *h, char *errbuf, size_t errsz)
{
	struct config_property *own;
	struct config_column_map map = {.present = true};
	size_t n;

	check_one_map(h, &map_full, errbuf, errsz);
	check_one_map(h, &no_map, errbuf, errsz);
	/* Each check is O(fields x columns): a header of thousands of fields (up to 32 Ki in
	 * 64 KiB) gets only the two above, so that such inputs do not take most of the time. */
	if (h->n_fields > 1024)
		return;
	check_one_map(h, &map_email_only, errbuf, errsz);
	check_one_map(h, &map_no_email, errbuf, errsz);

	/* A map made of the header's own names is always satisfied. (At most 64 of them: the check
	 * is O(fields x columns), and a configuration names a handful of columns.) */
	n = h->n_fields < 64 ? h->n_fields : 64;
	own = calloc(n, sizeof(*own));
	FUZZ_CHECK(own);
	for (size_t i = 0; i < n; i++) {
		own[i].key = (char *)"k";
		own[i].column = h->fields[i];
	}
	map.email = h->fields[0];
	map.first_name = h->fields[h->n_fields - 1];
	map.last_name = h->fields[h->n_fields / 2];
	map.properties = own;
	map.n_properties = n;
	FUZZ_CHECK(csvhead_check(h, &map, errbuf, errsz) == 0);
	free(own);
}

/* csvhead_read() on a descriptor holding DATA agrees with csvhead_parse(DATA, complete). */
static void check_read(const uint8_t *data, size_t len, int r, const struct csvhead *h,
		       const char *errbuf, size_t errsz)
{
	struct csvhead h2 = {0};
	char err2[1024];
	size_t done = 0;
	int r2;

	if (memfd < 0) {
		memfd = memfd_create("fuzz_csvhead", MFD_CLOEXEC);
		FUZZ_CHECK(memfd >= 0);
	}
	FUZZ_CHECK(ftruncate(memfd, 0) == 0);
	while (done < len) {
		ssize_t n = pwrite(memfd, data + done, len - done, (off_t)done);

		FUZZ_CHECK(n > 0);
		done += (size_t)n;
	}
	r2 = csvhead_read(memfd, &h2, errbuf ? err2 : NULL, errbuf ? errsz : 0);
	FUZZ_CHECK(r2 == r);
	if (errbuf && errsz > 0)
		FUZZ_CHECK(strcmp(err2, errbuf) == 0);
	if (r < 0)
		return;
	FUZZ_CHECK(h2.n_fields == h->n_fields);
	for (size_t i = 0; i < h->n_fields; i++)
		FUZZ_CHECK(strcmp(h2.fields[i], h->fields[i]) == 0);
	csvhead_free(&h2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *sentinel[1];
	static const struct csvhead untouched = {sentinel, 42};
	struct csvhead h = untouched;
	char errbuf[1024];
	uint8_t *buf;
	size_t len, rest, errsz, total = 0;
	unsigned mode, k;
	bool complete;
	int r;

	if (size == 0)
		return 0;
	mode = data[0] & 7u;
	k = (data[0] >> 3) & 3u;
	errsz = errsizes[data[0] >> 5];
	rest = size - 1;

	if (mode == 1 || mode == 2) {
		len = mode == 1 ? CSVHEAD_MAX_BYTES + 1 + k : CSVHEAD_MAX_BYTES - 1 + k;
		complete = mode == 2;
	} else {
		len = rest;
		complete = true;
	}
	buf = malloc(len ? len : 1);
	FUZZ_CHECK(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = rest ? data[1 + i % rest] : (uint8_t)',';

	memset(errbuf, 0x5a, sizeof(errbuf));
	r = csvhead_parse(buf, len, complete, &h, errsz ? errbuf : NULL, errsz);
	FUZZ_CHECK(r == 0 || r == -ENODATA || r == -E2BIG || r == -EILSEQ || r == -ENOMEM);
	check_errbuf(r, errsz ? errbuf : NULL, errsz);
	if (complete && len <= CSVHEAD_MAX_BYTES)
		FUZZ_CHECK(r != -E2BIG);
	if (len == 0)
		FUZZ_CHECK(r == -ENODATA);
	if (r < 0) {
		FUZZ_CHECK(h.fields == untouched.fields && h.n_fields == untouched.n_fields);
	} else {
		FUZZ_CHECK(h.fields && h.n_fields >= 1);
		for (size_t i = 0; i < h.n_fields; i++) {
			FUZZ_CHECK(h.fields[i]);
			total += strlen(h.fields[i]);
		}
		FUZZ_CHECK(total <= len && total <= CSVHEAD_MAX_BYTES);
	}
	if (complete)
		check_read(buf, len, r, &h, errsz ? errbuf : NULL, errsz);
	if (r == 0) {
		check_maps(&h, errsz ? errbuf : NULL, errsz);
		csvhead_free(&h);
		FUZZ_CHECK(h.fields == NULL && h.n_fields == 0);
	}
	free(buf);
	return 0;
}
