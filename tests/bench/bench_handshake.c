/*
 * bench_handshake.c - how many mutual-TLS connections per second an HTTPS server completes: each
 * one a TCP connect, a TLS handshake with a client certificate, one GET and its answer, a close.
 *
 *   bench_handshake HOST PORT CAFILE CERTFILE KEYFILE SECONDS THREADS [full|resumed] [PATH]
 *
 * CAFILE verifies the server; CERTFILE (the client certificate, then any intermediates) and
 * KEYFILE are presented to it. Each thread loops: connect, handshake, send
 * "GET PATH HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" (PATH defaults to /healthz), read
 * the whole answer (Content-Length), send close_notify, close. In `resumed` mode each connection
 * offers the session of the thread's previous successful one (in TLS 1.3 the tickets come after
 * the handshake; they have been read by the time the answer has, and only then is the session
 * saved). A connection counts when its answer was a 200; anything else is an error, and in
 * resumed mode the next connection starts from a full handshake. Prints one line:
 *
 *   mode=full handshakes=N per_sec=X resumed_ratio=R errors=E
 *
 * (resumed_ratio: the share of counted connections whose session was resumed). Run on demand,
 * never by CTest; tests/bench/bench_tls_nginx.sh runs it against nginx.
 */
#define _GNU_SOURCE
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

typedef struct worker {
    pthread_t thread;
    SSL_CTX *ctx;
    struct addrinfo *addr;
    const char *request;
    double until; /* monotonic seconds */
    bool resumed_mode;
    unsigned long done, resumed, errors;
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads one whole answer; true when it was a 200. */
static bool read_answer(SSL *ssl)
{
    char buf[16384];
    size_t len = 0;
    char *end = NULL;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
        if (len == sizeof buf) return false;
        int n = SSL_read(ssl, buf + len, (int)(sizeof buf - len));
        if (n <= 0) return false;
        len += (size_t)n;
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) return false;
    size_t head = (size_t)(end - buf) + 4, body = 0;
    *end = '\0';
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl) body = strtoul(cl + 17, NULL, 10);
    size_t have = len - head;
    while (have < body) {
        int n = SSL_read(ssl, buf, (int)sizeof buf);
        if (n <= 0) return false;
        have += (size_t)n;
    }
    return status == 200;
}

static int tcp_connect(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *run(void *arg)
{
    worker *w = arg;
    SSL_SESSION *sess = NULL;
    size_t reqlen = strlen(w->request);
    while (now_s() < w->until) {
        bool ok = false, reused = false;
        int fd = tcp_connect(w->addr);
        SSL *ssl = fd >= 0 ? SSL_new(w->ctx) : NULL;
        if (ssl) {
            SSL_set_fd(ssl, fd);
            if (sess) SSL_set_session(ssl, sess);
            if (SSL_connect(ssl) == 1) {
                reused = SSL_session_reused(ssl);
                ok = SSL_write(ssl, w->request, (int)reqlen) == (int)reqlen && read_answer(ssl);
            }
            if (ok && w->resumed_mode) {
                SSL_SESSION_free(sess);
                sess = SSL_get1_session(ssl);
            }
            SSL_shutdown(ssl); /* close_notify: keeps the session resumable */
            SSL_free(ssl);
        }
        if (fd >= 0) close(fd);
        ERR_clear_error();
        if (ok) {
            w->done++;
            w->resumed += reused;
        } else {
            w->errors++;
            SSL_SESSION_free(sess);
            sess = NULL;
        }
    }
    SSL_SESSION_free(sess);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_handshake HOST PORT CAFILE CERTFILE KEYFILE SECONDS THREADS "
                    "[full|resumed] [PATH]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 8 || argc > 10) usage();
    const char *host = argv[1], *port = argv[2], *cafile = argv[3], *certfile = argv[4],
               *keyfile = argv[5];
    double seconds = atof(argv[6]);
    int threads = atoi(argv[7]);
    const char *mode = argc > 8 ? argv[8] : "full";
    const char *path = argc > 9 ? argv[9] : "/healthz";
    if (seconds <= 0 || threads <= 0 || threads > 1024) usage();
    if (strcmp(mode, "full") != 0 && strcmp(mode, "resumed") != 0) usage();
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "bench_handshake: %s:%s: %s\n", host, port, gai_strerror(gai));
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "bench_handshake: client TLS setup failed:\n");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Sessions are handed from one connection to the next by hand, not through a cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    char request[1024];
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             path);
    worker *ws = calloc((size_t)threads, sizeof *ws);
    if (!ws) return 1;
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        ws[i] = (worker){.ctx = ctx,
                         .addr = ai,
                         .request = request,
                         .until = t0 + seconds,
                         .resumed_mode = strcmp(mode, "resumed") == 0};
        if (pthread_create(&ws[i].thread, NULL, run, &ws[i]) != 0) return 1;
    }
    unsigned long done = 0, resumed = 0, errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].thread, NULL);
        done += ws[i].done;
        resumed += ws[i].resumed;
        errors += ws[i].errors;
    }
    double elapsed = now_s() - t0;
    printf("mode=%s handshakes=%lu per_sec=%.0f resumed_ratio=%.3f errors=%lu\n", mode, done,
           (double)done / elapsed, done ? (double)resumed / (double)done : 0.0, errors);
    free(ws);
    SSL_CTX_free(ctx);
    freeaddrinfo(ai);
    return 0;
}
