/* Integration tests of settlement with the real programs: a broker, agents, tills and
 * coalitionctl. An offline earn delivered after its window closed lands in the next one
 * and reconciliation says so on both sides; statements are signed and a changed byte is
 * refused; closing twice is idempotent; a live broker rolls its windows over and closes
 * them after their grace on its own; the liability report ties to the ledger. Every
 * test ends with `coalitionctl verify`. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OUT_BYTES 65536
#define POLL_STEP_MS 50
#define DELIVERY_TIMEOUT_MS 20000
#define AUTO_CLOSE_TIMEOUT_MS 15000

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    world_init(w);
    world_start_broker(w);
    char out[OUT_BYTES];
    const char *adds[][6] = {{"partner", "add", "fuel", "--earn-rate", "2", NULL},
                             {"partner", "add", "grocer", "--earn-rate", "1", NULL},
                             {"member", "add", "alice", NULL, NULL, NULL}};
    for (size_t i = 0; i < 3; i++)
        EXPECT_EQ(adds[i][0], 0,
                  world_ctl(w, out, sizeof out, adds[i][0], adds[i][1], adds[i][2], adds[i][3],
                            adds[i][4], NULL));
    sleep_ms(5); /* a contract "from now" starts after the partner-add's instant */
    EXPECT_EQ("contract fuel", 0,
              world_ctl(w, out, sizeof out, "contract", "set", "fuel", "--from", "now",
                        "--issue-price", "10.00", "--reimburse", "8.00", "--fee", "0.05", NULL));
    EXPECT_EQ("contract grocer", 0,
              world_ctl(w, out, sizeof out, "contract", "set", "grocer", "--from", "now",
                        "--issue-price", "10.00", "--reimburse", "8.00", NULL));
    world_start_agent(w, "fuel");
    world_start_agent(w, "grocer");
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    world_destroy(w);
    free(w);
    return 0;
}

static void expect_verify(world_t *w)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("verify failed: %s", out);
}

/* Export the agent's records of `window` into DIR/NAME; returns the path. */
static const char *export_window(world_t *w, const agent_proc_t *a, const char *window,
                                 const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", w->dir, name);
    char *const argv[] = {COALITION_AGENT_BIN, "--data", (char *)a->data_dir, "export",
                          "--window", (char *)window, NULL};
    EXPECT_EQ("agent export", 0, harness_run_to_file(argv, path));
    return path;
}

static void wait_outbox_empty(world_t *w, const agent_proc_t *a)
{
    char out[OUT_BYTES];
    char *const argv[] = {COALITION_AGENT_BIN, "--data", (char *)a->data_dir, "--outbox", NULL};
    for (int waited = 0; waited < DELIVERY_TIMEOUT_MS; waited += POLL_STEP_MS) {
        out[0] = '\0';
        if (harness_run(argv, out, sizeof out) == 0 && out[0] == '\0')
            return;
        sleep_ms(POLL_STEP_MS);
    }
    (void)w;
    fail_msg("the agent's outbox did not drain: %s", out);
}

/* An earn stored offline while the broker was down, its window closed early before the
 * agent came back: reconciliation of window 1 names it as still in the agent's outbox;
 * delivered, it lands in window 2, where the statement shows its till time and both
 * sides match. */
static void offline_earn_after_the_close(void **state)
{
    world_t *w = *state;
    agent_proc_t *fuel = &w->agents[0];
    char out[OUT_BYTES], path[HARNESS_PATH_BYTES + 64];
    EXPECT_EQ("earn e1", 0,
              world_pos(w, fuel, out, sizeof out, "earn", "--member", "alice", "--amount",
                        "10.00", "--currency", "EUR", "--txn", "e1", NULL));
    EXPECT_EQ("broker stops", 0, world_stop_broker(w, SIGTERM));
    EXPECT_EQ("earn e2 stored offline", 3,
              world_pos(w, fuel, out, sizeof out, "earn", "--member", "alice", "--amount",
                        "5.00", "--currency", "EUR", "--txn", "e2", NULL));
    EXPECT_EQ("agent stops", 0, world_stop_agent(w, fuel, SIGTERM));
    world_start_broker(w);
    EXPECT_EQ("close window 1 early", 0,
              world_ctl(w, out, sizeof out, "window", "close", "1", "--early", NULL));
    export_window(w, fuel, "1", "fuel-1.jsonl", path, sizeof path);
    EXPECT_EQ("reconcile window 1 with e2 undelivered", 1,
              world_ctl(w, out, sizeof out, "reconcile", "--partner", "fuel", "--window", "1",
                        "--agent-journal", path, NULL));
    EXPECT_CONTAINS("e2 is named", "main/e2: missing in the ledger: still in the agent's outbox",
                    out);
    EXPECT_CONTAINS("e1 matched", "1 matched, 1 difference(s)", out);
    FILE *empty = fopen(path, "w");
    assert_non_null(empty);
    fprintf(empty, "{\"export\":\"coalition-agent\",\"partner\":\"fuel\",\"site\":\"main\","
                   "\"window\":1}\n");
    fclose(empty);
    EXPECT_EQ("an empty export of a busy window differs", 1,
              world_ctl(w, out, sizeof out, "reconcile", "--partner", "fuel", "--window", "1",
                        "--agent-journal", path, NULL));
    EXPECT_CONTAINS("e1 named", "main/e1: missing in the agent's export", out);
    EXPECT_EQ("another partner's export is refused", 2,
              world_ctl(w, out, sizeof out, "reconcile", "--partner", "grocer", "--window", "1",
                        "--agent-journal", path, NULL));
    world_restart_agent(w, fuel);
    wait_outbox_empty(w, fuel);
    export_window(w, fuel, "2", "fuel-2.jsonl", path, sizeof path);
    EXPECT_EQ("reconcile window 2", 0,
              world_ctl(w, out, sizeof out, "reconcile", "--partner", "fuel", "--window", "2",
                        "--agent-journal", path, NULL));
    EXPECT_CONTAINS("e2 matched in window 2", "1 matched, 0 difference(s)", out);
    export_window(w, fuel, "1", "fuel-1b.jsonl", path, sizeof path);
    EXPECT_EQ("reconcile window 1 again", 0,
              world_ctl(w, out, sizeof out, "reconcile", "--partner", "fuel", "--window", "1",
                        "--agent-journal", path, NULL));
    EXPECT_EQ("close window 2 early", 0,
              world_ctl(w, out, sizeof out, "window", "close", "2", "--early", NULL));
    EXPECT_EQ("statement 2", 0,
              world_ctl(w, out, sizeof out, "statement", "2", "--partner", "fuel", "--format",
                        "csv", "--detail", NULL));
    EXPECT_CONTAINS("e2's line", ",earn,fuel,main,e2,,alice,10,10,5", out);
    EXPECT_CONTAINS("fuel's row: 10 points, 0.10 issue money, 0.05 fee",
                    "partner,fuel,EUR,10,0,0,0,0,10,0,0,5,0,0,15,0,15,", out);
    expect_verify(w);
}

/* Statements are signed; a changed byte, another key or a missing signature are refused;
 * closing twice is fine; an open window has no statement. */
static void statements_are_signed_and_closing_is_idempotent(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES], path[HARNESS_PATH_BYTES + 64], pub[HARNESS_PATH_BYTES + 64];
    EXPECT_EQ("earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--member", "alice",
                        "--amount", "12.34", "--currency", "EUR", "--txn", "e1", NULL));
    EXPECT_EQ("burn", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "burn", "--member", "alice",
                        "--points", "7", "--txn", "b1", NULL));
    EXPECT_EQ("no statement of an open window", 1,
              world_ctl(w, out, sizeof out, "statement", "1", NULL));
    EXPECT_EQ("an open window is not closed without --early", 1,
              world_ctl(w, out, sizeof out, "window", "close", "1", NULL));
    EXPECT_EQ("close", 0, world_ctl(w, out, sizeof out, "window", "close", "1", "--early", NULL));
    EXPECT_EQ("close again", 0, world_ctl(w, out, sizeof out, "window", "close", "1", NULL));
    EXPECT_CONTAINS("says so", "window 1 is already closed", out);
    snprintf(path, sizeof path, "%s/statement.json", w->dir);
    snprintf(pub, sizeof pub, "%s/operator.sign.pub", w->ledger);
    EXPECT_EQ("statement", 0,
              world_ctl(w, out, sizeof out, "statement", "1", "--detail", "--out", path, NULL));
    EXPECT_EQ("verifies", 0,
              world_ctl(w, out, sizeof out, "statement-verify", path, "--pubkey", pub, NULL));
    FILE *f = fopen(path, "r+");
    assert_non_null(f);
    assert_int_equal(fseek(f, 40, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, 40, SEEK_SET), 0);
    fputc(c == '1' ? '2' : '1', f);
    fclose(f);
    EXPECT_EQ("a changed byte is refused", 1,
              world_ctl(w, out, sizeof out, "statement-verify", path, "--pubkey", pub, NULL));
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"statement\":{\"window\":1},\"signature\":\"ed25519:");
    for (int i = 0; i < 300; i++)
        fputc('A', f);
    fprintf(f, "\"}\n");
    fclose(f);
    EXPECT_EQ("an over-long signature is refused", 1,
              world_ctl(w, out, sizeof out, "statement-verify", path, "--pubkey", pub, NULL));
    EXPECT_EQ("liability", 0, world_ctl(w, out, sizeof out, "liability", NULL));
    EXPECT_CONTAINS("ties to the ledger", "totals equal the ledger's points outstanding", out);
    expect_verify(w);
}

/* A live broker with two-second windows rolls them over and closes each a second after
 * it ends, with no operator. */
static void the_broker_closes_windows_on_its_own(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES];
    EXPECT_EQ("settlement", 0,
              world_ctl(w, out, sizeof out, "settlement", "set", "--period", "2", "--grace", "1",
                        NULL));
    EXPECT_EQ("end the month window", 0,
              world_ctl(w, out, sizeof out, "window", "close", "1", "--early", NULL));
    EXPECT_EQ("earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--member", "alice",
                        "--amount", "1.00", "--currency", "EUR", "--txn", "e1", NULL));
    int waited = 0;
    for (; waited < AUTO_CLOSE_TIMEOUT_MS; waited += POLL_STEP_MS) {
        world_ctl(w, out, sizeof out, "--json", "window", "list", NULL);
        if (strstr(out, "\"window\":2,") != NULL &&
            strstr(strstr(out, "\"window\":2,"), "\"state\":\"closed\"") != NULL &&
            strstr(out, "\"window\":3,") != NULL)
            break;
        sleep_ms(POLL_STEP_MS);
    }
    if (waited >= AUTO_CLOSE_TIMEOUT_MS)
        fail_msg("window 2 was not closed by the broker: %s", out);
    world_ctl(w, out, sizeof out, "journal", NULL);
    EXPECT_CONTAINS("closed by the broker's writer", "window-close-2", out);
    expect_verify(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(offline_earn_after_the_close, setup, teardown),
        cmocka_unit_test_setup_teardown(statements_are_signed_and_closing_is_idempotent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(the_broker_closes_windows_on_its_own, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
