/* coalitionctl expiry-policy and expire: the points expiry policy (show, or set from a
 * time on) and an expiry run as of a time, slice by slice through the broker's writer. */
#include "ctl.h"

#include "card.h"
#include "clock.h"
#include "errors.h"
#include "amount.h"
#include "json.h"
#include "settle.h"

#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rules a listing shows per partner (RULES_ACTIVE_PER_PARTNER_MAX are stored at most). */
#define RULES_LISTED_PER_PARTNER 16
/* Slices one expire command asks for at most: 256 members each, so a billion members. */
#define CTL_EXPIRE_SLICES_MAX 4000000u

/* "0" (none) or a period such as 1095d: seconds into *out. */
static int parse_period_or_none(const char *what, const char *text, int64_t max, int64_t *out)
{
    if (strcmp(text, "0") == 0 || strcmp(text, "none") == 0) {
        *out = 0;
        return 0;
    }
    if (card_parse_period(text, max, out) == 0)
        return 0;
    fprintf(stderr,
            "coalitionctl: %s '%s' is not 0, none or a period such as 365d (at most %" PRId64
            "d)\n",
            what, text, max / 86400);
    return EXIT_USAGE;
}

static int policy_show(ctl_t *ctl)
{
    ledger_t *l = NULL;
    ledger_expiry_policy_t rows[64];
    size_t n = 0;
    int rc = ctl_open_read_only(ctl, &l);
    if (rc != 0)
        return rc;
    rc = ledger_expiry_policies(l, rows, sizeof rows / sizeof rows[0], &n);
    ledger_destroy(&l);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: expiry policies: %s\n", cl_strerror(rc));
        return EXIT_DECLINED;
    }
    if (n == 0 && !ctl->json)
        printf("no expiry policy: points never expire\n");
    for (size_t i = 0; i < n; i++) {
        char from[SETTLE_TIME_TEXT_BYTES];
        settle_time_text(rows[i].from_ms, from);
        if (ctl->json)
            printf("{\"from\":\"%s\",\"from_ms\":%" PRId64 ",\"term_seconds\":%" PRId64
                   ",\"inactivity_seconds\":%" PRId64 ",\"seq\":%" PRIu64 "}\n",
                   from, rows[i].from_ms, rows[i].term_seconds, rows[i].inactivity_seconds,
                   rows[i].set_seq);
        else
            printf("from %s: term %" PRId64 " days, inactivity %" PRId64
                   " days (0: none) (seq %" PRIu64 ")\n",
                   from, rows[i].term_seconds / 86400, rows[i].inactivity_seconds / 86400,
                   rows[i].set_seq);
    }
    return 0;
}

int ctl_expiry_policy(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {{"from", required_argument, NULL, 'f'},
                                             {"term", required_argument, NULL, 't'},
                                             {"inactivity", required_argument, NULL, 'i'},
                                             {NULL, 0, NULL, 0}};
    if (argc == 1)
        return policy_show(ctl);
    Coalition__ExpiryPolicyRequest body = COALITION__EXPIRY_POLICY_REQUEST__INIT;
    const char *from = "now", *term = NULL, *inactivity = NULL;
    int c, rc = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'f')
            from = optarg;
        else if (c == 't')
            term = optarg;
        else if (c == 'i')
            inactivity = optarg;
        else
            return EXIT_USAGE;
    }
    if (optind != argc || (term == NULL && inactivity == NULL)) {
        fprintf(stderr, "coalitionctl: usage: expiry-policy [--from TIME] [--term D] "
                        "[--inactivity D] (D: 0, none or N{d|h|m|s}; what is not given is none)\n");
        return EXIT_USAGE;
    }
    if (strcmp(from, "now") != 0 && ctl_parse_time(from, &body.from_ms) != CL_OK) {
        fprintf(stderr, "coalitionctl: --from '%s' is not now, @EPOCH_MS or a UTC date\n", from);
        return EXIT_USAGE;
    }
    if (term != NULL)
        rc = parse_period_or_none("--term", term, EXPIRY_TERM_SECONDS_MAX, &body.term_seconds);
    if (rc == 0 && inactivity != NULL)
        rc = parse_period_or_none("--inactivity", inactivity, EXPIRY_INACTIVITY_SECONDS_MAX,
                                  &body.inactivity_seconds);
    if (rc != 0)
        return rc;
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_EXPIRY_POLICY;
    env.expiry_policy = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

/* One slice: its answer's points, entries (`balance`) and whether more is due. */
static int expire_slice(ctl_t *ctl, int64_t as_of_ms, unsigned n, int64_t *points, int64_t *entries,
                        bool *more)
{
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__ExpireRequest body = COALITION__EXPIRE_REQUEST__INIT;
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    size_t used = strlen(txn_id);
    snprintf(txn_id + used, sizeof txn_id - used, "-x%u", n);
    body.as_of_ms = as_of_ms;
    env.body_case = COALITION__ENVELOPE__BODY_EXPIRE;
    env.expire = &body;
    authorization_t *auth = NULL;
    int rc = ctl_send_admin(ctl, &env, &auth);
    if (auth == NULL)
        return rc;
    if (rc != 0)
        fprintf(stderr, "coalitionctl: expire: %02d %s\n", (int)auth->code, auth->text);
    *points += auth->points;
    *entries += auth->balance;
    *more = auth->pending;
    wire_auth_free(auth);
    return rc;
}

int ctl_expire(ctl_t *ctl, int argc, char **argv)
{
    int64_t as_of = 0;
    if (argc != 3 || strcmp(argv[1], "--as-of") != 0 || ctl_parse_time(argv[2], &as_of) != CL_OK) {
        fprintf(stderr, "coalitionctl: usage: expire --as-of TIME (now, @EPOCH_MS or a UTC "
                        "date; never later than the broker's clock)\n");
        return EXIT_USAGE;
    }
    if (as_of == 0) /* "now": this clock, never later than the broker's on this machine */
        as_of = clock_wall_ms();
    int64_t points = 0, entries = 0;
    bool more = true;
    unsigned slices = 0;
    int rc = 0;
    int64_t started = clock_mono_ms();
    while (rc == 0 && more && slices < CTL_EXPIRE_SLICES_MAX)
        rc = expire_slice(ctl, as_of, slices++, &points, &entries, &more);
    char when[SETTLE_TIME_TEXT_BYTES];
    settle_time_text(as_of, when);
    double secs = (double)(clock_mono_ms() - started) / 1000.0;
    if (ctl->json)
        printf("{\"as_of\":\"%s\",\"points_expired\":%" PRId64 ",\"entries\":%" PRId64
               ",\"slices\":%u,\"seconds\":%.3f,\"complete\":%s}\n",
               when, points, entries, slices, secs, rc == 0 && !more ? "true" : "false");
    else
        printf("expired as of %s: %" PRId64 " points in %" PRId64
               " journal entries (%u slice(s), %.1f s)%s\n",
               when, points, entries, slices, secs,
               rc == 0 && !more ? "" : "; stopped before the end: run it again");
    return rc;
}

/* ---- tiers ---------------------------------------------------------------------------- */

static int tiers_show(ctl_t *ctl)
{
    ledger_t *l = NULL;
    ledger_tier_row_t rows[TIERS_MAX];
    size_t n = 0;
    int rc = ctl_open_read_only(ctl, &l);
    if (rc != 0)
        return rc;
    rc = ledger_tiers(l, rows, TIERS_MAX, &n);
    ledger_destroy(&l);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: tiers: %s\n", cl_strerror(rc));
        return EXIT_DECLINED;
    }
    if (n == 0 && !ctl->json)
        printf("no tiers: every earn is x1\n");
    for (size_t i = 0; i < n; i++) {
        char mult[AMOUNT_TEXT_BYTES];
        amount_format_minor(rows[i].multiplier_milli, 3, mult, sizeof mult);
        if (ctl->json)
            printf("{\"tier\":\"%s\",\"threshold_points\":%" PRId64 ",\"multiplier\":\"%s\"}\n",
                   rows[i].name, rows[i].threshold_points, mult);
        else
            printf("%-16s from %" PRId64 " qualifying points: x%s\n", rows[i].name,
                   rows[i].threshold_points, mult);
    }
    return 0;
}

/* "Base:0:1,Silver:5000:1.5,Gold:20000:2" into the request (texts in `buf`). */
static int parse_tiers(char *spec, Coalition__TierSettingsRequest *r, Coalition__Tier *tiers,
                       Coalition__Tier **ptrs)
{
    char *save = NULL;
    r->n_tiers = 0;
    for (char *t = strtok_r(spec, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        char *name = t, *thr = strchr(t, ':'), *mult = thr != NULL ? strchr(thr + 1, ':') : NULL;
        if (r->n_tiers == TIERS_MAX || thr == NULL || mult == NULL)
            return EXIT_USAGE;
        *thr++ = '\0';
        *mult++ = '\0';
        Coalition__Tier *x = &tiers[r->n_tiers];
        coalition__tier__init(x);
        x->name = name;
        char *end = NULL;
        long long threshold = strtoll(thr, &end, 10);
        if (end == thr || *end != '\0' || amount_parse_rate_milli(mult, &x->multiplier_milli) != 0)
            return EXIT_USAGE;
        x->threshold_points = threshold;
        ptrs[r->n_tiers++] = x;
    }
    assert(r->n_tiers <= TIERS_MAX);
    r->tiers = ptrs;
    return 0;
}

int ctl_tiers(ctl_t *ctl, int argc, char **argv)
{
    if (argc == 1)
        return tiers_show(ctl);
    char spec[1024];
    Coalition__TierSettingsRequest body = COALITION__TIER_SETTINGS_REQUEST__INIT;
    Coalition__Tier tiers[TIERS_MAX], *ptrs[TIERS_MAX];
    bool none = argc == 2 && strcmp(argv[1], "--none") == 0;
    if (!none && (argc != 3 || strcmp(argv[1], "--set") != 0 || strlen(argv[2]) >= sizeof spec ||
                  (snprintf(spec, sizeof spec, "%s", argv[2]),
                   parse_tiers(spec, &body, tiers, ptrs) != 0))) {
        fprintf(stderr,
                "coalitionctl: usage: tiers [--set NAME:THRESHOLD:MULTIPLIER,... | "
                "--none] (e.g. Base:0:1,Silver:5000:1.5,Gold:20000:2; at most %d)\n",
                TIERS_MAX);
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_TIER_SETTINGS;
    env.tier_settings = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

/* ---- rules ---------------------------------------------------------------------------- */

static const char *kind_name(int kind)
{
    switch (kind) {
    case COALITION__RULE_KIND__RULE_MULTIPLIER: return "multiplier";
    case COALITION__RULE_KIND__RULE_THRESHOLD: return "threshold";
    case COALITION__RULE_KIND__RULE_FIRST_EARN: return "first-earn";
    default: return "?";
    }
}

static int rule_list(ctl_t *ctl, int argc, char **argv)
{
    static ledger_rule_row_t rows[SETTLE_PARTNERS_MAX * RULES_LISTED_PER_PARTNER];
    size_t n = 0;
    ledger_t *l = NULL;
    int rc = ctl_open_read_only(ctl, &l);
    if (rc != 0)
        return rc;
    rc = ledger_rules(l, argc >= 3 ? argv[2] : NULL, rows, sizeof rows / sizeof rows[0], &n);
    ledger_destroy(&l);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: rules: %s\n", cl_strerror(rc));
        return EXIT_DECLINED;
    }
    for (size_t i = 0; i < n; i++) {
        const ledger_rule_row_t *r = &rows[i];
        char from[SETTLE_TIME_TEXT_BYTES], until[SETTLE_TIME_TEXT_BYTES], mult[AMOUNT_TEXT_BYTES];
        settle_time_text(r->from_ms, from);
        settle_time_text(r->until_ms, until);
        amount_format_minor(r->multiplier_milli, 3, mult, sizeof mult);
        if (ctl->json)
            printf("{\"id\":%" PRIu64 ",\"partner\":\"%s\",\"kind\":\"%s\",\"from\":\"%s\","
                   "\"until\":%s%s%s,\"multiplier\":\"%s\",\"threshold_minor\":%" PRId64
                   ",\"bonus_points\":%" PRId64 "}\n",
                   r->id, r->partner_id, kind_name(r->kind), from, r->until_ms ? "\"" : "",
                   r->until_ms ? until : "null", r->until_ms ? "\"" : "", mult, r->threshold_minor,
                   r->bonus_points);
        else
            printf("%" PRIu64 " %s %s from %s until %s: multiplier x%s, threshold %" PRId64
                   " minor, bonus %" PRId64 "\n",
                   r->id, r->partner_id, kind_name(r->kind), from, r->until_ms ? until : "no end",
                   mult, r->threshold_minor, r->bonus_points);
    }
    if (n == 0 && !ctl->json)
        printf("no rules\n");
    return 0;
}

static int rule_times(const char *from, const char *until, Coalition__RuleAddRequest *b)
{
    if (from != NULL && strcmp(from, "now") != 0 && ctl_parse_time(from, &b->from_ms) != CL_OK)
        return EXIT_USAGE;
    if (until != NULL && ctl_parse_time(until, &b->until_ms) != CL_OK)
        return EXIT_USAGE;
    return 0;
}

static int rule_add(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {{"multiplier", required_argument, NULL, 'm'},
                                             {"threshold", required_argument, NULL, 't'},
                                             {"bonus", required_argument, NULL, 'b'},
                                             {"first-earn-bonus", required_argument, NULL, 'f'},
                                             {"from", required_argument, NULL, 'F'},
                                             {"until", required_argument, NULL, 'U'},
                                             {NULL, 0, NULL, 0}};
    Coalition__RuleAddRequest b = COALITION__RULE_ADD_REQUEST__INIT;
    const char *opt[128] = {0};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
        if (c > 0 && c < 128)
            opt[c] = optarg;
    char *end = NULL;
    int rc = optind == argc - 1 ? 0 : EXIT_USAGE; /* argv[0] "add", then PARTNER */
    if (rc == 0 && opt['m'] != NULL) {
        b.kind = COALITION__RULE_KIND__RULE_MULTIPLIER;
        rc = amount_parse_rate_milli(opt['m'], &b.multiplier_milli) == 0 ? 0 : EXIT_USAGE;
    } else if (rc == 0 && opt['t'] != NULL) {
        b.kind = COALITION__RULE_KIND__RULE_THRESHOLD;
        rc = amount_parse_minor(opt['t'], 2, &b.threshold_minor) == 0 && opt['b'] != NULL
                 ? 0
                 : EXIT_USAGE;
        b.bonus_points = rc == 0 ? strtoll(opt['b'], &end, 10) : 0;
    } else if (rc == 0 && opt['f'] != NULL) {
        b.kind = COALITION__RULE_KIND__RULE_FIRST_EARN;
        b.bonus_points = strtoll(opt['f'], &end, 10);
    } else
        rc = EXIT_USAGE;
    if (rc == 0 && end != NULL && *end != '\0')
        rc = EXIT_USAGE;
    if (rc == 0)
        rc = rule_times(opt['F'], opt['U'], &b);
    if (rc != 0) {
        fprintf(stderr, "coalitionctl: usage: rule add PARTNER (--multiplier X | --threshold "
                        "AMOUNT --bonus N | --first-earn-bonus N) [--from TIME] [--until TIME]\n");
        return EXIT_USAGE;
    }
    b.partner_id = argv[argc - 1];
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_RULE_ADD;
    env.rule_add = &b;
    return ctl_send_admin(ctl, &env, NULL);
}

static int rule_end(ctl_t *ctl, int argc, char **argv)
{
    Coalition__RuleEndRequest b = COALITION__RULE_END_REQUEST__INIT;
    char *end = NULL;
    bool at = argc == 6 && strcmp(argv[4], "--at") == 0;
    if ((argc != 4 && !at) || (b.rule_id = strtoull(argv[3], &end, 10)) == 0 || *end != '\0' ||
        (at && strcmp(argv[5], "now") != 0 && ctl_parse_time(argv[5], &b.at_ms) != CL_OK)) {
        fprintf(stderr, "coalitionctl: usage: rule end PARTNER ID [--at TIME]\n");
        return EXIT_USAGE;
    }
    b.partner_id = argv[2];
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    env.body_case = COALITION__ENVELOPE__BODY_RULE_END;
    env.rule_end = &b;
    return ctl_send_admin(ctl, &env, NULL);
}

int ctl_rule(ctl_t *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "list") == 0 && argc <= 3)
        return rule_list(ctl, argc, argv);
    if (argc >= 3 && strcmp(argv[1], "add") == 0)
        return rule_add(ctl, argc - 1, argv + 1);
    if (argc >= 4 && strcmp(argv[1], "end") == 0)
        return rule_end(ctl, argc, argv);
    fprintf(stderr, "coalitionctl: usage: rule add|list|end ...; see --help\n");
    return EXIT_USAGE;
}
