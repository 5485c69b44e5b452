#include "address.h"

#include <stdbool.h>
#include <string.h>

static bool email_local_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c >= 0x80 || strchr("!#$%&'*+/=?^_`{|}~.-", c) != NULL;
}

static bool email_domain_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c >= 0x80 || c == '-';
}

const char *address_problem(const char *e, size_t len)
{
	const char *at = memchr(e, '@', len);
	size_t local, dom, label = 0, labels = 1;

	if (len > 254)
		return "longer than 254 characters";
	for (size_t i = 0; i < len; i++)
		if (e[i] == ' ' || e[i] == '\t')
			return "contains a space";
	if (!at)
		return "no '@'";
	if (memchr(at + 1, '@', len - (size_t)(at - e) - 1))
		return "more than one '@'";
	local = (size_t)(at - e);
	dom = len - local - 1;
	if (local == 0)
		return "nothing before the '@'";
	if (local > 64)
		return "more than 64 characters before the '@'";
	if (dom == 0)
		return "no domain after the '@'";
	for (size_t i = 0; i < local; i++)
		if (!email_local_char((unsigned char)e[i]))
			return "a character that an address cannot hold before the '@'";
	if (e[0] == '.' || e[local - 1] == '.' || memmem(e, local, "..", 2))
		return "a misplaced '.' before the '@'";
	for (size_t i = 0; i < dom; i++) {
		unsigned char c = (unsigned char)at[1 + i];

		if (c == '.') {
			if (label == 0 || at[i] == '-')
				return "an empty or malformed part in the domain";
			labels++;
			label = 0;
			continue;
		}
		if (!email_domain_char(c))
			return "a character that a domain cannot hold";
		if (label == 0 && c == '-')
			return "an empty or malformed part in the domain";
		if (++label > 63)
			return "a domain part longer than 63 characters";
	}
	if (label == 0 || at[dom] == '-')
		return "an empty or malformed part in the domain";
	if (labels < 2)
		return "a domain without a '.'";
	return NULL;
}

bool address_in_mailbox(const char *s, const char **ret, size_t *ret_len)
{
	const char *lt = strrchr(s, '<'), *gt;

	if (!lt) {
		*ret = s;
		*ret_len = strlen(s);
		return true;
	}
	gt = strchr(lt, '>');
	if (!gt || gt[1] != '\0')
		return false;
	*ret = lt + 1;
	*ret_len = (size_t)(gt - lt - 1);
	return true;
}
