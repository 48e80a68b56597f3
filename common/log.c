/* stderr logger; one write per line so lines from threads do not interleave. */
#include "log.h"

#include "clock.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_BYTES_MAX 1024
#define LOG_SUFFIX_BYTES_MAX 48

static const char *log_program = "coalition";
static log_level_t log_min_level = LOG_INFO;

void log_init(const char *program, log_level_t min_level)
{
    log_program = program;
    log_min_level = min_level;
}

/* Copy `text` into out[0..room-1] with every byte outside printable ASCII (a newline, a
 * control byte, anything non-ASCII a peer sent) written as \xNN, so one log line is
 * always one line and cannot be forged. Stops before an escape that would not fit.
 * Returns the bytes written, < room (no terminator is written). */
size_t log_escape(char *out, size_t room, const char *text)
{
    assert(out != NULL && room > 0 && text != NULL);
    static const char hex[] = "0123456789abcdef";
    size_t len = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        bool plain = *p >= 0x20 && *p < 0x7f && *p != '\\';
        size_t need = plain ? 1 : 4;
        if (len + need >= room)
            break;
        if (plain) {
            out[len++] = (char)*p;
        } else {
            out[len++] = '\\';
            out[len++] = 'x';
            out[len++] = hex[*p >> 4];
            out[len++] = hex[*p & 0xf];
        }
    }
    assert(len < room);
    return len;
}

/* One line: prefix, the formatted message, `suffix` (kept even when the message is cut). */
static void log_write(log_level_t level, const char *suffix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void log_write(log_level_t level, const char *suffix, const char *fmt, va_list ap)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char line[LOG_LINE_BYTES_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000L, log_program, names[level]);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    size_t suffix_len = strlen(suffix);
    assert(suffix_len < LOG_SUFFIX_BYTES_MAX);
    /* Room for the message: the rest of the line less the suffix and the newline. */
    size_t room = sizeof line - (size_t)n - suffix_len - 1;
    char message[LOG_LINE_BYTES_MAX];
    if (vsnprintf(message, sizeof message, fmt, ap) < 0)
        message[0] = '\0';
    size_t len = (size_t)n + log_escape(line + n, room, message);
    assert(len < sizeof line - suffix_len);
    memcpy(line + len, suffix, suffix_len);
    len += suffix_len;
    line[len++] = '\n';
    assert(len <= sizeof line);
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
}

void log_msg(log_level_t level, const char *fmt, ...)
{
    if (level < log_min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_write(level, "", fmt, ap);
    va_end(ap);
}

void log_every(log_every_t *state, int64_t interval_ms, log_level_t level, const char *fmt, ...)
{
    assert(state != NULL && interval_ms >= 0);
    if (level < log_min_level)
        return;
    int64_t now_ms = clock_mono_ms();
    if (now_ms < state->next_ms) {
        state->suppressed++;
        return;
    }
    char suffix[LOG_SUFFIX_BYTES_MAX] = "";
    if (state->suppressed > 0)
        snprintf(suffix, sizeof suffix, " (%" PRIu64 " similar suppressed)", state->suppressed);
    va_list ap;
    va_start(ap, fmt);
    log_write(level, suffix, fmt, ap);
    va_end(ap);
    state->suppressed = 0;
    state->next_ms = now_ms + interval_ms;
}
