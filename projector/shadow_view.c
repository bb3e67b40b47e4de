/* shadow_view.c - loading, storing and rendering device shadows (shadow_view.h). */
#include "projector/shadow_view.h"
#include "clock.h"
#include "err.h"
#include "projector/keys.h"
#include "projector/records.h"
#include "shadow.h"
#include "jsonfast.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void shadow_key(reg_key *k, const reg_uuid *tenant, const reg_uuid *device)
{
    key_add(key_add(key_reset(k), tenant->b, 16), device->b, 16);
}

/* An object member, or a new empty object put in its place when missing or not an object: a
 * stored shadow always has its four objects. */
static json_t *object_member(json_t *obj, const char *name)
{
    json_t *m = json_object_get(obj, name);
    if (json_is_object(m)) return m;
    m = json_object();
    json_object_set_new(obj, name, m);
    return m;
}

/* A stored shadow with its four objects (each put in place when missing), or NULL. */
static json_t *complete(json_t *rec)
{
    if (!json_is_object(rec)) {
        json_decref(rec);
        return NULL;
    }
    object_member(rec, "desired");
    object_member(rec, "reported");
    json_t *meta = object_member(rec, "metadata");
    object_member(meta, "desired");
    object_member(meta, "reported");
    return rec;
}

static void *shadow_decode(const char *val, size_t len)
{
    return complete(jsonfast_load(val, len, JSONFAST_ALLOW_NUL));
}

static const view_codec shadow_codec = {shadow_decode, record_codec_encode, record_codec_release,
                                        record_codec_retain};

/* The stored record: a new one (owned), or through a transaction its parsed one (borrowed);
 * the empty shadow (owned) when none is stored. *owned says which. */
static int lookup(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out,
                  bool *owned)
{
    reg_key k;
    shadow_key(&k, tenant, device);
    json_t *rec = NULL;
    int err;
    *owned = !src.t;
    if (src.t) {
        const void *obj = NULL;
        err = view_txn_get_decoded(src.t, VIEW_SHADOWS, k.b, k.len, &shadow_codec, &obj);
        rec = (json_t *)obj;
    } else {
        err = record_json(src, VIEW_SHADOWS, &k, &rec);
        if (!err && !(rec = complete(rec))) err = REG_EDECODE;
    }
    if (err == REG_ENOTFOUND) {
        *owned = true;
        rec = complete(jsonfast_pack("{s:i, s:i}", "version", 0, "last_updated_ms", 0));
        err = rec ? 0 : REG_ENOMEM;
    }
    if (!err) *out = rec;
    return err;
}

int shadow_view_load(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    bool owned = false;
    int err = lookup(src, tenant, device, out, &owned);
    if (!err && !owned && !(*out = jsonfast_copy(*out))) err = REG_ENOMEM;
    return err;
}

int shadow_view_hold(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    bool owned = false;
    int err = lookup(src, tenant, device, out, &owned);
    if (!err && !owned) json_incref(*out);
    return err;
}

void shadow_view_store(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, json_t *rec)
{
    reg_key k;
    shadow_key(&k, tenant, device);
    view_txn_put_decoded(t, VIEW_SHADOWS, k.b, k.len, &shadow_codec, json_incref(rec));
}

int shadow_view_patch(const json_t *body, const char *field, json_t **out)
{
    *out = NULL;
    const char *text = json_string_value(json_object_get(body, field));
    if (!text) return 0;
    *out = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (*out && (json_is_object(*out) || json_is_null(*out))) return 0;
    json_decref(*out);
    *out = NULL;
    return REG_EDECODE;
}

/* Merges one patch into the section `name` of rec and of its metadata. */
static int update_section(json_t *rec, const char *name, const json_t *patch, int64_t ts)
{
    json_t *meta = json_object_get(rec, "metadata");
    json_t *state = json_incref(json_object_get(rec, name));
    json_t *smeta = json_incref(json_object_get(meta, name));
    int err = shadow_merge(&state, &smeta, patch, ts);
    if (!err) {
        json_object_set(rec, name, state);
        json_object_set(meta, name, smeta);
    }
    json_decref(state);
    json_decref(smeta);
    return err;
}

int shadow_view_update(json_t *rec, const json_t *desired, const json_t *reported, int64_t time_ms,
                       int64_t version)
{
    int err = 0;
    if (desired) err = update_section(rec, "desired", desired, time_ms / 1000);
    if (!err && reported) err = update_section(rec, "reported", reported, time_ms / 1000);
    if (err) return err;
    json_object_set_new(rec, "version", json_integer(version));
    json_object_set_new(rec, "last_updated_ms", json_integer(time_ms));
    return 0;
}

int64_t shadow_view_version(const json_t *rec)
{
    return json_integer_value(json_object_get(rec, "version"));
}

static json_t *section(const json_t *rec, const char *name)
{
    return json_object_get(rec, name);
}

static json_t *meta_section(const json_t *rec, const char *name)
{
    return json_object_get(json_object_get(rec, "metadata"), name);
}

json_t *shadow_view_http(const json_t *rec)
{
    int64_t ms = json_integer_value(json_object_get(rec, "last_updated_ms"));
    char when[32];
    clock_rfc3339(ms, when);
    return jsonfast_pack("{s:O, s:O, s:o, s:I, s:O, s:s?}", "desired", section(rec, "desired"),
                         "reported", section(rec, "reported"), "delta",
                         shadow_delta(section(rec, "desired"), section(rec, "reported")), "version",
                         (json_int_t)shadow_view_version(rec), "metadata",
                         json_object_get(rec, "metadata"), "last_updated_at", ms ? when : NULL);
}

static void add_client_token(json_t *msg, const char *client_token)
{
    if (msg && client_token) json_object_set_new(msg, "clientToken", json_string(client_token));
}

json_t *shadow_view_get_accepted(const json_t *rec, const char *client_token, int64_t now_s)
{
    json_t *delta = shadow_delta(section(rec, "desired"), section(rec, "reported"));
    json_t *state = jsonfast_pack("{s:O, s:O}", "desired", section(rec, "desired"), "reported",
                                  section(rec, "reported"));
    if (json_object_size(delta)) json_object_set(state, "delta", delta);
    json_decref(delta);
    json_t *msg = jsonfast_pack(
        "{s:o, s:O, s:I, s:I}", "state", state, "metadata", json_object_get(rec, "metadata"),
        "version", (json_int_t)shadow_view_version(rec), "timestamp", (json_int_t)now_s);
    add_client_token(msg, client_token);
    return msg;
}

json_t *shadow_view_delta_message(const json_t *rec, const char *client_token, int64_t now_s)
{
    json_t *delta = shadow_delta(section(rec, "desired"), section(rec, "reported"));
    if (!json_object_size(delta)) {
        json_decref(delta);
        return NULL;
    }
    json_t *msg =
        jsonfast_pack("{s:o, s:o, s:I, s:I}", "state", delta, "metadata",
                      shadow_meta_of(meta_section(rec, "desired"), delta), "version",
                      (json_int_t)shadow_view_version(rec), "timestamp", (json_int_t)now_s);
    add_client_token(msg, client_token);
    return msg;
}

json_t *shadow_view_accepted(const json_t *rec, const json_t *desired_patch,
                             const json_t *reported_patch, const char *client_token, int64_t now_s)
{
    json_t *state = json_object(), *meta = json_object();
    static const char *const names[] = {"desired", "reported"};
    const json_t *patches[] = {desired_patch, reported_patch};
    for (int i = 0; i < 2; i++) {
        if (!patches[i]) continue;
        json_object_set(state, names[i], (json_t *)patches[i]);
        if (json_is_object(patches[i]))
            json_object_set_new(meta, names[i],
                                shadow_meta_of(meta_section(rec, names[i]), patches[i]));
    }
    json_t *msg =
        jsonfast_pack("{s:o, s:o, s:I, s:I}", "state", state, "metadata", meta, "version",
                      (json_int_t)shadow_view_version(rec), "timestamp", (json_int_t)now_s);
    add_client_token(msg, client_token);
    return msg;
}

static json_t *document(const json_t *rec)
{
    return jsonfast_pack("{s:{s:O, s:O}, s:O, s:I}", "state", "desired", section(rec, "desired"),
                         "reported", section(rec, "reported"), "metadata",
                         json_object_get(rec, "metadata"), "version",
                         (json_int_t)shadow_view_version(rec));
}

json_t *shadow_view_documents(const json_t *before, const json_t *after, const char *client_token,
                              int64_t now_s)
{
    json_t *msg = jsonfast_pack("{s:o, s:o, s:I}", "previous", document(before), "current",
                                document(after), "timestamp", (json_int_t)now_s);
    add_client_token(msg, client_token);
    return msg;
}

void shadow_view_topic(const char *device_s, const char *suffix, char *out, size_t cap)
{
    snprintf(out, cap, "$registry/devices/%s/shadow/%s", device_s, suffix);
}
