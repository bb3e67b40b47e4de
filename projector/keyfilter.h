/*
 * keyfilter.h - a blocked Bloom filter of keys: "surely absent" or "maybe present", for the
 * view's lookups that nearly always miss (a registration's serial number, which must be new in
 * its tenant). RocksDB answers such a miss too, but only after a memtable filter, every level-0
 * file's filter and a filter per deeper level, each a cache miss: ~1.4 us a lookup, a fifth of
 * the projector's deciding thread in a stream of registrations. A key here costs one 64-byte
 * block, which the caller can fetch ahead (keyfilter_prefetch).
 *
 * Keys are only ever added (a deleted key stays "maybe": a lookup then asks RocksDB). Adds and
 * lookups may run on different threads at once: the bits are set atomically.
 */
#ifndef REG_KEYFILTER_H
#define REG_KEYFILTER_H

#include <stdbool.h>
#include <stddef.h>

enum { KEYFILTER_BITS_PER_KEY = 10 }; /* ~1% false "maybe" at capacity */

typedef struct keyfilter keyfilter;

/* A filter with room for `capacity` keys (it takes capacity * KEYFILTER_BITS_PER_KEY / 8 bytes,
 * rounded up to 64); NULL when out of memory. The caller owns it. */
keyfilter *keyfilter_new(size_t capacity);
void keyfilter_free(keyfilter *f);
void keyfilter_add(keyfilter *f, const void *key, size_t klen);
/* False when the key was surely never added. */
bool keyfilter_may_contain(const keyfilter *f, const void *key, size_t klen);
/* Fetches the key's block into the cache, for a lookup or an add soon. */
void keyfilter_prefetch(const keyfilter *f, const void *key, size_t klen);
/* Keys added so far (each add counts, a key added twice twice), and the room it was made for. */
size_t keyfilter_count(const keyfilter *f);
size_t keyfilter_capacity(const keyfilter *f);

#endif
