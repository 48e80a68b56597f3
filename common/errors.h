/* The project's error codes: functions that can fail return 0 or one of these.
 * Domain outcomes (declines) are response codes, never errors. */
#ifndef COALITION_ERRORS_H
#define COALITION_ERRORS_H

typedef enum {
    CL_OK = 0,
    CL_ERR_NOMEM = -1,     /* allocation failed */
    CL_ERR_IO = -2,        /* disk or OS call failed */
    CL_ERR_INVALID = -3,   /* caller passed something malformed */
    CL_ERR_NOT_FOUND = -4, /* no such record */
    CL_ERR_EXISTS = -5,    /* record already there */
    CL_ERR_CORRUPT = -6,   /* stored data fails its own checks */
    CL_ERR_MAP_FULL = -7,  /* LMDB map is full; grow and retry */
    CL_ERR_TIMEOUT = -8,   /* no answer in time */
    CL_ERR_ZMQ = -9,       /* ZeroMQ call failed */
    CL_ERR_LMDB = -10,     /* LMDB call failed */
    CL_ERR_STICKY = -11,   /* the writer failed earlier and refuses further writes */
    CL_ERR_OVERFLOW = -12, /* an integer would overflow */
    CL_ERR_VERSION = -13,  /* on-disk schema or wire version not understood */
    CL_ERR_LOCKED = -14,   /* another process holds the store's writer lock */
    CL_ERR_PERMISSION = -15 /* a secret file is readable by group or others */
} cl_err_t;

const char *cl_strerror(int err);

#endif
