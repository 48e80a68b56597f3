/* The broker's and the agent's settings from files and the environment, as the real
 * programs take them: a broker that starts from a file alone, --print-config naming
 * where every value came from, and every kind of mistake refused with exit 2 and a
 * message naming the file and line (or the environment variable), before anything is
 * opened or bound. The parsing itself is unit-tested in test_config. */
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_BYTES 8192
#define CMD_BYTES 2048

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        fail_msg("cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* Run `cmd` with sh, standard error with standard output; its exit status. */
static int sh(const char *cmd, char *out, size_t size)
{
    char full[CMD_BYTES + 16];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    char *argv[] = {"/bin/sh", "-c", full, NULL};
    return harness_run(argv, out, size);
}

static void expect_refused(const char *cmd, const char *want)
{
    char out[OUT_BYTES];
    int rc = sh(cmd, out, sizeof out);
    if (rc != 2 || strstr(out, want) == NULL)
        fail_msg("%s\nexited %d, wanted 2 and '%s' in:\n%s", cmd, rc, want, out);
}

static void test_mistakes_refused_naming_file_and_line(void **state)
{
    (void)state;
    world_t w = {0};
    world_init(&w);
    char ini[HARNESS_PATH_BYTES + 16], cmd[CMD_BYTES], want[CMD_BYTES];
    snprintf(ini, sizeof ini, "%s/c.ini", w.dir);
    struct {
        const char *program, *text, *want;
    } cases[] = {
        {COALITION_BROKER_BIN, "[broker]\nexpire-at = 25:00\n", "c.ini:2: expire-at is HH:MM"},
        {COALITION_BROKER_BIN, "\n\nmax-connections = 0\n", "c.ini:3: max-connections must be"},
        {COALITION_BROKER_BIN, "memory-max-mb = lots\n", "c.ini:1: memory-max-mb must be"},
        {COALITION_BROKER_BIN, "log-level = chatty\n", "c.ini:1: log-level is debug"},
        {COALITION_BROKER_BIN, "[broker]\nlegder = x\n", "c.ini:2: unknown setting 'legder'"},
        {COALITION_BROKER_BIN, "[agent]\npartner = x\n", "c.ini:2: unknown section [agent]"},
        {COALITION_BROKER_BIN, "insecure = maybe\n", "c.ini:1: insecure takes true or false"},
        {COALITION_BROKER_BIN, "bind = a\nbind = b\n", "c.ini:2: bind is set twice"},
        {COALITION_BROKER_BIN, "a line without an equals sign\n", "c.ini:1: expected"},
        {COALITION_AGENT_BIN, "[agent]\npartner = p\nwindow = 0\n", "c.ini:3: window must be"},
        {COALITION_AGENT_BIN, "till-wait-ms = 1.5\n", "c.ini:1: till-wait-ms must be"},
        {COALITION_AGENT_BIN, "journal = true\n", "c.ini:1: unknown setting 'journal'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(ini, cases[i].text);
        snprintf(cmd, sizeof cmd, "%s --config %s --ledger %s/none", cases[i].program, ini, w.dir);
        if (cases[i].program == (const char *)COALITION_AGENT_BIN)
            snprintf(cmd, sizeof cmd, "%s --config %s --data %s/none export", cases[i].program, ini,
                     w.dir);
        if (cases[i].want[0] != '\0')
            expect_refused(cmd, cases[i].want);
    }
    snprintf(cmd, sizeof cmd, "%s --config %s/missing.ini", COALITION_BROKER_BIN, w.dir);
    snprintf(want, sizeof want, "cannot read the configuration file %s/missing.ini", w.dir);
    expect_refused(cmd, want);
    snprintf(cmd, sizeof cmd, "COALITION_BROKER_EXPIRE_AT=7pm %s --ledger %s/none",
             COALITION_BROKER_BIN, w.dir);
    expect_refused(cmd, "environment COALITION_BROKER_EXPIRE_AT: expire-at is HH:MM");
    snprintf(cmd, sizeof cmd, "COALITION_AGENT_PARTNR=x %s --partner x", COALITION_AGENT_BIN);
    expect_refused(cmd, "environment COALITION_AGENT_PARTNR: unknown setting 'partnr'");
    snprintf(cmd, sizeof cmd, "%s --expire-at 99:99", COALITION_BROKER_BIN);
    expect_refused(cmd, "expire-at is HH:MM (UTC) or off, not '99:99'");
    /* Nothing was made: a refused start opens no ledger and writes no file. */
    struct stat st;
    char none[HARNESS_PATH_BYTES + 8];
    snprintf(none, sizeof none, "%s/none", w.dir);
    EXPECT_TRUE("no ledger directory made", stat(none, &st) != 0);
    world_destroy(&w);
}

static void expect_source(const char *out, const char *line_start, const char *source)
{
    const char *at = strstr(out, line_start);
    if (at == NULL)
        fail_msg("no '%s' in\n%s", line_start, out);
    const char *semi = strchr(at, ';'), *eol = strchr(at, '\n');
    if (semi == NULL || (eol != NULL && semi > eol) || strncmp(semi + 2, source, strlen(source)))
        fail_msg("'%s' should come from '%s' in\n%s", line_start, source, out);
}

static void test_broker_from_a_file_and_print_config(void **state)
{
    (void)state;
    world_t w = {0};
    world_init(&w);
    char ini[HARNESS_PATH_BYTES + 16], text[2048], cmd[CMD_BYTES], out[OUT_BYTES];
    snprintf(ini, sizeof ini, "%s/broker.ini", w.dir);
    snprintf(text, sizeof text,
             "; the broker's settings\n[broker]\nledger = %s\nbind = %s\ninsecure = true\n"
             "expire-at = off\nlog-level = warn\n",
             w.ledger, w.broker_endpoint);
    write_text(ini, text);
    snprintf(cmd, sizeof cmd, "COALITION_BROKER_LOG_LEVEL=info %s --config %s --print-config",
             COALITION_BROKER_BIN, ini);
    EXPECT_EQ("--print-config exits 0", 0, sh(cmd, out, sizeof out));
    char where[HARNESS_PATH_BYTES + 32];
    snprintf(where, sizeof where, "%s:3", ini);
    expect_source(out, "ledger = ", where);
    snprintf(where, sizeof where, "%s:5", ini);
    expect_source(out, "insecure = true", where);
    expect_source(out, "log-level = info", "environment COALITION_BROKER_LOG_LEVEL");
    expect_source(out, "memory-max-mb = 1024", "default");
    snprintf(cmd, sizeof cmd, "%s --config %s --print-config --log-level error",
             COALITION_BROKER_BIN, ini);
    EXPECT_EQ("--print-config exits 0", 0, sh(cmd, out, sizeof out));
    expect_source(out, "log-level = error", "command line");
    /* --print-config's text read back is the same settings: the defaults that derive
     * from another setting (LEDGER/...) stay defaults, not literal paths. */
    char again[HARNESS_PATH_BYTES + 16];
    snprintf(again, sizeof again, "%s/again.ini", w.dir);
    snprintf(cmd, sizeof cmd, "%s --config %s --print-config > %s", COALITION_BROKER_BIN, ini,
             again);
    EXPECT_EQ("--print-config into a file", 0, sh(cmd, out, sizeof out));
    snprintf(cmd, sizeof cmd, "%s --config %s --print-config", COALITION_BROKER_BIN, again);
    EXPECT_EQ("its text read back", 0, sh(cmd, out, sizeof out));
    expect_source(out, "admin = ipc://LEDGER/admin.sock", "default");
    expect_source(out, "card-key = LEDGER.card.key", "default");
    snprintf(where, sizeof where, "%s:", again);
    expect_source(out, "insecure = true", where);
    snprintf(cmd, sizeof cmd,
             "%s --partner fuel --print-config > %s && %s --config %s "
             "--print-config",
             COALITION_AGENT_BIN, again, COALITION_AGENT_BIN, again);
    EXPECT_EQ("the agent's text read back", 0, sh(cmd, out, sizeof out));
    expect_source(out, "listen = ipc://DATA/", "default");
    /* The file alone brings a broker up: it answers on the file's bind address. */
    char *argv[] = {COALITION_BROKER_BIN, "--config", ini, NULL};
    w.broker.pid = harness_spawn(argv, w.broker.log_path);
    EXPECT_TRUE("a broker from the file answers", harness_wait_reply(w.broker_endpoint, 10000));
    EXPECT_EQ("it stops cleanly", 0, world_stop_broker(&w, SIGTERM));
    world_destroy(&w);
}

/* The example files deploy/install installs are what the programs take. */
static void test_example_files_are_valid(void **state)
{
    (void)state;
    char cmd[CMD_BYTES], out[OUT_BYTES];
    snprintf(cmd, sizeof cmd, "%s --config %s/deploy/config/broker.ini --print-config",
             COALITION_BROKER_BIN, COALITION_SOURCE_DIR);
    EXPECT_EQ("broker.ini", 0, sh(cmd, out, sizeof out));
    expect_source(out, "ledger = /var/lib/coalition/ledger", "/");
    snprintf(cmd, sizeof cmd, "%s --config %s/deploy/config/agent.ini --print-config",
             COALITION_AGENT_BIN, COALITION_SOURCE_DIR);
    EXPECT_EQ("agent.ini", 0, sh(cmd, out, sizeof out));
    expect_source(out, "http = 127.0.0.1:8080", "/");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mistakes_refused_naming_file_and_line),
        cmocka_unit_test(test_broker_from_a_file_and_print_config),
        cmocka_unit_test(test_example_files_are_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
