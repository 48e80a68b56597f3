/* Unit tests for broker/verify: a real LMDB ledger built through ledger_apply (validated
 * requests, as the broker sends them), then tampered with by raw LMDB writes, and the
 * exact first violation `ledger_verify` reports. Also a clean ledger with every kind of
 * entry that must pass, and the 128-bit account sums driven directly. */
#include "verify_internal.h"

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

#define EXPECT_OK(what, rc)                                                                        \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != CL_OK)                                                                          \
            fail_msg("%s: expected CL_OK, got %d (%s)", (what), rc_, cl_strerror(rc_));            \
    } while (0)

#define NOW_MS INT64_C(1700000000000)
#define TEMP_DIR_TEMPLATE "/tmp/test_verify.XXXXXX"
#define PATH_BYTES 256
#define TEXT_BYTES (RECEIPT_TEXT_BYTES_MAX + 64)
#define WHY_BYTES 512
/* Entries made by setup_world: two partner adds and two enrolments. */
#define WORLD_SEQ 4u
#define RECORD_BYTES_MAX LEDGER_ENTRY_BYTES_MAX

typedef struct {
    char dir[PATH_BYTES];
    ledger_t *l;
    unsigned op_count; /* operator txn ids op-1, op-2, ... */
} fixture_t;

typedef struct {
    bool reached_ledger;
    int code;
    int64_t points;
    int64_t balance;
    uint64_t seq;
    bool replay;
    char text[TEXT_BYTES];
} result_t;

/* An envelope with room for every body; do not copy once a body is set. */
typedef struct {
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__RefundRequest refund;
    Coalition__VoidRequest void_request;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerLimitsRequest limits;
    Coalition__PartnerAddRequest partner_add;
} request_t;

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

/* What the broker does with one request: validate, then apply it in a batch of its own. */
static result_t submit(fixture_t *f, const envelope_t *env, bool from_admin)
{
    result_t res;
    memset(&res, 0, sizeof res);
    char why[TEXT_BYTES] = "";
    res.code = wire_validate(env, from_admin, why, sizeof why);
    if (res.code != RC_APPROVED) {
        snprintf(res.text, sizeof res.text, "%s", why);
        return res;
    }
    uint8_t hash[WIRE_HASH_BYTES];
    uint8_t *reply = NULL;
    size_t len = 0;
    EXPECT_OK("wire_request_hash", wire_request_hash(env, hash));
    EXPECT_OK("ledger_batch_begin", ledger_batch_begin(f->l));
    EXPECT_OK("ledger_apply", ledger_apply(f->l, env, hash, NOW_MS, &reply, &len));
    EXPECT_OK("ledger_batch_commit", ledger_batch_commit(f->l));
    authorization_t *auth = wire_auth_decode(reply, len);
    assert_non_null(auth);
    res.reached_ledger = true;
    res.code = auth->code;
    res.points = auth->points;
    res.balance = auth->balance;
    res.seq = auth->seq;
    res.replay = auth->replay;
    snprintf(res.text, sizeof res.text, "%s", auth->text);
    wire_auth_free(auth);
    free(reply);
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

static result_t enroll(fixture_t *f, const char *member)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, next_op_txn(f, txn));
    coalition__enroll_request__init(&r.enroll);
    r.enroll.member_id = (char *)member;
    r.env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    r.env.enroll = &r.enroll;
    return submit(f, &r.env, true);
}

/* An earn at `site` (NULL: the default site s1). */
static result_t earn_at(fixture_t *f, const char *partner, const char *site, const char *txn,
                        const char *member, int64_t amount_minor, const char *currency)
{
    request_t r;
    request_init(&r, partner, txn);
    if (site != NULL)
        r.env.site_id = (char *)site;
    coalition__earn_request__init(&r.earn);
    r.earn.member_id = (char *)member;
    r.earn.amount_minor = amount_minor;
    r.earn.currency = (char *)currency;
    r.env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r.env.earn = &r.earn;
    return submit(f, &r.env, false);
}

static result_t earn(fixture_t *f, const char *partner, const char *txn, const char *member,
                     int64_t amount_minor, const char *currency)
{
    return earn_at(f, partner, NULL, txn, member, amount_minor, currency);
}

static result_t burn(fixture_t *f, const char *partner, const char *txn, const char *member,
                     int64_t points)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__burn_request__init(&r.burn);
    r.burn.member_id = (char *)member;
    r.burn.points = points;
    r.env.body_case = COALITION__ENVELOPE__BODY_BURN;
    r.env.burn = &r.burn;
    return submit(f, &r.env, false);
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

/* A void sent from `site` of an original taken at `original_site` (NULL: defaults). */
static result_t void_at(fixture_t *f, const char *partner, const char *site, const char *txn,
                        const char *original_site, const char *original)
{
    request_t r;
    request_init(&r, partner, txn);
    if (site != NULL)
        r.env.site_id = (char *)site;
    coalition__void_request__init(&r.void_request);
    r.void_request.original_txn_id = (char *)original;
    if (original_site != NULL)
        r.void_request.original_site_id = (char *)original_site;
    r.env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r.env.void_request = &r.void_request;
    return submit(f, &r.env, false);
}

static result_t void_(fixture_t *f, const char *partner, const char *txn, const char *original)
{
    return void_at(f, partner, NULL, txn, NULL, original);
}

static int64_t account(fixture_t *f, const char *name)
{
    int64_t value = 0;
    EXPECT_OK(name, ledger_account_balance(f->l, name, &value));
    return value;
}

/* ---- expectations ------------------------------------------------------------------ */

static void expect_approved(const char *what, const result_t *res, int64_t points,
                            int64_t balance_after, uint64_t seq)
{
    if (res->code != RC_APPROVED || !res->reached_ledger)
        fail_msg("%s: expected code 00 from the ledger, got %02d (%s)", what, res->code, res->text);
    EXPECT_EQ("points", points, res->points);
    EXPECT_EQ("balance", balance_after, res->balance);
    EXPECT_EQ("seq", seq, res->seq);
    EXPECT_EQ("replay", false, res->replay);
}

static void expect_declined(const char *what, const result_t *res, int code)
{
    if (res->code != code || !res->reached_ledger)
        fail_msg("%s: expected code %02d from the ledger, got %02d (%s)", what, code, res->code,
                 res->text);
    EXPECT_EQ("seq", 0, res->seq);
}

static void expect_verify_ok(fixture_t *f, const char *report)
{
    char why[WHY_BYTES];
    int rc = ledger_verify(f->l, why, sizeof why);
    if (rc != CL_OK)
        fail_msg("ledger_verify: expected CL_OK, got %d (%s): %s", rc, cl_strerror(rc), why);
    EXPECT_STR("verify report", report, why);
}

static void expect_verify_corrupt(fixture_t *f, const char *violation)
{
    char why[WHY_BYTES] = "";
    int rc = ledger_verify(f->l, why, sizeof why);
    if (rc != CL_ERR_CORRUPT)
        fail_msg("ledger_verify: expected CL_ERR_CORRUPT, got %d (%s): %s", rc, cl_strerror(rc),
                 why);
    EXPECT_STR("verify violation", violation, why);
}

/* ---- raw LMDB tampering ------------------------------------------------------------ */

typedef struct {
    MDB_env *env;
    MDB_txn *txn;
} raw_t;

/* Close the ledger and open its environment with LMDB directly, for writing. */
static void raw_begin(fixture_t *f, raw_t *raw)
{
    ledger_destroy(&f->l);
    assert_int_equal(mdb_env_create(&raw->env), MDB_SUCCESS);
    assert_int_equal(mdb_env_set_maxdbs(raw->env, STORE_DBS_MAX), MDB_SUCCESS);
    assert_int_equal(mdb_env_set_mapsize(raw->env, STORE_MAP_BYTES_INITIAL), MDB_SUCCESS);
    assert_int_equal(mdb_env_open(raw->env, f->dir, 0, 0600), MDB_SUCCESS);
    assert_int_equal(mdb_txn_begin(raw->env, NULL, 0, &raw->txn), MDB_SUCCESS);
}

static MDB_dbi raw_dbi(const raw_t *raw, const char *name)
{
    MDB_dbi dbi;
    assert_int_equal(mdb_dbi_open(raw->txn, name, 0, &dbi), MDB_SUCCESS);
    return dbi;
}

/* Commit the raw writes and open the ledger again. */
static void raw_commit(fixture_t *f, raw_t *raw)
{
    assert_int_equal(mdb_txn_commit(raw->txn), MDB_SUCCESS);
    mdb_env_close(raw->env);
    EXPECT_OK("ledger_open after tampering", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
}

static void raw_delete(fixture_t *f, const char *db, const void *key, size_t key_len)
{
    raw_t raw;
    raw_begin(f, &raw);
    MDB_val k = {key_len, (void *)key};
    assert_int_equal(mdb_del(raw.txn, raw_dbi(&raw, db), &k, NULL), MDB_SUCCESS);
    raw_commit(f, &raw);
}

static ProtobufCMessage *raw_get(const raw_t *raw, MDB_dbi dbi, const void *key, size_t key_len,
                                 const ProtobufCMessageDescriptor *desc)
{
    MDB_val k = {key_len, (void *)key}, v;
    assert_int_equal(mdb_get(raw->txn, dbi, &k, &v), MDB_SUCCESS);
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, v.mv_size, v.mv_data);
    assert_non_null(msg);
    return msg;
}

static void raw_put(const raw_t *raw, MDB_dbi dbi, const void *key, size_t key_len,
                    const ProtobufCMessage *msg)
{
    uint8_t buf[RECORD_BYTES_MAX];
    size_t len = protobuf_c_message_get_packed_size(msg);
    assert_true(len <= sizeof buf);
    protobuf_c_message_pack(msg, buf);
    MDB_val k = {key_len, (void *)key}, v = {len, buf};
    assert_int_equal(mdb_put(raw->txn, dbi, &k, &v, 0), MDB_SUCCESS);
}

typedef void (*edit_fn)(ProtobufCMessage *msg, const void *ctx);

/* Unpack one record, edit it, write it back. */
static void tamper_record(fixture_t *f, const char *db, const void *key, size_t key_len,
                          const ProtobufCMessageDescriptor *desc, edit_fn edit, const void *ctx)
{
    raw_t raw;
    raw_begin(f, &raw);
    MDB_dbi dbi = raw_dbi(&raw, db);
    ProtobufCMessage *msg = raw_get(&raw, dbi, key, key_len, desc);
    edit(msg, ctx);
    raw_put(&raw, dbi, key, key_len, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    raw_commit(f, &raw);
}

/* Put a fresh record where there was none. */
static void forge_record(fixture_t *f, const char *db, const void *key, size_t key_len,
                         const ProtobufCMessage *msg)
{
    raw_t raw;
    raw_begin(f, &raw);
    raw_put(&raw, raw_dbi(&raw, db), key, key_len, msg);
    raw_commit(f, &raw);
}

static void raw_set_balance(const raw_t *raw, const char *account_name, int64_t balance)
{
    uint8_t buf[8];
    store_put_u64(buf, (uint64_t)balance);
    MDB_val k = {strlen(account_name), (void *)account_name}, v = {sizeof buf, buf};
    assert_int_equal(mdb_put(raw->txn, raw_dbi(raw, "accounts"), &k, &v, 0), MDB_SUCCESS);
}

/* Edit journal entry `seq` and re-chain it and every entry after it, so the hash chain
 * holds again and only the re-derivation can tell. */
static void rewrite_journal(const raw_t *raw, uint64_t seq, edit_fn edit, const void *ctx)
{
    MDB_dbi journal = raw_dbi(raw, "journal");
    uint8_t prev[WIRE_HASH_BYTES] = {0};
    uint8_t key[8];
    if (seq > 1) {
        store_put_u64(key, seq - 1);
        journal_entry_t *e = (journal_entry_t *)raw_get(raw, journal, key, sizeof key,
                                                        &coalition__journal_entry__descriptor);
        memcpy(prev, e->hash.data, WIRE_HASH_BYTES);
        coalition__journal_entry__free_unpacked(e, NULL);
    }
    MDB_val k, v;
    for (uint64_t s = seq;; s++) {
        store_put_u64(key, s);
        k = (MDB_val){sizeof key, key};
        if (mdb_get(raw->txn, journal, &k, &v) == MDB_NOTFOUND)
            break;
        journal_entry_t *e = coalition__journal_entry__unpack(NULL, v.mv_size, v.mv_data);
        assert_non_null(e);
        if (s == seq)
            edit(&e->base, ctx);
        assert_int_equal(e->prev_hash.len, WIRE_HASH_BYTES);
        memcpy(e->prev_hash.data, prev, WIRE_HASH_BYTES);
        uint8_t hash[WIRE_HASH_BYTES];
        EXPECT_OK("ledger_entry_hash", ledger_entry_hash(e, prev, hash));
        memcpy(e->hash.data, hash, WIRE_HASH_BYTES);
        memcpy(prev, hash, WIRE_HASH_BYTES);
        raw_put(raw, journal, key, sizeof key, &e->base);
        coalition__journal_entry__free_unpacked(e, NULL);
    }
}

/* The idempotency / reversal key (partner, site, txn). */
static size_t txn_key(uint8_t key[TXN_KEY_BYTES_MAX], const char *partner, const char *site,
                      const char *txn)
{
    size_t len = ledger_txn_key(key, partner, site, txn);
    assert_true(len > 0);
    return len;
}

/* ---- world: fuel earns 2.000/EUR, grocer 1.500/EUR; members m1, m2 ------------------ */

static int setup_world(void **state)
{
    setup_empty(state);
    fixture_t *f = *state;
    result_t res = add_partner(f, "fuel", 2000, "EUR");
    expect_approved("add fuel", &res, 0, 0, 1);
    res = add_partner(f, "grocer", 1500, "EUR");
    expect_approved("add grocer", &res, 0, 0, 2);
    res = enroll(f, "m1");
    expect_approved("enroll m1", &res, 0, 0, 3);
    res = enroll(f, "m2");
    expect_approved("enroll m2", &res, 0, 0, WORLD_SEQ);
    return 0;
}

/* ---- a clean ledger passes --------------------------------------------------------- */

/* Earns, a burn and its refunds in two parts; three partial refunds of an earn. */
static void earns_burns_and_refunds(fixture_t *f)
{
    result_t res = earn(f, "fuel", "e1", "m1", 1234, "EUR");
    expect_approved("e1: 12.34 EUR x 2.000", &res, 24, 24, 5);
    res = earn(f, "grocer", "e2", "m2", 1001, "EUR");
    expect_approved("e2: 10.01 EUR x 1.500", &res, 15, 15, 6);
    res = burn(f, "grocer", "b1", "m1", 10);
    expect_approved("b1", &res, 10, 14, 7);
    res = refund(f, "grocer", "r1", "b1", 0, 4);
    expect_approved("r1: 4 of b1's 10 points", &res, 4, 18, 8);
    res = refund(f, "fuel", "r2", "e1", 117, 0);
    expect_approved("r2: floor(24 x 117 / 1234)", &res, 2, 16, 9);
    res = refund(f, "fuel", "r3", "e1", 500, 0);
    expect_approved("r3: floor(24 x 617 / 1234) - 2", &res, 10, 6, 10);
    res = void_(f, "fuel", "v0", "e1");
    expect_declined("void of a partly refunded earn", &res, RC_INVALID_TRANSACTION);
}

/* Voids of an earn and of a burn; a refund of the voided earn is declined. */
static void voids(fixture_t *f)
{
    result_t res = earn(f, "fuel", "e3", "m2", 1001, "EUR");
    expect_approved("e3", &res, 20, 35, 11);
    res = void_(f, "fuel", "v1", "e3");
    expect_approved("v1 voids e3", &res, 20, 15, 12);
    res = refund(f, "fuel", "r9", "e3", 100, 0);
    expect_declined("refund of a voided earn", &res, RC_INVALID_TRANSACTION);
    res = burn(f, "fuel", "b2", "m2", 5);
    expect_approved("b2", &res, 5, 10, 13);
    res = void_(f, "fuel", "v2", "b2");
    expect_approved("v2 voids b2", &res, 5, 15, 14);
}

/* Two reversals ahead of their originals, which arrive later and are declined 12. */
static void reversals_ahead(fixture_t *f)
{
    result_t res = refund(f, "fuel", "r4", "late", 100, 0);
    expect_approved("r4 ahead of its earn", &res, 0, 0, 15);
    res = earn(f, "fuel", "late", "m1", 1234, "EUR");
    expect_declined("the late earn", &res, RC_INVALID_TRANSACTION);
    res = void_(f, "fuel", "~v1", "b9");
    expect_approved("~v1 ahead of its burn", &res, 0, 0, 16);
    res = burn(f, "fuel", "b9", "m1", 3);
    expect_declined("the late burn", &res, RC_INVALID_TRANSACTION);
}

/* The rest of b1, an earn of 0 points and its refund, a void at another store. */
static void completions_and_sites(fixture_t *f)
{
    result_t res = refund(f, "grocer", "r5", "b1", 0, 0);
    expect_approved("r5: the 6 points left of b1", &res, 6, 12, 17);
    res = earn(f, "grocer", "e4", "m1", 66, "EUR");
    expect_approved("e4: 0.66 EUR x 1.500 is 0 points", &res, 0, 12, 18);
    res = refund(f, "grocer", "r6", "e4", 0, 0);
    expect_approved("r6 refunds all of e4", &res, 0, 12, 19);
    res = earn_at(f, "fuel", "north", "t1", "m1", 1000, "EUR");
    expect_approved("t1 at north", &res, 20, 32, 20);
    res = void_at(f, "fuel", "south", "ret-1", "north", "t1");
    expect_approved("south voids north's t1", &res, 20, 12, 21);
    res = refund(f, "fuel", "r2", "e1", 117, 0);
    EXPECT_EQ("r2 repeated: a replay", true, res.replay);
}

static void mixed_sequence_passes(void **state)
{
    fixture_t *f = *state;
    earns_burns_and_refunds(f);
    voids(f);
    reversals_ahead(f);
    completions_and_sites(f);
    EXPECT_EQ("last seq", 21, ledger_last_seq(f->l));
    EXPECT_EQ("member:m1", 12, account(f, "member:m1"));
    EXPECT_EQ("member:m2", 15, account(f, "member:m2"));
    EXPECT_EQ("fuel issued", -12, account(f, "partner:fuel:issued"));
    EXPECT_EQ("fuel redeemed", 0, account(f, "partner:fuel:redeemed"));
    EXPECT_EQ("grocer issued", -15, account(f, "partner:grocer:issued"));
    EXPECT_EQ("grocer redeemed", 0, account(f, "partner:grocer:redeemed"));
    expect_verify_ok(
        f, "21 entries, 7 accounts, 2 partners, 6 reversed originals, 2 tombstones, 1 windows: "
           "chain, balances, idempotency, contracts, members, reversals, settlement counters and "
           "lots hold");
}

/* What the broker allows at the top: a JPY partner at 1000 points per yen credits at
 * most POINTS_MAX (10^12) per earn; several members each earn it several times. */
#define LIMIT_MEMBERS 3
#define LIMIT_EARNS 4

static void earns_at_the_per_request_limit_pass(void **state)
{
    fixture_t *f = *state;
    result_t res = add_partner(f, "yen", EARN_RATE_MILLI_MAX, "JPY");
    expect_approved("add yen", &res, 0, 0, WORLD_SEQ + 1);
    res = set_limits(f, "yen", AMOUNT_MINOR_MAX, POINTS_MAX);
    expect_approved("yen limits", &res, 0, 0, WORLD_SEQ + 2);
    res = enroll(f, "m3");
    expect_approved("enroll m3", &res, 0, 0, WORLD_SEQ + 3);
    const char *members[LIMIT_MEMBERS] = {"m1", "m2", "m3"};
    uint64_t seq = WORLD_SEQ + 3;
    for (int i = 0; i < LIMIT_MEMBERS; i++) {
        for (int n = 0; n < LIMIT_EARNS; n++) {
            char txn[TXN_ID_LEN_MAX + 1];
            snprintf(txn, sizeof txn, "max-%s-%d", members[i], n);
            res = earn(f, "yen", txn, members[i], POINTS_MAX / EARN_RATE_SCALE, "JPY");
            expect_approved(txn, &res, POINTS_MAX, POINTS_MAX * (n + 1), ++seq);
        }
    }
    res = earn(f, "yen", "over", "m1", POINTS_MAX / EARN_RATE_SCALE + 1, "JPY");
    expect_declined("one yen more than the limit", &res, RC_EXCEEDS_LIMIT);
    res = burn(f, "yen", "b1", "m2", POINTS_MAX);
    expect_approved("burn of the limit", &res, POINTS_MAX, 3 * POINTS_MAX, ++seq);
    EXPECT_EQ("yen issued", -(int64_t)LIMIT_MEMBERS * LIMIT_EARNS * POINTS_MAX,
              account(f, "partner:yen:issued"));
    expect_verify_ok(
        f, "20 entries, 10 accounts, 3 partners, 0 reversed originals, 0 tombstones, 1 windows: "
           "chain, balances, idempotency, contracts, members, reversals, settlement counters and "
           "lots hold");
}

/* ---- 128-bit sums ------------------------------------------------------------------ */

/* A ledger whose accounts pass INT64_MAX in a partial sum needs at least
 * INT64_MAX / POINTS_MAX (9.2 million) earns at the per-request limit, too many for a unit
 * test, so the sums are driven directly: three partners each issue nearly INT64_MAX
 * points to one member. In key order the member balances come first and their partial
 * sum passes INT64_MAX twice over; verify used to report "sum of all accounts overflows". */
#define BIG_HEADROOM 7
#define BIG_POINTS (INT64_MAX - BIG_HEADROOM)

static void post(verify_t *v, uint64_t seq, const char *from, const char *to, int64_t points)
{
    Coalition__Posting debit = COALITION__POSTING__INIT, credit = COALITION__POSTING__INIT;
    Coalition__Posting *postings[MOVE_POSTINGS] = {&debit, &credit};
    journal_entry_t e = COALITION__JOURNAL_ENTRY__INIT;
    debit.account = (char *)from;
    debit.delta = -points;
    credit.account = (char *)to;
    credit.delta = points;
    e.seq = seq;
    e.postings = postings;
    e.n_postings = MOVE_POSTINGS;
    EXPECT_OK("vaccounts_post", vaccounts_post(v, &e));
}

static void accounts_summing_past_int64_pass(void **state)
{
    (void)state;
    const char *accounts[] = {"member:a",         "member:b",         "member:c",
                              "partner:p:issued", "partner:q:issued", "partner:r:issued"};
    const size_t count = sizeof accounts / sizeof accounts[0];
    char why[WHY_BYTES];
    verify_t v;
    verify_init(&v, NULL, NULL, why, sizeof why);
    for (size_t i = 0; i < count; i++)
        EXPECT_OK(accounts[i], vaccounts_open(&v, accounts[i], i + 1));
    for (size_t i = 0; i < count / 2; i++)
        post(&v, count + 1 + i, accounts[count / 2 + i], accounts[i], BIG_POINTS);
    for (size_t i = 0; i < count; i++) {
        int64_t balance = i < count / 2 ? BIG_POINTS : -BIG_POINTS;
        int rc = vaccounts_compare(&v, accounts[i], balance);
        if (rc != CL_OK)
            fail_msg("%s: expected CL_OK, got %d: %s", accounts[i], rc, why);
    }
    EXPECT_OK("vaccounts_finish", vaccounts_finish(&v));
    /* One point more for member:a would leave int64, which the broker declines 61. */
    Coalition__Posting one = COALITION__POSTING__INIT;
    one.account = "member:a";
    one.delta = BIG_HEADROOM + 1;
    Coalition__Posting *postings[] = {&one};
    journal_entry_t e = COALITION__JOURNAL_ENTRY__INIT;
    e.seq = 10;
    e.postings = postings;
    e.n_postings = 1;
    EXPECT_EQ("posting past INT64_MAX", CL_ERR_CORRUPT, vaccounts_post(&v, &e));
    EXPECT_STR("violation", "entry 10 takes member:a to 9223372036854775808, outside int64", why);
    verify_free(&v);
}

/* ---- tampering with partners and members ------------------------------------------- */

static void set_rate(ProtobufCMessage *msg, const void *ctx)
{
    ((Coalition__PartnerRecord *)msg)->earn_rate_milli = *(const int64_t *)ctx;
}

static void edited_earn_rate_fails(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    int64_t rate = 3000;
    tamper_record(f, "partners", "fuel", strlen("fuel"), &coalition__partner_record__descriptor,
                  set_rate, &rate);
    expect_verify_corrupt(f, "partner fuel: its record says 3.000 points per EUR, its "
                             "partner-add entry 1 says 2.000 points per EUR");
}

static void set_contract_rate(ProtobufCMessage *msg, const void *ctx)
{
    ((Coalition__Contract *)msg)->earn_rate_milli = *(const int64_t *)ctx;
}

/* The contract partner-add recorded for fuel: key "fuel\0" u64be(its start). */
static size_t fuel_contract_key(uint8_t key[16])
{
    memcpy(key, "fuel", 5);
    store_put_u64(key + 5, (uint64_t)NOW_MS);
    return 13;
}

/* The broker earns at the edited contract rate; with the record put back, the earn
 * stands out; edited and left so, the contract record itself stands out. */
static void points_earned_under_an_edited_rate_fail(void **state)
{
    fixture_t *f = *state;
    int64_t rate = 3000;
    uint8_t key[16];
    size_t key_len = fuel_contract_key(key);
    tamper_record(f, "contracts", key, key_len, &coalition__contract__descriptor, set_contract_rate,
                  &rate);
    expect_verify_corrupt(f, "contract of fuel from 1700000000000 differs from its entry 1");
    result_t res = earn(f, "fuel", "e1", "m1", 1000, "EUR");
    expect_approved("earn at the edited rate", &res, 30, 30, WORLD_SEQ + 1);
    rate = 2000;
    tamper_record(f, "contracts", key, key_len, &coalition__contract__descriptor, set_contract_rate,
                  &rate);
    expect_verify_corrupt(f, "entry 5: an earn of 10.00 EUR at fuel's 2.000 points per EUR is "
                             "20 points, the entry says 30");
}

static void set_contract_locale(ProtobufCMessage *msg, const void *ctx)
{
    ((Coalition__Contract *)msg)->locale = strdup(ctx); /* was the default "", not freed */
}

/* Receipts of fuel switched to Greek behind the journal's back: the record stands out. */
static void edited_contract_locale_fails(void **state)
{
    fixture_t *f = *state;
    uint8_t key[16];
    size_t key_len = fuel_contract_key(key);
    tamper_record(f, "contracts", key, key_len, &coalition__contract__descriptor,
                  set_contract_locale, "el");
    expect_verify_corrupt(f, "contract of fuel from 1700000000000 differs from its entry 1");
}

static void deleted_partner_record_fails(void **state)
{
    fixture_t *f = *state;
    earn(f, "grocer", "e1", "m1", 1000, "EUR");
    raw_delete(f, "partners", "grocer", strlen("grocer"));
    expect_verify_corrupt(f, "partner-add entry 2 (operator/ctl/op-2) has no partner record");
}

/* A partner record moved onto another partner's partner-add entry. */
static void set_created_seq(ProtobufCMessage *msg, const void *ctx)
{
    ((Coalition__PartnerRecord *)msg)->created_seq = *(const uint64_t *)ctx;
}

static void partner_record_claiming_another_entry_fails(void **state)
{
    fixture_t *f = *state;
    uint64_t seq = 1;
    raw_delete(f, "partners", "fuel", strlen("fuel"));
    tamper_record(f, "partners", "grocer", strlen("grocer"), &coalition__partner_record__descriptor,
                  set_created_seq, &seq);
    expect_verify_corrupt(f, "partner record grocer claims partner-add entry 1, which added "
                             "another partner");
}

static void set_frozen(ProtobufCMessage *msg, const void *ctx)
{
    (void)ctx;
    ((Coalition__MemberRecord *)msg)->frozen = true;
}

static void frozen_member_fails(void **state)
{
    fixture_t *f = *state;
    tamper_record(f, "members", "m1", strlen("m1"), &coalition__member_record__descriptor,
                  set_frozen, NULL);
    result_t res = earn(f, "fuel", "e1", "m1", 1000, "EUR");
    expect_declined("earn for the frozen member", &res, RC_FROZEN);
    expect_verify_corrupt(f, "member m1 is frozen without a journal entry");
}

static void set_points(ProtobufCMessage *msg, const void *ctx)
{
    ((journal_entry_t *)msg)->points = *(const int64_t *)ctx;
}

/* An original damaged on disk (its points edited, its postings left balanced) must fail
 * the writer with CL_ERR_CORRUPT when a reversal reads it, never abort the broker on an
 * assertion (it used to: move_points and earn_refund_points asserted on it). */
static void reversal_of_a_damaged_original_fails_the_writer(void **state)
{
    fixture_t *f = *state;
    result_t e = earn(f, "fuel", "e1", "m1", 5000, "EUR");
    uint8_t key[8];
    store_put_u64(key, e.seq);
    const int64_t forged[] = {-7, POINTS_MAX + 1};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        tamper_record(f, "journal", key, sizeof key, &coalition__journal_entry__descriptor,
                      set_points, &forged[i]);
        request_t r;
        request_init(&r, "fuel", "v1");
        coalition__void_request__init(&r.void_request);
        r.void_request.original_txn_id = "e1";
        r.env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
        r.env.void_request = &r.void_request;
        uint8_t hash[WIRE_HASH_BYTES];
        uint8_t *reply = NULL;
        size_t len = 0;
        EXPECT_OK("wire_request_hash", wire_request_hash(&r.env, hash));
        EXPECT_OK("ledger_batch_begin", ledger_batch_begin(f->l));
        EXPECT_EQ("void of a damaged earn: the writer fails", CL_ERR_CORRUPT,
                  ledger_apply(f->l, &r.env, hash, NOW_MS, &reply, &len));
        ledger_batch_abort(f->l);
        free(reply);
        EXPECT_EQ("and refuses writes from then on", CL_ERR_STICKY, ledger_batch_begin(f->l));
        ledger_destroy(&f->l); /* a restart clears the sticky state, not the damage */
        EXPECT_OK("reopen", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    }
}

/* A frozen member may not earn or burn, but what was done can still be undone: the agent's
 * safety void of a burn must never be refused (it could not be retried). */
static void reversals_of_a_frozen_members_transactions_pass(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 5000, "EUR");
    burn(f, "fuel", "b1", "m1", 30);
    tamper_record(f, "members", "m1", strlen("m1"), &coalition__member_record__descriptor,
                  set_frozen, NULL);
    result_t b2 = burn(f, "fuel", "b2", "m1", 10);
    expect_declined("burn by the frozen member", &b2, RC_FROZEN);
    result_t v = void_(f, "fuel", "v1", "b1");
    EXPECT_EQ("void of the frozen member's burn: code", RC_APPROVED, v.code);
    EXPECT_EQ("void of the frozen member's burn: points", 30, v.points);
}

static void forged_member_record_fails(void **state)
{
    fixture_t *f = *state;
    Coalition__MemberRecord m = COALITION__MEMBER_RECORD__INIT;
    m.member_id = "m9";
    m.created_seq = 3; /* m1's enrolment */
    forge_record(f, "members", "m9", strlen("m9"), &m.base);
    expect_verify_corrupt(f, "member record m9 names entry 3, which does not enrol it");
}

static void deleted_member_record_fails(void **state)
{
    fixture_t *f = *state;
    raw_delete(f, "members", "m2", strlen("m2"));
    expect_verify_corrupt(f, "enrolment of m2 at entry 4 has no member record");
}

/* ---- tampering with the journal ---------------------------------------------------- */

static void set_earn_points(ProtobufCMessage *msg, const void *ctx)
{
    journal_entry_t *e = (journal_entry_t *)msg;
    int64_t points = *(const int64_t *)ctx;
    assert_int_equal(e->n_postings, 2);
    e->points = points;
    e->base_points = points;
    e->postings[0]->delta = -points;
    e->postings[1]->delta = points;
    if (e->n_lots == 1)
        e->lots[0]->points = points;
}

/* 25 points for e1 instead of 24, in the entry, its postings and both accounts, with the
 * chain recomputed from e1 on: balanced, chained, and still wrong. */
static void consistently_altered_earn_points_fail(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    earn(f, "grocer", "e2", "m1", 1000, "EUR");
    raw_t raw;
    raw_begin(f, &raw);
    int64_t points = 25;
    rewrite_journal(&raw, WORLD_SEQ + 1, set_earn_points, &points);
    raw_set_balance(&raw, "member:m1", 25 + 15);
    raw_set_balance(&raw, "partner:fuel:issued", -25);
    raw_commit(f, &raw);
    expect_verify_corrupt(f, "entry 5: an earn of 12.34 EUR at fuel's 2.000 points per EUR is "
                             "24 points, the entry says 25");
}

/* ---- tampering with reversal records and tombstones -------------------------------- */

static void deleted_reversal_record_fails(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    refund(f, "fuel", "r1", "e1", 117, 0);
    uint8_t key[TXN_KEY_BYTES_MAX];
    raw_delete(f, "reversals", key, txn_key(key, "fuel", "s1", "e1"));
    expect_verify_corrupt(f, "fuel/s1/e1 was reversed by entry 6 but has no reversal record");
}

static void set_complete(ProtobufCMessage *msg, const void *ctx)
{
    (void)ctx;
    ((Coalition__ReversalRecord *)msg)->complete = true;
}

/* A partly refunded earn marked complete: its replays would say "reversed". */
static void altered_reversal_record_fails(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    refund(f, "fuel", "r1", "e1", 117, 0);
    uint8_t key[TXN_KEY_BYTES_MAX];
    size_t len = txn_key(key, "fuel", "s1", "e1");
    tamper_record(f, "reversals", key, len, &coalition__reversal_record__descriptor, set_complete,
                  NULL);
    expect_verify_corrupt(f, "reversal record of fuel/s1/e1 says 117 minor units and 2 points "
                             "given back (voided no, complete yes); the journal says 117 and 2 "
                             "(voided no, complete no)");
}

static void forged_reversal_record_fails(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "e1", "m1", 1234, "EUR");
    Coalition__ReversalRecord rec = COALITION__REVERSAL_RECORD__INIT;
    rec.voided = true;
    rec.complete = true;
    uint8_t key[TXN_KEY_BYTES_MAX];
    forge_record(f, "reversals", key, txn_key(key, "fuel", "s1", "e1"), &rec.base);
    expect_verify_corrupt(f, "reversal record under fuel/s1/e1, which no refund or void in the "
                             "journal reversed");
}

static void deleted_tombstone_fails(void **state)
{
    fixture_t *f = *state;
    result_t res = refund(f, "fuel", "r1", "late", 100, 0);
    expect_approved("refund ahead of its earn", &res, 0, 0, WORLD_SEQ + 1);
    res = earn(f, "fuel", "late", "m1", 1234, "EUR");
    expect_declined("the late earn", &res, RC_INVALID_TRANSACTION);
    uint8_t key[TXN_KEY_BYTES_MAX];
    raw_delete(f, "idem", key, txn_key(key, "fuel", "s1", "late"));
    expect_verify_corrupt(f, "reversal-ahead entry 5 left no tombstone under fuel/s1/late");
}

/* A tombstone no reversal left: the key of an earn never made, pointing at an enrolment. */
static void forged_tombstone_fails(void **state)
{
    fixture_t *f = *state;
    Coalition__IdemRecord rec = COALITION__IDEM_RECORD__INIT;
    rec.tombstone = true;
    rec.tombstone_seq = 3;
    uint8_t key[TXN_KEY_BYTES_MAX];
    forge_record(f, "idem", key, txn_key(key, "fuel", "s1", "never"), &rec.base);
    expect_verify_corrupt(f, "tombstone under fuel/s1/never points at entry 3, which is no "
                             "reversal ahead of that original");
}

#define WORLD_TEST(name) cmocka_unit_test_setup_teardown(name, setup_world, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        WORLD_TEST(mixed_sequence_passes),
        WORLD_TEST(earns_at_the_per_request_limit_pass),
        cmocka_unit_test(accounts_summing_past_int64_pass),
        WORLD_TEST(edited_earn_rate_fails),
        WORLD_TEST(points_earned_under_an_edited_rate_fail),
        WORLD_TEST(edited_contract_locale_fails),
        WORLD_TEST(deleted_partner_record_fails),
        WORLD_TEST(partner_record_claiming_another_entry_fails),
        WORLD_TEST(frozen_member_fails),
        WORLD_TEST(reversals_of_a_frozen_members_transactions_pass),
        WORLD_TEST(reversal_of_a_damaged_original_fails_the_writer),
        WORLD_TEST(forged_member_record_fails),
        WORLD_TEST(deleted_member_record_fails),
        WORLD_TEST(consistently_altered_earn_points_fail),
        WORLD_TEST(deleted_reversal_record_fails),
        WORLD_TEST(altered_reversal_record_fails),
        WORLD_TEST(forged_reversal_record_fails),
        WORLD_TEST(deleted_tombstone_fails),
        WORLD_TEST(forged_tombstone_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
