/* Unit tests for common/log's rate limiter: log_every prints the first line of a burst,
 * counts the rest, and says how many it suppressed when it prints again. stderr is
 * captured into a temp file; "time passing" is the state's deadline moved back, so
 * nothing sleeps. */
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
#include <unistd.h>

#define CAPTURE_TEMPLATE "/tmp/test_log.XXXXXX"
#define CAPTURE_BYTES 4096
#define HOUR_MS (3600 * 1000)
#define BURST 5

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
}

static size_t count_of(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void burst_prints_once_then_reports_what_it_suppressed(void **state)
{
    (void)state;
    log_init("test-log", LOG_INFO);
    log_every_t every = LOG_EVERY_INIT;
    capture_t c;
    capture_begin(&c);
    for (int i = 1; i <= BURST; i++)
        log_every(&every, HOUR_MS, LOG_WARN, "disk full on write %d", i);
    uint64_t counted = every.suppressed;
    every.next_ms = 0; /* the interval has passed */
    log_every(&every, HOUR_MS, LOG_WARN, "disk full on write %d", BURST + 1);
    log_every(&every, HOUR_MS, LOG_WARN, "disk full on write %d", BURST + 2);
    capture_end(&c);
    EXPECT_EQ("lines counted while suppressed", BURST - 1, counted);
    EXPECT_EQ("lines printed", 2, count_of(c.text, "\n"));
    EXPECT_EQ("the first line, as is", 1,
              count_of(c.text, " test-log WARN disk full on write 1\n"));
    EXPECT_EQ("the next line after the interval, with the count", 1,
              count_of(c.text, " test-log WARN disk full on write 6 (4 similar suppressed)\n"));
    EXPECT_EQ("suppressed lines never printed", 0, count_of(c.text, "write 2"));
    EXPECT_EQ("count restarts after printing", 1, every.suppressed);
}

static void lines_below_the_level_are_not_counted(void **state)
{
    (void)state;
    log_init("test-log", LOG_WARN);
    log_every_t every = LOG_EVERY_INIT;
    capture_t c;
    capture_begin(&c);
    log_every(&every, HOUR_MS, LOG_INFO, "chatty %d", 1);
    log_every(&every, HOUR_MS, LOG_INFO, "chatty %d", 2);
    log_every(&every, HOUR_MS, LOG_ERROR, "real %d", 3);
    capture_end(&c);
    EXPECT_EQ("lines printed", 1, count_of(c.text, "\n"));
    EXPECT_EQ("the error, with no suppression note", 1, count_of(c.text, " ERROR real 3\n"));
    EXPECT_EQ("nothing counted", 0, every.suppressed);
}

static void long_message_keeps_its_suppression_note(void **state)
{
    (void)state;
    log_init("test-log", LOG_INFO);
    log_every_t every = LOG_EVERY_INIT;
    every.suppressed = 7;
    char big[2 * CAPTURE_BYTES];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    capture_t c;
    capture_begin(&c);
    log_every(&every, HOUR_MS, LOG_WARN, "%s", big);
    capture_end(&c);
    EXPECT_EQ("one line", 1, count_of(c.text, "\n"));
    EXPECT_EQ("cut message ends with the note", 1, count_of(c.text, "x (7 similar suppressed)\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_prints_once_then_reports_what_it_suppressed),
        cmocka_unit_test(lines_below_the_level_are_not_counted),
        cmocka_unit_test(long_message_keeps_its_suppression_note),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
