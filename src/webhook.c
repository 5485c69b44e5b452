#include "webhook.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

int webhook_secret_decode(const char *text, unsigned char **ret_key, size_t *ret_len,
			  char *why, size_t whysz)
{
	const char *b64;
	unsigned char *key;
	size_t n, pad = 0;
	int len;

	*ret_key = NULL;
	*ret_len = 0;
	if (strncmp(text, WEBHOOK_SECRET_PREFIX, strlen(WEBHOOK_SECRET_PREFIX)) != 0) {
		snprintf(why, whysz, "is not a Standard Webhooks secret: it starts with '%s' and "
			 "the key in base64 (make one with: echo whsec_$(openssl rand -base64 32))",
			 WEBHOOK_SECRET_PREFIX);
		return -EINVAL;
	}
	b64 = text + strlen(WEBHOOK_SECRET_PREFIX);
	n = strlen(b64);
	if (n == 0 || n % 4 != 0 || strspn(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					      "0123456789+/=") != n) {
		snprintf(why, whysz, "is not a Standard Webhooks secret: what follows '%s' is not "
			 "base64", WEBHOOK_SECRET_PREFIX);
		return -EINVAL;
	}
	while (pad < 2 && pad < n && b64[n - 1 - pad] == '=')
		pad++;
	if (memchr(b64, '=', n - pad)) {
		snprintf(why, whysz, "is not a Standard Webhooks secret: what follows '%s' is not "
			 "base64", WEBHOOK_SECRET_PREFIX);
		return -EINVAL;
	}
	key = malloc(n / 4 * 3 + 1);
	if (!key)
		return -ENOMEM;
	len = EVP_DecodeBlock(key, (const unsigned char *)b64, (int)n);
	if (len < 0) {
		free(key);
		snprintf(why, whysz, "is not a Standard Webhooks secret: what follows '%s' is not "
			 "base64", WEBHOOK_SECRET_PREFIX);
		return -EINVAL;
	}
	len -= (int)pad; /* EVP_DecodeBlock counts the padding as zero bytes */
	if (len < WEBHOOK_SECRET_MIN || len > WEBHOOK_SECRET_MAX) {
		OPENSSL_cleanse(key, n / 4 * 3 + 1);
		free(key);
		snprintf(why, whysz, "holds a key of %d bytes; the Standard Webhooks specification "
			 "wants %d to %d (32 recommended)", len, WEBHOOK_SECRET_MIN, WEBHOOK_SECRET_MAX);
		return -EINVAL;
	}
	*ret_key = key;
	*ret_len = (size_t)len;
	return 0;
}

int webhook_sign(const unsigned char *key, size_t key_len, const char *msg_id, int64_t timestamp,
		 const char *body, size_t body_len, char out[WEBHOOK_SIGNATURE_SIZE])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char *msg;
	int n;

	n = asprintf(&msg, "%s.%" PRId64 ".", msg_id, timestamp);
	if (n < 0)
		return -ENOMEM;
	char *whole = realloc(msg, (size_t)n + body_len);
	if (!whole) {
		free(msg);
		return -ENOMEM;
	}
	memcpy(whole + n, body, body_len);
	if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)whole,
		  (size_t)n + body_len, mac, &mac_len)) {
		free(whole);
		return -ENOMEM;
	}
	free(whole);
	memcpy(out, "v1,", 3);
	EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)mac_len);
	return 0;
}
