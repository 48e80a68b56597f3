/* Reading libzmq socket-monitor events (zmq_socket_monitor, libzmq 4.3 format): each
 * event is [u16 event, u32 value][endpoint]. Used by the broker's connection cap and the
 * agent's handshake watch. */
#ifndef COALITION_MONITOR_H
#define COALITION_MONITOR_H

#include <stdint.h>

typedef struct monitor_event {
    uint16_t event; /* ZMQ_EVENT_* */
    uint32_t value; /* the event's value: a descriptor, an errno, a ZAP status */
} monitor_event_t;

/* Take one event without waiting: 1 with *out set, 0 when none is waiting, -1 when a
 * malformed one was dropped. The endpoint frame is read and dropped. */
int monitor_read(void *monitor, monitor_event_t *out);

#endif
