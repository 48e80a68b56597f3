/* verify: CURVE keys and partner limits against the journal. Every key record must be
 * made by the key-add entry it names (same key, participant and role) and, when revoked,
 * revoked by the key-revoke entry it names; every key-add and key-revoke entry must be
 * the one its key's record names. A partner's stored limits are those of its last
 * partner-limits entry (none: all defaults). */
#include "verify_internal.h"

#include "errors.h"

#include <stdio.h>
#include <string.h>

static int get_key(verify_t *v, const char *z85, Coalition__KeyRecord **out)
{
    return ledger_get_record(v->txn, v->ledger->db_keys, z85, KEY_Z85_LEN,
                             &coalition__key_record__descriptor, (ProtobufCMessage **)out);
}

static int from_operator(verify_t *v, const journal_entry_t *e)
{
    if (strcmp(e->partner_id, OPERATOR_PARTNER_ID) != 0)
        return verify_violation(v, "entry %llu (%s) comes from %s, not the operator",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                e->partner_id);
    return CL_OK;
}

/* What rules_key_add accepts: a partner or bank role; a valid participant that is not
 * the operator; for a partner key, a partner added by an earlier entry. */
static bool key_add_valid(verify_t *v, const journal_entry_t *e)
{
    bool partner = e->key_role == COALITION__KEY_ROLE__ROLE_PARTNER;
    if (!partner && e->key_role != COALITION__KEY_ROLE__ROLE_BANK)
        return false;
    if (!wire_id_valid(e->participant, PARTNER_ID_LEN_MAX) ||
        strcmp(e->participant, OPERATOR_PARTNER_ID) == 0)
        return false;
    const vpartner_t *p = vmap_find(&v->partners, e->participant, strlen(e->participant));
    return !partner || (p != NULL && p->added_seq != 0 && p->added_seq < e->seq);
}

int verify_rederive_key(verify_t *v, const journal_entry_t *e)
{
    if (from_operator(v, e) != CL_OK)
        return CL_ERR_CORRUPT;
    if (!keys_z85_valid(e->public_key))
        return verify_violation(v, "entry %llu names no valid key", (unsigned long long)e->seq);
    if (e->kind == COALITION__ENTRY_KIND__ENTRY_KEY_ADD && !key_add_valid(v, e))
        return verify_violation(v,
                                "key-add entry %llu gives role %u to %s: not a role, or not a "
                                "participant the rules accept",
                                (unsigned long long)e->seq, e->key_role, e->participant);
    Coalition__KeyRecord *k = NULL;
    int rc = get_key(v, e->public_key, &k);
    if (rc == CL_ERR_NOT_FOUND)
        return verify_violation(v, "entry %llu (%s) names key %.8s..., which has no record",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                e->public_key);
    if (rc != CL_OK)
        return rc;
    bool add = e->kind == COALITION__ENTRY_KIND__ENTRY_KEY_ADD;
    bool ok = add ? k->created_seq == e->seq && strcmp(k->participant, e->participant) == 0 &&
                        k->role == e->key_role
                  : k->revoked_seq == e->seq && k->created_seq < e->seq;
    coalition__key_record__free_unpacked(k, NULL);
    if (!ok)
        return verify_violation(v, "entry %llu (%s) does not match the record of key %.8s...",
                                (unsigned long long)e->seq, ledger_entry_kind_name(e->kind),
                                e->public_key);
    return CL_OK;
}

static bool entry_is(verify_t *v, uint64_t seq, int kind, const char *z85)
{
    if (seq == 0 || seq > v->entries)
        return false;
    journal_entry_t *e = NULL;
    if (ledger_get_entry(v->ledger, v->txn, seq, &e) != CL_OK)
        return false;
    bool same = (int)e->kind == kind && strcmp(e->public_key, z85) == 0;
    coalition__journal_entry__free_unpacked(e, NULL);
    return same;
}

static int visit_key(const MDB_val *k, const MDB_val *val, void *ctx)
{
    verify_t *v = ctx;
    char z85[KEY_Z85_BYTES] = "";
    if (k->mv_size == KEY_Z85_LEN)
        memcpy(z85, k->mv_data, KEY_Z85_LEN);
    Coalition__KeyRecord *rec = coalition__key_record__unpack(NULL, val->mv_size, val->mv_data);
    if (rec == NULL || !keys_z85_valid(z85)) {
        coalition__key_record__free_unpacked(rec, NULL);
        return verify_violation(v, "unreadable key record");
    }
    bool made = entry_is(v, rec->created_seq, COALITION__ENTRY_KIND__ENTRY_KEY_ADD, z85);
    bool revoked = rec->revoked_seq == 0 ||
                   entry_is(v, rec->revoked_seq, COALITION__ENTRY_KIND__ENTRY_KEY_REVOKE, z85);
    coalition__key_record__free_unpacked(rec, NULL);
    if (!made || !revoked)
        return verify_violation(v, "key record %.8s... names no %s entry of its own", z85,
                                made ? "key-revoke" : "key-add");
    return CL_OK;
}

int verify_key_records(verify_t *v)
{
    return store_walk(v->txn, v->ledger->db_keys, NULL, visit_key, v);
}

int verify_rederive_limits(verify_t *v, const journal_entry_t *e)
{
    if (from_operator(v, e) != CL_OK)
        return CL_ERR_CORRUPT;
    vpartner_t *p = vmap_find(&v->partners, e->participant, strlen(e->participant));
    if (p == NULL || p->added_seq == 0 || p->added_seq >= e->seq || e->limits == NULL)
        return verify_violation(v,
                                "partner-limits entry %llu names %s, which no earlier entry "
                                "added",
                                (unsigned long long)e->seq, e->participant);
    const Coalition__Limits *l = e->limits;
    if (l->max_amount_minor < 0 || l->max_amount_minor > AMOUNT_MINOR_MAX || l->max_points < 0 ||
        l->max_points > POINTS_MAX || l->burns_per_member_minute > VELOCITY_BURNS_PER_MINUTE_MAX ||
        l->requests_per_second > PARTNER_REQUESTS_PER_SECOND_MAX)
        return verify_violation(v, "partner-limits entry %llu sets limits out of range",
                                (unsigned long long)e->seq);
    p->limits.max_amount_minor = e->limits->max_amount_minor;
    p->limits.max_points = e->limits->max_points;
    p->limits.burns_per_member_minute = e->limits->burns_per_member_minute;
    p->limits.requests_per_second = e->limits->requests_per_second;
    return CL_OK;
}

int verify_partner_limits(verify_t *v, const vpartner_t *p)
{
    if (memcmp(&p->limits, &p->record_limits, sizeof p->limits) != 0)
        return verify_violation(v,
                                "partner %s: its stored limits are not those its last "
                                "partner-limits entry set",
                                p->id.bytes);
    return CL_OK;
}

void verify_limits_in_force(const vpartner_t *p, ledger_limits_t *out)
{
    Coalition__Limits stored = COALITION__LIMITS__INIT;
    stored.max_amount_minor = p->limits.max_amount_minor;
    stored.max_points = p->limits.max_points;
    stored.burns_per_member_minute = p->limits.burns_per_member_minute;
    stored.requests_per_second = p->limits.requests_per_second;
    ledger_limits_effective(&stored, out);
}
