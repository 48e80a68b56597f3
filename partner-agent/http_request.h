/* The HTTP API's requests and replies as data: a JSON body (and the Idempotency-Key
 * header) parsed strictly into one till request, checked field by field, and a till's
 * answer rendered as the JSON object `coalition-pos --json` prints, with its HTTP status.
 * No I/O here: http_api.c serves it, tests call it directly.
 *
 *   body ─► hreq_parse ─► hreq_t (every field valid) ─► hreq_call (coalition_pos) ─►
 *   cpos_result_t ─► hreq_status + hreq_result_json ─► reply
 *   any field wrong ─► hreq_error_t {field, message} ─► 400, nothing sent to the agent */
#ifndef COALITION_HTTP_REQUEST_H
#define COALITION_HTTP_REQUEST_H

#include "amount.h"
#include "card.h"
#include "coalition_pos.h"
#include "wire.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request body larger than this is refused (400) without being parsed. */
#define HREQ_BODY_BYTES_MAX 8192
_Static_assert(HREQ_BODY_BYTES_MAX >= 4 * WIRE_MESSAGE_BYTES_MAX,
               "any request the wire carries fits a body, with JSON's punctuation");
#define HREQ_FIELD_BYTES 32
#define HREQ_MESSAGE_BYTES 192
#define HREQ_CURRENCY_DEFAULT "EUR"
/* Balance inquiries without an Idempotency-Key get "bal-" and 16 random hex digits. */
#define HREQ_BALANCE_TXN_PREFIX "bal-"

typedef enum hreq_kind {
    HREQ_EARN,
    HREQ_BURN,
    HREQ_REFUND,
    HREQ_VOID,
    HREQ_ENROLL,
    HREQ_BALANCE,
    HREQ_KIND_COUNT
} hreq_kind_t;

typedef struct hreq {
    hreq_kind_t kind;
    char txn_id[TXN_ID_LEN_MAX + 1];
    char member[MEMBER_ID_LEN_MAX + 1]; /* "" when the card names the member */
    char card[PAN_DIGITS_MAX + 1];      /* "" unless card-linked; cleared after the call */
    char currency[CURRENCY_CODE_BYTES];
    char original_txn_id[TXN_ID_LEN_MAX + 1];
    char original_site[SITE_ID_LEN_MAX + 1]; /* "" : this agent's own site */
    int64_t amount_minor;                    /* earn; refund by money (0: none) */
    int64_t points;                          /* burn; refund by points (0: none) */
    bool allow_partial;
} hreq_t;

typedef struct hreq_error {
    char code[HREQ_FIELD_BYTES];  /* invalid_json, invalid_field, missing_field, ... */
    char field[HREQ_FIELD_BYTES]; /* "" when no one field is at fault */
    char message[HREQ_MESSAGE_BYTES];
} hreq_error_t;

/* The path segment after /v1/ of a POST ("earn", ...), or HREQ_KIND_COUNT. */
hreq_kind_t hreq_kind_of(const char *name);
const char *hreq_kind_name(hreq_kind_t kind);

/* From now on jansson clears every block it frees (a body's card number passes through
 * its lexer and its strings), on top of the allocator it had. Call it once, before
 * jansson allocates anything and before threads use it. */
void hreq_json_clear_on_free(void);

/* Parse a POST body for `kind`. `idempotency_key` (the header) may be NULL; it and a
 * body "txn_id" must agree when both are given. CL_OK, or CL_ERR_INVALID with `err` set. */
int hreq_parse(hreq_kind_t kind, const char *body, size_t len, const char *idempotency_key,
               hreq_t *out, hreq_error_t *err);
/* A balance inquiry for the member named in the path; the txn id is the key when given,
 * otherwise a fresh random one. */
int hreq_balance(const char *member, const char *idempotency_key, hreq_t *out, hreq_error_t *err);

/* Send it through `pos`: CPOS_OK with `result`, or CPOS_NO_ANSWER. Clears the card. */
int hreq_call(cpos_t *pos, hreq_t *req, cpos_result_t *result);

/* 200 approved or declined, 202 stored offline or pending, 503 unavailable (91). */
unsigned hreq_status(const cpos_result_t *result);
/* The same fields, names and types as `coalition-pos --json`. NULL only out of memory. */
json_t *hreq_result_json(const cpos_result_t *result);
/* {"error": {"code", "field", "message"}}. */
json_t *hreq_error_json(const hreq_error_t *err);
void hreq_error_set(hreq_error_t *err, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
