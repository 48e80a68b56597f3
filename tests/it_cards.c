/* Integration tests of card-linked banks with the real programs: a broker, agents, tills,
 * a bank's own CURVE connection and coalitionctl.
 *
 * - 100,000 cards enrolled from a generated bank file, card earns, burns and balances at
 *   the tills, then every file under the test's directory (ledger, card key file, agents'
 *   data, logs, reports, the rejects file) searched for every card number, as text and
 *   as packed BCD: none found. Only the bank's own input file holds them.
 * - Every reject reason of a file, duplicate rows, a re-import that changes nothing,
 *   replacement and unlink (and their re-import).
 * - Unclaimed points claimed on enrolment, and lapsing to breakage after the period.
 * - A bank: real-time enrolment over its own connection; earning (57) and a balance for a
 *   card it did not enrol (57); a card moved between members and between banks.
 * - A card earn while the broker is away is declined 91, never stored offline.
 * Every test ends with `coalitionctl verify`. */
#define _XOPEN_SOURCE 700 /* nftw */
#define _DEFAULT_SOURCE
#include "harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "expect.h"

#include "card.h"
#include "client.h"
#include "errors.h"
#include "wire.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OUT_BYTES 65536
#define PAN_LEN 16
#define BULK_CARDS 100000
#define POLL_STEP_MS 100
#define LAPSE_TIMEOUT_MS 20000
#define CALL_TIMEOUT_MS 10000

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A 16-digit card number: BIN, the index in 9 digits, its Luhn check digit. */
static void pan_of(const char *bin, unsigned long i, char out[PAN_LEN + 1])
{
    snprintf(out, PAN_LEN + 1, "%s%09lu0", bin, i);
    unsigned sum = 0;
    for (int k = 0; k < PAN_LEN - 1; k++) {
        unsigned d = (unsigned)(out[PAN_LEN - 2 - k] - '0');
        if (k % 2 == 0)
            d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
    }
    out[PAN_LEN - 1] = (char)('0' + (10 - sum % 10) % 10);
}

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    world_init(w);
    world_start_broker(w);
    char out[OUT_BYTES];
    EXPECT_EQ("fuel", 0,
              world_ctl(w, out, sizeof out, "partner", "add", "fuel", "--earn-rate", "2", NULL));
    EXPECT_EQ("grocer", 0,
              world_ctl(w, out, sizeof out, "partner", "add", "grocer", "--earn-rate", "1", NULL));
    EXPECT_EQ("alice", 0, world_ctl(w, out, sizeof out, "member", "add", "alice", NULL));
    EXPECT_EQ("bob", 0, world_ctl(w, out, sizeof out, "member", "add", "bob", NULL));
    EXPECT_EQ("claim period", 0,
              world_ctl(w, out, sizeof out, "card-settings", "--unclaimed-period", "4s", NULL));
    EXPECT_EQ("shown", 0, world_ctl(w, out, sizeof out, "card-settings", NULL));
    EXPECT_CONTAINS("shown", "lapse 4 s", out);
    EXPECT_EQ("visa", 0, world_ctl(w, out, sizeof out, "bank", "add", "visa", NULL));
    EXPECT_EQ("mc", 0, world_ctl(w, out, sizeof out, "bank", "add", "mc", NULL));
    EXPECT_EQ("bank again", 1, world_ctl(w, out, sizeof out, "bank", "add", "visa", NULL));
    EXPECT_CONTAINS("bank again", "already a bank", out);
    EXPECT_EQ("a partner is not a bank", 1,
              world_ctl(w, out, sizeof out, "bank", "add", "fuel", NULL));
    world_start_agent(w, "fuel");
    world_start_agent(w, "grocer");
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    world_destroy(w);
    free(w);
    return 0;
}

static void expect_verify(world_t *w)
{
    char out[OUT_BYTES];
    int rc = world_ctl(w, out, sizeof out, "verify", NULL);
    if (rc != 0)
        fail_msg("verify failed: %s", out);
}

/* Write a bank file under DIR/bank-input (the only place card numbers may be). */
static void bank_file(world_t *w, const char *name, const char *content, char *path, size_t size)
{
    char dir[HARNESS_DIR_BYTES + 16];
    snprintf(dir, sizeof dir, "%s/bank-input", w->dir);
    mkdir(dir, 0700);
    snprintf(path, size, "%s/%.64s", dir, name);
    FILE *f = fopen(path, "w");
    EXPECT_TRUE("bank file", f != NULL);
    fputs(content, f);
    fclose(f);
}

static int enroll(world_t *w, const char *bank, const char *file, const char *rejects, char *out,
                  size_t size)
{
    if (rejects == NULL)
        return world_ctl(w, out, size, "--json", "enroll", "--bank", bank, "--file", file, NULL);
    return world_ctl(w, out, size, "--json", "enroll", "--bank", bank, "--file", file, "--rejects",
                     rejects, NULL);
}

static void expect_counts(const char *what, const char *out, int new_, int replaced, int unlinked,
                          int unchanged, int rejected)
{
    char want[256];
    snprintf(want, sizeof want,
             "\"new\":%d,\"replaced\":%d,\"unlinked\":%d,\"unchanged\":%d,\"rejected\":%d", new_,
             replaced, unlinked, unchanged, rejected);
    EXPECT_CONTAINS(what, want, out);
}

static void read_file(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(out, 1, size - 1, f) : 0;
    out[n] = '\0';
    if (f != NULL)
        fclose(f);
}

static int64_t account(world_t *w, const char *name)
{
    char out[OUT_BYTES];
    EXPECT_EQ("accounts", 0, world_ctl(w, out, sizeof out, "accounts", NULL));
    char *at = strstr(out, name);
    if (at == NULL)
        fail_msg("no account %s in: %s", name, out);
    while (*at != '\0' && *at != ' ' && *at != '\t')
        at++;
    return strtoll(at, NULL, 10);
}

/* ---- 1. 100,000 cards, then no card number anywhere ----------------------------------- */

typedef struct pan_set {
    uint64_t *v;
    size_t n;
} pan_set_t;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static pan_set_t g_pans;
static char g_skip[HARNESS_PATH_BYTES];
static size_t g_files, g_found;
static char g_found_in[HARNESS_PATH_BYTES];

static bool known(uint64_t pan)
{
    return bsearch(&pan, g_pans.v, g_pans.n, sizeof pan, cmp_u64) != NULL;
}

/* Any 16 consecutive digits, or 8 bytes of packed BCD, that are one of the numbers. */
static size_t scan(const unsigned char *p, size_t len)
{
    size_t hits = 0, run = 0;
    for (size_t i = 0; i < len; i++) {
        run = p[i] >= '0' && p[i] <= '9' ? run + 1 : 0;
        if (run >= PAN_LEN) {
            uint64_t v = 0;
            for (size_t k = i + 1 - PAN_LEN; k <= i; k++)
                v = v * 10 + (uint64_t)(p[k] - '0');
            hits += known(v);
        }
        if (i + 8 <= len) {
            uint64_t v = 0;
            bool bcd = true;
            for (size_t k = 0; k < 8 && bcd; k++) {
                unsigned hi = p[i + k] >> 4, lo = p[i + k] & 15;
                bcd = hi <= 9 && lo <= 9;
                v = v * 100 + hi * 10 + lo;
            }
            hits += bcd && known(v);
        }
    }
    return hits;
}

static int scan_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (strncmp(path, g_skip, strlen(g_skip)) == 0 || flag != FTW_F || !S_ISREG(st->st_mode) ||
        st->st_size == 0)
        return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0; /* a socket or a file removed meanwhile */
    void *m = mmap(NULL, (size_t)st->st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return 0;
    size_t hits = scan(m, (size_t)st->st_size);
    munmap(m, (size_t)st->st_size);
    g_files++;
    if (hits > 0 && g_found == 0)
        snprintf(g_found_in, sizeof g_found_in, "%s", path);
    g_found += hits;
    return 0;
}

static void report_to(world_t *w, const char *name, char *const argv[])
{
    char path[HARNESS_PATH_BYTES];
    snprintf(path, sizeof path, "%s/reports", w->dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/reports/%s", w->dir, name);
    EXPECT_EQ(name, 0, harness_run_to_file(argv, path));
}

static void write_bulk_file(world_t *w, char *path, size_t size)
{
    char dir[HARNESS_DIR_BYTES + 16];
    snprintf(dir, sizeof dir, "%s/bank-input", w->dir);
    mkdir(dir, 0700);
    snprintf(path, size, "%s/bulk.csv", dir);
    FILE *f = fopen(path, "w");
    EXPECT_TRUE("bulk file", f != NULL);
    fputs("bank_ref,pan\n", f);
    g_pans.v = calloc(BULK_CARDS + 16, sizeof *g_pans.v);
    g_pans.n = 0;
    char pan[PAN_LEN + 1];
    for (unsigned long i = 0; i < BULK_CARDS; i++) {
        pan_of("453201", i, pan);
        fprintf(f, "cust-%lu,%s\n", i, pan);
        g_pans.v[g_pans.n++] = strtoull(pan, NULL, 10);
    }
    /* Rows the file reader rejects: their numbers must not appear either. */
    pan_of("453201", 999999999UL, pan);
    pan[PAN_LEN - 1] = (char)('0' + (pan[PAN_LEN - 1] - '0' + 1) % 10); /* Luhn broken */
    fprintf(f, "bad-luhn,%s\n", pan);
    g_pans.v[g_pans.n++] = strtoull(pan, NULL, 10);
    fclose(f);
}

static void bulk_enrolment_leaves_no_card_number_anywhere(void **state)
{
    world_t *w = *state;
    char file[HARNESS_PATH_BYTES], rejects[HARNESS_PATH_BYTES], out[OUT_BYTES];
    write_bulk_file(w, file, sizeof file);
    snprintf(rejects, sizeof rejects, "%s/rejects.csv", w->dir);
    EXPECT_EQ("enroll (one row rejected)", 1, enroll(w, "visa", file, rejects, out, sizeof out));
    expect_counts("100,000 cards", out, BULK_CARDS, 0, 0, 0, 1);
    char text[4096];
    read_file(rejects, text, sizeof text);
    EXPECT_CONTAINS("rejects", "100002,453201******", text);
    EXPECT_CONTAINS("rejects", "Luhn", text);
    /* Tills use some of the cards: earns at fuel, a burn at grocer, balances, one card no
     * bank enrolled (unclaimed). */
    const agent_proc_t *fuel = &w->agents[0], *grocer = &w->agents[1];
    char pan[PAN_LEN + 1], txn[32];
    for (unsigned long i = 0; i < 20; i++) {
        pan_of("453201", i * 4999, pan);
        snprintf(txn, sizeof txn, "ce-%lu", i);
        EXPECT_EQ("card earn", 0,
                  world_pos(w, fuel, out, sizeof out, "earn", "--card", pan, "--amount", "10.00",
                            "--txn", txn, NULL));
        EXPECT_CONTAINS("card earn", "\"points\":20", out);
    }
    pan_of("453201", 0, pan);
    EXPECT_EQ("card burn", 0,
              world_pos(w, grocer, out, sizeof out, "burn", "--card", pan, "--points", "5", "--txn",
                        "cb-1", NULL));
    EXPECT_CONTAINS("card burn", "\"balance\":15", out);
    EXPECT_EQ("card balance", 0,
              world_pos(w, grocer, out, sizeof out, "balance", "--card", pan, NULL));
    EXPECT_CONTAINS("card balance", "\"balance\":15", out);
    pan_of("453201", 500000, pan); /* never enrolled */
    g_pans.v[g_pans.n++] = strtoull(pan, NULL, 10);
    EXPECT_EQ("unclaimed earn", 0,
              world_pos(w, fuel, out, sizeof out, "earn", "--card", pan, "--amount", "3.00",
                        "--txn", "ue-1", NULL));
    EXPECT_CONTAINS("unclaimed earn", "unclaimed", out);
    /* Reports: the journal, accounts, statements-to-be, agent exports, verify. */
    char *const journal[] = {COALITIONCTL_BIN, "--ledger", w->ledger, "--json", "journal", NULL};
    char *const accounts[] = {COALITIONCTL_BIN, "--ledger", w->ledger, "accounts", NULL};
    char *const liability[] = {COALITIONCTL_BIN, "--ledger", w->ledger, "liability", NULL};
    char *const export[] = {
        COALITION_AGENT_BIN, "--data", (char *)fuel->data_dir, "export", "--window", "1", NULL};
    report_to(w, "journal.json", journal);
    report_to(w, "accounts.txt", accounts);
    report_to(w, "liability.txt", liability);
    report_to(w, "fuel-export.csv", export);
    expect_verify(w);
    qsort(g_pans.v, g_pans.n, sizeof *g_pans.v, cmp_u64);
    snprintf(g_skip, sizeof g_skip, "%s/bank-input", w->dir);
    g_files = g_found = 0;
    EXPECT_EQ("walk", 0, nftw(w->dir, scan_file, 16, FTW_PHYS));
    printf("searched %zu files for %zu card numbers (text and BCD): %zu found\n", g_files, g_pans.n,
           g_found);
    if (g_found != 0)
        fail_msg("%zu card number(s) found, first in %s", g_found, g_found_in);
    EXPECT_TRUE("the ledger, agents and reports were searched", g_files >= 8);
    /* The search finds them where they are. */
    g_skip[0] = '\1';
    g_found = 0;
    EXPECT_EQ("walk", 0, nftw(file, scan_file, 4, FTW_PHYS));
    EXPECT_TRUE("the bank's own file holds them", g_found >= BULK_CARDS);
    free(g_pans.v);
    g_pans.v = NULL;
}

/* ---- 2. rejects, duplicates, re-import, replace, unlink ------------------------------- */

static void file_rows_rejects_reimport_replace_unlink(void **state)
{
    world_t *w = *state;
    char a[PAN_LEN + 1], b[PAN_LEN + 1], c[PAN_LEN + 1], d[PAN_LEN + 1], bad[PAN_LEN + 1];
    pan_of("411111", 1, a);
    pan_of("411111", 2, b);
    pan_of("411111", 3, c);
    pan_of("411111", 4, d);
    snprintf(bad, sizeof bad, "%s", a);
    bad[PAN_LEN - 1] = (char)('0' + (bad[PAN_LEN - 1] - '0' + 1) % 10);
    char content[4096], file[HARNESS_PATH_BYTES], rejects[HARNESS_PATH_BYTES], out[OUT_BYTES];
    snprintf(content, sizeof content,
             "pan,bank_ref,member_id,action,new_pan\n" /* columns in another order */
             "%s,r-alice,alice,enrol,\n"               /* 2: new, to alice */
             "%s,r-alice,,enrol,\n"                    /* 3: new, the reference is alice */
             "%s,r-new,,,\n"                           /* 4: new member for r-new */
             "%s,r-alice,alice,enrol,\n"               /* 5: duplicate of 2: unchanged */
             "%s,r-bad,,enrol,\n"                      /* 6: Luhn */
             "4111x1111111111,r-bad,,enrol,\n"         /* 7: not digits */
             "411111111111,r-bad,,enrol,\n"            /* 8: too short */
             "%s,,,enrol,\n"                           /* 9: no bank reference */
             "%s,r-bad,,delete,\n"                     /* 10: unknown action */
             "%s,r-bad,,replace,\n"                    /* 11: replace without new_pan */
             "%s,r-bad,,enrol,%s\n"                    /* 12: new_pan on an enrol */
             "%s,r-bad,,replace,%s\n"                  /* 13: replaced by itself */
             "%s,r-ghost,ghost,enrol,\n"               /* 14: unknown member (broker 14) */
             "%s,r-bob,bob,enrol,\n"                   /* 15: a's member is alice: unlink first */
             "%s,r-alice,bob,enrol,\n"                 /* 16: r-alice is alice, not bob */
             "\"%s,r-q,,enrol,\n",                     /* 17: broken quoting */
             a, b, c, a, bad, d, d, d, d, d, d, d, d, a, d, d);
    bank_file(w, "rows.csv", content, file, sizeof file);
    snprintf(rejects, sizeof rejects, "%s/rows-rejects.csv", w->dir);
    EXPECT_EQ("enroll", 1, enroll(w, "visa", file, rejects, out, sizeof out));
    expect_counts("first import", out, 3, 0, 0, 1, 12);
    char text[8192];
    read_file(rejects, text, sizeof text);
    const char *reasons[] = {"6,411111******",
                             "Luhn",
                             "7,4111*1*****1111,",
                             "digits",
                             "8,*,",
                             "13 to 19",
                             "9,411111******",
                             "bank_ref",
                             "10,411111******",
                             "action",
                             "11,411111******",
                             "12,411111******",
                             "13,411111******",
                             "14,411111******",
                             "unknown member ghost",
                             "15,411111******",
                             "unlink it first",
                             "16,411111******",
                             "is member alice, not bob",
                             "17,*,"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        EXPECT_CONTAINS("rejects file", reasons[i], text);
    EXPECT_TRUE("no number in the rejects", strstr(text, a) == NULL && strstr(text, d) == NULL);
    /* The same file again changes nothing. */
    char journal_before[OUT_BYTES], journal_after[OUT_BYTES];
    EXPECT_EQ("journal", 0, world_ctl(w, journal_before, sizeof journal_before, "journal", NULL));
    EXPECT_EQ("enroll again", 1, enroll(w, "visa", file, rejects, out, sizeof out));
    expect_counts("second import", out, 0, 0, 0, 4, 12);
    EXPECT_EQ("journal", 0, world_ctl(w, journal_after, sizeof journal_after, "journal", NULL));
    EXPECT_STR("a re-import writes nothing", journal_before, journal_after);
    /* The new member earns by card c; then c is replaced by d (same member and balance), and
     * b unlinked. */
    EXPECT_EQ("earn c", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", c, "--amount", "5.00",
                        "--txn", "c-1", NULL));
    EXPECT_CONTAINS("a bank's new member earns", "Earned 10 points. Balance 10", out);
    snprintf(content, sizeof content,
             "bank_ref,pan,action,new_pan\nr-new,%s,replace,%s\n"
             "r-alice,%s,unlink,\n",
             c, d, b);
    bank_file(w, "changes.csv", content, file, sizeof file);
    EXPECT_EQ("changes", 0, enroll(w, "visa", file, NULL, out, sizeof out));
    expect_counts("changes", out, 0, 1, 1, 0, 0);
    EXPECT_EQ("changes again", 0, enroll(w, "visa", file, NULL, out, sizeof out));
    expect_counts("changes again", out, 0, 0, 0, 2, 0);
    EXPECT_EQ("balance by the new card", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "balance", "--card", d, NULL));
    EXPECT_CONTAINS("the replacement keeps the balance", "\"balance\":10", out);
    EXPECT_EQ("old card", 1,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", c, "--amount", "5.00",
                        "--txn", "c-2", NULL));
    EXPECT_CONTAINS("the replaced card earns nothing", "\"code\":\"14\"", out);
    EXPECT_EQ("unlinked card", 1,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", b, "--amount", "5.00",
                        "--txn", "b-1", NULL));
    EXPECT_CONTAINS("unlink stops earning", "unlinked", out);
    EXPECT_EQ("alice's other card", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", a, "--amount", "1.00",
                        "--txn", "a-1", NULL));
    EXPECT_EQ("alice by id", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "balance", "--member", "alice", NULL));
    EXPECT_CONTAINS("several cards, one member", "\"balance\":2", out);
    /* A daily file of the same name is a new import each day: rows are keyed by content. */
    char e[PAN_LEN + 1];
    pan_of("411111", 5, e);
    const char *days[][2] = {{"enrol", "new"}, {"unlink", "unlinked"}, {"enrol", "new"}};
    for (size_t i = 0; i < 3; i++) {
        snprintf(content, sizeof content, "bank_ref,pan,member_id,action\nr-day,%s,bob,%s\n", e,
                 days[i][0]);
        bank_file(w, "daily.csv", content, file, sizeof file);
        EXPECT_EQ("daily file", 0, enroll(w, "visa", file, NULL, out, sizeof out));
        char want[32];
        snprintf(want, sizeof want, "\"%s\":1", days[i][1]);
        EXPECT_CONTAINS("daily file", want, out);
    }
    expect_verify(w);
}

/* ---- 3. unclaimed points: claimed on enrolment, lapsing to breakage ------------------- */

static void unclaimed_points_are_claimed_or_lapse(void **state)
{
    world_t *w = *state;
    char a[PAN_LEN + 1], b[PAN_LEN + 1], out[OUT_BYTES], content[512], file[HARNESS_PATH_BYTES];
    pan_of("522222", 7, a);
    pan_of("522222", 8, b);
    EXPECT_EQ("earn a", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", a, "--amount", "10.00",
                        "--txn", "u-a1", NULL));
    EXPECT_CONTAINS("unclaimed", "unclaimed until the card is enrolled", out);
    EXPECT_EQ("earn b", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", b, "--amount", "7.00",
                        "--txn", "u-b1", NULL));
    EXPECT_EQ("balance a", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "balance", "--card", a, NULL));
    EXPECT_CONTAINS("balance by card shows unclaimed", "Unclaimed 20 points", out);
    EXPECT_EQ("burn unclaimed", 1,
              world_pos(w, &w->agents[1], out, sizeof out, "burn", "--card", a, "--points", "1",
                        "--txn", "u-x", NULL));
    EXPECT_CONTAINS("unclaimed points cannot be burned", "\"code\":\"14\"", out);
    snprintf(content, sizeof content, "bank_ref,pan\ncust-a,%s\n", a);
    bank_file(w, "claim.csv", content, file, sizeof file);
    EXPECT_EQ("enrol a", 0, enroll(w, "visa", file, NULL, out, sizeof out));
    expect_counts("claim", out, 1, 0, 0, 0, 0);
    EXPECT_EQ("burn a at grocer", 0,
              world_pos(w, &w->agents[1], out, sizeof out, "burn", "--card", a, "--points", "5",
                        "--txn", "u-a2", NULL));
    EXPECT_CONTAINS("claimed points burn", "\"balance\":15", out);
    EXPECT_EQ("refund a's first earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "refund", "--original", "u-a1",
                        "--amount", "2.50", "--txn", "u-a3", NULL));
    EXPECT_CONTAINS("the refund follows the points to the member", "\"balance\":10", out);
    /* b lapses after the 4 s period, by the broker's own tick. */
    int64_t breakage = 0;
    for (int waited = 0; waited < LAPSE_TIMEOUT_MS && breakage == 0; waited += POLL_STEP_MS) {
        sleep_ms(POLL_STEP_MS);
        breakage = account(w, "breakage");
    }
    EXPECT_EQ("b's points lapsed to breakage", 14, breakage);
    EXPECT_EQ("balance b", 1,
              world_pos(w, &w->agents[1], out, sizeof out, "balance", "--card", b, NULL));
    EXPECT_CONTAINS("a lapsed card has no balance", "\"code\":\"14\"", out);
    EXPECT_EQ("refund b's earn", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "refund", "--original", "u-b1", "--txn",
                        "u-b2", NULL));
    EXPECT_EQ("the refund takes its points back from breakage", 0, account(w, "breakage"));
    expect_verify(w);
}

/* ---- 4. a bank's own connection ------------------------------------------------------- */

typedef struct req {
    envelope_t env;
    char txn[TXN_ID_LEN_MAX + 1];
    Coalition__Card card, new_card;
    char masked[PAN_MASKED_BYTES], new_masked[PAN_MASKED_BYTES];
    Coalition__CardEnrollRequest enrol;
    Coalition__EarnRequest earn;
    Coalition__BalanceRequest balance;
} req_t;

static void req_init(req_t *r, const char *partner, const char *txn)
{
    memset(r, 0, sizeof *r);
    coalition__envelope__init(&r->env);
    snprintf(r->txn, sizeof r->txn, "%s", txn);
    r->env.version = WIRE_VERSION;
    r->env.partner_id = (char *)partner;
    r->env.terminal_id = "bank-api";
    r->env.site_id = "hq";
    r->env.txn_id = r->txn;
}

static Coalition__Card *card_of(Coalition__Card *c, char *masked, const char *pan)
{
    coalition__card__init(c);
    pan_mask(pan, masked);
    c->pan = (char *)pan;
    c->masked = masked;
    return c;
}

static authorization_t *call(client_t *cl, req_t *r)
{
    authorization_t *auth = NULL;
    EXPECT_EQ("call", CL_OK, client_call(cl, &r->env, CALL_TIMEOUT_MS, &auth));
    return auth;
}

static authorization_t *enrol_req(client_t *cl, const char *bank, const char *txn, const char *pan,
                                  const char *ref, const char *member, int action,
                                  const char *new_pan)
{
    req_t r;
    req_init(&r, bank, txn);
    coalition__card_enroll_request__init(&r.enrol);
    r.enrol.bank_ref = (char *)ref;
    r.enrol.member_id = (char *)member;
    r.enrol.action = action;
    r.enrol.card = card_of(&r.card, r.masked, pan);
    if (new_pan != NULL)
        r.enrol.new_card = card_of(&r.new_card, r.new_masked, new_pan);
    r.env.body_case = COALITION__ENVELOPE__BODY_CARD_ENROLL;
    r.env.card_enroll = &r.enrol;
    return call(cl, &r);
}

static void expect_auth(const char *what, authorization_t *auth, int code, const char *text)
{
    if (auth->code != (unsigned)code || strstr(auth->text, text) == NULL)
        fail_msg("%s: expected %02d \"%s\", got %02d \"%s\"", what, code, text, auth->code,
                 auth->text);
    wire_auth_free(auth);
}

static void a_bank_enrols_on_its_own_connection(void **state)
{
    world_t *w = *state;
    world_key(w, "visa", "bank");
    world_key(w, "mc", "bank");
    client_t *visa = NULL, *mc = NULL;
    EXPECT_EQ("visa", CL_OK, world_client(w, "visa", &visa));
    EXPECT_EQ("mc", CL_OK, world_client(w, "mc", &mc));
    char a[PAN_LEN + 1], x[PAN_LEN + 1];
    pan_of("433333", 1, a);
    pan_of("433333", 2, x);
    expect_auth("real-time enrolment",
                enrol_req(visa, "visa", "rt-1", a, "v-alice", "alice", 0, NULL), RC_APPROVED,
                "enrolled to member alice");
    expect_auth("the same again", enrol_req(visa, "visa", "rt-2", a, "v-alice", "alice", 0, NULL),
                RC_INVALID_TRANSACTION, "unchanged");
    expect_auth("a replay", enrol_req(visa, "visa", "rt-1", a, "v-alice", "alice", 0, NULL),
                RC_APPROVED, "enrolled");
    expect_auth("another bank's card", enrol_req(mc, "mc", "m-1", a, "m-bob", "bob", 0, NULL),
                RC_INVALID_TRANSACTION, "enrolled by another bank");
    expect_auth("moved to another member",
                enrol_req(visa, "visa", "rt-3", a, "v-bob", "bob", 0, NULL), RC_INVALID_TRANSACTION,
                "unlink it first");
    expect_auth("mc cannot unlink visa's card", enrol_req(mc, "mc", "m-2", a, "m-bob", "", 1, NULL),
                RC_INVALID_TRANSACTION, "enrolled by another bank");
    expect_auth("visa unlinks", enrol_req(visa, "visa", "rt-4", a, "v-alice", "", 1, NULL),
                RC_APPROVED, "unlinked");
    expect_auth("then mc links it to bob", enrol_req(mc, "mc", "m-3", a, "m-bob", "bob", 0, NULL),
                RC_APPROVED, "enrolled to member bob");
    /* A bank never earns, and sees only the cards it enrolled. */
    req_t r;
    req_init(&r, "mc", "m-4");
    coalition__earn_request__init(&r.earn);
    r.earn.card = card_of(&r.card, r.masked, a);
    r.earn.amount_minor = 1000;
    r.earn.currency = "EUR";
    r.env.body_case = COALITION__ENVELOPE__BODY_EARN;
    r.env.earn = &r.earn;
    expect_auth("a bank earning", call(mc, &r), RC_NOT_PERMITTED, "may not send earn");
    req_init(&r, "visa", "rt-5");
    coalition__balance_request__init(&r.balance);
    r.balance.card = card_of(&r.card, r.masked, a);
    r.env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    r.env.balance = &r.balance;
    expect_auth("a balance for a card visa no longer holds", call(visa, &r), RC_NOT_PERMITTED,
                "not enrolled by bank visa");
    req_init(&r, "mc", "m-5");
    coalition__balance_request__init(&r.balance);
    r.balance.card = card_of(&r.card, r.masked, a);
    r.env.body_case = COALITION__ENVELOPE__BODY_BALANCE;
    r.env.balance = &r.balance;
    expect_auth("mc's own card", call(mc, &r), RC_APPROVED, "Balance 0");
    expect_auth("mc replaces bob's card", enrol_req(mc, "mc", "m-6", a, "m-bob", "", 2, x),
                RC_APPROVED, "replaced by");
    client_destroy(&visa);
    client_destroy(&mc);
    char out[OUT_BYTES];
    EXPECT_EQ("bob earns by the new card", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", x, "--amount", "1.00",
                        "--txn", "x-1", NULL));
    EXPECT_CONTAINS("bob's", "\"balance\":2", out);
    EXPECT_EQ("key 1 holds cards", 1,
              world_ctl(w, out, sizeof out, "card-key", "retire", "1", NULL));
    EXPECT_EQ("rotate", 0, world_ctl(w, out, sizeof out, "card-key", "rotate", NULL));
    EXPECT_CONTAINS("rotate", "current 2", out);
    EXPECT_EQ("the current key stays", 1,
              world_ctl(w, out, sizeof out, "card-key", "retire", "2", NULL));
    EXPECT_EQ("still key 1 holds cards", 1,
              world_ctl(w, out, sizeof out, "card-key", "retire", "1", NULL));
    expect_verify(w);
}

/* ---- 5. no card earn is stored offline -------------------------------------------------- */

static void a_card_earn_is_never_stored_offline(void **state)
{
    world_t *w = *state;
    char a[PAN_LEN + 1], out[OUT_BYTES], content[512], file[HARNESS_PATH_BYTES];
    pan_of("444444", 9, a);
    snprintf(content, sizeof content, "bank_ref,pan,member_id\nc-alice,%s,alice\n", a);
    bank_file(w, "offline.csv", content, file, sizeof file);
    EXPECT_EQ("enrol", 0, enroll(w, "visa", file, NULL, out, sizeof out));
    EXPECT_EQ("stop broker", 0, world_stop_broker(w, SIGTERM));
    EXPECT_EQ("card earn, broker away", 1,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", a, "--amount", "10.00",
                        "--txn", "off-1", NULL));
    EXPECT_CONTAINS("declined, not stored", "\"code\":\"91\"", out);
    EXPECT_CONTAINS("not offline", "\"offline\":false", out);
    EXPECT_EQ("member earn, broker away", 3,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--member", "alice", "--amount",
                        "1.00", "--txn", "off-2", NULL));
    world_start_broker(w);
    for (int waited = 0; waited < LAPSE_TIMEOUT_MS; waited += POLL_STEP_MS) {
        if (world_pos(w, &w->agents[0], out, sizeof out, "balance", "--member", "alice", NULL) ==
                0 &&
            strstr(out, "\"balance\":2") != NULL)
            break;
        sleep_ms(POLL_STEP_MS);
    }
    EXPECT_CONTAINS("only the member earn arrived", "\"balance\":2", out);
    /* The agent may have sent it before the broker went: it revoked it (a void), and the
     * same txn id is refused from then on, as for a burn. */
    int rc = world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", a, "--amount", "10.00",
                       "--txn", "off-1", NULL);
    if (rc == 0)
        EXPECT_CONTAINS("never sent, so sent now, once", "\"balance\":22", out);
    else
        EXPECT_CONTAINS("revoked: a new txn id is needed", "use a new txn id", out);
    EXPECT_EQ("the earn by member id, delivered after", 0,
              world_pos(w, &w->agents[0], out, sizeof out, "balance", "--member", "alice", NULL));
    EXPECT_CONTAINS("nothing else applied", rc == 0 ? "\"balance\":22" : "\"balance\":2", out);
    expect_verify(w);
}

/* ---- 6. a card earn sent but unanswered: pending, then decided once ------------------ */

static int balance_of_member(world_t *w, const char *member)
{
    char out[OUT_BYTES];
    if (world_ctl(w, out, sizeof out, "--json", "balance", member, NULL) != 0)
        fail_msg("balance %s: %s", member, out);
    const char *at = strstr(out, "\"balance\":");
    return at != NULL ? atoi(at + strlen("\"balance\":")) : -1;
}

static void a_sent_card_earn_is_pending_then_decided_once(void **state)
{
    world_t *w = *state;
    char a[PAN_LEN + 1], out[OUT_BYTES], content[512], file[HARNESS_PATH_BYTES];
    pan_of("455555", 3, a);
    snprintf(content, sizeof content, "bank_ref,pan,member_id\np-alice,%s,alice\n", a);
    bank_file(w, "pending.csv", content, file, sizeof file);
    EXPECT_EQ("enrol", 0, enroll(w, "visa", file, NULL, out, sizeof out));
    harness_pause(&w->broker); /* connected, but it answers nothing */
    EXPECT_EQ("card earn, broker stalled", 3,
              world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", a, "--amount", "10.00",
                        "--txn", "pend-1", NULL));
    EXPECT_CONTAINS("the till is told it is pending", "\"pending\":true", out);
    EXPECT_CONTAINS("not stored offline", "\"offline\":false", out);
    /* The agent dies with it in flight: its card number is gone with it. */
    world_stop_agent(w, &w->agents[0], SIGKILL);
    world_restart_agent(w, &w->agents[0]);
    harness_resume(&w->broker);
    int rc = 3;
    for (int waited = 0; waited < LAPSE_TIMEOUT_MS && rc == 3; waited += POLL_STEP_MS) {
        rc = world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", a, "--amount", "10.00",
                       "--txn", "pend-1", NULL);
        if (rc == 3)
            sleep_ms(POLL_STEP_MS);
    }
    int balance = balance_of_member(w, "alice");
    printf("the pending card earn was %s: %s\n", rc == 0 ? "approved" : "declined", out);
    if (rc == 0)
        EXPECT_EQ("approved: applied once", 20, balance);
    else
        EXPECT_EQ("declined: nothing applied", 0, balance);
    EXPECT_TRUE("a final answer", rc == 0 || rc == 1);
    rc = world_pos(w, &w->agents[0], out, sizeof out, "earn", "--card", a, "--amount", "10.00",
                   "--txn", "pend-1", NULL);
    EXPECT_EQ("asked again: the same balance", balance, balance_of_member(w, "alice"));
    expect_verify(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bulk_enrolment_leaves_no_card_number_anywhere, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(file_rows_rejects_reimport_replace_unlink, setup, teardown),
        cmocka_unit_test_setup_teardown(unclaimed_points_are_claimed_or_lapse, setup, teardown),
        cmocka_unit_test_setup_teardown(a_bank_enrols_on_its_own_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(a_card_earn_is_never_stored_offline, setup, teardown),
        cmocka_unit_test_setup_teardown(a_sent_card_earn_is_pending_then_decided_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
