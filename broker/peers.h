/* Connections on the partner socket, bounded. A socket monitor reports every accepted
 * and closed TCP connection; past the cap (PEERS_DEFAULT) open at once (or fewer when the process's
 * file-descriptor limit is lower), a new connection is shut down at once, so a flood of
 * connections cannot exhaust file descriptors and leave real partners unanswered while
 * the listener spins. Failed accepts (EMFILE and the like) are logged, rate-limited, with
 * counters. Unauthenticated connections are also bounded in time: the CURVE handshake
 * must finish within the socket's handshake interval, or libzmq drops them. */
#ifndef COALITION_PEERS_H
#define COALITION_PEERS_H

#include <stddef.h>
#include <stdint.h>

/* Connections open at once: the default, and the most --max-connections allows. */
#define PEERS_DEFAULT 8192
#define PEERS_MAX 65536
/* File descriptors kept for everything else: ledger, admin socket, libzmq's own. */
#define PEERS_FD_RESERVE 64

typedef struct peers peers_t;

/* Start monitoring `sock` (before it binds; the monitor's queue is unbounded, so libzmq's
 * I/O thread never blocks on it, and drained by peers_handle); the cap is `wanted` (1..PEERS_MAX)
 * or half of the fd limit less PEERS_FD_RESERVE, whichever is lower (the soft limit is raised to
 * the hard one first): with `ulimit -n 1024`, 480 connections. */
int peers_new(peers_t **self_out, void *ctx, void *sock, size_t wanted);
/* Stops the monitor; call it before the monitored socket is closed. */
void peers_destroy(peers_t **self_p);
void *peers_socket(peers_t *self);
/* Handle every monitor event waiting. */
void peers_handle(peers_t *self);
size_t peers_open(const peers_t *self);
size_t peers_cap(const peers_t *self);

#endif
