/*
 * keys.h - building the view's keys (layouts in view.h). A key is assembled in a fixed-size
 * buffer; strings in keys are bounded by the API's limits (REG_KEY_MAX covers the longest).
 */
#ifndef REG_KEYS_H
#define REG_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define REG_KEY_MAX 1200

typedef struct reg_key {
    size_t len;
    unsigned char b[REG_KEY_MAX];
} reg_key;

/* A 64-bit hash of a key's bytes from seed, a word at a time (the view's keys are 16 to 60
 * bytes: byte-at-a-time FNV showed in profiles). Its high bits are the better mixed: a caller
 * wanting all 64 finishes it (keyfilter.c). */
static inline uint64_t key_bytes_hash(uint64_t seed, const void *key, size_t klen)
{
    const uint64_t m = 0x9e3779b97f4a7c15ull;
    uint64_t h = seed * m, w;
    const unsigned char *p = key;
    for (; klen >= 8; p += 8, klen -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * m;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, p, klen);
    return (h ^ w) * m;
}

static inline reg_key *key_reset(reg_key *k)
{
    k->len = 0;
    return k;
}

static inline reg_key *key_add(reg_key *k, const void *p, size_t n)
{
    if (k->len + n > REG_KEY_MAX) n = REG_KEY_MAX - k->len; /* inputs are bounded before this */
    memcpy(k->b + k->len, p, n);
    k->len += n;
    return k;
}

static inline reg_key *key_byte(reg_key *k, unsigned char c)
{
    return key_add(k, &c, 1);
}

/* n bytes of a string followed by the 0 that separates it from what comes next. */
/* T s: a tenant's key for a string of n bytes (the serial numbers'). */
static inline reg_key *key_tenant_str(reg_key *k, const uint8_t t[16], const char *s, size_t n)
{
    return key_add(key_add(key_reset(k), t, 16), s, n);
}

static inline reg_key *key_strn0(reg_key *k, const char *s, size_t n)
{
    return key_byte(key_add(k, s, n), 0);
}

/* A string followed by the 0 terminator that separates it from what comes next. */
static inline reg_key *key_str0(reg_key *k, const char *s)
{
    return key_strn0(k, s, strlen(s));
}

static inline reg_key *key_str(reg_key *k, const char *s)
{
    return key_add(k, s, strlen(s));
}

static inline reg_key *key_be64(reg_key *k, uint64_t v)
{
    unsigned char b[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
    return key_add(k, b, 8);
}

/* tag T id: the per-tenant records of the cas, claims and certs column families. */
static inline reg_key *key_tagged(reg_key *k, char tag, const uint8_t t[16], const uint8_t id[16])
{
    key_byte(key_reset(k), (unsigned char)tag);
    key_add(k, t, 16);
    return id ? key_add(k, id, 16) : k;
}

/* tag + a 32-byte hash: certificates by fingerprint, claims by token hash. */
static inline reg_key *key_hash(reg_key *k, char tag, const uint8_t h[32])
{
    return key_add(key_byte(key_reset(k), (unsigned char)tag), h, 32);
}

#endif
