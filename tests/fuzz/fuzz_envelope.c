/* libFuzzer target: a message off the wire, as the broker and the tills read one.
 * For every input: wire_auth_decode, and a decoded Authorization packs and decodes to the
 * same fields; wire_envelope_decode, and for a decoded Envelope: wire_validate from
 * either socket (never both; an approval implies every bound the ledger relies on),
 * wire_request_hash (client time left out), packing back and decoding again gives the
 * same size, hash, verdicts and bytes, and the broker's decline fits a wire message. */
#include "fuzz_support.h"

#include "amount.h"
#include "card.h"
#include "errors.h"
#include "keys.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WHY_BYTES RECEIPT_TEXT_BYTES_MAX

static void check_auth(const uint8_t *data, size_t size)
{
    authorization_t *auth = wire_auth_decode(data, size);
    if (auth == NULL)
        return;
    FUZZ_REQUIRE(wire_code_meaning((int)auth->code) != NULL, "no meaning for a code");
    /* protobuf-c packs unknown fields back as it read them, even ones it should not have
     * accepted (field number 0 from a non-minimal tag): only a reply the project could
     * have written is held to the round trip. */
    if (auth->base.n_unknown_fields > 0) {
        wire_auth_free(auth);
        return;
    }
    size_t len = 0;
    uint8_t *bytes = wire_pack_auth(auth, &len);
    FUZZ_REQUIRE(bytes != NULL, "a decoded Authorization could not be packed");
    fuzz_reply_t first, again;
    fuzz_reply_decode(data, size, &first);
    fuzz_reply_decode(bytes, len, &again);
    fuzz_reply_require_same(&first, &again, "Authorization packed and decoded again");
    FUZZ_REQUIRE(first.replay == again.replay && first.reversed == again.reversed &&
                     strcmp(first.site_id, again.site_id) == 0 &&
                     first.request_hash_len == again.request_hash_len &&
                     memcmp(first.request_hash, again.request_hash, sizeof first.request_hash) == 0,
                 "Authorization packed and decoded again: flags, site or hash differ");
    free(bytes);
    wire_auth_free(auth);
}

static void check_reversal(const envelope_t *env)
{
    FUZZ_REQUIRE(wire_id_valid(wire_original_txn(env), TXN_ID_LEN_MAX) &&
                     wire_id_valid(wire_original_site(env), SITE_ID_LEN_MAX),
                 "approved reversal names a malformed original");
    FUZZ_REQUIRE(strcmp(wire_original_txn(env), env->txn_id) != 0 ||
                     strcmp(wire_original_site(env), env->site_id) != 0,
                 "approved reversal of itself");
}

static void check_refund(const envelope_t *env)
{
    const Coalition__RefundRequest *r = env->refund;
    FUZZ_REQUIRE(r->amount_minor >= 0 && r->points >= 0 &&
                     !(r->amount_minor > 0 && r->points > 0) &&
                     r->amount_minor <= AMOUNT_MINOR_MAX && r->points <= POINTS_MAX,
                 "approved refund of %lld minor units, %lld points", (long long)r->amount_minor,
                 (long long)r->points);
    check_reversal(env);
}

/* A card an approval carries: its masked form six digits, stars, four digits; its PAN, if
 * any, 13-19 digits that pass Luhn and match the mask (cards.c relies on it). */
static void check_card(const Coalition__Card *c, bool pan_required)
{
    FUZZ_REQUIRE(c != NULL, "approved request without its card");
    size_t m = strlen(c->masked), n = strlen(c->pan);
    FUZZ_REQUIRE(m >= PAN_DIGITS_MIN && m <= PAN_DIGITS_MAX, "approved masked card of %zu", m);
    for (size_t i = 0; i < m; i++) {
        bool shown = i < CARD_BIN_DIGITS || i >= m - CARD_LAST_DIGITS;
        FUZZ_REQUIRE(shown ? (c->masked[i] >= '0' && c->masked[i] <= '9') : c->masked[i] == '*',
                     "approved masked card %s", c->masked);
    }
    FUZZ_REQUIRE(!pan_required || n > 0, "approved card without its number");
    if (n == 0)
        return;
    FUZZ_REQUIRE(pan_check(c->pan) == PAN_OK && n == m, "approved card number not a PAN");
    for (size_t i = 0; i < n; i++)
        FUZZ_REQUIRE(c->masked[i] == '*' || c->masked[i] == c->pan[i],
                     "approved card whose mask is not its number's");
}

static void check_card_enroll(const envelope_t *env, bool from_admin)
{
    const Coalition__CardEnrollRequest *r = env->card_enroll;
    FUZZ_REQUIRE(wire_id_valid(r->bank_ref, BANK_REF_LEN_MAX), "approved enrolment without a ref");
    FUZZ_REQUIRE(from_admin ? wire_id_valid(r->bank_id, PARTNER_ID_LEN_MAX) : r->bank_id[0] == '\0',
                 "approved enrolment with bank id '%s'", r->bank_id);
    FUZZ_REQUIRE(r->member_id[0] == '\0' || (wire_id_valid(r->member_id, MEMBER_ID_LEN_MAX) &&
                                             r->member_id[0] != WIRE_RESERVED_MEMBER_PREFIX),
                 "approved enrolment for member '%s'", r->member_id);
    check_card(r->card, true);
    bool replace = r->action == COALITION__CARD_ACTION__CARD_REPLACE;
    FUZZ_REQUIRE(replace || r->action == COALITION__CARD_ACTION__CARD_ENROL ||
                     r->action == COALITION__CARD_ACTION__CARD_UNLINK,
                 "approved enrolment action %d", (int)r->action);
    FUZZ_REQUIRE(replace == (r->new_card != NULL), "a new card with action %d", (int)r->action);
    if (replace) {
        check_card(r->new_card, true);
        FUZZ_REQUIRE(strcmp(r->card->pan, r->new_card->pan) != 0, "a card replacing itself");
    }
}

/* What an approved partner request promises the ledger, checked apart from wire.c. */
static void check_partner_body(const envelope_t *env)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN:
        FUZZ_REQUIRE(env->earn->amount_minor > 0 && env->earn->amount_minor <= AMOUNT_MINOR_MAX &&
                         amount_currency_exponent(env->earn->currency) >= 0,
                     "approved earn of %lld minor units", (long long)env->earn->amount_minor);
        break;
    case COALITION__ENVELOPE__BODY_BURN:
        FUZZ_REQUIRE(env->burn->points > 0 && env->burn->points <= POINTS_MAX,
                     "approved burn of %lld points", (long long)env->burn->points);
        break;
    case COALITION__ENVELOPE__BODY_REFUND: check_refund(env); break;
    case COALITION__ENVELOPE__BODY_VOID_REQUEST: check_reversal(env); break;
    case COALITION__ENVELOPE__BODY_BALANCE:
    case COALITION__ENVELOPE__BODY_ENROLL: break;
    case COALITION__ENVELOPE__BODY_CARD_ENROLL: check_card_enroll(env, false); break;
    default: fuzz_fail("approved partner request with body %s", wire_body_name(env));
    }
}

/* What an approved operator request promises: an enrolment or a partner contract. */
/* The operator's key and limit bodies: a real key, a role, limits within their ranges. */
static void check_access_body(const envelope_t *env)
{
    if (env->body_case == COALITION__ENVELOPE__BODY_KEY_ADD) {
        const Coalition__KeyAddRequest *k = env->key_add;
        FUZZ_REQUIRE(keys_z85_valid(k->public_key) &&
                         wire_id_valid(k->participant, PARTNER_ID_LEN_MAX) &&
                         strcmp(k->participant, OPERATOR_PARTNER_ID) != 0 &&
                         (k->role == COALITION__KEY_ROLE__ROLE_PARTNER ||
                          k->role == COALITION__KEY_ROLE__ROLE_BANK),
                     "approved key add with a malformed key, participant or role");
    } else if (env->body_case == COALITION__ENVELOPE__BODY_KEY_REVOKE) {
        FUZZ_REQUIRE(keys_z85_valid(env->key_revoke->public_key),
                     "approved key revoke of a malformed key");
    } else {
        const Coalition__PartnerLimitsRequest *l = env->partner_limits;
        FUZZ_REQUIRE(wire_id_valid(l->partner_id, PARTNER_ID_LEN_MAX) && l->max_amount_minor >= 0 &&
                         l->max_amount_minor <= AMOUNT_MINOR_MAX && l->max_points >= 0 &&
                         l->max_points <= POINTS_MAX &&
                         l->burns_per_member_minute <= VELOCITY_BURNS_PER_MINUTE_MAX &&
                         l->requests_per_second <= PARTNER_REQUESTS_PER_SECOND_MAX,
                     "approved partner limits out of range");
    }
}

static void check_contract(const Coalition__ContractSetRequest *c)
{
    FUZZ_REQUIRE(wire_id_valid(c->partner_id, PARTNER_ID_LEN_MAX) && c->from_ms >= 0 &&
                     c->from_ms <= CONTRACT_FROM_MS_MAX,
                 "approved contract of a malformed partner or start %lld", (long long)c->from_ms);
    FUZZ_REQUIRE(c->earn_rate_milli > 0 && c->earn_rate_milli <= EARN_RATE_MILLI_MAX &&
                     amount_currency_exponent(c->currency) >= 0,
                 "approved contract with rate %lld", (long long)c->earn_rate_milli);
    FUZZ_REQUIRE(c->issue_price_per_mille >= 0 && c->issue_price_per_mille <= PRICE_PER_MILLE_MAX &&
                     c->reimburse_per_mille >= 0 && c->reimburse_per_mille <= PRICE_PER_MILLE_MAX &&
                     c->fee_minor >= 0 && c->fee_minor <= FEE_MINOR_MAX && c->net_cap_minor >= 0 &&
                     c->net_cap_minor <= NET_CAP_MINOR_MAX &&
                     (c->funding == COALITION__FUNDING__FUNDING_POSTPAID ||
                      c->funding == COALITION__FUNDING__FUNDING_PREPAID),
                 "approved contract with prices, fee, cap or funding out of range");
}

/* The settlement bodies: what an approval promises the ledger (settle*.c relies on it). */
static bool check_settlement_body(const envelope_t *env)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_CONTRACT_SET: check_contract(env->contract_set); return true;
    case COALITION__ENVELOPE__BODY_PARTNER_TOPUP:
        FUZZ_REQUIRE(wire_id_valid(env->partner_topup->partner_id, PARTNER_ID_LEN_MAX) &&
                         env->partner_topup->points > 0 && env->partner_topup->points <= POINTS_MAX,
                     "approved top-up of %lld points", (long long)env->partner_topup->points);
        return true;
    case COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG: {
        const Coalition__SettlementConfigRequest *c = env->settlement_config;
        FUZZ_REQUIRE(c->period_seconds >= 0 && c->period_seconds <= SETTLEMENT_PERIOD_SECONDS_MAX &&
                         c->grace_seconds >= 0 &&
                         c->grace_seconds <= SETTLEMENT_GRACE_SECONDS_MAX &&
                         (c->period_seconds == 0 || c->grace_seconds < c->period_seconds) &&
                         (c->model == COALITION__SETTLEMENT_MODEL__MODEL_HUB ||
                          c->model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS),
                     "approved settlement configuration out of range");
        return true;
    }
    case COALITION__ENVELOPE__BODY_WINDOW_CLOSE:
        FUZZ_REQUIRE(env->window_close->window_id > 0, "approved close of window 0");
        return true;
    default: return false;
    }
}

/* The points lifecycle's operator bodies: what wire_validate lets through. */
static bool check_lifecycle_body(const envelope_t *env)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EXPIRY_POLICY: {
        const Coalition__ExpiryPolicyRequest *p = env->expiry_policy;
        FUZZ_REQUIRE(p->from_ms >= 0 && p->term_seconds >= 0 &&
                         p->term_seconds <= EXPIRY_TERM_SECONDS_MAX && p->inactivity_seconds >= 0 &&
                         p->inactivity_seconds <= EXPIRY_INACTIVITY_SECONDS_MAX,
                     "approved expiry policy out of range");
        return true;
    }
    case COALITION__ENVELOPE__BODY_EXPIRE:
        FUZZ_REQUIRE(env->expire->as_of_ms > 0 &&
                         (env->expire->member_id[0] == '\0' ||
                          wire_id_valid(env->expire->member_id, MEMBER_ID_LEN_MAX)),
                     "approved expire request out of range");
        return true;
    case COALITION__ENVELOPE__BODY_TIER_SETTINGS: {
        const Coalition__TierSettingsRequest *t = env->tier_settings;
        FUZZ_REQUIRE(t->n_tiers <= TIERS_MAX, "approved %zu tiers", t->n_tiers);
        for (size_t i = 0; i < t->n_tiers; i++)
            FUZZ_REQUIRE(
                wire_id_valid(t->tiers[i]->name, TIER_NAME_LEN_MAX) &&
                    t->tiers[i]->multiplier_milli >= MULTIPLIER_MILLI_MIN &&
                    t->tiers[i]->multiplier_milli <= MULTIPLIER_MILLI_MAX &&
                    (i == 0 ? t->tiers[i]->threshold_points == 0
                            : t->tiers[i]->threshold_points > t->tiers[i - 1]->threshold_points),
                "approved tier %zu out of range", i);
        return true;
    }
    case COALITION__ENVELOPE__BODY_RULE_ADD: {
        const Coalition__RuleAddRequest *r = env->rule_add;
        FUZZ_REQUIRE(wire_id_valid(r->partner_id, PARTNER_ID_LEN_MAX) && r->from_ms >= 0 &&
                         (r->until_ms == 0 || r->until_ms > r->from_ms) && r->bonus_points >= 0 &&
                         r->bonus_points <= POINTS_MAX && r->multiplier_milli >= 0 &&
                         r->multiplier_milli <= MULTIPLIER_MILLI_MAX && r->threshold_minor >= 0 &&
                         r->threshold_minor <= AMOUNT_MINOR_MAX,
                     "approved rule out of range");
        return true;
    }
    case COALITION__ENVELOPE__BODY_RULE_END:
        FUZZ_REQUIRE(wire_id_valid(env->rule_end->partner_id, PARTNER_ID_LEN_MAX) &&
                         env->rule_end->rule_id > 0 && env->rule_end->at_ms >= 0,
                     "approved rule end out of range");
        return true;
    default: return false;
    }
}

static void check_admin_body(const envelope_t *env)
{
    if (env->body_case == COALITION__ENVELOPE__BODY_ENROLL || check_settlement_body(env) ||
        check_lifecycle_body(env))
        return;
    if (env->body_case == COALITION__ENVELOPE__BODY_CARD_ENROLL) {
        check_card_enroll(env, true);
        return;
    }
    if (env->body_case == COALITION__ENVELOPE__BODY_BANK_ADD) {
        FUZZ_REQUIRE(wire_id_valid(env->bank_add->bank_id, PARTNER_ID_LEN_MAX) &&
                         strcmp(env->bank_add->bank_id, OPERATOR_PARTNER_ID) != 0,
                     "approved bank add of '%s'", env->bank_add->bank_id);
        return;
    }
    if (env->body_case == COALITION__ENVELOPE__BODY_CARD_SETTINGS) {
        int64_t p = env->card_settings->unclaimed_period_seconds;
        FUZZ_REQUIRE(p > 0 && p <= UNCLAIMED_PERIOD_SECONDS_MAX, "approved period %lld",
                     (long long)p);
        return;
    }
    if (env->body_case == COALITION__ENVELOPE__BODY_UNCLAIMED_LAPSE) {
        const char *m = env->unclaimed_lapse->unclaimed_member_id;
        FUZZ_REQUIRE(wire_id_valid(m, MEMBER_ID_LEN_MAX) &&
                         strncmp(m, WIRE_UNCLAIMED_PREFIX, strlen(WIRE_UNCLAIMED_PREFIX)) == 0,
                     "approved lapse of '%s'", m);
        return;
    }
    if (env->body_case == COALITION__ENVELOPE__BODY_KEY_ADD ||
        env->body_case == COALITION__ENVELOPE__BODY_KEY_REVOKE ||
        env->body_case == COALITION__ENVELOPE__BODY_PARTNER_LIMITS) {
        check_access_body(env);
        return;
    }
    FUZZ_REQUIRE(env->body_case == COALITION__ENVELOPE__BODY_PARTNER_ADD,
                 "approved operator request with body %s", wire_body_name(env));
    const Coalition__PartnerAddRequest *p = env->partner_add;
    FUZZ_REQUIRE(wire_id_valid(p->partner_id, PARTNER_ID_LEN_MAX) &&
                     strcmp(p->partner_id, OPERATOR_PARTNER_ID) != 0,
                 "approved partner add of a malformed or reserved partner id");
    FUZZ_REQUIRE(p->earn_rate_milli > 0 && p->earn_rate_milli <= EARN_RATE_MILLI_MAX &&
                     amount_currency_exponent(p->currency) >= 0,
                 "approved partner add with rate %lld", (long long)p->earn_rate_milli);
}

/* wire_validate's answers for the partner socket [0] and the admin socket [1]. */
typedef struct verdicts {
    int code[2];
    char why[2][WHY_BYTES];
} verdicts_t;

/* Both sockets' verdicts; an approval implies the header and body bounds. */
static void validate_both(const envelope_t *env, verdicts_t *v)
{
    for (int from_admin = 0; from_admin <= 1; from_admin++) {
        char *why = v->why[from_admin];
        why[0] = '\0';
        int code = wire_validate(env, from_admin == 1, why, WHY_BYTES);
        FUZZ_REQUIRE(fuzz_code_known(code), "wire_validate returned %d", code);
        FUZZ_REQUIRE(code == RC_APPROVED || why[0] != '\0', "decline %02d without a reason", code);
        v->code[from_admin] = code;
        if (code != RC_APPROVED)
            continue;
        FUZZ_REQUIRE(env->version == WIRE_VERSION &&
                         wire_id_valid(env->partner_id, PARTNER_ID_LEN_MAX) &&
                         wire_id_valid(env->terminal_id, TERMINAL_ID_LEN_MAX) &&
                         wire_id_valid(env->site_id, SITE_ID_LEN_MAX) &&
                         wire_id_valid(env->txn_id, TXN_ID_LEN_MAX),
                     "approved request with a malformed header");
        bool member_body = env->body_case == COALITION__ENVELOPE__BODY_EARN ||
                           env->body_case == COALITION__ENVELOPE__BODY_BURN ||
                           env->body_case == COALITION__ENVELOPE__BODY_BALANCE ||
                           env->body_case == COALITION__ENVELOPE__BODY_ENROLL;
        const Coalition__Card *cards[2];
        bool by_card = member_body && env->body_case != COALITION__ENVELOPE__BODY_ENROLL &&
                       wire_cards_of(env, cards) == 1;
        const char *member = wire_member_of(env);
        FUZZ_REQUIRE(!member_body || by_card ||
                         (wire_id_valid(member, MEMBER_ID_LEN_MAX) &&
                          member[0] != WIRE_RESERVED_MEMBER_PREFIX),
                     "approved %s names a malformed or reserved member", wire_body_name(env));
        FUZZ_REQUIRE(!by_card || member[0] == '\0', "approved by card and member both");
        if (by_card)
            check_card(cards[0], false);
        FUZZ_REQUIRE((strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0) == (from_admin == 1),
                     "approved from the %s socket with partner id %s",
                     from_admin ? "admin" : "partner", env->partner_id);
        if (from_admin)
            check_admin_body(env);
        else
            check_partner_body(env);
    }
    FUZZ_REQUIRE(v->code[0] != RC_APPROVED || v->code[1] != RC_APPROVED,
                 "one envelope approved on both sockets");
}

/* The idempotency hash: defined for every decoded envelope, blind to the client's time. */
static void hash_of(envelope_t *env, uint8_t hash[WIRE_HASH_BYTES])
{
    int rc = wire_request_hash(env, hash);
    FUZZ_REQUIRE(rc == CL_OK, "wire_request_hash of a decoded envelope: %s", cl_strerror(rc));
    int64_t client_time_ms = env->client_time_ms;
    uint8_t other[WIRE_HASH_BYTES];
    env->client_time_ms = client_time_ms ^ INT64_C(0x5a5a5a5a5a);
    rc = wire_request_hash(env, other);
    env->client_time_ms = client_time_ms;
    FUZZ_REQUIRE(rc == CL_OK && memcmp(hash, other, WIRE_HASH_BYTES) == 0,
                 "the request hash depends on client_time_ms");
}

/* Packed back, the envelope is the same size, decodes again to the same hash and
 * verdicts, and packs to the same bytes again (the canonical form is a fixed point). */
static void check_round_trip(const envelope_t *env, size_t size,
                             const uint8_t hash[WIRE_HASH_BYTES], const verdicts_t *v)
{
    size_t len = 0, len_again = 0;
    uint8_t *bytes = wire_pack_envelope(env, &len);
    FUZZ_REQUIRE(bytes != NULL, "a decoded envelope could not be packed");
    FUZZ_REQUIRE(len == size, "a %zu-byte envelope packs to %zu bytes", size, len);
    envelope_t *again = wire_envelope_decode(bytes, len);
    FUZZ_REQUIRE(again != NULL, "a packed envelope does not decode again");
    uint8_t hash_again[WIRE_HASH_BYTES];
    hash_of(again, hash_again);
    FUZZ_REQUIRE(memcmp(hash, hash_again, WIRE_HASH_BYTES) == 0,
                 "packed and decoded again, the envelope hashes differently");
    verdicts_t v_again;
    validate_both(again, &v_again);
    FUZZ_REQUIRE(v->code[0] == v_again.code[0] && v->code[1] == v_again.code[1],
                 "packed and decoded again, verdicts %d/%d became %d/%d", v->code[0], v->code[1],
                 v_again.code[0], v_again.code[1]);
    uint8_t *bytes_again = wire_pack_envelope(again, &len_again);
    FUZZ_REQUIRE(bytes_again != NULL && len_again == len && memcmp(bytes, bytes_again, len) == 0,
                 "a packed envelope packs differently once decoded again");
    free(bytes_again);
    wire_envelope_free(again);
    free(bytes);
}

static void check_envelope(const uint8_t *data, size_t size)
{
    envelope_t *env = wire_envelope_decode(data, size);
    if (env == NULL)
        return;
    FUZZ_REQUIRE(size > 0 && size <= WIRE_MESSAGE_BYTES_MAX, "decoded a %zu-byte envelope", size);
    uint8_t hash[WIRE_HASH_BYTES];
    hash_of(env, hash);
    verdicts_t v;
    validate_both(env, &v);
    check_round_trip(env, size, hash, &v);
    for (int from_admin = 0; from_admin <= 1; from_admin++) {
        if (v.code[from_admin] == RC_APPROVED)
            continue;
        /* The broker's own decline (frontend.c accept_request) must reach the sender. */
        fuzz_reply_t reply;
        fuzz_decline_reply(env, hash, v.code[from_admin], v.why[from_admin], &reply);
    }
    wire_envelope_free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_auth(data, size);
    check_envelope(data, size);
    return 0;
}
