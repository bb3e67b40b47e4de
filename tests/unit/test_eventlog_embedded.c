/*
 * test_eventlog_embedded.c - the embedded log: offsets are dense and ordered, appends are
 * reported once, data survives reopening (across many segment files), readers start anywhere
 * and wait for new records, and time lookups find the first record at or after a time. A torn
 * tail is cut back at open, a damaged record is refused, a second process is kept out, and a
 * topic in the earlier layout (a RocksDB database) is upgraded with every record kept, a
 * kill -9 of an appending process loses no append it had reported, and a failed write is
 * reported as failed and leaves nothing behind. A record's bytes on disk are as the format says,
 * its CRC the standard CRC-32 (zlib's), so that any tool can check a segment.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "eventlog.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/test-elog-XXXXXX";
static atomic_int reported;
static atomic_int failed;
static int64_t seen_offsets[20000];

static void on_append(void *arg, int err, int64_t offset)
{
    intptr_t i = (intptr_t)arg;
    if (err)
        atomic_fetch_add(&failed, 1);
    else
        seen_offsets[i] = offset;
    atomic_fetch_add(&reported, 1);
}

static void topic_path(const char *topic, char *out, size_t cap)
{
    snprintf(out, cap, "%s/log/%s", dir, topic);
}

static int count_segments(const char *topic)
{
    char path[512];
    topic_path(topic, path, sizeof path);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strstr(de->d_name, ".seg") != NULL;
    closedir(d);
    return n;
}

/* The path of the topic's last segment file (names sort by their first offset). */
static void last_segment(const char *topic, char *out, size_t cap)
{
    char path[512], best[256] = "";
    topic_path(topic, path, sizeof path);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".seg") && strcmp(de->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", de->d_name);
    closedir(d);
    assert_true(best[0]);
    snprintf(out, cap, "%s/%s", path, best);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Appends n records "<tag>-<i>" (key "k") and waits for them. */
static void append_n(elog *log, const char *tag, int n)
{
    for (int i = 0; i < n; i++) {
        char value[64];
        int len = snprintf(value, sizeof value, "%s-%d", tag, i);
        assert_int_equal(elog_append(log, "k", 1, value, (size_t)len, 7, NULL, NULL), 0);
    }
    assert_int_equal(elog_flush(log, 30000), 0);
}

typedef void record_check(const elog_record *rec, void *ctx);

/* Reads [from, to) with a reader opened at from, in calls of up to 97 records (an odd size, so
 * that calls end anywhere in a segment), checks that the offsets are dense and hands each record
 * to check. */
static void read_range(elog *log, int64_t from, int64_t to, record_check *check, void *ctx)
{
    elog_reader *rd = NULL;
    elog_record recs[97];
    assert_int_equal(elog_reader_open(log, from, &rd), 0);
    for (int64_t next = from; next < to;) {
        int n = elog_reader_next(rd, recs, 97, 1000);
        assert_true(n > 0);
        for (int i = 0; i < n && next < to; i++, next++) {
            assert_int_equal(recs[i].offset, next);
            check(&recs[i], ctx);
        }
    }
    elog_reader_close(rd);
}

struct tagged {
    const char *tag;
    int64_t first;
};

static void check_tagged(const elog_record *rec, void *ctx)
{
    const struct tagged *t = ctx;
    char want[64];
    int len = snprintf(want, sizeof want, "%s-%lld", t->tag, (long long)(rec->offset - t->first));
    assert_int_equal(rec->value_len, len);
    assert_memory_equal(rec->value, want, (size_t)len);
}

/* Reads [from, to) and checks each value is "<tag>-<offset - first>". */
static void check_range(elog *log, int64_t from, int64_t to, const char *tag, int64_t first)
{
    struct tagged t = {tag, first};
    read_range(log, from, to, check_tagged, &t);
}

static void test_append_read_reopen(void **state)
{
    /* Small segments: the 20,000 records span ~30 files, so reads and seeks cross them. */
    elog_config cfg = {
        .topic = "registry.test.commands", .dir = dir, .fsync = 1, .segment_bytes = 16384};
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_end_offset(log), 0);
    enum { N = 20000 };
    for (intptr_t i = 0; i < N; i++) {
        char value[32];
        int len = snprintf(value, sizeof value, "record-%ld", (long)i);
        assert_int_equal(
            elog_append(log, "tenant", 6, value, (size_t)len, 1000 + i / 10, on_append, (void *)i),
            0);
    }
    assert_int_equal(elog_flush(log, 30000), 0);
    assert_int_equal(atomic_load(&reported), N);
    assert_int_equal(atomic_load(&failed), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(seen_offsets[i], i); /* FIFO order, dense */
    assert_int_equal(elog_end_offset(log), N);

    int64_t off = -1;
    assert_int_equal(elog_offset_for_time(log, 1500, &off), 0);
    assert_int_equal(off, 5000);
    assert_int_equal(elog_offset_for_time(log, 99999, &off), 0);
    assert_int_equal(off, N);
    elog_close(log);

    /* Reopen: everything is still there, appends continue after it. */
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_end_offset(log), N);
    elog_reader *rd = NULL;
    assert_int_equal(elog_reader_open(log, 12345, &rd), 0);
    elog_record recs[100];
    int n = elog_reader_next(rd, recs, 100, 1000);
    assert_int_equal(n, 100);
    assert_int_equal(recs[0].offset, 12345);
    assert_int_equal(recs[0].key_len, 6);
    assert_memory_equal(recs[0].key, "tenant", 6);
    assert_int_equal(recs[0].value_len, strlen("record-12345"));
    assert_memory_equal(recs[0].value, "record-12345", recs[0].value_len);
    assert_int_equal(recs[99].offset, 12444);
    assert_int_equal(recs[0].time_ms, 1000 + 12345 / 10);
    elog_reader_close(rd);
    assert_true(count_segments("registry.test.commands") > 20);

    /* Reading everything from the start crosses every segment in order. */
    check_range(log, 0, N, "record", 0);

    /* A reader at the end waits, then sees a new append. */
    assert_int_equal(elog_reader_open(log, N, &rd), 0);
    assert_int_equal(elog_reader_next(rd, recs, 10, 50), 0);
    assert_int_equal(elog_append(log, "t", 1, "late", 4, 5, NULL, NULL), 0);
    n = elog_reader_next(rd, recs, 10, 5000);
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].offset, N);
    assert_memory_equal(recs[0].value, "late", 4);
    elog_reader_close(rd);
    elog_close(log);
}

/* kill -9 in the middle of a write leaves part of a record at the end of the last segment; a
 * damaged last record (never reported: its sync did not finish) is cut too. */
static void test_torn_tail(void **state)
{
    const char *topic = "registry.test.torn";
    elog_config cfg = {.topic = topic, .dir = dir, .fsync = 1};
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    append_n(log, "a", 100);
    elog_close(log);

    char seg[600];
    last_segment(topic, seg, sizeof seg);
    off_t whole = file_size(seg);
    int fd = open(seg, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    unsigned char partial[40] = {200, 0, 0, 0, 1, 2, 3, 4, 100}; /* a header, then nothing */
    assert_int_equal(write(fd, partial, sizeof partial), (ssize_t)sizeof partial);
    close(fd);

    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_end_offset(log), 100);
    assert_int_equal(file_size(seg), whole);
    append_n(log, "b", 10);
    check_range(log, 0, 100, "a", 0);
    check_range(log, 100, 110, "b", 100);
    elog_close(log);

    /* Flip a byte in the last record's value: it is cut, the ones before stay. */
    whole = file_size(seg);
    fd = open(seg, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, whole - 1), 1);
    c ^= 0x20;
    assert_int_equal(pwrite(fd, &c, 1, whole - 1), 1);
    close(fd);
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_end_offset(log), 109);
    append_n(log, "c", 1);
    check_range(log, 100, 109, "b", 100);
    check_range(log, 109, 110, "c", 109);
    elog_close(log);
}

/* A damaged record in an older segment is an error for the reader, never other bytes passed
 * off as records; the records before it still read. */
/* The standard CRC-32 (reflected 0x04C11DB7, as zlib's crc32), bit by bit: the reference the
 * log's records are held to. */
static uint32_t reference_crc32(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* A record as the file holds it: body length, CRC-32 of the body, offset, time, key length, key,
 * value (little-endian), for two records of different lengths. */
static void test_record_format(void **state)
{
    (void)state;
    assert_int_equal(reference_crc32((const unsigned char *)"123456789", 9), 0xCBF43926u);
    const char *topic = "registry.test.format";
    elog_config cfg = {.topic = topic, .dir = dir, .fsync = 1};
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    char value[300];
    for (size_t i = 0; i < sizeof value; i++)
        value[i] = (char)(i * 7);
    assert_int_equal(elog_append(log, "tenant-a", 8, "v1", 2, 1700000000001, NULL, NULL), 0);
    assert_int_equal(elog_append(log, "t", 1, value, sizeof value, 1700000000002, NULL, NULL), 0);
    assert_int_equal(elog_flush(log, 10000), 0);
    elog_close(log);

    char path[600];
    topic_path(topic, path, sizeof path);
    strcat(path, "/00000000000000000000.seg");
    unsigned char buf[1024];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t got = pread(fd, buf, sizeof buf, 0);
    close(fd);
    struct {
        const char *key, *value;
        size_t klen, vlen;
        int64_t time_ms;
    } want[] = {{"tenant-a", "v1", 8, 2, 1700000000001},
                {"t", value, 1, sizeof value, 1700000000002}};
    size_t at = 0;
    for (int r = 0; r < 2; r++) {
        size_t body = 20 + want[r].klen + want[r].vlen;
        assert_true((size_t)got >= at + 8 + body);
        const unsigned char *p = buf + at;
        assert_int_equal(le(p, 4), body);
        assert_int_equal(le(p + 4, 4), reference_crc32(p + 8, body));
        assert_int_equal(le(p + 8, 8), r);
        assert_int_equal(le(p + 16, 8), want[r].time_ms);
        assert_int_equal(le(p + 24, 4), want[r].klen);
        assert_memory_equal(p + 28, want[r].key, want[r].klen);
        assert_memory_equal(p + 28 + want[r].klen, want[r].value, want[r].vlen);
        at += 8 + body;
    }
    assert_int_equal(got, at);
}

static void test_damaged_record(void **state)
{
    const char *topic = "registry.test.damaged";
    elog_config cfg = {.topic = topic, .dir = dir, .fsync = 0, .segment_bytes = 4096};
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    append_n(log, "r", 2000);
    assert_true(count_segments(topic) > 4);
    elog_close(log);

    char first[600];
    topic_path(topic, first, sizeof first);
    strcat(first, "/00000000000000000000.seg");
    off_t size = file_size(first);
    int fd = open(first, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, size / 2), 1);
    c ^= 0x01;
    assert_int_equal(pwrite(fd, &c, 1, size / 2), 1);
    close(fd);

    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_end_offset(log), 2000);
    elog_reader *rd = NULL;
    elog_record recs[16];
    assert_int_equal(elog_reader_open(log, 0, &rd), 0);
    int64_t next = 0;
    int n;
    while ((n = elog_reader_next(rd, recs, 16, 100)) > 0)
        for (int i = 0; i < n; i++, next++)
            assert_int_equal(recs[i].offset, next);
    assert_int_equal(n, REG_EDECODE);
    assert_true(next > 0 && next < 2000);
    elog_reader_close(rd);
    /* Seeking into that segment needs its index, which cannot be built: an error as well. */
    assert_int_equal(elog_reader_open(log, 5, &rd), 0);
    assert_int_equal(elog_reader_next(rd, recs, 16, 100), REG_EDECODE);
    elog_reader_close(rd);
    /* Later segments are untouched. */
    check_range(log, 1500, 2000, "r", 0);
    elog_close(log);
}

static void test_second_opener_refused(void **state)
{
    elog_config cfg = {.topic = "registry.test.locked", .dir = dir, .fsync = 1};
    elog *log = NULL, *again = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_open(&cfg, &again), REG_EUNAVAILABLE);
    elog_close(log);
    assert_int_equal(elog_open(&cfg, &again), 0);
    elog_close(again);
}

static void put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* Writes a topic in the embedded log's first layout: a RocksDB database keyed by the big-endian
 * offset, each value time, key length, key, payload. */
static void write_rocksdb_topic(const char *topic, int n)
{
    char path[512];
    topic_path(topic, path, sizeof path);
    char parent[512];
    snprintf(parent, sizeof parent, "%s/log", dir);
    mkdir(parent, 0700);
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, path, &err);
    assert_null(err);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    for (int i = 0; i < n; i++) {
        unsigned char key[8], value[64];
        put_be(key, (uint64_t)i, 8);
        put_be(value, (uint64_t)(5000 + i), 8);
        put_be(value + 8, 6, 4);
        memcpy(value + 12, "tenant", 6);
        int len = snprintf((char *)value + 18, sizeof value - 18, "old-%d", i);
        rocksdb_put(db, wo, (char *)key, 8, (char *)value, (size_t)(18 + len), &err);
        assert_null(err);
    }
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db); /* leaves some records in the WAL only: the upgrade must read those too */
    rocksdb_options_destroy(o);
}

static void test_upgrade_from_rocksdb(void **state)
{
    const char *topic = "registry.test.upgrade";
    write_rocksdb_topic(topic, 3000);
    elog_config cfg = {.topic = topic, .dir = dir, .fsync = 1, .segment_bytes = 8192};
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_end_offset(log), 3000);
    check_range(log, 0, 3000, "old", 0);
    elog_reader *rd = NULL;
    elog_record rec;
    assert_int_equal(elog_reader_open(log, 2999, &rd), 0);
    assert_int_equal(elog_reader_next(rd, &rec, 1, 0), 1);
    assert_int_equal(rec.time_ms, 5000 + 2999);
    assert_int_equal(rec.key_len, 6);
    assert_memory_equal(rec.key, "tenant", 6);
    elog_reader_close(rd);
    int64_t off = -1;
    assert_int_equal(elog_offset_for_time(log, 6000, &off), 0);
    assert_int_equal(off, 1000);
    append_n(log, "new", 5);
    check_range(log, 3000, 3005, "new", 3000);
    elog_close(log);

    char path[512], probe[700];
    topic_path(topic, path, sizeof path);
    snprintf(probe, sizeof probe, "%s/CURRENT", path);
    assert_int_equal(access(probe, F_OK), -1);
    snprintf(probe, sizeof probe, "%s.rocksdb-old", path);
    assert_int_equal(access(probe, F_OK), -1);
    snprintf(probe, sizeof probe, "%s.upgrading", path);
    assert_int_equal(access(probe, F_OK), -1);

    /* A crash after the old database was moved aside and before the copy was moved in: the
     * next open finishes the upgrade. */
    char moved[600], old[600];
    snprintf(moved, sizeof moved, "%s.upgrading", path);
    snprintf(old, sizeof old, "%s.rocksdb-old", path);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(mkdir(old, 0700), 0);
    snprintf(probe, sizeof probe, "%s/000001.sst", old);
    FILE *f = fopen(probe, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_int_equal(elog_end_offset(log), 3005);
    check_range(log, 2990, 3000, "old", 0);
    elog_close(log);
    assert_int_equal(access(old, F_OK), -1);
    assert_int_equal(access(moved, F_OK), -1);
}

struct appender {
    elog *log;
    int id, n;
};

static void *append_thread(void *arg)
{
    struct appender *a = arg;
    for (int i = 0; i < a->n; i++) {
        char value[32];
        int len = snprintf(value, sizeof value, "%d:%d", a->id, i);
        int err;
        while ((err = elog_append(a->log, "k", 1, value, (size_t)len, i, NULL, NULL)) == REG_EAGAIN)
            usleep(100);
        assert_int_equal(err, 0);
    }
    return NULL;
}

/* Four appenders and a reader at once, with segments rolling under them: the reader sees every
 * record once, dense, and each appender's records in its order. */
static void test_concurrent_appends_and_reads(void **state)
{
    enum { THREADS = 4, EACH = 5000 };
    elog_config cfg = {.topic = "registry.test.concurrent", .dir = dir, .segment_bytes = 32768};
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    static pthread_t t[THREADS]; /* static: a failed check leaves the threads running */
    static struct appender a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct appender){log, i, EACH};
        assert_int_equal(pthread_create(&t[i], NULL, append_thread, &a[i]), 0);
    }
    elog_reader *rd = NULL;
    assert_int_equal(elog_reader_open(log, 0, &rd), 0);
    int seen[THREADS] = {0};
    int64_t next = 0;
    elog_record recs[100];
    while (next < THREADS * EACH) {
        int n = elog_reader_next(rd, recs, 100, 5000);
        assert_true(n > 0);
        for (int i = 0; i < n; i++, next++) {
            assert_int_equal(recs[i].offset, next);
            int id, seq;
            char text[32];
            assert_true(recs[i].value_len < sizeof text);
            memcpy(text, recs[i].value, recs[i].value_len);
            text[recs[i].value_len] = 0;
            assert_int_equal(sscanf(text, "%d:%d", &id, &seq), 2);
            assert_true(id >= 0 && id < THREADS);
            assert_int_equal(seq, seen[id]);
            seen[id]++;
        }
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    elog_reader_close(rd);
    assert_int_equal(elog_flush(log, 30000), 0);
    assert_int_equal(elog_end_offset(log), THREADS * EACH);
    elog_close(log);
}

/* Two processes opening a topic in the earlier layout at once: one upgrades it, the other waits
 * for that (and then opens it, or is refused while the first holds it); nothing is lost or
 * copied twice. */
static void test_concurrent_upgrade(void **state)
{
    for (int round = 0; round < 4; round++) {
        char topic[64];
        snprintf(topic, sizeof topic, "registry.test.upgrade2.%d", round);
        write_rocksdb_topic(topic, 3000);
        elog_config cfg = {.topic = topic, .dir = dir, .fsync = 0};
        int go[2];
        assert_int_equal(pipe(go), 0);
        pid_t kids[2];
        for (int k = 0; k < 2; k++) {
            kids[k] = fork();
            assert_true(kids[k] >= 0);
            if (kids[k] == 0) {
                close(go[1]);
                char c;
                if (read(go[0], &c, 1) != 0) _exit(4); /* wait for the start */
                elog *log = NULL;
                int err = elog_open(&cfg, &log);
                if (err == REG_EUNAVAILABLE) _exit(1);
                if (err) _exit(2);
                int ok = elog_end_offset(log) == 3000;
                elog_close(log);
                _exit(ok ? 0 : 3);
            }
        }
        close(go[0]);
        close(go[1]); /* both start */
        int opened = 0;
        for (int k = 0; k < 2; k++) {
            int status;
            assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
            assert_true(WIFEXITED(status));
            assert_true(WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 1);
            opened += WEXITSTATUS(status) == 0;
        }
        assert_true(opened >= 1);
        elog *log = NULL;
        assert_int_equal(elog_open(&cfg, &log), 0);
        assert_int_equal(elog_end_offset(log), 3000);
        check_range(log, 0, 3000, "old", 0);
        elog_close(log);
    }
}

static atomic_int write_ok, write_failed;
static int64_t last_ok = -1;

static void count_outcome(void *arg, int err, int64_t offset)
{
    if (err) {
        atomic_fetch_add(&write_failed, 1);
    } else {
        atomic_fetch_add(&write_ok, 1);
        last_ok = offset;
    }
}

/* The failed-write test's records before the small last one: 200 bytes of a letter a round. */
static void check_full_value(const elog_record *rec, void *ctx)
{
    assert_int_equal(rec->value_len, 200);
    assert_int_equal(((const char *)rec->value)[0], 'a' + (int)(rec->offset / 20) % 26);
}

/* ... and the small one appended after the failure. */
static void check_small_value(const elog_record *rec, void *ctx)
{
    assert_int_equal(rec->value_len, 1);
    assert_memory_equal(rec->value, "x", 1);
}

/* A write that fails (here the file-size limit, as a full disk would) is reported as failed to
 * every append of its group, is cut back off the segment, and loses none reported before it;
 * once writes succeed again the log goes on where it stood. */
static void test_failed_write(void **state)
{
    const char *topic = "registry.test.full";
    elog_config cfg = {.topic = topic, .dir = dir, .fsync = 1, .segment_bytes = 1 << 20};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
        struct rlimit lim = {100000, 100000};
        if (setrlimit(RLIMIT_FSIZE, &lim)) _exit(2);
        elog *log = NULL;
        if (elog_open(&cfg, &log)) _exit(2);
        int flushed = 0;
        for (int round = 0; round < 50 && !atomic_load(&write_failed); round++) {
            for (int i = 0; i < 20; i++) {
                char value[200];
                memset(value, 'a' + round % 26, sizeof value);
                if (elog_append(log, "k", 1, value, sizeof value, round, count_outcome, NULL))
                    _exit(2);
            }
            flushed = elog_flush(log, 10000);
        }
        /* The failed group did not move the end; a record small enough to fit under the limit
         * goes right after the last one reported, so the failed group's bytes were cut. */
        int64_t end = last_ok + 1;
        if (flushed != REG_EIO || elog_end_offset(log) != end) _exit(3);
        char seg[600];
        last_segment(topic, seg, sizeof seg);
        struct stat st;
        if (stat(seg, &st) || st.st_size != end * 229) _exit(6); /* 229 bytes a record */
        if (elog_append(log, "k", 1, "x", 1, 0, count_outcome, NULL) || elog_flush(log, 10000) ||
            last_ok != end)
            _exit(4);
        elog_close(log);
        _exit(atomic_load(&write_ok) > 0 && atomic_load(&write_failed) > 0 ? 0 : 5);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* Without the limit: what was reported is there, whole, and appends go on after it. */
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    int64_t end = elog_end_offset(log);
    assert_true(end > 1 && (end - 1) * 229 <= 100000); /* 229 bytes a record: all fitted */
    read_range(log, 0, end - 1, check_full_value, NULL);
    read_range(log, end - 1, end, check_small_value, NULL);
    append_n(log, "after", 3);
    check_range(log, end, end + 3, "after", end);
    elog_close(log);
}

static int report_fd = -1;

static void report_offset(void *arg, int err, int64_t offset)
{
    if (!err && write(report_fd, &offset, sizeof offset) != sizeof offset) _exit(3);
}

/* The value and time the kill -9 test's child gives the record at each offset. */
static void check_kill9_value(const elog_record *rec, void *ctx)
{
    char want[64];
    int len = snprintf(want, sizeof want, "value-%lld-%0*d", (long long)rec->offset,
                       (int)(rec->offset % 40), 0);
    assert_int_equal(rec->time_ms, rec->offset);
    assert_int_equal(rec->value_len, len);
    assert_memory_equal(rec->value, want, (size_t)len);
}

/* kill -9 of a process appending with fsync, segments rolling: after reopening, every append it
 * had reported is there, at its offset, with its value. */
static void test_kill9_keeps_reported_appends(void **state)
{
    const char *topic = "registry.test.kill9";
    elog_config cfg = {.topic = topic, .dir = dir, .fsync = 1, .segment_bytes = 65536};
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        report_fd = fds[1];
        elog *log = NULL;
        if (elog_open(&cfg, &log)) _exit(2);
        for (long i = 0;; i++) {
            char value[64];
            int len = snprintf(value, sizeof value, "value-%ld-%0*d", i, (int)(i % 40), 0);
            int err;
            while ((err = elog_append(log, "k", 1, value, (size_t)len, i, report_offset, NULL)) ==
                   REG_EAGAIN)
                usleep(50);
            if (err) _exit(2);
        }
    }
    close(fds[1]);
    int64_t last = -1, off;
    while (last < 3000 && read(fds[0], &off, sizeof off) == sizeof off) {
        assert_int_equal(off, last + 1); /* reported in order, dense */
        last = off;
    }
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    while (read(fds[0], &off, sizeof off) == sizeof off) {
        assert_int_equal(off, last + 1);
        last = off;
    }
    close(fds[0]);
    assert_true(last >= 3000);
    assert_true(count_segments(topic) > 1);

    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_true(elog_end_offset(log) > last);
    read_range(log, 0, elog_end_offset(log), check_kill9_value, NULL);
    elog_close(log);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_read_reopen),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_record_format),
        cmocka_unit_test(test_damaged_record),
        cmocka_unit_test(test_second_opener_refused),
        cmocka_unit_test(test_upgrade_from_rocksdb),
        cmocka_unit_test(test_concurrent_upgrade),
        cmocka_unit_test(test_concurrent_appends_and_reads),
        cmocka_unit_test(test_kill9_keeps_reported_appends),
        cmocka_unit_test(test_failed_write),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return rc;
}
