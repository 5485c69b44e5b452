/* UTF-8 well-formedness (RFC 3629), shared by everything that writes names into logs, JSON
 * reports and HTTP headers. Pure. */
#ifndef RDD_UTF8_H
#define RDD_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the well-formed UTF-8 sequence at S (at most AVAIL bytes, AVAIL >= 1), or 0 when
 * it is not one: overlong forms, surrogates and code points above U+10FFFF are refused. */
size_t utf8_sequence_len(const unsigned char *s, size_t avail);

bool utf8_valid(const char *s);

#endif
