/* Hot backup and restore with the real programs: a backup taken while tills stream earns
 * through two agents holds exactly the journal prefix its manifest names (balances equal
 * the sums of the approvals up to that seq, the chain head equals the live ledger's entry
 * there); restored elsewhere it verifies and a broker and an agent run on it. Restore is
 * refused onto a running broker's ledger (naming its pid), onto an existing ledger
 * without --force, and from a backup whose bytes or manifest were changed; backup is
 * refused into a non-empty DEST; a backup killed midway leaves DEST absent or complete. */
#include "backup_internal.h"
#include "clock.h"
#include "coalition_pos.h"
#include "errors.h"
#include "harness.h"
#include "ledger.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "expect.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AGENTS 2
#define TILLS_PER_AGENT 2
#define EARNS_PER_TILL_MAX 5000
#define MEMBERS 20
#define EARNS_BEFORE_BACKUP 150 /* the load is well under way when the backup starts */
#define EARNS_AFTER_BACKUP 150  /* and goes on after it returns */
#define LOAD_TIMEOUT_MS 120000
#define POLL_MS 5
#define OUT_BYTES 8192
#define PATH_BYTES 1024
#define KILL_TRIES 8

typedef struct earn {
    bool approved, offline;
    int64_t points;
    uint64_t seq;
} earn_t;

typedef struct load {
    world_t w;
    const char *partners[AGENTS];
    earn_t earns[AGENTS][TILLS_PER_AGENT][EARNS_PER_TILL_MAX];
    int counts[AGENTS][TILLS_PER_AGENT];
    atomic_long done;
    atomic_bool stop;
} load_t;

typedef struct till_arg {
    load_t *l;
    int agent, till;
} till_arg_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int member_index(int till, int i) { return (till * 7 + i) % MEMBERS; }
static int64_t amount_of(int till, int i) { return (int64_t)((till * 13 + i) % 9 + 1) * 100; }

static void *till_main(void *arg)
{
    till_arg_t *t = arg;
    load_t *l = t->l;
    char terminal[32];
    snprintf(terminal, sizeof terminal, "till-%d", t->till);
    cpos_t *pos = cpos_new(l->w.agents[t->agent].endpoint, terminal);
    int i = 0;
    for (; pos != NULL && i < EARNS_PER_TILL_MAX && !atomic_load(&l->stop); i++) {
        char txn[64], member[16];
        cpos_result_t r;
        snprintf(txn, sizeof txn, "bk-%d-%d-%d", t->agent, t->till, i);
        snprintf(member, sizeof member, "m%d", member_index(t->till, i));
        earn_t *e = &l->earns[t->agent][t->till][i];
        if (cpos_earn(pos, txn, member, amount_of(t->till, i), "EUR", &r) == CPOS_OK) {
            e->approved = r.approved && !r.offline;
            e->offline = r.offline;
            e->points = r.points;
            e->seq = r.seq;
        }
        atomic_fetch_add(&l->done, 1);
    }
    l->counts[t->agent][t->till] = i;
    cpos_destroy(&pos);
    return NULL;
}

static void ctl_ok(world_t *w, const char *arg0, ...)
{
    char out[OUT_BYTES];
    const char *a[4] = {NULL, NULL, NULL, NULL};
    va_list ap;
    va_start(ap, arg0);
    for (size_t i = 0; i < 4; i++) {
        a[i] = va_arg(ap, const char *);
        if (a[i] == NULL)
            break;
    }
    va_end(ap);
    int rc = world_ctl(w, out, sizeof out, arg0, a[0], a[1], a[2], a[3], NULL);
    if (rc != 0)
        fail_msg("coalitionctl %s %s: expected exit 0, got %d: %s", arg0, a[0] ? a[0] : "", rc,
                 out);
}

/* Run coalitionctl with stdout and stderr in `log` (read back into out); exit status. */
static int run_ctl(char *out, size_t size, const char *log, char *const args[])
{
    char *argv[16] = {COALITIONCTL_BIN};
    size_t n = 1;
    for (; args[n - 1] != NULL && n < 15; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    unlink(log);
    pid_t pid = harness_spawn(argv, log);
    int status = 0;
    waitpid(pid, &status, 0);
    FILE *f = fopen(log, "r");
    size_t got = f != NULL ? fread(out, 1, size - 1, f) : 0;
    out[got] = '\0';
    if (f != NULL)
        fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* out = dir/name (PATH_BYTES), cut to fit. */
static void path_in(char *out, const char *dir, const char *name)
{
    snprintf(out, PATH_BYTES, "%.*s/%.*s", 700, dir, 200, name);
}

static uint64_t live_seq(const char *ledger_dir)
{
    ledger_t *l = NULL;
    EXPECT_EQ("open the ledger read-only", CL_OK, ledger_open(&l, ledger_dir, STORE_READ_ONLY));
    uint64_t seq = ledger_last_seq(l);
    ledger_destroy(&l);
    return seq;
}

/* The chain hash of entry `seq` in a ledger. */
static void entry_hash(const char *ledger_dir, uint64_t seq, uint8_t out[DIGEST_SHA256_BYTES])
{
    ledger_t *l = NULL;
    journal_entry_t *e[1] = {NULL};
    size_t count = 0;
    EXPECT_EQ("open the ledger read-only", CL_OK, ledger_open(&l, ledger_dir, STORE_READ_ONLY));
    EXPECT_EQ("read the entry", CL_OK, ledger_journal_slice(l, seq, e, 1, &count));
    EXPECT_EQ("entries read", 1, count);
    EXPECT_EQ("the entry's seq", seq, e[0]->seq);
    EXPECT_EQ("hash length", DIGEST_SHA256_BYTES, e[0]->hash.len);
    memcpy(out, e[0]->hash.data, DIGEST_SHA256_BYTES);
    ledger_journal_slice_free(e, count);
    ledger_destroy(&l);
}

static void read_manifest(const char *dest, backup_manifest_t *m)
{
    char path[PATH_BYTES], text[BACKUP_MANIFEST_BYTES_MAX], why[512];
    snprintf(path, sizeof path, "%s/%s", dest, BACKUP_MANIFEST_FILE);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("expected a manifest at %s, found none", path);
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    if (backup_manifest_parse(text, len, m, why, sizeof why) != CL_OK)
        fail_msg("manifest %s: expected to parse, got: %s", path, why);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        fail_msg("cannot write %s", path);
}

static void read_text(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot read %s", path);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* How many entries of `dir` start with `prefix` (partial or staging directories left). */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    const struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d != NULL)
        closedir(d);
    return n;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static ino_t inode_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("expected %s to exist", path);
    return st.st_ino;
}

static void setup_world(world_t *w, const char **partners, int partner_count, int members)
{
    world_init(w);
    world_start_broker(w);
    for (int a = 0; a < partner_count; a++)
        ctl_ok(w, "partner", "add", partners[a], "--earn-rate", "1", NULL);
    for (int m = 0; m < members; m++) {
        char member[16];
        snprintf(member, sizeof member, "m%d", m);
        ctl_ok(w, "member", "add", member, NULL);
    }
}

static void wait_done(load_t *l, long target)
{
    for (int waited = 0; atomic_load(&l->done) < target; waited += POLL_MS) {
        if (waited > LOAD_TIMEOUT_MS)
            fail_msg("expected %ld earns done within %d ms, got %ld", target, LOAD_TIMEOUT_MS,
                     atomic_load(&l->done));
        sleep_ms(POLL_MS);
    }
}

/* Wait until each agent's outbox is empty: every earn stored offline was delivered. */
static void wait_drained(load_t *l)
{
    for (int a = 0; a < AGENTS; a++) {
        char out[OUT_BYTES];
        char *argv[] = {COALITION_AGENT_BIN, "--data", l->w.agents[a].data_dir, "--outbox", NULL};
        for (int waited = 0;; waited += POLL_MS * 10) {
            harness_run(argv, out, sizeof out);
            if (out[0] == '\0')
                break;
            if (waited > LOAD_TIMEOUT_MS)
                fail_msg("agent %s: expected an empty outbox, got %.200s", l->partners[a], out);
            sleep_ms(POLL_MS * 10);
        }
    }
}

/* Each member's sum of the earns with seq <= upto: from the replies (seq), or for an
 * earn stored offline and delivered later, from the ledger's idempotency record. */
static void expected_balances(load_t *l, uint64_t upto, int64_t expected[MEMBERS], long *counted)
{
    ledger_t *ledger = NULL;
    EXPECT_EQ("open the live ledger", CL_OK, ledger_open(&ledger, l->w.ledger, STORE_READ_ONLY));
    *counted = 0;
    for (int a = 0; a < AGENTS; a++)
        for (int t = 0; t < TILLS_PER_AGENT; t++)
            for (int i = 0; i < l->counts[a][t]; i++) {
                earn_t *e = &l->earns[a][t][i];
                if (e->offline) {
                    char txn[64];
                    snprintf(txn, sizeof txn, "bk-%d-%d-%d", a, t, i);
                    EXPECT_EQ("an offline earn's record", CL_OK,
                              ledger_txn_seq(ledger, l->partners[a], "main", txn, &e->seq));
                    e->points = amount_of(t, i) / 100;
                    e->approved = e->seq > 0;
                }
                if (!e->approved)
                    fail_msg("earn bk-%d-%d-%d: expected approved, got neither approved nor "
                             "offline",
                             a, t, i);
                EXPECT_EQ("points at rate 1", amount_of(t, i) / 100, e->points);
                if (e->seq <= upto) {
                    expected[member_index(t, i)] += e->points;
                    (*counted)++;
                }
            }
    ledger_destroy(&ledger);
}

static void start_load(load_t *l, pthread_t tills[AGENTS][TILLS_PER_AGENT],
                       till_arg_t args[AGENTS][TILLS_PER_AGENT])
{
    for (int a = 0; a < AGENTS; a++)
        for (int t = 0; t < TILLS_PER_AGENT; t++) {
            args[a][t] = (till_arg_t){l, a, t};
            pthread_create(&tills[a][t], NULL, till_main, &args[a][t]);
        }
}

static void stop_load(load_t *l, pthread_t tills[AGENTS][TILLS_PER_AGENT])
{
    atomic_store(&l->stop, true);
    for (int a = 0; a < AGENTS; a++)
        for (int t = 0; t < TILLS_PER_AGENT; t++)
            pthread_join(tills[a][t], NULL);
}

/* Restore into w2's fresh ledger (--force: it holds one), start a broker and an agent
 * on it, and compare the members' balances with `expected`. */
static void restore_and_run(load_t *l, const char *dest, const backup_manifest_t *m,
                            const int64_t expected[MEMBERS])
{
    world_t *w2 = calloc(1, sizeof *w2);
    char out[OUT_BYTES], log[PATH_BYTES];
    world_init(w2);
    snprintf(log, sizeof log, "%s/restore.log", w2->dir);
    char *plain[] = {"restore", (char *)dest, "--ledger", w2->ledger, NULL};
    EXPECT_EQ("restore onto a fresh ledger without --force", 1,
              run_ctl(out, sizeof out, log, plain));
    EXPECT_CONTAINS("the refusal", "already holds a ledger", out);
    char *forced[] = {"restore", (char *)dest, "--ledger", w2->ledger, "--force", NULL};
    EXPECT_EQ("restore --force", 0, run_ctl(out, sizeof out, log, forced));
    EXPECT_CONTAINS("the restore's report", "verify OK", out);
    EXPECT_EQ("the restored ledger's last seq", m->seq, live_seq(w2->ledger));
    uint8_t head[DIGEST_SHA256_BYTES];
    entry_hash(w2->ledger, m->seq, head);
    EXPECT_TRUE("restored chain head equals the manifest's",
                memcmp(head, m->head, sizeof head) == 0);
    ctl_ok(w2, "verify", NULL);
    world_start_broker(w2);
    agent_proc_t *agent = world_start_agent(w2, l->partners[0]);
    cpos_t *pos = cpos_new(agent->endpoint, "till-r");
    for (int m_i = 0; m_i < MEMBERS; m_i++) {
        char member[16], txn[32];
        cpos_result_t r;
        snprintf(member, sizeof member, "m%d", m_i);
        snprintf(txn, sizeof txn, "rq-%d", m_i);
        EXPECT_EQ("balance call", CPOS_OK, cpos_balance(pos, txn, member, &r));
        if (r.balance != expected[m_i])
            fail_msg("member %s on the restored ledger: expected %lld (its approvals up to seq "
                     "%llu), got %lld",
                     member, (long long)expected[m_i], (unsigned long long)m->seq,
                     (long long)r.balance);
    }
    cpos_destroy(&pos);
    entry_hash(w2->ledger, m->seq, head); /* the running broker kept the history */
    EXPECT_TRUE("chain head after the broker ran", memcmp(head, m->head, sizeof head) == 0);
    world_destroy(w2);
    free(w2);
}

static void backup_under_load_restores_to_its_seq(void **state)
{
    (void)state;
    load_t *l = calloc(1, sizeof *l);
    l->partners[0] = "fuel";
    l->partners[1] = "grocer";
    setup_world(&l->w, l->partners, AGENTS, MEMBERS);
    for (int a = 0; a < AGENTS; a++)
        world_start_agent(&l->w, l->partners[a]);
    pthread_t tills[AGENTS][TILLS_PER_AGENT];
    till_arg_t args[AGENTS][TILLS_PER_AGENT];
    start_load(l, tills, args);
    wait_done(l, EARNS_BEFORE_BACKUP);
    char dest[PATH_BYTES], out[OUT_BYTES], log[PATH_BYTES];
    snprintf(dest, sizeof dest, "%s/backup-1", l->w.dir);
    snprintf(log, sizeof log, "%s/backup.log", l->w.dir);
    uint64_t seq_before = live_seq(l->w.ledger);
    char *argv[] = {"--ledger", l->w.ledger, "backup", dest, NULL};
    EXPECT_EQ("backup under load", 0, run_ctl(out, sizeof out, log, argv));
    uint64_t seq_after = live_seq(l->w.ledger);
    long done_after = atomic_load(&l->done);
    EXPECT_CONTAINS("backup output", "verify=OK", out);
    EXPECT_CONTAINS("backup output names the card key", "NOT in the backup", out);
    wait_done(l, done_after + EARNS_AFTER_BACKUP);
    stop_load(l, tills);
    wait_drained(l);
    backup_manifest_t m;
    read_manifest(dest, &m);
    uint64_t seq_final = live_seq(l->w.ledger);
    printf("backup: live seq %" PRIu64 " before, %" PRIu64
           " after the command; manifest seq %" PRIu64 "; final %" PRIu64 "\n",
           seq_before, seq_after, m.seq, seq_final);
    if (m.seq < seq_before || m.seq > seq_after || seq_final <= seq_after)
        fail_msg("expected the backup's seq %llu within [%llu, %llu] and the load to go on past "
                 "it (final %llu)",
                 (unsigned long long)m.seq, (unsigned long long)seq_before,
                 (unsigned long long)seq_after, (unsigned long long)seq_final);
    EXPECT_TRUE("the backup verified", m.verified);
    uint8_t head[DIGEST_SHA256_BYTES];
    entry_hash(l->w.ledger, m.seq, head);
    EXPECT_TRUE("manifest head equals the live ledger's entry at its seq",
                memcmp(head, m.head, sizeof head) == 0);
    int64_t expected[MEMBERS] = {0};
    long counted = 0;
    expected_balances(l, m.seq, expected, &counted);
    EXPECT_TRUE("the backup holds some of the load's earns, not all", counted > 0);
    restore_and_run(l, dest, &m, expected);
    world_destroy(&l->w);
    free(l);
}

/* A small world: one partner, a few members (journal entries), the broker running. */
static int setup_small(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    const char *partners[] = {"fuel"};
    setup_world(w, partners, 1, 3);
    *state = w;
    return 0;
}

static int teardown_small(void **state)
{
    world_t *w = *state;
    world_destroy(w);
    free(w);
    return 0;
}

static void restore_refused_onto_a_running_brokers_ledger(void **state)
{
    world_t *w = *state;
    char dest[PATH_BYTES], out[OUT_BYTES], log[PATH_BYTES], data[PATH_BYTES];
    snprintf(dest, sizeof dest, "%s/b", w->dir);
    snprintf(log, sizeof log, "%s/ctl.log", w->dir);
    snprintf(data, sizeof data, "%s/data.mdb", w->ledger);
    char *backup[] = {"--ledger", w->ledger, "backup", dest, NULL};
    EXPECT_EQ("backup", 0, run_ctl(out, sizeof out, log, backup));
    ino_t dir_inode = inode_of(w->ledger), data_inode = inode_of(data);
    uint64_t seq = live_seq(w->ledger);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)w->broker.pid);
    char *forced[] = {"restore", dest, "--ledger", w->ledger, "--force", NULL};
    EXPECT_EQ("restore --force onto the live ledger", 1, run_ctl(out, sizeof out, log, forced));
    EXPECT_CONTAINS("the refusal names the broker's pid", pid, out);
    EXPECT_CONTAINS("the refusal names the ledger", w->ledger, out);
    char *plain[] = {"restore", dest, "--ledger", w->ledger, NULL};
    EXPECT_EQ("restore onto the live ledger", 1, run_ctl(out, sizeof out, log, plain));
    EXPECT_CONTAINS("the refusal names the broker's pid", pid, out);
    EXPECT_EQ("the ledger directory is the same one", dir_inode, inode_of(w->ledger));
    EXPECT_EQ("its data file is the same one", data_inode, inode_of(data));
    EXPECT_EQ("its journal", seq, live_seq(w->ledger));
    EXPECT_EQ("no staging directory left", 0, count_prefixed(w->dir, "ledger.restore-"));
    ctl_ok(w, "member", "add", "after-refusal", NULL); /* the broker still writes */
    EXPECT_EQ("the broker wrote one more entry", seq + 1, live_seq(w->ledger));
}

static void restore_refused_onto_an_existing_ledger_without_force(void **state)
{
    world_t *w = *state;
    char dest[PATH_BYTES], out[OUT_BYTES], log[PATH_BYTES], data[PATH_BYTES], aside[PATH_BYTES];
    snprintf(dest, sizeof dest, "%s/b", w->dir);
    snprintf(log, sizeof log, "%s/ctl.log", w->dir);
    snprintf(data, sizeof data, "%s/data.mdb", w->ledger);
    char *backup[] = {"--ledger", w->ledger, "backup", dest, NULL};
    EXPECT_EQ("backup", 0, run_ctl(out, sizeof out, log, backup));
    backup_manifest_t m;
    read_manifest(dest, &m);
    ctl_ok(w, "member", "add", "later", NULL); /* the live ledger moves past the backup */
    EXPECT_EQ("broker stopped", 0, world_stop_broker(w, SIGTERM));
    backup_file_t before, after;
    EXPECT_EQ("hash data.mdb", CL_OK, bio_hash_file(data, BACKUP_DATA_BYTES_MAX, false, &before));
    char *plain[] = {"--ledger", w->ledger, "restore", dest, NULL};
    EXPECT_EQ("restore onto an existing ledger", 1, run_ctl(out, sizeof out, log, plain));
    EXPECT_CONTAINS("the refusal", "already holds a ledger", out);
    EXPECT_EQ("hash data.mdb", CL_OK, bio_hash_file(data, BACKUP_DATA_BYTES_MAX, false, &after));
    EXPECT_TRUE("data.mdb unchanged",
                memcmp(before.sha256, after.sha256, sizeof after.sha256) == 0);
    EXPECT_EQ("live seq", m.seq + 1, live_seq(w->ledger));
    char *forced[] = {"--ledger", w->ledger, "restore", dest, "--force", NULL};
    EXPECT_EQ("restore --force with the broker stopped", 0, run_ctl(out, sizeof out, log, forced));
    EXPECT_EQ("the restored ledger's seq", m.seq, live_seq(w->ledger));
    EXPECT_EQ("the replaced ledger kept aside", 1,
              count_prefixed(w->dir, "ledger.before-restore-"));
    const char *kept = strstr(out, "kept in ");
    EXPECT_TRUE("the report says where", kept != NULL);
    snprintf(aside, sizeof aside, "%.*s", (int)strcspn(kept + 8, " \n"), kept + 8);
    EXPECT_EQ("the old ledger, untouched, aside", m.seq + 1, live_seq(aside));
    world_start_broker(w); /* the card key beside the ledger is still the one it had */
    ctl_ok(w, "member", "add", "after-restore", NULL);
    EXPECT_EQ("the broker writes after the restore", m.seq + 1, live_seq(w->ledger));
}

static void backup_refused_into_a_nonempty_dest(void **state)
{
    world_t *w = *state;
    char dest[PATH_BYTES], file[PATH_BYTES], out[OUT_BYTES], log[PATH_BYTES], text[64];
    snprintf(dest, sizeof dest, "%s/occupied", w->dir);
    path_in(file, dest, "keep.txt");
    snprintf(log, sizeof log, "%s/ctl.log", w->dir);
    mkdir(dest, 0700);
    write_text(file, "mine\n");
    char *into_dir[] = {"--ledger", w->ledger, "backup", dest, NULL};
    EXPECT_EQ("backup into a non-empty directory", 1, run_ctl(out, sizeof out, log, into_dir));
    EXPECT_CONTAINS("the refusal names DEST", dest, out);
    read_text(file, text, sizeof text);
    EXPECT_STR("its file untouched", "mine\n", text);
    /* An option where DEST belongs is a usage error, not a backup named "--help". */
    char cwd[PATH_BYTES];
    EXPECT_TRUE("getcwd", getcwd(cwd, sizeof cwd) != NULL);
    EXPECT_EQ("chdir", 0, chdir(w->dir));
    char *help[] = {"--ledger", w->ledger, "backup", "--help", NULL};
    int help_rc = run_ctl(out, sizeof out, log, help);
    struct stat made;
    bool made_help = stat("--help", &made) == 0;
    EXPECT_EQ("chdir back", 0, chdir(cwd));
    EXPECT_EQ("backup --help", 2, help_rc);
    EXPECT_TRUE("no backup named --help", !made_help);
    char *into_file[] = {"--ledger", w->ledger, "backup", file, NULL};
    EXPECT_EQ("backup onto a file", 1, run_ctl(out, sizeof out, log, into_file));
    EXPECT_EQ("no partial directory left", 0, count_prefixed(w->dir, "occupied.partial-"));
    char empty[PATH_BYTES];
    snprintf(empty, sizeof empty, "%s/empty", w->dir);
    mkdir(empty, 0700);
    char *into_empty[] = {"--ledger", w->ledger, "backup", empty, NULL};
    EXPECT_EQ("backup into an empty directory", 0, run_ctl(out, sizeof out, log, into_empty));
    struct stat st;
    EXPECT_EQ("stat", 0, stat(empty, &st));
    EXPECT_EQ("owner-only backup directory", 0700, st.st_mode & 0777);
    char data[PATH_BYTES];
    path_in(data, empty, "data.mdb");
    EXPECT_EQ("stat", 0, stat(data, &st));
    EXPECT_EQ("owner-only data file", 0600, st.st_mode & 0777);
    char card[PATH_BYTES];
    path_in(card, empty, "ledger.card.key");
    EXPECT_FALSE("no card key file in the backup", exists(card));
    char fresh[PATH_BYTES];
    path_in(fresh, w->dir, "fresh");
    char *no_ledger[] = {"--ledger", "/nonexistent/ledger", "backup", fresh, NULL};
    EXPECT_EQ("backup of a missing ledger", 2, run_ctl(out, sizeof out, log, no_ledger));
    EXPECT_CONTAINS("names the ledger", "/nonexistent/ledger", out);
    EXPECT_FALSE("no DEST for a missing ledger", exists(fresh));
    EXPECT_EQ("no partial directory left", 0, count_prefixed(w->dir, "fresh.partial-"));
}

/* Copy directory `from` (flat) to `to`. */
static void copy_dir(const char *from, const char *to)
{
    mkdir(to, 0700);
    DIR *d = opendir(from);
    const struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char a[PATH_BYTES], b[PATH_BYTES];
        backup_file_t f;
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        EXPECT_EQ("copy a backup file", CL_OK, bio_copy_file(a, b, BACKUP_DATA_BYTES_MAX, &f));
    }
    if (d != NULL)
        closedir(d);
}

/* Replace the first line starting with `key=` in dir/BACKUP by `line`. */
static void edit_manifest(const char *dir, const char *key, const char *line)
{
    char path[PATH_BYTES], text[BACKUP_MANIFEST_BYTES_MAX], edited[BACKUP_MANIFEST_BYTES_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, BACKUP_MANIFEST_FILE);
    read_text(path, text, sizeof text);
    char needle[64];
    snprintf(needle, sizeof needle, "\n%s=", key);
    char *at = strstr(text, needle);
    if (at == NULL)
        fail_msg("no %s= line in %s", key, path);
    char *end = strchr(at + 1, '\n');
    snprintf(edited, sizeof edited, "%.*s\n%s%s", (int)(at - text), text, line, end);
    write_text(path, edited);
}

/* Flip one byte of `path` at `offset`. */
static void flip_byte(const char *path, long offset)
{
    int fd = open(path, O_RDWR);
    unsigned char c = 0;
    EXPECT_EQ("read the byte", 1, pread(fd, &c, 1, offset));
    c ^= 0x5a;
    EXPECT_EQ("write the byte", 1, pwrite(fd, &c, 1, offset));
    close(fd);
}

/* Replace every "m1" member id in a file by "m2" (same length: the B-tree stays sane). */
static int rewrite_member(const char *path)
{
    FILE *f = fopen(path, "r+b");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    int changed = 0;
    for (size_t i = 0; i + 9 <= n; i++)
        if (memcmp(buf + i, "member:m1", 9) == 0 &&
            (i + 9 == n || buf[i + 9] < '0' || buf[i + 9] > '9')) {
            buf[i + 8] = '2';
            changed++;
        }
    fseek(f, 0, SEEK_SET);
    fwrite(buf, 1, n, f);
    fclose(f);
    return changed;
}

static void expect_refused(world_t *w, const char *src, const char *what, const char *reason)
{
    char target[PATH_BYTES], out[OUT_BYTES], log[PATH_BYTES];
    snprintf(target, sizeof target, "%s/restored", w->dir);
    snprintf(log, sizeof log, "%s/ctl.log", w->dir);
    char *argv[] = {"restore", (char *)src, "--ledger", target, NULL};
    int rc = run_ctl(out, sizeof out, log, argv);
    if (rc != 1)
        fail_msg("%s: expected restore to refuse (exit 1), got %d: %s", what, rc, out);
    if (strstr(out, reason) == NULL)
        fail_msg("%s: expected the refusal to say \"%s\", got: %s", what, reason, out);
    if (exists(target))
        fail_msg("%s: expected nothing at %s after the refusal", what, target);
    EXPECT_EQ("no staging directory left", 0, count_prefixed(w->dir, "restored.restore-"));
}

static void tampered_backups_refused(void **state)
{
    world_t *w = *state;
    char dest[PATH_BYTES], out[OUT_BYTES], log[PATH_BYTES], copy[PATH_BYTES], path[PATH_BYTES];
    snprintf(dest, sizeof dest, "%s/good", w->dir);
    snprintf(log, sizeof log, "%s/ctl.log", w->dir);
    char *backup[] = {"--ledger", w->ledger, "backup", dest, NULL};
    EXPECT_EQ("backup", 0, run_ctl(out, sizeof out, log, backup));
    backup_manifest_t m;
    read_manifest(dest, &m);
    char line[256], hex[BACKUP_HEX_BYTES];
    static const struct {
        const char *key, *line, *reason;
    } edits[] = {
        {"seq", "seq=1", "manifest says seq 1"},
        {"head", "head=00000000000000000000000000000000000000000000000000000000000000ff",
         "chain head"},
        {"data", "data=data.mdb 4096 00", "line"},
        {"verify", "verify=FAILED", "failed verify"},
        {"source", "unknown=1", "unknown key"},
        {"key", "key=../../etc/passwd 10 00", "line"},
        {"schema", "schema=6", "schema 6"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        snprintf(copy, sizeof copy, "%s/edit-%zu", w->dir, i);
        copy_dir(dest, copy);
        edit_manifest(copy, edits[i].key, edits[i].line);
        expect_refused(w, copy, edits[i].line, edits[i].reason);
    }
    snprintf(copy, sizeof copy, "%s/flipped", w->dir);
    copy_dir(dest, copy);
    path_in(path, copy, "data.mdb");
    flip_byte(path, (long)(m.data.bytes / 2));
    expect_refused(w, copy, "a byte of data.mdb flipped", "does not match the manifest");
    snprintf(copy, sizeof copy, "%s/key-changed", w->dir);
    copy_dir(dest, copy);
    path_in(path, copy, "broker.pub");
    flip_byte(path, 0);
    expect_refused(w, copy, "broker.pub changed", "broker.pub does not match the manifest");
    /* A member id rewritten in the ledger AND the manifest's hash recomputed: the bytes
     * match, but the copy no longer verifies (the journal's chain or balances). */
    snprintf(copy, sizeof copy, "%s/laundered", w->dir);
    copy_dir(dest, copy);
    path_in(path, copy, "data.mdb");
    EXPECT_TRUE("member:m1 found in data.mdb", rewrite_member(path) > 0);
    backup_file_t f;
    EXPECT_EQ("hash", CL_OK, bio_hash_file(path, BACKUP_DATA_BYTES_MAX, false, &f));
    backup_hex(f.sha256, sizeof f.sha256, hex);
    snprintf(line, sizeof line, "data=data.mdb %" PRIu64 " %s", f.bytes, hex);
    edit_manifest(copy, "data", line);
    expect_refused(w, copy, "ledger rewritten, manifest hash recomputed", "fails verify");
    snprintf(path, sizeof path, "%s/restored", w->dir);
    char *good[] = {"restore", dest, "--ledger", path, NULL};
    EXPECT_EQ("the untouched backup restores", 0, run_ctl(out, sizeof out, log, good));
    EXPECT_EQ("its seq", m.seq, live_seq(path));
}

/* SIGKILL the backup at delays spread over (and past) how long one takes: DEST is
 * either absent or a complete backup, never a half-written one. */
static void killed_backup_leaves_no_half_dest(void **state)
{
    world_t *w = *state;
    char dest[PATH_BYTES], out[OUT_BYTES], log[PATH_BYTES];
    snprintf(log, sizeof log, "%s/ctl.log", w->dir);
    path_in(dest, w->dir, "timed");
    char *timed[] = {"--ledger", w->ledger, "backup", dest, NULL};
    int64_t start_ms = clock_mono_ms();
    EXPECT_EQ("a backup to time", 0, run_ctl(out, sizeof out, log, timed));
    int64_t took_us = (clock_mono_ms() - start_ms) * 1000;
    int absent = 0, complete = 0;
    for (int k = 0; k < KILL_TRIES; k++) {
        snprintf(dest, sizeof dest, "%s/killed-%d", w->dir, k);
        char *argv[] = {COALITIONCTL_BIN, "--ledger", w->ledger, "backup", dest, NULL};
        pid_t pid = harness_spawn(argv, log);
        int64_t delay_us = took_us * 3 * k / (2 * (KILL_TRIES - 1)); /* 0 .. 1.5 x */
        struct timespec ts = {(time_t)(delay_us / 1000000), (long)(delay_us % 1000000) * 1000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (!exists(dest)) {
            absent++;
            continue;
        }
        backup_manifest_t m;
        read_manifest(dest, &m); /* fails the test if DEST exists without a valid one */
        EXPECT_TRUE("a complete backup verified", m.verified);
        complete++;
    }
    printf("killed backups (one takes %lld ms): %d left no DEST, %d completed before the kill\n",
           (long long)(took_us / 1000), absent, complete);
    snprintf(dest, sizeof dest, "%s/after-kills", w->dir);
    char *again[] = {"--ledger", w->ledger, "backup", dest, NULL};
    EXPECT_EQ("a backup after the killed ones", 0, run_ctl(out, sizeof out, log, again));
    ctl_ok(w, "member", "add", "after-kills", NULL);
    ctl_ok(w, "verify", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backup_under_load_restores_to_its_seq),
        cmocka_unit_test_setup_teardown(restore_refused_onto_a_running_brokers_ledger, setup_small,
                                        teardown_small),
        cmocka_unit_test_setup_teardown(restore_refused_onto_an_existing_ledger_without_force,
                                        setup_small, teardown_small),
        cmocka_unit_test_setup_teardown(backup_refused_into_a_nonempty_dest, setup_small,
                                        teardown_small),
        cmocka_unit_test_setup_teardown(tampered_backups_refused, setup_small, teardown_small),
        cmocka_unit_test_setup_teardown(killed_backup_leaves_no_half_dest, setup_small,
                                        teardown_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
