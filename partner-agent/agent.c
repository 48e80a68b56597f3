/* coalition-agent event loop; the flow is drawn in agent.h. Invariants: a request that
 * changes the ledger is in the outbox (synced) before it is first sent; it leaves the
 * outbox in the same transaction that journals the broker's answer; the queue holds
 * requests in arrival order and they are (re)sent in that order. */
#include "agent.h"

#include "clock.h"
#include "digest.h"
#include "errors.h"
#include "log.h"
#include "outbox.h"
#include "router.h"
#include "shutdown.h"
#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define TICK_MS 20
#define INTAKE_MAX 256
#define REPLIES_MAX 256
#define OPS_MAX (2 * (INTAKE_MAX + REPLIES_MAX))
#define SOCKET_HWM 100000
#define RECONNECT_IVL_MS 100
#define RECONNECT_IVL_MAX_MS 2000
#define REVERSAL_HASH_HEX 30

typedef struct pending {
    struct pending *prev, *next;
    uint64_t outbox_seq; /* 0: not persisted (balance inquiries) */
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__Envelope__BodyCase kind;
    uint8_t *envelope;
    size_t envelope_len;
    int64_t sent_ms;       /* 0: not in flight */
    int64_t not_before_ms; /* back-off after a 96 */
    unsigned attempts;
    bool answered;
    bool reverse_pending; /* a burn whose till was told 91; its void is not queued yet */
    bool till_waiting;
    peer_t till;
    int64_t till_deadline_ms;
} pending_t;

typedef struct agent {
    const agent_options_t *opts;
    void *ctx, *tills, *broker;
    outbox_t *store;
    pending_t *head, *tail;
    size_t pending_count, in_flight;
    outbox_op_t ops[OPS_MAX];
    size_t op_count;
} agent_t;

/* ---- queue ------------------------------------------------------------------------- */

static void queue_append(agent_t *a, pending_t *p)
{
    p->prev = a->tail;
    p->next = NULL;
    if (a->tail != NULL)
        a->tail->next = p;
    else
        a->head = p;
    a->tail = p;
    a->pending_count++;
}

static void queue_remove(agent_t *a, pending_t *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        a->head = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        a->tail = p->prev;
    a->pending_count--;
    if (p->sent_ms != 0)
        a->in_flight--;
    free(p->envelope);
    free(p);
}

static bool store_and_forward(Coalition__Envelope__BodyCase kind)
{
    return kind == COALITION__ENVELOPE__BODY_EARN || kind == COALITION__ENVELOPE__BODY_REFUND ||
           kind == COALITION__ENVELOPE__BODY_VOID_REQUEST ||
           kind == COALITION__ENVELOPE__BODY_ENROLL;
}

static pending_t *pending_new(const envelope_t *env, uint8_t *bytes, size_t len)
{
    pending_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    snprintf(p->txn_id, sizeof p->txn_id, "%s", env->txn_id);
    p->kind = env->body_case;
    p->envelope = bytes;
    p->envelope_len = len;
    return p;
}

/* ---- replies to tills -------------------------------------------------------------- */

static void till_reply(agent_t *a, pending_t *p, const authorization_t *auth)
{
    router_reply_auth(a->tills, &p->till, auth);
    p->till_waiting = false;
}

static void till_decline(agent_t *a, const peer_t *peer, const envelope_t *env, int code,
                         const char *why)
{
    router_decline(a->tills, peer, env, NULL, code, why);
}

/* The broker did not answer in time: stored offline, or 91. */
static void till_timeout_reply(agent_t *a, pending_t *p)
{
    envelope_t *env = wire_envelope_decode(p->envelope, p->envelope_len);
    authorization_t auth;
    char text[RECEIPT_TEXT_BYTES_MAX];
    if (store_and_forward(p->kind)) {
        snprintf(text, sizeof text,
                 "Stored offline: the clearinghouse is unreachable; "
                 "it will be sent when it is back");
        wire_auth_decline(&auth, env, RC_UNAVAILABLE, text);
        auth.offline = true;
        auth.pending = true;
    } else {
        snprintf(text, sizeof text, "Declined 91: clearinghouse unavailable; nothing applied");
        wire_auth_decline(&auth, env, RC_UNAVAILABLE, text);
    }
    till_reply(a, p, &auth);
    wire_envelope_free(env);
}

/* ---- intake from tills ------------------------------------------------------------- */

/* Decode, stamp with this agent's partner id, validate. NULL after replying a decline. */
static pending_t *admit(agent_t *a, const peer_t *peer, const void *data, size_t len)
{
    char why[RECEIPT_TEXT_BYTES_MAX];
    envelope_t *env = wire_envelope_decode(data, len);
    pending_t *p = NULL;
    int code = RC_APPROVED;
    if (env == NULL) {
        till_decline(a, peer, NULL, RC_FORMAT_ERROR, "message is not a valid envelope");
        return NULL;
    }
    if (env->partner_id[0] != '\0' && strcmp(env->partner_id, a->opts->partner_id) != 0) {
        code = RC_NOT_PERMITTED;
        snprintf(why, sizeof why, "this agent serves partner %s", a->opts->partner_id);
    } else if (env->site_id[0] != '\0' && strcmp(env->site_id, a->opts->site_id) != 0) {
        code = RC_NOT_PERMITTED;
        snprintf(why, sizeof why, "this agent serves site %s", a->opts->site_id);
    } else if (env->txn_id[0] == AGENT_TXN_PREFIX) {
        code = RC_FORMAT_ERROR;
        snprintf(why, sizeof why, "txn ids starting with '%c' are reserved", AGENT_TXN_PREFIX);
    } else if (a->pending_count >= AGENT_PENDING_MAX) {
        code = RC_UNAVAILABLE;
        snprintf(why, sizeof why, "agent outbox full");
    }
    bool reversed = false;
    if (code == RC_APPROVED && env->body_case == COALITION__ENVELOPE__BODY_BURN &&
        outbox_was_reversed(a->store, env->txn_id, &reversed) == CL_OK && reversed) {
        code = RC_INVALID_TRANSACTION;
        snprintf(why, sizeof why,
                 "burn %s was reversed after the clearinghouse did not answer; "
                 "use a new txn id",
                 env->txn_id);
    }
    char *sent_partner_id = env->partner_id; /* owned by the decoded message */
    char *sent_site_id = env->site_id;
    if (code == RC_APPROVED) {
        env->partner_id = (char *)a->opts->partner_id;
        env->site_id = (char *)a->opts->site_id;
        code = wire_validate(env, false, why, sizeof why);
    }
    if (code != RC_APPROVED) {
        till_decline(a, peer, env, code, why);
    } else {
        size_t packed_len = 0;
        uint8_t *bytes = wire_pack_envelope(env, &packed_len);
        p = bytes != NULL ? pending_new(env, bytes, packed_len) : NULL;
        if (p == NULL) {
            free(bytes);
            till_decline(a, peer, env, RC_SYSTEM_ERROR, "agent out of memory");
        }
    }
    env->partner_id = sent_partner_id;
    env->site_id = sent_site_id;
    wire_envelope_free(env);
    return p;
}

static void add_op(agent_t *a, outbox_op_kind_t kind, uint64_t seq, const pending_t *p,
                   const uint8_t *auth, size_t auth_len)
{
    outbox_op_t *op = &a->ops[a->op_count++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->seq = seq;
    op->envelope = p->envelope;
    op->envelope_len = p->envelope_len;
    op->auth = auth;
    op->auth_len = auth_len;
    op->time_ms = clock_wall_ms();
}

static void take_tills(agent_t *a, int64_t now)
{
    pending_t *fresh[INTAKE_MAX];
    size_t n = 0;
    uint64_t seq = outbox_next_seq(a->store);
    a->op_count = 0;
    while (n < INTAKE_MAX) {
        peer_t peer;
        zmq_msg_t payload;
        zmq_msg_init(&payload);
        int got = router_read(a->tills, &peer, &payload);
        pending_t *p =
            got == 1 ? admit(a, &peer, zmq_msg_data(&payload), zmq_msg_size(&payload)) : NULL;
        zmq_msg_close(&payload);
        if (got == 0)
            break;
        if (p == NULL)
            continue;
        p->till = peer;
        p->till_waiting = true;
        p->till_deadline_ms = now + a->opts->till_wait_ms;
        if (p->kind != COALITION__ENVELOPE__BODY_BALANCE) {
            p->outbox_seq = seq++;
            add_op(a, OUTBOX_OP_PUT, p->outbox_seq, p, NULL, 0);
        }
        fresh[n++] = p;
    }
    int rc = a->op_count > 0 ? outbox_apply(a->store, a->ops, a->op_count) : CL_OK;
    for (size_t i = 0; i < n; i++) {
        queue_append(a, fresh[i]);
        if (rc != CL_OK) {
            envelope_t env;
            coalition__envelope__init(&env);
            env.txn_id = fresh[i]->txn_id; /* the till matches replies by txn id */
            till_decline(a, &fresh[i]->till, &env, RC_SYSTEM_ERROR,
                         "agent cannot store the request");
            queue_remove(a, fresh[i]);
        }
    }
    if (rc != CL_OK)
        log_error("outbox write failed: %s", cl_strerror(rc));
}

/* ---- replies from the broker ------------------------------------------------------- */

static pending_t *find_in_flight(agent_t *a, const char *txn_id)
{
    for (pending_t *p = a->head; p != NULL; p = p->next) {
        if (p->sent_ms != 0 && !p->answered && strcmp(p->txn_id, txn_id) == 0)
            return p;
    }
    return NULL;
}

/* Read one broker reply and match it; NULL if there is none or it matches nothing. */
static pending_t *read_reply(agent_t *a, zmq_msg_t *msg, int64_t now, bool *more)
{
    *more = zmq_msg_recv(msg, a->broker, ZMQ_DONTWAIT) >= 0;
    if (!*more)
        return NULL;
    authorization_t *auth = wire_auth_decode(zmq_msg_data(msg), zmq_msg_size(msg));
    if (auth == NULL) {
        log_warn("dropped an unreadable reply from the broker");
        return NULL;
    }
    pending_t *p = find_in_flight(a, auth->txn_id);
    if (p != NULL && p->reverse_pending)
        p = NULL; /* its till was told 91: only the void may settle it */
    if (p == NULL)
        log_debug("reply for %s matches nothing in flight (a duplicate)", auth->txn_id);
    else if (auth->code == RC_SYSTEM_ERROR && !p->till_waiting) {
        log_warn("broker system error on %s; will retry", p->txn_id);
        a->in_flight--;
        p->sent_ms = 0;
        p->not_before_ms = now + a->opts->retry_ms;
        p = NULL;
    }
    wire_auth_free(auth);
    return p;
}

static void take_replies(agent_t *a, int64_t now)
{
    zmq_msg_t msgs[REPLIES_MAX];
    pending_t *done[REPLIES_MAX];
    size_t n = 0;
    uint64_t jseq = outbox_journal_next_seq(a->store);
    a->op_count = 0;
    bool more = true;
    /* Bounded both in matches and in reads, so duplicates cannot hold the loop. */
    for (size_t reads = 0; more && n < REPLIES_MAX && reads < 2 * REPLIES_MAX; reads++) {
        zmq_msg_init(&msgs[n]);
        pending_t *p = read_reply(a, &msgs[n], now, &more);
        if (p == NULL) {
            zmq_msg_close(&msgs[n]);
            continue;
        }
        p->answered = true;
        add_op(a, OUTBOX_OP_JOURNAL, jseq++, p, zmq_msg_data(&msgs[n]), zmq_msg_size(&msgs[n]));
        if (p->outbox_seq != 0)
            add_op(a, OUTBOX_OP_DELETE, p->outbox_seq, p, NULL, 0);
        done[n++] = p;
    }
    int rc = a->op_count > 0 ? outbox_apply(a->store, a->ops, a->op_count) : CL_OK;
    if (rc != CL_OK)
        log_error("journal write failed (%s); answers will be fetched again", cl_strerror(rc));
    for (size_t i = 0; i < n; i++) {
        pending_t *p = done[i];
        if (rc != CL_OK) {
            p->answered = false;
        } else {
            if (p->till_waiting)
                router_reply(a->tills, &p->till, zmq_msg_data(&msgs[i]), zmq_msg_size(&msgs[i]));
            queue_remove(a, p);
        }
        zmq_msg_close(&msgs[i]);
    }
}

/* ---- reversals of burns the till was told failed ----------------------------------- */

/* A void of `burn`, keyed "~v<hash of the burn's txn id>" so it is the same every time. */
static pending_t *reversal_of(const uint8_t *burn_bytes, size_t burn_len)
{
    envelope_t *burn = wire_envelope_decode(burn_bytes, burn_len);
    if (burn == NULL)
        return NULL;
    uint8_t digest[WIRE_HASH_BYTES];
    char txn_id[TXN_ID_LEN_MAX + 1];
    const void *parts[] = {burn->txn_id};
    const size_t lens[] = {strlen(burn->txn_id)};
    if (digest_sha256(parts, lens, 1, digest) != CL_OK) {
        wire_envelope_free(burn);
        return NULL;
    }
    txn_id[0] = AGENT_TXN_PREFIX;
    txn_id[1] = 'v';
    for (int i = 0; i < REVERSAL_HASH_HEX / 2; i++)
        snprintf(txn_id + 2 + 2 * i, 3, "%02x", digest[i]);
    envelope_t env = *burn;
    Coalition__VoidRequest body = COALITION__VOID_REQUEST__INIT;
    body.original_txn_id = burn->txn_id;
    env.txn_id = txn_id;
    env.client_time_ms = clock_wall_ms();
    env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    env.void_request = &body;
    size_t len = 0;
    uint8_t *bytes = wire_pack_envelope(&env, &len);
    pending_t *p = bytes != NULL ? pending_new(&env, bytes, len) : NULL;
    if (p == NULL)
        free(bytes);
    wire_envelope_free(burn);
    return p;
}

/* Replace a burn that may have reached the broker by its void, durably. */
static void reverse_burn(agent_t *a, pending_t *burn)
{
    pending_t *rev = burn->attempts > 0 ? reversal_of(burn->envelope, burn->envelope_len) : NULL;
    burn->reverse_pending = true; /* until the void is durably queued: never resend the burn */
    if (rev == NULL && burn->attempts > 0) {
        log_error("cannot build the reversal of burn %s; will try again", burn->txn_id);
        return;
    }
    a->op_count = 0;
    add_op(a, OUTBOX_OP_DELETE, burn->outbox_seq, burn, NULL, 0);
    if (rev != NULL) {
        rev->outbox_seq = outbox_next_seq(a->store);
        add_op(a, OUTBOX_OP_PUT, rev->outbox_seq, rev, NULL, 0);
        add_op(a, OUTBOX_OP_REVERSED, 0, burn, NULL, 0);
        a->ops[a->op_count - 1].txn_id = burn->txn_id;
    }
    int rc = outbox_apply(a->store, a->ops, a->op_count);
    if (rc != CL_OK) {
        log_error("cannot queue the reversal of burn %s: %s; will try again", burn->txn_id,
                  cl_strerror(rc));
        free(rev != NULL ? rev->envelope : NULL);
        free(rev);
        return;
    }
    if (rev != NULL) {
        log_info("burn %s unanswered; queued reversal %s", burn->txn_id, rev->txn_id);
        queue_append(a, rev);
    }
    queue_remove(a, burn);
}

/* ---- timers and sending ------------------------------------------------------------ */

static void check_timers(agent_t *a, int64_t now)
{
    pending_t *next = NULL;
    for (pending_t *p = a->head; p != NULL; p = next) {
        next = p->next;
        if (p->reverse_pending) {
            reverse_burn(a, p);
            continue;
        }
        if (p->sent_ms != 0 && now - p->sent_ms >= a->opts->retry_ms) {
            p->sent_ms = 0; /* resend with the same txn id */
            a->in_flight--;
        }
        if (!p->till_waiting || now < p->till_deadline_ms)
            continue;
        till_timeout_reply(a, p);
        if (p->kind == COALITION__ENVELOPE__BODY_BURN)
            reverse_burn(a, p);
        else if (p->kind == COALITION__ENVELOPE__BODY_BALANCE)
            queue_remove(a, p);
    }
}

static void send_ready(agent_t *a, int64_t now)
{
    for (pending_t *p = a->head; p != NULL && a->in_flight < (size_t)a->opts->window; p = p->next) {
        if (p->sent_ms != 0 || p->reverse_pending)
            continue;
        if (p->not_before_ms > now)
            break; /* backing off after a 96: later requests must not overtake it */
        if (zmq_send(a->broker, p->envelope, p->envelope_len, ZMQ_DONTWAIT) < 0)
            break; /* no live connection (ZMQ_IMMEDIATE) or queue full: try next tick */
        p->sent_ms = now;
        p->attempts++;
        a->in_flight++;
    }
}

/* ---- start and stop ---------------------------------------------------------------- */

/* Requests left in the outbox by an earlier run: resend them, except burns, whose till
 * never got an approval: those are reversed. */
static int load_entry(uint64_t seq, const uint8_t *bytes, size_t len, void *ctx)
{
    agent_t *a = ctx;
    envelope_t *env = wire_envelope_decode(bytes, len);
    if (env == NULL) {
        log_error("outbox entry %llu is unreadable; left in place", (unsigned long long)seq);
        return CL_OK;
    }
    uint8_t *copy = malloc(len);
    pending_t *p = copy != NULL ? pending_new(env, copy, len) : NULL;
    wire_envelope_free(env);
    if (p == NULL) {
        free(copy);
        return CL_ERR_NOMEM;
    }
    memcpy(copy, bytes, len);
    p->outbox_seq = seq;
    p->attempts = 1; /* it may have reached the broker before the restart */
    queue_append(a, p);
    return CL_OK;
}

static int load_outbox(agent_t *a)
{
    int rc = outbox_foreach(a->store, load_entry, a);
    if (rc != CL_OK)
        return rc;
    pending_t *next = NULL;
    for (pending_t *p = a->head; p != NULL; p = next) {
        next = p->next;
        if (p->kind == COALITION__ENVELOPE__BODY_BURN)
            reverse_burn(a, p);
    }
    if (a->pending_count > 0)
        log_info("resuming %zu request(s) from the outbox", a->pending_count);
    return CL_OK;
}

static int set_int(void *sock, int option, int value)
{
    return zmq_setsockopt(sock, option, &value, sizeof value);
}

static int open_sockets(agent_t *a)
{
    const agent_options_t *o = a->opts;
    a->ctx = zmq_ctx_new();
    if (a->ctx == NULL)
        return CL_ERR_ZMQ;
    a->tills = zmq_socket(a->ctx, ZMQ_ROUTER);
    a->broker = zmq_socket(a->ctx, ZMQ_DEALER);
    if (a->tills == NULL || a->broker == NULL)
        return CL_ERR_ZMQ;
    int64_t max_bytes = WIRE_MESSAGE_BYTES_MAX;
    if (set_int(a->tills, ZMQ_LINGER, 0) || set_int(a->tills, ZMQ_ROUTER_MANDATORY, 1) ||
        set_int(a->tills, ZMQ_SNDHWM, SOCKET_HWM) || set_int(a->tills, ZMQ_RCVHWM, SOCKET_HWM) ||
        zmq_setsockopt(a->tills, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes) ||
        zmq_bind(a->tills, o->listen_endpoint) != 0) {
        log_error("cannot listen on %s: %s", o->listen_endpoint, zmq_strerror(zmq_errno()));
        return CL_ERR_ZMQ;
    }
    /* IMMEDIATE: sends fail while no connection is up, so nothing queues blindly. */
    if (set_int(a->broker, ZMQ_LINGER, 0) || set_int(a->broker, ZMQ_IMMEDIATE, 1) ||
        set_int(a->broker, ZMQ_SNDHWM, SOCKET_HWM) || set_int(a->broker, ZMQ_RCVHWM, SOCKET_HWM) ||
        set_int(a->broker, ZMQ_RECONNECT_IVL, RECONNECT_IVL_MS) ||
        set_int(a->broker, ZMQ_RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS) ||
        set_int(a->broker, ZMQ_HEARTBEAT_IVL, o->heartbeat_ms) ||
        set_int(a->broker, ZMQ_HEARTBEAT_TIMEOUT, 3 * o->heartbeat_ms) ||
        set_int(a->broker, ZMQ_HEARTBEAT_TTL, 3 * o->heartbeat_ms) ||
        zmq_connect(a->broker, o->broker_endpoint) != 0) {
        log_error("cannot connect to %s: %s", o->broker_endpoint, zmq_strerror(zmq_errno()));
        return CL_ERR_ZMQ;
    }
    return CL_OK;
}

/* On stop: every till still waiting gets its timeout answer; the outbox keeps the rest. */
static void close_agent(agent_t *a)
{
    while (a->head != NULL) {
        pending_t *p = a->head;
        if (p->till_waiting)
            till_timeout_reply(a, p);
        queue_remove(a, p);
    }
    if (a->tills != NULL)
        zmq_close(a->tills);
    if (a->broker != NULL)
        zmq_close(a->broker);
    if (a->ctx != NULL)
        zmq_ctx_term(a->ctx);
    outbox_destroy(&a->store);
}

int agent_run(const agent_options_t *opts, int stop_fd)
{
    agent_t a;
    memset(&a, 0, sizeof a);
    a.opts = opts;
    int rc = outbox_open(&a.store, opts->data_dir, 0);
    if (rc == CL_OK)
        rc = load_outbox(&a);
    if (rc == CL_OK)
        rc = open_sockets(&a);
    if (rc == CL_OK)
        log_info("ready: partner %s, tills on %s, broker %s", opts->partner_id,
                 opts->listen_endpoint, opts->broker_endpoint);
    bool stop = false;
    while (rc == CL_OK && !stop) {
        short intake = a.pending_count < AGENT_PENDING_MAX ? ZMQ_POLLIN : 0;
        zmq_pollitem_t items[] = {
            {a.tills, 0, intake, 0}, {a.broker, 0, ZMQ_POLLIN, 0}, {NULL, stop_fd, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 3, TICK_MS) < 0 && zmq_errno() != EINTR) {
            log_error("poll failed: %s", zmq_strerror(zmq_errno()));
            rc = CL_ERR_ZMQ;
            break;
        }
        int64_t now = clock_mono_ms();
        if (items[1].revents & ZMQ_POLLIN)
            take_replies(&a, now);
        if (items[0].revents & ZMQ_POLLIN)
            take_tills(&a, now);
        check_timers(&a, now);
        send_ready(&a, now);
        stop = (items[2].revents & ZMQ_POLLIN) && shutdown_requested(stop_fd);
    }
    close_agent(&a);
    return rc;
}
