/*
 * fuzz_postings.c - libFuzzer harness for the posting lists' merges (projector/postings.c),
 * which RocksDB runs over whatever bytes the index families hold.
 *
 * The input is a flag byte, then pieces, each a length byte and that many bytes: the existing
 * list (length 255: none), then the operands. With the flag's low bit set, every piece is first
 * made well formed (the right tag, whole entries, sorted, each suffix once), so that most runs
 * check results and not only refusals.
 *
 * Checked: a merge never crashes; it refuses exactly when a piece is malformed; what it makes is
 * a well-formed list equal to applying the operands to a set one by one, in order; and
 * folding the operands first (RocksDB's partial merge) gives the same list.
 */
#include "projector/postings.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (line %d)\n", #c, __LINE__);                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

enum { MAX_PIECES = 16 };

static int suffix_order(const void *a, const void *b)
{
    return memcmp(a, b, POSTING_SUFFIX_BYTES);
}

static int op_order(const void *a, const void *b)
{
    return memcmp((const char *)a + 1, (const char *)b + 1, POSTING_SUFFIX_BYTES);
}

/* Makes p (len bytes, room for it) a well-formed list or operand; returns its new length. Of a
 * suffix present twice, the first entry stays (qsort is not stable: which one does not matter
 * for the checks, the piece is what it is once made). */
static size_t make_well_formed(char *p, size_t len, bool operand)
{
    size_t width = operand ? POSTING_OP_BYTES : POSTING_SUFFIX_BYTES;
    if (len < 1) return 0;
    p[0] = operand ? POSTING_OPERAND : POSTING_LIST;
    size_t n = (len - 1) / width;
    qsort(p + 1, n, width, operand ? op_order : suffix_order);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char *e = p + 1 + i * width;
        if (operand) e[0] = (char)(e[0] & 1);
        const char *s = operand ? e + 1 : e;
        if (m && !memcmp((p + 1 + (m - 1) * width) + (operand ? 1 : 0), s, POSTING_SUFFIX_BYTES))
            continue;
        memmove(p + 1 + m * width, e, width);
        m++;
    }
    return 1 + m * width;
}

/* The model: a set of suffixes as an unsorted array. */
struct set {
    size_t n;
    char (*s)[POSTING_SUFFIX_BYTES];
};

static long set_find(const struct set *set, const char *suffix)
{
    for (size_t i = 0; i < set->n; i++)
        if (!memcmp(set->s[i], suffix, POSTING_SUFFIX_BYTES)) return (long)i;
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    bool repair = data[0] & 1;
    const char *pieces[MAX_PIECES];
    size_t lens[MAX_PIECES], npieces = 0;
    char *copy = malloc(size);
    memcpy(copy, data, size);
    size_t at = 1;
    bool no_list = false;
    while (at < size && npieces < MAX_PIECES) {
        size_t len = (uint8_t)copy[at++];
        if (npieces == 0 && len == 255) {
            no_list = true;
            pieces[npieces] = NULL;
            lens[npieces++] = 0;
            continue;
        }
        if (len > size - at) len = size - at;
        char *p = copy + at;
        at += len;
        if (repair) len = make_well_formed(p, len, npieces > 0);
        pieces[npieces] = p;
        lens[npieces++] = len;
    }
    if (npieces == 0) {
        free(copy);
        return 0;
    }
    const char *existing = pieces[0];
    size_t existing_len = lens[0];
    const char *const *ops = pieces + 1;
    const size_t *op_lens = lens + 1;
    size_t nops = npieces - 1;

    /* Well formed? The model says what the merge must do. */
    bool valid = no_list || existing_len == 0 || postings_list_count(existing, existing_len) >= 0;
    for (size_t i = 0; i < nops && valid; i++) {
        const char *o = ops[i];
        size_t len = op_lens[i];
        valid = len >= 1 && o[0] == POSTING_OPERAND && (len - 1) % POSTING_OP_BYTES == 0;
        for (size_t j = 0; valid && j < (len - 1) / POSTING_OP_BYTES; j++) {
            const char *e = o + 1 + j * POSTING_OP_BYTES;
            valid = e[0] == POSTING_ADD || e[0] == POSTING_REMOVE;
            if (valid && j) valid = memcmp(e - POSTING_OP_BYTES + 1, e + 1, POSTING_SUFFIX_BYTES) < 0;
        }
    }

    size_t len = 0;
    char *merged = postings_full_merge(existing, existing_len, ops, op_lens, nops, &len);
    CHECK((merged != NULL) == valid);
    if (merged) {
        long count = postings_list_count(merged, len);
        CHECK(count >= 0);
        struct set set = {0, malloc(size * sizeof *set.s + 1)};
        for (size_t i = 0; existing_len && i < (existing_len - 1) / POSTING_SUFFIX_BYTES; i++)
            memcpy(set.s[set.n++], existing + 1 + i * POSTING_SUFFIX_BYTES, POSTING_SUFFIX_BYTES);
        for (size_t i = 0; i < nops; i++)
            for (size_t j = 0; j < (op_lens[i] - 1) / POSTING_OP_BYTES; j++) {
                const char *e = ops[i] + 1 + j * POSTING_OP_BYTES;
                long k = set_find(&set, e + 1);
                if (e[0] == POSTING_ADD && k < 0) memcpy(set.s[set.n++], e + 1, POSTING_SUFFIX_BYTES);
                if (e[0] == POSTING_REMOVE && k >= 0) memcpy(set.s[k], set.s[--set.n], POSTING_SUFFIX_BYTES);
            }
        CHECK((size_t)count == set.n);
        for (long i = 0; i < count; i++)
            CHECK(set_find(&set, merged + 1 + i * POSTING_SUFFIX_BYTES) >= 0);
        free(set.s);

        if (nops) { /* folded first, the same list */
            size_t plen = 0, len2 = 0;
            char *partial = postings_partial_merge(ops, op_lens, nops, &plen);
            CHECK(partial != NULL);
            const char *one[1] = {partial};
            char *merged2 = postings_full_merge(existing, existing_len, one, &plen, 1, &len2);
            CHECK(merged2 && len2 == len && !memcmp(merged2, merged, len));
            free(merged2);
            free(partial);
        }
    } else if (nops) {
        size_t plen = 0;
        bool ops_valid = true; /* the list alone may be the malformed piece */
        for (size_t i = 0; i < nops && ops_valid; i++) {
            const char *one[1] = {ops[i]};
            char *m = postings_full_merge(NULL, 0, one, &op_lens[i], 1, &plen);
            ops_valid = m != NULL;
            free(m);
        }
        char *partial = postings_partial_merge(ops, op_lens, nops, &plen);
        CHECK((partial != NULL) == ops_valid);
        free(partial);
    }
    free(merged);
    free(copy);
    return 0;
}
