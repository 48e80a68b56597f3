/* `coalitionctl stats` against a hostile metrics endpoint: a plain socket server here
 * answers one scrape with a canned exposition, and the command must print it (exit 0)
 * without crashing or misreading it:
 *  - a histogram whose _count is NaN (an assert on the parsed number aborted);
 *  - process_start_time_seconds that is no time (1e300, NaN: a double-to-time_t
 *    conversion out of range, undefined behaviour, and gmtime_r's NULL ignored);
 *  - a label value with an escaped backslash before an `n` (read as a newline);
 *  - an endpoint that sends a byte a second (the timeout was per read, not per answer). */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OUT_BYTES 16384
#define REQUEST_BYTES 4096
#define DRIP_SECONDS_MAX 30
#define STATS_WAIT_S_MAX 8 /* coalitionctl stats gives up after 5 s */

typedef struct server {
    int fd;
    int port;
    const char *body;
    pthread_t thread;
} server_t;

/* Dripped: the head and then a byte a second until the client hangs up. */
static bool drip;

static void *serve_one(void *arg)
{
    server_t *s = arg;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    char req[REQUEST_BYTES];
    size_t len = 0;
    while (len + 1 < sizeof req) {
        ssize_t n = recv(c, req + len, sizeof req - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL)
            break;
    }
    char head[256];
    int h = snprintf(head, sizeof head,
                     "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     strlen(s->body));
    if (send(c, head, (size_t)h, MSG_NOSIGNAL) == h && !drip)
        (void)send(c, s->body, strlen(s->body), MSG_NOSIGNAL);
    for (int i = 0; drip && i < DRIP_SECONDS_MAX && send(c, "#", 1, MSG_NOSIGNAL) == 1; i++)
        sleep(1);
    close(c);
    return NULL;
}

static void server_start(server_t *s, const char *body)
{
    s->body = body;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    assert_true(s->fd >= 0);
    assert_int_equal(0, bind(s->fd, (struct sockaddr *)&a, sizeof a));
    assert_int_equal(0, listen(s->fd, 4));
    assert_int_equal(0, getsockname(s->fd, (struct sockaddr *)&a, &alen));
    s->port = ntohs(a.sin_port);
    assert_int_equal(0, pthread_create(&s->thread, NULL, serve_one, s));
}

/* coalitionctl stats against a server answering `body`: its exit status and output. */
static int stats(const char *body, char *out, size_t out_size)
{
    server_t s;
    server_start(&s, body);
    char spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", s.port);
    char *argv[] = {COALITIONCTL_BIN, "stats", "--metrics", spec, NULL};
    int rc = harness_run(argv, out, out_size);
    shutdown(s.fd, SHUT_RDWR); /* the thread's accept returns if nothing connected */
    pthread_join(s.thread, NULL);
    close(s.fd);
    return rc;
}

static void test_nan_histogram_count(void **state)
{
    (void)state;
    char out[OUT_BYTES];
    int rc = stats("# TYPE x_seconds histogram\n"
                   "x_seconds_bucket{le=\"0.001\"} 1\n"
                   "x_seconds_bucket{le=\"+Inf\"} 1\n"
                   "x_seconds_sum 0.001\n"
                   "x_seconds_count NaN\n",
                   out, sizeof out);
    EXPECT_EQ("stats with a NaN _count exits 0", 0, rc);
    EXPECT_CONTAINS("the histogram is printed", "x_seconds (ms)", out);
}

static void test_start_time_not_a_time(void **state)
{
    (void)state;
    char out[OUT_BYTES];
    int rc = stats("process_start_time_seconds 1e300\n", out, sizeof out);
    EXPECT_EQ("stats with a start time of 1e300 exits 0", 0, rc);
    EXPECT_CONTAINS("the value is shown as it came", "1e+300", out);
    rc = stats("process_start_time_seconds NaN\n", out, sizeof out);
    EXPECT_EQ("stats with a start time of NaN exits 0", 0, rc);
    EXPECT_CONTAINS("the value is shown as it came", "nan", out);
}

static void test_escaped_backslash_before_n(void **state)
{
    (void)state;
    char out[OUT_BYTES];
    /* The value is the three characters  a \ n  (the exposition escapes the backslash). */
    int rc = stats("y_total{who=\"a\\\\n\",code=\"00\"} 3\n", out, sizeof out);
    EXPECT_EQ("stats exits 0", 0, rc);
    EXPECT_CONTAINS("the value keeps its backslash and n", "a\\n ", out);
}

/* An endpoint that sends a byte a second: stats gives up after its timeout for the whole
 * answer (it waited 5 s per byte, up to 16 MiB of them). */
static void test_dripping_endpoint(void **state)
{
    (void)state;
    char out[OUT_BYTES];
    drip = true;
    time_t start = time(NULL);
    int rc = stats("", out, sizeof out);
    time_t took = time(NULL) - start;
    drip = false;
    EXPECT_EQ("stats against a dripping endpoint exits 1", 1, rc);
    EXPECT_TRUE("within its timeout", took <= STATS_WAIT_S_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nan_histogram_count),
        cmocka_unit_test(test_start_time_not_a_time),
        cmocka_unit_test(test_escaped_backslash_before_n),
        cmocka_unit_test(test_dripping_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
