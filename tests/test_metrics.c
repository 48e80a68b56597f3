/* Unit tests of common/metrics.c and the broker's reply-code reader: exact rendering of
 * every kind, label tables that overflow into "other" (and never grow past their
 * capacity), escaping of label values, cumulative histogram buckets with +Inf equal to
 * _count under concurrent observers, and broker_metrics_auth_code against real packed
 * Authorizations of every response code. */
#include "broker_metrics.h"
#include "clock.h"
#include "errors.h"
#include "metrics.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define OBSERVATIONS_PER_THREAD 100000
#define SMALL_TABLE 3
#define LABEL_ADDS (64 * 1500) /* 64 values, each as often */

static char *render(metrics_t *m)
{
    char *text = NULL;
    size_t len = 0;
    EXPECT_EQ("render", CL_OK, metrics_render(m, &text, &len));
    EXPECT_EQ("length", strlen(text), len);
    return text;
}

static void test_render_every_kind(void **state)
{
    (void)state;
    metrics_t *m = NULL;
    assert_int_equal(metrics_new(&m), CL_OK);
    metrics_family_t *c = metrics_counter(m, "x_total", "Things.", NULL, NULL);
    metrics_family_t *g = metrics_gauge(m, "x_depth", "Depth.");
    metrics_family_t *age = metrics_age(m, "x_age_seconds", "Age.");
    const uint64_t bounds[] = {10, 100};
    metrics_family_t *h = metrics_histogram(m, "x_seconds", "Latency.", bounds, 2, 1e-3);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(age);
    assert_non_null(h);
    metrics_add(c, 0, 0, 3);
    metrics_gauge_add(g, 5);
    metrics_gauge_add(g, -2);
    metrics_observe(h, 10);  /* le 0.01: a bound is inclusive */
    metrics_observe(h, 11);  /* le 0.1 */
    metrics_observe(h, 500); /* +Inf */
    char *text = render(m);
    EXPECT_STR("rendered",
               "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n"
               "# HELP x_depth Depth.\n# TYPE x_depth gauge\nx_depth 3\n"
               "# HELP x_age_seconds Age.\n# TYPE x_age_seconds gauge\nx_age_seconds 0.000\n"
               "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n"
               "x_seconds_bucket{le=\"0.01\"} 1\nx_seconds_bucket{le=\"0.1\"} 2\n"
               "x_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 0.521\nx_seconds_count 3\n",
               text);
    free(text);
    /* An age set 2.5 s ago renders about 2.5 (not 0, not a timestamp). */
    metrics_set(age, clock_wall_ms() - 2500);
    text = render(m);
    double seconds = -1;
    const char *line = strstr(text, "\nx_age_seconds ");
    EXPECT_TRUE("age line", line != NULL && sscanf(line, "\nx_age_seconds %lf", &seconds) == 1);
    EXPECT_TRUE("age is 2.5 s and a bit", seconds >= 2.5 && seconds < 60);
    free(text);
    metrics_destroy(&m);
    EXPECT_TRUE("destroy clears the pointer", m == NULL);
}

static void test_labels_overflow_and_escape(void **state)
{
    (void)state;
    metrics_t *m = NULL;
    assert_int_equal(metrics_new(&m), CL_OK);
    metrics_labels_t *who = metrics_labels(m, "partner", SMALL_TABLE, "other");
    metrics_labels_t *code = metrics_labels(m, "code", SMALL_TABLE, "other");
    metrics_family_t *c = metrics_counter(m, "req_total", "Requests.", who, code);
    assert_non_null(c);
    EXPECT_EQ("find before add", SMALL_TABLE, metrics_label_find(who, "a"));
    EXPECT_EQ("first value", 0, metrics_label_index(who, "a"));
    EXPECT_EQ("the same value again", 0, metrics_label_index(who, "a"));
    EXPECT_EQ("find after add", 0, metrics_label_find(who, "a"));
    EXPECT_EQ("quote and backslash", 1, metrics_label_index(who, "q\"b\\"));
    EXPECT_EQ("third", 2, metrics_label_index(who, "c"));
    EXPECT_EQ("past capacity: overflow", SMALL_TABLE, metrics_label_index(who, "d"));
    EXPECT_EQ("still overflow", SMALL_TABLE, metrics_label_index(who, "e"));
    char long_value[METRICS_LABEL_BYTES_MAX + 8];
    memset(long_value, 'x', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    EXPECT_EQ("too long: overflow", SMALL_TABLE, metrics_label_index(code, long_value));
    size_t c00 = metrics_label_index(code, "00");
    metrics_add(c, 0, c00, 2);
    metrics_add(c, 1, c00, 1);
    metrics_add(c, metrics_label_index(who, "d"), c00, 4);
    metrics_add(c, metrics_label_index(who, "e"), c00, 1);
    EXPECT_EQ("overflow cell", 5, metrics_counter_value(c, SMALL_TABLE, c00));
    char *text = render(m);
    EXPECT_STR("labelled, zero cells left out",
               "# HELP req_total Requests.\n# TYPE req_total counter\n"
               "req_total{partner=\"a\",code=\"00\"} 2\n"
               "req_total{partner=\"q\\\"b\\\\\",code=\"00\"} 1\n"
               "req_total{partner=\"other\",code=\"00\"} 5\n",
               text);
    free(text);
    metrics_destroy(&m);
}

typedef struct observer {
    metrics_family_t *h, *c;
    unsigned seed;
} observer_t;

static void *observe_many(void *arg)
{
    observer_t *o = arg;
    for (int i = 0; i < OBSERVATIONS_PER_THREAD; i++) {
        o->seed = o->seed * 1103515245u + 12345u;
        metrics_observe(o->h, (o->seed >> 8) % 2000);
        metrics_add(o->c, 0, 0, 1);
    }
    return NULL;
}

/* Observers on four threads while the main thread renders: every rendering is
 * cumulative with +Inf equal to _count; at the end the totals are exact. */
static void test_concurrent_histogram(void **state)
{
    (void)state;
    metrics_t *m = NULL;
    assert_int_equal(metrics_new(&m), CL_OK);
    const uint64_t bounds[] = {1, 10, 100, 1000};
    observer_t obs[THREADS];
    pthread_t threads[THREADS];
    metrics_family_t *h = metrics_histogram(m, "h", "H.", bounds, 4, 1.0);
    metrics_family_t *c = metrics_counter(m, "n_total", "N.", NULL, NULL);
    for (int i = 0; i < THREADS; i++) {
        obs[i] = (observer_t){h, c, (unsigned)i + 1};
        assert_int_equal(pthread_create(&threads[i], NULL, observe_many, &obs[i]), 0);
    }
    for (int round = 0; round < 50; round++) {
        char *text = render(m);
        unsigned long long last = 0, v = 0, inf = 0, count = 0;
        for (const char *p = strstr(text, "h_bucket"); p != NULL; p = strstr(p + 1, "h_bucket")) {
            EXPECT_TRUE("bucket value", sscanf(strchr(p, ' '), " %llu", &v) == 1);
            EXPECT_TRUE("cumulative", v >= last);
            last = v;
            inf = v;
        }
        EXPECT_TRUE("_count", sscanf(strstr(text, "h_count "), "h_count %llu", &count) == 1);
        EXPECT_EQ("+Inf == _count", inf, count);
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    EXPECT_EQ("every add counted", THREADS * OBSERVATIONS_PER_THREAD,
              metrics_counter_value(c, 0, 0));
    char *text = render(m);
    EXPECT_CONTAINS("every observation counted", "h_count 400000\n", text);
    free(text);
    metrics_destroy(&m);
}

typedef struct adder {
    metrics_labels_t *labels;
    metrics_family_t *c;
} adder_t;

static void *add_labels(void *arg)
{
    adder_t *a = arg;
    char value[16];
    for (int i = 0; i < LABEL_ADDS; i++) {
        snprintf(value, sizeof value, "p%d", i % 64);
        metrics_add(a->c, metrics_label_index(a->labels, value), 0, 1);
    }
    return NULL;
}

/* One thread adds label values (the I/O thread's part) while this one renders (the HTTP
 * thread's): every rendered label is whole, and at the end each of 64 values has its
 * exact count and the 32 past the capacity are under "other". */
static void test_labels_published_while_rendering(void **state)
{
    (void)state;
    metrics_t *m = NULL;
    assert_int_equal(metrics_new(&m), CL_OK);
    adder_t a = {metrics_labels(m, "partner", 32, "other"), NULL};
    a.c = metrics_counter(m, "r_total", "R.", a.labels, NULL);
    assert_non_null(a.c);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, add_labels, &a), 0);
    for (int round = 0; round < 50; round++) {
        char *text = render(m);
        for (const char *p = strstr(text, "partner=\""); p != NULL;
             p = strstr(p + 1, "partner=\"")) {
            int n = -1;
            EXPECT_TRUE("a whole label value",
                        strncmp(p, "partner=\"other\"", 15) == 0 ||
                            (sscanf(p, "partner=\"p%d\"", &n) == 1 && n >= 0 && n < 64));
        }
        free(text);
    }
    pthread_join(t, NULL);
    for (size_t i = 0; i < 32; i++)
        EXPECT_EQ("a labelled value's count", LABEL_ADDS / 64, metrics_counter_value(a.c, i, 0));
    EXPECT_EQ("the rest under other", LABEL_ADDS / 2,
              metrics_counter_value(a.c, metrics_label_overflow(a.labels), 0));
    metrics_destroy(&m);
}

typedef struct fresh_adder {
    metrics_labels_t *labels;
    metrics_family_t *c;
    int values;
} fresh_adder_t;

static void *add_fresh_labels(void *arg)
{
    fresh_adder_t *a = arg;
    char value[16];
    for (int i = 0; i < a->values; i++) {
        snprintf(value, sizeof value, "n%d", i);
        metrics_add(a->c, metrics_label_index(a->labels, value), 0, 1);
    }
    return NULL;
}

/* New label values keep coming while the table never fills: no scrape may show a sample
 * under the overflow value (a value added after the renderer read the table's count was
 * rendered as "other", several of them as duplicate series, which fails the scrape). */
static void test_new_labels_never_rendered_as_overflow(void **state)
{
    (void)state;
    metrics_t *m = NULL;
    assert_int_equal(metrics_new(&m), CL_OK);
    fresh_adder_t a = {metrics_labels(m, "partner", METRICS_LABEL_VALUES_MAX, "other"), NULL,
                       METRICS_LABEL_VALUES_MAX};
    a.c = metrics_counter(m, "f_total", "F.", a.labels, NULL);
    assert_non_null(a.c);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, add_fresh_labels, &a), 0);
    int others = 0;
    for (int round = 0; round < 2000; round++) {
        char *text = render(m);
        others += strstr(text, "partner=\"other\"") != NULL;
        free(text);
    }
    pthread_join(t, NULL);
    EXPECT_EQ("scrapes with a sample under other", 0, others);
    EXPECT_EQ("nothing counted under other", 0,
              metrics_counter_value(a.c, metrics_label_overflow(a.labels), 0));
    metrics_destroy(&m);
}

static void test_auth_code_of_packed_replies(void **state)
{
    (void)state;
    static const int codes[] = {RC_APPROVED,       RC_UNKNOWN_PARTNER, RC_PARTIAL,
                                RC_INVALID_AMOUNT, RC_FORMAT_ERROR,    RC_INSUFFICIENT_POINTS,
                                RC_NOT_PERMITTED,  RC_UNAVAILABLE,     RC_DUPLICATE_KEY,
                                RC_SYSTEM_ERROR};
    envelope_t env = COALITION__ENVELOPE__INIT;
    env.partner_id = "P1";
    env.site_id = "main";
    env.txn_id = "t-1";
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        authorization_t auth;
        char text[] = "Declined: a receipt text long enough to need a two-byte length field, "
                      "so that the reader must skip it properly before field three........";
        wire_auth_decline(&auth, &env, codes[i], text);
        auth.points = -5;             /* a ten-byte varint (field 5) after the code */
        auth.seq = UINT64_C(1) << 40; /* a long varint */
        size_t len = 0;
        uint8_t *packed = wire_pack_auth(&auth, &len);
        assert_non_null(packed);
        EXPECT_EQ("the code read from the packed reply", codes[i],
                  broker_metrics_auth_code(packed, len));
        if (len > 3)
            EXPECT_TRUE("a cut reply is malformed or reads some code",
                        broker_metrics_auth_code(packed, len - 3) >= -1);
        free(packed);
    }
    const uint8_t bad_length[] = {0x12, 0x7f, 'a'}; /* field 2, 127 bytes, 1 present */
    EXPECT_EQ("a length past the end", -1, broker_metrics_auth_code(bad_length, sizeof bad_length));
    const uint8_t bad_type[] = {0x1b, 0x00}; /* field 3, wire type 3 (group) */
    EXPECT_EQ("an unknown wire type", -1, broker_metrics_auth_code(bad_type, sizeof bad_type));
    const uint8_t big_code[] = {0x18, 0xe8, 0x07}; /* code 1000 */
    EXPECT_EQ("a code past two digits", -1, broker_metrics_auth_code(big_code, sizeof big_code));
    EXPECT_EQ("an empty reply is 00", 0, broker_metrics_auth_code(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_every_kind),
        cmocka_unit_test(test_labels_overflow_and_escape),
        cmocka_unit_test(test_concurrent_histogram),
        cmocka_unit_test(test_labels_published_while_rendering),
        cmocka_unit_test(test_new_labels_never_rendered_as_overflow),
        cmocka_unit_test(test_auth_code_of_packed_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
