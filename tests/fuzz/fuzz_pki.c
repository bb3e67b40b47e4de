/*
 * fuzz_pki.c - libFuzzer harness for the parsers of common/pki.c: pki_cert_from_pem,
 * pki_certs_from_pem and pki_csr_from_pem followed by pki_csr_check (and, on a certificate that
 * parses, the accessors and pki_check_ca that read its fields).
 *
 * Each input is fed twice: as it is (PEM text, mostly exercising the armour and base64 layers),
 * and as DER wrapped in "CERTIFICATE" and "CERTIFICATE REQUEST" armour, so that mutations reach
 * the ASN.1 decoders. Every call must either succeed with an object or fail with one of the
 * documented codes, and leave OpenSSL's error queue empty.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon tests/fuzz/fuzz_pki.c \
 *        common/pki.c common/err.c $(pkg-config --cflags --libs openssl)
 * Run:   ./fuzz_pki -max_total_time=60 tests/fuzz/corpus_pki
 */
#include "err.h"
#include "pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "tests/fuzz/fuzz_check.h"

static void check_cert(X509 *x)
{
    char fp[PKI_FINGERPRINT_HEX], serial[PKI_SERIAL_HEX], buf[64], why[128];
    pki_cert_fingerprint(x, fp);
    CHECK(strlen(fp) == 64 || fp[0] == 0);
    pki_cert_serial_hex(x, serial);
    CHECK(strlen(serial) >= 2 && strlen(serial) <= 40);
    free(pki_cert_subject(x));
    free(pki_cert_issuer(x));
    int rc = pki_cert_subject_serial(x, buf, sizeof buf);
    CHECK(rc == 0 || rc == REG_ENOTFOUND || rc == REG_ETOOBIG || rc == REG_EINVAL);
    if (rc == 0) CHECK(strlen(buf) < sizeof buf);
    (void)pki_cert_not_before_ms(x);
    (void)pki_cert_not_after_ms(x);
    rc = pki_check_ca(x, 1700000000000LL, why, sizeof why);
    CHECK(rc == 0 || (rc == REG_EINVAL && why[0]));
    CHECK(ERR_peek_error() == 0);
}

static void feed(const char *p, size_t len)
{
    X509 *x = NULL;
    int rc = pki_cert_from_pem(p, len, &x);
    CHECK((rc == 0) == (x != NULL));
    CHECK(rc == 0 || rc == REG_EINVAL || rc == REG_ENOMEM);
    CHECK(ERR_peek_error() == 0);
    if (x) check_cert(x);
    X509_free(x);

    STACK_OF(X509) *sk = NULL;
    rc = pki_certs_from_pem(p, len, &sk);
    CHECK(rc == 0 || rc == REG_EINVAL || rc == REG_ETOOBIG || rc == REG_ENOMEM);
    CHECK((rc == 0) == (sk != NULL));
    if (sk) CHECK(sk_X509_num(sk) >= 1 && sk_X509_num(sk) <= PKI_MAX_CHAIN);
    CHECK(ERR_peek_error() == 0);
    sk_X509_pop_free(sk, X509_free);

    X509_REQ *r = NULL;
    char why[160] = "";
    rc = pki_csr_from_pem(p, len, &r, why, sizeof why);
    CHECK(rc == 0 || ((rc == REG_EINVAL || rc == REG_ENOMEM || rc == REG_ETOOBIG) && !r));
    if (rc == REG_EINVAL) CHECK(why[0]);
    if (r) {
        why[0] = 0;
        rc = pki_csr_check(r, why, sizeof why);
        CHECK(rc == 0 || (rc == REG_EINVAL && why[0]));
        EVP_PKEY *k = pki_csr_pubkey(r);
        if (rc == 0) CHECK(k != NULL);
        EVP_PKEY_free(k);
    }
    CHECK(ERR_peek_error() == 0);
    X509_REQ_free(r);
}

/* The input as the body of a PEM block of that type. */
static void feed_der(const char *type, const uint8_t *data, size_t size)
{
    BIO *b = BIO_new(BIO_s_mem());
    CHECK(b && PEM_write_bio(b, type, "", data, (long)size) > 0);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    feed(p, (size_t)n);
    BIO_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    feed((const char *)data, size);
    if (size > 0) {
        feed_der("CERTIFICATE", data, size);
        feed_der("CERTIFICATE REQUEST", data, size);
    }
    return 0;
}
