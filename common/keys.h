/* CURVE key files. A secret key file holds one participant's key pair and is owner-only
 * (mode 0600, created exclusively); a public key file holds one public key. Both are
 * text: comment lines start with '#', and the keys are lines "public-key = <Z85>" and
 * "secret-key = <Z85>" (40 characters of ZeroMQ's Z85 each). Reading a secret key file
 * that group or others can read fails with CL_ERR_PERMISSION, and nothing is read. */
#ifndef COALITION_KEYS_H
#define COALITION_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define KEY_Z85_LEN 40
#define KEY_Z85_BYTES (KEY_Z85_LEN + 1)
#define KEY_BINARY_BYTES 32
#define KEY_FILE_BYTES_MAX 1024
#define KEY_WHY_BYTES_MAX 256

_Static_assert(KEY_Z85_LEN == KEY_BINARY_BYTES * 5 / 4, "Z85 encodes 4 bytes in 5 characters");

typedef struct key_pair {
    char public_z85[KEY_Z85_BYTES];
    char secret_z85[KEY_Z85_BYTES];
} key_pair_t;

/* 40 characters of the Z85 alphabet that decode to 32 bytes. */
bool keys_z85_valid(const char *s);
int keys_generate(key_pair_t *out);
/* Create `path` (it must not exist) owner-only with both keys; `comment` goes on the
 * first line. On failure nothing is left at `path`. */
int keys_write_secret(const char *path, const key_pair_t *pair, const char *comment);
/* Create or replace `path` with the public key (mode 0644). */
int keys_write_public(const char *path, const char *public_z85, const char *comment);
/* Read a secret key file: owner-only, both keys present, the public one matching the
 * secret one. `why` says what was wrong. */
int keys_read_secret(const char *path, key_pair_t *out, char *why, size_t why_size);
/* Read the public key of a public or a secret key file. */
int keys_read_public(const char *path, char out[KEY_Z85_BYTES], char *why, size_t why_size);

/* Whether an endpoint stays on this machine (loopback TCP, ipc, inproc): the only places
 * a program may run --insecure, without CURVE. */
bool keys_endpoint_loopback(const char *endpoint);

#endif
