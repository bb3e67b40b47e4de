/*
 * test_records.c - unit tests of projector/records.c on a real view in a temporary directory:
 * moving a device record's shadow_version in its stored text. Only the top-level member moves,
 * whatever the metadata holds (a key of that name, the name inside a string, escaped quotes);
 * a record without the member gets it the long way; a missing device says so. A device's status
 * is read from its text the same way, and a metadata change is made in the text as the whole
 * decoded record would have it.
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

/* A metadata change made in the text (record_device_meta_read, a change of the decoded metadata,
 * record_device_meta_store) against the same change made to the whole decoded record and
 * rendered again: byte for byte the same text, for records whose strings hold escapes, quotes,
 * braces and non-ASCII, whose members come in any order, and whose nested values hold members
 * of the same names. */
static void test_metadata_change_in_text(void **state)
{
    (void)state;
    const char *records[] = {
        "{\"device_id\":\"d\",\"status\":\"active\",\"version\":3,\"shadow_version\":0,"
        "\"metadata\":{\"region\":\"eu-west\",\"floor\":\"3\"},\"certificates\":[]}",
        "{\"note\":\"\\\"version\\\":9,\\\"metadata\\\":{}\",\"metadata\":{\"q\":\"a\\\"b\\\\c\","
        "\"version\":\"x\",\"\\u00e9t\\u00e9\":\"{[\"},\"status\":\"suspended\",\"version\":12,"
        "\"certificates\":[{\"version\":1,\"metadata\":{\"a\":\"b\"}}]}",
        "{\"metadata\":{},\"version\":1}",
        "{\"version\":100000,\"metadata\":{\"k\":\"v\"},\"status\":\"decommissioned\"}",
        /* not compact, or a key written with an escape: rendered compact first */
        "{\"version\" : 2, \"metadata\" : {\"a\" : \"1\"}, \"status\" : \"active\"}",
        "{\"versio\\u006e\":4,\"metadata\":{\"a\":\"1\"}}",
    };
    const bool decommissioned[] = {false, false, false, true, false, false};
    const int64_t versions[] = {3, 12, 1, 100000, 2, 4};
    reg_key k;
    key_add(key_add(key_reset(&k), tenant.b, 16), device.b, 16);
    for (size_t r = 0; r < sizeof records / sizeof records[0]; r++) {
        view_txn *t = view_txn_begin(v, NULL);
        view_txn_put(t, VIEW_DEVICES, k.b, k.len, records[r], strlen(records[r]));
        record_device_meta m;
        assert_int_equal(record_device_meta_read(t, &tenant, &device, &m), 0);
        assert_int_equal(m.parts.version, versions[r]);
        assert_int_equal(m.parts.decommissioned, decommissioned[r]);
        /* Change one key, add one, delete one: as the whole record would be changed. */
        json_t *dev = json_loads(records[r], 0, NULL), *md = json_object_get(dev, "metadata");
        assert_non_null(md);
        assert_true(json_equal(md, m.metadata));
        json_t *changes =
            json_pack("{s:s, s:s, s:s}", "region", "\"north\"\\ ü", "new", "{}", "q", "");
        const char *key;
        json_t *val;
        json_object_foreach(changes, key, val)
        {
            json_object_set(m.metadata, key, val);
            json_object_set(md, key, val);
        }
        json_object_del(m.metadata, "floor");
        json_object_del(md, "floor");
        json_object_set_new(dev, "version", json_integer(versions[r] + 1));
        char *stored = NULL;
        size_t stored_len = 0;
        device_text parts;
        assert_int_equal(record_device_meta_store(t, &tenant, &device, &m, versions[r] + 1, &stored,
                                                  &stored_len, &parts),
                         0);
        record_device_meta_release(&m);
        /* and where its parts are */
        device_text found;
        assert_int_equal(device_text_parse(stored, stored_len, &found), 0);
        assert_int_equal(parts.metadata_at, found.metadata_at);
        assert_int_equal(parts.metadata_end, found.metadata_end);
        assert_int_equal(parts.version_at, found.version_at);
        assert_int_equal(parts.version_end, found.version_end);
        assert_true(parts.version == found.version);
        /* the text it hands back is the one stored */
        char *in_view = NULL;
        size_t in_view_len = 0;
        assert_int_equal(record_device_text(t, &tenant, &device, &in_view, &in_view_len), 0);
        assert_int_equal(stored_len, in_view_len);
        assert_memory_equal(stored, in_view, stored_len);
        free(stored);
        free(in_view);
        char *want = json_dumps(dev, JSON_COMPACT), *got = NULL;
        size_t len = 0;
        assert_int_equal(record_device_text(t, &tenant, &device, &got, &len), 0);
        assert_int_equal(len, strlen(got));
        assert_string_equal(got, want);
        free(want);
        free(got);
        json_decref(changes);
        json_decref(dev);
        view_txn_free(t);
    }
    /* No metadata object, or no device. */
    view_txn *t = view_txn_begin(v, NULL);
    const char *bad[] = {"{\"version\":1}", "{\"version\":1,\"metadata\":[]}", "{\"metadata\":{}}",
                         "[1]", "{\"version\":1,\"metadata\":{"};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        record_device_meta m;
        view_txn_put(t, VIEW_DEVICES, k.b, k.len, bad[b], strlen(bad[b]));
        assert_int_equal(record_device_meta_read(t, &tenant, &device, &m), REG_EDECODE);
    }
    view_txn_delete(t, VIEW_DEVICES, k.b, k.len);
    record_device_meta m;
    assert_int_equal(record_device_meta_read(t, &tenant, &device, &m), REG_ENOTFOUND);
    view_txn_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_level_only),          cmocka_unit_test(test_long_way),
        cmocka_unit_test(test_missing_device),          cmocka_unit_test(test_status_from_text),
        cmocka_unit_test(test_metadata_change_in_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
