/* bench_broker --feed-subscribers: see bench_feed.h. Lag is taken per live entry as the
 * receipt time (wall clock, when its message arrived) less the commit time its batch
 * carries (the writer's clock right after the commit of the batch's newest entry: exact
 * while the feed keeps up, a lower bound for entries of earlier commits in one batch); and
 * as the receipt time less the entry's own time (the writer's clock when its round began,
 * ms resolution: an upper bound that includes the commit's fsync). Replayed entries (the
 * feed dropped them for a slow subscriber) are counted apart, not in the lag. */
#include "bench_feed.h"

#include "clock.h"
#include "errors.h"
#include "feed_client.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_FEED_START_TIMEOUT_MS 10000
/* A subscriber that gets nothing for this long gives up (the earns failed). */
#define BENCH_FEED_IDLE_MAX_MS 20000
#define USEC_PER_MSEC 1000.0

_Atomic uint64_t bench_feed_reply_seq_max;

void bench_feed_saw_reply(uint64_t seq)
{
    uint64_t seen = atomic_load_explicit(&bench_feed_reply_seq_max, memory_order_relaxed);
    while (seq > seen &&
           !atomic_compare_exchange_weak_explicit(&bench_feed_reply_seq_max, &seen, seq,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

typedef struct subscriber {
    feed_client_t *client;
    pthread_t thread;
    bool started;
    uint64_t from, last, received, out_of_order;
    int64_t *commit_lag_us, *entry_lag_us, *seq_lag;
    size_t live;
    int rc;
    feed_client_stats_t stats;
} subscriber_t;

struct bench_feed {
    int n;
    uint64_t from, last;
    subscriber_t subs[BENCH_FEED_SUBSCRIBERS_MAX];
};

static void record(subscriber_t *s, const feed_item_t *item)
{
    uint64_t newest = atomic_load_explicit(&bench_feed_reply_seq_max, memory_order_relaxed);
    assert(s->live < (size_t)(s->last - s->from + 1));
    s->commit_lag_us[s->live] = item->commit_us > 0 ? item->received_us - item->commit_us : 0;
    s->entry_lag_us[s->live] = item->received_us - item->entry->time_ms * 1000;
    s->seq_lag[s->live] = newest > item->entry->seq ? (int64_t)(newest - item->entry->seq) : 0;
    s->live++;
}

static void *subscriber_main(void *arg)
{
    subscriber_t *s = arg;
    uint64_t expect = s->from;
    while (expect <= s->last) {
        feed_item_t item;
        s->rc = feed_client_next(s->client, BENCH_FEED_IDLE_MAX_MS, &item);
        if (s->rc != CL_OK)
            break;
        s->received++;
        s->out_of_order += item.entry->seq != expect;
        expect = item.entry->seq + 1;
        if (item.live)
            record(s, &item);
    }
    feed_client_stats(s->client, &s->stats);
    return NULL;
}

static int subscriber_open(subscriber_t *s, const char *dir, uint64_t from, uint64_t last)
{
    char pub[600], replay[600];
    snprintf(pub, sizeof pub, "ipc://%s/feed.sock", dir);
    snprintf(replay, sizeof replay, "ipc://%s/feed-replay.sock", dir);
    size_t n = (size_t)(last - from + 1);
    s->from = from;
    s->last = last;
    s->commit_lag_us = calloc(n, sizeof *s->commit_lag_us);
    s->entry_lag_us = calloc(n, sizeof *s->entry_lag_us);
    s->seq_lag = calloc(n, sizeof *s->seq_lag);
    if (s->commit_lag_us == NULL || s->entry_lag_us == NULL || s->seq_lag == NULL)
        return CL_ERR_NOMEM;
    feed_client_options_t o = {pub, replay, from, true, 0, NULL, NULL};
    uint64_t told = 0;
    int rc = feed_client_new(&s->client, &o);
    if (rc == CL_OK)
        rc = feed_client_start(s->client, BENCH_FEED_START_TIMEOUT_MS, &told);
    if (rc != CL_OK)
        fprintf(stderr, "bench_broker: feed subscriber on %s: %s\n", replay, cl_strerror(rc));
    return rc;
}

static void subscriber_free(subscriber_t *s)
{
    feed_client_destroy(&s->client);
    free(s->commit_lag_us);
    free(s->entry_lag_us);
    free(s->seq_lag);
}

bench_feed_t *bench_feed_start(const char *dir, int n, uint64_t from, uint64_t last)
{
    assert(n >= 1 && n <= BENCH_FEED_SUBSCRIBERS_MAX && from >= 1 && last >= from);
    bench_feed_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->n = n;
    f->from = from;
    f->last = last;
    int rc = CL_OK;
    for (int i = 0; i < n && rc == CL_OK; i++)
        rc = subscriber_open(&f->subs[i], dir, from, last);
    for (int i = 0; i < n && rc == CL_OK; i++) {
        rc = pthread_create(&f->subs[i].thread, NULL, subscriber_main, &f->subs[i]) == 0
                 ? CL_OK
                 : CL_ERR_NOMEM;
        f->subs[i].started = rc == CL_OK;
    }
    if (rc != CL_OK) {
        bench_feed_finish(f);
        return NULL;
    }
    return f;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank, as bench_broker's latency figures. */
static int64_t pct(const int64_t *sorted, size_t n, int p)
{
    size_t rank = (n * (size_t)p + 99) / 100;
    return n == 0 ? 0 : sorted[rank > 0 ? rank - 1 : 0];
}

typedef enum { LAG_COMMIT, LAG_ENTRY, LAG_SEQ } lag_kind_t;

static const int64_t *lag_values(const subscriber_t *s, lag_kind_t kind)
{
    return kind == LAG_COMMIT ? s->commit_lag_us : kind == LAG_ENTRY ? s->entry_lag_us : s->seq_lag;
}

/* The figures of one kind of lag over every subscriber's live entries. */
static void print_lag(const bench_feed_t *f, lag_kind_t kind, const char *what)
{
    size_t total = 0;
    for (int i = 0; i < f->n; i++)
        total += f->subs[i].live;
    int64_t *all = calloc(total > 0 ? total : 1, sizeof *all);
    if (all == NULL)
        return;
    size_t k = 0;
    for (int i = 0; i < f->n; i++) {
        if (f->subs[i].live > 0)
            memcpy(all + k, lag_values(&f->subs[i], kind), f->subs[i].live * sizeof *all);
        k += f->subs[i].live;
    }
    assert(k == total);
    qsort(all, k, sizeof *all, cmp_i64);
    double scale = kind == LAG_SEQ ? 1.0 : USEC_PER_MSEC;
    printf("feed: %s: p50 %.2f, p99 %.2f, max %.2f%s (%zu live entries)\n", what,
           (double)pct(all, k, 50) / scale, (double)pct(all, k, 99) / scale,
           k > 0 ? (double)all[k - 1] / scale : 0.0, kind == LAG_SEQ ? "" : " ms", k);
    free(all);
}

bool bench_feed_finish(bench_feed_t *f)
{
    bool ok = true;
    uint64_t want = f->last - f->from + 1;
    for (int i = 0; i < f->n; i++) {
        subscriber_t *s = &f->subs[i];
        if (s->started)
            pthread_join(s->thread, NULL);
        bool all = s->started && s->received == want && s->out_of_order == 0;
        ok = ok && all;
        printf("feed: subscriber %d: %" PRIu64 " of %" PRIu64 " entries (%" PRIu64 " live, %" PRIu64
               " replayed), %" PRIu64 " gap(s) filled, %" PRIu64
               " replay answer(s), out of order %" PRIu64 ": %s\n",
               i, s->received, want, s->stats.live, s->stats.replayed, s->stats.gaps,
               s->stats.replays, s->out_of_order,
               all ? "OK" : (s->rc != CL_OK ? cl_strerror(s->rc) : "MISSING"));
    }
    print_lag(f, LAG_COMMIT, "lag commit -> receipt");
    print_lag(f, LAG_ENTRY, "lag entry time -> receipt (upper bound)");
    print_lag(f, LAG_SEQ, "seq lag behind the newest approval a client had");
    for (int i = 0; i < f->n; i++)
        subscriber_free(&f->subs[i]);
    free(f);
    return ok;
}
