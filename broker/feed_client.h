/* A subscriber of the journal feed (feed.h): hands out journal entries from a seq it
 * names, in order, each exactly once, with no gaps, checked like entries read from disk
 * and against the hash chain. It reads live batches from the PUB socket and fills any
 * hole (a late start, messages dropped for it at the high-water mark, a broker restart)
 * from the replay socket: the Clone pattern of the ZeroMQ guide.
 *
 *   start ─► REPLAY ─(answer reaches the broker's last seq, follow)─► LIVE
 *              ▲                                                      │
 *              └── live batch starts past the next seq, heartbeat ◄───┘
 *                  past it, or silence (the broker went away)            */
#ifndef COALITION_FEED_CLIENT_H
#define COALITION_FEED_CLIENT_H

#include "feed.h"
#include "ledger.h"

#include <stdbool.h>
#include <stdint.h>

/* A replay request unanswered this long: the socket is reopened and it is sent again. */
#define FEED_CLIENT_REPLAY_TIMEOUT_MS 2000
/* No live message (not even a heartbeat) this long: ask the replay socket. */
#define FEED_CLIENT_SILENCE_MS (4 * FEED_HEARTBEAT_MS)
_Static_assert(FEED_CLIENT_SILENCE_MS > FEED_HEARTBEAT_MS, "heartbeats keep a live feed live");

typedef struct feed_client_options {
    const char *pub_endpoint; /* live batches; only read with follow */
    const char *replay_endpoint;
    uint64_t from_seq; /* >= 1 */
    bool follow;       /* false: stop at the last seq committed when it started */
    int rcvhwm;        /* the SUB socket's receive high-water mark; 0: libzmq's */
    /* A CURVE feed (--feed-clients): this client's key pair and the broker's public key;
     * NULL: plain sockets. */
    const key_pair_t *key;
    const char *server_z85;
} feed_client_options_t;

typedef struct feed_item {
    const journal_entry_t *entry; /* valid until the next call */
    bool live;                    /* came on the PUB socket (false: replayed) */
    int64_t commit_us;            /* live: the commit time its batch carried (0: unknown) */
    int64_t received_us;          /* when its message arrived */
} feed_item_t;

typedef struct feed_client_stats {
    uint64_t live, replayed; /* entries handed out, by where they came from */
    uint64_t gaps;           /* holes in the live feed filled by replay (after a skip, a
                                heartbeat past what came, or silence) */
    uint64_t replays;        /* replay requests answered */
    uint64_t duplicates;     /* entries received again and skipped */
    uint64_t reconnects;     /* replay socket reopened after a timeout */
} feed_client_stats_t;

typedef struct feed_client feed_client_t;

int feed_client_new(feed_client_t **self_out, const feed_client_options_t *opts);
void feed_client_destroy(feed_client_t **self_p);
/* Ask the broker once: *last_out is its last committed seq. CL_ERR_INVALID when from_seq
 * is past last + 1 (a feed that never had it: another ledger, or one restored from an
 * older backup); CL_ERR_TIMEOUT when the broker did not answer. */
int feed_client_start(feed_client_t *self, int timeout_ms, uint64_t *last_out);
/* The next entry: CL_OK; CL_ERR_NOT_FOUND at the end (without follow); CL_ERR_TIMEOUT when
 * none came in time (call again); CL_ERR_CORRUPT when what came fails its checks (the
 * chain broke, or the journal no longer holds the last entry handed out: another ledger,
 * or an older copy, is behind the feed), CL_ERR_VERSION for another protocol. */
int feed_client_next(feed_client_t *self, int timeout_ms, feed_item_t *out);
void feed_client_stats(const feed_client_t *self, feed_client_stats_t *out);
/* The seq the next entry will have. */
uint64_t feed_client_next_seq(const feed_client_t *self);

#endif
