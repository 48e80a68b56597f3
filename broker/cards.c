/* Card-linked banks in the ledger: banks, cards stored by keyed hash, card-linked earns
 * and burns, unclaimed points. A card never appears here by number: the front end looked
 * it up under every card key (ledger_cards_t) and cleared the number before the request
 * reached the writer. The card lifecycle (CardRecord.state) is drawn in ledger.proto; every
 * transition is one of the functions below, each in the request's own transaction:
 *
 *   (none)/LAPSED ──earn──► UNCLAIMED                   earn_into_unclaimed
 *   UNCLAIMED ──earn──► UNCLAIMED (period restarts)       restart_claim_period
 *   (none)/UNCLAIMED/UNLINKED/LAPSED ──enrol──► LINKED   enrol (claims UNCLAIMED points;
 *                                                        never a card a replacement retired)
 *   LINKED ──unlink──► UNLINKED                         unlink_row
 *   LINKED ──replace──► UNLINKED (retired), new card ──► LINKED    replace
 *   UNCLAIMED ──period over──► LAPSED (points to breakage)   rules_unclaimed_lapse
 *
 * Rules: one bank and one member per card at a time. Another bank's linked card, or a
 * card linked to another member, is declined 12 until unlinked. A request that changes
 * nothing is declined 12 "unchanged: ..." (a re-imported file changes nothing). */
#include "ledger_internal.h"

#include "digest.h"
#include "errors.h"
#include "log.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAPSES_PER_BATCH_MAX 64
#define CARD_DB_KEY_BYTES (4 + CARD_HASH_BYTES)
#define UNCLAIMED_HEX_DIGITS 32
#define BANK_MEMBER_PREFIX WIRE_BANK_MEMBER_PREFIX
#define BANK_MEMBER_HEX_DIGITS 24
#define UNCLAIMED_INDEX_KEY_BYTES (8 + MEMBER_ID_LEN_MAX)
#define BANK_REF_KEY_BYTES (PARTNER_ID_LEN_MAX + 1 + BANK_REF_LEN_MAX)
_Static_assert(sizeof WIRE_UNCLAIMED_PREFIX - 1 + UNCLAIMED_HEX_DIGITS + 1 + 20 <=
                   MEMBER_ID_LEN_MAX,
               "an unclaimed account id (prefix, hash digits, '.', a seq) is a member id");
_Static_assert(sizeof "lapse-" - 1 + UNCLAIMED_HEX_DIGITS + 1 + 20 <= TXN_ID_LEN_MAX,
               "a lapse's txn id fits");
_Static_assert(sizeof BANK_MEMBER_PREFIX - 1 + BANK_MEMBER_HEX_DIGITS <= MEMBER_ID_LEN_MAX,
               "a bank customer's new member id is a member id");
_Static_assert(UNCLAIMED_HEX_DIGITS / 2 <= CARD_HASH_BYTES, "the id uses part of the hash");

/* A card as found in the cards database, under the lookup's `which`-th key. */
typedef struct card_found {
    bool found;
    size_t which;
    uint8_t key[CARD_DB_KEY_BYTES];
    Coalition__CardRecord *rec;
} card_found_t;

static void card_db_key(const card_lookup_t *l, size_t which, uint8_t out[CARD_DB_KEY_BYTES])
{
    assert(which < l->n);
    uint32_t id = l->key_id[which];
    out[0] = (uint8_t)(id >> 24);
    out[1] = (uint8_t)(id >> 16);
    out[2] = (uint8_t)(id >> 8);
    out[3] = (uint8_t)id;
    memcpy(out + 4, l->hash[which], CARD_HASH_BYTES);
}

static void found_free(card_found_t *f)
{
    if (f->rec != NULL)
        coalition__card_record__free_unpacked(f->rec, NULL);
    f->rec = NULL;
}

/* The card under the newest key it is stored under; found false when under none. */
static int card_find(ledger_t *self, MDB_txn *txn, const card_lookup_t *l, card_found_t *f)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < l->n; i++) {
        card_db_key(l, i, f->key);
        int rc =
            ledger_get_record(txn, self->db_cards, f->key, CARD_DB_KEY_BYTES,
                              &coalition__card_record__descriptor, (ProtobufCMessage **)&f->rec);
        if (rc == CL_ERR_NOT_FOUND)
            continue;
        if (rc != CL_OK)
            return rc;
        if (f->rec->state < COALITION__CARD_STATE__CARD_UNCLAIMED ||
            f->rec->state > COALITION__CARD_STATE__CARD_LAPSED ||
            !wire_id_valid(f->rec->masked, PAN_DIGITS_MAX) ||
            !wire_id_valid(f->rec->member_id, MEMBER_ID_LEN_MAX) ||
            f->rec->unclaimed_since_ms < 0 ||
            (f->rec->replaced && f->rec->state != COALITION__CARD_STATE__CARD_UNLINKED)) {
            found_free(f);
            return CL_ERR_CORRUPT; /* read from disk: never asserted */
        }
        f->found = true;
        f->which = i;
        return CL_OK;
    }
    card_db_key(l, 0, f->key); /* a new card goes under the current key */
    return CL_OK;
}

/* Write the card where card_find found it, or under the current key when it is new: a
 * card stays under the key it was first stored under (see card.h on rotation). */
static int card_put(ledger_t *self, MDB_txn *txn, const card_found_t *f, Coalition__CardRecord *rec)
{
    rec->changed_seq = self->batch_seq + 1;
    return ledger_put_record(txn, self->db_cards, f->key, CARD_DB_KEY_BYTES, &rec->base);
}

/* The entry records the card by the key it is stored under (f->key). */
static void note_card(decision_t *d, const card_found_t *f, const char *masked, bool is_new)
{
    assert(d != NULL && f != NULL && wire_id_valid(masked, PAN_DIGITS_MAX));
    uint32_t id = (uint32_t)f->key[0] << 24 | (uint32_t)f->key[1] << 16 | (uint32_t)f->key[2] << 8 |
                  f->key[3];
    if (is_new) {
        d->has_new_card = true;
        d->new_card_key_id = id;
        memcpy(d->new_card_hash, f->key + 4, CARD_HASH_BYTES);
        d->new_card_masked = masked;
    } else {
        d->has_card = true;
        d->card_key_id = id;
        memcpy(d->card_hash, f->key + 4, CARD_HASH_BYTES);
        d->card_masked = masked;
    }
}

int cards_is_bank(ledger_t *self, MDB_txn *txn, const char *id, bool *out)
{
    MDB_val k = {strlen(id), (void *)id}, v;
    int rc = mdb_get(txn, self->db_banks, &k, &v);
    *out = rc == MDB_SUCCESS;
    return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? CL_OK : store_err(rc);
}

/* ---- unclaimed accounts ------------------------------------------------------------- */

static void unclaimed_id(const uint8_t hash[CARD_HASH_BYTES], uint64_t seq,
                         char out[MEMBER_ID_LEN_MAX + 1])
{
    int n = snprintf(out, MEMBER_ID_LEN_MAX + 1, "%s", WIRE_UNCLAIMED_PREFIX);
    for (size_t i = 0; i < UNCLAIMED_HEX_DIGITS / 2; i++)
        n += snprintf(out + n, (size_t)(MEMBER_ID_LEN_MAX + 1 - n), "%02x", hash[i]);
    snprintf(out + n, (size_t)(MEMBER_ID_LEN_MAX + 1 - n), ".%" PRIu64, seq);
    assert(wire_id_valid(out, MEMBER_ID_LEN_MAX));
}

static size_t unclaimed_index_key(int64_t since_ms, const char *member,
                                  uint8_t out[UNCLAIMED_INDEX_KEY_BYTES])
{
    size_t len = strlen(member);
    assert(since_ms >= 0 && len > 0 && len <= MEMBER_ID_LEN_MAX);
    store_put_u64(out, (uint64_t)since_ms);
    memcpy(out + 8, member, len);
    assert(8 + len <= UNCLAIMED_INDEX_KEY_BYTES);
    return 8 + len;
}

/* An earn by a card no bank has linked: it opens the card's unclaimed account. */
static int earn_into_unclaimed(ledger_t *self, MDB_txn *txn, card_found_t *f, const char *masked,
                               decision_t *d)
{
    assert(!f->found || f->rec->state == COALITION__CARD_STATE__CARD_LAPSED);
    assert(d->code == RC_APPROVED);
    char member[MEMBER_ID_LEN_MAX + 1];
    unclaimed_id(f->key + 4, self->batch_seq + 1, member);
    Coalition__CardRecord rec = COALITION__CARD_RECORD__INIT;
    rec.state = COALITION__CARD_STATE__CARD_UNCLAIMED;
    rec.member_id = member;
    rec.masked = (char *)masked;
    rec.unclaimed_since_ms = d->now_ms < 0 ? 0 : d->now_ms;
    Coalition__MemberRecord m = COALITION__MEMBER_RECORD__INIT;
    m.member_id = member;
    m.unclaimed = true;
    m.card_key.data = f->key;
    m.card_key.len = CARD_DB_KEY_BYTES;
    m.unclaimed_since_ms = rec.unclaimed_since_ms;
    int rc = rules_new_member(self, txn, &m);
    if (rc == CL_OK)
        rc = card_put(self, txn, f, &rec);
    uint8_t key[UNCLAIMED_INDEX_KEY_BYTES];
    MDB_val k = {unclaimed_index_key(rec.unclaimed_since_ms, member, key), key}, v = {0, ""};
    if (rc == CL_OK)
        rc = store_err(mdb_put(txn, self->db_unclaimed, &k, &v, 0));
    snprintf(d->member_id, sizeof d->member_id, "%s", member);
    return rc;
}

/* Another earn into an unclaimed account: its claim period starts again from this one, so
 * no earn lapses sooner than the period after it was told "unclaimed". */
static int restart_claim_period(ledger_t *self, MDB_txn *txn, card_found_t *f, int64_t now_ms)
{
    assert(f->found && f->rec->state == COALITION__CARD_STATE__CARD_UNCLAIMED);
    const char *member = f->rec->member_id;
    int64_t since = now_ms < 0 ? 0 : now_ms;
    if (since <= f->rec->unclaimed_since_ms)
        return CL_OK; /* the writer's clock went back: keep the later start */
    uint8_t key[UNCLAIMED_INDEX_KEY_BYTES];
    MDB_val k = {unclaimed_index_key(f->rec->unclaimed_since_ms, member, key), key};
    int rc = store_err(mdb_del(txn, self->db_unclaimed, &k, NULL));
    Coalition__MemberRecord *m = NULL;
    if (rc == CL_OK)
        rc = ledger_get_record(txn, self->db_members, member, strlen(member),
                               &coalition__member_record__descriptor, (ProtobufCMessage **)&m);
    if (rc == CL_ERR_NOT_FOUND)
        rc = CL_ERR_CORRUPT;
    if (rc == CL_OK) {
        m->unclaimed_since_ms = since;
        rc = ledger_put_record(txn, self->db_members, member, strlen(member), &m->base);
    }
    if (m != NULL)
        coalition__member_record__free_unpacked(m, NULL);
    f->rec->unclaimed_since_ms = since;
    MDB_val nk = {unclaimed_index_key(since, member, key), key}, v = {0, ""};
    if (rc == CL_OK)
        rc = store_err(mdb_put(txn, self->db_unclaimed, &nk, &v, 0));
    return rc == CL_OK ? card_put(self, txn, f, f->rec) : rc;
}

int cards_resolve(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    bool earn = env->body_case == COALITION__ENVELOPE__BODY_EARN;
    const Coalition__Card *card = earn ? env->earn->card : env->burn->card;
    assert(card != NULL && (earn || env->body_case == COALITION__ENVELOPE__BODY_BURN));
    if (d->cards == NULL || d->cards->card.n == 0) {
        rules_decline(d, RC_INVALID_TRANSACTION,
                      "card %s: number not received (sent again after a restart?); not applied",
                      card->masked);
        return CL_OK;
    }
    card_found_t f;
    int rc = card_find(self, txn, &d->cards->card, &f);
    if (rc != CL_OK)
        return rc;
    note_card(d, &f, card->masked, false);
    int state = f.found ? (int)f.rec->state : COALITION__CARD_STATE__CARD_NONE;
    bool linked = state == COALITION__CARD_STATE__CARD_LINKED;
    bool unclaimed = earn && state == COALITION__CARD_STATE__CARD_UNCLAIMED;
    if (linked || unclaimed)
        snprintf(d->member_id, sizeof d->member_id, "%s", f.rec->member_id);
    if (unclaimed)
        rc = restart_claim_period(self, txn, &f, d->now_ms);
    else if (!linked && state == COALITION__CARD_STATE__CARD_UNLINKED)
        rules_decline(d, RC_UNKNOWN_MEMBER, "card %s is unlinked from its member", card->masked);
    else if (!linked && !earn)
        rules_decline(d, RC_UNKNOWN_MEMBER, "card %s is not enrolled by a bank", card->masked);
    else if (!linked)
        rc = earn_into_unclaimed(self, txn, &f, card->masked, d);
    found_free(&f);
    return rc;
}

/* ---- banks -------------------------------------------------------------------------- */

int rules_bank_add(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const char *id = env->bank_add->bank_id;
    assert(wire_id_valid(id, PARTNER_ID_LEN_MAX)); /* wire_validate checked the request */
    bool bank = false;
    int rc = cards_is_bank(self, txn, id, &bank);
    MDB_val k = {strlen(id), (void *)id}, v;
    int partner = rc == CL_OK ? mdb_get(txn, self->db_partners, &k, &v) : MDB_SUCCESS;
    if (rc != CL_OK || (partner != MDB_SUCCESS && partner != MDB_NOTFOUND))
        return rc != CL_OK ? rc : store_err(partner);
    if (bank || partner == MDB_SUCCESS) {
        rules_decline(d, RC_INVALID_TRANSACTION, "%s is already a %s", id,
                      bank ? "bank" : "partner");
        return CL_OK;
    }
    Coalition__BankRecord rec = COALITION__BANK_RECORD__INIT;
    rec.bank_id = (char *)id;
    rec.created_seq = self->batch_seq + 1;
    d->kind = COALITION__ENTRY_KIND__ENTRY_BANK_ADD;
    d->bank_id = id;
    snprintf(d->text, sizeof d->text, "Bank %s added", id);
    return ledger_put_record(txn, self->db_banks, id, strlen(id), &rec.base);
}

/* ---- enrolment ---------------------------------------------------------------------- */

/* The member a row is for: the one named, or the one the bank's customer reference maps
 * to, or a new one (BANK_MEMBER_PREFIX + hash of bank and reference). */
typedef struct holder {
    char member[MEMBER_ID_LEN_MAX + 1];
    uint8_t ref_key[BANK_REF_KEY_BYTES];
    size_t ref_key_len;
    bool mapped; /* the reference already maps to it */
    bool exists; /* the member record exists */
} holder_t;

static int holder_of(ledger_t *self, MDB_txn *txn, const char *bank,
                     const Coalition__CardEnrollRequest *r, holder_t *h, decision_t *d)
{
    memset(h, 0, sizeof *h);
    size_t bl = strlen(bank), rl = strlen(r->bank_ref);
    assert(bl <= PARTNER_ID_LEN_MAX && rl <= BANK_REF_LEN_MAX);
    memcpy(h->ref_key, bank, bl);
    memcpy(h->ref_key + bl + 1, r->bank_ref, rl);
    h->ref_key_len = bl + 1 + rl;
    MDB_val k = {h->ref_key_len, h->ref_key}, v;
    int rc = mdb_get(txn, self->db_bank_refs, &k, &v);
    if (rc == MDB_SUCCESS) {
        if (v.mv_size == 0 || v.mv_size > MEMBER_ID_LEN_MAX)
            return CL_ERR_CORRUPT;
        memcpy(h->member, v.mv_data, v.mv_size);
        if (!wire_id_valid(h->member, MEMBER_ID_LEN_MAX))
            return CL_ERR_CORRUPT; /* read from disk: checked, never asserted */
        h->mapped = true;
    } else if (rc != MDB_NOTFOUND) {
        return store_err(rc);
    } else if (r->member_id[0] != '\0') {
        snprintf(h->member, sizeof h->member, "%s", r->member_id);
    } else {
        uint8_t digest[WIRE_HASH_BYTES];
        const void *parts[] = {h->ref_key};
        rc = digest_sha256(parts, &h->ref_key_len, 1, digest);
        if (rc != CL_OK)
            return rc;
        int n = snprintf(h->member, sizeof h->member, BANK_MEMBER_PREFIX);
        for (size_t i = 0; i < BANK_MEMBER_HEX_DIGITS / 2; i++)
            n += snprintf(h->member + n, sizeof h->member - (size_t)n, "%02x", digest[i]);
    }
    if (h->mapped && r->member_id[0] != '\0' && strcmp(r->member_id, h->member) != 0) {
        rules_decline(d, RC_INVALID_TRANSACTION, "bank reference %s is member %s, not %s",
                      r->bank_ref, h->member, r->member_id);
        return CL_OK;
    }
    MDB_val mk = {strlen(h->member), h->member}, mv;
    rc = mdb_get(txn, self->db_members, &mk, &mv);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return store_err(rc);
    h->exists = rc == MDB_SUCCESS;
    if (!h->exists && r->member_id[0] != '\0')
        rules_decline(d, RC_UNKNOWN_MEMBER, "unknown member %s", r->member_id);
    snprintf(d->member_id, sizeof d->member_id, "%s", h->member);
    return CL_OK;
}

/* The approved row's member exists and its reference maps to it. */
static int holder_commit(ledger_t *self, MDB_txn *txn, const holder_t *h)
{
    assert(wire_id_valid(h->member, MEMBER_ID_LEN_MAX) && (h->mapped || h->ref_key_len > 1));
    Coalition__MemberRecord m = COALITION__MEMBER_RECORD__INIT;
    m.member_id = (char *)h->member;
    int rc = h->exists ? CL_OK : rules_new_member(self, txn, &m);
    MDB_val k = {h->ref_key_len, (void *)h->ref_key}, v = {strlen(h->member), (void *)h->member};
    if (rc == CL_OK && !h->mapped)
        rc = store_err(mdb_put(txn, self->db_bank_refs, &k, &v, 0));
    return rc;
}

/* An UNCLAIMED card's points move to `member` (at most one entry's two postings). */
static int claim(ledger_t *self, MDB_txn *txn, const Coalition__CardRecord *rec, const char *member,
                 decision_t *d, int64_t *claimed)
{
    *claimed = 0;
    assert(wire_id_valid(member, MEMBER_ID_LEN_MAX));
    if (rec == NULL || rec->state != COALITION__CARD_STATE__CARD_UNCLAIMED)
        return CL_OK;
    /* Its lots move first, as they are (their records before the member record below). */
    settle_pair_t by_issuer[SETTLE_PARTNERS_MAX];
    size_t n_issuers = 0;
    int64_t lots_total = 0;
    int rc = lots_move_all(self, txn, rec->member_id, member, by_issuer, &n_issuers, &lots_total,
                           d->now_ms);
    if (rc != CL_OK)
        return rc;
    Coalition__MemberRecord *m = NULL;
    rc = ledger_get_record(txn, self->db_members, rec->member_id, strlen(rec->member_id),
                           &coalition__member_record__descriptor, (ProtobufCMessage **)&m);
    if (rc == CL_ERR_NOT_FOUND)
        return CL_ERR_CORRUPT;
    if (rc == CL_OK && !m->unclaimed)
        rc = CL_ERR_CORRUPT;
    char from[ACCOUNT_NAME_BYTES_MAX], to[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(from, sizeof from, rec->member_id);
    ledger_account_member(to, sizeof to, member);
    if (rc == CL_OK)
        rc = ledger_get_balance(self, txn, from, claimed);
    if (rc == CL_OK && (*claimed < 0 || *claimed != lots_total))
        rc = CL_ERR_CORRUPT; /* its lots hold its balance */
    if (rc == CL_OK && *claimed > 0)
        rc = rules_move_points(self, txn, d, from, to, *claimed);
    if (rc == CL_OK) {
        m->moved_to = (char *)member;
        rc = ledger_put_record(txn, self->db_members, rec->member_id, strlen(rec->member_id),
                               &m->base);
        m->moved_to = NULL; /* not the unpacked string: not freed with it */
    }
    uint8_t key[UNCLAIMED_INDEX_KEY_BYTES];
    MDB_val k = {unclaimed_index_key(rec->unclaimed_since_ms, rec->member_id, key), key};
    if (rc == CL_OK)
        rc = store_err(mdb_del(txn, self->db_unclaimed, &k, NULL));
    if (m != NULL)
        coalition__member_record__free_unpacked(m, NULL);
    return rc;
}

/* The balance of the member after the entry (claimed points included). */
static int member_balance(ledger_t *self, MDB_txn *txn, const char *member, int64_t *out)
{
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, member);
    return ledger_get_balance(self, txn, account, out);
}

/* The member's balance after the entry and its available and pending parts. */
static int member_points(ledger_t *self, MDB_txn *txn, const char *member, decision_t *d)
{
    int rc = member_balance(self, txn, member, &d->balance);
    return rc == CL_OK
               ? lots_split(self, txn, member, d->balance, d->now_ms, &d->available, &d->pending)
               : rc;
}

/* Link `card` (found as `f`) to the holder's member for `bank`. */
static int link_card(ledger_t *self, MDB_txn *txn, card_found_t *f, const char *masked,
                     const char *bank, const char *ref, const holder_t *h, decision_t *d,
                     int64_t *claimed)
{
    int rc = holder_commit(self, txn, h);
    if (rc == CL_OK)
        rc = claim(self, txn, f->found ? f->rec : NULL, h->member, d, claimed);
    Coalition__CardRecord rec = COALITION__CARD_RECORD__INIT;
    rec.state = COALITION__CARD_STATE__CARD_LINKED;
    rec.member_id = (char *)h->member;
    rec.bank_id = (char *)bank;
    rec.bank_ref = (char *)ref;
    rec.masked = (char *)masked;
    if (rc == CL_OK)
        rc = card_put(self, txn, f, &rec);
    return rc;
}

/* 12 unless the card (found) may be linked by `bank` to `member`: `unchanged` when it is.
 * A card a replacement retired is never linked again. */
static bool card_taken(const card_found_t *f, const char *bank, const char *member,
                       const char *masked, decision_t *d)
{
    if (f->found && f->rec->state == COALITION__CARD_STATE__CARD_UNLINKED && f->rec->replaced) {
        rules_decline(d, RC_INVALID_TRANSACTION,
                      "card %s was replaced by another card; it is not enrolled again", masked);
        return true;
    }
    if (!f->found || f->rec->state != COALITION__CARD_STATE__CARD_LINKED)
        return false;
    if (strcmp(f->rec->bank_id, bank) != 0)
        rules_decline(d, RC_INVALID_TRANSACTION,
                      "card %s is enrolled by another bank; it must unlink it first", masked);
    else if (strcmp(f->rec->member_id, member) == 0)
        rules_decline(d, RC_INVALID_TRANSACTION, "unchanged: card %s is enrolled to member %s",
                      masked, member);
    else
        rules_decline(d, RC_INVALID_TRANSACTION, "card %s is linked to member %s; unlink it first",
                      masked, f->rec->member_id);
    return true;
}

static int enrol(ledger_t *self, MDB_txn *txn, const Coalition__CardEnrollRequest *r,
                 const char *bank, decision_t *d)
{
    holder_t h;
    card_found_t f = {0};
    int rc = holder_of(self, txn, bank, r, &h, d);
    if (rc == CL_OK && d->code == RC_APPROVED)
        rc = card_find(self, txn, &d->cards->card, &f);
    if (rc == CL_OK)
        note_card(d, &f, r->card->masked, false);
    int64_t claimed = 0;
    if (rc == CL_OK && d->code == RC_APPROVED &&
        !card_taken(&f, bank, h.member, r->card->masked, d))
        rc = link_card(self, txn, &f, r->card->masked, bank, r->bank_ref, &h, d, &claimed);
    found_free(&f);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    d->kind = COALITION__ENTRY_KIND__ENTRY_CARD_ENROL;
    assert(claimed >= 0 && d->posting_count == (claimed > 0 ? MOVE_POSTINGS : 0));
    d->points = claimed;
    int n = snprintf(d->text, sizeof d->text, "Card %s enrolled to member %s", r->card->masked,
                     h.member);
    if (claimed > 0)
        snprintf(d->text + n, sizeof d->text - (size_t)n, "; %" PRId64 " unclaimed points moved",
                 claimed);
    return member_points(self, txn, h.member, d);
}

/* The linked card `f` of `bank`, or a decline (`unchanged` when already unlinked). */
static bool card_of_bank(const card_found_t *f, const char *bank, const char *masked, decision_t *d)
{
    int state = f->found ? (int)f->rec->state : COALITION__CARD_STATE__CARD_NONE;
    if (state == COALITION__CARD_STATE__CARD_UNLINKED && strcmp(f->rec->bank_id, bank) == 0)
        rules_decline(d, RC_INVALID_TRANSACTION, "unchanged: card %s is already unlinked", masked);
    else if (state != COALITION__CARD_STATE__CARD_LINKED)
        rules_decline(d, RC_UNKNOWN_MEMBER, "card %s is not enrolled", masked);
    else if (strcmp(f->rec->bank_id, bank) != 0)
        rules_decline(d, RC_INVALID_TRANSACTION, "card %s is enrolled by another bank", masked);
    else
        return true;
    return false;
}

static int unlink_card(ledger_t *self, MDB_txn *txn, card_found_t *f, bool replaced)
{
    assert(f->found && f->rec->state == COALITION__CARD_STATE__CARD_LINKED && !f->rec->replaced);
    f->rec->state = COALITION__CARD_STATE__CARD_UNLINKED;
    f->rec->replaced = replaced;
    return card_put(self, txn, f, f->rec);
}

static int unlink_row(ledger_t *self, MDB_txn *txn, const Coalition__CardEnrollRequest *r,
                      const char *bank, decision_t *d)
{
    card_found_t f;
    int rc = card_find(self, txn, &d->cards->card, &f);
    if (rc == CL_OK)
        note_card(d, &f, r->card->masked, false);
    if (rc == CL_OK && card_of_bank(&f, bank, r->card->masked, d)) {
        snprintf(d->member_id, sizeof d->member_id, "%s", f.rec->member_id);
        if (r->member_id[0] != '\0' && strcmp(r->member_id, f.rec->member_id) != 0)
            rules_decline(d, RC_INVALID_TRANSACTION, "card %s is not member %s's", r->card->masked,
                          r->member_id);
        else
            rc = unlink_card(self, txn, &f, false);
    }
    found_free(&f);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    d->kind = COALITION__ENTRY_KIND__ENTRY_CARD_UNLINK;
    assert(d->posting_count == 0 && d->has_card);
    snprintf(d->text, sizeof d->text, "Card %s unlinked from member %s", r->card->masked,
             d->member_id);
    return member_points(self, txn, d->member_id, d);
}

/* The old card was retired by a replacement and the new one is the same member's, by the
 * same bank: the replacement was done before. */
static bool replaced_before(const card_found_t *old, const card_found_t *nw, const char *bank)
{
    return old->found && nw->found && old->rec->replaced &&
           old->rec->state == COALITION__CARD_STATE__CARD_UNLINKED &&
           nw->rec->state == COALITION__CARD_STATE__CARD_LINKED &&
           strcmp(nw->rec->bank_id, bank) == 0 && strcmp(old->rec->bank_id, bank) == 0 &&
           strcmp(old->rec->member_id, nw->rec->member_id) == 0;
}

static int replace(ledger_t *self, MDB_txn *txn, const Coalition__CardEnrollRequest *r,
                   const char *bank, decision_t *d)
{
    card_found_t old, nw = {0};
    int64_t claimed = 0;
    int rc = card_find(self, txn, &d->cards->card, &old);
    if (rc == CL_OK)
        rc = card_find(self, txn, &d->cards->new_card, &nw);
    if (rc != CL_OK)
        goto out;
    note_card(d, &old, r->card->masked, false);
    note_card(d, &nw, r->new_card->masked, true);
    if (replaced_before(&old, &nw, bank)) {
        rules_decline(d, RC_INVALID_TRANSACTION, "unchanged: card %s already replaced by %s",
                      r->card->masked, r->new_card->masked);
        goto out;
    }
    if (!card_of_bank(&old, bank, r->card->masked, d))
        goto out;
    holder_t h = {0};
    snprintf(h.member, sizeof h.member, "%s", old.rec->member_id);
    h.mapped = h.exists = true; /* the old card's member keeps its reference */
    snprintf(d->member_id, sizeof d->member_id, "%s", h.member);
    if ((r->member_id[0] != '\0' && strcmp(r->member_id, h.member) != 0) ||
        strcmp(r->bank_ref, old.rec->bank_ref) != 0) {
        rules_decline(d, RC_INVALID_TRANSACTION, "card %s is member %s's, reference %s",
                      r->card->masked, h.member, old.rec->bank_ref);
        goto out;
    }
    if (card_taken(&nw, bank, h.member, r->new_card->masked, d))
        goto out;
    rc = unlink_card(self, txn, &old, true);
    if (rc == CL_OK)
        rc = link_card(self, txn, &nw, r->new_card->masked, bank, old.rec->bank_ref, &h, d,
                       &claimed);
out:
    found_free(&old);
    found_free(&nw);
    if (rc != CL_OK || d->code != RC_APPROVED)
        return rc;
    d->kind = COALITION__ENTRY_KIND__ENTRY_CARD_REPLACE;
    assert(claimed >= 0 && d->has_card && d->has_new_card);
    d->points = claimed;
    snprintf(d->text, sizeof d->text, "Card %s replaced by %s for member %s", r->card->masked,
             r->new_card->masked, d->member_id);
    return member_points(self, txn, d->member_id, d);
}

int rules_card_enroll(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__CardEnrollRequest *r = env->card_enroll;
    bool from_operator = strcmp(env->partner_id, OPERATOR_PARTNER_ID) == 0;
    const char *bank = from_operator ? r->bank_id : env->partner_id;
    bool is_bank = false;
    int rc = cards_is_bank(self, txn, bank, &is_bank);
    if (rc != CL_OK)
        return rc;
    if (!is_bank) {
        rules_decline(d, from_operator ? RC_UNKNOWN_PARTNER : RC_NOT_PERMITTED,
                      "%s is not a bank; only banks enrol cards", bank);
        return CL_OK;
    }
    bool replacing = r->action == COALITION__CARD_ACTION__CARD_REPLACE;
    assert(r->card != NULL && (r->new_card != NULL) == replacing); /* wire_validate */
    if (d->cards == NULL || d->cards->card.n == 0 || (replacing && d->cards->new_card.n == 0)) {
        rules_decline(d, RC_INVALID_TRANSACTION, "card number not received; not applied");
        return CL_OK;
    }
    d->bank_id = bank;
    d->bank_ref = r->bank_ref;
    switch (r->action) {
    case COALITION__CARD_ACTION__CARD_ENROL: return enrol(self, txn, r, bank, d);
    case COALITION__CARD_ACTION__CARD_UNLINK: return unlink_row(self, txn, r, bank, d);
    default: return replace(self, txn, r, bank, d);
    }
}

/* ---- lapses ------------------------------------------------------------------------- */

static int load_unclaimed(ledger_t *self, MDB_txn *txn, const char *member,
                          Coalition__MemberRecord **m, Coalition__CardRecord **card)
{
    *card = NULL;
    int rc = ledger_get_record(txn, self->db_members, member, strlen(member),
                               &coalition__member_record__descriptor, (ProtobufCMessage **)m);
    if (rc != CL_OK)
        return rc;
    if (!(*m)->unclaimed || (*m)->card_key.len != CARD_DB_KEY_BYTES || (*m)->unclaimed_since_ms < 0)
        return CL_ERR_CORRUPT;
    rc = ledger_get_record(txn, self->db_cards, (*m)->card_key.data, CARD_DB_KEY_BYTES,
                           &coalition__card_record__descriptor, (ProtobufCMessage **)card);
    return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc;
}

static bool lapse_due(int64_t period_ms, const Coalition__MemberRecord *m,
                      const Coalition__CardRecord *c, int64_t now_ms, decision_t *d)
{
    assert(period_ms > 0);
    if (m->lapsed || m->moved_to[0] != '\0' || c->state != COALITION__CARD_STATE__CARD_UNCLAIMED ||
        strcmp(c->member_id, m->member_id) != 0) {
        rules_decline(d, RC_INVALID_TRANSACTION, "unchanged: %s was claimed or lapsed before",
                      m->member_id);
        return false;
    }
    if (now_ms - m->unclaimed_since_ms < period_ms) {
        rules_decline(d, RC_INVALID_TRANSACTION, "the claim period of %s has not ended",
                      m->member_id);
        return false;
    }
    return true;
}

int rules_unclaimed_lapse(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const char *member = env->unclaimed_lapse->unclaimed_member_id;
    Coalition__MemberRecord *m = NULL;
    Coalition__CardRecord *c = NULL;
    snprintf(d->member_id, sizeof d->member_id, "%s", member);
    int rc = load_unclaimed(self, txn, member, &m, &c);
    if (rc == CL_ERR_NOT_FOUND) {
        rules_decline(d, RC_UNKNOWN_MEMBER, "unknown unclaimed account %s", member);
        rc = CL_OK;
    }
    int64_t points = 0, period_ms = 0;
    char from[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(from, sizeof from, member);
    if (rc == CL_OK && d->code == RC_APPROVED)
        rc = cards_unclaimed_period_ms(self, txn, &period_ms);
    if (rc != CL_OK || d->code != RC_APPROVED || !lapse_due(period_ms, m, c, d->now_ms, d))
        goto out;
    rc = ledger_get_balance(self, txn, from, &points);
    int64_t lots_total = 0;
    if (rc == CL_OK) /* the lots go, each issuer's points its breakage */
        rc = lots_move_all(self, txn, member, NULL, d->settle.shares, &d->settle.n_shares,
                           &lots_total, d->now_ms);
    if (rc == CL_OK && (points < 0 || points != lots_total))
        rc = CL_ERR_CORRUPT;
    if (rc == CL_OK && points > 0)
        rc = rules_move_points(self, txn, d, from, ACCOUNT_BREAKAGE, points);
    m->lapsed = true;
    c->state = COALITION__CARD_STATE__CARD_LAPSED;
    c->changed_seq = self->batch_seq + 1;
    uint8_t key[UNCLAIMED_INDEX_KEY_BYTES];
    MDB_val k = {unclaimed_index_key(m->unclaimed_since_ms, member, key), key};
    if (rc == CL_OK)
        rc = ledger_put_record(txn, self->db_members, member, strlen(member), &m->base);
    if (rc == CL_OK)
        rc = ledger_put_record(txn, self->db_cards, m->card_key.data, CARD_DB_KEY_BYTES, &c->base);
    if (rc == CL_OK)
        rc = store_err(mdb_del(txn, self->db_unclaimed, &k, NULL));
    if (rc != CL_OK)
        goto out;
    d->kind = COALITION__ENTRY_KIND__ENTRY_UNCLAIMED_LAPSE;
    assert(points >= 0 && d->posting_count == (points > 0 ? MOVE_POSTINGS : 0));
    d->points = points;
    d->balance = 0;
    d->has_card = true;
    d->card_key_id = (uint32_t)m->card_key.data[0] << 24 | (uint32_t)m->card_key.data[1] << 16 |
                     (uint32_t)m->card_key.data[2] << 8 | m->card_key.data[3];
    memcpy(d->card_hash, m->card_key.data + 4, CARD_HASH_BYTES);
    snprintf(d->lapse_masked, sizeof d->lapse_masked, "%s", c->masked);
    d->card_masked = d->lapse_masked;
    snprintf(d->text, sizeof d->text, "%" PRId64 " unclaimed points of card %s lapsed to breakage",
             points, c->masked);
out:
    if (m != NULL)
        coalition__member_record__free_unpacked(m, NULL);
    if (c != NULL)
        coalition__card_record__free_unpacked(c, NULL);
    return rc;
}

int cards_due_lapses(ledger_t *self, MDB_txn *txn, int64_t now_ms,
                     char ids[][MEMBER_ID_LEN_MAX + 1], size_t max, size_t *count)
{
    *count = 0;
    assert(max > 0);
    int64_t period_ms = 0;
    int rc = cards_unclaimed_period_ms(self, txn, &period_ms);
    if (rc != CL_OK)
        return rc;
    MDB_cursor *cur = NULL;
    rc = mdb_cursor_open(txn, self->db_unclaimed, &cur);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && *count < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= 8 || k.mv_size > UNCLAIMED_INDEX_KEY_BYTES) {
            mdb_cursor_close(cur);
            return CL_ERR_CORRUPT;
        }
        uint64_t since = store_get_u64(k.mv_data);
        if ((int64_t)since > now_ms - period_ms)
            break; /* in time order: none after it is due */
        memcpy(ids[*count], (const uint8_t *)k.mv_data + 8, k.mv_size - 8);
        ids[*count][k.mv_size - 8] = '\0';
        if (!wire_id_valid(ids[*count], MEMBER_ID_LEN_MAX) ||
            strncmp(ids[*count], WIRE_UNCLAIMED_PREFIX, strlen(WIRE_UNCLAIMED_PREFIX)) != 0) {
            mdb_cursor_close(cur);
            return CL_ERR_CORRUPT; /* read from disk: checked, never asserted */
        }
        (*count)++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? CL_OK : store_err(rc);
}

/* ---- balance by card ---------------------------------------------------------------- */

int cards_inquire(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    const Coalition__Card *card = env->balance->card;
    assert(card != NULL && env->body_case == COALITION__ENVELOPE__BODY_BALANCE);
    bool bank = false;
    int rc = cards_is_bank(self, txn, env->partner_id, &bank);
    if (rc != CL_OK)
        return rc;
    if (d->cards == NULL || d->cards->card.n == 0) {
        rules_decline(d, RC_INVALID_TRANSACTION, "card %s: number not received", card->masked);
        return CL_OK;
    }
    card_found_t f;
    rc = card_find(self, txn, &d->cards->card, &f);
    int state = f.found ? (int)f.rec->state : COALITION__CARD_STATE__CARD_NONE;
    bool linked = state == COALITION__CARD_STATE__CARD_LINKED;
    bool unclaimed = state == COALITION__CARD_STATE__CARD_UNCLAIMED;
    if (rc != CL_OK)
        return rc;
    if (bank && !(linked && strcmp(f.rec->bank_id, env->partner_id) == 0))
        rules_decline(d, RC_NOT_PERMITTED, "card %s was not enrolled by bank %s", card->masked,
                      env->partner_id);
    else if (!linked && !unclaimed)
        rules_decline(d, RC_UNKNOWN_MEMBER, "card %s is not enrolled", card->masked);
    else
        rc = member_balance(self, txn, f.rec->member_id, &d->balance);
    if (rc == CL_OK && d->code == RC_APPROVED)
        rc = lots_split(self, txn, f.rec->member_id, d->balance, d->now_ms, &d->available,
                        &d->pending);
    if (rc == CL_OK && d->code == RC_APPROVED) {
        snprintf(d->member_id, sizeof d->member_id, "%s", f.rec->member_id);
        char pts[AMOUNT_TEXT_BYTES];
        rules_figure_text(d, d->balance, pts);
        const char *a[] = {pts, card->masked};
        if (unclaimed)
            rules_text(d, MSG_CARD_UNCLAIMED, a, 2);
        else
            rules_balance_text(d);
    }
    found_free(&f);
    return rc;
}

/* ---- the writer's lapses ------------------------------------------------------------ */

static int lapse_one(ledger_t *self, const char *member, int64_t now_ms)
{
    char txn_id[TXN_ID_LEN_MAX + 1];
    assert(strncmp(member, WIRE_UNCLAIMED_PREFIX, strlen(WIRE_UNCLAIMED_PREFIX)) == 0);
    snprintf(txn_id, sizeof txn_id, "lapse-%s", member + strlen(WIRE_UNCLAIMED_PREFIX));
    Coalition__UnclaimedLapseRequest body = COALITION__UNCLAIMED_LAPSE_REQUEST__INIT;
    body.unclaimed_member_id = (char *)member;
    envelope_t env = COALITION__ENVELOPE__INIT;
    env.body_case = COALITION__ENVELOPE__BODY_UNCLAIMED_LAPSE;
    env.unclaimed_lapse = &body;
    char text[RECEIPT_TEXT_BYTES_MAX];
    int code = RC_APPROVED;
    int rc =
        ledger_apply_own(self, &env, "unclaimed", txn_id, now_ms, &code, text, sizeof text, NULL);
    if (rc == CL_OK && code != RC_APPROVED)
        log_warn("unclaimed points: %s", text);
    return rc;
}

int ledger_lapse_unclaimed(ledger_t *self, int64_t now_ms, size_t max, size_t *lapsed_out)
{
    assert(self != NULL && lapsed_out != NULL && max > 0);
    *lapsed_out = 0;
    char ids[LAPSES_PER_BATCH_MAX][MEMBER_ID_LEN_MAX + 1];
    if (max > LAPSES_PER_BATCH_MAX)
        max = LAPSES_PER_BATCH_MAX;
    int rc = ledger_batch_begin(self);
    if (rc != CL_OK)
        return rc;
    size_t n = 0;
    rc = cards_due_lapses(self, self->batch, now_ms, ids, max, &n);
    assert(rc != CL_OK || n <= max);
    for (size_t i = 0; i < n && rc == CL_OK; i++)
        rc = lapse_one(self, ids[i], now_ms);
    if (n == 0 || rc != CL_OK) {
        ledger_batch_abort(self); /* nothing written when nothing was due */
        return rc;
    }
    rc = ledger_batch_commit(self);
    if (rc == CL_OK)
        *lapsed_out = n;
    return rc;
}

/* ---- card settings ------------------------------------------------------------------ */

static int get_settings(ledger_t *self, MDB_txn *txn, int64_t *seconds_out)
{
    Coalition__CardSettings *cs = NULL;
    int rc = ledger_get_record(txn, self->db_meta, CARD_SETTINGS_KEY, strlen(CARD_SETTINGS_KEY),
                               &coalition__card_settings__descriptor, (ProtobufCMessage **)&cs);
    *seconds_out = UNCLAIMED_PERIOD_SECONDS_DEFAULT;
    if (rc == CL_ERR_NOT_FOUND)
        return CL_OK;
    if (rc != CL_OK)
        return rc;
    int64_t s = cs->unclaimed_period_seconds;
    coalition__card_settings__free_unpacked(cs, NULL);
    if (s <= 0 || s > UNCLAIMED_PERIOD_SECONDS_MAX)
        return CL_ERR_CORRUPT; /* read from disk */
    *seconds_out = s;
    return CL_OK;
}

int cards_unclaimed_period_ms(ledger_t *self, MDB_txn *txn, int64_t *ms_out)
{
    int64_t s = 0;
    int rc = get_settings(self, txn, &s);
    _Static_assert(UNCLAIMED_PERIOD_SECONDS_MAX <= INT64_MAX / 1000, "the period in ms fits");
    *ms_out = s * 1000;
    assert(rc != CL_OK || *ms_out > 0);
    return rc;
}

int rules_card_settings(ledger_t *self, MDB_txn *txn, const envelope_t *env, decision_t *d)
{
    int64_t s = env->card_settings->unclaimed_period_seconds;
    assert(s > 0 && s <= UNCLAIMED_PERIOD_SECONDS_MAX); /* wire_validate checked it */
    Coalition__CardSettings cs = COALITION__CARD_SETTINGS__INIT;
    cs.unclaimed_period_seconds = s;
    cs.set_seq = self->batch_seq + 1;
    d->kind = COALITION__ENTRY_KIND__ENTRY_CARD_SETTINGS;
    d->unclaimed_period_seconds = s;
    snprintf(d->text, sizeof d->text,
             "Card settings: unclaimed points lapse %" PRId64 " s after their latest earn", s);
    return ledger_put_record(txn, self->db_meta, CARD_SETTINGS_KEY, strlen(CARD_SETTINGS_KEY),
                             &cs.base);
}

typedef struct period_call {
    int64_t seconds;
} period_call_t;

static int period_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    return get_settings(self, txn, &((period_call_t *)ctx)->seconds);
}

int ledger_unclaimed_period(ledger_t *self, int64_t *seconds_out)
{
    period_call_t call = {0};
    int rc = ledger_with_reader(self, period_in, &call);
    *seconds_out = call.seconds;
    return rc;
}

typedef struct under_key_call {
    uint32_t key_id;
    uint64_t count;
} under_key_call_t;

static int under_key_in(ledger_t *self, MDB_txn *txn, void *ctx)
{
    under_key_call_t *c = ctx;
    uint8_t prefix[4] = {(uint8_t)(c->key_id >> 24), (uint8_t)(c->key_id >> 16),
                         (uint8_t)(c->key_id >> 8), (uint8_t)c->key_id};
    MDB_cursor *cur = NULL;
    int rc = mdb_cursor_open(txn, self->db_cards, &cur);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    MDB_val k = {sizeof prefix, prefix}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == MDB_SUCCESS && k.mv_size == CARD_DB_KEY_BYTES && memcmp(k.mv_data, prefix, 4) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        c->count++;
    mdb_cursor_close(cur);
    return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? CL_OK : store_err(rc);
}

int ledger_cards_under_key(ledger_t *self, uint32_t key_id, uint64_t *count_out)
{
    under_key_call_t call = {key_id, 0};
    int rc = ledger_with_reader(self, under_key_in, &call);
    *count_out = call.count;
    return rc;
}
