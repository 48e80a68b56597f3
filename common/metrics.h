/* Process metrics in the Prometheus text exposition format (0.0.4): counters, gauges and
 * fixed-bucket histograms. Families and label tables are registered once, before any
 * thread updates them; updates are relaxed C11 atomics from any thread (no lock, no
 * syscall); metrics_render reads them from another thread (the HTTP listener's).
 * Label cardinality is bounded: a label table holds at most its capacity of values, and
 * every value past that is counted under the table's overflow value ("other"). */
#ifndef COALITION_METRICS_H
#define COALITION_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_FAMILIES_MAX 48
#define METRICS_LABEL_TABLES_MAX 8
/* Values one label table holds, its overflow value aside. */
#define METRICS_LABEL_VALUES_MAX 512
#define METRICS_LABEL_BYTES_MAX 64 /* a value, its NUL included */
#define METRICS_NAME_BYTES_MAX 80
#define METRICS_HELP_BYTES_MAX 240
#define METRICS_BUCKETS_MAX 24 /* histogram buckets, +Inf aside */
/* Cells of one labelled family: both label tables full, overflow values included. */
#define METRICS_CELLS_MAX ((size_t)200000)
/* The rendered text at most (a scrape of every cell of every family fits). */
#define METRICS_TEXT_BYTES_MAX ((size_t)16 << 20)
/* Content-Type of the rendered text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

_Static_assert(METRICS_LABEL_VALUES_MAX < UINT16_MAX, "label indexes fit the hash index");
_Static_assert(METRICS_CELLS_MAX >= (size_t)(METRICS_LABEL_VALUES_MAX + 1) * 128,
               "a full table by a hundred response codes (and overflow) fits one family");

typedef struct metrics metrics_t;
typedef struct metrics_labels metrics_labels_t;
typedef struct metrics_family metrics_family_t;

int metrics_new(metrics_t **self_out);
void metrics_destroy(metrics_t **self_p);

/* Registration (before any update; NULL when a limit or memory runs out). `name` is a
 * Prometheus metric or label name; `help` one line. */
metrics_labels_t *metrics_labels(metrics_t *self, const char *name, size_t capacity,
                                 const char *overflow);
/* A counter with up to two labels (NULL: none); cell (a, b) by label indexes. */
metrics_family_t *metrics_counter(metrics_t *self, const char *name, const char *help,
                                  metrics_labels_t *a, metrics_labels_t *b);
metrics_family_t *metrics_gauge(metrics_t *self, const char *name, const char *help);
/* A gauge that holds a wall-clock time in ms and renders the seconds since then (0 while
 * it holds 0): an age measured when scraped, not when last set. */
metrics_family_t *metrics_age(metrics_t *self, const char *name, const char *help);
/* Histogram of integer observations; `bounds` (ascending, in the observed unit) are the
 * upper bounds of the buckets, rendered times `scale` (1e-6 for microseconds as seconds). */
metrics_family_t *metrics_histogram(metrics_t *self, const char *name, const char *help,
                                    const uint64_t *bounds, size_t n, double scale);

/* The index of `value` in the table, added if new, or the overflow index when the table
 * is full or the value too long. Adding is for one thread only (the first that adds);
 * finding is for that thread too. */
size_t metrics_label_index(metrics_labels_t *labels, const char *value);
/* The same without adding: the overflow index for a value not in the table. */
size_t metrics_label_find(metrics_labels_t *labels, const char *value);
size_t metrics_label_overflow(const metrics_labels_t *labels);

/* Updates, from any thread. */
void metrics_add(metrics_family_t *f, size_t a, size_t b, uint64_t n);
void metrics_set(metrics_family_t *f, int64_t value);
void metrics_gauge_add(metrics_family_t *f, int64_t delta);
void metrics_observe(metrics_family_t *f, uint64_t value);

/* Reads (tests, and the owner of a gauge). */
uint64_t metrics_counter_value(const metrics_family_t *f, size_t a, size_t b);
int64_t metrics_gauge_value(const metrics_family_t *f);

/* The exposition text, malloc'd and NUL-terminated: every family with HELP and TYPE;
 * labelled counters only where non-zero. CL_ERR_OVERFLOW past METRICS_TEXT_BYTES_MAX. */
int metrics_render(const metrics_t *self, char **text_out, size_t *len_out);

#endif
