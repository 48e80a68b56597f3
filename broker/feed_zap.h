/* Who may read the journal feed when it is bound beyond loopback: both feed sockets are
 * CURVE servers with the broker's key, and this ZAP handler (in the feed's own ZeroMQ
 * context) admits only the public keys listed in the --feed-clients file. It fails
 * closed: an unlisted key, another mechanism or a malformed request gets 400. */
#ifndef COALITION_FEED_ZAP_H
#define COALITION_FEED_ZAP_H

#include "keys.h"

#include <stddef.h>

#define FEED_ZAP_DOMAIN "coalition-feed"
#define FEED_CLIENTS_MAX 256
#define FEED_CLIENTS_LINE_BYTES_MAX 256

/* The --feed-clients file: one Z85 public key a line; '#' starts a comment line. */
typedef struct feed_clients {
    size_t count;
    char keys[FEED_CLIENTS_MAX][KEY_Z85_BYTES];
} feed_clients_t;

/* CL_ERR_INVALID with `why` (naming the line) for anything but keys and comments, no key
 * at all, or more than FEED_CLIENTS_MAX. */
int feed_clients_load(const char *path, feed_clients_t *out, char *why, size_t why_size);

typedef struct feed_zap feed_zap_t;

/* Bind the ZAP handler in `ctx`: before any CURVE socket of `ctx` binds. */
int feed_zap_new(feed_zap_t **self_out, void *ctx, const feed_clients_t *clients);
void feed_zap_destroy(feed_zap_t **self_p);
void *feed_zap_socket(feed_zap_t *self);
/* Answer every request waiting (at most a bounded number per call). */
void feed_zap_handle(feed_zap_t *self);

#endif
