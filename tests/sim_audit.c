/* The end-of-run audit of it_sim: every outcome a till was told, against the agents'
 * journals (the broker's final answers as each agent received them) and the ledger
 * (opened read-only after every process stopped). Requests are grouped by key
 * (partner, site, txn id) and, within a key, by payload (a key reused with another
 * payload is its own group). Each group gets a verdict from what the tills were told
 * (an approval wins; a decline or a 91 for a burn means "not applied"), else from the
 * agent's journal; the ledger must then agree with the verdict, and member balances
 * must equal a model computed from the verdicts alone, with earn and refund points
 * recomputed from the contract. */
#include "sim.h"

#include "ledger.h"
#include "wire.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_FIELD_BYTES 48
#define KEY_BYTES (SIM_ID_BYTES + TXN_ID_LEN_MAX + 8)
#define SIG_BYTES 128
#define WHY_BYTES 512

static const char *const check_names[] = {"tills-told-different",
                                          "journal-disagrees",
                                          "approval-not-in-ledger",
                                          "decline-applied",
                                          "burn-91-applied",
                                          "offline-never-decided",
                                          "key-twice-in-ledger",
                                          "ledger-entry-unowned",
                                          "agent-reversed-approval",
                                          "earn-points",
                                          "burn-points",
                                          "reversal-points",
                                          "reversal-overtook",
                                          "member-balance",
                                          "ledger-verify",
                                          "outbox-drain",
                                          "clean-stop"};

_Static_assert(sizeof check_names / sizeof check_names[0] == CHK_KINDS, "a name per check");

static const char *const how_names[] = {"fresh", "repeat", "twin", "rekey", "ghost"};
_Static_assert(sizeof how_names / sizeof how_names[0] == HOW_KINDS, "a name per way");

static const char *const kind_names[] = {"earn", "burn", "refund", "void", "balance"};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == REQ_KINDS, "a name per kind");

const char *sim_check_name(check_kind_t kind) { return check_names[kind]; }
const char *sim_how_name(req_how_t how) { return how_names[how]; }
const char *sim_kind_name(req_kind_t kind) { return kind_names[kind]; }

void sim_report(sim_tally_t *tally, uint64_t seed, check_kind_t kind, const char *fmt, ...)
{
    va_list ap;
    tally->anomalies[kind]++;
    printf("it_sim: seed %" PRIu64 ": ANOMALY %s: ", seed, check_names[kind]);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* ---- small containers -------------------------------------------------------------- */

typedef struct ivec {
    int *v;
    size_t n, cap;
} ivec_t;

static void ivec_push(ivec_t *x, int value)
{
    if (x->n == x->cap) {
        size_t cap = x->cap == 0 ? 4 : 2 * x->cap;
        int *v = realloc(x->v, cap * sizeof *v);
        if (v == NULL) {
            fprintf(stderr, "it_sim: out of memory\n");
            exit(2);
        }
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n++] = value;
}

static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return p;
    *cap = *cap == 0 ? 64 : 2 * *cap;
    void *q = realloc(p, *cap * size);
    if (q == NULL) {
        fprintf(stderr, "it_sim: out of memory\n");
        exit(2);
    }
    return q;
}

/* String -> int, open addressing; the strings are owned by the map. */
typedef struct smap {
    char **keys;
    int *values;
    size_t cap, n;
} smap_t;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int smap_get(const smap_t *m, const char *k)
{
    if (m->cap == 0)
        return -1;
    for (size_t i = hash_str(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == NULL)
            return -1;
        if (strcmp(m->keys[i], k) == 0)
            return m->values[i];
    }
}

static void smap_put(smap_t *m, const char *k, int value);

static void smap_rehash(smap_t *m)
{
    smap_t bigger = {NULL, NULL, m->cap == 0 ? 1024 : 2 * m->cap, 0};
    bigger.keys = calloc(bigger.cap, sizeof *bigger.keys);
    bigger.values = calloc(bigger.cap, sizeof *bigger.values);
    if (bigger.keys == NULL || bigger.values == NULL) {
        fprintf(stderr, "it_sim: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] != NULL) {
            smap_put(&bigger, m->keys[i], m->values[i]);
            free(m->keys[i]);
        }
    }
    free(m->keys);
    free(m->values);
    *m = bigger;
}

static void smap_put(smap_t *m, const char *k, int value)
{
    if (2 * (m->n + 1) > m->cap)
        smap_rehash(m);
    size_t i = hash_str(k) & (m->cap - 1);
    while (m->keys[i] != NULL && strcmp(m->keys[i], k) != 0)
        i = (i + 1) & (m->cap - 1);
    if (m->keys[i] == NULL) {
        m->keys[i] = strdup(k);
        m->n++;
    }
    m->values[i] = value;
}

static void smap_free(smap_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->values);
}

/* ---- evidence ---------------------------------------------------------------------- */

typedef struct lrow { /* one ledger journal entry */
    uint64_t seq;
    int kind;
    int agent, orig_agent; /* -1: the operator or a site not under test */
    char txn[TXN_ID_LEN_MAX + 1];
    char member[MEMBER_ID_LEN_MAX + 1];
    char orig_txn[TXN_ID_LEN_MAX + 1];
    int64_t points, amount_minor;
    int group; /* the request group it applies, or -1 */
} lrow_t;

typedef struct jrow { /* one line of an agent's journal */
    int agent;
    char type[JSON_FIELD_BYTES];
    char txn[TXN_ID_LEN_MAX + 1];
    char member[MEMBER_ID_LEN_MAX + 1];
    int code;
    int64_t points;
    uint64_t ledger_seq;
    bool replay;
} jrow_t;

typedef struct group { /* the requests of one key with one payload */
    int key;
    char sig[SIG_BYTES];
    ivec_t reqs, lrows, jrows;
    /* what the tills were told */
    bool told_approved, told_declined, told_burn_91, told_offline;
    bool tills_disagree, burn_split, journal_disagrees;
    int first; /* request index of the first definitive answer, or -1 */
    int first_att;
    /* the verdict */
    bool applied;
    int code;
    uint64_t seq;
    int64_t points;
    const char *source;
} group_t;

typedef struct skey {
    int agent;
    char txn[TXN_ID_LEN_MAX + 1];
    ivec_t groups, lrows, jrows;
    ivec_t reversed_by; /* ledger rows naming this key as their original */
} skey_t;

typedef struct audit {
    const sim_evidence_t *ev;
    sim_tally_t *tally;
    size_t nreq;
    lrow_t *l;
    size_t nl, capl;
    int *l_by_seq; /* ledger seq -> row, -1 */
    size_t l_by_seq_n;
    jrow_t *j;
    size_t nj, capj;
    skey_t *keys;
    size_t nkeys, capk;
    group_t *groups;
    size_t ngroups, capg;
    smap_t keymap;     /* "agent|txn" -> key */
    smap_t agent_txns; /* "agent|txn" of agent-made ledger entries -> count */
    long found, printed;
} audit_t;

static const request_t *req(const audit_t *au, int i) { return &au->ev->reqs[i]; }
static void print_key(const audit_t *au, int k);
static void checked(audit_t *au, check_kind_t kind) { au->tally->checked[kind]++; }
__attribute__((format(printf, 4, 5))) static void anomaly(audit_t *au, check_kind_t kind, int key,
                                                          const char *fmt, ...);

static int site_index(const char *partner, const char *site)
{
    for (int a = 0; a < SIM_AGENTS; a++)
        if (strcmp(sim_sites[a].partner, partner) == 0 && strcmp(sim_sites[a].site, site) == 0)
            return a;
    return -1;
}

static int64_t partner_rate_milli(int agent)
{
    for (size_t p = 0; p < sim_partner_count; p++)
        if (strcmp(sim_partners[p].id, sim_sites[agent].partner) == 0)
            return sim_partners[p].rate_milli;
    return -1;
}

static void key_name(char *buf, int agent, const char *txn)
{
    snprintf(buf, KEY_BYTES, "%d|%s", agent, txn);
}

static int collect_lrow(const journal_entry_t *e, void *ctx)
{
    audit_t *au = ctx;
    au->l = grow(au->l, &au->capl, au->nl, sizeof *au->l);
    lrow_t *r = &au->l[au->nl++];
    memset(r, 0, sizeof *r);
    r->seq = e->seq;
    r->kind = (int)e->kind;
    r->agent = site_index(e->partner_id, e->site_id);
    r->orig_agent =
        e->original_txn_id[0] != '\0'
            ? site_index(e->partner_id,
                         e->original_site_id[0] != '\0' ? e->original_site_id : e->site_id)
            : -1;
    snprintf(r->txn, sizeof r->txn, "%s", e->txn_id);
    snprintf(r->member, sizeof r->member, "%s", e->member_id);
    snprintf(r->orig_txn, sizeof r->orig_txn, "%s", e->original_txn_id);
    r->points = e->points;
    r->amount_minor = e->amount_minor;
    r->group = -1;
    return 0;
}

static const char *json_field(const char *line, const char *name)
{
    char pattern[JSON_FIELD_BYTES];
    snprintf(pattern, sizeof pattern, "\"%s\":", name);
    const char *p = strstr(line, pattern);
    return p != NULL ? p + strlen(pattern) : NULL;
}

static void json_str(const char *line, const char *name, char *out, size_t size)
{
    const char *p = json_field(line, name);
    size_t n = 0;
    if (p != NULL && *p == '"') {
        for (p++; *p != '\0' && *p != '"' && n + 1 < size; p++) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            out[n++] = *p;
        }
    }
    out[n] = '\0';
}

static int64_t json_int(const char *line, const char *name, bool *ok)
{
    const char *p = json_field(line, name);
    if (p == NULL) {
        *ok = false;
        return 0;
    }
    if (*p == '"')
        p++;
    return strtoll(p, NULL, 10);
}

static bool load_journal(audit_t *au, int agent, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char *line = NULL;
    size_t cap = 0;
    bool ok = true;
    while (getline(&line, &cap, f) > 0) {
        au->j = grow(au->j, &au->capj, au->nj, sizeof *au->j);
        jrow_t *r = &au->j[au->nj++];
        memset(r, 0, sizeof *r);
        r->agent = agent;
        json_str(line, "type", r->type, sizeof r->type);
        json_str(line, "txn_id", r->txn, sizeof r->txn);
        json_str(line, "member", r->member, sizeof r->member);
        r->code = (int)json_int(line, "code", &ok);
        r->points = json_int(line, "points", &ok);
        r->ledger_seq = (uint64_t)json_int(line, "ledger_seq", &ok);
        const char *replay = json_field(line, "replay");
        r->replay = replay != NULL && strncmp(replay, "true", 4) == 0;
    }
    free(line);
    fclose(f);
    return ok;
}

/* ---- grouping ---------------------------------------------------------------------- */

static void req_sig(const request_t *q, char *buf)
{
    switch (q->kind) {
    case REQ_EARN: snprintf(buf, SIG_BYTES, "earn %s %" PRId64, q->member, q->amount_minor); break;
    case REQ_BURN:
        snprintf(buf, SIG_BYTES, "burn %s %" PRId64 "%s", q->member, q->points,
                 q->allow_partial ? " partial" : "");
        break;
    case REQ_REFUND:
        snprintf(buf, SIG_BYTES, "refund of %s/%s amount %" PRId64 " points %" PRId64,
                 sim_sites[q->orig_agent].site, q->orig_txn, q->amount_minor, q->points);
        break;
    case REQ_VOID:
        snprintf(buf, SIG_BYTES, "void of %s/%s", sim_sites[q->orig_agent].site, q->orig_txn);
        break;
    default: snprintf(buf, SIG_BYTES, "balance %s", q->member); break;
    }
}

static int key_of(audit_t *au, int agent, const char *txn, bool create)
{
    char name[KEY_BYTES];
    key_name(name, agent, txn);
    int k = smap_get(&au->keymap, name);
    if (k >= 0 || !create)
        return k;
    au->keys = grow(au->keys, &au->capk, au->nkeys, sizeof *au->keys);
    skey_t *key = &au->keys[au->nkeys];
    memset(key, 0, sizeof *key);
    key->agent = agent;
    snprintf(key->txn, sizeof key->txn, "%s", txn);
    smap_put(&au->keymap, name, (int)au->nkeys);
    return (int)au->nkeys++;
}

static void group_requests(audit_t *au)
{
    for (size_t i = 0; i < au->nreq; i++) {
        const request_t *q = req(au, (int)i);
        if (q->kind == REQ_BALANCE || !q->att[0].sent)
            continue;
        int k = key_of(au, q->agent, q->txn, true);
        char sig[SIG_BYTES];
        req_sig(q, sig);
        int g = -1;
        for (size_t x = 0; x < au->keys[k].groups.n && g < 0; x++)
            if (strcmp(au->groups[au->keys[k].groups.v[x]].sig, sig) == 0)
                g = au->keys[k].groups.v[x];
        if (g < 0) {
            au->groups = grow(au->groups, &au->capg, au->ngroups, sizeof *au->groups);
            group_t *gr = &au->groups[au->ngroups];
            memset(gr, 0, sizeof *gr);
            gr->key = k;
            gr->first = -1;
            snprintf(gr->sig, sizeof gr->sig, "%s", sig);
            g = (int)au->ngroups++;
            ivec_push(&au->keys[k].groups, g);
        }
        ivec_push(&au->groups[g].reqs, (int)i);
    }
}

static bool lrow_matches(const lrow_t *r, const request_t *q)
{
    bool same_original = r->orig_agent == q->orig_agent && strcmp(r->orig_txn, q->orig_txn) == 0;
    switch (r->kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN:
        return q->kind == REQ_EARN && strcmp(r->member, q->member) == 0 &&
               r->amount_minor == q->amount_minor;
    case COALITION__ENTRY_KIND__ENTRY_BURN:
        return q->kind == REQ_BURN && strcmp(r->member, q->member) == 0 && r->points <= q->points;
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN:
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN: return q->kind == REQ_REFUND && same_original;
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN:
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN: return q->kind == REQ_VOID && same_original;
    case COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD:
        return (q->kind == REQ_REFUND || q->kind == REQ_VOID) && same_original;
    default: return false;
    }
}

static bool jrow_matches(const jrow_t *r, const request_t *q)
{
    if (strcmp(r->type, sim_kind_name(q->kind)) != 0)
        return false;
    return (q->kind != REQ_EARN && q->kind != REQ_BURN) || strcmp(r->member, q->member) == 0;
}

static void attach_evidence(audit_t *au)
{
    for (size_t i = 0; i < au->nl; i++) {
        lrow_t *r = &au->l[i];
        if (r->agent < 0)
            continue;
        if (r->orig_agent >= 0) {
            int o = key_of(au, r->orig_agent, r->orig_txn, false);
            if (o >= 0)
                ivec_push(&au->keys[o].reversed_by, (int)i);
        }
        int k = key_of(au, r->agent, r->txn, false);
        if (k < 0)
            continue;
        ivec_push(&au->keys[k].lrows, (int)i);
        for (size_t x = 0; x < au->keys[k].groups.n && r->group < 0; x++) {
            group_t *g = &au->groups[au->keys[k].groups.v[x]];
            if (lrow_matches(r, req(au, g->reqs.v[0]))) {
                r->group = au->keys[k].groups.v[x];
                ivec_push(&g->lrows, (int)i);
            }
        }
    }
    for (size_t i = 0; i < au->nj; i++) {
        const jrow_t *r = &au->j[i];
        int k = key_of(au, r->agent, r->txn, false);
        if (k < 0 || r->code == RC_UNAVAILABLE || r->code == RC_SYSTEM_ERROR)
            continue; /* only the broker's final answers decide */
        ivec_push(&au->keys[k].jrows, (int)i);
        bool matched = false;
        for (size_t x = 0; x < au->keys[k].groups.n && !matched; x++) {
            group_t *g = &au->groups[au->keys[k].groups.v[x]];
            matched = jrow_matches(r, req(au, g->reqs.v[0]));
            if (matched)
                ivec_push(&g->jrows, (int)i);
        }
        checked(au, CHK_JOURNAL_DISAGREES);
        if (!matched)
            anomaly(au, CHK_JOURNAL_DISAGREES, k,
                    "agent %s journaled an answer to %s %s for member %s, which no till sent",
                    sim_sites[r->agent].site, r->type, r->txn, r->member);
    }
}

/* ---- describing what went wrong ---------------------------------------------------- */

static void print_attempt(const audit_t *au, const request_t *q, int k)
{
    const attempt_t *a = &q->att[k];
    printf("      till-%d conn %d (%s, op %d, at %" PRId64 "..%" PRId64 " ms): ", q->till, k,
           sim_how_name(q->how), q->index, a->start_ms - au->ev->start_ms,
           a->end_ms - au->ev->start_ms);
    if (!a->answered) {
        printf("no answer\n");
        return;
    }
    printf("code %02d%s%s%s%s%s points %" PRId64 " seq %" PRIu64 "\n", a->code,
           a->approved ? " approved" : "", a->offline ? " offline" : "",
           a->pending ? " pending" : "", a->replay ? " replay" : "", a->reversed ? " reversed" : "",
           a->points, a->seq);
}

static void print_lrow(const lrow_t *r)
{
    printf("      ledger seq %" PRIu64 ": %s %s/%s member %s points %" PRId64 " amount %" PRId64
           "%s%s%s%s\n",
           r->seq, ledger_entry_kind_name(r->kind), r->agent >= 0 ? sim_sites[r->agent].site : "?",
           r->txn, r->member, r->points, r->amount_minor, r->orig_txn[0] != '\0' ? " of " : "",
           r->orig_txn[0] == '\0' ? ""
           : r->orig_agent >= 0   ? sim_sites[r->orig_agent].site
                                  : "?",
           r->orig_txn[0] != '\0' ? "/" : "", r->orig_txn);
}

static void print_requests(const audit_t *au, const skey_t *key)
{
    for (size_t x = 0; x < key->groups.n; x++) {
        const group_t *g = &au->groups[key->groups.v[x]];
        printf("    request: %s (verdict: %s", g->sig, g->applied ? "applied" : "not applied");
        if (g->applied)
            printf(" seq %" PRIu64 " points %" PRId64, g->seq, g->points);
        printf(", from %s)\n", g->source);
        for (size_t i = 0; i < g->reqs.n; i++)
            for (int a = 0; a < SIM_ATTEMPTS_MAX; a++)
                if (req(au, g->reqs.v[i])->att[a].sent)
                    print_attempt(au, req(au, g->reqs.v[i]), a);
    }
    for (size_t i = 0; i < key->jrows.n; i++) {
        const jrow_t *r = &au->j[key->jrows.v[i]];
        printf("      agent journal: %s member %s code %02d points %" PRId64 " ledger seq %" PRIu64
               "%s\n",
               r->type, r->member, r->code, r->points, r->ledger_seq, r->replay ? " replay" : "");
    }
    if (key->jrows.n == 0)
        printf("      agent journal: nothing\n");
    for (size_t i = 0; i < key->lrows.n; i++)
        print_lrow(&au->l[key->lrows.v[i]]);
    if (key->lrows.n == 0)
        printf("      ledger: nothing under this key\n");
}

/* A key: what each till was told, the journal, the ledger, and what reversed it (with
 * what the tills that asked for those reversals were told). */
static void print_key(const audit_t *au, int k)
{
    const skey_t *key = &au->keys[k];
    printf("    key %s/%s/%s\n", sim_sites[key->agent].partner, sim_sites[key->agent].site,
           key->txn);
    print_requests(au, key);
    for (size_t i = 0; i < key->reversed_by.n; i++) {
        const lrow_t *r = &au->l[key->reversed_by.v[i]];
        printf("      reversed by:\n  ");
        print_lrow(r);
        int rk = r->group >= 0 ? au->groups[r->group].key : -1;
        if (rk >= 0 && rk != k) {
            printf("    reversing key %s/%s:\n", sim_sites[au->keys[rk].agent].site,
                   au->keys[rk].txn);
            print_requests(au, &au->keys[rk]);
        }
    }
}

static void anomaly(audit_t *au, check_kind_t kind, int key, const char *fmt, ...)
{
    char why[WHY_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    au->found++;
    if (au->printed >= au->ev->anomalies_to_print) {
        au->tally->anomalies[kind]++;
        return;
    }
    au->printed++;
    sim_report(au->tally, au->ev->seed, kind, "%s", why);
    if (key >= 0)
        print_key(au, key);
}

/* ---- verdicts ---------------------------------------------------------------------- */

static bool approval_code(int code) { return code == RC_APPROVED || code == RC_PARTIAL; }

/* Whether two definitive answers say the same thing. */
static bool same_answer(int code_a, uint64_t seq_a, int64_t points_a, int code_b, uint64_t seq_b,
                        int64_t points_b)
{
    if (code_a != code_b)
        return false;
    return !approval_code(code_a) || (seq_a == seq_b && points_a == points_b);
}

/* A burn told 91 on one connection and approved on another while the first was still
 * waiting: the answers of one pending request differ. (An approval sent after a 91 came
 * back is a new attempt, and may rightly succeed when the first never left the agent.) */
static bool burn_91_overlaps_approval(const audit_t *au, const group_t *g)
{
    for (size_t i = 0; i < g->reqs.n; i++)
        for (int k = 0; k < SIM_ATTEMPTS_MAX; k++) {
            const attempt_t *a = &req(au, g->reqs.v[i])->att[k];
            if (!a->sent || !a->answered || !approval_code(a->code))
                continue;
            for (size_t j = 0; j < g->reqs.n; j++)
                for (int m = 0; m < SIM_ATTEMPTS_MAX; m++) {
                    const attempt_t *b = &req(au, g->reqs.v[j])->att[m];
                    if (b->sent && b->answered && b->code == RC_UNAVAILABLE &&
                        a->start_ms < b->end_ms)
                        return true;
                }
        }
    return false;
}

static void read_tills(audit_t *au, group_t *g)
{
    for (size_t i = 0; i < g->reqs.n; i++) {
        const request_t *q = req(au, g->reqs.v[i]);
        for (int k = 0; k < SIM_ATTEMPTS_MAX; k++) {
            const attempt_t *a = &q->att[k];
            if (!a->sent || !a->answered)
                continue;
            g->told_offline |= a->offline;
            if (a->code == RC_UNAVAILABLE || a->code == RC_SYSTEM_ERROR) {
                g->told_burn_91 |= q->kind == REQ_BURN && a->code == RC_UNAVAILABLE;
                continue;
            }
            g->told_approved |= approval_code(a->code);
            g->told_declined |= !approval_code(a->code);
            if (g->first < 0) {
                g->first = g->reqs.v[i];
                g->first_att = k;
                continue;
            }
            const attempt_t *f = &req(au, g->first)->att[g->first_att];
            g->tills_disagree |=
                !same_answer(f->code, f->seq, f->points, a->code, a->seq, a->points);
        }
    }
    g->burn_split = g->told_approved && g->told_burn_91 && burn_91_overlaps_approval(au, g);
}

static bool agent_reversed(const audit_t *au, const group_t *g)
{
    const skey_t *key = &au->keys[g->key];
    bool found = false;
    for (size_t i = 0; i < key->reversed_by.n; i++)
        found |= au->l[key->reversed_by.v[i]].txn[0] == '~';
    return found && req(au, g->reqs.v[0])->kind == REQ_BURN;
}

static void read_journal(audit_t *au, group_t *g)
{
    if (g->jrows.n == 0)
        return;
    const jrow_t *j0 = &au->j[g->jrows.v[0]];
    for (size_t i = 1; i < g->jrows.n; i++) {
        const jrow_t *r = &au->j[g->jrows.v[i]];
        g->journal_disagrees |=
            !same_answer(j0->code, j0->ledger_seq, j0->points, r->code, r->ledger_seq, r->points);
    }
    /* A burn the agent reversed (after telling a till 91, or after its till went away) may
     * be journaled as approved and refused to later repeats: whether that nets to zero is
     * checked on the ledger, not here. */
    bool reversed_by_agent = (g->told_burn_91 && !g->told_approved) || agent_reversed(au, g);
    if (g->first >= 0 && !reversed_by_agent) {
        const attempt_t *f = &req(au, g->first)->att[g->first_att];
        g->journal_disagrees |=
            !same_answer(f->code, f->seq, f->points, j0->code, j0->ledger_seq, j0->points);
    }
}

/* What the tills and the journal said, against each other. */
static void check_answers(audit_t *au, const group_t *g)
{
    checked(au, CHK_TILLS_DISAGREE);
    if (g->tills_disagree || g->burn_split)
        anomaly(au, CHK_TILLS_DISAGREE, g->key,
                "tills were told different outcomes for one request%s",
                g->burn_split ? " (a burn declined 91 on one attempt after another attempt of "
                                "it had been approved, or while that one waited)"
                              : "");
    if (g->jrows.n > 0) {
        checked(au, CHK_JOURNAL_DISAGREES);
        if (g->journal_disagrees)
            anomaly(au, CHK_JOURNAL_DISAGREES, g->key,
                    "the agent's journal holds an answer other than the one the till was told");
    }
    if (g->told_offline) {
        checked(au, CHK_OFFLINE_UNDECIDED);
        if (g->jrows.n == 0)
            anomaly(au, CHK_OFFLINE_UNDECIDED, g->key,
                    "stored offline, but the agent's journal holds no final answer for it");
    }
}

static void decide(audit_t *au, group_t *g)
{
    if (g->told_approved) {
        const attempt_t *f = NULL;
        for (size_t i = 0; i < g->reqs.n && f == NULL; i++)
            for (int k = 0; k < SIM_ATTEMPTS_MAX && f == NULL; k++) {
                const attempt_t *a = &req(au, g->reqs.v[i])->att[k];
                if (a->sent && a->answered && approval_code(a->code))
                    f = a;
            }
        g->applied = true;
        g->code = f->code;
        g->seq = f->seq;
        g->points = f->points;
        g->source = "a till's answer";
    } else if (g->told_declined || g->told_burn_91) {
        g->source = g->told_declined ? "a till's decline" : "a till's 91";
    } else if (g->jrows.n > 0) {
        const jrow_t *j0 = &au->j[g->jrows.v[0]];
        g->applied = approval_code(j0->code);
        g->code = j0->code;
        g->seq = j0->ledger_seq;
        g->points = j0->points;
        g->source = "the agent's journal";
    } else {
        g->source = "no answer anywhere";
    }
}

/* ---- the ledger against the verdicts ---------------------------------------------- */

/* A burn entry given back in full by the reversals naming it. */
static bool net_zero(const audit_t *au, const lrow_t *burn)
{
    int k = key_of((audit_t *)au, burn->agent, burn->txn, false);
    int64_t back = 0;
    for (size_t i = 0; k >= 0 && i < au->keys[k].reversed_by.n; i++) {
        const lrow_t *r = &au->l[au->keys[k].reversed_by.v[i]];
        if (r->kind == COALITION__ENTRY_KIND__ENTRY_VOID_BURN ||
            r->kind == COALITION__ENTRY_KIND__ENTRY_REFUND_BURN)
            back += r->points;
    }
    return back == burn->points;
}

static void check_group_in_ledger(audit_t *au, group_t *g)
{
    const request_t *q = req(au, g->reqs.v[0]);
    if (g->applied) {
        checked(au, CHK_APPROVAL_NOT_APPLIED);
        bool found = false;
        for (size_t i = 0; i < g->lrows.n; i++) {
            const lrow_t *r = &au->l[g->lrows.v[i]];
            found |= r->seq == g->seq && r->points == g->points;
        }
        if (!found)
            anomaly(au, CHK_APPROVAL_NOT_APPLIED, g->key,
                    "approved (seq %" PRIu64 ", %" PRId64 " points, per %s) but the ledger has "
                    "no such entry",
                    g->seq, g->points, g->source);
        return;
    }
    check_kind_t kind =
        g->told_burn_91 && !g->told_declined ? CHK_BURN_91_APPLIED : CHK_DECLINE_APPLIED;
    checked(au, kind);
    for (size_t i = 0; i < g->lrows.n; i++) {
        const lrow_t *r = &au->l[g->lrows.v[i]];
        if (q->kind != REQ_BURN || !net_zero(au, r)) {
            anomaly(au, kind, g->key,
                    "no till was told it was applied (verdict from %s), but the ledger applied it "
                    "at seq %" PRIu64 " (%" PRId64 " points) and never gave it back",
                    g->source, r->seq, r->points);
            return;
        }
    }
}

static void check_keys(audit_t *au)
{
    for (size_t k = 0; k < au->nkeys; k++) {
        const skey_t *key = &au->keys[k];
        checked(au, CHK_DUPLICATE_KEY);
        if (key->lrows.n > 1)
            anomaly(au, CHK_DUPLICATE_KEY, (int)k, "%zu ledger entries under one key",
                    key->lrows.n);
    }
}

/* Reversals the agent made itself (txn ids it reserves) may only give back a burn that
 * no till was told was approved. */
static void check_agent_reversal(audit_t *au, const lrow_t *r)
{
    char name[KEY_BYTES];
    key_name(name, r->agent, r->txn);
    int seen = smap_get(&au->agent_txns, name);
    smap_put(&au->agent_txns, name, seen < 0 ? 1 : seen + 1);
    checked(au, CHK_DUPLICATE_KEY);
    if (seen >= 1)
        anomaly(au, CHK_DUPLICATE_KEY, -1, "agent-made %s/%s is in the ledger more than once",
                sim_sites[r->agent].site, r->txn);
    checked(au, CHK_AGENT_REVERSED_APPROVED);
    int o = r->orig_agent >= 0 ? key_of(au, r->orig_agent, r->orig_txn, false) : -1;
    const group_t *burn = NULL;
    for (size_t x = 0; o >= 0 && x < au->keys[o].groups.n; x++) {
        const group_t *g = &au->groups[au->keys[o].groups.v[x]];
        if (req(au, g->reqs.v[0])->kind == REQ_BURN && (burn == NULL || g->applied))
            burn = g;
    }
    bool reversal = r->kind == COALITION__ENTRY_KIND__ENTRY_VOID_BURN ||
                    r->kind == COALITION__ENTRY_KIND__ENTRY_REFUND_BURN ||
                    r->kind == COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD;
    if (burn == NULL || !reversal)
        anomaly(au, CHK_AGENT_REVERSED_APPROVED, o,
                "agent-made %s %s (seq %" PRIu64 ") names %s, which is no burn a till sent",
                ledger_entry_kind_name(r->kind), r->txn, r->seq, r->orig_txn);
    else if (burn->applied && r->points > 0)
        anomaly(au, CHK_AGENT_REVERSED_APPROVED, o,
                "agent-made %s %s (seq %" PRIu64 ") gave back %" PRId64
                " points of a burn a till was told was approved",
                ledger_entry_kind_name(r->kind), r->txn, r->seq, r->points);
}

static void check_ledger_rows(audit_t *au)
{
    for (size_t i = 0; i < au->nl; i++) {
        const lrow_t *r = &au->l[i];
        if (r->kind == COALITION__ENTRY_KIND__ENTRY_PARTNER_ADD ||
            r->kind == COALITION__ENTRY_KIND__ENTRY_ENROLL ||
            r->kind == COALITION__ENTRY_KIND__ENTRY_KEY_ADD ||
            r->kind == COALITION__ENTRY_KIND__ENTRY_KEY_REVOKE ||
            r->kind == COALITION__ENTRY_KIND__ENTRY_PARTNER_LIMITS)
            continue; /* the setup, through the operator's socket */
        if (r->agent >= 0 && r->txn[0] == '~') {
            check_agent_reversal(au, r);
            continue;
        }
        checked(au, CHK_FOREIGN_ENTRY);
        if (r->agent < 0 || r->group < 0) {
            printf("it_sim: seed %" PRIu64 ": unowned ledger entry:\n", au->ev->seed);
            print_lrow(r);
            anomaly(au, CHK_FOREIGN_ENTRY, r->agent >= 0 ? key_of(au, r->agent, r->txn, false) : -1,
                    "ledger entry seq %" PRIu64 " (%s %s) matches no request a till sent", r->seq,
                    ledger_entry_kind_name(r->kind), r->txn);
        }
    }
}

/* Every approval an agent journaled (its own reversals included) is in the ledger. */
static void check_journal_rows(audit_t *au)
{
    for (size_t i = 0; i < au->nj; i++) {
        const jrow_t *r = &au->j[i];
        if (!approval_code(r->code) || strcmp(r->type, "balance") == 0)
            continue;
        checked(au, CHK_APPROVAL_NOT_APPLIED);
        int at = r->ledger_seq < au->l_by_seq_n ? au->l_by_seq[r->ledger_seq] : -1;
        const lrow_t *l = at >= 0 ? &au->l[at] : NULL;
        if (l == NULL || l->agent != r->agent || strcmp(l->txn, r->txn) != 0 ||
            l->points != r->points)
            anomaly(au, CHK_APPROVAL_NOT_APPLIED, key_of(au, r->agent, r->txn, false),
                    "agent %s journaled %s %s approved at seq %" PRIu64 " (%" PRId64
                    " points); the ledger has %s there",
                    sim_sites[r->agent].site, r->type, r->txn, r->ledger_seq, r->points,
                    l != NULL ? l->txn : "nothing");
    }
}

/* ---- the model --------------------------------------------------------------------- */

typedef struct model {
    int64_t balance[SIM_MEMBERS];
} model_t;

static int member_index(const char *member) { return atoi(member + 1); }

/* The group of an original that was applied, else its first earn or burn group. */
static const group_t *original_group(const audit_t *au, const request_t *q, bool *applied)
{
    int o = key_of((audit_t *)au, q->orig_agent, q->orig_txn, false);
    const group_t *found = NULL;
    *applied = false;
    for (size_t x = 0; o >= 0 && x < au->keys[o].groups.n; x++) {
        const group_t *g = &au->groups[au->keys[o].groups.v[x]];
        req_kind_t kind = req(au, g->reqs.v[0])->kind;
        if (kind != REQ_EARN && kind != REQ_BURN)
            continue;
        if (g->applied) {
            *applied = true;
            return g;
        }
        if (found == NULL)
            found = g;
    }
    return found;
}

static void model_earn_burn(audit_t *au, model_t *m, const group_t *g)
{
    const request_t *q = req(au, g->reqs.v[0]);
    int member = member_index(q->member);
    if (q->kind == REQ_EARN) {
        int64_t expected =
            q->amount_minor * partner_rate_milli(q->agent) / (SIM_RATE_SCALE * SIM_MINOR_PER_MAJOR);
        checked(au, CHK_EARN_POINTS);
        if (g->points != expected)
            anomaly(au, CHK_EARN_POINTS, g->key,
                    "earn of %" PRId64 " minor at %" PRId64 " milli: expected %" PRId64
                    " points, was told %" PRId64,
                    q->amount_minor, partner_rate_milli(q->agent), expected, g->points);
        m->balance[member] += g->points;
        return;
    }
    checked(au, CHK_BURN_POINTS);
    bool right = g->code == RC_APPROVED
                     ? g->points == q->points
                     : q->allow_partial && g->points > 0 && g->points < q->points;
    if (!right)
        anomaly(au, CHK_BURN_POINTS, g->key,
                "burn of %" PRId64 " points%s answered %02d with %" PRId64 " points", q->points,
                q->allow_partial ? " (partial allowed)" : "", g->code, g->points);
    m->balance[member] -= g->points;
}

typedef struct reversal_ref {
    uint64_t seq;
    int group;
} reversal_ref_t;

static int by_seq(const void *a, const void *b)
{
    uint64_t x = ((const reversal_ref_t *)a)->seq, y = ((const reversal_ref_t *)b)->seq;
    return (x > y) - (x < y);
}

/* Recompute what each approved reversal of an applied original had to give back, in
 * ledger order: a void everything, a refund of a burn its points (0: the rest), a refund
 * of an earn the difference of cumulative shares floor(points * refunded / amount). */
static void check_reversals_of(audit_t *au, const group_t *orig, reversal_ref_t *refs, size_t n)
{
    const request_t *o = req(au, orig->reqs.v[0]);
    int64_t whole_minor = o->kind == REQ_EARN ? o->amount_minor : 0;
    int64_t rev_minor = 0, rev_points = 0;
    qsort(refs, n, sizeof *refs, by_seq);
    for (size_t i = 0; i < n; i++) {
        const group_t *g = &au->groups[refs[i].group];
        const request_t *q = req(au, g->reqs.v[0]);
        int64_t expected;
        if (q->kind == REQ_VOID) {
            expected = orig->points;
            rev_minor = whole_minor;
        } else if (o->kind == REQ_BURN) {
            expected = q->points > 0 ? q->points : orig->points - rev_points;
        } else {
            int64_t amount = q->amount_minor > 0 ? q->amount_minor : whole_minor - rev_minor;
            rev_minor += amount;
            /* points x minor stays far inside int64 at the schedule's sizes */
            int64_t share =
                rev_minor >= whole_minor ? orig->points : orig->points * rev_minor / whole_minor;
            expected = share - rev_points;
        }
        rev_points += expected;
        checked(au, CHK_REVERSAL_POINTS);
        if (g->points != expected)
            anomaly(au, CHK_REVERSAL_POINTS, g->key,
                    "%s gave back %" PRId64 " points; from the original (%" PRId64
                    " points) and the reversals before it, expected %" PRId64,
                    g->sig, g->points, orig->points, expected);
    }
}

static void model_reversals(audit_t *au, model_t *m)
{
    reversal_ref_t *refs = calloc(au->ngroups + 1, sizeof *refs);
    int *of = calloc(au->ngroups + 1, sizeof *of);
    if (refs == NULL || of == NULL) {
        fprintf(stderr, "it_sim: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < au->ngroups; i++) {
        const group_t *g = &au->groups[i];
        const request_t *q = req(au, g->reqs.v[0]);
        of[i] = -1;
        if (!g->applied || (q->kind != REQ_REFUND && q->kind != REQ_VOID))
            continue;
        bool applied = false;
        const group_t *o = original_group(au, q, &applied);
        /* A return at the other site of a burn its own site declined 91 may reach the
         * ledger before that site's reversal of it: a race no agent can order. Then the
         * two cancel (the ledger check wants the burn given back in full) and the model
         * counts neither. At the same site the agent orders them, so it counts. */
        bool race = o != NULL && !applied && q->cross_site;
        if (o != NULL && applied) {
            of[i] = (int)(o - au->groups);
        } else if (!race) {
            checked(au, CHK_REVERSAL_POINTS);
            if (g->points != 0)
                anomaly(au, CHK_REVERSAL_POINTS, g->key,
                        "%s gave back %" PRId64 " points of an original the tills were told "
                        "was not applied (or that never existed)",
                        g->sig, g->points);
        }
        if (o != NULL && !race) {
            const request_t *oq = req(au, o->reqs.v[0]);
            int sign = oq->kind == REQ_EARN ? -1 : 1;
            m->balance[member_index(oq->member)] += sign * g->points;
        }
    }
    for (size_t i = 0; i < au->ngroups; i++) {
        if (!au->groups[i].applied)
            continue;
        size_t n = 0;
        for (size_t r = 0; r < au->ngroups; r++)
            if (of[r] == (int)i)
                refs[n++] = (reversal_ref_t){au->groups[r].seq, (int)r};
        if (n > 0)
            check_reversals_of(au, &au->groups[i], refs, n);
    }
    free(refs);
    free(of);
}

/* A reversal the ledger took before its original although the same agent had taken the
 * original (told its till "stored offline") before the reversal was even sent. */
static void check_overtaking(audit_t *au)
{
    for (size_t i = 0; i < au->ngroups; i++) {
        const group_t *g = &au->groups[i];
        const request_t *q = req(au, g->reqs.v[0]);
        bool ahead = g->lrows.n == 1 &&
                     au->l[g->lrows.v[0]].kind == COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD;
        if (!ahead || q->orig_agent != q->agent)
            continue;
        int64_t sent_ms = q->att[0].start_ms;
        int o = key_of(au, q->orig_agent, q->orig_txn, false);
        bool taken_before = false;
        for (size_t x = 0; o >= 0 && x < au->keys[o].groups.n; x++) {
            const group_t *og = &au->groups[au->keys[o].groups.v[x]];
            for (size_t r = 0; r < og->reqs.n; r++)
                for (int k = 0; k < SIM_ATTEMPTS_MAX; k++) {
                    const attempt_t *a = &req(au, og->reqs.v[r])->att[k];
                    taken_before |= a->sent && a->answered && a->offline && a->end_ms <= sent_ms;
                }
        }
        checked(au, CHK_REVERSAL_OVERTOOK);
        if (taken_before)
            anomaly(au, CHK_REVERSAL_OVERTOOK, o,
                    "%s/%s (%s, sent at %" PRId64 " ms) reached the ledger before its original, "
                    "which the same agent had stored offline before the reversal was sent; the "
                    "original was then declined",
                    sim_sites[q->agent].site, q->txn, g->sig, sent_ms - au->ev->start_ms);
    }
}

/* The ledger entries of a member that the model does not count as the tills were told:
 * an agent's reversal of an approved burn, an entry whose request was not applied, an
 * entry nobody sent. And approvals the model counts that the ledger lacks. */
static void explain_balance(const audit_t *au, const char *member)
{
    for (size_t i = 0; i < au->nl; i++) {
        const lrow_t *r = &au->l[i];
        if (strcmp(r->member, member) != 0 || r->points == 0 || r->agent < 0)
            continue;
        bool given_back = r->kind == COALITION__ENTRY_KIND__ENTRY_BURN && net_zero(au, r);
        bool unexplained =
            r->txn[0] != '~' && !given_back && (r->group < 0 || !au->groups[r->group].applied);
        if (r->txn[0] == '~' && r->orig_agent >= 0) {
            int o = key_of((audit_t *)au, r->orig_agent, r->orig_txn, false);
            for (size_t x = 0; o >= 0 && x < au->keys[o].groups.n; x++)
                unexplained |= au->groups[au->keys[o].groups.v[x]].applied;
        }
        if (unexplained) {
            printf("    in the ledger, not in the model:\n  ");
            print_lrow(r);
        }
    }
    for (size_t g = 0; g < au->ngroups; g++) {
        const group_t *gr = &au->groups[g];
        int at = gr->seq < au->l_by_seq_n ? au->l_by_seq[gr->seq] : -1;
        if (gr->applied && gr->points != 0 && (at < 0 || au->l[at].group != (int)g) &&
            strcmp(req(au, gr->reqs.v[0])->member, member) == 0)
            printf("    in the model, not in the ledger: %s/%s %s (seq %" PRIu64 ", %" PRId64
                   " points)\n",
                   sim_sites[req(au, gr->reqs.v[0])->agent].site, req(au, gr->reqs.v[0])->txn,
                   gr->sig, gr->seq, gr->points);
    }
}

static void check_balances(audit_t *au, ledger_t *l, const model_t *m)
{
    for (int i = 0; i < SIM_MEMBERS; i++) {
        char member[SIM_ID_BYTES];
        int64_t balance = -1;
        snprintf(member, sizeof member, "m%d", i);
        checked(au, CHK_BALANCE);
        int rc = ledger_member_balance(l, member, &balance);
        if (rc == 0 && balance == m->balance[i])
            continue;
        bool shown = au->printed < au->ev->anomalies_to_print;
        anomaly(au, CHK_BALANCE, -1,
                "member %s: the model (tills' answers and agents' journals) says %" PRId64
                ", the ledger says %" PRId64 "%s",
                member, m->balance[i], balance, rc != 0 ? " (read failed)" : "");
        if (shown)
            explain_balance(au, member);
    }
}

static void check_verify(audit_t *au, ledger_t *l)
{
    char why[WHY_BYTES];
    checked(au, CHK_VERIFY);
    if (ledger_verify(l, why, sizeof why) != 0)
        anomaly(au, CHK_VERIFY, -1, "ledger_verify: %s", why);
}

static bool load_ledger(audit_t *au, ledger_t **l)
{
    if (ledger_open(l, au->ev->w->ledger, STORE_READ_ONLY) != 0 ||
        ledger_journal_foreach(*l, 1, collect_lrow, au) != 0)
        return false;
    uint64_t last = au->nl > 0 ? au->l[au->nl - 1].seq : 0;
    au->l_by_seq_n = last + 1;
    au->l_by_seq = malloc(au->l_by_seq_n * sizeof *au->l_by_seq);
    if (au->l_by_seq == NULL)
        return false;
    for (size_t i = 0; i < au->l_by_seq_n; i++)
        au->l_by_seq[i] = -1;
    for (size_t i = 0; i < au->nl; i++)
        au->l_by_seq[au->l[i].seq] = (int)i;
    return true;
}

static void audit_free(audit_t *au)
{
    for (size_t k = 0; k < au->nkeys; k++) {
        free(au->keys[k].groups.v);
        free(au->keys[k].lrows.v);
        free(au->keys[k].jrows.v);
        free(au->keys[k].reversed_by.v);
    }
    for (size_t g = 0; g < au->ngroups; g++) {
        free(au->groups[g].reqs.v);
        free(au->groups[g].lrows.v);
        free(au->groups[g].jrows.v);
    }
    free(au->keys);
    free(au->groups);
    free(au->l);
    free(au->l_by_seq);
    free(au->j);
    smap_free(&au->keymap);
    smap_free(&au->agent_txns);
}

long sim_audit(const sim_evidence_t *ev, sim_tally_t *tally)
{
    audit_t au;
    memset(&au, 0, sizeof au);
    au.ev = ev;
    au.tally = tally;
    au.nreq = SIM_TILLS * ev->per_till;
    ledger_t *l = NULL;
    for (int a = 0; a < SIM_AGENTS; a++)
        if (!load_journal(&au, a, ev->journal_paths[a]))
            anomaly(&au, CHK_JOURNAL_DISAGREES, -1, "agent %s's journal is unreadable (%s)",
                    sim_sites[a].site, ev->journal_paths[a]);
    if (!load_ledger(&au, &l)) {
        anomaly(&au, CHK_VERIFY, -1, "cannot open or walk the ledger %s", ev->w->ledger);
        ledger_destroy(&l);
        audit_free(&au);
        return au.found;
    }
    group_requests(&au);
    attach_evidence(&au);
    for (size_t g = 0; g < au.ngroups; g++) {
        read_tills(&au, &au.groups[g]);
        read_journal(&au, &au.groups[g]);
        decide(&au, &au.groups[g]);
    }
    for (size_t g = 0; g < au.ngroups; g++) {
        check_answers(&au, &au.groups[g]);
        check_group_in_ledger(&au, &au.groups[g]);
    }
    check_keys(&au);
    check_ledger_rows(&au);
    check_journal_rows(&au);
    model_t m;
    memset(&m, 0, sizeof m);
    for (size_t g = 0; g < au.ngroups; g++) {
        const request_t *q = req(&au, au.groups[g].reqs.v[0]);
        if (au.groups[g].applied && (q->kind == REQ_EARN || q->kind == REQ_BURN))
            model_earn_burn(&au, &m, &au.groups[g]);
    }
    model_reversals(&au, &m);
    check_overtaking(&au);
    check_balances(&au, l, &m);
    check_verify(&au, l);
    if (au.found > au.printed)
        printf("it_sim: seed %" PRIu64 ": %ld more anomalies not shown\n", ev->seed,
               au.found - au.printed);
    size_t answered_twice = 0;
    for (size_t k = 0; k < au.nkeys; k++)
        answered_twice += au.keys[k].jrows.n > 1;
    printf("it_sim: seed %" PRIu64 ": audited %zu keys (%zu request groups), %zu ledger entries, "
           "%zu agent journal answers (%zu keys answered more than once), %d members\n",
           ev->seed, au.nkeys, au.ngroups, au.nl, au.nj, answered_twice, SIM_MEMBERS);
    long found = au.found;
    ledger_destroy(&l);
    audit_free(&au);
    return found;
}
