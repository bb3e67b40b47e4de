/* event.c - the projector's events between decision and apply, to and from registry.Event
 * (event.h). */
#include "projector/event.h"
#include "err.h"

#include <string.h>

/* registry.Event's fields, in the schema's order */
enum {
    F_EVENT_ID,
    F_COMMAND_ID,
    F_TENANT_ID,
    F_ENTITY_ID,
    F_REGION,
    F_TIME_MS,
    F_ACTOR,
    F_VERSION,
    F_BODY,
    EVENT_FIELDS
};

int event_from_json(codec_registry *codec, const json_t *ev, event *out)
{
    *out = (event){0};
    const codec_branch_fields as_fields[] = {
        {"DeviceRegistered", out->fields, DEVICE_REGISTERED_FIELDS},
        {"MetadataChanged", out->fields, METADATA_CHANGED_FIELDS},
    };
    codec_field f[EVENT_FIELDS];
    int err = codec_fields_of_json(codec, "registry.Event", ev, f, EVENT_FIELDS, as_fields,
                                   sizeof as_fields / sizeof as_fields[0]);
    if (err) return err;
    if (f[F_EVENT_ID].len > REG_UUID_STRLEN) {
        codec_fields_release(f, EVENT_FIELDS);
        return REG_EDECODE;
    }
    /* the strings are the JSON value's, NUL-terminated */
    memcpy(out->event_id, f[F_EVENT_ID].str, f[F_EVENT_ID].len + 1);
    out->command_id = f[F_COMMAND_ID].str;
    out->tenant_id = f[F_TENANT_ID].str;
    out->region = f[F_REGION].str;
    out->actor = f[F_ACTOR].str;
    out->actor_len = f[F_ACTOR].len;
    out->ids_valid =
        !reg_uuid_parse(out->tenant_id, &out->tenant) &&
        reg_uuid_take(f[F_ENTITY_ID].str, f[F_ENTITY_ID].len, out->entity_id, &out->entity);
    out->time_ms = f[F_TIME_MS].num;
    out->version = f[F_VERSION].num;
    out->kind = f[F_BODY].str;
    out->body = f[F_BODY].val; /* the reference is the event's now */
    out->nfields = f[F_BODY].sub ? f[F_BODY].nsub : 0;
    return 0;
}

static codec_field string_field(const char *s)
{
    return (codec_field){.kind = CODEC_FIELD_STRING, .str = s, .len = s ? strlen(s) : 0};
}

int event_encode(codec_registry *codec, const event *e, codec_buf *out)
{
    /* registry.Event's fields, in the schema's order */
    const codec_field fields[EVENT_FIELDS] = {
        string_field(e->event_id),
        string_field(e->command_id),
        string_field(e->tenant_id),
        string_field(e->entity_id),
        string_field(e->region),
        {.kind = CODEC_FIELD_LONG, .num = e->time_ms},
        {.kind = CODEC_FIELD_STRING, .str = e->actor, .len = e->actor_len},
        {.kind = CODEC_FIELD_LONG, .num = e->version},
        {.kind = CODEC_FIELD_BRANCH,
         .str = e->kind,
         .val = e->body,
         .sub = e->nfields ? (codec_field *)e->fields : NULL,
         .nsub = e->nfields},
    };
    return codec_encode_fields(codec, "registry.Event", fields, EVENT_FIELDS, out);
}

void event_clear(event *e)
{
    json_decref(e->body);
    e->body = NULL;
    codec_fields_release(e->fields, e->nfields);
    e->nfields = 0;
    json_decref(e->held);
    e->held = NULL;
}
