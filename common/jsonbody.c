/* jsonbody.c - request body checks (jsonbody.h), on jansson and jsonfast's parser. */
#include "jsonbody.h"
#include "jsonfast.h"

#include <stdio.h>
#include <string.h>

static int depth_of(const json_t *j, int limit)
{
    if (limit < 0) return 1;
    int deepest = 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            int d = depth_of(v, limit - 1);
            if (d > deepest) deepest = d;
        }
        return deepest + 1;
    }
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            int d = depth_of(v, limit - 1);
            if (d > deepest) deepest = d;
        }
        return deepest + 1;
    }
    return 0;
}

json_t *jsonbody_parse_object(const char *body, size_t len, int max_depth, jsonbody_err *e)
{
    /* jsonfast's parser first (a device's message or a request, parsed on the loop); jansson's
     * when it refuses, for the message, or for what only jansson accepts (text after a NUL). */
    json_error_t jerr;
    json_t *j = jsonfast_load(body, len, JSONFAST_REJECT_DUPLICATES);
    if (!j) j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        snprintf(e->detail, sizeof e->detail, "body is not valid JSON: %s (at byte %d)", jerr.text,
                 jerr.position);
        return NULL;
    }
    if (!json_is_object(j)) {
        snprintf(e->detail, sizeof e->detail, "body must be a JSON object");
        json_decref(j);
        return NULL;
    }
    if (depth_of(j, max_depth) > max_depth) {
        snprintf(e->detail, sizeof e->detail, "body is nested deeper than %d levels", max_depth);
        json_decref(j);
        return NULL;
    }
    return j;
}

int jsonbody_only(const json_t *obj, const char *const *allowed, jsonbody_err *e)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        const char *const *a = allowed;
        while (*a && strcmp(*a, k))
            a++;
        if (!*a) {
            snprintf(e->detail, sizeof e->detail, "unknown field '%.64s'", k);
            return -1;
        }
    }
    return 0;
}

/* The check both string readers share; `lines` lets line breaks and tabs through. */
static int string_member(const json_t *obj, const char *field, int required, size_t min, size_t max,
                         int lines, const char **out, jsonbody_err *e)
{
    json_t *v = json_object_get(obj, field);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!required) return 0;
        snprintf(e->detail, sizeof e->detail, "'%s' is required", field);
        return -1;
    }
    if (!json_is_string(v)) {
        snprintf(e->detail, sizeof e->detail, "'%s' must be a string", field);
        return -1;
    }
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len < min || len > max) {
        snprintf(e->detail, sizeof e->detail, "'%s' must be %zu to %zu bytes long", field, min,
                 max);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] < 0x20 &&
             !(lines && (s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))) ||
            s[i] == 0x7f) {
            snprintf(e->detail, sizeof e->detail, "'%s' contains a control character", field);
            return -1;
        }
    }
    *out = s;
    return 0;
}

int jsonbody_int(const json_t *obj, const char *field, long long min, long long max, long long *out,
                 jsonbody_err *e)
{
    json_t *v = json_object_get(obj, field);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(e->detail, sizeof e->detail, "'%s' must be an integer from %lld to %lld", field,
                 min, max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

int jsonbody_string(const json_t *obj, const char *field, int required, size_t min, size_t max,
                    const char **out, jsonbody_err *e)
{
    return string_member(obj, field, required, min, max, 0, out, e);
}

int jsonbody_text(const json_t *obj, const char *field, int required, size_t max, const char **out,
                  jsonbody_err *e)
{
    return string_member(obj, field, required, 1, max, 1, out, e);
}
