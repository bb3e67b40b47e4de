/* ids.c - UUIDs, tokens and token hashes (ids.h), on OpenSSL's RNG and SHA-256. */
#include "ids.h"
#include "err.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* The random bits of new ids come from OpenSSL's CSPRNG 4 KiB at a time, per thread: a
 * RAND_bytes call per id (its DRBG's lock and bookkeeping) was 7% of the loop at 40,000
 * commands/s. */
static _Thread_local struct {
    uint8_t b[4096];
    size_t used;
} id_random = {.used = sizeof id_random.b};

static int random_bytes(uint8_t *out, size_t n)
{
    if (id_random.used + n > sizeof id_random.b) {
        if (RAND_bytes(id_random.b, sizeof id_random.b) != 1) return REG_EIO;
        id_random.used = 0;
    }
    memcpy(out, id_random.b + id_random.used, n); /* each byte is handed out once */
    id_random.used += n;
    return 0;
}

/* The last id this thread made: its time (ms << 12 | fraction) and its 62 random bits. */
static _Thread_local uint64_t last_time, last_tail;

int reg_uuid_new(reg_uuid *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    /* RFC 9562 section 6.2, method 3: the 12 bits after the version are the sub-millisecond
     * fraction, so that ids made one after another sort in that order. Within one fraction (or
     * if the clock stepped back) the last id's random bits are counted up instead (method 2),
     * so that a thread's ids always increase. */
    uint64_t time = ms << 12 | (uint64_t)(ts.tv_nsec % 1000000) * 4096u / 1000000u, tail;
    if (time > last_time) {
        uint8_t r[8];
        if (random_bytes(r, 8)) return REG_EIO;
        tail = 0;
        for (int i = 0; i < 8; i++)
            tail = tail << 8 | r[i];
        tail &= (1ull << 62) - 1;
    } else {
        time = last_time;
        tail = (last_tail + 1) & ((1ull << 62) - 1);
        if (!tail) time++; /* 2^62 ids in one fraction: borrow the next */
    }
    last_time = time;
    last_tail = tail;
    uint64_t hi = (time >> 12) << 16 | 0x7000u | (time & 0xfff), lo = 2ull << 62 | tail;
    for (int i = 7; i >= 0; i--, hi >>= 8, lo >>= 8) {
        out->b[i] = (uint8_t)hi;
        out->b[8 + i] = (uint8_t)lo;
    }
    return 0;
}

/* SHA-256 fetched once: EVP_sha256() makes each EVP_DigestInit fetch it from the provider again,
 * which was two thirds of deriving an id (the projector derives one per event). Kept for the
 * process's life. Each thread keeps its digest context (freed when it ends): making and freeing
 * one per id was a third of what was left. */
static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static pthread_key_t digest_ctx_key;

static void digest_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void sha256_fetch(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    pthread_key_create(&digest_ctx_key, digest_ctx_free);
}

void reg_uuid_derive(const reg_uuid *ns, const void *name, size_t len, reg_uuid *out)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    pthread_once(&sha256_once, sha256_fetch);
    EVP_MD_CTX *ctx = pthread_getspecific(digest_ctx_key), *own = NULL;
    if (!ctx) {
        ctx = EVP_MD_CTX_new();
        if (ctx && pthread_setspecific(digest_ctx_key, ctx)) own = ctx; /* not kept: freed below */
    }
    EVP_DigestInit_ex2(ctx, sha256 ? sha256 : EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, ns->b, 16);
    EVP_DigestUpdate(ctx, name, len);
    EVP_DigestFinal_ex(ctx, md, NULL);
    EVP_MD_CTX_free(own);
    memcpy(out->b, md, 16);
    out->b[6] = (uint8_t)((out->b[6] & 0x0f) | 0x50);
    out->b[8] = (uint8_t)((out->b[8] & 0x3f) | 0x80);
}

/* Each byte's hex digit value, or 0xff: the projector parses a dozen ids per command. */
#define X 0xff
/* clang-format off */
static const uint8_t hex_value[256] = {
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  X,  X,  X,  X,  X,  X,
     X, 10, 11, 12, 13, 14, 15,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X, 10, 11, 12, 13, 14, 15,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
     X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,
};
/* clang-format on */
#undef X

int reg_uuid_parse(const char *s, reg_uuid *out)
{
    static const uint8_t at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    if (!s || strnlen(s, REG_UUID_STRLEN + 1) != REG_UUID_STRLEN || s[8] != '-' || s[13] != '-' ||
        s[18] != '-' || s[23] != '-')
        return REG_EINVAL;
    uint8_t bad = 0;
    for (int j = 0; j < 16; j++) {
        uint8_t hi = hex_value[(unsigned char)s[at[j]]],
                lo = hex_value[(unsigned char)s[at[j] + 1]];
        bad |= (hi | lo) & 0xf0;
        out->b[j] = (uint8_t)(hi << 4 | (lo & 15));
    }
    return bad ? REG_EINVAL : 0;
}

int reg_uuid_take(const char *s, size_t len, char text[REG_UUID_STRLEN + 1], reg_uuid *parsed)
{
    text[0] = 0;
    if (!s || len != REG_UUID_STRLEN) return 0;
    memcpy(text, s, len);
    text[len] = 0;
    if (!reg_uuid_parse(text, parsed)) return 1;
    text[0] = 0;
    return 0;
}

void reg_uuid_format(const reg_uuid *u, char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
        *p++ = hex[u->b[i] >> 4];
        *p++ = hex[u->b[i] & 15];
    }
    *p = 0;
}

int reg_token_new(char *out, size_t cap)
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[33];
    if (cap < 48) return REG_EINVAL;
    if (RAND_bytes(raw, 32) != 1) return REG_EIO;
    raw[32] = 0;
    char *p = out;
    memcpy(p, "rgt_", 4);
    p += 4;
    /* 32 bytes = 256 bits = 43 characters of 6 bits (the last one padded with zero bits). */
    for (int bit = 0; bit < 256; bit += 6) {
        int byte = bit / 8, shift = bit % 8;
        unsigned v = (unsigned)raw[byte] << 8 | raw[byte + 1];
        *p++ = b64url[(v >> (10 - shift)) & 63];
    }
    *p = 0;
    return 0;
}

void reg_token_hash(const char *token, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, strlen(token), md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = 0;
}

int reg_serial_valid(const char *s, size_t len)
{
    if (len == 0 || len > REG_SERIAL_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == ',' || c == '"') return 0;
    }
    return 1;
}

int reg_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    if (!hex || strlen(hex) != 2 * n) return REG_EINVAL;
    for (size_t i = 0; i < n; i++) {
        uint8_t hi = hex_value[(unsigned char)hex[2 * i]];
        uint8_t lo = hex_value[(unsigned char)hex[2 * i + 1]];
        if ((hi | lo) & 0xf0) return REG_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
