/* Unit tests for the ledger's operational side: the writer lock taken by ledger_open
 * (a second writer gets CL_ERR_LOCKED and nothing is touched; nothing is created where
 * there is no ledger), the bounded report slices (journal and accounts resume exactly
 * where the previous slice ended) and ledger_snapshot (a compacted copy that opens
 * read-only and verifies). Real LMDB ledgers in fresh temp directories. */
#include "errors.h"
#include "ledger.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEMP_DIR_TEMPLATE "/tmp/test_ledger_ops.XXXXXX"
#define PATH_BYTES 256
#define NOW_MS INT64_C(1700000000000)
/* Members enrolled by setup_members: two full slices and a part of one. */
#define MEMBERS (2 * LEDGER_SLICE_RECORDS_MAX + 88)
#define WHY_BYTES 512

typedef struct fixture {
    char dir[PATH_BYTES];
    char snapshot_dir[PATH_BYTES];
    ledger_t *l;
} fixture_t;

static void remove_in(const char *dir, const char *name)
{
    char path[PATH_BYTES + 16];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static bool exists_in(const char *dir, const char *name)
{
    char path[PATH_BYTES + 16];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
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
    ledger_destroy(&f->l);
    if (f->snapshot_dir[0] != '\0' && exists_in(f->snapshot_dir, "data.mdb"))
        store_env_remove(f->snapshot_dir);
    remove_in(f->dir, "data.mdb");
    remove_in(f->dir, "lock.mdb");
    remove_in(f->dir, STORE_LOCK_FILE);
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

static void member_id(char *buf, size_t size, int i) { snprintf(buf, size, "m%04d", i); }

/* Enrol MEMBERS members through the operator, in one batch, as the writer would. */
static void setup_members(fixture_t *f)
{
    EXPECT_EQ("ledger_init", CL_OK, ledger_init(f->dir));
    EXPECT_EQ("ledger_open", CL_OK, ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    EXPECT_EQ("ledger_batch_begin", CL_OK, ledger_batch_begin(f->l));
    for (int i = 0; i < MEMBERS; i++) {
        char txn[TXN_ID_LEN_MAX + 1], member[MEMBER_ID_LEN_MAX + 1], why[WHY_BYTES];
        envelope_t env;
        Coalition__EnrollRequest body = COALITION__ENROLL_REQUEST__INIT;
        coalition__envelope__init(&env);
        snprintf(txn, sizeof txn, "op-%d", i);
        member_id(member, sizeof member, i);
        env.version = WIRE_VERSION;
        env.partner_id = OPERATOR_PARTNER_ID;
        env.terminal_id = "test";
        env.site_id = OPERATOR_SITE_ID;
        env.txn_id = txn;
        env.client_time_ms = NOW_MS;
        body.member_id = member;
        env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
        env.enroll = &body;
        EXPECT_EQ("wire_validate", RC_APPROVED, wire_validate(&env, true, why, sizeof why));
        uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
        size_t len = 0;
        EXPECT_EQ("wire_request_hash", CL_OK, wire_request_hash(&env, hash));
        EXPECT_EQ("ledger_apply", CL_OK, ledger_apply(f->l, &env, hash, NOW_MS, &reply, &len));
        free(reply);
    }
    EXPECT_EQ("ledger_batch_commit", CL_OK, ledger_batch_commit(f->l));
    EXPECT_EQ("last seq", MEMBERS, ledger_last_seq(f->l));
}

/* ---- the writer lock --------------------------------------------------------------------- */

static void second_writer_is_locked_out(void **state)
{
    fixture_t *f = *state;
    EXPECT_EQ("ledger_init", CL_OK, ledger_init(f->dir));
    EXPECT_EQ("first ledger_open", CL_OK, ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    EXPECT_TRUE("lock file while open", exists_in(f->dir, STORE_LOCK_FILE));
    ledger_t *second = NULL;
    EXPECT_EQ("second ledger_open for writing", CL_ERR_LOCKED,
              ledger_open(&second, f->dir, STORE_READ_WRITE));
    EXPECT_TRUE("no second ledger handed out", second == NULL);
    EXPECT_STR("cl_strerror(CL_ERR_LOCKED)", "locked by another writer",
               cl_strerror(CL_ERR_LOCKED));
    /* The first one still writes. */
    EXPECT_EQ("ledger_batch_begin", CL_OK, ledger_batch_begin(f->l));
    EXPECT_EQ("ledger_batch_commit", CL_OK, ledger_batch_commit(f->l));
    ledger_destroy(&f->l);
    EXPECT_FALSE("lock file removed at destroy", exists_in(f->dir, STORE_LOCK_FILE));
    EXPECT_EQ("ledger_open after the first closed", CL_OK,
              ledger_open(&f->l, f->dir, STORE_READ_WRITE));
}

static void open_without_a_ledger_creates_nothing(void **state)
{
    fixture_t *f = *state;
    EXPECT_EQ("ledger_open for writing in an empty dir", CL_ERR_NOT_FOUND,
              ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    EXPECT_EQ("ledger_open read-only in an empty dir", CL_ERR_NOT_FOUND,
              ledger_open(&f->l, f->dir, STORE_READ_ONLY));
    EXPECT_FALSE("no data.mdb", exists_in(f->dir, "data.mdb"));
    EXPECT_FALSE("no lock.mdb", exists_in(f->dir, "lock.mdb"));
    EXPECT_FALSE("no writer lock left", exists_in(f->dir, STORE_LOCK_FILE));
    /* So `coalitionctl init` still works there. */
    EXPECT_EQ("ledger_init afterwards", CL_OK, ledger_init(f->dir));
}

/* ---- slices ------------------------------------------------------------------------------ */

static void journal_slices_resume_at_the_next_seq(void **state)
{
    fixture_t *f = *state;
    setup_members(f);
    journal_entry_t *entries[LEDGER_SLICE_RECORDS_MAX];
    const size_t expected[] = {LEDGER_SLICE_RECORDS_MAX, LEDGER_SLICE_RECORDS_MAX, 88, 0};
    uint64_t from = 1;
    for (size_t s = 0; s < sizeof expected / sizeof expected[0]; s++) {
        size_t count = 999;
        EXPECT_EQ("ledger_journal_slice", CL_OK,
                  ledger_journal_slice(f->l, from, entries, LEDGER_SLICE_RECORDS_MAX, &count));
        EXPECT_EQ("entries in the slice", expected[s], count);
        for (size_t i = 0; i < count; i++) {
            char member[MEMBER_ID_LEN_MAX + 1];
            member_id(member, sizeof member, (int)(from + i - 1));
            EXPECT_EQ("seq", from + i, entries[i]->seq);
            EXPECT_STR("member", member, entries[i]->member_id);
        }
        ledger_journal_slice_free(entries, count);
        from += count;
    }
    EXPECT_EQ("next seq after the walk", MEMBERS + 1, from);
    size_t count = 999;
    EXPECT_EQ("a smaller slice", CL_OK, ledger_journal_slice(f->l, 10, entries, 3, &count));
    EXPECT_EQ("entries", 3, count);
    EXPECT_EQ("first seq", 10, entries[0]->seq);
    EXPECT_EQ("last seq", 12, entries[2]->seq);
    ledger_journal_slice_free(entries, count);
}

static void account_slices_resume_after_the_last_name(void **state)
{
    fixture_t *f = *state;
    setup_members(f);
    ledger_account_row_t rows[LEDGER_SLICE_RECORDS_MAX];
    const size_t expected[] = {LEDGER_SLICE_RECORDS_MAX, LEDGER_SLICE_RECORDS_MAX, 88, 0};
    char after[ACCOUNT_NAME_BYTES_MAX] = ACCOUNT_BREAKAGE; /* every ledger has it, first */
    int seen = 0;
    for (size_t s = 0; s < sizeof expected / sizeof expected[0]; s++) {
        size_t count = 999;
        EXPECT_EQ("ledger_accounts_slice", CL_OK,
                  ledger_accounts_slice(f->l, after, rows, LEDGER_SLICE_RECORDS_MAX, &count));
        EXPECT_EQ("accounts in the slice", expected[s], count);
        for (size_t i = 0; i < count; i++, seen++) {
            char member[MEMBER_ID_LEN_MAX + 1], account[ACCOUNT_NAME_BYTES_MAX];
            member_id(member, sizeof member, seen);
            ledger_account_member(account, sizeof account, member);
            EXPECT_STR("account, in name order", account, rows[i].account);
            EXPECT_EQ("balance", 0, rows[i].balance);
        }
        if (count > 0)
            memcpy(after, rows[count - 1].account, sizeof after);
    }
    EXPECT_EQ("accounts seen once each", MEMBERS, seen);
}

/* ---- snapshots --------------------------------------------------------------------------- */

static void snapshot_is_a_compacted_copy_that_verifies(void **state)
{
    fixture_t *f = *state;
    setup_members(f);
    snprintf(f->snapshot_dir, sizeof f->snapshot_dir, "%s", TEMP_DIR_TEMPLATE);
    assert_non_null(mkdtemp(f->snapshot_dir));
    EXPECT_EQ("ledger_snapshot beside the open writer", CL_OK,
              ledger_snapshot(f->l, f->snapshot_dir));
    EXPECT_FALSE("the copy gets no lock file", exists_in(f->snapshot_dir, "lock.mdb"));
    EXPECT_EQ("a second snapshot into a non-empty dir fails", CL_ERR_IO,
              ledger_snapshot(f->l, f->snapshot_dir));

    ledger_t *copy = NULL;
    char why[WHY_BYTES];
    EXPECT_EQ("ledger_open of the snapshot", CL_OK,
              ledger_open(&copy, f->snapshot_dir, STORE_READ_ONLY));
    EXPECT_EQ("snapshot last seq", MEMBERS, ledger_last_seq(copy));
    int rc = ledger_verify(copy, why, sizeof why);
    if (rc != CL_OK)
        fail_msg("ledger_verify of the snapshot: expected CL_OK, got %d: %s", rc, why);
    int64_t balance = -1;
    EXPECT_EQ("a member in the snapshot", CL_OK, ledger_member_balance(copy, "m0599", &balance));
    EXPECT_EQ("its balance", 0, balance);
    ledger_destroy(&copy);

    EXPECT_EQ("store_env_remove", CL_OK, store_env_remove(f->snapshot_dir));
    struct stat st;
    EXPECT_EQ("snapshot dir removed", -1, stat(f->snapshot_dir, &st));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(second_writer_is_locked_out, setup, teardown),
        cmocka_unit_test_setup_teardown(open_without_a_ledger_creates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(journal_slices_resume_at_the_next_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(account_slices_resume_after_the_last_name, setup, teardown),
        cmocka_unit_test_setup_teardown(snapshot_is_a_compacted_copy_that_verifies, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
