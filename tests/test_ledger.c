/* Unit tests for broker/ledger: the earn/burn/refund/void rules, idempotency, decline
 * codes, batches and the audit, against a real LMDB ledger in a fresh temp directory.
 * Requests go the way the broker sends them: wire_validate, wire_request_hash, then
 * ledger_apply inside a batch; replies are decoded and checked field by field. */
#include "ledger.h"
#include "amount.h"
#include "errors.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A field of a named request's reply. */
#define EXPECT_FIELD(what, field, expected, got)                                                   \
    do {                                                                                           \
        long long expected_ = (long long)(expected);                                               \
        long long got_ = (long long)(got);                                                         \
        if (expected_ != got_)                                                                     \
            fail_msg("%s: %s: expected %lld, got %lld", (what), (field), expected_, got_);         \
    } while (0)

#define EXPECT_OK(what, rc)                                                                        \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != CL_OK)                                                                          \
            fail_msg("%s: expected CL_OK, got %d (%s)", (what), rc_, cl_strerror(rc_));            \
    } while (0)

#define NOW_MS INT64_C(1700000000000)
#define TEMP_DIR_TEMPLATE "/tmp/test_ledger.XXXXXX"
#define PATH_BYTES 256
#define SNAPSHOT_ACCOUNTS_MAX 32
#define TEXT_BYTES (RECEIPT_TEXT_BYTES_MAX + 64)
/* Entries made by setup_world: two partner adds and two enrolments. */
#define WORLD_SEQ 4u
/* The txn id form of the partner agent's safety void of a burn (agent.c). */
#define SAFETY_VOID_TXN "~v0123456789abcdef0123456789abcd"
/* 10^12 JPY at 1000 points per yen: the most points one earn can credit. */

typedef struct {
    char dir[PATH_BYTES];
    ledger_t *l;
    unsigned op_count; /* operator txn ids op-1, op-2, ... */
} fixture_t;

/* One reply, decoded; `reached_ledger` is false when wire_validate refused it first. */
typedef struct {
    bool reached_ledger;
    int code;
    int64_t points;
    int64_t balance;
    uint64_t seq;
    bool replay;
    bool reversed;
    char auth_code[TEXT_BYTES];
    char text[TEXT_BYTES];
    char member_id[TEXT_BYTES];
    char txn_id[TEXT_BYTES];
    uint8_t raw[WIRE_MESSAGE_BYTES_MAX];
    size_t raw_len;
} result_t;

/* An envelope with room for every body; do not copy once a body is set. */
typedef struct {
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__RefundRequest refund;
    Coalition__VoidRequest void_request;
    Coalition__BalanceRequest balance;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerLimitsRequest limits;
    Coalition__PartnerAddRequest partner_add;
} request_t;

typedef struct {
    uint64_t seq;
    size_t count;
    char names[SNAPSHOT_ACCOUNTS_MAX][ACCOUNT_NAME_BYTES_MAX];
    int64_t balances[SNAPSHOT_ACCOUNTS_MAX];
} snapshot_t;

/* ---- fixture ----------------------------------------------------------------------- */

static int setup_empty(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s", TEMP_DIR_TEMPLATE);
    assert_non_null(mkdtemp(f->dir));
    EXPECT_OK("ledger_init", ledger_init(f->dir));
    EXPECT_OK("ledger_open", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    *state = f;
    return 0;
}

static void remove_in(const char *dir, const char *name)
{
    char path[PATH_BYTES + 16];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ledger_destroy(&f->l);
    remove_in(f->dir, "data.mdb");
    remove_in(f->dir, "lock.mdb");
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* ---- requests ---------------------------------------------------------------------- */

static envelope_t *request_init(request_t *r, const char *partner_id, const char *txn_id)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    snprintf(r->txn_id, sizeof r->txn_id, "%s", txn_id);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner_id;
    r->env.terminal_id = "till-1";
    r->env.site_id = strcmp(partner_id, OPERATOR_PARTNER_ID) == 0 ? OPERATOR_SITE_ID : "s1";
    r->env.txn_id = r->txn_id;
    r->env.client_time_ms = NOW_MS;
    return &r->env;
}

static void result_from_reply(result_t *res, const uint8_t *reply, size_t len)
{
    authorization_t *auth = wire_auth_decode(reply, len);
    assert_non_null(auth);
    assert_true(len <= sizeof res->raw);
    res->reached_ledger = true;
    res->code = auth->code;
    res->points = auth->points;
    res->balance = auth->balance;
    res->seq = auth->seq;
    res->replay = auth->replay;
    res->reversed = auth->reversed;
    snprintf(res->auth_code, sizeof res->auth_code, "%s", auth->auth_code);
    snprintf(res->text, sizeof res->text, "%s", auth->text);
    snprintf(res->member_id, sizeof res->member_id, "%s", auth->member_id);
    snprintf(res->txn_id, sizeof res->txn_id, "%s", auth->txn_id);
    memcpy(res->raw, reply, len);
    res->raw_len = len;
    wire_auth_free(auth);
}

/* Apply one request inside the batch the caller opened. */
static result_t apply_in_batch(fixture_t *f, const envelope_t *env)
{
    result_t res;
    memset(&res, 0, sizeof res);
    uint8_t hash[WIRE_HASH_BYTES];
    EXPECT_OK("wire_request_hash", wire_request_hash(env, hash));
    uint8_t *reply = NULL;
    size_t len = 0;
    EXPECT_OK("ledger_apply", ledger_apply(f->l, env, hash, NOW_MS, &reply, &len));
    result_from_reply(&res, reply, len);
    /* Every reply says what it answers: the request's site and hash. */
    authorization_t *auth = wire_auth_decode(reply, len);
    assert_non_null(auth);
    EXPECT_EQ("reply echoes the request hash length", WIRE_HASH_BYTES, auth->request_hash.len);
    if (memcmp(auth->request_hash.data, hash, WIRE_HASH_BYTES) != 0)
        fail_msg("reply to %s/%s echoes another request's hash", env->partner_id, env->txn_id);
    EXPECT_STR("reply echoes the site", env->site_id, auth->site_id);
    wire_auth_free(auth);
    free(reply);
    return res;
}

/* What the broker does with one request: validate, then apply it in a batch of its own. */
static result_t submit(fixture_t *f, const envelope_t *env, bool from_admin)
{
    char why[TEXT_BYTES] = "";
    int code = wire_validate(env, from_admin, why, sizeof why);
    if (code != RC_APPROVED) {
        result_t res;
        memset(&res, 0, sizeof res);
        res.code = code;
        snprintf(res.text, sizeof res.text, "%s", why);
        return res;
    }
    EXPECT_OK("ledger_batch_begin", ledger_batch_begin(f->l));
    result_t res = apply_in_batch(f, env);
    EXPECT_OK("ledger_batch_commit", ledger_batch_commit(f->l));
    return res;
}

static const char *next_op_txn(fixture_t *f, char buf[TXN_ID_LEN_MAX + 1])
{
    snprintf(buf, TXN_ID_LEN_MAX + 1, "op-%u", ++f->op_count);
    return buf;
}

static result_t add_partner(fixture_t *f, const char *partner, int64_t rate_milli,
                            const char *currency)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, next_op_txn(f, txn));
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = (char *)partner;
    r.partner_add.earn_rate_milli = rate_milli;
    r.partner_add.currency = (char *)currency;
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    return submit(f, &r.env, true);
}

/* The operator raises a partner's per-request limits to the wire's. */
static result_t set_limits(fixture_t *f, const char *partner, int64_t max_minor, int64_t max_points)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, next_op_txn(f, txn));
    coalition__partner_limits_request__init(&r.limits);
    r.limits.partner_id = (char *)partner;
    r.limits.max_amount_minor = max_minor;
    r.limits.max_points = max_points;
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_LIMITS;
    r.env.partner_limits = &r.limits;
    return submit(f, &r.env, true);
}

static envelope_t *enroll_req(request_t *r, const char *sender, const char *txn, const char *member)
{
    request_init(r, sender, txn);
    coalition__enroll_request__init(&r->enroll);
    r->enroll.member_id = (char *)member;
    r->env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    r->env.enroll = &r->enroll;
    return &r->env;
}

/* The operator enrols a member. */
static result_t enroll(fixture_t *f, const char *member)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    return submit(f, enroll_req(&r, OPERATOR_PARTNER_ID, next_op_txn(f, txn), member), true);
}

static envelope_t *earn_req(request_t *r, const char *partner, const char *txn, const char *member,
                            int64_t amount_minor, const char *currency)
{
    request_init(r, partner, txn);
    coalition__earn_request__init(&r->earn);
    r->earn.member_id = (char *)member;
    r->earn.amount_minor = amount_minor;
    r->earn.currency = (char *)currency;
    r->env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r->env.earn = &r->earn;
    return &r->env;
}

static result_t earn(fixture_t *f, const char *partner, const char *txn, const char *member,
                     int64_t amount_minor, const char *currency)
{
    request_t r;
    return submit(f, earn_req(&r, partner, txn, member, amount_minor, currency), false);
}

static envelope_t *burn_req(request_t *r, const char *partner, const char *txn, const char *member,
                            int64_t points, bool allow_partial)
{
    request_init(r, partner, txn);
    coalition__burn_request__init(&r->burn);
    r->burn.member_id = (char *)member;
    r->burn.points = points;
    r->burn.allow_partial = allow_partial;
    r->env.body_case = COALITION__ENVELOPE__BODY_BURN;
    r->env.burn = &r->burn;
    return &r->env;
}

static result_t burn(fixture_t *f, const char *partner, const char *txn, const char *member,
                     int64_t points, bool allow_partial)
{
    request_t r;
    return submit(f, burn_req(&r, partner, txn, member, points, allow_partial), false);
}

/* Refund money of an earn (amount_minor) or points of a burn (points); 0 = all left. */
static result_t refund(fixture_t *f, const char *partner, const char *txn, const char *original,
                       int64_t amount_minor, int64_t points)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__refund_request__init(&r.refund);
    r.refund.original_txn_id = (char *)original;
    r.refund.amount_minor = amount_minor;
    r.refund.points = points;
    r.env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    r.env.refund = &r.refund;
    return submit(f, &r.env, false);
}

static result_t void_(fixture_t *f, const char *partner, const char *txn, const char *original)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__void_request__init(&r.void_request);
    r.void_request.original_txn_id = (char *)original;
    r.env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r.env.void_request = &r.void_request;
    return submit(f, &r.env, false);
}

/* Balance inquiry through the reader path, as the front end answers it. */
static result_t inquire(fixture_t *f, const char *partner, const char *member)
{
    request_t r;
    request_init(&r, partner, "inquiry");
    coalition__balance_request__init(&r.balance);
    r.balance.member_id = (char *)member;
    r.env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    r.env.balance = &r.balance;
    char why[TEXT_BYTES];
    EXPECT_EQ("balance request validates", RC_APPROVED,
              wire_validate(&r.env, false, why, sizeof why));
    uint8_t *reply = NULL;
    size_t len = 0;
    uint8_t hash[WIRE_HASH_BYTES];
    EXPECT_OK("wire_request_hash", wire_request_hash(&r.env, hash));
    EXPECT_OK("ledger_inquire", ledger_inquire(f->l, &r.env, hash, &reply, &len));
    result_t res;
    memset(&res, 0, sizeof res);
    result_from_reply(&res, reply, len);
    free(reply);
    return res;
}

static int64_t balance(fixture_t *f, const char *partner, const char *member)
{
    result_t res = inquire(f, partner, member);
    if (res.code != RC_APPROVED)
        fail_msg("balance of %s: expected code 00, got %02d (%s)", member, res.code, res.text);
    return res.balance;
}

static int64_t account(fixture_t *f, const char *name)
{
    int64_t value = 0;
    EXPECT_OK(name, ledger_account_balance(f->l, name, &value));
    return value;
}

/* ---- expectations ------------------------------------------------------------------ */

static bool is_upper_hex6(const char *s)
{
    if (strlen(s) != AUTH_CODE_LEN)
        return false;
    for (size_t i = 0; i < AUTH_CODE_LEN; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    }
    return true;
}

/* An approval (00 or 10) written as journal entry `seq`. */
static void expect_approved(const char *what, const result_t *res, int code, int64_t points,
                            int64_t balance_after, uint64_t seq)
{
    if (res->code != code)
        fail_msg("%s: expected code %02d, got %02d (%s)", what, code, res->code, res->text);
    if (!res->reached_ledger)
        fail_msg("%s: expected the ledger to decide, got a validation refusal", what);
    EXPECT_FIELD(what, "points", points, res->points);
    EXPECT_FIELD(what, "balance", balance_after, res->balance);
    EXPECT_FIELD(what, "seq", seq, res->seq);
    EXPECT_FIELD(what, "replay", false, res->replay);
    if (!is_upper_hex6(res->auth_code))
        fail_msg("%s: expected a 6-char upper-hex auth code, got \"%s\"", what, res->auth_code);
}

/* A decline decided by the ledger: no points, no entry, no auth code. */
static void expect_declined(const char *what, const result_t *res, int code, int64_t balance_after)
{
    if (res->code != code)
        fail_msg("%s: expected code %02d, got %02d (%s)", what, code, res->code, res->text);
    if (!res->reached_ledger)
        fail_msg("%s: expected the ledger to decide, got a validation refusal (%s)", what,
                 res->text);
    EXPECT_FIELD(what, "points", 0, res->points);
    EXPECT_FIELD(what, "balance", balance_after, res->balance);
    EXPECT_FIELD(what, "seq", 0, res->seq);
    EXPECT_FIELD(what, "replay", false, res->replay);
    if (res->auth_code[0] != '\0')
        fail_msg("%s: auth_code: expected \"\", got \"%s\"", what, res->auth_code);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "Declined %02d: ", code);
    if (strncmp(res->text, prefix, strlen(prefix)) != 0)
        fail_msg("%s: expected text starting \"%s\", got \"%s\"", what, prefix, res->text);
}

/* Refused by wire_validate before the ledger saw it. */
static void expect_refused(const char *what, const result_t *res, int code)
{
    if (res->code != code)
        fail_msg("%s: expected code %02d, got %02d (%s)", what, code, res->code, res->text);
    if (res->reached_ledger)
        fail_msg("%s: expected wire_validate to refuse it, got a ledger reply", what);
}

static void expect_replay_of(const result_t *original, const result_t *replay)
{
    EXPECT_EQ("replay flag", true, replay->replay);
    EXPECT_EQ("code", original->code, replay->code);
    EXPECT_EQ("points", original->points, replay->points);
    EXPECT_EQ("balance", original->balance, replay->balance);
    EXPECT_EQ("seq", original->seq, replay->seq);
    EXPECT_STR("auth_code", original->auth_code, replay->auth_code);
    EXPECT_STR("text", original->text, replay->text);
    EXPECT_STR("member_id", original->member_id, replay->member_id);
    EXPECT_STR("txn_id", original->txn_id, replay->txn_id);
    /* Byte for byte the original once the replay flag is cleared. */
    authorization_t *auth = wire_auth_decode(replay->raw, replay->raw_len);
    assert_non_null(auth);
    auth->replay = false;
    size_t len = 0;
    uint8_t *packed = wire_pack_auth(auth, &len);
    wire_auth_free(auth);
    assert_non_null(packed);
    EXPECT_EQ("reply length", original->raw_len, len);
    bool same = memcmp(packed, original->raw, len) == 0;
    free(packed);
    if (!same)
        fail_msg("replay bytes: expected the original reply, got different bytes");
}

static int snapshot_account(const char *name, int64_t balance_value, void *ctx)
{
    snapshot_t *s = ctx;
    if (s->count == SNAPSHOT_ACCOUNTS_MAX)
        return CL_ERR_OVERFLOW;
    snprintf(s->names[s->count], ACCOUNT_NAME_BYTES_MAX, "%s", name);
    s->balances[s->count] = balance_value;
    s->count++;
    return CL_OK;
}

static void snapshot(fixture_t *f, snapshot_t *s)
{
    memset(s, 0, sizeof *s);
    s->seq = ledger_last_seq(f->l);
    EXPECT_OK("ledger_accounts_foreach", ledger_accounts_foreach(f->l, snapshot_account, s));
}

/* The ledger must be exactly as in `before`: sequence and every account. */
static void expect_unchanged(fixture_t *f, const snapshot_t *before)
{
    snapshot_t after;
    snapshot(f, &after);
    EXPECT_EQ("last seq", before->seq, after.seq);
    EXPECT_EQ("account count", before->count, after.count);
    for (size_t i = 0; i < before->count; i++) {
        EXPECT_STR("account name", before->names[i], after.names[i]);
        if (before->balances[i] != after.balances[i])
            fail_msg("account %s: expected %lld, got %lld", before->names[i],
                     (long long)before->balances[i], (long long)after.balances[i]);
    }
}

static void expect_verify_ok(fixture_t *f, uint64_t entries)
{
    char why[512];
    int rc = ledger_verify(f->l, why, sizeof why);
    if (rc != CL_OK)
        fail_msg("ledger_verify: expected CL_OK, got %d (%s): %s", rc, cl_strerror(rc), why);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%llu entries", (unsigned long long)entries);
    EXPECT_CONTAINS("verify report", prefix, why);
}

static void expect_verify_corrupt(fixture_t *f, const char *why_part)
{
    char why[512] = "";
    int rc = ledger_verify(f->l, why, sizeof why);
    if (rc != CL_ERR_CORRUPT)
        fail_msg("ledger_verify: expected CL_ERR_CORRUPT, got %d (%s): %s", rc, cl_strerror(rc),
                 why);
    EXPECT_CONTAINS("verify violation", why_part, why);
}

/* ---- world: fuel earns 2.000/EUR, grocer 1.500/EUR; members m1, m2 ------------------ */

static int setup_world(void **state)
{
    setup_empty(state);
    fixture_t *f = *state;
    result_t res = add_partner(f, "fuel", 2000, "EUR");
    expect_approved("add fuel", &res, RC_APPROVED, 0, 0, 1);
    res = add_partner(f, "grocer", 1500, "EUR");
    expect_approved("add grocer", &res, RC_APPROVED, 0, 0, 2);
    res = enroll(f, "m1");
    expect_approved("enroll m1", &res, RC_APPROVED, 0, 0, 3);
    res = enroll(f, "m2");
    expect_approved("enroll m2", &res, RC_APPROVED, 0, 0, WORLD_SEQ);
    return 0;
}

/* ---- setup and earn ---------------------------------------------------------------- */

static void partner_add_and_enroll_are_journal_entries(void **state)
{
    fixture_t *f = *state;
    EXPECT_EQ("last seq", WORLD_SEQ, ledger_last_seq(f->l));
    result_t res = enroll(f, "m3");
    expect_approved("enroll m3", &res, RC_APPROVED, 0, 0, WORLD_SEQ + 1);
    EXPECT_STR("text", "Member m3 enrolled", res.text);
    res = add_partner(f, "air", 12345, "JPY");
    expect_approved("add air", &res, RC_APPROVED, 0, 0, WORLD_SEQ + 2);
    EXPECT_STR("text", "Partner air added: earns 12.345 points per JPY", res.text);
    EXPECT_EQ("air issued", 0, account(f, "partner:air:issued"));
    EXPECT_EQ("air redeemed", 0, account(f, "partner:air:redeemed"));
    EXPECT_EQ("m3 balance", 0, balance(f, "fuel", "m3"));
}

static void earn_credits_floor_of_amount_times_rate(void **state)
{
    fixture_t *f = *state;
    result_t res = earn(f, "fuel", "e1", "m1", 1234, "EUR"); /* 12.34 x 2.000 = 24.68 */
    expect_approved("earn 12.34 at 2.000", &res, RC_APPROVED, 24, 24, WORLD_SEQ + 1);
    EXPECT_STR("text", "Earned 24 points. Balance 24", res.text);
    EXPECT_STR("member_id", "m1", res.member_id);
    EXPECT_STR("txn_id", "e1", res.txn_id);
    res = earn(f, "grocer", "e2", "m1", 101, "EUR"); /* 1.01 x 1.500 = 1.515 */
    expect_approved("earn 1.01 at 1.500", &res, RC_APPROVED, 1, 25, WORLD_SEQ + 2);
    EXPECT_EQ("m1 balance", 25, balance(f, "fuel", "m1"));
    EXPECT_EQ("fuel issued", -24, account(f, "partner:fuel:issued"));
    EXPECT_EQ("grocer issued", -1, account(f, "partner:grocer:issued"));
}

static void earn_of_less_than_one_point_is_approved_with_zero(void **state)
{
    fixture_t *f = *state;
    result_t res = earn(f, "grocer", "e1", "m1", 66, "EUR"); /* 0.66 x 1.500 = 0.99 */
    expect_approved("earn 0.66 at 1.500", &res, RC_APPROVED, 0, 0, WORLD_SEQ + 1);
    EXPECT_STR("text", "Earned 0 points. Balance 0", res.text);
}

static void earn_receipt_groups_thousands(void **state)
{
    fixture_t *f = *state;
    result_t res = earn(f, "fuel", "e1", "m1", 62000, "EUR");
    expect_approved("earn 620.00 at 2.000", &res, RC_APPROVED, 1240, 1240, WORLD_SEQ + 1);
    EXPECT_STR("text", "Earned 1,240 points. Balance 1,240", res.text);
}

static void seq_increments_by_one_per_approved_entry(void **state)
{
    fixture_t *f = *state;
    result_t e1 = earn(f, "fuel", "e1", "m1", 1000, "EUR");
    expect_approved("e1", &e1, RC_APPROVED, 20, 20, WORLD_SEQ + 1);
    result_t b1 = burn(f, "fuel", "b1", "m1", 21, false);
    expect_declined("b1 declined", &b1, RC_INSUFFICIENT_POINTS, 20);
    EXPECT_EQ("last seq after a decline", WORLD_SEQ + 1, ledger_last_seq(f->l));
    result_t b2 = burn(f, "fuel", "b2", "m1", 5, false);
    expect_approved("b2", &b2, RC_APPROVED, 5, 15, WORLD_SEQ + 2);
    result_t e2 = earn(f, "grocer", "e2", "m2", 1000, "EUR");
    expect_approved("e2", &e2, RC_APPROVED, 15, 15, WORLD_SEQ + 3);
    EXPECT_EQ("last seq", WORLD_SEQ + 3, ledger_last_seq(f->l));
    if (strcmp(e1.auth_code, b2.auth_code) == 0 || strcmp(b2.auth_code, e2.auth_code) == 0)
        fail_msg("auth codes: expected one per entry, got %s %s %s", e1.auth_code, b2.auth_code,
                 e2.auth_code);
}

/* ---- burn -------------------------------------------------------------------------- */

static void burn_debits_member_and_credits_redeemed(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t res = burn(f, "grocer", "b1", "m1", 10, false);
    expect_approved("burn 10 of 24", &res, RC_APPROVED, 10, 14, WORLD_SEQ + 2);
    EXPECT_STR("text", "Redeemed 10 points. Balance 14", res.text);
    EXPECT_EQ("grocer redeemed", 10, account(f, "partner:grocer:redeemed"));
    EXPECT_EQ("fuel issued", -24, account(f, "partner:fuel:issued"));
    EXPECT_EQ("m1 balance", 14, balance(f, "fuel", "m1"));
}

static void burn_of_whole_balance_is_approved(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t res = burn(f, "fuel", "b1", "m1", 24, false);
    expect_approved("burn 24 of 24", &res, RC_APPROVED, 24, 0, WORLD_SEQ + 2);
}

static void burn_over_balance_declines_51_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    snapshot_t before;
    snapshot(f, &before);
    result_t res = burn(f, "fuel", "b1", "m1", 25, false);
    expect_declined("burn 25 of 24", &res, RC_INSUFFICIENT_POINTS, 24);
    EXPECT_STR("text", "Declined 51: insufficient points (balance 24, requested 25)", res.text);
    expect_unchanged(f, &before);
}

static void burn_allow_partial_takes_the_whole_balance(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t res = burn(f, "fuel", "b1", "m1", 100, true);
    expect_approved("partial burn", &res, RC_PARTIAL, 24, 0, WORLD_SEQ + 2);
    EXPECT_STR("text", "Partially redeemed 24 of 100 points. Balance 0", res.text);
    EXPECT_EQ("fuel redeemed", 24, account(f, "partner:fuel:redeemed"));
    EXPECT_EQ("m1 balance", 0, balance(f, "fuel", "m1"));
}

static void burn_allow_partial_covered_in_full_is_00(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t res = burn(f, "fuel", "b1", "m1", 20, true);
    expect_approved("partial allowed, not needed", &res, RC_APPROVED, 20, 4, WORLD_SEQ + 2);
}

static void burn_allow_partial_on_zero_balance_declines_51(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = burn(f, "fuel", "b1", "m1", 5, true);
    expect_declined("partial burn of nothing", &res, RC_INSUFFICIENT_POINTS, 0);
    expect_unchanged(f, &before);
}

/* ---- refund ------------------------------------------------------------------------ */

static void refund_partials_of_an_earn_add_up_to_its_points(void **state)
{
    fixture_t *f = *state;
    earn(f, "grocer", "e1", "m1", 101, "EUR"); /* 1 point */
    result_t r1 = refund(f, "grocer", "r1", "e1", 50, 0);
    expect_approved("refund 0.50 of 1.01", &r1, RC_APPROVED, 0, 1, WORLD_SEQ + 2);
    EXPECT_STR("text", "Refund of e1: 0 points taken back. Balance 1", r1.text);
    result_t r2 = refund(f, "grocer", "r2", "e1", 51, 0);
    expect_approved("refund 0.51 of 1.01", &r2, RC_APPROVED, 1, 0, WORLD_SEQ + 3);
    EXPECT_EQ("total reversed", 1, r1.points + r2.points);
    EXPECT_EQ("grocer issued", 0, account(f, "partner:grocer:issued"));
}

static void refund_three_parts_of_an_earn_reverse_exactly(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1001, "EUR");            /* 10.01 x 2.000 = 20.02 -> 20 */
    result_t r1 = refund(f, "fuel", "r1", "e1", 333, 0); /* floor(20*333/1001) = 6 */
    expect_approved("r1", &r1, RC_APPROVED, 6, 14, WORLD_SEQ + 2);
    result_t r2 = refund(f, "fuel", "r2", "e1", 333, 0); /* floor(20*666/1001) = 13 */
    expect_approved("r2", &r2, RC_APPROVED, 7, 7, WORLD_SEQ + 3);
    result_t r3 = refund(f, "fuel", "r3", "e1", 0, 0); /* the rest: 3.35 */
    expect_approved("r3", &r3, RC_APPROVED, 7, 0, WORLD_SEQ + 4);
    EXPECT_EQ("total reversed", 20, r1.points + r2.points + r3.points);
    EXPECT_EQ("fuel issued", 0, account(f, "partner:fuel:issued"));
}

static void refund_more_than_left_declines_13(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t r1 = refund(f, "fuel", "r1", "e1", 1000, 0); /* floor(24*1000/1234) = 19 */
    expect_approved("refund 10.00 of 12.34", &r1, RC_APPROVED, 19, 5, WORLD_SEQ + 2);
    snapshot_t before;
    snapshot(f, &before);
    result_t r2 = refund(f, "fuel", "r2", "e1", 235, 0);
    expect_declined("refund 2.35 of 2.34 left", &r2, RC_INVALID_AMOUNT, 5);
    EXPECT_STR("text", "Declined 13: refund of 2.35 EUR exceeds the 2.34 EUR not yet refunded",
               r2.text);
    expect_unchanged(f, &before);
}

static void refund_of_fully_refunded_earn_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t r1 = refund(f, "fuel", "r1", "e1", 0, 0);
    expect_approved("refund all", &r1, RC_APPROVED, 24, 0, WORLD_SEQ + 2);
    snapshot_t before;
    snapshot(f, &before);
    result_t r2 = refund(f, "fuel", "r2", "e1", 1, 0);
    expect_declined("refund after full refund", &r2, RC_INVALID_TRANSACTION, 0);
    EXPECT_CONTAINS("text", "already fully refunded", r2.text);
    expect_unchanged(f, &before);
}

static void refund_of_a_burn_partial_then_rest(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 10, false);
    result_t r1 = refund(f, "fuel", "r1", "b1", 0, 4);
    expect_approved("refund 4 of 10 points", &r1, RC_APPROVED, 4, 18, WORLD_SEQ + 3);
    EXPECT_STR("text", "Refund of b1: 4 points returned. Balance 18", r1.text);
    EXPECT_EQ("fuel redeemed", 6, account(f, "partner:fuel:redeemed"));
    result_t r2 = refund(f, "fuel", "r2", "b1", 0, 7);
    expect_declined("refund 7 of 6 left", &r2, RC_INVALID_AMOUNT, 18);
    result_t r3 = refund(f, "fuel", "r3", "b1", 0, 0);
    expect_approved("refund the rest", &r3, RC_APPROVED, 6, 24, WORLD_SEQ + 4);
    EXPECT_EQ("fuel redeemed", 0, account(f, "partner:fuel:redeemed"));
    result_t r4 = refund(f, "fuel", "r4", "b1", 0, 1);
    expect_declined("refund after full refund", &r4, RC_INVALID_TRANSACTION, 24);
}

static void refund_of_a_burn_in_full(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "grocer", "b1", "m1", 24, false);
    result_t res = refund(f, "grocer", "r1", "b1", 0, 0);
    expect_approved("refund whole burn", &res, RC_APPROVED, 24, 24, WORLD_SEQ + 3);
    EXPECT_EQ("grocer redeemed", 0, account(f, "partner:grocer:redeemed"));
}

static void refund_in_the_wrong_unit_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 10, false);
    snapshot_t before;
    snapshot(f, &before);
    result_t r1 = refund(f, "fuel", "r1", "e1", 0, 5);
    expect_declined("earn refunded in points", &r1, RC_INVALID_TRANSACTION, 14);
    result_t r2 = refund(f, "fuel", "r2", "b1", 100, 0);
    expect_declined("burn refunded in money", &r2, RC_INVALID_TRANSACTION, 14);
    expect_unchanged(f, &before);
}

/* A reversal that overtakes its original: approved with nothing to move, and the original
 * is declined 12 whenever it arrives, never applied. */
static void refund_of_unseen_original_leaves_a_tombstone(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = refund(f, "fuel", "r1", "late", 100, 0);
    expect_approved("refund ahead of its original", &res, RC_APPROVED, 0, 0, WORLD_SEQ + 1);
    EXPECT_CONTAINS("text", "late will be declined if it arrives", res.text);
    result_t orig = earn(f, "fuel", "late", "m1", 1234, "EUR");
    expect_declined("the original, after its refund", &orig, RC_INVALID_TRANSACTION, 0);
    EXPECT_CONTAINS("text", "was reversed (ledger seq 5) before it arrived", orig.text);
    EXPECT_EQ("m1 unchanged", 0, balance(f, "fuel", "m1"));
    EXPECT_EQ("fuel issued unchanged", 0, account(f, "partner:fuel:issued"));
    result_t again = earn(f, "fuel", "late", "m1", 1234, "EUR");
    EXPECT_EQ("the original repeated: replay", true, again.replay);
    EXPECT_EQ("the original repeated: still 12", RC_INVALID_TRANSACTION, again.code);
    result_t other = earn(f, "fuel", "late", "m1", 999, "EUR");
    EXPECT_EQ("another request under the key: still 12, not 94", RC_INVALID_TRANSACTION,
              other.code);
    EXPECT_CONTAINS("its text", "before it arrived", other.text);
    result_t second = void_(f, "fuel", "v2", "late");
    expect_declined("a second reversal of it", &second, RC_INVALID_TRANSACTION, 0);
    EXPECT_CONTAINS("text", "already reversed", second.text);
    result_t repeat = refund(f, "fuel", "r1", "late", 100, 0);
    EXPECT_EQ("the reversal repeated: replay", true, repeat.replay);
    EXPECT_EQ("the reversal repeated: 00", RC_APPROVED, repeat.code);
    EXPECT_EQ("ledger seq: only the reversal's entry", WORLD_SEQ + 1, ledger_last_seq(f->l));
    char why[256];
    EXPECT_OK("verify", ledger_verify(f->l, why, sizeof why));
    (void)before;
}

/* Whatever claims a tombstone first (here an enrolment reusing the txn id), the real
 * original arriving after it is still told 12, the reversal's answer, never 94. */
static void original_after_another_request_claimed_its_tombstone_is_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 5000, "EUR");
    result_t v = void_(f, "fuel", "v9", "b9");
    expect_approved("void ahead of b9", &v, RC_APPROVED, 0, 0, WORLD_SEQ + 2);
    request_t r;
    result_t en = submit(f, enroll_req(&r, "fuel", "b9", "m7"), false);
    EXPECT_EQ("an enrolment under b9: 12", RC_INVALID_TRANSACTION, en.code);
    result_t b = burn(f, "fuel", "b9", "m1", 60, false);
    EXPECT_EQ("the real burn b9: 12, not 94", RC_INVALID_TRANSACTION, b.code);
    EXPECT_EQ("m1 keeps every point", 100, balance(f, "fuel", "m1"));
    char why[256];
    EXPECT_OK("verify", ledger_verify(f->l, why, sizeof why));
}

/* The agent's void of a burn it told the till failed can reach the broker first (a
 * reconnect): the burn, arriving later, must never take the points. */
static void void_before_its_burn_blocks_the_burn(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 5000, "EUR"); /* 100 points */
    result_t v = void_(f, "fuel", "~v1", "b1");
    expect_approved("void ahead of the burn", &v, RC_APPROVED, 0, 0, WORLD_SEQ + 2);
    result_t b = burn(f, "fuel", "b1", "m1", 60, false);
    expect_declined("the burn after its void", &b, RC_INVALID_TRANSACTION, 0);
    EXPECT_EQ("m1 keeps every point", 100, balance(f, "fuel", "m1"));
    EXPECT_EQ("fuel redeemed nothing", 0, account(f, "partner:fuel:redeemed"));
    char why[256];
    EXPECT_OK("verify", ledger_verify(f->l, why, sizeof why));
}

/* A replay of an approval voided or fully refunded since says so. */
static void replay_of_a_reversed_approval_is_marked(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 5000, "EUR");
    result_t b = burn(f, "fuel", "b1", "m1", 60, false);
    expect_approved("burn", &b, RC_APPROVED, 60, 40, WORLD_SEQ + 2);
    result_t r = burn(f, "fuel", "b1", "m1", 60, false);
    EXPECT_EQ("replay before the void: not reversed", false, r.reversed);
    void_(f, "fuel", "v1", "b1");
    r = burn(f, "fuel", "b1", "m1", 60, false);
    EXPECT_EQ("replay after the void: replay", true, r.replay);
    EXPECT_EQ("replay after the void: original code", RC_APPROVED, r.code);
    EXPECT_EQ("replay after the void: reversed", true, r.reversed);
    EXPECT_CONTAINS("text", "Reversed since", r.text);
    result_t e = earn(f, "fuel", "e2", "m1", 1000, "EUR");
    refund(f, "fuel", "r1", "e2", 400, 0);
    r = earn(f, "fuel", "e2", "m1", 1000, "EUR");
    EXPECT_EQ("partly refunded: not reversed", false, r.reversed);
    refund(f, "fuel", "r2", "e2", 600, 0);
    r = earn(f, "fuel", "e2", "m1", 1000, "EUR");
    EXPECT_EQ("fully refunded: reversed", true, r.reversed);
    EXPECT_EQ("fully refunded: same seq", e.seq, r.seq);
}

/* (partner, site, txn) is the key: two stores number their transactions independently,
 * and a return at one store names the original's store. */
static void txn_ids_are_scoped_by_site(void **state)
{
    fixture_t *f = *state;
    request_t r;
    earn_req(&r, "fuel", "t1", "m1", 1000, "EUR");
    r.env.site_id = "north";
    result_t north = submit(f, &r.env, false);
    expect_approved("t1 at north", &north, RC_APPROVED, 20, 20, WORLD_SEQ + 1);
    earn_req(&r, "fuel", "t1", "m1", 2000, "EUR");
    r.env.site_id = "south";
    result_t south = submit(f, &r.env, false);
    expect_approved("t1 at south", &south, RC_APPROVED, 40, 60, WORLD_SEQ + 2);
    request_init(&r, "fuel", "ret-1");
    r.env.site_id = "south";
    coalition__void_request__init(&r.void_request);
    r.void_request.original_txn_id = "t1";
    r.void_request.original_site_id = "north";
    r.env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r.env.void_request = &r.void_request;
    result_t v = submit(f, &r.env, false);
    expect_approved("south voids north's t1", &v, RC_APPROVED, 20, 40, WORLD_SEQ + 3);
    earn_req(&r, "fuel", "t1", "m1", 1000, "EUR");
    r.env.site_id = "north";
    result_t replay = submit(f, &r.env, false);
    EXPECT_EQ("north's t1 replayed: reversed", true, replay.reversed);
    earn_req(&r, "fuel", "t1", "m1", 2000, "EUR");
    r.env.site_id = "south";
    replay = submit(f, &r.env, false);
    EXPECT_EQ("south's t1 replayed: untouched", false, replay.reversed);
    char why[256];
    EXPECT_OK("verify", ledger_verify(f->l, why, sizeof why));
}

static void refund_of_declined_original_declines_25(void **state)
{
    fixture_t *f = *state;
    result_t b1 = burn(f, "fuel", "b1", "m1", 5, false);
    expect_declined("burn of nothing", &b1, RC_INSUFFICIENT_POINTS, 0);
    snapshot_t before;
    snapshot(f, &before);
    result_t res = refund(f, "fuel", "r1", "b1", 0, 0);
    expect_declined("refund of a decline", &res, RC_ORIGINAL_NOT_FOUND, 0);
    expect_unchanged(f, &before);
}

/* Keys are partner-scoped: grocer's refund of "e1" is about grocer's own e1 (not seen, so
 * a tombstone); fuel's e1 is untouched. */
static void refund_of_another_partners_earn_touches_only_its_own_keys(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t res = refund(f, "grocer", "r1", "e1", 0, 0);
    expect_approved("grocer refunds its own unseen e1", &res, RC_APPROVED, 0, 0, WORLD_SEQ + 2);
    EXPECT_EQ("m1 keeps fuel's points", 24, balance(f, "fuel", "m1"));
    EXPECT_EQ("fuel issued", -24, account(f, "partner:fuel:issued"));
    result_t late = earn(f, "grocer", "e1", "m1", 1000, "EUR");
    expect_declined("grocer's e1 arriving later", &late, RC_INVALID_TRANSACTION, 0);
}

static void refund_of_a_refund_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    refund(f, "fuel", "r1", "e1", 100, 0);
    snapshot_t before;
    snapshot(f, &before);
    result_t res = refund(f, "fuel", "r2", "r1", 0, 0);
    expect_declined("refund of a refund", &res, RC_INVALID_TRANSACTION, 0);
    EXPECT_CONTAINS("text", "only earns and burns can be reversed", res.text);
    expect_unchanged(f, &before);
}

static void refund_of_spent_earn_declines_51_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "grocer", "b1", "m1", 20, false);
    snapshot_t before;
    snapshot(f, &before);
    result_t res = refund(f, "fuel", "r1", "e1", 0, 0);
    expect_declined("refund of spent points", &res, RC_INSUFFICIENT_POINTS, 4);
    EXPECT_STR("text", "Declined 51: member has 4 points, reversal needs 24", res.text);
    expect_unchanged(f, &before);
    result_t partial = refund(f, "fuel", "r2", "e1", 206, 0); /* floor(24*206/1234) = 4 */
    expect_approved("refund 2.06 of 12.34", &partial, RC_APPROVED, 4, 0, WORLD_SEQ + 3);
}

/* ---- void -------------------------------------------------------------------------- */

static void void_of_an_earn_takes_its_points_back(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t res = void_(f, "fuel", "v1", "e1");
    expect_approved("void earn", &res, RC_APPROVED, 24, 0, WORLD_SEQ + 2);
    EXPECT_STR("text", "Voided e1: 24 points taken back. Balance 0", res.text);
    EXPECT_EQ("fuel issued", 0, account(f, "partner:fuel:issued"));
}

static void void_of_a_burn_returns_its_points(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "grocer", "b1", "m1", 10, false);
    result_t res = void_(f, "grocer", "v1", "b1");
    expect_approved("void burn", &res, RC_APPROVED, 10, 24, WORLD_SEQ + 3);
    EXPECT_STR("text", "Voided b1: 10 points returned. Balance 24", res.text);
    EXPECT_EQ("grocer redeemed", 0, account(f, "partner:grocer:redeemed"));
}

static void void_of_spent_earn_declines_51(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "grocer", "b1", "m1", 1, false);
    snapshot_t before;
    snapshot(f, &before);
    result_t res = void_(f, "fuel", "v1", "e1");
    expect_declined("void of an earn partly spent", &res, RC_INSUFFICIENT_POINTS, 23);
    EXPECT_STR("text", "Declined 51: member has 23 points, reversal needs 24", res.text);
    expect_unchanged(f, &before);
}

static void void_twice_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    void_(f, "fuel", "v1", "e1");
    snapshot_t before;
    snapshot(f, &before);
    result_t res = void_(f, "fuel", "v2", "e1");
    expect_declined("second void", &res, RC_INVALID_TRANSACTION, 0);
    EXPECT_STR("text", "Declined 12: e1 was voided", res.text);
    expect_unchanged(f, &before);
}

static void void_after_partial_refund_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t r1 = refund(f, "fuel", "r1", "e1", 100, 0); /* floor(24*100/1234) = 1 */
    expect_approved("refund 1.00 of 12.34", &r1, RC_APPROVED, 1, 23, WORLD_SEQ + 2);
    snapshot_t before;
    snapshot(f, &before);
    result_t res = void_(f, "fuel", "v1", "e1");
    expect_declined("void after refund", &res, RC_INVALID_TRANSACTION, 23);
    EXPECT_CONTAINS("text", "partly refunded", res.text);
    expect_unchanged(f, &before);
}

/* The partner agent's safety void of a burn its tills were told failed (91), txn id
 * "~v...": a refund at the other site of the partner may reach the ledger first, as no
 * agent can order the two. The void gives back what that refund left, so the burn ends
 * given back in full, as its tills were told; it used to be declined 12 "partly
 * refunded", leaving the rest applied (it_sim: burn-91-applied). */
static void safety_void_after_partial_refund_returns_the_rest(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 10, false);
    result_t r1 = refund(f, "fuel", "r1", "b1", 0, 4);
    expect_approved("refund 4 of 10 points", &r1, RC_APPROVED, 4, 18, WORLD_SEQ + 3);
    result_t v = void_(f, "fuel", SAFETY_VOID_TXN, "b1");
    expect_approved("safety void after a refund of 4", &v, RC_APPROVED, 6, 24, WORLD_SEQ + 4);
    EXPECT_STR("text", "Voided b1: 6 points returned. Balance 24", v.text);
    EXPECT_EQ("fuel redeemed", 0, account(f, "partner:fuel:redeemed"));
    result_t r2 = refund(f, "fuel", "r2", "b1", 0, 0);
    expect_declined("refund after the safety void", &r2, RC_INVALID_TRANSACTION, 24);
    EXPECT_CONTAINS("text", "b1 was voided", r2.text);
    expect_verify_ok(f, WORLD_SEQ + 4);
}

/* A safety void after refunds gave a burn back in full has nothing to give back: 12. */
static void safety_void_after_full_refund_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 10, false);
    refund(f, "fuel", "r1", "b1", 0, 0);
    snapshot_t before;
    snapshot(f, &before);
    result_t v = void_(f, "fuel", SAFETY_VOID_TXN, "b1");
    expect_declined("safety void after a full refund", &v, RC_INVALID_TRANSACTION, 24);
    expect_unchanged(f, &before);
    expect_verify_ok(f, WORLD_SEQ + 3);
}

/* A till's void of a partly refunded burn is still declined: only the agent's own. */
static void till_void_of_partly_refunded_burn_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 10, false);
    refund(f, "fuel", "r1", "b1", 0, 4);
    snapshot_t before;
    snapshot(f, &before);
    result_t v = void_(f, "fuel", "v1", "b1");
    expect_declined("till's void after a refund of 4", &v, RC_INVALID_TRANSACTION, 18);
    EXPECT_CONTAINS("text", "partly refunded", v.text);
    expect_unchanged(f, &before);
}

static void refund_after_void_declines_12(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 10, false);
    void_(f, "fuel", "v1", "b1");
    snapshot_t before;
    snapshot(f, &before);
    result_t res = refund(f, "fuel", "r1", "b1", 0, 0);
    EXPECT_EQ("code", RC_INVALID_TRANSACTION, res.code);
    EXPECT_EQ("seq", 0, res.seq);
    EXPECT_EQ("points", 0, res.points);
    EXPECT_STR("text", "Declined 12: b1 was voided", res.text);
    expect_unchanged(f, &before);
}

/* Every other decline naming a known member reports the member's balance, unchanged. */
static void voided_original_decline_reports_the_members_balance(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 10, false);
    void_(f, "fuel", "v1", "b1");
    EXPECT_EQ("m1 balance", 24, balance(f, "fuel", "m1"));
    result_t res = refund(f, "fuel", "r1", "b1", 0, 0);
    expect_declined("refund after void", &res, RC_INVALID_TRANSACTION, 24);
    res = void_(f, "fuel", "v2", "b1");
    expect_declined("void after void", &res, RC_INVALID_TRANSACTION, 24);
}

/* ---- balance inquiry ------------------------------------------------------------- */

static void balance_inquiry_reads_without_an_entry(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 62000, "EUR");
    result_t res = inquire(f, "grocer", "m1");
    EXPECT_EQ("code", RC_APPROVED, res.code);
    EXPECT_EQ("balance", 1240, res.balance);
    EXPECT_EQ("seq", 0, res.seq);
    EXPECT_EQ("points", 0, res.points);
    EXPECT_STR("text", "Balance 1,240 points", res.text);
    EXPECT_EQ("last seq", WORLD_SEQ + 1, ledger_last_seq(f->l));
}

/* ---- idempotency ------------------------------------------------------------------- */

static void same_key_same_request_replays_the_reply(void **state)
{
    fixture_t *f = *state;
    result_t first = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    expect_approved("first", &first, RC_APPROVED, 24, 24, WORLD_SEQ + 1);
    snapshot_t before;
    snapshot(f, &before);
    result_t again = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    expect_replay_of(&first, &again);
    expect_unchanged(f, &before);
}

static void replay_ignores_client_time(void **state)
{
    fixture_t *f = *state;
    request_t r;
    result_t first = submit(f, earn_req(&r, "fuel", "e1", "m1", 1234, "EUR"), false);
    earn_req(&r, "fuel", "e1", "m1", 1234, "EUR");
    r.env.client_time_ms = NOW_MS + 60000; /* the agent's retry a minute later */
    result_t again = submit(f, &r.env, false);
    expect_replay_of(&first, &again);
    EXPECT_EQ("last seq", WORLD_SEQ + 1, ledger_last_seq(f->l));
}

static void replay_after_later_entries_returns_the_old_reply(void **state)
{
    fixture_t *f = *state;
    result_t first = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 4, false);
    result_t again = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    expect_replay_of(&first, &again);
    EXPECT_EQ("replayed balance is the original's", 24, again.balance);
    EXPECT_EQ("m1 balance", 20, balance(f, "fuel", "m1"));
}

static void same_key_other_request_declines_94_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    result_t first = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    snapshot_t before;
    snapshot(f, &before);
    result_t other = earn(f, "fuel", "e1", "m1", 1235, "EUR");
    if (other.code != RC_DUPLICATE_KEY)
        fail_msg("other payload: expected code 94, got %02d (%s)", other.code, other.text);
    EXPECT_EQ("seq", 0, other.seq);
    EXPECT_EQ("points", 0, other.points);
    EXPECT_EQ("replay", false, other.replay);
    EXPECT_STR("text", "Declined 94: txn id e1 was already used for another request", other.text);
    expect_unchanged(f, &before);
    result_t again = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    expect_replay_of(&first, &again);
}

static void declined_request_is_remembered(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    result_t first = burn(f, "fuel", "b1", "m1", 30, false);
    expect_declined("burn 30 of 24", &first, RC_INSUFFICIENT_POINTS, 24);
    earn(f, "fuel", "e2", "m1", 1234, "EUR");
    EXPECT_EQ("m1 balance now covers it", 48, balance(f, "fuel", "m1"));
    snapshot_t before;
    snapshot(f, &before);
    result_t again = burn(f, "fuel", "b1", "m1", 30, false);
    expect_replay_of(&first, &again);
    expect_unchanged(f, &before);
}

static void txn_ids_are_scoped_per_partner(void **state)
{
    fixture_t *f = *state;
    result_t a = earn(f, "fuel", "e1", "m1", 1000, "EUR");
    expect_approved("fuel e1", &a, RC_APPROVED, 20, 20, WORLD_SEQ + 1);
    result_t b = earn(f, "grocer", "e1", "m1", 1000, "EUR");
    expect_approved("grocer e1", &b, RC_APPROVED, 15, 35, WORLD_SEQ + 2);
}

static void identical_requests_in_one_batch_second_is_a_replay(void **state)
{
    fixture_t *f = *state;
    request_t r;
    envelope_t *env = earn_req(&r, "fuel", "e1", "m1", 1234, "EUR");
    EXPECT_OK("ledger_batch_begin", ledger_batch_begin(f->l));
    result_t first = apply_in_batch(f, env);
    result_t second = apply_in_batch(f, env);
    EXPECT_OK("ledger_batch_commit", ledger_batch_commit(f->l));
    expect_approved("first", &first, RC_APPROVED, 24, 24, WORLD_SEQ + 1);
    expect_replay_of(&first, &second);
    EXPECT_EQ("last seq", WORLD_SEQ + 1, ledger_last_seq(f->l));
    EXPECT_EQ("m1 balance", 24, balance(f, "fuel", "m1"));
}

/* ---- decline codes ----------------------------------------------------------------- */

static void earn_from_unknown_partner_declines_03(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = earn(f, "ghost", "e1", "m1", 1234, "EUR");
    expect_declined("unknown partner", &res, RC_UNKNOWN_PARTNER, 0);
    EXPECT_STR("text", "Declined 03: unknown partner ghost", res.text);
    expect_unchanged(f, &before);
    /* Not remembered: an unknown sender has no key space, so a repeat is decided afresh. */
    res = earn(f, "ghost", "e1", "m1", 1234, "EUR");
    expect_declined("unknown partner again", &res, RC_UNKNOWN_PARTNER, 0);
    EXPECT_EQ("replay flag of a repeated 03", false, res.replay);
    expect_unchanged(f, &before);
}

static void enroll_of_existing_member_declines_12(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = enroll(f, "m1");
    expect_declined("enroll m1 again", &res, RC_INVALID_TRANSACTION, 0);
    EXPECT_STR("text", "Declined 12: member m1 is already enrolled", res.text);
    request_t r;
    res = submit(f, enroll_req(&r, "fuel", "en1", "m2"), false);
    expect_declined("partner enrols m2 again", &res, RC_INVALID_TRANSACTION, 0);
    expect_unchanged(f, &before);
}

static void partner_add_of_existing_partner_declines_12(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = add_partner(f, "fuel", 3000, "USD");
    expect_declined("add fuel again", &res, RC_INVALID_TRANSACTION, 0);
    EXPECT_STR("text", "Declined 12: partner fuel already exists", res.text);
    expect_unchanged(f, &before);
}

static void earn_in_wrong_currency_declines_13(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = earn(f, "fuel", "e1", "m1", 1234, "USD");
    expect_declined("USD at an EUR partner", &res, RC_INVALID_AMOUNT, 0);
    EXPECT_STR("text", "Declined 13: partner fuel earns in EUR, not USD", res.text);
    expect_unchanged(f, &before);
}

static void earn_of_zero_or_negative_amount_is_refused_13(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = earn(f, "fuel", "e1", "m1", 0, "EUR");
    expect_refused("zero amount", &res, RC_INVALID_AMOUNT);
    res = earn(f, "fuel", "e2", "m1", -100, "EUR");
    expect_refused("negative amount", &res, RC_INVALID_AMOUNT);
    expect_unchanged(f, &before);
}

static void unknown_member_declines_14(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = earn(f, "fuel", "e1", "nobody", 1234, "EUR");
    expect_declined("earn to unknown member", &res, RC_UNKNOWN_MEMBER, 0);
    EXPECT_STR("text", "Declined 14: unknown member nobody", res.text);
    EXPECT_STR("member_id", "nobody", res.member_id);
    res = burn(f, "fuel", "b1", "nobody", 5, false);
    expect_declined("burn from unknown member", &res, RC_UNKNOWN_MEMBER, 0);
    res = inquire(f, "fuel", "nobody");
    EXPECT_EQ("inquiry code", RC_UNKNOWN_MEMBER, res.code);
    expect_unchanged(f, &before);
}

static void format_errors_are_refused_30(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    request_t r;
    result_t res = submit(f, earn_req(&r, "fuel", "", "m1", 1234, "EUR"), false);
    expect_refused("missing txn id", &res, RC_FORMAT_ERROR);
    char long_txn[TXN_ID_LEN_MAX + 2];
    memset(long_txn, 't', TXN_ID_LEN_MAX + 1);
    long_txn[TXN_ID_LEN_MAX + 1] = '\0';
    earn_req(&r, "fuel", "e1", "m1", 1234, "EUR");
    r.env.txn_id = long_txn;
    res = submit(f, &r.env, false);
    expect_refused("65-byte txn id", &res, RC_FORMAT_ERROR);
    earn_req(&r, "fuel", "e1", "m1", 1234, "EUR");
    r.env.version = WIRE_VERSION + 1;
    res = submit(f, &r.env, false);
    expect_refused("bad version", &res, RC_FORMAT_ERROR);
    res = submit(f, request_init(&r, "fuel", "e1"), false);
    expect_refused("no body", &res, RC_FORMAT_ERROR);
    expect_unchanged(f, &before);
}

static void wrong_socket_or_sender_is_refused_57(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    request_t r;
    result_t res = submit(f, earn_req(&r, "fuel", "e1", "m1", 1234, "EUR"), true);
    expect_refused("partner body on the admin socket", &res, RC_NOT_PERMITTED);
    request_init(&r, "fuel", "pa1");
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = "rogue";
    r.partner_add.earn_rate_milli = 1000;
    r.partner_add.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    res = submit(f, &r.env, false);
    expect_refused("admin body from a partner", &res, RC_NOT_PERMITTED);
    res = submit(f, earn_req(&r, OPERATOR_PARTNER_ID, "e1", "m1", 1234, "EUR"), true);
    expect_refused("earn from the operator", &res, RC_NOT_PERMITTED);
    expect_unchanged(f, &before);
}

static void amount_over_limit_is_refused_61(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    result_t res = earn(f, "fuel", "e1", "m1", AMOUNT_MINOR_MAX + 1, "EUR");
    expect_refused("amount over AMOUNT_MINOR_MAX", &res, RC_EXCEEDS_LIMIT);
    res = burn(f, "fuel", "b1", "m1", POINTS_MAX + 1, false);
    expect_refused("points over POINTS_MAX", &res, RC_EXCEEDS_LIMIT);
    expect_unchanged(f, &before);
}

/* 10^12 JPY at 1000 points per yen would be 10^15 points: over POINTS_MAX for one earn. */
static void earn_over_the_points_limit_declines_61(void **state)
{
    fixture_t *f = *state;
    result_t res = add_partner(f, "yen", EARN_RATE_MILLI_MAX, "JPY");
    expect_approved("add yen", &res, RC_APPROVED, 0, 0, WORLD_SEQ + 1);
    res = set_limits(f, "yen", AMOUNT_MINOR_MAX, POINTS_MAX);
    expect_approved("yen limits", &res, RC_APPROVED, 0, 0, WORLD_SEQ + 2);
    snapshot_t before;
    snapshot(f, &before);
    res = earn(f, "yen", "too-big", "m1", AMOUNT_MINOR_MAX, "JPY");
    expect_declined("earn over POINTS_MAX", &res, RC_EXCEEDS_LIMIT, 0);
    EXPECT_STR("text", "Declined 61: points for this amount exceed the limit", res.text);
    expect_unchanged(f, &before);
    res = earn(f, "yen", "at-limit", "m1", POINTS_MAX / 1000, "JPY");
    expect_approved("earn of exactly POINTS_MAX", &res, RC_APPROVED, POINTS_MAX, POINTS_MAX,
                    WORLD_SEQ + 3);
}

static void declines_leave_the_ledger_unchanged(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    burn(f, "fuel", "b1", "m1", 4, false);
    snapshot_t before;
    snapshot(f, &before);
    int codes[] = {
        earn(f, "ghost", "x1", "m1", 100, "EUR").code,
        earn(f, "fuel", "x2", "nobody", 100, "EUR").code,
        earn(f, "fuel", "x3", "m1", 100, "GBP").code,
        burn(f, "fuel", "x4", "m1", 21, false).code,
        refund(f, "fuel", "x5", "x4", 0, 0).code,
        refund(f, "fuel", "x6", "e1", 1235, 0).code,
        void_(f, "fuel", "x7", "x4").code,
        earn(f, "fuel", "e1", "m1", 999, "EUR").code,
        enroll(f, "m2").code,
    };
    int expected[] = {RC_UNKNOWN_PARTNER,     RC_UNKNOWN_MEMBER,     RC_INVALID_AMOUNT,
                      RC_INSUFFICIENT_POINTS, RC_ORIGINAL_NOT_FOUND, RC_INVALID_AMOUNT,
                      RC_ORIGINAL_NOT_FOUND,  RC_DUPLICATE_KEY,      RC_INVALID_TRANSACTION};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (codes[i] != expected[i])
            fail_msg("decline %zu: expected code %02d, got %02d", i, expected[i], codes[i]);
    }
    expect_unchanged(f, &before);
}

/* ---- verify ------------------------------------------------------------------------ */

/* A bit of everything; leaves m1 at 32, m2 at 7 and WORLD_SEQ + 8 entries. */
static void mixed_sequence(fixture_t *f)
{
    earn(f, "fuel", "e1", "m1", 1234, "EUR");   /* +24 -> 24 */
    earn(f, "grocer", "e2", "m2", 1001, "EUR"); /* +15 -> m2 15 */
    burn(f, "grocer", "b1", "m1", 10, false);   /* -10 -> 14 */
    refund(f, "grocer", "r1", "b1", 0, 4);      /* +4  -> 18 */
    refund(f, "fuel", "r2", "e1", 117, 0);      /* -2  -> 16 */
    burn(f, "fuel", "b2", "m2", 8, false);      /* -8  -> m2 7 */
    earn(f, "fuel", "e3", "m1", 800, "EUR");    /* +16 -> 32 */
    burn(f, "fuel", "b3", "m1", 500, false);    /* 51, no entry */
    void_(f, "grocer", "v1", "b1");             /* 12: partly refunded */
    earn(f, "grocer", "e4", "m1", 66, "EUR");   /* +0  -> 32 */
}

static void verify_passes_after_a_mixed_sequence(void **state)
{
    fixture_t *f = *state;
    mixed_sequence(f);
    EXPECT_EQ("last seq", WORLD_SEQ + 8, ledger_last_seq(f->l));
    EXPECT_EQ("m1 balance", 32, balance(f, "fuel", "m1"));
    EXPECT_EQ("m2 balance", 7, balance(f, "fuel", "m2"));
    expect_verify_ok(f, WORLD_SEQ + 8);
}

/* Close the ledger, rewrite one record with LMDB directly, and open it again. */
typedef void (*edit_fn)(uint8_t *value, size_t len, const void *ctx);

static void tamper(fixture_t *f, const char *db, const void *key, size_t key_len, edit_fn edit,
                   const void *ctx)
{
    ledger_destroy(&f->l);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_val k = {key_len, (void *)key}, v;
    assert_int_equal(mdb_env_create(&env), MDB_SUCCESS);
    assert_int_equal(mdb_env_set_maxdbs(env, STORE_DBS_MAX), MDB_SUCCESS);
    assert_int_equal(mdb_env_set_mapsize(env, STORE_MAP_BYTES_INITIAL), MDB_SUCCESS);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), MDB_SUCCESS);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), MDB_SUCCESS);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), MDB_SUCCESS);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), MDB_SUCCESS);
    uint8_t copy[LEDGER_ENTRY_BYTES_MAX];
    assert_true(v.mv_size <= sizeof copy);
    memcpy(copy, v.mv_data, v.mv_size);
    edit(copy, v.mv_size, ctx);
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), MDB_SUCCESS);
    assert_int_equal(mdb_txn_commit(txn), MDB_SUCCESS);
    mdb_env_close(env);
    EXPECT_OK("ledger_open after tampering", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
}

static void set_balance(uint8_t *value, size_t len, const void *ctx)
{
    assert_int_equal(len, 8);
    const int64_t *forged = ctx;
    store_put_u64(value, (uint64_t)forged[0]);
}

/* Reaching INT64_MAX through approved earns would take millions of them, so the balance
 * is seeded just below it; the next earn must decline 61 rather than wrap. */
static void balance_that_would_overflow_declines_61(void **state)
{
    fixture_t *f = *state;
    const char *name = "member:m1";
    int64_t seeded = INT64_MAX - 10;
    tamper(f, "accounts", name, strlen(name), set_balance, &seeded);
    snapshot_t before;
    snapshot(f, &before);
    result_t res = earn(f, "fuel", "wraps", "m1", 600, "EUR"); /* 12 points */
    expect_declined("earn past INT64_MAX", &res, RC_EXCEEDS_LIMIT, seeded);
    EXPECT_STR("text", "Declined 61: balance would exceed the points limit", res.text);
    expect_unchanged(f, &before);
    res = earn(f, "fuel", "fits", "m1", 500, "EUR"); /* 10 points: exactly INT64_MAX */
    expect_approved("earn that just fits", &res, RC_APPROVED, 10, INT64_MAX, WORLD_SEQ + 1);
}

/* Replace the first occurrence of a same-length string inside the packed entry. */
static void replace_text(uint8_t *value, size_t len, const void *ctx)
{
    const char *const *pair = ctx;
    size_t n = strlen(pair[0]);
    assert_int_equal(n, strlen(pair[1]));
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(value + i, pair[0], n) == 0) {
            memcpy(value + i, pair[1], n);
            return;
        }
    }
    fail_msg("journal entry: expected it to contain \"%s\", got no match", pair[0]);
}

static void verify_detects_an_altered_account_balance(void **state)
{
    fixture_t *f = *state;
    mixed_sequence(f);
    const char *name = "member:m1";
    int64_t forged = 1032;
    tamper(f, "accounts", name, strlen(name), set_balance, &forged);
    EXPECT_EQ("forged balance visible", 1032, balance(f, "fuel", "m1"));
    expect_verify_corrupt(f, "account member:m1 holds 1032, its postings sum to 32");
}

static void verify_detects_an_altered_journal_entry(void **state)
{
    fixture_t *f = *state;
    mixed_sequence(f);
    uint8_t key[8];
    store_put_u64(key, WORLD_SEQ + 3); /* b1 */
    const char *pair[2] = {"till-1", "till-9"};
    tamper(f, "journal", key, sizeof key, replace_text, pair);
    char expected[64];
    snprintf(expected, sizeof expected, "entry %u hash mismatch", WORLD_SEQ + 3);
    expect_verify_corrupt(f, expected);
}

static void verify_detects_a_redirected_posting(void **state)
{
    fixture_t *f = *state;
    mixed_sequence(f);
    uint8_t key[8];
    store_put_u64(key, WORLD_SEQ + 1);                /* e1: fuel issued -24, member:m1 +24 */
    const char *pair[2] = {"member:m1", "member:m2"}; /* still balances, but was altered */
    tamper(f, "journal", key, sizeof key, replace_text, pair);
    char expected[64];
    snprintf(expected, sizeof expected, "entry %u hash mismatch", WORLD_SEQ + 1);
    expect_verify_corrupt(f, expected);
}

static void verify_detects_an_unbalanced_journal_entry(void **state)
{
    fixture_t *f = *state;
    mixed_sequence(f);
    uint8_t key[8];
    store_put_u64(key, WORLD_SEQ + 1);
    /* Posting {account: "member:m1", delta: 24}: field 2 varint 0x18 becomes 25. */
    const char *pair[2] = {"member:m1\x10\x18", "member:m1\x10\x19"};
    tamper(f, "journal", key, sizeof key, replace_text, pair);
    char expected[64];
    snprintf(expected, sizeof expected, "entry %u is unreadable or does not balance",
             WORLD_SEQ + 1);
    expect_verify_corrupt(f, expected);
}

/* ---- batches and reopening --------------------------------------------------------- */

static void batch_abort_persists_nothing(void **state)
{
    fixture_t *f = *state;
    snapshot_t before;
    snapshot(f, &before);
    request_t r;
    envelope_t *env = earn_req(&r, "fuel", "e1", "m1", 1234, "EUR");
    EXPECT_OK("ledger_batch_begin", ledger_batch_begin(f->l));
    result_t aborted = apply_in_batch(f, env);
    expect_approved("earn inside the aborted batch", &aborted, RC_APPROVED, 24, 24, WORLD_SEQ + 1);
    ledger_batch_abort(f->l);
    expect_unchanged(f, &before);
    result_t res = submit(f, env, false);
    expect_approved("same txn id after abort", &res, RC_APPROVED, 24, 24, WORLD_SEQ + 1);
    EXPECT_EQ("m1 balance", 24, balance(f, "fuel", "m1"));
}

static void reopened_ledger_keeps_its_state(void **state)
{
    fixture_t *f = *state;
    mixed_sequence(f);
    snapshot_t before;
    snapshot(f, &before);
    ledger_destroy(&f->l);
    assert_null(f->l);
    EXPECT_OK("ledger_open", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    expect_unchanged(f, &before);
    EXPECT_EQ("m1 balance", 32, balance(f, "fuel", "m1"));
    result_t again = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    EXPECT_EQ("replay after reopen", true, again.replay);
    result_t next = earn(f, "fuel", "e5", "m1", 100, "EUR");
    expect_approved("next entry continues the sequence", &next, RC_APPROVED, 2, 34, WORLD_SEQ + 9);
}

static void init_refuses_an_existing_ledger(void **state)
{
    fixture_t *f = *state;
    int rc = ledger_init(f->dir);
    EXPECT_EQ("ledger_init on an existing ledger", CL_ERR_EXISTS, rc);
    EXPECT_EQ("last seq", WORLD_SEQ, ledger_last_seq(f->l));
}

#define WORLD_TEST(name) cmocka_unit_test_setup_teardown(name, setup_world, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        WORLD_TEST(partner_add_and_enroll_are_journal_entries),
        WORLD_TEST(earn_credits_floor_of_amount_times_rate),
        WORLD_TEST(earn_of_less_than_one_point_is_approved_with_zero),
        WORLD_TEST(earn_receipt_groups_thousands),
        WORLD_TEST(seq_increments_by_one_per_approved_entry),
        WORLD_TEST(burn_debits_member_and_credits_redeemed),
        WORLD_TEST(burn_of_whole_balance_is_approved),
        WORLD_TEST(burn_over_balance_declines_51_and_changes_nothing),
        WORLD_TEST(burn_allow_partial_takes_the_whole_balance),
        WORLD_TEST(burn_allow_partial_covered_in_full_is_00),
        WORLD_TEST(burn_allow_partial_on_zero_balance_declines_51),
        WORLD_TEST(refund_partials_of_an_earn_add_up_to_its_points),
        WORLD_TEST(refund_three_parts_of_an_earn_reverse_exactly),
        WORLD_TEST(refund_more_than_left_declines_13),
        WORLD_TEST(refund_of_fully_refunded_earn_declines_12),
        WORLD_TEST(refund_of_a_burn_partial_then_rest),
        WORLD_TEST(refund_of_a_burn_in_full),
        WORLD_TEST(refund_in_the_wrong_unit_declines_12),
        WORLD_TEST(refund_of_unseen_original_leaves_a_tombstone),
        WORLD_TEST(void_before_its_burn_blocks_the_burn),
        WORLD_TEST(original_after_another_request_claimed_its_tombstone_is_12),
        WORLD_TEST(replay_of_a_reversed_approval_is_marked),
        WORLD_TEST(txn_ids_are_scoped_by_site),
        WORLD_TEST(refund_of_declined_original_declines_25),
        WORLD_TEST(refund_of_another_partners_earn_touches_only_its_own_keys),
        WORLD_TEST(refund_of_a_refund_declines_12),
        WORLD_TEST(refund_of_spent_earn_declines_51_and_changes_nothing),
        WORLD_TEST(void_of_an_earn_takes_its_points_back),
        WORLD_TEST(void_of_a_burn_returns_its_points),
        WORLD_TEST(void_of_spent_earn_declines_51),
        WORLD_TEST(void_twice_declines_12),
        WORLD_TEST(void_after_partial_refund_declines_12),
        WORLD_TEST(safety_void_after_partial_refund_returns_the_rest),
        WORLD_TEST(safety_void_after_full_refund_declines_12),
        WORLD_TEST(till_void_of_partly_refunded_burn_declines_12),
        WORLD_TEST(refund_after_void_declines_12),
        WORLD_TEST(voided_original_decline_reports_the_members_balance),
        WORLD_TEST(balance_inquiry_reads_without_an_entry),
        WORLD_TEST(same_key_same_request_replays_the_reply),
        WORLD_TEST(replay_ignores_client_time),
        WORLD_TEST(replay_after_later_entries_returns_the_old_reply),
        WORLD_TEST(same_key_other_request_declines_94_and_changes_nothing),
        WORLD_TEST(declined_request_is_remembered),
        WORLD_TEST(txn_ids_are_scoped_per_partner),
        WORLD_TEST(identical_requests_in_one_batch_second_is_a_replay),
        WORLD_TEST(earn_from_unknown_partner_declines_03),
        WORLD_TEST(enroll_of_existing_member_declines_12),
        WORLD_TEST(partner_add_of_existing_partner_declines_12),
        WORLD_TEST(earn_in_wrong_currency_declines_13),
        WORLD_TEST(earn_of_zero_or_negative_amount_is_refused_13),
        WORLD_TEST(unknown_member_declines_14),
        WORLD_TEST(format_errors_are_refused_30),
        WORLD_TEST(wrong_socket_or_sender_is_refused_57),
        WORLD_TEST(amount_over_limit_is_refused_61),
        WORLD_TEST(earn_over_the_points_limit_declines_61),
        WORLD_TEST(balance_that_would_overflow_declines_61),
        WORLD_TEST(declines_leave_the_ledger_unchanged),
        WORLD_TEST(verify_passes_after_a_mixed_sequence),
        WORLD_TEST(verify_detects_an_altered_account_balance),
        WORLD_TEST(verify_detects_an_altered_journal_entry),
        WORLD_TEST(verify_detects_a_redirected_posting),
        WORLD_TEST(verify_detects_an_unbalanced_journal_entry),
        WORLD_TEST(batch_abort_persists_nothing),
        WORLD_TEST(reopened_ledger_keeps_its_state),
        WORLD_TEST(init_refuses_an_existing_ledger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
