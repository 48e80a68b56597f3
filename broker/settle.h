/* Settlement: partner contracts, settlement windows and their per-partner counters, as
 * the ledger keeps them (see ARCHITECTURE.md, Settlement). Read side for coalitionctl and
 * tests; the writer side is internal to the ledger (ledger_internal.h).
 *
 * Window lifecycle (every transition is in settle.c):
 *
 *        first write                period over (any write or the       window close
 *   (none) ───────────► OPEN ──────  writer's tick), or close --early ──► ENDED ──────────► CLOSED
 *                        ▲                                                  │  (operator, or the
 *                        └────────── the next window opens at once ◄────────┘   writer after grace)
 *
 * Exactly one window is OPEN once anything was written; events go to it. Counters of a
 * window change only while it is OPEN; CLOSED never changes again.
 *
 * Money: minor units of the partner's contract currency. Prices are per 1,000 points and
 * each journal entry's money is rounded half up to the minor unit (amount_price); a
 * reversal moves the difference of the prices of its original's cumulative reversed
 * points, under the original's contract, so a full reversal gives back exactly what the
 * original moved.
 *
 * A burn is settled under the model of the window it is recorded in (hub: the operator
 * pays the redeemer; issuer-pays: the issuers do), and a reversal of a burn under its
 * burn's, wherever it is recorded. A partner's net in a window (positive: it pays):
 *   issue - issue_reversed + topup + fees            (its part with the operator)
 *   - hub_reimburse + hub_reimburse_reversed         (redemptions settled by the operator)
 *   + owed to redeemers - owed by issuers            (redemptions settled by issuers)
 * and the operator's margin is the sum of the nets (the pairs cancel), so the matrix and
 * the margin balance by construction. Issuer-pays needs every partner in one currency. */
#ifndef COALITION_SETTLE_H
#define COALITION_SETTLE_H

#include "ledger.h"
#include "receipt.h"

#include <stdint.h>

/* Windows the writer's housekeeping closes in one step. While the broker runs at most
 * two are unclosed (grace < period); after a long stop more may be, and each tick closes
 * up to this many. */
#define SETTLE_UNCLOSED_WINDOWS_MAX 8
/* Partners a coalition holds at most: a burn's issuer shares name each at most once and
 * fit a journal entry (LEDGER_ENTRY_BYTES_MAX). */
#define SETTLE_PARTNERS_MAX 128
/* A PairAmount packed: two tags and lengths, an id, two int64 varints, with margin. */
#define SETTLE_PAIR_BYTES_MAX (4 + PARTNER_ID_LEN_MAX + 2 * 11)
_Static_assert(SETTLE_PARTNERS_MAX *(SETTLE_PAIR_BYTES_MAX + 3) + 2048 <= LEDGER_ENTRY_BYTES_MAX,
               "a burn's issuer shares fit a journal entry");
#define SETTLE_WINDOW_KEY_BYTES (1 + 8 + PARTNER_ID_LEN_MAX)
#define CONTRACT_KEY_BYTES (PARTNER_ID_LEN_MAX + 1 + 8)

typedef struct settle_window {
    uint64_t id;
    int64_t start_ms, end_ms;
    int state; /* COALITION__WINDOW_STATE__WINDOW_* */
    int model; /* COALITION__SETTLEMENT_MODEL__MODEL_* */
    uint64_t first_seq, last_seq, close_seq;
    uint8_t last_hash[WIRE_HASH_BYTES];
    int64_t grace_seconds;
} settle_window_t;

typedef struct settle_counters {
    int64_t points_issued, points_issued_reversed, points_redeemed, points_redeemed_reversed;
    int64_t issue_minor, issue_reversed_minor, reimburse_minor, reimburse_reversed_minor;
    int64_t fee_minor, topup_points, topup_minor;
    uint64_t entries;
    /* Of the reimbursements above, those settled through the operator (burns recorded in a
     * hub window, and reversals of such burns wherever they are recorded); the others are
     * owed by issuers (the pairs). */
    int64_t hub_reimburse_minor, hub_reimburse_reversed_minor;
    /* Breakage of this partner's points as issuer: lots that expired or lapsed, and
     * what came back out of breakage (its earn refunded after the points broke). */
    int64_t points_expired, points_expired_reversed;
    /* Of points_issued: bonuses (tier and rules) billed to this partner. */
    int64_t points_bonus;
} settle_counters_t;

/* Points and money between one issuer and the partner whose counters hold it. */
typedef struct settle_pair {
    char partner_id[PARTNER_ID_LEN_MAX + 1];
    int64_t points, minor;
} settle_pair_t;

typedef struct settle_partner_row {
    char partner_id[PARTNER_ID_LEN_MAX + 1];
    settle_counters_t c;
    /* As redeemer in this window: what each issuer owes it for burns (less what burn
     * reversals gave back), sorted by issuer; used by the issuer-pays model. */
    size_t n_pairs;
    settle_pair_t pairs[SETTLE_PARTNERS_MAX];
} settle_partner_row_t;

typedef struct settle_contract {
    char partner_id[PARTNER_ID_LEN_MAX + 1];
    int64_t from_ms, earn_rate_milli;
    char currency[CURRENCY_CODE_BYTES];
    int64_t issue_price_per_mille, reimburse_per_mille, fee_minor, net_cap_minor;
    int funding; /* COALITION__FUNDING__FUNDING_* */
    uint64_t created_seq;
    int64_t return_period_seconds; /* earns here are pending this long (0: none) */
    char locale[RECEIPT_LOCALE_CODE_BYTES]; /* its tills' receipt language ("": en) */
} settle_contract_t;

typedef struct settle_config {
    int64_t period_seconds, grace_seconds;
    int model;
    uint64_t open_window_id, oldest_unclosed_id;
} settle_config_t;

/* Issuer-pays model: a burn's reimbursement (its money under the redeemer's contract) is
 * owed to the redeeming partner by the issuers of the points outstanding when it is
 * recorded, pro rata to each issuer's outstanding points (negative figures weigh 0).
 * Rounding: largest remainder. Each issuer gets floor(total * w_i / W); the units left
 * over go one each to the largest remainders (total * w_i mod W), ties to the issuer
 * whose id sorts first. Points and money are split so, separately, so each burn's
 * shares add up to its points and its money exactly and every matrix balances to the
 * cent. A reversal of a burn gives back to the burn's issuers in id order, each filled
 * up to its share before the next (on the cumulative points and money reversed). The
 * operator keeps issue revenue, top-ups and fees in both models; under issuer-pays it
 * pays no reimbursement:
 *   net = issue - issue_reversed + topup + fees + owed to redeemers - owed by issuers */
void settle_split(int64_t total, const int64_t *weights, size_t n, int64_t *out);
/* out[i] = what of shares[i] a cumulative reversal from `before` to `after` gives back. */
void settle_waterfall(const int64_t *shares, size_t n, int64_t before, int64_t after, int64_t *out);

/* A partner's net with the operator in a window (above, without the pairs), 128 bits. */
__extension__ typedef __int128 settle_i128_t;
settle_i128_t settle_net_operator(const settle_counters_t *c);

/* Read side, each in a read transaction of its own (read-only ledgers). */
int ledger_settle_config(ledger_t *self, settle_config_t *out);
/* Windows with id > after_id, in id order, at most max. */
int ledger_windows_slice(ledger_t *self, uint64_t after_id, settle_window_t *rows, size_t max,
                         size_t *count_out);
int ledger_window(ledger_t *self, uint64_t id, settle_window_t *out);
/* Counters of the window's partners after `after` (NULL or "": from the first). */
int ledger_window_counters(ledger_t *self, uint64_t window_id, const char *after,
                           settle_partner_row_t *rows, size_t max, size_t *count_out);
/* Contracts of a partner, oldest first, at most max. */
int ledger_contracts(ledger_t *self, const char *partner_id, settle_contract_t *rows, size_t max,
                     size_t *count_out);
int ledger_prepaid_remaining(ledger_t *self, const char *partner_id, int64_t *out);
/* Points outstanding by issuer (coalition-wide), sorted by partner id. */
int ledger_outstanding(ledger_t *self, settle_pair_t *rows, size_t max, size_t *count_out);

/* UTC time as 2026-11-30T10:00:00.000Z. */
#define SETTLE_TIME_TEXT_BYTES 32
void settle_time_text(int64_t ms, char buf[SETTLE_TIME_TEXT_BYTES]);

/* The calendar-month window (period 0) or the period-aligned one containing at_ms. */
void settle_period_bounds(int64_t period_seconds, int64_t at_ms, int64_t *start_ms,
                          int64_t *end_ms);

#endif
