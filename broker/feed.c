/* The journal feed thread: see feed.h. Invariants: entries go out on PUB in seq order,
 * each once, starting after the seq the ledger had when the feed started; a heartbeat's
 * last_seq never passes what was published; a replay answer holds consecutive entries
 * from the seq asked for. The writer's side is feed_on_commit, which never blocks.
 *
 *   writer ─commit─► hook: version++ commit_us committed_seq version++ ; eventfd += 1
 *   feed thread ─poll(eventfd, ROUTER)─► publish (published, committed] ─► PUB
 *                                   └─► replay requests ─► read txn ─► ROUTER reply */
#define _GNU_SOURCE /* eventfd */
#include "feed.h"

#include "errors.h"
#include "keys.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93 /* libzmq 4.3 DRAFT option, built into Debian's libzmq5 */
#endif
#define FEED_LINGER_MS 0
#define FEED_IDENTITY_BYTES_MAX 256
/* Tries at a consistent (seq, time) pair while the writer is between its two stores. */
#define FEED_SNAPSHOT_TRIES_MAX 1000

struct feed {
    ledger_t *ledger;
    void *ctx, *pub, *router;
    feed_zap_t *zap; /* CURVE: the allow-list's ZAP handler; NULL: plain */
    const key_pair_t *server_key;
    int wake_fd;
    pthread_t thread;
    bool started;
    _Atomic bool stop;
    /* Written by the writer's hook only; version is odd while it writes (a seqlock). */
    _Atomic uint64_t version, committed_seq;
    _Atomic int64_t commit_us;
    /* Feed thread only. */
    uint64_t published_seq;
    int64_t last_sent_ms;
    Coalition__FeedEntry entries[FEED_BATCH_ENTRIES_MAX];
    Coalition__FeedEntry *entry_ptrs[FEED_BATCH_ENTRIES_MAX];
    log_every_t read_failed, send_failed, bad_request;
};

int64_t feed_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The writer's hook: stores and one non-blocking write; nothing here waits. An eventfd
 * write fails (EAGAIN) only when its counter is near 2^64: a wake-up is pending then. */
static void feed_on_commit(uint64_t last_seq, void *ctx)
{
    feed_t *self = ctx;
    assert(last_seq >= atomic_load(&self->committed_seq)); /* the journal only grows */
    atomic_fetch_add(&self->version, 1);
    atomic_store(&self->commit_us, feed_wall_us());
    atomic_store(&self->committed_seq, last_seq);
    atomic_fetch_add(&self->version, 1);
    uint64_t one = 1;
    ssize_t n = write(self->wake_fd, &one, sizeof one);
    (void)n;
}

/* The last commit the writer reported and its time, read consistently. */
static uint64_t load_committed(feed_t *self, int64_t *commit_us_out)
{
    for (int i = 0; i < FEED_SNAPSHOT_TRIES_MAX; i++) {
        uint64_t v1 = atomic_load(&self->version);
        int64_t us = atomic_load(&self->commit_us);
        uint64_t seq = atomic_load(&self->committed_seq);
        if ((v1 & 1u) == 0 && atomic_load(&self->version) == v1) {
            *commit_us_out = us;
            return seq;
        }
    }
    *commit_us_out = 0; /* the writer kept writing: the seq alone, time unknown */
    return atomic_load(&self->committed_seq);
}

typedef struct send_ctx {
    feed_t *self;
    void *sock;
    const zmq_msg_t *identity; /* ROUTER: the requester; NULL: PUB */
    uint64_t last_seq, request_id, sent_to_seq;
    int64_t commit_us;
    uint32_t status;
} send_ctx_t;

static int send_packed(send_ctx_t *s, const Coalition__FeedBatch *batch)
{
    assert(s->sock != NULL && batch->version == FEED_VERSION);
    size_t len = coalition__feed_batch__get_packed_size(batch);
    assert(len <= FEED_MESSAGE_BYTES_MAX);
    zmq_msg_t msg, id;
    if (zmq_msg_init_size(&msg, len) != 0)
        return CL_ERR_NOMEM;
    coalition__feed_batch__pack(batch, zmq_msg_data(&msg));
    bool ok = true;
    if (s->identity != NULL) { /* ROUTER: a peer gone or full is dropped (DONTWAIT) */
        zmq_msg_init(&id);
        ok = zmq_msg_copy(&id, (zmq_msg_t *)s->identity) == 0 &&
             zmq_msg_send(&id, s->sock, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0;
        zmq_msg_close(&id);
    }
    ok = ok && zmq_msg_send(&msg, s->sock, ZMQ_DONTWAIT) >= 0; /* PUB drops at its HWM */
    if (!ok)
        log_every(&s->self->send_failed, LOG_EVERY_INTERVAL_MS, LOG_DEBUG,
                  "feed: a message was not sent: %s", zmq_strerror(zmq_errno()));
    zmq_msg_close(&msg);
    if (s->identity == NULL) /* replay answers are no heartbeat for the live subscribers */
        s->self->last_sent_ms = mono_ms();
    return CL_OK;
}

/* ledger_journal_raw's callback: the entries as stored, packed while the read
 * transaction still holds them. */
static int send_entries(const ledger_raw_entry_t *raw, size_t n, void *ctx)
{
    send_ctx_t *s = ctx;
    feed_t *self = s->self;
    assert(n <= FEED_BATCH_ENTRIES_MAX);
    Coalition__FeedBatch batch = COALITION__FEED_BATCH__INIT;
    for (size_t i = 0; i < n; i++) {
        assert(i == 0 || raw[i].seq == raw[i - 1].seq + 1);
        coalition__feed_entry__init(&self->entries[i]);
        self->entries[i].seq = raw[i].seq;
        self->entries[i].entry.data = (uint8_t *)raw[i].data;
        self->entries[i].entry.len = raw[i].len;
        self->entry_ptrs[i] = &self->entries[i];
    }
    batch.version = FEED_VERSION;
    batch.entries = n > 0 ? self->entry_ptrs : NULL;
    batch.n_entries = n;
    /* Live: published up to its last entry. A replay answer: the last commit, which may be
     * one the read saw before the hook reported it. */
    if (s->identity == NULL)
        batch.last_seq = n > 0 ? raw[n - 1].seq : 0;
    else
        batch.last_seq = n > 0 && raw[n - 1].seq > s->last_seq ? raw[n - 1].seq : s->last_seq;
    batch.commit_us = s->commit_us;
    batch.status = s->status;
    batch.request_id = s->request_id;
    s->sent_to_seq = n > 0 ? raw[n - 1].seq : 0;
    if (s->identity == NULL && n == 0)
        return CL_OK; /* live: nothing to say (a heartbeat is sent apart) */
    return send_packed(s, &batch);
}

/* Live: every committed entry not published yet, at most FEED_PUBLISH_ENTRIES_PER_PASS.
 * True when more is left for the next pass. */
static bool publish(feed_t *self)
{
    int64_t commit_us = 0;
    uint64_t committed = load_committed(self, &commit_us);
    size_t sent = 0;
    while (self->published_seq < committed && sent < FEED_PUBLISH_ENTRIES_PER_PASS) {
        send_ctx_t s = {self, self->pub, NULL, committed, 0, 0, commit_us, FEED_STATUS_OK};
        uint64_t left = committed - self->published_seq; /* never past the commit reported */
        size_t max = left < FEED_BATCH_ENTRIES_MAX ? (size_t)left : FEED_BATCH_ENTRIES_MAX;
        assert(max >= 1 && max <= FEED_BATCH_ENTRIES_MAX);
        int rc = ledger_journal_raw(self->ledger, self->published_seq + 1, max,
                                    FEED_BATCH_BYTES_MAX, send_entries, &s);
        if (rc != CL_OK || s.sent_to_seq == 0) {
            log_every(&self->read_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                      "feed: cannot read the journal from seq %llu: %s; retrying",
                      (unsigned long long)self->published_seq + 1,
                      rc != CL_OK ? cl_strerror(rc) : "entry missing");
            return false; /* the next wake-up or heartbeat tries again */
        }
        assert(s.sent_to_seq > self->published_seq && s.sent_to_seq <= committed);
        sent += (size_t)(s.sent_to_seq - self->published_seq);
        self->published_seq = s.sent_to_seq;
    }
    return self->published_seq < committed;
}

static void heartbeat(feed_t *self)
{
    if (mono_ms() - self->last_sent_ms < FEED_HEARTBEAT_MS)
        return;
    Coalition__FeedBatch batch = COALITION__FEED_BATCH__INIT;
    batch.version = FEED_VERSION;
    batch.last_seq = self->published_seq; /* every entry up to here went out */
    assert(batch.last_seq <= atomic_load(&self->committed_seq));
    send_ctx_t s = {self, self->pub, NULL, 0, 0, 0, 0, FEED_STATUS_OK};
    send_packed(&s, &batch);
}

/* Receive one multipart message: the identity, then the request (anything else is
 * drained). False when nothing was there. */
static bool recv_request(feed_t *self, zmq_msg_t *identity, uint8_t *buf, size_t *len_out)
{
    *len_out = SIZE_MAX; /* not a request unless it is exactly two frames */
    if (zmq_msg_recv(identity, self->router, ZMQ_DONTWAIT) < 0)
        return false;
    int more = zmq_msg_more(identity);
    for (int frame = 0; more; frame++) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, self->router, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        size_t n = zmq_msg_size(&part);
        if (frame == 0 && !more && n <= FEED_REQUEST_BYTES_MAX) {
            memcpy(buf, zmq_msg_data(&part), n);
            *len_out = n;
        }
        zmq_msg_close(&part);
    }
    return true;
}

static void answer_replay(feed_t *self, const zmq_msg_t *identity, const uint8_t *buf, size_t len)
{
    Coalition__FeedReplayRequest *req = len <= FEED_REQUEST_BYTES_MAX
                                            ? coalition__feed_replay_request__unpack(NULL, len, buf)
                                            : NULL;
    assert(len <= FEED_REQUEST_BYTES_MAX || len == SIZE_MAX);
    int64_t commit_us = 0;
    uint64_t committed = load_committed(self, &commit_us);
    send_ctx_t s = {self, self->router,  identity, committed, req != NULL ? req->request_id : 0, 0,
                    0,    FEED_STATUS_OK};
    if (req == NULL || req->version != FEED_VERSION || req->from_seq == 0 ||
        req->max_entries == 0) {
        log_every(&self->bad_request, LOG_EVERY_INTERVAL_MS, LOG_WARN,
                  "feed: bad replay request (%zu bytes)", len);
        s.status = FEED_STATUS_BAD_REQUEST;
        send_entries(NULL, 0, &s);
    } else {
        size_t max =
            req->max_entries < FEED_BATCH_ENTRIES_MAX ? req->max_entries : FEED_BATCH_ENTRIES_MAX;
        int rc = ledger_journal_raw(self->ledger, req->from_seq, max, FEED_BATCH_BYTES_MAX,
                                    send_entries, &s);
        if (rc != CL_OK) /* no answer: the subscriber asks again after its timeout */
            log_every(&self->read_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                      "feed: cannot read the journal from seq %llu for a replay: %s",
                      (unsigned long long)req->from_seq, cl_strerror(rc));
    }
    if (req != NULL)
        coalition__feed_replay_request__free_unpacked(req, NULL);
}

static void serve_replays(feed_t *self)
{
    uint8_t buf[FEED_REQUEST_BYTES_MAX];
    for (int i = 0; i < FEED_REQUESTS_PER_PASS; i++) {
        zmq_msg_t identity;
        zmq_msg_init(&identity);
        size_t len = 0;
        bool got = recv_request(self, &identity, buf, &len);
        if (got)
            answer_replay(self, &identity, buf, len);
        zmq_msg_close(&identity);
        if (!got)
            return;
    }
}

static void *feed_main(void *arg)
{
    feed_t *self = arg;
    bool more = false;
    while (!atomic_load(&self->stop)) {
        void *zap = self->zap != NULL ? feed_zap_socket(self->zap) : NULL;
        zmq_pollitem_t items[] = {{NULL, self->wake_fd, ZMQ_POLLIN, 0},
                                  {self->router, 0, ZMQ_POLLIN, 0},
                                  {zap, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, zap != NULL ? 3 : 2, more ? 0 : FEED_HEARTBEAT_MS);
        if (rc < 0 && zmq_errno() != EINTR) {
            log_error("feed: poll failed: %s; the feed stops", zmq_strerror(zmq_errno()));
            break;
        }
        uint64_t count = 0;
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN) &&
            read(self->wake_fd, &count, sizeof count) < 0 && errno != EAGAIN)
            log_error("feed: wake-up read failed: %s", strerror(errno));
        more = publish(self);
        assert(self->published_seq <= atomic_load(&self->committed_seq));
        if (!more)
            heartbeat(self);
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN))
            serve_replays(self);
        if (rc > 0 && zap != NULL && (items[2].revents & ZMQ_POLLIN))
            feed_zap_handle(self->zap);
    }
    return NULL;
}

static int open_socket(feed_t *self, int type, const char *endpoint, int hwm, void **out)
{
    assert(hwm >= 1 && endpoint != NULL);
    int linger = FEED_LINGER_MS;
    int64_t max_bytes = FEED_REQUEST_BYTES_MAX + FEED_IDENTITY_BYTES_MAX;
    void *sock = zmq_socket(self->ctx, type);
    int on = 1;
    bool curve = self->server_key != NULL;
    bool ok =
        sock != NULL &&
        (!curve ||
         (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &on, sizeof on) == 0 &&
          zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, self->server_key->secret_z85, KEY_Z85_LEN) ==
              0 &&
          zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, FEED_ZAP_DOMAIN, strlen(FEED_ZAP_DOMAIN)) == 0 &&
          zmq_setsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &on, sizeof on) == 0)) &&
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) == 0 &&
        zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm) == 0 &&
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes) == 0 &&
        zmq_bind(sock, endpoint) == 0;
    if (!ok) {
        log_error("feed: cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        if (sock != NULL)
            zmq_close(sock);
        return CL_ERR_ZMQ;
    }
    *out = sock;
    return CL_OK;
}

static bool endpoint_allowed(const char *endpoint, bool curve)
{
    if (curve || keys_endpoint_loopback(endpoint))
        return true;
    log_error("feed: refusing %s: the feed carries every member's history; beyond loopback "
              "it needs CURVE and an allow-list (--feed-clients FILE)",
              endpoint);
    return false;
}

int feed_new(feed_t **self_out, ledger_t *ledger, const feed_options_t *opts)
{
    assert(opts->hwm >= 1 && opts->hwm <= FEED_HWM_MAX);
    assert((opts->server_key == NULL) == (opts->clients == NULL));
    bool curve = opts->server_key != NULL;
    if (!endpoint_allowed(opts->pub_endpoint, curve) ||
        !endpoint_allowed(opts->replay_endpoint, curve))
        return CL_ERR_INVALID;
    feed_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->ledger = ledger;
    self->server_key = opts->server_key;
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->published_seq = ledger_last_seq(ledger);
    atomic_store(&self->committed_seq, self->published_seq);
    atomic_store(&self->commit_us, feed_wall_us());
    /* A context of its own: its I/O thread, not the partner socket's, carries the feed. */
    self->ctx = zmq_ctx_new();
    int rc = self->wake_fd >= 0 && self->ctx != NULL ? CL_OK : CL_ERR_IO;
    if (rc == CL_OK && curve) /* the handler before any CURVE socket, so none finds none */
        rc = feed_zap_new(&self->zap, self->ctx, opts->clients);
    if (rc == CL_OK)
        rc = open_socket(self, ZMQ_PUB, opts->pub_endpoint, opts->hwm, &self->pub);
    if (rc == CL_OK) /* one answer in flight per subscriber: a small queue is plenty */
        rc = open_socket(self, ZMQ_ROUTER, opts->replay_endpoint, FEED_REPLAY_HWM, &self->router);
    if (rc == CL_OK && pthread_create(&self->thread, NULL, feed_main, self) != 0)
        rc = CL_ERR_IO;
    self->started = rc == CL_OK;
    if (rc != CL_OK) {
        feed_destroy(&self);
        return rc;
    }
    ledger_set_commit_hook(ledger, feed_on_commit, self);
    log_info("feed: publishing after seq %llu on %s, replay on %s",
             (unsigned long long)self->published_seq, opts->pub_endpoint, opts->replay_endpoint);
    *self_out = self;
    return CL_OK;
}

void feed_destroy(feed_t **self_p)
{
    feed_t *self = *self_p;
    if (self == NULL)
        return;
    if (self->started) {
        ledger_set_commit_hook(self->ledger, NULL, NULL);
        atomic_store(&self->stop, true);
        uint64_t one = 1;
        if (write(self->wake_fd, &one, sizeof one) < 0)
            log_warn("feed: cannot wake the feed thread: %s", strerror(errno));
        pthread_join(self->thread, NULL);
    }
    void *socks[] = {self->pub, self->router};
    for (size_t i = 0; i < 2; i++)
        if (socks[i] != NULL)
            zmq_close(socks[i]);
    feed_zap_destroy(&self->zap);
    if (self->ctx != NULL)
        zmq_ctx_term(self->ctx);
    if (self->wake_fd >= 0)
        close(self->wake_fd);
    free(self);
    *self_p = NULL;
}
