/* Shared by the ledger-level lifecycle tests (test_lifecycle.c, test_earning.c): a real
 * LMDB ledger in a temporary directory, partners fuel and grocer (a point per euro),
 * members alice and bob, and requests applied as the broker's writer applies them, each
 * in a batch of its own at a clock the test gives. Static functions: include once. */
#ifndef COALITION_TEST_LIFECYCLE_FIXTURE_H
#define COALITION_TEST_LIFECYCLE_FIXTURE_H

#include "ledger_internal.h"

#include "errors.h"
#include "settle.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Each test program uses some of these. */
#define FIXTURE_FN static __attribute__((unused))

#define EXPECT_OK(what, rc)                                                                        \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != CL_OK)                                                                          \
            fail_msg("%s: expected CL_OK, got %d (%s)", (what), rc_, cl_strerror(rc_));            \
    } while (0)

#define T0 INT64_C(1800000000000)
#define DAY INT64_C(86400000)
#define DAYS(n) ((int64_t)(n)*86400)
#define WHY_BYTES 512
#define LOTS_SEEN_MAX 256

typedef struct fixture {
    char dir[64];
    ledger_t *l;
    unsigned ops;
} fixture_t;

typedef struct result {
    int code;
    uint64_t seq;
    int64_t points, balance, available, pending, base, bonus;
    char tier[TIER_NAME_LEN_MAX + 1];
    char text[RECEIPT_TEXT_BYTES_MAX];
} result_t;

typedef struct request {
    envelope_t env;
    char txn[TXN_ID_LEN_MAX + 1];
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__RefundRequest refund;
    Coalition__VoidRequest void_request;
    Coalition__BalanceRequest balance;
    Coalition__PartnerAddRequest partner_add;
    Coalition__EnrollRequest member_add;
    Coalition__ContractSetRequest contract;
    Coalition__ExpiryPolicyRequest policy;
    Coalition__TierSettingsRequest tiers;
    Coalition__Tier tier[TIERS_MAX], *tier_ptrs[TIERS_MAX];
    Coalition__RuleAddRequest rule_add;
    Coalition__RuleEndRequest rule_end;
} request_t;

FIXTURE_FN envelope_t *request_init(request_t *r, const char *partner, const char *txn)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    snprintf(r->txn, sizeof r->txn, "%s", txn);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner;
    r->env.terminal_id = "t1";
    r->env.site_id = strcmp(partner, OPERATOR_PARTNER_ID) == 0 ? OPERATOR_SITE_ID : "s1";
    r->env.txn_id = r->txn;
    r->env.client_time_ms = T0;
    return &r->env;
}

FIXTURE_FN result_t result_of(const uint8_t *reply, size_t len)
{
    result_t res;
    memset(&res, 0, sizeof res);
    authorization_t *auth = wire_auth_decode(reply, len);
    assert_non_null(auth);
    res.code = auth->code;
    res.seq = auth->seq;
    res.points = auth->points;
    res.balance = auth->balance;
    res.available = auth->available;
    res.pending = auth->pending_points;
    res.base = auth->base_points;
    res.bonus = auth->bonus_points;
    snprintf(res.tier, sizeof res.tier, "%s", auth->tier);
    snprintf(res.text, sizeof res.text, "%s", auth->text);
    wire_auth_free(auth);
    return res;
}

/* Apply in the open batch, as the writer applies each request of a round. */
FIXTURE_FN result_t apply_in_batch(fixture_t *f, envelope_t *env, int64_t now_ms)
{
    char why[WHY_BYTES] = "";
    int code =
        wire_validate(env, strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0, why, sizeof why);
    if (code != RC_APPROVED)
        fail_msg("%s refused by wire_validate: %s", env->txn_id, why);
    uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
    size_t len = 0;
    EXPECT_OK("hash", wire_request_hash(env, hash));
    EXPECT_OK("apply", ledger_apply(f->l, env, hash, now_ms, &reply, &len));
    result_t res = result_of(reply, len);
    free(reply);
    return res;
}

/* As the broker does: validate, hash, apply in a batch of its own at `now_ms`. */
FIXTURE_FN result_t submit(fixture_t *f, envelope_t *env, int64_t now_ms)
{
    char why[WHY_BYTES] = "";
    int code =
        wire_validate(env, strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0, why, sizeof why);
    if (code != RC_APPROVED)
        fail_msg("%s refused by wire_validate: %s", env->txn_id, why);
    uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
    size_t len = 0;
    EXPECT_OK("hash", wire_request_hash(env, hash));
    EXPECT_OK("begin", ledger_batch_begin(f->l));
    EXPECT_OK("apply", ledger_apply(f->l, env, hash, now_ms, &reply, &len));
    EXPECT_OK("commit", ledger_batch_commit(f->l));
    result_t res = result_of(reply, len);
    free(reply);
    return res;
}

FIXTURE_FN void expect_code(const char *what, const result_t *res, int code)
{
    if (res->code != code)
        fail_msg("%s: expected %02d, got %02d (%s)", what, code, res->code, res->text);
}

FIXTURE_FN void expect_verify(fixture_t *f)
{
    char why[WHY_BYTES] = "";
    if (ledger_verify(f->l, why, sizeof why) != CL_OK)
        fail_msg("verify: %s", why);
}

static const char *op_txn(fixture_t *f, char buf[TXN_ID_LEN_MAX + 1])
{
    snprintf(buf, TXN_ID_LEN_MAX + 1, "op-%u", ++f->ops);
    return buf;
}

FIXTURE_FN void op_partner(fixture_t *f, const char *id)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = (char *)id;
    r.partner_add.earn_rate_milli = 1000; /* a point per euro */
    r.partner_add.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    result_t res = submit(f, &r.env, T0);
    expect_code("partner add", &res, RC_APPROVED);
}

FIXTURE_FN void op_member(fixture_t *f, const char *id)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__enroll_request__init(&r.member_add);
    r.member_add.member_id = (char *)id;
    r.env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    r.env.enroll = &r.member_add;
    result_t res = submit(f, &r.env, T0);
    expect_code("member add", &res, RC_APPROVED);
}

/* An expiry policy from `now` on. */
FIXTURE_FN result_t op_policy(fixture_t *f, int64_t now, int64_t term_s, int64_t inactivity_s)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__expiry_policy_request__init(&r.policy);
    r.policy.term_seconds = term_s;
    r.policy.inactivity_seconds = inactivity_s;
    r.env.body_case = COALITION__ENVELOPE__BODY_EXPIRY_POLICY;
    r.env.expiry_policy = &r.policy;
    return submit(f, &r.env, now);
}

/* A contract from `now` with a return period (a point per euro, no prices). */
FIXTURE_FN void op_return_period(fixture_t *f, const char *partner, int64_t now, int64_t seconds)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__contract_set_request__init(&r.contract);
    r.contract.partner_id = (char *)partner;
    r.contract.from_ms = now;
    r.contract.earn_rate_milli = 1000;
    r.contract.currency = "EUR";
    r.contract.funding = COALITION__FUNDING__FUNDING_POSTPAID;
    r.contract.return_period_seconds = seconds;
    r.env.body_case = COALITION__ENVELOPE__BODY_CONTRACT_SET;
    r.env.contract_set = &r.contract;
    result_t res = submit(f, &r.env, now);
    expect_code("contract", &res, RC_APPROVED);
}

/* Tiers from `spec` ("name:threshold:multiplier_milli" each, NULL-terminated). */
FIXTURE_FN result_t op_tiers(fixture_t *f, int64_t now, const char *const *names,
                             const int64_t *thresholds, const int64_t *mults, size_t n)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__tier_settings_request__init(&r.tiers);
    for (size_t i = 0; i < n; i++) {
        coalition__tier__init(&r.tier[i]);
        r.tier[i].name = (char *)names[i];
        r.tier[i].threshold_points = thresholds[i];
        r.tier[i].multiplier_milli = mults[i];
        r.tier_ptrs[i] = &r.tier[i];
    }
    r.tiers.tiers = r.tier_ptrs;
    r.tiers.n_tiers = n;
    r.env.body_case = COALITION__ENVELOPE__BODY_TIER_SETTINGS;
    r.env.tier_settings = &r.tiers;
    return submit(f, &r.env, now);
}

FIXTURE_FN result_t op_rule(fixture_t *f, int64_t now, const char *partner, int kind, int64_t from,
                            int64_t until, int64_t mult, int64_t threshold_minor, int64_t bonus)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__rule_add_request__init(&r.rule_add);
    r.rule_add.partner_id = (char *)partner;
    r.rule_add.kind = (Coalition__RuleKind)kind;
    r.rule_add.from_ms = from;
    r.rule_add.until_ms = until;
    r.rule_add.multiplier_milli = mult;
    r.rule_add.threshold_minor = threshold_minor;
    r.rule_add.bonus_points = bonus;
    r.env.body_case = COALITION__ENVELOPE__BODY_RULE_ADD;
    r.env.rule_add = &r.rule_add;
    return submit(f, &r.env, now);
}

FIXTURE_FN result_t op_rule_end(fixture_t *f, int64_t now, const char *partner, uint64_t id,
                                int64_t at)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__rule_end_request__init(&r.rule_end);
    r.rule_end.partner_id = (char *)partner;
    r.rule_end.rule_id = id;
    r.rule_end.at_ms = at;
    r.env.body_case = COALITION__ENVELOPE__BODY_RULE_END;
    r.env.rule_end = &r.rule_end;
    return submit(f, &r.env, now);
}

/* Earn `euros` at `partner` (a point per euro). */
FIXTURE_FN envelope_t *earn_request(request_t *r, const char *partner, const char *txn,
                                    const char *member, int64_t minor)
{
    request_init(r, partner, txn);
    coalition__earn_request__init(&r->earn);
    r->earn.member_id = (char *)member;
    r->earn.amount_minor = minor;
    r->earn.currency = "EUR";
    r->env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r->env.earn = &r->earn;
    return &r->env;
}

FIXTURE_FN result_t earn(fixture_t *f, const char *partner, const char *txn, const char *member,
                         int64_t euros, int64_t now)
{
    request_t r;
    return submit(f, earn_request(&r, partner, txn, member, euros * 100), now);
}

FIXTURE_FN result_t burn(fixture_t *f, const char *partner, const char *txn, const char *member,
                         int64_t points, bool partial, int64_t now)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__burn_request__init(&r.burn);
    r.burn.member_id = (char *)member;
    r.burn.points = points;
    r.burn.allow_partial = partial;
    r.env.body_case = COALITION__ENVELOPE__BODY_BURN;
    r.env.burn = &r.burn;
    return submit(f, &r.env, now);
}

/* A refund of an earn (euros > 0) or of a burn (points > 0). */
FIXTURE_FN result_t refund(fixture_t *f, const char *partner, const char *txn, const char *original,
                           int64_t euros, int64_t points, int64_t now)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__refund_request__init(&r.refund);
    r.refund.original_txn_id = (char *)original;
    r.refund.amount_minor = euros * 100;
    r.refund.points = points;
    r.env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    r.env.refund = &r.refund;
    return submit(f, &r.env, now);
}

FIXTURE_FN result_t void_of(fixture_t *f, const char *partner, const char *txn,
                            const char *original, int64_t now)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__void_request__init(&r.void_request);
    r.void_request.original_txn_id = (char *)original;
    r.env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r.env.void_request = &r.void_request;
    return submit(f, &r.env, now);
}

/* A whole expiry run as of `as_of`, slice after slice, as the writer makes it. */
FIXTURE_FN expiry_result_t expire(fixture_t *f, int64_t as_of, int64_t now)
{
    expiry_result_t total = {0}, res;
    do {
        EXPECT_OK("expire", ledger_expire(f->l, as_of, now, 2, &res));
        total.members += res.members;
        total.entries += res.entries;
        total.points += res.points;
    } while (res.more);
    return total;
}

FIXTURE_FN ledger_member_points_t points_of(fixture_t *f, const char *member, int64_t now,
                                            ledger_lot_row_t *rows, size_t *n)
{
    ledger_member_points_t p;
    size_t none = 0;
    EXPECT_OK("member lots",
              ledger_member_lots(f->l, member, now, &p, rows, rows != NULL ? LOTS_SEEN_MAX : 0,
                                 n != NULL ? n : &none));
    return p;
}

FIXTURE_FN int64_t account(fixture_t *f, const char *name)
{
    int64_t b = 0;
    EXPECT_OK(name, ledger_account_balance(f->l, name, &b));
    return b;
}

FIXTURE_FN int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_lifecycle.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    EXPECT_OK("init", ledger_init(f->dir));
    EXPECT_OK("open", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    op_partner(f, "fuel");
    op_partner(f, "grocer");
    op_member(f, "alice");
    op_member(f, "bob");
    *state = f;
    return 0;
}

FIXTURE_FN int teardown(void **state)
{
    fixture_t *f = *state;
    char path[128];
    ledger_destroy(&f->l);
    const char *files[] = {"data.mdb", "lock.mdb", STORE_LOCK_FILE};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, files[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

#endif
