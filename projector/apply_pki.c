/*
 * apply_pki.c - how the credentials events change the view (apply_util.h): factory CAs,
 * manifests, claims, and certificates.
 *
 * A certificate is kept three ways: its status record by fingerprint (certs 'f'), which is all
 * that authenticating a device needs; its entry in the device record's "certificates" list,
 * which is what the API shows; and, while it is nobody's concern yet, an entry in cert_expiry,
 * which the rotation scheduler walks in expiry order. Revoked certificates also get a CRL entry.
 */
#include "clock.h"
#include "err.h"
#include "projector/apply_util.h"
#include "projector/records.h"

#include <stdlib.h>
#include <string.h>

static json_int_t int_of(const json_t *obj, const char *field)
{
    return json_integer_value(json_object_get(obj, field));
}

static const char *str_of(const json_t *obj, const char *field)
{
    const char *s = json_string_value(json_object_get(obj, field));
    return s ? s : "";
}

static json_t *rfc3339(json_int_t ms)
{
    char buf[32];
    clock_rfc3339(ms, buf);
    return json_string(buf);
}

static json_t *load_json(view_txn *t, view_cf cf, const reg_key *k)
{
    json_t *j = NULL;
    view_src src = {NULL, t};
    return record_json(src, cf, k, &j) ? NULL : j;
}

static void expiry_key(reg_key *k, json_int_t not_after_ms, const uint8_t tid[16],
                       const uint8_t cert_id[16])
{
    key_add(key_add(key_be64(key_reset(k), (uint64_t)not_after_ms), tid, 16), cert_id, 16);
}

/* A certificate's status record by its id; *fp_key gets its key. NULL when absent. */
static json_t *cert_by_id(view_txn *t, const reg_uuid *tid, const char *cert_id, reg_key *fp_key)
{
    json_t *rec = NULL;
    view_src src = {NULL, t};
    return record_cert_by_id(src, tid, cert_id, &rec, fp_key) ? NULL : rec;
}

/* Takes the certificate out of the rotation scheduler's walk. */
static void expiry_forget(view_txn *t, const reg_uuid *tid, const json_t *rec)
{
    reg_uuid cid;
    reg_key k;
    if (reg_uuid_parse(str_of(rec, "cert_id"), &cid)) return;
    expiry_key(&k, int_of(rec, "not_after_ms"), tid->b, cid.b);
    view_txn_delete(t, VIEW_CERT_EXPIRY, k.b, k.len);
}

/* The device record's entry for cert_id, or NULL. */
static json_t *device_cert(json_t *dev, const char *cert_id)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(dev, "certificates"), i,
                       c) if (!strcmp(str_of(c, "cert_id"), cert_id)) return c;
    return NULL;
}

static void change_cert_issued(json_t *dev, const event *ev, view_txn *t)
{
    const json_t *b = ev->body;
    json_t *list = json_object_get(dev, "certificates");
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(dev, "certificates", list);
    }
    json_t *prev = json_is_string(json_object_get(b, "supersedes"))
                       ? device_cert(dev, str_of(b, "supersedes"))
                       : NULL;
    if (prev) {
        json_object_set_new(prev, "is_primary", json_false());
        json_object_set_new(prev, "status", json_string("superseded"));
        json_object_set_new(prev, "valid_until", rfc3339(int_of(b, "overlap_until_ms")));
    }
    json_array_append_new(list, json_pack("{s:O, s:O, s:O, s:o, s:o, s:o, s:n, s:b, s:s, s:b}",
                                          "cert_id", json_object_get(b, "cert_id"), "fingerprint",
                                          json_object_get(b, "fingerprint"), "serial",
                                          json_object_get(b, "serial_hex"), "issued_at",
                                          rfc3339(int_of(b, "not_before_ms")), "expires_at",
                                          rfc3339(int_of(b, "not_after_ms")), "valid_until",
                                          rfc3339(int_of(b, "not_after_ms")), "revoked_at",
                                          "is_primary", 1, "status", "active", "rotation_due", 0));
}

static int apply_cert_issued(view_txn *t, const reg_uuid *tid, const reg_uuid *did, const event *ev,
                             const json_t *b)
{
    uint8_t fp[32];
    reg_uuid cid;
    if (reg_hex_decode(str_of(b, "fingerprint"), fp, 32) ||
        reg_uuid_parse(str_of(b, "cert_id"), &cid))
        return REG_EDECODE;
    int err = apply_update_device(t, ev, change_cert_issued);
    if (err) return err;

    char tid_s[37], did_s[37];
    reg_uuid_format(tid, tid_s);
    reg_uuid_format(did, did_s);
    json_t *rec = json_pack(
        "{s:O, s:s, s:s, s:O, s:O, s:O, s:O, s:O, s:i, s:i, s:b}", "cert_id",
        json_object_get(b, "cert_id"), "tenant_id", tid_s, "device_id", did_s, "fingerprint",
        json_object_get(b, "fingerprint"), "serial_hex", json_object_get(b, "serial_hex"),
        "not_before_ms", json_object_get(b, "not_before_ms"), "not_after_ms",
        json_object_get(b, "not_after_ms"), "valid_until_ms", json_object_get(b, "not_after_ms"),
        "revoked_ms", 0, "superseded_ms", 0, "rotation_due", 0);
    if (!rec) return REG_EDECODE;
    reg_key k;
    apply_put_json(t, VIEW_CERTS, key_hash(&k, 'f', fp), rec);
    json_decref(rec);
    key_tagged(&k, 'c', tid->b, cid.b);
    view_txn_put(t, VIEW_CERTS, k.b, k.len, fp, 32);
    const char *pem = str_of(b, "pem");
    key_tagged(&k, 'p', tid->b, cid.b);
    view_txn_put(t, VIEW_CERTS, k.b, k.len, pem, strlen(pem));
    expiry_key(&k, int_of(b, "not_after_ms"), tid->b, cid.b);
    view_txn_put(t, VIEW_CERT_EXPIRY, k.b, k.len, "", 0);

    if (json_is_string(json_object_get(b, "supersedes"))) {
        reg_key fk;
        json_t *old = cert_by_id(t, tid, str_of(b, "supersedes"), &fk);
        if (old) {
            json_object_set_new(old, "superseded_ms", json_integer(ev->time_ms));
            json_object_set(old, "valid_until_ms", json_object_get(b, "overlap_until_ms"));
            apply_put_json(t, VIEW_CERTS, &fk, old);
            expiry_forget(t, tid, old);
            json_decref(old);
        }
    }
    return 0;
}

static void change_cert_revoked(json_t *dev, const event *ev, view_txn *t)
{
    const json_t *b = ev->body;
    json_t *c = device_cert(dev, str_of(b, "cert_id"));
    if (!c) return;
    json_object_set_new(c, "status", json_string("revoked"));
    json_object_set_new(c, "is_primary", json_false());
    json_object_set_new(c, "revoked_at", rfc3339(ev->time_ms));
}

static int apply_cert_revoked(view_txn *t, const reg_uuid *tid, const reg_uuid *did,
                              const event *ev, const json_t *b)
{
    reg_key fk, k;
    reg_uuid cid;
    json_t *rec = cert_by_id(t, tid, str_of(b, "cert_id"), &fk);
    if (!rec || reg_uuid_parse(str_of(b, "cert_id"), &cid)) {
        json_decref(rec);
        return REG_EDECODE;
    }
    int err = apply_update_device(t, ev, change_cert_revoked);
    if (err) {
        json_decref(rec);
        return err;
    }
    json_object_set_new(rec, "revoked_ms", json_integer(ev->time_ms));
    apply_put_json(t, VIEW_CERTS, &fk, rec);
    expiry_forget(t, tid, rec);
    json_t *crl = json_pack("{s:O, s:I}", "serial_hex", json_object_get(b, "serial_hex"),
                            "revoked_ms", (json_int_t)ev->time_ms);
    apply_put_json(t, VIEW_CERTS, key_tagged(&k, 'r', tid->b, cid.b), crl);
    json_decref(crl);
    json_decref(rec);

    /* The CRL's number: one more per revocation in the tenant. */
    key_add(key_reset(&k), tid->b, 16);
    json_t *tenant = load_json(t, VIEW_TENANTS, &k);
    if (tenant) {
        json_object_set_new(tenant, "crl_number", json_integer(int_of(tenant, "crl_number") + 1));
        apply_put_json(t, VIEW_TENANTS, &k, tenant);
        json_decref(tenant);
    }
    return 0;
}

static void change_rotation_due(json_t *dev, const event *ev, view_txn *t)
{
    const json_t *b = ev->body;
    json_t *c = device_cert(dev, str_of(b, "cert_id"));
    if (c) json_object_set_new(c, "rotation_due", json_true());
}

static int apply_rotation_due(view_txn *t, const reg_uuid *tid, const reg_uuid *did,
                              const event *ev, const json_t *b)
{
    reg_key fk;
    json_t *rec = cert_by_id(t, tid, str_of(b, "cert_id"), &fk);
    if (!rec) return REG_EDECODE;
    int err = apply_update_device(t, ev, change_rotation_due);
    if (!err) {
        json_object_set_new(rec, "rotation_due", json_true());
        apply_put_json(t, VIEW_CERTS, &fk, rec);
        expiry_forget(t, tid, rec);
    }
    json_decref(rec);
    return err;
}

static int apply_factory_ca(view_txn *t, const reg_uuid *tid, const reg_uuid *ca, const event *ev,
                            const json_t *b, int added)
{
    reg_key k;
    key_tagged(&k, 'f', tid->b, ca->b);
    if (!added) {
        view_txn_delete(t, VIEW_CAS, k.b, k.len);
        return 0;
    }
    json_t *rec = json_pack("{s:O, s:O, s:O, s:o, s:O, s:O, s:o}", "ca_id",
                            json_object_get(b, "ca_id"), "subject", json_object_get(b, "subject"),
                            "fingerprint", json_object_get(b, "fingerprint"), "not_after",
                            rfc3339(int_of(b, "not_after_ms")), "not_after_ms",
                            json_object_get(b, "not_after_ms"), "pem", json_object_get(b, "pem"),
                            "created_at", rfc3339(ev->time_ms));
    if (!rec) return REG_EDECODE;
    apply_put_json(t, VIEW_CAS, &k, rec);
    json_decref(rec);
    return 0;
}

static int apply_manifest(view_txn *t, const reg_uuid *tid, const json_t *b)
{
    json_t *entry = json_pack("{s:O, s:O, s:O}", "manifest_id", json_object_get(b, "manifest_id"),
                              "device_type", json_object_get(b, "device_type"), "hardware_revision",
                              json_object_get(b, "hardware_revision"));
    if (!entry) return REG_EDECODE;
    char *text = json_dumps(entry, JSON_COMPACT);
    json_decref(entry);
    size_t tlen = strlen(text), i;
    json_t *sv;
    json_array_foreach(json_object_get(b, "serials"), i, sv)
    {
        reg_key k;
        key_str(key_add(key_reset(&k), tid->b, 16),
                json_string_value(sv) ? json_string_value(sv) : "");
        view_txn_put(t, VIEW_MANIFESTS, k.b, k.len, text, tlen);
    }
    free(text);
    return 0;
}

static int apply_claim_created(view_txn *t, const reg_uuid *tid, const reg_uuid *cid,
                               const event *ev, const json_t *b)
{
    uint8_t h[32];
    if (reg_hex_decode(str_of(b, "token_hash"), h, 32)) return REG_EDECODE;
    char tid_s[37];
    reg_uuid_format(tid, tid_s);
    reg_key k;
    json_t *ref =
        json_pack("{s:s, s:O}", "tenant_id", tid_s, "claim_id", json_object_get(b, "claim_id"));
    apply_put_json(t, VIEW_CLAIMS, key_hash(&k, 'h', h), ref);
    json_decref(ref);
    json_t *rec =
        json_pack("{s:O, s:O, s:O, s:i, s:O, s:o, s:o, s:I}", "claim_id",
                  json_object_get(b, "claim_id"), "device_type", json_object_get(b, "device_type"),
                  "max_uses", json_object_get(b, "max_uses"), "uses", 0, "expires_ms",
                  json_object_get(b, "expires_ms"), "expires_at", rfc3339(int_of(b, "expires_ms")),
                  "created_at", rfc3339(ev->time_ms), "version", (json_int_t)ev->version);
    if (!rec) return REG_EDECODE;
    apply_put_json(t, VIEW_CLAIMS, key_tagged(&k, 'c', tid->b, cid->b), rec);
    json_decref(rec);
    return 0;
}

static int apply_claim_redeemed(view_txn *t, const reg_uuid *tid, const reg_uuid *cid,
                                const event *ev, const json_t *b)
{
    reg_key k;
    key_tagged(&k, 'c', tid->b, cid->b);
    json_t *rec = load_json(t, VIEW_CLAIMS, &k);
    if (!rec) return REG_EDECODE;
    json_object_set(rec, "uses", json_object_get(b, "uses"));
    json_object_set_new(rec, "version", json_integer(ev->version));
    apply_put_json(t, VIEW_CLAIMS, &k, rec);
    json_decref(rec);
    return 0;
}

static void change_seen(json_t *dev, const event *ev, view_txn *t)
{
    const json_t *b = ev->body;
    json_object_set_new(dev, "last_seen_at", rfc3339(int_of(b, "seen_ms")));
}

int apply_pki(view_txn *t, const event *ev, int *err)
{
    const reg_uuid *tid = &ev->tenant, *entity = &ev->entity;
    const char *kind = ev->kind;
    const json_t *b = ev->body;
    if (!strcmp(kind, "CertificateIssued"))
        *err = apply_cert_issued(t, tid, entity, ev, b);
    else if (!strcmp(kind, "CertificateRevoked"))
        *err = apply_cert_revoked(t, tid, entity, ev, b);
    else if (!strcmp(kind, "CertificateRotationDue"))
        *err = apply_rotation_due(t, tid, entity, ev, b);
    else if (!strcmp(kind, "FactoryCaAdded"))
        *err = apply_factory_ca(t, tid, entity, ev, b, 1);
    else if (!strcmp(kind, "FactoryCaRemoved"))
        *err = apply_factory_ca(t, tid, entity, ev, b, 0);
    else if (!strcmp(kind, "ManifestAdded"))
        *err = apply_manifest(t, tid, b);
    else if (!strcmp(kind, "ClaimCreated"))
        *err = apply_claim_created(t, tid, entity, ev, b);
    else if (!strcmp(kind, "ClaimRedeemed"))
        *err = apply_claim_redeemed(t, tid, entity, ev, b);
    else if (!strcmp(kind, "DeviceSeen"))
        *err = apply_update_device(t, ev, change_seen);
    else
        return 0;
    return 1;
}
