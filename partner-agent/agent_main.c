/* coalition-agent: one per merchant site. Parses options and runs the agent until
 * SIGTERM/SIGINT; --journal and --outbox print its local records instead, and the
 * export command a settlement window's records for reconciliation. */
#include "agent.h"
#include "agent_export.h"
#include "agent_metrics.h"
#include "card.h"
#include "errors.h"
#include "json.h"
#include "keys.h"
#include "log.h"
#include "outbox.h"
#include "shutdown.h"
#include "wire.h"

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
            "      --journal           print the local journal (JSON lines) and exit\n"
            "      --outbox            print requests not yet answered (JSON lines) and exit\n"
            "      --metrics HOST:PORT Prometheus metrics on http://HOST:PORT/metrics, e.g.\n"
            "                          " AGENT_METRICS_SUGGESTED " (default: " AGENT_METRICS_DEFAULT
            ")\n"
            "      --log-level LVL     debug, info, warn or error (default: info)\n"
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

static int parse_ms(const char *name, const char *s, int min, int max, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "coalition-agent: --%s must be a whole number from %d to %d\n", name, min,
                max);
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

int main(int argc, char **argv)
{
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
        {"metrics", required_argument, NULL, OPT_METRICS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    agent_options_t o = {NULL,
                         AGENT_SITE_DEFAULT,
                         DEFAULT_BROKER,
                         NULL,
                         NULL,
                         AGENT_TILL_WAIT_MS_DEFAULT,
                         AGENT_RETRY_MS_DEFAULT,
                         AGENT_WINDOW_DEFAULT,
                         AGENT_HEARTBEAT_MS_DEFAULT,
                         AGENT_JOURNAL_DAYS_DEFAULT,
                         NULL,
                         NULL};
    const char *key_path = NULL, *broker_key_path = NULL, *metrics_spec = AGENT_METRICS_DEFAULT;
    bool insecure = false;
    int report = 0, bad = 0, c;
    log_level_t level = LOG_INFO;
    /* '+': options end at a command (export), which takes its own. */
    while ((c = getopt_long(argc, argv, "+p:s:b:d:l:k:K:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'k': key_path = optarg; break;
        case 'K': broker_key_path = optarg; break;
        case OPT_INSECURE: insecure = true; break;
        case OPT_METRICS: metrics_spec = optarg; break;
        case 'p': o.partner_id = optarg; break;
        case 's': o.site_id = optarg; break;
        case 'b': o.broker_endpoint = optarg; break;
        case 'd': o.data_dir = optarg; break;
        case 'l': o.listen_endpoint = optarg; break;
        case OPT_WAIT: bad |= parse_ms("till-wait-ms", optarg, 1, 600000, &o.till_wait_ms); break;
        case OPT_RETRY: bad |= parse_ms("retry-ms", optarg, 10, 600000, &o.retry_ms); break;
        case OPT_WINDOW: bad |= parse_ms("window", optarg, 1, AGENT_WINDOW_MAX, &o.window); break;
        case OPT_HEARTBEAT:
            bad |= parse_ms("heartbeat-ms", optarg, 100, 60000, &o.heartbeat_ms);
            break;
        case OPT_JOURNAL_DAYS:
            bad |= parse_ms("journal-days", optarg, 1, AGENT_JOURNAL_DAYS_MAX, &o.journal_days);
            break;
        case OPT_JOURNAL: report = 1; break;
        case OPT_OUTBOX: report = 2; break;
        case OPT_LOG:
            level = strcmp(optarg, "debug") == 0   ? LOG_DEBUG
                    : strcmp(optarg, "warn") == 0  ? LOG_WARN
                    : strcmp(optarg, "error") == 0 ? LOG_ERROR
                                                   : LOG_INFO;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    bool export = !bad && optind < argc && strcmp(argv[optind], "export") == 0;
    if (bad || (optind != argc && !export))
        return 2;
    char data_buf[DATA_DIR_BYTES_MAX], listen_buf[ENDPOINT_BYTES_MAX];
    if (o.data_dir == NULL && o.partner_id != NULL) {
        snprintf(data_buf, sizeof data_buf, "agent-%s", o.partner_id);
        o.data_dir = data_buf;
    }
    if (export)
        return export_command(&o, argc - optind, argv + optind);
    if (report != 0 && o.data_dir != NULL)
        return print_store(o.data_dir, report == 1);
    if (o.partner_id == NULL || !wire_id_valid(o.partner_id, PARTNER_ID_LEN_MAX)) {
        fprintf(stderr, "coalition-agent: --partner ID is required (1-%d printable characters)\n",
                PARTNER_ID_LEN_MAX);
        return 2;
    }
    if (!wire_id_valid(o.site_id, SITE_ID_LEN_MAX)) {
        fprintf(stderr, "coalition-agent: --site ID must be 1-%d printable characters\n",
                SITE_ID_LEN_MAX);
        return 2;
    }
    if (o.listen_endpoint == NULL) {
        snprintf(listen_buf, sizeof listen_buf, "ipc://%s/%s", o.data_dir, POS_SOCKET_NAME);
        o.listen_endpoint = listen_buf;
    }
    metrics_http_addr_t metrics_addr;
    char metrics_why[METRICS_HTTP_SPEC_BYTES_MAX];
    if (metrics_http_parse(metrics_spec, &metrics_addr, metrics_why, sizeof metrics_why) != CL_OK) {
        fprintf(stderr, "coalition-agent: --metrics %s: %s\n", metrics_spec, metrics_why);
        return 2;
    }
    log_init("coalition-agent", level);
    pan_protect_process(); /* card numbers in flight live in this process */
    umask(077);
    key_pair_t key;
    char broker_public[KEY_Z85_BYTES];
    if (load_keys(insecure, key_path, broker_key_path, o.broker_endpoint, &key, broker_public) != 0)
        return 2;
    o.key = insecure ? NULL : &key;
    o.broker_public_z85 = insecure ? NULL : broker_public;
    int stop_fd = shutdown_fd_open();
    if (stop_fd < 0 || agent_metrics_start(&metrics_addr) != CL_OK) {
        log_error(stop_fd < 0 ? "cannot set up signal handling" : "cannot start the metrics");
        return 1;
    }
    int rc = agent_run(&o, stop_fd);
    agent_metrics_stop();
    if (rc != CL_OK) {
        log_error("stopped on error: %s", cl_strerror(rc));
        return 1;
    }
    log_info("stopped cleanly");
    return 0;
}
