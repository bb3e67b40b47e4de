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
 * limit. The connection machinery is loadgen.c's, shared with bench_shadow. Run on demand, never
 * by CTest.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a connection the server closed is a failure, not our end */
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

    lg_raise_nofile(n);
    lg_pool p;
    if (lg_pool_init(&p, argv[3], argv[4], n)) {
        fprintf(stderr, "bench_mqtt: cannot read %zu devices from %s\n", n, argv[4]);
        lg_pool_free(&p);
        return 1;
    }
    long rss0 = server_pid ? lg_rss_kib(server_pid) : -1;
    double cpu0 = server_pid ? lg_cpu_s(server_pid) : 0;
    lg_pool_open(&p, host, port, concurrency, 600);
    printf("connected=%zu failed=%zu seconds=%.1f per_sec=%.0f connack_p50_ms=%.1f "
           "connack_p99_ms=%.1f\n",
           p.up, p.failed, p.seconds, (double)p.up / p.seconds,
           p.nlat ? p.lat[p.nlat / 2] * 1000 : 0,
           p.nlat ? p.lat[(size_t)((double)p.nlat * 0.99)] * 1000 : 0);
    fflush(stdout);
    /* Hold: the server must keep them all. */
    double until = lg_now() + hold;
    while (lg_now() < until) {
        struct epoll_event evs[256];
        int k = epoll_wait(p.ep, evs, 256, 200);
        for (int i = 0; i < k; i++)
            if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                lg_pool_lost(&p, evs[i].data.u64);
    }
    long rss1 = server_pid ? lg_rss_kib(server_pid) : -1;
    double cpu1 = server_pid ? lg_cpu_s(server_pid) : 0;
    printf("held=%zu failed=%zu hold_seconds=%.0f", p.up, p.failed, hold);
    if (server_pid)
        printf(" server_rss_mib=%.1f server_rss_delta_kib_per_conn=%.1f server_cpu_s=%.1f",
               (double)rss1 / 1024, p.up ? (double)(rss1 - rss0) / (double)p.up : 0, cpu1 - cpu0);
    printf("\n");
    bool failed = p.failed != 0;
    lg_pool_free(&p);
    return failed ? 1 : 0;
}
