/*
 * fuzz_device_text.c - libFuzzer harness for reading and splicing a device record's text
 * (projector/device_text.c), which a metadata change runs over the stored bytes.
 *
 * The input is the record's text. Checked: parsing never crashes or reads past the bytes; when it
 * succeeds, the values it found lie in order inside the text, and the text spliced with another
 * version and metadata parses again to that version and metadata, with every byte outside the
 * two values unchanged; and when the text is JSON (jsonfast_load), so is the spliced text, with
 * the same members but those two.
 */
#include "jsonfast.h"
#include "projector/device_text.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    device_text d;
    if (device_text_parse(text, size, &d)) return 0;
    CHECK(d.version_at < d.version_end && d.version_end <= size);
    CHECK(d.metadata_at < d.metadata_end && d.metadata_end <= size);
    CHECK(d.version_end <= d.metadata_at || d.metadata_end <= d.version_at);

    static const char metadata[] = "{\"k\":\"v\\\"{\"}";
    int64_t version = d.version + 1;
    size_t len = 0;
    device_text parts;
    char *out =
        device_text_splice(text, size, &d, version, metadata, sizeof metadata - 1, &len, &parts);
    CHECK(out);
    device_text e;
    CHECK(device_text_parse(out, len, &e) == 0);
    /* the parts the splice hands back are the ones the new text has */
    CHECK(parts.version_at == e.version_at && parts.version_end == e.version_end &&
          parts.metadata_at == e.metadata_at && parts.metadata_end == e.metadata_end &&
          parts.version == e.version && parts.decommissioned == e.decommissioned);
    CHECK(e.version == version);
    CHECK(e.metadata_end - e.metadata_at == sizeof metadata - 1);
    CHECK(!memcmp(out + e.metadata_at, metadata, sizeof metadata - 1));
    CHECK(e.decommissioned == d.decommissioned);
    /* Outside the two values, the same bytes. */
    size_t first_at = d.version_at < d.metadata_at ? d.version_at : d.metadata_at;
    CHECK(!memcmp(out, text, first_at));
    size_t last_end = d.version_end > d.metadata_end ? d.version_end : d.metadata_end,
           out_last_end = e.version_end > e.metadata_end ? e.version_end : e.metadata_end;
    CHECK(size - last_end == len - out_last_end);
    CHECK(!memcmp(out + out_last_end, text + last_end, size - last_end));

    json_t *before = jsonfast_load(text, size, JSONFAST_ALLOW_NUL);
    if (before) {
        json_t *after = jsonfast_load(out, len, JSONFAST_ALLOW_NUL);
        CHECK(json_is_object(after));
        CHECK(json_integer_value(json_object_get(after, "version")) == version);
        json_object_del(before, "version");
        json_object_del(before, "metadata");
        json_object_del(after, "version");
        json_object_del(after, "metadata");
        CHECK(json_equal(before, after));
        json_decref(after);
    }
    json_decref(before);
    free(out);
    return 0;
}
