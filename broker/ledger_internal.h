/* Shared between ledger.c (storage, batching, chain), rules.c (what each request does)
 * and verify.c (the audit). Not for other modules. */
#ifndef COALITION_LEDGER_INTERNAL_H
#define COALITION_LEDGER_INTERNAL_H

#include "amount.h"
#include "ledger.h"

#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdatomic.h>

#define DECISION_POSTINGS_MAX 2
#define MEMBER_PREFIX "member:"
#define ACCOUNT_ISSUED_FMT "partner:%s:issued"
#define ACCOUNT_REDEEMED_FMT "partner:%s:redeemed"

struct ledger {
    MDB_env *env;
    store_mode_t mode;
    store_lock_t *lock; /* STORE_READ_WRITE: the directory's writer lock, until destroy */
    MDB_dbi db_meta, db_journal, db_idem, db_accounts, db_members, db_partners, db_reversals,
        db_keys;
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
};

/* What one request does. Strings point into the envelope or into the buffers here. */
typedef struct decision {
    int code;
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
    int64_t now_ms; /* the writer's clock for this request (velocity) */
    int64_t amount_minor;
    char currency[CURRENCY_CODE_BYTES];
    int64_t points;
    int64_t earn_rate_milli;
    int64_t balance; /* member balance after the request */
    size_t posting_count;
    Coalition__Posting postings[DECISION_POSTINGS_MAX];
    char accounts[DECISION_POSTINGS_MAX][ACCOUNT_NAME_BYTES_MAX];
} decision_t;

/* rules.c: decide and, on approval, write accounts/members/partners/reversals in txn. */
int rules_decide(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);
/* access.c: the operator's key and limit requests. */
int rules_key_add(ledger_t *self, MDB_txn *txn, decision_t *d, const Coalition__KeyAddRequest *r);
int rules_key_revoke(ledger_t *self, MDB_txn *txn, decision_t *d,
                     const Coalition__KeyRevokeRequest *r);
int rules_partner_limits(ledger_t *self, MDB_txn *txn, decision_t *d,
                         const Coalition__PartnerLimitsRequest *r);
/* access.c: who a key is, in `txn`. */
int access_lookup(ledger_t *self, MDB_txn *txn, const char *public_z85, ledger_principal_t *out);
/* access.c: 65 when the member already has `limit` burns in the velocity window before
 * now; on approval, record_burn adds this one (in the request's transaction). */
int access_velocity_check(ledger_t *self, MDB_txn *txn, const char *member_id, uint32_t limit,
                          decision_t *d);
int access_velocity_record(ledger_t *self, MDB_txn *txn, const char *member_id, decision_t *d);
__attribute__((format(printf, 3, 4))) void rules_decline(decision_t *d, int code, const char *fmt,
                                                         ...);
/* rules.c: answer a Balance request from a read transaction. */
int rules_inquire(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d);

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
/* Walks inside a caller's transaction (the public foreach functions open their own). */
int ledger_walk_journal(ledger_t *self, MDB_txn *txn, uint64_t from_seq, ledger_entry_fn fn,
                        void *ctx);
int ledger_walk_accounts(ledger_t *self, MDB_txn *txn, ledger_account_fn fn, void *ctx);
/* Sum of postings; the chain hash of an entry whose hash field is empty. */
bool ledger_entry_balances(const journal_entry_t *entry);
int ledger_entry_hash(const journal_entry_t *entry, const uint8_t prev[WIRE_HASH_BYTES],
                      uint8_t out[WIRE_HASH_BYTES]);

#endif
