/* Envelope decoding, validation and hashing; see wire.h for the canonical-size rule. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "wire.h"

#include "amount.h"
#include "card.h"
#include "digest.h"
#include "errors.h"
#include "keys.h"
#include "receipt.h"

#include <assert.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool wire_id_valid(const char *s, size_t len_max)
{
    if (s == NULL)
        return false;
    size_t len = strnlen(s, len_max + 1);
    if (len == 0 || len > len_max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

/* protobuf-c keeps fields it does not know and packs them again: a request carrying any
 * is refused, so nothing unchecked travels on (or grows past a limit once stamped). */
static bool has_unknown_fields(const envelope_t *env)
{
    const ProtobufCMessage *body = NULL;
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN: body = &env->earn->base; break;
    case COALITION__ENVELOPE__BODY_BURN: body = &env->burn->base; break;
    case COALITION__ENVELOPE__BODY_REFUND: body = &env->refund->base; break;
    case COALITION__ENVELOPE__BODY_VOID_REQUEST: body = &env->void_request->base; break;
    case COALITION__ENVELOPE__BODY_BALANCE: body = &env->balance->base; break;
    case COALITION__ENVELOPE__BODY_ENROLL: body = &env->enroll->base; break;
    case COALITION__ENVELOPE__BODY_PARTNER_ADD: body = &env->partner_add->base; break;
    case COALITION__ENVELOPE__BODY_KEY_ADD: body = &env->key_add->base; break;
    case COALITION__ENVELOPE__BODY_KEY_REVOKE: body = &env->key_revoke->base; break;
    case COALITION__ENVELOPE__BODY_PARTNER_LIMITS: body = &env->partner_limits->base; break;
    case COALITION__ENVELOPE__BODY_CONTRACT_SET: body = &env->contract_set->base; break;
    case COALITION__ENVELOPE__BODY_PARTNER_TOPUP: body = &env->partner_topup->base; break;
    case COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG: body = &env->settlement_config->base; break;
    case COALITION__ENVELOPE__BODY_WINDOW_CLOSE: body = &env->window_close->base; break;
    case COALITION__ENVELOPE__BODY_CARD_ENROLL: body = &env->card_enroll->base; break;
    case COALITION__ENVELOPE__BODY_BANK_ADD: body = &env->bank_add->base; break;
    case COALITION__ENVELOPE__BODY_UNCLAIMED_LAPSE: body = &env->unclaimed_lapse->base; break;
    case COALITION__ENVELOPE__BODY_CARD_SETTINGS: body = &env->card_settings->base; break;
    case COALITION__ENVELOPE__BODY_EXPIRY_POLICY: body = &env->expiry_policy->base; break;
    case COALITION__ENVELOPE__BODY_EXPIRE: body = &env->expire->base; break;
    case COALITION__ENVELOPE__BODY_TIER_SETTINGS: body = &env->tier_settings->base; break;
    case COALITION__ENVELOPE__BODY_RULE_ADD: body = &env->rule_add->base; break;
    case COALITION__ENVELOPE__BODY_RULE_END: body = &env->rule_end->base; break;
    default: break;
    }
    const Coalition__Card *cards[2];
    size_t n = wire_cards_of(env, cards);
    for (size_t i = 0; i < n; i++)
        if (cards[i]->base.n_unknown_fields > 0)
            return true;
    return env->base.n_unknown_fields > 0 || (body != NULL && body->n_unknown_fields > 0);
}

/* Envelopes may hold card numbers: every block protobuf-c allocates for one (strings,
 * unknown fields, what its own error paths free) is cleared when it is freed. */
static void *clearing_alloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void clearing_free(void *data, void *ptr)
{
    (void)data;
    if (ptr != NULL)
        explicit_bzero(ptr, malloc_usable_size(ptr));
    free(ptr);
}

static ProtobufCAllocator clearing_allocator = {clearing_alloc, clearing_free, NULL};

envelope_t *wire_envelope_decode(const void *buf, size_t len)
{
    if (buf == NULL || len == 0 || len > WIRE_MESSAGE_BYTES_MAX)
        return NULL;
    envelope_t *env = coalition__envelope__unpack(&clearing_allocator, len, buf);
    if (env == NULL)
        return NULL;
    if (coalition__envelope__get_packed_size(env) != len || has_unknown_fields(env)) {
        coalition__envelope__free_unpacked(env, &clearing_allocator);
        return NULL;
    }
    return env;
}

void wire_envelope_free(envelope_t *env)
{
    if (env != NULL)
        coalition__envelope__free_unpacked(env, &clearing_allocator);
}

authorization_t *wire_auth_decode(const void *buf, size_t len)
{
    if (buf == NULL || len > WIRE_MESSAGE_BYTES_MAX)
        return NULL;
    return coalition__authorization__unpack(NULL, len, buf);
}

void wire_auth_free(authorization_t *auth)
{
    if (auth != NULL)
        coalition__authorization__free_unpacked(auth, NULL);
}

/* Write the reason for a refusal and return its response code. */
__attribute__((format(printf, 4, 5))) static int refuse(char *why, size_t why_size, int code,
                                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
    return code;
}

static int validate_money(int64_t amount_minor, const char *currency, char *why, size_t why_size)
{
    if (amount_currency_exponent(currency) < 0)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "unknown currency");
    if (amount_minor <= 0)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "amount must be positive");
    if (amount_minor > AMOUNT_MINOR_MAX)
        return refuse(why, why_size, RC_EXCEEDS_LIMIT, "amount over the per-request limit");
    return RC_APPROVED;
}

static int validate_points(int64_t points, char *why, size_t why_size)
{
    if (points <= 0)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "points must be positive");
    if (points > POINTS_MAX)
        return refuse(why, why_size, RC_EXCEEDS_LIMIT, "points over the per-request limit");
    return RC_APPROVED;
}

static int validate_member(const char *member_id, char *why, size_t why_size)
{
    if (!wire_id_valid(member_id, MEMBER_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "member id missing or malformed");
    if (member_id[0] == WIRE_RESERVED_MEMBER_PREFIX)
        return refuse(why, why_size, RC_FORMAT_ERROR, "member ids starting with %c are reserved",
                      WIRE_RESERVED_MEMBER_PREFIX);
    return RC_APPROVED;
}

/* "411111******1111": six digits, stars, four digits, 13-19 in all. */
static bool masked_valid(const char *m)
{
    size_t len = strnlen(m, PAN_DIGITS_MAX + 1);
    if (len < PAN_DIGITS_MIN || len > PAN_DIGITS_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        bool digit = m[i] >= '0' && m[i] <= '9';
        bool shown = i < CARD_BIN_DIGITS || i >= len - CARD_LAST_DIGITS;
        if (shown ? !digit : m[i] != '*')
            return false;
    }
    return true;
}

/* A card: its masked form always; its PAN (when `pan_required`, or when present) valid
 * and matching the mask. Reasons never show the PAN. */
static int validate_card(const Coalition__Card *c, bool pan_required, char *why, size_t why_size)
{
    assert(why != NULL && why_size > 0);
    if (c == NULL)
        return refuse(why, why_size, RC_FORMAT_ERROR, "card missing");
    if (!masked_valid(c->masked))
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "masked card missing or malformed (first six digits, stars, last four)");
    if (c->pan[0] == '\0')
        return pan_required ? refuse(why, why_size, RC_FORMAT_ERROR, "card number missing")
                            : RC_APPROVED;
    pan_verdict_t v = pan_check(c->pan);
    if (v != PAN_OK)
        return refuse(why, why_size, RC_FORMAT_ERROR, "card %s: %s", c->masked,
                      pan_verdict_text(v));
    char masked[PAN_MASKED_BYTES];
    pan_mask(c->pan, masked);
    bool same = strcmp(masked, c->masked) == 0;
    pan_clear(masked, sizeof masked);
    return same ? RC_APPROVED
                : refuse(why, why_size, RC_FORMAT_ERROR,
                         "masked card %s does not match the card number", c->masked);
}

/* A member named by id or by card, exactly one of them. */
static int validate_holder(const char *member_id, const Coalition__Card *card, char *why,
                           size_t why_size)
{
    if (card != NULL && member_id[0] != '\0')
        return refuse(why, why_size, RC_FORMAT_ERROR, "name a member or a card, not both");
    return card != NULL ? validate_card(card, false, why, why_size)
                        : validate_member(member_id, why, why_size);
}

static int validate_card_enroll(const Coalition__CardEnrollRequest *r, bool from_admin, char *why,
                                size_t why_size)
{
    if (!wire_id_valid(r->bank_ref, BANK_REF_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "bank customer reference missing or malformed");
    if (from_admin ? !wire_id_valid(r->bank_id, PARTNER_ID_LEN_MAX) : r->bank_id[0] != '\0')
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      from_admin ? "bank id missing or malformed" : "bank id is the sender's");
    if (r->member_id[0] != '\0' && validate_member(r->member_id, why, why_size) != RC_APPROVED)
        return RC_FORMAT_ERROR;
    int rc = validate_card(r->card, true, why, why_size);
    if (rc != RC_APPROVED)
        return rc;
    bool replace = r->action == COALITION__CARD_ACTION__CARD_REPLACE;
    if (r->action != COALITION__CARD_ACTION__CARD_ENROL &&
        r->action != COALITION__CARD_ACTION__CARD_UNLINK && !replace)
        return refuse(why, why_size, RC_FORMAT_ERROR, "action must be enrol, unlink or replace");
    if (!replace)
        return r->new_card == NULL
                   ? RC_APPROVED
                   : refuse(why, why_size, RC_FORMAT_ERROR, "a new card is given only to replace");
    rc = validate_card(r->new_card, true, why, why_size);
    if (rc == RC_APPROVED && strcmp(r->card->pan, r->new_card->pan) == 0)
        return refuse(why, why_size, RC_INVALID_TRANSACTION, "a card cannot replace itself");
    return rc;
}

static int validate_reversal(const envelope_t *env, const char *original, const char *site,
                             char *why, size_t why_size)
{
    if (!wire_id_valid(original, TXN_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "original txn id missing or malformed");
    if (site[0] != '\0' && !wire_id_valid(site, SITE_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "original site id malformed");
    if (strcmp(original, env->txn_id) == 0 && strcmp(wire_original_site(env), env->site_id) == 0)
        return refuse(why, why_size, RC_INVALID_TRANSACTION, "a request cannot reverse itself");
    return RC_APPROVED;
}

static int validate_refund(const envelope_t *env, char *why, size_t why_size)
{
    const Coalition__RefundRequest *r = env->refund;
    int rc = validate_reversal(env, r->original_txn_id, r->original_site_id, why, why_size);
    if (rc != RC_APPROVED)
        return rc;
    if (r->amount_minor < 0 || r->points < 0)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "refund amount must not be negative");
    if (r->amount_minor > 0 && r->points > 0)
        return refuse(why, why_size, RC_INVALID_TRANSACTION, "refund names both money and points");
    if (r->amount_minor > AMOUNT_MINOR_MAX || r->points > POINTS_MAX)
        return refuse(why, why_size, RC_EXCEEDS_LIMIT, "refund over the per-request limit");
    return RC_APPROVED;
}

/* A receipt locale the catalogue has ("" is en). */
static int validate_locale(const char *locale, char *why, size_t why_size)
{
    receipt_locale_t l;
    if (strnlen(locale, RECEIPT_LOCALE_CODE_BYTES) > RECEIPT_LOCALE_CODE_LEN_MAX ||
        receipt_locale_parse(locale, &l) != CL_OK)
        return refuse(why, why_size, RC_FORMAT_ERROR, "unknown locale (known: %s)",
                      RECEIPT_LOCALES_LIST);
    return RC_APPROVED;
}

static int validate_partner_add(const Coalition__PartnerAddRequest *p, char *why, size_t why_size)
{
    if (!wire_id_valid(p->partner_id, PARTNER_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "partner id missing or malformed");
    if (strcmp(p->partner_id, OPERATOR_PARTNER_ID) == 0)
        return refuse(why, why_size, RC_NOT_PERMITTED, "partner id is reserved");
    if (p->earn_rate_milli <= 0 || p->earn_rate_milli > EARN_RATE_MILLI_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "earn rate out of range");
    if (amount_currency_exponent(p->currency) < 0)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "unknown currency");
    return validate_locale(p->locale, why, why_size);
}

static int validate_key_add(const Coalition__KeyAddRequest *k, char *why, size_t why_size)
{
    if (!keys_z85_valid(k->public_key))
        return refuse(why, why_size, RC_FORMAT_ERROR, "public key is not 40 characters of Z85");
    if (!wire_id_valid(k->participant, PARTNER_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "participant id missing or malformed");
    if (strcmp(k->participant, OPERATOR_PARTNER_ID) == 0)
        return refuse(why, why_size, RC_NOT_PERMITTED, "participant id is reserved");
    if (k->role != COALITION__KEY_ROLE__ROLE_PARTNER && k->role != COALITION__KEY_ROLE__ROLE_BANK)
        return refuse(why, why_size, RC_FORMAT_ERROR, "role must be partner or bank");
    return RC_APPROVED;
}

static int validate_limits(const Coalition__PartnerLimitsRequest *l, char *why, size_t why_size)
{
    if (!wire_id_valid(l->partner_id, PARTNER_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "partner id missing or malformed");
    if (l->max_amount_minor < 0 || l->max_amount_minor > AMOUNT_MINOR_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "max amount out of range");
    if (l->max_points < 0 || l->max_points > POINTS_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "max points out of range");
    if (l->burns_per_member_minute > VELOCITY_BURNS_PER_MINUTE_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "burns per member minute over %d",
                      VELOCITY_BURNS_PER_MINUTE_MAX);
    if (l->requests_per_second > PARTNER_REQUESTS_PER_SECOND_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "requests per second over %d",
                      PARTNER_REQUESTS_PER_SECOND_MAX);
    return RC_APPROVED;
}

static int validate_contract(const Coalition__ContractSetRequest *c, char *why, size_t why_size)
{
    if (!wire_id_valid(c->partner_id, PARTNER_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "partner id missing or malformed");
    if (c->from_ms < 0 || c->from_ms > CONTRACT_FROM_MS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR, "contract start out of range");
    if (c->earn_rate_milli <= 0 || c->earn_rate_milli > EARN_RATE_MILLI_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "earn rate out of range");
    if (amount_currency_exponent(c->currency) < 0)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "unknown currency");
    if (c->issue_price_per_mille < 0 || c->issue_price_per_mille > PRICE_PER_MILLE_MAX ||
        c->reimburse_per_mille < 0 || c->reimburse_per_mille > PRICE_PER_MILLE_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "price per 1,000 points out of range");
    if (c->fee_minor < 0 || c->fee_minor > FEE_MINOR_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "fee out of range");
    if (c->net_cap_minor < 0 || c->net_cap_minor > NET_CAP_MINOR_MAX)
        return refuse(why, why_size, RC_INVALID_AMOUNT, "net cap out of range");
    if (c->funding != COALITION__FUNDING__FUNDING_POSTPAID &&
        c->funding != COALITION__FUNDING__FUNDING_PREPAID)
        return refuse(why, why_size, RC_FORMAT_ERROR, "funding must be postpaid or prepaid");
    if (c->return_period_seconds < 0 || c->return_period_seconds > RETURN_PERIOD_SECONDS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR, "return period must be 0 to 366 days");
    return validate_locale(c->locale, why, why_size);
}

static int validate_tiers(const Coalition__TierSettingsRequest *r, char *why, size_t why_size)
{
    if (r->n_tiers > TIERS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR, "at most %d tiers", TIERS_MAX);
    for (size_t i = 0; i < r->n_tiers; i++) {
        const Coalition__Tier *t = r->tiers[i];
        if (t->base.n_unknown_fields > 0 || !wire_id_valid(t->name, TIER_NAME_LEN_MAX))
            return refuse(why, why_size, RC_FORMAT_ERROR, "tier %zu: name missing or malformed",
                          i + 1);
        if (i == 0 ? t->threshold_points != 0
                   : t->threshold_points <= r->tiers[i - 1]->threshold_points ||
                         t->threshold_points > TIER_THRESHOLD_POINTS_MAX)
            return refuse(why, why_size, RC_FORMAT_ERROR,
                          "tier %zu: thresholds start at 0 and rise strictly", i + 1);
        if (t->multiplier_milli < MULTIPLIER_MILLI_MIN ||
            t->multiplier_milli > MULTIPLIER_MILLI_MAX)
            return refuse(why, why_size, RC_FORMAT_ERROR, "tier %zu: multiplier must be 1 to 10",
                          i + 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->tiers[j]->name, t->name) == 0)
                return refuse(why, why_size, RC_FORMAT_ERROR, "tier %s named twice", t->name);
    }
    return RC_APPROVED;
}

static int validate_rule(const envelope_t *env, char *why, size_t why_size)
{
    if (env->body_case == COALITION__ENVELOPE__BODY_RULE_END) {
        const Coalition__RuleEndRequest *e = env->rule_end;
        if (!wire_id_valid(e->partner_id, PARTNER_ID_LEN_MAX) || e->rule_id == 0)
            return refuse(why, why_size, RC_FORMAT_ERROR, "partner id or rule id missing");
        return e->at_ms >= 0 && e->at_ms <= CONTRACT_FROM_MS_MAX
                   ? RC_APPROVED
                   : refuse(why, why_size, RC_FORMAT_ERROR, "end time out of range");
    }
    const Coalition__RuleAddRequest *r = env->rule_add;
    if (!wire_id_valid(r->partner_id, PARTNER_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "partner id missing or malformed");
    if (r->from_ms < 0 || r->from_ms > CONTRACT_FROM_MS_MAX || r->until_ms < 0 ||
        r->until_ms > CONTRACT_FROM_MS_MAX || (r->until_ms != 0 && r->until_ms <= r->from_ms))
        return refuse(why, why_size, RC_FORMAT_ERROR, "a rule's end must come after its start");
    bool mult = r->kind == COALITION__RULE_KIND__RULE_MULTIPLIER;
    bool thr = r->kind == COALITION__RULE_KIND__RULE_THRESHOLD;
    bool first = r->kind == COALITION__RULE_KIND__RULE_FIRST_EARN;
    if (!mult && !thr && !first)
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "rule kind must be multiplier, threshold "
                      "or first-earn");
    if (mult != (r->multiplier_milli != 0) ||
        (mult && (r->multiplier_milli <= MULTIPLIER_MILLI_MIN ||
                  r->multiplier_milli > MULTIPLIER_MILLI_MAX)))
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "a multiplier rule (only) has a multiplier above 1, at most 10");
    if (thr != (r->threshold_minor != 0) ||
        (thr && (r->threshold_minor < 0 || r->threshold_minor > AMOUNT_MINOR_MAX)))
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "a threshold rule (only) has a spend "
                      "threshold within the amount limit");
    if (mult != (r->bonus_points == 0) || r->bonus_points < 0 || r->bonus_points > POINTS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "threshold and first-earn rules (only) give bonus points within the limit");
    return RC_APPROVED;
}

static int validate_lifecycle(const envelope_t *env, char *why, size_t why_size)
{
    if (env->body_case == COALITION__ENVELOPE__BODY_TIER_SETTINGS)
        return validate_tiers(env->tier_settings, why, why_size);
    if (env->body_case == COALITION__ENVELOPE__BODY_RULE_ADD ||
        env->body_case == COALITION__ENVELOPE__BODY_RULE_END)
        return validate_rule(env, why, why_size);
    if (env->body_case == COALITION__ENVELOPE__BODY_EXPIRE) {
        const Coalition__ExpireRequest *r = env->expire;
        if (r->as_of_ms <= 0 || r->as_of_ms > CONTRACT_FROM_MS_MAX)
            return refuse(why, why_size, RC_FORMAT_ERROR, "as-of time missing or out of range");
        if (r->member_id[0] != '\0' && !wire_id_valid(r->member_id, MEMBER_ID_LEN_MAX))
            return refuse(why, why_size, RC_FORMAT_ERROR, "member id malformed");
        return RC_APPROVED;
    }
    const Coalition__ExpiryPolicyRequest *p = env->expiry_policy;
    if (p->from_ms < 0 || p->from_ms > CONTRACT_FROM_MS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR, "policy start out of range");
    if (p->term_seconds < 0 || p->term_seconds > EXPIRY_TERM_SECONDS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR, "term must be 0 (none) to 3660 days");
    if (p->inactivity_seconds < 0 || p->inactivity_seconds > EXPIRY_INACTIVITY_SECONDS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "inactivity period must be 0 (none) to 3660 days");
    return RC_APPROVED;
}

static int validate_settlement(const envelope_t *env, char *why, size_t why_size)
{
    if (env->body_case == COALITION__ENVELOPE__BODY_PARTNER_TOPUP) {
        if (!wire_id_valid(env->partner_topup->partner_id, PARTNER_ID_LEN_MAX))
            return refuse(why, why_size, RC_FORMAT_ERROR, "partner id missing or malformed");
        return validate_points(env->partner_topup->points, why, why_size);
    }
    if (env->body_case == COALITION__ENVELOPE__BODY_WINDOW_CLOSE)
        return env->window_close->window_id > 0
                   ? RC_APPROVED
                   : refuse(why, why_size, RC_FORMAT_ERROR, "window id missing");
    const Coalition__SettlementConfigRequest *c = env->settlement_config;
    if (c->period_seconds < 0 || c->period_seconds > SETTLEMENT_PERIOD_SECONDS_MAX)
        return refuse(why, why_size, RC_FORMAT_ERROR, "period out of range (0: a month)");
    if (c->grace_seconds < 0 || c->grace_seconds > SETTLEMENT_GRACE_SECONDS_MAX ||
        (c->period_seconds > 0 && c->grace_seconds >= c->period_seconds))
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "grace out of range (shorter than the period)");
    if (c->model != COALITION__SETTLEMENT_MODEL__MODEL_HUB &&
        c->model != COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS)
        return refuse(why, why_size, RC_FORMAT_ERROR, "model must be hub or issuer-pays");
    return RC_APPROVED;
}

static int validate_body(const envelope_t *env, char *why, size_t why_size)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN: {
        int rc = validate_holder(env->earn->member_id, env->earn->card, why, why_size);
        if (rc != RC_APPROVED)
            return rc;
        return validate_money(env->earn->amount_minor, env->earn->currency, why, why_size);
    }
    case COALITION__ENVELOPE__BODY_BURN: {
        int rc = validate_holder(env->burn->member_id, env->burn->card, why, why_size);
        if (rc != RC_APPROVED)
            return rc;
        return validate_points(env->burn->points, why, why_size);
    }
    case COALITION__ENVELOPE__BODY_REFUND: return validate_refund(env, why, why_size);
    case COALITION__ENVELOPE__BODY_VOID_REQUEST:
        return validate_reversal(env, env->void_request->original_txn_id,
                                 env->void_request->original_site_id, why, why_size);
    case COALITION__ENVELOPE__BODY_BALANCE:
        return validate_holder(env->balance->member_id, env->balance->card, why, why_size);
    case COALITION__ENVELOPE__BODY_ENROLL:
        return validate_member(env->enroll->member_id, why, why_size);
    case COALITION__ENVELOPE__BODY_PARTNER_ADD:
        return validate_partner_add(env->partner_add, why, why_size);
    case COALITION__ENVELOPE__BODY_KEY_ADD: return validate_key_add(env->key_add, why, why_size);
    case COALITION__ENVELOPE__BODY_KEY_REVOKE:
        if (!keys_z85_valid(env->key_revoke->public_key))
            return refuse(why, why_size, RC_FORMAT_ERROR, "public key is not 40 characters of Z85");
        return RC_APPROVED;
    case COALITION__ENVELOPE__BODY_PARTNER_LIMITS:
        return validate_limits(env->partner_limits, why, why_size);
    case COALITION__ENVELOPE__BODY_CONTRACT_SET:
        return validate_contract(env->contract_set, why, why_size);
    case COALITION__ENVELOPE__BODY_PARTNER_TOPUP:
    case COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG:
    case COALITION__ENVELOPE__BODY_WINDOW_CLOSE: return validate_settlement(env, why, why_size);
    case COALITION__ENVELOPE__BODY_BANK_ADD:
        if (!wire_id_valid(env->bank_add->bank_id, PARTNER_ID_LEN_MAX))
            return refuse(why, why_size, RC_FORMAT_ERROR, "bank id missing or malformed");
        if (strcmp(env->bank_add->bank_id, OPERATOR_PARTNER_ID) == 0)
            return refuse(why, why_size, RC_NOT_PERMITTED, "bank id is reserved");
        return RC_APPROVED;
    case COALITION__ENVELOPE__BODY_UNCLAIMED_LAPSE:
        if (!wire_id_valid(env->unclaimed_lapse->unclaimed_member_id, MEMBER_ID_LEN_MAX) ||
            strncmp(env->unclaimed_lapse->unclaimed_member_id, WIRE_UNCLAIMED_PREFIX,
                    strlen(WIRE_UNCLAIMED_PREFIX)) != 0)
            return refuse(why, why_size, RC_FORMAT_ERROR, "not an unclaimed account");
        return RC_APPROVED;
    case COALITION__ENVELOPE__BODY_EXPIRY_POLICY:
    case COALITION__ENVELOPE__BODY_EXPIRE:
    case COALITION__ENVELOPE__BODY_TIER_SETTINGS:
    case COALITION__ENVELOPE__BODY_RULE_ADD:
    case COALITION__ENVELOPE__BODY_RULE_END: return validate_lifecycle(env, why, why_size);
    case COALITION__ENVELOPE__BODY_CARD_SETTINGS: {
        int64_t s = env->card_settings->unclaimed_period_seconds;
        return s > 0 && s <= UNCLAIMED_PERIOD_SECONDS_MAX
                   ? RC_APPROVED
                   : refuse(why, why_size, RC_FORMAT_ERROR,
                            "unclaimed period must be 1 second to 3660 days");
    }
    default: return refuse(why, why_size, RC_FORMAT_ERROR, "no request body");
    }
}

int wire_validate(const envelope_t *env, bool from_admin, char *why, size_t why_size)
{
    assert(env != NULL && why != NULL && why_size > 0);
    if (env->version != WIRE_VERSION)
        return refuse(why, why_size, RC_FORMAT_ERROR, "unsupported protocol version %u",
                      env->version);
    if (!wire_id_valid(env->partner_id, PARTNER_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "partner id missing or malformed");
    if (!wire_id_valid(env->terminal_id, TERMINAL_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "terminal id missing or malformed");
    if (!wire_id_valid(env->site_id, SITE_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR, "site id missing or malformed");
    if (!wire_id_valid(env->txn_id, TXN_ID_LEN_MAX))
        return refuse(why, why_size, RC_FORMAT_ERROR,
                      "txn id missing, malformed or longer than %d bytes", TXN_ID_LEN_MAX);
    bool admin_body = wire_admin_body(env);
    bool operator_id = strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0;
    if (from_admin != operator_id)
        return refuse(why, why_size, RC_NOT_PERMITTED, "partner id not allowed on this socket");
    bool operator_body = admin_body || env->body_case == COALITION__ENVELOPE__BODY_ENROLL ||
                         env->body_case == COALITION__ENVELOPE__BODY_CARD_ENROLL;
    if (admin_body && !from_admin)
        return refuse(why, why_size, RC_NOT_PERMITTED, "operator request on the partner socket");
    if (from_admin && strcmp(env->site_id, WIRE_BROKER_SITE_ID) == 0)
        return refuse(why, why_size, RC_NOT_PERMITTED,
                      "site id %s is the broker's own; the operator uses another",
                      WIRE_BROKER_SITE_ID);
    if (from_admin && !operator_body)
        return refuse(why, why_size, RC_NOT_PERMITTED, "the operator sends no %s requests",
                      wire_body_name(env));
    if (env->body_case == COALITION__ENVELOPE__BODY_CARD_ENROLL)
        return validate_card_enroll(env->card_enroll, from_admin, why, why_size);
    return validate_body(env, why, why_size);
}

bool wire_admin_body(const envelope_t *env)
{
    return env->body_case == COALITION__ENVELOPE__BODY_PARTNER_ADD ||
           env->body_case == COALITION__ENVELOPE__BODY_KEY_ADD ||
           env->body_case == COALITION__ENVELOPE__BODY_KEY_REVOKE ||
           env->body_case == COALITION__ENVELOPE__BODY_PARTNER_LIMITS ||
           env->body_case == COALITION__ENVELOPE__BODY_CONTRACT_SET ||
           env->body_case == COALITION__ENVELOPE__BODY_PARTNER_TOPUP ||
           env->body_case == COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG ||
           env->body_case == COALITION__ENVELOPE__BODY_WINDOW_CLOSE ||
           env->body_case == COALITION__ENVELOPE__BODY_BANK_ADD ||
           env->body_case == COALITION__ENVELOPE__BODY_UNCLAIMED_LAPSE ||
           env->body_case == COALITION__ENVELOPE__BODY_CARD_SETTINGS ||
           env->body_case == COALITION__ENVELOPE__BODY_EXPIRY_POLICY ||
           env->body_case == COALITION__ENVELOPE__BODY_EXPIRE ||
           env->body_case == COALITION__ENVELOPE__BODY_TIER_SETTINGS ||
           env->body_case == COALITION__ENVELOPE__BODY_RULE_ADD ||
           env->body_case == COALITION__ENVELOPE__BODY_RULE_END;
}

size_t wire_cards_of(const envelope_t *env, const Coalition__Card *out[2])
{
    size_t n = 0;
    const Coalition__Card *a = NULL, *b = NULL;
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN: a = env->earn->card; break;
    case COALITION__ENVELOPE__BODY_BURN: a = env->burn->card; break;
    case COALITION__ENVELOPE__BODY_BALANCE: a = env->balance->card; break;
    case COALITION__ENVELOPE__BODY_CARD_ENROLL:
        a = env->card_enroll->card;
        b = env->card_enroll->new_card;
        break;
    default: break;
    }
    if (a != NULL)
        out[n++] = a;
    if (b != NULL)
        out[n++] = b;
    assert(n <= 2);
    return n;
}

bool wire_has_pan(const envelope_t *env)
{
    const Coalition__Card *cards[2];
    size_t n = wire_cards_of(env, cards);
    for (size_t i = 0; i < n; i++)
        if (cards[i]->pan != NULL && cards[i]->pan[0] != '\0')
            return true;
    return false;
}

void wire_clear_pans(envelope_t *env)
{
    const Coalition__Card *cards[2];
    size_t n = wire_cards_of(env, cards);
    for (size_t i = 0; i < n; i++)
        if (cards[i]->pan != NULL)
            pan_clear(cards[i]->pan, strlen(cards[i]->pan)); /* "" from now on */
    assert(!wire_has_pan(env));
}

/* The request with every PAN left out (hashes never cover a card number). */
static void without_pans(const envelope_t *env, envelope_t *out, void *body, Coalition__Card *c1,
                         Coalition__Card *c2)
{
    *out = *env;
    const Coalition__Card *cards[2];
    if (wire_cards_of(env, cards) == 0)
        return;
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN:
        *(Coalition__EarnRequest *)body = *env->earn;
        out->earn = body;
        *c1 = *env->earn->card;
        out->earn->card = c1;
        break;
    case COALITION__ENVELOPE__BODY_BURN:
        *(Coalition__BurnRequest *)body = *env->burn;
        out->burn = body;
        *c1 = *env->burn->card;
        out->burn->card = c1;
        break;
    case COALITION__ENVELOPE__BODY_BALANCE:
        *(Coalition__BalanceRequest *)body = *env->balance;
        out->balance = body;
        *c1 = *env->balance->card;
        out->balance->card = c1;
        break;
    default:
        assert(env->body_case == COALITION__ENVELOPE__BODY_CARD_ENROLL);
        *(Coalition__CardEnrollRequest *)body = *env->card_enroll;
        out->card_enroll = body;
        if (env->card_enroll->card != NULL) { /* either may be missing (not validated yet) */
            *c1 = *env->card_enroll->card;
            out->card_enroll->card = c1;
        }
        if (env->card_enroll->new_card != NULL) {
            *c2 = *env->card_enroll->new_card;
            out->card_enroll->new_card = c2;
        }
        break;
    }
    c1->pan = "";
    c2->pan = "";
}

int wire_request_hash(const envelope_t *env, uint8_t hash[WIRE_HASH_BYTES])
{
    assert(env != NULL && hash != NULL);
    envelope_t canonical;
    union {
        Coalition__EarnRequest earn;
        Coalition__BurnRequest burn;
        Coalition__BalanceRequest balance;
        Coalition__CardEnrollRequest card_enroll;
    } body;
    Coalition__Card c1 = COALITION__CARD__INIT, c2 = COALITION__CARD__INIT;
    without_pans(env, &canonical, &body, &c1, &c2);
    canonical.client_time_ms = 0;
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    size_t len = coalition__envelope__get_packed_size(&canonical);
    if (len > sizeof buf)
        return CL_ERR_INVALID;
    coalition__envelope__pack(&canonical, buf);
    const void *parts[] = {buf};
    return digest_sha256(parts, &len, 1, hash);
}

uint8_t *wire_pack_envelope(const envelope_t *env, size_t *len_out)
{
    size_t len = coalition__envelope__get_packed_size(env);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL)
        return NULL;
    *len_out = coalition__envelope__pack(env, buf);
    return buf;
}

uint8_t *wire_pack_auth(const authorization_t *auth, size_t *len_out)
{
    size_t len = coalition__authorization__get_packed_size(auth);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL)
        return NULL;
    *len_out = coalition__authorization__pack(auth, buf);
    return buf;
}

/* An id echoed in a reply only when it is a valid id: a reply never carries bytes a
 * peer sent that are not printable ASCII (invalid UTF-8 in a proto3 string field is
 * refused by other languages' parsers), and never grows past AUTH_BYTES_MAX. */
static char *echo_id(const char *s, size_t len_max)
{
    return wire_id_valid(s, len_max) ? (char *)s : "";
}

void wire_auth_decline(authorization_t *auth, const envelope_t *env, int code, char *text)
{
    coalition__authorization__init(auth);
    auth->version = WIRE_VERSION;
    auth->txn_id = env != NULL ? echo_id(env->txn_id, TXN_ID_LEN_MAX) : "";
    auth->code = (Coalition__ResponseCode)code;
    auth->text = text;
    auth->member_id = env != NULL ? echo_id(wire_member_of(env), MEMBER_ID_LEN_MAX) : "";
    wire_auth_echo(auth, env, NULL);
}

void wire_auth_echo(authorization_t *auth, const envelope_t *env, const uint8_t *hash)
{
    assert(auth != NULL);
    auth->site_id = env != NULL ? echo_id(env->site_id, SITE_ID_LEN_MAX) : "";
    auth->request_hash.data = (uint8_t *)hash;
    auth->request_hash.len = hash != NULL ? WIRE_HASH_BYTES : 0;
}

bool wire_agent_txn(const char *txn_id)
{
    assert(txn_id != NULL);
    return txn_id[0] == WIRE_AGENT_TXN_PREFIX;
}

const char *wire_original_txn(const envelope_t *env)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_REFUND: return env->refund->original_txn_id;
    case COALITION__ENVELOPE__BODY_VOID_REQUEST: return env->void_request->original_txn_id;
    default: return NULL;
    }
}

const char *wire_original_site(const envelope_t *env)
{
    assert(env->site_id != NULL);
    const char *site = "";
    if (env->body_case == COALITION__ENVELOPE__BODY_REFUND)
        site = env->refund->original_site_id;
    else if (env->body_case == COALITION__ENVELOPE__BODY_VOID_REQUEST)
        site = env->void_request->original_site_id;
    return site[0] != '\0' ? site : env->site_id;
}

const char *wire_code_meaning(int code)
{
    switch (code) {
    case RC_APPROVED: return "approved";
    case RC_UNKNOWN_PARTNER: return "unknown partner or terminal";
    case RC_DO_NOT_HONOUR: return "do not honour";
    case RC_PARTIAL: return "partial approval";
    case RC_INVALID_TRANSACTION: return "invalid transaction";
    case RC_INVALID_AMOUNT: return "invalid amount";
    case RC_UNKNOWN_MEMBER: return "unknown member or card";
    case RC_ORIGINAL_NOT_FOUND: return "original not found";
    case RC_FORMAT_ERROR: return "format error";
    case RC_INSUFFICIENT_POINTS: return "insufficient points";
    case COALITION__RESPONSE_CODE__RC_EXPIRED: return "expired";
    case RC_NOT_PERMITTED: return "not permitted";
    case RC_EXCEEDS_LIMIT: return "exceeds amount limit";
    case RC_FROZEN: return "frozen account";
    case COALITION__RESPONSE_CODE__RC_EXCEEDS_FREQUENCY: return "exceeds frequency limit";
    case RC_UNAVAILABLE: return "broker unavailable";
    case RC_DUPLICATE_KEY: return "duplicate key with a different payload";
    case RC_SYSTEM_ERROR: return "system error";
    default: return "unknown code";
    }
}

const char *wire_body_name(const envelope_t *env)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN: return "earn";
    case COALITION__ENVELOPE__BODY_BURN: return "burn";
    case COALITION__ENVELOPE__BODY_REFUND: return "refund";
    case COALITION__ENVELOPE__BODY_VOID_REQUEST: return "void";
    case COALITION__ENVELOPE__BODY_BALANCE: return "balance";
    case COALITION__ENVELOPE__BODY_ENROLL: return "enroll";
    case COALITION__ENVELOPE__BODY_PARTNER_ADD: return "partner-add";
    case COALITION__ENVELOPE__BODY_KEY_ADD: return "key-add";
    case COALITION__ENVELOPE__BODY_KEY_REVOKE: return "key-revoke";
    case COALITION__ENVELOPE__BODY_PARTNER_LIMITS: return "partner-limits";
    case COALITION__ENVELOPE__BODY_CONTRACT_SET: return "contract-set";
    case COALITION__ENVELOPE__BODY_PARTNER_TOPUP: return "partner-topup";
    case COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG: return "settlement-config";
    case COALITION__ENVELOPE__BODY_WINDOW_CLOSE: return "window-close";
    case COALITION__ENVELOPE__BODY_CARD_ENROLL: return "card-enroll";
    case COALITION__ENVELOPE__BODY_BANK_ADD: return "bank-add";
    case COALITION__ENVELOPE__BODY_UNCLAIMED_LAPSE: return "unclaimed-lapse";
    case COALITION__ENVELOPE__BODY_CARD_SETTINGS: return "card-settings";
    case COALITION__ENVELOPE__BODY_EXPIRY_POLICY: return "expiry-policy";
    case COALITION__ENVELOPE__BODY_EXPIRE: return "expire";
    case COALITION__ENVELOPE__BODY_TIER_SETTINGS: return "tier-settings";
    case COALITION__ENVELOPE__BODY_RULE_ADD: return "rule-add";
    case COALITION__ENVELOPE__BODY_RULE_END: return "rule-end";
    default: return "none";
    }
}

const char *wire_member_of(const envelope_t *env)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN: return env->earn->member_id;
    case COALITION__ENVELOPE__BODY_BURN: return env->burn->member_id;
    case COALITION__ENVELOPE__BODY_BALANCE: return env->balance->member_id;
    case COALITION__ENVELOPE__BODY_ENROLL: return env->enroll->member_id;
    case COALITION__ENVELOPE__BODY_CARD_ENROLL: return env->card_enroll->member_id;
    default: return "";
    }
}
