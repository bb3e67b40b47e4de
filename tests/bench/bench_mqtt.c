/*
 * bench_mqtt.c - how many mutual-TLS MQTT connections a broker holds: opens N connections, each
 * with its own device certificate and client id, spread over loopback source addresses
 * (127.0.0.2, 127.0.0.3, ... so that no address runs out of ports), holds them, and reports.
 *
 *   bench_mqtt HOST PORT SERVER_CA DEVICES_FILE N HOLD_SECONDS [SERVER_PID] [CONCURRENCY]
 *
 * DEVICES_FILE has one device per line: "client_id cert.pem key.pem" (tests/bench/bench_mqtt.sh
 * makes it by bootstrapping devices through the registry). Connections are opened CONCURRENCY at
 * a time (default 200: TCP connect, TLS handshake, CONNECT with keep-alive 600 s, CONNACK) from
 * one epoll loop; then all are held for HOLD_SECONDS, and counted again at the end (a connection
 * the server closed meanwhile is a failure). Prints connections/s, CONNACK latency P50/P99, and,
 * given SERVER_PID, the server's resident memory and CPU time. Raises its own file-descriptor
 * limit. Run on demand, never by CTest.
 */
#define _GNU_SOURCE
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PER_SOURCE = 40000, KEEPALIVE_S = 600 };
enum state { IDLE, CONNECTING, HANDSHAKE, AWAIT_CONNACK, UP, FAILED };

typedef struct device {
    char id[64];
    X509 *cert;
    EVP_PKEY *key;
} device;

typedef struct conn {
    int fd;
    SSL *ssl;
    enum state st;
    double started;
    uint8_t in[8];
    size_t in_len;
} conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int load_devices(const char *path, device *d, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char cert[4096], key[4096];
    size_t i = 0;
    while (i < n && fscanf(f, "%63s %4095s %4095s", d[i].id, cert, key) == 3) {
        FILE *c = fopen(cert, "r"), *k = fopen(key, "r");
        if (!c || !k) return -1;
        d[i].cert = PEM_read_X509(c, NULL, NULL, NULL);
        d[i].key = PEM_read_PrivateKey(k, NULL, NULL, NULL);
        fclose(c);
        fclose(k);
        if (!d[i].cert || !d[i].key) return -1;
        i++;
    }
    fclose(f);
    return i == n ? 0 : -1;
}

static size_t connect_packet(const char *id, uint8_t *out)
{
    size_t idl = strlen(id);
    size_t rem = 10 + 2 + idl;
    size_t n = 0;
    out[n++] = 0x10;
    out[n++] = (uint8_t)rem; /* ids are short: one length byte */
    const uint8_t vh[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, KEEPALIVE_S >> 8, KEEPALIVE_S & 0xff};
    memcpy(out + n, vh, sizeof vh);
    n += sizeof vh;
    out[n++] = (uint8_t)(idl >> 8);
    out[n++] = (uint8_t)idl;
    memcpy(out + n, id, idl);
    return n + idl;
}

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

static double cpu_s(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    unsigned long ut = 0, st = 0;
    if (f) {
        if (fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
            ut = st = 0;
        fclose(f);
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: bench_mqtt HOST PORT SERVER_CA DEVICES_FILE N HOLD_SECONDS "
                        "[SERVER_PID] [CONCURRENCY]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    size_t n = strtoul(argv[5], NULL, 10);
    double hold = atof(argv[6]);
    int server_pid = argc > 7 ? atoi(argv[7]) : 0;
    size_t concurrency = argc > 8 ? strtoul(argv[8], NULL, 10) : 200;

    struct rlimit rl = {n + 1024, n + 1024};
    if (setrlimit(RLIMIT_NOFILE, &rl)) perror("setrlimit (run as root for many connections)");

    device *devs = calloc(n, sizeof *devs);
    if (load_devices(argv[4], devs, n)) {
        fprintf(stderr, "bench_mqtt: cannot read %zu devices from %s\n", n, argv[4]);
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, argv[3], NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

    conn *cs = calloc(n, sizeof *cs);
    double *lat = calloc(n, sizeof *lat);
    int ep = epoll_create1(0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &dst.sin_addr);
    long rss0 = server_pid ? rss_kib(server_pid) : -1;
    double cpu0 = server_pid ? cpu_s(server_pid) : 0;

    size_t next = 0, inflight = 0, up = 0, failed = 0, nlat = 0;
    double t0 = now_s();
    while ((next < n || inflight) && now_s() - t0 < 600) {
        while (next < n && inflight < concurrency) {
            conn *c = &cs[next];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            struct sockaddr_in src = {.sin_family = AF_INET};
            src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(next / PER_SOURCE));
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (c->fd < 0 || bind(c->fd, (struct sockaddr *)&src, sizeof src) ||
                (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) && errno != EINPROGRESS)) {
                c->st = FAILED;
                failed++;
                if (c->fd >= 0) close(c->fd);
                next++;
                continue;
            }
            c->ssl = SSL_new(ctx);
            SSL_use_certificate(c->ssl, devs[next].cert);
            SSL_use_PrivateKey(c->ssl, devs[next].key);
            SSL_set_fd(c->ssl, c->fd);
            c->st = CONNECTING;
            c->started = now_s();
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = next};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            inflight++;
            next++;
        }
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            size_t idx = evs[i].data.u64;
            conn *c = &cs[idx];
            bool fail = (evs[i].events & (EPOLLERR | EPOLLHUP)) && c->st != UP;
            if (!fail && (c->st == CONNECTING || c->st == HANDSHAKE)) {
                c->st = HANDSHAKE;
                int r = SSL_connect(c->ssl);
                if (r == 1) {
                    uint8_t pkt[128];
                    size_t len = connect_packet(devs[idx].id, pkt);
                    if (SSL_write(c->ssl, pkt, (int)len) != (int)len)
                        fail = true;
                    else
                        c->st = AWAIT_CONNACK;
                } else {
                    int e = SSL_get_error(c->ssl, r);
                    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) fail = true;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = idx};
                if (!fail && SSL_want_write(c->ssl)) ev.events |= EPOLLOUT;
                if (!fail) epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
            if (!fail && c->st == AWAIT_CONNACK) {
                int r = SSL_read(c->ssl, c->in + c->in_len, (int)(4 - c->in_len));
                if (r > 0)
                    c->in_len += (size_t)r;
                else if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
                    fail = true;
                if (c->in_len == 4) {
                    if (c->in[0] == 0x20 && c->in[3] == 0) {
                        c->st = UP;
                        up++;
                        inflight--;
                        lat[nlat++] = now_s() - c->started;
                        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = idx};
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    } else {
                        fail = true;
                    }
                }
            } else if (!fail && c->st == UP && (evs[i].events & (EPOLLRDHUP | EPOLLHUP))) {
                c->st = FAILED; /* the server closed a held connection */
                up--;
                failed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            if (fail && c->st != FAILED) {
                if (c->st != UP) inflight--;
                c->st = FAILED;
                failed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
            ERR_clear_error();
        }
    }
    double t1 = now_s();
    qsort(lat, nlat, sizeof *lat, cmp_double);
    printf("connected=%zu failed=%zu seconds=%.1f per_sec=%.0f connack_p50_ms=%.1f "
           "connack_p99_ms=%.1f\n",
           up, failed, t1 - t0, (double)up / (t1 - t0), nlat ? lat[nlat / 2] * 1000 : 0,
           nlat ? lat[(size_t)((double)nlat * 0.99)] * 1000 : 0);
    fflush(stdout);
    /* Hold: the server must keep them all. */
    double until = now_s() + hold;
    while (now_s() < until) {
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 200);
        for (int i = 0; i < k; i++) {
            conn *c = &cs[evs[i].data.u64];
            if (c->st == UP && (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                c->st = FAILED;
                up--;
                failed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    long rss1 = server_pid ? rss_kib(server_pid) : -1;
    double cpu1 = server_pid ? cpu_s(server_pid) : 0;
    printf("held=%zu failed=%zu hold_seconds=%.0f", up, failed, hold);
    if (server_pid)
        printf(" server_rss_mib=%.1f server_rss_delta_kib_per_conn=%.1f server_cpu_s=%.1f",
               (double)rss1 / 1024, up ? (double)(rss1 - rss0) / (double)up : 0, cpu1 - cpu0);
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        if (cs[i].ssl) SSL_free(cs[i].ssl);
        if (cs[i].st != IDLE && cs[i].fd >= 0) close(cs[i].fd);
        X509_free(devs[i].cert);
        EVP_PKEY_free(devs[i].key);
    }
    free(cs);
    free(devs);
    free(lat);
    SSL_CTX_free(ctx);
    close(ep);
    return failed ? 1 : 0;
}
