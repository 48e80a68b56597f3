/* Settlement's read side for reports (coalitionctl, tests), each call in one short read
 * transaction: the configuration, windows, a window's counters, contracts and prepaid
 * blocks. */
#include "ledger_internal.h"

#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

struct read_rows {
    uint64_t id;
    const char *text;
    void *rows;
    size_t max, count;
    void *out;
};

static int config_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    settle_config_t *out = ctx;
    Coalition__SettlementState *s = NULL;
    int rc = settle_get_state(self, txn, &s);
    if (rc != CL_OK)
        return rc;
    out->period_seconds = s->config->period_seconds;
    out->grace_seconds = s->config->grace_seconds;
    out->model = (int)s->config->model;
    out->open_window_id = s->open_window_id;
    out->oldest_unclosed_id = s->oldest_unclosed_id;
    coalition__settlement_state__free_unpacked(s, NULL);
    return CL_OK;
}

int ledger_settle_config(ledger_t *self, settle_config_t *out)
{
    memset(out, 0, sizeof *out);
    return ledger_with_reader(self, config_in, out);
}

static void window_from(const Coalition__WindowRecord *w, settle_window_t *out)
{
    assert(w != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    out->id = w->id;
    out->start_ms = w->start_ms;
    out->end_ms = w->end_ms;
    out->state = (int)w->state;
    out->model = (int)w->model;
    out->first_seq = w->first_seq;
    out->last_seq = w->last_seq;
    out->close_seq = w->close_seq;
    out->grace_seconds = w->grace_seconds;
    if (w->last_hash.len == WIRE_HASH_BYTES)
        memcpy(out->last_hash, w->last_hash.data, WIRE_HASH_BYTES);
}

static int windows_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    struct read_rows *r = ctx;
    settle_window_t *rows = r->rows;
    for (uint64_t id = r->id + 1; r->count < r->max; id++) {
        Coalition__WindowRecord *w = NULL;
        int rc = settle_get_window(self, txn, id, &w);
        if (rc == CL_ERR_NOT_FOUND)
            return CL_OK;
        if (rc != CL_OK)
            return rc;
        window_from(w, &rows[r->count++]);
        coalition__window_record__free_unpacked(w, NULL);
    }
    return CL_OK;
}

int ledger_windows_slice(ledger_t *self, uint64_t after_id, settle_window_t *rows, size_t max,
                         size_t *count_out)
{
    assert(rows != NULL && max > 0);
    struct read_rows r = {after_id, NULL, rows, max, 0, NULL};
    int rc = ledger_with_reader(self, windows_in, &r);
    *count_out = r.count;
    return rc;
}

int ledger_window(ledger_t *self, uint64_t id, settle_window_t *out)
{
    size_t n = 0;
    int rc = ledger_windows_slice(self, id - 1, out, 1, &n);
    if (rc == CL_OK && (n != 1 || out->id != id))
        return CL_ERR_NOT_FOUND;
    return rc;
}

static int take_counters(const MDB_val *k, const MDB_val *v, void *ctx)
{
    struct read_rows *r = ctx;
    settle_partner_row_t *row = &((settle_partner_row_t *)r->rows)[r->count];
    const uint8_t *key = k->mv_data;
    if (k->mv_size < 10 || key[0] != 'C' || store_get_u64(key + 1) != r->id)
        return STORE_WALK_STOP;
    size_t plen = k->mv_size - 9;
    if (plen > PARTNER_ID_LEN_MAX)
        return CL_ERR_CORRUPT;
    if (r->text != NULL && plen == strlen(r->text) && memcmp(key + 9, r->text, plen) == 0)
        return CL_OK; /* the `after` partner itself */
    Coalition__WindowCounters *c = coalition__window_counters__unpack(NULL, v->mv_size, v->mv_data);
    if (c == NULL)
        return CL_ERR_CORRUPT;
    memcpy(row->partner_id, key + 9, plen);
    row->partner_id[plen] = '\0';
    int rc = settle_counters_row(c, row);
    coalition__window_counters__free_unpacked(c, NULL);
    if (rc != CL_OK)
        return rc;
    r->count++;
    return r->count == r->max ? STORE_WALK_STOP : CL_OK;
}

static int counters_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    struct read_rows *r = ctx;
    uint8_t key[SETTLE_WINDOW_KEY_BYTES];
    size_t plen = r->text != NULL ? strlen(r->text) : 0;
    key[0] = 'C';
    store_put_u64(key + 1, r->id);
    memcpy(key + 9, r->text != NULL ? r->text : "", plen);
    MDB_val from = {9 + plen, key};
    int rc = store_walk(txn, self->db_settlement, &from, take_counters, r);
    return rc == STORE_WALK_STOP ? CL_OK : rc;
}

int ledger_window_counters(ledger_t *self, uint64_t window_id, const char *after,
                           settle_partner_row_t *rows, size_t max, size_t *count_out)
{
    assert(max > 0);
    struct read_rows r = {window_id, after != NULL && after[0] != '\0' ? after : NULL,
                          rows, max, 0, NULL};
    int rc = ledger_with_reader(self, counters_in, &r);
    *count_out = r.count;
    return rc;
}

static void contract_from(const char *partner, const Coalition__Contract *c,
                          settle_contract_t *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->partner_id, sizeof out->partner_id, "%s", partner);
    out->from_ms = c->from_ms;
    out->earn_rate_milli = c->earn_rate_milli;
    snprintf(out->currency, sizeof out->currency, "%s", c->currency);
    out->issue_price_per_mille = c->issue_price_per_mille;
    out->reimburse_per_mille = c->reimburse_per_mille;
    out->fee_minor = c->fee_minor;
    out->net_cap_minor = c->net_cap_minor;
    out->return_period_seconds = c->return_period_seconds;
    snprintf(out->locale, sizeof out->locale, "%.*s", RECEIPT_LOCALE_CODE_LEN_MAX, c->locale);
    out->funding = (int)c->funding;
    out->created_seq = c->created_seq;
}

static int take_contract(const MDB_val *k, const MDB_val *v, void *ctx)
{
    struct read_rows *r = ctx;
    size_t plen = strlen(r->text);
    if (k->mv_size != plen + 9 || memcmp(k->mv_data, r->text, plen) != 0 ||
        ((const uint8_t *)k->mv_data)[plen] != 0)
        return STORE_WALK_STOP;
    Coalition__Contract *c = coalition__contract__unpack(NULL, v->mv_size, v->mv_data);
    if (c == NULL)
        return CL_ERR_CORRUPT;
    contract_from(r->text, c, &((settle_contract_t *)r->rows)[r->count++]);
    coalition__contract__free_unpacked(c, NULL);
    return r->count == r->max ? STORE_WALK_STOP : CL_OK;
}

static int contracts_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    struct read_rows *r = ctx;
    uint8_t key[CONTRACT_KEY_BYTES];
    size_t plen = strlen(r->text);
    memcpy(key, r->text, plen);
    key[plen] = 0;
    MDB_val from = {plen + 1, key};
    return store_walk(txn, self->db_contracts, &from, take_contract, r);
}

int ledger_contracts(ledger_t *self, const char *partner_id, settle_contract_t *rows, size_t max,
                     size_t *count_out)
{
    assert(max > 0);
    *count_out = 0;
    if (!wire_id_valid(partner_id, PARTNER_ID_LEN_MAX))
        return CL_ERR_INVALID;
    struct read_rows r = {0, partner_id, rows, max, 0, NULL};
    int rc = ledger_with_reader(self, contracts_in, &r);
    *count_out = r.count;
    return rc;
}

static int prepaid_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    struct read_rows *r = ctx;
    return settle_get_prepaid(self, txn, r->text, r->out);
}

int ledger_prepaid_remaining(ledger_t *self, const char *partner_id, int64_t *out)
{
    *out = 0;
    if (!wire_id_valid(partner_id, PARTNER_ID_LEN_MAX))
        return CL_ERR_INVALID;
    struct read_rows r = {0, partner_id, NULL, 0, 0, out};
    return ledger_with_reader(self, prepaid_in, &r);
}

static int outstanding_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    struct read_rows *r = ctx;
    Coalition__Outstanding *o = NULL;
    int rc = ledger_get_record(txn, self->db_settlement, "O", 1,
                               &coalition__outstanding__descriptor, (ProtobufCMessage **)&o);
    if (rc == CL_ERR_NOT_FOUND)
        return CL_OK;
    settle_pair_t *rows = r->rows;
    for (size_t i = 0; rc == CL_OK && i < o->n_issuers && r->count < r->max; i++) {
        settle_pair_t *row = &rows[r->count++];
        snprintf(row->partner_id, sizeof row->partner_id, "%s", o->issuers[i]->partner_id);
        row->points = o->issuers[i]->points;
        row->minor = 0;
    }
    coalition__outstanding__free_unpacked(o, NULL);
    return rc;
}

int ledger_outstanding(ledger_t *self, settle_pair_t *rows, size_t max, size_t *count_out)
{
    struct read_rows r = {0, NULL, rows, max, 0, NULL};
    int rc = ledger_with_reader(self, outstanding_in, &r);
    *count_out = r.count;
    return rc;
}
