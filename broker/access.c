/* Trust boundary in the ledger: CURVE keys and what they may do, partner limits, and
 * the per-member burn velocity. Keys and limits are operator writes (admin socket), each
 * a journal entry without postings, so `verify` can re-derive them:
 *
 *   key add ──► KeyRecord{participant, role, created_seq}          (ENTRY_KEY_ADD)
 *   key revoke ──► the same record with revoked_seq set, for good   (ENTRY_KEY_REVOKE)
 *   partner limits ──► PartnerRecord.limits                         (ENTRY_PARTNER_LIMITS)
 *
 * A key is never deleted and a revoked key never comes back: a participant gets a new key. */
#include "ledger_internal.h"

#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

_Static_assert(VELOCITY_BURNS_KEPT >= VELOCITY_BURNS_PER_MINUTE_MAX,
               "a member keeps as many burn times as the highest settable limit");

static const char *role_name(int role)
{
    switch (role) {
    case COALITION__KEY_ROLE__ROLE_PARTNER: return "partner";
    case COALITION__KEY_ROLE__ROLE_BANK: return "bank";
    default: return "none";
    }
}

void ledger_limits_effective(const Coalition__Limits *stored, ledger_limits_t *out)
{
    assert(out != NULL);
    out->max_amount_minor = LIMIT_MAX_AMOUNT_MINOR_DEFAULT;
    out->max_points = LIMIT_MAX_POINTS_DEFAULT;
    out->burns_per_member_minute = LIMIT_BURNS_PER_MEMBER_MINUTE_DEFAULT;
    out->requests_per_second = LIMIT_REQUESTS_PER_SECOND_DEFAULT;
    if (stored == NULL)
        return;
    if (stored->max_amount_minor > 0)
        out->max_amount_minor = stored->max_amount_minor;
    if (stored->max_points > 0)
        out->max_points = stored->max_points;
    if (stored->burns_per_member_minute > 0)
        out->burns_per_member_minute = stored->burns_per_member_minute;
    if (stored->requests_per_second > 0)
        out->requests_per_second = stored->requests_per_second;
    assert(out->burns_per_member_minute <= VELOCITY_BURNS_KEPT);
}

static int get_key(MDB_txn *txn, MDB_dbi dbi, const char *z85, Coalition__KeyRecord **out)
{
    return ledger_get_record(txn, dbi, z85, KEY_Z85_LEN, &coalition__key_record__descriptor,
                             (ProtobufCMessage **)out);
}

int access_lookup(ledger_t *self, MDB_txn *txn, const char *public_z85, ledger_principal_t *out)
{
    assert(out != NULL);
    memset(out, 0, sizeof *out);
    if (!keys_z85_valid(public_z85))
        return CL_ERR_NOT_FOUND;
    Coalition__KeyRecord *k = NULL;
    int rc = get_key(txn, self->db_keys, public_z85, &k);
    if (rc != CL_OK)
        return rc;
    if (!wire_id_valid(k->participant, PARTNER_ID_LEN_MAX)) {
        coalition__key_record__free_unpacked(k, NULL);
        return CL_ERR_CORRUPT;
    }
    memcpy(out->public_z85, public_z85, KEY_Z85_BYTES);
    snprintf(out->participant, sizeof out->participant, "%s", k->participant);
    out->role = (int)k->role;
    out->revoked = k->revoked_seq != 0;
    coalition__key_record__free_unpacked(k, NULL);
    ledger_limits_effective(NULL, &out->limits);
    if (out->role != COALITION__KEY_ROLE__ROLE_PARTNER)
        return CL_OK;
    Coalition__PartnerRecord *p = NULL;
    rc = ledger_get_record(txn, self->db_partners, out->participant, strlen(out->participant),
                           &coalition__partner_record__descriptor, (ProtobufCMessage **)&p);
    if (rc == CL_OK)
        ledger_limits_effective(p->limits, &out->limits);
    coalition__partner_record__free_unpacked(p, NULL);
    return rc == CL_ERR_NOT_FOUND ? CL_OK : rc; /* the partner's own request gets its 03 */
}

static bool partner_may_send(const envelope_t *env)
{
    switch (env->body_case) {
    case COALITION__ENVELOPE__BODY_EARN:
    case COALITION__ENVELOPE__BODY_BURN:
    case COALITION__ENVELOPE__BODY_REFUND:
    case COALITION__ENVELOPE__BODY_VOID_REQUEST:
    case COALITION__ENVELOPE__BODY_BALANCE:
    case COALITION__ENVELOPE__BODY_ENROLL: return true;
    default: return false;
    }
}

int ledger_permits(const ledger_principal_t *p, const envelope_t *env, char *why, size_t why_size)
{
    assert(p != NULL && env != NULL && why != NULL && why_size > 0);
    if (p->revoked) {
        snprintf(why, why_size, "this key was revoked");
        return RC_NOT_PERMITTED;
    }
    if (p->role == COALITION__KEY_ROLE__ROLE_BANK) {
        /* A bank enrols, replaces and unlinks cards, and asks balances by card (the
         * ledger then checks the card is one it enrolled); it never earns or burns. */
        bool by_card =
            env->body_case == COALITION__ENVELOPE__BODY_BALANCE && env->balance->card != NULL;
        if (strcmp(env->partner_id, p->participant) != 0)
            snprintf(why, why_size, "this key belongs to bank %s, not %.32s", p->participant,
                     env->partner_id);
        else if (env->body_case != COALITION__ENVELOPE__BODY_CARD_ENROLL && !by_card)
            snprintf(why, why_size, "bank %s may not send %s requests", p->participant,
                     env->body_case == COALITION__ENVELOPE__BODY_BALANCE ? "balance-by-member"
                                                                         : wire_body_name(env));
        else
            return RC_APPROVED;
        return RC_NOT_PERMITTED;
    }
    if (p->role != COALITION__KEY_ROLE__ROLE_PARTNER) {
        snprintf(why, why_size, "this key has no role");
        return RC_NOT_PERMITTED;
    }
    if (strcmp(env->partner_id, p->participant) != 0) {
        snprintf(why, why_size, "this key belongs to partner %s, not %.32s", p->participant,
                 env->partner_id);
        return RC_NOT_PERMITTED;
    }
    if (!partner_may_send(env)) {
        snprintf(why, why_size, "a partner may not send %s requests", wire_body_name(env));
        return RC_NOT_PERMITTED;
    }
    return RC_APPROVED;
}

int rules_key_add(ledger_t *self, MDB_txn *txn, decision_t *d, const Coalition__KeyAddRequest *r)
{
    assert(keys_z85_valid(r->public_key)); /* wire_validate checked the request */
    assert(wire_id_valid(r->participant, PARTNER_ID_LEN_MAX));
    Coalition__KeyRecord *existing = NULL;
    int rc = get_key(txn, self->db_keys, r->public_key, &existing);
    coalition__key_record__free_unpacked(existing, NULL);
    if (rc == CL_OK) {
        rules_decline(d, RC_INVALID_TRANSACTION, "key %.8s... is already recorded", r->public_key);
        return CL_OK;
    }
    if (rc != CL_ERR_NOT_FOUND)
        return rc;
    if (r->role == COALITION__KEY_ROLE__ROLE_PARTNER) {
        MDB_val k = {strlen(r->participant), r->participant}, v;
        rc = mdb_get(txn, self->db_partners, &k, &v);
        if (rc == MDB_NOTFOUND) {
            rules_decline(d, RC_UNKNOWN_PARTNER, "unknown partner %s", r->participant);
            return CL_OK;
        }
        if (rc != MDB_SUCCESS)
            return store_err(rc);
    }
    if (r->role == COALITION__KEY_ROLE__ROLE_BANK) {
        bool bank = false;
        rc = cards_is_bank(self, txn, r->participant, &bank);
        if (rc != CL_OK)
            return rc;
        if (!bank) {
            rules_decline(d, RC_UNKNOWN_PARTNER, "unknown bank %s", r->participant);
            return CL_OK;
        }
    }
    Coalition__KeyRecord rec = COALITION__KEY_RECORD__INIT;
    rec.participant = r->participant;
    rec.role = (uint32_t)r->role;
    rec.created_seq = self->batch_seq + 1;
    rc = ledger_put_record(txn, self->db_keys, r->public_key, KEY_Z85_LEN, &rec.base);
    self->batch_changes_access = true;
    d->kind = COALITION__ENTRY_KIND__ENTRY_KEY_ADD;
    d->public_key = r->public_key;
    d->participant = r->participant;
    d->key_role = (uint32_t)r->role;
    snprintf(d->text, sizeof d->text, "Key %.8s... recorded for %s %s", r->public_key,
             role_name(r->role), r->participant);
    return rc;
}

int rules_key_revoke(ledger_t *self, MDB_txn *txn, decision_t *d,
                     const Coalition__KeyRevokeRequest *r)
{
    assert(keys_z85_valid(r->public_key));
    Coalition__KeyRecord *k = NULL;
    int rc = get_key(txn, self->db_keys, r->public_key, &k);
    if (rc == CL_ERR_NOT_FOUND) {
        rules_decline(d, RC_ORIGINAL_NOT_FOUND, "no key %.8s... is recorded", r->public_key);
        return CL_OK;
    }
    if (rc != CL_OK)
        return rc;
    if (k->revoked_seq != 0) {
        rules_decline(d, RC_INVALID_TRANSACTION, "key %.8s... was revoked at ledger seq %llu",
                      r->public_key, (unsigned long long)k->revoked_seq);
    } else {
        k->revoked_seq = self->batch_seq + 1;
        rc = ledger_put_record(txn, self->db_keys, r->public_key, KEY_Z85_LEN, &k->base);
        self->batch_changes_access = true;
        d->kind = COALITION__ENTRY_KIND__ENTRY_KEY_REVOKE;
        d->public_key = r->public_key;
        snprintf(d->text, sizeof d->text, "Key %.8s... of %s %s revoked", r->public_key,
                 role_name((int)k->role), k->participant);
    }
    coalition__key_record__free_unpacked(k, NULL);
    return rc;
}

static void limits_text(decision_t *d, const char *partner, const ledger_limits_t *l)
{
    snprintf(d->text, sizeof d->text,
             "Partner %s limits: earn up to %lld minor units, burn up to %lld points, %u burns "
             "per member a minute, %u requests a second",
             partner, (long long)l->max_amount_minor, (long long)l->max_points,
             l->burns_per_member_minute, l->requests_per_second);
}

int rules_partner_limits(ledger_t *self, MDB_txn *txn, decision_t *d,
                         const Coalition__PartnerLimitsRequest *r)
{
    assert(wire_id_valid(r->partner_id, PARTNER_ID_LEN_MAX));
    assert(r->burns_per_member_minute <= VELOCITY_BURNS_PER_MINUTE_MAX);
    Coalition__PartnerRecord *p = NULL;
    int rc = ledger_get_record(txn, self->db_partners, r->partner_id, strlen(r->partner_id),
                               &coalition__partner_record__descriptor, (ProtobufCMessage **)&p);
    if (rc == CL_ERR_NOT_FOUND) {
        rules_decline(d, RC_UNKNOWN_PARTNER, "unknown partner %s", r->partner_id);
        return CL_OK;
    }
    if (rc != CL_OK)
        return rc;
    coalition__limits__init(&d->limits);
    d->limits.max_amount_minor = r->max_amount_minor;
    d->limits.max_points = r->max_points;
    d->limits.burns_per_member_minute = r->burns_per_member_minute;
    d->limits.requests_per_second = r->requests_per_second;
    d->has_limits = true;
    Coalition__Limits *old = p->limits;
    p->limits = &d->limits;
    rc = ledger_put_record(txn, self->db_partners, r->partner_id, strlen(r->partner_id), &p->base);
    p->limits = old;
    coalition__partner_record__free_unpacked(p, NULL);
    self->batch_changes_access = true;
    d->kind = COALITION__ENTRY_KIND__ENTRY_PARTNER_LIMITS;
    d->participant = r->partner_id;
    ledger_limits_t in_force;
    ledger_limits_effective(&d->limits, &in_force);
    limits_text(d, r->partner_id, &in_force);
    return rc;
}

/* Burns of the member within the window before now. */
static uint32_t recent_burns(const Coalition__MemberRecord *m, int64_t now_ms)
{
    uint32_t n = 0;
    for (size_t i = 0; i < m->n_recent_burn_ms; i++) {
        if (m->recent_burn_ms[i] > now_ms - VELOCITY_WINDOW_MS)
            n++;
    }
    return n;
}

static int get_member(ledger_t *self, MDB_txn *txn, const char *member_id,
                      Coalition__MemberRecord **out)
{
    return ledger_get_record(txn, self->db_members, member_id, strlen(member_id),
                             &coalition__member_record__descriptor, (ProtobufCMessage **)out);
}

int access_velocity_check(ledger_t *self, MDB_txn *txn, const char *member_id, uint32_t limit,
                          decision_t *d)
{
    assert(limit > 0 && limit <= VELOCITY_BURNS_KEPT);
    Coalition__MemberRecord *m = NULL;
    int rc = get_member(self, txn, member_id, &m);
    if (rc != CL_OK)
        return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc; /* checked just before */
    uint32_t n = recent_burns(m, d->now_ms);
    coalition__member_record__free_unpacked(m, NULL);
    if (n >= limit)
        rules_decline(d, COALITION__RESPONSE_CODE__RC_EXCEEDS_FREQUENCY,
                      "member %s has had %u burns in the last minute (limit %u); try later",
                      member_id, n, limit);
    return CL_OK;
}

int access_velocity_record(ledger_t *self, MDB_txn *txn, const char *member_id, decision_t *d)
{
    Coalition__MemberRecord *m = NULL;
    int rc = get_member(self, txn, member_id, &m);
    if (rc != CL_OK)
        return rc == CL_ERR_NOT_FOUND ? CL_ERR_CORRUPT : rc;
    int64_t times[VELOCITY_BURNS_KEPT];
    size_t n = 0;
    /* Keep the newest VELOCITY_BURNS_KEPT - 1 of those still in the window, then now. */
    size_t first = m->n_recent_burn_ms >= VELOCITY_BURNS_KEPT
                       ? m->n_recent_burn_ms - (VELOCITY_BURNS_KEPT - 1)
                       : 0;
    for (size_t i = first; i < m->n_recent_burn_ms; i++) {
        if (m->recent_burn_ms[i] > d->now_ms - VELOCITY_WINDOW_MS)
            times[n++] = m->recent_burn_ms[i];
    }
    times[n++] = d->now_ms;
    assert(n <= VELOCITY_BURNS_KEPT);
    int64_t *old = m->recent_burn_ms;
    size_t old_n = m->n_recent_burn_ms;
    m->recent_burn_ms = times;
    m->n_recent_burn_ms = n;
    rc = ledger_put_record(txn, self->db_members, member_id, strlen(member_id), &m->base);
    m->recent_burn_ms = old;
    m->n_recent_burn_ms = old_n;
    coalition__member_record__free_unpacked(m, NULL);
    return rc;
}

typedef struct key_slice {
    ledger_key_row_t *rows;
    size_t max, count;
} key_slice_t;

static int take_key(const MDB_val *k, const MDB_val *v, void *ctx)
{
    key_slice_t *s = ctx;
    assert(s->count < s->max);
    ledger_key_row_t *row = &s->rows[s->count];
    Coalition__KeyRecord *rec = coalition__key_record__unpack(NULL, v->mv_size, v->mv_data);
    bool ok = rec != NULL && k->mv_size == KEY_Z85_LEN &&
              wire_id_valid(rec->participant, PARTNER_ID_LEN_MAX);
    if (ok) {
        memcpy(row->public_z85, k->mv_data, KEY_Z85_LEN);
        row->public_z85[KEY_Z85_LEN] = '\0';
        snprintf(row->participant, sizeof row->participant, "%s", rec->participant);
        row->role = (int)rec->role;
        row->created_seq = rec->created_seq;
        row->revoked_seq = rec->revoked_seq;
        s->count++;
    }
    coalition__key_record__free_unpacked(rec, NULL);
    if (!ok)
        return CL_ERR_CORRUPT;
    return s->count == s->max ? STORE_WALK_STOP : CL_OK;
}

int ledger_keys_slice(ledger_t *self, const char *after, ledger_key_row_t *rows, size_t max,
                      size_t *count_out)
{
    assert(rows != NULL && max >= 1 && max <= LEDGER_SLICE_RECORDS_MAX && count_out != NULL);
    key_slice_t s = {rows, max, 0};
    /* The least key above `after` is `after` followed by one zero byte. */
    uint8_t key[KEY_Z85_BYTES + 1];
    size_t len = after != NULL ? strnlen(after, KEY_Z85_BYTES) : 0;
    if (len > KEY_Z85_LEN)
        return CL_ERR_INVALID;
    memcpy(key, after != NULL ? after : "", len);
    key[len] = 0;
    MDB_val from = {len + 1, key};
    MDB_txn *txn = NULL;
    int rc = store_read_begin(self->env, &txn);
    if (rc == CL_OK) {
        rc = store_walk(txn, self->db_keys, len > 0 ? &from : NULL, take_key, &s);
        mdb_txn_abort(txn);
    }
    *count_out = rc == CL_OK ? s.count : 0;
    return rc;
}

int ledger_partner_limits(ledger_t *self, const char *partner_id, ledger_limits_t *stored_out)
{
    assert(wire_id_valid(partner_id, PARTNER_ID_LEN_MAX) && stored_out != NULL);
    memset(stored_out, 0, sizeof *stored_out);
    MDB_txn *txn = NULL;
    Coalition__PartnerRecord *p = NULL;
    int rc = store_read_begin(self->env, &txn);
    if (rc != CL_OK)
        return rc;
    rc = ledger_get_record(txn, self->db_partners, partner_id, strlen(partner_id),
                           &coalition__partner_record__descriptor, (ProtobufCMessage **)&p);
    mdb_txn_abort(txn);
    if (rc == CL_OK && p->limits != NULL) {
        stored_out->max_amount_minor = p->limits->max_amount_minor;
        stored_out->max_points = p->limits->max_points;
        stored_out->burns_per_member_minute = p->limits->burns_per_member_minute;
        stored_out->requests_per_second = p->limits->requests_per_second;
    }
    coalition__partner_record__free_unpacked(p, NULL);
    return rc;
}
