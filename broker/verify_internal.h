/* Shared by the audit's parts: verify.c (driver, chain, idempotency), verify_accounts.c
 * (per-account sums in 128 bits), verify_rederive.c (contracts, members, earns and burns
 * re-derived from the journal), verify_reversals.c (refunds, voids, reversal records and
 * tombstones) and verify_map.c (the hash map they keep their state in). Not for other modules; the
 * unit tests include it to drive the sums directly.
 *
 * Memory: one map item per account (as many as members + 2 x partners), one per partner,
 * and one per original that a refund or void reversed. Nothing grows with the number of
 * journal entries that reverse nothing. */
#ifndef COALITION_VERIFY_INTERNAL_H
#define COALITION_VERIFY_INTERNAL_H

#include "ledger_internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sums of int64 values: exact for any count below 2^64, as in common/amount.c. */
__extension__ typedef __int128 i128_t;

/* Longest map key: an idempotency or reversal key, or an account name, plus a NUL. */
#define VERIFY_KEY_BYTES_MAX (TXN_KEY_BYTES_MAX + 1)
_Static_assert(ACCOUNT_NAME_BYTES_MAX < VERIFY_KEY_BYTES_MAX, "account names fit map keys");
_Static_assert(PARTNER_ID_LEN_MAX < VERIFY_KEY_BYTES_MAX, "partner ids fit map keys");
/* Items a map holds at most; past it the audit stops with CL_ERR_NOMEM. */
#define VERIFY_MAP_ITEMS_MAX ((size_t)1 << 32)
/* Text of an i128 in decimal, sign included. */
#define I128_TEXT_BYTES 48

/* A map key: `len` bytes (a txn key holds NULs), then a NUL so names print. */
typedef struct {
    size_t len;
    char bytes[VERIFY_KEY_BYTES_MAX];
} vkey_t;

/* Open-addressing hash map of fixed-size items that each begin with their vkey_t. Items
 * stay in insertion order (journal order), so "the first one" is well defined. Pointers
 * to items are invalidated by the next insert. */
typedef struct {
    unsigned char *items;
    size_t item_bytes, count, capacity;
    size_t *slots; /* 0: empty; otherwise item index + 1 */
    size_t slot_count;
} vmap_t;

void vmap_init(vmap_t *m, size_t item_bytes);
void vmap_free(vmap_t *m);
void *vmap_at(const vmap_t *m, size_t index);
void *vmap_find(const vmap_t *m, const void *key, size_t len);
/* A new zero-filled item with this key; CL_ERR_EXISTS if the key is there already. */
int vmap_insert(vmap_t *m, const void *key, size_t len, void **item_out);

/* An account: the running sum of its postings in journal order. */
typedef struct {
    vkey_t name;
    i128_t sum;
    uint64_t opened_seq; /* the enrolment or partner-add entry that opened it */
    bool seen;           /* matched with its record in the accounts database */
} vaccount_t;

/* A partner: its record from the partners database and the contract its partner-add
 * journal entry set (added_seq 0 until the walk meets that entry). */
typedef struct {
    vkey_t id;
    int64_t record_rate_milli;
    char record_currency[CURRENCY_CODE_BYTES];
    uint64_t record_created_seq;
    uint64_t added_seq;
    int64_t rate_milli;
    char currency[CURRENCY_CODE_BYTES];
    ledger_limits_t record_limits; /* as stored, 0 = default */
    ledger_limits_t limits;        /* as the journal's partner-limits entries set them */
    size_t *contracts;             /* indices into verify_t.contracts, by start time */
    size_t n_contracts, cap_contracts;
    int64_t prepaid; /* the prepaid block as the journal leaves it */
} vpartner_t;

/* A contract as the journal recorded it, keyed like the contracts database. */
typedef struct {
    vkey_t key;
    settle_contract_t c;
    bool seen; /* matched with its record */
} vcontract_t;

/* One partner's counters in one window, keyed like the settlement database ("C" id
 * partner), as the journal's entries add up. */
typedef struct {
    vkey_t key;
    settle_counters_t c;
    bool seen;
} vcounters_t;

/* What an issuer owes a redeemer in a window (issuer-pays pairs), keyed "C" id redeemer
 * "\0" issuer. */
typedef struct {
    vkey_t key;
    int64_t points, minor;
    bool seen;
} vpair_t;

/* A window as the journal shows it, keyed by its u64be id. */
typedef struct {
    vkey_t key;
    uint64_t id, min_seq, max_seq, close_seq;
    int model;           /* as the configuration before its first entry set it */
    int64_t max_time_ms; /* its latest entry's writer time */
} vwindow_t;

/* A settlement configuration entry: what windows opened after `seq` take. */
typedef struct {
    uint64_t seq;
    int model;
    int64_t grace_seconds, period_seconds;
} vconfig_t;

/* What the journal's refunds and voids gave back of one original, keyed by its
 * (partner, site, txn) key. */
typedef struct {
    vkey_t key;
    uint64_t original_seq, first_seq;
    Coalition__EntryKind original_kind;
    int64_t original_minor, original_points;
    int64_t reversed_minor, reversed_points;
    bool voided;
    bool seen; /* matched with its record in the reversals database */
} vreversal_t;

typedef struct {
    ledger_t *ledger;
    MDB_txn *txn;
    char *why;
    size_t why_size;
    uint64_t entries;
    uint8_t prev[WIRE_HASH_BYTES];
    uint64_t approved_idem;
    uint64_t tombstones, reversals_ahead;
    i128_t grand_total;
    vmap_t accounts;  /* vaccount_t */
    vmap_t partners;  /* vpartner_t */
    vmap_t reversals; /* vreversal_t */
    vmap_t contracts; /* vcontract_t */
    vmap_t counters;  /* vcounters_t */
    vmap_t windows;   /* vwindow_t */
    vmap_t pairs;     /* vpair_t */
    vmap_t cards;     /* verify_cards.c: cards by key, unclaimed accounts, banks and refs */
    vmap_t unclaimed;
    vmap_t banks;
    int64_t card_period_s;      /* the unclaimed claim period the journal has set so far */
    uint64_t card_settings_seq; /* its card-settings entry (0: the default) */
    outstanding_t outstanding;  /* by issuer, as the journal leaves it */
    bool outstanding_seen;      /* matched with its record */
    vconfig_t *configs;         /* the journal's settlement configurations, in order */
    size_t n_configs, cap_configs;
    uint64_t last_window_id;
    struct vlots *lots;       /* verify_lots.c */
    struct vearning *earning; /* verify_earning.c */
} verify_t;

void verify_init(verify_t *v, ledger_t *ledger, MDB_txn *txn, char *why, size_t why_size);
void verify_free(verify_t *v);
/* Describe the violation in v->why; returns CL_ERR_CORRUPT. */
__attribute__((format(printf, 2, 3))) int verify_violation(verify_t *v, const char *fmt, ...);
void i128_text(i128_t value, char buf[I128_TEXT_BYTES]);
/* "partner/site/txn" for a key made by ledger_txn_key. */
void verify_key_text(const vkey_t *key, char *buf, size_t size);
/* The key of the original a refund, void or reversal-ahead entry names: (partner, its
 * original site or else its own site, original txn). False if it does not fit. */
bool verify_original_key(const journal_entry_t *e, vkey_t *key);

/* verify_accounts.c. Open an account (enrolment, partner-add); post an entry's postings,
 * checking each running sum stays within int64 and no member goes below zero; then
 * compare with the accounts database, one record at a time in any order, and finish. */
int vaccounts_open(verify_t *v, const char *name, uint64_t seq);
int vaccounts_post(verify_t *v, const journal_entry_t *e);
int vaccounts_compare(verify_t *v, const char *name, int64_t balance);
int vaccounts_finish(verify_t *v);
int verify_accounts(verify_t *v);

/* verify_rederive.c. Load the partner records before the walk; re-derive one entry from
 * the entries before it; after the walk, compare the reversal, member and partner
 * records with what the journal derived. */
int verify_load_partners(verify_t *v);
int verify_rederive_entry(verify_t *v, const journal_entry_t *e);
int verify_records(verify_t *v);
/* The sender of an earn, burn or reversal: a partner added by an earlier entry. */
int verify_partner_in_force(verify_t *v, const journal_entry_t *e, const vpartner_t **out);
/* Exactly the two postings rules.c writes: `from` -points, then `to` +points. */
int verify_expect_move(verify_t *v, const journal_entry_t *e, const char *from, const char *to,
                       int64_t points);
/* No postings and no points (partner-add, enrolment, reversal ahead). */
int verify_expect_no_moves(verify_t *v, const journal_entry_t *e);

/* verify_cards.c. Bank and card entries, the card an earn or burn names (before its
 * postings are checked), where an unclaimed account's points are now (for reversals of
 * its earns), and the card, bank and member records against the journal. */
void verify_cards_init(verify_t *v);
void verify_cards_free(verify_t *v);
int verify_rederive_card(verify_t *v, const journal_entry_t *e);
int verify_card_earn_burn(verify_t *v, const journal_entry_t *e);
void verify_holder(const verify_t *v, const char *member, char account[ACCOUNT_NAME_BYTES_MAX],
                   const char **member_out);
int verify_card_records(verify_t *v);
int verify_unclaimed_record(verify_t *v, const Coalition__MemberRecord *m);

/* verify_keys.c. Key and partner-limit entries against the earlier journal; after the
 * walk, the keys database against the journal and each partner's stored limits against
 * its last partner-limits entry. */
int verify_rederive_key(verify_t *v, const journal_entry_t *e);
int verify_rederive_limits(verify_t *v, const journal_entry_t *e);
int verify_key_records(verify_t *v);
int verify_partner_limits(verify_t *v, const vpartner_t *p);
/* The limits the journal had set for `p` so far, defaults filled in. */
void verify_limits_in_force(const vpartner_t *p, ledger_limits_t *out);

/* verify_settle.c. Each entry's window (never decreasing, never a closed one) and
 * settlement fields (contract, money, fee) against the contracts the journal recorded,
 * summed into window counters and prepaid blocks; a reversal's are priced under its
 * original's contract, `reversed_before` being its original's points given back before
 * it. After the walk: contracts, counters, prepaid blocks and windows in the database
 * against the journal, both ways. */
int verify_settle_entry(verify_t *v, const journal_entry_t *e);
int verify_settle_reversal(verify_t *v, const journal_entry_t *e, const journal_entry_t *original,
                           int64_t reversed_before);
int verify_settle_records(verify_t *v);
/* The contract of `p` in force at `at_ms` among those recorded so far, or NULL. */
const settle_contract_t *verify_contract_at(const verify_t *v, const vpartner_t *p, int64_t at_ms);

/* verify_lots.c. Each entry's lots and expiry policies in the walk; after it, the lots
 * database and the expiry indexes against the accounts and member records. */
int verify_lots_init(verify_t *v);
void verify_lots_free(verify_t *v);
int verify_lots_entry(verify_t *v, const journal_entry_t *e);
int verify_lots_records(verify_t *v);
/* An earn's reversal out of breakage: at most what of its earn's lot expired and was not
 * taken back before (lapsed: a lapsed unclaimed account's earn, all of it). */
int verify_lots_refund(verify_t *v, const journal_entry_t *e, const journal_entry_t *earn,
                       bool lapsed);

/* verify_earning.c. Tier settings and rules in the walk; each earn's tier and bonuses
 * (from verify_rederive.c's earn check) and each earn reversal's qualifying points (from
 * verify_reversals.c; holder NULL: out of breakage); after the walk, member records. */
int verify_earning_init(verify_t *v);
void verify_earning_free(verify_t *v);
int verify_earning_entry(verify_t *v, const journal_entry_t *e);
int verify_verify_earning(verify_t *v, const journal_entry_t *e);
int verify_earning_reversal(verify_t *v, const journal_entry_t *e, const journal_entry_t *earn,
                            int64_t minor_before, int64_t minor_after, const char *holder);
/* A member's lot summary (from verify_lots.c's walk): its tier and qualifying points. */
int verify_earning_summary(verify_t *v, const char *member, const Coalition__LotSummary *m);
int verify_earning_records(verify_t *v);
/* A burn's activity (from NULL), or a claim's: `member` takes the activity of the
 * unclaimed account `from` when later. The latest activity of a member (0: none). */
int verify_earning_activity(verify_t *v, const char *member, int64_t at_ms, const char *from);
int verify_earning_last_activity(const verify_t *v, const char *member, int64_t *out);

/* verify_reversals.c. A refund or void; a reversal ahead of its original; after the
 * walk, the reversals database against what the journal gave back. */
int verify_rederive_reversal(verify_t *v, const journal_entry_t *e);
int verify_rederive_ahead(verify_t *v, const journal_entry_t *e);
int verify_reversal_records(verify_t *v);

#endif
