/* Blocking DEALER client; see client.h. */
#include "client.h"

#include "card.h"

#include "clock.h"
#include "errors.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* A send never blocks longer: with no peer to queue for (a CURVE handshake the server
 * refused, say) zmq_send would otherwise wait for ever, past any call's timeout. */
#define CLIENT_SEND_TIMEOUT_MS 1000

struct client {
    void *ctx;
    void *sock;
};

int client_new(client_t **self_out, const char *endpoint)
{
    return client_new_curve(self_out, endpoint, NULL, NULL);
}

int client_new_curve(client_t **self_out, const char *endpoint, const key_pair_t *key,
                     const char *server_public_z85)
{
    client_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    int linger_ms = 0, send_timeout_ms = CLIENT_SEND_TIMEOUT_MS;
    self->ctx = zmq_ctx_new();
    if (self->ctx != NULL)
        self->sock = zmq_socket(self->ctx, ZMQ_DEALER);
    bool curve_ok =
        key == NULL ||
        (self->sock != NULL &&
         zmq_setsockopt(self->sock, ZMQ_CURVE_SERVERKEY, server_public_z85, KEY_Z85_BYTES) == 0 &&
         zmq_setsockopt(self->sock, ZMQ_CURVE_PUBLICKEY, key->public_z85, KEY_Z85_BYTES) == 0 &&
         zmq_setsockopt(self->sock, ZMQ_CURVE_SECRETKEY, key->secret_z85, KEY_Z85_BYTES) == 0);
    if (self->sock == NULL || !curve_ok ||
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) ||
        zmq_setsockopt(self->sock, ZMQ_SNDTIMEO, &send_timeout_ms, sizeof send_timeout_ms) ||
        zmq_connect(self->sock, endpoint) != 0) {
        client_destroy(&self);
        return CL_ERR_ZMQ;
    }
    *self_out = self;
    return CL_OK;
}

void client_destroy(client_t **self_p)
{
    client_t *self = *self_p;
    if (self == NULL)
        return;
    if (self->sock != NULL)
        zmq_close(self->sock);
    if (self->ctx != NULL)
        zmq_ctx_term(self->ctx);
    free(self);
    *self_p = NULL;
}

/* Wait for a reply whose txn_id equals `txn_id` (any reply when NULL). */
static int await_reply(client_t *self, const char *txn_id, int timeout_ms,
                       authorization_t **auth_out)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    for (;;) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0)
            return CL_ERR_TIMEOUT;
        zmq_pollitem_t item = {self->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, (long)left);
        if (rc < 0 && zmq_errno() != EINTR)
            return CL_ERR_ZMQ;
        if (rc <= 0)
            continue;
        int n = zmq_recv(self->sock, buf, sizeof buf, ZMQ_DONTWAIT);
        if (n < 0 || (size_t)n > sizeof buf)
            continue;
        authorization_t *auth = wire_auth_decode(buf, (size_t)n);
        if (auth == NULL)
            continue;
        if (txn_id == NULL || strcmp(auth->txn_id, txn_id) == 0) {
            *auth_out = auth;
            return CL_OK;
        }
        wire_auth_free(auth); /* a late reply to an earlier call */
    }
}

int client_call_raw(client_t *self, const void *buf, size_t len, int timeout_ms,
                    authorization_t **auth_out)
{
    assert(self != NULL && buf != NULL && auth_out != NULL && timeout_ms >= 0);
    if (zmq_send(self->sock, buf, len, 0) != (int)len)
        return CL_ERR_ZMQ;
    return await_reply(self, NULL, timeout_ms, auth_out);
}

/* A request holding a card number goes without a copy: ZeroMQ frees the buffer, cleared,
 * when it has sent it. */
int client_send_secret(void *sock, uint8_t *buf, size_t len)
{
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, buf, len, pan_free_cleared, (void *)(uintptr_t)len) != 0) {
        pan_free_cleared(buf, (void *)(uintptr_t)len);
        return CL_ERR_NOMEM;
    }
    if (zmq_msg_send(&msg, sock, 0) != (int)len) {
        zmq_msg_close(&msg); /* frees (and clears) the buffer */
        return CL_ERR_ZMQ;
    }
    return CL_OK;
}

int client_call(client_t *self, const envelope_t *env, int timeout_ms, authorization_t **auth_out)
{
    assert(self != NULL && env != NULL && auth_out != NULL && timeout_ms >= 0);
    size_t len = 0;
    uint8_t *buf = wire_pack_envelope(env, &len);
    if (buf == NULL)
        return CL_ERR_NOMEM;
    int rc = CL_OK;
    if (wire_has_pan(env)) {
        rc = client_send_secret(self->sock, buf, len);
    } else {
        rc = zmq_send(self->sock, buf, len, 0) == (int)len ? CL_OK : CL_ERR_ZMQ;
        free(buf);
    }
    if (rc != CL_OK)
        return rc;
    return await_reply(self, env->txn_id, timeout_ms, auth_out);
}
