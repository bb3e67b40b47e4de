/*
 * device_text.c - a device record's compact text read and changed without decoding it
 * (device_text.h): one pass over its top-level members, each value skipped whole (strings with
 * their escapes, containers by depth), and a splice of two values.
 */
#include "projector/device_text.h"
#include "err.h"
#include "jsonfast.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The index of the quote that closes the string whose opening quote is json[open], or len when
 * the text ends first. Most of a record is strings (ids, times, metadata), and finding each
 * quote with memchr, then counting the backslashes before it, took the parse from a byte-by-byte
 * loop's 2 ns a byte to a fraction of that: an odd run of backslashes escapes the quote. */
static size_t string_close(const char *json, size_t len, size_t open)
{
    size_t from = open + 1;
    for (;;) {
        const char *q = memchr(json + from, '"', len - from);
        if (!q) return len;
        size_t at = (size_t)(q - json), slashes = 0;
        while (at - slashes > open + 1 && json[at - slashes - 1] == '\\')
            slashes++;
        if (slashes % 2 == 0) return at;
        from = at + 1;
    }
}

/* The end of the JSON value at json[at] (a string, an object or array, or a scalar up to the
 * next ',', '}' or ']'), or 0 when the text ends first. Strings are skipped whole. */
static size_t value_end(const char *json, size_t len, size_t at)
{
    int depth = 0;
    for (size_t i = at; i < len; i++) {
        char c = json[i];
        if (c == '"') {
            i = string_close(json, len, i);
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

/* One top-level member of a compact object text: its key as written (quotes off), and where its
 * value starts and ends. */
struct member {
    const char *key;
    size_t klen, at, end;
};

/* The member at *pos (1 for the first: just past the '{'): 1, with *pos moved to the next; 0 at
 * the object's closing brace; REG_EDECODE when the text is not a compact object there. */
static int next_member(const char *j, size_t len, size_t *pos, struct member *m)
{
    size_t at = *pos;
    if (len < 2 || j[0] != '{' || at >= len) return REG_EDECODE;
    if (j[at] == '}') return j[at - 1] == ',' ? REG_EDECODE : 0;
    if (j[at] != '"') return REG_EDECODE;
    size_t key_end = value_end(j, len, at);
    if (!key_end || key_end >= len || j[key_end] != ':') return REG_EDECODE;
    size_t v = key_end + 1, e = value_end(j, len, v);
    if (!e || e >= len || (j[e] != ',' && j[e] != '}')) return REG_EDECODE;
    *m = (struct member){j + at + 1, key_end - at - 2, v, e};
    *pos = j[e] == ',' ? e + 1 : e;
    return 1;
}

int device_text_member(const char *j, size_t len, const char *name, size_t *at, size_t *end)
{
    size_t pos = 1, n = strlen(name);
    struct member m;
    int r;
    while ((r = next_member(j, len, &pos, &m)) == 1) {
        if (memchr(m.key, '\\', m.klen)) return REG_EDECODE; /* as device_text_parse */
        if (m.klen == n && !memcmp(m.key, name, n)) {
            *at = m.at;
            *end = m.end;
            return 0;
        }
    }
    return r < 0 ? REG_EDECODE : REG_ENOTFOUND;
}

int device_text_parse(const char *j, size_t len, device_text *d)
{
    *d = (device_text){0};
    size_t pos = 1, status_at = 0, status_end = 0;
    bool has_version = false, has_metadata = false;
    struct member m;
    int r;
    while ((r = next_member(j, len, &pos, &m)) == 1) {
        /* Keys are compared as written: one written with an escape (which could spell one of these
         * names) or one of these names twice is not the form records are stored in. */
        if (memchr(m.key, '\\', m.klen)) return REG_EDECODE;
        bool again = false;
        if (m.klen == 7 && !memcmp(m.key, "version", 7)) {
            again = has_version;
            d->version_at = m.at, d->version_end = m.end, has_version = true;
        } else if (m.klen == 8 && !memcmp(m.key, "metadata", 8)) {
            again = has_metadata;
            d->metadata_at = m.at, d->metadata_end = m.end, has_metadata = true;
        } else if (m.klen == 6 && !memcmp(m.key, "status", 6)) {
            again = status_end != 0;
            status_at = m.at, status_end = m.end;
        }
        if (again) return REG_EDECODE;
    }
    if (r < 0) return REG_EDECODE;
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
                         const char *metadata, size_t mlen, size_t *out_len, device_text *out_parts)
{
    char digits[JSONFAST_INT_MAX];
    size_t n = jsonfast_int(digits, version);
    /* The two values replaced in the order they come. */
    size_t at[2] = {d->version_at, d->metadata_at}, end[2] = {d->version_end, d->metadata_end},
           with_len[2] = {n, mlen};
    const char *with[2] = {digits, metadata};
    int first = d->metadata_at < d->version_at;
    size_t total = len - (end[0] - at[0]) - (end[1] - at[1]) + with_len[0] + with_len[1];
    char *out = malloc(total ? total : 1), *o = out;
    if (!out) return NULL;
    size_t from = 0, new_at[2];
    for (int k = 0; k < 2; k++) {
        int i = k ^ first;
        memcpy(o, text + from, at[i] - from);
        o += at[i] - from;
        new_at[i] = (size_t)(o - out);
        memcpy(o, with[i], with_len[i]);
        o += with_len[i];
        from = end[i];
    }
    memcpy(o, text + from, len - from);
    *out_len = total;
    if (out_parts)
        *out_parts = (device_text){.version_at = new_at[0],
                                   .version_end = new_at[0] + n,
                                   .metadata_at = new_at[1],
                                   .metadata_end = new_at[1] + mlen,
                                   .version = version,
                                   .decommissioned = d->decommissioned};
    return out;
}
