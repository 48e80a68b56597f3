/* soak_hostile: a hostile-input soak of coalition-broker (a program, not a CTest test).
 * It starts its own broker on a fresh ledger and attacks the partner socket: malformed and
 * hostile messages over an authenticated CURVE connection and over refused ones (unknown
 * keys, plain TCP), then resource attacks (many peers, a peer that never reads, a multipart
 * message that never ends). Every phase prints what it sent, messages a second, replies by
 * code, the broker's resident memory before and after with the bound it is judged by, and
 * the broker's log lines.
 *
 *   setup ─► snapshot ─► 1 hostile ─► 1b huge frames ─► 2a unknown keys ─► 2b plain TCP
 *     ─► 3a many peers ─► 3b never reads ─► 3c unending multipart (libzmq, then a raw
 *     CurveZMQ client, twice) ─► 3d log lines ─► ledger unchanged? ─► a valid earn
 *     ─► coalitionctl verify ─► summary
 *
 * Invariants checked: every reply is one canonical Authorization of at most AUTH_BYTES_MAX
 * bytes, valid UTF-8, echoing only valid ids; nothing hostile is stored (the journal's last
 * seq and every balance are as they were); a refused connection gets nothing back. Exit 0
 * when every check passed, 1 otherwise, 2 on bad usage. Timings are printed, not judged. */
#include "amount.h"
#include "client.h"
#include "clock.h"
#include "errors.h"
#include "harness.h"
#include "keys.h"
#include "ledger.h"
#include "wire.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* ---- options ---------------------------------------------------------------------------- */

#define DEFAULT_MESSAGES 1000000L
#define MESSAGES_MAX 100000000L
#define DEFAULT_SEED 1L
#define DEFAULT_PEERS 2000
#define PEERS_MAX 6000
#define DEFAULT_NEVER_READ 200000L
#define NEVER_READ_MAX 10000000L
#define DEFAULT_MULTIPART_S 10
#define MULTIPART_S_MAX 120

/* ---- the world -------------------------------------------------------------------------- */

#define SOAK_PARTNER "soak"
#define SOAK_OTHER_PARTNER "other" /* never added: a partner id the key does not belong to */
#define SOAK_SITE "site-1"
#define SOAK_CURRENCY "EUR"
#define SOAK_EARN_RATE "2"        /* points per EUR */
#define SOAK_RATE_LIMIT "1000000" /* requests a second: PARTNER_REQUESTS_PER_SECOND_MAX */
#define SOAK_MEMBERS 8
#define SOAK_TERMINALS 16
#define SOAK_CLIENT_TIME_MS INT64_C(1700000000000)
#define SEED_EARN_MINOR 1000  /* member k earns (k + 1) x 10.00 EUR before the snapshot */
#define SEED_EARN_POINTS 20   /* 10.00 EUR at 2 points per EUR */
#define CHECK_EARN_MINOR 1234 /* the valid earn at the end */
#define CHECK_EARN_POINTS 24  /* floor(12.34 x 2) */
#define CHECK_EARN_MEMBER "m1"
#define GHOST_EARN_MINOR 1234        /* earns for members that do not exist */
#define EVIL_EARN_RATE_MILLI 1000000 /* a partner_add from a partner: refused 57 */
#define CURRENCY_LEN 3
#define OUT_BYTES 8192
#define SNAPSHOT_ACCOUNTS_MAX 1024
#define ID_BYTES 80 /* a txn or member id built here: at most 64 bytes and a NUL */

/* ---- limits and timing of the phases ------------------------------------------------------ */

#define WINDOW 256             /* hostile messages awaiting a reply */
#define DRAIN_MAX 4096         /* replies read per poll */
#define REPLY_TIMEOUT_MS 10000 /* no reply for this long: the rest are missing */
#define PROBE_TIMEOUT_MS 5000  /* a legitimate request must be answered within this */
#define SILENCE_MS 500         /* after a phase: replies that should not come */
#define HUGE_SOCKETS 32
#define HUGE_BYTES_MIN 65537 /* the broker's ZMQ_MAXMSGSIZE is 65536 (frontend.c) */
#define HUGE_BYTES_MAX (1024 * 1024)
#define HUGE_WAIT_MS 5000
#define REFUSED_ROUNDS 16
#define REFUSED_SOCKETS 64 /* per round, each with a fresh unrecorded key */
#define REFUSED_SNDHWM 1000
#define REFUSED_WAIT_MS 3000
#define RAW_MESSAGES_PER_CONNECTION 64
#define RAW_READ_TIMEOUT_MS 2000
#define RAW_RECV_BYTES_MAX 4096
#define CONNECT_TIMEOUT_MS 5000
#define PEERS_TIMEOUT_MS 60000
#define HANDSHAKE_IVL_MS 5000 /* the broker drops a connection not authenticated by then */
#define SLOW_CONNECT_MS 1000  /* Linux retransmits a dropped SYN after one second */
#define IDLE_DRAIN_MAX_MS 30000
#define SOCKETS_SPARE 512
#define FDS_PER_PEER 3 /* a raw TCP fd, and a ZeroMQ socket's connection and mailbox */
#define NEVER_READ_SNDTIMEO_MS 10000
#define SETTLE_STEP_MS 200
#define SETTLE_STABLE_MS 1000
#define SETTLE_MAX_MS 20000
#define MULTIPART_FRAME_BYTES 1024
#define MULTIPART_BURST 256
#define MULTIPART_SAMPLE_MS 1000
#define CLOSE_SETTLE_MS 1000

/* ---- the bounds judged ------------------------------------------------------------------ */

#define KIB_PER_MIB 1024L
/* Malformed input, refused connections: nothing is kept per message or per connection. */
#define HOSTILE_RSS_GROWTH_MAX_KIB (32 * KIB_PER_MIB)
/* Held connections: libzmq's session, engine, pipes and CURVE state for an authenticated
 * peer; an accepted socket waiting for its greeting for an idle one. */
#define PEER_AUTH_RSS_KIB_MAX 64L
#define PEER_IDLE_RSS_KIB_MAX 16L
/* A peer that never reads: its pipe holds at most SOCKET_HWM (frontend.c, 100000) replies
 * of about 100 bytes, each in a malloc'd message of about 200 bytes with its pipe entry. */
#define NEVER_READ_RSS_GROWTH_MAX_KIB (64 * KIB_PER_MIB)
/* An unending multipart message has no bound in libzmq: the attack stops here. */
#define MULTIPART_RSS_CAP_KIB (256 * KIB_PER_MIB)
/* With libzmq the frames pile up in our own process: enough to show it. */
#define MULTIPART_OWN_CAP_KIB (64 * KIB_PER_MIB)
/* Each rate-limited call site logs about one line a second (LOG_EVERY_INTERVAL_MS), and a
 * suppressed-count tail; the broker has fewer than this many such sites. */
#define LOG_CALL_SITES_MAX 16
#define BOUND_NONE (-1L)
/* The broker's memory guard in this run (--memory-max-mb): past it (resident) every
 * partner connection is dropped and the freed memory given back. A raw unending multipart message
 * may grow the broker by that much, plus what it gains in one 100 ms guard check. */
#define SOAK_MEMORY_MAX_MB 128
#define MULTIPART_RSS_GROWTH_MAX_KIB ((SOAK_MEMORY_MAX_MB + 64) * KIB_PER_MIB)

/* ---- hostile messages ------------------------------------------------------------------- */

#define HOSTILE_BYTES_MAX 4096
#define TEXT_BYTES_MAX 2304 /* the longest field: a terminal id padding a message past 2048 */
#define EXTRA_BYTES_MAX 64
#define BODY_BYTES_MAX (2 * TEXT_BYTES_MAX + EXTRA_BYTES_MAX + 64)
#define RANDOM_BYTES_MAX 300
#define EXTEND_BYTES_MAX 16
#define LONG_ID_EXTRA_MAX 300
#define OVERSIZE_SLACK_BYTES 64
#define JUNK_BYTES_MAX 16
#define VARINT_BYTES_MAX 10
#define FIELD_NUMBER_MAX 536870911u /* 2^29 - 1 */
#define PRINTABLE_FIRST 0x21
#define PRINTABLE_COUNT 94 /* 0x21 .. 0x7e */
#define PER_MILLE 1000
#define CODES 100 /* response codes are two digits */
#define EXPECT_NO_REPLY (-1)
#define EXPECT_LEDGER (-2) /* passes every check made before the ledger */

/* Field numbers of proto/coalition.proto. */
#define ENV_VERSION 1u
#define ENV_PARTNER 2u
#define ENV_TERMINAL 3u
#define ENV_TXN 4u
#define ENV_CLIENT_TIME 5u
#define ENV_SITE 6u
#define BODY_EARN 10u
#define BODY_BURN 11u
#define BODY_REFUND 12u
#define BODY_BALANCE 14u
#define BODY_PARTNER_ADD 20u
#define BODY_KEY_REVOKE 22u
#define BODY_PARTNER_LIMITS 23u

/* Protobuf wire types. */
#define WT_VARINT 0u
#define WT_FIXED64 1u
#define WT_LEN 2u
#define WT_GROUP_START 3u
#define WT_GROUP_END 4u
#define WT_FIXED32 5u
#define WT_RESERVED6 6u
#define WT_RESERVED7 7u
#define FIXED64_BYTES 8
#define FIXED32_BYTES 4

/* ---- ZMTP 3.0 and CurveZMQ (RFC 23, RFC 26), for the raw clients -------------------------- */

#define ZMTP_GREETING_BYTES 64
#define ZMTP_SIGNATURE_BYTES 10
#define ZMTP_MECHANISM_AT 12
#define ZMTP_MECHANISM_BYTES 20
#define ZMTP_MORE 0x01
#define ZMTP_LONG 0x02
#define ZMTP_COMMAND 0x04
#define ZMTP_SHORT_MAX 255
#define ZMTP_HEADER_BYTES_MAX 9
#define CURVE_NONCE_PREFIX_BYTES 16
#define CURVE_SHORT_NONCE_BYTES 8
#define CURVE_LONG_NONCE_BYTES 16
#define CURVE_KEY_BYTES 32
#define CURVE_COOKIE_BYTES 96
#define CURVE_HELLO_BYTES 200
#define CURVE_HELLO_ZEROS 64
#define CURVE_HELLO_PAD_AT 8
#define CURVE_HELLO_KEY_AT 80
#define CURVE_HELLO_NONCE_AT 112
#define CURVE_HELLO_BOX_AT 120
#define CURVE_WELCOME_BYTES 168
#define CURVE_WELCOME_NONCE_AT 8
#define CURVE_WELCOME_BOX_AT 24
#define CURVE_WELCOME_BOX_BYTES 144
#define CURVE_VOUCH_BYTES (2 * CURVE_KEY_BYTES)
#define CURVE_INITIATE_HEAD_BYTES 113 /* "\x08INITIATE", cookie, short nonce */
#define CURVE_METADATA_BYTES_MAX 64
#define CURVE_INITIATE_PLAIN_MAX                                                                   \
    (CURVE_KEY_BYTES + CURVE_LONG_NONCE_BYTES + CURVE_VOUCH_BYTES + crypto_box_MACBYTES +          \
     CURVE_METADATA_BYTES_MAX)
#define CURVE_READY_HEAD_BYTES 14 /* "\x05READY", short nonce */
#define CURVE_COMMAND_BYTES_MAX 512
#define CURVE_MESSAGE_HEAD_BYTES 16 /* "\x07MESSAGE", short nonce */
#define CURVE_MESSAGE_MORE 0x01

/* ---- summary ---------------------------------------------------------------------------- */

#define PHASES_MAX 12
#define PHASE_NAME_BYTES 64
#define PROBLEM_BYTES 256
#define LOG_TAIL_LINES 30
#define USEC_PER_SEC 1000000.0
#define MSEC_PER_SEC 1000.0

typedef struct options {
    long messages, never_read;
    uint64_t seed;
    int peers, multipart_s;
} options_t;

typedef struct snapshot {
    uint64_t last_seq;
    size_t count;
    ledger_account_row_t rows[SNAPSHOT_ACCOUNTS_MAX];
} snapshot_t;

/* Broker log lines read since the last scan. */
typedef struct log_count {
    long lines, dropped;       /* all lines; "dropped a message" (framing) lines */
    unsigned long zap_refused; /* the broker's own count of refused handshakes, last seen */
} log_count_t;

typedef struct phase {
    char name[PHASE_NAME_BYTES];
    long messages, replies;
    int64_t start_us, elapsed_us; /* elapsed: the sending, for messages a second */
    int64_t wall_us;              /* the whole phase, for log lines a second */
    long rss_before_kib, rss_after_kib, rss_held_kib; /* held: at the peak of the attack */
    long bound_kib; /* allowed RSS growth, or BOUND_NONE when only measured */
    log_count_t log;
    bool ok;
} phase_t;

typedef enum {
    K_RANDOM,
    K_TRUNCATED,
    K_EXTENDED,
    K_UNKNOWN_FIELD,
    K_WRONG_WIRE_TYPE,
    K_LONG_ID,
    K_BAD_ID_BYTES,
    K_BAD_AMOUNT,
    K_FORBIDDEN,
    K_MULTI_FRAME,
    K_OVERSIZE,
    K_COUNT
} kind_t;

static const char *const kind_names[K_COUNT] = {
    "random bytes",       "truncated envelope",  "extended envelope",
    "unknown field",      "wrong wire type",     "over-long id",
    "bad bytes in an id", "bad amount",          "forbidden body or partner",
    "2/5/64 frames",      "just over 2048 bytes"};
/* Per mille of the messages of each kind; they add up to PER_MILLE. */
static const int kind_weight[K_COUNT] = {150, 150, 150, 100, 100, 90, 110, 100, 20, 25, 5};

typedef struct hostile {
    kind_t kind;
    int frames; /* 1: one message; more: the same bytes in every frame */
    size_t len;
    uint8_t buf[HOSTILE_BYTES_MAX];
} hostile_t;

/* A field's bytes as sent: any bytes, NUL included. */
typedef struct text {
    size_t len;
    char bytes[TEXT_BYTES_MAX];
} text_t;

/* An Envelope as fields, to spoil one before it is encoded by hand. */
typedef struct spec {
    uint64_t version;
    text_t partner, terminal, txn, site;
    int64_t client_time_ms;
    uint32_t body;  /* the body's field number; 0: none */
    text_t b1;      /* body field 1 (string): member, original txn, partner id, key */
    int64_t b2;     /* body field 2 (varint): amount, points, earn rate, max amount */
    text_t b3;      /* body field 3 as a string: currency */
    int64_t b3_num; /* body field 3 as a varint: a refund's points */
    uint8_t extra[EXTRA_BYTES_MAX]; /* raw fields appended inside the body */
    size_t extra_len;
} spec_t;

typedef enum { BASE_BALANCE, BASE_EARN } base_t;

/* Replies to hostile messages, and what was expected of them. */
typedef struct tally {
    long sent, frames, per_kind[K_COUNT];
    long expected[CODES], expected_ledger, expected_silent;
    long replies, received[CODES], other_code;
    long oversize, undecodable, noncanonical, over_auth_max, bad_utf8, bad_echo, stored;
    long missing, send_failed;
    char problem[PROBLEM_BYTES]; /* the first bad reply */
} tally_t;

/* Handshake events seen by socket monitors. */
typedef struct events {
    long connected, succeeded, failed_auth, failed_protocol, failed_other, disconnected;
} events_t;

typedef struct soak {
    options_t o;
    world_t w;
    void *ctx;
    uint64_t rng;
    key_pair_t key;
    char server_z85[KEY_Z85_BYTES];
    int port;
    char txn_tag; /* in every txn id: which phase sent it */
    int probes;
    int64_t balances[SOAK_MEMBERS];
    snapshot_t before, after;
    long log_offset;
    phase_t phases[PHASES_MAX];
    size_t phase_count;
    int failures;
    bool broker_dead;
    long log_lines;   /* 3d: all phases */
    double log_per_s; /* 3d: all phases */
    bool log_ok;      /* 3d: every phase within its bound */
} soak_t;

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15u;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0; a draw in the uneven top sliver is drawn again. */
static uint64_t uniform_below(uint64_t *state, uint64_t n)
{
    assert(n > 0);
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r = splitmix64(state);
    for (int redraw = 0; r >= limit && redraw < 64; redraw++)
        r = splitmix64(state);
    return r % n;
}

static void random_bytes(uint8_t *buf, size_t len, uint64_t *rng)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)splitmix64(rng);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double mib(long kib) { return (double)kib / (double)KIB_PER_MIB; }

static double per_second(long count, int64_t us)
{
    return us > 0 ? (double)count * USEC_PER_SEC / (double)us : 0.0;
}

/* A "Name: value kB" line of /proc/PID/status, in KiB; -1 when unreadable. */
static long status_kib(const char *path, const char *field)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[256];
    long kib = -1;
    size_t flen = strlen(field);
    while (kib < 0 && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, flen) == 0)
            kib = strtol(line + flen, NULL, 10);
    }
    fclose(f);
    return kib;
}

static long broker_kib(const soak_t *s, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)s->w.broker.pid);
    return status_kib(path, field);
}

static long broker_rss_kib(const soak_t *s) { return broker_kib(s, "VmRSS:"); }
static long self_rss_kib(void) { return status_kib("/proc/self/status", "VmRSS:"); }

/* Running and not a zombie (the harness reaps it only when it stops it). */
static bool broker_alive(const soak_t *s)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)s->w.broker.pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool alive = false;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "State:", 6) == 0)
            alive = strchr(line, 'Z') == NULL;
    }
    fclose(f);
    return alive;
}

static long broker_fds(const soak_t *s)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)s->w.broker.pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    long n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Every line the broker logged since the last scan; a line still being written is left for
 * the next one. */
static void log_scan(soak_t *s, log_count_t *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(s->w.broker.log_path, "r");
    if (f == NULL || fseek(f, s->log_offset, SEEK_SET) != 0) {
        if (f != NULL)
            fclose(f);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        ssize_t n = getline(&line, &cap, f);
        if (n <= 0 || line[n - 1] != '\n')
            break;
        s->log_offset += (long)n;
        out->lines++;
        out->dropped += strstr(line, "dropped a message") != NULL;
        const char *semi = strstr(line, "ZAP refused") != NULL ? strrchr(line, ';') : NULL;
        unsigned long refused = 0;
        if (semi != NULL && sscanf(semi, "; %lu refused in all", &refused) == 1)
            out->zap_refused = refused;
    }
    free(line);
    fclose(f);
}

static void print_log_tail(const soak_t *s)
{
    char cmd[HARNESS_PATH_BYTES + 32];
    snprintf(cmd, sizeof cmd, "%d", LOG_TAIL_LINES);
    char *argv[] = {"/usr/bin/tail", "-n", cmd, (char *)s->w.broker.log_path, NULL};
    static char out[OUT_BYTES * 4];
    harness_run(argv, out, sizeof out);
    printf("broker log (last %d lines of %s):\n%s", LOG_TAIL_LINES, s->w.broker.log_path, out);
}

/* ---- verdicts --------------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static void check(soak_t *s, phase_t *p, bool ok,
                                                        const char *fmt, ...)
{
    char what[PROBLEM_BYTES * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    printf("  %s: %s\n", ok ? "PASS" : "FAIL", what);
    if (ok)
        return;
    s->failures++;
    if (p != NULL)
        p->ok = false;
}

static phase_t *phase_begin(soak_t *s, const char *name, char txn_tag)
{
    assert(s->phase_count < PHASES_MAX);
    phase_t *p = &s->phases[s->phase_count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    log_count_t skipped;
    log_scan(s, &skipped);
    s->txn_tag = txn_tag;
    p->ok = true;
    p->bound_kib = HOSTILE_RSS_GROWTH_MAX_KIB;
    p->rss_before_kib = broker_rss_kib(s);
    p->rss_held_kib = -1;
    p->start_us = clock_mono_us();
    printf("\n== phase %s ==\n", name);
    printf("  broker RSS before: %ld KiB (%.1f MiB)\n", p->rss_before_kib, mib(p->rss_before_kib));
    return p;
}

/* RSS after the phase, the bound, log lines; and that the broker is still running. */
static void phase_end(soak_t *s, phase_t *p)
{
    p->wall_us = clock_mono_us() - p->start_us;
    if (p->elapsed_us == 0)
        p->elapsed_us = p->wall_us;
    p->rss_after_kib = broker_rss_kib(s);
    log_scan(s, &p->log);
    long peak = p->rss_held_kib > p->rss_after_kib ? p->rss_held_kib : p->rss_after_kib;
    long growth = peak - p->rss_before_kib;
    printf("  broker RSS after: %ld KiB (%.1f MiB); growth %+ld KiB (%+.1f MiB)%s\n",
           p->rss_after_kib, mib(p->rss_after_kib), p->rss_after_kib - p->rss_before_kib,
           mib(p->rss_after_kib - p->rss_before_kib),
           p->rss_held_kib >= 0 ? " after the attack's connections closed" : "");
    if (p->rss_held_kib >= 0)
        printf("  broker RSS during the attack: %ld KiB (%.1f MiB); growth %+ld KiB\n",
               p->rss_held_kib, mib(p->rss_held_kib), p->rss_held_kib - p->rss_before_kib);
    printf("  broker log: %ld line(s) in %.1f s (%.1f a second), %ld of them \"dropped a "
           "message\"\n",
           p->log.lines, (double)p->wall_us / USEC_PER_SEC, per_second(p->log.lines, p->wall_us),
           p->log.dropped);
    bool alive = broker_alive(s);
    s->broker_dead = s->broker_dead || !alive;
    check(s, p, alive, "broker still running (pid %ld)", (long)s->w.broker.pid);
    if (p->bound_kib == BOUND_NONE)
        printf("  MEASURED: RSS growth %+ld KiB at the peak (no bound: see above)\n", growth);
    else
        check(s, p, p->rss_before_kib > 0 && growth <= p->bound_kib,
              "broker RSS growth %+ld KiB at the peak within the bound of %ld KiB (%.0f MiB)",
              growth, p->bound_kib, mib(p->bound_kib));
}

/* ---- protobuf by hand --------------------------------------------------------------------- */

typedef struct pb {
    uint8_t *buf;
    size_t len, room;
} pb_t;

static void pb_raw(pb_t *p, const void *data, size_t len)
{
    assert(len <= p->room - p->len); /* every buffer is sized for its largest message */
    if (len > 0)
        memcpy(p->buf + p->len, data, len);
    p->len += len;
}

static void pb_varint(pb_t *p, uint64_t v)
{
    uint8_t tmp[VARINT_BYTES_MAX];
    size_t n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        tmp[n] |= v != 0 ? 0x80 : 0;
        n++;
    } while (v != 0);
    pb_raw(p, tmp, n);
}

static void pb_tag(pb_t *p, uint32_t field, unsigned wire_type)
{
    pb_varint(p, ((uint64_t)field << 3) | wire_type);
}

/* proto3 leaves zero and empty fields out: so does this, to encode canonically. */
static void pb_uint(pb_t *p, uint32_t field, uint64_t v)
{
    if (v == 0)
        return;
    pb_tag(p, field, WT_VARINT);
    pb_varint(p, v);
}

static void pb_text(pb_t *p, uint32_t field, const text_t *t)
{
    if (t->len == 0)
        return;
    pb_tag(p, field, WT_LEN);
    pb_varint(p, t->len);
    pb_raw(p, t->bytes, t->len);
}

/* A field of any wire type with well-formed content; groups and reserved types get the
 * tag and a few random bytes, past which no decoder should get. */
static void pb_any_field(pb_t *p, uint32_t field, unsigned wire_type, uint64_t *rng)
{
    uint8_t junk[JUNK_BYTES_MAX];
    size_t n = (size_t)uniform_below(rng, sizeof junk + 1);
    random_bytes(junk, sizeof junk, rng);
    pb_tag(p, field, wire_type);
    switch (wire_type) {
    case WT_VARINT: pb_varint(p, splitmix64(rng) >> uniform_below(rng, 64)); break;
    case WT_FIXED64: pb_raw(p, junk, FIXED64_BYTES); break;
    case WT_FIXED32: pb_raw(p, junk, FIXED32_BYTES); break;
    case WT_LEN:
        pb_varint(p, n);
        pb_raw(p, junk, n);
        break;
    default: pb_raw(p, junk, n); break;
    }
}

static void text_set(text_t *t, const char *s)
{
    size_t len = strlen(s);
    assert(len <= sizeof t->bytes);
    memcpy(t->bytes, s, len);
    t->len = len;
}

__attribute__((format(printf, 2, 3))) static void text_printf(text_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->bytes, sizeof t->bytes, fmt, ap);
    va_end(ap);
    assert(n >= 0 && (size_t)n < sizeof t->bytes);
    t->len = (size_t)n;
}

/* `len` printable bytes: a well-formed id, only too long. */
static void text_fill(text_t *t, size_t len, uint64_t *rng)
{
    assert(len <= sizeof t->bytes);
    for (size_t i = 0; i < len; i++)
        t->bytes[i] = (char)(PRINTABLE_FIRST + uniform_below(rng, PRINTABLE_COUNT));
    t->len = len;
}

/* `len` bytes put in at a random place. */
static void text_insert(text_t *t, const char *bytes, size_t len, uint64_t *rng)
{
    assert(len <= sizeof t->bytes);
    size_t keep = t->len + len <= sizeof t->bytes ? t->len : sizeof t->bytes - len;
    size_t at = (size_t)uniform_below(rng, keep + 1);
    memmove(t->bytes + at + len, t->bytes + at, keep - at);
    memcpy(t->bytes + at, bytes, len);
    t->len = keep + len;
}

/* Fields in field-number order, zero values left out: what protobuf-c packs. */
static size_t spec_pack(const spec_t *sp, uint8_t *out, size_t room)
{
    uint8_t body_buf[BODY_BYTES_MAX];
    pb_t body = {body_buf, 0, sizeof body_buf};
    pb_text(&body, 1, &sp->b1);
    pb_uint(&body, 2, (uint64_t)sp->b2);
    pb_text(&body, 3, &sp->b3);
    pb_uint(&body, 3, (uint64_t)sp->b3_num);
    pb_raw(&body, sp->extra, sp->extra_len);
    pb_t p = {out, 0, room};
    pb_uint(&p, ENV_VERSION, sp->version);
    pb_text(&p, ENV_PARTNER, &sp->partner);
    pb_text(&p, ENV_TERMINAL, &sp->terminal);
    pb_text(&p, ENV_TXN, &sp->txn);
    pb_uint(&p, ENV_CLIENT_TIME, (uint64_t)sp->client_time_ms);
    pb_text(&p, ENV_SITE, &sp->site);
    if (sp->body != 0) {
        pb_tag(&p, sp->body, WT_LEN);
        pb_varint(&p, body.len);
        pb_raw(&p, body_buf, body.len);
    }
    return p.len;
}

/* A well-formed request that can never change the ledger: a balance inquiry for a member
 * (answered without the writer), or an earn for a member who does not exist (declined 14). */
static void spec_base(const soak_t *s, long i, base_t base, spec_t *sp)
{
    sp->version = WIRE_VERSION;
    text_set(&sp->partner, SOAK_PARTNER);
    text_printf(&sp->terminal, "till-%ld", i % SOAK_TERMINALS);
    text_printf(&sp->txn, "%c%" PRIu64 "-%ld", s->txn_tag, s->o.seed, i);
    sp->client_time_ms = SOAK_CLIENT_TIME_MS + i;
    text_set(&sp->site, SOAK_SITE);
    sp->b2 = 0;
    sp->b3.len = 0;
    sp->b3_num = 0;
    sp->extra_len = 0;
    if (base == BASE_BALANCE) {
        sp->body = BODY_BALANCE;
        text_printf(&sp->b1, "m%ld", i % SOAK_MEMBERS);
        return;
    }
    sp->body = BODY_EARN;
    text_printf(&sp->b1, "ghost-%ld", i);
    sp->b2 = GHOST_EARN_MINOR;
    text_set(&sp->b3, SOAK_CURRENCY);
}

/* ---- the hostile kinds -------------------------------------------------------------------- */

static base_t pick_base(soak_t *s)
{
    return uniform_below(&s->rng, 2) == 0 ? BASE_BALANCE : BASE_EARN;
}

static void make_random(soak_t *s, hostile_t *h)
{
    h->len = (size_t)uniform_below(&s->rng, RANDOM_BYTES_MAX + 1);
    random_bytes(h->buf, h->len, &s->rng);
}

static void make_truncated(soak_t *s, long i, hostile_t *h)
{
    static spec_t sp;
    spec_base(s, i, pick_base(s), &sp);
    size_t len = spec_pack(&sp, h->buf, sizeof h->buf);
    h->len = (size_t)uniform_below(&s->rng, len); /* 0 .. len - 1: the empty message too */
}

static void make_extended(soak_t *s, long i, hostile_t *h)
{
    static spec_t sp;
    spec_base(s, i, pick_base(s), &sp);
    size_t len = spec_pack(&sp, h->buf, sizeof h->buf);
    size_t extra = 1 + (size_t)uniform_below(&s->rng, EXTEND_BYTES_MAX);
    random_bytes(h->buf + len, extra, &s->rng);
    h->len = len + extra;
}

static void make_unknown_field(soak_t *s, long i, hostile_t *h)
{
    static const uint32_t envelope_unknown[] = {7, 8, 9, 16, 19, 24, 99, 1000, FIELD_NUMBER_MAX};
    static const uint32_t body_unknown[] = {4, 5, 9, 15, 100, 65535};
    static const unsigned valid_types[] = {WT_VARINT, WT_FIXED64, WT_LEN, WT_FIXED32};
    static spec_t sp;
    uint64_t *rng = &s->rng;
    spec_base(s, i, pick_base(s), &sp);
    unsigned wt = valid_types[uniform_below(rng, sizeof valid_types / sizeof valid_types[0])];
    if (uniform_below(rng, 2) == 0) {
        pb_t extra = {sp.extra, 0, sizeof sp.extra};
        pb_any_field(&extra,
                     body_unknown[uniform_below(rng, sizeof body_unknown / sizeof(uint32_t))], wt,
                     rng);
        sp.extra_len = extra.len;
        h->len = spec_pack(&sp, h->buf, sizeof h->buf);
        return;
    }
    pb_t p = {h->buf, spec_pack(&sp, h->buf, sizeof h->buf), sizeof h->buf};
    pb_any_field(&p,
                 envelope_unknown[uniform_below(rng, sizeof envelope_unknown / sizeof(uint32_t))],
                 wt, rng);
    h->len = p.len;
}

typedef struct wrong_type {
    uint32_t field;
    unsigned wire_type;
    bool in_body;
} wrong_type_t;

static void make_wrong_wire_type(soak_t *s, long i, hostile_t *h)
{
    static const wrong_type_t wrong[] = {{ENV_VERSION, WT_LEN, false},
                                         {ENV_VERSION, WT_FIXED64, false},
                                         {ENV_PARTNER, WT_VARINT, false},
                                         {ENV_TERMINAL, WT_FIXED32, false},
                                         {ENV_TXN, WT_VARINT, false},
                                         {ENV_CLIENT_TIME, WT_LEN, false},
                                         {ENV_SITE, WT_FIXED64, false},
                                         {BODY_EARN, WT_VARINT, false},
                                         {BODY_BALANCE, WT_FIXED32, false},
                                         {ENV_PARTNER, WT_GROUP_START, false},
                                         {ENV_TXN, WT_GROUP_END, false},
                                         {ENV_SITE, WT_RESERVED6, false},
                                         {1, WT_VARINT, true},
                                         {2, WT_LEN, true},
                                         {2, WT_FIXED64, true},
                                         {3, WT_VARINT, true},
                                         {1, WT_RESERVED7, true}};
    static spec_t sp;
    spec_base(s, i, BASE_EARN, &sp);
    const wrong_type_t *w = &wrong[uniform_below(&s->rng, sizeof wrong / sizeof wrong[0])];
    if (w->in_body) {
        pb_t extra = {sp.extra, 0, sizeof sp.extra};
        pb_any_field(&extra, w->field, w->wire_type, &s->rng);
        sp.extra_len = extra.len;
        h->len = spec_pack(&sp, h->buf, sizeof h->buf);
        return;
    }
    pb_t p = {h->buf, spec_pack(&sp, h->buf, sizeof h->buf), sizeof h->buf};
    pb_any_field(&p, w->field, w->wire_type, &s->rng);
    h->len = p.len;
}

static void make_long_id(soak_t *s, long i, hostile_t *h)
{
    static spec_t sp;
    uint64_t *rng = &s->rng;
    spec_base(s, i, pick_base(s), &sp);
    size_t over = 1 + (size_t)uniform_below(rng, LONG_ID_EXTRA_MAX);
    switch (uniform_below(rng, 7)) {
    case 0: text_fill(&sp.txn, TXN_ID_LEN_MAX + over, rng); break;
    case 1: text_fill(&sp.partner, PARTNER_ID_LEN_MAX + over, rng); break;
    case 2: text_fill(&sp.terminal, TERMINAL_ID_LEN_MAX + over, rng); break;
    case 3: text_fill(&sp.site, SITE_ID_LEN_MAX + over, rng); break;
    case 4: text_fill(&sp.b1, MEMBER_ID_LEN_MAX + over, rng); break;
    case 5: /* a refund naming an over-long original */
        sp.body = BODY_REFUND;
        text_fill(&sp.b1, TXN_ID_LEN_MAX + over, rng);
        sp.b2 = 0;
        sp.b3.len = 0;
        break;
    default: /* a currency far longer than three letters */
        spec_base(s, i, BASE_EARN, &sp);
        text_fill(&sp.b3, CURRENCY_LEN + over, rng);
        break;
    }
    h->len = spec_pack(&sp, h->buf, sizeof h->buf);
}

typedef struct byte_seq {
    const char *bytes;
    size_t len;
} byte_seq_t;

#define SEQ(literal)                                                                               \
    {                                                                                              \
        literal, sizeof literal - 1                                                                \
    }

static void make_bad_id_bytes(soak_t *s, long i, hostile_t *h)
{
    /* Control bytes, a NUL, invalid UTF-8 (stray continuation, truncated, overlong,
     * surrogate, past U+10FFFF), valid non-ASCII UTF-8, and printable log bait. */
    static const byte_seq_t bad[] = {SEQ("\n"),           SEQ("\r\n"),
                                     SEQ("\t"),           SEQ(" "),
                                     SEQ("\x1b[2J"),      SEQ("\x7f"),
                                     SEQ("\x01"),         {"\0", 1},
                                     SEQ("\xff"),         SEQ("\xc3\x28"),
                                     SEQ("\xe2\x82"),     SEQ("\xc0\x80"),
                                     SEQ("\xed\xa0\x80"), SEQ("\xf4\x90\x80\x80"),
                                     SEQ("\xc3\xa9"),     SEQ("\xe2\x82\xac"),
                                     SEQ("%s%n"),         SEQ("\\x41")};
    static spec_t sp;
    uint64_t *rng = &s->rng;
    spec_base(s, i, pick_base(s), &sp);
    text_t *ids[] = {&sp.txn, &sp.partner, &sp.terminal, &sp.site, &sp.b1};
    text_t *id = ids[uniform_below(rng, sizeof ids / sizeof ids[0])];
    size_t count = sizeof bad / sizeof bad[0];
    size_t pick = (size_t)uniform_below(rng, count + 1);
    if (pick == count)
        id->len = 0; /* missing altogether */
    else
        text_insert(id, bad[pick].bytes, bad[pick].len, rng);
    h->len = spec_pack(&sp, h->buf, sizeof h->buf);
}

typedef struct bad_amount {
    uint32_t body;
    int64_t amount, points;
} bad_amount_t;

/* Every one of these is refused before the ledger: none can be approved. */
static void make_bad_amount(soak_t *s, long i, hostile_t *h)
{
    static const bad_amount_t bad[] = {{BODY_EARN, 0, 0},
                                       {BODY_EARN, -1, 0},
                                       {BODY_EARN, -1234, 0},
                                       {BODY_EARN, INT64_MIN, 0},
                                       {BODY_EARN, AMOUNT_MINOR_MAX + 1, 0},
                                       {BODY_EARN, INT64_MAX, 0},
                                       {BODY_BURN, 0, 0},
                                       {BODY_BURN, 0, -1},
                                       {BODY_BURN, 0, INT64_MIN},
                                       {BODY_BURN, 0, POINTS_MAX + 1},
                                       {BODY_BURN, 0, INT64_MAX},
                                       {BODY_REFUND, -1, 0},
                                       {BODY_REFUND, 0, -5},
                                       {BODY_REFUND, 100, 5},
                                       {BODY_REFUND, AMOUNT_MINOR_MAX + 1, 0},
                                       {BODY_REFUND, 0, POINTS_MAX + 1},
                                       {BODY_REFUND, INT64_MIN, INT64_MIN}};
    static spec_t sp;
    const bad_amount_t *b = &bad[uniform_below(&s->rng, sizeof bad / sizeof bad[0])];
    spec_base(s, i, BASE_EARN, &sp);
    sp.body = b->body;
    if (b->body == BODY_EARN) {
        sp.b2 = b->amount;
    } else if (b->body == BODY_BURN) {
        sp.b2 = b->points;
        sp.b3.len = 0;
    } else {
        text_printf(&sp.b1, "orig-%ld", i);
        sp.b2 = b->amount;
        sp.b3.len = 0;
        sp.b3_num = b->points;
    }
    h->len = spec_pack(&sp, h->buf, sizeof h->buf);
}

/* Operator bodies on the partner socket (our own key's revocation among them), the
 * operator's partner id, another partner's id: all refused 57. */
static void make_forbidden(soak_t *s, long i, hostile_t *h)
{
    static spec_t sp;
    spec_base(s, i, BASE_BALANCE, &sp);
    switch (uniform_below(&s->rng, 5)) {
    case 0:
        sp.body = BODY_PARTNER_ADD;
        text_set(&sp.b1, "evil");
        sp.b2 = EVIL_EARN_RATE_MILLI;
        text_set(&sp.b3, SOAK_CURRENCY);
        break;
    case 1:
        sp.body = BODY_PARTNER_LIMITS;
        text_set(&sp.b1, SOAK_PARTNER);
        sp.b2 = AMOUNT_MINOR_MAX;
        break;
    case 2:
        sp.body = BODY_KEY_REVOKE;
        text_set(&sp.b1, s->key.public_z85);
        break;
    case 3: text_set(&sp.partner, OPERATOR_PARTNER_ID); break;
    default: text_set(&sp.partner, SOAK_OTHER_PARTNER); break;
    }
    h->len = spec_pack(&sp, h->buf, sizeof h->buf);
}

/* A valid balance inquiry in every frame: a reply to any of them is a framing bug. */
static void make_multi_frame(soak_t *s, long i, hostile_t *h)
{
    static const int frame_counts[] = {2, 2, 2, 2, 2, 5, 5, 5, 5, 64};
    static spec_t sp;
    spec_base(s, i, BASE_BALANCE, &sp);
    h->len = spec_pack(&sp, h->buf, sizeof h->buf);
    h->frames = frame_counts[uniform_below(&s->rng, sizeof frame_counts / sizeof(int))];
}

static void make_oversize(soak_t *s, long i, hostile_t *h)
{
    static spec_t sp;
    size_t target =
        WIRE_MESSAGE_BYTES_MAX + 1 + (size_t)uniform_below(&s->rng, OVERSIZE_SLACK_BYTES);
    if (uniform_below(&s->rng, 2) == 0) {
        random_bytes(h->buf, target, &s->rng);
        h->len = target;
        return;
    }
    spec_base(s, i, BASE_BALANCE, &sp);
    size_t others = spec_pack(&sp, h->buf, sizeof h->buf) - sp.terminal.len;
    text_fill(&sp.terminal, target - others, &s->rng);
    h->len = spec_pack(&sp, h->buf, sizeof h->buf); /* target, or one more for the length */
}

static kind_t pick_kind(uint64_t *rng)
{
    uint64_t r = uniform_below(rng, PER_MILLE);
    for (int k = 0; k < K_COUNT; k++) {
        if (r < (uint64_t)kind_weight[k])
            return (kind_t)k;
        r -= (uint64_t)kind_weight[k];
    }
    return K_RANDOM;
}

static void hostile_make(soak_t *s, long i, hostile_t *h)
{
    h->kind = pick_kind(&s->rng);
    h->frames = 1;
    switch (h->kind) {
    case K_RANDOM: make_random(s, h); break;
    case K_TRUNCATED: make_truncated(s, i, h); break;
    case K_EXTENDED: make_extended(s, i, h); break;
    case K_UNKNOWN_FIELD: make_unknown_field(s, i, h); break;
    case K_WRONG_WIRE_TYPE: make_wrong_wire_type(s, i, h); break;
    case K_LONG_ID: make_long_id(s, i, h); break;
    case K_BAD_ID_BYTES: make_bad_id_bytes(s, i, h); break;
    case K_BAD_AMOUNT: make_bad_amount(s, i, h); break;
    case K_FORBIDDEN: make_forbidden(s, i, h); break;
    case K_MULTI_FRAME: make_multi_frame(s, i, h); break;
    default: make_oversize(s, i, h); break;
    }
    assert(h->len <= sizeof h->buf && h->frames >= 1);
}

/* What the broker must answer, from the checks it makes before the ledger: a response
 * code, EXPECT_LEDGER (valid, for our key: the ledger decides) or EXPECT_NO_REPLY. */
static int expected_reply(const hostile_t *h)
{
    if (h->frames != 1)
        return EXPECT_NO_REPLY;
    envelope_t *env = wire_envelope_decode(h->buf, h->len); /* NULL when empty or > 2048 */
    if (env == NULL)
        return RC_FORMAT_ERROR;
    char why[RECEIPT_TEXT_BYTES_MAX];
    int code = wire_validate(env, false, why, sizeof why);
    if (code == RC_APPROVED)
        code = strcmp(env->partner_id, SOAK_PARTNER) == 0 ? EXPECT_LEDGER : RC_NOT_PERMITTED;
    wire_envelope_free(env);
    return code;
}

static int hostile_send(void *sock, const hostile_t *h, int flags)
{
    for (int f = 0; f < h->frames; f++) {
        int more = f + 1 < h->frames ? ZMQ_SNDMORE : 0;
        if (zmq_send(sock, h->buf, h->len, more | flags) != (int)h->len)
            return CL_ERR_ZMQ;
    }
    return CL_OK;
}

/* ---- replies ------------------------------------------------------------------------------ */

/* Well-formed UTF-8: no stray or missing continuation bytes, no overlong forms, no
 * surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        size_t n = *p < 0x80             ? 1
                   : (*p & 0xe0) == 0xc0 ? 2
                   : (*p & 0xf0) == 0xe0 ? 3
                   : (*p & 0xf8) == 0xf0 ? 4
                                         : 0;
        if (n == 0 || (n == 2 && *p < 0xc2) || (n == 4 && *p > 0xf4))
            return false;
        uint32_t cp = n == 1 ? *p : (uint32_t)(*p & (0x7f >> n));
        for (size_t k = 1; k < n; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (uint32_t)(p[k] & 0x3f);
        }
        if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        p += n;
    }
    return true;
}

/* A reply echoes an id only when it is a valid one; otherwise it leaves it empty. */
static bool echo_ok(const char *id, size_t len_max)
{
    return id[0] == '\0' || wire_id_valid(id, len_max);
}

static void note_problem(tally_t *t, const char *what, const authorization_t *a)
{
    if (t->problem[0] != '\0')
        return;
    if (a == NULL)
        snprintf(t->problem, sizeof t->problem, "%s", what);
    else
        snprintf(t->problem, sizeof t->problem, "%s: code %02d txn \"%.64s\" text \"%.100s\"", what,
                 (int)a->code, a->txn_id, a->text);
}

static void check_reply_fields(tally_t *t, const authorization_t *a, size_t n)
{
    if (coalition__authorization__get_packed_size(a) != n) {
        t->noncanonical++;
        note_problem(t, "reply not canonical", a);
    }
    if (!utf8_valid(a->txn_id) || !utf8_valid(a->text) || !utf8_valid(a->member_id) ||
        !utf8_valid(a->site_id) || !utf8_valid(a->auth_code)) {
        t->bad_utf8++;
        note_problem(t, "reply with invalid UTF-8", a);
    }
    if (!echo_ok(a->txn_id, TXN_ID_LEN_MAX) || !echo_ok(a->member_id, MEMBER_ID_LEN_MAX) ||
        !echo_ok(a->site_id, SITE_ID_LEN_MAX) ||
        (a->request_hash.len != 0 && a->request_hash.len != WIRE_HASH_BYTES)) {
        t->bad_echo++;
        note_problem(t, "reply echoing an invalid id or hash", a);
    }
    if (a->seq != 0 || a->points != 0 || a->auth_code[0] != '\0') {
        t->stored++;
        note_problem(t, "reply saying something was stored", a);
    }
}

static void check_reply(tally_t *t, zmq_msg_t *m)
{
    size_t n = zmq_msg_size(m);
    t->replies++;
    if (n > WIRE_MESSAGE_BYTES_MAX) {
        t->oversize++;
        note_problem(t, "reply over 2048 bytes", NULL);
        return;
    }
    if (n > AUTH_BYTES_MAX) {
        t->over_auth_max++;
        note_problem(t, "reply over AUTH_BYTES_MAX", NULL);
    }
    authorization_t *a = wire_auth_decode(zmq_msg_data(m), n);
    if (a == NULL) {
        t->undecodable++;
        note_problem(t, "reply that is not an Authorization", NULL);
        return;
    }
    check_reply_fields(t, a, n);
    int code = (int)a->code;
    if (code >= 0 && code < CODES)
        t->received[code]++;
    else
        t->other_code++;
    wire_auth_free(a);
}

/* Wait up to timeout_ms for replies, then read all that are waiting; how many. */
static long recv_replies(void *sock, tally_t *t, int timeout_ms)
{
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return 0;
    long got = 0;
    for (int k = 0; k < DRAIN_MAX; k++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        check_reply(t, &m);
        zmq_msg_close(&m);
        got++;
    }
    return got;
}

static void tally_sent(tally_t *t, const hostile_t *h, int expect)
{
    t->sent++;
    t->frames += h->frames;
    t->per_kind[h->kind]++;
    if (expect == EXPECT_NO_REPLY)
        t->expected_silent++;
    else if (expect == EXPECT_LEDGER)
        t->expected_ledger++;
    else
        t->expected[expect]++;
}

/* `count` hostile messages, WINDOW of them awaiting replies; replies checked as they come. */
static void pump_hostile(soak_t *s, void *sock, long count, tally_t *t)
{
    static hostile_t h;
    long next = 0, outstanding = 0;
    while (next < count || outstanding > 0) {
        while (next < count && outstanding < WINDOW) {
            hostile_make(s, next, &h);
            int expect = expected_reply(&h);
            if (hostile_send(sock, &h, 0) != CL_OK) {
                t->send_failed++;
                return;
            }
            tally_sent(t, &h, expect);
            outstanding += expect != EXPECT_NO_REPLY;
            next++;
        }
        if (outstanding == 0)
            continue;
        long got = recv_replies(sock, t, REPLY_TIMEOUT_MS);
        if (got == 0) {
            t->missing = outstanding;
            return;
        }
        outstanding -= got;
    }
}

/* ---- sockets ------------------------------------------------------------------------------ */

typedef struct dealer_opts {
    const key_pair_t *key; /* client key pair (recorded or not) */
    int sndhwm, rcvhwm, reconnect_ivl_ms, sndtimeo_ms;
} dealer_opts_t;

static void *dealer_open(soak_t *s, const dealer_opts_t *o)
{
    void *sock = zmq_socket(s->ctx, ZMQ_DEALER);
    int linger = 0;
    if (sock == NULL)
        return NULL;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, s->server_z85, KEY_Z85_BYTES) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, o->key->public_z85, KEY_Z85_BYTES) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, o->key->secret_z85, KEY_Z85_BYTES) != 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(sock, ZMQ_SNDHWM, &o->sndhwm, sizeof o->sndhwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_RCVHWM, &o->rcvhwm, sizeof o->rcvhwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &o->reconnect_ivl_ms, sizeof(int)) != 0 ||
        zmq_setsockopt(sock, ZMQ_SNDTIMEO, &o->sndtimeo_ms, sizeof(int)) != 0 ||
        zmq_connect(sock, s->w.broker_endpoint) != 0) {
        fprintf(stderr, "soak_hostile: cannot connect to %s: %s\n", s->w.broker_endpoint,
                zmq_strerror(zmq_errno()));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

/* A DEALER with our recorded key and the given high-water marks; blocking sends. */
static void *partner_dealer(soak_t *s, int sndhwm, int rcvhwm)
{
    dealer_opts_t o = {&s->key, sndhwm, rcvhwm, 100, -1};
    return dealer_open(s, &o);
}

#define MONITOR_EVENTS                                                                             \
    (ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |                \
     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |                       \
     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)

static void *monitor_open(soak_t *s, void *sock, long index)
{
    char endpoint[64];
    int linger = 0;
    snprintf(endpoint, sizeof endpoint, "inproc://soak-monitor-%ld", index);
    if (zmq_socket_monitor(sock, endpoint, MONITOR_EVENTS) != 0)
        return NULL;
    void *pair = zmq_socket(s->ctx, ZMQ_PAIR);
    if (pair == NULL)
        return NULL;
    if (zmq_setsockopt(pair, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(pair, endpoint) != 0) {
        zmq_close(pair);
        return NULL;
    }
    return pair;
}

static void count_event(events_t *e, uint16_t event)
{
    switch (event) {
    case ZMQ_EVENT_CONNECTED: e->connected++; break;
    case ZMQ_EVENT_DISCONNECTED: e->disconnected++; break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: e->succeeded++; break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: e->failed_auth++; break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: e->failed_protocol++; break;
    default: e->failed_other++; break;
    }
}

/* Events are two frames: 16-bit event and 32-bit value, then the endpoint. */
static void monitor_drain(void *pair, events_t *e)
{
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, pair, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&m) >= sizeof event)
            memcpy(&event, zmq_msg_data(&m), sizeof event);
        bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (more) {
            zmq_msg_init(&m);
            zmq_msg_recv(&m, pair, 0);
            zmq_msg_close(&m);
        }
        count_event(e, event);
    }
}

static void monitor_close(void *sock, void *pair, events_t *e)
{
    if (pair != NULL) {
        monitor_drain(pair, e);
        zmq_socket_monitor(sock, NULL, 0);
        zmq_close(pair);
    }
    zmq_close(sock);
}

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, 0};
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Close with a reset: no TIME_WAIT left on our side for thousands of connections. */
static void tcp_abort(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* The peer closed (or reset) the connection; anything it sent first is read and dropped. */
static bool tcp_closed_by_peer(int fd)
{
    uint8_t scratch[RAW_RECV_BYTES_MAX];
    for (;;) {
        ssize_t n = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (n > 0)
            continue;
        return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
}

static int sock_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return CL_ERR_IO;
        p += n;
        len -= (size_t)n;
    }
    return CL_OK;
}

static int sock_read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
    uint8_t *p = buf;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (len > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return CL_ERR_TIMEOUT;
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0)
            return CL_ERR_IO;
        p += n;
        len -= (size_t)n;
    }
    return CL_OK;
}

/* ---- ledger snapshots and legitimate requests ---------------------------------------------- */

static int snapshot_take(const soak_t *s, snapshot_t *snap)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, s->w.ledger, STORE_READ_ONLY);
    if (rc != CL_OK)
        return rc;
    snap->last_seq = ledger_last_seq(l);
    snap->count = 0;
    const char *after = NULL;
    for (;;) {
        if (snap->count + LEDGER_SLICE_RECORDS_MAX > SNAPSHOT_ACCOUNTS_MAX) {
            rc = CL_ERR_OVERFLOW;
            break;
        }
        size_t got = 0;
        rc = ledger_accounts_slice(l, after, &snap->rows[snap->count], LEDGER_SLICE_RECORDS_MAX,
                                   &got);
        if (rc != CL_OK)
            break;
        snap->count += got;
        if (got < LEDGER_SLICE_RECORDS_MAX)
            break;
        after = snap->rows[snap->count - 1].account;
    }
    ledger_destroy(&l);
    return rc;
}

static void envelope_init(envelope_t *env, const char *txn_id)
{
    coalition__envelope__init(env);
    env->version = WIRE_VERSION;
    env->partner_id = SOAK_PARTNER;
    env->terminal_id = "till-0";
    env->site_id = SOAK_SITE;
    env->txn_id = (char *)txn_id;
    env->client_time_ms = clock_wall_ms();
}

static size_t pack_balance(const char *txn_id, const char *member, uint8_t *buf, size_t room)
{
    envelope_t env;
    Coalition__BalanceRequest body = COALITION__BALANCE_REQUEST__INIT;
    envelope_init(&env, txn_id);
    body.member_id = (char *)member;
    env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    env.balance = &body;
    size_t len = coalition__envelope__get_packed_size(&env);
    assert(len <= room);
    (void)room;
    return coalition__envelope__pack(&env, buf);
}

/* An earn over a fresh CURVE connection with our key: the reply, or NULL. */
static authorization_t *call_earn(soak_t *s, const char *txn_id, const char *member,
                                  int64_t amount_minor)
{
    envelope_t env;
    Coalition__EarnRequest body = COALITION__EARN_REQUEST__INIT;
    envelope_init(&env, txn_id);
    body.member_id = (char *)member;
    body.amount_minor = amount_minor;
    body.currency = SOAK_CURRENCY;
    env.body_case = COALITION__ENVELOPE__BODY_EARN;
    env.earn = &body;
    client_t *c = NULL;
    authorization_t *a = NULL;
    if (client_new_curve(&c, s->w.broker_endpoint, &s->key, s->server_z85) == CL_OK &&
        client_call(c, &env, PROBE_TIMEOUT_MS, &a) != CL_OK)
        a = NULL;
    client_destroy(&c);
    return a;
}

/* A legitimate balance inquiry for m0 on a fresh connection, within PROBE_TIMEOUT_MS. */
static void probe(soak_t *s, phase_t *p, const char *when)
{
    char txn[ID_BYTES];
    snprintf(txn, sizeof txn, "probe-%c-%d", s->txn_tag, s->probes++);
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    size_t len = pack_balance(txn, "m0", buf, sizeof buf);
    int64_t t0 = clock_mono_ms();
    client_t *c = NULL;
    authorization_t *a = NULL;
    int rc = client_new_curve(&c, s->w.broker_endpoint, &s->key, s->server_z85);
    if (rc == CL_OK)
        rc = client_call_raw(c, buf, len, PROBE_TIMEOUT_MS, &a);
    int64_t ms = clock_mono_ms() - t0;
    client_destroy(&c);
    bool ok = rc == CL_OK && a->code == RC_APPROVED && a->balance == s->balances[0] &&
              strcmp(a->txn_id, txn) == 0;
    check(s, p, ok,
          "a legitimate balance inquiry %s: answered in %" PRId64 " ms (expected code 00, "
          "balance %" PRId64 "; got %s %02d, balance %" PRId64 ")",
          when, ms, s->balances[0], rc == CL_OK ? "code" : "no reply,",
          a != NULL ? (int)a->code : 0, a != NULL ? a->balance : 0);
    wire_auth_free(a);
}

/* ---- phase 1: hostile messages on an authenticated connection ------------------------------ */

static void print_tally(const tally_t *t)
{
    printf("  sent %ld messages (%ld frames); by kind:", t->sent, t->frames);
    for (int k = 0; k < K_COUNT; k++)
        printf("%s %s %ld", k == 0 ? "" : ",", kind_names[k], t->per_kind[k]);
    printf("\n  expected: %ld without a reply (multi-frame), %ld for the ledger to decide;",
           t->expected_silent, t->expected_ledger);
    for (int c = 0; c < CODES; c++) {
        if (t->expected[c] != 0)
            printf(" %02d x %ld", c, t->expected[c]);
    }
    printf("\n  replies: %ld;", t->replies);
    for (int c = 0; c < CODES; c++) {
        if (t->received[c] != 0)
            printf(" %02d (%s) x %ld", c, wire_code_meaning(c), t->received[c]);
    }
    printf("\n");
}

/* Codes decided before the ledger must come back exactly as expected; whatever reached
 * the ledger adds to some code; nothing else may come back. */
static bool codes_match(const tally_t *t)
{
    long surplus = 0;
    for (int c = 0; c < CODES; c++) {
        if (t->received[c] < t->expected[c])
            return false;
        surplus += t->received[c] - t->expected[c];
    }
    return surplus == t->expected_ledger && t->other_code == 0;
}

static void judge_tally(soak_t *s, phase_t *p, const tally_t *t)
{
    long expected = t->sent - t->expected_silent;
    check(s, p, t->send_failed == 0, "every message sent (%ld send failure(s))", t->send_failed);
    check(s, p, t->missing == 0 && t->replies == expected,
          "one reply for every single-frame message: expected %ld, got %ld (%ld missing at a "
          "%d ms wait)",
          expected, t->replies, t->missing, REPLY_TIMEOUT_MS);
    check(s, p, codes_match(t), "replies by code as expected (see the lists above)");
    check(s, p, t->oversize == 0 && t->undecodable == 0 && t->noncanonical == 0,
          "every reply a canonical Authorization of at most %d bytes (%ld over, %ld not one, %ld "
          "not canonical)",
          WIRE_MESSAGE_BYTES_MAX, t->oversize, t->undecodable, t->noncanonical);
    check(s, p, t->over_auth_max == 0, "every reply within AUTH_BYTES_MAX (%d): %ld over",
          AUTH_BYTES_MAX, t->over_auth_max);
    check(s, p, t->bad_utf8 == 0 && t->bad_echo == 0,
          "reply strings valid UTF-8 (%ld bad) echoing only valid ids (%ld bad)", t->bad_utf8,
          t->bad_echo);
    check(s, p, t->stored == 0, "no reply says anything was stored (seq, points, auth code): %ld",
          t->stored);
    if (t->problem[0] != '\0')
        printf("  first bad reply: %s\n", t->problem);
}

static void phase_hostile(soak_t *s)
{
    phase_t *p = phase_begin(s, "1 hostile, authenticated", 'a');
    static tally_t t;
    memset(&t, 0, sizeof t);
    void *sock = partner_dealer(s, WINDOW * 4, WINDOW * 4);
    if (sock == NULL) {
        check(s, p, false, "connect a CURVE client");
        phase_end(s, p);
        return;
    }
    int64_t t0 = clock_mono_us();
    pump_hostile(s, sock, s->o.messages, &t);
    p->elapsed_us = clock_mono_us() - t0;
    while (recv_replies(sock, &t, SILENCE_MS) > 0) {
    } /* replies there should not be (to multi-frame messages) */
    zmq_close(sock);
    p->messages = t.sent;
    p->replies = t.replies;
    print_tally(&t);
    printf("  %.0f messages/s (%.1f s)\n", per_second(t.sent, p->elapsed_us),
           (double)p->elapsed_us / USEC_PER_SEC);
    judge_tally(s, p, &t);
    probe(s, p, "after");
    phase_end(s, p);
}

/* ---- phase 1b: frames over ZMQ_MAXMSGSIZE -------------------------------------------------- */

/* Read and count whatever is waiting on a socket. */
static long drain_any(void *sock)
{
    long n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int rc = zmq_msg_recv(&m, sock, ZMQ_DONTWAIT);
        zmq_msg_close(&m);
        if (rc < 0)
            return n;
        n++;
    }
}

/* Each on its own connection: libzmq cuts it at the frame header, so no reply may come. */
static void phase_huge(soak_t *s)
{
    phase_t *p = phase_begin(s, "1b huge frames, authenticated", 'b');
    static void *socks[HUGE_SOCKETS], *mons[HUGE_SOCKETS];
    uint8_t *buf = malloc(HUGE_BYTES_MAX);
    events_t ev = {0};
    long sent = 0, replies = 0;
    int opened = 0;
    if (buf != NULL)
        random_bytes(buf, HUGE_BYTES_MAX, &s->rng);
    for (; buf != NULL && opened < HUGE_SOCKETS; opened++) {
        socks[opened] = partner_dealer(s, 1, 1);
        mons[opened] = socks[opened] != NULL ? monitor_open(s, socks[opened], opened) : NULL;
        if (mons[opened] == NULL)
            break;
        size_t size =
            HUGE_BYTES_MIN + (size_t)uniform_below(&s->rng, HUGE_BYTES_MAX - HUGE_BYTES_MIN + 1);
        sent += zmq_send(socks[opened], buf, size, 0) == (int)size;
    }
    int64_t deadline = clock_mono_ms() + HUGE_WAIT_MS;
    while (clock_mono_ms() < deadline && ev.disconnected < sent) {
        sleep_ms(SETTLE_STEP_MS);
        for (int k = 0; k < opened; k++) {
            replies += drain_any(socks[k]);
            monitor_drain(mons[k], &ev);
        }
    }
    for (int k = 0; k < opened; k++)
        monitor_close(socks[k], mons[k], &ev);
    if (opened < HUGE_SOCKETS && socks[opened] != NULL)
        zmq_close(socks[opened]); /* its monitor could not be opened */
    free(buf);
    p->messages = sent;
    p->replies = replies;
    printf("  sent %ld frames of %d..%d bytes, each on its own connection; %ld disconnect(s) "
           "seen by the clients\n",
           sent, HUGE_BYTES_MIN, HUGE_BYTES_MAX, ev.disconnected);
    check(s, p, sent == HUGE_SOCKETS, "every huge frame sent (%ld of %d)", sent, HUGE_SOCKETS);
    check(s, p, replies == 0, "no reply to a frame over the limit: %ld", replies);
    check(s, p, ev.disconnected >= sent, "the broker cut every such connection: %ld of %ld",
          ev.disconnected, sent);
    probe(s, p, "after");
    phase_end(s, p);
}

/* ---- phase 2a: unknown CURVE keys --------------------------------------------------------- */

typedef struct refused {
    long queued, replies, opened;
    events_t ev;
} refused_t;

/* REFUSED_SOCKETS clients, each with a fresh key the ledger never recorded, share `count`
 * hostile messages (sent without waiting: only a completed handshake would carry them);
 * the round ends when every client has seen its handshake end. */
static void refused_round(soak_t *s, int round, long first, long count, refused_t *r)
{
    static void *socks[REFUSED_SOCKETS], *mons[REFUSED_SOCKETS];
    static key_pair_t keys[REFUSED_SOCKETS];
    static hostile_t h;
    int opened = 0;
    for (; opened < REFUSED_SOCKETS && keys_generate(&keys[opened]) == CL_OK; opened++) {
        dealer_opts_t o = {&keys[opened], REFUSED_SNDHWM, REFUSED_SNDHWM, 100, -1};
        socks[opened] = dealer_open(s, &o);
        mons[opened] = socks[opened] != NULL
                           ? monitor_open(s, socks[opened], (long)round * REFUSED_SOCKETS + opened)
                           : NULL;
        if (mons[opened] == NULL) {
            if (socks[opened] != NULL)
                zmq_close(socks[opened]);
            break;
        }
    }
    for (long i = first; opened > 0 && i < first + count; i++) {
        hostile_make(s, i, &h);
        r->queued += hostile_send(socks[i % opened], &h, ZMQ_DONTWAIT) == CL_OK;
    }
    events_t ev = {0};
    int64_t deadline = clock_mono_ms() + REFUSED_WAIT_MS;
    while (clock_mono_ms() < deadline && ev.failed_auth + ev.succeeded < opened) {
        sleep_ms(SETTLE_STEP_MS);
        for (int k = 0; k < opened; k++) {
            r->replies += drain_any(socks[k]);
            monitor_drain(mons[k], &ev);
        }
    }
    for (int k = 0; k < opened; k++) {
        r->replies += drain_any(socks[k]);
        monitor_close(socks[k], mons[k], &ev);
    }
    r->opened += opened;
    r->ev.connected += ev.connected;
    r->ev.succeeded += ev.succeeded;
    r->ev.failed_auth += ev.failed_auth;
    r->ev.failed_protocol += ev.failed_protocol;
    r->ev.failed_other += ev.failed_other;
    r->ev.disconnected += ev.disconnected;
}

static void phase_unknown_keys(soak_t *s)
{
    phase_t *p = phase_begin(s, "2a refused: unknown CURVE keys", 'r');
    long total = s->o.messages / 2, per_round = total / REFUSED_ROUNDS;
    refused_t r = {0};
    int64_t t0 = clock_mono_us();
    for (int round = 0; round < REFUSED_ROUNDS; round++) {
        long count = round + 1 < REFUSED_ROUNDS ? per_round : total - per_round * round;
        refused_round(s, round, per_round * round, count, &r);
    }
    p->elapsed_us = clock_mono_us() - t0;
    p->messages = total;
    p->replies = r.replies;
    printf("  %ld hostile messages on %ld connections with unrecorded keys (%d rounds): %ld taken "
           "into the clients' queues (nothing leaves before a handshake completes), %ld refused "
           "by their high-water mark; %.0f messages/s\n",
           total, r.opened, REFUSED_ROUNDS, r.queued, total - r.queued,
           per_second(total, p->elapsed_us));
    printf("  handshakes seen by the clients: %ld connected, %ld refused (auth), %ld succeeded, "
           "%ld protocol failure(s), %ld other; %ld disconnect(s)\n",
           r.ev.connected, r.ev.failed_auth, r.ev.succeeded, r.ev.failed_protocol,
           r.ev.failed_other, r.ev.disconnected);
    check(s, p, r.opened == (long)REFUSED_ROUNDS * REFUSED_SOCKETS,
          "every client opened: %ld of %d", r.opened, REFUSED_ROUNDS * REFUSED_SOCKETS);
    check(s, p, r.replies == 0, "no reply on a refused connection: %ld", r.replies);
    check(s, p, r.ev.succeeded == 0, "no handshake with an unknown key succeeded: %ld",
          r.ev.succeeded);
    check(s, p, r.ev.failed_auth >= r.opened, "every handshake refused by ZAP: %ld of %ld",
          r.ev.failed_auth, r.opened);
    probe(s, p, "after");
    phase_end(s, p);
    printf("  the broker's own count of refused handshakes (its last rate-limited log line): "
           "%lu\n",
           p->log.zap_refused);
}

/* ---- phase 2b: plain TCP, no CURVE -------------------------------------------------------- */

#define RAW_BUF_BYTES (64 * (HOSTILE_BYTES_MAX + ZMTP_HEADER_BYTES_MAX))

typedef struct raw_stats {
    long connections, connect_failed, written, closed, held_open;
    long bytes_back, bytes_back_max, greetings, commands, data_frames;
} raw_stats_t;

static void put_be64(uint8_t *out, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        out[k] = (uint8_t)(v >> (56 - 8 * k));
}

static uint64_t get_be64(const uint8_t *in)
{
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v = (v << 8) | in[k];
    return v;
}

static void zmtp_greeting(uint8_t out[ZMTP_GREETING_BYTES], const char *mechanism)
{
    memset(out, 0, ZMTP_GREETING_BYTES);
    out[0] = 0xff;
    out[ZMTP_SIGNATURE_BYTES - 1] = 0x7f;
    out[ZMTP_SIGNATURE_BYTES] = 3; /* ZMTP 3.0; as-server 0, filler zero */
    assert(strlen(mechanism) <= ZMTP_MECHANISM_BYTES);
    memcpy(out + ZMTP_MECHANISM_AT, mechanism, strlen(mechanism));
}

static size_t zmtp_header(uint8_t *out, uint8_t flags, size_t len)
{
    if (len <= ZMTP_SHORT_MAX) {
        out[0] = flags;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = flags | ZMTP_LONG;
    put_be64(out + 1, len);
    return ZMTP_HEADER_BYTES_MAX;
}

/* The message as ZMTP frames, or its bare bytes. */
static size_t raw_frames(const hostile_t *h, bool framed, uint8_t *out, size_t room)
{
    if (!framed) {
        memcpy(out, h->buf, h->len);
        return h->len;
    }
    size_t n = 0;
    for (int f = 0; f < h->frames && n + ZMTP_HEADER_BYTES_MAX + h->len <= room; f++) {
        n += zmtp_header(out + n, f + 1 < h->frames ? ZMTP_MORE : 0, h->len);
        memcpy(out + n, h->buf, h->len);
        n += h->len;
    }
    return n;
}

/* Data frames after the broker's greeting would be replies; commands (ERROR) are not. */
static void zmtp_count_frames(const uint8_t *buf, size_t len, raw_stats_t *st)
{
    size_t at = 0;
    while (at + 2 <= len) {
        uint8_t flags = buf[at];
        uint64_t size = buf[at + 1];
        size_t head = 2;
        if ((flags & ZMTP_LONG) != 0) {
            if (at + ZMTP_HEADER_BYTES_MAX > len)
                break;
            size = get_be64(buf + at + 1);
            head = ZMTP_HEADER_BYTES_MAX;
        }
        st->commands += (flags & ZMTP_COMMAND) != 0;
        st->data_frames += (flags & ZMTP_COMMAND) == 0;
        if (size > len - at - head)
            break;
        at += head + (size_t)size;
    }
}

/* Read what the broker sends until it closes (or RAW_READ_TIMEOUT_MS passes). */
static void raw_collect(int fd, raw_stats_t *st)
{
    static uint8_t buf[RAW_RECV_BYTES_MAX], scratch[RAW_RECV_BYTES_MAX];
    size_t got = 0;
    long total = 0;
    bool closed = false;
    int64_t deadline = clock_mono_ms() + RAW_READ_TIMEOUT_MS;
    while (!closed) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        bool room = got < sizeof buf;
        ssize_t n =
            recv(fd, room ? buf + got : scratch, room ? sizeof buf - got : sizeof scratch, 0);
        closed = n <= 0;
        got += room && n > 0 ? (size_t)n : 0;
        total += n > 0 ? n : 0;
    }
    st->closed += closed;
    st->held_open += !closed;
    st->bytes_back += total;
    st->bytes_back_max = total > st->bytes_back_max ? total : st->bytes_back_max;
    if (got >= ZMTP_GREETING_BYTES) {
        st->greetings++;
        zmtp_count_frames(buf + ZMTP_GREETING_BYTES, got - ZMTP_GREETING_BYTES, st);
    }
}

/* A HELLO command of the right size and garbage content: its box cannot be opened. */
static int raw_fake_hello(soak_t *s, int fd)
{
    uint8_t frame[2 + CURVE_HELLO_BYTES];
    size_t head = zmtp_header(frame, ZMTP_COMMAND, CURVE_HELLO_BYTES);
    random_bytes(frame + head, CURVE_HELLO_BYTES, &s->rng);
    memcpy(frame + head, "\x05HELLO", 6);
    return sock_write_all(fd, frame, head + CURVE_HELLO_BYTES);
}

/* One connection: no greeting, or a greeting for NULL, CURVE or PLAIN (with a HELLO that
 * cannot be opened), then up to RAW_MESSAGES_PER_CONNECTION hostile messages. */
static void raw_session(soak_t *s, long *next, long end, raw_stats_t *st)
{
    static const char *const mechanisms[] = {NULL, "NULL", "CURVE", "CURVE", "PLAIN"};
    static hostile_t h;
    static uint8_t out[RAW_BUF_BYTES];
    int variant = (int)uniform_below(&s->rng, sizeof mechanisms / sizeof mechanisms[0]);
    int fd = tcp_connect(s->port);
    if (fd < 0) {
        st->connect_failed++;
        return;
    }
    st->connections++;
    bool ok = true;
    if (mechanisms[variant] != NULL) {
        uint8_t greeting[ZMTP_GREETING_BYTES];
        zmtp_greeting(greeting, mechanisms[variant]);
        ok = sock_write_all(fd, greeting, sizeof greeting) == CL_OK;
    }
    if (ok && variant == 3)
        ok = raw_fake_hello(s, fd) == CL_OK;
    for (int m = 0; ok && m < RAW_MESSAGES_PER_CONNECTION && *next < end; m++) {
        hostile_make(s, *next, &h);
        size_t n = raw_frames(&h, mechanisms[variant] != NULL, out, sizeof out);
        ok = sock_write_all(fd, out, n) == CL_OK;
        st->written += ok;
        (*next)++;
    }
    if (!ok && *next < end)
        (*next)++; /* the broker had closed: that message counts as tried */
    raw_collect(fd, st);
    tcp_abort(fd);
}

static void phase_plain_tcp(soak_t *s)
{
    phase_t *p = phase_begin(s, "2b refused: plain TCP", 't');
    long total = s->o.messages - s->o.messages / 2, next = 0;
    raw_stats_t st = {0};
    int64_t t0 = clock_mono_us();
    while (next < total && st.connect_failed <= st.connections / 10)
        raw_session(s, &next, total, &st);
    p->elapsed_us = clock_mono_us() - t0;
    p->messages = st.written;
    p->replies = st.data_frames;
    printf("  %ld connections (%ld failed to connect): %ld of %ld hostile messages written into "
           "the TCP stream before the broker closed it; %.0f messages/s, %.0f connections/s\n",
           st.connections, st.connect_failed, st.written, total,
           per_second(st.written, p->elapsed_us), per_second(st.connections, p->elapsed_us));
    printf("  the broker sent %ld bytes in all (at most %ld on one connection; %ld full ZMTP "
           "greetings), %ld command(s), %ld data frame(s); it closed %ld connection(s), %ld "
           "were still open after %d ms\n",
           st.bytes_back, st.bytes_back_max, st.greetings, st.commands, st.data_frames, st.closed,
           st.held_open, RAW_READ_TIMEOUT_MS);
    check(s, p, st.connect_failed == 0, "every connection accepted: %ld failed", st.connect_failed);
    check(s, p, st.data_frames == 0, "no reply (data frame) on a plain TCP connection: %ld",
          st.data_frames);
    check(s, p, st.held_open == 0, "the broker closed every garbage connection at once: %ld held",
          st.held_open);
    probe(s, p, "after");
    phase_end(s, p);
}

/* ---- phase 3a: many peers ------------------------------------------------------------------ */

/* Wait until every socket has a reply (each sent one request); how many have one. With
 * `when_ms`, each one's time of answer after t0_ms (-1: none). */
static long await_peers(void **socks, int n, int timeout_ms, int64_t t0_ms, int64_t *when_ms)
{
    zmq_pollitem_t *items = calloc((size_t)n, sizeof *items);
    bool *got = calloc((size_t)n, sizeof *got);
    long answered = 0;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (int k = 0; when_ms != NULL && k < n; k++)
        when_ms[k] = -1;
    while (items != NULL && got != NULL && answered < n && clock_mono_ms() < deadline) {
        for (int k = 0; k < n; k++)
            items[k] = (zmq_pollitem_t){socks[k], 0, got[k] ? 0 : ZMQ_POLLIN, 0};
        int64_t left = deadline - clock_mono_ms();
        if (zmq_poll(items, n, left > 0 ? (long)left : 0) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if ((items[k].revents & ZMQ_POLLIN) == 0 || drain_any(socks[k]) == 0 || got[k])
                continue;
            got[k] = true;
            answered++;
            if (when_ms != NULL)
                when_ms[k] = clock_mono_ms() - t0_ms;
        }
    }
    free(items);
    free(got);
    return answered;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Percentiles of times in ms (-1: never), sorted in place. */
static void print_times(const char *what, int64_t *ms, long n)
{
    qsort(ms, (size_t)n, sizeof *ms, cmp_i64);
    long never = 0, slow = 0;
    for (long k = 0; k < n; k++) {
        never += ms[k] < 0;
        slow += ms[k] >= SLOW_CONNECT_MS;
    }
    const int64_t *done = ms + never;
    long m = n - never;
    if (m == 0) {
        printf("  %s: none of %ld\n", what, n);
        return;
    }
    printf("  %s: p50 %" PRId64 " ms, p99 %" PRId64 " ms, max %" PRId64 " ms; %ld of %ld took "
           "%d ms or more (a SYN retransmit), %ld never\n",
           what, done[m / 2], done[m * 99 / 100], done[m - 1], slow, n, SLOW_CONNECT_MS, never);
}

static int send_balance(void *sock, const char *txn_id)
{
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    size_t len = pack_balance(txn_id, "m0", buf, sizeof buf);
    return zmq_send(sock, buf, len, ZMQ_DONTWAIT) == (int)len ? CL_OK : CL_ERR_ZMQ;
}

/* Authenticated peers, each asking one balance; how many were opened. */
static int open_curve_peers(soak_t *s, void **socks, int n)
{
    char txn[ID_BYTES];
    for (int k = 0; k < n; k++) {
        socks[k] = partner_dealer(s, 16, 16);
        snprintf(txn, sizeof txn, "peer-%d-1", k);
        if (socks[k] == NULL || send_balance(socks[k], txn) != CL_OK) {
            if (socks[k] != NULL)
                zmq_close(socks[k]);
            return k;
        }
    }
    return n;
}

static void print_fd_limit(const soak_t *s)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/limits", (long)s->w.broker.pid);
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "Max open files", 14) == 0)
            printf("  broker: %s", line);
    }
    if (f != NULL)
        fclose(f);
}

typedef struct peers {
    int *fds;
    void **socks;
    int64_t *times_ms; /* scratch: answer or connect times */
    int idle, curve;
    long connected, served, served_again, dropped;
    int64_t idle_done_ms; /* when the idle connections were accepted (or the wait ended) */
    int64_t drain_ms;     /* until the broker held no idle connection any more */
    long rss_curve_kib, fds_curve, fds_all, fds_peak, fds_drained;
} peers_t;

/* Authenticated peers first, all connecting at once, each answered once. */
static void peers_authenticated(soak_t *s, phase_t *p, peers_t *pe, int n)
{
    int64_t t0 = clock_mono_ms();
    pe->curve = open_curve_peers(s, pe->socks, n);
    pe->served = await_peers(pe->socks, pe->curve, PEERS_TIMEOUT_MS, t0, pe->times_ms);
    pe->rss_curve_kib = broker_rss_kib(s);
    pe->fds_curve = broker_fds(s);
    long growth = pe->rss_curve_kib - p->rss_before_kib;
    printf("  %d authenticated peers connected at once, %ld answered, in %.1f s; broker RSS %ld "
           "KiB (%+ld, %.1f KiB a peer), %ld open fds\n",
           pe->curve, pe->served, (double)(clock_mono_ms() - t0) / MSEC_PER_SEC, pe->rss_curve_kib,
           growth, pe->curve > 0 ? (double)growth / pe->curve : 0.0, pe->fds_curve);
    print_times("time to first answer", pe->times_ms, pe->curve);
}

static int tcp_connect_start(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) != 0 ||
        (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Wait for a burst of connects; each one's time after t0_ms, or -1 (failed, not yet). */
static long connects_complete(const int *fds, int n, int64_t t0_ms, int64_t *done_ms)
{
    struct pollfd *pfds = calloc((size_t)n, sizeof *pfds);
    long pending = 0, done = 0;
    for (int k = 0; pfds != NULL && k < n; k++) {
        pfds[k] = (struct pollfd){fds[k], POLLOUT, 0};
        done_ms[k] = -1;
        pending++;
    }
    int64_t deadline = t0_ms + HANDSHAKE_IVL_MS;
    while (pfds != NULL && pending > 0 && clock_mono_ms() < deadline) {
        if (poll(pfds, (nfds_t)n, (int)(deadline - clock_mono_ms())) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (pfds[k].fd < 0 || pfds[k].revents == 0)
                continue;
            int err = 0;
            socklen_t len = sizeof err;
            bool ok = getsockopt(fds[k], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
            done_ms[k] = ok ? clock_mono_ms() - t0_ms : -1;
            done += ok;
            pfds[k].fd = -1;
            pending--;
        }
    }
    free(pfds);
    return done;
}

/* Then idle TCP connections that never send a byte, all started at once (non-blocking); a
 * legitimate client connects in the middle of the burst. */
static void peers_idle(soak_t *s, phase_t *p, peers_t *pe, int n)
{
    int64_t t0 = clock_mono_ms();
    for (pe->idle = 0; pe->idle < n; pe->idle++) {
        pe->fds[pe->idle] = tcp_connect_start(s->port);
        if (pe->fds[pe->idle] < 0)
            break;
    }
    probe(s, p, "during the connect burst");
    pe->connected = connects_complete(pe->fds, pe->idle, t0, pe->times_ms);
    pe->idle_done_ms = clock_mono_ms();
    pe->fds_all = broker_fds(s);
    p->rss_held_kib = broker_rss_kib(s);
    long growth = p->rss_held_kib - pe->rss_curve_kib;
    printf("  %d idle TCP connections started at once, %ld accepted within %d ms; with the "
           "authenticated peers: broker RSS %ld KiB (%+ld for the idle ones), %ld open fds "
           "(%+ld)\n",
           pe->idle, pe->connected, HANDSHAKE_IVL_MS, p->rss_held_kib, growth, pe->fds_all,
           pe->fds_all - pe->fds_curve);
    int64_t *sorted = malloc((size_t)pe->idle * sizeof *sorted + 1);
    if (sorted != NULL) {
        memcpy(sorted, pe->times_ms, (size_t)pe->idle * sizeof *sorted);
        print_times("idle connect time", sorted, pe->idle);
    }
    free(sorted);
}

/* Until the broker holds no more descriptors than before the idle connections (every one it
 * accepted dropped by its handshake timeout), at most IDLE_DRAIN_MAX_MS. */
static void peers_idle_drain(soak_t *s, peers_t *pe)
{
    int64_t start = clock_mono_ms();
    long fds = broker_fds(s);
    pe->fds_peak = fds > pe->fds_all ? fds : pe->fds_all;
    while (fds > pe->fds_curve && clock_mono_ms() - start < IDLE_DRAIN_MAX_MS) {
        sleep_ms(SETTLE_STEP_MS);
        fds = broker_fds(s);
        pe->fds_peak = fds > pe->fds_peak ? fds : pe->fds_peak;
    }
    pe->fds_drained = fds;
    pe->drain_ms = clock_mono_ms() - pe->idle_done_ms;
    for (int k = 0; k < pe->idle; k++)
        pe->dropped += pe->times_ms[k] >= 0 && tcp_closed_by_peer(pe->fds[k]);
}

/* Hold `n` authenticated CURVE peers and `n` idle TCP connections (never a byte); a
 * legitimate client must still be served, and the idle ones must be dropped. */
static void peers_attack(soak_t *s, phase_t *p, peers_t *pe, int n)
{
    peers_authenticated(s, p, pe, n);
    peers_idle(s, p, pe, n);
    probe(s, p, "with every peer held");
    peers_idle_drain(s, pe);
    char txn[ID_BYTES];
    for (int k = 0; k < pe->curve; k++) {
        snprintf(txn, sizeof txn, "peer-%d-2", k);
        send_balance(pe->socks[k], txn);
    }
    pe->served_again = await_peers(pe->socks, pe->curve, PEERS_TIMEOUT_MS, clock_mono_ms(), NULL);
    long held = broker_rss_kib(s);
    p->rss_held_kib = held > p->rss_held_kib ? held : p->rss_held_kib;
}

static void phase_peers(soak_t *s)
{
    phase_t *p = phase_begin(s, "3a many peers", 'p');
    int n = s->o.peers;
    peers_t pe = {0};
    pe.fds = calloc((size_t)n, sizeof *pe.fds);
    pe.socks = calloc((size_t)n, sizeof *pe.socks);
    pe.times_ms = calloc((size_t)n, sizeof *pe.times_ms);
    p->bound_kib = (long)n * (PEER_AUTH_RSS_KIB_MAX + PEER_IDLE_RSS_KIB_MAX);
    print_fd_limit(s);
    if (pe.fds != NULL && pe.socks != NULL && pe.times_ms != NULL)
        peers_attack(s, p, &pe, n);
    for (int k = 0; k < pe.idle; k++)
        tcp_abort(pe.fds[k]);
    for (int k = 0; k < pe.curve; k++)
        zmq_close(pe.socks[k]);
    free(pe.fds);
    free(pe.socks);
    free(pe.times_ms);
    sleep_ms(CLOSE_SETTLE_MS);
    p->messages = 2L * pe.curve;
    p->replies = pe.served + pe.served_again;
    printf("  the broker held at most %ld idle connections at once (%ld fds at the peak); %.1f s "
           "after the burst it had %ld fds (%ld before it); the clients saw %ld of %ld closed (the "
           "others never left the kernel's accept queue: SYN cookies, backlog full); %ld of %d "
           "authenticated peers answered again\n",
           pe.fds_peak - pe.fds_curve, pe.fds_peak, (double)pe.drain_ms / MSEC_PER_SEC,
           pe.fds_drained, pe.fds_curve, pe.dropped, pe.connected, pe.served_again, pe.curve);
    printf("  bound: %ld KiB per authenticated peer and %ld KiB per idle connection, %d of each\n",
           PEER_AUTH_RSS_KIB_MAX, PEER_IDLE_RSS_KIB_MAX, n);
    check(s, p, pe.idle == n && pe.curve == n, "all peers started: %d TCP, %d CURVE of %d each",
          pe.idle, pe.curve, n);
    check(s, p, pe.served == pe.curve && pe.served_again == pe.curve,
          "every authenticated peer answered, twice: %ld and %ld of %d", pe.served, pe.served_again,
          pe.curve);
    check(s, p, pe.connected > 0 && pe.fds_drained <= pe.fds_curve,
          "the broker dropped every idle connection it accepted (handshake timeout %d ms): %ld "
          "fds %.1f s after the burst, %ld before it",
          HANDSHAKE_IVL_MS, pe.fds_drained, (double)pe.drain_ms / MSEC_PER_SEC, pe.fds_curve);
    probe(s, p, "after");
    phase_end(s, p);
}

/* ---- phase 3b: a peer that never reads ----------------------------------------------------- */

/* The broker's RSS once it stops changing for SETTLE_STABLE_MS (at most max_ms); the peak. */
static long settle_rss(const soak_t *s, int max_ms)
{
    long peak = broker_rss_kib(s), last = peak;
    int64_t start = clock_mono_ms(), stable_since = start;
    while (clock_mono_ms() - start < max_ms && clock_mono_ms() - stable_since < SETTLE_STABLE_MS) {
        sleep_ms(SETTLE_STEP_MS);
        long now = broker_rss_kib(s);
        if (now != last)
            stable_since = clock_mono_ms();
        last = now;
        peak = now > peak ? now : peak;
    }
    return peak;
}

static void phase_never_reads(soak_t *s)
{
    phase_t *p = phase_begin(s, "3b peer never reads", 'n');
    p->bound_kib = NEVER_READ_RSS_GROWTH_MAX_KIB;
    dealer_opts_t o = {&s->key, REFUSED_SNDHWM, 1, 100, NEVER_READ_SNDTIMEO_MS};
    void *sock = dealer_open(s, &o);
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    char txn[ID_BYTES], member[ID_BYTES];
    long sent = 0;
    int64_t t0 = clock_mono_us();
    for (long i = 0; sock != NULL && i < s->o.never_read; i++) {
        snprintf(txn, sizeof txn, "n%ld", i);
        snprintf(member, sizeof member, "m%ld", i % SOAK_MEMBERS);
        size_t len = pack_balance(txn, member, buf, sizeof buf);
        if (zmq_send(sock, buf, len, 0) != (int)len)
            break;
        sent++;
    }
    p->elapsed_us = clock_mono_us() - t0;
    p->rss_held_kib = settle_rss(s, SETTLE_MAX_MS);
    printf("  %ld valid balance inquiries sent (RCVHWM 1, never read): %.0f messages/s; broker "
           "RSS settled at %ld KiB (%+ld); bound %ld KiB (SOCKET_HWM replies queued)\n",
           sent, per_second(sent, p->elapsed_us), p->rss_held_kib,
           p->rss_held_kib - p->rss_before_kib, p->bound_kib);
    probe(s, p, "while the peer does not read");
    if (sock != NULL)
        zmq_close(sock);
    sleep_ms(CLOSE_SETTLE_MS);
    p->messages = sent;
    check(s, p, sent == s->o.never_read, "every request sent: %ld of %ld", sent, s->o.never_read);
    phase_end(s, p);
}

/* ---- phase 3c: a multipart message that never ends ----------------------------------------- */

/* With libzmq: every frame but the last stays in the sender's own pipe (ypipe keeps an
 * incomplete message unflushed), so this shows where the memory goes, not the broker's. */
static void phase_multipart_zmq(soak_t *s)
{
    phase_t *p = phase_begin(s, "3c1 unending multipart, libzmq", 'm');
    void *sock = partner_dealer(s, REFUSED_SNDHWM, REFUSED_SNDHWM);
    static uint8_t frame[MULTIPART_FRAME_BYTES];
    random_bytes(frame, sizeof frame, &s->rng);
    long frames = 0, self_before = self_rss_kib(), self_now = self_before;
    const char *stop = "time";
    int64_t t0 = clock_mono_us(), deadline = clock_mono_ms() + s->o.multipart_s * MSEC_PER_SEC;
    while (sock != NULL && clock_mono_ms() < deadline) {
        for (int k = 0; k < MULTIPART_BURST; k++)
            frames += zmq_send(sock, frame, sizeof frame, ZMQ_SNDMORE) == (int)sizeof frame;
        self_now = self_rss_kib();
        if (self_now - self_before >= MULTIPART_OWN_CAP_KIB) {
            stop = "our own RSS reached the cap";
            break;
        }
    }
    p->elapsed_us = clock_mono_us() - t0;
    p->rss_held_kib = broker_rss_kib(s);
    printf("  %ld frames of %d bytes with ZMQ_SNDMORE in %.1f s (%.0f frames/s), stopped by %s; "
           "our RSS %+ld KiB, the broker's %+ld KiB: libzmq keeps the unfinished message in "
           "the sender, nothing reaches the broker\n",
           frames, MULTIPART_FRAME_BYTES, (double)p->elapsed_us / USEC_PER_SEC,
           per_second(frames, p->elapsed_us), stop, self_now - self_before,
           p->rss_held_kib - p->rss_before_kib);
    probe(s, p, "with the multipart message pending");
    if (sock != NULL)
        zmq_close(sock);
    p->messages = frames;
    check(s, p, sock != NULL && frames > 0, "frames sent: %ld", frames);
    phase_end(s, p);
}

/* ---- a minimal CurveZMQ client (RFC 26) over a plain TCP socket ---------------------------- */

/* libzmq will not send an unfinished message, so the real attack needs its own client: it
 * authenticates with our recorded key and then sends MESSAGE commands whose flags say
 * "more" forever, which the broker's libzmq keeps until the message ends. */
typedef struct curve_conn {
    int fd;
    uint8_t client_pub[CURVE_KEY_BYTES], client_sec[CURVE_KEY_BYTES];
    uint8_t server_pub[CURVE_KEY_BYTES];
    uint8_t transient_pub[CURVE_KEY_BYTES], transient_sec[CURVE_KEY_BYTES];
    uint8_t server_transient[CURVE_KEY_BYTES];
    uint8_t shared[crypto_box_BEFORENMBYTES];
    uint64_t nonce; /* the next short nonce; strictly increasing */
} curve_conn_t;

static void curve_nonce(uint8_t nonce[crypto_box_NONCEBYTES], const char *prefix, uint64_t n)
{
    memcpy(nonce, prefix, CURVE_NONCE_PREFIX_BYTES);
    put_be64(nonce + CURVE_NONCE_PREFIX_BYTES, n);
}

static int zmtp_send(int fd, uint8_t flags, const uint8_t *body, size_t len)
{
    uint8_t frame[ZMTP_HEADER_BYTES_MAX + CURVE_COMMAND_BYTES_MAX];
    assert(len <= CURVE_COMMAND_BYTES_MAX);
    size_t head = zmtp_header(frame, flags, len);
    memcpy(frame + head, body, len);
    return sock_write_all(fd, frame, head + len);
}

static int zmtp_recv(int fd, uint8_t *body, size_t room, size_t *len_out)
{
    uint8_t head[ZMTP_HEADER_BYTES_MAX];
    if (sock_read_exact(fd, head, 2, PROBE_TIMEOUT_MS) != CL_OK)
        return CL_ERR_IO;
    uint64_t len = head[1];
    if ((head[0] & ZMTP_LONG) != 0) {
        if (sock_read_exact(fd, head + 2, ZMTP_HEADER_BYTES_MAX - 2, PROBE_TIMEOUT_MS) != CL_OK)
            return CL_ERR_IO;
        len = get_be64(head + 1);
    }
    if (len > room || sock_read_exact(fd, body, (size_t)len, PROBE_TIMEOUT_MS) != CL_OK)
        return CL_ERR_IO;
    *len_out = (size_t)len;
    return CL_OK;
}

static int curve_hello(curve_conn_t *c)
{
    uint8_t nonce[crypto_box_NONCEBYTES], zeros[CURVE_HELLO_ZEROS] = {0};
    uint8_t cmd[CURVE_HELLO_BYTES] = {0};
    curve_nonce(nonce, "CurveZMQHELLO---", c->nonce);
    memcpy(cmd, "\x05HELLO\x01\x00", CURVE_HELLO_PAD_AT); /* name, version 1.0; then padding */
    memcpy(cmd + CURVE_HELLO_KEY_AT, c->transient_pub, CURVE_KEY_BYTES);
    put_be64(cmd + CURVE_HELLO_NONCE_AT, c->nonce++);
    if (crypto_box_easy(cmd + CURVE_HELLO_BOX_AT, zeros, sizeof zeros, nonce, c->server_pub,
                        c->transient_sec) != 0)
        return CL_ERR_INVALID;
    return zmtp_send(c->fd, ZMTP_COMMAND, cmd, sizeof cmd);
}

static int curve_welcome(curve_conn_t *c, uint8_t cookie[CURVE_COOKIE_BYTES])
{
    uint8_t body[CURVE_COMMAND_BYTES_MAX], nonce[crypto_box_NONCEBYTES];
    uint8_t plain[CURVE_WELCOME_BOX_BYTES - crypto_box_MACBYTES];
    size_t len = 0;
    if (zmtp_recv(c->fd, body, sizeof body, &len) != CL_OK || len != CURVE_WELCOME_BYTES ||
        memcmp(body, "\x07WELCOME", 8) != 0)
        return CL_ERR_INVALID;
    memcpy(nonce, "WELCOME-", 8);
    memcpy(nonce + 8, body + CURVE_WELCOME_NONCE_AT, CURVE_LONG_NONCE_BYTES);
    if (crypto_box_open_easy(plain, body + CURVE_WELCOME_BOX_AT, CURVE_WELCOME_BOX_BYTES, nonce,
                             c->server_pub, c->transient_sec) != 0)
        return CL_ERR_INVALID;
    memcpy(c->server_transient, plain, CURVE_KEY_BYTES);
    memcpy(cookie, plain + CURVE_KEY_BYTES, CURVE_COOKIE_BYTES);
    return crypto_box_beforenm(c->shared, c->server_transient, c->transient_sec) == 0
               ? CL_OK
               : CL_ERR_INVALID;
}

/* One ZMTP metadata property: name length, name, 4-byte value length, value. */
static size_t curve_property(uint8_t *out, const char *name, const char *value)
{
    size_t name_len = strlen(name), value_len = strlen(value);
    out[0] = (uint8_t)name_len;
    memcpy(out + 1, name, name_len);
    for (int k = 0; k < 4; k++)
        out[1 + name_len + (size_t)k] = (uint8_t)(value_len >> (24 - 8 * k));
    memcpy(out + 5 + name_len, value, value_len);
    return 5 + name_len + value_len;
}

/* INITIATE: our long-term key, a vouch Box[C',S](C->S'), and metadata (a DEALER). */
static int curve_initiate(curve_conn_t *c, const uint8_t cookie[CURVE_COOKIE_BYTES])
{
    uint8_t vouch_nonce[crypto_box_NONCEBYTES], vouch_plain[CURVE_VOUCH_BYTES];
    uint8_t plain[CURVE_INITIATE_PLAIN_MAX], nonce[crypto_box_NONCEBYTES];
    uint8_t cmd[CURVE_INITIATE_HEAD_BYTES + CURVE_INITIATE_PLAIN_MAX + crypto_box_MACBYTES];
    memcpy(vouch_nonce, "VOUCH---", 8);
    randombytes_buf(vouch_nonce + 8, CURVE_LONG_NONCE_BYTES);
    memcpy(vouch_plain, c->transient_pub, CURVE_KEY_BYTES);
    memcpy(vouch_plain + CURVE_KEY_BYTES, c->server_pub, CURVE_KEY_BYTES);
    size_t n = 0;
    memcpy(plain, c->client_pub, CURVE_KEY_BYTES);
    n += CURVE_KEY_BYTES;
    memcpy(plain + n, vouch_nonce + 8, CURVE_LONG_NONCE_BYTES);
    n += CURVE_LONG_NONCE_BYTES;
    if (crypto_box_easy(plain + n, vouch_plain, sizeof vouch_plain, vouch_nonce,
                        c->server_transient, c->client_sec) != 0)
        return CL_ERR_INVALID;
    n += CURVE_VOUCH_BYTES + crypto_box_MACBYTES;
    n += curve_property(plain + n, "Socket-Type", "DEALER");
    n += curve_property(plain + n, "Identity", "");
    assert(n <= sizeof plain);
    memcpy(cmd, "\x08INITIATE", 9);
    memcpy(cmd + 9, cookie, CURVE_COOKIE_BYTES);
    put_be64(cmd + 9 + CURVE_COOKIE_BYTES, c->nonce);
    curve_nonce(nonce, "CurveZMQINITIATE", c->nonce++);
    if (crypto_box_easy_afternm(cmd + CURVE_INITIATE_HEAD_BYTES, plain, n, nonce, c->shared) != 0)
        return CL_ERR_INVALID;
    return zmtp_send(c->fd, ZMTP_COMMAND, cmd, CURVE_INITIATE_HEAD_BYTES + n + crypto_box_MACBYTES);
}

/* READY (ZAP said yes), or ERROR (it said no): only READY opens with our shared key. */
static int curve_ready(curve_conn_t *c)
{
    uint8_t body[CURVE_COMMAND_BYTES_MAX], plain[CURVE_COMMAND_BYTES_MAX];
    uint8_t nonce[crypto_box_NONCEBYTES];
    size_t len = 0;
    if (zmtp_recv(c->fd, body, sizeof body, &len) != CL_OK ||
        len < CURVE_READY_HEAD_BYTES + crypto_box_MACBYTES || memcmp(body, "\x05READY", 6) != 0)
        return CL_ERR_INVALID;
    memcpy(nonce, "CurveZMQREADY---", CURVE_NONCE_PREFIX_BYTES);
    memcpy(nonce + CURVE_NONCE_PREFIX_BYTES, body + 6, CURVE_SHORT_NONCE_BYTES);
    return crypto_box_open_easy_afternm(plain, body + CURVE_READY_HEAD_BYTES,
                                        len - CURVE_READY_HEAD_BYTES, nonce, c->shared) == 0
               ? CL_OK
               : CL_ERR_INVALID;
}

static int curve_open(soak_t *s, curve_conn_t *c)
{
    memset(c, 0, sizeof *c);
    c->nonce = 1;
    if (zmq_z85_decode(c->client_pub, s->key.public_z85) == NULL ||
        zmq_z85_decode(c->client_sec, s->key.secret_z85) == NULL ||
        zmq_z85_decode(c->server_pub, s->server_z85) == NULL ||
        crypto_box_keypair(c->transient_pub, c->transient_sec) != 0)
        return CL_ERR_INVALID;
    c->fd = tcp_connect(s->port);
    if (c->fd < 0)
        return CL_ERR_IO;
    uint8_t ours[ZMTP_GREETING_BYTES], theirs[ZMTP_GREETING_BYTES];
    uint8_t cookie[CURVE_COOKIE_BYTES];
    zmtp_greeting(ours, "CURVE");
    if (sock_write_all(c->fd, ours, sizeof ours) != CL_OK ||
        sock_read_exact(c->fd, theirs, sizeof theirs, PROBE_TIMEOUT_MS) != CL_OK ||
        memcmp(theirs + ZMTP_MECHANISM_AT, "CURVE", 5) != 0)
        return CL_ERR_IO;
    if (curve_hello(c) != CL_OK || curve_welcome(c, cookie) != CL_OK ||
        curve_initiate(c, cookie) != CL_OK || curve_ready(c) != CL_OK)
        return CL_ERR_INVALID;
    return CL_OK;
}

/* One frame of a message as a MESSAGE command: Box[flags + payload](C'->S'). */
static int curve_send(curve_conn_t *c, const uint8_t *payload, size_t len, bool more)
{
    static uint8_t plain[1 + MULTIPART_FRAME_BYTES];
    static uint8_t frame[ZMTP_HEADER_BYTES_MAX + CURVE_MESSAGE_HEAD_BYTES + sizeof plain +
                         crypto_box_MACBYTES];
    uint8_t nonce[crypto_box_NONCEBYTES];
    assert(len <= MULTIPART_FRAME_BYTES);
    plain[0] = more ? CURVE_MESSAGE_MORE : 0;
    memcpy(plain + 1, payload, len);
    size_t body_len = CURVE_MESSAGE_HEAD_BYTES + 1 + len + crypto_box_MACBYTES;
    size_t head = zmtp_header(frame, 0, body_len);
    uint8_t *body = frame + head;
    memcpy(body, "\x07MESSAGE", 8);
    put_be64(body + 8, c->nonce);
    curve_nonce(nonce, "CurveZMQMESSAGEC", c->nonce++);
    if (crypto_box_easy_afternm(body + CURVE_MESSAGE_HEAD_BYTES, plain, 1 + len, nonce,
                                c->shared) != 0)
        return CL_ERR_INVALID;
    return sock_write_all(c->fd, frame, head + body_len);
}

/* Frames with "more" set until the time is up, `frames_max` are sent or the broker's RSS
 * reaches the cap. */
static long multipart_flood(soak_t *s, phase_t *p, curve_conn_t *c, long frames_max,
                            const char **stop)
{
    static uint8_t payload[MULTIPART_FRAME_BYTES];
    random_bytes(payload, sizeof payload, &s->rng);
    long frames = 0;
    int64_t start = clock_mono_ms(), deadline = start + s->o.multipart_s * MSEC_PER_SEC;
    int64_t next_sample = start + MULTIPART_SAMPLE_MS;
    for (*stop = "time";;) {
        int rc = CL_OK;
        for (int k = 0; k < MULTIPART_BURST && rc == CL_OK && frames < frames_max; k++) {
            rc = curve_send(c, payload, sizeof payload, true);
            frames += rc == CL_OK;
        }
        long rss = broker_rss_kib(s);
        int64_t now = clock_mono_ms();
        bool capped = rss - p->rss_before_kib >= MULTIPART_RSS_CAP_KIB;
        if (rc != CL_OK)
            *stop = "the broker closing the connection";
        else if (capped)
            *stop = "the broker's RSS reaching the cap";
        else if (frames >= frames_max)
            *stop = "as many frames as the first time";
        if (rc != CL_OK || capped || frames >= frames_max || now >= deadline)
            return frames;
        if (now >= next_sample) {
            printf("  t=%.1f s: %ld frames sent, broker RSS %ld KiB (%+ld)\n",
                   (double)(now - start) / MSEC_PER_SEC, frames, rss, rss - p->rss_before_kib);
            next_sample += MULTIPART_SAMPLE_MS;
        }
    }
}

/* The attack as a peer speaking CurveZMQ itself would make it. Run again with as many
 * frames (frames_max), it tells a leak (the same growth again) from memory the allocator
 * keeps and uses again (less growth). Measured, not judged: returns the growth in KiB. */
static long phase_multipart_raw(soak_t *s, const char *name, char tag, long *frames_max)
{
    phase_t *p = phase_begin(s, name, tag);
    p->bound_kib = MULTIPART_RSS_GROWTH_MAX_KIB;
    curve_conn_t c;
    int rc = curve_open(s, &c);
    check(s, p, rc == CL_OK,
          "CurveZMQ handshake with our recorded key (HELLO, WELCOME, "
          "INITIATE, READY)");
    const char *stop = "no handshake";
    long frames = 0;
    int64_t t0 = clock_mono_us();
    if (rc == CL_OK)
        frames = multipart_flood(s, p, &c, *frames_max, &stop);
    p->elapsed_us = clock_mono_us() - t0;
    p->rss_held_kib = settle_rss(s, SETTLE_STABLE_MS * 3);
    long growth = p->rss_held_kib - p->rss_before_kib;
    printf("  %ld frames of %d bytes, \"more\" set on each, in %.1f s (%.0f frames/s, %.1f MiB), "
           "stopped by %s\n",
           frames, MULTIPART_FRAME_BYTES, (double)p->elapsed_us / USEC_PER_SEC,
           per_second(frames, p->elapsed_us),
           (double)frames * MULTIPART_FRAME_BYTES / (double)(KIB_PER_MIB * KIB_PER_MIB), stop);
    printf("  broker RSS after the attack: %ld KiB (%+ld KiB, %.0f bytes per frame sent, %.1f "
           "MiB/s); the broker's memory guard (%d MiB resident) drops every partner connection "
           "when an unfinished message grows past it\n",
           p->rss_held_kib, growth,
           frames > 0 ? (double)growth * KIB_PER_MIB / (double)frames : 0.0,
           mib((long)per_second(growth, p->elapsed_us)), SOAK_MEMORY_MAX_MB);
    probe(s, p, "after the multipart attack");
    if (c.fd > 0)
        tcp_abort(c.fd);
    sleep_ms(CLOSE_SETTLE_MS);
    p->messages = frames;
    *frames_max = frames;
    phase_end(s, p);
    return growth;
}

/* ---- 3d: log lines --------------------------------------------------------------------------- */

static long log_bound(const phase_t *p)
{
    return ((long)(p->wall_us / (int64_t)USEC_PER_SEC) + 1) * LOG_CALL_SITES_MAX;
}

static void log_report(soak_t *s)
{
    printf("\n== 3d log flooding ==\n");
    long lines = 0, dropped = 0, over = 0;
    int64_t us = 0;
    for (size_t k = 0; k < s->phase_count; k++) {
        const phase_t *p = &s->phases[k];
        printf("  %-40s %7ld lines in %6.1f s: %8.1f a second (bound %ld lines)%s\n", p->name,
               p->log.lines, (double)p->wall_us / USEC_PER_SEC,
               per_second(p->log.lines, p->wall_us), log_bound(p),
               p->log.lines > log_bound(p) ? "  OVER" : "");
        lines += p->log.lines;
        dropped += p->log.dropped;
        us += p->wall_us;
        over += p->log.lines > log_bound(p);
    }
    printf("  all phases: %ld lines in %.1f s, %.1f a second; %ld of them \"dropped a message of N "
           "frame(s)\" (common/router.c logs each with log_warn, not log_every)\n",
           lines, (double)us / USEC_PER_SEC, per_second(lines, us), dropped);
    s->log_lines = lines;
    s->log_per_s = per_second(lines, us);
    s->log_ok = over == 0;
    check(s, NULL, over == 0,
          "every phase within %d lines a second and call site (one line a second per rate-limited "
          "site): %ld phase(s) over",
          LOG_CALL_SITES_MAX, over);
}

/* ---- after all phases -------------------------------------------------------------------- */

static void ledger_unchanged(soak_t *s)
{
    int rc = snapshot_take(s, &s->after);
    check(s, NULL, rc == CL_OK, "ledger readable (read-only open): %s", cl_strerror(rc));
    check(s, NULL, s->after.last_seq == s->before.last_seq,
          "journal last seq unchanged: %" PRIu64 " before, %" PRIu64 " after", s->before.last_seq,
          s->after.last_seq);
    size_t differ = 0, first = SNAPSHOT_ACCOUNTS_MAX;
    for (size_t i = 0; i < s->before.count && i < s->after.count; i++) {
        const ledger_account_row_t *a = &s->before.rows[i], *b = &s->after.rows[i];
        bool same = strcmp(a->account, b->account) == 0 && a->balance == b->balance;
        first = !same && first == SNAPSHOT_ACCOUNTS_MAX ? i : first;
        differ += !same;
    }
    check(s, NULL, s->before.count == s->after.count && differ == 0,
          "every account and balance unchanged: %zu accounts before, %zu after, %zu differ",
          s->before.count, s->after.count, differ);
    if (first < SNAPSHOT_ACCOUNTS_MAX)
        printf("  first difference: %s %" PRId64 " before, %s %" PRId64 " after\n",
               s->before.rows[first].account, s->before.rows[first].balance,
               s->after.rows[first].account, s->after.rows[first].balance);
}

static void final_checks(soak_t *s)
{
    printf("\n== after all phases ==\n");
    ledger_unchanged(s);
    authorization_t *a = call_earn(s, "final-earn", CHECK_EARN_MEMBER, CHECK_EARN_MINOR);
    int64_t balance = s->balances[1] + CHECK_EARN_POINTS;
    uint64_t seq = s->before.last_seq + 1;
    bool ok = a != NULL && a->code == RC_APPROVED && a->points == CHECK_EARN_POINTS &&
              a->balance == balance && a->seq == seq && !a->replay;
    check(s, NULL, ok,
          "a valid earn (12.34 EUR for %s) approved: expected code 00, %d points, balance %" PRId64
          ", seq %" PRIu64 "; got %s %02d, %" PRId64 " points, balance %" PRId64 ", seq %" PRIu64,
          CHECK_EARN_MEMBER, CHECK_EARN_POINTS, balance, seq, a != NULL ? "code" : "no reply,",
          a != NULL ? (int)a->code : 0, a != NULL ? a->points : 0, a != NULL ? a->balance : 0,
          a != NULL ? a->seq : 0);
    wire_auth_free(a);
    static char out[OUT_BYTES];
    int rc = world_ctl(&s->w, out, sizeof out, "verify", (char *)NULL);
    check(s, NULL, rc == 0, "coalitionctl verify: exit %d%s%.300s", rc, rc == 0 ? "" : ": ",
          rc == 0 ? "" : out);
    bool alive = broker_alive(s);
    check(s, NULL, alive, "broker still running at the end");
}

static void print_summary(const soak_t *s)
{
    printf("\nsummary: | phase | messages | messages/s | replies | broker RSS before | peak | "
           "after | growth bound | log lines/s | verdict |\n");
    printf("summary: |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (size_t k = 0; k < s->phase_count; k++) {
        const phase_t *p = &s->phases[k];
        char bound[32];
        long peak = p->rss_held_kib > p->rss_after_kib ? p->rss_held_kib : p->rss_after_kib;
        if (p->bound_kib == BOUND_NONE)
            snprintf(bound, sizeof bound, "none (measured)");
        else
            snprintf(bound, sizeof bound, "+%.0f MiB", mib(p->bound_kib));
        printf("summary: | %s | %ld | %.0f | %ld | %.1f MiB | %.1f MiB | %.1f MiB | %s | %.1f | "
               "%s |\n",
               p->name, p->messages, per_second(p->messages, p->elapsed_us), p->replies,
               mib(p->rss_before_kib), mib(peak), mib(p->rss_after_kib), bound,
               per_second(p->log.lines, p->wall_us), p->ok ? "PASS" : "FAIL");
    }
    printf("summary: | 3d log flooding (all phases) | %ld lines | | | | | | %d a second per "
           "call site | %.1f | %s |\n",
           s->log_lines, LOG_CALL_SITES_MAX, s->log_per_s, s->log_ok ? "PASS" : "FAIL");
    printf("summary: broker peak RSS (VmHWM) %ld KiB; %d check(s) failed: %s\n",
           broker_kib(s, "VmHWM:"), s->failures, s->failures == 0 ? "PASS" : "FAIL");
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int ctl_ok(const char *what, int rc, const char *out)
{
    if (rc != 0)
        fprintf(stderr, "soak_hostile: coalitionctl %s: exit %d: %s\n", what, rc, out);
    return rc == 0 ? CL_OK : CL_ERR_INVALID;
}

static int setup_participants(soak_t *s)
{
    static char out[OUT_BYTES];
    char member[ID_BYTES], why[KEY_WHY_BYTES_MAX];
    world_t *w = &s->w;
    int rc = ctl_ok("partner add",
                    world_ctl(w, out, sizeof out, "partner", "add", SOAK_PARTNER, "--earn-rate",
                              SOAK_EARN_RATE, "--currency", SOAK_CURRENCY, (char *)NULL),
                    out);
    if (rc == CL_OK)
        rc = ctl_ok("partner limits",
                    world_ctl(w, out, sizeof out, "partner", "limits", SOAK_PARTNER,
                              "--requests-per-second", SOAK_RATE_LIMIT, (char *)NULL),
                    out);
    for (int k = 0; rc == CL_OK && k < SOAK_MEMBERS; k++) {
        snprintf(member, sizeof member, "m%d", k);
        rc = ctl_ok("member add",
                    world_ctl(w, out, sizeof out, "member", "add", member, (char *)NULL), out);
    }
    if (rc == CL_OK && (keys_read_secret(world_key(w, SOAK_PARTNER, "partner"), &s->key, why,
                                         sizeof why) != CL_OK ||
                        keys_read_public(w->broker_pub, s->server_z85, why, sizeof why) != CL_OK)) {
        fprintf(stderr, "soak_hostile: cannot read the keys: %s\n", why);
        rc = CL_ERR_INVALID;
    }
    return rc;
}

/* Every member earns something first, so that "balances unchanged" means something. */
static int setup_balances(soak_t *s)
{
    char txn[ID_BYTES], member[ID_BYTES];
    for (int k = 0; k < SOAK_MEMBERS; k++) {
        snprintf(txn, sizeof txn, "seed-%d", k);
        snprintf(member, sizeof member, "m%d", k);
        authorization_t *a = call_earn(s, txn, member, (int64_t)(k + 1) * SEED_EARN_MINOR);
        bool ok = a != NULL && a->code == RC_APPROVED && a->points == (k + 1) * SEED_EARN_POINTS;
        s->balances[k] = a != NULL ? a->balance : 0;
        if (!ok)
            fprintf(stderr, "soak_hostile: seed earn for %s: expected 00 and %d points, got %d\n",
                    member, (k + 1) * SEED_EARN_POINTS, a != NULL ? (int)a->code : -1);
        wire_auth_free(a);
        if (!ok)
            return CL_ERR_INVALID;
    }
    return CL_OK;
}

static int soak_setup(soak_t *s)
{
    world_init(&s->w);
    s->w.broker_memory_max_mb = SOAK_MEMORY_MAX_MB;
    world_start_broker(&s->w);
    const char *colon = strrchr(s->w.broker_endpoint, ':');
    s->port = colon != NULL ? (int)strtol(colon + 1, NULL, 10) : 0;
    int rc = setup_participants(s);
    if (rc == CL_OK)
        rc = setup_balances(s);
    if (rc == CL_OK)
        rc = snapshot_take(s, &s->before);
    if (rc != CL_OK)
        return rc;
    printf("soak_hostile: broker pid %ld on %s, ledger %s\n", (long)s->w.broker.pid,
           s->w.broker_endpoint, s->w.ledger);
    printf("soak_hostile: partner %s (rate limit %s/s), %d members with balances, snapshot at seq "
           "%" PRIu64 " with %zu accounts; broker RSS %ld KiB\n",
           SOAK_PARTNER, SOAK_RATE_LIMIT, SOAK_MEMBERS, s->before.last_seq, s->before.count,
           broker_rss_kib(s));
    printf("soak_hostile: --messages %ld --seed %" PRIu64 " --peers %d --never-read %ld "
           "--multipart-seconds %d\n",
           s->o.messages, s->o.seed, s->o.peers, s->o.never_read, s->o.multipart_s);
    return CL_OK;
}

/* Our own descriptors: the peers phase holds three for each peer. The broker started
 * before this, so its own limit is the one it was given. */
static int raise_fd_limit(const options_t *o)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)o->peers * FDS_PER_PEER + SOCKETS_SPARE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return CL_ERR_IO;
    if (rl.rlim_cur >= need)
        return CL_OK;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr, "soak_hostile: --peers %d needs %lu descriptors, the hard limit is %lu\n",
                o->peers, (unsigned long)need, (unsigned long)rl.rlim_max);
        return CL_ERR_INVALID;
    }
    rl.rlim_cur = need;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0 ? CL_OK : CL_ERR_IO;
}

/* ---- options and main --------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: soak_hostile [--messages N] [--seed N] [--peers N] [--never-read N]\n"
            "                    [--multipart-seconds N]\n"
            "A hostile-input soak of coalition-broker: starts a broker on a fresh ledger, sends\n"
            "N malformed and hostile messages over an authenticated CURVE connection, N more\n"
            "over refused ones (unknown keys, plain TCP), then resource attacks: --peers idle\n"
            "TCP and authenticated peers held at once, a peer that sends --never-read requests\n"
            "and never reads, and a multipart message that never ends (--multipart-seconds).\n"
            "Prints messages a second, replies by code, the broker's RSS before and after with\n"
            "the bound of each phase, and log lines a second. Then checks the ledger's journal\n"
            "and balances are unchanged, a valid earn is approved, coalitionctl verify passes.\n"
            "Defaults: --messages %ld --seed %ld --peers %d --never-read %ld "
            "--multipart-seconds %d\n"
            "Exit 0 when every check passed, 1 otherwise, 2 on bad usage.\n",
            DEFAULT_MESSAGES, DEFAULT_SEED, DEFAULT_PEERS, DEFAULT_NEVER_READ, DEFAULT_MULTIPART_S);
}

static int parse_long(const char *name, const char *arg, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "soak_hostile: --%s %s: expected %ld..%ld\n", name, arg, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_option(options_t *o, int c, const char *arg)
{
    long v = 0;
    int rc = -1;
    switch (c) {
    case 'n':
        rc = parse_long("messages", arg, 2, MESSAGES_MAX, &v);
        o->messages = v;
        break;
    case 's':
        rc = parse_long("seed", arg, 0, LONG_MAX, &v);
        o->seed = (uint64_t)v;
        break;
    case 'p':
        rc = parse_long("peers", arg, 1, PEERS_MAX, &v);
        o->peers = (int)v;
        break;
    case 'r':
        rc = parse_long("never-read", arg, 1, NEVER_READ_MAX, &v);
        o->never_read = v;
        break;
    case 'm':
        rc = parse_long("multipart-seconds", arg, 1, MULTIPART_S_MAX, &v);
        o->multipart_s = (int)v;
        break;
    default: break;
    }
    return rc;
}

static int parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"messages", required_argument, NULL, 'n'},
                                             {"seed", required_argument, NULL, 's'},
                                             {"peers", required_argument, NULL, 'p'},
                                             {"never-read", required_argument, NULL, 'r'},
                                             {"multipart-seconds", required_argument, NULL, 'm'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    for (;;) {
        int c = getopt_long(argc, argv, "n:s:p:r:m:h", longopts, NULL);
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
    if (optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static void run(soak_t *s)
{
    phase_hostile(s);
    phase_huge(s);
    phase_unknown_keys(s);
    phase_plain_tcp(s);
    phase_peers(s);
    phase_never_reads(s);
    phase_multipart_zmq(s);
    long frames = LONG_MAX;
    long first = phase_multipart_raw(s, "3c2 unending multipart, raw CurveZMQ", 'M', &frames);
    long again = phase_multipart_raw(s, "3c3 the same again (leak or reuse?)", 'R', &frames);
    printf("  the second attack of %ld frames grew the broker by %ld KiB, %.0f%% of the first's "
           "%ld KiB: the same again would be a leak, none a full reuse of freed memory\n",
           frames, again, first > 0 ? 100.0 * (double)again / (double)first : 0.0, first);
    log_report(s);
    final_checks(s);
    print_summary(s);
}

int main(int argc, char **argv)
{
    static soak_t s; /* large (snapshots, phases); one per process */
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    int weights = 0;
    for (int k = 0; k < K_COUNT; k++)
        weights += kind_weight[k];
    assert(weights == PER_MILLE);
    s.o = (options_t){DEFAULT_MESSAGES, DEFAULT_NEVER_READ, DEFAULT_SEED, DEFAULT_PEERS,
                      DEFAULT_MULTIPART_S};
    if (parse_options(argc, argv, &s.o) != 0 || sodium_init() < 0)
        return 2;
    s.rng = s.o.seed;
    s.ctx = zmq_ctx_new();
    if (s.ctx == NULL || zmq_ctx_set(s.ctx, ZMQ_MAX_SOCKETS, s.o.peers + SOCKETS_SPARE) != 0)
        return 2;
    int64_t t0 = clock_mono_ms();
    int rc = soak_setup(&s);
    if (rc == CL_OK)
        rc = raise_fd_limit(&s.o);
    if (rc == CL_OK)
        run(&s);
    bool failed = rc != CL_OK || s.failures > 0;
    if (failed)
        print_log_tail(&s);
    printf("soak_hostile: %s in %.1f s\n", failed ? "FAIL" : "PASS",
           (double)(clock_mono_ms() - t0) / MSEC_PER_SEC);
    zmq_ctx_term(s.ctx);
    world_destroy(&s.w);
    return failed ? 1 : 0;
}
