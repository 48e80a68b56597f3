/* Settlement inside the ledger's write path: contracts in force, window roll-over, the
 * pricing of each entry and the projection of each approved entry onto its window's
 * counters and its partner's prepaid position, in the same transaction as the entry.
 * The lifecycle diagram and the money rules are in settle.h.
 *
 * Settlement database keys:
 *   "S"                        SettlementState (config, open window, oldest unclosed)
 *   "W" u64be(id)              WindowRecord
 *   "C" u64be(id) partner      WindowCounters of that partner in that window
 *   "P" partner                PartnerPosition (prepaid block)
 * Contracts database: partner "\0" u64be(from_ms) -> Contract. */
#include "ledger_internal.h"

#include "amount.h"
#include "errors.h"
#include "log.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define STATE_KEY "S"
#define WINDOW_TAG 'W'
#define COUNTERS_TAG 'C'
#define POSITION_TAG 'P'
#define MS_PER_DAY INT64_C(86400000)

_Static_assert(SETTLE_WINDOW_KEY_BYTES == 1 + 8 + PARTNER_ID_LEN_MAX, "tag, id, partner");

/* ---- time -------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void settle_period_bounds(int64_t period_seconds, int64_t at_ms, int64_t *start_ms, int64_t *end_ms)
{
    assert(at_ms >= 0 && period_seconds >= 0);
    if (period_seconds > 0) {
        int64_t period_ms = period_seconds * 1000;
        *start_ms = at_ms / period_ms * period_ms;
        *end_ms = *start_ms + period_ms;
    } else {
        time_t secs = (time_t)(at_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        int64_t y = tm.tm_year + 1900, m = tm.tm_mon + 1;
        *start_ms = days_from_civil(y, m, 1) * MS_PER_DAY;
        *end_ms = days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * MS_PER_DAY;
    }
    assert(*start_ms <= at_ms && at_ms < *end_ms);
}

/* ---- keys and records ---------------------------------------------------------------- */

static size_t window_key(uint8_t key[SETTLE_WINDOW_KEY_BYTES], char tag, uint64_t id,
                         const char *partner)
{
    size_t plen = partner != NULL ? strlen(partner) : 0;
    assert(plen <= PARTNER_ID_LEN_MAX);
    key[0] = (uint8_t)tag;
    store_put_u64(key + 1, id);
    if (plen > 0)
        memcpy(key + 9, partner, plen);
    return 9 + plen;
}

static size_t contract_key(uint8_t key[CONTRACT_KEY_BYTES], const char *partner, int64_t from_ms)
{
    size_t plen = strlen(partner);
    assert(plen > 0 && plen <= PARTNER_ID_LEN_MAX && from_ms >= 0);
    memcpy(key, partner, plen);
    key[plen] = 0;
    store_put_u64(key + plen + 1, (uint64_t)from_ms);
    return plen + 9;
}

int settle_get_state(ledger_t *self, MDB_txn *txn, Coalition__SettlementState **out)
{
    int rc = ledger_get_record(txn, self->db_settlement, STATE_KEY, 1,
                               &coalition__settlement_state__descriptor, (ProtobufCMessage **)out);
    if (rc == CL_OK && (*out)->config == NULL) {
        coalition__settlement_state__free_unpacked(*out, NULL);
        *out = NULL;
        return CL_ERR_CORRUPT; /* put_state always stores the configuration */
    }
    if (rc != CL_ERR_NOT_FOUND)
        return rc;
    /* Never configured: the defaults (a calendar month, a day's grace, hub). */
    static Coalition__SettlementConfig defaults = COALITION__SETTLEMENT_CONFIG__INIT;
    defaults.grace_seconds = SETTLEMENT_GRACE_SECONDS_DEFAULT;
    Coalition__SettlementState fresh = COALITION__SETTLEMENT_STATE__INIT;
    fresh.config = &defaults;
    uint8_t buf[256];
    size_t len = coalition__settlement_state__pack(&fresh, buf);
    *out = coalition__settlement_state__unpack(NULL, len, buf);
    return *out == NULL ? CL_ERR_NOMEM : CL_OK;
}

static int put_state(ledger_t *self, MDB_txn *txn, const Coalition__SettlementState *s)
{
    assert(s->config != NULL && s->oldest_unclosed_id <= s->open_window_id + 1);
    return ledger_put_record(txn, self->db_settlement, STATE_KEY, 1, &s->base);
}

int settle_get_window(ledger_t *self, MDB_txn *txn, uint64_t id, Coalition__WindowRecord **out)
{
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    size_t len = window_key(key, WINDOW_TAG, id, NULL);
    return ledger_get_record(txn, self->db_settlement, key, len,
                             &coalition__window_record__descriptor, (ProtobufCMessage **)out);
}

int settle_put_window(ledger_t *self, MDB_txn *txn, const Coalition__WindowRecord *w)
{
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    size_t len = window_key(key, WINDOW_TAG, w->id, NULL);
    assert(w->id > 0 && w->start_ms <= w->end_ms);
    return ledger_put_record(txn, self->db_settlement, key, len, &w->base);
}

int settle_batch_load(ledger_t *self, MDB_txn *txn)
{
    Coalition__SettlementState *s = NULL;
    int rc = settle_get_state(self, txn, &s);
    if (rc != CL_OK)
        return rc;
    self->batch_window_id = s->open_window_id;
    self->batch_window_end_ms = INT64_MIN;
    self->batch_window_model = COALITION__SETTLEMENT_MODEL__MODEL_HUB;
    coalition__settlement_state__free_unpacked(s, NULL);
    if (self->batch_window_id == 0)
        return CL_OK;
    Coalition__WindowRecord *w = NULL;
    rc = settle_get_window(self, txn, self->batch_window_id, &w);
    if (rc == CL_ERR_NOT_FOUND)
        return CL_ERR_CORRUPT; /* the state names an open window that is not there */
    if (rc == CL_OK) {
        self->batch_window_end_ms = w->end_ms;
        self->batch_window_model = (int)w->model;
    }
    coalition__window_record__free_unpacked(w, NULL);
    return rc;
}

int settle_window_model(ledger_t *self, MDB_txn *txn, uint64_t id, int *model_out)
{
    Coalition__WindowRecord *w = NULL;
    int rc = settle_get_window(self, txn, id, &w);
    if (rc == CL_OK)
        *model_out = (int)w->model;
    coalition__window_record__free_unpacked(w, NULL);
    return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc;
}

/* ---- roll-over ------------------------------------------------------------------------ */

/* End the open window (if any) at the chain head and open the next one at now_ms:
 * OPEN -> ENDED for the old one, (none) -> OPEN for the new one. `end_at_ms` shortens the
 * old window (an early close); otherwise it ends where its period ends. */
static int open_next(ledger_t *self, MDB_txn *txn, int64_t now_ms, int64_t end_at_ms)
{
    Coalition__SettlementState *s = NULL;
    Coalition__WindowRecord *old = NULL;
    int rc = settle_get_state(self, txn, &s);
    int64_t start = 0, end = 0;
    settle_period_bounds(s != NULL ? s->config->period_seconds : 0, now_ms, &start, &end);
    if (rc == CL_OK && s->open_window_id > 0) {
        rc = settle_get_window(self, txn, s->open_window_id, &old);
        /* Only an open window ends, and its end (last seq, last hash) is set once, here. */
        if (rc == CL_OK && (old->state != COALITION__WINDOW_STATE__WINDOW_OPEN ||
                            old->last_hash.len != 0 || old->last_seq != 0))
            rc = CL_ERR_CORRUPT;
        if (rc == CL_OK) {
            old->state = COALITION__WINDOW_STATE__WINDOW_ENDED;
            if (end_at_ms != 0)
                old->end_ms = end_at_ms > old->start_ms ? end_at_ms : old->start_ms;
            old->last_seq = self->batch_seq;
            old->last_hash.data = self->batch_head;
            old->last_hash.len = WIRE_HASH_BYTES;
            start = start > old->end_ms ? start : old->end_ms;
            rc = settle_put_window(self, txn, old);
        }
    }
    if (rc == CL_OK) {
        Coalition__WindowRecord w = COALITION__WINDOW_RECORD__INIT;
        assert(s->open_window_id < UINT64_MAX && start <= end);
        w.id = s->open_window_id + 1;
        w.start_ms = start < now_ms ? start : now_ms;
        w.end_ms = end;
        w.state = COALITION__WINDOW_STATE__WINDOW_OPEN;
        w.model = s->config->model;
        w.grace_seconds = s->config->grace_seconds;
        w.first_seq = self->batch_seq + 1;
        s->open_window_id = w.id;
        if (s->oldest_unclosed_id == 0)
            s->oldest_unclosed_id = w.id;
        rc = settle_put_window(self, txn, &w);
        if (rc == CL_OK)
            rc = put_state(self, txn, s);
        self->batch_window_id = w.id;
        self->batch_window_end_ms = w.end_ms;
        self->batch_window_model = (int)w.model;
    }
    if (old != NULL && old->last_hash.data == self->batch_head) {
        old->last_hash.data = NULL; /* not owned by the record */
        old->last_hash.len = 0;
    }
    coalition__window_record__free_unpacked(old, NULL);
    coalition__settlement_state__free_unpacked(s, NULL);
    assert(rc != CL_OK || now_ms < self->batch_window_end_ms);
    return rc;
}

int settle_roll(ledger_t *self, MDB_txn *txn, int64_t now_ms)
{
    assert(self->batch != NULL);
    if (self->batch_window_id != 0 && now_ms < self->batch_window_end_ms)
        return CL_OK;
    return open_next(self, txn, now_ms < 0 ? 0 : now_ms, 0);
}

int settle_end_early(ledger_t *self, MDB_txn *txn, int64_t now_ms)
{
    assert(self->batch_window_id != 0);
    return open_next(self, txn, now_ms, now_ms);
}

/* ---- contracts ----------------------------------------------------------------------- */

int settle_contract_exact(ledger_t *self, MDB_txn *txn, const char *partner, int64_t from_ms,
                          Coalition__Contract **out)
{
    uint8_t key[CONTRACT_KEY_BYTES];
    size_t len = contract_key(key, partner, from_ms);
    return ledger_get_record(txn, self->db_contracts, key, len, &coalition__contract__descriptor,
                             (ProtobufCMessage **)out);
}

/* The contract with the latest start at or before at_ms. */
int settle_contract_at(ledger_t *self, MDB_txn *txn, const char *partner, int64_t at_ms,
                       Coalition__Contract **out)
{
    uint8_t key[CONTRACT_KEY_BYTES];
    size_t plen = strlen(partner);
    size_t len = contract_key(key, partner, at_ms < 0 ? 0 : at_ms);
    store_put_u64(key + plen + 1, (uint64_t)(at_ms < 0 ? 0 : at_ms) + 1);
    MDB_cursor *cur = NULL;
    MDB_val k = {len, key}, v;
    int rc = mdb_cursor_open(txn, self->db_contracts, &cur);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS)
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    else if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    bool ours = rc == MDB_SUCCESS && k.mv_size == plen + 9 &&
                memcmp(k.mv_data, partner, plen) == 0 && ((const uint8_t *)k.mv_data)[plen] == 0;
    if (ours)
        *out = coalition__contract__unpack(NULL, v.mv_size, v.mv_data);
    mdb_cursor_close(cur);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return store_err(rc);
    if (!ours)
        return CL_ERR_NOT_FOUND;
    if (*out == NULL || (*out)->from_ms > at_ms)
        return CL_ERR_CORRUPT;
    return CL_OK;
}

int settle_put_contract(ledger_t *self, MDB_txn *txn, const char *partner,
                        const Coalition__Contract *c)
{
    uint8_t key[CONTRACT_KEY_BYTES];
    size_t len = contract_key(key, partner, c->from_ms);
    assert(c->earn_rate_milli > 0 && c->created_seq > 0);
    return ledger_put_record(txn, self->db_contracts, key, len, &c->base);
}

/* ---- counters and positions ---------------------------------------------------------- */

void settle_counters_read(const Coalition__WindowCounters *r, settle_counters_t *c)
{
    memset(c, 0, sizeof *c);
    if (r == NULL)
        return;
    c->points_issued = r->points_issued;
    c->points_issued_reversed = r->points_issued_reversed;
    c->points_redeemed = r->points_redeemed;
    c->points_redeemed_reversed = r->points_redeemed_reversed;
    c->issue_minor = r->issue_minor;
    c->issue_reversed_minor = r->issue_reversed_minor;
    c->reimburse_minor = r->reimburse_minor;
    c->reimburse_reversed_minor = r->reimburse_reversed_minor;
    c->fee_minor = r->fee_minor;
    c->topup_points = r->topup_points;
    c->topup_minor = r->topup_minor;
    c->entries = r->entries;
    c->hub_reimburse_minor = r->hub_reimburse_minor;
    c->hub_reimburse_reversed_minor = r->hub_reimburse_reversed_minor;
    c->points_expired = r->points_expired;
    c->points_expired_reversed = r->points_expired_reversed;
    c->points_bonus = r->points_bonus;
}

static void counters_to(const settle_counters_t *c, Coalition__WindowCounters *r)
{
    coalition__window_counters__init(r);
    r->points_issued = c->points_issued;
    r->points_issued_reversed = c->points_issued_reversed;
    r->points_redeemed = c->points_redeemed;
    r->points_redeemed_reversed = c->points_redeemed_reversed;
    r->issue_minor = c->issue_minor;
    r->issue_reversed_minor = c->issue_reversed_minor;
    r->reimburse_minor = c->reimburse_minor;
    r->reimburse_reversed_minor = c->reimburse_reversed_minor;
    r->fee_minor = c->fee_minor;
    r->topup_points = c->topup_points;
    r->topup_minor = c->topup_minor;
    r->entries = c->entries;
    r->hub_reimburse_minor = c->hub_reimburse_minor;
    r->hub_reimburse_reversed_minor = c->hub_reimburse_reversed_minor;
    r->points_expired = c->points_expired;
    r->points_expired_reversed = c->points_expired_reversed;
    r->points_bonus = c->points_bonus;
}

settle_i128_t settle_net_operator(const settle_counters_t *c)
{
    return (settle_i128_t)c->issue_minor - c->issue_reversed_minor + c->topup_minor + c->fee_minor -
           c->hub_reimburse_minor + c->hub_reimburse_reversed_minor;
}

static void pairs_read(const Coalition__WindowCounters *r, settle_partner_row_t *row)
{
    row->n_pairs = 0;
    for (size_t i = 0; r != NULL && i < r->n_owed_by && i < SETTLE_PARTNERS_MAX; i++) {
        settle_pair_t *p = &row->pairs[row->n_pairs++];
        snprintf(p->partner_id, sizeof p->partner_id, "%s", r->owed_by[i]->partner_id);
        p->points = r->owed_by[i]->points;
        p->minor = r->owed_by[i]->minor;
    }
}

int settle_counters_row(const Coalition__WindowCounters *r, settle_partner_row_t *row)
{
    settle_counters_read(r, &row->c);
    pairs_read(r, row);
    return r == NULL || r->n_owed_by <= SETTLE_PARTNERS_MAX ? CL_OK : CL_ERR_CORRUPT;
}

static int get_row(ledger_t *self, MDB_txn *txn, uint64_t window_id, const char *partner,
                   settle_partner_row_t *row)
{
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    size_t len = window_key(key, COUNTERS_TAG, window_id, partner);
    Coalition__WindowCounters *r = NULL;
    int rc = ledger_get_record(txn, self->db_settlement, key, len,
                               &coalition__window_counters__descriptor, (ProtobufCMessage **)&r);
    snprintf(row->partner_id, sizeof row->partner_id, "%s", partner);
    int read = settle_counters_row(rc == CL_OK ? r : NULL, row);
    coalition__window_counters__free_unpacked(r, NULL);
    if (rc == CL_OK)
        rc = read;
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

static int put_row(ledger_t *self, MDB_txn *txn, uint64_t window_id,
                   const settle_partner_row_t *row)
{
    assert(window_id != 0 && window_id == self->batch_window_id); /* only the open window */
    assert(wire_id_valid(row->partner_id, PARTNER_ID_LEN_MAX));
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    size_t len = window_key(key, COUNTERS_TAG, window_id, row->partner_id);
    Coalition__WindowCounters r;
    Coalition__PairAmount pairs[SETTLE_PARTNERS_MAX], *ptrs[SETTLE_PARTNERS_MAX];
    assert(row->n_pairs <= SETTLE_PARTNERS_MAX);
    counters_to(&row->c, &r);
    for (size_t i = 0; i < row->n_pairs; i++) {
        coalition__pair_amount__init(&pairs[i]);
        pairs[i].partner_id = (char *)row->pairs[i].partner_id;
        pairs[i].points = row->pairs[i].points;
        pairs[i].minor = row->pairs[i].minor;
        ptrs[i] = &pairs[i];
    }
    r.owed_by = ptrs;
    r.n_owed_by = row->n_pairs;
    return ledger_put_record(txn, self->db_settlement, key, len, &r.base);
}

int settle_get_prepaid(ledger_t *self, MDB_txn *txn, const char *partner, int64_t *out)
{
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    size_t plen = strlen(partner);
    key[0] = POSITION_TAG;
    memcpy(key + 1, partner, plen);
    Coalition__PartnerPosition *p = NULL;
    int rc = ledger_get_record(txn, self->db_settlement, key, plen + 1,
                               &coalition__partner_position__descriptor, (ProtobufCMessage **)&p);
    *out = rc == CL_OK ? p->prepaid_remaining : 0;
    coalition__partner_position__free_unpacked(p, NULL);
    if (rc == CL_OK && *out < 0)
        return CL_ERR_CORRUPT;
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

static int put_prepaid(ledger_t *self, MDB_txn *txn, const char *partner, int64_t remaining)
{
    assert(self->batch != NULL && remaining <= POINTS_MAX);
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    size_t plen = strlen(partner);
    assert(remaining >= 0 && plen <= PARTNER_ID_LEN_MAX);
    key[0] = POSITION_TAG;
    memcpy(key + 1, partner, plen);
    Coalition__PartnerPosition p = COALITION__PARTNER_POSITION__INIT;
    p.prepaid_remaining = remaining;
    return ledger_put_record(txn, self->db_settlement, key, plen + 1, &p.base);
}

/* Issuer-pays: what `partner` owes redeemers in the window, from every redeemer's pairs
 * (one walk over the window's counters: O(partners)). */
struct owes_walk {
    uint64_t window_id;
    const char *partner;
    settle_i128_t owes;
};

static int add_owes(const MDB_val *k, const MDB_val *v, void *ctx)
{
    struct owes_walk *w = ctx;
    const uint8_t *key = k->mv_data;
    if (k->mv_size < 10 || key[0] != COUNTERS_TAG || store_get_u64(key + 1) != w->window_id)
        return STORE_WALK_STOP;
    size_t plen = strlen(w->partner);
    if (k->mv_size - 9 == plen && memcmp(key + 9, w->partner, plen) == 0)
        return CL_OK; /* what it owes itself nets to nothing */
    Coalition__WindowCounters *r = coalition__window_counters__unpack(NULL, v->mv_size, v->mv_data);
    if (r == NULL)
        return CL_ERR_CORRUPT;
    for (size_t i = 0; i < r->n_owed_by; i++)
        if (strcmp(r->owed_by[i]->partner_id, w->partner) == 0)
            w->owes += r->owed_by[i]->minor;
    coalition__window_counters__free_unpacked(r, NULL);
    return CL_OK;
}

/* The partner's net in one window: its part with the operator and the pairs. */
static int window_net(ledger_t *self, MDB_txn *txn, const Coalition__WindowRecord *w,
                      const char *partner, settle_i128_t *out)
{
    settle_partner_row_t *row = &self->scratch_row;
    int rc = get_row(self, txn, w->id, partner, row);
    *out = 0;
    if (rc != CL_OK)
        return rc;
    *out = settle_net_operator(&row->c);
    for (size_t i = 0; i < row->n_pairs; i++)
        if (strcmp(row->pairs[i].partner_id, partner) != 0)
            *out -= row->pairs[i].minor;
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    MDB_val from = {window_key(key, COUNTERS_TAG, w->id, NULL), key};
    struct owes_walk walk = {w->id, partner, 0};
    rc = store_walk(txn, self->db_settlement, &from, add_owes, &walk);
    *out += walk.owes;
    return rc;
}

/* A partner's net debit over every window not closed yet, for its cap. */
static int unsettled_net(ledger_t *self, MDB_txn *txn, const char *partner, settle_i128_t *out)
{
    Coalition__SettlementState *s = NULL;
    int rc = settle_get_state(self, txn, &s);
    *out = 0;
    if (rc != CL_OK)
        return rc;
    uint64_t first = s->oldest_unclosed_id, last = s->open_window_id;
    coalition__settlement_state__free_unpacked(s, NULL);
    for (uint64_t id = first; id != 0 && id <= last && rc == CL_OK; id++) {
        Coalition__WindowRecord *w = NULL;
        settle_i128_t net = 0;
        rc = settle_get_window(self, txn, id, &w);
        if (rc == CL_OK && w->state != COALITION__WINDOW_STATE__WINDOW_CLOSED)
            rc = window_net(self, txn, w, partner, &net);
        coalition__window_record__free_unpacked(w, NULL);
        *out += net;
    }
    return rc;
}

/* ---- issuer shares ------------------------------------------------------------------ */

__extension__ typedef __int128 i128_t;

void settle_split(int64_t total, const int64_t *weights, size_t n, int64_t *out)
{
    i128_t sum = 0, given = 0;
    i128_t rem[SETTLE_PARTNERS_MAX];
    assert(total >= 0 && n <= SETTLE_PARTNERS_MAX);
    for (size_t i = 0; i < n; i++)
        sum += weights[i] > 0 ? weights[i] : 0;
    assert(sum > 0 || total == 0);
    for (size_t i = 0; i < n; i++) {
        i128_t w = weights[i] > 0 ? weights[i] : 0;
        out[i] = sum > 0 ? (int64_t)((i128_t)total * w / sum) : 0;
        rem[i] = sum > 0 ? (i128_t)total * w % sum : 0;
        given += out[i];
    }
    /* The units left over, one each to the largest remainders, ties to the lower index. */
    assert(given <= total && total - given <= (i128_t)n);
    for (i128_t left = total - given; left > 0; left--) {
        size_t best = n;
        for (size_t i = 0; i < n; i++)
            if (rem[i] > 0 && (best == n || rem[i] > rem[best]))
                best = i;
        assert(best < n);
        out[best]++;
        rem[best] = 0;
    }
#ifndef NDEBUG
    i128_t check = 0;
    for (size_t i = 0; i < n; i++) {
        assert(out[i] >= 0 && (weights[i] > 0 || out[i] == 0)); /* only weights get shares */
        check += out[i];
    }
    assert(check == total); /* the shares add up to the whole, exactly */
#endif
}

void settle_waterfall(const int64_t *shares, size_t n, int64_t before, int64_t after, int64_t *out)
{
    int64_t prefix = 0;
    assert(0 <= before && before <= after);
    for (size_t i = 0; i < n; i++) {
        int64_t lo = before - prefix, hi = after - prefix;
        lo = lo < 0 ? 0 : lo > shares[i] ? shares[i] : lo;
        hi = hi < 0 ? 0 : hi > shares[i] ? shares[i] : hi;
        out[i] = hi - lo;
        assert(out[i] >= 0 && out[i] <= shares[i]);
        prefix += shares[i];
    }
#ifndef NDEBUG
    int64_t given = 0;
    for (size_t i = 0; i < n; i++)
        given += out[i];
    /* What comes back is the part of (before, after] the shares cover. */
    assert(given == (after < prefix ? after : prefix) - (before < prefix ? before : prefix));
#endif
}

#define OUTSTANDING_KEY "O"

static int outstanding_get(ledger_t *self, MDB_txn *txn, outstanding_t *o)
{
    Coalition__Outstanding *r = NULL;
    int rc = ledger_get_record(txn, self->db_settlement, OUTSTANDING_KEY, 1,
                               &coalition__outstanding__descriptor, (ProtobufCMessage **)&r);
    o->n = 0;
    if (rc == CL_OK && r->n_issuers > SETTLE_PARTNERS_MAX)
        rc = CL_ERR_CORRUPT;
    for (size_t i = 0; rc == CL_OK && i < r->n_issuers; i++) {
        snprintf(o->ids[i], sizeof o->ids[i], "%s", r->issuers[i]->partner_id);
        o->points[i] = r->issuers[i]->points;
        o->n++;
    }
    coalition__outstanding__free_unpacked(r, NULL);
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

/* The batch's copy of the outstanding points, read on first use; projections change it
 * in place and settle_batch_flush writes it once, before the batch commits (a batch that
 * is aborted or redone reads it again). Only approved requests change it, after every
 * check that could decline them. */
int settle_outstanding(ledger_t *self, MDB_txn *txn, outstanding_t **out)
{
    assert(self->batch != NULL);
    if (!self->outstanding_loaded) {
        int rc = outstanding_get(self, txn, &self->batch_outstanding);
        if (rc != CL_OK)
            return rc;
        self->outstanding_loaded = true;
        self->outstanding_dirty = false;
    }
    *out = &self->batch_outstanding;
    return CL_OK;
}

static int outstanding_put(ledger_t *self, MDB_txn *txn, const outstanding_t *o);

int settle_batch_flush(ledger_t *self)
{
    if (!self->outstanding_dirty)
        return CL_OK;
    assert(self->outstanding_loaded && self->batch != NULL);
    int rc = outstanding_put(self, self->batch, &self->batch_outstanding);
    self->outstanding_dirty = rc != CL_OK;
    return rc;
}

static int outstanding_put(ledger_t *self, MDB_txn *txn, const outstanding_t *o)
{
    Coalition__PairAmount pairs[SETTLE_PARTNERS_MAX], *ptrs[SETTLE_PARTNERS_MAX];
    Coalition__Outstanding r = COALITION__OUTSTANDING__INIT;
    for (size_t i = 0; i < o->n; i++) {
        coalition__pair_amount__init(&pairs[i]);
        pairs[i].partner_id = (char *)o->ids[i];
        pairs[i].points = o->points[i];
        ptrs[i] = &pairs[i];
    }
    r.issuers = ptrs;
    r.n_issuers = o->n;
    return ledger_put_record(txn, self->db_settlement, OUTSTANDING_KEY, 1, &r.base);
}

/* The index of issuer `id` in the sorted list, inserted at zero when absent. */
static size_t outstanding_slot(outstanding_t *o, const char *id)
{
    size_t at = 0;
    while (at < o->n && strcmp(o->ids[at], id) < 0)
        at++;
    if (at < o->n && strcmp(o->ids[at], id) == 0)
        return at;
    assert(o->n < SETTLE_PARTNERS_MAX);
    assert(at == o->n || strcmp(o->ids[at], id) > 0); /* the list stays sorted */
    memmove(o->ids[at + 1], o->ids[at], (o->n - at) * sizeof o->ids[0]);
    memmove(&o->points[at + 1], &o->points[at], (o->n - at) * sizeof o->points[0]);
    snprintf(o->ids[at], sizeof o->ids[at], "%s", id);
    o->points[at] = 0;
    o->n++;
    return at;
}

static size_t row_pair_slot(settle_partner_row_t *row, const char *id)
{
    size_t at = 0;
    while (at < row->n_pairs && strcmp(row->pairs[at].partner_id, id) < 0)
        at++;
    if (at < row->n_pairs && strcmp(row->pairs[at].partner_id, id) == 0)
        return at;
    assert(row->n_pairs < SETTLE_PARTNERS_MAX);
    assert(at == row->n_pairs || strcmp(row->pairs[at].partner_id, id) > 0);
    memmove(&row->pairs[at + 1], &row->pairs[at], (row->n_pairs - at) * sizeof row->pairs[0]);
    memset(&row->pairs[at], 0, sizeof row->pairs[at]);
    snprintf(row->pairs[at].partner_id, sizeof row->pairs[at].partner_id, "%s", id);
    row->n_pairs++;
    return at;
}

/* ---- pricing (decision side) ----------------------------------------------------------- */

static void effect_begin(decision_t *d, const char *partner, const Coalition__Contract *c)
{
    assert(c != NULL && partner != NULL);
    d->settle.priced = true;
    d->settle.partner = partner;
    d->settle.contract_from_ms = c->from_ms;
    d->settle.settle_minor = 0;
    d->settle.fee_minor = 0;
    d->settle.prepaid_delta = 0;
    d->settle.via_issuers = false;
}

int settle_price_earn(ledger_t *self, MDB_txn *txn, const char *partner,
                      const Coalition__Contract *c, int64_t points, decision_t *d)
{
    assert(points >= 0 && points <= POINTS_MAX);
    assert(c->issue_price_per_mille >= 0 && c->fee_minor >= 0 && c->net_cap_minor >= 0);
    effect_begin(d, partner, c);
    d->settle.fee_minor = c->fee_minor;
    if (c->funding == COALITION__FUNDING__FUNDING_PREPAID) {
        int64_t remaining = 0;
        int rc = settle_get_prepaid(self, txn, partner, &remaining);
        if (rc != CL_OK)
            return rc;
        if (points > remaining) {
            rules_decline(d, RC_EXCEEDS_LIMIT,
                          "partner %s's prepaid points are used up (%lld left, %lld needed)",
                          partner, (long long)remaining, (long long)points);
            return CL_OK;
        }
        d->settle.prepaid_delta = -points;
    } else {
        d->settle.settle_minor = amount_price(points, c->issue_price_per_mille);
    }
    if (c->net_cap_minor == 0)
        return CL_OK;
    settle_i128_t net = 0;
    int rc = unsettled_net(self, txn, partner, &net);
    if (rc == CL_OK && net + d->settle.settle_minor + d->settle.fee_minor > c->net_cap_minor)
        rules_decline(d, RC_EXCEEDS_LIMIT,
                      "partner %s's unsettled net position would pass its cap of %lld minor "
                      "units",
                      partner, (long long)c->net_cap_minor);
    return rc;
}

static void add_share(decision_t *d, const char *issuer, int64_t points, int64_t minor)
{
    if (points == 0 && minor == 0)
        return;
    assert(d->settle.n_shares < SETTLE_PARTNERS_MAX);
    settle_pair_t *sh = &d->settle.shares[d->settle.n_shares++];
    snprintf(sh->partner_id, sizeof sh->partner_id, "%s", issuer);
    sh->points = points;
    sh->minor = minor;
}

int settle_price_burn(ledger_t *self, MDB_txn *txn, const char *partner,
                      const Coalition__Contract *c, int64_t points, decision_t *d)
{
    assert(points > 0 && points <= POINTS_MAX);
    effect_begin(d, partner, c);
    d->settle.settle_minor = amount_price(points, c->reimburse_per_mille);
    d->settle.fee_minor = c->fee_minor;
    d->settle.via_issuers =
        self->batch_window_model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS;
    outstanding_t *o = NULL;
    int rc = settle_outstanding(self, txn, &o);
    if (rc != CL_OK)
        return rc;
    int64_t pts[SETTLE_PARTNERS_MAX], money[SETTLE_PARTNERS_MAX], sum = 0;
    for (size_t i = 0; i < o->n; i++)
        sum += o->points[i] > 0 ? o->points[i] : 0;
    if (sum < points)
        return CL_ERR_CORRUPT; /* outstanding points are the members' balances */
    settle_split(points, o->points, o->n, pts);
    settle_split(d->settle.settle_minor, o->points, o->n, money);
    assert(d->settle.n_shares == 0 && o->n <= SETTLE_PARTNERS_MAX);
    for (size_t i = 0; i < o->n; i++)
        add_share(d, o->ids[i], pts[i], money[i]);
    return CL_OK;
}

int settle_price_reversal(const char *partner, const Coalition__Contract *c,
                          const journal_entry_t *original, bool via_issuers,
                          int64_t reversed_before, int64_t points, decision_t *d)
{
    bool of_earn = original->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
    assert(reversed_before >= 0 && points >= 0 && reversed_before + points <= original->points);
    effect_begin(d, partner, c);
    d->settle.via_issuers = !of_earn && via_issuers;
    if (of_earn && c->funding == COALITION__FUNDING__FUNDING_PREPAID) {
        d->settle.prepaid_delta = points; /* the points go back into the block */
        return CL_OK;
    }
    int64_t per_mille = of_earn ? c->issue_price_per_mille : c->reimburse_per_mille;
    int64_t money_before = amount_price(reversed_before, per_mille);
    int64_t money_after = amount_price(reversed_before + points, per_mille);
    d->settle.settle_minor = money_after - money_before;
    assert(d->settle.settle_minor >= 0);
    if (of_earn)
        return CL_OK;
    size_t n = original->n_issuer_shares;
    int64_t shares[SETTLE_PARTNERS_MAX], money[SETTLE_PARTNERS_MAX];
    int64_t back[SETTLE_PARTNERS_MAX], back_money[SETTLE_PARTNERS_MAX], sp = 0, sm = 0;
    if (n > SETTLE_PARTNERS_MAX)
        return CL_ERR_CORRUPT;
    for (size_t i = 0; i < n; i++) {
        shares[i] = original->issuer_shares[i]->points;
        money[i] = original->issuer_shares[i]->minor;
        if (shares[i] < 0 || money[i] < 0)
            return CL_ERR_CORRUPT;
        sp += shares[i];
        sm += money[i];
    }
    if (sp != original->points || sm != original->settle_minor)
        return CL_ERR_CORRUPT; /* a burn's shares add up to its points and money */
    settle_waterfall(shares, n, reversed_before, reversed_before + points, back);
    settle_waterfall(money, n, money_before, money_after, back_money);
    if (money_after > original->settle_minor)
        return CL_ERR_CORRUPT; /* the burn's money is the price of all its points */
    for (size_t i = 0; i < n; i++)
        add_share(d, original->issuer_shares[i]->partner_id, back[i], back_money[i]);
    return CL_OK;
}

/* ---- projection (apply side) ------------------------------------------------------------ */

static bool add_to(int64_t *field, int64_t delta)
{
    return !__builtin_add_overflow(*field, delta, field);
}

/* The counters an approved entry of `kind` moves. False on overflow. */
static bool counters_add(settle_counters_t *c, int kind, int64_t points, int64_t money, int64_t fee,
                         bool via_issuers)
{
    bool ok = true;
    switch (kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN:
        ok = add_to(&c->points_issued, points) && add_to(&c->issue_minor, money);
        break;
    case COALITION__ENTRY_KIND__ENTRY_BURN:
        ok = add_to(&c->points_redeemed, points) && add_to(&c->reimburse_minor, money) &&
             (via_issuers || add_to(&c->hub_reimburse_minor, money));
        break;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
        ok = add_to(&c->points_issued_reversed, points) && add_to(&c->issue_reversed_minor, money);
        break;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN:
        ok = add_to(&c->points_redeemed_reversed, points) &&
             add_to(&c->reimburse_reversed_minor, money) &&
             (via_issuers || add_to(&c->hub_reimburse_reversed_minor, money));
        break;
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP:
        ok = add_to(&c->topup_points, points) && add_to(&c->topup_minor, money);
        break;
    default: return false;
    }
    c->entries++;
    return ok && add_to(&c->fee_minor, fee);
}

bool settle_counters_apply(settle_counters_t *c, int kind, int64_t points, int64_t money,
                           int64_t fee, bool via_issuers)
{
    return counters_add(c, kind, points, money, fee, via_issuers);
}

/* The issuers' outstanding points and, for burns and their reversals, the redeemer's
 * pair counters in `row`. */
static int project_outstanding(ledger_t *self, MDB_txn *txn, const decision_t *d,
                               settle_partner_row_t *row)
{
    int sign = 0;
    bool burnish = false;
    switch (d->kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN: sign = 1; break;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN: sign = -1; break;
    case COALITION__ENTRY_KIND__ENTRY_BURN: sign = -1, burnish = true; break;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN: sign = 1, burnish = true; break;
    default: return CL_OK;
    }
    /* An earn reversal's points out of breakage had left the outstanding when they broke. */
    int64_t moved = burnish ? d->points : d->points - d->from_breakage;
    outstanding_t *cached = NULL;
    int rc = settle_outstanding(self, txn, &cached);
    if (rc != CL_OK)
        return rc;
    /* Worked on a copy: an overflow declines the request and leaves the batch's copy. */
    outstanding_t *o = &self->scratch_outstanding;
    memcpy(o, cached, sizeof *o);
    if (!burnish && !add_to(&o->points[outstanding_slot(o, d->settle.partner)], sign * moved))
        return CL_ERR_OVERFLOW;
    for (size_t i = 0; burnish && i < d->settle.n_shares; i++) {
        const settle_pair_t *sh = &d->settle.shares[i];
        if (!add_to(&o->points[outstanding_slot(o, sh->partner_id)], sign * sh->points))
            return CL_ERR_OVERFLOW;
        if (!d->settle.via_issuers)
            continue; /* settled through the operator: no pair */
        settle_pair_t *pair = &row->pairs[row_pair_slot(row, sh->partner_id)];
        if (!add_to(&pair->points, -sign * sh->points) || !add_to(&pair->minor, -sign * sh->minor))
            return CL_ERR_OVERFLOW;
    }
    assert(o->n >= cached->n); /* issuers are never removed */
    memcpy(cached, o, sizeof *o);
    self->outstanding_dirty = true;
    return CL_OK;
}

/* An expiry or a lapse: each issuer's points leave the outstanding and count as its
 * breakage in the open window. */
static int project_breakage(ledger_t *self, MDB_txn *txn, const decision_t *d)
{
    outstanding_t *cached = NULL;
    int rc = settle_outstanding(self, txn, &cached);
    if (rc != CL_OK)
        return rc;
    outstanding_t *o = &self->scratch_outstanding;
    memcpy(o, cached, sizeof *o);
    settle_partner_row_t *row = &self->scratch_row;
    int64_t sum = 0;
    for (size_t i = 0; i < d->settle.n_shares && rc == CL_OK; i++) {
        const settle_pair_t *sh = &d->settle.shares[i];
        assert(sh->points > 0);
        sum += sh->points;
        rc = get_row(self, txn, self->batch_window_id, sh->partner_id, row);
        if (rc != CL_OK)
            break;
        row->c.entries++;
        if (!add_to(&row->c.points_expired, sh->points) ||
            !add_to(&o->points[outstanding_slot(o, sh->partner_id)], -sh->points))
            return CL_ERR_OVERFLOW;
        rc = put_row(self, txn, self->batch_window_id, row);
    }
    if (rc != CL_OK)
        return rc;
    assert(sum == d->points); /* the shares are the entry's points, by issuer */
    memcpy(cached, o, sizeof *o);
    self->outstanding_dirty = true;
    return CL_OK;
}

int settle_project(ledger_t *self, MDB_txn *txn, const decision_t *d)
{
    if (d->kind == COALITION__ENTRY_KIND__ENTRY_EXPIRY ||
        d->kind == COALITION__ENTRY_KIND__ENTRY_UNCLAIMED_LAPSE)
        return project_breakage(self, txn, d);
    if (!d->settle.priced)
        return CL_OK;
    assert(self->batch_window_id != 0 && d->settle.partner != NULL);
    assert(d->settle.settle_minor >= 0 && d->settle.fee_minor >= 0);
    settle_partner_row_t *row = &self->scratch_row;
    int rc = get_row(self, txn, self->batch_window_id, d->settle.partner, row);
    if (rc != CL_OK)
        return rc;
    if (!counters_add(&row->c, d->kind, d->points, d->settle.settle_minor, d->settle.fee_minor,
                      d->settle.via_issuers))
        return CL_ERR_OVERFLOW;
    if (!add_to(&row->c.points_expired_reversed, d->from_breakage))
        return CL_ERR_OVERFLOW;
    if (d->kind == COALITION__ENTRY_KIND__ENTRY_EARN &&
        !add_to(&row->c.points_bonus, d->bonus_total))
        return CL_ERR_OVERFLOW;
    rc = project_outstanding(self, txn, d, row);
    if (rc == CL_OK)
        rc = put_row(self, txn, self->batch_window_id, row);
    if (rc != CL_OK || d->settle.prepaid_delta == 0)
        return rc;
    int64_t remaining = 0;
    rc = settle_get_prepaid(self, txn, d->settle.partner, &remaining);
    if (rc != CL_OK)
        return rc;
    if (!add_to(&remaining, d->settle.prepaid_delta))
        return CL_ERR_OVERFLOW;
    if (remaining < 0)
        return CL_ERR_CORRUPT; /* the earn checked the block */
    assert(d->settle.prepaid_delta > 0 || d->kind == COALITION__ENTRY_KIND__ENTRY_EARN);
    return put_prepaid(self, txn, d->settle.partner, remaining);
}
