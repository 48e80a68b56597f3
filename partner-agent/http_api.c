/* The agent's HTTP/JSON API: routing, bodies, and a pool of till connections to the
 * agent. See http_api.h; parsing and rendering are in http_request.c. */
#include "http_api.h"

#include "clock.h"
#include "errors.h"
#include "http_request.h"
#include "log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TERMINAL_ID "http"
#define MEMBERS_PREFIX "/v1/members/"
#define BALANCE_SUFFIX "/balance"
#define JSON_TYPE "application/json"
#define IDEMPOTENCY_KEY "Idempotency-Key"

/* One till connection per request being served at most: the pool never holds more. */
struct http_api {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;
    cpos_t *idle[HTTP_API_CONNECTIONS_MAX];
    size_t idle_count;
    char endpoint[512];
    char partner_id[PARTNER_ID_LEN_MAX + 1];
    char site_id[SITE_ID_LEN_MAX + 1];
    int answer_timeout_ms;
    /* libmicrohttpd's messages (about clients, mostly), from any of its threads. */
    pthread_mutex_t log_lock;
    log_every_t log_every;
    http_api_health_fn health;
};

/* A request's body as it arrives. Cleared before it is freed: it may hold a card. */
typedef struct body {
    size_t len;
    bool too_large;
    char bytes[HREQ_BODY_BYTES_MAX];
} body_t;

int http_api_parse_address(const char *text, struct sockaddr_in *out)
{
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    char host[HTTP_API_ADDRESS_BYTES_MAX] = "127.0.0.1";
    const char *colon = strrchr(text, ':');
    const char *port_text = colon != NULL ? colon + 1 : text;
    if (colon != NULL) {
        size_t n = (size_t)(colon - text);
        if (n == 0 || n >= sizeof host)
            return CL_ERR_INVALID;
        memcpy(host, text, n);
        host[n] = '\0';
    }
    char *end = NULL;
    unsigned long port = strtoul(port_text, &end, 10);
    if (end == port_text || *end != '\0' || port < 1 || port > 65535 ||
        inet_pton(AF_INET, host, &out->sin_addr) != 1)
        return CL_ERR_INVALID;
    out->sin_port = htons((uint16_t)port);
    assert(out->sin_port != 0 && out->sin_family == AF_INET);
    return CL_OK;
}

bool http_api_address_loopback(const struct sockaddr_in *address)
{
    return (ntohl(address->sin_addr.s_addr) >> 24) == 127;
}

static cpos_t *pos_take(http_api_t *api)
{
    pthread_mutex_lock(&api->lock);
    assert(api->idle_count <= HTTP_API_CONNECTIONS_MAX);
    cpos_t *pos = api->idle_count > 0 ? api->idle[--api->idle_count] : NULL;
    pthread_mutex_unlock(&api->lock);
    if (pos == NULL) {
        pos = cpos_new(api->endpoint, TERMINAL_ID);
        if (pos != NULL)
            cpos_set_timeout(pos, api->answer_timeout_ms);
    }
    return pos;
}

static void pos_give_back(http_api_t *api, cpos_t *pos)
{
    assert(pos != NULL);
    pthread_mutex_lock(&api->lock);
    if (api->idle_count < HTTP_API_CONNECTIONS_MAX) {
        api->idle[api->idle_count++] = pos;
        pos = NULL;
    }
    pthread_mutex_unlock(&api->lock);
    cpos_destroy(&pos); /* only past the bound, which the connection limit prevents */
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, json_t *o,
                             const char *allow)
{
    assert(status >= MHD_HTTP_OK && status < 600);
    /* Into memory of our own: what jansson allocates is freed by jansson's free. */
    size_t len = o != NULL ? json_dumpb(o, NULL, 0, JSON_COMPACT) : 0;
    char *text = len > 0 ? malloc(len + 2) : NULL; /* a line: ends in \n */
    if (text != NULL && json_dumpb(o, text, len, JSON_COMPACT) != len) {
        free(text);
        text = NULL;
    }
    json_decref(o);
    if (text == NULL)
        return MHD_NO; /* out of memory: the connection is closed */
    text[len++] = '\n';
    text[len] = '\0';
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, JSON_TYPE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *code,
                                   const char *field, const char *message, const char *allow)
{
    assert(status >= MHD_HTTP_BAD_REQUEST && message != NULL);
    hreq_error_t err;
    hreq_error_set(&err, code, field, "%s", message);
    return reply(c, status, hreq_error_json(&err), allow);
}

static enum MHD_Result count_key(void *cls, enum MHD_ValueKind kind, const char *name,
                                 const char *value)
{
    (void)kind;
    (void)value;
    if (strcasecmp(name, IDEMPOTENCY_KEY) == 0)
        ++*(unsigned *)cls;
    return MHD_YES;
}

/* The Idempotency-Key header (NULL: none). Given twice it names no one request: false. */
static bool idempotency_key(struct MHD_Connection *c, const char **key)
{
    unsigned count = 0;
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_key, &count);
    *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, IDEMPOTENCY_KEY);
    assert((count == 0) == (*key == NULL));
    return count <= 1;
}

static enum MHD_Result reply_two_keys(struct MHD_Connection *c)
{
    return reply_error(c, MHD_HTTP_BAD_REQUEST, "invalid_field", IDEMPOTENCY_KEY,
                       "give one Idempotency-Key header, not several", NULL);
}

/* Send a parsed request to the agent and answer with what the till would be told. */
static enum MHD_Result serve(http_api_t *api, struct MHD_Connection *c, hreq_t *req)
{
    cpos_t *pos = pos_take(api);
    if (pos == NULL) {
        pan_clear(req->card, sizeof req->card);
        log_error("http %s %s: no till connection to %s", hreq_kind_name(req->kind), req->txn_id,
                  api->endpoint);
        return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "",
                           "cannot connect to the agent; retry with the same Idempotency-Key",
                           NULL);
    }
    cpos_result_t result;
    int rc = hreq_call(pos, req, &result);
    pos_give_back(api, pos);
    assert(req->card[0] == '\0');
    if (rc != CPOS_OK) {
        log_warn("http %s %s: the agent did not answer in %d ms", hreq_kind_name(req->kind),
                 req->txn_id, api->answer_timeout_ms);
        return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "",
                           "the agent did not answer in time; retry with the same "
                           "Idempotency-Key",
                           NULL);
    }
    unsigned status = hreq_status(&result);
    log_debug("http %s %s: %u, code %02d", hreq_kind_name(req->kind), req->txn_id, status,
              result.code);
    return reply(c, status, hreq_result_json(&result), NULL);
}

static enum MHD_Result serve_post(http_api_t *api, struct MHD_Connection *c, hreq_kind_t kind,
                                  const body_t *b)
{
    assert(kind < HREQ_KIND_COUNT && b->len <= sizeof b->bytes);
    if (b->too_large) {
        char message[HREQ_MESSAGE_BYTES];
        snprintf(message, sizeof message, "the body is larger than %d bytes", HREQ_BODY_BYTES_MAX);
        return reply_error(c, MHD_HTTP_BAD_REQUEST, "body_too_large", "", message, NULL);
    }
    const char *key = NULL;
    if (!idempotency_key(c, &key))
        return reply_two_keys(c);
    hreq_t req;
    hreq_error_t err;
    if (hreq_parse(kind, b->bytes, b->len, key, &req, &err) != CL_OK)
        return reply(c, MHD_HTTP_BAD_REQUEST, hreq_error_json(&err), NULL);
    return serve(api, c, &req);
}

static bool is_balance_path(const char *url);

static enum MHD_Result serve_balance(http_api_t *api, struct MHD_Connection *c, const char *url)
{
    assert(is_balance_path(url));
    size_t n = strlen(url), prefix = strlen(MEMBERS_PREFIX), suffix = strlen(BALANCE_SUFFIX);
    assert(n > prefix + suffix);
    char member[MEMBER_ID_LEN_MAX + 2];
    size_t len = n - prefix - suffix;
    if (len >= sizeof member)
        len = sizeof member - 1; /* too long: refused as such below */
    memcpy(member, url + prefix, len);
    member[len] = '\0';
    const char *key = NULL;
    if (!idempotency_key(c, &key))
        return reply_two_keys(c);
    hreq_t req;
    hreq_error_t err;
    if (hreq_balance(member, key, &req, &err) != CL_OK)
        return reply(c, MHD_HTTP_BAD_REQUEST, hreq_error_json(&err), NULL);
    return serve(api, c, &req);
}

/* 200 while the API serves. "broker" says whether the agent reaches the clearinghouse
 * ("connected", "unreachable": earns are stored offline, burns get 91; "starting"),
 * with the outbox's depth and its oldest request's age: a load balancer keeps the till
 * on this agent either way, a monitor alerts on "unreachable" or a growing outbox. */
static enum MHD_Result serve_health(http_api_t *api, struct MHD_Connection *c)
{
    http_api_health_t h = {false, false, 0, 0};
    if (api->health != NULL)
        api->health(&h);
    int64_t now = clock_wall_ms();
    double age_s = h.outbox > 0 && h.oldest_ms > 0 && now > h.oldest_ms
                       ? (double)(now - h.oldest_ms) / 1000.0
                       : 0.0;
    const char *broker = !h.known ? "starting" : h.broker_connected ? "connected" : "unreachable";
    assert(age_s >= 0.0);
    return reply(c, MHD_HTTP_OK,
                 json_pack("{s:s, s:s, s:s, s:s, s:I, s:f}", "status", "ok", "partner",
                           api->partner_id, "site", api->site_id, "broker", broker,
                           "outbox_requests", (json_int_t)h.outbox, "oldest_pending_seconds",
                           age_s),
                 NULL);
}

static bool is_balance_path(const char *url)
{
    size_t n = strlen(url), prefix = strlen(MEMBERS_PREFIX), suffix = strlen(BALANCE_SUFFIX);
    return n > prefix + suffix && strncmp(url, MEMBERS_PREFIX, prefix) == 0 &&
           strcmp(url + n - suffix, BALANCE_SUFFIX) == 0;
}

static enum MHD_Result route(http_api_t *api, struct MHD_Connection *c, const char *url,
                             const char *method, const body_t *b)
{
    assert(url != NULL && method != NULL && b != NULL);
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (strcmp(url, "/v1/health") == 0)
        return get ? serve_health(api, c)
                   : reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "",
                                 "use GET", "GET");
    if (is_balance_path(url))
        return get ? serve_balance(api, c, url)
                   : reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "",
                                 "use GET", "GET");
    hreq_kind_t kind = strncmp(url, "/v1/", 4) == 0 ? hreq_kind_of(url + 4) : HREQ_KIND_COUNT;
    if (kind == HREQ_KIND_COUNT)
        return reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "",
                           "no such resource; see openapi.json", NULL);
    if (!post)
        return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "",
                           "use POST with a JSON body", "POST");
    return serve_post(api, c, kind, b);
}

/* A body larger than the bound is refused as soon as its length is known. */
static bool declared_too_large(struct MHD_Connection *c)
{
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    char *end = NULL;
    unsigned long long n = cl != NULL ? strtoull(cl, &end, 10) : 0;
    return cl != NULL && end != cl && n > HREQ_BODY_BYTES_MAX;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    (void)version;
    http_api_t *api = cls;
    body_t *b = *req_cls;
    if (b == NULL) {
        b = calloc(1, sizeof *b);
        if (b == NULL)
            return MHD_NO;
        *req_cls = b;
        if (declared_too_large(c)) {
            b->too_large = true;
            return serve_post(api, c, HREQ_EARN, b); /* answered now; the rest is dropped */
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (b->too_large || b->len + *upload_size > sizeof b->bytes)
            b->too_large = true;
        else
            memcpy(b->bytes + b->len, upload_data, *upload_size);
        b->len += b->too_large ? 0 : *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    assert(b->len <= sizeof b->bytes);
    return route(api, c, url, method, b);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    body_t *b = *req_cls;
    if (b != NULL)
        pan_clear(b, sizeof *b);
    free(b);
    *req_cls = NULL;
}

/* libmicrohttpd's own messages (a client that hung up mid-request, say) as lines of the
 * agent's log, at most one a second: any client can cause them. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    http_api_t *api = cls;
    char text[HREQ_MESSAGE_BYTES];
    vsnprintf(text, sizeof text, fmt, ap);
    text[strcspn(text, "\n")] = '\0';
    pthread_mutex_lock(&api->log_lock);
    log_every(&api->log_every, LOG_EVERY_INTERVAL_MS, LOG_WARN, "http: %s", text);
    pthread_mutex_unlock(&api->log_lock);
}

/* Where a till of this agent connects: its till socket's endpoint, but for a wildcard
 * bind (a star or 0.0.0.0 as the tcp host), which names no address to connect to: the
 * loopback of the same port. */
static void connect_endpoint(const char *listen, char *out, size_t size)
{
    static const char *const any[] = {"tcp://*:", "tcp://0.0.0.0:"};
    for (size_t i = 0; i < sizeof any / sizeof any[0]; i++) {
        size_t n = strlen(any[i]);
        if (strncmp(listen, any[i], n) == 0) {
            snprintf(out, size, "tcp://127.0.0.1:%s", listen + n);
            return;
        }
    }
    snprintf(out, size, "%s", listen);
}

int http_api_start(http_api_t **out, const http_api_options_t *o)
{
    assert(o->agent_endpoint != NULL && o->answer_timeout_ms > 0);
    hreq_json_clear_on_free(); /* before any JSON, before the threads */
    http_api_t *api = calloc(1, sizeof *api);
    if (api == NULL)
        return CL_ERR_NOMEM;
    pthread_mutex_init(&api->lock, NULL);
    pthread_mutex_init(&api->log_lock, NULL);
    connect_endpoint(o->agent_endpoint, api->endpoint, sizeof api->endpoint);
    snprintf(api->partner_id, sizeof api->partner_id, "%s", o->partner_id);
    snprintf(api->site_id, sizeof api->site_id, "%s", o->site_id);
    api->answer_timeout_ms = o->answer_timeout_ms;
    api->health = o->health;
    /* One till connection now: an endpoint a till cannot connect to fails the start,
     * not every request after it. */
    cpos_t *first = pos_take(api);
    if (first == NULL) {
        log_error("the HTTP API cannot connect to the agent's till socket %s", api->endpoint);
        pthread_mutex_destroy(&api->lock);
        pthread_mutex_destroy(&api->log_lock);
        free(api);
        return CL_ERR_INVALID;
    }
    pos_give_back(api, first);
    assert(api->idle_count == 1);
    api->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                       MHD_USE_ERROR_LOG,
                                   ntohs(o->address.sin_port), NULL, NULL, on_request, api,
                                   MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, api, /* first */
                                   MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&o->address,
                                   MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_API_CONNECTIONS_MAX,
                                   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_API_IDLE_SECONDS,
                                   MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (api->daemon == NULL) {
        cpos_destroy(&api->idle[0]);
        pthread_mutex_destroy(&api->lock);
        pthread_mutex_destroy(&api->log_lock);
        free(api);
        return CL_ERR_IO;
    }
    *out = api;
    return CL_OK;
}

void http_api_stop(http_api_t **self_p)
{
    http_api_t *api = *self_p;
    if (api == NULL)
        return;
    MHD_stop_daemon(api->daemon);
    for (size_t i = 0; i < api->idle_count; i++)
        cpos_destroy(&api->idle[i]);
    pthread_mutex_destroy(&api->lock);
    pthread_mutex_destroy(&api->log_lock);
    free(api);
    *self_p = NULL;
}
