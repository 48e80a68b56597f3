/* bench_settle: what closing a settlement window costs, on a realistic ledger.
 *
 *   build   --partners partners with contracts, --members members and --events earns and
 *           burns (80/20, random partners and members, seeded) applied through the
 *           writer's own path (ledger_batch_begin / ledger_apply / ledger_batch_commit,
 *           BATCH requests per fsync'd commit) into one window, in process
 *   serve   a real broker on that ledger; a CURVE client makes earns one at a time
 *           (authorizations), measuring each round trip
 *   phase 1 --probe-seconds of authorizations alone: the baseline p50/p99/max
 *   phase 2 the same while the operator closes window 1 (all the events) with
 *           `coalitionctl window close 1 --early`, then prints its statement, then keeps
 *           closing each next window early and printing its statement until the phase
 *           ends: the close and statement wall times, and the authorizations' p99 beside
 *           them
 *   check   every window's counters summed over partners hold exactly the approvals made
 *           (build and probe), read from the ledger
 *
 * Exit 0 when the check passes, 1 otherwise, 2 bad usage. Nothing asserts on time. */
#include "client.h"
#include "clock.h"
#include "errors.h"
#include "harness.h"
#include "ledger.h"
#include "settle.h"
#include "wire.h"

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 4096
#define SAMPLES_MAX 2000000
#define CALL_TIMEOUT_MS 30000
#define OUT_BYTES 4096
#define ID_BYTES 24
#define DEFAULT_EVENTS 10000000L
#define DEFAULT_PARTNERS 50
#define DEFAULT_MEMBERS 1000000
#define DEFAULT_PROBE_SECONDS 20
#define EARN_RATE_MILLI 1000

typedef struct options {
    long events;
    int partners, members, probe_seconds;
    uint64_t seed;
} options_t;

typedef struct build {
    ledger_t *l;
    uint64_t rng;
    unsigned ops;
    long earns, burns, declined, approved;
} build_t;

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

typedef struct request {
    envelope_t env;
    char txn[TXN_ID_LEN_MAX + 1], member[ID_BYTES], partner[ID_BYTES];
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerAddRequest add;
    Coalition__ContractSetRequest contract;
} request_t;

static void request_init(build_t *b, request_t *r, const char *partner)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    snprintf(r->partner, sizeof r->partner, "%s", partner);
    snprintf(r->txn, sizeof r->txn, "b%u", ++b->ops);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = r->partner;
    r->env.terminal_id = "bench";
    r->env.site_id = strcmp(partner, OPERATOR_PARTNER_ID) == 0 ? OPERATOR_SITE_ID : "bench";
    r->env.txn_id = r->txn;
}

/* Apply `n` requests in one write transaction, growing the map when it is full. */
static int apply_batch(build_t *b, request_t *reqs, size_t n)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        int rc = ledger_batch_begin(b->l);
        long approved = 0, declined = 0;
        for (size_t i = 0; rc == CL_OK && i < n; i++) {
            uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
            size_t len = 0;
            rc = wire_request_hash(&reqs[i].env, hash);
            if (rc == CL_OK)
                rc = ledger_apply(b->l, &reqs[i].env, hash, clock_wall_ms(), &reply, &len);
            authorization_t *auth = rc == CL_OK ? wire_auth_decode(reply, len) : NULL;
            if (auth != NULL && auth->seq > 0)
                approved++;
            else
                declined++;
            wire_auth_free(auth);
            free(reply);
        }
        if (rc == CL_OK)
            rc = ledger_batch_commit(b->l);
        else
            ledger_batch_abort(b->l);
        if (rc == CL_OK) {
            b->approved += approved;
            b->declined += declined;
            return CL_OK;
        }
        if (rc != CL_ERR_MAP_FULL || ledger_grow(b->l) != CL_OK)
            return rc;
    }
    return CL_ERR_MAP_FULL;
}

static void partner_id(char *buf, int p) { snprintf(buf, ID_BYTES, "p%02d", p); }
static void member_id(char *buf, long m) { snprintf(buf, ID_BYTES, "m%07ld", m); }

static int build_partners(build_t *b, const options_t *o, request_t *reqs)
{
    for (int p = 0; p < o->partners; p++) {
        request_t *r = &reqs[p];
        request_init(b, r, OPERATOR_PARTNER_ID);
        coalition__partner_add_request__init(&r->add);
        partner_id(r->member, p);
        r->add.partner_id = r->member;
        r->add.earn_rate_milli = EARN_RATE_MILLI;
        r->add.currency = "EUR";
        r->env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
        r->env.partner_add = &r->add;
    }
    int rc = apply_batch(b, reqs, (size_t)o->partners);
    struct timespec pause = {0, 5000000};
    nanosleep(&pause, NULL); /* contracts "from now" start after the partner-adds */
    for (int p = 0; rc == CL_OK && p < o->partners; p++) {
        request_t *r = &reqs[p];
        request_init(b, r, OPERATOR_PARTNER_ID);
        coalition__contract_set_request__init(&r->contract);
        partner_id(r->member, p);
        r->contract.partner_id = r->member;
        r->contract.earn_rate_milli = EARN_RATE_MILLI;
        r->contract.currency = "EUR";
        r->contract.issue_price_per_mille = 500 + (int64_t)(next_rand(&b->rng) % 1000);
        r->contract.reimburse_per_mille = 400 + (int64_t)(next_rand(&b->rng) % 800);
        r->contract.fee_minor = (int64_t)(next_rand(&b->rng) % 6);
        r->env.body_case = COALITION__ENVELOPE__BODY_CONTRACT_SET;
        r->env.contract_set = &r->contract;
    }
    return rc == CL_OK ? apply_batch(b, reqs, (size_t)o->partners) : rc;
}

static int build_members(build_t *b, const options_t *o, request_t *reqs)
{
    int rc = CL_OK;
    for (long m = 0; rc == CL_OK && m < o->members; m += BATCH) {
        size_t n = 0;
        for (long k = m; k < o->members && n < BATCH; k++, n++) {
            request_t *r = &reqs[n];
            request_init(b, r, OPERATOR_PARTNER_ID);
            coalition__enroll_request__init(&r->enroll);
            member_id(r->member, k);
            r->enroll.member_id = r->member;
            r->env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
            r->env.enroll = &r->enroll;
        }
        rc = apply_batch(b, reqs, n);
    }
    return rc;
}

/* Earns (80%) and small burns (20%) over random partners and members. */
static void make_event(build_t *b, const options_t *o, request_t *r)
{
    char partner[ID_BYTES];
    partner_id(partner, (int)(next_rand(&b->rng) % (uint64_t)o->partners));
    request_init(b, r, partner);
    member_id(r->member, (long)(next_rand(&b->rng) % (uint64_t)o->members));
    if (next_rand(&b->rng) % 5 != 0) {
        coalition__earn_request__init(&r->earn);
        r->earn.member_id = r->member;
        r->earn.amount_minor = 100 + (int64_t)(next_rand(&b->rng) % 10000);
        r->earn.currency = "EUR";
        r->env.body_case = COALITION__ENVELOPE__BODY_EARN;
        r->env.earn = &r->earn;
        b->earns++;
    } else {
        coalition__burn_request__init(&r->burn);
        r->burn.member_id = r->member;
        r->burn.points = 1 + (int64_t)(next_rand(&b->rng) % 5);
        r->env.body_case = COALITION__ENVELOPE__BODY_BURN;
        r->env.burn = &r->burn;
        b->burns++;
    }
}

static int build_events(build_t *b, const options_t *o, request_t *reqs, double *seconds)
{
    int64_t start = clock_mono_us();
    long before = b->approved;
    int rc = CL_OK;
    for (long e = 0; rc == CL_OK && e < o->events; e += BATCH) {
        size_t n = 0;
        for (long k = e; k < o->events && n < BATCH; k++, n++)
            make_event(b, o, &reqs[n]);
        rc = apply_batch(b, reqs, n);
        if ((e / BATCH) % 244 == 0)
            fprintf(stderr, "bench_settle: %ld of %ld events, %ld approved\n", e, o->events,
                    b->approved - before);
    }
    *seconds = (double)(clock_mono_us() - start) / 1e6;
    return rc;
}

/* ---- authorizations while the operator closes windows ------------------------------------ */

typedef struct probe {
    world_t *w;
    const options_t *o;
    client_t *client;
    atomic_bool stop;
    atomic_int phase; /* samples go to phase 1 or 2 */
    int64_t *samples[3];
    size_t n[3];
    long approved, failed;
    uint64_t rng;
} probe_t;

static void *probe_main(void *arg)
{
    probe_t *p = arg;
    char txn[TXN_ID_LEN_MAX + 1], member[ID_BYTES];
    unsigned i = 0;
    long nonce = (long)clock_wall_ms();
    while (!atomic_load(&p->stop)) {
        envelope_t env = COALITION__ENVELOPE__INIT;
        Coalition__EarnRequest earn = COALITION__EARN_REQUEST__INIT;
        snprintf(txn, sizeof txn, "probe-%ld-%u", nonce, ++i);
        member_id(member, (long)(next_rand(&p->rng) % (uint64_t)p->o->members));
        env.version = WIRE_VERSION;
        env.partner_id = "p00";
        env.terminal_id = "probe";
        env.site_id = "probe";
        env.txn_id = txn;
        earn.member_id = member;
        earn.amount_minor = 1234;
        earn.currency = "EUR";
        env.body_case = COALITION__ENVELOPE__BODY_EARN;
        env.earn = &earn;
        authorization_t *auth = NULL;
        int64_t t0 = clock_mono_us();
        int rc = client_call(p->client, &env, CALL_TIMEOUT_MS, &auth);
        int64_t t1 = clock_mono_us();
        bool ok = rc == CL_OK && auth->code == RC_APPROVED && auth->seq > 0 && !auth->replay;
        wire_auth_free(auth);
        if (!ok) {
            p->failed++;
            continue;
        }
        p->approved++;
        int phase = atomic_load(&p->phase);
        if (p->n[phase] < SAMPLES_MAX)
            p->samples[phase][p->n[phase]++] = t1 - t0;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void print_latency(const char *what, int64_t *s, size_t n)
{
    if (n == 0) {
        printf("%s: no samples\n", what);
        return;
    }
    qsort(s, n, sizeof *s, cmp_i64);
    printf("%s: %zu authorizations, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", what, n,
           (double)s[n / 2] / 1000.0, (double)s[(n * 99) / 100] / 1000.0,
           (double)s[n - 1] / 1000.0);
}

/* Close windows early and print their statements until `until_us`; the first is the one
 * holding every built event. */
static int close_windows(world_t *w, int64_t until_us, int *closes)
{
    char out[OUT_BYTES], id[24], path[HARNESS_PATH_BYTES + 32];
    snprintf(path, sizeof path, "%s/statement.json", w->dir);
    for (uint64_t win = 1; clock_mono_us() < until_us || win == 1; win++) {
        snprintf(id, sizeof id, "%" PRIu64, win);
        int64_t t0 = clock_mono_us();
        int rc = world_ctl(w, out, sizeof out, "window", "close", id, "--early", NULL);
        int64_t t1 = clock_mono_us();
        if (rc == 0)
            rc = world_ctl(w, out, sizeof out, "statement", id, "--out", path, NULL);
        int64_t t2 = clock_mono_us();
        if (rc != 0) {
            fprintf(stderr, "bench_settle: closing window %s failed: %s\n", id, out);
            return 1;
        }
        if (win == 1)
            printf("window 1 close (coalitionctl wall, through the writer): %.1f ms; its "
                   "statement: %.1f ms\n",
                   (double)(t1 - t0) / 1000.0, (double)(t2 - t1) / 1000.0);
        (*closes)++;
        struct timespec gap = {0, 200000000};
        nanosleep(&gap, NULL);
    }
    return 0;
}

/* Every window's counters, summed, against the approvals counted here. */
static int check_counts(world_t *w, long expected)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, w->ledger, STORE_READ_ONLY);
    settle_window_t wins[64];
    settle_partner_row_t *rows = malloc(64 * sizeof *rows);
    uint64_t after = 0, entries = 0;
    size_t nw = 0;
    if (rows == NULL)
        rc = CL_ERR_NOMEM;
    do {
        if (rc == CL_OK)
            rc = ledger_windows_slice(l, after, wins, 64, &nw);
        for (size_t i = 0; rc == CL_OK && i < nw; i++) {
            size_t n = 0;
            rc = ledger_window_counters(l, wins[i].id, NULL, rows, 64, &n);
            for (size_t k = 0; k < n; k++)
                entries += rows[k].c.entries;
            after = wins[i].id;
        }
    } while (rc == CL_OK && nw == 64);
    free(rows);
    ledger_destroy(&l);
    printf("check: %" PRIu64 " entries in the windows' counters, %ld approvals made: %s\n",
           entries, expected, rc == CL_OK && entries == (uint64_t)expected ? "OK" : "MISMATCH");
    return rc == CL_OK && entries == (uint64_t)expected ? 0 : 1;
}

static int parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"events", required_argument, NULL, 'e'},
                                             {"partners", required_argument, NULL, 'p'},
                                             {"members", required_argument, NULL, 'm'},
                                             {"probe-seconds", required_argument, NULL, 's'},
                                             {"seed", required_argument, NULL, 'r'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *o = (options_t){DEFAULT_EVENTS, DEFAULT_PARTNERS, DEFAULT_MEMBERS, DEFAULT_PROBE_SECONDS, 1};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'e': o->events = atol(optarg); break;
        case 'p': o->partners = atoi(optarg); break;
        case 'm': o->members = atoi(optarg); break;
        case 's': o->probe_seconds = atoi(optarg); break;
        case 'r': o->seed = strtoull(optarg, NULL, 10); break;
        case 'h':
            printf("Usage: bench_settle [--events N] [--partners N] [--members N]\n"
                   "                    [--probe-seconds N] [--seed N]\n"
                   "Builds a ledger of N events over the partners and members in one window\n"
                   "(through the writer's path, %d requests per fsync'd commit), serves it\n"
                   "with a real broker, and measures authorizations alone, then while the\n"
                   "operator closes the window and prints its statement. Defaults: %ld events,\n"
                   "%d partners, %d members, %d s per phase.\n",
                   BATCH, DEFAULT_EVENTS, DEFAULT_PARTNERS, DEFAULT_MEMBERS,
                   DEFAULT_PROBE_SECONDS);
            exit(0);
        default: return 2;
        }
    }
    if (optind != argc || o->events < 0 || o->partners < 1 || o->partners > 100 ||
        o->members < 1 || o->probe_seconds < 1) {
        fprintf(stderr, "bench_settle: bad options; see --help\n");
        return 2;
    }
    return 0;
}

static int build_ledger(world_t *w, const options_t *o, long *event_approvals)
{
    build_t b = {NULL, o->seed * 2654435761u + 1, 0, 0, 0, 0, 0};
    request_t *reqs = calloc(BATCH, sizeof *reqs);
    int rc = reqs != NULL ? ledger_open(&b.l, w->ledger, STORE_READ_WRITE) : CL_ERR_NOMEM;
    int64_t t0 = clock_mono_us();
    if (rc == CL_OK)
        rc = build_partners(&b, o, reqs);
    if (rc == CL_OK)
        rc = build_members(&b, o, reqs);
    double members_s = (double)(clock_mono_us() - t0) / 1e6, events_s = 0;
    long before = b.approved;
    if (rc == CL_OK)
        rc = build_events(&b, o, reqs, &events_s);
    *event_approvals = b.approved - before;
    ledger_destroy(&b.l);
    free(reqs);
    if (rc != CL_OK) {
        fprintf(stderr, "bench_settle: building the ledger failed: %s\n", cl_strerror(rc));
        return 1;
    }
    printf("built: %d partners with contracts, %d members in %.1f s; %ld events (%ld earns, "
           "%ld burns) in %.1f s: %.0f events/s through ledger_apply, %d per commit; %ld "
           "approved, %ld declined\n",
           o->partners, o->members, members_s, o->events, b.earns, b.burns, events_s,
           events_s > 0 ? (double)o->events / events_s : 0.0, BATCH, *event_approvals,
           b.declined);
    return 0;
}

static int serve_and_probe(world_t *w, const options_t *o, long event_approvals)
{
    probe_t p;
    memset(&p, 0, sizeof p);
    p.w = w;
    p.o = o;
    p.rng = o->seed + 7;
    world_start_broker(w);
    if (world_client(w, "p00", &p.client) != CL_OK)
        return 1;
    for (int i = 1; i <= 2; i++)
        p.samples[i] = malloc(SAMPLES_MAX * sizeof *p.samples[i]);
    atomic_store(&p.phase, 1);
    pthread_t thread;
    if (p.samples[1] == NULL || p.samples[2] == NULL ||
        pthread_create(&thread, NULL, probe_main, &p) != 0)
        return 1;
    struct timespec phase = {o->probe_seconds, 0};
    nanosleep(&phase, NULL);
    atomic_store(&p.phase, 2);
    int closes = 0;
    int rc = close_windows(w, clock_mono_us() + (int64_t)o->probe_seconds * 1000000, &closes);
    atomic_store(&p.stop, true);
    pthread_join(thread, NULL);
    client_destroy(&p.client);
    print_latency("authorizations alone", p.samples[1], p.n[1]);
    print_latency("authorizations while windows close", p.samples[2], p.n[2]);
    printf("%d window(s) closed and their statements printed during phase 2; %ld probe "
           "authorizations approved, %ld failed\n",
           closes, p.approved, p.failed);
    free(p.samples[1]);
    free(p.samples[2]);
    world_stop_broker(w, SIGTERM);
    if (rc == 0)
        rc = check_counts(w, event_approvals + p.approved);
    return rc != 0 || p.failed != 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    options_t o;
    int rc = parse_options(argc, argv, &o);
    if (rc != 0)
        return rc;
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return 1;
    world_init(w);
    long event_approvals = 0;
    rc = build_ledger(w, &o, &event_approvals);
    if (rc == 0)
        rc = serve_and_probe(w, &o, event_approvals);
    world_destroy(w);
    free(w);
    return rc;
}
