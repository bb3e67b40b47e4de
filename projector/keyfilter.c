/*
 * keyfilter.c - a blocked Bloom filter of keys (keyfilter.h): a key's 64-bit hash picks one
 * 512-bit block (its high half, scaled to the block count) and PROBES bits in it (the low half
 * and a second mixed hash, stepping as double hashing does). One block per key keeps a lookup to
 * one cache line; at 10 bits a key and 8 probes a block filter answers "maybe" for ~1% of the
 * keys never added.
 */
#include "projector/keyfilter.h"
#include "projector/keys.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCK_WORDS = 8, BLOCK_BITS = 512, PROBES = 8 };

struct block {
    _Alignas(64) _Atomic uint64_t w[BLOCK_WORDS];
};

struct keyfilter {
    struct block *blocks;
    size_t nblocks, capacity;
    _Atomic size_t count;
};

/* The key's hash (keys.h) finished with murmur3's finalizer, whose every output bit depends on
 * every input bit: the block and the probes take different bits. */
static uint64_t filter_hash(const void *key, size_t klen)
{
    uint64_t h = key_bytes_hash(klen, key, klen);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

keyfilter *keyfilter_new(size_t capacity)
{
    keyfilter *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    size_t bits = capacity * KEYFILTER_BITS_PER_KEY;
    f->nblocks = bits / BLOCK_BITS + 1;
    f->capacity = capacity;
    f->blocks = aligned_alloc(64, f->nblocks * sizeof *f->blocks);
    if (!f->blocks) {
        free(f);
        return NULL;
    }
    memset(f->blocks, 0, f->nblocks * sizeof *f->blocks);
    return f;
}

void keyfilter_free(keyfilter *f)
{
    if (!f) return;
    free(f->blocks);
    free(f);
}

static struct block *block_of(const keyfilter *f, uint64_t h)
{
    return &f->blocks[(size_t)(((h >> 32) * (uint64_t)f->nblocks) >> 32)];
}

/* The bit of probe i in a block: double hashing, from the low half and the high half remixed
 * (odd, so that the probes of a key differ). */
static uint32_t probe_bit(uint64_t h, int i)
{
    return ((uint32_t)h + (uint32_t)i * ((uint32_t)(h >> 32) * 0x9e3779b1u | 1)) % BLOCK_BITS;
}

void keyfilter_add(keyfilter *f, const void *key, size_t klen)
{
    uint64_t h = filter_hash(key, klen);
    struct block *b = block_of(f, h);
    for (int i = 0; i < PROBES; i++) {
        uint32_t x = probe_bit(h, i);
        atomic_fetch_or_explicit(&b->w[x / 64], 1ull << (x % 64), memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&f->count, 1, memory_order_relaxed);
}

bool keyfilter_may_contain(const keyfilter *f, const void *key, size_t klen)
{
    uint64_t h = filter_hash(key, klen);
    const struct block *b = block_of(f, h);
    for (int i = 0; i < PROBES; i++) {
        uint32_t x = probe_bit(h, i);
        if (!(atomic_load_explicit(&b->w[x / 64], memory_order_relaxed) & 1ull << (x % 64)))
            return false;
    }
    return true;
}

void keyfilter_prefetch(const keyfilter *f, const void *key, size_t klen)
{
    __builtin_prefetch(block_of(f, filter_hash(key, klen)));
}

size_t keyfilter_count(const keyfilter *f)
{
    return atomic_load_explicit(&f->count, memory_order_relaxed);
}

size_t keyfilter_capacity(const keyfilter *f)
{
    return f->capacity;
}
