/* Webhooks as the Standard Webhooks specification has them (standardwebhooks.com): the secret,
 * and the three headers that sign a request. Pure (OpenSSL's HMAC and base64). */
#ifndef RDD_WEBHOOK_H
#define RDD_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

/* The specification's bounds for a secret (its key: 24 to 64 bytes; 32 recommended). */
#define WEBHOOK_SECRET_MIN 24
#define WEBHOOK_SECRET_MAX 64
#define WEBHOOK_SECRET_PREFIX "whsec_"

/* "v1," and the base64 of a SHA-256 HMAC (44 characters), NUL-terminated. */
#define WEBHOOK_SIGNATURE_SIZE 48

/* The signing key of secret TEXT: "whsec_" and the key in base64, as the specification writes
 * secrets. *RET_KEY (malloc'd, the caller wipes and frees it) and *RET_LEN. -EINVAL with WHY
 * (a sentence that never quotes the secret) when TEXT is not such a secret; -ENOMEM. */
int webhook_secret_decode(const char *text, unsigned char **ret_key, size_t *ret_len,
			  char *why, size_t whysz);

/* The webhook-signature header's value for message MSG_ID sent at TIMESTAMP (seconds since
 * the epoch) with BODY: "v1," and the base64 of HMAC-SHA256(KEY, "MSG_ID.TIMESTAMP.BODY").
 * -ENOMEM. */
int webhook_sign(const unsigned char *key, size_t key_len, const char *msg_id, int64_t timestamp,
		 const char *body, size_t body_len, char out[WEBHOOK_SIGNATURE_SIZE]);

#endif
