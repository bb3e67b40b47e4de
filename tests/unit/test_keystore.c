/*
 * test_keystore.c - unit tests for common/keystore.c (keys sealed with AES-256-GCM at rest).
 *
 * Covers: put/get round trips of P-256, Ed25519 and RSA keys (same public and private halves),
 * read back by a second keystore over the same directory, replacement, the file layout and
 * modes (master.key and key files 0600, keystore/ 0700); the KEK from REGISTRY_MASTER_KEY in
 * both spellings (hex and base64 of the same bytes open the same files) and every malformed
 * spelling refused; no KEK without create; a wrong KEK, a renamed file, a flipped byte anywhere,
 * a truncated or empty file all REG_EINVAL; bad names refused; and concurrent gets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "err.h"
#include "keystore.h"
#include "pki.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers */

static char dir[64];

static int setup_dir(void **state)
{
    unsetenv("REGISTRY_MASTER_KEY");
    strcpy(dir, "/tmp/test_keystore.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    unsetenv("REGISTRY_MASTER_KEY");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t cap, const char *rel)
{
    snprintf(out, cap, "%s/%s", dir, rel);
}

static unsigned char *read_file(const char *rel, size_t *len)
{
    char p[256];
    path_of(p, sizeof p, rel);
    FILE *f = fopen(p, "rb");
    if (!f) fail_msg("cannot open %s", p);
    unsigned char *buf = malloc(65536);
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

static void write_file(const char *rel, const unsigned char *b, size_t len)
{
    char p[256];
    path_of(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
}

static int mode_of(const char *rel)
{
    char p[256];
    struct stat st;
    path_of(p, sizeof p, rel);
    assert_int_equal(stat(p, &st), 0);
    return (int)(st.st_mode & 07777);
}

/* The same key: equal public halves and byte-equal PKCS#8 (so equal private halves). */
static void assert_same_key(EVP_PKEY *a, EVP_PKEY *b)
{
    assert_int_equal(EVP_PKEY_eq(a, b), 1);
    unsigned char *da = NULL, *db = NULL;
    size_t la = 0, lb = 0;
    assert_int_equal(pki_key_to_der(a, &da, &la), 0);
    assert_int_equal(pki_key_to_der(b, &db, &lb), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da);
    free(db);
}

static EVP_PKEY *p256(void)
{
    EVP_PKEY *k = NULL;
    assert_int_equal(pki_key_new_p256(&k), 0);
    return k;
}

/* A fresh keystore over dir (no cache), expecting get(name) to give rc. */
static void expect_get(const char *name, int rc)
{
    keystore *ks = NULL;
    assert_int_equal(keystore_open(dir, false, &ks), 0);
    EVP_PKEY *k = NULL;
    int got = keystore_get(ks, name, &k);
    if (got != rc) fail_msg("keystore_get(%s) gave %d, expected %d", name, got, rc);
    if (rc == 0)
        assert_non_null(k);
    else
        assert_null(k);
    EVP_PKEY_free(k);
    keystore_close(ks);
}

/* ------------------------------------------------------------------------------------------ */
/* tests */

static void test_roundtrip(void **state)
{
    keystore *ks = NULL;
    /* No KEK yet and not allowed to make one. */
    assert_int_equal(keystore_open(dir, false, &ks), REG_ENOTFOUND);
    assert_null(ks);
    assert_int_equal(keystore_open(dir, true, &ks), 0);
    assert_int_equal(mode_of("master.key"), 0600);
    assert_int_equal(mode_of("keystore"), 0700);
    size_t mlen = 0;
    free(read_file("master.key", &mlen));
    assert_int_equal(mlen, 32);

    EVP_PKEY *ec = p256(), *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_int_equal(keystore_put(ks, "ca", ec), 0);
    assert_int_equal(keystore_put(ks, "server.key-1_x", ed), 0);
    assert_int_equal(keystore_put(ks, "rsa", rsa), 0);
    assert_int_equal(mode_of("keystore/ca.key"), 0600);

    /* Layout: "RGK1" | nonce | ciphertext (as long as the DER) | tag; no plaintext DER in it. */
    unsigned char *der = NULL;
    size_t der_len = 0, flen = 0;
    assert_int_equal(pki_key_to_der(ec, &der, &der_len), 0);
    unsigned char *f = read_file("keystore/ca.key", &flen);
    assert_int_equal(flen, 4 + 12 + der_len + 16);
    assert_memory_equal(f, "RGK1", 4);
    assert_memory_not_equal(f + 16, der, der_len);
    free(f);
    free(der);

    EVP_PKEY *got = NULL;
    assert_int_equal(keystore_get(ks, "ca", &got), 0);
    assert_same_key(got, ec);
    EVP_PKEY_free(got);
    assert_int_equal(keystore_get(ks, "missing", &got), REG_ENOTFOUND);
    keystore_close(ks);

    /* A second keystore over the same directory reads them from disk. */
    assert_int_equal(keystore_open(dir, false, &ks), 0);
    const char *names[] = {"ca", "server.key-1_x", "rsa"};
    EVP_PKEY *keys[] = {ec, ed, rsa};
    for (int i = 0; i < 3; i++) {
        got = NULL;
        assert_int_equal(keystore_get(ks, names[i], &got), 0);
        assert_same_key(got, keys[i]);
        EVP_PKEY_free(got);
        /* Again, from the cache. */
        assert_int_equal(keystore_get(ks, names[i], &got), 0);
        assert_same_key(got, keys[i]);
        EVP_PKEY_free(got);
    }
    /* Replacing a key replaces it in the cache and on disk. */
    EVP_PKEY *ec2 = p256();
    assert_int_equal(keystore_put(ks, "ca", ec2), 0);
    assert_int_equal(keystore_get(ks, "ca", &got), 0);
    assert_same_key(got, ec2);
    EVP_PKEY_free(got);
    keystore_close(ks);
    assert_int_equal(keystore_open(dir, true, &ks), 0); /* create over an existing KEK */
    assert_int_equal(keystore_get(ks, "ca", &got), 0);
    assert_same_key(got, ec2);
    EVP_PKEY_free(got);
    keystore_close(ks);

    /* Only the key files and master.key are left (no temporary files). */
    char cmd[256], out[256] = "";
    snprintf(cmd, sizeof cmd, "cd '%s' && ls -A keystore | tr '\\n' ' '", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(fgets(out, sizeof out, p));
    pclose(p);
    assert_string_equal(out, "ca.key rsa.key server.key-1_x.key ");

    EVP_PKEY_free(ec2);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(rsa);
}

static void test_master_key_env(void **state)
{
    /* The same 32 bytes (00 01 .. 1f) as hex and as base64. */
    const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const char *hex_upper = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
    const char *b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const char *b64_nopad = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    keystore *ks = NULL;
    EVP_PKEY *k = p256(), *got = NULL;

    setenv("REGISTRY_MASTER_KEY", hex, 1);
    /* An environment KEK needs no master.key, create or not. */
    assert_int_equal(keystore_open(dir, false, &ks), 0);
    assert_int_equal(keystore_put(ks, "env", k), 0);
    keystore_close(ks);
    char mk[256];
    path_of(mk, sizeof mk, "master.key");
    assert_int_equal(access(mk, F_OK), -1);

    const char *same[] = {hex_upper, b64, b64_nopad};
    for (int i = 0; i < 3; i++) {
        setenv("REGISTRY_MASTER_KEY", same[i], 1);
        assert_int_equal(keystore_open(dir, false, &ks), 0);
        assert_int_equal(keystore_get(ks, "env", &got), 0);
        assert_same_key(got, k);
        EVP_PKEY_free(got);
        got = NULL;
        keystore_close(ks);
    }

    /* A different (well-formed) KEK opens the keystore but not the key. */
    setenv("REGISTRY_MASTER_KEY",
           "100102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1);
    expect_get("env", REG_EINVAL);
    /* Without the variable, a new master.key is made, and it is the wrong KEK too. */
    unsetenv("REGISTRY_MASTER_KEY");
    assert_int_equal(keystore_open(dir, true, &ks), 0);
    assert_int_equal(keystore_get(ks, "env", &got), REG_EINVAL);
    keystore_close(ks);

    const char *bad[] = {
        "",
        "abc",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",   /* 63 */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0", /* 65 */
        "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        " 00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",   /* 31 bytes */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",   /* 33 bytes */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=",   /* non-zero spare bits */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8*",   /* not base64 */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", /* trailing newline */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx-dHh8=",   /* base64url */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("REGISTRY_MASTER_KEY", bad[i], 1);
        ks = NULL;
        int rc = keystore_open(dir, true, &ks);
        if (rc != REG_EINVAL) fail_msg("REGISTRY_MASTER_KEY \"%s\" gave %d", bad[i], rc);
        assert_null(ks);
    }
    unsetenv("REGISTRY_MASTER_KEY");
    EVP_PKEY_free(k);
}

static void test_master_file_bad(void **state)
{
    keystore *ks = NULL;
    unsigned char short_key[31] = {0};
    write_file("master.key", short_key, sizeof short_key);
    assert_int_equal(keystore_open(dir, true, &ks), REG_EINVAL);
    unsigned char long_key[33] = {0};
    write_file("master.key", long_key, sizeof long_key);
    assert_int_equal(keystore_open(dir, false, &ks), REG_EINVAL);
    assert_null(ks);
}

static void test_tampering(void **state)
{
    keystore *ks = NULL;
    EVP_PKEY *k = p256();
    assert_int_equal(keystore_open(dir, true, &ks), 0);
    assert_int_equal(keystore_put(ks, "a", k), 0);
    keystore_close(ks);
    size_t len = 0;
    unsigned char *orig = read_file("keystore/a.key", &len);
    expect_get("a", 0);

    /* Renamed: the name is the AAD, so b.key holding a's key does not open, and a is gone. */
    char from[256], to[256];
    path_of(from, sizeof from, "keystore/a.key");
    path_of(to, sizeof to, "keystore/b.key");
    assert_int_equal(rename(from, to), 0);
    expect_get("b", REG_EINVAL);
    expect_get("a", REG_ENOTFOUND);
    assert_int_equal(rename(to, from), 0);
    expect_get("a", 0);

    /* A flipped bit in the magic, the nonce, the ciphertext (first and last byte), the tag. */
    size_t where[] = {0, 3, 4, 15, 16, len - 17, len - 16, len - 1};
    unsigned char *buf = malloc(len + 1);
    for (size_t i = 0; i < sizeof where / sizeof *where; i++) {
        memcpy(buf, orig, len);
        buf[where[i]] ^= 0x01;
        write_file("keystore/a.key", buf, len);
        expect_get("a", REG_EINVAL);
    }
    /* Truncated at a few lengths, empty, one byte more. */
    size_t cuts[] = {0, 3, 4, 16, 32, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_file("keystore/a.key", orig, cuts[i]);
        expect_get("a", REG_EINVAL);
    }
    memcpy(buf, orig, len);
    buf[len] = 0;
    write_file("keystore/a.key", buf, len + 1);
    expect_get("a", REG_EINVAL);
    /* A file far too big is refused before it is read whole. */
    unsigned char *big = calloc(1, 70000);
    memcpy(big, orig, len);
    write_file("keystore/a.key", big, 70000);
    expect_get("a", REG_EINVAL);
    free(big);
    /* Restored, it opens again. */
    write_file("keystore/a.key", orig, len);
    expect_get("a", 0);

    free(buf);
    free(orig);
    EVP_PKEY_free(k);
}

static void test_bad_names(void **state)
{
    keystore *ks = NULL;
    EVP_PKEY *k = p256(), *got = NULL;
    assert_int_equal(keystore_open(dir, true, &ks), 0);
    char longest[130];
    memset(longest, 'n', 129);
    longest[129] = 0;
    const char *bad[] = {"", "../x", "a/b", "a b", "caf\xc3\xa9", "x\n", "a:b", longest};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(keystore_put(ks, bad[i], k), REG_EINVAL);
        assert_int_equal(keystore_get(ks, bad[i], &got), REG_EINVAL);
    }
    assert_int_equal(keystore_put(ks, NULL, k), REG_EINVAL);
    longest[128] = 0; /* 128 is the limit */
    assert_int_equal(keystore_put(ks, longest, k), 0);
    const char *ok[] = {".", "..", "-", "A.b_c-9"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        assert_int_equal(keystore_put(ks, ok[i], k), 0);
    keystore_close(ks);
    expect_get(longest, 0);
    expect_get("..", 0);
    /* Nothing was written outside the keystore directory. */
    char p[256];
    path_of(p, sizeof p, "x.key");
    assert_int_equal(access(p, F_OK), -1);
    EVP_PKEY_free(k);
}

struct getter {
    keystore *ks;
    EVP_PKEY *want;
    int failures;
};

static void *getter_main(void *arg)
{
    struct getter *g = arg;
    for (int i = 0; i < 200; i++) {
        EVP_PKEY *k = NULL;
        if (keystore_get(g->ks, "shared", &k) != 0 || EVP_PKEY_eq(k, g->want) != 1) g->failures++;
        EVP_PKEY_free(k);
    }
    return NULL;
}

static void test_concurrent_gets(void **state)
{
    keystore *ks = NULL;
    EVP_PKEY *k = p256();
    assert_int_equal(keystore_open(dir, true, &ks), 0);
    assert_int_equal(keystore_put(ks, "shared", k), 0);
    keystore_close(ks);
    /* A fresh keystore: the threads race to fill the cache. */
    assert_int_equal(keystore_open(dir, false, &ks), 0);
    pthread_t t[4];
    struct getter g[4];
    for (int i = 0; i < 4; i++) {
        g[i] = (struct getter){ks, k, 0};
        assert_int_equal(pthread_create(&t[i], NULL, getter_main, &g[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(g[i].failures, 0);
    }
    keystore_close(ks);
    EVP_PKEY_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_master_key_env, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_master_file_bad, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_tampering, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_names, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_concurrent_gets, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests_name("keystore", tests, NULL, NULL);
}
