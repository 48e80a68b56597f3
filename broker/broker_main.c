/* coalition-broker: the only writer of the ledger. Parses options, opens the ledger
 * (taking its directory's writer lock), runs the I/O thread (which starts the writer)
 * until SIGTERM or SIGINT. */
#include "broker_metrics.h"
#include "config.h"
#include "errors.h"
#include "feed.h"
#include "frontend.h"
#include "keys.h"
#include "peers.h"
#include "ledger.h"
#include "log.h"
#include "shutdown.h"
#include "writer.h"

#include <assert.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_LEDGER_DIR "ledger"
#define DEFAULT_BIND "tcp://127.0.0.1:7700"
#define ADMIN_SOCKET_NAME "admin.sock"
#define BROKER_KEY_NAME "broker.key"
#define MEMORY_MAX_MB_MIN 64
#define MEMORY_MAX_MB_MAX (1 << 20)
#define ENDPOINT_BYTES_MAX 512
#define MEMORY_MAX_MB_DEFAULT_TEXT "1024"
_Static_assert(FRONTEND_MEMORY_MAX_DEFAULT == (size_t)1024 << 20, "the text says the default");
#define EXPIRE_AT_DEFAULT_TEXT "03:00"
_Static_assert(WRITER_EXPIRE_AT_DEFAULT == 3 * 60, "the text says the default");
#define BROKER_STR_(x) #x
#define BROKER_STR(x) BROKER_STR_(x)

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: coalition-broker [options]\n"
            "Run the coalition clearinghouse: the only writer of the points ledger.\n\n"
            "  -l, --ledger DIR      ledger directory made by 'coalitionctl init' (default: %s)\n"
            "  -b, --bind ENDPOINT   where partner agents connect (default: %s)\n"
            "  -a, --admin ENDPOINT  local operator socket, ipc:// in an owner-only (0700)\n"
            "                        directory (default: ipc://DIR/%s)\n"
            "  -k, --key FILE        the broker's CURVE secret key, owner-only (default:\n"
            "                        DIR/%s, made by 'coalitionctl init')\n"
            "      --max-connections N  partner connections open at once (default %d, or half\n"
            "                        the file-descriptor limit if lower)\n"
            "      --memory-max-mb N memory guard: past N MiB resident, every partner\n"
            "                        connection is dropped (agents reconnect and resend);\n"
            "                        default %zu\n"
            "      --insecure        plain TCP without CURVE: the envelope's partner id is\n"
            "                        believed. Only on loopback addresses; for tests of\n"
            "                        the plain transport and benchmarks, never production\n"
            "      --card-key FILE   the coalition's card key file, owner-only, outside the\n"
            "                        ledger directory (default: DIR.card.key, made by\n"
            "                        'coalitionctl init'); without it card numbers get 12\n"
            "      --expire-at HH:MM the daily points expiry run, UTC (default 03:00; at\n"
            "                        start-up when that time has passed today); off: none\n"
            "      --metrics HOST:PORT  Prometheus metrics on http://HOST:PORT/metrics (default\n"
            "                        %s; off: none). Another address is served as given\n"
            "      --feed ENDPOINT   journal feed: committed entries published (PUB) for\n"
            "                        downstream systems, ipc:// or loopback only (default:\n"
            "                        ipc://DIR/%s); off: no feed\n"
            "      --feed-replay ENDPOINT  the feed's replay socket (ROUTER; default:\n"
            "                        ipc://DIR/%s)\n"
            "      --feed-clients FILE  the feed as CURVE servers with the broker's key,\n"
            "                        admitting only the Z85 public keys in FILE (one a line;\n"
            "                        'coalitionctl feed-key new' makes a pair); needed for\n"
            "                        a feed endpoint beyond loopback\n"
            "      --feed-hwm N      live feed messages queued per subscriber before they\n"
            "                        are dropped for it (it replays them; default %d)\n"
            "      --log-level LVL   debug, info, warn or error (default: info)\n"
            "      --config FILE     read settings from FILE (INI, section [broker]; default:\n"
            "                        $COALITION_BROKER_CONFIG): every long option above is a\n"
            "                        key, and an environment variable COALITION_BROKER_<KEY>\n"
            "                        (max-connections: COALITION_BROKER_MAX_CONNECTIONS).\n"
            "                        Command line > environment > file > default\n"
            "      --print-config    print the settings in effect and where each came from\n"
            "  -h, --help            this text\n\n"
            "Stops cleanly on SIGTERM or SIGINT: intake closes, queued requests are\n"
            "committed and answered, then it exits 0. Exits 1 without binding any socket\n"
            "when another broker holds the ledger (DIR/%s names its pid).\n",
            DEFAULT_LEDGER_DIR, DEFAULT_BIND, ADMIN_SOCKET_NAME, BROKER_KEY_NAME, PEERS_DEFAULT,
            FRONTEND_MEMORY_MAX_DEFAULT >> 20, BROKER_METRICS_DEFAULT, FEED_SOCKET_NAME,
            FEED_REPLAY_SOCKET_NAME, FEED_HWM_DEFAULT, STORE_LOCK_FILE);
}

/* --expire-at HH:MM (UTC) or "off". */
static int parse_expire_at(const char *s, int *minute_out)
{
    if (strcmp(s, "off") == 0) {
        *minute_out = WRITER_EXPIRE_OFF;
        return 0;
    }
    int h = -1, m = -1;
    char tail = 0;
    if (sscanf(s, "%2d:%2d%c", &h, &m, &tail) != 2 || h < 0 || h > 23 || m < 0 || m > 59 ||
        strlen(s) != 5)
        return -1;
    *minute_out = h * 60 + m;
    assert(*minute_out >= 0 && *minute_out < WRITER_MINUTES_PER_DAY);
    return 0;
}

/* The admin socket takes operator writes with no key: it must be a filesystem socket in
 * a directory only this user can enter (a partner on the network can never reach it). */
static bool admin_endpoint_private(const char *endpoint, char *why, size_t why_size)
{
    const char *path = strncmp(endpoint, "ipc://", 6) == 0 ? endpoint + 6 : NULL;
    if (path == NULL || path[0] == '@') {
        snprintf(why, why_size, "it must be an ipc:// path");
        return false;
    }
    char dir[ENDPOINT_BYTES_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077) != 0) {
        snprintf(why, why_size, "its directory %s must exist, be ours and be mode 0700", dir);
        return false;
    }
    return true;
}

/* The card keys: a missing default file means no card-linked requests (warned); a file
 * named, or one that is there but not owner-only or not a key file, stops the broker. */
static int load_card_keys(const char *path, bool named, card_keys_t *keys, bool *loaded)
{
    *loaded = false;
    if (!named && access(path, F_OK) != 0) {
        log_warn("no card key file %s: card-linked requests are declined 12", path);
        return 0;
    }
    char why[256] = "";
    int rc = card_keys_load(path, keys, why, sizeof why);
    if (rc != CL_OK) {
        log_error("card key file %s: %s%s%s", path, cl_strerror(rc), why[0] ? ": " : "", why);
        return -1;
    }
    *loaded = true;
    log_info("card keys loaded from %s: %zu key(s), current %u", path, keys->count,
             card_keys_current(keys)->id);
    return 0;
}

/* The secure default: load the key (owner-only) unless --insecure on loopback. */
static int load_server_key(const char *path, bool insecure, const char *bind, key_pair_t *key)
{
    if (insecure) {
        if (!keys_endpoint_loopback(bind)) {
            log_error("--insecure is allowed only on loopback addresses, not %s", bind);
            return 1;
        }
        log_warn("INSECURE: plain TCP on %s without CURVE; partner ids in envelopes are "
                 "believed. Never run a production broker like this.",
                 bind);
        return 0;
    }
    char why[KEY_WHY_BYTES_MAX];
    int rc = keys_read_secret(path, key, why, sizeof why);
    if (rc != CL_OK) {
        log_error("cannot load the broker key: %s", why);
        return 1;
    }
    return 0;
}

/* --feed-clients: the allow-list of a CURVE feed, which takes the broker's key. */
static int load_feed_clients(const char *path, bool insecure, feed_clients_t *out)
{
    if (insecure) {
        log_error("--feed-clients needs the broker's CURVE key: not with --insecure");
        return 1;
    }
    char why[ENDPOINT_BYTES_MAX + 128];
    int rc = feed_clients_load(path, out, why, sizeof why);
    if (rc != CL_OK) {
        log_error("feed clients: %s", why);
        return 1;
    }
    log_info("feed: CURVE, %zu client key(s) from %s", out->count, path);
    return 0;
}

/* The journal feed, on by default in the ledger directory (owner-only, like the admin
 * socket); "--feed off": none. */
static int start_feed(feed_t **feed, ledger_t *ledger, const char *ledger_dir, feed_options_t *o)
{
    static char pub[ENDPOINT_BYTES_MAX], replay[ENDPOINT_BYTES_MAX];
    if (o->pub_endpoint != NULL && strcmp(o->pub_endpoint, "off") == 0)
        return CL_OK;
    bool by_default = o->pub_endpoint == NULL && o->replay_endpoint == NULL;
    if (o->pub_endpoint == NULL) {
        snprintf(pub, sizeof pub, "ipc://%s/%s", ledger_dir, FEED_SOCKET_NAME);
        o->pub_endpoint = pub;
    }
    if (o->replay_endpoint == NULL) {
        snprintf(replay, sizeof replay, "ipc://%s/%s", ledger_dir, FEED_REPLAY_SOCKET_NAME);
        o->replay_endpoint = replay;
    }
    assert(o->hwm >= 1 && o->hwm <= FEED_HWM_MAX);
    int rc = feed_new(feed, ledger, o);
    if (rc != CL_OK && by_default) { /* e.g. an ipc path too long: the broker runs without */
        log_warn("no journal feed: it cannot bind in the ledger directory (%s); name "
                 "endpoints with --feed and --feed-replay, or --feed off",
                 cl_strerror(rc));
        return CL_OK;
    }
    if (rc != CL_OK)
        log_error("cannot start the journal feed: %s", cl_strerror(rc));
    return rc;
}

/* What the command line, environment and file settings ask for. */
typedef struct broker_args {
    const char *ledger_dir, *key_path, *card_key_path;
    frontend_options_t opts;
    bool insecure, print_config;
    log_level_t level;
    metrics_http_addr_t metrics;
    bool metrics_given; /* an address the operator gave must be served */
    feed_options_t feed;
    const char *feed_clients_path;
} broker_args_t;

static const struct option longopts[] = {{"ledger", required_argument, NULL, 'l'},
                                         {"bind", required_argument, NULL, 'b'},
                                         {"admin", required_argument, NULL, 'a'},
                                         {"log-level", required_argument, NULL, 'L'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"insecure", no_argument, NULL, 'I'},
                                         {"memory-max-mb", required_argument, NULL, 'M'},
                                         {"max-connections", required_argument, NULL, 'C'},
                                         {"card-key", required_argument, NULL, 'K'},
                                         {"expire-at", required_argument, NULL, 'E'},
                                         {"metrics", required_argument, NULL, 'm'},
                                         {"feed", required_argument, NULL, 'F'},
                                         {"feed-replay", required_argument, NULL, 'R'},
                                         {"feed-hwm", required_argument, NULL, 'H'},
                                         {"feed-clients", required_argument, NULL, 'Q'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"print-config", no_argument, NULL, 'P'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};

/* --print-config's text for what nothing set. */
static const config_default_t defaults[] = {
    {"ledger", DEFAULT_LEDGER_DIR},
    {"bind", DEFAULT_BIND},
    {"admin", "ipc://LEDGER/" ADMIN_SOCKET_NAME},
    {"log-level", "info"},
    {"key", "LEDGER/" BROKER_KEY_NAME},
    {"memory-max-mb", MEMORY_MAX_MB_DEFAULT_TEXT},
    {"max-connections", BROKER_STR(PEERS_DEFAULT)},
    {"card-key", "LEDGER.card.key"},
    {"expire-at", EXPIRE_AT_DEFAULT_TEXT},
    {"metrics", BROKER_METRICS_DEFAULT},
    {"feed", "ipc://LEDGER/" FEED_SOCKET_NAME},
    {"feed-replay", "ipc://LEDGER/" FEED_REPLAY_SOCKET_NAME},
    {"feed-hwm", BROKER_STR(FEED_HWM_DEFAULT)},
    {NULL, NULL}};

static unsigned long long parse_count(const char *s, unsigned long long min, unsigned long long max)
{
    char *end = NULL;
    unsigned long long n = strtoull(s, &end, 10);
    return end != s && *end == '\0' && s[0] != '-' && n >= min && n <= max ? n : 0;
}

/* One option; 0, or 2 with the error said (naming the file and line it came from). */
static int take_option(int c, const char *arg, const char *where, broker_args_t *a)
{
    unsigned long long n = 0;
    switch (c) {
    case 'k': a->key_path = arg; return 0;
    case 'K': a->card_key_path = arg; return 0;
    case 'I': a->insecure = true; return 0;
    case 'P': a->print_config = true; return 0;
    case 'c': return 0; /* read by config_load */
    case 'l': a->ledger_dir = arg; return 0;
    case 'b': a->opts.bind_endpoint = arg; return 0;
    case 'a': a->opts.admin_endpoint = arg; return 0;
    case 'E':
        if (parse_expire_at(arg, &a->opts.expire_at_minute) == 0)
            return 0;
        fprintf(stderr, "coalition-broker: %sexpire-at is HH:MM (UTC) or off, not '%s'\n", where,
                arg);
        return 2;
    case 'C':
        if ((n = parse_count(arg, 1, PEERS_MAX)) != 0) {
            a->opts.connections_max = (size_t)n;
            return 0;
        }
        fprintf(stderr, "coalition-broker: %smax-connections must be 1..%d, not '%s'\n", where,
                PEERS_MAX, arg);
        return 2;
    case 'M':
        if ((n = parse_count(arg, MEMORY_MAX_MB_MIN, MEMORY_MAX_MB_MAX)) != 0) {
            a->opts.memory_max_bytes = (size_t)n << 20;
            return 0;
        }
        fprintf(stderr, "coalition-broker: %smemory-max-mb must be %d..%d, not '%s'\n", where,
                MEMORY_MAX_MB_MIN, MEMORY_MAX_MB_MAX, arg);
        return 2;
    case 'm': {
        char why[METRICS_HTTP_SPEC_BYTES_MAX];
        a->metrics_given = true;
        if (metrics_http_parse(arg, &a->metrics, why, sizeof why) == CL_OK)
            return 0;
        fprintf(stderr, "coalition-broker: %smetrics '%s': %s\n", where, arg, why);
        return 2;
    }
    case 'F': a->feed.pub_endpoint = arg; return 0;
    case 'R': a->feed.replay_endpoint = arg; return 0;
    case 'Q': a->feed_clients_path = arg; return 0;
    case 'H':
        if ((n = parse_count(arg, 1, FEED_HWM_MAX)) != 0) {
            a->feed.hwm = (int)n;
            return 0;
        }
        fprintf(stderr, "coalition-broker: %sfeed-hwm must be 1..%d, not '%s'\n", where,
                FEED_HWM_MAX, arg);
        return 2;
    case 'L':
        if (log_level_parse(arg, &a->level) == 0)
            return 0;
        fprintf(stderr, "coalition-broker: %slog-level is debug, info, warn or error, not '%s'\n",
                where, arg);
        return 2;
    default: usage(stderr); return 2;
    }
}

/* The settings: file, environment, command line (config.h). 0, 1 (--help or
 * --print-config done) or 2 (an error, said). */
static int parse_args(int argc, char **argv, broker_args_t *a)
{
    static config_t *cfg; /* its strings are the options' values until exit */
    char why[CONFIG_WHY_BYTES_MAX];
    if (config_load(&cfg, "broker", longopts, NULL, argc, argv, why, sizeof why) != CL_OK) {
        fprintf(stderr, "coalition-broker: %s\n", why);
        return 2;
    }
    argc = config_argc(cfg);
    argv = config_argv(cfg);
    int c;
    while ((c = getopt_long(argc, argv, "l:b:a:k:M:h", longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        int rc = take_option(c, optarg, config_blame(cfg, optind), a);
        if (rc != 0)
            return rc;
    }
    if (optind != argc) {
        fprintf(stderr, "coalition-broker: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (a->print_config) {
        config_print(cfg, defaults, stdout);
        return 1;
    }
    return 0;
}

/* Off the stack, cleared at exit: the feed's client keys and the card keys. */
static feed_clients_t feed_clients;
static card_keys_t card_keys;

/* The broker's CURVE key (unless --insecure), the feed's client list and the card keys
 * into the options that use them. 0, or 1 with the error logged. */
static int load_secrets(const broker_args_t *a, key_pair_t *server_key, frontend_options_t *opts,
                        feed_options_t *feed)
{
    char key_buf[ENDPOINT_BYTES_MAX], card_key_buf[ENDPOINT_BYTES_MAX];
    const char *key_path = a->key_path, *card_key_path = a->card_key_path;
    if (key_path == NULL) {
        snprintf(key_buf, sizeof key_buf, "%s/%s", a->ledger_dir, BROKER_KEY_NAME);
        key_path = key_buf;
    }
    if (load_server_key(key_path, a->insecure, opts->bind_endpoint, server_key) != 0)
        return 1;
    opts->server_key = a->insecure ? NULL : server_key;
    if (a->feed_clients_path != NULL &&
        load_feed_clients(a->feed_clients_path, a->insecure, &feed_clients) != 0)
        return 1;
    feed->server_key = a->feed_clients_path != NULL ? server_key : NULL;
    feed->clients = a->feed_clients_path != NULL ? &feed_clients : NULL;
    bool have_card_keys = false;
    if (card_key_path == NULL &&
        card_keys_default_path(a->ledger_dir, card_key_buf, sizeof card_key_buf) == CL_OK)
        card_key_path = card_key_buf;
    if (card_key_path == NULL || load_card_keys(card_key_path, card_key_path != card_key_buf,
                                                &card_keys, &have_card_keys) != 0)
        return 1;
    opts->card_keys = have_card_keys ? &card_keys : NULL;
    assert(a->insecure == (opts->server_key == NULL));
    return 0;
}

/* Open the ledger (its writer lock first: a second broker stops here and touches
 * nothing), serve until stopped, close. The process's exit status. */
static int serve(const broker_args_t *a, frontend_options_t *opts, feed_options_t *feed_opts)
{
    ledger_t *ledger = NULL;
    int rc = ledger_open(&ledger, a->ledger_dir, STORE_READ_WRITE);
    if (rc == CL_ERR_LOCKED) {
        log_error("another coalition-broker is running on ledger %s; exiting without binding "
                  "any socket",
                  a->ledger_dir);
        return 1;
    }
    if (rc != CL_OK) {
        log_error("cannot open ledger %s: %s (create one with 'coalitionctl --ledger %s init')",
                  a->ledger_dir, cl_strerror(rc), a->ledger_dir);
        return 1;
    }
    int stop_fd = shutdown_fd_open();
    if (stop_fd < 0 || broker_metrics_start(&a->metrics, a->metrics_given) != CL_OK) {
        log_error(stop_fd < 0 ? "cannot set up signal handling" : "cannot start the metrics");
        ledger_destroy(&ledger);
        return 1;
    }
    broker_metrics_ledger(ledger);
    feed_t *feed = NULL;
    rc = start_feed(&feed, ledger, a->ledger_dir, feed_opts);
    if (rc == CL_OK)
        rc = frontend_run(ledger, opts, stop_fd);
    feed_destroy(&feed); /* after the writer, whose commits it follows, has stopped */
    broker_metrics_stop();
    uint64_t seq = ledger_last_seq(ledger);
    ledger_destroy(&ledger);
    if (rc != CL_OK) {
        log_error("stopped on error: %s", cl_strerror(rc));
        return 1;
    }
    log_info("stopped cleanly at ledger seq %llu", (unsigned long long)seq);
    return 0;
}

int main(int argc, char **argv)
{
    broker_args_t args = {.ledger_dir = DEFAULT_LEDGER_DIR,
                          .opts = {DEFAULT_BIND, NULL, NULL, FRONTEND_MEMORY_MAX_DEFAULT,
                                   PEERS_DEFAULT, NULL, WRITER_EXPIRE_AT_DEFAULT},
                          .level = LOG_INFO,
                          .feed = {NULL, NULL, FEED_HWM_DEFAULT, NULL, NULL}};
    char metrics_why[METRICS_HTTP_SPEC_BYTES_MAX];
    int default_rc =
        metrics_http_parse(BROKER_METRICS_DEFAULT, &args.metrics, metrics_why, sizeof metrics_why);
    assert(default_rc == CL_OK);
    (void)default_rc;
    int parsed = parse_args(argc, argv, &args);
    if (parsed != 0)
        return parsed == 1 ? 0 : 2;
    frontend_options_t opts = args.opts;
    feed_options_t feed_opts = args.feed;
    log_init("coalition-broker", args.level);
    pan_protect_process(); /* card numbers pass through this process */
    char admin[ENDPOINT_BYTES_MAX];
    if (opts.admin_endpoint == NULL) {
        snprintf(admin, sizeof admin, "ipc://%s/%s", args.ledger_dir, ADMIN_SOCKET_NAME);
        opts.admin_endpoint = admin;
    }
    umask(077); /* the admin socket and ledger files are the operator's alone */
    char why[ENDPOINT_BYTES_MAX + 64];
    if (!admin_endpoint_private(opts.admin_endpoint, why, sizeof why)) {
        log_error("refusing admin endpoint %s: %s", opts.admin_endpoint, why);
        return 1;
    }
    key_pair_t server_key;
    int status = load_secrets(&args, &server_key, &opts, &feed_opts);
    if (status == 0)
        status = serve(&args, &opts, &feed_opts);
    pan_clear(&card_keys, sizeof card_keys);
    pan_clear(&server_key, sizeof server_key);
    return status;
}
