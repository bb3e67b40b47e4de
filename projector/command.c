/* command.c - the projector's commands, from registry.Command (command.h). */
#include "projector/command.h"
#include "err.h"

#include <string.h>

/* registry.Command's fields, in the schema's order */
enum { F_COMMAND_ID, F_TENANT_ID, F_TIME_MS, F_ACTOR, F_BODY, COMMAND_FIELDS };

int command_decode(codec_registry *codec, const void *data, size_t len, command *out)
{
    *out = (command){0};
    codec_field f[COMMAND_FIELDS];
    int err =
        codec_decode_fields(codec, "registry.Command", data, len, f, COMMAND_FIELDS, &out->held);
    if (err) return err;
    out->id_valid =
        reg_uuid_take(f[F_COMMAND_ID].str, f[F_COMMAND_ID].len, out->command_id, &out->id);
    out->tenant_valid =
        reg_uuid_take(f[F_TENANT_ID].str, f[F_TENANT_ID].len, out->tenant_id, &out->tenant);
    out->time_ms = f[F_TIME_MS].num;
    out->actor = f[F_ACTOR].str;
    out->actor_len = f[F_ACTOR].len;
    out->kind = f[F_BODY].str;
    out->body = f[F_BODY].val;
    return 0;
}

int command_from_json(json_t *cmd, command *out)
{
    *out = (command){0};
    const char *kind = NULL;
    json_t *b = NULL;
    json_object_foreach(json_object_get(cmd, "body"), kind, b) break;
    const json_t *cid = json_object_get(cmd, "command_id"),
                 *tid = json_object_get(cmd, "tenant_id"), *actor = json_object_get(cmd, "actor");
    if (!kind || !json_is_object(b) || !json_is_string(cid) || !json_is_string(tid) ||
        !json_is_string(actor) || !json_is_integer(json_object_get(cmd, "time_ms")))
        return REG_EDECODE;
    out->id_valid =
        reg_uuid_take(json_string_value(cid), json_string_length(cid), out->command_id, &out->id);
    out->tenant_valid = reg_uuid_take(json_string_value(tid), json_string_length(tid),
                                      out->tenant_id, &out->tenant);
    out->time_ms = json_integer_value(json_object_get(cmd, "time_ms"));
    out->actor = json_string_value(actor);
    out->actor_len = json_string_length(actor);
    out->kind = kind;
    out->body = json_incref(b);
    out->held = json_incref(cmd);
    return 0;
}

int command_tenant(const command *c, reg_uuid *out)
{
    if (!c->tenant_valid) return REG_EINVAL;
    *out = c->tenant;
    return 0;
}

void command_clear(command *c)
{
    json_decref(c->body);
    json_decref(c->held);
    *c = (command){0};
}
