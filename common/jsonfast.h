/*
 * jsonfast.h - four of jansson's operations done faster: rendering a value as compact text,
 * parsing text, copying a value deeply, and building one from a format; and compact text
 * written piece by piece.
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
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Values nested deeper than this are refused by both (the records the registry stores are far
 * shallower; the API refuses deeper documents). */
#define JSONFAST_MAX_DEPTH 1024

/* JSON text written piece by piece, for a record rendered without building it in jansson
 * first. Start from {0}; jsonfast_text_end gives the text (malloc'd, NUL-terminated, *len its
 * length; the caller frees it) or NULL when out of memory or when a piece failed (a string not
 * valid UTF-8, a NULL value), and leaves t empty. Pieces are not checked to make valid JSON
 * together: the caller writes the punctuation. */
typedef struct jsonfast_text {
    char *p;
    size_t len, cap;
    bool failed;
} jsonfast_text;

void jsonfast_text_rawn(jsonfast_text *t, const char *s, size_t n); /* n bytes as they are */
/* Room for n more bytes at once, where the caller knows about how long the text will be: each
 * growth is a realloc and a copy. */
void jsonfast_text_reserve(jsonfast_text *t, size_t n);
/* As it is: punctuation, literals (inline, so that a literal's length is known when compiled:
 * strlen was ~1% of the projector's thread). */
static inline void jsonfast_text_raw(jsonfast_text *t, const char *s)
{
    jsonfast_text_rawn(t, s, __builtin_strlen(s));
}
void jsonfast_text_string(jsonfast_text *t, const char *s);            /* as a JSON string */
void jsonfast_text_stringn(jsonfast_text *t, const char *s, size_t n); /* n bytes, the same */
void jsonfast_text_int(jsonfast_text *t, int64_t v);                   /* as a JSON integer */
void jsonfast_text_value(jsonfast_text *t, const json_t *v); /* as jsonfast_dump renders it */
char *jsonfast_text_end(jsonfast_text *t, size_t *len);

/* An integer's decimal digits (a '-' first when negative) written to out, which holds
 * JSONFAST_INT_MAX bytes; no NUL. Returns how many were written. snprintf's "%lld" showed in the
 * projector's profiles. */
enum { JSONFAST_INT_MAX = 20 };
size_t jsonfast_int(char *out, int64_t v);

/* The text of v, malloc'd and NUL-terminated; *len (when not NULL) its length. NULL when out of
 * memory, when a string is not valid UTF-8, or when v is nested deeper than
 * JSONFAST_MAX_DEPTH. */
char *jsonfast_dump(const json_t *v, size_t *len);

/* jsonfast_load's flags: jansson's JSON_ALLOW_NUL and JSON_REJECT_DUPLICATES. */
enum { JSONFAST_ALLOW_NUL = 1, JSONFAST_REJECT_DUPLICATES = 2 };

/* The value of len bytes of JSON text: what json_loadb(text, len, JSON_DECODE_ANY and the flags'
 * counterparts, NULL) gives, or NULL where it gives NULL (invalid JSON or UTF-8, a lone
 * surrogate, an integer beyond json_int_t, a real that overflows, anything after the value, a
 * \u0000 unless allowed, a repeated key if refused), and also for values nested deeper than
 * JSONFAST_MAX_DEPTH and for text with a NUL byte (where jansson's input ends). Without
 * JSONFAST_REJECT_DUPLICATES the last of repeated keys wins, in the first one's place. jansson's
 * lexer takes each character through a callback and a growing buffer, and was most of decoding
 * a stored record or a device's message. The caller owns the value. */
json_t *jsonfast_load(const char *text, size_t len, int flags);

/* A deep copy of v (the caller owns it), or NULL when out of memory or nested deeper than
 * JSONFAST_MAX_DEPTH. */
json_t *jsonfast_copy(const json_t *v);

/* The members of obj named names[0..n) into out[0..n) (NULL where obj has none; borrowed), in
 * one walk of its members while they come in that order, as they do in a value the codec decoded
 * (the schema's order) or one the registry built in it; a name out of order is looked up. A
 * registration read its body's members with twenty lookups, each hashing the name. */
void jsonfast_members(const json_t *obj, const char *const *names, size_t n, json_t **out);

/* Builds a value as json_pack(fmt, ...) does, for the part of its format the registry uses:
 * objects {} of "s" keys and values, arrays [], s (a string; s? makes NULL null), o and O (a
 * value, its reference stolen or a new one taken; o? and O? make NULL null), i (int), I
 * (json_int_t), b (int, as a boolean), n (null), f (double); spaces, commas and colons separate.
 * Keys and strings are not checked for valid UTF-8: pass only what the registry made or decoded
 * (which was checked), never raw input. Not checking, and building without jansson's format
 * scanner, make it 2.5 times as fast. NULL on a NULL the format does not allow, a format it does
 * not know, or out of memory; every o value is stolen either way. */
json_t *jsonfast_pack(const char *fmt, ...);

#endif
