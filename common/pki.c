/*
 * pki.c - the registry's X.509 work (pki.h) on OpenSSL 3: P-256 keys and their PEM/DER forms,
 * reading certificates, CSRs and bundles from PEM, the checks a CA or a CSR must pass, issuing
 * device (clientAuth) and server (serverAuth) certificates from the registry's CA, chain
 * verification against a store of registered CAs, and v2 CRLs.
 *
 * Every function is pure over OpenSSL objects. OpenSSL reports failures through its thread-local
 * error queue; each public function reads what it needs from it once (to tell an allocation
 * failure from bad input) and leaves it empty, so a later caller never sees stale errors. Input
 * a client sent (PEM, CSRs) that OpenSSL refuses is REG_EINVAL; a failure of OpenSSL itself while
 * making something from good input is REG_EIO (REG_ENOMEM when it ran out of memory).
 */
#include "pki.h"
#include "err.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

/* ------------------------------------------------------------------------------------------ */
/* errors */

/* Translates whatever OpenSSL queued into one code and empties the queue: an allocation failure
 * anywhere in it is REG_ENOMEM, anything else is `otherwise`. */
static int ossl_error(int otherwise)
{
    unsigned long e;
    int rc = otherwise;
    while ((e = ERR_get_error()) != 0)
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE) rc = REG_ENOMEM;
    return rc;
}

/* REG_EINVAL with a reason for the client; the reason never holds key material. */
static int refuse(char *why, size_t why_cap, const char *fmt, ...)
{
    if (why && why_cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_cap, fmt, ap);
        va_end(ap);
    }
    ERR_clear_error();
    return REG_EINVAL;
}

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static const char hexdig[] = "0123456789abcdef";

/* A read-only memory BIO over caller bytes. NULL (and *rc set) when the text is empty, too big
 * for OpenSSL's int lengths, or the BIO cannot be made. */
static BIO *bio_in(const char *p, size_t len, int *rc)
{
    if (!p || len == 0) {
        *rc = REG_EINVAL;
        return NULL;
    }
    if (len > INT_MAX) {
        *rc = REG_ETOOBIG;
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(p, (int)len);
    if (!b) *rc = ossl_error(REG_ENOMEM);
    return b;
}

/* Copies a memory BIO's contents into a malloc'd NUL-terminated string. */
static int bio_to_string(BIO *b, char **out)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0 || (n > 0 && !data)) return REG_EIO;
    char *s = malloc((size_t)n + 1);
    if (!s) return REG_ENOMEM;
    if (n) memcpy(s, data, (size_t)n);
    s[n] = 0;
    *out = s;
    return 0;
}

/* The PEM readers must never fall back to OpenSSL's default passphrase callback, which prompts
 * on the controlling terminal: an encrypted key is simply refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil), so
 * that certificate times convert without timegm or a 32-bit time_t. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* An ASN1_TIME as Unix ms; `bad` when it does not parse. */
static int64_t asn1_time_ms(const ASN1_TIME *t, int64_t bad)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        ERR_clear_error();
        return bad;
    }
    int64_t days =
        days_from_civil((int64_t)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday);
    return ((days * 24 + tm.tm_hour) * 60 + tm.tm_min) * 60000 + (int64_t)tm.tm_sec * 1000;
}

/* Floor division: a time just before 1970 in ms belongs to the second before, not after. */
static time_t ms_to_time(int64_t ms)
{
    int64_t s = ms / 1000;
    if (ms % 1000 < 0) s--;
    return (time_t)s;
}

/* Sets an ASN1_TIME field (UTCTime through 2049, GeneralizedTime after, as RFC 5280 asks). */
static int set_time(ASN1_TIME *field, int64_t ms)
{
    return ASN1_TIME_set(field, ms_to_time(ms)) ? 0 : -1;
}

/* Serial bytes (big-endian) into the certificate, top bit cleared so the INTEGER is positive. */
static int set_serial(X509 *x, const uint8_t serial[16])
{
    uint8_t b[16];
    memcpy(b, serial, 16);
    b[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(b, 16, NULL);
    ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    int ok = ai && X509_set_serialNumber(x, ai);
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return ok ? 0 : -1;
}

/* One extension from its OpenSSL configuration text (no config database: plain values only). */
static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ext) return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A subject or issuer name entry; CN longer than 64 characters and the like fail here. */
static int name_add(X509_NAME *n, const char *field, const char *value)
{
    return X509_NAME_add_entry_by_txt(n, field, MBSTRING_UTF8, (const unsigned char *)value, -1, -1,
                                      0)
               ? 0
               : -1;
}

/* A certificate with everything but extensions and signature: v3, serial, issuer (from the CA,
 * or itself when ca_cert is NULL), subject CN=cn (after O=org when given, so the RFC 2253 form
 * reads "CN=..,O=.."), validity and public key. REG_EINVAL for a name OpenSSL refuses. */
static int cert_skeleton(X509 *ca_cert, EVP_PKEY *pub, const char *org, const char *cn,
                         const uint8_t serial[16], int64_t nb_ms, int64_t na_ms, X509 **out)
{
    int rc = REG_EIO;
    X509 *x = X509_new();
    X509_NAME *subj = X509_NAME_new();
    if (!x || !subj) goto fail;
    if (!X509_set_version(x, X509_VERSION_3) || set_serial(x, serial) != 0) goto fail;
    if ((org && name_add(subj, "O", org) != 0) || name_add(subj, "CN", cn) != 0) {
        rc = REG_EINVAL;
        goto fail;
    }
    if (!X509_set_subject_name(x, subj)) goto fail;
    if (!X509_set_issuer_name(x, ca_cert ? X509_get_subject_name(ca_cert) : subj)) goto fail;
    if (set_time(X509_getm_notBefore(x), nb_ms) != 0 || set_time(X509_getm_notAfter(x), na_ms) != 0)
        goto fail;
    if (!X509_set_pubkey(x, pub)) goto fail;
    X509_NAME_free(subj);
    *out = x;
    return 0;
fail:
    X509_NAME_free(subj);
    X509_free(x);
    return ossl_error(rc);
}

/* ------------------------------------------------------------------------------------------ */
/* keys */

int pki_key_new_p256(EVP_PKEY **out)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k) return ossl_error(REG_EIO);
    *out = k;
    return 0;
}

int pki_key_to_pem(EVP_PKEY *key, char **out)
{
    /* A secure-memory BIO: its buffer is cleansed when freed (the copy we hand out is the
     * caller's to clear). */
    BIO *b = BIO_new(BIO_s_secmem());
    if (!b) return ossl_error(REG_ENOMEM);
    int rc = 0;
    if (!PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL))
        rc = ossl_error(REG_EINVAL);
    else
        rc = bio_to_string(b, out);
    BIO_free(b);
    return rc;
}

int pki_key_from_pem(const char *pem, size_t len, EVP_PKEY **out)
{
    int rc = 0;
    BIO *b = bio_in(pem, len, &rc);
    if (!b) return rc;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (!k) return ossl_error(REG_EINVAL);
    ERR_clear_error(); /* the decoders may leave notes of the formats they tried */
    *out = k;
    return 0;
}

int pki_key_to_der(EVP_PKEY *key, unsigned char **der, size_t *len)
{
    int rc = REG_EINVAL, n = 0;
    unsigned char *buf = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    if (!p8) goto fail;
    n = i2d_PKCS8_PRIV_KEY_INFO(p8, &buf);
    if (n <= 0) goto fail;
    /* Hand out plain malloc memory (the header promises free()), and clear OpenSSL's copy. */
    unsigned char *copy = malloc((size_t)n);
    if (!copy) {
        rc = REG_ENOMEM;
        goto fail;
    }
    memcpy(copy, buf, (size_t)n);
    OPENSSL_clear_free(buf, (size_t)n);
    PKCS8_PRIV_KEY_INFO_free(p8);
    *der = copy;
    *len = (size_t)n;
    return 0;
fail:
    if (buf) OPENSSL_clear_free(buf, (size_t)n);
    PKCS8_PRIV_KEY_INFO_free(p8);
    return ossl_error(rc);
}

int pki_key_from_der(const unsigned char *der, size_t len, EVP_PKEY **out)
{
    if (!der || len == 0) return REG_EINVAL;
    if (len > LONG_MAX) return REG_ETOOBIG;
    const unsigned char *p = der;
    EVP_PKEY *k = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    /* Trailing bytes mean this is not the DER we wrote. */
    if (p8 && p == der + len) k = EVP_PKCS82PKEY(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (!k) return ossl_error(REG_EINVAL);
    *out = k;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* certificates */

int pki_cert_from_pem(const char *pem, size_t len, X509 **out)
{
    int rc = 0;
    BIO *b = bio_in(pem, len, &rc);
    if (!b) return rc;
    X509 *x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (!x) return ossl_error(REG_EINVAL);
    *out = x;
    return 0;
}

int pki_certs_from_pem(const char *pem, size_t len, STACK_OF(X509) **out)
{
    int rc = 0;
    BIO *b = bio_in(pem, len, &rc);
    if (!b) return rc;
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (!sk) {
        rc = REG_ENOMEM;
        goto fail;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
        if (!x) {
            /* The reader runs out of input as "no start line": the end of the bundle when it
             * found certificates before; anything else (a truncated or corrupt block, no
             * certificate at all) is bad input. */
            unsigned long e = ERR_peek_last_error();
            if (sk_X509_num(sk) > 0 && ERR_GET_LIB(e) == ERR_LIB_PEM &&
                ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
                break;
            rc = REG_EINVAL;
            goto fail;
        }
        if (sk_X509_num(sk) == PKI_MAX_CHAIN) {
            X509_free(x);
            rc = REG_ETOOBIG;
            goto fail;
        }
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            rc = REG_ENOMEM;
            goto fail;
        }
    }
    ERR_clear_error();
    BIO_free(b);
    *out = sk;
    return 0;
fail:
    sk_X509_pop_free(sk, X509_free);
    BIO_free(b);
    return ossl_error(rc);
}

int pki_cert_to_pem(X509 *cert, char **out)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return ossl_error(REG_ENOMEM);
    int rc = PEM_write_bio_X509(b, cert) ? bio_to_string(b, out) : ossl_error(REG_EIO);
    BIO_free(b);
    return rc;
}

void pki_cert_fingerprint(X509 *cert, char out[PKI_FINGERPRINT_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!X509_digest(cert, EVP_sha256(), md, &n) || n != 32) {
        /* Only when out of memory; an empty string never matches a stored fingerprint. */
        ERR_clear_error();
        out[0] = 0;
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hexdig[md[i] >> 4];
        out[2 * i + 1] = hexdig[md[i] & 15];
    }
    out[64] = 0;
}

void pki_cert_serial_hex(X509 *cert, char out[PKI_SERIAL_HEX])
{
    /* The INTEGER's content octets are its magnitude (the sign lives in the type, and RFC 5280
     * serials are positive). A serial longer than the 20 octets RFC 5280 allows is cut to its
     * first 20: such a certificate is non-conforming and only gets an approximate name. */
    const ASN1_INTEGER *ai = X509_get0_serialNumber(cert);
    const unsigned char *p = ai ? ASN1_STRING_get0_data(ai) : NULL;
    int n = ai ? ASN1_STRING_length(ai) : 0;
    while (n > 0 && *p == 0)
        p++, n--;
    if (n <= 0) {
        strcpy(out, "00");
        return;
    }
    if (n > 20) n = 20;
    for (int i = 0; i < n; i++) {
        out[2 * i] = hexdig[p[i] >> 4];
        out[2 * i + 1] = hexdig[p[i] & 15];
    }
    out[2 * n] = 0;
}

/* An unreadable time reads as "never valid": notBefore in the far future, notAfter in the far
 * past, so that no check mistakes a broken certificate for a current one. */
int64_t pki_cert_not_before_ms(X509 *cert)
{
    return asn1_time_ms(X509_get0_notBefore(cert), INT64_MAX);
}

int64_t pki_cert_not_after_ms(X509 *cert)
{
    return asn1_time_ms(X509_get0_notAfter(cert), INT64_MIN);
}

static char *name_line(const X509_NAME *name)
{
    /* RFC 2253 but with UTF-8 left as it is rather than escaped byte by byte. */
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
        bio_to_string(b, &s) != 0)
        s = NULL;
    BIO_free(b);
    ERR_clear_error();
    return s;
}

char *pki_cert_subject(X509 *cert)
{
    return name_line(X509_get_subject_name(cert));
}

char *pki_cert_issuer(X509 *cert)
{
    return name_line(X509_get_issuer_name(cert));
}

/* The last entry of that type in the subject (the most specific one when a name repeats it)
 * as UTF-8. REG_ENOTFOUND when there is none or it is empty; REG_EINVAL when it holds a NUL (it
 * would read as a different, shorter value). */
static int name_attr(X509 *cert, int nid, char *out, size_t cap)
{
    const X509_NAME *name = X509_get_subject_name(cert);
    int idx = -1, i = -1;
    while ((i = X509_NAME_get_index_by_NID(name, nid, i)) >= 0)
        idx = i;
    if (idx < 0) return REG_ENOTFOUND;
    const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, v);
    if (n < 0) return ossl_error(REG_EINVAL);
    int rc = 0;
    if (n == 0)
        rc = REG_ENOTFOUND;
    else if (memchr(utf8, 0, (size_t)n))
        rc = REG_EINVAL;
    else if ((size_t)n + 1 > cap)
        rc = REG_ETOOBIG;
    else {
        memcpy(out, utf8, (size_t)n);
        out[n] = 0;
    }
    OPENSSL_free(utf8);
    return rc;
}

int pki_cert_subject_serial(X509 *cert, char *out, size_t cap)
{
    int rc = name_attr(cert, NID_serialNumber, out, cap);
    return rc == REG_ENOTFOUND ? name_attr(cert, NID_commonName, out, cap) : rc;
}

int pki_cert_subject_cn(X509 *cert, char *out, size_t cap)
{
    return name_attr(cert, NID_commonName, out, cap);
}

int pki_check_ca(X509 *cert, int64_t now_ms, char *why, size_t why_cap)
{
    /* The extension flags come from OpenSSL's one parse of the extensions; EXFLAG_INVALID
     * covers a malformed or repeated extension. */
    uint32_t flags = X509_get_extension_flags(cert);
    if (flags & EXFLAG_INVALID) return refuse(why, why_cap, "certificate has invalid extensions");
    if (!(flags & EXFLAG_BCONS) || !(flags & EXFLAG_CA))
        return refuse(why, why_cap, "certificate is not a CA (basicConstraints CA:TRUE missing)");
    if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN))
        return refuse(why, why_cap, "CA keyUsage lacks keyCertSign");
    if (!X509_get0_pubkey(cert)) return refuse(why, why_cap, "CA public key is not usable");
    /* Self-signed means: subject equals issuer and the key ids (if any) agree. Such a
     * certificate must verify under its own key; one issued by another CA is checked when a
     * chain is verified. */
    int ss = X509_self_signed(cert, 0);
    if (ss < 0) return refuse(why, why_cap, "CA certificate is malformed");
    if (ss == 1 && X509_self_signed(cert, 1) != 1)
        return refuse(why, why_cap, "self-signed CA signature does not verify");
    /* A CA made a moment ago on a machine whose clock runs a little ahead is still acceptable. */
    if (pki_cert_not_before_ms(cert) > now_ms + PKI_CLOCK_SKEW_MS)
        return refuse(why, why_cap, "CA certificate is not yet valid");
    if (pki_cert_not_after_ms(cert) < now_ms)
        return refuse(why, why_cap, "CA certificate has expired");
    ERR_clear_error();
    return 0;
}

int pki_ca_new(const char *cn, const char *org, int days, int64_t now_ms, EVP_PKEY **key_out,
               X509 **cert_out)
{
    if (!cn || !*cn || days <= 0) return REG_EINVAL;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    uint8_t serial[16];
    int rc = pki_key_new_p256(&key);
    if (rc) return rc;
    if (RAND_bytes(serial, sizeof serial) != 1) {
        rc = REG_EIO;
        goto fail;
    }
    int64_t nb = now_ms - 3600 * 1000LL, na = now_ms + (int64_t)days * 86400000LL;
    rc = cert_skeleton(NULL, key, org, cn, serial, nb, na, &x);
    if (rc) goto fail;
    rc = REG_EIO;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
        add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
        add_ext(x, &ctx, NID_subject_key_identifier, "hash") != 0)
        goto fail;
    if (!X509_sign(x, key, EVP_sha256())) goto fail;
    *key_out = key;
    *cert_out = x;
    return 0;
fail:
    X509_free(x);
    EVP_PKEY_free(key);
    return ossl_error(rc);
}

/* ------------------------------------------------------------------------------------------ */
/* CSRs */

int pki_csr_from_pem(const char *pem, size_t len, X509_REQ **out, char *why, size_t why_cap)
{
    int rc = 0;
    BIO *b = bio_in(pem, len, &rc);
    if (!b) {
        if (rc == REG_EINVAL) return refuse(why, why_cap, "empty CSR");
        if (rc == REG_ETOOBIG) refuse(why, why_cap, "CSR too large");
        return rc;
    }
    /* Takes "CERTIFICATE REQUEST" and the older "NEW CERTIFICATE REQUEST" alike. */
    X509_REQ *r = PEM_read_bio_X509_REQ(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (!r) {
        rc = ossl_error(REG_EINVAL);
        if (rc == REG_EINVAL) return refuse(why, why_cap, "malformed CSR (expected PEM)");
        return rc;
    }
    *out = r;
    return 0;
}

int pki_csr_check(X509_REQ *csr, char *why, size_t why_cap)
{
    EVP_PKEY *pk = X509_REQ_get0_pubkey(csr);
    if (!pk) return refuse(why, why_cap, "CSR public key is missing or not supported");
    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_ED25519:
        break;
    case EVP_PKEY_EC: {
        /* Named curves only: a key with explicit parameters has no group name. */
        char group[64];
        size_t glen = 0;
        if (!EVP_PKEY_get_group_name(pk, group, sizeof group, &glen))
            return refuse(why, why_cap, "CSR EC key does not use a named curve");
        int nid = OBJ_txt2nid(group);
        if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1)
            return refuse(why, why_cap, "CSR EC curve %s not accepted (P-256 or P-384)", group);
        break;
    }
    case EVP_PKEY_RSA: {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits < 2048)
            return refuse(why, why_cap, "CSR RSA key of %d bits is too small (at least 2048)",
                          bits);
        break;
    }
    default:
        return refuse(why, why_cap,
                      "CSR key type not accepted (ECDSA P-256/P-384, Ed25519 or RSA >= 2048)");
    }
    /* Proof of possession: the requester signed the request with the key's private half. */
    if (X509_REQ_verify(csr, pk) != 1) return refuse(why, why_cap, "CSR signature does not verify");
    ERR_clear_error();
    return 0;
}

EVP_PKEY *pki_csr_pubkey(X509_REQ *csr)
{
    EVP_PKEY *k = X509_REQ_get_pubkey(csr);
    ERR_clear_error();
    return k;
}

/* ------------------------------------------------------------------------------------------ */
/* issuing */

/* What both kinds of end-entity certificate share: the CA key must match the CA certificate
 * (a mismatch would yield certificates nobody can verify), the CA:FALSE and keyUsage
 * extensions, and the key identifiers. The AKI is "keyid:always": the issuing CA is the
 * registry's own, which always carries a subject key id. */
static int check_issuer(X509 *ca_cert, EVP_PKEY *ca_key, EVP_PKEY *pub, const char *cn)
{
    if (!ca_cert || !ca_key || !pub || !cn || !*cn) return REG_EINVAL;
    if (X509_check_private_key(ca_cert, ca_key) != 1) return ossl_error(REG_EINVAL);
    return 0;
}

static int add_leaf_exts(X509 *x, X509V3_CTX *ctx, EVP_PKEY *pub, const char *eku)
{
    /* keyEncipherment is meaningful only for RSA (TLS key transport). */
    const char *ku = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA
                         ? "critical,digitalSignature,keyEncipherment"
                         : "critical,digitalSignature";
    if (add_ext(x, ctx, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_ext(x, ctx, NID_key_usage, ku) != 0 || add_ext(x, ctx, NID_ext_key_usage, eku) != 0 ||
        add_ext(x, ctx, NID_subject_key_identifier, "hash") != 0 ||
        add_ext(x, ctx, NID_authority_key_identifier, "keyid:always") != 0)
        return -1;
    return 0;
}

int pki_issue_client(X509 *ca_cert, EVP_PKEY *ca_key, EVP_PKEY *pub, const char *cn,
                     const uint8_t serial[16], int64_t not_before_ms, int64_t not_after_ms,
                     X509 **out)
{
    int rc = check_issuer(ca_cert, ca_key, pub, cn);
    if (rc) return rc;
    if (not_after_ms < not_before_ms) return REG_EINVAL;
    X509 *x = NULL;
    rc = cert_skeleton(ca_cert, pub, NULL, cn, serial, not_before_ms, not_after_ms, &x);
    if (rc) return rc;
    rc = REG_EIO;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca_cert, x, NULL, NULL, 0);
    if (add_leaf_exts(x, &ctx, pub, "clientAuth") != 0) goto fail;
    if (!X509_sign(x, ca_key, EVP_sha256())) goto fail;
    *out = x;
    return 0;
fail:
    X509_free(x);
    return ossl_error(rc);
}

/* A DNS name we are willing to put in a subjectAltName: letters, digits, '-', '.', and a
 * leading "*." wildcard, at most 253 characters. */
static int dns_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 253) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.')
            continue;
        if (c == '*' && i == 0 && s[1] == '.') continue;
        return 0;
    }
    return 1;
}

static int san_push(GENERAL_NAMES *gens, GENERAL_NAME *g)
{
    if (!g) return -1;
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return -1;
    }
    return 0;
}

static GENERAL_NAME *san_dns(const char *name)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!g || !s || !ASN1_STRING_set(s, name, -1)) {
        GENERAL_NAME_free(g);
        ASN1_IA5STRING_free(s);
        return NULL;
    }
    GENERAL_NAME_set0_value(g, GEN_DNS, s);
    return g;
}

static GENERAL_NAME *san_ip(const char *ip)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_OCTET_STRING *o = a2i_IPADDRESS(ip);
    if (!g || !o) {
        GENERAL_NAME_free(g);
        ASN1_OCTET_STRING_free(o);
        return NULL;
    }
    GENERAL_NAME_set0_value(g, GEN_IPADD, o);
    return g;
}

int pki_issue_server(X509 *ca_cert, EVP_PKEY *ca_key, EVP_PKEY *pub, const char *cn,
                     const char *const *extra_dns, size_t n_extra, int days, int64_t now_ms,
                     X509 **out)
{
    int rc = check_issuer(ca_cert, ca_key, pub, cn);
    if (rc) return rc;
    if (days <= 0 || (n_extra && !extra_dns)) return REG_EINVAL;
    /* The names go in through the structures, not a configuration string, so a name with a
     * comma cannot smuggle in another entry; still, refuse what is not a host name. */
    for (size_t i = 0; i < n_extra; i++)
        if (!dns_name_ok(extra_dns[i])) return REG_EINVAL;
    X509 *x = NULL;
    GENERAL_NAMES *gens = NULL;
    uint8_t serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1) return ossl_error(REG_EIO);
    /* Back-dated an hour like the CA, for clients whose clocks run a little behind. */
    rc = cert_skeleton(ca_cert, pub, NULL, cn, serial, now_ms - 3600 * 1000LL,
                       now_ms + (int64_t)days * 86400000LL, &x);
    if (rc) return rc;
    rc = REG_EIO;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca_cert, x, NULL, NULL, 0);
    if (add_leaf_exts(x, &ctx, pub, "serverAuth") != 0) goto fail;
    gens = sk_GENERAL_NAME_new_null();
    if (!gens || san_push(gens, san_dns("localhost")) != 0 ||
        san_push(gens, san_ip("127.0.0.1")) != 0 || san_push(gens, san_ip("::1")) != 0)
        goto fail;
    for (size_t i = 0; i < n_extra; i++)
        if (san_push(gens, san_dns(extra_dns[i])) != 0) goto fail;
    if (!X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT)) goto fail;
    if (!X509_sign(x, ca_key, EVP_sha256())) goto fail;
    GENERAL_NAMES_free(gens);
    *out = x;
    return 0;
fail:
    GENERAL_NAMES_free(gens);
    X509_free(x);
    return ossl_error(rc);
}

/* ------------------------------------------------------------------------------------------ */
/* verifying */

int pki_store_new(X509 *const *cas, size_t n, X509_STORE **out)
{
    X509_STORE *st = X509_STORE_new();
    if (!st) return ossl_error(REG_ENOMEM);
    for (size_t i = 0; i < n; i++) {
        /* Adding a certificate already there succeeds (OpenSSL >= 1.1.1). */
        if (!X509_STORE_add_cert(st, cas[i])) {
            X509_STORE_free(st);
            return ossl_error(REG_EIO);
        }
    }
    *out = st;
    return 0;
}

int pki_verify(X509_STORE *store, X509 *leaf, STACK_OF(X509) *untrusted, int64_t now_ms,
               X509 **anchor_out, char *why, size_t why_cap)
{
    int rc;
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (!ctx || !X509_STORE_CTX_init(ctx, store, leaf, untrusted)) {
        rc = ossl_error(REG_ENOMEM);
        goto fail;
    }
    /* No purpose is set, so no extendedKeyUsage is required of factory certificates; no
     * X509_V_FLAG_X509_STRICT either, which refuses some certificates the openssl CLI makes.
     * set_time turns on X509_V_FLAG_USE_CHECK_TIME. */
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), ms_to_time(now_ms));
    int ok = X509_verify_cert(ctx);
    if (ok != 1) {
        int err = X509_STORE_CTX_get_error(ctx);
        rc = refuse(why, why_cap, "%s",
                    ok < 0 && err == X509_V_OK ? "verification failed"
                                               : X509_verify_cert_error_string(err));
        goto fail;
    }
    if (anchor_out) {
        STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
        int n = chain ? sk_X509_num(chain) : 0;
        X509 *a = n > 0 ? sk_X509_value(chain, n - 1) : NULL;
        if (!a || !X509_up_ref(a)) {
            rc = ossl_error(REG_EIO);
            goto fail;
        }
        *anchor_out = a;
    }
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return 0;
fail:
    X509_STORE_CTX_free(ctx);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* CRLs */

/* A serial from hex (either case, 1..40 digits) as an ASN1_INTEGER; NULL when malformed. */
static ASN1_INTEGER *serial_from_hex(const char *hex)
{
    size_t n = hex ? strlen(hex) : 0;
    if (n == 0 || n > 40) return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return NULL;
    }
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    if (BN_hex2bn(&bn, hex) == (int)n) ai = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    return ai;
}

int pki_crl_new(X509 *ca_cert, EVP_PKEY *ca_key, const pki_revoked *entries, size_t n,
                int64_t crl_number, int64_t this_update_ms, int64_t next_update_ms, char **pem_out)
{
    if (!ca_cert || !ca_key || (n && !entries) || crl_number < 0 || next_update_ms < this_update_ms)
        return REG_EINVAL;
    if (X509_check_private_key(ca_cert, ca_key) != 1) return ossl_error(REG_EINVAL);
    int rc = REG_EIO;
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = ASN1_TIME_new();
    ASN1_INTEGER *num = ASN1_INTEGER_new();
    X509_EXTENSION *aki = NULL;
    BIO *b = NULL;
    if (!crl || !t || !num) goto fail;
    if (!X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
        !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca_cert)))
        goto fail;
    if (set_time(t, this_update_ms) != 0 || !X509_CRL_set1_lastUpdate(crl, t)) goto fail;
    if (set_time(t, next_update_ms) != 0 || !X509_CRL_set1_nextUpdate(crl, t)) goto fail;
    for (size_t i = 0; i < n; i++) {
        ASN1_INTEGER *serial = serial_from_hex(entries[i].serial_hex);
        if (!serial) {
            rc = REG_EINVAL;
            goto fail;
        }
        X509_REVOKED *r = X509_REVOKED_new();
        int ok = r && X509_REVOKED_set_serialNumber(r, serial) &&
                 set_time(t, entries[i].revoked_ms) == 0 && X509_REVOKED_set_revocationDate(r, t);
        ASN1_INTEGER_free(serial);
        if (!ok || !X509_CRL_add0_revoked(crl, r)) {
            X509_REVOKED_free(r);
            goto fail;
        }
    }
    /* Entries in serial order, as relying parties binary-search them. */
    if (!X509_CRL_sort(crl)) goto fail;
    if (!ASN1_INTEGER_set_int64(num, crl_number) ||
        !X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0))
        goto fail;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca_cert, NULL, NULL, crl, 0);
    aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
    if (!aki || !X509_CRL_add_ext(crl, aki, -1)) goto fail;
    if (!X509_CRL_sign(crl, ca_key, EVP_sha256())) goto fail;
    b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_X509_CRL(b, crl)) goto fail;
    rc = bio_to_string(b, pem_out);
    if (rc) goto fail;
    BIO_free(b);
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(num);
    ASN1_TIME_free(t);
    X509_CRL_free(crl);
    ERR_clear_error();
    return 0;
fail:
    BIO_free(b);
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(num);
    ASN1_TIME_free(t);
    X509_CRL_free(crl);
    return ossl_error(rc);
}
