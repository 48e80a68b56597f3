/* A bank's bulk enrolment file, read as a stream: CSV (RFC 4180 quoting) with a header
 * naming the columns bank_ref, pan, member_id, action, new_pan in any order (member_id,
 * action and new_pan may be left out; action defaults to enrol). Each row is checked on
 * its own and handed over whole, or rejected with its line number and a reason in which
 * a PAN appears only masked. One line is held at a time and cleared after use, so memory
 * does not grow with the file and no PAN outlives its row. */
#ifndef COALITION_ENROL_FILE_H
#define COALITION_ENROL_FILE_H

#include "card.h"
#include "wire.h"

#include <stdio.h>

#define ENROL_LINE_BYTES_MAX 1024
#define ENROL_REASON_BYTES 160

typedef enum { ENROL_ACTION_ENROL = 0, ENROL_ACTION_UNLINK, ENROL_ACTION_REPLACE } enrol_action_t;

typedef struct enrol_row {
    unsigned long line; /* 1 is the header */
    char bank_ref[BANK_REF_LEN_MAX + 1];
    char pan[PAN_DIGITS_MAX + 1];
    char member_id[MEMBER_ID_LEN_MAX + 1]; /* "" when not given */
    enrol_action_t action;
    char new_pan[PAN_DIGITS_MAX + 1]; /* replace only */
} enrol_row_t;

/* A callback's non-CL_OK return stops the read and is returned. */
typedef int (*enrol_row_fn)(const enrol_row_t *row, void *ctx);
typedef int (*enrol_reject_fn)(unsigned long line, const char *masked_pan, const char *reason,
                               void *ctx);

/* Read every row. CL_ERR_INVALID with `why` when the header is not one (nothing read). */
int enrol_file_read(FILE *in, enrol_row_fn on_row, enrol_reject_fn on_reject, void *ctx, char *why,
                    size_t why_size);

#endif
