/* Ed25519 with OpenSSL's one-shot EVP_DigestSign/EVP_DigestVerify (no digest: Ed25519
 * hashes internally). See sign.h. */
#include "sign.h"

#include "errors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((format(printf, 4, 5))) static int why_set(char *why, size_t size, int rc,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return rc;
}

static FILE *open_new(const char *path, mode_t mode, bool exclusive)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC), mode);
    if (fd < 0)
        return NULL;
    if (fchmod(fd, mode) != 0) {
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL)
        close(fd);
    return f;
}

int sign_key_new(const char *secret_path, const char *public_path)
{
    assert(secret_path != NULL && public_path != NULL);
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (key == NULL)
        return CL_ERR_NOMEM;
    FILE *f = open_new(secret_path, 0600, true);
    int rc = f == NULL ? (errno == EEXIST ? CL_ERR_EXISTS : CL_ERR_IO) : CL_OK;
    if (f != NULL) {
        bool ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
        ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
        ok = fclose(f) == 0 && ok;
        rc = ok ? CL_OK : CL_ERR_IO;
    }
    if (rc == CL_OK) {
        f = open_new(public_path, 0644, false);
        bool ok = f != NULL && PEM_write_PUBKEY(f, key) == 1;
        ok = f != NULL && fclose(f) == 0 && ok;
        rc = ok ? CL_OK : CL_ERR_IO;
    }
    EVP_PKEY_free(key);
    return rc;
}

static EVP_PKEY *read_key(const char *path, bool secret, char *why, size_t why_size)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        why_set(why, why_size, CL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (secret && (fstat(fileno(f), &st) != 0 || (st.st_mode & 077) != 0)) {
        fclose(f);
        why_set(why, why_size, CL_ERR_INVALID, "%s is readable by others; chmod 600 it", path);
        return NULL;
    }
    EVP_PKEY *key = secret ? PEM_read_PrivateKey(f, NULL, NULL, NULL)
                           : PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (key != NULL && EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    if (key == NULL)
        why_set(why, why_size, CL_ERR_INVALID, "%s is not an Ed25519 %s key in PEM", path,
                secret ? "private" : "public");
    return key;
}

int sign_document(const char *secret_path, const void *data, size_t len,
                  char text_out[SIGN_TEXT_BYTES], char *why, size_t why_size)
{
    assert(secret_path != NULL && data != NULL && text_out != NULL && why_size > 0);
    EVP_PKEY *key = read_key(secret_path, true, why, why_size);
    if (key == NULL)
        return CL_ERR_INVALID;
    unsigned char sig[SIGN_SIGNATURE_BYTES];
    size_t sig_len = sizeof sig;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
              EVP_DigestSign(ctx, sig, &sig_len, data, len) == 1 &&
              sig_len == SIGN_SIGNATURE_BYTES;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    if (!ok)
        return why_set(why, why_size, CL_ERR_INVALID, "signing failed");
    size_t prefix = strlen(SIGN_PREFIX);
    memcpy(text_out, SIGN_PREFIX, prefix);
    int n = EVP_EncodeBlock((unsigned char *)text_out + prefix, sig, SIGN_SIGNATURE_BYTES);
    assert(n == 88 && prefix + (size_t)n + 1 == SIGN_TEXT_BYTES);
    return CL_OK;
}

int sign_check(const char *public_path, const void *data, size_t len, const char *text,
               char *why, size_t why_size)
{
    assert(public_path != NULL && data != NULL && text != NULL && why_size > 0);
    size_t prefix = strlen(SIGN_PREFIX);
    unsigned char sig[SIGN_SIGNATURE_BYTES + 3];
    if (strncmp(text, SIGN_PREFIX, prefix) != 0 || strlen(text) != SIGN_TEXT_BYTES - 1 ||
        EVP_DecodeBlock(sig, (const unsigned char *)text + prefix, 88) != SIGN_SIGNATURE_BYTES + 2)
        return why_set(why, why_size, CL_ERR_CORRUPT, "the signature is not ed25519:BASE64");
    EVP_PKEY *key = read_key(public_path, false, why, why_size);
    if (key == NULL)
        return CL_ERR_INVALID;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
              EVP_DigestVerify(ctx, sig, SIGN_SIGNATURE_BYTES, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return ok ? CL_OK
              : why_set(why, why_size, CL_ERR_CORRUPT, "the signature does not match the document");
}
