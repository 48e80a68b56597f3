/* The operator's settlement requests: a contract, a prepaid top-up, the settlement
 * configuration and a window's close. Each is decided and written in the request's
 * nested transaction (a decline leaves no trace) and journalled without postings. */
#include "ledger_internal.h"

#include "amount.h"
#include "errors.h"
#include "log.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


void settle_time_text(int64_t ms, char buf[SETTLE_TIME_TEXT_BYTES])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(buf, SETTLE_TIME_TEXT_BYTES, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, SETTLE_TIME_TEXT_BYTES - n, ".%03dZ", (int)(ms % 1000));
}

static int partner_known(ledger_t *self, MDB_txn *txn, const char *partner, decision_t *d)
{
    MDB_val k = {strlen(partner), (void *)partner}, v;
    int rc = mdb_get(txn, self->db_partners, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rules_decline(d, RC_UNKNOWN_PARTNER, "unknown partner %s", partner);
        return CL_OK;
    }
    return store_err(rc);
}

int rules_contract_set(ledger_t *self, MDB_txn *txn, decision_t *d,
                       const Coalition__ContractSetRequest *r)
{
    int rc = partner_known(self, txn, r->partner_id, d);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    int64_t from = r->from_ms == 0 ? d->now_ms : r->from_ms;
    char when[SETTLE_TIME_TEXT_BYTES];
    settle_time_text(from, when);
    if (from < d->now_ms) {
        rules_decline(d, RC_INVALID_TRANSACTION,
                      "a contract cannot start in the past (%s); history keeps its prices", when);
        return CL_OK;
    }
    Coalition__Contract *now = NULL;
    rc = settle_contract_at(self, txn, r->partner_id, INT64_MAX - 1, &now);
    bool same_currency = rc == CL_OK && strcmp(now->currency, r->currency) == 0;
    coalition__contract__free_unpacked(now, NULL);
    if (rc != CL_OK)
        return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc;
    if (!same_currency) {
        rules_decline(d, RC_INVALID_AMOUNT,
                      "%s settles in its first contract's currency; a new currency needs a new "
                      "partner", r->partner_id);
        return CL_OK;
    }
    Coalition__Contract *same = NULL;
    rc = settle_contract_exact(self, txn, r->partner_id, from, &same);
    coalition__contract__free_unpacked(same, NULL);
    if (rc == CL_OK && from == d->now_ms) {
        rules_decline(d, RC_INVALID_TRANSACTION, "a contract of %s already starts at %s",
                      r->partner_id, when);
        return CL_OK;
    }
    if (rc != CL_OK && rc != CL_ERR_NOT_FOUND)
        return rc;
    Coalition__Contract *c = &d->contract;
    assert(from >= d->now_ms && same_currency); /* never in the past, never another currency */
    coalition__contract__init(c);
    c->from_ms = from;
    c->earn_rate_milli = r->earn_rate_milli;
    snprintf(d->currency, sizeof d->currency, "%s", r->currency);
    c->currency = d->currency;
    c->issue_price_per_mille = r->issue_price_per_mille;
    c->reimburse_per_mille = r->reimburse_per_mille;
    c->fee_minor = r->fee_minor;
    c->funding = r->funding;
    c->net_cap_minor = r->net_cap_minor;
    c->return_period_seconds = r->return_period_seconds;
    c->locale = r->locale; /* wire_validate refused a code the catalogue lacks */
    c->created_seq = self->batch_seq + 1;
    d->has_contract = true;
    d->kind = COALITION__ENTRY_KIND__ENTRY_CONTRACT_SET;
    d->participant = r->partner_id;
    snprintf(d->text, sizeof d->text, "Contract of %s from %s recorded%s%s%s", r->partner_id, when,
             rc == CL_OK ? " (replacing the one not yet in force)" : "",
             r->locale[0] != '\0' ? "; receipts in " : "", r->locale);
    return settle_put_contract(self, txn, r->partner_id, c);
}

int rules_partner_topup(ledger_t *self, MDB_txn *txn, decision_t *d,
                        const Coalition__PartnerTopupRequest *r)
{
    int rc = partner_known(self, txn, r->partner_id, d);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    Coalition__Contract *c = NULL;
    rc = settle_contract_at(self, txn, r->partner_id, d->now_ms, &c);
    if (rc == CL_ERR_NOT_FOUND)
        rc = CL_ERR_CORRUPT; /* a partner has a contract from its partner-add on */
    if (rc == CL_OK && c->funding != COALITION__FUNDING__FUNDING_PREPAID)
        rules_decline(d, RC_INVALID_TRANSACTION,
                      "partner %s is post-paid under its contract in force; nothing to top up",
                      r->partner_id);
    int64_t remaining = 0;
    if (rc == CL_OK && d->code == RC_APPROVED)
        rc = settle_get_prepaid(self, txn, r->partner_id, &remaining);
    if (rc == CL_OK && d->code == RC_APPROVED && remaining > POINTS_MAX - r->points)
        rules_decline(d, RC_EXCEEDS_LIMIT, "the prepaid block would pass %lld points",
                      (long long)POINTS_MAX);
    if (rc == CL_OK && d->code == RC_APPROVED) {
        assert(remaining + r->points <= POINTS_MAX && c->funding == COALITION__FUNDING__FUNDING_PREPAID);
        d->settle.priced = true;
        d->settle.partner = r->partner_id;
        d->settle.contract_from_ms = c->from_ms;
        d->settle.settle_minor = amount_price(r->points, c->issue_price_per_mille);
        d->settle.prepaid_delta = r->points;
        d->kind = COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP;
        d->participant = r->partner_id;
        d->points = r->points;
        snprintf(d->currency, sizeof d->currency, "%s", c->currency);
        snprintf(d->text, sizeof d->text, "Partner %s bought %lld points: %lld left in its block",
                 r->partner_id, (long long)r->points, (long long)(remaining + r->points));
    }
    coalition__contract__free_unpacked(c, NULL);
    return rc;
}

struct currency_walk {
    const char *first; /* the first partner's currency (points into the walk's buffer) */
    char buf[CURRENCY_CODE_BYTES];
    bool mixed;
};

static int note_currency(const MDB_val *k, const MDB_val *v, void *ctx)
{
    (void)k;
    struct currency_walk *w = ctx;
    Coalition__PartnerRecord *p = coalition__partner_record__unpack(NULL, v->mv_size, v->mv_data);
    if (p == NULL)
        return CL_ERR_CORRUPT;
    if (w->first == NULL) {
        snprintf(w->buf, sizeof w->buf, "%s", p->currency);
        w->first = w->buf;
    } else if (strcmp(w->first, p->currency) != 0) {
        w->mixed = true;
    }
    coalition__partner_record__free_unpacked(p, NULL);
    return w->mixed ? STORE_WALK_STOP : CL_OK;
}

/* Whether every partner, and `extra` (NULL: none), settle in one currency. */
int settle_one_currency(ledger_t *self, MDB_txn *txn, const char *extra, bool *one_out)
{
    struct currency_walk w = {NULL, "", false};
    int rc = store_walk(txn, self->db_partners, NULL, note_currency, &w);
    *one_out = rc == CL_OK && !w.mixed && (extra == NULL || w.first == NULL ||
                                           strcmp(w.first, extra) == 0);
    return rc;
}

/* Whether issuer-pays is configured or in force in the open window. */
int settle_issuer_pays_anywhere(ledger_t *self, MDB_txn *txn, bool *out)
{
    Coalition__SettlementState *s = NULL;
    int rc = settle_get_state(self, txn, &s);
    *out = self->batch_window_model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS ||
           (rc == CL_OK && s->config->model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS);
    coalition__settlement_state__free_unpacked(s, NULL);
    return rc;
}

int rules_settlement_config(ledger_t *self, MDB_txn *txn, decision_t *d,
                            const Coalition__SettlementConfigRequest *r)
{
    bool one = true;
    int rc = r->model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS
                 ? settle_one_currency(self, txn, NULL, &one)
                 : CL_OK;
    if (rc != CL_OK)
        return rc;
    if (!one) {
        rules_decline(d, RC_INVALID_TRANSACTION,
                      "issuer-pays settles partners of one currency; these use several");
        return CL_OK;
    }
    Coalition__SettlementState *s = NULL;
    rc = settle_get_state(self, txn, &s);
    if (rc != CL_OK)
        return rc;
    Coalition__SettlementConfig *c = &d->settlement;
    coalition__settlement_config__init(c);
    assert(r->grace_seconds <= SETTLEMENT_GRACE_SECONDS_MAX); /* wire_validate checked */
    c->period_seconds = r->period_seconds;
    c->grace_seconds = r->grace_seconds;
    c->model = r->model;
    d->has_settlement = true;
    Coalition__SettlementConfig *kept = s->config;
    s->config = c;
    rc = ledger_put_record(txn, self->db_settlement, "S", 1, &s->base);
    s->config = kept;
    coalition__settlement_state__free_unpacked(s, NULL);
    d->kind = COALITION__ENTRY_KIND__ENTRY_SETTLEMENT_CONFIG;
    char period[32];
    if (r->period_seconds == 0)
        snprintf(period, sizeof period, "calendar month");
    else
        snprintf(period, sizeof period, "%" PRId64 " s", r->period_seconds);
    snprintf(d->text, sizeof d->text,
             "Settlement: windows of a %s from the next one, closed %" PRId64 " s after they end, "
             "%s model",
             period, r->grace_seconds,
             r->model == COALITION__SETTLEMENT_MODEL__MODEL_HUB ? "hub" : "issuer-pays");
    return rc;
}

/* Advance the state's oldest unclosed window past closed ones. */
static int advance_oldest(ledger_t *self, MDB_txn *txn)
{
    Coalition__SettlementState *s = NULL;
    int rc = settle_get_state(self, txn, &s);
    while (rc == CL_OK && s->oldest_unclosed_id != 0 &&
           s->oldest_unclosed_id < s->open_window_id) {
        Coalition__WindowRecord *w = NULL;
        rc = settle_get_window(self, txn, s->oldest_unclosed_id, &w);
        bool closed = rc == CL_OK && w->state == COALITION__WINDOW_STATE__WINDOW_CLOSED;
        coalition__window_record__free_unpacked(w, NULL);
        if (!closed)
            break;
        s->oldest_unclosed_id++;
    }
    assert(rc != CL_OK || s->oldest_unclosed_id <= s->open_window_id);
    if (rc == CL_OK)
        rc = ledger_put_record(txn, self->db_settlement, "S", 1, &s->base);
    coalition__settlement_state__free_unpacked(s, NULL);
    return rc;
}

/* 12 unless the window may be closed now: it exists, is not closed, and is not open
 * (an open one is ended first when the request says `early`). */
static int closable(ledger_t *self, MDB_txn *txn, decision_t *d,
                    const Coalition__WindowCloseRequest *r, Coalition__WindowRecord **w)
{
    uint64_t id = r->window_id;
    int rc = settle_get_window(self, txn, id, w);
    if (rc == CL_ERR_NOT_FOUND) {
        rules_decline(d, RC_INVALID_TRANSACTION, "no settlement window %" PRIu64, id);
        return CL_OK;
    }
    if (rc != CL_OK)
        return rc;
    if ((*w)->state == COALITION__WINDOW_STATE__WINDOW_CLOSED) {
        rules_decline(d, RC_INVALID_TRANSACTION, "window %" PRIu64 " is already closed (seq %" PRIu64 ")",
                      id, (*w)->close_seq);
        return CL_OK;
    }
    if ((*w)->state != COALITION__WINDOW_STATE__WINDOW_OPEN)
        return CL_OK;
    if (!r->early) {
        char end[SETTLE_TIME_TEXT_BYTES];
        settle_time_text((*w)->end_ms, end);
        rules_decline(d, RC_INVALID_TRANSACTION,
                      "window %" PRIu64 " is open until %s (close it early with --early)", id, end);
        return CL_OK;
    }
    coalition__window_record__free_unpacked(*w, NULL);
    *w = NULL;
    rc = settle_end_early(self, txn, d->now_ms);
    if (rc == CL_OK)
        rc = settle_get_window(self, txn, id, w);
    return rc;
}

/* ENDED -> CLOSED. Nothing else changes: the counters are already complete. */
int rules_window_close(ledger_t *self, MDB_txn *txn, decision_t *d,
                       const Coalition__WindowCloseRequest *r)
{
    Coalition__WindowRecord *w = NULL;
    int rc = closable(self, txn, d, r, &w);
    if (rc != CL_OK || d->code != RC_APPROVED) {
        coalition__window_record__free_unpacked(w, NULL);
        return rc;
    }
    if (w->state != COALITION__WINDOW_STATE__WINDOW_ENDED) {
        coalition__window_record__free_unpacked(w, NULL);
        return CL_ERR_CORRUPT;
    }
    if (w->id >= self->batch_window_id) {
        coalition__window_record__free_unpacked(w, NULL);
        return CL_ERR_CORRUPT; /* an ended window is older than the open one */
    }
    w->state = COALITION__WINDOW_STATE__WINDOW_CLOSED; /* ENDED -> CLOSED, the only way */
    w->close_seq = self->batch_seq + 1;
    rc = settle_put_window(self, txn, w);
    if (rc == CL_OK)
        rc = advance_oldest(self, txn);
    char start[SETTLE_TIME_TEXT_BYTES], end[SETTLE_TIME_TEXT_BYTES];
    settle_time_text(w->start_ms, start);
    settle_time_text(w->end_ms, end);
    d->kind = COALITION__ENTRY_KIND__ENTRY_WINDOW_CLOSE;
    d->closed_window_id = w->id;
    snprintf(d->text, sizeof d->text,
             "Window %" PRIu64 " closed: %s to %s, its last entry seq %" PRIu64, w->id, start, end,
             w->last_seq);
    coalition__window_record__free_unpacked(w, NULL);
    assert(rc != CL_OK || d->closed_window_id == r->window_id);
    return rc;
}

/* ---- the writer's housekeeping -------------------------------------------------------- */

/* Windows ENDED for longer than their grace at now_ms, oldest first, at most `max`. */
static int due_windows(ledger_t *self, MDB_txn *txn, int64_t now_ms, uint64_t *ids, size_t max,
                       size_t *count)
{
    Coalition__SettlementState *s = NULL;
    int rc = settle_get_state(self, txn, &s);
    *count = 0;
    for (uint64_t id = rc == CL_OK ? s->oldest_unclosed_id : 0;
         rc == CL_OK && id != 0 && id < s->open_window_id && *count < max; id++) {
        Coalition__WindowRecord *w = NULL;
        rc = settle_get_window(self, txn, id, &w);
        if (rc == CL_OK && w->state == COALITION__WINDOW_STATE__WINDOW_ENDED &&
            w->end_ms + w->grace_seconds * 1000 <= now_ms)
            ids[(*count)++] = id;
        coalition__window_record__free_unpacked(w, NULL);
    }
    coalition__settlement_state__free_unpacked(s, NULL);
    return rc;
}

/* Close one window as the operator would, keyed "window-close-ID" at site "broker". */
static int close_due(ledger_t *self, uint64_t id, int64_t now_ms)
{
    assert(self->batch != NULL && id > 0 && id < self->batch_window_id);
    char txn_id[TXN_ID_LEN_MAX + 1];
    snprintf(txn_id, sizeof txn_id, "window-close-%" PRIu64, id);
    Coalition__WindowCloseRequest body = COALITION__WINDOW_CLOSE_REQUEST__INIT;
    body.window_id = id;
    envelope_t env = COALITION__ENVELOPE__INIT;
    env.body_case = COALITION__ENVELOPE__BODY_WINDOW_CLOSE;
    env.window_close = &body;
    char text[RECEIPT_TEXT_BYTES_MAX];
    int code = RC_APPROVED;
    int rc = ledger_apply_own(self, &env, "settlement", txn_id, now_ms, &code, text, sizeof text,
                              NULL);
    if (rc == CL_OK)
        log_info("settlement: %s", text);
    return rc;
}

int ledger_housekeep(ledger_t *self, int64_t now_ms, size_t *closed_out)
{
    assert(self != NULL && closed_out != NULL);
    uint64_t ids[SETTLE_UNCLOSED_WINDOWS_MAX];
    size_t n = 0;
    *closed_out = 0;
    int rc = ledger_batch_begin(self);
    if (rc != CL_OK)
        return rc;
    rc = settle_roll(self, self->batch, now_ms);
    if (rc == CL_OK)
        rc = due_windows(self, self->batch, now_ms, ids, SETTLE_UNCLOSED_WINDOWS_MAX, &n);
    for (size_t i = 0; i < n && rc == CL_OK; i++)
        rc = close_due(self, ids[i], now_ms);
    if (rc != CL_OK) {
        ledger_batch_abort(self);
        return rc;
    }
    rc = ledger_batch_commit(self);
    if (rc == CL_OK)
        *closed_out = n;
    return rc;
}
