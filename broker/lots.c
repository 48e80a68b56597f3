/* A member's points as lots (see LotRecord in ledger.proto): what each kind of entry does
 * to them, and the two indexes expiry runs start from.
 *
 *   accounts   "member:ID"                          -> the balance (ledger.c)
 *              "member:ID" NUL                      -> LotSummary (the holder's record)
 *              "member:ID" NUL u64be(expiry) u64be(seq) u32be(part)
 *                                                   -> LotRecord, in burn order
 *              (beside the balance: an earn or burn writes the same B-tree leaf, not two
 *              more trees; balance listings skip keys with a NUL)
 *   lot_due    u64be(soonest finite lot expiry) member -> "": exact, one per member whose
 *              lots have any expiry (lots_close re-keys it when the soonest one changes)
 *   idle       u64be(t) member -> "": one per member with lots, t <= its latest activity
 *              (lazy: activity leaves it; an expiry run moves it forward when it finds
 *              the member active since)
 *
 * Every function works in the request's transaction on a holder opened by lots_open and
 * written back by lots_close (member record and indexes), and appends what it did to
 * the decision's lot list, which the journal entry records. */
#include "ledger_internal.h"

#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define PREFIX_LEN (sizeof MEMBER_PREFIX - 1)
#define LOT_KEY_TAIL 21 /* NUL expiry seq part */
_Static_assert(LOT_KEY_BYTES_MAX == PREFIX_LEN + MEMBER_ID_LEN_MAX + LOT_KEY_TAIL,
               "\"member:\" id NUL expiry seq part");
_Static_assert(LOT_INDEX_KEY_BYTES_MAX == 8 + MEMBER_ID_LEN_MAX, "time then member");

/* ---- keys --------------------------------------------------------------------------- */

/* "member:ID" NUL: the member's LotSummary. */
static size_t summary_key(uint8_t key[LOT_KEY_BYTES_MAX], const char *member)
{
    size_t n = strlen(member);
    assert(n > 0 && n <= MEMBER_ID_LEN_MAX);
    memcpy(key, MEMBER_PREFIX, PREFIX_LEN);
    memcpy(key + PREFIX_LEN, member, n);
    key[PREFIX_LEN + n] = 0;
    assert(PREFIX_LEN + n + 1 <= LOT_KEY_BYTES_MAX);
    return PREFIX_LEN + n + 1;
}

static size_t lot_key(uint8_t key[LOT_KEY_BYTES_MAX], const char *member, int64_t expiry_ms,
                      uint64_t seq, uint32_t part)
{
    assert(expiry_ms >= 0);
    size_t n = summary_key(key, member) - 1; /* the NUL after the account name */
    store_put_u64(key + n + 1, (uint64_t)expiry_ms);
    store_put_u64(key + n + 9, seq);
    for (int i = 0; i < 4; i++)
        key[n + 17 + i] = (uint8_t)(part >> (24 - 8 * i));
    assert(n + LOT_KEY_TAIL <= LOT_KEY_BYTES_MAX && key[n] == 0);
    return n + LOT_KEY_TAIL;
}

/* The lot a key names, the fields the record holds left to the caller. False when the
 * key is not one of `member`'s (or not a lot key at all). */
static bool lot_key_parse(const MDB_val *k, const char *member, lot_t *out)
{
    size_t m = strlen(member), n = PREFIX_LEN + m;
    const uint8_t *b = k->mv_data;
    if (k->mv_size != n + LOT_KEY_TAIL || memcmp(b, MEMBER_PREFIX, PREFIX_LEN) != 0 ||
        memcmp(b + PREFIX_LEN, member, m) != 0 || b[n] != 0)
        return false;
    uint64_t expiry = store_get_u64(b + n + 1);
    if (expiry > (uint64_t)LOT_NO_EXPIRY_MS)
        return false;
    out->expiry_ms = (int64_t)expiry;
    out->seq = store_get_u64(b + n + 9);
    out->part = (uint32_t)b[n + 17] << 24 | (uint32_t)b[n + 18] << 16 | (uint32_t)b[n + 19] << 8 |
                b[n + 20];
    return true;
}

size_t lots_index_key(uint8_t key[LOT_INDEX_KEY_BYTES_MAX], int64_t t_ms, const char *member)
{
    size_t n = strlen(member);
    assert(n > 0 && n <= MEMBER_ID_LEN_MAX && t_ms >= 0);
    store_put_u64(key, (uint64_t)t_ms);
    memcpy(key + 8, member, n);
    assert(n + 8 <= LOT_INDEX_KEY_BYTES_MAX);
    return n + 8;
}

/* ---- the holder --------------------------------------------------------------------- */

int lots_open(ledger_t *self, MDB_txn *txn, const char *member, lot_holder_t *h)
{
    memset(h, 0, sizeof *h);
    snprintf(h->member, sizeof h->member, "%s", member);
    uint8_t key[LOT_KEY_BYTES_MAX];
    size_t len = summary_key(key, member);
    Coalition__LotSummary *s = NULL;
    int rc = ledger_get_record(txn, self->db_accounts, key, len,
                               &coalition__lot_summary__descriptor, (ProtobufCMessage **)&s);
    if (rc == CL_ERR_NOT_FOUND) { /* no lots yet: an empty summary of the holder's own */
        coalition__lot_summary__init(&h->fresh);
        h->rec = &h->fresh;
        assert(h->rec->idle_ms == 0 && h->rec->lot_due_ms == 0 && !h->swapped);
        return CL_OK;
    }
    h->rec = s;
    if (rc == CL_OK && (s->lot_due_ms < 0 || s->idle_ms < 0 || s->pending_until_ms < 0 ||
                        s->last_activity_ms < 0)) {
        lots_discard(h); /* read from disk: corrupt, and the caller gets no holder */
        rc = CL_ERR_CORRUPT;
    }
    return rc;
}

void lots_discard(lot_holder_t *h)
{
    if (h->rec != NULL && h->swapped) { /* the unpacked fields back before they are freed */
        h->rec->qual_points = h->orig_qual;
        h->rec->n_qual_points = h->orig_n_qual;
        h->rec->partners_used = h->orig_used;
        h->rec->tier = h->orig_tier;
        h->swapped = false;
    }
    if (h->rec != &h->fresh)
        coalition__lot_summary__free_unpacked(h->rec, NULL);
    h->rec = NULL;
}

/* The member's first lot in burn order: *found false when it has none. */
int lots_first(ledger_t *self, MDB_txn *txn, const char *member, lot_t *out, bool *found)
{
    uint8_t key[LOT_KEY_BYTES_MAX];
    size_t len = lot_key(key, member, 0, 0, 0);
    MDB_val k = {len, key}, v;
    MDB_cursor *cur = NULL;
    *found = false;
    int rc = mdb_cursor_open(txn, self->db_accounts, &cur);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        return CL_OK;
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    *found = lot_key_parse(&k, member, out);
    return CL_OK;
}

static int index_move(MDB_txn *txn, MDB_dbi dbi, const char *member, int64_t *at_ms, int64_t to_ms)
{
    uint8_t key[LOT_INDEX_KEY_BYTES_MAX];
    if (*at_ms == to_ms)
        return CL_OK;
    if (*at_ms != 0) {
        MDB_val k = {lots_index_key(key, *at_ms, member), key};
        int rc = mdb_del(txn, dbi, &k, NULL);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
            return store_err(rc);
        if (rc == MDB_NOTFOUND)
            return CL_ERR_CORRUPT; /* the member record names its index key */
    }
    *at_ms = to_ms;
    if (to_ms == 0)
        return CL_OK;
    MDB_val k = {lots_index_key(key, to_ms, member), key}, v = {0, ""};
    return store_err(mdb_put(txn, dbi, &k, &v, 0));
}

static int summary_put(ledger_t *self, MDB_txn *txn, lot_holder_t *h)
{
    uint8_t key[LOT_KEY_BYTES_MAX];
    return ledger_put_record(txn, self->db_accounts, key, summary_key(key, h->member),
                             &h->rec->base);
}

/* Whether the member has lots and its soonest finite expiry (0: none), after the
 * request: with lots only added, from the summary and what was added; else read. */
static int lots_after(ledger_t *self, MDB_txn *txn, const lot_holder_t *h, bool *any, int64_t *due)
{
    if (!h->removed) {
        int64_t d = h->rec->lot_due_ms;
        if (h->min_added != 0 && h->min_added != LOT_NO_EXPIRY_MS && (d == 0 || h->min_added < d))
            d = h->min_added;
        *any = h->rec->idle_ms != 0 || h->min_added != 0; /* idle is kept iff it has lots */
        *due = d;
        return CL_OK;
    }
    lot_t first;
    int rc = lots_first(self, txn, h->member, &first, any);
    *due = *any && first.expiry_ms != LOT_NO_EXPIRY_MS ? first.expiry_ms : 0;
    return rc;
}

int lots_close(ledger_t *self, MDB_txn *txn, lot_holder_t *h, int64_t now_ms)
{
    assert(h->rec != NULL);
    bool any = false;
    int64_t due = 0;
    int rc = lots_after(self, txn, h, &any, &due);
    if (rc == CL_OK && due != 0 && !any)
        rc = CL_ERR_CORRUPT; /* read from disk: a due time only for a member with lots */
    Coalition__LotSummary *m = h->rec;
    if (rc == CL_OK)
        rc = index_move(txn, self->db_lot_due, h->member, &m->lot_due_ms, due);
    /* idle: kept while the member has lots, never later than its latest activity. */
    int64_t idle = m->idle_ms;
    if (!any)
        idle = 0;
    else if (idle == 0)
        idle = m->last_activity_ms > 0 ? m->last_activity_ms : (now_ms > 0 ? now_ms : 1);
    if (rc == CL_OK)
        rc = index_move(txn, self->db_idle, h->member, &m->idle_ms, idle);
    if (rc == CL_OK)
        rc = summary_put(self, txn, h);
    assert(rc != CL_OK || (m->idle_ms == 0) == !any);
    lots_discard(h);
    return rc;
}

int lots_idle_forward(ledger_t *self, MDB_txn *txn, lot_holder_t *h)
{
    Coalition__LotSummary *m = h->rec;
    if (m->idle_ms == 0 || m->last_activity_ms <= m->idle_ms)
        return CL_OK;
    int rc = index_move(txn, self->db_idle, h->member, &m->idle_ms, m->last_activity_ms);
    return rc == CL_OK ? summary_put(self, txn, h) : rc;
}

/* ---- records ------------------------------------------------------------------------ */

static int lot_get(ledger_t *self, MDB_txn *txn, const char *member, lot_t *lot, bool *found)
{
    uint8_t key[LOT_KEY_BYTES_MAX];
    size_t len = lot_key(key, member, lot->expiry_ms, lot->seq, lot->part);
    Coalition__LotRecord *r = NULL;
    int rc = ledger_get_record(txn, self->db_accounts, key, len, &coalition__lot_record__descriptor,
                               (ProtobufCMessage **)&r);
    *found = rc == CL_OK;
    if (rc == CL_ERR_NOT_FOUND)
        return CL_OK;
    if (rc != CL_OK)
        return rc;
    lot->points = r->points;
    lot->earn_ms = r->earn_ms;
    lot->pending_until_ms = r->pending_until_ms;
    lot->origin_seq = r->origin_seq;
    lot->origin_part = r->origin_part;
    snprintf(lot->issuer, sizeof lot->issuer, "%s", r->issuer);
    bool ok = r->points > 0 && r->points <= LOT_POINTS_MAX;
    coalition__lot_record__free_unpacked(r, NULL);
    return ok ? CL_OK : CL_ERR_CORRUPT;
}

static int lot_put(ledger_t *self, MDB_txn *txn, const char *member, const lot_t *lot)
{
    assert(lot->points > 0 && lot->points <= LOT_POINTS_MAX && lot->issuer[0] != '\0');
    uint8_t key[LOT_KEY_BYTES_MAX];
    size_t len = lot_key(key, member, lot->expiry_ms, lot->seq, lot->part);
    Coalition__LotRecord r = COALITION__LOT_RECORD__INIT;
    r.points = lot->points;
    r.earn_ms = lot->earn_ms;
    r.issuer = (char *)lot->issuer;
    r.pending_until_ms = lot->pending_until_ms;
    r.origin_seq = lot->origin_seq;
    r.origin_part = lot->origin_part;
    return ledger_put_record(txn, self->db_accounts, key, len, &r.base);
}

static int lot_del(ledger_t *self, MDB_txn *txn, const char *member, const lot_t *lot)
{
    uint8_t key[LOT_KEY_BYTES_MAX];
    MDB_val k = {lot_key(key, member, lot->expiry_ms, lot->seq, lot->part), key};
    return store_err(mdb_del(txn, self->db_accounts, &k, NULL));
}

/* Record `lot` (with `points`) in the decision's lot list: 61 when it is full. */
static bool note_lot(decision_t *d, const lot_t *lot, int64_t points)
{
    assert(points >= 0 && points <= lot->points);
    if (d->n_lots == LOTS_PER_ENTRY_MAX)
        return false;
    d->lots[d->n_lots] = *lot;
    d->lots[d->n_lots].points = points;
    d->n_lots++;
    return true;
}

static void note_added(lot_holder_t *h, const lot_t *lot)
{
    if (h->min_added == 0 || lot->expiry_ms < h->min_added)
        h->min_added = lot->expiry_ms;
    if (lot->pending_until_ms > h->rec->pending_until_ms)
        h->rec->pending_until_ms = lot->pending_until_ms;
}

int lots_add(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const lot_t *lot, decision_t *d)
{
    assert(lot->points > 0 && lot->expiry_ms > 0);
    lot_t stored = *lot;
    bool found = false;
    /* A lot of this entry's own seq is new: no need to look for it. */
    int rc = lot->seq == self->batch_seq + 1 && lot->part == 0
                 ? CL_OK
                 : lot_get(self, txn, h->member, &stored, &found);
    if (rc != CL_OK)
        return rc;
    if (found && (strcmp(stored.issuer, lot->issuer) != 0))
        return CL_ERR_CORRUPT; /* a lot is given back only to its own key */
    int64_t points = found ? stored.points : 0;
    if (__builtin_add_overflow(points, lot->points, &points) || points > LOT_POINTS_MAX)
        return CL_ERR_OVERFLOW;
    stored = *lot;
    stored.points = points;
    assert(stored.points >= lot->points); /* only ever more points into a lot */
    note_added(h, lot);
    if (!note_lot(d, lot, lot->points))
        return CL_ERR_OVERFLOW;
    return lot_put(self, txn, h->member, &stored);
}

/* ---- walking a member's lots -------------------------------------------------------- */

/* What a walk takes from each lot it visits: its visitor says how many points (0: skip
 * it; all of it deletes it) and whether to stop. */
typedef struct walk {
    lot_holder_t *h;
    decision_t *d;
    int64_t (*take)(struct walk *w, const lot_t *lot, bool *stop);
    int64_t want, taken, now_ms, as_of_ms;
    int pass;                   /* take_any: 0 available lots, 1 pending ones */
    bool all;                   /* take_expired: every lot (the member is inactive) */
    int64_t available, pending; /* seen on the way */
    bool full;                  /* the entry's lot list is full */
    bool skip_first;            /* a lot taken before the walk (a refund's own lot) */
    lot_t first;
} walk_t;

static int walk_one(walk_t *w, MDB_cursor *cur, const MDB_val *k, const MDB_val *v, lot_t *lot,
                    bool *stop)
{
    Coalition__LotRecord *r = coalition__lot_record__unpack(NULL, v->mv_size, v->mv_data);
    if (r == NULL)
        return CL_ERR_CORRUPT;
    lot->points = r->points;
    lot->earn_ms = r->earn_ms;
    lot->pending_until_ms = r->pending_until_ms;
    lot->origin_seq = r->origin_seq;
    lot->origin_part = r->origin_part;
    snprintf(lot->issuer, sizeof lot->issuer, "%s", r->issuer);
    coalition__lot_record__free_unpacked(r, NULL);
    if (lot->points <= 0 || lot->points > LOT_POINTS_MAX)
        return CL_ERR_CORRUPT;
    if (w->skip_first && lot->seq == w->first.seq && lot->part == w->first.part &&
        lot->expiry_ms == w->first.expiry_ms)
        return CL_OK;
    int64_t take = w->take(w, lot, stop);
    assert(take >= 0 && take <= lot->points);
    if (take == 0)
        return CL_OK;
    if (!note_lot(w->d, lot, take)) {
        w->full = *stop = true;
        return CL_OK;
    }
    w->taken += take;
    if (take == lot->points) {
        w->h->removed = true;
        return store_err(mdb_cursor_del(cur, 0));
    }
    Coalition__LotRecord rec = COALITION__LOT_RECORD__INIT;
    rec.points = lot->points - take;
    rec.earn_ms = lot->earn_ms;
    rec.issuer = lot->issuer;
    rec.pending_until_ms = lot->pending_until_ms;
    rec.origin_seq = lot->origin_seq;
    rec.origin_part = lot->origin_part;
    uint8_t buf[LOT_RECORD_BYTES_MAX];
    size_t len = coalition__lot_record__get_packed_size(&rec);
    assert(len <= sizeof buf);
    coalition__lot_record__pack(&rec, buf);
    MDB_val nv = {len, buf};
    /* The key is copied out of the page first: the put may rewrite the page it is in. */
    uint8_t key[LOT_KEY_BYTES_MAX];
    assert(k->mv_size <= sizeof key);
    memcpy(key, k->mv_data, k->mv_size);
    MDB_val kc = {k->mv_size, key};
    return store_err(mdb_cursor_put(cur, &kc, &nv, MDB_CURRENT));
}

static int walk(ledger_t *self, MDB_txn *txn, walk_t *w)
{
    uint8_t key[LOT_KEY_BYTES_MAX];
    MDB_val k = {lot_key(key, w->h->member, 0, 0, 0), key}, v;
    MDB_cursor *cur = NULL;
    int rc = store_err(mdb_cursor_open(txn, self->db_accounts, &cur));
    if (rc != CL_OK)
        return rc;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    bool stop = false;
    while (mrc == MDB_SUCCESS && rc == CL_OK && !stop) {
        lot_t lot;
        memset(&lot, 0, sizeof lot);
        if (!lot_key_parse(&k, w->h->member, &lot))
            break; /* past the member's lots */
        rc = walk_one(w, cur, &k, &v, &lot, &stop);
        if (rc == CL_OK && !stop)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == CL_OK && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
        rc = store_err(mrc);
    assert(rc != CL_OK || w->taken <= w->want);
    return rc;
}

/* ---- burns -------------------------------------------------------------------------- */

static int64_t take_available(walk_t *w, const lot_t *lot, bool *stop)
{
    if (lot->pending_until_ms > w->now_ms) {
        w->pending += lot->points;
        return 0;
    }
    w->available += lot->points;
    int64_t take = w->want - w->taken;
    if (take > lot->points)
        take = lot->points;
    assert(take >= 0 && take <= lot->points);
    (void)stop; /* walks on: the reply shows what is available and pending */
    return take;
}

int lots_burn(ledger_t *self, MDB_txn *txn, lot_holder_t *h, int64_t want, decision_t *d,
              lots_result_t *out)
{
    assert(want > 0 && want <= POINTS_MAX && d->n_lots == 0);
    walk_t w = {.h = h, .d = d, .take = take_available, .want = want, .now_ms = d->now_ms};
    int rc = walk(self, txn, &w);
    out->taken = w.taken;
    out->available = w.available;
    out->pending = w.pending;
    out->full = w.full;
    assert(rc != CL_OK || (out->taken >= 0 && out->taken <= want));
    return rc;
}

/* ---- reversals of an earn: its own lot first, then available lots, then pending --- */

static int64_t take_any(walk_t *w, const lot_t *lot, bool *stop)
{
    bool pending = lot->pending_until_ms > w->now_ms;
    if (pending != (w->pass == 1))
        return 0;
    int64_t take = w->want - w->taken;
    if (take > lot->points)
        take = lot->points;
    *stop = w->taken + take == w->want;
    return take;
}

int lots_take_back(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const lot_t *own, int64_t want,
                   decision_t *d, lots_result_t *out)
{
    assert(want > 0 && want <= POINTS_MAX);
    walk_t w = {.h = h, .d = d, .take = take_any, .want = want, .now_ms = d->now_ms};
    memset(out, 0, sizeof *out);
    int rc = CL_OK;
    if (own != NULL) { /* the earn's own lot, if it is still there */
        lot_t lot = *own;
        bool found = false;
        rc = lot_get(self, txn, h->member, &lot, &found);
        if (rc == CL_OK && found) {
            int64_t take = lot.points < want ? lot.points : want;
            if (!note_lot(d, &lot, take))
                return CL_ERR_OVERFLOW;
            w.taken = take;
            lot.points -= take;
            h->removed = h->removed || lot.points == 0;
            rc = lot.points == 0 ? lot_del(self, txn, h->member, &lot)
                                 : lot_put(self, txn, h->member, &lot);
            w.skip_first = true;
            w.first = lot;
        }
    }
    for (int pass = 0; pass < 2 && rc == CL_OK && w.taken < want && !w.full; pass++) {
        w.pass = pass;
        rc = walk(self, txn, &w);
    }
    out->taken = w.taken;
    out->full = w.full;
    assert(rc != CL_OK || (out->taken >= 0 && out->taken <= want));
    return rc;
}

/* ---- reversals of a burn: give its lots back ---------------------------------------- */

static size_t expired_key(uint8_t key[EXPIRED_KEY_BYTES], uint64_t seq, uint32_t part);

/* Whether an expiry took (some of) this lot and left a record of it. */
static int expired_has(ledger_t *self, MDB_txn *txn, uint64_t seq, uint32_t part, bool *out)
{
    uint8_t key[EXPIRED_KEY_BYTES];
    MDB_val k = {expired_key(key, seq, part), key}, v;
    int rc = mdb_get(txn, self->db_expired, &k, &v);
    *out = rc == MDB_SUCCESS;
    return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? CL_OK : store_err(rc);
}

int lots_give_back(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const journal_entry_t *burn,
                   int64_t from, int64_t points, decision_t *d)
{
    assert(from >= 0 && points > 0);
    int64_t pos = 0, left = points;
    uint32_t part = 0;
    /* A lot is given back into itself unless it expired since the burn. */
    bool inactive_since = h->rec->inactive_expired_ms >= burn->time_ms;
    for (size_t i = 0; i < burn->n_lots && left > 0; i++) {
        const Coalition__LotUse *u = burn->lots[i];
        if (u->points <= 0 || u->expiry_ms <= 0 || u->earn_ms < 0 ||
            (u->expiry_ms != LOT_NO_EXPIRY_MS && u->earn_ms >= u->expiry_ms) ||
            !wire_id_valid(u->issuer, PARTNER_ID_LEN_MAX))
            return CL_ERR_CORRUPT; /* read from disk */
        int64_t lo = pos > from ? pos : from, hi = pos + u->points;
        pos = hi;
        if (hi <= lo)
            continue;
        int64_t give = hi - lo < left ? hi - lo : left;
        lot_t lot = {.seq = u->seq,
                     .part = u->part,
                     .points = give,
                     .expiry_ms = u->expiry_ms,
                     .earn_ms = u->earn_ms,
                     .pending_until_ms = u->pending_until_ms,
                     .origin_seq = u->origin_seq,
                     .origin_part = u->origin_part};
        snprintf(lot.issuer, sizeof lot.issuer, "%s", u->issuer);
        bool broke = false; /* the lot went to breakage (part of it, at least) */
        int rc = u->origin_seq != 0 ? expired_has(self, txn, u->origin_seq, u->origin_part, &broke)
                                    : expired_has(self, txn, u->seq, u->part, &broke);
        if (rc != CL_OK)
            return rc;
        if (inactive_since || broke || u->expiry_ms <= d->now_ms) { /* a new lot, same rule */
            if (lot.origin_seq == 0) { /* it remembers the earn's lot it came from */
                lot.origin_seq = u->seq;
                lot.origin_part = u->part;
            }
            lot.seq = self->batch_seq + 1;
            lot.part = part++;
            lot.earn_ms = d->now_ms;
            lot.pending_until_ms = 0;
            if (u->expiry_ms != LOT_NO_EXPIRY_MS)
                lot.expiry_ms = d->now_ms + (u->expiry_ms - u->earn_ms);
        }
        rc = lots_add(self, txn, h, &lot, d);
        if (rc != CL_OK)
            return rc;
        left -= give;
        assert(left >= 0 && give > 0);
    }
    return left == 0 ? CL_OK : CL_ERR_CORRUPT; /* the burn's lots hold all its points */
}

/* ---- expiry ------------------------------------------------------------------------- */

static int64_t take_expired(walk_t *w, const lot_t *lot, bool *stop)
{
    if (w->all)
        return lot->points;
    if (lot->expiry_ms > w->as_of_ms) {
        *stop = true; /* in expiry order: none after it is due */
        return 0;
    }
    return lot->points;
}

int lots_expire(ledger_t *self, MDB_txn *txn, lot_holder_t *h, int64_t as_of_ms, bool inactive,
                decision_t *d, lots_result_t *out)
{
    walk_t w = {.h = h,
                .d = d,
                .take = take_expired,
                .want = INT64_MAX,
                .as_of_ms = as_of_ms,
                .all = inactive};
    int rc = walk(self, txn, &w);
    memset(out, 0, sizeof *out);
    out->taken = w.taken;
    out->full = w.full;
    assert(rc != CL_OK || out->taken >= 0);
    return rc;
}

static int by_issuer_add(settle_pair_t *by_issuer, size_t *n, const char *issuer, int64_t points)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(by_issuer[i].partner_id, issuer) == 0)
            return __builtin_add_overflow(by_issuer[i].points, points, &by_issuer[i].points)
                       ? CL_ERR_OVERFLOW
                       : CL_OK;
    }
    if (*n == SETTLE_PARTNERS_MAX)
        return CL_ERR_CORRUPT; /* lots are issued by partners, at most SETTLE_PARTNERS_MAX */
    settle_pair_t *p = &by_issuer[(*n)++];
    memset(p, 0, sizeof *p);
    snprintf(p->partner_id, sizeof p->partner_id, "%s", issuer);
    p->points = points;
    return CL_OK;
}

/* By partner id, as a journal entry lists issuer shares. */
static void sort_pairs(settle_pair_t *p, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        settle_pair_t x = p[i];
        size_t j = i;
        while (j > 0 && strcmp(p[j - 1].partner_id, x.partner_id) > 0) {
            p[j] = p[j - 1];
            j--;
        }
        p[j] = x;
    }
}

/* Up to LOTS_MOVED_PER_STEP of the member's lots, read in one cursor pass. */
static int read_step(ledger_t *self, MDB_txn *txn, const char *member, lot_t *lots, size_t *n)
{
    uint8_t key[LOT_KEY_BYTES_MAX];
    MDB_val k = {lot_key(key, member, 0, 0, 0), key}, v;
    MDB_cursor *cur = NULL;
    *n = 0;
    int rc = store_err(mdb_cursor_open(txn, self->db_accounts, &cur));
    if (rc != CL_OK)
        return rc;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == MDB_SUCCESS && rc == CL_OK && *n < LOTS_MOVED_PER_STEP) {
        lot_t *lot = &lots[*n];
        memset(lot, 0, sizeof *lot);
        if (!lot_key_parse(&k, member, lot))
            break;
        Coalition__LotRecord *r = coalition__lot_record__unpack(NULL, v.mv_size, v.mv_data);
        if (r == NULL || r->points <= 0 || r->points > LOT_POINTS_MAX ||
            !wire_id_valid(r->issuer, PARTNER_ID_LEN_MAX))
            rc = CL_ERR_CORRUPT;
        if (rc == CL_OK) {
            lot->points = r->points;
            lot->earn_ms = r->earn_ms;
            lot->pending_until_ms = r->pending_until_ms;
            lot->origin_seq = r->origin_seq;
            lot->origin_part = r->origin_part;
            lot->origin_seq = r->origin_seq;
            lot->origin_part = r->origin_part;
            snprintf(lot->issuer, sizeof lot->issuer, "%s", r->issuer);
            (*n)++;
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        coalition__lot_record__free_unpacked(r, NULL);
    }
    mdb_cursor_close(cur);
    if (rc == CL_OK && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
        rc = store_err(mrc);
    return rc;
}

static int take_all(ledger_t *self, MDB_txn *txn, lot_holder_t *from, lot_holder_t *to,
                    settle_pair_t *by_issuer, size_t *n_issuers, int64_t *total)
{
    lot_t lots[LOTS_MOVED_PER_STEP];
    size_t n = 0;
    int rc = CL_OK;
    *total = 0;
    do {
        rc = read_step(self, txn, from->member, lots, &n);
        for (size_t i = 0; i < n && rc == CL_OK; i++) {
            rc = by_issuer_add(by_issuer, n_issuers, lots[i].issuer, lots[i].points);
            if (rc == CL_OK && __builtin_add_overflow(*total, lots[i].points, total))
                rc = CL_ERR_OVERFLOW;
            from->removed = true;
            if (rc == CL_OK)
                rc = lot_del(self, txn, from->member, &lots[i]);
            if (rc == CL_OK && to != NULL) {
                note_added(to, &lots[i]);
                rc = lot_put(self, txn, to->member, &lots[i]);
            }
        }
    } while (rc == CL_OK && n == LOTS_MOVED_PER_STEP);
    assert(rc != CL_OK || *total >= 0);
    assert(*n_issuers <= SETTLE_PARTNERS_MAX);
    sort_pairs(by_issuer, *n_issuers);
    return rc;
}

int lots_move_all(ledger_t *self, MDB_txn *txn, const char *from, const char *to,
                  settle_pair_t *by_issuer, size_t *n_issuers, int64_t *total, int64_t now_ms)
{
    lot_holder_t hf, ht;
    bool to_open = false;
    int rc = lots_open(self, txn, from, &hf);
    if (rc != CL_OK)
        return rc;
    if (to != NULL) {
        rc = lots_open(self, txn, to, &ht);
        to_open = rc == CL_OK;
    }
    if (rc == CL_OK)
        rc = take_all(self, txn, &hf, to_open ? &ht : NULL, by_issuer, n_issuers, total);
    /* A claim is not the member's activity (the card's earns were the unclaimed
     * account's); a member with no earn or burn of its own counts from its idle key. */
    if (rc == CL_OK)
        rc = lots_close(self, txn, &hf, now_ms);
    else
        lots_discard(&hf);
    if (to_open && rc == CL_OK)
        rc = lots_close(self, txn, &ht, now_ms);
    else if (to_open)
        lots_discard(&ht);
    return rc;
}

void lots_shares(decision_t *d)
{
    d->settle.n_shares = 0;
    for (size_t i = 0; i < d->n_lots; i++) {
        int rc = by_issuer_add(d->settle.shares, &d->settle.n_shares, d->lots[i].issuer,
                               d->lots[i].points);
        assert(rc == CL_OK); /* lots of at most SETTLE_PARTNERS_MAX issuers, each in range */
        (void)rc;
    }
    sort_pairs(d->settle.shares, d->settle.n_shares);
}

/* ---- balance replies ---------------------------------------------------------------- */

int lots_split(ledger_t *self, MDB_txn *txn, const char *member, int64_t balance, int64_t now_ms,
               int64_t *available, int64_t *pending)
{
    Coalition__LotSummary *m = NULL;
    uint8_t key[LOT_KEY_BYTES_MAX];
    int rc = ledger_get_record(txn, self->db_accounts, key, summary_key(key, member),
                               &coalition__lot_summary__descriptor, (ProtobufCMessage **)&m);
    if (rc != CL_OK && rc != CL_ERR_NOT_FOUND)
        return rc;
    bool any_pending = m != NULL && m->pending_until_ms > now_ms; /* none: no lots ever */
    coalition__lot_summary__free_unpacked(m, NULL);
    *available = balance;
    *pending = 0;
    if (!any_pending)
        return CL_OK;
    lot_holder_t h = {0};
    snprintf(h.member, sizeof h.member, "%s", member);
    walk_t w = {.h = &h, .take = take_available, .want = 0, .now_ms = now_ms};
    decision_t *none = NULL; /* take_available takes nothing when nothing is wanted */
    w.d = none;
    rc = walk(self, txn, &w);
    if (rc == CL_OK && w.available + w.pending != balance)
        return CL_ERR_CORRUPT; /* a member's lots hold its balance */
    *available = w.available;
    *pending = w.pending;
    assert(rc != CL_OK || *available + *pending == balance);
    return rc;
}

/* ---- read side for coalitionctl ----------------------------------------------------- */

typedef struct member_call {
    const char *member;
    int64_t now_ms, balance, available, pending;
    ledger_lot_row_t *rows;
    size_t max, count;
} member_call_t;

static int member_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    member_call_t *c = ctx;
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, c->member);
    int rc = ledger_get_balance(self, txn, account, &c->balance);
    if (rc == CL_OK)
        rc = lots_split(self, txn, c->member, c->balance, c->now_ms, &c->available, &c->pending);
    if (rc != CL_OK || c->max == 0)
        return rc;
    lot_t lots[LOTS_MOVED_PER_STEP];
    size_t n = 0;
    rc = read_step(self, txn, c->member, lots, &n); /* the first ones in burn order */
    for (size_t i = 0; rc == CL_OK && i < n && c->count < c->max; i++) {
        ledger_lot_row_t *r = &c->rows[c->count++];
        r->seq = lots[i].seq;
        r->part = lots[i].part;
        r->points = lots[i].points;
        r->expiry_ms = lots[i].expiry_ms == LOT_NO_EXPIRY_MS ? 0 : lots[i].expiry_ms;
        r->earn_ms = lots[i].earn_ms;
        r->pending_until_ms = lots[i].pending_until_ms;
        snprintf(r->issuer, sizeof r->issuer, "%s", lots[i].issuer);
    }
    return rc;
}

int ledger_member_lots(ledger_t *self, const char *member_id, int64_t now_ms,
                       ledger_member_points_t *out, ledger_lot_row_t *rows, size_t max,
                       size_t *count_out)
{
    member_call_t c = {.member = member_id, .now_ms = now_ms, .rows = rows, .max = max};
    int rc = ledger_with_reader(self, member_in, &c);
    out->balance = c.balance;
    out->available = c.available;
    out->pending = c.pending;
    *count_out = c.count;
    return rc;
}

/* ---- expired lots (the expired database: u64be(seq) u32be(part) -> ExpiredLot) ------ */

static size_t expired_key(uint8_t key[EXPIRED_KEY_BYTES], uint64_t seq, uint32_t part)
{
    store_put_u64(key, seq);
    for (int i = 0; i < 4; i++)
        key[8 + i] = (uint8_t)(part >> (24 - 8 * i));
    assert(key[8] == (uint8_t)(part >> 24)); /* big-endian, as the lots' keys */
    return EXPIRED_KEY_BYTES;
}

/* Under the lot's origin (the earn's lot its points came from): added to what is there. */
int lots_expired_note(ledger_t *self, MDB_txn *txn, const decision_t *d)
{
    int rc = CL_OK;
    for (size_t i = 0; i < d->n_lots && rc == CL_OK; i++) {
        const lot_t *l = &d->lots[i];
        uint8_t key[EXPIRED_KEY_BYTES];
        size_t len = l->origin_seq != 0 ? expired_key(key, l->origin_seq, l->origin_part)
                                        : expired_key(key, l->seq, l->part);
        Coalition__ExpiredLot *have = NULL;
        rc = ledger_get_record(txn, self->db_expired, key, len, &coalition__expired_lot__descriptor,
                               (ProtobufCMessage **)&have);
        int64_t points = l->points;
        if (rc == CL_OK && (have->points <= 0 || have->points > POINTS_MAX))
            rc = CL_ERR_CORRUPT; /* read from disk */
        if (rc == CL_OK)
            points += have->points;
        coalition__expired_lot__free_unpacked(have, NULL);
        if (rc != CL_OK && rc != CL_ERR_NOT_FOUND)
            return rc;
        Coalition__ExpiredLot e = COALITION__EXPIRED_LOT__INIT;
        e.points = points;
        e.member_id = (char *)d->member_id;
        rc = ledger_put_record(txn, self->db_expired, key, len, &e.base);
    }
    return rc;
}

int lots_expired_take(ledger_t *self, MDB_txn *txn, const lot_t *own, int64_t want, int64_t *taken)
{
    uint8_t key[EXPIRED_KEY_BYTES];
    size_t len = expired_key(key, own->seq, own->part);
    Coalition__ExpiredLot *e = NULL;
    *taken = 0;
    int rc = ledger_get_record(txn, self->db_expired, key, len, &coalition__expired_lot__descriptor,
                               (ProtobufCMessage **)&e);
    if (rc == CL_ERR_NOT_FOUND)
        return CL_OK;
    if (rc == CL_OK && (e->points <= 0 || e->points > LOT_POINTS_MAX))
        rc = CL_ERR_CORRUPT; /* read from disk */
    if (rc == CL_OK) {
        *taken = e->points < want ? e->points : want;
        e->points -= *taken;
        if (e->points == 0) {
            MDB_val k = {len, key};
            rc = store_err(mdb_del(txn, self->db_expired, &k, NULL));
        } else {
            rc = ledger_put_record(txn, self->db_expired, key, len, &e->base);
        }
    }
    coalition__expired_lot__free_unpacked(e, NULL);
    assert(rc != CL_OK || (*taken >= 0 && *taken <= want));
    return rc;
}

int lots_remaining(ledger_t *self, MDB_txn *txn, const char *member, const lot_t *own,
                   int64_t *points)
{
    lot_t lot = *own;
    bool found = false;
    int rc = lot_get(self, txn, member, &lot, &found);
    *points = rc == CL_OK && found ? lot.points : 0;
    return rc;
}
