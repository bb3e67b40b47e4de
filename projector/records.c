/* records.c - loading and rendering the view's entities (records.h). */
#include "projector/records.h"
#include "err.h"
#include "projector/keys.h"
#include "jsonfast.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int record_json(view_src src, view_cf cf, const reg_key *k, json_t **out)
{
    char *val = NULL;
    size_t len = 0;
    int err = view_src_get(src, cf, k->b, k->len, &val, &len);
    if (err) return err;
    json_t *j = jsonfast_load(val, len, JSONFAST_ALLOW_NUL);
    free(val);
    if (!json_is_object(j) && !json_is_array(j)) { /* what the view stores */
        json_decref(j);
        return REG_EDECODE;
    }
    *out = j;
    return 0;
}

/* The device codec of transactions: a record read or written several times in a batch (decided,
 * applied, rendered in the reply) is parsed once and rendered once, at the commit. */
static void *device_decode(const char *val, size_t len)
{
    json_t *j = jsonfast_load(val, len, JSONFAST_ALLOW_NUL);
    if (json_is_object(j)) return j;
    json_decref(j);
    return NULL;
}

char *record_codec_encode(const void *obj, size_t *len)
{
    return jsonfast_dump(obj, len);
}

void record_codec_release(void *obj)
{
    json_decref(obj);
}

void *record_codec_retain(void *obj)
{
    return json_incref(obj);
}

static const view_codec device_codec = {device_decode, record_codec_encode, record_codec_release,
                                        record_codec_retain};

static reg_key *device_key(reg_key *k, const reg_uuid *tenant, const reg_uuid *device)
{
    return key_add(key_add(key_reset(k), tenant->b, 16), device->b, 16);
}

int record_device_hold(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    reg_key k;
    device_key(&k, tenant, device);
    if (!src.t) return record_json(src, VIEW_DEVICES, &k, out);
    const void *obj = NULL;
    int err = view_txn_get_decoded(src.t, VIEW_DEVICES, k.b, k.len, &device_codec, &obj);
    if (!err) *out = json_incref((json_t *)obj);
    return err;
}

int record_device_load(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    json_t *held = NULL;
    int err = record_device_hold(src, tenant, device, &held);
    if (err || !src.t) {
        if (!err) *out = held;
        return err;
    }
    *out = jsonfast_copy(held);
    json_decref(held);
    return *out ? 0 : REG_ENOMEM;
}

/* Whether nothing refers to j but its `holders`, and to each container inside it but its parent,
 * so that changing it in place changes no one else's value (scalars are never changed in place:
 * a change replaces them). */
static bool unshared(json_t *j, size_t holders)
{
    if (j->refcount != holders) return false;
    const char *k;
    size_t i;
    json_t *v;
    if (json_is_object(j)) {
        json_object_foreach(j, k, v)
        {
            if ((json_is_object(v) || json_is_array(v)) && !unshared(v, 1)) return false;
        }
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v)
        {
            if ((json_is_object(v) || json_is_array(v)) && !unshared(v, 1)) return false;
        }
    }
    return true;
}

int record_device_take(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    json_t *held = NULL;
    view_src src = {NULL, t};
    int err = record_device_hold(src, tenant, device, &held);
    if (err) return err;
    /* Held by t's entry and by us alone: the caller's store replaces the entry's reference
     * with ours. Deep-copying every changed record was ~4% of the deciding thread; the batch
     * being committed, the record cache, or an event or reply that took a part of it (its
     * certificates, say) still get a copy. */
    if (unshared(held, 2)) {
        *out = held;
        return 0;
    }
    *out = jsonfast_copy(held);
    json_decref(held);
    return *out ? 0 : REG_ENOMEM;
}

void record_device_store(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, json_t *dev)
{
    reg_key k;
    device_key(&k, tenant, device);
    view_txn_put_decoded(t, VIEW_DEVICES, k.b, k.len, &device_codec, dev);
}

int record_device_text(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, char **val,
                       size_t *len)
{
    reg_key k;
    device_key(&k, tenant, device);
    return view_txn_get(t, VIEW_DEVICES, k.b, k.len, val, len);
}

void record_device_store_text(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                              const char *text, size_t len)
{
    reg_key k;
    device_key(&k, tenant, device);
    view_txn_put(t, VIEW_DEVICES, k.b, k.len, text, len);
}

int record_tenant_load(view_src src, const reg_uuid *tenant, json_t **out)
{
    reg_key k;
    key_add(key_reset(&k), tenant->b, 16);
    return record_json(src, VIEW_TENANTS, &k, out);
}

int record_metadata(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    json_t *dev = NULL;
    int err = record_device_load(src, tenant, device, &dev);
    if (err) return err;
    json_t *md = json_object_get(dev, "metadata");
    *out = json_is_object(md) ? json_incref(md) : json_object();
    json_decref(dev);
    return 0;
}

int record_cert_by_id(view_src src, const reg_uuid *tenant, const char *cert_id, json_t **out,
                      reg_key *fp_key)
{
    reg_uuid cid;
    reg_key k, fk;
    char *fp = NULL;
    size_t len = 0;
    if (reg_uuid_parse(cert_id, &cid)) return REG_ENOTFOUND;
    key_tagged(&k, 'c', tenant->b, cid.b);
    int err = view_src_get(src, VIEW_CERTS, k.b, k.len, &fp, &len);
    if (err) return err;
    if (len != 32) {
        free(fp);
        return REG_EDECODE;
    }
    key_hash(&fk, 'f', (uint8_t *)fp);
    free(fp);
    err = record_json(src, VIEW_CERTS, &fk, out);
    if (!err && fp_key) *fp_key = fk;
    return err;
}

/* The value of the top-level member `name` in the JSON object text, when it is a string (quotes
 * included) or a number: where it starts and ends. Strings are skipped whole (escapes included)
 * and depth is counted, so a nested member of that name, or the name inside a string, is never
 * taken. 0, or REG_ENOTFOUND. */
static int top_level_scalar(const char *json, size_t len, const char *name, size_t *start,
                            size_t *end)
{
    size_t nlen = strlen(name);
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = json[i];
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == '"') {
            size_t from = i + 1;
            for (i = from; i < len && json[i] != '"'; i++)
                if (json[i] == '\\') i++;
            if (i >= len) return REG_ENOTFOUND;
            if (depth != 1 || i - from != nlen || memcmp(json + from, name, nlen) || i + 1 >= len ||
                json[i + 1] != ':')
                continue;
            size_t d = i + 2, e = d;
            if (e < len && json[e] == '"') {
                for (e++; e < len && json[e] != '"'; e++)
                    if (json[e] == '\\') e++;
                if (e >= len) return REG_ENOTFOUND;
                e++;
            } else {
                if (e < len && json[e] == '-') e++;
                while (e < len && json[e] >= '0' && json[e] <= '9')
                    e++;
                if (e == d || (e < len && json[e] != ',' && json[e] != '}')) return REG_ENOTFOUND;
            }
            *start = d;
            *end = e;
            return 0;
        }
    }
    return REG_ENOTFOUND;
}

/* The end of the JSON value at json[at] (a string, an object or array, or a scalar up to the
 * next ',', '}' or ']'), or 0 when the text ends first. Strings are skipped whole. */
static size_t value_end(const char *json, size_t len, size_t at)
{
    int depth = 0;
    for (size_t i = at; i < len; i++) {
        char c = json[i];
        if (c == '"') {
            for (i++; i < len && json[i] != '"'; i++)
                if (json[i] == '\\') i++;
            if (i >= len) return 0;
            if (depth == 0) return i + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return i > at ? i : 0; /* a scalar's end */
            if (--depth == 0) return i + 1;
        } else if (c == ',' && depth == 0) {
            return i > at ? i : 0;
        }
    }
    return 0;
}

/* Finds in a compact JSON object text the values of its top-level members "status", "version"
 * and "metadata" (keys compared as they are written: the names have nothing to escape). */
static int meta_spans(record_device_meta *m)
{
    const char *j = m->text;
    size_t len = m->len, at = 1, status_at = 0, status_end = 0;
    bool has_version = false, has_metadata = false;
    if (len < 2 || j[0] != '{') return REG_EDECODE;
    while (at < len && j[at] == '"') {
        size_t key_end = value_end(j, len, at);
        if (!key_end || key_end >= len || j[key_end] != ':') return REG_EDECODE;
        size_t v = key_end + 1, e = value_end(j, len, v);
        if (!e) return REG_EDECODE;
        const char *key = j + at + 1;
        size_t klen = key_end - at - 2;
        if (klen == 7 && !memcmp(key, "version", 7)) {
            m->version_at = v, m->version_end = e, has_version = true;
        } else if (klen == 8 && !memcmp(key, "metadata", 8)) {
            m->metadata_at = v, m->metadata_end = e, has_metadata = true;
        } else if (klen == 6 && !memcmp(key, "status", 6)) {
            status_at = v, status_end = e;
        }
        if (e < len && j[e] == '}') break;
        if (e >= len || j[e] != ',') return REG_EDECODE;
        at = e + 1;
    }
    if (!has_version || !has_metadata) return REG_EDECODE;
    char digits[24];
    size_t n = m->version_end - m->version_at;
    if (n == 0 || n >= sizeof digits) return REG_EDECODE;
    memcpy(digits, j + m->version_at, n);
    digits[n] = 0;
    char *end = NULL;
    m->version = strtoll(digits, &end, 10);
    if (*end) return REG_EDECODE;
    m->decommissioned =
        status_end - status_at == 16 && !memcmp(j + status_at, "\"decommissioned\"", 16);
    json_decref(m->metadata);
    m->metadata =
        jsonfast_load(j + m->metadata_at, m->metadata_end - m->metadata_at, JSONFAST_ALLOW_NUL);
    return json_is_object(m->metadata) ? 0 : REG_EDECODE;
}

int record_device_meta_read(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                            record_device_meta *m)
{
    *m = (record_device_meta){0};
    int err = record_device_text(t, tenant, device, &m->text, &m->len);
    if (err) return err;
    if (meta_spans(m)) { /* not in the compact form this file stores: rendered in it once */
        json_t *dev = jsonfast_load(m->text, m->len, JSONFAST_ALLOW_NUL);
        free(m->text);
        m->text = json_is_object(dev) ? jsonfast_dump(dev, &m->len) : NULL;
        json_decref(dev);
        err = m->text ? meta_spans(m) : REG_EDECODE;
    }
    if (err) record_device_meta_release(m);
    return err;
}

int record_device_meta_store(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                             const record_device_meta *m, int64_t version)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)version);
    size_t md_len = 0;
    char *md = jsonfast_dump(m->metadata, &md_len);
    if (!md) return REG_ENOMEM;
    /* The two values replaced in the order they come. */
    size_t at[2] = {m->version_at, m->metadata_at}, end[2] = {m->version_end, m->metadata_end},
           with_len[2] = {(size_t)n, md_len};
    const char *with[2] = {digits, md};
    int first = m->metadata_at < m->version_at;
    size_t len = m->len - (end[0] - at[0]) - (end[1] - at[1]) + with_len[0] + with_len[1];
    char *text = malloc(len), *o = text;
    if (!text) {
        free(md);
        return REG_ENOMEM;
    }
    size_t from = 0;
    for (int k = 0; k < 2; k++) {
        int i = k ^ first;
        memcpy(o, m->text + from, at[i] - from);
        o += at[i] - from;
        memcpy(o, with[i], with_len[i]);
        o += with_len[i];
        from = end[i];
    }
    memcpy(o, m->text + from, m->len - from);
    free(md);
    record_device_store_text(t, tenant, device, text, len);
    free(text);
    return 0;
}

void record_device_meta_release(record_device_meta *m)
{
    free(m->text);
    json_decref(m->metadata);
    *m = (record_device_meta){0};
}

int record_device_status_is(const char *json, size_t len, const char *status)
{
    size_t start = 0, end = 0, n = strlen(status);
    return !top_level_scalar(json, len, "status", &start, &end) && end - start == n + 2 &&
           json[start] == '"' && !memcmp(json + start + 1, status, n);
}

int record_device_set_shadow_version(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                                     int64_t version)
{
    char *val = NULL;
    size_t len = 0, start = 0, end = 0;
    int err = record_device_text(t, tenant, device, &val, &len);
    if (err) return err;
    if (top_level_scalar(val, len, "shadow_version", &start, &end) || val[start] == '"') {
        /* Not in the compact form this file stores: take the long way. */
        json_t *dev = jsonfast_load(val, len, JSONFAST_ALLOW_NUL);
        free(val);
        if (!json_is_object(dev)) {
            json_decref(dev);
            return REG_EDECODE;
        }
        json_object_set_new(dev, "shadow_version", json_integer(version));
        record_device_store(t, tenant, device, dev);
        return 0;
    }
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)version);
    size_t out_len = len - (end - start) + (size_t)n;
    char *out = malloc(out_len);
    if (!out) {
        free(val);
        return REG_ENOMEM;
    }
    memcpy(out, val, start);
    memcpy(out + start, digits, (size_t)n);
    memcpy(out + start + (size_t)n, val + end, len - end);
    record_device_store_text(t, tenant, device, out, out_len);
    free(out);
    free(val);
    return 0;
}
