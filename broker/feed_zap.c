/* The feed's ZAP handler and its allow-list: see feed_zap.h. Invariant: 200 only for a
 * well-formed CURVE request of FEED_ZAP_DOMAIN whose key is listed. */
#include "feed_zap.h"

#include "errors.h"
#include "log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define ZAP_ENDPOINT_INPROC "inproc://zeromq.zap.01"
#define ZAP_VERSION_TEXT "1.0"
#define ZAP_REQUEST_FRAMES 7 /* version, id, domain, address, identity, mechanism, key */
#define ZAP_ID_BYTES_MAX 255
#define ZAP_PER_CALL_MAX 64

struct feed_zap {
    void *sock;
    const feed_clients_t *clients;
    log_every_t refused;
};

static int parse_line(char *line, feed_clients_t *out)
{
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '#' || line[0] == '\0')
        return CL_OK;
    if (!keys_z85_valid(line) || strlen(line) != KEY_Z85_LEN || out->count == FEED_CLIENTS_MAX)
        return CL_ERR_INVALID;
    memcpy(out->keys[out->count++], line, KEY_Z85_BYTES);
    return CL_OK;
}

int feed_clients_load(const char *path, feed_clients_t *out, char *why, size_t why_size)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(why, why_size, "cannot open %s", path);
        return CL_ERR_IO;
    }
    char line[FEED_CLIENTS_LINE_BYTES_MAX];
    int rc = CL_OK;
    for (int n = 1; rc == CL_OK && fgets(line, sizeof line, f) != NULL; n++) {
        rc = parse_line(line, out);
        if (rc != CL_OK)
            snprintf(why, why_size, "%s line %d: not a Z85 public key (or over %d keys)", path, n,
                     FEED_CLIENTS_MAX);
    }
    fclose(f);
    if (rc == CL_OK && out->count == 0) {
        snprintf(why, why_size, "%s lists no key", path);
        rc = CL_ERR_INVALID;
    }
    assert(rc != CL_OK || (out->count >= 1 && out->count <= FEED_CLIENTS_MAX));
    return rc;
}

int feed_zap_new(feed_zap_t **self_out, void *ctx, const feed_clients_t *clients)
{
    assert(clients != NULL && clients->count >= 1);
    feed_zap_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->clients = clients;
    int linger = 0;
    self->sock = zmq_socket(ctx, ZMQ_REP);
    if (self->sock == NULL || zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(self->sock, ZAP_ENDPOINT_INPROC) != 0) {
        log_error("feed: cannot bind its ZAP handler: %s", zmq_strerror(zmq_errno()));
        feed_zap_destroy(&self);
        return CL_ERR_ZMQ;
    }
    *self_out = self;
    return CL_OK;
}

void feed_zap_destroy(feed_zap_t **self_p)
{
    feed_zap_t *self = *self_p;
    if (self == NULL)
        return;
    if (self->sock != NULL)
        zmq_close(self->sock);
    free(self);
    *self_p = NULL;
}

void *feed_zap_socket(feed_zap_t *self) { return self->sock; }

static bool frame_is(zmq_msg_t *m, const char *text)
{
    return zmq_msg_size(m) == strlen(text) && memcmp(zmq_msg_data(m), text, strlen(text)) == 0;
}

static bool listed(const feed_zap_t *self, zmq_msg_t frames[ZAP_REQUEST_FRAMES], int count,
                   char z85[KEY_Z85_BYTES])
{
    if (count != ZAP_REQUEST_FRAMES || !frame_is(&frames[0], ZAP_VERSION_TEXT) ||
        !frame_is(&frames[2], FEED_ZAP_DOMAIN) || !frame_is(&frames[5], "CURVE") ||
        zmq_msg_size(&frames[6]) != KEY_BINARY_BYTES)
        return false;
    zmq_z85_encode(z85, zmq_msg_data(&frames[6]), KEY_BINARY_BYTES);
    for (size_t i = 0; i < self->clients->count; i++)
        if (memcmp(self->clients->keys[i], z85, KEY_Z85_LEN) == 0)
            return true;
    return false;
}

/* Read one request's frames; false when none is waiting. More frames than a CURVE
 * request has make it malformed (*overlong). */
static bool read_request(feed_zap_t *self, zmq_msg_t frames[ZAP_REQUEST_FRAMES], int *count,
                         bool *overlong)
{
    *count = 0;
    *overlong = false;
    for (bool more = true; more;) {
        zmq_msg_t scratch;
        zmq_msg_t *m = *count < ZAP_REQUEST_FRAMES ? &frames[*count] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, self->sock, *count == 0 && !*overlong ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(m);
            assert(*count == 0); /* REP delivers whole messages */
            return false;
        }
        more = zmq_msg_more(m);
        if (m == &scratch) {
            zmq_msg_close(m);
            *overlong = true;
        } else {
            (*count)++;
        }
    }
    return true;
}

static bool answer_one(feed_zap_t *self)
{
    zmq_msg_t frames[ZAP_REQUEST_FRAMES];
    int count = 0;
    bool overlong = false;
    if (!read_request(self, frames, &count, &overlong))
        return false;
    char z85[KEY_Z85_BYTES] = "";
    bool ok = !overlong && listed(self, frames, count, z85);
    if (!ok)
        log_every(&self->refused, LOG_EVERY_INTERVAL_MS, LOG_WARN,
                  "feed: refused a subscriber's key %.8s...: not in --feed-clients", z85);
    size_t id_len =
        count > 1 && zmq_msg_size(&frames[1]) <= ZAP_ID_BYTES_MAX ? zmq_msg_size(&frames[1]) : 0;
    const char *status = ok ? "200" : "400", *text = ok ? "OK" : "key not listed";
    zmq_send(self->sock, ZAP_VERSION_TEXT, strlen(ZAP_VERSION_TEXT), ZMQ_SNDMORE);
    zmq_send(self->sock, id_len > 0 ? zmq_msg_data(&frames[1]) : "", id_len, ZMQ_SNDMORE);
    zmq_send(self->sock, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(self->sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(self->sock, z85, ok ? KEY_Z85_LEN : 0, ZMQ_SNDMORE);
    zmq_send(self->sock, "", 0, 0);
    for (int i = 0; i < count; i++)
        zmq_msg_close(&frames[i]);
    return true;
}

void feed_zap_handle(feed_zap_t *self)
{
    for (int i = 0; i < ZAP_PER_CALL_MAX && answer_one(self); i++) {
    }
}
