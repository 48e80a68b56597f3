/* One request the agent holds for the broker, and its lifecycle. Every state change goes
 * through pending_set_state(), which asserts the transition is one of these; the agent
 * (agent.c, "lifecycle transitions") pairs each with its durable write.
 *
 *            admit: outbox put (fsync); inquiries are not stored
 *                        │
 *          names a       ▼          dependency answered
 *   ┌─── pending ──── QUEUED ◄─────────────────────────── BLOCKED
 *   │   original or     │ send (window)       resend due     ▲
 *   │   enrolment       ▼ (backoff + jitter, capped)         │
 *   └──────────────► IN_FLIGHT ──────────────► QUEUED        │
 *                       │  reply with this key AND this hash (any state but REVOKED)
 *                       ▼
 *        journal + outbox delete (fsync) ──► done: every waiting till gets the reply
 *
 *   96 with no till waiting (IN_FLIGHT or QUEUED) ──► BACKOFF ──(timer)──► QUEUED
 *   burn, first till deadline passes, maybe sent ──► REVOKED: every waiting till is told
 *       91; a void (~v…) is queued and sent at once; the burn is never sent again. The
 *       burn's own outbox record is the reservation for that void: until the revocation
 *       (outbox delete burn + put void + reversed mark) is written, a restart finds the
 *       burn and reverses it again, so a full disk never leaves a burn 91 applied.
 *   burn never sent, or an inquiry, deadline passes ──► done (tills told 91)
 *
 * Invariants: one request per (site, txn id) key; a repeat with the same hash joins it as
 * another waiter, a different request under a pending key is declined 94 by the agent. */
#ifndef COALITION_PENDING_H
#define COALITION_PENDING_H

#include "router.h"
#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tills that may wait on one key at once; one more is told 91 at once. */
#define PENDING_WAITERS_MAX 8

typedef enum {
    PENDING_QUEUED = 0, /* in the send queue, in arrival order */
    PENDING_IN_FLIGHT,  /* sent; resent when its timer fires */
    PENDING_BACKOFF,    /* the broker answered 96 and no till waits: resent later */
    PENDING_BLOCKED,    /* waits for the pending request it depends on to be answered */
    PENDING_REVOKED,    /* a burn its tills were told failed; its void settles it */
    PENDING_STATE_COUNT
} pending_state_t;

typedef struct waiter {
    peer_t till;
    int64_t deadline_ms;
} waiter_t;

/* Intrusive link of a keyed map (see pending_map_*). */
typedef struct map_link {
    struct map_link *next;
    const char *key;
} map_link_t;

typedef struct pending {
    pending_state_t state;
    Coalition__Envelope__BodyCase kind;
    char txn_id[TXN_ID_LEN_MAX + 1];
    char member_id[MEMBER_ID_LEN_MAX + 1];
    char original_txn_id[TXN_ID_LEN_MAX + 1]; /* "" unless it reverses one of this site's */
    uint8_t hash[WIRE_HASH_BYTES];            /* wire_request_hash of the stamped envelope */
    uint8_t *envelope;                        /* packed, resent byte for byte */
    size_t envelope_len;
    /* A request by card: `envelope` (stored, journaled) has the card number cleared; this
     * is the one sent, with it. Memory only: cleared when freed, gone after a restart. */
    uint8_t *secret;
    size_t secret_len;
    bool by_card;
    uint64_t outbox_seq; /* 0: not in the outbox (inquiries; a void not yet saved) */
    /* A repeat of a key this agent already answered: that answer, from its journal. Such a
     * request is not stored; without a broker answer by the deadline its tills get this
     * (as a replay), and it is never revoked. */
    uint8_t *known_reply;
    size_t known_reply_len;
    unsigned attempts;          /* sends so far; > 0 means it may have reached the broker */
    int64_t resend_ms;          /* IN_FLIGHT, BACKOFF: when to send again */
    int64_t save_ms;            /* REVOKED and not yet saved: when to try the write again */
    bool saved;                 /* REVOKED: the revocation is durable */
    struct pending *revokes;    /* a void the agent made: the REVOKED burn it settles */
    struct pending *revoked_by; /* a REVOKED burn: its void */
    waiter_t waiters[PENDING_WAITERS_MAX];
    size_t waiter_count;
    /* Indexes, owned by agent.c. */
    struct pending *q_prev, *q_next; /* send queue: QUEUED only */
    struct pending *blocked_on;      /* BLOCKED: the request it waits for */
    struct pending *dependents;      /* requests BLOCKED on this one */
    struct pending *dep_next;
    map_link_t by_txn;   /* every request, by txn id */
    map_link_t by_enrol; /* enrolments, by member id */
    size_t heap_index;   /* position in the timer heap, or PENDING_NOT_IN_HEAP */
    int64_t due_ms;      /* heap key */
} pending_t;

#define PENDING_NOT_IN_HEAP ((size_t)-1)

/* Decode-free construction: `env` is the stamped, validated envelope packed in `bytes`
 * (taken over). NULL on allocation failure. */
pending_t *pending_new(const envelope_t *env, const char *own_site, uint8_t *bytes, size_t len);
void pending_free(pending_t **self_p);

/* The one place a state changes; asserts the transition is drawn above. */
void pending_set_state(pending_t *self, pending_state_t to);
const char *pending_state_name(pending_state_t state);

/* Whether the broker's answer to this kind may be kept and delivered later (store and
 * forward) when no till waits: earns, refunds, voids, enrolments. */
bool pending_store_and_forward(Coalition__Envelope__BodyCase kind);

/* What the agent does when a till's deadline passes. A burn is revoked (a void). A store
 * and forward kind is kept and sent until answered. An earn by card is kept only once it
 * was sent (its outcome is then the broker's to say: its till is told "pending", the card
 * number stays in memory for resends, and after a restart the request is sent without it,
 * to be answered from the broker's record or declined 12); never sent, it is declined 91
 * and dropped, since a card number is never kept on disk. */
bool pending_revocable(const pending_t *self);
bool pending_stored_offline(const pending_t *self);

/* Waiters. add returns false when PENDING_WAITERS_MAX are already waiting. */
bool pending_add_waiter(pending_t *self, const peer_t *till, int64_t deadline_ms);
/* Earliest deadline of its waiters, or INT64_MAX with none. */
int64_t pending_first_deadline(const pending_t *self);

/* ---- keyed map: txn id -> pending, member id -> pending enrolment ------------------- */

typedef struct pending_map pending_map_t;

int pending_map_new(pending_map_t **self_out, size_t buckets);
void pending_map_destroy(pending_map_t **self_p);
/* `link` is the by_txn or by_enrol member of a pending whose key is set. */
void pending_map_put(pending_map_t *self, map_link_t *link);
map_link_t *pending_map_get(const pending_map_t *self, const char *key);
void pending_map_remove(pending_map_t *self, map_link_t *link);
size_t pending_map_count(const pending_map_t *self);
/* Remove and return any one link (to empty the map at shutdown); NULL when empty. */
map_link_t *pending_map_take(pending_map_t *self);

/* ---- timer heap: pending requests by due_ms --------------------------------------- */

typedef struct pending_heap pending_heap_t;

int pending_heap_new(pending_heap_t **self_out, size_t capacity);
void pending_heap_destroy(pending_heap_t **self_p);
/* Insert, move or (due INT64_MAX) remove `p` so that it fires at `due_ms`. */
int pending_heap_schedule(pending_heap_t *self, pending_t *p, int64_t due_ms);
/* The earliest request due at or before `now_ms`, removed from the heap; or NULL. */
pending_t *pending_heap_pop_due(pending_heap_t *self, int64_t now_ms);
size_t pending_heap_count(const pending_heap_t *self);

#endif
