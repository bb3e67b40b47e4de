/*
 * event.h - an event as the projector holds it from its decision to its apply: the registry.Event
 * record's envelope as C values (its ids parsed once), and its body as JSON, or, for the events a
 * fleet causes most (DeviceRegistered, MetadataChanged), as the C values of its fields. The
 * projector decides tens of thousands of events a second, and building each as JSON objects,
 * looking their members up again in apply, notify and the encoder, then freeing them, was a
 * seventh of deciding a command (callgrind). event_encode writes the Avro record straight from
 * it; an event read back from the log (a rebuild) becomes one with event_from_json.
 */
#ifndef REG_EVENT_H
#define REG_EVENT_H

#include "schemas/codec.h"
#include "ids.h"

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

/* The fields of the bodies held as C values, in their schemas' order. */
enum device_registered_field {
    REGISTERED_SERIAL,
    REGISTERED_TYPE,
    REGISTERED_HARDWARE, /* nullable */
    REGISTERED_FIRMWARE, /* nullable */
    REGISTERED_STATUS,
    REGISTERED_METADATA, /* a map of strings */
    DEVICE_REGISTERED_FIELDS
};
enum metadata_changed_field {
    CHANGED_CHANGES, /* a map of nullable strings: null deletes the key */
    METADATA_CHANGED_FIELDS
};
enum { EVENT_BODY_FIELDS_MAX = DEVICE_REGISTERED_FIELDS };

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
    json_t *body;     /* the branch's record, owned (one reference); NULL when held as fields */
    /* A DeviceRegistered or MetadataChanged body: its fields (the enums above), whose strings
     * are borrowed as the envelope's or from held, and whose map's pairs the event owns
     * (codec_fields_release frees them); nfields is 0 for any other. */
    codec_field fields[EVENT_BODY_FIELDS_MAX];
    size_t nfields;
    json_t *held; /* owned: what the fields' strings point into when not the command's, or NULL */
} event;

/* The event of a decoded registry.Event value (borrowed: ev must outlive *out, which holds a
 * reference to its body). The codec's REG_E* when ev is not one; then *out holds nothing. */
int event_from_json(codec_registry *codec, const json_t *ev, event *out);

/* Appends e's registry.Event record (Avro single-object encoding) to out. 0 or the codec's
 * REG_E*. */
int event_encode(codec_registry *codec, const event *e, codec_buf *out);

/* Releases e's body. */
void event_clear(event *e);

#endif
