/*
 * jsontext.h - rendering JSON values as compact text, fast.
 *
 * jsontext_dump writes the same bytes as jansson's json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY):
 * object members in their order, strings escaped as jansson escapes them (", \, control
 * characters; \u00XX in upper case), strings that are not valid UTF-8 refused. It exists because
 * the projector renders every record it writes and every message it sends, and json_dumps,
 * which goes through a callback per piece and checks every character, was the largest single
 * cost of the projector's thread.
 */
#ifndef REG_JSONTEXT_H
#define REG_JSONTEXT_H

#include <jansson.h>
#include <stddef.h>

/* Values nested deeper than this are refused (the records the registry stores are far
 * shallower; the API refuses deeper documents). */
#define JSONTEXT_MAX_DEPTH 1024

/* The text of v, malloc'd and NUL-terminated; *len (when not NULL) its length. NULL when out of
 * memory, when a string is not valid UTF-8, or when v is nested deeper than
 * JSONTEXT_MAX_DEPTH. */
char *jsontext_dump(const json_t *v, size_t *len);

#endif
