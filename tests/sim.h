/* The randomized whole-system test (it_sim.c runs it, sim_audit.c judges it): what every
 * till asked and was told, in the order its own schedule gave. A request is written only
 * by the till thread that sends it (and by its twin helper for the second attempt), and
 * read by the audit after every thread has been joined. */
#ifndef COALITION_SIM_H
#define COALITION_SIM_H

#include "harness.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_AGENTS 3
#define SIM_TILLS_PER_AGENT 4
#define SIM_TILLS (SIM_AGENTS * SIM_TILLS_PER_AGENT)
#define SIM_MEMBERS 10
#define SIM_ID_BYTES 24
/* A twin request is sent on two connections of the same till at once. */
#define SIM_ATTEMPTS_MAX 2
#define SIM_EARN_CURRENCY "EUR"
/* Minor units per EUR and thousandths in a rate: earn points are
 * floor(amount_minor * rate_milli / (SIM_RATE_SCALE * SIM_MINOR_PER_MAJOR)). */
#define SIM_MINOR_PER_MAJOR 100
#define SIM_RATE_SCALE 1000

typedef enum { REQ_EARN, REQ_BURN, REQ_REFUND, REQ_VOID, REQ_BALANCE, REQ_KINDS } req_kind_t;

/* How a request came about:
 *   FRESH   a new txn id
 *   REPEAT  the till's previous request again, same txn id and payload (a resend after a
 *           timeout, or a plain repeat)
 *   TWIN    a new request sent on two connections of the till, the second while the first
 *           may still be waiting
 *   REKEY   an earlier txn id of the till with a different payload (another member)
 *   GHOST   a refund or void naming an original that never existed */
typedef enum { HOW_FRESH, HOW_REPEAT, HOW_TWIN, HOW_REKEY, HOW_GHOST, HOW_KINDS } req_how_t;

typedef struct attempt {
    bool sent;
    bool answered; /* false: no answer within the till's timeout */
    int code;
    bool approved, replay, reversed, offline, pending;
    int64_t points, balance;
    uint64_t seq;
    int64_t start_ms, end_ms; /* monotonic */
} attempt_t;

typedef struct request {
    req_kind_t kind;
    req_how_t how;
    int agent, till, index; /* till: 0..SIM_TILLS_PER_AGENT-1 within its agent */
    char txn[SIM_ID_BYTES];
    char member[SIM_ID_BYTES];
    int64_t amount_minor; /* earn; refund of an earn by money (0 = the rest) */
    int64_t points;       /* burn; refund of a burn by points (0 = the rest) */
    bool allow_partial;
    bool cross_site;      /* refund/void naming its original's site (the other site) */
    int orig_agent;       /* refund/void: the agent whose site took the original */
    req_kind_t orig_kind; /* earn or burn as scheduled (ghosts: what the refund names) */
    char orig_txn[SIM_ID_BYTES];
    int twin_delay_ms; /* TWIN: when the second connection sends */
    attempt_t att[SIM_ATTEMPTS_MAX];
} request_t;

/* The sites under test: the same partner may run several. */
typedef struct sim_site {
    const char *partner;
    const char *site_flag; /* --site, or NULL for the agent's default */
    const char *site;      /* the site id the ledger records */
    int sibling;           /* the other site of the same partner, or -1 */
} sim_site_t;

typedef struct sim_partner {
    const char *id;
    const char *rate_text; /* coalitionctl partner add --earn-rate */
    int64_t rate_milli;
} sim_partner_t;

extern const sim_site_t sim_sites[SIM_AGENTS];
extern const sim_partner_t sim_partners[];
extern const size_t sim_partner_count;

/* Counters for the closing figures. */
typedef enum {
    OUT_APPROVED,
    OUT_PARTIAL,
    OUT_DECLINED,
    OUT_OFFLINE,
    OUT_BURN_91,
    OUT_OTHER_91,
    OUT_NO_ANSWER,
    OUT_REPLAY,
    OUT_REVERSED,
    OUT_KINDS
} outcome_kind_t;

typedef enum {
    CHK_TILLS_DISAGREE,
    CHK_JOURNAL_DISAGREES,
    CHK_APPROVAL_NOT_APPLIED,
    CHK_DECLINE_APPLIED,
    CHK_BURN_91_APPLIED,
    CHK_OFFLINE_UNDECIDED,
    CHK_DUPLICATE_KEY,
    CHK_FOREIGN_ENTRY,
    CHK_AGENT_REVERSED_APPROVED,
    CHK_EARN_POINTS,
    CHK_BURN_POINTS,
    CHK_REVERSAL_POINTS,
    CHK_REVERSAL_OVERTOOK,
    CHK_BALANCE,
    CHK_VERIFY,
    CHK_DRAIN,
    CHK_CLEAN_STOP,
    CHK_KINDS
} check_kind_t;

typedef struct sim_tally {
    long outcomes[OUT_KINDS];
    long checked[CHK_KINDS];   /* how many times each check was evaluated */
    long anomalies[CHK_KINDS]; /* how many times it failed */
} sim_tally_t;

const char *sim_check_name(check_kind_t kind);
const char *sim_how_name(req_how_t how);
const char *sim_kind_name(req_kind_t kind);

/* Everything the audit reads. */
typedef struct sim_evidence {
    uint64_t seed;
    world_t *w;
    const request_t *reqs; /* SIM_TILLS x per_till, till-major */
    size_t per_till;
    const char *journal_paths[SIM_AGENTS]; /* `coalition-agent --journal` output */
    int64_t start_ms;                      /* when the tills started (monotonic) */
    int anomalies_to_print;
} sim_evidence_t;

/* Check every outcome against the agents' journals and the ledger (opened read-only);
 * prints each anomaly (up to anomalies_to_print) and adds to `tally`. Returns the number
 * of anomalies found. */
long sim_audit(const sim_evidence_t *ev, sim_tally_t *tally);

/* An anomaly found outside the audit (drain, stop): printed the same way. */
void sim_report(sim_tally_t *tally, uint64_t seed, check_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
