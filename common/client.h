/* A blocking request/reply client over a DEALER socket: send one Envelope, wait for
 * the Authorization carrying the same txn_id, discard stale replies to earlier calls.
 * Used by coalitionctl (admin socket), the till library (agent socket) and tests. */
#ifndef COALITION_CLIENT_H
#define COALITION_CLIENT_H

#include "keys.h"
#include "wire.h"

typedef struct client client_t;

int client_new(client_t **self_out, const char *endpoint);
/* The same as a CURVE client: this participant's key pair and the server's public key. */
int client_new_curve(client_t **self_out, const char *endpoint, const key_pair_t *key,
                     const char *server_public_z85);
void client_destroy(client_t **self_p);
/* CL_OK with *auth_out set (free with wire_auth_free), or CL_ERR_TIMEOUT. */
int client_call(client_t *self, const envelope_t *env, int timeout_ms, authorization_t **auth_out);
/* Send a packed request holding a card number (taken over): without a copy, cleared
 * when ZeroMQ frees it. */
int client_send_secret(void *sock, uint8_t *buf, size_t len);
/* Send raw bytes and wait for any reply (for malformed-input tests). */
int client_call_raw(client_t *self, const void *buf, size_t len, int timeout_ms,
                    authorization_t **auth_out);

#endif
