/* Points expiry: the operator's policies (with the dates they take effect), one member's
 * expiry (a journal entry moving its expired lots to breakage, by issuer), and expiry
 * runs in bounded slices, each a batch of its own between the writer's rounds.
 *
 * A lot's fixed term comes from the policy in force when it was earned (stored in the
 * lot, never changed later). The inactivity rule is the one in force at the run's as-of
 * time: a member whose latest earn or burn is at least that long before it loses all its
 * lots. Points expire when a run posts them: until then they stay in the balance. */
#include "ledger_internal.h"

#include "errors.h"
#include "log.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

_Static_assert(EXPIRY_TERM_SECONDS_MAX <= INT64_MAX / 1000 / 4, "terms in ms fit beside any time");
_Static_assert(EXPIRY_POLICIES_MAX >= 2, "a policy and its successor");

/* ---- policies ----------------------------------------------------------------------- */

static int policies_get(ledger_t *self, MDB_txn *txn, Coalition__ExpiryPolicies **out)
{
    int rc = ledger_get_record(txn, self->db_meta, EXPIRY_POLICIES_KEY, strlen(EXPIRY_POLICIES_KEY),
                               &coalition__expiry_policies__descriptor, (ProtobufCMessage **)out);
    if (rc == CL_ERR_NOT_FOUND)
        *out = NULL;
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

int expiry_policy_at(ledger_t *self, MDB_txn *txn, int64_t at_ms, int64_t *term_s,
                     int64_t *inactivity_s)
{
    Coalition__ExpiryPolicies *p = NULL;
    *term_s = *inactivity_s = 0;
    int rc = policies_get(self, txn, &p);
    if (rc != CL_OK || p == NULL)
        return rc;
    for (size_t i = 0; i < p->n_policies && p->policies[i]->from_ms <= at_ms; i++) {
        *term_s = p->policies[i]->term_seconds;
        *inactivity_s = p->policies[i]->inactivity_seconds;
    }
    coalition__expiry_policies__free_unpacked(p, NULL);
    if (*term_s < 0 || *term_s > EXPIRY_TERM_SECONDS_MAX || *inactivity_s < 0 ||
        *inactivity_s > EXPIRY_INACTIVITY_SECONDS_MAX)
        return CL_ERR_CORRUPT; /* read from disk */
    return CL_OK;
}

/* The policies with `np` in from_ms order (one from the same time is replaced). */
static int policies_put(ledger_t *self, MDB_txn *txn, const Coalition__ExpiryPolicies *old,
                        Coalition__ExpiryPolicy *np, decision_t *d)
{
    Coalition__ExpiryPolicy *list[EXPIRY_POLICIES_MAX];
    size_t n = 0, have = old != NULL ? old->n_policies : 0;
    bool placed = false;
    for (size_t i = 0; i < have; i++) {
        Coalition__ExpiryPolicy *p = old->policies[i];
        if (!placed && p->from_ms >= np->from_ms) {
            list[n++] = np;
            placed = true;
        }
        if (p->from_ms == np->from_ms)
            continue; /* replaced */
        if (n == EXPIRY_POLICIES_MAX) {
            rules_decline(d, RC_EXCEEDS_LIMIT, "the ledger keeps at most %d expiry policies",
                          EXPIRY_POLICIES_MAX);
            return CL_OK;
        }
        list[n++] = p;
    }
    if (!placed && n == EXPIRY_POLICIES_MAX) {
        rules_decline(d, RC_EXCEEDS_LIMIT, "the ledger keeps at most %d expiry policies",
                      EXPIRY_POLICIES_MAX);
        return CL_OK;
    }
    if (!placed)
        list[n++] = np;
    Coalition__ExpiryPolicies all = COALITION__EXPIRY_POLICIES__INIT;
    assert(n >= 1 && n <= EXPIRY_POLICIES_MAX);
    all.policies = list;
    all.n_policies = n;
    return ledger_put_record(txn, self->db_meta, EXPIRY_POLICIES_KEY, strlen(EXPIRY_POLICIES_KEY),
                             &all.base);
}

int rules_expiry_policy(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__ExpiryPolicyRequest *r = env->expiry_policy;
    int64_t from = r->from_ms == 0 ? d->now_ms : r->from_ms;
    if (from < d->now_ms) {
        rules_decline(d, RC_INVALID_AMOUNT,
                      "an expiry policy takes effect now or later, never in the past");
        return CL_OK;
    }
    Coalition__ExpiryPolicies *old = NULL;
    int rc = policies_get(self, txn, &old);
    coalition__expiry_policy__init(&d->expiry_policy);
    d->expiry_policy.from_ms = from;
    d->expiry_policy.term_seconds = r->term_seconds;
    d->expiry_policy.inactivity_seconds = r->inactivity_seconds;
    d->expiry_policy.set_seq = self->batch_seq + 1;
    if (rc == CL_OK)
        rc = policies_put(self, txn, old, &d->expiry_policy, d);
    coalition__expiry_policies__free_unpacked(old, NULL);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    d->has_expiry_policy = true;
    d->kind = COALITION__ENTRY_KIND__ENTRY_EXPIRY_POLICY;
    char when[SETTLE_TIME_TEXT_BYTES];
    settle_time_text(from, when);
    snprintf(d->text, sizeof d->text,
             "Expiry policy from %s: term %" PRId64 " days, inactivity %" PRId64 " days (0: none)",
             when, r->term_seconds / 86400, r->inactivity_seconds / 86400);
    return CL_OK;
}

/* ---- one member's expiry ------------------------------------------------------------ */

/* Whether `m` is inactive as of as_of_ms under an inactivity period of `inactivity_s`. */
static bool inactive_at(const Coalition__LotSummary *m, int64_t inactivity_s, int64_t as_of_ms)
{
    int64_t last = m->last_activity_ms > 0 ? m->last_activity_ms : m->idle_ms;
    return inactivity_s > 0 && last > 0 && last <= as_of_ms - inactivity_s * 1000;
}

static int expire_text(decision_t *d, const char *member, int64_t as_of_ms)
{
    char when[SETTLE_TIME_TEXT_BYTES];
    assert(d->points > 0 && as_of_ms > 0);
    settle_time_text(as_of_ms, when);
    snprintf(d->text, sizeof d->text, "Expired %" PRId64 " points of %s (%s) as of %s", d->points,
             member, d->inactive ? "inactivity" : "term", when);
    return CL_OK;
}

int rules_expire(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__ExpireRequest *r = env->expire;
    if (r->as_of_ms > d->now_ms) {
        rules_decline(d, RC_INVALID_AMOUNT, "as-of time is later than the broker's clock");
        return CL_OK;
    }
    if (r->member_id[0] == '\0') {
        rules_decline(d, RC_INVALID_TRANSACTION, "an expiry run is sliced by the broker's writer");
        return CL_OK;
    }
    snprintf(d->member_id, sizeof d->member_id, "%s", r->member_id);
    lot_holder_t h;
    int64_t term_s = 0, inactivity_s = 0;
    Coalition__MemberRecord *m = NULL;
    int rc = ledger_get_record(txn, self->db_members, r->member_id, strlen(r->member_id),
                               &coalition__member_record__descriptor, (ProtobufCMessage **)&m);
    coalition__member_record__free_unpacked(m, NULL);
    if (rc == CL_ERR_NOT_FOUND) {
        rules_decline(d, RC_UNKNOWN_MEMBER, "unknown member %s", r->member_id);
        return CL_OK;
    }
    if (rc == CL_OK)
        rc = lots_open(self, txn, r->member_id, &h);
    if (rc != CL_OK)
        return rc;
    if (rc == CL_OK)
        rc = expiry_policy_at(self, txn, r->as_of_ms, &term_s, &inactivity_s);
    lots_result_t res = {0};
    d->inactive = rc == CL_OK && inactive_at(h.rec, inactivity_s, r->as_of_ms);
    if (rc == CL_OK)
        rc = lots_expire(self, txn, &h, r->as_of_ms, d->inactive, d, &res);
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, r->member_id);
    if (rc == CL_OK && res.taken == 0)
        rules_decline(d, RC_INVALID_TRANSACTION, "nothing of %s is due to expire as of then",
                      r->member_id);
    if (rc == CL_OK && res.taken > 0)
        rc = rules_move_points(self, txn, d, account, ACCOUNT_BREAKAGE, res.taken);
    if (rc != CL_OK || d->code != RC_APPROVED) {
        lots_discard(&h);
        return rc;
    }
    if (d->inactive) /* also when its lots take more entries: a refund between them */
        h.rec->inactive_expired_ms = r->as_of_ms;
    rc = lots_close(self, txn, &h, d->now_ms);
    if (rc == CL_OK) /* for refunds of their earns */
        rc = lots_expired_note(self, txn, d);
    lots_shares(d);
    d->kind = COALITION__ENTRY_KIND__ENTRY_EXPIRY;
    d->points = res.taken;
    d->expire_as_of_ms = r->as_of_ms;
    snprintf(d->member_id, sizeof d->member_id, "%s", r->member_id);
    assert(d->n_lots > 0 && d->posting_count == MOVE_POSTINGS);
    return rc == CL_OK ? expire_text(d, r->member_id, r->as_of_ms) : rc;
}

/* ---- runs in slices ----------------------------------------------------------------- */

/* Members under index keys up to `upto`, at most `max` (after the `have` already there). */
static int due_members(MDB_txn *txn, MDB_dbi dbi, int64_t upto, char (*ids)[MEMBER_ID_LEN_MAX + 1],
                       size_t have, size_t max, size_t *count, bool *more)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    size_t n = have;
    *more = false;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == MDB_SUCCESS) {
        if (k.mv_size <= 8 || k.mv_size > LOT_INDEX_KEY_BYTES_MAX) {
            mdb_cursor_close(cur);
            return CL_ERR_CORRUPT;
        }
        if ((int64_t)store_get_u64(k.mv_data) > upto)
            break;
        if (n == max) {
            *more = true;
            break;
        }
        memcpy(ids[n], (const char *)k.mv_data + 8, k.mv_size - 8);
        ids[n][k.mv_size - 8] = '\0';
        n++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return store_err(rc);
    assert(n >= have && n <= max);
    *count = n;
    return CL_OK;
}

/* What is due of one member: whether it is inactive, or its first lot's key when that
 * has expired (the expiry's txn id names that lot: each lot expires once). */
static int member_due(ledger_t *self, MDB_txn *txn, const char *member, int64_t as_of_ms,
                      int64_t inactivity_s, lot_t *first, bool *due, bool *inactive)
{
    lot_holder_t h;
    bool any = false;
    *due = *inactive = false;
    int rc = lots_open(self, txn, member, &h);
    if (rc == CL_OK)
        rc = lots_first(self, txn, member, first, &any);
    if (rc == CL_OK && any) {
        *inactive = inactive_at(h.rec, inactivity_s, as_of_ms);
        *due = *inactive || first->expiry_ms <= as_of_ms;
    }
    if (rc == CL_OK && any && !*due && inactivity_s > 0)
        rc = lots_idle_forward(self, txn, &h); /* active since its idle key */
    lots_discard(&h);
    return rc;
}

/* One member's due lots, an entry per LOTS_PER_ENTRY_MAX, until none is due or the slice
 * has written its most entries (*stopped: the member is left for the next slice). Each
 * entry is keyed by its own seq: unique, whatever the lots' keys. */
static int expire_member(ledger_t *self, const char *member, int64_t as_of_ms, int64_t now_ms,
                         int64_t inactivity_s, expiry_result_t *res, bool *stopped)
{
    for (;;) {
        lot_t first;
        bool due = false, inactive = false;
        int rc =
            member_due(self, self->batch, member, as_of_ms, inactivity_s, &first, &due, &inactive);
        if (rc != CL_OK || !due)
            return rc;
        if (res->entries >= EXPIRY_ENTRIES_PER_SLICE_MAX) {
            *stopped = true;
            return CL_OK;
        }
        char txn_id[TXN_ID_LEN_MAX + 1];
        uint64_t seq = self->batch_seq;
        snprintf(txn_id, sizeof txn_id, "expire-%" PRIu64, seq + 1);
        Coalition__ExpireRequest body = COALITION__EXPIRE_REQUEST__INIT;
        body.as_of_ms = as_of_ms;
        body.member_id = (char *)member;
        envelope_t env = COALITION__ENVELOPE__INIT;
        env.body_case = COALITION__ENVELOPE__BODY_EXPIRE;
        env.expire = &body;
        int code = RC_APPROVED;
        int64_t points = 0;
        rc = ledger_apply_own(self, &env, "expiry", txn_id, now_ms, &code, NULL, 0, &points);
        if (rc != CL_OK)
            return rc;
        if (code != RC_APPROVED || self->batch_seq != seq + 1)
            return CL_ERR_CORRUPT; /* it was due: the expiry makes its entry */
        res->entries++;
        res->points += points;
    }
}

int ledger_expire(ledger_t *self, int64_t as_of_ms, int64_t now_ms, size_t max_members,
                  expiry_result_t *res)
{
    assert(self != NULL && res != NULL && max_members > 0);
    memset(res, 0, sizeof *res);
    if (as_of_ms > now_ms)
        return CL_ERR_INVALID;
    if (max_members > EXPIRY_MEMBERS_PER_SLICE_MAX)
        max_members = EXPIRY_MEMBERS_PER_SLICE_MAX;
    char ids[EXPIRY_MEMBERS_PER_SLICE_MAX * 2][MEMBER_ID_LEN_MAX + 1];
    int64_t term_s = 0, inactivity_s = 0;
    size_t n = 0;
    bool more_due = false, more_idle = false;
    int rc = ledger_batch_begin(self);
    if (rc != CL_OK)
        return rc;
    rc = expiry_policy_at(self, self->batch, as_of_ms, &term_s, &inactivity_s);
    if (rc == CL_OK)
        rc = due_members(self->batch, self->db_lot_due, as_of_ms, ids, 0, max_members, &n,
                         &more_due);
    if (rc == CL_OK && inactivity_s > 0)
        rc = due_members(self->batch, self->db_idle, as_of_ms - inactivity_s * 1000, ids, n,
                         n + max_members, &n, &more_idle);
    bool stopped = false;
    for (size_t i = 0; i < n && rc == CL_OK && !stopped; i++)
        rc = expire_member(self, ids[i], as_of_ms, now_ms, inactivity_s, res, &stopped);
    res->members = n;
    res->more = more_due || more_idle || stopped;
    assert(res->entries <= EXPIRY_ENTRIES_PER_SLICE_MAX && res->points >= 0);
    if (rc == CL_ERR_CORRUPT) { /* the ledger disagrees with itself: no more writes */
        self->failed = true;
        log_error("expiry run as of %" PRId64 " found the ledger inconsistent; refusing writes "
                  "until restart",
                  as_of_ms);
    }
    if (rc != CL_OK || (n == 0)) {
        ledger_batch_abort(self); /* nothing written when nothing was due */
        return rc;
    }
    /* Every member listed is done: its lot_due key is past as_of (exact), its idle key
     * past the inactivity bound or gone. What remains due is what the lists left out. */
    return ledger_batch_commit(self);
}

/* ---- read side ---------------------------------------------------------------------- */

typedef struct policies_call {
    ledger_expiry_policy_t *rows;
    size_t max, count;
} policies_call_t;

static int policies_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    policies_call_t *c = ctx;
    Coalition__ExpiryPolicies *p = NULL;
    int rc = policies_get(self, txn, &p);
    c->count = 0;
    for (size_t i = 0; rc == CL_OK && p != NULL && i < p->n_policies && c->count < c->max; i++) {
        ledger_expiry_policy_t *r = &c->rows[c->count++];
        r->from_ms = p->policies[i]->from_ms;
        r->term_seconds = p->policies[i]->term_seconds;
        r->inactivity_seconds = p->policies[i]->inactivity_seconds;
        r->set_seq = p->policies[i]->set_seq;
    }
    coalition__expiry_policies__free_unpacked(p, NULL);
    return rc;
}

int ledger_expiry_policies(ledger_t *self, ledger_expiry_policy_t *rows, size_t max,
                           size_t *count_out)
{
    policies_call_t c = {rows, max, 0};
    int rc = ledger_with_reader(self, policies_in, &c);
    *count_out = c.count;
    return rc;
}
