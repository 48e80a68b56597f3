/* The checks a till's request passes before the agent holds it: ours (partner, site),
 * not under the agent's reserved txn prefix, stamped with this agent's partner and site,
 * still within a wire message once stamped, and valid (wire_validate, partner socket). */
#ifndef COALITION_TILL_CHECK_H
#define COALITION_TILL_CHECK_H

#include "wire.h"

#include <stddef.h>

/* Returns RC_APPROVED, or the response code with a reason in `why`. A request that gets
 * as far as the stamp has env->partner_id and env->site_id pointing at `partner_id` and
 * `site_id` from then on, approved or not: the caller restores the decoded strings
 * before wire_envelope_free. Both ids must be valid ids (wire_id_valid). */
int till_check_request(envelope_t *env, const char *partner_id, const char *site_id, char *why,
                       size_t why_size);

#endif
