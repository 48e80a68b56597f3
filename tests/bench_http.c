/* bench_http: the agent's HTTP/JSON API against its ipc till socket, in one sitting.
 * A real broker (CURVE, fsync on every commit) and one agent serving both; --members
 * members seeded into the ledger in process before the broker starts; then rounds that
 * alternate the two paths (ipc, http, ipc, http, ...), each --requests earns from
 * --clients tills at once, every till sending one request and waiting for its answer
 * (closed loop: what a checkout does). Per round: earns/s, p50 and p99 per request. Then
 * the medians of the rounds, the ratio http/ipc, and the check: every earn a fresh
 * approval (code 00, not a replay, its own ledger sequence) and the ledger's sequence
 * grown by exactly their number. Exit 0 when the check passed, 1 otherwise, 2 bad usage.
 * Nothing here asserts on time. */
#include "clock.h"
#include "coalition_pos.h"
#include "errors.h"
#include "harness.h"
#include "ledger.h"
#include "wire.h"

#include <arpa/inet.h>
#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLIENTS_MAX 64
#define ROUNDS_MAX 16
#define MEMBERS_MAX 10000000
#define SEED_BATCH 10000
#define PARTNER "bench"
#define REPLY_BYTES_MAX 4096
#define REQUEST_BYTES_MAX 1024
#define CALL_TIMEOUT_MS 30000
#define EARN_MINOR 1234 /* 12.34 EUR: 12 points at 1 point per EUR */
#define EARN_POINTS 12
_Static_assert(ROUNDS_MAX % 2 == 0, "rounds come in pairs");
#define BENCH_STR_(x) #x
#define BENCH_STR(x) BENCH_STR_(x)

typedef struct options {
    int clients, rounds, members;
    long requests; /* per round */
} options_t;

typedef enum path { PATH_IPC, PATH_HTTP } path_t;

typedef struct till {
    path_t path;
    int index, port;
    const char *endpoint;
    long from, count; /* earns numbered from..from+count-1 this round */
    int members;
    unsigned run;
    int64_t *latency_us;
    long fresh, bad;
} till_t;

/* ---- seeding members in process -------------------------------------------------- */

static int apply(ledger_t *l, envelope_t *env, int *code)
{
    uint8_t hash[WIRE_HASH_BYTES], *reply = NULL;
    size_t len = 0;
    int rc = wire_request_hash(env, hash);
    if (rc == CL_OK)
        rc = ledger_apply(l, env, hash, clock_wall_ms(), &reply, &len);
    authorization_t *auth = rc == CL_OK ? wire_auth_decode(reply, len) : NULL;
    *code = auth != NULL ? (int)auth->code : RC_SYSTEM_ERROR;
    wire_auth_free(auth);
    free(reply);
    return rc;
}

static int seed_batch(ledger_t *l, int from, int members);

static int seed_members(const char *dir, int members)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, dir, STORE_READ_WRITE);
    int64_t t0 = clock_mono_us();
    for (int from = 0; rc == CL_OK && from < members; from += SEED_BATCH) {
        rc = seed_batch(l, from, members);
        if (rc == CL_ERR_MAP_FULL && ledger_grow(l) == CL_OK)
            rc = seed_batch(l, from, members);
    }
    double s = (double)(clock_mono_us() - t0) / 1e6;
    ledger_destroy(&l);
    if (rc != CL_OK)
        fprintf(stderr, "bench_http: seeding members failed: %s\n", cl_strerror(rc));
    else
        printf("seed: %d members enrolled in process in %.1f s\n", members, s);
    return rc;
}

/* Members from..from+SEED_BATCH-1 in one commit. */
static int seed_batch(ledger_t *l, int from, int members)
{
    int rc = ledger_batch_begin(l);
    for (int i = from; i < from + SEED_BATCH && i < members && rc == CL_OK; i++) {
        char txn[TXN_ID_LEN_MAX + 1], member[MEMBER_ID_LEN_MAX + 1];
        snprintf(txn, sizeof txn, "seed-%d", i);
        snprintf(member, sizeof member, "m%d", i);
        envelope_t env;
        coalition__envelope__init(&env);
        env.version = WIRE_VERSION;
        env.partner_id = PARTNER;
        env.site_id = "seed";
        env.terminal_id = "seed";
        env.txn_id = txn;
        Coalition__EnrollRequest e = COALITION__ENROLL_REQUEST__INIT;
        e.member_id = member;
        env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
        env.enroll = &e;
        int code = 0;
        rc = apply(l, &env, &code);
        if (rc == CL_OK && code != RC_APPROVED)
            rc = CL_ERR_INVALID;
    }
    return rc == CL_OK ? ledger_batch_commit(l) : (ledger_batch_abort(l), rc);
}

/* ---- the two kinds of till --------------------------------------------------------- */

static void txn_of(const till_t *t, long i, char *txn, size_t size)
{
    snprintf(txn, size, "b%u-%c-%ld", t->run, t->path == PATH_IPC ? 'i' : 'h', i);
}

static int http_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* One keep-alive POST /v1/earn and its whole reply (headers and body) into `reply`. */
static int http_earn(int fd, const char *txn, const char *member, char *reply, size_t size)
{
    char body[256], req[REQUEST_BYTES_MAX];
    int bn = snprintf(body, sizeof body, "{\"member\":\"%s\",\"amount\":%d}", member, EARN_MINOR);
    int n = snprintf(req, sizeof req,
                     "POST /v1/earn HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "application/json\r\nIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s",
                     txn, bn, body);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return -1;
    size_t used = 0;
    long want = -1;
    while (want < 0 || (long)used < want) {
        ssize_t got = recv(fd, reply + used, size - 1 - used, 0);
        if (got <= 0)
            return -1;
        used += (size_t)got;
        reply[used] = '\0';
        const char *end = strstr(reply, "\r\n\r\n");
        const char *cl = strstr(reply, "Content-Length: ");
        if (want < 0 && end != NULL && cl != NULL)
            want = (long)(end + 4 - reply) + strtol(cl + 16, NULL, 10);
        if (used + 1 >= size)
            return -1;
    }
    return strncmp(reply, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
}

/* A fresh approval in JSON text: code 00, not a replay, a ledger sequence. */
static bool json_fresh(const char *reply)
{
    const char *seq = strstr(reply, "\"seq\":");
    return strstr(reply, "\"code\":\"00\"") != NULL && strstr(reply, "\"replay\":false") &&
           seq != NULL && strtoull(seq + 6, NULL, 10) > 0 &&
           strstr(reply, "\"points\":" BENCH_STR(EARN_POINTS) ",") != NULL;
}

static void *till_main(void *arg)
{
    till_t *t = arg;
    cpos_t *pos = t->path == PATH_IPC ? cpos_new(t->endpoint, "bench") : NULL;
    int fd = t->path == PATH_HTTP ? http_connect(t->port) : -1;
    if (pos != NULL)
        cpos_set_timeout(pos, CALL_TIMEOUT_MS);
    char txn[TXN_ID_LEN_MAX + 1], member[MEMBER_ID_LEN_MAX + 1], reply[REPLY_BYTES_MAX];
    uint64_t state = (uint64_t)t->run * 1000003u + (uint64_t)t->index * 7919u + 1;
    for (long k = 0; k < t->count && (pos != NULL || fd >= 0); k++) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        snprintf(member, sizeof member, "m%d", (int)((state >> 33) % (uint64_t)t->members));
        txn_of(t, t->from + k, txn, sizeof txn);
        int64_t t0 = clock_mono_us();
        bool fresh = false;
        if (pos != NULL) {
            cpos_result_t r;
            fresh = cpos_earn(pos, txn, member, EARN_MINOR, "EUR", &r) == CPOS_OK &&
                    r.code == RC_APPROVED && !r.replay && r.seq > 0 && r.points == EARN_POINTS;
        } else {
            fresh = http_earn(fd, txn, member, reply, sizeof reply) == 0 && json_fresh(reply);
        }
        t->latency_us[k] = clock_mono_us() - t0;
        t->fresh += fresh;
        t->bad += !fresh;
    }
    cpos_destroy(&pos);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* ---- rounds and figures ------------------------------------------------------------ */

typedef struct round {
    path_t path;
    double seconds, per_s;
    int64_t p50_us, p99_us;
    long fresh, bad;
} round_t;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest value with at least p% of the values at or below it. */
static int64_t percentile(const int64_t *sorted, long n, int p)
{
    long rank = (n * p + 99) / 100;
    return sorted[rank > 0 ? rank - 1 : 0];
}

static int run_round(const options_t *o, path_t path, unsigned run, long from, const char *ipc,
                     int port, round_t *r)
{
    int64_t *lat = calloc((size_t)o->requests, sizeof *lat);
    till_t tills[CLIENTS_MAX];
    pthread_t threads[CLIENTS_MAX];
    if (lat == NULL)
        return -1;
    long per = o->requests / o->clients, at = 0;
    int64_t t0 = clock_mono_us();
    for (int c = 0; c < o->clients; c++) {
        long count = c == o->clients - 1 ? o->requests - at : per;
        tills[c] = (till_t){path, c, port, ipc, from + at, count, o->members, run, lat + at, 0, 0};
        at += count;
        pthread_create(&threads[c], NULL, till_main, &tills[c]);
    }
    memset(r, 0, sizeof *r);
    for (int c = 0; c < o->clients; c++) {
        pthread_join(threads[c], NULL);
        r->fresh += tills[c].fresh;
        r->bad += tills[c].bad;
    }
    assert(at == o->requests);
    r->path = path;
    r->seconds = (double)(clock_mono_us() - t0) / 1e6;
    r->per_s = (double)o->requests / r->seconds;
    qsort(lat, (size_t)o->requests, sizeof *lat, cmp_i64);
    r->p50_us = percentile(lat, o->requests, 50);
    r->p99_us = percentile(lat, o->requests, 99);
    free(lat);
    printf("round %u %-4s %ld earns by %d tills in %.2f s: %.0f earns/s, p50 %.2f ms, p99 %.2f "
           "ms; %ld fresh, %ld not\n",
           run, path == PATH_IPC ? "ipc" : "http", o->requests, o->clients, r->seconds, r->per_s,
           (double)r->p50_us / 1000, (double)r->p99_us / 1000, r->fresh, r->bad);
    return 0;
}

static double median_of(const round_t *rounds, int n, path_t path, int what)
{
    double v[ROUNDS_MAX];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (rounds[i].path == path)
            v[k++] = what == 0   ? rounds[i].per_s
                     : what == 1 ? (double)rounds[i].p50_us / 1000
                                 : (double)rounds[i].p99_us / 1000;
    }
    qsort(v, (size_t)k, sizeof v[0], cmp_double);
    return k == 0 ? 0 : (k % 2 == 1 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2);
}

static void print_medians(const round_t *rounds, int n)
{
    double ipc[3], http[3];
    for (int w = 0; w < 3; w++) {
        ipc[w] = median_of(rounds, n, PATH_IPC, w);
        http[w] = median_of(rounds, n, PATH_HTTP, w);
    }
    printf("median of %d rounds each: ipc %.0f earns/s (p50 %.2f ms, p99 %.2f ms); http %.0f "
           "earns/s (p50 %.2f ms, p99 %.2f ms)\n",
           n / 2, ipc[0], ipc[1], ipc[2], http[0], http[1], http[2]);
    printf("ratio http/ipc: throughput %.2f, p50 %.2f, p99 %.2f\n", http[0] / ipc[0],
           http[1] / ipc[1], http[2] / ipc[2]);
}

static int ledger_seq(const char *dir, uint64_t *seq)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, dir, STORE_READ_ONLY);
    if (rc == CL_OK)
        *seq = ledger_last_seq(l);
    ledger_destroy(&l);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: bench_http [--clients N] [--requests N] [--rounds N] [--members N]\n"
            "The agent's HTTP API against its ipc till socket, alternating rounds of earns\n"
            "from N tills at once (closed loop), one sitting; prints earns/s, p50 and p99 per\n"
            "round, their medians and the ratios, and checks the ledger's count.\n"
            "  --clients N   tills sending at once (default 16, max %d)\n"
            "  --requests N  earns per round (default 50000)\n"
            "  --rounds N    rounds, ipc and http alternating (default 6, even, max %d)\n"
            "  --members N   members seeded in process before the broker starts (default\n"
            "                1000000)\n",
            CLIENTS_MAX, ROUNDS_MAX);
}

static int parse(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"clients", required_argument, NULL, 'c'}, {"requests", required_argument, NULL, 'r'},
        {"rounds", required_argument, NULL, 'R'},  {"members", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    *o = (options_t){16, 6, 1000000, 50000};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        long v = optarg != NULL ? strtol(optarg, NULL, 10) : 0;
        switch (c) {
        case 'c': o->clients = (int)v; break;
        case 'r': o->requests = v; break;
        case 'R': o->rounds = (int)v; break;
        case 'm': o->members = (int)v; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (o->clients < 1 || o->clients > CLIENTS_MAX || o->requests < o->clients || o->rounds < 2 ||
        o->rounds > ROUNDS_MAX || o->rounds % 2 != 0 || o->members < 1 ||
        o->members > MEMBERS_MAX || optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Broker, partner and key through the admin socket; then the members in process. */
static int set_up(world_t *w, const options_t *o, int port)
{
    char out[4096], address[32];
    world_start_broker(w);
    if (world_ctl(w, out, sizeof out, "partner", "add", PARTNER, "--earn-rate", "1", "--currency",
                  "EUR", NULL) != 0 ||
        world_ctl(w, out, sizeof out, "partner", "limits", PARTNER, "--requests-per-second",
                  "1000000", NULL) != 0) {
        fprintf(stderr, "bench_http: setup: %s\n", out);
        return -1;
    }
    world_key(w, PARTNER, "partner");
    if (world_stop_broker(w, SIGTERM) != 0) {
        fprintf(stderr, "bench_http: the broker did not stop cleanly before seeding\n");
        return -1;
    }
    if (seed_members(w->ledger, o->members) != CL_OK)
        return -1;
    world_start_broker(w);
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    static char address_arg[32];
    memcpy(address_arg, address, sizeof address_arg);
    w->agent_args[0] = "--http";
    w->agent_args[1] = address_arg;
    w->agent_args[2] = "--window";
    w->agent_args[3] = "1024";
    world_start_agent(w, PARTNER);
    return 0;
}

int main(int argc, char **argv)
{
    options_t o;
    if (parse(argc, argv, &o) != 0)
        return 2;
    world_t w = {0};
    world_init(&w);
    w.till_wait_ms = CALL_TIMEOUT_MS - 5000;
    int port = harness_free_port();
    uint64_t seq0 = 0, seq1 = 0;
    round_t rounds[ROUNDS_MAX];
    long fresh = 0, bad = 0;
    int rc = set_up(&w, &o, port);
    if (rc == 0)
        rc = ledger_seq(w.ledger, &seq0) == CL_OK ? 0 : -1;
    for (int i = 0; rc == 0 && i < o.rounds; i++) {
        rc = run_round(&o, i % 2 == 0 ? PATH_IPC : PATH_HTTP, (unsigned)i, (long)i * o.requests,
                       w.agents[0].endpoint, port, &rounds[i]);
        fresh += rounds[i].fresh;
        bad += rounds[i].bad;
    }
    if (rc == 0)
        rc = ledger_seq(w.ledger, &seq1) == CL_OK ? 0 : -1;
    if (rc == 0) {
        print_medians(rounds, o.rounds);
        printf("check: %ld fresh approvals, %ld not; ledger seq %" PRIu64 " -> %" PRIu64
               " (+%" PRIu64 ")%s\n",
               fresh, bad, seq0, seq1, seq1 - seq0,
               bad == 0 && seq1 - seq0 == (uint64_t)fresh ? ": ok" : ": MISMATCH");
    }
    bool ok = rc == 0 && bad == 0 && seq1 - seq0 == (uint64_t)fresh;
    world_destroy(&w);
    return ok ? 0 : 1;
}
