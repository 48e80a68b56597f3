/* The ledger's side of the journal feed: the commit hook, reads of stored entries as
 * stored (no unpacking, so the feed thread forwards bytes), and the checks a subscriber
 * runs on what it receives: the same as an entry read from disk, plus the hash chain. */
#include "errors.h"
#include "ledger_internal.h"

#include <assert.h>

void ledger_set_commit_hook(ledger_t *self, ledger_commit_fn fn, void *ctx)
{
    assert(self != NULL && self->batch == NULL);
    self->on_commit = fn;
    self->on_commit_ctx = ctx;
}

typedef struct raw_read {
    ledger_raw_entry_t *entries;
    size_t max, bytes_max, bytes, n;
    uint64_t next; /* the seq the next record must have */
} raw_read_t;

static int take_raw(const MDB_val *k, const MDB_val *v, void *ctx)
{
    raw_read_t *r = ctx;
    assert(r->n < r->max);
    if (k->mv_size != 8)
        return CL_ERR_CORRUPT;
    uint64_t seq = store_get_u64(k->mv_data);
    if (seq != r->next) /* the journal has no holes: this one is damaged */
        return CL_ERR_CORRUPT;
    if (r->n > 0 && r->bytes + v->mv_size > r->bytes_max)
        return STORE_WALK_STOP;
    r->entries[r->n] = (ledger_raw_entry_t){seq, v->mv_data, v->mv_size};
    r->n++;
    r->bytes += v->mv_size;
    r->next++;
    return r->n == r->max ? STORE_WALK_STOP : CL_OK;
}

int ledger_journal_raw(ledger_t *self, uint64_t from_seq, size_t max, size_t bytes_max,
                       ledger_raw_fn fn, void *ctx)
{
    assert(from_seq >= 1 && max >= 1 && max <= LEDGER_RAW_ENTRIES_MAX && fn != NULL);
    ledger_raw_entry_t entries[LEDGER_RAW_ENTRIES_MAX];
    raw_read_t r = {entries, max, bytes_max, 0, 0, from_seq};
    uint8_t key[8];
    store_put_u64(key, from_seq);
    MDB_val from = {sizeof key, key};
    MDB_txn *txn = NULL;
    /* Read-locked: the writer thread of this process must not remap meanwhile. */
    if (pthread_rwlock_rdlock(&self->map_lock) != 0)
        return CL_ERR_INVALID;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc == CL_OK)
        rc = store_walk(txn, self->db_journal, &from, take_raw, &r);
    assert(r.n <= max);
    if (rc == CL_OK)
        rc = fn(entries, r.n, ctx);
    if (txn != NULL)
        mdb_txn_abort(txn);
    pthread_rwlock_unlock(&self->map_lock);
    return rc;
}

int ledger_entry_decode(const uint8_t *data, size_t len, uint64_t seq,
                        const uint8_t prev[WIRE_HASH_BYTES], journal_entry_t **out)
{
    assert(out != NULL);
    *out = NULL;
    if (len > LEDGER_ENTRY_BYTES_MAX)
        return CL_ERR_CORRUPT;
    journal_entry_t *e = coalition__journal_entry__unpack(NULL, len, data);
    if (e == NULL)
        return CL_ERR_CORRUPT;
    uint8_t hash[WIRE_HASH_BYTES];
    bool ok = e->seq == seq && ledger_entry_balances(e) && e->hash.len == WIRE_HASH_BYTES &&
              e->prev_hash.len == WIRE_HASH_BYTES &&
              (prev == NULL || memcmp(e->prev_hash.data, prev, WIRE_HASH_BYTES) == 0) &&
              ledger_entry_hash(e, e->prev_hash.data, hash) == CL_OK &&
              memcmp(hash, e->hash.data, WIRE_HASH_BYTES) == 0;
    if (!ok) {
        coalition__journal_entry__free_unpacked(e, NULL);
        return CL_ERR_CORRUPT;
    }
    *out = e;
    return CL_OK;
}

void ledger_entry_free(journal_entry_t **entry_p)
{
    if (*entry_p != NULL)
        coalition__journal_entry__free_unpacked(*entry_p, NULL);
    *entry_p = NULL;
}
