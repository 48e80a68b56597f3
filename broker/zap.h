/* The broker's ZAP handler (ZeroMQ RFC 27): libzmq asks it, over inproc, whether a CURVE
 * client key may connect, and it answers from the ledger's keys database. It fails
 * closed: an unknown or revoked key, another domain or mechanism, a malformed request,
 * or a ledger that cannot be read gets 400 or 500, and the
 * partner socket sets ZMQ_ZAP_ENFORCE_DOMAIN so that libzmq refuses every handshake when
 * no handler answers. A key admitted here is the message's User-Id (its Z85 text); the
 * front end looks it up again for every message, so a revocation cuts a live connection
 * off at its next message. */
#ifndef COALITION_ZAP_H
#define COALITION_ZAP_H

#include "ledger.h"

#include <stdbool.h>
#include <stdint.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_DOMAIN "coalition"

typedef struct zap zap_t;

/* Bind the handler in `ctx`; must happen before the partner socket binds. */
int zap_new(zap_t **self_out, void *ctx, ledger_t *ledger);
void zap_destroy(zap_t **self_p);
void *zap_socket(zap_t *self);
/* Answer every request waiting (at most a bounded number per call). */
void zap_handle(zap_t *self);
/* Counters for logs and tests. */
uint64_t zap_refused(const zap_t *self);

#endif
