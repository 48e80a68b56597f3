/* Tiers and earning rules: what an earn gets on top of its base points, decided in the
 * writer at the moment of the earn, in this fixed order:
 *
 *   1. tier        the member's tier by its qualifying points before this earn (the base
 *                  points of the current calendar month and the 11 before, UTC, less the
 *                  base share of refunds); bonus = floor(base x (multiplier - 1000) / 1000)
 *   2. rules       the partner's rules in force at that moment, by id:
 *                  multiplier  floor(base x (multiplier - 1000) / 1000)
 *                  threshold   its bonus once the member's spend at the partner this
 *                              calendar month reaches the threshold (this earn included),
 *                              once per rule and month
 *                  first earn  its bonus when the member never earned at the partner before
 *
 * Combination: every bonus is computed on the base points alone (multipliers add, they
 * never compound) and is its own pair of postings from the partner's issued account:
 * the partner running the rule (for the tier, the partner of the earn) is billed for it
 * in settlement like any issued point. Then the earn's base points qualify (bonuses never
 * do) and the tier it leaves is recorded: a tier change takes effect from the next earn.
 *
 *   rules database: partner NUL u64be(id) -> RuleRecord, at most
 *   RULES_ACTIVE_PER_PARTNER_MAX per partner not yet ended (an ended rule is kept until
 *   a rule add finds it over, then dropped; its entries stay in the journal).
 *   spend: "member:ID" NUL 0xFF partner -> SpendRecord (threshold rules only), in the
 *   accounts database beside the member's balance and lots (see lots.c). */
#include "ledger_internal.h"

#include "errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

_Static_assert(QUAL_MONTHS == 12, "a rolling year of calendar months");
_Static_assert(SETTLE_PARTNERS_MAX <= PARTNERS_USED_BYTES * 8, "a bit per partner");
#define RULE_KEY_BYTES (PARTNER_ID_LEN_MAX + 1 + 8)
/* "member:ID" NUL 0xFF partner, in the accounts database after the member's lots (a lot
 * key's byte after the NUL is its expiry's first, at most 0x7F). */
#define SPEND_KEY_BYTES (sizeof MEMBER_PREFIX - 1 + MEMBER_ID_LEN_MAX + 2 + PARTNER_ID_LEN_MAX)
#define SPEND_MARK 0xFFu
_Static_assert(SPEND_MARK > (LOT_NO_EXPIRY_MS >> 56), "spend keys sort after every lot key");

int64_t earning_month(int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    int64_t month = ((int64_t)tm.tm_year - 70) * 12 + tm.tm_mon;
    assert(ms < 0 || month >= 0);
    return month;
}

/* ---- tiers -------------------------------------------------------------------------- */

static int tiers_get(ledger_t *self, MDB_txn *txn, Coalition__TierSettings **out)
{
    int rc = ledger_get_record(txn, self->db_meta, TIERS_KEY, strlen(TIERS_KEY),
                               &coalition__tier_settings__descriptor, (ProtobufCMessage **)out);
    if (rc == CL_ERR_NOT_FOUND)
        *out = NULL;
    if (rc == CL_OK && (*out)->n_tiers > TIERS_MAX) {
        coalition__tier_settings__free_unpacked(*out, NULL);
        *out = NULL;
        return CL_ERR_CORRUPT; /* read from disk */
    }
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

/* The tier qualifying points `q` hold (none: "" and x1). */
static void tier_for(const Coalition__TierSettings *t, int64_t q, char name[TIER_NAME_LEN_MAX + 1],
                     int64_t *multiplier)
{
    name[0] = '\0';
    *multiplier = MULTIPLIER_MILLI_MIN;
    for (size_t i = 0; t != NULL && i < t->n_tiers && t->tiers[i]->threshold_points <= q; i++) {
        snprintf(name, TIER_NAME_LEN_MAX + 1, "%s", t->tiers[i]->name);
        *multiplier = t->tiers[i]->multiplier_milli;
    }
}

int rules_tier_settings(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__TierSettingsRequest *r = env->tier_settings;
    assert(r->n_tiers <= TIERS_MAX); /* wire_validate checked it */
    coalition__tier_settings__init(&d->tier_settings);
    for (size_t i = 0; i < r->n_tiers; i++) {
        coalition__tier_record__init(&d->tier_recs[i]);
        d->tier_recs[i].name = r->tiers[i]->name;
        d->tier_recs[i].threshold_points = r->tiers[i]->threshold_points;
        d->tier_recs[i].multiplier_milli = r->tiers[i]->multiplier_milli;
        d->tier_ptrs[i] = &d->tier_recs[i];
    }
    d->tier_settings.tiers = d->tier_ptrs;
    d->tier_settings.n_tiers = r->n_tiers;
    assert(r->n_tiers == 0 || d->tier_recs[0].threshold_points == 0);
    d->tier_settings.set_seq = self->batch_seq + 1;
    d->has_tier_settings = true;
    d->kind = COALITION__ENTRY_KIND__ENTRY_TIER_SETTINGS;
    snprintf(d->text, sizeof d->text, "Tiers set: %zu tier(s), from now on", r->n_tiers);
    return ledger_put_record(txn, self->db_meta, TIERS_KEY, strlen(TIERS_KEY),
                             &d->tier_settings.base);
}

/* Roll the member's ring of monthly qualifying points forward to `month`. */
static int qual_roll(Coalition__LotSummary *m, int64_t month, int64_t ring[QUAL_MONTHS])
{
    memset(ring, 0, QUAL_MONTHS * sizeof ring[0]);
    if (m->n_qual_points != 0 && m->n_qual_points != QUAL_MONTHS)
        return CL_ERR_CORRUPT; /* read from disk */
    for (size_t i = 0; i < m->n_qual_points; i++)
        ring[i] = m->qual_points[i];
    if (m->n_qual_points == 0 || month - m->qual_month >= QUAL_MONTHS) {
        memset(ring, 0, QUAL_MONTHS * sizeof ring[0]);
    } else {
        for (int64_t k = m->qual_month + 1; k <= month; k++)
            ring[k % QUAL_MONTHS] = 0;
    }
    if (month > m->qual_month || m->n_qual_points == 0)
        m->qual_month = month;
    return CL_OK;
}

static int64_t qual_sum(const int64_t ring[QUAL_MONTHS])
{
    int64_t q = 0;
    for (size_t i = 0; i < QUAL_MONTHS; i++)
        q += ring[i];
    return q;
}

/* The record's fields earning.c replaces, kept to be put back (lots_discard). */
static void holder_swap(lot_holder_t *h)
{
    if (h->swapped)
        return;
    h->orig_qual = h->rec->qual_points;
    h->orig_n_qual = h->rec->n_qual_points;
    h->orig_used = h->rec->partners_used;
    h->orig_tier = h->rec->tier;
    h->swapped = true;
}

/* The ring back into the record (the holder owns the record; the ring lives in `h`). */
static void qual_store(lot_holder_t *h, const int64_t ring[QUAL_MONTHS])
{
    holder_swap(h);
    memcpy(h->qual, ring, sizeof h->qual);
    h->rec->qual_points = h->qual;
    h->rec->n_qual_points = QUAL_MONTHS;
}

/* ---- rules -------------------------------------------------------------------------- */

static size_t rule_key(uint8_t key[RULE_KEY_BYTES], const char *partner, uint64_t id)
{
    size_t n = strlen(partner);
    memcpy(key, partner, n);
    key[n] = 0;
    store_put_u64(key + n + 1, id);
    assert(n + 9 <= RULE_KEY_BYTES);
    return n + 9;
}

/* The partner's rules in id order (at most RULES_ACTIVE_PER_PARTNER_MAX are stored). */
static int rules_of(ledger_t *self, MDB_txn *txn, const char *partner,
                    Coalition__RuleRecord *out[RULES_ACTIVE_PER_PARTNER_MAX], size_t *n)
{
    uint8_t key[RULE_KEY_BYTES];
    MDB_val k = {rule_key(key, partner, 0), key}, v;
    MDB_cursor *cur = NULL;
    size_t plen = strlen(partner) + 1;
    *n = 0;
    int rc = store_err(mdb_cursor_open(txn, self->db_rules, &cur));
    if (rc != CL_OK)
        return rc;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == MDB_SUCCESS && k.mv_size == plen + 8 && memcmp(k.mv_data, key, plen) == 0) {
        if (*n == RULES_ACTIVE_PER_PARTNER_MAX) {
            rc = CL_ERR_CORRUPT; /* rule add keeps it to this many */
            break;
        }
        out[*n] = coalition__rule_record__unpack(NULL, v.mv_size, v.mv_data);
        if (out[*n] == NULL) {
            rc = CL_ERR_CORRUPT;
            break;
        }
        (*n)++;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == CL_OK && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
        rc = store_err(mrc);
    return rc;
}

static void rules_free(Coalition__RuleRecord *rules[], size_t n)
{
    for (size_t i = 0; i < n; i++)
        coalition__rule_record__free_unpacked(rules[i], NULL);
}

static bool rule_active(const Coalition__RuleRecord *r, int64_t at_ms)
{
    return r->from_ms <= at_ms && (r->until_ms == 0 || at_ms < r->until_ms);
}

static bool rule_over(const Coalition__RuleRecord *r, int64_t at_ms)
{
    return r->until_ms != 0 && r->until_ms <= at_ms;
}

static int partner_known(ledger_t *self, MDB_txn *txn, const char *partner, decision_t *d)
{
    Coalition__PartnerRecord *p = NULL;
    int rc = ledger_get_record(txn, self->db_partners, partner, strlen(partner),
                               &coalition__partner_record__descriptor, (ProtobufCMessage **)&p);
    coalition__partner_record__free_unpacked(p, NULL);
    if (rc == CL_ERR_NOT_FOUND)
        rules_decline(d, RC_UNKNOWN_PARTNER, "unknown partner %s", partner);
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

/* Rules whose end has passed leave the rules database (their entries stay). */
static int drop_over(ledger_t *self, MDB_txn *txn, Coalition__RuleRecord *rules[], size_t n,
                     int64_t now_ms, size_t *left)
{
    *left = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rule_over(rules[i], now_ms)) {
            (*left)++;
            continue;
        }
        uint8_t key[RULE_KEY_BYTES];
        MDB_val k = {rule_key(key, rules[i]->partner_id, rules[i]->id), key};
        int rc = store_err(mdb_del(txn, self->db_rules, &k, NULL));
        if (rc != CL_OK)
            return rc;
    }
    return CL_OK;
}

int rules_rule_add(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__RuleAddRequest *r = env->rule_add;
    int rc = partner_known(self, txn, r->partner_id, d);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    int64_t from = r->from_ms == 0 ? d->now_ms : r->from_ms;
    if (from < d->now_ms || (r->until_ms != 0 && r->until_ms <= from)) {
        rules_decline(d, RC_INVALID_AMOUNT, "a rule starts now or later and ends after it starts");
        return CL_OK;
    }
    Coalition__RuleRecord *rules[RULES_ACTIVE_PER_PARTNER_MAX];
    size_t n = 0, left = 0;
    rc = rules_of(self, txn, r->partner_id, rules, &n);
    if (rc == CL_OK)
        rc = drop_over(self, txn, rules, n, d->now_ms, &left);
    rules_free(rules, n);
    if (rc == CL_OK && left == RULES_ACTIVE_PER_PARTNER_MAX)
        rules_decline(d, RC_EXCEEDS_LIMIT, "%s runs %d rules already; end one first", r->partner_id,
                      RULES_ACTIVE_PER_PARTNER_MAX);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    Coalition__RuleRecord *rec = &d->rule;
    coalition__rule_record__init(rec);
    rec->id = self->batch_seq + 1;
    rec->partner_id = r->partner_id;
    rec->kind = (uint32_t)r->kind;
    rec->from_ms = from;
    rec->until_ms = r->until_ms;
    rec->multiplier_milli = r->multiplier_milli;
    rec->threshold_minor = r->threshold_minor;
    rec->bonus_points = r->bonus_points;
    d->has_rule = true;
    d->kind = COALITION__ENTRY_KIND__ENTRY_RULE_ADD;
    d->participant = r->partner_id;
    snprintf(d->text, sizeof d->text, "Rule %" PRIu64 " of %s added", rec->id, r->partner_id);
    uint8_t key[RULE_KEY_BYTES];
    return ledger_put_record(txn, self->db_rules, key, rule_key(key, r->partner_id, rec->id),
                             &rec->base);
}

int rules_rule_end(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__RuleEndRequest *r = env->rule_end;
    uint8_t key[RULE_KEY_BYTES];
    size_t len = rule_key(key, r->partner_id, r->rule_id);
    Coalition__RuleRecord *rec = NULL;
    int rc = ledger_get_record(txn, self->db_rules, key, len, &coalition__rule_record__descriptor,
                               (ProtobufCMessage **)&rec);
    int64_t at = r->at_ms == 0 ? d->now_ms : r->at_ms;
    if (rc == CL_ERR_NOT_FOUND)
        rules_decline(d, RC_ORIGINAL_NOT_FOUND, "%s runs no rule %" PRIu64 " (or it is over)",
                      r->partner_id, r->rule_id);
    else if (rc == CL_OK && (at < d->now_ms || rule_over(rec, d->now_ms) ||
                             (rec->until_ms != 0 && at >= rec->until_ms)))
        rules_decline(d, RC_INVALID_AMOUNT,
                      "a rule ends now or later, and only before the end it has");
    if (rc != CL_OK || d->code != RC_APPROVED) {
        coalition__rule_record__free_unpacked(rec, NULL);
        return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
    }
    d->rule = *rec;
    d->rule.base.n_unknown_fields = 0;
    d->rule.until_ms = at < rec->from_ms ? rec->from_ms : at; /* not begun: it never runs */
    d->rule.ended_seq = self->batch_seq + 1;
    snprintf(d->rule_partner, sizeof d->rule_partner, "%s", rec->partner_id);
    d->rule.partner_id = d->rule_partner;
    coalition__rule_record__free_unpacked(rec, NULL);
    d->has_rule = true;
    d->kind = COALITION__ENTRY_KIND__ENTRY_RULE_END;
    d->participant = r->partner_id;
    snprintf(d->text, sizeof d->text, "Rule %" PRIu64 " of %s ends", r->rule_id, r->partner_id);
    return ledger_put_record(txn, self->db_rules, key, len, &d->rule.base);
}

/* ---- an earn's plan ----------------------------------------------------------------- */

static int add_bonus(decision_t *d, uint64_t rule_id, uint32_t kind, int64_t points)
{
    if (points <= 0)
        return CL_OK;
    assert(d->n_bonuses < BONUSES_PER_EARN_MAX); /* one per rule stored, and the tier's */
    earn_bonus_t *b = &d->bonuses[d->n_bonuses++];
    b->rule_id = rule_id;
    b->kind = kind;
    b->points = points;
    return __builtin_add_overflow(d->bonus_total, points, &d->bonus_total) ? CL_ERR_OVERFLOW
                                                                           : CL_OK;
}

static int64_t multiplied(int64_t base, int64_t multiplier_milli)
{
    __extension__ __int128 b = (__int128)base * (multiplier_milli - MULTIPLIER_MILLI_MIN) / 1000;
    return b > POINTS_MAX ? POINTS_MAX + 1 : (int64_t)b;
}

/* A member's spend at a partner this month (SpendRecord, worked on here). */
typedef struct spend {
    int64_t month, spent_minor;
    uint64_t given[RULES_ACTIVE_PER_PARTNER_MAX];
    size_t n_given;
} spend_t;

static size_t spend_key(uint8_t key[SPEND_KEY_BYTES], const char *member, const char *partner)
{
    size_t pre = strlen(MEMBER_PREFIX), m = strlen(member), p = strlen(partner);
    assert(m > 0 && m <= MEMBER_ID_LEN_MAX && p > 0 && p <= PARTNER_ID_LEN_MAX);
    memcpy(key, MEMBER_PREFIX, pre);
    memcpy(key + pre, member, m);
    key[pre + m] = 0;
    key[pre + m + 1] = SPEND_MARK;
    memcpy(key + pre + m + 2, partner, p);
    assert(pre + m + 2 + p <= SPEND_KEY_BYTES);
    return pre + m + 2 + p;
}

/* This month's spend with this earn's amount added (a new month starts from nothing). */
static int spend_load(ledger_t *self, MDB_txn *txn, const uint8_t *key, size_t len, int64_t month,
                      int64_t amount_minor, spend_t *s)
{
    Coalition__SpendRecord *r = NULL;
    memset(s, 0, sizeof *s);
    s->month = month;
    int rc = ledger_get_record(txn, self->db_accounts, key, len,
                               &coalition__spend_record__descriptor, (ProtobufCMessage **)&r);
    if (rc == CL_OK && r->month == month) {
        if (r->n_given_rule_ids > RULES_ACTIVE_PER_PARTNER_MAX || r->spent_minor < 0)
            rc = CL_ERR_CORRUPT; /* read from disk */
        else {
            s->spent_minor = r->spent_minor;
            s->n_given = r->n_given_rule_ids;
            for (size_t i = 0; i < s->n_given; i++)
                s->given[i] = r->given_rule_ids[i];
        }
    }
    coalition__spend_record__free_unpacked(r, NULL);
    if (rc == CL_ERR_NOT_FOUND)
        rc = CL_OK;
    if (rc == CL_OK && __builtin_add_overflow(s->spent_minor, amount_minor, &s->spent_minor))
        rc = CL_ERR_OVERFLOW;
    return rc;
}

static int spend_put(ledger_t *self, MDB_txn *txn, const uint8_t *key, size_t len, spend_t *s)
{
    Coalition__SpendRecord r = COALITION__SPEND_RECORD__INIT;
    r.month = s->month;
    r.spent_minor = s->spent_minor;
    r.given_rule_ids = s->given;
    r.n_given_rule_ids = s->n_given;
    return ledger_put_record(txn, self->db_accounts, key, len, &r.base);
}

/* A threshold rule: its bonus when this month's spend there reaches it, once a month. */
static int threshold_bonus(const Coalition__RuleRecord *r, spend_t *s, decision_t *d)
{
    if (s->spent_minor < r->threshold_minor)
        return CL_OK;
    for (size_t i = 0; i < s->n_given; i++)
        if (s->given[i] == r->id)
            return CL_OK;
    if (s->n_given == RULES_ACTIVE_PER_PARTNER_MAX)
        return CL_ERR_CORRUPT; /* spend_prune keeps only rules in force, at most this many */
    s->given[s->n_given++] = r->id;
    return add_bonus(d, r->id, r->kind, r->bonus_points);
}

/* Only the rules in force now are remembered as paid this month: a rule out of force is
 * never in force again (its end only moves earlier), and at most
 * RULES_ACTIVE_PER_PARTNER_MAX are in force at once. */
static void spend_prune(spend_t *s, Coalition__RuleRecord *rules[], size_t n, int64_t at_ms)
{
    size_t kept = 0;
    for (size_t g = 0; g < s->n_given; g++) {
        bool active = false;
        for (size_t i = 0; i < n && !active; i++)
            active = rules[i]->id == s->given[g] && rule_active(rules[i], at_ms);
        if (active)
            s->given[kept++] = s->given[g];
    }
    assert(kept <= s->n_given);
    s->n_given = kept;
    assert(s->n_given <= RULES_ACTIVE_PER_PARTNER_MAX);
}

static bool any_threshold(Coalition__RuleRecord *rules[], size_t n, int64_t at_ms)
{
    for (size_t i = 0; i < n; i++)
        if (rules[i]->kind == COALITION__RULE_KIND__RULE_THRESHOLD && rule_active(rules[i], at_ms))
            return true;
    return false;
}

/* The partner's rules in force, applied in id order. */
static int rule_bonuses(ledger_t *self, MDB_txn *txn, const char *partner, lot_holder_t *h,
                        bool first_at_partner, int64_t amount_minor, int64_t base, decision_t *d)
{
    Coalition__RuleRecord *rules[RULES_ACTIVE_PER_PARTNER_MAX];
    size_t n = 0;
    int rc = rules_of(self, txn, partner, rules, &n);
    uint8_t key[SPEND_KEY_BYTES];
    size_t key_len = spend_key(key, h->member, partner);
    spend_t spend;
    bool thresholds = rc == CL_OK && any_threshold(rules, n, d->now_ms);
    if (thresholds)
        rc = spend_load(self, txn, key, key_len, earning_month(d->now_ms), amount_minor, &spend);
    if (thresholds && rc == CL_OK)
        spend_prune(&spend, rules, n, d->now_ms);
    for (size_t i = 0; i < n && rc == CL_OK; i++) {
        const Coalition__RuleRecord *r = rules[i];
        if (!rule_active(r, d->now_ms))
            continue;
        if (r->kind == COALITION__RULE_KIND__RULE_MULTIPLIER)
            rc = add_bonus(d, r->id, r->kind, multiplied(base, r->multiplier_milli));
        else if (r->kind == COALITION__RULE_KIND__RULE_FIRST_EARN && first_at_partner)
            rc = add_bonus(d, r->id, r->kind, r->bonus_points);
        else if (r->kind == COALITION__RULE_KIND__RULE_THRESHOLD)
            rc = threshold_bonus(r, &spend, d);
    }
    if (rc == CL_OK && thresholds)
        rc = spend_put(self, txn, key, key_len, &spend);
    rules_free(rules, n);
    return rc;
}

int earning_plan(ledger_t *self, MDB_txn *txn, const char *partner, uint32_t ordinal,
                 lot_holder_t *h, int64_t amount_minor, int64_t base, decision_t *d)
{
    assert(base >= 0 && base <= POINTS_MAX && ordinal < SETTLE_PARTNERS_MAX);
    Coalition__TierSettings *t = NULL;
    int64_t ring[QUAL_MONTHS];
    int rc = tiers_get(self, txn, &t);
    if (rc == CL_OK)
        rc = qual_roll(h->rec, earning_month(d->now_ms), ring);
    if (rc != CL_OK) {
        coalition__tier_settings__free_unpacked(t, NULL);
        return rc;
    }
    d->base_points = base;
    d->qualifying = qual_sum(ring);
    tier_for(t, d->qualifying, d->tier, &d->tier_multiplier_milli);
    rc = add_bonus(d, 0, COALITION__RULE_KIND__RULE_NONE,
                   multiplied(base, d->tier_multiplier_milli));
    uint8_t used[PARTNERS_USED_BYTES] = {0};
    if (h->rec->partners_used.len > PARTNERS_USED_BYTES)
        rc = CL_ERR_CORRUPT;
    else if (h->rec->partners_used.len > 0)
        memcpy(used, h->rec->partners_used.data, h->rec->partners_used.len);
    bool first = (used[ordinal / 8] & (1u << (ordinal % 8))) == 0;
    if (rc == CL_OK)
        rc = rule_bonuses(self, txn, partner, h, first, amount_minor, base, d);
    if (rc == CL_OK && (d->bonus_total > POINTS_MAX - base))
        rules_decline(d, RC_EXCEEDS_LIMIT, "points with bonuses exceed the per-request limit");
    /* What the earn leaves: its base qualifies; the member has used the partner. */
    ring[earning_month(d->now_ms) % QUAL_MONTHS] += base;
    tier_for(t, qual_sum(ring), d->tier_after, &(int64_t){0});
    coalition__tier_settings__free_unpacked(t, NULL);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    qual_store(h, ring);
    used[ordinal / 8] |= (uint8_t)(1u << (ordinal % 8));
    memcpy(h->used, used, sizeof used);
    h->rec->partners_used.data = h->used;
    h->rec->partners_used.len = sizeof h->used;
    snprintf(h->tier, sizeof h->tier, "%s", d->tier_after);
    h->rec->tier = h->tier;
    d->has_tier = true;
    assert(d->n_bonuses <= BONUSES_PER_EARN_MAX && d->bonus_total >= 0);
    return CL_OK;
}

/* An earn's reversal: the base share given back leaves its month's qualifying points
 * (if that month is still in the window), and the tier is what is left. */
int earning_reversal(ledger_t *self, MDB_txn *txn, lot_holder_t *h, const journal_entry_t *earn,
                     int64_t minor_before, int64_t minor_after, decision_t *d)
{
    if (earn->base_points < 0 || earn->base_points > earn->points || earn->amount_minor <= 0)
        return CL_ERR_CORRUPT; /* read from disk */
    int64_t base = amount_share(earn->base_points, minor_after, earn->amount_minor) -
                   amount_share(earn->base_points, minor_before, earn->amount_minor);
    Coalition__TierSettings *t = NULL;
    int64_t ring[QUAL_MONTHS];
    int rc = tiers_get(self, txn, &t);
    if (rc == CL_OK)
        rc = qual_roll(h->rec, earning_month(d->now_ms), ring);
    int64_t m = earning_month(earn->time_ms);
    if (rc == CL_OK && m > h->rec->qual_month - QUAL_MONTHS && m <= h->rec->qual_month) {
        int64_t *b = &ring[m % QUAL_MONTHS];
        *b -= base < *b ? base : *b;
    }
    int64_t mult = 0;
    tier_for(t, qual_sum(ring), d->tier_after, &mult);
    coalition__tier_settings__free_unpacked(t, NULL);
    if (rc != CL_OK)
        return rc;
    qual_store(h, ring);
    snprintf(h->tier, sizeof h->tier, "%s", d->tier_after);
    h->rec->tier = h->tier;
    d->has_tier = true;
    return CL_OK;
}

/* ---- read side ---------------------------------------------------------------------- */

typedef struct tiers_call {
    ledger_tier_row_t *rows;
    size_t max, count;
} tiers_call_t;

static int tiers_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    tiers_call_t *c = ctx;
    Coalition__TierSettings *t = NULL;
    int rc = tiers_get(self, txn, &t);
    for (size_t i = 0; rc == CL_OK && t != NULL && i < t->n_tiers && c->count < c->max; i++) {
        ledger_tier_row_t *r = &c->rows[c->count++];
        snprintf(r->name, sizeof r->name, "%s", t->tiers[i]->name);
        r->threshold_points = t->tiers[i]->threshold_points;
        r->multiplier_milli = t->tiers[i]->multiplier_milli;
    }
    coalition__tier_settings__free_unpacked(t, NULL);
    return rc;
}

int ledger_tiers(ledger_t *self, ledger_tier_row_t *rows, size_t max, size_t *count_out)
{
    tiers_call_t c = {rows, max, 0};
    int rc = ledger_with_reader(self, tiers_in, &c);
    *count_out = c.count;
    return rc;
}

typedef struct rules_call {
    const char *partner; /* NULL: all */
    ledger_rule_row_t *rows;
    size_t max, count;
} rules_call_t;

static int rules_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    rules_call_t *c = ctx;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = store_err(mdb_cursor_open(txn, self->db_rules, &cur));
    if (rc != CL_OK)
        return rc;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (mrc == MDB_SUCCESS && c->count < c->max && rc == CL_OK) {
        Coalition__RuleRecord *r = coalition__rule_record__unpack(NULL, v.mv_size, v.mv_data);
        if (r == NULL)
            rc = CL_ERR_CORRUPT;
        else if (c->partner == NULL || strcmp(c->partner, r->partner_id) == 0) {
            ledger_rule_row_t *o = &c->rows[c->count++];
            o->id = r->id;
            snprintf(o->partner_id, sizeof o->partner_id, "%s", r->partner_id);
            o->kind = (int)r->kind;
            o->from_ms = r->from_ms;
            o->until_ms = r->until_ms;
            o->multiplier_milli = r->multiplier_milli;
            o->threshold_minor = r->threshold_minor;
            o->bonus_points = r->bonus_points;
        }
        coalition__rule_record__free_unpacked(r, NULL);
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc;
}

int ledger_rules(ledger_t *self, const char *partner, ledger_rule_row_t *rows, size_t max,
                 size_t *count_out)
{
    rules_call_t c = {partner, rows, max, 0};
    int rc = ledger_with_reader(self, rules_in, &c);
    *count_out = c.count;
    return rc;
}
