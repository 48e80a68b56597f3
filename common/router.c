/* ROUTER framing; see router.h. */
#include "router.h"

#include "log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRAMES_MAX 3

static void close_frames(zmq_msg_t *frames, int count)
{
    for (int i = 0; i < count; i++)
        zmq_msg_close(&frames[i]);
}

int router_read(void *sock, peer_t *peer, zmq_msg_t *payload, log_every_t *drops)
{
    assert(drops != NULL);
    zmq_msg_t frames[FRAMES_MAX];
    int count = 0, flags = ZMQ_DONTWAIT;
    bool more = true;
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *m = count < FRAMES_MAX ? &frames[count] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, flags) < 0) {
            zmq_msg_close(m);
            close_frames(frames, count < FRAMES_MAX ? count : FRAMES_MAX);
            return 0;
        }
        flags = 0; /* the rest of a multipart message is already here */
        more = zmq_msg_more(m);
        if (m == &scratch)
            zmq_msg_close(m);
        count++;
    }
    int kept = count < FRAMES_MAX ? count : FRAMES_MAX;
    bool ok = (count == 2 || (count == 3 && zmq_msg_size(&frames[1]) == 0)) &&
              zmq_msg_size(&frames[0]) <= ROUTING_ID_BYTES_MAX;
    if (ok) {
        assert(zmq_msg_size(&frames[0]) <= ROUTING_ID_BYTES_MAX);
        peer->routing_id_len = zmq_msg_size(&frames[0]);
        memcpy(peer->routing_id, zmq_msg_data(&frames[0]), peer->routing_id_len);
        peer->delimiter = count == 3;
        zmq_msg_move(payload, &frames[count - 1]);
    } else {
        log_every(drops, LOG_EVERY_INTERVAL_MS, LOG_WARN,
                  "dropped a message of %d frame(s): expected routing id and one payload", count);
    }
    close_frames(frames, kept);
    return ok ? 1 : -1;
}

void router_reply(void *sock, const peer_t *peer, const void *buf, size_t len)
{
    assert(sock != NULL && peer != NULL && buf != NULL);
    assert(peer->routing_id_len <= ROUTING_ID_BYTES_MAX);
    int rc = zmq_send(sock, peer->routing_id, peer->routing_id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0 && peer->delimiter)
        rc = zmq_send(sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0)
        rc = zmq_send(sock, buf, len, ZMQ_DONTWAIT);
    if (rc < 0)
        log_debug("reply dropped (peer gone or slow): %s", zmq_strerror(zmq_errno()));
}

void router_reply_auth(void *sock, const peer_t *peer, const authorization_t *auth)
{
    size_t len = 0;
    uint8_t *buf = wire_pack_auth(auth, &len);
    if (buf != NULL)
        router_reply(sock, peer, buf, len);
    else
        log_error("out of memory packing a reply");
    free(buf);
}

void router_decline(void *sock, const peer_t *peer, const envelope_t *env, const uint8_t *hash,
                    int code, const char *why)
{
    char text[RECEIPT_TEXT_BYTES_MAX];
    snprintf(text, sizeof text, "Declined %02d: %s", code, why);
    authorization_t auth;
    wire_auth_decline(&auth, env, code, text);
    wire_auth_echo(&auth, env, hash);
    router_reply_auth(sock, peer, &auth);
}
