/*
 * main.c - the `registry` binary: one program, one role per subcommand.
 *
 *   registry serve   --data DIR            every role in one process, embedded log and bus
 *   registry ingest  --data DIR --kafka --redis   the write API: commands into Kafka
 *   registry project --data DIR --kafka --redis   the projector: owns the view (primary)
 *   registry front   --data DIR --redis           the read API on a secondary of the view
 *   registry rebuild --data DIR --into DIR2 [--until TIME]   a view from the events log alone
 *   registry verify  --data DIR            rebuild aside and compare with DIR's view
 *
 * `serve` also takes --kafka/--redis to run all roles in one process on the distributed engines.
 * The admin token is REGISTRY_ADMIN_TOKEN when set; otherwise `serve`/`project` make one on first
 * start, print it once, and keep only its hash (DIR/admin-token.sha256).
 */
#define _GNU_SOURCE
#include "bus.h"
#include "clock.h"
#include "err.h"
#include "eventlog.h"
#include "http_server.h"
#include "ids.h"
#include "projector/projector.h"
#include "projector/rebuild.h"
#include "projector/rotation.h"
#include "projector/view.h"
#include "query/api.h"
#include "query/device_port.h"
#include "query/mqtt_port.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

struct options {
    const char *role;
    const char *data;
    const char *listen_api;
    const char *listen_device;
    const char *listen_mqtt;
    const char *kafka;
    const char *redis;
    const char *region;
    const char *into;
    const char *until;
    unsigned rotation_check_ms;
    size_t max_manifest_bytes;
    unsigned seen_interval_ms;
    unsigned max_mqtt_connections;
    unsigned view_cache_mb;
    long shadow_cache;
    long serial_filter_mb;
    int batch_max;
    shadow_limits shadow;
    int no_fsync;
    uint64_t log_segment_bytes;
};

static void usage(FILE *f)
{
    fprintf(
        f, "usage: registry serve|ingest|project|front|rebuild|verify [options]\n"
           "  --data DIR              data directory (default ./registry-data)\n"
           "  --listen-api ADDR:PORT  operator API (default 127.0.0.1:8080; port 0 picks one)\n"
           "  --listen-device ADDR:PORT  device API, HTTPS (serve, front; default 0.0.0.0:8443)\n"
           "  --listen-mqtt ADDR:PORT    MQTT over TLS for devices (serve, front; default "
           "0.0.0.0:8883)\n"
           "  --kafka HOST:PORT       use Kafka for the logs\n"
           "  --redis HOST:PORT       use Redis for notifications between processes\n"
           "  --region NAME           region name (default local)\n"
           "  --no-fsync              do not sync embedded log appends (benchmarks only)\n"
           "  --log-segment-mb N      size of an embedded log's segment files (default 64)\n"
           "  --rotation-check-ms N   how often certificates are checked for rotation (default "
           "60000)\n"
           "  --max-manifest-bytes N  largest POST /manifests body (default 67108864)\n"
           "  --seen-interval-ms N    last_seen_at is written at most this often per device "
           "(default 300000)\n"
           "  --max-mqtt-connections N  MQTT connections held at once (default 200000, within the\n"
           "                          file-descriptor limit)\n"
           "  --view-cache-mb N       the view's block cache in this process (default 256)\n"
           "  --batch-max N           commands the projector decides per view commit (default "
           "4000)\n"
           "  --shadow-cache N        shadows the projector keeps decoded between batches "
           "(default 65536; 0: none)\n"
           "  --serial-filter-mb N    bound of the projector's filter of serial numbers, which\n"
           "                          spares a registration's store lookup (default 64; 0: none)\n"
           "  --shadow-max-bytes N    desired + reported of a shadow after a merge (default 8192)\n"
           "  --shadow-max-depth N    levels of a shadow's desired or reported (default 6)\n"
           "  --shadow-max-client-token N  bytes of a shadow update's client token (default 64)\n"
           "  --into DIR              rebuild: where to build the view\n"
           "  --until TIME            rebuild: only events up to this RFC 3339 time\n");
}

/* A decimal option value within [min, max]; -1 after saying what is wrong. */
static int number_option(const char *name, const char *arg, unsigned long long min,
                         unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || n < min || n > max) {
        fprintf(stderr, "registry: %s takes %llu to %llu\n", name, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    unsigned long long n;
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"listen-api", required_argument, NULL, 'a'},
        {"listen-device", required_argument, NULL, 'D'},
        {"listen-mqtt", required_argument, NULL, 'M'},
        {"kafka", required_argument, NULL, 'k'},
        {"redis", required_argument, NULL, 'r'},
        {"region", required_argument, NULL, 'g'},
        {"no-fsync", no_argument, NULL, 'n'},
        {"log-segment-mb", required_argument, NULL, 'L'},
        {"into", required_argument, NULL, 'i'},
        {"until", required_argument, NULL, 'u'},
        {"rotation-check-ms", required_argument, NULL, 'R'},
        {"max-manifest-bytes", required_argument, NULL, 'm'},
        {"seen-interval-ms", required_argument, NULL, 's'},
        {"max-mqtt-connections", required_argument, NULL, 'C'},
        {"view-cache-mb", required_argument, NULL, 'V'},
        {"shadow-cache", required_argument, NULL, 'H'},
        {"serial-filter-mb", required_argument, NULL, 'F'},
        {"batch-max", required_argument, NULL, 'X'},
        {"shadow-max-bytes", required_argument, NULL, 'B'},
        {"shadow-max-depth", required_argument, NULL, 'P'},
        {"shadow-max-client-token", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->data = "registry-data";
    o->listen_api = "127.0.0.1:8080";
    o->listen_device = "0.0.0.0:8443";
    o->listen_mqtt = "0.0.0.0:8883";
    o->max_manifest_bytes = 64u << 20;
    o->max_mqtt_connections = 200000;
    o->view_cache_mb = VIEW_CACHE_MB_DEFAULT;
    o->region = "local";
    if (argc < 2 || argv[1][0] == '-') return -1;
    o->role = argv[1];
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->data = optarg;
            break;
        case 'a':
            o->listen_api = optarg;
            break;
        case 'D':
            o->listen_device = optarg;
            break;
        case 'M':
            o->listen_mqtt = optarg;
            break;
        case 'k':
            o->kafka = optarg;
            break;
        case 'r':
            o->redis = optarg;
            break;
        case 'g':
            o->region = optarg;
            break;
        case 'n':
            o->no_fsync = 1;
            break;
        case 'L':
            if (number_option("--log-segment-mb", optarg, 1, 1u << 16, &n)) return -1;
            o->log_segment_bytes = (uint64_t)n << 20;
            break;
        case 'i':
            o->into = optarg;
            break;
        case 'u':
            o->until = optarg;
            break;
        case 'm':
            if (number_option("--max-manifest-bytes", optarg, 1024, 1ull << 32, &n)) return -1;
            o->max_manifest_bytes = (size_t)n;
            break;
        case 's':
            if (number_option("--seen-interval-ms", optarg, 1000, 86400000, &n)) return -1;
            o->seen_interval_ms = (unsigned)n;
            break;
        case 'C':
            if (number_option("--max-mqtt-connections", optarg, 1, 10000000, &n)) return -1;
            o->max_mqtt_connections = (unsigned)n;
            break;
        case 'V':
            if (number_option("--view-cache-mb", optarg, 8, 1u << 20, &n)) return -1;
            o->view_cache_mb = (unsigned)n;
            break;
        case 'X':
            if (number_option("--batch-max", optarg, 1, 100000, &n)) return -1;
            o->batch_max = (int)n;
            break;
        case 'H':
            if (number_option("--shadow-cache", optarg, 0, 10000000, &n)) return -1;
            o->shadow_cache = n ? (long)n : -1;
            break;
        case 'F':
            if (number_option("--serial-filter-mb", optarg, 0, 1u << 20, &n)) return -1;
            o->serial_filter_mb = n ? (long)n : -1;
            break;
        case 'B':
            if (number_option("--shadow-max-bytes", optarg, 64, 1u << 24, &n)) return -1;
            o->shadow.max_bytes = (size_t)n;
            break;
        case 'P':
            if (number_option("--shadow-max-depth", optarg, 1, 64, &n)) return -1;
            o->shadow.max_depth = (int)n;
            break;
        case 'T':
            if (number_option("--shadow-max-client-token", optarg, 1, 4096, &n)) return -1;
            o->shadow.max_client_token = (size_t)n;
            break;
        case 'R':
            if (number_option("--rotation-check-ms", optarg, 10, 86400000, &n)) return -1;
            o->rotation_check_ms = (unsigned)n;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    for (const char *s = o->region; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-')) {
            fprintf(stderr, "registry: --region takes lower-case letters, digits and '-'\n");
            return -1;
        }
    return optind == argc ? 0 : -1;
}

/* Every MQTT connection is a descriptor: the soft limit is raised to the hard one, and the
 * connection limit kept within it (with room for the logs, the view's files and the other
 * ports), saying so when that lowers it. */
static void mqtt_connections_bounded(struct options *o)
{
    /* A front end holding 16,000 connections used 38 other descriptors (13 of them table files);
     * a large view has a few hundred table files open (a secondary keeps them all open). */
    enum { RESERVED_FDS = 1024 };
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > o->max_mqtt_connections + RESERVED_FDS)
        return;
    unsigned fit = rl.rlim_cur > 2 * RESERVED_FDS ? (unsigned)(rl.rlim_cur - RESERVED_FDS)
                                                  : (unsigned)(rl.rlim_cur / 2);
    fprintf(stderr,
            "registry: the file-descriptor limit (%llu) holds %u MQTT connections, not %u; raise "
            "it (ulimit -n) for more\n",
            (unsigned long long)rl.rlim_cur, fit, o->max_mqtt_connections);
    o->max_mqtt_connections = fit;
}

static int split_addr(const char *addr, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= cap) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}

/* Finds the admin token's hash: the environment, else the data directory, else (when `create`)
 * a new token printed once. */
static int admin_hash(const char *dir, int create, char hash[65])
{
    const char *env = getenv("REGISTRY_ADMIN_TOKEN");
    if (env && *env) {
        reg_token_hash(env, hash);
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/admin-token.sha256", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        int ok = fscanf(f, "%64s", hash) == 1 && strlen(hash) == 64;
        fclose(f);
        if (ok) return 0;
        fprintf(stderr, "registry: %s is malformed\n", path);
        return REG_EINVAL;
    }
    if (!create) {
        fprintf(stderr, "registry: no admin token: set REGISTRY_ADMIN_TOKEN or start the "
                        "projector on this data directory first\n");
        return REG_ENOTFOUND;
    }
    char token[64];
    if (reg_token_new(token, sizeof token)) return REG_EIO;
    reg_token_hash(token, hash);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return REG_EIO;
    dprintf(fd, "%s\n", hash);
    fsync(fd);
    close(fd);
    printf("admin token (shown once, only its hash is kept): %s\n", token);
    return 0;
}

static uv_signal_t sigint_h, sigterm_h;

static void on_signal(uv_signal_t *h, int signum)
{
    uv_stop(h->loop);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int open_view(const char *dir, enum view_mode mode, unsigned cache_mb, view **out)
{
    /* A secondary needs the primary's files: wait a while for the projector to create them. */
    for (int attempt = 0;; attempt++) {
        int err = view_open(dir, mode, cache_mb, out);
        if (!err || mode == VIEW_PRIMARY || attempt == 60) return err;
        sleep(1);
    }
}

/* After a crash an unlogged view is as it was at its last flush (view.h): nothing is answered
 * until the projector has decided again what the commands log held at the start, so that no
 * read misses a write that was answered before the crash. */
static void wait_for_projector(projector *p, elog *commands)
{
    int64_t end = elog_end_offset(commands);
    uint64_t started = clock_mono_ns(), next_word = started + 10000000000ull;
    projector_stats st;
    for (;;) {
        projector_get_stats(p, &st);
        if (end < 0 || st.next_offset >= end) break;
        if (clock_mono_ns() >= next_word) { /* a batch that keeps failing says why on stderr */
            fprintf(stderr,
                    "registry: deciding the commands the view had not flushed: %lld of %lld\n",
                    (long long)st.next_offset, (long long)end);
            next_word += 10000000000ull;
        }
        usleep(10000);
    }
    double took = (double)(clock_mono_ns() - started) / 1e9;
    if (took > 0.5)
        fprintf(stderr, "registry: the view caught up with the commands log in %.1f s\n", took);
}

/* `rebuild` and `verify`: the view from the events log alone. */
static int run_rebuild(const struct options *o, int verify)
{
    int64_t until = INT64_MAX;
    if (o->until && clock_parse_rfc3339(o->until, &until)) {
        fprintf(stderr, "registry: --until takes an RFC 3339 time\n");
        return 2;
    }
    char into[4096];
    if (verify)
        snprintf(into, sizeof into, "%s/verify-%d", o->data, (int)getpid());
    else if (!o->into) {
        fprintf(stderr, "registry rebuild: --into DIR is required\n");
        return 2;
    } else
        snprintf(into, sizeof into, "%s", o->into);
    if (mkdir(into, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "registry: cannot create %s: %s\n", into, strerror(errno));
        return 1;
    }
    char topic[128];
    snprintf(topic, sizeof topic, "registry.%s.events", o->region);
    elog_config ec = {.topic = topic,
                      .dir = o->data,
                      .brokers = o->kafka,
                      .fsync = 1,
                      .segment_bytes = o->log_segment_bytes};
    elog *events = NULL;
    view *built = NULL, *current = NULL;
    uint64_t applied = 0;
    int err = elog_open(&ec, &events);
    /* The view is compared with the events it has applied: after a crash an unlogged view (view.h)
     * can be behind the events log, and the registry decides the rest again when it starts. */
    int64_t applied_to = INT64_MAX, end = err ? -1 : elog_end_offset(events);
    if (!err && verify) {
        err = view_open(o->data, VIEW_SECONDARY, o->view_cache_mb, &current);
        if (!err) err = view_catch_up(current);
        if (!err) applied_to = view_meta_get(current, VIEW_META_EVENTS_NEXT, 0);
        if (!err && end >= 0 && applied_to < end)
            printf("verify: the view has applied the events before offset %lld of %lld; the "
                   "registry decides the rest again when it starts\n",
                   (long long)applied_to, (long long)end);
    }
    if (!err) err = view_open(into, VIEW_PRIMARY, o->view_cache_mb, &built);
    if (!err) err = rebuild_view(events, built, until, applied_to, &applied);
    if (!err) printf("rebuilt %s/view from %llu events\n", into, (unsigned long long)applied);
    if (!err && verify) {
        err = rebuild_compare(current, built);
        printf("verify: %s\n",
               err ? "the view differs from its events" : "the view equals its events");
    }
    view_close(current);
    view_close(built);
    elog_close(events);
    if (verify) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'/view-secondary-*", into, o->data);
        if (system(cmd) != 0) fprintf(stderr, "registry: could not remove %s\n", into);
    }
    if (err) fprintf(stderr, "registry: %s\n", reg_strerror(err));
    return err ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(o.role, "rebuild") || !strcmp(o.role, "verify"))
        return run_rebuild(&o, !strcmp(o.role, "verify"));
    int serve = !strcmp(o.role, "serve"), ingest = !strcmp(o.role, "ingest"),
        project = !strcmp(o.role, "project"), front = !strcmp(o.role, "front");
    if (!serve && !ingest && !project && !front) {
        usage(stderr);
        return 2;
    }
    if ((ingest || project) && !o.kafka) {
        fprintf(stderr, "registry %s: --kafka is required (use `serve` for the embedded log)\n",
                o.role);
        return 2;
    }
    if (!serve && !o.redis) {
        fprintf(stderr, "registry %s: --redis is required to reach the other roles\n", o.role);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (serve || front) mqtt_connections_bounded(&o); /* the roles with an MQTT port */
    if (mkdir(o.data, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "registry: cannot create %s: %s\n", o.data, strerror(errno));
        return 1;
    }
    char host[256], dev_host[256], mqtt_host[256], hash[65];
    int port, dev_port, mqtt_port_no;
    if (split_addr(o.listen_api, host, sizeof host, &port)) {
        fprintf(stderr, "registry: --listen-api takes ADDR:PORT\n");
        return 2;
    }
    if (split_addr(o.listen_device, dev_host, sizeof dev_host, &dev_port)) {
        fprintf(stderr, "registry: --listen-device takes ADDR:PORT\n");
        return 2;
    }
    if (split_addr(o.listen_mqtt, mqtt_host, sizeof mqtt_host, &mqtt_port_no)) {
        fprintf(stderr, "registry: --listen-mqtt takes ADDR:PORT\n");
        return 2;
    }
    /* A front end given --kafka also takes writes (device bootstraps, renewals, activations,
     * and the operator's writes) by appending to the commands log itself. */
    int writes = serve || ingest || (front && o.kafka);
    if (admin_hash(o.data, serve || project, hash)) return 1;

    view *v = NULL;
    keystore *keys = NULL;
    elog *commands = NULL, *events = NULL;
    bus *b = NULL;
    projector *proj = NULL;
    api *a = NULL;
    device_port *dp = NULL;
    mqtt_port *mq = NULL;
    rotation *rot = NULL;
    cache *shared = NULL;
    int rc = 1, err;
    char commands_topic[128], events_topic[128];
    snprintf(commands_topic, sizeof commands_topic, "registry.%s.commands", o.region);
    snprintf(events_topic, sizeof events_topic, "registry.%s.events", o.region);
    elog_config cc = {.topic = commands_topic,
                      .dir = o.data,
                      .brokers = o.kafka,
                      .fsync = !o.no_fsync,
                      .segment_bytes = o.log_segment_bytes};
    elog_config ec = cc;
    ec.topic = events_topic;

    /* Every role may need the tenants' CA keys: ingest makes them, front ends sign device
     * certificates and CRLs. The first to start makes the key-encryption key (DATA/master.key)
     * unless REGISTRY_MASTER_KEY gives it. */
    if ((err = keystore_open(o.data, true, &keys))) {
        fprintf(stderr, "registry: cannot open the keystore: %s\n", reg_strerror(err));
        goto out;
    }
    int owns_view = serve || project;
    /* `serve` on the embedded logs is the only process that can read its view (the logs are
     * its own): that view is written without RocksDB's log (view.h). */
    enum view_mode mode = serve && !o.kafka ? VIEW_PRIMARY_UNLOGGED : VIEW_PRIMARY;
    if ((err = open_view(o.data, owns_view ? mode : VIEW_SECONDARY, o.view_cache_mb, &v))) {
        fprintf(stderr, "registry: cannot open the view: %s\n", reg_strerror(err));
        goto out;
    }
    if (!owns_view && view_is_unlogged(v)) {
        fprintf(stderr,
                "registry: the view in %s is `registry serve`'s own (written without a "
                "write-ahead log, other processes would not see its latest writes); "
                "other processes read the view of `registry project`\n",
                o.data);
        err = REG_EINVAL;
        goto out;
    }
    if ((err = bus_open(o.redis, &b))) {
        fprintf(stderr, "registry: cannot open the bus: %s\n", reg_strerror(err));
        goto out;
    }
    if ((writes || project) && (err = elog_open(&cc, &commands))) {
        fprintf(stderr, "registry: cannot open %s: %s\n", commands_topic, reg_strerror(err));
        goto out;
    }
    if ((serve || project) && (err = elog_open(&ec, &events))) {
        fprintf(stderr, "registry: cannot open %s: %s\n", events_topic, reg_strerror(err));
        goto out;
    }
    if (serve || project) {
        projector_config pc = {
            .decide = {.region = o.region, .shadow_max_bytes = o.shadow.max_bytes},
            .batch_max = o.batch_max,
            .shadow_cache = o.shadow_cache,
            .serial_filter_mb = o.serial_filter_mb};
        if ((err = projector_start(v, commands, events, b, &pc, &proj))) {
            fprintf(stderr, "registry: cannot start the projector: %s\n", reg_strerror(err));
            goto out;
        }
        if (mode == VIEW_PRIMARY_UNLOGGED) wait_for_projector(proj, commands);
    }

    uv_loop_t *loop = uv_default_loop();
    api_limits al = {.shadow = o.shadow};
    http_limits hl = {0};
    api_limits_default(&al);
    http_limits_default(&hl);
    http_limits api_hl = hl;
    api_hl.large_body_path = "/manifests"; /* a million serials in one upload */
    api_hl.max_large_body_bytes = o.max_manifest_bytes;
    api_deps deps = {.view = v,
                     .view_is_secondary = !owns_view,
                     .commands = writes ? commands : NULL,
                     .bus = b,
                     .projector = proj,
                     .admin_hash = hash,
                     .keys = keys};
    if ((err = api_start(loop, host, port, &al, &api_hl, &deps, &a))) {
        fprintf(stderr, "registry: cannot listen on %s: %s\n", o.listen_api, reg_strerror(err));
        goto out;
    }
    if (o.redis && (serve || front) && (err = cache_open(loop, o.redis, NULL, &shared))) {
        fprintf(stderr, "registry: cannot open the shared cache: %s\n", reg_strerror(err));
        goto out;
    }
    if ((serve || project) &&
        (err = rotation_start(loop, v, commands, o.rotation_check_ms, &rot))) {
        fprintf(stderr, "registry: cannot start the rotation scheduler: %s\n", reg_strerror(err));
        goto out;
    }
    char dev_listen[600] = "";
    if (serve || front) {
        device_port_deps dd = {.data_dir = o.data,
                               .view = v,
                               .view_is_secondary = !owns_view,
                               .ingest = api_ingest(a),
                               .keys = keys,
                               .bus = b,
                               .shared = shared,
                               .metrics = api_metrics(a),
                               .seen_interval_ms = o.seen_interval_ms,
                               .shadow = al.shadow};
        if ((err = device_port_start(loop, dev_host, dev_port, &hl, &dd, &dp))) {
            fprintf(stderr, "registry: cannot start the device port on %s: %s\n", o.listen_device,
                    reg_strerror(err));
            goto out;
        }
        api_attach_device_port(a, dp);
        stream_limits sl = {.reuse_port = front, .max_connections = o.max_mqtt_connections};
        stream_limits_default(&sl);
        if ((err = mqtt_port_start(loop, mqtt_host, mqtt_port_no, &sl, NULL, dp, b, api_metrics(a),
                                   &mq))) {
            fprintf(stderr, "registry: cannot start the MQTT port on %s: %s\n", o.listen_mqtt,
                    reg_strerror(err));
            goto out;
        }
        api_attach_mqtt_port(a, mq);
        snprintf(dev_listen, sizeof dev_listen, " device=%s:%d mqtt=%s:%d", dev_host,
                 device_port_port(dp), mqtt_host, mqtt_port_port(mq));
    }
    printf("listening api=%s:%d%s role=%s log=%s bus=%s region=%s\n", host, api_port(a), dev_listen,
           o.role,
           !commands ? "none"
           : o.kafka ? "kafka"
                     : "embedded",
           o.redis ? "redis" : "local", o.region);

    uv_signal_init(loop, &sigint_h);
    uv_signal_init(loop, &sigterm_h);
    uv_signal_start(&sigint_h, on_signal, SIGINT);
    uv_signal_start(&sigterm_h, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);

    /* Orderly stop: no new requests, the projector finishes its batch, logs drain, then the
     * loop closes what is left. */
    rc = 0;
out:
    /* The device port's pending work finishes through the cache and the ingest side, which must
     * outlive it: mark it stopping, drain the cache, then stop the API (and its ingest side). */
    rotation_stop(rot);
    mqtt_port_stop(mq);
    device_port_stop(dp);
    if (shared) cache_close(shared);
    api_stop(a);
    projector_stop(proj);
    if (commands) elog_flush(commands, 5000);
    elog_close(events);
    elog_close(commands);
    if (b) bus_unsubscribe_all(b, uv_default_loop());
    uv_walk(uv_default_loop(), close_walk, NULL);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    bus_close(b);
    view_close(v);
    keystore_close(keys);
    return rc;
}
