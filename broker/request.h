/* Batches of validated requests. The I/O thread fills one from whatever the sockets have
 * ready, hands its pointer to the writer over inproc, and gets the same pointer back
 * with every reply filled in once the batch is committed. Ownership moves with the
 * pointer; the number of batches in flight is bounded by the pool size. */
#ifndef COALITION_REQUEST_H
#define COALITION_REQUEST_H

#include "keys.h"
#include "ledger.h"
#include "router.h"
#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BATCH_REQUESTS_MAX 256
#define BATCHES_IN_FLIGHT_MAX 64

typedef enum { ORIGIN_PARTNER = 0, ORIGIN_ADMIN = 1 } origin_t;

typedef struct request {
    origin_t origin;
    peer_t peer;
    envelope_t *env;
    uint8_t hash[WIRE_HASH_BYTES];
    /* The sender's authenticated CURVE public key (Z85), "" from the admin socket or a
     * broker running --insecure. */
    char principal[KEY_Z85_BYTES];
    /* Its cards looked up under every card key; the numbers are cleared from env. */
    ledger_cards_t cards;
    uint8_t *reply; /* packed Authorization, malloc'd */
    size_t reply_len;
} request_t;

typedef struct batch {
    size_t count;
    request_t items[BATCH_REQUESTS_MAX];
} batch_t;

#endif
