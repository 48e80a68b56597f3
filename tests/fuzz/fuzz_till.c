/* libFuzzer target: a till's message as the agent admits it (agent.c admit): decode,
 * till_check_request with this agent's partner and site, then what the agent does next.
 * Invariants: a request of another partner or site is refused 57 unstamped; an approved
 * one is stamped, fits a wire message, passes wire_validate as the broker will run it,
 * hashes, and its packed form (what the outbox keeps) decodes again to the same hash; a
 * refused till gets a decline that packs within WIRE_MESSAGE_BYTES_MAX and decodes. Each
 * input is admitted by an agent with short ids and by one with the longest ids (the
 * stamp grows a request most). */
#include "fuzz_support.h"

#include "errors.h"
#include "till_check.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct agent_ids {
    const char *partner_id;
    const char *site_id;
} agent_ids_t;

static const agent_ids_t AGENTS[] = {
    {"fuelco", "main"},
    {"partner-with-the-longest-id-032b", "site-with-the-longest-id-of-32-b"},
};
#define AGENT_COUNT (sizeof AGENTS / sizeof AGENTS[0])

_Static_assert(sizeof "partner-with-the-longest-id-032b" - 1 == PARTNER_ID_LEN_MAX,
               "the second agent has a partner id of the longest length");
_Static_assert(sizeof "site-with-the-longest-id-of-32-b" - 1 == SITE_ID_LEN_MAX,
               "the second agent has a site id of the longest length");

/* A till waiting on a held request may be told it is pending (agent.c till_pending). */
static void check_pending_reply(const envelope_t *env, const char *why)
{
    char text[RECEIPT_TEXT_BYTES_MAX + 16];
    snprintf(text, sizeof text, "Pending: %s", why);
    text[RECEIPT_TEXT_BYTES_MAX - 1] = '\0';
    authorization_t auth;
    wire_auth_decline(&auth, env, RC_UNAVAILABLE, text);
    auth.pending = true;
    size_t len = 0;
    uint8_t *bytes = wire_pack_auth(&auth, &len);
    FUZZ_REQUIRE(bytes != NULL, "a pending reply could not be packed");
    fuzz_reply_t reply;
    fuzz_reply_decode(bytes, len, &reply);
    FUZZ_REQUIRE(reply.code == RC_UNAVAILABLE && strcmp(reply.txn_id, env->txn_id) == 0,
                 "a pending reply came back as code %d for txn \"%s\"", reply.code, reply.txn_id);
    free(bytes);
}

/* An approved request: what the agent holds, stores and sends. */
static void check_held(envelope_t *env, const agent_ids_t *ids)
{
    FUZZ_REQUIRE(env->partner_id == ids->partner_id && env->site_id == ids->site_id,
                 "an approved request is not stamped with the agent's partner and site");
    char why[RECEIPT_TEXT_BYTES_MAX] = "";
    int code = wire_validate(env, false, why, sizeof why);
    FUZZ_REQUIRE(code == RC_APPROVED, "approved by the agent, the broker's check says %02d: %s",
                 code, why);
    uint8_t hash[WIRE_HASH_BYTES], hash_again[WIRE_HASH_BYTES];
    int rc = wire_request_hash(env, hash);
    FUZZ_REQUIRE(rc == CL_OK, "an approved request does not hash: %s", cl_strerror(rc));
    size_t len = 0;
    uint8_t *bytes = wire_pack_envelope(env, &len);
    FUZZ_REQUIRE(bytes != NULL, "an approved request could not be packed");
    FUZZ_REQUIRE(len <= WIRE_MESSAGE_BYTES_MAX, "an approved request packs to %zu bytes", len);
    envelope_t *held = wire_envelope_decode(bytes, len);
    FUZZ_REQUIRE(held != NULL, "the packed request the outbox keeps does not decode");
    rc = wire_request_hash(held, hash_again);
    FUZZ_REQUIRE(rc == CL_OK && memcmp(hash, hash_again, WIRE_HASH_BYTES) == 0,
                 "the request the outbox keeps hashes differently");
    wire_envelope_free(held);
    free(bytes);
    check_pending_reply(env, "txn id pending");
}

static void admit_as(const agent_ids_t *ids, const uint8_t *data, size_t size)
{
    fuzz_reply_t reply;
    envelope_t *env = wire_envelope_decode(data, size);
    if (env == NULL) {
        fuzz_decline_reply(NULL, NULL, RC_FORMAT_ERROR, "message is not a valid envelope", &reply);
        return;
    }
    char *sent_partner_id = env->partner_id, *sent_site_id = env->site_id; /* env owns them */
    bool ours = (sent_partner_id[0] == '\0' || strcmp(sent_partner_id, ids->partner_id) == 0) &&
                (sent_site_id[0] == '\0' || strcmp(sent_site_id, ids->site_id) == 0);
    char why[RECEIPT_TEXT_BYTES_MAX] = "";
    int code = till_check_request(env, ids->partner_id, ids->site_id, why, sizeof why);
    FUZZ_REQUIRE(fuzz_code_known(code), "till_check_request returned %d", code);
    FUZZ_REQUIRE(ours || (code == RC_NOT_PERMITTED && env->partner_id == sent_partner_id &&
                          env->site_id == sent_site_id),
                 "a request for partner \"%s\" site \"%s\" got %02d", sent_partner_id, sent_site_id,
                 code);
    if (code == RC_APPROVED) {
        check_held(env, ids);
    } else {
        FUZZ_REQUIRE(why[0] != '\0', "till decline %02d without a reason", code);
        fuzz_decline_reply(env, NULL, code, why, &reply); /* agent.c till_decline */
    }
    env->partner_id = sent_partner_id;
    env->site_id = sent_site_id;
    wire_envelope_free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < AGENT_COUNT; i++)
        admit_as(&AGENTS[i], data, size);
    return 0;
}
