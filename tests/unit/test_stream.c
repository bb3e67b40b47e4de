/*
 * test_stream.c - unit tests of common/stream.c over real loopback sockets.
 *
 * The loop runs on the test's thread; each client runs on a second thread with blocking sockets
 * (OpenSSL for TLS, 5 s timeouts) and stops the loop through a uv_async_t when done. The server
 * side is a small echo protocol whose commands exercise the layer: "fp?" answers the client
 * certificate's fingerprint, "hold" is not consumed at first and the stream is paused, then
 * resumed from a timer (the held input must be handed over again), "kill" closes every stream of
 * that certificate with stream_listener_close_peer, anything else is echoed. Certificates are
 * made in-test with common/pki.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "http_server.h"
#include "pki.h"
#include "stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

typedef struct fixture {
    uv_loop_t loop;
    uv_async_t done;
    uv_timer_t resume;
    stream_listener *l;
    stream *held;
    SSL_CTX *server_ctx;
    char *ca_pem, *client_pem, *client_key_pem;
    char client_fp[PKI_FINGERPRINT_HEX];
    int port;
    void (*client)(struct fixture *);
    stream_stats stats; /* the listener's, when the client was done */
    int result;         /* set by the client: 0 when every check passed */
    char detail[256];
} fixture;

/* ---- the server side ---- */

static void on_open(void *app, stream *s) {}

static void on_resume(uv_timer_t *t)
{
    fixture *f = t->data;
    if (f->held) stream_resume(f->held);
    f->held = NULL;
}

static size_t on_data(void *app, stream *s, const char *data, size_t len)
{
    fixture *f = app;
    if (len >= 3 && !memcmp(data, "fp?", 3)) {
        const char *fp = stream_peer_fingerprint(s);
        stream_write(s, fp ? fp : "none", fp ? strlen(fp) : 4);
        return len;
    }
    if (len >= 4 && !memcmp(data, "hold", 4) && !stream_data(s)) {
        stream_set_data(s, s); /* once */
        stream_pause(s);
        f->held = s;
        uv_timer_start(&f->resume, on_resume, 50, 0);
        return 0;
    }
    if (len >= 4 && !memcmp(data, "kill", 4)) {
        stream_listener_close_peer(f->l, stream_peer_fingerprint(s));
        return len;
    }
    stream_write(s, data, len);
    return len;
}

static void on_close(void *app, stream *s) {}

static void on_done(uv_async_t *a)
{
    fixture *f = a->data;
    stream_listener_stats(f->l, &f->stats);
    stream_listener_close(f->l);
    uv_close((uv_handle_t *)&f->done, NULL);
    uv_close((uv_handle_t *)&f->resume, NULL);
}

/* ---- the client side ---- */

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* max_version 0: TLS 1.3. */
static SSL *tls_connect_version(fixture *f, int fd, bool with_cert, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (max_version) SSL_CTX_set_max_proto_version(ctx, max_version);
    BIO *b = BIO_new_mem_buf(f->ca_pem, -1);
    X509 *ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca);
    X509_free(ca);
    BIO_free(b);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (with_cert) {
        X509 *c = NULL;
        EVP_PKEY *k = NULL;
        pki_cert_from_pem(f->client_pem, strlen(f->client_pem), &c);
        pki_key_from_pem(f->client_key_pem, strlen(f->client_key_pem), &k);
        SSL_CTX_use_certificate(ctx, c);
        SSL_CTX_use_PrivateKey(ctx, k);
        X509_free(c);
        EVP_PKEY_free(k);
    }
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL keeps a reference */
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

static SSL *tls_connect(fixture *f, int fd, bool with_cert)
{
    return tls_connect_version(f, fd, with_cert, 0);
}

/* Sends len bytes and reads as many back (the echo). */
static bool tls_echo_big(SSL *ssl, size_t len)
{
    char *out = malloc(len), *in = malloc(len);
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(i * 7);
    bool ok = SSL_write(ssl, out, (int)len) == (int)len;
    size_t got = 0;
    while (ok && got < len) {
        int n = SSL_read(ssl, in + got, (int)(len - got));
        ok = n > 0;
        got += ok ? (size_t)n : 0;
    }
    ok = ok && !memcmp(in, out, len);
    free(out);
    free(in);
    return ok;
}

static int tls_exchange(SSL *ssl, const char *send, char *out, size_t cap)
{
    if (SSL_write(ssl, send, (int)strlen(send)) <= 0) return -1;
    int n = SSL_read(ssl, out, (int)cap - 1);
    if (n <= 0) return -1;
    out[n] = 0;
    return n;
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(f->detail, sizeof f->detail, __VA_ARGS__);                                    \
            f->result = -1;                                                                        \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static void *client_main(void *arg)
{
    fixture *f = arg;
    f->client(f);
    uv_async_send(&f->done);
    return NULL;
}

/* Runs a server (TLS when tls) and the client function; returns what the client found. */
static void run(fixture *f, bool tls, unsigned handshake_timeout_ms, void (*client)(fixture *))
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_async_init(&f->loop, &f->done, on_done);
    f->done.data = f;
    uv_timer_init(&f->loop, &f->resume);
    f->resume.data = f;
    stream_limits lim = {.handshake_timeout_ms = handshake_timeout_ms};
    stream_callbacks cb = {on_open, on_data, on_close};
    assert_int_equal(
        stream_listen(&f->loop, "127.0.0.1", 0, tls ? f->server_ctx : NULL, &lim, &cb, f, &f->l),
        0);
    f->port = stream_listener_port(f->l);
    f->client = client;
    f->result = 0;
    pthread_t t;
    pthread_create(&t, NULL, client_main, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (f->result) fail_msg("%s", f->detail);
}

/* ---- tests ---- */

static void client_plain_echo(fixture *f)
{
    int fd = tcp_connect(f->port);
    CHECK(fd >= 0, "connect");
    char buf[64];
    CHECK(write(fd, "hello", 5) == 5, "write");
    ssize_t n = read(fd, buf, sizeof buf);
    CHECK(n == 5 && !memcmp(buf, "hello", 5), "plain echo: %zd", n);
    close(fd);
}

static void client_tls(fixture *f)
{
    int fd = tcp_connect(f->port);
    SSL *ssl = tls_connect(f, fd, true);
    CHECK(ssl, "TLS handshake with a client certificate");
    char buf[128];
    CHECK(tls_exchange(ssl, "fp?", buf, sizeof buf) > 0 && !strcmp(buf, f->client_fp),
          "fingerprint: got %s want %s", buf, f->client_fp);
    CHECK(tls_exchange(ssl, "echo me", buf, sizeof buf) == 7 && !strcmp(buf, "echo me"),
          "tls echo: %s", buf);
    CHECK(tls_exchange(ssl, "hold", buf, sizeof buf) == 4 && !strcmp(buf, "hold"),
          "held input not handed over after resume: %s", buf);
    /* Several records at once, split across the server's socket reads. */
    CHECK(tls_echo_big(ssl, 100000), "a 100,000-byte echo");
    SSL_free(ssl);
    close(fd);

    fd = tcp_connect(f->port);
    ssl = tls_connect_version(f, fd, true, TLS1_2_VERSION); /* stays with OpenSSL */
    CHECK(ssl, "TLS 1.2 handshake");
    CHECK(tls_exchange(ssl, "fp?", buf, sizeof buf) > 0 && !strcmp(buf, f->client_fp),
          "TLS 1.2 fingerprint: got %s want %s", buf, f->client_fp);
    CHECK(tls_echo_big(ssl, 100000), "a 100,000-byte echo over TLS 1.2");
    SSL_free(ssl);
    close(fd);

    fd = tcp_connect(f->port);
    ssl = tls_connect(f, fd, false);
    CHECK(ssl, "TLS handshake without a client certificate");
    CHECK(tls_exchange(ssl, "fp?", buf, sizeof buf) > 0 && !strcmp(buf, "none"),
          "no certificate, yet a fingerprint: %s", buf);
    SSL_free(ssl);
    close(fd);
}

static void client_close_peer(fixture *f)
{
    int fd1 = tcp_connect(f->port), fd2 = tcp_connect(f->port), fd3 = tcp_connect(f->port);
    SSL *a = tls_connect(f, fd1, true), *b = tls_connect(f, fd2, true),
        *other = tls_connect(f, fd3, false);
    CHECK(a && b && other, "handshakes");
    char buf[64];
    CHECK(tls_exchange(other, "x", buf, sizeof buf) == 1, "other connection works");
    CHECK(SSL_write(a, "kill", 4) == 4, "kill");
    int n = SSL_read(b, buf, sizeof buf);
    CHECK(n <= 0, "the second connection of that certificate is still open");
    CHECK(tls_exchange(other, "y", buf, sizeof buf) == 1,
          "a connection of no certificate was closed");
    SSL_free(a);
    SSL_free(b);
    SSL_free(other);
    close(fd1);
    close(fd2);
    close(fd3);
}

static void client_silent(fixture *f)
{
    int fd = tcp_connect(f->port);
    CHECK(fd >= 0, "connect");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char buf[16];
    ssize_t n = read(fd, buf, sizeof buf); /* the server closes it */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(n == 0 && s < 2.0, "a silent client was not closed by the handshake timeout (%zd, %.2fs)",
          n, s);
    close(fd);
    /* Garbage instead of a ClientHello closes that connection only. */
    fd = tcp_connect(f->port);
    CHECK(write(fd, "GET / HTTP/1.0\r\n\r\n", 18) == 18, "write");
    n = read(fd, buf, sizeof buf);
    CHECK(n <= 0 || n < 16, "garbage was answered like TLS");
    close(fd);
    fd = tcp_connect(f->port);
    SSL *ssl = tls_connect(f, fd, true);
    CHECK(ssl, "the listener stopped serving after garbage");
    SSL_free(ssl);
    close(fd);
}

static fixture *fx;

static void test_plain_echo(void **state)
{
    run(fx, false, 0, client_plain_echo);
}

static void test_tls(void **state)
{
    run(fx, true, 0, client_tls);
    /* The two TLS 1.3 connections were taken over from OpenSSL, the TLS 1.2 one was not. */
    assert_int_equal(fx->stats.handshakes_full + fx->stats.handshakes_resumed, 3);
    assert_int_equal(fx->stats.taken_over, 2);
}

static void test_close_peer(void **state)
{
    run(fx, true, 0, client_close_peer);
}

static void test_handshake_timeout(void **state)
{
    run(fx, true, 300, client_silent);
}

static void test_reuse_port(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    stream_callbacks cb = {on_open, on_data, on_close};
    stream_limits shared = {.reuse_port = true}, plain = {0};
    stream_listener *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(stream_listen(&loop, "127.0.0.1", 0, NULL, &shared, &cb, NULL, &a), 0);
    int port = stream_listener_port(a);
    assert_int_equal(stream_listen(&loop, "127.0.0.1", port, NULL, &shared, &cb, NULL, &b), 0);
    assert_int_not_equal(stream_listen(&loop, "127.0.0.1", port, NULL, &plain, &cb, NULL, &c), 0);
    stream_listener_close(a);
    stream_listener_close(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int setup(void **state)
{
    fx = calloc(1, sizeof *fx);
    EVP_PKEY *ca_key = NULL, *srv_key = NULL, *cli_key = NULL;
    X509 *ca = NULL, *srv = NULL, *cli = NULL;
    int64_t now = (int64_t)time(NULL) * 1000;
    uint8_t serial[16] = {1};
    char *srv_pem = NULL, *srv_key_pem = NULL;
    if (pki_ca_new("stream test CA", NULL, 2, now, &ca_key, &ca) || pki_key_new_p256(&srv_key) ||
        pki_key_new_p256(&cli_key) ||
        pki_issue_server(ca, ca_key, srv_key, "localhost", NULL, 0, 2, now, &srv) ||
        pki_issue_client(ca, ca_key, cli_key, "client", serial, now - 60000, now + 86400000,
                         &cli) ||
        pki_cert_to_pem(ca, &fx->ca_pem) || pki_cert_to_pem(srv, &srv_pem) ||
        pki_key_to_pem(srv_key, &srv_key_pem) || pki_cert_to_pem(cli, &fx->client_pem) ||
        pki_key_to_pem(cli_key, &fx->client_key_pem) ||
        http_tls_server_ctx(srv_pem, srv_key_pem, &fx->server_ctx))
        return -1;
    pki_cert_fingerprint(cli, fx->client_fp);
    X509_STORE *store = NULL;
    pki_store_new(&ca, 1, &store);
    SSL_CTX_set1_cert_store(fx->server_ctx, store);
    X509_STORE_free(store);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);
    EVP_PKEY_free(cli_key);
    X509_free(ca);
    X509_free(srv);
    X509_free(cli);
    free(srv_pem);
    free(srv_key_pem);
    return 0;
}

static int teardown(void **state)
{
    SSL_CTX_free(fx->server_ctx);
    free(fx->ca_pem);
    free(fx->client_pem);
    free(fx->client_key_pem);
    free(fx);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_echo), cmocka_unit_test(test_tls),
        cmocka_unit_test(test_close_peer), cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_reuse_port),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
