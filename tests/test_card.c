/* Unit tests for common/card: PAN checks (lengths, digits, Luhn against a check digit
 * computed here), masking, the keyed hash (a known answer computed apart, with Python's
 * hmac module) and the card key file (modes, rotation, malformed files). */
#include "card.h"
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
#include <sys/stat.h>
#include <unistd.h>

#define PATH_BYTES 256
#define EXPECT_OK_CL(expr) EXPECT_EQ(#expr, CL_OK, (expr))

/* The Luhn check digit of `body` (digits), computed here apart from card.c. */
static char luhn_digit(const char *body)
{
    size_t n = strlen(body);
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = body[n - 1 - i] - '0';
        if (i % 2 == 0) { /* doubled: the check digit will sit to its right */
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return (char)('0' + (10 - sum % 10) % 10);
}

static void make_pan(char *out, const char *body)
{
    size_t n = strlen(body);
    memcpy(out, body, n);
    out[n] = luhn_digit(body);
    out[n + 1] = '\0';
}

static void checks_lengths_digits_and_luhn(void **state)
{
    (void)state;
    const char *good[] = {"4111111111111111", "4012888888881881", "378282246310005",
                          "6011111111111117", "5555555555554444", "4222222222222"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        EXPECT_EQ(good[i], PAN_OK, pan_check(good[i]));
    char pan[32];
    for (size_t len = 12; len <= 20; len++) {
        char body[32];
        for (size_t i = 0; i + 1 < len; i++)
            body[i] = (char)('1' + (i * 7) % 9);
        body[len - 1] = '\0';
        make_pan(pan, body);
        int want = len >= PAN_DIGITS_MIN && len <= PAN_DIGITS_MAX ? PAN_OK : PAN_LENGTH;
        EXPECT_EQ("length", want, pan_check(pan));
        if (want == PAN_OK) {
            pan[len - 1] = pan[len - 1] == '9' ? '0' : (char)(pan[len - 1] + 1);
            EXPECT_EQ("a wrong check digit", PAN_LUHN, pan_check(pan));
        }
    }
    EXPECT_EQ("letters", PAN_NOT_DIGITS, pan_check("41111111111111a1"));
    EXPECT_EQ("spaces", PAN_NOT_DIGITS, pan_check("4111 1111 1111 1111"));
    EXPECT_EQ("empty", PAN_LENGTH, pan_check(""));
    EXPECT_EQ("a long string", PAN_LENGTH, pan_check("41111111111111111111111111111111"));
}

static void masks_all_but_bin_and_last_four(void **state)
{
    (void)state;
    char masked[PAN_MASKED_BYTES];
    pan_mask("4111111111111111", masked);
    EXPECT_STR("16 digits", "411111******1111", masked);
    pan_mask("4222222222222", masked);
    EXPECT_STR("13 digits", "422222***2222", masked);
    pan_mask("12345", masked);
    EXPECT_STR("too short: nothing shown", "*", masked);
    pan_mask("41111111111111111111111", masked);
    EXPECT_STR("too long: nothing shown", "*", masked);
}

static void hashes_under_a_key(void **state)
{
    (void)state;
    card_key_t key = {1, {0}};
    for (int i = 0; i < CARD_KEY_BYTES; i++)
        key.secret[i] = (uint8_t)(i + 1);
    card_id_t id, again, other;
    EXPECT_OK_CL(card_id_of(&key, "4111111111111111", &id));
    static const uint8_t want[CARD_HASH_BYTES] = {0xb8, 0x78, 0x79, 0x84, 0x4d, 0xf0, 0x59, 0x9e,
                                                  0x95, 0x1e, 0x53, 0x0e, 0x7b, 0xdf, 0x38, 0x1d,
                                                  0x7a, 0xf9, 0x19, 0xfa, 0xf0, 0x7f, 0xbd, 0xe3,
                                                  0xb7, 0xae, 0xeb, 0x65, 0x81, 0xdc, 0x5a, 0xd2};
    EXPECT_TRUE("HMAC-SHA256 known answer", memcmp(id.hash, want, CARD_HASH_BYTES) == 0);
    EXPECT_STR("bin", "411111", id.bin);
    EXPECT_STR("last four", "1111", id.last4);
    EXPECT_EQ("key id", 1, id.key_id);
    EXPECT_OK_CL(card_id_of(&key, "4111111111111111", &again));
    EXPECT_TRUE("the same card, the same id", memcmp(id.hash, again.hash, CARD_HASH_BYTES) == 0);
    key.secret[0] ^= 1;
    key.id = 2;
    EXPECT_OK_CL(card_id_of(&key, "4111111111111111", &other));
    EXPECT_TRUE("another key, another id", memcmp(id.hash, other.hash, CARD_HASH_BYTES) != 0);
    EXPECT_EQ("an invalid PAN is not hashed", CL_ERR_INVALID,
              card_id_of(&key, "4111111111111112", &other));
}

static void key_files_are_owner_only_and_rotate(void **state)
{
    (void)state;
    char dir[PATH_BYTES] = "/tmp/test_card.XXXXXX", path[PATH_BYTES + 16], why[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/card.key", dir);
    EXPECT_OK_CL(card_keys_create(path));
    EXPECT_EQ("never overwritten", CL_ERR_EXISTS, card_keys_create(path));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    EXPECT_EQ("mode", 0600, st.st_mode & 0777);
    card_keys_t keys, rotated;
    EXPECT_OK_CL(card_keys_load(path, &keys, why, sizeof why));
    EXPECT_EQ("one key", 1, keys.count);
    uint32_t id = 0;
    EXPECT_OK_CL(card_keys_rotate(path, &id));
    EXPECT_EQ("the new key's id", 2, id);
    EXPECT_OK_CL(card_keys_load(path, &rotated, why, sizeof why));
    EXPECT_EQ("two keys", 2, rotated.count);
    EXPECT_EQ("current", 2, card_keys_current(&rotated)->id);
    EXPECT_TRUE("the old key kept", memcmp(card_keys_find(&rotated, 1)->secret, keys.keys[0].secret,
                                           CARD_KEY_BYTES) == 0);
    EXPECT_EQ("the current key is never retired", CL_ERR_INVALID, card_keys_retire(path, 2));
    EXPECT_EQ("no key 7", CL_ERR_NOT_FOUND, card_keys_retire(path, 7));
    EXPECT_OK_CL(card_keys_retire(path, 1));
    EXPECT_OK_CL(card_keys_load(path, &rotated, why, sizeof why));
    EXPECT_EQ("one key left", 1, rotated.count);
    EXPECT_EQ("the current one", 2, card_keys_current(&rotated)->id);
    assert_int_equal(stat(path, &st), 0);
    EXPECT_EQ("still owner-only", 0600, st.st_mode & 0777);
    assert_int_equal(chmod(path, 0644), 0);
    EXPECT_EQ("readable by others", CL_ERR_INVALID, card_keys_load(path, &keys, why, sizeof why));
    EXPECT_CONTAINS("why", "readable by others", why);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "card-key-1 = 00ff\n");
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    EXPECT_EQ("malformed", CL_ERR_INVALID, card_keys_load(path, &keys, why, sizeof why));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(checks_lengths_digits_and_luhn),
        cmocka_unit_test(masks_all_but_bin_and_last_four),
        cmocka_unit_test(hashes_under_a_key),
        cmocka_unit_test(key_files_are_owner_only_and_rotate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
