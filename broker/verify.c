/* `coalitionctl verify`: re-derives everything the ledger promises from the journal and
 * reports the first violation: consecutive sequence numbers, the hash chain, balanced
 * entries, account balances equal to the sum of their postings, all accounts summing to
 * zero, no negative member, and a one-to-one match between approved idempotency
 * records and journal entries. Reads one snapshot; safe while the broker runs. */
#include "ledger_internal.h"

#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERIFY_POSTINGS_INITIAL 4096

typedef struct {
    char account[ACCOUNT_NAME_BYTES_MAX];
    int64_t sum;
} total_t;

/* Per-account sums of postings, kept as a sorted-and-merged array that grows. */
typedef struct {
    total_t *items;
    size_t count, capacity;
} totals_t;

typedef struct {
    ledger_t *ledger;
    MDB_txn *txn;
    char *why;
    size_t why_size;
    totals_t totals;
    uint64_t entries;
    uint8_t prev[WIRE_HASH_BYTES];
    size_t merged;       /* totals matched against accounts so far */
    int64_t grand_total; /* sum of all accounts */
    uint64_t approved_idem;
} verify_t;

__attribute__((format(printf, 2, 3))) static int violation(verify_t *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->why, v->why_size, fmt, ap);
    va_end(ap);
    return CL_ERR_CORRUPT;
}

static int total_cmp(const void *a, const void *b)
{
    return strcmp(((const total_t *)a)->account, ((const total_t *)b)->account);
}

/* Sort and merge equal accounts; overflow of a sum is itself a violation. */
static int totals_compact(verify_t *v)
{
    totals_t *t = &v->totals;
    if (t->count == 0)
        return CL_OK;
    qsort(t->items, t->count, sizeof t->items[0], total_cmp);
    size_t out = 0;
    for (size_t i = 1; i < t->count; i++) {
        if (strcmp(t->items[out].account, t->items[i].account) == 0) {
            if (__builtin_add_overflow(t->items[out].sum, t->items[i].sum, &t->items[out].sum))
                return violation(v, "postings to %s overflow", t->items[i].account);
        } else {
            t->items[++out] = t->items[i];
        }
    }
    t->count = out + 1;
    return CL_OK;
}

static int totals_add(verify_t *v, const char *account, int64_t delta)
{
    totals_t *t = &v->totals;
    if (t->count == t->capacity) {
        int rc = totals_compact(v);
        if (rc != CL_OK)
            return rc;
    }
    if (t->count == t->capacity || t->count * 2 > t->capacity) {
        size_t cap = t->capacity == 0 ? VERIFY_POSTINGS_INITIAL : t->capacity * 2;
        total_t *items = realloc(t->items, cap * sizeof *items);
        if (items == NULL)
            return CL_ERR_NOMEM;
        t->items = items;
        t->capacity = cap;
    }
    snprintf(t->items[t->count].account, ACCOUNT_NAME_BYTES_MAX, "%s", account);
    t->items[t->count].sum = delta;
    t->count++;
    return CL_OK;
}

static int check_entry_idem(verify_t *v, const journal_entry_t *e)
{
    Coalition__IdemRecord *idem = NULL;
    int rc = ledger_get_idem(v->ledger, v->txn, e->partner_id, e->site_id, e->txn_id, &idem);
    if (rc == CL_ERR_NOT_FOUND)
        return violation(v, "entry %llu (%s/%s) has no idempotency record",
                         (unsigned long long)e->seq, e->partner_id, e->txn_id);
    if (rc != CL_OK)
        return rc;
    bool same_hash =
        idem->request_hash.len == e->request_hash.len &&
        memcmp(idem->request_hash.data, e->request_hash.data, e->request_hash.len) == 0;
    uint64_t seq = idem->seq;
    coalition__idem_record__free_unpacked(idem, NULL);
    if (seq != e->seq || !same_hash)
        return violation(v, "idempotency record of %s/%s points at %llu, journal has it at %llu",
                         e->partner_id, e->txn_id, (unsigned long long)seq,
                         (unsigned long long)e->seq);
    return CL_OK;
}

static int check_entry(verify_t *v, const journal_entry_t *e)
{
    uint8_t hash[WIRE_HASH_BYTES];
    if (e->seq != v->entries + 1)
        return violation(v, "journal skips from %llu to %llu", (unsigned long long)v->entries,
                         (unsigned long long)e->seq);
    if (e->prev_hash.len != WIRE_HASH_BYTES || memcmp(e->prev_hash.data, v->prev, WIRE_HASH_BYTES))
        return violation(v, "entry %llu does not chain to its predecessor",
                         (unsigned long long)e->seq);
    int rc = ledger_entry_hash(e, v->prev, hash);
    if (rc != CL_OK)
        return rc;
    if (e->hash.len != WIRE_HASH_BYTES || memcmp(e->hash.data, hash, WIRE_HASH_BYTES) != 0)
        return violation(v, "entry %llu hash mismatch: its content was altered",
                         (unsigned long long)e->seq);
    if (!ledger_entry_balances(e))
        return violation(v, "entry %llu postings do not sum to zero", (unsigned long long)e->seq);
    for (size_t i = 0; i < e->n_postings && rc == CL_OK; i++)
        rc = totals_add(v, e->postings[i]->account, e->postings[i]->delta);
    if (rc == CL_OK)
        rc = check_entry_idem(v, e);
    memcpy(v->prev, hash, WIRE_HASH_BYTES);
    v->entries++;
    return rc;
}

static int visit_entry(const journal_entry_t *e, void *ctx) { return check_entry(ctx, e); }

/* Walk the journal in order. ledger_get_entry already checks seq and balance on read. */
static int check_journal(verify_t *v)
{
    int rc = ledger_walk_journal(v->ledger, v->txn, 1, visit_entry, v);
    if (rc == CL_ERR_CORRUPT && v->why[0] == '\0')
        rc = violation(v, "entry %llu is unreadable or does not balance",
                       (unsigned long long)v->entries + 1); /* entries so far are consecutive */
    return rc == CL_OK ? totals_compact(v) : rc;
}

/* Accounts arrive in key order, as do the sorted totals: merge the two. */
static int visit_account(const char *name, int64_t balance, void *ctx)
{
    verify_t *v = ctx;
    const totals_t *t = &v->totals;
    int64_t expected = 0;
    if (v->merged < t->count && strcmp(t->items[v->merged].account, name) < 0)
        return violation(v, "postings to %s, which has no account", t->items[v->merged].account);
    if (v->merged < t->count && strcmp(t->items[v->merged].account, name) == 0)
        expected = t->items[v->merged++].sum;
    if (balance != expected)
        return violation(v, "account %s holds %lld, its postings sum to %lld", name,
                         (long long)balance, (long long)expected);
    if (balance < 0 && strncmp(name, MEMBER_PREFIX, strlen(MEMBER_PREFIX)) == 0)
        return violation(v, "member account %s is negative (%lld)", name, (long long)balance);
    if (__builtin_add_overflow(v->grand_total, balance, &v->grand_total))
        return violation(v, "sum of all accounts overflows");
    return CL_OK;
}

/* Compare each account with the sum of its postings; the whole ledger must sum to zero. */
static int check_accounts(verify_t *v)
{
    int rc = ledger_walk_accounts(v->ledger, v->txn, visit_account, v);
    if (rc == CL_ERR_CORRUPT && v->why[0] == '\0')
        rc = violation(v, "malformed account record");
    if (rc == CL_OK && v->merged < v->totals.count)
        rc = violation(v, "postings to %s, which has no account",
                       v->totals.items[v->merged].account);
    if (rc == CL_OK && v->grand_total != 0)
        rc = violation(v, "accounts sum to %lld, not zero", (long long)v->grand_total);
    return rc;
}

static int visit_idem(const MDB_val *k, const MDB_val *val, void *ctx)
{
    (void)k;
    verify_t *v = ctx;
    Coalition__IdemRecord *idem = coalition__idem_record__unpack(NULL, val->mv_size, val->mv_data);
    if (idem == NULL)
        return violation(v, "unreadable idempotency record");
    uint64_t seq = idem->seq;
    coalition__idem_record__free_unpacked(idem, NULL);
    if (seq > v->entries)
        return violation(v, "idempotency record points past the journal end (%llu)",
                         (unsigned long long)seq);
    v->approved_idem += seq > 0;
    return CL_OK;
}

/* Every approved idempotency record must name the journal entry for its own key. */
static int check_idem(verify_t *v)
{
    int rc = store_walk(v->txn, v->ledger->db_idem, NULL, visit_idem, v);
    /* Each entry has its own record (check_entry_idem); equal counts make it one-to-one. */
    if (rc == CL_OK && v->approved_idem != v->entries)
        rc = violation(v, "%llu approved idempotency records for %llu journal entries",
                       (unsigned long long)v->approved_idem, (unsigned long long)v->entries);
    return rc;
}

int ledger_verify(ledger_t *self, char *why, size_t why_size)
{
    verify_t v;
    memset(&v, 0, sizeof v);
    v.ledger = self;
    v.why = why;
    v.why_size = why_size;
    why[0] = '\0';
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &v.txn));
    if (rc == CL_OK)
        rc = check_journal(&v);
    if (rc == CL_OK)
        rc = check_accounts(&v);
    if (rc == CL_OK)
        rc = check_idem(&v);
    if (rc == CL_OK)
        snprintf(why, why_size,
                 "%llu entries, %zu accounts with postings: chain, balances and idempotency hold",
                 (unsigned long long)v.entries, v.totals.count);
    else if (rc != CL_ERR_CORRUPT)
        snprintf(why, why_size, "cannot read the ledger: %s", cl_strerror(rc));
    if (v.txn != NULL)
        mdb_txn_abort(v.txn);
    free(v.totals.items);
    return rc;
}
