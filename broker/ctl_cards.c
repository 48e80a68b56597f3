/* coalitionctl's card commands: bank add, the bulk enrolment file, the card key.
 *
 * enroll streams the bank's file (enrol_file.c: one line held at a time) and sends each
 * valid row to the broker's admin socket as a CardEnrollRequest for the bank, keeping up
 * to ENROL_IN_FLIGHT_MAX requests in flight on one DEALER socket. Each row is one ledger
 * request, applied whole or declined; a row the broker declines is a reject with the
 * broker's reason. Each import is a new run (txn ids "enr-<run>-<row>"): every row is
 * decided again on the ledger's state, and a row that would change nothing is declined
 * "unchanged", so a file imported again (or after an interrupted import) changes nothing
 * it already did, while a later file, even one identical to an earlier one, is applied
 * as the bank means it (an enrolment after an unlink links the card again). The PAN of a row lives
 * in the row, the packed request and ZeroMQ's message (handed over without a copy and cleared when
 * ZeroMQ frees it), and nowhere else; rejects and reports show it masked. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "ctl.h"

#include "card.h"
#include "client.h"
#include "clock.h"
#include "enrol_file.h"
#include "errors.h"
#include "json.h"

#include <assert.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define ENROL_IN_FLIGHT_MAX 4096
#define RUN_ID_BYTES 32
_Static_assert(sizeof "enr--" - 1 + RUN_ID_BYTES - 1 + 20 <= TXN_ID_LEN_MAX,
               "a row's txn id fits: run id and any row number");
#define ENROL_REPLY_TIMEOUT_MS 30000
#define ENROL_PROGRESS_EVERY 2048
_Static_assert((ENROL_IN_FLIGHT_MAX & (ENROL_IN_FLIGHT_MAX - 1)) == 0, "slots by a mask");
_Static_assert(ENROL_IN_FLIGHT_MAX <= 4096, "the broker's admin queue takes the window");

typedef enum {
    OUT_NEW = 0,
    OUT_REPLACED,
    OUT_UNLINKED,
    OUT_UNCHANGED,
    OUT_REJECTED,
    OUT_COUNT
} outcome_t;

typedef struct slot {
    bool busy;
    uint64_t n;
    char txn_id[TXN_ID_LEN_MAX + 1];
    unsigned long line;
    enrol_action_t action;
    char masked[PAN_MASKED_BYTES];
} slot_t;

typedef struct enrol_run {
    ctl_t *ctl;
    const char *bank;
    void *zctx, *sock;
    FILE *rejects;
    char run[RUN_ID_BYTES];
    uint64_t sent, answered;
    uint64_t oldest; /* the oldest row still in flight (replies come mostly in order) */
    uint64_t counts[OUT_COUNT];
    slot_t slots[ENROL_IN_FLIGHT_MAX];
    int64_t last_reply_ms;
    bool tty;
    long file_bytes;
    FILE *in;
    char in_buf[BUFSIZ]; /* the input's stdio buffer: ours, cleared at the end */
} enrol_run_t;

/* ---- bank add ------------------------------------------------------------------------ */

int ctl_bank(ctl_t *ctl, int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "add") != 0) {
        fprintf(stderr, "coalitionctl: usage: bank add ID\n");
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__BankAddRequest body = COALITION__BANK_ADD_REQUEST__INIT;
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    body.bank_id = argv[2];
    env.body_case = COALITION__ENVELOPE__BODY_BANK_ADD;
    env.bank_add = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

/* ---- card settings -------------------------------------------------------------------- */

int ctl_card_settings(ctl_t *ctl, int argc, char **argv)
{
    if (argc == 1) { /* show, from the ledger */
        ledger_t *l = NULL;
        int64_t s = 0;
        int rc = ctl_open_read_only(ctl, &l);
        if (rc != 0)
            return rc;
        rc = ledger_unclaimed_period(l, &s);
        ledger_destroy(&l);
        if (rc != CL_OK) {
            fprintf(stderr, "coalitionctl: card settings: %s\n", cl_strerror(rc));
            return EXIT_DECLINED;
        }
        if (ctl->json)
            printf("{\"unclaimed_period_seconds\":%" PRId64 "}\n", s);
        else
            printf("unclaimed points lapse %" PRId64 " s (%.2f days) after their latest earn\n", s,
                   (double)s / 86400.0);
        return 0;
    }
    int64_t seconds = 0;
    if (argc != 3 || strcmp(argv[1], "--unclaimed-period") != 0 ||
        card_parse_period(argv[2], UNCLAIMED_PERIOD_SECONDS_MAX, &seconds) != 0) {
        fprintf(stderr, "coalitionctl: usage: card-settings [--unclaimed-period N{d|h|m|s}] "
                        "(1 s to 3660 days)\n");
        return EXIT_USAGE;
    }
    envelope_t env;
    char txn_id[TXN_ID_LEN_MAX + 1];
    Coalition__CardSettingsRequest body = COALITION__CARD_SETTINGS_REQUEST__INIT;
    ctl_admin_envelope(&env, txn_id, sizeof txn_id);
    body.unclaimed_period_seconds = seconds;
    env.body_case = COALITION__ENVELOPE__BODY_CARD_SETTINGS;
    env.card_settings = &body;
    return ctl_send_admin(ctl, &env, NULL);
}

/* ---- card key ------------------------------------------------------------------------ */

static int card_key_path(const ctl_t *ctl, const char *given, char *out, size_t size)
{
    if (given != NULL) {
        int n = snprintf(out, size, "%s", given);
        return n > 0 && (size_t)n < size ? CL_OK : CL_ERR_OVERFLOW;
    }
    return card_keys_default_path(ctl->ledger_dir, out, size);
}

/* card-key retire N: only when no card is stored under key N (new cards only ever go
 * under the current key, which cannot be retired, so none can appear after the count). */
static int card_key_retire(ctl_t *ctl, int argc, char **argv)
{
    const char *file = argc == 5 && strcmp(argv[3], "--file") == 0 ? argv[4] : NULL;
    char path[CTL_PATH_BYTES_MAX], *end = NULL;
    unsigned long id = argc >= 3 ? strtoul(argv[2], &end, 10) : 0;
    if ((argc != 3 && file == NULL) || end == argv[2] || *end != '\0' || id == 0 ||
        id > UINT32_MAX || card_key_path(ctl, file, path, sizeof path) != CL_OK) {
        fprintf(stderr, "coalitionctl: usage: card-key retire N [--file FILE]\n");
        return EXIT_USAGE;
    }
    ledger_t *l = NULL;
    uint64_t cards = 0;
    int rc = ctl_open_read_only(ctl, &l);
    if (rc != 0)
        return rc;
    rc = ledger_cards_under_key(l, (uint32_t)id, &cards);
    ledger_destroy(&l);
    if (rc == CL_OK && cards > 0) {
        fprintf(stderr,
                "coalitionctl: %" PRIu64 " card(s) are stored under key %lu; it stays (they "
                "would not be found without it)\n",
                cards, id);
        return EXIT_DECLINED;
    }
    if (rc == CL_OK)
        rc = card_keys_retire(path, (uint32_t)id);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: card-key retire %lu in %s: %s%s\n", id, path,
                cl_strerror(rc), rc == CL_ERR_INVALID ? " (the current key stays)" : "");
        return EXIT_DECLINED;
    }
    printf("key %lu removed from %s (no card was stored under it); restart the broker\n", id, path);
    return 0;
}

int ctl_card_key(ctl_t *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "retire") == 0)
        return card_key_retire(ctl, argc, argv);
    const char *file = argc == 4 && strcmp(argv[2], "--file") == 0 ? argv[3] : NULL;
    bool rotate = argc >= 2 && strcmp(argv[1], "rotate") == 0;
    bool list = argc >= 2 && strcmp(argv[1], "list") == 0;
    char path[CTL_PATH_BYTES_MAX];
    if ((!rotate && !list) || (argc != 2 && file == NULL) ||
        card_key_path(ctl, file, path, sizeof path) != CL_OK) {
        fprintf(stderr, "coalitionctl: usage: card-key rotate|list [--file FILE] | "
                        "card-key retire N [--file FILE]\n");
        return EXIT_USAGE;
    }
    card_keys_t keys;
    char why[256] = "";
    int rc = CL_OK;
    uint32_t id = 0;
    if (rotate)
        rc = card_keys_rotate(path, &id);
    if (rc == CL_OK)
        rc = card_keys_load(path, &keys, why, sizeof why);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: card key file %s: %s%s%s\n", path, cl_strerror(rc),
                why[0] ? ": " : "", why);
        return EXIT_DECLINED;
    }
    printf("card key file %s: keys", path);
    for (size_t i = 0; i < keys.count; i++)
        printf(" %u", keys.keys[i].id);
    printf("; current %u\n", card_keys_current(&keys)->id);
    if (rotate)
        printf("added key %u: new cards are stored under it; cards enrolled before stay under "
               "their key, which stays in the file. Restart the broker to use it.\n",
               id);
    explicit_bzero(&keys, sizeof keys);
    return 0;
}

/* ---- enroll ---------------------------------------------------------------------------- */

static const char *outcome_name(outcome_t o)
{
    static const char *names[OUT_COUNT] = {"new", "replaced", "unlinked", "unchanged", "rejected"};
    return names[o];
}

static void reject(enrol_run_t *r, unsigned long line, const char *masked, const char *reason)
{
    assert(masked != NULL && reason != NULL && strlen(masked) < PAN_MASKED_BYTES);
    r->counts[OUT_REJECTED]++;
    FILE *out = r->rejects != NULL ? r->rejects : stderr;
    fprintf(out, "%lu,%s,", line, masked);
    json_write_string(out, reason); /* quoted, so a comma in a reason stays one field */
    fputc('\n', out);
}

static outcome_t outcome_of(const slot_t *s, const authorization_t *auth)
{
    if (auth->code == RC_APPROVED && auth->replay)
        return OUT_UNCHANGED; /* applied by an earlier import of this file */
    if (auth->code == RC_APPROVED)
        return s->action == ENROL_ACTION_REPLACE  ? OUT_REPLACED
               : s->action == ENROL_ACTION_UNLINK ? OUT_UNLINKED
                                                  : OUT_NEW;
    /* "Declined 12: unchanged: ..." (the rules' decline of a row that changes nothing). */
    return auth->code == RC_INVALID_TRANSACTION && strstr(auth->text, ": unchanged: ") != NULL
               ? OUT_UNCHANGED
               : OUT_REJECTED;
}

/* Take one reply, if one comes within `timeout_ms`. */
static int take_reply(enrol_run_t *r, int timeout_ms)
{
    zmq_pollitem_t item = {r->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return CL_ERR_TIMEOUT;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int len = zmq_msg_recv(&msg, r->sock, ZMQ_DONTWAIT);
    authorization_t *auth = len > 0 ? wire_auth_decode(zmq_msg_data(&msg), (size_t)len) : NULL;
    zmq_msg_close(&msg);
    if (auth == NULL)
        return CL_OK; /* not ours; ignored */
    slot_t *s = &r->slots[r->oldest & (ENROL_IN_FLIGHT_MAX - 1)];
    if (!s->busy || strcmp(s->txn_id, auth->txn_id) != 0)
        s = NULL;
    for (size_t i = 0; i < ENROL_IN_FLIGHT_MAX && s == NULL; i++)
        if (r->slots[i].busy && strcmp(r->slots[i].txn_id, auth->txn_id) == 0)
            s = &r->slots[i];
    if (s != NULL) {
        outcome_t o = outcome_of(s, auth);
        if (o == OUT_REJECTED)
            reject(r, s->line, s->masked, auth->text);
        else
            r->counts[o]++;
        s->busy = false;
        r->answered++;
        r->last_reply_ms = clock_mono_ms();
        while (r->oldest < r->sent &&
               !(r->slots[r->oldest & (ENROL_IN_FLIGHT_MAX - 1)].busy &&
                 r->slots[r->oldest & (ENROL_IN_FLIGHT_MAX - 1)].n == r->oldest))
            r->oldest++;
        assert(r->oldest <= r->sent && r->answered <= r->sent);
    }
    wire_auth_free(auth);
    return CL_OK;
}

static void progress(enrol_run_t *r, bool done)
{
    if (!r->tty || (!done && r->sent % ENROL_PROGRESS_EVERY != 0))
        return;
    long at = r->file_bytes > 0 ? ftell(r->in) : 0;
    int pct = r->file_bytes > 0 ? (int)(at * 100 / r->file_bytes) : 100;
    if (done)
        pct = 100;
    char bar[41];
    for (int i = 0; i < 40; i++)
        bar[i] = i < pct * 40 / 100 ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "\r[%s] %3d%% %" PRIu64 " rows sent, %" PRIu64 " answered%s", bar, pct, r->sent,
            r->answered, done ? "\n" : "");
}

/* Wait until slot `s` is free and the rows in flight span less than the slots (`all`:
 * until every row is answered), or the broker has been silent too long. */
static int wait_slot(enrol_run_t *r, const slot_t *s, bool all)
{
    while (s->busy || r->sent - r->oldest >= (all ? 1 : ENROL_IN_FLIGHT_MAX)) {
        int rc = take_reply(r, 1000);
        if (rc == CL_ERR_TIMEOUT && clock_mono_ms() - r->last_reply_ms > ENROL_REPLY_TIMEOUT_MS)
            return CL_ERR_TIMEOUT;
    }
    return CL_OK;
}

static void set_card(Coalition__Card *c, const char *pan, char masked[PAN_MASKED_BYTES])
{
    pan_mask(pan, masked);
    c->pan = (char *)pan;
    c->masked = masked;
}

/* The row's txn id: this run and the row's place in it, zero-padded so that an import's
 * idempotency records sort together. */
static void row_txn_id(const enrol_run_t *r, char out[TXN_ID_LEN_MAX + 1])
{
    snprintf(out, TXN_ID_LEN_MAX + 1, "enr-%s-%09" PRIu64, r->run, r->sent);
    assert(wire_id_valid(out, TXN_ID_LEN_MAX));
}

static int send_row(const enrol_row_t *row, void *ctx)
{
    enrol_run_t *r = ctx;
    slot_t *s = &r->slots[r->sent & (ENROL_IN_FLIGHT_MAX - 1)];
    int rc = wait_slot(r, s, false);
    if (rc != CL_OK)
        return rc;
    char new_masked[PAN_MASKED_BYTES];
    envelope_t env;
    ctl_admin_envelope(&env, s->txn_id, sizeof s->txn_id);
    row_txn_id(r, s->txn_id);
    Coalition__CardEnrollRequest body = COALITION__CARD_ENROLL_REQUEST__INIT;
    Coalition__Card card = COALITION__CARD__INIT, new_card = COALITION__CARD__INIT;
    body.bank_id = (char *)r->bank;
    body.bank_ref = (char *)row->bank_ref;
    body.member_id = (char *)row->member_id;
    body.action = row->action == ENROL_ACTION_UNLINK    ? COALITION__CARD_ACTION__CARD_UNLINK
                  : row->action == ENROL_ACTION_REPLACE ? COALITION__CARD_ACTION__CARD_REPLACE
                                                        : COALITION__CARD_ACTION__CARD_ENROL;
    set_card(&card, row->pan, s->masked);
    body.card = &card;
    if (row->action == ENROL_ACTION_REPLACE) {
        set_card(&new_card, row->new_pan, new_masked);
        body.new_card = &new_card;
    }
    env.body_case = COALITION__ENVELOPE__BODY_CARD_ENROLL;
    env.card_enroll = &body;
    size_t len = 0;
    uint8_t *buf = wire_pack_envelope(&env, &len);
    if (buf == NULL)
        return CL_ERR_NOMEM;
    assert(!s->busy && r->sent - r->oldest < ENROL_IN_FLIGHT_MAX);
    s->busy = true;
    s->n = r->sent++;
    s->line = row->line;
    s->action = row->action;
    progress(r, false);
    return client_send_secret(r->sock, buf, len);
}

static int take_reject(unsigned long line, const char *masked, const char *reason, void *ctx)
{
    reject(ctx, line, masked, reason);
    return CL_OK;
}

static int open_rejects(const char *path, FILE **out)
{
    *out = NULL;
    if (path == NULL)
        return CL_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (*out == NULL) {
        if (fd >= 0)
            close(fd);
        return CL_ERR_IO;
    }
    fputs("line,masked_pan,reason\n", *out);
    return CL_OK;
}

/* This process's peak resident memory in KiB (VmHWM; 0 if unknown). */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kib;
}

static void report(const enrol_run_t *r, const char *file, double seconds)
{
    uint64_t rows = 0;
    long peak_kib = peak_rss_kib();
    for (int o = 0; o < OUT_COUNT; o++)
        rows += r->counts[o];
    if (r->ctl->json) {
        printf("{\"file\":");
        json_write_string(stdout, file);
        printf(",\"bank\":");
        json_write_string(stdout, r->bank);
        printf(",\"rows\":%" PRIu64, rows);
        for (int o = 0; o < OUT_COUNT; o++)
            printf(",\"%s\":%" PRIu64, outcome_name((outcome_t)o), r->counts[o]);
        printf(",\"seconds\":%.3f,\"peak_rss_kib\":%ld}\n", seconds, peak_kib);
        return;
    }
    printf("enrolment %s for bank %s: %" PRIu64 " rows: %" PRIu64 " new, %" PRIu64
           " replaced, %" PRIu64 " unlinked, %" PRIu64 " unchanged, %" PRIu64
           " rejected (%.1f s, %.0f rows/s, peak memory %.1f MiB)\n",
           file, r->bank, rows, r->counts[OUT_NEW], r->counts[OUT_REPLACED],
           r->counts[OUT_UNLINKED], r->counts[OUT_UNCHANGED], r->counts[OUT_REJECTED], seconds,
           seconds > 0 ? (double)rows / seconds : 0.0, (double)peak_kib / 1024.0);
}

static int enrol_connect(enrol_run_t *r)
{
    r->zctx = zmq_ctx_new();
    r->sock = r->zctx != NULL ? zmq_socket(r->zctx, ZMQ_DEALER) : NULL;
    int hwm = ENROL_IN_FLIGHT_MAX * 2, linger = 0;
    if (r->sock == NULL || zmq_setsockopt(r->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(r->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(r->sock, r->ctl->admin_endpoint) != 0)
        return CL_ERR_IO;
    return CL_OK;
}

static int enrol_file(enrol_run_t *r, const char *file, char *why, size_t why_size)
{
    int rc = enrol_connect(r);
    r->last_reply_ms = clock_mono_ms(); /* the broker's silence is counted from here */
    if (rc == CL_OK)
        rc = enrol_file_read(r->in, send_row, take_reject, r, why, why_size);
    r->last_reply_ms = clock_mono_ms();
    for (size_t i = 0; rc == CL_OK && i < ENROL_IN_FLIGHT_MAX; i++)
        rc = wait_slot(r, &r->slots[i], true);
    progress(r, true);
    if (rc == CL_ERR_TIMEOUT)
        snprintf(why, why_size,
                 "the broker stopped answering on %s after %" PRIu64 " of %" PRIu64
                 " rows; the file can be imported again (rows applied are unchanged)",
                 r->ctl->admin_endpoint, r->answered, r->sent);
    (void)file;
    return rc;
}

typedef struct enrol_args {
    const char *bank, *file, *rejects;
} enrol_args_t;

static int enrol_args(int argc, char **argv, enrol_args_t *a)
{
    static const struct option longopts[] = {{"bank", required_argument, NULL, 'b'},
                                             {"file", required_argument, NULL, 'f'},
                                             {"rejects", required_argument, NULL, 'r'},
                                             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "b:f:r:", longopts, NULL)) != -1) {
        if (c == 'b')
            a->bank = optarg;
        else if (c == 'f')
            a->file = optarg;
        else if (c == 'r')
            a->rejects = optarg;
        else
            return -1;
    }
    if (a->bank == NULL || a->file == NULL || optind != argc ||
        !wire_id_valid(a->bank, PARTNER_ID_LEN_MAX)) {
        fprintf(stderr, "coalitionctl: usage: enroll --bank B --file F [--rejects R]\n");
        return -1;
    }
    return 0;
}

/* The input, its stdio buffer ours (to clear), and the rejects file. */
static int enrol_open(enrol_run_t *r, const enrol_args_t *a)
{
    r->in = strcmp(a->file, "-") == 0 ? stdin : fopen(a->file, "r");
    if (r->in == NULL)
        return CL_ERR_IO;
    setvbuf(r->in, r->in_buf, _IOFBF, sizeof r->in_buf);
    struct stat st;
    r->file_bytes = fstat(fileno(r->in), &st) == 0 ? (long)st.st_size : 0;
    return open_rejects(a->rejects, &r->rejects);
}

static void enrol_close(enrol_run_t *r)
{
    if (r->in != NULL && r->in != stdin)
        fclose(r->in);
    if (r->in == stdin)
        setvbuf(stdin, NULL, _IONBF, 0); /* our buffer is about to be cleared and freed */
    pan_clear(r->in_buf, sizeof r->in_buf);
    if (r->sock != NULL)
        zmq_close(r->sock);
    if (r->zctx != NULL)
        zmq_ctx_term(r->zctx);
}

int ctl_enroll(ctl_t *ctl, int argc, char **argv)
{
    enrol_args_t a;
    if (enrol_args(argc, argv, &a) != 0)
        return EXIT_USAGE;
    enrol_run_t *r = calloc(1, sizeof *r); /* large: slots and the input buffer */
    if (r == NULL)
        return EXIT_DECLINED;
    r->ctl = ctl;
    r->bank = a.bank;
    snprintf(r->run, sizeof r->run, "%" PRId64 "-%ld", clock_wall_ms(), (long)getpid());
    r->tty = isatty(STDERR_FILENO) == 1;
    char why[256] = "";
    int64_t start = clock_mono_ms();
    int rc = enrol_open(r, &a);
    if (rc == CL_OK)
        rc = enrol_file(r, a.file, why, sizeof why);
    if (rc == CL_OK || rc == CL_ERR_TIMEOUT)
        report(r, a.file, (double)(clock_mono_ms() - start) / 1000.0);
    if (rc != CL_OK)
        fprintf(stderr, "coalitionctl: enroll %s: %s%s%s\n", a.file, cl_strerror(rc),
                why[0] ? ": " : "", why);
    if (r->rejects != NULL && fclose(r->rejects) != 0 && rc == CL_OK)
        rc = CL_ERR_IO;
    enrol_close(r);
    bool any_rejected = r->counts[OUT_REJECTED] > 0;
    free(r);
    return rc == CL_ERR_TIMEOUT || rc == CL_ERR_IO ? EXIT_USAGE
           : rc != CL_OK || any_rejected           ? EXIT_DECLINED
                                                   : 0;
}
