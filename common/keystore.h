/*
 * keystore.h - private keys at rest. Each key is a file DIR/keystore/<name>.key holding the key's
 * PKCS#8 DER sealed with AES-256-GCM under the key-encryption key (KEK); the name is the
 * additional authenticated data, so a file copied under another name does not open.
 *
 * The KEK comes from REGISTRY_MASTER_KEY (64 hex digits, or base64 of 32 bytes) when set, else
 * from DIR/master.key (32 random bytes, mode 0600), which keystore_open makes on first start when
 * `create` is true. A key file that does not open under the KEK (wrong master key, tampering) is
 * REG_EINVAL, never a crash; its contents are never logged.
 *
 * Thread-safe: opened keys are cached in memory (a mutex guards the cache); keystore_get hands
 * out a new reference.
 */
#ifndef REG_KEYSTORE_H
#define REG_KEYSTORE_H

#include <stdbool.h>

#include <openssl/evp.h>

typedef struct keystore keystore;

/* Opens the keystore of data directory `dir` (creating DIR/keystore, mode 0700). REG_EINVAL when
 * REGISTRY_MASTER_KEY is malformed, REG_ENOTFOUND when there is no KEK and create is false. */
int keystore_open(const char *dir, bool create, keystore **out);
void keystore_close(keystore *ks);

/* Seals key under name ([A-Za-z0-9._-]{1,128}) durably: written to a temporary file, fsynced,
 * renamed, directory fsynced; mode 0600. Replaces an existing key of that name. */
int keystore_put(keystore *ks, const char *name, EVP_PKEY *key);
/* The key of that name (a new reference; EVP_PKEY_free it). REG_ENOTFOUND when absent. */
int keystore_get(keystore *ks, const char *name, EVP_PKEY **out);

/* A secret for `label` that every process holding the same master key derives alike, without
 * storing it (HKDF-SHA256 of the KEK with the label as info): len bytes into out. The front ends
 * of one deployment agree on their TLS session-ticket keys this way. */
int keystore_derive(keystore *ks, const char *label, unsigned char *out, size_t len);

/* HKDF-SHA256 (RFC 5869, no salt) of key with info: len bytes into out. 0 or REG_ETLS. */
int keystore_hkdf(const unsigned char *key, size_t key_len, const char *info, unsigned char *out,
                  size_t len);

#endif
