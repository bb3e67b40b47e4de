/*
 * test_pki.c - unit tests for common/pki.c (X.509 on OpenSSL 3).
 *
 * Covers: a new CA passes pki_check_ca while a leaf, a tampered CA, an expired or not yet valid
 * CA do not; key PEM/DER round trips; CSRs made here with OpenSSL for every accepted key type
 * (Ed25519, P-256, P-384, RSA-2048) pass pki_csr_check and yield client certificates that
 * verify against the CA with the expected CN, serial, validity and extensions, while RSA-1024,
 * secp256k1, P-224, DSA and CSRs with a tampered signature are refused; server certificates and
 * their subjectAltNames; bundles and their limit; malformed, truncated, garbage and empty input
 * to every parser (REG_EINVAL, and OpenSSL's error queue left empty); v2 CRLs read back; and
 * interoperation with the `openssl` command: a CA and a (v1) device certificate made by the CLI
 * are read and verified here, and the CLI accepts the CRLs and certificates made here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "pki.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers */

#define DAY_MS 86400000LL

/* Now, to the second: certificate times hold whole seconds. */
static int64_t now_ms(void)
{
    return (int64_t)time(NULL) * 1000;
}

/* Every pki function leaves OpenSSL's error queue empty, success or not. */
static void assert_queue_empty(void)
{
    unsigned long e = ERR_peek_error();
    if (e) fail_msg("OpenSSL error queue not empty: %s", ERR_error_string(e, NULL));
}

static EVP_PKEY *keygen(const char *kind)
{
    EVP_PKEY *k = NULL;
    if (strcmp(kind, "ed25519") == 0)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    else if (strcmp(kind, "rsa2048") == 0)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    else if (strcmp(kind, "rsa1024") == 0)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    else if (strcmp(kind, "dsa") == 0) {
        /* DSA needs domain parameters first (1024 bits: generating them is quick). */
        EVP_PKEY *params = NULL;
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "DSA", NULL);
        assert_non_null(pc);
        assert_int_equal(EVP_PKEY_paramgen_init(pc), 1);
        assert_int_equal(EVP_PKEY_CTX_set_dsa_paramgen_bits(pc, 1024), 1);
        assert_int_equal(EVP_PKEY_paramgen(pc, &params), 1);
        EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_from_pkey(NULL, params, NULL);
        assert_int_equal(EVP_PKEY_keygen_init(kc), 1);
        assert_int_equal(EVP_PKEY_keygen(kc, &k), 1);
        EVP_PKEY_CTX_free(kc);
        EVP_PKEY_CTX_free(pc);
        EVP_PKEY_free(params);
    } else
        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", kind); /* a curve name */
    if (!k) fail_msg("cannot make a %s key", kind);
    return k;
}

/* Signs with SHA-256, or with no separate digest for EdDSA. */
static const EVP_MD *md_for(EVP_PKEY *k)
{
    return EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
}

static X509_REQ *make_csr(EVP_PKEY *key, const char *cn)
{
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = X509_REQ_get_subject_name(r);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0),
        1);
    assert_int_equal(X509_REQ_set_pubkey(r, key), 1);
    assert_true(X509_REQ_sign(r, key, md_for(key)) > 0);
    return r;
}

static char *csr_pem(X509_REQ *r)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509_REQ(b, r), 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(b);
    return s;
}

/* A copy of the CSR with the last byte of its DER (inside the signature) flipped. */
static X509_REQ *tamper_csr(X509_REQ *r)
{
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(r, &der);
    assert_true(n > 0);
    der[n - 1] ^= 0x01;
    const unsigned char *p = der;
    X509_REQ *t = d2i_X509_REQ(NULL, &p, n);
    assert_non_null(t);
    OPENSSL_free(der);
    return t;
}

/* The same for a certificate. */
static X509 *tamper_cert(X509 *x)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    der[n - 1] ^= 0x01;
    const unsigned char *p = der;
    X509 *t = d2i_X509(NULL, &p, n);
    assert_non_null(t);
    OPENSSL_free(der);
    return t;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = 0;
}

/* The CA the tests issue from, made once. */
static EVP_PKEY *ca_key;
static X509 *ca_cert;

static int setup_ca(void **state)
{
    if (pki_ca_new("Acme Device CA", "Acme", 365, now_ms(), &ca_key, &ca_cert) != 0) return -1;
    return 0;
}

static int teardown_ca(void **state)
{
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    return 0;
}

static X509 *issue(EVP_PKEY *pub, const char *cn, int64_t nb, int64_t na, uint8_t serial[16])
{
    assert_int_equal(RAND_bytes(serial, 16), 1);
    serial[0] |= 0x80; /* pki clears it */
    X509 *x = NULL;
    assert_int_equal(pki_issue_client(ca_cert, ca_key, pub, cn, serial, nb, na, &x), 0);
    serial[0] &= 0x7f;
    assert_queue_empty();
    return x;
}

/* ------------------------------------------------------------------------------------------ */
/* CAs and keys */

static void test_ca_new(void **state)
{
    int64_t now = now_ms();
    char why[128] = "";
    assert_int_equal(pki_check_ca(ca_cert, now, why, sizeof why), 0);
    assert_queue_empty();

    char *s = pki_cert_subject(ca_cert);
    assert_string_equal(s, "CN=Acme Device CA,O=Acme");
    free(s);
    s = pki_cert_issuer(ca_cert);
    assert_string_equal(s, "CN=Acme Device CA,O=Acme");
    free(s);
    char cn[64];
    assert_int_equal(pki_cert_subject_cn(ca_cert, cn, sizeof cn), 0);
    assert_string_equal(cn, "Acme Device CA");
    assert_int_equal(pki_cert_subject_cn(ca_cert, cn, 5), REG_ETOOBIG);

    /* Valid from an hour ago for 365 days (setup ran within the last minute). */
    int64_t nb = pki_cert_not_before_ms(ca_cert), na = pki_cert_not_after_ms(ca_cert);
    assert_true(nb <= now - 3600 * 1000 && nb > now - 3600 * 1000 - 60000);
    assert_int_equal(na - nb, 365 * DAY_MS + 3600 * 1000);

    uint32_t fl = X509_get_extension_flags(ca_cert);
    assert_true((fl & EXFLAG_CA) && (fl & EXFLAG_SS) && (fl & EXFLAG_KUSAGE));
    assert_int_equal(X509_get_key_usage(ca_cert), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_non_null(X509_get0_subject_key_id(ca_cert));
    assert_int_equal(X509_get_signature_nid(ca_cert), NID_ecdsa_with_SHA256);
    assert_int_equal(X509_get_version(ca_cert), X509_VERSION_3);
    /* 16 random bytes, positive: at most 32 hex digits, the first below 8. */
    char serial[PKI_SERIAL_HEX];
    pki_cert_serial_hex(ca_cert, serial);
    assert_true(strlen(serial) <= 32 && strlen(serial) >= 2);
    assert_true(strlen(serial) < 32 || serial[0] < '8');

    char fp[PKI_FINGERPRINT_HEX], fp2[PKI_FINGERPRINT_HEX];
    pki_cert_fingerprint(ca_cert, fp);
    assert_int_equal(strlen(fp), 64);
    assert_int_equal(strspn(fp, "0123456789abcdef"), 64);

    /* PEM round trip keeps the certificate byte for byte. */
    char *pem = NULL;
    assert_int_equal(pki_cert_to_pem(ca_cert, &pem), 0);
    assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE-----"));
    X509 *back = NULL;
    assert_int_equal(pki_cert_from_pem(pem, strlen(pem), &back), 0);
    pki_cert_fingerprint(back, fp2);
    assert_string_equal(fp, fp2);
    X509_free(back);
    free(pem);

    /* Expired (far future), not yet valid (before the back-dated start). */
    assert_int_equal(pki_check_ca(ca_cert, now + 400 * DAY_MS, why, sizeof why), REG_EINVAL);
    assert_non_null(strstr(why, "expired"));
    assert_int_equal(pki_check_ca(ca_cert, now - 2 * 3600 * 1000, why, sizeof why), REG_EINVAL);
    assert_non_null(strstr(why, "not yet valid"));
    assert_queue_empty();

    /* Without an organisation; and arguments refused. */
    EVP_PKEY *k = NULL;
    X509 *x = NULL;
    assert_int_equal(pki_ca_new("Solo", NULL, 1, now, &k, &x), 0);
    s = pki_cert_subject(x);
    assert_string_equal(s, "CN=Solo");
    free(s);
    X509_free(x);
    EVP_PKEY_free(k);
    assert_int_equal(pki_ca_new("", NULL, 1, now, &k, &x), REG_EINVAL);
    assert_int_equal(pki_ca_new("x", NULL, 0, now, &k, &x), REG_EINVAL);
}

static void test_check_ca_refusals(void **state)
{
    int64_t now = now_ms();
    char why[128];

    /* A leaf (CA:FALSE) issued by our CA. */
    EVP_PKEY *k = keygen("P-256");
    uint8_t serial[16];
    X509 *leaf = issue(k, "dev-1", now - 1000, now + DAY_MS, serial);
    assert_int_equal(pki_check_ca(leaf, now, why, sizeof why), REG_EINVAL);
    assert_non_null(strstr(why, "not a CA"));

    /* A self-signed CA whose signature was tampered with. */
    X509 *bad = tamper_cert(ca_cert);
    assert_int_equal(pki_check_ca(bad, now, why, sizeof why), REG_EINVAL);
    assert_non_null(strstr(why, "signature"));

    /* CA:TRUE but keyUsage without keyCertSign. */
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"KU CA", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,digitalSignature");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    assert_int_equal(pki_check_ca(x, now, why, sizeof why), REG_EINVAL);
    assert_non_null(strstr(why, "keyCertSign"));
    assert_queue_empty();

    X509_free(x);
    X509_free(bad);
    X509_free(leaf);
    EVP_PKEY_free(k);
}

static void test_key_roundtrip(void **state)
{
    EVP_PKEY *k = NULL, *back = NULL;
    assert_int_equal(pki_key_new_p256(&k), 0);
    char *pem = NULL;
    assert_int_equal(pki_key_to_pem(k, &pem), 0);
    assert_memory_equal(pem, "-----BEGIN PRIVATE KEY-----\n", 28);
    assert_int_equal(pki_key_from_pem(pem, strlen(pem), &back), 0);
    assert_int_equal(EVP_PKEY_eq(k, back), 1);
    EVP_PKEY_free(back);
    free(pem);

    unsigned char *der = NULL, *der2 = NULL;
    size_t len = 0, len2 = 0;
    assert_int_equal(pki_key_to_der(k, &der, &len), 0);
    assert_int_equal(pki_key_from_der(der, len, &back), 0);
    assert_int_equal(EVP_PKEY_eq(k, back), 1);
    /* The private half survives too: re-encoding gives the same bytes. */
    assert_int_equal(pki_key_to_der(back, &der2, &len2), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(der, der2, len);
    EVP_PKEY_free(back);
    back = NULL;
    /* Trailing bytes, truncation, nothing. */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, der, len);
    longer[len] = 0;
    assert_int_equal(pki_key_from_der(longer, len + 1, &back), REG_EINVAL);
    assert_int_equal(pki_key_from_der(der, len - 1, &back), REG_EINVAL);
    assert_int_equal(pki_key_from_der(der, 0, &back), REG_EINVAL);
    assert_null(back);
    assert_queue_empty();
    free(longer);
    free(der);
    free(der2);

    /* Traditional ("EC PRIVATE KEY") PEM is read too; an encrypted key is refused without
     * prompting for a passphrase. */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    assert_non_null(strstr(p, "EC PRIVATE KEY"));
    assert_int_equal(pki_key_from_pem(p, (size_t)n, &back), 0);
    assert_int_equal(EVP_PKEY_eq(k, back), 1);
    EVP_PKEY_free(back);
    back = NULL;
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    assert_int_equal(
        PEM_write_bio_PKCS8PrivateKey(b, k, EVP_aes_256_cbc(), "secret", 6, NULL, NULL), 1);
    n = BIO_get_mem_data(b, &p);
    assert_int_equal(pki_key_from_pem(p, (size_t)n, &back), REG_EINVAL);
    assert_null(back);
    assert_queue_empty();
    BIO_free(b);
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------------------------------------ */
/* CSRs and client certificates */

static void check_client_cert(X509 *x, EVP_PKEY *key, const char *cn, const uint8_t serial[16],
                              int64_t nb, int64_t na)
{
    char buf[PKI_SERIAL_HEX], want[PKI_SERIAL_HEX];
    assert_int_equal(pki_cert_subject_cn(x, buf, sizeof buf), 0);
    assert_string_equal(buf, cn);
    char *subj = pki_cert_subject(x);
    char expect[128];
    snprintf(expect, sizeof expect, "CN=%s", cn);
    assert_string_equal(subj, expect);
    free(subj);
    char *iss = pki_cert_issuer(x);
    assert_string_equal(iss, "CN=Acme Device CA,O=Acme");
    free(iss);

    /* The serial is the 16 bytes given with the top bit cleared, leading zeros dropped. */
    size_t skip = 0;
    while (skip < 15 && serial[skip] == 0)
        skip++;
    hex(serial + skip, 16 - skip, want);
    pki_cert_serial_hex(x, buf);
    assert_string_equal(buf, want);

    assert_int_equal(pki_cert_not_before_ms(x), nb);
    assert_int_equal(pki_cert_not_after_ms(x), na);

    EVP_PKEY *pub = X509_get0_pubkey(x);
    assert_int_equal(EVP_PKEY_eq(pub, key), 1);
    assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    assert_int_equal(X509_get_version(x), X509_VERSION_3);

    uint32_t fl = X509_get_extension_flags(x);
    assert_true(fl & EXFLAG_BCONS);
    assert_false(fl & EXFLAG_CA);
    assert_false(fl & EXFLAG_INVALID);
    assert_true(fl & EXFLAG_XKUSAGE);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_CLIENT);
    int rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
    assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | (rsa ? KU_KEY_ENCIPHERMENT : 0));
    /* Both are critical. */
    int i = X509_get_ext_by_NID(x, NID_basic_constraints, -1);
    assert_true(i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, i)));
    i = X509_get_ext_by_NID(x, NID_key_usage, -1);
    assert_true(i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, i)));
    /* The AKI names the CA's SKI. */
    assert_non_null(X509_get0_subject_key_id(x));
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
    assert_non_null(aki);
    assert_int_equal(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(ca_cert)), 0);
}

static void test_issue_each_key_type(void **state)
{
    static const char *kinds[] = {"ed25519", "P-256", "P-384", "rsa2048"};
    int64_t now = now_ms();
    X509_STORE *store = NULL;
    assert_int_equal(pki_store_new(&ca_cert, 1, &store), 0);

    for (size_t t = 0; t < sizeof kinds / sizeof *kinds; t++) {
        EVP_PKEY *key = keygen(kinds[t]);
        char cn[64];
        snprintf(cn, sizeof cn, "device-%s", kinds[t]);
        X509_REQ *req = make_csr(key, cn);
        char *pem = csr_pem(req);
        X509_REQ *csr = NULL;
        char why[160] = "";
        assert_int_equal(pki_csr_from_pem(pem, strlen(pem), &csr, why, sizeof why), 0);
        if (pki_csr_check(csr, why, sizeof why) != 0) fail_msg("%s CSR refused: %s", kinds[t], why);
        assert_queue_empty();
        EVP_PKEY *pub = pki_csr_pubkey(csr);
        assert_int_equal(EVP_PKEY_eq(pub, key), 1);

        int64_t nb = now - 60000, na = now + 30 * DAY_MS;
        uint8_t serial[16];
        X509 *x = issue(pub, cn, nb, na, serial);
        check_client_cert(x, key, cn, serial, nb, na);

        X509 *anchor = NULL;
        if (pki_verify(store, x, NULL, now, &anchor, why, sizeof why) != 0)
            fail_msg("%s certificate does not verify: %s", kinds[t], why);
        assert_int_equal(X509_cmp(anchor, ca_cert), 0);
        X509_free(anchor);
        anchor = NULL;
        /* Without asking for the anchor. */
        assert_int_equal(pki_verify(store, x, NULL, now, NULL, why, sizeof why), 0);
        /* After notAfter, OpenSSL's own reason. */
        assert_int_equal(pki_verify(store, x, NULL, na + DAY_MS, &anchor, why, sizeof why),
                         REG_EINVAL);
        assert_string_equal(why, "certificate has expired");
        assert_null(anchor);
        assert_queue_empty();

        X509_free(x);
        EVP_PKEY_free(pub);
        X509_REQ_free(csr);
        free(pem);
        X509_REQ_free(req);
        EVP_PKEY_free(key);
    }
    X509_STORE_free(store);
}

static void test_issue_refusals(void **state)
{
    int64_t now = now_ms();
    EVP_PKEY *k = keygen("P-256"), *other = keygen("P-256");
    uint8_t serial[16] = {1};
    X509 *x = NULL;
    /* The CA key does not match the CA certificate. */
    assert_int_equal(pki_issue_client(ca_cert, other, k, "d", serial, now, now + 1000, &x),
                     REG_EINVAL);
    /* notAfter before notBefore; no CN; a CN longer than X.520 allows. */
    assert_int_equal(pki_issue_client(ca_cert, ca_key, k, "d", serial, now, now - 1000, &x),
                     REG_EINVAL);
    assert_int_equal(pki_issue_client(ca_cert, ca_key, k, "", serial, now, now + 1000, &x),
                     REG_EINVAL);
    char longcn[100];
    memset(longcn, 'a', 99);
    longcn[99] = 0;
    assert_int_equal(pki_issue_client(ca_cert, ca_key, k, longcn, serial, now, now + 1000, &x),
                     REG_EINVAL);
    assert_null(x);
    assert_queue_empty();
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
}

static void test_verify_failures(void **state)
{
    int64_t now = now_ms();
    char why[128];
    EVP_PKEY *k = keygen("P-256"), *other_key = NULL;
    X509 *other_ca = NULL, *anchor = NULL;
    uint8_t serial[16];
    X509 *x = issue(k, "dev", now - 1000, now + DAY_MS, serial);
    assert_int_equal(pki_ca_new("Other CA", NULL, 10, now, &other_key, &other_ca), 0);

    X509_STORE *st = NULL;
    assert_int_equal(pki_store_new(&other_ca, 1, &st), 0);
    assert_int_equal(pki_verify(st, x, NULL, now, &anchor, why, sizeof why), REG_EINVAL);
    assert_string_equal(why, "unable to get local issuer certificate");
    assert_null(anchor);
    X509_STORE_free(st);

    /* Both CAs, and duplicates, in one store: the right anchor comes back. */
    X509 *cas[3] = {other_ca, ca_cert, other_ca};
    assert_int_equal(pki_store_new(cas, 3, &st), 0);
    assert_int_equal(pki_verify(st, x, NULL, now, &anchor, why, sizeof why), 0);
    assert_int_equal(X509_cmp(anchor, ca_cert), 0);
    X509_free(anchor);
    /* Not yet valid. */
    assert_int_equal(pki_verify(st, x, NULL, now - DAY_MS, NULL, why, sizeof why), REG_EINVAL);
    assert_string_equal(why, "certificate is not yet valid");
    /* A tampered leaf. */
    X509 *bad = tamper_cert(x);
    assert_int_equal(pki_verify(st, bad, NULL, now, NULL, why, sizeof why), REG_EINVAL);
    assert_string_equal(why, "certificate signature failure");
    assert_queue_empty();

    X509_free(bad);
    X509_STORE_free(st);
    X509_free(other_ca);
    EVP_PKEY_free(other_key);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void test_csr_refused(void **state)
{
    static const struct {
        const char *kind, *reason;
    } bad[] = {
        {"rsa1024", "too small"},      {"secp256k1", "not accepted"}, {"P-224", "not accepted"},
        {"secp521r1", "not accepted"}, {"dsa", "not accepted"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        EVP_PKEY *k = keygen(bad[i].kind);
        X509_REQ *r = make_csr(k, "x");
        char *pem = csr_pem(r);
        X509_REQ *csr = NULL;
        char why[160] = "";
        assert_int_equal(pki_csr_from_pem(pem, strlen(pem), &csr, why, sizeof why), 0);
        assert_int_equal(pki_csr_check(csr, why, sizeof why), REG_EINVAL);
        if (!strstr(why, bad[i].reason)) fail_msg("%s: reason was \"%s\"", bad[i].kind, why);
        assert_queue_empty();
        X509_REQ_free(csr);
        free(pem);
        X509_REQ_free(r);
        EVP_PKEY_free(k);
    }

    /* Tampered signatures: the request was not signed by the key it carries. */
    static const char *good[] = {"P-256", "ed25519", "rsa2048"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        EVP_PKEY *k = keygen(good[i]);
        X509_REQ *r = make_csr(k, "x");
        char why[160] = "";
        assert_int_equal(pki_csr_check(r, why, sizeof why), 0);
        X509_REQ *t = tamper_csr(r);
        assert_int_equal(pki_csr_check(t, why, sizeof why), REG_EINVAL);
        assert_string_equal(why, "CSR signature does not verify");
        /* And a CSR carrying another key than the one that signed it. */
        EVP_PKEY *k2 = keygen("P-256");
        X509_REQ *swapped = make_csr(k, "x");
        assert_int_equal(X509_REQ_set_pubkey(swapped, k2), 1);
        assert_int_equal(pki_csr_check(swapped, why, sizeof why), REG_EINVAL);
        assert_queue_empty();
        X509_REQ_free(swapped);
        EVP_PKEY_free(k2);
        X509_REQ_free(t);
        X509_REQ_free(r);
        EVP_PKEY_free(k);
    }
}

static void test_csr_old_header(void **state)
{
    EVP_PKEY *k = keygen("P-256");
    X509_REQ *r = make_csr(k, "legacy");
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509_REQ_NEW(b, r), 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    assert_non_null(strstr(p, "NEW CERTIFICATE REQUEST"));
    X509_REQ *csr = NULL;
    char why[64];
    assert_int_equal(pki_csr_from_pem(p, (size_t)n, &csr, why, sizeof why), 0);
    assert_int_equal(pki_csr_check(csr, why, sizeof why), 0);
    X509_REQ_free(csr);
    BIO_free(b);
    X509_REQ_free(r);
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------------------------------------ */
/* bad input */

static void test_malformed_input(void **state)
{
    char *good = NULL;
    assert_int_equal(pki_cert_to_pem(ca_cert, &good), 0);
    size_t glen = strlen(good);
    char *trunc = strndup(good, glen / 2);
    /* The DER inside damaged: the outer SEQUENCE tag (the body's first base64 character; a
     * character further in may land in key or signature bytes and still parse). */
    char *corrupt = strdup(good);
    char *body = strchr(corrupt, '\n') + 1;
    assert_int_equal(*body, 'M');
    *body = 'A';
    /* Base64 that is not base64. */
    const char *bad_b64 = "-----BEGIN CERTIFICATE-----\n!!!!not*base64@@@@\n"
                          "-----END CERTIFICATE-----\n";
    const char *empty_body = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
    const char *no_end = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    unsigned char garbage[512];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (unsigned char)(i * 131 + 7);

    struct {
        const char *p;
        size_t len;
    } inputs[] = {
        {trunc, strlen(trunc)},
        {corrupt, glen},
        {bad_b64, strlen(bad_b64)},
        {empty_body, strlen(empty_body)},
        {no_end, strlen(no_end)},
        {(const char *)garbage, sizeof garbage},
        {"", 0},
        {NULL, 0},
        {"x", 1},
    };
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        X509 *x = NULL;
        STACK_OF(X509) *sk = NULL;
        X509_REQ *r = NULL;
        EVP_PKEY *k = NULL;
        char why[128] = "";
        int rc = pki_cert_from_pem(inputs[i].p, inputs[i].len, &x);
        if (rc != REG_EINVAL) fail_msg("input %zu: pki_cert_from_pem gave %d", i, rc);
        assert_int_equal(pki_certs_from_pem(inputs[i].p, inputs[i].len, &sk), REG_EINVAL);
        assert_int_equal(pki_csr_from_pem(inputs[i].p, inputs[i].len, &r, why, sizeof why),
                         REG_EINVAL);
        assert_true(strlen(why) > 0);
        assert_int_equal(pki_key_from_pem(inputs[i].p, inputs[i].len, &k), REG_EINVAL);
        assert_null(x);
        assert_null(sk);
        assert_null(r);
        assert_null(k);
        assert_queue_empty();
    }
    /* A certificate is not a CSR nor a key. */
    X509_REQ *r = NULL;
    EVP_PKEY *k = NULL;
    char why[128];
    assert_int_equal(pki_csr_from_pem(good, glen, &r, why, sizeof why), REG_EINVAL);
    assert_int_equal(pki_key_from_pem(good, glen, &k), REG_EINVAL);
    assert_queue_empty();
    free(corrupt);
    free(trunc);
    free(good);
}

static void test_bundles(void **state)
{
    int64_t now = now_ms();
    EVP_PKEY *k = keygen("P-256");
    X509 *certs[PKI_MAX_CHAIN + 1];
    char *pems[PKI_MAX_CHAIN + 1];
    size_t total = 0;
    for (int i = 0; i <= PKI_MAX_CHAIN; i++) {
        uint8_t serial[16];
        char cn[16];
        snprintf(cn, sizeof cn, "d%d", i);
        certs[i] = issue(k, cn, now, now + DAY_MS, serial);
        assert_int_equal(pki_cert_to_pem(certs[i], &pems[i]), 0);
        total += strlen(pems[i]);
    }
    char *all = calloc(1, total + 200);
    strcat(all, "Bag Attributes: text around the blocks is skipped\n");
    for (int i = 0; i < 3; i++)
        strcat(all, pems[i]);
    strcat(all, "trailing words\n");

    STACK_OF(X509) *sk = NULL;
    assert_int_equal(pki_certs_from_pem(all, strlen(all), &sk), 0);
    assert_int_equal(sk_X509_num(sk), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(X509_cmp(sk_X509_value(sk, i), certs[i]), 0);
    sk_X509_pop_free(sk, X509_free);
    sk = NULL;
    /* The first certificate of a bundle. */
    X509 *first = NULL;
    assert_int_equal(pki_cert_from_pem(all, strlen(all), &first), 0);
    assert_int_equal(X509_cmp(first, certs[0]), 0);
    X509_free(first);

    /* A truncated last block spoils the bundle. */
    size_t cut = strlen(all) - strlen("trailing words\n") - 40;
    assert_int_equal(pki_certs_from_pem(all, cut, &sk), REG_EINVAL);
    assert_null(sk);

    /* Exactly the limit, then one more. */
    all[0] = 0;
    for (int i = 0; i < PKI_MAX_CHAIN; i++)
        strcat(all, pems[i]);
    assert_int_equal(pki_certs_from_pem(all, strlen(all), &sk), 0);
    assert_int_equal(sk_X509_num(sk), PKI_MAX_CHAIN);
    sk_X509_pop_free(sk, X509_free);
    sk = NULL;
    strcat(all, pems[PKI_MAX_CHAIN]);
    assert_int_equal(pki_certs_from_pem(all, strlen(all), &sk), REG_ETOOBIG);
    assert_null(sk);
    assert_queue_empty();

    free(all);
    for (int i = 0; i <= PKI_MAX_CHAIN; i++) {
        free(pems[i]);
        X509_free(certs[i]);
    }
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------------------------------------ */
/* server certificates */

static void test_issue_server(void **state)
{
    int64_t now = now_ms();
    EVP_PKEY *k = keygen("P-256");
    const char *extra[] = {"registry.example.com", "*.devices.example.com"};
    X509 *x = NULL;
    assert_int_equal(pki_issue_server(ca_cert, ca_key, k, "registry", extra, 2, 90, now, &x), 0);
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "registry.example.com", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "a.devices.example.com", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "other.example.com", 0, 0, NULL), 0);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "10.0.0.1", 0), 0);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
    assert_false(X509_get_extension_flags(x) & EXFLAG_CA);
    assert_int_equal(pki_cert_not_after_ms(x) - pki_cert_not_before_ms(x),
                     90 * DAY_MS + 3600 * 1000);
    X509_STORE *st = NULL;
    char why[128];
    assert_int_equal(pki_store_new(&ca_cert, 1, &st), 0);
    assert_int_equal(pki_verify(st, x, NULL, now, NULL, why, sizeof why), 0);
    X509_STORE_free(st);
    X509_free(x);
    x = NULL;

    /* No extra names; a name that would smuggle in another entry is refused. */
    assert_int_equal(pki_issue_server(ca_cert, ca_key, k, "r", NULL, 0, 1, now, &x), 0);
    X509_free(x);
    x = NULL;
    const char *evil[] = {"a.example,IP:1.2.3.4"};
    assert_int_equal(pki_issue_server(ca_cert, ca_key, k, "r", evil, 1, 1, now, &x), REG_EINVAL);
    assert_null(x);
    assert_queue_empty();
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------------------------------------ */
/* CRLs */

static X509_CRL *crl_from_pem(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509_CRL *c = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(c);
    return c;
}

static void test_crl(void **state)
{
    int64_t now = now_ms();
    EVP_PKEY *k = keygen("P-256");
    uint8_t s1[16], s2[16];
    X509 *a = issue(k, "a", now, now + DAY_MS, s1), *b = issue(k, "b", now, now + DAY_MS, s2);
    char h1[PKI_SERIAL_HEX], h2[PKI_SERIAL_HEX];
    pki_cert_serial_hex(a, h1);
    pki_cert_serial_hex(b, h2);
    pki_revoked entries[] = {{h2, now - 5000}, {h1, now - 10000}};
    char *pem = NULL;
    assert_int_equal(pki_crl_new(ca_cert, ca_key, entries, 2, 42, now, now + 7 * DAY_MS, &pem), 0);
    assert_queue_empty();

    X509_CRL *crl = crl_from_pem(pem);
    assert_int_equal(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
    assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(ca_cert)), 1);
    assert_int_equal(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca_cert)), 0);
    assert_int_equal(X509_CRL_get_signature_nid(crl), NID_ecdsa_with_SHA256);
    assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
    X509_REVOKED *r = NULL;
    assert_int_equal(X509_CRL_get0_by_cert(crl, &r, a), 1);
    struct tm tm;
    assert_int_equal(ASN1_TIME_to_tm(X509_REVOKED_get0_revocationDate(r), &tm), 1);
    assert_int_equal((int64_t)timegm(&tm) * 1000, now - 10000);
    assert_int_equal(X509_CRL_get0_by_cert(crl, &r, b), 1);
    assert_int_equal(X509_CRL_get0_by_cert(crl, &r, ca_cert), 0);
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    assert_non_null(num);
    assert_int_equal(ASN1_INTEGER_get(num), 42);
    ASN1_INTEGER_free(num);
    AUTHORITY_KEYID *akid = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, NULL, NULL);
    assert_non_null(akid);
    assert_int_equal(ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(ca_cert)), 0);
    AUTHORITY_KEYID_free(akid);
    assert_int_equal(ASN1_TIME_to_tm(X509_CRL_get0_lastUpdate(crl), &tm), 1);
    assert_int_equal((int64_t)timegm(&tm) * 1000, now);
    assert_int_equal(ASN1_TIME_to_tm(X509_CRL_get0_nextUpdate(crl), &tm), 1);
    assert_int_equal((int64_t)timegm(&tm) * 1000, now + 7 * DAY_MS);
    X509_CRL_free(crl);
    free(pem);
    pem = NULL;

    /* An empty CRL is fine; a bad serial, a wrong key, times backwards are not. */
    assert_int_equal(pki_crl_new(ca_cert, ca_key, NULL, 0, 1, now, now + DAY_MS, &pem), 0);
    crl = crl_from_pem(pem);
    assert_null(X509_CRL_get_REVOKED(crl));
    X509_CRL_free(crl);
    free(pem);
    pem = NULL;
    pki_revoked badser[] = {{"12zz", now}};
    assert_int_equal(pki_crl_new(ca_cert, ca_key, badser, 1, 1, now, now + DAY_MS, &pem),
                     REG_EINVAL);
    pki_revoked neg[] = {{"-12", now}};
    assert_int_equal(pki_crl_new(ca_cert, ca_key, neg, 1, 1, now, now + DAY_MS, &pem), REG_EINVAL);
    assert_int_equal(pki_crl_new(ca_cert, k, entries, 2, 1, now, now + DAY_MS, &pem), REG_EINVAL);
    assert_int_equal(pki_crl_new(ca_cert, ca_key, entries, 2, 1, now, now - 1, &pem), REG_EINVAL);
    assert_null(pem);
    assert_queue_empty();
    X509_free(a);
    X509_free(b);
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------------------------------------ */
/* the openssl command */

static char tmpdir[64];

/* Runs a shell command in tmpdir; its output (stdout and stderr) into out. Exit status back. */
static int sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "cd '%s' && (", tmpdir);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    snprintf(cmd + n, sizeof cmd - (size_t)n, ") 2>&1");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = 0;
    char sink[256];
    if (!out) out = sink, cap = sizeof sink;
    while (got + 1 < cap) {
        size_t r = fread(out + got, 1, cap - 1 - got, p);
        if (r == 0) break;
        got += r;
    }
    out[got] = 0;
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static void spill(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_openssl_cli(void **state)
{
    strcpy(tmpdir, "/tmp/test_pki.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char out[4096];
    int64_t now; /* taken once the CLI has made its certificates: their notBefore is the second
                  * they were made, which a clock read before could precede */

    /* A factory CA and a device certificate made the way a manufacturer might. The device
     * certificate from `openssl x509 -req` is a v1 certificate without extensions. */
    if (sh(out, sizeof out,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
           "-out ca.pem -subj '/O=Acme/CN=Acme Factory CA' -days 30 && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev.key "
           "-out dev.csr -subj '/CN=x/serialNumber=SN123' && "
           "openssl x509 -req -in dev.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out dev.pem "
           "-days 10") != 0)
        fail_msg("openssl failed: %s", out);
    now = now_ms();

    char *ca_pem = slurp("ca.pem"), *dev_pem = slurp("dev.pem"), *ca_key_pem = slurp("ca.key");
    char *csr = slurp("dev.csr");
    X509 *fca = NULL, *dev = NULL;
    EVP_PKEY *fkey = NULL;
    assert_int_equal(pki_cert_from_pem(ca_pem, strlen(ca_pem), &fca), 0);
    assert_int_equal(pki_cert_from_pem(dev_pem, strlen(dev_pem), &dev), 0);
    assert_int_equal(pki_key_from_pem(ca_key_pem, strlen(ca_key_pem), &fkey), 0);
    char why[128] = "";
    if (pki_check_ca(fca, now, why, sizeof why) != 0) fail_msg("CLI CA refused: %s", why);
    char *s = pki_cert_subject(fca);
    assert_string_equal(s, "CN=Acme Factory CA,O=Acme");
    free(s);

    char sn[32];
    assert_int_equal(pki_cert_subject_serial(dev, sn, sizeof sn), 0);
    assert_string_equal(sn, "SN123");
    assert_int_equal(pki_cert_subject_cn(dev, sn, sizeof sn), 0);
    assert_string_equal(sn, "x");
    assert_int_equal(pki_cert_subject_serial(dev, sn, 5), REG_ETOOBIG);
    /* The CA has no serialNumber: its CN stands in. */
    assert_int_equal(pki_cert_subject_serial(fca, sn, sizeof sn), 0);
    assert_string_equal(sn, "Acme Factory CA");
    /* The serial and fingerprint agree with the CLI's. */
    char hexs[PKI_SERIAL_HEX], fp[PKI_FINGERPRINT_HEX];
    pki_cert_serial_hex(dev, hexs);
    assert_int_equal(sh(out, sizeof out, "openssl x509 -in dev.pem -noout -serial"), 0);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
    char expect[64];
    snprintf(expect, sizeof expect, "serial=%s\n", hexs);
    assert_string_equal(out, expect);
    pki_cert_fingerprint(dev, fp);
    assert_int_equal(sh(out, sizeof out,
                        "openssl x509 -in dev.pem -noout -fingerprint -sha256 "
                        "| tr -d : | tr A-F a-f"),
                     0);
    assert_non_null(strstr(out, fp));

    /* The CLI's CSR passes our checks. */
    X509_REQ *req = NULL;
    assert_int_equal(pki_csr_from_pem(csr, strlen(csr), &req, why, sizeof why), 0);
    assert_int_equal(pki_csr_check(req, why, sizeof why), 0);
    X509_REQ_free(req);

    /* The device verifies with the factory CA as anchor, among other CAs. */
    X509 *cas[2] = {ca_cert, fca};
    X509_STORE *st = NULL;
    X509 *anchor = NULL;
    assert_int_equal(pki_store_new(cas, 2, &st), 0);
    if (pki_verify(st, dev, NULL, now, &anchor, why, sizeof why) != 0)
        fail_msg("CLI device refused: %s", why);
    assert_int_equal(X509_cmp(anchor, fca), 0);
    X509_free(anchor);
    X509_STORE_free(st);

    /* A CRL made here with the factory CA's key revoking the device: the CLI reads it, checks
     * its signature, and then refuses the device. */
    char *crl = NULL;
    pki_revoked e[] = {{hexs, now - 1000}};
    assert_int_equal(pki_crl_new(fca, fkey, e, 1, 7, now - 1000, now + DAY_MS, &crl), 0);
    spill("crl.pem", crl);
    if (sh(out, sizeof out, "openssl crl -in crl.pem -noout -text") != 0)
        fail_msg("openssl crl -text: %s", out);
    assert_non_null(strstr(out, "Version 2"));
    assert_non_null(strstr(out, "X509v3 CRL Number"));
    assert_non_null(strstr(out, "X509v3 Authority Key Identifier"));
    if (sh(out, sizeof out, "openssl crl -in crl.pem -CAfile ca.pem -noout") != 0 ||
        !strstr(out, "verify OK"))
        fail_msg("openssl crl -CAfile: %s", out);
    assert_int_equal(sh(out, sizeof out, "openssl verify -CAfile ca.pem dev.pem"), 0);
    assert_int_not_equal(
        sh(out, sizeof out, "openssl verify -crl_check -CAfile ca.pem -CRLfile crl.pem dev.pem"),
        0);
    assert_non_null(strstr(out, "certificate revoked"));
    free(crl);

    /* Our own CA's certificates and CRL, checked by the CLI (an Ed25519 device too). */
    EVP_PKEY *ek = keygen("ed25519");
    uint8_t serial[16];
    X509 *leaf = issue(ek, "ed-device", now - 1000, now + DAY_MS, serial);
    char *leaf_pem = NULL, *our_ca = NULL;
    assert_int_equal(pki_cert_to_pem(leaf, &leaf_pem), 0);
    assert_int_equal(pki_cert_to_pem(ca_cert, &our_ca), 0);
    spill("leaf.pem", leaf_pem);
    spill("ourca.pem", our_ca);
    if (sh(out, sizeof out, "openssl verify -CAfile ourca.pem leaf.pem") != 0)
        fail_msg("openssl verify: %s", out);
    if (sh(out, sizeof out, "openssl verify -purpose sslclient -CAfile ourca.pem leaf.pem") != 0)
        fail_msg("openssl verify -purpose sslclient: %s", out);
    /* -x509_strict too: what we issue is strictly RFC 5280. */
    if (sh(out, sizeof out, "openssl verify -x509_strict -CAfile ourca.pem leaf.pem") != 0)
        fail_msg("openssl verify -x509_strict: %s", out);
    pki_cert_serial_hex(leaf, hexs);
    pki_revoked e2[] = {{hexs, now}};
    assert_int_equal(pki_crl_new(ca_cert, ca_key, e2, 1, 1, now, now + DAY_MS, &crl), 0);
    spill("ourcrl.pem", crl);
    if (sh(out, sizeof out, "openssl crl -in ourcrl.pem -CAfile ourca.pem -noout") != 0 ||
        !strstr(out, "verify OK"))
        fail_msg("openssl crl -CAfile (our CA): %s", out);
    assert_int_not_equal(sh(out, sizeof out,
                            "openssl verify -crl_check -CAfile ourca.pem -CRLfile ourcrl.pem "
                            "leaf.pem"),
                         0);
    assert_non_null(strstr(out, "certificate revoked"));

    free(crl);
    free(our_ca);
    free(leaf_pem);
    X509_free(leaf);
    EVP_PKEY_free(ek);
    free(csr);
    EVP_PKEY_free(fkey);
    X509_free(dev);
    X509_free(fca);
    free(ca_key_pem);
    free(dev_pem);
    free(ca_pem);
    assert_queue_empty();
    sh(NULL, 0, "rm -rf '%s'", tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ca_new),          cmocka_unit_test(test_check_ca_refusals),
        cmocka_unit_test(test_key_roundtrip),   cmocka_unit_test(test_issue_each_key_type),
        cmocka_unit_test(test_issue_refusals),  cmocka_unit_test(test_verify_failures),
        cmocka_unit_test(test_csr_refused),     cmocka_unit_test(test_csr_old_header),
        cmocka_unit_test(test_malformed_input), cmocka_unit_test(test_bundles),
        cmocka_unit_test(test_issue_server),    cmocka_unit_test(test_crl),
        cmocka_unit_test(test_openssl_cli),
    };
    return cmocka_run_group_tests_name("pki", tests, setup_ca, teardown_ca);
}
