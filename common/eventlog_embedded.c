/*
 * eventlog_embedded.c - the embedded backend of the log (eventlog.h): one RocksDB database per
 * topic under DIR/log/<topic>/, keyed by the 8-byte big-endian offset so that iteration order is
 * log order.
 *
 * A record's value is: time_ms (8 bytes, big-endian), key length (4 bytes, big-endian), the key,
 * then the payload. Appends go into a bounded queue; the log's writer thread takes everything
 * queued, writes it as one WriteBatch (synced when cfg->fsync) and only then assigns offsets and
 * reports success. So a reported append survives kill -9, and concurrent appenders share one
 * fsync (group commit). Readers wait on a condition variable for the end offset to move.
 */
#define _GNU_SOURCE
#include "eventlog_impl.h"
#include "err.h"

#include <errno.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { EMB_QUEUE_MAX = 65536, EMB_BATCH_MAX = 4096, EMB_HEADER = 12 };

struct pending {
    struct pending *next;
    elog_append_cb cb;
    void *arg;
    size_t len; /* of data: header + key + payload */
    char data[];
};

typedef struct emb_log {
    struct elog super;
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;

    pthread_mutex_t mu;
    pthread_cond_t queued;   /* the writer waits for work */
    pthread_cond_t advanced; /* readers and flushers wait for the end offset */
    struct pending *head, *tail;
    size_t queue_len;
    uint64_t appends_queued;   /* total appends ever queued */
    uint64_t appends_reported; /* total appends whose callback ran */
    int first_error;           /* first failed write since the last flush */
    int64_t end;               /* next offset */
    int stopping;
    pthread_t writer;
} emb_log;

typedef struct emb_reader {
    struct elog_reader super;
    emb_log *log;
    int64_t next;
    char *buf; /* the records returned by the last call point into this */
    size_t buf_cap;
} emb_reader;

static const struct elog_ops emb_ops;

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n >= sizeof tmp) return REG_EINVAL;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return REG_EIO;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return REG_EIO;
    return 0;
}

/* Writes one group of queued appends, then reports them. Runs on the writer thread without the
 * lock held; `group` is a detached list this thread owns. */
static void write_group(emb_log *log, struct pending *group, int64_t first_offset)
{
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    int64_t off = first_offset;
    for (struct pending *p = group; p; p = p->next, off++) {
        unsigned char key[8];
        put_be64(key, (uint64_t)off);
        rocksdb_writebatch_put(wb, (const char *)key, 8, p->data, p->len);
    }
    char *errptr = NULL;
    rocksdb_write(log->db, log->wopts, wb, &errptr);
    rocksdb_writebatch_destroy(wb);
    int err = 0;
    if (errptr) {
        fprintf(stderr, "eventlog: append failed: %s\n", errptr);
        free(errptr);
        err = REG_ESTORE;
    }

    uint64_t n = 0;
    pthread_mutex_lock(&log->mu);
    for (struct pending *p = group; p; p = p->next)
        n++;
    if (!err)
        log->end = first_offset + (int64_t)n;
    else if (!log->first_error)
        log->first_error = err;
    pthread_mutex_unlock(&log->mu);

    off = first_offset;
    for (struct pending *p = group, *next; p; p = next, off++) {
        next = p->next;
        if (p->cb) p->cb(p->arg, err, err ? -1 : off);
        free(p);
    }

    pthread_mutex_lock(&log->mu);
    log->appends_reported += n;
    pthread_cond_broadcast(&log->advanced);
    pthread_mutex_unlock(&log->mu);
}

static void *writer_main(void *arg)
{
    emb_log *log = arg;
    rocksdb_set_perf_level(rocksdb_disable); /* as view_thread_init (view.h) */
    pthread_mutex_lock(&log->mu);
    for (;;) {
        while (!log->head && !log->stopping)
            pthread_cond_wait(&log->queued, &log->mu);
        if (!log->head) break; /* stopping and drained */
        struct pending *group = log->head, *last = group;
        size_t n = 1;
        while (last->next && n < EMB_BATCH_MAX)
            last = last->next, n++;
        log->head = last->next;
        if (!log->head) log->tail = NULL;
        last->next = NULL;
        log->queue_len -= n;
        int64_t first = log->end;
        pthread_mutex_unlock(&log->mu);
        write_group(log, group, first);
        pthread_mutex_lock(&log->mu);
    }
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

int elog_embedded_open(const elog_config *cfg, elog **out)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/log/%s", cfg->dir, cfg->topic) >= (int)sizeof path)
        return REG_EINVAL;
    int err = mkdir_p(path);
    if (err) return err;

    emb_log *log = calloc(1, sizeof *log);
    if (!log) return REG_ENOMEM;
    log->super.ops = &emb_ops;
    log->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(log->opts, 1);
    rocksdb_options_set_compression(log->opts, rocksdb_lz4_compression);
    log->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(log->wopts, cfg->fsync);
    log->ropts = rocksdb_readoptions_create();

    char *errptr = NULL;
    log->db = rocksdb_open(log->opts, path, &errptr);
    if (errptr) {
        fprintf(stderr, "eventlog: cannot open %s: %s\n", path, errptr);
        free(errptr);
        rocksdb_options_destroy(log->opts);
        rocksdb_writeoptions_destroy(log->wopts);
        rocksdb_readoptions_destroy(log->ropts);
        free(log);
        return REG_ESTORE;
    }

    rocksdb_iterator_t *it = rocksdb_create_iterator(log->db, log->ropts);
    rocksdb_iter_seek_to_last(it);
    if (rocksdb_iter_valid(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen == 8) log->end = (int64_t)get_be64((const unsigned char *)k) + 1;
    }
    rocksdb_iter_destroy(it);

    pthread_mutex_init(&log->mu, NULL);
    pthread_cond_init(&log->queued, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->advanced, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&log->writer, NULL, writer_main, log) != 0) {
        rocksdb_close(log->db);
        rocksdb_options_destroy(log->opts);
        rocksdb_writeoptions_destroy(log->wopts);
        rocksdb_readoptions_destroy(log->ropts);
        free(log);
        return REG_ENOMEM;
    }
    *out = &log->super;
    return 0;
}

static int emb_append(elog *base, const void *key, size_t key_len, const void *value,
                      size_t value_len, int64_t time_ms, elog_append_cb cb, void *arg)
{
    emb_log *log = (emb_log *)base;
    if (key_len > UINT32_MAX) return REG_EINVAL;
    size_t len = EMB_HEADER + key_len + value_len;
    struct pending *p = malloc(sizeof *p + len);
    if (!p) return REG_ENOMEM;
    p->next = NULL;
    p->cb = cb;
    p->arg = arg;
    p->len = len;
    unsigned char *d = (unsigned char *)p->data;
    put_be64(d, (uint64_t)time_ms);
    put_be32(d + 8, (uint32_t)key_len);
    if (key_len) memcpy(d + EMB_HEADER, key, key_len);
    if (value_len) memcpy(d + EMB_HEADER + key_len, value, value_len);

    pthread_mutex_lock(&log->mu);
    if (log->stopping || log->queue_len >= EMB_QUEUE_MAX) {
        int err = log->stopping ? REG_ECLOSED : REG_EAGAIN;
        pthread_mutex_unlock(&log->mu);
        free(p);
        return err;
    }
    if (log->tail)
        log->tail->next = p;
    else
        log->head = p;
    log->tail = p;
    log->queue_len++;
    log->appends_queued++;
    pthread_cond_signal(&log->queued);
    pthread_mutex_unlock(&log->mu);
    return 0;
}

static void deadline_after(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

static int emb_flush(elog *base, int timeout_ms)
{
    emb_log *log = (emb_log *)base;
    struct timespec deadline;
    deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&log->mu);
    uint64_t target = log->appends_queued;
    int err = 0;
    while (log->appends_reported < target) {
        if (pthread_cond_timedwait(&log->advanced, &log->mu, &deadline) == ETIMEDOUT) {
            err = REG_ETIMEOUT;
            break;
        }
    }
    if (!err) err = log->first_error;
    log->first_error = 0;
    pthread_mutex_unlock(&log->mu);
    return err;
}

static int64_t emb_end_offset(elog *base)
{
    emb_log *log = (emb_log *)base;
    pthread_mutex_lock(&log->mu);
    int64_t end = log->end;
    pthread_mutex_unlock(&log->mu);
    return end;
}

/* The time of the record at offset, or -1 when it cannot be read. */
static int64_t time_at(emb_log *log, int64_t offset)
{
    unsigned char key[8];
    put_be64(key, (uint64_t)offset);
    size_t vlen;
    char *errptr = NULL;
    char *v = rocksdb_get(log->db, log->ropts, (const char *)key, 8, &vlen, &errptr);
    free(errptr);
    if (!v) return -1;
    int64_t t = vlen >= 8 ? (int64_t)get_be64((unsigned char *)v) : -1;
    free(v);
    return t;
}

/* Binary search: record times are those given by the appenders, non-decreasing in practice (one
 * clock per process); where they are not, the answer is a valid offset near the time. */
static int emb_offset_for_time(elog *base, int64_t time_ms, int64_t *offset)
{
    emb_log *log = (emb_log *)base;
    int64_t lo = 0, hi = emb_end_offset(base);
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int64_t t = time_at(log, mid);
        if (t < 0) return REG_ESTORE;
        if (t < time_ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    *offset = lo;
    return 0;
}

static int emb_reader_open(elog *base, int64_t offset, elog_reader **out)
{
    emb_reader *rd = calloc(1, sizeof *rd);
    if (!rd) return REG_ENOMEM;
    rd->super.ops = &emb_ops;
    rd->log = (emb_log *)base;
    rd->next = offset < 0 ? 0 : offset;
    *out = &rd->super;
    return 0;
}

static int emb_reader_next(elog_reader *base, elog_record *recs, int max, int timeout_ms)
{
    emb_reader *rd = (emb_reader *)base;
    emb_log *log = rd->log;
    if (max <= 0) return REG_EINVAL;

    pthread_mutex_lock(&log->mu);
    if (log->end <= rd->next && timeout_ms > 0) {
        struct timespec deadline;
        deadline_after(&deadline, timeout_ms);
        while (log->end <= rd->next && !log->stopping)
            if (pthread_cond_timedwait(&log->advanced, &log->mu, &deadline) == ETIMEDOUT) break;
    }
    int64_t end = log->end;
    pthread_mutex_unlock(&log->mu);
    if (end <= rd->next) return 0;

    unsigned char lower[8], upper[8];
    put_be64(lower, (uint64_t)rd->next);
    put_be64(upper, (uint64_t)end);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)upper, 8);
    rocksdb_iterator_t *it = rocksdb_create_iterator(log->db, ro);
    rocksdb_iter_seek(it, (const char *)lower, 8);

    /* First pass copies values into one buffer; pointers are fixed up after, since the buffer
     * may move while it grows. */
    size_t used = 0;
    int n = 0;
    size_t offsets[EMB_BATCH_MAX];
    if (max > EMB_BATCH_MAX) max = EMB_BATCH_MAX;
    int err = 0;
    for (; rocksdb_iter_valid(it) && n < max; rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        if (klen != 8 || vlen < EMB_HEADER) {
            err = REG_EDECODE;
            break;
        }
        const unsigned char *h = (const unsigned char *)v;
        uint32_t key_len = get_be32(h + 8);
        if (key_len > vlen - EMB_HEADER) {
            err = REG_EDECODE;
            break;
        }
        if (used + vlen > rd->buf_cap) {
            size_t cap = rd->buf_cap ? rd->buf_cap : 65536;
            while (cap < used + vlen)
                cap *= 2;
            char *nb = realloc(rd->buf, cap);
            if (!nb) {
                err = REG_ENOMEM;
                break;
            }
            rd->buf = nb;
            rd->buf_cap = cap;
        }
        memcpy(rd->buf + used, v, vlen);
        offsets[n] = used;
        recs[n].offset = (int64_t)get_be64((const unsigned char *)k);
        recs[n].time_ms = (int64_t)get_be64(h);
        recs[n].key_len = key_len;
        recs[n].value_len = vlen - EMB_HEADER - key_len;
        used += vlen;
        n++;
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    for (int i = 0; i < n; i++) {
        recs[i].key = rd->buf + offsets[i] + EMB_HEADER;
        recs[i].value = rd->buf + offsets[i] + EMB_HEADER + recs[i].key_len;
    }
    if (n > 0) rd->next = recs[n - 1].offset + 1;
    return n > 0 ? n : err;
}

static void emb_reader_close(elog_reader *base)
{
    emb_reader *rd = (emb_reader *)base;
    free(rd->buf);
    free(rd);
}

static void emb_close(elog *base)
{
    emb_log *log = (emb_log *)base;
    pthread_mutex_lock(&log->mu);
    log->stopping = 1;
    pthread_cond_broadcast(&log->queued);
    pthread_cond_broadcast(&log->advanced);
    pthread_mutex_unlock(&log->mu);
    pthread_join(log->writer, NULL);
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    char *errptr = NULL;
    rocksdb_flush(log->db, fo, &errptr); /* a quick next start: no WAL to replay */
    free(errptr);
    rocksdb_flushoptions_destroy(fo);
    rocksdb_close(log->db);
    rocksdb_options_destroy(log->opts);
    rocksdb_writeoptions_destroy(log->wopts);
    rocksdb_readoptions_destroy(log->ropts);
    pthread_mutex_destroy(&log->mu);
    pthread_cond_destroy(&log->queued);
    pthread_cond_destroy(&log->advanced);
    free(log);
}

static const struct elog_ops emb_ops = {
    .append = emb_append,
    .flush = emb_flush,
    .end_offset = emb_end_offset,
    .offset_for_time = emb_offset_for_time,
    .reader_open = emb_reader_open,
    .reader_next = emb_reader_next,
    .reader_close = emb_reader_close,
    .close = emb_close,
};
