/* partner-agent/http_request: what a JSON body leaves behind. A card number passes
 * through jansson's lexer buffer and string values; once hreq_json_clear_on_free is in
 * place (the HTTP API does it at start), nothing jansson frees still holds it. The
 * allocator under it here never reuses memory and its free does nothing, so every byte
 * jansson ever had is still there to be searched. */
#define _GNU_SOURCE /* memmem */
#include "errors.h"
#include "http_request.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#define ARENA_BYTES (1 << 20)
#define PAN "4111111111111111"

static _Alignas(max_align_t) unsigned char arena[ARENA_BYTES];
static size_t arena_used;

static void *arena_malloc(size_t n)
{
    size_t align = _Alignof(max_align_t);
    size_t at = (arena_used + align - 1) / align * align;
    if (n > ARENA_BYTES - at)
        return NULL;
    arena_used = at + n;
    return arena + at;
}

static void arena_free(void *p) { (void)p; }

static bool arena_holds(const char *text)
{
    return memmem(arena, arena_used, text, strlen(text)) != NULL;
}

static void test_card_numbers_cleared_from_jansson(void **state)
{
    (void)state;
    json_set_alloc_funcs(arena_malloc, arena_free);
    hreq_json_clear_on_free();
    static const char *const bodies[] = {
        "{\"card\":\"" PAN "\",\"amount\":1234}",                /* parsed */
        "{\"card\":\"" PAN "\",\"amount\":\"12.34\"}",           /* a bad field after it */
        "{\"amount\":1234,\"card\":\"" PAN "\",\"card\":\"x\"}", /* a duplicate key */
        "{\"card\":\"" PAN "\"",                                 /* cut short */
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        hreq_t req;
        hreq_error_t err;
        int rc = hreq_parse(HREQ_EARN, bodies[i], strlen(bodies[i]), "k-1", &req, &err);
        assert_int_equal(rc, i == 0 ? CL_OK : CL_ERR_INVALID);
        if (rc == CL_OK)
            assert_string_equal(req.card, PAN);
        pan_clear(req.card, sizeof req.card); /* as hreq_call does */
        assert_true(arena_used > 0);
        if (arena_holds(PAN))
            fail_msg("body %zu: jansson's freed memory still holds the card number", i);
    }
}

/* A message cut at its bound ends on a whole UTF-8 character: the error object keeps it
 * (a broken one was replaced by "?" whole). */
static void test_error_messages_cut_on_characters(void **state)
{
    (void)state;
    char body[256] = "{\"";
    for (int i = 0; i < 20; i++)
        strcat(body, "\xe2\x82\xac"); /* the euro sign, three bytes */
    strcat(body, "\":1}");
    hreq_t req;
    hreq_error_t err;
    assert_int_equal(hreq_parse(HREQ_EARN, body, strlen(body), "k-2", &req, &err), CL_ERR_INVALID);
    assert_string_equal(err.code, "unknown_field");
    json_t *o = hreq_error_json(&err);
    assert_non_null(o);
    const char *message =
        json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    assert_non_null(message);
    if (strstr(message, "does not take a field named") == NULL)
        fail_msg("message: %s", message);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_card_numbers_cleared_from_jansson),
        cmocka_unit_test(test_error_messages_cut_on_characters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
