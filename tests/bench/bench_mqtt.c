/*
 * bench_mqtt.c - how many mutual-TLS MQTT connections a broker holds: opens N connections, each
 * with its own device certificate and client id, spread over loopback source addresses
 * (127.0.0.2, 127.0.0.3, ... so that no address runs out of ports), holds them, and reports;
 * then, with -r, drops them all at once and reconnects them (a reconnect storm, resuming the TLS
 * sessions).
 *
 *   bench_mqtt [-p PID[,PID...]] [-c CONCURRENCY] [-f FIRST] [-s SOURCE] [-r [-C STORM_CONC]]
 *              [-w] HOST PORT SERVER_CA DEVICES_FILE N HOLD_SECONDS
 *
 * DEVICES_FILE has one device per line: "client_id cert.pem key.pem" (tests/bench/fleet.sh makes
 * it by bootstrapping devices through the registry); -f starts at line FIRST (0-based), so that
 * several load generators share one file. Connections are opened CONCURRENCY at a time (default
 * 200: TCP connect, TLS handshake, CONNECT with keep-alive 600 s, CONNACK) from one epoll loop;
 * then all are held for HOLD_SECONDS and counted again at the end (a connection the server closed
 * meanwhile is a failure). -s SOURCE moves the first source address to 127.0.0.(2 + SOURCE).
 *
 * With -w the hold lasts until SIGUSR1 (and at least HOLD_SECONDS), so that a script running
 * several load generators ends their holds together. The storm (-r) follows the hold: every
 * connection is closed at once, without DISCONNECT, and all are opened again as fast as this
 * process can, STORM_CONC attempts in flight (default: all of them; a load generator holding more
 * connections than it can hand-shake within the server's handshake timeout should bound it, or
 * the attempts time out together); those that fail are retried until all are back. -T bounds
 * the opening and the storm, each (default 600 s): connections not opened by then are reported
 * as `unopened` and fail the run.
 *
 * Prints connections/s, CONNACK latency P50/P99, and, given -p, the resident memory and CPU time
 * of those server processes (summed). Raises its own file-descriptor limit. The connection
 * machinery is loadgen.c's, shared with bench_shadow. Run on demand, never by CTest.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

enum { MAX_PIDS = 64 };

static int pids[MAX_PIDS];
static int npids;

static long servers_rss_kib(void)
{
    long sum = 0;
    for (int i = 0; i < npids; i++) {
        long v = lg_rss_kib(pids[i]);
        if (v > 0) sum += v;
    }
    return sum;
}

static double servers_cpu_s(void)
{
    double sum = 0;
    for (int i = 0; i < npids; i++)
        sum += lg_cpu_s(pids[i]);
    return sum;
}

static volatile sig_atomic_t hold_over;
static void on_usr1(int sig)
{
    (void)sig;
    hold_over = 1;
}

/* Watches the connections for `seconds`, and then until SIGUSR1 when wait_signal; those the
 * server closes are lost. */
static void hold(lg_pool *p, double seconds, bool wait_signal)
{
    double until = lg_now() + seconds;
    while (lg_now() < until || (wait_signal && !hold_over)) {
        struct epoll_event evs[256];
        int k = epoll_wait(p->ep, evs, 256, 200);
        for (int i = 0; i < k; i++)
            if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                lg_pool_lost(p, evs[i].data.u64);
    }
}

static void print_open(const char *what, const lg_pool *p, size_t n, size_t failed)
{
    size_t unopened = n > p->up + failed ? n - p->up - failed : 0;
    printf("%s=%zu failed=%zu unopened=%zu resumed=%zu seconds=%.1f per_sec=%.0f "
           "connack_p50_ms=%.1f connack_p99_ms=%.1f\n",
           what, p->up, failed, unopened, p->resumed, p->seconds, (double)p->up / p->seconds,
           lg_quantile(p->lat, p->nlat, 0.5) * 1000, lg_quantile(p->lat, p->nlat, 0.99) * 1000);
    fflush(stdout);
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_mqtt [-p PID[,PID...]] [-c CONCURRENCY] [-f FIRST] [-s SOURCE] "
                    "[-r [-C STORM_CONC]] [-w] [-T SECONDS] HOST PORT SERVER_CA DEVICES_FILE N "
                    "HOLD_SECONDS\n");
    return 2;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a connection the server closed is a failure, not our end */
    signal(SIGUSR1, on_usr1);
    size_t concurrency = 200, storm_concurrency = 0, first = 0;
    unsigned source = 0;
    bool storm = false, wait_signal = false;
    double limit_s = 600;
    int opt;
    while ((opt = getopt(argc, argv, "p:c:C:f:s:rwT:")) != -1) {
        switch (opt) {
        case 'p':
            for (char *tok = strtok(optarg, ","); tok && npids < MAX_PIDS; tok = strtok(NULL, ","))
                pids[npids++] = atoi(tok);
            break;
        case 'c':
            concurrency = strtoul(optarg, NULL, 10);
            break;
        case 'C':
            storm_concurrency = strtoul(optarg, NULL, 10);
            break;
        case 'f':
            first = strtoul(optarg, NULL, 10);
            break;
        case 's':
            source = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            storm = true;
            break;
        case 'w':
            wait_signal = true;
            break;
        case 'T':
            limit_s = strtod(optarg, NULL);
            break;
        default:
            return usage();
        }
    }
    if (argc - optind != 6) return usage();
    char **a = argv + optind;
    const char *host = a[0];
    int port = atoi(a[1]);
    size_t n = strtoul(a[4], NULL, 10);
    double hold_s = atof(a[5]);

    lg_raise_nofile(n);
    lg_pool p;
    if (lg_pool_init(&p, a[2], a[3], first, n)) {
        fprintf(stderr, "bench_mqtt: cannot read %zu devices from line %zu of %s\n", n, first,
                a[3]);
        lg_pool_free(&p);
        return 1;
    }
    p.source_base = source;
    long rss0 = servers_rss_kib();
    double cpu0 = servers_cpu_s();
    lg_pool_open(&p, host, port, concurrency, limit_s);
    print_open("connected", &p, n, p.failed);
    double held_from = lg_now();
    hold(&p, hold_s, wait_signal);
    long rss1 = servers_rss_kib();
    double cpu1 = servers_cpu_s();
    printf("held=%zu failed=%zu hold_seconds=%.0f", p.up, p.failed, lg_now() - held_from);
    if (npids)
        printf(" server_rss_mib=%.1f server_rss_delta_kib_per_conn=%.1f server_cpu_s=%.1f",
               (double)rss1 / 1024, p.up ? (double)(rss1 - rss0) / (double)p.up : 0, cpu1 - cpu0);
    printf("\n");
    fflush(stdout);
    bool failed = p.failed != 0 || p.up != n;

    if (storm && !failed) {
        lg_pool_drop(&p);
        double t0 = lg_now(), lat_p50 = 0, lat_p99 = 0;
        size_t attempts_failed = 0;
        /* Every connection at once; the ones refused or timed out (a full accept queue) again. */
        while (p.up < n && lg_now() - t0 < limit_s) {
            size_t before = p.failed;
            lg_pool_open(&p, host, port, storm_concurrency ? storm_concurrency : n,
                         limit_s - (lg_now() - t0));
            attempts_failed += p.failed - before;
            if (lat_p50 == 0) {
                lat_p50 = lg_quantile(p.lat, p.nlat, 0.5);
                lat_p99 = lg_quantile(p.lat, p.nlat, 0.99);
            }
        }
        double seconds = lg_now() - t0;
        printf("storm reconnected=%zu of=%zu failed_attempts=%zu resumed=%zu seconds=%.1f "
               "per_sec=%.0f first_round_connack_p50_ms=%.1f first_round_connack_p99_ms=%.1f\n",
               p.up, n, attempts_failed, p.resumed, seconds, (double)p.up / seconds, lat_p50 * 1000,
               lat_p99 * 1000);
        failed = p.up != n;
    }
    lg_pool_free(&p);
    return failed ? 1 : 0;
}
