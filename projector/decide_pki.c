/*
 * decide_pki.c - the rules for credentials (decide_util.h): factory CAs, manifests, claims,
 * provisioning, certificate issuance, renewal, rotation, revocation and activation.
 *
 * Everything random or secret happened before the command was sent: certificates arrive signed
 * (the sender checked the CSR and the factory chain), tokens arrive hashed. What is decided here
 * is what depends on the tenant's state, in order: whether the factory CA is still registered,
 * whether the serial is in a manifest, how many times a claim was used, whether the device may
 * still get certificates. Because one tenant's commands are decided one at a time, a claim with
 * max_uses = 10 is redeemed exactly 10 times however many devices race for it.
 */
#include "clock.h"
#include "err.h"
#include "ids.h"
#include "projector/decide_util.h"
#include "projector/keys.h"
#include "projector/records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    REPLY_FACTORY_CA = DECIDE_REPLY_PKI,
    REPLY_FACTORY_CA_REMOVED,
    REPLY_MANIFEST,
    REPLY_CLAIM,
    REPLY_PROVISIONED,
    REPLY_RENEWED,
    REPLY_REVOKED,
    REPLY_ROTATION,
    REPLY_ACTIVATED,
};

#define DAY_MS 86400000LL

static json_t *load_json(view_txn *t, view_cf cf, const reg_key *k, int *err)
{
    json_t *j = NULL;
    view_src src = {NULL, t};
    *err = record_json(src, cf, k, &j);
    return j;
}

static json_int_t int_of(const json_t *obj, const char *field)
{
    return json_integer_value(json_object_get(obj, field));
}

/* The certificate status record (certs 'f' fingerprint) of a hex fingerprint, or NULL. */
static json_t *load_cert_by_fp(view_txn *t, const char *fp_hex, int *err)
{
    uint8_t fp[32];
    if (reg_hex_decode(fp_hex, fp, 32)) {
        *err = REG_ENOTFOUND;
        return NULL;
    }
    reg_key k;
    return load_json(t, VIEW_CERTS, key_hash(&k, 'f', fp), err);
}

static int decide_add_factory_ca(view_txn *t, const command *cmd, const json_t *b,
                                 const decide_config *cfg, decision *d)
{
    reg_uuid tid, ca;
    if (command_tenant(cmd, &tid) || reg_uuid_parse(decide_str(b, "ca_id"), &ca)) {
        decide_reject(d, 400, "Bad Request", "invalid ids");
        return 0;
    }
    reg_key k;
    int err;
    json_t *existing = load_json(t, VIEW_CAS, key_tagged(&k, 'f', tid.b, ca.b), &err);
    if (existing) {
        json_decref(existing);
        decide_reject(d, 409, "Conflict", "this CA certificate is already registered");
        json_object_set_new(d->reply, "ca_id", json_string(decide_str(b, "ca_id")));
        return 0;
    }
    if (err != REG_ENOTFOUND) return err;
    decide_emit(d, cmd, cfg, decide_str(b, "ca_id"), 1, "FactoryCaAdded", json_deep_copy(b));
    d->status = 201;
    d->reply_kind = REPLY_FACTORY_CA;
    return 0;
}

static int decide_remove_factory_ca(view_txn *t, const command *cmd, const json_t *b,
                                    const decide_config *cfg, decision *d)
{
    reg_uuid tid, ca;
    if (command_tenant(cmd, &tid) || reg_uuid_parse(decide_str(b, "ca_id"), &ca)) {
        decide_reject(d, 404, "Not Found", "no such factory CA");
        return 0;
    }
    reg_key k;
    int err;
    json_t *existing = load_json(t, VIEW_CAS, key_tagged(&k, 'f', tid.b, ca.b), &err);
    if (!existing) {
        if (err != REG_ENOTFOUND) return err;
        decide_reject(d, 404, "Not Found", "no such factory CA");
        return 0;
    }
    decide_emit(d, cmd, cfg, decide_str(b, "ca_id"), 2, "FactoryCaRemoved",
                json_pack("{s:O, s:O}", "ca_id", json_object_get(b, "ca_id"), "fingerprint",
                          json_object_get(existing, "fingerprint")));
    json_decref(existing);
    d->status = 200;
    d->reply_kind = REPLY_FACTORY_CA_REMOVED;
    return 0;
}

/* One part of a manifest: the serials new to the tenant become the event; the others (already
 * in a manifest, or repeated within this part) are counted as duplicates. */
static int decide_add_manifest(view_txn *t, const command *cmd, const json_t *b,
                               const decide_config *cfg, decision *d)
{
    reg_uuid tid;
    if (command_tenant(cmd, &tid)) {
        decide_reject(d, 404, "Not Found", "no such tenant");
        return 0;
    }
    json_t *fresh = json_array(), *seen = json_object();
    int duplicates = 0;
    size_t i;
    json_t *sv;
    json_array_foreach(json_object_get(b, "serials"), i, sv)
    {
        const char *serial = json_string_value(sv);
        if (!serial) continue;
        reg_key k;
        key_str(key_add(key_reset(&k), tid.b, 16), serial);
        char *val = NULL;
        int err = view_txn_get(t, VIEW_MANIFESTS, k.b, k.len, &val, NULL);
        free(val);
        if (err && err != REG_ENOTFOUND) {
            json_decref(fresh);
            json_decref(seen);
            return err;
        }
        if (!err || json_object_get(seen, serial)) {
            duplicates++;
            continue;
        }
        json_object_set_new(seen, serial, json_true());
        json_array_append(fresh, sv);
    }
    json_decref(seen);
    d->status = 201;
    d->reply_kind = REPLY_MANIFEST;
    json_int_t count = (json_int_t)json_array_size(fresh);
    decide_emit(d, cmd, cfg, decide_str(b, "manifest_id"), int_of(b, "part") + 1, "ManifestAdded",
                json_pack("{s:O, s:O, s:O, s:o, s:i}", "manifest_id",
                          json_object_get(b, "manifest_id"), "device_type",
                          json_object_get(b, "device_type"), "hardware_revision",
                          json_object_get(b, "hardware_revision"), "serials", fresh, "duplicates",
                          duplicates));
    /* The reply is known now; decide_pki_reply keeps it. */
    d->reply =
        json_pack("{s:O, s:I, s:i, s:O, s:O}", "manifest_id", json_object_get(b, "manifest_id"),
                  "count", count, "duplicates", duplicates, "part", json_object_get(b, "part"),
                  "parts", json_object_get(b, "parts"));
    return 0;
}

static int decide_create_claim(view_txn *t, const command *cmd, const json_t *b,
                               const decide_config *cfg, decision *d)
{
    if (int_of(b, "expires_ms") <= cmd->time_ms) {
        decide_reject(d, 400, "Bad Request", "the claim would expire before it is created");
        return 0;
    }
    decide_emit(d, cmd, cfg, decide_str(b, "claim_id"), 1, "ClaimCreated", json_deep_copy(b));
    d->status = 201;
    d->reply_kind = REPLY_CLAIM;
    return 0;
}

/* The device's primary certificate entry in its record, or NULL. */
static json_t *primary_cert(const json_t *dev)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(dev, "certificates"), i,
                       c) if (json_is_true(json_object_get(c, "is_primary"))) return c;
    return NULL;
}

/* The CertificateIssued event of a command carrying `certificate`: it becomes the device's
 * primary, and the previous primary (if any) stays valid for the tenant's overlap window. */
static void emit_certificate(decision *d, const command *cmd, const json_t *b,
                             const decide_config *cfg, const char *device_id, json_int_t version,
                             const json_t *dev, const json_t *tenant)
{
    const json_t *c = json_object_get(b, "certificate");
    json_t *prev = dev ? primary_cert(dev) : NULL;
    json_int_t overlap_until = 0;
    if (prev) {
        overlap_until = cmd->time_ms + int_of(tenant, "overlap_days") * DAY_MS;
        int64_t prev_end = 0;
        if (!clock_parse_rfc3339(decide_str(prev, "expires_at"), &prev_end) &&
            overlap_until > prev_end)
            overlap_until = prev_end;
    }
    decide_emit(d, cmd, cfg, device_id, version, "CertificateIssued",
                json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:I, s:O}", "cert_id",
                          json_object_get(c, "cert_id"), "fingerprint",
                          json_object_get(c, "fingerprint"), "serial_hex",
                          json_object_get(c, "serial_hex"), "pem", json_object_get(c, "pem"),
                          "not_before_ms", json_object_get(c, "not_before_ms"), "not_after_ms",
                          json_object_get(c, "not_after_ms"), "supersedes",
                          prev ? json_object_get(prev, "cert_id") : json_null(), "overlap_until_ms",
                          overlap_until, "supersedes_fingerprint",
                          prev ? json_object_get(prev, "fingerprint") : json_null()));
}

/* Checks a claim for one more redemption: *claim gets the stored claim (owned), or stays NULL
 * after rejecting. Returns 0 or a storage failure. */
static int check_claim(view_txn *t, const command *cmd, const json_t *b, const reg_uuid *tid,
                       decision *d, json_t **claim)
{
    uint8_t h[32];
    reg_key k;
    int err = 0;
    *claim = NULL;
    if (reg_hex_decode(decide_str(b, "claim_token_hash"), h, 32)) goto unknown;
    json_t *ref = load_json(t, VIEW_CLAIMS, key_hash(&k, 'h', h), &err);
    if (!ref) goto unknown_or_err;
    reg_uuid cid, ctid;
    int ok = !reg_uuid_parse(decide_str(ref, "claim_id"), &cid) &&
             !reg_uuid_parse(decide_str(ref, "tenant_id"), &ctid) && !memcmp(ctid.b, tid->b, 16);
    json_decref(ref);
    if (!ok) goto unknown;
    json_t *c = load_json(t, VIEW_CLAIMS, key_tagged(&k, 'c', tid->b, cid.b), &err);
    if (!c) goto unknown_or_err;
    if (int_of(c, "expires_ms") <= cmd->time_ms) {
        json_decref(c);
        decide_reject(d, 403, "Forbidden", "the claim token has expired");
        return 0;
    }
    if (int_of(c, "uses") >= int_of(c, "max_uses")) {
        json_decref(c);
        decide_reject(d, 403, "Forbidden", "the claim token has been used up");
        return 0;
    }
    *claim = c;
    return 0;
unknown_or_err:
    if (err != REG_ENOTFOUND) return err;
unknown:
    decide_reject(d, 403, "Forbidden", "unknown claim token");
    return 0;
}

static int decide_provision(view_txn *t, const command *cmd, const json_t *b,
                            const decide_config *cfg, decision *d)
{
    reg_uuid tid, did;
    int err = 0;
    json_t *tenant = NULL, *entry = NULL, *claim = NULL, *dev = NULL;
    view_src src = {NULL, t};
    if (command_tenant(cmd, &tid) || reg_uuid_parse(decide_str(b, "device_id"), &did) ||
        record_tenant_load(src, &tid, &tenant)) {
        decide_reject(d, 403, "Forbidden", "unknown tenant");
        return 0;
    }
    const char *serial = decide_str(b, "serial_number");
    reg_key k;
    const char *device_type = NULL;
    json_t *hardware_revision = json_null();
    if (json_is_string(json_object_get(b, "factory_ca_fingerprint"))) {
        /* The CA that vouched for the device must still be registered. */
        uint8_t fp[32];
        reg_uuid ca;
        if (reg_hex_decode(decide_str(b, "factory_ca_fingerprint"), fp, 32)) goto forbidden_ca;
        reg_uuid_derive(&tid, fp, 32, &ca);
        json_t *caj = load_json(t, VIEW_CAS, key_tagged(&k, 'f', tid.b, ca.b), &err);
        if (!caj) {
            if (err != REG_ENOTFOUND) goto out;
            err = 0;
            goto forbidden_ca;
        }
        json_decref(caj);
        key_str(key_add(key_reset(&k), tid.b, 16), serial);
        entry = load_json(t, VIEW_MANIFESTS, &k, &err);
        if (!entry) {
            if (err != REG_ENOTFOUND) goto out;
            err = 0;
            decide_reject(d, 403, "Forbidden",
                          "the serial number is not in the tenant's manifests");
            goto out;
        }
        device_type = decide_str(entry, "device_type");
        hardware_revision = json_object_get(entry, "hardware_revision");
    } else {
        if ((err = check_claim(t, cmd, b, &tid, d, &claim)) || !claim) goto out;
        device_type = decide_str(claim, "device_type");
    }

    /* The device: the serial's existing device, or a new one with the command's id. */
    key_str(key_add(key_reset(&k), tid.b, 16), serial);
    char *existing = NULL;
    size_t elen = 0;
    err = view_txn_get(t, VIEW_SERIALS, k.b, k.len, &existing, &elen);
    if (err && err != REG_ENOTFOUND) goto out;
    json_int_t version = 1;
    if (!err) {
        int same = elen == 16 && !memcmp(existing, did.b, 16);
        free(existing);
        if (!same) {
            decide_reject(d, 409, "Conflict",
                          "the serial number was registered meanwhile under another id; retry");
            goto out;
        }
        dev = decide_load_device(t, cmd, d, &err);
        if (!dev) goto out;
        if (!strcmp(decide_str(dev, "status"), "decommissioned")) {
            decide_reject(d, 403, "Forbidden", "the device is decommissioned");
            goto out;
        }
        version = int_of(dev, "version") + 1;
    } else {
        err = 0;
        /* its strings copied: the manifest entry or claim they come from is released below */
        json_t *held = json_pack("{s:s, s:O}", "device_type", device_type, "hardware_revision",
                                 hardware_revision);
        const char *device_id = decide_str(b, "device_id");
        codec_field body[DEVICE_REGISTERED_FIELDS] = {
            [REGISTERED_SERIAL] = {.kind = CODEC_FIELD_STRING,
                                   .str = serial,
                                   .len = strlen(serial)},
            [REGISTERED_TYPE] = decide_string_field(json_object_get(held, "device_type")),
            [REGISTERED_HARDWARE] = decide_string_field(json_object_get(held, "hardware_revision")),
            [REGISTERED_FIRMWARE] = {.kind = CODEC_FIELD_STRING}, /* null */
            [REGISTERED_STATUS] = {.kind = CODEC_FIELD_STRING, .str = "provisioning", .len = 12},
            [REGISTERED_METADATA] = {.kind = CODEC_FIELD_MAP},
        };
        decide_emit_fields(d, cmd, cfg, device_id, strlen(device_id), version++, "DeviceRegistered",
                           body, DEVICE_REGISTERED_FIELDS, held);
    }
    if (claim) {
        char claim_id[37];
        snprintf(claim_id, sizeof claim_id, "%s", decide_str(claim, "claim_id"));
        json_int_t uses = int_of(claim, "uses") + 1;
        decide_emit(d, cmd, cfg, claim_id, uses + 1, "ClaimRedeemed",
                    json_pack("{s:s, s:O, s:I}", "claim_id", claim_id, "device_id",
                              json_object_get(b, "device_id"), "uses", uses));
    }
    emit_certificate(d, cmd, b, cfg, decide_str(b, "device_id"), version, dev, tenant);
    d->status = 201;
    d->reply_kind = REPLY_PROVISIONED;
    goto out;
forbidden_ca:
    decide_reject(d, 403, "Forbidden", "the factory CA is not registered with this tenant");
out:
    json_decref(tenant);
    json_decref(entry);
    json_decref(claim);
    json_decref(dev);
    return err;
}

/* A device may get new certificates unless it is suspended or decommissioned. */
static int device_may_renew(const json_t *dev, decision *d)
{
    const char *status = decide_str(dev, "status");
    if (!strcmp(status, "suspended") || !strcmp(status, "decommissioned")) {
        char msg[96];
        snprintf(msg, sizeof msg, "the device is %s", status);
        decide_reject(d, 403, "Forbidden", msg);
        return 0;
    }
    return 1;
}

static int decide_renew(view_txn *t, const command *cmd, const json_t *b, const decide_config *cfg,
                        decision *d)
{
    reg_uuid tid;
    int err = 0;
    json_t *tenant = NULL, *dev = NULL, *presented = NULL;
    view_src src = {NULL, t};
    if (command_tenant(cmd, &tid) || record_tenant_load(src, &tid, &tenant)) {
        decide_reject(d, 403, "Forbidden", "unknown tenant");
        return 0;
    }
    dev = decide_load_device(t, cmd, d, &err);
    if (!dev || !device_may_renew(dev, d)) goto out;
    /* The certificate the device authenticated with must still be one of its valid ones. */
    presented = load_cert_by_fp(t, decide_str(b, "presented_fingerprint"), &err);
    if (!presented) {
        if (err != REG_ENOTFOUND) goto out;
        err = 0;
    }
    if (!presented || strcmp(decide_str(presented, "device_id"), decide_str(b, "device_id")) ||
        int_of(presented, "revoked_ms") || int_of(presented, "valid_until_ms") <= cmd->time_ms) {
        decide_reject(d, 401, "Unauthorized", "the presented certificate is no longer valid");
        goto out;
    }
    emit_certificate(d, cmd, b, cfg, decide_str(b, "device_id"), int_of(dev, "version") + 1, dev,
                     tenant);
    d->status = 201;
    d->reply_kind = REPLY_RENEWED;
out:
    json_decref(tenant);
    json_decref(dev);
    json_decref(presented);
    return err;
}

/* Loads the certificate status record of the tenant's cert_id, or rejects with 404. */
static json_t *load_cert_by_id(view_txn *t, const reg_uuid *tid, const char *cert_id, decision *d,
                               int *err)
{
    json_t *rec = NULL;
    view_src src = {NULL, t};
    *err = record_cert_by_id(src, tid, cert_id, &rec, NULL);
    if (*err != REG_ENOTFOUND) return rec;
    *err = 0;
    decide_reject(d, 404, "Not Found", "no such certificate");
    return NULL;
}

static int decide_revoke(view_txn *t, const command *cmd, const json_t *b, const decide_config *cfg,
                         decision *d)
{
    reg_uuid tid, did;
    int err = 0;
    if (command_tenant(cmd, &tid)) {
        decide_reject(d, 404, "Not Found", "no such certificate");
        return 0;
    }
    json_t *rec = load_cert_by_id(t, &tid, decide_str(b, "cert_id"), d, &err);
    if (!rec) return err;
    d->status = 200;
    d->reply_kind = REPLY_REVOKED;
    if (!int_of(rec, "revoked_ms")) {
        /* The certificate's events belong to its device (its record lists the certificates). */
        json_t *dev = NULL;
        view_src src = {NULL, t};
        if (!reg_uuid_parse(decide_str(rec, "device_id"), &did) &&
            !(err = record_device_load(src, &tid, &did, &dev))) {
            decide_emit(d, cmd, cfg, decide_str(rec, "device_id"), int_of(dev, "version") + 1,
                        "CertificateRevoked",
                        json_pack("{s:O, s:O, s:O, s:O}", "cert_id", json_object_get(b, "cert_id"),
                                  "fingerprint", json_object_get(rec, "fingerprint"), "serial_hex",
                                  json_object_get(rec, "serial_hex"), "reason",
                                  json_object_get(b, "reason")));
        }
        json_decref(dev);
    }
    json_decref(rec);
    return err == REG_ENOTFOUND ? REG_EDECODE : err;
}

static int decide_rotate(view_txn *t, const command *cmd, const json_t *b, const decide_config *cfg,
                         decision *d)
{
    int err = 0;
    json_t *dev = decide_load_device(t, cmd, d, &err);
    if (!dev) return err;
    if (!device_may_renew(dev, d)) goto out;
    json_t *c = primary_cert(dev);
    const char *wanted = json_string_value(json_object_get(b, "cert_id"));
    if (!c || (wanted && strcmp(wanted, decide_str(c, "cert_id")))) {
        decide_reject(d, 409, "Conflict", "the device has no current certificate to rotate");
        goto out;
    }
    d->status = 200;
    d->reply_kind = REPLY_ROTATION;
    if (!json_is_true(json_object_get(c, "rotation_due")))
        decide_emit(d, cmd, cfg, decide_str(b, "device_id"), int_of(dev, "version") + 1,
                    "CertificateRotationDue",
                    json_pack("{s:O, s:O, s:O}", "cert_id", json_object_get(c, "cert_id"),
                              "fingerprint", json_object_get(c, "fingerprint"), "reason",
                              json_object_get(b, "reason")));
out:
    json_decref(dev);
    return 0;
}

static int decide_activate(view_txn *t, const command *cmd, const json_t *b,
                           const decide_config *cfg, decision *d)
{
    int err = 0;
    json_t *dev = decide_load_device(t, cmd, d, &err);
    if (!dev) return err;
    d->status = 200;
    d->reply_kind = REPLY_ACTIVATED;
    if (!strcmp(decide_str(dev, "status"), "provisioning"))
        decide_emit(d, cmd, cfg, decide_str(b, "device_id"), int_of(dev, "version") + 1,
                    "DeviceStatusChanged",
                    json_pack("{s:s, s:s}", "from", "provisioning", "to", "active"));
    json_decref(dev);
    return 0;
}

/* last_seen_at only moves forward; it does not change the record's version. */
static int decide_touch(view_txn *t, const command *cmd, const json_t *b, const decide_config *cfg,
                        decision *d)
{
    int err = 0;
    json_t *dev = decide_load_device(t, cmd, d, &err);
    if (!dev) return err;
    int64_t seen = int_of(b, "seen_ms"), last = 0;
    const char *prev = json_string_value(json_object_get(dev, "last_seen_at"));
    d->status = 200;
    d->reply = json_pack("{s:O, s:O}", "device_id", json_object_get(b, "device_id"), "version",
                         json_object_get(dev, "version"));
    if (!prev || (!clock_parse_rfc3339(prev, &last) && seen > last))
        decide_emit(d, cmd, cfg, decide_str(b, "device_id"), int_of(dev, "version"), "DeviceSeen",
                    json_pack("{s:I}", "seen_ms", (json_int_t)seen));
    json_decref(dev);
    return 0;
}

int decide_pki(view_txn *t, const command *cmd, const char *kind, const json_t *b,
               const decide_config *cfg, decision *d, int *err)
{
    static const struct {
        const char *kind;
        int (*fn)(view_txn *, const command *, const json_t *, const decide_config *, decision *);
    } rules[] = {
        {"AddFactoryCa", decide_add_factory_ca}, {"RemoveFactoryCa", decide_remove_factory_ca},
        {"AddManifest", decide_add_manifest},    {"CreateClaim", decide_create_claim},
        {"ProvisionDevice", decide_provision},   {"RenewCertificate", decide_renew},
        {"RevokeCertificate", decide_revoke},    {"RotateCertificate", decide_rotate},
        {"ActivateDevice", decide_activate},     {"TouchDevice", decide_touch},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (!strcmp(kind, rules[i].kind)) {
            *err = rules[i].fn(t, cmd, b, cfg, d);
            return 1;
        }
    return 0;
}

/* {device_id, cert_id, certificate_pem, ca_chain_pem, expires_at, version}. */
static int reply_certificate(view_txn *t, const command *cmd, const json_t *b, decision *d)
{
    reg_uuid tid;
    reg_key k;
    command_tenant(cmd, &tid);
    char *ca = NULL;
    key_tagged(&k, 'i', tid.b, NULL);
    int err = view_txn_get(t, VIEW_CAS, k.b, k.len, &ca, NULL);
    if (err) return err == REG_ENOTFOUND ? REG_EDECODE : err;
    const json_t *c = json_object_get(b, "certificate");
    char expires[32];
    clock_rfc3339(int_of(c, "not_after_ms"), expires);
    const event *last = d->nevents ? &d->events[d->nevents - 1] : NULL;
    d->reply = json_pack("{s:O, s:O, s:O, s:s, s:s, s:I}", "device_id",
                         json_object_get(b, "device_id"), "cert_id", json_object_get(c, "cert_id"),
                         "certificate_pem", json_object_get(c, "pem"), "ca_chain_pem", ca,
                         "expires_at", expires, "version", (json_int_t)(last ? last->version : 0));
    free(ca);
    return 0;
}

int decide_pki_reply(view_txn *t, const command *cmd, const json_t *b, decision *d)
{
    const event *last = d->nevents ? &d->events[d->nevents - 1] : NULL;
    switch (d->reply_kind) {
    case REPLY_FACTORY_CA: {
        char na[32];
        clock_rfc3339(int_of(b, "not_after_ms"), na);
        d->reply = json_pack("{s:O, s:O, s:O, s:s, s:i}", "ca_id", json_object_get(b, "ca_id"),
                             "subject", json_object_get(b, "subject"), "fingerprint",
                             json_object_get(b, "fingerprint"), "not_after", na, "version", 1);
        return 0;
    }
    case REPLY_FACTORY_CA_REMOVED:
        d->reply = json_pack("{s:O, s:b, s:i}", "ca_id", json_object_get(b, "ca_id"), "deleted", 1,
                             "version", 2);
        return 0;
    case REPLY_CLAIM: {
        char ex[32];
        clock_rfc3339(int_of(b, "expires_ms"), ex);
        d->reply =
            json_pack("{s:O, s:O, s:O, s:s, s:i, s:i}", "claim_id", json_object_get(b, "claim_id"),
                      "device_type", json_object_get(b, "device_type"), "max_uses",
                      json_object_get(b, "max_uses"), "expires_at", ex, "uses", 0, "version", 1);
        return 0;
    }
    case REPLY_PROVISIONED:
    case REPLY_RENEWED:
        return reply_certificate(t, cmd, b, d);
    case REPLY_REVOKED:
    case REPLY_ROTATION:
    case REPLY_ACTIVATED: {
        reg_uuid tid, did;
        json_t *dev = NULL;
        view_src src = {NULL, t};
        command_tenant(cmd, &tid);
        const char *device_id = last ? last->entity_id : decide_str(b, "device_id");
        if (d->reply_kind == REPLY_REVOKED && !last) {
            /* Already revoked: the answer repeats the state. */
            int err;
            json_t *rec = load_cert_by_id(t, &tid, decide_str(b, "cert_id"), d, &err);
            if (!rec) return err ? err : REG_EDECODE;
            char at[32];
            clock_rfc3339(int_of(rec, "revoked_ms"), at);
            d->reply = json_pack("{s:O, s:O, s:s, s:b}", "cert_id", json_object_get(b, "cert_id"),
                                 "device_id", json_object_get(rec, "device_id"), "revoked_at", at,
                                 "revoked", 1);
            json_decref(rec);
            return 0;
        }
        if (reg_uuid_parse(device_id, &did)) return REG_EDECODE;
        int err = record_device_load(src, &tid, &did, &dev);
        if (err) return err;
        if (d->reply_kind == REPLY_ACTIVATED) {
            d->reply = dev;
            return 0;
        }
        if (d->reply_kind == REPLY_REVOKED) {
            char at[32];
            clock_rfc3339(cmd->time_ms, at);
            d->reply =
                json_pack("{s:O, s:s, s:s, s:b, s:O}", "cert_id", json_object_get(b, "cert_id"),
                          "device_id", device_id, "revoked_at", at, "revoked", 1, "version",
                          json_object_get(dev, "version"));
        } else {
            json_t *c = primary_cert(dev);
            d->reply = json_pack("{s:s, s:O, s:O, s:b, s:O}", "device_id", device_id, "cert_id",
                                 json_object_get(c, "cert_id"), "expires_at",
                                 json_object_get(c, "expires_at"), "rotation_due", 1, "version",
                                 json_object_get(dev, "version"));
        }
        json_decref(dev);
        return 0;
    }
    default: /* the manifest's reply was made while deciding */
        return 0;
    }
}
