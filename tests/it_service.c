/* The broker and the agent run as systemd runs a Type=notify unit: NOTIFY_SOCKET names
 * a unix datagram socket this test listens on, WATCHDOG_USEC a short watchdog. Checked:
 * READY=1 comes once the sockets answer (and never from a broker that cannot bind),
 * WATCHDOG=1 keeps coming while the process runs, stops while it is SIGSTOPped and
 * while the broker's writer is stuck (the test holds the ledger's LMDB write lock), and
 * resumes after; STOPPING=1 on SIGTERM, then exit 0. Under journald the broker's log
 * lines carry priorities instead of time stamps. */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "expect.h"

#include "clock.h"

#include <lmdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define WATCHDOG_USEC "400000"
#define WATCHDOG_MS 400
/* Pings wanted to call the watchdog "alive", and how long to wait for them. */
#define PINGS_ALIVE 3
#define PINGS_TIMEOUT_MS 10000
/* Silence that proves the pings stopped: three whole intervals (pings come every half). */
#define SILENCE_MS (3 * WATCHDOG_MS)
/* A stopped process may have sent one ping just before; let it arrive first. */
#define SETTLE_MS WATCHDOG_MS
#define READY_TIMEOUT_MS 10000
#define STUCK_TIMEOUT_MS 15000
#define DATAGRAM_BYTES 1024

typedef struct notify {
    int fd;
    char path[HARNESS_PATH_BYTES];
    char last[DATAGRAM_BYTES]; /* the last datagram read */
} notify_t;

typedef struct fixture {
    world_t w;
    notify_t n;
} fixture_t;

static void notify_open(notify_t *n, const char *dir)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    snprintf(n->path, sizeof n->path, "%s/notify.sock", dir);
    assert_true(strlen(n->path) < sizeof addr.sun_path);
    memcpy(addr.sun_path, n->path, strlen(n->path) + 1);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(n->fd >= 0);
    assert_int_equal(bind(n->fd, (struct sockaddr *)&addr, sizeof addr), 0);
}

/* The next datagram within timeout_ms, into n->last; false if none came. */
static bool notify_read(notify_t *n, int timeout_ms)
{
    struct pollfd p = {n->fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms < 0 ? 0 : timeout_ms) != 1)
        return false;
    ssize_t got = recv(n->fd, n->last, sizeof n->last - 1, 0);
    assert_true(got >= 0);
    n->last[got] = '\0';
    return true;
}

/* True when the last datagram has the line `field` ("READY=1"). */
static bool notify_has(const notify_t *n, const char *field)
{
    size_t len = strlen(field);
    for (const char *p = n->last; p != NULL && *p != '\0';) {
        const char *eol = strchr(p, '\n');
        size_t line = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (line == len && memcmp(p, field, len) == 0)
            return true;
        p = eol != NULL ? eol + 1 : NULL;
    }
    return false;
}

/* Read until a datagram with `field` arrives; false at the deadline. */
static bool notify_wait(notify_t *n, const char *field, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (notify_read(n, (int)(deadline - clock_mono_ms()))) {
        if (notify_has(n, field))
            return true;
    }
    return false;
}

/* How many WATCHDOG=1 arrive in `ms` (other datagrams are read and dropped). */
static int notify_pings_within(notify_t *n, int ms)
{
    int pings = 0;
    int64_t deadline = clock_mono_ms() + ms;
    while (notify_read(n, (int)(deadline - clock_mono_ms()))) {
        if (notify_has(n, "WATCHDOG=1"))
            pings++;
    }
    return pings;
}

static void expect_pings_alive(notify_t *n, const char *who)
{
    for (int i = 0; i < PINGS_ALIVE; i++) {
        if (!notify_wait(n, "WATCHDOG=1", PINGS_TIMEOUT_MS))
            fail_msg("%s: expected %d WATCHDOG=1 pings, got %d within %d ms each", who, PINGS_ALIVE,
                     i, PINGS_TIMEOUT_MS);
    }
}

/* Children started after this inherit what systemd would set for a Type=notify unit. */
static void as_systemd_would(const notify_t *n)
{
    setenv("NOTIFY_SOCKET", n->path, 1);
    setenv("WATCHDOG_USEC", WATCHDOG_USEC, 1);
}

static void not_as_systemd(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    world_init(&f->w);
    notify_open(&f->n, f->w.dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    not_as_systemd();
    close(f->n.fd);
    world_destroy(&f->w);
    free(f);
    return 0;
}

static void spawn_broker(world_t *w)
{
    char *argv[] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind",
                    w->broker_endpoint,   NULL};
    w->broker.pid = harness_spawn(argv, w->broker.log_path);
    assert_true(w->broker.pid > 0);
}

/* Start the broker under "systemd"; returns once READY=1 came, checking the sockets
 * answer by then (the admin socket binds after the partner socket). */
static void start_ready_broker(fixture_t *f)
{
    as_systemd_would(&f->n);
    spawn_broker(&f->w);
    not_as_systemd();
    if (!notify_wait(&f->n, "READY=1", READY_TIMEOUT_MS))
        fail_msg("broker: no READY=1 within %d ms (log %s)", READY_TIMEOUT_MS,
                 f->w.broker.log_path);
    EXPECT_CONTAINS("broker READY status", "STATUS=serving partners on ", f->n.last);
    EXPECT_CONTAINS("broker READY status", f->w.broker_endpoint, f->n.last);
    /* One short try: a socket bound before READY=1 answers the first probe. */
    EXPECT_TRUE("admin socket answers when READY=1 arrives",
                harness_wait_reply(f->w.admin_endpoint, WATCHDOG_MS));
}

static void stop_expecting_stopping(fixture_t *f, proc_t *p, const char *who)
{
    EXPECT_EQ(who, 0, harness_stop(p, SIGTERM));
    if (!notify_wait(&f->n, "STOPPING=1", READY_TIMEOUT_MS))
        fail_msg("%s: no STOPPING=1 after SIGTERM", who);
}

/* SIGSTOP: no pings for several intervals (systemd would kill it); SIGCONT: they resume. */
static void expect_pause_silences(notify_t *n, proc_t *p, const char *who)
{
    harness_pause(p);
    (void)notify_pings_within(n, SETTLE_MS);
    EXPECT_EQ("pings while SIGSTOPped", 0, notify_pings_within(n, SILENCE_MS));
    harness_resume(p);
    expect_pings_alive(n, who);
}

static void broker_ready_pings_and_stops(void **state)
{
    fixture_t *f = *state;
    start_ready_broker(f);
    expect_pings_alive(&f->n, "broker");
    expect_pause_silences(&f->n, &f->w.broker, "broker after SIGCONT");
    stop_expecting_stopping(f, &f->w.broker, "broker exit status on SIGTERM");
}

/* A broker that cannot bind its partner socket never says READY=1: it exits 1. */
static void broker_that_cannot_bind_is_never_ready(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->w;
    void *ctx = zmq_ctx_new();
    void *squatter = zmq_socket(ctx, ZMQ_REP);
    assert_int_equal(zmq_bind(squatter, w->broker_endpoint), 0);
    as_systemd_would(&f->n);
    spawn_broker(w);
    not_as_systemd();
    int64_t deadline = clock_mono_ms() + READY_TIMEOUT_MS;
    int status = -1000;
    while (clock_mono_ms() < deadline && w->broker.pid > 0) {
        if (notify_read(&f->n, WATCHDOG_MS) && notify_has(&f->n, "READY=1"))
            fail_msg("READY=1 from a broker whose port is taken: \"%s\"", f->n.last);
        if (waitpid(w->broker.pid, &status, WNOHANG) > 0)
            w->broker.pid = 0;
    }
    EXPECT_EQ("broker gone without READY=1", 0, w->broker.pid);
    EXPECT_TRUE("broker exited 1", WIFEXITED(status) && WEXITSTATUS(status) == 1);
    EXPECT_FALSE("no READY=1 left queued", notify_read(&f->n, 0) && notify_has(&f->n, "READY=1"));
    zmq_close(squatter);
    zmq_ctx_term(ctx);
}

/* The test takes the ledger's LMDB write lock: the writer blocks in its next write
 * (housekeeping runs every second), the I/O loop runs on, and the pings must stop. */
static void stuck_writer_stops_the_pings(void **state)
{
    fixture_t *f = *state;
    start_ready_broker(f);
    expect_pings_alive(&f->n, "broker");
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_open(env, f->w.ledger, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    /* Silence within the deadline: pings stop once the writer has been busy a whole
     * interval; until then a few more may come. */
    int64_t deadline = clock_mono_ms() + STUCK_TIMEOUT_MS;
    bool silent = false;
    while (!silent && clock_mono_ms() < deadline)
        silent = notify_pings_within(&f->n, SILENCE_MS) == 0;
    EXPECT_TRUE("pings stopped while the writer is stuck", silent);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    expect_pings_alive(&f->n, "broker after the writer is free again");
    char log[8192] = "";
    FILE *fp = fopen(f->w.broker.log_path, "r");
    assert_non_null(fp);
    log[fread(log, 1, sizeof log - 1, fp)] = '\0';
    fclose(fp);
    EXPECT_CONTAINS("broker log", "watchdog pings withheld", log);
    stop_expecting_stopping(f, &f->w.broker, "broker exit status on SIGTERM");
}

/* The agent is ready once its till socket is bound, with or without a broker (it
 * stores earns offline): here no broker runs at all. */
static void agent_ready_pings_and_stops(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->w;
    agent_proc_t *a = &w->agents[w->agent_count++];
    snprintf(a->partner_id, sizeof a->partner_id, "fuel");
    char dir[HARNESS_DIR_BYTES]; /* a copy: the targets live in the same object */
    memcpy(dir, w->dir, sizeof dir);
    snprintf(a->data_dir, sizeof a->data_dir, "%s/agent-fuel", dir);
    snprintf(a->endpoint, sizeof a->endpoint, "ipc://%s/agent-fuel.sock", dir);
    snprintf(a->proc.log_path, sizeof a->proc.log_path, "%s/agent-fuel.log", dir);
    char *argv[] = {COALITION_AGENT_BIN, "--partner",  a->partner_id, "--broker",
                    w->broker_endpoint,  "--data",     a->data_dir,   "--listen",
                    a->endpoint,         "--insecure", NULL};
    as_systemd_would(&f->n);
    a->proc.pid = harness_spawn(argv, a->proc.log_path);
    not_as_systemd();
    if (!notify_wait(&f->n, "READY=1", READY_TIMEOUT_MS))
        fail_msg("agent: no READY=1 within %d ms (log %s)", READY_TIMEOUT_MS, a->proc.log_path);
    EXPECT_CONTAINS("agent READY status", "STATUS=partner fuel site main: tills on ", f->n.last);
    EXPECT_TRUE("till socket answers when READY=1 arrives",
                harness_wait_reply(a->endpoint, WATCHDOG_MS));
    expect_pings_alive(&f->n, "agent");
    expect_pause_silences(&f->n, &a->proc, "agent after SIGCONT");
    stop_expecting_stopping(f, &a->proc, "agent exit status on SIGTERM");
}

/* Under journald (JOURNAL_STREAM names the file stderr is) the broker's lines are
 * "<priority>message": no time stamp, no program name. */
static void broker_logs_for_the_journal(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->w;
    FILE *created = fopen(w->broker.log_path, "w"); /* the child appends to this inode */
    assert_non_null(created);
    fclose(created);
    struct stat st;
    assert_int_equal(stat(w->broker.log_path, &st), 0);
    char stream[64];
    snprintf(stream, sizeof stream, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", stream, 1);
    start_ready_broker(f);
    unsetenv("JOURNAL_STREAM");
    stop_expecting_stopping(f, &w->broker, "broker exit status on SIGTERM");
    char log[8192] = "";
    FILE *fp = fopen(w->broker.log_path, "r");
    assert_non_null(fp);
    log[fread(log, 1, sizeof log - 1, fp)] = '\0';
    fclose(fp);
    EXPECT_TRUE("first line starts <6>", strncmp(log, "<6>", 3) == 0);
    EXPECT_CONTAINS("ready line", "\n<6>ready: partners on ", log);
    EXPECT_CONTAINS("last line", "\n<6>stopped cleanly at ledger seq ", log);
    EXPECT_FALSE("no program name in journal lines", strstr(log, "coalition-broker INFO") != NULL);
    for (const char *p = log; *p != '\0'; p = strchr(p, '\n') + 1) {
        if (p[0] != '<' || p[1] < '3' || p[1] > '7' || p[2] != '>')
            fail_msg("a line without a priority prefix: \"%.80s\"", p);
        if (strchr(p, '\n') == NULL)
            fail_msg("a line without its newline: \"%.80s\"", p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(broker_ready_pings_and_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(broker_that_cannot_bind_is_never_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(stuck_writer_stops_the_pings, setup, teardown),
        cmocka_unit_test_setup_teardown(agent_ready_pings_and_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(broker_logs_for_the_journal, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
