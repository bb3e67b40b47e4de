/*
 * pki.h - the X.509 work of the registry on OpenSSL 3: making CAs and keys, reading and checking
 * certificates and CSRs, issuing device and server certificates, verifying chains, and signing
 * CRLs. Pure functions over OpenSSL objects: no I/O, no logging, no global state.
 *
 * Errors are REG_E* codes (err.h). Where a caller must tell a client why its input was refused,
 * the function also writes a short English reason into `why` (never key material).
 *
 * Ownership: functions named *_new or taking `**out` hand a new reference to the caller, who frees
 * it with the OpenSSL free function (EVP_PKEY_free, X509_free, X509_REQ_free,
 * sk_X509_pop_free(sk, X509_free); OSSL_STACK_OF_X509_free exists only from OpenSSL 3.2). Strings
 * returned through `char **` are malloc'd and NUL-terminated; the caller frees them. Arguments are
 * borrowed.
 */
#ifndef REG_PKI_H
#define REG_PKI_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define PKI_FINGERPRINT_HEX 65 /* SHA-256 hex + NUL */
#define PKI_SERIAL_HEX 41      /* up to 20 bytes of serial as hex + NUL */

/* How far in the future a CA's notBefore may be when it is registered (clocks differ). */
#define PKI_CLOCK_SKEW_MS (5 * 60 * 1000)

/* Upper bounds on parsed input (a PEM bundle holding more certificates is refused). */
#define PKI_MAX_CHAIN 8

/* ---- keys ---- */

/* A new ECDSA P-256 key pair. */
int pki_key_new_p256(EVP_PKEY **out);
/* The private key as PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"). */
int pki_key_to_pem(EVP_PKEY *key, char **out);
/* Private key from PEM (PKCS#8 or traditional). REG_EINVAL when malformed. */
int pki_key_from_pem(const char *pem, size_t len, EVP_PKEY **out);
/* Private key as DER PKCS#8 / from DER (for the keystore). *der is malloc'd. */
int pki_key_to_der(EVP_PKEY *key, unsigned char **der, size_t *len);
int pki_key_from_der(const unsigned char *der, size_t len, EVP_PKEY **out);

/* ---- certificates ---- */

/* The first certificate in a PEM text. REG_EINVAL when there is none or it is malformed. */
int pki_cert_from_pem(const char *pem, size_t len, X509 **out);
/* Every certificate in a PEM text, in order (at most PKI_MAX_CHAIN; more is REG_ETOOBIG). */
int pki_certs_from_pem(const char *pem, size_t len, STACK_OF(X509) **out);
int pki_cert_to_pem(X509 *cert, char **out);
/* Lower-case hex SHA-256 of the DER encoding. */
void pki_cert_fingerprint(X509 *cert, char out[PKI_FINGERPRINT_HEX]);
/* The serial number as lower-case hex without leading zero bytes ("00" for zero). */
void pki_cert_serial_hex(X509 *cert, char out[PKI_SERIAL_HEX]);
/* notBefore / notAfter as Unix milliseconds. */
int64_t pki_cert_not_before_ms(X509 *cert);
int64_t pki_cert_not_after_ms(X509 *cert);
/* The subject (or issuer) as one RFC 2253 line, e.g. "CN=Acme Factory CA,O=Acme". */
char *pki_cert_subject(X509 *cert);
char *pki_cert_issuer(X509 *cert);
/* The subject's serialNumber attribute when present, else its CN, copied into out.
 * REG_ENOTFOUND when it has neither, REG_ETOOBIG when it does not fit. */
int pki_cert_subject_serial(X509 *cert, char *out, size_t cap);
/* The subject's CN copied into out (REG_ENOTFOUND / REG_ETOOBIG as above). */
int pki_cert_subject_cn(X509 *cert, char *out, size_t cap);

/* Accepts a certificate as a CA that may issue device certificates: basicConstraints CA:TRUE,
 * keyUsage (when present) includes keyCertSign, self-consistent signature when self-signed, and
 * valid at now_ms (a notBefore up to PKI_CLOCK_SKEW_MS ahead is tolerated). REG_EINVAL with a
 * reason otherwise. */
int pki_check_ca(X509 *cert, int64_t now_ms, char *why, size_t why_cap);

/* A new self-signed CA: subject CN=cn (and O=org when org is not NULL), ECDSA P-256 key,
 * SHA-256, random 16-byte positive serial, valid from now_ms - 1 h for `days` days,
 * basicConstraints CA:TRUE (critical), keyUsage keyCertSign+cRLSign (critical), subject key id. */
int pki_ca_new(const char *cn, const char *org, int days, int64_t now_ms, EVP_PKEY **key_out,
               X509 **cert_out);

/* ---- CSRs ---- */

/* A CSR from PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST"). REG_EINVAL when
 * malformed (and why says so). */
int pki_csr_from_pem(const char *pem, size_t len, X509_REQ **out, char *why, size_t why_cap);
/* Proof of possession and key policy: the CSR's signature verifies with its own public key, and
 * the key is ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits. REG_EINVAL with a
 * reason otherwise. */
int pki_csr_check(X509_REQ *csr, char *why, size_t why_cap);
/* The CSR's public key (a new reference). */
EVP_PKEY *pki_csr_pubkey(X509_REQ *csr);

/* ---- issuing ---- */

/* A device's operational certificate: subject CN=cn, the given public key, issuer and signature
 * from the CA (SHA-256; the CA key is ECDSA), serial = the 16 given bytes (the caller makes them
 * random; the top bit is cleared to keep it positive), validity [not_before_ms, not_after_ms],
 * basicConstraints CA:FALSE (critical), keyUsage digitalSignature (critical; plus
 * keyEncipherment for RSA keys), extendedKeyUsage clientAuth, subject and authority key ids. */
int pki_issue_client(X509 *ca_cert, EVP_PKEY *ca_key, EVP_PKEY *pub, const char *cn,
                     const uint8_t serial[16], int64_t not_before_ms, int64_t not_after_ms,
                     X509 **out);
/* A TLS server certificate: CN=cn, subjectAltName DNS:localhost, IP:127.0.0.1, IP:::1 and each
 * of extra_dns (may be NULL/0), extendedKeyUsage serverAuth, random serial, `days` validity. */
int pki_issue_server(X509 *ca_cert, EVP_PKEY *ca_key, EVP_PKEY *pub, const char *cn,
                     const char *const *extra_dns, size_t n_extra, int days, int64_t now_ms,
                     X509 **out);

/* ---- verifying ---- */

/* A trust store holding the given CA certificates (each X509_STORE_add_cert; duplicates are
 * fine). */
int pki_store_new(X509 *const *cas, size_t n, X509_STORE **out);
/* Verifies leaf (with the untrusted intermediates, may be NULL) against store at time now_ms
 * (X509_V_FLAG_USE_CHECK_TIME; no CRL checks: revocation is the registry's own business).
 * On success *anchor_out (when not NULL) gets a new reference to the trust anchor the chain
 * ended at. REG_EINVAL with OpenSSL's reason ("certificate has expired", "unable to get local
 * issuer certificate") otherwise. */
int pki_verify(X509_STORE *store, X509 *leaf, STACK_OF(X509) *untrusted, int64_t now_ms,
               X509 **anchor_out, char *why, size_t why_cap);

/* ---- CRLs ---- */

typedef struct pki_revoked {
    const char *serial_hex; /* as pki_cert_serial_hex gives it */
    int64_t revoked_ms;
} pki_revoked;

/* A v2 CRL signed by the CA (SHA-256): the entries given, lastUpdate this_update_ms,
 * nextUpdate next_update_ms, a cRLNumber extension, authority key id. PEM into *pem_out. */
int pki_crl_new(X509 *ca_cert, EVP_PKEY *ca_key, const pki_revoked *entries, size_t n,
                int64_t crl_number, int64_t this_update_ms, int64_t next_update_ms, char **pem_out);

#endif
