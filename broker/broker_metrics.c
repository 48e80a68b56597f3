/* The broker's metrics; see broker_metrics.h. One process-wide set, like a Prometheus
 * client's default registry: the hooks sit in the I/O and writer threads' code without
 * a handle threaded through them. It is made before those threads start and freed after
 * they are joined, so the plain pointer below is never read while it changes. */
#include "broker_metrics.h"

#include "clock.h"
#include "errors.h"
#include "log.h"
#include "request.h"
#include "wire.h"
#include "writer.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

/* Field number and wire type of Authorization.code (coalition.proto). */
#define AUTH_CODE_FIELD 3u
#define WIRE_VARINT 0u
#define WIRE_FIXED64 1u
#define WIRE_LENGTH 2u
#define WIRE_FIXED32 5u
#define VARINT_BYTES_MAX 10
#define CODE_TEXT_BYTES 4

typedef struct broker_metrics {
    metrics_t *registry;
    metrics_http_t *http;
    metrics_labels_t *partners, *codes;
    metrics_family_t *requests, *batch, *commit, *fsync, *queue, *connections, *seq, *map_used,
        *map_size, *started;
    size_t code_slots[BROKER_METRICS_CODES_MAX]; /* label index + 1 of each code, 0: none yet */
} broker_metrics_t;

static broker_metrics_t *bm;

/* Requests per round: powers of two up to WRITER_REQUESTS_PER_COMMIT_MAX (8192). */
static const uint64_t batch_bounds[] = {1,   2,   4,   8,    16,   32,   64,
                                        128, 256, 512, 1024, 2048, 4096, 8192};
/* Microseconds, rendered as seconds: 50 us .. 5 s. */
static const uint64_t latency_bounds_us[] = {50,     100,     250,     500,    1000,   2500,
                                             5000,   10000,   25000,   50000,  100000, 250000,
                                             500000, 1000000, 2500000, 5000000};

static int render(void *ctx, char **text_out, size_t *len_out)
{
    return metrics_render(ctx, text_out, len_out);
}

static int make_families(broker_metrics_t *m)
{
    metrics_t *r = m->registry;
    assert(r != NULL);
    m->partners = metrics_labels(r, "partner", BROKER_METRICS_PARTNERS_MAX, "other");
    m->codes = metrics_labels(r, "code", BROKER_METRICS_CODES_MAX, "other");
    if (m->partners == NULL || m->codes == NULL)
        return CL_ERR_NOMEM;
    m->requests = metrics_counter(r, "coalition_broker_requests_total",
                                  "Requests answered, by the participant the envelope names and "
                                  "response code (00 approved, 10 partial, others declines)",
                                  m->partners, m->codes);
    m->batch = metrics_histogram(r, "coalition_broker_batch_requests",
                                 "Requests per write round (one LMDB transaction, one fsync)",
                                 batch_bounds, sizeof batch_bounds / sizeof batch_bounds[0], 1.0);
    m->commit = metrics_histogram(
        r, "coalition_broker_commit_seconds",
        "One write round: its requests applied in one transaction and committed", latency_bounds_us,
        sizeof latency_bounds_us / sizeof latency_bounds_us[0], 1e-6);
    m->fsync = metrics_histogram(
        r, "coalition_broker_fsync_seconds",
        "The commit call of a round: mdb_txn_commit writes the pages and fsyncs", latency_bounds_us,
        sizeof latency_bounds_us / sizeof latency_bounds_us[0], 1e-6);
    m->queue = metrics_gauge(r, "coalition_broker_writer_queue_requests",
                             "Requests handed to the writer and not yet taken into a round");
    m->connections =
        metrics_gauge(r, "coalition_broker_connections", "Connections open on the partner socket");
    m->seq = metrics_gauge(r, "coalition_broker_journal_seq", "Last committed journal sequence");
    m->map_used = metrics_gauge(r, "coalition_broker_map_used_bytes",
                                "Ledger map in use: (last page number + 1) x page size");
    m->map_size = metrics_gauge(r, "coalition_broker_map_size_bytes", "Ledger map size");
    m->started = metrics_gauge(r, "process_start_time_seconds",
                               "Start time of the process since the Unix epoch in seconds");
    bool all = m->requests && m->batch && m->commit && m->fsync && m->queue && m->connections &&
               m->seq && m->map_used && m->map_size && m->started;
    return all ? CL_OK : CL_ERR_NOMEM;
}

static void free_metrics(broker_metrics_t **m_p)
{
    broker_metrics_t *m = *m_p;
    if (m == NULL)
        return;
    metrics_http_destroy(&m->http);
    metrics_destroy(&m->registry);
    free(m);
    *m_p = NULL;
}

int broker_metrics_start(const metrics_http_addr_t *addr, bool required)
{
    assert(bm == NULL);
    broker_metrics_t *m = calloc(1, sizeof *m);
    int rc = m != NULL ? metrics_new(&m->registry) : CL_ERR_NOMEM;
    if (rc == CL_OK)
        rc = make_families(m);
    if (rc != CL_OK) {
        free_metrics(&m);
        return rc;
    }
    metrics_set(m->started, clock_wall_ms() / 1000);
    if (!addr->off) {
        rc = metrics_http_new(&m->http, addr, render, m->registry);
        if (rc != CL_OK && required) {
            free_metrics(&m);
            return rc;
        }
        if (rc != CL_OK)
            log_warn("metrics: not served (the default %s is taken); give --metrics "
                     "HOST:PORT or off",
                     addr->text);
        else
            log_info("metrics on http://%s%s%s", addr->text, METRICS_HTTP_PATH,
                     addr->loopback ? "" : " (NOT loopback: readable from the network)");
    }
    bm = m;
    return CL_OK;
}

void broker_metrics_stop(void) { free_metrics(&bm); }

metrics_t *broker_metrics_registry(void) { return bm != NULL ? bm->registry : NULL; }

static bool read_varint(const uint8_t *p, size_t len, size_t *at, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < VARINT_BYTES_MAX && *at < len; i++) {
        uint8_t byte = p[(*at)++];
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if ((byte & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

int broker_metrics_auth_code(const uint8_t *reply, size_t len)
{
    size_t at = 0;
    while (at < len) {
        uint64_t key = 0, v = 0;
        if (!read_varint(reply, len, &at, &key))
            return -1;
        unsigned type = (unsigned)(key & 7u);
        uint64_t field = key >> 3;
        bool ok = type == WIRE_VARINT || type == WIRE_LENGTH ? read_varint(reply, len, &at, &v)
                  : type == WIRE_FIXED64                     ? (v = 8, true)
                  : type == WIRE_FIXED32                     ? (v = 4, true)
                                                             : false;
        if (!ok)
            return -1;
        if (type == WIRE_VARINT && field == AUTH_CODE_FIELD)
            return v < BROKER_METRICS_CODES_MAX ? (int)v : -1;
        if (type != WIRE_VARINT && v > len - at)
            return -1;
        if (type != WIRE_VARINT)
            at += (size_t)v;
    }
    assert(at == len);
    return 0;
}

/* The label index of a code (formatted once: the I/O thread's only). */
static size_t code_slot(int code)
{
    if (code < 0 || code >= BROKER_METRICS_CODES_MAX)
        return metrics_label_overflow(bm->codes);
    if (bm->code_slots[code] == 0) {
        char text[CODE_TEXT_BYTES];
        snprintf(text, sizeof text, "%02d", code);
        bm->code_slots[code] = metrics_label_index(bm->codes, text) + 1;
    }
    return bm->code_slots[code] - 1;
}

static void count(size_t partner, int code)
{
    size_t c = code_slot(code);
    assert(partner <= metrics_label_overflow(bm->partners) &&
           c <= metrics_label_overflow(bm->codes));
    metrics_add(bm->requests, partner, c, 1);
}

void broker_metrics_reply(const char *partner_id, const uint8_t *reply, size_t len)
{
    if (bm == NULL)
        return;
    int code = broker_metrics_auth_code(reply, len);
    bool known = code != RC_UNKNOWN_PARTNER && code != RC_FORMAT_ERROR &&
                 code != RC_NOT_PERMITTED && code >= 0;
    size_t partner = partner_id == NULL ? metrics_label_overflow(bm->partners)
                     : known            ? metrics_label_index(bm->partners, partner_id)
                                        : metrics_label_find(bm->partners, partner_id);
    count(partner, code);
}

void broker_metrics_decline(const char *partner_id, int code)
{
    if (bm == NULL)
        return;
    size_t partner = partner_id != NULL ? metrics_label_find(bm->partners, partner_id)
                                        : metrics_label_overflow(bm->partners);
    count(partner, code);
}

void broker_metrics_queued(int64_t delta)
{
    if (bm != NULL)
        metrics_gauge_add(bm->queue, delta);
}

void broker_metrics_connections(size_t open)
{
    if (bm != NULL)
        metrics_set(bm->connections, (int64_t)open);
}

void broker_metrics_round(size_t requests, int64_t round_us)
{
    if (bm == NULL)
        return;
    assert(requests <= WRITER_REQUESTS_PER_COMMIT_MAX + BATCH_REQUESTS_MAX);
    metrics_observe(bm->batch, requests);
    metrics_observe(bm->commit, round_us > 0 ? (uint64_t)round_us : 0);
}

void broker_metrics_commit(int64_t commit_us)
{
    if (bm != NULL)
        metrics_observe(bm->fsync, commit_us > 0 ? (uint64_t)commit_us : 0);
}

void broker_metrics_ledger(ledger_t *ledger)
{
    if (bm == NULL)
        return;
    uint64_t used = 0, size = 0;
    metrics_set(bm->seq, (int64_t)ledger_last_seq(ledger));
    if (ledger_map_usage(ledger, &used, &size) != CL_OK)
        return; /* the last figures stay */
    metrics_set(bm->map_used, (int64_t)used);
    metrics_set(bm->map_size, (int64_t)size);
}
