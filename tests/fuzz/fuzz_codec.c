/*
 * fuzz_codec.c - libFuzzer harness for codec_decode (schemas/codec.c).
 *
 * Every input is decoded as a "registry.Command" and as a "registry.Event" with the registry of
 * embedded schemas, first as it is, then as an Avro body behind the single-object header of
 * each known schema (so that mutations of the body are not wasted on the fingerprint), one of
 * them an older Event version, which sends the body through schema resolution. The codec must
 * never crash, leak or read out of bounds, must fail only with the errors of its contract, and
 * whatever it accepts must encode again and decode back to the same value. The codec's own
 * walks are held to avro-c's generic values: both encoders must write the same bytes, and both
 * decoders must agree on every input in the canonical encoding. codec_decode_fields (the
 * projector's commands and events, with their hot bodies as fields or not) must accept exactly
 * what codec_decode accepts, with the same fields, codec_fields_of_json must make the same fields
 * of the value, and codec_encode_fields must write them back as codec_encode writes the value. The
 * seeds in corpus_codec/ are valid records written by the unit test
 * (CODEC_CORPUS_DIR=tests/fuzz/corpus_codec /path/to/test_codec).
 *
 * Not part of the CMake build (it needs clang's libFuzzer). Build and run from the repository
 * root, e.g.:
 *   cmake -DOUT=/tmp/fz/schemas_embedded.c -DSRC=schemas -P schemas/embed.cmake
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -I. -Icommon schemas/codec.c common/err.c /tmp/fz/schemas_embedded.c \
 *     tests/fuzz/fuzz_codec.c $(pkg-config --cflags --libs avro-c jansson) -lm -o /tmp/fz/fuzz
 *   mkdir -p /tmp/fz/corpus && /tmp/fz/fuzz -max_total_time=60 /tmp/fz/corpus \
 *     tests/fuzz/corpus_codec
 */
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schemas/codec.h"
#include "schemas/schemas_embedded.h"
#include "err.h"
#include "tests/fuzz/fuzz_check.h"

/* avro-c places every generic value 4 bytes into its allocation (after a reference count), so
 * the pointers those values hold to their strings are misaligned and invisible to LeakSanitizer,
 * which then reports the registry's live, reused buffers as leaks once a run checks for leaks.
 * Those reports are suppressed; leaks of this codec's own allocations (jansson values, schema
 * trees) are still caught, and a real avro-c leak would show as growth instead. */
const char *__lsan_default_suppressions(void)
{
    return "leak:libavro.so\n";
}

/* An older Event as the evolution rules allow it: fewer defaulted fields, one field since
 * removed, fewer body branches and enum symbols, an int since widened to long. */
static const char old_event[] =
    "{\"type\":\"record\",\"name\":\"Event\",\"namespace\":\"registry\",\"fields\":["
    "{\"name\":\"event_id\",\"type\":\"string\"},{\"name\":\"command_id\",\"type\":\"string\"},"
    "{\"name\":\"tenant_id\",\"type\":\"string\"},{\"name\":\"entity_id\",\"type\":\"string\"},"
    "{\"name\":\"region\",\"type\":\"string\"},{\"name\":\"time_ms\",\"type\":\"long\"},"
    "{\"name\":\"actor\",\"type\":\"string\"},{\"name\":\"version\",\"type\":\"int\"},"
    "{\"name\":\"body\",\"type\":["
    "{\"type\":\"record\",\"name\":\"TenantCreated\",\"fields\":[{\"name\":\"name\","
    "\"type\":\"string\"},{\"name\":\"cert_validity_days\",\"type\":\"int\"}]},"
    "{\"type\":\"record\",\"name\":\"TokenCreated\",\"fields\":[{\"name\":\"token_id\","
    "\"type\":\"string\"},{\"name\":\"role\",\"type\":{\"type\":\"enum\",\"name\":\"TokenRole\","
    "\"symbols\":[\"operator\"]}},{\"name\":\"name\",\"type\":\"string\"},"
    "{\"name\":\"token_hash\",\"type\":\"string\"}]},"
    "{\"type\":\"record\",\"name\":\"TokenRevoked\",\"fields\":[{\"name\":\"token_id\","
    "\"type\":\"string\"}]},"
    "{\"type\":\"record\",\"name\":\"DeviceRegistered\",\"fields\":[{\"name\":\"serial_number\","
    "\"type\":\"string\"},{\"name\":\"device_type\",\"type\":\"string\"},"
    "{\"name\":\"hardware_revision\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"legacy\",\"type\":{\"type\":\"array\",\"items\":\"string\"}}]}]}]}";

/* One registry for the whole run, as a projector thread would keep one. */
static codec_registry *reg;
static uint8_t headers[3][10]; /* Command, Event, the older Event */

static void header_for(const char *schema, uint8_t *h)
{
    uint64_t fp;
    if (codec_fingerprint(schema, &fp)) abort();
    h[0] = 0xC3;
    h[1] = 0x01;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(fp >> (8 * i));
}

static const char *embedded(const char *file)
{
    for (const struct schemas_embedded *s = schemas_embedded; s->file; s++)
        if (strcmp(s->file, file) == 0) return s->json;
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int rc = codec_registry_new(&reg);
    if (!rc) rc = codec_registry_add(reg, old_event, 0);
    if (rc) {
        fprintf(stderr, "codec registry: %s\n", reg_strerror(rc));
        abort();
    }
    header_for(embedded("command.avsc"), headers[0]);
    header_for(embedded("event.avsc"), headers[1]);
    header_for(old_event, headers[2]);
    return 0;
}

/* Encodes v with both encoders, which must agree; *out gets the codec's bytes (caller frees). */
static void encode_both(const char *name, const json_t *v, codec_buf *out)
{
    codec_buf ref = {0};
    int rc = codec_encode(reg, name, v, out), rc_ref = codec_encode_avroc(reg, name, v, &ref);
    if (rc || rc_ref || out->len != ref.len || memcmp(out->data, ref.data, ref.len)) {
        fprintf(stderr, "a decoded value does not encode again, or the encoders differ: %d %d\n",
                rc, rc_ref);
        abort();
    }
    free(ref.data);
}

/* Whether v, encoded again, is exactly the input: the input was in the canonical encoding that
 * both encoders write (one block per array or map, shortest varints). */
static bool canonical(const char *name, const json_t *v, const uint8_t *data, size_t size)
{
    codec_buf b = {0};
    bool same = !codec_encode(reg, name, v, &b) && b.len == size && !memcmp(b.data, data, size);
    free(b.data);
    return same;
}

/* The bodies the projector decodes as fields, and room for them. */
static codec_field body[8];
static const codec_branch_fields bodies[] = {{"RegisterDevice", body, 6},
                                             {"PatchMetadata", body, 3},
                                             {"DeviceRegistered", body, 6},
                                             {"MetadataChanged", body, 1}};

/* Whether fields f encode to the bytes codec_encode writes for out. */
static bool encode_alike(const char *name, const codec_field *f, size_t n, const json_t *out)
{
    codec_buf direct = {0}, via_json = {0};
    bool same = !codec_encode_fields(reg, name, f, n, &direct) &&
                !codec_encode(reg, name, out, &via_json) && direct.len == via_json.len &&
                !memcmp(direct.data, via_json.data, direct.len);
    free(direct.data);
    free(via_json.data);
    return same;
}

/* codec_decode_fields on the input that codec_decode gave out for (rc), with the hot bodies as
 * JSON (nas 0) or as fields: the same verdict, and the same fields, which encode to the bytes
 * codec_encode writes for out; and codec_fields_of_json makes the same fields of out. */
static void check_fields(const char *name, size_t n, const uint8_t *data, size_t size, int rc,
                         const json_t *out, size_t nas)
{
    codec_field f[16];
    json_t *held = NULL;
    int rcf = codec_decode_fields(reg, name, data, size, f, n, bodies, nas, &held);
    CHECK((rcf == 0) == (rc == 0));
    if (rcf) {
        CHECK(!held);
        return;
    }
    CHECK(json_object_size(out) == n);
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)out, key, v)
    {
        if (json_is_string(v))
            CHECK(f[i].kind == CODEC_FIELD_STRING && f[i].len == json_string_length(v) &&
                  !memcmp(f[i].str, json_string_value(v), f[i].len));
        else if (json_is_integer(v))
            CHECK(f[i].kind == CODEC_FIELD_LONG && f[i].num == json_integer_value(v));
        else /* the body: a branch's name, its value compared by its bytes below */
            CHECK(f[i].kind == CODEC_FIELD_BRANCH &&
                  !strcmp(f[i].str, json_object_iter_key(json_object_iter(v))) &&
                  (f[i].sub ? !f[i].val
                            : json_equal(f[i].val, json_object_iter_value(json_object_iter(v)))));
        i++;
    }
    CHECK(encode_alike(name, f, n, out));
    codec_fields_release(f, n);
    json_decref(held);
    CHECK(!codec_fields_of_json(reg, name, out, f, n, bodies, nas));
    CHECK(encode_alike(name, f, n, out));
    codec_fields_release(f, n);
}

static void check(const char *name, const uint8_t *data, size_t size)
{
    json_t *out = NULL, *ref = NULL;
    int rc = codec_decode(reg, name, data, size, &out);
    int rc_ref = codec_decode_avroc(reg, name, data, size, &ref);
    if (rc != 0 && (out || (rc != REG_EDECODE && rc != REG_EUNKNOWN_SCHEMA && rc != REG_ESCHEMA))) {
        fprintf(stderr, "decode %s: unexpected result %d (%s)\n", name, rc, reg_strerror(rc));
        abort();
    }
    /* The decoders must agree on every canonical input. (avro-c reads some non-canonical ones
     * differently, for example an int varint longer than 5 bytes, or a map key with a NUL.) */
    if ((!rc && canonical(name, out, data, size)) ||
        (!rc_ref && canonical(name, ref, data, size))) {
        if (rc != rc_ref || !json_equal(out, ref)) {
            fprintf(stderr, "decode %s: the decoders differ on a canonical input (%d, %d)\n", name,
                    rc, rc_ref);
            abort();
        }
    }
    json_decref(ref);
    size_t nfields = strcmp(name, "registry.Command") ? 9 : 5;
    check_fields(name, nfields, data, size, rc, out, 0);
    check_fields(name, nfields, data, size, rc, out, sizeof bodies / sizeof bodies[0]);
    if (rc) return;
    codec_buf b = {0};
    encode_both(name, out, &b);
    json_t *again = NULL;
    rc = codec_decode(reg, name, b.data, b.len, &again);
    if (rc || !json_equal(out, again)) {
        fprintf(stderr, "re-encoded value does not decode to itself (%d)\n", rc);
        abort();
    }
    json_decref(again);
    json_decref(out);
    free(b.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check("registry.Command", data, size);
    check("registry.Event", data, size);
    uint8_t *rec = malloc(size + 10);
    if (!rec) return 0;
    memcpy(rec + 10, data, size);
    for (int i = 0; i < 3; i++) {
        memcpy(rec, headers[i], 10);
        check("registry.Command", rec, size + 10);
        check("registry.Event", rec, size + 10);
    }
    free(rec);
    return 0;
}
