/* LMDB environment helpers shared by the broker's ledger and the agent's outbox.
 * Every environment is opened with full sync (no flag that relaxes fsync), stale
 * readers are cleared at open and before every growth of the map, and MDB_MAP_FULL is
 * reported so that store_retry_map_full can grow the map and redo the whole
 * transaction. A store written by one process at a time takes store_lock_take first. */
#ifndef COALITION_STORE_H
#define COALITION_STORE_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_MAP_BYTES_INITIAL ((size_t)64 << 20)
#define STORE_MAP_BYTES_MAX ((size_t)1 << 40)
/* The smallest map store_env_open_with accepts: meta pages and a few B-tree pages. */
#define STORE_MAP_BYTES_MIN ((size_t)64 << 10)
#define STORE_DBS_MAX 24
/* The writer lock file in a store's directory; it holds the writer's pid. */
#define STORE_LOCK_FILE "writer.lock"

_Static_assert(STORE_MAP_BYTES_MIN <= STORE_MAP_BYTES_INITIAL, "default map below the minimum");
_Static_assert(STORE_MAP_BYTES_INITIAL <= STORE_MAP_BYTES_MAX, "default map above the maximum");

typedef enum { STORE_READ_WRITE = 0, STORE_READ_ONLY = 1 } store_mode_t;

typedef struct store_options {
    size_t map_bytes_initial; /* map at open; LMDB keeps it at least the data's size */
    size_t map_bytes_max;     /* store_env_grow never maps more than this */
} store_options_t;

/* Open (and with STORE_READ_WRITE create) the environment in directory `dir`, with
 * the production map sizes (STORE_MAP_BYTES_INITIAL, growing up to STORE_MAP_BYTES_MAX). */
int store_env_open(MDB_env **env_out, const char *dir, store_mode_t mode);
/* The same with explicit map sizes: multiples of the OS page size, at least
 * STORE_MAP_BYTES_MIN, initial <= max. */
int store_env_open_with(MDB_env **env_out, const char *dir, store_mode_t mode,
                        const store_options_t *opts);
/* Clear the reader slots of dead processes, then double the map (capped at the maximum
 * given at open). CL_ERR_MAP_FULL when the map is already at its maximum. No transaction
 * of this process may be open. */
int store_env_grow(MDB_env *env);
/* Clear the reader slots of dead processes; *cleared_out (may be NULL) says how many. */
int store_clear_stale_readers(MDB_env *env, int *cleared_out);
/* Map an LMDB return code to a cl_err_t. */
int store_err(int mdb_rc);

/* Retry on a full map. attempt() runs one whole write transaction and either commits it
 * or aborts it; grow() grows the map with no transaction open (through store_env_grow,
 * so stale readers are cleared first). On CL_ERR_MAP_FULL from an attempt, the map is
 * grown and the attempt redone, at most attempts_max attempts in all. Returns CL_OK
 * only when the last attempt committed; CL_ERR_MAP_FULL when every attempt found the
 * map full or growth reached the maximum; any other error of an attempt or of grow()
 * at once. */
typedef int (*store_attempt_fn)(void *ctx);
typedef int (*store_grow_fn)(void *ctx);
typedef struct store_retry {
    store_attempt_fn attempt;
    store_grow_fn grow;
    void *ctx;
    int attempts_max;
} store_retry_t;
int store_retry_map_full(const store_retry_t *retry);

/* Begin a read-only transaction. If another process grew the map past this one's
 * (MDB_MAP_RESIZED), adopt the new size and begin again: only for a process with no
 * other transaction open on `env` (coalitionctl), never beside a writer thread. */
int store_read_begin(MDB_env *env, MDB_txn **txn_out);
/* Copy the environment as of one read transaction, compacted (MDB_CP_COMPACT), into
 * the existing empty directory `dir`; when another process grew the map meanwhile
 * (MDB_MAP_RESIZED), adopt its size and start the copy again. The same precondition as
 * store_read_begin. */
int store_env_copy_compact(MDB_env *env, const char *dir);
/* Remove a copy made by store_env_copy_compact: its files and the directory. */
int store_env_remove(const char *dir);

/* The exclusive writer lock of a store's directory: flock on STORE_LOCK_FILE, taken
 * without waiting, with this process's pid written into the file. Released (and the file
 * removed) by store_lock_release, or by the kernel when the process dies; a file left by
 * a dead process is simply taken over. CL_ERR_LOCKED when another open holds it:
 * *holder_pid_out is the pid written in the file (0 if not written yet).
 * CL_ERR_NOT_FOUND when `dir` does not exist. */
typedef struct store_lock store_lock_t;
int store_lock_take(store_lock_t **lock_out, const char *dir, long *holder_pid_out);
void store_lock_release(store_lock_t **lock_p);
/* Release without removing the lock file: for a holder that moved the whole directory
 * away meanwhile, whose lock path may now name another writer's file. */
void store_lock_drop(store_lock_t **lock_p);
/* Whether a writer holds `dir`'s lock, without taking it or creating anything: CL_OK
 * when none does (or there is no lock file), CL_ERR_LOCKED with *holder_pid_out (0 if
 * not written yet) when one does. */
int store_lock_probe(const char *dir, long *holder_pid_out);

/* Visit the records of `dbi` in key order, from the first key >= *from (NULL: the
 * first record). fn returns CL_OK to go on, STORE_WALK_STOP to end the walk with CL_OK,
 * anything else ends it and is returned. */
#define STORE_WALK_STOP 1
typedef int (*store_visit_fn)(const MDB_val *key, const MDB_val *val, void *ctx);
int store_walk(MDB_txn *txn, MDB_dbi dbi, const MDB_val *from, store_visit_fn fn, void *ctx);

/* Big-endian fixed-width keys and values, so LMDB's byte order is numeric order. */
void store_put_u64(uint8_t out[8], uint64_t v);
uint64_t store_get_u64(const uint8_t in[8]);

/* Key "<a>\0<b>\0<c>" for three-part string keys such as (partner, site, txn_id).
 * Returns its length, or 0 if it does not fit. */
size_t store_triple_key(uint8_t *buf, size_t size, const char *a, const char *b, const char *c);

#endif
