/*
 * event.h - an event as the projector holds it from its decision to its apply: the registry.Event
 * record's envelope as C values (its ids parsed once), its body as JSON. The projector decides
 * tens of thousands of events a second, and building each envelope as a JSON object, looking its
 * members up again in apply, notify and the encoder, then freeing it, was a seventh of deciding a
 * command (callgrind). event_encode writes the Avro record straight from it; an event read back
 * from the log (a rebuild) becomes one with event_from_json, which borrows from the decoded value.
 */
#ifndef REG_EVENT_H
#define REG_EVENT_H

#include "schemas/codec.h"
#include "ids.h"

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

typedef struct event {
    char event_id[REG_UUID_STRLEN + 1];
    char entity_id[REG_UUID_STRLEN + 1]; /* the tenant, token, device... the event is about */
    reg_uuid tenant, entity;             /* tenant_id and entity_id parsed */
    bool ids_valid;                      /* both parsed: else apply refuses the event */
    /* Borrowed from the command (or the decoded event) and the configuration, which outlive the
     * event. */
    const char *command_id, *tenant_id, *region;
    const char *actor; /* actor_len bytes, not NUL-terminated */
    size_t actor_len;
    int64_t time_ms;
    int64_t version;  /* the entity's version after this event */
    const char *kind; /* the body's branch, e.g. "DeviceRegistered" (borrowed) */
    json_t *body;     /* the branch's record; owned (one reference) */
} event;

/* The event of a decoded registry.Event value (borrowed: ev must outlive *out, which holds a
 * reference to its body). REG_EDECODE when ev is not one; then *out holds nothing. */
int event_from_json(const json_t *ev, event *out);

/* Appends e's registry.Event record (Avro single-object encoding) to out. 0 or the codec's
 * REG_E*. */
int event_encode(codec_registry *codec, const event *e, codec_buf *out);

/* The registry.Event JSON value of e (new reference; NULL when out of memory): the form the
 * codec decodes it to. */
json_t *event_to_json(const event *e);

/* Releases e's body. */
void event_clear(event *e);

#endif
