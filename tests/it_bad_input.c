/* Integration tests of bad input sent straight to the broker's partner socket (no agent):
 * every malformed or refused request gets its specific response code, the broker keeps
 * serving, and the ledger is unchanged: the same last sequence and the same balance in
 * every account, read through a fresh read-only open before and after each case.
 * The tests share one world and run in order; the last one proves the sequence never moved. */
#include "harness.h"

#include "amount.h"
#include "client.h"
#include "clock.h"
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
#include <time.h>
#include <zmq.h>

#define OUT_BYTES 4096
#define LOG_BYTES 65536
#define CALL_TIMEOUT_MS 5000
#define SILENCE_MS 500
#define LOG_WAIT_MS 5000
#define POLL_STEP_MS 20
#define ACCOUNTS_MAX 16
#define OVERSIZE_RAW_BYTES 3000
#define OVERSIZE_MEMBER_BYTES 2500
#define OVER_SOCKET_LIMIT_BYTES 70000
#define MULTIPART_FRAMES 4
/* Setup: partner fuel = seq 1, grocer = 2, member alice = 3, bob = 4. */
#define SETUP_LAST_SEQ 6u /* 2 partners, 2 members, 2 keys */

typedef struct fixture {
    world_t world;
    client_t *client;
} fixture_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- ledger snapshots ------------------------------------------------------------------ */

typedef struct snapshot {
    uint64_t last_seq;
    size_t count;
    char names[ACCOUNTS_MAX][ACCOUNT_NAME_BYTES_MAX];
    int64_t balances[ACCOUNTS_MAX];
} snapshot_t;

static int collect_account(const char *account, int64_t balance, void *ctx)
{
    snapshot_t *s = ctx;
    if (s->count == ACCOUNTS_MAX)
        return CL_ERR_INVALID;
    snprintf(s->names[s->count], sizeof s->names[s->count], "%s", account);
    s->balances[s->count] = balance;
    s->count++;
    return CL_OK;
}

static void take_snapshot(const world_t *w, snapshot_t *s)
{
    memset(s, 0, sizeof *s);
    ledger_t *l = NULL;
    int rc = ledger_open(&l, w->ledger, STORE_READ_ONLY);
    if (rc != CL_OK)
        fail_msg("ledger_open(%s, read-only): expected %d, got %d (%s)", w->ledger, CL_OK, rc,
                 cl_strerror(rc));
    s->last_seq = ledger_last_seq(l);
    rc = ledger_accounts_foreach(l, collect_account, s);
    ledger_destroy(&l);
    if (rc != CL_OK)
        fail_msg("ledger_accounts_foreach: expected %d, got %d", CL_OK, rc);
}

static void expect_unchanged(const char *what, const world_t *w, const snapshot_t *before)
{
    snapshot_t after;
    char field[256];
    take_snapshot(w, &after);
    snprintf(field, sizeof field, "%s: ledger last seq", what);
    EXPECT_EQ(field, before->last_seq, after.last_seq);
    snprintf(field, sizeof field, "%s: number of accounts", what);
    EXPECT_EQ(field, before->count, after.count);
    for (size_t i = 0; i < before->count; i++) {
        snprintf(field, sizeof field, "%s: account #%zu", what, i);
        EXPECT_STR(field, before->names[i], after.names[i]);
        snprintf(field, sizeof field, "%s: balance of %s", what, before->names[i]);
        EXPECT_EQ(field, before->balances[i], after.balances[i]);
    }
}

/* ---- requests -------------------------------------------------------------------------- */

/* A well-formed earn from fuel for alice; callers spoil one field. `body` must outlive `env`. */
static void earn_envelope(envelope_t *env, Coalition__EarnRequest *body, const char *txn_id)
{
    coalition__envelope__init(env);
    coalition__earn_request__init(body);
    env->version = WIRE_VERSION;
    env->partner_id = "fuel";
    env->terminal_id = "till-1";
    env->site_id = "main";
    env->txn_id = (char *)txn_id;
    env->client_time_ms = clock_wall_ms();
    body->member_id = "alice";
    body->amount_minor = 1234;
    body->currency = "EUR";
    env->body_case = COALITION__ENVELOPE__BODY_EARN;
    env->earn = body;
}

/* The reply every refusal has: this code, nothing applied, the txn id echoed. */
static void expect_refusal(const char *what, const authorization_t *auth, int code,
                           const char *txn_id)
{
    char field[256], prefix[32];
    snprintf(field, sizeof field, "%s: response code (text \"%s\")", what, auth->text);
    EXPECT_EQ(field, code, auth->code);
    snprintf(field, sizeof field, "%s: seq", what);
    EXPECT_EQ(field, 0, auth->seq);
    snprintf(field, sizeof field, "%s: points", what);
    EXPECT_EQ(field, 0, auth->points);
    snprintf(field, sizeof field, "%s: auth code", what);
    EXPECT_STR(field, "", auth->auth_code);
    snprintf(field, sizeof field, "%s: replay", what);
    EXPECT_EQ(field, false, auth->replay);
    snprintf(field, sizeof field, "%s: txn id echoed", what);
    EXPECT_STR(field, txn_id, auth->txn_id);
    snprintf(prefix, sizeof prefix, "Declined %02d: ", code);
    snprintf(field, sizeof field, "%s: receipt text starts with \"%s\"", what, prefix);
    if (strncmp(auth->text, prefix, strlen(prefix)) != 0)
        fail_msg("%s: expected \"%s...\", got \"%s\"", field, prefix, auth->text);
}

/* Send `env` and expect refusal `code`; the ledger must not move. */
static void expect_envelope_refused(fixture_t *f, const char *what, const envelope_t *env, int code)
{
    snapshot_t before;
    take_snapshot(&f->world, &before);
    authorization_t *auth = NULL;
    /* A reply echoes only valid ids (never bytes that are not printable ASCII): a
     * malformed txn id comes back empty, so such a reply is taken as the next one. */
    bool echoed = wire_id_valid(env->txn_id, TXN_ID_LEN_MAX);
    int rc = CL_OK;
    if (echoed) {
        rc = client_call(f->client, env, CALL_TIMEOUT_MS, &auth);
    } else {
        size_t len = 0;
        uint8_t *buf = wire_pack_envelope(env, &len);
        assert_non_null(buf);
        rc = client_call_raw(f->client, buf, len, CALL_TIMEOUT_MS, &auth);
        free(buf);
    }
    if (rc != CL_OK)
        fail_msg("%s: expected a reply within %d ms, got rc %d (%s)", what, CALL_TIMEOUT_MS, rc,
                 cl_strerror(rc));
    expect_refusal(what, auth, code, echoed ? env->txn_id : "");
    wire_auth_free(auth);
    expect_unchanged(what, &f->world, &before);
}

/* Send raw bytes and expect a format error; the ledger must not move. */
static void expect_raw_refused(fixture_t *f, const char *what, const void *buf, size_t len)
{
    snapshot_t before;
    take_snapshot(&f->world, &before);
    authorization_t *auth = NULL;
    int rc = client_call_raw(f->client, buf, len, CALL_TIMEOUT_MS, &auth);
    if (rc != CL_OK)
        fail_msg("%s: expected a reply within %d ms, got rc %d (%s)", what, CALL_TIMEOUT_MS, rc,
                 cl_strerror(rc));
    expect_refusal(what, auth, RC_FORMAT_ERROR, "");
    wire_auth_free(auth);
    expect_unchanged(what, &f->world, &before);
}

/* The broker still answers: a balance inquiry for alice (which never touches the writer). */
static void expect_still_serving(fixture_t *f, const char *what)
{
    envelope_t env;
    Coalition__BalanceRequest body = COALITION__BALANCE_REQUEST__INIT;
    coalition__envelope__init(&env);
    env.version = WIRE_VERSION;
    env.partner_id = "fuel";
    env.terminal_id = "till-1";
    env.site_id = "main";
    env.txn_id = "alive-probe";
    body.member_id = "alice";
    env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    env.balance = &body;
    client_t *c = NULL;
    authorization_t *auth = NULL;
    int rc = world_client(&f->world, "fuel", &c);
    if (rc == CL_OK)
        rc = client_call(c, &env, CALL_TIMEOUT_MS, &auth);
    client_destroy(&c);
    if (rc != CL_OK || auth == NULL) {
        fail_msg("%s: broker expected to answer a balance inquiry, got rc %d (%s)", what, rc,
                 cl_strerror(rc));
        return;
    }
    char field[256];
    snprintf(field, sizeof field, "%s: balance inquiry code", what);
    EXPECT_EQ(field, RC_APPROVED, auth->code);
    snprintf(field, sizeof field, "%s: balance of alice", what);
    EXPECT_EQ(field, 0, auth->balance);
    wire_auth_free(auth);
}

/* ---- the world ------------------------------------------------------------------------- */

static void expect_ctl_ok(const char *what, int rc, const char *out)
{
    if (rc != 0)
        fail_msg("%s: expected exit 0, got %d: %s", what, rc, out);
}

static int group_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    world_t *w = &f->world;
    char out[OUT_BYTES];
    world_init(w);
    world_start_broker(w);
    int rc = world_ctl(w, out, sizeof out, "partner", "add", "fuel", "--earn-rate", "2",
                       "--currency", "EUR", NULL);
    expect_ctl_ok("partner add fuel", rc, out);
    rc = world_ctl(w, out, sizeof out, "partner", "add", "grocer", "--earn-rate", "1.5",
                   "--currency", "EUR", NULL);
    expect_ctl_ok("partner add grocer", rc, out);
    rc = world_ctl(w, out, sizeof out, "member", "add", "alice", NULL);
    expect_ctl_ok("member add alice", rc, out);
    rc = world_ctl(w, out, sizeof out, "member", "add", "bob", NULL);
    expect_ctl_ok("member add bob", rc, out);
    world_key(w, "fuel", "partner");
    world_key(w, "grocer", "partner");
    if (world_client(w, "fuel", &f->client) != CL_OK) {
        fprintf(stderr, "cannot connect a client to %s\n", w->broker_endpoint);
        return -1;
    }
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fixture_t *f = *state;
    char out[OUT_BYTES];
    int rc = world_ctl(&f->world, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fprintf(stderr, "coalitionctl verify at the end: expected exit 0, got %d: %s\n", rc, out);
    client_destroy(&f->client);
    world_destroy(&f->world);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* ---- malformed messages ---------------------------------------------------------------- */

static void test_setup_sequence(void **state)
{
    fixture_t *f = *state;
    snapshot_t s;
    take_snapshot(&f->world, &s);
    EXPECT_EQ("ledger last seq after setup", SETUP_LAST_SEQ, s.last_seq);
    EXPECT_EQ("accounts after setup (breakage, 2 members, 2 x 2 partner accounts)", 7, s.count);
}

static void test_garbage_bytes(void **state)
{
    fixture_t *f = *state;
    static const uint8_t ff[] = {0xff, 0xff, 0xff};
    static const uint8_t short_string[] = {0x12, 0x05, 'f', 'u'}; /* partner_id cut short */
    static const uint8_t bad_wire_type[] = {0x0f, 0x01, 0x02, 0x03};
    static const char text[] = "GET / HTTP/1.1\r\nHost: broker\r\n\r\n";
    expect_raw_refused(f, "garbage ff ff ff", ff, sizeof ff);
    expect_raw_refused(f, "garbage: string longer than the message", short_string,
                       sizeof short_string);
    expect_raw_refused(f, "garbage: reserved wire type", bad_wire_type, sizeof bad_wire_type);
    expect_raw_refused(f, "garbage: an HTTP request", text, strlen(text));
}

static void test_truncated_envelope(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "trunc-1");
    size_t len = 0;
    uint8_t *buf = wire_pack_envelope(&env, &len);
    assert_non_null(buf);
    expect_raw_refused(f, "envelope missing its last byte", buf, len - 1);
    expect_raw_refused(f, "envelope cut in half", buf, len / 2);
    expect_raw_refused(f, "envelope cut to one byte", buf, 1);
    free(buf);
}

static void test_oversized_envelope(void **state)
{
    fixture_t *f = *state;
    static uint8_t raw[OVERSIZE_RAW_BYTES];
    memset(raw, 'x', sizeof raw);
    expect_raw_refused(f, "3000 raw bytes", raw, sizeof raw);

    /* A real envelope, over WIRE_MESSAGE_BYTES_MAX because of a padded member id. */
    static char member[OVERSIZE_MEMBER_BYTES + 1];
    memset(member, 'm', OVERSIZE_MEMBER_BYTES);
    member[OVERSIZE_MEMBER_BYTES] = '\0';
    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "big-1");
    body.member_id = member;
    size_t len = 0;
    uint8_t *buf = wire_pack_envelope(&env, &len);
    assert_non_null(buf);
    if (len <= WIRE_MESSAGE_BYTES_MAX)
        fail_msg("padded envelope: expected over %d bytes, got %zu", WIRE_MESSAGE_BYTES_MAX, len);
    expect_raw_refused(f, "envelope over 2048 bytes", buf, len);
    free(buf);
}

static void test_empty_frame(void **state)
{
    fixture_t *f = *state;
    /* An empty payload is answered like any other undecodable message. */
    expect_raw_refused(f, "empty message frame", "", 0);
}

/* Over the socket's ZMQ_MAXMSGSIZE libzmq drops the connection: no reply, nothing changes. */
static void test_over_socket_limit(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    take_snapshot(&f->world, &before);
    uint8_t *huge = malloc(OVER_SOCKET_LIMIT_BYTES);
    assert_non_null(huge);
    memset(huge, 'x', OVER_SOCKET_LIMIT_BYTES);
    client_t *c = NULL;
    authorization_t *auth = NULL;
    EXPECT_EQ("world_client", CL_OK, world_client(&f->world, "fuel", &c));
    int rc = client_call_raw(c, huge, OVER_SOCKET_LIMIT_BYTES, SILENCE_MS, &auth);
    client_destroy(&c);
    free(huge);
    if (rc != CL_ERR_TIMEOUT)
        fail_msg("70000-byte message: expected no reply (rc %d), got rc %d, code %d",
                 CL_ERR_TIMEOUT, rc, auth != NULL ? (int)auth->code : -1);
    expect_unchanged("70000-byte message", &f->world, &before);
    expect_still_serving(f, "after a 70000-byte message");
}

/* ---- refused requests ------------------------------------------------------------------ */

static void test_unknown_partner(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "unknown-partner-1");
    env.partner_id = "nobody";
    /* Identity comes from the key: fuel's key naming another partner is refused 57. */
    expect_envelope_refused(f, "earn naming another partner than its key's", &env,
                            RC_NOT_PERMITTED);
}

static void test_bad_amounts(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "amount-zero");
    body.amount_minor = 0;
    expect_envelope_refused(f, "earn of zero", &env, RC_INVALID_AMOUNT);

    earn_envelope(&env, &body, "amount-negative");
    body.amount_minor = -1234;
    expect_envelope_refused(f, "earn of a negative amount", &env, RC_INVALID_AMOUNT);

    earn_envelope(&env, &body, "amount-over-max");
    body.amount_minor = AMOUNT_MINOR_MAX + 1;
    expect_envelope_refused(f, "earn over AMOUNT_MINOR_MAX", &env, RC_EXCEEDS_LIMIT);

    earn_envelope(&env, &body, "currency-unknown");
    body.currency = "ZZZ";
    expect_envelope_refused(f, "earn in an unknown currency", &env, RC_INVALID_AMOUNT);

    earn_envelope(&env, &body, "currency-empty");
    body.currency = "";
    expect_envelope_refused(f, "earn without a currency", &env, RC_INVALID_AMOUNT);

    earn_envelope(&env, &body, "currency-other");
    body.currency = "USD";
    expect_envelope_refused(f, "earn in USD at a EUR partner", &env, RC_INVALID_AMOUNT);
}

static void test_burn_over_points_max(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest unused;
    Coalition__BurnRequest body = COALITION__BURN_REQUEST__INIT;
    earn_envelope(&env, &unused, "burn-over-max");
    body.member_id = "alice";
    body.points = POINTS_MAX + 1;
    env.body_case = COALITION__ENVELOPE__BODY_BURN;
    env.burn = &body;
    expect_envelope_refused(f, "burn over POINTS_MAX", &env, RC_EXCEEDS_LIMIT);

    body.points = 0;
    env.txn_id = "burn-zero";
    expect_envelope_refused(f, "burn of zero points", &env, RC_INVALID_AMOUNT);
}

static void test_bad_txn_ids(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "");
    expect_envelope_refused(f, "earn without a txn id", &env, RC_FORMAT_ERROR);

    char long_id[TXN_ID_LEN_MAX + 2];
    memset(long_id, 't', TXN_ID_LEN_MAX + 1);
    long_id[TXN_ID_LEN_MAX + 1] = '\0';
    earn_envelope(&env, &body, long_id);
    expect_envelope_refused(f, "earn with a 65-byte txn id", &env, RC_FORMAT_ERROR);

    earn_envelope(&env, &body, "has space");
    expect_envelope_refused(f, "earn with a space in its txn id", &env, RC_FORMAT_ERROR);

    earn_envelope(&env, &body, "tab\there");
    expect_envelope_refused(f, "earn with a tab in its txn id", &env, RC_FORMAT_ERROR);
}

static void test_bad_envelope_fields(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "version-2");
    env.version = WIRE_VERSION + 1;
    expect_envelope_refused(f, "earn with protocol version 2", &env, RC_FORMAT_ERROR);

    earn_envelope(&env, &body, "version-0");
    env.version = 0;
    expect_envelope_refused(f, "earn without a protocol version", &env, RC_FORMAT_ERROR);

    earn_envelope(&env, &body, "no-terminal");
    env.terminal_id = "";
    env.site_id = "main";
    expect_envelope_refused(f, "earn without a terminal id", &env, RC_FORMAT_ERROR);

    earn_envelope(&env, &body, "no-member");
    body.member_id = "";
    expect_envelope_refused(f, "earn without a member id", &env, RC_FORMAT_ERROR);

    earn_envelope(&env, &body, "no-body");
    env.body_case = COALITION__ENVELOPE__BODY__NOT_SET;
    env.earn = NULL;
    expect_envelope_refused(f, "envelope without a body", &env, RC_FORMAT_ERROR);
}

static void test_operator_requests_on_partner_socket(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest unused;
    Coalition__PartnerAddRequest body = COALITION__PARTNER_ADD_REQUEST__INIT;
    earn_envelope(&env, &unused, "partner-add-1");
    body.partner_id = "pharmacy";
    body.earn_rate_milli = 1000;
    body.currency = "EUR";
    env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    env.partner_add = &body;
    expect_envelope_refused(f, "partner_add from a partner", &env, RC_NOT_PERMITTED);

    env.partner_id = OPERATOR_PARTNER_ID;
    env.txn_id = "partner-add-2";
    expect_envelope_refused(f, "partner_add as the operator on the partner socket", &env,
                            RC_NOT_PERMITTED);

    Coalition__EarnRequest earn;
    earn_envelope(&env, &earn, "operator-earn");
    env.partner_id = OPERATOR_PARTNER_ID;
    expect_envelope_refused(f, "earn as the operator on the partner socket", &env,
                            RC_NOT_PERMITTED);
}

static void test_unknown_member(void **state)
{
    fixture_t *f = *state;
    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "unknown-member-1");
    body.member_id = "mallory";
    expect_envelope_refused(f, "earn for an unknown member", &env, RC_UNKNOWN_MEMBER);
}

/* ---- framing --------------------------------------------------------------------------- */

static size_t log_count(const world_t *w, const char *needle)
{
    static char log[LOG_BYTES];
    char *argv[] = {"/bin/cat", (char *)w->broker.log_path, NULL};
    harness_run(argv, log, sizeof log);
    size_t n = 0;
    for (const char *p = strstr(log, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_multipart_dropped(void **state)
{
    fixture_t *f = *state;
    const char *needle = "dropped a message";
    size_t drops_before = log_count(&f->world, needle);
    snapshot_t before;
    take_snapshot(&f->world, &before);

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger_ms = 0;
    assert_non_null(sock);
    EXPECT_EQ("zmq_setsockopt LINGER", 0,
              zmq_setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms));
    world_curve_socket(&f->world, sock, "grocer");
    EXPECT_EQ("zmq_connect", 0, zmq_connect(sock, f->world.broker_endpoint));
    static const char *const frames[MULTIPART_FRAMES] = {"one", "two", "three", "four"};
    for (int i = 0; i < MULTIPART_FRAMES; i++) {
        int flags = i + 1 < MULTIPART_FRAMES ? ZMQ_SNDMORE : 0;
        int len = (int)strlen(frames[i]);
        EXPECT_EQ("zmq_send of a frame", len, zmq_send(sock, frames[i], (size_t)len, flags));
    }
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    int ready = zmq_poll(&item, 1, SILENCE_MS);
    EXPECT_EQ("replies to a 4-frame message within 500 ms", 0, ready);

    /* The drop is logged (the log is written by another process: poll it). */
    int64_t deadline = clock_mono_ms() + LOG_WAIT_MS;
    size_t drops = log_count(&f->world, needle);
    while (drops == drops_before && clock_mono_ms() < deadline) {
        sleep_ms(POLL_STEP_MS);
        drops = log_count(&f->world, needle);
    }
    EXPECT_EQ("broker log lines \"dropped a message\"", drops_before + 1, drops);
    EXPECT_EQ("broker log names the frame count", 1,
              log_count(&f->world, "dropped a message of 5 frame(s)"));

    /* The same connection is still served. */
    envelope_t env;
    Coalition__BalanceRequest body = COALITION__BALANCE_REQUEST__INIT;
    coalition__envelope__init(&env);
    env.version = WIRE_VERSION;
    env.partner_id = "grocer";
    env.terminal_id = "till-2";
    env.site_id = "main";
    env.txn_id = "after-multipart";
    body.member_id = "bob";
    env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    env.balance = &body;
    size_t len = 0;
    uint8_t *buf = wire_pack_envelope(&env, &len);
    assert_non_null(buf);
    EXPECT_EQ("zmq_send of a balance inquiry", (int)len, zmq_send(sock, buf, len, 0));
    free(buf);
    ready = zmq_poll(&item, 1, CALL_TIMEOUT_MS);
    EXPECT_EQ("reply to the balance inquiry on the same connection", 1, ready);
    uint8_t reply[WIRE_MESSAGE_BYTES_MAX];
    int n = zmq_recv(sock, reply, sizeof reply, 0);
    if (n <= 0 || (size_t)n > sizeof reply)
        fail_msg("balance reply: expected 1..%d bytes, got %d", WIRE_MESSAGE_BYTES_MAX, n);
    authorization_t *auth = wire_auth_decode(reply, (size_t)n);
    assert_non_null(auth);
    EXPECT_STR("balance reply txn id", "after-multipart", auth->txn_id);
    EXPECT_EQ("balance reply code", RC_APPROVED, auth->code);
    EXPECT_EQ("balance of bob", 0, auth->balance);
    wire_auth_free(auth);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    expect_unchanged("4-frame message", &f->world, &before);
}

/* ---- and after all of that ------------------------------------------------------------- */

static void test_valid_earn_after_bad_input(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    take_snapshot(&f->world, &before);
    EXPECT_EQ("ledger last seq after all the bad input", SETUP_LAST_SEQ, before.last_seq);

    envelope_t env;
    Coalition__EarnRequest body;
    earn_envelope(&env, &body, "good-1");
    authorization_t *auth = NULL;
    int rc = client_call(f->client, &env, CALL_TIMEOUT_MS, &auth);
    if (rc != CL_OK)
        fail_msg("valid earn: expected a reply, got rc %d (%s)", rc, cl_strerror(rc));
    EXPECT_EQ("valid earn: code", RC_APPROVED, auth->code);
    EXPECT_EQ("valid earn: seq", before.last_seq + 1, auth->seq);
    EXPECT_EQ("valid earn: points (12.34 EUR at 2 per EUR)", 24, auth->points);
    EXPECT_EQ("valid earn: balance", 24, auth->balance);
    EXPECT_EQ("valid earn: replay", false, auth->replay);
    EXPECT_EQ("valid earn: auth code length", AUTH_CODE_LEN, strlen(auth->auth_code));
    wire_auth_free(auth);

    snapshot_t after;
    take_snapshot(&f->world, &after);
    EXPECT_EQ("ledger last seq after the valid earn", SETUP_LAST_SEQ + 1, after.last_seq);

    char out[OUT_BYTES];
    rc = world_ctl(&f->world, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("coalitionctl verify: expected exit 0, got %d: %s", rc, out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_setup_sequence),
        cmocka_unit_test(test_garbage_bytes),
        cmocka_unit_test(test_truncated_envelope),
        cmocka_unit_test(test_oversized_envelope),
        cmocka_unit_test(test_empty_frame),
        cmocka_unit_test(test_over_socket_limit),
        cmocka_unit_test(test_unknown_partner),
        cmocka_unit_test(test_bad_amounts),
        cmocka_unit_test(test_burn_over_points_max),
        cmocka_unit_test(test_bad_txn_ids),
        cmocka_unit_test(test_bad_envelope_fields),
        cmocka_unit_test(test_operator_requests_on_partner_socket),
        cmocka_unit_test(test_unknown_member),
        cmocka_unit_test(test_multipart_dropped),
        cmocka_unit_test(test_valid_earn_after_bad_input),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
