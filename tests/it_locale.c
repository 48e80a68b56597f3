/* Integration tests of receipt locales: a real broker, real agents for "fuel" (Romanian,
 * set by `partner add --locale ro`) and "grocer" (English first, Greek from a `contract
 * set --locale el`), and a direct CURVE client for "pharma" (Albanian). Texts come back
 * in each partner's language with its number formatting, a replay returns the stored
 * text byte for byte (even after the locale changes), an unknown locale is refused by
 * coalitionctl and by the broker with nothing stored, and verify passes at the end. */
#include "harness.h"

#include "client.h"
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

#define OUT_BYTES 4096
#define CALL_TIMEOUT_MS 5000
#define NB "\xc2\xa0" /* the Albanian group separator, U+00A0 */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t last_seq(const world_t *w)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, w->ledger, STORE_READ_ONLY);
    if (rc != CL_OK)
        fail_msg("ledger_open(%s): expected %d, got %d", w->ledger, CL_OK, rc);
    uint64_t seq = ledger_last_seq(l);
    ledger_destroy(&l);
    return seq;
}

static void ctl_ok(world_t *w, const char *what, const char *a0, const char *a1, const char *a2,
                   const char *a3, const char *a4, const char *a5, const char *a6)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, a0, a1, a2, a3, a4, a5, a6, NULL);
    if (rc != 0)
        fail_msg("%s: expected exit 0, got %d: %s", what, rc, out);
}

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    world_init(w);
    world_start_broker(w);
    ctl_ok(w, "partner add fuel (ro)", "partner", "add", "fuel", "--earn-rate", "2", "--locale",
           "ro");
    ctl_ok(w, "partner add grocer (en)", "partner", "add", "grocer", "--earn-rate", "1", NULL,
           NULL);
    ctl_ok(w, "partner add pharma (sq)", "partner", "add", "pharma", "--earn-rate", "1", "--locale",
           "sq");
    /* A new contract "from now" must start after the partner-add's, a millisecond on. */
    sleep_ms(3);
    ctl_ok(w, "contract set grocer --locale el", "contract", "set", "grocer", "--from", "now",
           "--locale", "el");
    ctl_ok(w, "member add alice", "member", "add", "alice", NULL, NULL, NULL, NULL);
    ctl_ok(w, "member add bob", "member", "add", "bob", NULL, NULL, NULL, NULL);
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

static cpos_t *till(world_t *w, size_t agent)
{
    cpos_t *pos = cpos_new(w->agents[agent].endpoint, "till-1");
    if (pos == NULL)
        fail_msg("cpos_new(%s): expected a till, got NULL", w->agents[agent].endpoint);
    cpos_set_timeout(pos, CALL_TIMEOUT_MS);
    return pos;
}

static void expect_till(const char *what, int rc, const cpos_result_t *r, int code,
                        const char *text)
{
    char field[256];
    snprintf(field, sizeof field, "%s: call", what);
    EXPECT_EQ(field, CPOS_OK, rc);
    snprintf(field, sizeof field, "%s: code (text \"%s\")", what, r->text);
    EXPECT_EQ(field, code, r->code);
    snprintf(field, sizeof field, "%s: receipt text", what);
    EXPECT_STR(field, text, r->text);
}

/* Through the agents: fuel's tills in Romanian, grocer's in Greek, every kind of text. */
static void test_agents_localized(void **state)
{
    world_t *w = *state;
    cpos_t *fuel = till(w, 0), *grocer = till(w, 1);
    cpos_result_t r, again;
    /* 1,234.56 EUR at 2 points a euro: 2,469 points, grouped the Romanian way. */
    int rc = cpos_earn(fuel, "e1", "alice", 123456, "EUR", &r);
    expect_till("ro earn", rc, &r, RC_APPROVED, "Puncte câștigate: 2.469. Sold: 2.469");
    EXPECT_EQ("ro earn points", 2469, r.points);
    rc = cpos_burn(grocer, "b1", "alice", 1500, false, &r);
    expect_till("el burn", rc, &r, RC_APPROVED, "Εξαργυρώσατε πόντους: 1.500. Υπόλοιπο: 969");
    rc = cpos_burn(grocer, "b2", "alice", 5000, false, &r);
    expect_till("el decline 51", rc, &r, RC_INSUFFICIENT_POINTS,
                "Απορρίφθηκε 51: ανεπαρκείς πόντοι (υπόλοιπο 969, ζητήθηκαν 5.000)");
    rc = cpos_balance(fuel, "q1", "alice", &r);
    expect_till("ro balance", rc, &r, RC_APPROVED, "Sold puncte: 969");
    rc = cpos_balance(grocer, "q2", "alice", &r);
    expect_till("el balance", rc, &r, RC_APPROVED, "Υπόλοιπο πόντων: 969");
    rc = cpos_refund(grocer, "r1", "b1", 0, 0, &r);
    expect_till("el refund of a burn", rc, &r, RC_APPROVED,
                "Επιστροφή b1, πόντοι που επιστράφηκαν: 1.500. Υπόλοιπο: 2.469");
    rc = cpos_burn(fuel, "b3", "bob", 10, false, &r);
    expect_till("ro decline 51", rc, &r, RC_INSUFFICIENT_POINTS,
                "Refuzat 51: puncte insuficiente (sold 0, solicitate 10)");
    rc = cpos_earn(fuel, "e2", "zed", 1000, "EUR", &r);
    expect_till("ro decline 14", rc, &r, RC_UNKNOWN_MEMBER, "Refuzat 14: membru necunoscut zed");
    rc = cpos_earn(fuel, "e3", "alice", 1000, "USD", &r);
    expect_till("ro decline 13, the code's reason", rc, &r, RC_INVALID_AMOUNT,
                "Refuzat 13: sumă invalidă");
    rc = cpos_enroll(grocer, "n1", "carol", &r);
    expect_till("el enrol", rc, &r, RC_APPROVED, "Το μέλος carol εγγράφηκε");
    rc = cpos_enroll(grocer, "n2", "carol", &r);
    expect_till("el enrol again", rc, &r, RC_INVALID_TRANSACTION,
                "Απορρίφθηκε 12: το μέλος carol είναι ήδη εγγεγραμμένο");
    /* A repeat of the earn: the original answer, the same bytes. */
    rc = cpos_earn(fuel, "e1", "alice", 123456, "EUR", &again);
    expect_till("ro earn repeated", rc, &again, RC_APPROVED,
                "Puncte câștigate: 2.469. Sold: 2.469");
    EXPECT_TRUE("ro earn repeated is a replay", again.replay);
    rc = cpos_void(fuel, "v1", "e1", &r);
    expect_till("ro void of an earn", rc, &r, RC_APPROVED,
                "Anulare e1, puncte retrase: 2.469. Sold: 0");
    rc = cpos_void(fuel, "v2", "e1", &r);
    expect_till("ro void again", rc, &r, RC_INVALID_TRANSACTION, "Refuzat 12: e1 a fost anulată");
    cpos_destroy(&fuel);
    cpos_destroy(&grocer);
    char out[OUT_BYTES];
    rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("coalitionctl verify: expected exit 0, got %d: %s", rc, out);
}

/* The broker away: the agents write their own texts in the language their latest answer
 * named (fuel ro, grocer el). */
static void test_agent_texts_offline(void **state)
{
    world_t *w = *state;
    cpos_t *fuel = till(w, 0), *grocer = till(w, 1);
    cpos_result_t r;
    int rc = cpos_earn(fuel, "e1", "alice", 1000, "EUR", &r);
    expect_till("ro earn", rc, &r, RC_APPROVED, "Puncte câștigate: 20. Sold: 20");
    rc = cpos_balance(grocer, "q1", "alice", &r);
    expect_till("el balance", rc, &r, RC_APPROVED, "Υπόλοιπο πόντων: 20");
    EXPECT_EQ("broker stopped", 0, world_stop_broker(w, SIGTERM));
    rc = cpos_earn(fuel, "e2", "alice", 1000, "EUR", &r);
    expect_till("ro earn stored offline", rc, &r, RC_UNAVAILABLE,
                "Salvat offline: sistemul central nu răspunde; va fi trimis la reconectare");
    EXPECT_TRUE("ro earn offline", r.offline);
    rc = cpos_burn(grocer, "b1", "alice", 5, false, &r);
    expect_till("el burn, 91", rc, &r, RC_UNAVAILABLE,
                "Απορρίφθηκε 91: χωρίς σύνδεση με το κέντρο· καμία καταχώριση");
    EXPECT_FALSE("el burn not offline", r.offline);
    cpos_destroy(&grocer);
    /* A restart with the broker still away: the language comes back from the journal. */
    EXPECT_EQ("grocer's agent stopped", 0, world_stop_agent(w, &w->agents[1], SIGTERM));
    world_restart_agent(w, &w->agents[1]);
    grocer = till(w, 1);
    rc = cpos_burn(grocer, "b2", "alice", 5, false, &r);
    expect_till("el burn after a restart, 91", rc, &r, RC_UNAVAILABLE,
                "Απορρίφθηκε 91: χωρίς σύνδεση με το κέντρο· καμία καταχώριση");
    cpos_destroy(&fuel);
    cpos_destroy(&grocer);
}

/* A replay names the locale of the answer it repeats, not the partner's language now: the
 * agent must not take it for the latest. grocer moves from el to ro; an el earn replayed
 * after a ro answer leaves the agent's own texts in ro. */
static void test_agent_locale_not_from_replay(void **state)
{
    world_t *w = *state;
    cpos_t *grocer = till(w, 1);
    cpos_result_t r;
    int rc = cpos_earn(grocer, "g1", "alice", 1000, "EUR", &r);
    expect_till("el earn", rc, &r, RC_APPROVED, "Νέοι πόντοι: 10. Υπόλοιπο: 10");
    sleep_ms(3); /* a contract "from now" a millisecond after the last one */
    ctl_ok(w, "contract set grocer --locale ro", "contract", "set", "grocer", "--from", "now",
           "--locale", "ro");
    rc = cpos_balance(grocer, "q1", "alice", &r);
    expect_till("ro balance", rc, &r, RC_APPROVED, "Sold puncte: 10");
    rc = cpos_earn(grocer, "g1", "alice", 1000, "EUR", &r);
    expect_till("el earn replayed", rc, &r, RC_APPROVED, "Νέοι πόντοι: 10. Υπόλοιπο: 10");
    EXPECT_TRUE("el earn replayed is a replay", r.replay);
    EXPECT_EQ("broker stopped", 0, world_stop_broker(w, SIGTERM));
    rc = cpos_burn(grocer, "b1", "alice", 5, false, &r);
    expect_till("ro burn, 91", rc, &r, RC_UNAVAILABLE,
                "Refuzat 91: sistemul central nu răspunde; nu s-a aplicat nimic");
    cpos_destroy(&grocer);
}

/* ---- straight to the broker, as "pharma" (Albanian) ----------------------------------- */

typedef struct req {
    envelope_t env;
    Coalition__EarnRequest earn;
    Coalition__VoidRequest void_request;
    Coalition__ContractSetRequest contract;
    Coalition__PartnerAddRequest partner_add;
} req_t;

static envelope_t *req_init(req_t *r, const char *partner_id, const char *txn_id)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner_id;
    r->env.terminal_id = "till-1";
    r->env.site_id = "main";
    r->env.txn_id = (char *)txn_id;
    r->env.client_time_ms = clock_wall_ms();
    return &r->env;
}

static envelope_t *earn_req(req_t *r, const char *txn_id, int64_t amount_minor)
{
    req_init(r, "pharma", txn_id);
    coalition__earn_request__init(&r->earn);
    r->earn.member_id = "alice";
    r->earn.amount_minor = amount_minor;
    r->earn.currency = "EUR";
    r->env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r->env.earn = &r->earn;
    return &r->env;
}

static envelope_t *void_req(req_t *r, const char *txn_id, const char *original_txn_id)
{
    req_init(r, "pharma", txn_id);
    coalition__void_request__init(&r->void_request);
    r->void_request.original_txn_id = (char *)original_txn_id;
    r->env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r->env.void_request = &r->void_request;
    return &r->env;
}

static void call_expect(client_t *c, const char *what, const envelope_t *env, int code, bool replay,
                        const char *text)
{
    authorization_t *auth = NULL;
    int rc = client_call(c, env, CALL_TIMEOUT_MS, &auth);
    if (rc != CL_OK)
        fail_msg("%s: expected an answer, got %d (%s)", what, rc, cl_strerror(rc));
    char field[256];
    snprintf(field, sizeof field, "%s: code (text \"%s\")", what, auth->text);
    EXPECT_EQ(field, code, auth->code);
    snprintf(field, sizeof field, "%s: replay", what);
    EXPECT_EQ(field, replay, auth->replay);
    snprintf(field, sizeof field, "%s: text", what);
    EXPECT_STR(field, text, auth->text);
    wire_auth_free(auth);
}

static void test_broker_replay_keeps_text(void **state)
{
    world_t *w = *state;
    client_t *c = NULL;
    EXPECT_EQ("world_client pharma", CL_OK, world_client(w, "pharma", &c));
    req_t r;
    const char *earned = "Pikë të fituara: 12" NB "345. Gjendja: 12" NB "345";
    call_expect(c, "sq earn", earn_req(&r, "p1", 1234500), RC_APPROVED, false, earned);
    call_expect(c, "sq earn replayed", earn_req(&r, "p1", 1234500), RC_APPROVED, true, earned);
    call_expect(c, "sq 94", earn_req(&r, "p1", 999), RC_DUPLICATE_KEY, false,
                "Refuzuar 94: ID-ja p1 është përdorur tashmë për një kërkesë tjetër");
    call_expect(c, "sq small earn: four digits stay together", earn_req(&r, "p2", 123400),
                RC_APPROVED, false, "Pikë të fituara: 1234. Gjendja: 13" NB "579");
    call_expect(c, "sq void", void_req(&r, "v1", "p1"), RC_APPROVED, false,
                "Anulim p1, pikë të zbritura: 12" NB "345. Gjendja: 1234");
    char reversed[RECEIPT_TEXT_BYTES_MAX];
    snprintf(reversed, sizeof reversed, "Anuluar më pas (anulim ose kthim): %s", earned);
    call_expect(c, "sq earn replayed after its void", earn_req(&r, "p1", 1234500), RC_APPROVED,
                true, reversed);
    /* The locale changes; what was applied keeps the text it was rendered with. */
    sleep_ms(3); /* a contract "from now" a millisecond after the last one */
    ctl_ok(w, "contract set pharma --locale en", "contract", "set", "pharma", "--from", "now",
           "--locale", "en");
    call_expect(c, "sq earn replayed under en", earn_req(&r, "p2", 123400), RC_APPROVED, true,
                "Pikë të fituara: 1234. Gjendja: 13" NB "579");
    call_expect(c, "en earn", earn_req(&r, "p3", 123400), RC_APPROVED, false,
                "Earned 1,234 points. Balance 2,468");
    /* A reversed original replayed under en: its text and the prefix saying it was
     * reversed in one language, the one the stored answer names (sq), not half each. */
    call_expect(c, "sq earn replayed after its void, under en", earn_req(&r, "p1", 1234500),
                RC_APPROVED, true, reversed);
    client_destroy(&c);
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "--json", "contract", "show", "pharma", NULL);
    EXPECT_EQ("contract show", 0, rc);
    EXPECT_CONTAINS("the first contract in sq", "\"locale\":\"sq\"", out);
    EXPECT_CONTAINS("the second in en", "\"locale\":\"en\"", out);
    rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("coalitionctl verify: expected exit 0, got %d: %s", rc, out);
}

/* ---- unknown locales: refused, nothing stored ---------------------------------------- */

static void admin_expect_refused(world_t *w, const char *what, const envelope_t *env)
{
    client_t *c = NULL;
    EXPECT_EQ("admin client", CL_OK, client_new(&c, w->admin_endpoint));
    authorization_t *auth = NULL;
    int rc = client_call(c, env, CALL_TIMEOUT_MS, &auth);
    client_destroy(&c);
    if (rc != CL_OK)
        fail_msg("%s: expected an answer, got %d", what, rc);
    char field[256];
    snprintf(field, sizeof field, "%s: code (text \"%s\")", what, auth->text);
    EXPECT_EQ(field, RC_FORMAT_ERROR, auth->code);
    snprintf(field, sizeof field, "%s: text", what);
    EXPECT_CONTAINS(field, "unknown locale (known: en, ro, cs, el, sq)", auth->text);
    EXPECT_EQ("no sequence", 0, auth->seq);
    wire_auth_free(auth);
}

static void test_unknown_locale_refused(void **state)
{
    world_t *w = *state;
    uint64_t before = last_seq(w);
    char out[OUT_BYTES];
    sleep_ms(3);
    int rc = world_ctl(w, out, sizeof out, "contract", "set", "fuel", "--from", "now", "--locale",
                       "fr", NULL);
    EXPECT_EQ("contract set --locale fr: usage error", 2, rc);
    rc = world_ctl(w, out, sizeof out, "contract", "set", "fuel", "--from", "now", "--locale", "RO",
                   NULL);
    EXPECT_EQ("contract set --locale RO (codes are lower case)", 2, rc);
    rc = world_ctl(w, out, sizeof out, "partner", "add", "shop", "--earn-rate", "1", "--locale",
                   "el_GR", NULL);
    EXPECT_EQ("partner add --locale el_GR: usage error", 2, rc);
    /* The broker refuses on its own, whatever a client sends. */
    req_t r;
    char txn[64];
    snprintf(txn, sizeof txn, "raw-%" PRId64, clock_wall_ms());
    envelope_t *env = req_init(&r, OPERATOR_PARTNER_ID, txn);
    env->site_id = OPERATOR_SITE_ID;
    coalition__contract_set_request__init(&r.contract);
    r.contract.partner_id = "fuel";
    r.contract.earn_rate_milli = 2000;
    r.contract.currency = "EUR";
    r.contract.funding = COALITION__FUNDING__FUNDING_POSTPAID;
    r.contract.locale = "xx";
    env->body_case = COALITION__ENVELOPE__BODY_CONTRACT_SET;
    env->contract_set = &r.contract;
    admin_expect_refused(w, "raw contract set locale xx", env);
    r.contract.locale = "ro-RO-extra-long-code";
    snprintf(txn, sizeof txn, "raw1-%" PRId64, clock_wall_ms());
    admin_expect_refused(w, "raw contract set, a long code", env);
    snprintf(txn, sizeof txn, "raw2-%" PRId64, clock_wall_ms());
    env = req_init(&r, OPERATOR_PARTNER_ID, txn);
    env->site_id = OPERATOR_SITE_ID;
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = "shop";
    r.partner_add.earn_rate_milli = 1000;
    r.partner_add.currency = "EUR";
    r.partner_add.locale = "EN";
    env->body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    env->partner_add = &r.partner_add;
    admin_expect_refused(w, "raw partner add locale EN", env);
    EXPECT_EQ("nothing stored", before, last_seq(w));
    /* fuel still answers in Romanian. */
    cpos_t *fuel = till(w, 0);
    cpos_result_t res;
    rc = cpos_balance(fuel, "q9", "alice", &res);
    expect_till("ro balance after the refusals", rc, &res, RC_APPROVED, "Sold puncte: 0");
    cpos_destroy(&fuel);
}

/* The HTTP API carries the Greek text as UTF-8 JSON; Python's standard library reads it. */
static const char HTTP_EARN_PY[] =
    "import json, sys, urllib.request\n"
    "req = urllib.request.Request(sys.argv[1] + '/v1/earn', method='POST',\n"
    "    data=json.dumps({'member': 'alice', 'amount': 150000}).encode(),\n"
    "    headers={'Content-Type': 'application/json', 'Idempotency-Key': 'h1'})\n"
    "reply = json.load(urllib.request.urlopen(req, timeout=10))\n"
    "sys.stdout.buffer.write((reply['code'] + '|' + reply['text']).encode('utf-8'))\n";

static void test_http_reply_in_greek(void **state)
{
    (void)state;
    world_t w = {0};
    world_init(&w);
    char address[64], base[96], out[OUT_BYTES];
    int port = harness_free_port();
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    w.agent_args[0] = "--http";
    w.agent_args[1] = address;
    world_start_broker(&w);
    ctl_ok(&w, "partner add grocer (el)", "partner", "add", "grocer", "--earn-rate", "1",
           "--locale", "el");
    ctl_ok(&w, "member add alice", "member", "add", "alice", NULL, NULL, NULL, NULL);
    world_start_agent(&w, "grocer");
    char *argv[] = {"/usr/bin/env", "python3", "-c", (char *)HTTP_EARN_PY, base, NULL};
    int rc = harness_run(argv, out, sizeof out);
    if (rc != 0)
        fail_msg("python3 POST /v1/earn: expected exit 0, got %d: %s", rc, out);
    EXPECT_STR("HTTP earn: code and text", "00|Νέοι πόντοι: 1.500. Υπόλοιπο: 1.500", out);
    world_destroy(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_agents_localized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_texts_offline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_locale_not_from_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_replay_keeps_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_locale_refused, setup, teardown),
        cmocka_unit_test(test_http_reply_in_greek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
