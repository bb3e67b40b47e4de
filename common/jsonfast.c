/*
 * jsonfast.c - compact JSON text and deep copies (jsonfast.h). The text goes into one growing
 * buffer, runs of plain characters copied at once, UTF-8 checked as jansson checks it. Reals
 * are rare in what the registry stores (shadow values): they are rendered by jansson itself, so
 * that their digits match.
 */
#include "jsonfast.h"

#include <stdarg.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(jsonfast_text *t, size_t n)
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

static void put(jsonfast_text *t, const void *s, size_t n)
{
    if (!reserve(t, n)) return;
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static void put_char(jsonfast_text *t, char c)
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

/* Whether none of the 8 bytes in w needs a look: a control character, '"', '\\' or a byte of a
 * UTF-8 sequence. Each test is exact for "any byte": a borrow can only mark bytes above a byte
 * that matched. */
static bool plain8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = w ^ ones * '"', backslash = w ^ ones * '\\';
    uint64_t control = (w - ones * 0x20) & ~w;
    uint64_t special = ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash);
    return !((control | special | w) & highs);
}

static void put_string(jsonfast_text *t, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    put_char(t, '"');
    size_t run = 0; /* s[run..i) is copied as it is */
    for (size_t i = 0; i < n && !t->failed;) {
        uint64_t w;
        if (i + 8 <= n && (memcpy(&w, s + i, 8), plain8(w))) { /* the common case, 8 at a time */
            i += 8;
            continue;
        }
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

static void put_value(jsonfast_text *t, const json_t *v, int depth)
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
        char digits[JSONFAST_INT_MAX];
        put(t, digits, jsonfast_int(digits, json_integer_value(v)));
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

size_t jsonfast_int(char *out, int64_t v)
{
    char digits[JSONFAST_INT_MAX], *at = digits + sizeof digits;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do
        *--at = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0) *--at = '-';
    size_t n = (size_t)(digits + sizeof digits - at);
    memcpy(out, at, n);
    return n;
}

void jsonfast_text_int(jsonfast_text *t, int64_t v)
{
    char digits[JSONFAST_INT_MAX];
    put(t, digits, jsonfast_int(digits, v));
}

void jsonfast_text_rawn(jsonfast_text *t, const char *s, size_t n)
{
    put(t, s, n);
}

void jsonfast_text_reserve(jsonfast_text *t, size_t n)
{
    reserve(t, n);
}

void jsonfast_text_string(jsonfast_text *t, const char *s)
{
    put_string(t, s, strlen(s));
}

void jsonfast_text_stringn(jsonfast_text *t, const char *s, size_t n)
{
    put_string(t, s, n);
}

void jsonfast_text_value(jsonfast_text *t, const json_t *v)
{
    if (!v)
        t->failed = true;
    else
        put_value(t, v, 0);
}

char *jsonfast_text_end(jsonfast_text *t, size_t *len)
{
    if (!t->failed && !reserve(t, 0)) t->failed = true;
    if (t->failed) {
        free(t->p);
        *t = (jsonfast_text){0};
        return NULL;
    }
    t->p[t->len] = 0;
    if (len) *len = t->len;
    return t->p;
}

char *jsonfast_dump(const json_t *v, size_t *len)
{
    jsonfast_text t = {0};
    if (!v) return NULL;
    put_value(&t, v, 0);
    return jsonfast_text_end(&t, len);
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

void jsonfast_members(const json_t *obj, const char *const *names, size_t n, json_t **out)
{
    void *it = json_object_iter((json_t *)obj);
    for (size_t i = 0; i < n; i++) {
        if (it && !strcmp(json_object_iter_key(it), names[i])) {
            out[i] = json_object_iter_value(it);
            it = json_object_iter_next((json_t *)obj, it);
        } else {
            out[i] = json_object_get(obj, names[i]);
        }
    }
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

/* ---- jsonfast_load: a recursive descent over the text. */

struct parse {
    const unsigned char *p, *end;
    int flags;
    char *scratch; /* unescaped strings (malloc'd, grown as needed) */
    size_t scratch_cap;
};

static void parse_space(struct parse *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static int hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The string at ps->p (its opening quote): *s and *n are its bytes, in the text itself when it
 * has no escapes, else in ps->scratch. -1 when invalid. */
static int parse_string(struct parse *ps, const char **s, size_t *n)
{
    const unsigned char *start = ++ps->p, *p = start;
    bool escaped = false;
    while (p < ps->end && *p != '"') { /* a first pass: validate, and find the end */
        uint64_t w;
        if (ps->end - p >= 8 && (memcpy(&w, p, 8), plain8(w))) {
            p += 8;
            continue;
        }
        if (*p < 0x20) return -1;
        if (*p == '\\') {
            escaped = true;
            if (++p == ps->end) return -1;
            p++;
        } else if (*p >= 0x80) {
            size_t len = utf8_sequence(p, (size_t)(ps->end - p));
            if (!len) return -1;
            p += len;
        } else {
            p++;
        }
    }
    if (p >= ps->end) return -1;
    ps->p = p + 1;
    if (!escaped) {
        *s = (const char *)start;
        *n = (size_t)(p - start);
        return 0;
    }
    size_t need = (size_t)(p - start); /* unescaping never lengthens */
    if (need > ps->scratch_cap) {
        char *grown = realloc(ps->scratch, need);
        if (!grown) return -1;
        ps->scratch = grown;
        ps->scratch_cap = need;
    }
    char *o = ps->scratch;
    for (const unsigned char *q = start; q < p;) {
        if (*q != '\\') {
            *o++ = (char)*q++;
            continue;
        }
        unsigned char e = q[1];
        q += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            *o++ = (char)e;
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (p - q < 4 || hex4(q, &cp)) return -1;
            q += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff) return -1; /* a low surrogate first */
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, &lo) || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return -1;
                q += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (!cp && !(ps->flags & JSONFAST_ALLOW_NUL)) return -1;
            o += put_utf8(o, cp);
            break;
        }
        default:
            return -1;
        }
    }
    *s = ps->scratch;
    *n = (size_t)(o - ps->scratch);
    return 0;
}

static json_t *parse_number(struct parse *ps)
{
    const unsigned char *start = ps->p, *p = start;
    if (p < ps->end && *p == '-') p++;
    if (p == ps->end || *p < '0' || *p > '9') return NULL;
    if (*p == '0') {
        p++;
        if (p < ps->end && *p >= '0' && *p <= '9') return NULL; /* a leading zero */
    } else {
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    bool real = false;
    if (p < ps->end && *p == '.') {
        real = true;
        if (++p == ps->end || *p < '0' || *p > '9') return NULL;
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        real = true;
        if (++p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p == ps->end || *p < '0' || *p > '9') return NULL;
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    ps->p = p;
    size_t n = (size_t)(p - start);
    if (!real) {
        bool neg = *start == '-';
        uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (const unsigned char *q = start + neg; q < p; q++) {
            unsigned d = *q - '0';
            if (v > (limit - d) / 10) return NULL; /* beyond json_int_t, as jansson refuses */
            v = v * 10 + d;
        }
        return json_integer(neg ? (json_int_t)(0 - v) : (json_int_t)v);
    }
    char buf[64], *copy = n < sizeof buf ? buf : malloc(n + 1);
    if (!copy) return NULL;
    memcpy(copy, start, n);
    copy[n] = 0;
    errno = 0;
    double d = strtod(copy, NULL); /* the C locale's '.' (the registry never sets LC_NUMERIC) */
    bool overflow = errno == ERANGE && (d > 1.0 || d < -1.0);
    if (copy != buf) free(copy);
    return overflow ? NULL : json_real(d);
}

static json_t *parse_value(struct parse *ps, int depth);

static json_t *parse_container(struct parse *ps, int depth, bool object)
{
    if (depth > JSONFAST_MAX_DEPTH) return NULL;
    json_t *c = object ? json_object() : json_array();
    if (!c) return NULL;
    ps->p++;
    parse_space(ps);
    char close = object ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return c;
    }
    for (;;) {
        parse_space(ps);
        const char *key = NULL;
        size_t klen = 0;
        char *owned_key = NULL;
        if (object) {
            if (ps->p == ps->end || *ps->p != '"' || parse_string(ps, &key, &klen)) goto fail;
            if (memchr(key, 0, klen)) goto fail; /* as jansson refuses, even with NUL allowed */
            if ((ps->flags & JSONFAST_REJECT_DUPLICATES) && json_object_getn(c, key, klen))
                goto fail;
            if (key == ps->scratch && !(key = owned_key = malloc(klen ? klen : 1))) goto fail;
            if (owned_key) memcpy(owned_key, ps->scratch, klen);
            parse_space(ps);
            if (ps->p == ps->end || *ps->p != ':') {
                free(owned_key);
                goto fail;
            }
            ps->p++;
        }
        json_t *v = parse_value(ps, depth + 1);
        int err = !v || (object ? json_object_setn_new_nocheck(c, key, klen, v)
                                : json_array_append_new(c, v));
        free(owned_key);
        if (err) goto fail;
        parse_space(ps);
        if (ps->p == ps->end) goto fail;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p++ == close) return c;
        goto fail;
    }
fail:
    json_decref(c);
    return NULL;
}

static bool parse_word(struct parse *ps, const char *w, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n)) return false;
    ps->p += n;
    return true;
}

static json_t *parse_value(struct parse *ps, int depth)
{
    parse_space(ps);
    if (ps->p == ps->end) return NULL;
    switch (*ps->p) {
    case '{':
        return parse_container(ps, depth, true);
    case '[':
        return parse_container(ps, depth, false);
    case '"': {
        const char *s;
        size_t n;
        return parse_string(ps, &s, &n) ? NULL : json_stringn_nocheck(s, n);
    }
    case 't':
        return parse_word(ps, "true", 4) ? json_true() : NULL;
    case 'f':
        return parse_word(ps, "false", 5) ? json_false() : NULL;
    case 'n':
        return parse_word(ps, "null", 4) ? json_null() : NULL;
    default:
        return parse_number(ps);
    }
}

json_t *jsonfast_load(const char *text, size_t len, int flags)
{
    if (!text) return NULL;
    struct parse ps = {(const unsigned char *)text, (const unsigned char *)text + len, flags, NULL,
                       0};
    json_t *v = parse_value(&ps, 0);
    parse_space(&ps);
    free(ps.scratch);
    if (v && ps.p != ps.end) { /* more after the value */
        json_decref(v);
        return NULL;
    }
    return v;
}
