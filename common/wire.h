/* Envelope and Authorization helpers shared by broker, agent and tills: decoding with
 * strict limits, request validation that needs no ledger, the idempotency hash, and the
 * response-code vocabulary. Decoded strings are NUL-terminated by protobuf-c; decoding
 * rejects any message whose canonical re-encoding differs in size (embedded NULs,
 * non-minimal varints), so a string's strlen is its wire length. */
#ifndef COALITION_WIRE_H
#define COALITION_WIRE_H

#include "coalition.pb-c.h"
#include "receipt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION 1u
#define WIRE_MESSAGE_BYTES_MAX 2048
#define WIRE_HASH_BYTES 32
#define TXN_ID_LEN_MAX 64
#define PARTNER_ID_LEN_MAX 32
#define TERMINAL_ID_LEN_MAX 32
#define SITE_ID_LEN_MAX 32
#define MEMBER_ID_LEN_MAX 64
#define BANK_REF_LEN_MAX 64
/* Member ids the ledger makes itself (a card's unclaimed account) start with this;
 * requests may not name them. */
#define WIRE_RESERVED_MEMBER_PREFIX '~'
/* A card's unclaimed account: "~u" + 32 hex digits of its keyed hash + "." + the seq of
 * its first earn (a new account after each lapse). */
#define WIRE_UNCLAIMED_PREFIX "~u"
/* A member a bank's enrolment made for a customer reference with no member id: "~m" + 24
 * hex digits of the hash of bank and reference. Known by its cards only: no request can
 * name it (nor make it first). */
#define WIRE_BANK_MEMBER_PREFIX "~m"
/* The claim period of unclaimed card points (CardSettingsRequest). */
#define UNCLAIMED_PERIOD_SECONDS_DEFAULT (INT64_C(90) * 86400)
#define UNCLAIMED_PERIOD_SECONDS_MAX (INT64_C(3660) * 86400)
_Static_assert(UNCLAIMED_PERIOD_SECONDS_DEFAULT <= UNCLAIMED_PERIOD_SECONDS_MAX,
               "the default is settable");
/* Points lifecycle (ExpiryPolicyRequest, ContractSetRequest's return period). */
#define EXPIRY_TERM_SECONDS_MAX (INT64_C(3660) * 86400)
#define EXPIRY_INACTIVITY_SECONDS_MAX (INT64_C(3660) * 86400)
#define RETURN_PERIOD_SECONDS_MAX (INT64_C(366) * 86400)
_Static_assert(RETURN_PERIOD_SECONDS_MAX < EXPIRY_TERM_SECONDS_MAX,
               "a return period can end before a term");
/* Tiers and earning rules (TierSettingsRequest, RuleAddRequest). */
#define TIERS_MAX 8
#define TIER_NAME_LEN_MAX 16
#define MULTIPLIER_MILLI_MIN 1000  /* x1: a tier with no bonus */
#define MULTIPLIER_MILLI_MAX 10000 /* x10 */
#define TIER_THRESHOLD_POINTS_MAX INT64_C(1000000000000)
_Static_assert(TIER_NAME_LEN_MAX < 32, "a tier name fits a receipt beside the points");
#define AUTH_CODE_LEN 6
#define RECEIPT_TEXT_BYTES_MAX 160
/* The largest packed Authorization: every echoed id is at most its limit, the text at
 * most RECEIPT_TEXT_BYTES_MAX; 640 covers them with their tags and the numbers (at most
 * 11 bytes each with its tag: 256 for code, points, balance, available, pending, seq,
 * flags, window, money, fee and the strings' tags and lengths). */
#define AUTH_BYTES_MAX 640
_Static_assert(TXN_ID_LEN_MAX + SITE_ID_LEN_MAX + MEMBER_ID_LEN_MAX + RECEIPT_TEXT_BYTES_MAX +
                       WIRE_HASH_BYTES + AUTH_CODE_LEN + TIER_NAME_LEN_MAX +
                       RECEIPT_LOCALE_CODE_LEN_MAX + 256 <=
                   AUTH_BYTES_MAX,
               "an Authorization fits AUTH_BYTES_MAX");
_Static_assert(AUTH_BYTES_MAX <= WIRE_MESSAGE_BYTES_MAX, "a reply is never over the request limit");
/* Limits a partner may be given (PartnerLimitsRequest). */
#define VELOCITY_BURNS_PER_MINUTE_MAX 64
#define PARTNER_REQUESTS_PER_SECOND_MAX 1000000
/* Settlement terms (ContractSetRequest, SettlementConfigRequest, PartnerTopupRequest). */
#define PRICE_PER_MILLE_MAX INT64_C(1000000) /* 10,000.00 per 1,000 points, 2 decimals */
#define FEE_MINOR_MAX INT64_C(1000000)
#define NET_CAP_MINOR_MAX INT64_C(1000000000000000)
#define CONTRACT_FROM_MS_MAX INT64_C(253402300799999)   /* 9999-12-31T23:59:59.999Z */
#define SETTLEMENT_PERIOD_SECONDS_MAX INT64_C(31622400) /* 366 days */
/* Automatic close waits at most this long after a window ends; shorter than any period
 * (a calendar month has 28 days or more), so at most two windows are unclosed at once
 * while the broker runs. */
#define SETTLEMENT_GRACE_SECONDS_MAX INT64_C(2419199)
#define SETTLEMENT_GRACE_SECONDS_DEFAULT INT64_C(86400)
_Static_assert(SETTLEMENT_GRACE_SECONDS_DEFAULT <= SETTLEMENT_GRACE_SECONDS_MAX,
               "the default grace is settable");
_Static_assert(SETTLEMENT_GRACE_SECONDS_MAX < 28 * 86400, "grace shorter than the shortest month");
/* Partner id under which operator (admin socket) requests are keyed. No partner may use it. */
#define OPERATOR_PARTNER_ID "operator"
/* Site id of the broker's own operator requests (window closes, lapses, expiries): the
 * admin socket may not use it, so their keys are the broker's alone. */
#define WIRE_BROKER_SITE_ID "broker"
/* Site id of operator requests (coalitionctl, tools on the admin socket). */
#define OPERATOR_SITE_ID "ctl"

typedef Coalition__Envelope envelope_t;
typedef Coalition__Authorization authorization_t;

/* Response codes as plain ints (the enum value is the two-digit code). */
#define RC_APPROVED ((int)COALITION__RESPONSE_CODE__RC_APPROVED)
#define RC_UNKNOWN_PARTNER ((int)COALITION__RESPONSE_CODE__RC_UNKNOWN_PARTNER)
#define RC_DO_NOT_HONOUR ((int)COALITION__RESPONSE_CODE__RC_DO_NOT_HONOUR)
#define RC_PARTIAL ((int)COALITION__RESPONSE_CODE__RC_PARTIAL)
#define RC_INVALID_TRANSACTION ((int)COALITION__RESPONSE_CODE__RC_INVALID_TRANSACTION)
#define RC_INVALID_AMOUNT ((int)COALITION__RESPONSE_CODE__RC_INVALID_AMOUNT)
#define RC_UNKNOWN_MEMBER ((int)COALITION__RESPONSE_CODE__RC_UNKNOWN_MEMBER)
#define RC_ORIGINAL_NOT_FOUND ((int)COALITION__RESPONSE_CODE__RC_ORIGINAL_NOT_FOUND)
#define RC_FORMAT_ERROR ((int)COALITION__RESPONSE_CODE__RC_FORMAT_ERROR)
#define RC_INSUFFICIENT_POINTS ((int)COALITION__RESPONSE_CODE__RC_INSUFFICIENT_POINTS)
#define RC_NOT_PERMITTED ((int)COALITION__RESPONSE_CODE__RC_NOT_PERMITTED)
#define RC_EXCEEDS_LIMIT ((int)COALITION__RESPONSE_CODE__RC_EXCEEDS_LIMIT)
#define RC_FROZEN ((int)COALITION__RESPONSE_CODE__RC_FROZEN)
#define RC_UNAVAILABLE ((int)COALITION__RESPONSE_CODE__RC_UNAVAILABLE)
#define RC_DUPLICATE_KEY ((int)COALITION__RESPONSE_CODE__RC_DUPLICATE_KEY)
#define RC_SYSTEM_ERROR ((int)COALITION__RESPONSE_CODE__RC_SYSTEM_ERROR)

/* 1..len_max printable ASCII bytes without spaces. */
bool wire_id_valid(const char *s, size_t len_max);

/* Txn ids the partner agent makes itself start with this; tills may not use it. Its one
 * kind of request is the safety void of a burn whose tills were told it failed (91),
 * which the ledger lets give back what refunds at another site left of that burn. */
#define WIRE_AGENT_TXN_PREFIX '~'
bool wire_agent_txn(const char *txn_id);

/* The site a refund or void names for its original: its own unless it says otherwise. */
const char *wire_original_site(const envelope_t *env);
/* The original txn id a refund or void names, or NULL for other bodies. */
const char *wire_original_txn(const envelope_t *env);

/* Set the reply's echo of what it answers: the request's site and hash. `hash` may be
 * NULL when the request could not be hashed; both must outlive the reply. */
void wire_auth_echo(authorization_t *auth, const envelope_t *env, const uint8_t *hash);

/* Decode one message; NULL when it is not a well-formed, canonical, bounded Envelope. */
envelope_t *wire_envelope_decode(const void *buf, size_t len);
void wire_envelope_free(envelope_t *env);
authorization_t *wire_auth_decode(const void *buf, size_t len);
void wire_auth_free(authorization_t *auth);

/* Checks that need no ledger. Returns RC_APPROVED if the envelope may go on, otherwise
 * the response code, with a reason in `why`. Admin bodies are accepted only when
 * `from_admin`, partner bodies only when not. */
int wire_validate(const envelope_t *env, bool from_admin, char *why, size_t why_size);

/* Bodies only the operator may send (admin socket). */
bool wire_admin_body(const envelope_t *env);

/* The cards a request carries (0, 1, or 2 for a replacement): `out` points into `env`. */
size_t wire_cards_of(const envelope_t *env, const Coalition__Card *out[2]);
/* Whether any card of the request carries its number; clear them all in place. */
bool wire_has_pan(const envelope_t *env);
void wire_clear_pans(envelope_t *env);

/* SHA-256 of the canonical request with client_time_ms and every card number left out
 * (a card is hashed by its masked form: the broker and an agent that no longer holds the
 * number compute the same hash). */
int wire_request_hash(const envelope_t *env, uint8_t hash[WIRE_HASH_BYTES]);

/* Pack into a fresh malloc'd buffer; NULL on allocation failure. */
uint8_t *wire_pack_envelope(const envelope_t *env, size_t *len_out);
uint8_t *wire_pack_auth(const authorization_t *auth, size_t *len_out);

/* A reply with only the code and text set (declines decided without the ledger).
 * `text` must outlive the reply. */
void wire_auth_decline(authorization_t *auth, const envelope_t *env, int code, char *text);

const char *wire_code_meaning(int code);
const char *wire_body_name(const envelope_t *env);
/* The member a request names, or "" for bodies without one. */
const char *wire_member_of(const envelope_t *env);

#endif
