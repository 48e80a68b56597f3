/* The agent's metrics; see agent_metrics.h. A process-wide set, as in the broker
 * (broker_metrics.c): made before the event loop runs and freed after it returns. */
#include "agent_metrics.h"

#include "clock.h"
#include "errors.h"
#include "log.h"
#include "wire.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CODE_TEXT_BYTES 4

typedef struct agent_metrics {
    metrics_t *registry;
    metrics_http_t *http;
    metrics_labels_t *types, *codes;
    metrics_family_t *requests, *offline, *outbox, *oldest, *in_flight, *held, *connected,
        *journal_seq, *started;
    size_t code_slots[AGENT_METRICS_CODES_MAX]; /* label index + 1 of each code, 0: none yet */
} agent_metrics_t;

static agent_metrics_t *am;

static int render(void *ctx, char **text_out, size_t *len_out)
{
    return metrics_render(ctx, text_out, len_out);
}

static int make_families(agent_metrics_t *m)
{
    metrics_t *r = m->registry;
    assert(r != NULL);
    m->types = metrics_labels(r, "type", AGENT_METRICS_TYPES_MAX, "other");
    m->codes = metrics_labels(r, "code", AGENT_METRICS_CODES_MAX, "other");
    if (m->types == NULL || m->codes == NULL)
        return CL_ERR_NOMEM;
    m->requests = metrics_counter(r, "coalition_agent_requests_total",
                                  "Till requests answered, by type and the response code the till "
                                  "got (91 with pending or offline set: not final)",
                                  m->types, m->codes);
    m->offline =
        metrics_counter(r, "coalition_agent_stored_offline_total",
                        "Till requests answered \"stored offline\" (kept, sent later)", NULL, NULL);
    m->outbox = metrics_gauge(r, "coalition_agent_outbox_requests",
                              "Requests stored in the outbox, not answered by the broker yet");
    m->oldest = metrics_age(r, "coalition_agent_oldest_pending_seconds",
                            "Age of the oldest request in the outbox (0 when empty)");
    m->in_flight = metrics_gauge(r, "coalition_agent_in_flight_requests",
                                 "Requests sent to the broker and not answered yet");
    m->held = metrics_gauge(r, "coalition_agent_held_requests",
                            "Requests held: in flight, queued, stored offline, inquiries");
    m->connected = metrics_gauge(r, "coalition_agent_broker_connected",
                                 "1 while a connection to the broker is up (handshake done)");
    m->journal_seq = metrics_gauge(r, "coalition_agent_journal_seq",
                                   "Last record of the agent's local journal of answers");
    m->started = metrics_gauge(r, "process_start_time_seconds",
                               "Start time of the process since the Unix epoch in seconds");
    bool all = m->requests && m->offline && m->outbox && m->oldest && m->in_flight && m->held &&
               m->connected && m->journal_seq && m->started;
    return all ? CL_OK : CL_ERR_NOMEM;
}

static void free_metrics(agent_metrics_t **m_p)
{
    agent_metrics_t *m = *m_p;
    if (m == NULL)
        return;
    metrics_http_destroy(&m->http);
    metrics_destroy(&m->registry);
    free(m);
    *m_p = NULL;
}

int agent_metrics_start(const metrics_http_addr_t *addr)
{
    assert(am == NULL);
    agent_metrics_t *m = calloc(1, sizeof *m);
    int rc = m != NULL ? metrics_new(&m->registry) : CL_ERR_NOMEM;
    if (rc == CL_OK)
        rc = make_families(m);
    if (rc == CL_OK && !addr->off)
        rc = metrics_http_new(&m->http, addr, render, m->registry);
    if (rc != CL_OK) {
        free_metrics(&m);
        return rc;
    }
    metrics_set(m->started, clock_wall_ms() / 1000);
    if (!addr->off)
        log_info("metrics on http://%s%s%s", addr->text, METRICS_HTTP_PATH,
                 addr->loopback ? "" : " (NOT loopback: readable from the network)");
    am = m;
    return CL_OK;
}

void agent_metrics_stop(void) { free_metrics(&am); }

metrics_t *agent_metrics_registry(void) { return am != NULL ? am->registry : NULL; }

void agent_metrics_answer(int kind, int code, bool offline)
{
    if (am == NULL)
        return;
    Coalition__Envelope probe = COALITION__ENVELOPE__INIT;
    probe.body_case = (Coalition__Envelope__BodyCase)kind;
    const char *type = kind != 0 ? wire_body_name(&probe) : "unreadable";
    size_t c = metrics_label_overflow(am->codes);
    if (code >= 0 && code < AGENT_METRICS_CODES_MAX && am->code_slots[code] == 0) {
        char text[CODE_TEXT_BYTES];
        snprintf(text, sizeof text, "%02d", code);
        am->code_slots[code] = metrics_label_index(am->codes, text) + 1;
    }
    if (code >= 0 && code < AGENT_METRICS_CODES_MAX)
        c = am->code_slots[code] - 1;
    size_t t = metrics_label_index(am->types, type);
    assert(t <= metrics_label_overflow(am->types) && c <= metrics_label_overflow(am->codes));
    metrics_add(am->requests, t, c, 1);
    if (offline)
        metrics_add(am->offline, 0, 0, 1);
}

/* The loop's last state for agent_metrics_last, kept whether metrics are served or not:
 * each field on its own (a reader may see two ticks mixed, each value real). */
static _Atomic bool last_known, last_connected;
static _Atomic size_t last_outbox;
static _Atomic int64_t last_oldest_ms;

bool agent_metrics_last(agent_metrics_state_t *out)
{
    memset(out, 0, sizeof *out);
    out->connected = last_connected;
    out->outbox = last_outbox;
    out->oldest_ms = last_oldest_ms;
    return last_known;
}

void agent_metrics_update(const agent_metrics_state_t *s)
{
    last_connected = s->connected;
    last_outbox = s->outbox;
    last_oldest_ms = s->outbox > 0 ? s->oldest_ms : 0;
    last_known = true;
    if (am == NULL)
        return;
    assert(s->in_flight <= s->held);
    metrics_set(am->outbox, (int64_t)s->outbox);
    metrics_set(am->oldest, s->outbox > 0 ? s->oldest_ms : 0);
    metrics_set(am->in_flight, (int64_t)s->in_flight);
    metrics_set(am->held, (int64_t)s->held);
    metrics_set(am->connected, s->connected ? 1 : 0);
    metrics_set(am->journal_seq, (int64_t)s->journal_seq);
}
