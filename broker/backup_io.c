#define _GNU_SOURCE /* renameat2 */
/* Durable owner-only file copies with their SHA-256, directory states, and renames into
 * place that never replace anything but an empty directory; see backup_internal.h.
 * Every file written is fsynced before its directory is, and a directory before the
 * rename that publishes it. */
#include "backup_internal.h"

#include "errors.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bio_fail(int rc, char *why, size_t why_size, const char *fmt, ...)
{
    assert(rc != CL_OK);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
    return rc;
}

bool bio_join(char *out, size_t size, const char *dir, const char *name)
{
    assert(out != NULL && size > 0 && dir != NULL && name != NULL);
    int n = snprintf(out, size, "%s/%s", dir, name);
    return n > 0 && (size_t)n < size;
}

int bio_state(const char *path, bio_state_t *state_out)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        *state_out = BIO_ABSENT;
        return errno == ENOENT ? CL_OK : CL_ERR_IO;
    }
    if (!S_ISDIR(st.st_mode)) {
        *state_out = BIO_NOT_DIR;
        return CL_OK;
    }
    DIR *d = opendir(path);
    if (d == NULL)
        return CL_ERR_IO;
    *state_out = BIO_EMPTY_DIR;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            *state_out = BIO_NONEMPTY_DIR;
            break;
        }
    }
    closedir(d);
    return CL_OK;
}

int bio_make_beside(const char *path, const char *suffix, char *out, size_t size)
{
    size_t suffix_len = strlen(suffix);
    assert(suffix_len >= 6 && strcmp(suffix + suffix_len - 6, "XXXXXX") == 0); /* mkdtemp's */
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    int len = snprintf(out, size, "%.*s%s", (int)n, path, suffix);
    if (len <= 0 || (size_t)len >= size)
        return CL_ERR_INVALID;
    /* mkdtemp makes it 0700: owner-only from the start. */
    return mkdtemp(out) != NULL ? CL_OK : CL_ERR_IO;
}

/* Hash (and when `to` >= 0 copy) everything `from` holds, up to max_bytes. */
static int pump(int from, int to, uint64_t max_bytes, backup_file_t *out)
{
    static uint8_t chunk[BACKUP_COPY_CHUNK_BYTES]; /* coalitionctl is one thread */
    assert(from >= 0 && max_bytes > 0);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? CL_OK : CL_ERR_IO;
    out->bytes = 0;
    while (rc == CL_OK) {
        ssize_t n = read(from, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n == 0 ? CL_OK : CL_ERR_IO;
            break;
        }
        out->bytes += (uint64_t)n;
        if (out->bytes > max_bytes)
            rc = CL_ERR_INVALID;
        else if (EVP_DigestUpdate(ctx, chunk, (size_t)n) != 1)
            rc = CL_ERR_IO;
        for (ssize_t at = 0; rc == CL_OK && to >= 0 && at < n;) {
            ssize_t w = write(to, chunk + at, (size_t)(n - at));
            if (w < 0 && errno != EINTR)
                rc = CL_ERR_IO;
            at += w > 0 ? w : 0;
        }
    }
    unsigned len = 0;
    if (rc == CL_OK && (EVP_DigestFinal_ex(ctx, out->sha256, &len) != 1 || len != 32))
        rc = CL_ERR_IO;
    EVP_MD_CTX_free(ctx);
    assert(rc != CL_OK || out->bytes <= max_bytes);
    return rc;
}

int bio_hash_file(const char *path, uint64_t max_bytes, bool sync, backup_file_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? CL_ERR_NOT_FOUND : CL_ERR_IO;
    int rc = sync && fsync(fd) != 0 ? CL_ERR_IO : CL_OK;
    if (rc == CL_OK)
        rc = pump(fd, -1, max_bytes, out);
    close(fd);
    return rc;
}

int bio_copy_file(const char *from, const char *to, uint64_t max_bytes, backup_file_t *out)
{
    int in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0)
        return errno == ENOENT ? CL_ERR_NOT_FOUND : CL_ERR_IO;
    int fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, BACKUP_FILE_MODE);
    int rc = fd >= 0 ? pump(in, fd, max_bytes, out) : CL_ERR_IO;
    if (rc == CL_OK && fsync(fd) != 0)
        rc = CL_ERR_IO;
    if (fd >= 0 && close(fd) != 0 && rc == CL_OK)
        rc = CL_ERR_IO;
    close(in);
    if (rc != CL_OK && fd >= 0)
        unlink(to);
    return rc;
}

int bio_write_file(const char *path, const char *data, size_t len)
{
    assert(data != NULL || len == 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, BACKUP_FILE_MODE);
    if (fd < 0)
        return CL_ERR_IO;
    int rc = CL_OK;
    for (size_t at = 0; rc == CL_OK && at < len;) {
        ssize_t w = write(fd, data + at, len - at);
        if (w < 0 && errno != EINTR)
            rc = CL_ERR_IO;
        at += w > 0 ? (size_t)w : 0;
    }
    if (rc == CL_OK && fsync(fd) != 0)
        rc = CL_ERR_IO;
    if (close(fd) != 0 && rc == CL_OK)
        rc = CL_ERR_IO;
    if (rc != CL_OK)
        unlink(path);
    return rc;
}

int bio_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return CL_ERR_IO;
    int rc = fsync(fd) == 0 ? CL_OK : CL_ERR_IO;
    close(fd);
    return rc;
}

int bio_fsync_parent(const char *path)
{
    char parent[BACKUP_PATH_BYTES_MAX];
    int n = snprintf(parent, sizeof parent, "%s", path);
    if (n <= 0 || (size_t)n >= sizeof parent)
        return CL_ERR_INVALID;
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        return bio_fsync_dir(".");
    if (slash == parent)
        slash[1] = '\0'; /* the root */
    else
        *slash = '\0';
    return bio_fsync_dir(parent);
}

int bio_remove_built(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return CL_ERR_IO;
    int rc = CL_OK;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[BACKUP_PATH_BYTES_MAX];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (!bio_join(path, sizeof path, dir, e->d_name) || unlink(path) != 0)
            rc = CL_ERR_IO;
    }
    closedir(d);
    if (rmdir(dir) != 0)
        rc = CL_ERR_IO;
    return rc;
}

int bio_install(const char *from, const char *to)
{
    assert(strcmp(from, to) != 0);
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return CL_OK;
    if (errno != EEXIST)
        return CL_ERR_IO;
    /* `to` exists: rename(2) replaces a directory only when it is empty (ENOTEMPTY
     * otherwise), and never a file by a directory (ENOTDIR). */
    if (rename(from, to) == 0)
        return CL_OK;
    return errno == ENOTEMPTY || errno == EEXIST || errno == ENOTDIR ? CL_ERR_EXISTS : CL_ERR_IO;
}

int bio_exchange(const char *a, const char *b)
{
    assert(strcmp(a, b) != 0);
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0 ? CL_OK : CL_ERR_IO;
}
