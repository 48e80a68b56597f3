/* Unit tests for the trust boundary in the ledger (broker/access.c, ledger_apply_as) and
 * its helpers: CURVE key records and what each key may do, partner limits (61), the
 * per-member burn velocity (65), the audit of keys and limits, key files (common/keys.c),
 * escaped log lines and the request-rate buckets. A real LMDB ledger in a temp dir;
 * requests go through wire_validate first, as in the broker. */
#include "ledger_internal.h"

#include "errors.h"
#include "keys.h"
#include "log.h"
#include "ratelimit.h"
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
#include <sys/stat.h>
#include <unistd.h>

#define EXPECT_OK(what, rc)                                                                        \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != CL_OK)                                                                          \
            fail_msg("%s: expected CL_OK, got %d (%s)", (what), rc_, cl_strerror(rc_));            \
    } while (0)

#define NOW_MS INT64_C(1700000000000)
#define TEMP_DIR_TEMPLATE "/tmp/test_access.XXXXXX"
#define PATH_BYTES 256
#define TEXT_BYTES (RECEIPT_TEXT_BYTES_MAX + 64)
#define WHY_BYTES 512

typedef struct {
    char dir[PATH_BYTES];
    ledger_t *l;
    unsigned ops;
    key_pair_t fuel, grocer, bank;
} fixture_t;

typedef struct {
    bool reached_ledger;
    int code;
    uint64_t seq;
    int64_t points;
    char text[TEXT_BYTES];
} result_t;

typedef struct {
    envelope_t env;
    char txn[TXN_ID_LEN_MAX + 1];
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__VoidRequest void_request;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerAddRequest partner_add;
    Coalition__KeyAddRequest key_add;
    Coalition__KeyRevokeRequest key_revoke;
    Coalition__PartnerLimitsRequest limits;
    Coalition__BankAddRequest bank_add;
} request_t;

static envelope_t *request_init(request_t *r, const char *partner, const char *txn)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    snprintf(r->txn, sizeof r->txn, "%s", txn);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner;
    r->env.terminal_id = "till-1";
    r->env.site_id = strcmp(partner, OPERATOR_PARTNER_ID) == 0 ? OPERATOR_SITE_ID : "s1";
    r->env.txn_id = r->txn;
    r->env.client_time_ms = NOW_MS;
    return &r->env;
}

/* Validate, then apply in a batch of its own as `key` (NULL: trusted) at `now_ms`. */
static result_t submit_at(fixture_t *f, const envelope_t *env, const key_pair_t *key,
                          int64_t now_ms)
{
    result_t res;
    memset(&res, 0, sizeof res);
    char why[TEXT_BYTES] = "";
    bool admin = strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0;
    res.code = wire_validate(env, admin, why, sizeof why);
    if (res.code != RC_APPROVED) {
        snprintf(res.text, sizeof res.text, "%s", why);
        return res;
    }
    uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
    size_t len = 0;
    EXPECT_OK("hash", wire_request_hash(env, hash));
    EXPECT_OK("begin", ledger_batch_begin(f->l));
    EXPECT_OK("apply", ledger_apply_as(f->l, key != NULL ? key->public_z85 : NULL, env, hash,
                                       now_ms, &reply, &len));
    EXPECT_OK("commit", ledger_batch_commit(f->l));
    authorization_t *auth = wire_auth_decode(reply, len);
    assert_non_null(auth);
    res.reached_ledger = true;
    res.code = auth->code;
    res.seq = auth->seq;
    res.points = auth->points;
    snprintf(res.text, sizeof res.text, "%s", auth->text);
    wire_auth_free(auth);
    free(reply);
    return res;
}

static result_t submit(fixture_t *f, const envelope_t *env, const key_pair_t *key)
{
    return submit_at(f, env, key, NOW_MS);
}

static const char *op_txn(fixture_t *f, char buf[TXN_ID_LEN_MAX + 1])
{
    snprintf(buf, TXN_ID_LEN_MAX + 1, "op-%u", ++f->ops);
    return buf;
}

static result_t add_partner(fixture_t *f, const char *partner)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = (char *)partner;
    r.partner_add.earn_rate_milli = 1000;
    r.partner_add.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    return submit(f, &r.env, NULL);
}

static result_t add_key(fixture_t *f, const key_pair_t *key, const char *who, int role)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__key_add_request__init(&r.key_add);
    r.key_add.public_key = (char *)key->public_z85;
    r.key_add.participant = (char *)who;
    r.key_add.role = (Coalition__KeyRole)role;
    r.env.body_case = COALITION__ENVELOPE__BODY_KEY_ADD;
    r.env.key_add = &r.key_add;
    return submit(f, &r.env, NULL);
}

static result_t add_bank(fixture_t *f, const char *bank)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__bank_add_request__init(&r.bank_add);
    r.bank_add.bank_id = (char *)bank;
    r.env.body_case = COALITION__ENVELOPE__BODY_BANK_ADD;
    r.env.bank_add = &r.bank_add;
    return submit(f, &r.env, NULL);
}

static result_t revoke_key(fixture_t *f, const key_pair_t *key)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__key_revoke_request__init(&r.key_revoke);
    r.key_revoke.public_key = (char *)key->public_z85;
    r.env.body_case = COALITION__ENVELOPE__BODY_KEY_REVOKE;
    r.env.key_revoke = &r.key_revoke;
    return submit(f, &r.env, NULL);
}

static result_t set_limits(fixture_t *f, const char *partner, int64_t max_minor, int64_t max_points,
                           uint32_t burns_per_minute)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__partner_limits_request__init(&r.limits);
    r.limits.partner_id = (char *)partner;
    r.limits.max_amount_minor = max_minor;
    r.limits.max_points = max_points;
    r.limits.burns_per_member_minute = burns_per_minute;
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_LIMITS;
    r.env.partner_limits = &r.limits;
    return submit(f, &r.env, NULL);
}

static result_t enroll(fixture_t *f, const char *member)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    coalition__enroll_request__init(&r.enroll);
    r.enroll.member_id = (char *)member;
    r.env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    r.env.enroll = &r.enroll;
    return submit(f, &r.env, NULL);
}

static result_t earn(fixture_t *f, const char *partner, const char *txn, int64_t minor,
                     const key_pair_t *key)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__earn_request__init(&r.earn);
    r.earn.member_id = "alice";
    r.earn.amount_minor = minor;
    r.earn.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r.env.earn = &r.earn;
    return submit(f, &r.env, key);
}

static result_t burn_at(fixture_t *f, const char *partner, const char *txn, int64_t points,
                        const key_pair_t *key, int64_t now_ms)
{
    request_t r;
    request_init(&r, partner, txn);
    coalition__burn_request__init(&r.burn);
    r.burn.member_id = "alice";
    r.burn.points = points;
    r.env.body_case = COALITION__ENVELOPE__BODY_BURN;
    r.env.burn = &r.burn;
    return submit_at(f, &r.env, key, now_ms);
}

static void expect_code(const char *what, const result_t *res, int code)
{
    if (res->code != code)
        fail_msg("%s: expected %02d, got %02d (%s)", what, code, res->code, res->text);
}

static void expect_verify_ok(fixture_t *f)
{
    char why[WHY_BYTES] = "";
    int rc = ledger_verify(f->l, why, sizeof why);
    if (rc != CL_OK)
        fail_msg("verify: %s", why);
}

/* ---- fixture: partners fuel and grocer with a key each, a bank key, member alice ---- */

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s", TEMP_DIR_TEMPLATE);
    assert_non_null(mkdtemp(f->dir));
    EXPECT_OK("init", ledger_init(f->dir));
    EXPECT_OK("open", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    EXPECT_OK("keygen", keys_generate(&f->fuel));
    EXPECT_OK("keygen", keys_generate(&f->grocer));
    EXPECT_OK("keygen", keys_generate(&f->bank));
    result_t res = add_partner(f, "fuel");
    expect_code("add fuel", &res, RC_APPROVED);
    res = add_partner(f, "grocer");
    expect_code("add grocer", &res, RC_APPROVED);
    res = add_key(f, &f->fuel, "fuel", COALITION__KEY_ROLE__ROLE_PARTNER);
    expect_code("fuel key", &res, RC_APPROVED);
    res = add_key(f, &f->grocer, "grocer", COALITION__KEY_ROLE__ROLE_PARTNER);
    expect_code("grocer key", &res, RC_APPROVED);
    res = add_key(f, &f->bank, "bank1", COALITION__KEY_ROLE__ROLE_BANK);
    expect_code("bank key before its bank", &res, RC_UNKNOWN_PARTNER);
    res = add_bank(f, "bank1");
    expect_code("add bank1", &res, RC_APPROVED);
    res = add_key(f, &f->bank, "bank1", COALITION__KEY_ROLE__ROLE_BANK);
    expect_code("bank key", &res, RC_APPROVED);
    res = enroll(f, "alice");
    expect_code("enroll alice", &res, RC_APPROVED);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ledger_destroy(&f->l);
    char path[PATH_BYTES + 16];
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", f->dir);
    unlink(path);
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* ---- identity from the key ---------------------------------------------------------- */

static void key_of_another_partner_is_refused_and_stores_nothing(void **state)
{
    fixture_t *f = *state;
    uint64_t seq = ledger_last_seq(f->l);
    result_t res = earn(f, "grocer", "e1", 1000, &f->fuel);
    expect_code("fuel's key earning as grocer", &res, RC_NOT_PERMITTED);
    EXPECT_CONTAINS("names the key's partner", "belongs to partner fuel", res.text);
    EXPECT_EQ("no journal entry", seq, ledger_last_seq(f->l));
    /* Nothing under grocer's key space: grocer's own e1 is fresh, not a replay or 94. */
    res = earn(f, "grocer", "e1", 1000, &f->grocer);
    expect_code("grocer's own e1", &res, RC_APPROVED);
    EXPECT_EQ("a new entry", seq + 1, res.seq);
    expect_verify_ok(f);
}

static void unknown_and_bank_keys_are_refused(void **state)
{
    fixture_t *f = *state;
    key_pair_t stranger;
    EXPECT_OK("keygen", keys_generate(&stranger));
    uint64_t seq = ledger_last_seq(f->l);
    result_t res = earn(f, "fuel", "s1", 1000, &stranger);
    expect_code("unknown key", &res, RC_NOT_PERMITTED);
    EXPECT_CONTAINS("why", "not recorded", res.text);
    res = earn(f, "bank1", "b1", 1000, &f->bank);
    expect_code("bank key earning", &res, RC_NOT_PERMITTED);
    res = burn_at(f, "bank1", "b2", 1, &f->bank, NOW_MS);
    expect_code("bank key burning", &res, RC_NOT_PERMITTED);
    EXPECT_CONTAINS("why", "bank bank1 may not send burn", res.text);
    EXPECT_EQ("nothing stored", seq, ledger_last_seq(f->l));
    res = earn(f, "fuel", "s1", 1000, &f->fuel);
    expect_code("fuel's own s1 afterwards is fresh", &res, RC_APPROVED);
}

static void revoked_key_is_refused_at_its_next_request(void **state)
{
    fixture_t *f = *state;
    result_t res = earn(f, "fuel", "before", 1000, &f->fuel);
    expect_code("before the revocation", &res, RC_APPROVED);
    res = revoke_key(f, &f->fuel);
    expect_code("revoke", &res, RC_APPROVED);
    res = earn(f, "fuel", "after", 1000, &f->fuel);
    expect_code("after the revocation", &res, RC_NOT_PERMITTED);
    EXPECT_CONTAINS("why", "revoked", res.text);
    res = earn(f, "fuel", "before", 1000, &f->fuel);
    expect_code("even a replay of an earlier approval", &res, RC_NOT_PERMITTED);
    res = earn(f, "grocer", "g1", 1000, &f->grocer);
    expect_code("another partner goes on", &res, RC_APPROVED);
    res = revoke_key(f, &f->fuel);
    expect_code("revoked twice", &res, RC_INVALID_TRANSACTION);
    key_pair_t never;
    EXPECT_OK("keygen", keys_generate(&never));
    res = revoke_key(f, &never);
    expect_code("revoking an unknown key", &res, RC_ORIGINAL_NOT_FOUND);
    res = add_key(f, &f->fuel, "fuel", COALITION__KEY_ROLE__ROLE_PARTNER);
    expect_code("a revoked key never comes back", &res, RC_INVALID_TRANSACTION);
    res = add_key(f, &never, "ghost", COALITION__KEY_ROLE__ROLE_PARTNER);
    expect_code("a key for an unknown partner", &res, RC_UNKNOWN_PARTNER);
    ledger_principal_t who;
    EXPECT_OK("principal", ledger_principal(f->l, f->fuel.public_z85, &who));
    EXPECT_TRUE("revoked in the keys database", who.revoked);
    EXPECT_EQ("unknown key", CL_ERR_NOT_FOUND, ledger_principal(f->l, never.public_z85, &who));
    expect_verify_ok(f);
}

/* ---- limits ------------------------------------------------------------------------- */

static void partner_limits_decline_61_and_65(void **state)
{
    fixture_t *f = *state;
    result_t res = set_limits(f, "fuel", 5000, 100, 2);
    expect_code("set limits", &res, RC_APPROVED);
    ledger_principal_t who;
    EXPECT_OK("principal", ledger_principal(f->l, f->fuel.public_z85, &who));
    EXPECT_EQ("limit read back", 5000, who.limits.max_amount_minor);
    EXPECT_EQ("unset rate is the default", LIMIT_REQUESTS_PER_SECOND_DEFAULT,
              who.limits.requests_per_second);
    uint64_t seq = ledger_last_seq(f->l);
    res = earn(f, "fuel", "big", 5001, &f->fuel);
    expect_code("earn over the amount limit", &res, RC_EXCEEDS_LIMIT);
    res = earn(f, "fuel", "ok", 5000, &f->fuel);
    expect_code("earn at the limit", &res, RC_APPROVED);
    res = burn_at(f, "fuel", "b-big", 101, &f->fuel, NOW_MS);
    expect_code("burn over the points limit", &res, RC_EXCEEDS_LIMIT);
    EXPECT_EQ("declines store no entry", seq + 1, ledger_last_seq(f->l));
    /* Velocity across partners: a grocer burn counts against fuel's 2 a minute. */
    res = burn_at(f, "grocer", "g-b1", 1, &f->grocer, NOW_MS);
    expect_code("first burn (grocer)", &res, RC_APPROVED);
    res = burn_at(f, "fuel", "b1", 1, &f->fuel, NOW_MS + 1000);
    expect_code("second burn (fuel)", &res, RC_APPROVED);
    res = burn_at(f, "fuel", "b2", 1, &f->fuel, NOW_MS + 2000);
    expect_code("third burn within a minute at fuel", &res,
                COALITION__RESPONSE_CODE__RC_EXCEEDS_FREQUENCY);
    res = burn_at(f, "grocer", "g-b2", 1, &f->grocer, NOW_MS + 3000);
    expect_code("grocer's default allows it", &res, RC_APPROVED);
    res = burn_at(f, "fuel", "b3", 1, &f->fuel, NOW_MS + VELOCITY_WINDOW_MS + 1000);
    expect_code("a minute later: one burn in the window", &res, RC_APPROVED);
    res = burn_at(f, "fuel", "b2", 1, &f->fuel, NOW_MS + VELOCITY_WINDOW_MS + 2000);
    expect_code("the declined b2 repeated: its decline", &res,
                COALITION__RESPONSE_CODE__RC_EXCEEDS_FREQUENCY);
    expect_verify_ok(f);
}

/* ---- the audit ---------------------------------------------------------------------- */

static void put_raw(fixture_t *f, MDB_dbi dbi, const void *key, size_t key_len,
                    const ProtobufCMessage *msg)
{
    MDB_txn *txn = NULL;
    EXPECT_OK("begin", store_err(mdb_txn_begin(f->l->env, NULL, 0, &txn)));
    EXPECT_OK("put", ledger_put_record(txn, dbi, key, key_len, msg));
    EXPECT_OK("commit", store_err(mdb_txn_commit(txn)));
}

static void verify_detects_edited_keys_and_limits(void **state)
{
    fixture_t *f = *state;
    result_t res = set_limits(f, "fuel", 5000, 0, 0);
    expect_code("set limits", &res, RC_APPROVED);
    expect_verify_ok(f);
    /* The fuel key handed to grocer behind the journal's back. */
    Coalition__KeyRecord k = COALITION__KEY_RECORD__INIT;
    k.participant = "grocer";
    k.role = COALITION__KEY_ROLE__ROLE_PARTNER;
    k.created_seq = 3;
    put_raw(f, f->l->db_keys, f->fuel.public_z85, KEY_Z85_LEN, &k.base);
    char why[WHY_BYTES] = "";
    EXPECT_EQ("edited key record", CL_ERR_CORRUPT, ledger_verify(f->l, why, sizeof why));
    EXPECT_CONTAINS("why", "does not match the record of key", why);
    k.participant = "fuel";
    put_raw(f, f->l->db_keys, f->fuel.public_z85, KEY_Z85_LEN, &k.base);
    expect_verify_ok(f);
    /* fuel's limit lifted behind the journal's back. */
    Coalition__Limits none = COALITION__LIMITS__INIT;
    Coalition__PartnerRecord p = COALITION__PARTNER_RECORD__INIT;
    p.partner_id = "fuel";
    p.earn_rate_milli = 1000;
    p.currency = "EUR";
    p.created_seq = 1;
    p.limits = &none;
    put_raw(f, f->l->db_partners, "fuel", 4, &p.base);
    EXPECT_EQ("edited limits", CL_ERR_CORRUPT, ledger_verify(f->l, why, sizeof why));
    EXPECT_CONTAINS("why", "stored limits", why);
}

/* ---- key files, log lines, rate buckets ---------------------------------------------- */

static void key_files_round_trip_and_refuse_loose_modes(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_keys.XXXXXX", path[PATH_BYTES], why[KEY_WHY_BYTES_MAX];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/k.key", dir);
    key_pair_t pair, back;
    /* '=' is a Z85 character: a key may begin with it right after "label = ". */
    do
        EXPECT_OK("keygen", keys_generate(&pair));
    while (pair.secret_z85[0] != '=' && pair.public_z85[0] != '=' && rand() % 64 != 0);
    EXPECT_OK("write", keys_write_secret(path, &pair, "test"));
    struct stat st;
    EXPECT_OK("stat", stat(path, &st) == 0 ? CL_OK : CL_ERR_IO);
    EXPECT_EQ("mode 0600", 0600, st.st_mode & 0777);
    EXPECT_OK("read", keys_read_secret(path, &back, why, sizeof why));
    EXPECT_STR("public", pair.public_z85, back.public_z85);
    EXPECT_STR("secret", pair.secret_z85, back.secret_z85);
    EXPECT_EQ("no overwrite", CL_ERR_EXISTS, keys_write_secret(path, &pair, "test"));
    chmod(path, 0640);
    EXPECT_EQ("group-readable", CL_ERR_PERMISSION, keys_read_secret(path, &back, why, sizeof why));
    EXPECT_CONTAINS("why", "chmod 600", why);
    char pub[KEY_Z85_BYTES];
    EXPECT_OK("public of a secret file", keys_read_public(path, pub, why, sizeof why));
    EXPECT_STR("public", pair.public_z85, pub);
    unlink(path);
    key_pair_t other;
    EXPECT_OK("keygen", keys_generate(&other));
    memcpy(pair.public_z85, other.public_z85, KEY_Z85_BYTES);
    EXPECT_OK("write mismatched", keys_write_secret(path, &pair, "test"));
    EXPECT_EQ("mismatched pair", CL_ERR_INVALID, keys_read_secret(path, &back, why, sizeof why));
    unlink(path);
    rmdir(dir);
    EXPECT_FALSE("too short", keys_z85_valid("abc"));
    EXPECT_TRUE("loopback", keys_endpoint_loopback("tcp://127.0.0.1:7700"));
    EXPECT_FALSE("any address", keys_endpoint_loopback("tcp://0.0.0.0:7700"));
    EXPECT_FALSE("a name that looks loopback", keys_endpoint_loopback("tcp://127.evil.com:7700"));
    EXPECT_TRUE("127/8", keys_endpoint_loopback("tcp://127.1.2.3:7700"));
    EXPECT_FALSE("a loopback source, any address",
                 keys_endpoint_loopback("tcp://127.0.0.1:0;0.0.0.0:7700"));
    EXPECT_TRUE("ipc", keys_endpoint_loopback("ipc:///tmp/x.sock"));
}

static void log_lines_are_escaped(void **state)
{
    (void)state;
    char out[64];
    size_t n = log_escape(out, sizeof out, "id\nFAKE \xff\\ok");
    out[n] = '\0';
    EXPECT_STR("escaped", "id\\x0aFAKE \\xff\\x5cok", out);
    n = log_escape(out, 6, "ab\ncd");
    out[n] = '\0';
    EXPECT_STR("an escape is never cut", "ab", out);
}

static void rate_buckets_refill_at_their_rate(void **state)
{
    (void)state;
    ratelimit_t *r = NULL;
    EXPECT_OK("new", ratelimit_new(&r));
    int taken = 0;
    for (int i = 0; i < 10; i++)
        taken += ratelimit_take(r, "fuel", 5, 1000);
    EXPECT_EQ("a second's worth at once", 5, taken);
    EXPECT_TRUE("other partners have their own", ratelimit_take(r, "grocer", 5, 1000));
    EXPECT_FALSE("still empty 100 ms later", ratelimit_take(r, "fuel", 5, 1100));
    EXPECT_TRUE("one token after 200 ms", ratelimit_take(r, "fuel", 5, 1200));
    taken = 0;
    for (int i = 0; i < 10; i++)
        taken += ratelimit_take(r, "fuel", 5, 60000);
    EXPECT_EQ("never more than a second's worth", 5, taken);
    ratelimit_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(key_of_another_partner_is_refused_and_stores_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unknown_and_bank_keys_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(revoked_key_is_refused_at_its_next_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(partner_limits_decline_61_and_65, setup, teardown),
        cmocka_unit_test_setup_teardown(verify_detects_edited_keys_and_limits, setup, teardown),
        cmocka_unit_test(key_files_round_trip_and_refuse_loose_modes),
        cmocka_unit_test(log_lines_are_escaped),
        cmocka_unit_test(rate_buckets_refill_at_their_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
