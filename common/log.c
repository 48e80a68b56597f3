/* stderr logger; one write per line so lines from threads do not interleave. Under
 * journald (stderr is the stream JOURNAL_STREAM names, systemd.exec(5)) a line is
 * "<N>message" with N the syslog priority (sd-daemon(3)) and no time or program: the
 * journal records both itself. Otherwise "<iso time> <program> <LEVEL> message". */
#include "log.h"

#include "clock.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_BYTES_MAX 1024
#define LOG_SUFFIX_BYTES_MAX 48

static const char *log_program = "coalition";
static log_level_t log_min_level = LOG_INFO;
static bool log_to_journal = false;

/* True when stderr is the journal stream systemd connected: JOURNAL_STREAM holds its
 * "device:inode", and a stderr redirected elsewhere by the user no longer matches. */
static bool stderr_is_journal(void)
{
    const char *stream = getenv("JOURNAL_STREAM");
    unsigned long long dev = 0, ino = 0;
    char tail = 0;
    struct stat st;
    if (stream == NULL || sscanf(stream, "%llu:%llu%c", &dev, &ino, &tail) != 2)
        return false;
    if (fstat(STDERR_FILENO, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *program, log_level_t min_level)
{
    log_program = program;
    log_min_level = min_level;
    log_to_journal = stderr_is_journal();
}

bool log_journal_format(void) { return log_to_journal; }

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

/* The start of a line: the journal's priority, or the time, program and level. Returns
 * its length, or -1 if it does not fit. */
static int log_prefix(char *line, size_t size, log_level_t level)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *const priorities[] = {SD_DEBUG, SD_INFO, SD_WARNING, SD_ERR};
    _Static_assert(LOG_ERROR == 3 && sizeof names / sizeof names[0] == 4 &&
                       sizeof priorities / sizeof priorities[0] == 4,
                   "one name and one priority per level");
    assert(level >= LOG_DEBUG && level <= LOG_ERROR);
    int n;
    if (log_to_journal) {
        n = snprintf(line, size, "%s", priorities[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000L, log_program, names[level]);
    }
    return n < 0 || (size_t)n >= size ? -1 : n;
}

/* One line: prefix, the formatted message, `suffix` (kept even when the message is cut). */
static void log_write(log_level_t level, const char *suffix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void log_write(log_level_t level, const char *suffix, const char *fmt, va_list ap)
{
    char line[LOG_LINE_BYTES_MAX];
    int n = log_prefix(line, sizeof line, level);
    if (n < 0)
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

int log_level_parse(const char *name, log_level_t *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    _Static_assert(LOG_ERROR == 3 && LOG_DEBUG == 0, "the names are the levels in order");
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}
