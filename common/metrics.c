/* Metrics registry and text exposition; see metrics.h. Cells are relaxed atomics: a
 * scrape sees each cell's value at some moment, not one instant for all. A histogram's
 * buckets are read once and its count is their sum, so +Inf always equals _count.
 * A label table publishes each new value before its count (release; the renderer
 * acquires), so the renderer never reads a value that is not written yet. */
#include "metrics.h"

#include "clock.h"
#include "errors.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_BYTES_INITIAL ((size_t)16 << 10)
_Static_assert(TEXT_BYTES_INITIAL <= METRICS_TEXT_BYTES_MAX, "the first buffer is allowed");

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_AGE, KIND_HISTOGRAM } kind_t;

struct metrics_labels {
    char name[METRICS_NAME_BYTES_MAX];
    char overflow[METRICS_LABEL_BYTES_MAX];
    size_t capacity;
    char (*values)[METRICS_LABEL_BYTES_MAX];
    _Atomic size_t count;
    uint16_t *index; /* open addressing: value index + 1, 0 empty; the adding thread's */
    size_t index_slots;
    pthread_t owner;
    bool owned;
};

struct metrics_family {
    kind_t kind;
    char name[METRICS_NAME_BYTES_MAX];
    char help[METRICS_HELP_BYTES_MAX];
    metrics_labels_t *dims[2];
    size_t width[2];         /* cells along each label: capacity + overflow, or 1 */
    _Atomic uint64_t *cells; /* counters: width[0] x width[1]; histograms: buckets, +Inf */
    _Atomic int64_t value;   /* gauges */
    _Atomic uint64_t sum;    /* histograms */
    uint64_t bounds[METRICS_BUCKETS_MAX];
    size_t n_bounds;
    double scale;
};

struct metrics {
    metrics_family_t families[METRICS_FAMILIES_MAX];
    size_t n_families;
    metrics_labels_t tables[METRICS_LABEL_TABLES_MAX];
    size_t n_tables;
};

int metrics_new(metrics_t **self_out)
{
    metrics_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return CL_ERR_NOMEM;
    *self_out = self;
    return CL_OK;
}

void metrics_destroy(metrics_t **self_p)
{
    metrics_t *self = *self_p;
    if (self == NULL)
        return;
    for (size_t i = 0; i < self->n_families; i++)
        free(self->families[i].cells);
    for (size_t i = 0; i < self->n_tables; i++) {
        free(self->tables[i].values);
        free(self->tables[i].index);
    }
    free(self);
    *self_p = NULL;
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= METRICS_NAME_BYTES_MAX || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == ':';
        if (!ok)
            return false;
    }
    return true;
}

metrics_labels_t *metrics_labels(metrics_t *self, const char *name, size_t capacity,
                                 const char *overflow)
{
    assert(valid_name(name) && strlen(overflow) < METRICS_LABEL_BYTES_MAX);
    assert(capacity > 0 && capacity <= METRICS_LABEL_VALUES_MAX);
    if (self->n_tables == METRICS_LABEL_TABLES_MAX)
        return NULL;
    metrics_labels_t *l = &self->tables[self->n_tables];
    memset(l, 0, sizeof *l);
    l->index_slots = 1;
    while (l->index_slots < 2 * capacity)
        l->index_slots <<= 1;
    l->values = calloc(capacity, sizeof *l->values);
    l->index = calloc(l->index_slots, sizeof *l->index);
    if (l->values == NULL || l->index == NULL) {
        free(l->values);
        free(l->index);
        return NULL;
    }
    snprintf(l->name, sizeof l->name, "%s", name);
    snprintf(l->overflow, sizeof l->overflow, "%s", overflow);
    l->capacity = capacity;
    atomic_init(&l->count, 0);
    self->n_tables++;
    return l;
}

size_t metrics_label_overflow(const metrics_labels_t *labels) { return labels->capacity; }

/* Find `value`, adding it when `add` and there is room. */
static size_t label_lookup(metrics_labels_t *l, const char *value, bool add)
{
    size_t len = strnlen(value, METRICS_LABEL_BYTES_MAX);
    if (len == METRICS_LABEL_BYTES_MAX)
        return l->capacity;
    if (!l->owned) {
        l->owner = pthread_self();
        l->owned = true;
    }
    assert(pthread_equal(l->owner, pthread_self())); /* one thread adds and finds */
    uint32_t h = 2166136261u;                        /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)value[i]) * 16777619u;
    size_t mask = l->index_slots - 1;
    size_t count = atomic_load_explicit(&l->count, memory_order_relaxed);
    for (size_t probe = 0, slot = h & mask; probe < l->index_slots;
         probe++, slot = (slot + 1) & mask) {
        if (l->index[slot] == 0) {
            if (!add || count == l->capacity)
                return l->capacity;
            memcpy(l->values[count], value, len + 1);
            l->index[slot] = (uint16_t)(count + 1);
            atomic_store_explicit(&l->count, count + 1, memory_order_release);
            return count;
        }
        size_t i = (size_t)l->index[slot] - 1;
        if (strcmp(l->values[i], value) == 0)
            return i;
    }
    return l->capacity; /* not reached: the index is at most half full */
}

size_t metrics_label_index(metrics_labels_t *l, const char *value)
{
    return label_lookup(l, value, true);
}

size_t metrics_label_find(metrics_labels_t *l, const char *value)
{
    return label_lookup(l, value, false);
}

static metrics_family_t *family(metrics_t *self, kind_t kind, const char *name, const char *help)
{
    assert(valid_name(name) && strlen(help) < METRICS_HELP_BYTES_MAX && !strchr(help, '\n'));
    if (self->n_families == METRICS_FAMILIES_MAX)
        return NULL;
    metrics_family_t *f = &self->families[self->n_families];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->help, sizeof f->help, "%s", help);
    f->width[0] = f->width[1] = 1;
    atomic_init(&f->value, 0);
    atomic_init(&f->sum, 0);
    return f;
}

static metrics_family_t *with_cells(metrics_t *self, metrics_family_t *f, size_t n)
{
    assert(n > 0 && n <= METRICS_CELLS_MAX);
    f->cells = calloc(n, sizeof *f->cells);
    if (f->cells == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        atomic_init(&f->cells[i], 0);
    self->n_families++;
    return f;
}

metrics_family_t *metrics_counter(metrics_t *self, const char *name, const char *help,
                                  metrics_labels_t *a, metrics_labels_t *b)
{
    assert(a != NULL || b == NULL);
    metrics_family_t *f = family(self, KIND_COUNTER, name, help);
    if (f == NULL)
        return NULL;
    f->dims[0] = a;
    f->dims[1] = b;
    for (size_t d = 0; d < 2; d++)
        f->width[d] = f->dims[d] != NULL ? f->dims[d]->capacity + 1 : 1;
    if (f->width[0] * f->width[1] > METRICS_CELLS_MAX)
        return NULL;
    return with_cells(self, f, f->width[0] * f->width[1]);
}

static metrics_family_t *scalar(metrics_t *self, kind_t kind, const char *name, const char *help)
{
    metrics_family_t *f = family(self, kind, name, help);
    if (f != NULL)
        self->n_families++;
    return f;
}

metrics_family_t *metrics_gauge(metrics_t *self, const char *name, const char *help)
{
    return scalar(self, KIND_GAUGE, name, help);
}

metrics_family_t *metrics_age(metrics_t *self, const char *name, const char *help)
{
    return scalar(self, KIND_AGE, name, help);
}

metrics_family_t *metrics_histogram(metrics_t *self, const char *name, const char *help,
                                    const uint64_t *bounds, size_t n, double scale)
{
    assert(n > 0 && n <= METRICS_BUCKETS_MAX && scale > 0);
    for (size_t i = 1; i < n; i++)
        assert(bounds[i - 1] < bounds[i]);
    metrics_family_t *f = family(self, KIND_HISTOGRAM, name, help);
    if (f == NULL)
        return NULL;
    memcpy(f->bounds, bounds, n * sizeof *bounds);
    f->n_bounds = n;
    f->scale = scale;
    return with_cells(self, f, n + 1);
}

void metrics_add(metrics_family_t *f, size_t a, size_t b, uint64_t n)
{
    assert(f->kind == KIND_COUNTER && a < f->width[0] && b < f->width[1]);
    atomic_fetch_add_explicit(&f->cells[a * f->width[1] + b], n, memory_order_relaxed);
}

void metrics_set(metrics_family_t *f, int64_t value)
{
    assert(f->kind == KIND_GAUGE || f->kind == KIND_AGE);
    atomic_store_explicit(&f->value, value, memory_order_relaxed);
}

void metrics_gauge_add(metrics_family_t *f, int64_t delta)
{
    assert(f->kind == KIND_GAUGE);
    atomic_fetch_add_explicit(&f->value, delta, memory_order_relaxed);
}

void metrics_observe(metrics_family_t *f, uint64_t value)
{
    assert(f->kind == KIND_HISTOGRAM);
    size_t i = 0;
    while (i < f->n_bounds && value > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&f->cells[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&f->sum, value, memory_order_relaxed);
}

uint64_t metrics_counter_value(const metrics_family_t *f, size_t a, size_t b)
{
    assert(f->kind == KIND_COUNTER && a < f->width[0] && b < f->width[1]);
    return atomic_load_explicit(&f->cells[a * f->width[1] + b], memory_order_relaxed);
}

int64_t metrics_gauge_value(const metrics_family_t *f)
{
    assert(f->kind != KIND_COUNTER && f->kind != KIND_HISTOGRAM);
    return atomic_load_explicit(&f->value, memory_order_relaxed);
}

/* ---- rendering ---------------------------------------------------------------------- */

typedef struct text {
    char *buf;
    size_t len, cap;
    bool overflow;
} text_t;

static void put(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_t *t, const char *fmt, ...)
{
    while (!t->overflow) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->overflow = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        char *bigger = t->cap * 2 <= METRICS_TEXT_BYTES_MAX ? realloc(t->buf, t->cap * 2) : NULL;
        if (bigger == NULL) {
            t->overflow = true;
            return;
        }
        t->buf = bigger;
        t->cap *= 2;
    }
}

/* A label value with \, " and newline escaped. */
static void put_value(text_t *t, const char *v)
{
    char out[2 * METRICS_LABEL_BYTES_MAX];
    size_t o = 0;
    for (size_t i = 0; v[i] != '\0' && i < METRICS_LABEL_BYTES_MAX; i++) {
        if (v[i] == '\\' || v[i] == '"' || v[i] == '\n')
            out[o++] = '\\';
        out[o++] = v[i] == '\n' ? 'n' : v[i];
    }
    assert(o < sizeof out);
    out[o] = '\0';
    put(t, "%s", out);
}

static const char *label_value(const metrics_labels_t *l, size_t i, size_t count)
{
    assert(i < count || i == l->capacity);
    return i < count ? l->values[i] : l->overflow;
}

/* A cell of a label value the renderer's count does not cover yet (added since it read
 * the count): left for the next scrape, not rendered as the overflow value (which would
 * make duplicate series of it). */
static bool unpublished(const metrics_family_t *f, size_t d, size_t i, size_t count)
{
    return f->dims[d] != NULL && i >= count && i < f->dims[d]->capacity;
}

static void put_counter(text_t *t, const metrics_family_t *f)
{
    size_t counts[2] = {0, 0};
    for (size_t d = 0; d < 2; d++)
        counts[d] =
            f->dims[d] != NULL ? atomic_load_explicit(&f->dims[d]->count, memory_order_acquire) : 0;
    for (size_t a = 0; a < f->width[0]; a++) {
        for (size_t b = 0; b < f->width[1]; b++) {
            bool labelled = f->dims[0] != NULL;
            uint64_t v = atomic_load_explicit(&f->cells[a * f->width[1] + b], memory_order_relaxed);
            if ((labelled && v == 0) || unpublished(f, 0, a, counts[0]) ||
                unpublished(f, 1, b, counts[1]))
                continue;
            put(t, "%s", f->name);
            if (labelled) {
                put(t, "{%s=\"", f->dims[0]->name);
                put_value(t, label_value(f->dims[0], a, counts[0]));
                if (f->dims[1] != NULL) {
                    put(t, "\",%s=\"", f->dims[1]->name);
                    put_value(t, label_value(f->dims[1], b, counts[1]));
                }
                put(t, "\"}");
            }
            put(t, " %llu\n", (unsigned long long)v);
        }
    }
}

static void put_histogram(text_t *t, const metrics_family_t *f)
{
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= f->n_bounds; i++) {
        cumulative += atomic_load_explicit(&f->cells[i], memory_order_relaxed);
        if (i < f->n_bounds)
            put(t, "%s_bucket{le=\"%.9g\"} %llu\n", f->name, (double)f->bounds[i] * f->scale,
                (unsigned long long)cumulative);
        else
            put(t, "%s_bucket{le=\"+Inf\"} %llu\n", f->name, (unsigned long long)cumulative);
    }
    double sum = (double)atomic_load_explicit(&f->sum, memory_order_relaxed) * f->scale;
    put(t, "%s_sum %.9g\n%s_count %llu\n", f->name, sum, f->name, (unsigned long long)cumulative);
}

static void put_family(text_t *t, const metrics_family_t *f)
{
    static const char *const types[] = {"counter", "gauge", "gauge", "histogram"};
    put(t, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->kind]);
    int64_t v = f->kind == KIND_COUNTER || f->kind == KIND_HISTOGRAM
                    ? 0
                    : atomic_load_explicit(&f->value, memory_order_relaxed);
    if (f->kind == KIND_COUNTER) {
        put_counter(t, f);
    } else if (f->kind == KIND_HISTOGRAM) {
        put_histogram(t, f);
    } else if (f->kind == KIND_GAUGE) {
        put(t, "%s %lld\n", f->name, (long long)v);
    } else {
        int64_t age_ms = v > 0 ? clock_wall_ms() - v : 0;
        put(t, "%s %.3f\n", f->name, age_ms > 0 ? (double)age_ms / 1000.0 : 0.0);
    }
}

int metrics_render(const metrics_t *self, char **text_out, size_t *len_out)
{
    text_t t = {malloc(TEXT_BYTES_INITIAL), 0, TEXT_BYTES_INITIAL, false};
    if (t.buf == NULL)
        return CL_ERR_NOMEM;
    t.buf[0] = '\0';
    for (size_t i = 0; i < self->n_families && !t.overflow; i++)
        put_family(&t, &self->families[i]);
    if (t.overflow) {
        free(t.buf);
        return CL_ERR_OVERFLOW;
    }
    assert(t.len < t.cap && t.buf[t.len] == '\0');
    *text_out = t.buf;
    *len_out = t.len;
    return CL_OK;
}
