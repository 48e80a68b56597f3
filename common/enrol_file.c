/* The bulk enrolment file reader. See enrol_file.h. */
#include "enrol_file.h"

#include "errors.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FIELDS_MAX 8
#define COLUMNS 5

enum { COL_BANK_REF, COL_PAN, COL_MEMBER, COL_ACTION, COL_NEW_PAN };
static const char *const COLUMN_NAMES[COLUMNS] = {"bank_ref", "pan", "member_id", "action",
                                                  "new_pan"};

typedef struct reader {
    int column_of[COLUMNS]; /* the field index of each column, -1 when absent */
    size_t n_fields;        /* the header's */
    char line[ENROL_LINE_BYTES_MAX + 2];
    char fields[FIELDS_MAX][ENROL_LINE_BYTES_MAX + 1];
    enrol_row_t row;
} reader_t;

/* Split one CSV line (no line break) into fields (RFC 4180: a quoted field may hold
 * commas and "" for a quote); false when the quoting is broken or there are too many. */
static bool split(reader_t *r, const char *p, size_t *count)
{
    size_t n = 0;
    for (;;) {
        if (n == FIELDS_MAX)
            return false;
        char *out = r->fields[n];
        size_t len = 0;
        if (*p == '"') {
            for (p++;; p++) {
                if (*p == '\0')
                    return false; /* a quote never closed */
                if (*p == '"' && p[1] != '"')
                    break;
                if (*p == '"')
                    p++; /* "" is one quote */
                out[len++] = *p;
            }
            p++;
            if (*p != ',' && *p != '\0')
                return false; /* text after the closing quote */
        } else {
            for (; *p != ',' && *p != '\0'; p++) {
                if (*p == '"')
                    return false; /* a quote inside an unquoted field */
                out[len++] = *p;
            }
        }
        out[len] = '\0';
        n++;
        if (*p == '\0')
            break;
        p++; /* the comma */
    }
    *count = n;
    return true;
}

static int read_header(reader_t *r, const char *line, char *why, size_t why_size)
{
    size_t n = 0;
    for (size_t c = 0; c < COLUMNS; c++)
        r->column_of[c] = -1;
    if (!split(r, line, &n)) {
        snprintf(why, why_size, "the header is not CSV");
        return CL_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        size_t c = 0;
        while (c < COLUMNS && strcmp(r->fields[i], COLUMN_NAMES[c]) != 0)
            c++;
        if (c == COLUMNS || r->column_of[c] >= 0) {
            /* Its text is not shown: a file without a header starts with a card number. */
            snprintf(why, why_size,
                     "header column %zu is unknown or repeated (is the header "
                     "missing?); expected bank_ref, pan, member_id, action, new_pan",
                     i + 1);
            return CL_ERR_INVALID;
        }
        r->column_of[c] = (int)i;
    }
    if (r->column_of[COL_BANK_REF] < 0 || r->column_of[COL_PAN] < 0) {
        snprintf(why, why_size, "the header must name bank_ref and pan");
        return CL_ERR_INVALID;
    }
    r->n_fields = n;
    assert(n >= 2 && n <= COLUMNS);
    return CL_OK;
}

static const char *field(const reader_t *r, int column)
{
    int i = r->column_of[column];
    return i >= 0 ? r->fields[i] : "";
}

__attribute__((format(printf, 2, 3))) static void reason(char out[ENROL_REASON_BYTES],
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, ENROL_REASON_BYTES, fmt, ap);
    va_end(ap);
}

static bool copy_checked(char *out, size_t size, const char *in)
{
    size_t n = strlen(in);
    if (n >= size)
        return false;
    memcpy(out, in, n + 1);
    return true;
}

/* Check one row's fields into r->row; false with the reason (PANs masked). */
static bool check_row(reader_t *r, size_t n, char why[ENROL_REASON_BYTES],
                      char masked[PAN_MASKED_BYTES])
{
    enrol_row_t *row = &r->row;
    const char *pan = field(r, COL_PAN), *new_pan = field(r, COL_NEW_PAN);
    const char *action = field(r, COL_ACTION), *member = field(r, COL_MEMBER);
    pan_mask(pan, masked);
    if (n != r->n_fields) {
        reason(why, "%zu fields, the header has %zu", n, r->n_fields);
        return false;
    }
    if (!wire_id_valid(field(r, COL_BANK_REF), BANK_REF_LEN_MAX) ||
        !copy_checked(row->bank_ref, sizeof row->bank_ref, field(r, COL_BANK_REF))) {
        reason(why, "bank_ref missing or not 1-%d printable characters", BANK_REF_LEN_MAX);
        return false;
    }
    pan_verdict_t v = pan_check(pan);
    if (v != PAN_OK) {
        reason(why, "pan: %s", pan_verdict_text(v));
        return false;
    }
    if (member[0] != '\0' && !wire_id_valid(member, MEMBER_ID_LEN_MAX)) {
        reason(why, "member_id not 1-%d printable characters", MEMBER_ID_LEN_MAX);
        return false;
    }
    if (action[0] == '\0' || strcmp(action, "enrol") == 0 || strcmp(action, "enroll") == 0)
        row->action = ENROL_ACTION_ENROL;
    else if (strcmp(action, "unlink") == 0)
        row->action = ENROL_ACTION_UNLINK;
    else if (strcmp(action, "replace") == 0)
        row->action = ENROL_ACTION_REPLACE;
    else {
        reason(why, "action must be enrol, unlink or replace");
        return false;
    }
    bool replacing = row->action == ENROL_ACTION_REPLACE;
    if (replacing != (new_pan[0] != '\0')) {
        reason(why, replacing ? "replace without new_pan" : "new_pan given for %s", action);
        return false;
    }
    if (replacing && pan_check(new_pan) != PAN_OK) {
        char masked_new[PAN_MASKED_BYTES];
        pan_mask(new_pan, masked_new);
        reason(why, "new_pan %s: %s", masked_new, pan_verdict_text(pan_check(new_pan)));
        return false;
    }
    if (replacing && strcmp(pan, new_pan) == 0) {
        reason(why, "new_pan is the same card");
        return false;
    }
    memcpy(row->pan, pan, strlen(pan) + 1);
    memcpy(row->new_pan, new_pan, strlen(new_pan) + 1);
    memcpy(row->member_id, member, strlen(member) + 1);
    return true;
}

/* One data line: the row, or its reject. */
static int take_line(reader_t *r, const char *line, enrol_row_fn on_row, enrol_reject_fn on_reject,
                     void *ctx)
{
    char why[ENROL_REASON_BYTES], masked[PAN_MASKED_BYTES] = "*";
    size_t n = 0;
    int rc;
    if (!split(r, line, &n))
        rc = on_reject(r->row.line, "*", "not CSV (broken quoting or too many fields)", ctx);
    else if (check_row(r, n, why, masked))
        rc = on_row(&r->row, ctx);
    else
        rc = on_reject(r->row.line, masked, why, ctx);
    unsigned long line_no = r->row.line;
    pan_clear(r->fields, sizeof r->fields);
    pan_clear(&r->row, sizeof r->row);
    r->row.line = line_no;
    return rc;
}

/* The rest of an over-long line, skipped and cleared. */
static void skip_line(FILE *in, char *buf, size_t size)
{
    while (fgets(buf, (int)size, in) != NULL && strchr(buf, '\n') == NULL)
        pan_clear(buf, size);
    pan_clear(buf, size);
}

static void chomp(char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
}

static int read_all(reader_t *r, FILE *in, enrol_row_fn on_row, enrol_reject_fn on_reject,
                    void *ctx, char *why, size_t why_size)
{
    if (fgets(r->line, sizeof r->line, in) == NULL) {
        snprintf(why, why_size, "the file is empty: no header");
        return CL_ERR_INVALID;
    }
    chomp(r->line);
    r->row.line = 1;
    int rc = read_header(r, r->line, why, why_size);
    while (rc == CL_OK && fgets(r->line, sizeof r->line, in) != NULL) {
        r->row.line++;
        if (strchr(r->line, '\n') == NULL && !feof(in)) {
            skip_line(in, r->line, sizeof r->line);
            rc = on_reject(r->row.line, "*", "line longer than 1024 bytes", ctx);
            continue;
        }
        chomp(r->line);
        if (r->line[0] != '\0')
            rc = take_line(r, r->line, on_row, on_reject, ctx);
        pan_clear(r->line, sizeof r->line);
    }
    if (rc == CL_OK && ferror(in)) {
        snprintf(why, why_size, "read error at line %lu", r->row.line);
        rc = CL_ERR_IO;
    }
    return rc;
}

int enrol_file_read(FILE *in, enrol_row_fn on_row, enrol_reject_fn on_reject, void *ctx, char *why,
                    size_t why_size)
{
    assert(in != NULL && on_row != NULL && on_reject != NULL && why_size > 0);
    reader_t *rp = calloc(1, sizeof *rp); /* ~10 KB, off the stack */
    if (rp == NULL)
        return CL_ERR_NOMEM;
    int rc = read_all(rp, in, on_row, on_reject, ctx, why, why_size);
    pan_clear(rp, sizeof *rp);
    free(rp);
    return rc;
}
