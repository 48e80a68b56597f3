/* Settlement statements: a closed window's figures from its counters (O(partners)
 * records, never the journal), as JSON or CSV, optionally with the line items (the
 * window's journal entries, read in bounded slices) a partner can audit. See
 * statement.h; signing is coalitionctl's (ctl_statement.c). */
#include "statement.h"

#include "amount.h"
#include "errors.h"
#include "json.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATEMENT_CURRENCIES_MAX 32

typedef struct party {
    settle_partner_row_t row;
    char currency[CURRENCY_CODE_BYTES];
    int64_t op_net;          /* with the operator: issue - reversed + top-ups + fees */
    int64_t owes, owed;      /* issuer-pays: to redeemers, from issuers (self excluded) */
    int64_t pays, paid, net; /* what it pays, what it is paid, pays - paid */
} party_t;

typedef struct margin {
    char currency[CURRENCY_CODE_BYTES];
    int64_t amount;
} margin_t;

typedef struct stmt {
    ledger_t *ledger;
    settle_window_t w;
    const char *partner; /* NULL: every partner */
    bool csv, detail, issuer_pays;
    party_t *parties; /* every partner with counters in the window, by id */
    size_t n_parties;
    int64_t (*owes)[SETTLE_PARTNERS_MAX]; /* issuer-pays: owes[i][r], issuer i to redeemer r */
    margin_t margins[STATEMENT_CURRENCIES_MAX];
    size_t n_margins;
    FILE *out;
} stmt_t;

static const char *direction(int64_t net)
{
    return net > 0 ? "partner pays" : net < 0 ? "partner is paid" : "even";
}

static bool shown(const stmt_t *s, const party_t *p)
{
    return s->partner == NULL || strcmp(s->partner, p->row.partner_id) == 0;
}

/* One party's figures (settle.h): false when a sum leaves int64. */
static bool party_figures(party_t *p)
{
    const settle_counters_t *c = &p->row.c;
    bool ok = !__builtin_sub_overflow(c->issue_minor, c->issue_reversed_minor, &p->op_net) &&
              !__builtin_add_overflow(p->op_net, c->topup_minor, &p->op_net) &&
              !__builtin_add_overflow(p->op_net, c->fee_minor, &p->op_net) &&
              !__builtin_sub_overflow(p->op_net, c->hub_reimburse_minor, &p->op_net) &&
              !__builtin_add_overflow(p->op_net, c->hub_reimburse_reversed_minor, &p->op_net) &&
              !__builtin_add_overflow(c->issue_minor, c->topup_minor, &p->pays) &&
              !__builtin_add_overflow(p->pays, c->fee_minor, &p->pays) &&
              !__builtin_add_overflow(p->pays, c->hub_reimburse_reversed_minor, &p->pays) &&
              !__builtin_add_overflow(p->pays, p->owes, &p->pays) &&
              !__builtin_add_overflow(c->issue_reversed_minor, c->hub_reimburse_minor, &p->paid) &&
              !__builtin_add_overflow(p->paid, p->owed, &p->paid) &&
              !__builtin_sub_overflow(p->pays, p->paid, &p->net);
    assert(!ok || (settle_i128_t)p->net == settle_net_operator(c) + p->owes - p->owed);
    return ok;
}

static int add_margin(stmt_t *s, const char *currency, int64_t net)
{
    size_t i = 0;
    while (i < s->n_margins && strcmp(s->margins[i].currency, currency) != 0)
        i++;
    if (i == STATEMENT_CURRENCIES_MAX)
        return CL_ERR_OVERFLOW;
    if (i == s->n_margins) {
        snprintf(s->margins[i].currency, CURRENCY_CODE_BYTES, "%s", currency);
        s->margins[i].amount = 0;
        s->n_margins++;
    }
    return __builtin_add_overflow(s->margins[i].amount, net, &s->margins[i].amount)
               ? CL_ERR_OVERFLOW
               : CL_OK;
}

static int party_add(stmt_t *s, const settle_partner_row_t *row)
{
    assert(wire_id_valid(row->partner_id, PARTNER_ID_LEN_MAX));
    assert(s->n_parties == 0 || strcmp(s->parties[s->n_parties - 1].row.partner_id,
                                       row->partner_id) != 0); /* each partner once */
    if (s->n_parties == SETTLE_PARTNERS_MAX)
        return CL_ERR_OVERFLOW;
    party_t *p = &s->parties[s->n_parties];
    memset(p, 0, sizeof *p);
    p->row = *row;
    settle_contract_t first;
    size_t n = 0;
    int rc = ledger_contracts(s->ledger, row->partner_id, &first, 1, &n);
    if (rc == CL_OK && n != 1)
        rc = CL_ERR_CORRUPT;
    if (rc == CL_OK)
        snprintf(p->currency, sizeof p->currency, "%s", first.currency); /* fixed per partner */
    s->n_parties += rc == CL_OK;
    return rc;
}

static size_t party_index(const stmt_t *s, const char *id)
{
    for (size_t i = 0; i < s->n_parties; i++)
        if (strcmp(s->parties[i].row.partner_id, id) == 0)
            return i;
    return s->n_parties;
}

/* Issuer-pays: who owes whom, from every redeemer's pairs (an issuer paying itself is
 * left out: it nets to nothing). An issuer without counters of its own in the window
 * gets a row of zeros so that it can be shown owing. */
static int load_pairs(stmt_t *s)
{
    size_t redeemers = s->n_parties;
    for (size_t r = 0; r < redeemers; r++) {
        for (size_t k = 0; k < s->parties[r].row.n_pairs; k++) {
            const settle_pair_t *pair = &s->parties[r].row.pairs[k];
            size_t i = party_index(s, pair->partner_id);
            if (i == s->n_parties) {
                settle_partner_row_t zero;
                memset(&zero, 0, sizeof zero);
                snprintf(zero.partner_id, sizeof zero.partner_id, "%s", pair->partner_id);
                int rc = party_add(s, &zero);
                if (rc != CL_OK)
                    return rc;
            }
            if (i == r)
                continue;
            assert(i < s->n_parties && r < s->n_parties && i < SETTLE_PARTNERS_MAX);
            s->owes[i][r] += pair->minor;
            s->parties[i].owes += pair->minor;
            s->parties[r].owed += pair->minor;
        }
    }
    return CL_OK;
}

static int load_parties(stmt_t *s)
{
    enum { SLICE = 16 };
    settle_partner_row_t *rows = malloc(SLICE * sizeof *rows);
    char after[PARTNER_ID_LEN_MAX + 1] = "";
    size_t n = 0;
    int rc = rows != NULL ? CL_OK : CL_ERR_NOMEM;
    while (rc == CL_OK) {
        rc = ledger_window_counters(s->ledger, s->w.id, after, rows, SLICE, &n);
        for (size_t i = 0; rc == CL_OK && i < n; i++)
            rc = party_add(s, &rows[i]);
        if (n > 0)
            snprintf(after, sizeof after, "%s", rows[n - 1].partner_id);
        if (n < SLICE)
            break;
    }
    free(rows);
    if (rc == CL_OK)
        rc = load_pairs(s);
    for (size_t i = 0; rc == CL_OK && i < s->n_parties; i++) {
        party_t *p = &s->parties[i];
        rc = party_figures(p) ? add_margin(s, p->currency, p->op_net) : CL_ERR_OVERFLOW;
    }
    return rc;
}

/* ---- line items ------------------------------------------------------------------------ */

static bool priced_kind(int kind)
{
    switch (kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN:
    case COALITION__ENTRY_KIND__ENTRY_BURN:
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN:
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP: return true;
    default: return false;
    }
}

/* The partner whose counters an entry moved (a top-up names it as participant). */
static const char *entry_partner(const journal_entry_t *e)
{
    return e->kind == COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP ? e->participant : e->partner_id;
}

/* CSV field: quoted when it holds a comma, quote or line break (RFC 4180). */
static void csv_field(FILE *out, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s != '\0'; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void emit_line(stmt_t *s, const journal_entry_t *e, bool first)
{
    char at[SETTLE_TIME_TEXT_BYTES], till[SETTLE_TIME_TEXT_BYTES] = "";
    settle_time_text(e->time_ms, at);
    if (e->client_time_ms > 0)
        settle_time_text(e->client_time_ms, till);
    const char *strs[] = {entry_partner(e), e->site_id, e->txn_id, e->original_txn_id,
                          e->member_id};
    const char *names[] = {"partner", "site", "txn", "original_txn", "member"};
    if (s->csv) {
        fprintf(s->out, "line,%" PRIu64 ",%s,%s,%s", e->seq, at, till,
                ledger_entry_kind_name(e->kind));
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
            fputc(',', s->out);
            csv_field(s->out, strs[i]);
        }
        fprintf(s->out, ",%" PRId64 ",%" PRId64 ",%" PRId64 "\n", e->points, e->settle_minor,
                e->fee_minor);
        return;
    }
    fprintf(s->out, "%s\n{\"seq\":%" PRIu64 ",\"time\":\"%s\",\"till_time\":\"%s\",\"kind\":\"%s\"",
            first ? "" : ",", e->seq, at, till, ledger_entry_kind_name(e->kind));
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        fprintf(s->out, ",\"%s\":", names[i]);
        json_write_string(s->out, strs[i]);
    }
    fprintf(s->out,
            ",\"points\":%" PRId64 ",\"money_minor\":%" PRId64 ",\"fee_minor\":%" PRId64 "}",
            e->points, e->settle_minor, e->fee_minor);
}

/* The window's priced entries (of the partner), read in bounded slices. */
static int emit_lines(stmt_t *s)
{
    assert(s->detail && s->w.first_seq > 0);
    journal_entry_t *entries[LEDGER_SLICE_RECORDS_MAX];
    uint64_t next = s->w.first_seq;
    size_t n = 0;
    bool first = true;
    int rc = CL_OK;
    if (s->csv)
        fprintf(s->out, "record,seq,time,till_time,kind,partner,site,txn,original_txn,member,"
                        "points,money_minor,fee_minor\n");
    while (rc == CL_OK && next <= s->w.last_seq) {
        rc = ledger_journal_slice(s->ledger, next, entries, LEDGER_SLICE_RECORDS_MAX, &n);
        for (size_t i = 0; rc == CL_OK && i < n && entries[i]->seq <= s->w.last_seq; i++) {
            const journal_entry_t *e = entries[i];
            if (e->window_id == s->w.id && priced_kind(e->kind) &&
                (s->partner == NULL || strcmp(entry_partner(e), s->partner) == 0)) {
                emit_line(s, e, first);
                first = false;
            }
        }
        next = n > 0 ? entries[n - 1]->seq + 1 : s->w.last_seq + 1;
        ledger_journal_slice_free(entries, n);
    }
    return rc;
}

/* ---- the document -------------------------------------------------------------------- */

static void hex_of(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void emit_party_json(stmt_t *s, const party_t *p, bool first)
{
    const settle_counters_t *c = &p->row.c;
    fprintf(s->out, "%s\n{\"partner\":", first ? "" : ",");
    json_write_string(s->out, p->row.partner_id);
    fprintf(s->out,
            ",\"currency\":\"%s\",\"points_issued\":%" PRId64 ",\"points_issued_reversed\":%" PRId64
            ",\"points_redeemed\":%" PRId64 ",\"points_redeemed_reversed\":%" PRId64
            ",\"points_topped_up\":%" PRId64 ",\"issue_minor\":%" PRId64
            ",\"issue_reversed_minor\":%" PRId64 ",\"topup_minor\":%" PRId64
            ",\"fee_minor\":%" PRId64 ",\"reimburse_minor\":%" PRId64
            ",\"reimburse_reversed_minor\":%" PRId64 ",\"partner_pays_minor\":%" PRId64
            ",\"partner_is_paid_minor\":%" PRId64 ",\"net_minor\":%" PRId64
            ",\"direction\":\"%s\",\"entries\":%" PRIu64 ",\"operator_net_minor\":%" PRId64
            ",\"owes_redeemers_minor\":%" PRId64 ",\"owed_by_issuers_minor\":%" PRId64
            ",\"hub_reimburse_minor\":%" PRId64 ",\"hub_reimburse_reversed_minor\":%" PRId64
            ",\"points_expired\":%" PRId64 ",\"points_expired_reversed\":%" PRId64
            ",\"points_bonus\":%" PRId64 "}",
            p->currency, c->points_issued, c->points_issued_reversed, c->points_redeemed,
            c->points_redeemed_reversed, c->topup_points, c->issue_minor, c->issue_reversed_minor,
            c->topup_minor, c->fee_minor, c->reimburse_minor, c->reimburse_reversed_minor, p->pays,
            p->paid, p->net, direction(p->net), c->entries, p->op_net, p->owes, p->owed,
            c->hub_reimburse_minor, c->hub_reimburse_reversed_minor, c->points_expired,
            c->points_expired_reversed, c->points_bonus);
}

static void emit_party_csv(stmt_t *s, const party_t *p)
{
    const settle_counters_t *c = &p->row.c;
    fputs("partner,", s->out);
    csv_field(s->out, p->row.partner_id);
    fprintf(s->out,
            ",%s,%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64
            ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64
            ",%s,%" PRIu64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64
            ",%" PRId64 ",%" PRId64 "\n",
            p->currency, c->points_issued, c->points_issued_reversed, c->points_redeemed,
            c->points_redeemed_reversed, c->topup_points, c->issue_minor, c->issue_reversed_minor,
            c->topup_minor, c->fee_minor, c->reimburse_minor, c->reimburse_reversed_minor, p->pays,
            p->paid, p->net, direction(p->net), c->entries, p->op_net, p->owes, p->owed,
            c->hub_reimburse_minor, c->hub_reimburse_reversed_minor, c->points_expired,
            c->points_expired_reversed, c->points_bonus);
}

static void emit_cell(stmt_t *s, const char *payer, const char *payee, const char *currency,
                      int64_t amount, bool *first)
{
    assert(amount > 0);
    if (s->csv) {
        fputs("matrix,", s->out);
        csv_field(s->out, payer);
        fputc(',', s->out);
        csv_field(s->out, payee);
        fprintf(s->out, ",%s,%" PRId64 "\n", currency, amount);
        return;
    }
    fprintf(s->out, "%s\n{\"payer\":", *first ? "" : ",");
    json_write_string(s->out, payer);
    fprintf(s->out, ",\"payee\":");
    json_write_string(s->out, payee);
    fprintf(s->out, ",\"currency\":\"%s\",\"amount_minor\":%" PRId64 "}", currency, amount);
    *first = false;
}

/* A net owed between `a` and `b` (positive: a pays b), as one cell. */
static void emit_net(stmt_t *s, const char *a, const char *b, const char *currency, int64_t net,
                     bool *first)
{
    assert(strcmp(a, b) != 0 && net != INT64_MIN); /* nobody pays itself; -net fits */
    if (net > 0)
        emit_cell(s, a, b, currency, net, first);
    else if (net < 0)
        emit_cell(s, b, a, currency, -net, first);
}

/* Each partner's part with the operator (all of its net under the hub model), and between
 * each two partners what one owes the other for redemptions settled by issuers, net of
 * the other way. */
static void emit_matrix(stmt_t *s)
{
    bool first = true;
    if (s->csv)
        fprintf(s->out, "record,payer,payee,currency,amount_minor\n");
    for (size_t i = 0; i < s->n_parties; i++) {
        const party_t *p = &s->parties[i];
        if (shown(s, p))
            emit_net(s, p->row.partner_id, OPERATOR_PARTNER_ID, p->currency, p->op_net, &first);
    }
    for (size_t i = 0; i < s->n_parties; i++) {
        for (size_t j = i + 1; j < s->n_parties; j++) {
            const party_t *a = &s->parties[i], *b = &s->parties[j];
            if (!shown(s, a) && !shown(s, b))
                continue;
            if (strcmp(a->currency, b->currency) == 0) {
                emit_net(s, a->row.partner_id, b->row.partner_id, b->currency,
                         s->owes[i][j] - s->owes[j][i], &first);
                continue;
            }
            emit_net(s, a->row.partner_id, b->row.partner_id, b->currency, s->owes[i][j], &first);
            emit_net(s, b->row.partner_id, a->row.partner_id, a->currency, s->owes[j][i], &first);
        }
    }
}

static void emit_margins(stmt_t *s)
{
    if (s->csv)
        fprintf(s->out, "record,currency,operator_margin_minor\n");
    for (size_t i = 0; i < s->n_margins; i++) {
        if (s->csv)
            fprintf(s->out, "margin,%s,%" PRId64 "\n", s->margins[i].currency,
                    s->margins[i].amount);
        else
            fprintf(s->out, "%s\n{\"currency\":\"%s\",\"amount_minor\":%" PRId64 "}",
                    i == 0 ? "" : ",", s->margins[i].currency, s->margins[i].amount);
    }
}

static void emit_header(stmt_t *s)
{
    assert(s->w.state == COALITION__WINDOW_STATE__WINDOW_CLOSED && s->w.id > 0);
    char start[SETTLE_TIME_TEXT_BYTES], end[SETTLE_TIME_TEXT_BYTES];
    char hash[2 * WIRE_HASH_BYTES + 1];
    settle_time_text(s->w.start_ms, start);
    settle_time_text(s->w.end_ms, end);
    hex_of(s->w.last_hash, WIRE_HASH_BYTES, hash);
    const char *model =
        s->w.model == COALITION__SETTLEMENT_MODEL__MODEL_HUB ? "hub" : "issuer-pays";
    if (s->csv) {
        fprintf(s->out, "record,format,window,start,end,model,first_seq,last_seq,last_hash,"
                        "close_seq,partner\n");
        fprintf(s->out, "statement,%s,%" PRIu64 ",%s,%s,%s,%" PRIu64 ",%" PRIu64 ",%s,%" PRIu64 ",",
                STATEMENT_FORMAT, s->w.id, start, end, model, s->w.first_seq, s->w.last_seq, hash,
                s->w.close_seq);
        csv_field(s->out, s->partner != NULL ? s->partner : "");
        fprintf(s->out, "\nrecord,partner,currency,points_issued,points_issued_reversed,"
                        "points_redeemed,points_redeemed_reversed,points_topped_up,issue_minor,"
                        "issue_reversed_minor,topup_minor,fee_minor,reimburse_minor,"
                        "reimburse_reversed_minor,partner_pays_minor,partner_is_paid_minor,"
                        "net_minor,direction,entries,operator_net_minor,owes_redeemers_minor,"
                        "owed_by_issuers_minor,hub_reimburse_minor,hub_reimburse_reversed_minor,"
                        "points_expired,points_expired_reversed,points_bonus\n");
        return;
    }
    fprintf(
        s->out,
        "{\"statement\":{\"format\":\"%s\",\"window\":%" PRIu64 ",\"start\":\"%s\",\"end\":\"%s\","
        "\"model\":\"%s\",\"first_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64 ",\"last_hash\":\"%s\","
        "\"close_seq\":%" PRIu64 ",\"partner\":",
        STATEMENT_FORMAT, s->w.id, start, end, model, s->w.first_seq, s->w.last_seq, hash,
        s->w.close_seq);
    json_write_string(s->out, s->partner != NULL ? s->partner : "");
}

static int emit(stmt_t *s)
{
    emit_header(s);
    if (!s->csv)
        fprintf(s->out, ",\"partners\":[");
    bool first = true;
    for (size_t i = 0; i < s->n_parties; i++) {
        if (!shown(s, &s->parties[i]))
            continue;
        if (s->csv)
            emit_party_csv(s, &s->parties[i]);
        else
            emit_party_json(s, &s->parties[i], first);
        first = false;
    }
    fprintf(s->out, s->csv ? "" : "],\"matrix\":[");
    emit_matrix(s);
    if (s->partner == NULL) {
        fprintf(s->out, s->csv ? "" : "],\"operator_margin\":[");
        emit_margins(s);
    }
    int rc = CL_OK;
    if (s->detail) {
        fprintf(s->out, s->csv ? "" : "],\"lines\":[");
        rc = emit_lines(s);
    }
    fprintf(s->out, s->csv ? "" : "]}}\n");
    return rc;
}

static int build(stmt_t *s, char **doc, size_t *len)
{
    s->parties = calloc(SETTLE_PARTNERS_MAX, sizeof *s->parties);
    s->owes = calloc(SETTLE_PARTNERS_MAX, sizeof *s->owes);
    s->out = open_memstream(doc, len);
    int rc =
        s->parties != NULL && s->owes != NULL && s->out != NULL ? load_parties(s) : CL_ERR_NOMEM;
    if (rc == CL_OK)
        rc = emit(s);
    if (s->out != NULL && fclose(s->out) != 0 && rc == CL_OK)
        rc = CL_ERR_NOMEM;
    free(s->parties);
    free(s->owes);
    if (rc != CL_OK) {
        free(*doc);
        *doc = NULL;
    }
    return rc;
}

int statement_build(ledger_t *ledger, uint64_t window_id, const char *partner, bool csv,
                    bool detail, char **doc_out, size_t *len_out)
{
    stmt_t s;
    memset(&s, 0, sizeof s);
    s.ledger = ledger;
    s.partner = partner;
    s.csv = csv;
    s.detail = detail;
    *doc_out = NULL;
    *len_out = 0;
    int rc = ledger_window(ledger, window_id, &s.w);
    if (rc != CL_OK)
        return rc;
    if (s.w.state != COALITION__WINDOW_STATE__WINDOW_CLOSED)
        return CL_ERR_INVALID;
    s.issuer_pays = s.w.model == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS;
    rc = build(&s, doc_out, len_out);
    assert(rc != CL_OK || (*len_out >= 2 && (*doc_out)[*len_out - 1] == '\n'));
    return rc;
}
