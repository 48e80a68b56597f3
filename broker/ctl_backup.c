/* coalitionctl backup DEST and restore SRC [--ledger DIR] [--force]: parse, run
 * backup.c / restore.c, print the manifest (text or --json) and what the operator must
 * still do (the card key file is never in a backup). Exit 0 done; 1 refused, verify
 * failed or the backup does not match its manifest; 2 usage or the ledger unreadable. */
#include "backup.h"
#include "ctl.h"

#include "errors.h"
#include "json.h"

#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CTL_WHY_BYTES_MAX 1024

static void print_file_json(const backup_file_t *f)
{
    char hex[BACKUP_HEX_BYTES];
    assert(f->name[0] != '\0');
    backup_hex(f->sha256, sizeof f->sha256, hex);
    printf("{\"name\":");
    json_write_string(stdout, f->name);
    printf(",\"bytes\":%" PRIu64 ",\"sha256\":\"%s\"}", f->bytes, hex);
}

static void print_manifest_json(const backup_manifest_t *m)
{
    char head[BACKUP_HEX_BYTES];
    backup_hex(m->head, sizeof m->head, head);
    printf("\"seq\":%" PRIu64 ",\"head\":\"%s\",\"created_ms\":%" PRId64 ",\"source\":", m->seq,
           head, m->created_ms);
    json_write_string(stdout, m->source);
    printf(",\"card_key_not_copied\":");
    json_write_string(stdout, m->card_key);
    printf(",\"data\":");
    print_file_json(&m->data);
    printf(",\"keys\":[");
    for (size_t i = 0; i < m->key_count; i++) {
        printf("%s", i > 0 ? "," : "");
        print_file_json(&m->keys[i]);
    }
    printf("],\"verified\":%s,\"verify_detail\":", m->verified ? "true" : "false");
    json_write_string(stdout, m->verify_detail);
}

static void print_manifest_text(const backup_manifest_t *m)
{
    static char text[BACKUP_MANIFEST_BYTES_MAX];
    size_t len = 0;
    if (backup_manifest_format(m, text, sizeof text, &len) == CL_OK)
        fwrite(text, 1, len, stdout);
}

/* Refusals and mismatches are 1; a ledger that cannot be opened is 2, as for reports. */
static int exit_code(int rc)
{
    return rc == CL_OK ? 0 : rc == CL_ERR_NOT_FOUND ? EXIT_USAGE : EXIT_DECLINED;
}

int ctl_backup(ctl_t *ctl, int argc, char **argv)
{
    assert(argc >= 1 && strcmp(argv[0], "backup") == 0);
    if (argc != 2 || argv[1][0] == '-') { /* an option, not a directory ("./-x" is) */
        fprintf(stderr, "coalitionctl: usage: backup DEST (a new or empty directory)\n");
        return EXIT_USAGE;
    }
    const char *dest = argv[1];
    static backup_manifest_t m;
    char why[CTL_WHY_BYTES_MAX];
    int rc = backup_create(ctl->ledger_dir, dest, &m, why, sizeof why);
    if (rc != CL_OK && rc != CL_ERR_CORRUPT) {
        fprintf(stderr, "coalitionctl: backup: %s\n", why);
        return exit_code(rc);
    }
    assert((rc == CL_OK) == m.verified);
    if (ctl->json) {
        printf("{\"dest\":");
        json_write_string(stdout, dest);
        printf(",");
        print_manifest_json(&m);
        printf("}\n");
    } else {
        printf("backup of %s in %s (%s/%s):\n", m.source, dest, dest, BACKUP_MANIFEST_FILE);
        print_manifest_text(&m);
        printf("the card key file %s is NOT in the backup (by design): back it up apart, "
               "with the same care as the backup\n",
               m.card_key);
    }
    if (rc != CL_OK)
        fprintf(stderr, "coalitionctl: backup in %s FAILED verify: %s; restore will refuse it\n",
                dest, m.verify_detail);
    return exit_code(rc);
}

static void print_restored(const ctl_t *ctl, const char *src, const backup_restored_t *r)
{
    char card_key[CTL_PATH_BYTES_MAX] = "";
    (void)card_keys_default_path(ctl->ledger_dir, card_key, sizeof card_key);
    bool have_card_key = access(card_key, F_OK) == 0;
    if (ctl->json) {
        printf("{\"restored\":");
        json_write_string(stdout, src);
        printf(",\"ledger\":");
        json_write_string(stdout, ctl->ledger_dir);
        printf(",\"replaced_kept_in\":");
        json_write_string(stdout, r->replaced ? r->aside : "");
        printf(",\"card_key\":");
        json_write_string(stdout, card_key);
        printf(",\"card_key_present\":%s,", have_card_key ? "true" : "false");
        print_manifest_json(&r->manifest);
        printf("}\n");
        return;
    }
    char head[BACKUP_HEX_BYTES];
    backup_hex(r->manifest.head, sizeof r->manifest.head, head);
    printf("restored %s into ledger %s: journal seq %" PRIu64 ", head %s, verify OK (%s)\n", src,
           ctl->ledger_dir, r->manifest.seq, head, r->manifest.verify_detail);
    if (r->replaced)
        printf("the ledger directory it replaced is kept in %s (delete it when no longer "
               "needed)\n",
               r->aside);
    printf("card key file %s: %s\n", card_key,
           have_card_key ? "present (it must be the one of the backed-up ledger)"
                         : "MISSING: put the backed-up ledger's card key file there (or start "
                           "the broker with --card-key FILE); card numbers get 12 without it");
}

int ctl_restore(ctl_t *ctl, int argc, char **argv)
{
    static const struct option longopts[] = {{"force", no_argument, NULL, 'f'},
                                             {"ledger", required_argument, NULL, 'l'},
                                             {NULL, 0, NULL, 0}};
    bool force = false;
    int c;
    assert(argc >= 1 && strcmp(argv[0], "restore") == 0);
    optind = 0; /* GNU getopt: 0 fully resets its state for this second scan */
    while ((c = getopt_long(argc, argv, "fl:", longopts, NULL)) != -1) {
        if (c == 'f')
            force = true;
        else if (c == 'l')
            ctl->ledger_dir = optarg;
        else
            return EXIT_USAGE;
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "coalitionctl: usage: restore SRC [--ledger DIR] [--force]\n");
        return EXIT_USAGE;
    }
    const char *src = argv[optind];
    static backup_restored_t r;
    char why[CTL_WHY_BYTES_MAX];
    int rc = backup_restore(src, ctl->ledger_dir, force, &r, why, sizeof why);
    if (rc != CL_OK) {
        fprintf(stderr, "coalitionctl: restore: %s; ledger %s unchanged\n", why, ctl->ledger_dir);
        return rc == CL_ERR_NOT_FOUND ? EXIT_USAGE : EXIT_DECLINED;
    }
    print_restored(ctl, src, &r);
    return 0;
}
