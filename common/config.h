/* Settings from a file, the environment and the command line, for coalition-broker and
 * coalition-agent. Every long option of a program is also a key of its INI file (libinih)
 * and an environment variable; precedence, highest first:
 *
 *   command line  >  environment (COALITION_<PROGRAM>_<KEY>)  >  file  >  embedded default
 *
 * The file is named by --config FILE or COALITION_<PROGRAM>_CONFIG. Its keys sit in the
 * program's own section ([broker] / [agent]) or before any section:
 *
 *   [broker]
 *   ledger = /var/lib/coalition/ledger
 *   insecure = false            ; options without a value: true or false
 *
 * How it works: config_load builds one argument vector, the program's name, then every
 * setting of the file as "--key=value", then every one of the environment, then the
 * command line's own arguments. The program parses that with its getopt_long loop as
 * before: a later setting overrides an earlier one, which is the precedence above. Keys
 * are checked here (an unknown key is an error naming the file and line); values are
 * checked by the program's own parsing, which names where a bad value came from with
 * config_source. */
#ifndef COALITION_CONFIG_H
#define COALITION_CONFIG_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Settings one file or the environment may hold, and arguments in all. */
#define CONFIG_SETTINGS_MAX 64
#define CONFIG_ARGS_MAX 256
_Static_assert(2 * CONFIG_SETTINGS_MAX < CONFIG_ARGS_MAX,
               "the file's and the environment's settings leave room for the command line");
#define CONFIG_LINE_BYTES_MAX 1024
#define CONFIG_WHY_BYTES_MAX 1280
_Static_assert(CONFIG_WHY_BYTES_MAX > CONFIG_LINE_BYTES_MAX, "an error quotes a whole value");

typedef struct config config_t;

/* What --print-config shows for an option nothing set. */
typedef struct config_default {
    const char *key;
    const char *text;
} config_default_t;

/* `program` names the section and the environment prefix ("broker"). `longopts` is the
 * program's getopt_long table; `fixed` lists keys only the command line may give
 * (NULL-terminated; "help", "config" and "print-config" always are). On an error, `why`
 * says what and where (file:line, environment variable) and CL_ERR_INVALID or
 * CL_ERR_IO (the file cannot be read) is returned. */
int config_load(config_t **out, const char *program, const struct option *longopts,
                const char *const *fixed, int argc, char **argv, char *why, size_t why_size);
void config_destroy(config_t **self_p);

/* The argument vector to parse (argv[argc] is NULL). */
int config_argc(const config_t *self);
char **config_argv(const config_t *self);

/* Where argument `index` of config_argv came from: "FILE:LINE", "environment NAME" or
 * "command line". */
const char *config_source(const config_t *self, int index);
/* "FILE:LINE: " or "environment NAME: " for a setting not from the command line, else "":
 * the prefix of an error message about the argument getopt_long just took (optind - 1). */
const char *config_blame(const config_t *self, int optind_after);

/* Every key with its effective value and where that came from, as INI the program
 * reads back. */
void config_print(const config_t *self, const config_default_t *defaults, FILE *out);

#endif
