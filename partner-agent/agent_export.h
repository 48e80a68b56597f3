/* The agent's local records of one settlement window, for reconciliation. */
#ifndef COALITION_AGENT_EXPORT_H
#define COALITION_AGENT_EXPORT_H

#include <stdint.h>

/* Print to stdout (JSON lines) a header (partner, site, window), every approval the
 * agent's journal holds for `window`, then every request still in its outbox. Read-only.
 * `partner` NULL: the partner and site of the requests in the store (empty when it holds
 * none). Only this site's requests are in its store. */
int agent_export(const char *dir, const char *partner, const char *site, uint64_t window,
                 uint64_t *lines_out);

#endif
