/*
 * loadgen.h - what the MQTT load generators (bench_mqtt.c, bench_shadow.c) share: the devices of
 * a DEVICES_FILE (one "client_id cert.pem key.pem" a line, as bench_provision writes it), a
 * client TLS context, and a pool of mutual-TLS MQTT connections opened from one epoll loop, each
 * with its own device certificate and client id, spread over loopback source addresses (127.0.0.2,
 * 127.0.0.3, ... LG_PER_SOURCE connections each, so that no address runs out of ports; several
 * load-generator processes take distinct addresses with source_base). A pool remembers each
 * connection's TLS session, so that opening it again (after lg_pool_drop) resumes. Also the
 * clock, percentiles, and a server process's resident memory and CPU time from /proc.
 *
 * A pool's connections are indexed 0..n-1 and registered in the pool's epoll set with their index
 * as the event data, so a caller may add descriptors of its own to the same set under indexes
 * from n on. Benchmark code, run on demand; never by CTest.
 */
#ifndef REG_BENCH_LOADGEN_H
#define REG_BENCH_LOADGEN_H

#include <openssl/ssl.h>

#include <stddef.h>
#include <stdint.h>

/* Per source address: the ports of one address towards one server port (28,000 here). */
enum {
    LG_PER_SOURCE = 25000,
    LG_KEEPALIVE_S = 600,
    LG_ATTEMPT_S = 30, /* an attempt not up by then (TCP, TLS, CONNACK) fails */
};

enum lg_state { LG_IDLE, LG_CONNECTING, LG_HANDSHAKE, LG_AWAIT_CONNACK, LG_UP, LG_FAILED };

typedef struct lg_device {
    char id[64];
    X509 *cert;
    EVP_PKEY *key;
} lg_device;

typedef struct lg_conn {
    int fd;
    SSL *ssl;
    enum lg_state st;
    double started;
    uint8_t in[8]; /* the CONNACK */
    size_t in_len;
    SSL_SESSION *sess; /* the last session, to resume with */
} lg_conn;

typedef struct lg_pool {
    int ep; /* the epoll set */
    SSL_CTX *ctx;
    lg_device *devs;
    lg_conn *cs;
    size_t n;
    unsigned source_base; /* the first source address is 127.0.0.2 + source_base */
    size_t up, failed;    /* connections now up; connections failed or lost so far */
    size_t resumed;       /* of those up, how many resumed a TLS session */
    double seconds;       /* lg_pool_open's wall time */
    double *lat;          /* CONNACK latencies in seconds, sorted by lg_pool_open */
    size_t nlat;
} lg_pool;

/* Monotonic seconds. */
double lg_now(void);

/* qsort comparator of doubles. */
int lg_cmp_double(const void *a, const void *b);

/* The q-quantile (0 <= q <= 1) of sorted[0..n), 0 when n == 0. */
double lg_quantile(const double *sorted, size_t n, double q);

/* A process's resident memory in KiB (-1 when unknown) and its user + system CPU seconds. */
long lg_rss_kib(int pid);
double lg_cpu_s(int pid);

/* Raises the file-descriptor limit to n + 1024 (for many connections; says so when it cannot). */
void lg_raise_nofile(size_t n);

/* Reads n devices of DEVICES_FILE from line `first` (0-based) on and makes the client context
 * that verifies the server with server_ca; opens the epoll set. 0, or -1 when fewer than n
 * devices could be read (the caller says so and calls lg_pool_free). */
int lg_pool_init(lg_pool *p, const char *server_ca, const char *devices_file, size_t first,
                 size_t n);

/* Opens every connection that is not up to host:port, `concurrency` at a time (TCP connect, TLS
 * handshake resuming the connection's last session if it has one, CONNECT with keep-alive
 * LG_KEEPALIVE_S, CONNACK), for at most limit_s seconds. Afterwards a connection is LG_UP
 * (registered for EPOLLIN | EPOLLRDHUP) or LG_FAILED (out of the set); a connection the server
 * closed meanwhile, or that is not up within LG_ATTEMPT_S, counts as failed. Adds to up, failed and
 * resumed; sets seconds and lat (the CONNACK latencies of this call, sorted). Calling it again
 * retries the failed ones. */
void lg_pool_open(lg_pool *p, const char *host, int port, size_t concurrency, double limit_s);

/* Drops every connection at once (no DISCONNECT: as a network failure would), keeping their
 * sessions; up, failed and resumed start again from 0. */
void lg_pool_drop(lg_pool *p);

/* Counts connection i, which was up, as lost and takes it out of the epoll set. */
void lg_pool_lost(lg_pool *p, size_t i);

/* The CONNECT packet of client id `id` (clean session, keep-alive LG_KEEPALIVE_S) into out (at
 * least 128 bytes); its length. */
size_t lg_connect_packet(const char *id, uint8_t *out);

/* Closes every connection and frees everything the pool holds. */
void lg_pool_free(lg_pool *p);

#endif
