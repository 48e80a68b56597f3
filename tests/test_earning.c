/* Tiers and earning rules in the ledger, in process (earning.c, verify_earning.c): a tier
 * reached mid-month and its multiplier on the next earn only (never retroactive), a tier
 * lost when its qualifying months roll out or a refund takes them back, a threshold
 * bonus given exactly once a month among many earns in one writer round, a campaign
 * ending (and starting) at its boundary to the millisecond, a rule ended early, a
 * first-earn bonus, all of them combined in one earn with each bonus its own posting
 * billed to the partner, and verify after each. */
#include "lifecycle_fixture.h"

#define T_MID INT64_C(1801000000000) /* 2027-01-27: T0 + 11.6 days, the same month */
#define HOUR INT64_C(3600000)

static const char *const NAMES[3] = {"Base", "Silver", "Gold"};
static const int64_t THRESHOLDS[3] = {0, 100, 300};
static const int64_t MULTS[3] = {1000, 1500, 2000};

static void set_tiers(fixture_t *f, int64_t now)
{
    result_t r = op_tiers(f, now, NAMES, THRESHOLDS, MULTS, 3);
    expect_code("tiers", &r, RC_APPROVED);
}

static void expect_earn(const char *what, const result_t *r, const char *tier, int64_t base,
                        int64_t bonus)
{
    expect_code(what, r, RC_APPROVED);
    if (strcmp(r->tier, tier) != 0 || r->base != base || r->bonus != bonus ||
        r->points != base + bonus)
        fail_msg("%s: expected tier %s, %lld base + %lld bonus; got tier %s, %lld + %lld = %lld "
                 "(%s)",
                 what, tier, (long long)base, (long long)bonus, r->tier, (long long)r->base,
                 (long long)r->bonus, (long long)r->points, r->text);
}

/* 60 then 50 base points: the second earn crosses Silver's 100 at Base (x1); the next
 * earn is the first at x1.5. Earlier earns keep what they got. */
static void tier_reached_mid_month_applies_from_the_next_earn(void **state)
{
    fixture_t *f = *state;
    set_tiers(f, T0);
    result_t a = earn(f, "fuel", "a", "alice", 60, T0 + HOUR);
    expect_earn("first earn", &a, "Base", 60, 0);
    result_t b = earn(f, "fuel", "b", "alice", 50, T0 + 2 * HOUR);
    expect_earn("the earn that reaches Silver", &b, "Base", 50, 0);
    result_t c = earn(f, "grocer", "c", "alice", 40, T0 + 3 * HOUR);
    expect_earn("the next earn, at Silver", &c, "Silver", 40, 20);
    EXPECT_CONTAINS("receipt shows the split", "40 base + 20 bonus, Silver", c.text);
    EXPECT_EQ("balance: nothing retroactive", 60 + 50 + 60, c.balance);
    /* Bonus points never qualify: 150 base so far, not 170. Gold at 300. */
    result_t d = earn(f, "grocer", "d", "alice", 150, T0 + 4 * HOUR);
    expect_earn("still Silver at 150 qualifying", &d, "Silver", 150, 75);
    result_t e = earn(f, "grocer", "e", "alice", 10, T0 + 5 * HOUR);
    expect_earn("Gold from 300", &e, "Gold", 10, 10);
    expect_verify(f);
}

/* A refund takes its base share out of the qualifying points; twelve months on, the
 * months that qualified roll out and the tier goes with them. */
static void tier_lost_to_a_refund_and_to_time(void **state)
{
    fixture_t *f = *state;
    set_tiers(f, T0);
    earn(f, "fuel", "a", "alice", 120, T0 + HOUR);
    result_t s = earn(f, "fuel", "b", "alice", 10, T0 + 2 * HOUR);
    expect_earn("Silver", &s, "Silver", 10, 5);
    result_t r = refund(f, "fuel", "r", "a", 30, 0, T0 + 3 * HOUR); /* 30 of 120 base back */
    expect_code("refund", &r, RC_APPROVED);
    result_t t = earn(f, "fuel", "c", "alice", 10, T0 + 4 * HOUR);
    expect_earn("100 qualifying: still Silver", &t, "Silver", 10, 5);
    refund(f, "fuel", "r2", "b", 10, 0, T0 + 5 * HOUR); /* b's 10 base */
    refund(f, "fuel", "r3", "c", 10, 0, T0 + 6 * HOUR); /* c's 10 base */
    refund(f, "fuel", "r4", "a", 10, 0, T0 + 7 * HOUR); /* 80 of a's base left */
    result_t u = earn(f, "fuel", "d", "alice", 10, T0 + 8 * HOUR);
    expect_earn("80 qualifying: Base again", &u, "Base", 10, 0);
    result_t later = earn(f, "fuel", "e", "bob", 200, T0 + 9 * HOUR);
    expect_earn("bob: Base", &later, "Base", 200, 0);
    result_t year = earn(f, "fuel", "f", "bob", 10, T0 + 366 * DAY);
    expect_earn("a year on: January's 200 rolled out", &year, "Base", 10, 0);
    result_t eleven = earn(f, "fuel", "g", "alice", 10, T0 + 300 * DAY);
    expect_earn("eleven months on: still counted (90)", &eleven, "Base", 10, 0);
    expect_verify(f);
}

/* A threshold bonus: 100 points once alice spends 50.00 at grocer in a calendar month.
 * Ten earns of 10.00 in one writer round (as concurrent tills' requests are): exactly
 * the fifth gets it. Next month: once again. */
static void threshold_bonus_once_a_month_in_one_round(void **state)
{
    fixture_t *f = *state;
    result_t rule =
        op_rule(f, T0, "grocer", COALITION__RULE_KIND__RULE_THRESHOLD, T0, 0, 0, 5000, 100);
    expect_code("threshold rule", &rule, RC_APPROVED);
    for (int month = 0; month < 2; month++) {
        int64_t now = T0 + month * 31 * DAY + HOUR;
        int given = 0, at = -1;
        EXPECT_OK("begin", ledger_batch_begin(f->l));
        for (int i = 0; i < 10; i++) {
            request_t r;
            char txn[32];
            snprintf(txn, sizeof txn, "m%d-e%d", month, i);
            result_t e = apply_in_batch(f, earn_request(&r, "grocer", txn, "alice", 1000), now);
            expect_code("earn", &e, RC_APPROVED);
            if (e.bonus > 0) {
                given++;
                at = i;
                EXPECT_EQ("the bonus", 100, e.bonus);
            }
        }
        EXPECT_OK("commit", ledger_batch_commit(f->l));
        EXPECT_EQ("given once this month", 1, given);
        EXPECT_EQ("to the earn that reaches 50.00", 4, at);
    }
    /* bob's spend is his own. */
    result_t b = earn(f, "grocer", "b1", "bob", 60, T0 + 31 * DAY + 2 * HOUR);
    EXPECT_EQ("bob reaches it in one earn", 100, b.bonus);
    expect_verify(f);
}

/* Twenty threshold campaigns one after another in one month, each paid once: more than
 * the 16 rules a partner may run at once, so the month's record of paid rules keeps only
 * those in force. */
static void many_threshold_campaigns_in_a_month(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 20; i++) {
        int64_t start = T0 + i * HOUR;
        result_t rule = op_rule(f, start, "grocer", COALITION__RULE_KIND__RULE_THRESHOLD, start,
                                start + HOUR, 0, 1000, 7);
        expect_code("campaign", &rule, RC_APPROVED);
        char txn[16];
        snprintf(txn, sizeof txn, "t%d", i);
        result_t e = earn(f, "grocer", txn, "alice", 10, start + 1);
        expect_earn("paid once in its hour", &e, "", 10, 7);
        snprintf(txn, sizeof txn, "u%d", i);
        result_t again = earn(f, "grocer", txn, "alice", 10, start + 2);
        expect_earn("not twice", &again, "", 10, 0);
    }
    expect_verify(f);
}

/* A x2 campaign at fuel from T_MID to T_MID + 1 h: not a millisecond before, not at its
 * end; a second campaign ended early stops at the time it was ended for. */
static void campaign_ends_at_its_boundary(void **state)
{
    fixture_t *f = *state;
    result_t r = op_rule(f, T0, "fuel", COALITION__RULE_KIND__RULE_MULTIPLIER, T_MID, T_MID + HOUR,
                         2000, 0, 0);
    expect_code("campaign", &r, RC_APPROVED);
    result_t before = earn(f, "fuel", "a", "alice", 10, T_MID - 1);
    expect_earn("a millisecond before", &before, "", 10, 0);
    result_t start = earn(f, "fuel", "b", "alice", 10, T_MID);
    expect_earn("at its start", &start, "", 10, 10);
    result_t last = earn(f, "fuel", "c", "alice", 10, T_MID + HOUR - 1);
    expect_earn("its last millisecond", &last, "", 10, 10);
    result_t end = earn(f, "fuel", "d", "alice", 10, T_MID + HOUR);
    expect_earn("at its end", &end, "", 10, 0);
    result_t grocer = earn(f, "grocer", "e", "alice", 10, T_MID + 1);
    expect_earn("another partner's tills", &grocer, "", 10, 0);
    /* Ended early: a x3 with no end, ended at T_MID + 3 h. */
    result_t open = op_rule(f, T_MID + 2 * HOUR, "grocer", COALITION__RULE_KIND__RULE_MULTIPLIER, 0,
                            0, 3000, 0, 0);
    expect_code("open-ended campaign", &open, RC_APPROVED);
    result_t past = op_rule_end(f, T_MID + 2 * HOUR, "grocer", open.seq, T_MID);
    expect_code("an end in the past", &past, RC_INVALID_AMOUNT);
    result_t ended = op_rule_end(f, T_MID + 2 * HOUR, "grocer", open.seq, T_MID + 3 * HOUR);
    expect_code("ended at +3 h", &ended, RC_APPROVED);
    result_t in = earn(f, "grocer", "f", "alice", 10, T_MID + 3 * HOUR - 1);
    expect_earn("before the end", &in, "", 10, 20);
    result_t out = earn(f, "grocer", "g", "alice", 10, T_MID + 3 * HOUR);
    expect_earn("at the end", &out, "", 10, 0);
    result_t again = op_rule_end(f, T_MID + 4 * HOUR, "grocer", open.seq, 0);
    expect_code("ending an ended rule", &again, RC_INVALID_AMOUNT);
    expect_verify(f);
}

/* Tier, a campaign and a first-earn bonus in one earn: each its own posting, in order,
 * all billed to the partner; the member's second earn there gets no first-earn bonus. */
static void bonuses_combine_each_its_own_posting(void **state)
{
    fixture_t *f = *state;
    set_tiers(f, T0);
    earn(f, "grocer", "q", "alice", 100, T0 + HOUR); /* Silver from here */
    op_rule(f, T0 + HOUR, "fuel", COALITION__RULE_KIND__RULE_MULTIPLIER, 0, 0, 1250, 0, 0);
    result_t fe =
        op_rule(f, T0 + HOUR, "fuel", COALITION__RULE_KIND__RULE_FIRST_EARN, 0, 0, 0, 0, 25);
    expect_code("first-earn rule", &fe, RC_APPROVED);
    result_t e = earn(f, "fuel", "e", "alice", 40, T0 + 2 * HOUR);
    /* Silver +50%: 20; campaign +25%: 10; first earn at fuel: 25. */
    expect_earn("all three", &e, "Silver", 40, 55);
    journal_entry_t *entries[1];
    size_t n = 0;
    EXPECT_OK("entry", ledger_journal_slice(f->l, e.seq, entries, 1, &n));
    EXPECT_EQ("one entry", 1, n);
    const journal_entry_t *j = entries[0];
    EXPECT_EQ("bonuses", 3, j->n_bonuses);
    EXPECT_EQ("postings: a pair each", 8, j->n_postings);
    EXPECT_EQ("tier's first", 20, j->bonuses[0]->points);
    EXPECT_EQ("then the campaign", 10, j->bonuses[1]->points);
    EXPECT_EQ("then the first earn", 25, j->bonuses[2]->points);
    EXPECT_STR("billed to fuel", "partner:fuel:issued", j->postings[6]->account);
    ledger_journal_slice_free(entries, n);
    result_t second = earn(f, "fuel", "e2", "alice", 40, T0 + 3 * HOUR);
    expect_earn("second earn at fuel", &second, "Silver", 40, 30);
    static settle_partner_row_t rows[4];
    size_t m = 0;
    EXPECT_OK("counters", ledger_window_counters(f->l, 1, NULL, rows, 4, &m));
    int64_t bonus = 0;
    for (size_t i = 0; i < m; i++)
        if (strcmp(rows[i].partner_id, "fuel") == 0)
            bonus = rows[i].c.points_bonus;
    EXPECT_EQ("fuel billed for its bonuses", 55 + 30, bonus);
    expect_verify(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(tier_reached_mid_month_applies_from_the_next_earn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(tier_lost_to_a_refund_and_to_time, setup, teardown),
        cmocka_unit_test_setup_teardown(threshold_bonus_once_a_month_in_one_round, setup, teardown),
        cmocka_unit_test_setup_teardown(campaign_ends_at_its_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(many_threshold_campaigns_in_a_month, setup, teardown),
        cmocka_unit_test_setup_teardown(bonuses_combine_each_its_own_posting, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
