/* The points lifecycle with the real programs: a broker, an agent per partner, tills
 * (coalition-pos) and coalitionctl. An expiry policy with a two-second term, an expiry
 * run through the broker's writer (twice: the second writes nothing), the broker's own
 * daily run at start-up, pending points over a return period shown apart on the wire,
 * in --json and in the receipt, the liability report's breakage by issuer, tiers and
 * rules at the tills (base and bonus apart, a rule ended), a threshold bonus given once
 * among eight tills at once, and every bad operator input refused with nothing stored.
 * Every test ends with verify. */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OUT_BYTES 65536
#define POLL_STEP_MS 100
#define DAILY_RUN_TIMEOUT_MS 15000

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The integer after "\"key\":" in a JSON text; fails the test when it is not there. */
static long long json_int(const char *json, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(json, pattern);
    if (at == NULL)
        fail_msg("no %s in %s", key, json);
    return strtoll(at + strlen(pattern), NULL, 10);
}

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    world_init(w);
    w->broker_expire_at = "off"; /* the tests run expiry themselves, but for the daily one */
    world_start_broker(w);
    char out[OUT_BYTES];
    const char *adds[][6] = {{"partner", "add", "fuel", "--earn-rate", "2", NULL},
                             {"partner", "add", "grocer", "--earn-rate", "1", NULL},
                             {"member", "add", "alice", NULL, NULL, NULL}};
    for (size_t i = 0; i < 3; i++)
        EXPECT_EQ(adds[i][0], 0,
                  world_ctl(w, out, sizeof out, adds[i][0], adds[i][1], adds[i][2], adds[i][3],
                            adds[i][4], NULL));
    world_start_agent(w, "fuel");
    world_start_agent(w, "grocer");
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fprintf(stderr, "verify failed: %s\n", out);
    world_destroy(w);
    free(w);
    return rc == 0 ? 0 : -1;
}

static void expect_verify(world_t *w)
{
    char out[OUT_BYTES];
    EXPECT_EQ("verify", 0, world_ctl(w, out, sizeof out, "verify", NULL));
}

/* A two-second term: the earn's points are gone after an expiry run, and a second run
 * as of a later moment writes nothing; the liability report names fuel's breakage. */
static void expiry_runs_through_the_broker(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES];
    EXPECT_EQ("policy", 0, world_ctl(w, out, sizeof out, "expiry-policy", "--term", "2s", NULL));
    EXPECT_EQ("policy shown", 0, world_ctl(w, out, sizeof out, "--json", "expiry-policy", NULL));
    EXPECT_EQ("term 2 s", 2, json_int(out, "term_seconds"));
    EXPECT_EQ("earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "--json", "earn", "--member", "alice",
                        "--amount", "10.00", "--currency", "EUR", "--txn", "e1", NULL));
    EXPECT_EQ("20 points", 20, json_int(out, "points"));
    EXPECT_EQ("grocer earn", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "earn", "--member", "alice", "--amount",
                        "7.00", "--currency", "EUR", "--txn", "g1", NULL));
    sleep_ms(2500);
    EXPECT_EQ("expire", 0,
              world_ctl(w, out, sizeof out, "--json", "expire", "--as-of", "now", NULL));
    EXPECT_EQ("27 points expired", 27, json_int(out, "points_expired"));
    EXPECT_EQ("one entry (one member)", 1, json_int(out, "entries"));
    EXPECT_EQ("expire again", 0,
              world_ctl(w, out, sizeof out, "--json", "expire", "--as-of", "now", NULL));
    EXPECT_EQ("nothing the second time", 0, json_int(out, "entries"));
    EXPECT_EQ("balance", 0, world_ctl(w, out, sizeof out, "--json", "balance", "alice", NULL));
    EXPECT_EQ("alice has none", 0, json_int(out, "balance"));
    EXPECT_EQ("liability", 0, world_ctl(w, out, sizeof out, "--json", "liability", NULL));
    const char *fuel = strstr(out, "\"issuer\":\"fuel\"");
    assert_non_null(fuel);
    EXPECT_EQ("fuel's breakage", 20, json_int(fuel, "breakage_points"));
    EXPECT_EQ("fuel's outstanding", 0, json_int(fuel, "points"));
    expect_verify(w);
}

/* The broker's own daily run, at start-up when its time has passed today. */
static void daily_run_at_start_up(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES];
    EXPECT_EQ("policy", 0, world_ctl(w, out, sizeof out, "expiry-policy", "--term", "1s", NULL));
    EXPECT_EQ("earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--member", "alice", "--amount",
                        "3.00", "--currency", "EUR", "--txn", "e1", NULL));
    sleep_ms(1500);
    EXPECT_EQ("broker stops", 0, world_stop_broker(w, SIGTERM));
    w->broker_expire_at = "00:00"; /* passed today: the run starts at once */
    world_start_broker(w);
    long long balance = -1;
    for (int waited = 0; waited < DAILY_RUN_TIMEOUT_MS && balance != 0; waited += POLL_STEP_MS) {
        EXPECT_EQ("balance", 0, world_ctl(w, out, sizeof out, "--json", "balance", "alice", NULL));
        balance = json_int(out, "balance");
        if (balance != 0)
            sleep_ms(POLL_STEP_MS);
    }
    EXPECT_EQ("the daily run expired alice's points", 0, balance);
    EXPECT_EQ("accounts", 0, world_ctl(w, out, sizeof out, "accounts", NULL));
    EXPECT_CONTAINS("breakage holds them", "breakage", out);
    expect_verify(w);
}

/* fuel's earns are pending for 30 days: the till sees available and pending apart, a
 * burn past the available points is declined 51 saying so, and coalitionctl shows the
 * lot's pending date. */
static void pending_points_on_the_wire(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES];
    sleep_ms(5); /* a contract "from now" starts after the partner-add's instant */
    EXPECT_EQ("contract", 0,
              world_ctl(w, out, sizeof out, "contract", "set", "fuel", "--from", "now",
                        "--return-period", "30d", NULL));
    EXPECT_EQ("grocer earn", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "earn", "--member", "alice", "--amount",
                        "5.00", "--currency", "EUR", "--txn", "g1", NULL));
    EXPECT_EQ("fuel earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "--json", "earn", "--member", "alice",
                        "--amount", "10.00", "--currency", "EUR", "--txn", "f1", NULL));
    EXPECT_EQ("pending in the reply", 20, json_int(out, "pending_points"));
    EXPECT_EQ("available in the reply", 5, json_int(out, "available"));
    EXPECT_CONTAINS("receipt says pending", "pending", out);
    EXPECT_EQ("balance", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "--json", "balance", "--member", "alice",
                        NULL));
    EXPECT_EQ("balance: total", 25, json_int(out, "balance"));
    EXPECT_EQ("balance: pending", 20, json_int(out, "pending_points"));
    EXPECT_CONTAINS("balance receipt", "5 available, 20 pending", out);
    EXPECT_EQ("burn past the available points", 1,
              world_pos(w, &w->agents[1], out, sizeof out, "burn", "--member", "alice", "--points",
                        "6", "--txn", "b1", NULL));
    EXPECT_CONTAINS("51 with both", "available 5, pending 20", out);
    EXPECT_EQ("refund inside the period", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "--json", "refund", "--original", "f1",
                        "--amount", "5.00", "--txn", "r1", NULL));
    EXPECT_EQ("pending cancelled first", 10, json_int(out, "pending_points"));
    EXPECT_EQ("lots", 0, world_ctl(w, out, sizeof out, "balance", "alice", "--lots", NULL));
    EXPECT_CONTAINS("the pending lot", "pending until", out);
    EXPECT_CONTAINS("split", "15 points (5 available, 10 pending)", out);
    EXPECT_EQ("liability", 0, world_ctl(w, out, sizeof out, "--json", "liability", NULL));
    const char *fuel = strstr(out, "\"issuer\":\"fuel\"");
    assert_non_null(fuel);
    EXPECT_EQ("fuel's pending points in the liability report", 10,
              json_int(fuel, "points_pending"));
    expect_verify(w);
}

/* Tiers and rules at the tills: the reply splits base and bonus points and names the
 * tier; a tier reached by one earn applies from the next; a rule ended stops. */
static void tiers_and_rules_at_the_till(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES];
    EXPECT_EQ("tiers", 0,
              world_ctl(w, out, sizeof out, "tiers", "--set", "Base:0:1,Silver:20:1.5", NULL));
    EXPECT_EQ("campaign", 0,
              world_ctl(w, out, sizeof out, "rule", "add", "grocer", "--multiplier", "2", NULL));
    EXPECT_EQ("first-earn bonus", 0,
              world_ctl(w, out, sizeof out, "rule", "add", "grocer", "--first-earn-bonus", "5",
                        NULL));
    EXPECT_EQ("rule list", 0, world_ctl(w, out, sizeof out, "--json", "rule", "list", NULL));
    const char *campaign = strstr(out, "\"kind\":\"multiplier\"");
    assert_non_null(campaign);
    char id[32];
    snprintf(id, sizeof id, "%lld", json_int(out, "id")); /* the first listed: the campaign */
    EXPECT_EQ("grocer earn", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "earn", "--member", "alice",
                        "--amount", "10.00", "--currency", "EUR", "--txn", "g1", NULL));
    EXPECT_EQ("base", 10, json_int(out, "base_points"));
    EXPECT_EQ("bonus: campaign 10 + first earn 5", 15, json_int(out, "bonus_points"));
    EXPECT_CONTAINS("tier named", "\"tier\":\"Base\"", out);
    EXPECT_EQ("fuel earn reaching Silver", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--member", "alice",
                        "--amount", "20.00", "--currency", "EUR", "--txn", "f1", NULL));
    EXPECT_EQ("made at Base: no bonus", 0, json_int(out, "bonus_points"));
    EXPECT_EQ("the next fuel earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--member", "alice",
                        "--amount", "5.00", "--currency", "EUR", "--txn", "f2", NULL));
    EXPECT_CONTAINS("at Silver", "\"tier\":\"Silver\"", out);
    EXPECT_EQ("Silver's half of 10", 5, json_int(out, "bonus_points"));
    EXPECT_EQ("end the campaign", 0,
              world_ctl(w, out, sizeof out, "rule", "end", "grocer", id, NULL));
    EXPECT_EQ("grocer earn after", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "earn", "--member", "alice",
                        "--amount", "10.00", "--currency", "EUR", "--txn", "g2", NULL));
    EXPECT_EQ("Silver only now", 5, json_int(out, "bonus_points"));
    expect_verify(w);
}

/* Eight tills at once, 10.00 each for alice at grocer, where spending 50.00 in a month
 * gives 100 points: exactly one of them gets the bonus. */
static void threshold_bonus_once_under_concurrent_tills(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES];
    EXPECT_EQ("threshold rule", 0,
              world_ctl(w, out, sizeof out, "rule", "add", "grocer", "--threshold", "50.00",
                        "--bonus", "100", NULL));
    pid_t kids[8];
    for (int i = 0; i < 8; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            char txn[16], buf[4096];
            snprintf(txn, sizeof txn, "c%d", i);
            _exit(world_pos(w, &w->agents[1], buf, sizeof buf, "earn", "--member", "alice",
                            "--amount", "10.00", "--currency", "EUR", "--txn", txn, NULL));
        }
    }
    for (int i = 0; i < 8; i++) {
        int status = 0;
        EXPECT_EQ("a till's earn", kids[i], waitpid(kids[i], &status, 0));
        EXPECT_TRUE("approved", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    EXPECT_EQ("balance", 0, world_ctl(w, out, sizeof out, "--json", "balance", "alice", NULL));
    EXPECT_EQ("8 x 10 and one bonus of 100", 180, json_int(out, "balance"));
    expect_verify(w);
}

/* Operator mistakes are refused with nothing stored. */
static void bad_operator_input_is_refused(void **state)
{
    world_t *w = *state;
    char out[OUT_BYTES], before[OUT_BYTES];
    EXPECT_EQ("journal before", 0, world_ctl(w, before, sizeof before, "journal", NULL));
    EXPECT_EQ("a policy in the past", 1,
              world_ctl(w, out, sizeof out, "expiry-policy", "--from", "2020-01-01", "--term",
                        "30d", NULL));
    EXPECT_CONTAINS("says why", "never in the past", out);
    EXPECT_EQ("a term that is no period", 2,
              world_ctl(w, out, sizeof out, "expiry-policy", "--term", "soon", NULL));
    EXPECT_EQ("a term past the limit", 2,
              world_ctl(w, out, sizeof out, "expiry-policy", "--term", "4000d", NULL));
    EXPECT_EQ("a run in the future", 1,
              world_ctl(w, out, sizeof out, "expire", "--as-of", "2999-01-01", NULL));
    EXPECT_EQ("a return period past the limit", 2,
              world_ctl(w, out, sizeof out, "contract", "set", "fuel", "--from", "now",
                        "--return-period", "400d", NULL));
    EXPECT_EQ("journal after", 0, world_ctl(w, out, sizeof out, "journal", NULL));
    EXPECT_STR("nothing stored", before, out);
    expect_verify(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(expiry_runs_through_the_broker, setup, teardown),
        cmocka_unit_test_setup_teardown(daily_run_at_start_up, setup, teardown),
        cmocka_unit_test_setup_teardown(pending_points_on_the_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(tiers_and_rules_at_the_till, setup, teardown),
        cmocka_unit_test_setup_teardown(threshold_bonus_once_under_concurrent_tills, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(bad_operator_input_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
