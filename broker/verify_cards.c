/* The audit of banks and cards: each card entry re-derived from the entries before it
 * (the card lifecycle of cards.c), the points unclaimed accounts received, passed on to
 * the member that claimed them or lapsed to breakage, and the banks, cards, bank
 * references and member records compared with what the journal says. */
#include "verify_internal.h"

#include "errors.h"

#include <stdio.h>
#include <string.h>

#define SEQ(e) ((unsigned long long)(e)->seq)
#define CARD_KEY_LEN (4 + CARD_HASH_BYTES)

typedef struct {
    vkey_t key; /* u32be key id || hash, as in the cards database */
    int state;  /* CardState */
    char member[MEMBER_ID_LEN_MAX + 1];
    char bank[PARTNER_ID_LEN_MAX + 1];
    bool replaced; /* retired by a replacement */
    bool seen;
} vcard_t;

typedef struct {
    vkey_t key; /* the unclaimed member id */
    char moved_to[MEMBER_ID_LEN_MAX + 1];
    int64_t last_earn_ms; /* its claim period's start: the latest earn's writer time */
    bool lapsed, seen;
    bool indexed; /* its key in the unclaimed index was found */
} vunclaimed_t;

typedef struct {
    vkey_t key; /* bank id, or bank "\0" reference */
    char member[MEMBER_ID_LEN_MAX + 1];
    uint64_t seq;
    bool seen;
} vbank_t;

void verify_cards_init(verify_t *v)
{
    v->card_period_s = UNCLAIMED_PERIOD_SECONDS_DEFAULT;
    v->card_settings_seq = 0;
    vmap_init(&v->cards, sizeof(vcard_t));
    vmap_init(&v->unclaimed, sizeof(vunclaimed_t));
    vmap_init(&v->banks, sizeof(vbank_t));
}

void verify_cards_free(verify_t *v)
{
    vmap_free(&v->cards);
    vmap_free(&v->unclaimed);
    vmap_free(&v->banks);
}

static bool unclaimed_member(const char *member)
{
    return strncmp(member, WIRE_UNCLAIMED_PREFIX, strlen(WIRE_UNCLAIMED_PREFIX)) == 0;
}

/* The entry's card (or new card), created in the map as CARD_NONE when first seen. */
static int card_of(verify_t *v, const journal_entry_t *e, bool new_card, vcard_t **out)
{
    const ProtobufCBinaryData *h = new_card ? &e->new_card_hash : &e->card_hash;
    uint32_t id = new_card ? e->new_card_key_id : e->card_key_id;
    const char *masked = new_card ? e->new_card_masked : e->card_masked;
    if (h->len != CARD_HASH_BYTES || id == 0 || !wire_id_valid(masked, PAN_DIGITS_MAX))
        return verify_violation(v, "entry %llu (%s) names no valid card", SEQ(e),
                                ledger_entry_kind_name(e->kind));
    uint8_t key[CARD_KEY_LEN] = {(uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8),
                                 (uint8_t)id};
    memcpy(key + 4, h->data, CARD_HASH_BYTES);
    *out = vmap_find(&v->cards, key, CARD_KEY_LEN);
    return *out != NULL ? CL_OK : vmap_insert(&v->cards, key, CARD_KEY_LEN, (void **)out);
}

static int open_member(verify_t *v, const char *member, uint64_t seq)
{
    assert(member != NULL && seq > 0);
    char account[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(account, sizeof account, member);
    return vmap_find(&v->accounts, account, strlen(account)) != NULL
               ? CL_OK
               : vaccounts_open(v, account, seq);
}

/* Exactly what `member` holds now moves to `to` (nothing when it holds nothing). */
static int expect_all_moved(verify_t *v, const journal_entry_t *e, const char *member,
                            const char *to_account)
{
    char from[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(from, sizeof from, member);
    const vaccount_t *a = vmap_find(&v->accounts, from, strlen(from));
    if (a == NULL)
        return verify_violation(v, "entry %llu: unclaimed account %s was never opened", SEQ(e),
                                member);
    if (a->sum != (i128_t)e->points)
        return verify_violation(v, "entry %llu moves %lld of the %lld points %s holds", SEQ(e),
                                (long long)e->points, (long long)a->sum, member);
    if (e->points == 0)
        return verify_expect_no_moves(v, e);
    return verify_expect_move(v, e, from, to_account, e->points);
}

/* An earn or burn by card: the card's state before it gives the member. */
int verify_card_earn_burn(verify_t *v, const journal_entry_t *e)
{
    bool by_card = e->card_hash.len > 0;
    bool to_unclaimed = unclaimed_member(e->member_id);
    if (!by_card)
        return to_unclaimed ? verify_violation(v,
                                               "entry %llu names an unclaimed account "
                                               "without its card",
                                               SEQ(e))
                            : CL_OK;
    vcard_t *c = NULL;
    int rc = card_of(v, e, false, &c);
    if (rc != CL_OK)
        return rc;
    bool earn = e->kind == COALITION__ENTRY_KIND__ENTRY_EARN;
    if (c->state == COALITION__CARD_STATE__CARD_LINKED ||
        (earn && c->state == COALITION__CARD_STATE__CARD_UNCLAIMED)) {
        if (strcmp(c->member, e->member_id) != 0)
            return verify_violation(v, "entry %llu: card of member %s credits %s", SEQ(e),
                                    c->member, e->member_id);
        vunclaimed_t *u = c->state == COALITION__CARD_STATE__CARD_UNCLAIMED
                              ? vmap_find(&v->unclaimed, c->member, strlen(c->member))
                              : NULL;
        if (u != NULL && e->time_ms > u->last_earn_ms)
            u->last_earn_ms = e->time_ms; /* the claim period starts again */
        return CL_OK;
    }
    bool opens = earn && to_unclaimed &&
                 (c->state == COALITION__CARD_STATE__CARD_NONE ||
                  c->state == COALITION__CARD_STATE__CARD_LAPSED);
    if (!opens)
        return verify_violation(v, "entry %llu: a %s by a card in state %d", SEQ(e),
                                ledger_entry_kind_name(e->kind), c->state);
    c->state = COALITION__CARD_STATE__CARD_UNCLAIMED;
    snprintf(c->member, sizeof c->member, "%s", e->member_id);
    c->bank[0] = '\0';
    vunclaimed_t *u = NULL;
    rc = vmap_insert(&v->unclaimed, e->member_id, strlen(e->member_id), (void **)&u);
    if (rc == CL_ERR_EXISTS)
        return verify_violation(v, "entry %llu reopens unclaimed account %s", SEQ(e), e->member_id);
    if (rc == CL_OK)
        u->last_earn_ms = e->time_ms < 0 ? 0 : e->time_ms;
    return rc == CL_OK ? open_member(v, e->member_id, e->seq) : rc;
}

/* Link card `c` for the entry's bank and member, claiming what it held unclaimed. */
static int link(verify_t *v, const journal_entry_t *e, vcard_t *c)
{
    if (c->state == COALITION__CARD_STATE__CARD_LINKED || c->replaced)
        return verify_violation(v, "entry %llu links a card already linked or replaced", SEQ(e));
    int rc = open_member(v, e->member_id, e->seq);
    char to[ACCOUNT_NAME_BYTES_MAX];
    ledger_account_member(to, sizeof to, e->member_id);
    if (rc == CL_OK && c->state == COALITION__CARD_STATE__CARD_UNCLAIMED) {
        vunclaimed_t *u = vmap_find(&v->unclaimed, c->member, strlen(c->member));
        rc = u != NULL ? expect_all_moved(v, e, c->member, to) : CL_ERR_CORRUPT;
        if (rc == CL_OK)
            snprintf(u->moved_to, sizeof u->moved_to, "%s", e->member_id);
    } else if (rc == CL_OK) {
        rc = verify_expect_no_moves(v, e);
    }
    c->state = COALITION__CARD_STATE__CARD_LINKED;
    snprintf(c->member, sizeof c->member, "%s", e->member_id);
    snprintf(c->bank, sizeof c->bank, "%s", e->bank_id);
    assert(!c->replaced);
    return rc;
}

static int bank_ref(verify_t *v, const journal_entry_t *e)
{
    char key[PARTNER_ID_LEN_MAX + 1 + BANK_REF_LEN_MAX];
    size_t bl = strlen(e->bank_id), rl = strlen(e->bank_ref);
    if (bl > PARTNER_ID_LEN_MAX || rl == 0 || rl > BANK_REF_LEN_MAX)
        return verify_violation(v, "entry %llu: malformed bank reference", SEQ(e));
    memcpy(key, e->bank_id, bl);
    key[bl] = '\0';
    memcpy(key + bl + 1, e->bank_ref, rl);
    vbank_t *b = vmap_find(&v->banks, key, bl + 1 + rl);
    if (b != NULL)
        return strcmp(b->member, e->member_id) == 0
                   ? CL_OK
                   : verify_violation(v, "entry %llu: reference %s of bank %s was member %s",
                                      SEQ(e), e->bank_ref, e->bank_id, b->member);
    int rc = vmap_insert(&v->banks, key, bl + 1 + rl, (void **)&b);
    if (rc == CL_OK)
        snprintf(b->member, sizeof b->member, "%s", e->member_id);
    return rc;
}

static int card_entry(verify_t *v, const journal_entry_t *e)
{
    if (vmap_find(&v->banks, e->bank_id, strlen(e->bank_id)) == NULL)
        return verify_violation(v, "entry %llu: %s is not a bank", SEQ(e), e->bank_id);
    vcard_t *c = NULL, *n = NULL;
    int rc = card_of(v, e, false, &c);
    if (rc != CL_OK)
        return rc;
    if (e->kind == COALITION__ENTRY_KIND__ENTRY_CARD_ENROL)
        return bank_ref(v, e) == CL_OK ? link(v, e, c) : CL_ERR_CORRUPT;
    bool ours = c->state == COALITION__CARD_STATE__CARD_LINKED &&
                strcmp(c->bank, e->bank_id) == 0 && strcmp(c->member, e->member_id) == 0;
    if (!ours)
        return verify_violation(v, "entry %llu (%s): not a card bank %s linked to member %s",
                                SEQ(e), ledger_entry_kind_name(e->kind), e->bank_id, e->member_id);
    c->state = COALITION__CARD_STATE__CARD_UNLINKED;
    c->replaced = e->kind == COALITION__ENTRY_KIND__ENTRY_CARD_REPLACE;
    if (e->kind == COALITION__ENTRY_KIND__ENTRY_CARD_UNLINK)
        return verify_expect_no_moves(v, e);
    rc = card_of(v, e, true, &n); /* a replacement; inserting may move c: not used after */
    return rc == CL_OK ? link(v, e, n) : rc;
}

static int lapse(verify_t *v, const journal_entry_t *e)
{
    vunclaimed_t *u = vmap_find(&v->unclaimed, e->member_id, strlen(e->member_id));
    vcard_t *c = NULL;
    int rc = card_of(v, e, false, &c);
    if (rc != CL_OK)
        return rc;
    if (strcmp(e->partner_id, OPERATOR_PARTNER_ID) != 0 || u == NULL || u->lapsed ||
        u->moved_to[0] != '\0' || c->state != COALITION__CARD_STATE__CARD_UNCLAIMED ||
        strcmp(c->member, e->member_id) != 0)
        return verify_violation(v, "entry %llu lapses %s, which is not an open unclaimed account",
                                SEQ(e), e->member_id);
    if (e->time_ms - u->last_earn_ms < v->card_period_s * 1000)
        return verify_violation(v,
                                "entry %llu lapses %s %lld ms after its latest earn, before "
                                "the claim period of %lld s",
                                SEQ(e), e->member_id, (long long)(e->time_ms - u->last_earn_ms),
                                (long long)v->card_period_s);
    u->lapsed = true;
    c->state = COALITION__CARD_STATE__CARD_LAPSED;
    return expect_all_moved(v, e, e->member_id, ACCOUNT_BREAKAGE);
}

static int bank_add(verify_t *v, const journal_entry_t *e)
{
    vbank_t *b = NULL;
    if (strcmp(e->partner_id, OPERATOR_PARTNER_ID) != 0 ||
        !wire_id_valid(e->bank_id, PARTNER_ID_LEN_MAX))
        return verify_violation(v, "entry %llu adds a bank but is not the operator's", SEQ(e));
    int rc = vmap_insert(&v->banks, e->bank_id, strlen(e->bank_id), (void **)&b);
    if (rc == CL_ERR_EXISTS)
        return verify_violation(v, "entry %llu adds bank %s again", SEQ(e), e->bank_id);
    if (rc == CL_OK)
        b->seq = e->seq;
    return rc == CL_OK ? verify_expect_no_moves(v, e) : rc;
}

static int card_settings(verify_t *v, const journal_entry_t *e)
{
    if (strcmp(e->partner_id, OPERATOR_PARTNER_ID) != 0 || e->unclaimed_period_seconds <= 0 ||
        e->unclaimed_period_seconds > UNCLAIMED_PERIOD_SECONDS_MAX)
        return verify_violation(v, "entry %llu sets card settings it may not", SEQ(e));
    v->card_period_s = e->unclaimed_period_seconds;
    v->card_settings_seq = e->seq;
    return verify_expect_no_moves(v, e);
}

int verify_rederive_card(verify_t *v, const journal_entry_t *e)
{
    assert(e->kind >= COALITION__ENTRY_KIND__ENTRY_BANK_ADD &&
           e->kind <= COALITION__ENTRY_KIND__ENTRY_CARD_SETTINGS);
    switch (e->kind) {
    case COALITION__ENTRY_KIND__ENTRY_BANK_ADD: return bank_add(v, e);
    case COALITION__ENTRY_KIND__ENTRY_UNCLAIMED_LAPSE: return lapse(v, e);
    case COALITION__ENTRY_KIND__ENTRY_CARD_SETTINGS: return card_settings(v, e);
    default: return card_entry(v, e);
    }
}

/* Where the points of `member` are now: itself, the member that claimed them, or
 * breakage after a lapse (member_out: the member a reversal names). */
void verify_holder(const verify_t *v, const char *member, char account[ACCOUNT_NAME_BYTES_MAX],
                   const char **member_out)
{
    assert(v != NULL && member != NULL && member_out != NULL);
    const vunclaimed_t *u =
        unclaimed_member(member) ? vmap_find(&v->unclaimed, member, strlen(member)) : NULL;
    *member_out = u != NULL && u->moved_to[0] != '\0' ? u->moved_to : member;
    if (u != NULL && u->lapsed)
        snprintf(account, ACCOUNT_NAME_BYTES_MAX, "%s", ACCOUNT_BREAKAGE);
    else
        ledger_account_member(account, ACCOUNT_NAME_BYTES_MAX, *member_out);
}

/* ---- records against the journal ---------------------------------------------------- */

static int visit_card(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    vcard_t *c = k->mv_size == CARD_KEY_LEN ? vmap_find(&v->cards, k->mv_data, k->mv_size) : NULL;
    if (c == NULL)
        return verify_violation(v, "a card record no journal entry recorded");
    Coalition__CardRecord *r = coalition__card_record__unpack(NULL, val->mv_size, val->mv_data);
    if (r == NULL)
        return verify_violation(v, "unreadable card record");
    bool same = (int)r->state == c->state && strcmp(r->member_id, c->member) == 0 &&
                strcmp(r->bank_id, c->bank) == 0 && r->replaced == c->replaced;
    if (same && c->state == COALITION__CARD_STATE__CARD_UNCLAIMED) {
        const vunclaimed_t *u = vmap_find(&v->unclaimed, c->member, strlen(c->member));
        same = u != NULL && r->unclaimed_since_ms == u->last_earn_ms;
    }
    coalition__card_record__free_unpacked(r, NULL);
    c->seen = true;
    return same ? CL_OK
                : verify_violation(v, "card record of member %s differs from the journal",
                                   c->member);
}

static int visit_bank(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    (void)val;
    vbank_t *b = vmap_find(&v->banks, k->mv_data, k->mv_size);
    if (b == NULL || b->seq == 0)
        return verify_violation(v, "bank record %.*s without its bank-add entry", (int)k->mv_size,
                                (const char *)k->mv_data);
    b->seen = true;
    return CL_OK;
}

static int visit_bank_ref(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    vbank_t *b = vmap_find(&v->banks, k->mv_data, k->mv_size);
    if (b == NULL || b->seq != 0 || val->mv_size != strlen(b->member) ||
        memcmp(val->mv_data, b->member, val->mv_size) != 0)
        return verify_violation(v, "a bank reference no card entry made");
    b->seen = true;
    return CL_OK;
}

/* The stored card settings: those of the journal's last card-settings entry, or none. */
static int check_settings_record(verify_t *v)
{
    Coalition__CardSettings *cs = NULL;
    int rc =
        ledger_get_record(v->txn, v->ledger->db_meta, CARD_SETTINGS_KEY, strlen(CARD_SETTINGS_KEY),
                          &coalition__card_settings__descriptor, (ProtobufCMessage **)&cs);
    if (rc == CL_ERR_NOT_FOUND)
        return v->card_settings_seq == 0
                   ? CL_OK
                   : verify_violation(v, "card settings entry %llu has no record",
                                      (unsigned long long)v->card_settings_seq);
    if (rc != CL_OK)
        return rc;
    bool same = cs->unclaimed_period_seconds == v->card_period_s &&
                cs->set_seq == v->card_settings_seq && v->card_settings_seq != 0;
    coalition__card_settings__free_unpacked(cs, NULL);
    return same ? CL_OK : verify_violation(v, "the card settings record differs from the journal");
}

/* The unclaimed index: one key (claim start, account) per open unclaimed account, its
 * start the account's latest earn; nothing else. */
static int visit_unclaimed_key(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    (void)val;
    vunclaimed_t *u =
        k->mv_size > 8 && k->mv_size <= 8 + MEMBER_ID_LEN_MAX
            ? vmap_find(&v->unclaimed, (const uint8_t *)k->mv_data + 8, k->mv_size - 8)
            : NULL;
    if (u == NULL || u->lapsed || u->moved_to[0] != '\0' || u->indexed ||
        (int64_t)store_get_u64(k->mv_data) != u->last_earn_ms)
        return verify_violation(v, "an unclaimed-index key no open unclaimed account explains");
    u->indexed = true;
    return CL_OK;
}

static int check_unclaimed_index(verify_t *v)
{
    int rc = store_walk(v->txn, v->ledger->db_unclaimed, NULL, visit_unclaimed_key, v);
    for (size_t i = 0; rc == CL_OK && i < v->unclaimed.count; i++) {
        const vunclaimed_t *u = vmap_at(&v->unclaimed, i);
        if (!u->lapsed && u->moved_to[0] == '\0' && !u->indexed)
            rc = verify_violation(v, "unclaimed account %s is missing from the unclaimed index",
                                  u->key.bytes);
    }
    return rc;
}

int verify_card_records(verify_t *v)
{
    int rc = check_settings_record(v);
    if (rc == CL_OK)
        rc = check_unclaimed_index(v);
    if (rc == CL_OK)
        rc = store_walk(v->txn, v->ledger->db_cards, NULL, visit_card, v);
    if (rc == CL_OK)
        rc = store_walk(v->txn, v->ledger->db_banks, NULL, visit_bank, v);
    if (rc == CL_OK)
        rc = store_walk(v->txn, v->ledger->db_bank_refs, NULL, visit_bank_ref, v);
    for (size_t i = 0; rc == CL_OK && i < v->cards.count; i++)
        if (!((vcard_t *)vmap_at(&v->cards, i))->seen &&
            ((vcard_t *)vmap_at(&v->cards, i))->state != COALITION__CARD_STATE__CARD_NONE)
            rc = verify_violation(v, "a card the journal records has no record");
    for (size_t i = 0; rc == CL_OK && i < v->banks.count; i++)
        if (!((vbank_t *)vmap_at(&v->banks, i))->seen)
            rc = verify_violation(v, "bank or bank reference %s has no record",
                                  ((vbank_t *)vmap_at(&v->banks, i))->key.bytes);
    return rc;
}

/* A member record of an unclaimed account: its fate as the journal tells it. */
int verify_unclaimed_record(verify_t *v, const Coalition__MemberRecord *m)
{
    const vunclaimed_t *u = vmap_find(&v->unclaimed, m->member_id, strlen(m->member_id));
    if (u == NULL || !m->unclaimed)
        return m->unclaimed || m->moved_to[0] != '\0' || m->lapsed
                   ? verify_violation(v, "member %s is marked unclaimed without a card earn",
                                      m->member_id)
                   : CL_OK;
    if (u->lapsed != m->lapsed || strcmp(u->moved_to, m->moved_to) != 0 ||
        u->last_earn_ms != m->unclaimed_since_ms)
        return verify_violation(v, "unclaimed account %s: its record says %s, the journal %s",
                                m->member_id, m->lapsed ? "lapsed" : m->moved_to,
                                u->lapsed ? "lapsed" : u->moved_to);
    return CL_OK;
}
