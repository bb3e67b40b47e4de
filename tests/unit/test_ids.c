/*
 * test_ids.c - unit tests of common/ids.c: new UUIDs are version 7 with the RFC 9562 variant,
 * carry the current Unix time in milliseconds, and increase in the order one thread made them;
 * derived ids are stable; the text form round-trips and bad text is refused.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ids.h"

#include <string.h>
#include <time.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void test_new_is_v7_with_time(void **state)
{
    (void)state;
    uint64_t before = now_ms();
    reg_uuid u;
    assert_int_equal(reg_uuid_new(&u), 0);
    uint64_t after = now_ms();
    assert_int_equal(u.b[6] >> 4, 7);
    assert_int_equal(u.b[8] >> 6, 2);
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | u.b[i];
    assert_true(ms >= before && ms <= after);
}

static void test_new_ids_increase(void **state)
{
    (void)state;
    enum { N = 100000 };
    static reg_uuid ids[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(reg_uuid_new(&ids[i]), 0);
    for (int i = 1; i < N; i++) {
        /* A thread's ids increase, even many within one fraction of a millisecond. */
        assert_true(memcmp(ids[i - 1].b, ids[i].b, 16) < 0);
        assert_int_equal(ids[i].b[6] >> 4, 7);
        assert_int_equal(ids[i].b[8] >> 6, 2);
    }
}

static void test_derive_is_stable(void **state)
{
    (void)state;
    reg_uuid ns, a, b, c;
    assert_int_equal(reg_uuid_new(&ns), 0);
    size_t zero = 0, one = 1;
    reg_uuid_derive(&ns, &zero, sizeof zero, &a);
    reg_uuid_derive(&ns, &zero, sizeof zero, &b);
    reg_uuid_derive(&ns, &one, sizeof one, &c);
    assert_memory_equal(a.b, b.b, 16);
    assert_memory_not_equal(a.b, c.b, 16);
    assert_int_equal(a.b[6] >> 4, 5);
    /* Event ids are derived: they must not change between versions. SHA-256 of 24 zero bytes
     * is 9d908ecf b6b256de f8b49a7c 504e6c88..., with the version and variant bits set. */
    reg_uuid zero_ns = {{0}}, known;
    uint64_t zero_name = 0;
    char text[REG_UUID_STRLEN + 1];
    reg_uuid_derive(&zero_ns, &zero_name, sizeof zero_name, &known);
    reg_uuid_format(&known, text);
    assert_string_equal(text, "9d908ecf-b6b2-56de-b8b4-9a7c504e6c88");
}

static void test_text_round_trip(void **state)
{
    (void)state;
    reg_uuid u, back;
    char text[REG_UUID_STRLEN + 1];
    assert_int_equal(reg_uuid_new(&u), 0);
    reg_uuid_format(&u, text);
    assert_int_equal(strlen(text), REG_UUID_STRLEN);
    assert_int_equal(reg_uuid_parse(text, &back), 0);
    assert_memory_equal(u.b, back.b, 16);
    assert_int_not_equal(reg_uuid_parse("0190b3c2-7d0e-7c39-9a57-3f2d8e6a4b1", &back), 0);
    assert_int_not_equal(reg_uuid_parse("0190b3c2-7d0e-7c39-9a57-3f2d8e6a4b1g", &back), 0);
    assert_int_not_equal(reg_uuid_parse("0190b3c27d0e-7c39-9a57-3f2d8e6a4b10x", &back), 0);
    assert_int_not_equal(reg_uuid_parse("", &back), 0);
}

/* reg_uuid_take: an id inside a longer buffer, parsed and copied with its case kept; anything
 * else leaves "" and 0. */
static void test_take(void **state)
{
    (void)state;
    const char *buf = "0F8FAD5B-D9CB-469F-A165-70867728950Etrailing";
    char text[REG_UUID_STRLEN + 1];
    reg_uuid u, want;
    assert_int_equal(reg_uuid_take(buf, REG_UUID_STRLEN, text, &u), 1);
    assert_string_equal(text, "0F8FAD5B-D9CB-469F-A165-70867728950E");
    assert_int_equal(reg_uuid_parse(text, &want), 0);
    assert_memory_equal(u.b, want.b, 16);
    assert_int_equal(reg_uuid_take(buf, REG_UUID_STRLEN + 1, text, &u), 0); /* too long */
    assert_string_equal(text, "");
    assert_int_equal(reg_uuid_take(buf, 35, text, &u), 0);
    assert_int_equal(reg_uuid_take("0f8fad5b-d9cb-469f-a165-70867728950x", 36, text, &u), 0);
    assert_string_equal(text, "");
    assert_int_equal(reg_uuid_take(NULL, 36, text, &u), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_is_v7_with_time),
        cmocka_unit_test(test_new_ids_increase),
        cmocka_unit_test(test_derive_is_stable),
        cmocka_unit_test(test_text_round_trip),
        cmocka_unit_test(test_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
