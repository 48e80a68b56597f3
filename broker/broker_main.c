/* coalition-broker: the only writer of the ledger. Parses options, opens the ledger
 * (taking its directory's writer lock), runs the I/O thread (which starts the writer)
 * until SIGTERM or SIGINT. */
#include "errors.h"
#include "frontend.h"
#include "ledger.h"
#include "log.h"
#include "shutdown.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_LEDGER_DIR "ledger"
#define DEFAULT_BIND "tcp://127.0.0.1:7700"
#define ADMIN_SOCKET_NAME "admin.sock"
#define ENDPOINT_BYTES_MAX 512

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: coalition-broker [options]\n"
            "Run the coalition clearinghouse: the only writer of the points ledger.\n\n"
            "  -l, --ledger DIR      ledger directory made by 'coalitionctl init' (default: %s)\n"
            "  -b, --bind ENDPOINT   where partner agents connect (default: %s)\n"
            "  -a, --admin ENDPOINT  local operator socket (default: ipc://DIR/%s)\n"
            "      --log-level LVL   debug, info, warn or error (default: info)\n"
            "  -h, --help            this text\n\n"
            "Stops cleanly on SIGTERM or SIGINT: intake closes, queued requests are\n"
            "committed and answered, then it exits 0. Exits 1 without binding any socket\n"
            "when another broker holds the ledger (DIR/%s names its pid).\n",
            DEFAULT_LEDGER_DIR, DEFAULT_BIND, ADMIN_SOCKET_NAME, STORE_LOCK_FILE);
}

static int parse_level(const char *s, log_level_t *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ledger", required_argument, NULL, 'l'}, {"bind", required_argument, NULL, 'b'},
        {"admin", required_argument, NULL, 'a'},  {"log-level", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *ledger_dir = DEFAULT_LEDGER_DIR;
    frontend_options_t opts = {DEFAULT_BIND, NULL};
    log_level_t level = LOG_INFO;
    int c;
    while ((c = getopt_long(argc, argv, "l:b:a:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': ledger_dir = optarg; break;
        case 'b': opts.bind_endpoint = optarg; break;
        case 'a': opts.admin_endpoint = optarg; break;
        case 'L':
            if (parse_level(optarg, &level) != 0) {
                fprintf(stderr, "coalition-broker: unknown log level '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "coalition-broker: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    log_init("coalition-broker", level);
    char admin[ENDPOINT_BYTES_MAX];
    if (opts.admin_endpoint == NULL) {
        snprintf(admin, sizeof admin, "ipc://%s/%s", ledger_dir, ADMIN_SOCKET_NAME);
        opts.admin_endpoint = admin;
    }
    umask(077); /* the admin socket and ledger files are the operator's alone */
    ledger_t *ledger = NULL;
    /* Before any socket: a second broker on the same ledger stops here (CL_ERR_LOCKED,
     * logged with the running broker's pid) and touches nothing. */
    int rc = ledger_open(&ledger, ledger_dir, STORE_READ_WRITE);
    if (rc == CL_ERR_LOCKED) {
        log_error("another coalition-broker is running on ledger %s; exiting without binding "
                  "any socket",
                  ledger_dir);
        return 1;
    }
    if (rc != CL_OK) {
        log_error("cannot open ledger %s: %s (create one with 'coalitionctl --ledger %s init')",
                  ledger_dir, cl_strerror(rc), ledger_dir);
        return 1;
    }
    int stop_fd = shutdown_fd_open();
    if (stop_fd < 0) {
        log_error("cannot set up signal handling");
        ledger_destroy(&ledger);
        return 1;
    }
    rc = frontend_run(ledger, &opts, stop_fd);
    uint64_t seq = ledger_last_seq(ledger);
    ledger_destroy(&ledger);
    if (rc != CL_OK) {
        log_error("stopped on error: %s", cl_strerror(rc));
        return 1;
    }
    log_info("stopped cleanly at ledger seq %llu", (unsigned long long)seq);
    return 0;
}
