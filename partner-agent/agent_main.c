/* coalition-agent: one per merchant site. Parses options and runs the agent until
 * SIGTERM/SIGINT; --journal and --outbox print its local records instead, and the
 * export command a settlement window's records for reconciliation. */
#include "agent.h"
#include "agent_export.h"
#include "agent_metrics.h"
#include "card.h"
#include "config.h"
#include "errors.h"
#include "http_api.h"
#include "json.h"
#include "keys.h"
#include "log.h"
#include "outbox.h"
#include "shutdown.h"
#include "wire.h"

#include <arpa/inet.h>
#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_BROKER "tcp://127.0.0.1:7700"
#define POS_SOCKET_NAME "pos.sock"
#define ENDPOINT_BYTES_MAX 512
#define DATA_DIR_BYTES_MAX 256

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: coalition-agent --partner ID [options]\n"
            "       coalition-agent --data DIR [--partner ID [--site ID]] export --window ID\n"
            "Run a merchant site's agent: tills connect to it, it talks to the broker.\n"
            "export prints what the agent was told for settlement window ID (JSON lines:\n"
            "approvals, then requests still in the outbox) for 'coalitionctl reconcile'.\n\n"
            "  -p, --partner ID        this site's partner id (required)\n"
            "  -s, --site ID           this store's site id within the partner; txn ids are\n"
            "                          unique per (partner, site) (default: %s)\n"
            "  -b, --broker ENDPOINT   broker address (default: %s)\n"
            "  -k, --key FILE          this agent's CURVE secret key file, owner-only (made by\n"
            "                          'coalitionctl key new PARTNER --role partner')\n"
            "  -K, --broker-key FILE   the broker's public key file (DIR/broker.pub of the\n"
            "                          ledger); --key and --broker-key are required unless\n"
            "      --insecure          plain TCP without CURVE, only to a loopback broker\n"
            "  -d, --data DIR          outbox and journal directory (default: agent-ID)\n"
            "  -l, --listen ENDPOINT   where tills connect (default: ipc://DIR/%s)\n"
            "      --till-wait-ms N    how long a till waits for the broker before an earn\n"
            "                          is stored offline or a burn declined 91 (default: %d)\n"
            "      --retry-ms N        resend an unanswered request after N ms, then back off\n"
            "                          exponentially with jitter up to 30 s (default: %d)\n"
            "      --window N          requests in flight to the broker (default: %d, max %d)\n"
            "      --heartbeat-ms N    connection heartbeat interval (default: %d)\n"
            "      --journal-days N    keep received authorizations N days (default: %d)\n"
            "      --http ADDR         serve the HTTP/JSON API (partner-agent/openapi.json) on\n"
            "                          PORT or IPv4:PORT; a bare port is 127.0.0.1 (default: off)\n"
            "      --http-allow-remote let --http bind beyond loopback. The API has no\n"
            "                          authentication of its own: only on a store network\n"
            "                          the merchant controls\n"
            "      --metrics HOST:PORT Prometheus metrics on http://HOST:PORT/metrics, e.g.\n"
            "                          " AGENT_METRICS_SUGGESTED " (default: " AGENT_METRICS_DEFAULT
            ")\n"
            "      --journal           print the local journal (JSON lines) and exit\n"
            "      --outbox            print requests not yet answered (JSON lines) and exit\n"
            "      --log-level LVL     debug, info, warn or error (default: info)\n"
            "      --config FILE       read settings from FILE (INI, section [agent]; default:\n"
            "                          $COALITION_AGENT_CONFIG): every long option but\n"
            "                          --journal and --outbox is a key, and an environment\n"
            "                          variable COALITION_AGENT_<KEY> (till-wait-ms:\n"
            "                          COALITION_AGENT_TILL_WAIT_MS). Command line >\n"
            "                          environment > file > default\n"
            "      --print-config      print the settings in effect and where each came from\n"
            "  -h, --help              this text\n",
            AGENT_SITE_DEFAULT, DEFAULT_BROKER, POS_SOCKET_NAME, AGENT_TILL_WAIT_MS_DEFAULT,
            AGENT_RETRY_MS_DEFAULT, AGENT_WINDOW_DEFAULT, AGENT_WINDOW_MAX,
            AGENT_HEARTBEAT_MS_DEFAULT, AGENT_JOURNAL_DAYS_DEFAULT);
}

static void print_request(const uint8_t *bytes, size_t len)
{
    envelope_t *env = wire_envelope_decode(bytes, len);
    if (env == NULL) {
        printf("\"request\":null");
        return;
    }
    printf("\"type\":\"%s\",\"txn_id\":", wire_body_name(env));
    json_write_string(stdout, env->txn_id);
    printf(",\"member\":");
    json_write_string(stdout, wire_member_of(env));
    wire_envelope_free(env);
}

static int print_journal_entry(uint64_t seq, int64_t time_ms, const uint8_t *env, size_t env_len,
                               const uint8_t *auth_bytes, size_t auth_len, void *ctx)
{
    (void)ctx;
    authorization_t *auth = wire_auth_decode(auth_bytes, auth_len);
    printf("{\"seq\":%" PRIu64 ",\"time_ms\":%" PRId64 ",", seq, time_ms);
    print_request(env, env_len);
    if (auth != NULL) {
        printf(",\"code\":\"%02d\",\"points\":%" PRId64 ",\"balance\":%" PRId64
               ",\"ledger_seq\":%" PRIu64 ",\"auth_code\":",
               auth->code, auth->points, auth->balance, auth->seq);
        json_write_string(stdout, auth->auth_code);
        printf(",\"replay\":%s,\"reversed\":%s,\"text\":", auth->replay ? "true" : "false",
               auth->reversed ? "true" : "false");
        json_write_string(stdout, auth->text);
    }
    printf("}\n");
    wire_auth_free(auth);
    return CL_OK;
}

static int print_outbox_entry(uint64_t seq, const uint8_t *env, size_t len, void *ctx)
{
    (void)ctx;
    printf("{\"outbox_seq\":%" PRIu64 ",", seq);
    print_request(env, len);
    printf("}\n");
    return CL_OK;
}

static int print_store(const char *dir, bool journal)
{
    outbox_t *store = NULL;
    int rc = outbox_open(&store, dir, 1);
    if (rc == CL_OK)
        rc = journal ? outbox_journal_foreach(store, print_journal_entry, NULL)
                     : outbox_foreach(store, print_outbox_entry, NULL);
    outbox_destroy(&store);
    if (rc != CL_OK)
        fprintf(stderr, "coalition-agent: cannot read %s: %s\n", dir, cl_strerror(rc));
    return rc == CL_OK ? 0 : 1;
}

/* argv: export --window ID */
static int export_command(const agent_options_t *o, int argc, char **argv)
{
    static const struct option longopts[] = {{"window", required_argument, NULL, 'w'},
                                             {NULL, 0, NULL, 0}};
    const char *window_text = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "w:", longopts, NULL)) != -1) {
        if (c != 'w')
            return 2;
        window_text = optarg;
    }
    char *end = NULL;
    unsigned long long window = window_text != NULL ? strtoull(window_text, &end, 10) : 0;
    if (o->data_dir == NULL ||
        (o->partner_id != NULL && !wire_id_valid(o->partner_id, PARTNER_ID_LEN_MAX)) ||
        !wire_id_valid(o->site_id, SITE_ID_LEN_MAX) || window == 0 || *end != '\0' ||
        optind != argc) {
        fprintf(stderr, "coalition-agent: usage: coalition-agent --data DIR [--partner ID "
                        "[--site ID]] export --window ID\n");
        return 2;
    }
    uint64_t lines = 0;
    int rc = agent_export(o->data_dir, o->partner_id, o->site_id, window, &lines);
    if (rc != CL_OK) {
        fprintf(stderr, "coalition-agent: cannot read %s: %s\n", o->data_dir, cl_strerror(rc));
        return 1;
    }
    return 0;
}

static int parse_ms(const char *where, const char *name, const char *s, int min, int max, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "coalition-agent: %s%s must be a whole number from %d to %d, not '%s'\n",
                where, name, min, max, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* The agent's key pair (refused when group or others can read it) and the broker's
 * public key; or, with --insecure, nothing, and only towards a loopback broker. */
static int load_keys(bool insecure, const char *key_path, const char *broker_key_path,
                     const char *broker_endpoint, key_pair_t *key, char *broker_public)
{
    char why[KEY_WHY_BYTES_MAX];
    if (insecure) {
        if (!keys_endpoint_loopback(broker_endpoint)) {
            log_error("--insecure is allowed only towards a loopback broker, not %s",
                      broker_endpoint);
            return 1;
        }
        log_warn("INSECURE: plain TCP to %s without CURVE; never run a production agent like "
                 "this",
                 broker_endpoint);
        return 0;
    }
    if (key_path == NULL || broker_key_path == NULL) {
        log_error("--key FILE and --broker-key FILE are required (or --insecure on loopback)");
        return 1;
    }
    if (keys_read_secret(key_path, key, why, sizeof why) != CL_OK ||
        keys_read_public(broker_key_path, broker_public, why, sizeof why) != CL_OK) {
        log_error("refusing to start: %s", why);
        return 1;
    }
    return 0;
}

/* GET /v1/health: the agent loop's last report (agent_metrics keeps it). */
static void health_of_agent(http_api_health_t *out)
{
    agent_metrics_state_t s;
    out->known = agent_metrics_last(&s);
    out->broker_connected = s.connected;
    out->outbox = s.outbox;
    out->oldest_ms = s.oldest_ms;
}

/* The HTTP API, when asked for: a till of this agent, waiting for an answer as long as
 * the agent makes its tills wait, and a margin. */
static int start_http(const char *address, bool remote, const agent_options_t *o, http_api_t **api)
{
    if (address == NULL)
        return 0;
    http_api_options_t h = {.agent_endpoint = o->listen_endpoint,
                            .partner_id = o->partner_id,
                            .site_id = o->site_id,
                            .answer_timeout_ms = o->till_wait_ms + HTTP_API_ANSWER_MARGIN_MS,
                            .health = health_of_agent};
    if (http_api_parse_address(address, &h.address) != CL_OK) {
        log_error("--http must be PORT or IPv4:PORT, not '%s'", address);
        return -1;
    }
    if (!http_api_address_loopback(&h.address) && !remote) {
        log_error("--http %s is beyond loopback: the API has no authentication of its own; "
                  "add --http-allow-remote to mean it",
                  address);
        return -1;
    }
    int rc = http_api_start(api, &h);
    if (rc != CL_OK) {
        if (rc == CL_ERR_IO)
            log_error("cannot serve HTTP on %s (in use?)", address);
        return -1;
    }
    char host[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &h.address.sin_addr, host, sizeof host);
    log_info("HTTP API on http://%s:%u/v1/ (a till of %s)", host,
             (unsigned)ntohs(h.address.sin_port), o->listen_endpoint);
    assert(*api != NULL);
    return 0;
}

enum {
    OPT_WAIT = 256,
    OPT_RETRY,
    OPT_WINDOW,
    OPT_HEARTBEAT,
    OPT_JOURNAL,
    OPT_OUTBOX,
    OPT_LOG,
    OPT_JOURNAL_DAYS,
    OPT_INSECURE,
    OPT_HTTP,
    OPT_HTTP_REMOTE,
    OPT_CONFIG,
    OPT_PRINT_CONFIG,
    OPT_METRICS
};

static const struct option longopts[] = {
    {"partner", required_argument, NULL, 'p'},
    {"site", required_argument, NULL, 's'},
    {"broker", required_argument, NULL, 'b'},
    {"data", required_argument, NULL, 'd'},
    {"listen", required_argument, NULL, 'l'},
    {"till-wait-ms", required_argument, NULL, OPT_WAIT},
    {"retry-ms", required_argument, NULL, OPT_RETRY},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT},
    {"journal-days", required_argument, NULL, OPT_JOURNAL_DAYS},
    {"journal", no_argument, NULL, OPT_JOURNAL},
    {"outbox", no_argument, NULL, OPT_OUTBOX},
    {"log-level", required_argument, NULL, OPT_LOG},
    {"key", required_argument, NULL, 'k'},
    {"broker-key", required_argument, NULL, 'K'},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"http", required_argument, NULL, OPT_HTTP},
    {"http-allow-remote", no_argument, NULL, OPT_HTTP_REMOTE},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/* Only the command line may ask for these: they print and exit. */
static const char *const command_line_only[] = {"journal", "outbox", NULL};

#define AGENT_STR_(x) #x
#define AGENT_STR(x) AGENT_STR_(x)
static const config_default_t defaults[] = {{"site", AGENT_SITE_DEFAULT},
                                            {"broker", DEFAULT_BROKER},
                                            {"data", "agent-PARTNER"},
                                            {"listen", "ipc://DATA/" POS_SOCKET_NAME},
                                            {"till-wait-ms", AGENT_STR(AGENT_TILL_WAIT_MS_DEFAULT)},
                                            {"retry-ms", AGENT_STR(AGENT_RETRY_MS_DEFAULT)},
                                            {"window", AGENT_STR(AGENT_WINDOW_DEFAULT)},
                                            {"heartbeat-ms", AGENT_STR(AGENT_HEARTBEAT_MS_DEFAULT)},
                                            {"journal-days", AGENT_STR(AGENT_JOURNAL_DAYS_DEFAULT)},
                                            {"log-level", "info"},
                                            {"http", "off"},
                                            {"metrics", AGENT_METRICS_DEFAULT},
                                            {NULL, NULL}};

typedef struct agent_args {
    agent_options_t o;
    const char *key_path, *broker_key_path, *http;
    bool insecure, http_remote, print_config;
    int report; /* 1 --journal, 2 --outbox */
    log_level_t level;
    metrics_http_addr_t metrics;
} agent_args_t;

/* The options with a number. 0, or -1 with the error said. */
static int take_number(int c, const char *arg, const char *where, agent_args_t *a)
{
    agent_options_t *o = &a->o;
    switch (c) {
    case OPT_WAIT: return parse_ms(where, "till-wait-ms", arg, 1, 600000, &o->till_wait_ms);
    case OPT_RETRY: return parse_ms(where, "retry-ms", arg, 10, 600000, &o->retry_ms);
    case OPT_WINDOW: return parse_ms(where, "window", arg, 1, AGENT_WINDOW_MAX, &o->window);
    case OPT_HEARTBEAT: return parse_ms(where, "heartbeat-ms", arg, 100, 60000, &o->heartbeat_ms);
    case OPT_JOURNAL_DAYS:
        return parse_ms(where, "journal-days", arg, 1, AGENT_JOURNAL_DAYS_MAX, &o->journal_days);
    default: break;
    }
    assert(false && "a numeric option");
    return -1;
}

/* One option; 0, or -1 with the error said (naming the file and line it came from). */
static int take_option(int c, const char *arg, const char *where, agent_args_t *a)
{
    switch (c) {
    case 'k': a->key_path = arg; return 0;
    case 'K': a->broker_key_path = arg; return 0;
    case OPT_INSECURE: a->insecure = true; return 0;
    case OPT_HTTP: a->http = strcmp(arg, "off") == 0 ? NULL : arg; return 0;
    case OPT_HTTP_REMOTE: a->http_remote = true; return 0;
    case OPT_CONFIG: return 0; /* read by config_load */
    case OPT_PRINT_CONFIG: a->print_config = true; return 0;
    case OPT_METRICS: {
        char why[METRICS_HTTP_SPEC_BYTES_MAX];
        if (metrics_http_parse(arg, &a->metrics, why, sizeof why) == CL_OK)
            return 0;
        fprintf(stderr, "coalition-agent: %smetrics '%s': %s\n", where, arg, why);
        return -1;
    }
    case 'p': a->o.partner_id = arg; return 0;
    case 's': a->o.site_id = arg; return 0;
    case 'b': a->o.broker_endpoint = arg; return 0;
    case 'd': a->o.data_dir = arg; return 0;
    case 'l': a->o.listen_endpoint = arg; return 0;
    case OPT_JOURNAL: a->report = 1; return 0;
    case OPT_OUTBOX: a->report = 2; return 0;
    case OPT_LOG:
        if (log_level_parse(arg, &a->level) == 0)
            return 0;
        fprintf(stderr, "coalition-agent: %slog-level is debug, info, warn or error, not '%s'\n",
                where, arg);
        return -1;
    case OPT_WAIT:
    case OPT_RETRY:
    case OPT_WINDOW:
    case OPT_HEARTBEAT:
    case OPT_JOURNAL_DAYS: return take_number(c, arg, where, a);
    default: usage(stderr); return -1;
    }
}

/* The settings: file, environment, command line (config.h). 0, 1 (--help or
 * --print-config done) or 2 (an error, said). `*next` is the first argument left (a
 * command) in `*argv_out`. */
static int parse_args(int argc, char **argv, agent_args_t *a, int *argc_out, char ***argv_out)
{
    static config_t *cfg; /* its strings are the options' values until exit */
    char why[CONFIG_WHY_BYTES_MAX];
    if (config_load(&cfg, "agent", longopts, command_line_only, argc, argv, why, sizeof why) !=
        CL_OK) {
        fprintf(stderr, "coalition-agent: %s\n", why);
        return 2;
    }
    *argc_out = argc = config_argc(cfg);
    *argv_out = argv = config_argv(cfg);
    int c;
    /* '+': options end at a command (export), which takes its own. */
    while ((c = getopt_long(argc, argv, "+p:s:b:d:l:k:K:h", longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (take_option(c, optarg, config_blame(cfg, optind), a) != 0)
            return 2;
    }
    if (a->print_config) {
        config_print(cfg, defaults, stdout);
        return 1;
    }
    return 0;
}

/* Run the agent with its keys, metrics and HTTP API until stopped. The exit status. */
static int serve(const agent_args_t *args, agent_options_t *o)
{
    key_pair_t key;
    char broker_public[KEY_Z85_BYTES];
    if (load_keys(args->insecure, args->key_path, args->broker_key_path, o->broker_endpoint, &key,
                  broker_public) != 0)
        return 2;
    o->key = args->insecure ? NULL : &key;
    o->broker_public_z85 = args->insecure ? NULL : broker_public;
    int stop_fd = shutdown_fd_open();
    if (stop_fd < 0 || agent_metrics_start(&args->metrics) != CL_OK) {
        log_error(stop_fd < 0 ? "cannot set up signal handling" : "cannot start the metrics");
        return 1;
    }
    http_api_t *api = NULL;
    if (start_http(args->http, args->http_remote, o, &api) != 0) {
        agent_metrics_stop();
        return 2;
    }
    int rc = agent_run(o, stop_fd);
    http_api_stop(&api);
    agent_metrics_stop();
    pan_clear(&key, sizeof key);
    if (rc != CL_OK) {
        log_error("stopped on error: %s", cl_strerror(rc));
        return 1;
    }
    log_info("stopped cleanly");
    return 0;
}

/* The ids a running agent needs: 0, or 2 with the error said. */
static int check_ids(const agent_options_t *o)
{
    if (o->partner_id == NULL || !wire_id_valid(o->partner_id, PARTNER_ID_LEN_MAX)) {
        fprintf(stderr, "coalition-agent: --partner ID is required (1-%d printable characters)\n",
                PARTNER_ID_LEN_MAX);
        return 2;
    }
    if (!wire_id_valid(o->site_id, SITE_ID_LEN_MAX)) {
        fprintf(stderr, "coalition-agent: --site ID must be 1-%d printable characters\n",
                SITE_ID_LEN_MAX);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    agent_args_t args = {.o = {.site_id = AGENT_SITE_DEFAULT,
                               .broker_endpoint = DEFAULT_BROKER,
                               .till_wait_ms = AGENT_TILL_WAIT_MS_DEFAULT,
                               .retry_ms = AGENT_RETRY_MS_DEFAULT,
                               .window = AGENT_WINDOW_DEFAULT,
                               .heartbeat_ms = AGENT_HEARTBEAT_MS_DEFAULT,
                               .journal_days = AGENT_JOURNAL_DAYS_DEFAULT},
                         .level = LOG_INFO};
    char metrics_why[METRICS_HTTP_SPEC_BYTES_MAX];
    int default_rc =
        metrics_http_parse(AGENT_METRICS_DEFAULT, &args.metrics, metrics_why, sizeof metrics_why);
    assert(default_rc == CL_OK && args.metrics.off);
    (void)default_rc;
    int parsed = parse_args(argc, argv, &args, &argc, &argv);
    if (parsed != 0)
        return parsed == 1 ? 0 : 2;
    agent_options_t o = args.o;
    bool export = optind < argc && strcmp(argv[optind], "export") == 0;
    if (optind != argc && !export) {
        fprintf(stderr, "coalition-agent: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    char data_buf[DATA_DIR_BYTES_MAX], listen_buf[ENDPOINT_BYTES_MAX];
    if (o.data_dir == NULL && o.partner_id != NULL) {
        snprintf(data_buf, sizeof data_buf, "agent-%s", o.partner_id);
        o.data_dir = data_buf;
    }
    if (export)
        return export_command(&o, argc - optind, argv + optind);
    if (args.report != 0 && o.data_dir != NULL)
        return print_store(o.data_dir, args.report == 1);
    if (check_ids(&o) != 0)
        return 2;
    if (o.listen_endpoint == NULL) {
        snprintf(listen_buf, sizeof listen_buf, "ipc://%s/%s", o.data_dir, POS_SOCKET_NAME);
        o.listen_endpoint = listen_buf;
    }
    log_init("coalition-agent", args.level);
    pan_protect_process(); /* card numbers in flight live in this process */
    umask(077);
    return serve(&args, &o);
}
