/* Unit tests for common/enrol_file: the bulk enrolment file reader. Every reject reason
 * with its line number, headers in any order and refused ones, RFC 4180 quoting, an
 * over-long line skipped whole, and no reject or reason holding a full PAN. */
#include "enrol_file.h"
#include "errors.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEEN_MAX 32
#define TEXT_BYTES 256

typedef struct seen {
    size_t rows, rejects;
    enrol_row_t row[SEEN_MAX];
    unsigned long reject_line[SEEN_MAX];
    char reject[SEEN_MAX][TEXT_BYTES];
} seen_t;

static int on_row(const enrol_row_t *row, void *ctx)
{
    seen_t *s = ctx;
    assert_true(s->rows < SEEN_MAX);
    s->row[s->rows++] = *row;
    return CL_OK;
}

static int on_reject(unsigned long line, const char *masked, const char *reason, void *ctx)
{
    seen_t *s = ctx;
    assert_true(s->rejects < SEEN_MAX);
    s->reject_line[s->rejects] = line;
    snprintf(s->reject[s->rejects++], TEXT_BYTES, "%s %s", masked, reason);
    return CL_OK;
}

static int read_text(const char *text, seen_t *s, char *why)
{
    memset(s, 0, sizeof *s);
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(f);
    int rc = enrol_file_read(f, on_row, on_reject, s, why, TEXT_BYTES);
    fclose(f);
    return rc;
}

static void reads_rows_in_any_column_order(void **state)
{
    (void)state;
    seen_t s;
    char why[TEXT_BYTES] = "";
    const char *text = "pan,action,bank_ref,new_pan,member_id\r\n"
                       "4111111111111111,,c-1,,\r\n"
                       "4012888888881881,replace,\"c,2\",5555555555554444,m7\n"
                       "\n"
                       "4012888888881881,unlink,c-3,,\n";
    EXPECT_EQ("read", CL_OK, read_text(text, &s, why));
    EXPECT_EQ("rows", 3, s.rows);
    EXPECT_EQ("rejects", 0, s.rejects);
    EXPECT_STR("pan", "4111111111111111", s.row[0].pan);
    EXPECT_EQ("default action", ENROL_ACTION_ENROL, s.row[0].action);
    EXPECT_STR("quoted comma", "c,2", s.row[1].bank_ref);
    EXPECT_EQ("replace", ENROL_ACTION_REPLACE, s.row[1].action);
    EXPECT_STR("new pan", "5555555555554444", s.row[1].new_pan);
    EXPECT_STR("member", "m7", s.row[1].member_id);
    EXPECT_EQ("line numbers count the blank line", 5, s.row[2].line);
    EXPECT_EQ("unlink", ENROL_ACTION_UNLINK, s.row[2].action);
}

static void refuses_bad_headers(void **state)
{
    (void)state;
    seen_t s;
    char why[TEXT_BYTES] = "";
    EXPECT_EQ("empty", CL_ERR_INVALID, read_text("", &s, why));
    EXPECT_EQ("no pan column", CL_ERR_INVALID, read_text("bank_ref,member_id\n", &s, why));
    EXPECT_EQ("unknown column", CL_ERR_INVALID, read_text("bank_ref,pan,colour\n", &s, why));
    EXPECT_CONTAINS("why", "column 3 is unknown", why);
    EXPECT_EQ("repeated column", CL_ERR_INVALID, read_text("pan,bank_ref,pan\n", &s, why));
    EXPECT_EQ("no header: a data row first", CL_ERR_INVALID,
              read_text("c1,4111111111111111\n", &s, why));
    EXPECT_TRUE("the card number is not echoed", strstr(why, "4111111111111111") == NULL);
}

static void rejects_each_bad_row_with_its_line(void **state)
{
    (void)state;
    seen_t s;
    char why[TEXT_BYTES] = "";
    char text[4096];
    int n = snprintf(text, sizeof text,
                     "bank_ref,pan,member_id,action,new_pan\n"
                     "c1,4111111111111111,,enrol\n"                     /* 2 fields count */
                     ",4111111111111111,,enrol,\n"                      /* 3 bank_ref */
                     "c3,41111111111a1111,,enrol,\n"                    /* 4 letters */
                     "c4,411111111111,,enrol,\n"                        /* 5 length */
                     "c5,4111111111111112,,enrol,\n"                    /* 6 luhn */
                     "c6,4111111111111111,bad member,enrol,\n"          /* 7 member */
                     "c7,4111111111111111,,delete,\n"                   /* 8 action */
                     "c8,4111111111111111,,replace,\n"                  /* 9 no new pan */
                     "c9,4111111111111111,,enrol,5555555555554444\n"    /* 10 new pan on enrol */
                     "c10,4111111111111111,,replace,5555555555554440\n" /* 11 new pan luhn */
                     "c11,4111111111111111,,replace,4111111111111111\n" /* 12 same card */
                     "c12,\"4111111111111111,,enrol,\n"                 /* 13 quoting */
                     "c13,");
    for (int i = 0; i < 1100; i++)
        text[n++] = '1'; /* 14: over-long */
    snprintf(text + n, sizeof text - (size_t)n, "\nc14,4111111111111111,,enrol,\n");
    EXPECT_EQ("read", CL_OK, read_text(text, &s, why));
    EXPECT_EQ("rows", 1, s.rows);
    EXPECT_EQ("the good row after the long one", 15, s.row[0].line);
    const char *reasons[] = {"fields, the header has 5",
                             "bank_ref",
                             "other than digits",
                             "not 13 to 19 digits",
                             "Luhn",
                             "member_id",
                             "action must be",
                             "replace without new_pan",
                             "new_pan given for enrol",
                             "new_pan 555555******4440",
                             "the same card",
                             "not CSV",
                             "longer than 1024"};
    EXPECT_EQ("rejects", sizeof reasons / sizeof reasons[0], s.rejects);
    for (size_t i = 0; i < s.rejects; i++) {
        EXPECT_EQ("line", i + 2, s.reject_line[i]);
        EXPECT_CONTAINS("reason", reasons[i], s.reject[i]);
        EXPECT_TRUE("no full PAN in a reject", strstr(s.reject[i], "4111111111111111") == NULL &&
                                                   strstr(s.reject[i], "5555555555554440") == NULL);
    }
    EXPECT_CONTAINS("line 8: a valid PAN shows masked", "411111******1111", s.reject[6]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_rows_in_any_column_order),
        cmocka_unit_test(refuses_bad_headers),
        cmocka_unit_test(rejects_each_bad_row_with_its_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
