/* Integration tests of the trust boundary over real CURVE sockets to a real broker: who
 * may connect (ZAP answers from the ledger's keys), whom a message is from (its key, never
 * its envelope), what a role may send, partner limits, and the owner-only files and safe
 * options the programs insist on. Every refusal is shown to store nothing: the same journal
 * sequence and balances before and after, and where a txn id was refused, a later
 * legitimate request under it is approved as new (no idempotency record was left).
 * Each test has its own world (broker, partners fuel and grocer, members alice and bob)
 * and ends with `coalitionctl verify`. */
#include "harness.h"

#include "client.h"
#include "clock.h"
#include "coalition_pos.h"
#include "errors.h"
#include "keys.h"
#include "ledger.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define OUT_BYTES 4096
#define FIELD_BYTES 512
#define LOG_BYTES (256 * 1024)
#define CALL_TIMEOUT_MS 5000
/* A request over a refused connection: no reply within this is "no reply at all". */
#define SILENCE_MS 700
#define LOG_WAIT_MS 5000
#define EXIT_WAIT_MS 5000
/* While waiting for a program to exit, every so many polls ask whether it is up instead. */
#define READY_PROBE_EVERY 10
#define POLL_STEP_MS 20
#define ACCOUNTS_MAX 16
#define KEYS_MAX 16
#define TXN_BYTES 32
/* Setup: partners fuel and grocer, members alice and bob, a key for each partner. */
#define SETUP_LAST_SEQ 6u
/* Unknown keys connecting at once, to show the ZAP refusal line is rate-limited. */
#define FLOOD_CLIENTS 16
#define LOG_INTERVAL_MS 1000
#define LATE_CLIENT_MS 100
#define LATE_CLIENTS_MAX 50
/* Earns streamed on one connection around a revocation: at most this many, and this many
 * after coalitionctl returned. */
#define RACE_EARNS_MAX 3000
#define RACE_TAIL 20
/* The request-rate test: this limit, and a burst of this many requests. */
#define RATE_PER_SECOND 5
#define RATE_BURST 50
#define RATE_RETRY_MS 250
#define RATE_RETRY_WAIT_MS 3000
/* An agent with an unknown key answers its tills after this long. */
#define ROGUE_TILL_WAIT_MS 300
#define ROGUE_RETRY_MS 100
#define MODE_OWNER_ONLY_FILE 0600
#define MODE_OWNER_ONLY_DIR 0700
#define MODE_GROUP_READABLE 0640
#define MODE_WORLD_READABLE 0644
#define MODE_OPEN_DIR 0755
#define RC_EXCEEDS_FREQUENCY ((int)COALITION__RESPONSE_CODE__RC_EXCEEDS_FREQUENCY)
/* What start_expecting_refusal returns for a program still running at the end of its wait,
 * and for one that started (answered on its socket) instead of refusing to. */
#define STILL_RUNNING (-1000)
#define STARTED (-2000)

typedef struct fixture {
    world_t world;
    client_t *fuel;   /* CURVE client with fuel's key */
    client_t *grocer; /* CURVE client with grocer's key */
} fixture_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the ledger, read-only -------------------------------------------------------------- */

typedef struct snapshot {
    uint64_t last_seq;
    size_t count;
    char names[ACCOUNTS_MAX][ACCOUNT_NAME_BYTES_MAX];
    int64_t balances[ACCOUNTS_MAX];
} snapshot_t;

static ledger_t *open_ledger(const world_t *w)
{
    ledger_t *l = NULL;
    int rc = ledger_open(&l, w->ledger, STORE_READ_ONLY);
    if (rc != CL_OK)
        fail_msg("ledger_open(%s, read-only): expected %d, got %d (%s)", w->ledger, CL_OK, rc,
                 cl_strerror(rc));
    return l;
}

static int collect_account(const char *account, int64_t balance, void *ctx)
{
    snapshot_t *s = ctx;
    if (s->count == ACCOUNTS_MAX)
        return CL_ERR_INVALID;
    snprintf(s->names[s->count], sizeof s->names[s->count], "%s", account);
    s->balances[s->count] = balance;
    s->count++;
    return CL_OK;
}

static void take_snapshot(const world_t *w, snapshot_t *s)
{
    memset(s, 0, sizeof *s);
    ledger_t *l = open_ledger(w);
    s->last_seq = ledger_last_seq(l);
    int rc = ledger_accounts_foreach(l, collect_account, s);
    ledger_destroy(&l);
    if (rc != CL_OK)
        fail_msg("ledger_accounts_foreach: expected %d, got %d", CL_OK, rc);
}

static void expect_unchanged(const char *what, const world_t *w, const snapshot_t *before)
{
    snapshot_t after;
    char field[FIELD_BYTES];
    take_snapshot(w, &after);
    snprintf(field, sizeof field, "%s: ledger last seq", what);
    EXPECT_EQ(field, before->last_seq, after.last_seq);
    snprintf(field, sizeof field, "%s: number of accounts", what);
    EXPECT_EQ(field, before->count, after.count);
    for (size_t i = 0; i < before->count; i++) {
        snprintf(field, sizeof field, "%s: account #%zu", what, i);
        EXPECT_STR(field, before->names[i], after.names[i]);
        snprintf(field, sizeof field, "%s: balance of %s", what, before->names[i]);
        EXPECT_EQ(field, before->balances[i], after.balances[i]);
    }
}

static uint64_t last_seq(const world_t *w)
{
    ledger_t *l = open_ledger(w);
    uint64_t seq = ledger_last_seq(l);
    ledger_destroy(&l);
    return seq;
}

static int64_t balance_of(const world_t *w, const char *account)
{
    ledger_t *l = open_ledger(w);
    int64_t balance = 0;
    int rc = ledger_account_balance(l, account, &balance);
    ledger_destroy(&l);
    if (rc != CL_OK)
        fail_msg("balance of %s: expected rc %d, got %d (%s)", account, CL_OK, rc, cl_strerror(rc));
    return balance;
}

typedef struct entry_view {
    uint64_t seq;
    int kind;
    char partner_id[PARTNER_ID_LEN_MAX + 1];
    char txn_id[TXN_ID_LEN_MAX + 1];
} entry_view_t;

static int view_entry(const journal_entry_t *e, void *ctx)
{
    entry_view_t *v = ctx;
    if (e->seq != v->seq)
        return CL_OK;
    v->kind = (int)e->kind;
    snprintf(v->partner_id, sizeof v->partner_id, "%s", e->partner_id);
    snprintf(v->txn_id, sizeof v->txn_id, "%s", e->txn_id);
    return STORE_WALK_STOP;
}

static void journal_entry_at(const world_t *w, uint64_t seq, entry_view_t *out)
{
    memset(out, 0, sizeof *out);
    out->seq = seq;
    out->kind = -1;
    ledger_t *l = open_ledger(w);
    int rc = ledger_journal_foreach(l, seq, view_entry, out);
    ledger_destroy(&l);
    if (rc != CL_OK || out->kind < 0)
        fail_msg("journal entry %llu: expected one, got rc %d, kind %d", (unsigned long long)seq,
                 rc, out->kind);
}

/* The keys database: how many keys, and the row of one (false when not recorded). */
static size_t read_keys(const world_t *w, ledger_key_row_t rows[KEYS_MAX])
{
    ledger_t *l = open_ledger(w);
    size_t count = 0;
    int rc = ledger_keys_slice(l, NULL, rows, KEYS_MAX, &count);
    ledger_destroy(&l);
    if (rc != CL_OK || count == KEYS_MAX)
        fail_msg("keys: expected rc %d and under %d keys, got rc %d, %zu keys", CL_OK, KEYS_MAX, rc,
                 count);
    return count;
}

static bool key_row(const world_t *w, const char *public_z85, ledger_key_row_t *out)
{
    ledger_key_row_t rows[KEYS_MAX];
    size_t count = read_keys(w, rows);
    for (size_t i = 0; i < count; i++) {
        if (strcmp(rows[i].public_z85, public_z85) == 0) {
            *out = rows[i];
            return true;
        }
    }
    return false;
}

static void expect_verify(world_t *w)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("coalitionctl verify: expected exit 0, got %d: %s", rc, out);
}

/* ---- keys and clients ------------------------------------------------------------------- */

static void public_key_of(const char *path, char out[KEY_Z85_BYTES])
{
    char why[KEY_WHY_BYTES_MAX];
    if (keys_read_public(path, out, why, sizeof why) != CL_OK)
        fail_msg("public key of %s: %s", path, why);
}

static client_t *client_with(const world_t *w, const key_pair_t *key)
{
    char server[KEY_Z85_BYTES];
    public_key_of(w->broker_pub, server);
    client_t *c = NULL;
    int rc = client_new_curve(&c, w->broker_endpoint, key, server);
    if (rc != CL_OK)
        fail_msg("client_new_curve(%s): expected %d, got %d", w->broker_endpoint, CL_OK, rc);
    return c;
}

static client_t *client_of_file(const world_t *w, const char *key_path)
{
    key_pair_t key;
    char why[KEY_WHY_BYTES_MAX];
    if (keys_read_secret(key_path, &key, why, sizeof why) != CL_OK)
        fail_msg("secret key of %s: %s", key_path, why);
    return client_with(w, &key);
}

/* A raw DEALER with this key pair, connected to the partner socket. */
static void *dealer_with(void *ctx, const world_t *w, const key_pair_t *key)
{
    char server[KEY_Z85_BYTES];
    public_key_of(w->broker_pub, server);
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger_ms = 0;
    if (sock == NULL || zmq_setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, KEY_Z85_BYTES) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, key->public_z85, KEY_Z85_BYTES) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, key->secret_z85, KEY_Z85_BYTES) ||
        zmq_connect(sock, w->broker_endpoint) != 0)
        fail_msg("CURVE DEALER to %s: %s", w->broker_endpoint, zmq_strerror(zmq_errno()));
    return sock;
}

/* A key pair never recorded in the ledger. */
static void unknown_key(key_pair_t *key)
{
    int rc = keys_generate(key);
    if (rc != CL_OK)
        fail_msg("keys_generate: expected %d, got %d", CL_OK, rc);
}

/* ---- requests --------------------------------------------------------------------------- */

/* One envelope and every body it may point at; never copied once built. */
typedef struct req {
    envelope_t env;
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__RefundRequest refund;
    Coalition__VoidRequest void_request;
    Coalition__BalanceRequest balance;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerAddRequest partner_add;
    Coalition__KeyAddRequest key_add;
    Coalition__KeyRevokeRequest key_revoke;
    Coalition__PartnerLimitsRequest partner_limits;
} req_t;

static envelope_t *req_init(req_t *r, const char *partner_id, const char *txn_id)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner_id;
    r->env.terminal_id = "till-1";
    r->env.site_id = "main";
    r->env.txn_id = (char *)txn_id;
    r->env.client_time_ms = clock_wall_ms();
    return &r->env;
}

static envelope_t *earn_req(req_t *r, const char *partner_id, const char *txn_id,
                            const char *member_id, int64_t amount_minor)
{
    req_init(r, partner_id, txn_id);
    coalition__earn_request__init(&r->earn);
    r->earn.member_id = (char *)member_id;
    r->earn.amount_minor = amount_minor;
    r->earn.currency = "EUR";
    r->env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r->env.earn = &r->earn;
    return &r->env;
}

static envelope_t *burn_req(req_t *r, const char *partner_id, const char *txn_id,
                            const char *member_id, int64_t points)
{
    req_init(r, partner_id, txn_id);
    coalition__burn_request__init(&r->burn);
    r->burn.member_id = (char *)member_id;
    r->burn.points = points;
    r->env.body_case = COALITION__ENVELOPE__BODY_BURN;
    r->env.burn = &r->burn;
    return &r->env;
}

static envelope_t *refund_req(req_t *r, const char *partner_id, const char *txn_id,
                              const char *original_txn_id, int64_t amount_minor, int64_t points)
{
    req_init(r, partner_id, txn_id);
    coalition__refund_request__init(&r->refund);
    r->refund.original_txn_id = (char *)original_txn_id;
    r->refund.amount_minor = amount_minor;
    r->refund.points = points;
    r->env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    r->env.refund = &r->refund;
    return &r->env;
}

static envelope_t *void_req(req_t *r, const char *partner_id, const char *txn_id,
                            const char *original_txn_id)
{
    req_init(r, partner_id, txn_id);
    coalition__void_request__init(&r->void_request);
    r->void_request.original_txn_id = (char *)original_txn_id;
    r->env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r->env.void_request = &r->void_request;
    return &r->env;
}

static envelope_t *balance_req(req_t *r, const char *partner_id, const char *txn_id,
                               const char *member_id)
{
    req_init(r, partner_id, txn_id);
    coalition__balance_request__init(&r->balance);
    r->balance.member_id = (char *)member_id;
    r->env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    r->env.balance = &r->balance;
    return &r->env;
}

static envelope_t *enroll_req(req_t *r, const char *partner_id, const char *txn_id,
                              const char *member_id)
{
    req_init(r, partner_id, txn_id);
    coalition__enroll_request__init(&r->enroll);
    r->enroll.member_id = (char *)member_id;
    r->env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    r->env.enroll = &r->enroll;
    return &r->env;
}

static authorization_t *call(client_t *c, const char *what, const envelope_t *env)
{
    authorization_t *auth = NULL;
    int rc = client_call(c, env, CALL_TIMEOUT_MS, &auth);
    if (rc != CL_OK || auth == NULL)
        fail_msg("%s: expected a reply within %d ms, got rc %d (%s)", what, CALL_TIMEOUT_MS, rc,
                 cl_strerror(rc));
    return auth;
}

/* The reply an approval has; frees it. */
static void expect_approved(const char *what, authorization_t *auth, int64_t points,
                            int64_t balance, uint64_t seq)
{
    char field[FIELD_BYTES];
    snprintf(field, sizeof field, "%s: code (text \"%s\")", what, auth->text);
    EXPECT_EQ(field, RC_APPROVED, auth->code);
    snprintf(field, sizeof field, "%s: points", what);
    EXPECT_EQ(field, points, auth->points);
    snprintf(field, sizeof field, "%s: balance", what);
    EXPECT_EQ(field, balance, auth->balance);
    snprintf(field, sizeof field, "%s: seq", what);
    EXPECT_EQ(field, seq, auth->seq);
    snprintf(field, sizeof field, "%s: replay", what);
    EXPECT_EQ(field, false, auth->replay);
    snprintf(field, sizeof field, "%s: auth code length", what);
    EXPECT_EQ(field, AUTH_CODE_LEN, strlen(auth->auth_code));
    wire_auth_free(auth);
}

/* The reply every decline has: this code, nothing applied, and `part` in its text. */
static void expect_declined(const char *what, authorization_t *auth, int code, const char *part)
{
    char field[FIELD_BYTES], prefix[32];
    snprintf(field, sizeof field, "%s: code (text \"%s\")", what, auth->text);
    EXPECT_EQ(field, code, auth->code);
    snprintf(field, sizeof field, "%s: seq", what);
    EXPECT_EQ(field, 0, auth->seq);
    snprintf(field, sizeof field, "%s: points", what);
    EXPECT_EQ(field, 0, auth->points);
    snprintf(field, sizeof field, "%s: replay", what);
    EXPECT_EQ(field, false, auth->replay);
    snprintf(field, sizeof field, "%s: auth code", what);
    EXPECT_STR(field, "", auth->auth_code);
    snprintf(prefix, sizeof prefix, "Declined %02d: ", code);
    if (strncmp(auth->text, prefix, strlen(prefix)) != 0)
        fail_msg("%s: expected a text starting \"%s\", got \"%s\"", what, prefix, auth->text);
    snprintf(field, sizeof field, "%s: receipt text", what);
    EXPECT_CONTAINS(field, part, auth->text);
    wire_auth_free(auth);
}

/* Send `env` over `c`; approved with these points and balance, as the next journal entry. */
static uint64_t approve(fixture_t *f, client_t *c, const char *what, const envelope_t *env,
                        int64_t points, int64_t balance)
{
    uint64_t seq = last_seq(&f->world) + 1;
    expect_approved(what, call(c, what, env), points, balance, seq);
    EXPECT_EQ("ledger last seq after an approval", seq, last_seq(&f->world));
    return seq;
}

/* Send `env` over `c`; declined `code` with `part` in the text, and the ledger unchanged. */
static void refuse(fixture_t *f, client_t *c, const char *what, const envelope_t *env, int code,
                   const char *part)
{
    snapshot_t before;
    take_snapshot(&f->world, &before);
    expect_declined(what, call(c, what, env), code, part);
    expect_unchanged(what, &f->world, &before);
}

/* Send without waiting (the txn ids must be distinct), then collect every reply. */
static void send_env(void *sock, const envelope_t *env)
{
    size_t len = 0;
    uint8_t *buf = wire_pack_envelope(env, &len);
    assert_non_null(buf);
    int sent = zmq_send(sock, buf, len, 0);
    free(buf);
    if (sent != (int)len)
        fail_msg("zmq_send: expected %zu bytes sent, got %d (%s)", len, sent,
                 zmq_strerror(zmq_errno()));
}

/* Replies to `n` requests named txn_ids[i]; replies[i] is the one for txn_ids[i]. */
static void collect_replies(void *sock, char txn_ids[][TXN_BYTES], size_t n,
                            authorization_t **replies)
{
    size_t got = 0;
    int64_t deadline = clock_mono_ms() + CALL_TIMEOUT_MS;
    while (got < n && clock_mono_ms() < deadline) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, POLL_STEP_MS) <= 0)
            continue;
        uint8_t buf[WIRE_MESSAGE_BYTES_MAX];
        int len = zmq_recv(sock, buf, sizeof buf, 0);
        authorization_t *auth =
            len > 0 && (size_t)len <= sizeof buf ? wire_auth_decode(buf, (size_t)len) : NULL;
        assert_non_null(auth);
        size_t i = 0;
        while (i < n && strcmp(txn_ids[i], auth->txn_id) != 0)
            i++;
        if (i == n || replies[i] != NULL)
            fail_msg("reply for txn \"%s\": expected one of the requests sent, once", auth->txn_id);
        replies[i] = auth;
        got++;
    }
    if (got != n)
        fail_msg("pipelined requests: expected %zu replies within %d ms, got %zu", n,
                 CALL_TIMEOUT_MS, got);
}

/* ---- logs and processes ----------------------------------------------------------------- */

static const char *read_log(const char *path)
{
    static char text[LOG_BYTES];
    text[0] = '\0';
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return text;
    size_t n = fread(text, 1, sizeof text - 1, fp);
    text[n] = '\0';
    fclose(fp);
    return text;
}

static size_t count_in(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Poll a log another process writes until it holds `needle`. */
static bool wait_log(const char *path, const char *needle, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (strstr(read_log(path), needle) == NULL) {
        if (clock_mono_ms() > deadline)
            return false;
        sleep_ms(POLL_STEP_MS);
    }
    return true;
}

static void expect_log(const char *what, const char *path, const char *needle)
{
    if (!wait_log(path, needle, LOG_WAIT_MS))
        fail_msg("%s: expected the log %s to contain \"%s\" within %d ms; it holds:\n%s", what,
                 path, needle, LOG_WAIT_MS, read_log(path));
}

/* Start a program that should refuse to start. Returns its exit status (or -signal), or
 * STARTED when `ready_endpoint` answered first: then it has been stopped again. */
static int start_expecting_refusal(char *const argv[], const char *log_path,
                                   const char *ready_endpoint)
{
    pid_t pid = harness_spawn(argv, log_path);
    proc_t p = {pid, false, ""};
    int64_t deadline = clock_mono_ms() + EXIT_WAIT_MS;
    for (int polls = 1; clock_mono_ms() < deadline; polls++) {
        int status = 0;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        if (done < 0)
            fail_msg("waitpid(%d): %s", (int)pid, strerror(errno));
        if (polls % READY_PROBE_EVERY == 0 && harness_wait_reply(ready_endpoint, POLL_STEP_MS)) {
            harness_stop(&p, SIGTERM);
            return STARTED;
        }
        sleep_ms(POLL_STEP_MS);
    }
    harness_stop(&p, SIGKILL);
    return STILL_RUNNING;
}

static void expect_refused_start(const char *what, char *const argv[], const char *log_path,
                                 const char *ready_endpoint, int exit_expected, const char *line)
{
    int status = start_expecting_refusal(argv, log_path, ready_endpoint);
    if (status == STARTED)
        fail_msg("%s: expected exit %d, but it started and answered on %s (log %s):\n%s", what,
                 exit_expected, ready_endpoint, log_path, read_log(log_path));
    if (status != exit_expected)
        fail_msg("%s: expected exit %d, got %d (log %s):\n%s", what, exit_expected, status,
                 log_path, read_log(log_path));
    expect_log(what, log_path, line);
}

static unsigned file_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("stat(%s): %s", path, strerror(errno));
    return (unsigned)(st.st_mode & 0777);
}

static void set_mode(const char *path, unsigned mode)
{
    if (chmod(path, (mode_t)mode) != 0)
        fail_msg("chmod(%s, %03o): %s", path, mode, strerror(errno));
}

/* ---- the world -------------------------------------------------------------------------- */

static void ctl_ok(const char *what, int rc, const char *out)
{
    if (rc != 0)
        fail_msg("coalitionctl %s: expected exit 0, got %d: %s", what, rc, out);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    world_t *w = &f->world;
    char out[OUT_BYTES];
    world_init(w);
    world_start_broker(w);
    int rc = world_ctl(w, out, sizeof out, "partner", "add", "fuel", "--earn-rate", "2",
                       "--currency", "EUR", NULL);
    if (rc == 0)
        rc = world_ctl(w, out, sizeof out, "partner", "add", "grocer", "--earn-rate", "1.5",
                       "--currency", "EUR", NULL);
    if (rc == 0)
        rc = world_ctl(w, out, sizeof out, "member", "add", "alice", NULL);
    if (rc == 0)
        rc = world_ctl(w, out, sizeof out, "member", "add", "bob", NULL);
    if (rc == 0) {
        world_key(w, "fuel", "partner");
        world_key(w, "grocer", "partner");
        rc = world_client(w, "fuel", &f->fuel);
    }
    if (rc == 0)
        rc = world_client(w, "grocer", &f->grocer);
    if (rc != 0) {
        fprintf(stderr, "it_trust setup failed (%d): %s\n", rc, out);
        world_destroy(w);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    client_destroy(&f->fuel);
    client_destroy(&f->grocer);
    world_destroy(&f->world);
    free(f);
    return 0;
}

/* ---- 1. who may connect ----------------------------------------------------------------- */

static void test_setup_sequence(void **state)
{
    fixture_t *f = *state;
    EXPECT_EQ("ledger last seq after setup", SETUP_LAST_SEQ, last_seq(&f->world));
    ledger_key_row_t rows[KEYS_MAX];
    EXPECT_EQ("keys after setup", 2, read_keys(&f->world, rows));
    expect_verify(&f->world);
}

/* A key never recorded: the handshake fails, so no request gets any reply. */
static void test_unknown_key_gets_no_reply(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    snapshot_t before;
    take_snapshot(w, &before);
    key_pair_t rogue;
    unknown_key(&rogue);
    client_t *c = client_with(w, &rogue);
    req_t r;
    authorization_t *auth = NULL;
    int rc = client_call(c, earn_req(&r, "fuel", "rogue-earn", "alice", 1000), SILENCE_MS, &auth);
    EXPECT_EQ("earn over an unknown key: no reply (CL_ERR_TIMEOUT)", CL_ERR_TIMEOUT, rc);
    client_destroy(&c);
    /* A fresh client each time: once its handshake failed, a DEALER has no peer to queue a
     * message for, and client_call's send would block. */
    c = client_with(w, &rogue);
    rc = client_call(c, balance_req(&r, "fuel", "rogue-balance", "alice"), SILENCE_MS, &auth);
    EXPECT_EQ("balance inquiry over an unknown key: no reply (CL_ERR_TIMEOUT)", CL_ERR_TIMEOUT, rc);
    client_destroy(&c);
    expect_unchanged("requests over an unknown key", w, &before);
    expect_log("broker log after an unknown key", w->broker.log_path,
               "WARN ZAP refused a connection from 127.0.0.1: unknown key (400)");

    /* The recorded key beside it is served as ever. */
    approve(f, f->fuel, "fuel's earn after the unknown key",
            earn_req(&r, "fuel", "e1", "alice", 1000), 20, 20);
    expect_verify(w);
}

/* Without CURVE, or with another server key than the broker's: no handshake, no reply. */
static void test_plain_or_wrong_server_key_gets_no_reply(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    snapshot_t before;
    take_snapshot(w, &before);
    req_t r;
    client_t *c = NULL;
    authorization_t *auth = NULL;
    EXPECT_EQ("client_new", CL_OK, client_new(&c, w->broker_endpoint));
    int rc = client_call(c, earn_req(&r, "fuel", "plain", "alice", 1000), SILENCE_MS, &auth);
    client_destroy(&c);
    EXPECT_EQ("earn from a plain (NULL mechanism) client: no reply", CL_ERR_TIMEOUT, rc);

    key_pair_t fuel, impostor;
    char why[KEY_WHY_BYTES_MAX];
    if (keys_read_secret(world_key(w, "fuel", "partner"), &fuel, why, sizeof why) != CL_OK)
        fail_msg("fuel's key: %s", why);
    unknown_key(&impostor);
    EXPECT_EQ("client_new_curve", CL_OK,
              client_new_curve(&c, w->broker_endpoint, &fuel, impostor.public_z85));
    rc = client_call(c, earn_req(&r, "fuel", "wrong-server", "alice", 1000), SILENCE_MS, &auth);
    client_destroy(&c);
    EXPECT_EQ("earn with fuel's key to another server key: no reply", CL_ERR_TIMEOUT, rc);
    expect_unchanged("plain and wrong-server-key clients", w, &before);
    approve(f, f->fuel, "fuel's earn beside them", earn_req(&r, "fuel", "e1", "alice", 1000), 20,
            20);
    expect_verify(w);
}

/* The largest "N refused in all" the ZAP refusal lines report. */
static unsigned long long max_refused_in_all(const char *log)
{
    static const char line_marker[] = "ZAP refused a connection";
    static const char count_marker[] = "; ";
    unsigned long long max = 0;
    for (const char *p = strstr(log, line_marker); p != NULL; p = strstr(p + 1, line_marker)) {
        const char *end = strchr(p, '\n');
        const char *count = strstr(p, count_marker);
        if (count == NULL || (end != NULL && count > end))
            continue;
        unsigned long long n = strtoull(count + strlen(count_marker), NULL, 10);
        max = n > max ? n : max;
    }
    return max;
}

/* One more client with a key never recorded, sending one earn. */
static void *unknown_client(void *ctx, const world_t *w)
{
    key_pair_t rogue;
    unknown_key(&rogue);
    void *sock = dealer_with(ctx, w, &rogue);
    req_t r;
    send_env(sock, earn_req(&r, "fuel", "flood", "alice", 1000));
    return sock;
}

/* Many unknown keys at once: all refused, logged at most once a second with a count. A
 * refused client does not come back, so late ones keep arriving until the next line. */
static void test_unknown_key_refusals_rate_limited(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    snapshot_t before;
    take_snapshot(w, &before);
    void *ctx = zmq_ctx_new();
    void *socks[FLOOD_CLIENTS + LATE_CLIENTS_MAX];
    size_t n = 0;
    int64_t start_ms = clock_mono_ms();
    while (n < FLOOD_CLIENTS)
        socks[n++] = unknown_client(ctx, w);
    while (max_refused_in_all(read_log(w->broker.log_path)) <= FLOOD_CLIENTS &&
           n < FLOOD_CLIENTS + LATE_CLIENTS_MAX) {
        sleep_ms(LATE_CLIENT_MS);
        socks[n++] = unknown_client(ctx, w);
    }
    int64_t elapsed_ms = clock_mono_ms() - start_ms;
    const char *log = read_log(w->broker.log_path);
    unsigned long long refused = max_refused_in_all(log);
    size_t lines = count_in(log, "ZAP refused a connection");
    if (refused <= FLOOD_CLIENTS)
        fail_msg("ZAP refusals counted in the log: expected > %d within %lld ms, got %llu:\n%s",
                 FLOOD_CLIENTS, (long long)elapsed_ms, refused, log);
    if (lines < 2 || lines > (size_t)(elapsed_ms / LOG_INTERVAL_MS) + 1)
        fail_msg("ZAP refusal lines in %lld ms: expected 2..%lld (one a second), got %zu:\n%s",
                 (long long)elapsed_ms, (long long)(elapsed_ms / LOG_INTERVAL_MS) + 1, lines, log);
    EXPECT_CONTAINS("the later refusal line", "similar suppressed)", log);
    for (size_t i = 0; i < n; i++) {
        zmq_pollitem_t item = {socks[i], 0, ZMQ_POLLIN, 0};
        EXPECT_EQ("replies to a client with an unknown key", 0, zmq_poll(&item, 1, 0));
        zmq_close(socks[i]);
    }
    zmq_ctx_term(ctx);
    expect_unchanged("a flood of unknown keys", w, &before);
    expect_verify(w);
}

/* ---- 2. revocation ---------------------------------------------------------------------- */

static void revoke(world_t *w, const char *key_path, char public_z85[KEY_Z85_BYTES])
{
    char out[OUT_BYTES];
    public_key_of(key_path, public_z85);
    int rc = world_ctl(w, out, sizeof out, "key", "revoke", public_z85, NULL);
    ctl_ok("key revoke", rc, out);
    EXPECT_CONTAINS("key revoke output", "revoked", out);
}

static void test_revoked_key_cut_off(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    approve(f, f->fuel, "fuel earn before the revocation",
            earn_req(&r, "fuel", "e1", "alice", 1000), 20, 20);
    approve(f, f->grocer, "grocer earn before", earn_req(&r, "grocer", "g1", "bob", 1000), 15, 15);
    char fuel_key[KEY_Z85_BYTES];
    revoke(w, world_key(w, "fuel", "partner"), fuel_key);
    ledger_key_row_t row;
    EXPECT_TRUE("fuel's key is still listed", key_row(w, fuel_key, &row));
    EXPECT_EQ("fuel's key revoked at the revocation's seq", last_seq(w), row.revoked_seq);

    /* The connection opened before is refused from its next message on. */
    refuse(f, f->fuel, "earn on fuel's open connection after the revocation",
           earn_req(&r, "fuel", "e2", "alice", 1000), RC_NOT_PERMITTED, "revoked");
    refuse(f, f->fuel, "balance inquiry on the open connection after the revocation",
           balance_req(&r, "fuel", "q1", "alice"), RC_NOT_PERMITTED, "revoked");
    approve(f, f->grocer, "grocer earn after fuel's revocation",
            earn_req(&r, "grocer", "g2", "bob", 1000), 15, 30);

    /* A new connection with the revoked key: no handshake, no reply at all. */
    snapshot_t before;
    take_snapshot(w, &before);
    client_t *c = client_of_file(w, world_key(w, "fuel", "partner"));
    authorization_t *auth = NULL;
    int rc = client_call(c, earn_req(&r, "fuel", "e3", "alice", 1000), SILENCE_MS, &auth);
    client_destroy(&c);
    EXPECT_EQ("earn over a new connection with the revoked key: no reply", CL_ERR_TIMEOUT, rc);
    expect_unchanged("new connection with the revoked key", w, &before);
    expect_log("broker log", w->broker.log_path, "revoked key (400)");

    /* Fuel's new key: e2 was never stored, so it is approved now as a new request. */
    char path[HARNESS_PATH_BYTES + 16], out[OUT_BYTES];
    snprintf(path, sizeof path, "%s/fuel-2.key", w->dir);
    rc = world_ctl(w, out, sizeof out, "key", "new", "fuel", "--role", "partner", "--out", path,
                   NULL);
    ctl_ok("key new fuel (a second key)", rc, out);
    c = client_of_file(w, path);
    approve(f, c, "e2 again with fuel's new key", earn_req(&r, "fuel", "e2", "alice", 1000), 20,
            40);
    client_destroy(&c);
    expect_verify(w);
}

/* Parse "(seq N)" from coalitionctl's answer. */
static uint64_t seq_in(const char *out)
{
    const char *p = strstr(out, "(seq ");
    if (p == NULL)
        fail_msg("expected \"(seq N)\" in \"%s\"", out);
    return strtoull(p + strlen("(seq "), NULL, 10);
}

/* Earns sent one a millisecond on one connection while `coalitionctl key revoke` runs
 * beside them, and RACE_TAIL more once it has returned; the count sent. */
static size_t stream_around_revocation(world_t *w, void *sock, const char *public_z85,
                                       char txn_ids[][TXN_BYTES], const char *out_path)
{
    char *argv[] = {COALITIONCTL_BIN, "--ledger",         w->ledger, "key",
                    "revoke",         (char *)public_z85, NULL};
    pid_t pid = harness_spawn(argv, out_path);
    size_t n = 0, tail = 0;
    bool returned = false;
    req_t r;
    while (tail < RACE_TAIL && n < RACE_EARNS_MAX) {
        snprintf(txn_ids[n], TXN_BYTES, "race-%04zu", n);
        send_env(sock, earn_req(&r, "fuel", txn_ids[n], "alice", 100));
        n++;
        int status = 0;
        if (returned) {
            tail++;
        } else if (waitpid(pid, &status, WNOHANG) == pid) {
            returned = true;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fail_msg("coalitionctl key revoke: expected exit 0, got status %d: %s", status,
                         read_log(out_path));
        }
        sleep_ms(1);
    }
    if (!returned) {
        waitpid(pid, NULL, 0);
        fail_msg("coalitionctl key revoke: expected it to return while %d earns were sent",
                 RACE_EARNS_MAX);
    }
    return n;
}

/* Earns streamed on one connection while the key is revoked: whatever the interleaving,
 * none is approved after the revocation (in journal order), and after the first refusal
 * every later one is refused too, whichever check (front end or writer) caught it. */
static void test_revocation_racing_a_stream(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    approve(f, f->fuel, "warm-up earn", earn_req(&r, "fuel", "warm", "alice", 100), 2, 2);
    uint64_t seq_before = last_seq(w);
    static char txn_ids[RACE_EARNS_MAX][TXN_BYTES];
    static authorization_t *replies[RACE_EARNS_MAX];
    memset(replies, 0, sizeof replies);
    key_pair_t key;
    char why[KEY_WHY_BYTES_MAX], out_path[HARNESS_PATH_BYTES + 32];
    if (keys_read_secret(world_key(w, "fuel", "partner"), &key, why, sizeof why) != CL_OK)
        fail_msg("fuel's key: %s", why);
    snprintf(out_path, sizeof out_path, "%s/revoke.out", w->dir);
    void *ctx = zmq_ctx_new();
    void *sock = dealer_with(ctx, w, &key);
    size_t n = stream_around_revocation(w, sock, key.public_z85, txn_ids, out_path);
    uint64_t revoke_seq = seq_in(read_log(out_path));
    collect_replies(sock, txn_ids, n, replies);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    size_t approved = 0;
    bool refused_seen = false;
    for (size_t i = 0; i < n; i++) {
        authorization_t *a = replies[i];
        if (a->code == RC_APPROVED && !refused_seen && a->seq < revoke_seq) {
            approved++;
        } else if (a->code == RC_NOT_PERMITTED && a->seq == 0 && strstr(a->text, "revoked")) {
            refused_seen = true;
        } else {
            fail_msg("%s: expected approved before seq %llu or 57 \"revoked\" after, got %02d "
                     "seq %llu \"%s\" (refused before: %d)",
                     txn_ids[i], (unsigned long long)revoke_seq, (int)a->code,
                     (unsigned long long)a->seq, a->text, refused_seen);
        }
        wire_auth_free(a);
    }
    uint64_t seq = last_seq(w);
    EXPECT_EQ("journal: the approved earns and the revocation", seq_before + approved + 1, seq);
    EXPECT_EQ("alice's balance: 2 points per approved earn", 2 + 2 * approved,
              balance_of(w, "member:alice"));
    /* Which check refused: every request the writer saw but the refused ones made an entry. */
    EXPECT_EQ("the broker stops cleanly", 0, world_stop_broker(w, SIGTERM));
    const char *line = strstr(read_log(w->broker.log_path), "INFO writer: ");
    assert_non_null(line);
    unsigned long long written = strtoull(line + strlen("INFO writer: "), NULL, 10);
    if (written < seq || written - seq > n - approved)
        fail_msg("writer: expected %llu..%llu requests, got %llu", (unsigned long long)seq,
                 (unsigned long long)(seq + n - approved), written);
    print_message("revocation race: %zu of %zu earns approved, revoked at seq %llu; %llu "
                  "refused by the writer's own check, %llu by the front end's\n",
                  approved, n, (unsigned long long)revoke_seq, written - seq,
                  (unsigned long long)(n - approved) - (written - seq));
    expect_verify(w);
}

/* ---- 3. identity from the key, never from the envelope ---------------------------------- */

/* Grocer's originals for the next tests: g-e1 earns bob 30, g-b1 burns 5 of them. */
static void grocer_originals(fixture_t *f)
{
    req_t r;
    approve(f, f->grocer, "grocer earn g-e1", earn_req(&r, "grocer", "g-e1", "bob", 2000), 30, 30);
    approve(f, f->grocer, "grocer burn g-b1", burn_req(&r, "grocer", "g-b1", "bob", 5), 5, 25);
}

static void test_partner_cannot_act_as_another(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    const char *why = "belongs to partner fuel, not grocer";
    grocer_originals(f);
    refuse(f, f->fuel, "fuel earns as grocer", earn_req(&r, "grocer", "x-earn", "bob", 1000),
           RC_NOT_PERMITTED, why);
    refuse(f, f->fuel, "fuel burns as grocer", burn_req(&r, "grocer", "x-burn", "bob", 2),
           RC_NOT_PERMITTED, why);
    refuse(f, f->fuel, "fuel refunds grocer's g-e1 as grocer",
           refund_req(&r, "grocer", "x-refund", "g-e1", 1000, 0), RC_NOT_PERMITTED, why);
    refuse(f, f->fuel, "fuel voids grocer's g-b1 as grocer",
           void_req(&r, "grocer", "x-void", "g-b1"), RC_NOT_PERMITTED, why);
    refuse(f, f->fuel, "fuel asks a balance as grocer", balance_req(&r, "grocer", "x-q", "bob"),
           RC_NOT_PERMITTED, why);
    refuse(f, f->fuel, "fuel enrols as grocer", enroll_req(&r, "grocer", "x-enrol", "carol"),
           RC_NOT_PERMITTED, why);

    /* Grocer's own requests under the same txn ids are new: nothing was kept for them. */
    approve(f, f->grocer, "grocer's own x-earn", earn_req(&r, "grocer", "x-earn", "bob", 1000), 15,
            40);
    approve(f, f->grocer, "grocer's own x-burn", burn_req(&r, "grocer", "x-burn", "bob", 2), 2, 38);
    approve(f, f->grocer, "grocer's own x-void of g-b1", void_req(&r, "grocer", "x-void", "g-b1"),
            5, 43);
    approve(f, f->grocer, "grocer's own x-refund of g-e1 (10.00 of 20.00)",
            refund_req(&r, "grocer", "x-refund", "g-e1", 1000, 0), 15, 28);
    approve(f, f->grocer, "grocer's own x-enrol of carol",
            enroll_req(&r, "grocer", "x-enrol", "carol"), 0, 0);
    EXPECT_EQ("grocer issued: -(30 + 15) + 15", -30, balance_of(w, "partner:grocer:issued"));
    EXPECT_EQ("grocer redeemed: 5 + 2 - 5", 2, balance_of(w, "partner:grocer:redeemed"));
    EXPECT_EQ("fuel issued", 0, balance_of(w, "partner:fuel:issued"));
    expect_verify(w);
}

static void test_partner_cannot_send_operator_requests(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    ledger_key_row_t rows[KEYS_MAX];
    size_t keys_before = read_keys(w, rows);
    const char *why = "operator request on the partner socket";
    req_t r;
    req_init(&r, "fuel", "op-1");
    coalition__partner_add_request__init(&r.partner_add);
    r.partner_add.partner_id = "pharmacy";
    r.partner_add.earn_rate_milli = 1000;
    r.partner_add.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r.env.partner_add = &r.partner_add;
    refuse(f, f->fuel, "PartnerAdd from fuel", &r.env, RC_NOT_PERMITTED, why);

    key_pair_t extra;
    unknown_key(&extra);
    req_init(&r, "fuel", "op-2");
    coalition__key_add_request__init(&r.key_add);
    r.key_add.public_key = extra.public_z85;
    r.key_add.participant = "fuel";
    r.key_add.role = COALITION__KEY_ROLE__ROLE_PARTNER;
    r.env.body_case = COALITION__ENVELOPE__BODY_KEY_ADD;
    r.env.key_add = &r.key_add;
    refuse(f, f->fuel, "KeyAdd from fuel", &r.env, RC_NOT_PERMITTED, why);

    char grocer_key[KEY_Z85_BYTES];
    public_key_of(world_key(w, "grocer", "partner"), grocer_key);
    req_init(&r, "fuel", "op-3");
    coalition__key_revoke_request__init(&r.key_revoke);
    r.key_revoke.public_key = grocer_key;
    r.env.body_case = COALITION__ENVELOPE__BODY_KEY_REVOKE;
    r.env.key_revoke = &r.key_revoke;
    refuse(f, f->fuel, "KeyRevoke of grocer's key from fuel", &r.env, RC_NOT_PERMITTED, why);

    req_init(&r, "fuel", "op-4");
    coalition__partner_limits_request__init(&r.partner_limits);
    r.partner_limits.partner_id = "fuel";
    r.partner_limits.max_amount_minor = AMOUNT_MINOR_MAX;
    r.partner_limits.requests_per_second = PARTNER_REQUESTS_PER_SECOND_MAX;
    r.env.body_case = COALITION__ENVELOPE__BODY_PARTNER_LIMITS;
    r.env.partner_limits = &r.partner_limits;
    refuse(f, f->fuel, "PartnerLimits of its own from fuel", &r.env, RC_NOT_PERMITTED, why);

    refuse(f, f->fuel, "earn as \"operator\" on the partner socket",
           earn_req(&r, OPERATOR_PARTNER_ID, "op-5", "alice", 1000), RC_NOT_PERMITTED,
           "partner id not allowed on this socket");
    refuse(f, f->fuel, "enrol as \"operator\" on the partner socket",
           enroll_req(&r, OPERATOR_PARTNER_ID, "op-6", "carol"), RC_NOT_PERMITTED,
           "partner id not allowed on this socket");

    EXPECT_EQ("keys after the refused KeyAdd", keys_before, read_keys(w, rows));
    ledger_key_row_t row;
    EXPECT_TRUE("grocer's key is recorded", key_row(w, grocer_key, &row));
    EXPECT_EQ("grocer's key not revoked", 0, row.revoked_seq);
    approve(f, f->grocer, "grocer earn after fuel's KeyRevoke",
            earn_req(&r, "grocer", "g1", "bob", 1000), 15, 15);
    expect_verify(w);
}

/* Fuel naming grocer's txn ids in its own envelope reverses nothing of grocer's: the
 * original is looked up in fuel's key space, where it is an original not seen yet. */
static void test_reversal_cannot_reach_another_partners_txn(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    grocer_originals(f);
    static const char *const names[] = {"fuel refund naming g-e1", "fuel void naming g-b1"};
    for (int i = 0; i < 2; i++) {
        uint64_t seq = last_seq(w) + 1;
        authorization_t *auth = call(f->fuel, names[i],
                                     i == 0 ? refund_req(&r, "fuel", "f-r1", "g-e1", 0, 0)
                                            : void_req(&r, "fuel", "f-v1", "g-b1"));
        char field[FIELD_BYTES];
        snprintf(field, sizeof field, "%s: code (text \"%s\")", names[i], auth->text);
        EXPECT_EQ(field, RC_APPROVED, auth->code);
        EXPECT_EQ(names[i], 0, auth->points);
        EXPECT_EQ(names[i], seq, auth->seq);
        EXPECT_CONTAINS(names[i], "recorded before its original", auth->text);
        wire_auth_free(auth);
        entry_view_t e;
        journal_entry_at(w, seq, &e);
        EXPECT_EQ("its journal entry: a reversal ahead of its original",
                  COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD, e.kind);
        EXPECT_STR("its journal entry's partner", "fuel", e.partner_id);
    }
    EXPECT_EQ("bob after fuel's reversals", 25, balance_of(w, "member:bob"));
    EXPECT_EQ("grocer issued after fuel's reversals", -30, balance_of(w, "partner:grocer:issued"));
    EXPECT_EQ("grocer redeemed after fuel's reversals", 5,
              balance_of(w, "partner:grocer:redeemed"));
    EXPECT_EQ("fuel issued", 0, balance_of(w, "partner:fuel:issued"));
    EXPECT_EQ("fuel redeemed", 0, balance_of(w, "partner:fuel:redeemed"));

    /* Grocer's originals are whole: grocer reverses them in full. */
    approve(f, f->grocer, "grocer voids its g-b1", void_req(&r, "grocer", "g-v1", "g-b1"), 5, 30);
    approve(f, f->grocer, "grocer refunds all of its g-e1",
            refund_req(&r, "grocer", "g-r1", "g-e1", 0, 0), 30, 0);
    /* The tombstones are fuel's: fuel's own g-e1 would be declined 12. */
    refuse(f, f->fuel, "fuel's own earn under the txn id it reversed ahead",
           earn_req(&r, "fuel", "g-e1", "alice", 1000), RC_INVALID_TRANSACTION,
           "before it arrived");
    expect_verify(w);
}

/* ---- 4. a bank key ---------------------------------------------------------------------- */

static void test_bank_key_may_do_nothing(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char visa_key[KEY_Z85_BYTES];
    public_key_of(world_key(w, "visa", "bank"), visa_key);
    ledger_key_row_t row;
    EXPECT_TRUE("visa's key is recorded", key_row(w, visa_key, &row));
    EXPECT_EQ("visa's key role", COALITION__KEY_ROLE__ROLE_BANK, row.role);
    EXPECT_STR("visa's key participant", "visa", row.participant);
    client_t *visa = NULL;
    EXPECT_EQ("world_client as visa", CL_OK, world_client(w, "visa", &visa));
    req_t r;
    refuse(f, visa, "bank earns", earn_req(&r, "visa", "v1", "alice", 1000), RC_NOT_PERMITTED,
           "bank visa may not send earn requests");
    refuse(f, visa, "bank burns", burn_req(&r, "visa", "v2", "alice", 1), RC_NOT_PERMITTED,
           "bank visa may not send burn requests");
    refuse(f, visa, "bank asks a balance", balance_req(&r, "visa", "v3", "alice"), RC_NOT_PERMITTED,
           "bank visa may not send balance-by-member requests");
    refuse(f, visa, "bank enrols carol", enroll_req(&r, "visa", "v4", "carol"), RC_NOT_PERMITTED,
           "bank visa may not send enroll requests");
    refuse(f, visa, "bank earns as fuel", earn_req(&r, "fuel", "v5", "alice", 1000),
           RC_NOT_PERMITTED, "this key belongs to bank visa, not fuel");
    client_destroy(&visa);
    refuse(f, f->fuel, "carol was not enrolled", balance_req(&r, "fuel", "q1", "carol"),
           RC_UNKNOWN_MEMBER, "carol");
    expect_verify(w);
}

/* ---- 5. replays ------------------------------------------------------------------------- */

static void test_altered_replay_is_94(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    uint64_t seq =
        approve(f, f->fuel, "earn rp-1", earn_req(&r, "fuel", "rp-1", "alice", 1000), 20, 20);
    const char *why = "txn id rp-1 was already used for another request";
    refuse(f, f->fuel, "rp-1 again for 10.01", earn_req(&r, "fuel", "rp-1", "alice", 1001),
           RC_DUPLICATE_KEY, why);
    refuse(f, f->fuel, "rp-1 again for bob", earn_req(&r, "fuel", "rp-1", "bob", 1000),
           RC_DUPLICATE_KEY, why);
    refuse(f, f->fuel, "rp-1 again as a burn", burn_req(&r, "fuel", "rp-1", "alice", 1),
           RC_DUPLICATE_KEY, why);
    authorization_t *auth =
        call(f->fuel, "rp-1 repeated exactly", earn_req(&r, "fuel", "rp-1", "alice", 1000));
    EXPECT_EQ("exact repeat: code", RC_APPROVED, auth->code);
    EXPECT_EQ("exact repeat: replay", true, auth->replay);
    EXPECT_EQ("exact repeat: the original seq", seq, auth->seq);
    EXPECT_EQ("exact repeat: the original points", 20, auth->points);
    wire_auth_free(auth);
    EXPECT_EQ("ledger last seq after the repeats", seq, last_seq(w));
    EXPECT_EQ("alice after the repeats", 20, balance_of(w, "member:alice"));
    /* The same txn id at another partner is another key. */
    approve(f, f->grocer, "grocer's own rp-1", earn_req(&r, "grocer", "rp-1", "alice", 1000), 15,
            35);
    expect_verify(w);
}

/* ---- 6. limits -------------------------------------------------------------------------- */

static void set_limit(world_t *w, const char *partner, const char *option, const char *value)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "partner", "limits", partner, option, value, NULL);
    ctl_ok("partner limits", rc, out);
}

static void test_limit_max_amount(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    set_limit(w, "fuel", "--max-amount", "5000");
    refuse(f, f->fuel, "fuel earn of 50.01 over its 50.00 limit",
           earn_req(&r, "fuel", "a1", "alice", 5001), RC_EXCEEDS_LIMIT,
           "amount over partner fuel's limit of 5000 minor units a request");
    approve(f, f->fuel, "fuel earn of exactly 50.00", earn_req(&r, "fuel", "a2", "alice", 5000),
            100, 100);
    approve(f, f->grocer, "grocer earn of 50.01 (default limit)",
            earn_req(&r, "grocer", "a3", "bob", 5001), 75, 75);
    expect_verify(w);
}

static void test_limit_max_points(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    approve(f, f->fuel, "fuel earn", earn_req(&r, "fuel", "p0", "alice", 5000), 100, 100);
    set_limit(w, "fuel", "--max-points", "20");
    refuse(f, f->fuel, "fuel burn of 21 points over its 20 limit",
           burn_req(&r, "fuel", "p1", "alice", 21), RC_EXCEEDS_LIMIT,
           "burn over partner fuel's limit of 20 points a request");
    approve(f, f->fuel, "fuel burn of exactly 20", burn_req(&r, "fuel", "p2", "alice", 20), 20, 80);
    expect_verify(w);
}

/* A member's burns in a minute count across partners; each partner's own limit applies. */
static void test_limit_burn_velocity_across_partners(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    req_t r;
    approve(f, f->fuel, "fuel earn for alice", earn_req(&r, "fuel", "v0", "alice", 5000), 100, 100);
    set_limit(w, "fuel", "--burns-per-minute", "3");
    set_limit(w, "grocer", "--burns-per-minute", "4");
    approve(f, f->fuel, "burn 1 at fuel", burn_req(&r, "fuel", "v1", "alice", 1), 1, 99);
    approve(f, f->grocer, "burn 2 at grocer", burn_req(&r, "grocer", "v2", "alice", 1), 1, 98);
    approve(f, f->fuel, "burn 3 at fuel", burn_req(&r, "fuel", "v3", "alice", 1), 1, 97);
    refuse(f, f->fuel, "burn 4 at fuel (3 in the minute, fuel's limit 3)",
           burn_req(&r, "fuel", "v4", "alice", 1), RC_EXCEEDS_FREQUENCY,
           "has had 3 burns in the last minute (limit 3)");
    approve(f, f->grocer, "burn 4 at grocer (grocer's limit 4)",
            burn_req(&r, "grocer", "v5", "alice", 1), 1, 96);
    refuse(f, f->grocer, "burn 5 at grocer (4 in the minute)",
           burn_req(&r, "grocer", "v6", "alice", 1), RC_EXCEEDS_FREQUENCY,
           "has had 4 burns in the last minute (limit 4)");
    refuse(f, f->fuel, "burn 5 at fuel", burn_req(&r, "fuel", "v7", "alice", 1),
           RC_EXCEEDS_FREQUENCY, "limit 3");
    /* Another member is not held back by alice's burns. */
    approve(f, f->grocer, "grocer earn for bob", earn_req(&r, "grocer", "v8", "bob", 1000), 15, 15);
    approve(f, f->fuel, "bob's burn at fuel", burn_req(&r, "fuel", "v9", "bob", 1), 1, 14);
    expect_verify(w);
}

/* Over its request rate a partner is told 91 (retry) and nothing is stored. */
static void test_limit_request_rate(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char rate[16];
    snprintf(rate, sizeof rate, "%d", RATE_PER_SECOND);
    set_limit(w, "fuel", "--requests-per-second", rate);
    uint64_t seq_before = last_seq(w);
    static char txn_ids[RATE_BURST][TXN_BYTES];
    static authorization_t *replies[RATE_BURST];
    memset(replies, 0, sizeof replies);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger_ms = 0;
    assert_non_null(sock);
    EXPECT_EQ("ZMQ_LINGER", 0, zmq_setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms));
    world_curve_socket(w, sock, "fuel");
    EXPECT_EQ("zmq_connect", 0, zmq_connect(sock, w->broker_endpoint));
    req_t r;
    int64_t start_ms = clock_mono_ms();
    for (int i = 0; i < RATE_BURST; i++) {
        snprintf(txn_ids[i], TXN_BYTES, "rate-%02d", i);
        send_env(sock, earn_req(&r, "fuel", txn_ids[i], "alice", 100));
    }
    collect_replies(sock, txn_ids, RATE_BURST, replies);
    int64_t elapsed_ms = clock_mono_ms() - start_ms;
    zmq_close(sock);
    zmq_ctx_term(ctx);
    int approved = 0, limited = -1;
    for (int i = 0; i < RATE_BURST; i++) {
        if (replies[i]->code == RC_APPROVED) {
            approved++;
            wire_auth_free(replies[i]);
            continue;
        }
        expect_declined(txn_ids[i], replies[i], RC_UNAVAILABLE, "requests a second; retry");
        limited = limited < 0 ? i : limited;
    }
    /* The bucket starts full (RATE_PER_SECOND) and refills at that rate. */
    int64_t approved_max = RATE_PER_SECOND + elapsed_ms * RATE_PER_SECOND / 1000 + 1;
    if (approved < RATE_PER_SECOND || approved > approved_max || limited < 0)
        fail_msg("%d earns in %lld ms at %d a second: expected %d..%lld approved and some 91, got "
                 "%d approved",
                 RATE_BURST, (long long)elapsed_ms, RATE_PER_SECOND, RATE_PER_SECOND,
                 (long long)approved_max, approved);
    EXPECT_EQ("journal: one entry per approved earn", seq_before + approved, last_seq(w));
    EXPECT_EQ("alice: 2 points per approved earn", 2 * approved, balance_of(w, "member:alice"));

    /* A refused txn id was not stored: once the bucket refills it is approved as new. */
    int64_t deadline = clock_mono_ms() + RATE_RETRY_WAIT_MS;
    authorization_t *auth = NULL;
    for (;;) {
        auth = call(f->fuel, "retry of a 91", earn_req(&r, "fuel", txn_ids[limited], "alice", 100));
        if (auth->code != RC_UNAVAILABLE || clock_mono_ms() > deadline)
            break;
        wire_auth_free(auth);
        sleep_ms(RATE_RETRY_MS);
    }
    expect_approved(txn_ids[limited], auth, 2, 2 * approved + 2, seq_before + approved + 1);
    expect_verify(w);
}

/* ---- 7. files and options --------------------------------------------------------------- */

static void test_files_owner_only(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char path[HARNESS_PATH_BYTES + 32], out[OUT_BYTES], before[OUT_BYTES], after[OUT_BYTES];
    EXPECT_EQ("mode of the ledger directory made by init", MODE_OWNER_ONLY_DIR,
              file_mode(w->ledger));
    snprintf(path, sizeof path, "%s/broker.key", w->ledger);
    EXPECT_EQ("mode of broker.key made by init", MODE_OWNER_ONLY_FILE, file_mode(path));
    EXPECT_EQ("broker.pub exists", 0, access(w->broker_pub, R_OK));
    const char *fuel_path = world_key(w, "fuel", "partner");
    EXPECT_EQ("mode of a key file made by key new", MODE_OWNER_ONLY_FILE, file_mode(fuel_path));

    ledger_key_row_t rows[KEYS_MAX];
    size_t keys = read_keys(w, rows);
    uint64_t seq = last_seq(w);
    char *cat[] = {"/bin/cat", (char *)fuel_path, NULL};
    harness_run(cat, before, sizeof before);
    int rc = world_ctl(w, out, sizeof out, "key", "new", "fuel", "--role", "partner", "--out",
                       fuel_path, NULL);
    EXPECT_EQ("key new over an existing key file: exit status", 2, rc);
    harness_run(cat, after, sizeof after);
    EXPECT_STR("the existing key file after key new refused to overwrite it", before, after);
    EXPECT_EQ("keys after the refused key new", keys, read_keys(w, rows));
    EXPECT_EQ("ledger last seq after the refused key new", seq, last_seq(w));

    /* A key for a partner that does not exist is declined, and its file removed again. */
    snprintf(path, sizeof path, "%s/nobody.key", w->dir);
    rc = world_ctl(w, out, sizeof out, "key", "new", "nobody", "--role", "partner", "--out", path,
                   NULL);
    EXPECT_EQ("key new for an unknown partner: exit status", 1, rc);
    EXPECT_CONTAINS("key new for an unknown partner: output", "unknown partner nobody", out);
    EXPECT_EQ("no key file left for the unknown partner", -1, access(path, F_OK));
    EXPECT_EQ("keys after it", keys, read_keys(w, rows));

    /* --json is a global option, before the command. */
    rc = world_ctl(w, out, sizeof out, "--json", "key", "list", NULL);
    EXPECT_EQ("coalitionctl --json key list: exit status", 0, rc);
    EXPECT_EQ("key list lines", keys, count_in(out, "\n"));
    EXPECT_CONTAINS("key list", "\"participant\":\"fuel\",\"state\":\"active\"", out);
    expect_verify(w);
}

static void test_broker_refuses_unsafe_options(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char key[HARNESS_PATH_BYTES + 32], log[HARNESS_PATH_BYTES + 32];
    char open_dir[HARNESS_PATH_BYTES], admin[HARNESS_PATH_BYTES + 64], bind[64];
    EXPECT_EQ("the broker stops cleanly", 0, world_stop_broker(w, SIGTERM));

    snprintf(key, sizeof key, "%s/broker.key", w->ledger);
    set_mode(key, MODE_GROUP_READABLE);
    snprintf(log, sizeof log, "%s/broker-key-0640.log", w->dir);
    char *plain[] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind",
                     w->broker_endpoint,   NULL};
    expect_refused_start("broker with broker.key mode 0640", plain, log, w->admin_endpoint, 1,
                         "ERROR cannot load the broker key: secret key file");
    expect_log("broker with broker.key mode 0640", log, "readable by group or others (mode 640)");
    set_mode(key, MODE_OWNER_ONLY_FILE);

    snprintf(bind, sizeof bind, "tcp://0.0.0.0:%d", harness_free_port());
    snprintf(log, sizeof log, "%s/broker-insecure-any.log", w->dir);
    char *any[] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind", bind, "--insecure", NULL};
    expect_refused_start(
        "broker --insecure on 0.0.0.0", any, log, w->admin_endpoint, 1,
        "ERROR --insecure is allowed only on loopback addresses, not tcp://0.0.0.0");

    snprintf(open_dir, sizeof open_dir, "%s/open", w->dir);
    EXPECT_EQ("mkdir of a directory for the admin socket", 0, mkdir(open_dir, MODE_OPEN_DIR));
    set_mode(open_dir, MODE_OPEN_DIR);
    snprintf(admin, sizeof admin, "ipc://%s/x.sock", open_dir);
    snprintf(log, sizeof log, "%s/broker-admin-0755.log", w->dir);
    char *open_admin[] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind",
                          w->broker_endpoint,   "--admin",  admin,     NULL};
    expect_refused_start("broker with its admin socket in a 0755 directory", open_admin, log, admin,
                         1, "must exist, be ours and be mode 0700");
    snprintf(key, sizeof key, "%s/x.sock", open_dir);
    EXPECT_EQ("no admin socket made in the 0755 directory", -1, access(key, F_OK));

    snprintf(admin, sizeof admin, "tcp://127.0.0.1:%d", harness_free_port());
    snprintf(log, sizeof log, "%s/broker-admin-tcp.log", w->dir);
    char *tcp_admin[] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind",
                         w->broker_endpoint,   "--admin",  admin,     NULL};
    expect_refused_start("broker with a TCP admin endpoint", tcp_admin, log, admin, 1,
                         "it must be an ipc:// path");

    /* On loopback --insecure starts, and says so. */
    w->insecure = true;
    world_start_broker(w);
    expect_log("broker --insecure on loopback", w->broker.log_path,
               "WARN INSECURE: plain TCP on tcp://127.0.0.1:");
    EXPECT_EQ("the insecure broker stops cleanly", 0, world_stop_broker(w, SIGTERM));
    w->insecure = false;
    expect_verify(w);
}

/* An agent's argv: partner fuel at this world's broker, and `extra` options. */
static void agent_argv(world_t *w, char **argv, size_t max, const char *name, char *const *extra)
{
    static char data[HARNESS_PATH_BYTES + 32], listen[HARNESS_PATH_BYTES + 64];
    snprintf(data, sizeof data, "%s/agent-%s", w->dir, name);
    snprintf(listen, sizeof listen, "ipc://%s/agent-%s.sock", w->dir, name);
    size_t n = 0;
    char *head[] = {COALITION_AGENT_BIN, "--partner", "fuel", "--data", data, "--listen", listen};
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
        argv[n++] = head[i];
    for (size_t i = 0; extra[i] != NULL && n + 1 < max; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    assert_true(n + 1 < max);
}

#define AGENT_ARGV_MAX 24

static void expect_agent_refused(world_t *w, const char *what, const char *name, char *const *extra,
                                 const char *line)
{
    char *argv[AGENT_ARGV_MAX], log[HARNESS_PATH_BYTES + 32], listen[HARNESS_PATH_BYTES + 64];
    agent_argv(w, argv, AGENT_ARGV_MAX, name, extra);
    snprintf(log, sizeof log, "%s/agent-%s.log", w->dir, name);
    snprintf(listen, sizeof listen, "ipc://%s/agent-%s.sock", w->dir, name);
    expect_refused_start(what, argv, log, listen, 2, line);
}

static void test_agent_refuses_unsafe_options(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char key_path[HARNESS_PATH_BYTES + 32];
    snprintf(key_path, sizeof key_path, "%s/loose.key", w->dir);
    key_pair_t key;
    unknown_key(&key);
    EXPECT_EQ("keys_write_secret", CL_OK, keys_write_secret(key_path, &key, "loose"));
    set_mode(key_path, MODE_WORLD_READABLE);
    char *loose[] = {"--broker",     w->broker_endpoint, "--key", key_path,
                     "--broker-key", w->broker_pub,      NULL};
    expect_agent_refused(w, "agent with its key mode 0644", "loose", loose,
                         "ERROR refusing to start: secret key file");
    char log[HARNESS_PATH_BYTES + 32];
    snprintf(log, sizeof log, "%s/agent-loose.log", w->dir);
    expect_log("agent with its key mode 0644", log, "readable by group or others (mode 644)");

    char *no_keys[] = {"--broker", w->broker_endpoint, NULL};
    expect_agent_refused(w, "agent without --key and --broker-key", "nokeys", no_keys,
                         "--key FILE and --broker-key FILE are required");
    char *remote[] = {"--broker", "tcp://192.0.2.1:7700", "--insecure", NULL};
    expect_agent_refused(w, "agent --insecure to a remote broker", "remote", remote,
                         "--insecure is allowed only towards a loopback broker");
    expect_verify(w);
}

/* ZeroMQ's TCP endpoints may name a source address first: "tcp://SOURCE;ADDRESS", and the
 * socket binds or connects to ADDRESS. keys_endpoint_loopback checks the text's prefix,
 * so it reads SOURCE: with "tcp://127.0.0.1:0;0.0.0.0:PORT" an --insecure broker listens
 * on every interface, and an --insecure agent connects to a remote address. These two
 * tests fail until the check reads the address the socket will use. */
static void test_broker_insecure_loopback_check_reads_the_bound_address(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    EXPECT_EQ("the broker stops cleanly", 0, world_stop_broker(w, SIGTERM));
    char bind[64], log[HARNESS_PATH_BYTES + 32];
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:0;0.0.0.0:%d", harness_free_port());
    snprintf(log, sizeof log, "%s/broker-insecure-source.log", w->dir);
    char *argv[] = {COALITION_BROKER_BIN, "--ledger", w->ledger, "--bind", bind,
                    "--insecure",         NULL};
    expect_refused_start("broker --insecure --bind tcp://127.0.0.1:0;0.0.0.0:PORT (binds every "
                         "interface)",
                         argv, log, w->admin_endpoint, 1,
                         "--insecure is allowed only on loopback addresses");
    expect_verify(w);
}

static void test_agent_insecure_loopback_check_reads_the_broker_address(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char *remote[] = {"--broker", "tcp://127.0.0.1:0;192.0.2.1:7700", "--insecure", NULL};
    expect_agent_refused(w,
                         "agent --insecure --broker tcp://127.0.0.1:0;192.0.2.1:7700 (connects to "
                         "192.0.2.1)",
                         "source", remote, "--insecure is allowed only towards a loopback broker");
    expect_verify(w);
}

/* ---- 8. an agent whose key the broker does not know ------------------------------------- */

static agent_proc_t *start_rogue_agent(world_t *w, const char *key_path)
{
    assert_true(w->agent_count < HARNESS_AGENTS_MAX);
    /* Registered with the world, so that world_destroy stops it whatever happens. */
    agent_proc_t *a = &w->agents[w->agent_count++];
    char dir[HARNESS_DIR_BYTES];
    memcpy(dir, w->dir, sizeof dir);
    snprintf(a->partner_id, sizeof a->partner_id, "fuel");
    snprintf(a->data_dir, sizeof a->data_dir, "%s/agent-rogue", dir);
    snprintf(a->endpoint, sizeof a->endpoint, "ipc://%s/agent-rogue.sock", dir);
    snprintf(a->proc.log_path, sizeof a->proc.log_path, "%s/agent-rogue.log", dir);
    char wait_ms[16], retry_ms[16];
    snprintf(wait_ms, sizeof wait_ms, "%d", ROGUE_TILL_WAIT_MS);
    snprintf(retry_ms, sizeof retry_ms, "%d", ROGUE_RETRY_MS);
    char *argv[] = {COALITION_AGENT_BIN,
                    "--partner",
                    "fuel",
                    "--broker",
                    w->broker_endpoint,
                    "--data",
                    a->data_dir,
                    "--listen",
                    a->endpoint,
                    "--till-wait-ms",
                    wait_ms,
                    "--retry-ms",
                    retry_ms,
                    "--key",
                    (char *)key_path,
                    "--broker-key",
                    w->broker_pub,
                    NULL};
    a->proc.pid = harness_spawn(argv, a->proc.log_path);
    if (!harness_wait_reply(a->endpoint, HARNESS_READY_TIMEOUT_MS))
        fail_msg("agent with an unknown key: expected its till socket up within %d ms (log %s)",
                 HARNESS_READY_TIMEOUT_MS, a->proc.log_path);
    return a;
}

static void test_agent_with_unknown_key_tells_tills(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char key_path[HARNESS_PATH_BYTES + 32], out[OUT_BYTES];
    snprintf(key_path, sizeof key_path, "%s/rogue.key", w->dir);
    key_pair_t key;
    unknown_key(&key);
    EXPECT_EQ("keys_write_secret", CL_OK, keys_write_secret(key_path, &key, "rogue"));
    snapshot_t before;
    take_snapshot(w, &before);
    agent_proc_t *a = start_rogue_agent(w, key_path);
    expect_log("agent log", a->proc.log_path, "ERROR the broker REFUSED this agent's key");

    int rc = world_pos(w, a, out, sizeof out, "earn", "--member", "alice", "--amount", "12.34",
                       "--txn", "rogue-e1", NULL);
    if (rc != 3)
        fail_msg("coalition-pos earn through the refused agent: expected exit 3, got %d: %s", rc,
                 out);
    EXPECT_CONTAINS("coalition-pos earn", "\"offline\":true", out);
    EXPECT_CONTAINS("coalition-pos earn",
                    "Stored offline: the clearinghouse refused this agent's key", out);

    cpos_t *pos = cpos_new(a->endpoint, "till-1");
    assert_non_null(pos);
    cpos_result_t res;
    rc = cpos_burn(pos, "rogue-b1", "alice", 1, false, &res);
    cpos_destroy(&pos);
    EXPECT_EQ("cpos_burn through the refused agent: call", CPOS_OK, rc);
    EXPECT_EQ("cpos_burn: code", RC_UNAVAILABLE, res.code);
    EXPECT_EQ("cpos_burn: approved", false, res.approved);
    EXPECT_EQ("cpos_burn: offline", false, res.offline);
    EXPECT_CONTAINS("cpos_burn: text", "Declined 91: the clearinghouse refused this agent's key",
                    res.text);
    expect_log("broker log", w->broker.log_path, "unknown key (400)");
    EXPECT_EQ("the agent stops cleanly", 0, world_stop_agent(w, a, SIGTERM));
    expect_unchanged("requests through an agent with an unknown key", w, &before);
    expect_verify(w);
}

/* The agent's key is revoked while it runs (its connection stays up): an earn is told
 * "stored offline" and a burn 91, nothing is applied; with a new key and a restart the
 * stored earn is delivered exactly once and the burn never applied. What the tills were
 * told is what the ledger ends up holding. */
static void test_agent_key_revoked_then_reissued(void **state)
{
    fixture_t *f = *state;
    world_t *w = &f->world;
    char out[OUT_BYTES];
    w->till_wait_ms = 1500;
    agent_proc_t *a = world_start_agent(w, "fuel");
    int rc = world_pos(w, a, out, sizeof out, "earn", "--member", "alice", "--amount", "1.00",
                       "--txn", "rk-e0", NULL);
    EXPECT_EQ("earn before the revocation", 0, rc);
    int64_t alice = balance_of(w, "member:alice");
    const char *key_path = world_key(w, "fuel", "partner");
    ctl_ok("key revoke", world_ctl(w, out, sizeof out, "key", "revoke", key_path, NULL), out);
    rc = world_pos(w, a, out, sizeof out, "earn", "--member", "alice", "--amount", "5.00", "--txn",
                   "rk-e1", NULL);
    if (rc != 3)
        fail_msg("earn with the revoked key: expected exit 3 (stored offline), got %d: %s", rc,
                 out);
    EXPECT_CONTAINS("earn with the revoked key", "refused this agent's key", out);
    rc = world_pos(w, a, out, sizeof out, "burn", "--member", "alice", "--points", "1", "--txn",
                   "rk-b1", NULL);
    EXPECT_EQ("burn with the revoked key: declined", 1, rc);
    EXPECT_CONTAINS("burn with the revoked key", "\"code\":\"91\"", out);
    expect_log("agent log", a->proc.log_path, "This agent's key is revoked or not recorded");
    EXPECT_EQ("nothing applied while revoked", alice, balance_of(w, "member:alice"));
    /* The operator issues a new key in the same place; the agent restarts with it. */
    EXPECT_EQ("remove the revoked key file", 0, unlink(key_path));
    world_key(w, "fuel", "partner");
    world_restart_agent(w, a);
    int64_t want = alice + 10; /* rk-e1: 5.00 EUR at 2 points; rk-b1 never applied */
    for (int i = 0; i < 100 && balance_of(w, "member:alice") != want; i++)
        sleep_ms(100);
    EXPECT_EQ("the stored earn delivered once, the burn not applied", want,
              balance_of(w, "member:alice"));
    rc = world_pos(w, a, out, sizeof out, "earn", "--member", "alice", "--amount", "5.00", "--txn",
                   "rk-e1", NULL);
    EXPECT_EQ("a repeat of the stored earn", 0, rc);
    EXPECT_CONTAINS("a repeat of the stored earn", "\"replay\":true", out);
    EXPECT_EQ("still once", want, balance_of(w, "member:alice"));
    EXPECT_EQ("the agent stops cleanly", 0, world_stop_agent(w, a, SIGTERM));
    expect_verify(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_setup_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_gets_no_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_or_wrong_server_key_gets_no_reply, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_refusals_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoked_key_cut_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_racing_a_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partner_cannot_act_as_another, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partner_cannot_send_operator_requests, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reversal_cannot_reach_another_partners_txn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bank_key_may_do_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_altered_replay_is_94, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_max_amount, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_max_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_burn_velocity_across_partners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_request_rate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files_owner_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_refuses_unsafe_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_refuses_unsafe_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_insecure_loopback_check_reads_the_bound_address,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_insecure_loopback_check_reads_the_broker_address,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_with_unknown_key_tells_tills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_key_revoked_then_reissued, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
