/*
 * loadgen.c - the MQTT load generators' shared machinery (loadgen.h): devices and their
 * certificates, and the pool that opens many mutual-TLS MQTT connections from one epoll loop.
 *
 * Opening runs each connection through CONNECTING (non-blocking TCP connect) -> HANDSHAKE
 * (SSL_connect until done) -> AWAIT_CONNACK (the CONNECT written, exactly the 4 bytes of the
 * CONNACK read, so that nothing after it is consumed here) -> UP. At most `concurrency` are
 * between the first and the last step at once, which keeps the server's accept queue and the
 * handshakes in flight bounded like a fleet reconnecting at a steady pace.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double lg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int lg_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double lg_quantile(const double *sorted, size_t n, double q)
{
    if (!n) return 0;
    size_t i = (size_t)((double)n * q);
    return sorted[i < n ? i : n - 1];
}

long lg_rss_kib(int pid)
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

double lg_cpu_s(int pid)
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

void lg_raise_nofile(size_t n)
{
    struct rlimit rl = {n + 1024, n + 1024}, cur;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0 || getrlimit(RLIMIT_NOFILE, &cur)) return;
    /* Without CAP_SYS_RESOURCE the hard limit stays: take all of it. */
    cur.rlim_cur = cur.rlim_max;
    setrlimit(RLIMIT_NOFILE, &cur);
    if (cur.rlim_max < n + 16)
        fprintf(stderr, "file-descriptor limit %llu is below %zu connections\n",
                (unsigned long long)cur.rlim_max, n);
}

static int load_devices(const char *path, lg_device *d, size_t first, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char cert[4096], key[4096];
    for (size_t skip = 0; skip < first; skip++)
        if (fscanf(f, "%*s %*s %*s") == EOF) break;
    size_t i = 0;
    while (i < n && fscanf(f, "%63s %4095s %4095s", d[i].id, cert, key) == 3) {
        FILE *c = fopen(cert, "r"), *k = fopen(key, "r");
        if (!c || !k) {
            if (c) fclose(c);
            if (k) fclose(k);
            break;
        }
        d[i].cert = PEM_read_X509(c, NULL, NULL, NULL);
        d[i].key = PEM_read_PrivateKey(k, NULL, NULL, NULL);
        fclose(c);
        fclose(k);
        if (!d[i].cert || !d[i].key) break;
        i++;
    }
    fclose(f);
    return i == n ? 0 : -1;
}

int lg_pool_init(lg_pool *p, const char *server_ca, const char *devices_file, size_t first,
                 size_t n)
{
    memset(p, 0, sizeof *p);
    p->ep = -1;
    p->n = n;
    p->devs = calloc(n ? n : 1, sizeof *p->devs);
    p->cs = calloc(n ? n : 1, sizeof *p->cs);
    p->lat = calloc(n ? n : 1, sizeof *p->lat);
    if (!p->devs || !p->cs || !p->lat || load_devices(devices_file, p->devs, first, n)) return -1;
    p->ctx = SSL_CTX_new(TLS_client_method());
    if (!p->ctx) return -1;
    SSL_CTX_load_verify_locations(p->ctx, server_ca, NULL);
    SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(p->ctx, SSL_MODE_RELEASE_BUFFERS);
    p->ep = epoll_create1(0);
    return p->ep < 0 ? -1 : 0;
}

size_t lg_connect_packet(const char *id, uint8_t *out)
{
    size_t idl = strlen(id);
    size_t rem = 10 + 2 + idl;
    size_t n = 0;
    out[n++] = 0x10;
    out[n++] = (uint8_t)rem; /* ids are short: one length byte */
    const uint8_t vh[] = {
        0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, LG_KEEPALIVE_S >> 8, LG_KEEPALIVE_S & 0xff};
    memcpy(out + n, vh, sizeof vh);
    n += sizeof vh;
    out[n++] = (uint8_t)(idl >> 8);
    out[n++] = (uint8_t)idl;
    memcpy(out + n, id, idl);
    return n + idl;
}

void lg_pool_lost(lg_pool *p, size_t i)
{
    lg_conn *c = &p->cs[i];
    if (c->st != LG_UP) return;
    c->st = LG_FAILED;
    p->up--;
    p->failed++;
    epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
}

void lg_pool_open(lg_pool *p, const char *host, int port, size_t concurrency, double limit_s)
{
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &dst.sin_addr);
    size_t next = 0, inflight = 0;
    double next_sweep = 0;
    p->nlat = 0;
    double t0 = lg_now();
    while ((next < p->n || inflight) && lg_now() - t0 < limit_s) {
        while (next < p->n && inflight < concurrency) {
            lg_conn *c = &p->cs[next];
            if (c->st == LG_UP) {
                next++;
                continue;
            }
            if (c->ssl) SSL_free(c->ssl); /* a failed attempt's */
            if (c->st == LG_FAILED && c->fd >= 0) close(c->fd);
            c->ssl = NULL;
            c->in_len = 0;
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            struct sockaddr_in src = {.sin_family = AF_INET};
            src.sin_addr.s_addr =
                htonl(0x7f000002u + p->source_base + (uint32_t)(next / LG_PER_SOURCE));
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            /* The port is chosen at connect, unique per 4-tuple, not reserved at bind. */
            setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            if (c->fd < 0 || bind(c->fd, (struct sockaddr *)&src, sizeof src) ||
                (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) && errno != EINPROGRESS)) {
                c->st = LG_FAILED;
                p->failed++;
                if (c->fd >= 0) close(c->fd);
                c->fd = -1;
                next++;
                continue;
            }
            c->ssl = SSL_new(p->ctx);
            SSL_use_certificate(c->ssl, p->devs[next].cert);
            SSL_use_PrivateKey(c->ssl, p->devs[next].key);
            SSL_set_fd(c->ssl, c->fd);
            if (c->sess) SSL_set_session(c->ssl, c->sess);
            c->st = LG_CONNECTING;
            c->started = lg_now();
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = next};
            epoll_ctl(p->ep, EPOLL_CTL_ADD, c->fd, &ev);
            inflight++;
            next++;
        }
        double now = lg_now();
        if (now >= next_sweep) { /* a real client gives up on a stalled attempt and retries */
            next_sweep = now + 1;
            for (size_t i = 0; i < next; i++) {
                lg_conn *c = &p->cs[i];
                if ((c->st == LG_CONNECTING || c->st == LG_HANDSHAKE ||
                     c->st == LG_AWAIT_CONNACK) &&
                    now - c->started > LG_ATTEMPT_S) {
                    c->st = LG_FAILED;
                    p->failed++;
                    inflight--;
                    epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
                }
            }
        }
        struct epoll_event evs[256];
        int k = epoll_wait(p->ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            size_t idx = evs[i].data.u64;
            if (idx >= p->n) continue; /* the caller's own descriptors wait */
            lg_conn *c = &p->cs[idx];
            bool fail = (evs[i].events & (EPOLLERR | EPOLLHUP)) && c->st != LG_UP;
            if (!fail && (c->st == LG_CONNECTING || c->st == LG_HANDSHAKE)) {
                c->st = LG_HANDSHAKE;
                int r = SSL_connect(c->ssl);
                if (r == 1) {
                    uint8_t pkt[128];
                    size_t len = lg_connect_packet(p->devs[idx].id, pkt);
                    if (SSL_write(c->ssl, pkt, (int)len) != (int)len)
                        fail = true;
                    else
                        c->st = LG_AWAIT_CONNACK;
                } else {
                    int e = SSL_get_error(c->ssl, r);
                    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) fail = true;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = idx};
                if (!fail && SSL_want_write(c->ssl)) ev.events |= EPOLLOUT;
                if (!fail) epoll_ctl(p->ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
            if (!fail && c->st == LG_AWAIT_CONNACK) {
                int r = SSL_read(c->ssl, c->in + c->in_len, (int)(4 - c->in_len));
                if (r > 0)
                    c->in_len += (size_t)r;
                else if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
                    fail = true;
                if (c->in_len == 4) {
                    if (c->in[0] == 0x20 && c->in[3] == 0) {
                        c->st = LG_UP;
                        p->up++;
                        if (SSL_session_reused(c->ssl)) p->resumed++;
                        SSL_SESSION *now = SSL_get1_session(c->ssl); /* with its ticket by now */
                        if (now) {
                            SSL_SESSION_free(c->sess);
                            c->sess = now;
                        }
                        inflight--;
                        p->lat[p->nlat++] = lg_now() - c->started;
                        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = idx};
                        epoll_ctl(p->ep, EPOLL_CTL_MOD, c->fd, &ev);
                    } else {
                        fail = true;
                    }
                }
            } else if (!fail && c->st == LG_UP && (evs[i].events & (EPOLLRDHUP | EPOLLHUP))) {
                lg_pool_lost(p, idx); /* the server closed a connection that was up */
                continue;
            }
            if (fail && c->st != LG_FAILED) {
                if (c->st != LG_UP) inflight--;
                c->st = LG_FAILED;
                p->failed++;
                epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
            ERR_clear_error();
        }
    }
    p->seconds = lg_now() - t0;
    qsort(p->lat, p->nlat, sizeof *p->lat, lg_cmp_double);
}

void lg_pool_drop(lg_pool *p)
{
    for (size_t i = 0; i < p->n; i++) {
        lg_conn *c = &p->cs[i];
        /* Marked shut down: OpenSSL would otherwise take a session whose connection ended
         * without close_notify for a bad one and refuse to resume it. Nothing is sent. */
        if (c->ssl) SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        if (c->ssl) SSL_free(c->ssl);
        if (c->st != LG_IDLE && c->fd >= 0) close(c->fd); /* closing takes it out of the set */
        c->ssl = NULL;
        c->fd = -1;
        c->st = LG_IDLE;
    }
    p->up = p->failed = p->resumed = 0;
}

void lg_pool_free(lg_pool *p)
{
    lg_pool_drop(p);
    for (size_t i = 0; p->cs && i < p->n; i++)
        SSL_SESSION_free(p->cs[i].sess);
    for (size_t i = 0; p->devs && i < p->n; i++) {
        X509_free(p->devs[i].cert);
        EVP_PKEY_free(p->devs[i].key);
    }
    free(p->cs);
    free(p->devs);
    free(p->lat);
    if (p->ctx) SSL_CTX_free(p->ctx);
    if (p->ep >= 0) close(p->ep);
    memset(p, 0, sizeof *p);
    p->ep = -1;
}
