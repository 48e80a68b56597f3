/* How much of the ledger's LMDB map is in use; see ledger_map_usage in ledger.h. Reads
 * only the environment's meta data: no transaction, no I/O. */
#include "errors.h"
#include "ledger_internal.h"

#include <assert.h>

int ledger_map_usage(ledger_t *self, uint64_t *used_out, uint64_t *size_out)
{
    assert(self != NULL && self->env != NULL);
    MDB_envinfo info;
    MDB_stat st;
    int rc = mdb_env_info(self->env, &info);
    if (rc == MDB_SUCCESS)
        rc = mdb_env_stat(self->env, &st);
    if (rc != MDB_SUCCESS)
        return store_err(rc);
    *used_out = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    *size_out = info.me_mapsize;
    return CL_OK;
}
