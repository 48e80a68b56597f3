/* Crash test: two agents stream earns from many tills while the broker is killed with
 * SIGKILL several times and restarted. Afterwards: every earn a till was told is
 * approved is in the ledger exactly once with the same sequence number and points;
 * every earn stored offline was delivered exactly once; each member's balance is the sum
 * of its earns; the agents' outboxes are empty; and `coalitionctl verify` passes. */
#include "coalition_pos.h"
#include "harness.h"
#include "ledger.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AGENTS 2
#define TILLS_PER_AGENT 8
#define EARNS_PER_TILL 640 /* 2 x 8 x 640 = 10,240 earns */
#define EARNS_TOTAL (AGENTS * TILLS_PER_AGENT * EARNS_PER_TILL)
#define MEMBERS 50
#define KILLS 4
#define OFFLINE_WAIT_MS 3000
#define DRAIN_TIMEOUT_MS 120000
#define POLL_MS 50

typedef enum { OUT_NONE = 0, OUT_APPROVED, OUT_OFFLINE, OUT_OTHER } outcome_t;

typedef struct earn_result {
    outcome_t outcome;
    int code;
    int64_t points;
    uint64_t seq;
} earn_result_t;

typedef struct crash {
    world_t w;
    const char *partners[AGENTS];
    earn_result_t results[AGENTS][TILLS_PER_AGENT][EARNS_PER_TILL];
    atomic_long done, offline;
    int kills;
} crash_t;

typedef struct till_arg {
    crash_t *c;
    int agent, till;
} till_arg_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t amount_of(int till, int i) { return (int64_t)((till * 31 + i) % 9 + 1) * 100; }

static void member_of(int i, char *buf, size_t size) { snprintf(buf, size, "m%d", i % MEMBERS); }

static void txn_of(int agent, int till, int i, char *buf, size_t size)
{
    snprintf(buf, size, "crash-%d-%d-%d", agent, till, i);
}

static void *till_main(void *arg)
{
    till_arg_t *t = arg;
    crash_t *c = t->c;
    char terminal[32];
    snprintf(terminal, sizeof terminal, "till-%d", t->till);
    cpos_t *pos = cpos_new(c->w.agents[t->agent].endpoint, terminal);
    for (int i = 0; pos != NULL && i < EARNS_PER_TILL; i++) {
        char txn[64], member[16];
        cpos_result_t r;
        txn_of(t->agent, t->till, i, txn, sizeof txn);
        member_of(i, member, sizeof member);
        earn_result_t *out = &c->results[t->agent][t->till][i];
        if (cpos_earn(pos, txn, member, amount_of(t->till, i), "EUR", &r) != CPOS_OK) {
            out->outcome = OUT_OTHER;
            out->code = -1;
        } else {
            out->outcome = r.offline ? OUT_OFFLINE : r.approved ? OUT_APPROVED : OUT_OTHER;
            out->code = r.code;
            out->points = r.points;
            out->seq = r.seq;
        }
        if (out->outcome == OUT_OFFLINE)
            atomic_fetch_add(&c->offline, 1);
        atomic_fetch_add(&c->done, 1);
    }
    cpos_destroy(&pos);
    return NULL;
}

/* Kill the broker at 20%, 40%, 60% and 80% of the earns; keep it down until at least
 * one more earn has been stored offline (or OFFLINE_WAIT_MS), then restart it. */
static void *killer_main(void *arg)
{
    crash_t *c = arg;
    for (int k = 1; k <= KILLS; k++) {
        while (atomic_load(&c->done) < (long)EARNS_TOTAL * k / (KILLS + 1))
            sleep_ms(5);
        long offline_before = atomic_load(&c->offline);
        int status = world_stop_broker(&c->w, SIGKILL);
        if (status != -SIGKILL)
            fprintf(stderr, "kill %d: broker status %d, expected %d\n", k, status, -SIGKILL);
        for (int waited = 0; waited < OFFLINE_WAIT_MS && atomic_load(&c->offline) == offline_before;
             waited += 10)
            sleep_ms(10);
        world_start_broker(&c->w);
        c->kills++;
    }
    return NULL;
}

static int setup(void **state)
{
    crash_t *c = calloc(1, sizeof *c);
    char out[512];
    c->partners[0] = "fuel";
    c->partners[1] = "grocer";
    world_init(&c->w);
    c->w.till_wait_ms = 500;
    world_start_broker(&c->w);
    for (int a = 0; a < AGENTS; a++) {
        if (world_ctl(&c->w, out, sizeof out, "partner", "add", c->partners[a], "--earn-rate", "1",
                      NULL) != 0)
            fail_msg("partner add %s: expected exit 0, got output %s", c->partners[a], out);
    }
    for (int m = 0; m < MEMBERS; m++) {
        char member[16];
        snprintf(member, sizeof member, "m%d", m);
        if (world_ctl(&c->w, out, sizeof out, "member", "add", member, NULL) != 0)
            fail_msg("member add %s: expected exit 0, got output %s", member, out);
    }
    for (int a = 0; a < AGENTS; a++)
        world_start_agent(&c->w, c->partners[a]);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    crash_t *c = *state;
    world_destroy(&c->w);
    free(c);
    return 0;
}

/* Poll until both agents' outboxes are empty (everything delivered and answered). */
static void wait_for_drain(crash_t *c)
{
    int waited = 0;
    for (int a = 0; a < AGENTS; a++) {
        char out[4096];
        char *argv[] = {COALITION_AGENT_BIN, "--data", c->w.agents[a].data_dir, "--outbox", NULL};
        for (;;) {
            harness_run(argv, out, sizeof out);
            if (out[0] == '\0')
                break;
            if (waited > DRAIN_TIMEOUT_MS)
                fail_msg("agent %s outbox still holds requests after %d ms: %.200s", c->partners[a],
                         DRAIN_TIMEOUT_MS, out);
            sleep_ms(POLL_MS);
            waited += POLL_MS;
        }
    }
}

typedef struct seen {
    int count;
    int64_t points;
    uint64_t seq;
} seen_t;

typedef struct audit {
    crash_t *c;
    seen_t seen[AGENTS][TILLS_PER_AGENT][EARNS_PER_TILL];
    long foreign;
} audit_t;

static int collect_entry(const journal_entry_t *e, void *ctx)
{
    audit_t *au = ctx;
    if (e->kind != COALITION__ENTRY_KIND__ENTRY_EARN)
        return 0;
    int agent = -1, till = -1, i = -1;
    if (sscanf(e->txn_id, "crash-%d-%d-%d", &agent, &till, &i) != 3 || agent < 0 ||
        agent >= AGENTS || till < 0 || till >= TILLS_PER_AGENT || i < 0 || i >= EARNS_PER_TILL ||
        strcmp(e->partner_id, au->c->partners[agent]) != 0) {
        au->foreign++;
        return 0;
    }
    seen_t *s = &au->seen[agent][till][i];
    s->count++;
    s->points = e->points;
    s->seq = e->seq;
    return 0;
}

/* Every earn in the ledger exactly once, matching what the till was told. */
static void check_exactly_once(crash_t *c, audit_t *au, int64_t expected[MEMBERS])
{
    long approved = 0, offline = 0;
    for (int a = 0; a < AGENTS; a++)
        for (int t = 0; t < TILLS_PER_AGENT; t++)
            for (int i = 0; i < EARNS_PER_TILL; i++) {
                const earn_result_t *r = &c->results[a][t][i];
                const seen_t *s = &au->seen[a][t][i];
                if (s->count != 1)
                    fail_msg("crash-%d-%d-%d: expected in the ledger exactly once, found %d "
                             "times (till was told %s, code %02d)",
                             a, t, i, s->count,
                             r->outcome == OUT_APPROVED  ? "approved"
                             : r->outcome == OUT_OFFLINE ? "offline"
                                                         : "other",
                             r->code);
                if (r->outcome == OUT_APPROVED && (r->seq != s->seq || r->points != s->points))
                    fail_msg("crash-%d-%d-%d: till was told seq %llu points %lld, ledger has "
                             "seq %llu points %lld",
                             a, t, i, (unsigned long long)r->seq, (long long)r->points,
                             (unsigned long long)s->seq, (long long)s->points);
                if (r->outcome == OUT_OTHER)
                    fail_msg("crash-%d-%d-%d: expected approved or stored offline, got code %d", a,
                             t, i, r->code);
                approved += r->outcome == OUT_APPROVED;
                offline += r->outcome == OUT_OFFLINE;
                expected[i % MEMBERS] += s->points;
                assert_int_equal(s->points, amount_of(t, i) / 100); /* rate 1: 1 point per EUR */
            }
    printf("crash: %d earns, %ld approved online, %ld stored offline and delivered, %d kills\n",
           EARNS_TOTAL, approved, offline, c->kills);
    assert_int_equal(au->foreign, 0);
    assert_true(offline > 0);
}

static void earns_survive_broker_kills_exactly_once(void **state)
{
    crash_t *c = *state;
    pthread_t tills[AGENTS][TILLS_PER_AGENT], killer;
    till_arg_t args[AGENTS][TILLS_PER_AGENT];
    pthread_create(&killer, NULL, killer_main, c);
    for (int a = 0; a < AGENTS; a++)
        for (int t = 0; t < TILLS_PER_AGENT; t++) {
            args[a][t] = (till_arg_t){c, a, t};
            pthread_create(&tills[a][t], NULL, till_main, &args[a][t]);
        }
    for (int a = 0; a < AGENTS; a++)
        for (int t = 0; t < TILLS_PER_AGENT; t++)
            pthread_join(tills[a][t], NULL);
    pthread_join(killer, NULL);
    assert_int_equal(c->kills, KILLS);
    wait_for_drain(c);

    ledger_t *l = NULL;
    audit_t *au = calloc(1, sizeof *au);
    au->c = c;
    assert_int_equal(ledger_open(&l, c->w.ledger, STORE_READ_ONLY), 0);
    assert_int_equal(ledger_journal_foreach(l, 1, collect_entry, au), 0);
    int64_t expected[MEMBERS] = {0};
    check_exactly_once(c, au, expected);
    for (int m = 0; m < MEMBERS; m++) {
        char member[16];
        int64_t balance = -1;
        snprintf(member, sizeof member, "m%d", m);
        assert_int_equal(ledger_member_balance(l, member, &balance), 0);
        if (balance != expected[m])
            fail_msg("member %s: expected balance %lld (sum of its earns), got %lld", member,
                     (long long)expected[m], (long long)balance);
    }
    char why[512];
    int rc = ledger_verify(l, why, sizeof why);
    if (rc != 0)
        fail_msg("verify: expected ok, got %s", why);
    ledger_destroy(&l);
    free(au);
    char out[512];
    assert_int_equal(world_ctl(&c->w, out, sizeof out, "verify", NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(earns_survive_broker_kills_exactly_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
