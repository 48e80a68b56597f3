/* Hot backup and restore of a ledger directory. A backup is a compacted copy of the
 * ledger as of one read transaction (mdb_env_copy2, MDB_CP_COMPACT, beside a running
 * broker), the directory's key files, and a manifest (BACKUP_MANIFEST_FILE) recording
 * the journal sequence and chain head the copy holds, the SHA-256 of every file and the
 * verify result. Both directions build the new directory beside its destination, fsync
 * every file and the directory, and only then rename it into place: DEST or the ledger
 * directory is either absent/untouched or complete. Restore never replaces a ledger a
 * broker holds (the writer lock), nor any non-empty directory without `force`, and
 * installs only a copy that matches its manifest byte for byte and passes verify. The
 * card key file lives outside the ledger directory and is never part of a backup. */
#ifndef COALITION_BACKUP_H
#define COALITION_BACKUP_H

#include "digest.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BACKUP_MANIFEST_FILE "BACKUP"
#define BACKUP_FORMAT_VERSION 1u
#define BACKUP_DATA_FILE "data.mdb"
/* The key files of a ledger directory (made by `coalitionctl init`) that a backup
 * carries when the source has them; nothing else in the directory is copied. */
#define BACKUP_KEY_FILES_MAX 4
#define BACKUP_KEY_FILE_BYTES_MAX 65536 /* far above any key file; bounds the copy */
#define BACKUP_NAME_BYTES_MAX 32
#define BACKUP_PATH_BYTES_MAX 4096
#define BACKUP_DETAIL_BYTES_MAX 512
#define BACKUP_MANIFEST_BYTES_MAX 16384
#define BACKUP_HEX_BYTES (2 * DIGEST_SHA256_BYTES + 1)
/* The names a directory is built under before its rename: DEST.partial-XXXXXX,
 * DIR.restore-XXXXXX; a replaced ledger is kept as DIR.before-restore-<UTC time>. */
#define BACKUP_PARTIAL_SUFFIX ".partial-XXXXXX"
#define BACKUP_STAGING_SUFFIX ".restore-XXXXXX"
#define BACKUP_ASIDE_SUFFIX ".before-restore-"

_Static_assert(BACKUP_MANIFEST_BYTES_MAX >=
                   2 * BACKUP_PATH_BYTES_MAX + BACKUP_DETAIL_BYTES_MAX +
                       BACKUP_KEY_FILES_MAX * (BACKUP_NAME_BYTES_MAX + 2 * BACKUP_HEX_BYTES),
               "a manifest with the longest values fits the bound restore reads");

typedef struct backup_file {
    char name[BACKUP_NAME_BYTES_MAX];
    uint64_t bytes;
    uint8_t sha256[DIGEST_SHA256_BYTES];
} backup_file_t;

typedef struct backup_manifest {
    uint32_t format, schema;
    uint64_t seq;                         /* the copy's last journal entry (0: empty) */
    uint8_t head[DIGEST_SHA256_BYTES];    /* that entry's chain hash (zeros: empty) */
    int64_t created_ms;                   /* when the copy's read transaction was taken */
    char source[BACKUP_PATH_BYTES_MAX];   /* the ledger directory, absolute */
    char card_key[BACKUP_PATH_BYTES_MAX]; /* the source's card key file: NOT copied */
    backup_file_t data;                   /* data.mdb */
    backup_file_t keys[BACKUP_KEY_FILES_MAX];
    size_t key_count;
    bool verified; /* ledger_verify passed on the copy */
    char verify_detail[BACKUP_DETAIL_BYTES_MAX];
} backup_manifest_t;

/* Whether `name` is one of the key files a backup carries. */
bool backup_key_file_known(const char *name);

/* Copy the ledger in `ledger_dir` (read-only, beside a running broker) to the new
 * directory `dest` (absent, or an empty directory) and fill in *m. CL_OK: installed and
 * verified. CL_ERR_CORRUPT: installed with verify=FAILED recorded (the reason in
 * m->verify_detail): restore will refuse it. Otherwise nothing is left at `dest`:
 * CL_ERR_EXISTS when it is not an empty directory, another error when the copy failed;
 * `why` names the path and the cause. */
int backup_create(const char *ledger_dir, const char *dest, backup_manifest_t *m, char *why,
                  size_t why_size);

typedef struct backup_restored {
    backup_manifest_t manifest;
    bool replaced;                     /* a non-empty directory was moved aside */
    char aside[BACKUP_PATH_BYTES_MAX]; /* where it is now */
    long holder_pid;                   /* CL_ERR_LOCKED: the broker holding the ledger */
} backup_restored_t;

/* Install the backup in `src` as the ledger directory `ledger_dir`. CL_ERR_LOCKED (with
 * the pid) when a broker holds ledger_dir; CL_ERR_EXISTS when it is a non-empty directory
 * and !force; CL_ERR_CORRUPT when the backup does not match its manifest, was recorded as
 * failing verify or fails it now; CL_ERR_VERSION for another schema. On any error
 * ledger_dir is unchanged; `why` names the path and the cause. */
int backup_restore(const char *src, const char *ledger_dir, bool force, backup_restored_t *out,
                   char *why, size_t why_size);

/* The manifest as text, key=value lines (what BACKUP holds and the command prints). */
int backup_manifest_format(const backup_manifest_t *m, char *out, size_t size, size_t *len_out);
/* Parse that text strictly: every required key once, known keys only, values checked.
 * CL_ERR_CORRUPT with the line and the reason in `why`. */
int backup_manifest_parse(const char *text, size_t len, backup_manifest_t *m, char *why,
                          size_t why_size);

void backup_hex(const uint8_t *bytes, size_t n, char *out);

#endif
