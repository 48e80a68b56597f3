/* The journal feed: after each commit the broker publishes the new journal entries, as
 * stored, to downstream systems. A thread of its own owns a PUB socket (live batches and
 * heartbeats) and a ROUTER socket (replay: "entries from SEQ, at most N"), and reads the
 * entries itself in short LMDB read transactions. The writer only reports "committed up
 * to S" through the ledger's commit hook: two atomic stores and a non-blocking eventfd
 * write, which coalesces (a wake-up missed is covered by the next), so the feed never
 * slows the writer. PUB drops for a slow subscriber at its high-water mark; the
 * subscriber sees the hole by sequence number and fills it from the replay socket.
 * Beyond loopback both sockets are CURVE servers admitting listed keys only (feed_zap.h). */
#ifndef COALITION_FEED_H
#define COALITION_FEED_H

#include "feed_zap.h"
#include "keys.h"
#include "ledger.h"

#include "feed.pb-c.h"

#include <stdint.h>

#define FEED_VERSION 1u
/* Entries per message (live batch or replay answer) and bytes of them, at most: one
 * entry of the largest size always fits. */
#define FEED_BATCH_ENTRIES_MAX 256
#define FEED_BATCH_BYTES_MAX ((size_t)1 << 20)
/* A message's packed size at most: the entries and, per entry, its seq and two tags. */
#define FEED_MESSAGE_BYTES_MAX (FEED_BATCH_BYTES_MAX + FEED_BATCH_ENTRIES_MAX * 32 + 256)
#define FEED_REQUEST_BYTES_MAX 64
_Static_assert(FEED_BATCH_BYTES_MAX >= LEDGER_ENTRY_BYTES_MAX, "the largest entry fits");
_Static_assert(FEED_BATCH_ENTRIES_MAX <= LEDGER_RAW_ENTRIES_MAX, "a batch is one ledger read");
/* Entries the feed thread publishes before it looks at replay requests again. */
#define FEED_PUBLISH_ENTRIES_PER_PASS (8 * FEED_BATCH_ENTRIES_MAX)
/* Replay requests answered per pass (then live entries go out again). */
#define FEED_REQUESTS_PER_PASS 64
/* With nothing to publish, a heartbeat (an empty batch saying the last seq published)
 * at this interval: a subscriber that missed the last entries learns it from it. */
#define FEED_HEARTBEAT_MS 500
/* Live messages queued per subscriber before PUB drops for it (--feed-hwm). The broker
 * holds at most that many messages of at most FEED_BATCH_BYTES_MAX for a subscriber that
 * stopped reading: 64 MiB by default (about 5 MiB of typical 300-byte entries), well
 * inside the memory guard; past it the subscriber replays what it missed. */
#define FEED_HWM_DEFAULT 64
#define FEED_HWM_MAX 4096
_Static_assert(FEED_HWM_DEFAULT >= 1 && FEED_HWM_DEFAULT <= FEED_HWM_MAX, "default in range");
_Static_assert((size_t)FEED_HWM_DEFAULT *FEED_BATCH_BYTES_MAX <= ((size_t)64 << 20),
               "a stalled subscriber costs the broker at most 64 MiB by default");

/* Replay answers queued per requester that does not read them (a well-behaved one has
 * one request in flight); past it the answers are dropped. At most this many messages of
 * FEED_MESSAGE_BYTES_MAX each per stalled peer, beside the kernel's socket buffer. */
#define FEED_REPLAY_HWM 2
_Static_assert(FEED_REPLAY_HWM >= 1 && FEED_REPLAY_HWM <= FEED_HWM_DEFAULT,
               "a replay requester costs less than a live subscriber");

/* FeedBatch.status of a replay answer. */
#define FEED_STATUS_OK 0u
#define FEED_STATUS_BAD_REQUEST 1u /* not a request, wrong version, seq 0 or max 0 */

/* Default socket names in the ledger directory (owner-only, like the admin socket). */
#define FEED_SOCKET_NAME "feed.sock"
#define FEED_REPLAY_SOCKET_NAME "feed-replay.sock"

typedef struct feed_options {
    const char *pub_endpoint;    /* live batches */
    const char *replay_endpoint; /* replay requests */
    int hwm;                     /* PUB high-water mark per subscriber, in messages */
    /* Both NULL: plain sockets, loopback or ipc only. Both set: CURVE servers with the
     * broker's key, admitting the listed client keys only (any endpoint). */
    const key_pair_t *server_key;
    const feed_clients_t *clients;
} feed_options_t;

typedef struct feed feed_t;

/* Bind both sockets, start the thread and set the ledger's commit hook: before the writer
 * thread starts. Publishing starts after the ledger's last seq (history is replayed).
 * Without CURVE, only loopback (tcp://127.x, [::1], localhost) and ipc:// endpoints:
 * CL_ERR_INVALID. */
int feed_new(feed_t **self_out, ledger_t *ledger, const feed_options_t *opts);
/* After the writer thread is joined: stop the thread, close the sockets. */
void feed_destroy(feed_t **self_p);

/* Wall-clock microseconds (commit and receipt times of the feed). */
int64_t feed_wall_us(void);

#endif
