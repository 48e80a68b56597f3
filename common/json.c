/* JSON string escaping. */
#include "json.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void json_write_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

/* ---- reading flat objects ---------------------------------------------------------------- */

/* A string token at *p (after its opening quote) into out; false when malformed or too
 * long. Escapes: \" \\ \/ \n \r \t and \u00XX (what json_write_string writes). */
static bool read_string(const char **p, char *out, size_t size)
{
    size_t n = 0;
    const char *s = *p;
    while (*s != '"') {
        char c = *s++;
        if (c == '\0' || (unsigned char)c < 0x20)
            return false;
        if (c == '\\') {
            char e = *s++;
            unsigned v = 0;
            switch (e) {
            case '"': case '\\': case '/': c = e; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                for (int i = 0; i < 4; i++) {
                    if (!isxdigit((unsigned char)s[i]))
                        return false; /* exactly four hex digits, never past the end */
                    v = v * 16 + (unsigned)(isdigit((unsigned char)s[i])
                                                ? s[i] - '0'
                                                : (tolower((unsigned char)s[i]) - 'a' + 10));
                }
                if (v == 0 || v > 0x7f)
                    return false;
                s += 4;
                c = (char)v;
                break;
            default: return false;
            }
        }
        if (out != NULL && n + 1 >= size)
            return false;
        if (out != NULL)
            out[n] = c;
        n++;
    }
    if (out != NULL)
        out[n] = '\0';
    *p = s + 1;
    return true;
}

/* Skip a scalar value (number, true, false, null) at *p. */
static bool skip_scalar(const char **p)
{
    const char *s = *p;
    while (*s != '\0' && *s != ',' && *s != '}' && *s != ' ')
        s++;
    bool ok = s > *p;
    *p = s;
    return ok;
}

/* Find `key` among the members of the one flat object on `line`; *value points at its
 * value. */
static bool find_member(const char *line, const char *key, const char **value)
{
    char name[JSON_KEY_BYTES_MAX];
    const char *p = line;
    while (*p == ' ')
        p++;
    if (*p++ != '{')
        return false;
    while (*p == '"') {
        p++;
        if (!read_string(&p, name, sizeof name) || *p++ != ':')
            return false;
        if (strcmp(name, key) == 0) {
            *value = p;
            return true;
        }
        bool ok = *p == '"' ? (p++, read_string(&p, NULL, 0)) : skip_scalar(&p);
        if (!ok || (*p != ',' && *p != '}'))
            return false;
        if (*p++ == '}')
            return false;
    }
    return false;
}

bool json_get_string(const char *line, const char *key, char *out, size_t size)
{
    assert(line != NULL && key != NULL && strlen(key) < JSON_KEY_BYTES_MAX && size > 0);
    const char *v = NULL;
    if (!find_member(line, key, &v) || *v != '"')
        return false;
    v++;
    return read_string(&v, out, size);
}

bool json_get_int(const char *line, const char *key, int64_t *out)
{
    assert(line != NULL && key != NULL && out != NULL);
    const char *v = NULL;
    if (!find_member(line, key, &v))
        return false;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || errno != 0 || (*end != ',' && *end != '}'))
        return false;
    *out = n;
    return true;
}
