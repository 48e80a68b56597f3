/* coalitionctl restore: install a backup as a ledger directory, atomically.
 *
 *   read SRC/BACKUP ─► DIR free? (no broker holds it; empty, absent, or --force)
 *   ─► DIR.restore-XXXXXX: copy each file, hashing what was copied (== manifest)
 *   ─► audit the copy (seq and head == manifest, verify passes) ─► fsync
 *   ─► rename into place (DIR absent/empty), or with --force under DIR's writer lock
 *      exchange it with DIR and keep the old one as DIR.before-restore-<time>
 *
 * Files are checked as they are copied, so what is installed is what was checked; the
 * backup itself is only read. Before the final rename nothing in DIR has changed. */
#include "backup_internal.h"

#include "clock.h"
#include "errors.h"
#include "store.h"

#define BACKUP_STAMP_BYTES 20 /* 20261130T172323Z */
#define MS_PER_SECOND 1000

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int read_manifest(const char *src, backup_manifest_t *m, char *why, size_t why_size)
{
    static char text[BACKUP_MANIFEST_BYTES_MAX + 1];
    char path[BACKUP_PATH_BYTES_MAX], inner[BACKUP_DETAIL_BYTES_MAX];
    if (!bio_join(path, sizeof path, src, BACKUP_MANIFEST_FILE))
        return bio_fail(CL_ERR_INVALID, why, why_size, "path too long: %s", src);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return bio_fail(errno == ENOENT ? CL_ERR_NOT_FOUND : CL_ERR_IO, why, why_size,
                        "cannot read %s: %s (not a backup made by coalitionctl backup?)", path,
                        strerror(errno));
    size_t len = 0;
    ssize_t n = 1;
    while (n > 0 && len < sizeof text) {
        n = read(fd, text + len, sizeof text - len);
        len += n > 0 ? (size_t)n : 0;
    }
    close(fd);
    if (n < 0)
        return bio_fail(CL_ERR_IO, why, why_size, "cannot read %s", path);
    if (len > BACKUP_MANIFEST_BYTES_MAX)
        return bio_fail(CL_ERR_CORRUPT, why, why_size, "%s: larger than %d bytes", path,
                        BACKUP_MANIFEST_BYTES_MAX);
    if (backup_manifest_parse(text, len, m, inner, sizeof inner) != CL_OK)
        return bio_fail(CL_ERR_CORRUPT, why, why_size, "%s: %s", path, inner);
    if (!m->verified)
        return bio_fail(CL_ERR_CORRUPT, why, why_size,
                        "%s records that the copy failed verify (%s); refusing it", path,
                        m->verify_detail);
    if (m->schema != LEDGER_SCHEMA_VERSION)
        return bio_fail(CL_ERR_VERSION, why, why_size,
                        "%s holds a ledger of schema %u; this build reads schema %u", path,
                        m->schema, LEDGER_SCHEMA_VERSION);
    return CL_OK;
}

/* Whether DIR may receive the backup; *state says how it is to be installed. */
static int check_target(const char *dir, bool force, bio_state_t *state, backup_restored_t *out,
                        char *why, size_t why_size)
{
    if (bio_state(dir, state) != CL_OK)
        return bio_fail(CL_ERR_IO, why, why_size, "cannot look at %s: %s", dir, strerror(errno));
    if (*state == BIO_NOT_DIR)
        return bio_fail(CL_ERR_EXISTS, why, why_size, "%s exists and is not a directory", dir);
    if (*state != BIO_NONEMPTY_DIR)
        return CL_OK; /* absent or empty: nothing to lose, no broker can hold it */
    assert(*state == BIO_NONEMPTY_DIR);
    int rc = store_lock_probe(dir, &out->holder_pid);
    if (rc == CL_ERR_LOCKED)
        return bio_fail(rc, why, why_size,
                        "a broker (pid %ld) holds ledger %s; stop it first: a live ledger is "
                        "never replaced",
                        out->holder_pid, dir);
    if (rc != CL_OK)
        return bio_fail(rc, why, why_size, "cannot check the writer lock of %s", dir);
    char data[BACKUP_PATH_BYTES_MAX];
    bool ledger = bio_join(data, sizeof data, dir, BACKUP_DATA_FILE) && access(data, F_OK) == 0;
    if (!force)
        return bio_fail(CL_ERR_EXISTS, why, why_size,
                        "%s %s; refusing to replace it (--force moves it aside, never while a "
                        "broker runs)",
                        dir, ledger ? "already holds a ledger" : "is not empty");
    return CL_OK;
}

static int stage_file(const char *src, const char *staging, const backup_file_t *want,
                      uint64_t max_bytes, char *why, size_t why_size)
{
    char from[BACKUP_PATH_BYTES_MAX], to[BACKUP_PATH_BYTES_MAX];
    assert(backup_key_file_known(want->name) || strcmp(want->name, BACKUP_DATA_FILE) == 0);
    if (!bio_join(from, sizeof from, src, want->name) ||
        !bio_join(to, sizeof to, staging, want->name))
        return bio_fail(CL_ERR_INVALID, why, why_size, "path too long: %s", src);
    backup_file_t got;
    int rc = bio_copy_file(from, to, max_bytes, &got);
    if (rc == CL_ERR_INVALID || rc == CL_ERR_NOT_FOUND)
        rc = CL_ERR_CORRUPT; /* larger than the manifest allows, or missing */
    if (rc != CL_OK)
        return bio_fail(rc, why, why_size, "cannot copy %s: %s", from, cl_strerror(rc));
    if (got.bytes == want->bytes && memcmp(got.sha256, want->sha256, sizeof got.sha256) == 0)
        return CL_OK;
    char got_hex[BACKUP_HEX_BYTES], want_hex[BACKUP_HEX_BYTES];
    backup_hex(got.sha256, sizeof got.sha256, got_hex);
    backup_hex(want->sha256, sizeof want->sha256, want_hex);
    return bio_fail(CL_ERR_CORRUPT, why, why_size,
                    "%s does not match the manifest (%" PRIu64 " bytes, sha256 %.16s..., the "
                    "manifest says %" PRIu64 " bytes, sha256 %.16s...): the backup was changed "
                    "or damaged",
                    from, got.bytes, got_hex, want->bytes, want_hex);
}

/* Copy and check every file into `staging`, then audit it as a ledger. */
static int stage(const char *src, const char *staging, const backup_manifest_t *m, char *why,
                 size_t why_size)
{
    /* The manifest's size bounds the copy: a grown file fails before filling the disk. */
    assert(m->verified && m->key_count <= BACKUP_KEY_FILES_MAX); /* read_manifest's checks */
    int rc = stage_file(src, staging, &m->data, m->data.bytes, why, why_size);
    for (size_t i = 0; rc == CL_OK && i < m->key_count; i++)
        rc = stage_file(src, staging, &m->keys[i], m->keys[i].bytes, why, why_size);
    if (rc != CL_OK)
        return rc;
    uint64_t seq = 0;
    uint8_t head[DIGEST_SHA256_BYTES];
    char detail[BACKUP_DETAIL_BYTES_MAX];
    rc = backup_audit(staging, &seq, head, detail, sizeof detail);
    if (rc != CL_OK)
        return bio_fail(rc == CL_ERR_CORRUPT ? rc : CL_ERR_CORRUPT, why, why_size,
                        "the backup in %s fails verify: %s", src, detail);
    if (seq != m->seq || memcmp(head, m->head, sizeof head) != 0)
        return bio_fail(CL_ERR_CORRUPT, why, why_size,
                        "the backup in %s holds journal seq %" PRIu64
                        " but its manifest says seq %" PRIu64 " (or another chain head)",
                        src, seq, m->seq);
    return bio_fsync_dir(staging) == CL_OK
               ? CL_OK
               : bio_fail(CL_ERR_IO, why, why_size, "cannot sync %s", staging);
}

/* --force onto a ledger no broker holds: under DIR's writer lock, swap the staged
 * directory in and keep the old one beside it. */
static int replace(const char *staging, const char *dir, backup_restored_t *out, char *why,
                   size_t why_size)
{
    store_lock_t *lock = NULL;
    int rc = store_lock_take(&lock, dir, &out->holder_pid);
    if (rc == CL_ERR_LOCKED)
        return bio_fail(rc, why, why_size,
                        "a broker (pid %ld) took ledger %s meanwhile; not "
                        "replacing it",
                        out->holder_pid, dir);
    if (rc != CL_OK)
        return bio_fail(rc, why, why_size, "cannot take the writer lock of %s", dir);
    assert(lock != NULL);
    rc = bio_exchange(staging, dir);
    if (rc != CL_OK) {
        store_lock_release(&lock);
        return bio_fail(rc, why, why_size, "cannot swap %s into %s: %s", staging, dir,
                        strerror(errno));
    }
    /* `staging` now names the old ledger; the lock file went with it. */
    char stamp[BACKUP_STAMP_BYTES];
    time_t now = (time_t)(clock_wall_ms() / MS_PER_SECOND);
    struct tm tm;
    gmtime_r(&now, &tm);
    if (strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm) == 0)
        stamp[0] = '\0';
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    int len = snprintf(out->aside, sizeof out->aside, "%.*s%s%s", (int)n, dir, BACKUP_ASIDE_SUFFIX,
                       stamp);
    if (len <= 0 || (size_t)len >= sizeof out->aside || bio_install(staging, out->aside) != CL_OK)
        snprintf(out->aside, sizeof out->aside, "%s", staging); /* it stays where it is */
    store_lock_drop(&lock);
    out->replaced = true;
    return CL_OK;
}

int backup_restore(const char *src, const char *ledger_dir, bool force, backup_restored_t *out,
                   char *why, size_t why_size)
{
    assert(src != NULL && ledger_dir != NULL && why_size > 0);
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    bio_state_t state = BIO_ABSENT;
    int rc = read_manifest(src, &out->manifest, why, why_size);
    if (rc == CL_OK)
        rc = check_target(ledger_dir, force, &state, out, why, why_size);
    if (rc != CL_OK)
        return rc;
    char staging[BACKUP_PATH_BYTES_MAX];
    if (bio_make_beside(ledger_dir, BACKUP_STAGING_SUFFIX, staging, sizeof staging) != CL_OK)
        return bio_fail(CL_ERR_IO, why, why_size, "cannot make a directory beside %s: %s",
                        ledger_dir, strerror(errno));
    rc = stage(src, staging, &out->manifest, why, why_size);
    if (rc == CL_OK && state == BIO_NONEMPTY_DIR) {
        assert(force);
        rc = replace(staging, ledger_dir, out, why, why_size);
    } else if (rc == CL_OK) {
        rc = bio_install(staging, ledger_dir);
        if (rc != CL_OK)
            rc = bio_fail(rc, why, why_size, "cannot rename %s to %s: %s", staging, ledger_dir,
                          rc == CL_ERR_EXISTS ? "it appeared meanwhile" : strerror(errno));
    }
    if (rc == CL_OK)
        return bio_fsync_parent(ledger_dir) == CL_OK
                   ? CL_OK
                   : bio_fail(CL_ERR_IO, why, why_size,
                              "restored into %s, but its parent directory could not be synced",
                              ledger_dir);
    if (bio_remove_built(staging) != CL_OK)
        fprintf(stderr, "coalitionctl: could not remove %s\n", staging);
    return rc;
}
