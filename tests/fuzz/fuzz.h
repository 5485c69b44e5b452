/* Shared by the libFuzzer harnesses in this directory. */
#ifndef RDD_FUZZ_H
#define RDD_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* assert() is compiled out under NDEBUG, which RelWithDebInfo defines: this one is not. An abort
 * is what libFuzzer reports as a crash, with the input saved under -artifact_prefix. */
#define FUZZ_CHECK(cond)                                                                      \
	do {                                                                                   \
		if (!(cond)) {                                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
			abort();                                                               \
		}                                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* True when S is NUL-terminated within SIZE bytes and holds no control character (so that it
 * prints as one line). */
static inline bool fuzz_one_line(const char *s, size_t size)
{
	const char *end = memchr(s, '\0', size);

	if (!end)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; p < (const unsigned char *)end; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* A NUL-terminated copy of LEN bytes in a buffer of exactly LEN + 1, so that AddressSanitizer
 * catches a read one byte past the terminator. */
static inline char *fuzz_strndup(const void *data, size_t len)
{
	char *s = malloc(len + 1);

	if (!s)
		abort();
	if (len)
		memcpy(s, data, len);
	s[len] = '\0';
	return s;
}

#endif
