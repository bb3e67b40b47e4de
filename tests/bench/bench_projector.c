/*
 * bench_projector.c - how fast the projector decides and applies commands.
 *
 *   bench_projector [--shadow M] DIR N [BROKERS]
 *
 * Fills the commands log of a fresh data directory DIR with one CreateTenant (admin token
 * "bench-admin", operator token "bench-token"), N RegisterDevice commands (each with three
 * metadata keys) and N/2 PatchMetadata commands, and with --shadow, M UpdateShadow commands
 * (a device reporting two values, round robin over the devices; timed on their own as well),
 * then starts the projector and times it until
 * every command is decided, applied and committed. Without BROKERS the logs are the embedded ones
 * (fsync on) and the view is unlogged, as `registry serve` runs; with BROKERS they are Kafka
 * topics on that broker (a fresh region per run) and the view is logged for secondaries, as
 * `registry project` runs. Prints commands/s and events/s, and leaves DIR usable by `registry
 * serve` (with REGISTRY_ADMIN_TOKEN=bench-admin) with the device ids in DIR/bench-ids.txt, for the
 * lookup benchmark.
 *
 * Before the timed run it prints the machine's phase: the latency of a dependent read through 64
 * MiB (mostly cache and TLB misses) and of one step of a dependent integer chain. The VM these
 * figures come from moves by 2x within the hour, mostly in memory latency (120 ns in a fast
 * phase, over 200 in a slow one), and a run's figure means little without it.
 */
#define _GNU_SOURCE
#include "bus.h"
#include "clock.h"
#include "err.h"
#include "eventlog.h"
#include "ids.h"
#include "projector/projector.h"
#include "projector/view.h"
#include "schemas/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *TENANT = "0b5e1c52-7d0e-4c39-9a57-3f2d8e6a4b10";

/* The machine's phase (see above): ns per dependent read through 64 MiB; per step of a dependent
 * multiply-add-xor chain (latency); per step of eight independent such chains, which contend for
 * the core's multiplier and issue slots with whatever else runs on it, such as another guest on
 * the same physical core (throughput); and the bandwidth of copying 64 MiB. */
static void print_machine_phase(void)
{
    size_t n = (64u << 20) / sizeof(uint64_t);
    uint64_t *next = malloc(n * sizeof *next), *copy = malloc(n * sizeof *copy);
    uint64_t x = 88172645463325252ull;
    if (!next || !copy) {
        free(next);
        free(copy);
        return;
    }
    for (size_t i = 0; i < n; i++)
        next[i] = i;
    for (size_t i = n - 1; i > 0; i--) { /* one random cycle through all (Sattolo) */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t j = (size_t)(x % i), t = next[i];
        next[i] = next[j];
        next[j] = t;
    }
    memcpy(copy, next, n * sizeof *next); /* its pages faulted in before it is timed */
    enum { READS = 4000000, STEPS = 200000000, LANES = 8, COPIES = 4 };
    uint64_t t0 = clock_mono_ns(), at = 0;
    for (int i = 0; i < READS; i++)
        at = next[at];
    uint64_t t1 = clock_mono_ns(), v = at | 1;
    for (long i = 0; i < STEPS; i++) {
        v = v * 6364136223846793005ull + 1442695040888963407ull;
        v ^= v >> 17;
    }
    uint64_t t2 = clock_mono_ns(), lane[LANES];
    for (int l = 0; l < LANES; l++)
        lane[l] = v + (uint64_t)l;
    for (long i = 0; i < STEPS / LANES; i++)
        for (int l = 0; l < LANES; l++) {
            lane[l] = lane[l] * 6364136223846793005ull + 1442695040888963407ull;
            lane[l] ^= lane[l] >> 17;
        }
    uint64_t t3 = clock_mono_ns();
    for (int c = 0; c < COPIES; c++) {
        next[c] = lane[c % LANES]; /* each copy differs from the last */
        memcpy(copy, next, n * sizeof *next);
    }
    uint64_t t4 = clock_mono_ns();
    for (int l = 0; l < LANES; l++)
        v ^= lane[l];
    printf("machine phase: %.0f ns per dependent read through 64 MiB, %.2f ns per chained integer "
           "step, %.2f ns per step of %d independent chains, %.1f GB/s copying 64 MiB (%llu)\n",
           (double)(t1 - t0) / READS, (double)(t2 - t1) / STEPS, (double)(t3 - t2) / STEPS,
           LANES, (double)COPIES * (double)(n * sizeof *next) / (double)(t4 - t3),
           (unsigned long long)((v ^ copy[n - 1]) & 1));
    free(next);
    free(copy);
}

static void append(elog *log, codec_registry *codec, json_t *cmd, codec_buf *buf)
{
    buf->len = 0;
    if (codec_encode(codec, "registry.Command", cmd, buf)) {
        fprintf(stderr, "encode failed\n");
        exit(1);
    }
    int err;
    while ((err = elog_append(log, TENANT, strlen(TENANT), buf->data, buf->len, clock_now_ms(),
                              NULL, NULL)) == REG_EAGAIN)
        usleep(1000);
    if (err) {
        fprintf(stderr, "append failed: %s\n", reg_strerror(err));
        exit(1);
    }
    json_decref(cmd);
}

static json_t *command_json(const char *kind, json_t *body)
{
    reg_uuid cid;
    char cid_s[37];
    reg_uuid_new(&cid);
    reg_uuid_format(&cid, cid_s);
    return json_pack("{s:s, s:s, s:I, s:s, s:{s:o}}", "command_id", cid_s, "tenant_id", TENANT,
                     "time_ms", (json_int_t)clock_now_ms(), "actor", "bench", "body", kind, body);
}

int main(int argc, char **argv)
{
    long shadow_updates = 0;
    if (argc > 2 && !strcmp(argv[1], "--shadow")) {
        shadow_updates = atol(argv[2]);
        argc -= 2;
        argv += 2;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: bench_projector [--shadow M] DIR N [BROKERS]\n");
        return 2;
    }
    const char *dir = argv[1], *brokers = argc > 3 ? argv[3] : NULL;
    long n = atol(argv[2]);
    mkdir(dir, 0700);
    char region[64], ctopic[128], etopic[128], path[4096];
    if (brokers)
        snprintf(region, sizeof region, "bench%d", (int)getpid());
    else
        snprintf(region, sizeof region, "local");
    snprintf(ctopic, sizeof ctopic, "registry.%s.commands", region);
    snprintf(etopic, sizeof etopic, "registry.%s.events", region);

    elog_config cc = {.topic = ctopic, .dir = dir, .brokers = brokers, .fsync = 1};
    elog_config ec = cc;
    ec.topic = etopic;
    elog *commands = NULL, *events = NULL;
    view *v = NULL;
    bus *b = NULL;
    codec_registry *codec = NULL;
    if (elog_open(&cc, &commands) || elog_open(&ec, &events) ||
        view_open(dir, brokers ? VIEW_PRIMARY : VIEW_PRIMARY_UNLOGGED, 0, &v) ||
        bus_open(NULL, &b) || codec_registry_new(&codec)) {
        fprintf(stderr, "cannot open %s\n", dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/admin-token.sha256", dir);
    FILE *f = fopen(path, "w");
    char hash[65];
    reg_token_hash("bench-admin", hash);
    fprintf(f, "%s\n", hash);
    fclose(f);

    codec_buf buf = {0};
    reg_token_hash("bench-token", hash);
    append(commands, codec,
           command_json("CreateTenant",
                        json_pack("{s:s, s:i, s:i, s:i, s:s, s:s}", "name", "bench",
                                  "cert_validity_days", 365, "rotate_before_days", 30,
                                  "overlap_days", 7, "token_id",
                                  "5d7e4c1a-9b3f-4e2d-8c6a-1f0e9d8c7b6a", "token_hash", hash)),
           &buf);
    snprintf(path, sizeof path, "%s/bench-ids.txt", dir);
    FILE *ids = fopen(path, "w");
    char(*dev)[37] = malloc((size_t)n * 37);
    static const char *const types[] = {"thermostat", "meter", "camera", "gateway"};
    static const char *const regions[] = {"eu-west", "eu-north", "us-east", "ap-south"};
    uint64_t t0 = clock_mono_ns();
    for (long i = 0; i < n; i++) {
        reg_uuid did;
        reg_uuid_new(&did);
        reg_uuid_format(&did, dev[i]);
        fprintf(ids, "%s\n", dev[i]);
        char serial[32], fw[16], floor[8];
        snprintf(serial, sizeof serial, "SN-%09ld", i);
        snprintf(fw, sizeof fw, "2.%ld.0", i % 12);
        snprintf(floor, sizeof floor, "%ld", i % 40);
        append(commands, codec,
               command_json("RegisterDevice",
                            json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}}", "device_id",
                                      dev[i], "serial_number", serial, "device_type", types[i % 4],
                                      "hardware_revision", "rev-b", "firmware_version", fw,
                                      "metadata", "region", regions[i % 4], "floor", floor, "owner",
                                      "facilities")),
               &buf);
    }
    for (long i = 0; i < n / 2; i++) {
        char room[16];
        snprintf(room, sizeof room, "r%ld", i % 500);
        append(commands, codec,
               command_json("PatchMetadata", json_pack("{s:s, s:{s:s, s:s}, s:b}", "device_id",
                                                       dev[i * 2], "changes", "room", room, "floor",
                                                       "7", "require_existing", 0)),
               &buf);
    }
    fclose(ids);
    int64_t before_shadows = 1 + n + n / 2;
    for (long i = 0; i < shadow_updates; i++) {
        char patch[64];
        snprintf(patch, sizeof patch, "{\"seq\":%ld,\"temp\":%ld}", i, 180 + i % 60);
        append(commands, codec,
               command_json("UpdateShadow",
                            json_pack("{s:s, s:s, s:n, s:n, s:n}", "device_id", dev[i % n],
                                      "reported", patch, "desired", "version", "client_token")),
               &buf);
    }
    if (elog_flush(commands, 600000)) {
        fprintf(stderr, "flush failed\n");
        return 1;
    }
    int64_t total = elog_end_offset(commands);
    double fill_s = (double)(clock_mono_ns() - t0) / 1e9;
    printf("commands log (%s): %lld commands appended in %.2f s (%.0f/s, encode included)\n",
           brokers ? "kafka" : "embedded", (long long)total, fill_s, (double)total / fill_s);

    print_machine_phase();
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    projector_config pc = {.decide = {.region = region}};
    projector *p = NULL;
    t0 = clock_mono_ns();
    if (projector_start(v, commands, events, b, &pc, &p)) return 1;
    projector_stats st;
    uint64_t t_shadows = 0;
    for (;;) {
        projector_get_stats(p, &st);
        if (!t_shadows && st.next_offset >= before_shadows) t_shadows = clock_mono_ns();
        if (st.next_offset >= total) break;
        usleep(2000);
    }
    double s = (double)(clock_mono_ns() - t0) / 1e9;
    if (shadow_updates)
        printf("projector (%s): %ld shadow updates in %.2f s = %.0f/s\n",
               brokers ? "kafka" : "embedded", shadow_updates,
               (double)(clock_mono_ns() - t_shadows) / 1e9,
               (double)shadow_updates / ((double)(clock_mono_ns() - t_shadows) / 1e9));
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                 (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("projector (%s): %lld commands (%llu accepted, %llu rejected) in %.2f s = %.0f "
           "commands/s, %.0f events/s; process CPU %.2f s (%.2f cores)\n",
           brokers ? "kafka" : "embedded", (long long)total, (unsigned long long)st.accepted,
           (unsigned long long)st.rejected, s, (double)total / s, (double)st.events / s, cpu,
           cpu / s);
    printf("projector (%s): the deciding thread %.2f s of CPU (%.0f commands per CPU second), "
           "the committing thread %.2f s\n",
           brokers ? "kafka" : "embedded", (double)st.decide_cpu_ns / 1e9,
           (double)total / ((double)st.decide_cpu_ns / 1e9), (double)st.commit_cpu_ns / 1e9);
    projector_stop(p);
    free(dev);
    free(buf.data);
    codec_registry_free(codec);
    bus_close(b);
    elog_close(events);
    elog_close(commands);
    view_close(v);
    return 0;
}
