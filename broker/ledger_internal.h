/* Shared between ledger.c (storage, batching, chain), rules.c (what each request does)
 * and verify.c (the audit). Not for other modules. */
#ifndef COALITION_LEDGER_INTERNAL_H
#define COALITION_LEDGER_INTERNAL_H

#include "amount.h"
#include "ledger.h"
#include "receipt.h"
#include "settle.h"

#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

/* One move: a debit and a credit of the same points. An earn makes one for its base
 * points and one per bonus; everything else at most one. */
#define MOVE_POSTINGS 2
/* Bonuses one earn may carry: the tier's and one per rule in force at the partner. */
#define RULES_ACTIVE_PER_PARTNER_MAX 16
#define BONUSES_PER_EARN_MAX (1 + RULES_ACTIVE_PER_PARTNER_MAX)
#define DECISION_POSTINGS_MAX (MOVE_POSTINGS * (1 + BONUSES_PER_EARN_MAX))
#define MEMBER_PREFIX "member:"
#define ACCOUNT_ISSUED_FMT "partner:%s:issued"
#define ACCOUNT_REDEEMED_FMT "partner:%s:redeemed"

/* Points outstanding by issuer (the settlement "O" record), sorted by id. */
typedef struct outstanding {
    size_t n;
    char ids[SETTLE_PARTNERS_MAX][PARTNER_ID_LEN_MAX + 1];
    int64_t points[SETTLE_PARTNERS_MAX];
} outstanding_t;

struct ledger {
    MDB_env *env;
    store_mode_t mode;
    store_lock_t *lock; /* STORE_READ_WRITE: the directory's writer lock, until destroy */
    MDB_dbi db_meta, db_journal, db_idem, db_accounts, db_members, db_partners, db_reversals,
        db_keys, db_contracts, db_settlement, db_cards, db_bank_refs, db_banks, db_unclaimed,
        db_lot_due, db_idle, db_rules, db_expired;
    MDB_txn *batch;            /* open write transaction, or NULL */
    MDB_txn *reader;           /* reset read transaction reused for inquiries */
    pthread_rwlock_t map_lock; /* inquiries read-lock; growing the map write-locks */
    bool failed;               /* sticky: an I/O error happened; refuse writes */
    uint64_t seq;              /* last committed sequence and chain head */
    uint8_t head[WIRE_HASH_BYTES];
    bool batch_changes_access;          /* the open batch records keys or limits */
    _Atomic uint64_t access_generation; /* bumped by each commit that did */
    uint64_t batch_seq;                 /* the same, inside the open batch */
    uint8_t batch_head[WIRE_HASH_BYTES];
    uint64_t batch_window_id;    /* the open settlement window inside the batch (0: none) */
    int64_t batch_window_end_ms; /* when it ends */
    int batch_window_model;      /* its settlement model */
    /* Writer-only scratch for settle.c (too large for the stack of every request). */
    settle_partner_row_t scratch_row;
    outstanding_t batch_outstanding; /* settle_outstanding: the batch's copy */
    outstanding_t scratch_outstanding;
    bool outstanding_loaded, outstanding_dirty;
    ledger_commit_fn on_commit; /* ledger_set_commit_hook (the journal feed), or NULL */
    void *on_commit_ctx;
};

/* What an approved request does to settlement: the counters of `partner` in the open
 * window move by the entry's points, settle_minor and fee_minor (settle.c). */
typedef struct settle_effect {
    bool priced;
    const char *partner;
    int64_t contract_from_ms;
    int64_t settle_minor, fee_minor;
    int64_t prepaid_delta; /* change of the partner's prepaid block */
    bool via_issuers;      /* a burn or its reversal settled by issuers (issuer-pays) */
    size_t n_shares;       /* a burn's issuers, or what a burn's reversal gives back */
    settle_pair_t shares[SETTLE_PARTNERS_MAX];
} settle_effect_t;

/* A lot of a member's points (LotRecord and its key; LotUse in a journal entry). */
#define LOT_NO_EXPIRY_MS INT64_MAX
#define LOT_POINTS_MAX POINTS_MAX
/* Lots one journal entry may list: a burn spanning more is declined 61 (or partial). */
#define LOTS_PER_ENTRY_MAX 256
/* A LotUse packs to at most: seq, part, points, expiry, earn, pending (11 bytes each
 * with its tag), the issuer (2 + id), and its own tag and length (3). */
#define LOT_USE_PACKED_MAX (6 * 11 + 2 + PARTNER_ID_LEN_MAX + 3)
#define LOT_RECORD_BYTES_MAX (3 * 11 + 2 + PARTNER_ID_LEN_MAX)
#define LOT_KEY_BYTES_MAX (sizeof MEMBER_PREFIX - 1 + MEMBER_ID_LEN_MAX + 21)
#define LOT_INDEX_KEY_BYTES_MAX (8 + MEMBER_ID_LEN_MAX)
/* Lots a lapse or claim moves per cursor pass (it moves them all, pass after pass). */
#define LOTS_MOVED_PER_STEP 256
_Static_assert(LOTS_PER_ENTRY_MAX *LOT_USE_PACKED_MAX + 16384 <= LEDGER_ENTRY_BYTES_MAX,
               "an entry listing its most lots still fits an entry buffer");
_Static_assert(LOT_POINTS_MAX <= POINTS_MAX, "a lot is at most one request's points");

typedef struct lot {
    uint64_t seq;
    uint32_t part;
    uint64_t origin_seq; /* a lot given back anew: the earn's lot it came from (0: itself) */
    uint32_t origin_part;
    int64_t points, expiry_ms, earn_ms, pending_until_ms;
    char issuer[PARTNER_ID_LEN_MAX + 1];
} lot_t;

/* Tiers (earning.c): qualifying points by calendar month, a rolling year of them. */
#define QUAL_MONTHS 12
#define PARTNERS_USED_BYTES 16 /* a bit per partner ordinal */
#define TIERS_KEY "tiers"      /* in the meta database */

typedef struct earn_bonus {
    uint64_t rule_id; /* 0: the tier's */
    uint32_t kind;    /* Coalition__RuleKind */
    int64_t points;
} earn_bonus_t;

/* What one request does. Strings point into the envelope or into the buffers here. */
typedef struct decision {
    int code;
    receipt_locale_t locale; /* of the sender's receipts (rules_receipt.c); 0: en */
    char text[RECEIPT_TEXT_BYTES_MAX];
    Coalition__EntryKind kind;
    char member_id[MEMBER_ID_LEN_MAX + 1];
    const char *original_txn_id;
    const char *original_site_id;
    const char *added_partner_id; /* ENTRY_PARTNER_ADD */
    const char *public_key;       /* ENTRY_KEY_ADD, ENTRY_KEY_REVOKE */
    const char *participant;      /* ENTRY_KEY_ADD, ENTRY_PARTNER_LIMITS */
    uint32_t key_role;            /* ENTRY_KEY_ADD */
    Coalition__Limits limits;     /* ENTRY_PARTNER_LIMITS */
    bool has_limits;
    settle_effect_t settle;
    Coalition__Contract contract; /* ENTRY_CONTRACT_SET */
    bool has_contract;
    Coalition__SettlementConfig settlement; /* ENTRY_SETTLEMENT_CONFIG */
    bool has_settlement;
    uint64_t closed_window_id; /* ENTRY_WINDOW_CLOSE */
    /* Cards: what the front end made of the request's card numbers (NULL: nothing), and
     * the cards and bank the entry records. */
    const ledger_cards_t *cards;
    bool has_card, has_new_card;
    uint32_t card_key_id, new_card_key_id;
    uint8_t card_hash[CARD_HASH_BYTES], new_card_hash[CARD_HASH_BYTES];
    const char *card_masked, *new_card_masked;
    const char *bank_id, *bank_ref;
    char lapse_masked[PAN_MASKED_BYTES]; /* ENTRY_UNCLAIMED_LAPSE: the card's masked PAN */
    int64_t unclaimed_period_seconds;    /* ENTRY_CARD_SETTINGS */
    int64_t now_ms;                      /* the writer's clock for this request (velocity) */
    /* Points lifecycle: the lots the entry lists (LotUse), an expiry's run time and
     * reason, an expiry policy set, and a balance reply's split. */
    size_t n_lots;
    int64_t expire_as_of_ms;
    bool inactive;
    bool has_expiry_policy;
    Coalition__ExpiryPolicy expiry_policy;
    int64_t available, pending; /* of `balance` */
    int64_t from_breakage;      /* of an earn's reversal: points taken back out of breakage */
    /* An earn's plan (earning.c): base points, the tier it was made in, its bonuses; the
     * tier it (or an earn's reversal) leaves. Tier settings and rules set. */
    int64_t base_points, qualifying, tier_multiplier_milli, bonus_total;
    char tier[TIER_NAME_LEN_MAX + 1], tier_after[TIER_NAME_LEN_MAX + 1];
    bool has_tier;
    size_t n_bonuses;
    earn_bonus_t bonuses[BONUSES_PER_EARN_MAX];
    bool has_tier_settings;
    Coalition__TierSettings tier_settings;
    Coalition__TierRecord tier_recs[TIERS_MAX], *tier_ptrs[TIERS_MAX];
    bool has_rule;
    Coalition__RuleRecord rule;
    char rule_partner[PARTNER_ID_LEN_MAX + 1];
    int64_t amount_minor;
    char currency[CURRENCY_CODE_BYTES];
    int64_t points;
    int64_t earn_rate_milli;
    int64_t balance; /* member balance after the request */
    size_t posting_count;
    Coalition__Posting postings[DECISION_POSTINGS_MAX];
    char accounts[DECISION_POSTINGS_MAX][ACCOUNT_NAME_BYTES_MAX];
    /* Last, and not cleared by decision_init: only the first n_lots are ever read. */
    lot_t lots[LOTS_PER_ENTRY_MAX];
} decision_t;

/* A decision before rules_decide: everything zero but the lots array (22 KiB). */
static inline void decision_init(decision_t *d) { memset(d, 0, offsetof(decision_t, lots)); }

/* rules.c: decide and, on approval, write accounts/members/partners/reversals in txn. */
int rules_decide(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
/* access.c: the operator's key and limit requests. */
int rules_key_add(ledger_t *self, MDB_txn *txn, decision_t *d, const Coalition__KeyAddRequest *r);
int rules_key_revoke(ledger_t *self, MDB_txn *txn, decision_t *d,
                     const Coalition__KeyRevokeRequest *r);
int rules_partner_limits(ledger_t *self, MDB_txn *txn, decision_t *d,
                         const Coalition__PartnerLimitsRequest *r);
/* settle_rules.c: the operator's settlement requests. */
int rules_contract_set(ledger_t *self, MDB_txn *txn, decision_t *d,
                       const Coalition__ContractSetRequest *r);
int rules_partner_topup(ledger_t *self, MDB_txn *txn, decision_t *d,
                        const Coalition__PartnerTopupRequest *r);
int rules_settlement_config(ledger_t *self, MDB_txn *txn, decision_t *d,
                            const Coalition__SettlementConfigRequest *r);
int rules_window_close(ledger_t *self, MDB_txn *txn, decision_t *d,
                       const Coalition__WindowCloseRequest *r);
/* settle_rules.c: issuer-pays needs every partner in one currency. */
int settle_one_currency(ledger_t *self, MDB_txn *txn, const char *extra, bool *one_out);
int settle_issuer_pays_anywhere(ledger_t *self, MDB_txn *txn, bool *out);
/* settle.c: state, windows and contracts in `txn`; get_* return CL_ERR_NOT_FOUND when
 * absent (the state: its defaults instead). */
int settle_get_state(ledger_t *self, MDB_txn *txn, Coalition__SettlementState **out);
int settle_get_window(ledger_t *self, MDB_txn *txn, uint64_t id, Coalition__WindowRecord **out);
int settle_put_window(ledger_t *self, MDB_txn *txn, const Coalition__WindowRecord *w);
int settle_get_prepaid(ledger_t *self, MDB_txn *txn, const char *partner, int64_t *out);
int settle_contract_exact(ledger_t *self, MDB_txn *txn, const char *partner, int64_t from_ms,
                          Coalition__Contract **out);
int settle_contract_at(ledger_t *self, MDB_txn *txn, const char *partner, int64_t at_ms,
                       Coalition__Contract **out);
int settle_put_contract(ledger_t *self, MDB_txn *txn, const char *partner,
                        const Coalition__Contract *c);
/* At batch begin: the open window. Before each request: open the next window when the
 * open one's period is over (or the first one). end_early: an early close. */
int settle_batch_load(ledger_t *self, MDB_txn *txn);
/* The batch's copy of the points outstanding by issuer; settle_batch_flush writes it into
 * the batch before it commits. */
int settle_outstanding(ledger_t *self, MDB_txn *txn, outstanding_t **out);
int settle_batch_flush(ledger_t *self);
int settle_roll(ledger_t *self, MDB_txn *txn, int64_t now_ms);
int settle_end_early(ledger_t *self, MDB_txn *txn, int64_t now_ms);
/* Pricing into d->settle (earn: 61 past the prepaid block or the net cap). */
int settle_price_earn(ledger_t *self, MDB_txn *txn, const char *partner,
                      const Coalition__Contract *c, int64_t points, decision_t *d);
int settle_price_burn(ledger_t *self, MDB_txn *txn, const char *partner,
                      const Coalition__Contract *c, int64_t points, decision_t *d);
/* CL_ERR_CORRUPT when a burn original's issuer shares do not add up. */
int settle_price_reversal(const char *partner, const Coalition__Contract *c,
                          const journal_entry_t *original, bool via_issuers,
                          int64_t reversed_before, int64_t points, decision_t *d);
/* The model of window `id` (a burn's, for its reversals). */
int settle_window_model(ledger_t *self, MDB_txn *txn, uint64_t id, int *model_out);
/* A stored counters record into a row (scalars and pairs); NULL: all zero. */
int settle_counters_row(const Coalition__WindowCounters *r, settle_partner_row_t *row);
/* The approved decision onto the open window's counters and the prepaid block.
 * CL_ERR_OVERFLOW: a counter would leave int64 (the request is declined 61). */
int settle_project(ledger_t *self, MDB_txn *txn, const decision_t *d);
/* A stored counters record (NULL: none, all zero). */
void settle_counters_read(const Coalition__WindowCounters *r, settle_counters_t *c);
/* The counters an entry of `kind` moves (verify uses the same arithmetic on its own
 * recomputation). False on overflow or a kind that moves none. */
bool settle_counters_apply(settle_counters_t *c, int kind, int64_t points, int64_t money,
                           int64_t fee, bool via_issuers);
/* cards.c: banks, cards and unclaimed points (see the CardRecord diagram, ledger.proto). */
int cards_is_bank(ledger_t *self, MDB_txn *txn, const char *id, bool *out);
/* An earn or burn by card: the member it is for into d->member_id, or a decline (a burn
 * by a card not linked: 14; an earn by a card never enrolled opens its unclaimed
 * account). Nothing is looked up for a request by member id. */
int cards_resolve(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_bank_add(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_card_enroll(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_unclaimed_lapse(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_card_settings(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
/* The claim period in force in `txn` (ms). */
int cards_unclaimed_period_ms(ledger_t *self, MDB_txn *txn, int64_t *ms_out);
#define CARD_SETTINGS_KEY "card_settings" /* in the meta database */
/* A balance by card (a bank: only of a card it enrolled, else 57). */
int cards_inquire(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
/* Unclaimed accounts whose claim period ended at or before now_ms, oldest first. */
int cards_due_lapses(ledger_t *self, MDB_txn *txn, int64_t now_ms,
                     char ids[][MEMBER_ID_LEN_MAX + 1], size_t max, size_t *count);
/* rules.c helpers cards.c shares. */
int rules_move_points(ledger_t *self, MDB_txn *txn, decision_t *d, const char *from, const char *to,
                      int64_t points);
int rules_new_member(ledger_t *self, MDB_txn *txn, const Coalition__MemberRecord *m);
/* access.c: who a key is, in `txn`. */
int access_lookup(ledger_t *self, MDB_txn *txn, const char *public_z85, ledger_principal_t *out);
/* access.c: 65 when the member already has `limit` burns in the velocity window before
 * now; on approval, record_burn adds this one (in the request's transaction). */
int access_velocity_check(ledger_t *self, MDB_txn *txn, const char *member_id, uint32_t limit,
                          decision_t *d);
int access_velocity_record(ledger_t *self, MDB_txn *txn, const char *member_id, decision_t *d);
/* rules_receipt.c: a decline in d->locale. English gets the formatted details; another
 * locale the code's reason from the catalogue (rules_decline_msg: a template's). */
__attribute__((format(printf, 3, 4))) void rules_decline(decision_t *d, int code, const char *fmt,
                                                         ...);
void rules_decline_msg(decision_t *d, int code, receipt_msg_t msg, const char *const *args,
                       size_t n_args);
void rules_decline_text(receipt_locale_t locale, int code, receipt_msg_t msg,
                        const char *const *args, size_t n_args, char *out, size_t size);
/* rules_receipt.c: d->text from the catalogue in d->locale. */
void rules_text(decision_t *d, receipt_msg_t msg, const char *const *args, size_t n_args);
/* rules_receipt.c: the receipt locale of `partner`'s contract in force at at_ms (en for the
 * operator and for a sender without a contract); CL_ERR_CORRUPT for a stored unknown code. */
int rules_locale_of(ledger_t *self, MDB_txn *txn, const char *partner, int64_t at_ms,
                    receipt_locale_t *out);
/* rules_receipt.c: numbers for d->locale. Points are grouped in every locale; figures are
 * grouped except in English, whose texts always printed them plain; money as
 * amount_format_minor in English, else grouped with the locale's decimal separator. */
void rules_points_text(const decision_t *d, int64_t points, char buf[AMOUNT_TEXT_BYTES]);
void rules_figure_text(const decision_t *d, int64_t value, char buf[AMOUNT_TEXT_BYTES]);
void rules_money_text(const decision_t *d, int64_t minor, int exponent,
                      char buf[AMOUNT_TEXT_BYTES]);
/* rules.c: a balance reply's text from d->balance, available and pending. */
void rules_balance_text(decision_t *d);
/* rules.c: answer a Balance request from a read transaction. */
int rules_inquire(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);

/* lots.c: a member's lots (see the diagram in lots.c). Open a holder (the member
 * record) for the request, change its lots, then close it (writes the record and the
 * expiry indexes) or discard it. Every change appends the lots it touched to d->lots. */
typedef struct lot_holder {
    char member[MEMBER_ID_LEN_MAX + 1];
    Coalition__LotSummary *rec; /* unpacked, or `fresh` when the member had none */
    Coalition__LotSummary fresh;
    bool removed;      /* a lot left: lots_close reads the first one left */
    int64_t min_added; /* the soonest expiry of the lots added (0: none) */
    /* earning.c's new values for the summary's qualifying ring, partners used and tier
     * (the record points here while it is written; lots_discard puts the unpacked ones
     * back before freeing it). */
    bool swapped;
    int64_t *orig_qual;
    size_t orig_n_qual;
    ProtobufCBinaryData orig_used;
    char *orig_tier;
    int64_t qual[QUAL_MONTHS];
    uint8_t used[PARTNERS_USED_BYTES];
    char tier[TIER_NAME_LEN_MAX + 1];
} lot_holder_t;
typedef struct lots_result {
    int64_t taken, available, pending;
    bool full; /* stopped at LOTS_PER_ENTRY_MAX lots */
} lots_result_t;
int lots_open(ledger_t *self, MDB_txn *txn, const char *member, lot_holder_t *h);
int lots_close(ledger_t *self, MDB_txn *txn, lot_holder_t *h, int64_t now_ms);
void lots_discard(lot_holder_t *h);
/* A new lot, or more points into an existing one (the same key and issuer). */
int lots_add(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const lot_t *lot, decision_t *d);
/* A burn: up to `want` points from available lots in burn order; sums what is
 * available and pending on the way. */
int lots_burn(ledger_t *self, MDB_txn *txn, lot_holder_t *h, int64_t want, decision_t *d,
              lots_result_t *out);
/* An earn's reversal: `want` points from `own` (the earn's lot, NULL: none) first, then
 * available lots in burn order, then pending ones. */
int lots_take_back(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const lot_t *own, int64_t want,
                   decision_t *d, lots_result_t *out);
/* A burn's reversal: its points [from, from + points) in the order it took them, each
 * into its own lot unless that expired since the burn, else into a new lot of this
 * entry with the original term. */
int lots_give_back(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const journal_entry_t *burn,
                   int64_t from, int64_t points, decision_t *d);
/* An expiry: the lots due as of as_of_ms (every lot when `inactive`). */
int lots_expire(ledger_t *self, MDB_txn *txn, lot_holder_t *h, int64_t as_of_ms, bool inactive,
                decision_t *d, lots_result_t *out);
/* Expired lots, for refunds of their earns (the expired database): an expiry notes the
 * lots it took (d->lots, of d->member_id); an earn's reversal takes back out of
 * breakage at most what of its own lot expired. */
#define EXPIRED_KEY_BYTES 12 /* u64be(seq) u32be(part) */
int lots_expired_note(ledger_t *self, MDB_txn *txn, const decision_t *d);
int lots_expired_take(ledger_t *self, MDB_txn *txn, const lot_t *own, int64_t want, int64_t *taken);
/* What is left in a lot (0: gone). */
int lots_remaining(ledger_t *self, MDB_txn *txn, const char *member, const lot_t *own,
                   int64_t *points);
/* All of `from`'s lots, unlisted: moved to member `to` (a claim) or removed (to NULL: a
 * lapse), with each issuer's points summed into by_issuer (holders of its own). */
int lots_move_all(ledger_t *self, MDB_txn *txn, const char *from, const char *to,
                  settle_pair_t *by_issuer, size_t *n_issuers, int64_t *total, int64_t now_ms);
/* d->settle.shares: the points of d->lots by issuer, sorted by id (an expiry's breakage). */
void lots_shares(decision_t *d);
/* A balance reply's available and pending parts (a reader transaction). */
int lots_split(ledger_t *self, MDB_txn *txn, const char *member, int64_t balance, int64_t now_ms,
               int64_t *available, int64_t *pending);
size_t lots_index_key(uint8_t key[LOT_INDEX_KEY_BYTES_MAX], int64_t t_ms, const char *member);
/* The member's first lot in burn order (*found false: it has none). */
int lots_first(ledger_t *self, MDB_txn *txn, const char *member, lot_t *out, bool *found);
/* Move the member's idle key up to its latest activity (written at once). */
int lots_idle_forward(ledger_t *self, MDB_txn *txn, lot_holder_t *h);
#define EXPIRY_POLICIES_MAX 64
/* expiry.c: the expiry policy in force at at_ms (none set: no expiry, both 0). */
int expiry_policy_at(ledger_t *self, MDB_txn *txn, int64_t at_ms, int64_t *term_s,
                     int64_t *inactivity_s);
#define EXPIRY_POLICIES_KEY "expiry_policies" /* in the meta database */
/* earning.c: tiers and earning rules (see the order and combination rule there). */
int64_t earning_month(int64_t ms); /* months since 1970-01, UTC */
/* An earn's bonuses and tier into d (base_points, tier, bonuses, bonus_total, tier_after)
 * and the member's record in `h` (qualifying points, tier, partners used); a threshold
 * rule's spend record. 61 past the points limit. */
int earning_plan(ledger_t *self, MDB_txn *txn, const char *partner, uint32_t ordinal,
                 lot_holder_t *h, int64_t amount_minor, int64_t base, decision_t *d);
/* An earn's reversal of its money from minor_before to minor_after: its base share
 * leaves the qualifying points; d->tier_after and the record's tier follow. */
int earning_reversal(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const journal_entry_t *earn,
                     int64_t minor_before, int64_t minor_after, decision_t *d);
int rules_tier_settings(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_rule_add(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_rule_end(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_expiry_policy(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
int rules_expire(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);

/* ledger.c: apply, in the open batch, an operator request the writer makes on its own
 * (window closes, lapses): `env` has its body set; the rest of its header is filled in
 * (operator, site SETTLE_BROKER_SITE_ID, `terminal`, `txn_id`). The reply's text goes to
 * `text` (may be NULL) and its code to *code_out. */
int ledger_apply_own(ledger_t *self, envelope_t *env, const char *terminal, const char *txn_id,
                     int64_t now_ms, int *code_out, char *text, size_t text_size,
                     int64_t *points_out);
/* ledger.c record helpers. get_* return CL_ERR_NOT_FOUND when absent. */
int ledger_get_record(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t key_len,
                      const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);
int ledger_put_record(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t key_len,
                      const ProtobufCMessage *msg);
int ledger_get_balance(ledger_t *self, MDB_txn *txn, const char *account, int64_t *out);
int ledger_put_balance(ledger_t *self, MDB_txn *txn, const char *account, int64_t balance);
int ledger_get_entry(ledger_t *self, MDB_txn *txn, uint64_t seq, journal_entry_t **out);
/* The key of (partner, site, txn) in idem and reversals; all three already validated. */
size_t ledger_txn_key(uint8_t key[TXN_KEY_BYTES_MAX], const char *partner, const char *site,
                      const char *txn_id);
int ledger_get_idem(ledger_t *self, MDB_txn *txn, const char *partner, const char *site,
                    const char *txn_id, Coalition__IdemRecord **out);
/* Run `fn` in the ledger's reusable read transaction (any thread, beside the writer). */
int ledger_with_reader(ledger_t *self, int (*fn)(ledger_t *, MDB_txn *, void *), void *ctx);
/* Walks inside a caller's transaction (the public foreach functions open their own). */
int ledger_walk_journal(ledger_t *self, MDB_txn *txn, uint64_t from_seq, ledger_entry_fn fn,
                        void *ctx);
int ledger_walk_accounts(ledger_t *self, MDB_txn *txn, ledger_account_fn fn, void *ctx);
/* A key of the accounts database that is a member's lot or lot summary (lots.c), not a
 * balance: it holds a NUL. */
bool ledger_lot_key(const MDB_val *k);
/* Sum of postings; the chain hash of an entry whose hash field is empty. */
bool ledger_entry_balances(const journal_entry_t *entry);
int ledger_entry_hash(const journal_entry_t *entry, const uint8_t prev[WIRE_HASH_BYTES],
                      uint8_t out[WIRE_HASH_BYTES]);

#endif
