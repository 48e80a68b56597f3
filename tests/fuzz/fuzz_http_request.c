/* libFuzzer target: the agent's HTTP API bodies (http_request.c), the JSON a till in any
 * language sends. The first byte picks the request (earn, burn, refund, void, enroll)
 * and whether an Idempotency-Key header comes with it (taken from the input's tail);
 * the rest is the body. Invariants: a parsed request is one the agent may send on (a
 * valid, non-reserved txn id; who, how much and what it reverses as the request needs,
 * each in range); a refused one says which error, and both its error object and any
 * reply render as JSON, whatever bytes the texts hold. */
#include "fuzz_support.h"

#include "errors.h"
#include "http_request.h"

#include <stdlib.h>
#include <string.h>

#define KINDS 5 /* the POST requests: earn .. enroll */
_Static_assert(HREQ_ENROLL == KINDS - 1 && HREQ_BALANCE == KINDS, "POST kinds come first");
#define KEY_BYTES 16

static void check_parsed(const hreq_t *r)
{
    FUZZ_REQUIRE(wire_id_valid(r->txn_id, TXN_ID_LEN_MAX) && r->txn_id[0] != '~',
                 "accepted txn id \"%s\"", r->txn_id);
    bool by_card = r->card[0] != '\0';
    switch (r->kind) {
    case HREQ_EARN:
    case HREQ_BURN:
        FUZZ_REQUIRE(by_card != (r->member[0] != '\0'), "member xor card");
        FUZZ_REQUIRE(!by_card || pan_check(r->card) == PAN_OK, "an accepted card fails Luhn");
        FUZZ_REQUIRE(r->member[0] == '\0' ||
                         (wire_id_valid(r->member, MEMBER_ID_LEN_MAX) && r->member[0] != '~'),
                     "accepted member \"%s\"", r->member);
        if (r->kind == HREQ_EARN)
            FUZZ_REQUIRE(r->amount_minor >= 1 && r->amount_minor <= AMOUNT_MINOR_MAX &&
                             amount_currency_exponent(r->currency) >= 0,
                         "earn amount %lld %s", (long long)r->amount_minor, r->currency);
        else
            FUZZ_REQUIRE(r->points >= 1 && r->points <= POINTS_MAX, "burn points %lld",
                         (long long)r->points);
        break;
    case HREQ_REFUND:
    case HREQ_VOID:
        FUZZ_REQUIRE(wire_id_valid(r->original_txn_id, TXN_ID_LEN_MAX), "original");
        FUZZ_REQUIRE(r->amount_minor == 0 || r->points == 0, "a refund by money and points");
        FUZZ_REQUIRE(r->kind == HREQ_REFUND || (r->amount_minor == 0 && r->points == 0),
                     "a void with an amount");
        FUZZ_REQUIRE(r->original_site[0] == '\0' ||
                         wire_id_valid(r->original_site, SITE_ID_LEN_MAX),
                     "original site");
        break;
    case HREQ_ENROLL:
        FUZZ_REQUIRE(wire_id_valid(r->member, MEMBER_ID_LEN_MAX) && r->member[0] != '~',
                     "enrolled member \"%s\"", r->member);
        break;
    default: fuzz_fail("parsed kind %d", (int)r->kind);
    }
}

/* A reply whose texts are the input's bytes renders (a bad text is replaced). */
static void check_reply_renders(const uint8_t *data, size_t size)
{
    cpos_result_t res;
    memset(&res, 0, sizeof res);
    size_t n = size < sizeof res.text - 1 ? size : sizeof res.text - 1;
    memcpy(res.text, data, n);
    memcpy(res.tier, data, n < sizeof res.tier - 1 ? n : sizeof res.tier - 1);
    res.code = size > 0 ? data[0] : 0;
    json_t *o = hreq_result_json(&res);
    FUZZ_REQUIRE(o != NULL, "a reply did not render");
    char *text = json_dumps(o, JSON_COMPACT);
    FUZZ_REQUIRE(text != NULL, "a reply did not serialize");
    free(text);
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    hreq_kind_t kind = (hreq_kind_t)(data[0] % KINDS);
    bool with_key = (data[0] / KINDS) % 2 == 1;
    char key[KEY_BYTES + 1] = "";
    size_t body_len = size - 1;
    if (with_key && body_len >= KEY_BYTES) {
        memcpy(key, data + size - KEY_BYTES, KEY_BYTES);
        body_len -= KEY_BYTES;
    }
    hreq_t req;
    hreq_error_t err;
    int rc = hreq_parse(kind, (const char *)data + 1, body_len, with_key ? key : NULL, &req, &err);
    if (rc == CL_OK) {
        FUZZ_REQUIRE(req.kind == kind, "kind changed");
        check_parsed(&req);
    } else {
        FUZZ_REQUIRE(rc == CL_ERR_INVALID && err.code[0] != '\0', "a refusal without a code");
        FUZZ_REQUIRE(req.card[0] == '\0', "a refused request kept its card number");
        json_t *o = hreq_error_json(&err);
        FUZZ_REQUIRE(o != NULL, "an error did not render: %s", err.message);
        json_decref(o);
    }
    check_reply_renders(data, size);
    return 0;
}
