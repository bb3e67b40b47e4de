/*
 * postings.c - the posting lists of the view's equality indexes (postings.h): checking stored
 * lists and operands, folding operands together and into a list, and the RocksDB merge
 * operator that does it when RocksDB reads, flushes or compacts an index family.
 *
 * Every fold is a linear merge of sorted arrays. Many operands (a memtable's worth for one
 * list) are folded pairwise, a level at a time, so that n operands of m ids in all cost
 * m log n, not m n.
 */
#include "projector/postings.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

long postings_list_count(const char *val, size_t len)
{
    if (len < 1 || val[0] != POSTING_LIST || (len - 1) % POSTING_SUFFIX_BYTES) return -1;
    size_t n = (len - 1) / POSTING_SUFFIX_BYTES;
    for (size_t i = 1; i < n; i++) {
        const char *s = val + 1 + i * POSTING_SUFFIX_BYTES;
        if (memcmp(s - POSTING_SUFFIX_BYTES, s, POSTING_SUFFIX_BYTES) >= 0) return -1;
    }
    return (long)n;
}

/* The number of entries of an operand, or -1 when the bytes are not one. */
static long operand_count(const char *op, size_t len)
{
    if (len < 1 || op[0] != POSTING_OPERAND || (len - 1) % POSTING_OP_BYTES) return -1;
    size_t n = (len - 1) / POSTING_OP_BYTES;
    for (size_t i = 0; i < n; i++) {
        const char *e = op + 1 + i * POSTING_OP_BYTES;
        if (e[0] != POSTING_ADD && e[0] != POSTING_REMOVE) return -1;
        if (i && memcmp(e - POSTING_OP_BYTES + 1, e + 1, POSTING_SUFFIX_BYTES) >= 0) return -1;
    }
    return (long)n;
}

/* An operand being folded: its bytes, and the buffer holding them when a fold made it. */
struct span {
    const char *p;
    size_t len;
    char *owned;
};

/* a then b (both checked) as one operand, in a malloc'd buffer: on a suffix in both, b's op. */
static char *merge_two(const struct span *a, const struct span *b, size_t *len)
{
    char *out = malloc(a->len + b->len);
    if (!out) return NULL;
    const char *x = a->p + 1, *xe = a->p + a->len, *y = b->p + 1, *ye = b->p + b->len;
    char *o = out;
    *o++ = POSTING_OPERAND;
    while (x < xe || y < ye) {
        int c = x == xe ? 1 : y == ye ? -1 : memcmp(x + 1, y + 1, POSTING_SUFFIX_BYTES);
        const char *from = c < 0 ? x : y;
        memcpy(o, from, POSTING_OP_BYTES);
        o += POSTING_OP_BYTES;
        if (c <= 0) x += POSTING_OP_BYTES;
        if (c >= 0) y += POSTING_OP_BYTES;
    }
    *len = (size_t)(o - out);
    return out;
}

/* Folds the n checked operands of s into s[0] (n >= 1); false when out of memory (what the
 * folds made is freed). */
static bool fold(struct span *s, size_t n)
{
    while (n > 1) {
        size_t m = 0;
        for (size_t i = 0; i < n; i += 2) {
            if (i + 1 == n) {
                s[m++] = s[i];
                continue;
            }
            struct span merged = {0};
            merged.owned = merge_two(&s[i], &s[i + 1], &merged.len);
            free(s[i].owned);
            free(s[i + 1].owned);
            if (!merged.owned) {
                for (size_t j = i + 2; j < n; j++)
                    free(s[j].owned);
                for (size_t j = 0; j < m; j++)
                    free(s[j].owned);
                return false;
            }
            merged.p = merged.owned;
            s[m++] = merged;
        }
        n = m;
    }
    return true;
}

/* The n operands checked and folded into one, which *out holds; false when one is malformed or
 * memory runs out. */
static bool fold_operands(const char *const *ops, const size_t *op_lens, size_t n,
                          struct span *out)
{
    if (n == 0) return false;
    struct span one[1], *s = n == 1 ? one : malloc(n * sizeof *s);
    if (!s) return false;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        ok = operand_count(ops[i], op_lens[i]) >= 0;
        s[i] = (struct span){ops[i], op_lens[i], NULL};
    }
    if (ok) ok = fold(s, n);
    if (ok) *out = s[0];
    if (s != one) free(s);
    return ok;
}

char *postings_partial_merge(const char *const *ops, const size_t *op_lens, size_t n, size_t *len)
{
    struct span op;
    if (!fold_operands(ops, op_lens, n, &op)) return NULL;
    if (op.owned) {
        *len = op.len;
        return op.owned;
    }
    char *copy = malloc(op.len);
    if (copy) memcpy(copy, op.p, op.len);
    *len = op.len;
    return copy;
}

char *postings_full_merge(const char *existing, size_t existing_len, const char *const *ops,
                          const size_t *op_lens, size_t n, size_t *len)
{
    /* No list yet, or the empty value of an entry older than lists (never a list's key, but
     * harmless): start from the empty list. */
    static const char empty_list[1] = {POSTING_LIST}, no_op[1] = {POSTING_OPERAND};
    if (!existing || !existing_len) {
        existing = empty_list;
        existing_len = 1;
    }
    long count = postings_list_count(existing, existing_len);
    struct span op = {no_op, 1, NULL};
    if (count < 0 || (n && !fold_operands(ops, op_lens, n, &op))) return NULL;
    size_t nops = (op.len - 1) / POSTING_OP_BYTES;
    char *out = malloc(postings_list_size((size_t)count + nops));
    if (!out) {
        free(op.owned);
        return NULL;
    }
    const char *x = existing + 1, *xe = existing + existing_len, *y = op.p + 1,
               *ye = op.p + op.len;
    char *o = out;
    *o++ = POSTING_LIST;
    while (x < xe || y < ye) {
        int c = x == xe ? 1 : y == ye ? -1 : memcmp(x, y + 1, POSTING_SUFFIX_BYTES);
        if (c < 0) { /* kept */
            memcpy(o, x, POSTING_SUFFIX_BYTES);
            o += POSTING_SUFFIX_BYTES;
        } else if (y[0] == POSTING_ADD) { /* added, or added again */
            memcpy(o, y + 1, POSTING_SUFFIX_BYTES);
            o += POSTING_SUFFIX_BYTES;
        }
        if (c <= 0) x += POSTING_SUFFIX_BYTES;
        if (c >= 0) y += POSTING_OP_BYTES;
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
    char *out = postings_full_merge(existing, existing_len, ops, op_lens, (size_t)n, len);
    *success = out != NULL;
    return out;
}

static char *partial_merge_cb(void *state, const char *key, size_t key_len, const char *const *ops,
                              const size_t *op_lens, int n, unsigned char *success, size_t *len)
{
    (void)state;
    (void)key;
    (void)key_len;
    char *out = postings_partial_merge(ops, op_lens, (size_t)n, len);
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
    return "registry.postings.v1";
}

rocksdb_mergeoperator_t *postings_merge_operator(void)
{
    return rocksdb_mergeoperator_create(NULL, destroy_cb, full_merge_cb, partial_merge_cb,
                                        delete_value_cb, name_cb);
}
