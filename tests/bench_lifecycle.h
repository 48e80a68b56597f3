/* bench_broker's points-lifecycle parts (bench_lifecycle.c): tiers, rules and an expiry
 * policy set up through coalitionctl (--lifecycle), lots seeded into a stopped broker's
 * ledger in process (--expiry-lots), and an expiry run through the running broker. */
#ifndef COALITION_BENCH_LIFECYCLE_H
#define COALITION_BENCH_LIFECYCLE_H

#include "harness.h"

#include <stdint.h>

/* Tiers (Base x1, Silver x1.25 from 30 qualifying points), a x1.5 campaign, a threshold
 * bonus and a first-earn bonus at `partner`, and an expiry policy (36-month term,
 * 12 months' inactivity). *entries: the journal entries written. 0 ok, -1 failed. */
int bench_lifecycle_setup(world_t *w, const char *admin, const char *partner, long *entries);

/* In process, into the ledger in `dir` (no broker running): an expiry policy of a
 * one-second term, then `per_member` earns of `amount_minor` for each of members
 * m0..m(members-1) at `partner` (each lot expires a second after its earn), then a
 * 36-month policy for what comes after. Prints progress and the rate. *points: what the
 * lots hold; *entries: journal entries written. 0 ok, -1 failed. */
int bench_lifecycle_seed(const char *dir, const char *partner, int members, int per_member,
                         int64_t amount_minor, int64_t *points, uint64_t *entries);

/* coalitionctl expire --as-of now through the broker: wall time, points expired and
 * journal entries written, from its --json line. 0 ok, -1 failed. */
int bench_lifecycle_expire(world_t *w, const char *admin, double *seconds, int64_t *points,
                           int64_t *entries);

#endif
