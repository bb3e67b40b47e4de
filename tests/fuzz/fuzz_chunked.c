/*
 * fuzz_chunked.c - libFuzzer harness for the chunks' merges (projector/chunked.c), which RocksDB
 * runs over whatever bytes the chunked families hold.
 *
 * The input is a flag byte, then pieces, each a length byte and that many bytes: the existing
 * chunk (length 255: none), then the operands. With the flag's low bit set, every piece is
 * first rebuilt well formed from its bytes (entries of a suffix length the flag gives, sorted,
 * each suffix once), so that most runs check results and not only refusals.
 *
 * Checked: a merge never crashes; it refuses exactly when a piece is malformed (or the pieces'
 * suffix lengths differ); what it makes is a well-formed chunk equal to applying the operands'
 * puts and deletes one by one, in order, to a map; and folding the operands first (RocksDB's
 * partial merge) gives the same chunk.
 */
#include "projector/chunked.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_check.h"

enum { MAX_PIECES = 16, MAX_ENTRIES = 256 };

struct raw_entry {
    bool put;
    const char *suffix, *val;
    size_t vlen;
};

static size_t sort_suffix_len;
static int entry_order(const void *a, const void *b)
{
    const struct raw_entry *x = a, *y = b;
    return memcmp(x->suffix, y->suffix, sort_suffix_len);
}

/* Rebuilds piece p (len bytes) as a well-formed chunk or operand of suffix length s, read from
 * p's bytes as (op, suffix, value length % 8, value) until they run out; into out (room for
 * 2 * len + 2 bytes). Returns its length. */
static size_t rebuild(const char *p, size_t len, bool operand, size_t s, char *out)
{
    struct raw_entry e[MAX_ENTRIES];
    size_t n = 0, at = 0;
    while (n < MAX_ENTRIES && len - at >= 2 + s) {
        e[n].put = !operand || (p[at] & 1);
        e[n].suffix = p + at + 1;
        size_t vlen = (unsigned char)p[at + 1 + s] % 8;
        at += 2 + s;
        if (vlen > len - at) vlen = len - at;
        e[n].val = p + at;
        e[n].vlen = e[n].put ? vlen : 0;
        at += vlen;
        n++;
    }
    sort_suffix_len = s;
    qsort(e, n, sizeof e[0], entry_order);
    char *o = out;
    *o++ = operand ? CHUNK_OPERAND : CHUNK_LIST;
    *o++ = (char)s;
    for (size_t i = 0; i < n; i++) {
        if (i && !memcmp(e[i - 1].suffix, e[i].suffix, s)) continue;
        char *start = o;
        o = chunk_op_entry(o, e[i].put, e[i].suffix, s, e[i].val, e[i].vlen);
        if (!operand) { /* a chunk's entry has no op */
            memmove(start, start + 1, (size_t)(o - start - 1));
            o--;
        }
    }
    return (size_t)(o - out);
}

/* The model: a map of suffix -> value, unsorted. */
struct model {
    size_t n;
    struct raw_entry e[MAX_PIECES * MAX_ENTRIES];
};

static long model_find(const struct model *m, const char *suffix, size_t s)
{
    for (size_t i = 0; i < m->n; i++)
        if (!memcmp(m->e[i].suffix, suffix, s)) return (long)i;
    return -1;
}

static void model_apply(struct model *m, const chunk_entry *e, size_t s)
{
    long k = model_find(m, e->suffix, s);
    if (e->put) {
        if (k < 0) k = (long)m->n++;
        m->e[k] = (struct raw_entry){true, e->suffix, e->val, e->vlen};
    } else if (k >= 0) {
        m->e[k] = m->e[--m->n];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    bool repair = data[0] & 1;
    size_t s = 1 + (data[0] >> 1) % 16;
    const char *pieces[MAX_PIECES];
    size_t lens[MAX_PIECES], npieces = 0, at = 1;
    char *store = malloc(2 * size + 2 * MAX_PIECES), *next = store;
    while (at < size && npieces < MAX_PIECES) {
        size_t len = data[at++];
        if (npieces == 0 && len == 255) {
            pieces[0] = NULL;
            lens[npieces++] = 0;
            continue;
        }
        if (len > size - at) len = size - at;
        const char *p = (const char *)data + at;
        at += len;
        if (repair) {
            len = rebuild(p, len, npieces > 0, s, next);
        } else {
            memcpy(next, p, len);
        }
        pieces[npieces] = next;
        lens[npieces++] = len;
        next += len + 2; /* a rebuilt piece is at most 2 bytes longer */
    }
    if (npieces == 0) {
        free(store);
        return 0;
    }
    const char *existing = pieces[0];
    size_t existing_len = lens[0];
    const char *const *ops = pieces + 1;
    const size_t *op_lens = lens + 1;
    size_t nops = npieces - 1;

    /* Well formed, one suffix length? The model says what the merge must do. */
    size_t ls = 0, os = 0;
    bool has_list = existing && existing_len;
    bool valid =
        (has_list || nops) && (!has_list || chunk_count(existing, existing_len, false, &ls) >= 0);
    for (size_t i = 0; i < nops && valid; i++) {
        size_t si = 0;
        valid = chunk_count(ops[i], op_lens[i], true, &si) >= 0 && (i == 0 || si == os);
        os = si;
    }
    if (valid && has_list && nops) valid = ls == os;

    size_t len = 0;
    char *merged = chunk_full_merge(existing, existing_len, ops, op_lens, nops, &len);
    CHECK((merged != NULL) == valid);
    if (merged) {
        size_t ms = 0;
        size_t want_s = has_list ? ls : os;
        long count = chunk_count(merged, len, false, &ms);
        CHECK(count >= 0 && ms == want_s);
        static struct model m;
        m.n = 0;
        chunk_entry e;
        size_t p = CHUNK_HEADER;
        while (has_list && chunk_next(existing, existing_len, false, ms, &p, &e))
            model_apply(&m, &e, ms);
        for (size_t i = 0; i < nops; i++)
            for (p = CHUNK_HEADER; chunk_next(ops[i], op_lens[i], true, ms, &p, &e);)
                model_apply(&m, &e, ms);
        CHECK((size_t)count == m.n);
        for (p = CHUNK_HEADER; chunk_next(merged, len, false, ms, &p, &e);) {
            long k = model_find(&m, e.suffix, ms);
            CHECK(k >= 0 && m.e[k].vlen == e.vlen && !memcmp(m.e[k].val, e.val, e.vlen));
        }

        if (nops) { /* folded first, the same chunk */
            size_t plen = 0, len2 = 0;
            char *partial = chunk_partial_merge(ops, op_lens, nops, &plen);
            CHECK(partial != NULL);
            const char *one[1] = {partial};
            char *merged2 = chunk_full_merge(existing, existing_len, one, &plen, 1, &len2);
            CHECK(merged2 && len2 == len && !memcmp(merged2, merged, len));
            free(merged2);
            free(partial);
        }
    } else if (nops) { /* a partial merge refuses exactly the malformed operands */
        bool ops_valid = true;
        for (size_t i = 0; i < nops && ops_valid; i++) {
            size_t si = 0;
            ops_valid = chunk_count(ops[i], op_lens[i], true, &si) >= 0 && (i == 0 || si == os);
            os = si;
        }
        size_t plen = 0;
        char *partial = chunk_partial_merge(ops, op_lens, nops, &plen);
        CHECK((partial != NULL) == ops_valid);
        free(partial);
    }
    free(merged);
    free(store);
    return 0;
}
