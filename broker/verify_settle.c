/* The audit of settlement: every entry's window and settlement fields re-derived from the
 * contracts the journal recorded before it, the window counters and prepaid blocks summed
 * again from the entries, and the contracts, counters, prepaid blocks and windows in the
 * database compared with that, both ways.
 *
 *   window ids    never decrease; no entry lands in a window closed before it; each
 *                 window's entries lie within its first_seq..last_seq, and an ended
 *                 window's last_hash is the hash of its last_seq entry
 *   earn          contract in force at its time: prepaid 0 money (the block shrinks),
 *                 post-paid amount_price(points, issue price); the contract's fee
 *   burn          amount_price(points, reimbursement); the contract's fee
 *   refund/void   under the original's contract: the difference of the prices of the
 *                 cumulative points reversed; a prepaid earn's points go back to the block
 *   top-up        a prepaid contract in force; amount_price(points, issue price)
 *   contract-set  starts no earlier than it was recorded
 *   window-close  closes a window that is not closed, whose record names this entry
 *
 * Memory: one item per contract, per (window, partner) with activity, per window. */
#include "verify_internal.h"

#include "amount.h"
#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEQ(e) ((unsigned long long)(e)->seq)

/* A receipt locale the catalogue has: the rules record no other. */
static bool locale_known(const char *code)
{
    receipt_locale_t l;
    return receipt_locale_parse(code, &l) == CL_OK;
}

static vkey_t contract_vkey(const char *partner, int64_t from_ms)
{
    vkey_t k;
    size_t plen = strlen(partner);
    assert(plen <= PARTNER_ID_LEN_MAX && from_ms >= 0);
    memcpy(k.bytes, partner, plen);
    k.bytes[plen] = 0;
    store_put_u64((uint8_t *)k.bytes + plen + 1, (uint64_t)from_ms);
    k.len = plen + 9;
    k.bytes[k.len] = '\0';
    return k;
}

static vkey_t counters_vkey(uint64_t window_id, const char *partner)
{
    vkey_t k;
    size_t plen = strlen(partner);
    k.bytes[0] = 'C';
    store_put_u64((uint8_t *)k.bytes + 1, window_id);
    memcpy(k.bytes + 9, partner, plen);
    k.len = 9 + plen;
    k.bytes[k.len] = '\0';
    return k;
}

const settle_contract_t *verify_contract_at(const verify_t *v, const vpartner_t *p, int64_t at_ms)
{
    for (size_t i = p->n_contracts; i > 0; i--) {
        const vcontract_t *c = vmap_at(&v->contracts, p->contracts[i - 1]);
        if (c->c.from_ms <= at_ms)
            return &c->c;
    }
    return NULL;
}

static const settle_contract_t *contract_from(const verify_t *v, const vpartner_t *p,
                                              int64_t from_ms)
{
    vkey_t k = contract_vkey(p->id.bytes, from_ms);
    const vcontract_t *c = vmap_find(&v->contracts, k.bytes, k.len);
    return c != NULL ? &c->c : NULL;
}

/* Record a contract (a replacement of one not yet in force takes its place). */
static int note_contract(verify_t *v, vpartner_t *p, const settle_contract_t *c)
{
    assert(p != NULL && c->from_ms >= 0 && p->n_contracts <= p->cap_contracts);
    vkey_t k = contract_vkey(p->id.bytes, c->from_ms);
    vcontract_t *item = vmap_find(&v->contracts, k.bytes, k.len);
    if (item != NULL) {
        item->c = *c;
        return CL_OK;
    }
    if (p->n_contracts == p->cap_contracts) {
        size_t cap = p->cap_contracts == 0 ? 4 : 2 * p->cap_contracts;
        size_t *grown = realloc(p->contracts, cap * sizeof *grown);
        if (grown == NULL)
            return CL_ERR_NOMEM;
        p->contracts = grown;
        p->cap_contracts = cap;
    }
    int rc = vmap_insert(&v->contracts, k.bytes, k.len, (void **)&item);
    if (rc != CL_OK)
        return rc;
    item->c = *c;
    size_t at = p->n_contracts++;
    while (at > 0 &&
           ((vcontract_t *)vmap_at(&v->contracts, p->contracts[at - 1]))->c.from_ms > c->from_ms) {
        p->contracts[at] = p->contracts[at - 1];
        at--;
    }
    p->contracts[at] = v->contracts.count - 1;
    return CL_OK;
}

static vpartner_t *partner_of(verify_t *v, const char *id)
{
    return vmap_find(&v->partners, id, strlen(id));
}

static void contract_of_entry(const journal_entry_t *e, settle_contract_t *c)
{
    const Coalition__Contract *r = e->contract;
    memset(c, 0, sizeof *c);
    snprintf(c->partner_id, sizeof c->partner_id, "%s", e->participant);
    c->from_ms = r->from_ms;
    c->earn_rate_milli = r->earn_rate_milli;
    snprintf(c->currency, sizeof c->currency, "%s", r->currency);
    c->issue_price_per_mille = r->issue_price_per_mille;
    c->reimburse_per_mille = r->reimburse_per_mille;
    c->fee_minor = r->fee_minor;
    c->net_cap_minor = r->net_cap_minor;
    c->return_period_seconds = r->return_period_seconds;
    snprintf(c->locale, sizeof c->locale, "%.*s", RECEIPT_LOCALE_CODE_LEN_MAX, r->locale);
    c->funding = (int)r->funding;
    c->created_seq = r->created_seq;
}

static int rederive_contract_set(verify_t *v, const journal_entry_t *e)
{
    vpartner_t *p = partner_of(v, e->participant);
    if (p == NULL || p->added_seq == 0 || e->contract == NULL)
        return verify_violation(v, "contract entry %llu names %s, which no earlier entry added",
                                SEQ(e), e->participant);
    settle_contract_t c;
    contract_of_entry(e, &c);
    if (c.from_ms < e->time_ms || c.created_seq != e->seq || c.earn_rate_milli <= 0 ||
        c.earn_rate_milli > EARN_RATE_MILLI_MAX || c.issue_price_per_mille < 0 ||
        c.issue_price_per_mille > PRICE_PER_MILLE_MAX || c.reimburse_per_mille < 0 ||
        c.reimburse_per_mille > PRICE_PER_MILLE_MAX || c.fee_minor < 0 ||
        c.fee_minor > FEE_MINOR_MAX || c.net_cap_minor < 0 || c.net_cap_minor > NET_CAP_MINOR_MAX ||
        c.return_period_seconds < 0 || c.return_period_seconds > RETURN_PERIOD_SECONDS_MAX ||
        !locale_known(e->contract->locale) ||
        (c.funding != COALITION__FUNDING__FUNDING_POSTPAID &&
         c.funding != COALITION__FUNDING__FUNDING_PREPAID))
        return verify_violation(v, "contract entry %llu is not a contract the rules record",
                                SEQ(e));
    const settle_contract_t *latest = verify_contract_at(v, p, INT64_MAX);
    if (latest == NULL || strcmp(latest->currency, c.currency) != 0)
        return verify_violation(v, "contract entry %llu changes %s's currency", SEQ(e),
                                e->participant);
    return note_contract(v, p, &c);
}

/* A partner-add records the partner's first contract: its rate and currency, no prices. */
static int note_first_contract(verify_t *v, const journal_entry_t *e)
{
    vpartner_t *p = partner_of(v, e->added_partner_id);
    assert(p != NULL); /* verify_rederive_entry checked the partner-add */
    settle_contract_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.partner_id, sizeof c.partner_id, "%s", e->added_partner_id);
    c.from_ms = e->time_ms < 0 ? 0 : e->time_ms;
    c.earn_rate_milli = e->earn_rate_milli;
    snprintf(c.currency, sizeof c.currency, "%s", e->currency);
    c.created_seq = e->seq;
    const Coalition__Contract *r = e->contract; /* only when the partner-add set a locale */
    if (r != NULL && (r->from_ms != c.from_ms || r->earn_rate_milli != c.earn_rate_milli ||
                      strcmp(r->currency, c.currency) != 0 || r->created_seq != c.created_seq ||
                      r->locale[0] == '\0' || !locale_known(r->locale)))
        return verify_violation(v, "partner-add entry %llu carries a contract it did not make",
                                SEQ(e));
    if (r != NULL)
        snprintf(c.locale, sizeof c.locale, "%s", r->locale);
    return note_contract(v, p, &c);
}

/* ---- issuers' outstanding points and issuer-pays pairs ------------------------------- */

static size_t vout_slot(outstanding_t *o, const char *id)
{
    size_t at = 0;
    while (at < o->n && strcmp(o->ids[at], id) < 0)
        at++;
    if (at < o->n && strcmp(o->ids[at], id) == 0)
        return at;
    assert(o->n < SETTLE_PARTNERS_MAX); /* partners are at most that many */
    memmove(o->ids[at + 1], o->ids[at], (o->n - at) * sizeof o->ids[0]);
    memmove(&o->points[at + 1], &o->points[at], (o->n - at) * sizeof o->points[0]);
    snprintf(o->ids[at], sizeof o->ids[at], "%s", id);
    o->points[at] = 0;
    o->n++;
    return at;
}

static int vpair_add(verify_t *v, const journal_entry_t *e, const char *issuer, int64_t points,
                     int64_t minor)
{
    assert(strlen(issuer) <= PARTNER_ID_LEN_MAX && strlen(e->partner_id) <= PARTNER_ID_LEN_MAX);
    vkey_t k;
    size_t rlen = strlen(e->partner_id), ilen = strlen(issuer);
    k.bytes[0] = 'C';
    store_put_u64((uint8_t *)k.bytes + 1, e->window_id);
    memcpy(k.bytes + 9, e->partner_id, rlen);
    k.bytes[9 + rlen] = 0;
    memcpy(k.bytes + 10 + rlen, issuer, ilen);
    k.len = 10 + rlen + ilen;
    k.bytes[k.len] = '\0';
    vpair_t *p = vmap_find(&v->pairs, k.bytes, k.len);
    int rc = p == NULL ? vmap_insert(&v->pairs, k.bytes, k.len, (void **)&p) : CL_OK;
    if (rc != CL_OK)
        return rc;
    p->points += points;
    p->minor += minor;
    return CL_OK;
}

/* The entry's issuer shares must be exactly the non-zero (points, money) of `ids`. */
static int expect_shares(verify_t *v, const journal_entry_t *e, char (*ids)[PARTNER_ID_LEN_MAX + 1],
                         const int64_t *pts, const int64_t *money, size_t n)
{
    size_t k = 0;
    bool same = true;
    for (size_t i = 0; i < n && same; i++) {
        if (pts[i] == 0 && money[i] == 0)
            continue;
        const Coalition__PairAmount *sh = k < e->n_issuer_shares ? e->issuer_shares[k] : NULL;
        same = sh != NULL && strcmp(sh->partner_id, ids[i]) == 0 && sh->points == pts[i] &&
               sh->minor == money[i];
        k++;
    }
    if (same && k == e->n_issuer_shares)
        return CL_OK;
    return verify_violation(v,
                            "entry %llu (%s): its issuer shares are not the pro rata split of "
                            "the outstanding points",
                            SEQ(e), ledger_entry_kind_name(e->kind));
}

/* A burn: split its points and money over the issuers' outstanding points. */
static int settle_burn_shares(verify_t *v, const journal_entry_t *e, bool via_issuers)
{
    outstanding_t *o = &v->outstanding;
    int64_t pts[SETTLE_PARTNERS_MAX], money[SETTLE_PARTNERS_MAX], sum = 0;
    for (size_t i = 0; i < o->n; i++)
        sum += o->points[i] > 0 ? o->points[i] : 0;
    if (sum < e->points)
        return verify_violation(v, "burn entry %llu redeems more than is outstanding", SEQ(e));
    settle_split(e->points, o->points, o->n, pts);
    settle_split(e->settle_minor, o->points, o->n, money);
    int rc = expect_shares(v, e, o->ids, pts, money, o->n);
    for (size_t i = 0; rc == CL_OK && i < o->n; i++) {
        o->points[i] -= pts[i];
        if (via_issuers && (pts[i] != 0 || money[i] != 0))
            rc = vpair_add(v, e, o->ids[i], pts[i], money[i]);
    }
    return rc;
}

/* A burn's reversal: its original's shares given back in order, up to each share. */
static int settle_burn_back(verify_t *v, const journal_entry_t *e, const journal_entry_t *o,
                            int64_t before, const settle_contract_t *c, bool via_issuers)
{
    size_t n = o->n_issuer_shares;
    char ids[SETTLE_PARTNERS_MAX][PARTNER_ID_LEN_MAX + 1];
    int64_t shares[SETTLE_PARTNERS_MAX], money[SETTLE_PARTNERS_MAX];
    int64_t back[SETTLE_PARTNERS_MAX], back_money[SETTLE_PARTNERS_MAX];
    if (n > SETTLE_PARTNERS_MAX)
        return verify_violation(v, "burn entry %llu names too many issuers", SEQ(o));
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%s", o->issuer_shares[i]->partner_id);
        shares[i] = o->issuer_shares[i]->points;
        money[i] = o->issuer_shares[i]->minor;
    }
    int64_t m0 = amount_price(before, c->reimburse_per_mille);
    int64_t m1 = amount_price(before + e->points, c->reimburse_per_mille);
    settle_waterfall(shares, n, before, before + e->points, back);
    settle_waterfall(money, n, m0, m1, back_money);
    int rc = expect_shares(v, e, ids, back, back_money, n);
    for (size_t i = 0; rc == CL_OK && i < n; i++) {
        v->outstanding.points[vout_slot(&v->outstanding, ids[i])] += back[i];
        if (via_issuers && (back[i] != 0 || back_money[i] != 0))
            rc = vpair_add(v, e, ids[i], -back[i], -back_money[i]);
    }
    return rc;
}

/* Add the entry to its window's counters of `partner`. */
static int count(verify_t *v, const journal_entry_t *e, const char *partner, bool via_issuers)
{
    vkey_t k = counters_vkey(e->window_id, partner);
    vcounters_t *item = vmap_find(&v->counters, k.bytes, k.len);
    int rc = item == NULL ? vmap_insert(&v->counters, k.bytes, k.len, (void **)&item) : CL_OK;
    if (rc != CL_OK)
        return rc;
    if (!settle_counters_apply(&item->c, e->kind, e->points, e->settle_minor, e->fee_minor,
                               via_issuers))
        return verify_violation(v, "entry %llu: %s's counters in window %llu pass int64", SEQ(e),
                                partner, (unsigned long long)e->window_id);
    return CL_OK;
}

static int expect_priced(verify_t *v, const journal_entry_t *e, const settle_contract_t *c,
                         int64_t money, int64_t fee)
{
    if (e->contract_from_ms == c->from_ms && e->settle_minor == money && e->fee_minor == fee)
        return CL_OK;
    return verify_violation(v,
                            "entry %llu (%s): priced %lld minor units and fee %lld under the "
                            "contract from %lld; its contract from %lld gives %lld and %lld",
                            SEQ(e), ledger_entry_kind_name(e->kind), (long long)e->settle_minor,
                            (long long)e->fee_minor, (long long)e->contract_from_ms,
                            (long long)c->from_ms, (long long)money, (long long)fee);
}

static int unpriced(verify_t *v, const journal_entry_t *e)
{
    if (e->contract_from_ms == 0 && e->settle_minor == 0 && e->fee_minor == 0)
        return CL_OK;
    return verify_violation(v, "entry %llu (%s) carries settlement money; it moves none", SEQ(e),
                            ledger_entry_kind_name(e->kind));
}

static int prepaid_add(verify_t *v, const journal_entry_t *e, vpartner_t *p, int64_t delta)
{
    if (__builtin_add_overflow(p->prepaid, delta, &p->prepaid) || p->prepaid < 0)
        return verify_violation(v, "entry %llu takes %s's prepaid block below zero", SEQ(e),
                                p->id.bytes);
    return CL_OK;
}

static int settle_earn(verify_t *v, const journal_entry_t *e, vpartner_t *p)
{
    const settle_contract_t *c = verify_contract_at(v, p, e->time_ms);
    assert(c != NULL); /* rederive_earn found it for the points */
    bool prepaid = c->funding == COALITION__FUNDING__FUNDING_PREPAID;
    int64_t money = prepaid ? 0 : amount_price(e->points, c->issue_price_per_mille);
    int rc = expect_priced(v, e, c, money, c->fee_minor);
    if (rc == CL_OK && prepaid)
        rc = prepaid_add(v, e, p, -e->points);
    return rc;
}

static int settle_burn(verify_t *v, const journal_entry_t *e, vpartner_t *p)
{
    const settle_contract_t *c = verify_contract_at(v, p, e->time_ms);
    if (c == NULL)
        return verify_violation(v, "burn entry %llu: %s has no contract in force", SEQ(e),
                                p->id.bytes);
    return expect_priced(v, e, c, amount_price(e->points, c->reimburse_per_mille), c->fee_minor);
}

static int settle_topup(verify_t *v, const journal_entry_t *e)
{
    vpartner_t *p = partner_of(v, e->participant);
    const settle_contract_t *c = p != NULL ? verify_contract_at(v, p, e->time_ms) : NULL;
    if (c == NULL || c->funding != COALITION__FUNDING__FUNDING_PREPAID || e->points <= 0 ||
        e->points > POINTS_MAX || e->n_postings != 0)
        return verify_violation(v, "top-up entry %llu: %s has no prepaid contract in force", SEQ(e),
                                e->participant);
    int rc = expect_priced(v, e, c, amount_price(e->points, c->issue_price_per_mille), 0);
    return rc == CL_OK ? prepaid_add(v, e, p, e->points) : rc;
}

/* Whether a burn recorded in window `id` was settled by its issuers. */
static bool window_via_issuers(const verify_t *v, uint64_t id)
{
    uint8_t key[8];
    store_put_u64(key, id);
    const vwindow_t *w = vmap_find(&v->windows, key, sizeof key);
    return w != NULL && w->model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS;
}

int verify_settle_reversal(verify_t *v, const journal_entry_t *e, const journal_entry_t *original,
                           int64_t reversed_before)
{
    vpartner_t *p = partner_of(v, e->partner_id);
    const settle_contract_t *c = p != NULL ? contract_from(v, p, original->contract_from_ms) : NULL;
    if (c == NULL)
        return verify_violation(v, "entry %llu reverses entry %llu, priced under no contract",
                                SEQ(e), SEQ(original));
    bool of_earn = original->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
    bool prepaid = of_earn && c->funding == COALITION__FUNDING__FUNDING_PREPAID;
    int64_t per_mille = of_earn ? c->issue_price_per_mille : c->reimburse_per_mille;
    int64_t money = prepaid ? 0
                            : amount_price(reversed_before + e->points, per_mille) -
                                  amount_price(reversed_before, per_mille);
    int rc = expect_priced(v, e, c, money, 0);
    if (rc == CL_OK && prepaid)
        rc = prepaid_add(v, e, p, e->points);
    bool via = !of_earn && window_via_issuers(v, original->window_id);
    /* An earn's points that broke come back out of breakage: they had left the outstanding. */
    int64_t broke = of_earn ? ledger_entry_from_breakage(e) : 0;
    if (rc == CL_OK && of_earn)
        v->outstanding.points[vout_slot(&v->outstanding, e->partner_id)] -= e->points - broke;
    else if (rc == CL_OK && !of_earn)
        rc = settle_burn_back(v, e, original, reversed_before, c, via);
    if (rc == CL_OK)
        rc = count(v, e, e->partner_id, via);
    if (rc == CL_OK && broke > 0) {
        vkey_t k = counters_vkey(e->window_id, e->partner_id);
        ((vcounters_t *)vmap_find(&v->counters, k.bytes, k.len))->c.points_expired_reversed +=
            broke;
    }
    return rc;
}

/* The configuration in force for a window opened before entry `seq` (the defaults before
 * any configuration entry). */
static vconfig_t config_before(const verify_t *v, uint64_t seq)
{
    vconfig_t c = {0, COALITION__SETTLEMENT_MODEL__MODEL_HUB, SETTLEMENT_GRACE_SECONDS_DEFAULT, 0};
    for (size_t i = 0; i < v->n_configs && v->configs[i].seq < seq; i++)
        c = v->configs[i];
    return c;
}

static int note_config(verify_t *v, const journal_entry_t *e)
{
    const Coalition__SettlementConfig *r = e->settlement;
    if (r == NULL || r->period_seconds < 0 || r->period_seconds > SETTLEMENT_PERIOD_SECONDS_MAX ||
        r->grace_seconds < 0 || r->grace_seconds > SETTLEMENT_GRACE_SECONDS_MAX ||
        r->model > COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS)
        return verify_violation(v, "settlement entry %llu is not a configuration the rules record",
                                SEQ(e));
    if (v->n_configs == v->cap_configs) {
        size_t cap = v->cap_configs == 0 ? 8 : 2 * v->cap_configs;
        vconfig_t *grown = realloc(v->configs, cap * sizeof *grown);
        if (grown == NULL)
            return CL_ERR_NOMEM;
        v->configs = grown;
        v->cap_configs = cap;
    }
    v->configs[v->n_configs++] =
        (vconfig_t){e->seq, (int)r->model, r->grace_seconds, r->period_seconds};
    return CL_OK;
}

/* The entry's window: never decreasing, never closed, and its seq span noted. */
static int settle_window(verify_t *v, const journal_entry_t *e)
{
    if (e->window_id == 0 || e->window_id < v->last_window_id)
        return verify_violation(v, "entry %llu is in window %llu, after window %llu", SEQ(e),
                                (unsigned long long)e->window_id,
                                (unsigned long long)v->last_window_id);
    v->last_window_id = e->window_id;
    uint8_t key[8];
    store_put_u64(key, e->window_id);
    vwindow_t *w = vmap_find(&v->windows, key, sizeof key);
    if (w == NULL) {
        int rc = vmap_insert(&v->windows, key, sizeof key, (void **)&w);
        if (rc != CL_OK)
            return rc;
        w->id = e->window_id;
        w->min_seq = e->seq;
        w->model = config_before(v, e->seq).model;
    }
    if (w->close_seq != 0)
        return verify_violation(v, "entry %llu lands in window %llu, closed by entry %llu", SEQ(e),
                                (unsigned long long)w->id, (unsigned long long)w->close_seq);
    w->max_seq = e->seq;
    if (w->min_seq == e->seq || e->time_ms > w->max_time_ms)
        w->max_time_ms = e->time_ms;
    return CL_OK;
}

static int settle_close(verify_t *v, const journal_entry_t *e)
{
    uint8_t key[8];
    store_put_u64(key, e->closed_window_id);
    vwindow_t *w = vmap_find(&v->windows, key, sizeof key);
    int rc = CL_OK;
    if (w == NULL) { /* a window without entries */
        rc = vmap_insert(&v->windows, key, sizeof key, (void **)&w);
        if (rc == CL_OK)
            w->id = e->closed_window_id;
    }
    if (rc == CL_OK && (w->close_seq != 0 || e->closed_window_id >= e->window_id))
        return verify_violation(v, "entry %llu closes window %llu, which was closed or still open",
                                SEQ(e), (unsigned long long)e->closed_window_id);
    if (rc == CL_OK)
        w->close_seq = e->seq;
    return rc;
}

static bool burnish(int kind)
{
    return kind == COALITION__ENTRY_KIND__ENTRY_BURN ||
           kind == COALITION__ENTRY_KIND__ENTRY_REFUND_BURN ||
           kind == COALITION__ENTRY_KIND__ENTRY_VOID_BURN;
}

static bool breakage(int kind)
{
    return kind == COALITION__ENTRY_KIND__ENTRY_EXPIRY ||
           kind == COALITION__ENTRY_KIND__ENTRY_UNCLAIMED_LAPSE;
}

/* An expiry's or lapse's issuer shares: each issuer's points, sorted, summing to the
 * entry's (an expiry's: its lots by issuer); they leave the outstanding and count as each
 * issuer's breakage in the window. */
static int settle_breakage(verify_t *v, const journal_entry_t *e)
{
    int64_t sum = 0;
    for (size_t i = 0; i < e->n_issuer_shares; i++) {
        const Coalition__PairAmount *sh = e->issuer_shares[i];
        int64_t of_lots = 0;
        for (size_t j = 0; j < e->n_lots; j++)
            if (strcmp(e->lots[j]->issuer, sh->partner_id) == 0)
                of_lots += e->lots[j]->points;
        bool sorted = i == 0 || strcmp(e->issuer_shares[i - 1]->partner_id, sh->partner_id) < 0;
        if (sh->points <= 0 || sh->minor != 0 || !sorted || partner_of(v, sh->partner_id) == NULL ||
            (e->kind == COALITION__ENTRY_KIND__ENTRY_EXPIRY && of_lots != sh->points))
            return verify_violation(v, "entry %llu (%s): its breakage by issuer is not its lots'",
                                    SEQ(e), ledger_entry_kind_name(e->kind));
        sum += sh->points;
        v->outstanding.points[vout_slot(&v->outstanding, sh->partner_id)] -= sh->points;
        vkey_t k = counters_vkey(e->window_id, sh->partner_id);
        vcounters_t *item = vmap_find(&v->counters, k.bytes, k.len);
        int rc = item == NULL ? vmap_insert(&v->counters, k.bytes, k.len, (void **)&item) : CL_OK;
        if (rc != CL_OK)
            return rc;
        item->c.entries++;
        item->c.points_expired += sh->points;
    }
    if (sum != e->points)
        return verify_violation(v, "entry %llu (%s): breakage by issuer sums to %lld of %lld",
                                SEQ(e), ledger_entry_kind_name(e->kind), (long long)sum,
                                (long long)e->points);
    return CL_OK;
}

int verify_settle_entry(verify_t *v, const journal_entry_t *e)
{
    int rc = settle_window(v, e);
    if (rc != CL_OK)
        return rc;
    if (breakage(e->kind))
        return unpriced(v, e) == CL_OK ? settle_breakage(v, e) : CL_ERR_CORRUPT;
    if (e->n_issuer_shares != 0 && !burnish(e->kind))
        return verify_violation(v, "entry %llu (%s) names issuer shares", SEQ(e),
                                ledger_entry_kind_name(e->kind));
    vpartner_t *p = partner_of(v, e->partner_id);
    switch (e->kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN:
        rc = settle_earn(v, e, p);
        if (rc == CL_OK)
            v->outstanding.points[vout_slot(&v->outstanding, e->partner_id)] += e->points;
        if (rc == CL_OK)
            rc = count(v, e, e->partner_id, false);
        if (rc == CL_OK) { /* its bonuses, billed to the partner with its points */
            vkey_t k = counters_vkey(e->window_id, e->partner_id);
            ((vcounters_t *)vmap_find(&v->counters, k.bytes, k.len))->c.points_bonus +=
                e->points - e->base_points;
        }
        return rc;
    case COALITION__ENTRY_KIND__ENTRY_BURN: {
        bool via = window_via_issuers(v, e->window_id);
        rc = settle_burn(v, e, p);
        if (rc == CL_OK)
            rc = settle_burn_shares(v, e, via);
        return rc == CL_OK ? count(v, e, e->partner_id, via) : rc;
    }
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP:
        rc = settle_topup(v, e);
        return rc == CL_OK ? count(v, e, e->participant, false) : rc;
    case COALITION__ENTRY_KIND__ENTRY_SETTLEMENT_CONFIG:
        rc = unpriced(v, e);
        return rc == CL_OK ? note_config(v, e) : rc;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN:
        return CL_OK; /* verify_settle_reversal, from the reversal's re-derivation */
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_ADD:
        rc = unpriced(v, e);
        return rc == CL_OK ? note_first_contract(v, e) : rc;
    case COALITION__ENTRY_KIND__ENTRY_CONTRACT_SET:
        rc = unpriced(v, e);
        return rc == CL_OK && verify_expect_no_moves(v, e) == CL_OK ? rederive_contract_set(v, e)
                                                                    : CL_ERR_CORRUPT;
    case COALITION__ENTRY_KIND__ENTRY_WINDOW_CLOSE:
        rc = unpriced(v, e);
        return rc == CL_OK && verify_expect_no_moves(v, e) == CL_OK ? settle_close(v, e)
                                                                    : CL_ERR_CORRUPT;
    default: return unpriced(v, e);
    }
}

/* ---- records against the journal ---------------------------------------------------- */

static int visit_contract(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    vcontract_t *item =
        k->mv_size < VERIFY_KEY_BYTES_MAX ? vmap_find(&v->contracts, k->mv_data, k->mv_size) : NULL;
    if (item == NULL)
        return verify_violation(v, "a contract record no journal entry recorded (%.*s)",
                                (int)strnlen(k->mv_data, k->mv_size), (const char *)k->mv_data);
    Coalition__Contract *r = coalition__contract__unpack(NULL, val->mv_size, val->mv_data);
    const settle_contract_t *c = &item->c;
    bool same = r != NULL && r->from_ms == c->from_ms && r->earn_rate_milli == c->earn_rate_milli &&
                strcmp(r->currency, c->currency) == 0 &&
                r->issue_price_per_mille == c->issue_price_per_mille &&
                r->reimburse_per_mille == c->reimburse_per_mille && r->fee_minor == c->fee_minor &&
                (int)r->funding == c->funding && r->net_cap_minor == c->net_cap_minor &&
                r->return_period_seconds == c->return_period_seconds &&
                strcmp(r->locale, c->locale) == 0 && r->created_seq == c->created_seq;
    coalition__contract__free_unpacked(r, NULL);
    item->seen = true;
    if (!same)
        return verify_violation(v, "contract of %s from %lld differs from its entry %llu",
                                c->partner_id, (long long)c->from_ms,
                                (unsigned long long)c->created_seq);
    return CL_OK;
}

static bool counters_equal(const settle_counters_t *a, const settle_counters_t *b)
{
    return a->points_issued == b->points_issued &&
           a->points_issued_reversed == b->points_issued_reversed &&
           a->points_redeemed == b->points_redeemed &&
           a->points_redeemed_reversed == b->points_redeemed_reversed &&
           a->issue_minor == b->issue_minor && a->issue_reversed_minor == b->issue_reversed_minor &&
           a->reimburse_minor == b->reimburse_minor &&
           a->reimburse_reversed_minor == b->reimburse_reversed_minor &&
           a->fee_minor == b->fee_minor && a->topup_points == b->topup_points &&
           a->topup_minor == b->topup_minor && a->entries == b->entries &&
           a->hub_reimburse_minor == b->hub_reimburse_minor &&
           a->hub_reimburse_reversed_minor == b->hub_reimburse_reversed_minor &&
           a->points_expired == b->points_expired &&
           a->points_expired_reversed == b->points_expired_reversed &&
           a->points_bonus == b->points_bonus;
}

static int check_counters(verify_t *v, const MDB_val *k, const MDB_val *val)
{
    vcounters_t *item =
        k->mv_size < VERIFY_KEY_BYTES_MAX ? vmap_find(&v->counters, k->mv_data, k->mv_size) : NULL;
    const uint8_t *key = k->mv_data;
    unsigned long long id = k->mv_size >= 9 ? (unsigned long long)store_get_u64(key + 1) : 0;
    int plen = k->mv_size >= 9 ? (int)(k->mv_size - 9) : 0;
    Coalition__WindowCounters *r =
        coalition__window_counters__unpack(NULL, val->mv_size, val->mv_data);
    settle_counters_t stored;
    settle_counters_read(r, &stored);
    bool same = item != NULL && r != NULL && counters_equal(&stored, &item->c);
    for (size_t i = 0; same && i < r->n_owed_by; i++) {
        const Coalition__PairAmount *pa = r->owed_by[i];
        vkey_t pk;
        size_t ilen = strlen(pa->partner_id);
        same = ilen <= PARTNER_ID_LEN_MAX && k->mv_size + 1 + ilen < VERIFY_KEY_BYTES_MAX;
        if (!same)
            break;
        memcpy(pk.bytes, key, k->mv_size);
        pk.bytes[k->mv_size] = 0;
        memcpy(pk.bytes + k->mv_size + 1, pa->partner_id, ilen);
        pk.len = k->mv_size + 1 + ilen;
        vpair_t *p = vmap_find(&v->pairs, pk.bytes, pk.len);
        same = p != NULL && !p->seen && p->points == pa->points && p->minor == pa->minor;
        if (same)
            p->seen = true;
    }
    coalition__window_counters__free_unpacked(r, NULL);
    if (!same)
        return verify_violation(v,
                                "window %llu counters of %.*s differ from a recomputation from "
                                "the journal",
                                id, plen, (const char *)key + 9);
    item->seen = true;
    return CL_OK;
}

/* The issuers' outstanding points against the journal's, in the same (id) order. */
static int check_outstanding(verify_t *v, const MDB_val *val)
{
    Coalition__Outstanding *r = coalition__outstanding__unpack(NULL, val->mv_size, val->mv_data);
    const outstanding_t *o = &v->outstanding;
    bool same = r != NULL && r->n_issuers == o->n;
    for (size_t i = 0; same && i < o->n; i++)
        same = strcmp(r->issuers[i]->partner_id, o->ids[i]) == 0 &&
               r->issuers[i]->points == o->points[i];
    coalition__outstanding__free_unpacked(r, NULL);
    if (!same)
        return verify_violation(v, "points outstanding by issuer differ from the journal's");
    v->outstanding_seen = true;
    return CL_OK;
}

static int check_prepaid(verify_t *v, const MDB_val *k, const MDB_val *val, uint64_t *nonzero)
{
    vpartner_t *p = k->mv_size > 1
                        ? vmap_find(&v->partners, (const char *)k->mv_data + 1, k->mv_size - 1)
                        : NULL;
    Coalition__PartnerPosition *r =
        coalition__partner_position__unpack(NULL, val->mv_size, val->mv_data);
    bool same = p != NULL && r != NULL && r->prepaid_remaining == p->prepaid;
    *nonzero += same && p->prepaid != 0;
    coalition__partner_position__free_unpacked(r, NULL);
    if (!same)
        return verify_violation(v, "prepaid block of %.*s differs from its top-ups and earns",
                                (int)k->mv_size - 1, (const char *)k->mv_data + 1);
    return CL_OK;
}

/* What the walk of the settlement database found. */
typedef struct {
    verify_t *v;
    uint64_t windows, open_id;
    uint64_t prev_last_seq;   /* the previous window's last seq (0: open or none) */
    int64_t prev_end_ms;      /* the previous window's end */
    uint64_t prepaid_records; /* those holding points, each matching the journal */
} vsettle_walk_t;

static int check_window_hash(verify_t *v, const Coalition__WindowRecord *r)
{
    if (r->last_seq == 0)
        return r->last_hash.len == 0 || r->last_hash.len == WIRE_HASH_BYTES ? CL_OK
                                                                            : CL_ERR_CORRUPT;
    journal_entry_t *e = NULL;
    int rc = ledger_get_entry(v->ledger, v->txn, r->last_seq, &e);
    if (rc == CL_ERR_NOT_FOUND)
        return verify_violation(v, "window %llu ends at entry %llu, not in the journal",
                                (unsigned long long)r->id, (unsigned long long)r->last_seq);
    bool same = rc == CL_OK && r->last_hash.len == WIRE_HASH_BYTES &&
                memcmp(r->last_hash.data, e->hash.data, WIRE_HASH_BYTES) == 0;
    coalition__journal_entry__free_unpacked(e, NULL);
    if (rc == CL_OK && !same)
        return verify_violation(v, "window %llu's last hash is not the hash of entry %llu",
                                (unsigned long long)r->id, (unsigned long long)r->last_seq);
    return rc;
}

static int check_window(vsettle_walk_t *w, const Coalition__WindowRecord *r)
{
    verify_t *v = w->v;
    uint8_t key[8];
    store_put_u64(key, r->id);
    vwindow_t *seen = vmap_find(&v->windows, key, sizeof key);
    bool open = r->state == COALITION__WINDOW_STATE__WINDOW_OPEN;
    bool closed = r->state == COALITION__WINDOW_STATE__WINDOW_CLOSED;
    if (r->id != w->windows + 1 || w->open_id != 0 || r->start_ms > r->end_ms ||
        (!open && !closed && r->state != COALITION__WINDOW_STATE__WINDOW_ENDED))
        return verify_violation(v, "window record %llu is out of order or in no valid state",
                                (unsigned long long)r->id);
    bool holds = seen != NULL && seen->max_seq != 0; /* a closed window may hold nothing */
    if (holds && (seen->min_seq < r->first_seq || (!open && seen->max_seq > r->last_seq)))
        return verify_violation(v,
                                "window %llu holds entries %llu..%llu outside its seqs %llu..%llu",
                                (unsigned long long)r->id, (unsigned long long)seen->min_seq,
                                (unsigned long long)seen->max_seq, (unsigned long long)r->first_seq,
                                (unsigned long long)r->last_seq);
    uint64_t close_seq = seen != NULL ? seen->close_seq : 0;
    if (closed != (close_seq != 0) || r->close_seq != close_seq)
        return verify_violation(v, "window %llu says closed at %llu, the journal at %llu",
                                (unsigned long long)r->id, (unsigned long long)r->close_seq,
                                (unsigned long long)close_seq);
    vconfig_t cfg = config_before(v, r->first_seq);
    if ((int)r->model != cfg.model || r->grace_seconds != cfg.grace_seconds)
        return verify_violation(v,
                                "window %llu's model or grace is not the configuration's "
                                "before entry %llu",
                                (unsigned long long)r->id, (unsigned long long)r->first_seq);
    if (w->windows > 0 && w->prev_last_seq + 1 != r->first_seq)
        return verify_violation(v, "window %llu starts at entry %llu, its predecessor ends at %llu",
                                (unsigned long long)r->id, (unsigned long long)r->first_seq,
                                (unsigned long long)w->prev_last_seq);
    /* Windows follow each other in time, and an entry recorded after a window's end would
     * have opened the next one (at its end: an early close in the same batch). */
    if ((w->windows > 0 && r->start_ms < w->prev_end_ms) ||
        (holds && seen->max_time_ms > r->end_ms))
        return verify_violation(v,
                                "window %llu (%lld to %lld) overlaps its predecessor or holds an "
                                "entry recorded after its end",
                                (unsigned long long)r->id, (long long)r->start_ms,
                                (long long)r->end_ms);
    w->windows++;
    w->prev_last_seq = r->last_seq;
    w->prev_end_ms = r->end_ms;
    if (open)
        w->open_id = r->id;
    return open ? CL_OK : check_window_hash(v, r);
}

static int visit_settlement(const MDB_val *k, const MDB_val *val, void *ctx)
{
    vsettle_walk_t *w = ctx;
    const char tag = k->mv_size > 0 ? ((const char *)k->mv_data)[0] : 0;
    if (tag == 'C')
        return check_counters(w->v, k, val);
    if (tag == 'P')
        return check_prepaid(w->v, k, val, &w->prepaid_records);
    if (tag == 'S')
        return CL_OK; /* checked after the walk */
    if (tag == 'O' && k->mv_size == 1)
        return check_outstanding(w->v, val);
    Coalition__WindowRecord *r =
        tag == 'W' && k->mv_size == 9
            ? coalition__window_record__unpack(NULL, val->mv_size, val->mv_data)
            : NULL;
    int rc = r != NULL && r->id == store_get_u64((const uint8_t *)k->mv_data + 1)
                 ? check_window(w, r)
                 : verify_violation(w->v, "an unreadable settlement record");
    coalition__window_record__free_unpacked(r, NULL);
    return rc;
}

static int check_state(verify_t *v, const vsettle_walk_t *w)
{
    Coalition__SettlementState *s = NULL;
    int rc = settle_get_state(v->ledger, v->txn, &s);
    if (rc != CL_OK)
        return rc;
    vconfig_t cfg = config_before(v, UINT64_MAX);
    bool ok = s->open_window_id == w->windows && w->open_id == w->windows &&
              v->last_window_id <= w->windows &&
              s->oldest_unclosed_id <= s->open_window_id + (s->open_window_id == 0) &&
              (int)s->config->model == cfg.model && s->config->grace_seconds == cfg.grace_seconds &&
              s->config->period_seconds == cfg.period_seconds;
    coalition__settlement_state__free_unpacked(s, NULL);
    if (!ok)
        return verify_violation(v,
                                "settlement state: %llu windows recorded, the open one is %llu, "
                                "the journal reaches window %llu (or its configuration is not "
                                "the journal's last)",
                                (unsigned long long)w->windows, (unsigned long long)w->open_id,
                                (unsigned long long)v->last_window_id);
    return CL_OK;
}

int verify_settle_records(verify_t *v)
{
    vsettle_walk_t w = {v, 0, 0, 0, 0, 0};
    int rc = store_walk(v->txn, v->ledger->db_contracts, NULL, visit_contract, v);
    if (rc == CL_OK)
        rc = store_walk(v->txn, v->ledger->db_settlement, NULL, visit_settlement, &w);
    if (rc == CL_OK)
        rc = check_state(v, &w);
    for (size_t i = 0; rc == CL_OK && i < v->contracts.count; i++) {
        const vcontract_t *c = vmap_at(&v->contracts, i);
        if (!c->seen)
            rc = verify_violation(v, "contract of %s recorded by entry %llu has no record",
                                  c->c.partner_id, (unsigned long long)c->c.created_seq);
    }
    if (rc == CL_OK && v->outstanding.n > 0 && !v->outstanding_seen)
        rc = verify_violation(v, "the points outstanding by issuer are missing");
    for (size_t i = 0; rc == CL_OK && i < v->pairs.count; i++) {
        const vpair_t *p = vmap_at(&v->pairs, i);
        if (!p->seen)
            rc = verify_violation(
                v, "window %llu: what %s owes %s is missing from its counters",
                (unsigned long long)store_get_u64((const uint8_t *)p->key.bytes + 1),
                p->key.bytes + 10 + strlen(p->key.bytes + 9), p->key.bytes + 9);
    }
    for (size_t i = 0; rc == CL_OK && i < v->counters.count; i++) {
        const vcounters_t *c = vmap_at(&v->counters, i);
        if (!c->seen)
            rc = verify_violation(
                v, "window %llu counters of %s are missing",
                (unsigned long long)store_get_u64((const uint8_t *)c->key.bytes + 1),
                c->key.bytes + 9);
    }
    uint64_t holding = 0;
    for (size_t i = 0; i < v->partners.count; i++)
        holding += ((const vpartner_t *)vmap_at(&v->partners, i))->prepaid != 0;
    if (rc == CL_OK && holding != w.prepaid_records)
        rc = verify_violation(v, "%llu partners hold prepaid points by the journal, %llu records",
                              (unsigned long long)holding, (unsigned long long)w.prepaid_records);
    return rc;
}
