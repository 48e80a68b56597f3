/* Ledger storage: LMDB layout, write batches with a nested transaction per request,
 * idempotency records and the journal's hash chain. What a request does to balances is
 * decided in rules.c; this file makes it durable exactly once.
 *
 * Databases: meta (schema), journal (u64 BE seq -> JournalEntry), idem ("partner\0txn"
 * -> IdemRecord), accounts (name -> i64 BE), members, partners, reversals, keys (Z85
 * public key -> KeyRecord), contracts and settlement (settle.c). */
#include "ledger_internal.h"

#include "amount.h"
#include "digest.h"
#include "clock.h"
#include "errors.h"
#include "log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define META_SCHEMA_KEY "schema_version"

_Static_assert(TXN_KEY_BYTES_MAX == PARTNER_ID_LEN_MAX + SITE_ID_LEN_MAX + TXN_ID_LEN_MAX + 2,
               "a txn key holds the three longest ids and two separators");
/* An idempotency record holds a whole reply (at most a wire message) and the hash. */
_Static_assert(LEDGER_ENTRY_BYTES_MAX >= WIRE_MESSAGE_BYTES_MAX + 2 * WIRE_HASH_BYTES + 64,
               "record buffers hold a stored reply with its hash and fields");
_Static_assert(ACCOUNT_NAME_BYTES_MAX > sizeof "partner::redeemed" - 1 + PARTNER_ID_LEN_MAX,
               "account names fit partner ids");
_Static_assert(ACCOUNT_NAME_BYTES_MAX > sizeof MEMBER_PREFIX - 1 + MEMBER_ID_LEN_MAX,
               "account names fit member ids");
#define LEDGER_PATH_BYTES_MAX 4096

static int open_dbs(ledger_t *self, MDB_txn *txn, unsigned flags)
{
    struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {
        {"meta", &self->db_meta},           {"journal", &self->db_journal},
        {"idem", &self->db_idem},           {"accounts", &self->db_accounts},
        {"members", &self->db_members},     {"partners", &self->db_partners},
        {"reversals", &self->db_reversals}, {"keys", &self->db_keys},
        {"contracts", &self->db_contracts}, {"settlement", &self->db_settlement},
        {"cards", &self->db_cards},         {"bank_refs", &self->db_bank_refs},
        {"banks", &self->db_banks},         {"unclaimed", &self->db_unclaimed},
        {"lot_due", &self->db_lot_due},     {"idle", &self->db_idle},
        {"rules", &self->db_rules},         {"expired", &self->db_expired},
    };
    _Static_assert(18 <= STORE_DBS_MAX, "the environment opens every database");
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        int rc = mdb_dbi_open(txn, dbs[i].name, flags, dbs[i].dbi);
        if (rc != MDB_SUCCESS) {
            log_error("cannot open ledger database %s: %s", dbs[i].name, mdb_strerror(rc));
            return store_err(rc);
        }
    }
    return CL_OK;
}

int ledger_init(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &st) == 0)
        return CL_ERR_EXISTS;
    ledger_t self = {0};
    MDB_txn *txn = NULL;
    int rc = store_env_open(&self.env, dir, STORE_READ_WRITE);
    if (rc != CL_OK)
        return rc;
    rc = store_err(mdb_txn_begin(self.env, NULL, 0, &txn));
    if (rc == CL_OK)
        rc = open_dbs(&self, txn, MDB_CREATE);
    if (rc == CL_OK) {
        uint8_t version[8];
        store_put_u64(version, LEDGER_SCHEMA_VERSION);
        MDB_val k = {strlen(META_SCHEMA_KEY), META_SCHEMA_KEY};
        MDB_val v = {sizeof version, version};
        rc = store_err(mdb_put(txn, self.db_meta, &k, &v, MDB_NOOVERWRITE));
    }
    if (rc == CL_OK)
        rc = ledger_put_balance(&self, txn, ACCOUNT_BREAKAGE, 0);
    if (rc == CL_OK) {
        rc = store_err(mdb_txn_commit(txn));
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    mdb_env_close(self.env);
    return rc;
}

static int check_schema(ledger_t *self, MDB_txn *txn)
{
    MDB_val k = {strlen(META_SCHEMA_KEY), META_SCHEMA_KEY};
    MDB_val v;
    int rc = mdb_get(txn, self->db_meta, &k, &v);
    if (rc != MDB_SUCCESS || v.mv_size != 8) {
        log_error("not a ledger: no schema version");
        return CL_ERR_CORRUPT;
    }
    uint64_t version = store_get_u64(v.mv_data);
    if (version != LEDGER_SCHEMA_VERSION) {
        log_error("ledger schema version %llu, this build reads %u", (unsigned long long)version,
                  LEDGER_SCHEMA_VERSION);
        return CL_ERR_VERSION;
    }
    return CL_OK;
}

/* Read the last journal entry into self->seq and self->head. */
static int load_chain_head(ledger_t *self, MDB_txn *txn)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, self->db_journal, &cur);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) {
        self->seq = 0;
        memset(self->head, 0, sizeof self->head);
        return CL_OK;
    }
    if (rc != MDB_SUCCESS || k.mv_size != 8)
        return rc != MDB_SUCCESS ? store_err(rc) : CL_ERR_CORRUPT;
    journal_entry_t *e = coalition__journal_entry__unpack(NULL, v.mv_size, v.mv_data);
    if (e == NULL || e->hash.len != WIRE_HASH_BYTES || e->seq != store_get_u64(k.mv_data)) {
        coalition__journal_entry__free_unpacked(e, NULL);
        return CL_ERR_CORRUPT;
    }
    self->seq = e->seq;
    memcpy(self->head, e->hash.data, WIRE_HASH_BYTES);
    coalition__journal_entry__free_unpacked(e, NULL);
    return CL_OK;
}

/* The writer takes the directory's lock before it touches the environment, so a second
 * writer (a broker started twice) stops here and changes nothing. */
static int lock_for_writing(ledger_t *self, const char *dir)
{
    long holder_pid = 0;
    int rc = store_lock_take(&self->lock, dir, &holder_pid);
    if (rc == CL_ERR_LOCKED && holder_pid > 0)
        log_error("ledger %s is locked by another writer, pid %ld; not opening it", dir,
                  holder_pid);
    else if (rc == CL_ERR_LOCKED)
        log_error("ledger %s is locked by another writer (pid not yet written); not opening it",
                  dir);
    return rc;
}

static bool has_data_file(const char *dir)
{
    char path[LEDGER_PATH_BYTES_MAX];
    struct stat st;
    int n = snprintf(path, sizeof path, "%s/data.mdb", dir);
    return n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0;
}

static int open_env(ledger_t *self, const char *dir, store_mode_t mode)
{
    if (mode == STORE_READ_WRITE) {
        int rc = lock_for_writing(self, dir);
        if (rc != CL_OK)
            return rc;
    }
    /* Never create an environment here: that is ledger_init's job. */
    if (!has_data_file(dir)) {
        log_error("no ledger in %s", dir);
        return CL_ERR_NOT_FOUND;
    }
    return store_env_open(&self->env, dir, mode);
}

int ledger_open(ledger_t **self_out, const char *dir, store_mode_t mode)
{
    ledger_t *self = calloc(1, sizeof *self);
    MDB_txn *txn = NULL;
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->mode = mode;
    if (pthread_rwlock_init(&self->map_lock, NULL) != 0) {
        free(self);
        return CL_ERR_NOMEM;
    }
    int rc = open_env(self, dir, mode);
    if (rc != CL_OK) {
        ledger_destroy(&self);
        return rc;
    }
    /* A reader beside a running broker: the map may have grown since the open. */
    rc = mode == STORE_READ_ONLY ? store_read_begin(self->env, &txn)
                                 : store_err(mdb_txn_begin(self->env, NULL, 0, &txn));
    if (rc == CL_OK)
        rc = open_dbs(self, txn, 0);
    if (rc == CL_OK)
        rc = check_schema(self, txn);
    if (rc == CL_OK)
        rc = load_chain_head(self, txn);
    if (rc != CL_OK)
        goto err;
    rc = store_err(mdb_txn_commit(txn));
    txn = NULL;
    if (rc != CL_OK)
        goto err;
    assert(mode == STORE_READ_ONLY || self->lock != NULL);
    *self_out = self;
    return CL_OK;
err:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc == CL_ERR_NOT_FOUND)
        rc = CL_ERR_CORRUPT; /* a database is missing: not an initialised ledger */
    ledger_destroy(&self);
    return rc;
}

void ledger_destroy(ledger_t **self_p)
{
    ledger_t *self = *self_p;
    if (self == NULL)
        return;
    if (self->batch != NULL)
        mdb_txn_abort(self->batch);
    if (self->reader != NULL)
        mdb_txn_abort(self->reader);
    if (self->env != NULL)
        mdb_env_close(self->env);
    /* Released only after the environment is closed: no second writer overlaps this one. */
    store_lock_release(&self->lock);
    pthread_rwlock_destroy(&self->map_lock);
    free(self);
    *self_p = NULL;
}

uint64_t ledger_last_seq(const ledger_t *self) { return self->seq; }

/* ---- record helpers ---------------------------------------------------------------- */

int ledger_get_record(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t key_len,
                      const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    MDB_val k = {key_len, (void *)key};
    MDB_val v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    *out = protobuf_c_message_unpack(desc, NULL, v.mv_size, v.mv_data);
    return *out == NULL ? CL_ERR_CORRUPT : CL_OK;
}

int ledger_put_record(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t key_len,
                      const ProtobufCMessage *msg)
{
    uint8_t buf[LEDGER_ENTRY_BYTES_MAX];
    assert(txn != NULL && key != NULL && key_len > 0 && msg != NULL);
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > sizeof buf)
        return CL_ERR_INVALID;
    size_t packed = protobuf_c_message_pack(msg, buf);
    assert(packed == len);
    (void)packed;
    MDB_val k = {key_len, (void *)key};
    MDB_val v = {len, buf};
    return store_err(mdb_put(txn, dbi, &k, &v, 0));
}

int ledger_get_balance(ledger_t *self, MDB_txn *txn, const char *account, int64_t *out)
{
    MDB_val k = {strlen(account), (void *)account};
    MDB_val v;
    int rc = mdb_get(txn, self->db_accounts, &k, &v);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    if (v.mv_size != 8)
        return CL_ERR_CORRUPT;
    *out = (int64_t)store_get_u64(v.mv_data);
    return CL_OK;
}

int ledger_put_balance(ledger_t *self, MDB_txn *txn, const char *account, int64_t balance)
{
    uint8_t buf[8];
    store_put_u64(buf, (uint64_t)balance);
    MDB_val k = {strlen(account), (void *)account};
    MDB_val v = {sizeof buf, buf};
    return store_err(mdb_put(txn, self->db_accounts, &k, &v, 0));
}

int ledger_get_entry(ledger_t *self, MDB_txn *txn, uint64_t seq, journal_entry_t **out)
{
    uint8_t key[8];
    store_put_u64(key, seq);
    ProtobufCMessage *msg = NULL;
    int rc = ledger_get_record(txn, self->db_journal, key, sizeof key,
                               &coalition__journal_entry__descriptor, &msg);
    if (rc != CL_OK)
        return rc;
    journal_entry_t *e = (journal_entry_t *)msg;
    /* Paired with the check before writing: an entry read back must still balance. */
    if (e->seq != seq || !ledger_entry_balances(e)) {
        coalition__journal_entry__free_unpacked(e, NULL);
        return CL_ERR_CORRUPT;
    }
    *out = e;
    return CL_OK;
}

size_t ledger_txn_key(uint8_t key[TXN_KEY_BYTES_MAX], const char *partner, const char *site,
                      const char *txn_id)
{
    assert(partner != NULL && site != NULL && txn_id != NULL);
    size_t len = store_triple_key(key, TXN_KEY_BYTES_MAX, partner, site, txn_id);
    assert(len <= TXN_KEY_BYTES_MAX);
    return len;
}

int ledger_get_idem(ledger_t *self, MDB_txn *txn, const char *partner, const char *site,
                    const char *txn_id, Coalition__IdemRecord **out)
{
    uint8_t key[TXN_KEY_BYTES_MAX];
    size_t key_len = ledger_txn_key(key, partner, site, txn_id);
    if (key_len == 0)
        return CL_ERR_INVALID;
    return ledger_get_record(txn, self->db_idem, key, key_len, &coalition__idem_record__descriptor,
                             (ProtobufCMessage **)out);
}

bool ledger_entry_balances(const journal_entry_t *entry)
{
    int64_t sum = 0;
    for (size_t i = 0; i < entry->n_postings; i++) {
        if (__builtin_add_overflow(sum, entry->postings[i]->delta, &sum))
            return false;
    }
    return sum == 0;
}

int ledger_entry_hash(const journal_entry_t *entry, const uint8_t prev[WIRE_HASH_BYTES],
                      uint8_t out[WIRE_HASH_BYTES])
{
    uint8_t buf[LEDGER_ENTRY_BYTES_MAX];
    journal_entry_t copy = *entry;
    copy.hash.len = 0;
    copy.hash.data = NULL;
    size_t len = coalition__journal_entry__get_packed_size(&copy);
    if (len > sizeof buf)
        return CL_ERR_INVALID;
    coalition__journal_entry__pack(&copy, buf);
    const void *parts[] = {prev, buf};
    const size_t lens[] = {WIRE_HASH_BYTES, len};
    return digest_sha256(parts, lens, 2, out);
}

bool ledger_lot_key(const MDB_val *k)
{
    return memchr(k->mv_data, 0, k->mv_size) != NULL; /* account names hold no NUL */
}

int64_t ledger_entry_from_breakage(const journal_entry_t *e)
{
    int64_t out = 0;
    for (size_t i = 0; i < e->n_postings; i++)
        if (strcmp(e->postings[i]->account, ACCOUNT_BREAKAGE) == 0 && e->postings[i]->delta < 0)
            out -= e->postings[i]->delta;
    assert(out >= 0);
    return out;
}

void ledger_account_member(char *buf, size_t size, const char *member_id)
{
    snprintf(buf, size, MEMBER_PREFIX "%s", member_id);
}

/* ---- write batches ----------------------------------------------------------------- */

int ledger_batch_begin(ledger_t *self)
{
    if (self->failed)
        return CL_ERR_STICKY;
    if (self->mode != STORE_READ_WRITE || self->batch != NULL)
        return CL_ERR_INVALID;
    int rc = mdb_txn_begin(self->env, NULL, 0, &self->batch);
    if (rc != MDB_SUCCESS) {
        self->batch = NULL;
        self->failed = true;
        log_error("ledger write transaction refused: %s", mdb_strerror(rc));
        return store_err(rc);
    }
    self->batch_seq = self->seq;
    memcpy(self->batch_head, self->head, WIRE_HASH_BYTES);
    self->batch_changes_access = false;
    self->outstanding_loaded = false;
    self->outstanding_dirty = false;
    rc = settle_batch_load(self, self->batch);
    if (rc != CL_OK) {
        ledger_batch_abort(self);
        self->failed = rc != CL_ERR_MAP_FULL;
        log_error("ledger settlement state unreadable: %s", cl_strerror(rc));
        return rc;
    }
    assert(self->batch != NULL && !self->failed);
    return CL_OK;
}

void ledger_batch_abort(ledger_t *self)
{
    if (self->batch != NULL)
        mdb_txn_abort(self->batch);
    self->batch = NULL;
    self->outstanding_loaded = false;
    self->outstanding_dirty = false;
}

int ledger_batch_commit(ledger_t *self)
{
    if (self->batch == NULL)
        return CL_ERR_INVALID;
    assert(self->batch_seq >= self->seq); /* a batch only appends */
    int rc = settle_batch_flush(self);
    if (rc != CL_OK) {
        ledger_batch_abort(self);
        if (rc != CL_ERR_MAP_FULL)
            self->failed = true;
        log_error("ledger commit failed writing settlement state: %s", cl_strerror(rc));
        return rc;
    }
    rc = mdb_txn_commit(self->batch); /* fsyncs: the env has no NOSYNC flags */
    self->batch = NULL;
    if (rc != MDB_SUCCESS) {
        if (rc != MDB_MAP_FULL)
            self->failed = true;
        log_error("ledger commit failed: %s", mdb_strerror(rc));
        return store_err(rc);
    }
    self->seq = self->batch_seq;
    memcpy(self->head, self->batch_head, WIRE_HASH_BYTES);
    if (self->batch_changes_access)
        atomic_fetch_add_explicit(&self->access_generation, 1, memory_order_release);
    if (self->on_commit != NULL)
        self->on_commit(self->seq, self->on_commit_ctx); /* never blocks: see the hook */
    assert(self->batch == NULL);
    return CL_OK;
}

uint64_t ledger_access_generation(ledger_t *self)
{
    return atomic_load_explicit(&self->access_generation, memory_order_acquire);
}

int ledger_grow(ledger_t *self)
{
    if (self->batch != NULL || self->mode != STORE_READ_WRITE)
        return CL_ERR_INVALID;
    /* No read transaction of this process may be active while the map is resized.
     * store_env_grow clears stale reader slots first. */
    if (pthread_rwlock_wrlock(&self->map_lock) != 0)
        return CL_ERR_INVALID;
    int rc = store_env_grow(self->env);
    pthread_rwlock_unlock(&self->map_lock);
    /* A failed remap leaves the environment unusable; reaching the size limit does not. */
    if (rc != CL_OK && rc != CL_ERR_MAP_FULL)
        self->failed = true;
    return rc;
}

/* ---- replies ----------------------------------------------------------------------- */

static int reply_pack(authorization_t *auth, uint8_t **reply_out, size_t *len_out)
{
    *reply_out = wire_pack_auth(auth, len_out);
    return *reply_out == NULL ? CL_ERR_NOMEM : CL_OK;
}

static void auth_code_of(const uint8_t hash[WIRE_HASH_BYTES], char out[AUTH_CODE_LEN + 1])
{
    snprintf(out, AUTH_CODE_LEN + 1, "%02X%02X%02X", hash[0], hash[1], hash[2]);
}

static void reply_from_decision(const ledger_t *self, authorization_t *auth, const envelope_t *env,
                                const uint8_t *hash, decision_t *d, uint64_t seq, char *auth_code)
{
    /* An approval of a write has its journal entry; a decline has none. */
    assert((seq > 0) == ((d->code == RC_APPROVED || d->code == RC_PARTIAL) && auth_code[0] != 0));
    wire_auth_decline(auth, env, d->code, d->text);
    wire_auth_echo(auth, env, hash);
    if (d->locale != RECEIPT_EN)
        auth->locale = (char *)receipt_locale_code(d->locale);
    auth->member_id = d->member_id;
    auth->points = d->points;
    auth->balance = d->balance;
    auth->seq = seq;
    auth->auth_code = auth_code;
    auth->available = d->available;
    auth->pending_points = d->pending;
    if (d->kind == COALITION__ENTRY_KIND__ENTRY_EARN) {
        auth->tier = d->tier;
        auth->base_points = d->base_points;
        auth->bonus_points = d->bonus_total;
    }
    if (seq > 0) {
        auth->window_id = self->batch_window_id;
        auth->settle_minor = d->settle.settle_minor;
        auth->fee_minor = d->settle.fee_minor;
    }
}

/* Whether the approval stored under `key` was voided or fully refunded since. */
static int reversed_since(ledger_t *self, MDB_txn *txn, const uint8_t *key, size_t key_len,
                          bool *out)
{
    Coalition__ReversalRecord *rev = NULL;
    *out = false;
    int rc = ledger_get_record(txn, self->db_reversals, key, key_len,
                               &coalition__reversal_record__descriptor, (ProtobufCMessage **)&rev);
    if (rc == CL_ERR_NOT_FOUND)
        return CL_OK;
    if (rc == CL_OK)
        *out = rev->complete;
    coalition__reversal_record__free_unpacked(rev, NULL);
    return rc;
}

/* Same key and request: the stored reply marked as a replay, and as reversed when the
 * approval was voided or fully refunded since. Different request: 94, nothing stored. */
/* A card of a repeat under the key its first request recorded: false when the number
 * differs (NULL lookup, a key no longer in the ring, or nothing recorded: no evidence). */
static bool same_card_as(const card_lookup_t *l, uint32_t key_id, const ProtobufCBinaryData *h)
{
    if (l == NULL || h->len != CARD_HASH_BYTES)
        return true;
    for (size_t i = 0; i < l->n; i++)
        if (l->key_id[i] == key_id)
            return memcmp(l->hash[i], h->data, CARD_HASH_BYTES) == 0;
    return true;
}

static bool same_cards(const ledger_cards_t *cards, const Coalition__IdemRecord *idem)
{
    return cards == NULL ||
           (same_card_as(&cards->card, idem->card_key_id, &idem->card_hash) &&
            same_card_as(&cards->new_card, idem->card_key_id, &idem->new_card_hash));
}

/* 12 for a request under a tombstone: its reversal was recorded before it arrived. */
static void reversed_ahead_text(receipt_locale_t locale, const char *txn_id, uint64_t seq,
                                char *out, size_t size)
{
    char seq_text[24];
    snprintf(seq_text, sizeof seq_text, "%llu", (unsigned long long)seq);
    const char *a[] = {txn_id, seq_text};
    rules_decline_text(locale, RC_INVALID_TRANSACTION, MSG_R_REVERSED_BEFORE, a, 2, out, size);
}

static int reply_to_repeat(ledger_t *self, MDB_txn *txn, const envelope_t *env,
                           const ledger_cards_t *cards, const uint8_t hash[WIRE_HASH_BYTES],
                           const Coalition__IdemRecord *idem, uint8_t **reply_out, size_t *len_out)
{
    char text[RECEIPT_TEXT_BYTES_MAX];
    receipt_locale_t locale = RECEIPT_EN;
    int rc = CL_OK;
    if (idem->request_hash.len != WIRE_HASH_BYTES ||
        memcmp(idem->request_hash.data, hash, WIRE_HASH_BYTES) != 0 || !same_cards(cards, idem)) {
        /* A new answer (nothing stored): in the locale of the contract in force now. */
        rc = rules_locale_of(self, txn, env->partner_id, clock_wall_ms(), &locale);
        if (rc != CL_OK)
            return rc;
        /* Under a tombstone any other request is still the one reversed ahead: 12. */
        int code = idem->tombstone ? RC_INVALID_TRANSACTION : RC_DUPLICATE_KEY;
        const char *txn_id = env->txn_id;
        if (idem->tombstone)
            reversed_ahead_text(locale, txn_id, idem->tombstone_seq, text, sizeof text);
        else
            rules_decline_text(locale, code, MSG_R_DUPLICATE, &txn_id, 1, text, sizeof text);
        authorization_t auth;
        wire_auth_decline(&auth, env, code, text);
        wire_auth_echo(&auth, env, hash);
        if (locale != RECEIPT_EN)
            auth.locale = (char *)receipt_locale_code(locale);
        return reply_pack(&auth, reply_out, len_out);
    }
    authorization_t *orig = wire_auth_decode(idem->reply.data, idem->reply.len);
    if (orig == NULL)
        return CL_ERR_CORRUPT;
    orig->replay = true;
    char *orig_text = orig->text;
    if (idem->seq != 0) {
        uint8_t key[TXN_KEY_BYTES_MAX];
        size_t key_len = ledger_txn_key(key, env->partner_id, env->site_id, env->txn_id);
        bool reversed = false;
        rc = reversed_since(self, txn, key, key_len, &reversed);
        orig->reversed = reversed;
    }
    /* The stored text's language (the locale its answer names), not today's contract's:
     * the prefix and the text it quotes read as one. */
    if (rc == CL_OK && orig->reversed && receipt_locale_parse(orig->locale, &locale) != CL_OK)
        rc = CL_ERR_CORRUPT; /* the rules never stored an answer in a locale we lack */
    if (rc == CL_OK && orig->reversed) {
        assert(locale >= RECEIPT_EN && locale < RECEIPT_LOCALES);
        const char *a[] = {orig_text};
        receipt_render(locale, MSG_REVERSED_SINCE, a, 1, text, sizeof text);
        orig->text = text;
    }
    if (rc == CL_OK)
        rc = reply_pack(orig, reply_out, len_out);
    orig->text = orig_text;
    wire_auth_free(orig);
    return rc;
}

/* ---- apply ------------------------------------------------------------------------- */

/* `tombstone_seq` != 0 keeps the tombstone a reversal left under this key. */
static int put_idem(ledger_t *self, MDB_txn *txn, const envelope_t *env,
                    const ledger_cards_t *cards, const uint8_t hash[WIRE_HASH_BYTES], uint64_t seq,
                    uint64_t tombstone_seq, const uint8_t *reply, size_t reply_len)
{
    assert(seq == 0 || tombstone_seq == 0); /* a tombstoned key is never approved */
    Coalition__IdemRecord rec = COALITION__IDEM_RECORD__INIT;
    if (cards != NULL && cards->card.n > 0) { /* the current key is first in a lookup */
        rec.card_key_id = cards->card.key_id[0];
        rec.card_hash.data = (uint8_t *)cards->card.hash[0];
        rec.card_hash.len = CARD_HASH_BYTES;
        if (cards->new_card.n > 0) {
            assert(cards->new_card.key_id[0] == rec.card_key_id); /* one ring */
            rec.new_card_hash.data = (uint8_t *)cards->new_card.hash[0];
            rec.new_card_hash.len = CARD_HASH_BYTES;
        }
    }
    rec.request_hash.data = (uint8_t *)hash;
    rec.request_hash.len = WIRE_HASH_BYTES;
    rec.seq = seq;
    rec.reply.data = (uint8_t *)reply;
    rec.reply.len = reply_len;
    rec.tombstone = tombstone_seq != 0;
    rec.tombstone_seq = tombstone_seq;
    uint8_t key[TXN_KEY_BYTES_MAX];
    size_t key_len = ledger_txn_key(key, env->partner_id, env->site_id, env->txn_id);
    if (key_len == 0)
        return CL_ERR_INVALID;
    return ledger_put_record(txn, self->db_idem, key, key_len, &rec.base);
}

/* Build the journal entry for an approved decision, chain it and append it. */
static int append_entry(ledger_t *self, MDB_txn *txn, const envelope_t *env,
                        const uint8_t req_hash[WIRE_HASH_BYTES], int64_t now_ms, decision_t *d,
                        uint8_t hash_out[WIRE_HASH_BYTES])
{
    journal_entry_t e = COALITION__JOURNAL_ENTRY__INIT;
    Coalition__Posting *postings[DECISION_POSTINGS_MAX];
    assert(d->posting_count <= DECISION_POSTINGS_MAX);
    e.seq = self->batch_seq + 1;
    e.time_ms = now_ms;
    e.kind = d->kind;
    e.partner_id = env->partner_id;
    e.terminal_id = env->terminal_id;
    e.txn_id = env->txn_id;
    e.member_id = d->member_id;
    e.site_id = env->site_id;
    e.original_txn_id = d->original_txn_id != NULL ? (char *)d->original_txn_id : "";
    e.original_site_id = d->original_site_id != NULL ? (char *)d->original_site_id : "";
    e.added_partner_id = d->added_partner_id != NULL ? (char *)d->added_partner_id : "";
    e.public_key = d->public_key != NULL ? (char *)d->public_key : "";
    e.participant = d->participant != NULL ? (char *)d->participant : "";
    e.key_role = d->key_role;
    e.limits = d->has_limits ? &d->limits : NULL;
    e.amount_minor = d->amount_minor;
    e.currency = d->currency;
    e.points = d->points;
    e.earn_rate_milli = d->earn_rate_milli;
    e.window_id = self->batch_window_id;
    e.contract_from_ms = d->settle.contract_from_ms;
    e.settle_minor = d->settle.settle_minor;
    e.fee_minor = d->settle.fee_minor;
    e.contract = d->has_contract ? &d->contract : NULL;
    e.settlement = d->has_settlement ? &d->settlement : NULL;
    e.closed_window_id = d->closed_window_id;
    e.client_time_ms = env->client_time_ms;
    if (d->has_card) {
        e.card_key_id = d->card_key_id;
        e.card_hash.data = d->card_hash;
        e.card_hash.len = CARD_HASH_BYTES;
        e.card_masked = (char *)d->card_masked;
    }
    if (d->has_new_card) {
        e.new_card_key_id = d->new_card_key_id;
        e.new_card_hash.data = d->new_card_hash;
        e.new_card_hash.len = CARD_HASH_BYTES;
        e.new_card_masked = (char *)d->new_card_masked;
    }
    e.unclaimed_period_seconds = d->unclaimed_period_seconds;
    e.bank_id = d->bank_id != NULL ? (char *)d->bank_id : "";
    e.bank_ref = d->bank_ref != NULL ? (char *)d->bank_ref : "";
    assert(e.window_id != 0); /* settle_roll opened one before anything is recorded */
    Coalition__PairAmount shares[SETTLE_PARTNERS_MAX], *share_ptrs[SETTLE_PARTNERS_MAX];
    for (size_t i = 0; i < d->settle.n_shares; i++) {
        coalition__pair_amount__init(&shares[i]);
        shares[i].partner_id = d->settle.shares[i].partner_id;
        shares[i].points = d->settle.shares[i].points;
        shares[i].minor = d->settle.shares[i].minor;
        share_ptrs[i] = &shares[i];
    }
    e.issuer_shares = share_ptrs;
    e.n_issuer_shares = d->settle.n_shares;
    Coalition__LotUse uses[LOTS_PER_ENTRY_MAX], *use_ptrs[LOTS_PER_ENTRY_MAX];
    assert(d->n_lots <= LOTS_PER_ENTRY_MAX);
    for (size_t i = 0; i < d->n_lots; i++) {
        const lot_t *l = &d->lots[i];
        coalition__lot_use__init(&uses[i]);
        uses[i].seq = l->seq;
        uses[i].part = l->part;
        uses[i].points = l->points;
        uses[i].expiry_ms = l->expiry_ms;
        uses[i].earn_ms = l->earn_ms;
        uses[i].issuer = (char *)l->issuer;
        uses[i].pending_until_ms = l->pending_until_ms;
        uses[i].origin_seq = l->origin_seq;
        uses[i].origin_part = l->origin_part;
        use_ptrs[i] = &uses[i];
    }
    e.lots = use_ptrs;
    e.n_lots = d->n_lots;
    e.expiry_policy = d->has_expiry_policy ? &d->expiry_policy : NULL;
    e.expire_as_of_ms = d->expire_as_of_ms;
    e.inactive = d->inactive;
    Coalition__Bonus bonuses[BONUSES_PER_EARN_MAX], *bonus_ptrs[BONUSES_PER_EARN_MAX];
    assert(d->n_bonuses <= BONUSES_PER_EARN_MAX);
    for (size_t i = 0; i < d->n_bonuses; i++) {
        coalition__bonus__init(&bonuses[i]);
        bonuses[i].rule_id = d->bonuses[i].rule_id;
        bonuses[i].kind = d->bonuses[i].kind;
        bonuses[i].points = d->bonuses[i].points;
        bonus_ptrs[i] = &bonuses[i];
    }
    e.bonuses = bonus_ptrs;
    e.n_bonuses = d->n_bonuses;
    if (d->kind == COALITION__ENTRY_KIND__ENTRY_EARN) {
        e.base_points = d->base_points;
        e.tier = d->tier;
        e.tier_multiplier_milli = d->tier_multiplier_milli;
        e.qualifying_points = d->qualifying;
    }
    e.tier_after = d->has_tier ? d->tier_after : "";
    e.tier_settings = d->has_tier_settings ? &d->tier_settings : NULL;
    e.rule = d->has_rule ? &d->rule : NULL;
    for (size_t i = 0; i < d->posting_count; i++)
        postings[i] = &d->postings[i];
    e.postings = postings;
    e.n_postings = d->posting_count;
    e.request_hash.data = (uint8_t *)req_hash;
    e.request_hash.len = WIRE_HASH_BYTES;
    e.prev_hash.data = self->batch_head;
    e.prev_hash.len = WIRE_HASH_BYTES;
    if (!ledger_entry_balances(&e)) {
        log_error("refusing unbalanced journal entry for %s/%s", env->partner_id, env->txn_id);
        return CL_ERR_CORRUPT;
    }
    int rc = ledger_entry_hash(&e, self->batch_head, hash_out);
    if (rc != CL_OK)
        return rc;
    e.hash.data = hash_out;
    e.hash.len = WIRE_HASH_BYTES;
    uint8_t key[8];
    uint8_t buf[LEDGER_ENTRY_BYTES_MAX];
    size_t len = coalition__journal_entry__get_packed_size(&e);
    if (len > sizeof buf)
        return CL_ERR_INVALID;
    coalition__journal_entry__pack(&e, buf);
    store_put_u64(key, e.seq);
    MDB_val k = {sizeof key, key};
    MDB_val v = {len, buf};
    return store_err(mdb_put(txn, self->db_journal, &k, &v, MDB_APPEND));
}

/* Approved: append the entry and the idempotency record, then commit the child txn. */
static int finish_approved(ledger_t *self, MDB_txn *child, const envelope_t *env,
                           const uint8_t hash[WIRE_HASH_BYTES], int64_t now_ms, decision_t *d,
                           uint8_t **reply_out, size_t *len_out)
{
    uint8_t entry_hash[WIRE_HASH_BYTES];
    char auth_code[AUTH_CODE_LEN + 1];
    authorization_t auth;
    uint64_t seq_before = self->batch_seq;
    assert(d->code == RC_APPROVED || d->code == RC_PARTIAL);
    assert(d->kind != COALITION__ENTRY_KIND__ENTRY_NONE);
    int rc = append_entry(self, child, env, hash, now_ms, d, entry_hash);
    if (rc != CL_OK)
        return rc;
    auth_code_of(entry_hash, auth_code);
    reply_from_decision(self, &auth, env, hash, d, self->batch_seq + 1, auth_code);
    rc = reply_pack(&auth, reply_out, len_out);
    if (rc == CL_OK)
        rc = put_idem(self, child, env, d->cards, hash, self->batch_seq + 1, 0, *reply_out,
                      *len_out);
    if (rc == CL_OK)
        rc = store_err(mdb_txn_commit(child));
    else
        mdb_txn_abort(child);
    if (rc != CL_OK) {
        free(*reply_out);
        *reply_out = NULL;
        return rc;
    }
    self->batch_seq++;
    memcpy(self->batch_head, entry_hash, WIRE_HASH_BYTES);
    assert(self->batch_seq == seq_before + 1 && *reply_out != NULL);
    (void)seq_before;
    return CL_OK;
}

/* Declined: discard the child's writes (if any), remember the decline in the batch txn. */
static int finish_declined(ledger_t *self, MDB_txn *child, const envelope_t *env,
                           const uint8_t hash[WIRE_HASH_BYTES], uint64_t tombstone_seq,
                           decision_t *d, uint8_t **reply_out, size_t *len_out)
{
    authorization_t auth;
    assert(d->code != RC_APPROVED && d->code != RC_PARTIAL); /* a decline moves nothing */
    if (child != NULL)
        mdb_txn_abort(child);
    d->points = 0;
    reply_from_decision(self, &auth, env, hash, d, 0, "");
    int rc = reply_pack(&auth, reply_out, len_out);
    /* An unknown partner has no key space to remember anything in: storing its declines
     * would let any sender grow the ledger. */
    if (rc == CL_OK && d->code != RC_UNKNOWN_PARTNER)
        rc = put_idem(self, self->batch, env, d->cards, hash, 0, tombstone_seq, *reply_out,
                      *len_out);
    if (rc != CL_OK) {
        free(*reply_out);
        *reply_out = NULL;
    }
    return rc;
}

static int fail(ledger_t *self, int rc, const envelope_t *env)
{
    if (rc != CL_ERR_MAP_FULL) {
        self->failed = true;
        log_error("ledger failed applying %s/%s: %s; refusing writes until restart",
                  env->partner_id, env->txn_id, cl_strerror(rc));
    }
    return rc;
}

/* The original of a reversal that arrived before it: decline 12, keep the tombstone. */
static int decline_reversed_ahead(ledger_t *self, const envelope_t *env,
                                  const uint8_t hash[WIRE_HASH_BYTES], uint64_t tombstone_seq,
                                  uint8_t **reply_out, size_t *len_out)
{
    if (tombstone_seq == 0 || tombstone_seq > self->batch_seq)
        return CL_ERR_CORRUPT; /* read from disk: a damaged record fails the writer */
    decision_t d;
    decision_init(&d);
    snprintf(d.member_id, sizeof d.member_id, "%s", wire_member_of(env));
    d.code = RC_INVALID_TRANSACTION;
    int rc = rules_locale_of(self, self->batch, env->partner_id, clock_wall_ms(), &d.locale);
    if (rc != CL_OK)
        return rc;
    reversed_ahead_text(d.locale, env->txn_id, tombstone_seq, d.text, sizeof d.text);
    return finish_declined(self, NULL, env, hash, tombstone_seq, &d, reply_out, len_out);
}

static int apply_request(ledger_t *self, const envelope_t *env, const ledger_cards_t *cards,
                         const uint8_t hash[WIRE_HASH_BYTES], int64_t now_ms, uint8_t **reply_out,
                         size_t *reply_len_out);

int ledger_apply(ledger_t *self, const envelope_t *env, const uint8_t hash[WIRE_HASH_BYTES],
                 int64_t now_ms, uint8_t **reply_out, size_t *reply_len_out)
{
    return apply_request(self, env, NULL, hash, now_ms, reply_out, reply_len_out);
}

static int apply_request(ledger_t *self, const envelope_t *env, const ledger_cards_t *cards,
                         const uint8_t hash[WIRE_HASH_BYTES], int64_t now_ms, uint8_t **reply_out,
                         size_t *reply_len_out)
{
    *reply_out = NULL;
    if (self->batch == NULL)
        return CL_ERR_INVALID;
    assert(env != NULL && hash != NULL && !self->failed);
    Coalition__IdemRecord *idem = NULL;
    int rc = ledger_get_idem(self, self->batch, env->partner_id, env->site_id, env->txn_id, &idem);
    if (rc == CL_OK && idem->tombstone && idem->request_hash.len == 0) {
        /* A reversal got here first: this original is declined, never applied. */
        uint64_t tombstone_seq = idem->tombstone_seq;
        coalition__idem_record__free_unpacked(idem, NULL);
        rc = decline_reversed_ahead(self, env, hash, tombstone_seq, reply_out, reply_len_out);
        return rc == CL_OK ? CL_OK : fail(self, rc, env);
    }
    if (rc == CL_OK) {
        rc = reply_to_repeat(self, self->batch, env, cards, hash, idem, reply_out, reply_len_out);
        coalition__idem_record__free_unpacked(idem, NULL);
        return rc == CL_OK ? CL_OK : fail(self, rc, env);
    }
    if (rc != CL_ERR_NOT_FOUND)
        return fail(self, rc, env);
    rc = settle_roll(self, self->batch, now_ms);
    if (rc != CL_OK)
        return fail(self, rc, env);
    MDB_txn *child = NULL;
    rc = store_err(mdb_txn_begin(self->env, self->batch, 0, &child));
    if (rc != CL_OK)
        return fail(self, rc, env);
    decision_t d;
    decision_init(&d);
    d.now_ms = now_ms;
    d.cards = cards;
    rc = rules_decide(self, child, env, &d);
    if (rc != CL_OK) {
        mdb_txn_abort(child);
        return fail(self, rc, env);
    }
    bool approved = d.code == RC_APPROVED || d.code == RC_PARTIAL;
    if (approved)
        rc = settle_project(self, child, &d);
    if (rc == CL_ERR_OVERFLOW) {
        rules_decline(&d, RC_EXCEEDS_LIMIT, "settlement counters would pass their limit");
        approved = false;
        rc = CL_OK;
    }
    if (rc != CL_OK) {
        mdb_txn_abort(child);
        return fail(self, rc, env);
    }
    if (approved)
        rc = finish_approved(self, child, env, hash, now_ms, &d, reply_out, reply_len_out);
    else
        rc = finish_declined(self, child, env, hash, 0, &d, reply_out, reply_len_out);
    return rc == CL_OK ? CL_OK : fail(self, rc, env);
}

int ledger_apply_own(ledger_t *self, envelope_t *env, const char *terminal, const char *txn_id,
                     int64_t now_ms, int *code_out, char *text, size_t text_size,
                     int64_t *points_out)
{
    assert(self->batch != NULL && env->body_case != COALITION__ENVELOPE__BODY__NOT_SET);
    assert(wire_id_valid(txn_id, TXN_ID_LEN_MAX) && wire_admin_body(env));
    env->version = WIRE_VERSION;
    env->partner_id = OPERATOR_PARTNER_ID;
    env->terminal_id = (char *)terminal;
    env->site_id = SETTLE_BROKER_SITE_ID;
    env->txn_id = (char *)txn_id;
    env->client_time_ms = now_ms;
    uint8_t hash[WIRE_HASH_BYTES];
    uint8_t *reply = NULL;
    size_t len = 0;
    int rc = wire_request_hash(env, hash);
    if (rc == CL_OK)
        rc = ledger_apply(self, env, hash, now_ms, &reply, &len);
    authorization_t *auth = rc == CL_OK ? wire_auth_decode(reply, len) : NULL;
    if (rc == CL_OK && auth == NULL)
        rc = CL_ERR_NOMEM;
    *code_out = auth != NULL ? (int)auth->code : RC_SYSTEM_ERROR;
    if (text != NULL && text_size > 0)
        snprintf(text, text_size, "%s", auth != NULL ? auth->text : "");
    if (points_out != NULL)
        *points_out = auth != NULL ? auth->points : 0;
    wire_auth_free(auth);
    free(reply);
    return rc;
}

/* A 57 for a sender whose key may not make this request: nothing is stored. */
static int decline_not_permitted(const envelope_t *env, const uint8_t hash[WIRE_HASH_BYTES],
                                 const char *why, uint8_t **reply_out, size_t *len_out)
{
    char text[RECEIPT_TEXT_BYTES_MAX];
    snprintf(text, sizeof text, "Declined 57: %s", why);
    authorization_t auth;
    wire_auth_decline(&auth, env, RC_NOT_PERMITTED, text);
    wire_auth_echo(&auth, env, hash);
    return reply_pack(&auth, reply_out, len_out);
}

int ledger_apply_as(ledger_t *self, const char *public_z85, const envelope_t *env,
                    const uint8_t hash[WIRE_HASH_BYTES], int64_t now_ms, uint8_t **reply_out,
                    size_t *reply_len_out)
{
    return ledger_apply_cards(self, public_z85, env, NULL, hash, now_ms, reply_out, reply_len_out);
}

int ledger_apply_cards(ledger_t *self, const char *public_z85, const envelope_t *env,
                       const ledger_cards_t *cards, const uint8_t hash[WIRE_HASH_BYTES],
                       int64_t now_ms, uint8_t **reply_out, size_t *reply_len_out)
{
    *reply_out = NULL;
    if (public_z85 == NULL)
        return apply_request(self, env, cards, hash, now_ms, reply_out, reply_len_out);
    if (self->batch == NULL)
        return CL_ERR_INVALID;
    ledger_principal_t who;
    char why[RECEIPT_TEXT_BYTES_MAX] = "this key is not recorded";
    int rc = access_lookup(self, self->batch, public_z85, &who);
    if (rc != CL_OK && rc != CL_ERR_NOT_FOUND)
        return fail(self, rc, env);
    int code = rc == CL_OK ? ledger_permits(&who, env, why, sizeof why) : RC_NOT_PERMITTED;
    if (code == RC_APPROVED)
        return apply_request(self, env, cards, hash, now_ms, reply_out, reply_len_out);
    rc = decline_not_permitted(env, hash, why, reply_out, reply_len_out);
    return rc == CL_OK ? CL_OK : fail(self, rc, env);
}

/* ---- read side --------------------------------------------------------------------- */

/* Run `fn` in the reader's read transaction (renewed, then reset), under the map lock. */
int ledger_with_reader(ledger_t *self, int (*fn)(ledger_t *, MDB_txn *, void *), void *ctx)
{
    assert(fn != NULL);
    if (pthread_rwlock_rdlock(&self->map_lock) != 0)
        return CL_ERR_INVALID;
    int rc = self->reader != NULL ? mdb_txn_renew(self->reader)
                                  : mdb_txn_begin(self->env, NULL, MDB_RDONLY, &self->reader);
    if (rc != MDB_SUCCESS) {
        pthread_rwlock_unlock(&self->map_lock);
        return store_err(rc);
    }
    rc = fn(self, self->reader, ctx);
    mdb_txn_reset(self->reader);
    pthread_rwlock_unlock(&self->map_lock);
    return rc;
}

typedef struct read_call {
    const envelope_t *env;
    const ledger_cards_t *cards;
    const uint8_t *hash;
    decision_t *d;
    uint8_t **reply_out;
    size_t *len_out;
} read_call_t;

static int inquire_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    const read_call_t *c = ctx;
    return rules_inquire(self, txn, c->env, c->d);
}

int ledger_inquire(ledger_t *self, const envelope_t *env, const uint8_t hash[WIRE_HASH_BYTES],
                   uint8_t **reply_out, size_t *reply_len_out)
{
    return ledger_inquire_cards(self, env, NULL, hash, reply_out, reply_len_out);
}

int ledger_inquire_cards(ledger_t *self, const envelope_t *env, const ledger_cards_t *cards,
                         const uint8_t hash[WIRE_HASH_BYTES], uint8_t **reply_out,
                         size_t *reply_len_out)
{
    decision_t d;
    decision_init(&d);
    d.cards = cards;
    d.now_ms = clock_wall_ms();
    read_call_t call = {env, NULL, hash, &d, reply_out, reply_len_out};
    int rc = ledger_with_reader(self, inquire_in, &call);
    if (rc != CL_OK)
        return rc;
    authorization_t auth;
    reply_from_decision(self, &auth, env, hash, &d, 0, "");
    return reply_pack(&auth, reply_out, reply_len_out);
}

typedef struct principal_call {
    const char *public_z85;
    ledger_principal_t *out;
} principal_call_t;

static int principal_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    const principal_call_t *c = ctx;
    return access_lookup(self, txn, c->public_z85, c->out);
}

int ledger_principal(ledger_t *self, const char *public_z85, ledger_principal_t *out)
{
    principal_call_t call = {public_z85, out};
    return ledger_with_reader(self, principal_in, &call);
}

static int replay_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    const read_call_t *c = ctx;
    Coalition__IdemRecord *idem = NULL;
    int rc = ledger_get_idem(self, txn, c->env->partner_id, c->env->site_id, c->env->txn_id, &idem);
    /* A tombstone no original has claimed yet is the writer's to decide. */
    if (rc == CL_OK && idem->tombstone && idem->request_hash.len == 0)
        rc = CL_ERR_NOT_FOUND;
    if (rc == CL_OK)
        rc = reply_to_repeat(self, txn, c->env, c->cards, c->hash, idem, c->reply_out, c->len_out);
    coalition__idem_record__free_unpacked(idem, NULL);
    return rc;
}

typedef struct txn_call {
    const char *partner, *site, *txn_id;
    uint64_t seq;
} txn_call_t;

static int txn_seq_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    txn_call_t *c = ctx;
    Coalition__IdemRecord *idem = NULL;
    int rc = ledger_get_idem(self, txn, c->partner, c->site, c->txn_id, &idem);
    if (rc == CL_OK)
        c->seq = idem->seq;
    coalition__idem_record__free_unpacked(idem, NULL);
    return rc;
}

int ledger_txn_seq(ledger_t *self, const char *partner, const char *site, const char *txn_id,
                   uint64_t *seq_out)
{
    *seq_out = 0;
    if (!wire_id_valid(partner, PARTNER_ID_LEN_MAX) || !wire_id_valid(site, SITE_ID_LEN_MAX) ||
        !wire_id_valid(txn_id, TXN_ID_LEN_MAX))
        return CL_ERR_INVALID;
    txn_call_t call = {partner, site, txn_id, 0};
    int rc = ledger_with_reader(self, txn_seq_in, &call);
    *seq_out = call.seq;
    return rc;
}

int ledger_replay(ledger_t *self, const envelope_t *env, const ledger_cards_t *cards,
                  const uint8_t hash[WIRE_HASH_BYTES], uint8_t **reply_out, size_t *reply_len_out)
{
    *reply_out = NULL;
    read_call_t call = {env, cards, hash, NULL, reply_out, reply_len_out};
    MDB_txn *txn = NULL; /* its own read transaction: any thread may call this */
    if (pthread_rwlock_rdlock(&self->map_lock) != 0)
        return CL_ERR_INVALID;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc == CL_OK) {
        rc = replay_in(self, txn, &call);
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&self->map_lock);
    return rc;
}

int ledger_account_balance(ledger_t *self, const char *account, int64_t *balance_out)
{
    MDB_txn *txn = NULL;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc != CL_OK)
        return rc;
    rc = ledger_get_balance(self, txn, account, balance_out);
    mdb_txn_abort(txn);
    return rc;
}

int ledger_member_balance(ledger_t *self, const char *member_id, int64_t *balance_out)
{
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, member_id);
    return ledger_account_balance(self, account, balance_out);
}

struct walk {
    ledger_t *self;
    MDB_txn *txn;
    ledger_entry_fn entry_fn;
    ledger_account_fn account_fn;
    void *ctx;
};

static int visit_entry(const MDB_val *k, const MDB_val *v, void *ctx)
{
    (void)v;
    const struct walk *w = ctx;
    journal_entry_t *e = NULL;
    if (k->mv_size != 8)
        return CL_ERR_CORRUPT;
    int rc = ledger_get_entry(w->self, w->txn, store_get_u64(k->mv_data), &e);
    if (rc == CL_OK)
        rc = w->entry_fn(e, w->ctx);
    coalition__journal_entry__free_unpacked(e, NULL);
    return rc;
}

static int visit_account(const MDB_val *k, const MDB_val *v, void *ctx)
{
    const struct walk *w = ctx;
    char name[ACCOUNT_NAME_BYTES_MAX];
    if (ledger_lot_key(k))
        return CL_OK; /* a member's lots and their summary, beside its balance */
    if (v->mv_size != 8 || k->mv_size >= sizeof name)
        return CL_ERR_CORRUPT;
    memcpy(name, k->mv_data, k->mv_size);
    name[k->mv_size] = '\0';
    return w->account_fn(name, (int64_t)store_get_u64(v->mv_data), w->ctx);
}

int ledger_walk_journal(ledger_t *self, MDB_txn *txn, uint64_t from_seq, ledger_entry_fn fn,
                        void *ctx)
{
    struct walk w = {self, txn, fn, NULL, ctx};
    uint8_t key[8];
    store_put_u64(key, from_seq);
    MDB_val from = {sizeof key, key};
    return store_walk(txn, self->db_journal, &from, visit_entry, &w);
}

int ledger_walk_accounts(ledger_t *self, MDB_txn *txn, ledger_account_fn fn, void *ctx)
{
    struct walk w = {self, txn, NULL, fn, ctx};
    return store_walk(txn, self->db_accounts, NULL, visit_account, &w);
}

int ledger_journal_foreach(ledger_t *self, uint64_t from_seq, ledger_entry_fn fn, void *ctx)
{
    MDB_txn *txn = NULL;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc == CL_OK) {
        rc = ledger_walk_journal(self, txn, from_seq, fn, ctx);
        mdb_txn_abort(txn);
    }
    return rc;
}

int ledger_accounts_foreach(ledger_t *self, ledger_account_fn fn, void *ctx)
{
    MDB_txn *txn = NULL;
    int rc = store_err(mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn));
    if (rc == CL_OK) {
        rc = ledger_walk_accounts(self, txn, fn, ctx);
        mdb_txn_abort(txn);
    }
    return rc;
}

/* ---- bounded reads and snapshots for reports beside a running broker --------------- */

int ledger_snapshot(ledger_t *self, const char *dir)
{
    /* Read-locked so that a writer thread in this process does not remap during the copy. */
    if (pthread_rwlock_rdlock(&self->map_lock) != 0)
        return CL_ERR_INVALID;
    int rc = store_env_copy_compact(self->env, dir);
    pthread_rwlock_unlock(&self->map_lock);
    return rc;
}

struct slice {
    ledger_t *self;
    MDB_txn *txn;
    journal_entry_t **entries;
    ledger_account_row_t *rows;
    size_t max, count;
};

static int take_entry(const MDB_val *k, const MDB_val *v, void *ctx)
{
    (void)v;
    struct slice *s = ctx;
    assert(s->count < s->max);
    if (k->mv_size != 8)
        return CL_ERR_CORRUPT;
    int rc = ledger_get_entry(s->self, s->txn, store_get_u64(k->mv_data), &s->entries[s->count]);
    if (rc != CL_OK)
        return rc;
    s->count++;
    return s->count == s->max ? STORE_WALK_STOP : CL_OK;
}

static int take_account(const MDB_val *k, const MDB_val *v, void *ctx)
{
    struct slice *s = ctx;
    assert(s->count < s->max);
    ledger_account_row_t *row = &s->rows[s->count];
    if (ledger_lot_key(k))
        return CL_OK; /* a member's lots and their summary, beside its balance */
    if (v->mv_size != 8 || k->mv_size >= sizeof row->account)
        return CL_ERR_CORRUPT;
    memcpy(row->account, k->mv_data, k->mv_size);
    row->account[k->mv_size] = '\0';
    row->balance = (int64_t)store_get_u64(v->mv_data);
    s->count++;
    return s->count == s->max ? STORE_WALK_STOP : CL_OK;
}

/* One read transaction, ended before the caller sees any record. */
static int read_slice(struct slice *s, MDB_dbi dbi, const MDB_val *from, store_visit_fn fn)
{
    assert(s->max >= 1 && s->max <= LEDGER_SLICE_RECORDS_MAX);
    int rc = store_read_begin(s->self->env, &s->txn);
    if (rc != CL_OK)
        return rc;
    rc = store_walk(s->txn, dbi, from, fn, s);
    mdb_txn_abort(s->txn);
    s->txn = NULL;
    assert(s->count <= s->max);
    return rc;
}

int ledger_journal_slice(ledger_t *self, uint64_t from_seq, journal_entry_t **entries, size_t max,
                         size_t *count_out)
{
    struct slice s = {self, NULL, entries, NULL, max, 0};
    uint8_t key[8];
    store_put_u64(key, from_seq);
    MDB_val from = {sizeof key, key};
    int rc = read_slice(&s, self->db_journal, &from, take_entry);
    if (rc != CL_OK) {
        ledger_journal_slice_free(entries, s.count);
        s.count = 0;
    }
    *count_out = s.count;
    return rc;
}

void ledger_journal_slice_free(journal_entry_t **entries, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        coalition__journal_entry__free_unpacked(entries[i], NULL);
        entries[i] = NULL;
    }
}

int ledger_accounts_slice(ledger_t *self, const char *after, ledger_account_row_t *rows, size_t max,
                          size_t *count_out)
{
    struct slice s = {self, NULL, NULL, rows, max, 0};
    /* The least key above `after` is `after` followed by one zero byte. */
    uint8_t key[ACCOUNT_NAME_BYTES_MAX + 1];
    size_t len = after != NULL ? strlen(after) : 0;
    if (len >= ACCOUNT_NAME_BYTES_MAX)
        return CL_ERR_INVALID;
    memcpy(key, after != NULL ? after : "", len);
    key[len] = 0;
    MDB_val from = {len + 1, key};
    int rc = read_slice(&s, self->db_accounts, len > 0 ? &from : NULL, take_account);
    *count_out = rc == CL_OK ? s.count : 0;
    return rc;
}

const char *ledger_entry_kind_name(int kind)
{
    switch (kind) {
    case COALITION__ENTRY_KIND__ENTRY_EARN: return "earn";
    case COALITION__ENTRY_KIND__ENTRY_BURN: return "burn";
    case COALITION__ENTRY_KIND__ENTRY_REFUND_EARN: return "refund-earn";
    case COALITION__ENTRY_KIND__ENTRY_REFUND_BURN: return "refund-burn";
    case COALITION__ENTRY_KIND__ENTRY_VOID_EARN: return "void-earn";
    case COALITION__ENTRY_KIND__ENTRY_VOID_BURN: return "void-burn";
    case COALITION__ENTRY_KIND__ENTRY_ENROLL: return "enroll";
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_ADD: return "partner-add";
    case COALITION__ENTRY_KIND__ENTRY_REVERSAL_AHEAD: return "reversal-ahead";
    case COALITION__ENTRY_KIND__ENTRY_KEY_ADD: return "key-add";
    case COALITION__ENTRY_KIND__ENTRY_KEY_REVOKE: return "key-revoke";
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_LIMITS: return "partner-limits";
    case COALITION__ENTRY_KIND__ENTRY_CONTRACT_SET: return "contract-set";
    case COALITION__ENTRY_KIND__ENTRY_PARTNER_TOPUP: return "topup";
    case COALITION__ENTRY_KIND__ENTRY_SETTLEMENT_CONFIG: return "settlement-config";
    case COALITION__ENTRY_KIND__ENTRY_WINDOW_CLOSE: return "window-close";
    case COALITION__ENTRY_KIND__ENTRY_BANK_ADD: return "bank-add";
    case COALITION__ENTRY_KIND__ENTRY_CARD_ENROL: return "card-enrol";
    case COALITION__ENTRY_KIND__ENTRY_CARD_UNLINK: return "card-unlink";
    case COALITION__ENTRY_KIND__ENTRY_CARD_REPLACE: return "card-replace";
    case COALITION__ENTRY_KIND__ENTRY_UNCLAIMED_LAPSE: return "unclaimed-lapse";
    case COALITION__ENTRY_KIND__ENTRY_CARD_SETTINGS: return "card-settings";
    default: return "unknown";
    }
}
