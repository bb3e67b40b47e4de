/* command.c - the projector's commands, from registry.Command (command.h). */
#include "projector/command.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

/* registry.Command's fields, in the schema's order */
enum { F_COMMAND_ID, F_TENANT_ID, F_TIME_MS, F_ACTOR, F_BODY, COMMAND_FIELDS };

int command_decode(codec_registry *codec, const void *data, size_t len, command *out)
{
    *out = (command){0};
    const codec_branch_fields as_fields[] = {
        {"RegisterDevice", out->fields, REGISTER_DEVICE_FIELDS},
        {"PatchMetadata", out->fields, PATCH_METADATA_FIELDS},
    };
    codec_field f[COMMAND_FIELDS];
    int err = codec_decode_fields(codec, "registry.Command", data, len, f, COMMAND_FIELDS,
                                  as_fields, sizeof as_fields / sizeof as_fields[0], &out->held);
    if (err) return err;
    out->id_valid =
        reg_uuid_take(f[F_COMMAND_ID].str, f[F_COMMAND_ID].len, out->command_id, &out->id);
    out->tenant_valid =
        reg_uuid_take(f[F_TENANT_ID].str, f[F_TENANT_ID].len, out->tenant_id, &out->tenant);
    out->time_ms = f[F_TIME_MS].num;
    out->actor = f[F_ACTOR].str;
    out->actor_len = f[F_ACTOR].len;
    out->kind = f[F_BODY].str;
    out->body = f[F_BODY].val; /* the reference is the command's now */
    out->nfields = f[F_BODY].sub ? f[F_BODY].nsub : 0;
    size_t id_len = 0;
    const char *id = command_device_id(out, &id_len);
    char text[REG_UUID_STRLEN + 1];
    out->device_valid = id && reg_uuid_take(id, id_len, text, &out->device);
    return 0;
}

int command_from_json(codec_registry *codec, const json_t *cmd, command *out)
{
    codec_buf b = {0};
    int err = codec_encode(codec, "registry.Command", cmd, &b);
    if (!err) err = command_decode(codec, b.data, b.len, out);
    if (err)
        free(b.data);
    else
        out->bytes = b.data;
    return err;
}

int command_tenant(const command *c, reg_uuid *out)
{
    if (!c->tenant_valid) return REG_EINVAL;
    *out = c->tenant;
    return 0;
}

const char *command_device_id(const command *c, size_t *len)
{
    if (c->nfields) { /* device_id is the first field of each body held as fields */
        *len = c->fields[0].len;
        return c->fields[0].str;
    }
    const json_t *id = json_object_get(c->body, "device_id");
    *len = json_string_length(id);
    return json_string_value(id);
}

int command_device(const command *c, reg_uuid *out)
{
    if (!c->device_valid) return REG_EINVAL;
    *out = c->device;
    return 0;
}

void command_clear(command *c)
{
    codec_fields_release(c->fields, c->nfields);
    json_decref(c->body);
    json_decref(c->held);
    free(c->bytes);
    *c = (command){0};
}
