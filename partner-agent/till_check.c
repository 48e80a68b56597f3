/* A till's request checked and stamped before the agent holds it; see till_check.h.
 * Invariant: an approved request names this agent's partner and site, fits a wire
 * message and passes wire_validate as the broker will run it. */
#include "till_check.h"

#include "agent.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

int till_check_request(envelope_t *env, const char *partner_id, const char *site_id, char *why,
                       size_t why_size)
{
    assert(env != NULL && why != NULL && why_size > 0);
    assert(wire_id_valid(partner_id, PARTNER_ID_LEN_MAX));
    assert(wire_id_valid(site_id, SITE_ID_LEN_MAX));
    if (env->partner_id[0] != '\0' && strcmp(env->partner_id, partner_id) != 0) {
        snprintf(why, why_size, "this agent serves partner %s", partner_id);
        return RC_NOT_PERMITTED;
    }
    if (env->site_id[0] != '\0' && strcmp(env->site_id, site_id) != 0) {
        snprintf(why, why_size, "this agent serves site %s", site_id);
        return RC_NOT_PERMITTED;
    }
    if (env->txn_id[0] == AGENT_TXN_PREFIX) {
        snprintf(why, why_size, "txn ids starting with '%c' are reserved", AGENT_TXN_PREFIX);
        return RC_FORMAT_ERROR;
    }
    env->partner_id = (char *)partner_id;
    env->site_id = (char *)site_id;
    if (coalition__envelope__get_packed_size(env) > WIRE_MESSAGE_BYTES_MAX) {
        snprintf(why, why_size, "request over %d bytes once stamped", WIRE_MESSAGE_BYTES_MAX);
        return RC_FORMAT_ERROR;
    }
    return wire_validate(env, false, why, why_size);
}
