/* Integration tests of the whole flow: a real broker with an LMDB ledger in a temporary
 * directory, real partner agents for "fuel" (2 points per EUR) and "grocer" (1.5 per EUR),
 * tills talking to them through coalition_pos.h and the coalition-pos command. Every test
 * gets a fresh world and ends with `coalitionctl verify`; values are asserted exactly. */
#include "harness.h"

#include "clock.h"
#include "coalition_pos.h"
#include "errors.h"
#include "ledger.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define OUT_BYTES 4096
#define REPORT_BYTES 65536
#define JSON_VALUE_BYTES 256
#define DELIVERY_TIMEOUT_MS 20000
#define POLL_STEP_MS 20
#define CALL_TIMEOUT_MS 5000
#define ACCOUNTS_MAX 16
/* Setup: partner fuel = seq 1, grocer = 2, member alice = 3, bob = 4. */
#define SETUP_LAST_SEQ 4u
/* The agents' key-add entries (fuel, grocer), made by the harness after the setup's four
 * operator writes. Sequence numbers in this file are written as counted without them;
 * seq() gives the ledger's. */
#define KEY_ENTRIES 2u
#define seq(n) ((n) == 0 ? 0 : (uint64_t)(n) + KEY_ENTRIES)
#define SHUTDOWN_BURST 200
#define SHUTDOWN_SILENCE_MS 2000

/* ---- small helpers ------------------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t count_substr(const char *haystack, const char *needle)
{
    size_t n = 0;
    size_t step = strlen(needle);
    for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + step, needle))
        n++;
    return n;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p != '\0'; p++)
        n += *p == '\n';
    return n;
}

/* The line of `text` that contains `needle`, copied into `line`; false if none. */
static bool line_with(const char *text, const char *needle, char *line, size_t size)
{
    const char *hit = strstr(text, needle);
    if (hit == NULL)
        return false;
    const char *start = hit;
    while (start > text && start[-1] != '\n')
        start--;
    const char *end = strchr(hit, '\n');
    size_t len = end != NULL ? (size_t)(end - start) : strlen(start);
    if (len >= size)
        len = size - 1;
    memcpy(line, start, len);
    line[len] = '\0';
    return true;
}

/* Raw text of a top-level field of a one-line JSON object, strings with their quotes:
 * {"code":"00","points":24} gives "\"00\"" for code and "24" for points. */
static bool json_raw(const char *json, const char *field, char *out, size_t size)
{
    char key[JSON_VALUE_BYTES];
    snprintf(key, sizeof key, "\"%s\":", field);
    const char *p = json;
    for (p = strstr(p, key); p != NULL; p = strstr(p + 1, key)) {
        if (p > json && (p[-1] == '{' || p[-1] == ','))
            break;
    }
    if (p == NULL)
        return false;
    p += strlen(key);
    const char *end = p;
    if (*end == '"') {
        for (end++; *end != '\0' && *end != '"'; end++) {
            if (*end == '\\' && end[1] != '\0')
                end++;
        }
        if (*end == '"')
            end++;
    } else {
        while (*end != '\0' && *end != ',' && *end != '}')
            end++;
    }
    size_t len = (size_t)(end - p);
    if (len >= size)
        return false;
    memcpy(out, p, len);
    out[len] = '\0';
    return true;
}

static void expect_json(const char *what, const char *json, const char *field,
                        const char *expected_raw)
{
    char got[JSON_VALUE_BYTES];
    if (!json_raw(json, field, got, sizeof got))
        fail_msg("%s: expected field %s = %s, got no such field in: %s", what, field, expected_raw,
                 json);
    if (strcmp(got, expected_raw) != 0)
        fail_msg("%s: field %s expected %s, got %s (in: %s)", what, field, expected_raw, got, json);
}

/* ---- ledger reads (read-only, a fresh open each time so the view is current) ---------- */

typedef struct account_row {
    char name[ACCOUNT_NAME_BYTES_MAX];
    int64_t balance;
} account_row_t;

typedef struct accounts {
    size_t count;
    account_row_t rows[ACCOUNTS_MAX];
} accounts_t;

static int collect_account(const char *account, int64_t balance, void *ctx)
{
    accounts_t *a = ctx;
    if (a->count == ACCOUNTS_MAX)
        return CL_ERR_INVALID;
    snprintf(a->rows[a->count].name, sizeof a->rows[a->count].name, "%s", account);
    a->rows[a->count].balance = balance;
    a->count++;
    return CL_OK;
}

static ledger_t *open_ledger(const world_t *w)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, w->ledger, STORE_READ_ONLY);
    if (rc != CL_OK)
        fail_msg("ledger_open(%s, read-only): expected %d, got %d (%s)", w->ledger, CL_OK, rc,
                 cl_strerror(rc));
    return l;
}

static uint64_t last_seq(const world_t *w)
{
    ledger_t *l = open_ledger(w);
    uint64_t seq = ledger_last_seq(l);
    ledger_destroy(&l);
    return seq;
}

static int64_t member_balance(const world_t *w, const char *member)
{
    ledger_t *l = open_ledger(w);
    int64_t balance = -1;
    int rc = ledger_member_balance(l, member, &balance);
    ledger_destroy(&l);
    if (rc != CL_OK)
        fail_msg("balance of member %s: expected rc %d, got %d", member, CL_OK, rc);
    return balance;
}

static void read_accounts(const world_t *w, accounts_t *out)
{
    memset(out, 0, sizeof *out);
    ledger_t *l = open_ledger(w);
    int rc = ledger_accounts_foreach(l, collect_account, out);
    ledger_destroy(&l);
    if (rc != CL_OK)
        fail_msg("ledger_accounts_foreach: expected %d, got %d", CL_OK, rc);
}

/* Every account, in key order, with exactly these balances, and nothing else. */
static void expect_accounts(const world_t *w, const account_row_t *expected, size_t count)
{
    accounts_t got;
    read_accounts(w, &got);
    int64_t sum = 0;
    for (size_t i = 0; i < got.count; i++)
        sum += got.rows[i].balance;
    EXPECT_EQ("sum of all account balances", 0, sum);
    for (size_t i = 0; i < count && i < got.count; i++) {
        EXPECT_STR("account name (in key order)", expected[i].name, got.rows[i].name);
        /* The precision bounds the name to its field, so the message always fits. */
        char what[sizeof "balance of " + ACCOUNT_NAME_BYTES_MAX];
        snprintf(what, sizeof what, "balance of %.*s", (int)sizeof expected[i].name,
                 expected[i].name);
        EXPECT_EQ(what, expected[i].balance, got.rows[i].balance);
    }
    EXPECT_EQ("number of accounts", count, got.count);
}

static void expect_verify_ok(world_t *w)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("coalitionctl verify: expected exit 0, got %d: %s", rc, out);
    EXPECT_TRUE("coalitionctl verify prints OK", strstr(out, "verify: OK") != NULL);
}

/* ---- the world ----------------------------------------------------------------------- */

/* Check one `coalitionctl --json` write: exit 0, code 00 at ledger sequence `seq`. */
static void expect_ctl_seq(const char *what, int rc, const char *out, uint64_t seq)
{
    char raw[32];
    if (rc != 0)
        fail_msg("%s: expected exit 0, got %d: %s", what, rc, out);
    expect_json(what, out, "code", "\"00\"");
    snprintf(raw, sizeof raw, "%" PRIu64, seq);
    expect_json(what, out, "seq", raw);
}

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    world_init(w);
    world_start_broker(w);
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "--json", "partner", "add", "fuel", "--earn-rate", "2",
                       "--currency", "EUR", NULL);
    expect_ctl_seq("partner add fuel", rc, out, 1);
    rc = world_ctl(w, out, sizeof out, "--json", "partner", "add", "grocer", "--earn-rate", "1.5",
                   "--currency", "EUR", NULL);
    expect_ctl_seq("partner add grocer", rc, out, 2);
    rc = world_ctl(w, out, sizeof out, "--json", "member", "add", "alice", NULL);
    expect_ctl_seq("member add alice", rc, out, 3);
    rc = world_ctl(w, out, sizeof out, "--json", "member", "add", "bob", NULL);
    expect_ctl_seq("member add bob", rc, out, SETUP_LAST_SEQ);
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

static agent_proc_t *agent_of(world_t *w, const char *partner_id)
{
    for (size_t i = 0; i < w->agent_count; i++) {
        if (strcmp(w->agents[i].partner_id, partner_id) == 0)
            return &w->agents[i];
    }
    fail_msg("no agent for partner %s", partner_id);
    return NULL;
}

static cpos_t *till_of(world_t *w, const char *partner_id)
{
    cpos_t *pos = cpos_new(agent_of(w, partner_id)->endpoint, "till-1");
    if (pos == NULL)
        fail_msg("cpos_new(%s): expected a till, got NULL", agent_of(w, partner_id)->endpoint);
    return pos;
}

/* ---- till results -------------------------------------------------------------------- */

typedef struct expect {
    int code;
    int64_t points;
    int64_t balance;
    uint64_t seq;
    bool replay;
} expect_t;

static void expect_result(const char *what, int call_rc, const cpos_result_t *r, const expect_t *e)
{
    char field[512];
    snprintf(field, sizeof field, "%s: call return", what);
    EXPECT_EQ(field, CPOS_OK, call_rc);
    snprintf(field, sizeof field, "%s: code (text \"%s\")", what, r->text);
    EXPECT_EQ(field, e->code, r->code);
    bool approved = e->code == RC_APPROVED || e->code == RC_PARTIAL;
    snprintf(field, sizeof field, "%s: approved", what);
    EXPECT_EQ(field, approved, r->approved);
    snprintf(field, sizeof field, "%s: points", what);
    EXPECT_EQ(field, e->points, r->points);
    snprintf(field, sizeof field, "%s: balance", what);
    EXPECT_EQ(field, e->balance, r->balance);
    snprintf(field, sizeof field, "%s: seq", what);
    EXPECT_EQ(field, seq(e->seq), r->seq);
    snprintf(field, sizeof field, "%s: replay", what);
    EXPECT_EQ(field, e->replay, r->replay);
    snprintf(field, sizeof field, "%s: offline", what);
    EXPECT_EQ(field, false, r->offline);
    snprintf(field, sizeof field, "%s: pending", what);
    EXPECT_EQ(field, false, r->pending);
    /* Only a request that made a journal entry has an auth code (not a balance inquiry). */
    snprintf(field, sizeof field, "%s: auth code length", what);
    EXPECT_EQ(field, e->seq != 0 ? AUTH_CODE_LEN : 0, strlen(r->auth_code));
}

static void expect_text(const char *what, const char *expected, const cpos_result_t *r)
{
    char field[512];
    snprintf(field, sizeof field, "%s: receipt text", what);
    EXPECT_STR(field, expected, r->text);
}

/* A coalition-pos --json answer: exit status and one JSON line with these values. */
static void expect_pos(const char *what, int exit_rc, const char *out, int exit_expected,
                       const char *txn_id, const expect_t *e)
{
    char raw[JSON_VALUE_BYTES];
    if (exit_rc != exit_expected)
        fail_msg("%s: expected exit %d, got %d (stdout: %s)", what, exit_expected, exit_rc, out);
    EXPECT_EQ("coalition-pos prints one line", 1, count_lines(out));
    snprintf(raw, sizeof raw, "\"%s\"", txn_id);
    expect_json(what, out, "txn_id", raw);
    snprintf(raw, sizeof raw, "\"%02d\"", e->code);
    expect_json(what, out, "code", raw);
    bool approved = e->code == RC_APPROVED || e->code == RC_PARTIAL;
    expect_json(what, out, "approved", approved ? "true" : "false");
    snprintf(raw, sizeof raw, "%" PRId64, e->points);
    expect_json(what, out, "points", raw);
    snprintf(raw, sizeof raw, "%" PRId64, e->balance);
    expect_json(what, out, "balance", raw);
    snprintf(raw, sizeof raw, "%" PRIu64, seq(e->seq));
    expect_json(what, out, "seq", raw);
    expect_json(what, out, "replay", e->replay ? "true" : "false");
    expect_json(what, out, "offline", "false");
    expect_json(what, out, "pending", "false");
    if (e->seq == 0)
        expect_json(what, out, "auth_code", "\"\"");
}

/* ---- 1. the till library through the agent ------------------------------------------- */

static void test_library_earn_burn_refund_void_balance(void **state)
{
    world_t *w = *state;
    cpos_t *pos = till_of(w, "fuel");
    cpos_result_t r;
    int rc;

    /* 12.34 EUR at 2 points per EUR: floor(24.68) = 24. The first write after setup is 5. */
    rc = cpos_earn(pos, "e1", "alice", 1234, "EUR", &r);
    expect_result("earn e1", rc, &r, &(expect_t){RC_APPROVED, 24, 24, 5, false});
    expect_text("earn e1", "Earned 24 points. Balance 24", &r);
    EXPECT_STR("earn e1: txn id echoed", "e1", r.txn_id);

    /* 50.01 EUR: floor(100.02) = 100. */
    rc = cpos_earn(pos, "e2", "alice", 5001, "EUR", &r);
    expect_result("earn e2", rc, &r, &(expect_t){RC_APPROVED, 100, 124, 6, false});

    /* Partial refund of 20.01 of 50.01: floor(100 * 2001 / 5001) = 40 points back. */
    rc = cpos_refund(pos, "r1", "e2", 2001, 0, &r);
    expect_result("refund r1 of e2 (20.01)", rc, &r, &(expect_t){RC_APPROVED, 40, 84, 7, false});
    expect_text("refund r1", "Refund of e2: 40 points taken back. Balance 84", &r);

    /* Full refund of the rest: cumulative shares make it exactly 100 - 40 = 60. */
    rc = cpos_refund(pos, "r2", "e2", 0, 0, &r);
    expect_result("refund r2 of e2 (rest)", rc, &r, &(expect_t){RC_APPROVED, 60, 24, 8, false});

    rc = cpos_refund(pos, "r3", "e2", 0, 0, &r);
    expect_result("refund r3 of fully refunded e2", rc, &r,
                  &(expect_t){RC_INVALID_TRANSACTION, 0, 24, 0, false});

    rc = cpos_burn(pos, "b1", "alice", 10, false, &r);
    expect_result("burn b1", rc, &r, &(expect_t){RC_APPROVED, 10, 14, 9, false});
    expect_text("burn b1", "Redeemed 10 points. Balance 14", &r);

    rc = cpos_refund(pos, "rb1", "b1", 0, 4, &r);
    expect_result("refund rb1 of burn b1 (4 points)", rc, &r,
                  &(expect_t){RC_APPROVED, 4, 18, 10, false});
    rc = cpos_refund(pos, "rb2", "b1", 0, 0, &r);
    expect_result("refund rb2 of burn b1 (rest)", rc, &r,
                  &(expect_t){RC_APPROVED, 6, 24, 11, false});

    rc = cpos_burn(pos, "b2", "alice", 5, false, &r);
    expect_result("burn b2", rc, &r, &(expect_t){RC_APPROVED, 5, 19, 12, false});
    rc = cpos_void(pos, "v1", "b2", &r);
    expect_result("void v1 of burn b2", rc, &r, &(expect_t){RC_APPROVED, 5, 24, 13, false});
    expect_text("void v1", "Voided b2: 5 points returned. Balance 24", &r);

    rc = cpos_earn(pos, "e3", "alice", 3000, "EUR", &r);
    expect_result("earn e3", rc, &r, &(expect_t){RC_APPROVED, 60, 84, 14, false});
    rc = cpos_void(pos, "v2", "e1", &r);
    expect_result("void v2 of earn e1", rc, &r, &(expect_t){RC_APPROVED, 24, 60, 15, false});
    rc = cpos_void(pos, "v3", "e1", &r);
    expect_result("void v3 of already voided e1", rc, &r,
                  &(expect_t){RC_INVALID_TRANSACTION, 0, 60, 0, false});

    rc = cpos_balance(pos, "q1", "alice", &r);
    expect_result("balance q1", rc, &r, &(expect_t){RC_APPROVED, 0, 60, 0, false});
    EXPECT_STR("balance q1: auth code", "", r.auth_code);

    rc = cpos_burn(pos, "b3", "alice", 61, false, &r);
    expect_result("burn b3 over the balance", rc, &r,
                  &(expect_t){RC_INSUFFICIENT_POINTS, 0, 60, 0, false});

    rc = cpos_enroll(pos, "n1", "carol", &r);
    expect_result("enroll n1 carol at the till", rc, &r, &(expect_t){RC_APPROVED, 0, 0, 16, false});
    cpos_destroy(&pos);

    EXPECT_EQ("ledger last seq", seq(16), last_seq(w));
    EXPECT_EQ("ledger balance of alice", 60, member_balance(w, "alice"));
    /* Issued: -(24 + 100 + 60) + 40 + 60 + 24 = -60; redeemed: 10 - 4 - 6 + 5 - 5 = 0. */
    const account_row_t expected[] = {{"breakage", 0},
                                      {"member:alice", 60},
                                      {"member:bob", 0},
                                      {"member:carol", 0},
                                      {"partner:fuel:issued", -60},
                                      {"partner:fuel:redeemed", 0},
                                      {"partner:grocer:issued", 0},
                                      {"partner:grocer:redeemed", 0}};
    expect_accounts(w, expected, sizeof expected / sizeof expected[0]);
    expect_verify_ok(w);
}

/* ---- 2. the coalition-pos command ----------------------------------------------------- */

static void test_cli_flow(void **state)
{
    world_t *w = *state;
    agent_proc_t *g = agent_of(w, "grocer");
    char out[OUT_BYTES];
    int rc;

    /* 12.34 EUR at 1.5 points per EUR: floor(18.51) = 18. */
    rc = world_pos(w, g, out, sizeof out, "earn", "--member", "alice", "--amount", "12.34", "--txn",
                   "e1", NULL);
    expect_pos("pos earn e1", rc, out, 0, "e1", &(expect_t){RC_APPROVED, 18, 18, 5, false});
    expect_json("pos earn e1", out, "text", "\"Earned 18 points. Balance 18\"");
    char auth[JSON_VALUE_BYTES];
    EXPECT_TRUE("pos earn e1 has an auth code", json_raw(out, "auth_code", auth, sizeof auth));
    EXPECT_EQ("pos earn e1: auth code is 6 characters in quotes", AUTH_CODE_LEN + 2, strlen(auth));

    /* 6.17 of 12.34 back: floor(18 * 617 / 1234) = 9. */
    rc = world_pos(w, g, out, sizeof out, "refund", "--original", "e1", "--amount", "6.17", "--txn",
                   "r1", NULL);
    expect_pos("pos refund r1", rc, out, 0, "r1", &(expect_t){RC_APPROVED, 9, 9, 6, false});
    expect_json("pos refund r1", out, "text", "\"Refund of e1: 9 points taken back. Balance 9\"");
    rc = world_pos(w, g, out, sizeof out, "refund", "--original", "e1", "--txn", "r2", NULL);
    expect_pos("pos refund r2 (rest)", rc, out, 0, "r2", &(expect_t){RC_APPROVED, 9, 0, 7, false});

    rc = world_pos(w, g, out, sizeof out, "burn", "--member", "alice", "--points", "1", "--txn",
                   "b1", NULL);
    expect_pos("pos burn b1 with nothing left", rc, out, 1, "b1",
               &(expect_t){RC_INSUFFICIENT_POINTS, 0, 0, 0, false});

    /* 20.00 EUR: 30 points; 4.00 EUR: 6 points, then voided. */
    rc = world_pos(w, g, out, sizeof out, "earn", "--member", "alice", "--amount", "20.00", "--txn",
                   "e2", NULL);
    expect_pos("pos earn e2", rc, out, 0, "e2", &(expect_t){RC_APPROVED, 30, 30, 8, false});
    rc = world_pos(w, g, out, sizeof out, "earn", "--member", "alice", "--amount", "4.00", "--txn",
                   "e3", NULL);
    expect_pos("pos earn e3", rc, out, 0, "e3", &(expect_t){RC_APPROVED, 6, 36, 9, false});
    rc = world_pos(w, g, out, sizeof out, "void", "--original", "e3", "--txn", "v1", NULL);
    expect_pos("pos void v1 of e3", rc, out, 0, "v1", &(expect_t){RC_APPROVED, 6, 30, 10, false});

    rc = world_pos(w, g, out, sizeof out, "burn", "--member", "alice", "--points", "50",
                   "--allow-partial", "--txn", "b2", NULL);
    expect_pos("pos burn b2 partial", rc, out, 0, "b2", &(expect_t){RC_PARTIAL, 30, 0, 11, false});
    expect_json("pos burn b2", out, "text", "\"Partially redeemed 30 of 50 points. Balance 0\"");

    rc = world_pos(w, g, out, sizeof out, "refund", "--original", "b2", "--points", "12", "--txn",
                   "r3", NULL);
    expect_pos("pos refund r3 of burn b2", rc, out, 0, "r3",
               &(expect_t){RC_APPROVED, 12, 12, 12, false});
    rc = world_pos(w, g, out, sizeof out, "void", "--original", "b2", "--txn", "v2", NULL);
    expect_pos("pos void v2 of partly refunded b2", rc, out, 1, "v2",
               &(expect_t){RC_INVALID_TRANSACTION, 0, 12, 0, false});

    rc = world_pos(w, g, out, sizeof out, "balance", "--member", "alice", "--txn", "q1", NULL);
    expect_pos("pos balance", rc, out, 0, "q1", &(expect_t){RC_APPROVED, 0, 12, 0, false});
    expect_json("pos balance", out, "text", "\"Balance 12 points\"");

    rc = world_pos(w, g, out, sizeof out, "earn", "--member", "carol", "--amount", "1.00", "--txn",
                   "e4", NULL);
    expect_pos("pos earn for unknown member", rc, out, 1, "e4",
               &(expect_t){RC_UNKNOWN_MEMBER, 0, 0, 0, false});

    EXPECT_EQ("ledger last seq", seq(12), last_seq(w));
    EXPECT_EQ("ledger balance of alice", 12, member_balance(w, "alice"));
    /* Issued: -(18 - 9 - 9 + 30 + 6 - 6) = -30; redeemed: 30 - 12 = 18. */
    const account_row_t expected[] = {{"breakage", 0},
                                      {"member:alice", 12},
                                      {"member:bob", 0},
                                      {"partner:fuel:issued", 0},
                                      {"partner:fuel:redeemed", 0},
                                      {"partner:grocer:issued", -30},
                                      {"partner:grocer:redeemed", 18}};
    expect_accounts(w, expected, sizeof expected / sizeof expected[0]);
    expect_verify_ok(w);
}

/* ---- 3. two partners on one ledger ---------------------------------------------------- */

static void test_two_partners_one_ledger(void **state)
{
    world_t *w = *state;
    cpos_t *fuel = till_of(w, "fuel");
    cpos_t *grocer = till_of(w, "grocer");
    cpos_result_t r;
    int rc;

    rc = cpos_earn(fuel, "t1", "alice", 1000, "EUR", &r);
    expect_result("fuel earn t1", rc, &r, &(expect_t){RC_APPROVED, 20, 20, 5, false});
    /* Same txn id at another partner: its own transaction, not a replay and not a 94. */
    rc = cpos_burn(grocer, "t1", "alice", 15, false, &r);
    expect_result("grocer burn t1", rc, &r, &(expect_t){RC_APPROVED, 15, 5, 6, false});
    rc = cpos_earn(grocer, "t2", "bob", 1234, "EUR", &r);
    expect_result("grocer earn t2", rc, &r, &(expect_t){RC_APPROVED, 18, 18, 7, false});
    /* The grocer's balance inquiry sees what was earned at fuel. */
    rc = cpos_balance(grocer, "q1", "alice", &r);
    expect_result("grocer balance of alice", rc, &r, &(expect_t){RC_APPROVED, 0, 5, 0, false});
    cpos_destroy(&fuel);
    cpos_destroy(&grocer);

    const account_row_t expected[] = {{"breakage", 0},
                                      {"member:alice", 5},
                                      {"member:bob", 18},
                                      {"partner:fuel:issued", -20},
                                      {"partner:fuel:redeemed", 0},
                                      {"partner:grocer:issued", -18},
                                      {"partner:grocer:redeemed", 15}};
    expect_accounts(w, expected, sizeof expected / sizeof expected[0]);

    char report[REPORT_BYTES], line[1024];
    int exit_rc = world_ctl(w, report, sizeof report, "--json", "accounts", NULL);
    EXPECT_EQ("coalitionctl accounts exit", 0, exit_rc);
    EXPECT_TRUE("coalitionctl accounts lists partner:fuel:issued at -20",
                strstr(report, "{\"account\":\"partner:fuel:issued\",\"balance\":-20}\n") != NULL);
    EXPECT_TRUE("coalitionctl accounts lists partner:grocer:redeemed at 15",
                strstr(report, "{\"account\":\"partner:grocer:redeemed\",\"balance\":15}\n") !=
                    NULL);

    exit_rc = world_ctl(w, report, sizeof report, "--json", "journal", "--from", "7", NULL);
    EXPECT_EQ("coalitionctl journal exit", 0, exit_rc);
    EXPECT_EQ("journal entries with txn id t1", 2, count_substr(report, "\"txn_id\":\"t1\""));
    EXPECT_TRUE("journal has the fuel earn t1 at seq 5",
                line_with(report, "\"seq\":7,", line, sizeof line));
    EXPECT_TRUE("seq 5 is fuel's earn t1",
                strstr(line, "\"kind\":\"earn\",\"partner\":\"fuel\",\"txn_id\":\"t1\"") != NULL);
    EXPECT_TRUE("journal has the grocer burn t1 at seq 6",
                line_with(report, "\"seq\":8,", line, sizeof line));
    EXPECT_TRUE("seq 6 is grocer's burn t1",
                strstr(line, "\"kind\":\"burn\",\"partner\":\"grocer\",\"txn_id\":\"t1\"") != NULL);
    EXPECT_EQ("ledger last seq", seq(7), last_seq(w));

    /* Reversals find their original among the sender's own txn ids only: grocer's void
     * of "f2" is about grocer's own f2, not seen yet, so it leaves a tombstone (00, no
     * points) and fuel's f2 is untouched. */
    fuel = till_of(w, "fuel");
    grocer = till_of(w, "grocer");
    rc = cpos_earn(fuel, "f2", "bob", 500, "EUR", &r);
    expect_result("fuel earn f2", rc, &r, &(expect_t){RC_APPROVED, 10, 28, 8, false});
    rc = cpos_void(grocer, "gv1", "f2", &r);
    expect_result("grocer void of fuel's f2", rc, &r, &(expect_t){RC_APPROVED, 0, 0, 9, false});
    rc = cpos_void(grocer, "gv2", "t1", &r);
    expect_result("grocer void of its own t1 (the burn)", rc, &r,
                  &(expect_t){RC_APPROVED, 15, 20, 10, false});
    cpos_destroy(&fuel);
    cpos_destroy(&grocer);
    const account_row_t after_void[] = {{"breakage", 0},
                                        {"member:alice", 20},
                                        {"member:bob", 28},
                                        {"partner:fuel:issued", -30},
                                        {"partner:fuel:redeemed", 0},
                                        {"partner:grocer:issued", -18},
                                        {"partner:grocer:redeemed", 0}};
    expect_accounts(w, after_void, sizeof after_void / sizeof after_void[0]);
    EXPECT_EQ("ledger last seq at the end", seq(10), last_seq(w));
    expect_verify_ok(w);
}

/* ---- 4. retries and duplicate keys ---------------------------------------------------- */

static void test_retry_replays_and_duplicate_key(void **state)
{
    world_t *w = *state;
    cpos_t *pos = till_of(w, "fuel");
    cpos_result_t first, r;
    int rc = cpos_earn(pos, "e1", "alice", 1234, "EUR", &first);
    expect_result("earn e1", rc, &first, &(expect_t){RC_APPROVED, 24, 24, 5, false});

    rc = cpos_earn(pos, "e1", "alice", 1234, "EUR", &r);
    expect_result("retry of e1", rc, &r, &(expect_t){RC_APPROVED, 24, 24, 5, true});
    EXPECT_STR("retry of e1: auth code", first.auth_code, r.auth_code);
    EXPECT_STR("retry of e1: text", first.text, r.text);

    char out[OUT_BYTES], raw[32];
    rc = world_pos(w, agent_of(w, "fuel"), out, sizeof out, "earn", "--member", "alice", "--amount",
                   "12.34", "--txn", "e1", NULL);
    expect_pos("pos retry of e1", rc, out, 0, "e1", &(expect_t){RC_APPROVED, 24, 24, 5, true});
    snprintf(raw, sizeof raw, "\"%s\"", first.auth_code);
    expect_json("pos retry of e1", out, "auth_code", raw);

    EXPECT_EQ("ledger last seq after retries", seq(5), last_seq(w));
    EXPECT_EQ("balance of alice after retries", 24, member_balance(w, "alice"));

    rc = cpos_earn(pos, "e1", "alice", 1000, "EUR", &r);
    expect_result("e1 again with another amount", rc, &r,
                  &(expect_t){RC_DUPLICATE_KEY, 0, 0, 0, false});
    rc = cpos_burn(pos, "e1", "alice", 1, false, &r);
    expect_result("e1 again as a burn", rc, &r, &(expect_t){RC_DUPLICATE_KEY, 0, 0, 0, false});

    /* A burn is replayed the same way, and so is a decline. */
    rc = cpos_burn(pos, "b1", "alice", 4, false, &first);
    expect_result("burn b1", rc, &first, &(expect_t){RC_APPROVED, 4, 20, 6, false});
    rc = cpos_burn(pos, "b1", "alice", 4, false, &r);
    expect_result("retry of b1", rc, &r, &(expect_t){RC_APPROVED, 4, 20, 6, true});
    EXPECT_STR("retry of b1: auth code", first.auth_code, r.auth_code);
    rc = cpos_burn(pos, "b2", "alice", 500, false, &r);
    expect_result("burn b2 over the balance", rc, &r,
                  &(expect_t){RC_INSUFFICIENT_POINTS, 0, 20, 0, false});
    rc = cpos_burn(pos, "b2", "alice", 500, false, &r);
    expect_result("retry of declined b2", rc, &r,
                  &(expect_t){RC_INSUFFICIENT_POINTS, 0, 20, 0, true});
    cpos_destroy(&pos);

    EXPECT_EQ("ledger last seq at the end", seq(6), last_seq(w));
    EXPECT_EQ("balance of alice at the end", 20, member_balance(w, "alice"));
    expect_verify_ok(w);
}

/* ---- 5. offline: store and forward ---------------------------------------------------- */

static void run_agent_report(const agent_proc_t *a, const char *which, char *out, size_t size)
{
    char *argv[] = {COALITION_AGENT_BIN, "--data", (char *)a->data_dir, (char *)which, NULL};
    int rc = harness_run(argv, out, size);
    if (rc != 0)
        fail_msg("coalition-agent %s: expected exit 0, got %d", which, rc);
}

/* Poll the ledger (opened read-only each time) until alice has `balance` at `seq`. */
static bool wait_ledger(const world_t *w, uint64_t seq, int64_t balance, uint64_t *seq_got,
                        int64_t *balance_got)
{
    int64_t deadline = clock_mono_ms() + DELIVERY_TIMEOUT_MS;
    for (;;) {
        *seq_got = last_seq(w);
        *balance_got = member_balance(w, "alice");
        if (*seq_got == seq && *balance_got == balance)
            return true;
        if (clock_mono_ms() > deadline)
            return false;
        sleep_ms(POLL_STEP_MS);
    }
}

static bool wait_outbox_empty(const agent_proc_t *a, char *out, size_t size)
{
    int64_t deadline = clock_mono_ms() + DELIVERY_TIMEOUT_MS;
    for (;;) {
        run_agent_report(a, "--outbox", out, size);
        if (out[0] == '\0')
            return true;
        if (clock_mono_ms() > deadline)
            return false;
        sleep_ms(POLL_STEP_MS);
    }
}

static void expect_offline(const char *what, int call_rc, const cpos_result_t *r)
{
    char field[512];
    snprintf(field, sizeof field, "%s: call return", what);
    EXPECT_EQ(field, CPOS_OK, call_rc);
    snprintf(field, sizeof field, "%s: code (text \"%s\")", what, r->text);
    EXPECT_EQ(field, RC_UNAVAILABLE, r->code);
    snprintf(field, sizeof field, "%s: offline", what);
    EXPECT_EQ(field, true, r->offline);
    snprintf(field, sizeof field, "%s: approved", what);
    EXPECT_EQ(field, false, r->approved);
    snprintf(field, sizeof field, "%s: seq", what);
    EXPECT_EQ(field, 0, r->seq);
}

/* After delivery: each offline earn is in the ledger journal exactly once, no burn is,
 * the agent's outbox is empty and its journal holds the broker's authorizations. */
static void expect_offline_earns_recorded(world_t *w, const agent_proc_t *fuel_agent)
{
    static char out[REPORT_BYTES];
    int exit_rc = world_ctl(w, out, sizeof out, "--json", "journal", NULL);
    EXPECT_EQ("coalitionctl journal exit", 0, exit_rc);
    EXPECT_EQ("journal entries for o1", 1, count_substr(out, "\"txn_id\":\"o1\""));
    EXPECT_EQ("journal entries for o2", 1, count_substr(out, "\"txn_id\":\"o2\""));
    EXPECT_EQ("journal entries for ob1", 0, count_substr(out, "\"txn_id\":\"ob1\""));
    EXPECT_EQ("journal entries for ob2", 0, count_substr(out, "\"txn_id\":\"ob2\""));
    EXPECT_EQ("journal entries in all", seq(7), count_lines(out));

    if (!wait_outbox_empty(fuel_agent, out, sizeof out))
        fail_msg("agent outbox: expected empty within %d ms, got: %s", DELIVERY_TIMEOUT_MS, out);
    run_agent_report(fuel_agent, "--journal", out, sizeof out);
    EXPECT_EQ("agent journal lines (e0, o1, o2)", 3, count_lines(out));
    char line[1024];
    EXPECT_TRUE("agent journal has o1", line_with(out, "\"txn_id\":\"o1\"", line, sizeof line));
    expect_json("agent journal o1", line, "code", "\"00\"");
    expect_json("agent journal o1", line, "points", "24");
    expect_json("agent journal o1", line, "balance", "44");
    expect_json("agent journal o1", line, "ledger_seq", "8");
    EXPECT_TRUE("agent journal has o2", line_with(out, "\"txn_id\":\"o2\"", line, sizeof line));
    expect_json("agent journal o2", line, "code", "\"00\"");
    expect_json("agent journal o2", line, "points", "100");
    expect_json("agent journal o2", line, "balance", "144");
    expect_json("agent journal o2", line, "ledger_seq", "9");
}

static void test_offline_store_and_forward(void **state)
{
    world_t *w = *state;
    agent_proc_t *fuel_agent = agent_of(w, "fuel");
    cpos_t *pos = till_of(w, "fuel");
    cpos_result_t r;
    int rc = cpos_earn(pos, "e0", "alice", 1000, "EUR", &r);
    expect_result("earn e0 before the outage", rc, &r, &(expect_t){RC_APPROVED, 20, 20, 5, false});

    EXPECT_EQ("broker exit status on SIGTERM", 0, world_stop_broker(w, SIGTERM));

    rc = cpos_earn(pos, "o1", "alice", 1234, "EUR", &r);
    expect_offline("earn o1 while the broker is down", rc, &r);
    EXPECT_EQ("earn o1: pending", true, r.pending);
    char out[REPORT_BYTES];
    rc = world_pos(w, fuel_agent, out, sizeof out, "earn", "--member", "alice", "--amount", "50.00",
                   "--txn", "o2", NULL);
    if (rc != 3)
        fail_msg("pos earn o2 while the broker is down: expected exit 3, got %d (%s)", rc, out);
    expect_json("pos earn o2 offline", out, "code", "\"91\"");
    expect_json("pos earn o2 offline", out, "offline", "true");
    expect_json("pos earn o2 offline", out, "approved", "false");
    expect_json("pos earn o2 offline", out, "seq", "0");

    /* A burn is never stored: the till is told 91 and nothing is applied later. */
    rc = cpos_burn(pos, "ob1", "alice", 5, false, &r);
    expect_result("burn ob1 while the broker is down", rc, &r,
                  &(expect_t){RC_UNAVAILABLE, 0, 0, 0, false});
    rc = world_pos(w, fuel_agent, out, sizeof out, "burn", "--member", "alice", "--points", "5",
                   "--txn", "ob2", NULL);
    expect_pos("pos burn ob2 while the broker is down", rc, out, 1, "ob2",
               &(expect_t){RC_UNAVAILABLE, 0, 0, 0, false});

    rc = cpos_balance(pos, "oq1", "alice", &r);
    expect_result("balance inquiry while the broker is down", rc, &r,
                  &(expect_t){RC_UNAVAILABLE, 0, 0, 0, false});

    world_start_broker(w);
    /* o1: floor(12.34 * 2) = 24, o2: 100; delivered in arrival order as seq 6 and 7. */
    uint64_t seq_got = 0;
    int64_t balance_got = 0;
    if (!wait_ledger(w, seq(7), 144, &seq_got, &balance_got))
        fail_msg("offline earns delivered: expected seq 9 and alice 144 within %d ms, got seq "
                 "%" PRIu64 " and alice %" PRId64,
                 DELIVERY_TIMEOUT_MS, seq_got, balance_got);

    expect_offline_earns_recorded(w, fuel_agent);

    /* The till asking again after delivery gets the delivered answer as a replay. */
    rc = cpos_earn(pos, "o1", "alice", 1234, "EUR", &r);
    expect_result("retry of o1 after delivery", rc, &r, &(expect_t){RC_APPROVED, 24, 44, 6, true});
    rc = cpos_burn(pos, "b1", "alice", 44, false, &r);
    expect_result("burn b1 after the outage", rc, &r, &(expect_t){RC_APPROVED, 44, 100, 8, false});
    cpos_destroy(&pos);
    expect_verify_ok(w);
}

/* ---- 7. graceful shutdown -------------------------------------------------------------- */

/* A DEALER to the broker's partner socket, authenticated as `partner`. */
static void *dealer_to(world_t *w, void *ctx, const char *partner)
{
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger_ms = 0;
    if (sock == NULL || zmq_setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) != 0)
        fail_msg("DEALER: %s", zmq_strerror(zmq_errno()));
    world_curve_socket(w, sock, partner);
    if (zmq_connect(sock, w->broker_endpoint) != 0)
        fail_msg("DEALER to %s: %s", w->broker_endpoint, zmq_strerror(zmq_errno()));
    return sock;
}

static void send_earn(void *sock, const char *txn_id, int64_t amount_minor)
{
    envelope_t env;
    Coalition__EarnRequest body = COALITION__EARN_REQUEST__INIT;
    coalition__envelope__init(&env);
    env.version = WIRE_VERSION;
    env.partner_id = "fuel";
    env.terminal_id = "till-9";
    env.site_id = "main";
    env.txn_id = (char *)txn_id;
    body.member_id = "alice";
    body.amount_minor = amount_minor;
    body.currency = "EUR";
    env.body_case = COALITION__ENVELOPE__BODY_EARN;
    env.earn = &body;
    size_t len = 0;
    uint8_t *buf = wire_pack_envelope(&env, &len);
    if (buf == NULL || zmq_send(sock, buf, len, 0) != (int)len)
        fail_msg("sending earn %s: %s", txn_id, zmq_strerror(zmq_errno()));
    free(buf);
}

/* Next reply within `timeout_ms`, or NULL. */
static authorization_t *recv_auth(void *sock, int timeout_ms)
{
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return NULL;
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    int n = zmq_recv(sock, buf, sizeof buf, 0);
    if (n < 0 || (size_t)n > sizeof buf)
        fail_msg("receiving a reply: %d bytes (%s)", n, zmq_strerror(zmq_errno()));
    authorization_t *auth = wire_auth_decode(buf, (size_t)n);
    if (auth == NULL)
        fail_msg("a %d-byte reply is not an Authorization", n);
    return auth;
}

/* Count the burst's approvals, starting with `first`, until all came or the line is quiet.
 * Each must carry a distinct sequence number after g-first's 5. */
static int collect_burst(void *sock, authorization_t *first)
{
    bool seen[SHUTDOWN_BURST + 1] = {false};
    int approved = 0;
    for (authorization_t *auth = first; auth != NULL;) {
        EXPECT_EQ("code of a burst reply", RC_APPROVED, auth->code);
        uint64_t first_seq = seq(5);
        uint64_t at = auth->seq;
        if (at <= first_seq || at > first_seq + SHUTDOWN_BURST || seen[at - first_seq])
            fail_msg("seq of a burst reply: expected a new one in %" PRIu64 "..%" PRIu64
                     ", got %" PRIu64,
                     first_seq + 1, first_seq + SHUTDOWN_BURST, at);
        seen[at - first_seq] = true;
        approved++;
        wire_auth_free(auth);
        auth = approved < SHUTDOWN_BURST ? recv_auth(sock, SHUTDOWN_SILENCE_MS) : NULL;
    }
    return approved;
}

/* A burn sent to a stalled broker: the till is told 91, the agent voids the burn once
 * the broker answers again, and a repeat of the same txn id is refused by the agent, never
 * replayed as the original approval (the shopper would keep goods and points). */
static void test_burn_reversed_after_timeout_is_not_repeatable(void **state)
{
    world_t *w = *state;
    agent_proc_t *grocer_agent = agent_of(w, "grocer");
    cpos_t *pos = till_of(w, "grocer");
    cpos_result_t r;
    int rc = cpos_earn(pos, "g-e1", "alice", 10000, "EUR", &r); /* 150 points */
    expect_result("earn before the stall", rc, &r, &(expect_t){RC_APPROVED, 150, 150, 5, false});

    EXPECT_EQ("SIGSTOP the broker", 0, kill(w->broker.pid, SIGSTOP));
    rc = cpos_burn(pos, "g-b1", "alice", 40, false, &r);
    EXPECT_EQ("burn to a stalled broker: call return", CPOS_OK, rc);
    EXPECT_EQ("burn to a stalled broker: code", RC_UNAVAILABLE, r.code);
    EXPECT_EQ("burn to a stalled broker: offline", false, r.offline);
    EXPECT_EQ("SIGCONT the broker", 0, kill(w->broker.pid, SIGCONT));

    char out[REPORT_BYTES];
    if (!wait_outbox_empty(grocer_agent, out, sizeof out))
        fail_msg("grocer outbox: expected empty once the broker is back, got %s", out);
    EXPECT_EQ("alice after the burn and its void", 150, member_balance(w, "alice"));

    rc = cpos_burn(pos, "g-b1", "alice", 40, false, &r);
    EXPECT_EQ("repeat of the reversed burn: call return", CPOS_OK, rc);
    EXPECT_EQ("repeat of the reversed burn: code", RC_INVALID_TRANSACTION, r.code);
    EXPECT_EQ("repeat of the reversed burn: approved", false, r.approved);
    EXPECT_EQ("alice after the refused repeat", 150, member_balance(w, "alice"));
    rc = cpos_burn(pos, "g-b2", "alice", 40, false, &r);
    EXPECT_EQ("a fresh burn: code", RC_APPROVED, r.code);
    EXPECT_EQ("alice after a fresh burn", 110, member_balance(w, "alice"));
    cpos_destroy(&pos);
    expect_verify_ok(w);
}

static void test_broker_graceful_shutdown(void **state)
{
    world_t *w = *state;
    void *ctx = zmq_ctx_new();
    void *sock = dealer_to(w, ctx, "fuel");
    send_earn(sock, "g-first", 100);
    authorization_t *auth = recv_auth(sock, CALL_TIMEOUT_MS);
    if (auth == NULL)
        fail_msg("earn g-first: expected a reply within %d ms, got none", CALL_TIMEOUT_MS);
    EXPECT_EQ("earn g-first: code", RC_APPROVED, auth->code);
    EXPECT_EQ("earn g-first: seq", seq(5), auth->seq);
    wire_auth_free(auth);

    /* A burst, and SIGTERM as soon as its first answer shows the broker is busy with it. */
    char txn_id[32];
    for (int i = 0; i < SHUTDOWN_BURST; i++) {
        snprintf(txn_id, sizeof txn_id, "g%03d", i);
        send_earn(sock, txn_id, 100); /* 1.00 EUR: 2 points each */
    }
    auth = recv_auth(sock, CALL_TIMEOUT_MS);
    if (auth == NULL)
        fail_msg("burst: expected a first reply within %d ms, got none", CALL_TIMEOUT_MS);
    EXPECT_EQ("broker exit status on SIGTERM", 0, world_stop_broker(w, SIGTERM));

    /* Everything the broker answered was committed, and everything committed was answered. */
    int approved = collect_burst(sock, auth);
    zmq_close(sock);
    zmq_ctx_term(ctx);

    uint64_t seq_after = last_seq(w);
    EXPECT_EQ("ledger last seq after shutdown = g-first + approved replies", seq(5) + approved,
              seq_after);
    EXPECT_EQ("alice after shutdown = 2 points per approved earn", 2 * (1 + approved),
              member_balance(w, "alice"));
    expect_verify_ok(w);

    char log[REPORT_BYTES], expected_line[128];
    char *argv[] = {"/bin/cat", w->broker.log_path, NULL};
    harness_run(argv, log, sizeof log);
    snprintf(expected_line, sizeof expected_line, "stopped cleanly at ledger seq %" PRIu64,
             seq_after);
    if (strstr(log, expected_line) == NULL)
        fail_msg("broker log: expected \"%s\", got:\n%s", expected_line, log);

    /* It starts again on the same ledger and carries on from the same sequence. */
    world_start_broker(w);
    ctx = zmq_ctx_new();
    sock = dealer_to(w, ctx, "fuel");
    send_earn(sock, "g-after", 1000);
    auth = recv_auth(sock, CALL_TIMEOUT_MS);
    if (auth == NULL)
        fail_msg("earn g-after: expected a reply within %d ms, got none", CALL_TIMEOUT_MS);
    EXPECT_EQ("earn g-after: code", RC_APPROVED, auth->code);
    EXPECT_EQ("earn g-after: seq", seq_after + 1, auth->seq);
    EXPECT_EQ("earn g-after: balance", 2 * (1 + approved) + 20, auth->balance);
    wire_auth_free(auth);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    EXPECT_EQ("broker exit status on the second SIGTERM", 0, world_stop_broker(w, SIGTERM));
    expect_verify_ok(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_library_earn_burn_refund_void_balance, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cli_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_partners_one_ledger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_replays_and_duplicate_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_store_and_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(test_burn_reversed_after_timeout_is_not_repeatable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_broker_graceful_shutdown, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
