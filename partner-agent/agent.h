/* coalition-agent's core: one per merchant site. Tills talk to it over a local ROUTER;
 * it keeps one DEALER connection to the broker with ZMTP heartbeats.
 *
 *   till ─► validate, stamp partner+site ─► join a pending request with the same key, or
 *           outbox (fsync) ─► send in arrival order, window-bounded, never before the
 *           pending request it depends on ─► broker
 *   broker reply echoing the request's hash ─► journal + outbox delete (fsync) ─► tills
 *   no reply by a till's deadline:
 *       earn, refund, void, enroll ─► that till told "stored offline"; kept and resent
 *       burn ─► every till waiting on it told 91; if it may have reached the broker, a
 *               void is queued
 *       balance ─► till told 91
 *   unanswered requests are resent with the same txn_id (Lazy Pirate), backing off
 *   exponentially with jitter; the broker's idempotency makes that safe. The lifecycle
 *   of one request is drawn in pending.h. */
#ifndef COALITION_AGENT_H
#define COALITION_AGENT_H

#define AGENT_TILL_WAIT_MS_DEFAULT 3000
#define AGENT_RETRY_MS_DEFAULT 1000
#define AGENT_WINDOW_DEFAULT 256
#define AGENT_WINDOW_MAX 4096
#define AGENT_HEARTBEAT_MS_DEFAULT 1000
/* Authorizations are kept in the local journal this long, then pruned. */
#define AGENT_JOURNAL_DAYS_DEFAULT 400
#define AGENT_JOURNAL_DAYS_MAX 3650
/* Requests held at once (in flight plus stored offline); past it tills get 91. */
#define AGENT_PENDING_MAX 200000
/* Prefix of txn ids the agent makes itself (reversals); tills may not use it. Its users
 * include wire.h, which owns it: the broker knows the agent's safety voids by it. */
#define AGENT_TXN_PREFIX WIRE_AGENT_TXN_PREFIX

#define AGENT_SITE_DEFAULT "main"

#include "keys.h"

typedef struct agent_options {
    const char *partner_id;
    const char *site_id;
    const char *broker_endpoint;
    const char *listen_endpoint;
    const char *data_dir;
    int till_wait_ms;
    int retry_ms;
    int window;
    int heartbeat_ms;
    int journal_days;
    /* CURVE: this agent's key pair and the broker's public key. NULL only with
     * --insecure (plain TCP to a loopback broker). */
    const key_pair_t *key;
    const char *broker_public_z85;
} agent_options_t;

/* Runs until stop_fd (see shutdown.h) is readable. */
int agent_run(const agent_options_t *opts, int stop_fd);

#endif
