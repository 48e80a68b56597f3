/* Reading requests from and replying through a ROUTER socket. A message is
 * [routing id][optional empty delimiter (REQ peers)][one payload]; anything else is
 * drained and dropped with a log line. Replies never block: a reply to a peer that is
 * gone or too slow is dropped (the peer retries with the same txn_id). */
#ifndef COALITION_ROUTER_H
#define COALITION_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "log.h"
#include "wire.h"

#define ROUTING_ID_BYTES_MAX 256

typedef struct peer {
    uint8_t routing_id[ROUTING_ID_BYTES_MAX];
    size_t routing_id_len;
    bool delimiter;
} peer_t;

/* 1: a message, payload in `payload` (initialised by the caller); 0: nothing waiting;
 * -1: a malformed message was dropped, and logged through `drops` (the caller's
 * rate-limited call site: a peer can send one such message after another). */
int router_read(void *sock, peer_t *peer, zmq_msg_t *payload, log_every_t *drops);
void router_reply(void *sock, const peer_t *peer, const void *buf, size_t len);
/* Pack and send an Authorization. */
void router_reply_auth(void *sock, const peer_t *peer, const authorization_t *auth);
/* Send a decline decided without the ledger: code and "Declined NN: why", echoing the
 * request's hash. `env` and `hash` may be NULL when the request could not be decoded. */
void router_decline(void *sock, const peer_t *peer, const envelope_t *env, const uint8_t *hash,
                    int code, const char *why);

#endif
