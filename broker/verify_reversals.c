/* The audit of refunds, voids and reversals ahead of their original, mirroring rules.c:
 * each refund or void finds its original through the original's idempotency key and gives
 * back exactly what the rules give back after the refunds and voids before it; what the
 * journal gave back per original must equal the reversals database, both ways; each
 * reversal-ahead entry left the one tombstone under its original's key (verify.c checks
 * the converse while it walks the idempotency records).
 *
 * Memory: one vreversal_t per original that was reversed (v->reversals). */
#include "verify_internal.h"

#include "amount.h"
#include "errors.h"

#include <stdio.h>
#include <string.h>

#define KEY_TEXT_BYTES VERIFY_KEY_BYTES_MAX

bool verify_original_key(const journal_entry_t *e, vkey_t *key)
{
    const char *site = e->original_site_id[0] != '\0' ? e->original_site_id : e->site_id;
    key->len = ledger_txn_key((uint8_t *)key->bytes, e->partner_id, site, e->original_txn_id);
    key->bytes[key->len] = '\0';
    return key->len > 0 && e->original_txn_id[0] != '\0';
}

static bool key_equal(const vkey_t *key, const void *bytes, size_t len)
{
    return key->len == len && memcmp(key->bytes, bytes, len) == 0;
}

/* ---- refunds and voids ------------------------------------------------------------- */

/* A refund or void being re-derived: its original and what was given back before it. */
typedef struct {
    journal_entry_t *original;
    vkey_t key;
    char key_text[KEY_TEXT_BYTES];
    int64_t reversed_minor, reversed_points;
    bool voided;
    int64_t minor, points; /* what this entry gives back, by the rules */
} reversal_t;

/* The approved original whose key the entry names: its own key must name it back. */
static int original_entry(verify_t *v, const journal_entry_t *e, reversal_t *r, uint64_t seq)
{
    int rc = ledger_get_entry(v->ledger, v->txn, seq, &r->original);
    if (rc != CL_OK)
        return rc;
    const journal_entry_t *o = r->original;
    uint8_t key[TXN_KEY_BYTES_MAX];
    size_t len = ledger_txn_key(key, o->partner_id, o->site_id, o->txn_id);
    if (!key_equal(&r->key, key, len))
        return verify_violation(v,
                                "entry %llu reverses %s, whose idempotency record names "
                                "entry %llu of another key",
                                (unsigned long long)e->seq, r->key_text, (unsigned long long)seq);
    if (o->kind != COALITION__ENTRY_KIND__ENTRY_EARN &&
        o->kind != COALITION__ENTRY_KIND__ENTRY_BURN)
        return verify_violation(v,
                                "entry %llu reverses %s, a %s; only earns and burns can be "
                                "reversed",
                                (unsigned long long)e->seq, r->key_text,
                                ledger_entry_kind_name(o->kind));
    return CL_OK;
}

/* Find the original through its idempotency record, as rules.c does. */
static int load_original(verify_t *v, const journal_entry_t *e, reversal_t *r)
{
    if (!verify_original_key(e, &r->key))
        return verify_violation(v, "entry %llu (%s) names no original it can reverse",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind));
    verify_key_text(&r->key, r->key_text, sizeof r->key_text);
    Coalition__IdemRecord *idem = NULL;
    int rc = ledger_get_record(v->txn, v->ledger->db_idem, r->key.bytes, r->key.len,
                               &coalition__idem_record__descriptor, (ProtobufCMessage **)&idem);
    if (rc == CL_ERR_NOT_FOUND)
        return verify_violation(v, "entry %llu (%s) reverses %s, which has no idempotency record",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                r->key_text);
    if (rc != CL_OK)
        return rc;
    uint64_t seq = idem->seq;
    bool tombstone = idem->tombstone;
    coalition__idem_record__free_unpacked(idem, NULL);
    if (tombstone)
        return verify_violation(v, "entry %llu (%s) reverses %s, which is tombstoned",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                r->key_text);
    if (seq == 0 || seq >= e->seq)
        return verify_violation(v,
                                "entry %llu (%s) reverses %s, which has no approved entry "
                                "before it",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                r->key_text);
    rc = original_entry(v, e, r, seq);
    const vreversal_t *before = vmap_find(&v->reversals, r->key.bytes, r->key.len);
    if (rc == CL_OK && before != NULL) {
        r->reversed_minor = before->reversed_minor;
        r->reversed_points = before->reversed_points;
        r->voided = before->voided;
    }
    return rc;
}

/* rules.c void_gives_back: only before any refund, except the partner agent's safety
 * void of a burn, which may come after refunds that left something; what is left comes
 * back. */
static int void_points(verify_t *v, const journal_entry_t *e, reversal_t *r)
{
    const journal_entry_t *o = r->original;
    bool refunded = r->reversed_minor > 0 || r->reversed_points > 0;
    bool safety = o->kind == COALITION__ENTRY_KIND__ENTRY_BURN && wire_agent_txn(e->txn_id);
    if (refunded && !(safety && r->reversed_points < o->points))
        return verify_violation(v, "entry %llu voids %s after it was partly refunded",
                                (unsigned long long)e->seq, r->key_text);
    int64_t minor = o->amount_minor - r->reversed_minor;
    if (e->amount_minor != minor)
        return verify_violation(v, "entry %llu voids %s of %lld minor units, the entry says %lld",
                                (unsigned long long)e->seq, r->key_text, (long long)minor,
                                (long long)e->amount_minor);
    r->minor = minor;
    r->points = o->points - r->reversed_points;
    return CL_OK;
}

/* rules.c earn_refund_points: the difference of cumulative shares of the points. */
static int earn_refund_points(verify_t *v, const journal_entry_t *e, reversal_t *r)
{
    const journal_entry_t *o = r->original;
    int64_t left = o->amount_minor - r->reversed_minor;
    if (left <= 0)
        return verify_violation(v, "entry %llu refunds %s, which was already fully refunded",
                                (unsigned long long)e->seq, r->key_text);
    if (e->amount_minor <= 0 || e->amount_minor > left)
        return verify_violation(v, "entry %llu refunds %lld minor units of %s, %lld were left",
                                (unsigned long long)e->seq, (long long)e->amount_minor, r->key_text,
                                (long long)left);
    if (strcmp(e->currency, o->currency) != 0)
        return verify_violation(v, "entry %llu refunds %s in %s, its original is in %s",
                                (unsigned long long)e->seq, r->key_text, e->currency, o->currency);
    r->minor = e->amount_minor;
    r->points =
        amount_share(o->points, r->reversed_minor + r->minor, o->amount_minor) - r->reversed_points;
    return CL_OK;
}

/* rules.c burn_refund_points: points, never money, up to what is left. */
static int burn_refund_points(verify_t *v, const journal_entry_t *e, reversal_t *r)
{
    int64_t left = r->original->points - r->reversed_points;
    if (left <= 0)
        return verify_violation(v, "entry %llu refunds %s, which was already fully refunded",
                                (unsigned long long)e->seq, r->key_text);
    if (e->amount_minor != 0)
        return verify_violation(v, "entry %llu refunds burn %s in money",
                                (unsigned long long)e->seq, r->key_text);
    if (e->points <= 0 || e->points > left)
        return verify_violation(v, "entry %llu returns %lld points of %s, %lld were left",
                                (unsigned long long)e->seq, (long long)e->points, r->key_text,
                                (long long)left);
    r->minor = 0;
    r->points = e->points;
    return CL_OK;
}

static bool is_void(const journal_entry_t *e)
{
    return e->kind == COALITION__ENTRY_KIND__ENTRY_VOID_EARN ||
           e->kind == COALITION__ENTRY_KIND__ENTRY_VOID_BURN;
}

/* The kind the rules give a refund or void of this original. */
static Coalition__EntryKind reversal_kind(const journal_entry_t *e, const journal_entry_t *o)
{
    bool of_earn = o->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
    if (is_void(e))
        return of_earn ? COALITION__ENTRY_KIND__ENTRY_VOID_EARN
                       : COALITION__ENTRY_KIND__ENTRY_VOID_BURN;
    return of_earn ? COALITION__ENTRY_KIND__ENTRY_REFUND_EARN
                   : COALITION__ENTRY_KIND__ENTRY_REFUND_BURN;
}

/* What the entry must give back, by the rules, or the first rule it breaks. */
static int reversal_points(verify_t *v, const journal_entry_t *e, reversal_t *r)
{
    const journal_entry_t *o = r->original;
    if (e->kind != reversal_kind(e, o))
        return verify_violation(v, "entry %llu is a %s of %s, which is a %s",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                r->key_text, ledger_entry_kind_name(o->kind));
    if (r->voided)
        return verify_violation(v, "entry %llu (%s) reverses %s, which was voided",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                r->key_text);
    char holder[ACCOUNT_NAME_BYTES_MAX];
    const char *member = NULL;
    verify_holder(v, o->member_id, holder, &member);
    if (strcmp(e->member_id, member) != 0)
        return verify_violation(v, "entry %llu reverses %s of member %s but names member %s",
                                (unsigned long long)e->seq, r->key_text, member, e->member_id);
    if (is_void(e))
        return void_points(v, e, r);
    if (o->kind == COALITION__ENTRY_KIND__ENTRY_EARN)
        return earn_refund_points(v, e, r);
    return burn_refund_points(v, e, r);
}

/* Add what this entry gave back to its original's running reversal. */
static int note_reversal(verify_t *v, const journal_entry_t *e, const reversal_t *r)
{
    const journal_entry_t *o = r->original;
    vreversal_t *rev = vmap_find(&v->reversals, r->key.bytes, r->key.len);
    if (rev == NULL) {
        int rc = vmap_insert(&v->reversals, r->key.bytes, r->key.len, (void **)&rev);
        if (rc != CL_OK)
            return rc;
        rev->original_seq = o->seq;
        rev->first_seq = e->seq;
        rev->original_kind = o->kind;
        rev->original_minor = o->amount_minor;
        rev->original_points = o->points;
    }
    if (is_void(e)) {
        rev->voided = true;
        rev->reversed_minor = o->amount_minor;
        rev->reversed_points = o->points;
    } else {
        rev->reversed_minor += r->minor;
        rev->reversed_points += r->points;
    }
    return CL_OK;
}

/* An earn's reversal: from its holder (`member`; breakage for a lapsed unclaimed
 * account), and what of its lot expired out of breakage: one move or both, in that
 * order, adding up to its points. */
static int expect_earn_back(verify_t *v, const journal_entry_t *e, const char *member,
                            const char *partner, int64_t points, bool lapsed)
{
    int64_t y = ledger_entry_from_breakage(e);
    if (lapsed || y == 0)
        return verify_expect_move(v, e, member, partner, points);
    if (y == points && e->n_postings == MOVE_POSTINGS)
        return verify_expect_move(v, e, ACCOUNT_BREAKAGE, partner, points);
    bool ok =
        e->n_postings == 2 * MOVE_POSTINGS && y < points &&
        strcmp(e->postings[0]->account, member) == 0 && e->postings[0]->delta == -(points - y) &&
        strcmp(e->postings[1]->account, partner) == 0 && e->postings[1]->delta == points - y &&
        strcmp(e->postings[2]->account, ACCOUNT_BREAKAGE) == 0 && e->postings[2]->delta == -y &&
        strcmp(e->postings[3]->account, partner) == 0 && e->postings[3]->delta == y;
    return ok ? CL_OK
              : verify_violation(v,
                                 "entry %llu should move %lld points from %s and %lld out of "
                                 "breakage to %s",
                                 (unsigned long long)e->seq, (long long)(points - y), member,
                                 (long long)y, partner);
}

int verify_rederive_reversal(verify_t *v, const journal_entry_t *e)
{
    const vpartner_t *p = NULL;
    reversal_t r;
    memset(&r, 0, sizeof r);
    int rc = verify_partner_in_force(v, e, &p);
    if (rc == CL_OK)
        rc = load_original(v, e, &r);
    if (rc == CL_OK)
        rc = reversal_points(v, e, &r);
    if (rc == CL_OK && e->points != r.points)
        rc = verify_violation(v,
                              "entry %llu (%s of %s) gives back %lld points, the rules give "
                              "%lld",
                              (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                              r.key_text, (long long)e->points, (long long)r.points);
    if (rc == CL_OK) {
        char partner[ACCOUNT_NAME_BYTES_MAX], member[ACCOUNT_NAME_BYTES_MAX];
        bool of_earn = r.original->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
        snprintf(partner, sizeof partner, of_earn ? ACCOUNT_ISSUED_FMT : ACCOUNT_REDEEMED_FMT,
                 e->partner_id);
        const char *holder = NULL; /* an unclaimed account's points may have moved on */
        verify_holder(v, r.original->member_id, member, &holder);
        bool lapsed = strcmp(member, ACCOUNT_BREAKAGE) == 0;
        rc = of_earn ? expect_earn_back(v, e, member, partner, r.points, lapsed)
                     : verify_expect_move(v, e, partner, member, r.points);
        int64_t after = is_void(e) ? r.original->amount_minor : r.reversed_minor + r.minor;
        bool own = !lapsed && strcmp(holder, r.original->member_id) == 0;
        if (rc == CL_OK && of_earn)
            rc = verify_lots_refund(v, e, r.original, lapsed);
        if (rc == CL_OK && of_earn) /* qualification is the earning member's own */
            rc = verify_earning_reversal(v, e, r.original, r.reversed_minor, after,
                                         own ? holder : NULL);
    }
    if (rc == CL_OK)
        rc = verify_settle_reversal(v, e, r.original, r.reversed_points);
    if (rc == CL_OK)
        rc = note_reversal(v, e, &r);
    coalition__journal_entry__free_unpacked(r.original, NULL);
    return rc;
}

/* ---- reversals ahead of their original ---------------------------------------------- */

int verify_rederive_ahead(verify_t *v, const journal_entry_t *e)
{
    const vpartner_t *p = NULL;
    int rc = verify_partner_in_force(v, e, &p);
    if (rc == CL_OK)
        rc = verify_expect_no_moves(v, e);
    vkey_t key;
    if (rc == CL_OK && !verify_original_key(e, &key))
        rc = verify_violation(v, "entry %llu (%s) names no original it can reverse",
                              (unsigned long long)e->seq, ledger_entry_kind_name(e->kind));
    if (rc != CL_OK)
        return rc;
    char text[KEY_TEXT_BYTES];
    verify_key_text(&key, text, sizeof text);
    Coalition__IdemRecord *idem = NULL;
    rc = ledger_get_record(v->txn, v->ledger->db_idem, key.bytes, key.len,
                           &coalition__idem_record__descriptor, (ProtobufCMessage **)&idem);
    if (rc == CL_ERR_NOT_FOUND)
        return verify_violation(v, "reversal-ahead entry %llu left no tombstone under %s",
                                (unsigned long long)e->seq, text);
    if (rc != CL_OK)
        return rc;
    bool tombstone = idem->tombstone;
    uint64_t tombstone_seq = idem->tombstone_seq;
    coalition__idem_record__free_unpacked(idem, NULL);
    if (!tombstone)
        return verify_violation(v, "reversal-ahead entry %llu names %s, which holds no tombstone",
                                (unsigned long long)e->seq, text);
    if (tombstone_seq != e->seq)
        return verify_violation(v, "tombstone under %s names entry %llu, but entry %llu left it",
                                text, (unsigned long long)tombstone_seq,
                                (unsigned long long)e->seq);
    v->reversals_ahead++;
    return CL_OK;
}

/* ---- reversal records against the journal ------------------------------------------- */

static bool reversal_complete(const vreversal_t *r)
{
    if (r->voided)
        return true;
    return r->original_kind == COALITION__ENTRY_KIND__ENTRY_EARN
               ? r->reversed_minor >= r->original_minor
               : r->reversed_points >= r->original_points;
}

static const char *yes_no(bool b) { return b ? "yes" : "no"; }

static int compare_reversal(verify_t *v, const char *text, const Coalition__ReversalRecord *rec,
                            const vreversal_t *r)
{
    bool complete = reversal_complete(r);
    if (rec->reversed_minor == r->reversed_minor && rec->reversed_points == r->reversed_points &&
        rec->voided == r->voided && rec->complete == complete)
        return CL_OK;
    return verify_violation(v,
                            "reversal record of %s says %lld minor units and %lld points given "
                            "back (voided %s, complete %s); the journal says %lld and %lld "
                            "(voided %s, complete %s)",
                            text, (long long)rec->reversed_minor, (long long)rec->reversed_points,
                            yes_no(rec->voided), yes_no(rec->complete),
                            (long long)r->reversed_minor, (long long)r->reversed_points,
                            yes_no(r->voided), yes_no(complete));
}

static int visit_reversal_record(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    vkey_t key;
    char text[KEY_TEXT_BYTES];
    if (k->mv_size >= VERIFY_KEY_BYTES_MAX)
        return verify_violation(v, "reversal key of %zu bytes is too long", k->mv_size);
    memcpy(key.bytes, k->mv_data, k->mv_size);
    key.bytes[k->mv_size] = '\0';
    key.len = k->mv_size;
    verify_key_text(&key, text, sizeof text);
    vreversal_t *r = vmap_find(&v->reversals, key.bytes, key.len);
    if (r == NULL)
        return verify_violation(v,
                                "reversal record under %s, which no refund or void in the "
                                "journal reversed",
                                text);
    Coalition__ReversalRecord *rec =
        coalition__reversal_record__unpack(NULL, val->mv_size, val->mv_data);
    if (rec == NULL)
        return verify_violation(v, "unreadable reversal record under %s", text);
    int rc = compare_reversal(v, text, rec, r);
    coalition__reversal_record__free_unpacked(rec, NULL);
    r->seen = true;
    return rc;
}

int verify_reversal_records(verify_t *v)
{
    int rc = store_walk(v->txn, v->ledger->db_reversals, NULL, visit_reversal_record, v);
    for (size_t i = 0; rc == CL_OK && i < v->reversals.count; i++) {
        const vreversal_t *r = vmap_at(&v->reversals, i);
        if (r->seen)
            continue;
        char text[KEY_TEXT_BYTES];
        verify_key_text(&r->key, text, sizeof text);
        rc = verify_violation(v, "%s was reversed by entry %llu but has no reversal record", text,
                              (unsigned long long)r->first_seq);
    }
    return rc;
}
