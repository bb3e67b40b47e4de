/*
 * test_projector.c - the projector's exactly-once effect over the embedded logs:
 *  - a command appended twice (a sender's retry) is decided once, its outcome re-published;
 *  - after a crash between the events append and the view commit (simulated by writing a
 *    command's events to the events log before the projector sees the command), the command is
 *    decided again and applied, but its events are not appended a second time;
 *  - the projector's view equals the view rebuilt from the events log alone;
 *  - what the view keeps of an outcome gives a duplicate the same answer, its body rendered from
 *    the record as it is by then.
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

static json_t *command_json(const char *id, const char *kind, json_t *body)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:{s:o}}", "command_id", id, "tenant_id", TENANT,
                     "time_ms", (json_int_t)1700000000000, "actor", "test", "body", kind, body);
}

/* CreateTenant with the admin token "secret". */
static json_t *create_tenant(const char *id, const char *token_id)
{
    char hash[65];
    reg_token_hash("secret", hash);
    return command_json(id, "CreateTenant",
                        json_pack("{s:s, s:i, s:i, s:i, s:s, s:s, s:s}", "name", "t",
                                  "cert_validity_days", 365, "rotate_before_days", 30,
                                  "overlap_days", 7, "token_id", token_id, "token_hash", hash,
                                  "issuing_ca_pem", ""));
}

static json_t *register_device(const char *id, const char *device, const char *serial)
{
    return command_json(id, "RegisterDevice",
                        json_pack("{s:s, s:s, s:s, s:n, s:s, s:{s:s}}", "device_id", device,
                                  "serial_number", serial, "device_type", "meter",
                                  "hardware_revision", "firmware_version", "1.0", "metadata",
                                  "site", "north"));
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
    elog_config cc = {.topic = "registry.t.commands", .dir = dir},
                ec = {.topic = "registry.t.events", .dir = dir};
    assert_int_equal(view_open(dir, VIEW_PRIMARY, 0, &v), 0);
    assert_int_equal(elog_open(&cc, &commands), 0);
    assert_int_equal(elog_open(&ec, &events), 0);
    assert_int_equal(bus_open(NULL, &b), 0);
    assert_int_equal(codec_registry_new(&codec), 0);

    json_t *create = create_tenant("aaaaaaaa-0000-4000-8000-000000000001",
                                   "bbbbbbbb-0000-4000-8000-000000000001");
    json_t *reg = register_device("aaaaaaaa-0000-4000-8000-000000000002", DEVICE, "SN1");
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
    json_t *patch =
        command_json("aaaaaaaa-0000-4000-8000-000000000003", "PatchMetadata",
                     json_pack("{s:s, s:{s:s, s:n}, s:b}", "device_id", DEVICE, "changes", "owner",
                               "ops", "site", "require_existing", 0));
    view_txn *t = view_txn_begin(v, NULL);
    decision d;
    decide_config dc = {.region = "t", .max_metadata_keys = 100};
    command patch_cmd;
    assert_int_equal(command_from_json(codec, patch, &patch_cmd), 0);
    assert_int_equal(decide_command(t, &patch_cmd, &dc, &d), 0);
    assert_int_equal(d.nevents, 1);
    /* The bytes the projector writes for it are the event the command describes. */
    codec_buf direct = {0};
    assert_int_equal(event_encode(codec, &d.events[0], &direct), 0);
    json_t *ev = NULL;
    assert_int_equal(codec_decode(codec, "registry.Event", direct.data, direct.len, &ev), 0);
    json_t *want =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:{s:{s:{s:s, s:n}}}}", "command_id",
                  "aaaaaaaa-0000-4000-8000-000000000003", "tenant_id", TENANT, "entity_id", DEVICE,
                  "region", "t", "time_ms", (json_int_t)1700000000000, "actor", "test", "version",
                  (json_int_t)2, "body", "MetadataChanged", "changes", "owner", "ops", "site");
    json_object_set(want, "event_id", json_object_get(ev, "event_id"));
    assert_true(json_equal(ev, want));
    json_decref(want);
    json_decref(ev);
    assert_int_equal(
        elog_append(events, TENANT, strlen(TENANT), direct.data, direct.len, 1, NULL, NULL), 0);
    assert_int_equal(elog_flush(events, 10000), 0);
    free(direct.data);
    decision_clear(&d);
    command_clear(&patch_cmd);
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
    assert_int_equal(rebuild_view(events, rebuilt, INT64_MAX, INT64_MAX, &applied), 0);
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

/* Decides and applies cmd in t as the projector does; its outcome text (the caller frees it)
 * and, in *kept, what the commands family keeps of it (NULL: the outcome whole). */
static char *decide_apply(codec_registry *codec, view_txn *t, json_t *json, int *status,
                          char **kept)
{
    decision d;
    decide_config dc = {.region = "t", .max_metadata_keys = 100};
    command c, *cmd = &c;
    assert_int_equal(command_from_json(codec, json, cmd), 0);
    assert_int_equal(decide_command(t, cmd, &dc, &d), 0);
    for (size_t i = 0; i < d.nevents; i++)
        assert_int_equal(apply_event(t, &d.events[i], &d.decided), 0);
    assert_int_equal(decide_reply(t, cmd, &d), 0);
    size_t len = 0, kept_len = 0;
    char *text = decision_outcome(t, cmd, &d, &len);
    assert_non_null(text);
    char kept_text[DECISION_KEPT_MAX];
    kept_len = decision_kept_outcome(&d, kept_text);
    *kept = kept_len ? strndup(kept_text, kept_len) : NULL;
    *status = d.status;
    decision_clear(&d);
    command_clear(cmd);
    return text;
}

/* The outcome a duplicate gets from what the view kept. */
static json_t *replayed(codec_registry *codec, view_txn *t, json_t *json, const char *kept)
{
    size_t len = 0;
    command cmd;
    assert_int_equal(command_from_json(codec, json, &cmd), 0);
    char *text = decision_replayed_outcome(t, &cmd, kept, strlen(kept), &len);
    command_clear(&cmd);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    free(text);
    return j;
}

/* What the commands family keeps: a device's or its metadata's outcome without the body, which a
 * duplicate gets rebuilt from the record (as it is then); any other outcome whole. */
static void test_duplicate_outcome(void **state)
{
    (void)state;
    char sub[256];
    snprintf(sub, sizeof sub, "%s/outcomes", dir);
    mkdir(sub, 0700);
    view *v = NULL;
    assert_int_equal(view_open(sub, VIEW_PRIMARY, 0, &v), 0);
    view_txn *t = view_txn_begin(v, NULL);
    codec_registry *codec = NULL;
    assert_int_equal(codec_registry_new(&codec), 0);
    char *kept = NULL;
    int status = 0;
    json_t *create = create_tenant("aaaaaaaa-0000-4000-8000-000000000011",
                                   "bbbbbbbb-0000-4000-8000-000000000011");
    char *text = decide_apply(codec, t, create, &status, &kept);
    assert_int_equal(status, 201);
    assert_null(kept); /* kept whole */
    json_t *again = replayed(codec, t, create, text), *first = json_loads(text, 0, NULL);
    assert_true(json_equal(again, first));
    json_decref(again);
    json_decref(first);
    free(text);

    json_t *reg = register_device("aaaaaaaa-0000-4000-8000-000000000012", DEVICE, "SN1");
    char *reg_text = decide_apply(codec, t, reg, &status, &kept);
    assert_int_equal(status, 201);
    assert_non_null(kept);
    json_t *k = json_loads(kept, 0, NULL);
    assert_null(json_object_get(k, "body"));
    assert_string_equal(json_string_value(json_object_get(k, "reply")), "device");
    json_decref(k);
    again = replayed(codec, t, reg, kept);
    first = json_loads(reg_text, 0, NULL);
    assert_true(json_equal(again, first)); /* the record has not changed since */
    json_decref(again);

    /* A NUL in a string that would go into a view key (only a record not written by the API can
     * hold one) is refused, in a registration and in a patch. */
    json_t *nul_reg = register_device("aaaaaaaa-0000-4000-8000-000000000016",
                                      "11111111-2222-4333-8444-555555555556", "SN-NUL");
    json_object_set_new(
        json_object_get(json_object_get(json_object_get(nul_reg, "body"), "RegisterDevice"),
                        "metadata"),
        "site", json_stringn("a\0b", 3));
    json_t *nul_patch =
        command_json("aaaaaaaa-0000-4000-8000-000000000017", "PatchMetadata",
                     json_pack("{s:s, s:{s:s#}, s:b}", "device_id", DEVICE, "changes", "owner",
                               "o\0ps", (int)4, "require_existing", 0));
    json_t *nuls[] = {nul_reg, nul_patch};
    for (size_t i = 0; i < 2; i++) {
        char *refused_kept = NULL,
             *refused = decide_apply(codec, t, nuls[i], &status, &refused_kept);
        assert_int_equal(status, 400);
        assert_non_null(strstr(refused, "NUL"));
        free(refused);
        free(refused_kept);
        json_decref(nuls[i]);
    }

    json_t *patch = command_json("aaaaaaaa-0000-4000-8000-000000000013", "PatchMetadata",
                                 json_pack("{s:s, s:{s:s}, s:b}", "device_id", DEVICE, "changes",
                                           "owner", "ops", "require_existing", 0));
    char *patch_kept = NULL;
    char *patch_text = decide_apply(codec, t, patch, &status, &patch_kept);
    assert_int_equal(status, 200);
    assert_non_null(patch_kept);
    json_t *p1 = json_loads(patch_text, 0, NULL), *p2 = replayed(codec, t, patch, patch_kept);
    assert_true(json_equal(p1, p2));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(p2, "body"), "metadata"), "owner")),
                        "ops");
    json_decref(p1);
    json_decref(p2);

    /* The registration's duplicate now shows the device as the patch left it. */
    again = replayed(codec, t, reg, kept);
    assert_true(
        json_equal(json_object_get(again, "command_id"), json_object_get(first, "command_id")));
    assert_int_equal(json_integer_value(json_object_get(again, "status")), 201);
    json_t *body = json_object_get(again, "body");
    assert_int_equal(json_integer_value(json_object_get(body, "version")), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(body, "metadata"), "owner")), "ops");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(first, "body"), "version")),
                     1);
    json_decref(again);
    json_decref(first);
    free(kept);
    free(reg_text);

    /* A rejection is kept whole: the same serial again is a 409. */
    json_t *dup_serial = register_device("aaaaaaaa-0000-4000-8000-000000000014",
                                         "11111111-2222-4333-8444-555555555556", "SN1");
    text = decide_apply(codec, t, dup_serial, &status, &kept);
    assert_int_equal(status, 409);
    assert_null(kept);
    again = replayed(codec, t, dup_serial, text);
    first = json_loads(text, 0, NULL);
    assert_true(json_equal(again, first));
    json_decref(again);
    json_decref(first);
    free(text);

    free(patch_text);
    free(patch_kept);
    json_decref(create);
    json_decref(reg);
    json_decref(patch);
    json_decref(dup_serial);
    view_txn_free(t);
    view_close(v);
    codec_registry_free(codec);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exactly_once),
                                       cmocka_unit_test(test_duplicate_outcome)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return rc;
}
