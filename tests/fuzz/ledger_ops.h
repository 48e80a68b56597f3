/* The input language of fuzz_ledger: a sequence of LEDGER_OP_BYTES-byte operations, each
 * one request to the ledger from a small world (partners, sites, members and txn ids
 * from short pools, so keys, originals and repeats collide often). Shared with
 * make_seeds, which writes meaningful sequences in it. Bytes past the last whole
 * operation, and operations past LEDGER_OPS_MAX, are ignored.
 *
 *   byte 0  kind (LEDGER_OP_KINDS, modulo)      byte 4  txn id (pool index)
 *   byte 1  flags (LEDGER_FLAG_*)               byte 5  member (pool index)
 *   byte 2  sending partner (pool index)        byte 6  value: amount, points, rate;
 *   byte 3  site (pool index)                           for a repeat, which earlier request
 *   byte 7  original: txn id (bits 0-2), site (bit 3); currency (bits 4-7, see below) */
#ifndef COALITION_FUZZ_LEDGER_OPS_H
#define COALITION_FUZZ_LEDGER_OPS_H

#define LEDGER_OP_BYTES 8
#define LEDGER_OPS_MAX 40

typedef enum {
    LEDGER_OP_EARN = 0,
    LEDGER_OP_BURN = 1,
    LEDGER_OP_REFUND_MONEY = 2,  /* refund of an earn: amount_minor (0 = all left) */
    LEDGER_OP_REFUND_POINTS = 3, /* refund of a burn: points (0 = all left) */
    LEDGER_OP_VOID = 4,
    LEDGER_OP_ENROLL = 5,
    LEDGER_OP_PARTNER_ADD = 6, /* from the operator: adds the partner of byte 2 */
    LEDGER_OP_BALANCE = 7,     /* answered by ledger_inquire, as the front end does */
    LEDGER_OP_REPEAT = 8,      /* the request of an earlier operation again, byte for byte */
    LEDGER_OP_LIMITS = 9,      /* from the operator: limits of the partner of byte 2: most
                                  points a burn (byte 6 as a value, 0: default), burns per
                                  member a minute 1 + byte 5 % 4 */
    LEDGER_OP_CONTRACT = 10,   /* from the operator: a contract of the partner of byte 2:
                                  from now (byte 5 bit 0 clear) or byte 5 / 2 ms ahead; rate
                                  byte 6 as a value; issue price byte 7 * 37 % 3000,
                                  reimbursement byte 3 * 53 % 3000 per 1,000 points; fee
                                  byte 5 % 7; prepaid when byte 5 bit 1; a net cap of byte 6
                                  as a value when byte 5 bit 2 */
    LEDGER_OP_SETTLE = 11,     /* from the operator, byte 5 % 3: 0 a top-up of the partner
                                  of byte 2 (byte 6 as points); 1 close window 1 + byte 6 % 4
                                  (early when byte 3 bit 0); 2 settlement config: period
                                  byte 6 % 3 == 0 ? a month : byte 6 % 120 + 1 s, model
                                  issuer-pays when byte 3 bit 0 */
    LEDGER_OP_KINDS = 12
} ledger_op_kind_t;

enum {
    LEDGER_FLAG_JOIN_BATCH = 1 << 0,    /* apply in the open batch instead of a new one */
    LEDGER_FLAG_ALLOW_PARTIAL = 1 << 1, /* burn */
    LEDGER_FLAG_WRONG_SOCKET = 1 << 2,  /* sent on the other socket: wire_validate refuses */
    LEDGER_FLAG_AS_OPERATOR = 1 << 3,   /* enrol from the admin socket */
    LEDGER_FLAG_ORIGINAL_SITE = 1 << 4, /* a reversal names its original's site explicitly */
    LEDGER_FLAG_CURRENCY = 1 << 5       /* earn, partner add: currency of byte 7 bits 4-7 */
};

/* Pools. Partners 0-2 and members 0-2 exist from the start (added, enrolled by the
 * world's first operations); the others only once an operation adds them, or never. */
#define LEDGER_PARTNERS 4
#define LEDGER_SITES 2
#define LEDGER_TXNS 8
#define LEDGER_MEMBERS 6
#define LEDGER_VALUES 16
#define LEDGER_CURRENCIES 5
/* A value byte at or above this is a small amount: (byte - LEDGER_VALUE_SMALL) * 7 + 1. */
#define LEDGER_VALUE_SMALL 0x80

_Static_assert(LEDGER_TXNS <= 8 && LEDGER_SITES <= 2, "byte 7 holds an original's txn and site");
_Static_assert(LEDGER_CURRENCIES <= 16, "byte 7 bits 4-7 hold a currency");

#endif
