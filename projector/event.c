/* event.c - the projector's events between decision and apply, to and from registry.Event
 * (event.h). */
#include "projector/event.h"
#include "err.h"

#include <string.h>

static const char *member_str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

int event_from_json(const json_t *ev, event *out)
{
    *out = (event){0};
    const char *kind = NULL;
    json_t *b = NULL;
    json_object_foreach(json_object_get(ev, "body"), kind, b) break;
    const char *eid = member_str(ev, "event_id");
    const json_t *time_ms = json_object_get(ev, "time_ms"),
                 *version = json_object_get(ev, "version");
    out->command_id = member_str(ev, "command_id");
    out->tenant_id = member_str(ev, "tenant_id");
    out->region = member_str(ev, "region");
    const json_t *actor = json_object_get(ev, "actor");
    out->actor = json_string_value(actor);
    out->actor_len = json_string_length(actor);
    if (!kind || !json_is_object(b) || !eid || strlen(eid) > REG_UUID_STRLEN || !out->command_id ||
        !out->tenant_id || !out->region || !out->actor || !json_is_integer(time_ms) ||
        !json_is_integer(version))
        return REG_EDECODE;
    memcpy(out->event_id, eid, strlen(eid) + 1);
    const char *entity = member_str(ev, "entity_id");
    out->ids_valid =
        !reg_uuid_parse(out->tenant_id, &out->tenant) &&
        reg_uuid_take(entity, entity ? strlen(entity) : 0, out->entity_id, &out->entity);
    out->time_ms = json_integer_value(time_ms);
    out->version = json_integer_value(version);
    out->kind = kind;
    out->body = json_incref(b);
    return 0;
}

static codec_field string_field(const char *s)
{
    return (codec_field){.kind = CODEC_FIELD_STRING, .str = s, .len = s ? strlen(s) : 0};
}

int event_encode(codec_registry *codec, const event *e, codec_buf *out)
{
    /* registry.Event's fields, in the schema's order */
    const codec_field fields[] = {
        string_field(e->event_id),
        string_field(e->command_id),
        string_field(e->tenant_id),
        string_field(e->entity_id),
        string_field(e->region),
        {.kind = CODEC_FIELD_LONG, .num = e->time_ms},
        {.kind = CODEC_FIELD_STRING, .str = e->actor, .len = e->actor_len},
        {.kind = CODEC_FIELD_LONG, .num = e->version},
        {.kind = CODEC_FIELD_BRANCH, .str = e->kind, .val = e->body},
    };
    return codec_encode_fields(codec, "registry.Event", fields, sizeof fields / sizeof fields[0],
                               out);
}

json_t *event_to_json(const event *e)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s#, s:I, s:{s:O}}", "event_id", e->event_id,
                     "command_id", e->command_id, "tenant_id", e->tenant_id, "entity_id",
                     e->entity_id, "region", e->region, "time_ms", (json_int_t)e->time_ms, "actor",
                     e->actor, (int)e->actor_len, "version", (json_int_t)e->version, "body",
                     e->kind, e->body);
}

void event_clear(event *e)
{
    json_decref(e->body);
    e->body = NULL;
}
