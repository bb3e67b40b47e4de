/*
 * codec.c - Avro single-object encoding of log records, with a JSON (jansson) value model.
 *
 * Implements schemas/codec.h. Every schema handed to the registry is parsed once by this file's
 * own small schema parser into a tree of `struct node` (full names resolved, defaults converted
 * to the codec's JSON mapping). That tree gives the Parsing Canonical Form (and so the
 * CRC-64-AVRO fingerprint), drives the JSON <-> Avro value walks, bounds-checks untrusted input
 * and does schema resolution. The binary work is done twice over: by the codec's own walks of
 * that tree between JSON and bytes (codec_encode, codec_decode: what the registry runs), and by
 * avro-c (1.11), whose schema is built from the canonical form and whose generic value, memory
 * reader and memory writer per registry are reused for every record (codec_encode_avroc,
 * codec_decode_avroc: the reference that the tests and the fuzzer hold the walks to). Filling
 * and reading avro-c's generic values was most of a record's encode or decode; the walks do both
 * 2.3 times as fast (test_codec prints the figures).
 *
 * Why the extra machinery around avro-c: it has no fingerprint, no canonical form and no
 * single-object encoding; its resolver refuses a reader field with a default that the writer
 * lacks; and its binary reader trusts length and count prefixes (it allocates what a prefix
 * says before reading), so every body is first walked by validate() against the writer tree,
 * which rejects any length, count, index or varint the remaining bytes cannot hold. Resolution
 * of an older writer onto the current reader is done on the JSON side (resolve()).
 */
#include "schemas/codec.h"
#include "schemas/schemas_embedded.h"
#include "err.h"

#include <avro.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting bound for every walk: only recursive schemas can nest deeper than the schema itself,
 * and untrusted input must not be able to exhaust the stack through them. */
#define MAX_DEPTH 64
/* Elements that take no bytes on the wire (arrays of null, of empty records) cannot be bounded
 * by the input length, so one decode may hold at most this many of them in total. */
#define MAX_ZERO_SIZE_ITEMS 65536
#define MAGIC0 0xC3
#define MAGIC1 0x01
#define HEADER_LEN 10

/* ------------------------------------------------------------------------------------------ */
/* CRC-64-AVRO */

#define CRC64_EMPTY UINT64_C(0xc15d213aa4d7a795)

static uint64_t crc64_table[256];
static pthread_once_t crc64_once = PTHREAD_ONCE_INIT;

static void crc64_init(void)
{
    for (int i = 0; i < 256; i++) {
        uint64_t fp = (uint64_t)i;
        for (int j = 0; j < 8; j++)
            fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1));
        crc64_table[i] = fp;
    }
}

uint64_t codec_crc64_avro(const void *data, size_t len)
{
    pthread_once(&crc64_once, crc64_init);
    const uint8_t *p = data;
    uint64_t fp = CRC64_EMPTY;
    for (size_t i = 0; i < len; i++)
        fp = (fp >> 8) ^ crc64_table[(fp ^ p[i]) & 0xff];
    return fp;
}

/* ------------------------------------------------------------------------------------------ */
/* Schema tree */

enum kind {
    K_NULL,
    K_BOOLEAN,
    K_INT,
    K_LONG,
    K_FLOAT,
    K_DOUBLE,
    K_BYTES,
    K_STRING,
    K_RECORD,
    K_ENUM,
    K_FIXED,
    K_ARRAY,
    K_MAP,
    K_UNION,
};

static const char *const kind_names[] = {"null",   "boolean", "int",    "long",   "float",
                                         "double", "bytes",   "string", "record", "enum",
                                         "fixed",  "array",   "map",    "union"};
#define N_PRIMITIVES 8 /* K_NULL .. K_STRING */

struct node;

struct field {
    char *name;
    size_t name_len;
    struct node *type;
    const json_t *raw_default; /* the schema's Avro JSON default (borrowed from tree->doc) */
    json_t *def;               /* the default in the codec's JSON mapping; NULL if none */
};

struct node {
    enum kind kind;
    char *fullname;        /* named types only */
    const char *shortname; /* inside fullname */
    size_t n;              /* number of fields, symbols or branches */
    struct field *fields;
    char **symbols;
    int enum_default; /* index into symbols, -1 if none */
    struct node **branches;
    struct node *items; /* array items, map values */
    int64_t size;       /* fixed */
    int nullable;       /* union of null and one T: index of T, else -1 */
    size_t min_size;    /* fewest bytes an encoded value takes */
    int min_state;      /* 0 not computed, 1 in progress, 2 done */
    int emitted;        /* canonical writer: definition already written */
};

/* A parsed schema. Owns every node (nodes[]), which may reference each other (named types). */
struct tree {
    json_t *doc;
    struct node *root;
    struct node **nodes;
    size_t n, cap;
};

static void tree_free(struct tree *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) {
        struct node *nd = t->nodes[i];
        free(nd->fullname);
        for (size_t k = 0; nd->fields && k < nd->n; k++) {
            free(nd->fields[k].name);
            json_decref(nd->fields[k].def);
        }
        free(nd->fields);
        for (size_t k = 0; nd->symbols && k < nd->n; k++)
            free(nd->symbols[k]);
        free(nd->symbols);
        free(nd->branches);
        free(nd);
    }
    free(t->nodes);
    json_decref(t->doc);
    free(t);
}

static struct node *node_new(struct tree *t, enum kind kind)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct node **nodes = realloc(t->nodes, cap * sizeof(*nodes));
        if (!nodes) return NULL;
        t->nodes = nodes;
        t->cap = cap;
    }
    struct node *nd = calloc(1, sizeof(*nd));
    if (!nd) return NULL;
    nd->kind = kind;
    nd->nullable = -1;
    nd->enum_default = -1;
    t->nodes[t->n++] = nd;
    return nd;
}

static bool is_named(enum kind k)
{
    return k == K_RECORD || k == K_ENUM || k == K_FIXED;
}

/* The name a union branch goes by in the JSON mapping: short name or type name. */
static const char *branch_label(const struct node *nd)
{
    return is_named(nd->kind) ? nd->shortname : kind_names[nd->kind];
}

static int primitive_kind(const char *s)
{
    for (int k = 0; k < N_PRIMITIVES; k++)
        if (strcmp(s, kind_names[k]) == 0) return k;
    return -1;
}

static bool valid_ident(const char *s, size_t len)
{
    if (len == 0 || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* A dotted name: identifiers separated by single dots. */
static bool valid_dotted(const char *s)
{
    const char *part = s;
    for (;;) {
        const char *dot = strchr(part, '.');
        size_t len = dot ? (size_t)(dot - part) : strlen(part);
        if (!valid_ident(part, len)) return false;
        if (!dot) return true;
        part = dot + 1;
    }
}

static char *join_name(const char *ns, const char *name)
{
    size_t nl = ns ? strlen(ns) : 0, ml = strlen(name);
    char *s = malloc(nl + ml + 2);
    if (!s) return NULL;
    if (nl) {
        memcpy(s, ns, nl);
        s[nl] = '.';
        memcpy(s + nl + 1, name, ml + 1);
    } else {
        memcpy(s, name, ml + 1);
    }
    return s;
}

static struct node *find_named(const struct tree *t, const char *fullname)
{
    for (size_t i = 0; i < t->n; i++)
        if (is_named(t->nodes[i]->kind) && strcmp(t->nodes[i]->fullname, fullname) == 0)
            return t->nodes[i];
    return NULL;
}

/* Resolves a reference to an already-defined named type, as seen from namespace ns: a dotted
 * name is already full; a simple one is looked up in ns, then in the null namespace. */
static struct node *resolve_ref(const struct tree *t, const char *name, const char *ns)
{
    if (strchr(name, '.') || !ns || !*ns) return find_named(t, name);
    char *full = join_name(ns, name);
    if (!full) return NULL;
    struct node *nd = find_named(t, full);
    free(full);
    return nd ? nd : find_named(t, name);
}

static int parse_schema(struct tree *t, const json_t *j, const char *ns, int depth,
                        struct node **out);

static int parse_named(struct tree *t, const json_t *j, const char *type, const char *ns, int depth,
                       struct node **out)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    if (!name || !valid_dotted(name)) return REG_ESCHEMA;
    enum kind kind = strcmp(type, "enum") == 0    ? K_ENUM
                     : strcmp(type, "fixed") == 0 ? K_FIXED
                                                  : K_RECORD;
    char *fullname;
    if (strchr(name, '.')) {
        fullname = strdup(name);
    } else {
        const json_t *jns = json_object_get(j, "namespace");
        if (jns) {
            /* An explicit namespace replaces the enclosing one; "" is the null namespace. */
            if (!json_is_string(jns)) return REG_ESCHEMA;
            ns = json_string_value(jns);
            if (*ns && !valid_dotted(ns)) return REG_ESCHEMA;
        }
        fullname = join_name(ns, name);
    }
    if (!fullname) return REG_ENOMEM;
    const char *dot = strrchr(fullname, '.');
    const char *shortname = dot ? dot + 1 : fullname;
    if (primitive_kind(shortname) >= 0 || find_named(t, fullname)) {
        free(fullname);
        return REG_ESCHEMA;
    }
    struct node *nd = node_new(t, kind);
    if (!nd) {
        free(fullname);
        return REG_ENOMEM;
    }
    nd->fullname = fullname;
    nd->shortname = shortname;
    /* Nested definitions inherit the namespace of this type's full name. Registered above
     * before the fields are parsed, so a record may refer to itself. */
    char *own_ns = dot ? strndup(fullname, (size_t)(dot - fullname)) : NULL;
    if (dot && !own_ns) return REG_ENOMEM;
    int rc = 0;

    if (kind == K_RECORD) {
        const json_t *jf = json_object_get(j, "fields");
        if (!json_is_array(jf)) {
            rc = REG_ESCHEMA;
            goto done;
        }
        size_t n = json_array_size(jf);
        nd->fields = calloc(n ? n : 1, sizeof(*nd->fields));
        if (!nd->fields) {
            rc = REG_ENOMEM;
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            const json_t *f = json_array_get(jf, i);
            const char *fname = json_string_value(json_object_get(f, "name"));
            const json_t *ftype = json_object_get(f, "type");
            if (!json_is_object(f) || !fname || !valid_ident(fname, strlen(fname)) || !ftype) {
                rc = REG_ESCHEMA;
                goto done;
            }
            for (size_t k = 0; k < i; k++)
                if (strcmp(nd->fields[k].name, fname) == 0) {
                    rc = REG_ESCHEMA;
                    goto done;
                }
            nd->fields[i].name = strdup(fname);
            nd->fields[i].name_len = strlen(fname);
            nd->n = i + 1;
            if (!nd->fields[i].name) {
                rc = REG_ENOMEM;
                goto done;
            }
            nd->fields[i].raw_default = json_object_get(f, "default");
            rc = parse_schema(t, ftype, own_ns, depth + 1, &nd->fields[i].type);
            if (rc) goto done;
        }
    } else if (kind == K_ENUM) {
        const json_t *js = json_object_get(j, "symbols");
        if (!json_is_array(js)) {
            rc = REG_ESCHEMA;
            goto done;
        }
        size_t n = json_array_size(js);
        nd->symbols = calloc(n ? n : 1, sizeof(*nd->symbols));
        if (!nd->symbols) {
            rc = REG_ENOMEM;
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            const char *sym = json_string_value(json_array_get(js, i));
            if (!sym || !valid_ident(sym, strlen(sym))) {
                rc = REG_ESCHEMA;
                goto done;
            }
            for (size_t k = 0; k < i; k++)
                if (strcmp(nd->symbols[k], sym) == 0) {
                    rc = REG_ESCHEMA;
                    goto done;
                }
            nd->symbols[i] = strdup(sym);
            nd->n = i + 1;
            if (!nd->symbols[i]) {
                rc = REG_ENOMEM;
                goto done;
            }
        }
        const json_t *jd = json_object_get(j, "default");
        if (jd) {
            const char *d = json_string_value(jd);
            for (size_t k = 0; d && k < nd->n; k++)
                if (strcmp(nd->symbols[k], d) == 0) nd->enum_default = (int)k;
            if (nd->enum_default < 0) rc = REG_ESCHEMA;
        }
    } else {
        const json_t *js = json_object_get(j, "size");
        if (!json_is_integer(js) || json_integer_value(js) < 0 ||
            json_integer_value(js) > INT32_MAX)
            rc = REG_ESCHEMA;
        else
            nd->size = json_integer_value(js);
    }
done:
    free(own_ns);
    if (rc == 0) *out = nd;
    return rc;
}

static int parse_schema(struct tree *t, const json_t *j, const char *ns, int depth,
                        struct node **out)
{
    if (depth > 256) return REG_ESCHEMA;
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        int k = primitive_kind(s);
        if (k >= 0) {
            *out = node_new(t, (enum kind)k);
            return *out ? 0 : REG_ENOMEM;
        }
        *out = resolve_ref(t, s, ns);
        return *out ? 0 : REG_ESCHEMA;
    }
    if (json_is_array(j)) {
        struct node *nd = node_new(t, K_UNION);
        if (!nd) return REG_ENOMEM;
        size_t n = json_array_size(j);
        nd->branches = calloc(n ? n : 1, sizeof(*nd->branches));
        if (!nd->branches) return REG_ENOMEM;
        size_t nulls = 0;
        for (size_t i = 0; i < n; i++) {
            struct node *b;
            int rc = parse_schema(t, json_array_get(j, i), ns, depth + 1, &b);
            if (rc) return rc;
            /* No nested unions (the specification forbids them) and no two branches with the
             * same JSON label, which would make the {"Label": value} mapping ambiguous. */
            if (b->kind == K_UNION) return REG_ESCHEMA;
            for (size_t k = 0; k < i; k++)
                if (strcmp(branch_label(nd->branches[k]), branch_label(b)) == 0) return REG_ESCHEMA;
            nd->branches[i] = b;
            nd->n = i + 1;
            nulls += b->kind == K_NULL;
        }
        if (n == 2 && nulls == 1) nd->nullable = nd->branches[0]->kind == K_NULL ? 1 : 0;
        *out = nd;
        return 0;
    }
    if (!json_is_object(j)) return REG_ESCHEMA;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return REG_ESCHEMA;
    int k = primitive_kind(type);
    if (k >= 0) { /* {"type":"long", "logicalType": ...} and the like: the primitive. */
        *out = node_new(t, (enum kind)k);
        return *out ? 0 : REG_ENOMEM;
    }
    if (strcmp(type, "record") == 0 || strcmp(type, "error") == 0 || strcmp(type, "enum") == 0 ||
        strcmp(type, "fixed") == 0)
        return parse_named(t, j, type, ns, depth, out);
    if (strcmp(type, "array") == 0 || strcmp(type, "map") == 0) {
        bool array = type[0] == 'a';
        const json_t *sub = json_object_get(j, array ? "items" : "values");
        if (!sub) return REG_ESCHEMA;
        struct node *nd = node_new(t, array ? K_ARRAY : K_MAP);
        if (!nd) return REG_ENOMEM;
        *out = nd;
        return parse_schema(t, sub, ns, depth + 1, &nd->items);
    }
    *out = resolve_ref(t, type, ns); /* {"type": "SomeNamedType"} */
    return *out ? 0 : REG_ESCHEMA;
}

/* Whether the n bytes at p are all ASCII. */
static bool ascii(const uint8_t *p, size_t n)
{
    uint64_t any = 0, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        any |= w;
    }
    for (; i < n; i++)
        any |= p[i];
    return !(any & 0x8080808080808080ull);
}

/* ---- what both decoders (read_value and the avro-c reference's to_json) make of a decoded
 * scalar. */

/* A string: NULL when it is not UTF-8. ASCII needs no check: jansson's, a byte at a time, showed
 * in profiles. */
static json_t *utf8_json(const char *p, size_t n)
{
    return ascii((const uint8_t *)p, n) ? json_stringn_nocheck(p, n) : json_stringn(p, n);
}

/* Whether the n bytes at p are UTF-8 (jansson's check, for what is not ASCII: rare). */
static bool utf8_valid(const char *p, size_t n)
{
    if (ascii((const uint8_t *)p, n)) return true;
    json_t *s = json_stringn(p, n);
    json_decref(s);
    return s != NULL;
}

/* A float or double into *out (NULL when out of memory): REG_EDECODE for NaN and the
 * infinities, which JSON (and jansson) lacks. */
static int real_json(double d, json_t **out)
{
    if (!isfinite(d)) return REG_EDECODE;
    *out = json_real(d);
    return 0;
}

/* ---- the codec's JSON mapping of bytes and fixed: one code point U+0000..U+00FF per byte
 * (as in Avro's own JSON encoding), so arbitrary bytes survive as a valid JSON string. */

static json_t *latin1_to_json(const uint8_t *p, size_t n)
{
    if (n == 0) return json_string("");
    char *buf = malloc(n * 2);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            buf[o++] = (char)p[i];
        } else {
            buf[o++] = (char)(0xC0 | (p[i] >> 6));
            buf[o++] = (char)(0x80 | (p[i] & 0x3F));
        }
    }
    json_t *s = json_stringn(buf, o);
    free(buf);
    return s;
}

/* Decodes a (valid UTF-8) string into *out (malloc'd, caller frees). REG_EINVAL when a code
 * point is above U+00FF. */
static int json_to_latin1(const char *s, size_t n, uint8_t **out, size_t *outlen)
{
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return REG_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x80) {
            buf[o++] = c;
        } else if ((c == 0xC2 || c == 0xC3) && i + 1 < n) {
            buf[o++] = (uint8_t)(((c & 0x03) << 6) | ((uint8_t)s[i + 1] & 0x3F));
            i++;
        } else {
            free(buf);
            return REG_EINVAL;
        }
    }
    *out = buf;
    *outlen = o;
    return 0;
}

/* Converts an Avro JSON default (as written in a schema) into the codec's JSON mapping.
 * REG_ESCHEMA when the default does not fit the type. */
static int convert_default(const struct node *nd, const json_t *d, int depth, json_t **out)
{
    if (depth > MAX_DEPTH) return REG_ESCHEMA;
    json_t *r = NULL;
    switch (nd->kind) {
    case K_NULL:
        if (!json_is_null(d)) return REG_ESCHEMA;
        r = json_null();
        break;
    case K_BOOLEAN:
        if (!json_is_boolean(d)) return REG_ESCHEMA;
        r = json_boolean(json_is_true(d));
        break;
    case K_INT:
        if (!json_is_integer(d) || json_integer_value(d) < INT32_MIN ||
            json_integer_value(d) > INT32_MAX)
            return REG_ESCHEMA;
        r = json_integer(json_integer_value(d));
        break;
    case K_LONG:
        if (!json_is_integer(d)) return REG_ESCHEMA;
        r = json_integer(json_integer_value(d));
        break;
    case K_FLOAT:
    case K_DOUBLE:
        if (!json_is_number(d)) return REG_ESCHEMA;
        r = json_real(json_number_value(d));
        break;
    case K_STRING:
        if (!json_is_string(d)) return REG_ESCHEMA;
        r = json_stringn(json_string_value(d), json_string_length(d));
        break;
    case K_BYTES:
    case K_FIXED: {
        uint8_t *b;
        size_t blen;
        if (!json_is_string(d) ||
            json_to_latin1(json_string_value(d), json_string_length(d), &b, &blen))
            return REG_ESCHEMA;
        free(b);
        if (nd->kind == K_FIXED && (int64_t)blen != nd->size) return REG_ESCHEMA;
        r = json_stringn(json_string_value(d), json_string_length(d));
        break;
    }
    case K_ENUM: {
        const char *s = json_string_value(d);
        size_t k = 0;
        while (s && k < nd->n && strcmp(nd->symbols[k], s) != 0)
            k++;
        if (!s || k == nd->n) return REG_ESCHEMA;
        r = json_string(s);
        break;
    }
    case K_ARRAY: {
        if (!json_is_array(d)) return REG_ESCHEMA;
        if (!(r = json_array())) return REG_ENOMEM;
        for (size_t i = 0; i < json_array_size(d); i++) {
            json_t *x;
            int rc = convert_default(nd->items, json_array_get(d, i), depth + 1, &x);
            if (!rc && json_array_append_new(r, x)) rc = REG_ENOMEM;
            if (rc) {
                json_decref(r);
                return rc;
            }
        }
        break;
    }
    case K_MAP: {
        if (!json_is_object(d)) return REG_ESCHEMA;
        if (!(r = json_object())) return REG_ENOMEM;
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)d, key, v)
        {
            json_t *x;
            int rc = convert_default(nd->items, v, depth + 1, &x);
            if (!rc && json_object_set_new(r, key, x)) rc = REG_ENOMEM;
            if (rc) {
                json_decref(r);
                return rc;
            }
        }
        break;
    }
    case K_RECORD: {
        if (!json_is_object(d)) return REG_ESCHEMA;
        if (!(r = json_object())) return REG_ENOMEM;
        for (size_t i = 0; i < nd->n; i++) {
            const struct field *f = &nd->fields[i];
            const json_t *v = json_object_get(d, f->name);
            if (!v) v = f->raw_default;
            json_t *x;
            int rc = v ? convert_default(f->type, v, depth + 1, &x) : REG_ESCHEMA;
            if (!rc && json_object_set_new_nocheck(r, f->name, x)) rc = REG_ENOMEM;
            if (rc) {
                json_decref(r);
                return rc;
            }
        }
        break;
    }
    case K_UNION: {
        /* An Avro default for a union is a value of its first branch. */
        if (nd->n == 0) return REG_ESCHEMA;
        const struct node *b = nd->branches[0];
        json_t *x;
        int rc = convert_default(b, d, depth + 1, &x);
        if (rc) return rc;
        if (b->kind == K_NULL || nd->nullable >= 0) {
            r = x;
        } else {
            r = json_object();
            if (!r || json_object_set_new_nocheck(r, branch_label(b), x)) {
                json_decref(r);
                return REG_ENOMEM;
            }
        }
        break;
    }
    }
    if (!r) return REG_ENOMEM;
    *out = r;
    return 0;
}

static size_t compute_min_size(struct node *nd)
{
    if (nd->min_state == 2) return nd->min_size;
    if (nd->min_state == 1) return 0; /* a recursive reference: 0 is a safe (lower) bound */
    nd->min_state = 1;
    size_t m = 0;
    switch (nd->kind) {
    case K_NULL:
        m = 0;
        break;
    case K_FLOAT:
        m = 4;
        break;
    case K_DOUBLE:
        m = 8;
        break;
    case K_FIXED:
        m = (size_t)nd->size;
        break;
    case K_RECORD:
        for (size_t i = 0; i < nd->n; i++)
            m += compute_min_size(nd->fields[i].type);
        break;
    case K_UNION:
        m = 1;
        for (size_t i = 0; i < nd->n; i++)
            compute_min_size(nd->branches[i]);
        break;
    case K_ARRAY:
    case K_MAP:
        m = 1;
        compute_min_size(nd->items);
        break;
    default: /* boolean, int, long, bytes, string, enum: at least one byte */
        m = 1;
        break;
    }
    nd->min_size = m;
    nd->min_state = 2;
    return m;
}

/* Parses schema JSON text into a tree with converted defaults. */
static int tree_parse(const char *schema_json, struct tree **out)
{
    if (!schema_json || !out) return REG_ESCHEMA;
    struct tree *t = calloc(1, sizeof(*t));
    if (!t) return REG_ENOMEM;
    t->doc = json_loads(schema_json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    int rc = t->doc ? parse_schema(t, t->doc, NULL, 0, &t->root) : REG_ESCHEMA;
    for (size_t i = 0; rc == 0 && i < t->n; i++) {
        struct node *nd = t->nodes[i];
        for (size_t k = 0; rc == 0 && nd->kind == K_RECORD && k < nd->n; k++)
            if (nd->fields[k].raw_default)
                rc = convert_default(nd->fields[k].type, nd->fields[k].raw_default, 0,
                                     &nd->fields[k].def);
    }
    if (rc) {
        tree_free(t);
        return rc;
    }
    for (size_t i = 0; i < t->n; i++)
        compute_min_size(t->nodes[i]);
    *out = t;
    return 0;
}

/* ---- Parsing Canonical Form writer */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_put(struct sbuf *sb, const char *s, size_t n)
{
    if (sb->oom) return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *p = realloc(sb->p, cap);
        if (!p) {
            sb->oom = true;
            return;
        }
        sb->p = p;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = 0;
}

static void sb_lit(struct sbuf *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

/* [STRINGS]: characters as UTF-8, escaping only what JSON requires. (Names and symbols are
 * validated identifiers, so this is belt and braces.) */
static void sb_str(struct sbuf *sb, const char *s)
{
    sb_put(sb, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_put(sb, esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sb_put(sb, esc, 6);
        } else {
            sb_put(sb, s, 1);
        }
    }
    sb_put(sb, "\"", 1);
}

static void write_canonical(struct sbuf *sb, struct node *nd)
{
    switch (nd->kind) {
    case K_RECORD:
    case K_ENUM:
    case K_FIXED:
        /* [FULLNAMES]: the first occurrence in document order is the definition; every later
         * one is a reference by full name. */
        if (nd->emitted) {
            sb_str(sb, nd->fullname);
            return;
        }
        nd->emitted = 1;
        sb_lit(sb, "{\"name\":");
        sb_str(sb, nd->fullname);
        sb_lit(sb, ",\"type\":");
        sb_str(sb, kind_names[nd->kind]);
        if (nd->kind == K_RECORD) {
            sb_lit(sb, ",\"fields\":[");
            for (size_t i = 0; i < nd->n; i++) {
                sb_lit(sb, i ? ",{\"name\":" : "{\"name\":");
                sb_str(sb, nd->fields[i].name);
                sb_lit(sb, ",\"type\":");
                write_canonical(sb, nd->fields[i].type);
                sb_lit(sb, "}");
            }
            sb_lit(sb, "]}");
        } else if (nd->kind == K_ENUM) {
            sb_lit(sb, ",\"symbols\":[");
            for (size_t i = 0; i < nd->n; i++) {
                if (i) sb_lit(sb, ",");
                sb_str(sb, nd->symbols[i]);
            }
            sb_lit(sb, "]}");
        } else {
            char num[32];
            snprintf(num, sizeof(num), ",\"size\":%" PRId64 "}", nd->size);
            sb_lit(sb, num);
        }
        return;
    case K_ARRAY:
    case K_MAP:
        sb_lit(sb, nd->kind == K_ARRAY ? "{\"type\":\"array\",\"items\":"
                                       : "{\"type\":\"map\",\"values\":");
        write_canonical(sb, nd->items);
        sb_lit(sb, "}");
        return;
    case K_UNION:
        sb_lit(sb, "[");
        for (size_t i = 0; i < nd->n; i++) {
            if (i) sb_lit(sb, ",");
            write_canonical(sb, nd->branches[i]);
        }
        sb_lit(sb, "]");
        return;
    default:
        sb_str(sb, kind_names[nd->kind]);
        return;
    }
}

/* The canonical form of a freshly parsed tree (the emitted marks are set, so once per tree). */
static int tree_canonical(struct tree *t, char **out)
{
    struct sbuf sb = {0};
    write_canonical(&sb, t->root);
    if (sb.oom || !sb.p) {
        free(sb.p);
        return REG_ENOMEM;
    }
    *out = sb.p;
    return 0;
}

int codec_canonical_form(const char *schema_json, char **out)
{
    struct tree *t;
    int rc = tree_parse(schema_json, &t);
    if (rc) return rc;
    rc = tree_canonical(t, out);
    tree_free(t);
    return rc;
}

int codec_fingerprint(const char *schema_json, uint64_t *out)
{
    char *canon;
    int rc = codec_canonical_form(schema_json, &canon);
    if (rc) return rc;
    *out = codec_crc64_avro(canon, strlen(canon));
    free(canon);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Registry */

/* One known schema. Owns its tree, canonical form and avro-c objects. */
struct entry {
    uint64_t fp;
    char *canonical;
    struct tree *tree;
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value; /* reused by every encode and decode with this schema */
    bool has_value;
    bool current;
};

/* The current schemas looked up last, by name (kept in the registry, which a thread's encodes
 * and decodes keep in its cache, where the entries' names are three pointers away: the first
 * look at them per record stalled on memory, a twentieth of encoding an event). */
enum { RECENT = 2, RECENT_NAME_MAX = 48 };
struct recent_entry {
    char name[RECENT_NAME_MAX]; /* "" when unused */
    struct entry *e;
};

/* Owns its entries; lookups are linear, there are a handful of schemas. */
struct codec_registry {
    struct entry **entries;
    uint64_t *fps; /* entries[i]->fp, side by side */
    size_t n, cap;
    struct recent_entry recent[RECENT];
    avro_reader_t reader; /* memory reader, re-pointed at each record */
    avro_writer_t writer; /* memory writer, re-pointed at each output */
};

static void entry_free(struct entry *e)
{
    if (!e) return;
    if (e->has_value) avro_value_decref(&e->value);
    if (e->iface) avro_value_iface_decref(e->iface);
    if (e->schema) avro_schema_decref(e->schema);
    tree_free(e->tree);
    free(e->canonical);
    free(e);
}

void codec_registry_free(codec_registry *reg)
{
    if (!reg) return;
    for (size_t i = 0; i < reg->n; i++)
        entry_free(reg->entries[i]);
    free(reg->entries);
    free(reg->fps);
    if (reg->reader) avro_reader_free(reg->reader);
    if (reg->writer) avro_writer_free(reg->writer);
    free(reg);
}

static struct entry *find_current(codec_registry *reg, const char *name)
{
    for (int i = 0; i < RECENT; i++)
        if (!strcmp(reg->recent[i].name, name)) return reg->recent[i].e;
    struct entry *e = NULL;
    for (size_t i = 0; i < reg->n && !e; i++)
        if (reg->entries[i]->current && strcmp(reg->entries[i]->tree->root->fullname, name) == 0)
            e = reg->entries[i];
    if (e && *name && strlen(name) < RECENT_NAME_MAX) {
        memmove(&reg->recent[1], &reg->recent[0], (RECENT - 1) * sizeof reg->recent[0]);
        strcpy(reg->recent[0].name, name);
        reg->recent[0].e = e;
    }
    return e;
}

static struct entry *find_fp(const codec_registry *reg, uint64_t fp)
{
    for (size_t i = 0; i < reg->n; i++)
        if (reg->fps[i] == fp) return reg->entries[i];
    return NULL;
}

static void make_current(codec_registry *reg, struct entry *e)
{
    struct entry *old = find_current(reg, e->tree->root->fullname);
    if (old) old->current = false;
    e->current = true;
    memset(reg->recent, 0, sizeof reg->recent); /* names now find other entries */
}

int codec_registry_add(codec_registry *reg, const char *schema_json, int current)
{
    if (!reg) return REG_EINVAL;
    struct entry *e = calloc(1, sizeof(*e));
    if (!e) return REG_ENOMEM;
    int rc = tree_parse(schema_json, &e->tree);
    if (rc) goto fail;
    /* Only named schemas can be looked up by name. */
    if (!is_named(e->tree->root->kind)) {
        rc = REG_ESCHEMA;
        goto fail;
    }
    if ((rc = tree_canonical(e->tree, &e->canonical))) goto fail;
    e->fp = codec_crc64_avro(e->canonical, strlen(e->canonical));

    struct entry *same = find_fp(reg, e->fp);
    if (same) {
        rc = strcmp(same->canonical, e->canonical) == 0 ? 0 : REG_EEXISTS;
        if (rc == 0 && current) make_current(reg, same);
        goto fail; /* not a failure when rc == 0: the known entry stays */
    }

    /* avro-c gets the canonical form: full names everywhere, nothing it could misread. */
    if (avro_schema_from_json_length(e->canonical, strlen(e->canonical), &e->schema)) {
        e->schema = NULL;
        rc = REG_ESCHEMA;
        goto fail;
    }
    if (!(e->iface = avro_generic_class_from_schema(e->schema))) {
        rc = REG_ESCHEMA;
        goto fail;
    }
    if (avro_generic_value_new(e->iface, &e->value)) {
        rc = REG_ENOMEM;
        goto fail;
    }
    e->has_value = true;

    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 8;
        struct entry **entries = realloc(reg->entries, cap * sizeof(*entries));
        if (entries) reg->entries = entries;
        uint64_t *fps = entries ? realloc(reg->fps, cap * sizeof(*fps)) : NULL;
        if (!fps) {
            rc = REG_ENOMEM;
            goto fail;
        }
        reg->fps = fps;
        reg->cap = cap;
    }
    reg->fps[reg->n] = e->fp;
    reg->entries[reg->n++] = e;
    if (current) make_current(reg, e);
    return 0;
fail:
    entry_free(e);
    return rc;
}

int codec_registry_new(codec_registry **out)
{
    if (!out) return REG_EINVAL;
    *out = NULL;
    codec_registry *reg = calloc(1, sizeof(*reg));
    if (!reg) return REG_ENOMEM;
    static const char empty[1];
    reg->reader = avro_reader_memory(empty, 0);
    reg->writer = avro_writer_memory(empty, 0);
    if (!reg->reader || !reg->writer) {
        codec_registry_free(reg);
        return REG_ENOMEM;
    }
    for (const struct schemas_embedded *s = schemas_embedded; s->file; s++) {
        int rc = codec_registry_add(reg, s->json, s->current);
        if (rc) {
            codec_registry_free(reg);
            return rc;
        }
    }
    *out = reg;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding: JSON -> avro-c generic value -> bytes */

static int av_err(int rc)
{
    return rc == ENOMEM ? REG_ENOMEM : REG_EINVAL;
}

/* Whether j has the JSON type that values of nd map to (an integer in range for int, a number
 * a float can hold for float): the first check of both encoders. */
static bool json_fits(const struct node *nd, const json_t *j)
{
    switch (nd->kind) {
    case K_NULL:
        return json_is_null(j);
    case K_BOOLEAN:
        return json_is_boolean(j);
    case K_INT:
        return json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
               json_integer_value(j) <= INT32_MAX;
    case K_LONG:
        return json_is_integer(j);
    case K_FLOAT: /* out-of-range double to float conversion is undefined behaviour in C */
        return json_is_number(j) && fabs(json_number_value(j)) <= FLT_MAX;
    case K_DOUBLE:
        return json_is_number(j);
    case K_STRING:
    case K_BYTES:
    case K_FIXED:
    case K_ENUM:
        return json_is_string(j);
    case K_ARRAY:
        return json_is_array(j);
    case K_MAP:
    case K_RECORD:
        return json_is_object(j);
    case K_UNION:
        return true; /* its branch says */
    }
    return false;
}

/* The value of record field f in object j, counted in *seen, or its default when j lacks it (a
 * field with a default may be left out); NULL when neither. */
/* Field f's value in the object j, or its default (NULL when it has none); *seen counts the
 * members found. *it walks j's members in their order: values built in the schema's field order
 * (as the projector builds events) are each the member at *it, found by one compare where
 * json_object_get hashed the name (a third of encoding an event); others are looked up. */
static const json_t *field_value(const struct field *f, const json_t *j, void **it, size_t *seen)
{
    const json_t *fv = NULL;
    if (*it && json_object_iter_key_len(*it) == f->name_len &&
        !memcmp(json_object_iter_key(*it), f->name, f->name_len)) {
        fv = json_object_iter_value(*it);
        *it = json_object_iter_next((json_t *)j, *it);
    } else {
        fv = json_object_get(j, f->name);
    }
    if (!fv) return f->def;
    (*seen)++;
    return fv;
}

/* Which branch of union nd the JSON value j takes, and the branch's value; nd->n when none. */
static size_t union_index(const struct node *nd, const json_t *j, const json_t **bv)
{
    size_t idx = nd->n;
    *bv = j;
    if (json_is_null(j)) {
        /* null is plain null in every union, as in Avro's JSON encoding */
        for (idx = 0; idx < nd->n && nd->branches[idx]->kind != K_NULL; idx++)
            ;
    } else if (nd->nullable >= 0) {
        idx = (size_t)nd->nullable;
    } else if (json_is_object(j) && json_object_size(j) == 1) {
        const char *label = json_object_iter_key(json_object_iter((json_t *)j));
        *bv = json_object_iter_value(json_object_iter((json_t *)j));
        for (idx = 0; idx < nd->n && strcmp(branch_label(nd->branches[idx]), label) != 0; idx++)
            ;
        if (idx < nd->n && nd->branches[idx]->kind == K_NULL)
            idx = nd->n; /* {"null": ...} is not the mapping of null */
    }
    return idx;
}

static int fill(const struct node *nd, const json_t *j, avro_value_t *v, int depth)
{
    if (depth > MAX_DEPTH || !json_fits(nd, j)) return REG_EINVAL;
    int rc = 0;
    switch (nd->kind) {
    case K_NULL:
        rc = avro_value_set_null(v);
        break;
    case K_BOOLEAN:
        rc = avro_value_set_boolean(v, json_is_true(j));
        break;
    case K_INT:
        rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
        break;
    case K_LONG:
        rc = avro_value_set_long(v, json_integer_value(j));
        break;
    case K_FLOAT:
        rc = avro_value_set_float(v, (float)json_number_value(j));
        break;
    case K_DOUBLE:
        rc = avro_value_set_double(v, json_number_value(j));
        break;
    case K_STRING:
        /* the size avro-c wants includes the terminating NUL */
        rc = avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
        break;
    case K_BYTES:
    case K_FIXED: {
        uint8_t *b;
        size_t blen;
        int r = json_to_latin1(json_string_value(j), json_string_length(j), &b, &blen);
        if (r) return r;
        if (nd->kind == K_FIXED && (int64_t)blen != nd->size)
            r = REG_EINVAL;
        else if (nd->kind == K_FIXED)
            rc = avro_value_set_fixed(v, b, blen);
        else
            rc = avro_value_set_bytes(v, b, blen);
        free(b);
        if (r) return r;
        break;
    }
    case K_ENUM: {
        const char *s = json_string_value(j);
        for (size_t k = 0; k < nd->n; k++)
            if (strcmp(nd->symbols[k], s) == 0)
                return avro_value_set_enum(v, (int)k) ? REG_EINVAL : 0;
        return REG_EINVAL;
    }
    case K_ARRAY: {
        for (size_t i = 0; i < json_array_size(j); i++) {
            avro_value_t child;
            if ((rc = avro_value_append(v, &child, NULL))) return av_err(rc);
            int r = fill(nd->items, json_array_get(j, i), &child, depth + 1);
            if (r) return r;
        }
        break;
    }
    case K_MAP: {
        const char *key;
        size_t klen;
        const json_t *val;
        json_object_keylen_foreach((json_t *)j, key, klen, val)
        {
            avro_value_t child;
            if (strlen(key) != klen) /* avro-c map keys are C strings */
                return REG_EINVAL;
            if ((rc = avro_value_add(v, key, &child, NULL, NULL))) return av_err(rc);
            int r = fill(nd->items, val, &child, depth + 1);
            if (r) return r;
        }
        break;
    }
    case K_RECORD: {
        size_t seen = 0;
        void *it = json_object_iter((json_t *)j);
        for (size_t i = 0; i < nd->n; i++) {
            const struct field *f = &nd->fields[i];
            const json_t *fv = field_value(f, j, &it, &seen);
            if (!fv) return REG_EINVAL;
            avro_value_t child;
            if ((rc = avro_value_get_by_index(v, i, &child, NULL))) return av_err(rc);
            int r = fill(f->type, fv, &child, depth + 1);
            if (r) return r;
        }
        /* A member the schema does not know is a caller's typo, not something to drop. */
        if (seen != json_object_size(j)) return REG_EINVAL;
        break;
    }
    case K_UNION: {
        const json_t *bv;
        size_t idx = union_index(nd, j, &bv);
        if (idx >= nd->n) return REG_EINVAL;
        avro_value_t branch;
        if ((rc = avro_value_set_branch(v, (int)idx, &branch))) return av_err(rc);
        return fill(nd->branches[idx], bv, &branch, depth + 1);
    }
    }
    return rc ? av_err(rc) : 0;
}

static int buf_reserve(codec_buf *out, size_t extra)
{
    if (extra > SIZE_MAX - out->len) return REG_ENOMEM;
    size_t need = out->len + extra;
    if (need <= out->cap) return 0;
    size_t cap = out->cap > 64 ? out->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(out->data, cap);
    if (!p) return REG_ENOMEM;
    out->data = p;
    out->cap = cap;
    return 0;
}

int codec_encode_avroc(codec_registry *reg, const char *name, const json_t *value, codec_buf *out)
{
    if (!reg || !name || !value || !out) return REG_EINVAL;
    struct entry *e = find_current(reg, name);
    if (!e) return REG_ENOTFOUND;
    if (avro_value_reset(&e->value)) return REG_ENOMEM;
    int rc = fill(e->tree->root, value, &e->value, 0);
    if (rc) return rc;
    size_t size;
    if (avro_value_sizeof(&e->value, &size)) return REG_EINVAL;
    if ((rc = buf_reserve(out, HEADER_LEN + size))) return rc;
    uint8_t *h = out->data + out->len;
    h[0] = MAGIC0;
    h[1] = MAGIC1;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(e->fp >> (8 * i));
    avro_writer_memory_set_dest(reg->writer, (const char *)h + HEADER_LEN, (int64_t)size);
    if (avro_value_write(reg->writer, &e->value) || (size_t)avro_writer_tell(reg->writer) != size)
        return REG_EINVAL;
    out->len += HEADER_LEN + size;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding straight from JSON to bytes, walking the tree: the same bytes as the avro-c path
 * above (tests and fuzz.codec compare them), without filling a generic value first, which was
 * most of an encode. */

static int put_bytes(codec_buf *out, const void *p, size_t n)
{
    int rc = buf_reserve(out, n);
    if (rc) return rc;
    memcpy(out->data + out->len, p, n);
    out->len += n;
    return 0;
}

/* Written in place once the buffer has room for the longest (every string's length and every
 * field of an event go through here: a copy from a local array was a few percent of encoding). */
static int put_long(codec_buf *out, int64_t v)
{
    if (out->cap - out->len < 10) {
        int rc = buf_reserve(out, 10);
        if (rc) return rc;
    }
    uint8_t *b = out->data + out->len;
    size_t n = 0;
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); /* zig-zag */
    while (u >= 0x80) {
        b[n++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    b[n++] = (uint8_t)u;
    out->len += n;
    return 0;
}

static int put_le(codec_buf *out, uint64_t bits, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++, bits >>= 8)
        b[i] = (uint8_t)bits;
    return put_bytes(out, b, n);
}

static int write_value(const struct node *nd, const json_t *j, codec_buf *out, int depth)
{
    if (depth > MAX_DEPTH || !json_fits(nd, j)) return REG_EINVAL;
    int rc;
    switch (nd->kind) {
    case K_NULL:
        return 0;
    case K_BOOLEAN:
        return put_bytes(out, json_is_true(j) ? "\1" : "\0", 1);
    case K_INT:
    case K_LONG:
        return put_long(out, json_integer_value(j));
    case K_FLOAT: {
        float f = (float)json_number_value(j);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        return put_le(out, bits, 4);
    }
    case K_DOUBLE: {
        double d = json_number_value(j);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return put_le(out, bits, 8);
    }
    case K_STRING:
        if ((rc = put_long(out, (int64_t)json_string_length(j)))) return rc;
        return put_bytes(out, json_string_value(j), json_string_length(j));
    case K_BYTES:
    case K_FIXED: {
        uint8_t *b;
        size_t blen;
        if ((rc = json_to_latin1(json_string_value(j), json_string_length(j), &b, &blen)))
            return rc;
        if (nd->kind == K_FIXED && (int64_t)blen != nd->size)
            rc = REG_EINVAL;
        else if (nd->kind == K_BYTES)
            rc = put_long(out, (int64_t)blen);
        if (!rc) rc = put_bytes(out, b, blen);
        free(b);
        return rc;
    }
    case K_ENUM: {
        const char *sym = json_string_value(j);
        for (size_t k = 0; k < nd->n; k++)
            if (strcmp(nd->symbols[k], sym) == 0) return put_long(out, (int64_t)k);
        return REG_EINVAL;
    }
    case K_ARRAY: {
        size_t n = json_array_size(j);
        if (n && (rc = put_long(out, (int64_t)n))) return rc; /* one block, as avro-c writes */
        for (size_t i = 0; i < n; i++)
            if ((rc = write_value(nd->items, json_array_get(j, i), out, depth + 1))) return rc;
        return put_long(out, 0);
    }
    case K_MAP: {
        size_t n = json_object_size(j);
        if (n && (rc = put_long(out, (int64_t)n))) return rc;
        const char *key;
        size_t klen;
        const json_t *val;
        json_object_keylen_foreach((json_t *)j, key, klen, val)
        {
            if (strlen(key) != klen) /* map keys are C strings on the avro-c side */
                return REG_EINVAL;
            if ((rc = put_long(out, (int64_t)klen)) || (rc = put_bytes(out, key, klen)) ||
                (rc = write_value(nd->items, val, out, depth + 1)))
                return rc;
        }
        return put_long(out, 0);
    }
    case K_RECORD: {
        size_t seen = 0;
        void *it = json_object_iter((json_t *)j);
        for (size_t i = 0; i < nd->n; i++) {
            const struct field *f = &nd->fields[i];
            const json_t *fv = field_value(f, j, &it, &seen);
            if (!fv) return REG_EINVAL;
            if ((rc = write_value(f->type, fv, out, depth + 1))) return rc;
        }
        /* A member the schema does not know is a caller's typo, not something to drop. */
        return seen == json_object_size(j) ? 0 : REG_EINVAL;
    }
    case K_UNION: {
        const json_t *bv;
        size_t idx = union_index(nd, j, &bv);
        if (idx >= nd->n) return REG_EINVAL;
        if ((rc = put_long(out, (int64_t)idx))) return rc;
        return write_value(nd->branches[idx], bv, out, depth + 1);
    }
    }
    return REG_EINVAL;
}

int codec_encode(codec_registry *reg, const char *name, const json_t *value, codec_buf *out)
{
    if (!reg || !name || !value || !out) return REG_EINVAL;
    struct entry *e = find_current(reg, name);
    if (!e) return REG_ENOTFOUND;
    size_t start = out->len;
    uint8_t h[HEADER_LEN] = {MAGIC0, MAGIC1};
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(e->fp >> (8 * i));
    int rc = put_bytes(out, h, HEADER_LEN);
    if (!rc) rc = write_value(e->tree->root, value, out, 0);
    if (rc) out->len = start; /* nothing appended */
    return rc;
}

/* The string node of nd where nd is a string or ["null", "string"] (then *null_at is the null's
 * branch index, else -1), or NULL. */
static const struct node *string_node(const struct node *nd, int *null_at)
{
    *null_at = -1;
    if (nd->kind == K_STRING) return nd;
    if (nd->kind != K_UNION || nd->nullable < 0 || nd->branches[nd->nullable]->kind != K_STRING)
        return NULL;
    *null_at = 1 - nd->nullable;
    return nd->branches[nd->nullable];
}

/* A string (or null: s NULL) of node nd, a string or ["null", "string"], as write_value writes
 * its JSON value. */
static int write_string(const struct node *nd, const char *s, size_t len, codec_buf *out)
{
    int null_at, rc;
    if (!string_node(nd, &null_at)) return REG_EINVAL;
    if (!s) return null_at < 0 ? REG_EINVAL : put_long(out, null_at);
    if (!utf8_valid(s, len)) return REG_EINVAL;
    if (null_at >= 0 && (rc = put_long(out, 1 - null_at))) return rc;
    if ((rc = put_long(out, (int64_t)len))) return rc;
    return put_bytes(out, s, len);
}

static int write_field(const struct node *nd, const codec_field *v, codec_buf *out);

/* A record's fields, in its schema's order. */
static int write_fields(const struct node *rec, const codec_field *fields, size_t n, codec_buf *out)
{
    if (rec->kind != K_RECORD || rec->n != n || (n && !fields)) return REG_EINVAL;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = write_field(rec->fields[i].type, &fields[i], out);
    return rc;
}

/* A field of type nd from its codec_field: the bytes write_value writes for the JSON value. */
static int write_field(const struct node *nd, const codec_field *v, codec_buf *out)
{
    int rc;
    switch (v->kind) {
    case CODEC_FIELD_STRING:
        return write_string(nd, v->str, v->len, out);
    case CODEC_FIELD_LONG:
        if (nd->kind == K_INT ? v->num < INT32_MIN || v->num > INT32_MAX : nd->kind != K_LONG)
            return REG_EINVAL;
        return put_long(out, v->num);
    case CODEC_FIELD_BOOL:
        if (nd->kind != K_BOOLEAN || (v->num != 0 && v->num != 1)) return REG_EINVAL;
        return put_bytes(out, &(uint8_t){(uint8_t)v->num}, 1);
    case CODEC_FIELD_MAP:
        if (nd->kind != K_MAP || (v->npairs && !v->pairs)) return REG_EINVAL;
        if (v->npairs && (rc = put_long(out, (int64_t)v->npairs))) return rc; /* one block */
        for (size_t i = 0; i < v->npairs; i++) {
            const codec_pair *p = &v->pairs[i];
            /* map keys are C strings on the avro-c side, as write_value holds them */
            if (!p->key || memchr(p->key, 0, p->key_len) || !utf8_valid(p->key, p->key_len))
                return REG_EINVAL;
            if ((rc = put_long(out, (int64_t)p->key_len)) ||
                (rc = put_bytes(out, p->key, p->key_len)) ||
                (rc = write_string(nd->items, p->val, p->val_len, out)))
                return rc;
        }
        return put_long(out, 0);
    case CODEC_FIELD_BRANCH:
        if (nd->kind != K_UNION || !v->str || !v->val == !v->sub) return REG_EINVAL;
        for (size_t idx = 0; idx < nd->n; idx++) {
            const struct node *b = nd->branches[idx];
            if (b->kind == K_NULL || strcmp(branch_label(b), v->str)) continue;
            if ((rc = put_long(out, (int64_t)idx))) return rc;
            return v->sub ? write_fields(b, v->sub, v->nsub, out) : write_value(b, v->val, out, 1);
        }
        return REG_EINVAL;
    }
    return REG_EINVAL;
}

int codec_encode_fields(codec_registry *reg, const char *name, const codec_field *fields, size_t n,
                        codec_buf *out)
{
    if (!reg || !name || (n && !fields) || !out) return REG_EINVAL;
    struct entry *e = find_current(reg, name);
    if (!e) return REG_ENOTFOUND;
    size_t start = out->len;
    uint8_t h[HEADER_LEN] = {MAGIC0, MAGIC1};
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(e->fp >> (8 * i));
    int rc = put_bytes(out, h, HEADER_LEN);
    if (!rc) rc = write_fields(e->tree->root, fields, n, out);
    if (rc) out->len = start; /* nothing appended */
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding: bytes -> (validated) -> avro-c generic value -> JSON -> resolved JSON */

int codec_peek_fingerprint(const void *data, size_t len, uint64_t *out)
{
    const uint8_t *p = data;
    if (!p || len < HEADER_LEN || p[0] != MAGIC0 || p[1] != MAGIC1) return REG_EDECODE;
    uint64_t fp = 0;
    for (int i = 0; i < 8; i++)
        fp |= (uint64_t)p[2 + i] << (8 * i);
    if (out) *out = fp;
    return 0;
}

struct cursor {
    const uint8_t *p;
    size_t left;
    size_t zero_budget; /* MAX_ZERO_SIZE_ITEMS, spent by elements that take no bytes */
};

/* A zig-zag varint of at most 64 significant bits (avro-c would shift past 63 otherwise). */
static int rd_long(struct cursor *c, int64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (!c->left) return REG_EDECODE;
        uint8_t b = *c->p++;
        c->left--;
        if (i == 9 && b > 1) return REG_EDECODE;
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    return REG_EDECODE;
}

static int skip(struct cursor *c, int64_t n)
{
    if (n < 0 || (uint64_t)n > c->left) return REG_EDECODE;
    c->p += n;
    c->left -= (size_t)n;
    return 0;
}

/* The count of the next block of an array or map of nd (0 after its last block), checked
 * against what the remaining bytes can hold: elements that take bytes must fit, the others
 * spend the decode's budget of them. */
static int rd_block_count(const struct node *nd, struct cursor *c, int64_t *count)
{
    size_t elem_min = nd->items->min_size + (nd->kind == K_MAP ? 1 : 0);
    int rc;
    if ((rc = rd_long(c, count))) return rc;
    if (*count == 0) return 0;
    if (*count < 0) {
        int64_t block_bytes;
        if (*count == INT64_MIN || (rc = rd_long(c, &block_bytes))) return REG_EDECODE;
        if (block_bytes < 0 || (uint64_t)block_bytes > c->left) return REG_EDECODE;
        *count = -*count;
    }
    if (elem_min > 0) {
        if ((uint64_t)*count > c->left / elem_min) return REG_EDECODE;
    } else {
        if ((uint64_t)*count > c->zero_budget) return REG_EDECODE;
        c->zero_budget -= (size_t)*count;
    }
    return 0;
}

/* Walks an Avro binary body against the writer tree without allocating, so that avro-c (which
 * trusts every prefix) only ever sees bodies it can read within bounds. */
static int validate(const struct node *nd, struct cursor *c, int depth)
{
    if (depth > MAX_DEPTH) return REG_EDECODE;
    int64_t x;
    int rc;
    switch (nd->kind) {
    case K_NULL:
        return 0;
    case K_BOOLEAN:
        if (!c->left || *c->p > 1) return REG_EDECODE;
        return skip(c, 1);
    case K_INT:
        if ((rc = rd_long(c, &x))) return rc;
        return x < INT32_MIN || x > INT32_MAX ? REG_EDECODE : 0;
    case K_LONG:
        return rd_long(c, &x);
    case K_FLOAT:
        return skip(c, 4);
    case K_DOUBLE:
        return skip(c, 8);
    case K_BYTES:
    case K_STRING:
        if ((rc = rd_long(c, &x))) return rc;
        return skip(c, x);
    case K_FIXED:
        return skip(c, nd->size);
    case K_ENUM:
    case K_UNION:
        if ((rc = rd_long(c, &x))) return rc;
        if (x < 0 || (uint64_t)x >= nd->n) return REG_EDECODE;
        return nd->kind == K_UNION ? validate(nd->branches[x], c, depth + 1) : 0;
    case K_RECORD:
        for (size_t i = 0; i < nd->n; i++)
            if ((rc = validate(nd->fields[i].type, c, depth + 1))) return rc;
        return 0;
    case K_ARRAY:
    case K_MAP: {
        for (;;) {
            int64_t count;
            if ((rc = rd_block_count(nd, c, &count))) return rc;
            if (count == 0) return 0;
            for (int64_t i = 0; i < count; i++) {
                if (nd->kind == K_MAP) {
                    if ((rc = rd_long(c, &x)) || (rc = skip(c, x))) return rc;
                }
                if ((rc = validate(nd->items, c, depth + 1))) return rc;
            }
        }
    }
    }
    return REG_EDECODE;
}

/* The codec's JSON mapping of value v (taken) of branch b of union nd: plain for null and
 * for ["null", T], else {"<b's short name>": v}. */
static int union_json(const struct node *nd, const struct node *b, json_t *v, json_t **out)
{
    if (b->kind == K_NULL || nd->nullable >= 0) return *out = v, 0;
    json_t *r = json_object();
    if (!r || json_object_set_new_nocheck(r, branch_label(b), v)) {
        json_decref(r);
        return REG_ENOMEM;
    }
    *out = r;
    return 0;
}

static int to_json(const struct node *nd, avro_value_t *v, int depth, json_t **out)
{
    if (depth > MAX_DEPTH) return REG_EDECODE;
    json_t *r = NULL;
    switch (nd->kind) {
    case K_NULL:
        r = json_null();
        break;
    case K_BOOLEAN: {
        int b;
        if (avro_value_get_boolean(v, &b)) return REG_EDECODE;
        r = json_boolean(b);
        break;
    }
    case K_INT: {
        int32_t i;
        if (avro_value_get_int(v, &i)) return REG_EDECODE;
        r = json_integer(i);
        break;
    }
    case K_LONG: {
        int64_t l;
        if (avro_value_get_long(v, &l)) return REG_EDECODE;
        r = json_integer(l);
        break;
    }
    case K_FLOAT:
    case K_DOUBLE: {
        double d;
        float f;
        if (nd->kind == K_FLOAT ? avro_value_get_float(v, &f) : avro_value_get_double(v, &d))
            return REG_EDECODE;
        if (nd->kind == K_FLOAT) d = f;
        if (real_json(d, &r)) return REG_EDECODE;
        break;
    }
    case K_STRING: {
        const char *s;
        size_t size;
        if (avro_value_get_string(v, &s, &size)) return REG_EDECODE;
        /* size counts the NUL; NULL on invalid UTF-8 */
        if (!(r = utf8_json(s ? s : "", size ? size - 1 : 0))) return REG_EDECODE;
        break;
    }
    case K_BYTES:
    case K_FIXED: {
        const void *b;
        size_t size;
        if (nd->kind == K_BYTES ? avro_value_get_bytes(v, &b, &size)
                                : avro_value_get_fixed(v, &b, &size))
            return REG_EDECODE;
        r = latin1_to_json(b, b ? size : 0);
        break;
    }
    case K_ENUM: {
        int i;
        if (avro_value_get_enum(v, &i) || i < 0 || (size_t)i >= nd->n) return REG_EDECODE;
        r = json_string(nd->symbols[i]);
        break;
    }
    case K_ARRAY:
    case K_MAP: {
        size_t n;
        if (avro_value_get_size(v, &n)) return REG_EDECODE;
        if (!(r = nd->kind == K_ARRAY ? json_array() : json_object())) return REG_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            avro_value_t child;
            const char *key = NULL;
            json_t *x;
            int rc = avro_value_get_by_index(v, i, &child, &key) ? REG_EDECODE : 0;
            if (!rc && nd->kind == K_MAP && !key) rc = REG_EDECODE;
            if (!rc) rc = to_json(nd->items, &child, depth + 1, &x);
            if (!rc && nd->kind == K_ARRAY && json_array_append_new(r, x)) rc = REG_ENOMEM;
            /* keys come off the wire: the checked setter rejects invalid UTF-8 */
            if (!rc && nd->kind == K_MAP && json_object_set_new(r, key, x)) rc = REG_EDECODE;
            if (rc) {
                json_decref(r);
                return rc;
            }
        }
        break;
    }
    case K_RECORD: {
        if (!(r = json_object())) return REG_ENOMEM;
        for (size_t i = 0; i < nd->n; i++) {
            avro_value_t child;
            json_t *x;
            int rc = avro_value_get_by_index(v, i, &child, NULL) ? REG_EDECODE : 0;
            if (!rc) rc = to_json(nd->fields[i].type, &child, depth + 1, &x);
            if (!rc &&
                json_object_setn_new_nocheck(r, nd->fields[i].name, nd->fields[i].name_len, x))
                rc = REG_ENOMEM;
            if (rc) {
                json_decref(r);
                return rc;
            }
        }
        break;
    }
    case K_UNION: {
        int d;
        avro_value_t branch;
        if (avro_value_get_discriminant(v, &d) || d < 0 || (size_t)d >= nd->n ||
            avro_value_get_current_branch(v, &branch))
            return REG_EDECODE;
        const struct node *b = nd->branches[d];
        json_t *x;
        int rc = to_json(b, &branch, depth + 1, &x);
        return rc ? rc : union_json(nd, b, x, out);
    }
    }
    if (!r) return REG_ENOMEM;
    *out = r;
    return 0;
}

static bool promotable(enum kind from, enum kind to)
{
    switch (from) {
    case K_INT:
        return to == K_LONG || to == K_FLOAT || to == K_DOUBLE;
    case K_LONG:
        return to == K_FLOAT || to == K_DOUBLE;
    case K_FLOAT:
        return to == K_DOUBLE;
    case K_STRING:
        return to == K_BYTES;
    case K_BYTES:
        return to == K_STRING;
    default:
        return false;
    }
}

/* Named types match by short name (the specification's "unqualified name"). */
static bool same_type(const struct node *w, const struct node *r)
{
    if (w->kind != r->kind) return false;
    if (is_named(w->kind) && strcmp(w->shortname, r->shortname) != 0) return false;
    return w->kind != K_FIXED || w->size == r->size;
}

/* Schema resolution on the JSON side: maps value v, written with writer schema w, onto reader
 * schema r. REG_ESCHEMA when the specification's resolution rules fail. */
static int resolve(const struct node *w, const struct node *r, const json_t *v, int depth,
                   json_t **out)
{
    if (depth > MAX_DEPTH) return REG_ESCHEMA;
    int rc;
    if (w->kind == K_UNION) {
        const json_t *bv;
        size_t idx = union_index(w, v, &bv);
        if (idx >= w->n) return REG_ESCHEMA;
        return resolve(w->branches[idx], r, bv, depth + 1, out);
    }
    if (r->kind == K_UNION) {
        size_t idx = r->n;
        for (size_t i = 0; i < r->n && idx == r->n; i++)
            if (same_type(w, r->branches[i])) idx = i;
        for (size_t i = 0; i < r->n && idx == r->n; i++)
            if (promotable(w->kind, r->branches[i]->kind)) idx = i;
        if (idx == r->n) return REG_ESCHEMA;
        const struct node *b = r->branches[idx];
        json_t *x;
        if ((rc = resolve(w, b, v, depth + 1, &x))) return rc;
        if (b->kind == K_NULL || r->nullable >= 0) return *out = x, 0;
        json_t *o = json_object();
        if (!o || json_object_set_new_nocheck(o, branch_label(b), x)) {
            json_decref(o);
            return REG_ENOMEM;
        }
        return *out = o, 0;
    }
    if (!same_type(w, r)) {
        if (!promotable(w->kind, r->kind)) return REG_ESCHEMA;
        json_t *x = NULL;
        if (r->kind == K_LONG) {
            x = json_integer(json_integer_value(v));
        } else if (r->kind == K_FLOAT || r->kind == K_DOUBLE) {
            x = json_real(json_number_value(v));
        } else if (r->kind == K_BYTES) { /* UTF-8 bytes become one code point each */
            x = latin1_to_json((const uint8_t *)json_string_value(v), json_string_length(v));
        } else { /* bytes to string: the bytes must be UTF-8 */
            uint8_t *b;
            size_t blen;
            if (json_to_latin1(json_string_value(v), json_string_length(v), &b, &blen))
                return REG_ESCHEMA;
            x = json_stringn((const char *)b, blen);
            free(b);
            if (!x) return REG_ESCHEMA;
        }
        if (!x) return REG_ENOMEM;
        return *out = x, 0;
    }
    switch (r->kind) {
    case K_RECORD: {
        json_t *o = json_object();
        if (!o) return REG_ENOMEM;
        for (size_t i = 0; i < r->n; i++) {
            const struct field *rf = &r->fields[i];
            const struct field *wf = NULL;
            for (size_t k = 0; k < w->n && !wf; k++)
                if (strcmp(w->fields[k].name, rf->name) == 0) wf = &w->fields[k];
            json_t *x = NULL;
            if (wf) {
                const json_t *wv = json_object_get(v, wf->name);
                rc = wv ? resolve(wf->type, rf->type, wv, depth + 1, &x) : REG_ESCHEMA;
            } else if (rf->def) {
                rc = (x = json_deep_copy(rf->def)) ? 0 : REG_ENOMEM;
            } else {
                rc = REG_ESCHEMA;
            }
            if (!rc && json_object_set_new_nocheck(o, rf->name, x)) rc = REG_ENOMEM;
            if (rc) {
                json_decref(o);
                return rc;
            }
        }
        return *out = o, 0;
    }
    case K_ENUM: {
        const char *s = json_string_value(v);
        for (size_t k = 0; s && k < r->n; k++)
            if (strcmp(r->symbols[k], s) == 0) return (*out = json_string(s)) ? 0 : REG_ENOMEM;
        if (r->enum_default < 0) return REG_ESCHEMA;
        return (*out = json_string(r->symbols[r->enum_default])) ? 0 : REG_ENOMEM;
    }
    case K_ARRAY:
    case K_MAP: {
        json_t *o = r->kind == K_ARRAY ? json_array() : json_object();
        if (!o) return REG_ENOMEM;
        if (r->kind == K_ARRAY) {
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *x;
                rc = resolve(w->items, r->items, json_array_get(v, i), depth + 1, &x);
                if (!rc && json_array_append_new(o, x)) rc = REG_ENOMEM;
                if (rc) {
                    json_decref(o);
                    return rc;
                }
            }
        } else {
            const char *key;
            size_t klen;
            const json_t *val;
            json_object_keylen_foreach((json_t *)v, key, klen, val)
            {
                json_t *x;
                rc = resolve(w->items, r->items, val, depth + 1, &x);
                if (!rc && json_object_setn_new_nocheck(o, key, klen, x)) rc = REG_ENOMEM;
                if (rc) {
                    json_decref(o);
                    return rc;
                }
            }
        }
        return *out = o, 0;
    }
    default: /* the same primitive or fixed: the writer's value as it is */
        *out = json_incref((json_t *)v);
        return 0;
    }
}

int codec_decode_avroc(codec_registry *reg, const char *name, const void *data, size_t len,
                       json_t **out)
{
    if (out) *out = NULL;
    if (!reg || !name || !out) return REG_EINVAL;
    struct entry *rd = find_current(reg, name);
    if (!rd) return REG_ENOTFOUND;
    uint64_t fp;
    if (codec_peek_fingerprint(data, len, &fp)) return REG_EDECODE;
    struct entry *wr = find_fp(reg, fp);
    if (!wr) return REG_EUNKNOWN_SCHEMA;

    const uint8_t *body = (const uint8_t *)data + HEADER_LEN;
    size_t body_len = len - HEADER_LEN;
    struct cursor c = {body, body_len, MAX_ZERO_SIZE_ITEMS};
    int rc = validate(wr->tree->root, &c, 0);
    if (rc) return rc;
    if (c.left) /* trailing bytes: not one record */
        return REG_EDECODE;

    avro_reader_memory_set_source(reg->reader, (const char *)body, (int64_t)body_len);
    if (avro_value_read(reg->reader, &wr->value)) return REG_EDECODE;
    json_t *j;
    if ((rc = to_json(wr->tree->root, &wr->value, 0, &j))) return rc;
    if (wr == rd) {
        *out = j;
        return 0;
    }
    rc = resolve(wr->tree->root, rd->tree->root, j, 0, out);
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding straight from bytes to JSON, walking the writer tree with validate()'s checks: the
 * same values as the avro-c path above (tests and fuzz.codec compare them), without reading into
 * a generic value first. */

static int rd_bytes(struct cursor *c, const uint8_t **p, size_t *n)
{
    int64_t x;
    int rc = rd_long(c, &x);
    if (rc) return rc;
    *p = c->p;
    *n = (size_t)x;
    return skip(c, x);
}

static uint64_t rd_le(struct cursor *c, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)c->p[i] << (8 * i);
    c->p += n;
    c->left -= n;
    return v;
}

static int read_value(const struct node *nd, struct cursor *c, int depth, json_t **out);

/* The elements of an array or map, block by block, into r. */
static int read_items(const struct node *nd, struct cursor *c, int depth, json_t *r)
{
    int rc;
    for (;;) {
        int64_t count;
        if ((rc = rd_block_count(nd, c, &count))) return rc;
        if (count == 0) return 0;
        for (int64_t i = 0; i < count; i++) {
            const uint8_t *key = NULL;
            size_t klen = 0;
            if (nd->kind == K_MAP && (rc = rd_bytes(c, &key, &klen))) return rc;
            json_t *x;
            if ((rc = read_value(nd->items, c, depth + 1, &x))) return rc;
            if (nd->kind == K_ARRAY) {
                if (json_array_append_new(r, x)) return REG_ENOMEM;
                continue;
            }
            /* Keys come off the wire: NUL (which no encoder here writes) and invalid UTF-8 are
             * refused; a repeated key keeps its first place and its last value, as avro-c. */
            if (memchr(key, 0, klen)) {
                json_decref(x);
                return REG_EDECODE;
            }
            if (json_object_setn_new(r, (const char *)key, klen, x)) /* it took x either way */
                return REG_EDECODE;
        }
    }
}

static int read_value(const struct node *nd, struct cursor *c, int depth, json_t **out)
{
    if (depth > MAX_DEPTH) return REG_EDECODE;
    json_t *r = NULL;
    int64_t x;
    int rc;
    switch (nd->kind) {
    case K_NULL:
        r = json_null();
        break;
    case K_BOOLEAN:
        if (!c->left || *c->p > 1) return REG_EDECODE;
        r = json_boolean(*c->p);
        skip(c, 1);
        break;
    case K_INT:
    case K_LONG:
        if ((rc = rd_long(c, &x))) return rc;
        if (nd->kind == K_INT && (x < INT32_MIN || x > INT32_MAX)) return REG_EDECODE;
        r = json_integer(x);
        break;
    case K_FLOAT:
    case K_DOUBLE: {
        size_t n = nd->kind == K_FLOAT ? 4 : 8;
        if (c->left < n) return REG_EDECODE;
        uint64_t bits = rd_le(c, n);
        double d;
        if (n == 4) {
            float f;
            uint32_t b32 = (uint32_t)bits;
            memcpy(&f, &b32, 4);
            d = f;
        } else {
            memcpy(&d, &bits, 8);
        }
        if ((rc = real_json(d, &r))) return rc;
        break;
    }
    case K_STRING: {
        const uint8_t *p;
        size_t n;
        if ((rc = rd_bytes(c, &p, &n))) return rc;
        if (!(r = utf8_json((const char *)p, n))) return REG_EDECODE; /* invalid UTF-8 */
        break;
    }
    case K_BYTES:
    case K_FIXED: {
        const uint8_t *p = c->p;
        size_t n = (size_t)nd->size;
        if (nd->kind == K_BYTES ? (rc = rd_bytes(c, &p, &n)) : (rc = skip(c, nd->size))) return rc;
        r = latin1_to_json(p, n);
        break;
    }
    case K_ENUM:
        if ((rc = rd_long(c, &x))) return rc;
        if (x < 0 || (uint64_t)x >= nd->n) return REG_EDECODE;
        r = json_string(nd->symbols[x]);
        break;
    case K_ARRAY:
    case K_MAP:
        if (!(r = nd->kind == K_ARRAY ? json_array() : json_object())) return REG_ENOMEM;
        if ((rc = read_items(nd, c, depth, r))) {
            json_decref(r);
            return rc;
        }
        break;
    case K_RECORD:
        if (!(r = json_object())) return REG_ENOMEM;
        for (size_t i = 0; i < nd->n; i++) {
            json_t *v;
            rc = read_value(nd->fields[i].type, c, depth + 1, &v);
            if (!rc &&
                json_object_setn_new_nocheck(r, nd->fields[i].name, nd->fields[i].name_len, v))
                rc = REG_ENOMEM;
            if (rc) {
                json_decref(r);
                return rc;
            }
        }
        break;
    case K_UNION: {
        if ((rc = rd_long(c, &x))) return rc;
        if (x < 0 || (uint64_t)x >= nd->n) return REG_EDECODE;
        const struct node *b = nd->branches[x];
        json_t *v;
        if ((rc = read_value(b, c, depth + 1, &v))) return rc;
        return union_json(nd, b, v, out);
    }
    }
    if (!r) return REG_ENOMEM;
    *out = r;
    return 0;
}

int codec_decode(codec_registry *reg, const char *name, const void *data, size_t len, json_t **out)
{
    if (out) *out = NULL;
    if (!reg || !name || !out) return REG_EINVAL;
    struct entry *rd = find_current(reg, name);
    if (!rd) return REG_ENOTFOUND;
    uint64_t fp;
    if (codec_peek_fingerprint(data, len, &fp)) return REG_EDECODE;
    struct entry *wr = find_fp(reg, fp);
    if (!wr) return REG_EUNKNOWN_SCHEMA;

    struct cursor c = {(const uint8_t *)data + HEADER_LEN, len - HEADER_LEN, MAX_ZERO_SIZE_ITEMS};
    json_t *j;
    int rc = read_value(wr->tree->root, &c, 0, &j);
    if (rc) return rc;
    if (c.left) { /* trailing bytes: not one record */
        json_decref(j);
        return REG_EDECODE;
    }
    if (wr == rd) {
        *out = j;
        return 0;
    }
    rc = resolve(wr->tree->root, rd->tree->root, j, 0, out);
    json_decref(j);
    return rc;
}

void codec_fields_release(codec_field *fields, size_t n)
{
    for (size_t i = 0; fields && i < n; i++) {
        codec_field *f = &fields[i];
        if (f->kind == CODEC_FIELD_BRANCH) {
            json_decref(f->val);
            codec_fields_release(f->sub, f->nsub);
        } else if (f->kind == CODEC_FIELD_MAP) {
            free(f->pairs);
        }
    }
    if (fields) memset(fields, 0, n * sizeof *fields);
}

/* The entry of as_fields[0..nas) for branch b of a union, or NULL: b is then decoded as JSON. */
static const codec_branch_fields *branch_as_fields(const struct node *b,
                                                   const codec_branch_fields *as_fields, size_t nas)
{
    for (size_t i = 0; b->kind == K_RECORD && i < nas; i++)
        if (!strcmp(as_fields[i].name, branch_label(b))) return &as_fields[i];
    return NULL;
}

/* Appends a map entry to m->pairs (m->npairs of cap). */
static int add_pair(codec_field *m, size_t *cap, const codec_pair *p)
{
    if (m->npairs == *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 8;
        codec_pair *grown = realloc(m->pairs, grown_cap * sizeof *grown);
        if (!grown) return REG_ENOMEM;
        m->pairs = grown;
        *cap = grown_cap;
    }
    m->pairs[m->npairs++] = *p;
    return 0;
}

static int pair_key_order(const codec_pair *a, const codec_pair *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);
    return c ? c : (a->key_len > b->key_len) - (a->key_len < b->key_len);
}

struct pair_ref {
    const codec_pair *p;
    size_t at;
};

static int pair_ref_order(const void *x, const void *y)
{
    const struct pair_ref *a = x, *b = y;
    int c = pair_key_order(a->p, b->p);
    return c ? c : (a->at > b->at) - (a->at < b->at);
}

/* Leaves a repeated key of map m once, at its first place with its last value, as
 * json_object_setn leaves it in codec_decode's object. A map off the wire may repeat keys
 * without end, so beyond a few dozen entries it goes by sorting, not by comparing all pairs. */
static int dedup_pairs(codec_field *m)
{
    size_t n = m->npairs, w = 0;
    codec_pair *pairs = m->pairs;
    if (n <= 32) {
        for (size_t i = 0; i < n; i++) {
            size_t j = 0;
            while (j < w && pair_key_order(&pairs[j], &pairs[i]))
                j++;
            if (j < w) {
                pairs[j].val = pairs[i].val;
                pairs[j].val_len = pairs[i].val_len;
            } else {
                pairs[w++] = pairs[i];
            }
        }
        m->npairs = w;
        return 0;
    }
    struct pair_ref *refs = malloc(n * sizeof *refs);
    unsigned char *first = calloc(n, 1);
    if (!refs || !first) {
        free(refs);
        free(first);
        return REG_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        refs[i] = (struct pair_ref){&pairs[i], i};
    qsort(refs, n, sizeof *refs, pair_ref_order);
    for (size_t g = 0, end; g < n; g = end) {
        for (end = g + 1; end < n && !pair_key_order(refs[g].p, refs[end].p); end++)
            ;
        codec_pair *kept = &pairs[refs[g].at];
        kept->val = refs[end - 1].p->val;
        kept->val_len = refs[end - 1].p->val_len;
        first[refs[g].at] = 1;
    }
    for (size_t i = 0; i < n; i++)
        if (first[i]) pairs[w++] = pairs[i];
    m->npairs = w;
    free(refs);
    free(first);
    return 0;
}

static int fields_of_json(const struct node *rec, const json_t *j, codec_field *fields,
                          const codec_branch_fields *as_fields, size_t nas);

/* Field *f of type nd from the resolved JSON value v, borrowing its strings. */
static int field_of_json(const struct node *nd, const json_t *v, codec_field *f,
                         const codec_branch_fields *as_fields, size_t nas)
{
    int null_at;
    if (string_node(nd, &null_at) && (json_is_string(v) || (null_at >= 0 && json_is_null(v)))) {
        *f = (codec_field){
            .kind = CODEC_FIELD_STRING, .str = json_string_value(v), .len = json_string_length(v)};
    } else if ((nd->kind == K_LONG || nd->kind == K_INT) && json_is_integer(v)) {
        *f = (codec_field){.kind = CODEC_FIELD_LONG, .num = json_integer_value(v)};
    } else if (nd->kind == K_BOOLEAN && json_is_boolean(v)) {
        *f = (codec_field){.kind = CODEC_FIELD_BOOL, .num = json_is_true(v)};
    } else if (nd->kind == K_MAP && string_node(nd->items, &null_at) && json_is_object(v)) {
        *f = (codec_field){.kind = CODEC_FIELD_MAP};
        size_t cap = 0;
        const char *key;
        size_t klen;
        const json_t *x;
        json_object_keylen_foreach((json_t *)v, key, klen, x)
        {
            codec_pair p = {key, json_string_value(x), klen, json_string_length(x)};
            int rc = p.val || null_at >= 0 ? add_pair(f, &cap, &p) : REG_EINVAL;
            if (rc) return rc; /* the caller releases f */
        }
    } else if (nd->kind == K_UNION && nd->nullable < 0 && json_is_object(v)) {
        const json_t *bv;
        size_t idx = union_index(nd, v, &bv); /* {"<branch>": value}, as write_value reads it */
        if (idx >= nd->n) return REG_EINVAL;
        const struct node *b = nd->branches[idx];
        const codec_branch_fields *as = branch_as_fields(b, as_fields, nas);
        *f = (codec_field){.kind = CODEC_FIELD_BRANCH, .str = branch_label(b)};
        if (!as) {
            f->val = json_incref((json_t *)bv);
            return 0;
        }
        if (as->n != b->n) return REG_EINVAL;
        int rc = fields_of_json(b, bv, as->fields, NULL, 0);
        if (!rc) {
            f->sub = as->fields;
            f->nsub = as->n;
        }
        return rc;
    } else {
        return REG_EINVAL;
    }
    return 0;
}

/* The fields of the record j (resolved onto rec), borrowing its strings. On failure nothing is
 * held. */
static int fields_of_json(const struct node *rec, const json_t *j, codec_field *fields,
                          const codec_branch_fields *as_fields, size_t nas)
{
    memset(fields, 0, rec->n * sizeof *fields);
    for (size_t i = 0; i < rec->n; i++) {
        const json_t *v = json_object_getn(j, rec->fields[i].name, rec->fields[i].name_len);
        int rc = v ? field_of_json(rec->fields[i].type, v, &fields[i], as_fields, nas) : REG_EINVAL;
        if (rc) {
            codec_fields_release(fields, i + 1);
            return rc;
        }
    }
    return 0;
}

static int read_fields(const struct node *rec, struct cursor *c, codec_field *fields,
                       const codec_branch_fields *as_fields, size_t nas);

/* A string of node nd (a string or ["null", "string"]) into *s (NULL for a null) and *len. */
static int read_string(const struct node *nd, struct cursor *c, const char **s, size_t *len)
{
    int null_at, rc;
    int64_t x;
    *s = NULL;
    *len = 0;
    if (!string_node(nd, &null_at)) return REG_EINVAL;
    if (null_at >= 0) {
        if ((rc = rd_long(c, &x))) return rc;
        if (x != 0 && x != 1) return REG_EDECODE;
        if (x == null_at) return 0;
    }
    const uint8_t *p = NULL;
    if ((rc = rd_bytes(c, &p, len))) return rc;
    if (!utf8_valid((const char *)p, *len)) return REG_EDECODE;
    *s = p ? (const char *)p : "";
    return 0;
}

/* Field *f of type nd from the bytes at c (written with the reader's own schema). */
static int read_field(const struct node *nd, struct cursor *c, codec_field *f,
                      const codec_branch_fields *as_fields, size_t nas)
{
    int64_t x = 0;
    int rc, null_at;
    *f = (codec_field){0};
    if (string_node(nd, &null_at)) {
        f->kind = CODEC_FIELD_STRING;
        return read_string(nd, c, &f->str, &f->len);
    }
    switch (nd->kind) {
    case K_INT:
    case K_LONG:
        f->kind = CODEC_FIELD_LONG;
        if ((rc = rd_long(c, &x))) return rc;
        if (nd->kind == K_INT && (x < INT32_MIN || x > INT32_MAX)) return REG_EDECODE;
        f->num = x;
        return 0;
    case K_BOOLEAN:
        f->kind = CODEC_FIELD_BOOL;
        if (!c->left || *c->p > 1) return REG_EDECODE;
        f->num = *c->p;
        return skip(c, 1);
    case K_MAP: {
        if (!string_node(nd->items, &null_at)) return REG_EINVAL;
        f->kind = CODEC_FIELD_MAP;
        size_t cap = 0;
        for (;;) {
            int64_t count;
            if ((rc = rd_block_count(nd, c, &count))) return rc;
            if (count == 0) return dedup_pairs(f);
            for (int64_t i = 0; i < count; i++) {
                const uint8_t *key = NULL;
                codec_pair p = {0};
                if ((rc = rd_bytes(c, &key, &p.key_len))) return rc;
                /* as read_items: a key with a NUL or of invalid UTF-8 is refused */
                if (memchr(key, 0, p.key_len) || !utf8_valid((const char *)key, p.key_len))
                    return REG_EDECODE;
                p.key = key ? (const char *)key : "";
                if ((rc = read_string(nd->items, c, &p.val, &p.val_len)) ||
                    (rc = add_pair(f, &cap, &p)))
                    return rc;
            }
        }
    }
    case K_UNION: {
        f->kind = CODEC_FIELD_BRANCH;
        if ((rc = rd_long(c, &x))) return rc;
        if (x < 0 || (uint64_t)x >= nd->n) return REG_EDECODE;
        const struct node *b = nd->branches[x];
        if (b->kind == K_NULL) return REG_EINVAL; /* a nullable other than a string's */
        f->str = branch_label(b);
        const codec_branch_fields *as = branch_as_fields(b, as_fields, nas);
        if (!as) return read_value(b, c, 1, &f->val);
        if (as->n != b->n) return REG_EINVAL;
        if ((rc = read_fields(b, c, as->fields, NULL, 0))) return rc;
        f->sub = as->fields;
        f->nsub = as->n;
        return 0;
    }
    default:
        return REG_EINVAL;
    }
}

/* A record's fields from the bytes at c. On failure nothing is held. */
static int read_fields(const struct node *rec, struct cursor *c, codec_field *fields,
                       const codec_branch_fields *as_fields, size_t nas)
{
    int rc = 0;
    memset(fields, 0, rec->n * sizeof *fields);
    for (size_t i = 0; i < rec->n && !rc; i++)
        if ((rc = read_field(rec->fields[i].type, c, &fields[i], as_fields, nas)))
            codec_fields_release(fields, i + 1);
    return rc;
}

int codec_fields_of_json(codec_registry *reg, const char *name, const json_t *value,
                         codec_field *fields, size_t n, const codec_branch_fields *as_fields,
                         size_t nas)
{
    if (!reg || !name || (n && !fields) || (nas && !as_fields)) return REG_EINVAL;
    memset(fields, 0, n * sizeof *fields);
    struct entry *e = find_current(reg, name);
    if (!e) return REG_ENOTFOUND;
    const struct node *rec = e->tree->root;
    if (rec->kind != K_RECORD || rec->n != n || !json_is_object(value)) return REG_EINVAL;
    return fields_of_json(rec, value, fields, as_fields, nas);
}

int codec_decode_fields(codec_registry *reg, const char *name, const void *data, size_t len,
                        codec_field *fields, size_t n, const codec_branch_fields *as_fields,
                        size_t nas, json_t **held)
{
    if (held) *held = NULL;
    if (!reg || !name || (n && !fields) || !held || (nas && !as_fields)) return REG_EINVAL;
    memset(fields, 0, n * sizeof *fields);
    struct entry *rd = find_current(reg, name);
    if (!rd) return REG_ENOTFOUND;
    const struct node *rec = rd->tree->root;
    if (rec->kind != K_RECORD || rec->n != n) return REG_EINVAL;
    uint64_t fp;
    if (codec_peek_fingerprint(data, len, &fp)) return REG_EDECODE;
    struct entry *wr = find_fp(reg, fp);
    if (!wr) return REG_EUNKNOWN_SCHEMA;
    if (wr != rd) { /* an older writer: decoded and resolved whole */
        json_t *j = NULL;
        int rc = codec_decode(reg, name, data, len, &j);
        if (!rc) rc = fields_of_json(rec, j, fields, as_fields, nas);
        if (rc)
            json_decref(j);
        else
            *held = j;
        return rc;
    }
    struct cursor c = {(const uint8_t *)data + HEADER_LEN, len - HEADER_LEN, MAX_ZERO_SIZE_ITEMS};
    int rc = read_fields(rec, &c, fields, as_fields, nas);
    if (!rc && c.left) { /* trailing bytes: not one record */
        codec_fields_release(fields, n);
        rc = REG_EDECODE;
    }
    return rc;
}
