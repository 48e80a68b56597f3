/* Shared by backup.c, restore.c, backup_manifest.c and backup_io.c: durable owner-only
 * file copies with their SHA-256, directory states, and building a directory beside its
 * destination and renaming it into place. */
#ifndef COALITION_BACKUP_INTERNAL_H
#define COALITION_BACKUP_INTERNAL_H

#include "backup.h"
#include "ledger.h"

#include <stdarg.h>

#define BACKUP_COPY_CHUNK_BYTES 65536
#define BACKUP_DATA_BYTES_MAX ((uint64_t)1 << 40) /* STORE_MAP_BYTES_MAX: no ledger is larger */
#define BACKUP_DIR_MODE 0700
#define BACKUP_FILE_MODE 0600
#define BACKUP_LMDB_LOCK_FILE "lock.mdb"

/* The key files a backup carries, in the order it copies them. */
extern const char *const backup_key_files[BACKUP_KEY_FILES_MAX];

typedef enum { BIO_ABSENT, BIO_EMPTY_DIR, BIO_NONEMPTY_DIR, BIO_NOT_DIR } bio_state_t;

/* Formats into `why` and returns rc (for one-line error returns). */
int bio_fail(int rc, char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "<dir>/<name>" into out; false when it does not fit. */
bool bio_join(char *out, size_t size, const char *dir, const char *name);
/* What is at `path` (not following a final symlink). */
int bio_state(const char *path, bio_state_t *state_out);
/* A new owner-only directory "<path><suffix>" beside `path` (suffix ends in XXXXXX). */
int bio_make_beside(const char *path, const char *suffix, char *out, size_t size);
/* Read `path` whole (at most max_bytes), hashing it; fsync it first when `sync`. */
int bio_hash_file(const char *path, uint64_t max_bytes, bool sync, backup_file_t *out);
/* Copy `from` to the new file `to` (owner-only, created exclusively), hashing what was
 * copied, then fsync it. At most max_bytes; a longer file is CL_ERR_INVALID. */
int bio_copy_file(const char *from, const char *to, uint64_t max_bytes, backup_file_t *out);
/* Write `len` bytes as the new owner-only file `path`, then fsync it. */
int bio_write_file(const char *path, const char *data, size_t len);
int bio_fsync_dir(const char *dir);
/* fsync the directory holding `path`. */
int bio_fsync_parent(const char *path);
/* Remove a directory this process built (its plain files, then itself). */
int bio_remove_built(const char *dir);
/* Rename `from` to `to` when `to` is absent or an empty directory, never replacing
 * anything else. CL_ERR_EXISTS when `to` is (now) something else. */
int bio_install(const char *from, const char *to);
/* Swap the directories `a` and `b` atomically (renameat2 RENAME_EXCHANGE). */
int bio_exchange(const char *a, const char *b);

/* The copy in `dir` as a ledger: its last seq and chain head, and ledger_verify's
 * verdict (CL_OK or CL_ERR_CORRUPT, detail in `detail`); the LMDB lock file opening
 * it made is removed again. Other errors: the copy could not be read at all. */
int backup_audit(const char *dir, uint64_t *seq_out, uint8_t head[DIGEST_SHA256_BYTES],
                 char *detail, size_t detail_size);

#endif
