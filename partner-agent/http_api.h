/* The agent's local HTTP/JSON API (libmicrohttpd): the same till requests as the ipc
 * socket, for checkouts written in any language. It is a till of its own agent: each
 * request goes through coalition_pos to the agent's till socket, so it gets the same
 * outbox, idempotency and replies as any till. The routes and their status codes are
 * described in partner-agent/openapi.json.
 *
 *   POST /v1/earn | /v1/burn | /v1/refund | /v1/void | /v1/enroll   (JSON body)
 *   GET  /v1/members/{id}/balance
 *   GET  /v1/health
 *
 * Bounded: at most HTTP_API_CONNECTIONS_MAX connections (one thread each), bodies of
 * HREQ_BODY_BYTES_MAX bytes, idle connections closed after HTTP_API_IDLE_SECONDS. */
#ifndef COALITION_HTTP_API_H
#define COALITION_HTTP_API_H

#include <netinet/in.h>
#include <stdbool.h>

#define HTTP_API_CONNECTIONS_MAX 64
#define HTTP_API_IDLE_SECONDS 30
#define HTTP_API_ADDRESS_BYTES_MAX 64
/* The agent answers a till within its --till-wait-ms; the API waits that long and this
 * much more before it answers 503 (retry with the same key). */
#define HTTP_API_ANSWER_MARGIN_MS 2000

typedef struct http_api http_api_t;

/* What GET /v1/health reports of the agent besides "the API is up". */
typedef struct http_api_health {
    bool known;            /* the agent's loop has reported at least once */
    bool broker_connected; /* its connection to the broker is up */
    size_t outbox;         /* requests stored, not answered by the broker yet */
    int64_t oldest_ms;     /* wall-clock ms the oldest of them was taken; 0: none */
} http_api_health_t;
typedef void (*http_api_health_fn)(http_api_health_t *out);

typedef struct http_api_options {
    struct sockaddr_in address;
    const char *agent_endpoint; /* the agent's till socket */
    const char *partner_id;
    const char *site_id;
    int answer_timeout_ms;
    http_api_health_fn health; /* NULL: "status" only */
} http_api_options_t;

/* "PORT" (on 127.0.0.1) or "IPv4:PORT". CL_OK or CL_ERR_INVALID. */
int http_api_parse_address(const char *text, struct sockaddr_in *out);
bool http_api_address_loopback(const struct sockaddr_in *address);

/* Bind and start serving (threads of its own). CL_ERR_IO when the port cannot be bound,
 * CL_ERR_INVALID when no till can connect to agent_endpoint (said in the log). */
int http_api_start(http_api_t **out, const http_api_options_t *opts);
/* Stop accepting, finish the requests being served, free everything. */
void http_api_stop(http_api_t **self_p);

#endif
