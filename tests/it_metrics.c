/* Integration tests of the metrics endpoints, with the real programs over real HTTP (a
 * plain socket client here, nothing of the servers' code):
 *  - both expositions parse: HELP and TYPE before every family's samples, every sample
 *    `name{labels} value` with a number, histogram buckets ascending and cumulative with
 *    +Inf equal to _count;
 *  - earns, burns and declines move the broker's and the agent's counters by exactly
 *    what was done (per partner and code, per type and code, rounds, commits, journal);
 *  - with the broker SIGSTOPped the agent's outbox fills (depth, oldest age, stored
 *    offline, connection down) and drains after SIGCONT; the connections gauge follows;
 *  - `coalitionctl stats` prints both for a person; unknown paths 404, other methods 405;
 *    a bad --metrics is a usage error and a taken address a start-up failure.
 * Synchronisation is by polling the endpoints, never a fixed sleep. */
#include "client.h"
#include "clock.h"
#include "errors.h"
#include "harness.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SCRAPE_BYTES (1 << 20)
#define OUT_BYTES 16384
#define POLL_STEP_MS 20
#define POLL_TIMEOUT_MS 15000
#define HTTP_TIMEOUT_S 5
#define NAME_BYTES 128
#define FAMILIES_MAX 64
#define HEARTBEAT_MS 200 /* the agent sees a stopped broker gone after 3 x this */
#define OFFLINE_EARNS 2
#define GARBAGE_MESSAGES 5
#define JUNK_PARTNERS 40 /* envelope partner ids no key stands for */
#define CALL_TIMEOUT_MS 10000

typedef struct fixture {
    world_t w;
    agent_proc_t *agent;
    char *text; /* the last scrape */
} fixture_t;

/* ---- a plain HTTP client ---------------------------------------------------------- */

/* `method` `path` on 127.0.0.1:port; the status, and the body into `body`. */
static int http(int port, const char *method, const char *path, char *body, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {HTTP_TIMEOUT_S, 0};
    char req[256];
    int n =
        snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || send(fd, req, (size_t)n, 0) != n) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t len = 0;
    ssize_t got = 1;
    while (got > 0 && len + 1 < size) {
        got = recv(fd, body + len, size - 1 - len, 0);
        len += got > 0 ? (size_t)got : 0;
    }
    close(fd);
    body[len] = '\0';
    int status = 0;
    if (sscanf(body, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    char *start = strstr(body, "\r\n\r\n");
    if (start != NULL)
        memmove(body, start + 4, strlen(start + 4) + 1);
    return status;
}

static char *scrape(fixture_t *f, int port)
{
    if (f->text == NULL)
        f->text = malloc(SCRAPE_BYTES);
    assert_non_null(f->text);
    int status = http(port, "GET", "/metrics", f->text, SCRAPE_BYTES);
    if (status != 200)
        fail_msg("GET /metrics on port %d: expected 200, got %d: %.200s", port, status, f->text);
    return f->text;
}

/* The value of the sample `series` (name with its labels exactly as rendered), or
 * `absent` when there is no such line. */
static double sample(const char *text, const char *series, double absent)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return absent;
}

static double value(fixture_t *f, int port, const char *series)
{
    return sample(scrape(f, port), series, 0);
}

/* Poll until `series` equals `want`; fails with the last value. */
static void await_value(fixture_t *f, int port, const char *series, double want)
{
    double got = NAN;
    for (int64_t end = clock_mono_ms() + POLL_TIMEOUT_MS; clock_mono_ms() < end;) {
        got = sample(scrape(f, port), series, NAN);
        if (got == want)
            return;
        struct timespec ts = {0, POLL_STEP_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    fail_msg("%s on port %d: expected %g within %d ms, got %g", series, port, want, POLL_TIMEOUT_MS,
             got);
}

/* ---- the exposition format -------------------------------------------------------- */

static bool is_name(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == ':'))
            return false;
    }
    return true;
}

/* `{k="v",...}` at p; its end, or NULL. The value of an `le` label into `le`. */
static const char *check_labels(const char *p, char *le, size_t le_size)
{
    assert_true(*p == '{');
    p++;
    while (*p != '}') {
        size_t n = strcspn(p, "=");
        if (!is_name(p, n) || p[n + 1] != '"')
            return NULL;
        bool is_le = n == 2 && strncmp(p, "le", 2) == 0;
        const char *v = p + n + 2, *e = v;
        while (*e != '"' && *e != '\0' && *e != '\n')
            e += *e == '\\' ? 2 : 1;
        if (*e != '"')
            return NULL;
        if (is_le)
            snprintf(le, le_size, "%.*s", (int)(e - v), v);
        p = e + 1;
        if (*p == ',')
            p++;
        else if (*p != '}')
            return NULL;
    }
    return p + 1;
}

typedef struct families {
    char names[FAMILIES_MAX][NAME_BYTES];
    bool histogram[FAMILIES_MAX];
    size_t n;
} families_t;

static int family_of(const families_t *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++) {
        size_t n = strlen(fs->names[i]);
        const char *rest = name + n;
        if (strncmp(name, fs->names[i], n) == 0 &&
            (*rest == '\0' ||
             (fs->histogram[i] && (strcmp(rest, "_bucket") == 0 || strcmp(rest, "_sum") == 0 ||
                                   strcmp(rest, "_count") == 0))))
            return (int)i;
    }
    return -1;
}

/* Histogram state while reading its lines. */
typedef struct hist_check {
    double last_le, last_count, inf_count;
    bool inf_seen;
} hist_check_t;

static void check_bucket(const char *line, const char *le, double v, hist_check_t *h)
{
    if (le[0] == '\0')
        fail_msg("bucket without le: %s", line);
    double bound = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
    if (h->inf_seen || bound <= h->last_le || v < h->last_count)
        fail_msg("buckets not ascending and cumulative at: %s", line);
    h->last_le = bound;
    h->last_count = v;
    h->inf_seen = isinf(bound);
    h->inf_count = v;
}

static void check_sample(const families_t *fs, const char *line, hist_check_t *h)
{
    size_t n = strcspn(line, "{ ");
    char name[NAME_BYTES], le[64] = "";
    if (!is_name(line, n) || n >= sizeof name)
        fail_msg("sample line without a metric name: %s", line);
    snprintf(name, sizeof name, "%.*s", (int)n, line);
    int fam = family_of(fs, name);
    if (fam < 0)
        fail_msg("sample of a family with no TYPE line before it: %s", line);
    const char *p = line + n;
    if (*p == '{' && (p = check_labels(p, le, sizeof le)) == NULL)
        fail_msg("malformed labels: %s", line);
    char *end = NULL;
    if (*p != ' ' || (strtod(p + 1, &end), end == p + 1) || *end != '\0')
        fail_msg("sample without a number after one space: %s", line);
    double v = strtod(p + 1, NULL);
    size_t len = strlen(name);
    if (fs->histogram[fam] && len > 7 && strcmp(name + len - 7, "_bucket") == 0)
        check_bucket(line, le, v, h);
    if (fs->histogram[fam] && len > 6 && strcmp(name + len - 6, "_count") == 0 &&
        (!h->inf_seen || v != h->inf_count))
        fail_msg("%s: _count %g is not the +Inf bucket %g", name, v, h->inf_count);
}

/* Every line of `text` is HELP, TYPE or a sample of a family typed before it. */
static void check_exposition(const char *text)
{
    families_t fs = {.n = 0};
    hist_check_t h = {-INFINITY, 0, 0, false};
    char *copy = strdup(text), *save = NULL;
    assert_non_null(copy);
    EXPECT_TRUE("the exposition ends with a newline",
                text[0] != '\0' && text[strlen(text) - 1] == '\n');
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[NAME_BYTES], type[32];
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (sscanf(line, "# TYPE %127s %31s", name, type) == 2) {
            bool known = strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                         strcmp(type, "histogram") == 0;
            if (!known || fs.n == FAMILIES_MAX || family_of(&fs, name) >= 0)
                fail_msg("bad or repeated TYPE line: %s", line);
            snprintf(fs.names[fs.n], NAME_BYTES, "%s", name);
            fs.histogram[fs.n++] = strcmp(type, "histogram") == 0;
            h = (hist_check_t){-INFINITY, 0, 0, false};
            continue;
        }
        if (line[0] == '#')
            fail_msg("a comment that is neither HELP nor TYPE: %s", line);
        check_sample(&fs, line, &h);
    }
    free(copy);
    EXPECT_TRUE("the exposition has families", fs.n > 0);
}

/* ---- fixture ---------------------------------------------------------------------- */

static void ctl_ok(world_t *w, const char *what, const char *a0, const char *a1, const char *a2,
                   const char *a3, const char *a4, const char *a5, const char *a6)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, a0, a1, a2, a3, a4, a5, a6, NULL);
    if (rc != 0)
        fail_msg("%s: expected exit 0, got %d: %s", what, rc, out);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    world_init(&f->w);
    f->w.broker_metrics_port = harness_free_port();
    f->w.agent_metrics = true;
    f->w.heartbeat_ms = HEARTBEAT_MS;
    world_start_broker(&f->w);
    ctl_ok(&f->w, "partner add P1", "partner", "add", "P1", "--earn-rate", "1", "--currency",
           "EUR");
    ctl_ok(&f->w, "member add alice", "member", "add", "alice", NULL, NULL, NULL, NULL);
    f->agent = world_start_agent(&f->w, "P1");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    world_destroy(&f->w);
    free(f->text);
    free(f);
    return 0;
}

static int pos(fixture_t *f, char *out, const char *kind, const char *what, const char *amount,
               const char *txn)
{
    return world_pos(&f->w, f->agent, out, OUT_BYTES, kind, "--member", "alice", what, amount,
                     "--txn", txn, NULL);
}

#define BROKER_P1(code) "coalition_broker_requests_total{partner=\"P1\",code=\"" code "\"}"
#define AGENT_REQ(type, code) "coalition_agent_requests_total{type=\"" type "\",code=\"" code "\"}"

/* ---- tests ------------------------------------------------------------------------ */

static void test_both_expositions_parse(void **state)
{
    fixture_t *f = *state;
    int bp = f->w.broker_metrics_port, ap = f->agent->metrics_port;
    check_exposition(scrape(f, bp));
    check_exposition(scrape(f, ap));
    await_value(f, bp, "coalition_broker_connections", 1);
    await_value(f, ap, "coalition_agent_broker_connected", 1);
    double seq = value(f, bp, "coalition_broker_journal_seq");
    EXPECT_TRUE("the setup wrote journal entries", seq >= 2);
    double used = value(f, bp, "coalition_broker_map_used_bytes");
    double size = value(f, bp, "coalition_broker_map_size_bytes");
    EXPECT_TRUE("map used is above zero and within the map", used > 0 && used <= size);
    double started = value(f, bp, "process_start_time_seconds");
    double now = (double)clock_wall_ms() / 1000.0;
    EXPECT_TRUE("the broker started in the last minute", started <= now && started > now - 60);
}

typedef struct counts {
    double b00, b51, batches, batch_sum, commits, fsyncs, seq, a_earn, a_burn, a_burn51, a_seq;
} counts_t;

static counts_t counts_now(fixture_t *f)
{
    int bp = f->w.broker_metrics_port, ap = f->agent->metrics_port;
    const char *b = scrape(f, bp);
    counts_t c = {sample(b, BROKER_P1("00"), 0),
                  sample(b, BROKER_P1("51"), 0),
                  sample(b, "coalition_broker_batch_requests_count", NAN),
                  sample(b, "coalition_broker_batch_requests_sum", NAN),
                  sample(b, "coalition_broker_commit_seconds_count", NAN),
                  sample(b, "coalition_broker_fsync_seconds_count", NAN),
                  sample(b, "coalition_broker_journal_seq", NAN),
                  0,
                  0,
                  0,
                  0};
    const char *a = scrape(f, ap);
    c.a_earn = sample(a, AGENT_REQ("earn", "00"), 0);
    c.a_burn = sample(a, AGENT_REQ("burn", "00"), 0);
    c.a_burn51 = sample(a, AGENT_REQ("burn", "51"), 0);
    c.a_seq = sample(a, "coalition_agent_journal_seq", NAN);
    return c;
}

static void test_counters_move_exactly(void **state)
{
    fixture_t *f = *state;
    int bp = f->w.broker_metrics_port, ap = f->agent->metrics_port;
    char out[OUT_BYTES];
    counts_t before = counts_now(f);
    /* 3 earns of 10.00 EUR (10 points each), a burn of 5, two burns over the balance. */
    const char *earns[] = {"m-e1", "m-e2", "m-e3"};
    for (size_t i = 0; i < 3; i++)
        EXPECT_EQ("earn exit", 0, pos(f, out, "earn", "--amount", "10.00", earns[i]));
    EXPECT_EQ("burn exit", 0, pos(f, out, "burn", "--points", "5", "m-b1"));
    EXPECT_EQ("burn over the balance exits 1", 1, pos(f, out, "burn", "--points", "1000", "m-b2"));
    EXPECT_CONTAINS("burn over the balance", "\"code\":\"51\"", out);
    EXPECT_EQ("burn over the balance exits 1", 1, pos(f, out, "burn", "--points", "999", "m-b3"));
    counts_t after = counts_now(f);
    EXPECT_EQ("broker P1 approvals", before.b00 + 4, after.b00);
    EXPECT_EQ("broker P1 51 declines", before.b51 + 2, after.b51);
    EXPECT_EQ("write rounds (one per sequential request)", before.batches + 6, after.batches);
    EXPECT_EQ("requests in those rounds", before.batch_sum + 6, after.batch_sum);
    EXPECT_EQ("commit latency observations", before.commits + 6, after.commits);
    EXPECT_EQ("fsync latency observations", before.fsyncs + 6, after.fsyncs);
    EXPECT_EQ("journal seq (approvals only)", before.seq + 4, after.seq);
    EXPECT_EQ("agent earn 00", before.a_earn + 3, after.a_earn);
    EXPECT_EQ("agent burn 00", before.a_burn + 1, after.a_burn);
    EXPECT_EQ("agent burn 51", before.a_burn51 + 2, after.a_burn51);
    EXPECT_EQ("agent journal seq (every final answer)", before.a_seq + 6, after.a_seq);
    EXPECT_EQ("writer queue after the load", 0,
              value(f, bp, "coalition_broker_writer_queue_requests"));
    EXPECT_EQ("agent outbox after the load", 0, value(f, ap, "coalition_agent_outbox_requests"));
    EXPECT_EQ("agent in flight after the load", 0,
              value(f, ap, "coalition_agent_in_flight_requests"));
    EXPECT_EQ("no oldest pending", 0, value(f, ap, "coalition_agent_oldest_pending_seconds"));
    check_exposition(scrape(f, bp));
    check_exposition(scrape(f, ap));
}

static void test_outbox_fills_and_drains(void **state)
{
    fixture_t *f = *state;
    int bp = f->w.broker_metrics_port, ap = f->agent->metrics_port;
    char out[OUT_BYTES];
    double offline0 = value(f, ap, "coalition_agent_stored_offline_total");
    double earn91 = value(f, ap, AGENT_REQ("earn", "91"));
    double b00 = value(f, bp, BROKER_P1("00"));
    harness_pause(&f->w.broker);
    await_value(f, ap, "coalition_agent_broker_connected", 0);
    const char *txns[OFFLINE_EARNS] = {"m-off1", "m-off2"};
    for (size_t i = 0; i < OFFLINE_EARNS; i++) {
        pos(f, out, "earn", "--amount", "1.00", txns[i]);
        EXPECT_CONTAINS("an earn while the broker is stopped", "\"offline\":true", out);
    }
    EXPECT_EQ("outbox depth", OFFLINE_EARNS, value(f, ap, "coalition_agent_outbox_requests"));
    EXPECT_TRUE("the oldest request has an age",
                value(f, ap, "coalition_agent_oldest_pending_seconds") > 0);
    EXPECT_EQ("stored offline", offline0 + OFFLINE_EARNS,
              value(f, ap, "coalition_agent_stored_offline_total"));
    EXPECT_EQ("tills told 91 (offline)", earn91 + OFFLINE_EARNS,
              value(f, ap, AGENT_REQ("earn", "91")));
    harness_resume(&f->w.broker);
    await_value(f, ap, "coalition_agent_outbox_requests", 0);
    await_value(f, ap, "coalition_agent_oldest_pending_seconds", 0);
    await_value(f, ap, "coalition_agent_broker_connected", 1);
    await_value(f, bp, "coalition_broker_connections", 1);
    EXPECT_EQ("the stored earns approved at the broker", b00 + OFFLINE_EARNS,
              value(f, bp, BROKER_P1("00")));
}

/* A partner's key sending garbage, and envelopes naming partners it is not: declined
 * (30, 57) and counted, all under partner="other": what a sender writes in an envelope
 * never makes a label. A second connection shows in the connections gauge and leaves. */
static void test_hostile_input_makes_no_labels(void **state)
{
    fixture_t *f = *state;
    int bp = f->w.broker_metrics_port;
    const char *other30 = "coalition_broker_requests_total{partner=\"other\",code=\"30\"}";
    const char *other57 = "coalition_broker_requests_total{partner=\"other\",code=\"57\"}";
    double c30 = value(f, bp, other30), c57 = value(f, bp, other57);
    struct client *c = NULL;
    EXPECT_EQ("a CURVE client as P1", CL_OK, world_client(&f->w, "P1", &c));
    static const uint8_t garbage[] = {0xff, 0x01, 0x02, 'n', 'o', 't', ' ', 'a', 'n', ' ', 'e'};
    for (int i = 0; i < GARBAGE_MESSAGES; i++) {
        authorization_t *auth = NULL;
        EXPECT_EQ("garbage answered", CL_OK,
                  client_call_raw(c, garbage, sizeof garbage, CALL_TIMEOUT_MS, &auth));
        EXPECT_EQ("garbage is a format error", RC_FORMAT_ERROR, auth->code);
        wire_auth_free(auth);
    }
    await_value(f, bp, "coalition_broker_connections", 2);
    for (int i = 0; i < JUNK_PARTNERS; i++) {
        char partner[32], txn[32];
        snprintf(partner, sizeof partner, "junk-%d", i);
        snprintf(txn, sizeof txn, "junk-txn-%d", i);
        Coalition__EarnRequest earn = COALITION__EARN_REQUEST__INIT;
        envelope_t env = COALITION__ENVELOPE__INIT;
        earn.member_id = "alice";
        earn.amount_minor = 100;
        earn.currency = "EUR";
        env.version = WIRE_VERSION;
        env.partner_id = partner;
        env.terminal_id = "till-1";
        env.site_id = "main";
        env.txn_id = txn;
        env.client_time_ms = clock_wall_ms();
        env.body_case = COALITION__ENVELOPE__BODY_EARN;
        env.earn = &earn;
        authorization_t *auth = NULL;
        EXPECT_EQ("junk partner answered", CL_OK, client_call(c, &env, CALL_TIMEOUT_MS, &auth));
        EXPECT_EQ("P1's key naming another partner", RC_NOT_PERMITTED, auth->code);
        wire_auth_free(auth);
    }
    client_destroy(&c);
    const char *text = scrape(f, bp);
    EXPECT_EQ("format errors under other", c30 + GARBAGE_MESSAGES, sample(text, other30, 0));
    EXPECT_EQ("57s under other", c57 + JUNK_PARTNERS, sample(text, other57, 0));
    EXPECT_TRUE("no label for a junk partner id", strstr(text, "junk-") == NULL);
    check_exposition(text);
    await_value(f, bp, "coalition_broker_connections", 1);
}

static void test_stats_command(void **state)
{
    fixture_t *f = *state;
    char out[OUT_BYTES], spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", f->w.broker_metrics_port);
    int rc = world_ctl(&f->w, out, sizeof out, "stats", "--metrics", spec, NULL);
    if (rc != 0)
        fail_msg("coalitionctl stats: expected exit 0, got %d: %s", rc, out);
    EXPECT_CONTAINS("stats: journal", "journal_seq", out);
    EXPECT_CONTAINS("stats: histogram header", "count        avg     p50 <=     p99 <=", out);
    EXPECT_CONTAINS("stats: commit latency in ms", "commit_seconds (ms)", out);
    /* Most rounds of this test's load held one request (the sequential requests); the
     * two stored offline may have come back in one: p50 is 1, the average at most 2. */
    const char *batch = strstr(out, "batch_requests");
    double count = 0, avg = 0, p50 = 0;
    EXPECT_TRUE("stats: batch sizes", batch != NULL && sscanf(batch, "batch_requests %lf %lf %lf",
                                                              &count, &avg, &p50) == 3);
    EXPECT_TRUE("stats: rounds counted", count >= 10);
    EXPECT_TRUE("stats: average batch", avg >= 1.0 && avg <= 2.0);
    EXPECT_EQ("stats: p50 batch", 1, p50);
    EXPECT_CONTAINS("stats: requests by partner", "requests_total by partner and code", out);
    EXPECT_CONTAINS("stats: P1's codes", " 00=", out);
    EXPECT_CONTAINS("stats: P1's declines", " 51=2", out);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", f->agent->metrics_port);
    rc = world_ctl(&f->w, out, sizeof out, "stats", "--metrics", spec, NULL);
    EXPECT_EQ("coalitionctl stats on the agent", 0, rc);
    EXPECT_CONTAINS("agent stats: outbox", "outbox_requests", out);
    EXPECT_CONTAINS("agent stats: by type", "requests_total by type and code", out);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", harness_free_port());
    rc = world_ctl(&f->w, out, sizeof out, "stats", "--metrics", spec, NULL);
    EXPECT_EQ("coalitionctl stats with nothing listening", 1, rc);
    rc = world_ctl(&f->w, out, sizeof out, "stats", "--metrics", "nowhere", NULL);
    EXPECT_EQ("coalitionctl stats with a bad address", 2, rc);
}

static void test_http_edges(void **state)
{
    fixture_t *f = *state;
    char *body = malloc(SCRAPE_BYTES);
    assert_non_null(body);
    int bp = f->w.broker_metrics_port;
    EXPECT_EQ("GET /nope", 404, http(bp, "GET", "/nope", body, SCRAPE_BYTES));
    EXPECT_EQ("GET /metrics/x", 404, http(bp, "GET", "/metrics/x", body, SCRAPE_BYTES));
    EXPECT_EQ("POST /metrics", 405, http(bp, "POST", "/metrics", body, SCRAPE_BYTES));
    EXPECT_EQ("DELETE /metrics", 405, http(bp, "DELETE", "/metrics", body, SCRAPE_BYTES));
    EXPECT_EQ("HEAD /metrics", 200, http(bp, "HEAD", "/metrics", body, SCRAPE_BYTES));
    EXPECT_EQ("HEAD has no body", 0, strlen(body));
    free(body);
    /* A bad --metrics is a usage error; an address in use stops the program at start. */
    char out[OUT_BYTES], taken[32], data[HARNESS_PATH_BYTES + 16];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", bp);
    snprintf(data, sizeof data, "%s/metrics-agent", f->w.dir);
    char *bad[] = {COALITION_AGENT_BIN, "--partner", "P9",        "--data", data,
                   "--insecure",        "--metrics", "localhost", NULL};
    EXPECT_EQ("agent --metrics without a port", 2, harness_run(bad, out, sizeof out));
    char *busy[] = {COALITION_AGENT_BIN, "--partner", "P9",  "--data", data,
                    "--insecure",        "--metrics", taken, NULL};
    EXPECT_EQ("agent --metrics on a taken port", 1, harness_run(busy, out, sizeof out));
    char *broker[] = {COALITION_BROKER_BIN, "--ledger", f->w.ledger, "--metrics", "1.2.3:4", NULL};
    EXPECT_EQ("broker --metrics with a bad host", 2, harness_run(broker, out, sizeof out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_expositions_parse),
        cmocka_unit_test(test_counters_move_exactly),
        cmocka_unit_test(test_outbox_fills_and_drains),
        cmocka_unit_test(test_hostile_input_makes_no_labels),
        cmocka_unit_test(test_stats_command),
        cmocka_unit_test(test_http_edges),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
