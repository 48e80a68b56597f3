/* Ed25519 signatures (OpenSSL) for documents the operator publishes: settlement
 * statements. Keys are PEM files: the secret one PKCS#8, owner-only (0600), written
 * exclusively; the public one SubjectPublicKeyInfo, readable by anyone. A signature
 * travels as "ed25519:" and the base64 of its 64 bytes. */
#ifndef COALITION_SIGN_H
#define COALITION_SIGN_H

#include <stddef.h>

#define SIGN_SIGNATURE_BYTES 64
#define SIGN_PREFIX "ed25519:"
/* "ed25519:" + base64 of 64 bytes (88 characters) + NUL. */
#define SIGN_TEXT_BYTES (sizeof SIGN_PREFIX - 1 + 88 + 1)
_Static_assert(4 * ((SIGN_SIGNATURE_BYTES + 2) / 3) == 88, "base64 of a signature is 88 chars");

/* Write a new key pair; CL_ERR_EXISTS when the secret file is already there. */
int sign_key_new(const char *secret_path, const char *public_path);
/* Sign `len` bytes with the secret key file (refused unless owner-only): text_out gets
 * "ed25519:BASE64". `why` says what went wrong. */
int sign_document(const char *secret_path, const void *data, size_t len,
                  char text_out[SIGN_TEXT_BYTES], char *why, size_t why_size);
/* CL_OK when `text` is a valid signature of the bytes under the public key file;
 * CL_ERR_CORRUPT when it is not; other errors with `why`. */
int sign_check(const char *public_path, const void *data, size_t len, const char *text,
               char *why, size_t why_size);

#endif
