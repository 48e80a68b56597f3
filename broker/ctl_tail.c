#define _DEFAULT_SOURCE /* explicit_bzero */
/* coalitionctl tail: the journal from a seq through the broker's feed, each entry once,
 * in order, as `journal` prints them (text or JSON lines). Without --follow it stops at
 * the last seq the broker had committed when it started; with --follow it goes on live
 * until SIGINT or SIGTERM, across broker restarts. A summary goes to stderr at the end. */
#include "ctl.h"

#include "errors.h"
#include "feed_client.h"
#include "keys.h"
#include "shutdown.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAIL_START_TIMEOUT_MS 5000
/* How long one wait for an entry lasts before a stop request is looked at. */
#define TAIL_WAIT_MS 200
/* Without --follow: waits for the broker, in TAIL_WAIT_MS steps, before giving up. */
#define TAIL_STALL_MAX_MS 30000
_Static_assert(TAIL_WAIT_MS < TAIL_STALL_MAX_MS, "a stall is many waits");

typedef struct tail_args {
    uint64_t from;
    bool follow;
    char feed[ENDPOINT_BYTES_MAX], replay[ENDPOINT_BYTES_MAX];
    const char *key_path, *broker_key_path; /* a CURVE feed: ours, the broker's public */
} tail_args_t;

/* A seq: decimal digits only, from 1, no overflow. */
static int parse_seq(const char *text, uint64_t *out)
{
    if (text[0] < '0' || text[0] > '9')
        return CL_ERR_INVALID;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0)
        return CL_ERR_INVALID;
    *out = v;
    assert(*out >= 1);
    return CL_OK;
}

static int parse_tail(ctl_t *ctl, int argc, char **argv, tail_args_t *a)
{
    static const struct option longopts[] = {{"from", required_argument, NULL, 'f'},
                                             {"follow", no_argument, NULL, 'F'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"feed", required_argument, NULL, 'p'},
                                             {"feed-replay", required_argument, NULL, 'r'},
                                             {"key", required_argument, NULL, 'k'},
                                             {"broker-key", required_argument, NULL, 'b'},
                                             {NULL, 0, NULL, 0}};
    a->from = 1;
    a->follow = false;
    a->key_path = NULL;
    a->broker_key_path = NULL;
    snprintf(a->feed, sizeof a->feed, "ipc://%s/feed.sock", ctl->ledger_dir);
    snprintf(a->replay, sizeof a->replay, "ipc://%s/feed-replay.sock", ctl->ledger_dir);
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (parse_seq(optarg, &a->from) != CL_OK) {
                fprintf(stderr,
                        "coalitionctl: tail --from needs a sequence number from 1, "
                        "not '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'F': a->follow = true; break;
        case 'j': ctl->json = true; break;
        case 'p': snprintf(a->feed, sizeof a->feed, "%s", optarg); break;
        case 'r': snprintf(a->replay, sizeof a->replay, "%s", optarg); break;
        case 'k': a->key_path = optarg; break;
        case 'b': a->broker_key_path = optarg; break;
        default: return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "coalitionctl: tail takes no argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    return 0;
}

static void summary(const feed_client_t *client)
{
    assert(client != NULL);
    feed_client_stats_t st;
    feed_client_stats(client, &st);
    fprintf(stderr,
            "tail: %" PRIu64 " entries (%" PRIu64 " live, %" PRIu64 " replayed), %" PRIu64
            " gap(s) filled, %" PRIu64 " duplicate(s) skipped, next seq %" PRIu64 "\n",
            st.live + st.replayed, st.live, st.replayed, st.gaps, st.duplicates,
            feed_client_next_seq(client));
}

/* Entries until the end (no follow), a stop signal, or an error. Output is flushed
 * whenever no entry is ready at once, so a reader downstream sees each batch. */
static int tail_loop(ctl_t *ctl, feed_client_t *client, bool follow, int stop_fd)
{
    int64_t stalled_ms = 0;
    for (;;) {
        feed_item_t item;
        int rc = feed_client_next(client, 0, &item);
        if (rc == CL_ERR_TIMEOUT) {
            fflush(stdout);
            rc = feed_client_next(client, TAIL_WAIT_MS, &item);
        }
        if (rc == CL_OK) {
            stalled_ms = 0;
            assert(item.entry != NULL);
            ctl_print_entry(item.entry, ctl);
            continue;
        }
        if (rc == CL_ERR_NOT_FOUND)
            return CL_OK; /* the end (no follow) */
        if (rc != CL_ERR_TIMEOUT)
            return rc;
        if (shutdown_requested(stop_fd))
            return CL_OK;
        stalled_ms += TAIL_WAIT_MS;
        if (!follow && stalled_ms >= TAIL_STALL_MAX_MS)
            return CL_ERR_TIMEOUT;
    }
}

static int explain(int rc, const tail_args_t *a, uint64_t last, const feed_client_t *client)
{
    assert(rc != CL_OK && (client != NULL || rc != CL_ERR_CORRUPT));
    if (rc == CL_ERR_INVALID)
        fprintf(stderr,
                "coalitionctl: tail --from %" PRIu64 " is past the end of the journal (last "
                "committed seq %" PRIu64 "): is this the ledger you read before?\n",
                a->from, last);
    else if (rc == CL_ERR_TIMEOUT)
        fprintf(stderr,
                "coalitionctl: no answer from the broker's feed on %s; is the broker "
                "running with its feed on?\n",
                a->replay);
    else if (rc == CL_ERR_CORRUPT)
        fprintf(stderr,
                "coalitionctl: tail: entry %" PRIu64 " fails its checks (its seq, "
                "balance or hash chain after the previous entry): the feed is not the "
                "ledger this tail started on, or it is damaged\n",
                feed_client_next_seq(client));
    else
        fprintf(stderr, "coalitionctl: tail: %s\n", cl_strerror(rc));
    return rc == CL_ERR_TIMEOUT ? EXIT_USAGE : EXIT_DECLINED;
}

/* A CURVE feed: our key pair and the broker's public key (default DIR/broker.pub). */
static int load_keys(const ctl_t *ctl, const tail_args_t *a, key_pair_t *key,
                     char server[KEY_Z85_BYTES])
{
    char why[KEY_WHY_BYTES_MAX], path[CTL_PATH_BYTES_MAX];
    snprintf(path, sizeof path, "%s/broker.pub", ctl->ledger_dir);
    const char *broker = a->broker_key_path != NULL ? a->broker_key_path : path;
    if (keys_read_secret(a->key_path, key, why, sizeof why) != CL_OK ||
        keys_read_public(broker, server, why, sizeof why) != CL_OK) {
        fprintf(stderr, "coalitionctl: tail: %s\n", why);
        return EXIT_USAGE;
    }
    return 0;
}

int ctl_feed_key(ctl_t *ctl, int argc, char **argv)
{
    (void)ctl;
    if (argc != 3 || strcmp(argv[1], "new") != 0) {
        fprintf(stderr, "coalitionctl: usage: feed-key new FILE\n");
        return EXIT_USAGE;
    }
    key_pair_t pair;
    int rc = keys_generate(&pair);
    if (rc == CL_OK)
        rc = keys_write_secret(argv[2], &pair, "coalition journal feed client key");
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot write a key pair to %s (it must not exist): %s\n",
                argv[2], cl_strerror(rc));
        return EXIT_DECLINED;
    }
    assert(keys_z85_valid(pair.public_z85));
    printf("%s\n", pair.public_z85); /* the line for the broker's --feed-clients file */
    explicit_bzero(&pair, sizeof pair);
    return 0;
}

int ctl_tail(ctl_t *ctl, int argc, char **argv)
{
    tail_args_t a;
    int status = parse_tail(ctl, argc, argv, &a);
    if (status != 0)
        return status;
    int stop_fd = shutdown_fd_open(); /* before the zmq context starts its threads */
    if (stop_fd < 0) {
        fprintf(stderr, "coalitionctl: cannot set up signal handling\n");
        return EXIT_USAGE;
    }
    assert(a.from >= 1);
    key_pair_t key;
    char server[KEY_Z85_BYTES];
    if (a.key_path != NULL && load_keys(ctl, &a, &key, server) != 0)
        return EXIT_USAGE;
    feed_client_options_t o = {a.feed,
                               a.replay,
                               a.from,
                               a.follow,
                               0,
                               a.key_path != NULL ? &key : NULL,
                               a.key_path != NULL ? server : NULL};
    feed_client_t *client = NULL;
    uint64_t last = 0;
    int rc = feed_client_new(&client, &o);
    if (rc == CL_OK)
        rc = feed_client_start(client, TAIL_START_TIMEOUT_MS, &last);
    if (rc == CL_OK)
        rc = tail_loop(ctl, client, a.follow, stop_fd);
    fflush(stdout);
    status = rc == CL_OK ? 0 : explain(rc, &a, last, client);
    if (client != NULL && rc != CL_ERR_INVALID)
        summary(client);
    feed_client_destroy(&client);
    return status;
}
