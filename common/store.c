/* LMDB environment open/grow and key encoding; see store.h. */
#include "store.h"

#include "errors.h"
#include "log.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#define STORE_READERS_MAX 126
#define STORE_DIR_MODE 0700
#define STORE_FILE_MODE 0600

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

int store_env_open(MDB_env **env_out, const char *dir, store_mode_t mode)
{
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
        rc = mdb_env_set_mapsize(env, STORE_MAP_BYTES_INITIAL);
    if (rc != MDB_SUCCESS)
        goto err;
    /* Full durability: no flag here relaxes syncing, and no writable map. */
    unsigned flags = MDB_NOTLS | (mode == STORE_READ_ONLY ? MDB_RDONLY : 0u);
    rc = mdb_env_open(env, dir, flags, STORE_FILE_MODE);
    if (rc != MDB_SUCCESS)
        goto err;
    int dead = 0;
    rc = mdb_reader_check(env, &dead);
    if (rc != MDB_SUCCESS)
        goto err;
    if (dead > 0)
        log_warn("cleared %d stale LMDB reader slot(s) in %s", dead, dir);
    *env_out = env;
    return CL_OK;
err:
    log_error("cannot open LMDB environment %s: %s", dir, mdb_strerror(rc));
    if (env != NULL)
        mdb_env_close(env);
    return store_err(rc);
}

int store_env_grow(MDB_env *env)
{
    MDB_envinfo info;
    int rc = mdb_env_info(env, &info);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    size_t next = info.me_mapsize * 2;
    if (next > STORE_MAP_BYTES_MAX)
        return CL_ERR_MAP_FULL;
    rc = mdb_env_set_mapsize(env, next);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    log_info("LMDB map grown to %zu MiB", next >> 20);
    return CL_OK;
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
    return at;
}
