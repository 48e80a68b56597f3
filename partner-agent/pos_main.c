/* coalition-pos: one till request from the command line, built on coalition_pos.h.
 * Prints the authorization readably, or as one JSON object with --json.
 * Exit status: 0 approved, 1 declined, 2 no answer or bad usage, 3 stored offline,
 * 4 a replay of an approval that was voided or fully refunded since. */
#include "amount.h"
#include "card.h"
#include "clock.h"
#include "coalition_pos.h"
#include "json.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_APPROVED 0
#define EXIT_DECLINED 1
#define EXIT_USAGE 2
#define EXIT_OFFLINE 3
#define EXIT_REVERSED 4
#define DEFAULT_TERMINAL "till-1"
#define DEFAULT_CURRENCY "EUR"

typedef struct args {
    const char *agent, *terminal, *member, *amount, *currency, *txn, *original, *original_site;
    char card[PAN_DIGITS_MAX + 2]; /* "" unless --card; cleared before exit */
    int64_t points;
    bool allow_partial, json;
    int timeout_ms;
} args_t;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: coalition-pos [--agent ENDPOINT] [--terminal ID] [--json] COMMAND [options]\n"
            "Send one till request to the site's coalition-agent.\n\n"
            "Commands:\n"
            "  earn    --member M|--card PAN --amount 12.34 [--currency EUR] --txn T\n"
            "  burn    --member M|--card PAN --points 500 --txn T [--allow-partial]\n"
            "  refund  --original T1 [--amount 5.00 [--currency EUR] | --points N] --txn T2\n"
            "          [--original-site S]  (no amount: refund everything not yet refunded)\n"
            "  void    --original T1 --txn T2 [--original-site S]\n"
            "          (--original-site: T1 was taken at another store of this partner)\n"
            "  balance --member M|--card PAN [--txn T]\n"
            "  enroll  --member M --txn T\n\n"
            "Options:\n"
            "  -a, --agent ENDPOINT   the agent's till socket (default: $COALITION_AGENT)\n"
            "  -t, --terminal ID      this till's id (default: %s)\n"
            "  -j, --json             print one JSON object: code, approved, points, balance\n"
            "                         (available + pending_points: points pending over a\n"
            "                         partner's return period cannot be burned yet),\n"
            "                         base_points, bonus_points and tier (an earn),\n"
            "                         seq, auth_code, replay, reversed, offline, pending, text\n"
            "      --timeout-ms N     give up after N ms (default: %d)\n"
            "      --card PAN         the payment card instead of a member id (card-linked);\n"
            "                         '-' reads it from standard input, keeping it out of the\n"
            "                         process list. A card earn is never stored offline\n"
            "  -h, --help             this text\n\n"
            "Exit status: 0 approved, 1 declined, 2 no answer or bad usage,\n"
            "3 stored offline by the agent, or pending (not decided yet; it will be),\n"
            "4 a replay of an approval that was voided or fully refunded since.\n",
            DEFAULT_TERMINAL, CPOS_TIMEOUT_MS_DEFAULT);
}

static void print_result(const args_t *a, const cpos_result_t *r)
{
    if (a->json) {
        printf("{\"txn_id\":");
        json_write_string(stdout, r->txn_id);
        printf(",\"code\":\"%02d\",\"approved\":%s,\"points\":%" PRId64 ",\"balance\":%" PRId64
               ",\"available\":%" PRId64 ",\"pending_points\":%" PRId64
               ",\"base_points\":%" PRId64 ",\"bonus_points\":%" PRId64 ",\"seq\":%" PRIu64
               ",\"tier\":",
               r->code, r->approved ? "true" : "false", r->points, r->balance, r->available,
               r->pending_points, r->base_points, r->bonus_points, r->seq);
        json_write_string(stdout, r->tier);
        printf(",\"auth_code\":");
        json_write_string(stdout, r->auth_code);
        printf(",\"replay\":%s,\"reversed\":%s,\"offline\":%s,\"pending\":%s,\"text\":",
               r->replay ? "true" : "false", r->reversed ? "true" : "false",
               r->offline ? "true" : "false", r->pending ? "true" : "false");
        json_write_string(stdout, r->text);
        printf("}\n");
        return;
    }
    const char *verdict = r->offline    ? "OFFLINE "
                          : r->pending  ? "PENDING "
                          : r->reversed ? "REVERSED"
                          : r->approved ? "APPROVED"
                                        : "DECLINED";
    printf("%s %02d  %s", verdict, r->code, r->text);
    if (r->approved && r->seq > 0)
        printf("  [auth %s, seq %" PRIu64 "]", r->auth_code, r->seq);
    if (r->replay && r->reversed)
        printf("  (replay of an approval reversed since; nothing is approved now)");
    else if (r->replay)
        printf("  (replay of the original answer; not applied again)");
    printf("\n");
}

static int parse_money(const args_t *a, int64_t *minor)
{
    int exponent = amount_currency_exponent(a->currency);
    if (exponent < 0) {
        fprintf(stderr, "coalition-pos: unknown currency '%s'\n", a->currency);
        return -1;
    }
    if (amount_parse_minor(a->amount, exponent, minor) != 0) {
        fprintf(stderr,
                "coalition-pos: amount '%s' is not a positive %s amount with at most %d "
                "decimals\n",
                a->amount, a->currency, exponent);
        return -1;
    }
    return 0;
}

static bool need(const char *value, const char *option)
{
    if (value == NULL)
        fprintf(stderr, "coalition-pos: %s is required; see --help\n", option);
    return value != NULL;
}

/* earn, burn and balance by card. */
static int run_card(cpos_t *pos, const char *cmd, const args_t *a, cpos_result_t *r)
{
    int64_t minor = 0;
    if (a->member != NULL) {
        fprintf(stderr, "coalition-pos: give --member or --card, not both\n");
        return CPOS_BAD_ARGUMENT;
    }
    if (pan_check(a->card) != PAN_OK) {
        fprintf(stderr, "coalition-pos: --card: %s\n", pan_verdict_text(pan_check(a->card)));
        return CPOS_BAD_ARGUMENT;
    }
    if (strcmp(cmd, "earn") == 0) {
        if (!need(a->amount, "--amount") || !need(a->txn, "--txn") || parse_money(a, &minor) != 0)
            return CPOS_BAD_ARGUMENT;
        return cpos_earn_card(pos, a->txn, a->card, minor, a->currency, r);
    }
    if (strcmp(cmd, "burn") == 0)
        return need(a->txn, "--txn")
                   ? cpos_burn_card(pos, a->txn, a->card, a->points, a->allow_partial, r)
                   : CPOS_BAD_ARGUMENT;
    if (strcmp(cmd, "balance") == 0)
        return cpos_balance_card(pos, a->txn, a->card, r);
    fprintf(stderr, "coalition-pos: --card goes with earn, burn and balance\n");
    return CPOS_BAD_ARGUMENT;
}

static int run(cpos_t *pos, const char *cmd, const args_t *a, cpos_result_t *r)
{
    int64_t minor = 0;
    if (a->card[0] != '\0')
        return run_card(pos, cmd, a, r);
    if (strcmp(cmd, "earn") == 0) {
        if (!need(a->member, "--member") || !need(a->amount, "--amount") ||
            !need(a->txn, "--txn") || parse_money(a, &minor) != 0)
            return CPOS_BAD_ARGUMENT;
        return cpos_earn(pos, a->txn, a->member, minor, a->currency, r);
    }
    if (strcmp(cmd, "burn") == 0) {
        if (!need(a->member, "--member") || !need(a->txn, "--txn"))
            return CPOS_BAD_ARGUMENT;
        return cpos_burn(pos, a->txn, a->member, a->points, a->allow_partial, r);
    }
    if (strcmp(cmd, "refund") == 0) {
        if (!need(a->original, "--original") || !need(a->txn, "--txn") ||
            (a->amount != NULL && parse_money(a, &minor) != 0))
            return CPOS_BAD_ARGUMENT;
        return cpos_refund_at(pos, a->txn, a->original_site, a->original, minor, a->points, r);
    }
    if (strcmp(cmd, "void") == 0) {
        if (!need(a->original, "--original") || !need(a->txn, "--txn"))
            return CPOS_BAD_ARGUMENT;
        return cpos_void_at(pos, a->txn, a->original_site, a->original, r);
    }
    if (strcmp(cmd, "balance") == 0 || strcmp(cmd, "enroll") == 0) {
        if (!need(a->member, "--member") || !need(a->txn, "--txn"))
            return CPOS_BAD_ARGUMENT;
        return cmd[0] == 'b' ? cpos_balance(pos, a->txn, a->member, r)
                             : cpos_enroll(pos, a->txn, a->member, r);
    }
    fprintf(stderr, "coalition-pos: unknown command '%s'; see --help\n", cmd);
    return CPOS_BAD_ARGUMENT;
}

/* --card: its value, or a line of standard input for '-'; the argument itself is blanked
 * (it no longer shows in the process list). */
static int take_card(char *arg, args_t *a)
{
    if (strcmp(arg, "-") == 0) {
        /* read(2), not stdio: no buffer of stdin's keeps a copy of the number */
        ssize_t n = read(STDIN_FILENO, a->card, sizeof a->card - 1);
        a->card[n > 0 ? n : 0] = '\0';
        a->card[strcspn(a->card, "\r\n")] = '\0';
    } else {
        snprintf(a->card, sizeof a->card, "%s", arg);
        pan_clear(arg, strlen(arg));
    }
    if (a->card[0] == '\0') {
        fprintf(stderr, "coalition-pos: --card needs a card number\n");
        return -1;
    }
    return 0;
}

static int parse_command_options(int argc, char **argv, args_t *a)
{
    enum { OPT_TIMEOUT = 256, OPT_ORIGINAL_SITE, OPT_CARD };
    static const struct option longopts[] = {
        {"member", required_argument, NULL, 'm'},
        {"amount", required_argument, NULL, 'A'},
        {"currency", required_argument, NULL, 'c'},
        {"points", required_argument, NULL, 'P'},
        {"txn", required_argument, NULL, 'x'},
        {"original", required_argument, NULL, 'o'},
        {"original-site", required_argument, NULL, OPT_ORIGINAL_SITE},
        {"card", required_argument, NULL, OPT_CARD},
        {"allow-partial", no_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {NULL, 0, NULL, 0}};
    int c;
    char *end = NULL;
    optind = 0; /* GNU getopt: 0 fully resets its state for this second scan */
    while ((c = getopt_long(argc, argv, "m:A:c:P:x:o:pj", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': a->member = optarg; break;
        case 'A': a->amount = optarg; break;
        case 'c': a->currency = optarg; break;
        case 'x': a->txn = optarg; break;
        case 'o': a->original = optarg; break;
        case OPT_ORIGINAL_SITE: a->original_site = optarg; break;
        case OPT_CARD:
            if (take_card(optarg, a) != 0)
                return -1;
            break;
        case 'p': a->allow_partial = true; break;
        case 'j': a->json = true; break;
        case 'P':
            a->points = strtoll(optarg, &end, 10);
            if (end == optarg || *end != '\0' || a->points <= 0) {
                fprintf(stderr, "coalition-pos: --points must be a positive whole number\n");
                return -1;
            }
            break;
        case OPT_TIMEOUT: a->timeout_ms = atoi(optarg); break;
        default: return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "coalition-pos: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"agent", required_argument, NULL, 'a'}, {"terminal", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},        {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    pan_protect_process(); /* --card: a card number in this process */
    args_t a = {.agent = getenv("COALITION_AGENT"),
                .terminal = DEFAULT_TERMINAL,
                .currency = DEFAULT_CURRENCY,
                .timeout_ms = CPOS_TIMEOUT_MS_DEFAULT};
    int c;
    while ((c = getopt_long(argc, argv, "+a:t:jh", longopts, NULL)) != -1) {
        switch (c) {
        case 'a': a.agent = optarg; break;
        case 't': a.terminal = optarg; break;
        case 'j': a.json = true; break;
        case 'T': a.timeout_ms = atoi(optarg); break;
        case 'h': usage(stdout); return EXIT_APPROVED;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    if (parse_command_options(argc - optind, argv + optind, &a) != 0 || !need(a.agent, "--agent"))
        return EXIT_USAGE;
    char balance_txn[CPOS_TXN_ID_BYTES];
    if (a.txn == NULL && strcmp(cmd, "balance") == 0) {
        snprintf(balance_txn, sizeof balance_txn, "bal-%" PRId64 "-%ld", clock_wall_ms(),
                 (long)getpid());
        a.txn = balance_txn;
    }
    cpos_t *pos = cpos_new(a.agent, a.terminal);
    if (pos == NULL) {
        fprintf(stderr, "coalition-pos: cannot use agent endpoint '%s' or terminal '%s'\n", a.agent,
                a.terminal);
        return EXIT_USAGE;
    }
    cpos_set_timeout(pos, a.timeout_ms > 0 ? a.timeout_ms : CPOS_TIMEOUT_MS_DEFAULT);
    cpos_result_t r;
    int rc = run(pos, cmd, &a, &r);
    pan_clear(a.card, sizeof a.card);
    cpos_destroy(&pos);
    if (rc == CPOS_BAD_ARGUMENT)
        return EXIT_USAGE;
    if (rc == CPOS_NO_ANSWER) {
        fprintf(stderr, "coalition-pos: no answer from the agent at %s within %d ms\n", a.agent,
                a.timeout_ms);
        return EXIT_USAGE;
    }
    print_result(&a, &r);
    if (r.offline || r.pending)
        return EXIT_OFFLINE; /* not decided yet: it will be */
    if (r.reversed)
        return EXIT_REVERSED;
    return r.approved ? EXIT_APPROVED : EXIT_DECLINED;
}
