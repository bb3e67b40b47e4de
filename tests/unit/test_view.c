/*
 * test_view.c - unit tests of the projector's transactions (projector/view.c) on a real view in
 * a temporary directory, against a model: random puts, deletes and reads over a few thousand
 * keys per column family, in batches chained as the projector chains them (each batch reads
 * through the one being committed), are checked read by read, and after every commit the whole
 * committed state is compared with the model key by key and, for the index families, by
 * iterating them in key order. The keys share a tenant prefix and some are prefixes of others,
 * which the commit's sort must order as RocksDB does; index keys are written several times in a
 * batch, where the last write must win.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "projector/view.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NKEYS = 3000, MAXVAL = 300, NFAM = 4 };
static const view_cf families[NFAM] = {VIEW_DEVICES, VIEW_SERIALS, VIEW_IDX_META, VIEW_IDX_ATTR};
static const bool is_index[NFAM] = {false, false, true, true};

static char dir[] = "/tmp/test-view-XXXXXX";
static view *v;

/* A value as the model holds it: absent, or len bytes. */
struct value {
    bool present;
    size_t len;
    unsigned char b[MAXVAL];
};

/* committed[f][k]; batch[i] the writes of the two batches in flight (set: written there). */
static struct value committed[NFAM][NKEYS];
struct batch_model {
    bool set[NFAM][NKEYS];
    struct value val[NFAM][NKEYS];
};
static struct batch_model batches[2];

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Key k: a shared 16-byte prefix, two bytes of k / 4, then k % 4 zero bytes, so that keys
 * k - k % 4 .. k - k % 4 + 3 are each a prefix of the next. */
static size_t key_of(int k, unsigned char *out)
{
    memset(out, 0xa5, 16);
    out[16] = (unsigned char)(k / 4 >> 8);
    out[17] = (unsigned char)(k / 4);
    memset(out + 18, 0, (size_t)(k % 4));
    return 18 + (size_t)(k % 4);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir)) return -1;
    return view_open(dir, VIEW_PRIMARY, 8, &v);
}

static int teardown(void **state)
{
    (void)state;
    view_close(v);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* What a read through the newest batch (cur) must see. */
static const struct value *expected(int cur, int f, int k, bool has_base)
{
    if (batches[cur].set[f][k]) return &batches[cur].val[f][k];
    if (has_base && batches[1 - cur].set[f][k]) return &batches[1 - cur].val[f][k];
    return &committed[f][k];
}

/* n random operations on t (batch model cur). */
static void random_ops(view_txn *t, int cur, bool has_base, int n)
{
    unsigned char key[32];
    for (int i = 0; i < n; i++) {
        int f = (int)(next_random() % NFAM), k = (int)(next_random() % NKEYS);
        /* Index keys come from a narrower range, so that one is written several times. */
        if (is_index[f]) k %= NKEYS / 8;
        size_t klen = key_of(k, key);
        unsigned op = (unsigned)(next_random() % 10);
        if (op < 5) {
            struct value *w = &batches[cur].val[f][k];
            w->present = true;
            w->len = next_random() % 4 == 0 ? 0 : (size_t)(next_random() % MAXVAL);
            for (size_t j = 0; j < w->len; j++)
                w->b[j] = (unsigned char)next_random();
            batches[cur].set[f][k] = true;
            view_txn_put(t, families[f], key, klen, w->b, w->len);
        } else if (op < 7) {
            batches[cur].val[f][k].present = false;
            batches[cur].set[f][k] = true;
            view_txn_delete(t, families[f], key, klen);
        } else {
            char *val = NULL;
            size_t len = 0;
            int err = view_txn_get(t, families[f], key, klen, &val, &len);
            if (is_index[f]) {
                assert_int_equal(err, REG_EINVAL);
                continue;
            }
            const struct value *want = expected(cur, f, k, has_base);
            if (!want->present) {
                assert_int_equal(err, REG_ENOTFOUND);
                continue;
            }
            assert_int_equal(err, 0);
            assert_int_equal(len, want->len);
            assert_memory_equal(val, want->b, len);
            free(val);
        }
    }
}

/* Folds batch cur into the committed model and compares the view with it. */
static void commit_model(int cur)
{
    for (int f = 0; f < NFAM; f++)
        for (int k = 0; k < NKEYS; k++)
            if (batches[cur].set[f][k]) committed[f][k] = batches[cur].val[f][k];
    memset(&batches[cur], 0, sizeof batches[cur]);

    unsigned char key[32];
    for (int f = 0; f < NFAM; f++) {
        for (int k = 0; k < NKEYS; k++) {
            char *val = NULL;
            size_t len = 0;
            int err = view_get(v, families[f], key, key_of(k, key), &val, &len);
            if (!committed[f][k].present) {
                assert_int_equal(err, REG_ENOTFOUND);
                continue;
            }
            assert_int_equal(err, 0);
            assert_int_equal(len, committed[f][k].len);
            assert_memory_equal(val, committed[f][k].b, len);
            free(val);
        }
        if (!is_index[f]) continue;
        /* In key order: k ascending is key order (a key precedes those it is a prefix of). */
        view_iter *it = view_iter_prefix(v, families[f], key, 16, NULL, 0);
        assert_non_null(it);
        const char *ik, *iv;
        size_t iklen, ivlen;
        for (int k = 0; k < NKEYS; k++) {
            if (!committed[f][k].present) continue;
            assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 1);
            size_t klen = key_of(k, key);
            assert_int_equal(iklen, klen);
            assert_memory_equal(ik, key, klen);
            assert_int_equal(ivlen, committed[f][k].len);
            assert_memory_equal(iv, committed[f][k].b, ivlen);
        }
        assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 0);
        view_iter_free(it);
    }
}

/* Batches as the projector runs them: batch N+1 is decided while N is written, reading
 * through it; N+1 drops its base once N is written. Their sizes grow the overlay's table. */
static void test_chained_batches_match_model(void **state)
{
    (void)state;
    view_txn *inflight = NULL;
    int inflight_model = 0;
    for (int round = 0; round < 12; round++) {
        int cur = round % 2;
        view_txn *t = view_txn_begin(v, inflight);
        assert_non_null(t);
        random_ops(t, cur, inflight != NULL, 500 + round * 1500);
        if (inflight) {
            assert_int_equal(view_txn_write(inflight, NULL, 0), 0);
            commit_model(inflight_model);
            view_txn_drop_base(t);
            view_txn_free(inflight);
        }
        random_ops(t, cur, false, 200); /* with the base gone, the reads see what it wrote */
        assert_int_equal(view_txn_seal(t), 0);
        inflight = t;
        inflight_model = cur;
    }
    assert_int_equal(view_txn_write(inflight, NULL, 0), 0);
    commit_model(inflight_model);
    view_txn_free(inflight);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chained_batches_match_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
