/* coalition-agent export --window ID: the agent's side of a settlement window for
 * reconciliation (coalitionctl reconcile). JSON lines, one per approval the agent was
 * told for that window (as its journal holds them, replays included: the reader keys
 * them by site and txn id), then one per request still in the outbox, which no window
 * holds yet ("status":"outbox"). */
#include "agent_export.h"

#include "errors.h"
#include "json.h"
#include "outbox.h"
#include "wire.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef struct export_ctx {
    uint64_t window;
    uint64_t lines;
} export_ctx_t;

/* What the request asked: its ids, member, money and points. */
static void print_request_fields(const envelope_t *env)
{
    int64_t amount = 0, points = 0;
    if (env->body_case == COALITION__ENVELOPE__BODY_EARN)
        amount = env->earn->amount_minor;
    else if (env->body_case == COALITION__ENVELOPE__BODY_BURN)
        points = env->burn->points;
    else if (env->body_case == COALITION__ENVELOPE__BODY_REFUND)
        amount = env->refund->amount_minor, points = env->refund->points;
    const char *original = wire_original_txn(env);
    printf("\"site\":");
    json_write_string(stdout, env->site_id);
    printf(",\"txn_id\":");
    json_write_string(stdout, env->txn_id);
    printf(",\"type\":\"%s\",\"original_txn_id\":", wire_body_name(env));
    json_write_string(stdout, original != NULL ? original : "");
    printf(",\"member\":");
    json_write_string(stdout, wire_member_of(env));
    printf(",\"amount_minor\":%" PRId64 ",\"till_time_ms\":%" PRId64, amount,
           env->client_time_ms);
    if (env->body_case == COALITION__ENVELOPE__BODY_BURN)
        printf(",\"requested_points\":%" PRId64, points);
}

static int export_answer(uint64_t seq, int64_t time_ms, const uint8_t *env_bytes, size_t env_len,
                         const uint8_t *auth_bytes, size_t auth_len, void *ctx)
{
    export_ctx_t *x = ctx;
    (void)seq;
    authorization_t *auth = wire_auth_decode(auth_bytes, auth_len);
    envelope_t *env = wire_envelope_decode(env_bytes, env_len);
    bool approved = auth != NULL && env != NULL && auth->seq > 0 &&
                    (auth->code == RC_APPROVED || auth->code == RC_PARTIAL);
    if (approved && auth->window_id == x->window) {
        printf("{\"status\":\"answered\",");
        print_request_fields(env);
        printf(",\"code\":\"%02d\",\"points\":%" PRId64 ",\"money_minor\":%" PRId64
               ",\"fee_minor\":%" PRId64 ",\"ledger_seq\":%" PRIu64 ",\"window\":%" PRIu64
               ",\"answered_ms\":%" PRId64 ",\"replay\":%s}\n",
               auth->code, auth->points, auth->settle_minor, auth->fee_minor, auth->seq,
               auth->window_id, time_ms, auth->replay ? "true" : "false");
        x->lines++;
    }
    wire_auth_free(auth);
    wire_envelope_free(env);
    return CL_OK;
}

static int export_pending(uint64_t seq, const uint8_t *env_bytes, size_t len, void *ctx)
{
    export_ctx_t *x = ctx;
    envelope_t *env = wire_envelope_decode(env_bytes, len);
    if (env == NULL)
        return CL_ERR_CORRUPT;
    printf("{\"status\":\"outbox\",\"outbox_seq\":%" PRIu64 ",", seq);
    print_request_fields(env);
    printf("}\n");
    wire_envelope_free(env);
    x->lines++;
    return CL_OK;
}

/* Who the store belongs to, from the first request it holds (the agent stamps every
 * request with its partner and site). */
typedef struct identity {
    char partner[PARTNER_ID_LEN_MAX + 1], site[SITE_ID_LEN_MAX + 1];
} identity_t;

static void note_identity(identity_t *id, const uint8_t *bytes, size_t len)
{
    if (id->partner[0] != '\0')
        return;
    envelope_t *env = wire_envelope_decode(bytes, len);
    if (env != NULL && wire_id_valid(env->partner_id, PARTNER_ID_LEN_MAX) &&
        wire_id_valid(env->site_id, SITE_ID_LEN_MAX)) {
        snprintf(id->partner, sizeof id->partner, "%s", env->partner_id);
        snprintf(id->site, sizeof id->site, "%s", env->site_id);
    }
    wire_envelope_free(env);
}

static int identity_answer(uint64_t seq, int64_t time_ms, const uint8_t *env, size_t env_len,
                           const uint8_t *auth, size_t auth_len, void *ctx)
{
    (void)seq, (void)time_ms, (void)auth, (void)auth_len;
    note_identity(ctx, env, env_len);
    return CL_OK;
}

static int identity_pending(uint64_t seq, const uint8_t *env, size_t len, void *ctx)
{
    (void)seq;
    note_identity(ctx, env, len);
    return CL_OK;
}

int agent_export(const char *dir, const char *partner, const char *site, uint64_t window,
                 uint64_t *lines_out)
{
    assert(dir != NULL && window > 0);
    assert(partner == NULL || (wire_id_valid(partner, PARTNER_ID_LEN_MAX) &&
                               wire_id_valid(site, SITE_ID_LEN_MAX)));
    outbox_t *store = NULL;
    export_ctx_t x = {window, 0};
    identity_t id;
    memset(&id, 0, sizeof id);
    int rc = outbox_open(&store, dir, 1);
    if (rc == CL_OK && partner == NULL) /* not given: the store's own (none when empty) */
        rc = outbox_journal_foreach(store, identity_answer, &id);
    if (rc == CL_OK && partner == NULL)
        rc = outbox_foreach(store, identity_pending, &id);
    if (rc == CL_OK) {
        printf("{\"export\":\"coalition-agent\",\"partner\":");
        json_write_string(stdout, partner != NULL ? partner : id.partner);
        printf(",\"site\":");
        json_write_string(stdout, partner != NULL ? site : id.site);
        printf(",\"window\":%" PRIu64 "}\n", window);
    }
    if (rc == CL_OK)
        rc = outbox_journal_foreach(store, export_answer, &x);
    if (rc == CL_OK)
        rc = outbox_foreach(store, export_pending, &x);
    outbox_destroy(&store);
    *lines_out = x.lines;
    return rc;
}
