/* Payment cards without their numbers (PCI DSS v4.0 3.4.1, 3.5.1.1): a PAN is checked
 * (13-19 digits, Luhn), reduced at once to a keyed HMAC-SHA256 under the coalition's card
 * key plus its BIN and last four for display, and every buffer that held it is cleared.
 * Nothing here logs, stores or returns a PAN.
 *
 * The card key file (owner-only, kept outside the ledger directory) holds one or more
 * numbered keys, "card-key-N = 64 hex digits"; the highest number is current. Rotation
 * adds a key: cards enrolled under an older one are still found under it, and move to the
 * current one when next enrolled or replaced; an older key is removed from the file once
 * no card depends on it. */
#ifndef COALITION_CARD_H
#define COALITION_CARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAN_DIGITS_MIN 13
#define PAN_DIGITS_MAX 19
#define CARD_BIN_DIGITS 6
#define CARD_LAST_DIGITS 4
#define CARD_HASH_BYTES 32
#define CARD_KEY_BYTES 32
#define CARD_KEYS_MAX 8
/* "411111******1111": a masked PAN as it may be shown, logged or written to rejects. */
#define PAN_MASKED_BYTES (PAN_DIGITS_MAX + 1)
_Static_assert(CARD_BIN_DIGITS + CARD_LAST_DIGITS < PAN_DIGITS_MIN,
               "a masked PAN always hides some digits");

typedef struct card_key {
    uint32_t id;
    uint8_t secret[CARD_KEY_BYTES];
} card_key_t;

typedef struct card_keys {
    card_key_t keys[CARD_KEYS_MAX]; /* by id, ascending; the last is current */
    size_t count;
} card_keys_t;

/* What a PAN leaves behind. */
typedef struct card_id {
    uint32_t key_id;
    uint8_t hash[CARD_HASH_BYTES];
    char bin[CARD_BIN_DIGITS + 1];
    char last4[CARD_LAST_DIGITS + 1];
} card_id_t;

typedef enum {
    PAN_OK = 0,
    PAN_NOT_DIGITS, /* something other than 0-9 */
    PAN_LENGTH,     /* fewer than 13 or more than 19 digits */
    PAN_LUHN        /* the check digit is wrong */
} pan_verdict_t;

/* A card under every key of the ring, current key first: what the broker looks a card
 * up by (a card enrolled before a rotation is found under its older key). */
typedef struct card_lookup {
    size_t n; /* 0: the number was not given (nothing to look up) */
    uint32_t key_id[CARD_KEYS_MAX];
    uint8_t hash[CARD_KEYS_MAX][CARD_HASH_BYTES];
} card_lookup_t;

/* Check a PAN given as digits only. */
pan_verdict_t pan_check(const char *pan);
const char *pan_verdict_text(pan_verdict_t v);
/* BIN, stars, last four; for an invalid PAN as much as is safe ("*" for a short one). */
void pan_mask(const char *pan, char out[PAN_MASKED_BYTES]);
/* The card id of a valid PAN under key `key`. */
int card_id_of(const card_key_t *key, const char *pan, card_id_t *out);
/* The lookup of a valid PAN under every key of `keys` (at least one). */
int card_lookup_of(const card_keys_t *keys, const char *pan, card_lookup_t *out);
/* "90d", "12h", "30m", "45s": seconds in (0, max]; -1 when it is not one. */
int card_parse_period(const char *text, int64_t max_seconds, int64_t *seconds_out);
/* A ZeroMQ free function (zmq_msg_init_data) for a malloc'd buffer that holds a PAN:
 * clears `hint` bytes (its length, as uintptr_t), then frees it. */
void pan_free_cleared(void *data, void *hint);
/* No core dump of this process: it may hold card numbers in memory (its own buffers, and
 * ZeroMQ's, which it cannot clear). Also keeps other users' debuggers out. */
void pan_protect_process(void);
/* Clear a buffer that held a PAN (explicit_bzero: not optimised away). */
void pan_clear(void *buf, size_t len);

/* Read a card key file: refused unless owner-only; CL_ERR_INVALID with `why` when it is
 * not one. */
int card_keys_load(const char *path, card_keys_t *out, char *why, size_t why_size);
/* Write a new file with one fresh key (id 1), or add the next key to an existing one. */
int card_keys_create(const char *path);
int card_keys_rotate(const char *path, uint32_t *new_id_out);
/* Remove key `id` from the file: CL_ERR_NOT_FOUND when it is not there, CL_ERR_INVALID for
 * the current key (a file always keeps one). The caller makes sure no card needs it. */
int card_keys_retire(const char *path, uint32_t id);
const card_key_t *card_keys_current(const card_keys_t *keys);
/* The default card key file of a ledger directory: beside it, outside it ("DIR.card.key",
 * any trailing '/' of DIR left out). CL_ERR_OVERFLOW when it does not fit. */
int card_keys_default_path(const char *ledger_dir, char *out, size_t size);
const card_key_t *card_keys_find(const card_keys_t *keys, uint32_t id);

#endif
