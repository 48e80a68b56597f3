/* LMDB environment helpers shared by the broker's ledger and the agent's outbox.
 * Every environment is opened with full sync (no flag that relaxes fsync), stale
 * readers are cleared at open, and MDB_MAP_FULL is reported so the caller can grow the
 * map and retry the whole transaction. */
#ifndef COALITION_STORE_H
#define COALITION_STORE_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_MAP_BYTES_INITIAL ((size_t)64 << 20)
#define STORE_MAP_BYTES_MAX ((size_t)1 << 40)
#define STORE_DBS_MAX 16

typedef enum { STORE_READ_WRITE = 0, STORE_READ_ONLY = 1 } store_mode_t;

/* Open (and with STORE_READ_WRITE create) the environment in directory `dir`. */
int store_env_open(MDB_env **env_out, const char *dir, store_mode_t mode);
/* Double the map size (up to STORE_MAP_BYTES_MAX). No transaction may be open. */
int store_env_grow(MDB_env *env);
/* Map an LMDB return code to a cl_err_t. */
int store_err(int mdb_rc);

/* Visit the records of `dbi` in key order, from the first key >= *from (NULL: the
 * first record). fn returns CL_OK to go on; anything else stops the walk and is returned. */
typedef int (*store_visit_fn)(const MDB_val *key, const MDB_val *val, void *ctx);
int store_walk(MDB_txn *txn, MDB_dbi dbi, const MDB_val *from, store_visit_fn fn, void *ctx);

/* Big-endian fixed-width keys and values, so LMDB's byte order is numeric order. */
void store_put_u64(uint8_t out[8], uint64_t v);
uint64_t store_get_u64(const uint8_t in[8]);

/* Key "<a>\0<b>\0<c>" for three-part string keys such as (partner, site, txn_id).
 * Returns its length, or 0 if it does not fit. */
size_t store_triple_key(uint8_t *buf, size_t size, const char *a, const char *b, const char *c);

#endif
