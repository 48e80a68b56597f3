/* Integration tests of the journal feed, with the real programs:
 *  - a subscriber that starts late gets every entry from seq 1 in order, each equal (its
 *    bytes' hash, kind, member, points) to the ledger's own journal;
 *  - `coalitionctl tail --follow` SIGSTOPped while thousands of earns commit, on a broker
 *    whose feed drops for it after one queued message: it still prints every seq exactly
 *    once, and exactly what `coalitionctl journal` prints; it says it filled gaps;
 *  - an in-test subscriber with a receive queue of one message, reading slowly: the same;
 *  - tail --follow across a broker killed (SIGKILL) and restarted resumes without a gap;
 *  - another ledger behind the same feed endpoints: tail stops at the broken chain;
 *  - a ledger whose journal ends before what tail printed (an older backup): tail stops;
 *  - replay peers that never read their answers cost the broker little memory;
 *  - a feed beyond loopback is CURVE with an allow-list: a listed key reads it, an
 *    unlisted key and plain TCP get nothing; --insecure and a bad list stop the broker;
 *  - bad --from values, a --from past the journal's end, no broker, a feed endpoint off
 *    loopback and bad --feed-hwm values are clear errors; garbage on the replay socket
 *    gets a bad-request answer and the feed goes on.
 * Synchronisation is by polling files and sockets, never a fixed sleep. */
#include "client.h"
#include "clock.h"
#include "errors.h"
#include "feed_client.h"
#include "harness.h"
#include "keys.h"
#include "ledger.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define PARTNER "fuel"
#define SITE "s1"
#define MEMBERS 10
#define EARN_AMOUNT_MINOR 1234 /* 12.34 EUR at 1 point per EUR: 12 points */
#define EARN_POINTS 12
#define SETUP_ENTRIES (1 + MEMBERS) /* partner add, member adds */
#define LATE_EARNS 700              /* more than two replay answers */
#define PAUSED_EARNS 4000
#define SLOW_EARNS 3000
#define WINDOW 256
#define CALL_TIMEOUT_MS 20000
#define WAIT_TIMEOUT_MS 60000
#define POLL_STEP_MS 10
#define OUT_BYTES 4096
#define FILE_BYTES_MAX ((size_t)16 << 20)
#define NEXT_TIMEOUT_MS 10000
#define STALL_EARNS 600
#define STALL_PEERS 24
#define STALL_REQUESTS 300
#define STALL_WATCH_MS 4000
#define STALL_GROWTH_KB_MAX (32 * 1024)
#if defined(__SANITIZE_ADDRESS__)
#define RSS_MEANINGFUL false
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_MEANINGFUL false
#endif
#endif
#ifndef RSS_MEANINGFUL
#define RSS_MEANINGFUL true
#endif
#define SHORTER_WAIT_MS 15000 /* silence (2 s), then one replay: a few seconds */

typedef struct fixture {
    world_t w;
    proc_t tail; /* a coalitionctl tail --follow child, or pid 0 */
    char tail_out[HARNESS_PATH_BYTES];
    world_t other; /* a second ledger, when other_live */
    bool other_live;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    world_init(&f->w);
    f->w.insecure = true; /* plain TCP: the earns' partner id is believed (no keys needed) */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->tail.pid > 0)
        harness_stop(&f->tail, SIGKILL);
    world_destroy(&f->w);
    if (f->other_live)
        world_destroy(&f->other);
    free(f);
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void ctl_ok(world_t *w, const char *arg0, const char *arg1, const char *arg2,
                   const char *arg3, const char *arg4)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, arg0, arg1, arg2, arg3, arg4, NULL);
    if (rc != 0)
        fail_msg("coalitionctl %s %s %s: expected exit 0, got %d: %s", arg0, arg1, arg2, rc, out);
}

/* The partner and MEMBERS members: SETUP_ENTRIES entries. */
static void populate(world_t *w)
{
    ctl_ok(w, "partner", "add", PARTNER, "--earn-rate", "1");
    for (int m = 0; m < MEMBERS; m++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", m);
        ctl_ok(w, "member", "add", id, NULL, NULL);
    }
}

static int send_earn(void *sock, const char *tag, int i)
{
    char txn[TXN_ID_LEN_MAX + 1], member[16];
    snprintf(txn, sizeof txn, "%s-%d", tag, i);
    snprintf(member, sizeof member, "m%d", i % MEMBERS);
    envelope_t env;
    Coalition__EarnRequest earn;
    coalition__envelope__init(&env);
    coalition__earn_request__init(&earn);
    env.version = WIRE_VERSION;
    env.partner_id = PARTNER;
    env.terminal_id = "t1";
    env.site_id = SITE;
    env.txn_id = txn;
    env.client_time_ms = clock_wall_ms();
    earn.member_id = member;
    earn.amount_minor = EARN_AMOUNT_MINOR;
    earn.currency = "EUR";
    env.body_case = COALITION__ENVELOPE__BODY_EARN;
    env.earn = &earn;
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    size_t len = coalition__envelope__get_packed_size(&env);
    assert_true(len <= sizeof buf);
    coalition__envelope__pack(&env, buf);
    return zmq_send(sock, buf, len, 0) == (int)len ? 0 : -1;
}

/* `count` earns pipelined over one DEALER, WINDOW in flight; every one approved fresh. */
static void earns(world_t *w, const char *tag, int count)
{
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = CALL_TIMEOUT_MS;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    EXPECT_EQ("connect to the broker", 0, zmq_connect(sock, w->broker_endpoint));
    int sent = 0, approved = 0;
    for (int answered = 0; answered < count; answered++) {
        while (sent < count && sent - answered < WINDOW && send_earn(sock, tag, sent) == 0)
            sent++;
        uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
        int n = zmq_recv(sock, buf, sizeof buf, 0);
        if (n < 0)
            fail_msg("earn %d of %d: no reply: %s", answered, count, zmq_strerror(zmq_errno()));
        authorization_t *auth = wire_auth_decode(buf, (size_t)n);
        assert_non_null(auth);
        if (auth->code != RC_APPROVED || auth->replay || auth->points != EARN_POINTS)
            fail_msg("earn %s: expected a fresh 00 of %d points, got %02d (%s) %" PRId64,
                     auth->txn_id, EARN_POINTS, (int)auth->code, auth->text, auth->points);
        approved++;
        wire_auth_free(auth);
    }
    EXPECT_EQ("earns approved", count, approved);
    zmq_close(sock);
    zmq_ctx_term(ctx);
}

static uint64_t ledger_seq_now(world_t *w)
{
    ledger_t *l = NULL;
    EXPECT_EQ("open the ledger read-only", CL_OK, ledger_open(&l, w->ledger, STORE_READ_ONLY));
    uint64_t seq = ledger_last_seq(l);
    ledger_destroy(&l);
    return seq;
}

static void feed_endpoints(world_t *w, char *pub, char *replay, size_t size)
{
    int n = snprintf(pub, size, "ipc://%s/feed.sock", w->ledger);
    int m = snprintf(replay, size, "ipc://%s/feed-replay.sock", w->ledger);
    if (n < 0 || m < 0 || (size_t)n >= size || (size_t)m >= size)
        fail_msg("feed endpoint paths too long for %zu bytes", size);
}

/* What the ledger holds at `seq`, read by the ledger's own code. */
static void expect_same_as_ledger(ledger_t *l, const journal_entry_t *got)
{
    journal_entry_t *want[1];
    size_t n = 0;
    EXPECT_EQ("read the ledger's entry", CL_OK, ledger_journal_slice(l, got->seq, want, 1, &n));
    EXPECT_EQ("the ledger has the entry", 1, n);
    EXPECT_EQ("seq", want[0]->seq, got->seq);
    EXPECT_EQ("kind", want[0]->kind, got->kind);
    EXPECT_STR("member", want[0]->member_id, got->member_id);
    EXPECT_STR("txn", want[0]->txn_id, got->txn_id);
    EXPECT_EQ("points", want[0]->points, got->points);
    EXPECT_EQ("hash length", WIRE_HASH_BYTES, got->hash.len);
    EXPECT_TRUE("hash equals the ledger's",
                memcmp(want[0]->hash.data, got->hash.data, WIRE_HASH_BYTES) == 0);
    ledger_journal_slice_free(want, n);
}

/* ---- a late subscriber ---------------------------------------------------------------- */

static void late_subscriber_gets_everything_from_seq_1(void **state)
{
    fixture_t *f = *state;
    world_start_broker(&f->w);
    populate(&f->w);
    earns(&f->w, "late", LATE_EARNS);
    uint64_t last = SETUP_ENTRIES + LATE_EARNS;
    char pub[HARNESS_PATH_BYTES + 16], replay[HARNESS_PATH_BYTES + 16];
    feed_endpoints(&f->w, pub, replay, sizeof pub);
    feed_client_options_t o = {pub, replay, 1, false, 0, NULL, NULL};
    feed_client_t *c = NULL;
    EXPECT_EQ("client", CL_OK, feed_client_new(&c, &o));
    uint64_t told = 0;
    EXPECT_EQ("start", CL_OK, feed_client_start(c, NEXT_TIMEOUT_MS, &told));
    EXPECT_EQ("the broker's last committed seq", last, told);
    ledger_t *l = NULL;
    EXPECT_EQ("open the ledger read-only", CL_OK, ledger_open(&l, f->w.ledger, STORE_READ_ONLY));
    feed_item_t item;
    for (uint64_t seq = 1; seq <= last; seq++) {
        int rc = feed_client_next(c, NEXT_TIMEOUT_MS, &item);
        if (rc != CL_OK)
            fail_msg("entry %" PRIu64 ": expected it, got %s", seq, cl_strerror(rc));
        EXPECT_EQ("entries in order", seq, item.entry->seq);
        expect_same_as_ledger(l, item.entry);
        if (seq > SETUP_ENTRIES)
            EXPECT_EQ("an earn's points", EARN_POINTS, item.entry->points);
    }
    EXPECT_EQ("then the end", CL_ERR_NOT_FOUND, feed_client_next(c, NEXT_TIMEOUT_MS, &item));
    feed_client_stats_t st;
    feed_client_stats(c, &st);
    EXPECT_EQ("all replayed (not following)", last, st.replayed);
    EXPECT_EQ("none live", 0, st.live);
    EXPECT_TRUE("several replay answers (256 entries each at most)", st.replays >= 3);
    ledger_destroy(&l);
    feed_client_destroy(&c);

    /* The same through the command: exactly what `journal` prints. */
    char tail_path[HARNESS_PATH_BYTES], journal_path[HARNESS_PATH_BYTES];
    snprintf(tail_path, sizeof tail_path, "%s/tail.json", f->w.dir);
    snprintf(journal_path, sizeof journal_path, "%s/journal.json", f->w.dir);
    char *tail_argv[] = {COALITIONCTL_BIN, "--ledger", f->w.ledger, "--json", "tail", NULL};
    char *journal_argv[] = {COALITIONCTL_BIN, "--ledger", f->w.ledger, "--json", "journal", NULL};
    EXPECT_EQ("tail exits 0", 0, harness_run_to_file(tail_argv, tail_path));
    EXPECT_EQ("journal exits 0", 0, harness_run_to_file(journal_argv, journal_path));
    char *cmp_argv[] = {"/usr/bin/cmp", tail_path, journal_path, NULL};
    char out[OUT_BYTES];
    EXPECT_EQ("tail prints exactly what journal prints", 0, harness_run(cmp_argv, out, sizeof out));
    EXPECT_EQ("world stops", 0, world_stop_broker(&f->w, SIGTERM));
}

/* ---- helpers for the command's output ------------------------------------------------- */

static char *read_all(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *buf = calloc(1, FILE_BYTES_MAX + 1);
    assert_non_null(buf);
    size_t n = fp != NULL ? fread(buf, 1, FILE_BYTES_MAX, fp) : 0;
    buf[n] = '\0';
    if (fp != NULL)
        fclose(fp);
    return buf;
}

/* Lines of `text` that start with `prefix`, concatenated (in place, returned). */
static char *lines_starting(char *text, char prefix)
{
    char *out = text, *line = text;
    while (*line != '\0') {
        char *nl = strchr(line, '\n');
        size_t len = nl != NULL ? (size_t)(nl - line) + 1 : strlen(line);
        if (line[0] == prefix) {
            memmove(out, line, len);
            out += len;
        }
        line += len;
    }
    *out = '\0';
    return text;
}

/* Wait until the file holds the JSON line of `seq`. */
static void wait_for_seq(const char *path, uint64_t seq)
{
    char want[48];
    snprintf(want, sizeof want, "{\"seq\":%" PRIu64 ",", seq);
    int64_t deadline = clock_mono_ms() + WAIT_TIMEOUT_MS;
    for (;;) {
        char *text = read_all(path);
        bool found = strstr(text, want) != NULL;
        free(text);
        if (found)
            return;
        if (clock_mono_ms() > deadline)
            fail_msg("tail never printed seq %" PRIu64 " (output in %s)", seq, path);
        sleep_ms(POLL_STEP_MS);
    }
}

static void start_tail(fixture_t *f, const char *from)
{
    snprintf(f->tail_out, sizeof f->tail_out, "%s/tail-follow.out", f->w.dir);
    char *argv[] = {COALITIONCTL_BIN, "--ledger",   f->w.ledger, "--json", "tail",
                    "--from",         (char *)from, "--follow",  NULL};
    f->tail.pid = harness_spawn(argv, f->tail_out);
}

static uint64_t summary_count(const char *text, const char *after_what)
{
    const char *at = strstr(text, "tail: ");
    const char *field = at != NULL ? strstr(at, after_what) : NULL;
    if (field == NULL)
        fail_msg("no tail summary with \"%s\" in: %s", after_what, at != NULL ? at : "(none)");
    const char *p = field;
    while (p > at && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return strtoull(p, NULL, 10);
}

/* Stop the tail; its JSON lines must be exactly `coalitionctl journal --json`'s, every
 * seq once from 1 to the ledger's last. Returns the gaps it says it filled. */
static uint64_t stop_tail_and_compare(fixture_t *f, uint64_t last)
{
    wait_for_seq(f->tail_out, last);
    EXPECT_EQ("tail --follow exits 0 on SIGTERM", 0, harness_stop(&f->tail, SIGTERM));
    char journal_path[HARNESS_PATH_BYTES];
    snprintf(journal_path, sizeof journal_path, "%s/journal.json", f->w.dir);
    char *argv[] = {COALITIONCTL_BIN, "--ledger", f->w.ledger, "--json", "journal", NULL};
    EXPECT_EQ("journal exits 0", 0, harness_run_to_file(argv, journal_path));
    char *got = read_all(f->tail_out), *want = read_all(journal_path);
    char *summary = strstr(got, "\ntail: ");
    assert_non_null(summary);
    uint64_t entries = summary_count(summary + 1, " entries");
    uint64_t gaps = summary_count(summary + 1, " gap(s)");
    EXPECT_EQ("entries the tail counted", last, entries);
    lines_starting(got, '{');
    EXPECT_TRUE("the journal has every seq", strstr(want, "{\"seq\":1,") == want);
    size_t lines = 0;
    for (const char *p = want; *p != '\0'; p++)
        lines += *p == '\n';
    EXPECT_EQ("journal lines", last, lines);
    if (strcmp(got, want) != 0)
        fail_msg("tail's JSON lines (%zu bytes) differ from the journal's (%zu bytes)", strlen(got),
                 strlen(want));
    free(got);
    free(want);
    return gaps;
}

/* Our own broker process (the world's settings plus up to four more arguments, NULL
 * after the last), as world_start_broker. */
static void start_broker_with(world_t *w, const char *a0, const char *a1, const char *a2,
                              const char *a3)
{
    char *argv[] = {COALITION_BROKER_BIN, "--ledger",   w->ledger,  "--bind",
                    w->broker_endpoint,   "--insecure", (char *)a0, (char *)a1,
                    (char *)a2,           (char *)a3,   NULL};
    w->broker.pid = harness_spawn(argv, w->broker.log_path);
    if (!harness_wait_reply(w->admin_endpoint, HARNESS_READY_TIMEOUT_MS))
        fail_msg("broker did not come up (log %s)", w->broker.log_path);
}

/* ---- a paused subscriber ---------------------------------------------------------------- */

static void paused_tail_ends_with_every_seq_once(void **state)
{
    fixture_t *f = *state;
    start_broker_with(&f->w, "--feed-hwm", "1", NULL, NULL); /* drops for a stopped tail at once */
    populate(&f->w);
    start_tail(f, "1");
    wait_for_seq(f->tail_out, SETUP_ENTRIES);
    harness_pause(&f->tail);
    earns(&f->w, "paused", PAUSED_EARNS);
    harness_resume(&f->tail);
    uint64_t last = SETUP_ENTRIES + PAUSED_EARNS;
    EXPECT_EQ("the ledger's last seq", last, ledger_seq_now(&f->w));
    uint64_t gaps = stop_tail_and_compare(f, last);
    if (gaps == 0)
        fail_msg("expected the feed to drop for the stopped tail (gaps filled > 0), got 0");
    EXPECT_EQ("world stops", 0, world_stop_broker(&f->w, SIGTERM));
}

typedef struct earn_job {
    world_t *w;
    int count;
} earn_job_t;

static void *earn_thread(void *arg)
{
    earn_job_t *job = arg;
    earns(job->w, "slow", job->count);
    return NULL;
}

static void slow_subscriber_with_tiny_queue_misses_nothing(void **state)
{
    fixture_t *f = *state;
    start_broker_with(&f->w, "--feed-hwm", "1", NULL, NULL);
    populate(&f->w);
    char pub[HARNESS_PATH_BYTES + 16], replay[HARNESS_PATH_BYTES + 16];
    feed_endpoints(&f->w, pub, replay, sizeof pub);
    feed_client_options_t o = {pub, replay, 1, true, 1, NULL, NULL};
    feed_client_t *c = NULL;
    uint64_t told = 0;
    EXPECT_EQ("client", CL_OK, feed_client_new(&c, &o));
    EXPECT_EQ("start", CL_OK, feed_client_start(c, NEXT_TIMEOUT_MS, &told));
    EXPECT_EQ("the broker's last seq at start", SETUP_ENTRIES, told);
    pthread_t t;
    earn_job_t job = {&f->w, SLOW_EARNS};
    EXPECT_EQ("earn thread", 0, pthread_create(&t, NULL, earn_thread, &job));
    ledger_t *l = NULL;
    uint64_t last = SETUP_ENTRIES + SLOW_EARNS;
    feed_item_t item;
    for (uint64_t seq = 1; seq <= last; seq++) {
        int rc = feed_client_next(c, NEXT_TIMEOUT_MS, &item);
        if (rc != CL_OK)
            fail_msg("entry %" PRIu64 ": expected it, got %s", seq, cl_strerror(rc));
        EXPECT_EQ("entries in order, none twice", seq, item.entry->seq);
        if (seq % 64 == 0)
            sleep_ms(2); /* slower than the writer: the queue of one overflows */
        if (seq == last / 2)
            pthread_join(t, NULL);
    }
    EXPECT_EQ("the ledger's last seq", last, ledger_seq_now(&f->w));
    EXPECT_EQ("open the ledger", CL_OK, ledger_open(&l, f->w.ledger, STORE_READ_ONLY));
    expect_same_as_ledger(l, item.entry);
    ledger_destroy(&l);
    EXPECT_EQ("nothing after the last", CL_ERR_TIMEOUT, feed_client_next(c, 300, &item));
    feed_client_stats_t st;
    feed_client_stats(c, &st);
    printf("slow subscriber: %" PRIu64 " live, %" PRIu64 " replayed, %" PRIu64 " gaps, %" PRIu64
           " duplicates, %" PRIu64 " replays\n",
           st.live, st.replayed, st.gaps, st.duplicates, st.replays);
    EXPECT_EQ("every entry once", last, st.live + st.replayed);
    EXPECT_TRUE("some entries came live", st.live > 0);
    EXPECT_TRUE("the tiny queue overflowed and the gaps were filled", st.gaps > 0);
    feed_client_destroy(&c);
    EXPECT_EQ("world stops", 0, world_stop_broker(&f->w, SIGTERM));
}

/* ---- a broker restart ------------------------------------------------------------------- */

static void tail_resumes_across_a_broker_restart(void **state)
{
    fixture_t *f = *state;
    world_start_broker(&f->w);
    populate(&f->w);
    start_tail(f, "3");
    wait_for_seq(f->tail_out, SETUP_ENTRIES);
    EXPECT_EQ("broker killed", -SIGKILL, world_stop_broker(&f->w, SIGKILL));
    world_start_broker(&f->w);
    earns(&f->w, "restart", 300);
    uint64_t last = SETUP_ENTRIES + 300;
    wait_for_seq(f->tail_out, last);
    EXPECT_EQ("tail --follow exits 0 on SIGTERM", 0, harness_stop(&f->tail, SIGTERM));
    char *got = read_all(f->tail_out);
    char *summary = strstr(got, "\ntail: ");
    assert_non_null(summary);
    EXPECT_EQ("entries from seq 3", last - 2, summary_count(summary + 1, " entries"));
    lines_starting(got, '{');
    uint64_t expect = 3;
    for (char *line = got; *line != '\0'; expect++) {
        uint64_t seq = strtoull(line + strlen("{\"seq\":"), NULL, 10);
        EXPECT_EQ("every seq once, in order, across the restart", expect, seq);
        line = strchr(line, '\n') + 1;
    }
    EXPECT_EQ("up to the last", last + 1, expect);
    free(got);
    EXPECT_EQ("world stops", 0, world_stop_broker(&f->w, SIGTERM));
}

/* Another ledger behind the same feed endpoints (a broker started on a restored copy,
 * say): the tail's next entry does not continue the chain it has, and it stops with an
 * error instead of mixing two histories. */
static void tail_stops_when_the_chain_breaks(void **state)
{
    fixture_t *f = *state;
    char pub[64], replay[64];
    snprintf(pub, sizeof pub, "tcp://127.0.0.1:%d", harness_free_port());
    snprintf(replay, sizeof replay, "tcp://127.0.0.1:%d", harness_free_port());
    start_broker_with(&f->w, "--feed", pub, "--feed-replay", replay);
    populate(&f->w);
    snprintf(f->tail_out, sizeof f->tail_out, "%s/tail-chain.out", f->w.dir);
    char *argv[] = {COALITIONCTL_BIN, "--ledger", f->w.ledger,     "--json", "tail", "--follow",
                    "--feed",         pub,        "--feed-replay", replay,   NULL};
    f->tail.pid = harness_spawn(argv, f->tail_out);
    wait_for_seq(f->tail_out, SETUP_ENTRIES);
    EXPECT_EQ("first broker stops", 0, world_stop_broker(&f->w, SIGTERM));
    world_t *other = &f->other;
    world_init(other);
    f->other_live = true;
    other->insecure = true;
    start_broker_with(other, "--feed", pub, "--feed-replay", replay);
    populate(other);
    ctl_ok(other, "member", "add", "extra", NULL, NULL); /* seq SETUP_ENTRIES + 1 */
    int64_t deadline = clock_mono_ms() + WAIT_TIMEOUT_MS;
    int status = 0;
    while (waitpid(f->tail.pid, &status, WNOHANG) == 0 && clock_mono_ms() < deadline)
        sleep_ms(POLL_STEP_MS);
    bool exited = clock_mono_ms() < deadline;
    EXPECT_EQ("other broker stops", 0, world_stop_broker(other, SIGTERM));
    if (!exited)
        fail_msg("tail went on after the chain broke (output in %s)", f->tail_out);
    f->tail.pid = 0;
    char *text = read_all(f->tail_out);
    EXPECT_EQ("tail exits 1", 1, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    EXPECT_CONTAINS("and says why", "entry 12 fails its checks", text);
    EXPECT_FALSE("no entry of the other ledger printed",
                 strstr(text, "\"member\":\"extra\"") != NULL);
    free(text);
}

/* A ledger behind the feed whose journal ends before entries the tail already printed
 * (restored from an older backup, or another ledger): the tail must stop and say so,
 * not take the new broker's entries for duplicates and wait for ever. */
static void tail_stops_when_the_journal_is_shorter(void **state)
{
    fixture_t *f = *state;
    char pub[64], replay[64];
    snprintf(pub, sizeof pub, "tcp://127.0.0.1:%d", harness_free_port());
    snprintf(replay, sizeof replay, "tcp://127.0.0.1:%d", harness_free_port());
    start_broker_with(&f->w, "--feed", pub, "--feed-replay", replay);
    populate(&f->w);
    ctl_ok(&f->w, "member", "add", "a1", NULL, NULL);
    ctl_ok(&f->w, "member", "add", "a2", NULL, NULL); /* seq SETUP_ENTRIES + 2 */
    snprintf(f->tail_out, sizeof f->tail_out, "%s/tail-shorter.out", f->w.dir);
    char *argv[] = {COALITIONCTL_BIN, "--ledger", f->w.ledger,     "--json", "tail", "--follow",
                    "--feed",         pub,        "--feed-replay", replay,   NULL};
    f->tail.pid = harness_spawn(argv, f->tail_out);
    wait_for_seq(f->tail_out, SETUP_ENTRIES + 2);
    EXPECT_EQ("first broker stops", 0, world_stop_broker(&f->w, SIGTERM));
    world_t *other = &f->other;
    world_init(other);
    f->other_live = true;
    other->insecure = true;
    start_broker_with(other, "--feed", pub, "--feed-replay", replay);
    populate(other);
    ctl_ok(other, "member", "add", "b1", NULL, NULL); /* seq SETUP_ENTRIES + 1, not a1 */
    int64_t deadline = clock_mono_ms() + SHORTER_WAIT_MS;
    int status = 0;
    while (waitpid(f->tail.pid, &status, WNOHANG) == 0 && clock_mono_ms() < deadline)
        sleep_ms(POLL_STEP_MS);
    bool exited = clock_mono_ms() < deadline;
    EXPECT_EQ("other broker stops", 0, world_stop_broker(other, SIGTERM));
    if (!exited)
        fail_msg("tail went on behind a shorter journal (output in %s)", f->tail_out);
    f->tail.pid = 0;
    char *text = read_all(f->tail_out);
    EXPECT_EQ("tail exits 1", 1, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    EXPECT_CONTAINS("and says why", "is not the ledger this tail started on", text);
    free(text);
}

/* ---- replay requests that are never read ------------------------------------------------- */

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    long kb = -1;
    while (fp != NULL && fgets(line, sizeof line, fp) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (fp != NULL)
        fclose(fp);
    assert_true(kb > 0);
    return kb;
}

/* Peers that send many replay requests and never read the answers (a receive queue of
 * one message, a tiny kernel buffer): the broker keeps a few answers for each, not a
 * queue of 64 answers of up to 1 MiB each per peer. */
static void stalled_replay_peers_cost_little_memory(void **state)
{
    fixture_t *f = *state;
    world_start_broker(&f->w);
    populate(&f->w);
    earns(&f->w, "mem", STALL_EARNS);
    char pub[HARNESS_PATH_BYTES], replay[HARNESS_PATH_BYTES];
    feed_endpoints(&f->w, pub, replay, sizeof pub);
    long before = rss_kb(f->w.broker.pid);
    void *ctx = zmq_ctx_new();
    void *peers[STALL_PEERS];
    for (int p = 0; p < STALL_PEERS; p++) {
        int one = 1, small = 1024, linger = 0;
        peers[p] = zmq_socket(ctx, ZMQ_DEALER);
        zmq_setsockopt(peers[p], ZMQ_RCVHWM, &one, sizeof one);
        zmq_setsockopt(peers[p], ZMQ_RCVBUF, &small, sizeof small);
        zmq_setsockopt(peers[p], ZMQ_LINGER, &linger, sizeof linger);
        EXPECT_EQ("connect a peer", 0, zmq_connect(peers[p], replay));
        for (int i = 0; i < STALL_REQUESTS; i++) {
            Coalition__FeedReplayRequest req = COALITION__FEED_REPLAY_REQUEST__INIT;
            req.version = FEED_VERSION;
            req.from_seq = 1;
            req.max_entries = FEED_BATCH_ENTRIES_MAX;
            req.request_id = (uint64_t)i + 1;
            uint8_t buf[FEED_REQUEST_BYTES_MAX];
            size_t len = coalition__feed_replay_request__pack(&req, buf);
            zmq_send(peers[p], buf, len, ZMQ_DONTWAIT);
        }
    }
    long most = before;
    for (int64_t until = clock_mono_ms() + STALL_WATCH_MS; clock_mono_ms() < until;) {
        long now = rss_kb(f->w.broker.pid);
        most = now > most ? now : most;
        sleep_ms(POLL_STEP_MS);
    }
    printf("broker RSS %ld kB before, at most %ld kB with %d stalled replay peers\n", before, most,
           STALL_PEERS);
    for (int p = 0; p < STALL_PEERS; p++)
        zmq_close(peers[p]);
    zmq_ctx_term(ctx);
    if (!RSS_MEANINGFUL) /* ASan keeps freed blocks (every dropped answer) in quarantine */
        return;
    EXPECT_TRUE("the broker's memory grew by less than STALL_GROWTH_KB_MAX",
                most - before < STALL_GROWTH_KB_MAX);
}

/* ---- clear errors ----------------------------------------------------------------------- */

/* Run to completion with stdout and stderr into `path` (truncated first). */
static int run_logged(char *const argv[], const char *path, char **text_out)
{
    unlink(path);
    pid_t pid = harness_spawn(argv, path);
    int status = 0;
    waitpid(pid, &status, 0);
    *text_out = read_all(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static void expect_tail_error(fixture_t *f, const char *from, int status, const char *message)
{
    char path[HARNESS_PATH_BYTES], *text = NULL;
    snprintf(path, sizeof path, "%s/tail-error.out", f->w.dir);
    char *argv[] = {COALITIONCTL_BIN, "--ledger",   f->w.ledger, "tail",
                    "--from",         (char *)from, NULL};
    int got = run_logged(argv, path, &text);
    if (got != status || strstr(text, message) == NULL)
        fail_msg("tail --from '%s': expected exit %d saying \"%s\", got %d: %s", from, status,
                 message, got, text);
    EXPECT_FALSE("no entry printed", strstr(text, "enroll") != NULL);
    free(text);
}

static void garbage_on_the_replay_socket(world_t *w)
{
    char pub[HARNESS_PATH_BYTES + 16], replay[HARNESS_PATH_BYTES + 16];
    feed_endpoints(w, pub, replay, sizeof pub);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = CALL_TIMEOUT_MS;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    EXPECT_EQ("connect to the replay socket", 0, zmq_connect(sock, replay));
    const char *garbage[] = {"hello", ""};
    for (size_t i = 0; i < 3; i++) {
        if (i < 2)
            zmq_send(sock, garbage[i], strlen(garbage[i]), 0);
        else { /* a request split over two frames */
            zmq_send(sock, "\x08\x01", 2, ZMQ_SNDMORE);
            zmq_send(sock, "\x10\x01", 2, 0);
        }
        uint8_t buf[OUT_BYTES];
        int n = zmq_recv(sock, buf, sizeof buf, 0);
        if (n < 0)
            fail_msg("garbage %zu: expected a bad-request answer, got none", i);
        Coalition__FeedBatch *b = coalition__feed_batch__unpack(NULL, (size_t)n, buf);
        assert_non_null(b);
        EXPECT_EQ("bad request", FEED_STATUS_BAD_REQUEST, b->status);
        EXPECT_EQ("no entries", 0, b->n_entries);
        coalition__feed_batch__free_unpacked(b, NULL);
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
}

static void bad_values_are_clear_errors(void **state)
{
    fixture_t *f = *state;
    world_start_broker(&f->w);
    populate(&f->w);
    garbage_on_the_replay_socket(&f->w);
    const char *bad[] = {"0", "-1", "abc", "1x", "", " 5", "+5", "18446744073709551616"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_tail_error(f, bad[i], 2, "tail --from needs a sequence number from 1");
    char past[32], end[32];
    snprintf(past, sizeof past, "%d", SETUP_ENTRIES + 2);
    snprintf(end, sizeof end, "%d", SETUP_ENTRIES + 1);
    expect_tail_error(f, past, 1, "is past the end of the journal (last committed seq 11)");
    char path[HARNESS_PATH_BYTES], *text = NULL;
    snprintf(path, sizeof path, "%s/tail-end.out", f->w.dir);
    char *at_end[] = {COALITIONCTL_BIN, "--ledger", f->w.ledger, "tail", "--from", end, NULL};
    EXPECT_EQ("tail from the next seq: nothing, exit 0", 0, run_logged(at_end, path, &text));
    EXPECT_CONTAINS("its summary", "tail: 0 entries", text);
    free(text);
    /* After the garbage, the feed still serves. */
    char *from_one[] = {COALITIONCTL_BIN, "--ledger", f->w.ledger, "tail", NULL};
    EXPECT_EQ("tail from 1", 0, run_logged(from_one, path, &text));
    EXPECT_CONTAINS("every entry", "tail: 11 entries (0 live, 11 replayed)", text);
    free(text);
    EXPECT_EQ("world stops", 0, world_stop_broker(&f->w, SIGTERM));

    expect_tail_error(f, "1", 2, "no answer from the broker's feed");
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://0.0.0.0:%d", harness_free_port());
    char *open_feed[] = {
        COALITION_BROKER_BIN, "--ledger", f->w.ledger, "--bind", f->w.broker_endpoint,
        "--insecure",         "--feed",   endpoint,    NULL};
    EXPECT_EQ("a feed off loopback stops the broker", 1, run_logged(open_feed, path, &text));
    EXPECT_CONTAINS("and says why", "feed: refusing tcp://0.0.0.0", text);
    free(text);
    const char *hwm[] = {"0", "x", "4097"};
    for (size_t i = 0; i < 3; i++) {
        char *argv[] = {COALITION_BROKER_BIN, "--ledger",     f->w.ledger,
                        "--feed-hwm",         (char *)hwm[i], NULL};
        EXPECT_EQ("a bad --feed-hwm is a usage error", 2, run_logged(argv, path, &text));
        EXPECT_CONTAINS("and says so", "feed-hwm must be 1..4096", text);
        free(text);
    }
}

/* ---- a CURVE feed beyond loopback ------------------------------------------------------ */

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    EXPECT_EQ("write", 0, fclose(fp));
}

/* A key pair from `coalitionctl feed-key new`; its public key line into *public_out. */
static void feed_key(fixture_t *f, const char *name, char *path, size_t size, char *public_out)
{
    snprintf(path, size, "%s/%s", f->w.dir, name);
    char out[OUT_BYTES];
    EXPECT_EQ("feed-key new", 0, world_ctl(&f->w, out, sizeof out, "feed-key", "new", path, NULL));
    EXPECT_EQ("a Z85 public key line", KEY_Z85_LEN + 1, strlen(out));
    memcpy(public_out, out, KEY_Z85_LEN + 2);
}

static int tail_with(fixture_t *f, const char *pub, const char *replay, const char *key,
                     char **text)
{
    char path[HARNESS_PATH_BYTES];
    snprintf(path, sizeof path, "%s/tail-curve.out", f->w.dir);
    char *argv[] = {
        COALITIONCTL_BIN, "--ledger",     f->w.ledger,          "tail",      "--feed", (char *)pub,
        "--feed-replay",  (char *)replay, key ? "--key" : NULL, (char *)key, NULL};
    return run_logged(argv, path, text);
}

static void curve_feed_admits_only_listed_keys(void **state)
{
    fixture_t *f = *state;
    char ok_key[HARNESS_PATH_BYTES], bad_key[HARNESS_PATH_BYTES], allow[HARNESS_PATH_BYTES];
    char ok_pub[KEY_Z85_BYTES + 1], bad_pub[KEY_Z85_BYTES + 1], list[4 * KEY_Z85_BYTES];
    feed_key(f, "ok.key", ok_key, sizeof ok_key, ok_pub);
    feed_key(f, "bad.key", bad_key, sizeof bad_key, bad_pub);
    snprintf(allow, sizeof allow, "%s/feed-clients", f->w.dir);
    snprintf(list, sizeof list, "# the warehouse\n%s", ok_pub);
    write_text(allow, list);
    char bind_pub[64], bind_replay[64], pub[64], replay[64];
    int p1 = harness_free_port(), p2 = harness_free_port();
    snprintf(bind_pub, sizeof bind_pub, "tcp://0.0.0.0:%d", p1);
    snprintf(bind_replay, sizeof bind_replay, "tcp://0.0.0.0:%d", p2);
    snprintf(pub, sizeof pub, "tcp://127.0.0.1:%d", p1);
    snprintf(replay, sizeof replay, "tcp://127.0.0.1:%d", p2);
    char *argv[] = {COALITION_BROKER_BIN, "--ledger",       f->w.ledger, "--bind",
                    f->w.broker_endpoint, "--feed",         bind_pub,    "--feed-replay",
                    bind_replay,          "--feed-clients", allow,       NULL};
    f->w.broker.pid = harness_spawn(argv, f->w.broker.log_path);
    if (!harness_wait_reply(f->w.admin_endpoint, HARNESS_READY_TIMEOUT_MS))
        fail_msg("broker did not come up (log %s)", f->w.broker.log_path);
    populate(&f->w);
    char *text = NULL;
    EXPECT_EQ("a listed key reads the feed", 0, tail_with(f, pub, replay, ok_key, &text));
    EXPECT_CONTAINS("every entry", "tail: 11 entries", text);
    free(text);
    EXPECT_EQ("an unlisted key gets no answer", 2, tail_with(f, pub, replay, bad_key, &text));
    EXPECT_CONTAINS("and says so", "no answer from the broker's feed", text);
    EXPECT_FALSE("and prints no entry", strstr(text, "enroll") != NULL);
    free(text);
    EXPECT_EQ("plain TCP gets no answer", 2, tail_with(f, pub, replay, NULL, &text));
    free(text);
    EXPECT_EQ("world stops", 0, world_stop_broker(&f->w, SIGTERM));
    char *log = read_all(f->w.broker.log_path);
    EXPECT_CONTAINS("the broker logs the refusal", "refused a subscriber's key", log);
    free(log);

    char path[HARNESS_PATH_BYTES];
    snprintf(path, sizeof path, "%s/broker-refused.out", f->w.dir);
    char *insecure[] = {
        COALITION_BROKER_BIN, "--ledger",       f->w.ledger, "--bind", f->w.broker_endpoint,
        "--insecure",         "--feed-clients", allow,       NULL};
    EXPECT_EQ("--feed-clients with --insecure", 1, run_logged(insecure, path, &text));
    EXPECT_CONTAINS("says why", "--feed-clients needs the broker's CURVE key", text);
    free(text);
    write_text(allow, "# two lines\nnot-a-key\n");
    char *garbage[] = {COALITION_BROKER_BIN, "--ledger", f->w.ledger,
                       "--feed-clients",     allow,      NULL};
    EXPECT_EQ("a bad allow-list", 1, run_logged(garbage, path, &text));
    EXPECT_CONTAINS("names the line", "line 2: not a Z85 public key", text);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(late_subscriber_gets_everything_from_seq_1, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(paused_tail_ends_with_every_seq_once, setup, teardown),
        cmocka_unit_test_setup_teardown(slow_subscriber_with_tiny_queue_misses_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(tail_resumes_across_a_broker_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(tail_stops_when_the_chain_breaks, setup, teardown),
        cmocka_unit_test_setup_teardown(tail_stops_when_the_journal_is_shorter, setup, teardown),
        cmocka_unit_test_setup_teardown(stalled_replay_peers_cost_little_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_values_are_clear_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(curve_feed_admits_only_listed_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
