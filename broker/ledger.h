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

#include "store.h"
#include "wire.h"

#include "ledger.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

#define LEDGER_SCHEMA_VERSION 2u
#define LEDGER_ENTRY_BYTES_MAX 4096
#define ACCOUNT_NAME_BYTES_MAX 96
/* Idempotency and reversal keys: "partner\0site\0txn". */
#define TXN_KEY_BYTES_MAX (PARTNER_ID_LEN_MAX + 1 + SITE_ID_LEN_MAX + 1 + TXN_ID_LEN_MAX)

typedef struct ledger ledger_t;
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
int ledger_batch_commit(ledger_t *self);
void ledger_batch_abort(ledger_t *self);
/* Grow the map after CL_ERR_MAP_FULL; only between batches. */
int ledger_grow(ledger_t *self);
uint64_t ledger_last_seq(const ledger_t *self);

/* Reader side, safe beside the writer: balance inquiry for a validated Balance request. */
int ledger_inquire(ledger_t *self, const envelope_t *env, const uint8_t hash[WIRE_HASH_BYTES],
                   uint8_t **reply_out, size_t *reply_len_out);

/* Reader side, in its own read transaction: the answer to a request whose key the ledger
 * already holds (the original reply marked replay, and reversed if undone since; or 94
 * for another request). The writer uses it when it has failed, so repeats still get
 * their true answer instead of 96. Returns CL_ERR_NOT_FOUND when the key is new (or a
 * tombstone awaits its original). */
int ledger_replay(ledger_t *self, const envelope_t *env, const uint8_t hash[WIRE_HASH_BYTES],
                  uint8_t **reply_out, size_t *reply_len_out);

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
const char *ledger_entry_kind_name(int kind);

#endif
