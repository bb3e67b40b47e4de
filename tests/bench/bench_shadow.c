/*
 * bench_shadow.c - device shadows under load over MQTT: how long an operator's desired state
 * takes to reach a connected device as a delta, how many reported updates per second the
 * registry accepts from a connected fleet, and, as the floor, how long a plain broker takes to
 * relay a retained message.
 *
 *   bench_shadow registry HOST MQTT_PORT SERVER_CA DEVICES_FILE N API_PORT TOKEN SECONDS RATE
 *                         [SERVER_PID [HTTP_CONNS [WINDOW [QOS]]]]
 *   bench_shadow relay HOST PORT SERVER_CA DEVICES_FILE SECONDS RATE [SERVER_PID]
 *
 * registry: opens N device connections (loadgen.c: each with its own certificate and client id,
 * 200 handshakes at a time) and subscribes each to its $registry/devices/{id}/shadow/update/delta
 * at QoS 1 (a device must not miss desired state). Then two phases, on the same connections:
 *
 * 1. Deltas. RATE `PUT /devices/{id}/shadow/desired` a second for SECONDS on a steady schedule,
 *    each to a random connected device with {"desired":{"seq":n}} (n unique), over HTTP_CONNS
 *    (default 16) keep-alive HTTP/1.1 connections to HOST:API_PORT with the operator TOKEN, one
 *    request in flight on each: a request due while all are busy waits, and that wait is reported
 *    as lateness, not latency. Latency is from just before the request is written to the arrival,
 *    on that device's connection, of the delta that carries its seq; a delta that has not arrived
 *    5 s after the last answer is missing.
 * 2. Reported state. Each device subscribes to update/accepted and update/rejected (QoS 0), then
 *    for SECONDS publishes {"state":{"reported":{"seq":S,"n":k}}} at QoS QOS (default 1) without
 *    a version, S being the seq of the last delta it got (a device that applied its desired
 *    state: no delta follows), keeping at most WINDOW (default 8) without an answer; the
 *    registry's own bound is 16 a connection (429). Accepted and rejected answers (by code) are
 *    counted a second, over the window; what is still outstanding then is drained, not counted.
 *
 * relay: against a plain broker (Mosquitto), device 0 subscribes at QoS 1 to one topic and device 1
 * publishes RATE retained QoS 1 messages {"seq":n} a second to it for SECONDS; latency is from
 * just before the PUBLISH is written to its arrival at the subscriber.
 *
 * With SERVER_PID each phase reports the server's CPU use in cores (CPU seconds over wall
 * seconds); this process's own is always reported, since both share the machine. Output is
 * key=value lines that tests/bench/bench_shadow.sh reads. Run on demand, never by CTest.
 */
#define _GNU_SOURCE
#include "err.h"
#include "loadgen.h"
#include "mqtt_codec.h"

#include <openssl/err.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    IN_START = 4096,
    IN_MAX = 1 << 20,
    DRAIN_S = 5,
    MAX_HTTP = 256,
    RELAY_SUB = 0,
    RELAY_PUB = 1,
};

/* What this program keeps per MQTT connection, beside loadgen's lg_conn of the same index. */
typedef struct peer {
    uint8_t *in, *out;
    size_t in_len, in_cap, out_len, out_cap;
    bool out_armed; /* EPOLLOUT asked for: a write waits for room */
    bool subacked;
    uint16_t next_pid;
    unsigned outstanding; /* reported updates without an answer */
    long long last_seq;   /* of the last delta received */
    unsigned long reported;
} peer;

/* One timed message: a PUT (registry) or a retained PUBLISH (relay), by seq. */
typedef struct timed {
    double sent, answered, got; /* 0 until it happened */
    uint32_t dev;
    int status; /* HTTP status of a PUT; -1 when its connection failed */
} timed;

typedef struct hconn {
    int fd;
    bool busy, armed; /* armed: EPOLLOUT asked for */
    uint32_t seq;
    char out[1024];
    size_t out_len, out_off;
    char in[8192];
    size_t in_len;
} hconn;

enum phase { PH_SETUP, PH_DELTA, PH_REPORTED, PH_RELAY };

static lg_pool P;
static peer *peers;
static enum phase phase = PH_SETUP;
static timed *msgs;
static size_t nmsgs;
static uint8_t report_qos = 1;
static unsigned window_max = 8;
static bool sending; /* phase 2: devices top their window up */
static double window_end;

static struct {
    size_t lost, protocol, suback_failures, subacks;
    size_t deltas, delta_received, delta_dup, delta_stray, deltas_in_reported;
    size_t sent, accepted, accepted_late, rejected, rej_429, rej_503, rej_409, rej_other;
    size_t relay_received, relay_dup, relay_stray;
    size_t *per_second; /* accepted in each second of phase 2 */
    size_t nseconds;
    double phase_start;
} S;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds of each of a process's threads, for telling one saturated thread from a busy
 * process: at most max of them. */
typedef struct thread_cpu {
    int tid;
    double s;
} thread_cpu;

static size_t threads_cpu(int pid, thread_cpu *out, size_t max)
{
    char path[320];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    size_t n = 0;
    for (struct dirent *e; d && n < max && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char stat[512] = "";
        snprintf(path, sizeof path, "/proc/%d/task/%s/stat", pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[len] = 0;
        const char *rest = strrchr(stat, ')'); /* after the command name, which may hold spaces */
        unsigned long ut = 0, st = 0;
        if (!rest ||
            sscanf(rest + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
            continue;
        out[n].tid = atoi(e->d_name);
        out[n++].s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    if (d) closedir(d);
    return n;
}

enum { MAX_THREADS = 256 };
static thread_cpu threads0[MAX_THREADS];
static size_t nthreads0;

static void threads_mark(int pid)
{
    nthreads0 = pid ? threads_cpu(pid, threads0, MAX_THREADS) : 0;
}

static int by_cpu_desc(const void *a, const void *b)
{
    double x = ((const thread_cpu *)a)->s, y = ((const thread_cpu *)b)->s;
    return x > y ? -1 : x < y;
}

/* " server_threads=main:C,TID:C,..." for the four busiest threads between threads_mark and the
 * sample now[0..n) (changed), in cores over `wall` seconds (main is the thread whose id is the
 * process's: the event loop). */
static void threads_print(int pid, thread_cpu *now, size_t n, double wall)
{
    if (!n) return;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < nthreads0; k++)
            if (threads0[k].tid == now[i].tid) now[i].s -= threads0[k].s;
    qsort(now, n, sizeof *now, by_cpu_desc);
    printf(" server_threads=");
    for (size_t i = 0; i < n && i < 4; i++) {
        if (now[i].tid == pid)
            printf("%smain:%.2f", i ? "," : "", now[i].s / wall);
        else
            printf("%s%d:%.2f", i ? "," : "", now[i].tid, now[i].s / wall);
    }
}

/* ---- MQTT connections ---- */

static void arm(size_t i, bool out)
{
    peer *pe = &peers[i];
    if (pe->out_armed == out) return;
    pe->out_armed = out;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0), .data.u64 = i};
    epoll_ctl(P.ep, EPOLL_CTL_MOD, P.cs[i].fd, &ev);
}

static void conn_lost(size_t i)
{
    if (P.cs[i].st != LG_UP) return;
    S.lost++;
    lg_pool_lost(&P, i);
}

static bool grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    uint8_t *b = realloc(*buf, c);
    if (!b) return false;
    *buf = b;
    *cap = c;
    return true;
}

/* Queues bytes for connection i; conn_flush sends them. Packets queued together go out in one
 * TLS record. */
static void queue_bytes(size_t i, const void *b, size_t len)
{
    peer *pe = &peers[i];
    if (P.cs[i].st != LG_UP || !grow(&pe->out, &pe->out_cap, pe->out_len + len)) return;
    memcpy(pe->out + pe->out_len, b, len);
    pe->out_len += len;
}

static void conn_flush(size_t i)
{
    lg_conn *c = &P.cs[i];
    peer *pe = &peers[i];
    while (c->st == LG_UP && pe->out_len) {
        int r = SSL_write(c->ssl, pe->out, (int)pe->out_len);
        if (r > 0) {
            memmove(pe->out, pe->out + r, pe->out_len - (size_t)r);
            pe->out_len -= (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            arm(i, true);
            return;
        }
        conn_lost(i);
        return;
    }
    if (c->st == LG_UP) arm(i, false);
}

static void queue_subscribe(size_t i, uint16_t pid, const char *const *filters, size_t n,
                            uint8_t qos)
{
    uint8_t pkt[1024], len[4];
    size_t body = 2;
    for (size_t k = 0; k < n; k++)
        body += 2 + strlen(filters[k]) + 1;
    int ll = mqtt_remaining_length_encode((uint32_t)body, len);
    if (ll < 0 || 1 + (size_t)ll + body > sizeof pkt) return;
    size_t o = 0;
    pkt[o++] = 0x82;
    memcpy(pkt + o, len, (size_t)ll);
    o += (size_t)ll;
    pkt[o++] = (uint8_t)(pid >> 8);
    pkt[o++] = (uint8_t)pid;
    for (size_t k = 0; k < n; k++) {
        size_t fl = strlen(filters[k]);
        pkt[o++] = (uint8_t)(fl >> 8);
        pkt[o++] = (uint8_t)fl;
        memcpy(pkt + o, filters[k], fl);
        o += fl;
        pkt[o++] = qos;
    }
    queue_bytes(i, pkt, o);
}

static void queue_publish(size_t i, const char *topic, const char *payload, uint8_t qos,
                          bool retain)
{
    peer *pe = &peers[i];
    if (qos && ++pe->next_pid == 0) pe->next_pid = 1;
    mqtt_publish p = {.topic = mqtt_cstr(topic),
                      .payload = (const uint8_t *)payload,
                      .payload_len = strlen(payload),
                      .qos = qos,
                      .retain = retain,
                      .packet_id = qos ? pe->next_pid : 0};
    uint8_t buf[512];
    int n = mqtt_encode_publish(buf, sizeof buf, &p);
    if (n > 0) queue_bytes(i, buf, (size_t)n);
}

/* The number after the first "key": in a payload (not NUL-terminated); -1 when none. */
static long long number_after(const uint8_t *p, size_t len, const char *key)
{
    const uint8_t *m = memmem(p, len, key, strlen(key));
    if (!m) return -1;
    m += strlen(key);
    char digits[24];
    size_t k = 0;
    while (m < p + len && k + 1 < sizeof digits && *m >= '0' && *m <= '9')
        digits[k++] = (char)*m++;
    digits[k] = 0;
    return k ? strtoll(digits, NULL, 10) : -1;
}

static bool ends_with(mqtt_str s, const char *suffix)
{
    size_t l = strlen(suffix);
    return s.len >= l && !memcmp(s.p + s.len - l, suffix, l);
}

static void report_next(size_t i);

static void on_registry_publish(size_t i, const mqtt_publish *m, double t)
{
    peer *pe = &peers[i];
    if (ends_with(m->topic, "/update/delta")) {
        S.deltas++;
        if (phase == PH_REPORTED) S.deltas_in_reported++;
        long long seq = number_after(m->payload, m->payload_len, "\"seq\":");
        if (seq > 0) pe->last_seq = seq; /* deltas come in the device's commit order */
        if (seq >= 1 && (size_t)seq <= nmsgs && msgs[seq - 1].dev == i && msgs[seq - 1].sent) {
            if (msgs[seq - 1].got) {
                S.delta_dup++;
            } else {
                msgs[seq - 1].got = t;
                S.delta_received++;
            }
        } else {
            S.delta_stray++;
        }
    } else if (ends_with(m->topic, "/update/accepted") || ends_with(m->topic, "/update/rejected")) {
        bool ok = ends_with(m->topic, "/update/accepted");
        if (pe->outstanding) pe->outstanding--;
        if (ok && t <= window_end) {
            S.accepted++;
            size_t sec = (size_t)(t - S.phase_start);
            if (sec < S.nseconds) S.per_second[sec]++;
        } else if (ok) {
            S.accepted_late++;
        } else {
            long long code = number_after(m->payload, m->payload_len, "\"code\":");
            S.rejected++;
            if (code == 429)
                S.rej_429++;
            else if (code == 503)
                S.rej_503++;
            else if (code == 409)
                S.rej_409++;
            else
                S.rej_other++;
        }
    }
}

static void on_relay_publish(size_t i, const mqtt_publish *m, double t)
{
    long long seq = number_after(m->payload, m->payload_len, "\"seq\":");
    if (i != RELAY_SUB || seq < 1 || (size_t)seq > nmsgs || !msgs[seq - 1].sent) {
        S.relay_stray++; /* a retained message left from an earlier run, say */
    } else if (msgs[seq - 1].got) {
        S.relay_dup++;
    } else {
        msgs[seq - 1].got = t;
        S.relay_received++;
    }
}

static void on_frame(size_t i, const mqtt_frame *f, double t)
{
    if (f->type == MQTT_PUBLISH) {
        mqtt_publish m;
        if (mqtt_decode_publish(f, &m, NULL)) {
            S.protocol++;
            return;
        }
        if (m.qos == 1) {
            uint8_t ack[4];
            int n = mqtt_encode_puback(ack, sizeof ack, m.packet_id);
            if (n > 0) queue_bytes(i, ack, (size_t)n);
        }
        if (phase == PH_RELAY)
            on_relay_publish(i, &m, t);
        else
            on_registry_publish(i, &m, t);
    } else if (f->type == MQTT_SUBACK && f->body_len >= 3) {
        if (!peers[i].subacked) S.subacks++;
        peers[i].subacked = true;
        for (size_t k = 2; k < f->body_len; k++)
            if (f->body[k] == MQTT_SUBACK_FAILURE) S.suback_failures++;
    }
}

/* Reads what connection i has (all of it: epoll is level-triggered but OpenSSL may hold
 * decrypted bytes), handles every whole packet, then tops up and flushes its output. */
static void conn_read(size_t i)
{
    lg_conn *c = &P.cs[i];
    peer *pe = &peers[i];
    while (c->st == LG_UP) {
        if (pe->in_cap - pe->in_len < 1024 &&
            (pe->in_cap >= IN_MAX || !grow(&pe->in, &pe->in_cap, pe->in_len + IN_START))) {
            S.protocol++;
            conn_lost(i);
            return;
        }
        int r = SSL_read(c->ssl, pe->in + pe->in_len, (int)(pe->in_cap - pe->in_len));
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
            conn_lost(i);
            return;
        }
        pe->in_len += (size_t)r;
        double t = lg_now();
        size_t used = 0;
        for (;;) {
            mqtt_frame f;
            int rc = mqtt_frame_next(pe->in + used, pe->in_len - used, 0, &f, NULL);
            if (rc == REG_EAGAIN) break;
            if (rc) {
                S.protocol++;
                conn_lost(i);
                return;
            }
            on_frame(i, &f, t);
            used += f.len;
        }
        memmove(pe->in, pe->in + used, pe->in_len - used);
        pe->in_len -= used;
    }
    if (phase == PH_REPORTED) report_next(i);
    conn_flush(i);
}

static void conn_event(size_t i, uint32_t events)
{
    if (P.cs[i].st != LG_UP) return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_read(i);
    if (P.cs[i].st == LG_UP && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) conn_lost(i);
    if (P.cs[i].st == LG_UP && (events & EPOLLOUT)) conn_flush(i);
}

/* ---- operator HTTP connections ---- */

static hconn *hs;
static size_t nhs, *idle_hs, nidle;
static struct sockaddr_in api_addr;
static const char *token;
static size_t http_ok, http_errors, http_reconnects;

/* Opens operator connection j (a blocking connect: loopback), then puts it, non-blocking, in the
 * epoll set as P.n + j and on the idle list. */
static int http_open(size_t j)
{
    hconn *h = &hs[j];
    memset(h, 0, sizeof *h);
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (h->fd < 0 || connect(h->fd, (struct sockaddr *)&api_addr, sizeof api_addr)) {
        if (h->fd >= 0) close(h->fd);
        h->fd = -1;
        return -1;
    }
    int one = 1;
    setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(h->fd, F_SETFL, fcntl(h->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = P.n + j};
    epoll_ctl(P.ep, EPOLL_CTL_ADD, h->fd, &ev);
    idle_hs[nidle++] = j;
    return 0;
}

/* The server closed connection j, or it failed: its request (if any) counts as failed, and a
 * new connection takes its place. */
static void http_reopen(size_t j)
{
    hconn *h = &hs[j];
    if (h->busy) {
        msgs[h->seq - 1].status = -1;
        http_errors++;
    }
    for (size_t k = 0; k < nidle; k++)
        if (idle_hs[k] == j) idle_hs[k--] = idle_hs[--nidle];
    epoll_ctl(P.ep, EPOLL_CTL_DEL, h->fd, NULL);
    close(h->fd);
    http_reconnects++;
    http_open(j);
}

static void http_arm(size_t j, bool out)
{
    if (hs[j].armed == out) return;
    hs[j].armed = out;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0),
                             .data.u64 = P.n + j};
    epoll_ctl(P.ep, EPOLL_CTL_MOD, hs[j].fd, &ev);
}

static void http_write(size_t j)
{
    hconn *h = &hs[j];
    while (h->out_off < h->out_len) {
        ssize_t w = write(h->fd, h->out + h->out_off, h->out_len - h->out_off);
        if (w > 0) {
            h->out_off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            http_arm(j, true);
            return;
        } else {
            http_reopen(j);
            return;
        }
    }
    http_arm(j, false);
}

static void http_send(size_t j, uint32_t seq)
{
    hconn *h = &hs[j];
    timed *m = &msgs[seq - 1];
    char body[64];
    int bl = snprintf(body, sizeof body, "{\"desired\":{\"seq\":%u}}", seq);
    h->out_len = (size_t)snprintf(h->out, sizeof h->out,
                                  "PUT /devices/%s/shadow/desired HTTP/1.1\r\nHost: bench\r\n"
                                  "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                                  "Content-Length: %d\r\n\r\n%s",
                                  P.devs[m->dev].id, token, bl, body);
    h->out_off = 0;
    h->busy = true;
    h->seq = seq;
    m->sent = lg_now();
    http_write(j);
}

/* Takes every whole response out of connection j's input. */
static void http_parse(size_t j, double t)
{
    hconn *h = &hs[j];
    for (;;) {
        h->in[h->in_len] = 0;
        char *end = strstr(h->in, "\r\n\r\n");
        if (!end) return;
        *end = 0; /* header searches stay within the head */
        int status = 0;
        sscanf(h->in, "HTTP/1.%*d %d", &status);
        const char *cl = strcasestr(h->in, "\r\ncontent-length:");
        bool closing = strcasestr(h->in, "\r\nconnection: close") != NULL;
        *end = '\r';
        size_t head = (size_t)(end + 4 - h->in), clen = cl ? strtoul(cl + 17, NULL, 10) : 0;
        if (h->in_len < head + clen) return;
        memmove(h->in, h->in + head + clen, h->in_len - head - clen);
        h->in_len -= head + clen;
        if (h->busy) {
            timed *m = &msgs[h->seq - 1];
            m->status = status;
            m->answered = t;
            if (status == 200)
                http_ok++;
            else
                http_errors++;
            h->busy = false;
            idle_hs[nidle++] = j;
        }
        if (closing) {
            http_reopen(j);
            return;
        }
    }
}

static void http_read(size_t j)
{
    hconn *h = &hs[j];
    bool eof = false;
    for (;;) {
        if (h->in_len >= sizeof h->in - 1) { /* a response this large is not one of ours */
            http_reopen(j);
            return;
        }
        ssize_t r = read(h->fd, h->in + h->in_len, sizeof h->in - 1 - h->in_len);
        if (r > 0) {
            h->in_len += (size_t)r;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        eof = true;
        break;
    }
    http_parse(j, lg_now());
    if (eof) http_reopen(j);
}

static void http_event(size_t j, uint32_t events)
{
    if (j >= nhs || hs[j].fd < 0) return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) http_read(j);
    if (hs[j].fd >= 0 && (events & EPOLLOUT)) http_write(j);
}

/* ---- the loop ---- */

static void dispatch(int timeout_ms)
{
    struct epoll_event evs[512];
    int k = epoll_wait(P.ep, evs, 512, timeout_ms);
    for (int e = 0; e < k; e++) {
        size_t idx = evs[e].data.u64;
        if (idx < P.n)
            conn_event(idx, evs[e].events);
        else
            http_event(idx - P.n, evs[e].events);
    }
}

/* Subscribes every connection that is up to its device's shadow topics `suffixes` and waits (at
 * most 60 s) for the SUBACKs; the number subscribed. */
static size_t subscribe_all(const char *const *suffixes, size_t nsuffixes, uint8_t qos,
                            uint16_t pid)
{
    size_t want = 0, lost0 = S.lost;
    S.subacks = 0;
    for (size_t i = 0; i < P.n; i++) {
        if (P.cs[i].st != LG_UP) continue;
        char filters[4][128];
        const char *f[4];
        for (size_t k = 0; k < nsuffixes && k < 4; k++) {
            snprintf(filters[k], sizeof filters[k], "$registry/devices/%s/shadow/%s", P.devs[i].id,
                     suffixes[k]);
            f[k] = filters[k];
        }
        peers[i].subacked = false;
        queue_subscribe(i, pid, f, nsuffixes < 4 ? nsuffixes : 4, qos);
        conn_flush(i);
        want++;
    }
    double until = lg_now() + 60;
    while (S.subacks + (S.lost - lost0) < want && lg_now() < until)
        dispatch(100);
    return S.subacks;
}

static size_t pick_device(void)
{
    for (int tries = 0; tries < 1000; tries++) {
        size_t i = (size_t)(next_random() % P.n);
        if (P.cs[i].st == LG_UP) return i;
    }
    return 0;
}

static double ms(double s)
{
    return s * 1000;
}

/* Phase 1: PUT desired on a steady schedule, deltas timed on the devices. */
static void run_deltas(double seconds, double rate, int server_pid)
{
    nmsgs = (size_t)(seconds * rate);
    msgs = calloc(nmsgs ? nmsgs : 1, sizeof *msgs);
    phase = PH_DELTA;
    size_t next = 0, late = 0, lost0 = S.lost;
    threads_mark(server_pid);
    double t0 = lg_now(), cpu0 = server_pid ? lg_cpu_s(server_pid) : 0, self0 = self_cpu_s();
    double late_max = 0, all_answered = 0, cpu1 = cpu0, self1 = self0;
    for (;;) {
        double now = lg_now();
        while (next < nmsgs && nidle && t0 + (double)next / rate <= now) {
            double behind = now - (t0 + (double)next / rate);
            if (behind > 0.010) late++;
            if (behind > late_max) late_max = behind;
            msgs[next].dev = (uint32_t)pick_device();
            http_send(idle_hs[--nidle], (uint32_t)(next + 1));
            next++;
        }
        if (next == nmsgs && nidle == nhs) {
            if (!all_answered) {
                all_answered = now;
                cpu1 = server_pid ? lg_cpu_s(server_pid) : 0;
                self1 = self_cpu_s();
            }
            if (S.delta_received >= http_ok || now - all_answered > DRAIN_S) break;
        }
        if (now - t0 > seconds + 60) break; /* a registry that stopped answering */
        int timeout = 50;
        if (next < nmsgs) {
            double wait = t0 + (double)next / rate - now;
            timeout = !nidle ? 1 : wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        }
        dispatch(timeout);
    }
    if (!all_answered) {
        all_answered = lg_now();
        cpu1 = server_pid ? lg_cpu_s(server_pid) : 0;
        self1 = self_cpu_s();
    }
    double *lat = calloc(nmsgs ? nmsgs : 1, sizeof *lat),
           *put = calloc(nmsgs ? nmsgs : 1, sizeof *put);
    size_t nlat = 0, nput = 0, missing = 0;
    for (size_t k = 0; k < next; k++) {
        if (msgs[k].status != 200) continue;
        put[nput++] = msgs[k].answered - msgs[k].sent;
        if (msgs[k].got)
            lat[nlat++] = msgs[k].got - msgs[k].sent;
        else
            missing++;
    }
    qsort(lat, nlat, sizeof *lat, lg_cmp_double);
    qsort(put, nput, sizeof *put, lg_cmp_double);
    double wall = all_answered - t0;
    printf("delta puts=%zu ok=%zu http_errors=%zu http_reconnects=%zu seconds=%.1f "
           "put_per_sec=%.0f received=%zu missing=%zu duplicates=%zu stray=%zu p50_ms=%.2f "
           "p99_ms=%.2f max_ms=%.2f put_p50_ms=%.2f put_p99_ms=%.2f late=%zu late_max_ms=%.1f "
           "lost=%zu",
           next, nput, http_errors, http_reconnects, wall, (double)nput / wall, nlat, missing,
           S.delta_dup, S.delta_stray, ms(lg_quantile(lat, nlat, 0.5)),
           ms(lg_quantile(lat, nlat, 0.99)), nlat ? ms(lat[nlat - 1]) : 0,
           ms(lg_quantile(put, nput, 0.5)), ms(lg_quantile(put, nput, 0.99)), late, ms(late_max),
           S.lost - lost0);
    if (server_pid) printf(" server_cpu_cores=%.2f", (cpu1 - cpu0) / wall);
    thread_cpu threads1[MAX_THREADS];
    size_t nthreads1 = server_pid ? threads_cpu(server_pid, threads1, MAX_THREADS) : 0;
    threads_print(server_pid, threads1, nthreads1, lg_now() - t0);
    printf(" loadgen_cpu_cores=%.2f\n", (self1 - self0) / wall);
    fflush(stdout);
    free(lat);
    free(put);
}

/* Tops connection i's window of reported updates up (phase 2). */
static void report_next(size_t i)
{
    peer *pe = &peers[i];
    while (sending && pe->outstanding < window_max && P.cs[i].st == LG_UP) {
        char topic[128], payload[128];
        snprintf(topic, sizeof topic, "$registry/devices/%s/shadow/update", P.devs[i].id);
        if (pe->last_seq > 0)
            snprintf(payload, sizeof payload, "{\"state\":{\"reported\":{\"seq\":%lld,\"n\":%lu}}}",
                     pe->last_seq, ++pe->reported);
        else
            snprintf(payload, sizeof payload, "{\"state\":{\"reported\":{\"n\":%lu}}}",
                     ++pe->reported);
        queue_publish(i, topic, payload, report_qos, false);
        pe->outstanding++;
        S.sent++;
    }
}

/* Phase 2: every device reports as fast as its answers come back. */
static void run_reported(double seconds, int server_pid)
{
    static const char *const topics[] = {"update/accepted", "update/rejected"};
    size_t subscribed = subscribe_all(topics, 2, 0, 2);
    phase = PH_REPORTED;
    S.nseconds = (size_t)seconds + 1;
    S.per_second = calloc(S.nseconds, sizeof *S.per_second);
    size_t lost0 = S.lost;
    threads_mark(server_pid);
    double t0 = lg_now(), cpu0 = server_pid ? lg_cpu_s(server_pid) : 0, self0 = self_cpu_s();
    S.phase_start = t0;
    window_end = t0 + seconds;
    sending = true;
    for (size_t i = 0; i < P.n; i++) {
        report_next(i);
        conn_flush(i);
    }
    while (lg_now() < window_end)
        dispatch(50);
    double wall = lg_now() - t0;
    double cpu1 = server_pid ? lg_cpu_s(server_pid) : 0, self1 = self_cpu_s();
    thread_cpu window_threads[MAX_THREADS];
    size_t nwindow_threads = server_pid ? threads_cpu(server_pid, window_threads, MAX_THREADS) : 0;
    sending = false;
    size_t outstanding = 0;
    /* The registry answers every update it took: wait for the backlog (WINDOW a device) to go. */
    for (double until = lg_now() + 12 * DRAIN_S; lg_now() < until;) {
        outstanding = 0;
        for (size_t i = 0; i < P.n; i++)
            if (P.cs[i].st == LG_UP) outstanding += peers[i].outstanding;
        if (!outstanding) break;
        dispatch(50);
    }
    printf("reported subscribed=%zu seconds=%.1f sent=%zu accepted=%zu per_sec=%.0f "
           "rejected=%zu rejected_429=%zu rejected_503=%zu rejected_409=%zu rejected_other=%zu "
           "accepted_after_window=%zu unanswered=%zu deltas=%zu lost=%zu qos=%u window=%u",
           subscribed, wall, S.sent, S.accepted, (double)S.accepted / wall, S.rejected, S.rej_429,
           S.rej_503, S.rej_409, S.rej_other, S.accepted_late, outstanding, S.deltas_in_reported,
           S.lost - lost0, report_qos, window_max);
    if (server_pid) printf(" server_cpu_cores=%.2f", (cpu1 - cpu0) / wall);
    threads_print(server_pid, window_threads, nwindow_threads, wall);
    printf(" loadgen_cpu_cores=%.2f\nreported_timeline=", (self1 - self0) / wall);
    for (size_t k = 0; k < S.nseconds && k < (size_t)wall; k++)
        printf("%s%zu", k ? "," : "", S.per_second[k]);
    printf("\n");
    fflush(stdout);
}

static int run_registry(int argc, char **argv)
{
    if (argc < 11) return 2;
    const char *host = argv[2];
    int mqtt_port = atoi(argv[3]);
    size_t n = strtoul(argv[6], NULL, 10);
    double seconds = atof(argv[9]), rate = atof(argv[10]);
    int server_pid = argc > 11 ? atoi(argv[11]) : 0;
    nhs = argc > 12 ? strtoul(argv[12], NULL, 10) : 16;
    window_max = argc > 13 ? (unsigned)atoi(argv[13]) : 8;
    report_qos = argc > 14 ? (uint8_t)atoi(argv[14]) : 1;
    token = argv[8];
    if (!n || nhs < 1 || nhs > MAX_HTTP || rate <= 0 || report_qos > 1 || !window_max) return 2;

    lg_raise_nofile(n + nhs);
    if (lg_pool_init(&P, argv[4], argv[5], 0, n)) {
        fprintf(stderr, "bench_shadow: cannot read %zu devices from %s\n", n, argv[5]);
        return 1;
    }
    SSL_CTX_set_mode(P.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    peers = calloc(n, sizeof *peers);
    lg_pool_open(&P, host, mqtt_port, 200, 900);
    printf("connected=%zu failed=%zu seconds=%.1f per_sec=%.0f connack_p50_ms=%.1f "
           "connack_p99_ms=%.1f\n",
           P.up, P.failed, P.seconds, (double)P.up / P.seconds, ms(lg_quantile(P.lat, P.nlat, 0.5)),
           ms(lg_quantile(P.lat, P.nlat, 0.99)));
    fflush(stdout);
    if (!P.up) return 1;
    static const char *const delta[] = {"update/delta"};
    size_t subscribed = subscribe_all(delta, 1, 1, 1);
    printf("subscribed=%zu suback_failures=%zu\n", subscribed, S.suback_failures);
    fflush(stdout);

    api_addr =
        (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[7]))};
    inet_pton(AF_INET, host, &api_addr.sin_addr);
    hs = calloc(nhs, sizeof *hs);
    idle_hs = calloc(nhs, sizeof *idle_hs);
    for (size_t j = 0; j < nhs; j++)
        if (http_open(j)) {
            fprintf(stderr, "bench_shadow: cannot connect to the operator API\n");
            return 1;
        }
    run_deltas(seconds, rate, server_pid);
    run_reported(seconds, server_pid);
    for (size_t j = 0; j < nhs; j++)
        if (hs[j].fd >= 0) close(hs[j].fd);
    for (size_t i = 0; i < n; i++) {
        free(peers[i].in);
        free(peers[i].out);
    }
    lg_pool_free(&P);
    free(peers);
    free(hs);
    free(idle_hs);
    free(msgs);
    free(S.per_second);
    return 0;
}

/* ---- the broker's floor ---- */

static int run_relay(int argc, char **argv)
{
    if (argc < 8) return 2;
    double seconds = atof(argv[6]), rate = atof(argv[7]);
    int server_pid = argc > 8 ? atoi(argv[8]) : 0;
    if (rate <= 0) return 2;
    if (lg_pool_init(&P, argv[4], argv[5], 0, 2)) {
        fprintf(stderr, "bench_shadow: cannot read 2 devices from %s\n", argv[5]);
        return 1;
    }
    SSL_CTX_set_mode(P.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    peers = calloc(2, sizeof *peers);
    lg_pool_open(&P, argv[2], atoi(argv[3]), 2, 30);
    if (P.up != 2) {
        fprintf(stderr, "bench_shadow: the broker took %zu of 2 connections\n", P.up);
        return 1;
    }
    phase = PH_RELAY;
    char topic[128];
    snprintf(topic, sizeof topic, "bench/relay/%s", P.devs[RELAY_SUB].id);
    const char *f[] = {topic};
    queue_subscribe(RELAY_SUB, 1, f, 1, 1);
    conn_flush(RELAY_SUB);
    for (double until = lg_now() + 10; !peers[RELAY_SUB].subacked && lg_now() < until;)
        dispatch(100);
    nmsgs = (size_t)(seconds * rate);
    msgs = calloc(nmsgs ? nmsgs : 1, sizeof *msgs);
    size_t next = 0;
    double t0 = lg_now(), cpu0 = server_pid ? lg_cpu_s(server_pid) : 0, self0 = self_cpu_s();
    double done = 0, cpu1 = cpu0, self1 = self0;
    for (;;) {
        double now = lg_now();
        while (next < nmsgs && t0 + (double)next / rate <= now) {
            char payload[64];
            snprintf(payload, sizeof payload, "{\"seq\":%zu}", next + 1);
            msgs[next].sent = lg_now();
            queue_publish(RELAY_PUB, topic, payload, 1, true);
            conn_flush(RELAY_PUB);
            next++;
        }
        if (next == nmsgs && !done) {
            done = now;
            cpu1 = server_pid ? lg_cpu_s(server_pid) : 0;
            self1 = self_cpu_s();
        }
        if (done && (S.relay_received == nmsgs || now - done > DRAIN_S)) break;
        if (P.up != 2) break;
        double wait = t0 + (double)next / rate - now;
        dispatch(next == nmsgs ? 50 : wait <= 0 ? 0 : (int)(wait * 1000) + 1);
    }
    double *lat = calloc(nmsgs ? nmsgs : 1, sizeof *lat);
    size_t nlat = 0;
    for (size_t k = 0; k < next; k++)
        if (msgs[k].got) lat[nlat++] = msgs[k].got - msgs[k].sent;
    qsort(lat, nlat, sizeof *lat, lg_cmp_double);
    double wall = (done ? done : lg_now()) - t0;
    printf("relay msgs=%zu seconds=%.1f per_sec=%.0f received=%zu missing=%zu duplicates=%zu "
           "stray=%zu p50_ms=%.2f p99_ms=%.2f max_ms=%.2f lost=%zu",
           next, wall, (double)next / wall, nlat, next - nlat, S.relay_dup, S.relay_stray,
           ms(lg_quantile(lat, nlat, 0.5)), ms(lg_quantile(lat, nlat, 0.99)),
           nlat ? ms(lat[nlat - 1]) : 0, S.lost);
    if (server_pid) printf(" server_cpu_cores=%.2f", (cpu1 - cpu0) / wall);
    printf(" loadgen_cpu_cores=%.2f\n", (self1 - self0) / wall);
    free(lat);
    free(msgs);
    for (size_t i = 0; i < 2; i++) {
        free(peers[i].in);
        free(peers[i].out);
    }
    free(peers);
    lg_pool_free(&P);
    return nlat ? 0 : 1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a connection the server closed is a failure, not our end */
    int rc = 2;
    if (argc > 1 && !strcmp(argv[1], "registry")) rc = run_registry(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "relay")) rc = run_relay(argc, argv);
    if (rc == 2)
        fprintf(stderr, "usage: bench_shadow registry HOST MQTT_PORT SERVER_CA DEVICES_FILE N "
                        "API_PORT TOKEN SECONDS RATE [SERVER_PID [HTTP_CONNS [WINDOW [QOS]]]]\n"
                        "       bench_shadow relay HOST PORT SERVER_CA DEVICES_FILE SECONDS RATE "
                        "[SERVER_PID]\n");
    return rc;
}
