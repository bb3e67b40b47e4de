/* records.c - loading and rendering the view's entities (records.h). */
#include "projector/records.h"
#include "err.h"
#include "projector/keys.h"

#include <stdlib.h>

int record_json(view_src src, view_cf cf, const reg_key *k, json_t **out)
{
    char *val = NULL;
    size_t len = 0;
    int err = view_src_get(src, cf, k->b, k->len, &val, &len);
    if (err) return err;
    json_t *j = json_loadb(val, len, 0, NULL);
    free(val);
    if (!j) return REG_EDECODE;
    *out = j;
    return 0;
}

int record_device_load(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    reg_key k;
    key_add(key_add(key_reset(&k), tenant->b, 16), device->b, 16);
    return record_json(src, VIEW_DEVICES, &k, out);
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
