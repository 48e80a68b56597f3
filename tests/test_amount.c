/* Unit tests for common/amount: parsing money and rates, formatting, the round-down
 * points rule and the cumulative share that keeps partial refunds exact. Every check
 * names what it expected and what came back. */
#include "amount.h"
#include "errors.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <string.h>

/* Parse `text` and expect success with `expected` minor units. */
static void expect_minor(const char *text, int exponent, int64_t expected)
{
    int64_t got = -12345;
    int rc = amount_parse_minor(text, exponent, &got);
    if (rc != CL_OK)
        fail_msg("amount_parse_minor(\"%s\", %d): expected CL_OK, got %d (%s)", text, exponent, rc,
                 cl_strerror(rc));
    EXPECT_EQ(text, expected, got);
}

/* Parse `text` and expect the error `expected_rc`, with the output left untouched. */
static void expect_minor_error(const char *text, int exponent, int expected_rc)
{
    int64_t got = -12345;
    int rc = amount_parse_minor(text, exponent, &got);
    if (rc != expected_rc)
        fail_msg("amount_parse_minor(\"%s\", %d): expected %s, got %d (%s)", text, exponent,
                 cl_strerror(expected_rc), rc, cl_strerror(rc));
    EXPECT_EQ("output untouched on error", -12345, got);
}

static void expect_rate(const char *text, int64_t expected)
{
    int64_t got = -1;
    int rc = amount_parse_rate_milli(text, &got);
    if (rc != CL_OK)
        fail_msg("amount_parse_rate_milli(\"%s\"): expected CL_OK, got %d (%s)", text, rc,
                 cl_strerror(rc));
    EXPECT_EQ(text, expected, got);
}

static void expect_rate_error(const char *text, int expected_rc)
{
    int64_t got = -1;
    int rc = amount_parse_rate_milli(text, &got);
    if (rc != expected_rc)
        fail_msg("amount_parse_rate_milli(\"%s\"): expected %s, got %d (%s)", text,
                 cl_strerror(expected_rc), rc, cl_strerror(rc));
}

static void expect_format_minor(int64_t minor, int exponent, const char *expected)
{
    char buf[AMOUNT_TEXT_BYTES];
    memset(buf, 'x', sizeof buf);
    amount_format_minor(minor, exponent, buf, sizeof buf);
    EXPECT_STR("amount_format_minor", expected, buf);
}

static void expect_format_points(int64_t points, const char *expected)
{
    char buf[AMOUNT_TEXT_BYTES];
    memset(buf, 'x', sizeof buf);
    amount_format_points(points, buf, sizeof buf);
    EXPECT_STR("amount_format_points", expected, buf);
}

static void expect_points(int64_t amount_minor, int exponent, int64_t rate_milli, int64_t expected)
{
    int64_t got = -1;
    int rc = amount_points_for(amount_minor, exponent, rate_milli, &got);
    if (rc != CL_OK)
        fail_msg("amount_points_for(%lld, %d, %lld): expected CL_OK, got %d (%s)",
                 (long long)amount_minor, exponent, (long long)rate_milli, rc, cl_strerror(rc));
    EXPECT_EQ("points", expected, got);
}

static void expect_points_error(int64_t amount_minor, int exponent, int64_t rate_milli,
                                int expected_rc)
{
    int64_t got = -1;
    int rc = amount_points_for(amount_minor, exponent, rate_milli, &got);
    if (rc != expected_rc)
        fail_msg("amount_points_for(%lld, %d, %lld): expected %s, got %d (%s)",
                 (long long)amount_minor, exponent, (long long)rate_milli, cl_strerror(expected_rc),
                 rc, cl_strerror(rc));
    EXPECT_EQ("output untouched on error", -1, got);
}

/* Reverse `total` points in the given partial amounts; return what was reversed in all. */
static int64_t reversed_by_parts(int64_t total, int64_t whole, const int64_t *parts, size_t n)
{
    int64_t cumulative = 0, reversed = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        cumulative += parts[i];
        int64_t share = amount_share(total, cumulative, whole);
        if (share < reversed)
            fail_msg("cumulative share fell from %lld to %lld at part %zu", (long long)reversed,
                     (long long)share, i);
        sum += share - reversed;
        reversed = share;
    }
    return sum;
}

/* ---- amount_parse_minor ------------------------------------------------------------ */

static void parse_minor_accepts_decimal_forms(void **state)
{
    (void)state;
    expect_minor("12.34", 2, 1234);
    expect_minor("12", 2, 1200);
    expect_minor("0.5", 2, 50);
    expect_minor("0.01", 2, 1);
    expect_minor("007.10", 2, 710);
    expect_minor("1.234", 3, 1234);
}

static void parse_minor_rejects_bad_syntax(void **state)
{
    (void)state;
    const char *bad[] = {"",   ".",  "1.", "1.234", "-1",  "1e3",
                         " 1", "1 ", "+1", "1.2.3", "1,5", "12a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_minor_error(bad[i], 2, CL_ERR_INVALID);
    expect_minor_error(NULL, 2, CL_ERR_INVALID);
    expect_minor_error("1", -1, CL_ERR_INVALID);
}

static void parse_minor_limit_is_amount_minor_max(void **state)
{
    (void)state;
    expect_minor("10000000000.00", 2, AMOUNT_MINOR_MAX);
    expect_minor_error("10000000000.01", 2, CL_ERR_OVERFLOW);
    expect_minor_error("10000000001", 2, CL_ERR_OVERFLOW);
    expect_minor_error("99999999999999999999999", 2, CL_ERR_OVERFLOW);
    expect_minor_error("9223372036854775807", 2, CL_ERR_OVERFLOW);
}

static void parse_minor_exponent_zero_takes_whole_units_only(void **state)
{
    (void)state;
    expect_minor("100", 0, 100);
    expect_minor("0", 0, 0);
    expect_minor_error("1.5", 0, CL_ERR_INVALID);
    expect_minor_error("1.", 0, CL_ERR_INVALID);
    expect_minor_error("1.0", 0, CL_ERR_INVALID);
    expect_minor("1000000000000", 0, AMOUNT_MINOR_MAX);
    expect_minor_error("1000000000001", 0, CL_ERR_OVERFLOW);
}

/* ---- amount_parse_rate_milli ------------------------------------------------------- */

static void parse_rate_scales_to_thousandths(void **state)
{
    (void)state;
    expect_rate("2", 2000);
    expect_rate("1.5", 1500);
    expect_rate("0.001", 1);
    expect_rate("12.345", 12345);
    expect_rate("1000", EARN_RATE_MILLI_MAX);
}

static void parse_rate_rejects_bad_and_too_large(void **state)
{
    (void)state;
    expect_rate_error("", CL_ERR_INVALID);
    expect_rate_error("1.2345", CL_ERR_INVALID);
    expect_rate_error("-1", CL_ERR_INVALID);
    expect_rate_error("1.", CL_ERR_INVALID);
    expect_rate_error("1000.001", CL_ERR_OVERFLOW);
    expect_rate_error("1001", CL_ERR_OVERFLOW);
}

/* ---- amount_format_minor ----------------------------------------------------------- */

static void format_minor_places_the_point(void **state)
{
    (void)state;
    expect_format_minor(1234, 2, "12.34");
    expect_format_minor(5, 2, "0.05");
    expect_format_minor(0, 2, "0.00");
    expect_format_minor(-1234, 2, "-12.34");
    expect_format_minor(-5, 2, "-0.05");
}

static void format_minor_exponent_zero_and_three(void **state)
{
    (void)state;
    expect_format_minor(100, 0, "100");
    expect_format_minor(-100, 0, "-100");
    expect_format_minor(1234, 3, "1.234");
    expect_format_minor(5, 3, "0.005");
    expect_format_minor(-1500, 3, "-1.500");
}

static void format_minor_int64_extremes(void **state)
{
    (void)state;
    expect_format_minor(INT64_MAX, 2, "92233720368547758.07");
    expect_format_minor(INT64_MIN, 2, "-92233720368547758.08");
    expect_format_minor(INT64_MIN, 0, "-9223372036854775808");
}

/* ---- amount_points_for ------------------------------------------------------------- */

static void points_for_rounds_down(void **state)
{
    (void)state;
    expect_points(1234, 2, 2000, 24); /* 12.34 EUR at 2.000 = 24.68 */
    expect_points(101, 2, 1500, 1);   /* 1.01 EUR at 1.500 = 1.515 */
    expect_points(66, 2, 1500, 0);    /* 0.66 EUR at 1.500 = 0.99 */
    expect_points(67, 2, 1500, 1);    /* 0.67 EUR at 1.500 = 1.005 */
    expect_points(100, 0, 1500, 150); /* 100 JPY at 1.500 */
    expect_points(1001, 3, 1000, 1);  /* 1.001 KWD at 1.000 */
    expect_points(0, 2, 2000, 0);
}

static void points_for_is_exact_beyond_int64_products(void **state)
{
    (void)state;
    /* amount * rate overflows int64 here; the 128-bit intermediate keeps it exact. */
    expect_points(INT64_MAX / 2, 2, 300, INT64_C(13835058055282163));
    expect_points(INT64_MAX, 0, 999, INT64_C(9214148664817921031));
    expect_points(INT64_MAX, 0, 1000, INT64_MAX);
    expect_points(INT64_MAX, 2, 100000, INT64_MAX);
    expect_points(AMOUNT_MINOR_MAX, 0, EARN_RATE_MILLI_MAX, INT64_C(1000000000000000));
}

static void points_for_overflow_is_an_error(void **state)
{
    (void)state;
    expect_points_error(INT64_MAX, 0, 1001, CL_ERR_OVERFLOW);
    expect_points_error(INT64_MAX, 0, INT64_MAX, CL_ERR_OVERFLOW);
    expect_points_error(INT64_MAX / 2, 0, 2001, CL_ERR_OVERFLOW);
}

static void points_for_rejects_negative_inputs(void **state)
{
    (void)state;
    expect_points_error(-1, 2, 1000, CL_ERR_INVALID);
    expect_points_error(100, 2, -1, CL_ERR_INVALID);
    expect_points_error(100, -1, 1000, CL_ERR_INVALID);
}

/* ---- amount_share ------------------------------------------------------------------ */

static void share_edges(void **state)
{
    (void)state;
    EXPECT_EQ("share of nothing", 0, amount_share(7, 0, 101));
    EXPECT_EQ("share of all", 7, amount_share(7, 101, 101));
    EXPECT_EQ("share past all is capped", 7, amount_share(7, 150, 101));
    EXPECT_EQ("zero whole", 0, amount_share(7, 5, 0));
    EXPECT_EQ("half of 1 point rounds down", 0, amount_share(1, 50, 101));
    EXPECT_EQ("floor(7*60/101)", 4, amount_share(7, 60, 101));
    EXPECT_EQ("exact in 128 bits", INT64_MAX - 1,
              amount_share(INT64_MAX, INT64_MAX - 1, INT64_MAX));
}

static void share_differences_sum_to_total(void **state)
{
    (void)state;
    const int64_t halves[] = {50, 51};
    EXPECT_EQ("1 point over 0.50 + 0.51", 1, reversed_by_parts(1, 101, halves, 2));
    const int64_t four[] = {10, 20, 30, 41};
    EXPECT_EQ("7 points over four parts", 7, reversed_by_parts(7, 101, four, 4));
    const int64_t pennies[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    EXPECT_EQ("3 points over 20 pennies", 3, reversed_by_parts(3, 20, pennies, 20));
    const int64_t thirds[] = {333, 333, 334};
    EXPECT_EQ("1000 points over thirds", 1000, reversed_by_parts(1000, 1000, thirds, 3));
    const int64_t big[] = {AMOUNT_MINOR_MAX / 3, AMOUNT_MINOR_MAX / 3,
                           AMOUNT_MINOR_MAX - 2 * (AMOUNT_MINOR_MAX / 3)};
    EXPECT_EQ("10^15 points over big thirds", INT64_C(1000000000000000),
              reversed_by_parts(INT64_C(1000000000000000), AMOUNT_MINOR_MAX, big, 3));
}

/* ---- amount_format_points ---------------------------------------------------------- */

static void format_points_groups_thousands(void **state)
{
    (void)state;
    expect_format_points(1240, "1,240");
    expect_format_points(0, "0");
    expect_format_points(999, "999");
    expect_format_points(1000, "1,000");
    expect_format_points(-1000, "-1,000");
    expect_format_points(-12, "-12");
    expect_format_points(1234567, "1,234,567");
}

static void format_points_int64_extremes(void **state)
{
    (void)state;
    expect_format_points(INT64_MAX, "9,223,372,036,854,775,807");
    expect_format_points(INT64_MIN, "-9,223,372,036,854,775,808");
}

static void format_points_truncates_to_buffer(void **state)
{
    (void)state;
    char buf[4];
    amount_format_points(1234567, buf, sizeof buf);
    EXPECT_STR("truncated to 3 chars", "1,2", buf);
}

/* ---- amount_currency_exponent ------------------------------------------------------ */

static void currency_exponent_known_and_unknown(void **state)
{
    (void)state;
    EXPECT_EQ("EUR", 2, amount_currency_exponent("EUR"));
    EXPECT_EQ("JPY", 0, amount_currency_exponent("JPY"));
    EXPECT_EQ("KWD", 3, amount_currency_exponent("KWD"));
    EXPECT_EQ("USD", 2, amount_currency_exponent("USD"));
    EXPECT_EQ("eur", -1, amount_currency_exponent("eur"));
    EXPECT_EQ("EURO", -1, amount_currency_exponent("EURO"));
    EXPECT_EQ("EU", -1, amount_currency_exponent("EU"));
    EXPECT_EQ("empty", -1, amount_currency_exponent(""));
    EXPECT_EQ("XXX", -1, amount_currency_exponent("XXX"));
    EXPECT_EQ("NULL", -1, amount_currency_exponent(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_minor_accepts_decimal_forms),
        cmocka_unit_test(parse_minor_rejects_bad_syntax),
        cmocka_unit_test(parse_minor_limit_is_amount_minor_max),
        cmocka_unit_test(parse_minor_exponent_zero_takes_whole_units_only),
        cmocka_unit_test(parse_rate_scales_to_thousandths),
        cmocka_unit_test(parse_rate_rejects_bad_and_too_large),
        cmocka_unit_test(format_minor_places_the_point),
        cmocka_unit_test(format_minor_exponent_zero_and_three),
        cmocka_unit_test(format_minor_int64_extremes),
        cmocka_unit_test(points_for_rounds_down),
        cmocka_unit_test(points_for_is_exact_beyond_int64_products),
        cmocka_unit_test(points_for_overflow_is_an_error),
        cmocka_unit_test(points_for_rejects_negative_inputs),
        cmocka_unit_test(share_edges),
        cmocka_unit_test(share_differences_sum_to_total),
        cmocka_unit_test(format_points_groups_thousands),
        cmocka_unit_test(format_points_int64_extremes),
        cmocka_unit_test(format_points_truncates_to_buffer),
        cmocka_unit_test(currency_exponent_known_and_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
