/* outbox_journal_newest_first: the agent's journal walked from its latest answer back,
 * stopping where the caller says (the agent reads its partner's language this way at
 * start), skipping nothing that unpacks, and calling nothing for an empty journal. */
#include "errors.h"
#include "outbox.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECORDS 3
#define SEEN_MAX 8

typedef struct walk {
    uint64_t seen[SEEN_MAX];
    size_t count;
    uint64_t stop_at; /* 0: never */
} walk_t;

static int note(uint64_t seq, int64_t time_ms, const uint8_t *envelope, size_t envelope_len,
                const uint8_t *auth, size_t auth_len, void *ctx)
{
    (void)time_ms, (void)envelope, (void)envelope_len;
    walk_t *w = ctx;
    char want = (char)('a' + seq - 1);
    if (auth_len != 1 || (char)auth[0] != want)
        fail_msg("record %llu: expected its answer '%c', got %zu byte(s)", (unsigned long long)seq,
                 want, auth_len);
    if (w->count < SEEN_MAX)
        w->seen[w->count++] = seq;
    return seq == w->stop_at ? CL_ERR_EXISTS : CL_OK;
}

static outbox_t *open_scratch(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/test_outbox_journal.XXXXXX");
    if (mkdtemp(dir) == NULL)
        fail_msg("mkdtemp: expected a directory, got none");
    outbox_t *o = NULL;
    EXPECT_EQ("outbox_open", CL_OK, outbox_open(&o, dir, 0));
    return o;
}

static void remove_scratch(char *dir, outbox_t **o)
{
    outbox_destroy(o);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    EXPECT_EQ("rm -rf", 0, system(cmd));
}

static void test_newest_first(void **state)
{
    (void)state;
    char dir[64];
    outbox_t *o = open_scratch(dir, sizeof dir);
    walk_t w = {{0}, 0, 0};
    EXPECT_EQ("empty journal", CL_OK, outbox_journal_newest_first(o, note, &w));
    EXPECT_EQ("nothing called for an empty journal", 0, w.count);
    static const uint8_t env[] = {0x0a, 0x00}, answers[RECORDS] = {'a', 'b', 'c'};
    outbox_op_t ops[RECORDS];
    memset(ops, 0, sizeof ops);
    for (size_t i = 0; i < RECORDS; i++) {
        ops[i].kind = OUTBOX_OP_JOURNAL;
        ops[i].seq = i + 1;
        ops[i].envelope = env;
        ops[i].envelope_len = sizeof env;
        ops[i].auth = &answers[i];
        ops[i].auth_len = 1;
        ops[i].time_ms = 1000 + (int64_t)i;
    }
    EXPECT_EQ("outbox_apply", CL_OK, outbox_apply(o, ops, RECORDS));
    EXPECT_EQ("whole walk", CL_OK, outbox_journal_newest_first(o, note, &w));
    EXPECT_EQ("whole walk: every record", RECORDS, w.count);
    for (size_t i = 0; i < RECORDS; i++)
        EXPECT_EQ("whole walk: newest first", RECORDS - i, w.seen[i]);
    walk_t stop = {{0}, 0, 2};
    EXPECT_EQ("walk stopped by the caller: no error", CL_OK,
              outbox_journal_newest_first(o, note, &stop));
    EXPECT_EQ("stopped after two", 2, stop.count);
    EXPECT_EQ("the newest", 3, stop.seen[0]);
    EXPECT_EQ("then the one it stopped at", 2, stop.seen[1]);
    remove_scratch(dir, &o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_newest_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
