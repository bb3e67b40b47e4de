/*
 * test_projector.c - the projector's exactly-once effect over the embedded logs:
 *  - a command appended twice (a sender's retry) is decided once, its outcome re-published;
 *  - after a crash between the events append and the view commit (simulated by writing a
 *    command's events to the events log before the projector sees the command), the command is
 *    decided again and applied, but its events are not appended a second time;
 *  - the projector's view equals the view rebuilt from the events log alone.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus.h"
#include "err.h"
#include "eventlog.h"
#include "ids.h"
#include "projector/apply.h"
#include "projector/decide.h"
#include "projector/projector.h"
#include "projector/rebuild.h"
#include "projector/records.h"
#include "projector/view.h"
#include "schemas/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/test-projector-XXXXXX";
static const char *TENANT = "6f1c7a3e-2b4d-4e5f-8a9b-0c1d2e3f4a5b";
static const char *DEVICE = "11111111-2222-4333-8444-555555555555";

static json_t *command(const char *id, const char *kind, json_t *body)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:{s:o}}", "command_id", id, "tenant_id", TENANT,
                     "time_ms", (json_int_t)1700000000000, "actor", "test", "body", kind, body);
}

static void append_json(elog *log, codec_registry *codec, const char *schema, json_t *value)
{
    codec_buf buf = {0};
    assert_int_equal(codec_encode(codec, schema, value, &buf), 0);
    assert_int_equal(elog_append(log, TENANT, strlen(TENANT), buf.data, buf.len, 1, NULL, NULL), 0);
    assert_int_equal(elog_flush(log, 10000), 0);
    free(buf.data);
}

static void wait_for(projector *p, int64_t offset)
{
    projector_stats st;
    for (int i = 0; i < 1000; i++) {
        projector_get_stats(p, &st);
        if (st.next_offset >= offset) return;
        usleep(10000);
    }
    fail_msg("the projector did not reach offset %lld", (long long)offset);
}

static void test_exactly_once(void **state)
{
    view *v = NULL;
    elog *commands = NULL, *events = NULL;
    bus *b = NULL;
    codec_registry *codec = NULL;
    elog_config cc = {"registry.t.commands", dir, NULL, 0},
                ec = {"registry.t.events", dir, NULL, 0};
    assert_int_equal(view_open(dir, VIEW_PRIMARY, 0, &v), 0);
    assert_int_equal(elog_open(&cc, &commands), 0);
    assert_int_equal(elog_open(&ec, &events), 0);
    assert_int_equal(bus_open(NULL, &b), 0);
    assert_int_equal(codec_registry_new(&codec), 0);

    char hash[65];
    reg_token_hash("secret", hash);
    json_t *create =
        command("aaaaaaaa-0000-4000-8000-000000000001", "CreateTenant",
                json_pack("{s:s, s:i, s:i, s:i, s:s, s:s}", "name", "t", "cert_validity_days", 365,
                          "rotate_before_days", 30, "overlap_days", 7, "token_id",
                          "bbbbbbbb-0000-4000-8000-000000000001", "token_hash", hash));
    json_t *reg =
        command("aaaaaaaa-0000-4000-8000-000000000002", "RegisterDevice",
                json_pack("{s:s, s:s, s:s, s:n, s:s, s:{s:s}}", "device_id", DEVICE,
                          "serial_number", "SN1", "device_type", "meter", "hardware_revision",
                          "firmware_version", "1.0", "metadata", "site", "north"));
    append_json(commands, codec, "registry.Command", create);
    append_json(commands, codec, "registry.Command", reg);
    append_json(commands, codec, "registry.Command", reg); /* the retry */

    projector_config pc = {.decide = {.region = "t"}};
    projector *p = NULL;
    assert_int_equal(projector_start(v, commands, events, b, &pc, &p), 0);
    wait_for(p, 3);
    projector_stats st;
    projector_get_stats(p, &st);
    assert_int_equal(st.accepted, 2);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.events, 3); /* TenantCreated, TokenCreated, DeviceRegistered */
    assert_int_equal(elog_end_offset(events), 3);
    projector_stop(p);

    /* The crash: a metadata patch whose events reached the log, the view not updated. */
    json_t *patch = command("aaaaaaaa-0000-4000-8000-000000000003", "PatchMetadata",
                            json_pack("{s:s, s:{s:s, s:n}, s:b}", "device_id", DEVICE, "changes",
                                      "owner", "ops", "site", "require_existing", 0));
    view_txn *t = view_txn_begin(v, NULL);
    decision d;
    decide_config dc = {.region = "t", .max_metadata_keys = 100};
    assert_int_equal(decide_command(t, patch, &dc, &d), 0);
    assert_int_equal(json_array_size(d.events), 1);
    append_json(events, codec, "registry.Event", json_array_get(d.events, 0));
    decision_clear(&d);
    view_txn_free(t);
    assert_int_equal(elog_end_offset(events), 4);
    append_json(commands, codec, "registry.Command", patch);

    assert_int_equal(projector_start(v, commands, events, b, &pc, &p), 0);
    wait_for(p, 4);
    projector_get_stats(p, &st);
    assert_int_equal(st.accepted, 1);
    assert_int_equal(st.events, 0); /* recognised in the log: not appended again */
    projector_stop(p);
    assert_int_equal(elog_end_offset(events), 4);

    reg_uuid tid, did;
    reg_uuid_parse(TENANT, &tid);
    reg_uuid_parse(DEVICE, &did);
    json_t *rec = NULL;
    view_src src = {v, NULL};
    assert_int_equal(record_device_load(src, &tid, &did, &rec), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(rec, "metadata"), "owner")), "ops");
    assert_null(json_object_get(json_object_get(rec, "metadata"), "site"));
    assert_int_equal(json_integer_value(json_object_get(rec, "version")), 2);
    json_decref(rec);

    /* The view equals the one its events describe. */
    char into[256];
    snprintf(into, sizeof into, "%s/rebuilt", dir);
    mkdir(into, 0700);
    view *rebuilt = NULL;
    uint64_t applied = 0;
    assert_int_equal(view_open(into, VIEW_PRIMARY, 0, &rebuilt), 0);
    assert_int_equal(rebuild_view(events, rebuilt, INT64_MAX, &applied), 0);
    assert_int_equal(applied, 4);
    assert_int_equal(rebuild_compare(v, rebuilt), 0);
    view_close(rebuilt);

    json_decref(create);
    json_decref(reg);
    json_decref(patch);
    codec_registry_free(codec);
    bus_close(b);
    elog_close(events);
    elog_close(commands);
    view_close(v);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exactly_once)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return rc;
}
