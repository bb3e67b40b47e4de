/*
 * test_delivery.c - unit tests of common/delivery.c: a batch reads back as written (binary
 * payloads, empty ones, the longest topic), and a damaged batch (cut anywhere, a wrong version,
 * lengths pointing past the end) is refused without reading outside it.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "delivery.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

static reg_uuid T = {{0xaa, 1}}, D1 = {{0xbb, 2}}, D2 = {{0xcc, 3}};

static void test_round_trip(void **state)
{
    delivery_batch b = {0};
    char long_topic[DELIVERY_MAX_TOPIC + 2];
    memset(long_topic, 't', sizeof long_topic);
    long_topic[DELIVERY_MAX_TOPIC] = 0;
    assert_int_equal(delivery_append(&b, &T, &D1, "a/b", "{\"x\":1}", 7), 0);
    assert_int_equal(delivery_append(&b, &T, &D2, long_topic, "", 0), 0);
    static char big[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)i; /* NULs and all */
    assert_int_equal(delivery_append(&b, &T, &D1, "c", big, sizeof big), 0);
    long_topic[DELIVERY_MAX_TOPIC] = 't'; /* one byte too long */
    long_topic[DELIVERY_MAX_TOPIC + 1] = 0;
    assert_int_equal(delivery_append(&b, &T, &D1, long_topic, "x", 1), REG_EINVAL);
    assert_int_equal(b.count, 3);

    delivery d;
    size_t pos = 0;
    assert_int_equal(delivery_next(b.data, b.len, &pos, &d), 1);
    assert_memory_equal(d.tenant.b, T.b, 16);
    assert_memory_equal(d.device.b, D1.b, 16);
    assert_int_equal(d.topic_len, 3);
    assert_memory_equal(d.topic, "a/b", 3);
    assert_int_equal(d.payload_len, 7);
    assert_memory_equal(d.payload, "{\"x\":1}", 7);
    assert_int_equal(delivery_next(b.data, b.len, &pos, &d), 1);
    assert_memory_equal(d.device.b, D2.b, 16);
    assert_int_equal(d.topic_len, DELIVERY_MAX_TOPIC);
    assert_int_equal(d.payload_len, 0);
    assert_int_equal(delivery_next(b.data, b.len, &pos, &d), 1);
    assert_int_equal(d.payload_len, sizeof big);
    assert_memory_equal(d.payload, big, sizeof big);
    assert_int_equal(delivery_next(b.data, b.len, &pos, &d), 0);
    delivery_batch_clear(&b);
    assert_null(b.data);
}

static void test_damaged(void **state)
{
    delivery_batch b = {0};
    delivery_append(&b, &T, &D1, "topic/one", "payload one", 11);
    delivery_append(&b, &T, &D2, "topic/two", "payload two", 11);
    size_t one = b.len - (16 + 16 + 2 + 4 + 9 + 11); /* where the second delivery starts */
    /* Cut anywhere: a copy of exactly that length, so that a read past it is caught by ASan. */
    for (size_t cut = 0; cut < b.len; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, b.data, cut);
        delivery d;
        size_t pos = 0;
        int r, n = 0;
        while ((r = delivery_next(copy, cut, &pos, &d)) == 1) {
            assert_true(d.payload + d.payload_len <= copy + cut);
            n++;
        }
        if (cut == 1 || cut == one) /* a whole batch, shorter */
            assert_int_equal(r, 0);
        else
            assert_int_equal(r, REG_EDECODE);
        assert_int_equal(n, cut >= one ? 1 : 0);
        free(copy);
    }
    delivery d;
    size_t pos = 0;
    b.data[0] = 2; /* another version */
    assert_int_equal(delivery_next(b.data, b.len, &pos, &d), REG_EDECODE);
    b.data[0] = 1;
    b.data[1 + 34] = 0x7f; /* a payload length far past the end */
    pos = 0;
    assert_int_equal(delivery_next(b.data, b.len, &pos, &d), REG_EDECODE);
    delivery_batch_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damaged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
