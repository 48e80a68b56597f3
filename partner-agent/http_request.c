/* Strict parsing of the HTTP API's JSON bodies and rendering of its replies. See
 * http_request.h. Every field has one type and one range; anything else, including a
 * field this request does not take, is a 400 naming the field. */
#include "http_request.h"

#include "errors.h"

#include <assert.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef enum field {
    F_TXN,
    F_MEMBER,
    F_CARD,
    F_AMOUNT,
    F_CURRENCY,
    F_POINTS,
    F_ALLOW_PARTIAL,
    F_ORIGINAL,
    F_ORIGINAL_SITE,
    F_COUNT
} field_t;

#define BIT(f) (1u << (f))
#define UNKNOWN_KEY_QUOTED_BYTES 40
_Static_assert(F_COUNT <= 16, "a request's fields fit the masks below");

static const char *const field_names[F_COUNT] = {
    "txn_id",        "member",          "card",         "amount", "currency", "points",
    "allow_partial", "original_txn_id", "original_site"};

/* The fields each request takes; every one of them optional in JSON terms, the
 * combinations each request needs are checked after (check_required). */
static const unsigned fields_taken[HREQ_KIND_COUNT] = {
    [HREQ_EARN] = BIT(F_TXN) | BIT(F_MEMBER) | BIT(F_CARD) | BIT(F_AMOUNT) | BIT(F_CURRENCY),
    [HREQ_BURN] = BIT(F_TXN) | BIT(F_MEMBER) | BIT(F_CARD) | BIT(F_POINTS) | BIT(F_ALLOW_PARTIAL),
    [HREQ_REFUND] =
        BIT(F_TXN) | BIT(F_ORIGINAL) | BIT(F_ORIGINAL_SITE) | BIT(F_AMOUNT) | BIT(F_POINTS),
    [HREQ_VOID] = BIT(F_TXN) | BIT(F_ORIGINAL) | BIT(F_ORIGINAL_SITE),
    [HREQ_ENROLL] = BIT(F_TXN) | BIT(F_MEMBER),
    [HREQ_BALANCE] = 0, /* GET: the member is in the path */
};

static const char *const kind_names[HREQ_KIND_COUNT] = {"earn", "burn",   "refund",
                                                        "void", "enroll", "balance"};

hreq_kind_t hreq_kind_of(const char *name)
{
    for (int k = 0; k < HREQ_KIND_COUNT; k++) {
        if (k != HREQ_BALANCE && strcmp(name, kind_names[k]) == 0)
            return (hreq_kind_t)k;
    }
    return HREQ_KIND_COUNT;
}

const char *hreq_kind_name(hreq_kind_t kind)
{
    assert(kind < HREQ_KIND_COUNT);
    return kind_names[kind];
}

void hreq_error_set(hreq_error_t *err, const char *code, const char *field, const char *fmt, ...)
{
    assert(code != NULL && field != NULL);
    snprintf(err->code, sizeof err->code, "%s", code);
    snprintf(err->field, sizeof err->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* An id: 1..len_max printable ASCII without spaces; `reserved` refuses a leading '~'
 * (ids the agent and the ledger make themselves). */
static int take_id(const json_t *v, const char *name, size_t len_max, bool reserved, char *out,
                   hreq_error_t *err)
{
    const char *s = json_string_value(v);
    if (s == NULL) {
        hreq_error_set(err, "invalid_type", name, "%s must be a string", name);
        return CL_ERR_INVALID;
    }
    if (json_string_length(v) > len_max || !wire_id_valid(s, len_max) ||
        (reserved && s[0] == WIRE_AGENT_TXN_PREFIX)) {
        hreq_error_set(err, "invalid_field", name,
                       "%s must be 1-%zu printable ASCII characters without spaces%s", name,
                       len_max, reserved ? ", not starting with '~'" : "");
        return CL_ERR_INVALID;
    }
    memcpy(out, s, json_string_length(v) + 1);
    return CL_OK;
}

static int take_count(const json_t *v, const char *name, int64_t max, const char *unit,
                      int64_t *out, hreq_error_t *err)
{
    if (!json_is_integer(v)) {
        hreq_error_set(err, "invalid_type", name, "%s must be an integer (%s)", name, unit);
        return CL_ERR_INVALID;
    }
    json_int_t n = json_integer_value(v);
    if (n < 1 || n > max) {
        hreq_error_set(err, "invalid_field", name, "%s must be from 1 to %" PRId64 " (%s)", name,
                       max, unit);
        return CL_ERR_INVALID;
    }
    *out = (int64_t)n;
    return CL_OK;
}

static int take_card(const json_t *v, char out[PAN_DIGITS_MAX + 1], hreq_error_t *err)
{
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) > PAN_DIGITS_MAX) {
        hreq_error_set(err, s == NULL ? "invalid_type" : "invalid_field", "card",
                       "card must be a string of %d to %d digits", PAN_DIGITS_MIN, PAN_DIGITS_MAX);
        return CL_ERR_INVALID;
    }
    pan_verdict_t verdict = pan_check(s);
    if (verdict != PAN_OK) {
        hreq_error_set(err, "invalid_field", "card", "card: %s", pan_verdict_text(verdict));
        return CL_ERR_INVALID;
    }
    memcpy(out, s, json_string_length(v) + 1);
    return CL_OK;
}

static int take_currency(const json_t *v, char out[CURRENCY_CODE_BYTES], hreq_error_t *err)
{
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) != CURRENCY_CODE_LEN ||
        amount_currency_exponent(s) < 0) {
        hreq_error_set(err, s == NULL ? "invalid_type" : "invalid_field", "currency",
                       "currency must be a known ISO 4217 code such as \"EUR\"");
        return CL_ERR_INVALID;
    }
    memcpy(out, s, CURRENCY_CODE_BYTES);
    return CL_OK;
}

static int take_field(field_t f, const json_t *v, hreq_t *r, hreq_error_t *err)
{
    const char *name = field_names[f];
    switch (f) {
    case F_TXN: return take_id(v, name, TXN_ID_LEN_MAX, true, r->txn_id, err);
    case F_MEMBER: return take_id(v, name, MEMBER_ID_LEN_MAX, true, r->member, err);
    case F_CARD: return take_card(v, r->card, err);
    case F_AMOUNT:
        return take_count(v, name, AMOUNT_MINOR_MAX, "minor units: 1234 is 12.34 EUR",
                          &r->amount_minor, err);
    case F_CURRENCY: return take_currency(v, r->currency, err);
    case F_POINTS: return take_count(v, name, POINTS_MAX, "points", &r->points, err);
    case F_ALLOW_PARTIAL:
        if (!json_is_boolean(v)) {
            hreq_error_set(err, "invalid_type", name, "allow_partial must be true or false");
            return CL_ERR_INVALID;
        }
        r->allow_partial = json_is_true(v);
        return CL_OK;
    case F_ORIGINAL: return take_id(v, name, TXN_ID_LEN_MAX, false, r->original_txn_id, err);
    case F_ORIGINAL_SITE: return take_id(v, name, SITE_ID_LEN_MAX, false, r->original_site, err);
    case F_COUNT: break;
    }
    assert(false && "every field is handled");
    return CL_ERR_INVALID;
}

static field_t field_of(const char *key)
{
    for (int f = 0; f < F_COUNT; f++) {
        if (strcmp(key, field_names[f]) == 0)
            return (field_t)f;
    }
    return F_COUNT;
}

/* The combinations: who (member xor card), how much, and what it reverses. */
static int check_required(const hreq_t *r, unsigned seen, hreq_error_t *err)
{
    bool who = r->kind == HREQ_EARN || r->kind == HREQ_BURN;
    if (who && (seen & BIT(F_MEMBER)) && (seen & BIT(F_CARD))) {
        hreq_error_set(err, "invalid_field", "card", "give member or card, not both");
        return CL_ERR_INVALID;
    }
    const char *missing = NULL;
    if (!(seen & BIT(F_TXN)))
        missing = "txn_id";
    else if (who && !(seen & (BIT(F_MEMBER) | BIT(F_CARD))))
        missing = "member";
    else if (r->kind == HREQ_ENROLL && !(seen & BIT(F_MEMBER)))
        missing = "member";
    else if (r->kind == HREQ_EARN && !(seen & BIT(F_AMOUNT)))
        missing = "amount";
    else if (r->kind == HREQ_BURN && !(seen & BIT(F_POINTS)))
        missing = "points";
    else if ((r->kind == HREQ_REFUND || r->kind == HREQ_VOID) && !(seen & BIT(F_ORIGINAL)))
        missing = "original_txn_id";
    if (missing != NULL) {
        bool by_card = who && strcmp(missing, "member") == 0;
        hreq_error_set(err, "missing_field", missing,
                       strcmp(missing, "txn_id") == 0
                           ? "txn_id is required (or the Idempotency-Key header)"
                       : by_card ? "%s (or card) is required"
                                 : "%s is required",
                       missing);
        return CL_ERR_INVALID;
    }
    if (r->kind == HREQ_REFUND && (seen & BIT(F_AMOUNT)) && (seen & BIT(F_POINTS))) {
        hreq_error_set(err, "invalid_field", "points",
                       "a refund gives amount (an earn's) or points (a burn's), not both");
        return CL_ERR_INVALID;
    }
    return CL_OK;
}

static int take_key(const char *key, hreq_t *r, unsigned *seen, hreq_error_t *err)
{
    if (key == NULL)
        return CL_OK;
    json_t *v = json_string(key);
    int rc =
        v != NULL ? take_id(v, "txn_id", TXN_ID_LEN_MAX, true, r->txn_id, err) : CL_ERR_INVALID;
    json_decref(v);
    if (rc != CL_OK) {
        hreq_error_set(err, "invalid_field", "Idempotency-Key",
                       "the Idempotency-Key header must be 1-%d printable ASCII characters "
                       "without spaces, not starting with '~'",
                       TXN_ID_LEN_MAX);
        return CL_ERR_INVALID;
    }
    *seen |= BIT(F_TXN);
    return CL_OK;
}

/* How much of `key` an error quotes: at most `max` bytes, cut between UTF-8 characters
 * (a cut inside one made the message invalid UTF-8, replaced by "?" whole). */
static int quoted_length(const char *key, size_t max)
{
    size_t n = strnlen(key, max + 1);
    if (n <= max)
        return (int)n;
    n = max;
    while (n > 0 && ((unsigned char)key[n] & 0xC0) == 0x80)
        n--; /* key[n] continues a character: cut before its lead byte */
    assert(n <= max);
    return (int)n;
}

static int take_fields(json_t *root, hreq_t *r, unsigned *seen, hreq_error_t *err)
{
    char key_txn[TXN_ID_LEN_MAX + 1];
    snprintf(key_txn, sizeof key_txn, "%s", r->txn_id);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        field_t f = field_of(key);
        if (f == F_COUNT || !(fields_taken[r->kind] & BIT(f))) {
            hreq_error_set(err, "unknown_field", f == F_COUNT ? "" : key,
                           "%s does not take a field named \"%.*s\"", hreq_kind_name(r->kind),
                           quoted_length(key, UNKNOWN_KEY_QUOTED_BYTES), key);
            return CL_ERR_INVALID;
        }
        if (take_field(f, v, r, err) != CL_OK)
            return CL_ERR_INVALID;
        if (f == F_TXN && (*seen & BIT(F_TXN)) && strcmp(key_txn, r->txn_id) != 0) {
            hreq_error_set(err, "invalid_field", "txn_id",
                           "txn_id differs from the Idempotency-Key header");
            return CL_ERR_INVALID;
        }
        *seen |= BIT(f);
    }
    return CL_OK;
}

/* jansson's message without its " near '...'": the text it quotes may be a card number
 * the till sent (an unterminated string, a bare or too big number). */
static int json_error_length(const char *text)
{
    const char *near = strstr(text, " near ");
    size_t n = near != NULL ? (size_t)(near - text) : strlen(text);
    assert(n <= JSON_ERROR_TEXT_LENGTH);
    return (int)n;
}

/* Each block jansson asks for carries its size in front, so its free can clear it. */
#define CLEARED_HEADER_BYTES _Alignof(max_align_t)
_Static_assert(CLEARED_HEADER_BYTES >= sizeof(size_t), "the header holds a size");
static json_malloc_t inner_malloc;
static json_free_t inner_free;

static void *cleared_malloc(size_t n)
{
    if (n > SIZE_MAX - CLEARED_HEADER_BYTES)
        return NULL;
    unsigned char *p = inner_malloc(n + CLEARED_HEADER_BYTES);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    return p + CLEARED_HEADER_BYTES;
}

static void cleared_free(void *block)
{
    if (block == NULL)
        return;
    unsigned char *p = (unsigned char *)block - CLEARED_HEADER_BYTES;
    size_t n = 0;
    memcpy(&n, p, sizeof n);
    pan_clear(block, n);
    inner_free(p);
}

void hreq_json_clear_on_free(void)
{
    json_malloc_t m = NULL;
    json_free_t f = NULL;
    json_get_alloc_funcs(&m, &f);
    if (m == cleared_malloc)
        return; /* in place already */
    inner_malloc = m;
    inner_free = f;
    json_set_alloc_funcs(cleared_malloc, cleared_free);
    assert(inner_malloc != NULL && inner_free != NULL);
}

int hreq_parse(hreq_kind_t kind, const char *body, size_t len, const char *idempotency_key,
               hreq_t *out, hreq_error_t *err)
{
    assert(kind < HREQ_KIND_COUNT && kind != HREQ_BALANCE);
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = kind;
    snprintf(out->currency, sizeof out->currency, "%s", HREQ_CURRENCY_DEFAULT);
    unsigned seen = 0;
    if (take_key(idempotency_key, out, &seen, err) != CL_OK)
        return CL_ERR_INVALID;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        if (root == NULL)
            hreq_error_set(err, "invalid_json", "", "line %d column %d: %.*s", jerr.line,
                           jerr.column, json_error_length(jerr.text), jerr.text);
        else
            hreq_error_set(err, "invalid_json", "", "the body must be a JSON object");
        json_decref(root);
        return CL_ERR_INVALID;
    }
    int rc = take_fields(root, out, &seen, err);
    json_decref(root); /* a card number in it: see hreq_json_clear_on_free */
    if (rc == CL_OK)
        rc = check_required(out, seen, err);
    if (rc != CL_OK)
        pan_clear(out->card, sizeof out->card);
    assert(rc != CL_OK || out->txn_id[0] != '\0');
    return rc;
}

int hreq_balance(const char *member, const char *idempotency_key, hreq_t *out, hreq_error_t *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = HREQ_BALANCE;
    json_t *v = json_string(member);
    int rc = v != NULL ? take_id(v, "member", MEMBER_ID_LEN_MAX, true, out->member, err)
                       : CL_ERR_INVALID;
    json_decref(v);
    if (v == NULL)
        hreq_error_set(err, "invalid_field", "member", "the member id must be UTF-8");
    if (rc != CL_OK)
        return rc;
    unsigned seen = 0;
    if (take_key(idempotency_key, out, &seen, err) != CL_OK)
        return CL_ERR_INVALID;
    if (seen == 0) {
        unsigned char raw[8];
        if (RAND_bytes(raw, sizeof raw) != 1)
            return CL_ERR_NOMEM;
        int n = snprintf(out->txn_id, sizeof out->txn_id, "%s", HREQ_BALANCE_TXN_PREFIX);
        for (size_t i = 0; i < sizeof raw; i++)
            n += snprintf(out->txn_id + n, sizeof out->txn_id - (size_t)n, "%02x", raw[i]);
    }
    assert(wire_id_valid(out->txn_id, TXN_ID_LEN_MAX));
    return CL_OK;
}

int hreq_call(cpos_t *pos, hreq_t *r, cpos_result_t *res)
{
    assert(pos != NULL && r->txn_id[0] != '\0');
    bool card = r->card[0] != '\0';
    int rc = CPOS_BAD_ARGUMENT;
    switch (r->kind) {
    case HREQ_EARN:
        rc = card ? cpos_earn_card(pos, r->txn_id, r->card, r->amount_minor, r->currency, res)
                  : cpos_earn(pos, r->txn_id, r->member, r->amount_minor, r->currency, res);
        break;
    case HREQ_BURN:
        rc = card ? cpos_burn_card(pos, r->txn_id, r->card, r->points, r->allow_partial, res)
                  : cpos_burn(pos, r->txn_id, r->member, r->points, r->allow_partial, res);
        break;
    case HREQ_REFUND:
        rc = cpos_refund_at(pos, r->txn_id, r->original_site, r->original_txn_id, r->amount_minor,
                            r->points, res);
        break;
    case HREQ_VOID:
        rc = cpos_void_at(pos, r->txn_id, r->original_site, r->original_txn_id, res);
        break;
    case HREQ_ENROLL: rc = cpos_enroll(pos, r->txn_id, r->member, res); break;
    case HREQ_BALANCE: rc = cpos_balance(pos, r->txn_id, r->member, res); break;
    case HREQ_KIND_COUNT: assert(false && "a parsed request has a kind"); break;
    }
    pan_clear(r->card, sizeof r->card);
    return rc;
}

unsigned hreq_status(const cpos_result_t *res)
{
    if (res->offline || res->pending)
        return 202;
    if (res->code == RC_UNAVAILABLE)
        return 503;
    return 200;
}

/* Texts come from the broker (UTF-8); one that is not valid UTF-8 is replaced, never
 * dropped with the whole reply. */
static json_t *text_value(const char *s)
{
    json_t *v = json_string(s);
    return v != NULL ? v : json_string("?");
}

json_t *hreq_result_json(const cpos_result_t *r)
{
    char code[8];
    snprintf(code, sizeof code, "%02d", r->code);
    json_t *o = json_object();
    int bad = o == NULL;
    if (!bad) {
        bad |= json_object_set_new(o, "txn_id", text_value(r->txn_id));
        bad |= json_object_set_new(o, "code", json_string(code));
        bad |= json_object_set_new(o, "approved", json_boolean(r->approved));
        bad |= json_object_set_new(o, "points", json_integer(r->points));
        bad |= json_object_set_new(o, "balance", json_integer(r->balance));
        bad |= json_object_set_new(o, "available", json_integer(r->available));
        bad |= json_object_set_new(o, "pending_points", json_integer(r->pending_points));
        bad |= json_object_set_new(o, "base_points", json_integer(r->base_points));
        bad |= json_object_set_new(o, "bonus_points", json_integer(r->bonus_points));
        bad |= json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
        bad |= json_object_set_new(o, "tier", text_value(r->tier));
        bad |= json_object_set_new(o, "auth_code", text_value(r->auth_code));
        bad |= json_object_set_new(o, "replay", json_boolean(r->replay));
        bad |= json_object_set_new(o, "reversed", json_boolean(r->reversed));
        bad |= json_object_set_new(o, "offline", json_boolean(r->offline));
        bad |= json_object_set_new(o, "pending", json_boolean(r->pending));
        bad |= json_object_set_new(o, "text", text_value(r->text));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    assert(json_object_size(o) == 17);
    return o;
}

json_t *hreq_error_json(const hreq_error_t *err)
{
    assert(err->code[0] != '\0');
    json_t *inner = json_pack("{s:s, s:s, s:o}", "code", err->code, "field", err->field, "message",
                              text_value(err->message));
    return inner != NULL ? json_pack("{s:o}", "error", inner) : NULL;
}
