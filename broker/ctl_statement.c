/* coalitionctl statement and statement-verify: a closed window's statement
 * (statement.c) signed with the operator's Ed25519 key, and the check of such a file.
 *
 * What is signed: the document without its signature. JSON: the file is
 * {"statement":{...},"signature":"ed25519:B64"}\n and the signed bytes are the same text
 * with ,"signature":"ed25519:B64" removed, i.e. {"statement":{...}}\n. CSV: the last line
 * is #signature,ed25519:B64 and the signed bytes are every line before it. */
#include "ctl.h"

#include "errors.h"
#include "json.h"
#include "sign.h"
#include "statement.h"

#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATEMENT_FILE_BYTES_MAX (256u << 20) /* statement-verify reads at most this */
#define JSON_SIGNATURE_TAG ",\"signature\":\""
#define CSV_SIGNATURE_TAG "#signature,"

/* ---- signing and the commands ------------------------------------------------------------ */

/* Append the signature to the unsigned document (see the top of this file). */
/* Sign the unsigned document, then write it with its signature (see the top of this
 * file) to `path` (NULL: standard output); nothing is written when signing fails. */
static int write_signed(const char *doc, size_t len, bool csv, const char *key_path,
                        const char *path)
{
    char sig[SIGN_TEXT_BYTES], why[256];
    int rc = sign_document(key_path, doc, len, sig, why, sizeof why);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: cannot sign the statement: %s\n", why);
        return rc;
    }
    FILE *out = path != NULL ? fopen(path, "we") : stdout;
    if (out == NULL) {
        fprintf(stderr, "coalitionctl: cannot write %s\n", path);
        return CL_ERR_IO;
    }
    bool ok;
    if (csv) {
        ok = fwrite(doc, 1, len, out) == len &&
             fprintf(out, CSV_SIGNATURE_TAG "%s\n", sig) > 0;
    } else {
        assert(len >= 2 && strcmp(doc + len - 2, "}\n") == 0);
        ok = fwrite(doc, 1, len - 2, out) == len - 2 &&
             fprintf(out, JSON_SIGNATURE_TAG "%s\"}\n", sig) > 0;
    }
    ok = fflush(out) == 0 && ok;
    if (out != stdout)
        ok = fclose(out) == 0 && ok;
    return ok ? CL_OK : CL_ERR_IO;
}

typedef struct stmt_args {
    uint64_t window;
    const char *partner, *format, *out_path, *key_path;
    bool csv, detail;
    char key_buf[CTL_PATH_BYTES_MAX];
} stmt_args_t;

static int statement_args(ctl_t *ctl, int argc, char **argv, stmt_args_t *a)
{
    static const struct option longopts[] = {{"partner", required_argument, NULL, 'p'},
                                             {"format", required_argument, NULL, 'f'},
                                             {"detail", no_argument, NULL, 'd'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"sign-key", required_argument, NULL, 'k'},
                                             {NULL, 0, NULL, 0}};
    int c;
    a->format = "json";
    snprintf(a->key_buf, sizeof a->key_buf, "%s/operator.sign", ctl->ledger_dir);
    a->key_path = a->key_buf;
    optind = 0;
    while ((c = getopt_long(argc, argv, "p:f:do:k:", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': a->partner = optarg; break;
        case 'f': a->format = optarg; break;
        case 'd': a->detail = true; break;
        case 'o': a->out_path = optarg; break;
        case 'k': a->key_path = optarg; break;
        default: return EXIT_USAGE;
        }
    }
    char *end = NULL;
    a->window = optind + 1 == argc ? strtoull(argv[optind], &end, 10) : 0;
    a->csv = strcmp(a->format, "csv") == 0;
    if (a->window == 0 || *end != '\0' || (!a->csv && strcmp(a->format, "json") != 0) ||
        (a->partner != NULL && !wire_id_valid(a->partner, PARTNER_ID_LEN_MAX))) {
        fprintf(stderr, "coalitionctl: usage: statement WINDOW [--partner P] [--format csv|json] "
                        "[--detail] [--out FILE] [--sign-key FILE]\n");
        return EXIT_USAGE;
    }
    return 0;
}

static int report_build_error(int rc, uint64_t id)
{
    if (rc == CL_ERR_NOT_FOUND)
        fprintf(stderr, "coalitionctl: no settlement window %" PRIu64 "\n", id);
    else if (rc == CL_ERR_INVALID)
        fprintf(stderr, "coalitionctl: window %" PRIu64 " is not closed yet; statements are "
                        "final, so only closed windows have one (see window close)\n", id);
    else
        fprintf(stderr, "coalitionctl: cannot build the statement of window %" PRIu64 ": %s\n",
                id, cl_strerror(rc));
    return rc == CL_ERR_NOT_FOUND || rc == CL_ERR_INVALID ? EXIT_DECLINED : EXIT_USAGE;
}

int ctl_statement(ctl_t *ctl, int argc, char **argv)
{
    stmt_args_t a;
    memset(&a, 0, sizeof a);
    int rc = statement_args(ctl, argc, argv, &a);
    ledger_t *ledger = NULL;
    if (rc != 0)
        return rc;
    if (ctl_open_read_only(ctl, &ledger) != CL_OK)
        return EXIT_USAGE;
    char *doc = NULL;
    size_t len = 0;
    int built = statement_build(ledger, a.window, a.partner, a.csv, a.detail, &doc, &len);
    ledger_destroy(&ledger);
    if (built != CL_OK)
        return report_build_error(built, a.window);
    if (write_signed(doc, len, a.csv, a.key_path, a.out_path) != CL_OK)
        rc = EXIT_USAGE;
    free(doc);
    return rc;
}

static int read_all(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return CL_ERR_IO;
    *buf = malloc(STATEMENT_FILE_BYTES_MAX + 1);
    *len = *buf != NULL ? fread(*buf, 1, STATEMENT_FILE_BYTES_MAX + 1, f) : 0;
    bool ok = *buf != NULL && !ferror(f) && *len <= STATEMENT_FILE_BYTES_MAX;
    fclose(f);
    if (ok)
        (*buf)[*len] = '\0';
    return ok ? CL_OK : CL_ERR_IO;
}

/* Split a signed file into its signed bytes (rebuilt in place, at most as long as the
 * file) and its signature (copied out). */
static int split_signed(char *file, size_t len, char sig[SIGN_TEXT_BYTES], size_t *signed_len)
{
    if (strlen(file) != len)
        return CL_ERR_CORRUPT; /* a NUL inside: not a statement */
    const char *tag = NULL;
    bool csv = strncmp(file, "record,format,", 14) == 0;
    const char *needle = csv ? "\n" CSV_SIGNATURE_TAG : JSON_SIGNATURE_TAG;
    for (const char *p = strstr(file, needle); p != NULL; p = strstr(p + 1, needle))
        tag = p;
    if (tag == NULL || (!csv && strncmp(file, "{\"statement\":", 13) != 0))
        return CL_ERR_CORRUPT;
    const char *start = tag + strlen(needle);
    const char *end = csv ? strchr(start, '\n') : strchr(start, '"');
    const char *tail = csv ? "\n" : "\"}\n";
    if (end == NULL || (size_t)(end - start) != SIGN_TEXT_BYTES - 1 || strcmp(end, tail) != 0)
        return CL_ERR_CORRUPT;
    memcpy(sig, start, SIGN_TEXT_BYTES - 1);
    sig[SIGN_TEXT_BYTES - 1] = '\0';
    size_t keep = (size_t)(tag - file) + (csv ? 1 : 0);
    if (!csv)
        memcpy(file + keep, "}\n", 2); /* {"statement":{...}} and its newline */
    *signed_len = keep + (csv ? 0 : 2);
    assert(*signed_len <= len);
    return CL_OK;
}

int ctl_statement_verify(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {{"pubkey", required_argument, NULL, 'k'},
                                             {NULL, 0, NULL, 0}};
    const char *pubkey = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "k:", longopts, NULL)) != -1) {
        if (c != 'k')
            return EXIT_USAGE;
        pubkey = optarg;
    }
    if (optind + 1 != argc || pubkey == NULL) {
        fprintf(stderr, "coalitionctl: usage: statement-verify FILE --pubkey KEY\n");
        return EXIT_USAGE;
    }
    char *file = NULL, sig[SIGN_TEXT_BYTES], why[256] = "";
    size_t len = 0, signed_len = 0;
    int rc = read_all(argv[optind], &file, &len);
    if (rc != CL_OK)
        snprintf(why, sizeof why, "cannot read %s", argv[optind]);
    else if ((rc = split_signed(file, len, sig, &signed_len)) != CL_OK)
        snprintf(why, sizeof why, "%s is not a signed statement", argv[optind]);
    else
        rc = sign_check(pubkey, file, signed_len, sig, why, sizeof why);
    free(file);
    if (ctl->json) {
        printf("{\"verified\":%s,\"text\":", rc == CL_OK ? "true" : "false");
        json_write_string(stdout, rc == CL_OK ? "signature valid" : why);
        printf("}\n");
    } else if (rc == CL_OK) {
        printf("%s: signature valid (Ed25519, %s)\n", argv[optind], pubkey);
    } else {
        fprintf(stderr, "coalitionctl: %s\n", why);
    }
    return rc == CL_OK ? 0 : rc == CL_ERR_CORRUPT ? EXIT_DECLINED : EXIT_USAGE;
}

int ctl_signing_key_new(const char *dir)
{
    char secret[CTL_PATH_BYTES_MAX], public[CTL_PATH_BYTES_MAX];
    snprintf(secret, sizeof secret, "%s/operator.sign", dir);
    snprintf(public, sizeof public, "%s/operator.sign.pub", dir);
    return sign_key_new(secret, public);
}
