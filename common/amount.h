/* Money and points arithmetic. Money is int64 minor units of an ISO 4217 currency;
 * points are int64. No floating point. Every conversion rounds down (toward zero for
 * the non-negative values used here) and says so. Overflow is an error, never a wrap. */
#ifndef COALITION_AMOUNT_H
#define COALITION_AMOUNT_H

#include <stddef.h>
#include <stdint.h>

/* Largest money amount one request may carry: 10^12 minor units (10 billion EUR). */
#define AMOUNT_MINOR_MAX INT64_C(1000000000000)
/* Largest points one request may carry. */
#define POINTS_MAX INT64_C(1000000000000)
/* Earn rates are thousandths of a point per major unit; at most 1000 points per unit. */
#define EARN_RATE_MILLI_MAX INT64_C(1000000)
#define EARN_RATE_SCALE 1000
/* Minor-unit exponents handled (ISO 4217 uses 0 to 4); 10^18 still fits in int64. */
#define AMOUNT_EXPONENT_MAX 18
#define CURRENCY_CODE_LEN 3
#define CURRENCY_CODE_BYTES (CURRENCY_CODE_LEN + 1)
/* Text buffers big enough for any int64 amount with separators. */
#define AMOUNT_TEXT_BYTES 40

/* Minor-unit exponent of a known currency (EUR 2, JPY 0, KWD 3), or -1 if unknown. */
int amount_currency_exponent(const char *code);

/* Parse "12.34" (digits, optional point, at most `exponent` decimals) into minor units.
 * Returns CL_ERR_INVALID on bad syntax, CL_ERR_OVERFLOW past AMOUNT_MINOR_MAX. */
int amount_parse_minor(const char *text, int exponent, int64_t *minor_out);

/* "1234" with exponent 2 -> "12.34". */
void amount_format_minor(int64_t minor, int exponent, char *buf, size_t size);

/* Parse an earn rate such as "2" or "1.5" (at most 3 decimals) into thousandths. */
int amount_parse_rate_milli(const char *text, int64_t *rate_milli_out);

/* Points earned: floor(amount_minor * rate_milli / (1000 * 10^exponent)).
 * Rounds down: fractions of a point are never credited. */
int amount_points_for(int64_t amount_minor, int exponent, int64_t rate_milli, int64_t *points_out);

/* floor(total * part / whole) for 0 <= part <= whole, exact in 128 bits. Used for the
 * cumulative share of an earn's points reversed by partial refunds: reversing by the
 * difference of cumulative shares makes the shares add up to the total exactly. */
int64_t amount_share(int64_t total, int64_t part, int64_t whole);

/* Money for `points` at `per_mille` minor units per 1,000 points, rounded half up to the
 * minor unit: (points * per_mille + 500) / 1000, exact in 128 bits. 0 <= points <=
 * POINTS_MAX and 0 <= per_mille <= 10^6 keep the result below 2^63. Settlement prices
 * each journal entry so; a reversal's money is the difference of the prices of the
 * cumulative points reversed, so reversing everything gives back exactly the original. */
int64_t amount_price(int64_t points, int64_t per_mille);

/* 1240 -> "1,240". */
void amount_format_points(int64_t points, char *buf, size_t size);

#endif
