/*
 * test_keyfilter.c - unit tests of the key filter (projector/keyfilter.c) and of the view's use
 * of it (projector/view_filter.c through view_set_key_filter), on a real view in a temporary
 * directory.
 *
 * The filter: no key added is ever "absent", and of keys never added few are "maybe". The view:
 * a transaction's lookups give what they gave without a filter (found with its value, or
 * REG_ENOTFOUND) for keys committed before the filter was made (found by its scan), put by a
 * transaction begun before it and committed after (which the scan must wait for), put in the
 * transaction itself or in its base, and for keys never written; and so again once the filter
 * has filled up and been made again larger, and once it has outgrown its bound and is gone.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "projector/keyfilter.h"
#include "projector/view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/test_keyfilter.XXXXXX";

/* Key i: a tenant-like prefix and a serial-like text. */
static size_t key_of(unsigned i, char *out)
{
    memset(out, 0x5a, 16);
    return 16 + (size_t)sprintf(out + 16, "SN-%09u", i);
}

static void test_filter_answers(void **state)
{
    (void)state;
    enum { N = 100000, ABSENT = 100000 };
    keyfilter *f = keyfilter_new(N);
    assert_non_null(f);
    char k[64];
    for (unsigned i = 0; i < N; i += 2)
        keyfilter_add(f, k, key_of(i, k));
    assert_int_equal(keyfilter_count(f), N / 2);
    for (unsigned i = 0; i < N; i += 2)
        assert_true(keyfilter_may_contain(f, k, key_of(i, k)));
    unsigned maybe = 0;
    for (unsigned i = 1; i < 2 * ABSENT; i += 2)
        maybe += keyfilter_may_contain(f, k, key_of(i, k));
    /* half full: well under the 1% it gives at capacity */
    fprintf(stderr, "keyfilter: %u of %u keys never added answer maybe\n", maybe, ABSENT);
    assert_true(maybe < ABSENT / 200);
    for (unsigned i = N; i < 2 * N; i++) /* filled to capacity and on to twice it */
        keyfilter_add(f, k, key_of(i, k));
    for (unsigned i = 0; i < 2 * N; i += (i < N ? 2 : 1))
        assert_true(keyfilter_may_contain(f, k, key_of(i, k)));
    keyfilter_free(f);

    keyfilter *tiny = keyfilter_new(0); /* one block */
    assert_non_null(tiny);
    assert_false(keyfilter_may_contain(tiny, "x", 1));
    keyfilter_add(tiny, "x", 1);
    assert_true(keyfilter_may_contain(tiny, "x", 1));
    keyfilter_free(tiny);
}

static void commit(view_txn *t)
{
    view_txn_seal(t);
    assert_int_equal(view_txn_write(t, NULL, 0), 0);
}

/* Key i's lookup through t: found with its value (i as text) or not. */
static void expect(view_txn *t, unsigned i, bool found)
{
    char k[64], *val = NULL;
    size_t klen = key_of(i, k), len = 0;
    int err = view_txn_get(t, VIEW_SERIALS, k, klen, &val, &len);
    assert_int_equal(err, found ? 0 : REG_ENOTFOUND);
    if (found) {
        char want[16];
        assert_int_equal(len, (size_t)sprintf(want, "%u", i));
        assert_memory_equal(val, want, len);
    }
    free(val);
}

static void put(view_txn *t, unsigned i)
{
    char k[64], val[16];
    size_t klen = key_of(i, k);
    view_txn_put(t, VIEW_SERIALS, k, klen, val, (size_t)sprintf(val, "%u", i));
}

/* Waits (at most 10 s) for the filter to answer, beginning and freeing transactions meanwhile
 * as the projector does, since a due scan starts at a transaction's beginning. */
static void wait_ready(view *v)
{
    for (int i = 0; i < 10000 && !view_key_filter_ready(v); i++) {
        view_txn_free(view_txn_begin(v, NULL));
        usleep(1000);
    }
    assert_true(view_key_filter_ready(v));
}

static void test_view_lookups(void **state)
{
    (void)state;
    view *v = NULL;
    assert_int_equal(view_open(dir, VIEW_PRIMARY, 8, &v), 0);
    assert_int_equal(view_set_key_filter(v, VIEW_IDX_STATUS, 1 << 20), REG_EINVAL);
    assert_int_equal(view_set_key_filter(v, VIEW_COMMANDS, 1 << 20), REG_EINVAL);

    /* 0..999 committed before the filter is made */
    view_txn *t = view_txn_begin(v, NULL);
    for (unsigned i = 0; i < 1000; i++)
        put(t, i);
    commit(t);
    view_txn_free(t);
    /* 1000..1099 put by a transaction begun before the filter, committed after */
    view_txn *early = view_txn_begin(v, NULL);
    for (unsigned i = 1000; i < 1100; i++)
        put(early, i);
    assert_int_equal(view_set_key_filter(v, VIEW_SERIALS, 4 << 20),
                     0);                    /* room for 1 Mi keys, then 3.3 Mi */
    assert_false(view_key_filter_ready(v)); /* its scan waits for `early` */
    t = view_txn_begin(v, NULL);
    assert_false(view_key_filter_ready(v));
    expect(t, 5, true); /* from the store, the filter not answering yet */
    expect(t, 1050, false);
    view_txn_free(t);
    commit(early);
    view_txn_free(early);
    wait_ready(v);

    /* 1100..1199 in a base being committed, 1200..1299 in the transaction itself */
    view_txn *base = view_txn_begin(v, NULL);
    for (unsigned i = 1100; i < 1200; i++)
        put(base, i);
    view_txn_seal(base);
    t = view_txn_begin(v, base);
    for (unsigned i = 1200; i < 1300; i++)
        put(t, i);
    for (unsigned i = 0; i < 1300; i++)
        expect(t, i, true);
    for (unsigned i = 1300; i < 3000; i++)
        expect(t, i, false);
    assert_int_equal(view_txn_write(base, NULL, 0), 0);
    view_txn_drop_base(t);
    view_txn_free(base);
    commit(t);
    view_txn_free(t);

    /* Filled past its room (1 Mi keys): made again larger at the next transaction's beginning,
     * its scan waiting for the last one (still open), then finding them all. */
    const unsigned many = 1300 + 21 * 50000; /* the last 50,000 take it past 1 Mi */
    view_txn *last = NULL;
    for (unsigned at = 1300; at < many;) {
        view_txn_free(last);
        last = view_txn_begin(v, NULL);
        for (unsigned end = at + 50000 < many ? at + 50000 : many; at < end; at++)
            put(last, at);
        commit(last);
    }
    assert_true(view_key_filter_ready(v)); /* the first one, over its room */
    t = view_txn_begin(v, NULL);
    assert_false(view_key_filter_ready(v)); /* made again, waiting for `last` */
    view_txn_free(t);
    view_txn_free(last);
    wait_ready(v);
    t = view_txn_begin(v, NULL);
    for (unsigned i = 0; i < many; i += 997)
        expect(t, i, true);
    expect(t, many - 1, true);
    for (unsigned i = many; i < many + 2000; i++)
        expect(t, i, false);
    view_txn_free(t);

    /* A bound it outgrows: no filter, and the same answers from the store. */
    assert_int_equal(view_set_key_filter(v, VIEW_SERIALS, 1000), 0);
    t = view_txn_begin(v, NULL);
    for (unsigned i = many; i < many + 1000; i++)
        put(t, i);
    commit(t);
    view_txn_free(t);
    t = view_txn_begin(v, NULL);
    assert_false(view_key_filter_ready(v));
    expect(t, 7, true);
    expect(t, many + 999, true);
    expect(t, many + 1000, false);
    view_txn_free(t);
    assert_int_equal(view_set_key_filter(v, VIEW_SERIALS, 0), 0);
    assert_false(view_key_filter_ready(v));
    view_close(v);
}

/* A view closed while its filter's scan runs: the scan is stopped first. */
static void test_close_while_scanning(void **state)
{
    (void)state;
    view *v = NULL;
    assert_int_equal(view_open(dir, VIEW_PRIMARY, 8, &v), 0);
    assert_int_equal(view_set_key_filter(v, VIEW_SERIALS, 64 << 20), 0);
    view_close(v);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_answers),
        cmocka_unit_test(test_view_lookups),
        cmocka_unit_test(test_close_while_scanning),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
