/* A closed settlement window's statement (hub model): per partner the points issued and
 * reversed, redeemed and reversed, topped up, the money each way under the contracts in
 * force (issue, reversals, top-ups, fees, reimbursements), the net and its direction;
 * the net matrix (partner x operator) and the operator's margin per currency, which
 * balance to the cent: the margin is the sum of the partners' nets. With `partner`, only
 * that partner's figures and matrix rows (no margin). `detail` adds the line items: every
 * priced journal entry of the window (of the partner) with its till time.
 *
 * Money is in integer minor units of the partner's currency. Formats:
 *   JSON  {"statement":{"format":...,"window":N,...,"partners":[...],"matrix":[...],
 *         "operator_margin":[...],"lines":[...]}}\n
 *   CSV   typed rows, each kind after a "record,..." header row: statement, partner,
 *         matrix, margin, line. */
#ifndef COALITION_STATEMENT_H
#define COALITION_STATEMENT_H

#include "ledger.h"
#include "settle.h"

#include <stdbool.h>

#define STATEMENT_FORMAT "coalition-statement-2"

/* The document in a malloc'd buffer. CL_ERR_NOT_FOUND: no such window; CL_ERR_INVALID:
 * the window is not closed (statements are final). */
int statement_build(ledger_t *ledger, uint64_t window_id, const char *partner, bool csv,
                    bool detail, char **doc_out, size_t *len_out);

#endif
