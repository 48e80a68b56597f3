/* Unit tests for common/log under journald: when JOURNAL_STREAM names the file stderr
 * is (device:inode), each line is "<priority>message" with no time or program, one line
 * per event; a JOURNAL_STREAM naming another file, or garbage, keeps the plain format.
 * stderr is captured into a temp file whose device and inode the test puts in the
 * variable, as systemd does for the stream it connects. */
#include "log.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CAPTURE_TEMPLATE "/tmp/test_log_journal.XXXXXX"
#define CAPTURE_BYTES 4096
#define HOUR_MS (3600 * 1000)
#define STREAM_BYTES 64

typedef struct capture {
    char path[sizeof CAPTURE_TEMPLATE];
    int fd, saved_stderr;
    char text[CAPTURE_BYTES];
} capture_t;

static void capture_begin(capture_t *c)
{
    snprintf(c->path, sizeof c->path, "%s", CAPTURE_TEMPLATE);
    c->fd = mkstemp(c->path);
    assert_true(c->fd >= 0);
    c->saved_stderr = dup(STDERR_FILENO);
    assert_true(c->saved_stderr >= 0);
    assert_true(dup2(c->fd, STDERR_FILENO) == STDERR_FILENO);
}

static void capture_end(capture_t *c)
{
    assert_true(dup2(c->saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close(c->saved_stderr);
    ssize_t n = pread(c->fd, c->text, sizeof c->text - 1, 0);
    c->text[n > 0 ? n : 0] = '\0';
    close(c->fd);
    unlink(c->path);
    unsetenv("JOURNAL_STREAM");
}

/* JOURNAL_STREAM for the file behind `fd`, as systemd sets it for the unit's stderr. */
static void journal_stream_of(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char value[STREAM_BYTES];
    snprintf(value, sizeof value, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", value, 1);
}

static void journal_lines_carry_the_priority_and_no_time(void **state)
{
    (void)state;
    capture_t c = {0};
    capture_begin(&c);
    journal_stream_of(STDERR_FILENO);
    log_init("test-log", LOG_DEBUG);
    EXPECT_TRUE("journal format chosen", log_journal_format());
    log_debug("debug %d", 1);
    log_info("info %d", 2);
    log_warn("warn %d", 3);
    log_error("error %d", 4);
    capture_end(&c);
    EXPECT_STR("journal lines", "<7>debug 1\n<6>info 2\n<4>warn 3\n<3>error 4\n", c.text);
}

static void journal_line_stays_one_line(void **state)
{
    (void)state;
    capture_t c = {0};
    capture_begin(&c);
    journal_stream_of(STDERR_FILENO);
    log_init("test-log", LOG_INFO);
    log_error("partner said \"%s\"", "a\nb\r\n<3>forged");
    capture_end(&c);
    EXPECT_STR("escaped line", "<3>partner said \"a\\x0ab\\x0d\\x0a<3>forged\"\n", c.text);
}

static void journal_line_keeps_the_suppression_note(void **state)
{
    (void)state;
    capture_t c = {0};
    capture_begin(&c);
    journal_stream_of(STDERR_FILENO);
    log_init("test-log", LOG_INFO);
    log_every_t every = LOG_EVERY_INIT;
    every.suppressed = 3;
    log_every(&every, HOUR_MS, LOG_WARN, "disk full");
    log_every(&every, HOUR_MS, LOG_WARN, "disk full");
    capture_end(&c);
    EXPECT_STR("one line with the note", "<4>disk full (3 similar suppressed)\n", c.text);
}

/* stderr redirected by the user away from the journal: JOURNAL_STREAM names another file. */
static void another_stream_keeps_the_plain_format(void **state)
{
    (void)state;
    capture_t c = {0};
    capture_begin(&c);
    journal_stream_of(c.saved_stderr); /* the original stderr, not the capture file */
    struct stat a, b;
    assert_int_equal(fstat(c.saved_stderr, &a), 0);
    assert_int_equal(fstat(STDERR_FILENO, &b), 0);
    assert_false(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
    log_init("test-log", LOG_INFO);
    EXPECT_FALSE("journal format for another stream", log_journal_format());
    log_warn("plain %d", 1);
    capture_end(&c);
    EXPECT_CONTAINS("plain line", "Z test-log WARN plain 1\n", c.text);
    EXPECT_TRUE("starts with the year", c.text[0] == '2' && c.text[4] == '-');
}

static void malformed_stream_keeps_the_plain_format(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "12", "12:", ":34", "12:34x", "x:y"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        capture_t c = {0};
        capture_begin(&c);
        setenv("JOURNAL_STREAM", bad[i], 1);
        log_init("test-log", LOG_INFO);
        bool journal = log_journal_format();
        log_info("plain");
        capture_end(&c);
        if (journal)
            fail_msg("JOURNAL_STREAM=\"%s\": expected the plain format, got the journal's", bad[i]);
        EXPECT_CONTAINS("plain line", " test-log INFO plain\n", c.text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(journal_lines_carry_the_priority_and_no_time),
        cmocka_unit_test(journal_line_stays_one_line),
        cmocka_unit_test(journal_line_keeps_the_suppression_note),
        cmocka_unit_test(another_stream_keeps_the_plain_format),
        cmocka_unit_test(malformed_stream_keeps_the_plain_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
