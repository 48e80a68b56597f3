/* signalfd-based stop requests; see shutdown.h. */
#include "shutdown.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

int shutdown_fd_open(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit then shows as EFBIG on write, handled like a full disk. */
    signal(SIGXFSZ, SIG_IGN);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

bool shutdown_requested(int fd)
{
    struct signalfd_siginfo info;
    return read(fd, &info, sizeof info) == (ssize_t)sizeof info;
}
