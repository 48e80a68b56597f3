/* Minimal JSON output for command-line tools: strings are escaped per RFC 8259. */
#ifndef COALITION_JSON_H
#define COALITION_JSON_H

#include <stdio.h>

void json_write_string(FILE *out, const char *s);

#endif
