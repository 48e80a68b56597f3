/* The audit of account balances. Every account is opened by a journal entry (an
 * enrolment or a partner-add) and moved only by postings; its running sum is kept in 128
 * bits in journal order, so it is checked exactly where the broker checks it: within
 * int64 after every posting (the broker declines 61 instead), never below zero for a
 * member (51). The final sums must equal the accounts database, and all of it must sum
 * to zero; the grand total is 128-bit too, since a ledger the broker accepts can hold
 * accounts whose partial sums pass INT64_MAX. */
#include "verify_internal.h"

#include "errors.h"

#include <assert.h>
#include <string.h>

static bool is_member_account(const char *name)
{
    return strncmp(name, MEMBER_PREFIX, strlen(MEMBER_PREFIX)) == 0;
}

int vaccounts_open(verify_t *v, const char *name, uint64_t seq)
{
    vaccount_t *a = NULL;
    int rc = vmap_insert(&v->accounts, name, strlen(name), (void **)&a);
    if (rc == CL_ERR_EXISTS) {
        const vaccount_t *was = vmap_find(&v->accounts, name, strlen(name));
        return verify_violation(v, "entry %llu opens account %s, already opened by entry %llu",
                                (unsigned long long)seq, name, (unsigned long long)was->opened_seq);
    }
    if (rc == CL_ERR_INVALID)
        return verify_violation(v, "entry %llu opens an account with an overlong name",
                                (unsigned long long)seq);
    if (rc == CL_OK)
        a->opened_seq = seq;
    assert(rc != CL_OK || (a != NULL && a->sum == 0)); /* opened empty */
    return rc;
}

int vaccounts_post(verify_t *v, const journal_entry_t *e)
{
    for (size_t i = 0; i < e->n_postings; i++) {
        const Coalition__Posting *p = e->postings[i];
        vaccount_t *a = vmap_find(&v->accounts, p->account, strlen(p->account));
        if (a == NULL)
            return verify_violation(v, "entry %llu posts to %s, which no earlier entry opened",
                                    (unsigned long long)e->seq, p->account);
        a->sum += p->delta;
        bool outside = a->sum > INT64_MAX || a->sum < INT64_MIN;
        if (!outside && (a->sum >= 0 || !is_member_account(p->account)))
            continue;
        char sum[I128_TEXT_BYTES];
        i128_text(a->sum, sum);
        if (outside)
            return verify_violation(v, "entry %llu takes %s to %s, outside int64",
                                    (unsigned long long)e->seq, p->account, sum);
        return verify_violation(v, "entry %llu takes %s below zero (%s)",
                                (unsigned long long)e->seq, p->account, sum);
    }
    return CL_OK;
}

int vaccounts_compare(verify_t *v, const char *name, int64_t balance)
{
    vaccount_t *a = vmap_find(&v->accounts, name, strlen(name));
    if (a == NULL)
        return verify_violation(v, "account %s holds %lld, but no journal entry opened it", name,
                                (long long)balance);
    a->seen = true;
    /* vaccounts_post kept every running sum within int64. */
    if ((i128_t)balance != a->sum)
        return verify_violation(v, "account %s holds %lld, its postings sum to %lld", name,
                                (long long)balance, (long long)a->sum);
    if (balance < 0 && is_member_account(name))
        return verify_violation(v, "member account %s is negative (%lld)", name,
                                (long long)balance);
    v->grand_total += balance;
    return CL_OK;
}

int vaccounts_finish(verify_t *v)
{
    for (size_t i = 0; i < v->accounts.count; i++) {
        const vaccount_t *a = vmap_at(&v->accounts, i);
        if (!a->seen)
            return verify_violation(v, "account %s, opened by entry %llu, is missing",
                                    a->name.bytes, (unsigned long long)a->opened_seq);
    }
    if (v->grand_total != 0) {
        char total[I128_TEXT_BYTES];
        i128_text(v->grand_total, total);
        return verify_violation(v, "accounts sum to %s, not zero", total);
    }
    return CL_OK;
}

static int visit_account(const char *name, int64_t balance, void *ctx)
{
    return vaccounts_compare(ctx, name, balance);
}

/* Compare each account with the sum of its postings; the whole ledger must sum to zero. */
int verify_accounts(verify_t *v)
{
    int rc = ledger_walk_accounts(v->ledger, v->txn, visit_account, v);
    if (rc == CL_ERR_CORRUPT && v->why[0] == '\0')
        rc = verify_violation(v, "malformed account record");
    return rc == CL_OK ? vaccounts_finish(v) : rc;
}
