/* The agent's metrics (Prometheus text on GET /metrics): till requests by type and
 * response code, "stored offline" answers, the outbox's depth and its oldest request's
 * age, requests in flight and held, whether the broker connection is up, and the local
 * journal's sequence. One set per process, made by agent_metrics_start before the event
 * loop; until then every hook does nothing. Hooks are relaxed atomics, no syscall. */
#ifndef COALITION_AGENT_METRICS_H
#define COALITION_AGENT_METRICS_H

#include "metrics.h"
#include "metrics_http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Off unless asked: several agents may share a host (one per site). */
#define AGENT_METRICS_DEFAULT "off"
#define AGENT_METRICS_SUGGESTED "127.0.0.1:9451"
#define AGENT_METRICS_TYPES_MAX 32 /* request kinds (envelope bodies) */
#define AGENT_METRICS_CODES_MAX 100
_Static_assert(AGENT_METRICS_TYPES_MAX <= METRICS_LABEL_VALUES_MAX, "a label table holds them");
_Static_assert(AGENT_METRICS_CODES_MAX <= METRICS_LABEL_VALUES_MAX, "a label table holds them");

/* An address given by the operator must be served: CL_ERR_IO when it cannot be bound. */
int agent_metrics_start(const metrics_http_addr_t *addr);
void agent_metrics_stop(void);
metrics_t *agent_metrics_registry(void);

/* Event-loop thread only. A till's request of `kind` (an envelope body case, 0 when it
 * could not be read) answered with `code`; `offline` when it was told "stored offline". */
void agent_metrics_answer(int kind, int code, bool offline);
/* The loop's state, once a tick. */
typedef struct agent_metrics_state {
    size_t outbox, in_flight, held;
    int64_t oldest_ms; /* wall clock ms the oldest outbox request was taken; 0: none */
    uint64_t journal_seq;
    bool connected;
} agent_metrics_state_t;
void agent_metrics_update(const agent_metrics_state_t *state);
/* The last state agent_metrics_update was given, served or not (the HTTP API's health;
 * any thread). false until the loop has reported once. */
bool agent_metrics_last(agent_metrics_state_t *out);

#endif
