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

/* One entry of a map field: its key and value, len bytes each (UTF-8, not NUL-terminated when
 * decoded); val is NULL for a null, in a map whose values are ["null", "string"]. */
typedef struct codec_pair {
    const char *key, *val;
    size_t key_len, val_len;
} codec_pair;

/* One field of a record for codec_encode_fields and codec_decode_fields, as C values: a string
 * (also of ["null", "string"]), a long or int, a boolean, a map of strings (or of nullable
 * strings), or a union's branch (named as the JSON mapping names it), either as its JSON value
 * or, for a record branch, as that record's own fields. */
typedef struct codec_field {
    enum codec_field_kind {
        CODEC_FIELD_STRING,
        CODEC_FIELD_LONG,
        CODEC_FIELD_BOOL,
        CODEC_FIELD_MAP,
        CODEC_FIELD_BRANCH
    } kind;
    const char *str; /* STRING: the value (len bytes, UTF-8, not NUL-terminated when decoded), NULL
                      * for a nullable string's null; BRANCH: the branch's name */
    size_t len;
    int64_t num;             /* LONG; BOOL: 0 or 1 */
    json_t *val;             /* BRANCH as JSON (borrowed by encode; decode gives a reference) */
    struct codec_field *sub; /* BRANCH as fields: its record's nsub fields, in its schema's order
                              * (encode reads them; decode fills the caller's, see below) */
    size_t nsub;
    codec_pair *pairs; /* MAP: npairs entries (borrowed by encode; decode allocates the array) */
    size_t npairs;
} codec_field;

/* Encodes the record named `name` (its current schema) from its n fields, one per field of the
 * schema, in its order, appending the single-object encoding to out: the bytes codec_encode
 * writes for the same record as JSON, without the JSON object (the projector's events, which it
 * holds as C values). REG_EINVAL when a field does not fit the schema's (nothing is appended),
 * REG_ENOTFOUND, REG_ENOMEM. Threading as codec_encode. */
int codec_encode_fields(codec_registry *reg, const char *name, const codec_field *fields, size_t n,
                        codec_buf *out);

/* A record branch that codec_decode_fields gives as its record's fields (into fields[0..n), n
 * the record's field count) rather than as JSON: the bodies the projector decides most. */
typedef struct codec_branch_fields {
    const char *name; /* the branch's name, e.g. "RegisterDevice" */
    codec_field *fields;
    size_t n;
} codec_branch_fields;

/* Decodes a single-object encoded record named `name` into its n fields, fields[0..n) in the
 * schema's order: what codec_decode makes of it, without the JSON object (the projector's
 * commands and events). A union's branch named in as_fields[0..nas) comes as its record's fields
 * (BRANCH with sub), any other as JSON (BRANCH with val). A map repeating a key has it once, at
 * its first place with its last value, as in codec_decode's object. Strings point into data, or,
 * for a record written with an older schema (resolved as codec_decode resolves it), into *held,
 * which the caller then releases (json_decref) once done with them; *held is NULL otherwise.
 * Release the fields with codec_fields_release. Returns 0, codec_decode's REG_E*, or REG_EINVAL
 * when the schema's record has other fields, or a branch of as_fields has a field of another
 * kind; on failure nothing is held. Threading as codec_decode. */
int codec_decode_fields(codec_registry *reg, const char *name, const void *data, size_t len,
                        codec_field *fields, size_t n, const codec_branch_fields *as_fields,
                        size_t nas, json_t **held);

/* The n fields of value, a record named `name` in the codec's JSON mapping of its current
 * schema (as codec_decode gives it), as codec_decode_fields gives them (as_fields alike), the
 * strings borrowed from value. REG_EINVAL when value is not such a record, REG_ENOTFOUND,
 * REG_ENOMEM; on failure nothing is held. */
int codec_fields_of_json(codec_registry *reg, const char *name, const json_t *value,
                         codec_field *fields, size_t n, const codec_branch_fields *as_fields,
                         size_t nas);

/* Releases what n decoded fields hold (a branch's JSON value, a map's pairs, the fields of a
 * branch decoded as fields) and zeroes them. */
void codec_fields_release(codec_field *fields, size_t n);

/* The fingerprint in the header of a single-object encoded record. 0 or REG_EDECODE. */
int codec_peek_fingerprint(const void *data, size_t len, uint64_t *out);

#endif
