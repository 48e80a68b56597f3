/* Line-oriented logging to stderr: "<iso time> <program> <level> message", or under
 * journald "<N>message" (N: the syslog priority; log_init decides which, once).
 * Never log a PAN or a key; ids and codes only. A failure that can repeat once per
 * message logs through log_every, so a flood of one failure costs one line a second. */
#ifndef COALITION_LOG_H
#define COALITION_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

void log_init(const char *program, log_level_t min_level);
/* "debug", "info", "warn" or "error" (the programs' --log-level): 0, or -1 for anything
 * else. */
int log_level_parse(const char *name, log_level_t *out);
/* True when log_init found stderr connected to the journal (JOURNAL_STREAM). */
bool log_journal_format(void);
/* Every line is escaped (log_escape): bytes outside printable ASCII and backslashes
 * appear as \xNN, so text a peer sent cannot forge or split a line. */
size_t log_escape(char *out, size_t room, const char *text);
void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* The default spacing of lines from one log_every call site. */
#define LOG_EVERY_INTERVAL_MS 1000

/* State of one rate-limited call site; zero-initialise it (LOG_EVERY_INIT). It belongs to
 * one thread: keep it in the module object that owns the call site. */
typedef struct log_every {
    int64_t next_ms;     /* monotonic time before which lines are only counted */
    uint64_t suppressed; /* lines counted since the last one printed */
} log_every_t;

#define LOG_EVERY_INIT                                                                             \
    {                                                                                              \
        0, 0                                                                                       \
    }

/* Log like log_msg, at most once per interval_ms for this `state`. Lines in between
 * are counted, and the next line printed ends with "(N similar suppressed)". */
void log_every(log_every_t *state, int64_t interval_ms, log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
