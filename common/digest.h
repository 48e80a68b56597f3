/* SHA-256 over one or more byte ranges. The algorithm is fetched from OpenSSL once:
 * EVP_sha256() in an EVP_Digest call looks it up in the provider store (under a lock)
 * every time, which showed up in the broker's profile. */
#ifndef COALITION_DIGEST_H
#define COALITION_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DIGEST_SHA256_BYTES 32

/* out = SHA-256(part[0] || part[1] || ...). Returns 0 or CL_ERR_IO. */
int digest_sha256(const void *const parts[], const size_t lens[], size_t count,
                  uint8_t out[DIGEST_SHA256_BYTES]);

#endif
