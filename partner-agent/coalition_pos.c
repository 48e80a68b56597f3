/* Till-side library over the shared request/reply client; see coalition_pos.h. */
#include "coalition_pos.h"

#include "card.h"
#include "client.h"
#include "clock.h"
#include "errors.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpos {
    client_t *client;
    char terminal_id[TERMINAL_ID_LEN_MAX + 1];
    int timeout_ms;
};

cpos_t *cpos_new(const char *agent_endpoint, const char *terminal_id)
{
    if (!wire_id_valid(terminal_id, TERMINAL_ID_LEN_MAX))
        return NULL;
    cpos_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return NULL;
    if (client_new(&self->client, agent_endpoint) != CL_OK) {
        free(self);
        return NULL;
    }
    snprintf(self->terminal_id, sizeof self->terminal_id, "%s", terminal_id);
    self->timeout_ms = CPOS_TIMEOUT_MS_DEFAULT;
    return self;
}

void cpos_destroy(cpos_t **self_p)
{
    cpos_t *self = *self_p;
    if (self == NULL)
        return;
    client_destroy(&self->client);
    free(self);
    *self_p = NULL;
}

void cpos_set_timeout(cpos_t *self, int timeout_ms) { self->timeout_ms = timeout_ms; }

const char *cpos_code_meaning(int code) { return wire_code_meaning(code); }

static void envelope_for(cpos_t *self, envelope_t *env, const char *txn_id)
{
    coalition__envelope__init(env);
    env->version = WIRE_VERSION;
    env->partner_id = ""; /* the agent stamps its own partner and site ids */
    env->site_id = "";
    env->terminal_id = self->terminal_id;
    env->txn_id = (char *)txn_id;
    env->client_time_ms = clock_wall_ms();
}

static void copy_result(const authorization_t *auth, cpos_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->code = (int)auth->code;
    out->reversed = auth->reversed;
    out->approved = (auth->code == RC_APPROVED || auth->code == RC_PARTIAL) && !auth->reversed;
    out->offline = auth->offline;
    out->pending = auth->pending;
    out->replay = auth->replay;
    out->points = auth->points;
    out->balance = auth->balance;
    out->available = auth->available;
    out->pending_points = auth->pending_points;
    out->base_points = auth->base_points;
    out->bonus_points = auth->bonus_points;
    snprintf(out->tier, sizeof out->tier, "%s", auth->tier != NULL ? auth->tier : "");
    out->seq = auth->seq;
    snprintf(out->auth_code, sizeof out->auth_code, "%s", auth->auth_code);
    snprintf(out->txn_id, sizeof out->txn_id, "%s", auth->txn_id);
    snprintf(out->text, sizeof out->text, "%s", auth->text);
}

static int call(cpos_t *self, const envelope_t *env, cpos_result_t *out)
{
    if (env->txn_id == NULL || strlen(env->txn_id) > TXN_ID_LEN_MAX || out == NULL)
        return CPOS_BAD_ARGUMENT;
    authorization_t *auth = NULL;
    int rc = client_call(self->client, env, self->timeout_ms, &auth);
    if (rc != CL_OK)
        return CPOS_NO_ANSWER;
    copy_result(auth, out);
    wire_auth_free(auth);
    return CPOS_OK;
}

/* Earn, burn and balance name their member by id ("" with a card) or by card (NULL). */
static int earn_for(cpos_t *self, const char *txn_id, const char *member_id, Coalition__Card *card,
                    int64_t amount_minor, const char *currency, cpos_result_t *out)
{
    envelope_t env;
    Coalition__EarnRequest body = COALITION__EARN_REQUEST__INIT;
    envelope_for(self, &env, txn_id);
    body.member_id = (char *)member_id;
    body.card = card;
    body.amount_minor = amount_minor;
    body.currency = (char *)currency;
    env.body_case = COALITION__ENVELOPE__BODY_EARN;
    env.earn = &body;
    return call(self, &env, out);
}

static int burn_for(cpos_t *self, const char *txn_id, const char *member_id, Coalition__Card *card,
                    int64_t points, bool allow_partial, cpos_result_t *out)
{
    envelope_t env;
    Coalition__BurnRequest body = COALITION__BURN_REQUEST__INIT;
    envelope_for(self, &env, txn_id);
    body.member_id = (char *)member_id;
    body.card = card;
    body.points = points;
    body.allow_partial = allow_partial;
    env.body_case = COALITION__ENVELOPE__BODY_BURN;
    env.burn = &body;
    return call(self, &env, out);
}

static int balance_for(cpos_t *self, const char *txn_id, const char *member_id,
                       Coalition__Card *card, cpos_result_t *out)
{
    envelope_t env;
    Coalition__BalanceRequest body = COALITION__BALANCE_REQUEST__INIT;
    envelope_for(self, &env, txn_id);
    body.member_id = (char *)member_id;
    body.card = card;
    env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    env.balance = &body;
    return call(self, &env, out);
}

int cpos_earn(cpos_t *self, const char *txn_id, const char *member_id, int64_t amount_minor,
              const char *currency, cpos_result_t *out)
{
    return earn_for(self, txn_id, member_id, NULL, amount_minor, currency, out);
}

int cpos_burn(cpos_t *self, const char *txn_id, const char *member_id, int64_t points,
              bool allow_partial, cpos_result_t *out)
{
    return burn_for(self, txn_id, member_id, NULL, points, allow_partial, out);
}

int cpos_refund(cpos_t *self, const char *txn_id, const char *original_txn_id, int64_t amount_minor,
                int64_t points, cpos_result_t *out)
{
    return cpos_refund_at(self, txn_id, NULL, original_txn_id, amount_minor, points, out);
}

int cpos_refund_at(cpos_t *self, const char *txn_id, const char *original_site,
                   const char *original_txn_id, int64_t amount_minor, int64_t points,
                   cpos_result_t *out)
{
    envelope_t env;
    Coalition__RefundRequest body = COALITION__REFUND_REQUEST__INIT;
    envelope_for(self, &env, txn_id);
    body.original_txn_id = (char *)original_txn_id;
    body.original_site_id = original_site != NULL ? (char *)original_site : "";
    body.amount_minor = amount_minor;
    body.points = points;
    env.body_case = COALITION__ENVELOPE__BODY_REFUND;
    env.refund = &body;
    return call(self, &env, out);
}

int cpos_void(cpos_t *self, const char *txn_id, const char *original_txn_id, cpos_result_t *out)
{
    return cpos_void_at(self, txn_id, NULL, original_txn_id, out);
}

int cpos_void_at(cpos_t *self, const char *txn_id, const char *original_site,
                 const char *original_txn_id, cpos_result_t *out)
{
    envelope_t env;
    Coalition__VoidRequest body = COALITION__VOID_REQUEST__INIT;
    envelope_for(self, &env, txn_id);
    body.original_txn_id = (char *)original_txn_id;
    body.original_site_id = original_site != NULL ? (char *)original_site : "";
    env.body_case = COALITION__ENVELOPE__BODY_VOID_REQUEST;
    env.void_request = &body;
    return call(self, &env, out);
}

int cpos_balance(cpos_t *self, const char *txn_id, const char *member_id, cpos_result_t *out)
{
    return balance_for(self, txn_id, member_id, NULL, out);
}

/* The card of a request: CPOS_BAD_ARGUMENT for a number that is not a card's. */
static int card_for(const char *pan, Coalition__Card *card, char masked[PAN_MASKED_BYTES])
{
    if (pan == NULL || pan_check(pan) != PAN_OK)
        return CPOS_BAD_ARGUMENT;
    pan_mask(pan, masked);
    coalition__card__init(card);
    card->pan = (char *)pan;
    card->masked = masked;
    return CPOS_OK;
}

int cpos_earn_card(cpos_t *self, const char *txn_id, const char *pan, int64_t amount_minor,
                   const char *currency, cpos_result_t *out)
{
    Coalition__Card card;
    char masked[PAN_MASKED_BYTES];
    if (card_for(pan, &card, masked) != CPOS_OK)
        return CPOS_BAD_ARGUMENT;
    return earn_for(self, txn_id, "", &card, amount_minor, currency, out);
}

int cpos_burn_card(cpos_t *self, const char *txn_id, const char *pan, int64_t points,
                   bool allow_partial, cpos_result_t *out)
{
    Coalition__Card card;
    char masked[PAN_MASKED_BYTES];
    if (card_for(pan, &card, masked) != CPOS_OK)
        return CPOS_BAD_ARGUMENT;
    return burn_for(self, txn_id, "", &card, points, allow_partial, out);
}

int cpos_balance_card(cpos_t *self, const char *txn_id, const char *pan, cpos_result_t *out)
{
    Coalition__Card card;
    char masked[PAN_MASKED_BYTES];
    if (card_for(pan, &card, masked) != CPOS_OK)
        return CPOS_BAD_ARGUMENT;
    return balance_for(self, txn_id, "", &card, out);
}

int cpos_enroll(cpos_t *self, const char *txn_id, const char *member_id, cpos_result_t *out)
{
    envelope_t env;
    Coalition__EnrollRequest body = COALITION__ENROLL_REQUEST__INIT;
    envelope_for(self, &env, txn_id);
    body.member_id = (char *)member_id;
    env.body_case = COALITION__ENVELOPE__BODY_ENROLL;
    env.enroll = &body;
    return call(self, &env, out);
}
