/* See bench_lifecycle.h. */
#include "bench_lifecycle.h"

#include "clock.h"
#include "errors.h"
#include "ledger.h"
#include "wire.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEED_BATCH 10000            /* earns per commit while seeding */
#define SEED_TERM_S 1               /* seeded lots expire a second after their earn */
#define AFTER_TERM_S (1095 * 86400) /* then the benchmark's own earns: 36 months */
#define OUT_BYTES 4096

int bench_lifecycle_setup(world_t *w, const char *admin, const char *partner, long *entries)
{
    const char *cmds[][8] = {
        {"tiers", "--set", "Base:0:1,Silver:30:1.25", NULL},
        {"rule", "add", partner, "--multiplier", "1.5", NULL},
        {"rule", "add", partner, "--threshold", "100.00", "--bonus", "50", NULL},
        {"rule", "add", partner, "--first-earn-bonus", "5", NULL},
        {"expiry-policy", "--term", "1095d", "--inactivity", "365d", NULL},
    };
    char out[OUT_BYTES];
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (world_ctl(w, out, sizeof out, "--admin", admin, cmds[i][0], cmds[i][1], cmds[i][2],
                      cmds[i][3], cmds[i][4], cmds[i][5], cmds[i][6], (const char *)NULL) != 0) {
            fprintf(stderr, "bench_broker: coalitionctl %s %s: %s\n", cmds[i][0], cmds[i][1], out);
            return -1;
        }
        (*entries)++;
    }
    printf("lifecycle: tiers Base x1 / Silver x1.25 from 30 points; at %s a x1.5 campaign, 50 "
           "bonus at 100.00 a month, 5 on a first earn; expiry 1095 d term, 365 d inactivity\n",
           partner);
    return 0;
}

/* One request applied in the open batch; its code. */
static int apply(ledger_t *l, envelope_t *env, int64_t now_ms, int *code)
{
    uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
    size_t len = 0;
    int rc = wire_request_hash(env, hash);
    if (rc == CL_OK)
        rc = ledger_apply(l, env, hash, now_ms, &reply, &len);
    authorization_t *auth = rc == CL_OK ? wire_auth_decode(reply, len) : NULL;
    *code = auth != NULL ? (int)auth->code : RC_SYSTEM_ERROR;
    wire_auth_free(auth);
    free(reply);
    return rc;
}

static void envelope(envelope_t *env, const char *partner, const char *site, char *txn)
{
    coalition__envelope__init(env);
    env->version = WIRE_VERSION;
    env->partner_id = (char *)partner;
    env->terminal_id = "seed";
    env->site_id = (char *)site;
    env->txn_id = txn;
}

static int seed_policy(ledger_t *l, int64_t at_ms, int64_t term_s)
{
    envelope_t env;
    char txn[TXN_ID_LEN_MAX + 1];
    snprintf(txn, sizeof txn, "seed-policy-%" PRId64, at_ms);
    envelope(&env, OPERATOR_PARTNER_ID, OPERATOR_SITE_ID, txn);
    Coalition__ExpiryPolicyRequest p = COALITION__EXPIRY_POLICY_REQUEST__INIT;
    p.term_seconds = term_s;
    env.body_case = COALITION__ENVELOPE__BODY_EXPIRY_POLICY;
    env.expiry_policy = &p;
    int code = 0;
    int rc = ledger_batch_begin(l);
    if (rc == CL_OK)
        rc = apply(l, &env, at_ms, &code);
    if (rc == CL_OK)
        rc = ledger_batch_commit(l);
    return rc == CL_OK && code == RC_APPROVED ? 0 : -1;
}

static int seed_batch(ledger_t *l, const char *partner, long from, long to, int members,
                      int64_t amount_minor, int64_t at_ms)
{
    int rc = ledger_batch_begin(l);
    for (long i = from; i < to && rc == CL_OK; i++) {
        envelope_t env;
        char txn[TXN_ID_LEN_MAX + 1], member[MEMBER_ID_LEN_MAX + 1];
        snprintf(txn, sizeof txn, "seed-%ld", i);
        snprintf(member, sizeof member, "m%ld", i % members);
        envelope(&env, partner, "seed", txn);
        Coalition__EarnRequest e = COALITION__EARN_REQUEST__INIT;
        e.member_id = member;
        e.amount_minor = amount_minor;
        e.currency = "EUR";
        env.body_case = COALITION__ENVELOPE__BODY_EARN;
        env.earn = &e;
        int code = 0;
        rc = apply(l, &env, at_ms, &code);
        if (rc == CL_OK && code != RC_APPROVED)
            rc = CL_ERR_INVALID;
    }
    if (rc != CL_OK) {
        ledger_batch_abort(l);
        return rc;
    }
    return ledger_batch_commit(l);
}

int bench_lifecycle_seed(const char *dir, const char *partner, int members, int per_member,
                         int64_t amount_minor, int64_t *points, uint64_t *entries)
{
    ledger_t *l = NULL;
    if (ledger_open(&l, dir, STORE_READ_WRITE) != CL_OK)
        return -1;
    uint64_t seq0 = ledger_last_seq(l);
    int64_t t0 = clock_mono_us();
    long total = (long)members * per_member;
    char account[ACCOUNT_NAME_BYTES_MAX];
    snprintf(account, sizeof account, "partner:%s:issued", partner);
    int64_t issued0 = 0, issued1 = 0;
    int rc = ledger_account_balance(l, account, &issued0) == CL_OK
                 ? seed_policy(l, clock_wall_ms(), SEED_TERM_S)
                 : -1;
    for (long i = 0; i < total && rc == 0; i += SEED_BATCH) {
        long to = i + SEED_BATCH < total ? i + SEED_BATCH : total;
        int r = seed_batch(l, partner, i, to, members, amount_minor, clock_wall_ms());
        if (r == CL_ERR_MAP_FULL && ledger_grow(l) == CL_OK)
            r = seed_batch(l, partner, i, to, members, amount_minor, clock_wall_ms());
        rc = r == CL_OK ? 0 : -1;
        if (rc != 0)
            fprintf(stderr, "bench_broker: seeding lots failed at %ld: %s\n", i, cl_strerror(r));
        if (rc == 0 && (to / SEED_BATCH) % 100 == 0)
            printf("lots: %ld of %ld seeded (%.0f/s)\n", to, total,
                   (double)to * 1e6 / (double)(clock_mono_us() - t0 + 1));
    }
    double s = (double)(clock_mono_us() - t0) / 1e6;
    if (rc == 0 && ledger_account_balance(l, account, &issued1) != CL_OK)
        rc = -1;
    if (rc == 0) /* the benchmark's own earns keep theirs */
        rc = seed_policy(l, clock_wall_ms() + 1, AFTER_TERM_S);
    *entries = ledger_last_seq(l) - seq0;
    *points = issued0 - issued1; /* what the seeded earns issued: their lots */
    printf("lots: %ld lots (%d per member, %d members, %" PRId64 " points) seeded in process in "
           "%.1f s (%.0f earns/s, %d per commit), each expiring a second after its earn\n",
           total, per_member, members, *points, s, (double)total / (s > 0 ? s : 1), SEED_BATCH);
    ledger_destroy(&l);
    return rc;
}

int bench_lifecycle_expire(world_t *w, const char *admin, double *seconds, int64_t *points,
                           int64_t *entries)
{
    char out[OUT_BYTES];
    int64_t t0 = clock_mono_us();
    int rc = world_ctl(w, out, sizeof out, "--admin", admin, "--json", "expire", "--as-of", "now",
                       (const char *)NULL);
    *seconds = (double)(clock_mono_us() - t0) / 1e6;
    const char *p = strstr(out, "\"points_expired\":"), *e = strstr(out, "\"entries\":");
    if (rc != 0 || p == NULL || e == NULL) {
        fprintf(stderr, "bench_broker: coalitionctl expire failed (%d): %s\n", rc, out);
        return -1;
    }
    *points = strtoll(p + strlen("\"points_expired\":"), NULL, 10);
    *entries = strtoll(e + strlen("\"entries\":"), NULL, 10);
    printf("expiry: %s", out);
    return 0;
}
