/*
 * eventlog_embedded.c - the embedded backend of the log (eventlog.h): each topic is a directory
 * DIR/log/<topic>/ of segment files, "<offset of the first record, 20 digits>.seg", each a run
 * of records written back to back; the last segment is the one appended to.
 *
 * A record (integers little-endian):
 *
 *   u32 body_len  bytes after the first 8: 20 + key length + value length
 *   u32 crc       the CRC-32 (zlib's and gzip's) of those body_len bytes, computed by ISA-L:
 *                 zlib's table-driven one was 3-4% of the projector's time, reading each
 *                 command and writing each event; ISA-L's folds with carry-less multiplies
 *   i64 offset    the record's offset (records of a segment are consecutive)
 *   i64 time_ms
 *   u32 key_len
 *   key, then the value
 *
 * Appends go into a bounded queue; the log's writer thread takes everything queued, writes it
 * with pwritev and one fdatasync (when cfg->fsync), and only then assigns the offsets and
 * reports success: a reported append survives kill -9, and concurrent appenders share one sync
 * (group commit). A segment is rolled once it holds cfg->segment_bytes: the full one is synced
 * even without cfg->fsync, and the directory is synced after creating the next. So only the last
 * segment can end in a torn record; opening the log scans it and cuts it back to its last whole,
 * intact record. Readers wait on a condition variable for the end offset to move, and read a
 * segment with pread up to the bytes already synced (published with the end offset).
 *
 * Seeking to an offset uses a sparse index per segment (a mark every MARK_BYTES: offset, time,
 * file position), kept by the writer for the segment it appends to and built by one scan the
 * first time a reader seeks into an older segment. An flock on DIR/log/<topic>/LOCK keeps a
 * second process out. A topic still in the earlier layout (a RocksDB database) is copied into
 * segments at open (eventlog_upgrade.c).
 */
#define _GNU_SOURCE
#include "eventlog_impl.h"
#include "err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <isa-l/crc.h>

enum {
    EMB_QUEUE_MAX = 65536, /* appends waiting for the writer */
    EMB_BATCH_MAX = 4096,  /* appends per write and sync */
    REC_HEADER = 28,       /* bytes before the key */
    REC_CRC_FROM = 8,      /* the CRC covers the record from here */
    MARK_BYTES = 64 << 10, /* the sparse index's spacing */
    SCAN_CHUNK = 1 << 20,  /* bytes per read when scanning a segment */
    READ_MIN = 64 << 10,   /* bounds of a reader's read */
    READ_MAX = 8 << 20,
    SEGMENT_NAME_DIGITS = 20,
};
#define REC_BODY_MAX (UINT32_C(1) << 30) /* far above any command or event */
#define SEGMENT_BYTES_DEFAULT (UINT64_C(64) << 20)

/* One queued append, its record already laid out in data (the writer fills in the length, CRC
 * and offset). */
struct pending {
    struct pending *next;
    elog_append_cb cb;
    void *arg;
    size_t len; /* of data: the whole record */
    unsigned char data[];
};

struct mark {
    int64_t offset;
    int64_t time_ms;
    uint64_t pos;
};

/* A segment's extent. The last one's end and size move as groups are synced. */
struct segment {
    int64_t base, end;  /* offsets [base, end) */
    uint64_t size;      /* bytes of whole records */
    struct mark *marks; /* ascending; NULL until built (older segments) */
    size_t nmarks, marks_cap;
};

typedef struct emb_log {
    struct elog super;
    char *path;
    int dir_fd;
    int lock_fd;
    uint64_t segment_bytes;
    int fsync;

    pthread_mutex_t mu;
    pthread_cond_t queued;   /* the writer waits for work */
    pthread_cond_t advanced; /* readers and flushers wait for the end offset */
    struct pending *head, *tail;
    size_t queue_len;
    uint64_t appends_queued;   /* total appends ever queued */
    uint64_t appends_reported; /* total appends whose callback ran */
    int first_error;           /* first failed write since the last flush */
    int64_t end;               /* next offset */
    struct segment *segs;      /* ascending by base; the last is the one appended to */
    size_t nsegs, segs_cap;
    int stopping;
    pthread_t writer;

    /* The writer's own. */
    int active_fd;
    uint64_t active_size;   /* bytes of the last segment written (and synced, with fsync) */
    uint64_t last_mark_pos; /* of the last segment's last mark */
    struct mark *new_marks; /* the group being written */
    size_t new_marks_cap;
    int broken; /* a failed write could not be cut back: refuse appends */
} emb_log;

typedef struct emb_reader {
    struct elog_reader super;
    emb_log *log;
    int64_t next;     /* the next offset to return */
    int fd;           /* the segment being read, or -1 */
    int64_t seg_base; /* its base */
    int64_t at;       /* the offset of the record at pos (at <= next) */
    uint64_t pos;
    size_t avg_len;     /* of the records read so far: sizes the next read */
    unsigned char *buf; /* the records returned by the last call point into this */
    size_t buf_cap;
    size_t *starts; /* where each record of the call starts in buf */
    size_t starts_cap;
} emb_reader;

static const struct elog_ops emb_ops;

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* The length of the record at p, given the avail bytes there and the offset it must carry: a
 * length above avail when more bytes are needed to tell, or REC_BAD when the bytes are not that
 * record whole and intact. */
#define REC_BAD (-1)
static int64_t record_length(const unsigned char *p, size_t avail, int64_t offset)
{
    if (avail < REC_HEADER) return REC_HEADER;
    uint32_t body = get_le32(p);
    if (body < REC_HEADER - REC_CRC_FROM || body > REC_BODY_MAX) return REC_BAD;
    size_t total = (size_t)REC_CRC_FROM + body;
    if (avail < total) return (int64_t)total;
    if ((int64_t)get_le64(p + 8) != offset) return REC_BAD;
    if (get_le32(p + 24) > body - (REC_HEADER - REC_CRC_FROM)) return REC_BAD;
    if (crc32_gzip_refl(0, p + REC_CRC_FROM, body) != get_le32(p + 4)) return REC_BAD;
    return (int64_t)total;
}

/* Reads fd's bytes [pos, pos + len) into buf. */
static int read_at(int fd, uint64_t pos, size_t len, unsigned char *buf)
{
    for (size_t got = 0; got < len;) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)(pos + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return REG_EIO;
        got += (size_t)r;
    }
    return 0;
}

/* p, an array of *cap elements of `size` bytes, with room for at least n: grown by doubling
 * (*cap follows), or p itself when it has the room. NULL when out of memory, p left as it was. */
static void *reserve(void *p, size_t *cap, size_t n, size_t size)
{
    if (n <= *cap) return p;
    size_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *grown = realloc(p, c * size);
    if (grown) *cap = c;
    return grown;
}

static int add_mark(struct segment *s, struct mark m)
{
    struct mark *marks = reserve(s->marks, &s->marks_cap, s->nmarks + 1, sizeof *marks);
    if (!marks) return REG_ENOMEM;
    s->marks = marks;
    s->marks[s->nmarks++] = m;
    return 0;
}

/* Reads the records of a segment file from its start up to `limit` bytes, checking each and
 * adding marks to *s. Sets s->end and s->size to what is whole and intact; *torn says whether
 * anything after that was cut off. */
static int scan_segment(int fd, uint64_t limit, struct segment *s, int *torn)
{
    unsigned char *buf = NULL;
    size_t cap = 0, want = SCAN_CHUNK;
    uint64_t pos = 0, last_mark = 0;
    int64_t off = s->base;
    int err = 0;
    *torn = 0;
    while (pos < limit && !*torn) {
        size_t len = limit - pos < want ? (size_t)(limit - pos) : want;
        unsigned char *room = reserve(buf, &cap, len, 1);
        if (!room) {
            err = REG_ENOMEM;
            break;
        }
        buf = room;
        if ((err = read_at(fd, pos, len, buf))) break;
        size_t at = 0;
        int64_t need = 0;
        while (at < len) {
            int64_t n = record_length(buf + at, len - at, off);
            if (n == REC_BAD) {
                *torn = 1;
                break;
            }
            if ((uint64_t)n > len - at) {
                need = n;
                break;
            }
            if (off == s->base || pos + at >= last_mark + MARK_BYTES) {
                struct mark m = {off, (int64_t)get_le64(buf + at + 16), pos + at};
                if ((err = add_mark(s, m))) goto out;
                last_mark = pos + at;
            }
            at += (size_t)n;
            off++;
        }
        if (at == 0 && !*torn) {
            if (len == limit - pos) *torn = 1; /* the last record runs past the limit */
            want = (size_t)need;
        } else
            want = SCAN_CHUNK;
        pos += at;
    }
out:
    free(buf);
    s->end = off;
    s->size = pos;
    return err;
}

static void segment_path(const emb_log *log, int64_t base, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%0*lld.seg", log->path, SEGMENT_NAME_DIGITS, (long long)base);
}

/* Whether name is a segment file's, and its base. */
static int segment_name(const char *name, int64_t *base)
{
    size_t n = strlen(name);
    if (n != SEGMENT_NAME_DIGITS + 4 || strcmp(name + SEGMENT_NAME_DIGITS, ".seg") != 0) return 0;
    int64_t v = 0;
    for (int i = 0; i < SEGMENT_NAME_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9' || v > (INT64_MAX - 9) / 10) return 0;
        v = v * 10 + (name[i] - '0');
    }
    *base = v;
    return 1;
}

static int segment_push(emb_log *log, int64_t base)
{
    struct segment *segs = reserve(log->segs, &log->segs_cap, log->nsegs + 1, sizeof *segs);
    if (!segs) return REG_ENOMEM;
    log->segs = segs;
    log->segs[log->nsegs++] = (struct segment){.base = base, .end = base};
    return 0;
}

/* Creates the segment starting at base and makes it the one appended to (the previous one, if
 * any, is synced and closed first). Writer thread, or open before it starts. */
static int segment_create(emb_log *log, int64_t base)
{
    char name[4200];
    segment_path(log, base, name, sizeof name);
    if (log->active_fd >= 0) {
        if (fdatasync(log->active_fd) != 0) return REG_EIO;
    }
    int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "eventlog: cannot create %s: %s\n", name, strerror(errno));
        return REG_EIO;
    }
    if (fsync(log->dir_fd) != 0) {
        close(fd);
        unlink(name);
        return REG_EIO;
    }
    pthread_mutex_lock(&log->mu);
    int err = segment_push(log, base);
    pthread_mutex_unlock(&log->mu);
    if (err) {
        close(fd);
        unlink(name);
        return err;
    }
    if (log->active_fd >= 0) close(log->active_fd);
    log->active_fd = fd;
    log->active_size = 0;
    log->last_mark_pos = 0;
    return 0;
}

static int cmp_base(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Finds the segments, checks the last one (cutting off a torn tail) and sets the end offset. */
static int recover(emb_log *log)
{
    DIR *d = opendir(log->path);
    if (!d) return REG_EIO;
    int64_t *bases = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t base;
        if (!segment_name(de->d_name, &base)) continue;
        int64_t *room = reserve(bases, &cap, n + 1, sizeof *room);
        if (!room) {
            err = REG_ENOMEM;
            break;
        }
        bases = room;
        bases[n++] = base;
    }
    closedir(d);
    if (!err && n == 0) err = segment_create(log, 0);
    if (err || n == 0) goto out;
    qsort(bases, n, sizeof *bases, cmp_base);
    for (size_t i = 0; i < n && !err; i++)
        err = segment_push(log, bases[i]);
    if (err) goto out;

    char name[4200];
    for (size_t i = 0; i + 1 < n; i++) {
        struct stat st;
        segment_path(log, bases[i], name, sizeof name);
        if (stat(name, &st) != 0) {
            err = REG_EIO;
            goto out;
        }
        log->segs[i].end = bases[i + 1];
        log->segs[i].size = (uint64_t)st.st_size;
        if (st.st_size == 0 && bases[i + 1] > bases[i]) {
            fprintf(stderr, "eventlog: %s is empty but the next segment starts later\n", name);
            err = REG_EDECODE;
            goto out;
        }
    }
    struct segment *last = &log->segs[n - 1];
    segment_path(log, last->base, name, sizeof name);
    int fd = open(name, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) close(fd);
        err = REG_EIO;
        goto out;
    }
    int torn = 0;
    err = scan_segment(fd, (uint64_t)st.st_size, last, &torn);
    if (!err && last->size < (uint64_t)st.st_size) {
        fprintf(stderr,
                "eventlog: %s: cutting %llu bytes after offset %lld (an append that was "
                "never reported)\n",
                name, (unsigned long long)((uint64_t)st.st_size - last->size),
                (long long)last->end);
        if (ftruncate(fd, (off_t)last->size) != 0 || fdatasync(fd) != 0) err = REG_EIO;
    }
    if (err) {
        close(fd);
        goto out;
    }
    log->active_fd = fd;
    log->active_size = last->size;
    log->last_mark_pos = last->nmarks ? last->marks[last->nmarks - 1].pos : 0;
    log->end = last->end;
out:
    free(bases);
    return err;
}

/* Writes one group of queued appends, then reports them. Runs on the writer thread without the
 * lock held; `group` is a detached list of n appends this thread owns. */
static void write_group(emb_log *log, struct pending *group, size_t n, int64_t first)
{
    int err = log->broken ? REG_EIO : 0;
    if (!err && log->active_size >= log->segment_bytes) err = segment_create(log, first);
    if (!err) {
        struct mark *marks = reserve(log->new_marks, &log->new_marks_cap, n, sizeof *marks);
        if (marks)
            log->new_marks = marks;
        else
            err = REG_ENOMEM;
    }

    uint64_t pos = log->active_size, mark_pos = log->last_mark_pos;
    size_t nmarks = 0;
    int64_t off = first;
    for (struct pending *p = group; p && !err; p = p->next, off++) {
        uint32_t body = (uint32_t)(p->len - REC_CRC_FROM);
        put_le32(p->data, body);
        put_le64(p->data + 8, (uint64_t)off);
        put_le32(p->data + 4, crc32_gzip_refl(0, p->data + REC_CRC_FROM, body));
        if (pos == 0 || pos >= mark_pos + MARK_BYTES) {
            log->new_marks[nmarks++] = (struct mark){off, (int64_t)get_le64(p->data + 16), pos};
            mark_pos = pos;
        }
        pos += p->len;
    }

    struct iovec iov[IOV_MAX];
    uint64_t at = log->active_size;
    for (struct pending *p = group; p && !err;) {
        int k = 0;
        size_t bytes = 0;
        for (; p && k < IOV_MAX; p = p->next, k++) {
            iov[k] = (struct iovec){p->data, p->len};
            bytes += p->len;
        }
        for (int i = 0; bytes > 0 && !err;) {
            ssize_t w = pwritev(log->active_fd, iov + i, k - i, (off_t)at);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                fprintf(stderr, "eventlog: append to %s failed: %s\n", log->path,
                        w < 0 ? strerror(errno) : "nothing written");
                err = REG_EIO;
                break;
            }
            at += (uint64_t)w;
            bytes -= (size_t)w;
            for (size_t left = (size_t)w; left > 0;) { /* step past what was written */
                if (left >= iov[i].iov_len) {
                    left -= iov[i].iov_len;
                    i++;
                } else {
                    iov[i].iov_base = (char *)iov[i].iov_base + left;
                    iov[i].iov_len -= left;
                    left = 0;
                }
            }
        }
    }
    if (!err && log->fsync && fdatasync(log->active_fd) != 0) {
        fprintf(stderr, "eventlog: sync of %s failed: %s\n", log->path, strerror(errno));
        err = REG_EIO;
    }
    if (err && !log->broken && at > log->active_size &&
        ftruncate(log->active_fd, (off_t)log->active_size) != 0)
        log->broken = 1; /* unreported bytes stay at the end: stop before appending after them */
    if (!err) {
        log->active_size = pos;
        log->last_mark_pos = mark_pos;
    }

    pthread_mutex_lock(&log->mu);
    if (!err) {
        struct segment *s = &log->segs[log->nsegs - 1];
        for (size_t i = 0; i < nmarks; i++)
            if (add_mark(s, log->new_marks[i])) break; /* seeks will only read further */
        log->end = first + (int64_t)n;
        s->end = log->end;
        s->size = pos;
    } else if (!log->first_error)
        log->first_error = err;
    pthread_mutex_unlock(&log->mu);

    off = first;
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
    pthread_mutex_lock(&log->mu);
    for (;;) {
        while (!log->head && !log->stopping)
            pthread_cond_wait(&log->queued, &log->mu);
        if (!log->head) break; /* stopping and drained */
        /* A group goes into one segment: it ends where the segment would pass its size (the
         * next group rolls it), or at a first record larger than that alone. */
        uint64_t room = log->active_size < log->segment_bytes
                            ? log->segment_bytes - log->active_size
                            : log->segment_bytes;
        struct pending *group = log->head, *last = group;
        size_t n = 1;
        uint64_t bytes = group->len;
        while (last->next && n < EMB_BATCH_MAX && bytes + last->next->len <= room)
            last = last->next, n++, bytes += last->len;
        log->head = last->next;
        if (!log->head) log->tail = NULL;
        last->next = NULL;
        log->queue_len -= n;
        int64_t first = log->end;
        pthread_mutex_unlock(&log->mu);
        write_group(log, group, n, first);
        pthread_mutex_lock(&log->mu);
    }
    pthread_mutex_unlock(&log->mu);
    return NULL;
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

static void free_log(emb_log *log)
{
    for (size_t i = 0; i < log->nsegs; i++)
        free(log->segs[i].marks);
    free(log->segs);
    free(log->new_marks);
    if (log->active_fd >= 0) close(log->active_fd);
    if (log->dir_fd >= 0) close(log->dir_fd);
    if (log->lock_fd >= 0) close(log->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&log->mu);
    pthread_cond_destroy(&log->queued);
    pthread_cond_destroy(&log->advanced);
    free(log->path);
    free(log);
}

int elog_embedded_path(const elog_config *cfg, char *out, size_t cap)
{
    return snprintf(out, cap, "%s/log/%s", cfg->dir, cfg->topic) < (int)cap ? 0 : REG_EINVAL;
}

int elog_embedded_open(const elog_config *cfg, elog **out)
{
    int err = elog_embedded_upgrade(cfg);
    return err ? err : elog_segments_open(cfg, out);
}

int elog_segments_open(const elog_config *cfg, elog **out)
{
    char path[4096];
    int err = elog_embedded_path(cfg, path, sizeof path);
    if (!err) err = mkdir_p(path);
    if (err) return err;

    emb_log *log = calloc(1, sizeof *log);
    if (!log) return REG_ENOMEM;
    log->super.ops = &emb_ops;
    log->dir_fd = log->lock_fd = log->active_fd = -1;
    log->segment_bytes = cfg->segment_bytes ? cfg->segment_bytes : SEGMENT_BYTES_DEFAULT;
    log->fsync = cfg->fsync;
    pthread_mutex_init(&log->mu, NULL);
    pthread_cond_init(&log->queued, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->advanced, &ca);
    pthread_condattr_destroy(&ca);
    if (!(log->path = strdup(path))) {
        free_log(log);
        return REG_ENOMEM;
    }

    char lock[4200];
    snprintf(lock, sizeof lock, "%s/LOCK", path);
    log->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    log->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (log->dir_fd < 0 || log->lock_fd < 0) {
        fprintf(stderr, "eventlog: cannot open %s: %s\n", path, strerror(errno));
        free_log(log);
        return REG_EIO;
    }
    if (flock(log->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "eventlog: %s is in use by another process\n", path);
        free_log(log);
        return REG_EUNAVAILABLE;
    }
    if ((err = recover(log))) {
        fprintf(stderr, "eventlog: cannot open %s: %s\n", path, reg_strerror(err));
        free_log(log);
        return err;
    }
    if (pthread_create(&log->writer, NULL, writer_main, log) != 0) {
        free_log(log);
        return REG_ENOMEM;
    }
    *out = &log->super;
    return 0;
}

static int emb_append(elog *base, const void *key, size_t key_len, const void *value,
                      size_t value_len, int64_t time_ms, elog_append_cb cb, void *arg)
{
    emb_log *log = (emb_log *)base;
    if (key_len + value_len > REC_BODY_MAX - (REC_HEADER - REC_CRC_FROM)) return REG_ETOOBIG;
    size_t len = REC_HEADER + key_len + value_len;
    struct pending *p = malloc(sizeof *p + len);
    if (!p) return REG_ENOMEM;
    p->next = NULL;
    p->cb = cb;
    p->arg = arg;
    p->len = len;
    put_le64(p->data + 16, (uint64_t)time_ms);
    put_le32(p->data + 24, (uint32_t)key_len);
    if (key_len) memcpy(p->data + REC_HEADER, key, key_len);
    if (value_len) memcpy(p->data + REC_HEADER + key_len, value, value_len);

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

/* The segment holding offset (the last one when offset is the end). Lock held. */
static size_t segment_of(const emb_log *log, int64_t offset)
{
    size_t lo = 0, hi = log->nsegs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (log->segs[mid].base <= offset)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The last mark at or before offset in segment i, whose marks are built: where to start
 * reading towards it. Lock held. */
static struct mark mark_before(const emb_log *log, size_t i, int64_t offset)
{
    const struct segment *s = &log->segs[i];
    struct mark m = {s->base, 0, 0};
    size_t lo = 0, hi = s->nmarks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->marks[mid].offset <= offset)
            m = s->marks[mid], lo = mid + 1;
        else
            hi = mid;
    }
    return m;
}

/* Gives segment i (an older one, whole) its marks by reading it once. Called without the lock:
 * older segments do not change; two readers doing it at once keep the first result. */
static int build_marks(emb_log *log, size_t i)
{
    pthread_mutex_lock(&log->mu);
    struct segment s = log->segs[i];
    pthread_mutex_unlock(&log->mu);
    if (s.marks) return 0;
    char name[4200];
    segment_path(log, s.base, name, sizeof name);
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return REG_EIO;
    struct segment scanned = {.base = s.base};
    int torn = 0;
    int err = scan_segment(fd, s.size, &scanned, &torn);
    close(fd);
    if (!err && (torn || scanned.end != s.end || !scanned.marks)) {
        fprintf(stderr, "eventlog: %s does not hold offsets %lld to %lld whole\n", name,
                (long long)s.base, (long long)s.end);
        err = REG_EDECODE;
    }
    pthread_mutex_lock(&log->mu);
    if (!err && !log->segs[i].marks) {
        log->segs[i].marks = scanned.marks;
        log->segs[i].nmarks = scanned.nmarks;
        log->segs[i].marks_cap = scanned.marks_cap;
        scanned.marks = NULL;
    }
    pthread_mutex_unlock(&log->mu);
    free(scanned.marks);
    return err;
}

static int emb_reader_open(elog *base, int64_t offset, elog_reader **out)
{
    emb_reader *rd = calloc(1, sizeof *rd);
    if (!rd) return REG_ENOMEM;
    rd->super.ops = &emb_ops;
    rd->log = (emb_log *)base;
    rd->next = offset < 0 ? 0 : offset;
    rd->fd = -1;
    rd->avg_len = 512;
    *out = &rd->super;
    return 0;
}

/* Points the reader at the segment holding rd->next, at the last mark before it. */
static int reader_seek(emb_reader *rd, size_t i, int64_t seg_base)
{
    emb_log *log = rd->log;
    if (rd->fd >= 0) close(rd->fd);
    rd->fd = -1;
    int err = 0;
    pthread_mutex_lock(&log->mu);
    int need_marks = rd->next > seg_base && !log->segs[i].marks && i + 1 < log->nsegs;
    pthread_mutex_unlock(&log->mu);
    if (need_marks && (err = build_marks(log, i))) return err;
    char name[4200];
    segment_path(log, seg_base, name, sizeof name);
    rd->fd = open(name, O_RDONLY | O_CLOEXEC);
    if (rd->fd < 0) return REG_EIO;
    pthread_mutex_lock(&log->mu);
    struct mark m = mark_before(log, i, rd->next);
    pthread_mutex_unlock(&log->mu);
    rd->seg_base = seg_base;
    rd->at = m.offset;
    rd->pos = m.pos;
    return 0;
}

static int emb_reader_next(elog_reader *base, elog_record *recs, int max, int timeout_ms)
{
    emb_reader *rd = (emb_reader *)base;
    emb_log *log = rd->log;
    if (max <= 0) return REG_EINVAL;
    size_t *starts = reserve(rd->starts, &rd->starts_cap, (size_t)max, sizeof *starts);
    if (!starts) return REG_ENOMEM;
    rd->starts = starts;

    pthread_mutex_lock(&log->mu);
    if (log->end <= rd->next && timeout_ms > 0) {
        struct timespec deadline;
        deadline_after(&deadline, timeout_ms);
        while (log->end <= rd->next && !log->stopping)
            if (pthread_cond_timedwait(&log->advanced, &log->mu, &deadline) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&log->mu);

    /* Segment by segment, each read appended to the buffer at `used`; the records' pointers
     * are set at the end, since the buffer may move as it grows. */
    int n = 0, err = 0;
    size_t used = 0, want = (size_t)max * rd->avg_len + REC_HEADER;
    if (want < READ_MIN) want = READ_MIN;
    if (want > READ_MAX) want = READ_MAX;
    while (n < max) {
        pthread_mutex_lock(&log->mu);
        int more = rd->next < log->end;
        size_t i = more ? segment_of(log, rd->next) : 0;
        int64_t seg_base = more ? log->segs[i].base : 0, seg_end = more ? log->segs[i].end : 0;
        uint64_t limit = more ? log->segs[i].size : 0;
        pthread_mutex_unlock(&log->mu);
        if (!more) break;
        if ((rd->fd < 0 || rd->seg_base != seg_base) && (err = reader_seek(rd, i, seg_base))) break;
        if (rd->pos >= limit) {
            err = REG_EDECODE; /* the segment's synced bytes end before the log's end offset */
            break;
        }
        size_t len = limit - rd->pos < want ? (size_t)(limit - rd->pos) : want;
        unsigned char *room = reserve(rd->buf, &rd->buf_cap, used + len, 1);
        if (!room) {
            err = REG_ENOMEM;
            break;
        }
        rd->buf = room;
        if ((err = read_at(rd->fd, rd->pos, len, rd->buf + used))) break;
        size_t at = 0;
        int64_t need = 0;
        while (at < len && n < max && rd->at < seg_end) {
            const unsigned char *p = rd->buf + used + at;
            int64_t k = record_length(p, len - at, rd->at);
            if (k == REC_BAD) {
                fprintf(stderr, "eventlog: %s: record %lld is damaged\n", log->path,
                        (long long)rd->at);
                err = REG_EDECODE;
                break;
            }
            if ((uint64_t)k > len - at) {
                need = k;
                break;
            }
            if (rd->at >= rd->next) {
                uint32_t key_len = get_le32(p + 24);
                rd->starts[n] = used + at;
                recs[n++] = (elog_record){
                    .offset = rd->at,
                    .time_ms = (int64_t)get_le64(p + 16),
                    .key_len = key_len,
                    .value_len = (size_t)k - REC_HEADER - key_len,
                };
                rd->next = rd->at + 1;
            }
            at += (size_t)k;
            rd->at++;
        }
        if (err) break;
        if (at == 0) {
            if (len == limit - rd->pos) {
                err = REG_EDECODE; /* synced bytes end mid-record */
                break;
            }
            want = (size_t)need; /* one record larger than the read */
            continue;
        }
        used += at;
        rd->pos += at;
    }
    for (int k = 0; k < n; k++) {
        recs[k].key = rd->buf + rd->starts[k] + REC_HEADER;
        recs[k].value = rd->buf + rd->starts[k] + REC_HEADER + recs[k].key_len;
    }
    if (n > 0) rd->avg_len = (rd->avg_len + used / (size_t)n + 1) / 2;
    return n > 0 ? n : err;
}

/* The time of the record at offset, or -1 when it cannot be read. */
static int64_t time_at(emb_log *log, int64_t offset)
{
    elog_reader *rd = NULL;
    elog_record rec;
    int64_t t = -1;
    if (emb_reader_open(&log->super, offset, &rd) == 0 && emb_reader_next(rd, &rec, 1, 0) == 1)
        t = rec.time_ms;
    if (rd) rd->ops->reader_close(rd);
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

static void emb_reader_close(elog_reader *base)
{
    emb_reader *rd = (emb_reader *)base;
    if (rd->fd >= 0) close(rd->fd);
    free(rd->buf);
    free(rd->starts);
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
    if (!log->fsync && fdatasync(log->active_fd) != 0)
        fprintf(stderr, "eventlog: sync of %s failed: %s\n", log->path, strerror(errno));
    free_log(log);
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
