/*
 * decide.c - the rules of the registry (decide.h): what each command may do given the view.
 *
 * Syntactic checks (types, lengths, formats) were made by the API before the command was sent;
 * here are the rules that depend on state: existence within the tenant (another tenant's id is
 * simply not found), serial uniqueness, the device status machine, metadata key limits.
 */
#include "projector/decide.h"
#include "err.h"
#include "ids.h"
#include "projector/keys.h"
#include "projector/decide_util.h"
#include "projector/records.h"
#include "jsonfast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum reply_kind {
    REPLY_NONE,
    REPLY_TENANT,
    REPLY_TOKEN,
    REPLY_TOKEN_REVOKED,
    REPLY_DEVICE,
    REPLY_METADATA,
};

const char *decide_str(const json_t *obj, const char *field)
{
    const char *s = json_string_value(json_object_get(obj, field));
    return s ? s : "";
}

void decide_reject(decision *d, int status, const char *title, const char *detail)
{
    d->status = status;
    /* json_pack, which checks: a detail may quote what a client sent */
    d->reply = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", title, "status",
                         status, "detail", detail);
}

/* The next event of this command in d, its envelope filled (its id derived from the command id
 * and its index, so a re-decided command produces identical events) and its body left empty;
 * NULL when out of memory (d->emit_err says so). */
static event *next_event(decision *d, const command *cmd, const decide_config *cfg,
                         const char *entity_id, size_t entity_len, json_int_t version,
                         const char *kind)
{
    if (d->nevents == d->events_cap) {
        size_t cap = d->events_cap ? d->events_cap * 2 : 4;
        event *grown = realloc(d->events, cap * sizeof *grown);
        if (!grown) {
            d->emit_err = REG_ENOMEM;
            return NULL;
        }
        d->events = grown;
        d->events_cap = cap;
    }
    event *e = &d->events[d->nevents];
    reg_uuid cid = {{0}}, eid;
    size_t index = d->nevents++;
    if (cmd->id_valid) cid = cmd->id;
    reg_uuid_derive(&cid, &index, sizeof index, &eid);
    *e = (event){.command_id = cmd->command_id,
                 .tenant_id = cmd->tenant_id,
                 .region = cfg->region,
                 .actor = cmd->actor,
                 .actor_len = cmd->actor_len,
                 .time_ms = cmd->time_ms,
                 .version = version,
                 .kind = kind};
    reg_uuid_format(&eid, e->event_id);
    e->tenant = cmd->tenant;
    e->ids_valid = cmd->tenant_valid &&
                   reg_uuid_take(entity_id, entity_id ? entity_len : 0, e->entity_id, &e->entity);
    return e;
}

void decide_emit(decision *d, const command *cmd, const decide_config *cfg, const char *entity_id,
                 json_int_t version, const char *kind, json_t *body /* stolen */)
{
    if (!body) { /* the command lacks a member the event has (only a command not decoded by the
                  * codec, which fills defaults, can), or out of memory */
        d->emit_err = REG_EINVAL;
        return;
    }
    event *e = next_event(d, cmd, cfg, entity_id, entity_id ? strlen(entity_id) : 0, version, kind);
    if (e)
        e->body = body;
    else
        json_decref(body);
}

void decide_emit_fields(decision *d, const command *cmd, const decide_config *cfg,
                        const char *entity_id, size_t entity_len, json_int_t version,
                        const char *kind, codec_field *fields, size_t n, json_t *held)
{
    event *e = NULL;
    if (n > EVENT_BODY_FIELDS_MAX)
        d->emit_err = REG_EINVAL; /* no event body has more: a caller's mistake */
    else
        e = next_event(d, cmd, cfg, entity_id, entity_len, version, kind);
    if (!e) {
        codec_fields_release(fields, n);
        json_decref(held);
        return;
    }
    memcpy(e->fields, fields, n * sizeof *fields);
    e->nfields = n;
    e->held = held;
}

codec_field decide_string_field(const json_t *v)
{
    return (codec_field){
        .kind = CODEC_FIELD_STRING, .str = json_string_value(v), .len = json_string_length(v)};
}

/* A copy of a decoded map field's pairs (NULL: out of memory), for an event that owns its own. */
static codec_pair *pairs_copy(const codec_field *map)
{
    codec_pair *p = malloc((map->npairs ? map->npairs : 1) * sizeof *p);
    if (p && map->npairs) memcpy(p, map->pairs, map->npairs * sizeof *p);
    return p;
}

/* Whether a string field holds a NUL, which the view's keys use to separate their parts: the
 * API's JSON cannot carry one, so only a record not written by the registry can. */
static bool holds_nul(const codec_field *f)
{
    return f->str && memchr(f->str, 0, f->len);
}

/* Loads the command's device, or rejects with 404. Returns the stored device JSON or NULL. */
json_t *decide_load_device(view_txn *t, const command *cmd, decision *d, int *err)
{
    reg_uuid tid, did;
    json_t *dev = NULL;
    if (command_tenant(cmd, &tid) || command_device(cmd, &did)) {
        decide_reject(d, 404, "Not Found", "no such device");
        return NULL;
    }
    view_src src = {NULL, t};
    int e = record_device_hold(src, &tid, &did, &dev);
    if (e == REG_ENOTFOUND) {
        decide_reject(d, 404, "Not Found", "no such device");
        return NULL;
    }
    if (e) {
        *err = e;
        return NULL;
    }
    return dev;
}

static int decide_create_tenant(view_txn *t, const command *cmd, const json_t *b,
                                const decide_config *cfg, decision *d)
{
    reg_uuid tid;
    json_t *existing = NULL;
    if (command_tenant(cmd, &tid)) {
        decide_reject(d, 400, "Bad Request", "invalid tenant id");
        return 0;
    }
    view_src src = {NULL, t};
    if (record_tenant_load(src, &tid, &existing) == 0) {
        json_decref(existing);
        decide_reject(d, 409, "Conflict", "tenant exists");
        return 0;
    }
    decide_emit(d, cmd, cfg, cmd->tenant_id, 1, "TenantCreated",
                jsonfast_pack("{s:O, s:O, s:O, s:O, s:O}", "name", json_object_get(b, "name"),
                              "cert_validity_days", json_object_get(b, "cert_validity_days"),
                              "rotate_before_days", json_object_get(b, "rotate_before_days"),
                              "overlap_days", json_object_get(b, "overlap_days"), "issuing_ca_pem",
                              json_object_get(b, "issuing_ca_pem")));
    decide_emit(d, cmd, cfg, decide_str(b, "token_id"), 1, "TokenCreated",
                jsonfast_pack("{s:O, s:s, s:s, s:O}", "token_id", json_object_get(b, "token_id"),
                              "role", "operator", "name", "initial operator token", "token_hash",
                              json_object_get(b, "token_hash")));
    d->status = 201;
    d->reply_kind = REPLY_TENANT;
    return 0;
}

static int decide_create_token(view_txn *t, const command *cmd, const json_t *b,
                               const decide_config *cfg, decision *d)
{
    decide_emit(d, cmd, cfg, decide_str(b, "token_id"), 1, "TokenCreated", json_deep_copy(b));
    d->status = 201;
    d->reply_kind = REPLY_TOKEN;
    return 0;
}

static int decide_revoke_token(view_txn *t, const command *cmd, const json_t *b,
                               const decide_config *cfg, decision *d)
{
    reg_uuid tid, token_id;
    if (command_tenant(cmd, &tid) || reg_uuid_parse(decide_str(b, "token_id"), &token_id)) {
        decide_reject(d, 404, "Not Found", "no such token");
        return 0;
    }
    reg_key k;
    key_add(key_add(key_byte(key_reset(&k), 'i'), tid.b, 16), token_id.b, 16);
    char *hash = NULL;
    int err = view_txn_get(t, VIEW_TOKENS, k.b, k.len, &hash, NULL);
    if (err == REG_ENOTFOUND) {
        decide_reject(d, 404, "Not Found", "no such token");
        return 0;
    }
    if (err) return err;
    free(hash);
    decide_emit(d, cmd, cfg, decide_str(b, "token_id"), 2, "TokenRevoked", json_deep_copy(b));
    d->status = 200;
    d->reply_kind = REPLY_TOKEN_REVOKED;
    return 0;
}

static int decide_register_device(view_txn *t, const command *cmd, const decide_config *cfg,
                                  decision *d)
{
    reg_uuid tid;
    if (command_tenant(cmd, &tid) || cmd->nfields != REGISTER_DEVICE_FIELDS) {
        decide_reject(d, 404, "Not Found", "no such tenant");
        return 0;
    }
    const codec_field *f = cmd->fields, *metadata = &f[REGISTER_METADATA];
    if (metadata->npairs > cfg->max_metadata_keys) {
        char msg[96];
        snprintf(msg, sizeof msg, "metadata: at most %u keys per device", cfg->max_metadata_keys);
        decide_reject(d, 400, "Bad Request", msg);
        return 0;
    }
    bool nul = holds_nul(&f[REGISTER_TYPE]) || holds_nul(&f[REGISTER_FIRMWARE]);
    for (size_t i = 0; i < metadata->npairs; i++)
        nul = nul || memchr(metadata->pairs[i].val, 0, metadata->pairs[i].val_len);
    if (nul) {
        decide_reject(d, 400, "Bad Request", "a string holds a NUL character");
        return 0;
    }
    reg_key k;
    key_tenant_str(&k, tid.b, f[REGISTER_SERIAL].str, f[REGISTER_SERIAL].len);
    char *existing = NULL;
    int err = view_txn_get(t, VIEW_SERIALS, k.b, k.len, &existing, NULL);
    if (err == 0) {
        free(existing);
        decide_reject(d, 409, "Conflict", "serial_number is already registered in this tenant");
        return 0;
    }
    if (err != REG_ENOTFOUND) return err;
    codec_field body[DEVICE_REGISTERED_FIELDS] = {
        [REGISTERED_SERIAL] = f[REGISTER_SERIAL],
        [REGISTERED_TYPE] = f[REGISTER_TYPE],
        [REGISTERED_HARDWARE] = f[REGISTER_HARDWARE],
        [REGISTERED_FIRMWARE] = f[REGISTER_FIRMWARE],
        [REGISTERED_STATUS] = {.kind = CODEC_FIELD_STRING, .str = "provisioning", .len = 12},
        [REGISTERED_METADATA] = {.kind = CODEC_FIELD_MAP,
                                 .pairs = pairs_copy(metadata),
                                 .npairs = metadata->npairs},
    };
    if (!body[REGISTERED_METADATA].pairs) return REG_ENOMEM;
    decide_emit_fields(d, cmd, cfg, f[REGISTER_DEVICE_ID].str, f[REGISTER_DEVICE_ID].len, 1,
                       "DeviceRegistered", body, DEVICE_REGISTERED_FIELDS, NULL);
    d->status = 201;
    d->reply_kind = REPLY_DEVICE;
    return 0;
}

/* The device status machine: provisioning -> active -> suspended <-> active; anything ->
 * decommissioned, which is final. */
static int status_move_allowed(const char *from, const char *to)
{
    if (!strcmp(from, "decommissioned")) return 0;
    if (!strcmp(to, "decommissioned")) return 1;
    if (!strcmp(from, "provisioning")) return !strcmp(to, "active");
    if (!strcmp(from, "active")) return !strcmp(to, "suspended");
    if (!strcmp(from, "suspended")) return !strcmp(to, "active");
    return 0;
}

static int decide_update_device(view_txn *t, const command *cmd, const json_t *b,
                                const decide_config *cfg, decision *d)
{
    int err = 0;
    json_t *dev = decide_load_device(t, cmd, d, &err);
    if (!dev) return err;
    const char *from = decide_str(dev, "status");
    json_int_t version = json_integer_value(json_object_get(dev, "version"));
    const char *to = json_string_value(json_object_get(b, "status"));
    d->status = 200;
    d->reply_kind = REPLY_DEVICE;
    if (!strcmp(from, "decommissioned") && (!to || strcmp(to, from))) {
        decide_reject(d, 409, "Conflict", "the device is decommissioned; that is final");
        json_object_set_new(d->reply, "current_status", json_string(from));
        goto done;
    }
    if (to && strcmp(to, from)) {
        if (!status_move_allowed(from, to)) {
            char msg[128];
            snprintf(msg, sizeof msg, "status cannot move from %s to %s", from, to);
            decide_reject(d, 409, "Conflict", msg);
            json_object_set_new(d->reply, "current_status", json_string(from));
            goto done;
        }
        decide_emit(d, cmd, cfg, decide_str(b, "device_id"), ++version, "DeviceStatusChanged",
                    jsonfast_pack("{s:s, s:s}", "from", from, "to", to));
    }
    json_t *attrs = json_object();
    static const char *const fields[] = {"firmware_version", "hardware_revision"};
    for (size_t i = 0; i < 2; i++) {
        json_t *nv = json_object_get(b, fields[i]);
        if (json_is_string(nv) && !json_equal(nv, json_object_get(dev, fields[i])))
            json_object_set(attrs, fields[i], nv);
    }
    if (json_object_size(attrs))
        decide_emit(d, cmd, cfg, decide_str(b, "device_id"), ++version, "DeviceAttributesChanged",
                    attrs);
    else
        json_decref(attrs);
done:
    json_decref(dev);
    return 0;
}

/* Whether the device's metadata value old (or NULL) is the string val (val_len bytes). */
static bool same_value(const json_t *old, const char *val, size_t val_len)
{
    return old && val && json_string_length(old) == val_len &&
           !memcmp(json_string_value(old), val, val_len);
}

static int decide_patch_metadata(view_txn *t, const command *cmd, const decide_config *cfg,
                                 decision *d)
{
    reg_uuid tid, did;
    record_device_meta dev;
    int err = REG_ENOTFOUND;
    if (!command_tenant(cmd, &tid) && !command_device(cmd, &did) &&
        cmd->nfields == PATCH_METADATA_FIELDS)
        err = record_device_meta_read(t, &tid, &did, &dev); /* the metadata alone decoded */
    if (err == REG_ENOTFOUND) decide_reject(d, 404, "Not Found", "no such device");
    if (err) return err == REG_ENOTFOUND ? 0 : err;
    const codec_field *changes = &cmd->fields[PATCH_CHANGES];
    codec_field effective = {.kind = CODEC_FIELD_MAP, .pairs = pairs_copy(changes)};
    if (!effective.pairs) {
        record_device_meta_release(&dev);
        return REG_ENOMEM;
    }
    if (dev.parts.decommissioned) {
        decide_reject(d, 409, "Conflict", "the device is decommissioned; that is final");
        goto done;
    }
    /* Only real changes become the event; count the keys the device will have. */
    json_t *current = dev.metadata;
    json_int_t count = (json_int_t)json_object_size(current);
    for (size_t i = 0; i < changes->npairs; i++) {
        const codec_pair *p = &changes->pairs[i];
        if (p->val && memchr(p->val, 0, p->val_len)) {
            decide_reject(d, 400, "Bad Request", "a string holds a NUL character");
            goto done;
        }
        const json_t *old = json_object_getn(current, p->key, p->key_len);
        if (same_value(old, p->val, p->val_len) || (!old && !p->val)) continue;
        count += !p->val ? -1 : (old ? 0 : 1);
        effective.pairs[effective.npairs++] = *p;
    }
    /* A single-key delete of an absent key is a 404 (DELETE /devices/{id}/metadata/{key}). */
    if (changes->npairs == 1 && effective.npairs == 0 && !changes->pairs[0].val &&
        cmd->fields[PATCH_REQUIRE_EXISTING].num) {
        decide_reject(d, 404, "Not Found", "no such metadata key");
        goto done;
    }
    if (count > (json_int_t)cfg->max_metadata_keys) {
        char msg[96];
        snprintf(msg, sizeof msg, "metadata: at most %u keys per device", cfg->max_metadata_keys);
        decide_reject(d, 400, "Bad Request", msg);
        goto done;
    }
    d->status = 200;
    d->reply_kind = REPLY_METADATA;
    if (effective.npairs) {
        decide_emit_fields(d, cmd, cfg, cmd->fields[PATCH_DEVICE_ID].str,
                           cmd->fields[PATCH_DEVICE_ID].len, dev.parts.version + 1,
                           "MetadataChanged", &effective, METADATA_CHANGED_FIELDS, NULL);
        d->decided.device = dev; /* for the apply, which changes it */
        return 0;
    }
done:
    free(effective.pairs);
    record_device_meta_release(&dev);
    return 0;
}

/* The decider of the command's kind. */
static int decide_kind(view_txn *t, const command *cmd, const decide_config *cfg, decision *d)
{
    const char *kind = cmd->kind;
    const json_t *b = cmd->body;
    if (!strcmp(kind, "CreateTenant")) return decide_create_tenant(t, cmd, b, cfg, d);
    if (!strcmp(kind, "CreateToken")) return decide_create_token(t, cmd, b, cfg, d);
    if (!strcmp(kind, "RevokeToken")) return decide_revoke_token(t, cmd, b, cfg, d);
    if (!strcmp(kind, "RegisterDevice")) return decide_register_device(t, cmd, cfg, d);
    if (!strcmp(kind, "UpdateDevice")) return decide_update_device(t, cmd, b, cfg, d);
    if (!strcmp(kind, "PatchMetadata")) return decide_patch_metadata(t, cmd, cfg, d);
    if (!strcmp(kind, "UpdateShadow")) return decide_shadow_update(t, cmd, b, cfg, d);
    int err = 0;
    if (decide_pki(t, cmd, kind, b, cfg, d, &err)) return err;
    decide_reject(d, 400, "Bad Request", "unknown command");
    return 0;
}

int decide_command(view_txn *t, const command *cmd, const decide_config *cfg, decision *d)
{
    memset(d, 0, sizeof *d);
    int err = decide_kind(t, cmd, cfg, d);
    if (err || !d->emit_err) return err;
    /* An event that could not be made: a decision without it would be wrong. */
    if (d->emit_err == REG_ENOMEM) return REG_ENOMEM;
    decision_clear(d);
    decide_reject(d, 400, "Bad Request", "the command lacks a member its event needs");
    return 0;
}

int decide_reply(view_txn *t, const command *cmd, decision *d)
{
    if (d->reply) return 0; /* rejected (a problem document), or rendered while deciding */
    const json_t *b = cmd->body;
    switch (d->reply_kind) {
    case REPLY_TENANT:
        d->reply = jsonfast_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:i}", "tenant_id", cmd->tenant_id,
                                 "name", json_object_get(b, "name"), "token_id",
                                 json_object_get(b, "token_id"), "cert_validity_days",
                                 json_object_get(b, "cert_validity_days"), "rotate_before_days",
                                 json_object_get(b, "rotate_before_days"), "overlap_days",
                                 json_object_get(b, "overlap_days"), "version", 1);
        break;
    case REPLY_TOKEN:
        d->reply = jsonfast_pack("{s:O, s:O, s:O, s:i}", "token_id", json_object_get(b, "token_id"),
                                 "role", json_object_get(b, "role"), "name",
                                 json_object_get(b, "name"), "version", 1);
        break;
    case REPLY_TOKEN_REVOKED:
        d->reply = jsonfast_pack("{s:O, s:b, s:i}", "token_id", json_object_get(b, "token_id"),
                                 "revoked", 1, "version", 2);
        break;
    case REPLY_DEVICE:
        /* Nothing to build: an accepted command's outcome embeds the device's stored text as it
         * is (decision_outcome); parsing the record here (a registration's is written as text)
         * cost as much as writing it. */
        break;
    case REPLY_METADATA:
        /* As a device: rendered from the record's text (decision_outcome). */
        break;
    default:
        if (d->reply_kind >= DECIDE_REPLY_PKI) return decide_pki_reply(t, cmd, b, d);
        d->reply = json_object();
    }
    return 0;
}

void decision_clear(decision *d)
{
    for (size_t i = 0; i < d->nevents; i++)
        event_clear(&d->events[i]);
    free(d->events);
    json_decref(d->reply);
    apply_decided_clear(&d->decided);
    memset(d, 0, sizeof *d);
}

/* The stored text of the device (of command cmd) an accepted device or metadata command answers
 * with (*text, *len bytes), and for metadata where its parts are: the text applying its event
 * stored (d->decided), or read from t (*owned, which the caller frees). 0, REG_ENOTFOUND when
 * the command is not answered that way or the device is not there, or the record's REG_E*. */
static int stored_device_reply(view_txn *t, const command *cmd, const decision *d,
                               const char **text, size_t *len, device_text *parts, char **owned)
{
    *owned = NULL;
    if ((d->reply_kind != REPLY_DEVICE && d->reply_kind != REPLY_METADATA) || d->status >= 400)
        return REG_ENOTFOUND;
    reg_uuid tid, did;
    if (command_tenant(cmd, &tid) || command_device(cmd, &did)) return REG_ENOTFOUND;
    const apply_decided *a = &d->decided;
    if (a->stored && !memcmp(a->stored_device.b, did.b, 16)) { /* as applying stored it */
        if (d->reply_kind == REPLY_METADATA) {
            if (a->stored_parts_valid)
                *parts = a->stored_parts;
            else if (device_text_parse(a->stored, a->stored_len, parts))
                return REG_EDECODE;
        }
        *text = a->stored;
        *len = a->stored_len;
        return 0;
    }
    int err = d->reply_kind == REPLY_DEVICE ? record_device_text(t, &tid, &did, owned, len)
                                            : record_device_parts(t, &tid, &did, owned, len, parts);
    *text = *owned;
    return err;
}

/* Starts an outcome's text: {"command_id": ..., "status": status (the object left open). */
static void outcome_head(jsonfast_text *x, const command *cmd, int status)
{
    jsonfast_text_raw(x, "{\"command_id\":");
    jsonfast_text_string(x, cmd->command_id);
    jsonfast_text_raw(x, ",\"status\":");
    jsonfast_text_int(x, status);
}

char *decision_outcome(view_txn *t, const command *cmd, const decision *d, size_t *len)
{
    const char *dev = NULL;
    char *owned = NULL;
    size_t dev_len = 0;
    device_text parts;
    int err = stored_device_reply(t, cmd, d, &dev, &dev_len, &parts, &owned);
    if (!err) { /* the members jsonfast_pack's outcome below has */
        jsonfast_text x = {0};
        jsonfast_text_reserve(&x, dev_len + 160); /* the record and what wraps it */
        outcome_head(&x, cmd, d->status);
        jsonfast_text_raw(&x, ",\"body\":");
        if (d->reply_kind == REPLY_DEVICE) {
            jsonfast_text_rawn(&x, dev, dev_len); /* the record as it is stored */
        } else { /* {device_id, metadata, version}, the metadata's text as the record has it */
            size_t id_len = 0;
            const char *id = command_device_id(cmd, &id_len);
            jsonfast_text_raw(&x, "{\"device_id\":");
            jsonfast_text_stringn(&x, id, id_len); /* an id: command_device parsed it */
            jsonfast_text_raw(&x, ",\"metadata\":");
            jsonfast_text_rawn(&x, dev + parts.metadata_at, parts.metadata_end - parts.metadata_at);
            jsonfast_text_raw(&x, ",\"version\":");
            jsonfast_text_int(&x, parts.version);
            jsonfast_text_raw(&x, "}");
        }
        jsonfast_text_raw(&x, "}");
        free(owned);
        return jsonfast_text_end(&x, len);
    }
    /* A metadata record there but unreadable fails; a device no longer there answers with no
     * body, as any other outcome below. */
    if (err != REG_ENOTFOUND && d->reply_kind == REPLY_METADATA) return NULL;
    json_t *outcome = jsonfast_pack("{s:s, s:i, s:O}", "command_id", cmd->command_id, "status",
                                    d->status, "body", d->reply ? d->reply : json_null());
    char *text = outcome ? jsonfast_dump(outcome, len) : NULL;
    json_decref(outcome);
    return text;
}

/* The reply kinds a kept outcome rebuilds from the record, by the name the view keeps. */
static const struct {
    int kind;
    const char *name;
} rebuilt_replies[] = {{REPLY_DEVICE, "device"}, {REPLY_METADATA, "metadata"}};

size_t decision_kept_outcome(const decision *d, char out[DECISION_KEPT_MAX])
{
    const char *reply = NULL;
    for (size_t i = 0; i < sizeof rebuilt_replies / sizeof rebuilt_replies[0]; i++)
        if (d->reply_kind == rebuilt_replies[i].kind) reply = rebuilt_replies[i].name;
    if (!reply || d->status >= 400) return 0;
    /* A few bytes for every command, written without a growing buffer */
    static const char head[] = "{\"status\":", mid[] = ",\"reply\":\"", tail[] = "\"}";
    size_t n = sizeof head - 1;
    memcpy(out, head, n);
    n += jsonfast_int(out + n, d->status);
    memcpy(out + n, mid, sizeof mid - 1);
    n += sizeof mid - 1;
    memcpy(out + n, reply, strlen(reply)); /* a name of rebuilt_replies: no escaping */
    n += strlen(reply);
    memcpy(out + n, tail, sizeof tail - 1);
    return n + sizeof tail - 1;
}

char *decision_replayed_outcome(view_txn *t, const command *cmd, const char *kept, size_t kept_len,
                                size_t *len)
{
    json_t *k = jsonfast_load(kept, kept_len, 0);
    const char *reply = json_string_value(json_object_get(k, "reply"));
    decision d = {.status = (int)json_integer_value(json_object_get(k, "status"))};
    for (size_t i = 0; reply && i < sizeof rebuilt_replies / sizeof rebuilt_replies[0]; i++)
        if (!strcmp(reply, rebuilt_replies[i].name)) d.reply_kind = rebuilt_replies[i].kind;
    json_decref(k);
    if (!d.reply_kind) { /* kept whole */
        char *copy = malloc(kept_len + 1);
        if (!copy) return NULL;
        memcpy(copy, kept, kept_len);
        copy[kept_len] = 0;
        *len = kept_len;
        return copy;
    }
    char *text = decide_reply(t, cmd, &d) ? NULL : decision_outcome(t, cmd, &d, len);
    decision_clear(&d);
    return text;
}
