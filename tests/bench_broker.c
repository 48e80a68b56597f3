/* bench_broker: a load generator that drives coalition-broker over the wire, durable
 * exactly as in production (fsync on every commit), and refuses to flatter itself: only a
 * fresh approval (code 00, not a replay, echoing this request's hash, site and points,
 * with a ledger sequence) counts, every txn id carries a run nonce, and the ledger's
 * sequence must have grown by exactly the fresh approvals counted.
 *
 *   setup (admin socket, pipelined) ─► broker restart ─► earns (--clients DEALERs,
 *   --window each, members drawn uniformly by a seeded PRNG) ─► seq check ─► figures
 *
 * The broker is restarted between the phases so that its "per fsync" figure (logged at
 * stop) covers the earns alone. Exit 0 all fresh and the check passed, 1 otherwise, 2 bad
 * usage. Nothing here asserts on time. */
#include "bench_feed.h"
#include "bench_lifecycle.h"
#include "card.h"
#include "clock.h"
#include "errors.h"
#include "harness.h"
#include "keys.h"
#include "ledger.h"
#include "wire.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define CLIENTS_MAX 64
#define WINDOW_MAX 4096
#define MEMBERS_MAX 10000000
#define REQUESTS_MAX 20000000L
#define PORT_MAX 65535
#define REPLY_TIMEOUT_MS 30000
#define ENROLL_WINDOW 8192
#define DEFAULT_CLIENTS 8
#define DEFAULT_WINDOW 256
#define DEFAULT_REQUESTS 200000L
#define DEFAULT_MEMBERS 1000000
#define DEFAULT_SEED 1u
#define BENCH_PARTNER "bench"
#define BENCH_BANK "benchbank"
#define BENCH_BIN "453201"
_Static_assert(MEMBERS_MAX <= 999999999, "a member's index fits a card's 9 digits");
#define BENCH_RATE_LIMIT "1000000" /* requests a second: the highest a partner may be given */
#define BENCH_SITE "bench"
#define BENCH_TERMINAL "bench"
#define EARN_CURRENCY "EUR"
#define EARN_CURRENCY_MINOR_PER_MAJOR 100
#define EARN_AMOUNT_MINOR 1234
#define EARN_RATE_MILLI 1000
/* floor(amount × rate / (1000 × minor units per major)): what the broker must credit. */
#define EARN_POINTS (EARN_AMOUNT_MINOR * EARN_RATE_MILLI / (1000 * EARN_CURRENCY_MINOR_PER_MAJOR))
#define NONCE_BYTES 24     /* hex wall-clock ms, "-", pid */
#define PREFIX_BYTES 56    /* "bench-" nonce "-" client "-" */
#define INDEX_DIGITS_MAX 8 /* REQUESTS_MAX and MEMBERS_MAX have at most 8 digits */
#define ENDPOINT_BYTES (HARNESS_PATH_BYTES + 32)
#define PROBLEM_BYTES 384 /* the longest reason, a 64-byte txn id and 160 of text */
#define LOG_LINE_BYTES 512
#define FSYNC_LINES_MAX 4
#define LOG_TAIL_LINES 20
#define USEC_PER_SEC 1000000.0
#define USEC_PER_MSEC 1000.0

_Static_assert(PREFIX_BYTES - 1 + INDEX_DIGITS_MAX <= TXN_ID_LEN_MAX, "txn ids must fit");
_Static_assert(EARN_POINTS == 12, "the earn the broker is asked to credit");

typedef struct options {
    int clients, window, members, port; /* port 0: a free one */
    long requests;
    uint64_t seed;
    const char *endpoint; /* NULL: start a broker */
    const char *ledger;   /* NULL: a fresh one (own broker) or no seq check (--endpoint) */
    const char *admin;    /* NULL: ipc://LEDGER/admin.sock when the ledger is known */
    bool insecure;        /* plain TCP (the broker runs --insecure) instead of CURVE */
    bool cards;           /* own broker: enrol a card per member from a bank file, earn by card */
    bool lifecycle;       /* own broker: tiers, rules and an expiry policy before the earns */
    int expiry_lots;      /* own broker: lots per member seeded, then expired during the earns */
    const char *key, *broker_key; /* an external broker's: our secret key, its public key */
    int feed_subscribers;         /* subscribers of the journal feed during the earns */
    bool no_feed;                 /* own broker: --feed off */
} options_t;

typedef enum { STREAM_PARTNER, STREAM_ENROLL, STREAM_EARN } stream_kind_t;

/* One request of a stream, by index; the index is the txn id's suffix. */
typedef struct slot {
    int64_t sent_us, latency_us;
    uint64_t seq; /* a fresh approval's ledger sequence, else 0 */
    uint8_t hash[WIRE_HASH_BYTES];
    bool answered;
} slot_t;

typedef struct tally {
    long fresh;                  /* 00, not a replay, everything echoed as sent */
    long replayed;               /* replay flag set (any code) */
    long replayed_approved;      /* of which 00: for setup, "already there" */
    long declined;               /* not a replay, code other than 00 */
    long mismatched;             /* reply not for a request we have pending, or echo wrong */
    long duplicated;             /* a second reply to an answered request */
    long unanswered;             /* sent, no reply before the timeout */
    long unsent;                 /* never sent: the stream gave up first */
    char problem[PROBLEM_BYTES]; /* the first reply that was not fresh */
} tally_t;

/* The client threads connect, then wait here so that the clock starts with all of them. */
typedef struct gate {
    pthread_mutex_t mutex;
    pthread_cond_t opened;
    bool open;
} gate_t;

/* A pipeline of `count` requests over one DEALER, `window` in flight. */
/* CURVE credentials of the earn streams (partner BENCH_PARTNER): NULL for the admin
 * socket's streams and with --insecure. */
typedef struct curve {
    key_pair_t key;
    char server_z85[KEY_Z85_BYTES];
} curve_t;

typedef struct stream {
    stream_kind_t kind;
    const char *endpoint, *partner_id, *site_id;
    const curve_t *curve;
    char prefix[PREFIX_BYTES];
    long count;
    int window, members;
    bool cards;   /* STREAM_EARN: by the member's card instead of its id */
    bool bonuses; /* STREAM_EARN: tiers and rules may add bonus points to the base */
    uint64_t rng;
    gate_t *start; /* NULL: start at once */
    slot_t *slots;
    tally_t tally;
    int64_t start_us, end_us;
} stream_t;

typedef struct request_buf {
    envelope_t env;
    Coalition__EarnRequest earn;
    Coalition__Card card;
    char pan[PAN_DIGITS_MAX + 1], masked[PAN_MASKED_BYTES];
    Coalition__EnrollRequest enroll;
    Coalition__PartnerAddRequest partner;
    char txn[TXN_ID_LEN_MAX + 1];
    char member[MEMBER_ID_LEN_MAX + 1];
} request_buf_t;

typedef struct bench {
    options_t o;
    world_t w;
    bool own;           /* we start and stop the broker */
    const char *ledger; /* NULL: the seq check is skipped */
    char endpoint[ENDPOINT_BYTES], admin[ENDPOINT_BYTES];
    char nonce[NONCE_BYTES];
    uint64_t seq_start, seq_setup, seq_end;
    double setup_s;
    double cpu_mark_s; /* our own CPU time at the start of the phase */
    long setup_fresh;
    int64_t elapsed_us;
    double fresh_per_s, per_fsync;
    int64_t p50_us, p90_us, p99_us, max_us;
    const char *seq_verdict;
    /* --expiry-lots: what was seeded, and the expiry run during the earns. */
    int64_t seeded_points, expired_points, expiry_entries, breakage_before;
    double expiry_s;
    int64_t expiry_start_us, expiry_end_us;
    bool expiry_ok;
    curve_t curve;
    bool curve_on; /* earns over CURVE (the default) */
} bench_t;

/* ---- requests ------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15u;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [0, n): draws in the top sliver that would wrap unevenly are redrawn (the
 * chance of one redraw is below n / 2^64, so the bound is never reached in practice). */
static uint64_t uniform_below(uint64_t *state, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r = splitmix64(state);
    for (int redraw = 0; r >= limit && redraw < 64; redraw++)
        r = splitmix64(state);
    return r % n;
}

/* Member m's card: BENCH_BIN, m in 9 digits, the Luhn check digit. */
static void bench_pan(uint64_t m, char out[PAN_DIGITS_MAX + 1])
{
    snprintf(out, PAN_DIGITS_MAX + 1, "%s%09" PRIu64 "0", BENCH_BIN, m);
    size_t n = strlen(out);
    unsigned sum = 0;
    for (size_t k = 0; k + 1 < n; k++) {
        unsigned d = (unsigned)(out[n - 2 - k] - '0');
        if (k % 2 == 0)
            d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
    }
    out[n - 1] = (char)('0' + (10 - sum % 10) % 10);
    assert(pan_check(out) == PAN_OK);
}

static void build_request(stream_t *s, long i, request_buf_t *b)
{
    envelope_t *env = &b->env;
    coalition__envelope__init(env);
    snprintf(b->txn, sizeof b->txn, "%s%ld", s->prefix, i);
    env->version = WIRE_VERSION;
    env->partner_id = (char *)s->partner_id;
    env->terminal_id = BENCH_TERMINAL;
    env->site_id = (char *)s->site_id;
    env->txn_id = b->txn;
    env->client_time_ms = clock_wall_ms();
    switch (s->kind) {
    case STREAM_PARTNER:
        coalition__partner_add_request__init(&b->partner);
        b->partner.partner_id = BENCH_PARTNER;
        b->partner.earn_rate_milli = EARN_RATE_MILLI;
        b->partner.currency = EARN_CURRENCY;
        env->body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
        env->partner_add = &b->partner;
        break;
    case STREAM_ENROLL:
        coalition__enroll_request__init(&b->enroll);
        snprintf(b->member, sizeof b->member, "m%ld", i);
        b->enroll.member_id = b->member;
        env->body_case = COALITION__ENVELOPE__BODY_ENROLL;
        env->enroll = &b->enroll;
        break;
    case STREAM_EARN: {
        coalition__earn_request__init(&b->earn);
        uint64_t m = uniform_below(&s->rng, (uint64_t)s->members);
        snprintf(b->member, sizeof b->member, "m%" PRIu64, m);
        b->earn.member_id = b->member;
        if (s->cards) {
            bench_pan(m, b->pan);
            pan_mask(b->pan, b->masked);
            coalition__card__init(&b->card);
            b->card.pan = b->pan;
            b->card.masked = b->masked;
            b->earn.card = &b->card;
            b->earn.member_id = "";
        }
        b->earn.amount_minor = EARN_AMOUNT_MINOR;
        b->earn.currency = EARN_CURRENCY;
        env->body_case = COALITION__ENVELOPE__BODY_EARN;
        env->earn = &b->earn;
        break;
    }
    }
}

static int send_request(stream_t *s, void *sock, long i)
{
    request_buf_t b;
    build_request(s, i, &b);
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    size_t len = coalition__envelope__get_packed_size(&b.env);
    if (len > sizeof buf || wire_request_hash(&b.env, s->slots[i].hash) != CL_OK)
        return -1;
    coalition__envelope__pack(&b.env, buf);
    s->slots[i].sent_us = clock_mono_us();
    return zmq_send(sock, buf, len, 0) == (int)len ? 0 : -1;
}

/* ---- replies -------------------------------------------------------------------------- */

/* The request index a txn id names: our prefix, then 1-8 decimal digits; -1 otherwise. */
static long reply_index(const stream_t *s, const char *txn_id)
{
    size_t plen = strlen(s->prefix);
    if (strncmp(txn_id, s->prefix, plen) != 0)
        return -1;
    const char *digits = txn_id + plen;
    size_t n = strspn(digits, "0123456789");
    if (n == 0 || n > INDEX_DIGITS_MAX || digits[n] != '\0')
        return -1;
    long i = strtol(digits, NULL, 10);
    return i < s->count ? i : -1;
}

static void note_problem(tally_t *t, const char *what, const authorization_t *auth)
{
    if (t->problem[0] != '\0')
        return;
    snprintf(t->problem, sizeof t->problem, "%s: txn %.64s code %02d%s: %.160s", what, auth->txn_id,
             (int)auth->code, auth->replay ? " (replay)" : "", auth->text);
}

/* Does the reply echo exactly what this slot's request asked? */
static bool echo_matches(const stream_t *s, const slot_t *slot, const authorization_t *auth)
{
    return auth->request_hash.len == WIRE_HASH_BYTES &&
           memcmp(auth->request_hash.data, slot->hash, WIRE_HASH_BYTES) == 0 &&
           strcmp(auth->site_id, s->site_id) == 0;
}

static void classify(stream_t *s, slot_t *slot, const authorization_t *auth)
{
    tally_t *t = &s->tally;
    int64_t points = s->kind == STREAM_EARN ? EARN_POINTS : 0;
    if (!echo_matches(s, slot, auth)) {
        t->mismatched++;
        note_problem(t, "echo differs from the request", auth);
    } else if (auth->replay) {
        t->replayed++;
        t->replayed_approved += auth->code == RC_APPROVED;
        note_problem(t, "replay", auth);
    } else if (auth->code != RC_APPROVED) {
        t->declined++;
        note_problem(t, "declined", auth);
    } else if (auth->seq == 0 || auth->reversed ||
               (s->bonuses ? auth->base_points != points ||
                                 auth->points != auth->base_points + auth->bonus_points
                           : auth->points != points)) {
        t->mismatched++;
        note_problem(t, "approval without its seq or with other points", auth);
    } else {
        t->fresh++;
        slot->seq = auth->seq;
        bench_feed_saw_reply(auth->seq);
    }
}

/* Receive one reply. 1: it answered a pending request; 0: it did not; -1: timeout. */
static int recv_reply(stream_t *s, void *sock)
{
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    int n = zmq_recv(sock, buf, sizeof buf, 0);
    if (n < 0)
        return zmq_errno() == EAGAIN ? -1 : 0;
    int64_t now_us = clock_mono_us();
    authorization_t *auth =
        (size_t)n <= sizeof buf ? wire_auth_decode(buf, (size_t)n) : NULL; /* n > size: cut */
    long i = auth != NULL ? reply_index(s, auth->txn_id) : -1;
    int answered = 0;
    if (i < 0) {
        s->tally.mismatched++;
        if (auth != NULL)
            note_problem(&s->tally, "reply to no request of this stream", auth);
    } else if (s->slots[i].answered) {
        s->tally.duplicated++;
        note_problem(&s->tally, "second reply", auth);
    } else {
        slot_t *slot = &s->slots[i];
        slot->answered = true;
        slot->latency_us = now_us - slot->sent_us;
        s->end_us = now_us;
        classify(s, slot, auth);
        answered = 1;
    }
    wire_auth_free(auth);
    return answered;
}

/* ---- one stream: a DEALER keeping `window` requests in flight ------------------------- */

static void *dealer_open(void *ctx, const char *endpoint, const curve_t *curve)
{
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = REPLY_TIMEOUT_MS, unlimited = 0;
    if (sock == NULL)
        return NULL;
    if ((curve != NULL &&
         (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, curve->server_z85, KEY_Z85_BYTES) != 0 ||
          zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, curve->key.public_z85, KEY_Z85_BYTES) != 0 ||
          zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, curve->key.secret_z85, KEY_Z85_BYTES) != 0)) ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout) != 0 ||
        zmq_setsockopt(sock, ZMQ_SNDHWM, &unlimited, sizeof unlimited) != 0 ||
        zmq_setsockopt(sock, ZMQ_RCVHWM, &unlimited, sizeof unlimited) != 0 ||
        zmq_connect(sock, endpoint) != 0) {
        fprintf(stderr, "bench_broker: cannot connect to %s: %s\n", endpoint,
                zmq_strerror(zmq_errno()));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

static void stream_pump(stream_t *s, void *sock)
{
    long next = 0, answered = 0;
    s->start_us = clock_mono_us();
    s->end_us = s->start_us;
    while (answered < s->count) {
        while (next < s->count && next - answered < s->window && send_request(s, sock, next) == 0)
            next++;
        if (next == answered)
            break; /* nothing in flight and the next send failed */
        int rc = recv_reply(s, sock);
        if (rc < 0)
            break;
        answered += rc;
    }
    s->tally.unanswered = next - answered;
    s->tally.unsent = s->count - next;
}

static void *stream_main(void *arg)
{
    stream_t *s = arg;
    void *ctx = zmq_ctx_new();
    void *sock = ctx != NULL ? dealer_open(ctx, s->endpoint, s->curve) : NULL;
    if (s->start != NULL) {
        pthread_mutex_lock(&s->start->mutex);
        while (!s->start->open)
            pthread_cond_wait(&s->start->opened, &s->start->mutex);
        pthread_mutex_unlock(&s->start->mutex);
    }
    if (sock != NULL)
        stream_pump(s, sock);
    else
        s->tally.unsent = s->count;
    if (sock != NULL)
        zmq_close(sock);
    if (ctx != NULL)
        zmq_ctx_term(ctx);
    return NULL;
}

static int stream_init(stream_t *s, stream_kind_t kind, const char *endpoint, long count)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->endpoint = endpoint;
    s->count = count;
    s->window = 1;
    s->partner_id = kind == STREAM_EARN ? BENCH_PARTNER : OPERATOR_PARTNER_ID;
    s->site_id = kind == STREAM_EARN ? BENCH_SITE : OPERATOR_SITE_ID;
    s->slots = calloc((size_t)count, sizeof *s->slots);
    return s->slots != NULL ? 0 : -1;
}

static void stream_free(stream_t *s)
{
    free(s->slots);
    s->slots = NULL;
}

static bool stream_all_fresh(const stream_t *s) { return s->tally.fresh == s->count; }

/* ---- the ledger and the broker -------------------------------------------------------- */

static int ledger_seq(const char *dir, uint64_t *seq_out)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, dir, STORE_READ_ONLY);
    if (rc != CL_OK) {
        fprintf(stderr, "bench_broker: cannot open ledger %s read-only: %s\n", dir,
                cl_strerror(rc));
        return -1;
    }
    *seq_out = ledger_last_seq(l);
    ledger_destroy(&l);
    return 0;
}

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Start our broker and make sure it is ours that answers (not another on --port). */
static int broker_start(bench_t *b)
{
    world_start_broker(&b->w);
    int status = 0;
    if (waitpid(b->w.broker.pid, &status, WNOHANG) != 0) {
        fprintf(stderr, "bench_broker: the broker exited at once; something else answers %s\n",
                b->w.broker_endpoint);
        b->w.broker.pid = 0;
        return -1;
    }
    return 0;
}

static int broker_stop(bench_t *b)
{
    int rc = world_stop_broker(&b->w, SIGTERM);
    if (rc != 0)
        fprintf(stderr, "bench_broker: broker stop: expected exit 0, got %d (log %s)\n", rc,
                b->w.broker.log_path);
    return rc == 0 ? 0 : -1;
}

/* An own broker: a fresh temp ledger, or --ledger (initialised if it is not there yet). */
static int world_setup(bench_t *b)
{
    world_init(&b->w);
    b->w.insecure = b->o.insecure;
    b->w.broker_expire_at = "off"; /* no daily expiry run of its own amid the figures */
    b->w.broker_feed = b->o.no_feed ? "off" : NULL;
    if (b->o.port != 0) {
        snprintf(b->w.broker_endpoint, sizeof b->w.broker_endpoint, "tcp://127.0.0.1:%d",
                 b->o.port);
        if (!port_free(b->o.port)) {
            fprintf(stderr, "bench_broker: port %d is in use\n", b->o.port);
            return -1;
        }
    }
    if (b->o.ledger != NULL) {
        if (strlen(b->o.ledger) >= sizeof b->w.ledger) {
            fprintf(stderr, "bench_broker: --ledger path too long\n");
            return -1;
        }
        snprintf(b->w.ledger, sizeof b->w.ledger, "%s", b->o.ledger);
        snprintf(b->w.admin_endpoint, sizeof b->w.admin_endpoint, "ipc://%s/admin.sock",
                 b->o.ledger);
        snprintf(b->w.broker_pub, sizeof b->w.broker_pub, "%s/broker.pub", b->o.ledger);
        if (access(b->o.ledger, F_OK) != 0) {
            char out[256];
            if (world_ctl(&b->w, out, sizeof out, "init", (const char *)NULL) != 0) {
                fprintf(stderr, "bench_broker: coalitionctl init %s failed: %s\n", b->o.ledger,
                        out);
                return -1;
            }
        }
    }
    snprintf(b->endpoint, sizeof b->endpoint, "%s", b->w.broker_endpoint);
    snprintf(b->admin, sizeof b->admin, "ipc://%s/admin.sock", b->w.ledger);
    b->ledger = b->w.ledger;
    return 0;
}

/* The broker logs "writer: R request(s) in C commit(s), X per fsync" at each stop. */
static int fsync_lines(const bench_t *b, double per_fsync[FSYNC_LINES_MAX],
                       char lines[FSYNC_LINES_MAX][LOG_LINE_BYTES])
{
    char line[LOG_LINE_BYTES];
    int n = 0;
    FILE *f = fopen(b->w.broker.log_path, "r");
    while (f != NULL && n < FSYNC_LINES_MAX && fgets(line, sizeof line, f) != NULL) {
        const char *at = strstr(line, "writer:");
        unsigned long long requests = 0, commits = 0;
        if (at == NULL || strstr(at, "per fsync") == NULL ||
            sscanf(at, "writer: %llu request(s) in %llu commit(s)", &requests, &commits) != 2)
            continue;
        snprintf(lines[n], LOG_LINE_BYTES, "%s", at);
        per_fsync[n++] = commits > 0 ? (double)requests / (double)commits : 0.0;
    }
    if (f != NULL)
        fclose(f);
    return n;
}

/* After a failure: the broker's last words, since its log goes with the temp dir. */
static void print_log_tail(const bench_t *b)
{
    static char tail[LOG_TAIL_LINES][LOG_LINE_BYTES];
    size_t n = 0;
    FILE *f = fopen(b->w.broker.log_path, "r");
    while (f != NULL && fgets(tail[n % LOG_TAIL_LINES], LOG_LINE_BYTES, f) != NULL)
        n++;
    if (f != NULL)
        fclose(f);
    size_t first = n > LOG_TAIL_LINES ? n - LOG_TAIL_LINES : 0;
    fprintf(stderr, "bench_broker: the broker log's last %zu line(s):\n", n - first);
    for (size_t i = first; i < n; i++)
        fprintf(stderr, "  %s", tail[i % LOG_TAIL_LINES]);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / USEC_PER_SEC;
}

/* User + system CPU of a running child from /proc/PID/stat (fields 14 and 15, after the
 * parenthesised command name); negative when it cannot be read. */
static double child_cpu_s(pid_t pid)
{
    char path[64], line[LOG_LINE_BYTES];
    unsigned long utime = 0, stime = 0;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    bool ok = f != NULL && fgets(line, sizeof line, f) != NULL;
    if (f != NULL)
        fclose(f);
    const char *after = ok ? strrchr(line, ')') : NULL;
    if (after == NULL ||
        sscanf(after, ") %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1.0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU used during the phase just ended: ours, and our broker's (restarted per phase). */
static void print_cpu(bench_t *b, const char *phase)
{
    double self = self_cpu_s();
    printf("%s: CPU bench_broker %.2f s", phase, self - b->cpu_mark_s);
    b->cpu_mark_s = self;
    if (b->own)
        printf(", broker %.2f s", child_cpu_s(b->w.broker.pid));
    printf("\n");
}

/* ---- phases --------------------------------------------------------------------------- */

static void print_tally(const char *phase, const tally_t *t)
{
    printf("%s: fresh approvals %ld, replays %ld (%ld of approvals), declines %ld, "
           "mismatched %ld, duplicate replies %ld, unanswered %ld, unsent %ld\n",
           phase, t->fresh, t->replayed, t->replayed_approved, t->declined, t->mismatched,
           t->duplicated, t->unanswered, t->unsent);
    if (t->problem[0] != '\0')
        printf("%s: first reply not fresh: %s\n", phase, t->problem);
}

/* Every setup request approved: fresh, or (a re-run on the same ledger) a replay of the
 * approval that already made the partner or member. */
static bool setup_ok(const stream_t *s)
{
    return s->tally.fresh + s->tally.replayed_approved == s->count;
}

static int load_curve(bench_t *b, const char *key_path, const char *server_path)
{
    char why[KEY_WHY_BYTES_MAX];
    if (keys_read_secret(key_path, &b->curve.key, why, sizeof why) != 0 ||
        keys_read_public(server_path, b->curve.server_z85, why, sizeof why) != 0) {
        fprintf(stderr, "bench_broker: %s\n", why);
        return -1;
    }
    b->curve_on = true;
    return 0;
}

/* After the partner exists: its key (our own broker), and a request rate limit above
 * what the benchmark sends, so the broker's capacity is measured, not the limit. */
static int keys_and_limits(bench_t *b)
{
    char out[1024];
    if (world_ctl(&b->w, out, sizeof out, "--admin", b->admin, "partner", "limits", BENCH_PARTNER,
                  "--requests-per-second", BENCH_RATE_LIMIT, (const char *)NULL) != 0) {
        fprintf(stderr, "bench_broker: coalitionctl partner limits failed: %s\n", out);
        return -1;
    }
    b->setup_fresh++; /* the limits are a journal entry */
    if (!b->own || b->o.insecure)
        return 0;
    b->setup_fresh++; /* and so is the key */
    return load_curve(b, world_key(&b->w, BENCH_PARTNER, "partner"), b->w.broker_pub);
}

/* A bank file of one card per member, enrolled with coalitionctl enroll: its wall time
 * and the peak resident memory of coalitionctl (ru_maxrss of the child). */
static int cards_phase(bench_t *b)
{
    char out[1024], path[HARNESS_PATH_BYTES + 16];
    if (world_ctl(&b->w, out, sizeof out, "--admin", b->admin, "bank", "add", BENCH_BANK,
                  (const char *)NULL) != 0) {
        fprintf(stderr, "bench_broker: bank add: %s\n", out);
        return -1;
    }
    b->setup_fresh++;
    snprintf(path, sizeof path, "%s/cards.csv", b->w.dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs("bank_ref,pan,member_id\n", f);
    char pan[PAN_DIGITS_MAX + 1];
    for (int m = 0; m < b->o.members; m++) {
        bench_pan((uint64_t)m, pan);
        fprintf(f, "c%d,%s,m%d\n", m, pan, m);
    }
    if (fclose(f) != 0)
        return -1;
    char *const argv[] = {COALITIONCTL_BIN, "--ledger", b->w.ledger, "--admin", b->admin, "enroll",
                          "--bank",         BENCH_BANK, "--file",    path,      NULL};
    int64_t t0 = clock_mono_us();
    /* Its summary line names its own peak memory (VmHWM): a child's ru_maxrss would count
     * this process's pages too (fork, or vfork until exec). */
    out[0] = '\0';
    int status = harness_run(argv, out, sizeof out);
    double s = (double)(clock_mono_us() - t0) / USEC_PER_SEC;
    if (status != 0) {
        fprintf(stderr, "bench_broker: coalitionctl enroll failed (%d): %s\n", status, out);
        return -1;
    }
    printf("cards: %d-row bank file enrolled in %.2f s: %.0f cards/s\ncards: coalitionctl: %s",
           b->o.members, s, (double)b->o.members / (s > 0 ? s : 1), out);
    b->setup_fresh += b->o.members;
    return 0;
}

static int setup_phase(bench_t *b)
{
    stream_t partner = {.slots = NULL}, enroll = {.slots = NULL};
    int rc = -1;
    if (stream_init(&partner, STREAM_PARTNER, b->admin, 1) != 0 ||
        stream_init(&enroll, STREAM_ENROLL, b->admin, b->o.members) != 0)
        goto out;
    snprintf(partner.prefix, sizeof partner.prefix, "bench-partner-");
    snprintf(enroll.prefix, sizeof enroll.prefix, "bench-enroll-");
    enroll.window = ENROLL_WINDOW;
    int64_t t0 = clock_mono_us();
    stream_main(&partner);
    if (setup_ok(&partner))
        stream_main(&enroll);
    b->setup_s = (double)(clock_mono_us() - t0) / USEC_PER_SEC;
    b->setup_fresh = partner.tally.fresh + enroll.tally.fresh;
    printf("setup: partner %s and %d members over %s in %.2f s (%.0f enrolments/s, window %d)\n",
           BENCH_PARTNER, b->o.members, b->admin, b->setup_s,
           (double)b->o.members / (b->setup_s > 0 ? b->setup_s : 1), ENROLL_WINDOW);
    print_tally("setup partner", &partner.tally);
    print_tally("setup members", &enroll.tally);
    rc = setup_ok(&partner) && setup_ok(&enroll) ? 0 : -1;
    if (rc != 0)
        fprintf(stderr, "bench_broker: not every setup request was approved\n");
    if (rc == 0)
        rc = keys_and_limits(b);
    if (rc == 0 && b->o.cards)
        rc = cards_phase(b);
    long entries = 0;
    if (rc == 0 && b->o.lifecycle)
        rc = bench_lifecycle_setup(&b->w, b->admin, BENCH_PARTNER, &entries);
    b->setup_fresh += entries;
out:
    stream_free(&partner);
    stream_free(&enroll);
    return rc;
}

static int earn_streams_init(bench_t *b, stream_t *streams, gate_t *start)
{
    long share = b->o.requests / b->o.clients, rest = b->o.requests % b->o.clients;
    for (int c = 0; c < b->o.clients; c++) {
        stream_t *s = &streams[c];
        if (stream_init(s, STREAM_EARN, b->endpoint, share + (c < rest ? 1 : 0)) != 0)
            return -1;
        s->curve = b->curve_on ? &b->curve : NULL;
        int len = snprintf(s->prefix, sizeof s->prefix, "bench-%s-%d-", b->nonce, c);
        if (len < 0 || (size_t)len >= sizeof s->prefix)
            return -1;
        s->window = b->o.window;
        s->members = b->o.members;
        s->cards = b->o.cards;
        s->bonuses = b->o.lifecycle;
        uint64_t mix = b->o.seed ^ ((uint64_t)(c + 1) * 0xd1b54a32d192ed03u);
        s->rng = splitmix64(&mix); /* clients' sequences start far apart */
        s->start = start;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest value with at least p% of the values at or below it. */
static int64_t percentile(const int64_t *sorted, long n, int p)
{
    long rank = (n * p + 99) / 100;
    return sorted[rank > 0 ? rank - 1 : 0];
}

static void earn_figures(bench_t *b, const stream_t *streams, tally_t *sum)
{
    int64_t *all = calloc((size_t)b->o.requests, sizeof *all);
    long k = 0;
    memset(sum, 0, sizeof *sum);
    for (int c = 0; c < b->o.clients; c++) {
        const tally_t *t = &streams[c].tally;
        sum->fresh += t->fresh;
        sum->replayed += t->replayed;
        sum->replayed_approved += t->replayed_approved;
        sum->declined += t->declined;
        sum->mismatched += t->mismatched;
        sum->duplicated += t->duplicated;
        sum->unanswered += t->unanswered;
        sum->unsent += t->unsent;
        if (sum->problem[0] == '\0')
            memcpy(sum->problem, t->problem, sizeof sum->problem);
        for (long i = 0; all != NULL && i < streams[c].count; i++) {
            if (streams[c].slots[i].answered)
                all[k++] = streams[c].slots[i].latency_us;
        }
    }
    b->fresh_per_s =
        b->elapsed_us > 0 ? (double)sum->fresh * USEC_PER_SEC / (double)b->elapsed_us : 0.0;
    if (k > 0) {
        qsort(all, (size_t)k, sizeof *all, cmp_i64);
        b->p50_us = percentile(all, k, 50);
        b->p90_us = percentile(all, k, 90);
        b->p99_us = percentile(all, k, 99);
        b->max_us = all[k - 1];
    }
    free(all);
}

/* Requests in flight at most: the window, unless a client has fewer requests than that. */
static long in_flight(const options_t *o)
{
    long per_client = (o->requests + o->clients - 1) / o->clients;
    return (long)o->clients * (per_client < o->window ? per_client : o->window);
}

static void gate_open(gate_t *g)
{
    pthread_mutex_lock(&g->mutex);
    g->open = true;
    pthread_cond_broadcast(&g->opened);
    pthread_mutex_unlock(&g->mutex);
}

/* --expiry-lots: one second into the earns, an expiry run of everything seeded. */
static void *expiry_main(void *arg)
{
    bench_t *b = arg;
    struct timespec second = {1, 0};
    nanosleep(&second, NULL);
    b->expiry_start_us = clock_mono_us();
    b->expiry_ok = bench_lifecycle_expire(&b->w, b->admin, &b->expiry_s, &b->expired_points,
                                          &b->expiry_entries) == 0;
    b->expiry_end_us = clock_mono_us();
    return NULL;
}

/* Latency percentiles of the earns sent while the expiry ran, and of the others. */
static void expiry_figures(const bench_t *b, const stream_t *streams)
{
    int64_t *in = calloc((size_t)b->o.requests, sizeof *in);
    int64_t *out = calloc((size_t)b->o.requests, sizeof *out);
    long n_in = 0, n_out = 0;
    for (int c = 0; in != NULL && out != NULL && c < b->o.clients; c++) {
        for (long i = 0; i < streams[c].count; i++) {
            const slot_t *sl = &streams[c].slots[i];
            if (!sl->answered)
                continue;
            bool during = sl->sent_us >= b->expiry_start_us && sl->sent_us <= b->expiry_end_us;
            if (during)
                in[n_in++] = sl->latency_us;
            else
                out[n_out++] = sl->latency_us;
        }
    }
    if (n_in > 0 && n_out > 0) {
        qsort(in, (size_t)n_in, sizeof *in, cmp_i64);
        qsort(out, (size_t)n_out, sizeof *out, cmp_i64);
        printf("expiry: %ld earns sent while it ran: p50 %.2f ms, p99 %.2f ms, max %.2f ms; "
               "%ld others: p50 %.2f ms, p99 %.2f ms\n",
               n_in, (double)percentile(in, n_in, 50) / USEC_PER_MSEC,
               (double)percentile(in, n_in, 99) / USEC_PER_MSEC,
               (double)in[n_in - 1] / USEC_PER_MSEC, n_out,
               (double)percentile(out, n_out, 50) / USEC_PER_MSEC,
               (double)percentile(out, n_out, 99) / USEC_PER_MSEC);
    } else {
        printf("expiry: the run did not overlap the earns (%ld during, %ld outside): give more "
               "--requests\n",
               n_in, n_out);
    }
    free(in);
    free(out);
}

static int earn_phase(bench_t *b, stream_t *streams, tally_t *sum)
{
    pthread_t threads[CLIENTS_MAX];
    gate_t start = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    int started = 0;
    int rc = earn_streams_init(b, streams, &start);
    for (int c = 0; rc == 0 && c < b->o.clients; c++) {
        rc = pthread_create(&threads[c], NULL, stream_main, &streams[c]) == 0 ? 0 : -1;
        started += rc == 0;
    }
    bench_feed_t *feed = NULL;
    if (rc == 0 && b->o.feed_subscribers > 0) {
        feed = bench_feed_start(b->ledger, b->o.feed_subscribers, b->seq_setup + 1,
                                b->seq_setup + (uint64_t)b->o.requests);
        rc = feed != NULL ? 0 : -1;
    }
    pthread_t expiry;
    bool expiring =
        rc == 0 && b->o.expiry_lots > 0 && pthread_create(&expiry, NULL, expiry_main, b) == 0;
    gate_open(&start); /* also when a thread failed: let the others run out and be joined */
    for (int c = 0; c < started; c++)
        pthread_join(threads[c], NULL);
    if (expiring)
        pthread_join(expiry, NULL);
    bool feed_ok = feed == NULL || bench_feed_finish(feed);
    if (rc != 0) {
        fprintf(stderr, "bench_broker: cannot set up the %d client threads\n", b->o.clients);
        return -1;
    }
    int64_t first_us = streams[0].start_us, last_us = streams[0].end_us;
    for (int c = 1; c < b->o.clients; c++) {
        first_us = streams[c].start_us < first_us ? streams[c].start_us : first_us;
        last_us = streams[c].end_us > last_us ? streams[c].end_us : last_us;
    }
    b->elapsed_us = last_us - first_us;
    earn_figures(b, streams, sum);
    printf("earns: clients %d, window %d per client (%ld in flight), %ld requests, members "
           "drawn uniformly from %d (seed %" PRIu64 ")\n",
           b->o.clients, b->o.window, in_flight(&b->o), b->o.requests, b->o.members, b->o.seed);
    print_tally("earns", sum);
    printf("earns: elapsed %.3f s, %.0f fresh approvals/s\n", (double)b->elapsed_us / USEC_PER_SEC,
           b->fresh_per_s);
    printf("latency us: p50 %" PRId64 ", p90 %" PRId64 ", p99 %" PRId64 ", max %" PRId64 "\n",
           b->p50_us, b->p90_us, b->p99_us, b->max_us);
    if (expiring)
        expiry_figures(b, streams);
    printf("feed: %s, %d subscriber(s) during the earns%s\n",
           b->o.no_feed ? "off (--no-feed)" : "on (the broker's default)", b->o.feed_subscribers,
           feed_ok ? "" : ": a subscriber MISSED entries");
    return (expiring && !b->expiry_ok) || !feed_ok ? -1 : 0;
}

/* ---- the sequence check ----------------------------------------------------------------- */

/* The fresh approvals' sequences must be distinct and all inside (from, to]. */
static bool seqs_account_for(const stream_t *streams, int clients, long fresh, uint64_t from,
                             uint64_t to)
{
    uint64_t *seqs = calloc((size_t)(fresh > 0 ? fresh : 1), sizeof *seqs);
    long k = 0;
    bool ok = seqs != NULL;
    for (int c = 0; ok && c < clients; c++) {
        for (long i = 0; i < streams[c].count && k < fresh; i++) {
            if (streams[c].slots[i].seq != 0)
                seqs[k++] = streams[c].slots[i].seq;
        }
    }
    if (ok)
        qsort(seqs, (size_t)k, sizeof *seqs, cmp_u64);
    for (long i = 0; ok && i < k; i++)
        ok = seqs[i] > from && seqs[i] <= to && (i == 0 || seqs[i] > seqs[i - 1]);
    free(seqs);
    return ok && k == fresh;
}

static bool seq_check(bench_t *b, const stream_t *streams, long fresh)
{
    if (b->ledger == NULL) {
        printf("seq check: SKIPPED (external broker without --ledger DIR: nothing checks that "
               "the ledger grew by the approvals counted)\n");
        b->seq_verdict = "skipped";
        return true;
    }
    uint64_t setup_growth = b->seq_setup - b->seq_start, earn_growth = b->seq_end - b->seq_setup;
    bool setup_grew_ok = setup_growth == (uint64_t)b->setup_fresh;
    bool earn_ok = earn_growth == (uint64_t)fresh + (uint64_t)b->expiry_entries;
    bool seqs_ok = seqs_account_for(streams, b->o.clients, fresh, b->seq_setup, b->seq_end);
    printf("seq check: setup %" PRIu64 " -> %" PRIu64 " (+%" PRIu64 "), counted %ld fresh: %s\n",
           b->seq_start, b->seq_setup, setup_growth, b->setup_fresh,
           setup_grew_ok ? "OK" : "MISMATCH");
    printf("seq check: earns %" PRIu64 " -> %" PRIu64 " (+%" PRIu64
           "), counted %ld fresh and %" PRId64
           " expiry entries: %s; their seqs distinct and in range: %s\n",
           b->seq_setup, b->seq_end, earn_growth, fresh, b->expiry_entries,
           earn_ok ? "OK" : "MISMATCH", seqs_ok ? "OK" : "NO");
    if (!b->own)
        printf("seq check: external broker: any other traffic during the run shows as a "
               "mismatch\n");
    bool ok = setup_grew_ok && earn_ok && seqs_ok;
    b->seq_verdict = ok ? "OK" : "MISMATCH";
    return ok;
}

/* ---- output ------------------------------------------------------------------------------ */

static void print_fsync(bench_t *b)
{
    double per_fsync[FSYNC_LINES_MAX];
    char lines[FSYNC_LINES_MAX][LOG_LINE_BYTES];
    int n = b->own ? fsync_lines(b, per_fsync, lines) : 0;
    b->per_fsync = -1.0;
    if (!b->own) {
        printf("broker: requests per fsync: n/a (external broker; it logs them when it stops)\n");
        return;
    }
    if (n != 2) {
        printf("broker: expected 2 writer lines in %s (setup, earns), found %d\n",
               b->w.broker.log_path, n);
        return;
    }
    printf("broker (setup): %s", lines[0]);
    printf("broker (earns): %s", lines[1]);
    b->per_fsync = per_fsync[1];
}

static void print_summary(const bench_t *b)
{
    char per_fsync[32];
    if (b->per_fsync < 0)
        snprintf(per_fsync, sizeof per_fsync, "n/a");
    else
        snprintf(per_fsync, sizeof per_fsync, "%.0f", b->per_fsync);
    printf("summary: | setup | in flight | fresh approvals/s | p50 | p90 | p99 | max | "
           "requests per fsync | setup time | seq check |\n");
    printf("summary: | `--clients %d --window %d --requests %ld --members %d` | %ld | %.0f | "
           "%.2f ms | %.2f ms | %.2f ms | %.2f ms | %s | %.2f s | %s |\n",
           b->o.clients, b->o.window, b->o.requests, b->o.members, in_flight(&b->o), b->fresh_per_s,
           (double)b->p50_us / USEC_PER_MSEC, (double)b->p90_us / USEC_PER_MSEC,
           (double)b->p99_us / USEC_PER_MSEC, (double)b->max_us / USEC_PER_MSEC, per_fsync,
           b->setup_s, b->seq_verdict);
}

/* ---- options and main ------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: bench_broker [--clients N] [--window N] [--requests N] [--members N]\n"
            "                    [--seed N] [--port N] [--ledger DIR] [--insecure] [--cards]\n"
            "       bench_broker --endpoint ENDPOINT [--ledger DIR | --admin ENDPOINT]\n"
            "                    [--key FILE --broker-key FILE | --insecure] ...\n"
            "Durable earns through coalition-broker over loopback TCP. Counts only fresh\n"
            "approvals, checks the ledger's sequence grew by exactly that many, prints\n"
            "throughput, latency percentiles and requests per fsync. Without --endpoint it\n"
            "starts a broker (on --port, else a free port) on --ledger DIR, else on a fresh\n"
            "ledger. With --endpoint, --ledger DIR (read-only) enables the sequence check and\n"
            "setup through ipc://DIR/admin.sock; without it both are skipped.\n"
            "Earns go over CURVE as partner bench (own broker: a key made with coalitionctl;\n"
            "external: --key and --broker-key), or plain TCP with --insecure (the broker\n"
            "must run --insecure too). Setup raises bench's request rate limit.\n"
            "--lifecycle (own broker): setup also sets tiers, three rules at bench and an\n"
            "expiry policy; earns are checked as base points plus bonuses.\n"
            "--expiry-lots K (own broker): K lots per member are seeded in process (dated\n"
            "2 h ago, 1 h term), then expired by coalitionctl expire one second into the\n"
            "earns: its wall time, and the earns' latency while it ran and otherwise.\n"
            "--cards (own broker): setup also enrols one card per member from a bank file\n"
            "with coalitionctl enroll (its cards/s and peak memory printed), and the earns\n"
            "name the member by card.\n"
            "--feed-subscribers N (own broker or --ledger): N subscribers of the broker's\n"
            "journal feed read every earn's entry during the earns: their lag from commit\n"
            "to receipt and in seqs behind the newest approval, p50/p99/max; each must get\n"
            "every seq once, in order. --no-feed (own broker): the broker runs --feed off.\n"
            "Defaults: --clients %d --window %d --requests %ld --members %d --seed %u\n"
            "Exit 0 every earn a fresh approval and the check passed, 1 otherwise, 2 usage.\n",
            DEFAULT_CLIENTS, DEFAULT_WINDOW, DEFAULT_REQUESTS, DEFAULT_MEMBERS, DEFAULT_SEED);
}

static int parse_long(const char *name, const char *arg, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "bench_broker: --%s %s: expected %ld..%ld\n", name, arg, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_option(options_t *o, int c, const char *arg)
{
    long v = 0;
    int rc = 0;
    switch (c) {
    case 'c':
        rc = parse_long("clients", arg, 1, CLIENTS_MAX, &v);
        o->clients = (int)v;
        break;
    case 'w':
        rc = parse_long("window", arg, 1, WINDOW_MAX, &v);
        o->window = (int)v;
        break;
    case 'n':
        rc = parse_long("requests", arg, 1, REQUESTS_MAX, &v);
        o->requests = v;
        break;
    case 'm':
        rc = parse_long("members", arg, 1, MEMBERS_MAX, &v);
        o->members = (int)v;
        break;
    case 'p':
        rc = parse_long("port", arg, 1, PORT_MAX, &v);
        o->port = (int)v;
        break;
    case 's':
        rc = parse_long("seed", arg, 0, LONG_MAX, &v);
        o->seed = (uint64_t)v;
        break;
    case 'e': o->endpoint = arg; break;
    case 'l': o->ledger = arg; break;
    case 'a': o->admin = arg; break;
    case 'I': o->insecure = true; break;
    case 'C': o->cards = true; break;
    case 'L': o->lifecycle = true; break;
    case 'X':
        rc = parse_long("expiry-lots", arg, 1, 1000, &v);
        o->expiry_lots = (int)v;
        break;
    case 'F':
        rc = parse_long("feed-subscribers", arg, 0, BENCH_FEED_SUBSCRIBERS_MAX, &v);
        o->feed_subscribers = (int)v;
        break;
    case 'N': o->no_feed = true; break;
    case 'k': o->key = arg; break;
    case 'K': o->broker_key = arg; break;
    default: rc = -1;
    }
    return rc;
}

static int parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"clients", required_argument, NULL, 'c'},
                                             {"window", required_argument, NULL, 'w'},
                                             {"requests", required_argument, NULL, 'n'},
                                             {"members", required_argument, NULL, 'm'},
                                             {"port", required_argument, NULL, 'p'},
                                             {"seed", required_argument, NULL, 's'},
                                             {"endpoint", required_argument, NULL, 'e'},
                                             {"ledger", required_argument, NULL, 'l'},
                                             {"admin", required_argument, NULL, 'a'},
                                             {"insecure", no_argument, NULL, 'I'},
                                             {"key", required_argument, NULL, 'k'},
                                             {"broker-key", required_argument, NULL, 'K'},
                                             {"cards", no_argument, NULL, 'C'},
                                             {"lifecycle", no_argument, NULL, 'L'},
                                             {"expiry-lots", required_argument, NULL, 'X'},
                                             {"feed-subscribers", required_argument, NULL, 'F'},
                                             {"no-feed", no_argument, NULL, 'N'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    for (;;) {
        int c = getopt_long(argc, argv, "c:w:n:m:p:s:e:l:a:k:K:h", longopts, NULL);
        if (c == -1)
            break;
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (parse_option(o, c, optarg) != 0) {
            usage(stderr);
            return -1;
        }
    }
    if ((o->endpoint != NULL && strlen(o->endpoint) >= HARNESS_PATH_BYTES) ||
        (o->ledger != NULL && strlen(o->ledger) >= HARNESS_PATH_BYTES) ||
        (o->admin != NULL && strlen(o->admin) >= HARNESS_PATH_BYTES)) {
        fprintf(stderr, "bench_broker: --endpoint, --ledger, --admin: at most %d bytes\n",
                HARNESS_PATH_BYTES - 1);
        return -1;
    }
    if ((o->lifecycle || o->expiry_lots > 0) &&
        (o->endpoint != NULL || o->cards || (o->lifecycle && o->expiry_lots > 0))) {
        fprintf(stderr, "bench_broker: --lifecycle and --expiry-lots each go with our own broker, "
                        "alone\n");
        return -1;
    }
    if ((o->feed_subscribers > 0 && (o->no_feed || (o->endpoint != NULL && o->ledger == NULL))) ||
        (o->no_feed && o->endpoint != NULL)) {
        fprintf(stderr, "bench_broker: --feed-subscribers needs the broker's ledger (ours, or "
                        "--ledger) and its feed; --no-feed goes with our own broker\n");
        return -1;
    }
    if (optind != argc || o->requests < o->clients || (o->endpoint != NULL && o->port != 0) ||
        (o->endpoint == NULL && o->admin != NULL)) {
        fprintf(stderr, "bench_broker: --requests must be >= --clients; --port and --admin "
                        "go with one broker only (--port: ours, --admin: --endpoint's)\n");
        return -1;
    }
    return 0;
}

/* An external broker: its endpoint; the ledger (read-only) and admin socket if given. */
static int external_setup(bench_t *b)
{
    if (!b->o.insecure && (b->o.key == NULL || b->o.broker_key == NULL)) {
        fprintf(stderr, "bench_broker: --endpoint needs --key and --broker-key, or --insecure\n");
        return -1;
    }
    if (!b->o.insecure && load_curve(b, b->o.key, b->o.broker_key) != 0)
        return -1;
    snprintf(b->endpoint, sizeof b->endpoint, "%s", b->o.endpoint);
    b->ledger = b->o.ledger;
    if (b->o.admin != NULL)
        snprintf(b->admin, sizeof b->admin, "%s", b->o.admin);
    else if (b->o.ledger != NULL)
        snprintf(b->admin, sizeof b->admin, "ipc://%s/admin.sock", b->o.ledger);
    return 0;
}

static void print_start(const bench_t *b)
{
    printf("bench_broker: %s broker on %s, ledger %s\n", b->own ? "own" : "external", b->endpoint,
           b->ledger != NULL ? b->ledger : "(unknown: no seq check)");
    printf("bench_broker: transport %s\n",
           b->o.insecure ? "plain TCP (--insecure)" : "CURVE (earns authenticated by key)");
    printf("bench_broker: run nonce %s (in every earn's txn id), member seed %" PRIu64 "\n",
           b->nonce, b->o.seed);
}

static int breakage_of(const bench_t *b, int64_t *out)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, b->ledger, STORE_READ_ONLY);
    if (rc == CL_OK)
        rc = ledger_account_balance(l, ACCOUNT_BREAKAGE, out);
    ledger_destroy(&l);
    return rc == CL_OK ? 0 : -1;
}

/* --expiry-lots, with our broker stopped: the lots seeded in process (setup entries). */
static int seed_lots(bench_t *b)
{
    if (b->o.expiry_lots == 0)
        return 0;
    uint64_t entries = 0;
    int rc = breakage_of(b, &b->breakage_before);
    if (rc == 0)
        rc = bench_lifecycle_seed(b->ledger, BENCH_PARTNER, b->o.members, b->o.expiry_lots,
                                  EARN_AMOUNT_MINOR, &b->seeded_points, &entries);
    b->setup_fresh += (long)entries;
    return rc;
}

/* What the expiry run says it posted is what breakage gained, and all that was seeded. */
static bool breakage_check(const bench_t *b)
{
    if (b->o.expiry_lots == 0)
        return true;
    int64_t after = 0;
    bool ok = breakage_of(b, &after) == 0 && after - b->breakage_before == b->expired_points &&
              b->expired_points == b->seeded_points;
    printf("breakage check: seeded %" PRId64 " points, the run expired %" PRId64
           ", breakage grew by %" PRId64 ": %s\n",
           b->seeded_points, b->expired_points, after - b->breakage_before, ok ? "OK" : "MISMATCH");
    return ok;
}

/* Setup, then earns, each bracketed by a read of the ledger's last sequence; our own
 * broker is stopped at each read so that the read is final and the writer logs its
 * commit figures per phase. Returns the exit status. */
static int run(bench_t *b, stream_t *streams)
{
    tally_t sum;
    bool ledger = b->ledger != NULL;
    b->cpu_mark_s = self_cpu_s();
    if ((ledger && ledger_seq(b->ledger, &b->seq_start) != 0) || (b->own && broker_start(b) != 0))
        return 1;
    if (b->admin[0] == '\0')
        printf("setup: SKIPPED (no admin socket: partner %s and members m0..m%d must exist)\n",
               BENCH_PARTNER, b->o.members - 1);
    else if (setup_phase(b) != 0)
        return 1;
    print_cpu(b, "setup");
    if ((b->own && broker_stop(b) != 0) || seed_lots(b) != 0 ||
        (ledger && ledger_seq(b->ledger, &b->seq_setup) != 0) || (b->own && broker_start(b) != 0))
        return 1;
    if (earn_phase(b, streams, &sum) != 0)
        return 1;
    print_cpu(b, "earns");
    int stopped = b->own ? broker_stop(b) : 0;
    if (ledger && ledger_seq(b->ledger, &b->seq_end) != 0)
        return 1;
    print_fsync(b);
    bool checked = seq_check(b, streams, sum.fresh) && breakage_check(b);
    print_summary(b);
    bool all_fresh = true;
    for (int c = 0; c < b->o.clients; c++)
        all_fresh = all_fresh && stream_all_fresh(&streams[c]);
    if (!all_fresh)
        printf("bench_broker: FAILED: %ld of %ld earns were not fresh approvals\n",
               b->o.requests - sum.fresh, b->o.requests);
    return all_fresh && checked && stopped == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static bench_t b;                 /* large (paths, figures); one per process */
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows as it happens, also into a file */
    b.o = (options_t){.clients = DEFAULT_CLIENTS,
                      .window = DEFAULT_WINDOW,
                      .members = DEFAULT_MEMBERS,
                      .requests = DEFAULT_REQUESTS,
                      .seed = DEFAULT_SEED};
    if (parse_options(argc, argv, &b.o) != 0)
        return 2;
    int len = snprintf(b.nonce, sizeof b.nonce, "%" PRIx64 "-%ld", (uint64_t)clock_wall_ms(),
                       (long)getpid());
    if (len < 0 || (size_t)len >= sizeof b.nonce)
        return 2;
    b.own = b.o.endpoint == NULL;
    b.seq_verdict = "not reached";
    stream_t *streams = calloc((size_t)b.o.clients, sizeof *streams);
    int rc = streams == NULL ? 2 : 0;
    if (rc == 0 && b.own && world_setup(&b) != 0)
        rc = 2;
    if (rc == 0 && !b.own && external_setup(&b) != 0)
        rc = 2;
    if (rc == 0) {
        print_start(&b);
        rc = run(&b, streams);
    }
    for (int c = 0; streams != NULL && c < b.o.clients; c++)
        stream_free(&streams[c]);
    free(streams);
    if (b.own && rc == 1)
        print_log_tail(&b);
    if (b.own)
        world_destroy(&b.w);
    fflush(stdout);
    return rc;
}
