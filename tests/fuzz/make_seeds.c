/* Writes the fuzz targets' seed corpora: packed envelopes of every body kind (valid from
 * their socket, and a few refused ones), two Authorizations, and for fuzz_ledger a few
 * meaningful request sequences (ledger_ops.h). The seeds are checked in under
 * tests/fuzz/corpus/<target>/, and inputs that fail today under tests/fuzz/findings/;
 * run this again after changing the wire format:
 *   build-fuzz/tests/fuzz/make_seeds tests/fuzz/corpus tests/fuzz/findings */
#include "ledger_ops.h"

#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PATH_BYTES 1024
#define CLIENT_TIME_MS INT64_C(1700000000000)
/* Long enough that the envelope nearly fills a wire message, and its decline more. */
#define LONG_FIELD_BYTES 660
#define TOO_LONG_TXN_BYTES (TXN_ID_LEN_MAX + 1)

typedef struct seed {
    envelope_t env;
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__RefundRequest refund;
    Coalition__VoidRequest void_request;
    Coalition__BalanceRequest balance;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerAddRequest partner_add;
    Coalition__Card card, new_card;
    Coalition__CardEnrollRequest card_enroll;
} seed_t;

static const char *out_dir;
static char long_a[LONG_FIELD_BYTES + 1], long_b[LONG_FIELD_BYTES + 1],
    long_c[LONG_FIELD_BYTES + 1], too_long_txn[TOO_LONG_TXN_BYTES + 1];

static void write_file(const char *target, const char *name, const void *bytes, size_t len)
{
    char path[PATH_BYTES];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* Envelope seeds go to both envelope targets. */
static void write_envelope(const char *name, const envelope_t *env)
{
    size_t len = 0;
    uint8_t *bytes = wire_pack_envelope(env, &len);
    if (bytes == NULL)
        exit(1);
    write_file("fuzz_envelope", name, bytes, len);
    write_file("fuzz_till", name, bytes, len);
    free(bytes);
}

static seed_t *head(seed_t *s, const char *partner_id, const char *site_id, const char *txn_id)
{
    memset(s, 0, sizeof *s);
    coalition__envelope__init(&s->env);
    s->env.version = WIRE_VERSION;
    s->env.partner_id = (char *)partner_id;
    s->env.terminal_id = "till-1";
    s->env.site_id = (char *)site_id;
    s->env.txn_id = (char *)txn_id;
    s->env.client_time_ms = CLIENT_TIME_MS;
    return s;
}

static envelope_t *earn(seed_t *s, const char *member_id, int64_t amount_minor,
                        const char *currency)
{
    coalition__earn_request__init(&s->earn);
    s->earn.member_id = (char *)member_id;
    s->earn.amount_minor = amount_minor;
    s->earn.currency = (char *)currency;
    s->env.body_case = COALITION__ENVELOPE__BODY_EARN;
    s->env.earn = &s->earn;
    return &s->env;
}

static envelope_t *burn(seed_t *s, const char *member_id, int64_t points, bool allow_partial)
{
    coalition__burn_request__init(&s->burn);
    s->burn.member_id = (char *)member_id;
    s->burn.points = points;
    s->burn.allow_partial = allow_partial;
    s->env.body_case = COALITION__ENVELOPE__BODY_BURN;
    s->env.burn = &s->burn;
    return &s->env;
}

static envelope_t *refund(seed_t *s, const char *original, const char *original_site,
                          int64_t amount_minor, int64_t points)
{
    coalition__refund_request__init(&s->refund);
    s->refund.original_txn_id = (char *)original;
    s->refund.original_site_id = (char *)original_site;
    s->refund.amount_minor = amount_minor;
    s->refund.points = points;
    s->env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    s->env.refund = &s->refund;
    return &s->env;
}

static envelope_t *void_of(seed_t *s, const char *original, const char *original_site)
{
    coalition__void_request__init(&s->void_request);
    s->void_request.original_txn_id = (char *)original;
    s->void_request.original_site_id = (char *)original_site;
    s->env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    s->env.void_request = &s->void_request;
    return &s->env;
}

static envelope_t *member_body(seed_t *s, const char *member_id, bool balance)
{
    if (balance) {
        coalition__balance_request__init(&s->balance);
        s->balance.member_id = (char *)member_id;
        s->env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
        s->env.balance = &s->balance;
    } else {
        coalition__enroll_request__init(&s->enroll);
        s->enroll.member_id = (char *)member_id;
        s->env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
        s->env.enroll = &s->enroll;
    }
    return &s->env;
}

static envelope_t *partner_add(seed_t *s, const char *partner_id, int64_t rate_milli,
                               const char *currency)
{
    coalition__partner_add_request__init(&s->partner_add);
    s->partner_add.partner_id = (char *)partner_id;
    s->partner_add.earn_rate_milli = rate_milli;
    s->partner_add.currency = (char *)currency;
    s->env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    s->env.partner_add = &s->partner_add;
    return &s->env;
}

/* Every body kind as its socket accepts it (partner fuelco at site main, or the operator). */
/* Test card numbers (Luhn-valid), by card: an earn, a burn, a PAN-less resend, a bank's
 * replacement and the operator's enrolment for a bank. */
static Coalition__Card *card(Coalition__Card *c, const char *pan, const char *masked)
{
    coalition__card__init(c);
    c->pan = (char *)pan;
    c->masked = (char *)masked;
    return c;
}

static void card_seeds(void)
{
    seed_t s;
    earn(head(&s, "fuelco", "main", "card-0001"), "", 3000, "EUR");
    s.earn.card = card(&s.card, "4532015112830366", "453201******0366");
    write_envelope("card-earn", &s.env);
    s.card.pan = "";
    write_envelope("card-earn-resent-without-pan", &s.env);
    burn(head(&s, "grocer", "main", "card-0002"), "", 20, false);
    s.burn.card = card(&s.card, "4916338506082832", "491633******2832");
    write_envelope("card-burn", &s.env);
    head(&s, "visa", "hq", "rt-1");
    coalition__card_enroll_request__init(&s.card_enroll);
    s.card_enroll.bank_ref = "cust-1001";
    s.card_enroll.action = COALITION__CARD_ACTION__CARD_REPLACE;
    s.card_enroll.card = card(&s.card, "4532015112830366", "453201******0366");
    s.card_enroll.new_card = card(&s.new_card, "4916338506082832", "491633******2832");
    s.env.body_case = COALITION__ENVELOPE__BODY_CARD_ENROLL;
    s.env.card_enroll = &s.card_enroll;
    write_envelope("card-replace-by-bank", &s.env);
    head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "enr-1");
    coalition__card_enroll_request__init(&s.card_enroll);
    s.card_enroll.bank_ref = "cust-1002";
    s.card_enroll.card = card(&s.card, "4532015112830366", "453201******0366");
    s.card_enroll.bank_id = "visa";
    s.card_enroll.member_id = "carol";
    s.env.body_case = COALITION__ENVELOPE__BODY_CARD_ENROLL;
    s.env.card_enroll = &s.card_enroll;
    write_envelope("card-enrol-by-operator", &s.env);
}

/* The points lifecycle's operator requests. */
static void lifecycle_seeds(void)
{
    seed_t s;
    Coalition__ExpiryPolicyRequest policy = COALITION__EXPIRY_POLICY_REQUEST__INIT;
    policy.term_seconds = 1095 * 86400;
    policy.inactivity_seconds = 365 * 86400;
    head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "pol-1");
    s.env.body_case = COALITION__ENVELOPE__BODY_EXPIRY_POLICY;
    s.env.expiry_policy = &policy;
    write_envelope("expiry-policy", &s.env);
    Coalition__ExpireRequest expire = COALITION__EXPIRE_REQUEST__INIT;
    expire.as_of_ms = CLIENT_TIME_MS;
    expire.member_id = "alice";
    head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "exp-1");
    s.env.body_case = COALITION__ENVELOPE__BODY_EXPIRE;
    s.env.expire = &expire;
    write_envelope("expire-member", &s.env);
    Coalition__Tier tiers[2] = {COALITION__TIER__INIT, COALITION__TIER__INIT}, *tp[2];
    tiers[0].name = "Base";
    tiers[0].multiplier_milli = 1000;
    tiers[1].name = "Gold";
    tiers[1].threshold_points = 20000;
    tiers[1].multiplier_milli = 2000;
    tp[0] = &tiers[0];
    tp[1] = &tiers[1];
    Coalition__TierSettingsRequest t = COALITION__TIER_SETTINGS_REQUEST__INIT;
    t.tiers = tp;
    t.n_tiers = 2;
    head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "tiers-1");
    s.env.body_case = COALITION__ENVELOPE__BODY_TIER_SETTINGS;
    s.env.tier_settings = &t;
    write_envelope("tier-settings", &s.env);
    Coalition__RuleAddRequest rule = COALITION__RULE_ADD_REQUEST__INIT;
    rule.partner_id = "grocer";
    rule.kind = COALITION__RULE_KIND__RULE_THRESHOLD;
    rule.threshold_minor = 5000;
    rule.bonus_points = 100;
    head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "rule-1");
    s.env.body_case = COALITION__ENVELOPE__BODY_RULE_ADD;
    s.env.rule_add = &rule;
    write_envelope("rule-add-threshold", &s.env);
    Coalition__RuleEndRequest end = COALITION__RULE_END_REQUEST__INIT;
    end.partner_id = "grocer";
    end.rule_id = 7;
    head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "rule-end-1");
    s.env.body_case = COALITION__ENVELOPE__BODY_RULE_END;
    s.env.rule_end = &end;
    write_envelope("rule-end", &s.env);
}

static void valid_envelopes(void)
{
    seed_t s;
    write_envelope("earn", earn(head(&s, "fuelco", "main", "fuel-0001"), "alice", 6150, "EUR"));
    write_envelope("earn-jpy", earn(head(&s, "fuelco", "main", "fuel-0002"), "bob", 1200, "JPY"));
    write_envelope("burn", burn(head(&s, "fuelco", "main", "fuel-0003"), "alice", 50, false));
    write_envelope("burn-partial",
                   burn(head(&s, "fuelco", "main", "fuel-0004"), "alice", 5000, true));
    write_envelope("refund-money",
                   refund(head(&s, "fuelco", "main", "fuel-0005"), "fuel-0001", "", 2000, 0));
    write_envelope("refund-points",
                   refund(head(&s, "fuelco", "main", "fuel-0006"), "fuel-0003", "north", 0, 20));
    write_envelope("refund-all",
                   refund(head(&s, "fuelco", "main", "fuel-0007"), "fuel-0001", "", 0, 0));
    write_envelope("void", void_of(head(&s, "fuelco", "main", "fuel-0008"), "fuel-0003", ""));
    write_envelope("void-other-site",
                   void_of(head(&s, "fuelco", "main", "fuel-0009"), "fuel-0001", "north"));
    write_envelope("balance", member_body(head(&s, "fuelco", "main", "fuel-0010"), "alice", true));
    write_envelope("enroll-partner",
                   member_body(head(&s, "fuelco", "main", "fuel-0011"), "dave", false));
    write_envelope(
        "enroll-operator",
        member_body(head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "op-1"), "carol", false));
    write_envelope("partner-add",
                   partner_add(head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "op-2"), "grocer",
                               1500, "EUR"));
    /* A till leaves partner and site to its agent. */
    write_envelope("till-earn-unstamped", earn(head(&s, "", "", "till-0001"), "alice", 999, "EUR"));
    card_seeds();
}

/* Requests one check or another refuses. */
static void refused_envelopes(void)
{
    seed_t s;
    envelope_t *env = earn(head(&s, "fuelco", "main", "fuel-0101"), "alice", 100, "EUR");
    env->version = WIRE_VERSION + 1;
    write_envelope("bad-version", env);
    write_envelope("bad-currency",
                   earn(head(&s, "fuelco", "main", "fuel-0102"), "alice", 100, "ZZZ"));
    write_envelope("bad-amount", earn(head(&s, "fuelco", "main", "fuel-0103"), "alice", -5, "EUR"));
    write_envelope("bad-member",
                   burn(head(&s, "fuelco", "main", "fuel-0104"), "al ice", 10, false));
    write_envelope("bad-txn-too-long",
                   burn(head(&s, "fuelco", "main", too_long_txn), "alice", 10, false));
    write_envelope("bad-reserved-txn",
                   burn(head(&s, "fuelco", "main", "~v1234"), "alice", 10, false));
    write_envelope("bad-refund-both",
                   refund(head(&s, "fuelco", "main", "fuel-0105"), "fuel-0001", "", 10, 10));
    write_envelope("bad-reverses-itself",
                   void_of(head(&s, "fuelco", "main", "fuel-0106"), "fuel-0106", ""));
    write_envelope("bad-partner-add-from-partner",
                   partner_add(head(&s, "fuelco", "main", "fuel-0107"), "evil", 1000, "EUR"));
    write_envelope(
        "bad-operator-earn",
        earn(head(&s, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, "op-3"), "alice", 100, "EUR"));
    write_envelope("bad-other-partner",
                   earn(head(&s, "grocer", "main", "groc-0001"), "alice", 100, "EUR"));
    write_envelope("bad-no-body", &head(&s, "fuelco", "main", "fuel-0108")->env);
    /* Long unchecked strings: a decline echoes two of them. */
    write_envelope("bad-long-unstamped", earn(head(&s, "", "", long_a), long_b, 1, "EUR"));
}

/* Findings, fixed and kept as seeds so every run replays them: nearly a whole wire message
 * of unchecked strings, whose decline once echoed txn id, site and member and no longer
 * fit a wire message (a decline now echoes only valid ids). */
static void findings(void)
{
    seed_t s;
    long_a[0] = '~'; /* the agent's reserved prefix (AGENT_TXN_PREFIX) */
    write_envelope("decline-over-wire-limit", earn(head(&s, "", long_b, long_a), long_c, 1, "EUR"));
    long_a[0] = 'a';
}

/* Authorizations as the broker sends them (fuzz_envelope reads both message types). */
static void authorizations(void)
{
    static uint8_t hash[WIRE_HASH_BYTES] = {0x5a, 0x01, 0x02};
    seed_t s;
    envelope_t *env = earn(head(&s, "fuelco", "main", "fuel-0001"), "alice", 6150, "EUR");
    authorization_t auth;
    wire_auth_decline(&auth, env, RC_APPROVED, "Approved: 123 points");
    wire_auth_echo(&auth, env, hash);
    auth.auth_code = "5A0102";
    auth.points = 123;
    auth.balance = 456;
    auth.seq = 7;
    auth.replay = true;
    size_t len = 0;
    uint8_t *bytes = wire_pack_auth(&auth, &len);
    if (bytes == NULL)
        exit(1);
    write_file("fuzz_envelope", "auth-approved", bytes, len);
    free(bytes);
    wire_auth_decline(&auth, NULL, RC_FORMAT_ERROR, "Declined 30: message is not a valid envelope");
    bytes = wire_pack_auth(&auth, &len);
    if (bytes == NULL)
        exit(1);
    write_file("fuzz_envelope", "auth-declined", bytes, len);
    free(bytes);
}

/* ---- fuzz_ledger sequences (ledger_ops.h; value bytes index fuzz_ledger's VALUES:
 * 1 -> 1, 5 -> 100, 6 -> 250, 7 -> 1000, 8 -> 12345, 10 -> AMOUNT_MINOR_MAX, 0 -> 0) ---- */

/* kind, flags, partner, site, txn, member, value, original (txn | site << 3 | currency << 4) */
#define OP(kind, flags, partner, site, txn, member, value, original)                               \
    {                                                                                              \
        LEDGER_OP_##kind, (flags), (partner), (site), (txn), (member), (value), (original)         \
    }
#define JOIN LEDGER_FLAG_JOIN_BATCH
#define PARTIAL LEDGER_FLAG_ALLOW_PARTIAL
#define ORIGINAL_SITE LEDGER_FLAG_ORIGINAL_SITE
#define CURRENCY LEDGER_FLAG_CURRENCY
/* The world's first six requests are its setup: a sequence's own start at index 6. */
#define FIRST_OWN 6

typedef uint8_t op_t[LEDGER_OP_BYTES];

static void write_ops(const char *name, const op_t *ops, size_t count)
{
    write_file("fuzz_ledger", name, ops, count * LEDGER_OP_BYTES);
}

/* Earn, burn, partial refunds of both, a void after a refund, a repeat, the balance. */
static const op_t LIFE[] = {
    OP(EARN, 0, 0, 0, 0, 0, 8, 0),         OP(BURN, 0, 0, 0, 1, 0, 3, 0),
    OP(REFUND_MONEY, 0, 0, 0, 2, 0, 7, 0), OP(REFUND_POINTS, 0, 0, 0, 3, 0, 0, 1),
    OP(VOID, 0, 0, 0, 4, 0, 0, 0),         OP(REPEAT, 0, 0, 0, 0, 0, FIRST_OWN, 0),
    OP(BALANCE, 0, 0, 0, 5, 0, 0, 0),      OP(BURN, 0, 0, 0, 5, 0, 13, 0),
    OP(BURN, PARTIAL, 0, 0, 6, 0, 10, 0),  OP(REFUND_MONEY, 0, 0, 0, 5, 0, 0, 0),
};

/* A void before its original: the original arrives and is declined 12; repeats of both. */
static const op_t AHEAD[] = {
    OP(VOID, 0, 1, 0, 1, 1, 0, 0),
    OP(EARN, 0, 1, 0, 0, 1, 5, 0),
    OP(REPEAT, 0, 0, 0, 0, 0, FIRST_OWN, 0),
    OP(REPEAT, 0, 0, 0, 0, 0, FIRST_OWN + 1, 0),
    OP(REFUND_MONEY, ORIGINAL_SITE, 1, 1, 2, 1, 0, 0 | 0 << 3),
    OP(REFUND_POINTS, 0, 1, 0, 3, 1, 1, 4),
    OP(BURN, 0, 1, 0, 4, 1, 1, 0),
};

/* One txn id at two sites, reversals naming the other site's original. */
static const op_t SITES[] = {
    OP(EARN, 0, 0, 0, 0, 1, 7, 0),
    OP(EARN, 0, 0, 1, 0, 1, 7, 0),
    OP(REFUND_MONEY, ORIGINAL_SITE, 0, 1, 1, 1, 5, 0 | 0 << 3),
    OP(VOID, ORIGINAL_SITE, 0, 0, 1, 1, 0, 0 | 1 << 3),
    OP(BURN, 0, 0, 1, 2, 1, 1, 0),
    OP(VOID, 0, 0, 1, 3, 1, 0, 2),
};

/* An unknown partner (03, not remembered), added, then the same request decided anew. */
static const op_t LATE_PARTNER[] = {
    OP(EARN, 0, 3, 0, 0, 0, 7, 0),
    OP(PARTNER_ADD, CURRENCY, 3, 0, 6, 0, 7, 0 << 4),
    OP(REPEAT, 0, 0, 0, 0, 0, FIRST_OWN, 0),
    OP(ENROLL, 0, 0, 0, 1, 3, 0, 0),
    OP(EARN, 0, 3, 0, 1, 3, 8, 0),
    OP(ENROLL, LEDGER_FLAG_AS_OPERATOR, 0, 0, 0, 3, 0, 0),
    OP(PARTNER_ADD, CURRENCY, 0, 0, 7, 0, 7, 1 << 4),
    OP(ENROLL, LEDGER_FLAG_WRONG_SOCKET, 0, 0, 2, 4, 0, 0),
};

/* Several requests in one batch: an earn, a partial burn and its void, a repeat. */
static const op_t BATCH[] = {
    OP(EARN, 0, 2, 0, 0, 2, 5, 0),
    OP(BURN, JOIN | PARTIAL, 2, 0, 1, 2, 6, 0),
    OP(VOID, JOIN, 2, 0, 2, 2, 0, 1),
    OP(EARN, JOIN, 2, 0, 0, 2, 5, 0),
    OP(BURN, 0, 2, 0, 3, 2, 1, 0),
    OP(REFUND_POINTS, JOIN, 2, 0, 4, 2, 1, 3),
    OP(EARN, LEDGER_FLAG_WRONG_SOCKET, 2, 0, 5, 2, 5, 0),
};

/* Key reuse (94), the largest amounts at every contract, partial burns at the limit. */
static const op_t LIMITS[] = {
    OP(EARN, 0, 0, 0, 0, 0, 7, 0),
    OP(BURN, 0, 0, 0, 0, 0, 1, 0),
    OP(REPEAT, 0, 0, 0, 0, 0, FIRST_OWN + 1, 0),
    OP(EARN, CURRENCY, 0, 0, 0, 0, 7, 1 << 4),
    OP(EARN, 0, 1, 0, 0, 0, 10, 0),
    OP(BURN, PARTIAL, 1, 0, 1, 0, 10, 0),
    OP(EARN, 0, 2, 0, 0, 0, 10, 0),
    OP(REFUND_MONEY, 0, 2, 0, 1, 0, 10, 0),
    OP(REFUND_MONEY, 0, 2, 0, 2, 0, 0, 0),
};

/* Settlement: a prepaid contract and its top-up, earns and a burn, an early close, the
 * issuer-pays model from the next window, a burn split over issuers and its refund. */
static const op_t SETTLE[] = {
    OP(CONTRACT, 0, 0, 5, 0, 2, 7, 20), OP(SETTLE, 0, 0, 0, 1, 0, 10, 0),
    OP(EARN, 0, 0, 0, 0, 0, 5, 0),      OP(EARN, 0, 1, 0, 1, 0, 5, 0),
    OP(BURN, 0, 2, 0, 0, 0, 1, 0),      OP(SETTLE, 0, 0, 1, 2, 1, 0, 0),
    OP(SETTLE, 0, 0, 1, 3, 2, 1, 0),    OP(SETTLE, 0, 0, 1, 4, 1, 1, 0),
    OP(BURN, 0, 1, 0, 2, 0, 1, 0),      OP(REFUND_POINTS, 0, 1, 0, 3, 0, 0, 2),
    OP(SETTLE, 0, 0, 0, 5, 1, 0, 0),
};

#define WRITE_OPS(name, ops) write_ops(name, ops, sizeof ops / sizeof ops[0])

static void ledger_sequences(void)
{
    WRITE_OPS("life", LIFE);
    WRITE_OPS("reversal-ahead", AHEAD);
    WRITE_OPS("two-sites", SITES);
    WRITE_OPS("late-partner", LATE_PARTNER);
    WRITE_OPS("batch", BATCH);
    WRITE_OPS("limits", LIMITS);
    WRITE_OPS("settlement", SETTLE);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR FINDINGS_DIR\n");
        return 2;
    }
    memset(long_a, 'a', LONG_FIELD_BYTES);
    memset(long_b, 'b', LONG_FIELD_BYTES);
    memset(long_c, 'c', LONG_FIELD_BYTES);
    memset(too_long_txn, 't', TOO_LONG_TXN_BYTES);
    out_dir = argv[1];
    valid_envelopes();
    lifecycle_seeds();
    refused_envelopes();
    authorizations();
    ledger_sequences();
    findings(); /* fixed: into the corpus; FINDINGS_DIR is for inputs that fail today */
    return 0;
}
