/* Pending requests, their lifecycle table, and the two indexes the agent keeps them in
 * (a keyed map and a timer heap); see pending.h for the diagram. */
#include "pending.h"

#include "card.h"

#include "errors.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(((pending_t *)0)->txn_id) == TXN_ID_LEN_MAX + 1,
               "a txn id buffer holds the longest valid txn id and its NUL");
_Static_assert(sizeof(((pending_t *)0)->original_txn_id) == TXN_ID_LEN_MAX + 1,
               "an original txn id is a txn id");
_Static_assert(sizeof(((pending_t *)0)->member_id) == MEMBER_ID_LEN_MAX + 1,
               "a member id buffer holds the longest valid member id and its NUL");
_Static_assert(PENDING_WAITERS_MAX >= 2, "a repeated request must be able to join");

/* allowed[from][to]: the transitions drawn in pending.h, and no others. */
static const bool allowed[PENDING_STATE_COUNT][PENDING_STATE_COUNT] = {
    [PENDING_QUEUED] = {[PENDING_IN_FLIGHT] = true,
                        [PENDING_BACKOFF] = true,
                        [PENDING_BLOCKED] = true,
                        [PENDING_REVOKED] = true},
    [PENDING_IN_FLIGHT] =
        {[PENDING_QUEUED] = true, [PENDING_BACKOFF] = true, [PENDING_REVOKED] = true},
    [PENDING_BACKOFF] = {[PENDING_QUEUED] = true, [PENDING_REVOKED] = true},
    [PENDING_BLOCKED] = {[PENDING_QUEUED] = true, [PENDING_REVOKED] = true},
    [PENDING_REVOKED] = {[PENDING_REVOKED] = false},
};

void pending_set_state(pending_t *self, pending_state_t to)
{
    assert(self->state < PENDING_STATE_COUNT && to < PENDING_STATE_COUNT);
    assert(allowed[self->state][to]);
    (void)allowed; /* a build with NDEBUG keeps the table, unused */
    /* Only a burn is ever revoked, and only a request with no dependency is queued. */
    assert(to != PENDING_REVOKED || (pending_revocable(self) && self->known_reply == NULL));
    assert(to != PENDING_QUEUED || self->blocked_on == NULL);
    assert(to != PENDING_BLOCKED || self->blocked_on != NULL);
    self->state = to;
    assert(self->state == to);
}

const char *pending_state_name(pending_state_t state)
{
    switch (state) {
    case PENDING_QUEUED: return "queued";
    case PENDING_IN_FLIGHT: return "in-flight";
    case PENDING_BACKOFF: return "backoff";
    case PENDING_BLOCKED: return "blocked";
    case PENDING_REVOKED: return "revoked";
    default: return "unknown";
    }
}

bool pending_store_and_forward(Coalition__Envelope__BodyCase kind)
{
    return kind == COALITION__ENVELOPE__BODY_EARN || kind == COALITION__ENVELOPE__BODY_REFUND ||
           kind == COALITION__ENVELOPE__BODY_VOID_REQUEST ||
           kind == COALITION__ENVELOPE__BODY_ENROLL;
}

bool pending_revocable(const pending_t *self)
{
    return self->kind == COALITION__ENVELOPE__BODY_BURN;
}

bool pending_stored_offline(const pending_t *self)
{
    return pending_store_and_forward(self->kind) && (!self->by_card || self->attempts > 0);
}

pending_t *pending_new(const envelope_t *env, const char *own_site, uint8_t *bytes, size_t len)
{
    assert(wire_id_valid(env->txn_id, TXN_ID_LEN_MAX));
    pending_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    if (wire_request_hash(env, p->hash) != CL_OK) {
        free(p);
        return NULL;
    }
    snprintf(p->txn_id, sizeof p->txn_id, "%s", env->txn_id);
    snprintf(p->member_id, sizeof p->member_id, "%s", wire_member_of(env));
    const char *original = wire_original_txn(env);
    if (original != NULL && strcmp(wire_original_site(env), own_site) == 0)
        snprintf(p->original_txn_id, sizeof p->original_txn_id, "%s", original);
    p->state = PENDING_QUEUED;
    p->kind = env->body_case;
    const Coalition__Card *cards[2];
    p->by_card = wire_cards_of(env, cards) > 0;
    p->envelope = bytes;
    p->envelope_len = len;
    p->heap_index = PENDING_NOT_IN_HEAP;
    p->by_txn.key = p->txn_id;
    p->by_enrol.key = p->member_id;
    assert(p->outbox_seq == 0 && p->attempts == 0 && p->waiter_count == 0);
    return p;
}

void pending_free(pending_t **self_p)
{
    pending_t *self = *self_p;
    if (self == NULL)
        return;
    assert(self->heap_index == PENDING_NOT_IN_HEAP);
    free(self->known_reply);
    free(self->envelope);
    pan_clear(self->secret, self->secret_len);
    free(self->secret);
    free(self);
    *self_p = NULL;
}

bool pending_add_waiter(pending_t *self, const peer_t *till, int64_t deadline_ms)
{
    if (self->waiter_count >= PENDING_WAITERS_MAX)
        return false;
    self->waiters[self->waiter_count].till = *till;
    self->waiters[self->waiter_count].deadline_ms = deadline_ms;
    self->waiter_count++;
    assert(self->waiter_count <= PENDING_WAITERS_MAX &&
           pending_first_deadline(self) <= deadline_ms);
    return true;
}

int64_t pending_first_deadline(const pending_t *self)
{
    int64_t first = INT64_MAX;
    for (size_t i = 0; i < self->waiter_count; i++) {
        if (self->waiters[i].deadline_ms < first)
            first = self->waiters[i].deadline_ms;
    }
    return first;
}

/* ---- keyed map --------------------------------------------------------------------- */

struct pending_map {
    map_link_t **buckets;
    size_t mask, count;
};

static size_t key_hash(const char *key)
{
    uint64_t h = UINT64_C(1469598103934665603); /* FNV-1a */
    for (const unsigned char *s = (const unsigned char *)key; *s != '\0'; s++)
        h = (h ^ *s) * UINT64_C(1099511628211);
    return (size_t)h;
}

int pending_map_new(pending_map_t **self_out, size_t buckets)
{
    assert(buckets > 0 && (buckets & (buckets - 1)) == 0);
    pending_map_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->buckets = calloc(buckets, sizeof *self->buckets);
    if (self->buckets == NULL) {
        free(self);
        return CL_ERR_NOMEM;
    }
    self->mask = buckets - 1;
    *self_out = self;
    return CL_OK;
}

void pending_map_destroy(pending_map_t **self_p)
{
    pending_map_t *self = *self_p;
    if (self == NULL)
        return;
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

void pending_map_put(pending_map_t *self, map_link_t *link)
{
    assert(pending_map_get(self, link->key) == NULL); /* one request per key */
    map_link_t **bucket = &self->buckets[key_hash(link->key) & self->mask];
    link->next = *bucket;
    *bucket = link;
    self->count++;
    assert(pending_map_get(self, link->key) == link);
}

map_link_t *pending_map_get(const pending_map_t *self, const char *key)
{
    map_link_t *l = self->buckets[key_hash(key) & self->mask];
    while (l != NULL && strcmp(l->key, key) != 0)
        l = l->next;
    return l;
}

void pending_map_remove(pending_map_t *self, map_link_t *link)
{
    map_link_t **at = &self->buckets[key_hash(link->key) & self->mask];
    while (*at != NULL && *at != link)
        at = &(*at)->next;
    assert(*at == link);
    *at = link->next;
    link->next = NULL;
    self->count--;
    assert(pending_map_get(self, link->key) != link);
}

size_t pending_map_count(const pending_map_t *self) { return self->count; }

map_link_t *pending_map_take(pending_map_t *self)
{
    for (size_t i = 0; self->count > 0 && i <= self->mask; i++) {
        map_link_t *l = self->buckets[i];
        if (l != NULL) {
            self->buckets[i] = l->next;
            l->next = NULL;
            self->count--;
            return l;
        }
    }
    return NULL;
}

/* ---- timer heap -------------------------------------------------------------------- */

struct pending_heap {
    pending_t **items;
    size_t count, capacity;
};

int pending_heap_new(pending_heap_t **self_out, size_t capacity)
{
    pending_heap_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    self->items = calloc(capacity, sizeof *self->items);
    if (self->items == NULL) {
        free(self);
        return CL_ERR_NOMEM;
    }
    self->capacity = capacity;
    *self_out = self;
    return CL_OK;
}

void pending_heap_destroy(pending_heap_t **self_p)
{
    pending_heap_t *self = *self_p;
    if (self == NULL)
        return;
    for (size_t i = 0; i < self->count; i++)
        self->items[i]->heap_index = PENDING_NOT_IN_HEAP;
    free(self->items);
    free(self);
    *self_p = NULL;
}

static void heap_place(pending_heap_t *self, size_t i, pending_t *p)
{
    assert(i < self->count);
    self->items[i] = p;
    p->heap_index = i;
}

static void sift_up(pending_heap_t *self, size_t i)
{
    pending_t *p = self->items[i];
    while (i > 0 && self->items[(i - 1) / 2]->due_ms > p->due_ms) {
        heap_place(self, i, self->items[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_place(self, i, p);
    assert(i == 0 || self->items[(i - 1) / 2]->due_ms <= p->due_ms); /* heap order above */
}

static void sift_down(pending_heap_t *self, size_t i)
{
    pending_t *p = self->items[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= self->count)
            break;
        if (child + 1 < self->count && self->items[child + 1]->due_ms < self->items[child]->due_ms)
            child++;
        if (self->items[child]->due_ms >= p->due_ms)
            break;
        heap_place(self, i, self->items[child]);
        i = child;
    }
    heap_place(self, i, p);
    assert(2 * i + 1 >= self->count || self->items[2 * i + 1]->due_ms >= p->due_ms);
}

static void heap_remove(pending_heap_t *self, pending_t *p)
{
    size_t i = p->heap_index;
    assert(i < self->count && self->items[i] == p);
    pending_t *last = self->items[--self->count];
    p->heap_index = PENDING_NOT_IN_HEAP;
    if (last == p)
        return;
    heap_place(self, i, last);
    sift_up(self, i);
    sift_down(self, last->heap_index);
}

int pending_heap_schedule(pending_heap_t *self, pending_t *p, int64_t due_ms)
{
    if (p->heap_index != PENDING_NOT_IN_HEAP)
        heap_remove(self, p);
    if (due_ms == INT64_MAX)
        return CL_OK;
    if (self->count >= self->capacity)
        return CL_ERR_OVERFLOW;
    p->due_ms = due_ms;
    heap_place(self, self->count++, p);
    sift_up(self, p->heap_index);
    return CL_OK;
}

pending_t *pending_heap_pop_due(pending_heap_t *self, int64_t now_ms)
{
    if (self->count == 0 || self->items[0]->due_ms > now_ms)
        return NULL;
    pending_t *p = self->items[0];
    heap_remove(self, p);
    assert(p->heap_index == PENDING_NOT_IN_HEAP && p->due_ms <= now_ms);
    return p;
}

size_t pending_heap_count(const pending_heap_t *self) { return self->count; }
