/* PAN checks, masking and keyed hashing, and the card key file. See card.h. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "card.h"

#include "errors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_LABEL "card-key-"
#define KEY_FILE_BYTES_MAX 4096
#define KEY_LINE_BYTES_MAX 128

pan_verdict_t pan_check(const char *pan)
{
    size_t n = 0;
    for (; pan[n] != '\0'; n++) {
        if (pan[n] < '0' || pan[n] > '9')
            return PAN_NOT_DIGITS;
        if (n >= PAN_DIGITS_MAX)
            return PAN_LENGTH;
    }
    if (n < PAN_DIGITS_MIN)
        return PAN_LENGTH;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(pan[n - 1 - i] - '0');
        if (i % 2 == 1)
            d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
    }
    return sum % 10 == 0 ? PAN_OK : PAN_LUHN;
}

const char *pan_verdict_text(pan_verdict_t v)
{
    switch (v) {
    case PAN_OK: return "valid";
    case PAN_NOT_DIGITS: return "card number has characters other than digits";
    case PAN_LENGTH: return "card number is not 13 to 19 digits";
    case PAN_LUHN: return "card number fails its check digit (Luhn)";
    default: return "invalid card number";
    }
}

void pan_mask(const char *pan, char out[PAN_MASKED_BYTES])
{
    size_t n = strnlen(pan, PAN_DIGITS_MAX + 1);
    if (n < PAN_DIGITS_MIN || n > PAN_DIGITS_MAX) {
        snprintf(out, PAN_MASKED_BYTES, "*"); /* nothing of a malformed one is shown */
        return;
    }
    for (size_t i = 0; i < n; i++) {
        bool shown = i < CARD_BIN_DIGITS || i >= n - CARD_LAST_DIGITS;
        out[i] = shown && pan[i] >= '0' && pan[i] <= '9' ? pan[i] : '*';
    }
    out[n] = '\0';
    assert(strlen(out) == n);
}

int card_id_of(const card_key_t *key, const char *pan, card_id_t *out)
{
    assert(key != NULL && out != NULL);
    if (pan_check(pan) != PAN_OK)
        return CL_ERR_INVALID;
    size_t n = strlen(pan);
    unsigned len = 0;
    memset(out, 0, sizeof *out);
    if (HMAC(EVP_sha256(), key->secret, CARD_KEY_BYTES, (const unsigned char *)pan, n, out->hash,
             &len) == NULL ||
        len != CARD_HASH_BYTES)
        return CL_ERR_NOMEM;
    out->key_id = key->id;
    memcpy(out->bin, pan, CARD_BIN_DIGITS);
    memcpy(out->last4, pan + n - CARD_LAST_DIGITS, CARD_LAST_DIGITS);
    assert(out->bin[CARD_BIN_DIGITS] == '\0' && out->last4[CARD_LAST_DIGITS] == '\0');
    return CL_OK;
}

int card_lookup_of(const card_keys_t *keys, const char *pan, card_lookup_t *out)
{
    assert(keys != NULL && keys->count > 0 && keys->count <= CARD_KEYS_MAX && out != NULL);
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < keys->count; i++) {
        const card_key_t *key = &keys->keys[keys->count - 1 - i]; /* current first */
        card_id_t id;
        int rc = card_id_of(key, pan, &id);
        if (rc != CL_OK)
            return rc;
        out->key_id[i] = id.key_id;
        memcpy(out->hash[i], id.hash, CARD_HASH_BYTES);
        pan_clear(&id, sizeof id);
    }
    out->n = keys->count;
    assert(out->n > 0 && out->key_id[0] == card_keys_current(keys)->id);
    return CL_OK;
}

int card_parse_period(const char *text, int64_t max_seconds, int64_t *seconds_out)
{
    char *end = NULL;
    unsigned long long n = strtoull(text, &end, 10);
    int64_t unit = end == NULL || end == text ? 0
                   : strcmp(end, "d") == 0    ? 86400
                   : strcmp(end, "h") == 0    ? 3600
                   : strcmp(end, "m") == 0    ? 60
                   : strcmp(end, "s") == 0    ? 1
                                              : 0;
    if (unit == 0 || n == 0 || text[0] == '-' || n > (unsigned long long)(max_seconds / unit))
        return -1;
    *seconds_out = (int64_t)n * unit;
    assert(*seconds_out > 0 && *seconds_out <= max_seconds);
    return 0;
}

void pan_protect_process(void)
{
    struct rlimit none = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &none);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

void pan_free_cleared(void *data, void *hint)
{
    assert(data != NULL);
    pan_clear(data, (size_t)(uintptr_t)hint);
    free(data);
}

void pan_clear(void *buf, size_t len)
{
    if (buf != NULL)
        explicit_bzero(buf, len);
}

/* ---- the card key file ------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int why_set(char *why, size_t size, int rc,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return rc;
}

static bool parse_hex(const char *hex, uint8_t out[CARD_KEY_BYTES])
{
    for (size_t i = 0; i < CARD_KEY_BYTES; i++) {
        unsigned v = 0;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 || hex[2 * i] == ' ' || hex[2 * i + 1] == ' ')
            return false;
        out[i] = (uint8_t)v;
    }
    return strspn(hex, "0123456789abcdefABCDEF") == 2 * CARD_KEY_BYTES &&
           (hex[2 * CARD_KEY_BYTES] == '\0' || hex[2 * CARD_KEY_BYTES] == '\n');
}

static int parse_line(const char *line, card_keys_t *out)
{
    unsigned id = 0;
    int used = 0;
    if (line[0] == '#' || line[0] == '\n' || line[0] == '\0')
        return CL_OK;
    if (sscanf(line, KEY_LABEL "%u = %n", &id, &used) != 1 || used == 0 || id == 0 ||
        out->count == CARD_KEYS_MAX || (out->count > 0 && id <= out->keys[out->count - 1].id))
        return CL_ERR_INVALID;
    card_key_t *k = &out->keys[out->count];
    if (!parse_hex(line + used, k->secret))
        return CL_ERR_INVALID;
    k->id = id;
    out->count++;
    return CL_OK;
}

int card_keys_load(const char *path, card_keys_t *out, char *why, size_t why_size)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return why_set(why, why_size, CL_ERR_IO, "cannot open card key %s: %s", path,
                       strerror(errno));
    struct stat st;
    char text[KEY_FILE_BYTES_MAX + 1];
    ssize_t n =
        fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, text, KEY_FILE_BYTES_MAX) : -1;
    close(fd);
    if (n < 0)
        return why_set(why, why_size, CL_ERR_IO, "cannot read card key %s", path);
    if ((st.st_mode & 077) != 0)
        return why_set(why, why_size, CL_ERR_INVALID,
                       "card key %s is readable by others; chmod 600", path);
    text[n] = '\0';
    int rc = CL_OK;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line != NULL && rc == CL_OK;
         line = strtok_r(NULL, "\n", &save))
        rc = parse_line(line, out);
    pan_clear(text, sizeof text);
    if (rc == CL_OK && out->count == 0)
        rc = CL_ERR_INVALID;
    if (rc != CL_OK) {
        pan_clear(out, sizeof *out);
        return why_set(why, why_size, CL_ERR_INVALID,
                       "%s is not a card key file (card-key-N = 64 hex digits, N ascending)", path);
    }
    return CL_OK;
}

/* Write every key to `path` through a temporary file renamed over it (0600, synced). */
static int write_keys(const char *path, const card_keys_t *keys, bool exclusive)
{
    char tmp[4096], text[KEY_FILE_BYTES_MAX];
    int n = snprintf(text, sizeof text,
                     "# coalition card key: HMAC-SHA256 of card numbers. Keep it owner-only\n"
                     "# (0600) and outside the ledger directory; the highest number is current.\n");
    for (size_t i = 0; i < keys->count && n > 0 && (size_t)n < sizeof text; i++) {
        n += snprintf(text + n, sizeof text - (size_t)n, KEY_LABEL "%u = ", keys->keys[i].id);
        for (size_t b = 0; b < CARD_KEY_BYTES && (size_t)n < sizeof text; b++)
            n += snprintf(text + n, sizeof text - (size_t)n, "%02x", keys->keys[i].secret[b]);
        n += snprintf(text + n, sizeof text - (size_t)n, "\n");
    }
    snprintf(tmp, sizeof tmp, "%s.new", path);
    int fd = n > 0 && (size_t)n < sizeof text
                 ? open(exclusive ? path : tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)
                 : -1;
    int rc = fd < 0 ? (errno == EEXIST ? CL_ERR_EXISTS : CL_ERR_IO) : CL_OK;
    if (fd >= 0) {
        bool ok = fchmod(fd, 0600) == 0 && write(fd, text, (size_t)n) == n && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
        ok = ok && (exclusive || rename(tmp, path) == 0);
        rc = ok ? CL_OK : CL_ERR_IO;
        if (!ok)
            unlink(exclusive ? path : tmp);
    }
    pan_clear(text, sizeof text);
    return rc;
}

int card_keys_create(const char *path)
{
    card_keys_t keys;
    memset(&keys, 0, sizeof keys);
    keys.count = 1;
    keys.keys[0].id = 1;
    int rc = RAND_bytes(keys.keys[0].secret, CARD_KEY_BYTES) == 1 ? CL_OK : CL_ERR_NOMEM;
    if (rc == CL_OK)
        rc = write_keys(path, &keys, true);
    pan_clear(&keys, sizeof keys);
    return rc;
}

int card_keys_rotate(const char *path, uint32_t *new_id_out)
{
    card_keys_t keys;
    char why[256];
    int rc = card_keys_load(path, &keys, why, sizeof why);
    if (rc == CL_OK && keys.count == CARD_KEYS_MAX)
        rc = CL_ERR_OVERFLOW;
    if (rc == CL_OK) {
        card_key_t *k = &keys.keys[keys.count];
        k->id = keys.keys[keys.count - 1].id + 1;
        rc = RAND_bytes(k->secret, CARD_KEY_BYTES) == 1 ? CL_OK : CL_ERR_NOMEM;
        keys.count++;
        *new_id_out = k->id;
    }
    if (rc == CL_OK)
        rc = write_keys(path, &keys, false);
    pan_clear(&keys, sizeof keys);
    return rc;
}

int card_keys_default_path(const char *ledger_dir, char *out, size_t size)
{
    size_t n = strlen(ledger_dir);
    while (n > 1 && ledger_dir[n - 1] == '/')
        n--;
    int len = snprintf(out, size, "%.*s.card.key", (int)n, ledger_dir);
    return len > 0 && (size_t)len < size ? CL_OK : CL_ERR_OVERFLOW;
}

int card_keys_retire(const char *path, uint32_t id)
{
    card_keys_t keys;
    char why[256];
    int rc = card_keys_load(path, &keys, why, sizeof why);
    if (rc != CL_OK)
        return rc;
    size_t at = keys.count;
    for (size_t i = 0; i < keys.count; i++)
        if (keys.keys[i].id == id)
            at = i;
    if (at == keys.count)
        rc = CL_ERR_NOT_FOUND;
    else if (at == keys.count - 1)
        rc = CL_ERR_INVALID; /* the current key */
    if (rc == CL_OK) {
        memmove(&keys.keys[at], &keys.keys[at + 1], (keys.count - at - 1) * sizeof keys.keys[0]);
        keys.count--;
        assert(keys.count > 0 && keys.keys[keys.count - 1].id > id);
        rc = write_keys(path, &keys, false);
    }
    pan_clear(&keys, sizeof keys);
    return rc;
}

const card_key_t *card_keys_current(const card_keys_t *keys)
{
    assert(keys->count > 0 && keys->count <= CARD_KEYS_MAX);
    return &keys->keys[keys->count - 1];
}

const card_key_t *card_keys_find(const card_keys_t *keys, uint32_t id)
{
    for (size_t i = 0; i < keys->count; i++)
        if (keys->keys[i].id == id)
            return &keys->keys[i];
    return NULL;
}
