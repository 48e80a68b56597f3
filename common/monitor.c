/* Socket-monitor events; see monitor.h. */
#include "monitor.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>
#include <zmq.h>

#define EVENT_HEAD_BYTES 6 /* u16 event, u32 value */

int monitor_read(void *monitor, monitor_event_t *out)
{
    assert(monitor != NULL && out != NULL);
    uint8_t head[EVENT_HEAD_BYTES];
    int n = zmq_recv(monitor, head, sizeof head, ZMQ_DONTWAIT);
    if (n < 0)
        return 0;
    memcpy(&out->event, head, sizeof out->event);
    memcpy(&out->value, head + sizeof out->event, sizeof out->value);
    int more = 0;
    size_t size = sizeof more;
    uint8_t scratch[EVENT_HEAD_BYTES];
    while (zmq_getsockopt(monitor, ZMQ_RCVMORE, &more, &size) == 0 && more)
        zmq_recv(monitor, scratch, sizeof scratch, 0); /* the rest of the message is here */
    return n == EVENT_HEAD_BYTES ? 1 : -1;
}
