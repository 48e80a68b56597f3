/* coalitionctl stats: scrape a metrics endpoint (the broker's, or an agent's) with one
 * plain HTTP/1.0 GET over a socket, and print it for a person: single values first,
 * then histograms as count, average and p50/p99 (as the bound of the bucket holding
 * them: an upper estimate), then labelled counters grouped by their first label.
 * Everything read is bounded (STATS_*); what does not fit is said, never cut silently. */
#include "broker_metrics.h"
#include "clock.h"
#include "ctl.h"
#include "errors.h"
#include "metrics_http.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define STATS_TIMEOUT_S 5
#define STATS_RESPONSE_BYTES_MAX (METRICS_TEXT_BYTES_MAX + 4096)
#define STATS_SCALARS_MAX 64
#define STATS_HISTOGRAMS_MAX 16
#define STATS_BUCKETS_MAX (METRICS_BUCKETS_MAX + 1)
#define STATS_ROWS_MAX 4096
#define STATS_NAME_BYTES 96
#define STATS_VALUE_BYTES METRICS_LABEL_BYTES_MAX
#define STATS_CODES_SHOWN 8
#define MIB (1024.0 * 1024.0)
/* Start times past this (year 9999) are printed as numbers, not dates. */
#define STATS_TIME_MAX_S 253402300799.0

typedef struct scalar {
    char name[STATS_NAME_BYTES];
    double v;
} scalar_t;

typedef struct histogram {
    char name[STATS_NAME_BYTES];
    double le[STATS_BUCKETS_MAX], cum[STATS_BUCKETS_MAX];
    size_t n;
    double sum, count;
} histogram_t;

typedef struct row {
    char family[STATS_NAME_BYTES];
    char k1[STATS_NAME_BYTES], v1[STATS_VALUE_BYTES], k2[STATS_NAME_BYTES], v2[STATS_VALUE_BYTES];
    double v;
} row_t;

typedef struct scrape {
    scalar_t scalars[STATS_SCALARS_MAX];
    histogram_t hists[STATS_HISTOGRAMS_MAX];
    row_t rows[STATS_ROWS_MAX];
    size_t n_scalars, n_hists, n_rows, dropped;
} scrape_t;

/* GET /metrics; the body (malloc'd, NUL-terminated) of a 200 answer. */
static int http_get(const metrics_http_addr_t *addr, char **body_out, char *why, size_t why_size)
{
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {STATS_TIMEOUT_S, 0};
    char *buf = malloc(STATS_RESPONSE_BYTES_MAX + 1);
    size_t len = 0;
    int rc = CL_ERR_IO;
    if (fd < 0 || buf == NULL || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (const struct sockaddr *)&addr->sa, addr->sa_len) != 0) {
        snprintf(why, why_size, "cannot connect to %s: %s", addr->text, strerror(errno));
        goto out;
    }
    static const char request[] = "GET " METRICS_HTTP_PATH " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1)) {
        snprintf(why, why_size, "cannot send to %s: %s", addr->text, strerror(errno));
        goto out;
    }
    /* STATS_TIMEOUT_S for the whole answer, not for each read: an endpoint that sends a
     * byte now and then must not hold the command for ever. */
    ssize_t got = 1;
    int64_t deadline_ms = clock_mono_ms() + STATS_TIMEOUT_S * 1000;
    while (got > 0 && len < STATS_RESPONSE_BYTES_MAX) {
        int64_t left_ms = deadline_ms - clock_mono_ms();
        struct timeval left = {(time_t)(left_ms / 1000), (suseconds_t)(left_ms % 1000) * 1000};
        if (left_ms <= 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &left, sizeof left) != 0) {
            errno = ETIMEDOUT;
            got = -1;
            break;
        }
        got = recv(fd, buf + len, STATS_RESPONSE_BYTES_MAX - len, 0);
        len += got > 0 ? (size_t)got : 0;
    }
    assert(len <= STATS_RESPONSE_BYTES_MAX);
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (got < 0 || len == STATS_RESPONSE_BYTES_MAX || body == NULL || len < 12 ||
        strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 8, " 200", 4) != 0) {
        snprintf(why, why_size, "%s did not answer 200 with metrics (%.40s)", addr->text,
                 got < 0 ? strerror(errno) : buf);
        goto out;
    }
    memmove(buf, body + 4, strlen(body + 4) + 1);
    *body_out = buf;
    buf = NULL;
    rc = CL_OK;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

/* `k="v"` at *p into k and v (escapes undone); false when malformed. */
static bool parse_label(const char **p, char *k, char *v)
{
    size_t n = strcspn(*p, "=");
    if (n == 0 || n >= STATS_NAME_BYTES || (*p)[n] != '=' || (*p)[n + 1] != '"')
        return false;
    memcpy(k, *p, n);
    k[n] = '\0';
    const char *s = *p + n + 2;
    size_t o = 0;
    for (; *s != '"' && *s != '\0' && o + 1 < STATS_VALUE_BYTES; s++) {
        bool escaped = *s == '\\' && s[1] != '\0';
        s += escaped; /* \\n is a backslash and an n, not a backslash and a newline */
        v[o++] = escaped && *s == 'n' ? '\n' : *s;
    }
    assert(o < STATS_VALUE_BYTES);
    v[o] = '\0';
    if (*s != '"')
        return false;
    *p = s + 1;
    return true;
}

static histogram_t *histogram_of(scrape_t *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n_hists; i++) {
        if (strlen(s->hists[i].name) == len && strncmp(s->hists[i].name, name, len) == 0)
            return &s->hists[i];
    }
    return NULL;
}

/* A histogram's sample (_bucket, _sum, _count); true when it was one. */
static bool take_histogram(scrape_t *s, const char *name, const char *k, const char *v, double x)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(name), sl = strlen(suffixes[i]);
        histogram_t *h = n > sl && strcmp(name + n - sl, suffixes[i]) == 0
                             ? histogram_of(s, name, n - sl)
                             : NULL;
        if (h == NULL)
            continue;
        assert(h->n <= STATS_BUCKETS_MAX);
        if (i == 0 && strcmp(k, "le") == 0 && h->n < STATS_BUCKETS_MAX) {
            h->le[h->n] = strcmp(v, "+Inf") == 0 ? -1 : strtod(v, NULL);
            h->cum[h->n++] = x;
        } else if (i == 1) {
            h->sum = x;
        } else if (i == 2) {
            h->count = x;
        }
        return true;
    }
    return false;
}

static void take_sample(scrape_t *s, const char *line)
{
    char name[STATS_NAME_BYTES], k[2][STATS_NAME_BYTES] = {"", ""}, v[2][STATS_VALUE_BYTES];
    size_t n = strcspn(line, "{ ");
    if (n == 0 || n >= sizeof name)
        return;
    memcpy(name, line, n);
    name[n] = '\0';
    const char *p = line + n;
    size_t labels = 0;
    if (*p == '{') {
        p++;
        while (*p != '}' && labels < 2 && parse_label(&p, k[labels], v[labels])) {
            labels++;
            p += *p == ',';
        }
        if (*p != '}')
            return;
        p++;
    }
    double x = strtod(p, NULL);
    if (take_histogram(s, name, k[0], v[0], x))
        return;
    if (labels == 0 && s->n_scalars < STATS_SCALARS_MAX) {
        scalar_t *sc = &s->scalars[s->n_scalars++];
        snprintf(sc->name, sizeof sc->name, "%s", name);
        sc->v = x;
    } else if (labels > 0 && s->n_rows < STATS_ROWS_MAX) {
        row_t *r = &s->rows[s->n_rows++];
        snprintf(r->family, sizeof r->family, "%s", name);
        snprintf(r->k1, sizeof r->k1, "%s", k[0]);
        snprintf(r->v1, sizeof r->v1, "%s", v[0]);
        snprintf(r->k2, sizeof r->k2, "%s", labels > 1 ? k[1] : "");
        snprintf(r->v2, sizeof r->v2, "%s", labels > 1 ? v[1] : "");
        r->v = x;
    } else {
        s->dropped++;
    }
}

static void parse(scrape_t *s, char *text)
{
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char name[STATS_NAME_BYTES];
        if (sscanf(line, "# TYPE %95s histogram", name) == 1 && s->n_hists < STATS_HISTOGRAMS_MAX &&
            strstr(line, " histogram") != NULL) {
            snprintf(s->hists[s->n_hists++].name, STATS_NAME_BYTES, "%s", name);
            continue;
        }
        if (line[0] != '#')
            take_sample(s, line);
    }
}

/* The name without its program prefix. */
static const char *short_name(const char *name)
{
    static const char *const prefixes[] = {"coalition_broker_", "coalition_agent_"};
    for (size_t i = 0; i < 2; i++) {
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return name + strlen(prefixes[i]);
    }
    return name;
}

static void print_scalar(const scalar_t *sc)
{
    size_t n = strlen(sc->name);
    struct tm tm;
    time_t t = 0;
    /* A time only when it is one (converting NaN or 1e300 to time_t is undefined). */
    bool start = strcmp(sc->name, "process_start_time_seconds") == 0 && sc->v >= 0 &&
                 sc->v < STATS_TIME_MAX_S && (t = (time_t)sc->v, gmtime_r(&t, &tm) != NULL);
    if (start) {
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        printf("  %-32s %s (up %.0f s)\n", "started", when, difftime(time(NULL), t));
    } else if (n > 6 && strcmp(sc->name + n - 6, "_bytes") == 0) {
        printf("  %-32s %.1f MiB\n", short_name(sc->name), sc->v / MIB);
    } else {
        printf("  %-32s %.15g\n", short_name(sc->name), sc->v);
    }
}

/* The q-quantile as the upper bound of the bucket that holds it (an upper estimate, as
 * exact as the buckets allow); -1 when it is in the +Inf bucket. */
static double quantile(const histogram_t *h, double q)
{
    assert(q > 0 && q <= 1 && h->count > 0);
    double rank = q * h->count;
    for (size_t i = 0; i < h->n; i++) {
        if (h->cum[i] >= rank && h->cum[i] > 0)
            return h->le[i];
    }
    return -1;
}

static void print_bound(double bound, double last, double unit)
{
    if (bound < 0)
        printf(" %9s%-.3g", ">", last * unit);
    else
        printf(" %10.3f", bound * unit);
}

static void print_histogram(const histogram_t *h)
{
    size_t n = strlen(h->name);
    bool seconds = n > 8 && strcmp(h->name + n - 8, "_seconds") == 0;
    double unit = seconds ? 1000.0 : 1.0; /* seconds shown as ms */
    char label[STATS_NAME_BYTES + 8];
    snprintf(label, sizeof label, "%s%s", short_name(h->name), seconds ? " (ms)" : "");
    if (!(h->count > 0) || !isfinite(h->count)) { /* NaN too: the numbers are the server's */
        printf("  %-32s %10.0f %10s %10s %10s\n", label, 0.0, "-", "-", "-");
        return;
    }
    double last = h->n >= 2 ? h->le[h->n - 2] : 0;
    printf("  %-32s %10.0f %10.3f", label, h->count, h->sum / h->count * unit);
    print_bound(quantile(h, 0.5), last, unit);
    print_bound(quantile(h, 0.99), last, unit);
    printf("\n");
}

/* One labelled family: a line per first-label value, its total and its second label's
 * values with their counts. */
static void print_family(const scrape_t *s, const char *family)
{
    const row_t *first = NULL;
    for (size_t i = 0; i < s->n_rows && first == NULL; i++)
        first = strcmp(s->rows[i].family, family) == 0 ? &s->rows[i] : NULL;
    assert(first != NULL);
    printf("\n%s by %s%s%s\n", short_name(family), first->k1, first->k2[0] ? " and " : "",
           first->k2);
    for (size_t i = 0; i < s->n_rows; i++) {
        const row_t *r = &s->rows[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(s->rows[j].family, family) == 0 && strcmp(s->rows[j].v1, r->v1) == 0;
        if (seen || strcmp(r->family, family) != 0)
            continue;
        double total = 0;
        char detail[STATS_CODES_SHOWN * (STATS_VALUE_BYTES + 24)] = "";
        size_t shown = 0, used = 0;
        for (size_t j = i; j < s->n_rows; j++) {
            const row_t *o = &s->rows[j];
            if (strcmp(o->family, family) != 0 || strcmp(o->v1, r->v1) != 0)
                continue;
            total += o->v;
            if (o->k2[0] != '\0' && shown++ < STATS_CODES_SHOWN && used < sizeof detail)
                used +=
                    (size_t)snprintf(detail + used, sizeof detail - used, " %s=%.0f", o->v2, o->v);
        }
        printf("  %-32.64s %10.0f %s%s\n", r->v1, total, detail,
               shown > STATS_CODES_SHOWN ? " ..." : "");
    }
}

static void print_scrape(const scrape_t *s, const char *from)
{
    assert(s->n_scalars <= STATS_SCALARS_MAX && s->n_hists <= STATS_HISTOGRAMS_MAX &&
           s->n_rows <= STATS_ROWS_MAX);
    printf("Metrics from http://%s%s\n\n", from, METRICS_HTTP_PATH);
    for (size_t i = 0; i < s->n_scalars; i++)
        print_scalar(&s->scalars[i]);
    if (s->n_hists > 0)
        printf("\n  %-32s %10s %10s %10s %10s\n", "histogram (p: bucket bound)", "count", "avg",
               "p50 <=", "p99 <=");
    for (size_t i = 0; i < s->n_hists; i++)
        print_histogram(&s->hists[i]);
    for (size_t i = 0; i < s->n_rows; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(s->rows[j].family, s->rows[i].family) == 0;
        if (!seen)
            print_family(s, s->rows[i].family);
    }
    if (s->dropped > 0)
        printf("\n(%zu sample(s) beyond what this command shows; scrape the endpoint)\n",
               s->dropped);
}

int ctl_stats(ctl_t *ctl, int argc, char **argv)
{
    (void)ctl;
    static const struct option longopts[] = {{"metrics", required_argument, NULL, 'm'},
                                             {NULL, 0, NULL, 0}};
    const char *spec = BROKER_METRICS_DEFAULT;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "m:", longopts, NULL)) != -1) {
        if (c != 'm')
            return EXIT_USAGE;
        spec = optarg;
    }
    metrics_http_addr_t addr;
    char why[METRICS_HTTP_SPEC_BYTES_MAX + 128];
    if (optind != argc || metrics_http_parse(spec, &addr, why, sizeof why) != CL_OK || addr.off) {
        fprintf(stderr, "coalitionctl: stats [--metrics HOST:PORT] (default %s)\n",
                BROKER_METRICS_DEFAULT);
        return EXIT_USAGE;
    }
    char *body = NULL;
    scrape_t *s = calloc(1, sizeof *s);
    int rc = s != NULL ? http_get(&addr, &body, why, sizeof why) : CL_ERR_NOMEM;
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: stats: %s\n", s != NULL ? why : "out of memory");
        free(s);
        return EXIT_DECLINED;
    }
    parse(s, body);
    print_scrape(s, addr.text);
    free(body);
    free(s);
    return 0;
}
