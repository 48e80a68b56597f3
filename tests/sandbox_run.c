/* sandbox_run: run a program under a seccomp filter like the one systemd builds from a
 * unit's SystemCallFilter= and RestrictAddressFamilies= (systemd.exec(5)), for tests
 * that must show the services work inside their sandbox without a running systemd.
 *   sandbox_run SYSCALLS_FILE FAMILIES PROGRAM [ARGS...]
 * SYSCALLS_FILE: the allowed system calls, one name a line (names this libseccomp does
 * not know are skipped); any other call fails with EPERM (SystemCallErrorNumber=EPERM).
 * FAMILIES: comma-separated AF_UNIX, AF_INET, AF_INET6, AF_NETLINK: socket() of any
 * other family fails (with EPERM here, EAFNOSUPPORT under systemd: both are failures).
 * MemoryDenyWriteExecute=yes as systemd builds it: mmap() of memory both writable and
 * executable, and mprotect() to executable, fail. */
#include <assert.h>
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define NAME_BYTES_MAX 64
#define FAMILIES_MAX 8

typedef struct family_name {
    const char *name;
    int family;
} family_name_t;

static const family_name_t families_known[] = {
    {"AF_UNIX", AF_UNIX}, {"AF_INET", AF_INET}, {"AF_INET6", AF_INET6}, {"AF_NETLINK", AF_NETLINK}};

/* Allow every call named in `path` but socket(); returns how many were allowed, or -1. */
static int allow_syscalls(scmp_filter_ctx ctx, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char name[NAME_BYTES_MAX];
    int allowed = 0;
    while (fscanf(f, "%63s", name) == 1) {
        int nr = seccomp_syscall_resolve_name(name);
        /* Allowed below only with their arguments checked. */
        if (nr == __NR_SCMP_ERROR || nr == SCMP_SYS(socket) || nr == SCMP_SYS(mmap) ||
            nr == SCMP_SYS(mprotect) || nr == SCMP_SYS(pkey_mprotect))
            continue;
        if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0) {
            fclose(f);
            return -1;
        }
        allowed++;
    }
    fclose(f);
    return allowed;
}

/* socket() only for the listed families. */
static int allow_families(scmp_filter_ctx ctx, const char *list)
{
    char copy[NAME_BYTES_MAX * FAMILIES_MAX];
    snprintf(copy, sizeof copy, "%s", list);
    int added = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < sizeof families_known / sizeof families_known[0] &&
               strcmp(families_known[i].name, tok) != 0)
            i++;
        if (i == sizeof families_known / sizeof families_known[0]) {
            fprintf(stderr, "sandbox_run: unknown address family %s\n", tok);
            return -1;
        }
        if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                             SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)families_known[i].family)) != 0)
            return -1;
        added++;
    }
    assert(added <= FAMILIES_MAX);
    return added;
}

/* MemoryDenyWriteExecute=yes: mmap() never writable and executable at once; mprotect()
 * never to executable (systemd's seccomp_memory_deny_write_execute). */
static int deny_write_execute(scmp_filter_ctx ctx)
{
    const scmp_datum_t wx = PROT_WRITE | PROT_EXEC;
    const scmp_datum_t mmap_ok[] = {0, PROT_WRITE, PROT_EXEC};
    for (size_t i = 0; i < sizeof mmap_ok / sizeof mmap_ok[0]; i++) {
        if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
                             SCMP_A2(SCMP_CMP_MASKED_EQ, wx, mmap_ok[i])) != 0)
            return -1;
    }
    if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                         SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) != 0 ||
        seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(pkey_mprotect), 1,
                         SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) != 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: sandbox_run SYSCALLS_FILE FAMILIES PROGRAM [ARGS...]\n");
        return 2;
    }
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (ctx == NULL)
        return 1;
    int allowed = allow_syscalls(ctx, argv[1]);
    int families = allowed > 0 ? allow_families(ctx, argv[2]) : -1;
    /* NoNewPrivileges=yes, which an unprivileged seccomp filter needs anyway. */
    if (allowed <= 0 || families < 0 || deny_write_execute(ctx) != 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || seccomp_load(ctx) != 0) {
        fprintf(stderr, "sandbox_run: cannot build the filter from %s and %s\n", argv[1], argv[2]);
        seccomp_release(ctx);
        return 1;
    }
    seccomp_release(ctx);
    execv(argv[3], argv + 3);
    fprintf(stderr, "sandbox_run: cannot run %s: %s\n", argv[3], strerror(errno));
    return 127;
}
