/* Unit tests for common/store: the retry on a full map (grows and succeeds when the data
 * needs a bigger map; CL_ERR_MAP_FULL, never CL_OK, when growth cannot help), stale
 * reader slots cleared before growing, the map size options and the writer lock.
 * Real LMDB environments in fresh temp directories, opened with a tiny initial map. */
#include "errors.h"
#include "store.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEMP_DIR_TEMPLATE "/tmp/test_store.XXXXXX"
#define PATH_BYTES 256
#define KIB ((size_t)1024)
/* A tiny map so that growth happens with little data: 64 pages of 4 KiB. */
#define MAP_INITIAL (256 * KIB)
#define MAP_MAX (64 * 1024 * KIB)
/* 200 values of 4000 bytes: each takes one overflow page, about 206 pages in all with the
 * B-tree and meta pages: more than 128 pages (512 KiB), less than 256 (1 MiB). */
#define BIG_RECORDS 200
#define BIG_VALUE_BYTES 4000
#define SMALL_RECORDS 4
#define ATTEMPTS_MAX 8
#define PID_TEXT_BYTES 32
#define READER_LIST_BYTES 4096

typedef struct fixture {
    char dir[PATH_BYTES];
    MDB_env *env;
    MDB_dbi dbi;
    /* What the retry did, counted by the callbacks. */
    size_t records;
    int attempts, grows;
    int forced_error; /* CL_OK, or what every attempt returns */
    pid_t stale_pid;  /* a dead reader's pid, when the test made one */
    int stale_slots_at_grow[ATTEMPTS_MAX];
    int stale_slots_after_grow[ATTEMPTS_MAX];
} fixture_t;

static void remove_in(const char *dir, const char *name)
{
    char path[PATH_BYTES + 16];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static void open_env(fixture_t *f, size_t map_max)
{
    const store_options_t opts = {MAP_INITIAL, map_max};
    int rc = store_env_open_with(&f->env, f->dir, STORE_READ_WRITE, &opts);
    if (rc != CL_OK)
        fail_msg("store_env_open_with(%s): expected CL_OK, got %d (%s)", f->dir, rc,
                 cl_strerror(rc));
    MDB_txn *txn = NULL;
    EXPECT_EQ("mdb_txn_begin", MDB_SUCCESS, mdb_txn_begin(f->env, NULL, 0, &txn));
    EXPECT_EQ("mdb_dbi_open", MDB_SUCCESS, mdb_dbi_open(txn, "t", MDB_CREATE, &f->dbi));
    EXPECT_EQ("mdb_txn_commit", MDB_SUCCESS, mdb_txn_commit(txn));
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s", TEMP_DIR_TEMPLATE);
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->env != NULL)
        mdb_env_close(f->env);
    remove_in(f->dir, "data.mdb");
    remove_in(f->dir, "lock.mdb");
    remove_in(f->dir, STORE_LOCK_FILE);
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

static size_t map_size(const fixture_t *f)
{
    MDB_envinfo info;
    EXPECT_EQ("mdb_env_info", MDB_SUCCESS, mdb_env_info(f->env, &info));
    return info.me_mapsize;
}

/* ---- the attempt and grow callbacks ---------------------------------------------------- */

static void fill_value(uint8_t *buf, size_t len, size_t i)
{
    for (size_t b = 0; b < len; b++)
        buf[b] = (uint8_t)((i * 31 + b) & 0xffu);
}

/* One whole write transaction: f->records values of BIG_VALUE_BYTES, committed or aborted. */
static int write_records(void *ctx)
{
    fixture_t *f = ctx;
    f->attempts++;
    if (f->forced_error != CL_OK)
        return f->forced_error;
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(f->env, NULL, 0, &txn);
    static uint8_t value[BIG_VALUE_BYTES];
    for (size_t i = 0; i < f->records && rc == MDB_SUCCESS; i++) {
        uint8_t key[8];
        store_put_u64(key, i);
        fill_value(value, sizeof value, i);
        MDB_val k = {sizeof key, key}, v = {sizeof value, value};
        rc = mdb_put(txn, f->dbi, &k, &v, 0);
    }
    if (rc == MDB_SUCCESS)
        return store_err(mdb_txn_commit(txn));
    if (txn != NULL)
        mdb_txn_abort(txn);
    return store_err(rc);
}

static size_t count_lines_with_pid(const char *text, pid_t pid)
{
    char needle[PID_TEXT_BYTES];
    snprintf(needle, sizeof needle, " %ld ", (long)pid);
    size_t n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

struct reader_list {
    char text[READER_LIST_BYTES];
    size_t used;
};

static int collect_reader_line(const char *msg, void *ctx)
{
    struct reader_list *list = ctx;
    size_t len = strlen(msg);
    if (list->used + len + 1 < sizeof list->text) {
        memcpy(list->text + list->used, msg, len);
        list->used += len;
        list->text[list->used] = '\0';
    }
    return 0;
}

/* Reader slots of `pid` in the lock table, as mdb_reader_list prints them. */
static int reader_slots_of(MDB_env *env, pid_t pid)
{
    struct reader_list list;
    memset(&list, 0, sizeof list);
    EXPECT_TRUE("mdb_reader_list", mdb_reader_list(env, collect_reader_line, &list) >= 0);
    return (int)count_lines_with_pid(list.text, pid);
}

static int grow_counted(void *ctx)
{
    fixture_t *f = ctx;
    assert_true(f->grows < ATTEMPTS_MAX);
    if (f->stale_pid > 0)
        f->stale_slots_at_grow[f->grows] = reader_slots_of(f->env, f->stale_pid);
    int rc = store_env_grow(f->env);
    if (f->stale_pid > 0)
        f->stale_slots_after_grow[f->grows] = reader_slots_of(f->env, f->stale_pid);
    f->grows++;
    return rc;
}

static int run_retry(fixture_t *f, size_t records, int attempts_max)
{
    f->records = records;
    f->attempts = 0;
    f->grows = 0;
    const store_retry_t retry = {write_records, grow_counted, f, attempts_max};
    return store_retry_map_full(&retry);
}

/* How many records are stored, each checked byte for byte. */
static size_t stored_records(fixture_t *f)
{
    MDB_txn *txn = NULL;
    EXPECT_EQ("read txn", MDB_SUCCESS, mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn));
    static uint8_t expected[BIG_VALUE_BYTES];
    size_t n = 0;
    for (;; n++) {
        uint8_t key[8];
        store_put_u64(key, n);
        MDB_val k = {sizeof key, key}, v;
        if (mdb_get(txn, f->dbi, &k, &v) != MDB_SUCCESS)
            break;
        fill_value(expected, sizeof expected, n);
        EXPECT_EQ("stored value length", BIG_VALUE_BYTES, v.mv_size);
        EXPECT_EQ("stored value bytes", 0, memcmp(v.mv_data, expected, sizeof expected));
    }
    mdb_txn_abort(txn);
    return n;
}

/* ---- store_retry_map_full --------------------------------------------------------------- */

static void retry_without_growth_when_the_data_fits(void **state)
{
    fixture_t *f = *state;
    open_env(f, MAP_MAX);
    EXPECT_EQ("store_retry_map_full", CL_OK, run_retry(f, SMALL_RECORDS, ATTEMPTS_MAX));
    EXPECT_EQ("attempts", 1, f->attempts);
    EXPECT_EQ("grows", 0, f->grows);
    EXPECT_EQ("map size", MAP_INITIAL, map_size(f));
    EXPECT_EQ("records stored", SMALL_RECORDS, stored_records(f));
}

static void retry_grows_the_map_until_the_data_fits(void **state)
{
    fixture_t *f = *state;
    open_env(f, MAP_MAX);
    /* 256 KiB and 512 KiB are full; 1 MiB holds the ~206 pages. */
    EXPECT_EQ("store_retry_map_full", CL_OK, run_retry(f, BIG_RECORDS, ATTEMPTS_MAX));
    EXPECT_EQ("attempts", 3, f->attempts);
    EXPECT_EQ("grows", 2, f->grows);
    EXPECT_EQ("map size", 4 * MAP_INITIAL, map_size(f));
    EXPECT_EQ("records stored", BIG_RECORDS, stored_records(f));
}

static void retry_returns_map_full_at_the_maximum(void **state)
{
    fixture_t *f = *state;
    open_env(f, 2 * MAP_INITIAL);
    /* 256 KiB full, grown to the 512 KiB maximum, full again: growth cannot help. */
    EXPECT_EQ("store_retry_map_full", CL_ERR_MAP_FULL, run_retry(f, BIG_RECORDS, ATTEMPTS_MAX));
    EXPECT_EQ("attempts", 2, f->attempts);
    EXPECT_EQ("grows (the second one refused at the maximum)", 2, f->grows);
    EXPECT_EQ("map size", 2 * MAP_INITIAL, map_size(f));
    EXPECT_EQ("records stored", 0, stored_records(f));
}

/* The bug this helper replaces: after the last attempt found the map full and the map was
 * grown, the old loops ended with the growth's CL_OK and reported success. */
static void retry_returns_map_full_when_attempts_run_out(void **state)
{
    fixture_t *f = *state;
    open_env(f, MAP_MAX);
    EXPECT_EQ("store_retry_map_full", CL_ERR_MAP_FULL, run_retry(f, BIG_RECORDS, 2));
    EXPECT_EQ("attempts", 2, f->attempts);
    EXPECT_EQ("grows (none after the last attempt)", 1, f->grows);
    EXPECT_EQ("map size", 2 * MAP_INITIAL, map_size(f));
    EXPECT_EQ("records stored", 0, stored_records(f));
    /* With attempts left, the same data goes in. */
    EXPECT_EQ("store_retry_map_full again", CL_OK, run_retry(f, BIG_RECORDS, 2));
    EXPECT_EQ("attempts", 2, f->attempts);
    EXPECT_EQ("records stored", BIG_RECORDS, stored_records(f));
}

static void retry_returns_other_errors_at_once(void **state)
{
    fixture_t *f = *state;
    open_env(f, MAP_MAX);
    f->forced_error = CL_ERR_IO;
    EXPECT_EQ("store_retry_map_full", CL_ERR_IO, run_retry(f, BIG_RECORDS, ATTEMPTS_MAX));
    EXPECT_EQ("attempts", 1, f->attempts);
    EXPECT_EQ("grows", 0, f->grows);
    EXPECT_EQ("map size", MAP_INITIAL, map_size(f));
}

/* A child opens the environment, begins a read transaction and dies without ending it:
 * its reader slot stays in the lock table. Growing clears it. */
static pid_t leave_stale_reader(const char *dir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        MDB_env *env = NULL;
        MDB_txn *txn = NULL;
        int ok = store_env_open(&env, dir, STORE_READ_ONLY) == CL_OK &&
                 mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == MDB_SUCCESS;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    EXPECT_EQ("waitpid", pid, waitpid(pid, &status, 0));
    EXPECT_TRUE("the child exited", WIFEXITED(status));
    EXPECT_EQ("the child's exit status", 0, WEXITSTATUS(status));
    return pid;
}

static void growth_clears_stale_readers_first(void **state)
{
    fixture_t *f = *state;
    open_env(f, MAP_MAX);
    f->stale_pid = leave_stale_reader(f->dir);
    EXPECT_EQ("stale slots of the dead child before the retry", 1,
              reader_slots_of(f->env, f->stale_pid));
    EXPECT_EQ("store_retry_map_full", CL_OK, run_retry(f, BIG_RECORDS, ATTEMPTS_MAX));
    EXPECT_EQ("grows", 2, f->grows);
    EXPECT_EQ("stale slots when the first growth began", 1, f->stale_slots_at_grow[0]);
    EXPECT_EQ("stale slots after the first growth", 0, f->stale_slots_after_grow[0]);
    int cleared = -1;
    EXPECT_EQ("store_clear_stale_readers", CL_OK, store_clear_stale_readers(f->env, &cleared));
    EXPECT_EQ("stale slots left to clear", 0, cleared);
    EXPECT_EQ("records stored", BIG_RECORDS, stored_records(f));
}

/* ---- options ---------------------------------------------------------------------------- */

static void open_refuses_bad_map_options(void **state)
{
    fixture_t *f = *state;
    MDB_env *env = NULL;
    const store_options_t not_pages = {MAP_INITIAL + 1, MAP_MAX};
    const store_options_t above_max = {2 * MAP_INITIAL, MAP_INITIAL};
    const store_options_t below_min = {STORE_MAP_BYTES_MIN / 2, MAP_MAX};
    EXPECT_EQ("initial map not a multiple of the page size", CL_ERR_INVALID,
              store_env_open_with(&env, f->dir, STORE_READ_WRITE, &not_pages));
    EXPECT_EQ("initial map above the maximum", CL_ERR_INVALID,
              store_env_open_with(&env, f->dir, STORE_READ_WRITE, &above_max));
    EXPECT_EQ("initial map below the minimum", CL_ERR_INVALID,
              store_env_open_with(&env, f->dir, STORE_READ_WRITE, &below_min));
    EXPECT_TRUE("no environment handed out", env == NULL);
    char path[PATH_BYTES + 16];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    EXPECT_EQ("no data file created", -1, stat(path, &st));
}

/* ---- the writer lock --------------------------------------------------------------------- */

static long pid_in_lock_file(const char *dir)
{
    char path[PATH_BYTES + 16], text[PID_TEXT_BYTES] = "";
    snprintf(path, sizeof path, "%s/%s", dir, STORE_LOCK_FILE);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    return n > 0 ? strtol(text, NULL, 10) : 0;
}

static void lock_is_exclusive_and_names_its_holder(void **state)
{
    fixture_t *f = *state;
    store_lock_t *first = NULL, *second = NULL;
    long holder = -1;
    EXPECT_EQ("first store_lock_take", CL_OK, store_lock_take(&first, f->dir, &holder));
    EXPECT_EQ("pid written in the lock file", (long)getpid(), pid_in_lock_file(f->dir));
    EXPECT_EQ("second store_lock_take", CL_ERR_LOCKED, store_lock_take(&second, f->dir, &holder));
    EXPECT_EQ("holder pid reported", (long)getpid(), holder);
    EXPECT_TRUE("no second lock handed out", second == NULL);
    store_lock_release(&first);
    EXPECT_TRUE("release clears the pointer", first == NULL);
    EXPECT_EQ("lock file removed on release", -1, pid_in_lock_file(f->dir));
    EXPECT_EQ("store_lock_take after release", CL_OK, store_lock_take(&second, f->dir, &holder));
    store_lock_release(&second);
}

static void lock_file_of_a_dead_holder_is_taken_over(void **state)
{
    fixture_t *f = *state;
    char path[PATH_BYTES + 16];
    snprintf(path, sizeof path, "%s/%s", f->dir, STORE_LOCK_FILE);
    FILE *stale = fopen(path, "w");
    assert_non_null(stale);
    fprintf(stale, "999999999\n"); /* left by a killed writer: no flock on it */
    fclose(stale);
    store_lock_t *lock = NULL;
    long holder = -1;
    EXPECT_EQ("store_lock_take over a stale file", CL_OK, store_lock_take(&lock, f->dir, &holder));
    EXPECT_EQ("our pid replaces the stale one", (long)getpid(), pid_in_lock_file(f->dir));
    store_lock_release(&lock);
}

static void lock_in_a_missing_directory_is_not_found(void **state)
{
    fixture_t *f = *state;
    char missing[PATH_BYTES + 16];
    snprintf(missing, sizeof missing, "%s/missing", f->dir);
    store_lock_t *lock = NULL;
    long holder = -1;
    EXPECT_EQ("store_lock_take", CL_ERR_NOT_FOUND, store_lock_take(&lock, missing, &holder));
    struct stat st;
    EXPECT_EQ("the directory is not created", -1, stat(missing, &st));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(retry_without_growth_when_the_data_fits, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_grows_the_map_until_the_data_fits, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_returns_map_full_at_the_maximum, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_returns_map_full_when_attempts_run_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(retry_returns_other_errors_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(growth_clears_stale_readers_first, setup, teardown),
        cmocka_unit_test_setup_teardown(open_refuses_bad_map_options, setup, teardown),
        cmocka_unit_test_setup_teardown(lock_is_exclusive_and_names_its_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(lock_file_of_a_dead_holder_is_taken_over, setup, teardown),
        cmocka_unit_test_setup_teardown(lock_in_a_missing_directory_is_not_found, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
