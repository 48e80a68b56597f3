#define _GNU_SOURCE /* strptime, timegm */
/* coalitionctl's settlement commands: contracts, prepaid top-ups, the settlement
 * configuration and windows. Writes go through the broker's admin socket; listings read
 * the ledger read-only, one short read transaction each. */
#include "ctl.h"

#include "amount.h"
#include "card.h"
#include "errors.h"
#include "json.h"
#include "settle.h"

#include <ctype.h>
#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONTRACTS_SHOWN_MAX 64
#define WINDOWS_PER_SLICE 64

int ctl_parse_time(const char *text, int64_t *ms_out)
{
    if (strcmp(text, "now") == 0) {
        *ms_out = 0; /* the broker records it at the moment it applies the request */
        return CL_OK;
    }
    char *end = NULL;
    if (text[0] == '@') {
        long long ms = strtoll(text + 1, &end, 10);
        if (end == text + 1 || *end != '\0' || ms <= 0 || ms > CONTRACT_FROM_MS_MAX)
            return CL_ERR_INVALID;
        *ms_out = ms;
        return CL_OK;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(text, "%Y-%m-%d", &tm);
    int ms = 0;
    if (rest != NULL && *rest == 'T') {
        rest = strptime(rest + 1, "%H:%M:%S", &tm);
        if (rest != NULL && rest[0] == '.') {
            bool three = isdigit((unsigned char)rest[1]) && isdigit((unsigned char)rest[2]) &&
                         isdigit((unsigned char)rest[3]);
            ms = three ? (rest[1] - '0') * 100 + (rest[2] - '0') * 10 + (rest[3] - '0') : 0;
            rest = three ? rest + 4 : NULL; /* milliseconds: exactly three digits */
        }
        rest = rest != NULL && strcmp(rest, "Z") == 0 ? rest + 1 : NULL;
    }
    if (rest == NULL || *rest != '\0')
        return CL_ERR_INVALID;
    time_t secs = timegm(&tm);
    if (secs <= 0 || (int64_t)secs * 1000 + ms > CONTRACT_FROM_MS_MAX)
        return CL_ERR_INVALID;
    *ms_out = (int64_t)secs * 1000 + ms;
    return CL_OK;
}

static const char *funding_name(int f)
{
    return f == COALITION__FUNDING__FUNDING_PREPAID ? "prepaid" : "postpaid";
}

static const char *model_name(int m)
{
    return m == COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS ? "issuer-pays" : "hub";
}

static const char *state_name(int s)
{
    switch (s) {
    case COALITION__WINDOW_STATE__WINDOW_OPEN: return "open";
    case COALITION__WINDOW_STATE__WINDOW_ENDED: return "ended";
    case COALITION__WINDOW_STATE__WINDOW_CLOSED: return "closed";
    default: return "none";
    }
}

/* The partner's latest contract (the defaults for a new one), read-only. */
static int latest_contract(ctl_t *ctl, const char *partner, settle_contract_t *out)
{
    ledger_t *ledger = NULL;
    settle_contract_t rows[CONTRACTS_SHOWN_MAX];
    size_t n = 0;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return CL_ERR_NOT_FOUND;
    int rc = ledger_contracts(ledger, partner, rows, CONTRACTS_SHOWN_MAX, &n);
    ledger_destroy(&ledger);
    if (rc == CL_OK && n == 0)
        rc = CL_ERR_NOT_FOUND;
    if (rc == CL_OK)
        *out = rows[n - 1];
    if (rc == CL_ERR_NOT_FOUND)
        fprintf(stderr, "coalitionctl: unknown partner %s (no contract)\n", partner);
    return rc;
}

/* Money in major units ("5.00") of `currency` into minor units. */
static int parse_money(const char *what, const char *text, const char *currency, int64_t *out)
{
    int exponent = amount_currency_exponent(currency);
    if (exponent < 0 || amount_parse_minor(text, exponent, out) != CL_OK) {
        fprintf(stderr, "coalitionctl: %s '%s' is not an amount of %s\n", what, text, currency);
        return EXIT_USAGE;
    }
    return 0;
}

enum {
    OPT_FROM = 1,
    OPT_RATE,
    OPT_CUR,
    OPT_ISSUE,
    OPT_REIMB,
    OPT_FEE,
    OPT_FUNDING,
    OPT_RETURN,
    OPT_LOCALE,
    OPT_CAP /* the last */
};

/* Options into the request; what is not given keeps the latest contract's value. */
static int contract_options(int argc, char **argv, Coalition__ContractSetRequest *b,
                            const char **given)
{
    static const struct option longopts[] = {{"from", required_argument, NULL, OPT_FROM},
                                             {"earn-rate", required_argument, NULL, OPT_RATE},
                                             {"currency", required_argument, NULL, OPT_CUR},
                                             {"issue-price", required_argument, NULL, OPT_ISSUE},
                                             {"reimburse", required_argument, NULL, OPT_REIMB},
                                             {"fee", required_argument, NULL, OPT_FEE},
                                             {"funding", required_argument, NULL, OPT_FUNDING},
                                             {"net-cap", required_argument, NULL, OPT_CAP},
                                             {"return-period", required_argument, NULL, OPT_RETURN},
                                             {"locale", required_argument, NULL, OPT_LOCALE},
                                             {NULL, 0, NULL, 0}};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c < OPT_FROM || c > OPT_CAP)
            return EXIT_USAGE;
        given[c] = optarg;
    }
    if (optind + 1 != argc || given[OPT_FROM] == NULL) {
        fprintf(stderr, "coalitionctl: usage: contract set PARTNER --from TIME [options]; see "
                        "--help\n");
        return EXIT_USAGE;
    }
    b->partner_id = argv[optind];
    if (ctl_parse_time(given[OPT_FROM], &b->from_ms) != CL_OK) {
        fprintf(stderr,
                "coalitionctl: --from '%s' is not now, @EPOCH_MS, YYYY-MM-DD or "
                "YYYY-MM-DDTHH:MM:SSZ\n",
                given[OPT_FROM]);
        return EXIT_USAGE;
    }
    return 0;
}

int ctl_check_locale(const char *code)
{
    receipt_locale_t l;
    if (receipt_locale_parse(code, &l) == CL_OK)
        return 0;
    fprintf(stderr, "coalitionctl: unknown locale '%s'; receipts are in %s\n", code,
            RECEIPT_LOCALES_LIST);
    return EXIT_USAGE;
}

static int contract_terms(const char **given, const settle_contract_t *cur,
                          Coalition__ContractSetRequest *b, char *currency)
{
    snprintf(currency, CURRENCY_CODE_BYTES, "%s", given[OPT_CUR] ? given[OPT_CUR] : cur->currency);
    b->currency = currency;
    b->earn_rate_milli = cur->earn_rate_milli;
    b->issue_price_per_mille = cur->issue_price_per_mille;
    b->reimburse_per_mille = cur->reimburse_per_mille;
    b->fee_minor = cur->fee_minor;
    b->net_cap_minor = cur->net_cap_minor;
    b->funding = (Coalition__Funding)cur->funding;
    b->return_period_seconds = cur->return_period_seconds;
    b->locale = (char *)(given[OPT_LOCALE] ? given[OPT_LOCALE] : cur->locale);
    int rc = ctl_check_locale(b->locale);
    if (given[OPT_RETURN] && strcmp(given[OPT_RETURN], "0") == 0)
        b->return_period_seconds = 0;
    else if (given[OPT_RETURN] && card_parse_period(given[OPT_RETURN], RETURN_PERIOD_SECONDS_MAX,
                                                    &b->return_period_seconds) != CL_OK) {
        fprintf(stderr,
                "coalitionctl: --return-period '%s' is not 0 or a period such as 30d (at "
                "most 366d)\n",
                given[OPT_RETURN]);
        rc = EXIT_USAGE;
    }
    if (given[OPT_RATE] &&
        (amount_parse_rate_milli(given[OPT_RATE], &b->earn_rate_milli) != CL_OK ||
         b->earn_rate_milli == 0)) {
        fprintf(stderr, "coalitionctl: earn rate '%s' is not a positive number\n", given[OPT_RATE]);
        rc = EXIT_USAGE;
    }
    if (rc == 0 && given[OPT_ISSUE])
        rc = parse_money("issue price", given[OPT_ISSUE], currency, &b->issue_price_per_mille);
    if (rc == 0 && given[OPT_REIMB])
        rc = parse_money("reimbursement", given[OPT_REIMB], currency, &b->reimburse_per_mille);
    if (rc == 0 && given[OPT_FEE])
        rc = parse_money("fee", given[OPT_FEE], currency, &b->fee_minor);
    if (rc == 0 && given[OPT_CAP])
        rc = parse_money("net cap", given[OPT_CAP], currency, &b->net_cap_minor);
    if (rc == 0 && given[OPT_FUNDING]) {
        if (strcmp(given[OPT_FUNDING], "prepaid") == 0)
            b->funding = COALITION__FUNDING__FUNDING_PREPAID;
        else if (strcmp(given[OPT_FUNDING], "postpaid") == 0)
            b->funding = COALITION__FUNDING__FUNDING_POSTPAID;
        else {
            fprintf(stderr, "coalitionctl: --funding is postpaid or prepaid\n");
            rc = EXIT_USAGE;
        }
    }
    return rc;
}

static int contract_set(ctl_t *ctl, int argc, char **argv)
{
    const char *given[OPT_CAP + 1] = {0};
    Coalition__ContractSetRequest body = COALITION__CONTRACT_SET_REQUEST__INIT;
    int rc = contract_options(argc, argv, &body, given);
    settle_contract_t cur;
    if (rc == 0 && latest_contract(ctl, body.partner_id, &cur) != CL_OK)
        rc = EXIT_DECLINED;
    char currency[CURRENCY_CODE_BYTES];
    if (rc == 0)
        rc = contract_terms(given, &cur, &body, currency);
    if (rc != 0)
        return rc;
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_CONTRACT_SET;
    env.contract_set = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

static void print_contract(const ctl_t *ctl, const settle_contract_t *c, bool in_force)
{
    char from[SETTLE_TIME_TEXT_BYTES], rate[AMOUNT_TEXT_BYTES], issue[AMOUNT_TEXT_BYTES],
        reimb[AMOUNT_TEXT_BYTES], fee[AMOUNT_TEXT_BYTES], cap[AMOUNT_TEXT_BYTES];
    int exponent = amount_currency_exponent(c->currency);
    settle_time_text(c->from_ms, from);
    amount_format_minor(c->earn_rate_milli, 3, rate, sizeof rate);
    amount_format_minor(c->issue_price_per_mille, exponent, issue, sizeof issue);
    amount_format_minor(c->reimburse_per_mille, exponent, reimb, sizeof reimb);
    amount_format_minor(c->fee_minor, exponent, fee, sizeof fee);
    amount_format_minor(c->net_cap_minor, exponent, cap, sizeof cap);
    if (ctl->json) {
        printf("{\"partner\":");
        json_write_string(stdout, c->partner_id);
        printf(",\"from\":\"%s\",\"from_ms\":%" PRId64 ",\"in_force\":%s,\"earn_rate\":\"%s\","
               "\"currency\":\"%s\",\"issue_price_per_1000_minor\":%" PRId64
               ",\"reimburse_per_1000_minor\":%" PRId64 ",\"fee_minor\":%" PRId64
               ",\"funding\":\"%s\",\"net_cap_minor\":%" PRId64
               ",\"return_period_seconds\":%" PRId64 ",\"seq\":%" PRIu64 ",\"locale\":\"%s\"}\n",
               from, c->from_ms, in_force ? "true" : "false", rate, c->currency,
               c->issue_price_per_mille, c->reimburse_per_mille, c->fee_minor,
               funding_name(c->funding), c->net_cap_minor, c->return_period_seconds, c->created_seq,
               c->locale[0] ? c->locale : "en");
        return;
    }
    printf("%s %s from %s: earns %s points per %s; issue price %s, reimbursement %s per 1,000 "
           "points; fee %s; %s; net cap %s; return period %" PRId64 " days; receipts in %s "
           "(seq %" PRIu64 ")\n",
           in_force ? "*" : " ", c->partner_id, from, rate, c->currency, issue, reimb, fee,
           funding_name(c->funding), c->net_cap_minor == 0 ? "none" : cap,
           c->return_period_seconds / 86400, c->locale[0] ? c->locale : "en", c->created_seq);
}

static int contract_show(ctl_t *ctl, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "coalitionctl: usage: contract show PARTNER\n");
        return EXIT_USAGE;
    }
    ledger_t *ledger = NULL;
    settle_contract_t rows[CONTRACTS_SHOWN_MAX];
    size_t n = 0;
    int64_t prepaid = 0;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return EXIT_USAGE;
    int rc = ledger_contracts(ledger, argv[1], rows, CONTRACTS_SHOWN_MAX, &n);
    if (rc == CL_OK)
        rc = ledger_prepaid_remaining(ledger, argv[1], &prepaid);
    ledger_destroy(&ledger);
    if (rc == CL_OK && n == 0) {
        fprintf(stderr, "coalitionctl: unknown partner %s\n", argv[1]);
        return EXIT_DECLINED;
    }
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot read contracts: %s\n", cl_strerror(rc));
        return EXIT_USAGE;
    }
    int64_t now = (int64_t)time(NULL) * 1000;
    size_t in_force = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i].from_ms <= now)
            in_force = i;
    for (size_t i = 0; i < n; i++)
        print_contract(ctl, &rows[i], i == in_force);
    if (ctl->json)
        printf("{\"partner\":\"%s\",\"prepaid_remaining\":%" PRId64 "}\n", argv[1], prepaid);
    else
        printf("prepaid points remaining: %" PRId64 "%s\n", prepaid,
               n == CONTRACTS_SHOWN_MAX ? " (only the first contracts shown)" : "");
    return 0;
}

int ctl_contract(ctl_t *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "set") == 0)
        return contract_set(ctl, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "show") == 0)
        return contract_show(ctl, argc - 1, argv + 1);
    fprintf(stderr, "coalitionctl: usage: contract set|show PARTNER ...\n");
    return EXIT_USAGE;
}

/* argv: topup PARTNER --points N */
int ctl_partner_topup(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {{"points", required_argument, NULL, 'p'},
                                             {NULL, 0, NULL, 0}};
    const char *points_text = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "p:", longopts, NULL)) != -1) {
        if (c != 'p')
            return EXIT_USAGE;
        points_text = optarg;
    }
    char *end = NULL;
    long long points = points_text != NULL ? strtoll(points_text, &end, 10) : 0;
    if (optind + 1 != argc || points_text == NULL || *end != '\0' || points <= 0 ||
        points > POINTS_MAX) {
        fprintf(stderr,
                "coalitionctl: usage: partner topup PARTNER --points N (1 to %" PRId64 ")\n",
                POINTS_MAX);
        return EXIT_USAGE;
    }
    Coalition__PartnerTopupRequest body = COALITION__PARTNER_TOPUP_REQUEST__INIT;
    body.partner_id = argv[optind];
    body.points = points;
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_PARTNER_TOPUP;
    env.partner_topup = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

static int parse_seconds(const char *what, const char *text, int64_t max, int64_t *out)
{
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || v < 0 || v > max) {
        fprintf(stderr, "coalitionctl: %s '%s' is not a number of seconds (0 to %" PRId64 ")\n",
                what, text, max);
        return EXIT_USAGE;
    }
    *out = v;
    return 0;
}

static int settlement_set(ctl_t *ctl, int argc, char **argv, const settle_config_t *cur)
{
    static const struct option longopts[] = {{"period", required_argument, NULL, 'p'},
                                             {"grace", required_argument, NULL, 'g'},
                                             {"model", required_argument, NULL, 'm'},
                                             {NULL, 0, NULL, 0}};
    Coalition__SettlementConfigRequest body = COALITION__SETTLEMENT_CONFIG_REQUEST__INIT;
    body.period_seconds = cur->period_seconds;
    body.grace_seconds = cur->grace_seconds;
    body.model = (Coalition__SettlementModel)cur->model;
    int c, rc = 0;
    optind = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "p:g:m:", longopts, NULL)) != -1) {
        if (c == 'p' && strcmp(optarg, "month") == 0)
            body.period_seconds = 0;
        else if (c == 'p')
            rc = parse_seconds("period", optarg, SETTLEMENT_PERIOD_SECONDS_MAX,
                               &body.period_seconds);
        else if (c == 'g')
            rc = parse_seconds("grace", optarg, SETTLEMENT_GRACE_SECONDS_MAX, &body.grace_seconds);
        else if (c == 'm' && strcmp(optarg, "hub") == 0)
            body.model = COALITION__SETTLEMENT_MODEL__MODEL_HUB;
        else if (c == 'm' && strcmp(optarg, "issuer-pays") == 0)
            body.model = COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS;
        else
            rc = EXIT_USAGE;
    }
    if (rc != 0 || optind != argc) {
        fprintf(stderr, "coalitionctl: usage: settlement set [--period month|SECONDS] "
                        "[--grace SECONDS] [--model hub|issuer-pays]\n");
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG;
    env.settlement_config = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

int ctl_settlement(ctl_t *ctl, int argc, char **argv)
{
    bool set = argc >= 2 && strcmp(argv[1], "set") == 0;
    if (!set && !(argc == 2 && strcmp(argv[1], "show") == 0)) {
        fprintf(stderr, "coalitionctl: usage: settlement show | settlement set ...\n");
        return EXIT_USAGE;
    }
    ledger_t *ledger = NULL;
    settle_config_t cfg;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return EXIT_USAGE;
    int rc = ledger_settle_config(ledger, &cfg);
    ledger_destroy(&ledger);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot read the settlement state: %s\n", cl_strerror(rc));
        return EXIT_USAGE;
    }
    if (set)
        return settlement_set(ctl, argc - 1, argv + 1, &cfg);
    char period[48];
    if (cfg.period_seconds == 0)
        snprintf(period, sizeof period, "a calendar month (UTC)");
    else
        snprintf(period, sizeof period, "%" PRId64 " s", cfg.period_seconds);
    if (ctl->json)
        printf("{\"period_seconds\":%" PRId64 ",\"grace_seconds\":%" PRId64 ",\"model\":\"%s\","
               "\"open_window\":%" PRIu64 "}\n",
               cfg.period_seconds, cfg.grace_seconds, model_name(cfg.model), cfg.open_window_id);
    else
        printf("windows of %s, closed %" PRId64 " s after they end, %s model; open window %" PRIu64
               "\n",
               period, cfg.grace_seconds, model_name(cfg.model), cfg.open_window_id);
    return 0;
}

static void hash_hex(const uint8_t hash[WIRE_HASH_BYTES], char out[2 * WIRE_HASH_BYTES + 1])
{
    for (size_t i = 0; i < WIRE_HASH_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", hash[i]);
}

static void print_window(const ctl_t *ctl, const settle_window_t *w)
{
    assert(w->id > 0 && w->start_ms <= w->end_ms);
    char start[SETTLE_TIME_TEXT_BYTES], end[SETTLE_TIME_TEXT_BYTES];
    char hex[2 * WIRE_HASH_BYTES + 1];
    settle_time_text(w->start_ms, start);
    settle_time_text(w->end_ms, end);
    hash_hex(w->last_hash, hex);
    bool ended = w->state != COALITION__WINDOW_STATE__WINDOW_OPEN;
    if (ctl->json) {
        printf("{\"window\":%" PRIu64 ",\"start\":\"%s\",\"end\":\"%s\",\"state\":\"%s\","
               "\"model\":\"%s\",\"first_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64
               ",\"last_hash\":\"%s\",\"close_seq\":%" PRIu64 "}\n",
               w->id, start, end, state_name(w->state), model_name(w->model), w->first_seq,
               w->last_seq, ended ? hex : "", w->close_seq);
        return;
    }
    printf("%6" PRIu64 "  %s  %s  %-6s  %-11s  entries from seq %" PRIu64, w->id, start, end,
           state_name(w->state), model_name(w->model), w->first_seq);
    if (ended)
        printf(" to %" PRIu64 " (hash %.16s…)", w->last_seq, hex);
    if (w->close_seq != 0)
        printf(", closed at seq %" PRIu64, w->close_seq);
    printf("\n");
}

static int window_list(ctl_t *ctl)
{
    ledger_t *ledger = NULL;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return EXIT_USAGE;
    settle_window_t rows[WINDOWS_PER_SLICE];
    uint64_t after = 0;
    size_t n = 0;
    int rc;
    if (!ctl->json)
        printf("%6s  %-24s  %-24s  %-6s  %-11s\n", "WINDOW", "START (UTC)", "END", "STATE",
               "MODEL");
    do {
        rc = ledger_windows_slice(ledger, after, rows, WINDOWS_PER_SLICE, &n);
        for (size_t i = 0; rc == CL_OK && i < n; i++)
            print_window(ctl, &rows[i]);
        if (n > 0)
            after = rows[n - 1].id;
    } while (rc == CL_OK && n == WINDOWS_PER_SLICE);
    ledger_destroy(&ledger);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot read windows: %s\n", cl_strerror(rc));
        return EXIT_USAGE;
    }
    return 0;
}

/* Idempotent: a window already closed is reported as such with exit status 0. */
static int window_close(ctl_t *ctl, int argc, char **argv)
{
    bool early = argc == 3 && strcmp(argv[2], "--early") == 0;
    char *end = NULL;
    unsigned long long id = argc >= 2 ? strtoull(argv[1], &end, 10) : 0;
    if ((argc != 2 && !early) || id == 0 || *end != '\0') {
        fprintf(stderr, "coalitionctl: usage: window close ID [--early]\n");
        return EXIT_USAGE;
    }
    Coalition__WindowCloseRequest body = COALITION__WINDOW_CLOSE_REQUEST__INIT;
    body.window_id = id;
    body.early = early;
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_WINDOW_CLOSE;
    env.window_close = &body;
    authorization_t *auth = NULL;
    int rc = ctl_send_admin(ctl, &env, &auth);
    if (auth == NULL)
        return rc;
    bool already = auth->code == RC_INVALID_TRANSACTION && strstr(auth->text, "already closed");
    if (ctl->json) {
        printf("{\"window\":%llu,\"closed\":%s,\"already\":%s,\"seq\":%" PRIu64 ",\"text\":", id,
               rc == 0 || already ? "true" : "false", already ? "true" : "false", auth->seq);
        json_write_string(stdout, auth->text);
        printf("}\n");
    } else {
        printf("%s\n", already ? strchr(auth->text, ':') + 2 : auth->text);
    }
    wire_auth_free(auth);
    return already ? 0 : rc;
}

int ctl_window(ctl_t *ctl, int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "list") == 0)
        return window_list(ctl);
    if (argc >= 2 && strcmp(argv[1], "close") == 0)
        return window_close(ctl, argc - 1, argv + 1);
    fprintf(stderr, "coalitionctl: usage: window list | window close ID [--early]\n");
    return EXIT_USAGE;
}
