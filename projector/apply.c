/*
 * apply.c - how each event changes the view (apply.h): the entity records and every index that
 * fleet queries use. Index entries are maintained from the record's previous and new values, so
 * the indexes always match the records.
 */
#include "projector/apply.h"
#include "projector/apply_util.h"
#include "clock.h"
#include "err.h"
#include "ids.h"
#include "projector/keys.h"
#include "projector/records.h"
#include "projector/shadow_view.h"
#include "jsonfast.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *str_or(const json_t *obj, const char *field, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, field));
    return s ? s : dflt;
}

void apply_put_json(view_txn *t, view_cf cf, const reg_key *k, json_t *value)
{
    size_t len = 0;
    char *text = jsonfast_dump(value, &len);
    if (text) view_txn_put(t, cf, k->b, k->len, text, len);
    free(text);
}

static void put_empty(view_txn *t, view_cf cf, const reg_key *k)
{
    view_txn_put(t, cf, k->b, k->len, "", 0);
}

/* The index entries of a device that depend on its attributes (not metadata): type and
 * status, status, firmware, last seen. */
enum { ATTR_INDEXES = 4 };
static const view_cf attr_index_cf[ATTR_INDEXES] = {VIEW_IDX_ATTR, VIEW_IDX_STATUS,
                                                    VIEW_IDX_FIRMWARE, VIEW_IDX_LASTSEEN};

/* An attribute of a device for attr_keys: len bytes, no NUL (the decisions refuse one); s is
 * NULL where the device has none. */
typedef struct attr {
    const char *s;
    size_t len;
} attr;

static attr attr_of(const json_t *dev, const char *field)
{
    const json_t *v = json_object_get(dev, field);
    return (attr){json_string_value(v), json_string_length(v)};
}

/* The keys of the entries in those indexes of a device with these attributes (fw and seen may
 * be missing); has[i] is false where it has none. */
static void attr_keys(const reg_uuid *tid, const reg_uuid *did, attr type, attr status, attr fw,
                      const char *seen, reg_key k[ATTR_INDEXES], bool has[ATTR_INDEXES])
{
    const char *t = type.s ? type.s : "", *st = status.s ? status.s : "";
    key_add(
        key_strn0(key_strn0(key_add(key_reset(&k[0]), tid->b, 16), t, type.len), st, status.len),
        did->b, 16);
    key_add(key_strn0(key_add(key_reset(&k[1]), tid->b, 16), st, status.len), did->b, 16);
    has[0] = has[1] = true;
    if ((has[2] = fw.s != NULL))
        key_add(key_strn0(key_add(key_reset(&k[2]), tid->b, 16), fw.s, fw.len), did->b, 16);
    int64_t seen_ms;
    if ((has[3] = seen && clock_parse_rfc3339(seen, &seen_ms) == 0))
        key_add(key_be64(key_add(key_reset(&k[3]), tid->b, 16), (uint64_t)seen_ms), did->b, 16);
}

/* The same for the device record dev. */
static void attr_index_keys(const reg_uuid *tid, const reg_uuid *did, const json_t *dev,
                            reg_key k[ATTR_INDEXES], bool has[ATTR_INDEXES])
{
    attr_keys(tid, did, attr_of(dev, "device_type"), attr_of(dev, "status"),
              attr_of(dev, "firmware_version"),
              json_string_value(json_object_get(dev, "last_seen_at")), k, has);
}

/* Puts the entries of keys k where has[] says. */
static void attr_index_put(view_txn *t, const reg_key k[ATTR_INDEXES], const bool has[ATTR_INDEXES])
{
    for (int i = 0; i < ATTR_INDEXES; i++)
        if (has[i]) put_empty(t, attr_index_cf[i], &k[i]);
}

/* Moves the device's attribute index entries from the keys it had (old, had) to those of its
 * record now. An entry whose key did not change is left alone: a metadata change rewrote all four
 * as a deletion and the same put, which the commit then wrote to the memtable again. */
static void attr_index_move(view_txn *t, const reg_uuid *tid, const reg_uuid *did,
                            const reg_key old[ATTR_INDEXES], const bool had[ATTR_INDEXES],
                            const json_t *dev)
{
    reg_key k[ATTR_INDEXES];
    bool has[ATTR_INDEXES];
    attr_index_keys(tid, did, dev, k, has);
    for (int i = 0; i < ATTR_INDEXES; i++) {
        if (had[i] && has[i] && old[i].len == k[i].len && !memcmp(old[i].b, k[i].b, k[i].len))
            has[i] = false; /* unchanged */
        else if (had[i])
            view_txn_delete(t, attr_index_cf[i], old[i].b, old[i].len);
    }
    attr_index_put(t, k, has);
}

/* The metadata index's key of a device's metadata key and value (klen and vlen bytes, neither
 * holding a NUL: the decision refused those). */
static void metadata_key(reg_key *k, const reg_uuid *tid, const reg_uuid *did, const char *key,
                         size_t klen, const char *value, size_t vlen)
{
    key_add(key_strn0(key_strn0(key_add(key_reset(k), tid->b, 16), key, klen), value, vlen), did->b,
            16);
}

/* Sets (p->val non-NULL) or deletes one metadata key of a device (md: its metadata object,
 * borrowed) and keeps the metadata index in step. */
static void set_metadata(view_txn *t, const reg_uuid *tid, const reg_uuid *did, json_t *md,
                         const codec_pair *p)
{
    const json_t *oldv = json_object_getn(md, p->key, p->key_len);
    const char *old = json_string_value(oldv);
    reg_key ik;
    if (old && p->val && json_string_length(oldv) == p->val_len && !memcmp(old, p->val, p->val_len))
        return; /* unchanged: the index entry stays */
    if (old) {
        metadata_key(&ik, tid, did, p->key, p->key_len, old, json_string_length(oldv));
        view_txn_delete(t, VIEW_IDX_META, ik.b, ik.len);
    }
    if (p->val) {
        metadata_key(&ik, tid, did, p->key, p->key_len, p->val, p->val_len);
        put_empty(t, VIEW_IDX_META, &ik);
        json_object_setn_new(md, p->key, p->key_len, json_stringn(p->val, p->val_len));
    } else {
        json_object_deln(md, p->key, p->key_len);
    }
}

/* Hands the text of the device record just stored (taken) back to the decision, with where its
 * parts are (or NULL: not known). */
static void hand_back(apply_decided *decided, const reg_uuid *device, char *text, size_t len,
                      const device_text *parts)
{
    free(decided->stored);
    decided->stored = text;
    decided->stored_len = len;
    decided->stored_device = *device;
    decided->stored_parts_valid = parts != NULL;
    if (parts) decided->stored_parts = *parts;
}

/* A nullable string field's value as JSON text: the string, or null. */
static void text_nullable(jsonfast_text *x, const codec_field *f)
{
    if (f->str)
        jsonfast_text_stringn(x, f->str, f->len);
    else
        jsonfast_text_raw(x, "null");
}

/* Writes a new device's record straight as text from the event's fields, in the members' order
 * of the records record_device_store writes, with its index entries: building it in jansson,
 * rendering it and freeing it was a fifth of deciding and applying a registration, and of the
 * committer's work for it. A device read again later in the batch is parsed from this text. */
static int apply_device_registered(view_txn *t, const reg_uuid *tid, const reg_uuid *did,
                                   const event *ev, apply_decided *decided)
{
    if (ev->nfields != DEVICE_REGISTERED_FIELDS) return REG_EDECODE;
    const codec_field *f = ev->fields, *metadata = &f[REGISTERED_METADATA];
    char tid_s[37], did_s[37];
    reg_uuid_format(tid, tid_s);
    reg_uuid_format(did, did_s);
    char registered[32];
    clock_rfc3339(ev->time_ms, registered);
    jsonfast_text x = {0};
    size_t estimate = 320; /* the members' names, the ids, the time */
    for (size_t i = 0; i < DEVICE_REGISTERED_FIELDS; i++)
        estimate += f[i].len;
    for (size_t i = 0; i < metadata->npairs; i++)
        estimate += metadata->pairs[i].key_len + metadata->pairs[i].val_len + 6;
    jsonfast_text_reserve(&x, estimate);
    /* the ids and the time are ours, nothing to escape */
    jsonfast_text_raw(&x, "{\"device_id\":\"");
    jsonfast_text_rawn(&x, did_s, REG_UUID_STRLEN);
    jsonfast_text_raw(&x, "\",\"tenant_id\":\"");
    jsonfast_text_rawn(&x, tid_s, REG_UUID_STRLEN);
    jsonfast_text_raw(&x, "\",\"serial_number\":");
    jsonfast_text_stringn(&x, f[REGISTERED_SERIAL].str, f[REGISTERED_SERIAL].len);
    jsonfast_text_raw(&x, ",\"device_type\":");
    jsonfast_text_stringn(&x, f[REGISTERED_TYPE].str, f[REGISTERED_TYPE].len);
    jsonfast_text_raw(&x, ",\"status\":");
    jsonfast_text_stringn(&x, f[REGISTERED_STATUS].str, f[REGISTERED_STATUS].len);
    jsonfast_text_raw(&x, ",\"firmware_version\":");
    text_nullable(&x, &f[REGISTERED_FIRMWARE]);
    jsonfast_text_raw(&x, ",\"hardware_revision\":");
    text_nullable(&x, &f[REGISTERED_HARDWARE]);
    jsonfast_text_raw(&x, ",\"registered_at\":\"");
    jsonfast_text_rawn(&x, registered, strlen(registered));
    jsonfast_text_raw(&x, "\",\"last_seen_at\":null,\"version\":");
    jsonfast_text_int(&x, ev->version);
    jsonfast_text_raw(&x, ",\"shadow_version\":0,\"metadata\":{");
    reg_key k;
    for (size_t i = 0; i < metadata->npairs; i++) {
        const codec_pair *p = &metadata->pairs[i];
        if (i) jsonfast_text_raw(&x, ",");
        jsonfast_text_stringn(&x, p->key, p->key_len);
        jsonfast_text_raw(&x, ":");
        jsonfast_text_stringn(&x, p->val, p->val_len);
        metadata_key(&k, tid, did, p->key, p->key_len, p->val, p->val_len);
        put_empty(t, VIEW_IDX_META, &k);
    }
    jsonfast_text_raw(&x, "},\"certificates\":[]}");
    size_t len = 0;
    char *text = jsonfast_text_end(&x, &len);
    if (!text) return REG_EDECODE;
    record_device_store_text(t, tid, did, text, len);
    if (decided)
        hand_back(decided, did, text, len, NULL);
    else
        free(text);

    reg_key ak[ATTR_INDEXES];
    bool has[ATTR_INDEXES];
    attr_keys(tid, did, (attr){f[REGISTERED_TYPE].str, f[REGISTERED_TYPE].len},
              (attr){f[REGISTERED_STATUS].str, f[REGISTERED_STATUS].len},
              (attr){f[REGISTERED_FIRMWARE].str, f[REGISTERED_FIRMWARE].len}, NULL, ak, has);
    attr_index_put(t, ak, has);

    key_tenant_str(&k, tid->b, f[REGISTERED_SERIAL].str, f[REGISTERED_SERIAL].len);
    view_txn_put(t, VIEW_SERIALS, k.b, k.len, did->b, 16);
    return 0;
}

/* Loads the device for a device event, applies `change` to it, and stores it back with the
 * event's version, keeping the attribute indexes in step. */
int apply_update_device(view_txn *t, const event *ev, apply_change_fn change)
{
    const reg_uuid *tid = &ev->tenant, *did = &ev->entity;
    json_t *dev = NULL;
    int err = record_device_take(t, tid, did, &dev);
    if (err) return err == REG_ENOTFOUND ? REG_EDECODE : err;
    reg_key old[ATTR_INDEXES];
    bool had[ATTR_INDEXES];
    attr_index_keys(tid, did, dev, old, had);
    change(dev, ev, t);
    json_object_set_new(dev, "version", json_integer(ev->version));
    attr_index_move(t, tid, did, old, had, dev);
    record_device_store(t, tid, did, dev);
    return 0;
}

static void change_status(json_t *dev, const event *ev, view_txn *t)
{
    json_object_set(dev, "status", json_object_get(ev->body, "to"));
}

static void change_attributes(json_t *dev, const event *ev, view_txn *t)
{
    static const char *const fields[] = {"firmware_version", "hardware_revision"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(ev->body, fields[i]);
        if (json_is_string(v)) json_object_set(dev, fields[i], v);
    }
}

/* A metadata change, made in the record's text (record_device_meta): only the metadata is
 * decoded, and the attribute indexes stay as they are. */
static int apply_metadata_changed(view_txn *t, const reg_uuid *tid, const reg_uuid *did,
                                  const event *ev, apply_decided *decided)
{
    record_device_meta m;
    int err = 0;
    if (ev->nfields != METADATA_CHANGED_FIELDS) return REG_EDECODE;
    if (decided && decided->device.text) { /* as the decision read it: a read and parse fewer */
        m = decided->device;
        decided->device = (record_device_meta){0};
    } else {
        err = record_device_meta_read(t, tid, did, &m);
    }
    if (err) return err == REG_ENOTFOUND ? REG_EDECODE : err;
    const codec_field *changes = &ev->fields[CHANGED_CHANGES];
    for (size_t i = 0; i < changes->npairs; i++)
        set_metadata(t, tid, did, m.metadata, &changes->pairs[i]);
    char *stored = NULL;
    size_t stored_len = 0;
    device_text parts;
    err = record_device_meta_store(t, tid, did, &m, ev->version, decided ? &stored : NULL,
                                   &stored_len, &parts);
    if (stored) hand_back(decided, did, stored, stored_len, &parts);
    record_device_meta_release(&m);
    return err;
}

static int apply_tenant_created(view_txn *t, const reg_uuid *tid, const event *ev, const json_t *b)
{
    char tid_s[37];
    reg_uuid_format(tid, tid_s);
    json_t *rec = json_deep_copy(b);
    /* The issuing CA lives in the cas family (the front ends' trust stores read it there). */
    const char *ca_pem = str_or(b, "issuing_ca_pem", "");
    reg_key ck;
    key_tagged(&ck, 'i', tid->b, NULL);
    if (*ca_pem) view_txn_put(t, VIEW_CAS, ck.b, ck.len, ca_pem, strlen(ca_pem));
    json_object_del(rec, "issuing_ca_pem");
    json_object_set_new(rec, "tenant_id", json_string(tid_s));
    json_object_set_new(rec, "created_at", json_integer(ev->time_ms));
    json_object_set_new(rec, "version", json_integer(ev->version));
    reg_key k;
    key_add(key_reset(&k), tid->b, 16);
    apply_put_json(t, VIEW_TENANTS, &k, rec);
    json_decref(rec);
    return 0;
}

static int apply_token_created(view_txn *t, const reg_uuid *tid, const event *ev, const json_t *b)
{
    unsigned char hash[32];
    reg_uuid token_id;
    if (reg_hex_decode(str_or(b, "token_hash", NULL), hash, 32) ||
        reg_uuid_parse(str_or(b, "token_id", ""), &token_id))
        return REG_EDECODE;
    char tid_s[37];
    reg_uuid_format(tid, tid_s);
    json_t *rec =
        jsonfast_pack("{s:O, s:s, s:O, s:O, s:I}", "token_id", json_object_get(b, "token_id"),
                      "tenant_id", tid_s, "role", json_object_get(b, "role"), "name",
                      json_object_get(b, "name"), "created_at", (json_int_t)ev->time_ms);
    if (!rec) return REG_EDECODE;
    reg_key k;
    key_add(key_byte(key_reset(&k), 'h'), hash, 32);
    apply_put_json(t, VIEW_TOKENS, &k, rec);
    json_decref(rec);
    key_add(key_add(key_byte(key_reset(&k), 'i'), tid->b, 16), token_id.b, 16);
    view_txn_put(t, VIEW_TOKENS, k.b, k.len, hash, 32);
    return 0;
}

static int apply_token_revoked(view_txn *t, const reg_uuid *tid, const json_t *b)
{
    reg_uuid token_id;
    if (reg_uuid_parse(str_or(b, "token_id", ""), &token_id)) return REG_EDECODE;
    reg_key k, hk;
    key_add(key_add(key_byte(key_reset(&k), 'i'), tid->b, 16), token_id.b, 16);
    char *hash = NULL;
    size_t len = 0;
    if (view_txn_get(t, VIEW_TOKENS, k.b, k.len, &hash, &len) != 0) return 0;
    key_add(key_byte(key_reset(&hk), 'h'), hash, len);
    free(hash);
    view_txn_delete(t, VIEW_TOKENS, hk.b, hk.len);
    view_txn_delete(t, VIEW_TOKENS, k.b, k.len);
    return 0;
}

/* The shadow document, and the device record's shadow_version (GET /devices/{id} stays one
 * point read). Connectivity-free: the device's own version does not move. */
static int apply_shadow_updated(view_txn *t, const reg_uuid *tid, const reg_uuid *did,
                                const event *ev, const json_t *b, json_t **decided)
{
    json_t *desired = NULL, *reported = NULL, *rec = NULL;
    view_src src = {NULL, t};
    json_int_t version = ev->version;
    if (decided && *decided) {
        shadow_view_store(t, tid, did, *decided);
        json_decref(*decided);
        *decided = NULL;
        record_device_set_shadow_version(t, tid, did, version);
        return 0;
    }
    int err = shadow_view_patch(b, "desired", &desired);
    if (!err) err = shadow_view_patch(b, "reported", &reported);
    if (!err) err = shadow_view_load(src, tid, did, &rec);
    if (!err) err = shadow_view_update(rec, desired, reported, ev->time_ms, version);
    if (!err) shadow_view_store(t, tid, did, rec);
    /* A missing or unreadable device record does not hold the shadow back. */
    if (!err) record_device_set_shadow_version(t, tid, did, version);
    json_decref(rec);
    json_decref(desired);
    json_decref(reported);
    return err;
}

void apply_decided_clear(apply_decided *d)
{
    json_decref(d->shadow);
    record_device_meta_release(&d->device);
    free(d->stored);
    *d = (apply_decided){0};
}

int apply_event(view_txn *t, const event *ev, apply_decided *decided)
{
    if (decided) { /* what an earlier event stored is no longer the last */
        free(decided->stored);
        decided->stored = NULL;
    }
    if (!ev->ids_valid || (!ev->nfields && !json_is_object(ev->body))) return REG_EDECODE;
    const reg_uuid *tid = &ev->tenant, *eid = &ev->entity;
    const char *kind = ev->kind;
    const json_t *b = ev->body;

    if (!strcmp(kind, "TenantCreated")) return apply_tenant_created(t, tid, ev, b);
    if (!strcmp(kind, "TokenCreated")) return apply_token_created(t, tid, ev, b);
    if (!strcmp(kind, "TokenRevoked")) return apply_token_revoked(t, tid, b);
    if (!strcmp(kind, "DeviceRegistered")) return apply_device_registered(t, tid, eid, ev, decided);
    if (!strcmp(kind, "DeviceStatusChanged")) return apply_update_device(t, ev, change_status);
    if (!strcmp(kind, "DeviceAttributesChanged"))
        return apply_update_device(t, ev, change_attributes);
    if (!strcmp(kind, "MetadataChanged")) return apply_metadata_changed(t, tid, eid, ev, decided);
    if (!strcmp(kind, "ShadowUpdated"))
        return apply_shadow_updated(t, tid, eid, ev, b, decided ? &decided->shadow : NULL);
    int err = 0;
    if (apply_pki(t, ev, &err)) return err;
    return REG_EDECODE;
}
