#define _GNU_SOURCE /* memmem */
/* Unit tests for the ledger's side of the journal feed (broker/ledger_feed.c): the commit
 * hook (once per commit with the last seq, never for an aborted batch), raw reads of
 * stored entries (consecutive, bounded in count and bytes, empty past the end), and the
 * subscriber's checks (ledger_entry_decode): every stored entry passes with its chain,
 * and a flipped byte, a wrong predecessor, a wrong seq, a cut entry and garbage do not.
 * Real LMDB ledgers in fresh temp directories. */
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
#include <unistd.h>

#define TEMP_DIR_TEMPLATE "/tmp/test_ledger_feed.XXXXXX"
#define PATH_BYTES 256
#define NOW_MS INT64_C(1700000000000)
#define FIRST_BATCH 300
#define SECOND_BATCH 40
#define MEMBERS (FIRST_BATCH + SECOND_BATCH)
#define WHY_BYTES 512
#define COPY_BYTES 4096

typedef struct fixture {
    char dir[PATH_BYTES];
    ledger_t *l;
    uint64_t hook_calls, hook_last;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s", TEMP_DIR_TEMPLATE);
    assert_non_null(mkdtemp(f->dir));
    EXPECT_EQ("ledger_init", CL_OK, ledger_init(f->dir));
    EXPECT_EQ("ledger_open", CL_OK, ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ledger_destroy(&f->l);
    const char *names[] = {"data.mdb", "lock.mdb", STORE_LOCK_FILE};
    for (size_t i = 0; i < 3; i++) {
        char path[PATH_BYTES + 16];
        snprintf(path, sizeof path, "%s/%s", f->dir, names[i]);
        unlink(path);
    }
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

static void on_commit(uint64_t last_seq, void *ctx)
{
    fixture_t *f = ctx;
    f->hook_calls++;
    f->hook_last = last_seq;
}

/* Members from..to-1 enrolled in one batch; committed or aborted. */
static void enrol(fixture_t *f, int from, int to, bool commit)
{
    EXPECT_EQ("ledger_batch_begin", CL_OK, ledger_batch_begin(f->l));
    for (int i = from; i < to; i++) {
        char txn[TXN_ID_LEN_MAX + 1], member[MEMBER_ID_LEN_MAX + 1], why[WHY_BYTES];
        envelope_t env;
        Coalition__EnrollRequest body = COALITION__ENROLL_REQUEST__INIT;
        coalition__envelope__init(&env);
        snprintf(txn, sizeof txn, "op-%d", i);
        snprintf(member, sizeof member, "m%04d", i);
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
    if (commit)
        EXPECT_EQ("ledger_batch_commit", CL_OK, ledger_batch_commit(f->l));
    else
        ledger_batch_abort(f->l);
}

static void commit_hook_once_per_commit(void **state)
{
    fixture_t *f = *state;
    ledger_set_commit_hook(f->l, on_commit, f);
    enrol(f, 0, FIRST_BATCH, true);
    EXPECT_EQ("one call for the first commit", 1, f->hook_calls);
    EXPECT_EQ("with its last seq", FIRST_BATCH, f->hook_last);
    enrol(f, FIRST_BATCH, MEMBERS, false);
    EXPECT_EQ("none for an aborted batch", 1, f->hook_calls);
    enrol(f, FIRST_BATCH, MEMBERS, true);
    EXPECT_EQ("one more for the second commit", 2, f->hook_calls);
    EXPECT_EQ("with its last seq", MEMBERS, f->hook_last);
    ledger_set_commit_hook(f->l, NULL, NULL);
    EXPECT_EQ("an empty batch", CL_OK, ledger_batch_begin(f->l));
    EXPECT_EQ("commits", CL_OK, ledger_batch_commit(f->l));
    EXPECT_EQ("no call once the hook is cleared", 2, f->hook_calls);
}

/* What one raw read saw: copies of the entries, for checks after the transaction. */
typedef struct seen {
    size_t n;
    uint64_t seqs[LEDGER_RAW_ENTRIES_MAX];
    size_t bytes;
    uint8_t first[COPY_BYTES];
    size_t first_len;
} seen_t;

static int take(const ledger_raw_entry_t *entries, size_t n, void *ctx)
{
    seen_t *s = ctx;
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        s->seqs[i] = entries[i].seq;
        s->bytes += entries[i].len;
    }
    if (n > 0 && entries[0].len <= sizeof s->first) {
        memcpy(s->first, entries[0].data, entries[0].len);
        s->first_len = entries[0].len;
    }
    return CL_OK;
}

static void raw_reads_are_bounded_and_consecutive(void **state)
{
    fixture_t *f = *state;
    enrol(f, 0, MEMBERS, true);
    seen_t s = {0};
    EXPECT_EQ("read 256 from 1", CL_OK, ledger_journal_raw(f->l, 1, 256, SIZE_MAX, take, &s));
    EXPECT_EQ("256 entries", 256, s.n);
    for (size_t i = 0; i < s.n; i++)
        EXPECT_EQ("consecutive from 1", i + 1, s.seqs[i]);
    size_t one_entry = s.first_len;
    memset(&s, 0, sizeof s);
    EXPECT_EQ("read from 300", CL_OK, ledger_journal_raw(f->l, 300, 256, SIZE_MAX, take, &s));
    EXPECT_EQ("only what is there", MEMBERS - 299, s.n);
    EXPECT_EQ("from 300", 300, s.seqs[0]);
    memset(&s, 0, sizeof s);
    EXPECT_EQ("a byte budget of 2.5 entries", CL_OK,
              ledger_journal_raw(f->l, 1, 256, one_entry * 5 / 2, take, &s));
    EXPECT_TRUE("two or three entries (sizes differ a little)", s.n >= 2 && s.n <= 3);
    memset(&s, 0, sizeof s);
    EXPECT_EQ("a budget below one entry", CL_OK, ledger_journal_raw(f->l, 1, 256, 1, take, &s));
    EXPECT_EQ("still the first entry", 1, s.n);
    memset(&s, 0, sizeof s);
    EXPECT_EQ("past the end", CL_OK,
              ledger_journal_raw(f->l, MEMBERS + 1, 256, SIZE_MAX, take, &s));
    EXPECT_EQ("nothing", 0, s.n);
}

static void decode_checks_every_entry_and_its_chain(void **state)
{
    fixture_t *f = *state;
    enrol(f, 0, MEMBERS, true);
    uint8_t prev[WIRE_HASH_BYTES];
    for (uint64_t seq = 1; seq <= MEMBERS; seq++) {
        seen_t s = {0};
        EXPECT_EQ("read one", CL_OK, ledger_journal_raw(f->l, seq, 1, SIZE_MAX, take, &s));
        EXPECT_EQ("one", 1, s.n);
        journal_entry_t *e = NULL;
        EXPECT_EQ("decodes with its chain", CL_OK,
                  ledger_entry_decode(s.first, s.first_len, seq, seq > 1 ? prev : NULL, &e));
        EXPECT_EQ("its seq", seq, e->seq);
        memcpy(prev, e->hash.data, WIRE_HASH_BYTES);
        ledger_entry_free(&e);
        EXPECT_TRUE("freed", e == NULL);
    }
    /* Entry 2 against each way it can be wrong. */
    seen_t one = {0}, two = {0};
    EXPECT_EQ("read 1", CL_OK, ledger_journal_raw(f->l, 1, 1, SIZE_MAX, take, &one));
    EXPECT_EQ("read 2", CL_OK, ledger_journal_raw(f->l, 2, 1, SIZE_MAX, take, &two));
    journal_entry_t *e1 = NULL, *e = NULL;
    EXPECT_EQ("entry 1", CL_OK, ledger_entry_decode(one.first, one.first_len, 1, NULL, &e1));
    EXPECT_EQ("entry 2 after 1", CL_OK,
              ledger_entry_decode(two.first, two.first_len, 2, e1->hash.data, &e));
    ledger_entry_free(&e);
    EXPECT_EQ("entry 2 after 2 itself", CL_ERR_CORRUPT,
              ledger_entry_decode(two.first, two.first_len, 2, two.first, &e));
    EXPECT_EQ("entry 2 named seq 3", CL_ERR_CORRUPT,
              ledger_entry_decode(two.first, two.first_len, 3, NULL, &e));
    EXPECT_EQ("entry 2 cut short", CL_ERR_CORRUPT,
              ledger_entry_decode(two.first, two.first_len - 1, 2, NULL, &e));
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff};
    EXPECT_EQ("garbage", CL_ERR_CORRUPT, ledger_entry_decode(garbage, sizeof garbage, 2, NULL, &e));
    /* The member id "m0001" changed to "m0009" in the stored bytes: the hash says no. */
    uint8_t *at = memmem(two.first, two.first_len, "m0001", 5);
    assert_non_null(at);
    at[4] = '9';
    EXPECT_EQ("a changed byte", CL_ERR_CORRUPT,
              ledger_entry_decode(two.first, two.first_len, 2, NULL, &e));
    EXPECT_TRUE("nothing handed out", e == NULL);
    ledger_entry_free(&e1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(commit_hook_once_per_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(raw_reads_are_bounded_and_consecutive, setup, teardown),
        cmocka_unit_test_setup_teardown(decode_checks_every_entry_and_its_chain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
