/* coalitionctl reconcile --partner P --window ID --agent-journal FILE: match an agent's
 * export of a settlement window (coalition-agent export) line by line against the
 * ledger's entries of that window for the partner, keyed by (site, txn id), and list
 * every transaction missing on either side or differing in kind, points, money or fee,
 * with the reason when it is known. Exit 0 when everything matches, 1 otherwise.
 *
 * The export's header names its partner, site and window, which must be the ones asked
 * for; only that site is compared (one agent serves one site), so an empty export of a
 * busy site shows every ledger entry missing. The ledger's read is in bounded journal
 * slices, the export is read line by line. */
#include "ctl.h"

#include "errors.h"
#include "json.h"
#include "settle.h"

#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECONCILE_ITEMS_MAX 10000000u
#define RECONCILE_LINE_BYTES_MAX 4096
#define RECONCILE_SITES_MAX 1 /* an export covers its agent's one site */
#define KIND_BYTES 16

typedef struct item {
    char site[SITE_ID_LEN_MAX + 1];
    char txn[TXN_ID_LEN_MAX + 1];
    char kind[KIND_BYTES];
    int64_t points, money, fee;
    uint64_t seq;
    bool outbox;
} item_t;

typedef struct side {
    item_t *items;
    size_t n, cap;
} side_t;

typedef struct recon {
    ctl_t *ctl;
    ledger_t *ledger;
    const char *partner;
    uint64_t window;
    settle_window_t w;
    side_t agent, ledger_side;
    char sites[RECONCILE_SITES_MAX][SITE_ID_LEN_MAX + 1];
    size_t n_sites;
    uint64_t matched, differences;
} recon_t;

static item_t *side_add(side_t *s)
{
    if (s->n == s->cap) {
        size_t cap = s->cap == 0 ? 1024 : 2 * s->cap;
        item_t *grown = cap <= RECONCILE_ITEMS_MAX ? realloc(s->items, cap * sizeof *grown) : NULL;
        if (grown == NULL)
            return NULL;
        s->items = grown;
        s->cap = cap;
    }
    item_t *it = &s->items[s->n++];
    memset(it, 0, sizeof *it);
    return it;
}

static int item_cmp(const void *a, const void *b)
{
    const item_t *x = a, *y = b;
    int c = strcmp(x->site, y->site);
    return c != 0 ? c : strcmp(x->txn, y->txn);
}

static bool site_known(const recon_t *r, const char *site)
{
    if (r->n_sites == 0)
        return true; /* an empty export of an agent that does not know its site */
    for (size_t i = 0; i < r->n_sites; i++)
        if (strcmp(r->sites[i], site) == 0)
            return true;
    return false;
}

/* The export's first line: its partner and window must be the ones asked for; its site
 * is the one compared (an export with no lines still covers it). */
static bool agent_header(recon_t *r, const char *line)
{
    char kind[32], partner[PARTNER_ID_LEN_MAX + 1];
    int64_t window = 0;
    if (!json_get_string(line, "export", kind, sizeof kind) ||
        strcmp(kind, "coalition-agent") != 0 ||
        !json_get_string(line, "partner", partner, sizeof partner) ||
        !json_get_int(line, "window", &window) || (uint64_t)window != r->window ||
        !json_get_string(line, "site", r->sites[0], sizeof r->sites[0]))
        return false;
    /* An agent that holds nothing does not know its partner or site: its empty export is
     * compared with every site of the partner. */
    if (partner[0] == '\0' && r->sites[0][0] == '\0') {
        r->n_sites = 0;
        return true;
    }
    if (strcmp(partner, r->partner) != 0 || !wire_id_valid(r->sites[0], SITE_ID_LEN_MAX))
        return false;
    r->n_sites = 1;
    return true;
}

/* One export line into the agent side; false when it is not one. */
static bool agent_line(recon_t *r, const char *line)
{
    char status[16], type[KIND_BYTES];
    item_t it;
    memset(&it, 0, sizeof it);
    if (!json_get_string(line, "status", status, sizeof status) ||
        !json_get_string(line, "site", it.site, sizeof it.site) ||
        !json_get_string(line, "txn_id", it.txn, sizeof it.txn) ||
        !json_get_string(line, "type", type, sizeof type))
        return false;
    snprintf(it.kind, sizeof it.kind, "%s", type);
    it.outbox = strcmp(status, "outbox") == 0;
    int64_t seq = 0;
    if (!it.outbox && (!json_get_int(line, "points", &it.points) ||
                       !json_get_int(line, "money_minor", &it.money) ||
                       !json_get_int(line, "fee_minor", &it.fee) ||
                       !json_get_int(line, "ledger_seq", &seq)))
        return false;
    it.seq = (uint64_t)seq;
    if (!site_known(r, it.site))
        return false; /* an agent serves one site: its header's */
    item_t *slot = side_add(&r->agent);
    if (slot == NULL)
        return false;
    *slot = it;
    return true;
}

static int read_agent(recon_t *r, const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        fprintf(stderr, "coalitionctl: cannot open %s\n", path);
        return EXIT_USAGE;
    }
    char line[RECONCILE_LINE_BYTES_MAX];
    unsigned long number = 0;
    int rc = 0;
    if (fgets(line, sizeof line, f) == NULL || !agent_header(r, line)) {
        fprintf(stderr, "coalitionctl: %s does not begin with the export header of partner %s, "
                        "window %" PRIu64 " (coalition-agent --partner %s export --window %" PRIu64
                        ")\n",
                path, r->partner, r->window, r->partner, r->window);
        fclose(f);
        return EXIT_USAGE;
    }
    number++;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        number++;
        if (line[0] == '\n')
            continue;
        if (strchr(line, '\n') == NULL || !agent_line(r, line)) {
            fprintf(stderr, "coalitionctl: %s line %lu is not an agent export line\n", path,
                    number);
            rc = EXIT_USAGE;
        }
    }
    fclose(f);
    return rc;
}

/* Keep one agent item per key: an answer over an outbox copy, the first answer over its
 * replays (which repeat it). */
static void dedupe(side_t *s)
{
    size_t out = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (out > 0 && item_cmp(&s->items[out - 1], &s->items[i]) == 0) {
            if (s->items[out - 1].outbox && !s->items[i].outbox)
                s->items[out - 1] = s->items[i];
            continue;
        }
        s->items[out++] = s->items[i];
    }
    s->n = out;
}

/* The request type an agent journals for a ledger entry kind ("" for none). */
static const char *agent_type(int kind)
{
    switch (kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN: return "earn";
    case COALITION__ENTRY_KIND__ENTRY_BURN: return "burn";
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN: return "refund";
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN: return "void";
    case COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD: return "reversal";
    default: return "";
    }
}

static int take_ledger_entry(recon_t *r, const journal_entry_t *e)
{
    assert(r->n_sites <= 1); /* the export's header named its site, or it holds nothing */
    const char *type = agent_type(e->kind);
    if (e->window_id != r->w.id || type[0] == '\0' || strcmp(e->partner_id, r->partner) != 0 ||
        !site_known(r, e->site_id))
        return CL_OK;
    item_t *it = side_add(&r->ledger_side);
    if (it == NULL)
        return CL_ERR_NOMEM;
    snprintf(it->site, sizeof it->site, "%s", e->site_id);
    snprintf(it->txn, sizeof it->txn, "%s", e->txn_id);
    snprintf(it->kind, sizeof it->kind, "%s", type);
    it->points = e->points;
    it->money = e->settle_minor;
    it->fee = e->fee_minor;
    it->seq = e->seq;
    return CL_OK;
}

/* The window's entries, from its first seq to its last (the open one: to the end). */
static int read_ledger(recon_t *r)
{
    journal_entry_t *entries[LEDGER_SLICE_RECORDS_MAX];
    uint64_t next = r->w.first_seq;
    bool open = r->w.state == COALITION__WINDOW_STATE__WINDOW_OPEN;
    size_t n = LEDGER_SLICE_RECORDS_MAX;
    int rc = CL_OK;
    while (rc == CL_OK && n == LEDGER_SLICE_RECORDS_MAX && (open || next <= r->w.last_seq)) {
        rc = ledger_journal_slice(r->ledger, next, entries, LEDGER_SLICE_RECORDS_MAX, &n);
        for (size_t i = 0; rc == CL_OK && i < n; i++)
            if (open || entries[i]->seq <= r->w.last_seq)
                rc = take_ledger_entry(r, entries[i]);
        if (n > 0)
            next = entries[n - 1]->seq + 1;
        ledger_journal_slice_free(entries, n);
    }
    return rc;
}

/* Where the ledger holds a key the window does not: "window N", or why not. */
static void elsewhere(recon_t *r, const item_t *it, char *out, size_t size)
{
    uint64_t seq = 0;
    int rc = ledger_txn_seq(r->ledger, r->partner, it->site, it->txn, &seq);
    journal_entry_t *e[1];
    size_t n = 0;
    if (rc == CL_OK && seq > 0 && ledger_journal_slice(r->ledger, seq, e, 1, &n) == CL_OK &&
        n == 1) {
        snprintf(out, size, "the ledger recorded it in window %" PRIu64 " (seq %" PRIu64 ")",
                 e[0]->window_id, seq);
        ledger_journal_slice_free(e, n);
    } else if (rc == CL_OK) {
        snprintf(out, size, "the ledger declined it or it was reversed before it arrived");
    } else {
        snprintf(out, size, "the ledger has no such transaction");
    }
}

static void report(recon_t *r, const item_t *it, const char *what, const char *reason)
{
    r->differences++;
    if (r->ctl->json) {
        printf("{\"site\":");
        json_write_string(stdout, it->site);
        printf(",\"txn_id\":");
        json_write_string(stdout, it->txn);
        printf(",\"difference\":");
        json_write_string(stdout, what);
        printf(",\"reason\":");
        json_write_string(stdout, reason);
        printf("}\n");
    } else {
        printf("%s/%s: %s%s%s\n", it->site, it->txn, what, reason[0] != '\0' ? ": " : "", reason);
    }
}

/* Both sides hold the key: the same kind, points, money and fee, or a difference. */
static void compare_pair(recon_t *r, const item_t *a, const item_t *l)
{
    assert(item_cmp(a, l) == 0); /* the same key on both sides */
    char what[256];
    if (a->outbox) {
        snprintf(what, sizeof what, "in the ledger (seq %" PRIu64 "), still in the agent's outbox",
                 l->seq);
        report(r, a, what, "the agent has not journalled the broker's answer yet");
        return;
    }
    /* A refund or void recorded ahead of its original is a reversal-ahead entry. */
    bool same_kind = strcmp(a->kind, l->kind) == 0 ||
                     (strcmp(l->kind, "reversal") == 0 &&
                      (strcmp(a->kind, "refund") == 0 || strcmp(a->kind, "void") == 0));
    if (!same_kind || a->points != l->points || a->money != l->money ||
        a->fee != l->fee || a->seq != l->seq) {
        snprintf(what, sizeof what,
                 "differs: agent %s %" PRId64 " points, %" PRId64 " money, %" PRId64
                 " fee (seq %" PRIu64 "); ledger %s %" PRId64 " points, %" PRId64 " money, %" PRId64
                 " fee (seq %" PRIu64 ")",
                 a->kind, a->points, a->money, a->fee, a->seq, l->kind, l->points, l->money, l->fee,
                 l->seq);
        report(r, a, what, "");
        return;
    }
    r->matched++;
}

static void merge(recon_t *r)
{
    assert(r->matched == 0 && r->differences == 0);
    size_t i = 0, j = 0;
    char reason[160];
    while (i < r->agent.n || j < r->ledger_side.n) {
        const item_t *a = i < r->agent.n ? &r->agent.items[i] : NULL;
        const item_t *l = j < r->ledger_side.n ? &r->ledger_side.items[j] : NULL;
        int c = a == NULL ? 1 : l == NULL ? -1 : item_cmp(a, l);
        if (c == 0) {
            compare_pair(r, a, l);
            i++, j++;
        } else if (c < 0) {
            elsewhere(r, a, reason, sizeof reason);
            report(r, a,
                   a->outbox ? "missing in the ledger: still in the agent's outbox (not delivered)"
                             : "missing in the ledger's window",
                   reason);
            i++;
        } else {
            report(r, l, "missing in the agent's export",
                   "answered after the export, to another agent of the site, or pruned from its "
                   "journal");
            j++;
        }
    }
}

static int reconcile_args(int argc, char **argv, const char **partner, uint64_t *window,
                          const char **file)
{
    static const struct option longopts[] = {{"partner", required_argument, NULL, 'p'},
                                             {"window", required_argument, NULL, 'w'},
                                             {"agent-journal", required_argument, NULL, 'f'},
                                             {NULL, 0, NULL, 0}};
    int c;
    char *end = NULL;
    optind = 0;
    while ((c = getopt_long(argc, argv, "p:w:f:", longopts, NULL)) != -1) {
        if (c == 'p')
            *partner = optarg;
        else if (c == 'w')
            *window = strtoull(optarg, &end, 10);
        else if (c == 'f')
            *file = optarg;
        else
            return EXIT_USAGE;
    }
    if (optind != argc || *partner == NULL || !wire_id_valid(*partner, PARTNER_ID_LEN_MAX) ||
        *window == 0 || (end != NULL && *end != '\0') || *file == NULL) {
        fprintf(stderr, "coalitionctl: usage: reconcile --partner P --window ID --agent-journal "
                        "FILE\n");
        return EXIT_USAGE;
    }
    return 0;
}

int ctl_reconcile(ctl_t *ctl, int argc, char **argv)
{
    recon_t r;
    memset(&r, 0, sizeof r);
    r.ctl = ctl;
    uint64_t window = 0;
    const char *file = NULL;
    int rc = reconcile_args(argc, argv, &r.partner, &window, &file);
    r.window = window;
    if (rc == 0)
        rc = read_agent(&r, file);
    if (rc == 0 && ctl_open_read_only(ctl, &r.ledger) != CL_OK)
        rc = EXIT_USAGE;
    if (rc == 0 && ledger_window(r.ledger, window, &r.w) != CL_OK) {
        fprintf(stderr, "coalitionctl: no settlement window %" PRIu64 "\n", window);
        rc = EXIT_USAGE;
    }
    if (rc == 0 && read_ledger(&r) != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot read the ledger's window %" PRIu64 "\n", window);
        rc = EXIT_USAGE;
    }
    if (rc == 0) {
        if (r.agent.n > 0) /* qsort takes no NULL array, even empty */
            qsort(r.agent.items, r.agent.n, sizeof *r.agent.items, item_cmp);
        dedupe(&r.agent);
        if (r.ledger_side.n > 0)
            qsort(r.ledger_side.items, r.ledger_side.n, sizeof *r.ledger_side.items, item_cmp);
        merge(&r);
        printf(ctl->json ? "{\"partner\":\"%s\",\"window\":%" PRIu64 ",\"matched\":%" PRIu64
                           ",\"differences\":%" PRIu64 "}\n"
                         : "reconcile %s window %" PRIu64 ": %" PRIu64 " matched, %" PRIu64
                           " difference(s)\n",
               r.partner, window, r.matched, r.differences);
        rc = r.differences == 0 ? 0 : EXIT_DECLINED;
    }
    ledger_destroy(&r.ledger);
    free(r.agent.items);
    free(r.ledger_side.items);
    return rc;
}
