/* ZAP handler; see zap.h. */
#include "zap.h"

#include "errors.h"
#include "log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define ZAP_VERSION "1.0"
#define ZAP_FRAMES 7 /* version, request id, domain, address, identity, mechanism, key */
#define ZAP_REQUEST_ID_BYTES_MAX 255
#define ZAP_REQUESTS_PER_PASS_MAX 256

typedef struct zap_request {
    zmq_msg_t frames[ZAP_FRAMES];
    int count;
    bool overlong; /* more frames than a CURVE request has */
} zap_request_t;

struct zap {
    void *sock;
    ledger_t *ledger;
    uint64_t refused;
    log_every_t log_refused, log_failed;
};

int zap_new(zap_t **self_out, void *ctx, ledger_t *ledger)
{
    zap_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->ledger = ledger;
    int linger = 0;
    self->sock = zmq_socket(ctx, ZMQ_REP);
    if (self->sock == NULL || zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(self->sock, ZAP_ENDPOINT) != 0) {
        log_error("cannot bind the ZAP handler: %s", zmq_strerror(zmq_errno()));
        zap_destroy(&self);
        return CL_ERR_ZMQ;
    }
    *self_out = self;
    return CL_OK;
}

void zap_destroy(zap_t **self_p)
{
    zap_t *self = *self_p;
    if (self == NULL)
        return;
    if (self->sock != NULL)
        zmq_close(self->sock);
    free(self);
    *self_p = NULL;
}

void *zap_socket(zap_t *self) { return self->sock; }

uint64_t zap_refused(const zap_t *self) { return self->refused; }

/* Read one request's frames; false when none is waiting. */
static bool read_request(zap_t *self, zap_request_t *req)
{
    req->count = 0;
    req->overlong = false;
    for (bool more = true; more;) {
        zmq_msg_t scratch;
        zmq_msg_t *m = req->count < ZAP_FRAMES ? &req->frames[req->count] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, self->sock, req->count == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(m);
            assert(req->count == 0); /* REP delivers whole messages */
            return false;
        }
        more = zmq_msg_more(m);
        if (m == &scratch) {
            zmq_msg_close(m);
            req->overlong = true;
        } else {
            req->count++;
        }
    }
    return true;
}

static bool frame_is(zmq_msg_t *m, const char *text)
{
    size_t len = strlen(text);
    return zmq_msg_size(m) == len && memcmp(zmq_msg_data(m), text, len) == 0;
}

/* The status for a well-formed request; the key's Z85 text in `user_id` on 200. */
static const char *decide(zap_t *self, zap_request_t *req, char user_id[KEY_Z85_BYTES],
                          const char **text)
{
    assert(req->count <= ZAP_FRAMES);
    if (req->overlong || req->count != ZAP_FRAMES || !frame_is(&req->frames[0], ZAP_VERSION) ||
        !frame_is(&req->frames[2], ZAP_DOMAIN) || !frame_is(&req->frames[5], "CURVE") ||
        zmq_msg_size(&req->frames[6]) != KEY_BINARY_BYTES) {
        *text = "not a CURVE request for the coalition domain";
        return "400";
    }
    zmq_z85_encode(user_id, zmq_msg_data(&req->frames[6]), KEY_BINARY_BYTES);
    ledger_principal_t who;
    int rc = ledger_principal(self->ledger, user_id, &who);
    if (rc != CL_OK && rc != CL_ERR_NOT_FOUND) {
        log_every(&self->log_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "ZAP: cannot read the keys database (%s); refusing", cl_strerror(rc));
        *text = "cannot check keys now";
        return "500";
    }
    if (rc == CL_ERR_NOT_FOUND || who.revoked) {
        *text = rc == CL_ERR_NOT_FOUND ? "unknown key" : "revoked key";
        return "400";
    }
    *text = "OK";
    return "200";
}

static void send_frame(void *sock, const void *data, size_t len, bool more)
{
    if (zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0)
        log_error("ZAP: cannot reply: %s", zmq_strerror(zmq_errno()));
}

static void answer(zap_t *self, zap_request_t *req)
{
    char user_id[KEY_Z85_BYTES] = "";
    const char *text = "";
    const char *status = decide(self, req, user_id, &text);
    bool ok = strcmp(status, "200") == 0;
    assert(!ok || strlen(user_id) == KEY_Z85_LEN);
    if (!ok) {
        self->refused++;
        char address[64] = "";
        if (req->count > 3 && zmq_msg_size(&req->frames[3]) < sizeof address)
            memcpy(address, zmq_msg_data(&req->frames[3]), zmq_msg_size(&req->frames[3]));
        log_every(&self->log_refused, LOG_EVERY_INTERVAL_MS, LOG_WARN,
                  "ZAP refused a connection from %s: %s (%s); %llu refused in all", address, text,
                  status, (unsigned long long)self->refused);
    }
    /* The request id echoes frame 1 (the REP envelope is handled by the socket). */
    const void *id = req->count > 1 ? zmq_msg_data(&req->frames[1]) : "";
    size_t id_len = req->count > 1 ? zmq_msg_size(&req->frames[1]) : 0;
    if (id_len > ZAP_REQUEST_ID_BYTES_MAX)
        id_len = 0;
    send_frame(self->sock, ZAP_VERSION, strlen(ZAP_VERSION), true);
    send_frame(self->sock, id, id_len, true);
    send_frame(self->sock, status, strlen(status), true);
    send_frame(self->sock, text, strlen(text), true);
    send_frame(self->sock, user_id, ok ? KEY_Z85_LEN : 0, true);
    send_frame(self->sock, "", 0, false);
}

void zap_handle(zap_t *self)
{
    zap_request_t req;
    for (int i = 0; i < ZAP_REQUESTS_PER_PASS_MAX && read_request(self, &req); i++) {
        answer(self, &req);
        for (int f = 0; f < req.count; f++)
            zmq_msg_close(&req.frames[f]);
    }
}
