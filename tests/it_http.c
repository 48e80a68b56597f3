/* The agent's HTTP/JSON API driven by a real HTTP client: Python's standard library
 * (tests/http_api_check.py) runs a whole checkout flow against a real agent and broker,
 * retries with the same key (also eight at once), bad JSON, wrong types, unknown and
 * missing fields, oversized bodies (400, nothing stored: the ledger's next sequence
 * proves it), the broker stopped (202 stored offline, 503 for a burn), and checks every
 * reply against partner-agent/openapi.json. This side then compares what the client was
 * told with the ledger itself and runs `coalitionctl verify`. */
#include "harness.h"

#include "errors.h"
#include "ledger.h"
#include "wire.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_BYTES 8192
#define MEMBER "alice"

static int64_t json_int(const char *text, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(text, pattern);
    if (at == NULL)
        fail_msg("no %s in %s", key, text);
    return strtoll(at + strlen(pattern), NULL, 10);
}

static void json_str(const char *text, const char *key, char *out, size_t size)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *at = strstr(text, pattern);
    if (at == NULL)
        fail_msg("no %s in %s", key, text);
    at += strlen(pattern);
    const char *end = strchr(at, '"');
    if (end == NULL || (size_t)(end - at) >= size)
        fail_msg("bad %s in %s", key, text);
    memcpy(out, at, (size_t)(end - at));
    out[end - at] = '\0';
}

/* The last thing the client was told of is the stored earn's delivery. After it, the
 * ledger may hold only the burn its till was told failed (91) while the broker was
 * stopped, if it reached the broker, and then the agent's void of it: nothing else. */
static void expect_only_the_revoked_burn_after(world_t *w, uint64_t told_seq, const char *burn)
{
    ledger_t *ledger = NULL;
    EXPECT_EQ("open the ledger", CL_OK, ledger_open(&ledger, w->ledger, STORE_READ_ONLY));
    uint64_t last = ledger_last_seq(ledger);
    journal_entry_t *entries[4];
    size_t count = 0;
    EXPECT_EQ("read the journal", CL_OK,
              ledger_journal_slice(ledger, told_seq + 1, entries, 4, &count));
    EXPECT_EQ("entries after the client's last", last - told_seq, (uint64_t)count);
    bool burned = false, voided = false;
    for (size_t i = 0; i < count; i++) {
        const journal_entry_t *e = entries[i];
        burned |= e->kind == COALITION__ENTRY_KIND__ENTRY_BURN && strcmp(e->txn_id, burn) == 0;
        voided |= e->kind == COALITION__ENTRY_KIND__ENTRY_VOID_BURN &&
                  strcmp(e->original_txn_id, burn) == 0 && wire_agent_txn(e->txn_id);
        if (!burned && !voided)
            fail_msg("entry %" PRIu64 " after the client's last (%" PRIu64 ") is kind %d txn %s",
                     e->seq, told_seq, (int)e->kind, e->txn_id);
    }
    EXPECT_TRUE("a burn that reached the ledger was voided", burned == voided);
    ledger_journal_slice_free(entries, count);
    ledger_destroy(&ledger);
}

/* Every line of the agent's log is one of its own (time, program, level), whatever the
 * HTTP clients did: libmicrohttpd's own complaints about them included. */
static void expect_log_lines_formatted(const char *log_path)
{
    FILE *f = fopen(log_path, "r");
    if (f == NULL)
        fail_msg("cannot read %s", log_path);
    char line[OUT_BYTES];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        n++;
        if (line[0] != '2' || strstr(line, "Z coalition-agent ") == NULL)
            fail_msg("%s:%d is not a log line of the agent's: %s", log_path, n, line);
    }
    fclose(f);
    EXPECT_TRUE("the agent logged", n > 0);
}

/* A fresh world per test, stopped and removed by the teardown even when a test fails
 * (nothing is left running behind a failed check). */
static proc_t extra; /* a process a test starts outside the world */

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    world_init(w);
    memset(&extra, 0, sizeof extra);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    if (extra.pid != 0)
        harness_stop(&extra, SIGKILL);
    world_destroy(w);
    free(w);
    return 0;
}

static void test_http_checkout_flow(void **state)
{
    world_t *w = *state;
    char port[16], address[64], base[96], broker_pid[16], out[OUT_BYTES];
    snprintf(port, sizeof port, "%d", harness_free_port());
    snprintf(base, sizeof base, "http://127.0.0.1:%s", port);
    snprintf(address, sizeof address, "127.0.0.1:%s", port);
    w->agent_args[0] = "--http";
    w->agent_args[1] = address;
    world_start_broker(w);
    int rc = world_ctl(w, out, sizeof out, "partner", "add", "fuel", "--earn-rate", "2",
                       "--currency", "EUR", NULL);
    EXPECT_EQ("partner add", 0, rc);
    rc = world_ctl(w, out, sizeof out, "member", "add", MEMBER, NULL);
    EXPECT_EQ("member add", 0, rc);
    world_start_agent(w, "fuel");
    snprintf(broker_pid, sizeof broker_pid, "%d", (int)w->broker.pid);
    char pos_json[OUT_BYTES];
    rc = world_pos(w, &w->agents[0], pos_json, sizeof pos_json, "--json", "balance", "--member",
                   MEMBER, NULL);
    EXPECT_EQ("coalition-pos --json balance", 0, rc);
    pos_json[strcspn(pos_json, "\n")] = '\0';
    char *argv[] = {"/usr/bin/env",
                    "python3",
                    COALITION_SOURCE_DIR "/tests/http_api_check.py",
                    "--base",
                    base,
                    "--spec",
                    COALITION_SOURCE_DIR "/partner-agent/openapi.json",
                    "--member",
                    MEMBER,
                    "--broker-pid",
                    broker_pid,
                    "--pos-json",
                    pos_json,
                    NULL};
    rc = harness_run(argv, out, sizeof out);
    if (rc != 0)
        fail_msg("http_api_check.py exited %d (its stderr is above): %s", rc, out);
    expect_log_lines_formatted(w->agents[0].proc.log_path);
    int64_t told_balance = json_int(out, "balance");
    uint64_t told_seq = (uint64_t)json_int(out, "last_seq");
    char bal[OUT_BYTES];
    rc = world_ctl(w, bal, sizeof bal, "--json", "balance", MEMBER, NULL);
    EXPECT_EQ("coalitionctl balance", 0, rc);
    EXPECT_EQ("the ledger holds what the HTTP client was told", told_balance,
              json_int(bal, "balance"));
    char away_burn[TXN_ID_LEN_MAX + 1];
    json_str(out, "away_burn", away_burn, sizeof away_burn);
    expect_only_the_revoked_burn_after(w, told_seq, away_burn);
    rc = world_ctl(w, out, sizeof out, "verify", NULL);
    EXPECT_EQ("coalitionctl verify", 0, rc);
}

/* Tills on other machines: the agent listens on tcp://(any):PORT. The HTTP API, a till of
 * its own agent, must still reach it (it connected to "tcp://(any):PORT" with a star, which ZeroMQ
 * refuses, and answered every request 503 "out of memory"). */
static void test_http_beside_a_wildcard_till_socket(void **state)
{
    world_t *w = *state;
    world_start_broker(w);
    char out[OUT_BYTES];
    EXPECT_EQ("partner add", 0,
              world_ctl(w, out, sizeof out, "partner", "add", "fuel", "--earn-rate", "2",
                        "--currency", "EUR", NULL));
    EXPECT_EQ("member add", 0, world_ctl(w, out, sizeof out, "member", "add", MEMBER, NULL));
    int till_port = harness_free_port(), http_port = harness_free_port();
    while (http_port == till_port)
        http_port = harness_free_port();
    char listen[64], till[64], http[32], url[96], data[HARNESS_PATH_BYTES + 16];
    snprintf(listen, sizeof listen, "tcp://*:%d", till_port);
    snprintf(till, sizeof till, "tcp://127.0.0.1:%d", till_port);
    snprintf(http, sizeof http, "%d", http_port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/earn", http_port);
    snprintf(data, sizeof data, "%s/agent-any", w->dir);
    proc_t *agent = &extra;
    snprintf(agent->log_path, sizeof agent->log_path, "%s/agent-any.log", w->dir);
    char *argv[] = {COALITION_AGENT_BIN,
                    "--partner",
                    "fuel",
                    "--broker",
                    w->broker_endpoint,
                    "--data",
                    data,
                    "--listen",
                    listen,
                    "--key",
                    (char *)world_key(w, "fuel", "partner"),
                    "--broker-key",
                    w->broker_pub,
                    "--http",
                    http,
                    NULL};
    agent->pid = harness_spawn(argv, agent->log_path);
    EXPECT_TRUE("the agent answers on its tcp till socket",
                harness_wait_reply(till, HARNESS_READY_TIMEOUT_MS));
    char *post[] = {"/usr/bin/env",
                    "python3",
                    "-c",
                    "import sys, urllib.request, urllib.error\n"
                    "r = urllib.request.Request(sys.argv[1], method='POST', "
                    "data=b'{\"member\":\"" MEMBER "\",\"amount\":1000}', "
                    "headers={'Idempotency-Key': 'any-1'})\n"
                    "try:\n    f = urllib.request.urlopen(r, timeout=30)\n"
                    "except urllib.error.HTTPError as e:\n    f = e\n"
                    "print(f.status, f.read().decode())\n",
                    url,
                    NULL};
    EXPECT_EQ("python3 POST", 0, harness_run(post, out, sizeof out));
    if (strncmp(out, "200 ", 4) != 0 || strstr(out, "\"approved\":true") == NULL)
        fail_msg("an earn through the HTTP API beside tcp://*: %s", out);
    EXPECT_EQ("the agent stops", 0, harness_stop(agent, SIGTERM));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_http_checkout_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_beside_a_wildcard_till_socket, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
