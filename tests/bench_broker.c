/* bench_broker: a load generator that drives coalition-broker over the wire with many
 * concurrent clients, durable mode exactly as in production (fsync on every commit).
 * It starts its own broker on a fresh ledger in a temp dir (or uses --endpoint), adds a
 * partner and members, then each client thread keeps --window earns in flight on its
 * own DEALER socket. Prints throughput and latency percentiles; asserts nothing about
 * time. Exit status 1 if any earn was not approved. */
#include "client.h"
#include "clock.h"
#include "harness.h"
#include "wire.h"

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define CLIENTS_MAX 64
#define WINDOW_MAX 4096
#define MEMBERS_MAX 100000
#define REPLY_TIMEOUT_MS 30000
#define ENROLL_WINDOW 256

typedef struct options {
    int clients, window, members;
    long requests;
    const char *endpoint; /* NULL: start a broker */
} options_t;

typedef struct client_run {
    const options_t *o;
    const char *endpoint;
    int index;
    long count;          /* requests this client sends */
    int64_t *latency_us; /* per request */
    long approved, declined, lost;
} client_run_t;

static void earn_envelope(envelope_t *env, Coalition__EarnRequest *earn, char *txn, size_t txn_size,
                          char *member, size_t member_size, int client, long i, int members)
{
    coalition__envelope__init(env);
    coalition__earn_request__init(earn);
    snprintf(txn, txn_size, "bench-%d-%ld", client, i);
    snprintf(member, member_size, "m%ld", (i * 7919 + client) % members);
    env->version = WIRE_VERSION;
    env->partner_id = "bench";
    env->terminal_id = "bench";
    env->site_id = "main";
    env->txn_id = txn;
    env->client_time_ms = clock_wall_ms();
    earn->member_id = member;
    earn->amount_minor = 1234;
    earn->currency = "EUR";
    env->body_case = COALITION__ENVELOPE__BODY_EARN;
    env->earn = earn;
}

static int send_earn(void *sock, const client_run_t *r, long i, int64_t *sent_us)
{
    envelope_t env;
    Coalition__EarnRequest earn;
    char txn[TXN_ID_LEN_MAX + 1], member[MEMBER_ID_LEN_MAX + 1];
    earn_envelope(&env, &earn, txn, sizeof txn, member, sizeof member, r->index, i, r->o->members);
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    size_t len = coalition__envelope__pack(&env, buf);
    sent_us[i] = clock_mono_us();
    return zmq_send(sock, buf, len, 0) == (int)len ? 0 : -1;
}

/* Receive one reply; returns the request index it answers, or -1. */
static long recv_reply(void *sock, client_run_t *r)
{
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    int n = zmq_recv(sock, buf, sizeof buf, 0);
    if (n < 0 || (size_t)n > sizeof buf)
        return -1;
    authorization_t *auth = wire_auth_decode(buf, (size_t)n);
    if (auth == NULL)
        return -1;
    int client = -1;
    long i = -1;
    if (sscanf(auth->txn_id, "bench-%d-%ld", &client, &i) != 2 || client != r->index)
        i = -1;
    if (auth->code == RC_APPROVED)
        r->approved++;
    else
        r->declined++;
    wire_auth_free(auth);
    return i;
}

static void *client_main(void *arg)
{
    client_run_t *r = arg;
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = REPLY_TIMEOUT_MS, hwm = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_connect(sock, r->endpoint);
    int64_t *sent_us = calloc((size_t)r->count, sizeof *sent_us);
    long next = 0, done = 0;
    while (done < r->count) {
        while (next < r->count && next - done < r->o->window) {
            if (send_earn(sock, r, next, sent_us) != 0)
                break;
            next++;
        }
        long i = recv_reply(sock, r);
        if (i < 0 && zmq_errno() == EAGAIN) {
            r->lost += next - done;
            break;
        }
        if (i >= 0 && i < r->count)
            r->latency_us[i] = clock_mono_us() - sent_us[i];
        done++;
    }
    free(sent_us);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Operator setup over the admin socket, pipelined so it takes one commit per window. */
static int admin_setup(const char *admin, int members)
{
    client_t *c = NULL;
    if (client_new(&c, admin) != 0)
        return -1;
    envelope_t env;
    Coalition__PartnerAddRequest p = COALITION__PARTNER_ADD_REQUEST__INIT;
    coalition__envelope__init(&env);
    env.version = WIRE_VERSION;
    env.partner_id = OPERATOR_PARTNER_ID;
    env.terminal_id = "bench";
    env.site_id = OPERATOR_SITE_ID;
    env.txn_id = "bench-partner";
    p.partner_id = "bench";
    p.earn_rate_milli = 1000;
    p.currency = "EUR";
    env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    env.partner_add = &p;
    authorization_t *auth = NULL;
    int rc = client_call(c, &env, REPLY_TIMEOUT_MS, &auth);
    int ok = rc == 0 && auth->code == RC_APPROVED;
    wire_auth_free(auth);
    for (int m = 0; ok && m < members; m++) {
        char txn[32], member[32];
        Coalition__EnrollRequest e = COALITION__ENROLL_REQUEST__INIT;
        snprintf(txn, sizeof txn, "bench-enroll-%d", m);
        snprintf(member, sizeof member, "m%d", m);
        env.txn_id = txn;
        e.member_id = member;
        env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
        env.enroll = &e;
        auth = NULL;
        rc = client_call(c, &env, REPLY_TIMEOUT_MS, &auth);
        ok = rc == 0 && auth->code == RC_APPROVED;
        wire_auth_free(auth);
    }
    client_destroy(&c);
    return ok ? 0 : -1;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: bench_broker [--clients N] [--window N] [--requests N] [--members N]\n"
                 "                    [--endpoint ENDPOINT]\n"
                 "Durable earns through coalition-broker over loopback TCP; prints earns/s and\n"
                 "latency percentiles. Without --endpoint it starts a broker on a fresh ledger.\n"
                 "Defaults: --clients 8 --window 256 --requests 200000 --members 1000\n");
}

static int parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"clients", required_argument, NULL, 'c'},
                                             {"window", required_argument, NULL, 'w'},
                                             {"requests", required_argument, NULL, 'n'},
                                             {"members", required_argument, NULL, 'm'},
                                             {"endpoint", required_argument, NULL, 'e'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "c:w:n:m:e:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->clients = atoi(optarg); break;
        case 'w': o->window = atoi(optarg); break;
        case 'n': o->requests = atol(optarg); break;
        case 'm': o->members = atoi(optarg); break;
        case 'e': o->endpoint = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (o->clients < 1 || o->clients > CLIENTS_MAX || o->window < 1 || o->window > WINDOW_MAX ||
        o->requests < o->clients || o->members < 1 || o->members > MEMBERS_MAX) {
        fprintf(stderr,
                "bench_broker: options out of range (clients 1-%d, window 1-%d, "
                "members 1-%d)\n",
                CLIENTS_MAX, WINDOW_MAX, MEMBERS_MAX);
        return -1;
    }
    return 0;
}

static void report(const options_t *o, client_run_t *runs, int64_t elapsed_us)
{
    long total = 0, approved = 0, declined = 0, lost = 0, k = 0;
    for (int i = 0; i < o->clients; i++) {
        total += runs[i].count;
        approved += runs[i].approved;
        declined += runs[i].declined;
        lost += runs[i].lost;
    }
    int64_t *all = calloc((size_t)total, sizeof *all);
    for (int i = 0; i < o->clients; i++) {
        for (long j = 0; j < runs[i].count; j++) {
            if (runs[i].latency_us[j] > 0)
                all[k++] = runs[i].latency_us[j];
        }
    }
    qsort(all, (size_t)k, sizeof *all, cmp_i64);
    printf("clients %d, window %d per client (%d in flight), %ld earns, %d members\n", o->clients,
           o->window, o->clients * o->window, total, o->members);
    printf("approved %ld, declined %ld, unanswered %ld\n", approved, declined, lost);
    printf("elapsed %.3f s, throughput %.0f durable earns/s\n", (double)elapsed_us / 1e6,
           (double)approved * 1e6 / (double)elapsed_us);
    if (k > 0)
        printf("latency us: p50 %" PRId64 ", p90 %" PRId64 ", p99 %" PRId64 ", max %" PRId64 "\n",
               all[k / 2], all[k * 9 / 10], all[k * 99 / 100], all[k - 1]);
    free(all);
}

int main(int argc, char **argv)
{
    options_t o = {8, 256, 1000, 200000, NULL};
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    world_t w;
    const char *endpoint = o.endpoint;
    if (endpoint == NULL) {
        world_init(&w);
        world_start_broker(&w);
        endpoint = w.broker_endpoint;
        char admin[HARNESS_PATH_BYTES + 32];
        snprintf(admin, sizeof admin, "ipc://%s/admin.sock", w.ledger);
        if (admin_setup(admin, o.members) != 0) {
            fprintf(stderr, "bench_broker: setup through the admin socket failed\n");
            world_destroy(&w);
            return 2;
        }
    }
    client_run_t runs[CLIENTS_MAX];
    pthread_t threads[CLIENTS_MAX];
    for (int i = 0; i < o.clients; i++) {
        runs[i] = (client_run_t){
            .o = &o, .endpoint = endpoint, .index = i, .count = o.requests / o.clients};
        runs[i].latency_us = calloc((size_t)runs[i].count, sizeof(int64_t));
    }
    int64_t start = clock_mono_us();
    for (int i = 0; i < o.clients; i++)
        pthread_create(&threads[i], NULL, client_main, &runs[i]);
    for (int i = 0; i < o.clients; i++)
        pthread_join(threads[i], NULL);
    int64_t elapsed = clock_mono_us() - start;
    report(&o, runs, elapsed);
    long bad = 0;
    for (int i = 0; i < o.clients; i++) {
        bad += runs[i].declined + runs[i].lost;
        free(runs[i].latency_us);
    }
    if (o.endpoint == NULL) {
        printf("broker stop: exit %d\n", world_stop_broker(&w, SIGTERM));
        char line[512];
        FILE *f = fopen(w.broker.log_path, "r");
        while (f != NULL && fgets(line, sizeof line, f) != NULL) {
            if (strstr(line, "per fsync") != NULL)
                printf("broker: %s", strstr(line, "writer:"));
        }
        if (f != NULL)
            fclose(f);
        world_destroy(&w);
    }
    return bad == 0 ? 0 : 1;
}
