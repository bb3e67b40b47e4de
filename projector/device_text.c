/*
 * device_text.c - a device record's compact text read and changed without decoding it
 * (device_text.h): one pass over its top-level members, each value skipped whole (strings with
 * their escapes, containers by depth), and a splice of two values.
 */
#include "projector/device_text.h"
#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The end of the JSON value at json[at] (a string, an object or array, or a scalar up to the
 * next ',', '}' or ']'), or 0 when the text ends first. Strings are skipped whole. */
static size_t value_end(const char *json, size_t len, size_t at)
{
    int depth = 0;
    for (size_t i = at; i < len; i++) {
        char c = json[i];
        if (c == '"') {
            for (i++; i < len && json[i] != '"'; i++)
                if (json[i] == '\\') i++;
            if (i >= len) return 0;
            if (depth == 0) return i + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return i > at ? i : 0; /* a scalar's end */
            if (--depth == 0) return i + 1;
        } else if (c == ',' && depth == 0) {
            return i > at ? i : 0;
        }
    }
    return 0;
}

int device_text_parse(const char *j, size_t len, device_text *d)
{
    *d = (device_text){0};
    size_t at = 1, status_at = 0, status_end = 0;
    bool has_version = false, has_metadata = false;
    if (len < 2 || j[0] != '{') return REG_EDECODE;
    while (at < len && j[at] == '"') {
        size_t key_end = value_end(j, len, at);
        if (!key_end || key_end >= len || j[key_end] != ':') return REG_EDECODE;
        size_t v = key_end + 1, e = value_end(j, len, v);
        if (!e) return REG_EDECODE;
        /* Keys are compared as written: one written with an escape (which could spell one of these
         * names) or one of these names twice is not the form records are stored in. */
        const char *key = j + at + 1;
        size_t klen = key_end - at - 2;
        if (memchr(key, '\\', klen)) return REG_EDECODE;
        bool again = false;
        if (klen == 7 && !memcmp(key, "version", 7)) {
            again = has_version;
            d->version_at = v, d->version_end = e, has_version = true;
        } else if (klen == 8 && !memcmp(key, "metadata", 8)) {
            again = has_metadata;
            d->metadata_at = v, d->metadata_end = e, has_metadata = true;
        } else if (klen == 6 && !memcmp(key, "status", 6)) {
            again = status_end != 0;
            status_at = v, status_end = e;
        }
        if (again) return REG_EDECODE;
        if (e < len && j[e] == '}') break;
        if (e >= len || j[e] != ',') return REG_EDECODE;
        at = e + 1;
    }
    if (!has_version || !has_metadata) return REG_EDECODE;
    char digits[24];
    size_t n = d->version_end - d->version_at;
    if (n == 0 || n >= sizeof digits) return REG_EDECODE;
    memcpy(digits, j + d->version_at, n);
    digits[n] = 0;
    char *end = NULL;
    errno = 0;
    long long version = strtoll(digits, &end, 10);
    if (*end || errno || digits[0] == '+') return REG_EDECODE; /* an integer, as JSON writes it */
    d->version = version;
    d->decommissioned =
        status_end - status_at == 16 && !memcmp(j + status_at, "\"decommissioned\"", 16);
    return 0;
}

char *device_text_splice(const char *text, size_t len, const device_text *d, int64_t version,
                         const char *metadata, size_t mlen, size_t *out_len)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)version);
    /* The two values replaced in the order they come. */
    size_t at[2] = {d->version_at, d->metadata_at}, end[2] = {d->version_end, d->metadata_end},
           with_len[2] = {(size_t)n, mlen};
    const char *with[2] = {digits, metadata};
    int first = d->metadata_at < d->version_at;
    size_t total = len - (end[0] - at[0]) - (end[1] - at[1]) + with_len[0] + with_len[1];
    char *out = malloc(total ? total : 1), *o = out;
    if (!out) return NULL;
    size_t from = 0;
    for (int k = 0; k < 2; k++) {
        int i = k ^ first;
        memcpy(o, text + from, at[i] - from);
        o += at[i] - from;
        memcpy(o, with[i], with_len[i]);
        o += with_len[i];
        from = end[i];
    }
    memcpy(o, text + from, len - from);
    *out_len = total;
    return out;
}
