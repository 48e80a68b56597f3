/* bench_broker's journal-feed parts (bench_feed.c, --feed-subscribers N): N subscribers
 * of the broker's feed read every earn's entry while the earns run, and what they saw is
 * printed: lag from commit to receipt, lag in sequence numbers behind the newest approval
 * a client had been told of, and how many entries came live or were replayed. */
#ifndef COALITION_BENCH_FEED_H
#define COALITION_BENCH_FEED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define BENCH_FEED_SUBSCRIBERS_MAX 16

typedef struct bench_feed bench_feed_t;

/* The newest seq of a fresh approval any earn client has received (its stream threads
 * raise it), for the subscribers' seq lag. */
extern _Atomic uint64_t bench_feed_reply_seq_max;
void bench_feed_saw_reply(uint64_t seq);

/* Before the earns: `n` subscribers of the feed in ledger `dir` from seq from (subscribed,
 * and their first replay answered), each reading up to seq `last`. NULL on failure. */
bench_feed_t *bench_feed_start(const char *dir, int n, uint64_t from, uint64_t last);
/* After the earns: wait for each subscriber to reach `last` (or give up after a pause in
 * the feed), print the figures; true when every subscriber got every seq once, in order. */
bool bench_feed_finish(bench_feed_t *f);

#endif
