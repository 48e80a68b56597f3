/* Receipt texts a till shows, in the partner's language: one catalogue (message ids x
 * locales) and each locale's number formatting. Invariants: a rendered text is valid
 * UTF-8 when its template and arguments are, it always fits the buffer it is given, and
 * a cut never splits a character. English texts are byte for byte the texts the broker
 * wrote before locales existed. */
#ifndef COALITION_RECEIPT_H
#define COALITION_RECEIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Stored by code ("ro") in a partner's contract; an empty code is English. */
typedef enum receipt_locale {
    RECEIPT_EN = 0,
    RECEIPT_RO,
    RECEIPT_CS,
    RECEIPT_EL,
    RECEIPT_SQ,
    RECEIPT_LOCALES /* the count */
} receipt_locale_t;

#define RECEIPT_LOCALE_CODE_LEN_MAX 8 /* the longest code accepted on the wire */
#define RECEIPT_LOCALE_CODE_BYTES (RECEIPT_LOCALE_CODE_LEN_MAX + 1)
/* The locales by code, for error messages: "en, ro, cs, el, sq". */
#define RECEIPT_LOCALES_LIST "en, ro, cs, el, sq"

/* The longest integer: "-9 223 372 036 854 775 808" with 2-byte no-break spaces (33),
 * and money with its decimal separator (one more). */
#define RECEIPT_NUMBER_BYTES 40
_Static_assert(RECEIPT_NUMBER_BYTES >= 1 + 19 + 6 * 2 + 1 + 1,
               "an INT64 with six two-byte group separators, a decimal separator and NUL fits");
/* Arguments one template may take ({0} to {3}). */
#define RECEIPT_ARGS_MAX 4

/* Every text a till or member receipt shows. Each has one template per locale. */
typedef enum receipt_msg {
    MSG_EARN = 0,            /* {0} points {1} bonus detail {2} balance */
    MSG_EARN_BONUS,          /* {0} base {1} bonus {2} ", TIER" or "" */
    MSG_EARN_UNCLAIMED,      /* {0} points {1} bonus detail */
    MSG_EARN_PENDING,        /* {0} points {1} bonus detail {2} balance */
    MSG_BURN,                /* {0} points {1} balance */
    MSG_BURN_PARTIAL,        /* {0} points {1} requested {2} balance */
    MSG_BALANCE,             /* {0} balance */
    MSG_BALANCE_SPLIT,       /* {0} balance {1} available {2} pending */
    MSG_CARD_UNCLAIMED,      /* {0} points {1} masked card */
    MSG_REFUND_EARN,         /* {0} original txn {1} points {2} balance */
    MSG_REFUND_BURN,         /* the same */
    MSG_VOID_EARN,           /* the same */
    MSG_VOID_BURN,           /* the same */
    MSG_ENROLL,              /* {0} member */
    MSG_REVERSAL_AHEAD,      /* {0} "void" or "refund" {1} original txn */
    MSG_REVERSED_SINCE,      /* {0} the original text */
    MSG_DECLINED,            /* {0} two-digit code {1} reason */
    MSG_R_UNKNOWN_MEMBER,    /* {0} member */
    MSG_R_FROZEN,            /* {0} member */
    MSG_R_INSUFFICIENT,      /* {0} balance {1} requested */
    MSG_R_INSUFFICIENT_PEND, /* {0} available {1} pending {2} requested */
    MSG_R_NOT_FOUND,         /* {0} original txn */
    MSG_R_ALREADY_REVERSED,  /* {0} original txn {1} ledger seq */
    MSG_R_VOIDED,            /* {0} original txn */
    MSG_R_FULLY_REFUNDED,    /* {0} original txn */
    MSG_R_ENROLLED,          /* {0} member */
    MSG_R_REFUND_MONEY,      /* {0} amount {1} currency {2} amount left {3} currency */
    MSG_R_REFUND_POINTS,     /* {0} points {1} points left */
    MSG_R_REVERSED_BEFORE,   /* {0} txn {1} ledger seq */
    MSG_R_DUPLICATE,         /* {0} txn */
    /* The agent's own texts, when the broker cannot answer in time. */
    MSG_AGENT_OFFLINE,      /* {0} cause */
    MSG_AGENT_PENDING_CARD, /* {0} cause */
    MSG_AGENT_NOT_APPLIED,  /* {0} cause {1} MSG_AGENT_CARD_ONLINE or "" (a 91's reason) */
    MSG_AGENT_CARD_ONLINE,  /* (no arguments) */
    MSG_CAUSE_UNREACHABLE,  /* (no arguments) */
    MSG_CAUSE_KEY_REFUSED,  /* (no arguments) */
    RECEIPT_MSGS            /* the count */
} receipt_msg_t;

/* The locale of a code: "" is English; CL_ERR_INVALID for a code not in the catalogue. */
int receipt_locale_parse(const char *code, receipt_locale_t *out);
const char *receipt_locale_code(receipt_locale_t locale);

/* An integer grouped by thousands the locale's way (CLDR). */
void receipt_format_int(receipt_locale_t locale, int64_t value, char buf[RECEIPT_NUMBER_BYTES]);
/* Money: minor units with `exponent` fraction digits, grouped, with the locale's decimal
 * separator. */
#define RECEIPT_MONEY_EXPONENT_MAX 4
void receipt_format_minor(receipt_locale_t locale, int64_t minor, int exponent,
                          char buf[RECEIPT_NUMBER_BYTES]);

/* The template with {i} replaced by args[i] into out (NUL-terminated, cut at a UTF-8
 * character boundary to fit). Returns the length the whole text would have had, so a
 * caller or test can tell a cut happened (result >= size). */
size_t receipt_render(receipt_locale_t locale, receipt_msg_t msg, const char *const *args,
                      size_t n_args, char *out, size_t size);
/* The template itself (for tests and reviews of the catalogue). */
const char *receipt_template(receipt_locale_t locale, receipt_msg_t msg);
/* A short reason for a response code, in the locale (a generic decline reason). */
const char *receipt_reason(receipt_locale_t locale, int code);
/* "Declined NN: " in the locale into out (a decline's prefix); returns its length. */
size_t receipt_decline_prefix(receipt_locale_t locale, int code, char *out, size_t size);

/* The longest prefix of s[0..len) of at most max bytes that does not split a UTF-8
 * sequence. */
size_t receipt_utf8_cut(const char *s, size_t len, size_t max);
bool receipt_utf8_valid(const char *s, size_t len);

#endif
