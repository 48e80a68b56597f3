/* The backup manifest: what backup_manifest_format writes parses back to the same
 * values, and the parser refuses every malformed or ambiguous manifest (missing or
 * repeated keys, unknown keys, a key file outside the known list, hashes and numbers not
 * in their one exact spelling, a last line without its newline). The writer lock probe
 * sees a holder without taking the lock or creating anything. */
#include "backup_internal.h"
#include "errors.h"
#include "store.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEXT_BYTES BACKUP_MANIFEST_BYTES_MAX

static void sample(backup_manifest_t *m)
{
    memset(m, 0, sizeof *m);
    m->format = BACKUP_FORMAT_VERSION;
    m->schema = 7;
    m->seq = 18446744073709551615u; /* UINT64_MAX: the widest value round-trips */
    for (size_t i = 0; i < sizeof m->head; i++)
        m->head[i] = (uint8_t)(i * 7 + 1);
    m->created_ms = 1796059403051;
    snprintf(m->source, sizeof m->source, "/var/lib/coalition/ledger with space=and equals");
    snprintf(m->card_key, sizeof m->card_key, "/var/lib/coalition/ledger.card.key");
    snprintf(m->data.name, sizeof m->data.name, "%s", BACKUP_DATA_FILE);
    m->data.bytes = 20480;
    memset(m->data.sha256, 0xab, sizeof m->data.sha256);
    m->key_count = 2;
    snprintf(m->keys[0].name, sizeof m->keys[0].name, "broker.key");
    m->keys[0].bytes = 186;
    memset(m->keys[0].sha256, 0x01, sizeof m->keys[0].sha256);
    snprintf(m->keys[1].name, sizeof m->keys[1].name, "operator.sign.pub");
    m->keys[1].bytes = 113;
    memset(m->keys[1].sha256, 0xfe, sizeof m->keys[1].sha256);
    m->verified = true;
    snprintf(m->verify_detail, sizeof m->verify_detail, "12 entries: chain holds");
}

static void format_sample(char *text, size_t *len)
{
    backup_manifest_t m;
    sample(&m);
    EXPECT_EQ("format", CL_OK, backup_manifest_format(&m, text, TEXT_BYTES, len));
}

static void round_trip(void **state)
{
    (void)state;
    static char text[TEXT_BYTES];
    char why[256];
    size_t len = 0;
    backup_manifest_t want, got;
    sample(&want);
    format_sample(text, &len);
    int rc = backup_manifest_parse(text, len, &got, why, sizeof why);
    if (rc != CL_OK)
        fail_msg("parse of a written manifest: expected ok, got %s", why);
    EXPECT_EQ("seq", want.seq, got.seq);
    EXPECT_TRUE("head", memcmp(want.head, got.head, sizeof got.head) == 0);
    EXPECT_EQ("created_ms", want.created_ms, got.created_ms);
    EXPECT_STR("source", want.source, got.source);
    EXPECT_STR("card key", want.card_key, got.card_key);
    EXPECT_EQ("data bytes", want.data.bytes, got.data.bytes);
    EXPECT_TRUE("data sha", memcmp(want.data.sha256, got.data.sha256, 32) == 0);
    EXPECT_EQ("key files", 2, got.key_count);
    EXPECT_STR("second key file", "operator.sign.pub", got.keys[1].name);
    EXPECT_TRUE("second key sha", memcmp(want.keys[1].sha256, got.keys[1].sha256, 32) == 0);
    EXPECT_TRUE("verified", got.verified);
    EXPECT_STR("detail", want.verify_detail, got.verify_detail);
}

static void newline_in_a_value_is_not_written(void **state)
{
    (void)state;
    static char text[TEXT_BYTES];
    size_t len = 0;
    backup_manifest_t m;
    sample(&m);
    snprintf(m.source, sizeof m.source, "/tmp/evil\nverify=OK");
    EXPECT_EQ("format with a newline in the path", CL_ERR_INVALID,
              backup_manifest_format(&m, text, sizeof text, &len));
}

/* The sample with line `key=...` replaced by `line` ("" drops it), or `line` appended
 * when `key` is NULL. */
static size_t variant(char *out, const char *key, const char *line)
{
    static char text[TEXT_BYTES];
    size_t len = 0;
    format_sample(text, &len);
    if (key == NULL)
        return (size_t)snprintf(out, TEXT_BYTES, "%s%s\n", text, line);
    char needle[64];
    snprintf(needle, sizeof needle, "\n%s=", key);
    char *at = strstr(text, needle);
    if (at == NULL)
        fail_msg("the sample has no %s= line", key);
    char *end = strchr(at + 1, '\n');
    return (size_t)snprintf(out, TEXT_BYTES, "%.*s%s%s%s", (int)(at - text + 1), text, line,
                            line[0] != '\0' ? "\n" : "", end + 1);
}

static void expect_refused(const char *what, const char *text, size_t len, const char *reason)
{
    backup_manifest_t m;
    char why[256] = "";
    int rc = backup_manifest_parse(text, len, &m, why, sizeof why);
    if (rc != CL_ERR_CORRUPT)
        fail_msg("%s: expected CL_ERR_CORRUPT, got %d (%s)", what, rc, why);
    if (strstr(why, reason) == NULL)
        fail_msg("%s: expected the reason to say \"%s\", got \"%s\"", what, reason, why);
}

static void malformed_manifests_refused(void **state)
{
    (void)state;
    static const struct {
        const char *key, *line, *reason;
    } cases[] = {
        {"seq", "", "no seq= line"},
        {"verify", "", "no verify= line"},
        {NULL, "seq=5", "key given twice"},
        {NULL, "mystery=1", "unknown key"},
        {NULL, "no equals sign", "not key=value"},
        {"seq", "seq=012", "bad value"},
        {"seq", "seq=-1", "bad value"},
        {"seq", "seq=18446744073709551616", "bad value"},
        {"seq", "seq=", "bad value"},
        {"format", "format=2", "bad value"},
        {"head", "head=ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
         "bad value"},
        {"head", "head=abab", "bad value"},
        {"data", "data=other.mdb 1 ab", "bad value"},
        {"data", "data=data.mdb 20480", "bad value"},
        {"verify", "verify=ok", "bad value"},
        {NULL, "key=../data.mdb 1 0101010101010101010101010101010101010101010101010101010101010101",
         "bad value"},
        {NULL,
         "key=broker.key 186 0101010101010101010101010101010101010101010101010101010101010101",
         "bad value"}, /* named twice */
        {NULL,
         "key=broker.pub 999999 0101010101010101010101010101010101010101010101010101010101010101",
         "bad value"}, /* larger than any key file */
        {"source", "source=", "bad value"},
    };
    static char text[TEXT_BYTES];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = variant(text, cases[i].key, cases[i].line);
        expect_refused(cases[i].line[0] ? cases[i].line : cases[i].key, text, len, cases[i].reason);
    }
    size_t len = variant(text, NULL, "created=whatever");
    len--; /* the last line without its newline */
    expect_refused("no final newline", text, len, "no newline");
}

static void lock_probe_sees_a_holder_without_creating_anything(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-backup-XXXXXX", lock_path[64];
    EXPECT_TRUE("mkdtemp", mkdtemp(dir) != NULL);
    snprintf(lock_path, sizeof lock_path, "%s/%s", dir, STORE_LOCK_FILE);
    long pid = -1;
    EXPECT_EQ("probe of a directory without a lock file", CL_OK, store_lock_probe(dir, &pid));
    EXPECT_EQ("no lock file made by the probe", -1, access(lock_path, F_OK));
    int ready[2], release[2];
    EXPECT_EQ("pipe", 0, pipe(ready));
    EXPECT_EQ("pipe", 0, pipe(release));
    pid_t child = fork();
    if (child == 0) { /* another process holds the writer lock until told to go */
        store_lock_t *lock = NULL;
        long holder = 0;
        char c = store_lock_take(&lock, dir, &holder) == CL_OK ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1 || read(release[0], &c, 1) != 1)
            _exit(1);
        store_lock_release(&lock);
        _exit(0);
    }
    char c = 0;
    EXPECT_EQ("child ready", 1, read(ready[0], &c, 1));
    EXPECT_EQ("child took the lock", 'y', c);
    EXPECT_EQ("probe of a held lock", CL_ERR_LOCKED, store_lock_probe(dir, &pid));
    EXPECT_EQ("the holder's pid", child, pid);
    store_lock_t *mine = NULL;
    long holder = 0;
    EXPECT_EQ("the probe left the lock to its holder", CL_ERR_LOCKED,
              store_lock_take(&mine, dir, &holder));
    EXPECT_EQ("release", 1, write(release[1], "g", 1));
    waitpid(child, NULL, 0);
    EXPECT_EQ("probe after release", CL_OK, store_lock_probe(dir, &pid));
    EXPECT_EQ("take after release", CL_OK, store_lock_take(&mine, dir, &holder));
    store_lock_drop(&mine);
    EXPECT_TRUE("drop cleared the pointer", mine == NULL);
    EXPECT_EQ("drop kept the lock file", 0, access(lock_path, F_OK));
    unlink(lock_path);
    rmdir(dir);
}

#define GROW_VALUE_BYTES 4000
#define GROW_RECORDS 512 /* about 2 MB: far past the reader's map */

/* Another process grows the environment past the map this process opened it with. */
static void grow_elsewhere(const char *dir)
{
    pid_t child = fork();
    if (child == 0) {
        MDB_env *env = NULL;
        MDB_txn *txn = NULL;
        MDB_dbi dbi;
        static char value[GROW_VALUE_BYTES];
        memset(value, 'g', sizeof value);
        int rc = store_env_open(&env, dir, STORE_READ_WRITE);
        rc = rc == CL_OK ? mdb_txn_begin(env, NULL, 0, &txn) : rc;
        rc = rc == CL_OK ? mdb_dbi_open(txn, NULL, 0, &dbi) : rc;
        for (int i = 0; rc == CL_OK && i < GROW_RECORDS; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%05d", i);
            MDB_val k = {strlen(key), key}, v = {sizeof value, value};
            rc = mdb_put(txn, dbi, &k, &v, 0);
        }
        rc = rc == CL_OK ? mdb_txn_commit(txn) : rc;
        _exit(rc == CL_OK ? 0 : 1);
    }
    int status = -1;
    waitpid(child, &status, 0);
    EXPECT_EQ("the other process grew the environment", 0, WEXITSTATUS(status));
}

/* mdb_env_copy2 creates its file exclusively and leaves it when the copy's transaction
 * finds the map resized: the retry must not trip over it. */
static void copy_after_another_process_grew_the_map(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-backup-env-XXXXXX", copy[64], path[96];
    EXPECT_TRUE("mkdtemp", mkdtemp(dir) != NULL);
    snprintf(copy, sizeof copy, "%s/copy", dir);
    EXPECT_EQ("mkdir", 0, mkdir(copy, 0700));
    MDB_env *env = NULL;
    EXPECT_EQ("create", CL_OK, store_env_open(&env, dir, STORE_READ_WRITE));
    mdb_env_close(env);
    const store_options_t small = {STORE_MAP_BYTES_MIN, STORE_MAP_BYTES_MAX};
    EXPECT_EQ("open read-only with a small map", CL_OK,
              store_env_open_with(&env, dir, STORE_READ_ONLY, &small));
    grow_elsewhere(dir);
    EXPECT_EQ("copy after the growth", CL_OK, store_env_copy_compact(env, copy));
    mdb_env_close(env);
    MDB_env *copied = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_stat st;
    EXPECT_EQ("open the copy", CL_OK, store_env_open(&copied, copy, STORE_READ_ONLY));
    EXPECT_EQ("read", CL_OK, store_read_begin(copied, &txn));
    EXPECT_EQ("main db", 0, mdb_dbi_open(txn, NULL, 0, &dbi));
    EXPECT_EQ("stat", 0, mdb_stat(txn, dbi, &st));
    EXPECT_EQ("the copy holds what the other process wrote", GROW_RECORDS, st.ms_entries);
    mdb_txn_abort(txn);
    mdb_env_close(copied);
    EXPECT_EQ("remove the copy", CL_OK, store_env_remove(copy));
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(newline_in_a_value_is_not_written),
        cmocka_unit_test(malformed_manifests_refused),
        cmocka_unit_test(lock_probe_sees_a_holder_without_creating_anything),
        cmocka_unit_test(copy_after_another_process_grew_the_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
