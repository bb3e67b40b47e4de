/*
 * jsonfast.c - compact JSON text and deep copies (jsonfast.h). The text goes into one growing
 * buffer, runs of plain characters copied at once, UTF-8 checked as jansson checks it. Reals
 * are rare in what the registry stores (shadow values): they are rendered by jansson itself, so
 * that their digits match.
 */
#include "jsonfast.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct text {
    char *p;
    size_t len, cap;
    bool failed;
};

static bool reserve(struct text *t, size_t n)
{
    if (t->failed) return false;
    if (t->cap - t->len > n) return true; /* one byte stays for the NUL */
    size_t cap = t->cap ? t->cap : 256;
    while (cap - t->len <= n)
        cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p) {
        t->failed = true;
        return false;
    }
    t->p = p;
    t->cap = cap;
    return true;
}

static void put(struct text *t, const void *s, size_t n)
{
    if (!reserve(t, n)) return;
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static void put_char(struct text *t, char c)
{
    if (!reserve(t, 1)) return;
    t->p[t->len++] = c;
}

/* The length of the valid UTF-8 sequence at s (of at most n bytes) that starts with a byte
 * >= 0x80, or 0: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static void put_string(struct text *t, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    put_char(t, '"');
    size_t run = 0; /* s[run..i) is copied as it is */
    for (size_t i = 0; i < n && !t->failed;) {
        unsigned c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t len = utf8_sequence(s + i, n - i);
            if (!len) {
                t->failed = true;
                return;
            }
            i += len;
            continue;
        }
        put(t, s + run, i - run);
        char esc[6] = {'\\', 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        put(t, esc, elen);
        run = ++i;
    }
    put(t, s + run, n - run);
    put_char(t, '"');
}

static void put_value(struct text *t, const json_t *v, int depth)
{
    if (depth > JSONFAST_MAX_DEPTH) {
        t->failed = true;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        put_char(t, '{');
        bool first = true;
        for (void *it = json_object_iter((json_t *)v); it && !t->failed;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first) put_char(t, ',');
            first = false;
            put_string(t, json_object_iter_key(it), json_object_iter_key_len(it));
            put_char(t, ':');
            put_value(t, json_object_iter_value(it), depth + 1);
        }
        put_char(t, '}');
        break;
    }
    case JSON_ARRAY: {
        put_char(t, '[');
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n && !t->failed; i++) {
            if (i) put_char(t, ',');
            put_value(t, json_array_get(v, i), depth + 1);
        }
        put_char(t, ']');
        break;
    }
    case JSON_STRING:
        put_string(t, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER: { /* shadows are full of timestamps: snprintf showed in profiles */
        char digits[24], *at = digits + sizeof digits;
        json_int_t i = json_integer_value(v);
        uint64_t u = i < 0 ? 0 - (uint64_t)i : (uint64_t)i;
        do
            *--at = (char)('0' + u % 10);
        while (u /= 10);
        if (i < 0) *--at = '-';
        put(t, at, (size_t)(digits + sizeof digits - at));
        break;
    }
    case JSON_REAL: {
        char *real = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!real) {
            t->failed = true;
            return;
        }
        put(t, real, strlen(real));
        free(real);
        break;
    }
    case JSON_TRUE:
        put(t, "true", 4);
        break;
    case JSON_FALSE:
        put(t, "false", 5);
        break;
    case JSON_NULL:
        put(t, "null", 4);
        break;
    }
}

char *jsonfast_dump(const json_t *v, size_t *len)
{
    struct text t = {0};
    if (!v) return NULL;
    put_value(&t, v, 0);
    if (!t.failed && !reserve(&t, 0)) t.failed = true;
    if (t.failed) {
        free(t.p);
        return NULL;
    }
    t.p[t.len] = 0;
    if (len) *len = t.len;
    return t.p;
}

static json_t *copy_value(const json_t *v, int depth)
{
    if (depth > JSONFAST_MAX_DEPTH) return NULL;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        json_t *o = json_object();
        for (void *it = json_object_iter((json_t *)v); it && o;
             it = json_object_iter_next((json_t *)v, it)) {
            json_t *c = copy_value(json_object_iter_value(it), depth + 1);
            if (!c || json_object_setn_new_nocheck(o, json_object_iter_key(it),
                                                   json_object_iter_key_len(it), c)) {
                json_decref(o);
                o = NULL;
            }
        }
        return o;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        json_t *a = json_array();
        for (size_t i = 0; i < n && a; i++) {
            json_t *c = copy_value(json_array_get(v, i), depth + 1);
            if (!c || json_array_append_new(a, c)) {
                json_decref(a);
                a = NULL;
            }
        }
        return a;
    }
    case JSON_STRING:
        return json_stringn_nocheck(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return json_integer(json_integer_value(v));
    case JSON_REAL:
        return json_real(json_real_value(v));
    default:
        return json_incref((json_t *)v); /* true, false and null: jansson's singletons */
    }
}

json_t *jsonfast_copy(const json_t *v)
{
    return v ? copy_value(v, 0) : NULL;
}

/* ---- jsonfast_pack: a recursive descent over the format, taking the arguments in order. After
 * a failure it goes on to the end so that every o argument is still taken (and released). */

struct pack {
    const char *f;
    va_list *ap;
    bool failed;
};

static void pack_skip(struct pack *p)
{
    while (*p->f == ' ' || *p->f == ',' || *p->f == ':' || *p->f == '\t' || *p->f == '\n')
        p->f++;
}

static json_t *pack_fail(struct pack *p, json_t *v)
{
    p->failed = true;
    json_decref(v);
    return NULL;
}

static json_t *pack_value(struct pack *p, int depth);

/* The members of an object or the elements of an array, up to `close`, into c (NULL once
 * failed). */
static json_t *pack_container(struct pack *p, json_t *c, char close, int depth)
{
    if (!c || depth > JSONFAST_MAX_DEPTH) pack_fail(p, NULL);
    for (;;) {
        pack_skip(p);
        if (*p->f == close) {
            p->f++;
            break;
        }
        if (!*p->f) return pack_fail(p, c);
        const char *key = NULL;
        if (close == '}') {
            if (*p->f++ != 's') return pack_fail(p, c); /* the rest cannot be told apart */
            key = va_arg(*p->ap, const char *);
            if (!key) p->failed = true;
        }
        json_t *v = pack_value(p, depth + 1);
        if (p->failed || !v) {
            json_decref(v);
            p->failed = true;
            continue;
        }
        if (close == '}' ? json_object_set_new_nocheck(c, key, v) : json_array_append_new(c, v))
            p->failed = true;
    }
    if (p->failed) return pack_fail(p, c);
    return c;
}

static json_t *pack_value(struct pack *p, int depth)
{
    pack_skip(p);
    char c = *p->f;
    if (!c) return pack_fail(p, NULL);
    p->f++;
    bool nullable = *p->f == '?';
    if (nullable) p->f++;
    switch (c) {
    case '{':
        return pack_container(p, json_object(), '}', depth);
    case '[':
        return pack_container(p, json_array(), ']', depth);
    case 's': {
        const char *s = va_arg(*p->ap, const char *);
        if (!s) return nullable ? json_null() : pack_fail(p, NULL);
        return json_stringn_nocheck(s, strlen(s));
    }
    case 'o':
    case 'O': {
        json_t *v = va_arg(*p->ap, json_t *);
        if (!v) return nullable ? json_null() : pack_fail(p, NULL);
        return c == 'O' ? json_incref(v) : v;
    }
    case 'i':
        return json_integer(va_arg(*p->ap, int));
    case 'I':
        return json_integer(va_arg(*p->ap, json_int_t));
    case 'b':
        return va_arg(*p->ap, int) ? json_true() : json_false();
    case 'n':
        return json_null();
    case 'f':
        return json_real(va_arg(*p->ap, double));
    default: /* the arguments that follow cannot be told apart */
        p->f += strlen(p->f);
        return pack_fail(p, NULL);
    }
}

json_t *jsonfast_pack(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct pack p = {fmt, &ap, false};
    json_t *v = pack_value(&p, 0);
    pack_skip(&p);
    if (*p.f) v = pack_fail(&p, v); /* more than one value */
    va_end(ap);
    return p.failed ? NULL : v;
}
