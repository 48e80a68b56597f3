/* The broker's metrics (Prometheus text on GET /metrics): requests by partner and
 * response code, write rounds (batch size, commit and fsync latency), the writer's queue,
 * partner connections, the journal sequence and the ledger map's use. One set per
 * process: broker_metrics_start makes it before the I/O thread runs; until then (and in
 * unit tests of the writer) every hook does nothing. Hooks cost relaxed atomic adds and
 * no syscall; the writer's run once per round, the I/O thread's once per reply. */
#ifndef COALITION_BROKER_METRICS_H
#define COALITION_BROKER_METRICS_H

#include "ledger.h"
#include "metrics.h"
#include "metrics_http.h"
#include "settle.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BROKER_METRICS_DEFAULT "127.0.0.1:9450"
/* Participants with a label of their own (partners, banks, the operator's requests);
 * the rest count under partner="other". */
#define BROKER_METRICS_PARTNERS_MAX (2 * SETTLE_PARTNERS_MAX)
/* Response codes are two digits. */
#define BROKER_METRICS_CODES_MAX 100
_Static_assert(BROKER_METRICS_PARTNERS_MAX <= METRICS_LABEL_VALUES_MAX, "a label table holds them");
_Static_assert(BROKER_METRICS_CODES_MAX <= METRICS_LABEL_VALUES_MAX, "a label table holds them");

/* Make the metrics and, unless addr->off, serve them. A listener that cannot bind stops
 * the broker when `required` (an address the operator gave), or is only warned about. */
int broker_metrics_start(const metrics_http_addr_t *addr, bool required);
void broker_metrics_stop(void);
/* The registry (NULL before start), for tests and coalitionctl. */
metrics_t *broker_metrics_registry(void);

/* I/O thread: a reply (packed Authorization) or a decline to a request naming
 * `partner_id` (NULL: none could be read). A reply that is not 03, 30 or 57 gives its
 * partner a label; a decline decided before the ledger only uses one it has. */
void broker_metrics_reply(const char *partner_id, const uint8_t *reply, size_t len);
void broker_metrics_decline(const char *partner_id, int code);
/* Requests handed to the writer (+) and taken by it (-). */
void broker_metrics_queued(int64_t delta);
void broker_metrics_connections(size_t open);
/* Writer thread: one round of `requests` that took `round_us`; one commit call. */
void broker_metrics_round(size_t requests, int64_t round_us);
void broker_metrics_commit(int64_t commit_us);
/* Writer thread (or before it runs): journal sequence and map use. */
void broker_metrics_ledger(ledger_t *ledger);

/* The response code of a packed Authorization (0 when absent: proto3's default is 00),
 * read without unpacking; -1 when the bytes are not a well-formed message. */
int broker_metrics_auth_code(const uint8_t *reply, size_t len);

#endif
