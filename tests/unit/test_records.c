/*
 * test_records.c - unit tests of projector/records.c on a real view in a temporary directory:
 * moving a device record's shadow_version in its stored text. Only the top-level member moves,
 * whatever the metadata holds (a key of that name, the name inside a string, escaped quotes);
 * a record without the member gets it the long way; a missing device says so. A device's status
 * is read from its text the same way.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "projector/keys.h"
#include "projector/records.h"
#include "projector/view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[] = "/tmp/test-records-XXXXXX";
static view *v;
static reg_uuid tenant = {{1, 2, 3}}, device = {{4, 5, 6}};

static json_t *stored_after(const char *text, int64_t version, int expect)
{
    reg_key k;
    key_add(key_add(key_reset(&k), tenant.b, 16), device.b, 16);
    view_txn *t = view_txn_begin(v, NULL);
    if (text) view_txn_put(t, VIEW_DEVICES, k.b, k.len, text, strlen(text));
    assert_int_equal(record_device_set_shadow_version(t, &tenant, &device, version), expect);
    json_t *dev = NULL;
    if (!expect) {
        view_src src = {NULL, t};
        assert_int_equal(record_device_load(src, &tenant, &device, &dev), 0);
    }
    view_txn_free(t);
    return dev;
}

static void test_top_level_only(void **state)
{
    const char *text =
        "{\"device_id\":\"d\",\"note\":\"\\\"shadow_version\\\":7\",\"version\":3,"
        "\"shadow_version\":12,\"metadata\":{\"shadow_version\":\"99\",\"x\":\"{[\"},"
        "\"certificates\":[{\"shadow_version\":5}]}";
    json_t *dev = stored_after(text, 1234567, 0);
    assert_int_equal(json_integer_value(json_object_get(dev, "shadow_version")), 1234567);
    assert_int_equal(json_integer_value(json_object_get(dev, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(dev, "note")), "\"shadow_version\":7");
    json_t *md = json_object_get(dev, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "shadow_version")), "99");
    assert_string_equal(json_string_value(json_object_get(md, "x")), "{[");
    json_t *c = json_array_get(json_object_get(dev, "certificates"), 0);
    assert_int_equal(json_integer_value(json_object_get(c, "shadow_version")), 5);
    json_decref(dev);

    /* Down to fewer digits, and the member last. */
    dev = stored_after("{\"a\":1,\"shadow_version\":100000}", 7, 0);
    assert_int_equal(json_integer_value(json_object_get(dev, "shadow_version")), 7);
    assert_int_equal(json_object_size(dev), 2);
    json_decref(dev);
}

static void test_long_way(void **state)
{
    /* Not stored in the compact form: no member, or spaces around the colon. */
    json_t *dev = stored_after("{\"device_id\":\"d\"}", 5, 0);
    assert_int_equal(json_integer_value(json_object_get(dev, "shadow_version")), 5);
    json_decref(dev);
    dev = stored_after("{\"shadow_version\" : 1, \"metadata\": {}}", 6, 0);
    assert_int_equal(json_integer_value(json_object_get(dev, "shadow_version")), 6);
    assert_true(json_is_object(json_object_get(dev, "metadata")));
    json_decref(dev);
    assert_null(stored_after("[1,2", 6, REG_EDECODE));
}

static void test_missing_device(void **state)
{
    assert_null(stored_after(NULL, 1, REG_ENOTFOUND));
}

static int setup(void **state)
{
    if (!mkdtemp(dir)) return -1;
    return view_open(dir, VIEW_PRIMARY, 8, &v);
}

static int teardown(void **state)
{
    view_close(v);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

static void test_status_from_text(void **state)
{
    (void)state;
    const char *decommissioned =
        "{\"note\":\"\\\"status\\\":\\\"active\\\"\",\"metadata\":{\"status\":\"active\"},"
        "\"status\":\"decommissioned\",\"version\":4}";
    assert_true(record_device_status_is(decommissioned, strlen(decommissioned), "decommissioned"));
    assert_false(record_device_status_is(decommissioned, strlen(decommissioned), "active"));
    const char *active = "{\"metadata\":{\"status\":\"decommissioned\"},\"status\":\"active\"}";
    assert_false(record_device_status_is(active, strlen(active), "decommissioned"));
    assert_true(record_device_status_is(active, strlen(active), "active"));
    const char *prefix = "{\"status\":\"decommissioned-soon\"}";
    assert_false(record_device_status_is(prefix, strlen(prefix), "decommissioned"));
    const char *none = "{\"statuses\":\"decommissioned\"}";
    assert_false(record_device_status_is(none, strlen(none), "decommissioned"));
    const char *cut = "{\"status\":\"decommiss";
    assert_false(record_device_status_is(cut, strlen(cut), "decommissioned"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_level_only),
        cmocka_unit_test(test_long_way),
        cmocka_unit_test(test_missing_device),
        cmocka_unit_test(test_status_from_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
