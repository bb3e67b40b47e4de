/*
 * codec.h - Avro single-object encoding of the registry's log records.
 *
 * Every record in the commands and events logs is Avro single-object encoded: the two bytes
 * C3 01, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
 * Canonical Form, then the Avro binary body. Any Avro library can decode it with the schema files
 * in schemas/.
 *
 * The codec speaks JSON (jansson) on the C side so that the projector and the API handlers work
 * with one value model. The mapping between a jansson value and an Avro value is the natural one:
 * records are objects, maps are objects, arrays are arrays, string/bytes are strings, int/long
 * are integers, float/double are reals, boolean is true/false, enums are strings, null is null.
 * A union ["null", T] is null or the plain T value. Any other union (for example the body of a
 * command, a union of records) is an object with exactly one member whose name is the short name
 * of the branch's type, e.g. {"RegisterDevice": {...}}.
 *
 * Schema evolution: a registry knows every schema the project ever wrote (current ones and the
 * old versions kept under schemas/history/), by fingerprint. Decoding finds the writer schema by
 * the record's fingerprint, decodes with it, then resolves the value onto the reader schema (the
 * current one of that name): fields the writer lacked get the reader's default, fields the
 * reader lacks are dropped, union branches are matched by name. (avro-c's own resolver refuses a
 * reader field with a default that the writer lacks, hence this.)
 */
#ifndef REG_CODEC_H
#define REG_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

typedef struct codec_registry codec_registry;

/* A growable byte buffer; the codec owns nothing in it, the caller frees data with free(). */
typedef struct codec_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} codec_buf;

/* The Parsing Canonical Form of a schema given as JSON text (Avro specification, "Parsing
 * Canonical Form for Schemas"). On success *out is a malloc'd NUL-terminated string the caller
 * frees. Returns 0 or REG_ESCHEMA. */
int codec_canonical_form(const char *schema_json, char **out);

/* CRC-64-AVRO (the Rabin fingerprint of the Avro specification) of len bytes. */
uint64_t codec_crc64_avro(const void *data, size_t len);

/* The fingerprint of a schema: CRC-64-AVRO of its Parsing Canonical Form. 0 or REG_ESCHEMA. */
int codec_fingerprint(const char *schema_json, uint64_t *out);

/* A registry with every schema built into the binary (.avsc files in schemas/, schemas/history/),
 * the current version of each named schema as its reader schema. The caller owns *out and frees
 * it with codec_registry_free. A registry is immutable after creation and may be shared by
 * threads only if each thread does its own encode/decode calls serially (see below). */
int codec_registry_new(codec_registry **out);
void codec_registry_free(codec_registry *reg);

/* Adds a schema (JSON text). When current is non-zero it becomes the reader/writer schema for its
 * full name; otherwise it is only a known writer schema (an older version). Returns 0,
 * REG_ESCHEMA, or REG_EEXISTS when a different schema with the same fingerprint exists (never
 * expected). Used by codec_registry_new and by tests. */
int codec_registry_add(codec_registry *reg, const char *schema_json, int current);

/* Encodes value with the current schema whose full name is `name` (e.g. "registry.Command"),
 * appending the single-object encoding to out (out->data is realloc'd as needed; the caller owns
 * it). Returns 0, REG_ENOTFOUND (no such schema), REG_EINVAL (value does not match the schema;
 * nothing is appended) or REG_ENOMEM. Not thread-safe per registry: each thread that encodes
 * uses its own registry. */
int codec_encode(codec_registry *reg, const char *name, const json_t *value, codec_buf *out);

/* Decodes a single-object encoded record into a new JSON value resolved onto the current schema
 * named `name`. The caller owns *out (json_decref). Returns 0, REG_EDECODE (bad magic, truncated
 * or malformed body), REG_EUNKNOWN_SCHEMA (fingerprint not known), REG_ESCHEMA (writer cannot be
 * resolved onto the reader), REG_ENOMEM. Never crashes on any input. Same threading as encode. */
int codec_decode(codec_registry *reg, const char *name, const void *data, size_t len, json_t **out);

/* The same encode and decode done through avro-c's generic values (a value filled, then written;
 * a body read into a value, then converted), where codec_encode and codec_decode walk the bytes
 * themselves. The same contract and results: the reference the tests and the codec fuzzer hold
 * the fast path to. */
int codec_encode_avroc(codec_registry *reg, const char *name, const json_t *value, codec_buf *out);
int codec_decode_avroc(codec_registry *reg, const char *name, const void *data, size_t len,
                       json_t **out);

/* One field of a record for codec_encode_fields and codec_decode_fields: a string or a long as
 * C values, or a union's branch (named as the JSON mapping names it) with its JSON value. */
typedef struct codec_field {
    enum codec_field_kind { CODEC_FIELD_STRING, CODEC_FIELD_LONG, CODEC_FIELD_BRANCH } kind;
    const char *str; /* STRING: the value (len bytes, UTF-8, not NUL-terminated when decoded);
                      * BRANCH: the branch's name */
    size_t len;
    int64_t num; /* LONG */
    json_t *val; /* BRANCH: the branch's value (borrowed by encode; decode gives a reference) */
} codec_field;

/* Encodes the record named `name` (its current schema) from its n fields, one per field of the
 * schema, in its order, appending the single-object encoding to out: the bytes codec_encode
 * writes for the same record as JSON, without the JSON object (the projector's events, whose
 * envelope it holds as C values). REG_EINVAL when a field does not fit the schema's (nothing is
 * appended), REG_ENOTFOUND, REG_ENOMEM. Threading as codec_encode. */
int codec_encode_fields(codec_registry *reg, const char *name, const codec_field *fields, size_t n,
                        codec_buf *out);

/* Decodes a single-object encoded record named `name`, of n fields that are strings, longs (or
 * ints) and unions, into fields[0..n) in the schema's order: what codec_decode makes of it,
 * without the JSON object (the projector's commands, whose envelope it holds as C values).
 * Strings point into data, or, for a record written with an older schema (resolved as
 * codec_decode resolves it), into *held, which the caller then releases (json_decref) once done
 * with them; *held is NULL otherwise. Each BRANCH's val is a reference the caller releases.
 * Returns 0, codec_decode's REG_E*, or REG_EINVAL when the schema's record has other fields;
 * on failure nothing is held. Threading as codec_decode. */
int codec_decode_fields(codec_registry *reg, const char *name, const void *data, size_t len,
                        codec_field *fields, size_t n, json_t **held);

/* Releases the BRANCH values of n decoded fields (and zeroes them). */
void codec_fields_release(codec_field *fields, size_t n);

/* The fingerprint in the header of a single-object encoded record. 0 or REG_EDECODE. */
int codec_peek_fingerprint(const void *data, size_t len, uint64_t *out);

#endif
