/*
 * test_shadow.c - unit tests for common/shadow.c (the shadow document's rules).
 *
 * Tables built from the rules in shadow.h and API.md and from AWS IoT Device Shadow's published
 * examples ("Device Shadow service documents": the delta state examples, empty sections, arrays;
 * "Interacting with shadows" and the older "Device Shadow Service Data Flow" light bulb walk
 * through): merges {state, metadata, patch, timestamp} -> {state, metadata}, each merged twice
 * to show it idempotent; deltas {desired, reported} -> delta; the metadata of a shape; parsing of
 * MQTT messages and HTTP bodies, good and bad, with the reason expected; the limits (depth 6
 * against 7, the client token's 64 bytes against 65, versions); shadow_state_size. An allocator
 * that fails after n allocations, for every n, shows that the merge leaves its inputs as they
 * were when it runs out of memory, and that nothing leaks.
 *
 * JSON in the tables is written with ' for " and @N for a metadata leaf, {"timestamp": N}.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "shadow.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers */

/* The JSON value of text with ' for " and @N for {"timestamp":N}; NULL for NULL. */
static json_t *J(const char *text)
{
    if (!text) return NULL;
    char *s = malloc(strlen(text) * 15 + 1), *o = s;
    assert_non_null(s);
    for (const char *p = text; *p; p++) {
        if (*p == '@') {
            char *end;
            long ts = strtol(p + 1, &end, 10);
            o += sprintf(o, "{\"timestamp\":%ld}", ts);
            p = end - 1;
        } else {
            *o++ = *p == '\'' ? '"' : *p;
        }
    }
    *o = 0;
    json_error_t e;
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    free(s);
    if (!j) fail_msg("bad test JSON %s: %s", text, e.text);
    return j;
}

/* got must be exactly want (json_equal: 1 and 1.0 differ here). */
static void check_json(const json_t *got, const char *want, const char *what)
{
    json_t *w = J(want);
    if (json_equal(got, w)) {
        json_decref(w);
        return;
    }
    size_t flags = JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY;
    char *g = got ? json_dumps(got, flags) : NULL, *x = json_dumps(w, flags);
    print_error("%s:\n  got  %s\n  want %s\n", what, g ? g : "NULL", x);
    free(g);
    free(x);
    json_decref(w);
    fail();
}

static shadow_limits limits(void)
{
    shadow_limits l = {0};
    shadow_limits_default(&l);
    return l;
}

/* An object nested `levels` deep, {"a":{"a":...leaf}}, with leaf (owned) at the bottom. */
static json_t *nested(int levels, json_t *leaf)
{
    json_t *j = leaf;
    for (int i = 0; i < levels; i++) {
        json_t *o = json_object();
        assert_int_equal(json_object_set_new(o, "a", j), 0);
        j = o;
    }
    return j;
}

/* Empties every object and array in j, however deep. */
static void scrub(json_t *j)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_object(j)) {
        json_object_foreach(j, k, v)
        {
            scrub(v);
        }
        json_object_clear(j);
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v)
        {
            scrub(v);
        }
        json_array_clear(j);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* limits */

static void test_limits_default(void **state)
{
    shadow_limits l = limits();
    assert_int_equal(l.max_bytes, 8192);
    assert_int_equal(l.max_depth, 6);
    assert_int_equal(l.max_client_token, 64);
}

/* ------------------------------------------------------------------------------------------ */
/* merge */

static const struct merge_case {
    const char *name;
    const char *state, *meta; /* NULL: a NULL pointer */
    const char *patch;
    int64_t ts;
    const char *state_after, *meta_after;
} merge_cases[] = {
    /* AWS light bulb: the first report creates the shadow */
    {"patch on empty state", "{}", "{}", "{'color':'red'}", 1469564492, "{'color':'red'}",
     "{'color':@1469564492}"},
    {"NULL state and meta are empty objects", NULL, NULL, "{'a':1}", 5, "{'a':1}", "{'a':@5}"},
    /* AWS "Updating a shadow": {"color": {"r": 10}, "engine": "ON"} */
    {"nested create", "{}", "{}", "{'color':{'r':10},'engine':'ON'}", 7,
     "{'color':{'r':10},'engine':'ON'}", "{'color':{'r':@7},'engine':@7}"},
    {"nested merge keeps siblings", "{'lights':{'on':true,'level':3},'x':1}",
     "{'lights':{'on':@1,'level':@1},'x':@1}", "{'lights':{'level':5}}", 2,
     "{'lights':{'on':true,'level':5},'x':1}", "{'lights':{'on':@1,'level':@2},'x':@1}"},
    {"nested delete", "{'a':{'b':1,'c':2}}", "{'a':{'b':@1,'c':@1}}", "{'a':{'b':null}}", 2,
     "{'a':{'c':2}}", "{'a':{'c':@1}}"},
    /* AWS "Deleting a property": {"state": {"desired": {"engine": null}}} */
    {"delete a property", "{'color':'green','engine':'ON'}", "{'color':@1,'engine':@1}",
     "{'engine':null}", 2, "{'color':'green'}", "{'color':@1}"},
    {"delete of an absent key", "{'a':1}", "{'a':@1}", "{'b':null}", 2, "{'a':1}", "{'a':@1}"},
    {"delete under an absent object creates nothing", "{'a':1}", "{'a':@1}",
     "{'x':{'y':null,'z':{'w':null}}}", 2, "{'a':1}", "{'a':@1}"},
    {"object replacing a scalar", "{'a':5}", "{'a':@1}", "{'a':{'b':1}}", 2, "{'a':{'b':1}}",
     "{'a':{'b':@2}}"},
    {"scalar replacing an object", "{'a':{'b':1,'c':{'d':2}}}", "{'a':{'b':@1,'c':{'d':@1}}}",
     "{'a':7}", 2, "{'a':7}", "{'a':@2}"},
    /* AWS "Array values in shadow documents" */
    {"array replacing an array", "{'colors':['RED','GREEN','BLUE']}", "{'colors':@1}",
     "{'colors':['RED']}", 2, "{'colors':['RED']}", "{'colors':@2}"},
    {"array replacing an object", "{'a':{'b':1}}", "{'a':{'b':@1}}", "{'a':[1,{'b':2},[]]}", 2,
     "{'a':[1,{'b':2},[]]}", "{'a':@2}"},
    {"object replacing an array", "{'a':[1,2]}", "{'a':@1}", "{'a':{'b':[3]}}", 2,
     "{'a':{'b':[3]}}", "{'a':{'b':@2}}"},
    {"deleting the last key removes the objects it empties", "{'a':{'b':{'c':1}},'x':1}",
     "{'a':{'b':{'c':@1}},'x':@1}", "{'a':{'b':{'c':null}}}", 2, "{'x':1}", "{'x':@1}"},
    {"deleting the last key of one branch keeps the other", "{'a':{'b':{'c':1},'d':2}}",
     "{'a':{'b':{'c':@1},'d':@1}}", "{'a':{'b':{'c':null}}}", 2, "{'a':{'d':2}}", "{'a':{'d':@1}}"},
    {"deleting every key empties the section", "{'a':1,'b':{'c':2}}", "{'a':@1,'b':{'c':@1}}",
     "{'a':null,'b':null}", 2, "{}", "{}"},
    {"unicode keys", "{'température':20}", "{'température':@1}",
     "{'température':21.5,'日本':{'東京':true},'emoji😀':'ok'}", 2,
     "{'température':21.5,'日本':{'東京':true},'emoji😀':'ok'}",
     "{'température':@2,'日本':{'東京':@2},'emoji😀':@2}"},
    {"an empty object writes nothing", "{'a':5}", "{'a':@1}", "{'a':{},'b':{}}", 2, "{'a':5}",
     "{'a':@1}"},
    {"an empty object merges into an object as nothing", "{'a':{'b':1}}", "{'a':{'b':@1}}",
     "{'a':{}}", 2, "{'a':{'b':1}}", "{'a':{'b':@1}}"},
    {"only deletions under a scalar keep the scalar", "{'a':5}", "{'a':@1}", "{'a':{'b':null}}", 2,
     "{'a':5}", "{'a':@1}"},
    {"an empty patch changes nothing", "{'a':5}", "{'a':@1}", "{}", 2, "{'a':5}", "{'a':@1}"},
    {"writing the same value stamps it again", "{'a':1,'b':2}", "{'a':@1,'b':@1}", "{'a':1}", 2,
     "{'a':1,'b':2}", "{'a':@2,'b':@1}"},
    {"the number is stored as written", "{'a':1}", "{'a':@1}", "{'a':1.0}", 2, "{'a':1.0}",
     "{'a':@2}"},
    {"all the scalar types", "{}", "{}",
     "{'s':'x','t':true,'f':false,'i':-3,'r':0.25,'e':[],'o':[{'k':'v'}]}", 3,
     "{'s':'x','t':true,'f':false,'i':-3,'r':0.25,'e':[],'o':[{'k':'v'}]}",
     "{'s':@3,'t':@3,'f':@3,'i':@3,'r':@3,'e':@3,'o':@3}"},
    {"a key named timestamp", "{}", "{}", "{'timestamp':5,'x':{'timestamp':6}}", 9,
     "{'timestamp':5,'x':{'timestamp':6}}", "{'timestamp':@9,'x':{'timestamp':@9}}"},
    {"create, replace and delete in one patch", "{'a':1,'b':{'c':1},'d':'x'}",
     "{'a':@1,'b':{'c':@1},'d':@1}", "{'a':null,'b':{'c':[1],'n':{'m':0}},'e':false}", 4,
     "{'b':{'c':[1],'n':{'m':0}},'d':'x','e':false}", "{'b':{'c':@4,'n':{'m':@4}},'d':@1,'e':@4}"},
    {"metadata missing for an object is started", "{'a':{'b':1}}", "{}", "{'a':{'c':2}}", 2,
     "{'a':{'b':1,'c':2}}", "{'a':{'c':@2}}"},
    {"a six-level patch", "{}", "{}", "{'a':{'b':{'c':{'d':{'e':{'f':1}}}}}}", 2,
     "{'a':{'b':{'c':{'d':{'e':{'f':1}}}}}}", "{'a':{'b':{'c':{'d':{'e':{'f':@2}}}}}}"},
};

static void test_merge_table(void **state)
{
    char what[256];
    for (size_t i = 0; i < sizeof merge_cases / sizeof merge_cases[0]; i++) {
        const struct merge_case *c = &merge_cases[i];
        json_t *s = J(c->state), *m = J(c->meta), *patch = J(c->patch);
        json_t *old_s = json_incref(s), *old_m = json_incref(m);
        assert_int_equal(shadow_merge(&s, &m, patch, c->ts), 0);
        snprintf(what, sizeof what, "%s: state", c->name);
        check_json(s, c->state_after, what);
        snprintf(what, sizeof what, "%s: metadata", c->name);
        check_json(m, c->meta_after, what);
        /* the caller's objects were not changed: the merge made new ones */
        snprintf(what, sizeof what, "%s: the state before", c->name);
        if (c->state) check_json(old_s, c->state, what);
        snprintf(what, sizeof what, "%s: the metadata before", c->name);
        if (c->meta) check_json(old_m, c->meta, what);
        /* the same patch again (at the same time) changes nothing */
        assert_int_equal(shadow_merge(&s, &m, patch, c->ts), 0);
        snprintf(what, sizeof what, "%s: state merged twice", c->name);
        check_json(s, c->state_after, what);
        snprintf(what, sizeof what, "%s: metadata merged twice", c->name);
        check_json(m, c->meta_after, what);
        /* what the state holds is its own: emptying the patch does not reach it */
        scrub(patch);
        snprintf(what, sizeof what, "%s: state after the patch was emptied", c->name);
        check_json(s, c->state_after, what);
        json_decref(old_s);
        json_decref(old_m);
        json_decref(s);
        json_decref(m);
        json_decref(patch);
    }
}

/* AWS "Empty shadow document properties": "desired": null removes the section. */
static void test_merge_null_clears(void **state)
{
    json_t *s = J("{'color':'RED','lights':{'on':true}}");
    json_t *m = J("{'color':@1,'lights':{'on':@1}}");
    json_t *null = json_null();
    assert_int_equal(shadow_merge(&s, &m, null, 2), 0);
    check_json(s, "{}", "cleared state");
    check_json(m, "{}", "cleared metadata");
    json_decref(s);
    json_decref(m);

    s = m = NULL;
    assert_int_equal(shadow_merge(&s, &m, null, 2), 0);
    check_json(s, "{}", "cleared NULL state");
    check_json(m, "{}", "cleared NULL metadata");
    json_decref(s);
    json_decref(m);
}

static void test_merge_bad_patch(void **state)
{
    json_t *s = J("{'a':1}"), *m = J("{'a':@1}"), *s0 = s, *m0 = m;
    /* an absent section writes nothing */
    assert_int_equal(shadow_merge(&s, &m, NULL, 2), 0);
    assert_ptr_equal(s, s0);
    assert_ptr_equal(m, m0);
    /* what shadow_check_patch refuses as not an object */
    static const char *const bad[] = {"5", "'x'", "[1]", "true"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *p = J(bad[i]);
        assert_int_equal(shadow_merge(&s, &m, p, 2), REG_EINVAL);
        assert_ptr_equal(s, s0);
        json_decref(p);
    }
    check_json(s, "{'a':1}", "state after refused patches");
    json_decref(s);
    json_decref(m);
}

/* The same input gives the same bytes, keys in the order they were first written. */
static void test_merge_deterministic(void **state)
{
    char *dumps[2][2];
    for (int run = 0; run < 2; run++) {
        json_t *s = J("{'z':1,'a':{'y':2}}"), *m = NULL;
        json_t *p1 = J("{'m':1,'a':{'b':2,'y':null,'c':3},'b':[1]}"), *p2 = J("{'z':null,'z2':0}");
        assert_int_equal(shadow_merge(&s, &m, p1, 10), 0);
        assert_int_equal(shadow_merge(&s, &m, p2, 11), 0);
        dumps[run][0] = json_dumps(s, JSON_COMPACT);
        dumps[run][1] = json_dumps(m, JSON_COMPACT);
        json_decref(s);
        json_decref(m);
        json_decref(p1);
        json_decref(p2);
    }
    assert_string_equal(dumps[0][0], "{\"a\":{\"b\":2,\"c\":3},\"m\":1,\"b\":[1],\"z2\":0}");
    assert_string_equal(dumps[0][0], dumps[1][0]);
    assert_string_equal(dumps[0][1], dumps[1][1]);
    for (int run = 0; run < 2; run++) {
        free(dumps[run][0]);
        free(dumps[run][1]);
    }
}

/* The AWS light bulb walk through: report, desire, delta, report with "desired": null. */
static void test_light_bulb(void **state)
{
    shadow_limits l = limits();
    json_t *desired = json_object(), *reported = json_object();
    json_t *dmeta = json_object(), *rmeta = json_object();
    const char *why = NULL;
    shadow_update u;

    json_t *msg = J("{'state':{'reported':{'color':'red'}}}");
    assert_int_equal(shadow_parse_mqtt_update(msg, &l, &u, &why), 0);
    assert_null(u.desired);
    assert_int_equal(shadow_merge(&reported, &rmeta, u.reported, 1469564492), 0);
    check_json(reported, "{'color':'red'}", "first report");
    check_json(rmeta, "{'color':@1469564492}", "first report's metadata");
    json_decref(msg);

    msg = J("{'state':{'desired':{'color':'green'}}}");
    assert_int_equal(shadow_parse_mqtt_update(msg, &l, &u, &why), 0);
    assert_int_equal(shadow_merge(&desired, &dmeta, u.desired, 1469564658), 0);
    json_t *delta = shadow_delta(desired, reported);
    check_json(delta, "{'color':'green'}", "delta after the desire");
    json_t *dm = shadow_meta_of(dmeta, delta);
    check_json(dm, "{'color':@1469564658}", "the delta message's metadata");
    json_decref(dm);
    json_decref(delta);
    json_decref(msg);

    msg = J("{'state':{'reported':{'color':'green'},'desired':null}}");
    assert_int_equal(shadow_parse_mqtt_update(msg, &l, &u, &why), 0);
    assert_true(json_is_null(u.desired));
    assert_int_equal(shadow_merge(&reported, &rmeta, u.reported, 1469564801), 0);
    assert_int_equal(shadow_merge(&desired, &dmeta, u.desired, 1469564801), 0);
    check_json(reported, "{'color':'green'}", "second report");
    check_json(rmeta, "{'color':@1469564801}", "second report's metadata");
    check_json(desired, "{}", "desired cleared");
    check_json(dmeta, "{}", "desired metadata cleared");
    delta = shadow_delta(desired, reported);
    check_json(delta, "{}", "no delta at the end");
    json_decref(delta);
    json_decref(msg);

    json_decref(desired);
    json_decref(reported);
    json_decref(dmeta);
    json_decref(rmeta);
}

/* ------------------------------------------------------------------------------------------ */
/* delta */

static const struct delta_case {
    const char *name;
    const char *desired, *reported, *delta;
} delta_cases[] = {
    /* AWS "Delta state", first example */
    {"AWS: absent and different", "{'color':'RED','state':'STOP'}",
     "{'color':'GREEN','engine':'ON'}", "{'color':'RED','state':'STOP'}"},
    /* AWS: "When nested objects differ, the delta contains the path all the way to the root" */
    {"AWS: nested path to the root", "{'lights':{'color':{'r':255,'g':255,'b':255}}}",
     "{'lights':{'color':{'r':255,'g':0,'b':255}}}", "{'lights':{'color':{'g':255}}}"},
    {"nested absent key", "{'a':{'b':1,'c':2}}", "{'a':{'b':1}}", "{'a':{'c':2}}"},
    {"equal", "{'a':{'b':[1,'x',{'c':true}]},'d':null}", "{'a':{'b':[1,'x',{'c':true}]},'d':null}",
     "{}"},
    {"keys only in reported never appear", "{'a':1}", "{'a':1,'b':2,'c':{'d':3}}", "{}"},
    {"desired empty", "{}", "{'a':1}", "{}"},
    {"reported empty", "{'a':{'b':1},'c':[2]}", "{}", "{'a':{'b':1},'c':[2]}"},
    {"1 and 1.0 are equal", "{'a':1,'b':{'c':2.0},'d':-0.0}", "{'a':1.0,'b':{'c':2},'d':0}", "{}"},
    {"1 and 1.5 differ", "{'a':1}", "{'a':1.5}", "{'a':1}"},
    {"numbers in arrays compare by value", "{'a':[1,2.5,{'b':3}]}", "{'a':[1.0,2.5,{'b':3.0}]}",
     "{}"},
    {"2^53+1 is not 2^53 as a real", "{'a':9007199254740993}", "{'a':9007199254740992.0}",
     "{'a':9007199254740993}"},
    {"2^53 is 2^53 as a real", "{'a':9007199254740992}", "{'a':9007199254740992.0}", "{}"},
    {"a real beyond the integers", "{'a':9223372036854775807}", "{'a':1e300}",
     "{'a':9223372036854775807}"},
    {"a real below the integers", "{'a':-9223372036854775807}", "{'a':-1e19}",
     "{'a':-9223372036854775807}"},
    {"the smallest integer as a real", "{'a':-9223372036854775808}", "{'a':-9223372036854775808.0}",
     "{}"},
    /* AWS: "If an array in the desired section doesn't match ..., the entire desired array" */
    {"AWS: differing arrays appear whole", "{'colors':['RED','GREEN']}", "{'colors':['RED']}",
     "{'colors':['RED','GREEN']}"},
    {"array order matters", "{'a':[1,2]}", "{'a':[2,1]}", "{'a':[1,2]}"},
    {"objects in arrays ignore key order", "{'a':[{'x':1,'y':2}]}", "{'a':[{'y':2,'x':1}]}", "{}"},
    {"objects in arrays differ by a key", "{'a':[{'x':1}]}", "{'a':[{'x':1,'y':2}]}",
     "{'a':[{'x':1}]}"},
    {"object against a scalar appears whole", "{'a':{'b':1,'c':2}}", "{'a':5}",
     "{'a':{'b':1,'c':2}}"},
    {"object against an array appears whole", "{'a':{'b':1}}", "{'a':[1]}", "{'a':{'b':1}}"},
    {"scalar against an object", "{'a':5}", "{'a':{'b':1}}", "{'a':5}"},
    {"absent nested object appears whole", "{'a':{'b':{'c':1}}}", "{'x':1}", "{'a':{'b':{'c':1}}}"},
    {"types differ", "{'a':'1','b':false,'c':true,'d':'true'}", "{'a':1,'b':0,'c':1,'d':true}",
     "{'a':'1','b':false,'c':true,'d':'true'}"},
    {"true and false", "{'a':true}", "{'a':false}", "{'a':true}"},
    {"equal nested objects leave no empty object", "{'a':{'b':{'c':1}},'d':2}",
     "{'a':{'b':{'c':1}},'d':3}", "{'d':2}"},
    {"unicode keys", "{'日本':{'東京':1,'大阪':2}}", "{'日本':{'東京':1}}", "{'日本':{'大阪':2}}"},
};

static void test_delta_table(void **state)
{
    char what[256];
    for (size_t i = 0; i < sizeof delta_cases / sizeof delta_cases[0]; i++) {
        const struct delta_case *c = &delta_cases[i];
        json_t *d = J(c->desired), *r = J(c->reported);
        json_t *delta = shadow_delta(d, r);
        snprintf(what, sizeof what, "delta %s", c->name);
        check_json(delta, c->delta, what);
        json_decref(delta);
        /* desired against itself never differs */
        delta = shadow_delta(d, d);
        snprintf(what, sizeof what, "delta %s, desired against itself", c->name);
        check_json(delta, "{}", what);
        json_decref(delta);
        json_decref(d);
        json_decref(r);
    }
}

static void test_delta_null_sections(void **state)
{
    json_t *d = J("{'a':{'b':1}}");
    json_t *delta = shadow_delta(NULL, d);
    check_json(delta, "{}", "NULL desired");
    json_decref(delta);
    delta = shadow_delta(d, NULL);
    check_json(delta, "{'a':{'b':1}}", "NULL reported");
    json_decref(delta);
    delta = shadow_delta(NULL, NULL);
    check_json(delta, "{}", "both NULL");
    json_decref(delta);
    /* the delta is a copy: changing it leaves desired as it was */
    delta = shadow_delta(d, NULL);
    json_object_clear(json_object_get(delta, "a"));
    check_json(d, "{'a':{'b':1}}", "desired after the delta changed");
    json_decref(delta);
    json_decref(d);
}

/* Merging the delta into reported leaves no delta; desired is never cleared by it. */
static void test_delta_converges(void **state)
{
    for (size_t i = 0; i < sizeof delta_cases / sizeof delta_cases[0]; i++) {
        const struct delta_case *c = &delta_cases[i];
        if (strstr(c->desired, "null")) continue; /* a merged state never holds null */
        json_t *d = J(c->desired), *r = J(c->reported), *rm = NULL;
        json_t *delta = shadow_delta(d, r);
        assert_int_equal(shadow_merge(&r, &rm, delta, 1), 0);
        json_t *after = shadow_delta(d, r);
        char what[256];
        snprintf(what, sizeof what, "delta %s after the device followed it", c->name);
        check_json(after, "{}", what);
        snprintf(what, sizeof what, "desired %s after the device followed it", c->name);
        check_json(d, c->desired, what);
        json_decref(after);
        json_decref(delta);
        json_decref(d);
        json_decref(r);
        json_decref(rm);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* metadata of a shape */

static const struct meta_case {
    const char *name;
    const char *meta, *shape, *want;
} meta_cases[] = {
    /* AWS "Delta state": the delta's metadata is that of desired at the same paths */
    {"AWS: delta metadata", "{'color':@12345,'state':@12345}", "{'color':'RED','state':'STOP'}",
     "{'color':@12345,'state':@12345}"},
    {"a subset of the paths", "{'l':{'c':{'r':@1,'g':@2}},'x':@3}", "{'l':{'c':{'g':255}}}",
     "{'l':{'c':{'g':@2}}}"},
    {"paths missing from meta are skipped", "{'a':@1}", "{'a':1,'b':2}", "{'a':@1}"},
    {"an object absent from meta is left out", "{'a':@1}", "{'x':{'y':1},'a':0}", "{'a':@1}"},
    {"an object with none of its paths in meta is left out", "{'x':{'z':@1}}", "{'x':{'y':1}}",
     "{}"},
    {"arrays are leaves", "{'seq':@3}", "{'seq':['RED','GREEN']}", "{'seq':@3}"},
    {"a whole object of the shape", "{'a':{'b':@1,'c':{'d':@2}}}", "{'a':{'c':{'d':0}}}",
     "{'a':{'c':{'d':@2}}}"},
    {"empty shape", "{'a':@1}", "{}", "{}"},
    {"unicode keys", "{'日本':{'東京':@4}}", "{'日本':{'東京':1}}", "{'日本':{'東京':@4}}"},
};

static void test_meta_of_table(void **state)
{
    char what[256];
    for (size_t i = 0; i < sizeof meta_cases / sizeof meta_cases[0]; i++) {
        const struct meta_case *c = &meta_cases[i];
        json_t *m = J(c->meta), *shape = J(c->shape);
        json_t *got = shadow_meta_of(m, shape);
        snprintf(what, sizeof what, "meta_of %s", c->name);
        check_json(got, c->want, what);
        json_decref(got);
        json_decref(m);
        json_decref(shape);
    }
    json_t *m = J("{'a':@1}");
    json_t *got = shadow_meta_of(NULL, m);
    check_json(got, "{}", "meta_of NULL meta");
    json_decref(got);
    got = shadow_meta_of(m, NULL);
    check_json(got, "{}", "meta_of NULL shape");
    json_decref(got);
    json_decref(m);
}

/* A section's metadata, taken at the section's own shape, is all of it. */
static void test_meta_of_whole_section(void **state)
{
    for (size_t i = 0; i < sizeof merge_cases / sizeof merge_cases[0]; i++) {
        json_t *s = J(merge_cases[i].state_after), *m = J(merge_cases[i].meta_after);
        json_t *got = shadow_meta_of(m, s);
        char what[256];
        snprintf(what, sizeof what, "meta_of the whole section after %s", merge_cases[i].name);
        check_json(got, merge_cases[i].meta_after, what);
        json_decref(got);
        json_decref(s);
        json_decref(m);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* parsing */

enum { ABSENT, JNULL, OBJECT };

static int section_kind(const json_t *j)
{
    return !j ? ABSENT : json_is_null(j) ? JNULL : OBJECT;
}

#define REFUSED(m, w)                                                                              \
    {                                                                                              \
        .msg = (m), .why = (w), .version = -1                                                      \
    }

static const struct parse_case {
    const char *msg;
    const char *why; /* NULL: accepted, with the fields below */
    int desired, reported;
    int64_t version;
    const char *token;
} mqtt_cases[] = {
    /* AWS's request examples */
    {"{'state':{'desired':{'color':{'r':10},'engine':'ON'}}}", NULL, OBJECT, ABSENT, -1, NULL},
    {"{'state':{'reported':{'color':{'r':10},'engine':'ON'}}}", NULL, ABSENT, OBJECT, -1, NULL},
    {"{'state':{'reported':{'color':'red'},'desired':null}}", NULL, JNULL, OBJECT, -1, NULL},
    {"{'state':{'desired':{'colors':['BLUE']}},'version':10}", NULL, OBJECT, ABSENT, 10, NULL},
    {"{'state':{'desired':{'engine':null}}}", NULL, OBJECT, ABSENT, -1, NULL},
    {"{'state':{'desired':{'a':1},'reported':{'b':2}},'version':0,'clientToken':'tok'}", NULL,
     OBJECT, OBJECT, 0, "tok"},
    {"{'state':{'desired':{}}}", NULL, OBJECT, ABSENT, -1, NULL},
    {"{'state':{'reported':null}}", NULL, ABSENT, JNULL, -1, NULL},
    {"{'clientToken':'','state':{'reported':{'a':[[1],{'b':[]}]}}}", NULL, ABSENT, OBJECT, -1, ""},
    {"{'state':{'reported':{'ключ':'значение'}},'clientToken':'日本'}", NULL, ABSENT, OBJECT, -1,
     "日本"},
    /* refused */
    REFUSED("[1]", "message: must be a JSON object"),
    REFUSED("'state'", "message: must be a JSON object"),
    REFUSED("{}", "state: missing"),
    REFUSED("{'version':1}", "state: missing"),
    REFUSED("{'state':5}", "state: must be an object"),
    REFUSED("{'state':null}", "state: must be an object"),
    REFUSED("{'state':[{'desired':{}}]}", "state: must be an object"),
    REFUSED("{'state':{}}", "state: must hold desired or reported"),
    REFUSED("{'state':{'desired':{},'delta':{}}}", "state: only desired and reported may appear"),
    REFUSED("{'state':{'reported':{},'metadata':{}}}",
            "state: only desired and reported may appear"),
    REFUSED("{'state':{'Desired':{}}}", "state: only desired and reported may appear"),
    REFUSED("{'state':{'desired':5}}", "state.desired: must be an object or null"),
    REFUSED("{'state':{'desired':'x'}}", "state.desired: must be an object or null"),
    REFUSED("{'state':{'reported':[1]}}", "state.reported: must be an object or null"),
    REFUSED("{'state':{'reported':true}}", "state.reported: must be an object or null"),
    /* AWS: "the following array is not valid and will be rejected" */
    REFUSED("{'state':{'desired':{'colors':[null,'RED','GREEN']}}}",
            "state.desired: null inside an array"),
    REFUSED("{'state':{'reported':{'a':{'b':[1,[2,null]]}}}}",
            "state.reported: null inside an array"),
    REFUSED("{'state':{'reported':{'a':[{'b':null}]}}}", "state.reported: null inside an array"),
    REFUSED("{'state':{'desired':{'a':1}},'version':-1}",
            "version: must be a non-negative integer"),
    REFUSED("{'state':{'desired':{'a':1}},'version':1.5}",
            "version: must be a non-negative integer"),
    REFUSED("{'state':{'desired':{'a':1}},'version':3.0}",
            "version: must be a non-negative integer"),
    REFUSED("{'state':{'desired':{'a':1}},'version':'3'}",
            "version: must be a non-negative integer"),
    REFUSED("{'state':{'desired':{'a':1}},'version':null}",
            "version: must be a non-negative integer"),
    REFUSED("{'state':{'desired':{'a':1}},'version':true}",
            "version: must be a non-negative integer"),
    REFUSED("{'state':{'desired':{'a':1}},'clientToken':5}", "clientToken: must be a string"),
    REFUSED("{'state':{'desired':{'a':1}},'clientToken':null}", "clientToken: must be a string"),
    REFUSED("{'state':{'desired':{'a':1}},'hello':'world'}",
            "message: only state, version and clientToken may appear"),
    REFUSED("{'state':{'desired':{'a':1}},'client_token':'t'}",
            "message: only state, version and clientToken may appear"),
    REFUSED("{'state':{'desired':{'a':1}},'metadata':{}}",
            "message: only state, version and clientToken may appear"),
};

static void check_parsed(const struct parse_case *c, int rc, const shadow_update *u,
                         const char *why)
{
    if (c->why) {
        if (rc != REG_EINVAL || !why || !strstr(why, c->why))
            fail_msg("%s: rc %d why '%s', want '%s'", c->msg, rc, why ? why : "(none)", c->why);
        assert_null(u->desired);
        assert_null(u->reported);
        assert_int_equal(u->version, -1);
        return;
    }
    if (rc) fail_msg("%s: refused: %s", c->msg, why ? why : "(none)");
    assert_int_equal(section_kind(u->desired), c->desired);
    assert_int_equal(section_kind(u->reported), c->reported);
    assert_int_equal(u->version, c->version);
    if (c->token)
        assert_string_equal(u->client_token, c->token);
    else
        assert_null(u->client_token);
}

static void test_parse_mqtt(void **state)
{
    shadow_limits l = limits();
    for (size_t i = 0; i < sizeof mqtt_cases / sizeof mqtt_cases[0]; i++) {
        json_t *msg = J(mqtt_cases[i].msg);
        shadow_update u;
        const char *why = NULL;
        int rc = shadow_parse_mqtt_update(msg, &l, &u, &why);
        check_parsed(&mqtt_cases[i], rc, &u, why);
        /* the sections are borrowed from the message */
        if (!rc && u.desired)
            assert_ptr_equal(u.desired, json_object_get(json_object_get(msg, "state"), "desired"));
        json_decref(msg);
    }
    /* why may be NULL */
    json_t *msg = J("{}");
    shadow_update u;
    assert_int_equal(shadow_parse_mqtt_update(msg, &l, &u, NULL), REG_EINVAL);
    json_decref(msg);
}

/* A refused update still hands back its client token, for the rejection to carry. */
static void test_parse_token_on_refusal(void **state)
{
    shadow_limits l = limits();
    shadow_update u;
    const char *why = NULL;
    json_t *msg = J("{'state':{'desired':5},'clientToken':'tok-1','version':2}");
    assert_int_equal(shadow_parse_mqtt_update(msg, &l, &u, &why), REG_EINVAL);
    assert_string_equal(why, "state.desired: must be an object or null");
    assert_string_equal(u.client_token, "tok-1");
    assert_null(u.desired);
    json_decref(msg);
    msg = J("{'state':{},'clientToken':'tok-2'}");
    assert_int_equal(shadow_parse_mqtt_update(msg, &l, &u, &why), REG_EINVAL);
    assert_string_equal(u.client_token, "tok-2");
    json_decref(msg);
    msg = J("{'desired':{'a':[null]},'client_token':'tok-3'}");
    assert_int_equal(shadow_parse_http_update(msg, "desired", &l, &u, &why), REG_EINVAL);
    assert_string_equal(why, "desired: null inside an array");
    assert_string_equal(u.client_token, "tok-3");
    json_decref(msg);
}

#define HTTP_REFUSED(s, b, w)                                                                      \
    {                                                                                              \
        .section = (s), .body = (b), .why = (w), .version = -1                                     \
    }

static const struct http_case {
    const char *section, *body, *why;
    int kind; /* of the section, when accepted */
    int64_t version;
    const char *token;
} http_cases[] = {
    {"desired", "{'desired':{'a':1}}", NULL, OBJECT, -1, NULL},
    {"desired", "{'desired':{'a':{'b':[1]}},'version':3,'client_token':'op-1'}", NULL, OBJECT, 3,
     "op-1"},
    {"desired", "{'desired':null}", NULL, JNULL, -1, NULL},
    {"desired", "{'desired':{}}", NULL, OBJECT, -1, NULL},
    {"reported", "{'reported':{'fw':'1.2.3'},'version':0}", NULL, OBJECT, 0, NULL},
    {"reported", "{'reported':null,'client_token':'d'}", NULL, JNULL, -1, "d"},
    HTTP_REFUSED("desired", "[]", "body: must be a JSON object"),
    HTTP_REFUSED("desired", "{}", "desired: missing"),
    HTTP_REFUSED("reported", "{'version':1}", "reported: missing"),
    HTTP_REFUSED("desired", "{'reported':{'a':1}}",
                 "body: only desired, version and client_token may appear"),
    HTTP_REFUSED("reported", "{'desired':{'a':1}}",
                 "body: only reported, version and client_token may appear"),
    HTTP_REFUSED("desired", "{'state':{'desired':{'a':1}}}",
                 "body: only desired, version and client_token may appear"),
    HTTP_REFUSED("reported", "{'reported':{},'clientToken':'x'}",
                 "body: only reported, version and client_token may appear"),
    HTTP_REFUSED("desired", "{'desired':5}", "desired: must be an object or null"),
    HTTP_REFUSED("reported", "{'reported':[]}", "reported: must be an object or null"),
    HTTP_REFUSED("desired", "{'desired':{'a':[1,null]}}", "desired: null inside an array"),
    HTTP_REFUSED("reported", "{'reported':{'a':[[null]]}}", "reported: null inside an array"),
    HTTP_REFUSED("desired", "{'desired':{'a':1},'version':-1}",
                 "version: must be a non-negative integer"),
    HTTP_REFUSED("desired", "{'desired':{'a':1},'version':'3'}",
                 "version: must be a non-negative integer"),
    HTTP_REFUSED("reported", "{'reported':{'a':1},'version':1.5}",
                 "version: must be a non-negative integer"),
    HTTP_REFUSED("desired", "{'desired':{},'client_token':7}", "client_token: must be a string"),
    HTTP_REFUSED("delta", "{'delta':{}}", "section: must be desired or reported"),
    HTTP_REFUSED(NULL, "{'desired':{}}", "section: must be desired or reported"),
};

static void test_parse_http(void **state)
{
    shadow_limits l = limits();
    for (size_t i = 0; i < sizeof http_cases / sizeof http_cases[0]; i++) {
        const struct http_case *c = &http_cases[i];
        json_t *body = J(c->body);
        shadow_update u;
        const char *why = NULL;
        int rc = shadow_parse_http_update(body, c->section, &l, &u, &why);
        int desired = c->section && !strcmp(c->section, "desired");
        struct parse_case pc = {
            c->body,    c->why,  desired ? c->kind : ABSENT, desired ? ABSENT : c->kind,
            c->version, c->token};
        check_parsed(&pc, rc, &u, why);
        json_decref(body);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the limits */

static void check_refused(const json_t *msg, const shadow_limits *l, const char *want)
{
    shadow_update u;
    const char *why = NULL;
    assert_int_equal(shadow_parse_mqtt_update(msg, l, &u, &why), REG_EINVAL);
    assert_non_null(why);
    assert_string_equal(why, want);
}

static void check_accepted(const json_t *msg, const shadow_limits *l)
{
    shadow_update u;
    const char *why = NULL;
    int rc = shadow_parse_mqtt_update(msg, l, &u, &why);
    if (rc) fail_msg("refused: %s", why);
}

/* {"state": {"reported": patch}} (patch owned) */
static json_t *report(json_t *patch)
{
    json_t *m = json_pack("{s{so}}", "state", "reported", patch);
    assert_non_null(m);
    return m;
}

static void test_depth(void **state)
{
    shadow_limits l = limits();
    const char *why = NULL;
    /* 6 levels of objects pass, 7 do not */
    json_t *p6 = nested(6, json_integer(1)), *p7 = nested(7, json_integer(1));
    assert_int_equal(shadow_check_patch(p6, &l, &why), 0);
    assert_int_equal(shadow_check_patch(p7, &l, &why), REG_EINVAL);
    assert_string_equal(why, "patch: deeper than the depth limit");
    json_t *m6 = report(p6), *m7 = report(p7);
    check_accepted(m6, &l);
    check_refused(m7, &l, "state.reported: deeper than the depth limit");
    json_decref(m6);
    json_decref(m7);

    /* an array is a level: {"a":[[[[[1]]]]]} is 6, one more bracket is 7 */
    json_t *a6 = J("{'a':[[[[[1]]]]]}"), *a7 = J("{'a':[[[[[[1]]]]]]}");
    assert_int_equal(shadow_check_patch(a6, &l, &why), 0);
    assert_int_equal(shadow_check_patch(a7, &l, &why), REG_EINVAL);
    assert_string_equal(why, "patch: deeper than the depth limit");
    json_decref(a6);
    json_decref(a7);
    json_t *mixed6 = J("{'a':[{'b':[{'c':{'d':1}}]}]}");
    json_t *mixed7 = J("{'a':[{'b':[{'c':{'d':[1]}}]}]}");
    assert_int_equal(shadow_check_patch(mixed6, &l, &why), 0);
    assert_int_equal(shadow_check_patch(mixed7, &l, &why), REG_EINVAL);
    json_decref(mixed6);
    json_decref(mixed7);

    /* {} is one level: an empty object at the sixth level passes, at the seventh it does not */
    json_t *e6 = nested(5, json_object()), *e7 = nested(6, json_object());
    assert_int_equal(shadow_check_patch(e6, &l, &why), 0);
    assert_int_equal(shadow_check_patch(e7, &l, &why), REG_EINVAL);
    json_decref(e6);
    json_decref(e7);
    json_t *arr6 = nested(5, json_array()), *arr7 = nested(6, json_array());
    assert_int_equal(shadow_check_patch(arr6, &l, &why), 0);
    assert_int_equal(shadow_check_patch(arr7, &l, &why), REG_EINVAL);
    json_decref(arr6);
    json_decref(arr7);

    /* the limit is the configured one */
    shadow_limits l1 = l;
    l1.max_depth = 1;
    json_t *empty = json_object(), *one = J("{'a':1}"), *two = J("{'a':{}}"), *arr = J("{'a':[]}");
    assert_int_equal(shadow_check_patch(empty, &l1, &why), 0);
    assert_int_equal(shadow_check_patch(one, &l1, &why), 0);
    assert_int_equal(shadow_check_patch(two, &l1, &why), REG_EINVAL);
    assert_int_equal(shadow_check_patch(arr, &l1, &why), REG_EINVAL);
    l1.max_depth = 0;
    assert_int_equal(shadow_check_patch(empty, &l1, &why), REG_EINVAL);
    assert_string_equal(why, "patch: deeper than the depth limit");
    /* a null patch (clear the section) has no depth */
    assert_int_equal(shadow_check_patch(json_null(), &l1, &why), 0);
    json_decref(empty);
    json_decref(one);
    json_decref(two);
    json_decref(arr);

    shadow_limits l2 = l;
    l2.max_depth = 2;
    json_t *d2 = J("{'a':{'b':1}}"), *d3 = J("{'a':{'b':{'c':1}}}");
    assert_int_equal(shadow_check_patch(d2, &l2, &why), 0);
    assert_int_equal(shadow_check_patch(d3, &l2, &why), REG_EINVAL);
    json_decref(d2);
    json_decref(d3);

    /* a deep value is refused in desired too, under its own name */
    json_t *m = json_pack("{s{so}}", "state", "desired", nested(7, json_true()));
    check_refused(m, &l, "state.desired: deeper than the depth limit");
    json_decref(m);
}

static void test_check_patch(void **state)
{
    shadow_limits l = limits();
    static const struct {
        const char *patch, *why;
    } cases[] = {
        {"{}", NULL},
        {"null", NULL},
        {"{'a':null,'b':{'c':null}}", NULL},
        {"{'a':[1,'x',true,false,1.5,{},[]]}", NULL},
        {"5", "patch: must be an object or null"},
        {"'x'", "patch: must be an object or null"},
        {"[1]", "patch: must be an object or null"},
        {"false", "patch: must be an object or null"},
        {"{'a':[null]}", "patch: null inside an array"},
        {"{'a':{'b':{'c':[[1,[null]]]}}}", "patch: null inside an array"},
        {"{'a':[{'b':{'c':null}}]}", "patch: null inside an array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *p = J(cases[i].patch);
        const char *why = NULL;
        int rc = shadow_check_patch(p, &l, &why);
        if (cases[i].why) {
            assert_int_equal(rc, REG_EINVAL);
            assert_string_equal(why, cases[i].why);
        } else if (rc) {
            fail_msg("%s: refused: %s", cases[i].patch, why);
        }
        json_decref(p);
    }
    assert_int_equal(shadow_check_patch(NULL, &l, NULL), REG_EINVAL);
}

static json_t *with_token(json_t *token)
{
    json_t *m = json_pack("{s{s{si}}so}", "state", "reported", "a", 1, "clientToken", token);
    assert_non_null(m);
    return m;
}

static void test_client_token(void **state)
{
    shadow_limits l = limits();
    char t[80];
    memset(t, 'x', sizeof t);
    json_t *m64 = with_token(json_stringn(t, 64)), *m65 = with_token(json_stringn(t, 65));
    check_accepted(m64, &l);
    check_refused(m65, &l, "clientToken: longer than the limit");
    /* the bound is in bytes: 32 two-byte characters pass, 33 do not */
    char u[80] = "";
    for (int i = 0; i < 33; i++)
        strcat(u, "é");
    json_t *u66 = with_token(json_string(u));
    u[64] = 0;
    json_t *u64 = with_token(json_string(u));
    check_accepted(u64, &l);
    check_refused(u66, &l, "clientToken: longer than the limit");
    /* a token holding U+0000 (possible with JSON_ALLOW_NUL) */
    json_t *nul = with_token(json_stringn("a\0b", 3));
    check_refused(nul, &l, "clientToken: contains U+0000");
    /* the limit is the configured one */
    shadow_limits l4 = l;
    l4.max_client_token = 4;
    json_t *m4 = with_token(json_string("abcd")), *m5 = with_token(json_string("abcde"));
    check_accepted(m4, &l4);
    check_refused(m5, &l4, "clientToken: longer than the limit");
    /* and HTTP's spelling */
    json_t *h65 = json_pack("{s{}so}", "desired", "client_token", json_stringn(t, 65));
    assert_non_null(h65);
    shadow_update up;
    const char *why = NULL;
    assert_int_equal(shadow_parse_http_update(h65, "desired", &l, &up, &why), REG_EINVAL);
    assert_string_equal(why, "client_token: longer than the limit");
    json_t *m[] = {m64, m65, u66, u64, nul, m4, m5, h65};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        json_decref(m[i]);
}

static void test_version(void **state)
{
    shadow_limits l = limits();
    json_t *vals[] = {json_integer(0), json_integer(1), json_integer(INT64_MAX)};
    const int64_t want[] = {0, 1, INT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        json_t *m = json_pack("{s{s{}}so}", "state", "desired", "version", vals[i]);
        shadow_update u;
        const char *why = NULL;
        assert_int_equal(shadow_parse_mqtt_update(m, &l, &u, &why), 0);
        assert_int_equal(u.version, want[i]);
        json_decref(m);
    }
    json_t *bad[] = {json_integer(-1), json_integer(INT64_MIN),
                     json_real(1.5),   json_real(0.0),
                     json_string("3"), json_null(),
                     json_false(),     json_array(),
                     json_object()};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *m = json_pack("{s{s{}}so}", "state", "reported", "version", bad[i]);
        check_refused(m, &l, "version: must be a non-negative integer");
        json_decref(m);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* size */

static void test_state_size(void **state)
{
    json_t *e = json_object(), *a = J("{'a':1}"), *d = J("{'color':'RED'}"),
           *r = J("{'color':'GREEN'}"), *u = J("{'é':'日本'}"), *esc = J("{'q':'\\\"\\n'}"),
           *n = J("{'a':[1,2.5,true,null,{}]}");
    assert_int_equal(shadow_state_size(e, e), 4);
    assert_int_equal(shadow_state_size(a, NULL), strlen("{\"a\":1}"));
    assert_int_equal(shadow_state_size(NULL, a), 7);
    assert_int_equal(shadow_state_size(NULL, NULL), 0);
    assert_int_equal(shadow_state_size(d, r), strlen("{\"color\":\"RED\"}{\"color\":\"GREEN\"}"));
    /* UTF-8 bytes, not characters */
    assert_int_equal(shadow_state_size(u, e), strlen("{\"é\":\"日本\"}") + 2);
    /* escapes count as written */
    assert_int_equal(shadow_state_size(esc, NULL), strlen("{\"q\":\"\\\"\\n\"}"));
    assert_int_equal(shadow_state_size(n, NULL), strlen("{\"a\":[1,2.5,true,null,{}]}"));

    /* the 8 KiB limit is the caller's comparison: exactly max_bytes is the largest that passes */
    shadow_limits l = limits();
    char big[8192];
    memset(big, 'x', sizeof big);
    json_t *b = json_pack("{s:s%}", "a", big, l.max_bytes - strlen("{\"a\":\"\"}") - 2);
    assert_non_null(b);
    assert_int_equal(shadow_state_size(b, e), l.max_bytes);
    json_t *big_patch = json_pack("{s:s%}", "a", big, (size_t)1);
    json_t *s = json_deep_copy(b), *m = NULL;
    assert_int_equal(shadow_merge(&s, &m, big_patch, 1), 0);
    assert_int_equal(shadow_state_size(s, e), strlen("{\"a\":\"x\"}") + 2);
    json_t *all[] = {e, a, d, r, u, esc, n, b, big_patch, s, m};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        json_decref(all[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* running out of memory */

static long allocs_left;

static void *failing_malloc(size_t n)
{
    if (allocs_left == 0) return NULL;
    if (allocs_left > 0) allocs_left--;
    return malloc(n);
}

static void test_out_of_memory(void **state)
{
    json_t *s = J("{'a':{'b':1,'c':[1,2]},'d':'x','e':{'f':{'g':1}}}");
    json_t *copy = NULL, *m = NULL;
    assert_int_equal(shadow_merge(&copy, &m, s, 1), 0); /* m: the metadata of s at time 1 */
    json_decref(copy);
    json_t *patch = J("{'a':{'b':null,'h':{'i':2}},'d':[3],'e':{'f':{'g':null}},'j':true}");
    json_t *want_s = json_deep_copy(s), *want_m = json_deep_copy(m);
    int merged = 0, failures = 0;
    for (long n = 0; !merged; n++) {
        json_set_alloc_funcs(failing_malloc, free);
        allocs_left = n;
        /* the merge takes over one reference to each, and gives one back */
        json_t *s1 = json_incref(s), *m1 = json_incref(m);
        int rc = shadow_merge(&s1, &m1, patch, 2);
        allocs_left = -1;
        json_set_alloc_funcs(malloc, free);
        if (rc == 0) {
            merged = 1;
            check_json(s1, "{'a':{'c':[1,2],'h':{'i':2}},'d':[3],'j':true}", "merged state");
            check_json(m1, "{'a':{'c':@1,'h':{'i':@2}},'d':@2,'j':@2}", "merged metadata");
        } else {
            failures++;
            assert_int_equal(rc, REG_ENOMEM);
            assert_ptr_equal(s1, s);
            assert_ptr_equal(m1, m);
            assert_true(json_equal(s, want_s));
            assert_true(json_equal(m, want_m));
        }
        json_decref(s1);
        json_decref(m1);
    }
    assert_true(failures > 10);

    /* the delta and the metadata of a shape are NULL or whole */
    json_t *d = J("{'a':{'b':{'c':1,'d':[1]},'e':2},'f':{'g':{'h':3}},'i':'x'}");
    json_t *dm = NULL, *dcopy = NULL;
    assert_int_equal(shadow_merge(&dcopy, &dm, d, 3), 0);
    json_decref(dcopy);
    json_t *r = J("{'a':{'b':{'c':1,'d':[2]},'e':2},'i':'y'}");
    const char *want[] = {
        "{'a':{'b':{'d':[1]}},'f':{'g':{'h':3}},'i':'x'}",
        "{'a':{'b':{'c':@3,'d':@3},'e':@3},'f':{'g':{'h':@3}},'i':@3}",
    };
    static const char *const what[] = {"delta, once memory sufficed",
                                       "metadata of a shape, once memory sufficed"};
    for (int which = 0; which < 2; which++) {
        json_t *got = NULL;
        failures = 0;
        for (long n = 0; !got; n++) {
            json_set_alloc_funcs(failing_malloc, free);
            allocs_left = n;
            got = which ? shadow_meta_of(dm, d) : shadow_delta(d, r);
            allocs_left = -1;
            json_set_alloc_funcs(malloc, free);
            failures += !got;
        }
        check_json(got, want[which], what[which]);
        assert_true(failures > 5);
        json_decref(got);
    }
    json_decref(d);
    json_decref(dm);
    json_decref(r);
    json_decref(s);
    json_decref(m);
    json_decref(want_s);
    json_decref(want_m);
    json_decref(patch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_merge_table),
        cmocka_unit_test(test_merge_null_clears),
        cmocka_unit_test(test_merge_bad_patch),
        cmocka_unit_test(test_merge_deterministic),
        cmocka_unit_test(test_light_bulb),
        cmocka_unit_test(test_delta_table),
        cmocka_unit_test(test_delta_null_sections),
        cmocka_unit_test(test_delta_converges),
        cmocka_unit_test(test_meta_of_table),
        cmocka_unit_test(test_meta_of_whole_section),
        cmocka_unit_test(test_parse_mqtt),
        cmocka_unit_test(test_parse_token_on_refusal),
        cmocka_unit_test(test_parse_http),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_check_patch),
        cmocka_unit_test(test_client_token),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_state_size),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
