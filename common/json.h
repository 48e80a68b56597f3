/* Minimal JSON output for command-line tools: strings are escaped per RFC 8259. */
#ifndef COALITION_JSON_H
#define COALITION_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

void json_write_string(FILE *out, const char *s);

/* Reading one flat JSON object per line (what this project's tools write, e.g. the
 * agent's export): a member's string (false when absent, not a string, or longer than
 * size - 1) or integer value. Keys are at most JSON_KEY_BYTES_MAX - 1 bytes. */
#define JSON_KEY_BYTES_MAX 64
bool json_get_string(const char *line, const char *key, char *out, size_t size);
bool json_get_int(const char *line, const char *key, int64_t *out);

#endif
