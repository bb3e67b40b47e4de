/*
 * test_eventlog_embedded.c - the embedded log: offsets are dense and ordered, appends are
 * reported once, data survives reopening, readers start anywhere and wait for new records, and
 * time lookups find the first record at or after a time.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "eventlog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void test_append_read_reopen(void **state)
{
    elog_config cfg = {"registry.test.commands", dir, NULL, 1};
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

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_append_read_reopen)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return rc;
}
