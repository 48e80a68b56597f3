/* The agent's durable state in its own LMDB environment: the outbox (requests taken
 * from tills and not yet answered by the broker, in arrival order) and the local journal
 * (every authorization received, for receipts and reconciliation). Changes are applied
 * as one list of operations in one synced transaction; a full map is grown and the list
 * applied again (CL_ERR_MAP_FULL only once the map cannot grow). An index maps each txn
 * id to its latest journaled answer, so repeats of answered keys can be answered here. */
#ifndef COALITION_OUTBOX_H
#define COALITION_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct outbox outbox_t;

/* REVERSED remembers, for the life of the store, a burn txn_id the agent voided after its
 * till was told 91: a repeat of that txn_id must not be sent again. */
typedef enum {
    OUTBOX_OP_PUT,
    OUTBOX_OP_DELETE,
    OUTBOX_OP_JOURNAL,
    OUTBOX_OP_REVERSED
} outbox_op_kind_t;

typedef struct outbox_op {
    outbox_op_kind_t kind;
    uint64_t seq;            /* PUT/DELETE: outbox key; JOURNAL: journal key */
    const uint8_t *envelope; /* PUT, JOURNAL */
    size_t envelope_len;
    const uint8_t *auth; /* JOURNAL */
    size_t auth_len;
    int64_t time_ms;
    const char *txn_id; /* REVERSED; JOURNAL: indexes the answer under it (NULL: not) */
} outbox_op_t;

int outbox_open(outbox_t **self_out, const char *dir, int read_only);
void outbox_destroy(outbox_t **self_p);
/* Apply all ops in one transaction and fsync. */
int outbox_apply(outbox_t *self, const outbox_op_t *ops, size_t count);
/* The latest authorization journaled for `txn_id` (a malloc'd copy), or CL_ERR_NOT_FOUND. */
int outbox_answer_of(outbox_t *self, const char *txn_id, uint8_t **auth_out, size_t *len_out);
/* Whether `txn_id` is a burn this agent reversed (CL_OK, *reversed set) or an error. */
int outbox_was_reversed(outbox_t *self, const char *txn_id, bool *reversed);
/* Delete journal records and reversed marks written before `before_ms` (wall clock),
 * oldest first, at most `max_records` of each in one synced transaction; *pruned_out
 * tells how many journal records went. */
int outbox_prune(outbox_t *self, int64_t before_ms, size_t max_records, size_t *pruned_out);
/* Next free keys (one past the last stored), read at open. */
uint64_t outbox_next_seq(const outbox_t *self);
uint64_t outbox_journal_next_seq(const outbox_t *self);
/* Requests in the outbox (stored, not answered) and when the oldest was taken (wall
 * clock ms, 0 when none), as of the last write: kept up to date at no cost to readers. */
size_t outbox_count(const outbox_t *self);
int64_t outbox_oldest_ms(const outbox_t *self);

typedef int (*outbox_entry_fn)(uint64_t seq, const uint8_t *envelope, size_t len, void *ctx);
int outbox_foreach(outbox_t *self, outbox_entry_fn fn, void *ctx);
typedef int (*outbox_journal_fn)(uint64_t seq, int64_t time_ms, const uint8_t *envelope,
                                 size_t envelope_len, const uint8_t *auth, size_t auth_len,
                                 void *ctx);
int outbox_journal_foreach(outbox_t *self, outbox_journal_fn fn, void *ctx);
/* The journal newest first, until fn returns other than CL_OK (which is no error here);
 * records that do not unpack are skipped. CL_OK, or the store's error. */
int outbox_journal_newest_first(outbox_t *self, outbox_journal_fn fn, void *ctx);

#endif
