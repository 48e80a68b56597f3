/* The audit's re-derivation: each journal entry recomputed from the entries before it,
 * mirroring rules.c, and the partner and member records compared with what the journal
 * says, both ways. Refunds, voids and reversals ahead are in verify_reversals.c.
 *
 *   partner-add  the partner record at its created_seq; the contract comes from the
 *                ENTRY (rate, currency), never from the partners database
 *   enroll       the member record at its created_seq; nothing sets `frozen` yet
 *   earn         points = amount_points_for(amount, exponent, rate of the contract in
 *                force at the entry's time; verify_settle.c keeps the contracts)
 *   burn         points within the per-request limit; the member's balance covers them
 *                (verify_accounts.c keeps the running balances)
 *   refund/void  points from the original (found by its idempotency key) and what the
 *                refunds and voids before it gave back, exactly as rules.c computes them
 *   ahead        a tombstone under the original's key that names this entry
 *
 * Memory: one vpartner_t per partner; members are looked up in their database.
 *
 * The partner added by a partner-add entry is not a field of the entry (rules.c keys the
 * entry by the operator's request): it is proved by rebuilding the operator's request
 * from the entry and the partner record and comparing its hash with the entry's
 * chain-covered request hash. */
#include "verify_internal.h"

#include "amount.h"
#include "errors.h"

#include <stdio.h>
#include <string.h>

/* Earn rates are thousandths: shown with three decimals (EARN_RATE_SCALE is 10^3). */
#define RATE_DECIMALS 3
#define RATE_TEXT_BYTES AMOUNT_TEXT_BYTES

static const char *kind_name(const journal_entry_t *e) { return ledger_entry_kind_name(e->kind); }

/* ---- partners ---------------------------------------------------------------------- */

static int visit_partner(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    Coalition__PartnerRecord *rec =
        coalition__partner_record__unpack(NULL, val->mv_size, val->mv_data);
    if (rec == NULL)
        return verify_violation(v, "unreadable partner record");
    vpartner_t *p = NULL;
    int rc = CL_OK;
    if (k->mv_size != strlen(rec->partner_id) || memcmp(k->mv_data, rec->partner_id, k->mv_size))
        rc = verify_violation(v, "partner record under key %.*s names partner %s", (int)k->mv_size,
                              (const char *)k->mv_data, rec->partner_id);
    else if (!wire_id_valid(rec->partner_id, PARTNER_ID_LEN_MAX))
        rc = verify_violation(v, "partner record with a malformed partner id");
    else if (strlen(rec->currency) >= CURRENCY_CODE_BYTES)
        rc = verify_violation(v, "partner record %s has no valid currency", rec->partner_id);
    else
        rc = vmap_insert(&v->partners, k->mv_data, k->mv_size, (void **)&p);
    if (rc == CL_OK) {
        p->record_rate_milli = rec->earn_rate_milli;
        snprintf(p->record_currency, sizeof p->record_currency, "%s", rec->currency);
        p->record_created_seq = rec->created_seq;
        if (rec->limits != NULL) {
            p->record_limits.max_amount_minor = rec->limits->max_amount_minor;
            p->record_limits.max_points = rec->limits->max_points;
            p->record_limits.burns_per_member_minute = rec->limits->burns_per_member_minute;
            p->record_limits.requests_per_second = rec->limits->requests_per_second;
        }
    }
    coalition__partner_record__free_unpacked(rec, NULL);
    return rc;
}

int verify_load_partners(verify_t *v)
{
    return store_walk(v->txn, v->ledger->db_partners, NULL, visit_partner, v);
}

/* Partners are few: a linear scan per partner-add entry. */
static vpartner_t *partner_created_at(const verify_t *v, uint64_t seq)
{
    for (size_t i = 0; i < v->partners.count; i++) {
        vpartner_t *p = vmap_at(&v->partners, i);
        if (p->record_created_seq == seq)
            return p;
    }
    return NULL;
}

int verify_expect_no_moves(verify_t *v, const journal_entry_t *e)
{
    if (e->n_postings != 0 || e->points != 0)
        return verify_violation(v, "entry %llu (%s) moves points; a %s moves none",
                                (unsigned long long)e->seq, kind_name(e), kind_name(e));
    return CL_OK;
}

static int contract_differs(verify_t *v, const vpartner_t *p, const journal_entry_t *e)
{
    char record_rate[RATE_TEXT_BYTES], entry_rate[RATE_TEXT_BYTES];
    amount_format_minor(p->record_rate_milli, RATE_DECIMALS, record_rate, sizeof record_rate);
    amount_format_minor(e->earn_rate_milli, RATE_DECIMALS, entry_rate, sizeof entry_rate);
    return verify_violation(v,
                            "partner %s: its record says %s points per %s, its partner-add "
                            "entry %llu says %s points per %s",
                            p->id.bytes, record_rate, p->record_currency,
                            (unsigned long long)e->seq, entry_rate, e->currency);
}

static int rederive_partner_add(verify_t *v, const journal_entry_t *e)
{
    if (strcmp(e->partner_id, OPERATOR_PARTNER_ID) != 0)
        return verify_violation(v, "entry %llu adds a partner but comes from %s, not the operator",
                                (unsigned long long)e->seq, e->partner_id);
    if (e->earn_rate_milli <= 0 || e->earn_rate_milli > EARN_RATE_MILLI_MAX ||
        amount_currency_exponent(e->currency) < 0)
        return verify_violation(v,
                                "entry %llu adds a partner at %lld thousandths per %s: not a "
                                "valid contract",
                                (unsigned long long)e->seq, (long long)e->earn_rate_milli,
                                e->currency);
    vpartner_t *p = partner_created_at(v, e->seq);
    if (p == NULL)
        return verify_violation(v, "partner-add entry %llu (%s/%s/%s) has no partner record",
                                (unsigned long long)e->seq, e->partner_id, e->site_id, e->txn_id);
    if (strcmp(e->added_partner_id, p->id.bytes) != 0)
        return verify_violation(v,
                                "partner record %s claims partner-add entry %llu, which "
                                "added another partner",
                                p->id.bytes, (unsigned long long)e->seq);
    if (p->record_rate_milli != e->earn_rate_milli || strcmp(p->record_currency, e->currency))
        return contract_differs(v, p, e);
    p->added_seq = e->seq;
    p->rate_milli = e->earn_rate_milli;
    snprintf(p->currency, sizeof p->currency, "%s", e->currency);
    char id[PARTNER_ID_LEN_MAX + 1]; /* visit_partner checked the length */
    memcpy(id, p->id.bytes, p->id.len + 1);
    char issued[ACCOUNT_NAME_BYTES_MAX], redeemed[ACCOUNT_NAME_BYTES_MAX];
    snprintf(issued, sizeof issued, ACCOUNT_ISSUED_FMT, id);
    snprintf(redeemed, sizeof redeemed, ACCOUNT_REDEEMED_FMT, id);
    int rc = vaccounts_open(v, issued, e->seq);
    return rc == CL_OK ? vaccounts_open(v, redeemed, e->seq) : rc;
}

/* The sender of an earn, burn or reversal: a partner added by an earlier entry. */
int verify_partner_in_force(verify_t *v, const journal_entry_t *e, const vpartner_t **out)
{
    const vpartner_t *p = vmap_find(&v->partners, e->partner_id, strlen(e->partner_id));
    if (p == NULL || p->added_seq == 0 || p->added_seq >= e->seq)
        return verify_violation(v, "entry %llu (%s) comes from %s, which no earlier entry added",
                                (unsigned long long)e->seq, kind_name(e), e->partner_id);
    *out = p;
    return CL_OK;
}

/* ---- members, earns and burns ------------------------------------------------------- */

static int rederive_enroll(verify_t *v, const journal_entry_t *e)
{
    const vpartner_t *sender = NULL;
    int rc = strcmp(e->partner_id, OPERATOR_PARTNER_ID) == 0
                 ? CL_OK
                 : verify_partner_in_force(v, e, &sender);
    if (rc != CL_OK)
        return rc;
    if (!wire_id_valid(e->member_id, MEMBER_ID_LEN_MAX))
        return verify_violation(v, "entry %llu enrols a malformed member id",
                                (unsigned long long)e->seq);
    Coalition__MemberRecord *m = NULL;
    rc = ledger_get_record(v->txn, v->ledger->db_members, e->member_id, strlen(e->member_id),
                           &coalition__member_record__descriptor, (ProtobufCMessage **)&m);
    if (rc == CL_ERR_NOT_FOUND)
        return verify_violation(v, "enrolment of %s at entry %llu has no member record",
                                e->member_id, (unsigned long long)e->seq);
    if (rc != CL_OK)
        return rc;
    bool same = strcmp(m->member_id, e->member_id) == 0 && m->created_seq == e->seq;
    uint64_t created_seq = m->created_seq;
    coalition__member_record__free_unpacked(m, NULL);
    if (!same)
        return verify_violation(v,
                                "member record %s says it was created by entry %llu, its "
                                "enrolment is entry %llu",
                                e->member_id, (unsigned long long)created_seq,
                                (unsigned long long)e->seq);
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, e->member_id);
    return vaccounts_open(v, account, e->seq);
}

/* Exactly the two postings move_points writes: `from` -points, then `to` +points. */
int verify_expect_move(verify_t *v, const journal_entry_t *e, const char *from, const char *to,
                       int64_t points)
{
    if (e->n_postings == MOVE_POSTINGS && strcmp(e->postings[0]->account, from) == 0 &&
        e->postings[0]->delta == -points && strcmp(e->postings[1]->account, to) == 0 &&
        e->postings[1]->delta == points)
        return CL_OK;
    return verify_violation(v, "entry %llu (%s %s/%s/%s) should move %lld points from %s to %s",
                            (unsigned long long)e->seq, kind_name(e), e->partner_id, e->site_id,
                            e->txn_id, (long long)points, from, to);
}

static int earn_points_differ(verify_t *v, const journal_entry_t *e, const vpartner_t *p,
                              const settle_contract_t *c, int64_t points)
{
    char amount[AMOUNT_TEXT_BYTES], rate[RATE_TEXT_BYTES];
    amount_format_minor(e->amount_minor, amount_currency_exponent(e->currency), amount,
                        sizeof amount);
    amount_format_minor(c->earn_rate_milli, RATE_DECIMALS, rate, sizeof rate);
    return verify_violation(v,
                            "entry %llu: an earn of %s %s at %s's %s points per %s is %lld "
                            "points, the entry says %lld",
                            (unsigned long long)e->seq, amount, e->currency, p->id.bytes, rate,
                            p->currency, (long long)points, (long long)e->base_points);
}

/* An earn's moves: its base points, then each bonus, from the partner to the member;
 * its points are their sum (the bonuses themselves: verify_earning.c). */
static int expect_earn_moves(verify_t *v, const journal_entry_t *e, const char *issued,
                             const char *member)
{
    int64_t sum = e->base_points;
    bool ok =
        e->n_bonuses <= BONUSES_PER_EARN_MAX && e->n_postings == MOVE_POSTINGS * (1 + e->n_bonuses);
    for (size_t i = 0; ok && i < e->n_postings; i += MOVE_POSTINGS) {
        int64_t x = i == 0 ? e->base_points : e->bonuses[i / MOVE_POSTINGS - 1]->points;
        ok = strcmp(e->postings[i]->account, issued) == 0 && e->postings[i]->delta == -x &&
             strcmp(e->postings[i + 1]->account, member) == 0 && e->postings[i + 1]->delta == x &&
             (i == 0 || (x > 0 && x <= POINTS_MAX));
        if (i > 0)
            sum += x;
    }
    if (ok && sum == e->points && e->points <= POINTS_MAX)
        return verify_verify_earning(v, e);
    return verify_violation(v,
                            "entry %llu: an earn should move its base points and each bonus "
                            "from %s to %s, %lld in all",
                            (unsigned long long)e->seq, issued, member, (long long)e->points);
}

static int rederive_earn(verify_t *v, const journal_entry_t *e)
{
    const vpartner_t *p = NULL;
    int rc = verify_partner_in_force(v, e, &p);
    if (rc != CL_OK)
        return rc;
    const settle_contract_t *c = verify_contract_at(v, p, e->time_ms);
    if (c == NULL)
        return verify_violation(v, "entry %llu: an earn at %s before any contract of it",
                                (unsigned long long)e->seq, e->partner_id);
    if (strcmp(e->currency, c->currency) != 0)
        return verify_violation(v, "entry %llu: an earn in %s at %s, whose contract is in %s",
                                (unsigned long long)e->seq, e->currency, e->partner_id,
                                c->currency);
    int64_t points = 0;
    int exponent = amount_currency_exponent(e->currency);
    if (e->amount_minor <= 0 || e->amount_minor > AMOUNT_MINOR_MAX ||
        amount_points_for(e->amount_minor, exponent, c->earn_rate_milli, &points) != CL_OK ||
        points > POINTS_MAX)
        return verify_violation(v,
                                "entry %llu: an earn of %lld minor units, or its points, "
                                "exceed the per-request limits",
                                (unsigned long long)e->seq, (long long)e->amount_minor);
    if (e->base_points != points)
        return earn_points_differ(v, e, p, c, points);
    ledger_limits_t limits;
    verify_limits_in_force(p, &limits);
    if (e->amount_minor > limits.max_amount_minor)
        return verify_violation(v,
                                "entry %llu: an earn of %lld minor units over %s's limit of %lld",
                                (unsigned long long)e->seq, (long long)e->amount_minor,
                                e->partner_id, (long long)limits.max_amount_minor);
    char issued[ACCOUNT_NAME_BYTES_MAX], member[ACCOUNT_NAME_BYTES_MAX];
    snprintf(issued, sizeof issued, ACCOUNT_ISSUED_FMT, e->partner_id);
    ledger_account_member(member, sizeof member, e->member_id);
    rc = verify_card_earn_burn(v, e);
    return rc == CL_OK ? expect_earn_moves(v, e, issued, member) : rc;
}

static int rederive_burn(verify_t *v, const journal_entry_t *e)
{
    const vpartner_t *p = NULL;
    int rc = verify_partner_in_force(v, e, &p);
    if (rc != CL_OK)
        return rc;
    if (e->points <= 0 || e->points > POINTS_MAX)
        return verify_violation(v,
                                "entry %llu: a burn of %lld points is outside the "
                                "per-request limits",
                                (unsigned long long)e->seq, (long long)e->points);
    ledger_limits_t limits;
    verify_limits_in_force(p, &limits);
    if (e->points > limits.max_points)
        return verify_violation(v, "entry %llu: a burn of %lld points over %s's limit of %lld",
                                (unsigned long long)e->seq, (long long)e->points, e->partner_id,
                                (long long)limits.max_points);
    char redeemed[ACCOUNT_NAME_BYTES_MAX], member[ACCOUNT_NAME_BYTES_MAX];
    snprintf(redeemed, sizeof redeemed, ACCOUNT_REDEEMED_FMT, e->partner_id);
    ledger_account_member(member, sizeof member, e->member_id);
    rc = verify_card_earn_burn(v, e);
    return rc == CL_OK ? verify_expect_move(v, e, member, redeemed, e->points) : rc;
}

int verify_rederive_entry(verify_t *v, const journal_entry_t *e)
{
    switch (e->kind) {
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_ADD:
        return verify_expect_no_moves(v, e) == CL_OK ? rederive_partner_add(v, e) : CL_ERR_CORRUPT;
    case COALITION__ENTRY_KIND__ENTRY_ENROLL:
        return verify_expect_no_moves(v, e) == CL_OK ? rederive_enroll(v, e) : CL_ERR_CORRUPT;
    case COALITION__ENTRY_KIND__ENTRY_EARN: return rederive_earn(v, e);
    case COALITION__ENTRY_KIND__ENTRY_BURN: return rederive_burn(v, e);
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN: return verify_rederive_reversal(v, e);
    case COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD: return verify_rederive_ahead(v, e);
    case COALITION__ENTRY_KIND__ENTRY_KEY_ADD:
    case COALITION__ENTRY_KIND__ENTRY_KEY_REVOKE:
        return verify_expect_no_moves(v, e) == CL_OK ? verify_rederive_key(v, e) : CL_ERR_CORRUPT;
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_LIMITS:
        return verify_expect_no_moves(v, e) == CL_OK ? verify_rederive_limits(v, e)
                                                     : CL_ERR_CORRUPT;
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP: /* points, no postings: verify_settle.c */
    case COALITION__ENTRY_KIND__ENTRY_CONTRACT_SET:
    case COALITION__ENTRY_KIND__ENTRY_WINDOW_CLOSE: return CL_OK;
    case COALITION__ENTRY_KIND__ENTRY_SETTLEMENT_CONFIG: return verify_expect_no_moves(v, e);
    case COALITION__ENTRY_KIND__ENTRY_BANK_ADD:
    case COALITION__ENTRY_KIND__ENTRY_CARD_ENROL:
    case COALITION__ENTRY_KIND__ENTRY_CARD_UNLINK:
    case COALITION__ENTRY_KIND__ENTRY_CARD_REPLACE:
    case COALITION__ENTRY_KIND__ENTRY_UNCLAIMED_LAPSE:
    case COALITION__ENTRY_KIND__ENTRY_CARD_SETTINGS: return verify_rederive_card(v, e);
    case COALITION__ENTRY_KIND__ENTRY_EXPIRY:
    case COALITION__ENTRY_KIND__ENTRY_EXPIRY_POLICY: return CL_OK; /* verify_lots_entry */
    case COALITION__ENTRY_KIND__ENTRY_TIER_SETTINGS:
    case COALITION__ENTRY_KIND__ENTRY_RULE_ADD:
    case COALITION__ENTRY_KIND__ENTRY_RULE_END: return CL_OK; /* verify_earning_entry */
    default:
        return verify_violation(v, "entry %llu has unknown kind %d", (unsigned long long)e->seq,
                                (int)e->kind);
    }
}

/* ---- records against the journal ---------------------------------------------------- */
/* A member record names the enrolment that created it; nothing may freeze it yet. */
static int check_member_record(verify_t *v, const MDB_val *k, const Coalition__MemberRecord *m)
{
    if (k->mv_size != strlen(m->member_id) || memcmp(k->mv_data, m->member_id, k->mv_size))
        return verify_violation(v, "member record under key %.*s names member %s", (int)k->mv_size,
                                (const char *)k->mv_data, m->member_id);
    if (m->created_seq == 0 || m->created_seq > v->entries)
        return verify_violation(v, "member record %s names entry %llu, not in the journal",
                                m->member_id, (unsigned long long)m->created_seq);
    journal_entry_t *e = NULL;
    int rc = ledger_get_entry(v->ledger, v->txn, m->created_seq, &e);
    if (rc != CL_OK)
        return rc;
    /* An enrolment, a card's first earn (its unclaimed account) or a bank's enrolment of
     * a card for a customer it had no member for. */
    bool enrols = (e->kind == COALITION__ENTRY_KIND__ENTRY_ENROLL ||
                   e->kind == COALITION__ENTRY_KIND__ENTRY_EARN ||
                   e->kind == COALITION__ENTRY_KIND__ENTRY_CARD_ENROL) &&
                  strcmp(e->member_id, m->member_id) == 0;
    coalition__journal_entry__free_unpacked(e, NULL);
    if (!enrols)
        return verify_violation(v, "member record %s names entry %llu, which does not enrol it",
                                m->member_id, (unsigned long long)m->created_seq);
    if (m->frozen)
        return verify_violation(v, "member %s is frozen without a journal entry", m->member_id);
    return verify_unclaimed_record(v, m);
}

static int visit_member_record(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    Coalition__MemberRecord *m = coalition__member_record__unpack(NULL, val->mv_size, val->mv_data);
    if (m == NULL)
        return verify_violation(v, "unreadable member record");
    int rc = check_member_record(v, k, m);
    coalition__member_record__free_unpacked(m, NULL);
    return rc;
}

static int check_partner_records(verify_t *v)
{
    for (size_t i = 0; i < v->partners.count; i++) {
        const vpartner_t *p = vmap_at(&v->partners, i);
        if (p->added_seq == 0)
            return verify_violation(v,
                                    "partner record %s (created by entry %llu) has no "
                                    "partner-add entry",
                                    p->id.bytes, (unsigned long long)p->record_created_seq);
        int rc = verify_partner_limits(v, p);
        if (rc != CL_OK)
            return rc;
    }
    return CL_OK;
}

int verify_records(verify_t *v)
{
    int rc = verify_reversal_records(v);
    if (rc == CL_OK)
        rc = store_walk(v->txn, v->ledger->db_members, NULL, visit_member_record, v);
    if (rc == CL_OK)
        rc = check_partner_records(v);
    if (rc == CL_OK)
        rc = verify_key_records(v);
    if (rc == CL_OK)
        rc = verify_card_records(v);
    return rc;
}
