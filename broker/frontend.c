/* The broker's I/O thread. It owns the partner-facing ROUTER and the local admin
 * ROUTER, decodes and validates every message (no ledger access), answers balance
 * inquiries from a read transaction, and passes everything else to the writer in
 * batches. Replies go out only when the writer hands a committed batch back.
 *
 *   sockets ──read──► validate ──bad──► reply 30/13/57/61 (ledger untouched)
 *                        │ balance ──► read txn ──► reply
 *                        └─ write ──► batch ──inproc──► writer ──commit──► reply */
#include "frontend.h"

#include "broker_metrics.h"
#include "clock.h"
#include "errors.h"
#include "log.h"
#include "peers.h"
#include "ratelimit.h"
#include "request.h"
#include "router.h"
#include "service.h"
#include "shutdown.h"
#include "writer.h"
#include "zap.h"

#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define WRITER_ENDPOINT "inproc://coalition-writer"
/* Per peer: requests queued from it (inbound) and replies queued to it (outbound). An
 * agent keeps at most AGENT_WINDOW_MAX (4096) requests in flight: replies to all of them
 * fit, and a peer sending faster than the writer commits is slowed by TCP, not queued
 * without end. Bound per connection: SOCKET_RCVHWM x SOCKET_MESSAGE_BYTES_MAX inbound
 * (4 MiB) plus SOCKET_SNDHWM x AUTH_BYTES_MAX outbound (2 MiB). */
#define SOCKET_RCVHWM 1024
#define SOCKET_SNDHWM 4096
/* Connections the kernel queues before libzmq accepts them: every agent reconnecting at
 * once after a broker restart must not wait for SYN retries (libzmq's default is 100).
 * The kernel caps it at net.core.somaxconn. */
#define SOCKET_BACKLOG 4096
/* The admin socket is local and owner-only: operator tools may pipeline deeply. */
#define ADMIN_SOCKET_HWM 100000
#define READS_PER_PASS_MAX (2 * BATCH_REQUESTS_MAX)
#define LINGER_MS 2000
#define HEARTBEAT_IVL_MS 1000
#define HEARTBEAT_TIMEOUT_MS 5000
/* Bigger frames are cut off by libzmq with the connection; smaller ones but over
 * WIRE_MESSAGE_BYTES_MAX get a 30 reply. */
#define SOCKET_MESSAGE_BYTES_MAX 4096
_Static_assert(SOCKET_MESSAGE_BYTES_MAX > WIRE_MESSAGE_BYTES_MAX, "an oversized envelope gets 30");
/* A connection that has not finished its CURVE handshake by then is dropped. */
#define HANDSHAKE_IVL_MS 5000
/* How often the memory guard looks at resident memory, and how long after dropping every
 * partner connection it waits before it may do so again (libzmq tears them down). */
#define MEMORY_CHECK_MS 100
#define GUARD_COOLDOWN_MS 1000
/* Freed heap beyond this is given back to the system, at most once per interval. */
#define MEMORY_SLACK_BYTES ((size_t)64 << 20)
#define TRIM_INTERVAL_MS 5000
#ifndef ZMQ_MSG_PROPERTY_USER_ID
#define ZMQ_MSG_PROPERTY_USER_ID "User-Id"
#endif
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93 /* libzmq 4.3 DRAFT option, built into Debian's libzmq5 */
#endif

/* Principals of recent keys, direct-mapped by key; dropped whole when the ledger's access
 * generation moves (a key recorded or revoked, limits set), so a revocation is in force
 * for the next message read after its commit. */
#define PRINCIPAL_CACHE_SLOTS 256
_Static_assert((PRINCIPAL_CACHE_SLOTS & (PRINCIPAL_CACHE_SLOTS - 1)) == 0, "a power of two");

typedef struct principal_cache {
    uint64_t generation;
    bool used[PRINCIPAL_CACHE_SLOTS];
    ledger_principal_t slots[PRINCIPAL_CACHE_SLOTS];
} principal_cache_t;

/* Failures that can repeat once per message log through these, at most once a second. */
typedef struct frontend_logs {
    log_every_t format_error, declined, refused, inquiry_failed, no_reply, hand_off_failed, dropped,
        rebind, writer_stalled;
} frontend_logs_t;

typedef struct frontend {
    void *ctx, *front, *admin, *pipe;
    ledger_t *ledger;
    const frontend_options_t *opts;
    int64_t next_memory_check_ms, next_trim_ms, guard_quiet_until_ms;
    bool front_unbound; /* reopened by the memory guard, not bound again yet */
    uint64_t memory_resets;
    zap_t *zap;         /* NULL when insecure */
    peers_t *peers;     /* connections on the partner socket, capped */
    ratelimit_t *rates; /* per-participant request rate */
    principal_cache_t *principals;
    uint64_t refused; /* requests refused for their key or rate, for the log */
    writer_t *writer;
    batch_t *pool[BATCHES_IN_FLIGHT_MAX];
    size_t pool_count;
    size_t in_flight;
    frontend_logs_t logs;
    service_watchdog_t watchdog; /* systemd's, when it set one */
} frontend_t;

static int set_int(void *sock, int option, int value)
{
    return zmq_setsockopt(sock, option, &value, sizeof value);
}

/* CURVE server with ZAP, failing closed: ZMQ_ZAP_ENFORCE_DOMAIN must take. */
static int set_curve_server(void *sock, const key_pair_t *key)
{
    int enforce = 0;
    size_t size = sizeof enforce;
    if (set_int(sock, ZMQ_CURVE_SERVER, 1) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, key->secret_z85, KEY_Z85_BYTES) ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN)) ||
        set_int(sock, ZMQ_ZAP_ENFORCE_DOMAIN, 1) ||
        set_int(sock, ZMQ_HANDSHAKE_IVL, HANDSHAKE_IVL_MS) ||
        zmq_getsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &enforce, &size) || enforce != 1) {
        log_error("cannot make the partner socket a CURVE server with enforced ZAP: %s",
                  zmq_strerror(zmq_errno()));
        return CL_ERR_ZMQ;
    }
    return CL_OK;
}

/* `peers` (partner socket only): its connections are counted and capped from before it
 * binds, and its queues are bounded per connection; the admin socket (peers NULL) is
 * local and owner-only. */
static void *make_router(void *ctx, const key_pair_t *curve, peers_t **peers,
                         size_t connections_max)
{
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    if (sock == NULL)
        return NULL;
    if (peers != NULL && peers_new(peers, ctx, sock, connections_max) != CL_OK) {
        zmq_close(sock);
        return NULL;
    }
    int64_t max_bytes = SOCKET_MESSAGE_BYTES_MAX;
    if ((curve != NULL && set_curve_server(sock, curve) != CL_OK) ||
        set_int(sock, ZMQ_ROUTER_MANDATORY, 1) || set_int(sock, ZMQ_LINGER, LINGER_MS) ||
        set_int(sock, ZMQ_SNDHWM, peers != NULL ? SOCKET_SNDHWM : ADMIN_SOCKET_HWM) ||
        set_int(sock, ZMQ_RCVHWM, peers != NULL ? SOCKET_RCVHWM : ADMIN_SOCKET_HWM) ||
        set_int(sock, ZMQ_BACKLOG, SOCKET_BACKLOG) ||
        set_int(sock, ZMQ_HEARTBEAT_IVL, HEARTBEAT_IVL_MS) ||
        set_int(sock, ZMQ_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS) ||
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes)) {
        log_error("cannot set up a ROUTER socket: %s", zmq_strerror(zmq_errno()));
        if (peers != NULL)
            peers_destroy(peers);
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

static void *open_router(void *ctx, const char *endpoint, const key_pair_t *curve, peers_t **peers,
                         size_t connections_max)
{
    void *sock = make_router(ctx, curve, peers, connections_max);
    if (sock != NULL && zmq_bind(sock, endpoint) != 0) {
        log_error("cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        if (peers != NULL)
            peers_destroy(peers);
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

static void send_reply(void *sock, const request_t *r, const uint8_t *reply, size_t len)
{
    broker_metrics_reply(r->env != NULL ? r->env->partner_id : NULL, reply, len);
    router_reply(sock, &r->peer, reply, len);
}

/* A decline decided here; nothing reaches the ledger. */
static void send_decline(void *sock, const request_t *r, const envelope_t *env, int code,
                         const char *why)
{
    broker_metrics_decline(env != NULL ? env->partner_id : NULL, code);
    router_decline(sock, &r->peer, env, env != NULL ? r->hash : NULL, code, why);
}

static void answer_inquiry(frontend_t *self, void *sock, request_t *r)
{
    uint8_t *reply = NULL;
    size_t len = 0;
    int rc = ledger_inquire_cards(self->ledger, r->env, &r->cards, r->hash, &reply, &len);
    if (rc == CL_OK) {
        send_reply(sock, r, reply, len);
    } else {
        log_every(&self->logs.inquiry_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "balance inquiry failed: %s", cl_strerror(rc));
        send_decline(sock, r, r->env, RC_SYSTEM_ERROR, "balance could not be read");
    }
    free(reply);
}

/* Who a key is: from the cache, or the ledger (then cached). */
static int lookup_principal(frontend_t *self, const char *z85, ledger_principal_t *out)
{
    principal_cache_t *c = self->principals;
    uint64_t generation = ledger_access_generation(self->ledger);
    if (generation != c->generation) {
        memset(c->used, 0, sizeof c->used);
        c->generation = generation;
    }
    uint32_t h = 2166136261u; /* FNV-1a over the key text */
    for (size_t i = 0; i < KEY_Z85_LEN; i++)
        h = (h ^ (uint8_t)z85[i]) * 16777619u;
    size_t slot = h & (PRINCIPAL_CACHE_SLOTS - 1);
    assert(slot < PRINCIPAL_CACHE_SLOTS && keys_z85_valid(z85));
    if (c->used[slot] && memcmp(c->slots[slot].public_z85, z85, KEY_Z85_BYTES) == 0) {
        *out = c->slots[slot];
        return CL_OK;
    }
    int rc = ledger_principal(self->ledger, z85, out);
    if (rc == CL_OK) {
        assert(memcmp(out->public_z85, z85, KEY_Z85_BYTES) == 0);
        c->slots[slot] = *out;
        c->used[slot] = true;
    }
    return rc;
}

/* Who sent a partner-socket request, from its authenticated key; RC_APPROVED to go on.
 * Identity never comes from the envelope: the key's participant must be the one it names
 * (57), and the participant's request rate must allow it (91, retry later). */
static int check_sender(frontend_t *self, request_t *r, char *why, size_t why_size)
{
    if (r->origin == ORIGIN_ADMIN || self->zap == NULL)
        return RC_APPROVED; /* the operator's socket, or --insecure */
    ledger_principal_t who;
    int rc =
        r->principal[0] != '\0' ? lookup_principal(self, r->principal, &who) : CL_ERR_NOT_FOUND;
    if (rc == CL_ERR_NOT_FOUND) {
        snprintf(why, why_size, "this key is not recorded");
        return RC_NOT_PERMITTED;
    }
    if (rc != CL_OK) {
        snprintf(why, why_size, "keys could not be read");
        return RC_SYSTEM_ERROR;
    }
    int code = ledger_permits(&who, r->env, why, why_size);
    if (code != RC_APPROVED)
        return code;
    if (!ratelimit_take(self->rates, who.participant, who.limits.requests_per_second,
                        clock_mono_ms())) {
        snprintf(why, why_size, "partner %s is over its limit of %u requests a second; retry",
                 who.participant, who.limits.requests_per_second);
        return RC_UNAVAILABLE;
    }
    return RC_APPROVED;
}

/* Declines repeat once per message: rate-limited lines, with the count of refusals. */
static void log_decline(frontend_t *self, const request_t *r, bool sender_refused, int code,
                        const char *why)
{
    if (!sender_refused) {
        log_every(&self->logs.declined, LOG_EVERY_INTERVAL_MS, LOG_INFO,
                  "declined %02d %s from %.32s: %s", code, wire_body_name(r->env),
                  r->env->partner_id, why);
        return;
    }
    self->refused++;
    log_every(&self->logs.refused, LOG_EVERY_INTERVAL_MS, LOG_WARN,
              "refused %02d %s for %.32s from key %.8s...: %s (%llu refused in all)", code,
              wire_body_name(r->env), r->env->partner_id, r->principal, why,
              (unsigned long long)self->refused);
}

/* The request's card numbers looked up under every card key (the writer sees only
 * these); 12 when this broker has no card key (not 57: an agent takes 57 for its key). */
static int look_up_cards(frontend_t *self, request_t *r, char *why, size_t why_size)
{
    memset(&r->cards, 0, sizeof r->cards);
    const Coalition__Card *cards[2];
    size_t n = wire_cards_of(r->env, cards);
    if (n == 0 || !wire_has_pan(r->env))
        return RC_APPROVED; /* none, or sent again without its number: the ledger answers */
    if (self->opts->card_keys == NULL) {
        snprintf(why, why_size, "card-linked requests are not enabled on this broker");
        return RC_INVALID_TRANSACTION;
    }
    card_lookup_t *out[2] = {&r->cards.card, &r->cards.new_card};
    assert(n <= 2 && self->opts->card_keys->count > 0);
    for (size_t i = 0; i < n; i++) {
        if (cards[i]->pan[0] == '\0')
            continue;
        if (card_lookup_of(self->opts->card_keys, cards[i]->pan, out[i]) != CL_OK) {
            snprintf(why, why_size, "card could not be looked up");
            return RC_SYSTEM_ERROR;
        }
    }
    return RC_APPROVED;
}

/* A card request this broker cannot look up (no card key): when the ledger holds its key
 * from before, the first answer (the card compared where it can be: not here); true when
 * answered. */
static bool answer_repeat(frontend_t *self, void *sock, request_t *r)
{
    uint8_t *reply = NULL;
    size_t len = 0;
    bool answered = ledger_replay(self->ledger, r->env, NULL, r->hash, &reply, &len) == CL_OK;
    if (answered)
        send_reply(sock, r, reply, len);
    free(reply);
    return answered;
}

/* Decode and validate; true when the request joins the batch for the writer. */
static bool accept_request(frontend_t *self, void *sock, origin_t origin, request_t *r,
                           const zmq_msg_t *payload)
{
    size_t len = zmq_msg_size((zmq_msg_t *)payload);
    char why[RECEIPT_TEXT_BYTES_MAX];
    r->origin = origin;
    r->reply = NULL;
    r->env = len <= WIRE_MESSAGE_BYTES_MAX
                 ? wire_envelope_decode(zmq_msg_data((zmq_msg_t *)payload), len)
                 : NULL;
    /* Whatever it held (a card number among it) lives on only in the decoded envelope. */
    pan_clear(zmq_msg_data((zmq_msg_t *)payload), len);
    if (r->env == NULL) {
        log_every(&self->logs.format_error, LOG_EVERY_INTERVAL_MS, LOG_WARN,
                  "format error: %zu-byte message is not a valid envelope", len);
        send_decline(sock, r, NULL, RC_FORMAT_ERROR, "message is not a valid envelope");
        return false;
    }
    /* Hashed first, so that every reply, declines included, says what it answers. */
    int code = RC_APPROVED;
    if (wire_request_hash(r->env, r->hash) != CL_OK) {
        memset(r->hash, 0, sizeof r->hash);
        code = RC_SYSTEM_ERROR;
        snprintf(why, sizeof why, "request could not be hashed");
    }
    if (code == RC_APPROVED)
        code = wire_validate(r->env, origin == ORIGIN_ADMIN, why, sizeof why);
    bool sender_refused = false;
    if (code == RC_APPROVED) {
        code = check_sender(self, r, why, sizeof why);
        sender_refused = code != RC_APPROVED;
    }
    if (code == RC_APPROVED)
        code = look_up_cards(self, r, why, sizeof why);
    if (code == RC_INVALID_TRANSACTION && self->opts->card_keys == NULL &&
        answer_repeat(self, sock, r)) {
        wire_clear_pans(r->env);
        wire_envelope_free(r->env);
        r->env = NULL;
        return false; /* a repeat of what the ledger holds gets its answer, keys or not */
    }
    wire_clear_pans(r->env); /* from here on, cards are their lookups and masked forms */
    assert(!wire_has_pan(r->env));
    if (code != RC_APPROVED) {
        log_decline(self, r, sender_refused, code, why);
        send_decline(sock, r, r->env, code, why);
    } else if (r->env->body_case == COALITION__ENVELOPE__BODY_BALANCE) {
        answer_inquiry(self, sock, r);
    } else {
        assert(r->env != NULL && r->env->body_case != COALITION__ENVELOPE__BODY_BALANCE);
        return true;
    }
    wire_envelope_free(r->env);
    r->env = NULL;
    return false;
}

/* Move whatever `sock` has ready into the batch, up to its capacity. */
static void read_socket(frontend_t *self, void *sock, origin_t origin, batch_t *batch)
{
    /* Bounded in reads too: inquiries and bad input must not keep committed replies
     * waiting in the writer pipe. */
    for (size_t reads = 0; batch->count < BATCH_REQUESTS_MAX && reads < READS_PER_PASS_MAX;
         reads++) {
        request_t *r = &batch->items[batch->count];
        zmq_msg_t payload;
        zmq_msg_init(&payload);
        int got = router_read(sock, &r->peer, &payload, &self->logs.dropped);
        if (got == 0) {
            zmq_msg_close(&payload);
            return;
        }
        /* A User-Id means something only where ZAP set it: on the admin socket or without
         * CURVE a peer could send one itself. */
        bool authenticated = got == 1 && origin == ORIGIN_PARTNER && self->zap != NULL;
        const char *user_id =
            authenticated ? zmq_msg_gets(&payload, ZMQ_MSG_PROPERTY_USER_ID) : NULL;
        r->principal[0] = '\0';
        if (user_id != NULL && keys_z85_valid(user_id))
            memcpy(r->principal, user_id, KEY_Z85_BYTES);
        if (got == 1 && accept_request(self, sock, origin, r, &payload))
            batch->count++;
        assert(batch->count <= BATCH_REQUESTS_MAX);
        zmq_msg_close(&payload);
    }
}

static void *socket_of(frontend_t *self, origin_t origin)
{
    return origin == ORIGIN_ADMIN ? self->admin : self->front;
}

/* The writer handed a committed batch back: send every reply, recycle the batch. */
static void deliver(frontend_t *self, batch_t *batch)
{
    for (size_t i = 0; i < batch->count; i++) {
        request_t *r = &batch->items[i];
        if (r->reply != NULL)
            send_reply(socket_of(self, r->origin), r, r->reply, r->reply_len);
        else
            log_every(&self->logs.no_reply, LOG_EVERY_INTERVAL_MS, LOG_ERROR, "no reply for %s/%s",
                      r->env->partner_id, r->env->txn_id);
        free(r->reply);
        wire_envelope_free(r->env);
        r->reply = NULL;
        r->env = NULL;
    }
    batch->count = 0;
    assert(self->in_flight > 0 && self->pool_count < BATCHES_IN_FLIGHT_MAX);
    self->pool[self->pool_count++] = batch;
    self->in_flight--;
}

static void drain_writer(frontend_t *self)
{
    batch_t *batch = NULL;
    while (zmq_recv(self->pipe, &batch, sizeof batch, ZMQ_DONTWAIT) == sizeof batch)
        deliver(self, batch);
}

static void take_intake(frontend_t *self)
{
    assert(self->pool_count > 0); /* intake is polled only while a batch is free */
    assert(self->pool_count + self->in_flight == BATCHES_IN_FLIGHT_MAX);
    batch_t *batch = self->pool[--self->pool_count];
    read_socket(self, self->admin, ORIGIN_ADMIN, batch);
    read_socket(self, self->front, ORIGIN_PARTNER, batch);
    if (batch->count == 0) {
        self->pool[self->pool_count++] = batch;
        return;
    }
    broker_metrics_queued((int64_t)batch->count); /* before: the writer may take it at once */
    if (zmq_send(self->pipe, &batch, sizeof batch, 0) != sizeof batch) {
        broker_metrics_queued(-(int64_t)batch->count);
        log_every(&self->logs.hand_off_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "cannot hand a batch to the writer: %s", zmq_strerror(zmq_errno()));
        for (size_t i = 0; i < batch->count; i++) {
            request_t *r = &batch->items[i];
            send_decline(socket_of(self, r->origin), r, r->env, RC_SYSTEM_ERROR,
                         "writer unavailable");
            wire_envelope_free(r->env);
        }
        batch->count = 0;
        self->pool[self->pool_count++] = batch;
        return;
    }
    self->in_flight++;
}

/* Heap bytes the allocator has handed out (arena and mmapped chunks). */
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Resident anonymous bytes (resident less file-backed, so not the ledger's map), from
 * /proc/self/statm: what queued messages and connections cost. 0 if it cannot be read. */
static size_t resident_anonymous_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, resident = 0, shared = 0;
    bool ok = f != NULL && fscanf(f, "%lu %lu %lu", &pages, &resident, &shared) == 3 &&
              resident >= shared;
    if (f != NULL)
        fclose(f);
    return ok ? (size_t)(resident - shared) * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

/* Close the partner socket, dropping every connection with whatever it queued (an
 * authenticated peer can grow a multipart message that never ends without limit: libzmq
 * counts its high-water mark in whole messages), and open a new one, bound again as soon
 * as libzmq has let the port go (guard_memory retries; until then partners get no answer
 * and reconnect). Fatal only if libzmq cannot make a socket at all. */
static int reopen_partner_socket(frontend_t *self, size_t resident, int64_t now)
{
    assert(self->front != NULL && resident > self->opts->memory_max_bytes);
    int linger = 0;
    zmq_setsockopt(self->front, ZMQ_LINGER, &linger, sizeof linger);
    peers_destroy(&self->peers); /* before the socket it monitors */
    zmq_close(self->front);
    self->memory_resets++;
    self->front =
        make_router(self->ctx, self->opts->server_key, &self->peers, self->opts->connections_max);
    self->front_unbound = true;
    self->guard_quiet_until_ms = now + GUARD_COOLDOWN_MS;
    log_error("memory guard: %zu resident bytes, over %zu: dropped every partner connection "
              "(%llu time(s) so far); partners reconnect and resend",
              resident, self->opts->memory_max_bytes, (unsigned long long)self->memory_resets);
    return self->front != NULL ? CL_OK : CL_ERR_ZMQ;
}

static void rebind_partner_socket(frontend_t *self)
{
    assert(self->front != NULL && self->front_unbound);
    if (zmq_bind(self->front, self->opts->bind_endpoint) == 0) {
        self->front_unbound = false;
        log_info("partner socket bound again on %s", self->opts->bind_endpoint);
    } else {
        log_every(&self->logs.rebind, LOG_EVERY_INTERVAL_MS, LOG_WARN,
                  "partner socket not bound yet on %s: %s; retrying", self->opts->bind_endpoint,
                  zmq_strerror(zmq_errno()));
    }
}

/* Every MEMORY_CHECK_MS: past --memory-max-mb of resident memory, drop every partner
 * connection (at most once per GUARD_COOLDOWN_MS, the time libzmq takes to let them go);
 * memory freed after a flood goes back to the system. */
static int guard_memory(frontend_t *self)
{
    int64_t now = clock_mono_ms();
    if (now < self->next_memory_check_ms)
        return CL_OK;
    self->next_memory_check_ms = now + MEMORY_CHECK_MS;
    assert(self->opts->memory_max_bytes > 0);
    if (self->front_unbound)
        rebind_partner_socket(self);
    size_t resident = resident_anonymous_bytes();
    if (resident > self->opts->memory_max_bytes && now >= self->guard_quiet_until_ms)
        return reopen_partner_socket(self, resident, now);
    if (now < self->guard_quiet_until_ms) {
        malloc_trim(0); /* libzmq frees the dropped connections' queues as it tears them down */
        return CL_OK;
    }
    if (now >= self->next_trim_ms && resident > MEMORY_SLACK_BYTES) {
        self->next_trim_ms = now + TRIM_INTERVAL_MS; /* mallinfo2 locks every arena */
        if (resident > heap_in_use() + MEMORY_SLACK_BYTES)
            malloc_trim(0);
    }
    return CL_OK;
}

/* systemd's watchdog is pinged while this loop runs and the writer is not stuck: busy
 * on one round, or housekeeping, for a whole watchdog interval. Then systemd kills the
 * broker one interval later, and restarts it (Restart=on-failure). */
static void ping_watchdog(frontend_t *self)
{
    if (self->watchdog.interval_ms == 0)
        return;
    int64_t now = clock_mono_ms();
    int64_t busy_ms = writer_busy_ms(self->writer, now);
    bool alive = busy_ms < self->watchdog.interval_ms;
    if (!alive)
        log_every(&self->logs.writer_stalled, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "writer busy for %lld ms without finishing a round: watchdog pings withheld",
                  (long long)busy_ms);
    service_watchdog_tick(&self->watchdog, now, alive);
}

static int run_loop(frontend_t *self, int stop_fd)
{
    bool stopping = false;
    while (!stopping || self->in_flight > 0) {
        short intake = (!stopping && self->pool_count > 0) ? ZMQ_POLLIN : 0;
        void *zap = self->zap != NULL ? zap_socket(self->zap) : NULL;
        zmq_pollitem_t items[] = {{self->pipe, 0, ZMQ_POLLIN, 0},
                                  {self->front, 0, intake, 0},
                                  {self->admin, 0, intake, 0},
                                  {NULL, stop_fd, stopping ? 0 : ZMQ_POLLIN, 0},
                                  {peers_socket(self->peers), 0, ZMQ_POLLIN, 0},
                                  {zap, 0, zap != NULL ? ZMQ_POLLIN : 0, 0}};
        int rc = zmq_poll(items, zap != NULL ? 6 : 5, MEMORY_CHECK_MS);
        if (rc < 0 && zmq_errno() == EINTR)
            continue;
        if (rc < 0) {
            log_error("poll failed: %s", zmq_strerror(zmq_errno()));
            return CL_ERR_ZMQ;
        }
        if (items[0].revents & ZMQ_POLLIN)
            drain_writer(self);
        if (items[4].revents & ZMQ_POLLIN)
            peers_handle(self->peers);
        if (zap != NULL && (items[5].revents & ZMQ_POLLIN))
            zap_handle(self->zap);
        if (intake && ((items[1].revents | items[2].revents) & ZMQ_POLLIN))
            take_intake(self);
        if (guard_memory(self) != CL_OK)
            return CL_ERR_ZMQ;
        broker_metrics_connections(peers_open(self->peers));
        ping_watchdog(self);
        if ((items[3].revents & ZMQ_POLLIN) && shutdown_requested(stop_fd)) {
            stopping = true;
            log_info("stopping: intake closed, %zu batch(es) still committing", self->in_flight);
            service_stopping("stopping: %zu batch(es) still committing", self->in_flight);
        }
    }
    return CL_OK;
}

static int frontend_open(frontend_t *self, const frontend_options_t *opts)
{
    for (size_t i = 0; i < BATCHES_IN_FLIGHT_MAX; i++) {
        self->pool[i] = calloc(1, sizeof(batch_t));
        if (self->pool[i] == NULL)
            return CL_ERR_NOMEM;
        self->pool_count++;
    }
    self->ctx = zmq_ctx_new();
    if (self->ctx == NULL)
        return CL_ERR_ZMQ;
    self->pipe = zmq_socket(self->ctx, ZMQ_PAIR);
    if (self->pipe == NULL || set_int(self->pipe, ZMQ_LINGER, 0) ||
        set_int(self->pipe, ZMQ_SNDHWM, 0) || set_int(self->pipe, ZMQ_RCVHWM, 0) ||
        zmq_bind(self->pipe, WRITER_ENDPOINT) != 0)
        return CL_ERR_ZMQ;
    int rc = writer_new(&self->writer, self->ctx, self->ledger, WRITER_ENDPOINT,
                        self->opts->expire_at_minute);
    if (rc == CL_OK)
        rc = ratelimit_new(&self->rates);
    if (rc == CL_OK) {
        self->principals = calloc(1, sizeof *self->principals);
        rc = self->principals != NULL ? CL_OK : CL_ERR_NOMEM;
    }
    /* The ZAP handler before the partner socket, so no handshake ever finds none. */
    if (rc == CL_OK && opts->server_key != NULL)
        rc = zap_new(&self->zap, self->ctx, self->ledger);
    if (rc != CL_OK)
        return rc;
    /* The partner socket first: if its endpoint is taken (another broker), stop before
     * the admin socket, whose ipc path binding would take over from its owner. */
    self->front = open_router(self->ctx, opts->bind_endpoint, opts->server_key, &self->peers,
                              opts->connections_max);
    if (self->front == NULL)
        return CL_ERR_ZMQ;
    self->admin = open_router(self->ctx, opts->admin_endpoint, NULL, NULL, 0);
    return self->admin != NULL ? CL_OK : CL_ERR_ZMQ;
}

static void frontend_close(frontend_t *self)
{
    if (self->writer != NULL) {
        batch_t *stop = NULL;
        if (zmq_send(self->pipe, &stop, sizeof stop, 0) != sizeof stop)
            log_error("cannot stop the writer: %s", zmq_strerror(zmq_errno()));
        writer_destroy(&self->writer);
    }
    peers_destroy(&self->peers); /* before the socket it monitors */
    void *socks[] = {self->front, self->admin, self->pipe};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++) {
        if (socks[i] != NULL)
            zmq_close(socks[i]);
    }
    zap_destroy(&self->zap);
    ratelimit_destroy(&self->rates);
    free(self->principals);
    if (self->ctx != NULL)
        zmq_ctx_term(self->ctx);
    for (size_t i = 0; i < self->pool_count; i++)
        free(self->pool[i]);
}

int frontend_run(ledger_t *ledger, const frontend_options_t *opts, int stop_fd)
{
    frontend_t self;
    memset(&self, 0, sizeof self);
    self.ledger = ledger;
    self.opts = opts;
    int rc = frontend_open(&self, opts);
    if (rc == CL_OK) {
        /* Sockets bound and the ledger open: systemd may start what depends on us. */
        log_info("ready: partners on %s, operator on %s, ledger at seq %llu", opts->bind_endpoint,
                 opts->admin_endpoint, (unsigned long long)ledger_last_seq(ledger));
        service_ready("serving partners on %s, ledger at seq %llu", opts->bind_endpoint,
                      (unsigned long long)ledger_last_seq(ledger));
        service_watchdog_init(&self.watchdog);
        rc = run_loop(&self, stop_fd);
    }
    frontend_close(&self);
    return rc;
}
