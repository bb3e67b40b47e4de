/* records.c - loading and rendering the view's entities (records.h). */
#include "projector/records.h"
#include "err.h"
#include "projector/device_text.h"
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

int record_device_parts(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, char **text,
                        size_t *len, device_text *parts)
{
    int err = record_device_text(t, tenant, device, text, len);
    if (err) return err;
    if (device_text_parse(*text, *len, parts)) { /* not in the compact form this file stores */
        json_t *dev = jsonfast_load(*text, *len, JSONFAST_ALLOW_NUL);
        free(*text);
        *text = json_is_object(dev) ? jsonfast_dump(dev, len) : NULL;
        json_decref(dev);
        err = *text ? device_text_parse(*text, *len, parts) : REG_EDECODE;
        if (err) {
            free(*text);
            *text = NULL;
        }
    }
    return err;
}

int record_device_meta_read(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                            record_device_meta *m)
{
    *m = (record_device_meta){0};
    int err = record_device_parts(t, tenant, device, &m->text, &m->len, &m->parts);
    if (err) return err;
    m->metadata = jsonfast_load(m->text + m->parts.metadata_at,
                                m->parts.metadata_end - m->parts.metadata_at, JSONFAST_ALLOW_NUL);
    if (!json_is_object(m->metadata)) {
        record_device_meta_release(m);
        return REG_EDECODE;
    }
    return 0;
}

int record_device_meta_store(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                             const record_device_meta *m, int64_t version, char **stored,
                             size_t *stored_len, device_text *stored_parts)
{
    size_t md_len = 0, len = 0;
    char *md = jsonfast_dump(m->metadata, &md_len);
    char *text = md ? device_text_splice(m->text, m->len, &m->parts, version, md, md_len, &len,
                                         stored ? stored_parts : NULL)
                    : NULL;
    free(md);
    if (!text) return REG_ENOMEM;
    record_device_store_text(t, tenant, device, text, len);
    if (stored) {
        *stored = text;
        *stored_len = len;
    } else {
        free(text);
    }
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
    return !device_text_member(json, len, "status", &start, &end) && end - start == n + 2 &&
           json[start] == '"' && !memcmp(json + start + 1, status, n);
}

int record_device_set_shadow_version(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                                     int64_t version)
{
    char *val = NULL;
    size_t len = 0, start = 0, end = 0;
    int err = record_device_text(t, tenant, device, &val, &len);
    if (err) return err;
    bool digits_only = !device_text_member(val, len, "shadow_version", &start, &end);
    for (size_t i = start + (start < end && val[start] == '-'); digits_only && i < end; i++)
        digits_only = val[i] >= '0' && val[i] <= '9';
    if (!digits_only || end == start + (val[start] == '-')) {
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
    char digits[JSONFAST_INT_MAX];
    size_t n = jsonfast_int(digits, version);
    size_t out_len = len - (end - start) + n;
    char *out = malloc(out_len);
    if (!out) {
        free(val);
        return REG_ENOMEM;
    }
    memcpy(out, val, start);
    memcpy(out + start, digits, n);
    memcpy(out + start + n, val + end, len - end);
    record_device_store_text(t, tenant, device, out, out_len);
    free(out);
    free(val);
    return 0;
}
