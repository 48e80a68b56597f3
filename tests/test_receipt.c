/* Unit tests for common/receipt: each locale's number formatting (CLDR symbols, zero,
 * negatives, INT64 extremes, Albanian's minimum grouping), the catalogue's completeness,
 * and every message at every locale rendered with the largest numbers and longest ids:
 * always valid UTF-8, always under RECEIPT_TEXT_BYTES_MAX, cut only at a character
 * boundary, and with ordinary ids never cut at all. */
#include "amount.h"
#include "card.h"
#include "errors.h"
#include "receipt.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <stdio.h>
#include <string.h>

#define NB "\xc2\xa0" /* U+00A0, the cs and sq group separator */

typedef struct int_case {
    receipt_locale_t locale;
    int64_t value;
    const char *expected;
} int_case_t;

static const int_case_t INT_CASES[] = {
    {RECEIPT_EN, 0, "0"},
    {RECEIPT_EN, 7, "7"},
    {RECEIPT_EN, 999, "999"},
    {RECEIPT_EN, 1000, "1,000"},
    {RECEIPT_EN, 1234567, "1,234,567"},
    {RECEIPT_EN, -1234567, "-1,234,567"},
    {RECEIPT_EN, INT64_MAX, "9,223,372,036,854,775,807"},
    {RECEIPT_EN, INT64_MIN, "-9,223,372,036,854,775,808"},
    {RECEIPT_RO, 0, "0"},
    {RECEIPT_RO, 1234, "1.234"},
    {RECEIPT_RO, 1234567, "1.234.567"},
    {RECEIPT_RO, -100000, "-100.000"},
    {RECEIPT_RO, INT64_MIN, "-9.223.372.036.854.775.808"},
    {RECEIPT_CS, 0, "0"},
    {RECEIPT_CS, 999, "999"},
    {RECEIPT_CS, 1234, "1" NB "234"},
    {RECEIPT_CS, 1234567, "1" NB "234" NB "567"},
    {RECEIPT_CS, -1234567, "-1" NB "234" NB "567"},
    {RECEIPT_CS, INT64_MAX, "9" NB "223" NB "372" NB "036" NB "854" NB "775" NB "807"},
    {RECEIPT_EL, 0, "0"},
    {RECEIPT_EL, 1234, "1.234"},
    {RECEIPT_EL, 1234567, "1.234.567"},
    {RECEIPT_EL, INT64_MIN, "-9.223.372.036.854.775.808"},
    /* sq: CLDR minimumGroupingDigits 2: four digits stay together, five are grouped. */
    {RECEIPT_SQ, 0, "0"},
    {RECEIPT_SQ, 1234, "1234"},
    {RECEIPT_SQ, -9999, "-9999"},
    {RECEIPT_SQ, 12345, "12" NB "345"},
    {RECEIPT_SQ, 1234567, "1" NB "234" NB "567"},
    {RECEIPT_SQ, INT64_MIN, "-9" NB "223" NB "372" NB "036" NB "854" NB "775" NB "808"},
};

static void test_format_int(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof INT_CASES / sizeof INT_CASES[0]; i++) {
        const int_case_t *c = &INT_CASES[i];
        char buf[RECEIPT_NUMBER_BYTES];
        memset(buf, 'x', sizeof buf);
        receipt_format_int(c->locale, c->value, buf);
        char what[64];
        snprintf(what, sizeof what, "%s %lld", receipt_locale_code(c->locale), (long long)c->value);
        EXPECT_STR(what, c->expected, buf);
        EXPECT_TRUE("valid UTF-8", receipt_utf8_valid(buf, strlen(buf)));
    }
}

/* English points are the bytes amount_format_points always wrote. */
static void test_english_points_unchanged(void **state)
{
    (void)state;
    const int64_t values[] = {0,      1,       -1,         999,         1000,      -1000,
                              999999, 1000000, POINTS_MAX, -POINTS_MAX, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char old[AMOUNT_TEXT_BYTES], now[RECEIPT_NUMBER_BYTES];
        amount_format_points(values[i], old, sizeof old);
        receipt_format_int(RECEIPT_EN, values[i], now);
        EXPECT_STR("en points as amount_format_points", old, now);
    }
}

static void expect_minor(receipt_locale_t l, int64_t minor, int exponent, const char *expected)
{
    char buf[RECEIPT_NUMBER_BYTES];
    receipt_format_minor(l, minor, exponent, buf);
    char what[80];
    snprintf(what, sizeof what, "%s money %lld e%d", receipt_locale_code(l), (long long)minor,
             exponent);
    EXPECT_STR(what, expected, buf);
}

static void test_format_money(void **state)
{
    (void)state;
    expect_minor(RECEIPT_EN, 123456, 2, "1,234.56");
    expect_minor(RECEIPT_RO, 123456, 2, "1.234,56");
    expect_minor(RECEIPT_CS, 123456, 2, "1" NB "234,56");
    expect_minor(RECEIPT_EL, -100, 2, "-1,00");
    expect_minor(RECEIPT_SQ, 123456, 2, "1234,56");
    expect_minor(RECEIPT_SQ, 123456789, 2, "1" NB "234" NB "567,89");
    expect_minor(RECEIPT_CS, 5, 2, "0,05");
    expect_minor(RECEIPT_RO, 0, 2, "0,00");
    expect_minor(RECEIPT_EL, 1234567, 0, "1.234.567");
    expect_minor(RECEIPT_RO, 1234567, 3, "1.234,567");
    expect_minor(RECEIPT_EN, INT64_MIN, 2, "-92,233,720,368,547,758.08");
    expect_minor(RECEIPT_CS, INT64_MAX, 4, "922" NB "337" NB "203" NB "685" NB "477,5807");
}

static void test_locale_codes(void **state)
{
    (void)state;
    receipt_locale_t l = RECEIPT_SQ;
    EXPECT_EQ("\"\" parses", CL_OK, receipt_locale_parse("", &l));
    EXPECT_EQ("\"\" is en", RECEIPT_EN, l);
    for (int i = 0; i < RECEIPT_LOCALES; i++) {
        const char *code = receipt_locale_code((receipt_locale_t)i);
        EXPECT_EQ(code, CL_OK, receipt_locale_parse(code, &l));
        EXPECT_EQ(code, i, l);
        EXPECT_CONTAINS("listed", code, RECEIPT_LOCALES_LIST);
    }
    const char *bad[] = {"EN", "fr", "en_US", "en-GB",           "e", "ro ", " ro",
                         "gr", "al", "cz",    "\xce\xb5\xce\xbb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        l = RECEIPT_SQ;
        EXPECT_EQ(bad[i], CL_ERR_INVALID, receipt_locale_parse(bad[i], &l));
        EXPECT_EQ("left as it was", RECEIPT_SQ, l);
    }
}

/* The highest placeholder a template uses, or -1; fails on a malformed one. */
static int max_placeholder(const char *t)
{
    int max = -1;
    for (const char *p = strchr(t, '{'); p != NULL; p = strchr(p + 1, '{')) {
        if (!(p[1] >= '0' && p[1] < '0' + RECEIPT_ARGS_MAX && p[2] == '}'))
            fail_msg("template \"%s\": a brace that is no placeholder", t);
        max = p[1] - '0' > max ? p[1] - '0' : max;
    }
    return max;
}

static void test_catalogue_complete(void **state)
{
    (void)state;
    for (int m = 0; m < RECEIPT_MSGS; m++) {
        int en_max = max_placeholder(receipt_template(RECEIPT_EN, (receipt_msg_t)m));
        for (int l = 0; l < RECEIPT_LOCALES; l++) {
            const char *t = receipt_template((receipt_locale_t)l, (receipt_msg_t)m);
            EXPECT_TRUE("a template for every message and locale", t != NULL && t[0] != '\0');
            EXPECT_TRUE(t, receipt_utf8_valid(t, strlen(t)));
            if (max_placeholder(t) > en_max)
                fail_msg("%s message %d uses an argument English does not have: %s",
                         receipt_locale_code((receipt_locale_t)l), m, t);
        }
    }
    const int codes[] = {RC_UNKNOWN_PARTNER,
                         RC_DO_NOT_HONOUR,
                         RC_INVALID_TRANSACTION,
                         RC_INVALID_AMOUNT,
                         RC_UNKNOWN_MEMBER,
                         RC_ORIGINAL_NOT_FOUND,
                         RC_FORMAT_ERROR,
                         RC_INSUFFICIENT_POINTS,
                         54,
                         RC_NOT_PERMITTED,
                         RC_EXCEEDS_LIMIT,
                         RC_FROZEN,
                         65,
                         RC_UNAVAILABLE,
                         RC_DUPLICATE_KEY,
                         RC_SYSTEM_ERROR};
    for (int l = 0; l < RECEIPT_LOCALES; l++)
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
            const char *r = receipt_reason((receipt_locale_t)l, codes[i]);
            EXPECT_TRUE("a reason for every code", r != NULL && r[0] != '\0');
            EXPECT_TRUE(r, receipt_utf8_valid(r, strlen(r)));
            if (l != RECEIPT_EN && strcmp(r, receipt_reason(RECEIPT_EN, codes[i])) == 0)
                fail_msg("%s reason for %d is the English one", receipt_locale_code(l), codes[i]);
        }
}

/* English templates render the broker's texts from before locales, byte for byte. */
static void test_english_bytes(void **state)
{
    (void)state;
    char out[RECEIPT_TEXT_BYTES_MAX];
    const char *earn[] = {"27", "", "1,240"};
    receipt_render(RECEIPT_EN, MSG_EARN, earn, 3, out, sizeof out);
    EXPECT_STR("earn", "Earned 27 points. Balance 1,240", out);
    const char *bonus[] = {"20", "7", ", gold"};
    char detail[64];
    receipt_render(RECEIPT_EN, MSG_EARN_BONUS, bonus, 3, detail, sizeof detail);
    EXPECT_STR("bonus", " (20 base + 7 bonus, gold)", detail);
    const char *burn[] = {"100", "1,140"};
    receipt_render(RECEIPT_EN, MSG_BURN, burn, 2, out, sizeof out);
    EXPECT_STR("burn", "Redeemed 100 points. Balance 1,140", out);
    const char *ins[] = {"51", "insufficient points (balance 10, requested 50)"};
    receipt_render(RECEIPT_EN, MSG_DECLINED, ins, 2, out, sizeof out);
    EXPECT_STR("decline", "Declined 51: insufficient points (balance 10, requested 50)", out);
    EXPECT_EQ("prefix length", 13, receipt_decline_prefix(RECEIPT_EN, 5, out, sizeof out));
    EXPECT_STR("prefix", "Declined 05: ", out);
}

static void test_localized_examples(void **state)
{
    (void)state;
    char out[RECEIPT_TEXT_BYTES_MAX], pts[RECEIPT_NUMBER_BYTES], bal[RECEIPT_NUMBER_BYTES];
    receipt_format_int(RECEIPT_RO, 1500, pts);
    receipt_format_int(RECEIPT_RO, 1234567, bal);
    const char *a[] = {pts, "", bal};
    receipt_render(RECEIPT_RO, MSG_EARN, a, 3, out, sizeof out);
    EXPECT_STR("ro earn", "Puncte câștigate: 1.500. Sold: 1.234.567", out);
    receipt_format_int(RECEIPT_EL, 1500, pts);
    receipt_format_int(RECEIPT_EL, 1234567, bal);
    const char *b[] = {pts, bal};
    receipt_render(RECEIPT_EL, MSG_BURN, b, 2, out, sizeof out);
    EXPECT_STR("el burn", "Εξαργυρώσατε πόντους: 1.500. Υπόλοιπο: 1.234.567", out);
    receipt_decline_prefix(RECEIPT_CS, RC_INSUFFICIENT_POINTS, out, sizeof out);
    EXPECT_STR("cs prefix", "Zamítnuto 51: ", out);
}

/* What each message's arguments are, to render it with the worst of each. */
typedef enum arg_kind {
    A_NUM,
    A_ID,
    A_CUR,
    A_CARD,
    A_TIER,
    A_BONUS,
    A_CODE,
    A_CAUSE,
    A_NOTE,
    A_TEXT
} arg_kind_t;

typedef struct msg_args {
    size_t n;
    arg_kind_t kind[RECEIPT_ARGS_MAX];
} msg_args_t;

static const msg_args_t ARGS[RECEIPT_MSGS] = {
    [MSG_EARN] = {3, {A_NUM, A_BONUS, A_NUM}},
    [MSG_EARN_BONUS] = {3, {A_NUM, A_NUM, A_TIER}},
    [MSG_EARN_UNCLAIMED] = {2, {A_NUM, A_BONUS}},
    [MSG_EARN_PENDING] = {3, {A_NUM, A_BONUS, A_NUM}},
    [MSG_BURN] = {2, {A_NUM, A_NUM}},
    [MSG_BURN_PARTIAL] = {3, {A_NUM, A_NUM, A_NUM}},
    [MSG_BALANCE] = {1, {A_NUM}},
    [MSG_BALANCE_SPLIT] = {3, {A_NUM, A_NUM, A_NUM}},
    [MSG_CARD_UNCLAIMED] = {2, {A_NUM, A_CARD}},
    [MSG_REFUND_EARN] = {3, {A_ID, A_NUM, A_NUM}},
    [MSG_REFUND_BURN] = {3, {A_ID, A_NUM, A_NUM}},
    [MSG_VOID_EARN] = {3, {A_ID, A_NUM, A_NUM}},
    [MSG_VOID_BURN] = {3, {A_ID, A_NUM, A_NUM}},
    [MSG_ENROLL] = {1, {A_ID}},
    [MSG_REVERSAL_AHEAD] = {2, {A_CODE, A_ID}},
    [MSG_REVERSED_SINCE] = {1, {A_TEXT}},
    [MSG_DECLINED] = {2, {A_CODE, A_TEXT}},
    [MSG_R_UNKNOWN_MEMBER] = {1, {A_ID}},
    [MSG_R_FROZEN] = {1, {A_ID}},
    [MSG_R_INSUFFICIENT] = {2, {A_NUM, A_NUM}},
    [MSG_R_INSUFFICIENT_PEND] = {3, {A_NUM, A_NUM, A_NUM}},
    [MSG_R_NOT_FOUND] = {1, {A_ID}},
    [MSG_R_ALREADY_REVERSED] = {2, {A_ID, A_NUM}},
    [MSG_R_VOIDED] = {1, {A_ID}},
    [MSG_R_FULLY_REFUNDED] = {1, {A_ID}},
    [MSG_R_ENROLLED] = {1, {A_ID}},
    [MSG_R_REFUND_MONEY] = {4, {A_NUM, A_CUR, A_NUM, A_CUR}},
    [MSG_R_REFUND_POINTS] = {2, {A_NUM, A_NUM}},
    [MSG_R_REVERSED_BEFORE] = {2, {A_ID, A_NUM}},
    [MSG_R_DUPLICATE] = {1, {A_ID}},
    [MSG_AGENT_OFFLINE] = {1, {A_CAUSE}},
    [MSG_AGENT_PENDING_CARD] = {1, {A_CAUSE}},
    [MSG_AGENT_NOT_APPLIED] = {2, {A_CAUSE, A_NOTE}},
    [MSG_AGENT_CARD_ONLINE] = {0, {A_NUM}},
    [MSG_CAUSE_UNREACHABLE] = {0, {A_NUM}},
    [MSG_CAUSE_KEY_REFUSED] = {0, {A_NUM}},
};

typedef struct worst {
    char num[RECEIPT_NUMBER_BYTES], id[TXN_ID_LEN_MAX + 1], card[PAN_MASKED_BYTES];
    char tier[TIER_NAME_LEN_MAX + 3], bonus[RECEIPT_TEXT_BYTES_MAX], text[RECEIPT_TEXT_BYTES_MAX];
    char cause[RECEIPT_TEXT_BYTES_MAX], note[RECEIPT_TEXT_BYTES_MAX];
} worst_t;

/* The longest value of each kind in locale l: `number` formatted, ids of id_len bytes. */
static void worst_args(receipt_locale_t l, int64_t number, size_t id_len, worst_t *w)
{
    receipt_format_int(l, number, w->num);
    memset(w->id, 'W', id_len);
    w->id[id_len] = '\0';
    memset(w->card, '9', PAN_MASKED_BYTES - 1);
    w->card[PAN_MASKED_BYTES - 1] = '\0';
    memset(w->tier, 'T', sizeof w->tier - 1);
    memcpy(w->tier, ", ", 2);
    w->tier[sizeof w->tier - 1] = '\0';
    const char *b[] = {w->num, w->num, w->tier};
    receipt_render(l, MSG_EARN_BONUS, b, 3, w->bonus, sizeof w->bonus);
    char unreachable[RECEIPT_TEXT_BYTES_MAX];
    receipt_render(l, MSG_CAUSE_KEY_REFUSED, NULL, 0, w->cause, sizeof w->cause);
    receipt_render(l, MSG_CAUSE_UNREACHABLE, NULL, 0, unreachable, sizeof unreachable);
    if (strlen(unreachable) > strlen(w->cause))
        memcpy(w->cause, unreachable, sizeof unreachable);
    receipt_render(l, MSG_AGENT_CARD_ONLINE, NULL, 0, w->note, sizeof w->note);
    memset(w->text, 'X', sizeof w->text - 1); /* a whole receipt text, as quoted by a replay */
    w->text[sizeof w->text - 1] = '\0';
}

static const char *arg_of(const worst_t *w, arg_kind_t k)
{
    switch (k) {
    case A_NUM: return w->num;
    case A_ID: return w->id;
    case A_CUR: return "EUR";
    case A_CARD: return w->card;
    case A_TIER: return w->tier;
    case A_BONUS: return w->bonus;
    case A_CODE: return "refund";
    case A_CAUSE: return w->cause;
    case A_NOTE: return w->note;
    default: return w->text;
    }
}

/* Render msg at l with w's arguments; check the cut text against the whole one. Returns
 * the whole text's length. */
static size_t render_checked(receipt_locale_t l, receipt_msg_t m, const worst_t *w)
{
    const char *args[RECEIPT_ARGS_MAX];
    for (size_t i = 0; i < ARGS[m].n; i++)
        args[i] = arg_of(w, ARGS[m].kind[i]);
    char out[RECEIPT_TEXT_BYTES_MAX + 8], whole[1024];
    memset(out, 0x55, sizeof out);
    size_t full = receipt_render(l, m, args, ARGS[m].n, out, RECEIPT_TEXT_BYTES_MAX);
    size_t whole_len = receipt_render(l, m, args, ARGS[m].n, whole, sizeof whole);
    size_t len = strlen(out);
    EXPECT_EQ("the whole length does not depend on the buffer", whole_len, full);
    EXPECT_EQ("the whole text rendered", full, strlen(whole));
    EXPECT_TRUE("fits a receipt", len < RECEIPT_TEXT_BYTES_MAX);
    EXPECT_EQ("nothing written past the buffer", 0x55, (unsigned char)out[RECEIPT_TEXT_BYTES_MAX]);
    EXPECT_TRUE("a prefix of the whole text", memcmp(out, whole, len) == 0);
    EXPECT_TRUE("valid UTF-8 (no character cut)", receipt_utf8_valid(out, len));
    if (full >= RECEIPT_TEXT_BYTES_MAX) /* cut: as much as fits, less at most a character */
        EXPECT_TRUE("cut no earlier than needed", len + 4 > RECEIPT_TEXT_BYTES_MAX - 1);
    return full;
}

/* A big coalition's figures: ten million points less one, 20-byte ids (a till's receipt
 * number with its date), 16-character tiers. */
#define ORDINARY_POINTS_MAX INT64_C(9999999)
#define ORDINARY_ID_LEN 20

static void test_every_message_fits(void **state)
{
    (void)state;
    worst_t w;
    size_t cut_int64 = 0, cut_points_max = 0, longest_ordinary = 0, too_long = 0;
    for (int l = 0; l < RECEIPT_LOCALES; l++)
        for (int m = 0; m < RECEIPT_MSGS; m++) {
            receipt_locale_t loc = (receipt_locale_t)l;
            /* The extremes: cut where need be, always safely (render_checked). */
            worst_args(loc, INT64_MIN, TXN_ID_LEN_MAX, &w);
            cut_int64 += render_checked(loc, (receipt_msg_t)m, &w) >= RECEIPT_TEXT_BYTES_MAX;
            worst_args(loc, POINTS_MAX, TXN_ID_LEN_MAX, &w);
            cut_points_max += render_checked(loc, (receipt_msg_t)m, &w) >= RECEIPT_TEXT_BYTES_MAX;
            /* Ordinary figures: never cut, but for texts that quote a whole other text. */
            worst_args(loc, ORDINARY_POINTS_MAX, ORDINARY_ID_LEN, &w);
            size_t full = render_checked(loc, (receipt_msg_t)m, &w);
            if (ARGS[m].n > 0 && ARGS[m].kind[ARGS[m].n - 1] == A_TEXT)
                continue;
            if (full >= RECEIPT_TEXT_BYTES_MAX && ++too_long > 0)
                print_message("%s message %d needs %zu bytes with %lld points and %d-byte ids; a "
                              "receipt has %d\n",
                              receipt_locale_code(loc), m, full, (long long)ORDINARY_POINTS_MAX,
                              ORDINARY_ID_LEN, RECEIPT_TEXT_BYTES_MAX - 1);
            longest_ordinary = full > longest_ordinary ? full : longest_ordinary;
        }
    print_message("%d messages x %d locales: cut safely at INT64 and 64-byte ids: %zu, at "
                  "POINTS_MAX and 64-byte ids: %zu; with ordinary figures the longest needs "
                  "%zu of %d bytes\n",
                  RECEIPT_MSGS, RECEIPT_LOCALES, cut_int64, cut_points_max, longest_ordinary,
                  RECEIPT_TEXT_BYTES_MAX - 1);
    EXPECT_EQ("messages cut with ordinary figures", 0, too_long);
}

/* The agent's 91, "Declined 91: <cause>; nothing applied (card note)", whole in every
 * locale with the longer cause; English as the agent always wrote it. */
static void test_agent_unavailable_fits(void **state)
{
    (void)state;
    for (int l = 0; l < RECEIPT_LOCALES; l++) {
        worst_t w;
        worst_args((receipt_locale_t)l, 0, 0, &w);
        char reason[RECEIPT_TEXT_BYTES_MAX], text[RECEIPT_TEXT_BYTES_MAX];
        const char *args[] = {w.cause, w.note};
        receipt_render((receipt_locale_t)l, MSG_AGENT_NOT_APPLIED, args, 2, reason, sizeof reason);
        const char *d[] = {"91", reason};
        size_t full = receipt_render((receipt_locale_t)l, MSG_DECLINED, d, 2, text, sizeof text);
        if (full >= RECEIPT_TEXT_BYTES_MAX)
            fail_msg("%s 91 needs %zu bytes: %s", receipt_locale_code((receipt_locale_t)l), full,
                     text);
        EXPECT_TRUE("valid UTF-8", receipt_utf8_valid(text, strlen(text)));
        if (l == RECEIPT_EN)
            EXPECT_STR("en 91",
                       "Declined 91: the clearinghouse refused this agent's key (ask "
                       "the operator); nothing applied (card-linked earns are not "
                       "taken offline)",
                       text);
    }
}

static void test_utf8_cut(void **state)
{
    (void)state;
    const char *greek = "αβγ"; /* 6 bytes, 2 a letter */
    EXPECT_EQ("fits", 6, receipt_utf8_cut(greek, 6, 10));
    EXPECT_EQ("exact", 6, receipt_utf8_cut(greek, 6, 6));
    EXPECT_EQ("mid letter", 4, receipt_utf8_cut(greek, 6, 5));
    EXPECT_EQ("mid first letter", 0, receipt_utf8_cut(greek, 6, 1));
    const char *nbsp = "1" NB "234"; /* 1, then 2 bytes, then 234 */
    EXPECT_EQ("before the no-break space", 1, receipt_utf8_cut(nbsp, 6, 2));
    EXPECT_EQ("after it", 3, receipt_utf8_cut(nbsp, 6, 3));
    char out[4];
    size_t full = receipt_render(RECEIPT_EL, MSG_ENROLL, NULL, 0, out, sizeof out);
    EXPECT_STR("three bytes of Greek hold one letter", "Τ", out);
    EXPECT_EQ("the whole length", strlen("Το μέλος  εγγράφηκε"), full);
    char one[1];
    receipt_render(RECEIPT_CS, MSG_BALANCE, NULL, 0, one, sizeof one);
    EXPECT_EQ("a one-byte buffer holds the NUL", 0, one[0]);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    EXPECT_TRUE("ascii", receipt_utf8_valid("abc", 3));
    EXPECT_TRUE("greek", receipt_utf8_valid("Υπόλοιπο", strlen("Υπόλοιπο")));
    EXPECT_TRUE("empty", receipt_utf8_valid("", 0));
    const char *bad[] = {"\xce",
                         "\x80",
                         "\xc0\x80",
                         "\xc1\xbf",
                         "\xe0\x80\x80",
                         "\xed\xa0\x80",
                         "\xf0\x80\x80\x80",
                         "\xf4\x90\x80\x80",
                         "\xf5\x80\x80\x80",
                         "a\xce"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_FALSE("an invalid sequence", receipt_utf8_valid(bad[i], strlen(bad[i])));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_int),
        cmocka_unit_test(test_english_points_unchanged),
        cmocka_unit_test(test_format_money),
        cmocka_unit_test(test_locale_codes),
        cmocka_unit_test(test_catalogue_complete),
        cmocka_unit_test(test_english_bytes),
        cmocka_unit_test(test_localized_examples),
        cmocka_unit_test(test_every_message_fits),
        cmocka_unit_test(test_agent_unavailable_fits),
        cmocka_unit_test(test_utf8_cut),
        cmocka_unit_test(test_utf8_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
