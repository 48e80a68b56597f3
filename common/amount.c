/* Integer money and points arithmetic; see amount.h for rounding rules. */
#include "amount.h"

#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* 128-bit intermediates keep multiply-then-divide exact for any int64 operands. */
__extension__ typedef __int128 i128_t;

struct currency {
    const char code[CURRENCY_CODE_LEN + 1];
    int exponent;
};

/* ISO 4217 minor-unit exponents of the currencies partners contract in. */
static const struct currency currencies[] = {
    {"AUD", 2}, {"BHD", 3}, {"BRL", 2}, {"CAD", 2}, {"CHF", 2}, {"CNY", 2}, {"CZK", 2},
    {"DKK", 2}, {"EUR", 2}, {"GBP", 2}, {"HKD", 2}, {"HUF", 2}, {"INR", 2}, {"JPY", 0},
    {"KRW", 0}, {"KWD", 3}, {"MXN", 2}, {"NOK", 2}, {"NZD", 2}, {"PLN", 2}, {"RUB", 2},
    {"SEK", 2}, {"SGD", 2}, {"TRY", 2}, {"USD", 2}, {"ZAR", 2},
};

int amount_currency_exponent(const char *code)
{
    if (code == NULL || strnlen(code, CURRENCY_CODE_LEN + 1) != CURRENCY_CODE_LEN)
        return -1;
    for (size_t i = 0; i < sizeof currencies / sizeof currencies[0]; i++) {
        if (memcmp(currencies[i].code, code, CURRENCY_CODE_LEN) == 0)
            return currencies[i].exponent;
    }
    return -1;
}

static int64_t pow10_i64(int exponent)
{
    int64_t p = 1;
    for (int i = 0; i < exponent; i++)
        p *= 10;
    return p;
}

/* Shared parser for "<digits>[.<digits>]" scaled by 10^decimals_max. */
static int parse_scaled(const char *text, int decimals_max, int64_t limit, int64_t *out)
{
    if (text == NULL || *text == '\0')
        return CL_ERR_INVALID;
    int64_t value = 0;
    int decimals = -1; /* -1: no point seen yet */
    int digits = 0;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '.' && decimals < 0) {
            decimals = 0;
            continue;
        }
        if (*p < '0' || *p > '9')
            return CL_ERR_INVALID;
        if (decimals >= 0 && ++decimals > decimals_max)
            return CL_ERR_INVALID;
        if (__builtin_mul_overflow(value, 10, &value) ||
            __builtin_add_overflow(value, *p - '0', &value))
            return CL_ERR_OVERFLOW;
        digits++;
    }
    if (digits == 0 || decimals == 0)
        return CL_ERR_INVALID;
    int scale = decimals_max - (decimals < 0 ? 0 : decimals);
    if (__builtin_mul_overflow(value, pow10_i64(scale), &value) || value > limit)
        return CL_ERR_OVERFLOW;
    *out = value;
    return CL_OK;
}

int amount_parse_minor(const char *text, int exponent, int64_t *minor_out)
{
    if (exponent < 0 || exponent > AMOUNT_EXPONENT_MAX)
        return CL_ERR_INVALID;
    return parse_scaled(text, exponent, AMOUNT_MINOR_MAX, minor_out);
}

int amount_parse_rate_milli(const char *text, int64_t *rate_milli_out)
{
    return parse_scaled(text, 3, EARN_RATE_MILLI_MAX, rate_milli_out);
}

void amount_format_minor(int64_t minor, int exponent, char *buf, size_t size)
{
    const char *sign = minor < 0 ? "-" : "";
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    if (exponent <= 0 || exponent > AMOUNT_EXPONENT_MAX) {
        snprintf(buf, size, "%s%llu", sign, (unsigned long long)mag);
        return;
    }
    uint64_t p = (uint64_t)pow10_i64(exponent);
    uint64_t frac = mag % p;
    char digits[AMOUNT_TEXT_BYTES];
    int n = exponent < (int)sizeof digits - 1 ? exponent : (int)sizeof digits - 1;
    digits[n] = '\0';
    for (int i = n - 1; i >= 0; i--) {
        digits[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    snprintf(buf, size, "%s%llu.%s", sign, (unsigned long long)(mag / p), digits);
}

int amount_points_for(int64_t amount_minor, int exponent, int64_t rate_milli, int64_t *points_out)
{
    if (amount_minor < 0 || rate_milli < 0 || exponent < 0 || exponent > AMOUNT_EXPONENT_MAX)
        return CL_ERR_INVALID;
    i128_t num = (i128_t)amount_minor * rate_milli;
    i128_t den = (i128_t)EARN_RATE_SCALE * pow10_i64(exponent);
    i128_t points = num / den;
    if (points > INT64_MAX)
        return CL_ERR_OVERFLOW;
    assert(den > 0 && points >= 0); /* rounded down, never negative */
    *points_out = (int64_t)points;
    return CL_OK;
}

int64_t amount_share(int64_t total, int64_t part, int64_t whole)
{
    if (whole <= 0 || part <= 0)
        return 0;
    if (part >= whole)
        return total;
    int64_t share = (int64_t)(((i128_t)total * part) / whole);
    assert(total < 0 || (share >= 0 && share <= total)); /* 0 < part < whole */
    return share;
}

int64_t amount_price(int64_t points, int64_t per_mille)
{
    assert(points >= 0 && points <= POINTS_MAX);
    assert(per_mille >= 0 && per_mille <= INT64_C(1000000));
    int64_t money = (int64_t)(((i128_t)points * per_mille + 500) / 1000);
    assert(money >= 0 && money <= POINTS_MAX * INT64_C(1000));
    return money;
}

void amount_format_points(int64_t points, char *buf, size_t size)
{
    char digits[AMOUNT_TEXT_BYTES];
    uint64_t mag = points < 0 ? (uint64_t)0 - (uint64_t)points : (uint64_t)points;
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)mag);
    char out[AMOUNT_TEXT_BYTES];
    size_t o = 0;
    if (points < 0)
        out[o++] = '-';
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
    snprintf(buf, size, "%s", out);
}
