/* The ledger's single writer thread: group commit. It takes every batch queued on its
 * inproc socket (never waiting for more to arrive), applies them in one LMDB write
 * transaction, commits with fsync, and only then hands the batches back for replies. */
#ifndef COALITION_WRITER_H
#define COALITION_WRITER_H

#include "ledger.h"

/* Requests applied in one LMDB transaction at most. */
#define WRITER_REQUESTS_PER_COMMIT_MAX 8192
/* Attempts at one round when the map is full, growing it (doubling) between attempts:
 * 8 attempts reach 128 times the map the round started with. */
#define WRITER_MAP_GROW_ATTEMPTS_MAX 8

/* How often the idle writer wakes for settlement's roll-over and automatic close. */
#define WRITER_HOUSEKEEP_INTERVAL_MS 1000
/* Unclaimed card accounts lapsed per tick, in one batch (bounded: a tick is one commit). */
#define WRITER_LAPSES_PER_TICK 64
/* An expiry run goes in slices of this many members (each slice one commit between
 * rounds of requests, so authorizations wait for at most one slice). */
#define WRITER_EXPIRY_SLICE_MEMBERS 128
_Static_assert(WRITER_EXPIRY_SLICE_MEMBERS <= EXPIRY_MEMBERS_PER_SLICE_MAX,
               "a slice the ledger takes");
/* The daily run: minutes after midnight UTC; OFF: none. */
#define WRITER_EXPIRE_OFF (-1)
#define WRITER_EXPIRE_AT_DEFAULT (3 * 60)
#define WRITER_MINUTES_PER_DAY (24 * 60)
_Static_assert(WRITER_EXPIRE_AT_DEFAULT >= 0 && WRITER_EXPIRE_AT_DEFAULT < WRITER_MINUTES_PER_DAY,
               "the default is a time of day");

_Static_assert(WRITER_MAP_GROW_ATTEMPTS_MAX >= 2, "a full map must be grown and retried once");

typedef struct writer writer_t;

/* Start the thread; it connects a PAIR socket to `endpoint` (inproc) in `zmq_ctx`. */
int writer_new(writer_t **self_out, void *zmq_ctx, ledger_t *ledger, const char *endpoint,
               int expire_at_minute);
/* How long the thread has been busy without returning to wait for batches (0: waiting).
 * Safe to call from the I/O thread. */
int64_t writer_busy_ms(writer_t *self, int64_t now_ms);
/* Join the thread; the I/O side must have sent the stop message (a NULL pointer). */
void writer_destroy(writer_t **self_p);

#endif
