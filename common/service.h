/* Running under systemd: the notify protocol (sd_notify(3)) for Type=notify units.
 * READY=1 once the program serves, WATCHDOG=1 from its main loop at half the
 * WATCHDOG_USEC interval while the loop (and what it depends on) is alive, STOPPING=1
 * when it begins to stop. Without NOTIFY_SOCKET (not under systemd) every call is a no-op. */
#ifndef COALITION_SERVICE_H
#define COALITION_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

/* The longest STATUS= text sent; longer texts are cut. */
#define SERVICE_STATUS_BYTES_MAX 256

/* "READY=1" with a STATUS= line (printf-style) saying what the program serves. */
void service_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "STOPPING=1" with a STATUS= line. */
void service_stopping(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog of one main loop. interval_ms is 0 when systemd asked for none. */
typedef struct service_watchdog {
    int64_t interval_ms; /* WATCHDOG_USEC in ms: systemd's deadline between two pings */
    int64_t next_ms;     /* monotonic time of the next ping due */
} service_watchdog_t;

/* Read WATCHDOG_USEC (and WATCHDOG_PID, which must be this process). */
void service_watchdog_init(service_watchdog_t *w);
/* Call on every pass of the main loop: sends WATCHDOG=1 when one is due and `alive` is
 * true. A loop that is not alive sends nothing, so systemd kills and restarts it once
 * interval_ms has passed since the last ping. */
void service_watchdog_tick(service_watchdog_t *w, int64_t now_ms, bool alive);

#endif
