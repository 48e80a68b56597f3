/* Token buckets; see ratelimit.h. Tokens are kept in thousandths so a refill at any rate
 * loses nothing to rounding over a millisecond. */
#include "ratelimit.h"

#include "errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_SCALE INT64_C(1000)
#define SLOTS (2 * RATELIMIT_PARTICIPANTS_MAX) /* open addressing, at most half full */

_Static_assert((SLOTS & (SLOTS - 1)) == 0, "slot count is a power of two");

typedef struct bucket {
    char participant[PARTNER_ID_LEN_MAX + 1]; /* "" : free slot */
    int64_t tokens_milli;
    int64_t last_ms;
} bucket_t;

struct ratelimit {
    bucket_t slots[SLOTS];
    size_t used;
};

int ratelimit_new(ratelimit_t **self_out)
{
    *self_out = calloc(1, sizeof **self_out);
    return *self_out != NULL ? CL_OK : CL_ERR_NOMEM;
}

void ratelimit_destroy(ratelimit_t **self_p)
{
    free(*self_p);
    *self_p = NULL;
}

static uint32_t hash_id(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static bucket_t *find_or_add(ratelimit_t *self, const char *participant, int64_t capacity,
                             int64_t now_ms)
{
    if (self->used >= RATELIMIT_PARTICIPANTS_MAX) {
        memset(self->slots, 0, sizeof self->slots);
        self->used = 0;
    }
    for (uint32_t i = hash_id(participant);; i++) {
        bucket_t *b = &self->slots[i & (SLOTS - 1)];
        if (strcmp(b->participant, participant) == 0)
            return b;
        if (b->participant[0] == '\0') {
            strncpy(b->participant, participant, PARTNER_ID_LEN_MAX);
            b->tokens_milli = capacity;
            b->last_ms = now_ms;
            self->used++;
            assert(self->used <= RATELIMIT_PARTICIPANTS_MAX);
            return b;
        }
    }
}

bool ratelimit_take(ratelimit_t *self, const char *participant, uint32_t per_second, int64_t now_ms)
{
    assert(self != NULL && wire_id_valid(participant, PARTNER_ID_LEN_MAX) && per_second > 0);
    int64_t capacity = (int64_t)per_second * TOKEN_SCALE;
    bucket_t *b = find_or_add(self, participant, capacity, now_ms);
    int64_t elapsed = now_ms > b->last_ms ? now_ms - b->last_ms : 0;
    b->last_ms = now_ms > b->last_ms ? now_ms : b->last_ms;
    /* per_second tokens a second = per_second thousandths of a token a millisecond. */
    int64_t refill = elapsed > 1000 ? capacity : elapsed * (int64_t)per_second;
    b->tokens_milli = b->tokens_milli + refill > capacity ? capacity : b->tokens_milli + refill;
    if (b->tokens_milli < TOKEN_SCALE)
        return false;
    b->tokens_milli -= TOKEN_SCALE;
    assert(b->tokens_milli >= 0 && b->tokens_milli <= capacity);
    return true;
}
