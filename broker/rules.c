/* What each request does to the ledger: checks in the order a payments person expects
 * (partner 03, member 14/62, original 25, amounts 13/61, funds 51) and, on approval,
 * the account moves. Every move debits one account and credits another by the same
 * points, so entries balance; a member account is never taken below zero. Any write
 * here happens in the request's nested transaction, so a decline leaves no trace. */
#include "ledger_internal.h"

#include "amount.h"
#include "errors.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define decline rules_decline

static bool declined(const decision_t *d) { return d->code != RC_APPROVED; }

static void set_member(decision_t *d, const char *member_id)
{
    snprintf(d->member_id, sizeof d->member_id, "%s", member_id);
}

/* 03 unless the sender is a known partner. The operator has no accounts: it may only
 * enrol (wire_validate refuses the rest first; this keeps the rules safe without it). */
static int check_partner(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d,
                         Coalition__PartnerRecord **out)
{
    if (out != NULL)
        *out = NULL;
    if (strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0) {
        if (env->body_case != COALITION__ENVELOPE__BODY_ENROLL)
            decline(d, RC_NOT_PERMITTED, "the operator sends no %s requests", wire_body_name(env));
        return CL_OK;
    }
    Coalition__PartnerRecord *p = NULL;
    int rc = ledger_get_record(txn, self->db_partners, env->partner_id, strlen(env->partner_id),
                               &coalition__partner_record__descriptor, (ProtobufCMessage **)&p);
    if (rc == CL_ERR_NOT_FOUND) {
        bool bank = false;
        rc = cards_is_bank(self, txn, env->partner_id, &bank);
        if (bank)
            decline(d, RC_NOT_PERMITTED, "bank %s may not send %s requests", env->partner_id,
                    wire_body_name(env));
        else
            decline(d, RC_UNKNOWN_PARTNER, "unknown partner %s", env->partner_id);
        return rc;
    }
    if (rc == CL_OK && out != NULL)
        *out = p;
    else
        coalition__partner_record__free_unpacked(p, NULL);
    return rc;
}

/* 14 for an unknown member, 62 for a frozen one unless `reversal`: a void or refund only
 * undoes what was done, and the agent's safety void of a burn must never be refused. */
static int check_member_as(ledger_t *self, MDB_txn *txn, const char *member_id, decision_t *d,
                           bool reversal)
{
    Coalition__MemberRecord *m = NULL;
    int rc = ledger_get_record(txn, self->db_members, member_id, strlen(member_id),
                               &coalition__member_record__descriptor, (ProtobufCMessage **)&m);
    set_member(d, member_id);
    if (rc == CL_ERR_NOT_FOUND) {
        rules_decline_msg(d, RC_UNKNOWN_MEMBER, MSG_R_UNKNOWN_MEMBER, &member_id, 1);
        return CL_OK;
    }
    if (rc != CL_OK)
        return rc;
    if (m->frozen && !reversal)
        rules_decline_msg(d, RC_FROZEN, MSG_R_FROZEN, &member_id, 1);
    coalition__member_record__free_unpacked(m, NULL);
    if (declined(d))
        return CL_OK;
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, member_id);
    return ledger_get_balance(self, txn, account, &d->balance);
}

static int check_member(ledger_t *self, MDB_txn *txn, const char *member_id, decision_t *d)
{
    return check_member_as(self, txn, member_id, d, false);
}

static bool is_member_account(const char *account)
{
    return strncmp(account, MEMBER_PREFIX, strlen(MEMBER_PREFIX)) == 0;
}

/* Debit `from`, credit `to` by `points`; records both postings. CL_ERR_OVERFLOW when a
 * balance would leave int64, before anything is written. */
static int move_points(ledger_t *self, MDB_txn *txn, decision_t *d, const char *from,
                       const char *to, int64_t points)
{
    assert(points >= 0 && points <= POINTS_MAX);
    assert(strcmp(from, to) != 0 && d->posting_count + MOVE_POSTINGS <= DECISION_POSTINGS_MAX);
    int64_t from_bal, to_bal, from_after, to_after;
    int rc = ledger_get_balance(self, txn, from, &from_bal);
    if (rc == CL_OK)
        rc = ledger_get_balance(self, txn, to, &to_bal);
    if (rc == CL_ERR_NOT_FOUND)
        return CL_ERR_CORRUPT; /* accounts are created with their member or partner */
    if (rc != CL_OK)
        return rc;
    if (__builtin_sub_overflow(from_bal, points, &from_after) ||
        __builtin_add_overflow(to_bal, points, &to_after))
        return CL_ERR_OVERFLOW;
    if (is_member_account(from) && from_after < 0)
        return CL_ERR_CORRUPT; /* callers decline 51 before getting here */
    rc = ledger_put_balance(self, txn, from, from_after);
    if (rc == CL_OK)
        rc = ledger_put_balance(self, txn, to, to_after);
    if (rc != CL_OK)
        return rc;
    const char *names[MOVE_POSTINGS] = {from, to};
    const int64_t deltas[MOVE_POSTINGS] = {-points, points};
    size_t at = d->posting_count;
    for (size_t i = 0; i < MOVE_POSTINGS; i++) {
        snprintf(d->accounts[at + i], ACCOUNT_NAME_BYTES_MAX, "%s", names[i]);
        coalition__posting__init(&d->postings[at + i]);
        d->postings[at + i].account = d->accounts[at + i];
        d->postings[at + i].delta = deltas[i];
    }
    d->posting_count = at + MOVE_POSTINGS;
    d->balance = is_member_account(from) ? from_after : to_after;
    assert(d->postings[at].delta + d->postings[at + 1].delta == 0); /* the move balances */
    assert(d->balance >= 0 || !is_member_account(from));
    return CL_OK;
}

int rules_move_points(ledger_t *self, MDB_txn *txn, decision_t *d, const char *from, const char *to,
                      int64_t points)
{
    return move_points(self, txn, d, from, to, points);
}

int rules_new_member(ledger_t *self, MDB_txn *txn, const Coalition__MemberRecord *m)
{
    assert(wire_id_valid(m->member_id, MEMBER_ID_LEN_MAX) && m->created_seq == 0);
    Coalition__MemberRecord rec = *m;
    rec.created_seq = self->batch_seq + 1;
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, m->member_id);
    int rc =
        ledger_put_record(txn, self->db_members, m->member_id, strlen(m->member_id), &rec.base);
    return rc == CL_OK ? ledger_put_balance(self, txn, account, 0) : rc;
}

/* move_points, turning an overflow into decline 61. */
static int move_or_decline(ledger_t *self, MDB_txn *txn, decision_t *d, const char *from,
                           const char *to, int64_t points)
{
    int rc = move_points(self, txn, d, from, to, points);
    if (rc == CL_ERR_OVERFLOW) {
        decline(d, RC_EXCEEDS_LIMIT, "balance would exceed the points limit");
        return CL_OK;
    }
    return rc;
}

/* The contract in force for the sender now; a partner has one from its partner-add on. */
static int contract_now(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d,
                        Coalition__Contract **out)
{
    int rc = settle_contract_at(self, txn, env->partner_id, d->now_ms, out);
    return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc;
}

/* Points for the earn's money under contract `c`: 13 for another currency, 61 over the
 * partner's money limit or the points limit. */
static int64_t earn_points(const Coalition__EarnRequest *r, const Coalition__PartnerRecord *p,
                           const Coalition__Contract *c, decision_t *d)
{
    int64_t points = 0;
    if (strcmp(r->currency, c->currency) != 0) {
        decline(d, RC_INVALID_AMOUNT, "partner %s earns in %s, not %s", p->partner_id, c->currency,
                r->currency);
        return 0;
    }
    ledger_limits_t limits;
    ledger_limits_effective(p->limits, &limits);
    if (r->amount_minor > limits.max_amount_minor) {
        decline(d, RC_EXCEEDS_LIMIT, "amount over partner %s's limit of %lld minor units a request",
                p->partner_id, (long long)limits.max_amount_minor);
        return 0;
    }
    int exponent = amount_currency_exponent(r->currency);
    if (amount_points_for(r->amount_minor, exponent, c->earn_rate_milli, &points) != CL_OK ||
        points > POINTS_MAX) {
        decline(d, RC_EXCEEDS_LIMIT, "points for this amount exceed the limit");
        return 0;
    }
    assert(points >= 0 && points <= POINTS_MAX);
    return points;
}

void rules_balance_text(decision_t *d)
{
    char bal[AMOUNT_TEXT_BYTES], avail[AMOUNT_TEXT_BYTES], pend[AMOUNT_TEXT_BYTES];
    rules_points_text(d, d->balance, bal);
    rules_points_text(d, d->available, avail);
    rules_points_text(d, d->pending, pend);
    const char *a[] = {bal, avail, pend};
    rules_text(d, d->pending > 0 ? MSG_BALANCE_SPLIT : MSG_BALANCE, a, 3);
}

/* The split of a member's balance for the reply (after the request's changes). */
static int split_balance(ledger_t *self, MDB_txn *txn, const char *member, decision_t *d)
{
    return lots_split(self, txn, member, d->balance, d->now_ms, &d->available, &d->pending);
}

/* Write the holder back, then the reply's split of d->balance: read from the lots only
 * when the member may have pending points (its record says until when). `then`, if set,
 * runs between the two (it rewrites the member record). */
static int close_and_split(ledger_t *self, MDB_txn *txn, lot_holder_t *h, decision_t *d,
                           int (*then)(ledger_t *, MDB_txn *, const char *, decision_t *))
{
    bool pending = h->rec->pending_until_ms > d->now_ms;
    char member[MEMBER_ID_LEN_MAX + 1];
    snprintf(member, sizeof member, "%s", h->member);
    int rc = lots_close(self, txn, h, d->now_ms);
    if (rc == CL_OK && then != NULL)
        rc = then(self, txn, member, d);
    if (rc != CL_OK || pending)
        return rc == CL_OK ? split_balance(self, txn, member, d) : rc;
    d->available = d->balance;
    d->pending = 0;
    assert(d->available + d->pending == d->balance);
    return CL_OK;
}

/* An earn's lot: its issuer, the expiry the policy in force gives it and the partner's
 * return period; the earn is the member's activity. */
static int earn_lot(ledger_t *self, MDB_txn *txn, const char *partner, const Coalition__Contract *c,
                    lot_holder_t *h, int64_t points, decision_t *d)
{
    int64_t term_s = 0, inactivity_s = 0;
    int rc = expiry_policy_at(self, txn, d->now_ms, &term_s, &inactivity_s);
    if (rc == CL_OK && points > 0) {
        lot_t lot = {.seq = self->batch_seq + 1, .points = points, .earn_ms = d->now_ms};
        lot.expiry_ms = term_s > 0 ? d->now_ms + term_s * 1000 : LOT_NO_EXPIRY_MS;
        if (c->return_period_seconds > 0)
            lot.pending_until_ms = d->now_ms + c->return_period_seconds * 1000;
        snprintf(lot.issuer, sizeof lot.issuer, "%s", partner);
        rc = lots_add(self, txn, h, &lot, d);
    }
    if (d->now_ms > h->rec->last_activity_ms) /* the latest, whatever the clock did */
        h->rec->last_activity_ms = d->now_ms;
    return rc;
}

/* The base move, then one per bonus, all from the partner's issued account. */
static int earn_moves(ledger_t *self, MDB_txn *txn, const char *partner, const char *who,
                      decision_t *d)
{
    char issued[ACCOUNT_NAME_BYTES_MAX], member[ACCOUNT_NAME_BYTES_MAX];
    snprintf(issued, sizeof issued, ACCOUNT_ISSUED_FMT, partner);
    ledger_account_member(member, sizeof member, who);
    int rc = move_or_decline(self, txn, d, issued, member, d->base_points);
    for (size_t i = 0; i < d->n_bonuses && rc == CL_OK && !declined(d); i++)
        rc = move_or_decline(self, txn, d, issued, member, d->bonuses[i].points);
    assert(rc != CL_OK || declined(d) || d->posting_count == MOVE_POSTINGS * (1 + d->n_bonuses));
    return rc;
}

static void earn_text(decision_t *d, const char *who)
{
    char pts[AMOUNT_TEXT_BYTES], bal[AMOUNT_TEXT_BYTES], base[AMOUNT_TEXT_BYTES],
        extra[AMOUNT_TEXT_BYTES];
    char tier[TIER_NAME_LEN_MAX + 3] = "", bonus[RECEIPT_TEXT_BYTES_MAX] = "";
    rules_points_text(d, d->points, pts);
    rules_points_text(d, d->balance, bal);
    if (d->bonus_total > 0) {
        rules_figure_text(d, d->base_points, base);
        rules_figure_text(d, d->bonus_total, extra);
        if (d->tier[0] != '\0')
            snprintf(tier, sizeof tier, ", %s", d->tier);
        const char *b[] = {base, extra, tier};
        receipt_render(d->locale, MSG_EARN_BONUS, b, 3, bonus, sizeof bonus);
    }
    const char *a[] = {pts, bonus, bal};
    if (strncmp(who, WIRE_UNCLAIMED_PREFIX, strlen(WIRE_UNCLAIMED_PREFIX)) == 0)
        rules_text(d, MSG_EARN_UNCLAIMED, a, 3);
    else
        rules_text(d, d->pending > 0 ? MSG_EARN_PENDING : MSG_EARN, a, 3);
}

/* An earn's points: the plan (tier, rules) in the member's holder, pricing of all of
 * them, the moves, its lot. */
static int earn_apply(ledger_t *self, MDB_txn *txn, const envelope_t *env,
                      const Coalition__PartnerRecord *p, const Coalition__Contract *c,
                      const char *who, int64_t base, decision_t *d)
{
    lot_holder_t h;
    int rc = lots_open(self, txn, who, &h);
    if (rc != CL_OK)
        return rc;
    if (p->ordinal >= SETTLE_PARTNERS_MAX)
        rc = CL_ERR_CORRUPT; /* read from disk */
    if (rc == CL_OK)
        rc = earning_plan(self, txn, env->partner_id, p->ordinal, &h, env->earn->amount_minor, base,
                          d);
    d->points = base + d->bonus_total;
    if (rc == CL_OK && !declined(d))
        rc = settle_price_earn(self, txn, env->partner_id, c, d->points, d);
    if (rc == CL_OK && !declined(d))
        rc = earn_moves(self, txn, env->partner_id, who, d);
    if (rc == CL_OK && !declined(d))
        rc = earn_lot(self, txn, env->partner_id, c, &h, d->points, d);
    if (rc != CL_OK || declined(d)) {
        lots_discard(&h);
        return rc;
    }
    return close_and_split(self, txn, &h, d, NULL);
}

static int apply_earn(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__EarnRequest *r = env->earn;
    Coalition__PartnerRecord *p = NULL;
    Coalition__Contract *c = NULL;
    char who[MEMBER_ID_LEN_MAX + 1];
    int rc = check_partner(self, txn, env, d, &p);
    if (rc == CL_OK && !declined(d) && r->card != NULL)
        rc = cards_resolve(self, txn, env, d);
    snprintf(who, sizeof who, "%s", d->member_id); /* by id, or the card's */
    if (rc == CL_OK && !declined(d))
        rc = check_member(self, txn, who, d);
    if (rc == CL_OK && !declined(d))
        rc = contract_now(self, txn, env, d, &c);
    if (rc != CL_OK || declined(d))
        goto out;
    int64_t base = earn_points(r, p, c, d);
    if (!declined(d))
        rc = earn_apply(self, txn, env, p, c, who, base, d);
    if (rc != CL_OK || declined(d))
        goto out;
    d->kind = COALITION__ENTRY_KIND__ENTRY_EARN;
    d->amount_minor = r->amount_minor;
    snprintf(d->currency, sizeof d->currency, "%s", r->currency);
    assert(d->points == d->base_points + d->bonus_total);
    earn_text(d, who);
out:
    coalition__contract__free_unpacked(c, NULL);
    coalition__partner_record__free_unpacked(p, NULL);
    return rc;
}

/* 61 over the partner's per-request points limit; 65 when the member has had its
 * partner's allowance of burns (at any partner) within the velocity window. */
static int check_burn_limits(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d,
                             char who[MEMBER_ID_LEN_MAX + 1])
{
    Coalition__PartnerRecord *p = NULL;
    int rc = check_partner(self, txn, env, d, &p);
    if (rc == CL_OK && !declined(d) && env->burn->card != NULL)
        rc = cards_resolve(self, txn, env, d);
    snprintf(who, MEMBER_ID_LEN_MAX + 1, "%s", d->member_id); /* by id, or the card's */
    if (rc != CL_OK || declined(d)) {
        coalition__partner_record__free_unpacked(p, NULL);
        return rc;
    }
    ledger_limits_t limits;
    ledger_limits_effective(p->limits, &limits);
    coalition__partner_record__free_unpacked(p, NULL);
    if (env->burn->points > limits.max_points) {
        decline(d, RC_EXCEEDS_LIMIT, "burn over partner %s's limit of %lld points a request",
                env->partner_id, (long long)limits.max_points);
        return CL_OK;
    }
    rc = check_member(self, txn, who, d);
    if (rc != CL_OK || declined(d))
        return rc;
    return access_velocity_check(self, txn, who, limits.burns_per_member_minute, d);
}

/* The points a burn takes from the member's available lots, or a decline: 51 when
 * fewer are available than asked (and no partial burn is allowed or none is available),
 * 61 when the points asked lie in more lots than one entry lists. */
static int burn_from_lots(ledger_t *self, MDB_txn *txn, lot_holder_t *h,
                          const Coalition__BurnRequest *r, decision_t *d, int64_t *points,
                          bool *partial)
{
    lots_result_t res;
    *points = 0;
    *partial = false;
    int rc = lots_burn(self, txn, h, r->points, d, &res);
    if (rc != CL_OK)
        return rc;
    char avail[AMOUNT_TEXT_BYTES], pend[AMOUNT_TEXT_BYTES], want[AMOUNT_TEXT_BYTES];
    *points = res.taken;
    if (res.taken == r->points)
        return CL_OK;
    rules_points_text(d, res.available, avail);
    rules_points_text(d, res.pending, pend);
    rules_points_text(d, r->points, want);
    if (res.full && !r->allow_partial)
        decline(d, RC_EXCEEDS_LIMIT, "%s points lie in more than %d lots; burn at most %lld now",
                want, LOTS_PER_ENTRY_MAX, (long long)res.taken);
    else if (!r->allow_partial || res.taken == 0) {
        /* The reply says what could be burned: the split of the unchanged balance. */
        d->available = res.available;
        d->pending = res.pending;
        const char *a[] = {avail, pend, want}, *b[] = {avail, want};
        if (res.pending > 0)
            rules_decline_msg(d, RC_INSUFFICIENT_POINTS, MSG_R_INSUFFICIENT_PEND, a, 3);
        else
            rules_decline_msg(d, RC_INSUFFICIENT_POINTS, MSG_R_INSUFFICIENT, b, 2);
    } else
        *partial = true;
    if (declined(d))
        *points = 0;
    assert(*points >= 0 && *points <= r->points);
    return CL_OK;
}

static int burn_text(decision_t *d, const Coalition__BurnRequest *r)
{
    char pts[AMOUNT_TEXT_BYTES], bal[AMOUNT_TEXT_BYTES], want[AMOUNT_TEXT_BYTES];
    rules_points_text(d, d->points, pts);
    rules_points_text(d, d->balance, bal);
    rules_points_text(d, r->points, want);
    const char *partial[] = {pts, want, bal}, *full[] = {pts, bal};
    if (d->code == RC_PARTIAL)
        rules_text(d, MSG_BURN_PARTIAL, partial, 3);
    else
        rules_text(d, MSG_BURN, full, 2);
    return CL_OK;
}

static int apply_burn(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__BurnRequest *r = env->burn;
    char redeemed[ACCOUNT_NAME_BYTES_MAX], member[ACCOUNT_NAME_BYTES_MAX];
    char who[MEMBER_ID_LEN_MAX + 1];
    int rc = check_burn_limits(self, txn, env, d, who);
    if (rc != CL_OK || declined(d))
        return rc;
    if (d->balance < 0)
        return CL_ERR_CORRUPT; /* read from disk: a member is never below zero */
    lot_holder_t h;
    rc = lots_open(self, txn, who, &h);
    if (rc != CL_OK)
        return rc;
    int64_t points = 0;
    bool partial = false;
    rc = burn_from_lots(self, txn, &h, r, d, &points, &partial);
    Coalition__Contract *c = NULL;
    if (rc == CL_OK && !declined(d))
        rc = contract_now(self, txn, env, d, &c);
    if (rc == CL_OK && !declined(d))
        rc = settle_price_burn(self, txn, env->partner_id, c, points, d);
    coalition__contract__free_unpacked(c, NULL); /* set even when it is corrupt */
    snprintf(redeemed, sizeof redeemed, ACCOUNT_REDEEMED_FMT, env->partner_id);
    ledger_account_member(member, sizeof member, who);
    if (rc == CL_OK && !declined(d))
        rc = move_or_decline(self, txn, d, member, redeemed, points);
    if (rc != CL_OK || declined(d)) {
        lots_discard(&h);
        return rc;
    }
    assert(points > 0 && points <= r->points);
    if (d->now_ms > h.rec->last_activity_ms) /* the latest, whatever the clock did */
        h.rec->last_activity_ms = d->now_ms;
    /* The burn's time for the velocity limit goes into the member record. */
    rc = close_and_split(self, txn, &h, d, access_velocity_record);
    d->code = partial ? RC_PARTIAL : RC_APPROVED;
    d->kind = COALITION__ENTRY_KIND__ENTRY_BURN;
    d->points = points;
    return rc == CL_OK ? burn_text(d, r) : rc;
}

/* The original earn or burn a refund or void names, and what was given back so far.
 * `ahead`: the ledger has not seen the original; the reversal leaves a tombstone. */
typedef struct original {
    journal_entry_t *entry;
    Coalition__ReversalRecord rev;
    uint8_t key[TXN_KEY_BYTES_MAX];
    size_t key_len;
    bool ahead;
    /* Where the original's points are now: its member's account, or for an earn into a
     * card's unclaimed account, the member that claimed them or breakage after a lapse. */
    char holder[ACCOUNT_NAME_BYTES_MAX];
} original_t;

/* An original read from disk must be what rules.c writes for an earn or burn before any
 * arithmetic relies on it: points and money in range, a valid member, and its two
 * postings moving exactly its points. Otherwise the ledger is corrupt. */
static bool original_consistent(const journal_entry_t *e)
{
    bool earn = e->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
    if (e->points < 0 || e->points > POINTS_MAX || !wire_id_valid(e->member_id, MEMBER_ID_LEN_MAX))
        return false;
    if (earn ? (e->amount_minor <= 0 || e->amount_minor > AMOUNT_MINOR_MAX) : e->amount_minor != 0)
        return false;
    char member[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(member, sizeof member, e->member_id);
    if (!earn) {
        const Coalition__Posting *from = e->n_postings == MOVE_POSTINGS ? e->postings[0] : NULL;
        return from != NULL && strcmp(from->account, member) == 0 && from->delta == -e->points &&
               e->postings[1]->delta == e->points;
    }
    /* An earn: its base move, then one per bonus, each to the member. */
    if (e->n_bonuses > BONUSES_PER_EARN_MAX || e->n_postings != MOVE_POSTINGS * (1 + e->n_bonuses))
        return false;
    int64_t sum = 0;
    for (size_t i = 0; i < e->n_postings; i += MOVE_POSTINGS) {
        const Coalition__Posting *to = e->postings[i + 1];
        if (strcmp(to->account, member) != 0 || to->delta < 0 || to->delta > POINTS_MAX ||
            e->postings[i]->delta != -to->delta)
            return false;
        sum += to->delta;
    }
    return sum == e->points && e->postings[1]->delta == e->base_points;
}

/* A reversal record read from disk must fit its original before any arithmetic relies on
 * it: what was given back lies within the original, and an earn's points are the
 * cumulative share of its money. Otherwise the ledger is corrupt (the writer fails). */
static bool reversal_consistent(const original_t *o)
{
    const journal_entry_t *e = o->entry;
    const Coalition__ReversalRecord *r = &o->rev;
    if (r->reversed_minor < 0 || r->reversed_minor > e->amount_minor || r->reversed_points < 0 ||
        r->reversed_points > e->points)
        return false;
    return e->kind != COALITION__ENTRY_KIND__ENTRY_EARN ||
           r->reversed_points == amount_share(e->points, r->reversed_minor, e->amount_minor);
}

static int load_reversal(ledger_t *self, MDB_txn *txn, original_t *o)
{
    Coalition__ReversalRecord *stored = NULL;
    int rc =
        ledger_get_record(txn, self->db_reversals, o->key, o->key_len,
                          &coalition__reversal_record__descriptor, (ProtobufCMessage **)&stored);
    if (rc == CL_ERR_NOT_FOUND)
        return original_consistent(o->entry) ? CL_OK : CL_ERR_CORRUPT;
    if (rc == CL_OK) {
        o->rev.reversed_minor = stored->reversed_minor;
        o->rev.reversed_points = stored->reversed_points;
        o->rev.voided = stored->voided;
        o->rev.complete = stored->complete;
    }
    coalition__reversal_record__free_unpacked(stored, NULL);
    if (rc == CL_OK && (!original_consistent(o->entry) || !reversal_consistent(o)))
        return CL_ERR_CORRUPT;
    return rc;
}

/* Look the original up by its key. Not seen: o->ahead. A tombstone (another reversal got
 * there first): 12. A remembered decline: 25. Otherwise its entry and reversal record. */
static int holder_claimed(ledger_t *self, MDB_txn *txn, original_t *o, decision_t *d,
                          const char *member)
{
    ledger_account_member(o->holder, sizeof o->holder, member);
    return check_member_as(self, txn, member, d, true);
}

/* The account an original's points are in now (see original_t.holder), checked as
 * check_member_as does for a reversal; d->balance is that account's. */
static int holder_of_original(ledger_t *self, MDB_txn *txn, original_t *o, decision_t *d)
{
    const char *member = o->entry->member_id;
    ledger_account_member(o->holder, sizeof o->holder, member);
    if (strncmp(member, WIRE_UNCLAIMED_PREFIX, strlen(WIRE_UNCLAIMED_PREFIX)) != 0)
        return check_member_as(self, txn, member, d, true);
    Coalition__MemberRecord *m = NULL;
    int rc = ledger_get_record(txn, self->db_members, member, strlen(member),
                               &coalition__member_record__descriptor, (ProtobufCMessage **)&m);
    if (rc != CL_OK)
        return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc; /* it earned, so it exists */
    char moved_to[MEMBER_ID_LEN_MAX + 1];
    snprintf(moved_to, sizeof moved_to, "%s", m->moved_to);
    bool lapsed = m->lapsed;
    coalition__member_record__free_unpacked(m, NULL);
    if (moved_to[0] != '\0')
        return holder_claimed(self, txn, o, d, moved_to);
    if (!lapsed)
        return check_member_as(self, txn, member, d, true);
    snprintf(o->holder, sizeof o->holder, "%s", ACCOUNT_BREAKAGE);
    set_member(d, member);
    return ledger_get_balance(self, txn, ACCOUNT_BREAKAGE, &d->balance);
}

static int load_original(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d,
                         original_t *o)
{
    const char *original_txn_id = wire_original_txn(env);
    const char *original_site_id = wire_original_site(env);
    memset(o, 0, sizeof *o);
    coalition__reversal_record__init(&o->rev);
    d->original_txn_id = original_txn_id;
    d->original_site_id = original_site_id;
    o->key_len = ledger_txn_key(o->key, env->partner_id, original_site_id, original_txn_id);
    if (o->key_len == 0)
        return CL_ERR_INVALID;
    Coalition__IdemRecord *idem = NULL;
    int rc = ledger_get_idem(self, txn, env->partner_id, original_site_id, original_txn_id, &idem);
    if (rc == CL_ERR_NOT_FOUND) {
        o->ahead = true;
        return CL_OK;
    }
    if (rc != CL_OK)
        return rc;
    uint64_t seq = idem->seq;
    bool tombstone = idem->tombstone;
    uint64_t tombstone_seq = idem->tombstone_seq;
    coalition__idem_record__free_unpacked(idem, NULL);
    if (tombstone) {
        char seq_text[AMOUNT_TEXT_BYTES];
        snprintf(seq_text, sizeof seq_text, "%llu", (unsigned long long)tombstone_seq);
        const char *a[] = {original_txn_id, seq_text};
        rules_decline_msg(d, RC_INVALID_TRANSACTION, MSG_R_ALREADY_REVERSED, a, 2);
        return CL_OK;
    }
    if (seq == 0) {
        rules_decline_msg(d, RC_ORIGINAL_NOT_FOUND, MSG_R_NOT_FOUND, &original_txn_id, 1);
        return CL_OK;
    }
    rc = ledger_get_entry(self, txn, seq, &o->entry);
    if (rc != CL_OK)
        return rc;
    if (o->entry->kind != COALITION__ENTRY_KIND__ENTRY_EARN &&
        o->entry->kind != COALITION__ENTRY_KIND__ENTRY_BURN) {
        decline(d, RC_INVALID_TRANSACTION, "%s is a %s; only earns and burns can be reversed",
                original_txn_id, ledger_entry_kind_name(o->entry->kind));
        return CL_OK;
    }
    rc = load_reversal(self, txn, o);
    if (rc == CL_OK)
        rc = holder_of_original(self, txn, o, d);
    if (rc == CL_OK && !declined(d) && o->rev.voided)
        rules_decline_msg(d, RC_INVALID_TRANSACTION, MSG_R_VOIDED, &original_txn_id, 1);
    return rc;
}

/* A reversal whose original has not arrived: approve it with nothing to move and leave a
 * tombstone under the original's key, so the original is declined whenever it comes. */
static int reverse_ahead(ledger_t *self, MDB_txn *txn, const envelope_t *env, const original_t *o,
                         decision_t *d)
{
    assert(o->ahead && o->entry == NULL);
    Coalition__IdemRecord tomb = COALITION__IDEM_RECORD__INIT;
    tomb.tombstone = true;
    tomb.tombstone_seq = self->batch_seq + 1;
    int rc = ledger_put_record(txn, self->db_idem, o->key, o->key_len, &tomb.base);
    d->kind = COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD;
    d->points = 0;
    d->balance = 0;
    d->member_id[0] = '\0';
    const char *a[] = {wire_body_name(env), d->original_txn_id};
    rules_text(d, MSG_REVERSAL_AHEAD, a, 2);
    return rc;
}

/* A reversal's lots: a burn's points go back into the lots it took them from (or new
 * ones, see lots_give_back); an earn's come out of its own lot first (lots_take_back).
 * More lots than one entry lists: 61. */
static int reversal_lots(ledger_t *self, MDB_txn *txn, const envelope_t *env, const original_t *o,
                         int64_t points, decision_t *d)
{
    const journal_entry_t *e = o->entry;
    assert(strncmp(o->holder, MEMBER_PREFIX, strlen(MEMBER_PREFIX)) == 0 && points >= 0);
    const char *member = o->holder + strlen(MEMBER_PREFIX);
    lot_holder_t h;
    int rc = lots_open(self, txn, member, &h);
    if (rc != CL_OK)
        return rc;
    if (e->kind == COALITION__ENTRY_KIND__ENTRY_BURN) {
        rc = points > 0 ? lots_give_back(self, txn, &h, e, o->rev.reversed_points, points, d)
                        : CL_OK;
    } else {
        lot_t own = {0};
        bool has_own = e->n_lots >= 1 && e->lots[0]->expiry_ms > 0;
        if (has_own) {
            own.seq = e->lots[0]->seq;
            own.part = e->lots[0]->part;
            own.expiry_ms = e->lots[0]->expiry_ms;
        }
        lots_result_t res = {0};
        bool whole = env->body_case == COALITION__ENVELOPE__BODY_VOID_REQUEST;
        int64_t after = whole ? e->amount_minor : o->rev.reversed_minor + d->amount_minor;
        /* Qualification is the earning member's: not a claimer's of unclaimed points. */
        if (strcmp(member, e->member_id) == 0)
            rc = earning_reversal(self, txn, &h, e, o->rev.reversed_minor, after, d);
        if (rc == CL_OK && points > 0)
            rc = lots_take_back(self, txn, &h, has_own ? &own : NULL, points, d, &res);
        if (rc == CL_OK && res.full)
            decline(d, RC_EXCEEDS_LIMIT, "the points to take back lie in more than %d lots",
                    LOTS_PER_ENTRY_MAX);
        else if (rc == CL_OK && res.taken != points)
            rc = CL_ERR_CORRUPT; /* the member's lots hold its balance */
    }
    if (rc == CL_ERR_OVERFLOW && d->n_lots == LOTS_PER_ENTRY_MAX) {
        decline(d, RC_EXCEEDS_LIMIT, "the points to give back lie in more than %d lots",
                LOTS_PER_ENTRY_MAX);
        rc = CL_OK;
    }
    if (rc != CL_OK || declined(d)) {
        lots_discard(&h);
        return rc;
    }
    return close_and_split(self, txn, &h, d, NULL);
}

/* What of an earn's `points` to take back comes out of breakage: its own lot's expired
 * points, once its own lot's remaining points are taken (a lapsed unclaimed account's
 * earn: all of them). */
static int earn_from_breakage(ledger_t *self, MDB_txn *txn, const original_t *o, int64_t points,
                              int64_t *out)
{
    const journal_entry_t *e = o->entry;
    *out = 0;
    if (strcmp(o->holder, ACCOUNT_BREAKAGE) == 0) {
        *out = points;
        return CL_OK;
    }
    if (e->n_lots < 1 || e->lots[0]->expiry_ms <= 0 || points == 0)
        return CL_OK;
    lot_t own = {
        .seq = e->lots[0]->seq, .part = e->lots[0]->part, .expiry_ms = e->lots[0]->expiry_ms};
    int64_t left = 0;
    int rc = lots_remaining(self, txn, o->holder + strlen(MEMBER_PREFIX), &own, &left);
    if (rc == CL_OK && left < points)
        rc = lots_expired_take(self, txn, &own, points - left, out);
    return rc;
}

/* An earn's points go back to its partner: from the member (its own lot first, then its
 * other points) and, for what of its own lot expired, out of breakage. */
static int earn_reversal_moves(ledger_t *self, MDB_txn *txn, const envelope_t *env,
                               const original_t *o, decision_t *d, int64_t points)
{
    char issued[ACCOUNT_NAME_BYTES_MAX];
    int64_t broken = 0;
    int rc = earn_from_breakage(self, txn, o, points, &broken);
    int64_t from_member = points - broken;
    assert(rc != CL_OK || (broken >= 0 && from_member >= 0));
    if (rc == CL_OK && from_member > d->balance) {
        char bal[AMOUNT_TEXT_BYTES], want[AMOUNT_TEXT_BYTES];
        rules_points_text(d, d->balance, bal);
        rules_points_text(d, from_member, want);
        decline(d, RC_INSUFFICIENT_POINTS, "member has %s points, reversal needs %s", bal, want);
    }
    if (rc != CL_OK || declined(d))
        return rc;
    snprintf(issued, sizeof issued, ACCOUNT_ISSUED_FMT, env->partner_id);
    bool holder_is_member = strcmp(o->holder, ACCOUNT_BREAKAGE) != 0;
    if (holder_is_member && (from_member > 0 || broken == 0))
        rc = move_or_decline(self, txn, d, o->holder, issued, from_member);
    int64_t balance = holder_is_member ? d->balance : 0; /* no member holds breakage */
    if (rc == CL_OK && !declined(d) && broken > 0)
        rc = move_or_decline(self, txn, d, ACCOUNT_BREAKAGE, issued, broken);
    d->balance = balance;
    d->from_breakage = broken;
    if (rc != CL_OK || declined(d) || !holder_is_member)
        return rc;
    return reversal_lots(self, txn, env, o, from_member, d);
}

/* Move `points` back: an earn's points leave the member, a burn's come back. */
static int reverse_points(ledger_t *self, MDB_txn *txn, const envelope_t *env, const original_t *o,
                          decision_t *d, int64_t points)
{
    char partner_acct[ACCOUNT_NAME_BYTES_MAX], member[ACCOUNT_NAME_BYTES_MAX];
    /* load_original checked the original before any of its points are moved back. */
    assert(o->entry != NULL && !o->ahead && original_consistent(o->entry));
    assert(points >= 0 && points <= o->entry->points);
    Coalition__Contract *c = NULL;
    int rc = settle_contract_exact(self, txn, env->partner_id, o->entry->contract_from_ms, &c);
    if (rc != CL_OK)
        return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc; /* the original was priced so */
    int model = COALITION__SETTLEMENT_MODEL__MODEL_HUB;
    if (o->entry->kind == COALITION__ENTRY_KIND__ENTRY_BURN)
        rc = settle_window_model(self, txn, o->entry->window_id, &model);
    bool via_issuers = model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS;
    if (rc == CL_OK)
        rc = settle_price_reversal(env->partner_id, c, o->entry, via_issuers,
                                   o->rev.reversed_points, points, d);
    coalition__contract__free_unpacked(c, NULL);
    if (rc != CL_OK)
        return rc;
    snprintf(member, sizeof member, "%s", o->holder);
    if (o->entry->kind == COALITION__ENTRY_KIND__ENTRY_BURN) {
        snprintf(partner_acct, sizeof partner_acct, ACCOUNT_REDEEMED_FMT, env->partner_id);
        rc = move_or_decline(self, txn, d, partner_acct, member, points);
        return rc == CL_OK && !declined(d) ? reversal_lots(self, txn, env, o, points, d) : rc;
    }
    return earn_reversal_moves(self, txn, env, o, d, points);
}

/* Money refunded on an earn; returns the points to take back, or declines. */
static int64_t earn_refund_points(const original_t *o, const Coalition__RefundRequest *r,
                                  decision_t *d)
{
    const journal_entry_t *e = o->entry;
    int64_t left = e->amount_minor - o->rev.reversed_minor;
    int64_t amount = r->amount_minor > 0 ? r->amount_minor : left;
    char a[AMOUNT_TEXT_BYTES], l[AMOUNT_TEXT_BYTES];
    int exponent = amount_currency_exponent(e->currency);
    if (r->points > 0) {
        decline(d, RC_INVALID_TRANSACTION, "an earn is refunded by money amount, not points");
        return 0;
    }
    if (left <= 0) {
        const char *txn_id = e->txn_id;
        rules_decline_msg(d, RC_INVALID_TRANSACTION, MSG_R_FULLY_REFUNDED, &txn_id, 1);
        return 0;
    }
    if (amount > left) {
        rules_money_text(d, amount, exponent, a);
        rules_money_text(d, left, exponent, l);
        const char *args[] = {a, e->currency, l, e->currency};
        rules_decline_msg(d, RC_INVALID_AMOUNT, MSG_R_REFUND_MONEY, args, 4);
        return 0;
    }
    d->amount_minor = amount;
    snprintf(d->currency, sizeof d->currency, "%s", e->currency);
    int64_t share = amount_share(e->points, o->rev.reversed_minor + amount, e->amount_minor);
    /* Cumulative shares never decrease and never pass the original's points. */
    assert(share >= o->rev.reversed_points && share <= e->points);
    return share - o->rev.reversed_points;
}

/* Points given back on a burn; declines if more than is left. */
static int64_t burn_refund_points(const original_t *o, const Coalition__RefundRequest *r,
                                  decision_t *d)
{
    int64_t left = o->entry->points - o->rev.reversed_points;
    int64_t points = r->points > 0 ? r->points : left;
    if (r->amount_minor > 0) {
        decline(d, RC_INVALID_TRANSACTION, "a burn is refunded in points, not money");
        return 0;
    }
    if (left <= 0) {
        const char *txn_id = o->entry->txn_id;
        rules_decline_msg(d, RC_INVALID_TRANSACTION, MSG_R_FULLY_REFUNDED, &txn_id, 1);
        return 0;
    }
    if (points > left) {
        char p[AMOUNT_TEXT_BYTES], l[AMOUNT_TEXT_BYTES];
        rules_figure_text(d, points, p);
        rules_figure_text(d, left, l);
        const char *args[] = {p, l};
        rules_decline_msg(d, RC_INVALID_AMOUNT, MSG_R_REFUND_POINTS, args, 2);
        return 0;
    }
    assert(points > 0 && points <= left);
    return points;
}

static int put_reversal(ledger_t *self, MDB_txn *txn, original_t *o)
{
    const journal_entry_t *e = o->entry;
    o->rev.complete = o->rev.voided || (e->kind == COALITION__ENTRY_KIND__ENTRY_EARN
                                            ? o->rev.reversed_minor >= e->amount_minor
                                            : o->rev.reversed_points >= e->points);
    return ledger_put_record(txn, self->db_reversals, o->key, o->key_len, &o->rev.base);
}

static int apply_refund(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__RefundRequest *r = env->refund;
    original_t o;
    memset(&o, 0, sizeof o);
    int rc = check_partner(self, txn, env, d, NULL);
    if (rc == CL_OK && !declined(d))
        rc = load_original(self, txn, env, d, &o);
    if (rc != CL_OK || declined(d))
        goto out;
    if (o.ahead) {
        rc = reverse_ahead(self, txn, env, &o, d);
        goto out;
    }
    bool of_earn = o.entry->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
    assert(!o.rev.voided); /* load_original declines a voided original */
    int64_t points = of_earn ? earn_refund_points(&o, r, d) : burn_refund_points(&o, r, d);
    if (declined(d))
        goto out;
    rc = reverse_points(self, txn, env, &o, d, points);
    if (rc != CL_OK || declined(d))
        goto out;
    o.rev.reversed_minor += d->amount_minor;
    o.rev.reversed_points += points;
    rc = put_reversal(self, txn, &o);
    d->kind = of_earn ? COALITION__ENTRY_KIND__ENTRY_REFUND_EARN
                      : COALITION__ENTRY_KIND__ENTRY_REFUND_BURN;
    d->points = points;
    char pts[AMOUNT_TEXT_BYTES], bal[AMOUNT_TEXT_BYTES];
    rules_points_text(d, points, pts);
    rules_points_text(d, d->balance, bal);
    const char *a[] = {r->original_txn_id, pts, bal};
    rules_text(d, of_earn ? MSG_REFUND_EARN : MSG_REFUND_BURN, a, 3);
out:
    coalition__journal_entry__free_unpacked(o.entry, NULL);
    return rc;
}

/* The points a void gives back: all of an original nothing was refunded of, else it is
 * declined. The partner agent's safety void of a burn (wire_agent_txn) gives back what
 * refunds left: a refund at another site may reach the ledger first (no agent can order
 * the two), and the burn's tills were told it failed, so it must end given back in full. */
static int64_t void_gives_back(const envelope_t *env, const original_t *o, decision_t *d)
{
    const journal_entry_t *e = o->entry;
    int64_t left = e->points - o->rev.reversed_points;
    bool refunded = o->rev.reversed_minor > 0 || o->rev.reversed_points > 0;
    bool safety = e->kind == COALITION__ENTRY_KIND__ENTRY_BURN && wire_agent_txn(env->txn_id);
    if (refunded && !(safety && left > 0)) {
        decline(d, RC_INVALID_TRANSACTION, "%s is partly refunded; refund the rest instead",
                env->void_request->original_txn_id);
        return 0;
    }
    assert(left >= 0 && left <= e->points); /* load_original checked the reversal record */
    return left;
}

static int apply_void(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const char *original_txn_id = env->void_request->original_txn_id;
    original_t o;
    memset(&o, 0, sizeof o);
    int rc = check_partner(self, txn, env, d, NULL);
    if (rc == CL_OK && !declined(d))
        rc = load_original(self, txn, env, d, &o);
    if (rc != CL_OK || declined(d))
        goto out;
    if (o.ahead) {
        rc = reverse_ahead(self, txn, env, &o, d);
        goto out;
    }
    int64_t points = void_gives_back(env, &o, d);
    int64_t minor = o.entry->amount_minor - o.rev.reversed_minor;
    if (declined(d))
        goto out;
    rc = reverse_points(self, txn, env, &o, d, points);
    if (rc != CL_OK || declined(d))
        goto out;
    o.rev.voided = true;
    o.rev.reversed_minor = o.entry->amount_minor;
    o.rev.reversed_points = o.entry->points;
    rc = put_reversal(self, txn, &o);
    bool of_earn = o.entry->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
    d->kind =
        of_earn ? COALITION__ENTRY_KIND__ENTRY_VOID_EARN : COALITION__ENTRY_KIND__ENTRY_VOID_BURN;
    d->points = points;
    d->amount_minor = minor;
    snprintf(d->currency, sizeof d->currency, "%s", o.entry->currency);
    char pts[AMOUNT_TEXT_BYTES], bal[AMOUNT_TEXT_BYTES];
    rules_points_text(d, d->points, pts);
    rules_points_text(d, d->balance, bal);
    const char *a[] = {original_txn_id, pts, bal};
    rules_text(d, of_earn ? MSG_VOID_EARN : MSG_VOID_BURN, a, 3);
out:
    coalition__journal_entry__free_unpacked(o.entry, NULL);
    return rc;
}

static int apply_enroll(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const char *member_id = env->enroll->member_id;
    int rc = check_partner(self, txn, env, d, NULL);
    if (rc != CL_OK || declined(d))
        return rc;
    set_member(d, member_id);
    MDB_val k = {strlen(member_id), (void *)member_id};
    MDB_val v;
    rc = mdb_get(txn, self->db_members, &k, &v);
    if (rc == MDB_SUCCESS) {
        rules_decline_msg(d, RC_INVALID_TRANSACTION, MSG_R_ENROLLED, &member_id, 1);
        return CL_OK;
    }
    if (rc != MDB_NOTFOUND)
        return store_err(rc);
    Coalition__MemberRecord m = COALITION__MEMBER_RECORD__INIT;
    m.member_id = (char *)member_id;
    rc = rules_new_member(self, txn, &m);
    d->kind = COALITION__ENTRY_KIND__ENTRY_ENROLL;
    d->balance = 0;
    assert(d->posting_count == 0); /* an enrolment moves no points */
    rules_text(d, MSG_ENROLL, &member_id, 1);
    return rc;
}

static int apply_partner_add(ledger_t *self, MDB_txn *txn, decision_t *d,
                             const Coalition__PartnerAddRequest *r)
{
    MDB_val k = {strlen(r->partner_id), r->partner_id};
    MDB_val v;
    int rc = mdb_get(txn, self->db_partners, &k, &v);
    if (rc == MDB_SUCCESS) {
        decline(d, RC_INVALID_TRANSACTION, "partner %s already exists", r->partner_id);
        return CL_OK;
    }
    if (rc != MDB_NOTFOUND)
        return store_err(rc);
    bool bank = false;
    rc = cards_is_bank(self, txn, r->partner_id, &bank);
    if (rc != CL_OK || bank) {
        if (bank)
            decline(d, RC_INVALID_TRANSACTION, "%s is a bank", r->partner_id);
        return rc;
    }
    MDB_stat st;
    rc = mdb_stat(txn, self->db_partners, &st);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    if (st.ms_entries >= SETTLE_PARTNERS_MAX) {
        decline(d, RC_EXCEEDS_LIMIT, "the coalition holds its maximum of %d partners",
                SETTLE_PARTNERS_MAX);
        return CL_OK;
    }
    bool issuer_pays = false, one_currency = true;
    rc = settle_issuer_pays_anywhere(self, txn, &issuer_pays);
    if (rc == CL_OK && issuer_pays)
        rc = settle_one_currency(self, txn, r->currency, &one_currency);
    if (rc != CL_OK)
        return rc;
    if (!one_currency) {
        decline(d, RC_INVALID_AMOUNT,
                "issuer-pays settles partners of one currency; %s is not the coalition's",
                r->currency);
        return CL_OK;
    }
    Coalition__PartnerRecord p = COALITION__PARTNER_RECORD__INIT;
    p.partner_id = r->partner_id;
    p.earn_rate_milli = r->earn_rate_milli;
    p.currency = r->currency;
    p.created_seq = self->batch_seq + 1;
    p.ordinal = (uint32_t)st.ms_entries; /* partners are never removed: 0, 1, 2 ... */
    assert(p.ordinal < SETTLE_PARTNERS_MAX);
    char issued[ACCOUNT_NAME_BYTES_MAX], redeemed[ACCOUNT_NAME_BYTES_MAX];
    snprintf(issued, sizeof issued, ACCOUNT_ISSUED_FMT, r->partner_id);
    snprintf(redeemed, sizeof redeemed, ACCOUNT_REDEEMED_FMT, r->partner_id);
    rc = ledger_put_record(txn, self->db_partners, r->partner_id, strlen(r->partner_id), &p.base);
    Coalition__Contract c = COALITION__CONTRACT__INIT; /* prices 0 until a contract sets them */
    c.from_ms = d->now_ms < 0 ? 0 : d->now_ms;
    c.earn_rate_milli = r->earn_rate_milli;
    c.currency = r->currency;
    c.created_seq = p.created_seq;
    c.locale = r->locale;       /* "" (en) unless given; wire_validate checked the code */
    if (r->locale[0] != '\0') { /* the entry carries the first contract for verify */
        d->contract = c;
        d->has_contract = true;
    }
    if (rc == CL_OK)
        rc = settle_put_contract(self, txn, r->partner_id, &c);
    if (rc == CL_OK)
        rc = ledger_put_balance(self, txn, issued, 0);
    if (rc == CL_OK)
        rc = ledger_put_balance(self, txn, redeemed, 0);
    d->kind = COALITION__ENTRY_KIND__ENTRY_PARTNER_ADD;
    d->added_partner_id = r->partner_id;
    assert(d->posting_count == 0 && r->earn_rate_milli > 0); /* validated by wire_validate */
    d->earn_rate_milli = r->earn_rate_milli;
    snprintf(d->currency, sizeof d->currency, "%s", r->currency);
    char rate[AMOUNT_TEXT_BYTES];
    amount_format_minor(r->earn_rate_milli, 3, rate, sizeof rate);
    snprintf(d->text, sizeof d->text, "Partner %s added: earns %s points per %s", r->partner_id,
             rate, r->currency);
    return rc;
}

int rules_inquire(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    d->code = RC_APPROVED;
    bool bank = false;
    int rc = rules_locale_of(self, txn, env->partner_id, d->now_ms, &d->locale);
    if (rc == CL_OK)
        rc = cards_is_bank(self, txn, env->partner_id, &bank);
    if (rc == CL_OK && !bank)
        rc = check_partner(self, txn, env, d, NULL);
    if (rc == CL_OK && !declined(d) && env->balance->card != NULL)
        return cards_inquire(self, txn, env, d);
    if (rc == CL_OK && !declined(d) && bank) {
        decline(d, RC_NOT_PERMITTED, "a bank asks balances by the cards it enrolled");
        return CL_OK;
    }
    if (rc == CL_OK && !declined(d))
        rc = check_member(self, txn, env->balance->member_id, d);
    if (rc == CL_OK && !declined(d))
        rc = split_balance(self, txn, env->balance->member_id, d);
    if (rc != CL_OK || declined(d))
        return rc;
    rules_balance_text(d);
    return CL_OK;
}

int rules_decide(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    assert(env != NULL && d->posting_count == 0 && d->kind == COALITION__ENTRY_KIND__ENTRY_NONE);
    d->code = RC_APPROVED;
    set_member(d, wire_member_of(env));
    int rc = rules_locale_of(self, txn, env->partner_id, d->now_ms, &d->locale);
    if (rc != CL_OK)
        return rc;
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN: return apply_earn(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_BURN: return apply_burn(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_REFUND: return apply_refund(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_VOID_REQUEST: return apply_void(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_ENROLL: return apply_enroll(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_PARTNER_ADD:
        return apply_partner_add(self, txn, d, env->partner_add);
    case COALITION__ENVELOPE__BODY_KEY_ADD: return rules_key_add(self, txn, d, env->key_add);
    case COALITION__ENVELOPE__BODY_KEY_REVOKE:
        return rules_key_revoke(self, txn, d, env->key_revoke);
    case COALITION__ENVELOPE__BODY_PARTNER_LIMITS:
        return rules_partner_limits(self, txn, d, env->partner_limits);
    case COALITION__ENVELOPE__BODY_CONTRACT_SET:
        return rules_contract_set(self, txn, d, env->contract_set);
    case COALITION__ENVELOPE__BODY_PARTNER_TOPUP:
        return rules_partner_topup(self, txn, d, env->partner_topup);
    case COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG:
        return rules_settlement_config(self, txn, d, env->settlement_config);
    case COALITION__ENVELOPE__BODY_WINDOW_CLOSE:
        return rules_window_close(self, txn, d, env->window_close);
    case COALITION__ENVELOPE__BODY_CARD_ENROLL: return rules_card_enroll(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_BANK_ADD: return rules_bank_add(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_UNCLAIMED_LAPSE: return rules_unclaimed_lapse(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_CARD_SETTINGS: return rules_card_settings(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_EXPIRY_POLICY: return rules_expiry_policy(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_EXPIRE: return rules_expire(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_TIER_SETTINGS: return rules_tier_settings(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_RULE_ADD: return rules_rule_add(self, txn, env, d);
    case COALITION__ENVELOPE__BODY_RULE_END: return rules_rule_end(self, txn, env, d);
    default:
        /* Balance inquiries never reach the writer; the front end answers them. */
        decline(d, RC_INVALID_TRANSACTION, "%s is not a ledger write", wire_body_name(env));
        return CL_OK;
    }
}
