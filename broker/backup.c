#define _DEFAULT_SOURCE /* realpath */
/* coalitionctl backup: copy the ledger beside a running broker into DEST.
 *
 *   DEST absent or empty ─► DEST.partial-XXXXXX (0700) ─► mdb_env_copy2 COMPACT (one read
 *   transaction) ─► fsync data.mdb ─► key files ─► audit the copy (seq, head, verify)
 *   ─► BACKUP manifest ─► fsync dir ─► rename to DEST ─► fsync parent
 *
 * Any failure before the rename removes the partial directory; a process killed before
 * it leaves DEST untouched (and a DEST.partial-* directory to delete). */
#include "backup_internal.h"

#include "card.h"
#include "clock.h"
#include "errors.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The compacted copy of the ledger, as of one read transaction, into `dir`. */
static int copy_ledger(const char *ledger_dir, const char *dir, int64_t *taken_ms, char *why,
                       size_t why_size)
{
    ledger_t *ledger = NULL;
    int rc = ledger_open(&ledger, ledger_dir, STORE_READ_ONLY);
    if (rc != CL_OK)
        return bio_fail(rc, why, why_size, "cannot open ledger %s: %s", ledger_dir,
                        cl_strerror(rc));
    *taken_ms = clock_wall_ms();
    rc = ledger_snapshot(ledger, dir);
    ledger_destroy(&ledger);
    if (rc != CL_OK)
        return bio_fail(rc, why, why_size, "cannot copy ledger %s into %s: %s", ledger_dir, dir,
                        cl_strerror(rc));
    return CL_OK;
}

static int copy_key_files(const char *ledger_dir, const char *dir, backup_manifest_t *m, char *why,
                          size_t why_size)
{
    m->key_count = 0;
    for (size_t i = 0; i < BACKUP_KEY_FILES_MAX; i++) {
        char from[BACKUP_PATH_BYTES_MAX], to[BACKUP_PATH_BYTES_MAX];
        if (!bio_join(from, sizeof from, ledger_dir, backup_key_files[i]) ||
            !bio_join(to, sizeof to, dir, backup_key_files[i]))
            return bio_fail(CL_ERR_INVALID, why, why_size, "path too long: %s", ledger_dir);
        backup_file_t *f = &m->keys[m->key_count];
        int rc = bio_copy_file(from, to, BACKUP_KEY_FILE_BYTES_MAX, f);
        if (rc == CL_ERR_NOT_FOUND)
            continue; /* a ledger run with --key elsewhere has no broker.key here */
        if (rc != CL_OK)
            return bio_fail(rc, why, why_size, "cannot copy %s to %s: %s", from, to,
                            cl_strerror(rc));
        snprintf(f->name, sizeof f->name, "%s", backup_key_files[i]);
        m->key_count++;
    }
    assert(m->key_count <= BACKUP_KEY_FILES_MAX);
    return CL_OK;
}

/* Fill in what the manifest says of the source and the data file. */
static int describe(const char *ledger_dir, const char *dir, backup_manifest_t *m, char *why,
                    size_t why_size)
{
    char real[PATH_MAX];
    if (realpath(ledger_dir, real) == NULL)
        return bio_fail(CL_ERR_IO, why, why_size, "cannot resolve the path %s", ledger_dir);
    snprintf(m->source, sizeof m->source, "%s", real);
    if (card_keys_default_path(m->source, m->card_key, sizeof m->card_key) != CL_OK)
        return bio_fail(CL_ERR_INVALID, why, why_size, "path too long: %s", m->source);
    char data[BACKUP_PATH_BYTES_MAX];
    if (!bio_join(data, sizeof data, dir, BACKUP_DATA_FILE))
        return bio_fail(CL_ERR_INVALID, why, why_size, "path too long: %s", dir);
    assert(m->source[0] == '/'); /* realpath's answer */
    int rc = bio_hash_file(data, BACKUP_DATA_BYTES_MAX, true, &m->data);
    if (rc != CL_OK)
        return bio_fail(rc, why, why_size, "cannot read back and sync %s: %s", data,
                        cl_strerror(rc));
    snprintf(m->data.name, sizeof m->data.name, "%s", BACKUP_DATA_FILE);
    return CL_OK;
}

static int write_manifest(const char *dir, const backup_manifest_t *m, char *why, size_t why_size)
{
    static char text[BACKUP_MANIFEST_BYTES_MAX];
    char path[BACKUP_PATH_BYTES_MAX];
    size_t len = 0;
    int rc = backup_manifest_format(m, text, sizeof text, &len);
    if (rc != CL_OK)
        return bio_fail(rc, why, why_size,
                        "cannot write a manifest for %s (a path with a "
                        "newline?)",
                        m->source);
    if (!bio_join(path, sizeof path, dir, BACKUP_MANIFEST_FILE))
        return bio_fail(CL_ERR_INVALID, why, why_size, "path too long: %s", dir);
    rc = bio_write_file(path, text, len);
    if (rc == CL_OK)
        rc = bio_fsync_dir(dir);
    return rc == CL_OK ? CL_OK : bio_fail(rc, why, why_size, "cannot write %s", path);
}

/* Everything inside the partial directory: copy, keys, audit, manifest. CL_OK when the
 * manifest is written, whatever the audit's verdict (m->verified). */
static int build(const char *ledger_dir, const char *dir, backup_manifest_t *m, char *why,
                 size_t why_size)
{
    memset(m, 0, sizeof *m);
    m->format = BACKUP_FORMAT_VERSION;
    m->schema = LEDGER_SCHEMA_VERSION;
    int rc = copy_ledger(ledger_dir, dir, &m->created_ms, why, why_size);
    if (rc == CL_OK)
        rc = describe(ledger_dir, dir, m, why, why_size);
    if (rc == CL_OK)
        rc = copy_key_files(ledger_dir, dir, m, why, why_size);
    if (rc != CL_OK)
        return rc;
    assert(m->data.bytes > 0 && strcmp(m->data.name, BACKUP_DATA_FILE) == 0);
    int verdict = backup_audit(dir, &m->seq, m->head, m->verify_detail, sizeof m->verify_detail);
    if (verdict != CL_OK && verdict != CL_ERR_CORRUPT)
        return bio_fail(verdict, why, why_size, "%s", m->verify_detail);
    m->verified = verdict == CL_OK;
    return write_manifest(dir, m, why, why_size);
}

int backup_create(const char *ledger_dir, const char *dest, backup_manifest_t *m, char *why,
                  size_t why_size)
{
    bio_state_t state;
    assert(ledger_dir != NULL && dest != NULL && why_size > 0);
    why[0] = '\0';
    if (bio_state(dest, &state) != CL_OK)
        return bio_fail(CL_ERR_IO, why, why_size, "cannot look at %s", dest);
    if (state == BIO_NONEMPTY_DIR || state == BIO_NOT_DIR)
        return bio_fail(CL_ERR_EXISTS, why, why_size,
                        "%s exists and is not an empty directory; "
                        "refusing to write a backup there",
                        dest);
    char dir[BACKUP_PATH_BYTES_MAX];
    if (bio_make_beside(dest, BACKUP_PARTIAL_SUFFIX, dir, sizeof dir) != CL_OK)
        return bio_fail(CL_ERR_IO, why, why_size, "cannot make a directory beside %s", dest);
    int rc = build(ledger_dir, dir, m, why, why_size);
    if (rc == CL_OK) {
        rc = bio_install(dir, dest);
        if (rc == CL_OK && bio_fsync_parent(dest) != CL_OK)
            return bio_fail(CL_ERR_IO, why, why_size,
                            "backup in %s, but its parent directory could not be synced", dest);
        if (rc == CL_OK) /* installed: verified, or with verify=FAILED recorded */
            return m->verified ? CL_OK : CL_ERR_CORRUPT;
        rc = bio_fail(rc, why, why_size, "cannot rename %s to %s: %s", dir, dest,
                      rc == CL_ERR_EXISTS ? "it is no longer an empty directory" : cl_strerror(rc));
    }
    if (bio_remove_built(dir) != CL_OK)
        fprintf(stderr, "coalitionctl: could not remove the partial backup %s\n", dir);
    return rc;
}
