/* The audit of the points lifecycle. In the journal walk: each entry's lots (LotUse)
 * against what it moved (an earn's one lot with the term of the policy then in force and
 * its partner's return period; a burn's, a reversal's and an expiry's lots summing to
 * their points), expiry entries (each lot expires once: a set of (seq, part); each lot
 * due as of the run, or the member inactive under the policy then), and the policies.
 * After the walk: the lots database against the accounts (each member's lots sum to its
 * balance; every member with a balance has lots), and the expiry indexes against the
 * lots (lot_due exactly at each member's soonest finite expiry, idle present for each
 * member with lots), both ways by count.
 *
 * Memory: 16 bytes per expired lot (the set) and one item per policy. */
#include "verify_internal.h"

#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEQ(e) ((unsigned long long)(e)->seq)
#define EXPIRED_SET_MIN 1024

typedef struct vpolicy {
    int64_t from_ms, term_s, inactivity_s;
} vpolicy_t;

typedef struct vexpired {
    uint64_t key;   /* seq << 16 | part, + 1 (0: an empty slot) */
    int64_t points; /* what of it no refund took back out of breakage yet */
} vexpired_t;

typedef struct vxmap {
    vexpired_t *slots;
    size_t cap, count;
    uint64_t left; /* items with points left */
} vxmap_t;

struct vlots {
    vxmap_t expired; /* every lot an expiry took, by its own key (each only once) */
    vxmap_t broken;  /* what expiries took by the earn's lot it came from, less refunds */
    vpolicy_t policies[EXPIRY_POLICIES_MAX];
    size_t n_policies;
};

int verify_lots_init(verify_t *v)
{
    v->lots = calloc(1, sizeof *v->lots);
    return v->lots == NULL ? CL_ERR_NOMEM : CL_OK;
}

void verify_lots_free(verify_t *v)
{
    if (v->lots != NULL) {
        free(v->lots->expired.slots);
        free(v->lots->broken.slots);
    }
    free(v->lots);
    v->lots = NULL;
}

/* ---- expired lots --------------------------------------------------------------------- */

static size_t slot_of(uint64_t x, size_t cap)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    return (size_t)(x & (cap - 1));
}

static int set_grow(vxmap_t *l)
{
    size_t cap = l->cap == 0 ? EXPIRED_SET_MIN : l->cap * 2;
    vexpired_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return CL_ERR_NOMEM;
    for (size_t i = 0; i < l->cap; i++) {
        if (l->slots[i].key == 0)
            continue;
        size_t at = slot_of(l->slots[i].key, cap);
        while (slots[at].key != 0)
            at = (at + 1) & (cap - 1);
        slots[at] = l->slots[i];
    }
    free(l->slots);
    l->slots = slots;
    l->cap = cap;
    assert((cap & (cap - 1)) == 0); /* a power of two: slots are masked */
    return CL_OK;
}

static vexpired_t *set_find(const vxmap_t *l, uint64_t seq, uint32_t part)
{
    uint64_t key = (seq << 16 | part) + 1;
    for (size_t at = l->cap ? slot_of(key, l->cap) : 0; l->cap && l->slots[at].key != 0;
         at = (at + 1) & (l->cap - 1))
        if (l->slots[at].key == key)
            return &l->slots[at];
    return NULL;
}

/* Adds (seq, part) with its points; CL_ERR_EXISTS when it is there (with `sum`: adds the
 * points to it instead). */
static int set_add(vxmap_t *l, uint64_t seq, uint32_t part, int64_t points, bool sum)
{
    vexpired_t *have = set_find(l, seq, part);
    if (have != NULL && sum) {
        l->left += have->points == 0;
        have->points += points;
        return CL_OK;
    }
    if (have != NULL)
        return CL_ERR_EXISTS;
    if ((l->count + 1) * 2 > l->cap && set_grow(l) != CL_OK)
        return CL_ERR_NOMEM;
    uint64_t key = (seq << 16 | part) + 1;
    size_t at = slot_of(key, l->cap);
    while (l->slots[at].key != 0)
        at = (at + 1) & (l->cap - 1);
    l->slots[at] = (vexpired_t){key, points};
    l->count++;
    assert(l->count * 2 <= l->cap);
    l->left++;
    return CL_OK;
}

int verify_lots_refund(verify_t *v, const journal_entry_t *e, const journal_entry_t *earn,
                       bool lapsed)
{
    int64_t y = ledger_entry_from_breakage(e);
    if (lapsed || y == 0)
        return CL_OK; /* a lapsed unclaimed account's: all of it, checked by its move */
    vexpired_t *x = earn->n_lots >= 1
                        ? set_find(&v->lots->broken, earn->lots[0]->seq, earn->lots[0]->part)
                        : NULL;
    if (x == NULL || x->points < y)
        return verify_violation(v,
                                "entry %llu takes %lld points out of breakage; its earn's lot "
                                "had not that many expired",
                                SEQ(e), (long long)y);
    x->points -= y;
    v->lots->broken.left -= x->points == 0;
    return CL_OK;
}

/* The expired database against the journal: what each expired lot has left, both ways. */
static int visit_expired(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    const uint8_t *b = k->mv_data;
    vexpired_t *x =
        k->mv_size == EXPIRED_KEY_BYTES
            ? set_find(&v->lots->broken, store_get_u64(b),
                       (uint32_t)b[8] << 24 | (uint32_t)b[9] << 16 | (uint32_t)b[10] << 8 | b[11])
            : NULL;
    Coalition__ExpiredLot *r = coalition__expired_lot__unpack(NULL, val->mv_size, val->mv_data);
    bool ok = x != NULL && r != NULL && r->points == x->points && r->points > 0;
    coalition__expired_lot__free_unpacked(r, NULL);
    return ok ? CL_OK : verify_violation(v, "an expired lot record the journal does not leave");
}

static int check_expired_records(verify_t *v)
{
    MDB_stat st;
    int rc = store_walk(v->txn, v->ledger->db_expired, NULL, visit_expired, v);
    if (rc == CL_OK && mdb_stat(v->txn, v->ledger->db_expired, &st) != MDB_SUCCESS)
        rc = CL_ERR_CORRUPT;
    if (rc == CL_OK && st.ms_entries != v->lots->broken.left)
        rc = verify_violation(v, "%llu expired lot records, the journal leaves %llu",
                              (unsigned long long)st.ms_entries,
                              (unsigned long long)v->lots->broken.left);
    return rc;
}

/* ---- policies ----------------------------------------------------------------------- */

static void policy_at(const struct vlots *l, int64_t at_ms, int64_t *term_s, int64_t *inactivity_s)
{
    *term_s = *inactivity_s = 0;
    for (size_t i = 0; i < l->n_policies && l->policies[i].from_ms <= at_ms; i++) {
        *term_s = l->policies[i].term_s;
        *inactivity_s = l->policies[i].inactivity_s;
    }
}

static int note_policy(verify_t *v, const journal_entry_t *e)
{
    struct vlots *l = v->lots;
    const Coalition__ExpiryPolicy *p = e->expiry_policy;
    if (p == NULL || p->from_ms < e->time_ms || p->set_seq != e->seq || p->term_seconds < 0 ||
        p->term_seconds > EXPIRY_TERM_SECONDS_MAX || p->inactivity_seconds < 0 ||
        p->inactivity_seconds > EXPIRY_INACTIVITY_SECONDS_MAX)
        return verify_violation(v, "entry %llu is not an expiry policy the rules record", SEQ(e));
    size_t at = 0;
    while (at < l->n_policies && l->policies[at].from_ms < p->from_ms)
        at++;
    bool replace = at < l->n_policies && l->policies[at].from_ms == p->from_ms;
    if (!replace && l->n_policies == EXPIRY_POLICIES_MAX)
        return verify_violation(v, "entry %llu: more than %d expiry policies", SEQ(e),
                                EXPIRY_POLICIES_MAX);
    if (!replace) {
        memmove(&l->policies[at + 1], &l->policies[at],
                (l->n_policies - at) * sizeof l->policies[0]);
        l->n_policies++;
    }
    l->policies[at] = (vpolicy_t){p->from_ms, p->term_seconds, p->inactivity_seconds};
    return verify_expect_no_moves(v, e);
}

/* The policies record in the meta database: exactly the journal's. */
static int check_policies_record(verify_t *v)
{
    struct vlots *l = v->lots;
    Coalition__ExpiryPolicies *r = NULL;
    int rc = ledger_get_record(v->txn, v->ledger->db_meta, EXPIRY_POLICIES_KEY,
                               strlen(EXPIRY_POLICIES_KEY), &coalition__expiry_policies__descriptor,
                               (ProtobufCMessage **)&r);
    if (rc == CL_ERR_NOT_FOUND)
        return l->n_policies == 0
                   ? CL_OK
                   : verify_violation(v, "the journal sets expiry policies the ledger lacks");
    if (rc != CL_OK)
        return rc;
    bool same = r->n_policies == l->n_policies;
    for (size_t i = 0; same && i < l->n_policies; i++)
        same = r->policies[i]->from_ms == l->policies[i].from_ms &&
               r->policies[i]->term_seconds == l->policies[i].term_s &&
               r->policies[i]->inactivity_seconds == l->policies[i].inactivity_s;
    coalition__expiry_policies__free_unpacked(r, NULL);
    return same ? CL_OK
                : verify_violation(v, "the expiry policies record differs from the journal");
}

/* ---- entries ------------------------------------------------------------------------ */

static int lots_sum(verify_t *v, const journal_entry_t *e, int64_t *sum)
{
    *sum = 0;
    if (e->n_lots > LOTS_PER_ENTRY_MAX)
        return verify_violation(v, "entry %llu lists %zu lots", SEQ(e), e->n_lots);
    for (size_t i = 0; i < e->n_lots; i++) {
        const Coalition__LotUse *u = e->lots[i];
        if (u->points <= 0 || u->points > LOT_POINTS_MAX || u->expiry_ms <= 0 || u->seq == 0 ||
            u->seq > e->seq || !wire_id_valid(u->issuer, PARTNER_ID_LEN_MAX) ||
            u->pending_until_ms < 0 || u->part > UINT16_MAX)
            return verify_violation(v, "entry %llu lists a lot no rule makes", SEQ(e));
        *sum += u->points;
    }
    return CL_OK;
}

static int check_earn(verify_t *v, const journal_entry_t *e)
{
    if (e->points == 0)
        return e->n_lots == 0 ? CL_OK
                              : verify_violation(v, "earn %llu of no points lists a lot", SEQ(e));
    int64_t term_s = 0, inactivity_s = 0;
    policy_at(v->lots, e->time_ms, &term_s, &inactivity_s);
    const vpartner_t *p = vmap_find(&v->partners, e->partner_id, strlen(e->partner_id));
    const settle_contract_t *c = p != NULL ? verify_contract_at(v, p, e->time_ms) : NULL;
    int64_t rp = c != NULL ? c->return_period_seconds : 0;
    const Coalition__LotUse *u = e->n_lots == 1 ? e->lots[0] : NULL;
    int64_t expiry = term_s > 0 ? e->time_ms + term_s * 1000 : LOT_NO_EXPIRY_MS;
    if (u == NULL || u->seq != e->seq || u->part != 0 || u->points != e->points ||
        strcmp(u->issuer, e->partner_id) != 0 || u->earn_ms != e->time_ms ||
        u->expiry_ms != expiry || u->pending_until_ms != (rp > 0 ? e->time_ms + rp * 1000 : 0))
        return verify_violation(v,
                                "earn %llu: its lot is not the one the expiry policy and "
                                "return period then make",
                                SEQ(e));
    return CL_OK;
}

static int check_expiry(verify_t *v, const journal_entry_t *e)
{
    int64_t term_s = 0, inactivity_s = 0;
    policy_at(v->lots, e->expire_as_of_ms, &term_s, &inactivity_s);
    int64_t last = 0;
    verify_earning_last_activity(v, e->member_id, &last);
    if (e->expire_as_of_ms <= 0 || e->expire_as_of_ms > e->time_ms || e->n_lots == 0 ||
        (e->inactive && (inactivity_s == 0 || last > e->expire_as_of_ms - inactivity_s * 1000)))
        return verify_violation(v, "expiry %llu: its as-of time or reason is not one a run has",
                                SEQ(e));
    for (size_t i = 0; i < e->n_lots; i++) {
        const Coalition__LotUse *u = e->lots[i];
        if (!e->inactive && u->expiry_ms > e->expire_as_of_ms)
            return verify_violation(v, "expiry %llu takes lot %llu.%u, not due until %lld", SEQ(e),
                                    (unsigned long long)u->seq, u->part, (long long)u->expiry_ms);
        int rc = set_add(&v->lots->expired, u->seq, u->part, u->points, false);
        if (rc == CL_OK) /* what refunds of the earn may take back out of breakage */
            rc = u->origin_seq != 0
                     ? set_add(&v->lots->broken, u->origin_seq, u->origin_part, u->points, true)
                     : set_add(&v->lots->broken, u->seq, u->part, u->points, true);
        if (rc == CL_ERR_EXISTS)
            return verify_violation(v, "expiry %llu takes lot %llu.%u, which expired before",
                                    SEQ(e), (unsigned long long)u->seq, u->part);
        if (rc != CL_OK)
            return rc;
    }
    char member[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(member, sizeof member, e->member_id);
    return verify_expect_move(v, e, member, ACCOUNT_BREAKAGE, e->points);
}

int verify_lots_entry(verify_t *v, const journal_entry_t *e)
{
    if (v->lots == NULL)
        return CL_ERR_NOMEM;
    int64_t sum = 0;
    int rc = lots_sum(v, e, &sum);
    if (rc != CL_OK)
        return rc;
    switch (e->kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN: return check_earn(v, e);
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
        if (sum == e->points - ledger_entry_from_breakage(e))
            return CL_OK;
        break;
    case COALITION__ENTRY_KIND__ENTRY_BURN:
        if (sum == e->points && e->n_lots > 0)
            return verify_earning_activity(v, e->member_id, e->time_ms, NULL);
        break;

    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN:
        if (sum == e->points && (e->points == 0 || e->n_lots > 0))
            return CL_OK;
        break;
    case COALITION__ENTRY_KIND__ENTRY_EXPIRY:
        if (sum == e->points)
            return check_expiry(v, e);
        break;
    case COALITION__ENTRY_KIND__ENTRY_EXPIRY_POLICY:
        return e->n_lots == 0 ? note_policy(v, e) : CL_ERR_CORRUPT;
    default:
        if (e->n_lots == 0)
            return CL_OK;
        break;
    }
    return verify_violation(v, "entry %llu (%s): its lots hold %lld points, it moved %lld", SEQ(e),
                            ledger_entry_kind_name(e->kind), (long long)sum, (long long)e->points);
}

/* ---- the lots beside the balances --------------------------------------------------- */

typedef struct lots_walk {
    verify_t *v;
    char member[MEMBER_ID_LEN_MAX + 1]; /* the group being summed ("" before the first) */
    Coalition__LotSummary *summary;     /* the group's, if it has one */
    i128_t sum;
    int64_t min_expiry, max_pending;
    uint64_t lots, groups, finite;
} lots_walk_t;

static int index_has(verify_t *v, MDB_dbi dbi, int64_t t, const char *member)
{
    uint8_t key[LOT_INDEX_KEY_BYTES_MAX];
    MDB_val k = {lots_index_key(key, t, member), key}, val;
    int rc = mdb_get(v->txn, dbi, &k, &val);
    return rc == MDB_SUCCESS ? CL_OK : rc == MDB_NOTFOUND ? CL_ERR_NOT_FOUND : store_err(rc);
}

/* A member's lots end: they sum to its balance; its summary names its index keys, exactly
 * the soonest expiry and an idle key while it has lots, and none without. */
static int group_end(lots_walk_t *w)
{
    verify_t *v = w->v;
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, w->member);
    const vaccount_t *a = vmap_find(&v->accounts, account, strlen(account));
    const Coalition__LotSummary *m = w->summary;
    if (a == NULL || a->sum != w->sum)
        return verify_violation(v, "member %s: its lots do not sum to its balance", w->member);
    if (m == NULL)
        return verify_violation(v, "member %s has lots but no lot summary", w->member);
    int64_t due = w->min_expiry == LOT_NO_EXPIRY_MS ? 0 : w->min_expiry;
    bool any = w->lots > 0;
    bool ok =
        m->lot_due_ms == due && (m->idle_ms > 0) == any && m->pending_until_ms >= w->max_pending;
    int rc = CL_OK;
    if (ok && due != 0)
        rc = index_has(v, v->ledger->db_lot_due, due, w->member);
    if (ok && rc == CL_OK && any)
        rc = index_has(v, v->ledger->db_idle, m->idle_ms, w->member);
    if (!ok || rc == CL_ERR_NOT_FOUND)
        return verify_violation(v,
                                "member %s: its summary or expiry index keys do not fit its "
                                "lots",
                                w->member);
    w->groups += any;
    w->finite += due != 0;
    return rc == CL_OK ? verify_earning_summary(v, w->member, m) : rc;
}

static int group_start(lots_walk_t *w, const char *id, size_t n)
{
    int rc = w->member[0] != '\0' ? group_end(w) : CL_OK;
    coalition__lot_summary__free_unpacked(w->summary, NULL);
    w->summary = NULL;
    memcpy(w->member, id, n);
    w->member[n] = '\0';
    w->sum = 0;
    w->lots = 0;
    w->min_expiry = LOT_NO_EXPIRY_MS;
    w->max_pending = 0;
    return rc;
}

/* A lot is the one the entry of its seq made: that entry lists it (seq, part) with the
 * same issuer, expiry, earn time and end of its return period. */
static int lot_made_so(verify_t *v, uint64_t seq, uint32_t part, int64_t expiry,
                       const Coalition__LotRecord *r, bool *ok)
{
    journal_entry_t *e = NULL;
    *ok = false;
    if (seq == 0 || seq > v->entries)
        return CL_OK;
    int rc = ledger_get_entry(v->ledger, v->txn, seq, &e);
    for (size_t i = 0; rc == CL_OK && i < e->n_lots && !*ok; i++) {
        const Coalition__LotUse *u = e->lots[i];
        *ok = u->seq == seq && u->part == part && u->expiry_ms == expiry &&
              u->earn_ms == r->earn_ms && u->pending_until_ms == r->pending_until_ms &&
              u->origin_seq == r->origin_seq && u->origin_part == r->origin_part &&
              strcmp(u->issuer, r->issuer) == 0;
    }
    coalition__journal_entry__free_unpacked(e, NULL);
    return rc;
}

static int visit_lot(lots_walk_t *w, size_t n, const MDB_val *k, const MDB_val *val)
{
    verify_t *v = w->v;
    const uint8_t *b = k->mv_data;
    int64_t expiry = (int64_t)store_get_u64(b + n + 1);
    uint64_t seq = store_get_u64(b + n + 9);
    uint32_t part = (uint32_t)b[n + 17] << 24 | (uint32_t)b[n + 18] << 16 |
                    (uint32_t)b[n + 19] << 8 | b[n + 20];
    Coalition__LotRecord *r = coalition__lot_record__unpack(NULL, val->mv_size, val->mv_data);
    bool made = false;
    int rc = r != NULL ? lot_made_so(v, seq, part, expiry, r, &made) : CL_OK;
    if (rc != CL_OK) {
        coalition__lot_record__free_unpacked(r, NULL);
        return rc;
    }
    bool ok = r != NULL && made && r->points > 0 && r->points <= LOT_POINTS_MAX && expiry > 0 &&
              vmap_find(&v->partners, r->issuer, strlen(r->issuer)) != NULL &&
              r->pending_until_ms >= 0;
    if (ok) {
        w->sum += r->points;
        w->lots++;
        if (expiry < w->min_expiry)
            w->min_expiry = expiry;
        if (r->pending_until_ms > w->max_pending)
            w->max_pending = r->pending_until_ms;
    }
    coalition__lot_record__free_unpacked(r, NULL);
    return ok ? CL_OK : verify_violation(v, "lot of %s: not a lot the rules make", w->member);
}

/* Keys with a NUL in the accounts database: "member:ID" NUL (the summary) and
 * "member:ID" NUL + 20 bytes (a lot); in key order a member's summary comes first. */
static int visit_key(const MDB_val *k, const MDB_val *val, void *ctx)
{
    lots_walk_t *w = ctx;
    verify_t *v = w->v;
    if (!ledger_lot_key(k))
        return CL_OK; /* a balance */
    const char *key = k->mv_data;
    size_t p = strlen(MEMBER_PREFIX), n = strnlen(key, k->mv_size);
    if (n + 1 < k->mv_size && (uint8_t)key[n + 1] == 0xFFu)
        return CL_OK; /* a threshold rule's spend record (earning.c) */
    if (n <= p || n - p > MEMBER_ID_LEN_MAX || memcmp(key, MEMBER_PREFIX, p) != 0 ||
        (k->mv_size != n + 1 && k->mv_size != n + 21))
        return verify_violation(v, "a lot or lot summary under a malformed key");
    bool same = strlen(w->member) == n - p && memcmp(w->member, key + p, n - p) == 0;
    int rc = same ? CL_OK : group_start(w, key + p, n - p);
    if (rc != CL_OK || k->mv_size == n + 21)
        return rc == CL_OK ? visit_lot(w, n, k, val) : rc;
    if (same || w->summary != NULL)
        return verify_violation(v, "member %s: a summary after its lots", w->member);
    w->summary = coalition__lot_summary__unpack(NULL, val->mv_size, val->mv_data);
    return w->summary != NULL ? CL_OK
                              : verify_violation(v, "member %s: unreadable lot summary", w->member);
}

static uint64_t entries_of(verify_t *v, MDB_dbi dbi)
{
    MDB_stat st;
    return mdb_stat(v->txn, dbi, &st) == MDB_SUCCESS ? st.ms_entries : UINT64_MAX;
}

int verify_lots_records(verify_t *v)
{
    lots_walk_t w = {.v = v};
    int rc = store_walk(v->txn, v->ledger->db_accounts, NULL, visit_key, &w);
    if (rc == CL_OK && w.member[0] != '\0')
        rc = group_end(&w);
    coalition__lot_summary__free_unpacked(w.summary, NULL);
    if (rc != CL_OK)
        return rc;
    uint64_t holders = 0;
    for (size_t i = 0; i < v->accounts.count; i++) {
        const vaccount_t *a = vmap_at(&v->accounts, i);
        holders += strncmp(a->name.bytes, MEMBER_PREFIX, strlen(MEMBER_PREFIX)) == 0 && a->sum != 0;
    }
    if (holders != w.groups)
        return verify_violation(v, "%llu members hold points, %llu have lots",
                                (unsigned long long)holders, (unsigned long long)w.groups);
    if (entries_of(v, v->ledger->db_lot_due) != w.finite ||
        entries_of(v, v->ledger->db_idle) != w.groups)
        return verify_violation(v, "the expiry indexes hold keys of members without lots");
    rc = check_expired_records(v);
    return rc == CL_OK ? check_policies_record(v) : rc;
}
