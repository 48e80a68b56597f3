/* The audit of tiers and earning rules: the journal's tier settings and rules replayed,
 * and every earn's tier, qualifying points and bonuses re-derived in the order and by
 * the combination rule of earning.c (each member's qualifying points by month, the
 * partners it has earned at, its spend at each partner this month for threshold rules).
 * An earn's reversal takes its base share out of the qualifying points again. After the
 * walk each member record's tier and qualifying points must be what the journal made.
 *
 * Memory: one item per member that ever earned, one per (member, partner) pair under a
 * threshold rule, one per rule. */
#include "verify_internal.h"

#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEQ(e) ((unsigned long long)(e)->seq)
#define VRULES_MAX (1u << 20)

typedef struct vqual {
    vkey_t member;
    int64_t month;
    int64_t ring[QUAL_MONTHS];
    char tier[TIER_NAME_LEN_MAX + 1];
    uint8_t used[PARTNERS_USED_BYTES]; /* bit: the partner's index in v->partners */
    int64_t last_activity;             /* its latest earn or burn (a claim: the card's) */
    bool qualified;                    /* an earn or its reversal set its ring */
    bool seen;
} vqual_t;

typedef struct vspend {
    vkey_t key; /* member NUL partner */
    int64_t month, spent;
    uint64_t given[RULES_ACTIVE_PER_PARTNER_MAX];
    size_t n_given;
} vspend_t;

typedef struct vrule {
    uint64_t id;
    char partner[PARTNER_ID_LEN_MAX + 1];
    uint32_t kind;
    int64_t from_ms, until_ms, multiplier_milli, threshold_minor, bonus_points;
} vrule_t;

struct vearning {
    vmap_t quals, spends;
    vrule_t *rules;
    size_t n_rules, cap_rules;
    Coalition__TierRecord tiers[TIERS_MAX];
    char names[TIERS_MAX][TIER_NAME_LEN_MAX + 1];
    size_t n_tiers;
};

int verify_earning_init(verify_t *v)
{
    v->earning = calloc(1, sizeof *v->earning);
    if (v->earning == NULL)
        return CL_ERR_NOMEM;
    vmap_init(&v->earning->quals, sizeof(vqual_t));
    vmap_init(&v->earning->spends, sizeof(vspend_t));
    return CL_OK;
}

void verify_earning_free(verify_t *v)
{
    if (v->earning == NULL)
        return;
    vmap_free(&v->earning->quals);
    vmap_free(&v->earning->spends);
    free(v->earning->rules);
    free(v->earning);
    v->earning = NULL;
}

/* ---- tiers and rules as the journal sets them --------------------------------------- */

static void tier_for(const struct vearning *g, int64_t q, const char **name, int64_t *mult)
{
    *name = "";
    *mult = MULTIPLIER_MILLI_MIN;
    for (size_t i = 0; i < g->n_tiers && g->tiers[i].threshold_points <= q; i++) {
        *name = g->names[i];
        *mult = g->tiers[i].multiplier_milli;
    }
}

static int note_tiers(verify_t *v, const journal_entry_t *e)
{
    struct vearning *g = v->earning;
    const Coalition__TierSettings *t = e->tier_settings;
    if (t == NULL || t->n_tiers > TIERS_MAX || t->set_seq != e->seq)
        return verify_violation(v, "entry %llu is not a tier setting the rules record", SEQ(e));
    for (size_t i = 0; i < t->n_tiers; i++) {
        const Coalition__TierRecord *r = t->tiers[i];
        bool rises = i == 0 ? r->threshold_points == 0
                            : r->threshold_points > t->tiers[i - 1]->threshold_points;
        if (!rises || !wire_id_valid(r->name, TIER_NAME_LEN_MAX) ||
            r->multiplier_milli < MULTIPLIER_MILLI_MIN ||
            r->multiplier_milli > MULTIPLIER_MILLI_MAX)
            return verify_violation(v, "entry %llu: tier %zu is not one the rules accept", SEQ(e),
                                    i + 1);
        g->tiers[i] = *r;
        snprintf(g->names[i], sizeof g->names[i], "%s", r->name);
    }
    g->n_tiers = t->n_tiers;
    return verify_expect_no_moves(v, e);
}

static vrule_t *rule_find(struct vearning *g, uint64_t id)
{
    for (size_t i = g->n_rules; i > 0; i--) /* newest first: ends name recent rules */
        if (g->rules[i - 1].id == id)
            return &g->rules[i - 1];
    return NULL;
}

static int note_rule(verify_t *v, const journal_entry_t *e)
{
    struct vearning *g = v->earning;
    const Coalition__RuleRecord *r = e->rule;
    bool add = e->kind == COALITION__ENTRY_KIND__ENTRY_RULE_ADD;
    vrule_t *have = r != NULL ? rule_find(g, r->id) : NULL;
    if (r == NULL ||
        (add ? (r->id != e->seq || have != NULL || r->from_ms < e->time_ms)
             : (have == NULL || r->ended_seq != e->seq ||
                strcmp(have->partner, r->partner_id) != 0 || r->until_ms < e->time_ms ||
                (have->until_ms != 0 && r->until_ms >= have->until_ms))))
        return verify_violation(v, "entry %llu (%s) is not a rule change the rules make", SEQ(e),
                                ledger_entry_kind_name(e->kind));
    if (!add) {
        have->until_ms = r->until_ms;
        return verify_expect_no_moves(v, e);
    }
    if (g->n_rules == g->cap_rules) {
        size_t cap = g->cap_rules == 0 ? 16 : 2 * g->cap_rules;
        vrule_t *grown = cap <= VRULES_MAX ? realloc(g->rules, cap * sizeof *grown) : NULL;
        if (grown == NULL)
            return CL_ERR_NOMEM;
        g->rules = grown;
        g->cap_rules = cap;
    }
    vrule_t *n = &g->rules[g->n_rules++];
    *n = (vrule_t){r->id,
                   "",
                   r->kind,
                   r->from_ms,
                   r->until_ms,
                   r->multiplier_milli,
                   r->threshold_minor,
                   r->bonus_points};
    snprintf(n->partner, sizeof n->partner, "%s", r->partner_id);
    return verify_expect_no_moves(v, e);
}

/* ---- members' qualifying points ----------------------------------------------------- */

static int qual_of(verify_t *v, const char *member, vqual_t **out)
{
    vmap_t *m = &v->earning->quals;
    *out = vmap_find(m, member, strlen(member));
    if (*out != NULL)
        return CL_OK;
    int rc = vmap_insert(m, member, strlen(member), (void **)out);
    if (rc == CL_OK)
        (*out)->month = -1; /* nothing yet: the first roll starts the ring */
    return rc;
}

static void qual_roll(vqual_t *q, int64_t month)
{
    if (q->month < 0 || month - q->month >= QUAL_MONTHS)
        memset(q->ring, 0, sizeof q->ring);
    else
        for (int64_t k = q->month + 1; k <= month; k++)
            q->ring[k % QUAL_MONTHS] = 0;
    if (month > q->month)
        q->month = month;
}

static int64_t qual_sum(const vqual_t *q)
{
    int64_t s = 0;
    for (size_t i = 0; i < QUAL_MONTHS; i++)
        s += q->ring[i];
    return s;
}

static int64_t multiplied(int64_t base, int64_t multiplier_milli)
{
    __extension__ __int128 b = (__int128)base * (multiplier_milli - MULTIPLIER_MILLI_MIN) / 1000;
    return b > POINTS_MAX ? POINTS_MAX + 1 : (int64_t)b;
}

/* ---- an earn ------------------------------------------------------------------------ */

typedef struct expected {
    earn_bonus_t b[BONUSES_PER_EARN_MAX];
    size_t n;
} expected_t;

static void expect_bonus(expected_t *x, uint64_t id, uint32_t kind, int64_t points)
{
    if (points <= 0 || x->n == BONUSES_PER_EARN_MAX)
        return;
    x->b[x->n++] = (earn_bonus_t){id, kind, points};
}

static int spend_of(verify_t *v, const journal_entry_t *e, int64_t month, vspend_t **out)
{
    char key[MEMBER_ID_LEN_MAX + 1 + PARTNER_ID_LEN_MAX + 1];
    size_t m = strlen(e->member_id), p = strlen(e->partner_id);
    memcpy(key, e->member_id, m + 1);
    memcpy(key + m + 1, e->partner_id, p);
    *out = vmap_find(&v->earning->spends, key, m + 1 + p);
    int rc = *out == NULL ? vmap_insert(&v->earning->spends, key, m + 1 + p, (void **)out) : CL_OK;
    if (rc == CL_OK && (*out)->month != month) {
        (*out)->month = month;
        (*out)->spent = 0;
        (*out)->n_given = 0;
    }
    assert(rc != CL_OK || (*out)->month == month);
    return rc;
}

/* As earning.c's spend_prune: only rules in force at t stay remembered as paid. */
static void prune_given(const struct vearning *g, vspend_t *s, const char *partner, int64_t t)
{
    size_t kept = 0;
    for (size_t k = 0; k < s->n_given; k++) {
        bool active = false;
        for (size_t i = 0; i < g->n_rules && !active; i++) {
            const vrule_t *r = &g->rules[i];
            active = r->id == s->given[k] && strcmp(r->partner, partner) == 0 && r->from_ms <= t &&
                     (r->until_ms == 0 || t < r->until_ms);
        }
        if (active)
            s->given[kept++] = s->given[k];
    }
    s->n_given = kept;
}

static int rule_bonuses(verify_t *v, const journal_entry_t *e, bool first, expected_t *x)
{
    struct vearning *g = v->earning;
    int64_t t = e->time_ms, month = earning_month(t);
    vspend_t *s = NULL;
    for (size_t i = 0; i < g->n_rules; i++) { /* ids rise with the journal */
        const vrule_t *r = &g->rules[i];
        bool active = r->from_ms <= t && (r->until_ms == 0 || t < r->until_ms);
        if (!active || strcmp(r->partner, e->partner_id) != 0)
            continue;
        if (r->kind == COALITION__RULE_KIND__RULE_MULTIPLIER)
            expect_bonus(x, r->id, r->kind, multiplied(e->base_points, r->multiplier_milli));
        else if (r->kind == COALITION__RULE_KIND__RULE_FIRST_EARN && first)
            expect_bonus(x, r->id, r->kind, r->bonus_points);
        if (r->kind != COALITION__RULE_KIND__RULE_THRESHOLD)
            continue;
        if (s == NULL) { /* the first threshold rule in force adds this earn's money */
            int rc = spend_of(v, e, month, &s);
            if (rc != CL_OK)
                return rc;
            s->spent += e->amount_minor;
            prune_given(g, s, e->partner_id, t);
        }
        bool given = false;
        for (size_t k = 0; k < s->n_given; k++)
            given = given || s->given[k] == r->id;
        if (given || s->spent < r->threshold_minor || s->n_given == RULES_ACTIVE_PER_PARTNER_MAX)
            continue;
        s->given[s->n_given++] = r->id;
        expect_bonus(x, r->id, r->kind, r->bonus_points);
    }
    return CL_OK;
}

static bool same_bonuses(const journal_entry_t *e, const expected_t *x)
{
    if (e->n_bonuses != x->n)
        return false;
    for (size_t i = 0; i < x->n; i++)
        if (e->bonuses[i]->rule_id != x->b[i].rule_id || e->bonuses[i]->kind != x->b[i].kind ||
            e->bonuses[i]->points != x->b[i].points)
            return false;
    return true;
}

int verify_verify_earning(verify_t *v, const journal_entry_t *e)
{
    if (v->earning == NULL)
        return CL_ERR_NOMEM;
    vqual_t *q = NULL;
    int rc = qual_of(v, e->member_id, &q);
    if (rc != CL_OK)
        return rc;
    int64_t month = earning_month(e->time_ms);
    qual_roll(q, month);
    const char *tier = NULL, *after = NULL;
    int64_t mult = 0, after_mult = 0;
    tier_for(v->earning, qual_sum(q), &tier, &mult);
    if (e->qualifying_points != qual_sum(q) || strcmp(e->tier, tier) != 0 ||
        e->tier_multiplier_milli != mult)
        return verify_violation(v,
                                "earn %llu: tier %s by %lld qualifying points; the journal "
                                "makes it %s by %lld",
                                SEQ(e), e->tier, (long long)e->qualifying_points, tier,
                                (long long)qual_sum(q));
    const vpartner_t *p = vmap_find(&v->partners, e->partner_id, strlen(e->partner_id));
    size_t bit = p != NULL ? ((const unsigned char *)p - v->partners.items) / v->partners.item_bytes
                           : SIZE_MAX;
    if (bit >= PARTNERS_USED_BYTES * 8)
        return verify_violation(v, "earn %llu at an unknown partner", SEQ(e));
    bool first = (q->used[bit / 8] & (1u << (bit % 8))) == 0;
    expected_t x = {.n = 0};
    expect_bonus(&x, 0, COALITION__RULE_KIND__RULE_NONE, multiplied(e->base_points, mult));
    rc = rule_bonuses(v, e, first, &x);
    if (rc != CL_OK)
        return rc;
    if (!same_bonuses(e, &x))
        return verify_violation(v,
                                "earn %llu: its bonuses are not the tier's and the rules' "
                                "in force then",
                                SEQ(e));
    q->ring[month % QUAL_MONTHS] += e->base_points;
    q->used[bit / 8] |= (uint8_t)(1u << (bit % 8));
    if (e->time_ms > q->last_activity) /* as the writer: the latest */
        q->last_activity = e->time_ms;
    q->qualified = true;
    tier_for(v->earning, qual_sum(q), &after, &after_mult);
    snprintf(q->tier, sizeof q->tier, "%s", after);
    if (strcmp(e->tier_after, after) != 0)
        return verify_violation(v, "earn %llu leaves tier %s; the journal makes it %s", SEQ(e),
                                e->tier_after, after);
    return CL_OK;
}

int verify_earning_reversal(verify_t *v, const journal_entry_t *e, const journal_entry_t *earn,
                            int64_t minor_before, int64_t minor_after, const char *holder)
{
    if (v->earning == NULL)
        return CL_ERR_NOMEM;
    if (holder == NULL) /* out of breakage: no member */
        return e->tier_after[0] == '\0' ? CL_OK
                                        : verify_violation(v, "entry %llu names a tier", SEQ(e));
    vqual_t *q = NULL;
    int rc = qual_of(v, holder, &q);
    if (rc != CL_OK)
        return rc;
    int64_t base = amount_share(earn->base_points, minor_after, earn->amount_minor) -
                   amount_share(earn->base_points, minor_before, earn->amount_minor);
    qual_roll(q, earning_month(e->time_ms));
    int64_t m = earning_month(earn->time_ms);
    if (m > q->month - QUAL_MONTHS && m <= q->month) {
        int64_t *b = &q->ring[m % QUAL_MONTHS];
        *b -= base < *b ? base : *b;
    }
    const char *after = NULL;
    int64_t mult = 0;
    tier_for(v->earning, qual_sum(q), &after, &mult);
    snprintf(q->tier, sizeof q->tier, "%s", after);
    q->qualified = true;
    if (strcmp(e->tier_after, after) != 0)
        return verify_violation(v, "entry %llu leaves tier %s; the journal makes it %s", SEQ(e),
                                e->tier_after, after);
    return CL_OK;
}

int verify_earning_activity(verify_t *v, const char *member, int64_t at_ms, const char *from)
{
    if (v->earning == NULL)
        return CL_ERR_NOMEM;
    vqual_t *q = NULL, *f = NULL;
    int64_t t = at_ms;
    if (from != NULL) { /* a claim: the card's account's activity, if later */
        f = vmap_find(&v->earning->quals, from, strlen(from));
        t = f != NULL ? f->last_activity : 0;
    }
    int rc = qual_of(v, member, &q);
    if (rc == CL_OK && t > q->last_activity)
        q->last_activity = t;
    return rc;
}

int verify_earning_last_activity(const verify_t *v, const char *member, int64_t *out)
{
    const vqual_t *q =
        v->earning != NULL ? vmap_find(&v->earning->quals, member, strlen(member)) : NULL;
    *out = q != NULL ? q->last_activity : 0;
    return CL_OK;
}

int verify_earning_entry(verify_t *v, const journal_entry_t *e)
{
    if (v->earning == NULL)
        return CL_ERR_NOMEM;
    switch (e->kind) {
    case COALITION__ENTRY_KIND__ENTRY_TIER_SETTINGS: return note_tiers(v, e);
    case COALITION__ENTRY_KIND__ENTRY_RULE_ADD:
    case COALITION__ENTRY_KIND__ENTRY_RULE_END: return note_rule(v, e);
    default: return CL_OK;
    }
}

/* ---- lot summaries ---------------------------------------------------------------- */

int verify_earning_summary(verify_t *v, const char *member, const Coalition__LotSummary *m)
{
    if (v->earning == NULL)
        return CL_ERR_NOMEM;
    vqual_t *q = vmap_find(&v->earning->quals, member, strlen(member));
    bool qualified = q != NULL && q->qualified;
    bool same = !qualified ? m->tier[0] == '\0' && m->n_qual_points == 0
                           : strcmp(m->tier, q->tier) == 0 && m->n_qual_points == QUAL_MONTHS &&
                                 m->qual_month == q->month &&
                                 memcmp(m->qual_points, q->ring, sizeof q->ring) == 0;
    same = same && m->last_activity_ms == (q != NULL ? q->last_activity : 0);
    if (q != NULL)
        q->seen = true;
    return same ? CL_OK
                : verify_violation(v,
                                   "member %s: its tier, qualifying points or latest "
                                   "activity are not the journal's",
                                   member);
}

/* Every member the journal gave qualifying points has them in its summary. */
int verify_earning_records(verify_t *v)
{
    if (v->earning == NULL)
        return CL_ERR_NOMEM;
    for (size_t i = 0; i < v->earning->quals.count; i++) {
        const vqual_t *q = vmap_at(&v->earning->quals, i);
        if (!q->seen && (q->qualified || q->last_activity != 0))
            return verify_violation(v, "member %s earned, but has no lot summary", q->member.bytes);
    }
    return CL_OK;
}
