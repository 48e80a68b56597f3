/* coalitionctl liability --as-of TIME: the points outstanding at TIME by issuing partner
 * and by age bucket, valued at issue price, for the operator's books. A report: it
 * replays the journal up to TIME in bounded slices (never the writer's path).
 *
 *   earn            a lot of the issuer, dated by the earn's day, valued at the issue
 *                   price of the contract it was priced under (prepaid or not)
 *   earn reversal   takes its points from its original's lot
 *   burn            each issuer's share (the entry's issuer shares, pro rata) is taken
 *                   from that issuer's lots, oldest first
 *   burn reversal   gives each issuer's share back as a lot dated by the reversal, at
 *                   the issuer's issue price then
 *   pending         an earn whose lot's return period ends after TIME counts as pending
 *                   (less what reversals of it took back); shown apart, within POINTS
 *   expiry, lapse   each issuer's breakage (the entry's issuer shares) is taken from its
 *                   lots, oldest first, and counted as its breakage (points, and their
 *                   value at the prices of the lots they came from)
 *   earn reversal   what of it comes out of breakage (its points had broken) shrinks the
 *                   breakage; the rest comes from its original's lot as above
 * A lot that cannot give what is asked (its points went to burns before the reversal)
 * leaves a shortfall against the issuer, shown as "unaged": each issuer's total is then
 * exactly its outstanding points in the ledger (checked when TIME is after the last
 * entry). Age buckets: up to 30 days, 31-90, 91-180, 181-365, over 365. */
#include "ctl.h"

#include "amount.h"
#include "clock.h"
#include "errors.h"
#include "json.h"
#include "settle.h"

#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_MS INT64_C(86400000)
#define LOTS_PER_ISSUER_MAX 100000u /* distinct (day, price) lots: centuries of days */
#define BUCKETS 5
static const int64_t BUCKET_DAYS[BUCKETS - 1] = {30, 90, 180, 365};
static const char *BUCKET_NAMES[BUCKETS] = {"0-30d", "31-90d", "91-180d", "181-365d", "over-365d"};

__extension__ typedef __int128 i128_t;

typedef struct lot {
    int64_t day, per_mille, points;
} lot_t;

#define CONTRACTS_PER_PARTNER_MAX 4096

typedef struct issuer {
    char id[PARTNER_ID_LEN_MAX + 1];
    char currency[CURRENCY_CODE_BYTES];
    settle_contract_t *contracts; /* read once, oldest first */
    size_t n_contracts;
    lot_t *lots;                    /* by day, then price */
    size_t n_lots, cap_lots, first; /* lots before `first` are empty */
    i128_t shortfall;               /* points owed back that no lot held */
    i128_t broken, broken_value;    /* breakage to date, valued at its lots' prices */
} issuer_t;

/* An earn still pending at as_of (its lot's return period ends after it): what of it is
 * left, for its issuer's pending points. */
typedef struct pend {
    uint64_t seq;
    size_t issuer;
    int64_t points;
} pend_t;

typedef struct liab {
    ctl_t *ctl;
    ledger_t *ledger;
    int64_t as_of;
    pend_t *pending; /* by seq */
    size_t n_pending, cap_pending;
    issuer_t issuers[SETTLE_PARTNERS_MAX];
    size_t n_issuers;
    uint64_t last_seq;
    bool as_of_before_end; /* some entry is later than as_of */
} liab_t;

static issuer_t *issuer_of(liab_t *l, const char *id)
{
    for (size_t i = 0; i < l->n_issuers; i++)
        if (strcmp(l->issuers[i].id, id) == 0)
            return &l->issuers[i];
    if (l->n_issuers == SETTLE_PARTNERS_MAX)
        return NULL;
    issuer_t *is = &l->issuers[l->n_issuers++];
    memset(is, 0, sizeof *is);
    snprintf(is->id, sizeof is->id, "%s", id);
    return is;
}

/* The issue price of a partner's contract from `from_ms`, or of the one in force at
 * `at_ms` when from_ms < 0; the partner's contracts are read once. */
static int price_of(liab_t *l, issuer_t *is, int64_t from_ms, int64_t at_ms, int64_t *per_mille)
{
    if (is->contracts == NULL) {
        is->contracts = malloc(CONTRACTS_PER_PARTNER_MAX * sizeof *is->contracts);
        if (is->contracts == NULL)
            return CL_ERR_NOMEM;
        int rc = ledger_contracts(l->ledger, is->id, is->contracts, CONTRACTS_PER_PARTNER_MAX,
                                  &is->n_contracts);
        if (rc != CL_OK || is->n_contracts == 0)
            return rc != CL_OK ? rc : CL_ERR_CORRUPT;
        if (is->n_contracts == CONTRACTS_PER_PARTNER_MAX)
            return CL_ERR_OVERFLOW; /* more than this report holds */
        snprintf(is->currency, sizeof is->currency, "%s", is->contracts[0].currency);
    }
    *per_mille = -1;
    for (size_t i = 0; i < is->n_contracts; i++) {
        const settle_contract_t *c = &is->contracts[i];
        if (from_ms >= 0 ? c->from_ms == from_ms : c->from_ms <= at_ms)
            *per_mille = c->issue_price_per_mille;
    }
    if (*per_mille < 0 && from_ms < 0)
        *per_mille = 0; /* before its first contract: nothing was issued at a price */
    return *per_mille >= 0 ? CL_OK : CL_ERR_CORRUPT;
}

static int add_lot(issuer_t *is, int64_t day, int64_t per_mille, int64_t points)
{
    size_t at = is->n_lots;
    while (at > is->first &&
           (is->lots[at - 1].day > day ||
            (is->lots[at - 1].day == day && is->lots[at - 1].per_mille > per_mille)))
        at--;
    if (at > is->first && is->lots[at - 1].day == day && is->lots[at - 1].per_mille == per_mille)
        return __builtin_add_overflow(is->lots[at - 1].points, points, &is->lots[at - 1].points)
                   ? CL_ERR_OVERFLOW
                   : CL_OK;
    if (is->n_lots == is->cap_lots) {
        size_t cap = is->cap_lots == 0 ? 64 : 2 * is->cap_lots;
        lot_t *grown = cap <= LOTS_PER_ISSUER_MAX ? realloc(is->lots, cap * sizeof *grown) : NULL;
        if (grown == NULL)
            return CL_ERR_NOMEM;
        is->lots = grown;
        is->cap_lots = cap;
    }
    memmove(&is->lots[at + 1], &is->lots[at], (is->n_lots - at) * sizeof *is->lots);
    is->lots[at] = (lot_t){day, per_mille, points};
    is->n_lots++;
    return CL_OK;
}

/* Take points from one lot; what it cannot give becomes a shortfall. */
static void take_from(issuer_t *is, int64_t day, int64_t per_mille, int64_t points)
{
    assert(points >= 0 && per_mille >= 0);
    for (size_t i = is->first; i < is->n_lots && points > 0; i++) {
        lot_t *lot = &is->lots[i];
        if (lot->day != day || lot->per_mille != per_mille)
            continue;
        int64_t take = lot->points < points ? lot->points : points;
        lot->points -= take;
        points -= take;
    }
    is->shortfall += points;
}

static i128_t lot_value(i128_t points, int64_t per_mille);

/* Take points from the oldest lots first; their value at the lots' prices. */
static i128_t take_oldest(issuer_t *is, int64_t points)
{
    assert(points >= 0 && is->first <= is->n_lots);
    i128_t value = 0;
    for (size_t i = is->first; i < is->n_lots && points > 0; i++) {
        lot_t *lot = &is->lots[i];
        int64_t take = lot->points < points ? lot->points : points;
        lot->points -= take;
        points -= take;
        value += lot_value(take, lot->per_mille);
        if (lot->points == 0 && i == is->first)
            is->first++;
    }
    is->shortfall += points;
    return value;
}

static int replay_breakage(liab_t *l, const journal_entry_t *e)
{
    for (size_t i = 0; i < e->n_issuer_shares; i++) {
        issuer_t *by = issuer_of(l, e->issuer_shares[i]->partner_id);
        if (by == NULL)
            return CL_ERR_OVERFLOW;
        by->broken += e->issuer_shares[i]->points;
        by->broken_value += take_oldest(by, e->issuer_shares[i]->points);
    }
    return CL_OK;
}

/* The earn a reversal names, read back from the ledger. */
static int original_of(liab_t *l, const journal_entry_t *e, journal_entry_t **out)
{
    const char *site = e->original_site_id[0] != '\0' ? e->original_site_id : e->site_id;
    uint64_t seq = 0;
    size_t n = 0;
    int rc = ledger_txn_seq(l->ledger, e->partner_id, site, e->original_txn_id, &seq);
    if (rc == CL_OK && seq == 0)
        rc = CL_ERR_CORRUPT;
    if (rc == CL_OK)
        rc = ledger_journal_slice(l->ledger, seq, out, 1, &n);
    if (rc == CL_OK && (n != 1 || (*out)->seq != seq)) {
        ledger_journal_slice_free(out, n);
        rc = CL_ERR_CORRUPT;
    }
    return rc;
}

/* An earn whose points are still pending at as_of. */
static int pending_add(liab_t *l, const journal_entry_t *e, const issuer_t *is)
{
    if (e->n_lots < 1 || e->lots[0]->pending_until_ms <= l->as_of || e->points <= 0)
        return CL_OK;
    if (l->n_pending == l->cap_pending) {
        size_t cap = l->cap_pending == 0 ? 1024 : 2 * l->cap_pending;
        pend_t *grown = realloc(l->pending, cap * sizeof *grown);
        if (grown == NULL)
            return CL_ERR_NOMEM;
        l->pending = grown;
        l->cap_pending = cap;
    }
    l->pending[l->n_pending++] = (pend_t){e->seq, (size_t)(is - l->issuers), e->points};
    return CL_OK;
}

/* An earn reversal takes from its own (pending) lot first. */
static void pending_take(liab_t *l, uint64_t seq, int64_t points)
{
    size_t lo = 0, hi = l->n_pending;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->pending[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < l->n_pending && l->pending[lo].seq == seq)
        l->pending[lo].points -= points < l->pending[lo].points ? points : l->pending[lo].points;
}

static int64_t pending_of(const liab_t *l, size_t issuer)
{
    int64_t sum = 0;
    for (size_t i = 0; i < l->n_pending; i++)
        sum += l->pending[i].issuer == issuer ? l->pending[i].points : 0;
    return sum;
}

static int replay_entry(liab_t *l, const journal_entry_t *e)
{
    bool earnish = e->kind == COALITION__ENTRY_KIND__ENTRY_EARN ||
                   e->kind == COALITION__ENTRY_KIND__ENTRY_REFUND_EARN ||
                   e->kind == COALITION__ENTRY_KIND__ENTRY_VOID_EARN;
    issuer_t *is = earnish ? issuer_of(l, e->partner_id) : NULL;
    int64_t per_mille = 0;
    int rc = CL_OK;
    if (earnish && is == NULL)
        return CL_ERR_OVERFLOW;
    switch (e->kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN:
        rc = price_of(l, is, e->contract_from_ms, 0, &per_mille);
        if (rc == CL_OK)
            rc = pending_add(l, e, is);
        return rc == CL_OK ? add_lot(is, e->time_ms / DAY_MS, per_mille, e->points) : rc;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN: {
        journal_entry_t *o = NULL;
        rc = original_of(l, e, &o);
        if (rc == CL_OK)
            rc = price_of(l, is, o->contract_from_ms, 0, &per_mille);
        int64_t broken = ledger_entry_from_breakage(e);
        if (rc == CL_OK) {
            is->broken -= broken;
            is->broken_value -= lot_value(broken, per_mille);
            take_from(is, o->time_ms / DAY_MS, per_mille, e->points - broken);
            pending_take(l, o->seq, e->points - broken);
        }
        ledger_journal_slice_free(&o, o != NULL);
        return rc;
    }
    case COALITION__ENTRY_KIND__ENTRY_BURN:
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN:
        for (size_t i = 0; rc == CL_OK && i < e->n_issuer_shares; i++) {
            const Coalition__PairAmount *sh = e->issuer_shares[i];
            issuer_t *by = issuer_of(l, sh->partner_id);
            if (by == NULL)
                return CL_ERR_OVERFLOW;
            if (e->kind == COALITION__ENTRY_KIND__ENTRY_BURN) {
                take_oldest(by, sh->points);
                continue;
            }
            rc = price_of(l, by, -1, e->time_ms, &per_mille);
            if (rc == CL_OK)
                rc = add_lot(by, e->time_ms / DAY_MS, per_mille, sh->points);
        }
        return rc;
    case COALITION__ENTRY_KIND__ENTRY_EXPIRY:
        for (size_t i = 0; i < e->n_lots; i++) /* an earn's own lot has the earn's seq */
            pending_take(l, e->lots[i]->seq, e->lots[i]->points);
        return replay_breakage(l, e);
    case COALITION__ENTRY_KIND__ENTRY_UNCLAIMED_LAPSE: return replay_breakage(l, e);
    default: return CL_OK;
    }
}

static int replay(liab_t *l)
{
    journal_entry_t *entries[LEDGER_SLICE_RECORDS_MAX];
    uint64_t next = 1;
    size_t n = LEDGER_SLICE_RECORDS_MAX;
    int rc = CL_OK;
    while (rc == CL_OK && n == LEDGER_SLICE_RECORDS_MAX) {
        rc = ledger_journal_slice(l->ledger, next, entries, LEDGER_SLICE_RECORDS_MAX, &n);
        for (size_t i = 0; rc == CL_OK && i < n; i++) {
            l->last_seq = entries[i]->seq;
            if (entries[i]->time_ms <= l->as_of)
                rc = replay_entry(l, entries[i]);
            else
                l->as_of_before_end = true;
        }
        if (n > 0)
            next = entries[n - 1]->seq + 1;
        ledger_journal_slice_free(entries, n);
    }
    return rc;
}

/* round_half_up(points * per_mille / 1000), as amount_price, for sums past its range. */
static i128_t lot_value(i128_t points, int64_t per_mille)
{
    i128_t v = points * per_mille;
    return v >= 0 ? (v + 500) / 1000 : -((-v + 500) / 1000);
}

typedef struct figures {
    i128_t points[BUCKETS], value[BUCKETS];
    i128_t total_points, total_value, unaged_points, unaged_value;
    i128_t broken, broken_value;
    int64_t pending; /* of the total, points pending over a return period at as_of */
} figures_t;

static int issuer_figures(liab_t *l, issuer_t *is, figures_t *f)
{
    memset(f, 0, sizeof *f);
    int64_t today = l->as_of / DAY_MS, per_mille = 0;
    for (size_t i = is->first; i < is->n_lots; i++) {
        const lot_t *lot = &is->lots[i];
        int64_t age = today - lot->day;
        size_t b = 0;
        while (b < BUCKETS - 1 && age > BUCKET_DAYS[b])
            b++;
        f->points[b] += lot->points;
        f->value[b] += lot_value(lot->points, lot->per_mille);
        f->total_points += lot->points;
        f->total_value += lot_value(lot->points, lot->per_mille);
    }
    int rc = price_of(l, is, -1, l->as_of, &per_mille);
    f->unaged_points = -is->shortfall;
    f->unaged_value = -lot_value(is->shortfall, per_mille < 0 ? 0 : per_mille);
    f->total_points += f->unaged_points;
    f->total_value += f->unaged_value;
    f->broken = is->broken;
    f->broken_value = is->broken_value;
    bool fits = f->total_points >= INT64_MIN && f->total_points <= INT64_MAX &&
                f->total_value >= INT64_MIN && f->total_value <= INT64_MAX &&
                f->unaged_value >= INT64_MIN && f->broken >= INT64_MIN && f->broken <= INT64_MAX &&
                f->broken_value >= INT64_MIN && f->broken_value <= INT64_MAX;
    for (size_t b = 0; b < BUCKETS; b++)
        fits = fits && f->value[b] <= INT64_MAX && f->points[b] <= INT64_MAX;
    return rc == CL_OK && !fits ? CL_ERR_OVERFLOW : rc;
}

static void print_issuer(const liab_t *l, const issuer_t *is, const figures_t *f)
{
    if (l->ctl->json) {
        printf("{\"issuer\":");
        json_write_string(stdout, is->id);
        printf(",\"currency\":\"%s\"", is->currency);
        for (size_t b = 0; b < BUCKETS; b++)
            printf(",\"points_%s\":%" PRId64 ",\"value_%s_minor\":%" PRId64, BUCKET_NAMES[b],
                   (int64_t)f->points[b], BUCKET_NAMES[b], (int64_t)f->value[b]);
        printf(",\"points_unaged\":%" PRId64 ",\"value_unaged_minor\":%" PRId64
               ",\"points\":%" PRId64 ",\"value_minor\":%" PRId64 ",\"breakage_points\":%" PRId64
               ",\"breakage_value_minor\":%" PRId64 ",\"points_pending\":%" PRId64 "}\n",
               (int64_t)f->unaged_points, (int64_t)f->unaged_value, (int64_t)f->total_points,
               (int64_t)f->total_value, (int64_t)f->broken, (int64_t)f->broken_value, f->pending);
        return;
    }
    int exponent = amount_currency_exponent(is->currency);
    char value[AMOUNT_TEXT_BYTES], broken[AMOUNT_TEXT_BYTES];
    printf("%-16s %3s", is->id, is->currency);
    for (size_t b = 0; b < BUCKETS; b++)
        printf(" %12" PRId64, (int64_t)f->points[b]);
    amount_format_minor((int64_t)f->total_value, exponent < 0 ? 2 : exponent, value, sizeof value);
    amount_format_minor((int64_t)f->broken_value, exponent < 0 ? 2 : exponent, broken,
                        sizeof broken);
    printf(" %10" PRId64 " %14" PRId64 " %12" PRId64 " %16s %12" PRId64 " %14s\n",
           (int64_t)f->unaged_points, (int64_t)f->total_points, f->pending, value,
           (int64_t)f->broken, broken);
}

/* With every entry replayed, each issuer's total must be the ledger's outstanding. */
static int check_totals(liab_t *l, const int64_t *totals)
{
    settle_pair_t rows[SETTLE_PARTNERS_MAX];
    size_t n = 0;
    int rc = ledger_outstanding(l->ledger, rows, SETTLE_PARTNERS_MAX, &n);
    for (size_t i = 0; rc == CL_OK && i < n; i++) {
        int64_t mine = 0;
        for (size_t k = 0; k < l->n_issuers; k++)
            if (strcmp(l->issuers[k].id, rows[i].partner_id) == 0)
                mine = totals[k];
        if (mine != rows[i].points) {
            fprintf(stderr,
                    "coalitionctl: %s: %" PRId64 " points by the journal, %" PRId64
                    " outstanding in the ledger\n",
                    rows[i].partner_id, mine, rows[i].points);
            rc = CL_ERR_CORRUPT;
        }
    }
    return rc;
}

static int print_report(liab_t *l)
{
    int64_t totals[SETTLE_PARTNERS_MAX];
    char when[SETTLE_TIME_TEXT_BYTES];
    settle_time_text(l->as_of, when);
    if (!l->ctl->json) {
        printf("points outstanding as of %s by issuer and age, valued at issue price\n", when);
        printf("%-16s %3s", "ISSUER", "CUR");
        for (size_t b = 0; b < BUCKETS; b++)
            printf(" %12s", BUCKET_NAMES[b]);
        printf(" %10s %14s %12s %16s %12s %14s\n", "UNAGED", "POINTS", "PENDING", "VALUE",
               "BREAKAGE", "BROKEN_VALUE");
    }
    int rc = CL_OK;
    for (size_t i = 0; rc == CL_OK && i < l->n_issuers; i++) {
        figures_t f;
        rc = issuer_figures(l, &l->issuers[i], &f);
        f.pending = pending_of(l, i);
        totals[i] = (int64_t)f.total_points;
        if (rc == CL_OK)
            print_issuer(l, &l->issuers[i], &f);
    }
    if (rc == CL_OK && !l->as_of_before_end) {
        rc = check_totals(l, totals);
        if (rc == CL_OK && !l->ctl->json)
            printf("totals equal the ledger's points outstanding by issuer (journal to seq %" PRIu64
                   ")\n",
                   l->last_seq);
    }
    return rc;
}

int ctl_liability(ctl_t *ctl, int argc, char **argv)
{
    liab_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        return EXIT_USAGE;
    l->ctl = ctl;
    int rc = 0;
    if (argc == 3 && strcmp(argv[1], "--as-of") == 0) {
        if (ctl_parse_time(argv[2], &l->as_of) != CL_OK) {
            fprintf(stderr, "coalitionctl: --as-of '%s' is not a time; see --help\n", argv[2]);
            rc = EXIT_USAGE;
        }
    } else if (argc != 1) {
        fprintf(stderr, "coalitionctl: usage: liability [--as-of TIME]\n");
        rc = EXIT_USAGE;
    } else {
        l->as_of = 0;
    }
    if (l->as_of == 0) /* now: everything recorded so far, aged from the wall clock */
        l->as_of = clock_wall_ms();
    if (rc == 0 && ctl_open_read_only(ctl, &l->ledger) != CL_OK)
        rc = EXIT_USAGE;
    int failed = rc == 0 ? replay(l) : CL_OK;
    if (failed == CL_OK && rc == 0)
        failed = print_report(l);
    if (failed != CL_OK) {
        fprintf(stderr, "coalitionctl: liability report failed: %s\n", cl_strerror(failed));
        rc = EXIT_DECLINED;
    }
    ledger_destroy(&l->ledger);
    for (size_t i = 0; i < l->n_issuers; i++) {
        free(l->issuers[i].lots);
        free(l->issuers[i].contracts);
    }
    free(l->pending);
    free(l);
    return rc;
}
