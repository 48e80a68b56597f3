#define _DEFAULT_SOURCE /* explicit_bzero */
/* coalitionctl: the operator's command. Writes (partners, members) go through the
 * broker's local admin socket so the writer sees one order of events. Reports read the
 * ledger directly, read-only, and never hold a read transaction while they print or for
 * longer than one bounded slice (LEDGER_SLICE_RECORDS_MAX records), so a stalled reader
 * (a paused pager) cannot make the running broker's ledger file grow; verify audits a
 * compacted snapshot copied into a temporary directory. */
#include "ctl.h"

#include "amount.h"
#include "client.h"
#include "card.h"
#include "clock.h"
#include "errors.h"
#include "json.h"
#include "keys.h"
#include "ledger.h"
#include "log.h"
#include "settle.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_LEDGER_DIR "ledger"
#define ADMIN_TIMEOUT_MS 5000
#define SNAPSHOT_DIR_BYTES_MAX 4096
#define SNAPSHOT_DIR_PATTERN "coalitionctl-verify.XXXXXX"
#define DEFAULT_TMPDIR "/tmp"
#define VERIFY_WHY_BYTES_MAX 512
#define CTL_LOTS_SHOWN_MAX 256 /* balance --lots: the first ones in burn order */

static void usage(FILE *out)
{
    fputs("Usage: coalitionctl [--ledger DIR] [--admin ENDPOINT] [--json] COMMAND\n"
          "Operate the coalition points ledger.\n\n"
          "Commands:\n"
          "  init                                   create an empty ledger in DIR and the\n"
          "                                         broker's CURVE key pair (DIR/broker.key,\n"
          "                                         DIR/broker.pub: give agents broker.pub)\n"
          "  key new PARTICIPANT --role partner|bank [--out FILE]\n"
          "                                         make a key pair: the secret key file\n"
          "                                         (mode 0600, default PARTICIPANT.key) for\n"
          "                                         the participant, the public key recorded\n"
          "                                         in the ledger\n"
          "  key list                               every recorded key and its state\n"
          "  key revoke KEY|KEYFILE                 revoke a key (its Z85 public key, or a\n"
          "                                         key file holding it); its\n"
          "                                         connections get 57 from the next message\n"
          "  partner limits ID [--max-amount MINOR] [--max-points N]\n"
          "                    [--burns-per-minute N] [--requests-per-second N] [--reset]\n"
          "                                         set a partner's limits; those not given\n"
          "                                         keep their value (--reset: the default)\n"
          "  partner add ID --earn-rate R [--currency CUR] [--locale L]\n"
          "                                         add a partner earning R points per\n"
          "                                         currency unit (e.g. 2 or 1.5; default EUR);\n"
          "                                         L: its receipts' language (en, ro, cs, el,\n"
          "                                         sq; default en)\n"
          "  member add ID                          enrol a member\n"
          "  balance MEMBER [--lots]                a member's points: available, pending\n"
          "                                         and (--lots) its lots in burn order\n"
          "  accounts                               every account and its balance\n"
          "  journal [--from SEQ]                   journal entries from SEQ to the last one\n"
          "                                         committed when the command started\n"
          "  verify                                 re-derive the ledger from its journal, on a\n"
          "                                         compacted snapshot ($TMPDIR, removed after)\n",
          out);
    fputs("\nOperations commands:\n"
          "  tail [--from SEQ] [--follow] [--json] [--feed EP] [--feed-replay EP]\n"
          "                                         journal entries from SEQ (default 1) in\n"
          "                                         order, each once, from the broker's feed\n"
          "                                         (default ipc://DIR/feed.sock and\n"
          "                                         DIR/feed-replay.sock); stops at the last\n"
          "                                         committed seq, or with --follow goes on\n"
          "                                         live until SIGINT/SIGTERM; a CURVE feed:\n"
          "                                         --key FILE [--broker-key DIR/broker.pub]\n"
          "  feed-key new FILE                      a feed client's key pair (owner-only\n"
          "                                         FILE); prints the public key for the\n"
          "                                         broker's --feed-clients file\n"
          "  backup DEST                            hot backup while the broker runs: a\n"
          "                                         compacted copy, the key files and a\n"
          "                                         manifest (DEST/BACKUP: seq, chain head,\n"
          "                                         SHA-256s, verify result) into the new\n"
          "                                         directory DEST; not the card key file\n"
          "  restore SRC [--ledger DIR] [--force]   check a backup against its manifest and\n"
          "                                         verify, then install it as DIR, atomically;\n"
          "                                         never over a running broker's ledger;\n"
          "                                         --force moves an existing one aside\n",
          out);
    fprintf(out,
            "\nOptions:\n"
            "  -l, --ledger DIR      ledger directory (default: %s)\n"
            "  -a, --admin ENDPOINT  broker admin socket (default: ipc://DIR/admin.sock)\n"
            "  -j, --json            machine-readable output\n"
            "  -h, --help            this text\n\n"
            "partner add/limits, member add and key new/revoke need the broker running; the\n"
            "rest read the ledger,\n"
            "%d records per read transaction: a long accounts listing shows balances from\n"
            "successive moments (verify audits one consistent snapshot).\n"
            "Exit status: 0 ok, 1 declined or verification failed, 2 usage or no answer.\n",
            DEFAULT_LEDGER_DIR, LEDGER_SLICE_RECORDS_MAX);
    fputs("\nSettlement commands (writes through the broker, reports read the ledger):\n"
          "  partner topup ID --points N            a prepaid partner buys N points\n"
          "  contract set ID --from TIME [--earn-rate R] [--currency CUR]\n"
          "               [--issue-price M] [--reimburse M] [--fee M]\n"
          "               [--funding postpaid|prepaid] [--net-cap M] [--return-period D]\n"
          "               [--locale en|ro|cs|el|sq] (the language of its tills' receipts)\n"
          "                                         a partner's contract from TIME (now,\n"
          "                                         YYYY-MM-DD[THH:MM:SSZ] UTC, @EPOCH_MS);\n"
          "                                         prices M in the currency per 1,000 points,\n"
          "                                         fee per earn or burn; terms not given keep\n"
          "                                         the latest contract's value\n"
          "  contract show ID                       its contracts (* in force) and prepaid block\n"
          "  settlement show | settlement set [--period month|SECONDS] [--grace SECONDS]\n"
          "               [--model hub|issuer-pays]  how windows are cut (from the next one)\n"
          "  window list                            settlement windows and their state\n"
          "  window close ID [--early]              close an ended window (idempotent);\n"
          "                                         --early ends the open one first\n"
          "  statement WINDOW [--partner P] [--format csv|json] [--detail] [--out FILE]\n"
          "               [--sign-key FILE]         a closed window's signed statement\n"
          "                                         (default key DIR/operator.sign)\n"
          "  statement-verify FILE --pubkey KEY     check a statement's signature\n"
          "  reconcile --partner P --window ID --agent-journal FILE\n"
          "                                         match an agent's export (coalition-agent\n"
          "                                         --data DIR export --window ID) against\n"
          "                                         the ledger; exit 1 on any difference\n"
          "  liability [--as-of TIME]               points outstanding by issuer and age,\n"
          "                                         valued at issue price (journal replay)\n"
          "  stats [--metrics HOST:PORT]            the broker's metrics (or an agent's), for\n"
          "                                         a person (default 127.0.0.1:9450)\n"
          "\nCard-linked banks:\n"
          "  bank add ID                            add a bank (then: key new ID --role bank)\n"
          "  enroll --bank B --file F [--rejects R] apply a bank's enrolment file (CSV header:\n"
          "                                         bank_ref,pan[,member_id,action,new_pan];\n"
          "                                         action enrol|unlink|replace); rejects\n"
          "                                         (line, masked card, reason) to R or stderr;\n"
          "                                         '-' reads standard input. Exit 1 if any\n"
          "                                         row was rejected\n"
          "  card-key rotate|list|retire N [--file FILE]\n"
          "                                         the card key file (default DIR.card.key,\n"
          "                                         beside the ledger directory): rotate adds\n"
          "                                         a key for new cards; older cards keep\n"
          "                                         theirs; retire N removes key N once no\n"
          "                                         card is stored under it. Restart the\n"
          "                                         broker after either\n"
          "  card-settings [--unclaimed-period N{d|h|m|s}]\n"
          "                                         show or set (a journal entry) how long\n"
          "                                         points a card earned before any bank\n"
          "                                         enrolled it wait, from its latest earn,\n"
          "                                         before they lapse to breakage (default 90d)\n",
          out);
    fputs("\nPoints lifecycle:\n"
          "  expiry-policy [--from TIME] [--term D] [--inactivity D]\n"
          "                                         show the expiry policies, or set one from\n"
          "                                         TIME (default now; never in the past): a\n"
          "                                         lot expires D after its earn (term), all of\n"
          "                                         a member's after D without an earn or burn\n"
          "                                         (inactivity); D is 0/none or N{d|h|m|s}\n"
          "  expire --as-of TIME                    post every lot expired as of TIME to\n"
          "                                         breakage, slice by slice (the broker also\n"
          "                                         runs it daily, --expire-at); a second run\n"
          "                                         changes nothing\n"
          "  contract set ID ... --return-period D  earns there stay pending (not burnable)\n"
          "                                         for D; a refund inside it cancels them\n"
          "  tiers [--set NAME:THRESHOLD:MULT,... | --none]\n"
          "                                         show or set the tiers from now on: held\n"
          "                                         by base points qualified in the current\n"
          "                                         and 11 previous calendar months, each\n"
          "                                         multiplying base earns (e.g.\n"
          "                                         Base:0:1,Silver:5000:1.5,Gold:20000:2)\n"
          "  rule add PARTNER (--multiplier X | --threshold AMOUNT --bonus N |\n"
          "               --first-earn-bonus N) [--from TIME] [--until TIME]\n"
          "  rule list [PARTNER] | rule end PARTNER ID [--at TIME]\n"
          "                                         earning rules at a partner's tills, billed\n"
          "                                         to it: bonuses on the base points, tier\n"
          "                                         first, then rules by id; they add up\n",
          out);
}

void ctl_admin_envelope(envelope_t *env, char *txn_id, size_t size)
{
    coalition__envelope__init(env);
    snprintf(txn_id, size, "ctl-%" PRId64 "-%ld", clock_wall_ms(), (long)getpid());
    env->version = WIRE_VERSION;
    env->partner_id = OPERATOR_PARTNER_ID;
    env->terminal_id = "coalitionctl";
    env->site_id = OPERATOR_SITE_ID;
    env->txn_id = txn_id;
    env->client_time_ms = clock_wall_ms();
}

int ctl_send_admin(ctl_t *ctl, const envelope_t *env, authorization_t **auth_out)
{
    client_t *client = NULL;
    authorization_t *auth = NULL;
    int rc = client_new(&client, ctl->admin_endpoint);
    if (rc == CL_OK)
        rc = client_call(client, env, ADMIN_TIMEOUT_MS, &auth);
    client_destroy(&client);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: no answer from the broker on %s (%s); is it running?\n",
                ctl->admin_endpoint, cl_strerror(rc));
        return EXIT_USAGE;
    }
    int code = auth->code;
    if (auth_out != NULL) {
        *auth_out = auth; /* the caller reports it */
        return code == RC_APPROVED ? 0 : EXIT_DECLINED;
    }
    if (ctl->json) {
        printf("{\"code\":\"%02d\",\"approved\":%s,\"seq\":%" PRIu64 ",\"text\":", code,
               code == RC_APPROVED ? "true" : "false", auth->seq);
        json_write_string(stdout, auth->text);
        printf("}\n");
    } else {
        printf("%02d %s (seq %" PRIu64 ")\n", code, auth->text, auth->seq);
    }
    wire_auth_free(auth);
    return code == RC_APPROVED ? 0 : EXIT_DECLINED;
}

static int cmd_partner_add(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {{"earn-rate", required_argument, NULL, 'r'},
                                             {"currency", required_argument, NULL, 'c'},
                                             {"locale", required_argument, NULL, 'L'},
                                             {NULL, 0, NULL, 0}};
    const char *rate_text = NULL, *currency = "EUR", *locale = "";
    int c;
    optind = 0; /* GNU getopt: 0 fully resets its state for this second scan */
    while ((c = getopt_long(argc, argv, "r:c:", longopts, NULL)) != -1) {
        if (c == 'r')
            rate_text = optarg;
        else if (c == 'c')
            currency = optarg;
        else if (c == 'L')
            locale = optarg;
        else
            return EXIT_USAGE;
    }
    int64_t rate_milli = 0;
    if (optind + 1 != argc || rate_text == NULL) {
        fprintf(stderr, "coalitionctl: usage: partner add ID --earn-rate R [--currency CUR] "
                        "[--locale L]\n");
        return EXIT_USAGE;
    }
    if (ctl_check_locale(locale) != 0)
        return EXIT_USAGE;
    if (amount_parse_rate_milli(rate_text, &rate_milli) != CL_OK || rate_milli == 0) {
        fprintf(stderr,
                "coalitionctl: earn rate '%s' is not a positive number with at most 3 "
                "decimals (max %" PRId64 ")\n",
                rate_text, EARN_RATE_MILLI_MAX / EARN_RATE_SCALE);
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__PartnerAddRequest body = COALITION__PARTNER_ADD_REQUEST__INIT;
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    body.partner_id = argv[optind];
    body.earn_rate_milli = rate_milli;
    body.currency = (char *)currency;
    body.locale = (char *)locale;
    env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    env.partner_add = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

static int cmd_member_add(ctl_t *ctl, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "coalitionctl: usage: member add ID\n");
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__EnrollRequest body = COALITION__ENROLL_REQUEST__INIT;
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    body.member_id = argv[1];
    env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    env.enroll = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

static const char *role_text(int role)
{
    return role == COALITION__KEY_ROLE__ROLE_PARTNER ? "partner"
           : role == COALITION__KEY_ROLE__ROLE_BANK  ? "bank"
                                                     : "none";
}

/* Write the secret key file first (exclusively, 0600), then record the public key; if
 * the broker does not record it, the file is removed again. */
static int cmd_key_new(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {{"role", required_argument, NULL, 'r'},
                                             {"out", required_argument, NULL, 'o'},
                                             {NULL, 0, NULL, 0}};
    const char *role_arg = NULL, *out = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "r:o:", longopts, NULL)) != -1) {
        if (c == 'r')
            role_arg = optarg;
        else if (c == 'o')
            out = optarg;
        else
            return EXIT_USAGE;
    }
    int role = role_arg == NULL                   ? -1
               : strcmp(role_arg, "partner") == 0 ? COALITION__KEY_ROLE__ROLE_PARTNER
               : strcmp(role_arg, "bank") == 0    ? COALITION__KEY_ROLE__ROLE_BANK
                                                  : -1;
    if (optind + 1 != argc || role < 0) {
        fprintf(stderr, "coalitionctl: usage: key new PARTICIPANT --role partner|bank "
                        "[--out FILE]\n");
        return EXIT_USAGE;
    }
    const char *participant = argv[optind];
    char path[SNAPSHOT_DIR_BYTES_MAX], comment[128];
    snprintf(path, sizeof path, "%s", out != NULL ? out : participant);
    if (out == NULL)
        snprintf(path, sizeof path, "%s.key", participant);
    key_pair_t pair;
    if (keys_generate(&pair) != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot generate a key pair\n");
        return EXIT_USAGE;
    }
    snprintf(comment, sizeof comment, "coalition CURVE key of %s %.32s", role_text(role),
             participant);
    int rc = keys_write_secret(path, &pair, comment);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot create %s: %s\n", path,
                rc == CL_ERR_EXISTS ? "it exists; refusing to overwrite a key" : cl_strerror(rc));
        explicit_bzero(&pair, sizeof pair);
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__KeyAddRequest body = COALITION__KEY_ADD_REQUEST__INIT;
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    body.public_key = pair.public_z85;
    body.participant = (char *)participant;
    body.role = (Coalition__KeyRole)role;
    env.body_case = COALITION__ENVELOPE__BODY_KEY_ADD;
    env.key_add = &body;
    int exit_code = ctl_send_admin(ctl, &env, NULL);
    if (exit_code == EXIT_DECLINED)
        unlink(path); /* refused: no key was recorded, so no secret to keep */
    else if (exit_code != 0)
        fprintf(stderr,
                "coalitionctl: kept %s: the broker may have recorded its key (public key %s); "
                "check 'coalitionctl key list' and revoke it if it is not wanted\n",
                path, pair.public_z85);
    else if (!ctl->json)
        printf("public key %s; secret key in %s (mode 0600)\n", pair.public_z85, path);
    explicit_bzero(&pair, sizeof pair);
    return exit_code;
}

static int cmd_key_revoke(ctl_t *ctl, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "coalitionctl: usage: key revoke KEY|KEYFILE\n");
        return EXIT_USAGE;
    }
    /* The Z85 public key itself, or a key file (public or secret) to read it from. */
    char public_z85[KEY_Z85_BYTES], why[KEY_WHY_BYTES_MAX];
    if (keys_z85_valid(argv[1])) {
        snprintf(public_z85, sizeof public_z85, "%s", argv[1]);
    } else if (keys_read_public(argv[1], public_z85, why, sizeof why) != CL_OK) {
        fprintf(stderr,
                "coalitionctl: %s is neither a public key (40 characters of Z85) nor a "
                "key file: %s\n",
                argv[1], why);
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__KeyRevokeRequest body = COALITION__KEY_REVOKE_REQUEST__INIT;
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    body.public_key = public_z85;
    env.body_case = COALITION__ENVELOPE__BODY_KEY_REVOKE;
    env.key_revoke = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

static void print_key(const ctl_t *ctl, const ledger_key_row_t *k)
{
    const char *state = k->revoked_seq != 0 ? "revoked" : "active";
    if (!ctl->json) {
        printf("%s %-8s %-32s %-7s added=%" PRIu64, k->public_z85, role_text(k->role),
               k->participant, state, k->created_seq);
        if (k->revoked_seq != 0)
            printf(" revoked=%" PRIu64, k->revoked_seq);
        printf("\n");
        return;
    }
    printf("{\"key\":\"%s\",\"role\":\"%s\",\"participant\":", k->public_z85, role_text(k->role));
    json_write_string(stdout, k->participant);
    printf(",\"state\":\"%s\",\"added_seq\":%" PRIu64 ",\"revoked_seq\":%" PRIu64 "}\n", state,
           k->created_seq, k->revoked_seq);
}

static int cmd_key_list(ctl_t *ctl)
{
    ledger_t *ledger = NULL;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return EXIT_USAGE;
    ledger_key_row_t *rows = calloc(LEDGER_SLICE_RECORDS_MAX, sizeof *rows);
    char after[KEY_Z85_BYTES] = "";
    size_t count = LEDGER_SLICE_RECORDS_MAX;
    int rc = rows != NULL ? CL_OK : CL_ERR_NOMEM;
    while (rc == CL_OK && count == LEDGER_SLICE_RECORDS_MAX) {
        rc = ledger_keys_slice(ledger, after, rows, LEDGER_SLICE_RECORDS_MAX, &count);
        for (size_t i = 0; i < count && rc == CL_OK; i++)
            print_key(ctl, &rows[i]);
        if (count > 0)
            memcpy(after, rows[count - 1].public_z85, sizeof after);
    }
    free(rows);
    ledger_destroy(&ledger);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot read keys: %s\n", cl_strerror(rc));
        return EXIT_DECLINED;
    }
    return 0;
}

static int parse_count(const char *text, uint32_t max, uint32_t *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end != '\0' || text[0] == '-' || v == 0 || v > max)
        return CL_ERR_INVALID;
    *out = (uint32_t)v;
    return CL_OK;
}

/* Limits as options; money in major units of the partner's currency is not known here,
 * so --max-amount takes minor units (cents). */
/* Which limits the command line gives (the others keep their value, or with --reset go
 * back to the default). */
enum { GIVE_AMOUNT = 1, GIVE_POINTS = 2, GIVE_BURNS = 4, GIVE_RATE = 8, GIVE_RESET = 16 };

static int parse_limits(int argc, char **argv, Coalition__PartnerLimitsRequest *body,
                        unsigned *given)
{
    static const struct option longopts[] = {{"max-amount", required_argument, NULL, 'm'},
                                             {"max-points", required_argument, NULL, 'p'},
                                             {"burns-per-minute", required_argument, NULL, 'b'},
                                             {"requests-per-second", required_argument, NULL, 'r'},
                                             {"reset", no_argument, NULL, 'R'},
                                             {NULL, 0, NULL, 0}};
    static const unsigned bits[] = {['m'] = GIVE_AMOUNT,
                                    ['p'] = GIVE_POINTS,
                                    ['b'] = GIVE_BURNS,
                                    ['r'] = GIVE_RATE,
                                    ['R'] = GIVE_RESET};
    int c;
    optind = 0;
    *given = 0;
    while ((c = getopt_long(argc, argv, "m:p:b:r:", longopts, NULL)) != -1) {
        if (c > 0 && (size_t)c < sizeof bits / sizeof bits[0])
            *given |= bits[c];
        if (c == 'R')
            continue;
        uint32_t n = 0;
        char *end = NULL;
        long long v = c == 'm' || c == 'p' ? strtoll(optarg, &end, 10) : 0;
        bool bad = (c == 'm' || c == 'p') && (end == optarg || *end != '\0' || v <= 0);
        if (c == 'm' && !bad)
            body->max_amount_minor = v;
        else if (c == 'p' && !bad)
            body->max_points = v;
        else if (c == 'b' && parse_count(optarg, VELOCITY_BURNS_PER_MINUTE_MAX, &n) == CL_OK)
            body->burns_per_member_minute = n;
        else if (c == 'r' && parse_count(optarg, PARTNER_REQUESTS_PER_SECOND_MAX, &n) == CL_OK)
            body->requests_per_second = n;
        else
            return CL_ERR_INVALID;
    }
    return optind + 1 == argc ? CL_OK : CL_ERR_INVALID;
}

/* Limits not given keep the value the ledger holds now (read just before; an operator
 * changing the same partner at the same moment may be overwritten), unless --reset. */
static void keep_current_limits(ctl_t *ctl, const char *partner, unsigned given,
                                Coalition__PartnerLimitsRequest *body)
{
    ledger_t *ledger = NULL;
    ledger_limits_t now;
    if ((given & GIVE_RESET) || !wire_id_valid(partner, PARTNER_ID_LEN_MAX) ||
        ledger_open(&ledger, ctl->ledger_dir, STORE_READ_ONLY) != CL_OK)
        return; /* the broker answers for a partner or ledger that is not there */
    if (ledger_partner_limits(ledger, partner, &now) == CL_OK) {
        if (!(given & GIVE_AMOUNT))
            body->max_amount_minor = now.max_amount_minor;
        if (!(given & GIVE_POINTS))
            body->max_points = now.max_points;
        if (!(given & GIVE_BURNS))
            body->burns_per_member_minute = now.burns_per_member_minute;
        if (!(given & GIVE_RATE))
            body->requests_per_second = now.requests_per_second;
    }
    ledger_destroy(&ledger);
}

static int cmd_partner_limits(ctl_t *ctl, int argc, char **argv)
{
    Coalition__PartnerLimitsRequest body = COALITION__PARTNER_LIMITS_REQUEST__INIT;
    unsigned given = 0;
    if (parse_limits(argc, argv, &body, &given) != CL_OK) {
        fprintf(stderr,
                "coalitionctl: usage: partner limits ID [--max-amount MINOR_UNITS] "
                "[--max-points N] [--burns-per-minute 1..%d] [--requests-per-second 1..%d] "
                "[--reset]\n",
                VELOCITY_BURNS_PER_MINUTE_MAX, PARTNER_REQUESTS_PER_SECOND_MAX);
        return EXIT_USAGE;
    }
    keep_current_limits(ctl, argv[optind], given, &body);
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    body.partner_id = argv[optind];
    env.body_case = COALITION__ENVELOPE__BODY_PARTNER_LIMITS;
    env.partner_limits = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

int ctl_open_read_only(ctl_t *ctl, ledger_t **ledger)
{
    int rc = ledger_open(ledger, ctl->ledger_dir, STORE_READ_ONLY);
    if (rc != CL_OK)
        fprintf(stderr, "coalitionctl: cannot open ledger %s: %s\n", ctl->ledger_dir,
                cl_strerror(rc));
    return rc;
}

static void print_lots(const ctl_t *ctl, const ledger_lot_row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char earned[SETTLE_TIME_TEXT_BYTES], expires[SETTLE_TIME_TEXT_BYTES],
            pending[SETTLE_TIME_TEXT_BYTES];
        settle_time_text(rows[i].earn_ms, earned);
        settle_time_text(rows[i].expiry_ms, expires);
        settle_time_text(rows[i].pending_until_ms, pending);
        if (ctl->json) {
            printf("%s{\"seq\":%" PRIu64 ",\"part\":%u,\"points\":%" PRId64 ",\"issuer\":",
                   i == 0 ? "" : ",", rows[i].seq, rows[i].part, rows[i].points);
            json_write_string(stdout, rows[i].issuer);
            printf(",\"earned\":\"%s\",\"expires\":%s%s%s,\"pending_until\":%s%s%s}", earned,
                   rows[i].expiry_ms ? "\"" : "", rows[i].expiry_ms ? expires : "null",
                   rows[i].expiry_ms ? "\"" : "", rows[i].pending_until_ms ? "\"" : "",
                   rows[i].pending_until_ms ? pending : "null",
                   rows[i].pending_until_ms ? "\"" : "");
            continue;
        }
        printf("  lot %" PRIu64 ".%u  %" PRId64 " points from %s, earned %s, expires %s%s%s\n",
               rows[i].seq, rows[i].part, rows[i].points, rows[i].issuer, earned,
               rows[i].expiry_ms ? expires : "never",
               rows[i].pending_until_ms ? ", pending until " : "",
               rows[i].pending_until_ms ? pending : "");
    }
}

static int cmd_balance(ctl_t *ctl, int argc, char **argv)
{
    bool lots = argc == 3 && strcmp(argv[2], "--lots") == 0;
    if (argc != 2 && !lots) {
        fprintf(stderr, "coalitionctl: usage: balance MEMBER [--lots]\n");
        return EXIT_USAGE;
    }
    ledger_t *ledger = NULL;
    ledger_member_points_t pts;
    static ledger_lot_row_t rows[CTL_LOTS_SHOWN_MAX];
    size_t n = 0;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return EXIT_USAGE;
    int rc = ledger_member_lots(ledger, argv[1], clock_wall_ms(), &pts, rows,
                                lots ? CTL_LOTS_SHOWN_MAX : 0, &n);
    ledger_destroy(&ledger);
    if (rc == CL_ERR_NOT_FOUND) {
        fprintf(stderr, "coalitionctl: unknown member %s\n", argv[1]);
        return EXIT_DECLINED;
    }
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot read balance: %s\n", cl_strerror(rc));
        return EXIT_USAGE;
    }
    char text[AMOUNT_TEXT_BYTES], avail[AMOUNT_TEXT_BYTES], pend[AMOUNT_TEXT_BYTES];
    amount_format_points(pts.balance, text, sizeof text);
    amount_format_points(pts.available, avail, sizeof avail);
    amount_format_points(pts.pending, pend, sizeof pend);
    if (ctl->json) {
        printf("{\"member\":");
        json_write_string(stdout, argv[1]);
        printf(",\"balance\":%" PRId64 ",\"available\":%" PRId64 ",\"pending_points\":%" PRId64,
               pts.balance, pts.available, pts.pending);
        if (lots) {
            printf(",\"lots\":[");
            print_lots(ctl, rows, n);
            printf("]");
        }
        printf("}\n");
    } else {
        printf("%s: %s points (%s available, %s pending)\n", argv[1], text, avail, pend);
        if (lots)
            print_lots(ctl, rows, n);
        if (lots && n == CTL_LOTS_SHOWN_MAX)
            printf("  (the first %d lots, in burn order)\n", CTL_LOTS_SHOWN_MAX);
    }
    return 0;
}

static int print_account(const char *account, int64_t balance, void *ctx)
{
    const ctl_t *ctl = ctx;
    if (ctl->json) {
        printf("{\"account\":");
        json_write_string(stdout, account);
        printf(",\"balance\":%" PRId64 "}\n", balance);
    } else {
        printf("%-48s %20" PRId64 "\n", account, balance);
    }
    return CL_OK;
}

int ctl_print_entry(const journal_entry_t *e, void *ctx)
{
    const ctl_t *ctl = ctx;
    if (!ctl->json) {
        printf("%8" PRIu64 " %-14s %-12s %-8s %-24s member=%s points=%" PRId64, e->seq,
               ledger_entry_kind_name(e->kind), e->partner_id, e->site_id, e->txn_id, e->member_id,
               e->points);
        if (e->original_txn_id[0] != '\0')
            printf(" original=%s/%s", e->original_site_id, e->original_txn_id);
        if (e->added_partner_id[0] != '\0')
            printf(" added=%s", e->added_partner_id);
        if (e->public_key[0] != '\0')
            printf(" key=%s", e->public_key);
        if (e->participant[0] != '\0')
            printf(" participant=%s", e->participant);
        printf("\n");
        return CL_OK;
    }
    printf("{\"seq\":%" PRIu64 ",\"time_ms\":%" PRId64 ",\"kind\":\"%s\",\"partner\":", e->seq,
           e->time_ms, ledger_entry_kind_name(e->kind));
    json_write_string(stdout, e->partner_id);
    printf(",\"txn_id\":");
    json_write_string(stdout, e->txn_id);
    printf(",\"site\":");
    json_write_string(stdout, e->site_id);
    printf(",\"member\":");
    json_write_string(stdout, e->member_id);
    printf(",\"original_txn_id\":");
    json_write_string(stdout, e->original_txn_id);
    printf(",\"original_site\":");
    json_write_string(stdout, e->original_site_id);
    printf(",\"added_partner\":");
    json_write_string(stdout, e->added_partner_id);
    printf(",\"public_key\":");
    json_write_string(stdout, e->public_key);
    printf(",\"participant\":");
    json_write_string(stdout, e->participant);
    printf(",\"amount_minor\":%" PRId64 ",\"currency\":", e->amount_minor);
    json_write_string(stdout, e->currency);
    printf(",\"points\":%" PRId64 ",\"postings\":[", e->points);
    for (size_t i = 0; i < e->n_postings; i++) {
        printf("%s{\"account\":", i > 0 ? "," : "");
        json_write_string(stdout, e->postings[i]->account);
        printf(",\"delta\":%" PRId64 "}", e->postings[i]->delta);
    }
    printf("]}\n");
    return CL_OK;
}

/* Entries from..last, a slice at a time; each slice is read, its transaction ended,
 * and only then printed. */
static int print_journal(ctl_t *ctl, ledger_t *ledger, uint64_t from, uint64_t last)
{
    journal_entry_t *entries[LEDGER_SLICE_RECORDS_MAX];
    int rc = CL_OK;
    while (rc == CL_OK && from <= last) {
        uint64_t left = last - from + 1;
        size_t want = left < LEDGER_SLICE_RECORDS_MAX ? (size_t)left : LEDGER_SLICE_RECORDS_MAX;
        size_t count = 0;
        rc = ledger_journal_slice(ledger, from, entries, want, &count);
        for (size_t i = 0; i < count && rc == CL_OK; i++)
            rc = ctl_print_entry(entries[i], ctl);
        if (count > 0)
            from = entries[count - 1]->seq + 1;
        ledger_journal_slice_free(entries, count);
        if (count < want)
            break; /* the journal ends before `last`: nothing more to read */
    }
    return rc;
}

static int print_accounts(ctl_t *ctl, ledger_t *ledger)
{
    ledger_account_row_t *rows = calloc(LEDGER_SLICE_RECORDS_MAX, sizeof *rows);
    if (rows == NULL)
        return CL_ERR_NOMEM;
    char after[ACCOUNT_NAME_BYTES_MAX] = "";
    size_t count = LEDGER_SLICE_RECORDS_MAX;
    int rc = CL_OK;
    while (rc == CL_OK && count == LEDGER_SLICE_RECORDS_MAX) {
        rc = ledger_accounts_slice(ledger, after, rows, LEDGER_SLICE_RECORDS_MAX, &count);
        for (size_t i = 0; i < count && rc == CL_OK; i++)
            rc = print_account(rows[i].account, rows[i].balance, ctl);
        if (count > 0)
            memcpy(after, rows[count - 1].account, sizeof after);
    }
    free(rows);
    return rc;
}

static int cmd_report(ctl_t *ctl, const char *what, int argc, char **argv)
{
    uint64_t from = 1;
    bool journal = strcmp(what, "journal") == 0;
    if (journal && argc == 3 && strcmp(argv[1], "--from") == 0) {
        char *end = NULL;
        from = strtoull(argv[2], &end, 10);
        if (end == argv[2] || *end != '\0') {
            fprintf(stderr, "coalitionctl: --from needs a sequence number\n");
            return EXIT_USAGE;
        }
    } else if (argc != 1) {
        fprintf(stderr, "coalitionctl: usage: %s\n", journal ? "journal [--from SEQ]" : what);
        return EXIT_USAGE;
    }
    ledger_t *ledger = NULL;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return EXIT_USAGE;
    /* The journal as of now: entries committed while it prints are not chased. */
    int rc = journal ? print_journal(ctl, ledger, from, ledger_last_seq(ledger))
                     : print_accounts(ctl, ledger);
    ledger_destroy(&ledger);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot read the ledger: %s\n", cl_strerror(rc));
        return EXIT_DECLINED;
    }
    return 0;
}

/* Copy a compacted snapshot of the ledger into a new temporary directory `dir`. */
static int take_snapshot(ctl_t *ctl, char *dir, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(dir, size, "%s/%s", tmp != NULL && tmp[0] != '\0' ? tmp : DEFAULT_TMPDIR,
                     SNAPSHOT_DIR_PATTERN);
    if (n < 0 || (size_t)n >= size || mkdtemp(dir) == NULL) {
        fprintf(stderr, "coalitionctl: cannot make a temporary directory %s\n", dir);
        dir[0] = '\0';
        return CL_ERR_IO;
    }
    ledger_t *ledger = NULL;
    int rc = ctl_open_read_only(ctl, &ledger);
    if (rc != CL_OK)
        return rc;
    rc = ledger_snapshot(ledger, dir);
    ledger_destroy(&ledger);
    if (rc != CL_OK)
        fprintf(stderr, "coalitionctl: cannot copy ledger %s into %s: %s\n", ctl->ledger_dir, dir,
                cl_strerror(rc));
    return rc;
}

/* Open the snapshot in `dir` and audit it. *audited says whether ledger_verify ran
 * (its verdict is the return value and `why`), as opposed to the snapshot failing to open. */
static int verify_snapshot(const char *dir, char *why, size_t why_size, uint64_t *seq_out,
                           bool *audited)
{
    ledger_t *snapshot = NULL;
    *audited = false;
    int rc = ledger_open(&snapshot, dir, STORE_READ_ONLY);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot open the snapshot in %s: %s\n", dir, cl_strerror(rc));
        return rc;
    }
    *seq_out = ledger_last_seq(snapshot);
    *audited = true;
    rc = ledger_verify(snapshot, why, why_size);
    ledger_destroy(&snapshot);
    return rc;
}

static int cmd_verify(ctl_t *ctl)
{
    char dir[SNAPSHOT_DIR_BYTES_MAX], why[VERIFY_WHY_BYTES_MAX] = "";
    uint64_t seq = 0;
    bool audited = false;
    int rc = take_snapshot(ctl, dir, sizeof dir);
    if (rc == CL_OK)
        rc = verify_snapshot(dir, why, sizeof why, &seq, &audited);
    if (dir[0] != '\0' && store_env_remove(dir) != CL_OK)
        fprintf(stderr, "coalitionctl: could not remove the snapshot %s\n", dir);
    if (!audited)
        return EXIT_USAGE; /* nothing was audited; the reason is on stderr */
    if (ctl->json) {
        printf("{\"ok\":%s,\"seq\":%" PRIu64 ",\"detail\":", rc == CL_OK ? "true" : "false", seq);
        json_write_string(stdout, why);
        printf("}\n");
    } else {
        printf("verify: %s: %s (snapshot at seq %" PRIu64 ")\n", rc == CL_OK ? "OK" : "FAILED", why,
               seq);
    }
    return rc == CL_OK ? 0 : EXIT_DECLINED;
}

static int cmd_init(ctl_t *ctl)
{
    int rc = ledger_init(ctl->ledger_dir);
    if (rc == CL_ERR_EXISTS) {
        fprintf(stderr, "coalitionctl: %s already holds a ledger; refusing to overwrite it\n",
                ctl->ledger_dir);
        return EXIT_DECLINED;
    }
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot create ledger in %s: %s\n", ctl->ledger_dir,
                cl_strerror(rc));
        return EXIT_DECLINED;
    }
    char secret[SNAPSHOT_DIR_BYTES_MAX], public[SNAPSHOT_DIR_BYTES_MAX];
    snprintf(secret, sizeof secret, "%s/broker.key", ctl->ledger_dir);
    snprintf(public, sizeof public, "%s/broker.pub", ctl->ledger_dir);
    key_pair_t pair;
    rc = keys_generate(&pair);
    if (rc == CL_OK)
        rc = keys_write_secret(secret, &pair, "coalition broker CURVE key");
    if (rc == CL_OK)
        rc = keys_write_public(public, pair.public_z85, "coalition broker public key");
    explicit_bzero(&pair, sizeof pair);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot write the broker's key pair in %s: %s\n",
                ctl->ledger_dir, cl_strerror(rc));
        return EXIT_DECLINED;
    }
    char card_key[CTL_PATH_BYTES_MAX];
    rc = card_keys_default_path(ctl->ledger_dir, card_key, sizeof card_key);
    if (rc == CL_OK && access(card_key, F_OK) != 0)
        rc = card_keys_create(card_key); /* an existing one is kept: cards depend on it */
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot write the card key file %s: %s\n", card_key,
                cl_strerror(rc));
        return EXIT_DECLINED;
    }
    rc = ctl_signing_key_new(ctl->ledger_dir);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot write the operator's signing key in %s: %s\n",
                ctl->ledger_dir, cl_strerror(rc));
        return EXIT_DECLINED;
    }
    printf("initialised an empty ledger in %s; broker public key in %s; statements are signed "
           "with %s/operator.sign (give partners operator.sign.pub); card key file %s "
           "(owner-only, outside the ledger directory: keep it with the broker, back it up "
           "apart)\n",
           ctl->ledger_dir, public, ctl->ledger_dir, card_key);
    return 0;
}

static int dispatch(ctl_t *ctl, int argc, char **argv)
{
    const char *cmd = argv[0];
    if (strcmp(cmd, "init") == 0 && argc == 1)
        return cmd_init(ctl);
    if (strcmp(cmd, "partner") == 0 && argc >= 2 && strcmp(argv[1], "add") == 0)
        return cmd_partner_add(ctl, argc - 1, argv + 1);
    if (strcmp(cmd, "partner") == 0 && argc >= 2 && strcmp(argv[1], "limits") == 0)
        return cmd_partner_limits(ctl, argc - 1, argv + 1);
    if (strcmp(cmd, "key") == 0 && argc >= 2 && strcmp(argv[1], "new") == 0)
        return cmd_key_new(ctl, argc - 1, argv + 1);
    if (strcmp(cmd, "key") == 0 && argc >= 2 && strcmp(argv[1], "revoke") == 0)
        return cmd_key_revoke(ctl, argc - 1, argv + 1);
    if (strcmp(cmd, "key") == 0 && argc == 2 && strcmp(argv[1], "list") == 0)
        return cmd_key_list(ctl);
    if (strcmp(cmd, "partner") == 0 && argc >= 2 && strcmp(argv[1], "topup") == 0)
        return ctl_partner_topup(ctl, argc - 1, argv + 1);
    if (strcmp(cmd, "contract") == 0)
        return ctl_contract(ctl, argc, argv);
    if (strcmp(cmd, "settlement") == 0)
        return ctl_settlement(ctl, argc, argv);
    if (strcmp(cmd, "window") == 0)
        return ctl_window(ctl, argc, argv);
    if (strcmp(cmd, "statement") == 0)
        return ctl_statement(ctl, argc, argv);
    if (strcmp(cmd, "statement-verify") == 0)
        return ctl_statement_verify(ctl, argc, argv);
    if (strcmp(cmd, "reconcile") == 0)
        return ctl_reconcile(ctl, argc, argv);
    if (strcmp(cmd, "liability") == 0)
        return ctl_liability(ctl, argc, argv);
    if (strcmp(cmd, "stats") == 0)
        return ctl_stats(ctl, argc, argv);
    if (strcmp(cmd, "bank") == 0)
        return ctl_bank(ctl, argc, argv);
    if (strcmp(cmd, "enroll") == 0)
        return ctl_enroll(ctl, argc, argv);
    if (strcmp(cmd, "card-key") == 0)
        return ctl_card_key(ctl, argc, argv);
    if (strcmp(cmd, "card-settings") == 0)
        return ctl_card_settings(ctl, argc, argv);
    if (strcmp(cmd, "expiry-policy") == 0)
        return ctl_expiry_policy(ctl, argc, argv);
    if (strcmp(cmd, "expire") == 0)
        return ctl_expire(ctl, argc, argv);
    if (strcmp(cmd, "tiers") == 0)
        return ctl_tiers(ctl, argc, argv);
    if (strcmp(cmd, "rule") == 0)
        return ctl_rule(ctl, argc, argv);
    if (strcmp(cmd, "member") == 0 && argc >= 2 && strcmp(argv[1], "add") == 0)
        return cmd_member_add(ctl, argc - 1, argv + 1);
    if (strcmp(cmd, "balance") == 0)
        return cmd_balance(ctl, argc, argv);
    if (strcmp(cmd, "journal") == 0 || strcmp(cmd, "accounts") == 0)
        return cmd_report(ctl, cmd, argc, argv);
    if (strcmp(cmd, "tail") == 0)
        return ctl_tail(ctl, argc, argv);
    if (strcmp(cmd, "feed-key") == 0)
        return ctl_feed_key(ctl, argc, argv);
    if (strcmp(cmd, "verify") == 0 && argc == 1)
        return cmd_verify(ctl);
    if (strcmp(cmd, "backup") == 0)
        return ctl_backup(ctl, argc, argv);
    if (strcmp(cmd, "restore") == 0)
        return ctl_restore(ctl, argc, argv);
    fprintf(stderr, "coalitionctl: unknown command '%s'; see --help\n", cmd);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"ledger", required_argument, NULL, 'l'},
                                             {"admin", required_argument, NULL, 'a'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    ctl_t ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl.ledger_dir = DEFAULT_LEDGER_DIR;
    int c;
    /* '+': stop at the command so its own options are left for it. */
    while ((c = getopt_long(argc, argv, "+l:a:jh", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': ctl.ledger_dir = optarg; break;
        case 'a': ctl.admin_endpoint = optarg; break;
        case 'j': ctl.json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    log_init("coalitionctl", LOG_WARN);
    pan_protect_process(); /* card numbers pass through this process */
    umask(077);            /* the ledger directory, its files and secret keys are owner-only */
    if (ctl.admin_endpoint == NULL) {
        snprintf(ctl.admin_buf, sizeof ctl.admin_buf, "ipc://%s/admin.sock", ctl.ledger_dir);
        ctl.admin_endpoint = ctl.admin_buf;
    }
    return dispatch(&ctl, argc - optind, argv + optind);
}
