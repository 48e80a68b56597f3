/* What the libFuzzer targets share: a failed invariant aborts with a message (libFuzzer
 * and the sanitizers then report it as a crash and keep the input), and replies decoded
 * into the fields the targets compare. */
#ifndef COALITION_FUZZ_SUPPORT_H
#define COALITION_FUZZ_SUPPORT_H

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The entry point libFuzzer calls; each target defines it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn, format(printf, 1, 2))) void fuzz_fail(const char *fmt, ...);

#define FUZZ_REQUIRE(cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__VA_ARGS__);                                                                \
    } while (0)

/* Room for any string of a decoded message, and its NUL. */
#define FUZZ_STRING_BYTES (WIRE_MESSAGE_BYTES_MAX + 1)

/* The fields of an Authorization a repeat must answer alike (text aside). */
typedef struct fuzz_reply {
    int code;
    int64_t points;
    int64_t balance;
    uint64_t seq;
    bool replay;
    bool reversed;
    char auth_code[FUZZ_STRING_BYTES];
    char txn_id[FUZZ_STRING_BYTES];
    char member_id[FUZZ_STRING_BYTES];
    char site_id[FUZZ_STRING_BYTES];
    uint8_t request_hash[WIRE_HASH_BYTES]; /* its first bytes when longer */
    size_t request_hash_len;
} fuzz_reply_t;

/* Decode a packed Authorization; aborts unless it decodes and fits a wire message. */
void fuzz_reply_decode(const uint8_t *bytes, size_t len, fuzz_reply_t *out);

/* Aborts unless two replies agree on code, points, balance, seq, auth code, txn id and
 * member id; `what` names the comparison in the message. */
void fuzz_reply_require_same(const fuzz_reply_t *first, const fuzz_reply_t *again,
                             const char *what);

/* The decline a front door (broker or agent) sends for a request it refuses itself, as
 * router_decline builds it: "Declined NN: why", echoing the request (env may be NULL)
 * and its hash (may be NULL). Packed, then decoded into `out`: aborts unless the packed
 * reply fits a wire message, decodes, and says what it answers (code, txn id, site,
 * member, hash). */
void fuzz_decline_reply(const envelope_t *env, const uint8_t *hash, int code, const char *why,
                        fuzz_reply_t *out);

/* Whether `code` is one of the response codes of coalition.proto. */
bool fuzz_code_known(int code);

#endif
