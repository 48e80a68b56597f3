/* coalition-agent event loop. The request lifecycle is drawn in pending.h; every
 * transition is in the "lifecycle transitions" section below, with its durable write.
 * Invariants: a request that changes the ledger is in the outbox (synced) before it is
 * first sent; it leaves the outbox in the same transaction that journals the broker's
 * answer, and only then are its tills answered; one request per txn id; a reply is taken
 * only if it echoes the pending request's hash; a request is never sent before the
 * pending request it depends on (its original, its member's enrolment) is answered. */
#include "agent.h"

#include "agent_metrics.h"
#include "card.h"
#include "clock.h"
#include "digest.h"
#include "errors.h"
#include "log.h"
#include "monitor.h"
#include "outbox.h"
#include "pending.h"
#include "receipt.h"
#include "router.h"
#include "service.h"
#include "shutdown.h"
#include "till_check.h"
#include "wire.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define TICK_MS 20
#define INTAKE_MAX 256
#define REPLIES_MAX 256
/* Ops of one durable write: a reply needs at most journal, delete, and for a void that
 * settles an unsaved revocation, delete of the burn and its reversed mark. */
#define OPS_PER_REPLY_MAX 4
#define OPS_MAX (OPS_PER_REPLY_MAX * REPLIES_MAX)
#define SOCKET_HWM 100000
#define RECONNECT_IVL_MS 100
#define RECONNECT_IVL_MAX_MS 2000
#define REVERSAL_HASH_HEX 30
/* Resends back off exponentially from --retry-ms, with jitter, up to this cap. */
#define RESEND_SHIFT_MAX 5
#define RESEND_DELAY_MAX_MS 30000
/* A revocation that could not be written is tried again this often. */
#define SAVE_RETRY_MS 1000
#define KEY_BUCKETS ((size_t)1 << 19)
/* Every request may have a void beside it while its burn's revocation is unsaved. */
#define TIMERS_MAX (2 * (size_t)AGENT_PENDING_MAX)
#define PRUNE_INTERVAL_MS 60000
#define PRUNE_SLICE_MAX 1000
#define LOG_REPEAT_MS 5000
#define MONITOR_ENDPOINT "inproc://coalition-agent-monitor"
#define MONITOR_EVENTS_PER_PASS 16
#define MS_PER_DAY INT64_C(86400000)

_Static_assert(OPS_MAX >= INTAKE_MAX, "one intake pass is one durable write");
_Static_assert(2 + REVERSAL_HASH_HEX <= TXN_ID_LEN_MAX, "a reversal's txn id is a valid txn id");
_Static_assert(REVERSAL_HASH_HEX / 2 <= WIRE_HASH_BYTES, "reversal ids come from one hash");
_Static_assert(KEY_BUCKETS >= AGENT_PENDING_MAX, "the key map stays short-chained at capacity");
_Static_assert(AGENT_WINDOW_MAX <= AGENT_PENDING_MAX, "the window is part of what is held");

typedef struct agent {
    const agent_options_t *opts;
    void *ctx, *tills, *broker;
    outbox_t *store;
    pending_map_t *by_txn, *by_enrol;
    pending_heap_t *timers;
    pending_t *q_head, *q_tail; /* send queue: QUEUED requests, oldest first */
    size_t pending_count, in_flight;
    outbox_op_t ops[OPS_MAX];
    size_t op_count;
    uint64_t rng;
    int64_t next_prune_ms;
    /* Failures that can repeat per tick or per message log at most once per interval. */
    log_every_t log_write, log_match, log_retry, log_refused, log_dropped;
    void *monitor;           /* handshake events of the broker connection */
    bool key_refused;        /* the broker's ZAP refused this agent's key at the last handshake */
    bool connected;          /* a connection to the broker finished its handshake, and is up */
    receipt_locale_t locale; /* of the texts the agent writes: its latest answer's (en) */
} agent_t;

static pending_t *reversal_of(agent_t *a, const pending_t *burn);

/* A broker answer that is not final (answer_is_final), handled after the pass. */
typedef struct not_final {
    char txn_id[TXN_ID_LEN_MAX + 1];
    int code;
} not_final_t;
static void forget(agent_t *a, pending_t *p);
static void reversal_txn_id(const char *burn_txn, char out[TXN_ID_LEN_MAX + 1]);

static uint64_t next_random(agent_t *a)
{
    a->rng ^= a->rng << 13; /* xorshift64: jitter only, not security */
    a->rng ^= a->rng >> 7;
    a->rng ^= a->rng << 17;
    return a->rng;
}

static pending_t *pending_of(const map_link_t *link, size_t offset)
{
    return link == NULL ? NULL : (pending_t *)(void *)((char *)link - offset);
}

static pending_t *find_txn(const agent_t *a, const char *txn_id)
{
    return pending_of(pending_map_get(a->by_txn, txn_id), offsetof(pending_t, by_txn));
}

static pending_t *find_enrol(const agent_t *a, const char *member_id)
{
    return pending_of(pending_map_get(a->by_enrol, member_id), offsetof(pending_t, by_enrol));
}

/* ---- send queue and timers --------------------------------------------------------- */

static void sendq_push(agent_t *a, pending_t *p, bool front)
{
    p->q_prev = front ? NULL : a->q_tail;
    p->q_next = front ? a->q_head : NULL;
    if (p->q_prev != NULL)
        p->q_prev->q_next = p;
    else
        a->q_head = p;
    if (p->q_next != NULL)
        p->q_next->q_prev = p;
    else
        a->q_tail = p;
}

static void sendq_remove(agent_t *a, pending_t *p)
{
    if (p->q_prev != NULL)
        p->q_prev->q_next = p->q_next;
    else
        a->q_head = p->q_next;
    if (p->q_next != NULL)
        p->q_next->q_prev = p->q_prev;
    else
        a->q_tail = p->q_prev;
    p->q_prev = p->q_next = NULL;
}

/* The next moment something must happen to `p`: a till's deadline, a resend, a retry. */
static void reschedule(agent_t *a, pending_t *p)
{
    assert(p->state < PENDING_STATE_COUNT);
    int64_t due = pending_first_deadline(p);
    if ((p->state == PENDING_IN_FLIGHT || p->state == PENDING_BACKOFF) && p->resend_ms < due)
        due = p->resend_ms;
    if (p->state == PENDING_REVOKED && !p->saved && p->save_ms < due)
        due = p->save_ms;
    /* Capacity is TIMERS_MAX, the most requests that can be held at once. */
    int rc = pending_heap_schedule(a->timers, p, due);
    assert(rc == CL_OK);
    (void)rc;
}

static int64_t resend_delay_ms(agent_t *a, unsigned attempts)
{
    _Static_assert(RESEND_SHIFT_MAX < 31, "the shifted retry interval fits in int64");
    assert(a->opts->retry_ms > 0);
    unsigned shift = attempts > 0 ? attempts - 1 : 0;
    int64_t base = (int64_t)a->opts->retry_ms
                   << (shift < RESEND_SHIFT_MAX ? shift : RESEND_SHIFT_MAX);
    if (base > RESEND_DELAY_MAX_MS)
        base = RESEND_DELAY_MAX_MS;
    return base / 2 + (int64_t)(next_random(a) % (uint64_t)(base / 2 + 1));
}

/* ---- replies to tills -------------------------------------------------------------- */

static void till_decline(agent_t *a, const peer_t *peer, const envelope_t *env, int code,
                         const char *why)
{
    agent_metrics_answer(env != NULL ? (int)env->body_case : 0, code, false);
    router_decline(a->tills, peer, env, NULL, code, why);
}

/* Not an answer yet: the request under this key is pending and its outcome unknown. */
static void till_pending(agent_t *a, const peer_t *peer, const envelope_t *env, const char *why)
{
    char text[RECEIPT_TEXT_BYTES_MAX + 16];
    authorization_t auth;
    snprintf(text, sizeof text, "Pending: %s", why);
    text[RECEIPT_TEXT_BYTES_MAX - 1] = '\0';
    wire_auth_decline(&auth, env, RC_UNAVAILABLE, text);
    auth.pending = true;
    agent_metrics_answer((int)env->body_case, RC_UNAVAILABLE, false);
    router_reply_auth(a->tills, peer, &auth);
}

/* A till's deadline passed: stored offline (store and forward kinds) or 91. */
static void till_timeout_reply(agent_t *a, const pending_t *p, const waiter_t *w)
{
    envelope_t *env = wire_envelope_decode(p->envelope, p->envelope_len);
    authorization_t auth;
    char text[RECEIPT_TEXT_BYTES_MAX], cause[RECEIPT_TEXT_BYTES_MAX],
        reason[RECEIPT_TEXT_BYTES_MAX], card[RECEIPT_TEXT_BYTES_MAX] = "";
    receipt_render(a->locale, a->key_refused ? MSG_CAUSE_KEY_REFUSED : MSG_CAUSE_UNREACHABLE, NULL,
                   0, cause, sizeof cause);
    const char *args[] = {cause, card}, *declined[] = {"91", reason};
    if (pending_stored_offline(p) && p->by_card) {
        receipt_render(a->locale, MSG_AGENT_PENDING_CARD, args, 1, text, sizeof text);
        wire_auth_decline(&auth, env, RC_UNAVAILABLE, text);
        auth.pending = true;
    } else if (pending_stored_offline(p)) {
        receipt_render(a->locale, MSG_AGENT_OFFLINE, args, 1, text, sizeof text);
        wire_auth_decline(&auth, env, RC_UNAVAILABLE, text);
        auth.offline = true;
        auth.pending = true;
    } else {
        if (p->by_card)
            receipt_render(a->locale, MSG_AGENT_CARD_ONLINE, NULL, 0, card, sizeof card);
        receipt_render(a->locale, MSG_AGENT_NOT_APPLIED, args, 2, reason, sizeof reason);
        receipt_render(a->locale, MSG_DECLINED, declined, 2, text, sizeof text);
        wire_auth_decline(&auth, env, RC_UNAVAILABLE, text);
    }
    agent_metrics_answer((int)p->kind, RC_UNAVAILABLE, auth.offline);
    if (a->locale != RECEIPT_EN)
        auth.locale = (char *)receipt_locale_code(a->locale);
    router_reply_auth(a->tills, &w->till, &auth);
    wire_envelope_free(env);
}

/* A repeat of a key answered before, and the broker cannot be asked now: its tills get
 * the journaled answer, marked replay, and the request is done. */
static void answer_from_journal(agent_t *a, pending_t *p)
{
    assert(p->known_reply != NULL && p->outbox_seq == 0 && p->state != PENDING_REVOKED);
    /* A request by card is answered from the journal by the broker only: the journal knows
     * the card by its masked form, which another card may share. */
    authorization_t *auth =
        p->by_card ? NULL : wire_auth_decode(p->known_reply, p->known_reply_len);
    envelope_t *env = p->by_card ? wire_envelope_decode(p->envelope, p->envelope_len) : NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (auth != NULL) {
        auth->replay = true;
        bytes = wire_pack_auth(auth, &len);
    }
    for (size_t i = 0; i < p->waiter_count; i++) {
        if (bytes != NULL) {
            agent_metrics_answer((int)p->kind, auth->code, false);
            router_reply(a->tills, &p->waiters[i].till, bytes, len);
        } else if (env != NULL)
            till_pending(a, &p->waiters[i].till, env,
                         "the clearinghouse cannot confirm this card request now; ask again");
        else
            till_timeout_reply(a, p, &p->waiters[i]);
    }
    wire_envelope_free(env);
    p->waiter_count = 0;
    free(bytes);
    wire_auth_free(auth);
    forget(a, p);
}

static void tell_every_waiter_timeout(agent_t *a, pending_t *p)
{
    for (size_t i = 0; i < p->waiter_count; i++)
        till_timeout_reply(a, p, &p->waiters[i]);
    p->waiter_count = 0;
}

/* ---- durable writes ---------------------------------------------------------------- */

static outbox_op_t *add_op(agent_t *a, outbox_op_kind_t kind, uint64_t seq, const pending_t *p)
{
    assert(a->op_count < OPS_MAX);
    outbox_op_t *op = &a->ops[a->op_count++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->seq = seq;
    op->envelope = p->envelope;
    op->envelope_len = p->envelope_len;
    op->time_ms = clock_wall_ms();
    return op;
}

/* The revocation of `burn`: its record leaves the outbox, its void enters, and its txn
 * id is remembered as reversed, in one synced transaction. */
static void add_revocation_ops(agent_t *a, pending_t *burn, pending_t *rev, bool put_void)
{
    if (burn->outbox_seq != 0)
        add_op(a, OUTBOX_OP_DELETE, burn->outbox_seq, burn);
    if (put_void)
        add_op(a, OUTBOX_OP_PUT, rev->outbox_seq, rev);
    add_op(a, OUTBOX_OP_REVERSED, 0, burn)->txn_id = burn->txn_id;
}

static int write_ops(agent_t *a, const char *what)
{
    int rc = a->op_count > 0 ? outbox_apply(a->store, a->ops, a->op_count) : CL_OK;
    a->op_count = 0;
    if (rc != CL_OK)
        log_every(&a->log_write, LOG_REPEAT_MS, LOG_ERROR, "outbox write failed (%s): %s", what,
                  cl_strerror(rc));
    return rc;
}

/* ---- lifecycle transitions (see pending.h) ----------------------------------------- */

static void unlink_dependency(pending_t *p)
{
    assert(p->blocked_on != NULL && p->state == PENDING_BLOCKED);
    pending_t **at = &p->blocked_on->dependents;
    while (*at != p)
        at = &(*at)->dep_next;
    *at = p->dep_next;
    p->dep_next = NULL;
    p->blocked_on = NULL;
}

/* What a fresh or released request must wait for: the pending original it reverses, or
 * the pending enrolment of its member. */
static pending_t *dependency_of(const agent_t *a, const pending_t *p)
{
    pending_t *dep = p->original_txn_id[0] != '\0' ? find_txn(a, p->original_txn_id) : NULL;
    if (dep != NULL && dep->state != PENDING_REVOKED)
        return dep;
    /* A till's reversal of a burn the agent revoked waits for the agent's own void. */
    char void_txn[TXN_ID_LEN_MAX + 1];
    if (p->original_txn_id[0] != '\0' && p->revokes == NULL) {
        reversal_txn_id(p->original_txn_id, void_txn);
        dep = find_txn(a, void_txn);
        if (dep != NULL && dep != p)
            return dep;
    }
    if (p->kind == COALITION__ENVELOPE__BODY_ENROLL || p->member_id[0] == '\0')
        return NULL;
    return find_enrol(a, p->member_id);
}

/* QUEUED or BLOCKED, whichever its dependencies allow. */
static void place(agent_t *a, pending_t *p)
{
    assert(p->state == PENDING_QUEUED || p->state == PENDING_BLOCKED);
    pending_t *dep = dependency_of(a, p);
    if (dep != NULL) {
        assert(dep != p);
        p->blocked_on = dep;
        p->dep_next = dep->dependents;
        dep->dependents = p;
        if (p->state == PENDING_QUEUED)
            pending_set_state(p, PENDING_BLOCKED);
        return;
    }
    if (p->state == PENDING_BLOCKED)
        pending_set_state(p, PENDING_QUEUED);
    sendq_push(a, p, p->attempts > 0 || p->revokes != NULL); /* resends and voids first */
}

static void release_dependents(agent_t *a, pending_t *p)
{
    while (p->dependents != NULL) {
        pending_t *d = p->dependents;
        assert(d->blocked_on == p);
        unlink_dependency(d);
        place(a, d);
        assert(d->blocked_on != p); /* p is out of the index or revoked: never again */
    }
}

/* Out of every index and freed. Its tills have been answered. */
static void forget(agent_t *a, pending_t *p)
{
    assert(p->waiter_count == 0);
    pending_map_remove(a->by_txn, &p->by_txn); /* first: its dependents must not find it */
    if (find_enrol(a, p->member_id) == p)
        pending_map_remove(a->by_enrol, &p->by_enrol);
    release_dependents(a, p);
    if (p->state == PENDING_QUEUED)
        sendq_remove(a, p);
    if (p->state == PENDING_IN_FLIGHT)
        a->in_flight--;
    if (p->state == PENDING_BLOCKED)
        unlink_dependency(p);
    if (p->revokes != NULL)
        p->revokes->revoked_by = NULL;
    if (p->revoked_by != NULL)
        p->revoked_by->revokes = NULL;
    pending_heap_schedule(a->timers, p, INT64_MAX);
    assert(p->dependents == NULL && find_txn(a, p->txn_id) != p);
    a->pending_count--;
    pending_free(&p);
}

static void to_in_flight(agent_t *a, pending_t *p, int64_t now)
{
    assert(p->state == PENDING_QUEUED && a->in_flight < (size_t)a->opts->window);
    sendq_remove(a, p);
    pending_set_state(p, PENDING_IN_FLIGHT);
    p->attempts++;
    p->resend_ms = now + resend_delay_ms(a, p->attempts);
    a->in_flight++;
    reschedule(a, p);
}

/* No answer in time: back into the queue, ahead of requests never sent. */
static void resend_due(agent_t *a, pending_t *p)
{
    assert(p->state == PENDING_IN_FLIGHT || p->state == PENDING_BACKOFF);
    if (p->state == PENDING_IN_FLIGHT)
        a->in_flight--;
    pending_set_state(p, PENDING_QUEUED);
    sendq_push(a, p, true);
}

/* The broker answered 96 (not applied, not remembered) and no till waits: try later. */
static void to_backoff(agent_t *a, pending_t *p, int64_t now)
{
    assert(p->waiter_count == 0 && pending_stored_offline(p));
    a->in_flight -= p->state == PENDING_IN_FLIGHT;
    if (p->state == PENDING_QUEUED)
        sendq_remove(a, p);
    pending_set_state(p, PENDING_BACKOFF);
    p->resend_ms = now + resend_delay_ms(a, p->attempts);
    reschedule(a, p);
}

/* Admit a new request under its key; the caller writes it to the outbox. */
static void admit_new(agent_t *a, pending_t *p)
{
    assert(p->state == PENDING_QUEUED && p->blocked_on == NULL && p->dependents == NULL);
    pending_map_put(a->by_txn, &p->by_txn);
    if (p->kind == COALITION__ENVELOPE__BODY_ENROLL && find_enrol(a, p->member_id) == NULL)
        pending_map_put(a->by_enrol, &p->by_enrol);
    a->pending_count++;
    place(a, p);
    reschedule(a, p);
}

/* Write the revocation of a REVOKED burn: its outbox record out, its void in (if it was
 * ever sent), its txn id remembered as reversed. Until that is written the burn stays in
 * memory (and in the outbox: the reservation) and the write is retried. */
static void save_revocation(agent_t *a, pending_t *burn, int64_t now)
{
    assert(burn->state == PENDING_REVOKED && !burn->saved && a->op_count == 0);
    assert(burn->revoked_by == NULL || burn->revoked_by->revokes == burn);
    pending_t *rev = burn->revoked_by;
    bool put_void = rev != NULL && rev->outbox_seq == 0;
    if (put_void)
        rev->outbox_seq = outbox_next_seq(a->store);
    add_revocation_ops(a, burn, rev, put_void);
    if (write_ops(a, "revocation") != CL_OK) {
        if (put_void)
            rev->outbox_seq = 0;
        burn->save_ms = now + SAVE_RETRY_MS;
        reschedule(a, burn);
        return;
    }
    burn->saved = true;
    forget(a, burn); /* the durable reversed mark declines repeats from now on */
}

/* A burn its tills were told failed (91). It is never sent again, and its txn id is
 * remembered as reversed. If it may have reached the broker, its void is queued and sent
 * at once, whether or not the disk takes the revocation yet. Until the revocation is
 * written the burn stays here, REVOKED, and repeats of its txn id are declined 12. */
static void revoke_burn(agent_t *a, pending_t *burn, int64_t now, bool may_be_applied)
{
    assert(pending_revocable(burn) && burn->state != PENDING_REVOKED);
    assert(!may_be_applied || burn->attempts > 0);
    tell_every_waiter_timeout(a, burn);
    pending_t *rev = may_be_applied ? reversal_of(a, burn) : NULL;
    if (burn->state == PENDING_QUEUED)
        sendq_remove(a, burn);
    a->in_flight -= burn->state == PENDING_IN_FLIGHT;
    if (burn->state == PENDING_BLOCKED)
        unlink_dependency(burn);
    pending_set_state(burn, PENDING_REVOKED);
    assert(burn->waiter_count == 0 && burn->q_prev == NULL && burn->blocked_on == NULL);
    if (may_be_applied && rev == NULL) {
        log_error("cannot build the reversal of burn %s; it stays in the outbox and is "
                  "reversed at the next start",
                  burn->txn_id);
        burn->saved = true; /* keeps its outbox record: the reservation for the void */
        release_dependents(a, burn);
        return;
    }
    if (rev != NULL) {
        rev->revokes = burn;
        burn->revoked_by = rev;
        admit_new(a, rev);
        log_info("burn %s unanswered; tills told 91; reversal %s queued", burn->txn_id,
                 rev->txn_id);
    }
    release_dependents(a, burn); /* a till's reversal of it now waits for the void */
    save_revocation(a, burn, now);
}

/* An inquiry, or a card earn never sent: its tills were told 91. A card earn leaves the
 * outbox (if the delete fails, a restart sends it without its card number and the broker
 * declines it 12: nothing is applied either way). */
static void drop_unsent(agent_t *a, pending_t *p)
{
    assert(p->attempts == 0 || p->kind == COALITION__ENVELOPE__BODY_BALANCE);
    if (p->outbox_seq != 0) {
        add_op(a, OUTBOX_OP_DELETE, p->outbox_seq, p);
        (void)write_ops(a, "unsent card earn");
    }
    forget(a, p);
}

/* Tills whose deadline passed: offline for store-and-forward kinds; a burn is revoked
 * (every waiter settled); an inquiry is given up. Returns false if `p` is gone. */
static bool deadlines_due(agent_t *a, pending_t *p, int64_t now)
{
    if (pending_first_deadline(p) > now)
        return true;
    if (p->known_reply != NULL) {
        answer_from_journal(a, p);
        return false;
    }
    if (pending_revocable(p)) {
        revoke_burn(a, p, now, p->attempts > 0);
        return false;
    }
    if (!pending_stored_offline(p)) {
        tell_every_waiter_timeout(a, p);
        drop_unsent(a, p);
        return false;
    }
    size_t kept = 0;
    for (size_t i = 0; i < p->waiter_count; i++) {
        if (p->waiters[i].deadline_ms <= now)
            till_timeout_reply(a, p, &p->waiters[i]);
        else
            p->waiters[kept++] = p->waiters[i];
    }
    p->waiter_count = kept;
    return true;
}

static void timer_due(agent_t *a, pending_t *p, int64_t now)
{
    assert(p->heap_index == PENDING_NOT_IN_HEAP); /* popped: due now */
    if (!deadlines_due(a, p, now))
        return;
    if (p->state == PENDING_REVOKED && !p->saved && p->save_ms <= now) {
        save_revocation(a, p, now);
        return;
    }
    if ((p->state == PENDING_IN_FLIGHT || p->state == PENDING_BACKOFF) && p->resend_ms <= now)
        resend_due(a, p);
    reschedule(a, p);
}

/* ---- reversals of burns the till was told failed ----------------------------------- */

/* The txn id of the agent's void of burn `burn_txn`: "~v<hash of it>", the same every
 * time (so a restart or a till's reversal finds it). */
static void reversal_txn_id(const char *burn_txn, char out[TXN_ID_LEN_MAX + 1])
{
    uint8_t digest[WIRE_HASH_BYTES];
    const void *parts[] = {burn_txn};
    const size_t lens[] = {strlen(burn_txn)};
    if (digest_sha256(parts, lens, 1, digest) != CL_OK)
        memset(digest, 0, sizeof digest); /* SHA-256 over a short string does not fail */
    out[0] = AGENT_TXN_PREFIX;
    out[1] = 'v';
    for (int i = 0; i < REVERSAL_HASH_HEX / 2; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", digest[i]);
    assert(strlen(out) == 2 + REVERSAL_HASH_HEX && wire_id_valid(out, TXN_ID_LEN_MAX));
}

/* A void of `burn` under reversal_txn_id(). NULL when out of memory. */
static pending_t *reversal_of(agent_t *a, const pending_t *burn)
{
    envelope_t *env = wire_envelope_decode(burn->envelope, burn->envelope_len);
    if (env == NULL)
        return NULL;
    char txn_id[TXN_ID_LEN_MAX + 1];
    reversal_txn_id(env->txn_id, txn_id);
    envelope_t v = *env;
    Coalition__VoidRequest body = COALITION__VOID_REQUEST__INIT;
    body.original_txn_id = env->txn_id;
    v.txn_id = txn_id;
    v.client_time_ms = clock_wall_ms();
    v.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    v.void_request = &body;
    size_t len = 0;
    uint8_t *bytes = wire_pack_envelope(&v, &len);
    pending_t *p = bytes != NULL ? pending_new(&v, a->opts->site_id, bytes, len) : NULL;
    if (p == NULL)
        free(bytes);
    wire_envelope_free(env);
    /* Its original_txn_id dependency is the burn itself: revoked, so never waited on. */
    return p;
}

/* ---- intake from tills ------------------------------------------------------------- */

/* The request hash leaves card numbers out (a card is hashed by its masked form): a
 * repeat joins a pending card request only with the same number, compared in memory. A
 * pending loaded after a restart holds no number: nothing to compare, as the broker. */
static bool same_card(const pending_t *p, const envelope_t *env)
{
    assert(p != NULL && env != NULL && (p->secret == NULL || p->by_card));
    if (p->secret == NULL || !wire_has_pan(env))
        return true;
    envelope_t *mine = wire_envelope_decode(p->secret, p->secret_len);
    const Coalition__Card *a[2], *b[2];
    size_t na = mine != NULL ? wire_cards_of(mine, a) : 0, nb = wire_cards_of(env, b);
    bool same = mine != NULL && na == nb;
    for (size_t i = 0; same && i < na; i++)
        same = strcmp(a[i]->pan, b[i]->pan) == 0;
    if (mine != NULL)
        wire_clear_pans(mine);
    wire_envelope_free(mine);
    return same;
}

/* A request under a key already pending: joins it when it is the same request. */
static int join(agent_t *a, pending_t *p, const envelope_t *env, const peer_t *peer, int64_t now,
                char *why, size_t why_size)
{
    uint8_t hash[WIRE_HASH_BYTES];
    if (wire_request_hash(env, hash) != CL_OK || memcmp(hash, p->hash, WIRE_HASH_BYTES) != 0 ||
        !same_card(p, env)) {
        snprintf(why, why_size, "txn id %s is pending with another request", env->txn_id);
        return RC_DUPLICATE_KEY;
    }
    if (p->state == PENDING_REVOKED) {
        snprintf(why, why_size,
                 "burn %s was reversed after the clearinghouse did not answer; use a new txn id",
                 env->txn_id);
        return RC_INVALID_TRANSACTION;
    }
    if (!pending_add_waiter(p, peer, now + a->opts->till_wait_ms)) {
        snprintf(why, why_size, "txn id %s is pending with %d tills waiting; ask again later",
                 env->txn_id, PENDING_WAITERS_MAX);
        return RC_UNAVAILABLE; /* sent with `pending` set: the outcome is not known yet */
    }
    reschedule(a, p);
    assert(p->waiter_count > 0 && p->heap_index != PENDING_NOT_IN_HEAP);
    return RC_APPROVED;
}

/* Whether a journaled answer is the answer to this very request (same hash). */
static bool answers_this(const uint8_t *auth_bytes, size_t len, const envelope_t *env)
{
    uint8_t hash[WIRE_HASH_BYTES];
    authorization_t *auth = wire_auth_decode(auth_bytes, len);
    bool same = auth != NULL && auth->request_hash.len == WIRE_HASH_BYTES &&
                wire_request_hash(env, hash) == CL_OK &&
                memcmp(auth->request_hash.data, hash, WIRE_HASH_BYTES) == 0;
    wire_auth_free(auth);
    return same;
}

/* A new request: NULL after answering the till, or a pending not yet admitted. A repeat
 * of a key answered before (in the journal) carries that answer; another request under
 * such a key is declined 94 here, as the broker would. */
static pending_t *fresh(agent_t *a, envelope_t *env, const peer_t *peer, int64_t now, char *why,
                        size_t why_size, int *code)
{
    bool reversed = false;
    if (env->body_case == COALITION__ENVELOPE__BODY_BURN &&
        outbox_was_reversed(a->store, env->txn_id, &reversed) == CL_OK && reversed) {
        snprintf(why, why_size,
                 "burn %s was reversed after the clearinghouse did not answer; use a new txn id",
                 env->txn_id);
        *code = RC_INVALID_TRANSACTION;
        return NULL;
    }
    if (a->pending_count >= AGENT_PENDING_MAX) {
        snprintf(why, why_size, "agent outbox full");
        *code = RC_UNAVAILABLE;
        return NULL;
    }
    uint8_t *known = NULL;
    size_t known_len = 0;
    if (outbox_answer_of(a->store, env->txn_id, &known, &known_len) == CL_OK &&
        !answers_this(known, known_len, env)) {
        free(known);
        snprintf(why, why_size, "txn id %s was already used for another request", env->txn_id);
        *code = RC_DUPLICATE_KEY;
        return NULL;
    }
    size_t len = 0, secret_len = 0;
    uint8_t *secret = wire_has_pan(env) ? wire_pack_envelope(env, &secret_len) : NULL;
    bool secret_ok = secret != NULL || !wire_has_pan(env);
    wire_clear_pans(env); /* stored and journaled without it */
    uint8_t *bytes = secret_ok ? wire_pack_envelope(env, &len) : NULL;
    pending_t *p = bytes != NULL ? pending_new(env, a->opts->site_id, bytes, len) : NULL;
    if (p != NULL) {
        assert(p->by_card == (secret != NULL) || secret == NULL);
        p->secret = secret;
        p->secret_len = secret_len;
    }
    if (p == NULL) {
        pan_clear(secret, secret_len);
        free(secret);
        free(bytes);
        free(known);
        snprintf(why, why_size, "agent out of memory");
        *code = RC_SYSTEM_ERROR;
        return NULL;
    }
    p->known_reply = known;
    p->known_reply_len = known_len;
    pending_add_waiter(p, peer, now + a->opts->till_wait_ms);
    *code = RC_APPROVED;
    return p;
}

/* Decode, check, then join a pending request or make a new one (returned, to be stored). */
static pending_t *admit(agent_t *a, const peer_t *peer, const void *data, size_t len, int64_t now)
{
    char why[RECEIPT_TEXT_BYTES_MAX];
    envelope_t *env = wire_envelope_decode(data, len);
    if (env == NULL) {
        till_decline(a, peer, NULL, RC_FORMAT_ERROR, "message is not a valid envelope");
        return NULL;
    }
    char *sent_partner_id = env->partner_id, *sent_site_id = env->site_id; /* env owns them */
    pending_t *p = NULL;
    int code = till_check_request(env, a->opts->partner_id, a->opts->site_id, why, sizeof why);
    if (code == RC_APPROVED) {
        pending_t *existing = find_txn(a, env->txn_id);
        if (existing != NULL)
            code = join(a, existing, env, peer, now, why, sizeof why);
        else
            p = fresh(a, env, peer, now, why, sizeof why, &code);
    }
    if (code == RC_UNAVAILABLE && p == NULL && find_txn(a, env->txn_id) != NULL)
        till_pending(a, peer, env, why);
    else if (code != RC_APPROVED)
        till_decline(a, peer, env, code, why);
    env->partner_id = sent_partner_id;
    env->site_id = sent_site_id;
    wire_clear_pans(env);
    wire_envelope_free(env);
    return p;
}

static void take_tills(agent_t *a, int64_t now)
{
    pending_t *batch[INTAKE_MAX];
    size_t n = 0;
    uint64_t seq = outbox_next_seq(a->store);
    assert(a->op_count == 0);
    for (size_t reads = 0; n < INTAKE_MAX && reads < 2 * INTAKE_MAX; reads++) {
        peer_t peer;
        zmq_msg_t payload;
        zmq_msg_init(&payload);
        int got = router_read(a->tills, &peer, &payload, &a->log_dropped);
        pending_t *p =
            got == 1 ? admit(a, &peer, zmq_msg_data(&payload), zmq_msg_size(&payload), now) : NULL;
        pan_clear(zmq_msg_data(&payload), zmq_msg_size(&payload)); /* a card number, maybe */
        zmq_msg_close(&payload);
        if (got == 0)
            break;
        if (p == NULL)
            continue;
        if (p->kind != COALITION__ENVELOPE__BODY_BALANCE && p->known_reply == NULL) {
            p->outbox_seq = seq++;
            add_op(a, OUTBOX_OP_PUT, p->outbox_seq, p);
        }
        admit_new(a, p); /* a later repeat in this same pass joins it */
        batch[n++] = p;
    }
    assert(n <= INTAKE_MAX && a->op_count <= n);
    if (write_ops(a, "intake") == CL_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        pending_t *p = batch[i];
        envelope_t *env = wire_envelope_decode(p->envelope, p->envelope_len);
        for (size_t w = 0; w < p->waiter_count; w++)
            till_decline(a, &p->waiters[w].till, env, RC_SYSTEM_ERROR,
                         "agent cannot store the request; nothing applied");
        wire_envelope_free(env);
        p->waiter_count = 0;
        forget(a, p);
    }
}

/* ---- replies from the broker ------------------------------------------------------- */

/* The pending request this reply answers: same txn id, site and request hash. */
static pending_t *match_reply(agent_t *a, const authorization_t *auth)
{
    pending_t *p = find_txn(a, auth->txn_id);
    if (p == NULL) {
        log_debug("reply for %s matches nothing pending (a duplicate)", auth->txn_id);
        return NULL;
    }
    if (auth->request_hash.len != WIRE_HASH_BYTES ||
        memcmp(auth->request_hash.data, p->hash, WIRE_HASH_BYTES) != 0 ||
        strcmp(auth->site_id, a->opts->site_id) != 0) {
        log_every(&a->log_match, LOG_REPEAT_MS, LOG_WARN,
                  "dropped a reply for %s that answers another request (hash or site differ)",
                  auth->txn_id);
        return NULL;
    }
    /* Only its void settles a revoked burn; a blocked request was not sent by this run. */
    return p->state == PENDING_REVOKED || p->state == PENDING_BLOCKED ? NULL : p;
}

typedef struct answer {
    pending_t *p;
    zmq_msg_t msg;
    int code;
} answer_t;

/* Journal the answer and clear the request (and a revocation it completes) from the
 * outbox, in one write. */
static void add_answer_ops(agent_t *a, answer_t *ans, uint64_t jseq)
{
    pending_t *p = ans->p;
    outbox_op_t *op = add_op(a, OUTBOX_OP_JOURNAL, jseq, p);
    op->auth = zmq_msg_data(&ans->msg);
    op->auth_len = zmq_msg_size(&ans->msg);
    /* Indexed under its txn id (repeats are answered from it) unless it is an inquiry, or a
     * 94: that answers a different request under the key, never the one the key holds. */
    authorization_t *auth = wire_auth_decode(op->auth, op->auth_len);
    bool other = auth == NULL || auth->code == RC_DUPLICATE_KEY;
    wire_auth_free(auth);
    op->txn_id = p->kind != COALITION__ENVELOPE__BODY_BALANCE && !other ? p->txn_id : NULL;
    if (p->outbox_seq != 0)
        add_op(a, OUTBOX_OP_DELETE, p->outbox_seq, p);
    if (p->revokes != NULL && !p->revokes->saved)
        add_revocation_ops(a, p->revokes, p, false);
}

/* Whether a broker answer is final. Not final, and never stored by the broker: 96 (it
 * could not record the request now), 91 (this partner is over its request rate; this
 * copy was not applied) and 57 (this agent's key is revoked or not recorded: the agent
 * stamps partner and site itself, so nothing else gives a 57; the request waits for a
 * key that works, and a till told "stored offline" is not let down). */
static bool answer_is_final(int code)
{
    return code != RC_SYSTEM_ERROR && code != RC_UNAVAILABLE && code != RC_NOT_PERMITTED;
}

/* The language of the partner's receipts, from an answer of the broker's rules: one that
 * names it, or a journaled one (seq > 0) that does not (English). Declines of the broker's
 * front end (format, rate) name none and teach nothing, and neither does a replay: it
 * names the language of the answer it repeats, which may be a contract ago. */
static bool learn_locale(agent_t *a, const authorization_t *auth)
{
    receipt_locale_t l = RECEIPT_EN;
    if ((auth->locale[0] == '\0' && auth->seq == 0) || auth->replay)
        return false;
    bool known = receipt_locale_parse(auth->locale, &l) == CL_OK;
    if (known)
        a->locale = l;
    assert(a->locale >= RECEIPT_EN && a->locale < RECEIPT_LOCALES);
    return known;
}

/* Read one reply; true when it answers a pending request (kept in ans->msg). An answer
 * that is not final is noted in `errors` (txn id and code) and handled once this pass's
 * answers are written. */
static bool read_reply(agent_t *a, answer_t *ans, const answer_t *taken, size_t n,
                       not_final_t *errors, size_t *error_count, bool *more)
{
    zmq_msg_init(&ans->msg);
    *more = zmq_msg_recv(&ans->msg, a->broker, ZMQ_DONTWAIT) >= 0;
    authorization_t *auth =
        *more ? wire_auth_decode(zmq_msg_data(&ans->msg), zmq_msg_size(&ans->msg)) : NULL;
    if (*more && auth == NULL)
        log_warn("dropped an unreadable reply from the broker");
    ans->p = auth != NULL ? match_reply(a, auth) : NULL;
    ans->code = auth != NULL ? auth->code : RC_FORMAT_ERROR;
    if (ans->p != NULL)
        (void)learn_locale(a, auth);
    for (size_t i = 0; ans->p != NULL && i < n; i++)
        ans->p = taken[i].p == ans->p ? NULL : ans->p; /* a duplicate in this pass */
    if (ans->p != NULL && auth->code == RC_NOT_PERMITTED) {
        a->key_refused = true;
        log_every(&a->log_refused, LOG_REPEAT_MS, LOG_ERROR,
                  "the broker refused %s with 57: %s. This agent's key is revoked or not "
                  "recorded: requests stay in the outbox until it runs with a key that works",
                  ans->p->txn_id, auth->text);
    }
    if (ans->p != NULL && !answer_is_final(auth->code)) {
        if (*error_count < REPLIES_MAX) {
            not_final_t *e = &errors[(*error_count)++];
            snprintf(e->txn_id, sizeof e->txn_id, "%s", ans->p->txn_id);
            e->code = auth->code;
        }
        ans->p = NULL;
    }
    wire_auth_free(auth);
    if (ans->p == NULL)
        zmq_msg_close(&ans->msg);
    return ans->p != NULL;
}

/* The broker answered 96, 91 or 57 (answer_is_final). A burn is revoked (its tills told
 * 91) and voided if it may have been applied: by an earlier copy, or by this one unless
 * the answer is the rate limit's 91 (refused before the ledger) to the only copy sent; an
 * earn, refund, void or enrolment is kept (its tills told "stored offline") and resent
 * later; an inquiry is given up (91). */
static void not_final(agent_t *a, const not_final_t *e, int64_t now)
{
    pending_t *p = find_txn(a, e->txn_id);
    if (p == NULL || p->state == PENDING_BACKOFF || p->state == PENDING_REVOKED ||
        p->state == PENDING_BLOCKED)
        return; /* answered meanwhile, or a second such answer for the same request */
    log_every(&a->log_retry, LOG_REPEAT_MS, LOG_WARN, "broker answered %02d to %s; will retry",
              e->code, e->txn_id);
    if (p->known_reply != NULL) {
        answer_from_journal(a, p);
    } else if (pending_revocable(p)) {
        bool only_copy_refused = e->code == RC_UNAVAILABLE && p->attempts == 1;
        revoke_burn(a, p, now, !only_copy_refused);
    } else if (!pending_stored_offline(p)) {
        tell_every_waiter_timeout(a, p);
        drop_unsent(a, p);
    } else {
        tell_every_waiter_timeout(a, p);
        to_backoff(a, p, now);
    }
}

static void deliver(agent_t *a, answer_t *ans)
{
    pending_t *p = ans->p;
    assert(p->state != PENDING_REVOKED && p->state != PENDING_BLOCKED);
    for (size_t w = 0; w < p->waiter_count; w++) {
        agent_metrics_answer((int)p->kind, ans->code, false);
        router_reply(a->tills, &p->waiters[w].till, zmq_msg_data(&ans->msg),
                     zmq_msg_size(&ans->msg));
    }
    p->waiter_count = 0;
    pending_t *burn = p->revokes;
    forget(a, p);
    if (burn != NULL && !burn->saved) {
        burn->saved = true;
        forget(a, burn);
    }
}

static void take_replies(agent_t *a, int64_t now)
{
    answer_t answers[REPLIES_MAX];
    not_final_t errors[REPLIES_MAX];
    size_t n = 0, error_count = 0;
    uint64_t jseq = outbox_journal_next_seq(a->store);
    bool more = true;
    assert(a->op_count == 0);
    /* Bounded both in matches and in reads, so duplicates cannot hold the loop. */
    for (size_t reads = 0; more && n < REPLIES_MAX && reads < 2 * REPLIES_MAX; reads++) {
        if (!read_reply(a, &answers[n], answers, n, errors, &error_count, &more))
            continue;
        add_answer_ops(a, &answers[n], jseq++);
        n++;
    }
    /* Nothing is told before it is journaled: unsaved answers are fetched again. */
    bool saved = write_ops(a, "journal") == CL_OK;
    for (size_t i = 0; i < n; i++) {
        if (saved)
            deliver(a, &answers[i]);
        zmq_msg_close(&answers[i].msg);
    }
    for (size_t i = 0; i < error_count; i++)
        not_final(a, &errors[i], now);
    assert(a->op_count == 0);
}

/* ---- sending and housekeeping ------------------------------------------------------ */

/* Its bytes to the broker without waiting; 0 when queued. A request with a card number
 * goes as a copy ZeroMQ takes without copying again, cleared when it frees it. */
static int send_pending(agent_t *a, const pending_t *p)
{
    if (p->secret == NULL)
        return zmq_send(a->broker, p->envelope, p->envelope_len, ZMQ_DONTWAIT) < 0 ? -1 : 0;
    assert(p->by_card && p->secret_len > 0 && p->secret_len <= WIRE_MESSAGE_BYTES_MAX);
    uint8_t *copy = malloc(p->secret_len);
    if (copy == NULL)
        return -1;
    memcpy(copy, p->secret, p->secret_len);
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, copy, p->secret_len, pan_free_cleared,
                          (void *)(uintptr_t)p->secret_len) != 0) {
        pan_free_cleared(copy, (void *)(uintptr_t)p->secret_len);
        return -1;
    }
    if (zmq_msg_send(&msg, a->broker, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg); /* frees (and clears) the copy */
        return -1;
    }
    return 0;
}

static void send_ready(agent_t *a, int64_t now)
{
    while (a->q_head != NULL && a->in_flight < (size_t)a->opts->window) {
        pending_t *p = a->q_head;
        if (send_pending(a, p) != 0)
            break; /* no live connection (ZMQ_IMMEDIATE) or queue full: try next tick */
        to_in_flight(a, p, now);
    }
    assert(a->in_flight <= (size_t)a->opts->window);
}

static void run_timers(agent_t *a, int64_t now)
{
    pending_t *p = NULL;
    while ((p = pending_heap_pop_due(a->timers, now)) != NULL)
        timer_due(a, p, now);
}

/* Journal records older than the retention go, a bounded slice at a time. */
static void prune_journal(agent_t *a, int64_t now)
{
    if (now < a->next_prune_ms)
        return;
    a->next_prune_ms = now + PRUNE_INTERVAL_MS;
    int64_t before_ms = clock_wall_ms() - a->opts->journal_days * MS_PER_DAY;
    size_t pruned = 0;
    int rc = outbox_prune(a->store, before_ms, PRUNE_SLICE_MAX, &pruned);
    if (rc != CL_OK)
        log_warn("journal pruning failed: %s", cl_strerror(rc));
    else if (pruned > 0)
        log_info("pruned %zu journal record(s) older than %d day(s)", pruned,
                 a->opts->journal_days);
    if (pruned == PRUNE_SLICE_MAX)
        a->next_prune_ms = now; /* more to do: another slice next tick */
}

/* ---- start and stop ---------------------------------------------------------------- */

/* Requests left in the outbox by an earlier run: resend them; burns, whose till never got
 * an approval, are revoked once all are loaded. */
typedef struct load {
    agent_t *a;
    pending_t **burns;
    size_t burn_count, burn_capacity;
} load_t;

static int remember_burn(load_t *l, pending_t *p)
{
    if (l->burn_count == l->burn_capacity) {
        size_t cap = l->burn_capacity == 0 ? INTAKE_MAX : 2 * l->burn_capacity;
        pending_t **burns = realloc(l->burns, cap * sizeof *burns);
        if (burns == NULL)
            return CL_ERR_NOMEM;
        l->burns = burns;
        l->burn_capacity = cap;
    }
    l->burns[l->burn_count++] = p;
    return CL_OK;
}

static int load_entry(uint64_t seq, const uint8_t *bytes, size_t len, void *ctx)
{
    load_t *l = ctx;
    agent_t *a = l->a;
    envelope_t *env = wire_envelope_decode(bytes, len);
    uint8_t *copy = env != NULL ? malloc(len) : NULL;
    pending_t *p = copy != NULL ? pending_new(env, a->opts->site_id, copy, len) : NULL;
    bool duplicate = env != NULL && find_txn(a, env->txn_id) != NULL;
    wire_envelope_free(env);
    /* Everything stored is loaded, over AGENT_PENDING_MAX too: the limit gates tills. */
    if (p == NULL || duplicate) {
        log_error("outbox entry %llu is unreadable or repeats a key; left in place",
                  (unsigned long long)seq);
        if (p == NULL)
            free(copy);
        pending_free(&p);
        return CL_OK;
    }
    memcpy(copy, bytes, len);
    p->outbox_seq = seq;
    p->attempts = 1; /* it may have reached the broker before the restart */
    admit_new(a, p);
    return pending_revocable(p) ? remember_burn(l, p) : CL_OK;
}

/* One journaled answer of the broker's, newest first: the first that names the partner's
 * language (see learn_locale) ends the walk. */
static int learn_journaled_locale(uint64_t seq, int64_t time_ms, const uint8_t *envelope,
                                  size_t envelope_len, const uint8_t *auth, size_t auth_len,
                                  void *ctx)
{
    (void)seq, (void)time_ms, (void)envelope, (void)envelope_len;
    agent_t *a = ctx;
    authorization_t *answer = wire_auth_decode(auth, auth_len);
    bool teaches = answer != NULL && learn_locale(a, answer);
    wire_auth_free(answer);
    return teaches ? CL_ERR_EXISTS : CL_OK; /* not an error: the walk's end */
}

static int load_outbox(agent_t *a)
{
    load_t l = {a, NULL, 0, 0};
    /* The texts the agent writes itself are in the language of its journal's latest
     * answer, so a restart with the broker away does not turn them back into English. */
    if (outbox_journal_newest_first(a->store, learn_journaled_locale, a) != CL_OK)
        log_warn("cannot read the journal for the partner's language: texts in %s until "
                 "the broker answers",
                 receipt_locale_code(a->locale));
    assert(a->locale >= RECEIPT_EN && a->locale < RECEIPT_LOCALES);
    int rc = outbox_foreach(a->store, load_entry, &l);
    int64_t now = clock_mono_ms();
    for (size_t i = 0; rc == CL_OK && i < l.burn_count; i++)
        revoke_burn(a, l.burns[i], now, l.burns[i]->attempts > 0);
    free(l.burns);
    if (rc == CL_OK && a->pending_count > 0)
        log_info("resuming %zu request(s) from the outbox", a->pending_count);
    return rc;
}

static int set_int(void *sock, int option, int value)
{
    return zmq_setsockopt(sock, option, &value, sizeof value);
}

/* CURVE client of the broker. */
static int set_curve_client(agent_t *a)
{
    const agent_options_t *o = a->opts;
    assert(o->key != NULL && keys_z85_valid(o->broker_public_z85));
    if (zmq_setsockopt(a->broker, ZMQ_CURVE_SERVERKEY, o->broker_public_z85, KEY_Z85_BYTES) ||
        zmq_setsockopt(a->broker, ZMQ_CURVE_PUBLICKEY, o->key->public_z85, KEY_Z85_BYTES) ||
        zmq_setsockopt(a->broker, ZMQ_CURVE_SECRETKEY, o->key->secret_z85, KEY_Z85_BYTES) != 0) {
        log_error("cannot set up CURVE to the broker: %s", zmq_strerror(zmq_errno()));
        return CL_ERR_ZMQ;
    }
    return CL_OK;
}

/* A monitor on the broker connection: handshakes (a refused key is reported instead of
 * looking like a broker that is down) and disconnections (broker_connected metric). */
static int open_monitor(agent_t *a)
{
    if (zmq_socket_monitor(a->broker, MONITOR_ENDPOINT,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_DISCONNECTED) !=
        0) {
        log_error("cannot monitor the broker connection: %s", zmq_strerror(zmq_errno()));
        return CL_ERR_ZMQ;
    }
    a->monitor = zmq_socket(a->ctx, ZMQ_PAIR);
    /* Unbounded: libzmq's I/O thread sends events with a blocking send. */
    if (a->monitor == NULL || set_int(a->monitor, ZMQ_LINGER, 0) ||
        set_int(a->monitor, ZMQ_RCVHWM, 0) || zmq_connect(a->monitor, MONITOR_ENDPOINT) != 0)
        return CL_ERR_ZMQ;
    return CL_OK;
}

/* Handshake events of the broker connection. */
static void take_monitor_events(agent_t *a)
{
    monitor_event_t e;
    for (int i = 0; i < MONITOR_EVENTS_PER_PASS; i++) {
        int got = monitor_read(a->monitor, &e);
        if (got == 0)
            return;
        if (got < 0)
            continue;
        uint16_t event = e.event;
        uint32_t value = e.value;
        if (event == ZMQ_EVENT_DISCONNECTED) {
            a->connected = false;
        } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            a->connected = true;
            if (a->key_refused)
                log_info("the broker accepted this agent's key again");
            a->key_refused = false;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            a->key_refused = true;
            log_every(&a->log_refused, LOG_REPEAT_MS, LOG_ERROR,
                      "the broker REFUSED this agent's key (ZAP status %u): it is unknown or "
                      "revoked; ask the operator ('coalitionctl key list'). Requests stay in the "
                      "outbox and tills are told so",
                      (unsigned)value);
        } else {
            log_every(&a->log_refused, LOG_REPEAT_MS, LOG_ERROR,
                      "CURVE handshake with the broker failed (event 0x%x): is --broker-key the "
                      "broker's public key?",
                      (unsigned)event);
        }
    }
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
    if ((o->key != NULL && set_curve_client(a) != CL_OK) || open_monitor(a) != CL_OK)
        return CL_ERR_ZMQ;
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

static int open_indexes(agent_t *a)
{
    int rc = pending_map_new(&a->by_txn, KEY_BUCKETS);
    if (rc == CL_OK)
        rc = pending_map_new(&a->by_enrol, KEY_BUCKETS);
    if (rc == CL_OK)
        rc = pending_heap_new(&a->timers, TIMERS_MAX);
    a->rng = (uint64_t)clock_wall_ms() * UINT64_C(2654435761) ^ (uint64_t)getpid();
    if (a->rng == 0)
        a->rng = 1;
    return rc;
}

/* On stop: every till still waiting gets its timeout answer; the outbox keeps the rest. */
static void close_agent(agent_t *a)
{
    map_link_t *link = NULL;
    while (a->by_txn != NULL && (link = pending_map_take(a->by_txn)) != NULL) {
        pending_t *p = pending_of(link, offsetof(pending_t, by_txn));
        tell_every_waiter_timeout(a, p);
        pending_heap_schedule(a->timers, p, INT64_MAX);
        pending_free(&p);
    }
    pending_heap_destroy(&a->timers);
    pending_map_destroy(&a->by_txn);
    pending_map_destroy(&a->by_enrol);
    if (a->tills != NULL)
        zmq_close(a->tills);
    if (a->monitor != NULL) /* stopped before the socket it monitors is closed */
        zmq_socket_monitor(a->broker, NULL, 0);
    if (a->broker != NULL)
        zmq_close(a->broker);
    if (a->monitor != NULL)
        zmq_close(a->monitor);
    if (a->ctx != NULL)
        zmq_ctx_term(a->ctx);
    outbox_destroy(&a->store);
}

static void publish_metrics(const agent_t *a)
{
    agent_metrics_state_t s = {outbox_count(a->store),
                               a->in_flight,
                               a->pending_count,
                               outbox_oldest_ms(a->store),
                               outbox_journal_next_seq(a->store) - 1,
                               a->connected};
    agent_metrics_update(&s);
}

int agent_run(const agent_options_t *opts, int stop_fd)
{
    agent_t a;
    memset(&a, 0, sizeof a);
    a.opts = opts;
    int rc = open_indexes(&a);
    if (rc == CL_OK)
        rc = outbox_open(&a.store, opts->data_dir, 0);
    if (rc == CL_OK)
        rc = load_outbox(&a);
    if (rc == CL_OK)
        rc = open_sockets(&a);
    if (rc == CL_OK) { /* the till socket is bound: tills can be served, online or not */
        log_info("ready: partner %s site %s, tills on %s, broker %s", opts->partner_id,
                 opts->site_id, opts->listen_endpoint, opts->broker_endpoint);
        service_ready("partner %s site %s: tills on %s", opts->partner_id, opts->site_id,
                      opts->listen_endpoint);
    }
    service_watchdog_t watchdog;
    service_watchdog_init(&watchdog);
    bool stop = false;
    while (rc == CL_OK && !stop) {
        short intake = a.pending_count < AGENT_PENDING_MAX ? ZMQ_POLLIN : 0;
        zmq_pollitem_t items[] = {{a.tills, 0, intake, 0},
                                  {a.broker, 0, ZMQ_POLLIN, 0},
                                  {NULL, stop_fd, ZMQ_POLLIN, 0},
                                  {a.monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, a.monitor != NULL ? 4 : 3, TICK_MS) < 0 && zmq_errno() != EINTR) {
            log_error("poll failed: %s", zmq_strerror(zmq_errno()));
            rc = CL_ERR_ZMQ;
            break;
        }
        int64_t now = clock_mono_ms();
        if (a.monitor != NULL && (items[3].revents & ZMQ_POLLIN))
            take_monitor_events(&a);
        if (items[1].revents & ZMQ_POLLIN)
            take_replies(&a, now);
        if (items[0].revents & ZMQ_POLLIN)
            take_tills(&a, now);
        run_timers(&a, now);
        send_ready(&a, now);
        prune_journal(&a, now);
        publish_metrics(&a);
        service_watchdog_tick(&watchdog, now, true);
        /* Every held request is under its key; the window bounds what is in flight. */
        assert(a.pending_count == pending_map_count(a.by_txn));
        assert(a.in_flight <= (size_t)opts->window && a.in_flight <= a.pending_count);
        assert(pending_heap_count(a.timers) <= a.pending_count && a.op_count == 0);
        stop = (items[2].revents & ZMQ_POLLIN) && shutdown_requested(stop_fd);
    }
    if (stop)
        service_stopping("stopping: %zu request(s) kept in the outbox", a.pending_count);
    close_agent(&a);
    return rc;
}
