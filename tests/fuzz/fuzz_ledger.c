/* libFuzzer target: the ledger under a sequence of requests from a small world (the input
 * language is in ledger_ops.h), sent the way the broker sends them: wire_validate first,
 * then wire_request_hash and ledger_apply inside a write batch (balance inquiries through
 * ledger_inquire), to a fresh ledger in a temporary directory removed after each input.
 * Invariants: after every commit the full audit (ledger_verify) holds, the last sequence
 * number is the number of approvals, and each request of the batch gets from ledger_replay
 * (what a failed writer answers) what ledger_apply answered; every reply decodes, fits a
 * wire message and echoes its request's txn id, site and hash; a fresh approval takes
 * the next sequence number; a request sent again with the same hash is answered as the
 * first time, replay and reversed flags aside. */
#include "fuzz_support.h"
#include "ledger_ops.h"

#include "amount.h"
#include "errors.h"
#include "ledger.h"
#include "wire.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOW_MS INT64_C(1700000000000)
/* Requests one write batch takes at most when operations ask to join it. */
#define BATCH_REQUESTS_MAX 4
#define PATH_BYTES 512
#define WHY_BYTES 512
/* Where each input's ledger lives: tmpfs when there is one (a commit fsyncs). */
#define TMP_DIR_ENV "COALITION_FUZZ_TMPDIR"
#define TMP_DIR_FAST "/dev/shm"
#define TMP_DIR_DEFAULT "/tmp"
#define DIR_TEMPLATE "/fuzz_ledger.XXXXXX"
/* The world's first operations: three partners, three members. */
#define SETUP_OPS 6
#define REQUESTS_MAX (SETUP_OPS + LEDGER_OPS_MAX)

static const char *const PARTNERS[LEDGER_PARTNERS] = {"p0", "p1", "p2", "p3"};
static const char *const SITES[LEDGER_SITES] = {"s1", "s2"};
/* The last id of each pool is refused by wire_validate. */
static const char *const TXNS[LEDGER_TXNS] = {"t0", "t1", "t2", "t3", "t4", "t5", "t6", ""};
static const char *const MEMBERS[LEDGER_MEMBERS] = {"m0", "m1", "m2", "m3", "m4", "bad member"};
static const char *const CURRENCIES[LEDGER_CURRENCIES] = {"EUR", "JPY", "KWD", "USD", "XXX"};
/* Amounts, points and rates by value byte (below LEDGER_VALUE_SMALL), 4 per row. */
// clang-format off
static const int64_t VALUES[LEDGER_VALUES] = {
    0,      1,                   2,                50,
    99,     100,                 250,              1000,
    12345,  EARN_RATE_MILLI_MAX, AMOUNT_MINOR_MAX, AMOUNT_MINOR_MAX + 1,
    -1,     INT64_MAX,           INT64_MIN,        7,
};
// clang-format on

/* Partners p0 (1 point per EUR), p1 (0.25 per JPY), p2 (1000 per KWD); members m0-m2.
 * In two batches (a commit and an audit each cost more than a request). */
#define SETUP_JOIN (LEDGER_FLAG_JOIN_BATCH | LEDGER_FLAG_CURRENCY)
#define SETUP_ENROL_JOIN (LEDGER_FLAG_JOIN_BATCH | LEDGER_FLAG_AS_OPERATOR)
static const uint8_t SETUP[SETUP_OPS][LEDGER_OP_BYTES] = {
    {LEDGER_OP_PARTNER_ADD, LEDGER_FLAG_CURRENCY, 0, 0, 0, 0, 7, 0 << 4},
    {LEDGER_OP_PARTNER_ADD, SETUP_JOIN, 1, 0, 1, 0, 6, 1 << 4},
    {LEDGER_OP_PARTNER_ADD, SETUP_JOIN, 2, 0, 2, 0, 9, 2 << 4},
    {LEDGER_OP_ENROLL, SETUP_ENROL_JOIN, 0, 0, 3, 0, 0, 0},
    {LEDGER_OP_ENROLL, SETUP_ENROL_JOIN, 0, 0, 4, 1, 0, 0},
    {LEDGER_OP_ENROLL, SETUP_ENROL_JOIN, 0, 0, 5, 2, 0, 0},
};
_Static_assert(SETUP_OPS <= 2 * BATCH_REQUESTS_MAX, "the world is set up in two batches");

/* One request, with room for every body; never copied once built (it points into itself). */
typedef struct request {
    envelope_t env;
    bool from_admin;
    Coalition__EarnRequest earn;
    Coalition__BurnRequest burn;
    Coalition__RefundRequest refund;
    Coalition__VoidRequest void_request;
    Coalition__BalanceRequest balance;
    Coalition__EnrollRequest enroll;
    Coalition__PartnerAddRequest partner_add;
    Coalition__PartnerLimitsRequest limits;
    Coalition__ContractSetRequest contract;
    Coalition__PartnerTopupRequest topup;
    Coalition__WindowCloseRequest close;
    Coalition__SettlementConfigRequest config;
} request_t;

/* One sending of a request (a repeat sends an earlier request again). */
typedef struct submission {
    const request_t *request;
    uint8_t hash[WIRE_HASH_BYTES];
    bool applied; /* reached ledger_apply */
    fuzz_reply_t answer;
} submission_t;

typedef struct world {
    char dir[PATH_BYTES];
    ledger_t *ledger;
    const char *currency[LEDGER_PARTNERS]; /* each partner's contract, once added */
    request_t requests[REQUESTS_MAX];
    size_t request_count;
    submission_t subs[REQUESTS_MAX];
    size_t sub_count;
    size_t batch[BATCH_REQUESTS_MAX]; /* submissions in the open batch */
    size_t batch_count;
    bool batch_open;
    uint64_t seq; /* approvals so far: the ledger's last sequence number */
} world_t;

static world_t world;

/* ---- requests from operations ------------------------------------------------------ */

static int64_t value_of(uint8_t byte)
{
    if (byte >= LEDGER_VALUE_SMALL)
        return (int64_t)(byte - LEDGER_VALUE_SMALL) * 7 + 1;
    return VALUES[byte % LEDGER_VALUES];
}

static const char *currency_of(const uint8_t *op, const char *contract)
{
    if (op[1] & LEDGER_FLAG_CURRENCY)
        return CURRENCIES[(op[7] >> 4) % LEDGER_CURRENCIES];
    return contract != NULL ? contract : CURRENCIES[0];
}

static void header(request_t *r, const uint8_t *op, bool from_admin)
{
    coalition__envelope__init(&r->env);
    r->env.version = WIRE_VERSION;
    r->env.partner_id =
        from_admin ? OPERATOR_PARTNER_ID : (char *)PARTNERS[op[2] % LEDGER_PARTNERS];
    r->env.site_id = from_admin ? OPERATOR_SITE_ID : (char *)SITES[op[3] % LEDGER_SITES];
    r->env.terminal_id = "till-1";
    r->env.txn_id = (char *)TXNS[op[4] % LEDGER_TXNS];
    r->from_admin = (op[1] & LEDGER_FLAG_WRONG_SOCKET) ? !from_admin : from_admin;
}

/* The original a refund or void names; its site explicitly or (empty) the sender's own. */
static void original_of(const uint8_t *op, char **txn_id, char **site_id)
{
    *txn_id = (char *)TXNS[op[7] % LEDGER_TXNS];
    *site_id =
        (op[1] & LEDGER_FLAG_ORIGINAL_SITE) ? (char *)SITES[(op[7] >> 3) % LEDGER_SITES] : "";
}

static void earn_body(request_t *r, const uint8_t *op)
{
    coalition__earn_request__init(&r->earn);
    r->earn.member_id = (char *)MEMBERS[op[5] % LEDGER_MEMBERS];
    r->earn.amount_minor = value_of(op[6]);
    r->earn.currency = (char *)currency_of(op, world.currency[op[2] % LEDGER_PARTNERS]);
    r->env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r->env.earn = &r->earn;
}

static void burn_body(request_t *r, const uint8_t *op)
{
    coalition__burn_request__init(&r->burn);
    r->burn.member_id = (char *)MEMBERS[op[5] % LEDGER_MEMBERS];
    r->burn.points = value_of(op[6]);
    r->burn.allow_partial = (op[1] & LEDGER_FLAG_ALLOW_PARTIAL) != 0;
    r->env.body_case = COALITION__ENVELOPE__BODY_BURN;
    r->env.burn = &r->burn;
}

static void refund_body(request_t *r, const uint8_t *op, bool money)
{
    coalition__refund_request__init(&r->refund);
    original_of(op, &r->refund.original_txn_id, &r->refund.original_site_id);
    r->refund.amount_minor = money ? value_of(op[6]) : 0;
    r->refund.points = money ? 0 : value_of(op[6]);
    r->env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    r->env.refund = &r->refund;
}

static void void_body(request_t *r, const uint8_t *op)
{
    coalition__void_request__init(&r->void_request);
    original_of(op, &r->void_request.original_txn_id, &r->void_request.original_site_id);
    r->env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    r->env.void_request = &r->void_request;
}

static void member_body(request_t *r, const uint8_t *op, bool balance)
{
    char *member_id = (char *)MEMBERS[op[5] % LEDGER_MEMBERS];
    if (balance) {
        coalition__balance_request__init(&r->balance);
        r->balance.member_id = member_id;
        r->env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
        r->env.balance = &r->balance;
    } else {
        coalition__enroll_request__init(&r->enroll);
        r->enroll.member_id = member_id;
        r->env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
        r->env.enroll = &r->enroll;
    }
}

static void partner_add_body(request_t *r, const uint8_t *op)
{
    coalition__partner_add_request__init(&r->partner_add);
    r->partner_add.partner_id = (char *)PARTNERS[op[2] % LEDGER_PARTNERS];
    r->partner_add.earn_rate_milli = value_of(op[6]);
    r->partner_add.currency = (char *)currency_of(op, NULL);
    r->env.body_case = COALITION__ENVELOPE__BODY_PARTNER_ADD;
    r->env.partner_add = &r->partner_add;
}

static void limits_body(request_t *r, const uint8_t *op)
{
    coalition__partner_limits_request__init(&r->limits);
    r->limits.partner_id = (char *)PARTNERS[op[2] % LEDGER_PARTNERS];
    r->limits.max_points = value_of(op[6]);
    r->limits.burns_per_member_minute = 1u + op[5] % 4u;
    r->env.body_case = COALITION__ENVELOPE__BODY_PARTNER_LIMITS;
    r->env.partner_limits = &r->limits;
}

static void contract_body(request_t *r, const uint8_t *op)
{
    Coalition__ContractSetRequest *c = &r->contract;
    const char *currency = world.currency[op[2] % LEDGER_PARTNERS];
    coalition__contract_set_request__init(c);
    c->partner_id = (char *)PARTNERS[op[2] % LEDGER_PARTNERS];
    c->from_ms = (op[5] & 1) ? NOW_MS + (int64_t)world.sub_count + op[5] / 2 : 0;
    c->earn_rate_milli = value_of(op[6]);
    c->currency = (char *)(currency != NULL ? currency : CURRENCIES[0]);
    c->issue_price_per_mille = op[7] * 37 % 3000;
    c->reimburse_per_mille = op[3] * 53 % 3000;
    c->fee_minor = op[5] % 7;
    c->funding = (op[5] & 2) ? COALITION__FUNDING__FUNDING_PREPAID
                             : COALITION__FUNDING__FUNDING_POSTPAID;
    c->net_cap_minor = (op[5] & 4) ? value_of(op[6]) : 0;
    r->env.body_case = COALITION__ENVELOPE__BODY_CONTRACT_SET;
    r->env.contract_set = c;
}

static void settle_body(request_t *r, const uint8_t *op)
{
    switch (op[5] % 3) {
    case 0:
        coalition__partner_topup_request__init(&r->topup);
        r->topup.partner_id = (char *)PARTNERS[op[2] % LEDGER_PARTNERS];
        r->topup.points = value_of(op[6]);
        r->env.body_case = COALITION__ENVELOPE__BODY_PARTNER_TOPUP;
        r->env.partner_topup = &r->topup;
        break;
    case 1:
        coalition__window_close_request__init(&r->close);
        r->close.window_id = 1u + op[6] % 4u;
        r->close.early = op[3] & 1;
        r->env.body_case = COALITION__ENVELOPE__BODY_WINDOW_CLOSE;
        r->env.window_close = &r->close;
        break;
    default:
        coalition__settlement_config_request__init(&r->config);
        r->config.period_seconds = op[6] % 3 == 0 ? 0 : op[6] % 120 + 1;
        r->config.model = (op[3] & 1) ? COALITION__SETTLEMENT_MODEL__MODEL_ISSUER_PAYS
                                      : COALITION__SETTLEMENT_MODEL__MODEL_HUB;
        r->env.body_case = COALITION__ENVELOPE__BODY_SETTLEMENT_CONFIG;
        r->env.settlement_config = &r->config;
        break;
    }
}

/* Build the request of one operation (not a repeat) into the next free slot. */
static const request_t *build(const uint8_t *op, ledger_op_kind_t kind)
{
    assert(world.request_count < REQUESTS_MAX && kind != LEDGER_OP_REPEAT);
    request_t *r = &world.requests[world.request_count++];
    bool operator= kind == LEDGER_OP_PARTNER_ADD || kind == LEDGER_OP_LIMITS ||
        kind == LEDGER_OP_CONTRACT || kind == LEDGER_OP_SETTLE ||
        (kind == LEDGER_OP_ENROLL && (op[1] & LEDGER_FLAG_AS_OPERATOR));
    header(r, op, operator);
    switch (kind) {
    case LEDGER_OP_EARN: earn_body(r, op); break;
    case LEDGER_OP_BURN: burn_body(r, op); break;
    case LEDGER_OP_REFUND_MONEY: refund_body(r, op, true); break;
    case LEDGER_OP_REFUND_POINTS: refund_body(r, op, false); break;
    case LEDGER_OP_VOID: void_body(r, op); break;
    case LEDGER_OP_ENROLL: member_body(r, op, false); break;
    case LEDGER_OP_BALANCE: member_body(r, op, true); break;
    case LEDGER_OP_LIMITS: limits_body(r, op); break;
    case LEDGER_OP_CONTRACT: contract_body(r, op); break;
    case LEDGER_OP_SETTLE: settle_body(r, op); break;
    default: partner_add_body(r, op); break;
    }
    return r;
}

/* ---- replies ------------------------------------------------------------------------ */

/* A reply says what it answers: the request's txn id, site and hash. */
static void decode_reply(const submission_t *s, const uint8_t *bytes, size_t len, fuzz_reply_t *out,
                         const char *what)
{
    const envelope_t *env = &s->request->env;
    fuzz_reply_decode(bytes, len, out);
    FUZZ_REQUIRE(fuzz_code_known(out->code), "%s of %s/%s/%s: code %d", what, env->partner_id,
                 env->site_id, env->txn_id, out->code);
    FUZZ_REQUIRE(strcmp(out->txn_id, env->txn_id) == 0 && strcmp(out->site_id, env->site_id) == 0,
                 "%s of %s/%s/%s answers %s/%s", what, env->partner_id, env->site_id, env->txn_id,
                 out->site_id, out->txn_id);
    FUZZ_REQUIRE(out->request_hash_len == WIRE_HASH_BYTES &&
                     memcmp(out->request_hash, s->hash, WIRE_HASH_BYTES) == 0,
                 "%s of %s/%s/%s echoes another hash", what, env->partner_id, env->site_id,
                 env->txn_id);
}

/* The first submission with this hash whose answer the ledger keeps, if any: declines of
 * an unknown partner are not remembered (the partner may be added since). */
static const submission_t *first_with_hash(const submission_t *s)
{
    for (const submission_t *e = world.subs; e < s; e++) {
        if (e->applied && e->answer.code != RC_UNKNOWN_PARTNER &&
            memcmp(e->hash, s->hash, WIRE_HASH_BYTES) == 0)
            return e;
    }
    return NULL;
}

/* A request sent again is answered as the first time; only a kept answer is a replay. */
static void check_repeat(const submission_t *first, const fuzz_reply_t *again)
{
    const envelope_t *env = &first->request->env;
    char what[WHY_BYTES];
    snprintf(what, sizeof what, "%s %s/%s/%s sent again", wire_body_name(env), env->partner_id,
             env->site_id, env->txn_id);
    fuzz_reply_require_same(&first->answer, again, what);
    FUZZ_REQUIRE(!first->answer.replay, "%s: the first answer is marked replay", what);
    int code = first->answer.code;
    if (code == RC_DUPLICATE_KEY)
        FUZZ_REQUIRE(!again->replay, "%s: a 94 is answered as a replay", what);
    else if (code != RC_INVALID_TRANSACTION) /* a 12 under a tombstone is not kept */
        FUZZ_REQUIRE(again->replay, "%s: answered %02d again, not as a replay", what, code);
    FUZZ_REQUIRE(!again->reversed || code == RC_APPROVED || code == RC_PARTIAL,
                 "%s: a %02d answered as reversed", what, code);
}

/* What ledger_apply answered: a known answer again, or a fresh decision. */
static void check_applied(submission_t *s)
{
    const submission_t *first = first_with_hash(s);
    if (first != NULL) {
        check_repeat(first, &s->answer);
        return;
    }
    const fuzz_reply_t *a = &s->answer;
    bool approved = a->code == RC_APPROVED || a->code == RC_PARTIAL;
    FUZZ_REQUIRE(!a->replay && !a->reversed, "a first answer (%s) is marked replay or reversed",
                 s->request->env.txn_id);
    FUZZ_REQUIRE(approved == (a->seq != 0), "code %02d with seq %llu", a->code,
                 (unsigned long long)a->seq);
    FUZZ_REQUIRE(approved == (strlen(a->auth_code) == AUTH_CODE_LEN), "code %02d with auth \"%s\"",
                 a->code, a->auth_code);
    if (!approved)
        return;
    world.seq++;
    FUZZ_REQUIRE(a->seq == world.seq, "an approval took seq %llu, expected %llu",
                 (unsigned long long)a->seq, (unsigned long long)world.seq);
    if (s->request->env.body_case == COALITION__ENVELOPE__BODY_PARTNER_ADD)
        for (size_t i = 0; i < LEDGER_PARTNERS; i++)
            if (strcmp(PARTNERS[i], s->request->env.partner_add->partner_id) == 0)
                world.currency[i] = s->request->env.partner_add->currency;
}

/* ---- the broker's path ------------------------------------------------------------- */

/* ledger_replay (a failed writer's answer) gives what ledger_apply answered. */
static void check_replay_read(const submission_t *s)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = ledger_replay(world.ledger, &s->request->env, NULL, s->hash, &bytes, &len);
    FUZZ_REQUIRE(rc == CL_OK, "ledger_replay of %s/%s/%s after its commit: %s",
                 s->request->env.partner_id, s->request->env.site_id, s->request->env.txn_id,
                 cl_strerror(rc));
    fuzz_reply_t again;
    decode_reply(s, bytes, len, &again, "ledger_replay");
    free(bytes);
    fuzz_reply_require_same(&s->answer, &again, "ledger_replay after the commit");
}

/* Commit the open batch, then audit the whole ledger. */
static void flush(void)
{
    if (!world.batch_open)
        return;
    int rc = ledger_batch_commit(world.ledger);
    FUZZ_REQUIRE(rc == CL_OK, "ledger_batch_commit: %s", cl_strerror(rc));
    world.batch_open = false;
    FUZZ_REQUIRE(ledger_last_seq(world.ledger) == world.seq, "last seq %llu after %llu approvals",
                 (unsigned long long)ledger_last_seq(world.ledger), (unsigned long long)world.seq);
    char why[WHY_BYTES];
    rc = ledger_verify(world.ledger, why, sizeof why);
    FUZZ_REQUIRE(rc == CL_OK, "ledger_verify after %zu requests: %s: %s", world.sub_count,
                 cl_strerror(rc), why);
    for (size_t i = 0; i < world.batch_count; i++) {
        const submission_t *s = &world.subs[world.batch[i]];
        if (s->answer.code != RC_UNKNOWN_PARTNER)
            check_replay_read(s);
    }
    world.batch_count = 0;
}

static void apply(submission_t *s, bool join)
{
    if (world.batch_open && (!join || world.batch_count == BATCH_REQUESTS_MAX))
        flush();
    if (!world.batch_open) {
        int rc = ledger_batch_begin(world.ledger);
        FUZZ_REQUIRE(rc == CL_OK, "ledger_batch_begin: %s", cl_strerror(rc));
        world.batch_open = true;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    int64_t now_ms = NOW_MS + (int64_t)world.sub_count;
    int rc = ledger_apply(world.ledger, &s->request->env, s->hash, now_ms, &bytes, &len);
    FUZZ_REQUIRE(rc == CL_OK, "ledger_apply of %s %s/%s/%s: %s", wire_body_name(&s->request->env),
                 s->request->env.partner_id, s->request->env.site_id, s->request->env.txn_id,
                 cl_strerror(rc));
    decode_reply(s, bytes, len, &s->answer, "ledger_apply");
    free(bytes);
    s->applied = true;
    world.batch[world.batch_count++] = (size_t)(s - world.subs);
    check_applied(s);
}

/* A balance inquiry is answered from a read transaction: the committed balance. */
static void inquire(submission_t *s)
{
    flush();
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = ledger_inquire(world.ledger, &s->request->env, s->hash, &bytes, &len);
    FUZZ_REQUIRE(rc == CL_OK, "ledger_inquire: %s", cl_strerror(rc));
    decode_reply(s, bytes, len, &s->answer, "ledger_inquire");
    free(bytes);
    if (s->answer.code != RC_APPROVED)
        return;
    int64_t balance = 0;
    rc = ledger_member_balance(world.ledger, s->request->env.balance->member_id, &balance);
    FUZZ_REQUIRE(rc == CL_OK && balance == s->answer.balance,
                 "inquiry answered balance %lld, the ledger holds %lld (%s)",
                 (long long)s->answer.balance, (long long)balance, cl_strerror(rc));
}

/* Send one request as the broker would: validated first, then hashed and applied. */
static void submit(request_t *r, bool join)
{
    assert(world.sub_count < REQUESTS_MAX);
    submission_t *s = &world.subs[world.sub_count++];
    memset(s, 0, sizeof *s);
    s->request = r;
    r->env.client_time_ms = NOW_MS + (int64_t)world.sub_count; /* never part of the hash */
    char why[WHY_BYTES];
    int code = wire_validate(&r->env, r->from_admin, why, sizeof why);
    if (code != RC_APPROVED)
        return; /* declined by the front end; nothing reaches the ledger */
    int rc = wire_request_hash(&r->env, s->hash);
    FUZZ_REQUIRE(rc == CL_OK, "wire_request_hash of a valid request: %s", cl_strerror(rc));
    if (r->env.body_case == COALITION__ENVELOPE__BODY_BALANCE)
        inquire(s);
    else
        apply(s, join);
}

/* ---- one input ---------------------------------------------------------------------- */

static void run_op(const uint8_t *op)
{
    ledger_op_kind_t kind = (ledger_op_kind_t)(op[0] % LEDGER_OP_KINDS);
    bool join = (op[1] & LEDGER_FLAG_JOIN_BATCH) != 0;
    if (kind != LEDGER_OP_REPEAT) {
        submit((request_t *)build(op, kind), join);
        return;
    }
    if (world.request_count == 0)
        return;
    submit(&world.requests[op[6] % world.request_count], join);
}

static const char *tmp_base(void)
{
    const char *dir = getenv(TMP_DIR_ENV);
    if (dir != NULL && dir[0] != '\0')
        return dir;
    return access(TMP_DIR_FAST, W_OK) == 0 ? TMP_DIR_FAST : TMP_DIR_DEFAULT;
}

static void world_open(void)
{
    memset(&world, 0, sizeof world);
    int n = snprintf(world.dir, sizeof world.dir, "%s%s", tmp_base(), DIR_TEMPLATE);
    FUZZ_REQUIRE(n > 0 && (size_t)n < sizeof world.dir, "temporary directory name too long");
    FUZZ_REQUIRE(mkdtemp(world.dir) != NULL, "cannot make a directory in %s", tmp_base());
    int rc = ledger_init(world.dir);
    FUZZ_REQUIRE(rc == CL_OK, "ledger_init %s: %s", world.dir, cl_strerror(rc));
    rc = ledger_open(&world.ledger, world.dir, STORE_READ_WRITE);
    FUZZ_REQUIRE(rc == CL_OK, "ledger_open %s: %s", world.dir, cl_strerror(rc));
}

/* Close the ledger and remove its directory with everything in it. */
static void world_close(void)
{
    ledger_destroy(&world.ledger);
    DIR *d = opendir(world.dir);
    FUZZ_REQUIRE(d != NULL, "cannot list %s", world.dir);
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        char path[PATH_BYTES * 2];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", world.dir, e->d_name);
        FUZZ_REQUIRE(unlink(path) == 0, "cannot remove %s", path);
    }
    closedir(d);
    FUZZ_REQUIRE(rmdir(world.dir) == 0, "cannot remove %s", world.dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    world_open();
    for (size_t i = 0; i < SETUP_OPS; i++) {
        run_op(SETUP[i]);
        FUZZ_REQUIRE(world.subs[i].answer.code == RC_APPROVED, "setup operation %zu answered %02d",
                     i, world.subs[i].answer.code);
    }
    size_t ops = size / LEDGER_OP_BYTES;
    for (size_t i = 0; i < ops && i < LEDGER_OPS_MAX; i++)
        run_op(data + i * LEDGER_OP_BYTES);
    flush();
    world_close();
    return 0;
}
