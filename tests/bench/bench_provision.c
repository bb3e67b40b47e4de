/*
 * bench_provision.c - zero-touch bootstraps per second, end to end: for each device a TCP
 * connect, a mutual-TLS handshake with its factory certificate, POST /devices/provision with its
 * serial and a CSR, and the registry's answer (CSR checked, certificate signed, command decided,
 * events appended and committed) with a 201.
 *
 *   bench_provision HOST PORT SERVER_CA FACTORY_CA_PEM FACTORY_CA_KEY PREFIX N THREADS [OUT_DIR]
 *
 * Serials are PREFIX000000 .. PREFIX(N-1), which must be in the tenant's manifest and the factory
 * CA registered (tests/bench/bench_provision.sh prepares both). Every device's factory certificate
 * (CN = serial, signed by the factory CA) and CSR (ECDSA P-256) are made before the clock starts.
 * Prints: provisions=N seconds=S per_sec=X errors=E. With OUT_DIR, each device's operational
 * certificate and key are written there, and OUT_DIR/devices.txt lists "device_id cert key" per
 * line (what bench_mqtt reads).
 */
#define _GNU_SOURCE
#include "pki.h"

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct device {
    X509 *cert;
    EVP_PKEY *key;
    EVP_PKEY *csr_key; /* the operational key */
    char *request;     /* the whole HTTP request */
    char *answer;      /* the 201's body, when kept */
} device;

static const char *out_dir;

static device *devices;
static size_t ndevices;
static atomic_size_t next_device;
static atomic_ulong ok_count, error_count;
static SSL_CTX *ctx;
static struct addrinfo *addr;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *json_escape(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 3), *p = out;
    *p++ = '"';
    for (; *s; s++) {
        if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else {
            *p++ = *s;
        }
    }
    *p++ = '"';
    *p = 0;
    return out;
}

static int make_device(X509 *ca, EVP_PKEY *ca_key, const char *serial, device *d)
{
    EVP_PKEY *csr_key = NULL;
    X509_REQ *req = X509_REQ_new();
    uint8_t sn[16];
    RAND_bytes(sn, sizeof sn);
    int64_t now = (int64_t)time(NULL) * 1000;
    if (pki_key_new_p256(&d->key) || pki_key_new_p256(&csr_key) ||
        pki_issue_client(ca, ca_key, d->key, serial, sn, now - 3600000, now + 86400000, &d->cert))
        return -1;
    X509_REQ_set_version(req, 0);
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_ASC,
                               (const unsigned char *)serial, -1, -1, 0);
    X509_REQ_set_pubkey(req, csr_key);
    X509_REQ_sign(req, csr_key, EVP_sha256());
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(b, req);
    char *pem;
    long n = BIO_get_mem_data(b, &pem);
    char *pem0 = strndup(pem, (size_t)n), *esc = json_escape(pem0);
    char body[8192];
    int blen = snprintf(body, sizeof body, "{\"serial_number\":\"%s\",\"csr\":%s}", serial, esc);
    if (asprintf(&d->request,
                 "POST /devices/provision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                 blen, body) < 0)
        return -1;
    free(esc);
    free(pem0);
    BIO_free(b);
    X509_REQ_free(req);
    d->csr_key = csr_key;
    return 0;
}

/* Reads the whole answer; true on 201. With OUT_DIR the body is kept in d->answer. */
static bool answer_201(SSL *ssl, device *d)
{
    char buf[16384];
    size_t len = 0;
    for (;;) {
        int n = SSL_read(ssl, buf + len, (int)(sizeof buf - 1 - len));
        if (n <= 0) break;
        len += (size_t)n;
        if (len == sizeof buf - 1) len = 64; /* keep the status line, drop the rest */
    }
    buf[len] = 0;
    int status = 0;
    bool ok = sscanf(buf, "HTTP/1.%*d %d", &status) == 1 && status == 201;
    char *body = strstr(buf, "\r\n\r\n");
    if (ok && out_dir && body) d->answer = strdup(body + 4);
    return ok;
}

/* Writes the device's operational certificate and key, and its devices.txt line. */
static void save_device(device *d, FILE *list, size_t i)
{
    json_t *j = d->answer ? json_loads(d->answer, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(j, "device_id"));
    const char *pem = json_string_value(json_object_get(j, "certificate_pem"));
    if (id && pem) {
        char cert[4096], key[4096];
        snprintf(cert, sizeof cert, "%s/d%zu.pem", out_dir, i);
        snprintf(key, sizeof key, "%s/d%zu.key", out_dir, i);
        FILE *c = fopen(cert, "w"), *k = fopen(key, "w");
        if (c && k) {
            fputs(pem, c);
            PEM_write_PrivateKey(k, d->csr_key, NULL, NULL, 0, NULL, NULL);
            fprintf(list, "%s %s %s\n", id, cert, key);
        }
        if (c) fclose(c);
        if (k) fclose(k);
    }
    json_decref(j);
}

static void *run(void *arg)
{
    for (;;) {
        size_t i = atomic_fetch_add(&next_device, 1);
        if (i >= ndevices) break;
        device *d = &devices[i];
        bool ok = false;
        int fd = socket(addr->ai_family, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fd >= 0 && connect(fd, addr->ai_addr, addr->ai_addrlen) == 0) {
            SSL *ssl = SSL_new(ctx);
            SSL_use_certificate(ssl, d->cert);
            SSL_use_PrivateKey(ssl, d->key);
            SSL_set_fd(ssl, fd);
            size_t rl = strlen(d->request);
            if (SSL_connect(ssl) == 1 && SSL_write(ssl, d->request, (int)rl) == (int)rl)
                ok = answer_201(ssl, d);
            SSL_shutdown(ssl);
            SSL_free(ssl);
        }
        if (fd >= 0) close(fd);
        ERR_clear_error();
        atomic_fetch_add(ok ? &ok_count : &error_count, 1);
    }
    return NULL;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 9 && argc != 10) {
        fprintf(stderr, "usage: bench_provision HOST PORT SERVER_CA FACTORY_CA_PEM FACTORY_CA_KEY "
                        "PREFIX N THREADS [OUT_DIR]\n");
        return 2;
    }
    out_dir = argc == 10 ? argv[9] : NULL;
    ndevices = strtoul(argv[7], NULL, 10);
    int threads = atoi(argv[8]);
    char *ca_pem = slurp(argv[4]), *key_pem = slurp(argv[5]);
    X509 *ca = NULL;
    EVP_PKEY *ca_key = NULL;
    if (!ca_pem || !key_pem || pki_cert_from_pem(ca_pem, strlen(ca_pem), &ca) ||
        pki_key_from_pem(key_pem, strlen(key_pem), &ca_key)) {
        fprintf(stderr, "bench_provision: cannot read the factory CA\n");
        return 1;
    }
    devices = calloc(ndevices, sizeof *devices);
    for (size_t i = 0; i < ndevices; i++) {
        char serial[64];
        snprintf(serial, sizeof serial, "%s%06zu", argv[6], i);
        if (make_device(ca, ca_key, serial, &devices[i])) {
            fprintf(stderr, "bench_provision: cannot make device %zu\n", i);
            return 1;
        }
    }
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, argv[3], NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    if (getaddrinfo(argv[1], argv[2], &hints, &addr)) {
        fprintf(stderr, "bench_provision: cannot resolve %s\n", argv[1]);
        return 1;
    }
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    double start = now_s();
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, run, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double secs = now_s() - start;
    printf("provisions=%lu seconds=%.2f per_sec=%.0f errors=%lu\n", atomic_load(&ok_count), secs,
           (double)atomic_load(&ok_count) / secs, atomic_load(&error_count));
    FILE *list = NULL;
    if (out_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/devices.txt", out_dir);
        list = fopen(path, "w");
    }
    for (size_t i = 0; i < ndevices; i++) {
        if (list) save_device(&devices[i], list, i);
        X509_free(devices[i].cert);
        EVP_PKEY_free(devices[i].key);
        EVP_PKEY_free(devices[i].csr_key);
        free(devices[i].request);
        free(devices[i].answer);
    }
    if (list) fclose(list);
    free(devices);
    free(t);
    free(ca_pem);
    free(key_pem);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    SSL_CTX_free(ctx);
    freeaddrinfo(addr);
    return 0;
}
