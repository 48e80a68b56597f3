/* LMDB environment open/grow, the retry on a full map, the writer lock, snapshots and
 * key encoding; see store.h. */
#include "store.h"

#include "errors.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_READERS_MAX 126
#define STORE_DIR_MODE 0700
#define STORE_FILE_MODE 0600
#define STORE_PATH_BYTES_MAX 4096
#define STORE_PID_TEXT_BYTES 32
/* Tries at the writer lock when its file is replaced by a releasing holder meanwhile. */
#define STORE_LOCK_ATTEMPTS_MAX 8
#define STORE_DATA_FILE "data.mdb"
/* Copies started again when the writer grows the map during the copy's start. */
#define STORE_COPY_ATTEMPTS_MAX 8
#define STORE_LMDB_LOCK_FILE "lock.mdb"

/* The map maximum travels with the environment in its user context, as an integer. */
_Static_assert(sizeof(uintptr_t) >= sizeof(size_t), "a map size must fit the user context");

int store_err(int mdb_rc)
{
    switch (mdb_rc) {
    case MDB_SUCCESS: return CL_OK;
    case MDB_NOTFOUND: return CL_ERR_NOT_FOUND;
    case MDB_KEYEXIST: return CL_ERR_EXISTS;
    case MDB_MAP_FULL: return CL_ERR_MAP_FULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID: return CL_ERR_CORRUPT;
    case MDB_VERSION_MISMATCH: return CL_ERR_VERSION;
    case ENOMEM: return CL_ERR_NOMEM;
    default: return mdb_rc > 0 ? CL_ERR_IO : CL_ERR_LMDB;
    }
}

static bool options_valid(const store_options_t *opts)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return false;
    size_t page_bytes = (size_t)page;
    return opts->map_bytes_initial >= STORE_MAP_BYTES_MIN &&
           opts->map_bytes_initial <= opts->map_bytes_max &&
           opts->map_bytes_initial % page_bytes == 0 && opts->map_bytes_max % page_bytes == 0;
}

int store_env_open(MDB_env **env_out, const char *dir, store_mode_t mode)
{
    const store_options_t opts = {STORE_MAP_BYTES_INITIAL, STORE_MAP_BYTES_MAX};
    return store_env_open_with(env_out, dir, mode, &opts);
}

int store_env_open_with(MDB_env **env_out, const char *dir, store_mode_t mode,
                        const store_options_t *opts)
{
    if (!options_valid(opts))
        return CL_ERR_INVALID;
    MDB_env *env = NULL;
    int rc = mdb_env_create(&env);
    if (rc != MDB_SUCCESS)
        goto err;
    if (mode == STORE_READ_WRITE && mkdir(dir, STORE_DIR_MODE) != 0 && errno != EEXIST) {
        rc = errno;
        goto err;
    }
    rc = mdb_env_set_maxdbs(env, STORE_DBS_MAX);
    if (rc == MDB_SUCCESS)
        rc = mdb_env_set_maxreaders(env, STORE_READERS_MAX);
    if (rc == MDB_SUCCESS)
        rc = mdb_env_set_mapsize(env, opts->map_bytes_initial);
    if (rc == MDB_SUCCESS)
        rc = mdb_env_set_userctx(env, (void *)(uintptr_t)opts->map_bytes_max);
    if (rc != MDB_SUCCESS)
        goto err;
    /* Full durability: no flag here relaxes syncing, and no writable map. */
    unsigned flags = MDB_NOTLS | (mode == STORE_READ_ONLY ? MDB_RDONLY : 0u);
    rc = mdb_env_open(env, dir, flags, STORE_FILE_MODE);
    if (rc != MDB_SUCCESS)
        goto err;
    int cleared_rc = store_clear_stale_readers(env, NULL);
    if (cleared_rc != CL_OK) {
        mdb_env_close(env);
        return cleared_rc;
    }
    *env_out = env;
    return CL_OK;
err:
    log_error("cannot open LMDB environment %s: %s", dir, mdb_strerror(rc));
    if (env != NULL)
        mdb_env_close(env);
    return store_err(rc);
}

int store_clear_stale_readers(MDB_env *env, int *cleared_out)
{
    int dead = 0;
    int rc = mdb_reader_check(env, &dead);
    if (rc != MDB_SUCCESS) {
        log_error("cannot check LMDB reader slots: %s", mdb_strerror(rc));
        return store_err(rc);
    }
    const char *path = NULL;
    if (dead > 0 && mdb_env_get_path(env, &path) == MDB_SUCCESS)
        log_warn("cleared %d stale LMDB reader slot(s) in %s", dead, path);
    if (cleared_out != NULL)
        *cleared_out = dead;
    return CL_OK;
}

int store_env_grow(MDB_env *env)
{
    /* Dead readers pin old pages; clear them so the grown map is not wasted on them. */
    int rc = store_clear_stale_readers(env, NULL);
    if (rc != CL_OK)
        return rc;
    MDB_envinfo info;
    int mrc = mdb_env_info(env, &info);
    if (mrc != MDB_SUCCESS)
        return store_err(mrc);
    size_t max = (size_t)(uintptr_t)mdb_env_get_userctx(env);
    assert(max >= STORE_MAP_BYTES_MIN);
    if (info.me_mapsize >= max) {
        log_error("LMDB map full at its maximum of %zu KiB", max >> 10);
        return CL_ERR_MAP_FULL;
    }
    size_t next = info.me_mapsize <= max / 2 ? info.me_mapsize * 2 : max;
    assert(next > info.me_mapsize && next <= max); /* growing always makes progress */
    mrc = mdb_env_set_mapsize(env, next);
    if (mrc != MDB_SUCCESS) {
        log_error("cannot grow the LMDB map to %zu KiB: %s", next >> 10, mdb_strerror(mrc));
        return store_err(mrc);
    }
    log_info("LMDB map grown to %zu KiB", next >> 10);
    return CL_OK;
}

int store_retry_map_full(const store_retry_t *retry)
{
    assert(retry->attempt != NULL && retry->grow != NULL && retry->attempts_max >= 1);
    for (int attempt = 1;; attempt++) {
        int rc = retry->attempt(retry->ctx);
        if (rc != CL_ERR_MAP_FULL)
            return rc; /* committed, or failed for another reason */
        if (attempt == retry->attempts_max)
            break;
        rc = retry->grow(retry->ctx);
        if (rc != CL_OK)
            return rc; /* CL_ERR_MAP_FULL at the maximum, or the remap failed */
    }
    log_error("LMDB map still full after %d attempt(s); nothing applied", retry->attempts_max);
    return CL_ERR_MAP_FULL;
}

int store_read_begin(MDB_env *env, MDB_txn **txn_out)
{
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn_out);
    if (rc == MDB_MAP_RESIZED) {
        /* The writer grew the map beyond ours: adopt its size (0 = the size on disk). */
        rc = mdb_env_set_mapsize(env, 0);
        if (rc == MDB_SUCCESS)
            rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn_out);
    }
    if (rc != MDB_SUCCESS) {
        *txn_out = NULL;
        log_error("cannot begin a read transaction: %s", mdb_strerror(rc));
    }
    return store_err(rc);
}

int store_env_copy_compact(MDB_env *env, const char *dir)
{
    char path[STORE_PATH_BYTES_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, STORE_DATA_FILE);
    if (n <= 0 || (size_t)n >= sizeof path)
        return CL_ERR_INVALID;
    int rc = mdb_env_copy2(env, dir, MDB_CP_COMPACT);
    /* The writer grew the map past ours since we opened it: adopt its size and copy
     * again. mdb_env_copy2 created its file exclusively and left it behind. */
    for (int attempt = 1; rc == MDB_MAP_RESIZED && attempt < STORE_COPY_ATTEMPTS_MAX; attempt++) {
        rc = unlink(path) == 0 || errno == ENOENT ? mdb_env_set_mapsize(env, 0) : errno;
        if (rc == MDB_SUCCESS)
            rc = mdb_env_copy2(env, dir, MDB_CP_COMPACT);
    }
    if (rc != MDB_SUCCESS)
        log_error("cannot copy the LMDB environment into %s: %s", dir, mdb_strerror(rc));
    return store_err(rc);
}

static bool store_path(char *buf, size_t size, const char *dir, const char *file)
{
    int n = snprintf(buf, size, "%s/%s", dir, file);
    return n > 0 && (size_t)n < size;
}

int store_env_remove(const char *dir)
{
    static const char *const files[] = {STORE_DATA_FILE, STORE_LMDB_LOCK_FILE};
    char path[STORE_PATH_BYTES_MAX];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (!store_path(path, sizeof path, dir, files[i]))
            return CL_ERR_INVALID;
        if (unlink(path) != 0 && errno != ENOENT) {
            log_error("cannot remove %s: %s", path, strerror(errno));
            return CL_ERR_IO;
        }
    }
    if (rmdir(dir) != 0) {
        log_error("cannot remove %s: %s", dir, strerror(errno));
        return CL_ERR_IO;
    }
    return CL_OK;
}

struct store_lock {
    int fd;
    char path[STORE_PATH_BYTES_MAX];
};

/* The pid written in a lock file, or 0 when it is empty or not a pid. */
static long read_holder_pid(int fd)
{
    char text[STORE_PID_TEXT_BYTES];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    char *end = NULL;
    long pid = strtol(text, &end, 10);
    return end != text && (*end == '\n' || *end == '\0') && pid > 0 ? pid : 0;
}

static int write_own_pid(int fd)
{
    char text[STORE_PID_TEXT_BYTES];
    int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    assert(n > 0 && (size_t)n < sizeof text);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != (ssize_t)n)
        return CL_ERR_IO;
    return CL_OK;
}

/* Whether `fd` is still the file at `path`: a releasing holder unlinks the file while
 * holding its lock, so a lock won on an unlinked file is no lock at all. */
static bool still_linked(int fd, const char *path)
{
    struct stat by_fd, by_path;
    return fstat(fd, &by_fd) == 0 && stat(path, &by_path) == 0 && by_fd.st_dev == by_path.st_dev &&
           by_fd.st_ino == by_path.st_ino;
}

/* One try: CL_OK with the lock held; CL_ERR_EXISTS when the file was replaced under us
 * (try again); or an error. */
static int lock_once(store_lock_t *lock, long *holder_pid_out)
{
    lock->fd = open(lock->path, O_RDWR | O_CREAT | O_CLOEXEC, STORE_FILE_MODE);
    if (lock->fd < 0) {
        int err = errno;
        log_error("cannot open the writer lock %s: %s", lock->path, strerror(err));
        return err == ENOENT ? CL_ERR_NOT_FOUND : CL_ERR_IO;
    }
    int rc = CL_OK;
    if (flock(lock->fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        rc = err == EWOULDBLOCK ? CL_ERR_LOCKED : CL_ERR_IO;
        if (rc == CL_ERR_LOCKED)
            *holder_pid_out = read_holder_pid(lock->fd);
        else
            log_error("cannot lock %s: %s", lock->path, strerror(err));
    } else if (!still_linked(lock->fd, lock->path)) {
        rc = CL_ERR_EXISTS;
    } else if (write_own_pid(lock->fd) != CL_OK) {
        log_error("cannot write this process's pid into %s: %s", lock->path, strerror(errno));
        rc = CL_ERR_IO;
    }
    if (rc != CL_OK) {
        close(lock->fd); /* also releases the lock if this open took it */
        lock->fd = -1;
    }
    return rc;
}

int store_lock_take(store_lock_t **lock_out, const char *dir, long *holder_pid_out)
{
    *lock_out = NULL;
    *holder_pid_out = 0;
    store_lock_t *lock = calloc(1, sizeof *lock);
    if (lock == NULL)
        return CL_ERR_NOMEM;
    lock->fd = -1;
    int rc = CL_ERR_INVALID;
    if (store_path(lock->path, sizeof lock->path, dir, STORE_LOCK_FILE)) {
        rc = CL_ERR_EXISTS;
        for (int attempt = 0; attempt < STORE_LOCK_ATTEMPTS_MAX && rc == CL_ERR_EXISTS; attempt++)
            rc = lock_once(lock, holder_pid_out);
    }
    if (rc == CL_ERR_EXISTS)
        rc = CL_ERR_LOCKED; /* replaced again and again: writers are starting and stopping */
    if (rc != CL_OK) {
        free(lock);
        return rc;
    }
    assert(lock->fd >= 0);
    assert(lock != NULL);
    *lock_out = lock;
    return CL_OK;
}

void store_lock_release(store_lock_t **lock_p)
{
    store_lock_t *lock = *lock_p;
    if (lock == NULL)
        return;
    /* Unlinked while still held, so that nobody can lock the old file after us. */
    if (unlink(lock->path) != 0)
        log_warn("cannot remove the writer lock %s: %s", lock->path, strerror(errno));
    close(lock->fd);
    free(lock);
    *lock_p = NULL;
}

void store_lock_drop(store_lock_t **lock_p)
{
    store_lock_t *lock = *lock_p;
    if (lock == NULL)
        return;
    assert(lock->fd >= 0);
    close(lock->fd);
    free(lock);
    *lock_p = NULL;
}

int store_lock_probe(const char *dir, long *holder_pid_out)
{
    char path[STORE_PATH_BYTES_MAX];
    *holder_pid_out = 0;
    if (!store_path(path, sizeof path, dir, STORE_LOCK_FILE))
        return CL_ERR_INVALID;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? CL_OK : CL_ERR_IO;
    /* A shared lock conflicts only with a writer's exclusive one; closing drops it. */
    int rc = CL_OK;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? CL_ERR_LOCKED : CL_ERR_IO;
        if (rc == CL_ERR_LOCKED)
            *holder_pid_out = read_holder_pid(fd);
    }
    close(fd);
    return rc;
}

int store_walk(MDB_txn *txn, MDB_dbi dbi, const MDB_val *from, store_visit_fn fn, void *ctx)
{
    MDB_cursor *cur = NULL;
    int rc = store_err(mdb_cursor_open(txn, dbi, &cur));
    MDB_val k = from != NULL ? *from : (MDB_val){0, NULL}, v;
    MDB_cursor_op op = from != NULL ? MDB_SET_RANGE : MDB_FIRST;
    while (rc == CL_OK) {
        int mrc = mdb_cursor_get(cur, &k, &v, op);
        op = MDB_NEXT;
        if (mrc == MDB_NOTFOUND)
            break;
        rc = mrc == MDB_SUCCESS ? fn(&k, &v, ctx) : store_err(mrc);
    }
    if (rc == STORE_WALK_STOP)
        rc = CL_OK;
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

void store_put_u64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)(v & 0xffu);
        v >>= 8;
    }
}

uint64_t store_get_u64(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

size_t store_triple_key(uint8_t *buf, size_t size, const char *a, const char *b, const char *c)
{
    assert(buf != NULL && a != NULL && b != NULL && c != NULL);
    const char *parts[] = {a, b, c};
    size_t at = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t len = strlen(parts[i]);
        size_t need = len + (i > 0 ? 1 : 0);
        if (at + need > size)
            return 0;
        if (i > 0)
            buf[at++] = '\0';
        memcpy(buf + at, parts[i], len);
        at += len;
    }
    assert(at == strlen(a) + strlen(b) + strlen(c) + 2 && at <= size);
    return at;
}
