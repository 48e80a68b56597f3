/* Writer thread: see writer.h. One LMDB write transaction per round, a nested one per
 * request inside ledger_apply, fsync at commit, replies after. On MAP_FULL the round is
 * redone after growing the map (store_retry_map_full), and is answered from the attempt
 * that committed, never from an earlier one; when no attempt commits, or on any other
 * failure, every request gets 96. After an I/O failure the ledger stays failed (sticky)
 * until the broker is restarted. */
#include "writer.h"

#include "clock.h"
#include "errors.h"
#include "log.h"
#include "request.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct writer {
    pthread_t thread;
    void *sock;
    ledger_t *ledger;
    uint64_t commits, requests; /* reported at stop: requests per fsync */
    log_every_t round_failed;   /* one line a second when every round fails */
    log_every_t hand_back_failed;
    int64_t housekept_ms; /* monotonic time of the last housekeeping */
};

/* What one attempt at a round works on. */
typedef struct round {
    writer_t *self;
    batch_t **batches;
    size_t n;
} round_t;

/* The round could not be committed: a repeat of a key the ledger holds still gets its
 * original answer (read, not written); anything else 96, which is never remembered. */
static void fill_system_error(writer_t *self, batch_t **batches, size_t n)
{
    char text[] = "Declined 96: system error; the clearinghouse cannot record requests now";
    for (size_t b = 0; b < n; b++) {
        for (size_t i = 0; i < batches[b]->count; i++) {
            request_t *r = &batches[b]->items[i];
            authorization_t auth;
            free(r->reply);
            r->reply = NULL;
            if (ledger_replay(self->ledger, r->env, &r->cards, r->hash, &r->reply, &r->reply_len) ==
                CL_OK)
                continue;
            free(r->reply);
            wire_auth_decline(&auth, r->env, RC_SYSTEM_ERROR, text);
            wire_auth_echo(&auth, r->env, r->hash);
            r->reply = wire_pack_auth(&auth, &r->reply_len);
        }
    }
}

static void drop_replies(batch_t **batches, size_t n)
{
    for (size_t b = 0; b < n; b++) {
        for (size_t i = 0; i < batches[b]->count; i++) {
            free(batches[b]->items[i].reply);
            batches[b]->items[i].reply = NULL;
        }
    }
}

/* One attempt: the whole round in one write transaction, committed or aborted. Replies
 * left by an earlier attempt that found the map full are dropped first. */
static int apply_once(void *ctx)
{
    round_t *round = ctx;
    assert(round->n > 0 && round->n <= BATCHES_IN_FLIGHT_MAX);
    drop_replies(round->batches, round->n);
    int rc = ledger_batch_begin(round->self->ledger);
    if (rc != CL_OK)
        return rc;
    int64_t now_ms = clock_wall_ms();
    for (size_t b = 0; b < round->n && rc == CL_OK; b++) {
        batch_t *batch = round->batches[b];
        for (size_t i = 0; i < batch->count && rc == CL_OK; i++) {
            request_t *r = &batch->items[i];
            const char *key = r->principal[0] != '\0' ? r->principal : NULL;
            rc = ledger_apply_cards(round->self->ledger, key, r->env, &r->cards, r->hash, now_ms,
                                    &r->reply, &r->reply_len);
        }
    }
    if (rc == CL_OK)
        return ledger_batch_commit(round->self->ledger);
    ledger_batch_abort(round->self->ledger);
    return rc;
}

static int grow_map(void *ctx)
{
    round_t *round = ctx;
    return ledger_grow(round->self->ledger); /* under the ledger's map lock */
}

static void apply_round(writer_t *self, batch_t **batches, size_t n)
{
    round_t round = {self, batches, n};
    const store_retry_t retry = {apply_once, grow_map, &round, WRITER_MAP_GROW_ATTEMPTS_MAX};
    int rc = store_retry_map_full(&retry);
    if (rc != CL_OK) {
        log_every(&self->round_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "writer: round of %zu batch(es) not committed: %s", n, cl_strerror(rc));
        fill_system_error(self, batches, n);
    }
}

static int recv_batch(void *sock, int flags, batch_t **out)
{
    int n = zmq_recv(sock, out, sizeof *out, flags);
    if (n == (int)sizeof *out)
        return CL_OK;
    if (n >= 0)
        return CL_ERR_INVALID;
    return zmq_errno() == EAGAIN ? CL_ERR_TIMEOUT : CL_ERR_ZMQ;
}

/* Block for the first batch, then take whatever else is already queued. Returns true
 * when the I/O thread's stop message (a NULL batch) arrived or the socket failed. */
static bool collect(void *sock, batch_t **batches, size_t *n_out, size_t *requests_out)
{
    size_t n = 0, requests = 0;
    int flags = 0;
    bool stop = false;
    while (n < BATCHES_IN_FLIGHT_MAX && requests < WRITER_REQUESTS_PER_COMMIT_MAX) {
        batch_t *b = NULL;
        int rc = recv_batch(sock, flags, &b);
        if (rc == CL_ERR_ZMQ && zmq_errno() == EINTR)
            continue;
        if (rc == CL_ERR_TIMEOUT)
            break; /* nothing more queued: commit what we have, never wait for more */
        if (rc != CL_OK || b == NULL) {
            if (rc != CL_OK)
                log_error("writer: inproc receive failed: %s", zmq_strerror(zmq_errno()));
            stop = true;
            break;
        }
        batches[n++] = b;
        requests += b->count;
        flags = ZMQ_DONTWAIT;
    }
    assert(n <= BATCHES_IN_FLIGHT_MAX);
    assert(requests <= WRITER_REQUESTS_PER_COMMIT_MAX + BATCH_REQUESTS_MAX);
    *n_out = n;
    *requests_out = requests;
    return stop;
}

/* Settlement's clock-driven steps (window roll-over and automatic close), at most once
 * per WRITER_HOUSEKEEP_INTERVAL_MS, between rounds. A full map is grown for the next
 * attempt; after any other failure the ledger is failed and every round says 96. */
static void housekeep(writer_t *self)
{
    int64_t now = clock_mono_ms();
    if (now - self->housekept_ms < WRITER_HOUSEKEEP_INTERVAL_MS)
        return;
    self->housekept_ms = now;
    size_t closed = 0;
    int rc = ledger_housekeep(self->ledger, clock_wall_ms(), &closed);
    if (rc == CL_ERR_MAP_FULL)
        rc = ledger_grow(self->ledger);
    if (rc != CL_OK)
        log_every(&self->round_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "writer: settlement housekeeping failed: %s", cl_strerror(rc));
    else if (closed > 0)
        log_info("writer: closed %zu settlement window(s) after their grace", closed);
    size_t lapsed = 0;
    rc = ledger_lapse_unclaimed(self->ledger, clock_wall_ms(), WRITER_LAPSES_PER_TICK, &lapsed);
    if (rc == CL_ERR_MAP_FULL)
        rc = ledger_grow(self->ledger);
    if (rc != CL_OK)
        log_every(&self->round_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "writer: lapsing unclaimed points failed: %s", cl_strerror(rc));
    else if (lapsed > 0)
        log_info("writer: %zu unclaimed card account(s) lapsed to breakage", lapsed);
}

static void *writer_main(void *arg)
{
    writer_t *self = arg;
    batch_t *batches[BATCHES_IN_FLIGHT_MAX];
    bool stop = false;
    self->housekept_ms = clock_mono_ms() - WRITER_HOUSEKEEP_INTERVAL_MS;
    while (!stop) {
        size_t n = 0, requests = 0;
        stop = collect(self->sock, batches, &n, &requests);
        if (n > 0) {
            apply_round(self, batches, n);
            self->commits++;
            self->requests += requests;
        }
        for (size_t i = 0; i < n; i++) {
            if (zmq_send(self->sock, &batches[i], sizeof batches[i], 0) != sizeof batches[i])
                log_every(&self->hand_back_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                          "writer: cannot hand back a batch: %s", zmq_strerror(zmq_errno()));
        }
        if (!stop)
            housekeep(self);
    }
    return NULL;
}

int writer_new(writer_t **self_out, void *zmq_ctx, ledger_t *ledger, const char *endpoint)
{
    writer_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->ledger = ledger;
    self->sock = zmq_socket(zmq_ctx, ZMQ_PAIR);
    int linger_ms = 0, wake_ms = WRITER_HOUSEKEEP_INTERVAL_MS;
    if (self->sock == NULL ||
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) ||
        zmq_setsockopt(self->sock, ZMQ_RCVTIMEO, &wake_ms, sizeof wake_ms) ||
        zmq_connect(self->sock, endpoint) != 0) {
        log_error("writer: cannot connect %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto err;
    }
    if (pthread_create(&self->thread, NULL, writer_main, self) != 0)
        goto err;
    *self_out = self;
    return CL_OK;
err:
    if (self->sock != NULL)
        zmq_close(self->sock);
    free(self);
    return CL_ERR_ZMQ;
}

void writer_destroy(writer_t **self_p)
{
    writer_t *self = *self_p;
    if (self == NULL)
        return;
    pthread_join(self->thread, NULL);
    log_info("writer: %llu request(s) in %llu commit(s), %.1f per fsync",
             (unsigned long long)self->requests, (unsigned long long)self->commits,
             self->commits > 0 ? (double)self->requests / (double)self->commits : 0.0);
    zmq_close(self->sock);
    free(self);
    *self_p = NULL;
}
