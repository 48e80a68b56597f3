/* A small HTTP listener (libmicrohttpd, one internal epoll thread) that serves one
 * read-only text document: GET or HEAD /metrics answers 200 with what the render
 * callback makes; any other path is 404 and any other method 405. Connections are few
 * and short (limits below), so a scraper cannot hold the process's memory or threads.
 * The render callback runs on the listener's thread: it may only read (atomics). */
#ifndef COALITION_METRICS_HTTP_H
#define COALITION_METRICS_HTTP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define METRICS_HTTP_PATH "/metrics"
#define METRICS_HTTP_CONNECTIONS_MAX 16
#define METRICS_HTTP_TIMEOUT_S 10
#define METRICS_HTTP_CONNECTION_MEMORY_BYTES ((size_t)32 << 10)
/* "HOST:PORT" as written on a command line, at most. */
#define METRICS_HTTP_SPEC_BYTES_MAX 128

/* Where to listen: an IPv4 or IPv6 literal (IPv6 in brackets) or "localhost", and a
 * port (0: any free one, see metrics_http_port). */
typedef struct metrics_http_addr {
    bool off; /* "off": no listener */
    struct sockaddr_storage sa;
    socklen_t sa_len;
    bool loopback;
    char text[METRICS_HTTP_SPEC_BYTES_MAX]; /* as given, for messages */
} metrics_http_addr_t;

/* Parse "HOST:PORT", "[V6]:PORT" or "off"; CL_ERR_INVALID with the reason in `why`. */
int metrics_http_parse(const char *spec, metrics_http_addr_t *out, char *why, size_t why_size);

/* Makes the document: a malloc'd buffer (the listener frees it) and its length. */
typedef int (*metrics_http_render_fn)(void *ctx, char **text_out, size_t *len_out);

typedef struct metrics_http metrics_http_t;

/* Bind and start serving; CL_ERR_IO (logged) when the address cannot be bound. */
int metrics_http_new(metrics_http_t **self_out, const metrics_http_addr_t *addr,
                     metrics_http_render_fn render, void *ctx);
/* Stops the thread and closes every connection. */
void metrics_http_destroy(metrics_http_t **self_p);
/* The port it listens on (the one chosen when 0 was asked). */
uint16_t metrics_http_port(const metrics_http_t *self);

#endif
