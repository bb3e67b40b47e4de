/*
 * view_batch.c - a transaction's writes made one RocksDB write batch (view_batch.h): sorted into
 * key order, the chunked families' runs gathered into merge operands, and encoded in RocksDB's
 * own batch format.
 *
 * Why key order: the memtable inserts a sorted batch about 4x faster than the same keys in
 * arrival order, and a chunk's entries must be adjacent to be gathered. Why encode it here: one
 * copy into RocksDB instead of a growing string append per entry.
 */
#include "projector/view_batch.h"
#include "err.h"
#include "projector/chunked.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- A commit's WriteBatch is encoded here in RocksDB's own format (the WAL's: a fixed64
 * sequence number and a fixed32 count, then per entry a tag byte, the column family's id as a
 * varint32 unless it is the default family, the key, and for a put or a merge the value, each a
 * varint32 length and the bytes) and handed to RocksDB in one copy
 * (rocksdb_writebatch_create_from). Building it with put_cf, a growing std::string append per
 * entry, was 15% of the committer thread. view_open checks the encoding against put_cf's on a
 * sample batch; should a RocksDB version ever differ, the view builds its batches with put_cf
 * instead. */

enum { TAG_DELETE = 0x0, TAG_PUT = 0x1, TAG_MERGE = 0x2, TAG_CF = 0x4 /* added: with a family */ };

enum batch_kind { BATCH_DELETE = TAG_DELETE, BATCH_PUT = TAG_PUT, BATCH_MERGE = TAG_MERGE };

struct batch_entry {
    uint32_t cf_id;
    view_cf cf;
    uint8_t kind; /* enum batch_kind */
    const char *key, *val;
    size_t klen, vlen;
};

static size_t varint32_len(uint32_t x)
{
    size_t n = 1;
    while (x >= 0x80) {
        x >>= 7;
        n++;
    }
    return n;
}

static char *put_varint32(char *p, uint32_t x)
{
    while (x >= 0x80) {
        *p++ = (char)(x | 0x80);
        x >>= 7;
    }
    *p++ = (char)x;
    return p;
}

static size_t batch_entry_size(const struct batch_entry *e)
{
    size_t n =
        1 + (e->cf_id ? varint32_len(e->cf_id) : 0) + varint32_len((uint32_t)e->klen) + e->klen;
    return e->kind != BATCH_DELETE ? n + varint32_len((uint32_t)e->vlen) + e->vlen : n;
}

static char *batch_entry_put(char *p, const struct batch_entry *e)
{
    *p++ = (char)(e->cf_id ? e->kind + TAG_CF : e->kind);
    if (e->cf_id) p = put_varint32(p, e->cf_id);
    p = put_varint32(p, (uint32_t)e->klen);
    memcpy(p, e->key, e->klen);
    p += e->klen;
    if (e->kind == BATCH_DELETE) return p;
    p = put_varint32(p, (uint32_t)e->vlen);
    if (e->vlen) memcpy(p, e->val, e->vlen);
    return p + e->vlen;
}

/* The batch header for `count` entries (sequence number 0: RocksDB assigns it). */
static char *batch_header(char *p, uint32_t count)
{
    memset(p, 0, 8);
    for (int i = 0; i < 4; i++)
        p[8 + i] = (char)(count >> (8 * i));
    return p + 12;
}

/* Adds e to wb through RocksDB's own calls. */
static void batch_add(const view_batch_target *to, rocksdb_writebatch_t *wb,
                      const struct batch_entry *e)
{
    if (e->kind == BATCH_PUT)
        rocksdb_writebatch_put_cf(wb, to->cf[e->cf], e->key, e->klen, e->val, e->vlen);
    else if (e->kind == BATCH_MERGE)
        rocksdb_writebatch_merge_cf(wb, to->cf[e->cf], e->key, e->klen, e->val, e->vlen);
    else
        rocksdb_writebatch_delete_cf(wb, to->cf[e->cf], e->key, e->klen);
}

/* Encodes a sample batch both ways: true when the bytes are the same. */
bool view_batch_encoding_checks(const view_batch_target *to)
{
    static const char long_key[200] = "k", long_val[300] = "v";
    const struct batch_entry sample[] = {
        {to->cf_id[VIEW_META], VIEW_META, BATCH_PUT, "next", "\0\0\0\0\0\0\0\1", 4, 8},
        {to->cf_id[VIEW_DEVICES], VIEW_DEVICES, BATCH_PUT, long_key, long_val, sizeof long_key,
         sizeof long_val},
        {to->cf_id[VIEW_IDX_META], VIEW_IDX_META, BATCH_MERGE, "idx", "\2", 3, 1},
        {to->cf_id[VIEW_IDX_STATUS], VIEW_IDX_STATUS, BATCH_DELETE, "gone", NULL, 4, 0},
        {to->cf_id[VIEW_IDX_ATTR], VIEW_IDX_ATTR, BATCH_MERGE, long_key, long_val, sizeof long_key,
         sizeof long_val},
        {to->cf_id[VIEW_SHADOWS], VIEW_SHADOWS, BATCH_DELETE, long_key, NULL, sizeof long_key, 0},
    };
    size_t n = sizeof sample / sizeof sample[0], size = 12;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (size_t i = 0; i < n; i++) {
        batch_add(to, wb, &sample[i]);
        size += batch_entry_size(&sample[i]);
    }
    char *mine = malloc(size), *p = mine ? batch_header(mine, (uint32_t)n) : NULL;
    for (size_t i = 0; p && i < n; i++)
        p = batch_entry_put(p, &sample[i]);
    size_t theirs_len = 0;
    const char *theirs = rocksdb_writebatch_data(wb, &theirs_len);
    bool same = mine && theirs_len == size && !memcmp(theirs, mine, size);
    free(mine);
    rocksdb_writebatch_destroy(wb);
    if (!same) fprintf(stderr, "view: this RocksDB encodes batches differently; using put_cf\n");
    return same;
}

/* ---- The commit's key order, by radix: qsort over the writes was a fifth of the committer
 * thread (40,000 entries a batch, a dozen memcmp calls each over a shared tenant prefix). Entries
 * are split by column family, then each range is sorted on 8 key bytes at a time: by the bytes
 * at the offset all its keys share the bytes before, then each run of entries equal in those 8
 * bytes again from the next 8.
 *
 * An item carries its key and the key's length, so that a level of the sort reads each key once
 * (for its word) and the write itself never: reading them through the write, three passes a
 * level (keys that end, bytes all share, words), was most of the sort's time, in cache misses. */

struct sort_item {
    uint64_t word; /* 8 key bytes from the range's offset, big-endian, zeros past the key's end */
    const char *key;
    uint32_t klen;
    uint32_t at; /* the write's place in the transaction: a key written twice, in that order */
};

static uint64_t key_word(const struct sort_item *x, size_t off)
{
    const unsigned char *p = (const unsigned char *)x->key + off;
    uint64_t w = 0;
    if (off + 8 <= x->klen) {
        memcpy(&w, p, 8);
        return __builtin_bswap64(w);
    }
    for (size_t i = 0; i < 8; i++)
        w = w << 8 | (off + i < x->klen ? p[i] : 0);
    return w;
}

/* The order of two items of a range whose keys agree in their first `off` bytes. */
static int item_order(const struct sort_item *x, const struct sort_item *y, size_t off)
{
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = n > off ? memcmp(x->key + off, y->key + off, n - off) : 0;
    if (c) return c;
    if (x->klen != y->klen) return x->klen < y->klen ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

static void insertion_sort(struct sort_item *a, size_t n, size_t off)
{
    for (size_t i = 1; i < n; i++) {
        struct sort_item x = a[i];
        size_t j = i;
        for (; j > 0 && item_order(&a[j - 1], &x, off) > 0; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

/* Sorts a by word, least significant byte first, using tmp (n items); skips the bytes in which
 * all words agree. */
static void radix_by_word(struct sort_item *a, struct sort_item *tmp, size_t n)
{
    size_t count[8][256] = {{0}};
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++)
            count[b][(a[i].word >> (8 * b)) & 0xff]++;
    struct sort_item *from = a, *to = tmp;
    for (int b = 0; b < 8; b++) {
        size_t *c = count[b], sum = 0;
        if (c[(a[0].word >> (8 * b)) & 0xff] == n) continue; /* every word has this byte */
        for (int v = 0; v < 256; v++) {
            size_t k = c[v];
            c[v] = sum;
            sum += k;
        }
        for (size_t i = 0; i < n; i++)
            to[c[(from[i].word >> (8 * b)) & 0xff]++] = from[i];
        struct sort_item *x = from;
        from = to;
        to = x;
    }
    if (from != a) memcpy(a, from, n * sizeof *a);
}

/* Sorts a by word, keeping the order of equal words. Below WORD_INSERTION_MAX items this beats
 * the radix passes, whose 16 KiB of counts are cleared and summed per call: the index families'
 * keys (a value, then a device id whose first bytes a batch shares) split into many runs of a
 * few dozen equal words, and sorting those by radix made the commit's sort a sixth of the
 * committer thread. */
enum { WORD_INSERTION_MAX = 64 };
static void insertion_sort_by_word(struct sort_item *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct sort_item x = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1].word > x.word; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

enum { KEY_PREFETCH_AHEAD = 16 };

/* Sorts n entries of one column family whose keys agree in their first `off` bytes. */
static void sort_range(struct sort_item *a, struct sort_item *tmp, size_t n, size_t off)
{
    for (;;) {
        if (n <= 16) {
            insertion_sort(a, n, off);
            return;
        }
        /* Keys that end within the shared bytes are prefixes of all the others: they go first. */
        size_t ended = 0;
        for (size_t i = 0; i < n; i++)
            if (a[i].klen <= off) {
                struct sort_item x = a[i];
                a[i] = a[ended];
                a[ended++] = x;
            }
        insertion_sort(a, ended, off);
        a += ended;
        n -= ended;
        if (n < 2) return;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (size_t i = 0; i < n; i++) {
            /* Each key is a cache miss (a batch's keys lie far apart, among their values): asked
             * for ahead, the misses overlap. */
            if (i + KEY_PREFETCH_AHEAD < n) __builtin_prefetch(a[i + KEY_PREFETCH_AHEAD].key + off);
            uint64_t w = key_word(&a[i], off);
            a[i].word = w;
            lo = w < lo ? w : lo;
            hi = w > hi ? w : hi;
        }
        if (lo != hi) break;
        off += 8; /* all share these 8 bytes too (a tenant, the front of time-ordered ids) */
    }
    if (n <= WORD_INSERTION_MAX)
        insertion_sort_by_word(a, n);
    else
        radix_by_word(a, tmp, n);
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && a[j].word == a[i].word; j++)
            ;
        if (j - i > 1) sort_range(a + i, tmp, j - i, off + 8);
    }
}

/* The n writes in key order within column family order, in a malloc'd array of n (the caller
 * frees it); NULL when out of memory. */
static struct sort_item *sorted_writes(const view_write *w, size_t n)
{
    size_t start[VIEW_CF_COUNT + 1] = {0};
    struct sort_item *a = malloc(2 * (n ? n : 1) * sizeof *a);
    if (!a) return NULL;
    struct sort_item *tmp = a + (n ? n : 1);
    for (size_t i = 0; i < n; i++)
        start[w[i].cf + 1]++;
    for (int c = 0; c < VIEW_CF_COUNT; c++)
        start[c + 1] += start[c];
    size_t at[VIEW_CF_COUNT];
    memcpy(at, start, sizeof at);
    for (size_t i = 0; i < n; i++)
        a[at[w[i].cf]++] = (struct sort_item){0, w[i].key, w[i].klen, (uint32_t)i};
    for (int c = 0; c < VIEW_CF_COUNT; c++)
        sort_range(a + start[c], tmp, start[c + 1] - start[c], 0);
    return a;
}

/* A commit's entries in the order written: the sorted writes, each run of a chunked family's
 * entries that share a chunk key made one merge operand (chunked.h), then the meta values. */
struct commit_plan {
    struct batch_entry *e;
    size_t n;
    char *operands;                 /* the merge operands' bytes */
    unsigned char (*meta_bytes)[8]; /* the meta values, big-endian */
};

static void plan_release(struct commit_plan *plan)
{
    free(plan->e);
    free(plan->operands);
    free(plan->meta_bytes);
}

/* The run of a chunked family's entries from sorted[i] that share its chunk key: its end, with
 * the operand written at *op (a key written several times: its last write). */
static size_t chunk_run(const view_batch_target *to, const view_write *w,
                        const struct sort_item *sorted, size_t n, size_t i, char **op)
{
    const view_write *first = &w[sorted[i].at];
    size_t s = to->chunk_suffix[first->cf], ck = first->klen - s, j = i;
    char *p = chunk_op_header(*op, s);
    for (; j < n; j++) {
        const view_write *e = &w[sorted[j].at];
        if (e->cf != first->cf || e->klen != first->klen || memcmp(e->key, first->key, ck)) break;
        const view_write *next = j + 1 < n ? &w[sorted[j + 1].at] : NULL;
        if (next && next->cf == e->cf && next->klen == e->klen &&
            !memcmp(next->key, e->key, e->klen))
            continue; /* written again after: that write counts */
        p = chunk_op_entry(p, !e->del, e->key + ck, s, e->val, e->vlen);
    }
    *op = p;
    return j;
}

/* Plans the commit of the n sorted entries and the meta values. 0, REG_ENOMEM, or REG_EINVAL
 * when a chunked family's key is shorter than its suffix or its value too long for a chunk. */
static int plan_build(const view_batch_target *to, const view_write *w,
                      const struct sort_item *sorted, size_t n, const view_meta_value *meta,
                      size_t nmeta, struct commit_plan *plan)
{
    *plan = (struct commit_plan){0};
    size_t op_bytes = 1;
    for (size_t i = 0; i < n; i++) {
        const view_write *e = &w[sorted[i].at];
        size_t s = to->chunk_suffix[e->cf];
        if (!s) continue;
        if (e->klen < s || e->vlen >= CHUNK_VALUE_MAX) return REG_EINVAL;
        op_bytes += CHUNK_HEADER + chunk_op_size(s, e->vlen);
    }
    plan->e = malloc((n + nmeta + 1) * sizeof *plan->e);
    plan->operands = malloc(op_bytes);
    plan->meta_bytes = malloc((nmeta + 1) * sizeof *plan->meta_bytes);
    if (!plan->e || !plan->operands || !plan->meta_bytes) {
        plan_release(plan);
        return REG_ENOMEM;
    }
    char *op = plan->operands;
    for (size_t i = 0; i < n;) {
        const view_write *e = &w[sorted[i].at];
        struct batch_entry *b = &plan->e[plan->n++];
        if (to->chunk_suffix[e->cf]) {
            char *start = op;
            i = chunk_run(to, w, sorted, n, i, &op);
            *b = (struct batch_entry){to->cf_id[e->cf],
                                      e->cf,
                                      BATCH_MERGE,
                                      e->key,
                                      start,
                                      e->klen - to->chunk_suffix[e->cf],
                                      (size_t)(op - start)};
            continue;
        }
        *b = (struct batch_entry){to->cf_id[e->cf], e->cf,  e->del ? BATCH_DELETE : BATCH_PUT,
                                  e->key,           e->val, e->klen,
                                  e->vlen};
        i++;
    }
    for (size_t i = 0; i < nmeta; i++) {
        view_put_be64(plan->meta_bytes[i], (uint64_t)meta[i].value);
        plan->e[plan->n++] = (struct batch_entry){to->cf_id[VIEW_META],
                                                  VIEW_META,
                                                  BATCH_PUT,
                                                  meta[i].name,
                                                  (const char *)plan->meta_bytes[i],
                                                  strlen(meta[i].name),
                                                  8};
    }
    return 0;
}

/* The commit's batch, encoded here or through RocksDB's calls; NULL when out of memory. */
static rocksdb_writebatch_t *batch_build(const view_batch_target *to,
                                         const struct commit_plan *plan)
{
    if (!to->own_encoding) {
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        for (size_t i = 0; i < plan->n; i++)
            batch_add(to, wb, &plan->e[i]);
        return wb;
    }
    size_t size = 12;
    for (size_t i = 0; i < plan->n; i++)
        size += batch_entry_size(&plan->e[i]);
    char *rep = malloc(size);
    if (!rep) return NULL;
    char *p = batch_header(rep, (uint32_t)plan->n);
    for (size_t i = 0; i < plan->n; i++)
        p = batch_entry_put(p, &plan->e[i]);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create_from(rep, size);
    free(rep);
    return wb;
}

int view_batch_build(const view_batch_target *to, const view_write *w, size_t n,
                     const view_meta_value *meta, size_t nmeta, rocksdb_writebatch_t **out)
{
    struct sort_item *sorted = sorted_writes(w, n);
    if (!sorted) return REG_ENOMEM;
    struct commit_plan plan;
    int err = plan_build(to, w, sorted, n, meta, nmeta, &plan);
    free(sorted);
    if (err) return err;
    *out = batch_build(to, &plan);
    plan_release(&plan);
    return *out ? 0 : REG_ENOMEM;
}
