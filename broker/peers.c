/* Connection cap on the partner socket; see peers.h. */
#include "peers.h"

#include "errors.h"
#include "log.h"
#include "monitor.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <zmq.h>

/* One endpoint per partner socket the process opens (it is reopened by the memory
 * guard): a closed socket's monitor endpoint may linger until libzmq's reaper runs. */
#define MONITOR_ENDPOINT_FMT "inproc://coalition-peers-monitor-%u"
#define MONITOR_ENDPOINT_BYTES 64
#define EVENTS_PER_PASS_MAX 1024

_Static_assert(PEERS_MAX > PEERS_FD_RESERVE, "the reserve leaves room for peers");

struct peers {
    void *watched; /* the partner socket: its monitor is stopped before it is closed */
    void *monitor;
    size_t open, cap;
    uint64_t refused, accept_failed;
    log_every_t log_refused, log_accept_failed;
};

/* The cap under the fd limit, after raising the soft limit as far as allowed. */
static size_t cap_for_fds(size_t wanted)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return wanted;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
            return wanted;
    }
    /* Half the descriptors left after the reserve: connections over the cap hold theirs
     * until libzmq's I/O thread has seen the shutdown, and a flood keeps arriving. */
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= 2 * wanted + PEERS_FD_RESERVE)
        return wanted;
    size_t usable = rl.rlim_cur > 2 * PEERS_FD_RESERVE ? (size_t)rl.rlim_cur - PEERS_FD_RESERVE
                                                       : PEERS_FD_RESERVE;
    return usable / 2 < wanted ? usable / 2 : wanted;
}

int peers_new(peers_t **self_out, void *ctx, void *sock, size_t wanted)
{
    assert(wanted > 0 && wanted <= PEERS_MAX);
    static unsigned generation;
    char endpoint[MONITOR_ENDPOINT_BYTES];
    snprintf(endpoint, sizeof endpoint, MONITOR_ENDPOINT_FMT, generation++);
    peers_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->cap = cap_for_fds(wanted);
    int linger = 0, unlimited = 0;
    self->watched = sock;
    if (zmq_socket_monitor(sock, endpoint,
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPT_FAILED) !=
            0 ||
        (self->monitor = zmq_socket(ctx, ZMQ_PAIR)) == NULL ||
        zmq_setsockopt(self->monitor, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(self->monitor, ZMQ_RCVHWM, &unlimited, sizeof unlimited) != 0 ||
        zmq_connect(self->monitor, endpoint) != 0) {
        log_error("cannot monitor partner connections: %s", zmq_strerror(zmq_errno()));
        peers_destroy(&self);
        return CL_ERR_ZMQ;
    }
    assert(self->cap > 0 && self->cap <= PEERS_MAX);
    if (generation == 1)
        log_info("partner connections: at most %zu open at once", self->cap);
    *self_out = self;
    return CL_OK;
}

void peers_destroy(peers_t **self_p)
{
    peers_t *self = *self_p;
    if (self == NULL)
        return;
    /* libzmq's I/O thread sends monitor events with a blocking send until the monitor is
     * stopped: stop it first, or an event after the reader is gone (or a full queue)
     * wedges that thread and every connection with it. */
    zmq_socket_monitor(self->watched, NULL, 0);
    if (self->monitor != NULL)
        zmq_close(self->monitor);
    free(self);
    *self_p = NULL;
}

void *peers_socket(peers_t *self) { return self->monitor; }
size_t peers_open(const peers_t *self) { return self->open; }
size_t peers_cap(const peers_t *self) { return self->cap; }

static bool is_tcp(int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    return getsockname(fd, (struct sockaddr *)&addr, &len) == 0 &&
           (addr.ss_family == AF_INET || addr.ss_family == AF_INET6);
}

static void on_event(peers_t *self, uint16_t event, uint32_t value)
{
    if (event == ZMQ_EVENT_ACCEPTED) {
        self->open++;
        if (self->open > self->cap && is_tcp((int)value)) {
            /* Shut down, not closed: libzmq owns the descriptor and closes it when it sees
             * the connection end, which reports DISCONNECTED and brings the count back.
             * The event is handled late: if that connection is gone already its number may
             * name a newer one, which is then cut too (it reconnects); never anything but
             * a TCP socket (the admin socket is a filesystem socket). */
            shutdown((int)value, SHUT_RDWR);
            self->refused++;
            log_every(&self->log_refused, LOG_EVERY_INTERVAL_MS, LOG_WARN,
                      "refused a partner connection: %zu open, at most %zu (%llu refused in all)",
                      self->open - 1, self->cap, (unsigned long long)self->refused);
        }
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
        if (self->open > 0)
            self->open--;
    } else if (event == ZMQ_EVENT_ACCEPT_FAILED) {
        self->accept_failed++;
        log_every(&self->log_accept_failed, LOG_EVERY_INTERVAL_MS, LOG_ERROR,
                  "cannot accept a partner connection: %s (%llu failed in all; %zu open)",
                  zmq_strerror((int)value), (unsigned long long)self->accept_failed, self->open);
    }
}

void peers_handle(peers_t *self)
{
    monitor_event_t e;
    int got = 1;
    for (int i = 0; i < EVENTS_PER_PASS_MAX && got != 0; i++) {
        got = monitor_read(self->monitor, &e);
        if (got == 1)
            on_event(self, e.event, e.value);
    }
}
