/* Assertions shared by the cmocka tests: each failure says what was checked, what was
 * expected and what came back. Include after <cmocka.h>. */
#ifndef COALITION_TEST_EXPECT_H
#define COALITION_TEST_EXPECT_H

#include <string.h>

#define EXPECT_EQ(what, expected, got)                                                             \
    do {                                                                                           \
        long long expected_ = (long long)(expected);                                               \
        long long got_ = (long long)(got);                                                         \
        if (expected_ != got_)                                                                     \
            fail_msg("%s: expected %lld, got %lld", (what), expected_, got_);                      \
    } while (0)

#define EXPECT_STR(what, expected, got)                                                            \
    do {                                                                                           \
        const char *expected_ = (expected);                                                        \
        const char *got_ = (got);                                                                  \
        if (strcmp(expected_, got_) != 0)                                                          \
            fail_msg("%s: expected \"%s\", got \"%s\"", (what), expected_, got_);                  \
    } while (0)

#define EXPECT_CONTAINS(what, part, got)                                                           \
    do {                                                                                           \
        const char *part_ = (part);                                                                \
        const char *got_ = (got);                                                                  \
        if (strstr(got_, part_) == NULL)                                                           \
            fail_msg("%s: expected it to contain \"%s\", got \"%s\"", (what), part_, got_);        \
    } while (0)

#define EXPECT_TRUE(what, cond)                                                                    \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("%s: expected true, got false", (what));                                      \
    } while (0)

#define EXPECT_FALSE(what, cond)                                                                   \
    do {                                                                                           \
        if (cond)                                                                                  \
            fail_msg("%s: expected false, got true", (what));                                      \
    } while (0)

#endif
