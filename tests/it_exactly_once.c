/* Exactly-once under stalls, kills, reconnects and full disks: each test reproduces one
 * money bug found with the shipped programs (issue 5) on real processes — a real broker
 * and LMDB ledger, a real agent, tills through coalition_pos.h — and checks what every
 * till was told against what the ledger holds. Values are asserted exactly. */
#define _GNU_SOURCE /* prlimit(2): a full disk for one running agent */
#include "harness.h"
#include "keys.h"

#include "clock.h"
#include "coalition_pos.h"
#include "errors.h"
#include "ledger.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <zmq.h>

#define OUT_BYTES 65536
#define CALL_TIMEOUT_MS 10000
#define DRAIN_TIMEOUT_MS 30000
#define POLL_STEP_MS 20
/* Setup: partner fuel (2 points per EUR) = seq 1, member alice = seq 2. */
#define SETUP_LAST_SEQ 2u
#define FILL_EARNS_MAX 20000

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t count_substr(const char *haystack, const char *needle)
{
    size_t n = 0;
    size_t step = strlen(needle);
    for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + step, needle))
        n++;
    return n;
}

static ledger_t *open_ledger(const world_t *w)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, w->ledger, STORE_READ_ONLY);
    if (rc != CL_OK)
        fail_msg("ledger_open(%s): expected %d, got %d (%s)", w->ledger, CL_OK, rc,
                 cl_strerror(rc));
    return l;
}

static int64_t alice(const world_t *w)
{
    ledger_t *l = open_ledger(w);
    int64_t balance = -1;
    int rc = ledger_member_balance(l, "alice", &balance);
    ledger_destroy(&l);
    EXPECT_EQ("balance of alice: rc", CL_OK, rc);
    return balance;
}

static void expect_verify_ok(world_t *w)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("coalitionctl verify: expected exit 0, got %d: %s", rc, out);
}

/* How many journal entries have this value in this field ("txn_id", "original_txn_id"). */
static size_t entries_with(world_t *w, const char *field, const char *txn_id)
{
    static char out[OUT_BYTES];
    char needle[128];
    int rc = world_ctl(w, out, sizeof out, "--json", "journal", NULL);
    EXPECT_EQ("coalitionctl journal exit", 0, rc);
    snprintf(needle, sizeof needle, ",\"%s\":\"%s\"", field, txn_id);
    return count_substr(out, needle);
}

static size_t entries_for(world_t *w, const char *txn_id)
{
    return entries_with(w, "txn_id", txn_id);
}

static void agent_report(const agent_proc_t *a, const char *which, char *out, size_t size)
{
    char *argv[] = {COALITION_AGENT_BIN, "--data", (char *)a->data_dir, (char *)which, NULL};
    int rc = harness_run(argv, out, size);
    if (rc != 0)
        fail_msg("coalition-agent %s: expected exit 0, got %d", which, rc);
}

static void wait_outbox_empty(const agent_proc_t *a)
{
    static char out[OUT_BYTES];
    int64_t deadline = clock_mono_ms() + DRAIN_TIMEOUT_MS;
    for (;;) {
        agent_report(a, "--outbox", out, sizeof out);
        if (out[0] == '\0')
            return;
        if (clock_mono_ms() > deadline)
            fail_msg("agent outbox: expected empty within %d ms, got: %s", DRAIN_TIMEOUT_MS, out);
        sleep_ms(POLL_STEP_MS);
    }
}

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
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    world_init(w);
    world_start_broker(w);
    ctl_ok(w, "partner add fuel", "partner", "add", "fuel", "--earn-rate", "2", "--currency",
           "EUR");
    ctl_ok(w, "member add alice", "member", "add", "alice", NULL, NULL, NULL, NULL);
    world_start_agent(w, "fuel");
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    world_destroy(w);
    free(w);
    return 0;
}

static cpos_t *till(world_t *w, const char *terminal)
{
    cpos_t *pos = cpos_new(w->agents[0].endpoint, terminal);
    if (pos == NULL)
        fail_msg("cpos_new(%s): expected a till, got NULL", w->agents[0].endpoint);
    cpos_set_timeout(pos, CALL_TIMEOUT_MS);
    return pos;
}

static void earn_ok(world_t *w, const char *txn, int64_t amount_minor, int64_t balance_after)
{
    cpos_t *pos = till(w, "till-setup");
    cpos_result_t r;
    EXPECT_EQ("earn: call", CPOS_OK, cpos_earn(pos, txn, "alice", amount_minor, "EUR", &r));
    EXPECT_EQ("earn: code", RC_APPROVED, r.code);
    EXPECT_EQ("earn: balance after", balance_after, r.balance);
    cpos_destroy(&pos);
}

/* A till call on its own thread, so that two tills can wait at once. */
typedef struct call {
    world_t *w;
    const char *terminal, *txn;
    int64_t points;
    int delay_ms;
    int rc;
    cpos_result_t r;
} call_t;

static void *burn_thread(void *arg)
{
    call_t *c = arg;
    sleep_ms(c->delay_ms);
    cpos_t *pos = cpos_new(c->w->agents[0].endpoint, c->terminal);
    cpos_set_timeout(pos, CALL_TIMEOUT_MS);
    c->rc = cpos_burn(pos, c->txn, "alice", c->points, false, &c->r);
    cpos_destroy(&pos);
    return NULL;
}

/* Issue 5, first bug: a till repeats a burn with the same txn id while the first attempt
 * is still waiting. Both tills must get the same final outcome; before, the second till
 * was told APPROVED and the agent then voided the burn (goods handed over, points kept).
 * The broker is stalled past the first till's deadline and resumed before the second's. */
static void test_repeated_burn_joins_the_pending_one(void **state)
{
    world_t *w = *state;
    earn_ok(w, "e1", 5000, 100);
    kill(w->broker.pid, SIGSTOP);
    call_t first = {w, "till-1", "b1", 60, 0, 0, {0}};
    call_t second = {w, "till-1", "b1", 60, w->till_wait_ms * 3 / 5, 0, {0}}; /* the same till */
    pthread_t t1, t2;
    pthread_create(&t1, NULL, burn_thread, &first);
    pthread_create(&t2, NULL, burn_thread, &second);
    sleep_ms(w->till_wait_ms * 6 / 5); /* the first till's deadline has passed */
    kill(w->broker.pid, SIGCONT);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    EXPECT_EQ("first till: call", CPOS_OK, first.rc);
    EXPECT_EQ("second till: call", CPOS_OK, second.rc);
    EXPECT_EQ("first till: code", RC_UNAVAILABLE, first.r.code);
    EXPECT_EQ("second till: same code as the first", RC_UNAVAILABLE, second.r.code);
    EXPECT_FALSE("second till: approved", second.r.approved);
    wait_outbox_empty(&w->agents[0]);
    EXPECT_EQ("alice keeps every point", 100, alice(w));
    expect_verify_ok(w);
}

/* An agent of fuel for another store ("north"), resending only after `retry_ms`. It is
 * one of the world's agents, so teardown stops it even when a check fails. */
static agent_proc_t *start_north(world_t *w, int retry_ms)
{
    int was = w->retry_ms;
    w->retry_ms = retry_ms;
    agent_proc_t *a = world_start_agent_at(w, "fuel", "north");
    w->retry_ms = was;
    return a;
}

/* Issue 5, second bug: a void overtakes its original. The earn is sent into a connection
 * that dies (broker stalled, then killed); after the restart the till voids it at once,
 * while the earn waits for its resend. Before, the void went out first on the new
 * connection, was declined 25 for ever, and the earn was applied after it: the sale was
 * voided, the member kept the points. Now the void waits for its pending original. */
static void test_void_never_overtakes_its_pending_earn(void **state)
{
    world_t *w = *state;
    agent_proc_t *north = start_north(w, 5000);
    cpos_t *pos = cpos_new(north->endpoint, "till-1");
    cpos_set_timeout(pos, CALL_TIMEOUT_MS);
    cpos_result_t r;
    kill(w->broker.pid, SIGSTOP);
    EXPECT_EQ("earn e1: call", CPOS_OK, cpos_earn(pos, "e1", "alice", 2000, "EUR", &r));
    EXPECT_EQ("earn e1: stored offline", true, r.offline);
    EXPECT_EQ("broker killed while stalled", -SIGKILL, world_stop_broker(w, SIGKILL));
    world_start_broker(w);
    EXPECT_EQ("void v1: call", CPOS_OK, cpos_void(pos, "v1", "e1", &r));
    EXPECT_TRUE("void v1: approved or stored offline (never 25)",
                r.code == RC_APPROVED || (r.code == RC_UNAVAILABLE && r.offline));
    wait_outbox_empty(north);
    EXPECT_EQ("journal entries for e1 (applied, then voided)", 1, entries_for(w, "e1"));
    EXPECT_EQ("journal entries for v1", 1, entries_for(w, "v1"));
    EXPECT_EQ("alice: the earn and its void cancel out", 0, alice(w));
    EXPECT_EQ("void v1 repeated: call", CPOS_OK, cpos_void(pos, "v1", "e1", &r));
    EXPECT_EQ("void v1 repeated: code", RC_APPROVED, r.code);
    EXPECT_EQ("void v1 repeated: points returned", 40, r.points);
    EXPECT_EQ("void v1 repeated: replay", true, r.replay);
    cpos_destroy(&pos);
    EXPECT_EQ("agent north stops cleanly", 0, world_stop_agent(w, north, SIGTERM));
    expect_verify_ok(w);
}

/* Issue 5, third bug: a replay of a burn that was later voided answered APPROVED 00, and
 * coalition-pos exited 0. It is now marked reversed and exits 4. */
static void test_replay_of_a_voided_burn_is_not_approved(void **state)
{
    world_t *w = *state;
    earn_ok(w, "e1", 5000, 100);
    char out[OUT_BYTES];
    const agent_proc_t *a = &w->agents[0];
    int rc = world_pos(w, a, out, sizeof out, "burn", "--member", "alice", "--points", "30",
                       "--txn", "b1", NULL);
    EXPECT_EQ("burn b1: exit", 0, rc);
    rc = world_pos(w, a, out, sizeof out, "void", "--original", "b1", "--txn", "v1", NULL);
    EXPECT_EQ("void of b1: exit", 0, rc);
    rc = world_pos(w, a, out, sizeof out, "burn", "--member", "alice", "--points", "30", "--txn",
                   "b1", NULL);
    EXPECT_EQ("burn b1 replayed after its void: exit (reversed)", 4, rc);
    EXPECT_CONTAINS("replay JSON", "\"reversed\":true", out);
    EXPECT_CONTAINS("replay JSON", "\"approved\":false", out);
    EXPECT_CONTAINS("replay JSON", "\"replay\":true", out);
    EXPECT_EQ("alice after the void", 100, alice(w));
}

/* A different request under a txn id that is still pending is declined 94 at once and
 * changes nothing; the pending one goes through as sent. */
static void test_other_request_under_a_pending_key_is_94(void **state)
{
    world_t *w = *state;
    earn_ok(w, "e0", 5000, 100);
    kill(w->broker.pid, SIGSTOP);
    call_t first = {w, "till-1", "b1", 60, 0, 0, {0}};
    pthread_t t1;
    pthread_create(&t1, NULL, burn_thread, &first);
    sleep_ms(w->till_wait_ms / 4);
    cpos_t *pos = till(w, "till-2");
    cpos_result_t r;
    EXPECT_EQ("burn b1 of 70: call", CPOS_OK, cpos_burn(pos, "b1", "alice", 70, false, &r));
    EXPECT_EQ("burn b1 of 70 while b1 of 60 is pending: code", RC_DUPLICATE_KEY, r.code);
    cpos_destroy(&pos);
    kill(w->broker.pid, SIGCONT);
    pthread_join(t1, NULL);
    EXPECT_EQ("burn b1 of 60: code", RC_APPROVED, first.r.code);
    EXPECT_EQ("burn b1 of 60: points", 60, first.r.points);
    EXPECT_EQ("alice", 40, alice(w));
}

/* ---- replies must say what they answer ------------------------------------------------ */

/* A fake broker: a CURVE server with a key pair of its own (its public key written to
 * `pub_path` for the agent's --broker-key) and no ZAP handler, so any client key may
 * connect. */
static void *bind_router(void *ctx, int port, const char *pub_path)
{
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    char endpoint[64];
    int linger = 0, server = 1;
    key_pair_t key;
    if (keys_generate(&key) != 0 || keys_write_public(pub_path, key.public_z85, "fake") != 0)
        fail_msg("cannot make the fake broker's key");
    zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &server, sizeof server);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, key.secret_z85, KEY_Z85_BYTES);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock, endpoint) != 0)
        fail_msg("bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
    return sock;
}

/* Receive one [identity][envelope] from the agent; the envelope is decoded into *env. */
static size_t recv_request(void *sock, uint8_t *id, size_t id_size, envelope_t **env)
{
    uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, CALL_TIMEOUT_MS) != 1)
        fail_msg("fake broker: expected a request from the agent, got none");
    int id_len = zmq_recv(sock, id, id_size, 0);
    int n = zmq_recv(sock, buf, sizeof buf, 0);
    EXPECT_TRUE("fake broker: identity and envelope", id_len > 0 && n > 0);
    *env = wire_envelope_decode(buf, (size_t)n);
    EXPECT_TRUE("fake broker: envelope decodes", *env != NULL);
    return (size_t)id_len;
}

static void send_auth(void *sock, const uint8_t *id, size_t id_len, const envelope_t *env,
                      const uint8_t *hash, int64_t points)
{
    authorization_t auth;
    char text[] = "Earned";
    wire_auth_decline(&auth, env, RC_APPROVED, text);
    wire_auth_echo(&auth, env, hash);
    auth.points = points;
    auth.seq = (uint64_t)points;
    size_t len = 0;
    uint8_t *buf = wire_pack_auth(&auth, &len);
    zmq_send(sock, id, id_len, ZMQ_SNDMORE);
    zmq_send(sock, buf, len, 0);
    free(buf);
}

typedef struct earn_call {
    const char *endpoint;
    int rc;
    cpos_result_t r;
} earn_call_t;

static void *earn_thread(void *arg)
{
    earn_call_t *c = arg;
    cpos_t *pos = cpos_new(c->endpoint, "till-1");
    cpos_set_timeout(pos, CALL_TIMEOUT_MS);
    c->rc = cpos_earn(pos, "e1", "alice", 1000, "EUR", &c->r);
    cpos_destroy(&pos);
    return NULL;
}

/* Issue 5, fourth bug: a reply was matched to a waiting request by txn id only. A reply
 * under the same txn id that answers another request (another hash) must be dropped. */
static void test_reply_for_another_request_is_dropped(void **state)
{
    world_t *w = *state;
    int port = harness_free_port();
    void *ctx = zmq_ctx_new();
    char broker[64], data[HARNESS_PATH_BYTES], endpoint[HARNESS_PATH_BYTES],
        log[HARNESS_PATH_BYTES], pub[HARNESS_PATH_BYTES];
    snprintf(pub, sizeof pub, "%s/fake-%d.pub", w->dir, port);
    void *fake = bind_router(ctx, port, pub);
    snprintf(broker, sizeof broker, "tcp://127.0.0.1:%d", port);
    snprintf(data, sizeof data, "%s/agent-fake", w->dir);
    snprintf(endpoint, sizeof endpoint, "ipc://%s/agent-fake.sock", w->dir);
    snprintf(log, sizeof log, "%s/agent-fake.log", w->dir);
    char *argv[] = {COALITION_AGENT_BIN,
                    "--partner",
                    "fuel",
                    "--broker",
                    broker,
                    "--data",
                    data,
                    "--listen",
                    endpoint,
                    "--till-wait-ms",
                    "5000",
                    "--key",
                    (char *)world_key(w, "fuel", "partner"),
                    "--broker-key",
                    pub,
                    NULL};
    proc_t agent;
    memset(&agent, 0, sizeof agent);
    agent.pid = harness_spawn(argv, log);
    EXPECT_TRUE("agent on a fake broker comes up", harness_wait_reply(endpoint, 10000));
    earn_call_t call = {endpoint, 0, {0}};
    pthread_t t;
    pthread_create(&t, NULL, earn_thread, &call);
    uint8_t id[256], right[WIRE_HASH_BYTES], wrong[WIRE_HASH_BYTES];
    envelope_t *env = NULL;
    size_t id_len = recv_request(fake, id, sizeof id, &env);
    EXPECT_EQ("hash of the request", CL_OK, wire_request_hash(env, right));
    memcpy(wrong, right, sizeof wrong);
    wrong[0] ^= 0xff;
    send_auth(fake, id, id_len, env, wrong, 999); /* same txn id, another request */
    send_auth(fake, id, id_len, env, right, 20);
    pthread_join(t, NULL);
    wire_envelope_free(env);
    EXPECT_EQ("till: call", CPOS_OK, call.rc);
    EXPECT_EQ("till: the reply that answers its request", 20, call.r.points);
    snprintf(agent.log_path, sizeof agent.log_path, "%s", log);
    harness_stop(&agent, SIGTERM);
    zmq_close(fake);
    zmq_ctx_term(ctx);
}

/* ---- a full disk ---------------------------------------------------------------------- */

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Issue 5, fifth bug: with the agent's disk full, a burn the broker approved and the till
 * was told 91 stayed applied (its void could not be queued), and the agent logged the
 * failure ~1,500 times a second. The disk is made full for the running agent with
 * RLIMIT_FSIZE at its store's current size (writes past it fail with EFBIG). */
static void test_full_disk_never_leaves_a_declined_burn_applied(void **state)
{
    world_t *w = *state;
    agent_proc_t *a = &w->agents[0];
    earn_ok(w, "e1", 5000, 100);
    kill(w->broker.pid, SIGSTOP);
    call_t burn = {w, "till-1", "b1", 60, 0, 0, {0}};
    pthread_t t;
    pthread_create(&t, NULL, burn_thread, &burn);
    sleep_ms(w->till_wait_ms / 4); /* the burn is stored and sent (into the stalled broker) */
    char data_file[HARNESS_PATH_BYTES + 16];
    snprintf(data_file, sizeof data_file, "%s/data.mdb", a->data_dir);
    struct rlimit was;
    EXPECT_EQ("prlimit: read the agent's limit", 0, prlimit(a->proc.pid, RLIMIT_FSIZE, NULL, &was));
    struct rlimit full = {(rlim_t)file_size(data_file), was.rlim_max}; /* soft limit only */
    EXPECT_EQ("prlimit(RLIMIT_FSIZE) on the agent", 0,
              prlimit(a->proc.pid, RLIMIT_FSIZE, &full, NULL));
    /* Fill what room is left inside the file, until the agent cannot store anything. */
    cpos_t *pos = till(w, "till-fill");
    cpos_set_timeout(pos, 200);
    cpos_result_t r;
    int stored = 0;
    for (int i = 0; i < FILL_EARNS_MAX; i++) {
        char txn[32];
        snprintf(txn, sizeof txn, "fill-%d", i);
        if (cpos_earn(pos, txn, "alice", 100, "EUR", &r) == CPOS_OK && r.code == RC_SYSTEM_ERROR)
            break;
        stored++;
    }
    cpos_destroy(&pos);
    EXPECT_TRUE("the disk filled up", stored < FILL_EARNS_MAX);
    pthread_join(t, NULL);
    EXPECT_EQ("burn: told 91", RC_UNAVAILABLE, burn.r.code);
    sleep_ms(w->till_wait_ms); /* the revocation write keeps failing meanwhile */
    kill(w->broker.pid, SIGCONT);
    /* The void goes out whether or not the disk took it: the burn is taken back. */
    int64_t deadline = clock_mono_ms() + DRAIN_TIMEOUT_MS;
    while (entries_with(w, "original_txn_id", "b1") != 1 && clock_mono_ms() < deadline)
        sleep_ms(POLL_STEP_MS);
    EXPECT_EQ("journal: the burn b1", 1, entries_for(w, "b1"));
    EXPECT_EQ("journal: its void", 1, entries_with(w, "original_txn_id", "b1"));
    EXPECT_EQ("prlimit: room again", 0, prlimit(a->proc.pid, RLIMIT_FSIZE, &was, NULL));
    wait_outbox_empty(a);
    EXPECT_EQ("alice: the burn is taken back; fills all arrived", 100 + 2 * stored, alice(w));
    static char log[OUT_BYTES];
    FILE *f = fopen(a->proc.log_path, "r");
    size_t n = f != NULL ? fread(log, 1, sizeof log - 1, f) : 0;
    log[n] = '\0';
    if (f != NULL)
        fclose(f);
    EXPECT_TRUE("outbox write failures are logged at most once per 5 s (+ summaries)",
                count_substr(log, "outbox write failed") <= 4);
    expect_verify_ok(w);
}

/* ---- 96 answers, and full disks before the first send (found in review) --------------- */

static void send_code(void *sock, const uint8_t *id, size_t id_len, const envelope_t *env,
                      const uint8_t *hash, int code)
{
    authorization_t auth;
    char text[] = "Declined 96: system error; the clearinghouse cannot record requests now";
    wire_auth_decline(&auth, env, code, text);
    wire_auth_echo(&auth, env, hash);
    size_t len = 0;
    uint8_t *buf = wire_pack_auth(&auth, &len);
    zmq_send(sock, id, id_len, ZMQ_SNDMORE);
    zmq_send(sock, buf, len, 0);
    free(buf);
}

typedef struct fake_world {
    void *ctx, *sock;
    proc_t agent;
    char endpoint[HARNESS_PATH_BYTES];
} fake_world_t;

static void fake_start(world_t *w, fake_world_t *f, const char *name, const char *till_wait_ms,
                       const char *retry_ms)
{
    int port = harness_free_port();
    f->ctx = zmq_ctx_new();
    char broker[64], data[HARNESS_PATH_BYTES], pub[HARNESS_PATH_BYTES];
    snprintf(pub, sizeof pub, "%s/fake-%d.pub", w->dir, port);
    f->sock = bind_router(f->ctx, port, pub);
    snprintf(broker, sizeof broker, "tcp://127.0.0.1:%d", port);
    snprintf(data, sizeof data, "%s/agent-%s", w->dir, name);
    snprintf(f->endpoint, sizeof f->endpoint, "ipc://%s/agent-%s.sock", w->dir, name);
    snprintf(f->agent.log_path, sizeof f->agent.log_path, "%s/agent-%s.log", w->dir, name);
    char *argv[] = {COALITION_AGENT_BIN,
                    "--partner",
                    "fuel",
                    "--broker",
                    broker,
                    "--data",
                    data,
                    "--listen",
                    f->endpoint,
                    "--till-wait-ms",
                    (char *)till_wait_ms,
                    "--retry-ms",
                    (char *)retry_ms,
                    "--key",
                    (char *)world_key(w, "fuel", "partner"),
                    "--broker-key",
                    pub,
                    NULL};
    f->agent.pid = harness_spawn(argv, f->agent.log_path);
    EXPECT_TRUE("agent on a fake broker comes up", harness_wait_reply(f->endpoint, 10000));
}

typedef struct till_call {
    const char *endpoint;
    int kind; /* 0 earn, 1 burn */
    int rc;
    cpos_result_t r;
} till_call_t;

static void *till_thread(void *arg)
{
    till_call_t *c = arg;
    cpos_t *pos = cpos_new(c->endpoint, "till-1");
    cpos_set_timeout(pos, CALL_TIMEOUT_MS);
    c->rc = c->kind == 0 ? cpos_earn(pos, "e1", "alice", 1000, "EUR", &c->r)
                         : cpos_burn(pos, "b1", "alice", 30, false, &c->r);
    cpos_destroy(&pos);
    return NULL;
}

/* Two 96 answers to two copies of one store-and-forward request: the first puts it in
 * BACKOFF, the second must be ignored (it used to ask BACKOFF -> BACKOFF, which the
 * lifecycle table refuses: the agent aborted). */
static void test_a_second_96_is_ignored(void **state)
{
    world_t *w = *state;
    fake_world_t f;
    memset(&f, 0, sizeof f);
    fake_start(w, &f, "r1", "200", "300");
    till_call_t call = {f.endpoint, 0, 0, {0}};
    pthread_t t;
    pthread_create(&t, NULL, till_thread, &call);
    uint8_t id1[256], id2[256], h1[WIRE_HASH_BYTES], h2[WIRE_HASH_BYTES];
    envelope_t *e1 = NULL, *e2 = NULL;
    size_t n1 = recv_request(f.sock, id1, sizeof id1, &e1); /* first send */
    size_t n2 = recv_request(f.sock, id2, sizeof id2, &e2); /* resend after --retry-ms */
    pthread_join(t, NULL);
    EXPECT_EQ("till: told stored offline", true, call.r.offline);
    wire_request_hash(e1, h1);
    wire_request_hash(e2, h2);
    send_code(f.sock, id1, n1, e1, h1, RC_SYSTEM_ERROR);
    sleep_ms(100);
    send_code(f.sock, id2, n2, e2, h2, RC_SYSTEM_ERROR);
    sleep_ms(500);
    int status = 0;
    pid_t got = waitpid(f.agent.pid, &status, WNOHANG);
    if (got == f.agent.pid) {
        f.agent.pid = 0;
        zmq_close(f.sock);
        zmq_ctx_term(f.ctx);
        fail_msg("agent: expected still running after two 96s, got %s %d (log %s)",
                 WIFSIGNALED(status) ? "killed by signal" : "exit",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), f.agent.log_path);
    }
    harness_stop(&f.agent, SIGTERM);
    wire_envelope_free(e1);
    wire_envelope_free(e2);
    zmq_close(f.sock);
    zmq_ctx_term(f.ctx);
}

/* A burn sent twice; the first copy's answer is lost (it may have been applied), the
 * resend is answered 96 (the broker cannot record requests now). A 96 is not final: the
 * burn is revoked (till told 91) and its void sent; it used to be told "96 not applied"
 * with no void. */
static void test_burn_answered_96_is_revoked_and_voided(void **state)
{
    world_t *w = *state;
    fake_world_t f;
    memset(&f, 0, sizeof f);
    fake_start(w, &f, "r2", "3000", "300");
    till_call_t call = {f.endpoint, 1, 0, {0}};
    pthread_t t;
    pthread_create(&t, NULL, till_thread, &call);
    uint8_t id1[256], id2[256], h2[WIRE_HASH_BYTES];
    envelope_t *e1 = NULL, *e2 = NULL;
    recv_request(f.sock, id1, sizeof id1, &e1);             /* applied; answer lost */
    size_t n2 = recv_request(f.sock, id2, sizeof id2, &e2); /* resend */
    wire_request_hash(e2, h2);
    send_code(f.sock, id2, n2, e2, h2, RC_SYSTEM_ERROR);
    pthread_join(t, NULL);
    /* Anything the agent sends next: a void of b1 is what the money needs. */
    bool voided = false;
    zmq_pollitem_t item = {f.sock, 0, ZMQ_POLLIN, 0};
    int64_t deadline = clock_mono_ms() + 3000;
    while (!voided && clock_mono_ms() < deadline) {
        if (zmq_poll(&item, 1, 100) != 1)
            continue;
        uint8_t id[256];
        envelope_t *e = NULL;
        recv_request(f.sock, id, sizeof id, &e);
        voided = e->body_case == COALITION__ENVELOPE__BODY_VOID_REQUEST;
        wire_envelope_free(e);
    }
    fprintf(stderr, "96 on a resent burn: till told code %d (%s), void sent: %s\n", call.r.code,
            call.r.text, voided ? "yes" : "no");
    harness_stop(&f.agent, SIGTERM);
    wire_envelope_free(e1);
    wire_envelope_free(e2);
    zmq_close(f.sock);
    zmq_ctx_term(f.ctx);
    EXPECT_TRUE("burn answered 96 after a resend: till told 91 and the burn voided, or "
                "stored and resent; never 'not applied' with no void",
                call.r.code != RC_SYSTEM_ERROR || voided);
}

/* The broker's ledger goes into its sticky failed state (a full disk); a repeat of a burn
 * the ledger holds gets 96 from the broker (replays too). The till must never be told
 * "not applied" for it: the agent revokes the burn (91) and voids it once it can. */
static void test_failed_broker_never_makes_a_till_believe_not_applied(void **state)
{
    world_t *w = *state;
    earn_ok(w, "e1", 5000, 100);
    cpos_t *pos = till(w, "till-1");
    cpos_result_t r;
    EXPECT_EQ("burn b1: call", CPOS_OK, cpos_burn(pos, "b1", "alice", 30, false, &r));
    EXPECT_EQ("burn b1: approved", RC_APPROVED, r.code);
    char data_file[HARNESS_PATH_BYTES + 16];
    snprintf(data_file, sizeof data_file, "%s/data.mdb", w->ledger);
    struct rlimit was;
    EXPECT_EQ("prlimit read", 0, prlimit(w->broker.pid, RLIMIT_FSIZE, NULL, &was));
    struct rlimit full = {(rlim_t)file_size(data_file), was.rlim_max};
    EXPECT_EQ("prlimit broker", 0, prlimit(w->broker.pid, RLIMIT_FSIZE, &full, NULL));
    int i = 0;
    for (; i < FILL_EARNS_MAX; i++) {
        char txn[32];
        snprintf(txn, sizeof txn, "fill-%d", i);
        /* The broker answers 96 once its disk is full; the agent keeps the earn. */
        if (cpos_earn(pos, txn, "alice", 100, "EUR", &r) == CPOS_OK && r.offline)
            break;
    }
    EXPECT_TRUE("the broker's disk filled up (sticky)", i < FILL_EARNS_MAX);
    /* The till lost b1's answer (agent crash between journal and reply, or a client
     * timeout) and repeats it with the same key, as coalition_pos.h says it may. */
    EXPECT_EQ("burn b1 repeated: call", CPOS_OK, cpos_burn(pos, "b1", "alice", 30, false, &r));
    size_t applied = entries_for(w, "b1");
    fprintf(stderr, "failed broker: repeat of b1 told %d (%s); journal entries for b1: %zu\n",
            r.code, r.text, applied);
    EXPECT_TRUE("a till is never told 'not applied' for a burn the ledger holds",
                !(r.code == RC_SYSTEM_ERROR && applied == 1));
    EXPECT_EQ("journal entries for b1", 1, applied);
    EXPECT_EQ("b1 repeated: the original answer, from a read transaction", RC_APPROVED, r.code);
    EXPECT_EQ("b1 repeated: replay", true, r.replay);
    EXPECT_EQ("b1 repeated: points", 30, r.points);
    cpos_destroy(&pos);
    /* Restarted with room, the broker takes the earns the agent kept. */
    EXPECT_EQ("prlimit: room again", 0, prlimit(w->broker.pid, RLIMIT_FSIZE, &was, NULL));
    EXPECT_EQ("failed broker stops cleanly", 0, world_stop_broker(w, SIGTERM));
    world_start_broker(w);
    wait_outbox_empty(&w->agents[0]);
    EXPECT_EQ("alice: 100 - 30 + 2 per fill", 70 + 2 * (i + 1), alice(w));
    expect_verify_ok(w);
}

typedef struct burn_call {
    const char *endpoint;
    int rc;
    cpos_result_t r;
} burn_call_t;

static void *r4_burn_thread(void *arg)
{
    burn_call_t *c = arg;
    cpos_t *pos = cpos_new(c->endpoint, "till-1");
    cpos_set_timeout(pos, 60000);
    c->rc = cpos_burn(pos, "b1", "alice", 60, false, &c->r);
    cpos_destroy(&pos);
    return NULL;
}

/* A burn never sent (broker down) is told 91 at its deadline while the agent's disk is
 * full, so its outbox record cannot be deleted. It used to be forgotten anyway with no
 * reversed mark: a repeat was then approved and told, and the stale record, revoked at
 * the next start, took the approved burn back. Now it stays revoked until written, and a
 * repeat of its txn id is declined 12. */
static void test_unsent_burn_revoked_on_a_full_disk_stays_revoked(void **state)
{
    world_t *w = *state;
    agent_proc_t *a = &w->agents[0];
    earn_ok(w, "e1", 5000, 100);
    world_stop_agent(w, a, SIGTERM);
    w->till_wait_ms = 15000;
    world_start_agent(w, "fuel");
    EXPECT_EQ("broker stopped", 0, world_stop_broker(w, SIGTERM));
    burn_call_t burn = {a->endpoint, 0, {0}};
    pthread_t t;
    pthread_create(&t, NULL, r4_burn_thread, &burn);
    sleep_ms(300); /* stored (PUT), never sent: no connection */
    struct rlimit was;
    EXPECT_EQ("prlimit read", 0, prlimit(a->proc.pid, RLIMIT_FSIZE, NULL, &was));
    struct rlimit full = {1, was.rlim_max}; /* every write fails: a full disk */
    EXPECT_EQ("prlimit agent", 0, prlimit(a->proc.pid, RLIMIT_FSIZE, &full, NULL));
    pthread_join(t, NULL);
    EXPECT_EQ("burn b1: told 91", RC_UNAVAILABLE, burn.r.code);
    cpos_t *pos = till(w, "till-1");
    cpos_result_t r;
    EXPECT_EQ("burn b1 repeated on the full disk: call", CPOS_OK,
              cpos_burn(pos, "b1", "alice", 60, false, &r));
    EXPECT_EQ("burn b1 repeated on the full disk: declined 12", RC_INVALID_TRANSACTION, r.code);
    EXPECT_EQ("prlimit: room again", 0, prlimit(a->proc.pid, RLIMIT_FSIZE, &was, NULL));
    world_start_broker(w);
    wait_outbox_empty(a); /* the revocation is written once there is room */
    EXPECT_EQ("burn b1 repeated with room: call", CPOS_OK,
              cpos_burn(pos, "b1", "alice", 60, false, &r));
    EXPECT_EQ("burn b1 repeated with room: declined 12", RC_INVALID_TRANSACTION, r.code);
    cpos_destroy(&pos);
    world_stop_agent(w, a, SIGTERM);
    w->till_wait_ms = 1000;
    world_start_agent(w, "fuel");
    wait_outbox_empty(a);
    EXPECT_EQ("journal entries for b1", 0, entries_for(w, "b1"));
    EXPECT_EQ("reversals of b1", 0, entries_with(w, "original_txn_id", "b1"));
    EXPECT_EQ("alice keeps every point", 100, alice(w));
}

/* ---- a return at the other site racing the agent's safety void ------------------------ */

/* A request of the relayed agent, kept as sent: [identity][envelope]. */
typedef struct held {
    uint8_t id[256];
    int id_len;
    zmq_msg_t msg;
    envelope_t *env;
} held_t;

static void hold_request(void *sock, held_t *h)
{
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, CALL_TIMEOUT_MS) != 1)
        fail_msg("relay: expected a request from agent north, got none");
    h->id_len = zmq_recv(sock, h->id, sizeof h->id, 0);
    zmq_msg_init(&h->msg);
    int n = zmq_msg_recv(&h->msg, sock, 0);
    EXPECT_TRUE("relay: identity and envelope", h->id_len > 0 && n > 0);
    h->env = wire_envelope_decode(zmq_msg_data(&h->msg), zmq_msg_size(&h->msg));
    EXPECT_TRUE("relay: envelope decodes", h->env != NULL);
}

/* Pass a held request to the real broker as it was sent; its answer is left in `reply`. */
static authorization_t *pass_up(void *up, held_t *h, zmq_msg_t *reply)
{
    size_t len = zmq_msg_size(&h->msg);
    EXPECT_EQ("relay: sent to the broker", (int)len, zmq_send(up, zmq_msg_data(&h->msg), len, 0));
    zmq_pollitem_t item = {up, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, CALL_TIMEOUT_MS) != 1)
        fail_msg("relay: expected the broker's answer to %s, got none", h->env->txn_id);
    zmq_msg_init(reply);
    EXPECT_TRUE("relay: the broker's answer", zmq_msg_recv(reply, up, 0) > 0);
    authorization_t *auth = wire_auth_decode(zmq_msg_data(reply), zmq_msg_size(reply));
    EXPECT_TRUE("relay: the answer decodes", auth != NULL);
    return auth;
}

/* Agent fuel/north, connected to the relay at `port` instead of the broker (a world
 * agent, so teardown stops it even when a check fails). */
static agent_proc_t *start_north_behind_relay(world_t *w, int port, const char *relay_pub)
{
    char endpoint[sizeof w->broker_endpoint], pub[sizeof w->broker_pub];
    memcpy(endpoint, w->broker_endpoint, sizeof endpoint);
    memcpy(pub, w->broker_pub, sizeof pub);
    snprintf(w->broker_endpoint, sizeof w->broker_endpoint, "tcp://127.0.0.1:%d", port);
    snprintf(w->broker_pub, sizeof w->broker_pub, "%s", relay_pub);
    agent_proc_t *north = start_north(w, 60000); /* no resend while the relay holds one */
    memcpy(w->broker_endpoint, endpoint, sizeof endpoint);
    memcpy(w->broker_pub, pub, sizeof pub);
    return north;
}

/* Pass a held request to the broker and its answer back to the agent; its code and
 * points are returned. */
static int pass_both_ways(void *up, void *down, held_t *h, int64_t *points)
{
    zmq_msg_t reply;
    authorization_t *auth = pass_up(up, h, &reply);
    int code = auth->code;
    *points = auth->points;
    size_t len = zmq_msg_size(&reply);
    int sent = zmq_send(down, h->id, (size_t)h->id_len, ZMQ_SNDMORE);
    if (sent >= 0)
        sent = zmq_send(down, zmq_msg_data(&reply), len, 0);
    EXPECT_EQ("relay: the answer back to the agent", (int)len, sent);
    wire_auth_free(auth);
    zmq_msg_close(&reply);
    return code;
}

static void held_free(held_t *h)
{
    wire_envelope_free(h->env);
    zmq_msg_close(&h->msg);
}

/* A burn of 30 points at north that the ledger applies but whose answer is lost: its till
 * is told 91 and the agent sends its safety void, which the relay holds (in `v1`). */
static void burn_told_91_and_its_void_held(void *up, void *down, const agent_proc_t *north,
                                           held_t *v1)
{
    till_call_t burn = {north->endpoint, 1, 0, {0}}; /* b1: 30 points of alice */
    pthread_t t;
    pthread_create(&t, NULL, till_thread, &burn);
    held_t b1;
    zmq_msg_t reply;
    hold_request(down, &b1);
    EXPECT_EQ("north sends the burn", COALITION__ENVELOPE__BODY_BURN, b1.env->body_case);
    authorization_t *auth = pass_up(up, &b1, &reply);
    EXPECT_EQ("burn b1: applied by the ledger", RC_APPROVED, auth->code);
    EXPECT_EQ("burn b1: points", 30, auth->points);
    wire_auth_free(auth);
    zmq_msg_close(&reply); /* lost on its way back */
    held_free(&b1);
    pthread_join(t, NULL);
    EXPECT_EQ("burn b1: call", CPOS_OK, burn.rc);
    EXPECT_EQ("burn b1: its till is told 91", RC_UNAVAILABLE, burn.r.code);
    EXPECT_FALSE("burn b1: not approved", burn.r.approved);
    hold_request(down, v1);
    EXPECT_EQ("north's next request: a void", COALITION__ENVELOPE__BODY_VOID_REQUEST,
              v1->env->body_case);
    EXPECT_STR("the void names", "b1", v1->env->void_request->original_txn_id);
}

/* it_sim seed 40082568 (burn-91-applied): a burn at site north reached the ledger but its
 * answer did not reach the agent, so its till was told 91 and the agent queued its safety
 * void; before that void reached the ledger, a till at the other site (main) refunded
 * part of the burn, which no agent can order. The ledger declined the void 12 ("partly
 * refunded"), and the rest of the burn stayed applied although its till was told it
 * failed. Here a relay between agent north and the broker loses the burn's answer and
 * holds the void back until the refund is in. */
static void test_refund_at_the_other_site_never_leaves_a_burn_told_91_applied(void **state)
{
    world_t *w = *state;
    earn_ok(w, "e1", 5000, 100);
    int port = harness_free_port();
    char relay_pub[HARNESS_PATH_BYTES];
    snprintf(relay_pub, sizeof relay_pub, "%s/relay-%d.pub", w->dir, port);
    void *ctx = zmq_ctx_new();
    void *down = bind_router(ctx, port, relay_pub);
    void *up = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(up, ZMQ_LINGER, &linger, sizeof linger);
    world_curve_socket(w, up, "fuel");
    EXPECT_EQ("relay: connect to the broker", 0, zmq_connect(up, w->broker_endpoint));
    agent_proc_t *north = start_north_behind_relay(w, port, relay_pub);
    held_t v1;
    burn_told_91_and_its_void_held(up, down, north, &v1);
    cpos_t *pos = till(w, "till-main");
    cpos_result_t r;
    EXPECT_EQ("refund r1 at main: call", CPOS_OK,
              cpos_refund_at(pos, "r1", "north", "b1", 0, 10, &r));
    EXPECT_EQ("refund r1 at main of north's b1: code", RC_APPROVED, r.code);
    EXPECT_EQ("refund r1: points returned", 10, r.points);
    cpos_destroy(&pos);
    int64_t void_points = 0;
    int void_code = pass_both_ways(up, down, &v1, &void_points);
    held_free(&v1);
    wait_outbox_empty(north); /* the void's answer is journaled */
    EXPECT_EQ("agent north stops cleanly", 0, world_stop_agent(w, north, SIGTERM));
    zmq_close(up);
    zmq_close(down);
    zmq_ctx_term(ctx);
    EXPECT_EQ("alice: the burn her till was told failed (91) is given back in full", 100, alice(w));
    EXPECT_EQ("safety void after the refund: code", RC_APPROVED, void_code);
    EXPECT_EQ("safety void after the refund: the 20 points the refund left", 20, void_points);
    EXPECT_EQ("reversals of b1 in the journal (the refund, the void)", 2,
              entries_with(w, "original_txn_id", "b1"));
    expect_verify_ok(w);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_repeated_burn_joins_the_pending_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_void_never_overtakes_its_pending_earn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_replay_of_a_voided_burn_is_not_approved, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_other_request_under_a_pending_key_is_94, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reply_for_another_request_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk_never_leaves_a_declined_burn_applied, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_second_96_is_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_burn_answered_96_is_revoked_and_voided, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_broker_never_makes_a_till_believe_not_applied,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsent_burn_revoked_on_a_full_disk_stays_revoked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_refund_at_the_other_site_never_leaves_a_burn_told_91_applied, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
