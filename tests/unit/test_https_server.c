/*
 * test_https_server.c - unit tests of the TLS side of common/http_server.c over real loopback
 * sockets.
 *
 * The certificates are made here with the OpenSSL API (ECDSA P-256, made once for the whole run):
 * CA1 (trusted from the start) issues the server certificate, clients A and B, and an
 * intermediate that issues client E; CA2 (never trusted) issues client C; CA3 (trusted only after
 * the test replaces the store) issues client D. Each test starts a TLS server on 127.0.0.1:0 with
 * http_tls_server_ctx, in its own uv loop run by a second thread (the fixture of
 * test_http_server.c), and talks to it with a blocking OpenSSL client (5 s receive timeout). The
 * handler answers "/hold" later (when the test asks) and anything else with what it saw: TLS or
 * not, the fingerprint the server computed, one the handler computes from peer_cert itself, and
 * the chain's length and first element. Stopping a fixture checks that every handle was closed;
 * ASan, when built with it, checks for leaks and use after free (a pending request whose
 * connection close_peer dropped, answered afterwards, in particular).
 */
#define _GNU_SOURCE /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "http_server.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define LOOP_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: loop thread check failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------------------------------------
 * Certificates
 */

typedef struct ident {
    EVP_PKEY *key;
    X509 *cert;
    char fp[65]; /* hex SHA-256 of the DER */
} ident;

enum { KIND_CA, KIND_SERVER, KIND_CLIENT };

static ident ca1, ca2, ca3, inter, server_id, cl_a, cl_b, cl_c, cl_d, cl_e;

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(cert, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

static void fingerprint(X509 *cert, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    assert_int_equal(X509_digest(cert, EVP_sha256(), md, &len), 1);
    assert_int_equal(len, 32);
    for (unsigned i = 0; i < len; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

/* Makes id (a fresh key and a certificate) issued by `by` (NULL: self-signed). */
static void make_ident(ident *id, const char *cn, int kind, const ident *by)
{
    static long serial = 1;
    id->key = EVP_EC_gen("P-256");
    assert_non_null(id->key);
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_set_pubkey(x, id->key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *issuer = by ? by->cert : x;
    X509_set_issuer_name(x, X509_get_subject_name(issuer));
    add_ext(x, issuer, NID_subject_key_identifier, "hash");
    add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    if (kind == KIND_CA) {
        add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
        add_ext(x, issuer, NID_ext_key_usage, kind == KIND_SERVER ? "serverAuth" : "clientAuth");
        if (kind == KIND_SERVER) add_ext(x, issuer, NID_subject_alt_name, "IP:127.0.0.1");
    }
    assert_true(X509_sign(x, by ? by->key : id->key, EVP_sha256()) > 0);
    id->cert = x;
    fingerprint(x, id->fp);
}

static void free_ident(ident *id)
{
    X509_free(id->cert);
    EVP_PKEY_free(id->key);
}

static int make_pki(void **state)
{
    make_ident(&ca1, "Test CA 1", KIND_CA, NULL);
    make_ident(&ca2, "Test CA 2 (untrusted)", KIND_CA, NULL);
    make_ident(&ca3, "Test CA 3 (added later)", KIND_CA, NULL);
    make_ident(&inter, "Test intermediate", KIND_CA, &ca1);
    make_ident(&server_id, "127.0.0.1", KIND_SERVER, &ca1);
    make_ident(&cl_a, "device-a", KIND_CLIENT, &ca1);
    make_ident(&cl_b, "device-b", KIND_CLIENT, &ca1);
    make_ident(&cl_c, "device-c", KIND_CLIENT, &ca2);
    make_ident(&cl_d, "device-d", KIND_CLIENT, &ca3);
    make_ident(&cl_e, "device-e", KIND_CLIENT, &inter);
    return 0;
}

static int free_pki(void **state)
{
    ident *all[] = {&ca1, &ca2, &ca3, &inter, &server_id, &cl_a, &cl_b, &cl_c, &cl_d, &cl_e};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free_ident(all[i]);
    return 0;
}

/* PEM text of a certificate or a key (caller frees). */
static char *pem_of(X509 *cert, EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_non_null(b);
    if (cert) assert_int_equal(PEM_write_bio_X509(b, cert), 1);
    if (key) assert_int_equal(PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL), 1);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    assert_non_null(s);
    BIO_free(b);
    return s;
}

static X509_STORE *store_of(const ident *a, const ident *b)
{
    X509_STORE *st = X509_STORE_new();
    assert_non_null(st);
    assert_int_equal(X509_STORE_add_cert(st, a->cert), 1);
    if (b) assert_int_equal(X509_STORE_add_cert(st, b->cert), 1);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Server fixture (the loop runs on its own thread)
 */

enum { BIG_BODY = 3 * 1024 * 1024 + 7 };

enum { CMD_NONE, CMD_RESPOND_HELD, CMD_CLOSE_PEER, CMD_SET_STORE, CMD_STOP };

typedef struct fixture {
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    http_server *srv;
    SSL_CTX *ctx;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int cmd;            /* under mu */
    unsigned cmd_seq;   /* under mu */
    unsigned ack_seq;   /* under mu */
    const char *arg_fp; /* under mu: CMD_CLOSE_PEER's fingerprint */
    X509_STORE *arg_st; /* under mu: CMD_SET_STORE's store (the command frees our ref) */
    unsigned result;    /* under mu: CMD_CLOSE_PEER's count */
    http_req *held[16]; /* under mu */
    int nheld;          /* under mu */
    bool server_closed; /* loop thread only */
} fixture;

/* The body says what the handler saw:
 * "tls=1 fp=<server's> certfp=<from peer_cert> chain=<n or -1> leaf_first=<0|1> path=<path>". */
static void describe(http_req *req, const http_request *r)
{
    char certfp[65] = "-";
    if (r->peer_cert) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        LOOP_CHECK(X509_digest(r->peer_cert, EVP_sha256(), md, &len) == 1);
        for (unsigned i = 0; i < len; i++)
            sprintf(certfp + 2 * i, "%02x", md[i]);
    }
    int chain = r->peer_chain ? sk_X509_num(r->peer_chain) : -1;
    int leaf_first = r->peer_chain && r->peer_cert && chain > 0 &&
                     X509_cmp(sk_X509_value(r->peer_chain, 0), r->peer_cert) == 0;
    char out[512];
    int n = snprintf(out, sizeof out, "tls=%d fp=%s certfp=%s chain=%d leaf_first=%d path=%s",
                     r->tls, r->peer_fingerprint ? r->peer_fingerprint : "-", certfp, chain,
                     leaf_first, r->path);
    http_respond(req, 200, "text/plain", out, (size_t)n, NULL);
}

static void handler(void *app, http_req *req, const http_request *r)
{
    fixture *f = app;
    LOOP_CHECK(http_req_request(req) == r);
    if (strcmp(r->path, "/big") == 0) {
        /* Larger than the socket takes at once: the ciphertext goes out in several writes. */
        size_t n = BIG_BODY;
        char *b = malloc(n);
        LOOP_CHECK(b);
        for (size_t i = 0; i < n; i++)
            b[i] = (char)('a' + i % 26);
        http_respond(req, 200, "text/plain", b, n, NULL);
        free(b);
    } else if (strcmp(r->path, "/body") == 0) {
        char out[64];
        int n = snprintf(out, sizeof out, "len=%zu", r->body_len);
        http_respond(req, 200, "text/plain", out, (size_t)n, NULL);
    } else if (strcmp(r->path, "/hold") == 0) {
        pthread_mutex_lock(&f->mu);
        LOOP_CHECK(f->nheld < 16);
        f->held[f->nheld++] = req;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    } else {
        describe(req, r);
    }
}

static void on_async(uv_async_t *a)
{
    fixture *f = a->data;
    pthread_mutex_lock(&f->mu);
    int cmd = f->cmd;
    const char *fp = f->arg_fp;
    X509_STORE *st = f->arg_st;
    int n = f->nheld;
    http_req *held[16];
    memcpy(held, f->held, sizeof held);
    if (cmd == CMD_RESPOND_HELD) f->nheld = 0;
    pthread_mutex_unlock(&f->mu);
    unsigned result = 0;
    if (cmd == CMD_RESPOND_HELD) {
        for (int i = 0; i < n; i++)
            http_respond(held[i], 200, "text/plain", "late", 4, NULL);
    } else if (cmd == CMD_CLOSE_PEER) {
        result = http_server_close_peer(f->srv, fp);
    } else if (cmd == CMD_SET_STORE) {
        SSL_CTX_set1_cert_store(f->ctx, st); /* between handshakes, on the loop thread */
        X509_STORE_free(st);
    } else if (cmd == CMD_STOP) {
        if (!f->server_closed) http_server_close(f->srv);
        f->server_closed = true;
        uv_close((uv_handle_t *)&f->async, NULL);
    }
    pthread_mutex_lock(&f->mu);
    f->result = result;
    f->ack_seq = f->cmd_seq;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void *loop_thread(void *arg)
{
    fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* A server on its own loop thread; with ticket_secret, its session tickets are those of every
 * server given the same secret (http_tls_share_tickets). */
static fixture *fx_start_tickets(const http_limits *lim, const unsigned char *ticket_secret)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    char *cert = pem_of(server_id.cert, NULL), *key = pem_of(NULL, server_id.key);
    assert_int_equal(http_tls_server_ctx(cert, key, &f->ctx), 0);
    free(cert);
    free(key);
    if (ticket_secret) assert_int_equal(http_tls_share_tickets(f->ctx, ticket_secret), 0);
    X509_STORE *st = store_of(&ca1, NULL);
    SSL_CTX_set1_cert_store(f->ctx, st); /* before the loop runs */
    X509_STORE_free(st);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->async, on_async), 0);
    f->async.data = f;
    assert_int_equal(
        http_server_start_tls(&f->loop, "127.0.0.1", 0, lim, f->ctx, handler, f, &f->srv), 0);
    f->port = http_server_port(f->srv);
    assert_true(f->port > 0);
    assert_int_equal(pthread_create(&f->thread, NULL, loop_thread, f), 0);
    return f;
}

static fixture *fx_start(const http_limits *lim)
{
    return fx_start_tickets(lim, NULL);
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Runs a command on the loop thread and waits until it has been carried out; returns its
 * result. */
static unsigned fx_cmd_arg(fixture *f, int cmd, const char *fp, X509_STORE *st)
{
    struct timespec ts;
    deadline_in(&ts, 5000);
    pthread_mutex_lock(&f->mu);
    f->cmd = cmd;
    f->arg_fp = fp;
    f->arg_st = st;
    unsigned seq = ++f->cmd_seq;
    uv_async_send(&f->async);
    while (f->ack_seq < seq)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0) break;
    bool done = f->ack_seq >= seq;
    unsigned result = f->result;
    pthread_mutex_unlock(&f->mu);
    assert_true(done);
    return result;
}

static void fx_cmd(fixture *f, int cmd)
{
    fx_cmd_arg(f, cmd, NULL, NULL);
}

static void fx_wait_held(fixture *f, int n)
{
    struct timespec ts;
    deadline_in(&ts, 5000);
    pthread_mutex_lock(&f->mu);
    while (f->nheld < n)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0) break;
    int got = f->nheld;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(got, n);
}

static void fx_stop(fixture *f)
{
    fx_cmd(f, CMD_STOP);
    pthread_join(f->thread, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    SSL_CTX_free(f->ctx); /* the server borrowed it until now */
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* ---------------------------------------------------------------------------------------------
 * Client side: blocking sockets and a blocking OpenSSL client
 */

static int tcp_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* A client context: verifies the server against CA1; presents `id` (with `extra` in its chain)
 * unless NULL; max_version 0 for "any". */
static SSL_CTX *client_ctx(const ident *id, const ident *extra, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    if (max_version) assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    X509_STORE *st = store_of(&ca1, NULL);
    SSL_CTX_set_cert_store(ctx, st); /* takes it */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Send exactly the chain configured here (OpenSSL would otherwise complete it from the
     * store, root included). */
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
    if (id) {
        assert_int_equal(SSL_CTX_use_certificate(ctx, id->cert), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(ctx, id->key), 1);
        if (extra) assert_int_equal(SSL_CTX_add1_chain_cert(ctx, extra->cert), 1);
    }
    return ctx;
}

typedef struct tcl {
    int fd;
    SSL *ssl;
    size_t len;
    char buf[1 << 16];
} tcl;

typedef struct resp {
    int status;
    char head[4096];
    char body[4096];
} resp;

/* Connects and handshakes; NULL (and everything freed) when the handshake fails. */
static tcl *tcl_open(int port, SSL_CTX *ctx, SSL_SESSION *resume)
{
    tcl *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = tcp_open(port);
    c->ssl = SSL_new(ctx);
    assert_non_null(c->ssl);
    SSL_set_fd(c->ssl, c->fd);
    if (resume) assert_int_equal(SSL_set_session(c->ssl, resume), 1);
    if (SSL_connect(c->ssl) != 1) {
        ERR_clear_error();
        SSL_free(c->ssl);
        close(c->fd);
        free(c);
        return NULL;
    }
    return c;
}

/* Closes politely (close_notify first, so that the session stays resumable). */
static void tcl_close(tcl *c)
{
    if (!c) return;
    SSL_shutdown(c->ssl);
    ERR_clear_error();
    SSL_free(c->ssl);
    close(c->fd);
    free(c);
}

static bool tcl_send(tcl *c, const char *s, size_t n)
{
    return n <= INT32_MAX && SSL_write(c->ssl, s, (int)n) == (int)n;
}

/* Reads more plaintext; false on EOF, close_notify, error or timeout. */
static bool tcl_fill(tcl *c)
{
    if (c->len == sizeof c->buf) return false;
    int r = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof c->buf - c->len));
    if (r <= 0) {
        ERR_clear_error();
        return false;
    }
    c->len += (size_t)r;
    return true;
}

static void tcl_consume(tcl *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static bool tcl_read(tcl *c, resp *r)
{
    memset(r, 0, sizeof *r);
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (!tcl_fill(c)) return false;
    size_t hlen = (size_t)(end - c->buf) + 4;
    assert_true(hlen < sizeof r->head);
    memcpy(r->head, c->buf, hlen);
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    tcl_consume(c, hlen);
    size_t blen = 0;
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    if (cl) blen = strtoul(cl + 18, NULL, 10);
    assert_true(blen < sizeof r->body);
    while (c->len < blen)
        if (!tcl_fill(c)) return false;
    memcpy(r->body, c->buf, blen);
    tcl_consume(c, blen);
    return true;
}

/* Reads a /big answer and checks its body byte by byte without keeping it. */
static bool tcl_read_big(tcl *c)
{
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (!tcl_fill(c)) return false;
    size_t hlen = (size_t)(end - c->buf) + 4;
    char head[1024];
    assert_true(hlen < sizeof head);
    memcpy(head, c->buf, hlen);
    head[hlen] = '\0';
    tcl_consume(c, hlen);
    const char *cl = strcasestr(head, "\r\nContent-Length: ");
    assert_non_null(cl);
    size_t want = strtoul(cl + 18, NULL, 10), got = 0;
    assert_int_equal(want, BIG_BODY);
    while (got < want) {
        if (c->len == 0 && !tcl_fill(c)) return false;
        size_t n = c->len < want - got ? c->len : want - got;
        for (size_t i = 0; i < n; i++)
            if (c->buf[i] != (char)('a' + (got + i) % 26)) return false;
        got += n;
        tcl_consume(c, n);
    }
    return true;
}

/* One GET on an open connection; the status (-1 when no answer came). */
static int tcl_get(tcl *c, const char *path, resp *r)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    if (!tcl_send(c, req, (size_t)n)) return -1;
    return tcl_read(c, r) ? r->status : -1;
}

/* True when the server closed the connection (close_notify, EOF, reset) within the timeout. */
static bool tcl_closed(tcl *c)
{
    char b[256];
    for (;;) {
        int r = SSL_read(c->ssl, b, sizeof b);
        if (r > 0) continue;
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        return e != SSL_ERROR_WANT_READ; /* WANT_READ: the receive timeout */
    }
}

/* True when a plain socket sees the server close it (EOF or reset) within the timeout. */
static bool fd_closed(int fd)
{
    char b[256];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof b, 0);
        if (r == 0) return true;
        if (r < 0) return errno == ECONNRESET;
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The body the handler gives for a client with this certificate and chain length. */
static void expect_peer(const resp *r, const ident *id, int chain)
{
    char want[512];
    if (id)
        snprintf(want, sizeof want, "tls=1 fp=%s certfp=%s chain=%d leaf_first=%d ", id->fp, id->fp,
                 chain, chain > 0);
    else
        snprintf(want, sizeof want, "tls=1 fp=- certfp=- chain=-1 leaf_first=0 ");
    if (strncmp(r->body, want, strlen(want)) != 0)
        fail_msg("handler saw \"%s\", expected it to start with \"%s\"", r->body, want);
}

/* A full request/response with a fresh client: the status (-1 when refused). */
static int one_request(int port, const ident *id, int max_version, resp *r)
{
    SSL_CTX *ctx = client_ctx(id, NULL, max_version);
    tcl *c = tcl_open(port, ctx, NULL);
    int status = c ? tcl_get(c, "/who", r) : -1;
    tcl_close(c);
    SSL_CTX_free(ctx);
    return status;
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 */

static void test_client_cert_seen(void **state)
{
    fixture *f = fx_start(NULL);
    resp r;
    assert_int_equal(one_request(f->port, &cl_a, 0, &r), 200);
    expect_peer(&r, &cl_a, 1); /* the client sent only its leaf */

    /* A client that sends an intermediate: the chain shows it, leaf first. */
    SSL_CTX *ctx = client_ctx(&cl_e, &inter, 0);
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    assert_int_equal(tcl_get(c, "/who", &r), 200);
    expect_peer(&r, &cl_e, 2);
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

static void test_no_client_cert(void **state)
{
    fixture *f = fx_start(NULL);
    resp r;
    assert_int_equal(one_request(f->port, NULL, 0, &r), 200);
    expect_peer(&r, NULL, -1);
    fx_stop(f);
}

/* A certificate from an unknown CA is refused in the handshake. In TLS 1.2 SSL_connect fails; in
 * TLS 1.3 the client's side of the handshake ends before the server has checked its certificate,
 * so the refusal (an alert, then the close) shows on the first read. Either way no request is
 * served, and other clients are unaffected. */
static void test_untrusted_ca_refused(void **state)
{
    fixture *f = fx_start(NULL);
    resp r;
    assert_int_equal(one_request(f->port, &cl_c, TLS1_2_VERSION, &r), -1);
    assert_int_equal(one_request(f->port, &cl_c, TLS1_3_VERSION, &r), -1);
    /* An intermediate alone, without its chain to CA1 sent, is no proof either (no partial
     * chains): E without the intermediate fails. */
    assert_int_equal(one_request(f->port, &cl_e, 0, &r), -1);
    assert_int_equal(one_request(f->port, &cl_a, 0, &r), 200);
    expect_peer(&r, &cl_a, 1);
    fx_stop(f);
}

/* The application replaces the store at run time; the next handshake uses the new one. */
static void test_store_replaced(void **state)
{
    fixture *f = fx_start(NULL);
    resp r;
    assert_int_equal(one_request(f->port, &cl_d, 0, &r), -1);
    fx_cmd_arg(f, CMD_SET_STORE, NULL, store_of(&ca1, &ca3));
    assert_int_equal(one_request(f->port, &cl_d, 0, &r), 200);
    expect_peer(&r, &cl_d, 1);
    assert_int_equal(one_request(f->port, &cl_a, 0, &r), 200);
    /* And back: CA3 no longer trusted for new handshakes. */
    fx_cmd_arg(f, CMD_SET_STORE, NULL, store_of(&ca1, NULL));
    assert_int_equal(one_request(f->port, &cl_d, 0, &r), -1);
    fx_stop(f);
}

static void test_keepalive_and_pipelining(void **state)
{
    fixture *f = fx_start(NULL);
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, 0);
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    resp r;
    assert_int_equal(tcl_get(c, "/one", &r), 200);
    expect_peer(&r, &cl_a, 1);
    assert_false(strcasestr(r.head, "Connection: close"));
    assert_int_equal(tcl_get(c, "/two", &r), 200);
    assert_non_null(strstr(r.body, "path=/two"));
    /* Three pipelined requests in one record, answered in order. */
    const char *three = "GET /p1 HTTP/1.1\r\n\r\nGET /p2 HTTP/1.1\r\n\r\nGET /p3 HTTP/1.1\r\n\r\n";
    assert_true(tcl_send(c, three, strlen(three)));
    for (int i = 1; i <= 3; i++) {
        char want[16];
        snprintf(want, sizeof want, "path=/p%d", i);
        assert_true(tcl_read(c, &r));
        assert_non_null(strstr(r.body, want));
    }
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

typedef struct sender {
    tcl *c;
    const char *p;
    size_t n;
    bool ok;
} sender;

static void *send_thread(void *arg)
{
    sender *s = arg;
    s->ok = tcl_send(s->c, s->p, s->n);
    return NULL;
}

/* Input that arrives while a request is pending stays encrypted (bounded like held plaintext:
 * reading stops) and is served once the answer is out: a 300 KB body and a pipelined GET. */
static void test_input_while_pending(void **state)
{
    fixture *f = fx_start(NULL);
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, 0);
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    const char *hold = "GET /hold HTTP/1.1\r\n\r\n";
    assert_true(tcl_send(c, hold, strlen(hold)));
    fx_wait_held(f, 1);
    size_t n = 300000;
    char *req = malloc(n + 256);
    assert_non_null(req);
    int h = sprintf(req, "POST /body HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
    memset(req + h, 'q', n);
    strcpy(req + h + n, "GET /last HTTP/1.1\r\n\r\n");
    /* The send may block while the server does not read: from a second thread, which is done
     * with the SSL before this one reads. */
    sender snd = {c, req, strlen(req), false};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, send_thread, &snd), 0);
    usleep(100000);
    fx_cmd(f, CMD_RESPOND_HELD);
    pthread_join(t, NULL);
    assert_true(snd.ok);
    resp r;
    assert_true(tcl_read(c, &r));
    assert_string_equal(r.body, "late");
    assert_true(tcl_read(c, &r));
    assert_string_equal(r.body, "len=300000");
    assert_true(tcl_read(c, &r));
    assert_non_null(strstr(r.body, "path=/last"));
    free(req);
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

/* A response far larger than one write, twice on one connection, then a small one. */
static void test_large_response(void **state)
{
    fixture *f = fx_start(NULL);
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, 0);
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    const char *big = "GET /big HTTP/1.1\r\n\r\n";
    for (int i = 0; i < 2; i++) {
        assert_true(tcl_send(c, big, strlen(big)));
        assert_true(tcl_read_big(c));
    }
    resp r;
    assert_int_equal(tcl_get(c, "/small", &r), 200);
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

static void test_expect_continue(void **state)
{
    fixture *f = fx_start(NULL);
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, 0);
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    const char *head = "POST /body HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    assert_true(tcl_send(c, head, strlen(head)));
    resp r;
    assert_true(tcl_read(c, &r));
    assert_int_equal(r.status, 100);
    assert_true(tcl_send(c, "hello", 5));
    assert_true(tcl_read(c, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "len=5");
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

static void test_versions(void **state)
{
    fixture *f = fx_start(NULL);
    int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    for (int i = 0; i < 2; i++) {
        SSL_CTX *ctx = client_ctx(&cl_b, NULL, versions[i]);
        tcl *c = tcl_open(f->port, ctx, NULL);
        assert_non_null(c);
        assert_int_equal(SSL_version(c->ssl), versions[i]);
        resp r;
        assert_int_equal(tcl_get(c, "/v", &r), 200);
        expect_peer(&r, &cl_b, 1);
        tcl_close(c);
        SSL_CTX_free(ctx);
    }
    /* TLS 1.1 is refused. */
    SSL_CTX *old = client_ctx(&cl_b, NULL, TLS1_1_VERSION);
    SSL_CTX_set_min_proto_version(old, TLS1_1_VERSION);
    SSL_CTX_set_security_level(old, 0);
    tcl *c = tcl_open(f->port, old, NULL);
    assert_null(c);
    SSL_CTX_free(old);
    fx_stop(f);
}

/* Resumes a session of client A with the given maximum version (and tickets or not), and checks
 * that the handler still sees A. Returns the chain length the handler saw on resumption. */
static int resume_once(int port, int version, bool no_ticket)
{
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, version);
    if (no_ticket) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    tcl *c = tcl_open(port, ctx, NULL);
    assert_non_null(c);
    assert_int_equal(SSL_session_reused(c->ssl), 0);
    resp r;
    /* In TLS 1.3 the tickets come after the handshake: reading the answer reads them first. */
    assert_int_equal(tcl_get(c, "/first", &r), 200);
    SSL_SESSION *sess = SSL_get1_session(c->ssl);
    assert_non_null(sess);
    assert_true(SSL_SESSION_is_resumable(sess));
    tcl_close(c);

    c = tcl_open(port, ctx, sess);
    assert_non_null(c);
    assert_int_equal(SSL_version(c->ssl), version);
    assert_int_equal(SSL_session_reused(c->ssl), 1);
    assert_int_equal(tcl_get(c, "/resumed", &r), 200);
    const char *ch = strstr(r.body, "chain=");
    assert_non_null(ch);
    int chain = atoi(ch + 6);
    expect_peer(&r, &cl_a, chain); /* fingerprint and peer_cert as before */
    print_message("resumed TLS %s%s: peer_chain %s\n", version == TLS1_3_VERSION ? "1.3" : "1.2",
                  no_ticket ? " (session id)" : " (ticket)", chain < 0 ? "NULL" : "present");
    tcl_close(c);
    SSL_SESSION_free(sess);
    SSL_CTX_free(ctx);
    return chain;
}

static void test_resumption(void **state)
{
    fixture *f = fx_start(NULL);
    /* What OpenSSL 3.0 keeps: a ticket carries the leaf but not the chain; a session in the
     * server's cache (TLS 1.2 without tickets) is the same object, chain included. */
    assert_int_equal(resume_once(f->port, TLS1_2_VERSION, false), -1);
    assert_int_equal(resume_once(f->port, TLS1_2_VERSION, true), 1);
    assert_int_equal(resume_once(f->port, TLS1_3_VERSION, false), -1);
    fx_stop(f);
}

/* Whether a ticket that server `from` issued resumes on server `to` (TLS version `version`). */
static bool resumes_across(int from, int to, int version)
{
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, version);
    tcl *c = tcl_open(from, ctx, NULL);
    assert_non_null(c);
    resp r;
    assert_int_equal(tcl_get(c, "/first", &r), 200); /* reads the ticket too */
    SSL_SESSION *sess = SSL_get1_session(c->ssl);
    assert_true(SSL_SESSION_has_ticket(sess));
    tcl_close(c);
    c = tcl_open(to, ctx, sess);
    assert_non_null(c);
    bool reused = SSL_session_reused(c->ssl) == 1;
    assert_int_equal(tcl_get(c, "/second", &r), 200); /* a full handshake works all the same */
    expect_peer(&r, &cl_a,
                reused ? -1 : 1); /* a ticket carries no chain; a full handshake has the leaf */
    tcl_close(c);
    SSL_SESSION_free(sess);
    SSL_CTX_free(ctx);
    return reused;
}

static void test_tickets_shared(void **state)
{
    const unsigned char one[32] = {1}, other[32] = {2};
    fixture *a = fx_start_tickets(NULL, one), *b = fx_start_tickets(NULL, one),
            *c = fx_start_tickets(NULL, other), *d = fx_start(NULL);
    const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    for (size_t i = 0; i < 2; i++) {
        assert_true(resumes_across(a->port, b->port, versions[i])); /* the same secret */
        assert_true(resumes_across(b->port, a->port, versions[i]));
        assert_false(resumes_across(a->port, c->port, versions[i])); /* another secret */
        assert_false(resumes_across(a->port, d->port, versions[i])); /* OpenSSL's random key */
    }
    fx_stop(a);
    fx_stop(b);
    fx_stop(c);
    fx_stop(d);
}

static void test_close_peer(void **state)
{
    fixture *f = fx_start(NULL);
    SSL_CTX *ca = client_ctx(&cl_a, NULL, 0), *cb = client_ctx(&cl_b, NULL, 0);
    tcl *a1 = tcl_open(f->port, ca, NULL), *a2 = tcl_open(f->port, ca, NULL);
    tcl *b = tcl_open(f->port, cb, NULL);
    assert_true(a1 && a2 && b);
    resp r;
    assert_int_equal(tcl_get(a1, "/x", &r), 200);
    assert_int_equal(tcl_get(a2, "/x", &r), 200);
    assert_int_equal(tcl_get(b, "/x", &r), 200);
    /* Both of A's idle keep-alive connections, none of B's; case does not matter. */
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)toupper((unsigned char)cl_a.fp[i]);
    assert_int_equal(fx_cmd_arg(f, CMD_CLOSE_PEER, upper, NULL), 2);
    assert_true(tcl_closed(a1));
    assert_true(tcl_closed(a2));
    assert_int_equal(tcl_get(b, "/still", &r), 200);
    assert_int_equal(fx_cmd_arg(f, CMD_CLOSE_PEER, cl_a.fp, NULL), 0);
    assert_int_equal(fx_cmd_arg(f, CMD_CLOSE_PEER, "nonsense", NULL), 0);
    tcl_close(a1);
    tcl_close(a2);
    tcl_close(b);
    SSL_CTX_free(ca);
    SSL_CTX_free(cb);
    fx_stop(f);
}

/* A pending request whose connection close_peer drops: the later http_respond only frees. */
static void test_close_peer_pending(void **state)
{
    fixture *f = fx_start(NULL);
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, 0);
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    const char *req = "GET /hold HTTP/1.1\r\n\r\n";
    assert_true(tcl_send(c, req, strlen(req)));
    fx_wait_held(f, 1);
    assert_int_equal(fx_cmd_arg(f, CMD_CLOSE_PEER, cl_a.fp, NULL), 1);
    assert_true(tcl_closed(c));
    usleep(50000); /* the close callback has run: the connection is detached */
    fx_cmd(f, CMD_RESPOND_HELD);
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

static void test_handshake_timeout(void **state)
{
    http_limits lim = {.handshake_timeout_ms = 300};
    fixture *f = fx_start(&lim);
    int fd = tcp_open(f->port);
    double t0 = now_ms();
    assert_true(fd_closed(fd)); /* sent nothing */
    double dt = now_ms() - t0;
    if (dt < 250 || dt > 2000) fail_msg("closed after %.0f ms", dt);
    close(fd);

    /* Half a ClientHello is no better. */
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, 0);
    fd = tcp_open(f->port);
    send(fd, "\x16\x03\x01\x02\x00\x01", 6, MSG_NOSIGNAL);
    t0 = now_ms();
    assert_true(fd_closed(fd));
    assert_true(now_ms() - t0 < 2000);
    close(fd);

    /* The deadline ends with the handshake: an idle connection lives on (idle timeout 60 s). */
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    usleep(700000);
    resp r;
    assert_int_equal(tcl_get(c, "/later", &r), 200);
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

static void test_garbage_instead_of_hello(void **state)
{
    fixture *f = fx_start(NULL);
    int fd = tcp_open(f->port);
    const char *plain = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    send(fd, plain, strlen(plain), MSG_NOSIGNAL);
    assert_true(fd_closed(fd));
    close(fd);
    fd = tcp_open(f->port);
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 7 + 3);
    send(fd, junk, sizeof junk, MSG_NOSIGNAL);
    assert_true(fd_closed(fd));
    close(fd);
    resp r;
    assert_int_equal(one_request(f->port, &cl_a, 0, &r), 200);
    fx_stop(f);
}

static void test_oversized_body(void **state)
{
    http_limits lim = {.max_body_bytes = 1024};
    fixture *f = fx_start(&lim);
    SSL_CTX *ctx = client_ctx(&cl_a, NULL, 0);
    tcl *c = tcl_open(f->port, ctx, NULL);
    assert_non_null(c);
    char req[8192];
    int h = snprintf(req, sizeof req, "POST /up HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    memset(req + h, 'b', 5000);
    assert_true(tcl_send(c, req, (size_t)h + 5000));
    resp r;
    assert_true(tcl_read(c, &r));
    assert_int_equal(r.status, 413);
    assert_non_null(strcasestr(r.head, "Content-Type: application/problem+json"));
    assert_non_null(strstr(r.body, "\"status\":413"));
    assert_non_null(strcasestr(r.head, "Connection: close"));
    assert_true(tcl_closed(c));
    /* The server said close_notify before closing. */
    assert_true(SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN);
    tcl_close(c);
    SSL_CTX_free(ctx);
    fx_stop(f);
}

static void test_ctx_errors(void **state)
{
    SSL_CTX *ctx = NULL;
    char *cert = pem_of(server_id.cert, NULL), *key = pem_of(NULL, server_id.key);
    char *other_key = pem_of(NULL, cl_a.key);
    assert_int_equal(http_tls_server_ctx(NULL, key, &ctx), REG_EINVAL);
    assert_int_equal(http_tls_server_ctx("not a pem", key, &ctx), REG_ETLS);
    assert_null(ctx);
    assert_int_equal(http_tls_server_ctx(cert, "not a key", &ctx), REG_ETLS);
    assert_int_equal(http_tls_server_ctx(cert, other_key, &ctx), REG_ETLS);
    /* A chain: leaf then intermediate (any CA certificate does for the parsing). */
    size_t n = strlen(cert);
    char *inter_pem = pem_of(inter.cert, NULL);
    char *chain = malloc(n + strlen(inter_pem) + 1);
    assert_non_null(chain);
    strcpy(chain, cert);
    strcat(chain, inter_pem);
    assert_int_equal(http_tls_server_ctx(chain, key, &ctx), 0);
    STACK_OF(X509) *extra = NULL;
    assert_int_equal(SSL_CTX_get0_chain_certs(ctx, &extra), 1);
    assert_int_equal(sk_X509_num(extra), 1);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
    assert_int_equal(SSL_CTX_get_session_cache_mode(ctx), SSL_SESS_CACHE_SERVER);
    assert_int_equal(SSL_CTX_sess_get_cache_size(ctx), 20000);
    assert_int_equal(SSL_CTX_get_options(ctx) & SSL_OP_NO_TICKET, 0);
    X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
    assert_int_equal(X509_VERIFY_PARAM_get_flags(vp) & X509_V_FLAG_PARTIAL_CHAIN, 0);
    SSL_CTX_free(ctx);

    uv_loop_t loop;
    http_server *s = NULL;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(http_server_start_tls(&loop, "127.0.0.1", 0, NULL, NULL, handler, NULL, &s),
                     REG_EINVAL);
    assert_null(s);
    assert_int_equal(uv_loop_close(&loop), 0);
    http_limits l = {0};
    http_limits_default(&l);
    assert_int_equal(l.handshake_timeout_ms, 10000);
    free(chain);
    free(inter_pem);
    free(cert);
    free(key);
    free(other_key);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_cert_seen),
        cmocka_unit_test(test_no_client_cert),
        cmocka_unit_test(test_untrusted_ca_refused),
        cmocka_unit_test(test_store_replaced),
        cmocka_unit_test(test_keepalive_and_pipelining),
        cmocka_unit_test(test_input_while_pending),
        cmocka_unit_test(test_large_response),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_resumption),
        cmocka_unit_test(test_tickets_shared),
        cmocka_unit_test(test_close_peer),
        cmocka_unit_test(test_close_peer_pending),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_garbage_instead_of_hello),
        cmocka_unit_test(test_oversized_body),
        cmocka_unit_test(test_ctx_errors),
    };
    return cmocka_run_group_tests(tests, make_pki, free_pki);
}
