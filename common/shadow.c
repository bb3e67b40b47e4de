/*
 * shadow.c - the shadow document's rules (shadow.h): checking and parsing update requests, the
 * deep merge with its per-leaf metadata, the delta, and the size the limit counts. AWS IoT Device
 * Shadow's documented behaviour is the reference ("Device Shadow service documents": delta state,
 * empty sections, arrays; "Interacting with shadows": deleting properties with null); where AWS
 * leaves room, the choices are these:
 *
 * - Numbers compare by value in the delta: desired 1 against reported 1.0 is no difference
 *   (jansson's json_equal would say they differ; a device cannot control which form its JSON
 *   library writes).
 * - No section ever holds an empty object below its root: an object emptied by deletions is
 *   removed, and a patch's object that writes nothing (`{}`, or only deletions of absent keys)
 *   creates nothing and leaves whatever was at its key. So {"a":{"b":null}} on a scalar `a` keeps
 *   the scalar: the update named no field it could write.
 * - `null` is refused anywhere under an array, also inside an object in an array: arrays are
 *   stored as they come, and a stored null would read as a deletion when merged or diffed again.
 * - `{}` is one level deep (as jsonbody.c counts): a container is a level whatever it holds.
 * - `version` must be a JSON integer: 3.0 and "3" are refused like -1.
 * - A client token is measured in bytes; one holding U+0000 is refused (the C string handed out
 *   would not be the token). On a refused request *out still holds the client token when that
 *   member itself was valid, so that the rejection can carry it back, as AWS's rejected documents
 *   carry clientToken.
 * - Every leaf an update writes is stamped, also when its value did not change.
 * - Metadata stamps arrays as leaves, as AWS's example document does ("sequence": {"timestamp"}).
 *
 * shadow_merge also accepts NULL (or anything but an object) in *state or *meta and reads it as
 * an empty object; it works on copies and swaps them in at the end, so on REG_ENOMEM both are as
 * they were. A NULL patch (a section absent from the request) writes nothing. A patch that is
 * neither an object nor JSON null has not been through shadow_check_patch: REG_EINVAL.
 *
 * Object keys are handled with their lengths (jansson allows U+0000 in keys built by code).
 */
#include "shadow.h"

#include "err.h"
#include "jsonfast.h"

#include <string.h>

void shadow_limits_default(shadow_limits *l)
{
    if (!l->max_bytes) l->max_bytes = 8192;
    if (!l->max_depth) l->max_depth = 6;
    if (!l->max_client_token) l->max_client_token = 64;
}

static int fail(const char **why, const char *reason)
{
    if (why) *why = reason;
    return REG_EINVAL;
}

static int is_key(const char *k, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

/* ---------------------------------------------------------------------------------------------
 * Checking requests */

enum fault { FAULT_NONE, FAULT_NOT_OBJECT, FAULT_TOO_DEEP, FAULT_NULL_IN_ARRAY };

/* Where a patch sits in its request, for the message that names it. */
enum where { AT_PATCH, AT_STATE_DESIRED, AT_STATE_REPORTED, AT_DESIRED, AT_REPORTED };

#define FAULT_MESSAGES(at)                                                                         \
    {                                                                                              \
        NULL, at ": must be an object or null", at ": deeper than the depth limit",                \
            at ": null inside an array"                                                            \
    }

static const char *const fault_message[][4] = {
    [AT_PATCH] = FAULT_MESSAGES("patch"),
    [AT_STATE_DESIRED] = FAULT_MESSAGES("state.desired"),
    [AT_STATE_REPORTED] = FAULT_MESSAGES("state.reported"),
    [AT_DESIRED] = FAULT_MESSAGES("desired"),
    [AT_REPORTED] = FAULT_MESSAGES("reported"),
};

/* levels: how many levels of containers v may still open. */
static enum fault check_value(const json_t *v, int levels, int in_array)
{
    if (json_is_null(v)) return in_array ? FAULT_NULL_IN_ARRAY : FAULT_NONE;
    if (!json_is_object(v) && !json_is_array(v)) return FAULT_NONE;
    if (levels <= 0) return FAULT_TOO_DEEP;
    enum fault f = FAULT_NONE;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c)
        {
            if ((f = check_value(c, levels - 1, in_array))) break;
        }
    } else {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            if ((f = check_value(c, levels - 1, 1))) break;
        }
    }
    return f;
}

static enum fault check_patch(const json_t *patch, const shadow_limits *l)
{
    if (json_is_null(patch)) return FAULT_NONE;
    if (!json_is_object(patch)) return FAULT_NOT_OBJECT;
    return check_value(patch, l->max_depth, 0);
}

int shadow_check_patch(const json_t *patch, const shadow_limits *l, const char **why)
{
    enum fault f = check_patch(patch, l);
    return f ? fail(why, fault_message[AT_PATCH][f]) : 0;
}

/* The section `name` of obj, checked; *out stays NULL when it is absent. */
static int section_member(const json_t *obj, const char *name, enum where at,
                          const shadow_limits *l, const json_t **out, const char **why)
{
    const json_t *v = json_object_get(obj, name);
    if (!v) return 0;
    enum fault f = check_patch(v, l);
    if (f) return fail(why, fault_message[at][f]);
    *out = v;
    return 0;
}

static int version_member(const json_t *obj, int64_t *out, const char **why)
{
    const json_t *v = json_object_get(obj, "version");
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fail(why, "version: must be a non-negative integer");
    *out = json_integer_value(v);
    return 0;
}

struct token_messages {
    const char *not_string, *too_long, *nul;
};

static const struct token_messages mqtt_token = {
    "clientToken: must be a string",
    "clientToken: longer than the limit",
    "clientToken: contains U+0000",
};

static const struct token_messages http_token = {
    "client_token: must be a string",
    "client_token: longer than the limit",
    "client_token: contains U+0000",
};

static int token_member(const json_t *obj, const char *name, const struct token_messages *m,
                        const shadow_limits *l, const char **out, const char **why)
{
    const json_t *v = json_object_get(obj, name);
    if (!v) return 0;
    if (!json_is_string(v)) return fail(why, m->not_string);
    size_t n = json_string_length(v);
    if (n > l->max_client_token) return fail(why, m->too_long);
    if (memchr(json_string_value(v), 0, n)) return fail(why, m->nul);
    *out = json_string_value(v);
    return 0;
}

int shadow_parse_mqtt_update(const json_t *msg, const shadow_limits *l, shadow_update *out,
                             const char **why)
{
    *out = (shadow_update){.version = -1};
    if (!json_is_object(msg)) return fail(why, "message: must be a JSON object");
    if (token_member(msg, "clientToken", &mqtt_token, l, &out->client_token, why))
        return REG_EINVAL;
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)msg, k, klen, v)
    {
        if (!is_key(k, klen, "state") && !is_key(k, klen, "version") &&
            !is_key(k, klen, "clientToken"))
            return fail(why, "message: only state, version and clientToken may appear");
    }
    const json_t *state = json_object_get(msg, "state");
    if (!state) return fail(why, "state: missing");
    if (!json_is_object(state)) return fail(why, "state: must be an object");
    json_object_keylen_foreach((json_t *)state, k, klen, v)
    {
        if (!is_key(k, klen, "desired") && !is_key(k, klen, "reported"))
            return fail(why, "state: only desired and reported may appear");
    }
    if (json_object_size(state) == 0) return fail(why, "state: must hold desired or reported");
    if (section_member(state, "desired", AT_STATE_DESIRED, l, &out->desired, why) ||
        section_member(state, "reported", AT_STATE_REPORTED, l, &out->reported, why) ||
        version_member(msg, &out->version, why)) {
        out->desired = out->reported = NULL;
        return REG_EINVAL;
    }
    return 0;
}

int shadow_parse_http_update(const json_t *body, const char *section, const shadow_limits *l,
                             shadow_update *out, const char **why)
{
    *out = (shadow_update){.version = -1};
    int desired = section && strcmp(section, "desired") == 0;
    if (!desired && !(section && strcmp(section, "reported") == 0))
        return fail(why, "section: must be desired or reported");
    if (!json_is_object(body)) return fail(why, "body: must be a JSON object");
    if (token_member(body, "client_token", &http_token, l, &out->client_token, why))
        return REG_EINVAL;
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)body, k, klen, v)
    {
        if (!is_key(k, klen, section) && !is_key(k, klen, "version") &&
            !is_key(k, klen, "client_token"))
            return fail(why, desired ? "body: only desired, version and client_token may appear"
                                     : "body: only reported, version and client_token may appear");
    }
    if (!json_object_get(body, section))
        return fail(why, desired ? "desired: missing" : "reported: missing");
    const json_t **slot = desired ? &out->desired : &out->reported;
    if (section_member(body, section, desired ? AT_DESIRED : AT_REPORTED, l, slot, why) ||
        version_member(body, &out->version, why)) {
        *slot = NULL;
        return REG_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The merge */

static json_t *stamp(int64_t timestamp)
{
    return json_pack("{sI}", "timestamp", (json_int_t)timestamp);
}

/* Merges patch into s and m, objects owned by the merge (copies of the caller's). */
static int merge_into(json_t *s, json_t *m, const json_t *patch, int64_t timestamp)
{
    const char *k;
    size_t klen;
    json_t *p;
    json_object_keylen_foreach((json_t *)patch, k, klen, p)
    {
        if (json_is_null(p)) {
            json_object_deln(s, k, klen);
            json_object_deln(m, k, klen);
            continue;
        }
        if (!json_is_object(p)) {
            if (json_object_setn_new(s, k, klen, jsonfast_copy(p)) ||
                json_object_setn_new(m, k, klen, stamp(timestamp)))
                return REG_ENOMEM;
            continue;
        }
        json_t *sv = json_object_getn(s, k, klen);
        if (json_is_object(sv)) {
            json_t *mv = json_object_getn(m, k, klen);
            if (!json_is_object(mv)) {
                /* metadata that does not mirror the state (none given): start it here */
                mv = json_object();
                if (json_object_setn_new(m, k, klen, mv)) return REG_ENOMEM;
            }
            if (merge_into(sv, mv, p, timestamp)) return REG_ENOMEM;
            if (json_object_size(sv) == 0) {
                json_object_deln(s, k, klen);
                json_object_deln(m, k, klen);
            }
            continue;
        }
        json_t *ns = json_object(), *nm = json_object();
        if (!ns || !nm || merge_into(ns, nm, p, timestamp)) {
            json_decref(ns);
            json_decref(nm);
            return REG_ENOMEM;
        }
        if (json_object_size(ns) == 0) {
            json_decref(ns);
            json_decref(nm);
            continue;
        }
        /* both calls run: each takes its value, even when it fails */
        int rs = json_object_setn_new(s, k, klen, ns);
        int rm = json_object_setn_new(m, k, klen, nm);
        if (rs || rm) return REG_ENOMEM;
    }
    return 0;
}

int shadow_merge(json_t **state, json_t **meta, const json_t *patch, int64_t timestamp)
{
    if (!patch) return 0;
    if (!json_is_object(patch) && !json_is_null(patch)) return REG_EINVAL;
    int keep = json_is_object(patch);
    json_t *s = keep && json_is_object(*state) ? jsonfast_copy(*state) : json_object();
    json_t *m = keep && json_is_object(*meta) ? jsonfast_copy(*meta) : json_object();
    if (!s || !m || merge_into(s, m, patch, timestamp)) {
        json_decref(s);
        json_decref(m);
        return REG_ENOMEM;
    }
    json_decref(*state);
    *state = s;
    json_decref(*meta);
    *meta = m;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The delta and the metadata of a shape */

/* An integer and a real are equal when the real is exactly that integer; the range check comes
 * first because converting an out-of-range double to an integer is undefined. */
static int numbers_equal(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b))
        return json_integer_value(a) == json_integer_value(b);
    if (json_is_real(a) && json_is_real(b)) return json_real_value(a) == json_real_value(b);
    json_int_t i = json_integer_value(json_is_integer(a) ? a : b);
    double d = json_real_value(json_is_real(a) ? a : b);
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return 0;
    return (double)(json_int_t)d == d && (json_int_t)d == i;
}

/* json_equal, except that numbers compare by value. */
static int values_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) return numbers_equal(a, b);
    if (json_typeof(a) != json_typeof(b)) return 0;
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return 0;
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach((json_t *)a, k, klen, v)
        {
            const json_t *w = json_object_getn(b, k, klen);
            if (!w || !values_equal(v, w)) return 0;
        }
        return 1;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!values_equal(json_array_get(a, i), json_array_get(b, i))) return 0;
        return 1;
    }
    return json_equal(a, b);
}

static int delta_into(json_t *out, const json_t *desired, const json_t *reported)
{
    const char *k;
    size_t klen;
    json_t *d;
    json_object_keylen_foreach((json_t *)desired, k, klen, d)
    {
        const json_t *r = json_object_getn(reported, k, klen);
        json_t *piece;
        if (json_is_object(d) && json_is_object(r)) {
            piece = json_object();
            if (!piece || delta_into(piece, d, r)) {
                json_decref(piece);
                return REG_ENOMEM;
            }
            if (json_object_size(piece) == 0) {
                json_decref(piece);
                continue;
            }
        } else if (r && values_equal(d, r)) {
            continue;
        } else {
            piece = jsonfast_copy(d);
        }
        if (json_object_setn_new(out, k, klen, piece)) return REG_ENOMEM;
    }
    return 0;
}

json_t *shadow_delta(const json_t *desired, const json_t *reported)
{
    json_t *out = json_object();
    if (out && delta_into(out, desired, reported)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static int meta_into(json_t *out, const json_t *meta, const json_t *shape)
{
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)shape, k, klen, v)
    {
        const json_t *mv = json_object_getn(meta, k, klen);
        if (!mv) continue;
        json_t *piece;
        if (json_is_object(v)) {
            piece = json_object();
            if (!piece || meta_into(piece, mv, v)) {
                json_decref(piece);
                return REG_ENOMEM;
            }
            if (json_object_size(piece) == 0) {
                json_decref(piece);
                continue;
            }
        } else {
            piece = jsonfast_copy(mv);
        }
        if (json_object_setn_new(out, k, klen, piece)) return REG_ENOMEM;
    }
    return 0;
}

json_t *shadow_meta_of(const json_t *meta, const json_t *shape)
{
    json_t *out = json_object();
    if (out && meta_into(out, meta, shape)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* An absent section (NULL) counts nothing. */
static size_t compact_size(const json_t *j)
{
    return j ? json_dumpb(j, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY) : 0;
}

size_t shadow_state_size(const json_t *desired, const json_t *reported)
{
    return compact_size(desired) + compact_size(reported);
}
