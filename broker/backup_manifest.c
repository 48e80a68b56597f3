/* The backup manifest (DEST/BACKUP): key=value lines, one value per line, read back
 * strictly: every required key exactly once, no unknown key, numbers and hashes in
 * their exact form, key files only from the known list (a manifest names no path).
 * Also the audit of a copy as a ledger, shared by backup and restore. */
#include "backup_internal.h"

#include "errors.h"
#include "settle.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANIFEST_LINE_BYTES_MAX (BACKUP_PATH_BYTES_MAX + 64)
#define MANIFEST_DECIMAL_DIGITS_MAX 20
#define HEX_DIGITS "0123456789abcdef"

const char *const backup_key_files[BACKUP_KEY_FILES_MAX] = {"broker.key", "broker.pub",
                                                            "operator.sign", "operator.sign.pub"};

/* Keys whose line must appear exactly once; the rest are optional. */
enum { K_FORMAT, K_SCHEMA, K_SEQ, K_HEAD, K_CREATED_MS, K_SOURCE, K_DATA, K_VERIFY, K_REQUIRED };
static const char *const required_keys[K_REQUIRED] = {"format",     "schema", "seq",  "head",
                                                      "created_ms", "source", "data", "verify"};

bool backup_key_file_known(const char *name)
{
    for (size_t i = 0; i < BACKUP_KEY_FILES_MAX; i++)
        if (strcmp(name, backup_key_files[i]) == 0)
            return true;
    return false;
}

void backup_hex(const uint8_t *bytes, size_t n, char *out)
{
    assert(bytes != NULL && out != NULL);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX_DIGITS[bytes[i] >> 4];
        out[2 * i + 1] = HEX_DIGITS[bytes[i] & 0xfu];
    }
    out[2 * n] = '\0';
}

static bool unhex(const char *text, size_t text_len, uint8_t *out, size_t n)
{
    if (text_len != 2 * n)
        return false;
    for (size_t i = 0; i < 2 * n; i++) {
        const char *digit = text[i] != '\0' ? strchr(HEX_DIGITS, text[i]) : NULL;
        if (digit == NULL)
            return false; /* lower-case hex only: one spelling per hash */
        uint8_t v = (uint8_t)(digit - HEX_DIGITS);
        out[i / 2] = (uint8_t)(i % 2 == 0 ? v << 4 : (out[i / 2] | v));
    }
    return true;
}

/* A decimal without sign or leading zeros, at most `max`. */
static bool parse_u64(const char *text, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > MANIFEST_DECIMAL_DIGITS_MAX || (len > 1 && text[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9' || __builtin_mul_overflow(v, 10u, &v) ||
            __builtin_add_overflow(v, (uint64_t)(text[i] - '0'), &v))
            return false;
    }
    *out = v;
    return v <= max;
}

static int put_line(char *out, size_t size, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int put_line(char *out, size_t size, size_t *at, const char *fmt, ...)
{
    assert(*at < size);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *at, size - *at, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *at)
        return CL_ERR_OVERFLOW;
    *at += (size_t)n;
    return CL_OK;
}

static int put_file(char *out, size_t size, size_t *at, const char *key, const backup_file_t *f)
{
    char hex[BACKUP_HEX_BYTES];
    backup_hex(f->sha256, sizeof f->sha256, hex);
    return put_line(out, size, at, "%s=%s %" PRIu64 " %s\n", key, f->name, f->bytes, hex);
}

int backup_manifest_format(const backup_manifest_t *m, char *out, size_t size, size_t *len_out)
{
    assert(size > 0 && m->key_count <= BACKUP_KEY_FILES_MAX);
    if (strpbrk(m->source, "\n") != NULL || strpbrk(m->card_key, "\n") != NULL ||
        strpbrk(m->verify_detail, "\n") != NULL)
        return CL_ERR_INVALID; /* one value per line */
    char head[BACKUP_HEX_BYTES], created[SETTLE_TIME_TEXT_BYTES];
    backup_hex(m->head, sizeof m->head, head);
    settle_time_text(m->created_ms, created);
    size_t at = 0;
    int rc = put_line(out, size, &at,
                      "# coalition ledger backup (coalitionctl backup); coalitionctl restore "
                      "checks it\nformat=%u\nschema=%u\nseq=%" PRIu64 "\nhead=%s\ncreated=%s\n"
                      "created_ms=%" PRId64 "\nsource=%s\ncard_key_not_copied=%s\n",
                      m->format, m->schema, m->seq, head, created, m->created_ms, m->source,
                      m->card_key);
    if (rc == CL_OK)
        rc = put_file(out, size, &at, "data", &m->data);
    for (size_t i = 0; rc == CL_OK && i < m->key_count; i++)
        rc = put_file(out, size, &at, "key", &m->keys[i]);
    if (rc == CL_OK)
        rc = put_line(out, size, &at, "verify=%s\nverify_detail=%s\n",
                      m->verified ? "OK" : "FAILED", m->verify_detail);
    *len_out = at;
    assert(rc != CL_OK || (at > 0 && at < size && out[at - 1] == '\n'));
    return rc;
}

/* "NAME BYTES SHA256HEX" */
static bool parse_file(const char *v, size_t len, backup_file_t *f)
{
    const char *sp1 = memchr(v, ' ', len);
    const char *sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - v)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == v || (size_t)(sp1 - v) >= sizeof f->name)
        return false;
    memcpy(f->name, v, (size_t)(sp1 - v));
    f->name[sp1 - v] = '\0';
    const char *hex = sp2 + 1;
    return parse_u64(sp1 + 1, (size_t)(sp2 - sp1 - 1), UINT64_MAX, &f->bytes) &&
           unhex(hex, len - (size_t)(hex - v), f->sha256, sizeof f->sha256);
}

static bool parse_text(const char *v, size_t len, char *out, size_t size)
{
    if (len >= size || memchr(v, '\0', len) != NULL)
        return false;
    memcpy(out, v, len);
    out[len] = '\0';
    return true;
}

static bool parse_key_file(const char *v, size_t len, backup_manifest_t *m)
{
    if (m->key_count == BACKUP_KEY_FILES_MAX)
        return false;
    backup_file_t *f = &m->keys[m->key_count];
    if (!parse_file(v, len, f) || !backup_key_file_known(f->name) ||
        f->bytes > BACKUP_KEY_FILE_BYTES_MAX)
        return false;
    for (size_t i = 0; i < m->key_count; i++)
        if (strcmp(m->keys[i].name, f->name) == 0)
            return false; /* named twice */
    m->key_count++;
    return true;
}

/* One required key's value into *m. */
static bool parse_required(int key, const char *v, size_t len, backup_manifest_t *m)
{
    uint64_t n = 0;
    switch (key) {
    case K_FORMAT:
        return parse_u64(v, len, UINT32_MAX, &n) &&
               (m->format = (uint32_t)n) == BACKUP_FORMAT_VERSION;
    case K_SCHEMA: return parse_u64(v, len, UINT32_MAX, &n) && ((m->schema = (uint32_t)n), true);
    case K_SEQ: return parse_u64(v, len, UINT64_MAX, &m->seq);
    case K_HEAD: return unhex(v, len, m->head, sizeof m->head);
    case K_CREATED_MS:
        return parse_u64(v, len, INT64_MAX, &n) && ((m->created_ms = (int64_t)n), true);
    case K_SOURCE: return len > 0 && parse_text(v, len, m->source, sizeof m->source);
    case K_DATA:
        return parse_file(v, len, &m->data) && strcmp(m->data.name, BACKUP_DATA_FILE) == 0 &&
               m->data.bytes <= BACKUP_DATA_BYTES_MAX;
    default:
        assert(key == K_VERIFY);
        m->verified = len == 2 && memcmp(v, "OK", 2) == 0;
        return m->verified || (len == 6 && memcmp(v, "FAILED", 6) == 0);
    }
}

/* One "key=value" line (without its newline). */
static int parse_line(const char *line, size_t len, backup_manifest_t *m, bool seen[K_REQUIRED],
                      const char **reason)
{
    const char *eq = memchr(line, '=', len);
    *reason = "not key=value";
    if (eq == NULL)
        return CL_ERR_CORRUPT;
    size_t klen = (size_t)(eq - line), vlen = len - klen - 1;
    const char *v = eq + 1;
    *reason = "bad value";
    for (int k = 0; k < K_REQUIRED; k++) {
        if (strlen(required_keys[k]) != klen || memcmp(line, required_keys[k], klen) != 0)
            continue;
        if (seen[k]) {
            *reason = "key given twice";
            return CL_ERR_CORRUPT;
        }
        seen[k] = true;
        return parse_required(k, v, vlen, m) ? CL_OK : CL_ERR_CORRUPT;
    }
#define KEY_IS(name) (klen == strlen(name) && memcmp(line, name, klen) == 0)
    if (KEY_IS("key"))
        return parse_key_file(v, vlen, m) ? CL_OK : CL_ERR_CORRUPT;
    if (KEY_IS("verify_detail"))
        return parse_text(v, vlen, m->verify_detail, sizeof m->verify_detail) ? CL_OK
                                                                              : CL_ERR_CORRUPT;
    if (KEY_IS("card_key_not_copied"))
        return parse_text(v, vlen, m->card_key, sizeof m->card_key) ? CL_OK : CL_ERR_CORRUPT;
    if (KEY_IS("created"))
        return CL_OK; /* for people; created_ms is the value */
#undef KEY_IS
    *reason = "unknown key";
    return CL_ERR_CORRUPT;
}

int backup_manifest_parse(const char *text, size_t len, backup_manifest_t *m, char *why,
                          size_t why_size)
{
    memset(m, 0, sizeof *m);
    bool seen[K_REQUIRED] = {false};
    size_t at = 0;
    for (int line_no = 1; at < len; line_no++) {
        const char *nl = memchr(text + at, '\n', len - at);
        if (nl == NULL)
            return bio_fail(CL_ERR_CORRUPT, why, why_size, "line %d: no newline at the end",
                            line_no);
        size_t line_len = (size_t)(nl - (text + at));
        const char *line = text + at;
        at += line_len + 1;
        if (line_len > MANIFEST_LINE_BYTES_MAX)
            return bio_fail(CL_ERR_CORRUPT, why, why_size, "line %d: too long", line_no);
        if (line_len == 0 || line[0] == '#')
            continue;
        const char *reason = NULL;
        if (parse_line(line, line_len, m, seen, &reason) != CL_OK)
            return bio_fail(CL_ERR_CORRUPT, why, why_size, "line %d: %s: %.*s", line_no, reason,
                            (int)(line_len < 80 ? line_len : 80), line);
    }
    for (int k = 0; k < K_REQUIRED; k++)
        if (!seen[k])
            return bio_fail(CL_ERR_CORRUPT, why, why_size, "no %s= line", required_keys[k]);
    assert(m->format == BACKUP_FORMAT_VERSION && m->key_count <= BACKUP_KEY_FILES_MAX);
    return CL_OK;
}

/* The chain head: the last entry's hash (zeros for an empty journal). */
static int read_head(ledger_t *copy, uint64_t seq, uint8_t head[DIGEST_SHA256_BYTES])
{
    memset(head, 0, DIGEST_SHA256_BYTES);
    if (seq == 0)
        return CL_OK;
    journal_entry_t *entry[1] = {NULL};
    size_t count = 0;
    int rc = ledger_journal_slice(copy, seq, entry, 1, &count);
    if (rc == CL_OK &&
        (count != 1 || entry[0]->seq != seq || entry[0]->hash.len != DIGEST_SHA256_BYTES))
        rc = CL_ERR_CORRUPT;
    if (rc == CL_OK)
        memcpy(head, entry[0]->hash.data, DIGEST_SHA256_BYTES);
    ledger_journal_slice_free(entry, count);
    return rc;
}

int backup_audit(const char *dir, uint64_t *seq_out, uint8_t head[DIGEST_SHA256_BYTES],
                 char *detail, size_t detail_size)
{
    _Static_assert(DIGEST_SHA256_BYTES == WIRE_HASH_BYTES, "the chain hash is a SHA-256");
    ledger_t *copy = NULL;
    assert(detail_size > 0);
    detail[0] = '\0';
    int rc = ledger_open(&copy, dir, STORE_READ_ONLY);
    if (rc != CL_OK)
        return bio_fail(rc, detail, detail_size, "cannot open the copy in %s as a ledger: %s", dir,
                        cl_strerror(rc));
    *seq_out = ledger_last_seq(copy);
    rc = read_head(copy, *seq_out, head);
    if (rc != CL_OK)
        snprintf(detail, detail_size, "cannot read entry %" PRIu64 " of the copy in %s: %s",
                 *seq_out, dir, cl_strerror(rc));
    else
        rc = ledger_verify(copy, detail, detail_size);
    ledger_destroy(&copy);
    char lock[BACKUP_PATH_BYTES_MAX];
    if (bio_join(lock, sizeof lock, dir, BACKUP_LMDB_LOCK_FILE))
        (void)unlink(lock); /* opening made it; a copy at rest holds only its data */
    for (char *c = detail; *c != '\0'; c++)
        if (*c == '\n')
            *c = ' ';
    return rc;
}
