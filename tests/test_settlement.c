/* Settlement, against a second, simple implementation kept by the test (the oracle):
 * contracts and their prices, windows and their roll-over, prepaid blocks, the net cap,
 * window counters and every figure of the statements, to the cent. A real LMDB ledger
 * driven through wire_validate and ledger_apply with the test's own clock, as the
 * broker's writer drives it; statements read back as CSV from statement_build.
 *
 * The oracle shares no code with broker/settle*.c: it prices with its own arithmetic,
 * keeps its own window ids (a window opens at the first request at or after the open
 * one's end, ends at the next period boundary; an early close ends the open window at
 * once), and adds up its own counters. */
#define _GNU_SOURCE /* timegm */
#include "errors.h"
#include "ledger.h"
#include "settle.h"
#include "statement.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXPECT_OK(what, rc)                                                                        \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != CL_OK)                                                                          \
            fail_msg("%s: expected CL_OK, got %d (%s)", (what), rc_, cl_strerror(rc_));            \
    } while (0)

#define TEMP_DIR_TEMPLATE "/tmp/test_settlement.XXXXXX"
#define PATH_BYTES 256
#define TEXT_BYTES (RECEIPT_TEXT_BYTES_MAX + 64)
/* 2026-11-30T10:00:00Z: a month's window ends 14 hours later. */
#define T0 INT64_C(1796032800000)
#define HOUR_MS INT64_C(3600000)
#define O_PARTNERS_MAX 8
#define O_WINDOWS_MAX 512
#define O_CONTRACTS_MAX 256
#define O_ORIGINALS_MAX 4096
#define O_MEMBERS 6

__extension__ typedef __int128 i128_t;

typedef struct {
    int code;
    int64_t points;
    uint64_t seq;
    char text[TEXT_BYTES];
} result_t;

/* ---- the oracle ------------------------------------------------------------------------ */

typedef struct {
    int partner;
    int64_t from, rate, issue, reimb, fee, cap;
    bool prepaid;
} o_contract_t;

typedef struct {
    int64_t issued, issued_rev, redeemed, redeemed_rev;
    int64_t issue, issue_rev, reimb, reimb_rev, fee, topup_points, topup;
    int64_t entries;
    int64_t hub_reimb, hub_reimb_rev; /* settled through the operator */
} o_counts_t;

typedef struct {
    char txn[TXN_ID_LEN_MAX + 1];
    int partner;
    bool earn;
    int64_t points, amount, reversed_points, reversed_minor;
    int contract; /* index into contracts */
    int member;
    bool voided;
    bool via_issuers; /* a burn recorded in an issuer-pays window */
    int64_t shares[O_PARTNERS_MAX], share_money[O_PARTNERS_MAX]; /* a burn's issuers */
} o_original_t;

typedef struct {
    int64_t period_s; /* 0: calendar month */
    bool issuer_pays, next_issuer_pays;
    bool window_ip[O_WINDOWS_MAX];
    int64_t outstanding[O_PARTNERS_MAX];
    int64_t owes[O_WINDOWS_MAX][O_PARTNERS_MAX][O_PARTNERS_MAX]; /* [w][issuer][redeemer] */
    uint64_t open_id;
    int64_t open_end;
    bool closed[O_WINDOWS_MAX];
    o_contract_t contracts[O_CONTRACTS_MAX];
    int n_contracts;
    o_counts_t counts[O_WINDOWS_MAX][O_PARTNERS_MAX];
    int64_t prepaid[O_PARTNERS_MAX];
    o_original_t originals[O_ORIGINALS_MAX];
    int n_originals;
    int64_t balance[O_MEMBERS];
    int cap_declines, prepaid_declines, ip_burns;
} oracle_t;

static const char *PARTNERS[O_PARTNERS_MAX] = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"};

static int partner_index(const char *id)
{
    for (int i = 0; i < O_PARTNERS_MAX; i++)
        if (strcmp(PARTNERS[i], id) == 0)
            return i;
    fail_msg("unknown partner %s", id);
    return -1;
}

/* The next period boundary after t (UTC months by hand: days of each month). */
static int64_t o_period_end(int64_t period_s, int64_t t)
{
    if (period_s > 0)
        return (t / (period_s * 1000) + 1) * period_s * 1000;
    time_t secs = (time_t)(t / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    tm.tm_mon += 1;
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return (int64_t)timegm(&tm) * 1000;
}

static void o_roll(oracle_t *o, int64_t now)
{
    if (o->open_id != 0 && now < o->open_end)
        return;
    o->open_id++;
    assert_true(o->open_id < O_WINDOWS_MAX);
    o->open_end = o_period_end(o->period_s, now);
    o->window_ip[o->open_id] = o->next_issuer_pays;
}

/* Largest remainder over max(0, weight), ties to the lower index (the oracle's own). */
static void o_split(int64_t total, const int64_t *weights, int64_t *out)
{
    i128_t sum = 0, rem[O_PARTNERS_MAX];
    int64_t given = 0;
    for (int i = 0; i < O_PARTNERS_MAX; i++)
        sum += weights[i] > 0 ? weights[i] : 0;
    for (int i = 0; i < O_PARTNERS_MAX; i++) {
        i128_t w = weights[i] > 0 ? weights[i] : 0;
        out[i] = sum == 0 ? 0 : (int64_t)((i128_t)total * w / sum);
        rem[i] = sum == 0 ? 0 : (i128_t)total * w - (i128_t)out[i] * sum;
        given += out[i];
    }
    for (; given < total; given++) {
        int best = -1;
        for (int i = 0; i < O_PARTNERS_MAX; i++)
            if (rem[i] > 0 && (best < 0 || rem[i] > rem[best]))
                best = i;
        assert_true(best >= 0);
        out[best]++;
        rem[best] = 0;
    }
}

/* What of each share a reversal from cumulative `from` to `to` gives back: shares are
 * filled in issuer order. */
static void o_fill(const int64_t *shares, int64_t from, int64_t to, int64_t *out)
{
    int64_t below = 0;
    for (int i = 0; i < O_PARTNERS_MAX; i++) {
        int64_t a = from - below, b = to - below;
        a = a < 0 ? 0 : a > shares[i] ? shares[i] : a;
        b = b < 0 ? 0 : b > shares[i] ? shares[i] : b;
        out[i] = b - a;
        below += shares[i];
    }
}

static const o_contract_t *o_in_force(const oracle_t *o, int partner, int64_t t, int *index)
{
    const o_contract_t *best = NULL;
    for (int i = 0; i < o->n_contracts; i++) {
        const o_contract_t *c = &o->contracts[i];
        if (c->partner == partner && c->from <= t && (best == NULL || c->from >= best->from)) {
            best = c;
            if (index != NULL)
                *index = i;
        }
    }
    assert_non_null(best);
    return best;
}

/* Half up, in 128 bits. */
static int64_t o_price(int64_t points, int64_t per_mille)
{
    return (int64_t)(((i128_t)points * per_mille + 500) / 1000);
}

/* The part with the operator: issue revenue, top-ups and fees, less the redemptions the
 * operator settles (burns in hub windows and their reversals). */
static int64_t o_op_net(const o_counts_t *c)
{
    return c->issue - c->issue_rev + c->topup + c->fee - c->hub_reimb + c->hub_reimb_rev;
}

static o_original_t *o_original(oracle_t *o, const char *txn)
{
    for (int i = 0; i < o->n_originals; i++)
        if (strcmp(o->originals[i].txn, txn) == 0)
            return &o->originals[i];
    return NULL;
}

/* ---- fixture and requests -------------------------------------------------------------- */

typedef struct fixture {
    char dir[PATH_BYTES];
    ledger_t *l;
    int64_t now;
    unsigned ops;
    bool batch_open;   /* requests share one write transaction, as the writer batches */
    unsigned batching; /* 0: one request per batch; else commit after 1..batching */
    oracle_t o;
} fixture_t;

typedef struct request {
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__RefundRequest refund;
    Coalition__VoidRequest void_request;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerAddRequest partner_add;
    Coalition__ContractSetRequest contract;
    Coalition__PartnerTopupRequest topup;
    Coalition__SettlementConfigRequest config;
    Coalition__WindowCloseRequest close;
} request_t;

static envelope_t *request_init(fixture_t *f, request_t *r, const char *partner, const char *txn)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    if (txn == NULL)
        snprintf(r->txn_id, sizeof r->txn_id, "op-%u", ++f->ops);
    else
        snprintf(r->txn_id, sizeof r->txn_id, "%s", txn);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner;
    r->env.terminal_id = "till-1";
    r->env.site_id = strcmp(partner, OPERATOR_PARTNER_ID) == 0 ? OPERATOR_SITE_ID : "s1";
    r->env.txn_id = r->txn_id;
    r->env.client_time_ms = f->now;
    return &r->env;
}

/* Commit the open batch (before anything reads the ledger). */
static void commit(fixture_t *f)
{
    if (f->batch_open)
        EXPECT_OK("ledger_batch_commit", ledger_batch_commit(f->l));
    f->batch_open = false;
}

static result_t submit(fixture_t *f, const envelope_t *env)
{
    result_t res;
    memset(&res, 0, sizeof res);
    char why[RECEIPT_TEXT_BYTES_MAX] = "";
    bool admin = strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0;
    res.code = wire_validate(env, admin, why, sizeof why);
    if (res.code != RC_APPROVED) {
        snprintf(res.text, sizeof res.text, "not valid: %s", why);
        return res;
    }
    uint8_t hash[WIRE_HASH_BYTES];
    uint8_t *reply = NULL;
    size_t len = 0;
    EXPECT_OK("wire_request_hash", wire_request_hash(env, hash));
    if (!f->batch_open)
        EXPECT_OK("ledger_batch_begin", ledger_batch_begin(f->l));
    f->batch_open = true;
    EXPECT_OK("ledger_apply", ledger_apply(f->l, env, hash, f->now, &reply, &len));
    if (f->batching == 0 || (unsigned)rand() % f->batching == 0)
        commit(f);
    authorization_t *auth = wire_auth_decode(reply, len);
    assert_non_null(auth);
    res.code = auth->code;
    res.points = auth->points;
    res.seq = auth->seq;
    snprintf(res.text, sizeof res.text, "%s", auth->text);
    wire_auth_free(auth);
    free(reply);
    return res;
}

static void expect_code(const char *what, int code, const result_t *res)
{
    if (res->code != code)
        fail_msg("%s: expected %02d, got %02d (%s)", what, code, res->code, res->text);
}

static void want(const char *what, int code, result_t res) { expect_code(what, code, &res); }

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s", TEMP_DIR_TEMPLATE);
    assert_non_null(mkdtemp(f->dir));
    EXPECT_OK("ledger_init", ledger_init(f->dir));
    EXPECT_OK("ledger_open", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
    f->now = T0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    char path[PATH_BYTES + 16];
    if (f->batch_open)
        ledger_batch_abort(f->l);
    ledger_destroy(&f->l);
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", f->dir);
    unlink(path);
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* ---- operations: the oracle predicts, the ledger answers -------------------------------- */

static void op_partner(fixture_t *f, int p, int64_t rate_milli)
{
    request_t r;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = (char *)PARTNERS[p];
    r.partner_add.earn_rate_milli = rate_milli;
    r.partner_add.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    o_roll(&f->o, f->now);
    result_t res = submit(f, &r.env);
    expect_code("partner add", RC_APPROVED, &res);
    o_contract_t *c = &f->o.contracts[f->o.n_contracts++];
    memset(c, 0, sizeof *c);
    c->partner = p;
    c->from = f->now;
    c->rate = rate_milli;
}

static void op_member(fixture_t *f, int m)
{
    request_t r;
    char id[16];
    snprintf(id, sizeof id, "m%d", m);
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__enroll_request__init(&r.enroll);
    r.enroll.member_id = id;
    r.env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    r.env.enroll = &r.enroll;
    o_roll(&f->o, f->now);
    result_t res = submit(f, &r.env);
    expect_code("enrol", RC_APPROVED, &res);
}

/* A contract from `from` (0: now). */
static result_t op_contract(fixture_t *f, const o_contract_t *terms, int64_t from)
{
    request_t r;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    Coalition__ContractSetRequest *b = &r.contract;
    coalition__contract_set_request__init(b);
    b->partner_id = (char *)PARTNERS[terms->partner];
    b->from_ms = from;
    b->earn_rate_milli = terms->rate;
    b->currency = "EUR";
    b->issue_price_per_mille = terms->issue;
    b->reimburse_per_mille = terms->reimb;
    b->fee_minor = terms->fee;
    b->funding =
        terms->prepaid ? COALITION__FUNDING__FUNDING_PREPAID : COALITION__FUNDING__FUNDING_POSTPAID;
    b->net_cap_minor = terms->cap;
    r.env.body_case = COALITION__ENVELOPE__BODY_CONTRACT_SET;
    r.env.contract_set = b;
    o_roll(&f->o, f->now);
    result_t res = submit(f, &r.env);
    if (res.code == RC_APPROVED) {
        int64_t at = from == 0 ? f->now : from;
        o_contract_t *c = NULL;
        for (int i = 0; i < f->o.n_contracts; i++)
            if (f->o.contracts[i].partner == terms->partner && f->o.contracts[i].from == at)
                c = &f->o.contracts[i];
        if (c == NULL) {
            assert_true(f->o.n_contracts < O_CONTRACTS_MAX);
            c = &f->o.contracts[f->o.n_contracts++];
        }
        *c = *terms;
        c->from = at;
    }
    return res;
}

static o_counts_t *o_counts(fixture_t *f, int p) { return &f->o.counts[f->o.open_id][p]; }

static int64_t o_unsettled(const oracle_t *o, int partner);

/* An earn the oracle predicts: 61 past the prepaid block or the cap, else approved. */
static result_t op_earn(fixture_t *f, int p, const char *txn, int m, int64_t amount)
{
    request_t r;
    char member[16];
    snprintf(member, sizeof member, "m%d", m);
    request_init(f, &r, PARTNERS[p], txn);
    coalition__earn_request__init(&r.earn);
    r.earn.member_id = member;
    r.earn.amount_minor = amount;
    r.earn.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r.env.earn = &r.earn;
    oracle_t *o = &f->o;
    o_roll(o, f->now);
    int ci = 0;
    const o_contract_t *c = o_in_force(o, p, f->now, &ci);
    int64_t points = (int64_t)((i128_t)amount * c->rate / 100000);
    int64_t money = c->prepaid ? 0 : o_price(points, c->issue);
    int want = RC_APPROVED;
    if (c->prepaid && points > o->prepaid[p]) {
        want = RC_EXCEEDS_LIMIT;
        o->prepaid_declines++;
    } else if (c->cap > 0 && o_unsettled(o, p) + money + c->fee > c->cap) {
        want = RC_EXCEEDS_LIMIT;
        o->cap_declines++;
    }
    result_t res = submit(f, &r.env);
    expect_code("earn", want, &res);
    if (want != RC_APPROVED)
        return res;
    EXPECT_EQ("earn points", points, res.points);
    o_counts_t *k = o_counts(f, p);
    k->issued += points;
    k->issue += money;
    k->fee += c->fee;
    k->entries++;
    if (c->prepaid)
        o->prepaid[p] -= points;
    o->balance[m] += points;
    o->outstanding[p] += points;
    o_original_t *orig = &o->originals[o->n_originals++];
    assert_true(o->n_originals < O_ORIGINALS_MAX);
    memset(orig, 0, sizeof *orig);
    snprintf(orig->txn, sizeof orig->txn, "%s", txn);
    orig->partner = p;
    orig->earn = true;
    orig->member = m;
    orig->points = points;
    orig->amount = amount;
    orig->contract = ci;
    return res;
}

static result_t op_burn(fixture_t *f, int p, const char *txn, int m, int64_t points)
{
    request_t r;
    char member[16];
    snprintf(member, sizeof member, "m%d", m);
    request_init(f, &r, PARTNERS[p], txn);
    coalition__burn_request__init(&r.burn);
    r.burn.member_id = member;
    r.burn.points = points;
    r.env.body_case = COALITION__ENVELOPE__BODY_BURN;
    r.env.burn = &r.burn;
    oracle_t *o = &f->o;
    o_roll(o, f->now);
    int ci = 0;
    const o_contract_t *c = o_in_force(o, p, f->now, &ci);
    int want = points > o->balance[m] ? RC_INSUFFICIENT_POINTS : RC_APPROVED;
    result_t res = submit(f, &r.env);
    expect_code("burn", want, &res);
    if (want != RC_APPROVED)
        return res;
    o_counts_t *k = o_counts(f, p);
    int64_t money = o_price(points, c->reimb);
    k->redeemed += points;
    k->reimb += money;
    k->fee += c->fee;
    k->entries++;
    o->balance[m] -= points;
    o_original_t *orig = &o->originals[o->n_originals++];
    assert_true(o->n_originals < O_ORIGINALS_MAX);
    memset(orig, 0, sizeof *orig);
    o->ip_burns += o->window_ip[o->open_id];
    o_split(points, o->outstanding, orig->shares);
    o_split(money, o->outstanding, orig->share_money);
    orig->via_issuers = o->window_ip[o->open_id];
    if (!orig->via_issuers)
        k->hub_reimb += money;
    for (int i = 0; i < O_PARTNERS_MAX; i++) {
        o->outstanding[i] -= orig->shares[i];
        if (orig->via_issuers)
            o->owes[o->open_id][i][p] += orig->share_money[i];
    }
    snprintf(orig->txn, sizeof orig->txn, "%s", txn);
    orig->partner = p;
    orig->member = m;
    orig->points = points;
    orig->contract = ci;
    return res;
}

/* Points and money a reversal of `orig` gives back, priced under its contract. */
static void o_reverse(fixture_t *f, o_original_t *orig, int64_t points, int64_t minor)
{
    oracle_t *o = &f->o;
    const o_contract_t *c = &o->contracts[orig->contract];
    int64_t per = orig->earn ? c->issue : c->reimb;
    bool prepaid = orig->earn && c->prepaid;
    int64_t money = prepaid ? 0
                            : o_price(orig->reversed_points + points, per) -
                                  o_price(orig->reversed_points, per);
    o_counts_t *k = o_counts(f, orig->partner);
    if (orig->earn) {
        k->issued_rev += points;
        k->issue_rev += money;
    } else {
        k->redeemed_rev += points;
        k->reimb_rev += money;
    }
    k->entries++;
    if (prepaid)
        o->prepaid[orig->partner] += points;
    if (orig->earn) {
        o->outstanding[orig->partner] -= points;
    } else {
        int64_t back[O_PARTNERS_MAX], back_money[O_PARTNERS_MAX];
        o_fill(orig->shares, orig->reversed_points, orig->reversed_points + points, back);
        o_fill(orig->share_money, o_price(orig->reversed_points, per),
               o_price(orig->reversed_points + points, per), back_money);
        for (int i = 0; i < O_PARTNERS_MAX; i++) {
            o->outstanding[i] += back[i];
            if (orig->via_issuers)
                o->owes[o->open_id][i][orig->partner] -= back_money[i];
        }
        if (!orig->via_issuers)
            k->hub_reimb_rev += money;
    }
    o->balance[orig->member] += orig->earn ? -points : points;
    orig->reversed_points += points;
    orig->reversed_minor += minor;
}

/* A refund of an earn (money) or a burn (points), predicted by the oracle. */
static result_t op_refund(fixture_t *f, const char *txn, const char *original, int64_t amount,
                          int64_t points)
{
    oracle_t *o = &f->o;
    o_original_t *orig = o_original(o, original);
    assert_non_null(orig);
    request_t r;
    request_init(f, &r, PARTNERS[orig->partner], txn);
    coalition__refund_request__init(&r.refund);
    r.refund.original_txn_id = (char *)original;
    r.refund.amount_minor = amount;
    r.refund.points = points;
    r.env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    r.env.refund = &r.refund;
    o_roll(o, f->now);
    int want = RC_APPROVED;
    int64_t back = 0;
    if (orig->voided) {
        want = RC_INVALID_TRANSACTION;
    } else if (orig->earn) {
        int64_t left = orig->amount - orig->reversed_minor;
        if (left == 0)
            want = RC_INVALID_TRANSACTION;
        else if (amount > left)
            want = RC_INVALID_AMOUNT;
        else
            back =
                (int64_t)((i128_t)orig->points * (orig->reversed_minor + amount) / orig->amount) -
                orig->reversed_points;
        if (want == RC_APPROVED && back > o->balance[orig->member])
            want = RC_INSUFFICIENT_POINTS;
    } else {
        int64_t left = orig->points - orig->reversed_points;
        want = left == 0 ? RC_INVALID_TRANSACTION : points > left ? RC_INVALID_AMOUNT : RC_APPROVED;
        back = points;
    }
    result_t res = submit(f, &r.env);
    expect_code("refund", want, &res);
    if (want == RC_APPROVED) {
        EXPECT_EQ("refund points", back, res.points);
        o_reverse(f, orig, back, orig->earn ? amount : 0);
    }
    return res;
}

static result_t op_void(fixture_t *f, const char *txn, const char *original)
{
    oracle_t *o = &f->o;
    o_original_t *orig = o_original(o, original);
    assert_non_null(orig);
    request_t r;
    request_init(f, &r, PARTNERS[orig->partner], txn);
    coalition__void_request__init(&r.void_request);
    r.void_request.original_txn_id = (char *)original;
    r.env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r.env.void_request = &r.void_request;
    o_roll(o, f->now);
    int want = RC_APPROVED;
    if (orig->voided || orig->reversed_points > 0 || orig->reversed_minor > 0)
        want = RC_INVALID_TRANSACTION;
    else if (orig->earn && orig->points > o->balance[orig->member])
        want = RC_INSUFFICIENT_POINTS;
    result_t res = submit(f, &r.env);
    expect_code("void", want, &res);
    if (want == RC_APPROVED) {
        o_reverse(f, orig, orig->points, orig->amount);
        orig->voided = true;
    }
    return res;
}

static result_t op_topup(fixture_t *f, int p, int64_t points)
{
    request_t r;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__partner_topup_request__init(&r.topup);
    r.topup.partner_id = (char *)PARTNERS[p];
    r.topup.points = points;
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_TOPUP;
    r.env.partner_topup = &r.topup;
    oracle_t *o = &f->o;
    o_roll(o, f->now);
    const o_contract_t *c = o_in_force(o, p, f->now, NULL);
    result_t res = submit(f, &r.env);
    expect_code("topup", c->prepaid ? RC_APPROVED : RC_INVALID_TRANSACTION, &res);
    if (c->prepaid) {
        o_counts_t *k = o_counts(f, p);
        k->topup_points += points;
        k->topup += o_price(points, c->issue);
        k->entries++;
        o->prepaid[p] += points;
    }
    return res;
}

static result_t op_close(fixture_t *f, uint64_t window, bool early)
{
    request_t r;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__window_close_request__init(&r.close);
    r.close.window_id = window;
    r.close.early = early;
    r.env.body_case = COALITION__ENVELOPE__BODY_WINDOW_CLOSE;
    r.env.window_close = &r.close;
    oracle_t *o = &f->o;
    o_roll(o, f->now);
    bool open = window == o->open_id;
    int want = window == 0 || window > o->open_id || o->closed[window] || (open && !early)
                   ? RC_INVALID_TRANSACTION
                   : RC_APPROVED;
    result_t res = submit(f, &r.env);
    expect_code("window close", want, &res);
    if (want == RC_APPROVED) {
        o->closed[window] = true;
        if (open) { /* ended now; the next window opens at once */
            o->open_id++;
            o->open_end = o_period_end(o->period_s, f->now);
            o->window_ip[o->open_id] = o->next_issuer_pays;
        }
    }
    return res;
}

static void op_settlement(fixture_t *f, int64_t period_s, int64_t grace_s, bool issuer_pays)
{
    request_t r;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__settlement_config_request__init(&r.config);
    r.config.period_seconds = period_s;
    r.config.grace_seconds = grace_s;
    r.config.model = issuer_pays ? COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS
                                 : COALITION__SETTLEMENT_MODEL__MODEL_HUB;
    r.env.body_case = COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG;
    r.env.settlement_config = &r.config;
    o_roll(&f->o, f->now);
    result_t res = submit(f, &r.env);
    expect_code("settlement config", RC_APPROVED, &res);
    f->o.period_s = period_s;
    f->o.next_issuer_pays = issuer_pays;
}

static void op_period(fixture_t *f, int64_t period_s, int64_t grace_s)
{
    op_settlement(f, period_s, grace_s, false);
}

/* ---- comparisons ------------------------------------------------------------------------- */

static void expect_counts(const char *who, const o_counts_t *o, const settle_counters_t *c)
{
    char what[96];
#define FIELD(name, got)                                                                           \
    do {                                                                                           \
        snprintf(what, sizeof what, "%s %s", who, #name);                                          \
        EXPECT_EQ(what, o->name, got);                                                             \
    } while (0)
    FIELD(issued, c->points_issued);
    FIELD(issued_rev, c->points_issued_reversed);
    FIELD(redeemed, c->points_redeemed);
    FIELD(redeemed_rev, c->points_redeemed_reversed);
    FIELD(issue, c->issue_minor);
    FIELD(issue_rev, c->issue_reversed_minor);
    FIELD(reimb, c->reimburse_minor);
    FIELD(reimb_rev, c->reimburse_reversed_minor);
    FIELD(fee, c->fee_minor);
    FIELD(topup_points, c->topup_points);
    FIELD(topup, c->topup_minor);
    FIELD(entries, (int64_t)c->entries);
    FIELD(hub_reimb, c->hub_reimburse_minor);
    FIELD(hub_reimb_rev, c->hub_reimburse_reversed_minor);
#undef FIELD
}

static void compare_counters(fixture_t *f)
{
    commit(f);
    settle_config_t cfg;
    EXPECT_OK("settle config", ledger_settle_config(f->l, &cfg));
    EXPECT_EQ("open window", f->o.open_id, cfg.open_window_id);
    for (uint64_t w = 1; w <= f->o.open_id; w++) {
        settle_partner_row_t rows[O_PARTNERS_MAX + 1];
        size_t n = 0;
        EXPECT_OK("window counters",
                  ledger_window_counters(f->l, w, NULL, rows, O_PARTNERS_MAX + 1, &n));
        for (int p = 0; p < O_PARTNERS_MAX; p++) {
            settle_counters_t zero, *got = &zero;
            memset(&zero, 0, sizeof zero);
            for (size_t i = 0; i < n; i++)
                if (strcmp(rows[i].partner_id, PARTNERS[p]) == 0)
                    got = &rows[i].c;
            char who[48];
            snprintf(who, sizeof who, "window %" PRIu64 " %s", w, PARTNERS[p]);
            expect_counts(who, &f->o.counts[w][p], got);
        }
        settle_window_t win;
        EXPECT_OK("window", ledger_window(f->l, w, &win));
        EXPECT_EQ("window closed", f->o.closed[w],
                  win.state == COALITION__WINDOW_STATE__WINDOW_CLOSED);
    }
}

/* Split a CSV row of plain fields (the test's ids need no quoting). */
static int csv_split(char *line, char **fields, int max)
{
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(line, ",", &save); tok != NULL && n < max;
         tok = strtok_r(NULL, ",", &save))
        fields[n++] = tok;
    return n;
}

/* What partner p owes redeemers (to > 0) or is owed by issuers (to < 0) in window w,
 * leaving out what it owes itself. */
static int64_t o_pairs(const oracle_t *o, uint64_t w, int p, bool owes)
{
    int64_t sum = 0;
    for (int q = 0; q < O_PARTNERS_MAX; q++)
        if (q != p)
            sum += owes ? o->owes[w][p][q] : o->owes[w][q][p];
    return sum;
}

/* The net of p in window w: its part with the operator and its pairs. */
static int64_t o_net_in(const oracle_t *o, uint64_t w, int p)
{
    return o_op_net(&o->counts[w][p]) + o_pairs(o, w, p, true) - o_pairs(o, w, p, false);
}

/* A partner's net over the windows not closed, each under its model (its cap). */
static int64_t o_unsettled(const oracle_t *o, int partner)
{
    int64_t sum = 0;
    for (uint64_t w = 1; w <= o->open_id; w++)
        if (!o->closed[w])
            sum += o_net_in(o, w, partner);
    return sum;
}

#define OPERATOR_INDEX O_PARTNERS_MAX

static int party_of(const char *id)
{
    return strcmp(id, OPERATOR_PARTNER_ID) == 0 ? OPERATOR_INDEX : partner_index(id);
}

/* The matrix the oracle expects: [payer][payee] (index O_PARTNERS_MAX: the operator). */
static void o_matrix(const oracle_t *o, uint64_t w,
                     int64_t m[O_PARTNERS_MAX + 1][O_PARTNERS_MAX + 1])
{
    memset(m, 0, sizeof(int64_t) * (O_PARTNERS_MAX + 1) * (O_PARTNERS_MAX + 1));
    for (int p = 0; p < O_PARTNERS_MAX; p++) {
        int64_t net = o_op_net(&o->counts[w][p]);
        if (net > 0)
            m[p][OPERATOR_INDEX] = net;
        else
            m[OPERATOR_INDEX][p] = -net;
        for (int q = p + 1; q < O_PARTNERS_MAX; q++) {
            int64_t flow = o->owes[w][p][q] - o->owes[w][q][p];
            if (flow > 0)
                m[p][q] = flow;
            else
                m[q][p] = -flow;
        }
    }
}

/* The statement's figures, read back from its CSV, against the oracle's. */
static void compare_statement(fixture_t *f, uint64_t w)
{
    commit(f);
    char *doc = NULL;
    size_t len = 0;
    EXPECT_OK("statement", statement_build(f->l, w, NULL, true, false, &doc, &len));
    int64_t got[O_PARTNERS_MAX + 1][O_PARTNERS_MAX + 1],
        want_m[O_PARTNERS_MAX + 1][O_PARTNERS_MAX + 1];
    bool row_seen[O_PARTNERS_MAX] = {false};
    memset(got, 0, sizeof got);
    int64_t margin = 0, o_margin = 0;
    char *save = NULL;
    for (char *line = strtok_r(doc, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *fld[27] = {NULL};
        int n = csv_split(line, fld, 27);
        if (n > 0 && strcmp(fld[0], "partner") == 0) {
            EXPECT_EQ("partner row fields", 27, n);
            int p = partner_index(fld[1]);
            const o_counts_t *o = &f->o.counts[w][p];
            settle_counters_t c = {
                strtoll(fld[3], NULL, 10),  strtoll(fld[4], NULL, 10),  strtoll(fld[5], NULL, 10),
                strtoll(fld[6], NULL, 10),  strtoll(fld[8], NULL, 10),  strtoll(fld[9], NULL, 10),
                strtoll(fld[12], NULL, 10), strtoll(fld[13], NULL, 10), strtoll(fld[11], NULL, 10),
                strtoll(fld[7], NULL, 10),  strtoll(fld[10], NULL, 10), strtoull(fld[18], NULL, 10),
                strtoll(fld[22], NULL, 10), strtoll(fld[23], NULL, 10), strtoll(fld[24], NULL, 10),
                strtoll(fld[25], NULL, 10), strtoll(fld[26], NULL, 10)};
            expect_counts("statement", o, &c);
            EXPECT_EQ("statement net", o_net_in(&f->o, w, p), strtoll(fld[16], NULL, 10));
            EXPECT_EQ("pays - paid", strtoll(fld[14], NULL, 10) - strtoll(fld[15], NULL, 10),
                      strtoll(fld[16], NULL, 10));
            EXPECT_EQ("operator part", o_op_net(o), strtoll(fld[19], NULL, 10));
            EXPECT_EQ("owes redeemers", o_pairs(&f->o, w, p, true), strtoll(fld[20], NULL, 10));
            EXPECT_EQ("owed by issuers", o_pairs(&f->o, w, p, false), strtoll(fld[21], NULL, 10));
            row_seen[p] = true;
        } else if (n > 0 && strcmp(fld[0], "matrix") == 0) {
            EXPECT_EQ("matrix row fields", 5, n);
            got[party_of(fld[1])][party_of(fld[2])] += strtoll(fld[4], NULL, 10);
        } else if (n > 0 && strcmp(fld[0], "margin") == 0) {
            margin += strtoll(fld[2], NULL, 10);
        }
    }
    o_matrix(&f->o, w, want_m);
    int64_t into_operator = 0;
    for (int a = 0; a <= O_PARTNERS_MAX; a++) {
        for (int b = 0; b <= O_PARTNERS_MAX; b++) {
            EXPECT_EQ("matrix cell", want_m[a][b], got[a][b]);
            into_operator += b == OPERATOR_INDEX ? got[a][b] : a == OPERATOR_INDEX ? -got[a][b] : 0;
        }
    }
    for (int p = 0; p < O_PARTNERS_MAX; p++) {
        o_margin += o_net_in(&f->o, w, p);
        if (!row_seen[p])
            EXPECT_EQ("a partner without a row has no net", 0, o_net_in(&f->o, w, p));
    }
    EXPECT_EQ("operator margin = oracle", o_margin, margin);
    EXPECT_EQ("the matrix balances with the margin", into_operator, margin);
    free(doc);
}

/* The journal's own totals by kind, from every entry. */
typedef struct {
    settle_counters_t c;
} totals_t;

static int add_entry(const journal_entry_t *e, void *ctx)
{
    settle_counters_t *t = &((totals_t *)ctx)->c;
    switch (e->kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN:
        t->points_issued += e->points;
        t->issue_minor += e->settle_minor;
        break;
    case COALITION__ENTRY_KIND__ENTRY_BURN:
        t->points_redeemed += e->points;
        t->reimburse_minor += e->settle_minor;
        break;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
        t->points_issued_reversed += e->points;
        t->issue_reversed_minor += e->settle_minor;
        break;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN:
        t->points_redeemed_reversed += e->points;
        t->reimburse_reversed_minor += e->settle_minor;
        break;
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP:
        t->topup_points += e->points;
        t->topup_minor += e->settle_minor;
        break;
    default: return CL_OK;
    }
    t->fee_minor += e->fee_minor;
    t->entries++;
    return CL_OK;
}

/* Every window's counters summed equal the journal's totals. */
static void compare_totals(fixture_t *f)
{
    commit(f);
    totals_t journal;
    memset(&journal, 0, sizeof journal);
    EXPECT_OK("journal walk", ledger_journal_foreach(f->l, 1, add_entry, &journal));
    o_counts_t sum;
    memset(&sum, 0, sizeof sum);
    for (uint64_t w = 1; w <= f->o.open_id; w++) {
        settle_partner_row_t rows[O_PARTNERS_MAX + 1];
        size_t n = 0;
        EXPECT_OK("window counters",
                  ledger_window_counters(f->l, w, NULL, rows, O_PARTNERS_MAX + 1, &n));
        for (size_t i = 0; i < n; i++) {
            const settle_counters_t *c = &rows[i].c;
            sum.issued += c->points_issued;
            sum.issued_rev += c->points_issued_reversed;
            sum.redeemed += c->points_redeemed;
            sum.redeemed_rev += c->points_redeemed_reversed;
            sum.issue += c->issue_minor;
            sum.issue_rev += c->issue_reversed_minor;
            sum.reimb += c->reimburse_minor;
            sum.reimb_rev += c->reimburse_reversed_minor;
            sum.fee += c->fee_minor;
            sum.topup_points += c->topup_points;
            sum.topup += c->topup_minor;
            sum.entries += (int64_t)c->entries;
        }
    }
    expect_counts("all windows vs journal", &sum, &journal.c);
    int64_t balances = 0, o_balances = 0;
    for (int m = 0; m < O_MEMBERS; m++) {
        char id[16];
        int64_t b = 0;
        snprintf(id, sizeof id, "m%d", m);
        EXPECT_OK("balance", ledger_member_balance(f->l, id, &b));
        EXPECT_EQ("member balance", f->o.balance[m], b);
        balances += b;
        o_balances += f->o.balance[m];
    }
    EXPECT_EQ("outstanding points = issued - reversed - redeemed + given back",
              sum.issued - sum.issued_rev - sum.redeemed + sum.redeemed_rev, balances);
    (void)o_balances;
}

static void expect_verify_ok(fixture_t *f)
{
    commit(f);
    char why[512];
    int rc = ledger_verify(f->l, why, sizeof why);
    if (rc != CL_OK)
        fail_msg("verify: %s", why);
}

static void world(fixture_t *f, int partners)
{
    for (int p = 0; p < partners; p++)
        op_partner(f, p, 2000 + 500 * p);
    for (int m = 0; m < O_MEMBERS; m++)
        op_member(f, m);
    f->now += 1000; /* contracts "from now" start after the partner-add's */
}

static o_contract_t terms(int p, int64_t issue, int64_t reimb, int64_t fee)
{
    o_contract_t c = {p, 0, 2000 + 500 * p, issue, reimb, fee, 0, false};
    return c;
}

/* ---- scenarios ------------------------------------------------------------------------ */

/* A contract change in the middle of a window prices each entry under the contract in
 * force when it was recorded; a refund after the change under its original's. */
static void contract_change_mid_window(void **state)
{
    fixture_t *f = *state;
    world(f, 2);
    o_contract_t a = terms(0, 1000, 800, 5), b = terms(0, 1500, 900, 7);
    want("contract A", RC_APPROVED, op_contract(f, &a, 0));
    want("contract B from in an hour", RC_APPROVED, op_contract(f, &b, f->now + HOUR_MS));
    op_earn(f, 0, "e1", 0, 12345); /* 246 points at 2/EUR: 2.46 EUR under A */
    f->now += HOUR_MS;
    op_earn(f, 0, "e2", 0, 12345); /* under B: 3.69 EUR */
    op_refund(f, "r1", "e1", 5000, 0);
    f->now += 60000;
    op_burn(f, 0, "b1", 0, 333);
    compare_counters(f);
    const o_counts_t *k = &f->o.counts[1][0];
    EXPECT_EQ("issue money: 2.46 under A + 3.69 under B", 246 + 369, k->issue);
    /* 50.00 of 123.45 refunded: floor(246 * 5000 / 12345) = 99 points, 0.99 under A */
    EXPECT_EQ("refund of e1 under A", 99, k->issue_rev);
    EXPECT_EQ("fees: 5 + 7 + 7", 19, k->fee);
    EXPECT_EQ("reimbursement of 333 points at 9.00 per 1,000: 3.00 (2.997 rounded)", 300, k->reimb);
    expect_verify_ok(f);
}

/* A refund recorded in a later window lands there, priced under its original's contract;
 * a void across the boundary too; the closed window stays as it was. */
static void reversals_land_in_the_window_recording_them(void **state)
{
    fixture_t *f = *state;
    world(f, 2);
    op_period(f, 3600, 60);
    op_close(f, 1, true); /* the hourly windows start with the next one */
    f->now += HOUR_MS;
    o_contract_t a = terms(0, 1000, 800, 5), g = terms(1, 1000, 800, 5);
    op_contract(f, &a, 0);
    op_contract(f, &g, 0);
    op_earn(f, 0, "e1", 0, 10000);
    op_burn(f, 1, "b1", 0, 50);
    uint64_t first = f->o.open_id;
    f->now += HOUR_MS;
    o_contract_t dearer = terms(0, 2000, 800, 5);
    op_contract(f, &dearer, 0);
    op_refund(f, "r1", "e1", 2500, 0);
    op_void(f, "v1", "b1");
    EXPECT_EQ("the reversals are in the next window", first + 1, f->o.open_id);
    EXPECT_EQ("refund priced under the earn's contract (1.00 per 1,000)", 50,
              f->o.counts[first + 1][0].issue_rev);
    op_close(f, first, false);
    op_close(f, first, false); /* already closed: 12, nothing stored */
    compare_counters(f);
    compare_statement(f, first);
    expect_verify_ok(f);
}

/* An offline earn delivered after its window closed lands in the open window, and the
 * statement's line items show its till time. */
static void offline_earn_after_the_close(void **state)
{
    fixture_t *f = *state;
    world(f, 1);
    o_contract_t a = terms(0, 1000, 800, 5);
    op_contract(f, &a, 0);
    op_earn(f, 0, "e1", 1, 1000);
    int64_t till_time = f->now;
    op_close(f, 1, false); /* still open: 12 */
    op_close(f, 1, true);  /* early */
    f->now += 5000;
    request_t r;
    request_init(f, &r, PARTNERS[0], "late");
    r.env.client_time_ms = till_time;
    coalition__earn_request__init(&r.earn);
    r.earn.member_id = "m1";
    r.earn.amount_minor = 2000;
    r.earn.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r.env.earn = &r.earn;
    want("late earn", RC_APPROVED, submit(f, &r.env));
    op_close(f, 2, true);
    char *doc = NULL;
    size_t len = 0;
    EXPECT_OK("statement", statement_build(f->l, 2, PARTNERS[0], true, true, &doc, &len));
    char till[SETTLE_TIME_TEXT_BYTES];
    settle_time_text(till_time, till);
    EXPECT_CONTAINS("the late earn's line with its till time", till, strstr(doc, "\nline,"));
    EXPECT_CONTAINS("in window 2", ",late,", doc);
    free(doc);
    EXPECT_OK("statement 1", statement_build(f->l, 1, PARTNERS[0], true, true, &doc, &len));
    EXPECT_TRUE("window 1 does not hold it", strstr(doc, ",late,") == NULL);
    free(doc);
    expect_verify_ok(f);
}

/* A prepaid partner's earns stop at its block (61); a refund puts points back. */
static void prepaid_partner_runs_out(void **state)
{
    fixture_t *f = *state;
    world(f, 1);
    o_contract_t a = terms(0, 1000, 800, 0);
    a.prepaid = true;
    op_contract(f, &a, 0);
    op_earn(f, 0, "e0", 0, 100); /* 2 points, no block yet: 61 */
    op_topup(f, 0, 100);
    op_earn(f, 0, "e1", 0, 3000); /* 60 points */
    op_earn(f, 0, "e2", 0, 2500); /* 50 > 40 left: 61 */
    op_refund(f, "r1", "e1", 1500, 0);
    op_earn(f, 0, "e3", 0, 2500); /* 50 of 70 */
    int64_t left = 0;
    EXPECT_OK("prepaid", ledger_prepaid_remaining(f->l, PARTNERS[0], &left));
    EXPECT_EQ("prepaid left", 20, left);
    compare_counters(f);
    EXPECT_EQ("top-up money: 100 points at 10.00 per 1,000 = 1.00", 100, f->o.counts[1][0].topup);
    expect_verify_ok(f);
}

/* The net cap: an earn that would take the unsettled net debit past it is 61; closing
 * the window settles it and earns go on. */
static void net_cap_reached(void **state)
{
    fixture_t *f = *state;
    world(f, 1);
    o_contract_t a = terms(0, 10000, 0, 10); /* 0.10 a point issued */
    a.cap = 1000;                            /* 10.00 */
    op_contract(f, &a, 0);
    char txn[16];
    for (int i = 0; i < 6; i++) {
        snprintf(txn, sizeof txn, "e%d", i);
        op_earn(f, 0, txn, 0, 1000); /* 20 points: 2.00 + 0.10 fee each; the 5th passes */
    }
    EXPECT_EQ("four earns fit under 10.00", 4 * 210, o_op_net(&f->o.counts[1][0]));
    op_close(f, 1, true);
    op_earn(f, 0, "after", 0, 1000);
    compare_counters(f);
    expect_verify_ok(f);
}

/* A burn is settled under the model of the window it was recorded in, and its reversal
 * under the same, wherever it lands: a hub burn voided in an issuer-pays window gives the
 * operator its money back; an issuer-pays burn refunded in a hub window gives it back to
 * its issuers. */
static void reversals_follow_their_burns_model(void **state)
{
    fixture_t *f = *state;
    world(f, 3);
    for (int p = 0; p < 3; p++) {
        o_contract_t c = terms(p, 1000, 800 + 100 * p, 3);
        op_contract(f, &c, 0);
    }
    op_earn(f, 0, "e1", 0, 50000);
    op_earn(f, 1, "e2", 0, 30000);
    op_burn(f, 2, "b1", 0, 400); /* window 1: hub */
    op_settlement(f, 0, 60, true);
    op_close(f, 1, true); /* window 2: issuer-pays */
    op_void(f, "v1", "b1");
    op_burn(f, 2, "b2", 0, 700);
    EXPECT_EQ("the hub burn's void goes back to the operator: 400 points at 10.00", 400,
              f->o.counts[2][2].hub_reimb_rev);
    op_settlement(f, 0, 60, false);
    op_close(f, 2, true); /* window 3: hub */
    op_refund(f, "r2", "b2", 0, 300);
    EXPECT_EQ("the issuer-pays burn's refund goes back to its issuers", 0,
              f->o.counts[3][2].hub_reimb_rev);
    EXPECT_TRUE("and shows in the pairs",
                f->o.owes[3][0][2] + f->o.owes[3][1][2] == -o_price(300, 1000));
    op_close(f, 3, true);
    compare_counters(f);
    for (uint64_t w = 1; w <= 3; w++)
        compare_statement(f, w);
    expect_verify_ok(f);
}

/* Bad settlement requests change nothing: a contract in the past, another currency, a
 * top-up of a post-paid partner, closing an unknown or an open window, closing twice. */
static void bad_settlement_requests_change_nothing(void **state)
{
    fixture_t *f = *state;
    world(f, 1);
    uint64_t seq = ledger_last_seq(f->l);
    o_contract_t a = terms(0, 1000, 800, 5);
    want("contract in the past", RC_INVALID_TRANSACTION, op_contract(f, &a, f->now - 1));
    request_t r;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__contract_set_request__init(&r.contract);
    r.contract.partner_id = "p0";
    r.contract.earn_rate_milli = 1000;
    r.contract.currency = "USD";
    r.env.body_case = COALITION__ENVELOPE__BODY_CONTRACT_SET;
    r.env.contract_set = &r.contract;
    want("another currency", RC_INVALID_AMOUNT, submit(f, &r.env));
    r.contract.partner_id = "nobody";
    r.contract.currency = "EUR";
    r.txn_id[0] = 'x';
    want("unknown partner", RC_UNKNOWN_PARTNER, submit(f, &r.env));
    op_topup(f, 0, 10);
    op_settlement(f, 0, 60, true); /* issuer-pays from the next window, all in EUR */
    seq++;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = "dollar";
    r.partner_add.earn_rate_milli = 1000;
    r.partner_add.currency = "USD";
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    want("a USD partner under issuer-pays", RC_INVALID_AMOUNT, submit(f, &r.env));
    op_settlement(f, 0, 60, false);
    seq++;
    r.txn_id[0] = 'y';
    want("a USD partner under hub", RC_APPROVED, submit(f, &r.env));
    seq++;
    request_init(f, &r, OPERATOR_PARTNER_ID, NULL);
    coalition__settlement_config_request__init(&r.config);
    r.config.model = COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS;
    r.env.body_case = COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG;
    r.env.settlement_config = &r.config;
    want("issuer-pays over two currencies", RC_INVALID_TRANSACTION, submit(f, &r.env));
    op_close(f, 7, false);
    op_close(f, 1, false);
    EXPECT_EQ("nothing journalled", seq, ledger_last_seq(f->l));
    op_close(f, 1, true);
    op_close(f, 1, false);
    op_close(f, 1, true);
    EXPECT_EQ("one close journalled", seq + 1, ledger_last_seq(f->l));
    compare_counters(f);
    expect_verify_ok(f);
}

/* Windows roll over on their own and close a grace period after they end, through the
 * writer's housekeeping, with no traffic at all. */
static void windows_roll_and_close_on_their_own(void **state)
{
    fixture_t *f = *state;
    world(f, 1);
    op_period(f, 60, 10);
    op_close(f, 1, true);                         /* minute windows from the next one on */
    f->now = (f->now / 60000 + 2) * 60000 + 1000; /* a minute window begins */
    size_t closed = 0;
    EXPECT_OK("housekeep", ledger_housekeep(f->l, f->now, &closed));
    EXPECT_EQ("the short window after the early close, past its grace", 1, closed);
    o_roll(&f->o, f->now);
    f->o.closed[2] = true;
    op_earn(f, 0, "e1", 0, 1000);
    uint64_t w = f->o.open_id;
    f->now += 60000; /* past its end, within the grace */
    EXPECT_OK("housekeep", ledger_housekeep(f->l, f->now, &closed));
    o_roll(&f->o, f->now);
    EXPECT_EQ("nothing closed yet", 0, closed);
    settle_window_t win;
    EXPECT_OK("window", ledger_window(f->l, w, &win));
    EXPECT_EQ("ended", COALITION__WINDOW_STATE__WINDOW_ENDED, win.state);
    f->now = win.end_ms + 10000;
    EXPECT_OK("housekeep", ledger_housekeep(f->l, f->now, &closed));
    EXPECT_EQ("closed after the grace", 1, closed);
    f->o.closed[w] = true;
    EXPECT_OK("housekeep again", ledger_housekeep(f->l, f->now, &closed));
    EXPECT_EQ("closing is once", 0, closed);
    compare_counters(f);
    compare_statement(f, w);
    expect_verify_ok(f);
}

/* Random event streams over eight partners, windows of a minute, contract changes, top-ups
 * and early closes: every window's counters and every statement figure equal the oracle's,
 * every matrix balances with its margin, and all windows together equal the journal. */
static void run_stream(fixture_t *f, unsigned seed)
{
    srand(seed);
    f->batching = seed % 2 == 0 ? 8 : 0; /* every other seed shares write transactions */
    world(f, O_PARTNERS_MAX);
    bool issuer_pays = seed % 2 == 1;
    op_settlement(f, 600, 5, issuer_pays);
    op_close(f, 1, true);
    for (int p = 0; p < O_PARTNERS_MAX; p++) {
        o_contract_t c = terms(p, rand() % 20000, rand() % 20000, rand() % 50);
        c.prepaid = p % 4 == 3;
        c.cap = p % 4 == 2 ? 5000 + rand() % 5000 : 0;
        op_contract(f, &c, 0);
    }
    char txn[TXN_ID_LEN_MAX + 1], orig[TXN_ID_LEN_MAX + 1];
    int n_txn = 0;
    for (int i = 0; i < 1500; i++) {
        f->now += 3000 + rand() % 9000;
        int p = rand() % O_PARTNERS_MAX, m = rand() % O_MEMBERS, what = rand() % 100;
        snprintf(txn, sizeof txn, "t%d", ++n_txn);
        if (what < 40)
            op_earn(f, p, txn, m, 1 + rand() % 20000);
        else if (what < 60)
            op_burn(f, p, txn, m, 1 + rand() % 200);
        else if (what < 75 && f->o.n_originals > 0) {
            o_original_t *o = &f->o.originals[rand() % f->o.n_originals];
            snprintf(orig, sizeof orig, "%s", o->txn);
            if (o->earn)
                op_refund(f, txn, orig, 1 + rand() % (o->amount > 1 ? o->amount / 2 : 1), 0);
            else
                op_refund(f, txn, orig, 0, 1 + rand() % (o->points > 1 ? o->points / 2 : 1));
        } else if (what < 82 && f->o.n_originals > 0) {
            snprintf(orig, sizeof orig, "%s", f->o.originals[rand() % f->o.n_originals].txn);
            op_void(f, txn, orig);
        } else if (what < 87) {
            op_topup(f, p, 1 + rand() % 500);
        } else if (what < 92) {
            o_contract_t c = terms(p, rand() % 20000, rand() % 20000, rand() % 50);
            c.prepaid = p % 4 == 3;
            c.cap = p % 4 == 2 ? 5000 + rand() % 5000 : 0;
            op_contract(f, &c, rand() % 2 ? 0 : f->now + rand() % 120000);
        } else if (what < 94) {
            op_close(f, f->o.open_id, true);
        } else if (what < 95) {
            issuer_pays = !issuer_pays; /* from the next window */
            op_settlement(f, 600, 5, issuer_pays);
        } else {
            for (uint64_t w = 1; w < f->o.open_id; w++)
                if (!f->o.closed[w])
                    op_close(f, w, false);
        }
    }
    op_close(f, f->o.open_id, true);
    for (uint64_t w = 1; w < f->o.open_id; w++)
        if (!f->o.closed[w])
            op_close(f, w, false);
    compare_counters(f);
    for (uint64_t w = 1; w < f->o.open_id; w++)
        compare_statement(f, w);
    compare_totals(f);
    settle_pair_t out[SETTLE_PARTNERS_MAX];
    size_t n_out = 0;
    EXPECT_OK("outstanding", ledger_outstanding(f->l, out, SETTLE_PARTNERS_MAX, &n_out));
    for (size_t i = 0; i < n_out; i++)
        EXPECT_EQ("outstanding by issuer", f->o.outstanding[partner_index(out[i].partner_id)],
                  out[i].points);
    expect_verify_ok(f);
    print_message("seed %u: %" PRIu64 " windows, %d originals, %d burns under issuer-pays, "
                  "61s: %d cap, %d prepaid\n",
                  seed, f->o.open_id, f->o.n_originals, f->o.ip_burns, f->o.cap_declines,
                  f->o.prepaid_declines);
}

/* SETTLEMENT_SEED=N runs one seed; otherwise four, each on a fresh ledger. */
static void random_streams_match_the_oracle(void **state)
{
    const char *env_seed = getenv("SETTLEMENT_SEED");
    unsigned first = env_seed != NULL ? (unsigned)strtoul(env_seed, NULL, 10) : 20261130u;
    unsigned runs = env_seed != NULL ? 1 : 4;
    for (unsigned i = 0; i < runs; i++) {
        if (i > 0) {
            assert_int_equal(teardown(state), 0);
            assert_int_equal(setup(state), 0);
        }
        run_stream(*state, first + i);
    }
}

/* Put one record into a database of the closed ledger, behind its back; reopen it. */
static void raw_put(fixture_t *f, const char *db, const void *key, size_t key_len,
                    const ProtobufCMessage *msg)
{
    commit(f);
    ledger_destroy(&f->l);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    uint8_t buf[4096];
    assert_int_equal(mdb_env_create(&env), MDB_SUCCESS);
    assert_int_equal(mdb_env_set_maxdbs(env, STORE_DBS_MAX), MDB_SUCCESS);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), MDB_SUCCESS);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), MDB_SUCCESS);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), MDB_SUCCESS);
    MDB_val k = {key_len, (void *)key}, v = {protobuf_c_message_pack(msg, buf), buf};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), MDB_SUCCESS);
    assert_int_equal(mdb_txn_commit(txn), MDB_SUCCESS);
    mdb_env_close(env);
    EXPECT_OK("reopen", ledger_open(&f->l, f->dir, STORE_READ_WRITE));
}

/* Write `w` as its window's record behind the ledger's back; verify must name `why`. */
static void expect_tampered_window_fails(fixture_t *f, const settle_window_t *w, const char *why)
{
    Coalition__WindowRecord r = COALITION__WINDOW_RECORD__INIT;
    r.id = w->id;
    r.start_ms = w->start_ms;
    r.end_ms = w->end_ms;
    r.state = (uint32_t)w->state;
    r.model = (uint32_t)w->model;
    r.first_seq = w->first_seq;
    r.last_seq = w->last_seq;
    r.last_hash.data = (uint8_t *)w->last_hash;
    r.last_hash.len = WIRE_HASH_BYTES;
    r.close_seq = w->close_seq;
    r.grace_seconds = w->grace_seconds;
    uint8_t key[9] = {'W'};
    store_put_u64(key + 1, w->id);
    raw_put(f, "settlement", key, sizeof key, &r.base);
    char got[512];
    EXPECT_EQ("verify", CL_ERR_CORRUPT, ledger_verify(f->l, got, sizeof got));
    EXPECT_CONTAINS("why", why, got);
}

/* A closed window's model switched behind the ledger's back would move money between
 * partners in its statement: verify finds it. */
static void tampered_window_model_fails_verify(void **state)
{
    fixture_t *f = *state;
    world(f, 2);
    op_earn(f, 0, "e1", 0, 10000);
    op_burn(f, 1, "b1", 0, 5);
    op_close(f, 1, true);
    settle_window_t w;
    EXPECT_OK("window", ledger_window(f->l, 1, &w));
    w.model = COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS;
    expect_tampered_window_fails(f, &w, "window 1's model or grace is not the configuration's");
}

/* A closed window whose end is moved before its last entry is found by verify. */
static void tampered_window_end_fails_verify(void **state)
{
    fixture_t *f = *state;
    world(f, 1);
    f->now += 60000;
    op_earn(f, 0, "e1", 0, 10000);
    f->now += 1000;
    op_close(f, 1, true);
    settle_window_t w;
    EXPECT_OK("window", ledger_window(f->l, 1, &w));
    w.end_ms = f->now - 30000; /* before e1 */
    expect_tampered_window_fails(f, &w, "holds an entry recorded after its end");
}

/* A window counter changed behind the ledger's back is found by verify. */
static void tampered_counters_fail_verify(void **state)
{
    fixture_t *f = *state;
    world(f, 1);
    o_contract_t a = terms(0, 1000, 800, 5);
    op_contract(f, &a, 0);
    op_earn(f, 0, "e1", 0, 10000);
    expect_verify_ok(f);
    ledger_destroy(&f->l);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), MDB_SUCCESS);
    assert_int_equal(mdb_env_set_maxdbs(env, STORE_DBS_MAX), MDB_SUCCESS);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), MDB_SUCCESS);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), MDB_SUCCESS);
    assert_int_equal(mdb_dbi_open(txn, "settlement", 0, &dbi), MDB_SUCCESS);
    uint8_t key[16] = {'C'};
    store_put_u64(key + 1, 1);
    memcpy(key + 9, "p0", 2);
    Coalition__WindowCounters c = COALITION__WINDOW_COUNTERS__INIT;
    c.points_issued = 200;
    c.issue_minor = 150; /* 200 points at 10.00 per 1,000 is 2.00, not 1.50 */
    c.fee_minor = 5;
    c.entries = 1;
    uint8_t buf[128];
    MDB_val k = {11, key}, v = {coalition__window_counters__pack(&c, buf), buf};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), MDB_SUCCESS);
    assert_int_equal(mdb_txn_commit(txn), MDB_SUCCESS);
    mdb_env_close(env);
    EXPECT_OK("reopen", ledger_open(&f->l, f->dir, STORE_READ_ONLY));
    char why[512];
    EXPECT_EQ("verify", CL_ERR_CORRUPT, ledger_verify(f->l, why, sizeof why));
    EXPECT_STR("why", "window 1 counters of p0 differ from a recomputation from the journal", why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(contract_change_mid_window, setup, teardown),
        cmocka_unit_test_setup_teardown(reversals_land_in_the_window_recording_them, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(offline_earn_after_the_close, setup, teardown),
        cmocka_unit_test_setup_teardown(prepaid_partner_runs_out, setup, teardown),
        cmocka_unit_test_setup_teardown(net_cap_reached, setup, teardown),
        cmocka_unit_test_setup_teardown(reversals_follow_their_burns_model, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_settlement_requests_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(windows_roll_and_close_on_their_own, setup, teardown),
        cmocka_unit_test_setup_teardown(random_streams_match_the_oracle, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_counters_fail_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_window_model_fails_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_window_end_fails_verify, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
