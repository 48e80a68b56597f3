/* The shared points ledger in LMDB: double-entry journal, accounts, members, partners,
 * idempotency records. Invariants kept on every commit: each entry's postings sum to
 * zero, so all accounts sum to zero; no member balance is negative; each journal entry's
 * hash covers its predecessor's; every approved request has exactly one idempotency
 * record pointing at its entry. Only one writer (the broker's writer thread) at a time:
 * opening for writing takes the directory's writer lock (STORE_LOCK_FILE) first.
 *
 *   writer:  batch_begin ─► apply × N (a nested txn each) ─► batch_commit (fsync)
 *                                          └─ MAP_FULL ─► batch_abort, grow, redo all N
 *   after any other failure the ledger is FAILED and refuses writes until reopened. */
#ifndef COALITION_LEDGER_H
#define COALITION_LEDGER_H

#include "amount.h"
#include "card.h"
#include "keys.h"
#include "store.h"
#include "wire.h"

#include "ledger.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

#define LEDGER_SCHEMA_VERSION 7u
#define LEDGER_ENTRY_BYTES_MAX 65536
#define ACCOUNT_NAME_BYTES_MAX 96
/* Idempotency and reversal keys: "partner\0site\0txn". */
#define TXN_KEY_BYTES_MAX (PARTNER_ID_LEN_MAX + 1 + SITE_ID_LEN_MAX + 1 + TXN_ID_LEN_MAX)

/* Partner limits when the operator set none (PartnerLimitsRequest fields left 0). */
#define LIMIT_MAX_AMOUNT_MINOR_DEFAULT INT64_C(10000000) /* 100,000.00 in a 2-decimal currency */
#define LIMIT_MAX_POINTS_DEFAULT INT64_C(10000000)
#define LIMIT_BURNS_PER_MEMBER_MINUTE_DEFAULT 30u
#define LIMIT_REQUESTS_PER_SECOND_DEFAULT 5000u
/* The velocity window and how many burn times a member record keeps for it. */
#define VELOCITY_WINDOW_MS INT64_C(60000)
#define VELOCITY_BURNS_KEPT VELOCITY_BURNS_PER_MINUTE_MAX
_Static_assert(LIMIT_MAX_AMOUNT_MINOR_DEFAULT <= AMOUNT_MINOR_MAX, "default within the wire limit");
_Static_assert(LIMIT_MAX_POINTS_DEFAULT <= POINTS_MAX, "default within the wire limit");
_Static_assert(LIMIT_BURNS_PER_MEMBER_MINUTE_DEFAULT <= VELOCITY_BURNS_KEPT,
               "the member record keeps enough burn times for the default");
_Static_assert(LIMIT_REQUESTS_PER_SECOND_DEFAULT <= PARTNER_REQUESTS_PER_SECOND_MAX,
               "default within the settable range");

typedef struct ledger ledger_t;

/* A request's cards as the front end leaves them: looked up under every card key, the
 * numbers cleared. n == 0: the request carried no number for it. */
typedef struct ledger_cards {
    card_lookup_t card, new_card;
} ledger_cards_t;

/* Account that receives lapsed unclaimed points. */
#define ACCOUNT_BREAKAGE "breakage"

typedef struct ledger_limits {
    int64_t max_amount_minor;
    int64_t max_points;
    uint32_t burns_per_member_minute;
    uint32_t requests_per_second;
} ledger_limits_t;

/* Who an authenticated CURVE key is, from the keys database. */
typedef struct ledger_principal {
    char public_z85[KEY_Z85_BYTES];
    char participant[PARTNER_ID_LEN_MAX + 1];
    int role; /* COALITION__KEY_ROLE__ROLE_* */
    bool revoked;
    ledger_limits_t limits; /* a partner's limits in force (defaults filled in) */
} ledger_principal_t;

/* One row of the keys database, for listings. */
typedef struct ledger_key_row {
    char public_z85[KEY_Z85_BYTES];
    char participant[PARTNER_ID_LEN_MAX + 1];
    int role;
    uint64_t created_seq, revoked_seq;
} ledger_key_row_t;
typedef Coalition__JournalEntry journal_entry_t;

/* Create a new, empty ledger in `dir`. Fails with CL_ERR_EXISTS if one is there. */
int ledger_init(const char *dir);
/* Open the ledger in `dir`; CL_ERR_NOT_FOUND when there is none (nothing is created).
 * STORE_READ_WRITE first takes the directory's writer lock, without waiting, and holds it
 * until ledger_destroy: CL_ERR_LOCKED (logged with the holder's pid) when another writer
 * has it, and then nothing in `dir` has been touched. STORE_READ_ONLY takes no lock. */
int ledger_open(ledger_t **self_out, const char *dir, store_mode_t mode);
void ledger_destroy(ledger_t **self_p);

/* Writer side. apply() decides one validated request and returns the packed reply in
 * a malloc'd buffer; a decline leaves no trace but its idempotency record. */
int ledger_batch_begin(ledger_t *self);
int ledger_apply(ledger_t *self, const envelope_t *env, const uint8_t hash[WIRE_HASH_BYTES],
                 int64_t now_ms, uint8_t **reply_out, size_t *reply_len_out);
/* The same for a request that came over an authenticated connection: `public_z85` is the
 * sender's CURVE key (ZAP User-Id). The key is looked up in the batch's transaction, so a
 * revocation committed before is in force: an unknown or revoked key, a key of another
 * participant than the envelope names, or a request its role may not make is declined 57
 * and nothing is stored (no idempotency record, no journal entry). NULL: a trusted
 * sender (the admin socket, or a broker running --insecure); identical to ledger_apply. */
int ledger_apply_as(ledger_t *self, const char *public_z85, const envelope_t *env,
                    const uint8_t hash[WIRE_HASH_BYTES], int64_t now_ms, uint8_t **reply_out,
                    size_t *reply_len_out);
/* The same for a request with cards (NULL: none), as the front end looked them up. */
int ledger_apply_cards(ledger_t *self, const char *public_z85, const envelope_t *env,
                       const ledger_cards_t *cards, const uint8_t hash[WIRE_HASH_BYTES],
                       int64_t now_ms, uint8_t **reply_out, size_t *reply_len_out);
int ledger_batch_commit(ledger_t *self);
/* The claim period of unclaimed card points in force (the last card-settings entry, or
 * UNCLAIMED_PERIOD_SECONDS_DEFAULT), in its own read transaction: read-only ledgers. */
int ledger_unclaimed_period(ledger_t *self, int64_t *seconds_out);
/* How many cards are stored under card key `key_id` (their own read transaction). */
int ledger_cards_under_key(ledger_t *self, uint32_t key_id, uint64_t *count_out);
void ledger_batch_abort(ledger_t *self);
/* The writer's periodic step, in a batch of its own between rounds: open the next
 * settlement window when the open one's period is over, and close every window whose
 * grace after its end has passed (as the operator's window close, keyed
 * "window-close-ID" at site SETTLE_BROKER_SITE_ID). */
#define SETTLE_BROKER_SITE_ID WIRE_BROKER_SITE_ID /* wire.h */
int ledger_housekeep(ledger_t *self, int64_t now_ms, size_t *closed_out);
/* The writer's other periodic step: lapse unclaimed card points whose period is over
 * (at most `max` accounts in one batch, as the operator's unclaimed-lapse keyed
 * "lapse-<account>" at site SETTLE_BROKER_SITE_ID). */
int ledger_lapse_unclaimed(ledger_t *self, int64_t now_ms, size_t max, size_t *lapsed_out);
/* Points expiry (expiry.c): one slice of the run as of as_of_ms (<= now_ms), in a batch
 * of its own: the members with points due then, at most max_members (<=
 * EXPIRY_MEMBERS_PER_SLICE_MAX) from each expiry index, each in journal entries of at most
 * LOTS_PER_ENTRY_MAX lots keyed "expire-<seq>.<part>" (its first lot) at site
 * SETTLE_BROKER_SITE_ID. `more`: members were left for the next slice. */
#define EXPIRY_MEMBERS_PER_SLICE_MAX 256
/* Entries one slice writes at most (a member with many lots due may take several
 * slices): a slice stays about as long as an ordinary commit. */
#define EXPIRY_ENTRIES_PER_SLICE_MAX 512
_Static_assert(EXPIRY_ENTRIES_PER_SLICE_MAX >= 2 * EXPIRY_MEMBERS_PER_SLICE_MAX,
               "a slice of members with a lot entry each is not cut short");
typedef struct expiry_result {
    size_t members, entries;
    int64_t points;
    bool more;
} expiry_result_t;
int ledger_expire(ledger_t *self, int64_t as_of_ms, int64_t now_ms, size_t max_members,
                  expiry_result_t *res);
/* A member's points at now_ms (balance = available + pending) and its first `max` lots
 * in burn order (expiry_ms 0: none); CL_ERR_NOT_FOUND for an unknown member. */
typedef struct ledger_member_points {
    int64_t balance, available, pending;
} ledger_member_points_t;
typedef struct ledger_lot_row {
    uint64_t seq;
    uint32_t part;
    int64_t points, expiry_ms, earn_ms, pending_until_ms;
    char issuer[PARTNER_ID_LEN_MAX + 1];
} ledger_lot_row_t;
int ledger_member_lots(ledger_t *self, const char *member_id, int64_t now_ms,
                       ledger_member_points_t *out, ledger_lot_row_t *rows, size_t max,
                       size_t *count_out);
/* Tiers in force, and the earning rules not over yet (a partner's, or all with NULL),
 * by partner and id; read-only ledgers. */
typedef struct ledger_tier_row {
    char name[TIER_NAME_LEN_MAX + 1];
    int64_t threshold_points, multiplier_milli;
} ledger_tier_row_t;
typedef struct ledger_rule_row {
    uint64_t id;
    char partner_id[PARTNER_ID_LEN_MAX + 1];
    int kind; /* COALITION__RULE_KIND__RULE_* */
    int64_t from_ms, until_ms, multiplier_milli, threshold_minor, bonus_points;
} ledger_rule_row_t;
int ledger_tiers(ledger_t *self, ledger_tier_row_t *rows, size_t max, size_t *count_out);
int ledger_rules(ledger_t *self, const char *partner, ledger_rule_row_t *rows, size_t max,
                 size_t *count_out);
/* The expiry policies the ledger holds, by start time (read-only ledgers). */
typedef struct ledger_expiry_policy {
    int64_t from_ms, term_seconds, inactivity_seconds;
    uint64_t set_seq;
} ledger_expiry_policy_t;
int ledger_expiry_policies(ledger_t *self, ledger_expiry_policy_t *rows, size_t max,
                           size_t *count_out);
/* Grow the map after CL_ERR_MAP_FULL; only between batches. */
int ledger_grow(ledger_t *self);
uint64_t ledger_last_seq(const ledger_t *self);
/* Bytes of the map in use (last page number + 1, times the page size) and mapped, from
 * the environment's meta page (ledger_usage.c). The writer's thread only: the map is
 * resized there. */
int ledger_map_usage(ledger_t *self, uint64_t *used_out, uint64_t *size_out);

/* The journal feed (ledger_feed.c). The hook runs in the writer thread right after each
 * commit, with the last committed seq; it must never block. Set before the writer starts. */
typedef void (*ledger_commit_fn)(uint64_t last_seq, void *ctx);
void ledger_set_commit_hook(ledger_t *self, ledger_commit_fn fn, void *ctx);
/* Stored entries from from_seq on, as stored (no copy): at most `max` of them and, after
 * the first, at most bytes_max bytes in all, in one short read transaction under the map
 * lock (any thread, beside the writer). fn sees them while the transaction is open; the
 * bytes are gone when it returns. n == 0: the journal ends before from_seq. */
typedef struct ledger_raw_entry {
    uint64_t seq;
    const uint8_t *data;
    size_t len;
} ledger_raw_entry_t;
typedef int (*ledger_raw_fn)(const ledger_raw_entry_t *entries, size_t n, void *ctx);
#define LEDGER_RAW_ENTRIES_MAX 1024
int ledger_journal_raw(ledger_t *self, uint64_t from_seq, size_t max, size_t bytes_max,
                       ledger_raw_fn fn, void *ctx);
/* A journal entry received as stored (a feed subscriber): unpacked and checked like one
 * read from disk (its seq is `seq`, its postings balance) and against the chain: its
 * prev_hash is `prev` (NULL: not known, not checked) and its hash is the chain hash.
 * CL_ERR_CORRUPT when any check fails. Free with ledger_entry_free. */
int ledger_entry_decode(const uint8_t *data, size_t len, uint64_t seq,
                        const uint8_t prev[WIRE_HASH_BYTES], journal_entry_t **out);
void ledger_entry_free(journal_entry_t **entry_p);

/* Reader side, safe beside the writer: balance inquiry for a validated Balance request. */
int ledger_inquire(ledger_t *self, const envelope_t *env, const uint8_t hash[WIRE_HASH_BYTES],
                   uint8_t **reply_out, size_t *reply_len_out);
/* The same for a balance by card (cards: as the front end looked them up). */
int ledger_inquire_cards(ledger_t *self, const envelope_t *env, const ledger_cards_t *cards,
                         const uint8_t hash[WIRE_HASH_BYTES], uint8_t **reply_out,
                         size_t *reply_len_out);

/* Reader side, beside the writer (the front end's thread): who a key is. CL_ERR_NOT_FOUND
 * for a key never recorded; a revoked key is found with `revoked` set. */
int ledger_principal(ledger_t *self, const char *public_z85, ledger_principal_t *out);
/* Bumped by every commit that recorded or revoked a key or set limits: a reader caching
 * principals drops its cache when it changes (any thread). */
uint64_t ledger_access_generation(ledger_t *self);
/* RC_APPROVED when `p` may send `env` over the partner socket, else RC_NOT_PERMITTED with
 * the reason: the key must be in force, its participant must be the envelope's partner,
 * and its role must allow the body (partner: earn, burn, refund, void, balance, enrol;
 * bank: nothing yet). */
int ledger_permits(const ledger_principal_t *p, const envelope_t *env, char *why, size_t why_size);
/* A partner's limits in force, defaults filled in for fields it leaves 0. */
void ledger_limits_effective(const Coalition__Limits *stored, ledger_limits_t *out);
/* A partner's limits as stored (0 = the default) in a read transaction of its own, for
 * coalitionctl (read-only ledgers): CL_ERR_NOT_FOUND for an unknown partner. */
int ledger_partner_limits(ledger_t *self, const char *partner_id, ledger_limits_t *stored_out);
/* Keys after `after` (NULL or "": from the first) in key order; read-only ledgers. */
int ledger_keys_slice(ledger_t *self, const char *after, ledger_key_row_t *rows, size_t max,
                      size_t *count_out);

/* Reader side, in its own read transaction: the answer to a request whose key the ledger
 * already holds (the original reply marked replay, and reversed if undone since; or 94
 * for another request). The writer uses it when it has failed, so repeats still get
 * their true answer instead of 96. Returns CL_ERR_NOT_FOUND when the key is new (or a
 * tombstone awaits its original). */
int ledger_replay(ledger_t *self, const envelope_t *env, const ledger_cards_t *cards,
                  const uint8_t hash[WIRE_HASH_BYTES], uint8_t **reply_out, size_t *reply_len_out);

/* The journal seq of the approval stored under (partner, site, txn_id): 0 for a
 * remembered decline or a tombstone; CL_ERR_NOT_FOUND when the key is unknown. */
int ledger_txn_seq(ledger_t *self, const char *partner, const char *site, const char *txn_id,
                   uint64_t *seq_out);

/* Read-only helpers for coalitionctl and tests. */
int ledger_account_balance(ledger_t *self, const char *account, int64_t *balance_out);
int ledger_member_balance(ledger_t *self, const char *member_id, int64_t *balance_out);
typedef int (*ledger_entry_fn)(const journal_entry_t *entry, void *ctx);
int ledger_journal_foreach(ledger_t *self, uint64_t from_seq, ledger_entry_fn fn, void *ctx);
typedef int (*ledger_account_fn)(const char *account, int64_t balance, void *ctx);
int ledger_accounts_foreach(ledger_t *self, ledger_account_fn fn, void *ctx);

/* Bounded reads for reports beside a running broker: each call reads at most `max`
 * (<= LEDGER_SLICE_RECORDS_MAX) records in one short read transaction, ended before it
 * returns, so a reader that stalls between calls (a paused pager) pins no old snapshot
 * and the ledger file does not grow for it. For read-only ledgers (one thread).
 * Journal: entries from from_seq on, owned by the caller (ledger_journal_slice_free).
 * Accounts: the accounts after `after` in name order (NULL or "": from the first).
 * Fewer than `max` records means the end was reached. */
#define LEDGER_SLICE_RECORDS_MAX 256
typedef struct ledger_account_row {
    char account[ACCOUNT_NAME_BYTES_MAX];
    int64_t balance;
} ledger_account_row_t;
int ledger_journal_slice(ledger_t *self, uint64_t from_seq, journal_entry_t **entries, size_t max,
                         size_t *count_out);
void ledger_journal_slice_free(journal_entry_t **entries, size_t count);
int ledger_accounts_slice(ledger_t *self, const char *after, ledger_account_row_t *rows, size_t max,
                          size_t *count_out);

/* Copy the ledger as of one instant, compacted, into the existing empty directory `dir`
 * (mdb_env_copy2 with MDB_CP_COMPACT): the read transaction lasts only for the copy.
 * Open the copy with ledger_open(STORE_READ_ONLY) to audit it. */
int ledger_snapshot(ledger_t *self, const char *dir);

/* Full audit: chain, balances, idempotency. Returns CL_OK, or CL_ERR_CORRUPT with the
 * first violation described in `why`. */
int ledger_verify(ledger_t *self, char *why, size_t why_size);

void ledger_account_member(char *buf, size_t size, const char *member_id);
/* Points an entry takes out of the breakage account (its postings from it): an earn's
 * reversal of points that had expired or lapsed. */
int64_t ledger_entry_from_breakage(const journal_entry_t *e);
const char *ledger_entry_kind_name(int kind);

#endif
