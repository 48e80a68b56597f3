/* The metrics listener; see metrics_http.h. libmicrohttpd owns the thread and the
 * sockets; this file only routes the one path and hands the rendered text over (freed by
 * libmicrohttpd with the response). */
#include "metrics_http.h"

#include "errors.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <assert.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PORT_MAX 65535
#define MHD_MESSAGE_BYTES_MAX 256

struct metrics_http {
    struct MHD_Daemon *daemon;
    metrics_http_render_fn render;
    void *ctx;
    uint16_t port;
};

static int refuse(char *why, size_t why_size, const char *text)
{
    snprintf(why, why_size, "%s", text);
    return CL_ERR_INVALID;
}

static int parse_port(const char *s, uint16_t *out)
{
    char *end = NULL;
    if (*s < '0' || *s > '9')
        return CL_ERR_INVALID;
    unsigned long port = strtoul(s, &end, 10);
    if (*end != '\0' || port > PORT_MAX)
        return CL_ERR_INVALID;
    *out = (uint16_t)port;
    return CL_OK;
}

/* The host part, brackets removed, into `host`; the port after the last colon. */
static int split(const char *spec, char *host, size_t host_size, uint16_t *port, bool *v6)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || parse_port(colon + 1, port) != CL_OK)
        return CL_ERR_INVALID;
    size_t len = (size_t)(colon - spec);
    *v6 = len >= 2 && spec[0] == '[' && spec[len - 1] == ']';
    if (*v6) {
        spec++;
        len -= 2;
    }
    if (len == 0 || len >= host_size)
        return CL_ERR_INVALID;
    memcpy(host, spec, len);
    host[len] = '\0';
    return CL_OK;
}

int metrics_http_parse(const char *spec, metrics_http_addr_t *out, char *why, size_t why_size)
{
    memset(out, 0, sizeof *out);
    if (strlen(spec) >= sizeof out->text)
        return refuse(why, why_size, "the address is too long");
    snprintf(out->text, sizeof out->text, "%s", spec);
    if (strcmp(spec, "off") == 0) {
        out->off = true;
        return CL_OK;
    }
    char host[INET6_ADDRSTRLEN + 1];
    uint16_t port = 0;
    bool v6 = false;
    if (split(spec, host, sizeof host, &port, &v6) != CL_OK)
        return refuse(why, why_size, "expected HOST:PORT, [IPV6]:PORT or off");
    if (!v6 && strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_in *in4 = (struct sockaddr_in *)&out->sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->sa;
    if (!v6 && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        out->sa_len = sizeof *in4;
        out->loopback = (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
    } else if (v6 && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        out->sa_len = sizeof *in6;
        out->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    } else {
        return refuse(why, why_size,
                      "the host must be an IP address (IPv6 in brackets) or "
                      "localhost");
    }
    assert(out->sa_len > 0);
    return CL_OK;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, char *text, size_t len,
                              const char *type)
{
    struct MHD_Response *r =
        text != NULL ? MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE)
                     : MHD_create_response_from_buffer(len, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    assert(status >= MHD_HTTP_OK && status < 600);
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES && status == MHD_HTTP_METHOD_NOT_ALLOWED)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)con_cls;
    metrics_http_t *self = cls;
    assert(self != NULL && self->render != NULL && url != NULL && method != NULL);
    *upload_data_size = 0; /* a body is ignored: nothing here takes one */
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    if (!get && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, 0, "text/plain");
    if (strcmp(url, METRICS_HTTP_PATH) != 0) {
        char *text = strdup("not found: metrics are at " METRICS_HTTP_PATH "\n");
        return answer(c, MHD_HTTP_NOT_FOUND, text, text != NULL ? strlen(text) : 0, "text/plain");
    }
    char *text = NULL;
    size_t len = 0;
    int rc = self->render(self->ctx, &text, &len);
    if (rc != CL_OK) {
        log_warn("metrics: cannot render: %s", cl_strerror(rc));
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, 0, "text/plain");
    }
    return answer(c, MHD_HTTP_OK, text, len, METRICS_CONTENT_TYPE);
}

/* libmicrohttpd's messages: printf formats of its own (hence the attribute). */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[MHD_MESSAGE_BYTES_MAX];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_warn("metrics listener: %s", line);
}

int metrics_http_new(metrics_http_t **self_out, const metrics_http_addr_t *addr,
                     metrics_http_render_fn render, void *ctx)
{
    assert(!addr->off && addr->sa_len > 0 && render != NULL);
    metrics_http_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->render = render;
    self->ctx = ctx;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (addr->sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, self, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr->sa, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)METRICS_HTTP_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)METRICS_HTTP_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        METRICS_HTTP_CONNECTION_MEMORY_BYTES, MHD_OPTION_END);
    if (self->daemon == NULL) {
        log_error("metrics: cannot listen on %s (in use, or not an address of this host)",
                  addr->text);
        free(self);
        return CL_ERR_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info != NULL ? info->port : 0;
    *self_out = self;
    return CL_OK;
}

void metrics_http_destroy(metrics_http_t **self_p)
{
    metrics_http_t *self = *self_p;
    if (self == NULL)
        return;
    MHD_stop_daemon(self->daemon);
    free(self);
    *self_p = NULL;
}

uint16_t metrics_http_port(const metrics_http_t *self) { return self->port; }
