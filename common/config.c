/* Settings from a file, the environment and the command line. See config.h. */
#include "config.h"

#include "errors.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define PROGRAM_BYTES_MAX 16
#define PREFIX_BYTES_MAX (PROGRAM_BYTES_MAX + 16)
#define SOURCE_BYTES_MAX 512
#define KEY_BYTES_MAX 64
#define COMMAND_LINE "command line"

struct config {
    int argc;
    char *argv[CONFIG_ARGS_MAX + 1];
    char *source[CONFIG_ARGS_MAX]; /* NULL: the command line */
    bool owned[CONFIG_ARGS_MAX];   /* argv[i] made here (freed with the config) */
    const struct option *longopts;
    const char *const *fixed;
    char program[PROGRAM_BYTES_MAX];
    char env_prefix[PREFIX_BYTES_MAX]; /* "COALITION_BROKER_" */
    char blame[SOURCE_BYTES_MAX + 4];
    /* Flags set false (no argument carries them): the key and where, for --print-config. */
    size_t cleared_count;
    struct {
        char key[KEY_BYTES_MAX];
        char source[SOURCE_BYTES_MAX];
    } cleared[2 * CONFIG_SETTINGS_MAX];
};

/* The file being read: inih asks for it line by line, so its lines can be counted. */
typedef struct file_reader {
    config_t *config;
    FILE *f;
    const char *path;
    int line;
    int error_line; /* the first error's line, 0 : none */
    char *why;
    size_t why_size;
} file_reader_t;

static bool always_fixed(const char *key)
{
    return strcmp(key, "help") == 0 || strcmp(key, "config") == 0 ||
           strcmp(key, "print-config") == 0;
}

/* The long option a key names, unless only the command line may give it. */
static const struct option *settable(const config_t *c, const char *key)
{
    assert(key != NULL && c->longopts != NULL);
    if (always_fixed(key))
        return NULL;
    for (size_t i = 0; c->fixed != NULL && c->fixed[i] != NULL; i++) {
        if (strcmp(c->fixed[i], key) == 0)
            return NULL;
    }
    for (const struct option *o = c->longopts; o->name != NULL; o++) {
        if (strcmp(o->name, key) == 0)
            return o;
    }
    return NULL;
}

static int push(config_t *c, char *arg, bool owned, const char *source)
{
    assert(arg != NULL && c->argc >= 0 && c->argc <= CONFIG_ARGS_MAX);
    if (c->argc >= CONFIG_ARGS_MAX) {
        if (owned)
            free(arg);
        return CL_ERR_OVERFLOW;
    }
    c->argv[c->argc] = arg;
    c->owned[c->argc] = owned;
    c->source[c->argc] = source != NULL ? strdup(source) : NULL;
    if (source != NULL && c->source[c->argc] == NULL) {
        if (owned)
            free(arg);
        return CL_ERR_NOMEM;
    }
    c->argc++;
    c->argv[c->argc] = NULL;
    assert(c->argc <= CONFIG_ARGS_MAX);
    return CL_OK;
}

static void say(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
            *out = strcmp(v, yes[i]) == 0;
            return CL_OK;
        }
    }
    return CL_ERR_INVALID;
}

/* A flag set false by a higher source (the environment over the file): the arguments
 * setting it true so far go, and --print-config names where false came from. */
static int clear_flag(config_t *c, const char *key, const char *where)
{
    char arg[KEY_BYTES_MAX + 2];
    snprintf(arg, sizeof arg, "--%.*s", KEY_BYTES_MAX - 1, key);
    int kept = 1;
    for (int i = 1; i < c->argc; i++) {
        if (strcmp(c->argv[i], arg) == 0) {
            if (c->owned[i])
                free(c->argv[i]);
            free(c->source[i]);
            continue;
        }
        c->argv[kept] = c->argv[i];
        c->owned[kept] = c->owned[i];
        c->source[kept++] = c->source[i];
    }
    c->argc = kept;
    c->argv[kept] = NULL;
    if (c->cleared_count >= sizeof c->cleared / sizeof c->cleared[0])
        return CL_ERR_OVERFLOW;
    snprintf(c->cleared[c->cleared_count].key, KEY_BYTES_MAX, "%s", key);
    snprintf(c->cleared[c->cleared_count++].source, SOURCE_BYTES_MAX, "%s", where);
    assert(c->argv[c->argc] == NULL);
    return CL_OK;
}

/* "value" or 'value': INI habit, but inih keeps the quotes, and no setting here (a path,
 * an endpoint, an id, a number) is meant with them. */
static bool quoted(const char *value)
{
    size_t n = strlen(value);
    return n >= 2 && (value[0] == '"' || value[0] == '\'') && value[n - 1] == value[0];
}

/* One setting as an argument: "--key=value", or "--key" for a flag that is true (a false
 * one adds nothing). `where` is the setting's source for messages and --print-config. */
static int add_setting(config_t *c, const char *key, const char *value, const char *where,
                       char *why, size_t why_size)
{
    assert(value != NULL && where != NULL && why_size > 0);
    const struct option *o = settable(c, key);
    if (o == NULL) {
        say(why, why_size,
            "%s: unknown setting '%s' (the settings are the long options --help lists, but "
            "for those that act, such as help and print-config)",
            where, key);
        return CL_ERR_INVALID;
    }
    size_t n = strlen(key) + strlen(value) + 4;
    char *arg = malloc(n);
    if (arg == NULL)
        return CL_ERR_NOMEM;
    if (o->has_arg == no_argument) {
        bool on = false;
        if (parse_bool(value, &on) != CL_OK) {
            say(why, why_size, "%s: %s takes true or false, not '%s'", where, key, value);
            free(arg);
            return CL_ERR_INVALID;
        }
        if (!on) {
            free(arg);
            int rc = clear_flag(c, key, where);
            if (rc == CL_ERR_OVERFLOW)
                say(why, why_size, "%s: more than %d settings", where, CONFIG_SETTINGS_MAX);
            return rc;
        }
        snprintf(arg, n, "--%s", key);
    } else if (value[0] == '\0') {
        say(why, why_size, "%s: %s needs a value", where, key);
        free(arg);
        return CL_ERR_INVALID;
    } else if (quoted(value)) {
        say(why, why_size, "%s: %s: quotes are taken literally; write the value without them",
            where, key);
        free(arg);
        return CL_ERR_INVALID;
    } else {
        snprintf(arg, n, "--%s=%s", key, value);
    }
    assert(arg[0] == '-' && arg[1] == '-' && strncmp(arg + 2, key, strlen(key)) == 0);
    int rc = push(c, arg, true, where);
    if (rc == CL_ERR_OVERFLOW)
        say(why, why_size, "%s: more than %d settings", where, CONFIG_SETTINGS_MAX);
    return rc;
}

static void line_error(file_reader_t *r, const char *what)
{
    if (r->error_line != 0)
        return; /* the first error is the one reported */
    r->error_line = r->line;
    say(r->why, r->why_size, "%s:%d: %s", r->path, r->line, what);
}

/* One line for inih, read byte by byte, without its indentation: a line too long for
 * inih's buffer, or holding a NUL byte (which would cut the value short unseen), is an
 * error naming it. */
static char *read_line(char *str, int num, void *stream)
{
    file_reader_t *r = stream;
    assert(num > 2);
    size_t cap = (size_t)num - 1, n = 0;
    bool nul = false, too_long = false;
    int ch = EOF;
    while ((ch = fgetc(r->f)) != EOF) {
        nul |= ch == '\0';
        if (n < cap)
            str[n++] = ch == '\0' ? ' ' : (char)ch;
        else
            too_long = true;
        if (ch == '\n')
            break;
    }
    if (n == 0)
        return NULL;
    str[n] = '\0';
    r->line++;
    /* Indented keys are keys: inih would take an indented line for the line before's
     * value continued (INI_ALLOW_MULTILINE), which no setting here has. */
    size_t indent = strspn(str, " \t");
    memmove(str, str + indent, n - indent + 1);
    char what[64];
    snprintf(what, sizeof what, "line longer than %d characters", num - 2);
    if (too_long || nul)
        line_error(r, too_long ? what : "a NUL byte in the line");
    return str;
}

/* Where the file set flag `key` before (true or false: neither leaves a "--key=" the
 * duplicate check after the file can see), or NULL. The file is read first, so every
 * setting so far is its own. */
static const char *flag_set_earlier(const config_t *c, const char *key)
{
    const struct option *o = settable(c, key);
    if (o == NULL || o->has_arg != no_argument)
        return NULL;
    for (int i = 1; i < c->argc; i++) {
        if (c->argv[i][0] == '-' && c->argv[i][1] == '-' && strcmp(c->argv[i] + 2, key) == 0)
            return c->source[i];
    }
    for (size_t k = 0; k < c->cleared_count; k++) {
        if (strcmp(c->cleared[k].key, key) == 0)
            return c->cleared[k].source;
    }
    return NULL;
}

static int on_setting(void *user, const char *section, const char *key, const char *value)
{
    file_reader_t *r = user;
    assert(section != NULL && key != NULL && value != NULL && r->line > 0);
    if (r->error_line != 0)
        return 1; /* the first error is the one reported; the rest is read, not used */
    char where[SOURCE_BYTES_MAX];
    snprintf(where, sizeof where, "%.400s:%d", r->path, r->line);
    const char *earlier = NULL;
    int rc = CL_OK;
    if (section[0] != '\0' && strcmp(section, r->config->program) != 0) {
        say(r->why, r->why_size, "%s: unknown section [%s] (settings go in [%s])", where, section,
            r->config->program);
        rc = CL_ERR_INVALID;
    } else if ((earlier = flag_set_earlier(r->config, key)) != NULL) {
        say(r->why, r->why_size, "%s: %s is set twice (also at %s)", where, key, earlier);
        rc = CL_ERR_INVALID;
    } else {
        rc = add_setting(r->config, key, value, where, r->why, r->why_size);
    }
    if (rc != CL_OK)
        r->error_line = r->line;
    return rc == CL_OK;
}

static int load_file(config_t *c, const char *path, char *why, size_t why_size)
{
    assert(path != NULL);
    file_reader_t r = {c, fopen(path, "r"), path, 0, 0, why, why_size};
    if (r.f == NULL) {
        say(why, why_size, "cannot read the configuration file %s", path);
        return CL_ERR_IO;
    }
    int first = c->argc;
    int line = ini_parse_stream(read_line, &r, on_setting, &r);
    /* A read error looks like the end of the file to inih (a directory, EIO). */
    int read_errno = ferror(r.f) ? (errno != 0 ? errno : EIO) : 0;
    fclose(r.f);
    if (read_errno != 0) {
        say(why, why_size, "cannot read the configuration file %s: %s", path, strerror(read_errno));
        return CL_ERR_IO;
    }
    if (line != 0 && r.error_line == 0)
        say(why, why_size, "%s:%d: expected 'key = value', '[%s]' or a comment", path,
            line > 0 ? line : r.line, c->program);
    if (line == 0 && r.error_line == 0) {
        /* A key twice in one file is a mistake: which one was meant? */
        for (int i = first; i < c->argc; i++) {
            for (int j = first; j < i; j++) {
                size_t k = strcspn(c->argv[i], "=");
                if (strncmp(c->argv[i], c->argv[j], k) == 0 &&
                    (c->argv[j][k] == '=' || c->argv[j][k] == '\0')) {
                    say(why, why_size, "%s: %.*s is set twice (also at %s)", c->source[i],
                        (int)k - 2, c->argv[i] + 2, c->source[j]);
                    return CL_ERR_INVALID;
                }
            }
        }
    }
    return line == 0 && r.error_line == 0 ? CL_OK : CL_ERR_INVALID;
}

/* COALITION_BROKER_MAX_CONNECTIONS -> max-connections. */
static bool env_key(const char *name_value, size_t prefix_len, char *key, size_t size)
{
    assert(prefix_len > 0 && size > 1);
    const char *name = name_value + prefix_len;
    size_t n = strcspn(name, "=");
    if (n == 0 || n >= size)
        return false;
    for (size_t i = 0; i < n; i++)
        key[i] = name[i] == '_' ? '-' : (char)tolower((unsigned char)name[i]);
    key[n] = '\0';
    return true;
}

static int load_environment(config_t *c, char *why, size_t why_size)
{
    size_t prefix_len = strlen(c->env_prefix);
    assert(prefix_len > 0 && c->env_prefix[prefix_len - 1] == '_');
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, c->env_prefix, prefix_len) != 0)
            continue;
        char key[KEY_BYTES_MAX], where[SOURCE_BYTES_MAX];
        size_t name_len = strcspn(*e, "=");
        snprintf(where, sizeof where, "environment %.*s", (int)name_len, *e);
        if (!env_key(*e, prefix_len, key, sizeof key)) {
            say(why, why_size, "%s: unknown setting", where);
            return CL_ERR_INVALID;
        }
        if (strcmp(key, "config") == 0)
            continue;
        const char *value = (*e)[name_len] == '=' ? *e + name_len + 1 : "";
        int rc = add_setting(c, key, value, where, why, why_size);
        if (rc != CL_OK)
            return rc;
    }
    return CL_OK;
}

static const struct option *option_at(const config_t *c, int i, const char **value, int *used);

/* The long option `a` ("--name" or "--name=value") abbreviates, as getopt_long reads
 * it: the one option whose name starts with it (an exact name is no abbreviation). */
static const struct option *abbreviated(const struct option *longopts, const char *a)
{
    assert(a[0] == '-' && a[1] == '-');
    size_t len = strcspn(a + 2, "=");
    const struct option *hit = NULL;
    for (const struct option *o = longopts; o->name != NULL; o++) {
        if (strncmp(o->name, a + 2, len) != 0)
            continue;
        if (strlen(o->name) == len)
            return NULL;
        if (hit != NULL)
            return NULL; /* ambiguous: getopt_long refuses it */
        hit = o;
    }
    return hit;
}

/* The command line's arguments as getopt_long reads them, abbreviated long options
 * spelled out (so --conf FILE is read as the file it names, and --print-config credits
 * it), up to "--" or the first argument that is no option (a command). */
static int spell_out(config_t *c, int argc, char **argv, char **cmd, bool *owned)
{
    assert(argc <= CONFIG_ARGS_MAX && c->argc == 1);
    bool options = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        cmd[i] = argv[i];
        if (!options)
            continue;
        if (strcmp(a, "--") == 0 || a[0] != '-' || a[1] == '\0') {
            options = false;
            continue;
        }
        const struct option *o = a[1] == '-' ? abbreviated(c->longopts, a) : NULL;
        if (o != NULL) {
            const char *rest = a + 2 + strcspn(a + 2, "=");
            size_t n = strlen(o->name) + strlen(rest) + 3;
            if ((cmd[i] = malloc(n)) == NULL)
                return CL_ERR_NOMEM;
            snprintf(cmd[i], n, "--%s%s", o->name, rest);
            owned[i] = true;
        }
        const char *value = NULL;
        int used = 1;
        c->argv[c->argc] = cmd[i]; /* option_at reads the vector */
        c->argv[c->argc + 1] = i + 1 < argc ? argv[i + 1] : NULL;
        (void)option_at(c, c->argc, &value, &used);
        c->argv[c->argc] = c->argv[c->argc + 1] = NULL;
        if (used == 2 && i + 1 < argc) {
            i++;
            cmd[i] = argv[i];
        }
    }
    return CL_OK;
}

/* --config FILE or --config=FILE on the command line (spelled out), else the
 * environment's. Given twice it is an error: which file was meant? */
static int config_file(const config_t *c, int argc, char **cmd, const char **file, char *why,
                       size_t why_size)
{
    *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(cmd[i], "--") == 0)
            break;
        const char *f = NULL;
        if (strcmp(cmd[i], "--config") == 0 && i + 1 < argc)
            f = cmd[++i];
        else if (strncmp(cmd[i], "--config=", 9) == 0)
            f = cmd[i] + 9;
        if (f != NULL && *file != NULL) {
            say(why, why_size, "--config given twice (%s and %s): give one file", *file, f);
            return CL_ERR_INVALID;
        }
        *file = f != NULL ? f : *file;
    }
    char name[PREFIX_BYTES_MAX + 8];
    snprintf(name, sizeof name, "%sCONFIG", c->env_prefix);
    if (*file == NULL)
        *file = getenv(name);
    return CL_OK;
}

int config_load(config_t **out, const char *program, const struct option *longopts,
                const char *const *fixed, int argc, char **argv, char *why, size_t why_size)
{
    assert(argc >= 1 && strlen(program) < PROGRAM_BYTES_MAX);
    *out = NULL;
    why[0] = '\0';
    config_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CL_ERR_NOMEM;
    c->longopts = longopts;
    c->fixed = fixed;
    snprintf(c->program, sizeof c->program, "%s", program);
    int n = snprintf(c->env_prefix, sizeof c->env_prefix, "COALITION_");
    for (const char *p = program; *p != '\0'; p++)
        c->env_prefix[n++] = (char)toupper((unsigned char)*p);
    snprintf(c->env_prefix + n, sizeof c->env_prefix - (size_t)n, "_");
    int rc = argc <= CONFIG_ARGS_MAX ? push(c, argv[0], false, NULL) : CL_ERR_OVERFLOW;
    char *cmd[CONFIG_ARGS_MAX];
    bool cmd_owned[CONFIG_ARGS_MAX] = {false};
    int spelled = rc == CL_OK ? argc : 1; /* cmd[1 .. spelled - 1] may be owned */
    if (rc == CL_OK)
        rc = spell_out(c, argc, argv, cmd, cmd_owned);
    const char *file = NULL;
    if (rc == CL_OK)
        rc = config_file(c, argc, cmd, &file, why, why_size);
    if (rc == CL_OK && file != NULL)
        rc = load_file(c, file, why, why_size);
    if (rc == CL_OK)
        rc = load_environment(c, why, why_size);
    int i = 1;
    for (; rc == CL_OK && i < argc; i++) {
        rc = push(c, cmd[i], cmd_owned[i], NULL);
        cmd_owned[i] = false; /* the config has it (push frees it on failure) */
    }
    for (; i < spelled; i++) {
        if (cmd_owned[i])
            free(cmd[i]);
    }
    if (rc == CL_ERR_OVERFLOW && why[0] == '\0')
        say(why, why_size, "more than %d arguments", CONFIG_ARGS_MAX);
    if (rc != CL_OK) {
        config_destroy(&c);
        return rc == CL_ERR_IO ? CL_ERR_IO : CL_ERR_INVALID;
    }
    assert(c->argv[c->argc] == NULL);
    *out = c;
    return CL_OK;
}

void config_destroy(config_t **self_p)
{
    config_t *c = *self_p;
    if (c == NULL)
        return;
    for (int i = 0; i < c->argc; i++) {
        if (c->owned[i])
            free(c->argv[i]);
        free(c->source[i]);
    }
    free(c);
    *self_p = NULL;
}

int config_argc(const config_t *self) { return self->argc; }
char **config_argv(const config_t *self) { return (char **)self->argv; }

const char *config_source(const config_t *self, int index)
{
    assert(index >= 0);
    if (index >= self->argc || self->source[index] == NULL)
        return COMMAND_LINE;
    return self->source[index];
}

const char *config_blame(const config_t *self, int optind_after)
{
    config_t *c = (config_t *)self; /* the message buffer only */
    int index = optind_after - 1;
    if (index < 1 || index >= c->argc || c->source[index] == NULL)
        return "";
    snprintf(c->blame, sizeof c->blame, "%s: ", c->source[index]);
    return c->blame;
}

/* The long option argument `i` of the vector sets, its value and how many arguments it
 * takes (1, or 2 with a separate value); NULL for anything else. */
static const struct option *option_at(const config_t *c, int i, const char **value, int *used)
{
    assert(i >= 1 && i <= c->argc && c->argv[i] != NULL); /* spell_out: one past */
    const char *a = c->argv[i];
    *used = 1;
    *value = "true";
    const struct option *hit = NULL;
    if (a[0] == '-' && a[1] == '-') {
        size_t len = strcspn(a + 2, "=");
        for (const struct option *o = c->longopts; o->name != NULL && hit == NULL; o++)
            hit = strlen(o->name) == len && strncmp(o->name, a + 2, len) == 0 ? o : NULL;
        if (hit != NULL && hit->has_arg != no_argument)
            *value = a[2 + len] == '=' ? a + 3 + len : c->argv[i + 1];
    } else if (a[0] == '-' && a[1] != '\0') {
        for (const struct option *o = c->longopts; o->name != NULL && hit == NULL; o++)
            hit = o->flag == NULL && o->val == a[1] ? o : NULL;
        if (hit != NULL && hit->has_arg != no_argument)
            *value = a[2] != '\0' ? a + 2 : c->argv[i + 1];
    }
    if (hit != NULL && hit->has_arg != no_argument && *value == c->argv[i + 1])
        *used = 2;
    if (*value == NULL)
        *value = "";
    assert(*used == 1 || *used == 2);
    return hit;
}

void config_print(const config_t *c, const config_default_t *defaults, FILE *out)
{
    assert(out != NULL && c->argc >= 1);
    fprintf(out,
            "; coalition-%s: the settings in effect (command line > environment > file > "
            "default)\n",
            c->program);
    fprintf(out, "[%s]\n", c->program);
    for (const struct option *o = c->longopts; o->name != NULL; o++) {
        if (settable(c, o->name) == NULL)
            continue;
        const char *value = NULL, *source = "default";
        for (int i = 1, used = 1; i < c->argc && strcmp(c->argv[i], "--") != 0; i += used) {
            const char *v = NULL;
            if (option_at(c, i, &v, &used) == o) {
                value = v;
                source = config_source(c, i);
            }
        }
        for (size_t k = 0; value == NULL && k < c->cleared_count; k++) {
            if (strcmp(c->cleared[k].key, o->name) == 0)
                source = c->cleared[k].source; /* the last one set it false */
        }
        if (value == NULL && strcmp(source, "default") != 0)
            value = "false";
        for (size_t d = 0; value == NULL && defaults != NULL && defaults[d].key != NULL; d++)
            value = strcmp(defaults[d].key, o->name) == 0 ? defaults[d].text : NULL;
        if (value == NULL)
            value = o->has_arg == no_argument ? "false" : "";
        /* A default is commented out: read back, it stays a default (some are not
         * values, "LEDGER/broker.key", and some options have none). */
        bool by_default = strcmp(source, "default") == 0;
        size_t width = strlen(o->name) + strlen(value) + (by_default ? 2 : 0);
        fprintf(out, "%s%s = %s%*s; %s\n", by_default ? "; " : "", o->name, value,
                (int)(width < 40 ? 40 - width : 1), "", source);
    }
}
