/* Integration tests for running the ledger safely, with the real programs:
 *  - a second coalition-broker on the same ledger directory exits 1 naming the directory
 *    and the running broker's pid, and touches nothing: the running broker keeps its
 *    admin socket (same inode) and still answers on it;
 *  - `coalitionctl journal` blocked on a pipe nobody reads does not make the ledger grow:
 *    the same sequential earn load is run on two fresh ledgers, one with such a reader,
 *    and data.mdb's growth during the load is compared (ratio asserted, figures printed).
 * Synchronisation is by polling (process state, pipe fill level), never a fixed sleep. */
#define _GNU_SOURCE /* F_SETPIPE_SZ / F_GETPIPE_SZ: a one-page pipe fills fast */

#include "client.h"
#include "clock.h"
#include "harness.h"
#include "ledger.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_STEP_MS 5
#define EXIT_TIMEOUT_MS 10000
#define FILL_TIMEOUT_MS 10000
#define CALL_TIMEOUT_MS 10000
#define OUT_BYTES 1024
#define LOG_BYTES 16384
/* Entries before the load: partner add, member add, then the preload earns. Three slices
 * of the journal, so the blocked reader has slices still to read when it resumes. */
#define SETUP_ENTRIES 3 /* partner add, member add, key add */
#define PRELOAD_EARNS (2 * LEDGER_SLICE_RECORDS_MAX + 86)
#define JOURNAL_ENTRIES (SETUP_ENTRIES + PRELOAD_EARNS)
/* The load committed while the reader is blocked: one earn per commit, sequentially, so
 * both runs commit exactly the same transactions. */
#define LOAD_EARNS 3000
#define EARN_AMOUNT_MINOR 1234 /* 12.34 EUR at 1 point per EUR: 12 points */
#define EARN_POINTS 12
#define JOURNAL_OUT_BYTES (1 << 20)
/* Growth of data.mdb with the blocked reader, as a multiple of the growth without one, in
 * percent. The reader holds no read transaction while it is blocked (it read its slice
 * and ended the transaction before printing), so the writer reuses freed pages exactly
 * as with nobody reading: the expected ratio is 1.00. 110% leaves room for a few pages
 * of difference (the operator's txn ids differ in length between runs) and nothing more.
 * A reader pinning its snapshot makes every commit's freed pages unusable: with the
 * single-transaction walk this replaced, this test measured 81x (+99.6 MB vs +1.2 MB). */
#define GROWTH_RATIO_MAX_PERCENT 110

/* A journal reader whose stdout is a one-page pipe nobody reads until told to. */
typedef struct pager {
    pid_t pid;
    int read_fd;
    int capacity;
} pager_t;

/* Everything a test starts, so that teardown stops it even after a failed assertion. */
typedef struct fixture {
    world_t worlds[2];
    bool live[2];
    pid_t second_broker;
    pager_t pager;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->pager.read_fd = -1;
    *state = f;
    return 0;
}

static void kill_and_reap(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
    }
    *pid = 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    kill_and_reap(&f->second_broker);
    kill_and_reap(&f->pager.pid);
    if (f->pager.read_fd >= 0)
        close(f->pager.read_fd);
    for (size_t i = 0; i < 2; i++) {
        if (f->live[i])
            world_destroy(&f->worlds[i]);
    }
    free(f);
    return 0;
}

static world_t *start_world(fixture_t *f, size_t i)
{
    world_init(&f->worlds[i]);
    f->live[i] = true;
    world_start_broker(&f->worlds[i]);
    return &f->worlds[i];
}

static void stop_world(fixture_t *f, size_t i)
{
    EXPECT_EQ("broker stops cleanly on SIGTERM", 0, world_stop_broker(&f->worlds[i], SIGTERM));
    world_destroy(&f->worlds[i]);
    f->live[i] = false;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Exit status of *pid, waited for at most timeout_ms (then *pid is 0); -1000 if it is
 * still running (then *pid stays set, for teardown to kill). */
static int wait_exit(pid_t *pid, int timeout_ms)
{
    int status = 0;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (waitpid(*pid, &status, WNOHANG) == 0) {
        if (clock_mono_ms() > deadline)
            return -1000;
        sleep_ms(POLL_STEP_MS);
    }
    *pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static void read_file(const char *path, char *out, size_t size)
{
    char *argv[] = {"/bin/cat", (char *)path, NULL};
    harness_run(argv, out, size);
}

static void path_in(char *buf, size_t size, const char *dir, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < size);
}

static void ctl_ok(world_t *w, const char *expected, const char *arg0, const char *arg1,
                   const char *arg2, const char *arg3, const char *arg4)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, arg0, arg1, arg2, arg3, arg4, NULL);
    if (rc != 0)
        fail_msg("coalitionctl %s %s %s: expected exit 0, got %d: %s", arg0, arg1, arg2, rc, out);
    EXPECT_CONTAINS("coalitionctl output", expected, out);
}

/* ---- a second broker --------------------------------------------------------------------- */

static void second_broker_exits_and_touches_nothing(void **state)
{
    fixture_t *f = *state;
    world_t *w = start_world(f, 0);
    char admin_sock[HARNESS_PATH_BYTES], log_path[HARNESS_PATH_BYTES], endpoint[64];
    path_in(admin_sock, sizeof admin_sock, w->ledger, "admin.sock");
    path_in(log_path, sizeof log_path, w->dir, "second-broker.log");
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", harness_free_port());
    struct stat before, after;
    EXPECT_EQ("stat admin.sock before", 0, stat(admin_sock, &before));

    char *argv[] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind", endpoint, NULL};
    f->second_broker = harness_spawn(argv, log_path);
    EXPECT_EQ("second broker exit status", 1, wait_exit(&f->second_broker, EXIT_TIMEOUT_MS));

    char log[LOG_BYTES], expected[HARNESS_PATH_BYTES + 128];
    read_file(log_path, log, sizeof log);
    snprintf(expected, sizeof expected, "ledger %s is locked by another writer, pid %ld", w->ledger,
             (long)w->broker.pid);
    EXPECT_CONTAINS("second broker's message", expected, log);
    EXPECT_CONTAINS("second broker's message", "exiting without binding any socket", log);
    EXPECT_FALSE("second broker never got ready", strstr(log, "ready:") != NULL);

    EXPECT_EQ("stat admin.sock after", 0, stat(admin_sock, &after));
    EXPECT_EQ("admin.sock is the first broker's (same inode)", before.st_ino, after.st_ino);
    ctl_ok(w, "00 Member alice enrolled (seq 1)", "member", "add", "alice", NULL, NULL);
    char out[OUT_BYTES];
    EXPECT_EQ("coalitionctl init on the running ledger", 1,
              world_ctl(w, out, sizeof out, "init", NULL));
    stop_world(f, 0);
}

/* ---- a blocked report does not pin the map ----------------------------------------------- */

static void earn(client_t *client, int i, uint64_t expected_seq)
{
    char txn[TXN_ID_LEN_MAX + 1];
    snprintf(txn, sizeof txn, "e-%06d", i);
    envelope_t env;
    Coalition__EarnRequest body = COALITION__EARN_REQUEST__INIT;
    coalition__envelope__init(&env);
    env.version = WIRE_VERSION;
    env.partner_id = "p1";
    env.terminal_id = "t1";
    env.site_id = "s1";
    env.txn_id = txn;
    env.client_time_ms = clock_wall_ms();
    body.member_id = "alice";
    body.amount_minor = EARN_AMOUNT_MINOR;
    body.currency = "EUR";
    env.body_case = COALITION__ENVELOPE__BODY_EARN;
    env.earn = &body;
    authorization_t *auth = NULL;
    int rc = client_call(client, &env, CALL_TIMEOUT_MS, &auth);
    if (rc != 0)
        fail_msg("earn %s: expected a reply, got error %d", txn, rc);
    if (auth->code != RC_APPROVED || auth->seq != expected_seq || auth->points != EARN_POINTS)
        fail_msg("earn %s: expected 00 seq %" PRIu64 " points %d, got %02d seq %" PRIu64
                 " points %" PRId64,
                 txn, expected_seq, EARN_POINTS, auth->code, auth->seq, auth->points);
    wire_auth_free(auth);
}

static int64_t data_bytes(const world_t *w)
{
    char path[HARNESS_PATH_BYTES];
    struct stat st;
    path_in(path, sizeof path, w->ledger, "data.mdb");
    EXPECT_EQ("stat data.mdb", 0, stat(path, &st));
    return (int64_t)st.st_size;
}

static void pager_start(world_t *w, pager_t *p)
{
    int fds[2];
    EXPECT_EQ("pipe", 0, pipe(fds));
    p->capacity = fcntl(fds[1], F_SETPIPE_SZ, (int)sysconf(_SC_PAGESIZE));
    EXPECT_TRUE("F_SETPIPE_SZ", p->capacity > 0);
    p->read_fd = fds[0];
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(COALITIONCTL_BIN, COALITIONCTL_BIN, "--ledger", w->ledger, "journal", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
}

/* Poll until the pipe is full: the reader is blocked in write(), mid-journal. */
static void pager_wait_blocked(const pager_t *p)
{
    int64_t deadline = clock_mono_ms() + FILL_TIMEOUT_MS;
    int queued = 0;
    for (;;) {
        EXPECT_EQ("FIONREAD", 0, ioctl(p->read_fd, FIONREAD, &queued));
        if (queued >= p->capacity)
            break;
        EXPECT_EQ("journal reader still running", 0, waitpid(p->pid, NULL, WNOHANG));
        if (clock_mono_ms() > deadline)
            fail_msg("journal reader: expected a full pipe (%d bytes), got %d", p->capacity,
                     queued);
        sleep_ms(POLL_STEP_MS);
    }
    EXPECT_EQ("bytes waiting in the pipe", p->capacity, queued);
}

/* Read the journal to its end and check it line by line: seqs 1..JOURNAL_ENTRIES, the
 * ledger as it was when the command started. */
static void pager_finish(pager_t *p)
{
    char *out = malloc(JOURNAL_OUT_BYTES);
    assert_non_null(out);
    size_t used = 0;
    ssize_t n = 0;
    while ((n = read(p->read_fd, out + used, JOURNAL_OUT_BYTES - 1 - used)) > 0)
        used += (size_t)n;
    EXPECT_EQ("read from the pipe", 0, n);
    out[used] = '\0';
    close(p->read_fd);
    p->read_fd = -1;
    EXPECT_EQ("coalitionctl journal exit status", 0, wait_exit(&p->pid, EXIT_TIMEOUT_MS));
    uint64_t lines = 0;
    for (char *line = out, *end = NULL; *line != '\0'; line = end + 1) {
        end = strchr(line, '\n');
        assert_non_null(end);
        EXPECT_EQ("seq of journal line", lines + 1, strtoull(line, NULL, 10));
        lines++;
    }
    EXPECT_EQ("journal lines", JOURNAL_ENTRIES, lines);
    free(out);
}

typedef struct run {
    int64_t before, after;
} run_t;

/* A fresh ledger (world i), the preload, then LOAD_EARNS earns; with_pager: a journal
 * reader is blocked on its pipe for the whole load. Returns data.mdb's sizes around the
 * load. */
static run_t run_load(fixture_t *f, size_t i, bool with_pager)
{
    world_t *w = start_world(f, i);
    client_t *client = NULL;
    ctl_ok(w, "00 Partner p1", "partner", "add", "p1", "--earn-rate", "1");
    ctl_ok(w, "00 Member alice enrolled (seq 2)", "member", "add", "alice", NULL, NULL);
    EXPECT_EQ("world_client", 0, world_client(w, "p1", &client));
    for (int e = 0; e < PRELOAD_EARNS; e++)
        earn(client, e, SETUP_ENTRIES + 1 + (uint64_t)e);
    if (with_pager) {
        pager_start(w, &f->pager);
        pager_wait_blocked(&f->pager);
    }
    run_t r = {data_bytes(w), 0};
    for (int e = 0; e < LOAD_EARNS; e++)
        earn(client, PRELOAD_EARNS + e, JOURNAL_ENTRIES + 1 + (uint64_t)e);
    r.after = data_bytes(w);
    if (with_pager) {
        EXPECT_EQ("journal reader blocked through the load", 0,
                  waitpid(f->pager.pid, NULL, WNOHANG));
        pager_finish(&f->pager);
    }
    client_destroy(&client);
    stop_world(f, i);
    return r;
}

static void blocked_journal_reader_does_not_grow_the_ledger(void **state)
{
    fixture_t *f = *state;
    run_t alone = run_load(f, 0, false);
    run_t paged = run_load(f, 1, true);
    int64_t grown_alone = alone.after - alone.before, grown_paged = paged.after - paged.before;
    printf("it_ops: %d earns: data.mdb %" PRId64 " -> %" PRId64 " bytes (+%" PRId64
           ") with nobody reading, %" PRId64 " -> %" PRId64 " (+%" PRId64
           ") with a blocked journal reader: ratio %.3f (bound %.2f)\n",
           LOAD_EARNS, alone.before, alone.after, grown_alone, paged.before, paged.after,
           grown_paged, grown_alone > 0 ? (double)grown_paged / (double)grown_alone : 0.0,
           GROWTH_RATIO_MAX_PERCENT / 100.0);
    EXPECT_TRUE("the load grows the ledger", grown_alone > 0);
    if (grown_paged * 100 > grown_alone * GROWTH_RATIO_MAX_PERCENT)
        fail_msg("data.mdb grew by %" PRId64 " bytes with a blocked journal reader, expected at "
                 "most %d%% of the %" PRId64 " bytes it grew with nobody reading",
                 grown_paged, GROWTH_RATIO_MAX_PERCENT, grown_alone);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(second_broker_exits_and_touches_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(blocked_journal_reader_does_not_grow_the_ledger, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
