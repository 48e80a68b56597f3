/* `coalitionctl verify`: re-derives everything the ledger promises from the journal and
 * reports the first violation. Here: consecutive sequence numbers, the hash chain,
 * balanced entries, the idempotency records (one-to-one with journal entries, tombstones
 * one-to-one with reversal-ahead entries). verify_accounts.c: balances equal to their
 * postings, in 128 bits. verify_rederive.c: partners, members, each earn's points from
 * the contract in force. verify_reversals.c: refunds, voids, reversal records, tombstones.
 * Reads one snapshot; safe while the broker runs.
 *
 *   load partner records ─► walk the journal (chain, re-derive, post, own idem record)
 *     ─► accounts ─► idem records ─► reversal, member and partner records */
#include "verify_internal.h"

#include "errors.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DECIMAL_BASE 10

void verify_init(verify_t *v, ledger_t *ledger, MDB_txn *txn, char *why, size_t why_size)
{
    memset(v, 0, sizeof *v);
    v->ledger = ledger;
    v->txn = txn;
    v->why = why;
    v->why_size = why_size;
    why[0] = '\0';
    vmap_init(&v->accounts, sizeof(vaccount_t));
    vmap_init(&v->partners, sizeof(vpartner_t));
    vmap_init(&v->reversals, sizeof(vreversal_t));
    vmap_init(&v->contracts, sizeof(vcontract_t));
    vmap_init(&v->counters, sizeof(vcounters_t));
    vmap_init(&v->windows, sizeof(vwindow_t));
    vmap_init(&v->pairs, sizeof(vpair_t));
    verify_cards_init(v);
    (void)verify_lots_init(v); /* NULL on failure: verify_lots_entry says CL_ERR_NOMEM */
    (void)verify_earning_init(v);
}

void verify_free(verify_t *v)
{
    for (size_t i = 0; i < v->partners.count; i++)
        free(((vpartner_t *)vmap_at(&v->partners, i))->contracts);
    verify_cards_free(v);
    verify_lots_free(v);
    verify_earning_free(v);
    vmap_free(&v->accounts);
    vmap_free(&v->partners);
    vmap_free(&v->reversals);
    vmap_free(&v->contracts);
    vmap_free(&v->counters);
    vmap_free(&v->windows);
    vmap_free(&v->pairs);
    free(v->configs);
}

int verify_violation(verify_t *v, const char *fmt, ...)
{
    assert(v->why != NULL && v->why_size > 0);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->why, v->why_size, fmt, ap);
    va_end(ap);
    return CL_ERR_CORRUPT;
}

void i128_text(i128_t value, char buf[I128_TEXT_BYTES])
{
    char digits[I128_TEXT_BYTES];
    size_t n = 0;
    bool negative = value < 0;
    do { /* digit by digit on the value's own side of zero: -INT128_MIN does not exist */
        int digit = (int)(value % DECIMAL_BASE);
        digits[n++] = (char)('0' + (negative ? -digit : digit));
        value /= DECIMAL_BASE;
    } while (value != 0);
    size_t at = 0;
    if (negative)
        buf[at++] = '-';
    while (n > 0)
        buf[at++] = digits[--n];
    buf[at] = '\0';
}

void verify_key_text(const vkey_t *key, char *buf, size_t size)
{
    size_t n = key->len < size - 1 ? key->len : size - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = key->bytes[i] == '\0' ? '/' : key->bytes[i];
    buf[n] = '\0';
}

/* The entry's own key holds an approved record naming it, with the same request hash. */
static int check_entry_idem(verify_t *v, const journal_entry_t *e)
{
    Coalition__IdemRecord *idem = NULL;
    int rc = ledger_get_idem(v->ledger, v->txn, e->partner_id, e->site_id, e->txn_id, &idem);
    if (rc == CL_ERR_NOT_FOUND)
        return verify_violation(v, "entry %llu (%s/%s/%s) has no idempotency record",
                                (unsigned long long)e->seq, e->partner_id, e->site_id, e->txn_id);
    if (rc != CL_OK)
        return rc;
    bool same_hash =
        idem->request_hash.len == e->request_hash.len &&
        memcmp(idem->request_hash.data, e->request_hash.data, e->request_hash.len) == 0;
    uint64_t seq = idem->seq;
    bool tombstone = idem->tombstone;
    coalition__idem_record__free_unpacked(idem, NULL);
    if (tombstone)
        return verify_violation(v, "entry %llu (%s/%s/%s) was approved under a tombstoned key",
                                (unsigned long long)e->seq, e->partner_id, e->site_id, e->txn_id);
    if (seq != e->seq || !same_hash)
        return verify_violation(
            v, "idempotency record of %s/%s/%s points at %llu, journal has it at %llu",
            e->partner_id, e->site_id, e->txn_id, (unsigned long long)seq,
            (unsigned long long)e->seq);
    return CL_OK;
}

/* Sequence, chain link, own hash and balance; `hash` receives the recomputed hash. */
static int check_chain(verify_t *v, const journal_entry_t *e, uint8_t hash[WIRE_HASH_BYTES])
{
    if (e->seq != v->entries + 1)
        return verify_violation(v, "journal skips from %llu to %llu",
                                (unsigned long long)v->entries, (unsigned long long)e->seq);
    if (e->prev_hash.len != WIRE_HASH_BYTES || memcmp(e->prev_hash.data, v->prev, WIRE_HASH_BYTES))
        return verify_violation(v, "entry %llu does not chain to its predecessor",
                                (unsigned long long)e->seq);
    int rc = ledger_entry_hash(e, v->prev, hash);
    if (rc != CL_OK)
        return rc;
    if (e->hash.len != WIRE_HASH_BYTES || memcmp(e->hash.data, hash, WIRE_HASH_BYTES) != 0)
        return verify_violation(v, "entry %llu hash mismatch: its content was altered",
                                (unsigned long long)e->seq);
    if (!ledger_entry_balances(e))
        return verify_violation(v, "entry %llu postings do not sum to zero",
                                (unsigned long long)e->seq);
    return CL_OK;
}

static int check_entry(verify_t *v, const journal_entry_t *e)
{
    uint8_t hash[WIRE_HASH_BYTES];
    int rc = check_chain(v, e, hash);
    if (rc == CL_OK)
        rc = verify_rederive_entry(v, e);
    if (rc == CL_OK)
        rc = verify_settle_entry(v, e);
    if (rc == CL_OK)
        rc = verify_lots_entry(v, e);
    if (rc == CL_OK)
        rc = verify_earning_entry(v, e);
    if (rc == CL_OK)
        rc = vaccounts_post(v, e);
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
        rc = verify_violation(v, "entry %llu is unreadable or does not balance",
                              (unsigned long long)v->entries +
                                  1); /* entries so far are consecutive */
    return rc;
}

/* A late original's decline kept in a tombstone must be the 12 it was told. */
static int check_tombstone_reply(verify_t *v, const char *key, const Coalition__IdemRecord *idem)
{
    if (idem->request_hash.len == 0 && idem->reply.len == 0)
        return CL_OK;
    authorization_t *auth = wire_auth_decode(idem->reply.data, idem->reply.len);
    int code = auth != NULL ? (int)auth->code : -1;
    uint64_t seq = auth != NULL ? auth->seq : 0;
    wire_auth_free(auth);
    if (idem->request_hash.len != WIRE_HASH_BYTES || code != RC_INVALID_TRANSACTION || seq != 0)
        return verify_violation(v, "tombstone under %s holds a reply that is not a decline 12",
                                key);
    return CL_OK;
}

/* A tombstone names the reversal-ahead entry that left it, under this very key. */
static int check_tombstone(verify_t *v, const vkey_t *key, const Coalition__IdemRecord *idem)
{
    char text[VERIFY_KEY_BYTES_MAX];
    verify_key_text(key, text, sizeof text);
    if (idem->seq != 0)
        return verify_violation(v, "tombstoned key %s names approved entry %llu", text,
                                (unsigned long long)idem->seq);
    if (idem->tombstone_seq == 0 || idem->tombstone_seq > v->entries)
        return verify_violation(v, "tombstone under %s points at entry %llu, not in the journal",
                                text, (unsigned long long)idem->tombstone_seq);
    journal_entry_t *e = NULL;
    int rc = ledger_get_entry(v->ledger, v->txn, idem->tombstone_seq, &e);
    if (rc != CL_OK)
        return rc;
    vkey_t original;
    bool ahead = e->kind == COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD;
    bool same = ahead && verify_original_key(e, &original) && original.len == key->len &&
                memcmp(original.bytes, key->bytes, key->len) == 0;
    coalition__journal_entry__free_unpacked(e, NULL);
    if (!same)
        return verify_violation(v,
                                "tombstone under %s points at entry %llu, which is no "
                                "reversal ahead of that original",
                                text, (unsigned long long)idem->tombstone_seq);
    v->tombstones++;
    return check_tombstone_reply(v, text, idem);
}

static int check_idem_record(verify_t *v, const vkey_t *key, const Coalition__IdemRecord *idem)
{
    if (idem->tombstone)
        return check_tombstone(v, key, idem);
    if (idem->tombstone_seq != 0)
        return verify_violation(v, "idempotency record with a tombstone seq but no tombstone");
    if (idem->seq > v->entries)
        return verify_violation(v, "idempotency record points past the journal end (%llu)",
                                (unsigned long long)idem->seq);
    v->approved_idem += idem->seq > 0;
    return CL_OK;
}

static int visit_idem(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    if (k->mv_size >= VERIFY_KEY_BYTES_MAX)
        return verify_violation(v, "idempotency key of %zu bytes is too long", k->mv_size);
    vkey_t key;
    memcpy(key.bytes, k->mv_data, k->mv_size);
    key.bytes[k->mv_size] = '\0';
    key.len = k->mv_size;
    Coalition__IdemRecord *idem = coalition__idem_record__unpack(NULL, val->mv_size, val->mv_data);
    if (idem == NULL)
        return verify_violation(v, "unreadable idempotency record");
    int rc = check_idem_record(v, &key, idem);
    coalition__idem_record__free_unpacked(idem, NULL);
    return rc;
}

/* Each entry has its own record (check_entry_idem); equal counts make it one-to-one.
 * Each reversal-ahead entry has its tombstone (verify_rederive_entry), and each tombstone
 * names its entry (check_tombstone): one-to-one as well. */
static int check_idem(verify_t *v)
{
    int rc = store_walk(v->txn, v->ledger->db_idem, NULL, visit_idem, v);
    if (rc == CL_OK && v->approved_idem != v->entries)
        rc = verify_violation(v, "%llu approved idempotency records for %llu journal entries",
                              (unsigned long long)v->approved_idem, (unsigned long long)v->entries);
    if (rc == CL_OK && v->tombstones != v->reversals_ahead)
        rc = verify_violation(v, "%llu tombstones for %llu reversal-ahead entries",
                              (unsigned long long)v->tombstones,
                              (unsigned long long)v->reversals_ahead);
    return rc;
}

int ledger_verify(ledger_t *self, char *why, size_t why_size)
{
    MDB_txn *txn = NULL;
    verify_t v;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    verify_init(&v, self, txn, why, why_size);
    if (rc == CL_OK)
        rc = verify_load_partners(&v);
    if (rc == CL_OK) /* made with the ledger (ledger_init) */
        rc = vaccounts_open(&v, ACCOUNT_BREAKAGE, 0);
    if (rc == CL_OK)
        rc = check_journal(&v);
    if (rc == CL_OK)
        rc = verify_accounts(&v);
    if (rc == CL_OK)
        rc = check_idem(&v);
    if (rc == CL_OK)
        rc = verify_records(&v);
    if (rc == CL_OK)
        rc = verify_settle_records(&v);
    if (rc == CL_OK)
        rc = verify_lots_records(&v);
    if (rc == CL_OK)
        rc = verify_earning_records(&v);
    if (rc == CL_OK)
        snprintf(why, why_size,
                 "%llu entries, %zu accounts, %zu partners, %zu reversed originals, %llu "
                 "tombstones, %zu windows: chain, balances, idempotency, contracts, members, "
                 "reversals, settlement counters and lots hold",
                 (unsigned long long)v.entries, v.accounts.count, v.partners.count,
                 v.reversals.count, (unsigned long long)v.tombstones, v.windows.count);
    else if (rc != CL_ERR_CORRUPT)
        snprintf(why, why_size, "cannot read the ledger: %s", cl_strerror(rc));
    if (txn != NULL)
        mdb_txn_abort(txn);
    verify_free(&v);
    return rc;
}
