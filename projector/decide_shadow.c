/*
 * decide_shadow.c - the rule for shadow updates (decide_util.h): optimistic concurrency and the
 * size limit after the merge.
 *
 * The sender checked each patch on its own (an object or null, depth, no null inside arrays,
 * client token length); what depends on the stored shadow is decided here, in the tenant's
 * order: a `version` that is not the current one rejects the update (409, nothing changes), so
 * of N writers that read the same version exactly one wins; the merged document must stay within
 * shadow_max_bytes (413, even when the patch itself is small). The answer is rendered here from
 * the merged document: {version, desired, delta}.
 */
#include "err.h"
#include "jsonfast.h"
#include "projector/decide_util.h"
#include "projector/records.h"
#include "projector/shadow_view.h"
#include "shadow.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether the device exists in the tenant (REG_ENOTFOUND otherwise) and is decommissioned, from
 * its stored text: the record is not decoded (updates are frequent), and applying the update
 * reads the same text again from the batch (record_device_set_shadow_version). */
static int device_state(view_txn *t, const reg_uuid *tid, const reg_uuid *did, bool *decommissioned)
{
    char *val = NULL;
    size_t len = 0;
    int err = record_device_text(t, tid, did, &val, &len);
    if (err) return err;
    *decommissioned = record_device_status_is(val, len, "decommissioned");
    free(val);
    return 0;
}

int decide_shadow_update(view_txn *t, const command *cmd, const json_t *b, const decide_config *cfg,
                         decision *d)
{
    json_t *rec = NULL, *desired = NULL, *reported = NULL;
    reg_uuid tid, did;
    bool decommissioned = false;
    int err = REG_ENOTFOUND;
    if (!command_tenant(cmd, &tid) && !reg_uuid_parse(decide_str(b, "device_id"), &did))
        err = device_state(t, &tid, &did, &decommissioned);
    if (err == REG_ENOTFOUND) {
        decide_reject(d, 404, "Not Found", "no such device");
        return 0;
    }
    if (err) return err;
    if (decommissioned) {
        decide_reject(d, 409, "Conflict", "the device is decommissioned; that is final");
        goto done;
    }
    if (shadow_view_patch(b, "desired", &desired) || shadow_view_patch(b, "reported", &reported)) {
        decide_reject(d, 400, "Bad Request", "a patch of the update is not a JSON object");
        goto done;
    }
    if (!desired && !reported) {
        decide_reject(d, 400, "Bad Request", "the update names neither desired nor reported");
        goto done;
    }
    view_src src = {NULL, t};
    if ((err = shadow_view_load(src, &tid, &did, &rec))) goto done;
    int64_t current = shadow_view_version(rec);
    json_t *expected = json_object_get(b, "version");
    if (json_is_integer(expected) && json_integer_value(expected) != current) {
        char msg[128];
        snprintf(msg, sizeof msg, "the shadow is at version %lld, not %lld", (long long)current,
                 (long long)json_integer_value(expected));
        decide_reject(d, 409, "Conflict", msg);
        json_object_set_new(d->reply, "current_version", json_integer(current));
        goto done;
    }
    int64_t time_ms = cmd->time_ms;
    if ((err = shadow_view_update(rec, desired, reported, time_ms, current + 1))) goto done;
    size_t size =
        shadow_state_size(json_object_get(rec, "desired"), json_object_get(rec, "reported"));
    if (size > cfg->shadow_max_bytes) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "the shadow would hold %zu bytes of state after this update; the limit is %zu",
                 size, cfg->shadow_max_bytes);
        decide_reject(d, 413, "Content Too Large", msg);
        goto done;
    }
    decide_emit(d, cmd, cfg, decide_str(b, "device_id"), current + 1, "ShadowUpdated",
                jsonfast_pack("{s:O?, s:O?, s:O?}", "desired", json_object_get(b, "desired"),
                              "reported", json_object_get(b, "reported"), "client_token",
                              json_object_get(b, "client_token")));
    d->status = 200;
    d->reply = jsonfast_pack(
        "{s:I, s:O, s:o}", "version", (json_int_t)(current + 1), "desired",
        json_object_get(rec, "desired"), "delta",
        shadow_delta(json_object_get(rec, "desired"), json_object_get(rec, "reported")));
    d->decided.shadow =
        json_incref(rec); /* the document applying the event gives: it is not merged twice */
done:
    json_decref(desired);
    json_decref(reported);
    json_decref(rec);
    return err;
}
