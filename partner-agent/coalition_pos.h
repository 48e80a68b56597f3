/* coalition_pos: the till-side client library. A till links it and talks to its site's
 * coalition-agent over a local socket. Every call is blocking with a timeout, carries
 * the caller's idempotency key (txn_id), and may be repeated with the same key: the
 * clearinghouse answers a repeat with the original reply, marked as a replay.
 * Amounts are integer minor units (1234 = 12.34 EUR); points are integers. */
#ifndef COALITION_POS_H
#define COALITION_POS_H

#include <stdbool.h>
#include <stdint.h>

#define CPOS_TEXT_BYTES 160
#define CPOS_AUTH_CODE_BYTES 8
#define CPOS_TXN_ID_BYTES 65
#define CPOS_TIMEOUT_MS_DEFAULT 10000

/* Return values of the calls (the answer itself is in cpos_result_t). */
#define CPOS_OK 0
#define CPOS_NO_ANSWER (-1) /* the agent did not answer within the timeout */
#define CPOS_BAD_ARGUMENT (-2)

#define CPOS_TIER_BYTES 17 /* TIER_NAME_LEN_MAX + 1 */

typedef struct cpos cpos_t;

typedef struct cpos_result {
    int code;       /* ISO 8583-style response code: 0 approved, 10 partial, 51 ... */
    bool approved;  /* code 00 or 10, and not reversed since */
    bool offline;   /* stored by the agent; the clearinghouse has not seen it yet */
    bool pending;   /* outcome not final yet */
    bool replay;    /* the original answer to an earlier identical request */
    bool reversed;  /* a replay of an approval that was voided or fully refunded since */
    int64_t points; /* earned, redeemed or reversed */
    int64_t balance;
    uint64_t seq; /* ledger sequence, 0 if declined or offline */
    char auth_code[CPOS_AUTH_CODE_BYTES];
    char txn_id[CPOS_TXN_ID_BYTES];
    char text[CPOS_TEXT_BYTES]; /* receipt text */
    /* Of `balance` (answers from the clearinghouse): what may be burned now, and what is
     * pending until a partner's return period ends. */
    int64_t available, pending_points;
    /* An earn's points split: base (the amount at the partner's rate) and bonus (tier and
     * rules); and the member's tier at the moment of the earn ("" : none). */
    int64_t base_points, bonus_points;
    char tier[CPOS_TIER_BYTES];
} cpos_result_t;

/* NULL if the endpoint is malformed or out of memory. terminal_id names the till. */
cpos_t *cpos_new(const char *agent_endpoint, const char *terminal_id);
void cpos_destroy(cpos_t **self_p);
void cpos_set_timeout(cpos_t *self, int timeout_ms);

int cpos_earn(cpos_t *self, const char *txn_id, const char *member_id, int64_t amount_minor,
              const char *currency, cpos_result_t *out);
int cpos_burn(cpos_t *self, const char *txn_id, const char *member_id, int64_t points,
              bool allow_partial, cpos_result_t *out);
/* Refund an earn by money (amount_minor > 0) or a burn by points (points > 0);
 * both 0 refunds everything not yet refunded. */
int cpos_refund(cpos_t *self, const char *txn_id, const char *original_txn_id, int64_t amount_minor,
                int64_t points, cpos_result_t *out);
int cpos_void(cpos_t *self, const char *txn_id, const char *original_txn_id, cpos_result_t *out);
/* The same for an original taken at another store (site) of this partner, a return at
 * another store; original_site NULL or "" means this agent's own site. */
int cpos_refund_at(cpos_t *self, const char *txn_id, const char *original_site,
                   const char *original_txn_id, int64_t amount_minor, int64_t points,
                   cpos_result_t *out);
int cpos_void_at(cpos_t *self, const char *txn_id, const char *original_site,
                 const char *original_txn_id, cpos_result_t *out);
int cpos_balance(cpos_t *self, const char *txn_id, const char *member_id, cpos_result_t *out);
int cpos_enroll(cpos_t *self, const char *txn_id, const char *member_id, cpos_result_t *out);

/* Card-linked: the payment card alone names the member (13-19 digits, Luhn-checked here
 * and by the broker). The card number goes to the agent and on to the clearinghouse, in
 * memory only: nothing stores it, and the library clears its own copies. A card-linked
 * earn is never stored offline: while the clearinghouse is away it is declined 91 (and
 * voided by the agent if it may have been applied). A card no bank has enrolled yet
 * earns into an unclaimed account, which its enrolment later claims. */
int cpos_earn_card(cpos_t *self, const char *txn_id, const char *pan, int64_t amount_minor,
                   const char *currency, cpos_result_t *out);
int cpos_burn_card(cpos_t *self, const char *txn_id, const char *pan, int64_t points,
                   bool allow_partial, cpos_result_t *out);
int cpos_balance_card(cpos_t *self, const char *txn_id, const char *pan, cpos_result_t *out);

const char *cpos_code_meaning(int code);

#endif
