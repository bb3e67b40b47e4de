/*
 * jsonfast.h - two of jansson's operations done faster: rendering a value as compact text, and
 * copying a value deeply.
 *
 * jsonfast_dump writes the same bytes as jansson's json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY):
 * object members in their order, strings escaped as jansson escapes them (", \, control
 * characters; \u00XX in upper case), strings that are not valid UTF-8 refused. jsonfast_copy
 * gives what json_deep_copy gives. Both exist because the projector renders every record it
 * writes and every message it sends, and copies a shadow for each update: json_dumps goes through
 * a callback per piece, and both check every container against loops by formatting its address
 * with snprintf into a hash table (jansson 2.14), which made them the largest costs of the
 * projector's thread. The registry's values are trees, built by its own code: there are no loops.
 */
#ifndef REG_JSONFAST_H
#define REG_JSONFAST_H

#include <jansson.h>
#include <stddef.h>

/* Values nested deeper than this are refused by both (the records the registry stores are far
 * shallower; the API refuses deeper documents). */
#define JSONFAST_MAX_DEPTH 1024

/* The text of v, malloc'd and NUL-terminated; *len (when not NULL) its length. NULL when out of
 * memory, when a string is not valid UTF-8, or when v is nested deeper than
 * JSONFAST_MAX_DEPTH. */
char *jsonfast_dump(const json_t *v, size_t *len);

/* A deep copy of v (the caller owns it), or NULL when out of memory or nested deeper than
 * JSONFAST_MAX_DEPTH. */
json_t *jsonfast_copy(const json_t *v);

#endif
