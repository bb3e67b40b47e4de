/*
 * jsonbody.h - checking JSON request bodies before anything acts on them: well-formed UTF-8
 * JSON, an object, no duplicate keys, bounded nesting, only known fields, fields of the right
 * type and length. Every failure yields a message that names what is wrong, for a 400 problem.
 */
#ifndef REG_JSONBODY_H
#define REG_JSONBODY_H

#include <jansson.h>
#include <stddef.h>

typedef struct jsonbody_err {
    char detail[256];
} jsonbody_err;

/* Parses body as a JSON object. The caller owns the result; NULL with e->detail set on error. */
json_t *jsonbody_parse_object(const char *body, size_t len, int max_depth, jsonbody_err *e);

/* 0 when every member of obj is in `allowed` (NULL-terminated), else -1 naming the first other. */
int jsonbody_only(const json_t *obj, const char *const *allowed, jsonbody_err *e);

/* Reads an optional/required string member with a length range (bytes) and no control characters.
 * *out is NULL when absent and optional. 0 or -1 with e set. */
int jsonbody_string(const json_t *obj, const char *field, int required, size_t min, size_t max,
                    const char **out, jsonbody_err *e);

/* Like jsonbody_string, for multi-line text such as PEM: line breaks and tabs are allowed. */
int jsonbody_text(const json_t *obj, const char *field, int required, size_t max, const char **out,
                  jsonbody_err *e);

/* Reads an optional integer member within [min, max]; *out keeps its value when absent. */
int jsonbody_int(const json_t *obj, const char *field, long long min, long long max, long long *out,
                 jsonbody_err *e);

#endif
