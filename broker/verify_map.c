/* The audit's hash map: items in one growing array in insertion order, indexed by an
 * open-addressing table (linear probing, FNV-1a) kept at most half full. No deletes. */
#include "verify_internal.h"

#include "errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define VMAP_ITEMS_INITIAL 64
/* Slots per item of capacity: a table at most half full keeps probes short. */
#define VMAP_SLOTS_PER_ITEM 2
#define FNV_OFFSET_BASIS UINT64_C(14695981039346656037)
#define FNV_PRIME UINT64_C(1099511628211)

_Static_assert((VMAP_ITEMS_INITIAL & (VMAP_ITEMS_INITIAL - 1)) == 0, "power of two");

static uint64_t key_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = FNV_OFFSET_BASIS;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

static const vkey_t *key_at(const vmap_t *m, size_t index)
{
    return (const vkey_t *)(const void *)(m->items + index * m->item_bytes);
}

void vmap_init(vmap_t *m, size_t item_bytes)
{
    assert(item_bytes >= sizeof(vkey_t));
    memset(m, 0, sizeof *m);
    m->item_bytes = item_bytes;
}

void vmap_free(vmap_t *m)
{
    free(m->items);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

void *vmap_at(const vmap_t *m, size_t index)
{
    assert(index < m->count);
    return m->items + index * m->item_bytes;
}

/* The slot holding `key`, or the empty slot where it would go. */
static size_t probe(const vmap_t *m, const void *key, size_t len)
{
    size_t mask = m->slot_count - 1;
    size_t at = (size_t)key_hash(key, len) & mask;
    while (m->slots[at] != 0) {
        const vkey_t *k = key_at(m, m->slots[at] - 1);
        if (k->len == len && memcmp(k->bytes, key, len) == 0)
            break;
        at = (at + 1) & mask;
    }
    return at;
}

void *vmap_find(const vmap_t *m, const void *key, size_t len)
{
    if (m->count == 0 || len >= VERIFY_KEY_BYTES_MAX)
        return NULL;
    size_t at = probe(m, key, len);
    return m->slots[at] == 0 ? NULL : vmap_at(m, m->slots[at] - 1);
}

static int grow(vmap_t *m)
{
    size_t capacity = m->capacity == 0 ? VMAP_ITEMS_INITIAL : m->capacity * 2;
    if (capacity > VERIFY_MAP_ITEMS_MAX)
        return CL_ERR_NOMEM;
    unsigned char *items = realloc(m->items, capacity * m->item_bytes);
    if (items == NULL)
        return CL_ERR_NOMEM;
    m->items = items;
    size_t *slots = calloc(capacity * VMAP_SLOTS_PER_ITEM, sizeof *slots);
    if (slots == NULL)
        return CL_ERR_NOMEM;
    free(m->slots);
    m->slots = slots;
    m->slot_count = capacity * VMAP_SLOTS_PER_ITEM;
    m->capacity = capacity;
    assert(m->count < m->capacity && m->slot_count > m->capacity); /* probing ends */
    for (size_t i = 0; i < m->count; i++) {
        const vkey_t *k = key_at(m, i);
        m->slots[probe(m, k->bytes, k->len)] = i + 1;
    }
    return CL_OK;
}

int vmap_insert(vmap_t *m, const void *key, size_t len, void **item_out)
{
    *item_out = NULL;
    if (len >= VERIFY_KEY_BYTES_MAX)
        return CL_ERR_INVALID;
    if (m->count > 0 && m->slots[probe(m, key, len)] != 0)
        return CL_ERR_EXISTS;
    if (m->count == m->capacity) {
        int rc = grow(m);
        if (rc != CL_OK)
            return rc;
    }
    size_t at = probe(m, key, len);
    assert(m->slots[at] == 0);
    unsigned char *item = m->items + m->count * m->item_bytes;
    memset(item, 0, m->item_bytes);
    vkey_t *k = (vkey_t *)(void *)item;
    memcpy(k->bytes, key, len);
    k->bytes[len] = '\0';
    k->len = len;
    m->slots[at] = ++m->count;
    *item_out = item;
    assert(m->count <= m->capacity && vmap_find(m, key, len) == item);
    return CL_OK;
}
