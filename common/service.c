/* sd_notify wrappers; see service.h. Every message is one datagram with no newline in
 * its STATUS= text, so systemd never reads half a line as a field. */
#include "service.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

/* "STOPPING=1\nSTATUS=" and the like, before the status text. */
#define SERVICE_STATE_BYTES_MAX 32
#define SERVICE_MESSAGE_BYTES_MAX (SERVICE_STATE_BYTES_MAX + SERVICE_STATUS_BYTES_MAX)
_Static_assert(sizeof "STOPPING=1\nSTATUS=" < SERVICE_STATE_BYTES_MAX, "the longest state fits");
#define USEC_PER_MS 1000
/* A ping at half the interval (sd_watchdog_enabled(3)). */
#define WATCHDOG_PINGS_PER_INTERVAL 2
_Static_assert(WATCHDOG_PINGS_PER_INTERVAL >= 2, "one ping late must not miss the deadline");

static void notify_with_status(const char *state, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void notify_with_status(const char *state, const char *fmt, va_list ap)
{
    assert(state != NULL && strchr(state, '\n') == NULL);
    assert(strlen(state) + sizeof "\nSTATUS=" <= SERVICE_STATE_BYTES_MAX);
    char status[SERVICE_STATUS_BYTES_MAX];
    if (vsnprintf(status, sizeof status, fmt, ap) < 0)
        status[0] = '\0';
    for (char *p = status; *p != '\0'; p++) {
        if (*p == '\n')
            *p = ' ';
    }
    char message[SERVICE_MESSAGE_BYTES_MAX];
    int n = snprintf(message, sizeof message, "%s\nSTATUS=%s", state, status);
    assert(n > 0 && (size_t)n < sizeof message);
    (void)sd_notify(0, message); /* < 0: systemd is gone; nothing to do about it here */
}

void service_ready(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    notify_with_status("READY=1", fmt, ap);
    va_end(ap);
}

void service_stopping(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    notify_with_status("STOPPING=1", fmt, ap);
    va_end(ap);
}

void service_watchdog_init(service_watchdog_t *w)
{
    assert(w != NULL);
    uint64_t usec = 0;
    w->interval_ms = 0;
    w->next_ms = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec >= USEC_PER_MS)
        w->interval_ms = (int64_t)(usec / USEC_PER_MS);
    assert(w->interval_ms >= 0);
}

void service_watchdog_tick(service_watchdog_t *w, int64_t now_ms, bool alive)
{
    assert(w != NULL && w->interval_ms >= 0);
    if (w->interval_ms == 0 || !alive || now_ms < w->next_ms)
        return;
    (void)sd_notify(0, "WATCHDOG=1");
    w->next_ms = now_ms + w->interval_ms / WATCHDOG_PINGS_PER_INTERVAL;
}
