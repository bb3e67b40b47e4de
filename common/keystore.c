/*
 * keystore.c - private keys at rest (keystore.h). A key file DIR/keystore/<name>.key is
 *
 *     "RGK1" | nonce (12 random bytes) | AES-256-GCM ciphertext of the PKCS#8 DER | tag (16)
 *
 * with the key's name as the additional authenticated data, so that a file renamed (or copied)
 * under another name fails authentication like a tampered one. The key-encryption key (KEK) is
 * REGISTRY_MASTER_KEY when set, else DIR/master.key (32 raw bytes, created 0600 with O_EXCL so
 * two processes starting together cannot each write their own).
 *
 * Keys once opened stay in an in-memory cache for the life of the keystore: a registry holds a
 * handful of keys (its CA, its server key), so the cache is a list that never evicts. One mutex
 * guards the cache and also serialises file access, which keeps a put and a get of the same name
 * from interleaving; keystore calls are rare (start-up, issuing a CA), so the lock is no
 * bottleneck. Plaintext key bytes and the KEK are cleansed as soon as they are no longer needed.
 */
#include "keystore.h"
#include "err.h"
#include "pki.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#define KS_MAGIC "RGK1"
#define KS_MAGIC_LEN 4
#define KS_NONCE 12
#define KS_TAG 16
#define KS_KEK 32
#define KS_NAME_MAX 128
/* Far above any key we store (RSA-8192 PKCS#8 is about 5 KB); a bigger file is not ours. */
#define KS_FILE_MAX (64 * 1024)

typedef struct ks_entry {
    struct ks_entry *next;
    char *name;
    EVP_PKEY *key;
} ks_entry;

struct keystore {
    char *dir; /* DIR/keystore */
    unsigned char kek[KS_KEK];
    pthread_mutex_t mu;
    ks_entry *cache;
};

/* ------------------------------------------------------------------------------------------ */
/* file helpers */

static int errno_code(int e)
{
    switch (e) {
    case ENOENT:
        return REG_ENOTFOUND;
    case ENOMEM:
        return REG_ENOMEM;
    case EEXIST:
        return REG_EEXISTS;
    default:
        return REG_EIO;
    }
}

static char *path_join(const char *a, const char *b, const char *suffix)
{
    size_t n = strlen(a) + 1 + strlen(b) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s%s", a, b, suffix);
    return p;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads up to cap bytes; *len gets how many (cap + 1 in the buffer tells "more than cap"). */
static int read_all(int fd, unsigned char *p, size_t cap, size_t *len)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, p + got, cap - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    *len = got;
    return 0;
}

/* Makes a rename or a new file in dir durable. */
static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* the key-encryption key */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* REGISTRY_MASTER_KEY: exactly 64 hex digits, or the standard base64 of exactly 32 bytes (44
 * characters ending in one '=', or 43 without padding; the unused low bits must be zero so that
 * each key has one spelling). Anything else is refused rather than guessed at: a KEK read
 * differently from how it was meant would make every key file unreadable. */
static int parse_master_key(const char *s, unsigned char kek[KS_KEK])
{
    size_t n = strlen(s);
    if (n == 64) {
        for (size_t i = 0; i < 32; i++) {
            int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
            if (hi < 0 || lo < 0) goto fail;
            kek[i] = (unsigned char)(hi << 4 | lo);
        }
        return 0;
    }
    if (n == 44 && s[43] == '=') n = 43;
    if (n != 43) return REG_EINVAL;
    /* 43 characters carry 258 bits: 32 bytes and 2 bits that must be zero. */
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0) goto fail;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            kek[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (o != KS_KEK || acc != 0) goto fail;
    return 0;
fail:
    OPENSSL_cleanse(kek, KS_KEK);
    return REG_EINVAL;
}

/* DIR/master.key: read it, or (when create) make it. A file of the wrong size is REG_EINVAL. */
static int load_master_file(const char *dir, bool create, unsigned char kek[KS_KEK])
{
    char *path = path_join(dir, "master.key", "");
    if (!path) return REG_ENOMEM;
    unsigned char buf[KS_KEK + 1];
    size_t len = 0;
    int rc, fd = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            rc = read_all(fd, buf, sizeof buf, &len) == 0 ? 0 : errno_code(errno);
            close(fd);
            if (rc == 0) rc = len == KS_KEK ? 0 : REG_EINVAL;
            if (rc == 0) memcpy(kek, buf, KS_KEK);
            goto done;
        }
        if (errno != ENOENT) {
            rc = errno_code(errno);
            goto done;
        }
        if (!create) {
            rc = REG_ENOTFOUND;
            goto done;
        }
        /* O_EXCL: when another process made it meanwhile, read theirs on the next pass. */
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            if (errno == EEXIST) continue;
            rc = errno_code(errno);
            goto done;
        }
        if (RAND_bytes(buf, KS_KEK) != 1) {
            ERR_clear_error();
            rc = REG_EIO;
        } else if (write_all(fd, buf, KS_KEK) != 0 || fsync(fd) != 0) {
            rc = errno_code(errno);
        } else {
            rc = 0;
        }
        close(fd);
        if (rc == 0 && fsync_dir(dir) != 0) rc = errno_code(errno);
        if (rc != 0) {
            unlink(path); /* never leave a half-written KEK behind */
            goto done;
        }
        memcpy(kek, buf, KS_KEK);
        goto done;
    }
    rc = REG_EIO;
done:
    OPENSSL_cleanse(buf, sizeof buf);
    free(path);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* sealing */

static int name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > KS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* AES-256-GCM of pt under the KEK with a fresh nonce, AAD = name, into a new malloc'd file
 * image. */
static int seal(const keystore *ks, const char *name, const unsigned char *pt, size_t pt_len,
                unsigned char **out, size_t *out_len)
{
    if (pt_len > INT_MAX - 64) return REG_ETOOBIG;
    size_t total = KS_MAGIC_LEN + KS_NONCE + pt_len + KS_TAG;
    unsigned char *f = malloc(total);
    if (!f) return REG_ENOMEM;
    int rc = REG_EIO, n = 0;
    unsigned char *nonce = f + KS_MAGIC_LEN, *ct = nonce + KS_NONCE, *tag = ct + pt_len;
    memcpy(f, KS_MAGIC, KS_MAGIC_LEN);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c || RAND_bytes(nonce, KS_NONCE) != 1) goto fail;
    if (!EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, KS_NONCE, NULL) ||
        !EVP_EncryptInit_ex(c, NULL, NULL, ks->kek, nonce))
        goto fail;
    if (!EVP_EncryptUpdate(c, NULL, &n, (const unsigned char *)name, (int)strlen(name)) ||
        !EVP_EncryptUpdate(c, ct, &n, pt, (int)pt_len) || (size_t)n != pt_len ||
        !EVP_EncryptFinal_ex(c, ct + n, &n) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KS_TAG, tag))
        goto fail;
    EVP_CIPHER_CTX_free(c);
    *out = f;
    *out_len = total;
    return 0;
fail:
    EVP_CIPHER_CTX_free(c);
    free(f);
    ERR_clear_error();
    return rc;
}

/* Opens a file image; the plaintext goes into a new buffer the caller cleanses and frees.
 * REG_EINVAL for anything that is not a file sealed under this KEK and name. */
static int unseal(const keystore *ks, const char *name, const unsigned char *f, size_t len,
                  unsigned char **pt_out, size_t *pt_len)
{
    if (len < KS_MAGIC_LEN + KS_NONCE + KS_TAG + 1 || memcmp(f, KS_MAGIC, KS_MAGIC_LEN) != 0)
        return REG_EINVAL;
    const unsigned char *nonce = f + KS_MAGIC_LEN, *ct = nonce + KS_NONCE;
    size_t ct_len = len - KS_MAGIC_LEN - KS_NONCE - KS_TAG;
    unsigned char tag[KS_TAG];
    memcpy(tag, ct + ct_len, KS_TAG); /* the tag ctrl takes a non-const pointer */
    unsigned char *pt = malloc(ct_len);
    if (!pt) return REG_ENOMEM;
    int rc = REG_EIO, n = 0, m = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c || !EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, KS_NONCE, NULL) ||
        !EVP_DecryptInit_ex(c, NULL, NULL, ks->kek, nonce))
        goto fail;
    if (!EVP_DecryptUpdate(c, NULL, &n, (const unsigned char *)name, (int)strlen(name)) ||
        !EVP_DecryptUpdate(c, pt, &n, ct, (int)ct_len) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KS_TAG, tag))
        goto fail;
    /* The tag check: wrong KEK, wrong name or any flipped bit all end here. */
    if (EVP_DecryptFinal_ex(c, pt + n, &m) != 1) {
        rc = REG_EINVAL;
        goto fail;
    }
    EVP_CIPHER_CTX_free(c);
    *pt_out = pt;
    *pt_len = (size_t)(n + m);
    return 0;
fail:
    EVP_CIPHER_CTX_free(c);
    OPENSSL_cleanse(pt, ct_len);
    free(pt);
    ERR_clear_error();
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* cache (callers hold ks->mu) */

static ks_entry *cache_find(keystore *ks, const char *name)
{
    for (ks_entry *e = ks->cache; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    return NULL;
}

/* Takes a new reference to key. */
static int cache_set(keystore *ks, const char *name, EVP_PKEY *key)
{
    ks_entry *e = cache_find(ks, name);
    if (!EVP_PKEY_up_ref(key)) return REG_EIO;
    if (e) {
        EVP_PKEY_free(e->key);
        e->key = key;
        return 0;
    }
    e = calloc(1, sizeof *e);
    if (e) e->name = strdup(name);
    if (!e || !e->name) {
        free(e);
        EVP_PKEY_free(key);
        return REG_ENOMEM;
    }
    e->key = key;
    e->next = ks->cache;
    ks->cache = e;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* public */

int keystore_open(const char *dir, bool create, keystore **out)
{
    keystore *ks = calloc(1, sizeof *ks);
    if (!ks) return REG_ENOMEM;
    int rc;
    const char *env = getenv("REGISTRY_MASTER_KEY");
    if (env)
        rc = parse_master_key(env, ks->kek);
    else
        rc = load_master_file(dir, create, ks->kek);
    if (rc) goto fail;
    rc = REG_ENOMEM;
    ks->dir = path_join(dir, "keystore", "");
    if (!ks->dir) goto fail;
    if (mkdir(ks->dir, 0700) != 0 && errno != EEXIST) {
        rc = errno_code(errno);
        goto fail;
    }
    if (pthread_mutex_init(&ks->mu, NULL) != 0) {
        rc = REG_EIO;
        goto fail;
    }
    *out = ks;
    return 0;
fail:
    OPENSSL_cleanse(ks->kek, sizeof ks->kek);
    free(ks->dir);
    free(ks);
    return rc;
}

int keystore_hkdf(const unsigned char *key, size_t key_len, const char *info, unsigned char *out,
                  size_t len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, key_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info)),
        OSSL_PARAM_construct_end()};
    int ok = kctx && EVP_KDF_derive(kctx, out, len, params) == 1;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    if (!ok) ERR_clear_error();
    return ok ? 0 : REG_ETLS;
}

int keystore_derive(keystore *ks, const char *label, unsigned char *out, size_t len)
{
    return keystore_hkdf(ks->kek, sizeof ks->kek, label, out, len);
}

void keystore_close(keystore *ks)
{
    if (!ks) return;
    for (ks_entry *e = ks->cache, *next; e; e = next) {
        next = e->next;
        EVP_PKEY_free(e->key);
        free(e->name);
        free(e);
    }
    OPENSSL_cleanse(ks->kek, sizeof ks->kek);
    pthread_mutex_destroy(&ks->mu);
    free(ks->dir);
    free(ks);
}

int keystore_put(keystore *ks, const char *name, EVP_PKEY *key)
{
    if (!ks || !key || !name_ok(name)) return REG_EINVAL;
    unsigned char *der = NULL, *file = NULL;
    size_t der_len = 0, file_len = 0;
    char *path = NULL, *tmp = NULL;
    int fd = -1;
    int rc = pki_key_to_der(key, &der, &der_len);
    if (rc) return rc;
    rc = seal(ks, name, der, der_len, &file, &file_len);
    OPENSSL_cleanse(der, der_len);
    free(der);
    if (rc) return rc;

    pthread_mutex_lock(&ks->mu);
    rc = REG_ENOMEM;
    path = path_join(ks->dir, name, ".key");
    /* Temporary names never end in ".key", so they cannot shadow a key. */
    tmp = path_join(ks->dir, ".tmp-", "XXXXXX");
    if (!path || !tmp) goto fail;
    fd = mkstemp(tmp); /* mode 0600 */
    if (fd < 0) {
        rc = errno_code(errno);
        free(tmp);
        tmp = NULL;
        goto fail;
    }
    if (write_all(fd, file, file_len) != 0 || fsync(fd) != 0) {
        rc = errno_code(errno);
        goto fail;
    }
    int crc = close(fd);
    fd = -1;
    if (crc != 0) {
        rc = errno_code(errno);
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = errno_code(errno);
        goto fail;
    }
    free(tmp);
    tmp = NULL;
    if (fsync_dir(ks->dir) != 0) {
        rc = errno_code(errno);
        goto fail;
    }
    rc = cache_set(ks, name, key);
fail:
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    pthread_mutex_unlock(&ks->mu);
    free(path);
    free(file);
    return rc;
}

int keystore_get(keystore *ks, const char *name, EVP_PKEY **out)
{
    if (!ks || !out || !name_ok(name)) return REG_EINVAL;
    unsigned char *file = NULL, *pt = NULL;
    size_t file_len = 0, pt_len = 0;
    EVP_PKEY *key = NULL;
    char *path = NULL;
    int fd = -1, rc;

    pthread_mutex_lock(&ks->mu);
    ks_entry *e = cache_find(ks, name);
    if (e) {
        rc = EVP_PKEY_up_ref(e->key) ? 0 : REG_EIO;
        if (rc == 0) *out = e->key;
        goto done;
    }
    rc = REG_ENOMEM;
    path = path_join(ks->dir, name, ".key");
    file = malloc(KS_FILE_MAX + 1);
    if (!path || !file) goto done;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = errno_code(errno);
        goto done;
    }
    if (read_all(fd, file, KS_FILE_MAX + 1, &file_len) != 0) {
        rc = errno_code(errno);
        goto done;
    }
    if (file_len > KS_FILE_MAX) {
        rc = REG_EINVAL;
        goto done;
    }
    rc = unseal(ks, name, file, file_len, &pt, &pt_len);
    if (rc) goto done;
    /* Authenticated yet not a key would mean a bug of ours, not tampering; still refuse. */
    rc = pki_key_from_der(pt, pt_len, &key);
    if (rc) goto done;
    rc = cache_set(ks, name, key);
    if (rc) goto done;
    *out = key;
    key = NULL;
done:
    pthread_mutex_unlock(&ks->mu);
    if (fd >= 0) close(fd);
    if (pt) {
        OPENSSL_cleanse(pt, pt_len);
        free(pt);
    }
    EVP_PKEY_free(key);
    free(path);
    free(file);
    return rc;
}
