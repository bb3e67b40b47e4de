/*
 * chunked.c - the chunks of the view's chunked families (chunked.h): checking stored chunks and
 * operands, walking their entries, folding operands together and into a chunk, and the RocksDB
 * merge operator that does it when RocksDB reads, flushes or compacts.
 *
 * Every fold is a linear merge of two sorted entry lists. Many operands (a memtable's worth
 * for one chunk) are folded pairwise, a level at a time, so that n operands of m bytes in all
 * cost m log n, not m n.
 */
#include "projector/chunked.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The entry at *at (bounds checked): true and *at past it, false when malformed. */
static bool entry_at(const char *b, size_t len, bool operand, size_t s, size_t *at, chunk_entry *e)
{
    size_t p = *at;
    e->put = true;
    if (operand) {
        if (p >= len || (b[p] != CHUNK_PUT && b[p] != CHUNK_DELETE)) return false;
        e->put = b[p++] == CHUNK_PUT;
    }
    if (len - p < s) return false;
    e->suffix = b + p;
    p += s;
    size_t vlen = 0;
    for (int shift = 0;; shift += 7) {
        if (p >= len || shift > 21) return false;
        unsigned char c = (unsigned char)b[p++];
        vlen |= (size_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) break;
    }
    if (len - p < vlen || (!e->put && vlen)) return false;
    e->val = b + p;
    e->vlen = vlen;
    *at = p + vlen;
    return true;
}

long chunk_count(const char *b, size_t len, bool operand, size_t *suffix_len)
{
    if (len < CHUNK_HEADER || b[0] != (operand ? CHUNK_OPERAND : CHUNK_LIST)) return -1;
    size_t s = (unsigned char)b[1], at = CHUNK_HEADER;
    if (s < 1 || s > CHUNK_SUFFIX_MAX) return -1;
    long n = 0;
    const char *prev = NULL;
    while (at < len) {
        chunk_entry e;
        if (!entry_at(b, len, operand, s, &at, &e)) return -1;
        if (prev && memcmp(prev, e.suffix, s) >= 0) return -1;
        prev = e.suffix;
        n++;
    }
    *suffix_len = s;
    return n;
}

bool chunk_next(const char *b, size_t len, bool operand, size_t s, size_t *at, chunk_entry *e)
{
    return *at < len && entry_at(b, len, operand, s, at, e);
}

char *chunk_op_header(char *p, size_t suffix_len)
{
    *p++ = CHUNK_OPERAND;
    *p++ = (char)suffix_len;
    return p;
}

/* An entry's suffix, value length and value (a chunk's entry, an operand's after its op). */
static char *put_entry_body(char *p, const void *suffix, size_t s, const void *val, size_t vlen)
{
    memcpy(p, suffix, s);
    p += s;
    size_t x = vlen;
    while (x >= 0x80) {
        *p++ = (char)(x | 0x80);
        x >>= 7;
    }
    *p++ = (char)x;
    if (vlen) memcpy(p, val, vlen);
    return p + vlen;
}

char *chunk_op_entry(char *p, bool put, const void *suffix, size_t suffix_len, const void *val,
                     size_t vlen)
{
    *p++ = put ? CHUNK_PUT : CHUNK_DELETE;
    return put_entry_body(p, suffix, suffix_len, val, put ? vlen : 0);
}

/* An operand being folded: its bytes, and the buffer holding them when a fold made it. */
struct span {
    const char *p;
    size_t len;
    char *owned;
};

/* a then b (both checked, of suffix length s) as one operand, in a malloc'd buffer: on a suffix
 * in both, b's entry. */
static char *merge_two(const struct span *a, const struct span *b, size_t s, size_t *len)
{
    char *out = malloc(a->len + b->len);
    if (!out) return NULL;
    char *o = chunk_op_header(out, s);
    size_t x = CHUNK_HEADER, y = CHUNK_HEADER;
    chunk_entry ex, ey;
    size_t xnext = x, ynext = y;
    bool hx = chunk_next(a->p, a->len, true, s, &xnext, &ex);
    bool hy = chunk_next(b->p, b->len, true, s, &ynext, &ey);
    while (hx || hy) {
        int c = !hx ? 1 : !hy ? -1 : memcmp(ex.suffix, ey.suffix, s);
        if (c < 0) {
            memcpy(o, a->p + x, xnext - x);
            o += xnext - x;
        } else {
            memcpy(o, b->p + y, ynext - y);
            o += ynext - y;
        }
        if (c <= 0) {
            x = xnext;
            hx = chunk_next(a->p, a->len, true, s, &xnext, &ex);
        }
        if (c >= 0) {
            y = ynext;
            hy = chunk_next(b->p, b->len, true, s, &ynext, &ey);
        }
    }
    *len = (size_t)(o - out);
    return out;
}

/* Folds the n checked operands of s into s[0] (n >= 1); false when out of memory (what the
 * folds made is freed). */
static bool fold(struct span *sp, size_t n, size_t s)
{
    while (n > 1) {
        size_t m = 0;
        for (size_t i = 0; i < n; i += 2) {
            if (i + 1 == n) {
                sp[m++] = sp[i];
                continue;
            }
            struct span merged = {0};
            merged.owned = merge_two(&sp[i], &sp[i + 1], s, &merged.len);
            free(sp[i].owned);
            free(sp[i + 1].owned);
            if (!merged.owned) {
                for (size_t j = i + 2; j < n; j++)
                    free(sp[j].owned);
                for (size_t j = 0; j < m; j++)
                    free(sp[j].owned);
                return false;
            }
            merged.p = merged.owned;
            sp[m++] = merged;
        }
        n = m;
    }
    return true;
}

/* The n operands checked (one suffix length, *s) and folded into one, which *out holds; false
 * when one is malformed or memory runs out. */
static bool fold_operands(const char *const *ops, const size_t *op_lens, size_t n, size_t *s,
                          struct span *out)
{
    if (n == 0) return false;
    struct span one[1], *sp = n == 1 ? one : malloc(n * sizeof *sp);
    if (!sp) return false;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        size_t si = 0;
        ok = chunk_count(ops[i], op_lens[i], true, &si) >= 0 && (i == 0 || si == *s);
        *s = si;
        sp[i] = (struct span){ops[i], op_lens[i], NULL};
    }
    if (ok) ok = fold(sp, n, *s);
    if (ok) *out = sp[0];
    if (sp != one) free(sp);
    return ok;
}

char *chunk_partial_merge(const char *const *ops, const size_t *op_lens, size_t n, size_t *len)
{
    struct span op;
    size_t s = 0;
    if (!fold_operands(ops, op_lens, n, &s, &op)) return NULL;
    if (op.owned) {
        *len = op.len;
        return op.owned;
    }
    char *copy = malloc(op.len);
    if (copy) memcpy(copy, op.p, op.len);
    *len = op.len;
    return copy;
}

char *chunk_full_merge(const char *existing, size_t existing_len, const char *const *ops,
                       const size_t *op_lens, size_t n, size_t *len)
{
    struct span op = {0};
    size_t s = 0, ls = 0;
    if (n && !fold_operands(ops, op_lens, n, &s, &op)) return NULL;
    /* No chunk yet, or the empty value of an index entry older than chunks (never a chunk's
     * key, but harmless): start from an empty chunk. */
    bool none = !existing || !existing_len;
    if ((!none && (chunk_count(existing, existing_len, false, &ls) < 0 || (n && ls != s))) ||
        (none && !n)) {
        free(op.owned);
        return NULL;
    }
    if (!n) s = ls;
    char *out = malloc((none ? 0 : existing_len) + (n ? op.len : 0) + CHUNK_HEADER);
    if (!out) {
        free(op.owned);
        return NULL;
    }
    char *o = out;
    *o++ = CHUNK_LIST;
    *o++ = (char)s;
    size_t xnext = CHUNK_HEADER, ynext = CHUNK_HEADER, x = xnext;
    chunk_entry ex, ey;
    bool hx = !none && chunk_next(existing, existing_len, false, s, &xnext, &ex);
    bool hy = n && chunk_next(op.p, op.len, true, s, &ynext, &ey);
    while (hx || hy) {
        int c = !hx ? 1 : !hy ? -1 : memcmp(ex.suffix, ey.suffix, s);
        if (c < 0) { /* kept */
            memcpy(o, existing + x, xnext - x);
            o += xnext - x;
        } else if (ey.put) { /* put, or put again */
            o = put_entry_body(o, ey.suffix, s, ey.val, ey.vlen);
        }
        if (c <= 0) {
            x = xnext;
            hx = chunk_next(existing, existing_len, false, s, &xnext, &ex);
        }
        if (c >= 0) hy = chunk_next(op.p, op.len, true, s, &ynext, &ey);
    }
    free(op.owned);
    *len = (size_t)(o - out);
    return out;
}

/* ---- RocksDB's merge operator. A malformed value fails the merge, which RocksDB reports as
 * corruption of that key (on a read, or stopping a compaction): the bytes are the view's own,
 * so only damage on disk makes one. */

static char *full_merge_cb(void *state, const char *key, size_t key_len, const char *existing,
                           size_t existing_len, const char *const *ops, const size_t *op_lens,
                           int n, unsigned char *success, size_t *len)
{
    (void)state;
    (void)key;
    (void)key_len;
    char *out = chunk_full_merge(existing, existing_len, ops, op_lens, (size_t)n, len);
    *success = out != NULL;
    return out;
}

static char *partial_merge_cb(void *state, const char *key, size_t key_len, const char *const *ops,
                              const size_t *op_lens, int n, unsigned char *success, size_t *len)
{
    (void)state;
    (void)key;
    (void)key_len;
    char *out = chunk_partial_merge(ops, op_lens, (size_t)n, len);
    *success = out != NULL;
    return out;
}

static void delete_value_cb(void *state, const char *value, size_t len)
{
    (void)state;
    (void)len;
    free((char *)value);
}

static void destroy_cb(void *state)
{
    (void)state;
}

static const char *name_cb(void *state)
{
    (void)state;
    return "registry.chunks.v1";
}

rocksdb_mergeoperator_t *chunk_merge_operator(void)
{
    return rocksdb_mergeoperator_create(NULL, destroy_cb, full_merge_cb, partial_merge_cb,
                                        delete_value_cb, name_cb);
}
