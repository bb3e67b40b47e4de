/*
 * device_text.h - a device record's stored text read and changed without decoding it: the values
 * of its top-level version, status and metadata found in one pass, and the text with another
 * version and metadata spliced in. A metadata change (records.h, record_device_meta) decoded,
 * rendered and freed the whole record, a third of its cost; this way only the metadata object is
 * decoded. The text must be compact (as records are stored: no spaces between tokens).
 */
#ifndef REG_DEVICE_TEXT_H
#define REG_DEVICE_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct device_text {
    size_t version_at, version_end;   /* the version's digits in the text */
    size_t metadata_at, metadata_end; /* the metadata value (an object, unless malformed) */
    int64_t version;
    bool decommissioned; /* the status is "decommissioned" */
} device_text;

/* Finds the members in the len bytes of text. 0, or REG_EDECODE when the text is not a compact
 * JSON object with a top-level integer version and a metadata member. */
int device_text_parse(const char *text, size_t len, device_text *out);

/* Where the value of the top-level member `name` is in the text (compact, as device_text_parse
 * reads it). 0, REG_ENOTFOUND, or REG_EDECODE when the text is not in that form (a key written
 * with an escape included). */
int device_text_member(const char *text, size_t len, const char *name, size_t *at, size_t *end);

/* The text (len bytes, as parsed into d) with `version` and the mlen bytes of metadata in place
 * of its own: malloc'd, *out_len its length; NULL when out of memory. *out_parts (when not NULL)
 * gets what device_text_parse finds in the new text. */
char *device_text_splice(const char *text, size_t len, const device_text *d, int64_t version,
                         const char *metadata, size_t mlen, size_t *out_len,
                         device_text *out_parts);

#endif
