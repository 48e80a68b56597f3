/* The points lifecycle in the ledger, in process (lots.c, expiry.c, verify_lots.c), with a
 * real LMDB ledger in a temporary directory and the writer's clock given per request:
 * burns across lots in expiry order, refunds of such burns (the same lots, or new ones
 * when a lot expired since), expiry runs (twice: the second changes nothing), inactivity
 * reset by activity, pending points over a partner's return period (a refund cancels
 * them first; they cannot be burned), and a property test over random event streams. */
#include "lifecycle_fixture.h"

static void expect_lot(const char *what, const ledger_lot_row_t *row, int64_t points,
                       int64_t expiry_ms)
{
    if (row->points != points || row->expiry_ms != expiry_ms)
        fail_msg("%s: expected %lld points expiring at %lld, got lot %" PRIu64
                 ".%u with %lld expiring at %lld",
                 what, (long long)points, (long long)expiry_ms, row->seq, row->part,
                 (long long)row->points, (long long)row->expiry_ms);
}

/* Four lots under three terms; a burn of 55 takes the two soonest to expire whole and 5
 * of the next; lots that expire at the same moment go oldest first. */
static void burn_spans_lots_soonest_expiry_first(void **state)
{
    fixture_t *f = *state;
    ledger_lot_row_t rows[LOTS_SEEN_MAX];
    size_t n = 0;
    result_t pol = op_policy(f, T0, DAYS(365), 0);
    expect_code("term 365d", &pol, RC_APPROVED);
    earn(f, "fuel", "a", "alice", 10, T0); /* expires T0 + 365d */
    op_policy(f, T0 + DAY, DAYS(30), 0);
    earn(f, "grocer", "b", "alice", 20, T0 + 2 * DAY); /* T0 + 32d */
    earn(f, "fuel", "c", "alice", 30, T0 + 3 * DAY);   /* T0 + 33d */
    op_policy(f, T0 + 4 * DAY, DAYS(730), 0);
    earn(f, "grocer", "d", "alice", 40, T0 + 5 * DAY); /* T0 + 735d */
    result_t b = burn(f, "fuel", "b1", "alice", 55, false, T0 + 6 * DAY);
    expect_code("burn 55", &b, RC_APPROVED);
    EXPECT_EQ("balance after", 45, b.balance);
    points_of(f, "alice", T0 + 6 * DAY, rows, &n);
    EXPECT_EQ("lots left", 2, n);
    expect_lot("a keeps 5", &rows[0], 5, T0 + 365 * DAY);
    expect_lot("d untouched", &rows[1], 40, T0 + 735 * DAY);
    /* Ties: the same moment, the same term: the older lot first. */
    earn(f, "fuel", "e", "bob", 7, T0 + 6 * DAY);
    earn(f, "grocer", "f", "bob", 9, T0 + 6 * DAY);
    burn(f, "fuel", "b2", "bob", 3, false, T0 + 7 * DAY);
    points_of(f, "bob", T0 + 7 * DAY, rows, &n);
    EXPECT_EQ("bob's lots", 2, n);
    EXPECT_STR("the older lot (fuel) is taken", "fuel", rows[0].issuer);
    EXPECT_EQ("fuel's lot", 4, rows[0].points);
    EXPECT_EQ("grocer's lot", 9, rows[1].points);
    expect_verify(f);
}

/* The burn of 55 refunded in two parts: the first part goes back into the lots it came
 * from; the second after two of them expired: new lots with their original 30-day term,
 * the unexpired one back into itself. */
static void refund_of_a_burn_gives_its_lots_back(void **state)
{
    fixture_t *f = *state;
    ledger_lot_row_t rows[LOTS_SEEN_MAX];
    size_t n = 0;
    op_policy(f, T0, DAYS(365), 0);
    earn(f, "fuel", "a", "alice", 10, T0);
    op_policy(f, T0 + DAY, DAYS(30), 0);
    earn(f, "grocer", "b", "alice", 20, T0 + 2 * DAY);
    earn(f, "fuel", "c", "alice", 30, T0 + 3 * DAY);
    burn(f, "fuel", "b1", "alice", 55, false, T0 + 6 * DAY);
    result_t r1 = refund(f, "fuel", "r1", "b1", 0, 25, T0 + 7 * DAY); /* b's 20, c's first 5 */
    expect_code("refund 25", &r1, RC_APPROVED);
    points_of(f, "alice", T0 + 7 * DAY, rows, &n);
    EXPECT_EQ("lots after the first refund", 3, n);
    expect_lot("b whole again", &rows[0], 20, T0 + 32 * DAY);
    expect_lot("c has 5 back", &rows[1], 5, T0 + 33 * DAY);
    expect_lot("a as the burn left it", &rows[2], 5, T0 + 365 * DAY);
    int64_t later = T0 + 40 * DAY; /* b and c have expired (not yet posted) */
    result_t r2 = refund(f, "fuel", "r2", "b1", 0, 30, later); /* c's other 25, a's 5 */
    expect_code("refund 30", &r2, RC_APPROVED);
    ledger_member_points_t p = points_of(f, "alice", later, rows, &n);
    EXPECT_EQ("all 60 back", 60, p.balance);
    EXPECT_EQ("lots after the second refund", 4, n);
    expect_lot("b", &rows[0], 20, T0 + 32 * DAY);
    expect_lot("c", &rows[1], 5, T0 + 33 * DAY);
    expect_lot("c's 25: a new lot, 30 days from now", &rows[2], 25, later + 30 * DAY);
    EXPECT_EQ("the new lot is the refund's", r2.seq, rows[2].seq);
    expect_lot("a back to 10", &rows[3], 10, T0 + 365 * DAY);
    expect_verify(f);
}

/* An expiry run posts the expired lots to breakage, by issuer; a second run as of the
 * same time writes nothing; the outstanding points by issuer drop by the breakage. */
static void expiry_run_twice_changes_nothing_the_second_time(void **state)
{
    fixture_t *f = *state;
    op_policy(f, T0, DAYS(30), 0);
    earn(f, "fuel", "a", "alice", 10, T0);
    earn(f, "grocer", "b", "alice", 20, T0 + DAY);
    earn(f, "grocer", "c", "bob", 5, T0 + 20 * DAY);
    burn(f, "fuel", "b1", "alice", 4, false, T0 + 2 * DAY); /* 4 of a's */
    int64_t now = T0 + 31 * DAY + 1;                        /* a and b are due, c is not */
    expiry_result_t r = expire(f, now, now);
    EXPECT_EQ("members", 1, r.members);
    EXPECT_EQ("entries", 1, r.entries);
    EXPECT_EQ("points", 26, r.points);
    EXPECT_EQ("breakage", 26, account(f, ACCOUNT_BREAKAGE));
    EXPECT_EQ("alice left", 0, account(f, "member:alice"));
    EXPECT_EQ("bob keeps c", 5, account(f, "member:bob"));
    uint64_t seq = ledger_last_seq(f->l);
    expiry_result_t again = expire(f, now, now + 1000);
    EXPECT_EQ("second run: no entries", 0, again.entries);
    EXPECT_EQ("second run: journal unchanged", seq, ledger_last_seq(f->l));
    settle_pair_t o[SETTLE_PARTNERS_MAX];
    size_t n = 0;
    EXPECT_OK("outstanding", ledger_outstanding(f->l, o, SETTLE_PARTNERS_MAX, &n));
    int64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += o[i].points;
    EXPECT_EQ("outstanding = the members' points", 5, total);
    static settle_partner_row_t rows[4];
    int64_t expired = 0;
    for (uint64_t w = 1; w <= 3; w++) { /* T0 is mid-January: the run is in February's */
        size_t m = 0;
        EXPECT_OK("counters", ledger_window_counters(f->l, w, NULL, rows, 4, &m));
        for (size_t i = 0; i < m; i++)
            expired += rows[i].c.points_expired;
    }
    EXPECT_EQ("breakage in the window's counters", 26, expired);
    /* A refund of an earn whose points expired takes them back out of breakage, not from
     * the member's other points; the issuer's outstanding points stay right. */
    earn(f, "grocer", "n", "alice", 50, now + 1000);
    result_t rf = refund(f, "grocer", "rb", "b", 15, 0, now + 2000);
    expect_code("refund after expiry", &rf, RC_APPROVED);
    EXPECT_EQ("out of breakage", 26 - 15, account(f, ACCOUNT_BREAKAGE));
    EXPECT_EQ("alice keeps her new 50", 50, account(f, "member:alice"));
    result_t rest = refund(f, "grocer", "rb2", "b", 5, 0, now + 3000);
    expect_code("the rest", &rest, RC_APPROVED);
    EXPECT_EQ("breakage: a's 6 left", 6, account(f, ACCOUNT_BREAKAGE));
    EXPECT_EQ("alice still keeps 50", 50, account(f, "member:alice"));
    EXPECT_OK("outstanding", ledger_outstanding(f->l, o, SETTLE_PARTNERS_MAX, &n));
    total = 0;
    for (size_t i = 0; i < n; i++)
        total += o[i].points;
    EXPECT_EQ("outstanding = the members' points again", 55, total);
    expect_verify(f);
}

/* Inactivity: bob does nothing and loses everything a year on; alice's burn in between
 * is activity, so hers go a year after it. */
static void inactivity_expiry_is_reset_by_activity(void **state)
{
    fixture_t *f = *state;
    op_policy(f, T0, 0, DAYS(365));
    earn(f, "fuel", "a", "alice", 10, T0);
    earn(f, "fuel", "b", "bob", 10, T0);
    burn(f, "grocer", "b1", "alice", 1, false, T0 + 200 * DAY);
    int64_t year = T0 + 366 * DAY;
    expiry_result_t r = expire(f, year, year);
    EXPECT_EQ("bob's lots expire", 10, r.points);
    EXPECT_EQ("alice keeps hers", 9, account(f, "member:alice"));
    EXPECT_EQ("bob has none", 0, account(f, "member:bob"));
    int64_t later = T0 + 200 * DAY + 366 * DAY;
    r = expire(f, later, later);
    EXPECT_EQ("alice's go a year after her burn", 9, r.points);
    EXPECT_EQ("breakage", 19, account(f, ACCOUNT_BREAKAGE));
    /* An earn after the expiry starts over. */
    earn(f, "fuel", "c", "bob", 3, later + DAY);
    r = expire(f, later + 2 * DAY, later + 2 * DAY);
    EXPECT_EQ("nothing due", 0, r.entries);
    expect_verify(f);
}

/* fuel's earns are pending 30 days: not burnable, shown apart, and a refund inside the
 * period cancels them before anything available. */
static void pending_points_over_a_return_period(void **state)
{
    fixture_t *f = *state;
    op_return_period(f, "fuel", T0 + 1, DAYS(30)); /* after partner-add's contract */
    earn(f, "grocer", "g1", "alice", 50, T0);
    result_t e = earn(f, "fuel", "f1", "alice", 100, T0 + DAY);
    expect_code("earn at fuel", &e, RC_APPROVED);
    EXPECT_EQ("pending in the earn's reply", 100, e.pending);
    EXPECT_EQ("available in the earn's reply", 50, e.available);
    EXPECT_CONTAINS("receipt says pending", "pending", e.text);
    result_t b = burn(f, "grocer", "b1", "alice", 60, false, T0 + 2 * DAY);
    expect_code("a burn past the available points", &b, RC_INSUFFICIENT_POINTS);
    EXPECT_CONTAINS("the decline shows both", "available 50, pending 100", b.text);
    result_t r = refund(f, "fuel", "r1", "f1", 40, 0, T0 + 2 * DAY);
    expect_code("refund inside the period", &r, RC_APPROVED);
    EXPECT_EQ("pending cancelled first", 60, r.pending);
    EXPECT_EQ("available untouched", 50, r.available);
    result_t p = burn(f, "grocer", "b2", "alice", 60, true, T0 + 3 * DAY);
    expect_code("partial burn of what is available", &p, RC_PARTIAL);
    EXPECT_EQ("burned", 50, p.points);
    EXPECT_EQ("left pending", 60, p.pending);
    ledger_member_points_t pts = points_of(f, "alice", T0 + 31 * DAY + 1, NULL, NULL);
    EXPECT_EQ("after the period: all available", 60, pts.available);
    EXPECT_EQ("none pending", 0, pts.pending);
    result_t b3 = burn(f, "grocer", "b3", "alice", 60, false, T0 + 31 * DAY + 1);
    expect_code("burnable after the period", &b3, RC_APPROVED);
    expect_verify(f);
}

/* A member's latest activity edited in its summary (so that an inactivity run would take
 * its points early) is found by verify. */

static result_t op_expire_member(fixture_t *f, const char *member, int64_t as_of, int64_t now)
{
    request_t r;
    char txn[TXN_ID_LEN_MAX + 1];
    request_init(&r, OPERATOR_PARTNER_ID, op_txn(f, txn));
    Coalition__ExpireRequest x = COALITION__EXPIRE_REQUEST__INIT;
    x.as_of_ms = as_of;
    x.member_id = (char *)member;
    r.env.body_case = COALITION__ENVELOPE__BODY_EXPIRE;
    r.env.expire = &x;
    return submit(f, &r.env, now);
}

/* An inactivity expiry of more than 256 lots takes two entries; a burn refunded between
 * them gives its points to a new lot (its old lot expired), and a later refund of the
 * first earn takes its expired points back out of breakage only. */
static void review_revived_lot(void **state)
{
    fixture_t *f = *state;
    op_policy(f, T0, DAYS(1095), DAYS(365));
    char txn[32];
    for (int i = 0; i < 300; i++) {
        snprintf(txn, sizeof txn, "e%d", i);
        result_t e = earn(f, "fuel", txn, "alice", 10, T0 + i);
        expect_code("earn", &e, RC_APPROVED);
    }
    result_t b = burn(f, "fuel", "b", "alice", 4, false, T0 + 1000);
    expect_code("burn", &b, RC_APPROVED);
    int64_t now = T0 + 400 * DAY;
    result_t x1 = op_expire_member(f, "alice", now, now);
    expect_code("first entry", &x1, RC_APPROVED);
    result_t rb = refund(f, "fuel", "rb", "b", 0, 4, now + 1);
    expect_code("burn refund", &rb, RC_APPROVED);
    ledger_lot_row_t rows[LOTS_SEEN_MAX];
    size_t n = 0;
    points_of(f, "alice", now + 1, rows, &n);
    EXPECT_EQ("given back into a new lot, the refund's", rb.seq, rows[n - 1].seq);
    result_t x2 = op_expire_member(f, "alice", now + 2, now + 2);
    expect_code("second entry", &x2, RC_APPROVED);
    earn(f, "grocer", "g", "alice", 50, now + 3);
    result_t re = refund(f, "fuel", "re0", "e0", 10, 0, now + 4);
    expect_code("refund of e0", &re, RC_APPROVED);
    EXPECT_EQ("breakage: 3000 expired, e0's 6 back", 2994 - 4, account(f, ACCOUNT_BREAKAGE) - 0);
    EXPECT_EQ("alice keeps her 50", 50, account(f, "member:alice"));
    expect_verify(f);
}

/* The writer's clock steps back between an earn and a burn: verify agrees on the
 * member's latest activity (the later of the two). */

static void review_clock_back_burn(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "a", "alice", 10, T0 + 10000);
    result_t b = burn(f, "fuel", "b", "alice", 4, false, T0 + 9000);
    expect_code("burn", &b, RC_APPROVED);
    expect_verify(f);
}

/* A member's latest activity edited in its summary (so that an inactivity run would take
 * its points early) is found by verify. */
static void verify_finds_an_edited_activity(void **state)
{
    fixture_t *f = *state;
    op_policy(f, T0, DAYS(30), DAYS(90));
    earn(f, "fuel", "a", "alice", 10, T0);
    expect_verify(f);
    MDB_txn *txn = NULL;
    lot_holder_t h;
    EXPECT_OK("txn", store_err(mdb_txn_begin(f->l->env, NULL, 0, &txn)));
    EXPECT_OK("open", lots_open(f->l, txn, "alice", &h));
    h.rec->last_activity_ms = 1;
    EXPECT_OK("close", lots_close(f->l, txn, &h, T0));
    EXPECT_OK("commit", store_err(mdb_txn_commit(txn)));
    char why[WHY_BYTES] = "";
    EXPECT_EQ("verify", CL_ERR_CORRUPT, ledger_verify(f->l, why, sizeof why));
    EXPECT_CONTAINS("names it", "latest activity", why);
}

/* A stored lot whose issuer was edited (breakage would go to the wrong partner) no longer
 * matches the entry that made it: verify says so. */
static void verify_finds_an_edited_lot(void **state)
{
    fixture_t *f = *state;
    earn(f, "fuel", "a", "alice", 10, T0);
    expect_verify(f);
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    static const char start[] = "member:alice";
    MDB_val k = {sizeof start, (void *)start}, v; /* with its NUL: the summary, then lots */
    EXPECT_OK("txn", store_err(mdb_txn_begin(f->l->env, NULL, 0, &txn)));
    EXPECT_OK("cursor", store_err(mdb_cursor_open(txn, f->l->db_accounts, &cur)));
    EXPECT_OK("summary", store_err(mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)));
    EXPECT_OK("lot", store_err(mdb_cursor_get(cur, &k, &v, MDB_NEXT)));
    EXPECT_EQ("a lot key", sizeof start - 1 + 21, k.mv_size);
    Coalition__LotRecord *r = coalition__lot_record__unpack(NULL, v.mv_size, v.mv_data);
    assert_non_null(r);
    uint8_t key[LOT_KEY_BYTES_MAX];
    memcpy(key, k.mv_data, k.mv_size);
    size_t len = k.mv_size;
    mdb_cursor_close(cur);
    char *issuer = r->issuer;
    r->issuer = "grocer";
    EXPECT_OK("put", ledger_put_record(txn, f->l->db_accounts, key, len, &r->base));
    r->issuer = issuer;
    coalition__lot_record__free_unpacked(r, NULL);
    EXPECT_OK("commit", store_err(mdb_txn_commit(txn)));
    char why[WHY_BYTES] = "";
    EXPECT_EQ("verify", CL_ERR_CORRUPT, ledger_verify(f->l, why, sizeof why));
    EXPECT_CONTAINS("names it", "not a lot the rules make", why);
}

/* ---- the property test --------------------------------------------------------------- */

typedef struct tally {
    int64_t issued, redeemed, broken; /* as the replies told them */
} tally_t;

#define PROP_MEMBERS 4
#define PROP_TXNS 512

static const char *const MEMBERS[PROP_MEMBERS] = {"alice", "bob", "carol", "dave"};
static const char *const PARTNERS[2] = {"fuel", "grocer"};

typedef struct prop {
    fixture_t *f;
    int64_t now;
    unsigned seed, n, run;
    char txns[PROP_TXNS][TXN_ID_LEN_MAX + 1]; /* approved earns and burns */
    bool is_earn[PROP_TXNS];
    int partner[PROP_TXNS];
    tally_t t;
    unsigned earns, burns, reversals, expiry_entries, declines, bonuses;
} prop_t;

static unsigned rnd(prop_t *p, unsigned below) { return (unsigned)rand_r(&p->seed) % below; }

static void prop_earn_or_burn(prop_t *p, bool is_earn)
{
    char txn[TXN_ID_LEN_MAX + 1];
    int partner = (int)rnd(p, 2);
    const char *member = MEMBERS[rnd(p, PROP_MEMBERS)];
    snprintf(txn, sizeof txn, "s%u-x%u", p->run, p->n);
    result_t r =
        is_earn ? earn(p->f, PARTNERS[partner], txn, member, 1 + rnd(p, 50), p->now)
                : burn(p->f, PARTNERS[partner], txn, member, 1 + rnd(p, 60), rnd(p, 2), p->now);
    if (r.code != RC_APPROVED && r.code != RC_PARTIAL) {
        p->declines++;
        return;
    }
    *(is_earn ? &p->earns : &p->burns) += 1;
    p->bonuses += r.bonus > 0;
    if (is_earn)
        p->t.issued += r.points;
    else
        p->t.redeemed += r.points;
    if (p->n < PROP_TXNS) {
        snprintf(p->txns[p->n], sizeof p->txns[0], "%s", txn);
        p->is_earn[p->n] = is_earn;
        p->partner[p->n] = partner;
    }
}

static void prop_reverse(prop_t *p)
{
    if (p->n == 0)
        return;
    unsigned i = rnd(p, p->n < PROP_TXNS ? p->n : PROP_TXNS);
    if (p->txns[i][0] == '\0')
        return;
    char txn[TXN_ID_LEN_MAX + 1];
    snprintf(txn, sizeof txn, "s%u-r%u", p->run, p->n);
    const char *partner = PARTNERS[p->partner[i]];
    bool whole = rnd(p, 3) == 0;
    result_t r = whole ? void_of(p->f, partner, txn, p->txns[i], p->now)
                 : p->is_earn[i]
                     ? refund(p->f, partner, txn, p->txns[i], 1 + rnd(p, 20), 0, p->now)
                     : refund(p->f, partner, txn, p->txns[i], 0, 1 + rnd(p, 20), p->now);
    if (r.code != RC_APPROVED) {
        p->declines++;
        return;
    }
    p->reversals++;
    if (p->is_earn[i])
        p->t.issued -= r.points; /* from the member, or back out of breakage */
    else
        p->t.redeemed -= r.points;
}

/* A rule at a random partner from now for up to 40 days (declined past the rule limit). */
static void prop_rule(prop_t *p)
{
    p->now += 1000;
    int kind = 1 + (int)rnd(p, 3);
    int64_t until = p->now + (int64_t)(1 + rnd(p, 40)) * DAY;
    op_rule(p->f, p->now, PARTNERS[rnd(p, 2)], kind, 0, until,
            kind == COALITION__RULE_KIND__RULE_MULTIPLIER ? 1100 + rnd(p, 2000) : 0,
            kind == COALITION__RULE_KIND__RULE_THRESHOLD ? 1000 + rnd(p, 5000) : 0,
            kind == COALITION__RULE_KIND__RULE_MULTIPLIER ? 0 : 1 + rnd(p, 30));
}

static void prop_step(prop_t *p)
{
    unsigned what = rnd(p, 20);
    if (what < 7)
        prop_earn_or_burn(p, true);
    else if (what < 11)
        prop_earn_or_burn(p, false);
    else if (what < 14)
        prop_reverse(p);
    else if (what < 17)
        p->now += (int64_t)rnd(p, 15) * DAY + rnd(p, 1000);
    else if (what < 19) {
        int64_t as_of = p->now - (int64_t)rnd(p, 3) * DAY;
        expiry_result_t r = expire(p->f, as_of, p->now);
        p->t.broken += r.points;
        p->expiry_entries += (unsigned)r.entries;
        uint64_t seq = ledger_last_seq(p->f->l);
        expiry_result_t again = expire(p->f, as_of, p->now);
        EXPECT_EQ("a second run writes nothing", seq, ledger_last_seq(p->f->l));
        EXPECT_EQ("a second run expires nothing", 0, again.points);
    } else if (rnd(p, 2) == 0) {
        p->now += 1000;
        op_policy(p->f, p->now, rnd(p, 2) ? DAYS(10 + rnd(p, 60)) : 0,
                  rnd(p, 2) ? DAYS(20 + rnd(p, 60)) : 0);
    } else {
        prop_rule(p);
    }
    p->n++;
}

/* Breakage, outstanding and redeemed add up to what was issued, as the replies told it
 * (the ledger's breakage account counts refunds out of breakage, which the replies count
 * as earns taken back). */
static void prop_check(prop_t *p)
{
    int64_t outstanding = 0;
    for (int m = 0; m < PROP_MEMBERS; m++) {
        char name[ACCOUNT_NAME_BYTES_MAX];
        ledger_account_member(name, sizeof name, MEMBERS[m]);
        outstanding += account(p->f, name);
    }
    int64_t breakage = account(p->f, ACCOUNT_BREAKAGE);
    EXPECT_EQ("issued = outstanding + redeemed + breakage", p->t.issued,
              outstanding + p->t.redeemed + breakage);
    int64_t issued =
        -(account(p->f, "partner:fuel:issued") + account(p->f, "partner:grocer:issued"));
    int64_t redeemed =
        account(p->f, "partner:fuel:redeemed") + account(p->f, "partner:grocer:redeemed");
    EXPECT_EQ("the ledger's issued points", p->t.issued, issued);
    EXPECT_EQ("the ledger's redeemed points", p->t.redeemed, redeemed);
    EXPECT_TRUE("breakage never exceeds what expiry runs posted", breakage <= p->t.broken);
    expect_verify(p->f); /* lots = balance per member; no lot expires twice; indexes */
}

static void property_random_streams(void **state)
{
    fixture_t *f = *state;
    op_return_period(f, "fuel", T0 + 1, DAYS(5));
    op_member(f, "carol");
    op_member(f, "dave");
    static prop_t p;
    for (unsigned seed = 1; seed <= 10; seed++) {
        memset(&p, 0, sizeof p);
        p.f = f;
        p.run = seed;
        p.seed = seed * 7919u;
        p.now = T0 + (int64_t)seed * 1000 * DAY;
        op_policy(f, p.now, DAYS(30), DAYS(90));
        static const char *const names[3] = {"Base", "Silver", "Gold"};
        const int64_t thresholds[3] = {0, 50 + seed * 10, 400}, mults[3] = {1000, 1500, 2000};
        result_t t = op_tiers(f, p.now, names, thresholds, mults, 3);
        expect_code("tiers", &t, RC_APPROVED);
        p.t.broken = account(f, ACCOUNT_BREAKAGE);
        int64_t issued0 =
            -(account(f, "partner:fuel:issued") + account(f, "partner:grocer:issued"));
        int64_t redeemed0 =
            account(f, "partner:fuel:redeemed") + account(f, "partner:grocer:redeemed");
        p.t.issued = issued0;
        p.t.redeemed = redeemed0;
        for (unsigned i = 0; i < 400; i++) {
            prop_step(&p);
            if (i % 100 == 99)
                prop_check(&p);
        }
        prop_check(&p);
        print_message("seed %u: %u earns (%u with bonuses), %u burns, %u reversals, %u "
                      "declines, %u expiry entries, breakage %lld\n",
                      seed, p.earns, p.bonuses, p.burns, p.reversals, p.declines, p.expiry_entries,
                      (long long)account(f, ACCOUNT_BREAKAGE));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(burn_spans_lots_soonest_expiry_first, setup, teardown),
        cmocka_unit_test_setup_teardown(refund_of_a_burn_gives_its_lots_back, setup, teardown),
        cmocka_unit_test_setup_teardown(expiry_run_twice_changes_nothing_the_second_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(inactivity_expiry_is_reset_by_activity, setup, teardown),
        cmocka_unit_test_setup_teardown(pending_points_over_a_return_period, setup, teardown),
        cmocka_unit_test_setup_teardown(verify_finds_an_edited_activity, setup, teardown),
        cmocka_unit_test_setup_teardown(verify_finds_an_edited_lot, setup, teardown),
        cmocka_unit_test_setup_teardown(review_revived_lot, setup, teardown),
        cmocka_unit_test_setup_teardown(review_clock_back_burn, setup, teardown),
        cmocka_unit_test_setup_teardown(property_random_streams, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
