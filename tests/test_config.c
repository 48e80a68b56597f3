/* common/config: settings from an INI file, the environment and the command line.
 * Every error path names where the bad setting is; the precedence is command line >
 * environment > file > default, shown through the argument vector a program parses and
 * through --print-config's text. */
#include "config.h"
#include "errors.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct option opts[] = {
    {"ledger", required_argument, NULL, 'l'}, {"bind", required_argument, NULL, 'b'},
    {"insecure", no_argument, NULL, 'I'},     {"journal", no_argument, NULL, 'j'},
    {"config", required_argument, NULL, 'c'}, {"print-config", no_argument, NULL, 'P'},
    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
static const char *const fixed[] = {"journal", NULL};
static const config_default_t defaults[] = {{"ledger", "ledger"}, {NULL, NULL}};

static char path[64];

static void write_file(const char *text)
{
    snprintf(path, sizeof path, "/tmp/test_config.%d.ini", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Load with `text` as the file (NULL: none) and argv after the program name. */
static int load(const char *text, config_t **cfg, char *why, size_t size, int argc, ...)
{
    char *argv[16] = {"prog"};
    int n = 1;
    if (text != NULL) {
        write_file(text);
        argv[n++] = "--config";
        argv[n++] = path;
    }
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[n++] = va_arg(ap, char *);
    va_end(ap);
    argv[n] = NULL;
    return config_load(cfg, "broker", opts, fixed, n, argv, why, size);
}

static void expect_error(const char *text, const char *want)
{
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX];
    int rc = load(text, &cfg, why, sizeof why, 0);
    assert_int_equal(rc, CL_ERR_INVALID);
    assert_null(cfg);
    char full[CONFIG_WHY_BYTES_MAX + 64];
    snprintf(full, sizeof full, "%s:%s", path, want);
    if (strstr(why, full) == NULL)
        fail_msg("wanted '%s' in '%s'", full, why);
}

static void test_file_errors_name_file_and_line(void **state)
{
    (void)state;
    expect_error("[broker]\nledgr = x\n", "2: unknown setting 'ledgr'");
    expect_error("; a comment\n\n[agent]\nledger = x\n", "4: unknown section [agent]");
    expect_error("[broker]\nledger = a\nbind = b\n\nnonsense\n", "5: expected 'key = value'");
    expect_error("insecure = perhaps\n", "1: insecure takes true or false, not 'perhaps'");
    expect_error("[broker]\nbind =\n", "2: bind needs a value");
    expect_error("ledger = \"/var/lib/coalition\"\n", "1: ledger: quotes are taken literally");
    expect_error("ledger = '/var/lib/coalition'\n", "1: ledger: quotes are taken literally");
    expect_error("ledger = a\n\nledger = b\n", "3: ledger is set twice (also at");
    expect_error("insecure = true\ninsecure = false\n", "2: insecure is set twice (also at");
    expect_error("insecure = off\ninsecure = on\n", "2: insecure is set twice (also at");
    expect_error("journal = true\n", "1: unknown setting 'journal'");
    expect_error("help = true\n", "1: unknown setting 'help'");
    expect_error("config = other.ini\n", "1: unknown setting 'config'");
    char longline[400];
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "ledger = ", 9);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = '\0';
    char text[600];
    snprintf(text, sizeof text, "bind = a\n%s", longline);
    expect_error(text, "2: line longer than");
    unlink(path);
}

static void test_unreadable_file(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX];
    char *argv[] = {"prog", "--config=/nonexistent/broker.ini", NULL};
    assert_int_equal(config_load(&cfg, "broker", opts, fixed, 2, argv, why, sizeof why), CL_ERR_IO);
    assert_non_null(strstr(why, "/nonexistent/broker.ini"));
    /* A directory opens, but reads fail: not an empty file of no settings. */
    char *dir_argv[] = {"prog", "--config", "/tmp/", NULL};
    assert_int_equal(config_load(&cfg, "broker", opts, fixed, 3, dir_argv, why, sizeof why),
                     CL_ERR_IO);
    assert_null(cfg);
    if (strstr(why, "cannot read the configuration file /tmp/") == NULL)
        fail_msg("why: %s", why);
}

static void test_environment_errors(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX];
    setenv("COALITION_BROKER_BIDN", "x", 1);
    assert_int_equal(load(NULL, &cfg, why, sizeof why, 0), CL_ERR_INVALID);
    assert_non_null(strstr(why, "environment COALITION_BROKER_BIDN: unknown setting 'bidn'"));
    unsetenv("COALITION_BROKER_BIDN");
    setenv("COALITION_BROKER_INSECURE", "maybe", 1);
    assert_int_equal(load(NULL, &cfg, why, sizeof why, 0), CL_ERR_INVALID);
    assert_non_null(strstr(why, "environment COALITION_BROKER_INSECURE: insecure takes"));
    unsetenv("COALITION_BROKER_INSECURE");
    setenv("COALITION_BROKER_JOURNAL", "1", 1);
    assert_int_equal(load(NULL, &cfg, why, sizeof why, 0), CL_ERR_INVALID);
    unsetenv("COALITION_BROKER_JOURNAL");
    assert_null(cfg);
}

static const char *print(config_t *cfg, char *buf, size_t size)
{
    FILE *f = fmemopen(buf, size, "w");
    assert_non_null(f);
    config_print(cfg, defaults, f);
    fclose(f);
    return buf;
}

static void expect_line(const char *text, const char *key_value, const char *source)
{
    const char *at = strstr(text, key_value);
    if (at == NULL)
        fail_msg("no '%s' in\n%s", key_value, text);
    const char *eol = strchr(at, '\n');
    const char *semi = strchr(at, ';');
    assert_non_null(semi);
    assert_true(eol == NULL || semi < eol);
    if (strncmp(semi + 2, source, strlen(source)) != 0)
        fail_msg("'%s' should come from '%s':\n%s", key_value, source, text);
}

static void test_precedence(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX], out[2048], where[96];
    /* ledger: file only; bind: file, then environment, then command line. */
    setenv("COALITION_BROKER_BIND", "env-bind", 1);
    assert_int_equal(load("[broker]\nledger = file-ledger\nbind = file-bind\ninsecure = yes\n",
                          &cfg, why, sizeof why, 2, "--bind", "cmd-bind"),
                     CL_OK);
    unsetenv("COALITION_BROKER_BIND");
    char **argv = config_argv(cfg);
    int argc = config_argc(cfg);
    /* prog, 3 from the file, 1 from the environment, the command line's 4. */
    assert_int_equal(argc, 1 + 3 + 1 + 4);
    assert_null(argv[argc]);
    assert_string_equal(argv[1], "--ledger=file-ledger");
    assert_string_equal(argv[4], "--bind=env-bind");
    assert_string_equal(config_source(cfg, 4), "environment COALITION_BROKER_BIND");
    assert_string_equal(config_source(cfg, argc - 1), "command line");
    snprintf(where, sizeof where, "%s:2: ", path);
    assert_string_equal(config_blame(cfg, 2), where);
    assert_string_equal(config_blame(cfg, argc), "");
    print(cfg, out, sizeof out);
    snprintf(where, sizeof where, "%s:2", path);
    expect_line(out, "ledger = file-ledger", where);
    expect_line(out, "bind = cmd-bind", "command line");
    snprintf(where, sizeof where, "%s:4", path);
    expect_line(out, "insecure = true", where);
    assert_null(strstr(out, "journal"));
    config_destroy(&cfg);
    /* Nothing set: the defaults; a flag set false in the file adds no argument. */
    assert_int_equal(load("insecure = off\n", &cfg, why, sizeof why, 0), CL_OK);
    assert_int_equal(config_argc(cfg), 3); /* prog --config FILE */
    print(cfg, out, sizeof out);
    expect_line(out, "ledger = ledger", "default");
    snprintf(where, sizeof where, "%s:1", path);
    expect_line(out, "insecure = false", where); /* where false came from */
    config_destroy(&cfg);
    unlink(path);
}

static void test_config_file_from_environment(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX], out[2048];
    write_file("bind = from-env-file\n");
    setenv("COALITION_BROKER_CONFIG", path, 1);
    assert_int_equal(load(NULL, &cfg, why, sizeof why, 1, "-lshort-ledger"), CL_OK);
    unsetenv("COALITION_BROKER_CONFIG");
    print(cfg, out, sizeof out);
    expect_line(out, "bind = from-env-file", path);
    expect_line(out, "ledger = short-ledger", "command line");
    config_destroy(&cfg);
    unlink(path);
}

/* A flag set false overrides a lower source's true: the environment's false wins over
 * the file's true, and --print-config says so. */
static void test_flag_false_overrides_lower_source(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX], out[2048];
    setenv("COALITION_BROKER_INSECURE", "false", 1);
    assert_int_equal(load("insecure = true\n", &cfg, why, sizeof why, 0), CL_OK);
    unsetenv("COALITION_BROKER_INSECURE");
    char **argv = config_argv(cfg);
    for (int i = 0; i < config_argc(cfg); i++)
        if (strcmp(argv[i], "--insecure") == 0)
            fail_msg("the file's insecure = true survived the environment's false");
    print(cfg, out, sizeof out);
    expect_line(out, "insecure = false", "environment COALITION_BROKER_INSECURE");
    config_destroy(&cfg);
    unlink(path);
}

/* getopt_long takes an unambiguous abbreviation (--conf for --config): the file it
 * names is read, and --print-config credits an abbreviated option to the command line. */
static void test_abbreviated_options(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX], out[2048];
    write_file("bind = from-file\n");
    assert_int_equal(load(NULL, &cfg, why, sizeof why, 4, "--conf", path, "--led", "cmd-ledger"),
                     CL_OK);
    print(cfg, out, sizeof out);
    expect_line(out, "bind = from-file", path);
    expect_line(out, "ledger = cmd-ledger", "command line");
    config_destroy(&cfg);
    assert_int_equal(load(NULL, &cfg, why, sizeof why, 1, "--conf=/nonexistent/x.ini"), CL_ERR_IO);
    unlink(path);
}

/* --config given twice: which file was meant? Refused, naming both. */
static void test_config_twice_refused(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX];
    write_file("bind = b\n");
    assert_int_equal(load(NULL, &cfg, why, sizeof why, 3, "--config", path, "--config=other.ini"),
                     CL_ERR_INVALID);
    assert_null(cfg);
    assert_non_null(strstr(why, "--config given twice"));
    assert_non_null(strstr(why, "other.ini"));
    unlink(path);
}

/* A NUL byte in a line would cut its value short unseen (ledger = a\0b read as "a"):
 * refused, with or without the line's newline; and the longest line inih takes is
 * taken whole, one more character is refused. */
static void test_nul_bytes_and_line_length(void **state)
{
    (void)state;
    static const char with_nl[] = "[broker]\nledger = a\0b\nbind = c\n";
    static const char last[] = "[broker]\nledger = a\0b";
    const struct {
        const char *bytes;
        size_t len;
    } files[] = {{with_nl, sizeof with_nl - 1}, {last, sizeof last - 1}};
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX], text[512];
    for (size_t i = 0; i < 2; i++) {
        write_file("");
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(fwrite(files[i].bytes, 1, files[i].len, f), files[i].len);
        fclose(f);
        char *argv[] = {"prog", "--config", path, NULL};
        assert_int_equal(config_load(&cfg, "broker", opts, fixed, 3, argv, why, sizeof why),
                         CL_ERR_INVALID);
        if (strstr(why, ":2: a NUL byte in the line") == NULL)
            fail_msg("file %zu: %s", i, why);
    }
    /* 198 characters and the newline: inih's 200-byte line (INI_MAX_LINE) holds it. */
    int n = snprintf(text, sizeof text, "ledger = ");
    memset(text + n, 'x', 198 - (size_t)n);
    snprintf(text + 198, sizeof text - 198, "\n");
    assert_int_equal(load(text, &cfg, why, sizeof why, 0), CL_OK);
    assert_int_equal(strlen(config_argv(cfg)[1]), strlen("--ledger=") + 198 - (size_t)n);
    config_destroy(&cfg);
    snprintf(text + 198, sizeof text - 198, "y\n");
    expect_error(text, "1: line longer than 198 characters");
    unlink(path);
}

/* Keys indented under their section, a common INI style: inih would read the second
 * indented line as the first one's value continued ("ledger is set twice"). */
static void test_indented_keys(void **state)
{
    (void)state;
    config_t *cfg = NULL;
    char why[CONFIG_WHY_BYTES_MAX];
    int rc = load("[broker]\n    ledger = a\n\tbind = b\n    insecure = true\n", &cfg, why,
                  sizeof why, 0);
    if (rc != CL_OK)
        fail_msg("indented keys refused: %s", why);
    char **argv = config_argv(cfg);
    assert_string_equal(argv[1], "--ledger=a");
    assert_string_equal(argv[2], "--bind=b");
    assert_string_equal(argv[3], "--insecure");
    config_destroy(&cfg);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_errors_name_file_and_line),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_environment_errors),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_config_file_from_environment),
        cmocka_unit_test(test_flag_false_overrides_lower_source),
        cmocka_unit_test(test_abbreviated_options),
        cmocka_unit_test(test_config_twice_refused),
        cmocka_unit_test(test_nul_bytes_and_line_length),
        cmocka_unit_test(test_indented_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
