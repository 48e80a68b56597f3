/* Cards in the ledger, in process (cards.c, verify_cards.c), with a real LMDB ledger in a
 * temporary directory and a card key ring made here: key rotation (old cards found under
 * their key, new ones stored under the current one), a request resent without its card
 * number, unclaimed points lapsing on the writer's clock (and only once), refunds that
 * follow unclaimed points, the bank rules, and verify against tampered card, member and
 * bank reference records. */
#include "ledger_internal.h"

#include "card.h"
#include "errors.h"
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

#define EXPECT_OK(what, rc)                                                                        \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != CL_OK)                                                                          \
            fail_msg("%s: expected CL_OK, got %d (%s)", (what), rc_, cl_strerror(rc_));            \
    } while (0)

#define NOW_MS INT64_C(1800000000000)
#define PERIOD_MS INT64_C(1000)
#define PAN_A "4532015112830366"
#define PAN_B "4916338506082832"
#define PAN_C "4111111111111111"
_Static_assert(sizeof PAN_C == 17, "16 digits");
#define WHY_BYTES 512

typedef struct fixture {
    char dir[64];
    ledger_t *l;
    card_keys_t ring; /* the broker's keys */
    unsigned ops;
} fixture_t;

typedef struct result {
    int code;
    uint64_t seq;
    int64_t points, balance;
    bool replay;
    char member[MEMBER_ID_LEN_MAX + 1];
    char text[RECEIPT_TEXT_BYTES_MAX];
} result_t;

typedef struct request {
    envelope_t env;
    char txn[TXN_ID_LEN_MAX + 1];
    Coalition__Card card, new_card;
    char pan[PAN_DIGITS_MAX + 1], masked[PAN_MASKED_BYTES];
    char new_pan[PAN_DIGITS_MAX + 1], new_masked[PAN_MASKED_BYTES];
    Coalition__EarnRequest earn;
    Coalition__RefundRequest refund;
    Coalition__CardEnrollRequest enrol;
    Coalition__BankAddRequest bank_add;
    Coalition__PartnerAddRequest partner_add;
    Coalition__EnrollRequest member_add;
    Coalition__CardSettingsRequest settings;
} request_t;

static envelope_t *request_init(request_t *r, const char *partner, const char *txn)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    snprintf(r->txn, sizeof r->txn, "%s", txn);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner;
    r->env.terminal_id = "t1";
    r->env.site_id = strcmp(partner, OPERATOR_PARTNER_ID) == 0 ? OPERATOR_SITE_ID : "s1";
    r->env.txn_id = r->txn;
    r->env.client_time_ms = NOW_MS;
    return &r->env;
}

static Coalition__Card *card_set(Coalition__Card *c, char *pan_buf, char *masked_buf,
                                 const char *pan)
{
    coalition__card__init(c);
    snprintf(pan_buf, PAN_DIGITS_MAX + 1, "%s", pan);
    pan_mask(pan, masked_buf);
    c->pan = pan_buf;
    c->masked = masked_buf;
    return c;
}

/* As the broker does: validate, look the cards up under the ring, clear the numbers,
 * hash, apply in a batch of its own at `now_ms`. with_pan false: the number is cleared
 * before the lookup (a request resent without it). */
static result_t submit(fixture_t *f, envelope_t *env, int64_t now_ms, bool with_pan)
{
    result_t res;
    memset(&res, 0, sizeof res);
    char why[WHY_BYTES] = "";
    res.code =
        wire_validate(env, strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0, why, sizeof why);
    if (res.code != RC_APPROVED)
        fail_msg("%s refused by wire_validate: %s", env->txn_id, why);
    ledger_cards_t cards;
    memset(&cards, 0, sizeof cards);
    const Coalition__Card *cs[2];
    size_t n = wire_cards_of(env, cs);
    card_lookup_t *out[2] = {&cards.card, &cards.new_card};
    for (size_t i = 0; i < n && with_pan; i++)
        EXPECT_OK("lookup", card_lookup_of(&f->ring, cs[i]->pan, out[i]));
    wire_clear_pans(env);
    uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
    size_t len = 0;
    EXPECT_OK("hash", wire_request_hash(env, hash));
    EXPECT_OK("begin", ledger_batch_begin(f->l));
    EXPECT_OK("apply", ledger_apply_cards(f->l, NULL, env, &cards, hash, now_ms, &reply, &len));
    EXPECT_OK("commit", ledger_batch_commit(f->l));
    authorization_t *auth = wire_auth_decode(reply, len);
    assert_non_null(auth);
    res.code = auth->code;
    res.seq = auth->seq;
    res.points = auth->points;
    res.balance = auth->balance;
    res.replay = auth->replay;
    snprintf(res.member, sizeof res.member, "%s", auth->member_id);
    snprintf(res.text, sizeof res.text, "%s", auth->text);
    wire_auth_free(auth);
    free(reply);
    return res;
}

static void expect_code(const char *what, const result_t *res, int code, const char *part)
{
    if (res->code != code)
        fail_msg("%s: expected %02d, got %02d (%s)", what, code, res->code, res->text);
    if (part != NULL && strstr(res->text, part) == NULL)
        fail_msg("%s: expected the text to contain \"%s\", got \"%s\"", what, part, res->text);
}

static void expect_verify(fixture_t *f, const char *part)
{
    char why[WHY_BYTES] = "";
    int rc = ledger_verify(f->l, why, sizeof why);
    if (part == NULL && rc != CL_OK)
        fail_msg("verify: %s", why);
    if (part != NULL && (rc != CL_ERR_CORRUPT || strstr(why, part) == NULL))
        fail_msg("verify: expected a violation mentioning \"%s\", got %d: %s", part, rc, why);
}

static const char *op_txn(fixture_t *f, char buf[TXN_ID_LEN_MAX + 1])
{
    snprintf(buf, TXN_ID_LEN_MAX + 1, "op-%u", ++f->ops);
    return buf;
}

static result_t op_partner(fixture_t *f, const char *id)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = (char *)id;
    r.partner_add.earn_rate_milli = 1000;
    r.partner_add.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    return submit(f, &r.env, NOW_MS, true);
}

static result_t op_bank(fixture_t *f, const char *id)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__bank_add_request__init(&r.bank_add);
    r.bank_add.bank_id = (char *)id;
    r.env.body_case = COALITION__ENVELOPE__BODY_BANK_ADD;
    r.env.bank_add = &r.bank_add;
    return submit(f, &r.env, NOW_MS, true);
}

static result_t op_member(fixture_t *f, const char *id)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__enroll_request__init(&r.member_add);
    r.member_add.member_id = (char *)id;
    r.env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    r.env.enroll = &r.member_add;
    return submit(f, &r.env, NOW_MS, true);
}

/* A bank's enrolment (bank "visa" on its own connection unless `bank` names another). */
static result_t enrol(fixture_t *f, const char *bank, const char *txn, const char *pan,
                      const char *ref, const char *member, int action, const char *new_pan,
                      int64_t now_ms)
{
    request_t r;
    request_init(&r, bank, txn);
    coalition__card_enroll_request__init(&r.enrol);
    r.enrol.bank_ref = (char *)ref;
    r.enrol.member_id = (char *)member;
    r.enrol.action = action;
    r.enrol.card = card_set(&r.card, r.pan, r.masked, pan);
    if (new_pan != NULL)
        r.enrol.new_card = card_set(&r.new_card, r.new_pan, r.new_masked, new_pan);
    r.env.body_case = COALITION__ENVELOPE__BODY_CARD_ENROLL;
    r.env.card_enroll = &r.enrol;
    return submit(f, &r.env, now_ms, true);
}

static result_t card_earn(fixture_t *f, const char *txn, const char *pan, int64_t minor,
                          int64_t now_ms, bool with_pan)
{
    request_t r;
    request_init(&r, "fuel", txn);
    coalition__earn_request__init(&r.earn);
    r.earn.member_id = "";
    r.earn.amount_minor = minor;
    r.earn.currency = "EUR";
    r.earn.card = card_set(&r.card, r.pan, r.masked, pan);
    r.env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r.env.earn = &r.earn;
    return submit(f, &r.env, now_ms, with_pan);
}

static result_t refund_all(fixture_t *f, const char *txn, const char *original, int64_t now_ms)
{
    request_t r;
    request_init(&r, "fuel", txn);
    coalition__refund_request__init(&r.refund);
    r.refund.original_txn_id = (char *)original;
    r.refund.original_site_id = "";
    r.env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    r.env.refund = &r.refund;
    return submit(f, &r.env, now_ms, true);
}

static int64_t balance_of(fixture_t *f, const char *account)
{
    int64_t b = 0;
    EXPECT_OK(account, ledger_account_balance(f->l, account, &b));
    return b;
}

static void ring_with(card_keys_t *ring, size_t count)
{
    memset(ring, 0, sizeof *ring);
    ring->count = count;
    for (size_t i = 0; i < count; i++) {
        ring->keys[i].id = (uint32_t)(i + 1);
        memset(ring->keys[i].secret, 0x11 * (int)(i + 1), CARD_KEY_BYTES);
    }
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_card_ledger.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    EXPECT_OK("init", ledger_init(f->dir));
    EXPECT_OK("open", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    ring_with(&f->ring, 1);
    result_t res = op_partner(f, "fuel");
    expect_code("fuel", &res, RC_APPROVED, NULL);
    res = op_bank(f, "visa");
    expect_code("visa", &res, RC_APPROVED, NULL);
    res = op_bank(f, "mc");
    expect_code("mc", &res, RC_APPROVED, NULL);
    res = op_member(f, "alice");
    expect_code("alice", &res, RC_APPROVED, NULL);
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__card_settings_request__init(&r.settings);
    r.settings.unclaimed_period_seconds = PERIOD_MS / 1000;
    r.env.body_case = COALITION__ENVELOPE__BODY_CARD_SETTINGS;
    r.env.card_settings = &r.settings;
    res = submit(f, &r.env, NOW_MS, true);
    expect_code("claim period", &res, RC_APPROVED, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ledger_destroy(&f->l);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------- */

typedef struct key_seen {
    const char *txn;
    uint32_t key_id;
} key_seen_t;

static int find_key(const journal_entry_t *e, void *ctx)
{
    key_seen_t *k = ctx;
    if (strcmp(e->txn_id, k->txn) == 0)
        k->key_id = e->card_key_id;
    return CL_OK;
}

static uint32_t key_of_entry(fixture_t *f, const char *txn)
{
    key_seen_t k = {txn, 0};
    EXPECT_OK("journal", ledger_journal_foreach(f->l, 1, find_key, &k));
    return k.key_id;
}

static void rotation_keeps_cards_under_their_key(void **state)
{
    fixture_t *f = *state;
    result_t res = enrol(f, "visa", "e1", PAN_A, "r-alice", "alice", 0, NULL, NOW_MS);
    expect_code("enrol A under key 1", &res, RC_APPROVED, "enrolled to member alice");
    EXPECT_EQ("A stored under key 1", 1, key_of_entry(f, "e1"));
    ring_with(&f->ring, 2); /* rotated: key 2 current, key 1 still there */
    res = card_earn(f, "c1", PAN_A, 1000, NOW_MS, true);
    expect_code("A still found after the rotation", &res, RC_APPROVED, NULL);
    EXPECT_STR("A's member", "alice", res.member);
    EXPECT_EQ("the earn names A under key 1", 1, key_of_entry(f, "c1"));
    res = enrol(f, "visa", "e2", PAN_B, "r-alice", "", 0, NULL, NOW_MS);
    expect_code("B enrolled after the rotation", &res, RC_APPROVED, "member alice");
    EXPECT_EQ("B stored under key 2", 2, key_of_entry(f, "e2"));
    uint64_t under = 0;
    EXPECT_OK("cards under key 1", ledger_cards_under_key(f->l, 1, &under));
    EXPECT_EQ("key 1 still holds A (card-key retire 1 refuses)", 1, under);
    EXPECT_OK("cards under key 3", ledger_cards_under_key(f->l, 3, &under));
    EXPECT_EQ("none under a key never used", 0, under);
    res = enrol(f, "visa", "e3", PAN_A, "r-alice", "alice", 0, NULL, NOW_MS);
    expect_code("A again: unchanged, found under key 1", &res, RC_INVALID_TRANSACTION, "unchanged");
    expect_verify(f, NULL);
    ring_with(&f->ring, 1); /* key 2 gone from the ring: B is not found any more */
    res = card_earn(f, "c2", PAN_B, 1000, NOW_MS, true);
    expect_code("B without its key earns unclaimed", &res, RC_APPROVED, "unclaimed");
    expect_verify(f, NULL);
}

static void a_request_without_its_card_number_applies_nothing(void **state)
{
    fixture_t *f = *state;
    result_t res = enrol(f, "visa", "e1", PAN_A, "r-alice", "alice", 0, NULL, NOW_MS);
    expect_code("enrol", &res, RC_APPROVED, NULL);
    res = card_earn(f, "c1", PAN_A, 1000, NOW_MS, false);
    expect_code("resent without the number", &res, RC_INVALID_TRANSACTION, "not received");
    res = card_earn(f, "c1", PAN_A, 1000, NOW_MS, true);
    expect_code("the original arriving after it: the same answer", &res, RC_INVALID_TRANSACTION,
                "not received");
    EXPECT_TRUE("a replay", res.replay);
    EXPECT_EQ("nothing applied", 0, balance_of(f, "member:alice"));
    res = card_earn(f, "c2", PAN_A, 1000, NOW_MS, true);
    expect_code("an earn with the number", &res, RC_APPROVED, NULL);
    res = card_earn(f, "c2", PAN_A, 1000, NOW_MS, false);
    expect_code("its resend without it: the approval again", &res, RC_APPROVED, NULL);
    EXPECT_TRUE("a replay", res.replay);
    EXPECT_EQ("applied once", 10, balance_of(f, "member:alice"));
    /* Another card with the same masked form under the same txn id: another request. */
    res = card_earn(f, "c2", "4532010000060366", 1000, NOW_MS, true); /* PAN_A's mask */
    expect_code("same mask, other card, same txn id", &res, RC_DUPLICATE_KEY, "another request");
    EXPECT_EQ("nothing applied", 10, balance_of(f, "member:alice"));
    expect_verify(f, NULL);
}

static void unclaimed_points_lapse_once_and_refunds_follow_them(void **state)
{
    fixture_t *f = *state;
    result_t res = card_earn(f, "u1", PAN_C, 1000, NOW_MS, true);
    expect_code("unclaimed earn", &res, RC_APPROVED, "unclaimed");
    char first[MEMBER_ID_LEN_MAX + 1];
    snprintf(first, sizeof first, "%s", res.member);
    EXPECT_TRUE("its own account", first[0] == WIRE_RESERVED_MEMBER_PREFIX);
    size_t lapsed = 99;
    EXPECT_OK("lapse early", ledger_lapse_unclaimed(f->l, NOW_MS + PERIOD_MS - 1, 8, &lapsed));
    EXPECT_EQ("not before the period ends", 0, lapsed);
    EXPECT_OK("lapse", ledger_lapse_unclaimed(f->l, NOW_MS + PERIOD_MS, 8, &lapsed));
    EXPECT_EQ("lapsed at the period's end", 1, lapsed);
    EXPECT_OK("lapse again", ledger_lapse_unclaimed(f->l, NOW_MS + 10 * PERIOD_MS, 8, &lapsed));
    EXPECT_EQ("only once", 0, lapsed);
    EXPECT_EQ("breakage", 10, balance_of(f, ACCOUNT_BREAKAGE));
    res = card_earn(f, "u2", PAN_C, 500, NOW_MS + 2 * PERIOD_MS, true);
    expect_code("an earn after the lapse", &res, RC_APPROVED, "unclaimed");
    EXPECT_TRUE("a new unclaimed account", strcmp(first, res.member) != 0);
    res = enrol(f, "visa", "e1", PAN_C, "r-alice", "alice", 0, NULL, NOW_MS + 2 * PERIOD_MS);
    expect_code("enrolled", &res, RC_APPROVED, "5 unclaimed points moved");
    EXPECT_EQ("alice has what was unclaimed since the lapse", 5, balance_of(f, "member:alice"));
    res = refund_all(f, "r1", "u1", NOW_MS + 2 * PERIOD_MS);
    expect_code("refund of the lapsed earn", &res, RC_APPROVED, NULL);
    EXPECT_EQ("out of breakage", 0, balance_of(f, ACCOUNT_BREAKAGE));
    res = refund_all(f, "r2", "u2", NOW_MS + 2 * PERIOD_MS);
    expect_code("refund of the claimed earn", &res, RC_APPROVED, NULL);
    EXPECT_STR("taken from the member that claimed it", "alice", res.member);
    EXPECT_EQ("alice", 0, balance_of(f, "member:alice"));
    expect_verify(f, NULL);
}

/* A claim that moves no points (the card's earn refunded first), and a replacement card
 * that claims points: verify agrees with the ledger on the member's activity. */
static void review_claim_of_nothing(void **state)
{
    fixture_t *f = *state;
    result_t res = card_earn(f, "z1", PAN_C, 1000, NOW_MS + 1000, true);
    expect_code("unclaimed earn", &res, RC_APPROVED, "unclaimed");
    res = refund_all(f, "zr", "z1", NOW_MS + 2000);
    expect_code("refunded", &res, RC_APPROVED, NULL);
    res = enrol(f, "visa", "e1", PAN_C, "r-alice", "alice", 0, NULL, NOW_MS + 3000);
    expect_code("enrolled", &res, RC_APPROVED, NULL);
    expect_verify(f, NULL);
}

static void review_replace_claim(void **state)
{
    fixture_t *f = *state;
    result_t res = enrol(f, "visa", "e1", PAN_A, "r-alice", "alice", 0, NULL, NOW_MS);
    expect_code("enrolled", &res, RC_APPROVED, NULL);
    res = card_earn(f, "c1", PAN_B, 1000, NOW_MS + 5000, true);
    expect_code("new card earns unclaimed", &res, RC_APPROVED, "unclaimed");
    res = enrol(f, "visa", "e2", PAN_A, "r-alice", "alice", 2, PAN_B, NOW_MS + 6000);
    expect_code("replaced", &res, RC_APPROVED, NULL);
    EXPECT_EQ("the new card's points claimed", 10, balance_of(f, "member:alice"));
    expect_verify(f, NULL);
}

static void bank_rules(void **state)
{
    fixture_t *f = *state;
    result_t res = op_bank(f, "fuel");
    expect_code("a partner is not made a bank", &res, RC_INVALID_TRANSACTION, "already a partner");
    res = op_partner(f, "visa");
    expect_code("a bank is not made a partner", &res, RC_INVALID_TRANSACTION, "is a bank");
    res = enrol(f, "fuel", "e1", PAN_A, "r1", "alice", 0, NULL, NOW_MS);
    expect_code("a partner enrolling cards", &res, RC_NOT_PERMITTED, "not a bank");
    request_t r;
    request_init(&r, OPERATOR_PARTNER_ID, "op-enrol");
    coalition__card_enroll_request__init(&r.enrol);
    r.enrol.bank_ref = "r1";
    r.enrol.bank_id = "nobank";
    r.enrol.card = card_set(&r.card, r.pan, r.masked, PAN_A);
    r.env.body_case = COALITION__ENVELOPE__BODY_CARD_ENROLL;
    r.env.card_enroll = &r.enrol;
    res = submit(f, &r.env, NOW_MS, true);
    expect_code("the operator for an unknown bank", &res, RC_UNKNOWN_PARTNER, "not a bank");
    res = enrol(f, "visa", "e2", PAN_A, "r-new", "", 0, NULL, NOW_MS);
    expect_code("a new cardholder", &res, RC_APPROVED, "member ~m");
    char member[MEMBER_ID_LEN_MAX + 1];
    snprintf(member, sizeof member, "%s", res.member);
    res = enrol(f, "visa", "e3", PAN_B, "r-new", "", 0, NULL, NOW_MS);
    expect_code("the same reference later", &res, RC_APPROVED, NULL);
    EXPECT_STR("maps to the same member", member, res.member);
    res = enrol(f, "visa", "e4", PAN_A, "r-new", "", 2, PAN_B, NOW_MS);
    expect_code("replaced by a card the member already has", &res, RC_INVALID_TRANSACTION,
                "unchanged");
    res = enrol(f, "visa", "e5", PAN_A, "r-new", "", 2, PAN_C, NOW_MS);
    expect_code("replace", &res, RC_APPROVED, "replaced by");
    res = enrol(f, "visa", "e6", PAN_A, "r-new", "", 2, PAN_C, NOW_MS);
    expect_code("replaced again: unchanged", &res, RC_INVALID_TRANSACTION, "unchanged");
    res = enrol(f, "mc", "m1", PAN_C, "m-ref", "alice", 1, NULL, NOW_MS);
    expect_code("another bank unlinking", &res, RC_INVALID_TRANSACTION, "another bank");
    res = enrol(f, "visa", "e7", PAN_A, "r-new", "", 0, NULL, NOW_MS);
    expect_code("a replaced card is retired", &res, RC_INVALID_TRANSACTION, "was replaced");
    res = enrol(f, "visa", "e8", PAN_B, "r-other", "", 2, PAN_C, NOW_MS);
    expect_code("replace naming a card the bank linked to another member", &res,
                RC_INVALID_TRANSACTION, NULL);
    expect_verify(f, NULL);
}

/* Change a record under `key` in `dbi` with `edit`, outside any batch. */
static void tamper(fixture_t *f, MDB_dbi dbi, const void *key, size_t key_len,
                   const ProtobufCMessageDescriptor *desc, void (*edit)(ProtobufCMessage *))
{
    MDB_txn *txn = NULL;
    assert_int_equal(mdb_txn_begin(f->l->env, NULL, 0, &txn), 0);
    ProtobufCMessage *m = NULL;
    EXPECT_OK("get", ledger_get_record(txn, dbi, key, key_len, desc, &m));
    edit(m);
    EXPECT_OK("put", ledger_put_record(txn, dbi, key, key_len, m));
    protobuf_c_message_free_unpacked(m, NULL);
    assert_int_equal(mdb_txn_commit(txn), 0);
}

static void unlink_it(ProtobufCMessage *m)
{
    ((Coalition__CardRecord *)m)->state = COALITION__CARD_STATE__CARD_UNLINKED;
}

static void lapse_it(ProtobufCMessage *m) { ((Coalition__MemberRecord *)m)->lapsed = true; }

static void verify_finds_tampered_card_records(void **state)
{
    fixture_t *f = *state;
    result_t res = enrol(f, "visa", "e1", PAN_A, "r-alice", "alice", 0, NULL, NOW_MS);
    expect_code("enrol", &res, RC_APPROVED, NULL);
    res = card_earn(f, "u1", PAN_C, 1000, NOW_MS, true);
    expect_code("unclaimed", &res, RC_APPROVED, NULL);
    char unclaimed[MEMBER_ID_LEN_MAX + 1];
    snprintf(unclaimed, sizeof unclaimed, "%s", res.member);
    expect_verify(f, NULL);
    card_lookup_t l;
    EXPECT_OK("lookup", card_lookup_of(&f->ring, PAN_A, &l));
    uint8_t key[4 + CARD_HASH_BYTES] = {0, 0, 0, 1};
    memcpy(key + 4, l.hash[0], CARD_HASH_BYTES);
    tamper(f, f->l->db_cards, key, sizeof key, &coalition__card_record__descriptor, unlink_it);
    expect_verify(f, "card record of member alice differs");
    assert_int_equal(teardown(state), 0); /* a fresh ledger for the second edit */
    assert_int_equal(setup(state), 0);
    f = *state;
    res = card_earn(f, "u1", PAN_C, 1000, NOW_MS, true);
    snprintf(unclaimed, sizeof unclaimed, "%s", res.member);
    tamper(f, f->l->db_members, unclaimed, strlen(unclaimed), &coalition__member_record__descriptor,
           lapse_it);
    expect_verify(f, "unclaimed account");
    assert_int_equal(teardown(state), 0); /* and one whose lapse index key is gone */
    assert_int_equal(setup(state), 0);
    f = *state;
    res = card_earn(f, "u1", PAN_C, 1000, NOW_MS, true);
    expect_code("unclaimed", &res, RC_APPROVED, NULL);
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    assert_int_equal(mdb_txn_begin(f->l->env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, f->l->db_unclaimed, &cur), 0);
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
    assert_int_equal(mdb_cursor_del(cur, 0), 0);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);
    expect_verify(f, "missing from the unclaimed index");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(rotation_keeps_cards_under_their_key, setup, teardown),
        cmocka_unit_test_setup_teardown(a_request_without_its_card_number_applies_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unclaimed_points_lapse_once_and_refunds_follow_them, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(bank_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(review_claim_of_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(review_replace_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(verify_finds_tampered_card_records, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
