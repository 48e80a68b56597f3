/* The feed subscriber: see feed_client.h. Invariant: entries go out with seq == next,
 * next only grows, and each entry's prev_hash is the hash of the one before it. */
#include "feed_client.h"

#include "clock.h"
#include "errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct feed_client {
    feed_client_options_t o;
    void *ctx, *sub, *dealer;
    uint64_t next, end; /* end 0: follow without end */
    uint64_t request_id;
    bool live_mode;
    bool hole; /* left live mode: the next replay answer with entries filled a gap */
    Coalition__FeedBatch *batch; /* being handed out, from index idx */
    size_t idx;
    bool batch_live;
    int64_t batch_received_us;
    journal_entry_t *current;
    uint8_t prev[WIRE_HASH_BYTES];
    bool have_prev;
    int64_t last_heard_ms;
    feed_client_stats_t stats;
};

/* CURVE client options, before the socket connects (none for a plain feed). */
static bool set_curve(const feed_client_t *self, void *sock)
{
    const feed_client_options_t *o = &self->o;
    return o->key == NULL ||
           (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, o->server_z85, KEY_Z85_LEN) == 0 &&
            zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, o->key->public_z85, KEY_Z85_LEN) == 0 &&
            zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, o->key->secret_z85, KEY_Z85_LEN) == 0);
}

static int open_dealer(feed_client_t *self)
{
    assert(self->ctx != NULL && self->o.replay_endpoint != NULL);
    if (self->dealer != NULL)
        zmq_close(self->dealer);
    int linger = 0;
    int64_t max_bytes = FEED_MESSAGE_BYTES_MAX;
    self->dealer = zmq_socket(self->ctx, ZMQ_DEALER);
    if (self->dealer == NULL ||
        zmq_setsockopt(self->dealer, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(self->dealer, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes) != 0 ||
        !set_curve(self, self->dealer) || zmq_connect(self->dealer, self->o.replay_endpoint) != 0)
        return CL_ERR_ZMQ;
    return CL_OK;
}

static int open_sub(feed_client_t *self)
{
    int linger = 0;
    int64_t max_bytes = FEED_MESSAGE_BYTES_MAX;
    self->sub = zmq_socket(self->ctx, ZMQ_SUB);
    if (self->sub == NULL || zmq_setsockopt(self->sub, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(self->sub, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes) != 0 ||
        (self->o.rcvhwm > 0 &&
         zmq_setsockopt(self->sub, ZMQ_RCVHWM, &self->o.rcvhwm, sizeof self->o.rcvhwm) != 0) ||
        zmq_setsockopt(self->sub, ZMQ_SUBSCRIBE, "", 0) != 0 || !set_curve(self, self->sub) ||
        zmq_connect(self->sub, self->o.pub_endpoint) != 0)
        return CL_ERR_ZMQ;
    return CL_OK;
}

int feed_client_new(feed_client_t **self_out, const feed_client_options_t *opts)
{
    assert(opts->from_seq >= 1 && opts->replay_endpoint != NULL);
    assert(!opts->follow || opts->pub_endpoint != NULL);
    assert((opts->key == NULL) == (opts->server_z85 == NULL));
    feed_client_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->o = *opts;
    self->next = opts->from_seq;
    self->ctx = zmq_ctx_new();
    int rc = self->ctx != NULL ? open_dealer(self) : CL_ERR_ZMQ;
    /* Subscribed before the first replay, so live batches queue up while it runs. */
    if (rc == CL_OK && opts->follow)
        rc = open_sub(self);
    if (rc != CL_OK) {
        feed_client_destroy(&self);
        return rc;
    }
    self->last_heard_ms = clock_mono_ms();
    *self_out = self;
    return CL_OK;
}

static void drop_batch(feed_client_t *self)
{
    if (self->batch != NULL)
        coalition__feed_batch__free_unpacked(self->batch, NULL);
    self->batch = NULL;
    self->idx = 0;
}

void feed_client_destroy(feed_client_t **self_p)
{
    feed_client_t *self = *self_p;
    if (self == NULL)
        return;
    drop_batch(self);
    ledger_entry_free(&self->current);
    if (self->sub != NULL)
        zmq_close(self->sub);
    if (self->dealer != NULL)
        zmq_close(self->dealer);
    if (self->ctx != NULL)
        zmq_ctx_term(self->ctx);
    free(self);
    *self_p = NULL;
}

/* Receive one message from `sock` within wait_ms and decode it; NULL when none came
 * (*rc_out CL_ERR_TIMEOUT) or it is not a batch of this version (CL_ERR_VERSION). */
static Coalition__FeedBatch *recv_batch(void *sock, int wait_ms, int *rc_out)
{
    assert(sock != NULL && wait_ms >= 0);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    *rc_out = CL_ERR_TIMEOUT;
    if (zmq_poll(&item, 1, wait_ms) <= 0)
        return NULL;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    Coalition__FeedBatch *b = NULL;
    if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) >= 0 && !zmq_msg_more(&msg))
        b = coalition__feed_batch__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
    while (zmq_msg_more(&msg) && zmq_msg_recv(&msg, sock, 0) >= 0) {
    } /* drain a multipart message: not the feed's */
    zmq_msg_close(&msg);
    if (b != NULL && b->version != FEED_VERSION) {
        coalition__feed_batch__free_unpacked(b, NULL);
        b = NULL;
    }
    *rc_out = b != NULL ? CL_OK : CL_ERR_VERSION;
    return b;
}

static int send_request(feed_client_t *self)
{
    Coalition__FeedReplayRequest req = COALITION__FEED_REPLAY_REQUEST__INIT;
    req.version = FEED_VERSION;
    assert(self->next >= 1 && (!self->have_prev || self->next >= 2));
    /* From the last entry handed out, when there is one: the answer shows the broker's
     * journal still holds it, with the same hash (check_overlap). */
    req.from_seq = self->have_prev ? self->next - 1 : self->next;
    req.max_entries = FEED_BATCH_ENTRIES_MAX;
    req.request_id = ++self->request_id;
    uint8_t buf[FEED_REQUEST_BYTES_MAX];
    size_t len = coalition__feed_replay_request__get_packed_size(&req);
    assert(len <= sizeof buf);
    coalition__feed_replay_request__pack(&req, buf);
    return zmq_send(self->dealer, buf, len, ZMQ_DONTWAIT) == (int)len ? CL_OK : CL_ERR_ZMQ;
}

/* A replay answer to a request from the last entry handed out (send_request): it must
 * start with that entry, unchanged. A journal that ends before it, or holds another entry
 * there, is not the ledger this client read (one restored from an older backup, or
 * another): CL_ERR_CORRUPT, where skipping its entries as duplicates would wait for ever.
 * On success the entry is passed over (it is no duplicate: it was asked for). */
static int check_overlap(feed_client_t *self, Coalition__FeedBatch *b)
{
    if (!self->have_prev)
        return CL_OK;
    assert(self->next >= 2);
    if (b->n_entries == 0 || b->entries[0]->seq != self->next - 1)
        return CL_ERR_CORRUPT;
    journal_entry_t *e = NULL;
    const Coalition__FeedEntry *fe = b->entries[0];
    int rc = ledger_entry_decode(fe->entry.data, fe->entry.len, fe->seq, NULL, &e);
    bool same = rc == CL_OK && memcmp(e->hash.data, self->prev, WIRE_HASH_BYTES) == 0;
    ledger_entry_free(&e);
    if (!same)
        return CL_ERR_CORRUPT;
    self->idx = 1;
    return CL_OK;
}

/* One replay answer for the next seq, reopening the socket after each unanswered
 * FEED_CLIENT_REPLAY_TIMEOUT_MS (a broker restarted meanwhile has lost the request),
 * until deadline_ms. Answers to earlier requests are skipped. */
static int ask_replay(feed_client_t *self, int64_t deadline_ms)
{
    int rc = send_request(self);
    int64_t resend_ms = clock_mono_ms() + FEED_CLIENT_REPLAY_TIMEOUT_MS;
    while (rc == CL_OK || rc == CL_ERR_TIMEOUT || rc == CL_ERR_VERSION) {
        int64_t now = clock_mono_ms();
        if (now >= deadline_ms)
            return CL_ERR_TIMEOUT;
        if (now >= resend_ms) {
            self->stats.reconnects++;
            rc = open_dealer(self);
            rc = rc == CL_OK ? send_request(self) : rc;
            resend_ms = now + FEED_CLIENT_REPLAY_TIMEOUT_MS;
            continue;
        }
        int64_t wait = (deadline_ms < resend_ms ? deadline_ms : resend_ms) - now;
        Coalition__FeedBatch *b = recv_batch(self->dealer, (int)wait, &rc);
        if (b == NULL)
            continue;
        if (b->request_id != self->request_id) {
            coalition__feed_batch__free_unpacked(b, NULL);
            continue; /* the answer to a request sent before a timeout */
        }
        if (b->status != FEED_STATUS_OK) {
            coalition__feed_batch__free_unpacked(b, NULL);
            return CL_ERR_INVALID;
        }
        assert(b->request_id == self->request_id);
        self->stats.replays++;
        self->stats.gaps += self->hole && b->n_entries > 0;
        self->hole = false;
        drop_batch(self);
        self->batch = b;
        self->batch_live = false;
        self->batch_received_us = feed_wall_us();
        if (check_overlap(self, b) != CL_OK)
            return CL_ERR_CORRUPT;
        /* Caught up when the answer reaches the broker's last seq: then listen live. */
        uint64_t upto = b->n_entries > 0 ? b->entries[b->n_entries - 1]->seq : self->next - 1;
        self->live_mode = self->o.follow && upto >= b->last_seq;
        if (self->live_mode) /* silence is counted from here, not from before the replays */
            self->last_heard_ms = clock_mono_ms();
        return CL_OK;
    }
    return rc;
}

/* The next live message, until deadline_ms. A heartbeat past the next seq, or silence,
 * sends the client back to the replay socket. */
static int read_live(feed_client_t *self, int64_t deadline_ms)
{
    assert(self->live_mode && self->o.follow && self->sub != NULL);
    int64_t now = clock_mono_ms();
    int64_t silent_at = self->last_heard_ms + FEED_CLIENT_SILENCE_MS;
    /* Silence is nothing queued by silent_at: what queued while the caller was away is
     * read first (at least one look without waiting). */
    int64_t until = deadline_ms < silent_at ? deadline_ms : silent_at;
    until = until > now ? until : now;
    int rc = CL_OK;
    Coalition__FeedBatch *b = recv_batch(self->sub, (int)(until - now), &rc);
    if (b == NULL && rc == CL_ERR_TIMEOUT && clock_mono_ms() >= silent_at) {
        self->live_mode = false; /* the broker may have gone and come back: ask it */
        self->hole = true;
        self->last_heard_ms = clock_mono_ms();
        return CL_OK;
    }
    if (b == NULL)
        return rc == CL_ERR_TIMEOUT && until < deadline_ms ? CL_OK : rc;
    self->last_heard_ms = clock_mono_ms();
    if (b->n_entries == 0) {
        if (b->last_seq >= self->next) { /* it published what this client never saw */
            self->hole = true;
            self->live_mode = false;
        } else if (self->have_prev && b->last_seq + 1 < self->next) {
            /* Behind what was handed out: a replay ran ahead of the broker's commit hook
             * (briefly), or the ledger behind the feed is another one; the replay's
             * overlap with the last entry tells which (check_overlap). */
            self->live_mode = false;
        }
        coalition__feed_batch__free_unpacked(b, NULL);
        return CL_OK;
    }
    drop_batch(self);
    self->batch = b;
    self->batch_live = true;
    self->batch_received_us = feed_wall_us();
    return CL_OK;
}

/* The next entry of the batch at hand: CL_OK with *got set when it is the next seq;
 * *got false when the batch is done (or a live one skips ahead: a gap). */
static int take(feed_client_t *self, feed_item_t *out, bool *got)
{
    *got = false;
    while (self->batch != NULL && self->idx < self->batch->n_entries) {
        const Coalition__FeedEntry *fe = self->batch->entries[self->idx];
        if (fe->seq < self->next) {
            self->idx++;
            self->stats.duplicates++;
            continue;
        }
        if (fe->seq > self->next) {
            if (!self->batch_live)
                return CL_ERR_CORRUPT; /* a replay answer starts at the seq asked for */
            self->hole = true;
            self->live_mode = false;
            break;
        }
        ledger_entry_free(&self->current);
        int rc = ledger_entry_decode(fe->entry.data, fe->entry.len, fe->seq,
                                     self->have_prev ? self->prev : NULL, &self->current);
        if (rc != CL_OK)
            return rc;
        self->idx++;
        memcpy(self->prev, self->current->hash.data, WIRE_HASH_BYTES);
        self->have_prev = true;
        self->next++;
        assert(self->current->seq + 1 == self->next);
        *out =
            (feed_item_t){self->current, self->batch_live,
                          self->batch_live ? self->batch->commit_us : 0, self->batch_received_us};
        if (self->batch_live)
            self->stats.live++;
        else
            self->stats.replayed++;
        *got = true;
        return CL_OK;
    }
    drop_batch(self);
    return CL_OK;
}

int feed_client_start(feed_client_t *self, int timeout_ms, uint64_t *last_out)
{
    assert(self->request_id == 0 && self->batch == NULL);
    int rc = ask_replay(self, clock_mono_ms() + timeout_ms);
    if (rc != CL_OK)
        return rc;
    *last_out = self->batch->last_seq;
    if (self->o.from_seq > self->batch->last_seq + 1)
        return CL_ERR_INVALID;
    if (!self->o.follow)
        self->end = self->batch->last_seq; /* may be from_seq - 1: nothing to hand out */
    return CL_OK;
}

int feed_client_next(feed_client_t *self, int timeout_ms, feed_item_t *out)
{
    assert(self->request_id > 0); /* started */
    int64_t deadline_ms = clock_mono_ms() + timeout_ms;
    /* Bounded: each pass hands out an entry, drops a batch, or waits until the deadline. */
    for (;;) {
        if (!self->o.follow && self->next > self->end)
            return CL_ERR_NOT_FOUND;
        bool got = false;
        int rc = take(self, out, &got);
        if (rc != CL_OK || got)
            return rc;
        if (clock_mono_ms() >= deadline_ms)
            return CL_ERR_TIMEOUT;
        rc = self->live_mode ? read_live(self, deadline_ms) : ask_replay(self, deadline_ms);
        if (rc == CL_OK && !self->live_mode && self->batch != NULL &&
            self->batch->n_entries == self->idx && self->batch->last_seq >= self->next)
            return CL_ERR_CORRUPT; /* the broker says it has the seq but gave none */
        if (rc != CL_OK && rc != CL_ERR_VERSION)
            return rc;
    }
}

void feed_client_stats(const feed_client_t *self, feed_client_stats_t *out) { *out = self->stats; }

uint64_t feed_client_next_seq(const feed_client_t *self) { return self->next; }
