/* Per-participant request rate: a token bucket per authenticated participant, refilled
 * at its partner's requests_per_second and holding at most one second's worth. In memory
 * only (a restart refills every bucket); one thread (the front end). The table holds at
 * most RATELIMIT_PARTICIPANTS_MAX participants; when a new one finds it full, every
 * bucket is refilled and the table starts over, so memory never grows with the peers. */
#ifndef COALITION_RATELIMIT_H
#define COALITION_RATELIMIT_H

#include "wire.h"

#include <stdbool.h>
#include <stdint.h>

#define RATELIMIT_PARTICIPANTS_MAX 1024

typedef struct ratelimit ratelimit_t;

int ratelimit_new(ratelimit_t **self_out);
void ratelimit_destroy(ratelimit_t **self_p);
/* Take one token from `participant`'s bucket at monotonic time now_ms; false when empty. */
bool ratelimit_take(ratelimit_t *self, const char *participant, uint32_t per_second,
                    int64_t now_ms);

#endif
