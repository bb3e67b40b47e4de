/*
 * command.h - a command as the projector decides it: the registry.Command record's envelope as C
 * values (its ids parsed once), and its body as JSON, or, for the commands a fleet sends most
 * (RegisterDevice, PatchMetadata), as the C values of its fields. Decoded straight from the log's
 * bytes (codec_decode_fields): building the envelope and those bodies as JSON objects, looking
 * their members up by name in every decider and freeing them were a third of deciding one
 * (callgrind). Tests make one from JSON.
 */
#ifndef REG_COMMAND_H
#define REG_COMMAND_H

#include "ids.h"
#include "schemas/codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* The fields of the bodies held as C values, in their schemas' order: device_id comes first in
 * each. */
enum register_device_field {
    REGISTER_DEVICE_ID,
    REGISTER_SERIAL,
    REGISTER_TYPE,
    REGISTER_HARDWARE, /* nullable */
    REGISTER_FIRMWARE, /* nullable */
    REGISTER_METADATA, /* a map of strings */
    REGISTER_DEVICE_FIELDS
};
enum patch_metadata_field {
    PATCH_DEVICE_ID,
    PATCH_CHANGES,          /* a map of nullable strings: null deletes the key */
    PATCH_REQUIRE_EXISTING, /* a boolean */
    PATCH_METADATA_FIELDS
};
enum { COMMAND_BODY_FIELDS_MAX = REGISTER_DEVICE_FIELDS };

typedef struct command {
    char command_id[REG_UUID_STRLEN + 1]; /* "" when the record's is not an id */
    char tenant_id[REG_UUID_STRLEN + 1];  /* the same */
    reg_uuid id, tenant;
    bool id_valid, tenant_valid;
    int64_t time_ms;
    const char *actor; /* actor_len bytes, not NUL-terminated: borrowed from the record's bytes
                        * (which the caller keeps while it decides) or from held */
    size_t actor_len;
    const char *kind; /* the body's branch, e.g. "RegisterDevice" (borrowed: the codec's schema,
                       * or held) */
    json_t *body;     /* the branch's record, owned; NULL when held as fields */
    /* A RegisterDevice or PatchMetadata body: its fields (the enums above; strings borrowed as
     * actor's); nfields is 0 for any other. */
    codec_field fields[COMMAND_BODY_FIELDS_MAX];
    size_t nfields;
    reg_uuid device;   /* the body's device_id parsed, where device_valid */
    bool device_valid; /* parsed once: the prefetch, the decider and the outcome each need it */
    json_t *held;      /* owned: what the borrowed members point into, or NULL */
    void *bytes;       /* owned: the record's bytes, when the command made its own (from JSON) */
} command;

/* The command in a registry.Command record's bytes (borrowed: see actor). The codec's REG_E*
 * when it is not one; then *out holds nothing. */
int command_decode(codec_registry *codec, const void *data, size_t len, command *out);

/* The command of a registry.Command JSON value, encoded and decoded as the log's are (the
 * command holds its bytes). The codec's REG_E* when it is not one. */
int command_from_json(codec_registry *codec, const json_t *cmd, command *out);

/* The command's tenant in *out: 0, or REG_EINVAL when its tenant_id is not an id. */
int command_tenant(const command *c, reg_uuid *out);

/* The device_id member of the command's body (as it is, *len bytes, not NUL-terminated), or
 * NULL when it has none that is a string. */
const char *command_device_id(const command *c, size_t *len);

/* That device id parsed into *out: 0, or REG_EINVAL when there is none or it is not an id. */
int command_device(const command *c, reg_uuid *out);

/* Releases what c holds. */
void command_clear(command *c);

#endif
