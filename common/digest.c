/* SHA-256 with a once-fetched EVP_MD; see digest.h. */
#include "digest.h"

#include "errors.h"

#include <openssl/evp.h>
#include <pthread.h>

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void fetch_sha256(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

int digest_sha256(const void *const parts[], const size_t lens[], size_t count,
                  uint8_t out[DIGEST_SHA256_BYTES])
{
    pthread_once(&sha256_once, fetch_sha256);
    if (sha256_md == NULL)
        return CL_ERR_IO;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, sha256_md, NULL) == 1;
    for (size_t i = 0; ok && i < count; i++)
        ok = EVP_DigestUpdate(ctx, parts[i], lens[i]) == 1;
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == DIGEST_SHA256_BYTES;
    EVP_MD_CTX_free(ctx);
    return ok ? CL_OK : CL_ERR_IO;
}
