/* coalitionctl expiry-policy and expire: the points expiry policy (show, or set from a
 * time on) and an expiry run as of a time, slice by slice through the broker's writer. */
#include "ctl.h"

#include "card.h"
#include "clock.h"
#include "errors.h"
#include "settle.h"

#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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
