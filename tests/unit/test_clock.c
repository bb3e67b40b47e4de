/*
 * test_clock.c - RFC 3339 times: formatting (millisecond precision, UTC, before 1970 too) gives
 * the known text whatever second was formatted before it, and parsing reads it back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"
#include "err.h"

#include <string.h>

static void expect_text(int64_t ms, const char *want)
{
    char out[32];
    clock_rfc3339(ms, out);
    assert_string_equal(out, want);
    int64_t back = 0;
    assert_int_equal(clock_parse_rfc3339(out, &back), 0);
    assert_int_equal(back, ms);
}

static void test_format_and_parse(void **state)
{
    /* The same second twice, the next one, back to an earlier one: the per-thread cache of the
     * last second must never show through. */
    expect_text(1764633600123, "2025-12-02T00:00:00.123Z");
    expect_text(1764633600999, "2025-12-02T00:00:00.999Z");
    expect_text(1764633601000, "2025-12-02T00:00:01.000Z");
    expect_text(1764633600001, "2025-12-02T00:00:00.001Z");
    expect_text(0, "1970-01-01T00:00:00.000Z");
    expect_text(-1, "1969-12-31T23:59:59.999Z");
    expect_text(-1000, "1969-12-31T23:59:59.000Z");
    expect_text(951782400000, "2000-02-29T00:00:00.000Z");
    expect_text(1764633600123, "2025-12-02T00:00:00.123Z");
    for (int64_t ms = 1700000000000; ms < 1700000005000; ms += 7) {
        char a[32], b[32];
        clock_rfc3339(ms, a);
        clock_rfc3339(ms - 1000, b);
        assert_int_equal(strncmp(a, "2023-11-14T22:13:", 17), 0);
        assert_true(strcmp(b, a) < 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_format_and_parse)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
