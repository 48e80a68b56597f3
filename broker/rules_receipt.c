/* The receipt side of a decision: the partner's locale (from its contract in force) and
 * texts rendered from the catalogue in common/receipt.c. English texts are the bytes
 * the rules wrote before locales: ungrouped figures where they were ungrouped, money as
 * amount_format_minor wrote it. The text is rendered once, when the request is applied,
 * and kept with the reply, so a replay returns it unchanged. */
#include "ledger_internal.h"

#include "errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

_Static_assert(RECEIPT_NUMBER_BYTES <= AMOUNT_TEXT_BYTES,
               "a localized number fits where the rules kept an amount's text");

int rules_locale_of(ledger_t *self, MDB_txn *txn, const char *partner, int64_t at_ms,
                    receipt_locale_t *out)
{
    assert(partner != NULL && out != NULL);
    *out = RECEIPT_EN;
    if (strcmp(partner, OPERATOR_PARTNER_ID) == 0)
        return CL_OK;
    Coalition__Contract *c = NULL;
    int rc = settle_contract_at(self, txn, partner, at_ms, &c);
    if (rc == CL_ERR_NOT_FOUND)
        return CL_OK; /* not a partner (yet): its 03 or 57 is in English */
    if (rc == CL_OK && receipt_locale_parse(c->locale, out) != CL_OK)
        rc = CL_ERR_CORRUPT; /* the rules never record a locale the catalogue lacks */
    coalition__contract__free_unpacked(c, NULL);
    assert(*out >= RECEIPT_EN && *out < RECEIPT_LOCALES);
    return rc;
}

void rules_points_text(const decision_t *d, int64_t points, char buf[AMOUNT_TEXT_BYTES])
{
    if (d->locale == RECEIPT_EN)
        amount_format_points(points, buf, AMOUNT_TEXT_BYTES);
    else
        receipt_format_int(d->locale, points, buf);
}

void rules_figure_text(const decision_t *d, int64_t value, char buf[AMOUNT_TEXT_BYTES])
{
    if (d->locale == RECEIPT_EN)
        snprintf(buf, AMOUNT_TEXT_BYTES, "%" PRId64, value);
    else
        receipt_format_int(d->locale, value, buf);
}

void rules_money_text(const decision_t *d, int64_t minor, int exponent, char buf[AMOUNT_TEXT_BYTES])
{
    if (d->locale == RECEIPT_EN || exponent < 0 || exponent > RECEIPT_MONEY_EXPONENT_MAX)
        amount_format_minor(minor, exponent, buf, AMOUNT_TEXT_BYTES);
    else
        receipt_format_minor(d->locale, minor, exponent, buf);
}

void rules_text(decision_t *d, receipt_msg_t msg, const char *const *args, size_t n_args)
{
    receipt_render(d->locale, msg, args, n_args, d->text, sizeof d->text);
}

void rules_decline_text(receipt_locale_t locale, int code, receipt_msg_t msg,
                        const char *const *args, size_t n_args, char *out, size_t size)
{
    assert(code != RC_APPROVED && code < 100);
    char reason[RECEIPT_TEXT_BYTES_MAX], two[12];
    receipt_render(locale, msg, args, n_args, reason, sizeof reason);
    snprintf(two, sizeof two, "%02d", code);
    const char *a[] = {two, reason};
    receipt_render(locale, MSG_DECLINED, a, 2, out, size);
}

void rules_decline_msg(decision_t *d, int code, receipt_msg_t msg, const char *const *args,
                       size_t n_args)
{
    rules_decline_text(d->locale, code, msg, args, n_args, d->text, sizeof d->text);
    d->code = code;
}

void rules_decline(decision_t *d, int code, const char *fmt, ...)
{
    assert(code != RC_APPROVED);
    d->code = code;
    if (d->locale != RECEIPT_EN) { /* the code's reason: the details stay in English */
        char two[12];
        snprintf(two, sizeof two, "%02d", code);
        const char *a[] = {two, receipt_reason(d->locale, code)};
        rules_text(d, MSG_DECLINED, a, 2);
        return;
    }
    int n = snprintf(d->text, sizeof d->text, "Declined %02d: ", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->text + n, sizeof d->text - (size_t)n, fmt, ap);
    va_end(ap);
}
