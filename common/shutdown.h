/* SIGINT and SIGTERM as a readable file descriptor. Poll loops include it, so a stop
 * request wakes them whichever thread the kernel would have picked (libzmq starts its
 * own threads). Call shutdown_fd_open() in main() before any thread or zmq context. */
#ifndef COALITION_SHUTDOWN_H
#define COALITION_SHUTDOWN_H

#include <stdbool.h>

/* Block SIGINT/SIGTERM in this and every later thread; return a signalfd, or -1. */
int shutdown_fd_open(void);
/* True if a stop signal has arrived (consumes it). Never blocks. */
bool shutdown_requested(int fd);

#endif
