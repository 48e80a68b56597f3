/* it_sim: a randomized whole-system test over the real processes, in the spirit of
 * TigerBeetle's simulator. A seed fixes a schedule of till requests (earns, burns,
 * partial burns, refunds and voids, also of originals still pending or at the other site
 * of the partner, repeated keys, keys reused with another payload, balance inquiries,
 * reversals of originals that never existed) and a schedule of faults (broker and agents
 * killed, stopped past the till wait and the heartbeat timeout, restarted). Tills run as
 * threads against the real agents, broker, ZeroMQ and LMDB; every answer is recorded.
 * At the end everything is drained and stopped, and sim_audit.c checks every outcome
 * against the agents' journals and the ledger.
 *
 *   build/tests/it_sim                          3 random seeds, 400 ops each (CTest)
 *   build/tests/it_sim --seeds 50 --ops 3000    a longer run
 *   build/tests/it_sim --seed 1234 --ops 300    replay a seed (the op and fault schedule
 *                                               replay exactly; timing does not)
 *   options: --seed N --seeds K --ops N --faults on|off --keep (keep a failing seed's
 *   directory: process logs, ledger, agent data, answers.tsv with every answer)
 *
 * Exit 0 when every seed passed, 1 when any anomaly was found, 2 on bad usage. */
#include "sim.h"

#include "clock.h"
#include "coalition_pos.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OPS_DEFAULT 400
#define SEEDS_DEFAULT 3
#define OPS_MAX 1000000
#define SEEDS_MAX 100000
/* Agent timing: short, so faults outlast them. Heartbeat timeout is 3 intervals. */
#define TILL_WAIT_MS 300
#define RETRY_MS 150
#define HEARTBEAT_MS 200
/* A till gives up (no answer) this long after the agent should have answered. */
#define TILL_TIMEOUT_MS (TILL_WAIT_MS + 1200)
#define OPS_PER_FAULT 70
#define FAULTS_MIN 2
#define DRAIN_TIMEOUT_MS 60000
#define POLL_MS 20
#define OWN_RECENT 12   /* refunds and voids pick among a till's last originals */
#define SHOW_DEFAULT 25 /* anomalies printed in full per seed */
#define FAILED_LISTED_MAX 100

const sim_site_t sim_sites[SIM_AGENTS] = {
    {"fuel", NULL, "main", -1},
    {"grocer", "north", "north", 2},
    {"grocer", "south", "south", 1},
};
const sim_partner_t sim_partners[] = {{"fuel", "1.25", 1250}, {"grocer", "3.333", 3333}};
const size_t sim_partner_count = sizeof sim_partners / sizeof sim_partners[0];

/* ---- seeded randomness (splitmix64: tiny, and the same on every platform) ---------- */

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int64_t rng_range(rng_t *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static bool rng_chance(rng_t *r, int percent) { return rng_range(r, 1, 100) <= percent; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the op schedule --------------------------------------------------------------- */

typedef struct schedule {
    request_t *reqs; /* SIM_TILLS x per_till */
    size_t per_till;
    /* Per till: indices of its fresh earns and burns, the originals refunds pick from. */
    size_t *originals[SIM_TILLS];
    size_t original_count[SIM_TILLS];
} schedule_t;

static request_t *req_at(const schedule_t *s, int till, size_t i)
{
    return &s->reqs[(size_t)till * s->per_till + i];
}

static int till_of(int agent, int local) { return agent * SIM_TILLS_PER_AGENT + local; }

static void member_name(char *buf, int m) { snprintf(buf, SIM_ID_BYTES, "m%d", m); }

static void gen_earn(rng_t *r, request_t *q)
{
    q->kind = REQ_EARN;
    member_name(q->member, (int)rng_range(r, 0, SIM_MEMBERS - 1));
    q->amount_minor = rng_chance(r, 70) ? rng_range(r, 100, 5000) : rng_range(r, 1, 30000);
}

static void gen_burn(rng_t *r, request_t *q)
{
    q->kind = REQ_BURN;
    member_name(q->member, (int)rng_range(r, 0, SIM_MEMBERS - 1));
    q->points = rng_chance(r, 70) ? rng_range(r, 1, 200) : rng_range(r, 200, 3000);
    q->allow_partial = rng_chance(r, 40);
}

/* The original a refund or void names: one of this till's recent earns or burns, or
 * (at a partner with two sites) one taken at the other site, possibly not sent yet. */
static const request_t *pick_original(rng_t *r, const schedule_t *s, int agent, int till)
{
    int sibling = sim_sites[agent].sibling;
    int from = till;
    if (sibling >= 0 && rng_chance(r, 30))
        from = till_of(sibling, (int)rng_range(r, 0, SIM_TILLS_PER_AGENT - 1));
    size_t n = s->original_count[from];
    if (n == 0)
        return NULL;
    size_t lo = n > OWN_RECENT ? n - OWN_RECENT : 0;
    size_t k = rng_chance(r, 50) ? n - 1 : (size_t)rng_range(r, (int64_t)lo, (int64_t)n - 1);
    return req_at(s, from, s->originals[from][k]);
}

static void gen_reversal(rng_t *r, const schedule_t *s, request_t *q, req_kind_t kind)
{
    const request_t *o = pick_original(r, s, q->agent, till_of(q->agent, q->till));
    if (o == NULL) {
        gen_earn(r, q);
        return;
    }
    q->kind = kind;
    q->orig_agent = o->agent;
    q->cross_site = o->agent != q->agent;
    q->orig_kind = o->kind;
    snprintf(q->orig_txn, sizeof q->orig_txn, "%s", o->txn);
    if (kind == REQ_VOID)
        return;
    int64_t whole = o->kind == REQ_EARN ? o->amount_minor : o->points;
    int64_t part = 0; /* 0: everything not yet refunded */
    int64_t dice = rng_range(r, 1, 100);
    if (dice > 45)
        part = whole > 1 ? rng_range(r, 1, whole - 1) : whole;
    else if (dice > 25)
        part = whole;
    if (o->kind == REQ_EARN)
        q->amount_minor = part;
    else
        q->points = part;
}

static void gen_ghost(rng_t *r, request_t *q)
{
    int sibling = sim_sites[q->agent].sibling;
    q->kind = rng_chance(r, 50) ? REQ_VOID : REQ_REFUND;
    q->how = HOW_GHOST;
    q->orig_agent = sibling >= 0 && rng_chance(r, 40) ? sibling : q->agent;
    q->cross_site = q->orig_agent != q->agent;
    q->orig_kind = REQ_EARN;
    snprintf(q->orig_txn, sizeof q->orig_txn, "g%d-%d", q->till, q->index);
}

/* The same key as an earlier request of this till; REKEY changes the member. */
static void gen_same_key(rng_t *r, const schedule_t *s, request_t *q, int till, bool rekey)
{
    const request_t *prev = NULL;
    if (!rekey) {
        for (size_t i = (size_t)q->index; i-- > 0 && prev == NULL;)
            if (req_at(s, till, i)->kind != REQ_BALANCE)
                prev = req_at(s, till, i);
    } else if (s->original_count[till] > 0) {
        size_t k = (size_t)rng_range(r, 0, (int64_t)s->original_count[till] - 1);
        prev = req_at(s, till, s->originals[till][k]);
    }
    if (prev == NULL) {
        gen_earn(r, q);
        return;
    }
    int index = q->index;
    *q = *prev;
    q->index = index;
    q->how = rekey ? HOW_REKEY : HOW_REPEAT;
    q->twin_delay_ms = 0;
    if (rekey) {
        int m = atoi(prev->member + 1);
        member_name(q->member, (m + 1 + (int)rng_range(r, 0, SIM_MEMBERS - 2)) % SIM_MEMBERS);
    }
}

static void gen_one(rng_t *r, schedule_t *s, int till, size_t i)
{
    request_t *q = req_at(s, till, i);
    memset(q, 0, sizeof *q);
    q->agent = till / SIM_TILLS_PER_AGENT;
    q->till = till % SIM_TILLS_PER_AGENT;
    q->index = (int)i;
    q->how = HOW_FRESH;
    q->orig_agent = -1;
    snprintf(q->txn, sizeof q->txn, "t%d-%zu", q->till, i);
    int64_t dice = rng_range(r, 1, 100);
    if (dice <= 30)
        gen_earn(r, q);
    else if (dice <= 50)
        gen_burn(r, q);
    else if (dice <= 62)
        gen_reversal(r, s, q, REQ_REFUND);
    else if (dice <= 70)
        gen_reversal(r, s, q, REQ_VOID);
    else if (dice <= 76) {
        q->kind = REQ_BALANCE;
        member_name(q->member, (int)rng_range(r, 0, SIM_MEMBERS - 1));
    } else if (dice <= 84)
        gen_same_key(r, s, q, till, false);
    else if (dice <= 91) {
        if (rng_chance(r, 70))
            gen_burn(r, q);
        else
            gen_earn(r, q);
        q->how = HOW_TWIN;
        q->twin_delay_ms =
            rng_chance(r, 60) ? (int)rng_range(r, 0, 3) : (int)rng_range(r, 60, TILL_WAIT_MS - 60);
    } else if (dice <= 95)
        gen_same_key(r, s, q, till, true);
    else
        gen_ghost(r, q);
    if (q->how != HOW_REPEAT && q->how != HOW_REKEY && q->how != HOW_GHOST &&
        (q->kind == REQ_EARN || q->kind == REQ_BURN))
        s->originals[till][s->original_count[till]++] = i;
}

/* Round-robin over the tills, so a request may name an original another till has not
 * sent yet (at the other site), exactly as the same seed always names it. */
static int schedule_make(schedule_t *s, uint64_t seed, size_t ops)
{
    memset(s, 0, sizeof *s);
    s->per_till = (ops + SIM_TILLS - 1) / SIM_TILLS;
    s->reqs = calloc(SIM_TILLS * s->per_till, sizeof *s->reqs);
    if (s->reqs == NULL)
        return -1;
    for (int t = 0; t < SIM_TILLS; t++) {
        s->originals[t] = calloc(s->per_till, sizeof *s->originals[t]);
        if (s->originals[t] == NULL)
            return -1;
    }
    rng_t r = {seed * 0x2545f4914f6cdd1dull + 1};
    for (size_t i = 0; i < s->per_till; i++)
        for (int t = 0; t < SIM_TILLS; t++)
            gen_one(&r, s, t, i);
    return 0;
}

static void schedule_free(schedule_t *s)
{
    free(s->reqs);
    for (int t = 0; t < SIM_TILLS; t++)
        free(s->originals[t]);
    memset(s, 0, sizeof *s);
}

/* ---- the fault schedule ------------------------------------------------------------ */

typedef enum {
    F_BROKER_KILL,            /* SIGKILL, down a while, start again */
    F_BROKER_STOP,            /* SIGSTOP past the till wait (sometimes the heartbeat), SIGCONT */
    F_BROKER_RESTART,         /* SIGTERM and start again: every connection drops */
    F_AGENT_KILL,             /* SIGKILL an agent, start it again on the same data */
    F_AGENT_STOP,             /* SIGSTOP an agent, sometimes past the tills' timeout */
    F_BROKER_STOP_AGENT_KILL, /* an agent killed and restarted while the broker is stopped */
    F_BROKER_STOP_KILL,       /* stopped inside the heartbeat timeout, then killed: what was sent
                                 while it stood is lost, and resends race new requests */
    F_KINDS
} fault_kind_t;

static const char *const fault_names[] = {"broker-kill",     "broker-stop",
                                          "broker-restart",  "agent-kill",
                                          "agent-stop",      "broker-stop+agent-kill",
                                          "broker-stop+kill"};
_Static_assert(sizeof fault_names / sizeof fault_names[0] == F_KINDS, "a name per fault kind");

static const char *fault_name(fault_kind_t k) { return fault_names[k]; }

typedef struct fault {
    fault_kind_t kind;
    long at_ops; /* injected once this many requests are done */
    int agent;
    int hold_ms;
} fault_t;

typedef struct fault_plan {
    fault_t *faults;
    size_t count;
} fault_plan_t;

static int fault_plan_make(fault_plan_t *p, uint64_t seed, size_t ops, bool on)
{
    memset(p, 0, sizeof *p);
    if (!on)
        return 0;
    rng_t r = {seed * 0x9e3779b97f4a7c15ull + 7};
    p->count = ops / OPS_PER_FAULT + (size_t)rng_range(&r, 0, 1);
    if (p->count < FAULTS_MIN)
        p->count = FAULTS_MIN;
    p->faults = calloc(p->count, sizeof *p->faults);
    if (p->faults == NULL)
        return -1;
    for (size_t i = 0; i < p->count; i++) {
        fault_t *f = &p->faults[i];
        int64_t dice = rng_range(&r, 1, 100);
        f->kind = dice <= 15   ? F_BROKER_KILL
                  : dice <= 35 ? F_BROKER_STOP
                  : dice <= 45 ? F_BROKER_RESTART
                  : dice <= 58 ? F_AGENT_KILL
                  : dice <= 71 ? F_AGENT_STOP
                  : dice <= 83 ? F_BROKER_STOP_AGENT_KILL
                               : F_BROKER_STOP_KILL;
        /* Spread over the run, never in its first or last few percent. */
        f->at_ops = (long)(ops * (i + 1) / (p->count + 1)) +
                    (long)rng_range(&r, 0, (int64_t)(ops / (4 * (p->count + 1))));
        f->agent = (int)rng_range(&r, 0, SIM_AGENTS - 1);
        switch (f->kind) {
        case F_BROKER_KILL: /* often back at once: resends then race new requests */
            f->hold_ms = rng_chance(&r, 40) ? 0 : (int)rng_range(&r, 0, 2 * TILL_WAIT_MS);
            break;
        case F_BROKER_STOP:
        case F_BROKER_STOP_AGENT_KILL:
            f->hold_ms = (int)rng_range(&r, TILL_WAIT_MS + 50, 5 * HEARTBEAT_MS + TILL_WAIT_MS);
            break;
        case F_BROKER_STOP_KILL:
            f->hold_ms = (int)rng_range(&r, TILL_WAIT_MS + 50, 3 * HEARTBEAT_MS - 50);
            break;
        case F_AGENT_KILL: f->hold_ms = (int)rng_range(&r, 0, TILL_WAIT_MS); break;
        case F_AGENT_STOP: f->hold_ms = (int)rng_range(&r, 100, TILL_TIMEOUT_MS + 600); break;
        default: break;
        }
    }
    return 0;
}

/* ---- one seed's run ---------------------------------------------------------------- */

/* Tills and faults interleave by progress: fault k starts once the tills have finished
 * at_ops requests, and no till starts a request past that point before fault k has
 * started, so fast tills cannot outrun the fault schedule. */
typedef struct run {
    uint64_t seed;
    world_t w;
    schedule_t sched;
    fault_plan_t plan;
    pthread_mutex_t gate;
    pthread_cond_t progressed;
    long done;             /* requests finished by all tills; under gate */
    int tills_running;     /* till threads not finished; under gate */
    size_t faults_started; /* under gate */
    long faults_by_kind[F_KINDS];
    sim_tally_t *tally;
    int show;
} run_t;

typedef struct till {
    run_t *run;
    int id; /* 0..SIM_TILLS-1 */
    char terminal[16];
} till_t;

static cpos_t *till_connect(const till_t *t)
{
    cpos_t *pos = cpos_new(t->run->w.agents[t->id / SIM_TILLS_PER_AGENT].endpoint, t->terminal);
    if (pos != NULL)
        cpos_set_timeout(pos, TILL_TIMEOUT_MS);
    return pos;
}

static void record(attempt_t *a, int rc, const cpos_result_t *res)
{
    a->end_ms = clock_mono_ms();
    a->answered = rc == CPOS_OK;
    if (!a->answered)
        return;
    a->code = res->code;
    a->approved = res->approved;
    a->replay = res->replay;
    a->reversed = res->reversed;
    a->offline = res->offline;
    a->pending = res->pending;
    a->points = res->points;
    a->balance = res->balance;
    a->seq = res->seq;
}

static void send_request(cpos_t *pos, const request_t *q, attempt_t *a)
{
    cpos_result_t res;
    int rc = CPOS_NO_ANSWER;
    const char *orig_site = q->cross_site ? sim_sites[q->orig_agent].site : NULL;
    memset(&res, 0, sizeof res);
    a->sent = true;
    a->start_ms = clock_mono_ms();
    switch (q->kind) {
    case REQ_EARN:
        rc = cpos_earn(pos, q->txn, q->member, q->amount_minor, SIM_EARN_CURRENCY, &res);
        break;
    case REQ_BURN: rc = cpos_burn(pos, q->txn, q->member, q->points, q->allow_partial, &res); break;
    case REQ_REFUND:
        rc = cpos_refund_at(pos, q->txn, orig_site, q->orig_txn, q->amount_minor, q->points, &res);
        break;
    case REQ_VOID: rc = cpos_void_at(pos, q->txn, orig_site, q->orig_txn, &res); break;
    case REQ_BALANCE: rc = cpos_balance(pos, q->txn, q->member, &res); break;
    case REQ_KINDS: break;
    }
    record(a, rc, &res);
}

typedef struct twin {
    const till_t *till;
    request_t *q;
} twin_t;

/* The second connection of a till: the same request, the same terminal, a moment later. */
static void *twin_main(void *arg)
{
    twin_t *tw = arg;
    cpos_t *pos = till_connect(tw->till);
    sleep_ms(tw->q->twin_delay_ms); /* the schedule's stagger, not a synchronisation */
    if (pos != NULL)
        send_request(pos, tw->q, &tw->q->att[1]);
    cpos_destroy(&pos);
    return NULL;
}

/* Wait while the next fault is due and has not started. */
static void gate_before_request(run_t *run)
{
    pthread_mutex_lock(&run->gate);
    while (run->faults_started < run->plan.count &&
           run->done >= run->plan.faults[run->faults_started].at_ops)
        pthread_cond_wait(&run->progressed, &run->gate);
    pthread_mutex_unlock(&run->gate);
}

static void gate_after_request(run_t *run, bool last)
{
    pthread_mutex_lock(&run->gate);
    run->done++;
    run->tills_running -= last;
    pthread_cond_broadcast(&run->progressed);
    pthread_mutex_unlock(&run->gate);
}

static void *till_main(void *arg)
{
    till_t *t = arg;
    run_t *run = t->run;
    cpos_t *pos = till_connect(t);
    for (size_t i = 0; pos != NULL && i < run->sched.per_till; i++) {
        gate_before_request(run);
        request_t *q = req_at(&run->sched, t->id, i);
        pthread_t helper;
        twin_t tw = {t, q};
        bool twin = q->how == HOW_TWIN && pthread_create(&helper, NULL, twin_main, &tw) == 0;
        send_request(pos, q, &q->att[0]);
        if (twin)
            pthread_join(helper, NULL);
        if (!q->att[0].answered) {
            /* A new connection, so a late answer to this call cannot be taken for the next. */
            cpos_destroy(&pos);
            pos = till_connect(t);
        }
        gate_after_request(run, i + 1 == run->sched.per_till);
    }
    if (pos == NULL) {
        fprintf(stderr, "it_sim: till %d cannot connect to its agent\n", t->id);
        exit(2);
    }
    cpos_destroy(&pos);
    return NULL;
}

static void inject(run_t *run, const fault_t *f)
{
    world_t *w = &run->w;
    agent_proc_t *a = &w->agents[f->agent];
    switch (f->kind) {
    case F_BROKER_KILL:
        world_stop_broker(w, SIGKILL);
        sleep_ms(f->hold_ms);
        world_start_broker(w);
        break;
    case F_BROKER_STOP:
        harness_pause(&w->broker);
        sleep_ms(f->hold_ms);
        harness_resume(&w->broker);
        break;
    case F_BROKER_RESTART:
        world_stop_broker(w, SIGTERM);
        world_start_broker(w);
        break;
    case F_AGENT_KILL:
        world_stop_agent(w, a, SIGKILL);
        sleep_ms(f->hold_ms);
        world_restart_agent(w, a);
        break;
    case F_AGENT_STOP:
        harness_pause(&a->proc);
        sleep_ms(f->hold_ms);
        harness_resume(&a->proc);
        break;
    case F_BROKER_STOP_AGENT_KILL:
        harness_pause(&w->broker);
        sleep_ms(f->hold_ms / 2);
        world_stop_agent(w, a, SIGKILL);
        world_restart_agent(w, a);
        sleep_ms(f->hold_ms - f->hold_ms / 2);
        harness_resume(&w->broker);
        break;
    case F_BROKER_STOP_KILL:
        harness_pause(&w->broker);
        sleep_ms(f->hold_ms);
        world_stop_broker(w, SIGKILL);
        world_start_broker(w);
        break;
    default: break;
    }
    run->faults_by_kind[f->kind]++;
}

/* Each fault starts when the tills have done its share of requests (see run_t); the
 * tills go on while it lasts. */
static void *faults_main(void *arg)
{
    run_t *run = arg;
    for (size_t i = 0; i < run->plan.count; i++) {
        const fault_t *f = &run->plan.faults[i];
        pthread_mutex_lock(&run->gate);
        while (run->done < f->at_ops && run->tills_running > 0)
            pthread_cond_wait(&run->progressed, &run->gate);
        bool tills_done = run->tills_running == 0;
        run->faults_started++;
        pthread_cond_broadcast(&run->progressed);
        pthread_mutex_unlock(&run->gate);
        if (tills_done)
            break;
        inject(run, f);
    }
    return NULL;
}

static void setup_world(run_t *run)
{
    world_t *w = &run->w;
    char out[512];
    world_init(w);
    w->till_wait_ms = TILL_WAIT_MS;
    w->retry_ms = RETRY_MS;
    w->heartbeat_ms = HEARTBEAT_MS;
    world_start_broker(w);
    for (size_t p = 0; p < sim_partner_count; p++) {
        if (world_ctl(w, out, sizeof out, "partner", "add", sim_partners[p].id, "--earn-rate",
                      sim_partners[p].rate_text, NULL) != 0) {
            fprintf(stderr, "it_sim: partner add %s failed: %s\n", sim_partners[p].id, out);
            exit(2);
        }
    }
    for (int m = 0; m < SIM_MEMBERS; m++) {
        char member[SIM_ID_BYTES];
        member_name(member, m);
        if (world_ctl(w, out, sizeof out, "member", "add", member, NULL) != 0) {
            fprintf(stderr, "it_sim: member add %s failed: %s\n", member, out);
            exit(2);
        }
    }
    for (int a = 0; a < SIM_AGENTS; a++)
        world_start_agent_at(w, sim_sites[a].partner, sim_sites[a].site_flag);
}

/* Poll every agent's outbox until it is empty: everything delivered and journaled. */
static bool drain(run_t *run, int64_t *took_ms)
{
    int64_t start = clock_mono_ms();
    int64_t deadline = start + DRAIN_TIMEOUT_MS;
    for (int a = 0; a < SIM_AGENTS; a++) {
        char out[4096];
        char *argv[] = {COALITION_AGENT_BIN, "--data", run->w.agents[a].data_dir, "--outbox", NULL};
        for (;;) {
            int rc = harness_run(argv, out, sizeof out);
            if (rc == 0 && out[0] == '\0')
                break;
            if (clock_mono_ms() > deadline) {
                sim_report(run->tally, run->seed, CHK_DRAIN,
                           "agent %s/%s: outbox still holds requests after %d ms (exit %d): "
                           "%.300s",
                           sim_sites[a].partner, sim_sites[a].site, DRAIN_TIMEOUT_MS, rc, out);
                return false;
            }
            sleep_ms(POLL_MS);
        }
    }
    *took_ms = clock_mono_ms() - start;
    return true;
}

static long stop_all(run_t *run)
{
    long bad = 0;
    for (int a = 0; a < SIM_AGENTS; a++) {
        int status = world_stop_agent(&run->w, &run->w.agents[a], SIGTERM);
        run->tally->checked[CHK_CLEAN_STOP]++;
        if (status != 0) {
            sim_report(run->tally, run->seed, CHK_CLEAN_STOP,
                       "agent %s/%s: expected exit 0 on SIGTERM, got %d (log %s)",
                       sim_sites[a].partner, sim_sites[a].site, status,
                       run->w.agents[a].proc.log_path);
            bad++;
        }
    }
    int status = world_stop_broker(&run->w, SIGTERM);
    run->tally->checked[CHK_CLEAN_STOP]++;
    if (status != 0) {
        sim_report(run->tally, run->seed, CHK_CLEAN_STOP,
                   "broker: expected exit 0 on SIGTERM, got %d (log %s)", status,
                   run->w.broker.log_path);
        bad++;
    }
    return bad;
}

/* Every answer every till got, one line per attempt, beside the logs (kept by --keep). */
static void write_answers(const run_t *run, int64_t started)
{
    char path[HARNESS_PATH_BYTES];
    snprintf(path, sizeof path, "%s/answers.tsv", run->w.dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return;
    fprintf(f, "site\ttill\top\thow\tkind\ttxn\tmember\tamount\tpoints\toriginal\tconn\t"
               "start_ms\tend_ms\tanswered\tcode\tapproved\treplay\treversed\toffline\t"
               "pending\tpoints_told\tseq\n");
    for (size_t i = 0; i < SIM_TILLS * run->sched.per_till; i++) {
        const request_t *q = &run->sched.reqs[i];
        for (int k = 0; k < SIM_ATTEMPTS_MAX; k++) {
            const attempt_t *a = &q->att[k];
            if (!a->sent)
                continue;
            fprintf(f,
                    "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%" PRId64 "\t%" PRId64 "\t%s%s%s\t%d\t%" PRId64
                    "\t%" PRId64 "\t%d\t%02d\t%d\t%d\t%d\t%d\t%d\t%" PRId64 "\t%" PRIu64 "\n",
                    sim_sites[q->agent].site, q->till, q->index, sim_how_name(q->how),
                    sim_kind_name(q->kind), q->txn, q->member, q->amount_minor, q->points,
                    q->orig_agent >= 0 ? sim_sites[q->orig_agent].site : "",
                    q->orig_agent >= 0 ? "/" : "", q->orig_txn, k, a->start_ms - started,
                    a->end_ms - started, a->answered, a->code, a->approved, a->replay, a->reversed,
                    a->offline, a->pending, a->points, a->seq);
        }
    }
    fclose(f);
}

static void count_outcomes(const run_t *run, sim_tally_t *tally, long *attempts)
{
    for (size_t i = 0; i < SIM_TILLS * run->sched.per_till; i++) {
        const request_t *q = &run->sched.reqs[i];
        for (int k = 0; k < SIM_ATTEMPTS_MAX; k++) {
            const attempt_t *a = &q->att[k];
            if (!a->sent)
                continue;
            (*attempts)++;
            outcome_kind_t o = !a->answered                           ? OUT_NO_ANSWER
                               : a->offline                           ? OUT_OFFLINE
                               : a->code == 91 && q->kind == REQ_BURN ? OUT_BURN_91
                               : a->code == 91                        ? OUT_OTHER_91
                               : a->code == 0                         ? OUT_APPROVED
                               : a->code == 10                        ? OUT_PARTIAL
                                                                      : OUT_DECLINED;
            tally->outcomes[o]++;
            tally->outcomes[OUT_REPLAY] += a->answered && a->replay;
            tally->outcomes[OUT_REVERSED] += a->answered && a->reversed;
        }
    }
}

typedef struct options {
    uint64_t seed;
    bool seed_given;
    long seeds;
    size_t ops;
    bool faults;
    bool keep;
    int show; /* anomalies printed in full per seed */
} options_t;

static void print_replay(const options_t *o, uint64_t seed)
{
    printf("it_sim: replay: build/tests/it_sim --seed %" PRIu64 " --ops %zu --faults %s\n", seed,
           o->ops, o->faults ? "on" : "off");
}

typedef struct totals {
    long ops, attempts, faults[F_KINDS];
    sim_tally_t tally;
} totals_t;

static long anomalies_so_far(const sim_tally_t *t)
{
    long n = 0;
    for (int k = 0; k < CHK_KINDS; k++)
        n += t->anomalies[k];
    return n;
}

/* The run in progress, so that an early exit (the harness exits when a program does not
 * come up) does not leave its processes behind. */
static run_t *current_run;

static void kill_current_run(void)
{
    if (current_run == NULL)
        return;
    for (size_t a = 0; a < current_run->w.agent_count; a++)
        if (current_run->w.agents[a].proc.pid > 0)
            kill(current_run->w.agents[a].proc.pid, SIGKILL);
    if (current_run->w.broker.pid > 0)
        kill(current_run->w.broker.pid, SIGKILL);
}

static run_t *run_new(const options_t *o, uint64_t seed, sim_tally_t *tally)
{
    run_t *run = calloc(1, sizeof *run);
    if (run == NULL || schedule_make(&run->sched, seed, o->ops) != 0 ||
        fault_plan_make(&run->plan, seed, o->ops, o->faults) != 0) {
        fprintf(stderr, "it_sim: out of memory\n");
        exit(2);
    }
    run->seed = seed;
    run->tally = tally;
    run->show = o->show;
    pthread_mutex_init(&run->gate, NULL);
    pthread_cond_init(&run->progressed, NULL);
    current_run = run;
    return run;
}

static void run_free(run_t *run, bool keep_dir)
{
    current_run = NULL;
    if (keep_dir)
        setenv("COALITION_KEEP_TEST_DIRS", "1", 1);
    world_destroy(&run->w);
    unsetenv("COALITION_KEEP_TEST_DIRS");
    schedule_free(&run->sched);
    free(run->plan.faults);
    pthread_cond_destroy(&run->progressed);
    pthread_mutex_destroy(&run->gate);
    free(run);
}

/* The tills and the fault schedule, until every till has sent its last request. */
static void run_tills(run_t *run)
{
    till_t tills[SIM_TILLS];
    pthread_t threads[SIM_TILLS], fault_thread;
    run->tills_running = SIM_TILLS;
    for (int t = 0; t < SIM_TILLS; t++) {
        tills[t] = (till_t){run, t, ""};
        snprintf(tills[t].terminal, sizeof tills[t].terminal, "till-%d", t % SIM_TILLS_PER_AGENT);
        pthread_create(&threads[t], NULL, till_main, &tills[t]);
    }
    pthread_create(&fault_thread, NULL, faults_main, run);
    for (int t = 0; t < SIM_TILLS; t++)
        pthread_join(threads[t], NULL);
    pthread_join(fault_thread, NULL);
}

/* Read the agents' journals (everything is stopped) and audit the run. */
static void audit_run(run_t *run, int64_t started)
{
    char paths[SIM_AGENTS][HARNESS_PATH_BYTES];
    sim_evidence_t ev = {run->seed, &run->w, run->sched.reqs, run->sched.per_till,
                         {NULL},    started, run->show};
    for (int a = 0; a < SIM_AGENTS; a++) {
        snprintf(paths[a], sizeof paths[a], "%s/journal-%d.jsonl", run->w.dir, a);
        char *argv[] = {COALITION_AGENT_BIN, "--data", run->w.agents[a].data_dir, "--journal",
                        NULL};
        if (harness_run_to_file(argv, paths[a]) != 0)
            fprintf(stderr, "it_sim: cannot read agent %d's journal\n", a);
        ev.journal_paths[a] = paths[a];
    }
    write_answers(run, started);
    sim_audit(&ev, run->tally);
}

/* Run one seed end to end. Returns the anomalies found. */
static long run_seed(const options_t *o, uint64_t seed, totals_t *totals)
{
    run_t *run = run_new(o, seed, &totals->tally);
    long before = anomalies_so_far(&totals->tally);
    printf("it_sim: seed %" PRIu64 ": %zu ops over %d tills at %d agents, %zu faults planned\n",
           seed, run->sched.per_till * SIM_TILLS, SIM_TILLS, SIM_AGENTS, run->plan.count);
    setup_world(run);
    int64_t started = clock_mono_ms();
    run_tills(run);
    int64_t ran_ms = clock_mono_ms() - started, drain_ms = 0;
    bool drained = drain(run, &drain_ms);
    stop_all(run);
    audit_run(run, started);
    long attempts = 0, faults = 0;
    count_outcomes(run, &totals->tally, &attempts);
    long found = anomalies_so_far(&totals->tally) - before;
    for (int k = 0; k < F_KINDS; k++) {
        faults += run->faults_by_kind[k];
        totals->faults[k] += run->faults_by_kind[k];
    }
    totals->ops += (long)(run->sched.per_till * SIM_TILLS);
    totals->attempts += attempts;
    printf("it_sim: seed %" PRIu64 ": ran %.1f s, %ld faults injected, %s in %.1f s, "
           "%ld attempts, %ld anomalies\n",
           seed, ran_ms / 1000.0, faults, drained ? "drained" : "NOT drained", drain_ms / 1000.0,
           attempts, found);
    if (found > 0) {
        printf("it_sim: seed %" PRIu64 " FAILED\n", seed);
        print_replay(o, seed);
    }
    run_free(run, found > 0 && o->keep);
    return found;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: it_sim [--seed N] [--seeds K] [--ops N] [--faults on|off] [--show N] [--keep]\n"
            "Randomized whole-system test: K seeds from N (default: a random N), each with\n"
            "N ops (default %d) over %d tills, %d agents and one broker, faults on.\n"
            "--show N prints N anomalies in full per seed (default %d); --keep keeps a\n"
            "failing seed's directory (logs, ledger, agent data, answers.tsv).\n",
            OPS_DEFAULT, SIM_TILLS, SIM_AGENTS, SHOW_DEFAULT);
}

static int parse_options(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"seed", required_argument, NULL, 's'}, {"seeds", required_argument, NULL, 'k'},
        {"ops", required_argument, NULL, 'n'},  {"faults", required_argument, NULL, 'f'},
        {"keep", no_argument, NULL, 'K'},       {"show", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0}};
    int c;
    char *end = NULL;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        errno = 0;
        switch (c) {
        case 's':
            o->seed = strtoull(optarg, &end, 10);
            o->seed_given = true;
            break;
        case 'k': o->seeds = strtol(optarg, &end, 10); break;
        case 'n': o->ops = (size_t)strtoul(optarg, &end, 10); break;
        case 'f':
            o->faults = strcmp(optarg, "on") == 0;
            end = (strcmp(optarg, "on") == 0 || strcmp(optarg, "off") == 0)
                      ? optarg + strlen(optarg)
                      : optarg;
            break;
        case 'K': o->keep = true; continue;
        case 'S': o->show = (int)strtol(optarg, &end, 10); break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
        if (end == optarg || *end != '\0' || errno != 0)
            return -1;
    }
    if (optind != argc || o->show < 0 || o->seeds < 1 || o->seeds > SEEDS_MAX ||
        o->ops < SIM_TILLS || o->ops > OPS_MAX)
        return -1;
    return 0;
}

static const char *const outcome_names[] = {"approved",  "partial", "declined",
                                            "offline",   "burn-91", "other-91",
                                            "no-answer", "replays", "reversed-replays"};
_Static_assert(sizeof outcome_names / sizeof outcome_names[0] == OUT_KINDS, "a name per outcome");

static void print_closing(long seeds, long failed, const totals_t *totals)
{
    const sim_tally_t *t = &totals->tally;
    long total = 0;
    printf("\nit_sim: closing figures\n");
    printf("  seeds run        %ld (%ld failed)\n", seeds, failed);
    printf("  ops issued       %ld (%ld attempts, twins send twice)\n", totals->ops,
           totals->attempts);
    printf("  faults injected ");
    for (int k = 0; k < F_KINDS; k++) {
        printf(" %s %ld", fault_name((fault_kind_t)k), totals->faults[k]);
        total += totals->faults[k];
    }
    printf(" (total %ld)\n", total);

    printf("  till outcomes   ");
    for (int k = 0; k < OUT_KINDS; k++)
        printf(" %s %ld", outcome_names[k], t->outcomes[k]);
    printf("\n  checks (evaluated/failed):\n");
    total = 0;
    for (int k = 0; k < CHK_KINDS; k++) {
        printf("    %-28s %8ld %6ld\n", sim_check_name((check_kind_t)k), t->checked[k],
               t->anomalies[k]);
        total += t->anomalies[k];
    }
    printf("  anomalies found  %ld\n", total);
}

int main(int argc, char **argv)
{
    options_t o = {0, false, SEEDS_DEFAULT, OPS_DEFAULT, true, false, SHOW_DEFAULT};
    if (parse_options(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    if (!o.seed_given)
        o.seed = ((uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid()) % 1000000000u;
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_current_run);
    setvbuf(stdout, NULL, _IOLBF, 0);
    totals_t *totals = calloc(1, sizeof *totals);
    if (totals == NULL)
        return 2;
    printf("it_sim: first seed %" PRIu64 ", %ld seed(s), %zu ops each, faults %s\n", o.seed,
           o.seeds, o.ops, o.faults ? "on" : "off");
    long failed = 0;
    uint64_t failed_seeds[FAILED_LISTED_MAX];
    size_t failed_listed = 0;
    for (long i = 0; i < o.seeds; i++) {
        uint64_t seed = o.seed + (uint64_t)i;
        if (run_seed(&o, seed, totals) > 0) {
            if (failed_listed < FAILED_LISTED_MAX)
                failed_seeds[failed_listed++] = seed;
            failed++;
        }
    }
    print_closing(o.seeds, failed, totals);
    free(totals);
    for (size_t i = 0; i < failed_listed; i++)
        print_replay(&o, failed_seeds[i]);
    printf("it_sim: %ld passed, %ld failed\n", o.seeds - failed, failed);
    return failed > 0 ? 1 : 0;
}
