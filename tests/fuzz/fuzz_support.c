/* Shared helpers of the fuzz targets; see fuzz_support.h. */
#include "fuzz_support.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FUZZ INVARIANT FAILED: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

bool fuzz_code_known(int code)
{
    return protobuf_c_enum_descriptor_get_value(&coalition__response_code__descriptor, code) !=
           NULL;
}

/* Copy a decoded string into a field; a message within the limit always fits. */
static void copy_field(char *dst, size_t size, const char *src, const char *name)
{
    size_t len = strlen(src);
    FUZZ_REQUIRE(len < size, "reply field %s is %zu bytes, at most %zu expected", name, len,
                 size - 1);
    memcpy(dst, src, len + 1);
}

void fuzz_reply_decode(const uint8_t *bytes, size_t len, fuzz_reply_t *out)
{
    FUZZ_REQUIRE(bytes != NULL, "no reply");
    FUZZ_REQUIRE(len <= WIRE_MESSAGE_BYTES_MAX, "reply of %zu bytes, over the %d-byte limit", len,
                 WIRE_MESSAGE_BYTES_MAX);
    authorization_t *auth = wire_auth_decode(bytes, len);
    FUZZ_REQUIRE(auth != NULL, "a %zu-byte reply does not decode", len);
    memset(out, 0, sizeof *out);
    out->code = (int)auth->code;
    out->points = auth->points;
    out->balance = auth->balance;
    out->seq = auth->seq;
    out->replay = auth->replay;
    out->reversed = auth->reversed;
    copy_field(out->auth_code, sizeof out->auth_code, auth->auth_code, "auth_code");
    copy_field(out->txn_id, sizeof out->txn_id, auth->txn_id, "txn_id");
    copy_field(out->member_id, sizeof out->member_id, auth->member_id, "member_id");
    copy_field(out->site_id, sizeof out->site_id, auth->site_id, "site_id");
    /* Any length off the wire; the bytes of a hash's length at most are kept. */
    out->request_hash_len = auth->request_hash.len;
    size_t kept =
        auth->request_hash.len < WIRE_HASH_BYTES ? auth->request_hash.len : WIRE_HASH_BYTES;
    if (kept > 0)
        memcpy(out->request_hash, auth->request_hash.data, kept);
    wire_auth_free(auth);
}

void fuzz_reply_require_same(const fuzz_reply_t *first, const fuzz_reply_t *again, const char *what)
{
    FUZZ_REQUIRE(first->code == again->code, "%s: code %d, first answer %d", what, again->code,
                 first->code);
    FUZZ_REQUIRE(first->points == again->points, "%s: points %lld, first answer %lld", what,
                 (long long)again->points, (long long)first->points);
    FUZZ_REQUIRE(first->balance == again->balance, "%s: balance %lld, first answer %lld", what,
                 (long long)again->balance, (long long)first->balance);
    FUZZ_REQUIRE(first->seq == again->seq, "%s: seq %llu, first answer %llu", what,
                 (unsigned long long)again->seq, (unsigned long long)first->seq);
    FUZZ_REQUIRE(strcmp(first->auth_code, again->auth_code) == 0,
                 "%s: auth code \"%s\", first answer \"%s\"", what, again->auth_code,
                 first->auth_code);
    FUZZ_REQUIRE(strcmp(first->txn_id, again->txn_id) == 0,
                 "%s: txn id \"%s\", first answer \"%s\"", what, again->txn_id, first->txn_id);
    FUZZ_REQUIRE(strcmp(first->member_id, again->member_id) == 0,
                 "%s: member \"%s\", first answer \"%s\"", what, again->member_id,
                 first->member_id);
}

void fuzz_decline_reply(const envelope_t *env, const uint8_t *hash, int code, const char *why,
                        fuzz_reply_t *out)
{
    char text[RECEIPT_TEXT_BYTES_MAX];
    snprintf(text, sizeof text, "Declined %02d: %s", code, why);
    authorization_t auth;
    wire_auth_decline(&auth, env, code, text);
    wire_auth_echo(&auth, env, hash);
    size_t len = 0;
    uint8_t *bytes = wire_pack_auth(&auth, &len);
    FUZZ_REQUIRE(bytes != NULL, "decline %02d could not be packed", code);
    fuzz_reply_decode(bytes, len, out);
    free(bytes);
    FUZZ_REQUIRE(out->code == code, "decline %02d came back as code %d", code, out->code);
    FUZZ_REQUIRE(out->seq == 0 && out->points == 0 && out->auth_code[0] == '\0',
                 "decline %02d carries seq %llu, points %lld, auth code \"%s\"", code,
                 (unsigned long long)out->seq, (long long)out->points, out->auth_code);
    /* Without an envelope there is nothing to echo; an id that is not valid (unprintable,
     * over its limit) is never echoed: a reply carries only printable ASCII. */
    const char *txn_id = env != NULL ? env->txn_id : "";
    const char *site_id = env != NULL ? env->site_id : "";
    const char *member_id = env != NULL ? wire_member_of(env) : "";
    txn_id = wire_id_valid(txn_id, TXN_ID_LEN_MAX) ? txn_id : "";
    site_id = wire_id_valid(site_id, SITE_ID_LEN_MAX) ? site_id : "";
    member_id = wire_id_valid(member_id, MEMBER_ID_LEN_MAX) ? member_id : "";
    FUZZ_REQUIRE(strcmp(out->txn_id, txn_id) == 0, "decline %02d echoes txn id \"%s\"", code,
                 out->txn_id);
    FUZZ_REQUIRE(strcmp(out->site_id, site_id) == 0, "decline %02d echoes site \"%s\"", code,
                 out->site_id);
    FUZZ_REQUIRE(strcmp(out->member_id, member_id) == 0, "decline %02d echoes member \"%s\"", code,
                 out->member_id);
    FUZZ_REQUIRE(hash != NULL ? out->request_hash_len == WIRE_HASH_BYTES &&
                                    memcmp(out->request_hash, hash, WIRE_HASH_BYTES) == 0
                              : out->request_hash_len == 0,
                 "decline %02d does not echo the request's hash", code);
}
