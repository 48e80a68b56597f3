/* Writer thread: see writer.h. One LMDB write transaction per round, a nested one per
 * request inside ledger_apply, fsync at commit, replies after. On MAP_FULL the round is
 * redone after growing the map (store_retry_map_full), and is answered from the attempt
 * that committed, never from an earlier one; when no attempt commits, or on any other
 * failure, every request gets 96. After an I/O failure the ledger stays failed (sticky)
 * until the broker is restarted. */
#include "writer.h"

#include "broker_metrics.h"
#include "clock.h"
#include "errors.h"
#include "log.h"
#include "request.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct writer {
    pthread_t thread;
    /* Monotonic ms since the thread has been working (applying a round, housekeeping,
     * expiring) without coming back to wait for batches; 0 while it waits. The I/O thread
     * reads it for the watchdog: a writer stuck in one round must stop the pings. */
    _Atomic int64_t busy_since_ms;
    void *sock;
    ledger_t *ledger;
    uint64_t commits, requests; /* reported at stop: requests per fsync */
    log_every_t round_failed;   /* one line a second when every round fails */
    log_every_t hand_back_failed;
    int64_t housekept_ms; /* monotonic time of the last housekeeping */
    /* The daily expiry run: its time of day, the day it last finished (days since the
     * epoch), and the run under way (as_of 0: none) with what it has done so far. */
    int expire_at_minute;
    int64_t expired_day, run_day;
    int64_t run_as_of_ms;
    expiry_result_t run_total;
    size_t run_slices;
};

/* An operator's "one slice of an expiry run" (ExpireRequest without a member): the
 * writer answers it after the round, with a batch of its own (ledger_expire). */
static bool is_expiry_slice(const request_t *r)
{
    return r->env->body_case == COALITION__ENVELOPE__BODY_EXPIRE &&
           r->env->expire->member_id[0] == '\0';
}

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
            if (is_expiry_slice(r))
                continue; /* answered after the round: expiry_slices */
            const char *key = r->principal[0] != '\0' ? r->principal : NULL;
            rc = ledger_apply_cards(round->self->ledger, key, r->env, &r->cards, r->hash, now_ms,
                                    &r->reply, &r->reply_len);
        }
    }
    if (rc != CL_OK) {
        ledger_batch_abort(round->self->ledger);
        return rc;
    }
    int64_t commit_us = clock_mono_us();
    rc = ledger_batch_commit(round->self->ledger);
    broker_metrics_commit(clock_mono_us() - commit_us);
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

/* One slice, growing the map when it is full (the slice is redone from the start). */
static int expire_slice(writer_t *self, int64_t as_of_ms, expiry_result_t *res)
{
    int rc = CL_ERR_MAP_FULL;
    for (int attempt = 0; attempt < WRITER_MAP_GROW_ATTEMPTS_MAX && rc == CL_ERR_MAP_FULL;
         attempt++) {
        rc = ledger_expire(self->ledger, as_of_ms, clock_wall_ms(), WRITER_EXPIRY_SLICE_MEMBERS,
                           res);
        if (rc == CL_ERR_MAP_FULL && ledger_grow(self->ledger) != CL_OK)
            break;
    }
    return rc;
}

/* The answer to an operator's slice: points expired, entries written (as `balance`),
 * the last seq, and `pending` while more is due. Only the first slice request of a round
 * runs (`run`): the others are told to ask again, so a round waits for one slice. */
static void answer_slice(writer_t *self, request_t *r, bool run)
{
    assert(is_expiry_slice(r));
    const Coalition__ExpireRequest *e = r->env->expire;
    expiry_result_t res = {.more = !run};
    char text[RECEIPT_TEXT_BYTES_MAX];
    authorization_t auth;
    int rc = e->as_of_ms > clock_wall_ms() ? CL_ERR_INVALID
             : run                         ? expire_slice(self, e->as_of_ms, &res)
                                           : CL_OK;
    int code = rc == CL_OK            ? RC_APPROVED
               : rc == CL_ERR_INVALID ? RC_INVALID_AMOUNT
                                      : RC_SYSTEM_ERROR;
    if (rc == CL_OK)
        snprintf(text, sizeof text, "Expired %lld points of %zu member(s) in %zu entries; %s",
                 (long long)res.points, res.members, res.entries,
                 res.more ? "more is due" : "nothing more is due");
    else if (rc == CL_ERR_INVALID)
        snprintf(text, sizeof text, "Declined 13: as-of time is later than the broker's clock");
    else
        snprintf(text, sizeof text, "Declined 96: expiry slice failed: %s", cl_strerror(rc));
    wire_auth_decline(&auth, r->env, code, text);
    wire_auth_echo(&auth, r->env, r->hash);
    auth.points = res.points;
    auth.balance = (int64_t)res.entries;
    auth.pending = rc == CL_OK && res.more;
    auth.seq = ledger_last_seq(self->ledger);
    free(r->reply);
    r->reply = wire_pack_auth(&auth, &r->reply_len);
}

/* True when a slice ran. */
static bool expiry_slices(writer_t *self, batch_t **batches, size_t n)
{
    bool ran = false;
    for (size_t b = 0; b < n; b++) {
        for (size_t i = 0; i < batches[b]->count; i++) {
            if (!is_expiry_slice(&batches[b]->items[i]))
                continue;
            answer_slice(self, &batches[b]->items[i], !ran);
            ran = true;
        }
    }
    return ran;
}

/* The daily run: started once a day at its time (or at start-up after it), then one
 * slice per loop until nothing is due. */
static void daily_expiry(writer_t *self)
{
    int64_t now = clock_wall_ms();
    int64_t day = now / 86400000, minute = now % 86400000 / 60000;
    if (self->run_as_of_ms == 0) {
        if (self->expire_at_minute == WRITER_EXPIRE_OFF || self->expired_day == day ||
            minute < self->expire_at_minute)
            return;
        self->run_as_of_ms = now;
        self->run_day = day; /* a run that ends after midnight is still this day's */
        memset(&self->run_total, 0, sizeof self->run_total);
        self->run_slices = 0;
    }
    assert(self->run_as_of_ms > 0 && self->run_day >= 0);
    expiry_result_t res = {0};
    int rc = expire_slice(self, self->run_as_of_ms, &res);
    if (rc != CL_OK) { /* each slice is all or nothing: what is due waits for the next run */
        log_error("expiry: daily run as of %lld abandoned after %zu slice(s): %s; the next run "
                  "is tomorrow, or run coalitionctl expire",
                  (long long)self->run_as_of_ms, self->run_slices, cl_strerror(rc));
        self->run_as_of_ms = 0;
        self->expired_day = self->run_day;
        return;
    }
    self->run_slices++;
    self->run_total.members += res.members;
    self->run_total.entries += res.entries;
    self->run_total.points += res.points;
    if (res.more)
        return;
    log_msg(self->run_total.entries > 0 ? LOG_INFO : LOG_DEBUG,
            "expiry: daily run done: %lld points of %zu member(s) in %zu entries, %zu slice(s)",
            (long long)self->run_total.points, self->run_total.members, self->run_total.entries,
            self->run_slices);
    self->run_as_of_ms = 0;
    self->expired_day = self->run_day;
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
static bool collect(void *sock, bool busy, batch_t **batches, size_t *n_out, size_t *requests_out)
{
    size_t n = 0, requests = 0;
    int flags = busy ? ZMQ_DONTWAIT : 0; /* an expiry run under way: never wait */
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
        broker_metrics_queued(-(int64_t)b->count);
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
        atomic_store(&self->busy_since_ms, 0);
        stop = collect(self->sock, self->run_as_of_ms != 0, batches, &n, &requests);
        atomic_store(&self->busy_since_ms, clock_mono_ms());
        bool sliced = false;
        if (n > 0) {
            int64_t round_us = clock_mono_us();
            apply_round(self, batches, n);
            broker_metrics_round(requests, clock_mono_us() - round_us);
            sliced = expiry_slices(self, batches, n);
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
        if (!stop && !sliced) /* at most one slice between two rounds */
            daily_expiry(self);
        broker_metrics_ledger(self->ledger);
    }
    return NULL;
}

int writer_new(writer_t **self_out, void *zmq_ctx, ledger_t *ledger, const char *endpoint,
               int expire_at_minute)
{
    assert(expire_at_minute == WRITER_EXPIRE_OFF ||
           (expire_at_minute >= 0 && expire_at_minute < WRITER_MINUTES_PER_DAY));
    writer_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->ledger = ledger;
    self->expire_at_minute = expire_at_minute;
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

int64_t writer_busy_ms(writer_t *self, int64_t now_ms)
{
    assert(self != NULL);
    int64_t since = atomic_load(&self->busy_since_ms);
    return since == 0 || now_ms < since ? 0 : now_ms - since;
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
