/* What an e-mail address must look like: the row checks' test of a contact's email, and the
 * configuration's of the addresses e-mails are sent from and to. Pure. */
#ifndef RDD_ADDRESS_H
#define RDD_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

/* Why E (LEN bytes, trimmed) is not an address, or NULL when it looks like one. */
const char *address_problem(const char *e, size_t len);

/* The address of a mailbox S, "addr" or "Name <addr>": *RET and *RET_LEN; false when S has a
 * '<' without a closing '>' at its end. */
bool address_in_mailbox(const char *s, const char **ret, size_t *ret_len);

#endif
