/* The broker's I/O thread: partner and admin sockets, validation, inquiries, and the
 * hand-off to the writer thread it starts. Runs until stop_fd (see shutdown.h) is readable, then
 * closes intake, waits for every queued batch to commit and be answered, and returns. */
#ifndef COALITION_FRONTEND_H
#define COALITION_FRONTEND_H

#include "keys.h"
#include "ledger.h"

typedef struct frontend_options {
    const char *bind_endpoint;  /* partner agents, e.g. tcp://127.0.0.1:7700 */
    const char *admin_endpoint; /* operator, e.g. ipc://<ledger>/admin.sock */
    /* The broker's CURVE key pair: the partner socket is a CURVE server with ZAP. NULL
     * only with --insecure (plain TCP on loopback; the envelope's partner id is believed). */
    const key_pair_t *server_key;
    /* Memory guard: when resident anonymous memory passes this, every partner connection
     * is dropped (the socket is reopened); what they had queued is freed, agents reconnect
     * and resend under the same txn ids. */
    size_t memory_max_bytes;
    size_t connections_max; /* partner connections open at once (1..PEERS_MAX) */
    /* The coalition's card keys; NULL: card numbers are refused (57), nothing is stored. */
    const card_keys_t *card_keys;
    /* The daily expiry run: minutes after midnight UTC, or WRITER_EXPIRE_OFF. */
    int expire_at_minute;
} frontend_options_t;

#define FRONTEND_MEMORY_MAX_DEFAULT ((size_t)1 << 30)

int frontend_run(ledger_t *ledger, const frontend_options_t *opts, int stop_fd);

#endif
