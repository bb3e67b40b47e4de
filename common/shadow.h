/*
 * shadow.h - the device shadow document and its rules (API.md, "Shadow semantics"; AWS IoT Device
 * Shadow's semantics): checking an update, the deep merge, the delta, per-leaf metadata
 * timestamps and the size/depth limits.
 *
 * Pure: no I/O, no clock, no logging. The projector uses these to decide and apply shadow
 * updates (the same functions on the same input give the same document on every replay), the
 * front ends to parse requests and render documents. All JSON values are jansson values.
 *
 * A shadow's state is two JSON objects, `desired` and `reported`. Its `metadata` mirrors their
 * shape: {"desired": {...}, "reported": {...}} where every leaf of the state (a scalar or an
 * array) has {"timestamp": <seconds since the epoch>} at the same path, as AWS does.
 */
#ifndef REG_SHADOW_H
#define REG_SHADOW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct shadow_limits {
    size_t max_bytes;        /* desired + reported after the merge, compact JSON; default 8192 */
    int max_depth;           /* levels of a state section; default 6 */
    size_t max_client_token; /* bytes; default 64 */
} shadow_limits;

/* Fills the fields of l that are 0 with the defaults. */
void shadow_limits_default(shadow_limits *l);

/* A parsed update request: what a device's MQTT `shadow/update` message or an HTTP body asks.
 * The json_t pointers are borrowed from the request they were parsed from. */
typedef struct shadow_update {
    const json_t *desired;    /* NULL: absent; a JSON null: clear the whole section; an object */
    const json_t *reported;   /* likewise */
    int64_t version;          /* -1 when absent (last write wins) */
    const char *client_token; /* NULL when absent */
} shadow_update;

/* Checks one state patch (the value of `desired` or `reported` in a request): an object (or JSON
 * null, which clears the section), at most l->max_depth levels deep ({"a":1} is one level,
 * {"a":{"b":1}} two; an array is a level too), no null inside an array (at any depth). Returns 0,
 * or REG_EINVAL with *why (static storage) naming what is wrong. */
int shadow_check_patch(const json_t *patch, const shadow_limits *l, const char **why);

/* Parses a device's MQTT update message {"state": {"desired"?, "reported"?}, "version"?,
 * "clientToken"?}: `state` must be an object holding only `desired` and/or `reported` (at least
 * one), each passing shadow_check_patch; `version` a non-negative integer; `clientToken` a string
 * of at most l->max_client_token bytes; no other members. Fills *out (borrowing from msg).
 * 0, or REG_EINVAL with *why (a 400: the size limit is the projector's, after the merge). */
int shadow_parse_mqtt_update(const json_t *msg, const shadow_limits *l, shadow_update *out,
                             const char **why);

/* Parses an HTTP body {"<section>": {...}, "version"?, "client_token"?} where section is
 * "desired" (operators) or "reported" (devices); the section is required; no other members.
 * Same checks as above. 0, or REG_EINVAL with *why. */
int shadow_parse_http_update(const json_t *body, const char *section, const shadow_limits *l,
                             shadow_update *out, const char **why);

/* Deep-merges patch into the section *state (an object, replaced by a new one when patch is JSON
 * null: the section is cleared) and its metadata section *meta (same shape rules), stamping every
 * leaf the patch writes with `timestamp`. Rules: a key whose patch value is null is deleted (with
 * its metadata); an object merges recursively into an object (replacing a non-object); a scalar
 * or an array replaces whatever was there (arrays are values). An object left empty by
 * deletions is removed from its parent. *state and *meta are owned by the caller before and
 * after (they may be replaced; NULL reads as an empty object). A NULL patch writes nothing.
 * 0, REG_EINVAL (a patch neither an object nor null: not checked) or REG_ENOMEM (both as they
 * were). */
int shadow_merge(json_t **state, json_t **meta, const json_t *patch, int64_t timestamp);

/* The delta: every key of desired that is absent from reported or differs from it, recursively,
 * with its path from the root; an object in desired against a non-object in reported appears
 * whole; arrays that differ appear whole; keys only in reported never appear. Returns a new
 * object (the caller owns it), empty when nothing differs; NULL only when out of memory. */
json_t *shadow_delta(const json_t *desired, const json_t *reported);

/* The metadata of the leaves present in `shape` (a state section or a delta): the same paths
 * taken from meta. For the delta message's and accepted message's "metadata". New object. */
json_t *shadow_meta_of(const json_t *meta, const json_t *shape);

/* The size the limit counts: compact JSON bytes of desired plus those of reported as jansson
 * writes them (0.1 counts as 0.10000000000000001: deterministic, not the client's bytes). */
size_t shadow_state_size(const json_t *desired, const json_t *reported);

#endif
