/* Agent outbox and journal in LMDB; see outbox.h. Keys are u64 big-endian. */
#include "outbox.h"

#include "agent.pb-c.h"
#include "errors.h"
#include "log.h"
#include "store.h"
#include "wire.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define OUTBOX_RECORD_BYTES_MAX 8192
#define OUTBOX_GROW_ATTEMPTS_MAX 8
#define OUTBOX_KEY_BYTES_MAX 128

struct outbox {
    MDB_env *env;
    MDB_dbi db_outbox, db_journal, db_reversed, db_answered;
    uint64_t outbox_next, journal_next;
    size_t count;        /* requests in the outbox, as of the last commit */
    int64_t oldest_ms;   /* the first one's taken_ms, 0 when none */
    uint64_t oldest_seq; /* its key: the entry is read again only when the first changes */
    uint8_t prune_from[OUTBOX_KEY_BYTES_MAX]; /* where the next reversed-mark prune starts */
    size_t prune_from_len;
};

static int last_key(MDB_txn *txn, MDB_dbi dbi, uint64_t *next)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) {
        *next = 1;
        return CL_OK;
    }
    if (rc != MDB_SUCCESS || k.mv_size != 8)
        return rc != MDB_SUCCESS ? store_err(rc) : CL_ERR_CORRUPT;
    *next = store_get_u64(k.mv_data) + 1;
    return CL_OK;
}

/* How many requests `txn` sees in the outbox and the first one's key and time. */
static int depth_of(const outbox_t *self, MDB_txn *txn, size_t *count, uint64_t *first_seq,
                    int64_t *first_ms)
{
    MDB_stat st;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = store_err(mdb_stat(txn, self->db_outbox, &st));
    if (rc == CL_OK)
        rc = store_err(mdb_cursor_open(txn, self->db_outbox, &cur));
    int mrc = rc == CL_OK ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : MDB_NOTFOUND;
    if (cur != NULL)
        mdb_cursor_close(cur); /* k and v stay valid: the transaction is open */
    if (rc != CL_OK || mrc == MDB_NOTFOUND) {
        *count = 0;
        *first_seq = 0;
        *first_ms = 0;
        return rc;
    }
    if (mrc != MDB_SUCCESS || k.mv_size != 8)
        return mrc != MDB_SUCCESS ? store_err(mrc) : CL_ERR_CORRUPT;
    if (st.ms_entries == 0)
        return CL_ERR_CORRUPT; /* a first record, but no records */
    *count = st.ms_entries;
    uint64_t seq = store_get_u64(k.mv_data);
    if (seq == *first_seq)
        return CL_OK; /* the same first request: its time is known */
    Coalition__OutboxEntry *e = coalition__outbox_entry__unpack(NULL, v.mv_size, v.mv_data);
    if (e == NULL)
        return CL_ERR_CORRUPT;
    *first_seq = seq;
    *first_ms = e->taken_ms;
    coalition__outbox_entry__free_unpacked(e, NULL);
    return CL_OK;
}

int outbox_open(outbox_t **self_out, const char *dir, int read_only)
{
    outbox_t *self = calloc(1, sizeof *self);
    MDB_txn *txn = NULL;
    if (self == NULL)
        return CL_ERR_NOMEM;
    int rc = store_env_open(&self->env, dir, read_only ? STORE_READ_ONLY : STORE_READ_WRITE);
    if (rc != CL_OK)
        goto err;
    unsigned create = read_only ? 0u : MDB_CREATE;
    rc = store_err(mdb_txn_begin(self->env, NULL, read_only ? MDB_RDONLY : 0u, &txn));
    if (rc == CL_OK)
        rc = store_err(mdb_dbi_open(txn, "outbox", create, &self->db_outbox));
    if (rc == CL_OK)
        rc = store_err(mdb_dbi_open(txn, "journal", create, &self->db_journal));
    if (rc == CL_OK)
        rc = store_err(mdb_dbi_open(txn, "reversed", create, &self->db_reversed));
    if (rc == CL_OK)
        rc = store_err(mdb_dbi_open(txn, "answered", create, &self->db_answered));
    if (rc == CL_OK)
        rc = last_key(txn, self->db_outbox, &self->outbox_next);
    if (rc == CL_OK)
        rc = last_key(txn, self->db_journal, &self->journal_next);
    if (rc == CL_OK)
        rc = depth_of(self, txn, &self->count, &self->oldest_seq, &self->oldest_ms);
    if (rc == CL_OK) {
        rc = store_err(mdb_txn_commit(txn));
        txn = NULL;
    }
    if (rc != CL_OK)
        goto err;
    assert(self->outbox_next >= 1 && self->journal_next >= 1); /* keys start at 1 */
    *self_out = self;
    return CL_OK;
err:
    if (txn != NULL)
        mdb_txn_abort(txn);
    log_error("cannot open agent store %s: %s", dir, cl_strerror(rc));
    outbox_destroy(&self);
    return rc;
}

void outbox_destroy(outbox_t **self_p)
{
    outbox_t *self = *self_p;
    if (self == NULL)
        return;
    if (self->env != NULL)
        mdb_env_close(self->env);
    free(self);
    *self_p = NULL;
}

int outbox_was_reversed(outbox_t *self, const char *txn_id, bool *reversed)
{
    MDB_txn *txn = NULL;
    MDB_val k = {strlen(txn_id), (void *)txn_id}, v;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc != CL_OK)
        return rc;
    rc = store_err(mdb_get(txn, self->db_reversed, &k, &v));
    mdb_txn_abort(txn);
    *reversed = rc == CL_OK;
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

uint64_t outbox_next_seq(const outbox_t *self) { return self->outbox_next; }
uint64_t outbox_journal_next_seq(const outbox_t *self) { return self->journal_next; }
size_t outbox_count(const outbox_t *self) { return self->count; }
int64_t outbox_oldest_ms(const outbox_t *self) { return self->oldest_ms; }

static int put_packed(MDB_txn *txn, MDB_dbi dbi, uint64_t seq, const ProtobufCMessage *msg)
{
    uint8_t key[8], buf[OUTBOX_RECORD_BYTES_MAX];
    assert(seq > 0); /* keys start at 1 */
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > sizeof buf)
        return CL_ERR_INVALID;
    size_t packed = protobuf_c_message_pack(msg, buf);
    assert(packed == len);
    (void)packed;
    store_put_u64(key, seq);
    MDB_val k = {sizeof key, key}, v = {len, buf};
    return store_err(mdb_put(txn, dbi, &k, &v, 0));
}

static int apply_op(outbox_t *self, MDB_txn *txn, const outbox_op_t *op)
{
    assert(op->kind == OUTBOX_OP_PUT || op->kind == OUTBOX_OP_DELETE ||
           op->kind == OUTBOX_OP_JOURNAL || op->kind == OUTBOX_OP_REVERSED);
    assert(op->kind != OUTBOX_OP_REVERSED || op->txn_id != NULL);
    if (op->kind == OUTBOX_OP_DELETE) {
        uint8_t key[8];
        store_put_u64(key, op->seq);
        MDB_val k = {sizeof key, key};
        int rc = store_err(mdb_del(txn, self->db_outbox, &k, NULL));
        return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
    }
    if (op->kind == OUTBOX_OP_REVERSED) {
        uint8_t when[8];
        store_put_u64(when, (uint64_t)op->time_ms);
        MDB_val k = {strlen(op->txn_id), (void *)op->txn_id}, v = {sizeof when, when};
        return store_err(mdb_put(txn, self->db_reversed, &k, &v, 0));
    }
    if (op->kind == OUTBOX_OP_PUT) {
        Coalition__OutboxEntry e = COALITION__OUTBOX_ENTRY__INIT;
        e.envelope.data = (uint8_t *)op->envelope;
        e.envelope.len = op->envelope_len;
        e.taken_ms = op->time_ms;
        return put_packed(txn, self->db_outbox, op->seq, &e.base);
    }
    Coalition__AgentJournalEntry j = COALITION__AGENT_JOURNAL_ENTRY__INIT;
    j.time_ms = op->time_ms;
    j.envelope.data = (uint8_t *)op->envelope;
    j.envelope.len = op->envelope_len;
    j.authorization.data = (uint8_t *)op->auth;
    j.authorization.len = op->auth_len;
    int rc = put_packed(txn, self->db_journal, op->seq, &j.base);
    if (rc != CL_OK || op->txn_id == NULL)
        return rc;
    uint8_t seq[8]; /* the answered index: txn id -> its latest journal record */
    store_put_u64(seq, op->seq);
    MDB_val k = {strlen(op->txn_id), (void *)op->txn_id}, v = {sizeof seq, seq};
    return store_err(mdb_put(txn, self->db_answered, &k, &v, 0));
}

int outbox_answer_of(outbox_t *self, const char *txn_id, uint8_t **auth_out, size_t *len_out)
{
    MDB_txn *txn = NULL;
    MDB_val k = {strlen(txn_id), (void *)txn_id}, v;
    *auth_out = NULL;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc != CL_OK)
        return rc;
    rc = store_err(mdb_get(txn, self->db_answered, &k, &v));
    Coalition__AgentJournalEntry *j = NULL;
    if (rc == CL_OK && v.mv_size == 8) {
        k = (MDB_val){8, v.mv_data};
        rc = store_err(mdb_get(txn, self->db_journal, &k, &v));
        j = rc == CL_OK ? coalition__agent_journal_entry__unpack(NULL, v.mv_size, v.mv_data) : NULL;
        if (rc == CL_OK && j == NULL)
            rc = CL_ERR_CORRUPT;
    }
    if (j != NULL) {
        *auth_out = malloc(j->authorization.len > 0 ? j->authorization.len : 1);
        rc = *auth_out != NULL ? CL_OK : CL_ERR_NOMEM;
        if (rc == CL_OK)
            memcpy(*auth_out, j->authorization.data, j->authorization.len);
        *len_out = j->authorization.len;
    }
    coalition__agent_journal_entry__free_unpacked(j, NULL);
    mdb_txn_abort(txn);
    return rc;
}

static int apply_once(outbox_t *self, const outbox_op_t *ops, size_t count)
{
    MDB_txn *txn = NULL;
    int rc = store_err(mdb_txn_begin(self->env, NULL, 0, &txn));
    for (size_t i = 0; i < count && rc == CL_OK; i++)
        rc = apply_op(self, txn, &ops[i]);
    size_t depth = 0;
    uint64_t first_seq = self->oldest_seq;
    int64_t first_ms = self->oldest_ms;
    if (rc == CL_OK)
        rc = depth_of(self, txn, &depth, &first_seq, &first_ms);
    if (rc != CL_OK) {
        if (txn != NULL)
            mdb_txn_abort(txn);
        return rc;
    }
    rc = store_err(mdb_txn_commit(txn)); /* synced: the env has no NOSYNC flags */
    if (rc == CL_OK) {
        self->count = depth;
        self->oldest_seq = first_seq;
        self->oldest_ms = first_ms;
    }
    return rc;
}

/* outbox_apply's attempt and growth for store_retry_map_full. */
typedef struct outbox_round {
    outbox_t *self;
    const outbox_op_t *ops;
    size_t count;
} outbox_round_t;

static int outbox_attempt(void *ctx)
{
    const outbox_round_t *round = ctx;
    return apply_once(round->self, round->ops, round->count);
}

static int outbox_grow(void *ctx)
{
    const outbox_round_t *round = ctx;
    return store_env_grow(round->self->env);
}

int outbox_apply(outbox_t *self, const outbox_op_t *ops, size_t count)
{
    assert(self != NULL && ops != NULL && count > 0);
    outbox_round_t round = {self, ops, count};
    const store_retry_t retry = {outbox_attempt, outbox_grow, &round, OUTBOX_GROW_ATTEMPTS_MAX};
    int rc = store_retry_map_full(&retry);
    if (rc != CL_OK)
        return rc; /* nothing was applied */
    for (size_t i = 0; i < count; i++) {
        if (ops[i].kind == OUTBOX_OP_PUT && ops[i].seq >= self->outbox_next)
            self->outbox_next = ops[i].seq + 1;
        if (ops[i].kind == OUTBOX_OP_JOURNAL && ops[i].seq >= self->journal_next)
            self->journal_next = ops[i].seq + 1;
    }
    return CL_OK;
}

/* The answered index entry of a pruned journal record goes with it (if it points there). */
static int unindex_answer(outbox_t *self, MDB_txn *txn, const Coalition__AgentJournalEntry *j,
                          const MDB_val *seq)
{
    envelope_t *env = wire_envelope_decode(j->envelope.data, j->envelope.len);
    if (env == NULL)
        return CL_OK;
    MDB_val k = {strlen(env->txn_id), env->txn_id}, v;
    int rc = store_err(mdb_get(txn, self->db_answered, &k, &v));
    if (rc == CL_OK && v.mv_size == seq->mv_size && memcmp(v.mv_data, seq->mv_data, 8) == 0)
        rc = store_err(mdb_del(txn, self->db_answered, &k, NULL));
    wire_envelope_free(env);
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc;
}

/* Journal keys grow with time, so the old records are a prefix. */
static int prune_journal(outbox_t *self, MDB_txn *txn, int64_t before_ms, size_t max,
                         size_t *pruned)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = store_err(mdb_cursor_open(txn, self->db_journal, &cur));
    for (MDB_cursor_op op = MDB_FIRST; rc == CL_OK && *pruned < max; op = MDB_NEXT) {
        int mrc = mdb_cursor_get(cur, &k, &v, op);
        if (mrc == MDB_NOTFOUND)
            break;
        rc = store_err(mrc);
        Coalition__AgentJournalEntry *j =
            rc == CL_OK ? coalition__agent_journal_entry__unpack(NULL, v.mv_size, v.mv_data) : NULL;
        bool old = j != NULL && j->time_ms < before_ms;
        if (rc == CL_OK && j == NULL)
            rc = CL_ERR_CORRUPT;
        if (rc == CL_OK && old)
            rc = unindex_answer(self, txn, j, &k);
        coalition__agent_journal_entry__free_unpacked(j, NULL);
        if (rc != CL_OK || !old)
            break;
        rc = store_err(mdb_cursor_del(cur, 0));
        (*pruned)++;
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

/* Reversed marks (txn id -> time): at most `max` of them a call, resuming where the last
 * call stopped and wrapping around, so every mark is looked at in turn. */
static int prune_reversed(outbox_t *self, MDB_txn *txn, int64_t before_ms, size_t max)
{
    MDB_cursor *cur = NULL;
    MDB_val k = {self->prune_from_len, self->prune_from}, v;
    int rc = store_err(mdb_cursor_open(txn, self->db_reversed, &cur));
    MDB_cursor_op op = self->prune_from_len > 0 ? MDB_SET_RANGE : MDB_FIRST;
    size_t seen = 0;
    for (; rc == CL_OK && seen < max; seen++, op = MDB_NEXT) {
        int mrc = mdb_cursor_get(cur, &k, &v, op);
        if (mrc == MDB_NOTFOUND)
            break;
        rc = store_err(mrc);
        if (rc == CL_OK && k.mv_size <= sizeof self->prune_from) {
            memcpy(self->prune_from, k.mv_data, k.mv_size);
            self->prune_from_len = k.mv_size;
        }
        if (rc == CL_OK && v.mv_size == 8 && (int64_t)store_get_u64(v.mv_data) < before_ms)
            rc = store_err(mdb_cursor_del(cur, 0));
    }
    if (seen < max)
        self->prune_from_len = 0; /* reached the end: start again from the first */
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int outbox_prune(outbox_t *self, int64_t before_ms, size_t max_records, size_t *pruned_out)
{
    MDB_txn *txn = NULL;
    *pruned_out = 0;
    int rc = store_err(mdb_txn_begin(self->env, NULL, 0, &txn));
    if (rc == CL_OK)
        rc = prune_journal(self, txn, before_ms, max_records, pruned_out);
    assert(*pruned_out <= max_records);
    if (rc == CL_OK)
        rc = prune_reversed(self, txn, before_ms, max_records);
    if (rc == CL_OK)
        return store_err(mdb_txn_commit(txn)); /* a failure is retried at the next prune */
    if (txn != NULL)
        mdb_txn_abort(txn);
    *pruned_out = 0;
    return rc;
}

struct outbox_walk {
    outbox_entry_fn entry_fn;
    outbox_journal_fn journal_fn;
    void *ctx;
};

static int visit_outbox(const MDB_val *k, const MDB_val *v, void *ctx)
{
    const struct outbox_walk *w = ctx;
    Coalition__OutboxEntry *e = coalition__outbox_entry__unpack(NULL, v->mv_size, v->mv_data);
    if (e == NULL || k->mv_size != 8) {
        coalition__outbox_entry__free_unpacked(e, NULL);
        return CL_ERR_CORRUPT;
    }
    int rc = w->entry_fn(store_get_u64(k->mv_data), e->envelope.data, e->envelope.len, w->ctx);
    coalition__outbox_entry__free_unpacked(e, NULL);
    return rc;
}

static int visit_journal(const MDB_val *k, const MDB_val *v, void *ctx)
{
    const struct outbox_walk *w = ctx;
    Coalition__AgentJournalEntry *j =
        coalition__agent_journal_entry__unpack(NULL, v->mv_size, v->mv_data);
    if (j == NULL || k->mv_size != 8) {
        coalition__agent_journal_entry__free_unpacked(j, NULL);
        return CL_ERR_CORRUPT;
    }
    int rc = w->journal_fn(store_get_u64(k->mv_data), j->time_ms, j->envelope.data, j->envelope.len,
                           j->authorization.data, j->authorization.len, w->ctx);
    coalition__agent_journal_entry__free_unpacked(j, NULL);
    return rc;
}

static int walk(outbox_t *self, MDB_dbi dbi, store_visit_fn visit, struct outbox_walk *w)
{
    MDB_txn *txn = NULL;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc == CL_OK) {
        rc = store_walk(txn, dbi, NULL, visit, w);
        mdb_txn_abort(txn);
    }
    return rc;
}

int outbox_foreach(outbox_t *self, outbox_entry_fn fn, void *ctx)
{
    struct outbox_walk w = {fn, NULL, ctx};
    return walk(self, self->db_outbox, visit_outbox, &w);
}

int outbox_journal_foreach(outbox_t *self, outbox_journal_fn fn, void *ctx)
{
    struct outbox_walk w = {NULL, fn, ctx};
    return walk(self, self->db_journal, visit_journal, &w);
}

/* One record's answer for outbox_journal_newest_first; a record that does not unpack is
 * skipped (CL_OK). */
static int visit_newest(const MDB_val *k, const MDB_val *v, outbox_journal_fn fn, void *ctx)
{
    Coalition__AgentJournalEntry *j =
        coalition__agent_journal_entry__unpack(NULL, v->mv_size, v->mv_data);
    int rc = CL_OK;
    if (j != NULL && k->mv_size == 8)
        rc = fn(store_get_u64(k->mv_data), j->time_ms, j->envelope.data, j->envelope.len,
                j->authorization.data, j->authorization.len, ctx);
    coalition__agent_journal_entry__free_unpacked(j, NULL);
    return rc;
}

int outbox_journal_newest_first(outbox_t *self, outbox_journal_fn fn, void *ctx)
{
    assert(self != NULL && fn != NULL);
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc == CL_OK)
        rc = store_err(mdb_cursor_open(txn, self->db_journal, &cur));
    MDB_val k, v;
    int mrc = rc == CL_OK ? mdb_cursor_get(cur, &k, &v, MDB_LAST) : MDB_NOTFOUND;
    int stop = CL_OK;
    while (mrc == MDB_SUCCESS && stop == CL_OK) {
        stop = visit_newest(&k, &v, fn, ctx);
        if (stop == CL_OK)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    }
    if (rc == CL_OK && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
        rc = store_err(mrc);
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    assert(rc != CL_OK || mrc == MDB_SUCCESS || mrc == MDB_NOTFOUND);
    return rc;
}
