/*
 * command.h - a command as the projector decides it: the registry.Command record's envelope as C
 * values (its ids parsed once), its body as JSON. Decoded straight from the log's bytes
 * (codec_decode_fields): the envelope's JSON object, its lookups in every decider and its
 * freeing were an eighth of deciding one (callgrind). Tests make one from JSON.
 */
#ifndef REG_COMMAND_H
#define REG_COMMAND_H

#include "ids.h"
#include "schemas/codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

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
    json_t *body;     /* the branch's record; owned */
    json_t *held;     /* owned: what the borrowed members point into, or NULL */
} command;

/* The command in a registry.Command record's bytes (borrowed: see actor). The codec's REG_E*
 * when it is not one; then *out holds nothing. */
int command_decode(codec_registry *codec, const void *data, size_t len, command *out);

/* The command of a registry.Command JSON value (a reference is held). REG_EDECODE when it is not
 * one. */
int command_from_json(json_t *cmd, command *out);

/* The command's tenant in *out: 0, or REG_EINVAL when its tenant_id is not an id. */
int command_tenant(const command *c, reg_uuid *out);

/* Releases what c holds. */
void command_clear(command *c);

#endif
