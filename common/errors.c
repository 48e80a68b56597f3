/* Human-readable text for cl_err_t values. */
#include "errors.h"

const char *cl_strerror(int err)
{
    switch (err) {
    case CL_OK: return "ok";
    case CL_ERR_NOMEM: return "out of memory";
    case CL_ERR_IO: return "I/O error";
    case CL_ERR_INVALID: return "invalid argument";
    case CL_ERR_NOT_FOUND: return "not found";
    case CL_ERR_EXISTS: return "already exists";
    case CL_ERR_CORRUPT: return "stored data is corrupt";
    case CL_ERR_MAP_FULL: return "ledger map full";
    case CL_ERR_TIMEOUT: return "timed out";
    case CL_ERR_ZMQ: return "ZeroMQ error";
    case CL_ERR_LMDB: return "LMDB error";
    case CL_ERR_STICKY: return "writer stopped after an earlier I/O error";
    case CL_ERR_OVERFLOW: return "integer overflow";
    case CL_ERR_VERSION: return "unsupported version";
    case CL_ERR_LOCKED: return "locked by another writer";
    case CL_ERR_PERMISSION: return "secret file readable by group or others";
    default: return "unknown error";
    }
}
