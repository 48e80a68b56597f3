/* coalitionctl's parts: the shared command context and helpers (coalitionctl.c), the
 * settlement commands (ctl_settle.c) and statements (ctl_statement.c). */
#ifndef COALITION_CTL_H
#define COALITION_CTL_H

#include "ledger.h"
#include "wire.h"

#include <stdbool.h>

#define ENDPOINT_BYTES_MAX 512
#define EXIT_DECLINED 1
#define EXIT_USAGE 2
#define CTL_PATH_BYTES_MAX 4096

typedef struct ctl {
    const char *ledger_dir;
    const char *admin_endpoint;
    char admin_buf[ENDPOINT_BYTES_MAX];
    bool json;
} ctl_t;

/* An operator envelope with a fresh txn id (held in txn_id). */
void ctl_admin_envelope(envelope_t *env, char *txn_id, size_t size);
/* Send over the admin socket. auth_out NULL: print the answer; otherwise hand it over
 * (free with wire_auth_free). 0 approved, EXIT_DECLINED, or EXIT_USAGE (no answer). */
int ctl_send_admin(ctl_t *ctl, const envelope_t *env, authorization_t **auth_out);
int ctl_open_read_only(ctl_t *ctl, ledger_t **ledger);

/* ctl_settle.c: contract set|show, partner topup, settlement set|show, window list|close,
 * liability. argv[0] is the command's first word. */
int ctl_contract(ctl_t *ctl, int argc, char **argv);
/* 0 for a receipt locale the catalogue has ("" is en), else EXIT_USAGE and a message. */
int ctl_check_locale(const char *code);
int ctl_partner_topup(ctl_t *ctl, int argc, char **argv);
int ctl_settlement(ctl_t *ctl, int argc, char **argv);
int ctl_window(ctl_t *ctl, int argc, char **argv);
/* "now", "@EPOCH_MS", "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS[.mmm]Z" (UTC). */
int ctl_parse_time(const char *text, int64_t *ms_out);

/* ctl_statement.c: statement, statement-verify; the operator's signing key pair. */
int ctl_statement(ctl_t *ctl, int argc, char **argv);
int ctl_statement_verify(ctl_t *ctl, int argc, char **argv);
int ctl_signing_key_new(const char *dir);

/* ctl_reconcile.c: an agent's export of a window against the ledger. */
int ctl_reconcile(ctl_t *ctl, int argc, char **argv);

/* ctl_cards.c: bank add, enroll (a bank's bulk file), card-key rotate|list. */
int ctl_bank(ctl_t *ctl, int argc, char **argv);
int ctl_enroll(ctl_t *ctl, int argc, char **argv);
int ctl_card_key(ctl_t *ctl, int argc, char **argv);
int ctl_card_settings(ctl_t *ctl, int argc, char **argv);

/* ctl_lifecycle.c: expiry-policy (show or set) and expire --as-of TIME. */
int ctl_expiry_policy(ctl_t *ctl, int argc, char **argv);
int ctl_expire(ctl_t *ctl, int argc, char **argv);
/* ctl_lifecycle.c: tiers (show, --set, --none) and rule add|list|end. */
int ctl_tiers(ctl_t *ctl, int argc, char **argv);
int ctl_rule(ctl_t *ctl, int argc, char **argv);

/* coalitionctl.c: one journal entry, a line of text or JSON (ctx: the ctl_t). */
int ctl_print_entry(const journal_entry_t *e, void *ctx);
/* ctl_tail.c: the journal feed from a seq, in order, each entry once. */
int ctl_tail(ctl_t *ctl, int argc, char **argv);
/* ctl_tail.c: feed-key new FILE, a feed client's key pair (prints its public key). */
int ctl_feed_key(ctl_t *ctl, int argc, char **argv);

/* ctl_liability.c: points outstanding by issuer and age, valued at issue price. */
int ctl_liability(ctl_t *ctl, int argc, char **argv);

/* ctl_stats.c: a metrics endpoint scraped and printed for a person. */
int ctl_stats(ctl_t *ctl, int argc, char **argv);

/* ctl_backup.c: backup DEST, restore SRC [--ledger DIR] [--force]. */
int ctl_backup(ctl_t *ctl, int argc, char **argv);
int ctl_restore(ctl_t *ctl, int argc, char **argv);

#endif
